"""patina.core.dataset.summary: step math with kohya precedence and reg doubling, buckets, captions, text output."""

import pytest

import imagefactory as factory
from patina.core.dataset.folders import scan_dataset
from patina.core.dataset.plan import run_length
from patina.core.dataset.summary import epoch_arithmetic, format_summary, summarize
from patina.core.errors import PatinaError


@pytest.fixture
def dataset(tmp_path):
    img = tmp_path / "img"
    factory.concept(img, "10_sks dog", count=3, size=(64, 64), captions={0: "sks dog, grass", 1: "sks dog, sofa"})
    factory.concept(img, "5_cat", count=2, size=(96, 64))
    return img


def test_steps_per_epoch_formula():
    assert epoch_arithmetic([(40, 1)], batch_size=4, grad_accum=3).simple_steps == 4     # ceil(ceil(40/4)/3)
    assert epoch_arithmetic([(41, 1)], batch_size=4).simple_steps == 11
    assert epoch_arithmetic([(40, 1)], 1, batch_size=4, grad_accum=3).simple_steps == 7  # with reg: ceil(20/3)
    assert epoch_arithmetic([(1, 1)]).simple_steps == 1


def test_total_steps_precedence():
    r = run_length(4, epochs=5)
    assert (r.total_steps, r.epochs, r.rule) == (20, 5, "5 epoch(s) × 4 steps per epoch")
    r = run_length(4, epochs=5, max_train_steps=7)
    assert (r.total_steps, r.epochs) == (7, 2) and "max train steps" in r.rule
    r = run_length(4, epochs=5, max_train_steps=7, max_train_epochs=3)
    assert (r.total_steps, r.epochs) == (12, 3) and "max train epochs" in r.rule


def test_summary_step_math(dataset):
    s = summarize(scan_dataset(dataset), batch_size=4, grad_accum=3, epochs=5)
    assert s.samples_per_epoch == 3 * 10 + 2 * 5 == 40
    assert s.steps_per_epoch == 4 and s.total_steps == 20 and s.epochs == 5
    assert [(f.name, f.images, f.repeats, f.samples) for f in s.folders] == [("10_sks dog", 3, 10, 30),
                                                                             ("5_cat", 2, 5, 10)]
    s = summarize(scan_dataset(dataset), batch_size=4, grad_accum=3, epochs=5, max_train_steps=1600)
    assert s.total_steps == 1600 and s.epochs == 400
    s = summarize(scan_dataset(dataset), batch_size=4, grad_accum=3, epochs=5, max_train_steps=1600,
                  max_train_epochs=2)
    assert s.total_steps == 8 and s.epochs == 2


def test_summary_reg_doubles_steps(dataset, tmp_path):
    factory.concept(tmp_path / "reg", "1_dog", count=100, size=(64, 64))
    s = summarize(scan_dataset(dataset, tmp_path / "reg"), batch_size=4, grad_accum=3, epochs=5)
    assert (s.reg_samples_available, s.reg_samples_used, s.reg_factor) == (100, 40, 2)
    assert s.total_samples_per_epoch == 80
    assert s.steps_per_epoch == 7 and s.total_steps == 35
    assert any("only 40 of 100 regularisation samples" in w for w in s.warnings)
    assert s.reg_buckets == {(64, 64): 100}
    text = format_summary(s)
    assert "reg 1_dog" in text and "Samples per epoch: 80  (40 train + 40 reg)" in text
    # the same arithmetic as the plan dialog and the wizard (patina.core.dataset.summary.EpochArithmetic)
    assert s.arithmetic.text in text and " = 40 train + 40 reg = 80 samples / batch 4 / accumulation 3" in text


def test_summary_buckets_and_small_bucket_warning(dataset):
    # No upscaling: each image gets its own size rounded down to the step (96x64 -> 64x64 with step 64).
    s = summarize(scan_dataset(dataset), batch_size=3, resolution="512,512", min_bucket_reso=64)
    assert s.buckets == {(64, 64): 5}
    assert s.bucket_warnings == [] and s.too_small == []
    s = summarize(scan_dataset(dataset), batch_size=4, min_bucket_reso=64, bucket_reso_steps=32)
    assert s.buckets == {(64, 64): 3, (96, 64): 2}
    assert len(s.bucket_warnings) == 2
    assert any("96x64 holds 2 image(s), fewer than the batch size 4" in w for w in s.bucket_warnings)
    assert "Warnings (2):" in format_summary(s)


