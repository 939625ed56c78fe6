"""A captioning pass over a dataset folder.

The images are those of the concept folders (``N_name``) of the folder, as the Dataset tab lists them, plus
images lying in the folder itself (a plain folder of pictures, or one concept folder). For each image the mode
decides what happens to an existing caption:

* ``skip`` (default): an image with a non-empty caption file is left alone (and not even run through the model);
* ``overwrite``: the new caption replaces the old one;
* ``append``: the new caption's tags that the old caption lacks are added at its end.

Captions are written batch by batch through :func:`patina.core.dataset.caption_edits.apply_changes` (atomic,
BOM and line endings kept), so the whole pass is one undoable change set (:attr:`PassReport.changes`); a
cancelled pass keeps what it wrote so far. A preview runs the model on the first images it would caption and
writes nothing. An image that cannot be read is reported and skipped. Images are never written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from patina.core.caption.models import BLIP, CaptionModel
from patina.core.dataset.caption_edits import (APPLIED, FAILED, CaptionChange, add_postfix, add_prefix, apply_changes,
                                               insert_tag, remove_tag, unique_tags)
from patina.core.dataset.captions import caption_path, normalize_extension, read_caption, split_tags
from patina.core.dataset.images import ALPHA_BACKGROUND, is_image_name, load_rgb
from patina.core.dataset.listing import list_dataset
from patina.core.errors import PatinaError

MODES = ("skip", "overwrite", "append")
# ImageResult.action
WRITTEN, UNCHANGED, SKIPPED, PREVIEW, ERROR = "written", "unchanged", "skipped", "preview", "error"


@dataclass
class ImageResult:
    image: Path
    caption_file: Path
    old: str | None            # the caption before (None: no caption file)
    new: str | None            # the caption the model proposed, with prefix/suffix and the mode applied
    action: str                # WRITTEN, UNCHANGED, SKIPPED, PREVIEW or ERROR
    message: str = ""          # why, for ERROR


@dataclass
class PassReport:
    results: list[ImageResult] = field(default_factory=list)
    changes: list[CaptionChange] = field(default_factory=list)   # applied: undo reverts them (apply_changes)
    cancelled: bool = False

    def count(self, action: str) -> int:
        return sum(1 for r in self.results if r.action == action)

    def summary(self) -> str:
        parts = [f"{self.count(WRITTEN)} caption(s) written"]
        for action, text in ((UNCHANGED, "unchanged"), (SKIPPED, "skipped (already captioned)"),
                             (ERROR, "could not be captioned")):
            if self.count(action):
                parts.append(f"{self.count(action)} {text}")
        return ", ".join(parts) + (" — cancelled before the end" if self.cancelled else "")


def load_captioner(model: CaptionModel, folder: str | os.PathLike, options=None, device: str = "auto"):
    """The captioner for *model* from *folder* (see :mod:`patina.core.caption.files`). *options* is a
    :class:`~patina.core.caption.blip.BlipOptions` or :class:`~patina.core.caption.wd14.TaggerOptions`."""
    if model.kind == BLIP:
        from patina.core.caption.blip import BlipCaptioner

        return BlipCaptioner(folder, options, device)
    from patina.core.caption.wd14 import WD14Tagger

    return WD14Tagger(folder, options, device)


def caption_targets(folder: str | os.PathLike, caption_extension: str = ".txt") -> list[tuple[Path, Path]]:
    """``(image, caption file)`` for every image of *folder*'s concept folders and of *folder* itself, by name."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PatinaError(f"{root}: not a folder; give the image folder (the one holding the N_name folders)")
    ext = normalize_extension(caption_extension)
    _folders, items = list_dataset(root, ext)
    own = sorted((p for p in root.iterdir() if is_image_name(p.name) and p.is_file() and not p.name.startswith(".")),
                 key=lambda p: p.name.lower())
    return [(p, caption_path(p, ext)) for p in own] + [(it.path, it.caption_file) for it in items]


