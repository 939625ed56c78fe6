"""Auto-captioning in core: the WD14 tagger and BLIP on tiny stand-ins loaded by the same code as the published
models, the captioning pass (skip / overwrite / append, preview, cancel, unreadable images, undo), and finding or
downloading model files — with every network connection failing the test."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

import captionkit as kit
from captionkit import network_attempts  # noqa: F401 - fixture
from patina.core.caption import files
from patina.core.caption.blip import BlipOptions
from patina.core.caption.models import get_model
from patina.core.caption.run import (ERROR, PREVIEW, SKIPPED, UNCHANGED, WRITTEN, caption_pass, compose,
                                     load_captioner)
from patina.core.caption.wd14 import TaggerOptions
from patina.core.dataset.caption_edits import apply_changes
from patina.core.errors import PatinaError

pytestmark = pytest.mark.usefixtures("network_attempts")


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return kit.save_tiny_tagger(tmp_path_factory.mktemp("models") / "wd14")


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return kit.save_tiny_blip(tmp_path_factory.mktemp("models") / "blip")


def tagger(tagger_dir, **options):
    return load_captioner(get_model("wd14"), tagger_dir, TaggerOptions(**options), device="cpu")


def dataset(tmp_path: Path) -> Path:
    """img/5_sks (red.png captioned "old tag", blue.png without caption) and img/2_other (green.png)."""
    img = tmp_path / "img"
    kit.save_image(img / "5_sks" / "red.png", (255, 0, 0))
    (img / "5_sks" / "red.txt").write_text("old tag", encoding="utf-8")
    kit.save_image(img / "5_sks" / "blue.png", (0, 0, 255))
    kit.save_image(img / "2_other" / "green.png", (0, 255, 0))
    return img


def hashes(root: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}


def read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


# --- the tagger -------------------------------------------------------------------------------------------------

def test_tagger_thresholds_order_underscores_exclude_and_ratings(tagger_dir):
    from PIL import Image

    red = [Image.new("RGB", (32, 32), (255, 0, 0))]
    # scores of a red picture: red_theme 1.0, red_knight_(hero) 0.95 (character), ^_^ 0.9, bright 0.33, others 0
    assert tagger(tagger_dir).caption(red) == ["red theme, red knight (hero), ^_^"]
    assert tagger(tagger_dir, character_threshold=0.96).caption(red) == ["red theme, ^_^"]
    assert tagger(tagger_dir, sort_by_confidence=False).caption(red) == ["^_^, red theme, red knight (hero)"]
    assert tagger(tagger_dir, replace_underscores=False).caption(red) == ["red_theme, red_knight_(hero), ^_^"]
    assert tagger(tagger_dir, general_threshold=0.3).caption(red) == ["red theme, red knight (hero), ^_^, bright"]
    assert tagger(tagger_dir, exclude=["red theme", "^_^"]).caption(red) == ["red knight (hero)"]
    assert tagger(tagger_dir, rating_tags=True, max_tags=1).caption(red) == ["red theme, general"]


def test_tagger_reads_bgr_pads_with_white_and_batches(tagger_dir, tmp_path):
    from PIL import Image

    blue = Image.new("RGB", (32, 32), (0, 0, 255))
    wide_red = Image.new("RGB", (32, 16), (255, 0, 0))     # padded to 32×32 with white: G and B means 0.5
    t = tagger(tagger_dir, character_threshold=1.0)
    assert t.caption([blue, wide_red]) == ["blue theme, ^_^", "red theme, ^_^, bright, green theme, blue theme"]
    kit.save_image(tmp_path / "clear.png", (0, 0, 0, 0), mode="RGBA")   # transparent: white, as the tagger was trained
    report = caption_pass(tmp_path, t, preview=5)
    assert set(report.results[0].new.split(", ")) == {"red theme", "green theme", "blue theme", "bright", "^_^"}
    one_by_one = kit.save_tiny_tagger(tmp_path / "fixed", fixed_batch=True)   # some v2 exports fix batch 1
    assert tagger(one_by_one, character_threshold=1.0).caption([blue, wide_red, blue])[2] == "blue theme, ^_^"


def test_tagger_options_and_missing_onnxruntime_are_one_line_errors(tagger_dir, monkeypatch):
    with pytest.raises(PatinaError, match="--threshold must be between 0 and 1"):
        tagger(tagger_dir, general_threshold=1.5)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PatinaError, match="needs the onnxruntime package: pip install onnxruntime"):
        tagger(tagger_dir)


# --- BLIP ---------------------------------------------------------------------------------------------------

def test_blip_from_a_saved_folder_beam_and_sampling(blip_dir):
    model = get_model("blip")
    assert files.find_model(model, blip_dir) == blip_dir
    from PIL import Image

    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (20, 50), (30, 30, 200))]
    beams = load_captioner(model, blip_dir, BlipOptions(num_beams=2, min_length=3, max_length=8, batch_size=2),
                           device="cpu")
    first = beams.caption(images)
    assert len(first) == 2 and all(t.strip() for t in first)
    assert all(w in kit.BLIP_WORDS for t in first for w in t.split())
    assert beams.caption(images) == first                                   # beam search is deterministic
    assert beams.generate_kwargs()["num_beams"] == 2 and not beams.generate_kwargs()["do_sample"]
    sampling = load_captioner(model, blip_dir, BlipOptions(sampling=True, top_p=0.5, max_length=8), device="cpu")
    assert sampling.generate_kwargs() == {"min_length": 5, "max_length": 8, "do_sample": True, "top_p": 0.5,
                                          "num_beams": 1}
    assert len(sampling.caption(images[:1])) == 1
    with pytest.raises(PatinaError, match="--min-length"):
        load_captioner(model, blip_dir, BlipOptions(min_length=9, max_length=8), device="cpu")


def test_blip_pass_with_trigger_word_first(blip_dir, tmp_path):
    img = dataset(tmp_path)
    captioner = load_captioner(get_model("blip"), blip_dir, BlipOptions(num_beams=1, max_length=8), device="cpu")
    report = caption_pass(img, captioner, mode="overwrite", prefix="sks", suffix="photo")
    assert report.count(WRITTEN) == 3
    for r in report.results:
        text = read(r.caption_file)
        assert text == r.new and text.startswith("sks, ") and text.endswith(", photo")


# --- the pass ----------------------------------------------------------------------------------------------------

def test_skip_is_the_default_and_leaves_captions_and_images_alone(tagger_dir, tmp_path):
    img = dataset(tmp_path)
    before = hashes(img)
    seen = []
    report = caption_pass(img, tagger(tagger_dir), prefix="sks", on_result=lambda d, t, r: seen.append((d, t)))
    by_name = {r.image.name: r for r in report.results}
    assert by_name["red.png"].action == SKIPPED and read(img / "5_sks" / "red.txt") == "old tag"
    assert by_name["blue.png"].action == WRITTEN and by_name["green.png"].action == WRITTEN
    assert read(img / "5_sks" / "blue.txt") == "sks, blue theme, ^_^"
    assert read(img / "2_other" / "green.txt") == "sks, green theme, ^_^"
    assert seen == [(1, 3), (2, 3), (3, 3)]                     # progress for every image, skipped ones too
    assert hashes(img) == before                                 # images are never written
    again = caption_pass(img, tagger(tagger_dir), prefix="sks")
    assert again.count(SKIPPED) == 3 and not again.changes


def test_overwrite_append_prefix_suffix_and_one_undo(tagger_dir, tmp_path):
    img = dataset(tmp_path)
    (img / "5_sks" / "red.txt").write_bytes(b"\xef\xbb\xbfold tag, ^_^\r\n")   # BOM and CRLF are kept
    report = caption_pass(img, tagger(tagger_dir), mode="append", suffix="best")
    assert (img / "5_sks" / "red.txt").read_bytes() == \
        b"\xef\xbb\xbfold tag, ^_^, red theme, red knight (hero), best\r\n"
    assert read(img / "5_sks" / "blue.txt") == "blue theme, ^_^, best"
    apply_changes(report.changes, False)                         # one undo reverts the whole pass
    assert (img / "5_sks" / "red.txt").read_bytes() == b"\xef\xbb\xbfold tag, ^_^\r\n"
    assert not (img / "5_sks" / "blue.txt").exists() and not (img / "2_other" / "green.txt").exists()
    caption_pass(img, tagger(tagger_dir), mode="overwrite", prefix="sks, red theme")
    assert read(img / "5_sks" / "red.txt") == "\ufeffsks, red theme, red knight (hero), ^_^"


def test_compose_keeps_trigger_words_first_once():
    assert compose("a dog, sks, grass", "sks") == "sks, a dog, grass"
    assert compose("a dog on grass", "sks, dog style", "best") == "sks, dog style, a dog on grass, best"
    assert compose("", "sks") == "sks"


def test_preview_writes_nothing_and_unreadable_images_are_reported(tagger_dir, tmp_path):
    img = dataset(tmp_path)
    (img / "2_other" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    preview = caption_pass(img, tagger(tagger_dir), mode="overwrite", preview=2)
    assert [(r.image.name, r.action) for r in preview.results] == [("broken.png", ERROR), ("green.png", PREVIEW)]
    assert "cannot read the image" in preview.results[0].message
    assert preview.results[1].new == "green theme, ^_^"
    assert read(img / "5_sks" / "red.txt") == "old tag" and not (img / "5_sks" / "blue.txt").exists()
    full = caption_pass(img, tagger(tagger_dir), mode="overwrite")
    assert full.count(ERROR) == 1 and full.count(WRITTEN) == 3        # the pass goes on past the broken file
    assert caption_pass(img, tagger(tagger_dir), mode="overwrite").count(UNCHANGED) == 3


def test_cancel_between_batches_keeps_what_was_written(tagger_dir, tmp_path):
    img = dataset(tmp_path)
    asked = []
    report = caption_pass(img, tagger(tagger_dir, batch_size=1), mode="overwrite",
                          should_stop=lambda: asked.append(1) or len(asked) > 1)
    assert report.cancelled and report.count(WRITTEN) == 1 and len(report.changes) == 1
    assert "cancelled" in report.summary()


def test_bad_mode_and_folder_are_one_line_errors(tagger_dir, tmp_path):
    with pytest.raises(PatinaError, match="--mode"):
        caption_pass(tmp_path, tagger(tagger_dir), mode="replace")
    with pytest.raises(PatinaError, match="not a folder"):
        caption_pass(tmp_path / "nope", tagger(tagger_dir))


# --- model files: found, downloaded only when asked, offline message ---------------------------------------------

def fake_hub(monkeypatch, cache: Path, source: Path, calls: list):
    """``hf_hub_download`` serving *source*'s files into a real hub cache layout under *cache*, driving the
    progress bar class it is given as the hub does (in chunks, with ``total``)."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def download(repo_id, filename, *, tqdm_class=None, **kwargs):
        calls.append(filename)
        src = source / filename
        if not src.exists():
            raise EntryNotFoundError(f"404: {filename} is not in {repo_id}")
        data = src.read_bytes()
        snap = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / "0123abcd"
        snap.mkdir(parents=True, exist_ok=True)
        (snap.parent.parent / "refs").mkdir(exist_ok=True)
        (snap.parent.parent / "refs" / "main").write_text("0123abcd")
        bar = tqdm_class(total=len(data), initial=0, desc=filename, unit="B", unit_scale=True)
        for i in range(0, len(data), 4096):
            bar.update(len(data[i:i + 4096]))
        bar.close()
        (snap / filename).write_bytes(data)
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


