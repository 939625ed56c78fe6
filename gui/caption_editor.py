"""Caption editing for the Dataset tab.

* Text helpers (pure functions) that change one tag, a prefix or a postfix in a caption without
  touching the rest of it (line breaks, other tags, spacing).
* :class:`CaptionStore` writes caption files on one background thread, in the order asked, atomically
  (``patina.core.dataset.captions.write_caption``), keeping each file's BOM and line endings.
* :class:`CaptionCommand` makes every write undoable: undo puts back the exact bytes the file held
  before (or removes a caption file the edit created). A file changed by another program in between is
  left alone and reported.
* The widgets: :class:`CaptionPanel` (preview, caption editor with debounced autosave, tag chips and
  quick tags), :class:`BatchPanel` (find/replace, prefix/postfix across a folder) and
  :class:`TagFrequencyPanel`.

Images are never opened for writing here.
"""

from __future__ import annotations

from html import escape
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QColor, QKeySequence, QPainter, QPixmap, QUndoCommand
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QFrame, QGridLayout, QHBoxLayout, QLabel,
                               QLayout, QLineEdit, QPlainTextEdit, QPushButton, QScrollArea, QSizePolicy,
                               QSplitter, QToolButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from patina.core.atomic import atomic_write_bytes
from patina.core.dataset.captions import CaptionText, decode_caption_bytes, split_tags, write_caption

ERROR_COLOR = "#c62828"
MUTED_STYLE = "color: palette(placeholder-text);"

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
    """Apply (or, with ``forward=False``, revert) *changes*. Runs on the store's worker thread."""
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


class CaptionStore(QObject):
    """Runs caption writes one at a time, in order, on a background thread.

    ``finished(tag, result)`` comes back in the GUI thread for every job; ``progress(done, total)`` for
    big ones. :meth:`wait` blocks until everything queued is on disk (used before closing).
    """

    finished = Signal(object, object)   # tag, WriteResult
    progress = Signal(int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pool = QThreadPool()
        self._pool.setMaxThreadCount(1)  # one thread = jobs run in the order they were queued
        self._lock = threading.Lock()
        self._jobs = 0

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._jobs > 0

    def submit(self, changes: list[CaptionChange], forward: bool, tag=None) -> None:
        with self._lock:
            self._jobs += 1

        def job():
            try:
                result = apply_changes(changes, forward, self._report_progress if len(changes) > 50 else None)
            except Exception as exc:  # noqa: BLE001 - report, never lose the worker
                result = WriteResult(errors=[f"Saving captions failed: {type(exc).__name__}: {exc}"])
            with self._lock:
                self._jobs -= 1
            self.finished.emit(tag, result)

        self._pool.start(job)

    def _report_progress(self, done: int, total: int) -> None:
        self.progress.emit(done, total)

    def wait(self, timeout_ms: int = 60000) -> bool:
        """Block until every queued write is done (queued signals are delivered later)."""
        return self._pool.waitForDone(timeout_ms)


class CaptionCommand(QUndoCommand):
    """An undoable set of caption writes. With *applied* the first redo (QUndoStack.push) does nothing,
    because the writes already happened."""

    def __init__(self, store: CaptionStore, changes: list[CaptionChange], text: str, *, applied: bool = False,
                 tag=None):
        super().__init__(text)
        self.store = store
        self.changes = changes
        self.tag = tag
        self._skip_redo = applied

    def redo(self):
        if self._skip_redo:
            self._skip_redo = False
            return
        self.store.submit(self.changes, True, self.tag)

    def undo(self):
        self.store.submit(self.changes, False, self.tag)


# --- small widgets ----------------------------------------------------------------------------------------

class FlowLayout(QLayout):
    """Lays children out left to right, wrapping to new rows (for tag chips)."""

    def __init__(self, parent=None, spacing: int = 4):
        super().__init__(parent)
        self._items = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item):  # noqa: N802 (Qt name)
        self._items.append(item)

    def count(self):
        return len(self._items)

    def itemAt(self, i):  # noqa: N802
        return self._items[i] if 0 <= i < len(self._items) else None

    def takeAt(self, i):  # noqa: N802
        return self._items.pop(i) if 0 <= i < len(self._items) else None

    def expandingDirections(self):  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self):  # noqa: N802
        return True

    def heightForWidth(self, width):  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect):  # noqa: N802
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self):  # noqa: N802
        return self.minimumSize()

    def minimumSize(self):  # noqa: N802
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _arrange(self, rect: QRect, move: bool) -> int:
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, row_h = area.x(), area.y(), 0
        for item in self._items:
            if item.isEmpty():   # hidden widgets take no room
                continue
            hint = item.sizeHint()
            if x + hint.width() > area.right() + 1 and row_h > 0:
                x, y = area.x(), y + row_h + self._spacing
                row_h = 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            row_h = max(row_h, hint.height())
        return y + row_h - rect.y() + m.bottom()


