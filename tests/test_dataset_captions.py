"""patina.core.dataset.captions: sidecar paths, lossless read/write, fallback captions, kohya caption processing."""

import random
from pathlib import Path

import pytest

from patina.core.dataset.captions import (
    caption_for_image,
    caption_path,
    join_tags,
    process_caption,
    read_caption,
    split_tags,
    tag_frequency,
    write_caption,
)
from patina.core.dataset.caption_edits import (APPLIED, MISSING, CaptionChange, add_postfix, add_prefix,
                                              apply_changes, insert_tag, remove_tag, replace_text)


def test_caption_path_extension_forms(tmp_path):
    img = tmp_path / "photo.01.PNG"
    assert caption_path(img) == tmp_path / "photo.01.txt"
    assert caption_path(img, ".caption") == tmp_path / "photo.01.caption"
    assert caption_path(img, "cap") == tmp_path / "photo.01.cap"
    assert caption_path(img, "") == tmp_path / "photo.01.txt"
    assert caption_path(img, None) == tmp_path / "photo.01.txt"


def test_bom_crlf_multiline_reads_whole_and_round_trips_byte_identical(tmp_path):
    p = tmp_path / "a.txt"
    raw = "\ufeffsks dog, sitting\r\non the grass, é\r\n".encode("utf-8")
    p.write_bytes(raw)
    cap = read_caption(p)
    assert cap.text == "sks dog, sitting\non the grass, é\n"
    assert cap.had_bom and cap.newline == "\r\n" and cap.warning is None
    write_caption(p, cap.text, had_bom=cap.had_bom, newline=cap.newline)
    assert p.read_bytes() == raw


def test_plain_utf8_lf_round_trips(tmp_path):
    p = tmp_path / "a.txt"
    raw = "один, два\n".encode("utf-8")
    p.write_bytes(raw)
    cap = read_caption(p)
    assert (cap.text, cap.had_bom, cap.newline) == ("один, два\n", False, "\n")
    write_caption(p, cap.text, cap.had_bom, cap.newline)
    assert p.read_bytes() == raw