def test_download_only_when_asked_with_progress_then_from_the_cache(tagger_dir, tmp_path, monkeypatch):
    model = get_model("wd14-vit-v3")
    calls: list = []
    fake_hub(monkeypatch, tmp_path / "hub", tagger_dir, calls)
    with pytest.raises(files.ModelMissing) as missing:
        files.model_files(model)
    text = str(missing.value)
    assert "needs a download of about 380 MB from https://huggingface.co/SmilingWolf/wd-vit-tagger-v3" in text
    assert "model.onnx, selected_tags.csv" in text and str(files.offline_folder(model)) in text
    assert "\n" not in text and calls == []                      # nothing is fetched without being asked
    seen: list = []
    folder = files.model_files(model, download_missing=True, progress=lambda d, t: seen.append((d, t)))
    assert calls == ["model.onnx", "selected_tags.csv"]
    assert (folder / "model.onnx").read_bytes() == (tagger_dir / "model.onnx").read_bytes()
    size = sum((tagger_dir / n).stat().st_size for n in ("model.onnx", "selected_tags.csv"))
    assert seen[-1] == (size, size) and len(seen) > 3
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))     # bytes only go up
    assert files.model_files(model) == folder and calls == ["model.onnx", "selected_tags.csv"]   # cached
    load_captioner(model, folder, device="cpu")