CHIP_STYLE = """
QToolButton[chip="true"] { border: 1px solid palette(mid); border-radius: 10px; padding: 2px 8px;
                           background: palette(base); }
QToolButton[chip="true"]:checked { background: palette(highlight); color: palette(highlighted-text);
                                   border-color: palette(highlight); }
QToolButton[chip="true"]:hover { border-color: palette(highlight); }
"""


def make_chip(text: str, checked: bool, tip: str, parent=None, strike_unchecked: bool = True) -> QToolButton:
    chip = QToolButton(parent)
    chip.setText(text.replace("&", "&&"))
    chip.setProperty("chip", True)
    chip.setProperty("tag", text)
    chip.setCheckable(True)
    chip.setChecked(checked)
    chip.setToolTip(tip)
    chip.setCursor(Qt.CursorShape.PointingHandCursor)
    chip.setFocusPolicy(Qt.FocusPolicy.TabFocus)
    if strike_unchecked and not checked:
        font = chip.font()
        font.setStrikeOut(True)
        chip.setFont(font)
    return chip


class ChipArea(QWidget):
    """A wrapping row of chips, rebuilt from a list of (tag, checked, tooltip)."""

    toggled = Signal(str, bool)   # tag, now checked

    def __init__(self, empty_text: str = "", parent=None, strike_unchecked: bool = True):
        super().__init__(parent)
        self.strike_unchecked = strike_unchecked   # "removed" chips are struck through; quick tags are not
        self.flow = FlowLayout(self)
        self._empty = QLabel(empty_text, self)
        self._empty.setStyleSheet(MUTED_STYLE)
        self.flow.addWidget(self._empty)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)

    def chips(self) -> list[QToolButton]:
        return [w for w in self.findChildren(QToolButton) if w.property("chip")]

    def chip(self, tag: str) -> QToolButton | None:
        return next((c for c in self.chips() if c.property("tag") == tag), None)

    def set_chips(self, chips: list[tuple[str, bool, str]]) -> None:
        current = [(c.property("tag"), c.isChecked(), c.toolTip()) for c in self.chips()]
        if current == chips:
            return
        while self.flow.count():
            w = self.flow.takeAt(0).widget()
            if w is not None and w is not self._empty:
                w.hide()
                w.setParent(None)   # gone now, not at the next event-loop turn
                w.deleteLater()
        self._empty.setVisible(not chips)
        self.flow.addWidget(self._empty)
        for tag, checked, tip in chips:
            chip = make_chip(tag, checked, tip, self, self.strike_unchecked)
            chip.clicked.connect(lambda on, t=tag: self.toggled.emit(t, on))
            chip.ensurePolished()  # the style sheet's padding must count in the size the flow uses
            self.flow.addWidget(chip)
        self.updateGeometry()


