"""Reading training images: which files count as images, a full-decode health check, and loading any
supported image as 8-bit RGB.

Nothing here writes to the dataset.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

# Formats Pillow reports for the content we accept. MPO is the multi-picture JPEG many phones and
# cameras write; it decodes as a JPEG.
_ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP", "BMP": "BMP"}
_EXT_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}

# Orientation values (EXIF tag 274) that turn the image by 90 degrees, swapping width and height.
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}

# Neutral background for transparent pixels.
ALPHA_BACKGROUND = (127, 127, 127)

# What Pillow raises on bad or hostile files; anything in this list means "this file is unusable".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error,
                  ZeroDivisionError, Image.DecompressionBombError)


def is_image_name(path: str | os.PathLike) -> bool:
    """True when the file name ends in one of :data:`IMAGE_EXTENSIONS`, in any letter case."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class ImageCheck:
    """The result of :func:`probe_image`. ``width``/``height`` are after EXIF orientation."""

    path: Path
    ok: bool
    reason: str = ""
    width: int = 0
    height: int = 0
    format: str = ""          # real format from the content: PNG, JPEG, WEBP, BMP ("" when unknown)
    mode: str = ""            # Pillow mode as stored in the file (RGB, RGBA, P, L, I;16, CMYK, ...)
    ext_mismatch: bool = False  # content format differs from what the extension says (still usable)

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


def probe_image(path: str | os.PathLike) -> ImageCheck:
    """Check that *path* is a complete, decodable PNG/JPEG/WebP/BMP image. Never raises for bad files.

    The pixel data is decoded in full (a header check misses truncated files); JPEGs are decoded at
    reduced scale, which still reads every byte but is several times faster.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        return ImageCheck(p, False, f"cannot read file: {exc.strerror or exc}")
    if size == 0:
        return ImageCheck(p, False, "file is empty (0 bytes)")
    try:
        with Image.open(p) as im:
            fmt = im.format or ""
            if fmt not in _ACCEPTED_FORMATS:
                return ImageCheck(p, False, f"unsupported image format {fmt or 'unknown'} "
                                             "(use PNG, JPEG, WebP or BMP)", format=fmt)
            fmt = _ACCEPTED_FORMATS[fmt]
            width, height = im.size
            mode = im.mode
            orientation = _orientation(im)
            if fmt == "JPEG":
                im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
            im.load()
    except PermissionError:
        return ImageCheck(p, False, "permission denied: Patina may not read this file; check its permissions "
                                    "(or its owner)")
    except Image.UnidentifiedImageError:
        return ImageCheck(p, False, "not an image (content is not PNG/JPEG/WebP/BMP)")
    except Image.DecompressionBombError as exc:
        return ImageCheck(p, False, f"image is too large to load safely: {exc}")
    except _DECODE_ERRORS as exc:
        return ImageCheck(p, False, f"image data is truncated or corrupt: {_short(exc)}")
    except Exception as exc:  # noqa: BLE001 - a hostile file must never crash a scan
        return ImageCheck(p, False, f"could not decode image: {type(exc).__name__}: {_short(exc)}")
    if width <= 0 or height <= 0:
        return ImageCheck(p, False, "image has no pixels", format=fmt, mode=mode)
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    expected = _EXT_FORMAT.get(p.suffix.lower())
    return ImageCheck(p, True, "", width, height, fmt, mode, ext_mismatch=expected is not None and expected != fmt)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value)
    except Exception:  # noqa: BLE001 - broken EXIF blocks are common; they just mean "no rotation"
        return 1


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_rgb(path: str | os.PathLike, background: tuple[int, int, int] = ALPHA_BACKGROUND) -> Image.Image:
    """Load an image as 8-bit RGB, upright.

    EXIF orientation is applied; CMYK, palette, greyscale and 16-bit images are converted (16-bit
    values are scaled to 0-255, not clipped); transparent pixels are composited on mid-grey
    :data:`ALPHA_BACKGROUND` (or *background*). Raises ``OSError`` (or another Pillow error) for unreadable files; call
    :func:`probe_image` first to get a user-facing reason.
    """
    with Image.open(path) as src:
        src.load()
        fmt = src.format
        im = ImageOps.exif_transpose(src)
    return to_rgb(im, source_format=fmt, background=background)


def to_rgb(im: Image.Image, *, source_format: str | None = None,
           background: tuple[int, int, int] = ALPHA_BACKGROUND) -> Image.Image:
    """Convert an already loaded image of any mode to 8-bit RGB (see :func:`load_rgb`)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _wide_grey_to_rgb(im, source_format)
    if mode == "P":
        has_alpha = "transparency" in im.info or (im.palette is not None and im.palette.mode == "RGBA")
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
        mode = "RGBA"
    elif mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        canvas = Image.new("RGBA", im.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, im).convert("RGB")
    return im.convert("RGB")


def _wide_grey_to_rgb(im: Image.Image, source_format: str | None) -> Image.Image:
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        top = float(np.nanmax(arr)) if arr.size else 0.0
        arr = arr * 255.0 if top <= 1.0 else arr
        out = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
    else:
        arr = arr.astype(np.int64)
        # I;16* is 16-bit by definition; a 32-bit "I" image from PNG is 16-bit greyscale too. Other
        # "I" images are treated as 16-bit when their values exceed the 8-bit range.
        sixteen = im.mode.startswith("I;16") or source_format == "PNG" or (arr.size and int(arr.max()) > 255)
        if sixteen:
            out = ((np.clip(arr, 0, 65535) + 128) // 257).astype(np.uint8)
        else:
            out = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L").convert("RGB")