def test_download_through_the_hub_client_from_a_local_server_resumes(tagger_dir, tmp_path, monkeypatch):
    """The real ``hf_hub_download`` against a local stand-in for huggingface.co: progress in bytes, and a
    dropped connection goes on from where it stopped."""
    from huggingface_hub import constants

    hub = kit.LocalHub(tagger_dir, cut_after=1000)
    try:
        hub.use(monkeypatch, tmp_path / "hub")
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 500)   # the client keeps whole chunks only
        model = get_model("wd14-vit-v3")
        data = (tagger_dir / "model.onnx").read_bytes()
        seen: list = []
        folder = files.model_files(model, download_missing=True, progress=lambda d, t: seen.append((d, t)))
        assert (folder / "model.onnx").read_bytes() == data
        gets = [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
        assert [(r[1].rsplit("/", 1)[1], r[2]) for r in gets] == [
            ("model.onnx", None), ("model.onnx", "bytes=1000-"), ("selected_tags.csv", None)]
        size = len(data) + (tagger_dir / "selected_tags.csv").stat().st_size
        assert (1000, len(data)) in seen and seen[-1] == (size, size)
        assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
        before = len(hub.requests)
        assert files.model_files(model) == folder and len(hub.requests) == before   # from the cache, no request
    finally:
        hub.close()


def test_optional_files_a_repository_lacks_are_skipped(blip_dir, tmp_path, monkeypatch):
    calls: list = []
    fake_hub(monkeypatch, tmp_path / "hub", blip_dir, calls)     # the tiny BLIP has no special_tokens_map.json
    folder = files.download(get_model("blip"))
    assert "special_tokens_map.json" in calls and files.missing_files(folder, get_model("blip")) == []


def test_offline_and_unreachable_hub_give_the_one_line_message(tmp_path, monkeypatch, network_attempts):
    from huggingface_hub import constants

    model = get_model("blip-large")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(files.ModelMissing, match="HF_HUB_OFFLINE is set"):
        files.model_files(model, download_missing=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", "https://hub.invalid/{repo_id}/resolve/{revision}/{filename}")
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http.time, "sleep", lambda seconds: None)   # the hub client's back-off between retries
    with pytest.raises(files.ModelMissing) as failed:
        files.model_files(model, download_missing=True)
    assert "needs a download of about 1,880 MB from https://huggingface.co/Salesforce/blip-image-captioning-large" \
        in str(failed.value) and "The download failed" in str(failed.value)
    assert network_attempts, "the guard saw the attempt"
    network_attempts.clear()


def test_model_folder_and_offline_folder(tagger_dir, tmp_path):
    model = get_model("wd14")
    with pytest.raises(PatinaError, match=r"--model-dir: .* has no model.onnx, selected_tags.csv"):
        files.find_model(model, tmp_path)
    assert files.find_model(model, tagger_dir) == tagger_dir
    own = files.offline_folder(model)
    own.mkdir(parents=True)
    for name in ("model.onnx", "selected_tags.csv"):
        (own / name).write_bytes((tagger_dir / name).read_bytes())
    assert files.find_model(model) == own == files.model_files(model)
