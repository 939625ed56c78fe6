"""Small real image files for tests: every format, mode and kind of damage the dataset code handles.

All helpers write into the given path (creating folders) and return it as a Path.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def _prep(path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def save(path, size=(32, 32), color=(200, 60, 30), mode="RGB", format=None, **params) -> Path:
    """A solid-colour image; the format follows the extension unless *format* is given."""
    p = _prep(path)
    Image.new(mode, size, color).save(p, format=format, **params)
    return p


def noise(size=(64, 64), seed=0) -> Image.Image:
    """An RGB image of random pixels (compresses badly, so truncating it cuts real pixel data)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def truncated_jpeg(path, size=(96, 96), keep=0.5) -> Path:
    """A JPEG whose file stops after *keep* of its bytes."""
    buf = io.BytesIO()
    noise(size).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    p = _prep(path)
    p.write_bytes(data[: int(len(data) * keep)])
    return p


def zero_byte(path) -> Path:
    p = _prep(path)
    p.write_bytes(b"")
    return p


def text_file(path, text="this is not an image\n") -> Path:
    p = _prep(path)
    p.write_text(text, encoding="utf-8")
    return p


def exif_jpeg(path, size=(40, 20), orientation=6) -> Path:
    """A JPEG stored *size* big with an EXIF orientation tag. The stored image's left half is red and
    its right half blue, so the rotation direction can be checked."""
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = _prep(path)
    Image.fromarray(arr, "RGB").save(p, "JPEG", quality=95, exif=exif.tobytes())
    return p


def cmyk_jpeg(path, size=(16, 16), cmyk=(0, 255, 255, 0)) -> Path:
    """A CMYK JPEG; the default colour (no cyan, full magenta and yellow) is red."""
    return save(path, size, cmyk, mode="CMYK", format="JPEG")


def png16(path, values) -> Path:
    """A 16-bit greyscale PNG with the given 2-D array of 0..65535 values."""
    arr = np.asarray(values, dtype=np.uint16)
    p = _prep(path)
    Image.fromarray(arr).save(p, "PNG")
    return p


def rgba_png(path, size=(8, 8), color=(255, 0, 0, 255), transparent_at=(0, 0)) -> Path:
    """An RGBA PNG of *color* with one fully transparent (white) pixel at *transparent_at*."""
    im = Image.new("RGBA", size, color)
    im.putpixel(transparent_at, (255, 255, 255, 0))
    p = _prep(path)
    im.save(p, "PNG")
    return p


def palette_png(path, size=(8, 8), transparent_index=None) -> Path:
    """A palette (P mode) PNG: left half index 0 (green), right half index 1 (blue).

    With *transparent_index*, that palette entry is transparent (a tRNS chunk)."""
    im = Image.new("P", size, 0)
    im.putpalette([0, 255, 0, 0, 0, 255] + [0, 0, 0] * 254)
    for x in range(size[0] // 2, size[0]):
        for y in range(size[1]):
            im.putpixel((x, y), 1)
    p = _prep(path)
    if transparent_index is None:
        im.save(p, "PNG")
    else:
        im.save(p, "PNG", transparency=transparent_index)
    return p


def concept(root, name, count=2, size=(64, 64), captions=None, ext=".png") -> Path:
    """A concept folder ``root/name`` with *count* images ``img0<ext>``...; *captions* maps an image
    index to its sidecar ``.txt`` text."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        save(folder / f"img{i}{ext}", size, (10 * i % 256, 100, 150))
    for i, text in (captions or {}).items():
        (folder / f"img{i}.txt").write_text(text, encoding="utf-8")
    return folder
