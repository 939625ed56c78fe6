"""patina.core.dataset.buckets: resolution parsing, bucket enumeration and assignment, resize-and-crop."""

import math
import random

import numpy as np
import pytest
from PIL import Image

from patina.core.dataset.buckets import BucketSet, histogram, parse_resolution, resize_and_crop


@pytest.mark.parametrize("text,expected", [("512,512", (512, 512)), ("512", (512, 512)), ("768x512", (768, 512)),
                                           (" 1024 , 768 ", (1024, 768)), ("640X480", (640, 480)),
                                           ((832, 1216), (832, 1216)), (1024, (1024, 1024))])
def test_parse_resolution(text, expected):
    assert parse_resolution(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "512,", "512,512,512", "-512", "0,512", "5.5", "512;512"])
def test_parse_resolution_rejects_bad_text_with_a_message(text):
    with pytest.raises(ValueError) as info:
        parse_resolution(text)
    assert "resolution" in str(info.value)


def test_bucket_set_rules():
    bs = BucketSet((512, 512), min_size=256, max_size=1024, step=64)
    assert (512, 512) in bs.resolutions
    assert {(256, 1024), (1024, 256), (384, 640), (640, 384), (448, 576), (576, 448)} <= set(bs.resolutions)
    for w, h in bs:
        assert w % 64 == 0 and h % 64 == 0
        assert 256 <= w <= 1024 and 256 <= h <= 1024
        assert w * h <= 512 * 512
        assert (h, w) in bs.resolutions
    assert (1024, 320) not in bs.resolutions  # over the max area


def test_bucket_set_sdxl_has_its_usual_shapes():
    bs = BucketSet((1024, 1024), min_size=256, max_size=2048, step=64)
    assert {(1024, 1024), (832, 1216), (1216, 832), (896, 1152), (768, 1344)} <= set(bs.resolutions)


def test_bucket_set_bad_settings():
    with pytest.raises(ValueError, match="minimum bucket"):
        BucketSet((128, 128), min_size=256, max_size=1024)
    with pytest.raises(ValueError, match="step"):
        BucketSet((512, 512), step=0)


def test_assign_picks_nearest_aspect_ratio():
    bs = BucketSet((512, 512), 256, 1024, 64, no_upscale=False)
    assert bs.assign(1000, 1000) == (512, 512)
    assert bs.assign(1200, 800) == (640, 384)
    assert bs.assign(800, 1200) == (384, 640)
    assert bs.assign(100, 100) == (512, 512)  # upscaled when allowed
    w, h = bs.assign(3000, 1000)
    best = min(abs(math.log(a / b) - math.log(3)) for a, b in bs)
    assert abs(math.log(w / h) - math.log(3)) == pytest.approx(best)


def test_assign_no_upscale_never_enlarges():
    bs = BucketSet((512, 512), 256, 1024, 64, no_upscale=True)
    assert bs.assign(300, 200) == (256, 192)   # own size, rounded down to the step
    assert bs.assign(600, 400) == (576, 384)
    assert bs.assign(512, 512) == (512, 512)
    assert bs.assign(50, 40) == (64, 64)       # never below one step
    w, h = bs.assign(2000, 1000)               # larger than the max area: scaled down first
    assert (w, h) == (704, 320) and w * h <= 512 * 512
    for size in [(333, 777), (1500, 1499), (4000, 3000), (65, 65)]:
        bw, bh = bs.assign(*size)
        assert bw % 64 == 0 and bh % 64 == 0 and bw * bh <= 512 * 512
        assert bw <= max(64, size[0]) and bh <= max(64, size[1])


def test_too_small():
    bs = BucketSet((512, 512), min_size=256)
    assert bs.too_small(255, 600) and bs.too_small(600, 200)
    assert not bs.too_small(256, 256)


def test_histogram_counts_and_orders():
    hist = histogram([(512, 512), (384, 640), (512, 512), (640, 384)])
    assert hist == {(384, 640): 1, (640, 384): 1, (512, 512): 2}
    assert list(hist)[-1] == (512, 512)


def _ramp(w, h):
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    return Image.fromarray(arr, "RGB")


def test_resize_and_crop_centre():
    out = resize_and_crop(_ramp(100, 50), (64, 64))
    img, crop, original = out
    assert img.size == (64, 64) and original == (100, 50)
    assert crop == (0, 32)  # resized to 128x64, so 32 px cut on each side
    # The centre crop keeps the middle of the horizontal ramp.
    assert 100 < img.getpixel((32, 32))[0] < 155


def test_resize_and_crop_random_is_seeded_and_in_range():
    crops = set()
    for seed in range(12):
        img, (top, left), _ = resize_and_crop(_ramp(100, 50), (64, 64), random_crop=True, rng=random.Random(seed))
        assert img.size == (64, 64) and top == 0 and 0 <= left <= 64
        crops.add(left)
    assert len(crops) > 3
    a = resize_and_crop(_ramp(100, 50), (64, 64), random_crop=True, rng=random.Random(5))
    b = resize_and_crop(_ramp(100, 50), (64, 64), random_crop=True, rng=random.Random(5))
    assert a.crop_top_left == b.crop_top_left and a.image.tobytes() == b.image.tobytes()


def test_resize_and_crop_exact_fit_and_downscale():
    img, crop, _ = resize_and_crop(_ramp(64, 64), (64, 64))
    assert crop == (0, 0) and img.size == (64, 64)
    img, crop, original = resize_and_crop(_ramp(600, 400), (576, 384))
    assert img.size == (576, 384) and original == (600, 400) and crop == (0, 0)
