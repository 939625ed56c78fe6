"""Caption editing for the Dataset tab.

* :class:`CaptionStore` applies caption change sets (:mod:`patina.core.dataset.caption_edits`) as
  background tasks (:mod:`patina.gui.tasks`), one at a time, in the order asked.
* :class:`CaptionCommand` makes every change set undoable on the tab's ``QUndoStack``: undo puts back the
  exact bytes each file held before.
* :class:`CaptionPanel`: the selected image's preview, caption editor with debounced autosave, tag chips
  and quick tags. The batch tools are in :mod:`patina.gui.caption_batch`, the small widgets in
  :mod:`patina.gui.caption_widgets`.

Images are never opened for writing here.
"""

from __future__ import annotations

from html import escape
import threading

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QPixmap, QUndoCommand
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QScrollArea, QSplitter,
                               QVBoxLayout, QWidget)

from patina.core.dataset.caption_edits import (CaptionChange, WriteResult, apply_changes, insert_tag, remove_tag,
                                              unique_tags)
from patina.core.dataset.captions import CaptionText
from patina.gui.caption_widgets import (CHIP_STYLE, ERROR_COLOR, MUTED_STYLE, ChipArea, PreviewLabel,
                                        section_label)
from patina.gui.tasks import Lane, Task, run_task


class CaptionStore(QObject):
    """Runs caption writes one at a time, in order, on a one-thread :class:`~patina.gui.tasks.Lane`.

    ``finished(tag, result)`` comes back in the GUI thread for every job; ``progress(done, total)`` for
    big ones. :meth:`wait` blocks until everything queued is on disk (used before closing).
    """

    finished = Signal(object, object)   # tag, WriteResult
    progress = Signal(int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._lane = Lane(1)  # one thread = jobs run in the order they were queued
        self._lock = threading.Lock()
        self._jobs = 0

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._jobs > 0

    def submit(self, changes: list[CaptionChange], forward: bool, tag=None) -> None:
        with self._lock:
            self._jobs += 1
        run_task(self._apply, changes, forward, pass_task=True, lane=self._lane,
                 on_progress=self.progress.emit, on_done=lambda result: self.finished.emit(tag, result))

    def _apply(self, task: Task, changes: list[CaptionChange], forward: bool) -> WriteResult:
        try:
            return apply_changes(changes, forward, task.progress if len(changes) > 50 else None)
        except Exception as exc:  # noqa: BLE001 - a failed write is a result the tab shows, never lost
            return WriteResult(errors=[f"Saving captions failed: {type(exc).__name__}: {exc}"])
        finally:
            with self._lock:
                self._jobs -= 1

    def wait(self, timeout_ms: int = 60000) -> bool:
        """Block until every queued write is done (their results are delivered later)."""
        return self._lane.wait(timeout_ms)


class CaptionCommand(QUndoCommand):
    """An undoable set of caption writes. With *applied* the first redo (QUndoStack.push) does nothing,
    because the writes already happened. *first_tag* tags the first write (default: *tag*), so that the
    result of a write whose text the editor already shows can be told from an undo or redo."""

    def __init__(self, store: CaptionStore, changes: list[CaptionChange], text: str, *, applied: bool = False,
                 tag=None, first_tag=None):
        super().__init__(text)
        self.store = store
        self.changes = changes
        self.tag = tag
        self._first_tag = first_tag
        self._skip_redo = applied

    def redo(self):
        if self._skip_redo:
            self._skip_redo = False
            return
        tag, self._first_tag = (self._first_tag or self.tag), None
        self.store.submit(self.changes, True, tag)

    def undo(self):
        self.store.submit(self.changes, False, self.tag)


# --- caption panel ------------------------------------------------------------------------------------------

AUTOSAVE_MS = 500
AUTOSAVE_TAG = "autosave"   # the store's result for an edit as typed: the editor shows that text already


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
        head.addWidget(section_label("Caption"))
        head.addStretch(1)
        head.addWidget(self.state)
        bl.addLayout(head)
        bl.addWidget(self.editor, 1)
        bl.addWidget(section_label("Tags in this caption"))
        bl.addWidget(self._scroll(self.tags, 84))
        bl.addWidget(section_label("Quick tags"))
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
        self.undo_stack.push(CaptionCommand(self.store, [change], f"Edit caption of {item.name}", tag="edit",
                                            first_tag=AUTOSAVE_TAG))
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
