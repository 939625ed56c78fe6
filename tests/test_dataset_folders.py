"""patina.core.dataset.folders: the kohya folder convention, bad files, layout mistakes and their messages."""

import os

import pytest

import imagefactory as factory
from patina.core.dataset.folders import DatasetScan, parse_concept_folder, scan_dataset
from patina.core.errors import PatinaError


def _snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_parse_concept_folder():
    assert parse_concept_folder("10_sks dog") == (10, "sks dog")
    assert parse_concept_folder("1_my_cat") == (1, "my_cat")
    assert parse_concept_folder("007_x") == (7, "x")
    assert parse_concept_folder("cats") is None
    assert parse_concept_folder("cats_10") is None
    assert parse_concept_folder("10") is None


def test_scan_reads_layout_images_and_captions(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "10_sks dog", count=3, size=(64, 48), captions={0: "sks dog, sitting, grass"})
    factory.concept(img, "2_cat", count=2, ext=".JPG")
    (img / "2_cat" / "img0.npz").write_bytes(b"latent cache")  # non-images are ignored, not skipped
    (img / "10_sks dog" / "notes.md").write_text("hi")
    scan = scan_dataset(img)
    assert [s.name for s in scan.subsets] == ["10_sks dog", "2_cat"]
    dog, cat = scan.subsets
    assert (dog.repeats, dog.class_tokens, dog.is_reg, dog.num_images) == (10, "sks dog", False, 3)
    assert (cat.repeats, cat.class_tokens, cat.num_images) == (2, "cat", 2)
    first = dog.images[0]
    assert (first.width, first.height) == (64, 48)
    assert (first.caption, first.caption_source, first.caption_warning) == ("sks dog, sitting, grass", "file", None)
    assert (dog.images[1].caption, dog.images[1].caption_source) == ("sks dog", "folder")
    assert scan.skipped == [] and scan.folder_problems == []
    assert scan.total_images == 5
    assert scan.samples_per_epoch == 3 * 10 + 2 * 2
    assert scan.reg_factor == 1 and scan.reg_samples_used == 0


def test_scan_caption_extension(tmp_path):
    img = tmp_path / "img"
    folder = factory.concept(img, "5_x", count=1)
    (folder / "img0.caption").write_text("from caption file")
    (folder / "img0.txt").write_text("from txt file")
    assert scan_dataset(img, caption_extension=".caption").subsets[0].images[0].caption == "from caption file"
    assert scan_dataset(img, caption_extension="txt").subsets[0].images[0].caption == "from txt file"


def test_bad_files_are_skipped_with_reasons_and_never_crash(tmp_path):
    img = tmp_path / "img"
    folder = factory.concept(img, "10_dog", count=2)
    factory.truncated_jpeg(folder / "cut.jpg")
    factory.zero_byte(folder / "empty.png")
    factory.text_file(folder / "readme.png")
    factory.save(folder / "really_png.jpg", (64, 64), format="PNG")
    scan = scan_dataset(img)
    reasons = {s.path.name: s.reason for s in scan.skipped}
    assert set(reasons) == {"cut.jpg", "empty.png", "readme.png"}
    assert reasons["empty.png"] == "file is empty (0 bytes)"
    assert reasons["readme.png"].startswith("not an image")
    assert reasons["cut.jpg"].startswith("image data is truncated or corrupt")
    names = [i.path.name for i in scan.subsets[0].images]
    assert names == ["img0.png", "img1.png", "really_png.jpg"]
    mismatch = scan.subsets[0].images[2]
    assert mismatch.ext_mismatch and mismatch.format == "PNG"
    assert scan.samples_per_epoch == 30


def test_scan_never_writes(tmp_path):
    img = tmp_path / "img"
    folder = factory.concept(img, "10_dog", count=2, captions={0: "a"})
    factory.truncated_jpeg(folder / "cut.jpg")
    (folder / "latin.txt").write_bytes("é".encode("latin-1"))
    factory.save(folder / "latin.png")
    before = _snapshot(tmp_path)
    scan_dataset(img)
    assert _snapshot(tmp_path) == before


def test_folder_without_repeat_prefix_is_named_with_fix(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "10_dog", count=1)
    factory.concept(img, "cats", count=2)
    (img / "empty_helper_folder").mkdir()
    scan = scan_dataset(img)
    assert [s.name for s in scan.subsets] == ["10_dog"]
    assert scan.folder_problems == ["`cats` has no repeat prefix, so it is not used; rename it to e.g. `10_cats`"]


def test_only_unprefixed_folders_is_fatal(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "cats", count=2)
    with pytest.raises(PatinaError) as info:
        scan_dataset(img)
    err = info.value
    assert "no `N_name` subfolders" in err.message
    assert any("`cats`" in p and "`10_cats`" in p for p in err.problems)


def test_zero_repeats_folder(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "10_dog", count=1)
    factory.concept(img, "0_cat", count=2)
    scan = scan_dataset(img)
    assert scan.samples_per_epoch == 10
    assert any("`0_cat` has 0 repeats" in p and "2 image(s) are never used" in p for p in scan.folder_problems)


def test_only_zero_repeats_is_fatal(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "0_cat", count=2)
    with pytest.raises(PatinaError) as info:
        scan_dataset(img)
    assert "0 repeats" in info.value.message
    assert any("`0_cat`" in p and "rename it to e.g. `10_cat`" in p for p in info.value.problems)


def test_empty_concept_folder_is_reported(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "10_dog", count=1)
    (img / "5_cat").mkdir()
    scan = scan_dataset(img)
    assert "`5_cat` has no images (PNG, JPEG, WebP or BMP)" in scan.folder_problems


