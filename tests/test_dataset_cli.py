"""``patina dataset check`` / ``patina dataset prepare`` through patina.core.cli.main."""

import pytest

import imagefactory as factory
from patina.core.cli import main


@pytest.fixture
def img(tmp_path):
    root = tmp_path / "img"
    factory.concept(root, "10_sks dog", count=4, size=(64, 64), captions={0: "sks dog, grass"})
    return root


def test_check_prints_summary_and_exits_0(img, capsys):
    assert main(["dataset", "check", str(img), "--batch-size", "2", "--epochs", "3"]) == 0
    out, err = capsys.readouterr()
    assert "10_sks dog" in out
    assert "Samples per epoch: 40" in out
    assert "Steps per epoch:   20" in out and "Total steps:       60" in out
    assert "Top tags: sks dog (4), grass (1)" in out
    assert err == ""


def test_check_with_bad_images_still_exits_0_and_lists_them(img, capsys):
    factory.truncated_jpeg(img / "10_sks dog" / "cut.jpg")
    factory.text_file(img / "10_sks dog" / "oops.png")
    assert main(["dataset", "check", str(img)]) == 0
    out, _ = capsys.readouterr()
    assert "Skipped files (2):" in out
    assert "cut.jpg: image data is truncated or corrupt" in out
    assert "oops.png: not an image" in out


def test_check_with_reg_and_step_options(img, tmp_path, capsys):
    factory.concept(tmp_path / "reg", "1_dog", count=5)
    code = main(["dataset", "check", str(img), "--reg", str(tmp_path / "reg"), "--batch-size", "4",
                 "--grad-accum", "2", "--max-train-epochs", "2", "--resolution", "768x512"])
    assert code == 0
    out, _ = capsys.readouterr()
    assert "Steps per epoch:   10" in out      # ceil(ceil(40 × 2 / 4) / 2)
    assert "Total steps:       20" in out
    assert "max 768x512" in out


def test_check_wrong_level_exits_2_without_traceback(img, capsys):
    assert main(["dataset", "check", str(img / "10_sks dog")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("patina: You picked the concept folder `10_sks dog` itself")
    assert str(img) in err and "Traceback" not in err


def test_check_missing_folder_exits_2(tmp_path, capsys):
    assert main(["dataset", "check", str(tmp_path / "nope")]) == 2
    _, err = capsys.readouterr()
    assert "does not exist" in err and "Traceback" not in err


def test_check_nothing_trainable_lists_problems(tmp_path, capsys):
    factory.concept(tmp_path / "img", "cats", count=1)
    assert main(["dataset", "check", str(tmp_path / "img")]) == 2
    _, err = capsys.readouterr()
    assert "  - `cats` has no repeat prefix" in err


def test_check_bad_option_values_are_usage_errors(img, capsys):
    with pytest.raises(SystemExit) as info:
        main(["dataset", "check", str(img), "--resolution", "huge"])
    assert info.value.code == 2
    assert "resolution must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dataset", "check", str(img), "--batch-size", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_prepare_builds_folders(tmp_path, capsys):
    photos = tmp_path / "photos"
    factory.save(photos / "a.png")
    (photos / "a.txt").write_text("hello")
    factory.save(tmp_path / "regs" / "r.png")
    dest = tmp_path / "train"
    code = main(["dataset", "prepare", "--instance", "sks", "--class", "dog", "--images", str(photos),
                 "--repeats", "40", "--dest", str(dest), "--reg", str(tmp_path / "regs"), "--reg-repeats", "2"])
    assert code == 0
    out, _ = capsys.readouterr()
    assert (dest / "img" / "40_sks dog" / "a.txt").read_text() == "hello"
    assert (dest / "reg" / "2_dog" / "r.png").is_file()
    assert f"Image folder:          {dest.resolve() / 'img'}" in out
    assert f"Output folder:         {dest.resolve() / 'model'}" in out
    assert main(["dataset", "check", str(dest / "img"), "--reg", str(dest / "reg")]) == 0


def test_prepare_refusal_exits_2(tmp_path, capsys):
    photos = tmp_path / "photos"
    factory.save(photos / "a.png")
    code = main(["dataset", "prepare", "--instance", "sks", "--class", "dog", "--images", str(photos),
                 "--repeats", "40", "--dest", str(photos / "out")])
    assert code == 2
    _, err = capsys.readouterr()
    assert "inside the training images folder" in err and "Traceback" not in err
    assert not (photos / "out").exists()


def test_dataset_without_action_shows_help(capsys):
    assert main(["dataset"]) == 0
    assert "check" in capsys.readouterr().out
