"""The Dataset tab: browse the training images by concept folder, see which ones training will reject,
and edit captions (one at a time, or find/replace and prefix/postfix across a folder).

Public API used by the main window::

    tab = DatasetTab(parent)
    tab.folders_prepared.connect(...)   # dict: train_data_dir, reg_data_dir, output_dir, logging_dir
    tab.set_dataset(train_data_dir, caption_extension)
    tab.flush()                          # write pending caption edits now (before closing)

Listing a folder reads only names; caption texts, the image check (a full decode of every image with
``patina.core.dataset.images.probe_image``) and thumbnails come from background threads. Images are never
written; captions only by an explicit edit, atomically, undoably.
"""

from __future__ import annotations

from html import escape
import json
import re
from collections import Counter
from pathlib import Path

from PySide6.QtCore import QEvent, QModelIndex, Signal
from PySide6.QtGui import QKeySequence, QPixmap, QUndoStack
from PySide6.QtWidgets import QApplication, QWidget

from patina.core.atomic import atomic_write_text
from patina.core.dataset.captions import normalize_extension, read_caption, tag_frequency
from patina.core.dataset.folders import scan_dataset
from patina.core.dataset.listing import ImageItem, list_dataset
from patina.core.errors import PatinaError
from patina.core.paths import user_config_dir
from patina.gui.caption_editor import AUTOSAVE_TAG, CaptionStore
from patina.gui.dataset_batch import BatchCaptionEdits
from patina.gui.dataset_captioning import AutoCaptioning
from patina.gui.dataset_checker import DatasetChecker
from patina.gui.dataset_layout import SOURCE_REG, SOURCE_TRAIN, DatasetTabLayout
from patina.gui.image_grid import ImageFilterProxy, ImageListModel, ItemRole
from patina.gui.thumbnails import THUMB_PX, ThumbnailLoader
from patina.gui.widgets import ERROR_COLOR
from patina.gui.wizard_dialog import FolderWizardDialog

PREVIEW_PX = 1024
STATE_FILE = "dataset_tab.json"


# --- the tab -------------------------------------------------------------------------------------------------



