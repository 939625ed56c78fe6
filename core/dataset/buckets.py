"""Aspect-ratio buckets: the set of training resolutions, which bucket an image goes to, and the
resize-and-crop that fits an image to its bucket.

Sizes are ``(width, height)`` throughout.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

from PIL import Image

Size = tuple[int, int]

_RESO_RE = re.compile(r"^\s*(\d+)\s*(?:[,xX*]\s*(\d+)\s*)?$")


def parse_resolution(text: str | int | tuple[int, int] | list[int]) -> Size:
    """``"512,512"``, ``"768x512"`` or ``"512"`` (square) as ``(width, height)``.

    Raises ``ValueError`` with a message for the user when the text is not a resolution.
    """
    if isinstance(text, (tuple, list)) and len(text) == 2:
        w, h = text
    elif isinstance(text, int) and not isinstance(text, bool):
        w = h = text
    else:
        m = _RESO_RE.match(str(text))
        if not m:
            raise ValueError(f"resolution must be 'W,H' or one number, e.g. '512,512', '768x512' or '1024'; "
                             f"got {str(text)!r}")
        w = int(m.group(1))
        h = int(m.group(2)) if m.group(2) else w
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError):
        raise ValueError(f"resolution must be two whole numbers; got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"resolution must be greater than 0; got {w}x{h}")
    return (w, h)


def format_size(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


class BucketSet:
    """The buckets for one training resolution.

    Every bucket's sides are multiples of *step* between *min_size* and *max_size*, and its area is at
    most the area of *max_reso*. For each width the tallest allowed height is taken (and the mirrored
    pair), plus the largest square.

    With *no_upscale* an image is never enlarged: one whose area fits gets a bucket of its own size
    rounded down to *step*; a larger one is first scaled down to the maximum area (keeping its aspect
    ratio) and then rounded down the same way.
    """

    def __init__(self, max_reso: Size = (512, 512), min_size: int = 256, max_size: int = 2048,
                 step: int = 64, no_upscale: bool = False):
        max_w, max_h = parse_resolution(max_reso)
        step, min_size, max_size = int(step), int(min_size), int(max_size)
        if step < 1:
            raise ValueError(f"bucket resolution step must be at least 1; got {step}")
        if min_size < step:
            min_size = step
        if min_size > max_size:
            raise ValueError(f"minimum bucket size {min_size} is larger than the maximum {max_size}")
        self.max_reso: Size = (max_w, max_h)
        self.max_area = max_w * max_h
        self.min_size = min_size
        self.max_size = max_size
        self.step = step
        self.no_upscale = bool(no_upscale)
        self.resolutions: list[Size] = self._enumerate()
        if not self.resolutions:
            raise ValueError(f"no bucket fits: resolution {max_w}x{max_h} is smaller than the minimum bucket "
                             f"size {min_size}x{min_size}; lower the minimum bucket resolution")
        self._log_ratios = [math.log(w / h) for w, h in self.resolutions]

    def _floor(self, value: float) -> int:
        return int(math.floor(value / self.step + 1e-9)) * self.step

    def _enumerate(self) -> list[Size]:
        lo = -(-self.min_size // self.step) * self.step  # round up to the step
        hi = self._floor(self.max_size)
        found: set[Size] = set()
        square = min(hi, self._floor(math.sqrt(self.max_area)))
        if square >= lo:
            found.add((square, square))
        for w in range(lo, hi + 1, self.step):
            h = min(hi, self._floor(self.max_area / w))
            if h >= lo:
                found.add((w, h))
                found.add((h, w))
        return sorted(found)

    def __iter__(self):
        return iter(self.resolutions)

    def __len__(self) -> int:
        return len(self.resolutions)

    def too_small(self, width: int, height: int) -> bool:
        """True when either side is below the minimum bucket size (the image would be enlarged or
        trained smaller than the rest)."""
        return width < self.min_size or height < self.min_size

    def assign(self, width: int, height: int) -> Size:
        """The bucket ``(w, h)`` for an image of this size (after EXIF orientation)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive; got {width}x{height}")
        if self.no_upscale:
            scale = min(1.0, math.sqrt(self.max_area / (width * height)),
                        self.max_size / width, self.max_size / height)
            return (max(self.step, self._floor(width * scale)), max(self.step, self._floor(height * scale)))
        target = math.log(width / height)
        best = min(range(len(self.resolutions)),
                   key=lambda i: (abs(self._log_ratios[i] - target),
                                  -(self.resolutions[i][0] * self.resolutions[i][1])))
        return self.resolutions[best]


class CropResult(NamedTuple):
    image: Image.Image
    crop_top_left: tuple[int, int]  # (top, left) of the crop in the resized image, as SDXL conditions on
    original_size: Size            # (width, height) of the input image


def resize_and_crop(img: Image.Image, bucket: Size, random_crop: bool = False,
                    rng: random.Random | None = None) -> CropResult:
    """Scale *img* so it covers *bucket* (keeping its aspect ratio), then crop to exactly *bucket*:
    centred, or at a random offset with *random_crop* (drawn from *rng*)."""
    bw, bh = int(bucket[0]), int(bucket[1])
    w, h = img.size
    scale = max(bw / w, bh / h)
    nw, nh = max(bw, round(w * scale)), max(bh, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    if random_crop:
        r = rng or random.Random()
        left, top = r.randint(0, nw - bw), r.randint(0, nh - bh)
    else:
        left, top = (nw - bw) // 2, (nh - bh) // 2
    if (nw, nh) != (bw, bh):
        img = img.crop((left, top, left + bw, top + bh))
    return CropResult(img, (top, left), (w, h))


def histogram(assignments: Iterable[Size]) -> dict[Size, int]:
    """How many images each bucket holds, ordered by bucket area then width."""
    counts = Counter(tuple(a) for a in assignments)
    return {k: counts[k] for k in sorted(counts, key=lambda s: (s[0] * s[1], s[0]))}