def test_summary_upscale_and_buckets_off(dataset):
    s = summarize(scan_dataset(dataset), bucket_no_upscale=False, min_bucket_reso=256)
    assert s.buckets == {(640, 384): 2, (512, 512): 3}  # 3:2 is nearest 640x384 (5:3)
    assert any("5 image(s) have a side under 256 px and will be enlarged" in w for w in s.warnings)
    s = summarize(scan_dataset(dataset), enable_bucket=False, resolution="512")
    assert s.buckets == {(512, 512): 5}
    assert any("buckets are off: 2 image(s)" in w for w in s.warnings)


def test_summary_captions_skipped_and_problems(dataset):
    factory.zero_byte(dataset / "5_cat" / "empty.png")
    (dataset / "10_sks dog" / "img2.txt").write_bytes("sks dog, café".encode("latin-1"))
    factory.save(dataset / "10_sks dog" / "png.jpg", (64, 64), format="PNG")
    factory.concept(dataset, "norepeats", count=1)
    s = summarize(scan_dataset(dataset))
    assert (s.captions_from_file, s.captions_from_folder) == (3, 3)
    assert s.top_tags[0] == ("sks dog", 4)
    assert ("cat", 2) in s.top_tags and ("café", 1) in s.top_tags
    assert [f.path.name for f in s.skipped] == ["empty.png"]
    assert len(s.caption_warnings) == 1 and "img2.txt" in s.caption_warnings[0]
    assert any("png.jpg: is really a PNG file" in w for w in s.warnings)
    assert any("`norepeats`" in p for p in s.folder_problems)
    text = format_summary(s)
    for needle in ("Skipped files (1):", "empty.png: file is empty (0 bytes)", "Folder problems (1):",
                   "Caption warnings (1):", "Top tags: sks dog (4)", "3 from caption files, 3 from folder names"):
        assert needle in text, needle


def test_format_summary_table_is_aligned(dataset):
    text = format_summary(summarize(scan_dataset(dataset), batch_size=2, epochs=3))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("Folder"))
    table = lines[header:header + 3]
    assert table[1].lstrip().startswith("10_sks dog") and table[2].lstrip().startswith("5_cat")
    # right-aligned number columns end at the same place as their headings
    for heading in ("Images", "Repeats", "Samples/epoch"):
        end = table[0].index(heading) + len(heading)
        assert table[1][end - 1].isdigit() and table[2][end - 1].isdigit()
        assert table[1][end:end + 1] in ("", " ")
    assert "Samples per epoch: 40" in text
    assert "Steps per epoch:   20" in text
    assert "Total steps:       60  (3 epoch(s) × 20 steps per epoch)" in text


@pytest.mark.parametrize("kwargs,message", [(dict(batch_size=0), "Batch size"), (dict(grad_accum=0), "accumulation"),
                                            (dict(resolution="big"), "resolution"),
                                            (dict(min_bucket_reso=1024, resolution="512"), "minimum bucket")])
def test_summary_rejects_bad_settings(dataset, kwargs, message):
    with pytest.raises(PatinaError, match=message):
        summarize(scan_dataset(dataset), **kwargs)


def test_epoch_arithmetic_reads_the_same_everywhere():
    a = epoch_arithmetic([(16, 10)], reg_samples_available=4, batch_size=2)
    assert a.text == "16 images × 10 repeats = 160 train + 160 reg = 320 samples / batch 2 = 160 steps per epoch"
    assert (a.train_samples, a.reg_samples, a.total_samples, a.steps_per_epoch) == (160, 160, 320, 160)
    a = epoch_arithmetic([(16, 10), (4, 5)], batch_size=2, grad_accum=2)
    assert a.text == ("16 images × 10 repeats + 4 images × 5 repeats = 180 samples / batch 2 / accumulation 2 "
                      "= 45 steps per epoch")
    a = epoch_arithmetic([(3, 1)], batch_size=2, steps=3)  # bucketed: 3 buckets of one image each
    assert a.text.endswith("→ 3 steps per epoch (each batch holds one bucket's images)")


def test_images_smaller_than_their_bucket_are_reported(tmp_path):
    factory.concept(tmp_path / "img", "2_toy", count=2, size=(64, 64))
    factory.concept(tmp_path / "img", "2_big", count=1, size=(512, 512))
    s = summarize(scan_dataset(tmp_path / "img", min_size=64), resolution=(512, 512), min_bucket_reso=64,
                  bucket_no_upscale=False)
    assert any("2 image(s) are smaller than their bucket and will be enlarged" in w and "64×64 → 512×512" in w
               for w in s.warnings)
    s = summarize(scan_dataset(tmp_path / "img", min_size=64), resolution=(512, 512), min_bucket_reso=64,
                  bucket_no_upscale=True)
    assert not any("smaller than their bucket" in w for w in s.warnings)  # each keeps its own size