class DatasetTab(DatasetTabLayout, BatchCaptionEdits, AutoCaptioning, QWidget):
    """Browse a kohya-style image folder and edit its captions.

    Why this class is ~500 lines: it is the one place that ties the grid, the caption panel, the
    background check, the thumbnail loaders and the caption store together (folder switches, selection,
    undo, filter and counters all touch several of them). Its widgets (:mod:`~patina.gui.dataset_layout`),
    batch edits (:mod:`~patina.gui.dataset_batch`) and background check (:mod:`~patina.gui.dataset_checker`)
    live in their own modules.
    """

    folders_prepared = Signal(dict)
    demo_requested = Signal()          # "Try the demo" on the empty page; the window prepares and starts it

    def __init__(self, parent=None):
        super().__init__(parent)
        self._root = ""                # the folder the grid shows: the training or the regularisation folder
        self._train_root = ""
        self._reg_root = ""
        self._ext = ".txt"
        self._loaded_key: tuple[str, str] | None = None
        self._folders = []
        self._checking: tuple[int, int] | None = None
        self._batch_running = False
        self.last_batch_result: tuple[int, int, int, int] | None = None  # changed, count, already, no file
        self._create_offer: list | None = None   # [(ImageItem, transform)] a batch left alone: no caption file
        self._shut = False
        self._state = self._load_state()
        self.wizard: FolderWizardDialog | None = None
        self.caption_dialog = None      # the "Caption images" dialog, once opened
        self.batch_size_source = None   # () -> the Training tab's batch size, for the wizard's step hint

        # models, workers
        self.model = ImageListModel(self)
        self.proxy = ImageFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.thumbs = ThumbnailLoader(THUMB_PX)
        self.previews = ThumbnailLoader(PREVIEW_PX, threads=1, disk_cache=False)
        self.checker = DatasetChecker()
        self.store = CaptionStore()
        self.undo_stack = QUndoStack(self)

        self._build_ui()
        self._wire()
        self.caption_panel.set_quick_tags(list(self._state.get("quick_tags", [])))
        self._show_empty("No image folder set", "")
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def _wire(self) -> None:
        self.model.request_thumbnail = self.thumbs.request
        self.thumbs.loaded.connect(self._on_thumbnail)
        self.thumbs.failed.connect(self.model.set_thumbnail_failed)
        self.previews.loaded.connect(self._on_preview)
        self.previews.failed.connect(self._on_preview_failed)
        self.checker.captions.connect(self._on_captions)
        self.checker.checks.connect(self._on_checks)
        self.checker.progress.connect(self._on_check_progress)
        self.store.finished.connect(self._on_written)
        self.store.progress.connect(self._on_write_progress)

        self.grid.selectionModel().currentChanged.connect(self._on_current)
        self.grid.activated.connect(self._edit_caption)   # Enter or double-click: type the caption
        self.folder_combo.currentIndexChanged.connect(self._on_folder_changed)
        self.source_combo.currentIndexChanged.connect(lambda _i: self.show_source(self.source_combo.currentData()))
        self.filter_edit.textChanged.connect(self._filter_timer.start)
        self._filter_timer.timeout.connect(self._apply_filter)
        self._counter_timer.timeout.connect(self._update_counter)
        self._tags_timer.timeout.connect(self._update_tags)
        self.side.currentChanged.connect(self._tags_timer.start)

        self.undo_action.triggered.connect(self.undo)
        self.redo_action.triggered.connect(self.redo)
        self.prev_action.triggered.connect(self.select_previous)
        self.next_action.triggered.connect(self.select_next)
        self.undo_stack.indexChanged.connect(self._sync_undo_actions)
        self.undo_stack.cleanChanged.connect(self._sync_undo_actions)
        self.caption_panel.editor.undo_requested.connect(self.undo)
        self.caption_panel.editor.redo_requested.connect(self.redo)
        self.caption_panel.quick_tags_changed.connect(self._save_quick_tags)
        self.reload_button.clicked.connect(self.reload)
        self.wizard_button.clicked.connect(self.open_wizard)
        self.caption_button.clicked.connect(self.open_caption_dialog)
        self.empty_wizard.clicked.connect(self.open_wizard)
        self.empty_demo.clicked.connect(self.demo_requested)

        self.batch_panel.replace_requested.connect(self.replace_in_captions)
        self.batch_panel.prefix_requested.connect(self._on_prefix)
        self.batch_panel.postfix_requested.connect(self._on_postfix)
        self.batch_panel.create_requested.connect(self.create_missing_captions)
        self.tag_panel.tag_activated.connect(self.filter_edit.setText)
        self.tag_panel.add_to_quick.connect(self.caption_panel.add_quick_tags)

    # --- public API ------------------------------------------------------------------------------------
    def set_dataset(self, train_data_dir: str, caption_extension: str) -> None:
        """Show the concept folders of *train_data_dir*; captions use *caption_extension*.

        Calling it again with the same values does nothing (use :meth:`reload` to re-read the folder).
        """
        self._train_root = str(train_data_dir or "").strip()
        ext = normalize_extension(caption_extension)
        root = self._reg_root if self.source() == SOURCE_REG and self._reg_root else self._train_root
        if (root, ext) == self._loaded_key:
            return
        folder_changed = root != self._root
        self.flush()
        self._root, self._ext = root, ext
        if folder_changed:
            self.undo_stack.clear()
        self._load()

    def set_reg_folder(self, reg_data_dir: str) -> None:
        """The regularisation folder (empty: none). When set, a switch above the grid browses it."""
        reg = str(reg_data_dir or "").strip()
        if reg == self._reg_root:
            return
        self._reg_root = reg
        self.source_combo.setVisible(bool(reg))
        if self.source() == SOURCE_REG:
            self.show_source(SOURCE_REG if reg else SOURCE_TRAIN)

    def source(self) -> str:
        """Which images the grid shows: SOURCE_TRAIN or SOURCE_REG."""
        return self.source_combo.currentData() or SOURCE_TRAIN

    def show_source(self, which: str) -> None:
        """Browse the training images or the regularisation images (the same grid, captions and tools)."""
        which = SOURCE_REG if which == SOURCE_REG and self._reg_root else SOURCE_TRAIN
        if self.source_combo.currentData() != which:
            self.source_combo.blockSignals(True)
            self.source_combo.setCurrentIndex(self.source_combo.findData(which))
            self.source_combo.blockSignals(False)
        root = self._reg_root if which == SOURCE_REG else self._train_root
        if (root, self._ext) == self._loaded_key:
            return
        self.flush()
        self._root = root
        self.undo_stack.clear()
        self._load()

    def flush(self) -> None:
        """Write the pending caption edit now and wait until every queued caption write is on disk."""
        self.caption_panel.commit()
        self.store.wait()

    def reload(self) -> None:
        """Read the current folder from disk again."""
        self.flush()
        self._load()

    def current_item(self) -> ImageItem | None:
        return self.caption_panel.item

    def select_path(self, path) -> bool:
        """Select the image at *path* in the grid (False when it is not shown)."""
        row = self.model.row_of(path)
        if row < 0:
            return False
        idx = self.proxy.mapFromSource(self.model.index(row))
        if not idx.isValid():
            return False
        self.grid.setCurrentIndex(idx)
        self.grid.scrollTo(idx)
        return True

    def select_previous(self) -> None:
        self.move_selection(-1)

    def select_next(self) -> None:
        self.move_selection(1)

    def move_selection(self, step: int) -> None:
        rows = self.proxy.rowCount()
        if not rows:
            return
        cur = self.grid.currentIndex()
        row = min(rows - 1, max(0, (cur.row() if cur.isValid() else -1) + step))
        self.grid.setCurrentIndex(self.proxy.index(row, 0))

    def undo(self) -> None:
        if self._batch_running:
            return
        self.caption_panel.commit()
        if self.undo_stack.canUndo():
            self._set_status(f"Undone: {self.undo_stack.undoText()}")
            self.undo_stack.undo()

    def redo(self) -> None:
        if self._batch_running:
            return
        self.caption_panel.commit()
        if self.undo_stack.canRedo():
            self._set_status(f"Redone: {self.undo_stack.redoText()}")
            self.undo_stack.redo()

    def open_wizard(self) -> FolderWizardDialog:
        """Open the folder wizard (non-blocking); returns the dialog."""
        if self.wizard is not None and self.wizard.isVisible():
            self.wizard.raise_()
            self.wizard.activateWindow()
            return self.wizard
        values = dict(self._state.get("wizard", {}))
        if self.batch_size_source is not None:
            try:
                values["train_batch_size"] = int(self.batch_size_source())
            except (TypeError, ValueError):
                pass
        self.wizard = FolderWizardDialog(self, values=values)
        self.wizard.prepared.connect(self._on_prepared)
        self.wizard.open()
        return self.wizard

    def shutdown(self) -> None:
        """Save pending edits and stop the background threads (closing)."""
        if self._shut:
            return
        self._shut = True
        try:
            self.flush()
        finally:
            self.checker.shutdown()
            self.thumbs.shutdown()
            self.previews.shutdown()

    # Ctrl+S inside the tab writes the captions now. It is taken before shortcuts are looked up, so the
    # main window's own Ctrl+S (save the config) neither fires here nor makes the key ambiguous.
    def event(self, event):
        if event.type() == QEvent.Type.ShortcutOverride and event.matches(QKeySequence.StandardKey.Save):
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event):  # noqa: N802
        if event.matches(QKeySequence.StandardKey.Save):
            self._save_now()
            event.accept()
            return
        super().keyPressEvent(event)

    def closeEvent(self, event):  # noqa: N802
        self.shutdown()
        super().closeEvent(event)

    # --- loading ----------------------------------------------------------------------------------------
    def _load(self) -> None:
        self._loaded_key = (self._root, self._ext)
        self.checker.cancel()
        self.thumbs.cancel_all()
        self.previews.cancel_all()
        self._checking = None
        self.banner.hide()
        self.caption_panel.show_item(None)
        self.model.set_items([])
        root = self._root
        if not root:
            self._show_empty("No image folder set", "")
            return
        path = Path(root).expanduser()
        if not path.is_dir():
            problem = (f"The image folder is a file, not a folder: {path}" if path.exists()
                       else f"The image folder does not exist: {path}")
            self._show_empty("This image folder cannot be used", problem)
            return
        try:
            folders, items = list_dataset(path, self._ext)
        except OSError as exc:
            self._show_empty("This image folder cannot be read", f"{path}: {exc.strerror or exc}")
            return
        if not folders:
            self._show_empty("No N_name subfolders here", self._layout_problem(path))
            return
        self._folders = folders
        self.model.device_pixel_ratio = self.devicePixelRatioF()
        self.model.set_items(items)
        self._fill_folder_combo()
        self.stack.setCurrentWidget(self.splitter)
        self._show_browse_controls(True)
        empty = [f.name for f in folders if not f.count]
        if empty:
            self.banner.show_message(
                "warning", "No images (PNG, JPEG, WebP or BMP) in " + ", ".join(f"<code>{escape(n)}</code>" for n in empty)
                + ". Subfolders inside a concept folder are not read.")
        self._set_status(f"{path}")
        if items:
            self._checking = (self.checker.start(items), 0)
            self.grid.setCurrentIndex(self.proxy.index(0, 0))
        self._schedule_updates()

    @staticmethod
    def _layout_problem(path: Path) -> str:
        """Why *path* has no concept folders, worded by the dataset check (cheap: nothing to decode)."""
        try:
            scan_dataset(path)
        except PatinaError as exc:
            return str(exc)
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        return ""

    def _show_empty(self, title: str, problem: str) -> None:
        self._folders = []
        self.folder_combo.blockSignals(True)
        self.folder_combo.clear()
        self.folder_combo.addItem("All folders", None)
        self.folder_combo.blockSignals(False)
        self.proxy.set_folder(None)
        self.empty_title.setText(title)
        self.empty_problem.setText(_code(escape(problem)).replace("\n", "<br>"))
        self.empty_problem.setVisible(bool(problem))
        self.stack.setCurrentWidget(self.empty)
        self._show_browse_controls(False)
        self._schedule_updates()

    def _show_browse_controls(self, visible: bool) -> None:
        for w in (self.folder_label, self.folder_combo, self.filter_edit, self.counter, self.undo_button,
                  self.redo_button, self.caption_button):
            w.setVisible(visible)
        self.reload_button.setVisible(bool(self._root))

    def _fill_folder_combo(self) -> None:
        keep = self.folder_combo.currentData()
        self.folder_combo.blockSignals(True)
        self.folder_combo.clear()
        total = sum(f.count for f in self._folders)
        self.folder_combo.addItem(f"All folders ({total:,})", None)
        for f in self._folders:
            self.folder_combo.addItem(f"{f.name} ({f.count:,})", f.name)
        idx = self.folder_combo.findData(keep) if keep is not None else 0
        self.folder_combo.setCurrentIndex(max(0, idx))
        self.folder_combo.blockSignals(False)
        self.proxy.set_folder(self.folder_combo.currentData())

    # --- background results ------------------------------------------------------------------------------
    def _on_captions(self, gen: int, captions: dict) -> None:
        if gen != self.checker.generation:
            return
        self.model.set_captions(captions, only_unread=True)
        if self.proxy.has_text_filter:
            self._filter_timer.start()
        self._schedule_updates()

    def _on_checks(self, gen: int, checks: list) -> None:
        if gen != self.checker.generation:
            return
        self.model.set_checks(checks)
        item = self.caption_panel.item
        if item is not None and any(c.path == item.path for c in checks):
            self.caption_panel.show_facts()
        self._counter_timer.start()

    def _on_check_progress(self, gen: int, done: int, total: int) -> None:
        if gen != self.checker.generation:
            return
        self._checking = (gen, done) if done < total else None
        self._counter_timer.start()

    def _on_thumbnail(self, path: str, image) -> None:
        self.model.set_thumbnail(path, image)
        item = self.caption_panel.item
        if item is not None and str(item.path) == path and not self.caption_panel.preview.has_image():
            self.caption_panel.set_preview(QPixmap.fromImage(image))

    def _on_preview(self, path: str, image) -> None:
        item = self.caption_panel.item
        if item is not None and str(item.path) == path:
            # The preview loader never enlarges; the check knows the real size of a large image.
            real = (item.check.width, item.check.height) if item.check is not None and item.check.width else None
            self.caption_panel.set_preview(QPixmap.fromImage(image), "", real or (image.width(), image.height()))

    def _on_preview_failed(self, path: str, reason: str) -> None:
        item = self.caption_panel.item
        if item is not None and str(item.path) == path:
            self.caption_panel.set_preview(None, f"Cannot show this image: {item.reason or reason}")

    # --- selection ------------------------------------------------------------------------------------------
    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            return
        item: ImageItem = current.data(ItemRole)
        if item is None or item is self.caption_panel.item:
            return
        self.caption_panel.commit()
        if self.store.busy and not self._batch_running:
            self.store.wait()   # a write of this very caption may still be queued (milliseconds)
        caption, error = None, ""
        if item.caption_file.exists() or item.has_caption:
            try:
                caption = read_caption(item.caption_file)
            except FileNotFoundError:
                caption = None
            except OSError as exc:
                error = f"Cannot read {item.caption_file.name}: {exc.strerror or exc}"
        if caption is not None and item.caption is None:
            self.model.set_captions({str(item.path): (caption.text, caption.warning)})
        self.caption_panel.show_item(item, caption, error)
        if self._batch_running:
            self.caption_panel.set_read_only(True)
        pm = self.model.pixmap(item)
        self.caption_panel.set_preview(pm, "Loading…")
        self.previews.cancel_all()
        self.previews.request(str(item.path))
        self._counter_timer.start()   # the batch scope names the selected image's folder

    # --- edits ------------------------------------------------------------------------------------------------
    def _on_written(self, tag, result) -> None:
        self.model.set_captions(result.captions)
        item = self.caption_panel.item
        # An autosave's result is the text the editor had when it was saved; the editor may hold a newer
        # edit by now, which showing the older text would undo (and the next edit would build on it).
        if item is not None and str(item.path) in result.captions and tag != AUTOSAVE_TAG:
            self.caption_panel.reload_text(result.captions[str(item.path)][0])
        if result.errors:
            more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
            self._set_status(result.errors[0] + more, error=True)
            if tag in ("edit", AUTOSAVE_TAG):
                self.caption_panel.show_write_error(result.errors[0])
        if isinstance(tag, tuple) and tag[0] == "batch":
            self._finish_batch(tag, result)
        self._schedule_updates()

    def _edit_caption(self, _index=None) -> None:
        self.side.setCurrentWidget(self.caption_panel)
        editor = self.caption_panel.editor
        editor.setFocus()
        editor.moveCursor(editor.textCursor().MoveOperation.End)

    def _on_write_progress(self, done: int, total: int) -> None:
        self._set_status(f"Writing captions {done:,} / {total:,}…")

    def _save_now(self) -> None:
        self.flush()
        self._set_status("All caption edits are saved.")

    def _sync_undo_actions(self, *_args) -> None:
        s = self.undo_stack
        self.undo_action.setEnabled(s.canUndo() and not self._batch_running)
        self.redo_action.setEnabled(s.canRedo() and not self._batch_running)
        self.undo_action.setToolTip(f"Undo {s.undoText()} (Ctrl+Z)" if s.canUndo() else "Nothing to undo")
        self.redo_action.setToolTip(f"Redo {s.redoText()}" if s.canRedo() else "Nothing to redo")

    # --- filter, counter, tags -------------------------------------------------------------------------------
    def _on_folder_changed(self, _index: int) -> None:
        self.proxy.set_folder(self.folder_combo.currentData())
        self._after_filter()

    def _apply_filter(self) -> None:
        self.proxy.set_text(self.filter_edit.text())
        self._after_filter()

    def _after_filter(self) -> None:
        if not self.grid.currentIndex().isValid() and self.proxy.rowCount():
            self.grid.setCurrentIndex(self.proxy.index(0, 0))
        self.model.forget_requests()
        self._schedule_updates()

    def _schedule_updates(self) -> None:
        self._counter_timer.start()
        self._tags_timer.start()

    def counts(self) -> tuple[int, int, int]:
        """(images, captioned, rejected) in the chosen concept folder (or all)."""
        folder = self.proxy.folder
        items = [it for it in self.model.items() if folder is None or it.folder == folder]
        return len(items), sum(1 for it in items if it.has_caption), sum(1 for it in items if it.rejected)

    def _update_counter(self) -> None:
        n, captioned, rejected = self.counts()
        if self.stack.currentWidget() is self.empty:
            self.counter.setText("")
        else:
            parts = [f"{n:,} image{'' if n == 1 else 's'}", f"{captioned:,} captioned"]
            parts.append(f"<span style='color:{ERROR_COLOR}'>{rejected:,} rejected</span>" if rejected
                         else "0 rejected")
            text = " · ".join(parts)
            if self.proxy.has_text_filter:
                text += f" · {self.proxy.rowCount():,} shown"
            if self._checking is not None:
                text += f" · checking {self._checking[1]:,}/{self.model.rowCount():,}…"
            self.counter.setText(text)
        all_caps = sum(1 for it in self.model.items() if it.has_caption)
        folder = self._scope_folder()
        folder_caps = sum(1 for it in self.model.items() if it.folder == folder and it.has_caption)
        self.batch_panel.set_scopes(folder, folder_caps, all_caps)

    def counter_text(self) -> str:
        return self.counter.text()

    def _update_tags(self) -> None:
        if self.side.currentWidget() is not self.tag_panel:
            return
        captions = [it.caption for it in self.proxy.shown_items() if it.has_caption and it.caption]
        self.tag_panel.set_counts(Counter(tag_frequency(captions)), len(captions))

    # --- wizard ---------------------------------------------------------------------------------------------
    def _on_prepared(self, result) -> None:
        if self.wizard is not None:
            self._state["wizard"] = self.wizard.values()
            self._save_state()
        paths = {"train_data_dir": str(result.img_dir),
                 "reg_data_dir": str(result.reg_dir) if result.reg_dir is not None else "",
                 "output_dir": str(result.model_dir),
                 "logging_dir": str(result.log_dir)}
        self._loaded_key = None
        self.set_dataset(paths["train_data_dir"], self._ext)
        self.folders_prepared.emit(paths)

    # --- state ----------------------------------------------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            data = json.loads((user_config_dir() / STATE_FILE).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        try:
            atomic_write_text(user_config_dir() / STATE_FILE, json.dumps(self._state, indent=2))
        except OSError as exc:
            self._set_status(f"Could not save the Dataset tab settings: {exc.strerror or exc}", error=True)

    def _save_quick_tags(self, tags: list) -> None:
        self._state["quick_tags"] = list(tags)
        self._save_state()

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {ERROR_COLOR};" if error else "color: palette(placeholder-text);")



def _code(html: str) -> str:
    """`name` (as the dataset check writes folder names) -> <code>name</code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html)

