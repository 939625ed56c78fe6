"""patina.core.dataset.wizard: the folder wizard copies safely, validates, and can be run again."""

import pytest

import imagefactory as factory
from patina.core.dataset.folders import scan_dataset
from patina.core.dataset.wizard import prepare_folders
from patina.core.errors import PatinaError


def _tree(root):
    """{relative path: bytes} of every file under *root*."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def sources(tmp_path):
    photos = tmp_path / "photos"
    factory.save(photos / "a.png", (64, 64))
    factory.save(photos / "b.JPG", (64, 48), format="JPEG")
    (photos / "a.txt").write_text("sks dog, sitting", encoding="utf-8")
    (photos / "b.caption").write_text("sks dog, running", encoding="utf-8")
    (photos / "a.wd14.txt").write_text("dog, grass", encoding="utf-8")
    (photos / "a.npz").write_bytes(b"cache")          # latent cache: not copied
    (photos / "unrelated.txt").write_text("my notes")  # not a sidecar of any image: not copied
    factory.save(photos / "sub" / "deep.png")          # subfolders are not copied
    reg = tmp_path / "regsrc"
    for i in range(3):
        factory.save(reg / f"r{i}.png", (64, 64))
    return photos, reg


def test_prepare_creates_layout_and_copies_images_with_captions(tmp_path, sources):
    photos, reg = sources
    before = _tree(tmp_path)
    dest = tmp_path / "train"
    res = prepare_folders("  sks\n", " dog ", photos, 40, dest, reg_images_dir=reg, reg_repeats=1)
    assert res.img_dir == dest.resolve() / "img"
    assert res.reg_dir == dest.resolve() / "reg"
    assert res.log_dir.is_dir() and res.model_dir.is_dir()
    concept = dest / "img" / "40_sks dog"
    assert res.concept_dir == concept.resolve()
    assert sorted(p.name for p in concept.iterdir()) == ["a.png", "a.txt", "a.wd14.txt", "b.JPG", "b.caption"]
    assert (concept / "a.txt").read_text() == "sks dog, sitting"
    assert (concept / "a.png").read_bytes() == (photos / "a.png").read_bytes()
    assert sorted(p.name for p in (dest / "reg" / "1_dog").iterdir()) == ["r0.png", "r1.png", "r2.png"]
    assert (res.copied, res.reg_copied, res.sidecars_copied) == (2, 3, 3)
    assert any("subfolders" in n for n in res.notes)
    # Sources untouched.
    assert {k: v for k, v in _tree(tmp_path).items() if not k.startswith("train")} == before
    # And the result is what the scanner reads.
    scan = scan_dataset(res.img_dir, res.reg_dir)
    assert scan.samples_per_epoch == 80 and scan.reg_factor == 2
    assert scan.subsets[0].images[0].caption == "sks dog, sitting"


def test_prepare_without_reg_or_with_zero_reg_repeats(tmp_path, sources):
    photos, reg = sources
    res = prepare_folders("sks", "dog", photos, "5", tmp_path / "t1")
    assert res.reg_dir is None and not (tmp_path / "t1" / "reg").exists()
    assert (tmp_path / "t1" / "img" / "5_sks dog").is_dir()
    res = prepare_folders("sks", "dog", photos, 5, tmp_path / "t2", reg_images_dir=reg, reg_repeats=0)
    assert res.reg_dir is None and not (tmp_path / "t2" / "reg").exists()


def test_running_twice_is_safe_and_identical(tmp_path, sources):
    photos, reg = sources
    dest = tmp_path / "train"
    prepare_folders("sks", "dog", photos, 40, dest, reg, 1)
    first = _tree(dest)
    res = prepare_folders("sks", "dog", photos, 40, dest, reg, 1)
    assert _tree(dest) == first
    assert res.backups == [] and res.copied == 2
    assert sorted(p.name for p in (dest / "img").iterdir()) == ["40_sks dog"]  # no temp or backup leftovers
    assert _tree(photos)  # sources still there
    assert (photos / "a.png").exists() and (reg / "r0.png").exists()


def test_rerun_keeps_captions_edited_in_the_destination(tmp_path, sources):
    photos, _ = sources
    dest = tmp_path / "train"
    prepare_folders("sks", "dog", photos, 40, dest)
    edited = dest / "img" / "40_sks dog" / "a.txt"
    edited.write_text("my careful edit")
    res = prepare_folders("sks", "dog", photos, 40, dest)
    assert edited.read_text() == "sks dog, sitting"  # fresh copy from the source...
    assert len(res.backups) == 1                     # ...but the edit was kept, not deleted
    assert (res.backups[0] / "a.txt").read_text() == "my careful edit"
    assert not res.backups[0].is_relative_to(dest / "img")  # outside img/, so it is not trained
    assert any("kept at" in n for n in res.notes)


def test_rerun_with_other_repeats_warns_about_the_old_folder(tmp_path, sources):
    photos, _ = sources
    dest = tmp_path / "train"
    prepare_folders("sks", "dog", photos, 40, dest)
    res = prepare_folders("sks", "dog", photos, 20, dest)
    assert any("40_sks dog" in n and "both folders" in n for n in res.notes)


def test_refuses_source_equal_to_destination(tmp_path, sources):
    photos, _ = sources
    before = _tree(photos)
    with pytest.raises(PatinaError, match="same folder"):
        prepare_folders("sks", "dog", photos, 40, photos)
    assert _tree(photos) == before


def test_refuses_destination_inside_source(tmp_path, sources):
    photos, _ = sources
    before = _tree(photos)
    with pytest.raises(PatinaError, match="inside the training images folder"):
        prepare_folders("sks", "dog", photos, 40, photos / "train")
    assert _tree(photos) == before and not (photos / "train").exists()


def test_refuses_source_inside_destination(tmp_path, sources):
    photos, _ = sources
    dest = tmp_path / "train"
    prepare_folders("sks", "dog", photos, 40, dest)
    inner = dest / "img" / "40_sks dog"
    before = _tree(dest)
    with pytest.raises(PatinaError, match="is inside the destination"):
        prepare_folders("sks", "dog", inner, 40, dest)
    assert _tree(dest) == before


def test_refuses_reg_nesting_too(tmp_path, sources):
    photos, reg = sources
    with pytest.raises(PatinaError, match="regularisation images folder"):
        prepare_folders("sks", "dog", photos, 40, reg / "out", reg_images_dir=reg)
    with pytest.raises(PatinaError, match="is the training images folder"):
        prepare_folders("sks", "dog", photos, 40, tmp_path / "t", reg_images_dir=photos)


@pytest.mark.parametrize("kwargs,message", [
    (dict(instance_prompt=" "), "instance prompt"),
    (dict(class_prompt=""), "class prompt"),
    (dict(images_dir=""), "training images folder"),
    (dict(dest_dir=None), "destination folder"),
    (dict(repeats=0), "at least 1"),
    (dict(repeats="ten"), "whole number"),
    (dict(repeats=2.5), "whole number"),
    (dict(repeats=True), "whole number"),
    (dict(instance_prompt="a/b"), "folder name"),
    (dict(class_prompt="dog?"), "folder name"),
])
def test_validation(tmp_path, sources, kwargs, message):
    photos, _ = sources
    args = dict(instance_prompt="sks", class_prompt="dog", images_dir=photos, repeats=40, dest_dir=tmp_path / "t")
    args.update(kwargs)
    with pytest.raises(PatinaError, match=message):
        prepare_folders(**args)
    assert not (tmp_path / "t").exists()


def test_missing_or_empty_source(tmp_path):
    with pytest.raises(PatinaError, match="does not exist"):
        prepare_folders("sks", "dog", tmp_path / "nope", 40, tmp_path / "t")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("caption without image")
    with pytest.raises(PatinaError, match="has no images"):
        prepare_folders("sks", "dog", tmp_path / "empty", 40, tmp_path / "t")
    assert not (tmp_path / "t").exists()
