"""Caption edits as data, without Qt: the text helpers that change one tag, a prefix or a postfix in a
caption without touching the rest of it (line breaks, other tags, spacing), find/replace, and undoable
change sets (:class:`CaptionChange`, :func:`apply_changes`).

Applying a change set writes each caption file atomically (:func:`~patina.core.dataset.captions.write_caption`),
keeping its BOM and line endings, and remembers the exact bytes before and after: reverting puts back the
bytes the file held before (or removes a caption file the edit created). A file changed by another program
in between is left alone and reported. Images are never opened for writing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from patina.core.atomic import atomic_write_bytes
from patina.core.dataset.captions import CaptionText, decode_caption_bytes, split_tags, write_caption

# --- text helpers (pure) ---------------------------------------------------------------------------------

_PIECES = re.compile(r"(,|\n)")


def unique_tags(text: str) -> list[str]:
    """The caption's tags in order, each once."""
    seen: dict[str, None] = {}
    for tag in split_tags(text):
        seen.setdefault(tag, None)
    return list(seen)


def remove_tag(text: str, tag: str) -> str:
    """*text* without every occurrence of *tag* (a comma- or line-separated piece), keeping the rest."""
    tag = tag.strip()
    while True:
        parts = _PIECES.split(text)  # piece, sep, piece, sep, ..., piece
        hit = next((i for i in range(0, len(parts), 2) if parts[i].strip() == tag), None)
        if hit is None or not tag:
            return text
        i = hit
        if i + 1 < len(parts) and parts[i + 1] == ",":
            lead = parts[i][: len(parts[i]) - len(parts[i].lstrip())]
            parts[i + 2] = lead + parts[i + 2].lstrip(" \t")
            del parts[i:i + 2]
        elif i > 0 and parts[i - 1] == ",":
            del parts[i - 1:i + 1]
        elif i + 1 < len(parts):  # alone on its line: drop the line
            del parts[i:i + 2]
        elif i > 0:
            del parts[i - 1:i + 1]
        else:
            parts[i] = ""
        text = "".join(parts)


def insert_tag(text: str, tag: str, index: int | None = None) -> str:
    """*text* with *tag* put before its *index*-th tag, or appended (``", tag"``) when *index* is None or
    past the end. Trailing line breaks stay at the end."""
    tag = tag.strip()
    parts = _PIECES.split(text)
    pieces = [i for i in range(0, len(parts), 2) if parts[i].strip()]
    if index is not None and 0 <= index < len(pieces):
        i = pieces[index]
        lead = parts[i][: len(parts[i]) - len(parts[i].lstrip())]
        parts[i] = f"{lead}{tag}, {parts[i].lstrip()}"
        return "".join(parts)
    body = text.rstrip()
    tail = text[len(body):]
    if not body:
        return tag + tail
    return body + (" " if body.endswith(",") else ", ") + tag + tail


def add_prefix(text: str, prefix: str, as_tag: bool = True) -> str | None:
    """*text* with *prefix* in front, or None when it already starts with it."""
    if as_tag:
        p = prefix.strip().strip(",").strip()
        tags = split_tags(text)
        if not p or (tags and tags[0] == p):
            return None
        body = text.lstrip()
        return p + (", " + body if body.strip() else body)
    if not prefix or text.startswith(prefix):
        return None
    return prefix + text


def add_postfix(text: str, postfix: str, as_tag: bool = True) -> str | None:
    """*text* with *postfix* at the end (before trailing line breaks), or None when it already ends so."""
    body = text.rstrip()
    tail = text[len(body):]
    if as_tag:
        p = postfix.strip().strip(",").strip()
        tags = split_tags(text)
        if not p or (tags and tags[-1] == p):
            return None
        if not body:
            return p + tail
        return body + (" " if body.endswith(",") else ", ") + p + tail
    if not postfix or body.endswith(postfix):
        return None
    return body + postfix + tail