def compose(generated: str, prefix: str = "", suffix: str = "") -> str:
    """*generated* with *prefix* (e.g. the trigger word) first and *suffix* last, as comma-separated parts; a
    prefix or suffix tag the model wrote itself is not repeated."""
    text = generated.strip()
    for tag in split_tags(prefix) + split_tags(suffix):
        text = remove_tag(text, tag)
    for tag in reversed(split_tags(prefix)):
        text = add_prefix(text, tag) or text
    for tag in split_tags(suffix):
        text = add_postfix(text, tag) or text
    return text.strip()


def merged(old: str | None, new: str, mode: str) -> str:
    """The caption to write over *old*: *new* (overwrite, or no old caption), or *old* with *new*'s missing
    tags added at the end (append)."""
    if mode != "append" or old is None or not old.strip():
        return new
    have = set(unique_tags(old))
    text = old
    for tag in split_tags(new):
        if tag not in have:
            text = insert_tag(text, tag)
            have.add(tag)
    return text


def caption_pass(folder: str | os.PathLike, captioner, *, mode: str = "skip", prefix: str = "", suffix: str = "",
                 caption_extension: str = ".txt", preview: int = 0,
                 on_result: Callable[[int, int, ImageResult], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> PassReport:
    """Caption the images of *folder* with *captioner* (see the module docstring).

    ``on_result(done, total, result)`` is called for every image. ``should_stop()`` is asked before each batch;
    when it says yes the pass ends (what was written stays). With *preview* > 0 only that many images are
    captioned and nothing is written.
    """
    if mode not in MODES:
        raise PatinaError(f"--mode: use one of {', '.join(MODES)}, not {mode!r}")
    report = PassReport()
    todo: list[ImageResult] = []
    for image, cap in caption_targets(folder, caption_extension):
        todo.append(_current(image, cap))
    if mode == "skip":
        skipped = [r for r in todo if r.old is not None and r.old.strip()]
        todo = [r for r in todo if not (r.old is not None and r.old.strip())]
    else:
        skipped = []
    if preview > 0:
        todo, skipped = todo[:preview], []
    total = len(skipped) + len(todo)

    def done(result: ImageResult) -> None:
        report.results.append(result)
        if on_result is not None:
            on_result(len(report.results), total, result)

    for r in skipped:
        r.action = SKIPPED
        done(r)
    for r in [r for r in todo if r.action == ERROR]:
        done(r)
    todo = [r for r in todo if r.action != ERROR]
    size = max(1, int(getattr(captioner, "batch_size", 1)))
    for start in range(0, len(todo), size):
        if should_stop is not None and should_stop():
            report.cancelled = True
            break
        batch = _load(todo[start:start + size], getattr(captioner, "background", ALPHA_BACKGROUND), done)
        if not batch:
            continue
        texts = captioner.caption([im for _r, im in batch])
        results = [r for r, _im in batch]
        for r, text in zip(results, texts):
            r.new = merged(r.old, compose(text, prefix, suffix), mode)
        if preview > 0:
            for r in results:
                r.action = PREVIEW
                done(r)
            continue
        _write(results, report, done)
    return report


def _current(image: Path, cap: Path) -> ImageResult:
    try:
        old = read_caption(cap).text
    except FileNotFoundError:
        old = None
    except OSError as exc:
        return ImageResult(image, cap, None, None, ERROR, f"cannot read its caption: {exc.strerror or exc}")
    return ImageResult(image, cap, old, None, "")


def _load(results: list[ImageResult], background, done) -> list:
    batch = []
    for r in results:
        try:
            image = load_rgb(r.image, background)
        except Exception as exc:  # noqa: BLE001 - any unreadable image is reported, never fatal
            r.action, r.message = ERROR, f"cannot read the image: {str(exc).strip() or type(exc).__name__}"
            done(r)
            continue
        batch.append((r, image))
    return batch


def _write(results: list[ImageResult], report: PassReport, done) -> None:
    changes = [CaptionChange(r.image, r.caption_file, text=r.new, create=True) for r in results]
    written = apply_changes(changes, True)
    errors = iter(written.errors)
    for r, ch in zip(results, changes):
        if ch.state == APPLIED:
            r.action = WRITTEN
            report.changes.append(ch)
        elif ch.state == FAILED:
            r.action, r.message = ERROR, next(errors, "could not be written")
        else:
            r.action = UNCHANGED
        done(r)