def test_picked_the_concept_folder_itself(tmp_path):
    img = tmp_path / "img"
    folder = factory.concept(img, "10_sks dog", count=3)
    with pytest.raises(PatinaError) as info:
        scan_dataset(folder)
    msg = info.value.message
    assert "`10_sks dog` itself" in msg
    assert msg.endswith(f"Pick its parent folder instead: {img}")


def test_picked_a_plain_folder_of_images(tmp_path):
    photos = tmp_path / "photos"
    factory.save(photos / "a.png")
    factory.save(photos / "b.JPG", format="JPEG")
    with pytest.raises(PatinaError) as info:
        scan_dataset(photos)
    msg = info.value.message
    assert f"`{photos}` holds images directly" in msg
    assert "Rename `photos` to e.g. `10_photos`" in msg
    assert f"pick its parent folder {tmp_path}" in msg


def test_picked_one_level_too_high(tmp_path):
    factory.concept(tmp_path / "project" / "img", "10_dog", count=1)
    with pytest.raises(PatinaError) as info:
        scan_dataset(tmp_path / "project")
    assert f"pick {tmp_path / 'project' / 'img'} instead" in info.value.message


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(PatinaError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    factory.save(tmp_path / "file.png")
    with pytest.raises(PatinaError, match="is a file"):
        scan_dataset(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PatinaError, match="is empty"):
        scan_dataset(tmp_path / "empty")


def test_loose_images_next_to_concept_folders_and_nested_folders(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "10_dog", count=1)
    factory.save(img / "stray.png")
    factory.save(img / "10_dog" / "more" / "deep.png")
    scan = scan_dataset(img)
    assert scan.subsets[0].num_images == 1
    assert any("1 image(s) directly in `img` are not used" in p for p in scan.folder_problems)
    assert any("`10_dog/more`" in p and "not used" in p for p in scan.folder_problems)


def test_hidden_files_and_folders_are_ignored(tmp_path):
    img = tmp_path / "img"
    folder = factory.concept(img, "10_dog", count=1)
    factory.text_file(folder / "._img0.png", "AppleDouble")
    factory.concept(img, ".10_dog.patina-old", count=1)
    scan = scan_dataset(img)
    assert [s.name for s in scan.subsets] == ["10_dog"] and scan.skipped == []


def test_all_images_broken_is_fatal_with_reasons(tmp_path):
    folder = tmp_path / "img" / "10_dog"
    factory.zero_byte(folder / "a.png")
    factory.text_file(folder / "b.jpg")
    with pytest.raises(PatinaError) as info:
        scan_dataset(tmp_path / "img")
    assert "no image could be read" in info.value.message
    assert any(p.endswith("a.png: file is empty (0 bytes)") for p in info.value.problems)


def test_regularisation_is_capped_to_training_samples(tmp_path):
    factory.concept(tmp_path / "img", "3_sks dog", count=2)   # 6 training samples
    factory.concept(tmp_path / "reg", "1_dog", count=10)      # 10 reg samples available
    scan = scan_dataset(tmp_path / "img", tmp_path / "reg")
    assert [s.is_reg for s in scan.subsets] == [False, True]
    assert scan.samples_per_epoch == 6
    assert scan.reg_samples_available == 10
    assert scan.reg_samples_used == 6
    assert scan.reg_factor == 2 and scan.total_samples_per_epoch == 12
    assert scan.train_images == 2 and scan.reg_images == 10 and scan.total_images == 12


def test_few_reg_images_are_cycled_up_to_training_samples(tmp_path):
    factory.concept(tmp_path / "img", "10_sks dog", count=2)
    factory.concept(tmp_path / "reg", "1_dog", count=1)
    scan = scan_dataset(tmp_path / "img", tmp_path / "reg")
    assert scan.reg_samples_used == 20 and scan.reg_factor == 2


def test_regularisation_folder_errors(tmp_path):
    factory.concept(tmp_path / "img", "10_dog", count=1)
    with pytest.raises(PatinaError, match="regularisation folder does not exist"):
        scan_dataset(tmp_path / "img", tmp_path / "reg")
    with pytest.raises(PatinaError, match="same as the image folder"):
        scan_dataset(tmp_path / "img", tmp_path / "img")
    factory.save(tmp_path / "flat_reg" / "r.png")  # a reg folder with the wrong layout is not fatal
    scan = scan_dataset(tmp_path / "img", tmp_path / "flat_reg")
    assert scan.reg_factor == 1
    assert any(p.startswith("regularisation: ") and "not used" in p for p in scan.folder_problems)


def test_too_small_and_progress(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "10_dog", count=2, size=(300, 300))
    factory.save(img / "10_dog" / "tiny.png", (200, 400))
    calls = []
    scan = scan_dataset(img, min_size=256, progress=lambda done, total: calls.append((done, total)))
    assert [e.path.name for e in scan.too_small] == ["tiny.png"]
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)


def test_exif_rotated_image_size_in_scan(tmp_path):
    folder = tmp_path / "img" / "1_x"
    factory.exif_jpeg(folder / "r.jpg", (40, 20), orientation=6)
    entry = scan_dataset(tmp_path / "img").subsets[0].images[0]
    assert (entry.width, entry.height) == (20, 40)


def test_scan_result_type_and_string_paths(tmp_path):
    factory.concept(tmp_path / "img", "1_x", count=1)
    scan = scan_dataset(os.fspath(tmp_path / "img"), None, "")
    assert isinstance(scan, DatasetScan) and scan.caption_extension == ".txt" and scan.reg_data_dir is None