def replace_text(text: str, find: str, replacement: str, match_case: bool = False) -> tuple[str, int]:
    """(*text* with every *find* replaced, number of replacements)."""
    if not find:
        return text, 0
    if match_case:
        n = text.count(find)
        return (text.replace(find, replacement), n) if n else (text, 0)
    return re.subn(re.escape(find), lambda _m: replacement, text, flags=re.IGNORECASE)


# --- writing captions, undoably ---------------------------------------------------------------------------

APPLIED, UNCHANGED, MISSING, FAILED = "applied", "unchanged", "missing", "failed"


@dataclass
class CaptionChange:
    """One caption file to change. Either *text* (the new caption) or *transform* (old text -> new text
    and a count, or None for "leave it") is given; the old content is read when the change is applied."""

    image: Path
    caption: Path
    text: str | None = None
    transform: Callable[[str], tuple[str | None, int]] | None = None
    create: bool = True           # may a missing caption file be created?
    before: bytes | None = None   # file content before (None: there was no file)
    after: bytes | None = None    # file content after our write
    state: str = ""               # "" until first applied, then APPLIED / UNCHANGED / MISSING / FAILED
    count: int = 0


@dataclass
class WriteResult:
    captions: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # image -> (text, warning)
    errors: list[str] = field(default_factory=list)
    applied: int = 0
    count: int = 0
    missing: int = 0


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def apply_changes(changes: list[CaptionChange], forward: bool,
                  progress: Callable[[int, int], None] | None = None) -> WriteResult:
    """Apply (or, with ``forward=False``, revert) *changes*. Called off the GUI thread by the Dataset tab."""
    result = WriteResult()
    total = len(changes)
    for n, ch in enumerate(changes, 1):
        if progress and (n % 50 == 0 or n == total):
            progress(n, total)
        try:
            if not ch.state:
                _first_apply(ch, result)
            elif ch.state != APPLIED:
                continue
            elif forward:
                if _read(ch.caption) != ch.before:
                    result.errors.append(f"{ch.caption}: changed by another program since; redo left it as it is")
                    continue
                atomic_write_bytes(ch.caption, ch.after)
                cap = decode_caption_bytes(ch.after, str(ch.caption))
                result.captions[str(ch.image)] = (cap.text, cap.warning)
            else:
                if _read(ch.caption) != ch.after:
                    result.errors.append(f"{ch.caption}: changed by another program since; undo left it as it is")
                    continue
                if ch.before is None:
                    ch.caption.unlink(missing_ok=True)
                    result.captions[str(ch.image)] = (None, None)
                else:
                    atomic_write_bytes(ch.caption, ch.before)
                    cap = decode_caption_bytes(ch.before, str(ch.caption))
                    result.captions[str(ch.image)] = (cap.text, cap.warning)
        except OSError as exc:
            if not ch.state:
                ch.state = FAILED
            result.errors.append(f"Could not save {ch.caption}: {_why(exc)}")
    return result


def _first_apply(ch: CaptionChange, result: WriteResult) -> None:
    try:
        before = _read(ch.caption)
    except OSError as exc:
        ch.state = FAILED
        result.errors.append(f"Could not read {ch.caption}: {_why(exc)}")
        return
    if before is None and not ch.create:
        ch.state = MISSING
        result.missing += 1
        return
    old = decode_caption_bytes(before, str(ch.caption)) if before is not None else CaptionText("")
    if ch.transform is not None:
        new, count = ch.transform(old.text)
    else:
        new, count = ch.text, 0
    if new is None or (before is not None and new == old.text) or (before is None and not new.strip()):
        ch.state = UNCHANGED
        return
    ch.before = before
    try:
        write_caption(ch.caption, new, had_bom=old.had_bom, newline=old.newline)
        ch.after = ch.caption.read_bytes()
    except OSError:
        ch.state = FAILED
        raise
    ch.state = APPLIED
    ch.count = count
    result.applied += 1
    result.count += count
    result.captions[str(ch.image)] = (new, None)