class PreviewLabel(QLabel):
    """Shows a pixmap scaled to fit, keeping its aspect ratio, whatever the label's size. An image shown
    larger than it is gets a visible mark ("Enlarged 6× — 64×64 px"), and from 2× it is enlarged with
    nearest-neighbour so that its real pixels show instead of a blur."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self._actual: tuple[int, int] | None = None   # the image's real size, when the pixmap is the real image
        self.enlarged = 1.0                           # how much the shown image is enlarged (1.0: not)
        self.mark_text = ""
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setMinimumSize(120, 120)
        self.setWordWrap(True)

    def set_image(self, pixmap: QPixmap | None, text: str = "", actual_size: tuple[int, int] | None = None) -> None:
        """*actual_size*: the image's real (w, h) when *pixmap* is the image itself, not a stand-in thumbnail;
        only then is an enlargement marked."""
        self._pixmap = pixmap if pixmap is not None and not pixmap.isNull() else None
        self._actual = actual_size
        if self._pixmap is None:
            self.clear()
            self.setText(text)
        self._rescale()

    def has_image(self) -> bool:
        return self._pixmap is not None

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is None:
            return
        dpr = self.devicePixelRatioF()
        fit = self._pixmap.size().scaled(self.size() * dpr, Qt.AspectRatioMode.KeepAspectRatio)
        factor = 1.0
        if self._actual and self._actual[0] > 0:
            factor = fit.width() / dpr / self._actual[0]
        mode = (Qt.TransformationMode.FastTransformation if factor >= 2 else
                Qt.TransformationMode.SmoothTransformation)
        scaled = self._pixmap.scaled(self.size() * dpr, Qt.AspectRatioMode.KeepAspectRatio, mode)
        self.enlarged = factor if factor > 1.01 else 1.0
        self.mark_text = ""
        if self.enlarged > 1.0:
            w, h = self._actual
            self.mark_text = f"Enlarged {factor:.1f}× — the image is only {w}×{h} px"
            self._paint_mark(scaled, self.mark_text, dpr)
        scaled.setDevicePixelRatio(dpr)
        self.setPixmap(scaled)

    def _paint_mark(self, pixmap: QPixmap, text: str, dpr: float) -> None:
        p = QPainter(pixmap)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = self.font()
        font.setPixelSize(max(10, int(12 * dpr)))
        font.setBold(True)
        p.setFont(font)
        fm = p.fontMetrics()
        pad = int(6 * dpr)
        box = fm.boundingRect(text).adjusted(-pad, -pad // 2, pad, pad // 2)
        box.moveTopLeft(QPoint(pad, pad))
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(180, 95, 0, 225))
        p.drawRoundedRect(box, 4 * dpr, 4 * dpr)
        p.setPen(QColor("white"))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        p.end()


def _section_label(text: str) -> QLabel:
    label = QLabel(text)
    font = label.font()
    font.setBold(True)
    label.setFont(font)
    return label


# --- caption panel ------------------------------------------------------------------------------------------

AUTOSAVE_MS = 500


class CaptionEdit(QPlainTextEdit):
    """Plain-text caption editor whose undo/redo keys go to the tab's undo stack (so undo also puts the
    file back), and whose Alt+Up / Alt+Down move to the previous / next image."""

    undo_requested = Signal()
    redo_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setUndoRedoEnabled(False)
        self.setTabChangesFocus(True)
        self.installEventFilter(self)

    def eventFilter(self, obj, event):  # noqa: N802
        if obj is self and event.type() in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            if event.matches(QKeySequence.StandardKey.Undo) or event.matches(QKeySequence.StandardKey.Redo):
                if event.type() == QEvent.Type.ShortcutOverride:
                    event.accept()   # keep the key: the press below handles it
                elif event.matches(QKeySequence.StandardKey.Undo):
                    self.undo_requested.emit()
                else:
                    self.redo_requested.emit()
                return True
        return super().eventFilter(obj, event)

    def caption_text(self) -> str:
        # toRawText keeps non-breaking spaces and U+2028 that toPlainText would change.
        return self.document().toRawText().replace("\u2029", "\n")


class CaptionPanel(QWidget):
    """The selected image: preview, facts, caption editor, its tags as chips, and quick tags.

    Edits are committed (as :class:`CaptionCommand` on *undo_stack*) 500 ms after the last keystroke,
    when another image is selected, or on :meth:`commit`.
    """

    quick_tags_changed = Signal(object)   # list of tags

    def __init__(self, store: CaptionStore, undo_stack, parent=None):
        super().__init__(parent)
        self.store = store
        self.undo_stack = undo_stack
        self.item = None               # patina.gui.image_grid.ImageItem
        self._base_text = ""           # the caption as last saved (or loaded)
        self._file_exists = False
        self._loading = False
        self._removed: dict[str, int] = {}   # tags removed with a chip -> their old position
        self._read_error = ""
        self._quick_tags: list[str] = []

        self.preview = PreviewLabel(self)
        self.info = QLabel(self)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason = QLabel(self)
        self.reason.setWordWrap(True)
        self.reason.setStyleSheet(f"color: {ERROR_COLOR};")
        self.reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason.hide()

        self.editor = CaptionEdit(self)
        self.editor.setPlaceholderText("Select an image to edit its caption")
        self.editor.setMinimumHeight(70)
        self.state = QLabel(self)
        self.state.setStyleSheet(MUTED_STYLE)
        self.tags = ChipArea("No tags", self)
        self.quick_edit = QLineEdit(self)
        self.quick_edit.setPlaceholderText("Your common tags, separated by commas")
        self.quick_edit.setToolTip("Quick tags: click one below to add it to the caption (click again to remove it)")
        self.quick = ChipArea("Add tags above to get one-click buttons", self, strike_unchecked=False)

        top = QWidget(self)
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(4)
        tl.addWidget(self.preview, 1)
        tl.addWidget(self.info)
        tl.addWidget(self.reason)

        bottom = QWidget(self)
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 4, 0, 0)
        bl.setSpacing(4)
        head = QHBoxLayout()
        head.addWidget(_section_label("Caption"))
        head.addStretch(1)
        head.addWidget(self.state)
        bl.addLayout(head)
        bl.addWidget(self.editor, 1)
        bl.addWidget(_section_label("Tags in this caption"))
        bl.addWidget(self._scroll(self.tags, 84))
        bl.addWidget(_section_label("Quick tags"))
        bl.addWidget(self.quick_edit)
        bl.addWidget(self._scroll(self.quick, 64))

        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(top)
        self.splitter.addWidget(bottom)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([430, 300])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)
        self.setStyleSheet(CHIP_STYLE)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(self.commit)
        self._chip_timer = QTimer(self)
        self._chip_timer.setSingleShot(True)
        self._chip_timer.setInterval(250)
        self._chip_timer.timeout.connect(self._refresh_chips)
        self.editor.textChanged.connect(self._on_text_changed)
        self.tags.toggled.connect(self._on_tag_chip)
        self.quick.toggled.connect(self._on_quick_chip)
        self.quick_edit.editingFinished.connect(self._on_quick_edited)
        self.show_item(None)

    @staticmethod
    def _scroll(widget: QWidget, max_height: int) -> QScrollArea:
        area = QScrollArea()
        area.setWidget(widget)
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        area.setMaximumHeight(max_height)
        area.setMinimumHeight(30)
        return area

    # --- showing ------------------------------------------------------------------------------------
    def show_item(self, item, caption: CaptionText | None = None, error: str = "") -> None:
        """Show *item* (an ImageItem, or None) with its *caption* as read from disk (None: no file)."""
        self.commit()
        self.item = item
        self._read_error = error
        self._removed.clear()
        self._loading = True
        try:
            if item is None:
                self.preview.set_image(None, "No image selected")
                self.info.setText("")
                self.reason.hide()
                self.editor.setPlainText("")
                self.editor.setReadOnly(True)
                self.editor.setPlaceholderText("Select an image to edit its caption")
                self._base_text, self._file_exists = "", False
                self._set_state("")
            else:
                self._base_text = caption.text if caption is not None else ""
                self._file_exists = caption is not None
                self.editor.setReadOnly(bool(error))
                self.editor.setPlainText(self._base_text)
                tokens = item.tokens or "(nothing)"
                self.editor.setPlaceholderText(f"No caption file. Training uses the folder's words: “{tokens}”. "
                                               "Type a caption to create one.")
                self.show_facts()
                if error:
                    self._set_state(error, error=True)
                elif caption is not None and caption.warning:
                    self._set_state(caption.warning.split(": ", 1)[-1], error=True)
                else:
                    self._set_state("Saved" if self._file_exists else "No caption file yet")
        finally:
            self._loading = False
        self._refresh_chips()

    def show_facts(self) -> None:
        """Refresh the file facts and the rejection reason of the current image."""
        item = self.item
        if item is None:
            return
        facts = [f"<b>{escape(item.name)}</b>", escape(item.folder)]
        if item.check is not None and item.check.ok:
            facts.insert(1, f"{item.check.width}×{item.check.height} {item.check.format}")
        self.info.setText(" · ".join(facts))
        self.info.setToolTip(str(item.path))
        if item.rejected:
            self.reason.setText(f"Not used for training: {item.reason}")
            self.reason.show()
        else:
            self.reason.hide()

    def set_preview(self, pixmap: QPixmap | None, text: str = "", actual_size: tuple[int, int] | None = None) -> None:
        self.preview.set_image(pixmap, text, actual_size)

    def reload_text(self, text: str | None) -> None:
        """The current image's caption changed on disk (undo, redo, a batch edit): show *text*."""
        if self.item is None or self.has_pending():
            return
        self._loading = True
        try:
            self._base_text = text or ""
            self._file_exists = text is not None
            cursor = self.editor.textCursor().position()
            self.editor.setPlainText(self._base_text)
            c = self.editor.textCursor()
            c.setPosition(min(cursor, len(self._base_text)))
            self.editor.setTextCursor(c)
            self._set_state("Saved" if self._file_exists else "No caption file")
        finally:
            self._loading = False
        self._refresh_chips()

    def set_read_only(self, read_only: bool) -> None:
        self.editor.setReadOnly(read_only or self.item is None or bool(self._read_error))
        for area in (self.tags, self.quick):
            area.setEnabled(not read_only)

    # --- editing ------------------------------------------------------------------------------------
    def has_pending(self) -> bool:
        return self.item is not None and self.editor.caption_text() != self._base_text

    def commit(self) -> None:
        """Save the pending edit now (as one undo step)."""
        self._timer.stop()
        item = self.item
        if item is None:
            return
        text = self.editor.caption_text()
        if text == self._base_text:
            return
        if not self._file_exists and not text.strip():
            return   # never create an empty caption file
        change = CaptionChange(item.path, item.caption_file, text=text)
        self._base_text = text
        self._file_exists = True
        item.caption, item.has_caption = text, True
        self.undo_stack.push(CaptionCommand(self.store, [change], f"Edit caption of {item.name}", tag="edit"))
        self._set_state("Saved")

    def _on_text_changed(self) -> None:
        if self._loading or self.item is None:
            return
        self._set_state("Editing…")
        self._timer.start()
        self._chip_timer.start()

    def _set_text_and_commit(self, text: str) -> None:
        cursor = self.editor.textCursor()
        cursor.select(cursor.SelectionType.Document)
        self._loading = True
        try:
            cursor.insertText(text)
        finally:
            self._loading = False
        self.commit()
        self._refresh_chips()

    def _on_tag_chip(self, tag: str, checked: bool) -> None:
        if self.item is None:
            return
        text = self.editor.caption_text()
        if checked:
            self._set_text_and_commit(insert_tag(text, tag, self._removed.pop(tag, None)))
        else:
            tags = unique_tags(text)
            if tag in tags:
                self._removed[tag] = tags.index(tag)
            self._set_text_and_commit(remove_tag(text, tag))

    def _on_quick_chip(self, tag: str, checked: bool) -> None:
        if self.item is None:
            return
        text = self.editor.caption_text()
        present = tag in unique_tags(text)
        if checked and not present:
            self._set_text_and_commit(insert_tag(text, tag))
        elif not checked and present:
            self._set_text_and_commit(remove_tag(text, tag))
        else:
            self._refresh_chips()

    def _refresh_chips(self) -> None:
        self._chip_timer.stop()
        text = self.editor.caption_text() if self.item is not None else ""
        present = unique_tags(text)
        chips = [(t, True, "Click to remove this tag from the caption") for t in present]
        for tag, pos in sorted(self._removed.items(), key=lambda kv: kv[1]):
            if tag not in present:
                chips.insert(min(pos, len(chips)), (tag, False, "Removed: click to put it back"))
        self.tags.set_chips(chips)
        self.quick.set_chips([(t, t in present, "In the caption: click to remove" if t in present
                               else "Click to add to the caption") for t in self._quick_tags])

    def _set_state(self, text: str, error: bool = False) -> None:
        self.state.setText(text)
        self.state.setStyleSheet(f"color: {ERROR_COLOR};" if error else MUTED_STYLE)
        self.state.setToolTip(text if error else "Captions save automatically")

    def show_write_error(self, text: str) -> None:
        self._set_state("Not saved — see below", error=True)
        self.state.setToolTip(text)

    # --- quick tags -----------------------------------------------------------------------------------
    def quick_tags(self) -> list[str]:
        return list(self._quick_tags)

    def set_quick_tags(self, tags: list[str]) -> None:
        self._quick_tags = unique_tags(", ".join(tags))
        self.quick_edit.setText(", ".join(self._quick_tags))
        self.quick_edit.setCursorPosition(0)
        self._refresh_chips()

    def add_quick_tags(self, tags: list[str]) -> None:
        self.set_quick_tags(self._quick_tags + list(tags))
        self.quick_tags_changed.emit(self.quick_tags())

    def _on_quick_edited(self) -> None:
        tags = unique_tags(self.quick_edit.text())
        if tags != self._quick_tags:
            self.set_quick_tags(tags)
            self.quick_tags_changed.emit(self.quick_tags())



