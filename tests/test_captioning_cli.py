"""``patina dataset caption``: exit codes and messages, the tiny stand-ins through --model-dir, preview, and
--download against a fake hub — never the network."""

from __future__ import annotations

import pytest

from captionkit import network_attempts  # noqa: F401 - fixture
from patina.core.cli import main
from test_captioning import blip_dir, dataset, fake_hub, read, tagger_dir  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("network_attempts")


def run(capsys, *argv):
    code = main(["dataset", "caption", *map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_model_says_what_it_needs_and_exits_2(capsys, tmp_path):
    img = dataset(tmp_path)
    code, out, err = run(capsys, img, "--model", "wd14")
    assert code == 2 and out == ""
    line, = err.strip().splitlines()
    assert "needs a download of about 470 MB from https://huggingface.co/SmilingWolf/wd-swinv2-tagger-v3" in line
    assert "model.onnx, selected_tags.csv" in line and "--download" in line and "--model-dir" in line
    assert read(img / "5_sks" / "blue.txt") is None


def test_user_mistakes_are_one_line(capsys, tmp_path, tagger_dir):
    img = dataset(tmp_path)
    cases = [(["--model", "wd15"], "unknown captioning model 'wd15'"),
             (["--model", "blip", "--threshold", "0.5", "--model-dir", tagger_dir], "--threshold is a WD14 tagger option"),
             (["--model", "wd14", "--beams", "2", "--model-dir", tagger_dir], "--beams is a BLIP option"),
             (["--model", "wd14", "--model-dir", tmp_path], "has no model.onnx, selected_tags.csv")]
    for extra, message in cases:
        code, _out, err = run(capsys, img, *extra)
        assert code == 2 and message in err and "Traceback" not in err, (extra, err)
    code, _out, err = run(capsys, tmp_path / "nothing", "--model", "wd14", "--model-dir", tagger_dir)
    assert code == 2 and "not a folder" in err
    with pytest.raises(SystemExit) as bad:
        main(["dataset", "caption", str(img), "--model", "wd14", "--threshold", "2"])
    assert bad.value.code == 2 and "must be between 0 and 1" in capsys.readouterr().err


def test_tagger_from_a_model_folder_preview_then_write(capsys, tmp_path, tagger_dir):
    img = dataset(tmp_path)
    code, out, _err = run(capsys, img, "--model", "wd14", "--model-dir", tagger_dir, "--preview", "1",
                          "--prefix", "sks")
    assert code == 0 and out.splitlines() == [f"{img / '2_other' / 'green.png'}: sks, green theme, ^_^",
                                              "Preview of 1 image(s); nothing was written."]
    assert read(img / "2_other" / "green.txt") is None
    code, out, _err = run(capsys, img, "--model", "wd14", "--model-dir", tagger_dir, "--exclude-tags", "^_^",
                          "--no-sort-by-confidence", "--character-threshold", "0.5", "--mode", "append")
    assert code == 0 and out.strip() == "3 caption(s) written."
    assert read(img / "5_sks" / "red.txt") == "old tag, red theme, red knight (hero)"
    assert read(img / "5_sks" / "blue.txt") == "blue theme"


def test_blip_with_beams_and_trigger_word(capsys, tmp_path, blip_dir):
    img = dataset(tmp_path)
    code, out, _err = run(capsys, img, "--model", "blip", "--model-dir", blip_dir, "--beams", "2", "--max-length",
                          "6", "--prefix", "sks", "--batch-size", "2")
    assert code == 0 and out.strip() == "2 caption(s) written, 1 skipped (already captioned)."
    assert read(img / "5_sks" / "blue.txt").startswith("sks, ")


def test_download_flag_fetches_then_captions(capsys, tmp_path, tagger_dir, monkeypatch):
    img = dataset(tmp_path)
    calls: list = []
    fake_hub(monkeypatch, tmp_path / "hub", tagger_dir, calls)
    code, out, err = run(capsys, img, "--model", "wd14-moat-v2", "--download")
    assert code == 0, err
    assert calls == ["model.onnx", "selected_tags.csv"] and "2 caption(s) written" in out
    code, out, err = run(capsys, img, "--model", "wd14-moat-v2", "--mode", "overwrite")   # cached: no --download
    assert code == 0 and calls == ["model.onnx", "selected_tags.csv"] and out.strip() == "1 caption(s) written, 2 unchanged."