def test_edited_caption_keeps_bom_and_crlf(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbfold\r\nline")
    cap = read_caption(p)
    write_caption(p, cap.text.replace("old", "new"), cap.had_bom, cap.newline)
    assert p.read_bytes() == b"\xef\xbb\xbfnew\r\nline"


def test_write_caption_is_atomic_and_leaves_no_temp_files(tmp_path):
    p = tmp_path / "a.txt"
    write_caption(p, "x")
    write_caption(p, "y")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.txt"]
    assert p.read_bytes() == b"y"
    with pytest.raises(ValueError):
        write_caption(p, "z", newline="\r")


def test_latin1_caption_warns_and_is_not_empty(tmp_path):
    p = tmp_path / "old.txt"
    p.write_bytes("café, crème brûlée".encode("latin-1"))
    cap = read_caption(p)
    assert cap.text == "café, crème brûlée"
    assert cap.warning is not None
    assert "old.txt" in cap.warning and "not valid UTF-8" in cap.warning and "UTF-8" in cap.warning


def test_cp1252_quotes_are_read(tmp_path):
    p = tmp_path / "q.txt"
    p.write_bytes(b"\x93quoted\x94 \x96 dash")
    cap = read_caption(p)
    assert cap.text == "\u201cquoted\u201d \u2013 dash" and cap.warning


def test_utf16_caption_is_read(tmp_path):
    p = tmp_path / "u.txt"
    p.write_bytes("sks dog, park".encode("utf-16"))
    cap = read_caption(p)
    assert cap.text == "sks dog, park" and "UTF-16" in cap.warning


def test_caption_for_image_prefers_sidecar(tmp_path):
    img = tmp_path / "a.png"
    (tmp_path / "a.txt").write_text("  sks dog, red collar\nsecond line \n", encoding="utf-8")
    text, source, warning = caption_for_image(img, ".txt", "sks dog")
    assert text == "sks dog, red collar\nsecond line"
    assert source == "file" and warning is None


def test_missing_caption_falls_back_to_folder_tokens(tmp_path):
    img = tmp_path / "a.png"
    (tmp_path / "a.caption").write_text("other extension", encoding="utf-8")
    assert caption_for_image(img, ".txt", "sks dog") == ("sks dog", "folder", None)
    assert caption_for_image(img, ".caption", "sks dog") == ("other extension", "file", None)


def test_empty_caption_file_falls_back_with_warning(tmp_path):
    img = tmp_path / "a.png"
    (tmp_path / "a.txt").write_text(" \n", encoding="utf-8")
    text, source, warning = caption_for_image(img, ".txt", "sks dog")
    assert (text, source) == ("sks dog", "folder")
    assert "a.txt" in warning and "empty" in warning


def test_latin1_sidecar_warning_reaches_caller(tmp_path):
    img = tmp_path / "a.png"
    (tmp_path / "a.txt").write_bytes("niño".encode("latin-1"))
    text, source, warning = caption_for_image(img, ".txt", "kid")
    assert (text, source) == ("niño", "file") and "a.txt" in warning


def test_split_and_join_tags():
    assert split_tags(" a, b ,,c,\n d\r\ne, ") == ["a", "b", "c", "d", "e"]
    assert split_tags("") == []
    assert join_tags(["a", "b c"]) == "a, b c"


def _process(text, seed=0, **kw):
    return process_caption(text, rng=random.Random(seed), **kw)


def test_process_caption_without_options_returns_text():
    assert _process("  a photo of sks dog, in a park ") == "a photo of sks dog, in a park"


def test_process_caption_shuffle_keeps_first_tokens_fixed():
    text = "sks, dog, " + ", ".join(f"t{i}" for i in range(12))
    outs = {_process(text, seed, shuffle=True, keep_tokens=2) for seed in range(20)}
    assert len(outs) > 1  # it really shuffles
    for out in outs:
        tags = split_tags(out)
        assert tags[:2] == ["sks", "dog"]
        assert sorted(tags[2:]) == sorted(f"t{i}" for i in range(12))


def test_process_caption_is_deterministic_for_a_seed():
    text = "a, b, c, d, e, f, g"
    kw = dict(shuffle=True, caption_tag_dropout_rate=0.3)
    assert _process(text, 7, **kw) == _process(text, 7, **kw)


def test_process_caption_whole_dropout_by_rate():
    assert _process("a, b", caption_dropout_rate=1.0) == ""
    assert _process("a, b", caption_dropout_rate=0.0) == "a, b"
    rng = random.Random(1)
    dropped = sum(process_caption("a", caption_dropout_rate=0.25, rng=rng) == "" for _ in range(2000))
    assert 400 < dropped < 600


def test_process_caption_dropout_every_n_epochs():
    kw = dict(caption_dropout_every_n_epochs=3)
    assert [_process("a, b", epoch=e, **kw) for e in range(1, 7)] == ["a, b", "a, b", "", "a, b", "a, b", ""]


def test_process_caption_tag_dropout_never_drops_kept_tokens():
    text = "sks, " + ", ".join(f"t{i}" for i in range(10))
    assert _process(text, caption_tag_dropout_rate=1.0, keep_tokens=1) == "sks"
    rng = random.Random(3)
    lengths = [len(split_tags(process_caption(text, keep_tokens=1, caption_tag_dropout_rate=0.5, rng=rng)))
               for _ in range(300)]
    assert min(lengths) >= 1 and 4.5 < sum(lengths) / len(lengths) - 1 < 5.5


def test_process_caption_multiline_tags():
    out = _process("sks dog\nsitting, grass", 0, shuffle=True, keep_tokens=1)
    assert split_tags(out)[0] == "sks dog" and sorted(split_tags(out)) == ["grass", "sitting", "sks dog"]


def test_tag_frequency_counts_captions_per_tag():
    freq = tag_frequency(["a, b", "b, c, b", "b\nd", ""])
    assert freq["b"] == 3 and freq["a"] == 1 and freq["d"] == 1
    assert freq.most_common(1) == [("b", 3)]


def test_read_caption_missing_file_raises(tmp_path):
    with pytest.raises(OSError):
        read_caption(Path(tmp_path / "none.txt"))


# --- caption edits (patina.core.dataset.caption_edits) ---------------------------------------------

def test_remove_and_insert_tag_keep_the_rest():
    assert remove_tag("a, b, c", "b") == "a, c"
    assert remove_tag("a, b, c", "a") == "b, c"
    assert remove_tag("a, b, c", "c") == "a, b"
    assert remove_tag("a, b\nc, d\n", "d") == "a, b\nc\n"
    assert remove_tag("a, b\nc\n", "c") == "a, b\n"
    assert remove_tag("a, b, a", "a") == "b"
    assert remove_tag("only", "only") == ""
    assert remove_tag("a, b", "zzz") == "a, b"
    assert insert_tag("a, c", "b", 1) == "a, b, c"
    assert insert_tag("b, c", "a", 0) == "a, b, c"
    assert insert_tag("a, b\r\n".replace("\r\n", "\n"), "c") == "a, b, c\n"
    assert insert_tag("", "x") == "x"


def test_prefix_postfix_and_replace_helpers():
    assert add_prefix("sitting, grass", "sks dog") == "sks dog, sitting, grass"
    assert add_prefix("sks dog, sitting", "sks dog") is None
    assert add_prefix("photo", "my ", as_tag=False) == "my photo"
    assert add_postfix("a, b\n", "best") == "a, b, best\n"
    assert add_postfix("a, best", "best") is None
    assert replace_text("Dog, dog, DOG", "dog", "cat") == ("cat, cat, cat", 3)
    assert replace_text("Dog, dog", "dog", "cat", match_case=True) == ("Dog, cat", 1)
    assert replace_text("a\\1b", "\\1", "x") == ("axb", 1)


def test_change_sets_apply_and_revert_byte_exactly_without_qt(tmp_path):
    """An undoable change set is plain data: apply writes, revert puts back the exact bytes (BOM, CRLF) or
    removes a file the change created; a file changed in between is left alone and reported."""
    img, cap = tmp_path / "a.png", tmp_path / "a.txt"
    cap.write_bytes(b"\xef\xbb\xbfdog, grass\r\nline two")
    img2, cap2 = tmp_path / "b.png", tmp_path / "b.txt"
    changes = [CaptionChange(img, cap, transform=lambda t: replace_text(t, "dog", "cat")),
               CaptionChange(img2, cap2, text="new caption"),
               CaptionChange(tmp_path / "c.png", tmp_path / "c.txt", text="x", create=False)]
    before = cap.read_bytes()
    result = apply_changes(changes, True)
    assert (result.applied, result.count, result.missing) == (2, 1, 1)
    assert cap.read_bytes() == b"\xef\xbb\xbfcat, grass\r\nline two" and cap2.read_text() == "new caption"
    assert [c.state for c in changes] == [APPLIED, APPLIED, MISSING]
    result = apply_changes(changes, False)
    assert cap.read_bytes() == before and not cap2.exists() and not result.errors
    apply_changes(changes, True)
    cap.write_text("edited elsewhere")
    result = apply_changes(changes, False)
    assert cap.read_text() == "edited elsewhere" and not cap2.exists()
    assert result.errors == [f"{cap}: changed by another program since; undo left it as it is"]


def test_list_dataset_reads_concept_folders_and_images_by_name(tmp_path):
    from patina.core.dataset.listing import list_dataset

    (tmp_path / "10_sks dog").mkdir()
    (tmp_path / "10_sks dog" / "b.PNG").write_bytes(b"not decoded")
    (tmp_path / "10_sks dog" / "a.jpg").write_bytes(b"")
    (tmp_path / "10_sks dog" / "a.txt").write_text("caption")
    (tmp_path / "10_sks dog" / "notes.md").write_text("")
    (tmp_path / "2_cat").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / ".5_hidden").mkdir()
    folders, items = list_dataset(tmp_path, "txt")
    assert [(f.name, f.repeats, f.tokens, f.count) for f in folders] == [("10_sks dog", 10, "sks dog", 2),
                                                                          ("2_cat", 2, "cat", 0)]
    assert [(i.name, i.folder, i.tokens, i.caption_file.name) for i in items] == [
        ("a.jpg", "10_sks dog", "sks dog", "a.txt"), ("b.PNG", "10_sks dog", "sks dog", "b.txt")]
    assert [i.check for i in items] == [None, None] and [i.has_caption for i in items] == [True, False]