# --- batch panel ------------------------------------------------------------------------------------------------

SCOPE_FOLDER, SCOPE_ALL = "folder", "all"


class BatchPanel(QWidget):
    """Find/replace and prefix/postfix over every caption file of one concept folder or all of them."""

    replace_requested = Signal(str, str, bool, str)      # find, replace, match case, scope
    prefix_requested = Signal(str, bool, str)            # text, as tag, scope
    postfix_requested = Signal(str, bool, str)
    create_requested = Signal()   # create the caption files the last edit left alone

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scope = QComboBox(self)
        self.scope.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.scope.setMinimumContentsLength(16)
        self.find = QLineEdit(self)
        self.find.setPlaceholderText("Text to find")
        self.replace = QLineEdit(self)
        self.replace.setPlaceholderText("Replace with (empty = delete)")
        self.match_case = QCheckBox("Match case", self)
        self.replace_button = QPushButton("Replace in all captions", self)
        self.prefix = QLineEdit(self)
        self.prefix.setPlaceholderText("e.g. sks dog")
        self.prefix_button = QPushButton("Add to start", self)
        self.postfix = QLineEdit(self)
        self.postfix.setPlaceholderText("e.g. high quality")
        self.postfix_button = QPushButton("Add to end", self)
        self.as_tag = QCheckBox("As a tag: add a comma, skip captions that have it", self)
        self.as_tag.setToolTip("On: “sks dog” + “sitting” gives “sks dog, sitting”, and captions whose first (or "
                               "last) tag is already “sks dog” are left alone.\nOff: the text is added exactly "
                               "as typed.")
        self.as_tag.setChecked(True)
        self.result = QLabel(self)
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.create_button = QPushButton(self)
        self.create_button.setToolTip("Write a caption file for each of them: the folder's name (e.g. “sks dog”, "
                                      "what training uses for them now) with the same change applied")
        self.create_button.hide()
        self.create_button.clicked.connect(self.create_requested)
        note = QLabel("Only existing caption files are changed; for images without one you can create it from "
                      "the folder's name afterwards. Every change can be undone (Ctrl+Z).", self)
        note.setWordWrap(True)
        note.setStyleSheet(MUTED_STYLE)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(8)
        scope_row = QFormLayout()
        scope_row.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        scope_row.addRow("Apply to:", self.scope)
        layout.addLayout(scope_row)

        grid = QGridLayout()
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(6)
        grid.setColumnStretch(1, 1)
        grid.addWidget(_section_label("Find and replace"), 0, 0, 1, 3)
        grid.addWidget(QLabel("Find:"), 1, 0)
        grid.addWidget(self.find, 1, 1, 1, 2)
        grid.addWidget(QLabel("Replace:"), 2, 0)
        grid.addWidget(self.replace, 2, 1, 1, 2)
        grid.addWidget(self.match_case, 3, 1)
        grid.addWidget(self.replace_button, 3, 2)
        grid.setRowMinimumHeight(4, 10)
        grid.addWidget(_section_label("Add to every caption"), 5, 0, 1, 3)
        grid.addWidget(QLabel("Prefix:"), 6, 0)
        grid.addWidget(self.prefix, 6, 1)
        grid.addWidget(self.prefix_button, 6, 2)
        grid.addWidget(QLabel("Postfix:"), 7, 0)
        grid.addWidget(self.postfix, 7, 1)
        grid.addWidget(self.postfix_button, 7, 2)
        grid.addWidget(self.as_tag, 8, 1, 1, 2)
        layout.addLayout(grid)
        layout.addWidget(self.result)
        layout.addWidget(self.create_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(note)
        layout.addStretch(1)

        self.replace_button.clicked.connect(self._replace)
        self.find.returnPressed.connect(self._replace)
        self.replace.returnPressed.connect(self._replace)
        self.prefix_button.clicked.connect(
            lambda: self.prefix_requested.emit(self.prefix.text(), self.as_tag.isChecked(), self.scope_value()))
        self.postfix_button.clicked.connect(
            lambda: self.postfix_requested.emit(self.postfix.text(), self.as_tag.isChecked(), self.scope_value()))
        self._scope_choice = SCOPE_FOLDER   # what the user picked last; the folder until they choose
        self.scope.activated.connect(lambda _i: setattr(self, "_scope_choice", self.scope_value()))
        self.set_scopes(None, 0, 0)

    def _replace(self) -> None:
        if not self.find.text():
            self.show_result("Type the text to find first.", error=True)
            return
        self.replace_requested.emit(self.find.text(), self.replace.text(), self.match_case.isChecked(),
                                    self.scope_value())

    def scope_value(self) -> str:
        return self.scope.currentData() or SCOPE_ALL

    def set_scopes(self, folder: str | None, folder_captions: int, all_captions: int) -> None:
        """*folder*: the concept folder the grid shows (None when it shows all)."""
        keep = self._scope_choice
        self.scope.blockSignals(True)
        self.scope.clear()
        if folder:
            self.scope.addItem(f"Folder “{folder}” ({folder_captions} caption files)", SCOPE_FOLDER)
        self.scope.addItem(f"All folders ({all_captions} caption files)", SCOPE_ALL)
        idx = self.scope.findData(keep)
        self.scope.setCurrentIndex(idx if idx >= 0 else 0)
        self.scope.blockSignals(False)

    def offer_create(self, n: int) -> None:
        """Offer to create caption files for *n* images an edit left alone (0: no offer)."""
        self.create_button.setText(f"Create captions for these {n:,} images")
        self.create_button.setVisible(n > 0)

    def show_result(self, text: str, error: bool = False) -> None:
        self.result.setText(text)
        self.result.setStyleSheet(f"color: {ERROR_COLOR};" if error else "")

    def set_busy(self, busy: bool) -> None:
        for w in (self.replace_button, self.prefix_button, self.postfix_button):
            w.setEnabled(not busy)


# --- tag frequency -----------------------------------------------------------------------------------------------

class TagFrequencyPanel(QWidget):
    """How many of the shown captions use each tag. Double-click a tag to filter the grid by it."""

    tag_activated = Signal(str)
    add_to_quick = Signal(object)   # list of tags

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = QLabel(self)
        self.summary.setWordWrap(True)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Find a tag")
        self.search.setClearButtonEnabled(True)
        self.tree = QTreeWidget(self)
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Tag", "Captions"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSortingEnabled(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.ExtendedSelection)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, self.tree.header().ResizeMode.Stretch)
        self.tree.header().setSectionResizeMode(1, self.tree.header().ResizeMode.ResizeToContents)
        self.filter_button = QPushButton("Show images with this tag", self)
        self.quick_button = QPushButton("Add to quick tags", self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.search)
        layout.addWidget(self.tree, 1)
        row = QHBoxLayout()
        row.addWidget(self.filter_button)
        row.addWidget(self.quick_button)
        row.addStretch(1)
        layout.addLayout(row)
        self.tree.itemDoubleClicked.connect(lambda it, _c: self.tag_activated.emit(it.text(0)))
        self.filter_button.clicked.connect(self._filter_selected)
        self.quick_button.clicked.connect(lambda: self.add_to_quick.emit(self.selected_tags()))
        self.search.textChanged.connect(self._apply_search)
        self.set_counts(Counter(), 0)

    def selected_tags(self) -> list[str]:
        return [it.text(0) for it in self.tree.selectedItems()]

    def _filter_selected(self) -> None:
        tags = self.selected_tags()
        if tags:
            self.tag_activated.emit(", ".join(tags))

    def set_counts(self, counts: Counter, captions: int) -> None:
        self.counts = counts
        self.tree.setSortingEnabled(False)
        self.tree.clear()
        items = []
        for tag, n in counts.items():
            it = _CountItem([tag, str(n)])
            it.setData(1, Qt.ItemDataRole.UserRole, n)
            it.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            items.append(it)
        self.tree.addTopLevelItems(items)
        self.tree.setSortingEnabled(True)
        self.tree.sortItems(1, Qt.SortOrder.DescendingOrder)
        self.summary.setText(f"{len(counts)} different tags in {captions} shown captions"
                             if captions else "No captions shown")
        self._apply_search(self.search.text())

    def _apply_search(self, text: str) -> None:
        needle = text.strip().casefold()
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            it.setHidden(bool(needle) and needle not in it.text(0).casefold())


class _CountItem(QTreeWidgetItem):
    def __lt__(self, other):
        col = self.treeWidget().sortColumn() if self.treeWidget() else 0
        if col == 1:
            a, b = self.data(1, Qt.ItemDataRole.UserRole), other.data(1, Qt.ItemDataRole.UserRole)
            if a != b:
                return a < b
            return self.text(0).casefold() > other.text(0).casefold()
        return self.text(0).casefold() < other.text(0).casefold()
