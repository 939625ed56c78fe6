"""Caption sidecar files (``image.txt`` next to ``image.png``) and the per-step caption processing
(shuffle, keep tokens, caption and tag dropout) with kohya semantics.

Reading never loses text: a BOM, Windows line endings and several lines are all kept, and a file that
is not UTF-8 is read leniently with a warning instead of coming back empty. Writing restores the BOM
and line-ending style, so saving an unchanged caption leaves the file byte-identical.
"""

from __future__ import annotations

import codecs
import os
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from patina.core.atomic import atomic_write_text

DEFAULT_CAPTION_EXTENSION = ".txt"

# Where a caption came from (ImageEntry.caption_source, caption_for_image()).
SOURCE_FILE = "file"
SOURCE_FOLDER = "folder"

_TAG_SPLIT = re.compile(r"[,\n]")


def normalize_extension(caption_extension: str | None) -> str:
    """``"txt"`` and ``".txt"`` both mean ``.txt``; empty or None means the default ``.txt``."""
    ext = (caption_extension or "").strip()
    if not ext or ext == ".":
        return DEFAULT_CAPTION_EXTENSION
    return ext if ext.startswith(".") else "." + ext


def caption_path(image_path: str | os.PathLike, caption_extension: str | None = DEFAULT_CAPTION_EXTENSION) -> Path:
    """The sidecar caption file for *image_path*: same folder, same stem, *caption_extension*."""
    p = Path(image_path)
    return p.with_name(p.stem + normalize_extension(caption_extension))


@dataclass
class CaptionText:
    """A caption file's content. ``text`` always uses ``"\\n"``; ``newline`` remembers the file's style."""

    text: str
    had_bom: bool = False
    newline: str = "\n"
    warning: str | None = None


def decode_caption_bytes(data: bytes, name: str = "caption file") -> CaptionText:
    """Decode caption bytes (see :func:`read_caption`); *name* is used in the warning."""
    warning = None
    had_bom = data.startswith(codecs.BOM_UTF8)
    if had_bom:
        data = data[len(codecs.BOM_UTF8):]
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", errors="replace")
        warning = f"{name}: saved as UTF-16; read fine, but re-save it as UTF-8 for other tools"
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")  # Windows "ANSI": Latin-1 plus curly quotes and dashes
            except UnicodeDecodeError:
                text = data.decode("latin-1")  # never fails
            warning = f"{name}: not valid UTF-8; read as Latin-1 — re-save it as UTF-8"
    newline = "\r\n" if "\r\n" in text else "\n"
    return CaptionText(text.replace("\r\n", "\n"), had_bom, newline, warning)


def read_caption(path: str | os.PathLike) -> CaptionText:
    """Read a caption file whole. Raises ``OSError`` only if the file cannot be read at all."""
    p = Path(path)
    return decode_caption_bytes(p.read_bytes(), name=str(p))


def write_caption(path: str | os.PathLike, text: str, had_bom: bool = False, newline: str = "\n") -> None:
    """Write *text* atomically as UTF-8, with a BOM if *had_bom* and with *newline* line endings.

    Pass the ``had_bom``/``newline`` of the :class:`CaptionText` that was read, and an unchanged caption
    is written back byte for byte.
    """
    if newline not in ("\n", "\r\n"):
        raise ValueError(f"newline must be '\\n' or '\\r\\n', not {newline!r}")
    body = text.replace("\r\n", "\n")
    if newline != "\n":
        body = body.replace("\n", newline)
    if had_bom:
        body = "\ufeff" + body
    atomic_write_text(path, body, encoding="utf-8", newline="")


def caption_for_image(image_path: str | os.PathLike, caption_extension: str | None,
                      fallback: str) -> tuple[str, str, str | None]:
    """The training caption of one image: ``(text, source, warning)``.

    *source* is ``"file"`` when the sidecar was used, ``"folder"`` when *fallback* (the folder's
    ``<instance> <class>`` tokens) was. The text is stripped of surrounding blank space; inner lines are
    kept. An empty or unreadable sidecar falls back with a warning naming the file.
    """
    cap = caption_path(image_path, caption_extension)
    try:
        data = cap.read_bytes()
    except FileNotFoundError:
        return fallback, SOURCE_FOLDER, None
    except IsADirectoryError:
        return fallback, SOURCE_FOLDER, f"{cap}: is a folder, not a caption file; using the folder name"
    except OSError as exc:
        return fallback, SOURCE_FOLDER, f"{cap}: cannot be read ({exc.strerror or exc}); using the folder name"
    result = decode_caption_bytes(data, name=str(cap))
    text = result.text.strip()
    if not text:
        return fallback, SOURCE_FOLDER, f"{cap}: is empty; using the folder name {fallback!r} as caption"
    return text, SOURCE_FILE, result.warning


def split_tags(text: str) -> list[str]:
    """Comma-separated tags, stripped, empty ones dropped. Line breaks separate tags too."""
    return [t.strip() for t in _TAG_SPLIT.split(text or "") if t.strip()]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def process_caption(text: str, *, shuffle: bool = False, keep_tokens: int = 0,
                    caption_dropout_rate: float = 0.0, caption_dropout_every_n_epochs: int = 0,
                    caption_tag_dropout_rate: float = 0.0, epoch: int = 1,
                    rng: random.Random) -> str:
    """The caption one training step sees.

    * Whole-caption dropout returns ``""``: with probability *caption_dropout_rate*, and always in every
      epoch where ``epoch % caption_dropout_every_n_epochs == 0`` (epochs count from 1).
    * Otherwise, when shuffling or tag dropout is on, the caption is split into tags
      (:func:`split_tags`); the first *keep_tokens* stay in place, the rest are shuffled if *shuffle*
      and each is dropped with probability *caption_tag_dropout_rate*; the result is joined with
      ``", "``. With neither on, the caption is returned as it is (stripped).

    The same *rng* state gives the same result.
    """
    if caption_dropout_rate > 0 and rng.random() < caption_dropout_rate:
        return ""
    if caption_dropout_every_n_epochs > 0 and epoch % caption_dropout_every_n_epochs == 0:
        return ""
    if not shuffle and caption_tag_dropout_rate <= 0:
        return text.strip()
    tags = split_tags(text)
    keep = max(0, int(keep_tokens))
    fixed, rest = tags[:keep], tags[keep:]
    if shuffle:
        rng.shuffle(rest)
    if caption_tag_dropout_rate > 0:
        rest = [t for t in rest if rng.random() >= caption_tag_dropout_rate]
    return join_tags(fixed + rest)


def tag_frequency(captions: Iterable[str]) -> Counter:
    """How many captions each tag occurs in (a tag repeated inside one caption counts once)."""
    counts: Counter = Counter()
    for caption in captions:
        counts.update(set(split_tags(caption)))
    return counts
