"""patina.core.dataset.images: which files are images, the full-decode health check, loading as 8-bit RGB."""

import numpy as np
import pytest
from PIL import Image

import imagefactory as factory
from patina.core.dataset.images import ALPHA_BACKGROUND, IMAGE_EXTENSIONS, is_image_name, load_rgb, probe_image


def test_image_extensions_match_in_any_case():
    assert IMAGE_EXTENSIONS == (".png", ".jpg", ".jpeg", ".webp", ".bmp")
    for name in ("a.png", "B.PNG", "c.JpEg", "d.JPG", "e.WebP", "f.BMP", "dir/g.jpeg"):
        assert is_image_name(name), name
    for name in ("a.txt", "a.png.txt", "a.gif", "png", "a.npz", "a.caption"):
        assert not is_image_name(name), name


@pytest.mark.parametrize("name,fmt", [("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.webp", "WEBP"),
                                      ("d.bmp", "BMP"), ("E.JPEG", "JPEG"), ("F.PNG", "PNG")])
def test_probe_accepts_every_supported_format(tmp_path, name, fmt):
    p = factory.save(tmp_path / name, (30, 20), format=fmt)
    check = probe_image(p)
    assert check.ok, check.reason
    assert (check.width, check.height, check.format) == (30, 20, fmt)
    assert check.mode == "RGB" and not check.ext_mismatch and check.reason == ""


def test_probe_zero_byte_file(tmp_path):
    check = probe_image(factory.zero_byte(tmp_path / "empty.png"))
    assert not check.ok
    assert check.reason == "file is empty (0 bytes)"


def test_probe_text_named_png(tmp_path):
    check = probe_image(factory.text_file(tmp_path / "notes.png"))
    assert not check.ok
    assert check.reason == "not an image (content is not PNG/JPEG/WebP/BMP)"


def test_probe_truncated_jpeg_is_caught_by_full_decode(tmp_path):
    p = factory.truncated_jpeg(tmp_path / "cut.jpg")
    with Image.open(p) as im:  # the header alone looks fine...
        assert im.size == (96, 96)
    check = probe_image(p)  # ...but decoding the pixels fails
    assert not check.ok
    assert check.reason.startswith("image data is truncated or corrupt: ")


def test_probe_jpeg_missing_only_its_last_bytes(tmp_path):
    p = factory.truncated_jpeg(tmp_path / "cut.jpg", keep=0.995)
    assert not probe_image(p).ok


def test_probe_truncated_png(tmp_path):
    full = tmp_path / "full.png"
    factory.noise((64, 64)).save(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    check = probe_image(cut)
    assert not check.ok and "truncated or corrupt" in check.reason


def test_probe_png_data_named_jpg_is_usable_but_flagged(tmp_path):
    p = factory.save(tmp_path / "photo.jpg", (12, 10), format="PNG")
    check = probe_image(p)
    assert check.ok
    assert check.format == "PNG"
    assert check.ext_mismatch


def test_probe_unsupported_format(tmp_path):
    p = factory.save(tmp_path / "anim.png", (8, 8), format="GIF")
    check = probe_image(p)
    assert not check.ok and "GIF" in check.reason


def test_probe_missing_file(tmp_path):
    check = probe_image(tmp_path / "nope.png")
    assert not check.ok and check.reason.startswith("cannot read file")


def test_probe_reports_size_after_exif_orientation(tmp_path):
    p = factory.exif_jpeg(tmp_path / "rot.jpg", (40, 20), orientation=6)
    check = probe_image(p)
    assert check.ok
    assert (check.width, check.height) == (20, 40)
    p3 = factory.exif_jpeg(tmp_path / "upside.jpg", (40, 20), orientation=3)
    assert probe_image(p3).size == (40, 20)


def test_load_rgb_applies_exif_orientation(tmp_path):
    img = load_rgb(factory.exif_jpeg(tmp_path / "rot.jpg", (40, 20), orientation=6))
    assert img.mode == "RGB" and img.size == (20, 40)
    # Orientation 6 turns the stored image 90° clockwise: the stored left (red) half ends on top.
    top = np.asarray(img)[:15].reshape(-1, 3).mean(axis=0)
    bottom = np.asarray(img)[25:].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_load_rgb_cmyk_jpeg(tmp_path):
    p = factory.cmyk_jpeg(tmp_path / "print.jpg")
    assert probe_image(p).mode == "CMYK"
    img = load_rgb(p)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50


def test_load_rgb_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    p = factory.png16(tmp_path / "deep.png", values)
    assert probe_image(p).mode.startswith("I")
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (4, 1)
    assert [img.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


def test_load_rgb_16bit_gradient_keeps_its_range(tmp_path):
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    out = np.asarray(load_rgb(factory.png16(tmp_path / "ramp.png", ramp)))[..., 0]
    assert out.min() == 0 and out.max() == 255
    assert len(np.unique(out)) > 200  # clipping at 255 would flatten nearly everything


def test_load_rgb_rgba_transparent_pixel_becomes_grey(tmp_path):
    img = load_rgb(factory.rgba_png(tmp_path / "cut.png", transparent_at=(0, 0)))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == ALPHA_BACKGROUND == (127, 127, 127)
    assert img.getpixel((3, 3)) == (255, 0, 0)


def test_load_rgb_half_transparent_pixel_blends_with_grey(tmp_path):
    p = tmp_path / "half.png"
    Image.new("RGBA", (2, 2), (255, 255, 255, 128)).save(p)
    r, g, b = load_rgb(p).getpixel((0, 0))
    assert r == g == b and 185 <= r <= 195


def test_load_rgb_palette_png(tmp_path):
    img = load_rgb(factory.palette_png(tmp_path / "pal.png"))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 255, 0) and img.getpixel((7, 0)) == (0, 0, 255)


def test_load_rgb_palette_png_with_transparency(tmp_path):
    img = load_rgb(factory.palette_png(tmp_path / "pal.png", transparent_index=1))
    assert img.getpixel((0, 0)) == (0, 255, 0)
    assert img.getpixel((7, 0)) == ALPHA_BACKGROUND


@pytest.mark.parametrize("mode,color,expected", [("L", 90, (90, 90, 90)), ("LA", (200, 0), (127, 127, 127)),
                                                 ("1", 1, (255, 255, 255))])
def test_load_rgb_greyscale_modes(tmp_path, mode, color, expected):
    p = factory.save(tmp_path / "g.png", (4, 4), color, mode=mode)
    img = load_rgb(p)
    assert img.mode == "RGB" and img.getpixel((1, 1)) == expected


def test_load_rgb_upper_case_extension_and_webp(tmp_path):
    img = load_rgb(factory.save(tmp_path / "X.WEBP", (10, 6), (0, 0, 255), format="WEBP", lossless=True))
    assert img.mode == "RGB" and img.size == (10, 6) and img.getpixel((2, 2)) == (0, 0, 255)
