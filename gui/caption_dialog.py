"""The Dataset tab's "Caption images…" dialog: BLIP or a WD14 tagger writes a first draft of the captions.

The model's files are looked for (model folder, Patina's offline folder, the Hugging Face cache) and fetched
only when the user clicks Download. Preview runs the model on the first images and shows what it would write
(nothing is written); Run captions the folder with progress per image and a Cancel that stops after the current
batch. The work runs in :mod:`patina.gui.tasks` tasks; torch, transformers and onnxruntime are imported there,
never when this module loads. The tab turns a finished run into one undo step (:meth:`run_finished`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QProgressBar, QPushButton, QStackedWidget, QTableWidget, QTableWidgetItem,
                               QVBoxLayout)

from patina.core.caption.blip import BlipOptions
from patina.core.caption.files import download, find_model, missing_message
from patina.core.caption.models import BLIP, MODELS, CaptionModel
from patina.core.caption.run import ERROR, MODES, SKIPPED, caption_pass, load_captioner
from patina.core.caption.wd14 import TaggerOptions
from patina.core.errors import PatinaError
from patina.gui.caption_options import BlipPage, TaggerPage, add_row, pair, spin_box, options_form
from patina.gui.caption_widgets import ERROR_COLOR, MUTED_STYLE
from patina.gui.tasks import Task, error_text, run_task
from patina.gui.widgets import PathEdit

PREVIEW_IMAGES = 8
MODE_LABELS = {"skip": "Skip images that have a caption", "overwrite": "Overwrite existing captions",
               "append": "Append new tags to existing captions"}


def _row_text(result) -> str:
    """What the table shows for one image: the caption, why it failed, or the caption it keeps."""
    if result.action == ERROR:
        return result.message
    if result.action == SKIPPED:
        return f"(keeps its caption: {result.old})"
    return result.new or ""


class CaptionDialog(QDialog):
    """Caption the images of *folder*. ``run_started()`` before a run writes, ``run_finished(report)`` after it
    (also when cancelled or failed: then *report* is None)."""

    run_started = Signal()
    run_finished = Signal(object)

    def __init__(self, folder: str, caption_extension: str = ".txt", parent=None):
        super().__init__(parent)
        self.setWindowTitle("Caption images")
        self.folder = folder
        self.caption_extension = caption_extension
        self.model_folder: Path | None = None
        self.task: Task | None = None
        self.last_report = None
        self._loaded: tuple | None = None     # (key, captioner): kept between preview and run
        self._preview_run = False
        self._build()
        self.model_combo.currentIndexChanged.connect(self._on_model)
        self.model_dir.editingFinished.connect(self.check_files)
        self.model_dir.textChanged.connect(lambda _t: self.check_files())
        self.download_button.clicked.connect(self.start_download)
        self.preview_button.clicked.connect(self.start_preview)
        self.run_button.clicked.connect(self.start_run)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.reject)
        self._on_model()

    # --- layout ---------------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.model_combo = QComboBox(self)
        for m in MODELS.values():
            self.model_combo.addItem(f"{m.label} (about {m.size_mb:,} MB)", m.key)
        self.model_combo.setCurrentIndex(self.model_combo.findData("wd14-swinv2-v3"))
        self.model_dir = PathEdit("dir", title="Folder with the model files", parent=self)
        self.model_dir.line.setPlaceholderText("Optional: a folder holding already downloaded model files")
        self.files_label = QLabel(self)
        self.files_label.setWordWrap(True)
        self.files_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_button = QPushButton("Download", self)
        self.download_bar = QProgressBar(self)
        self.download_bar.hide()
        files_row = QHBoxLayout()
        files_row.addWidget(self.files_label, 1)
        files_row.addWidget(self.download_button)

        self.blip_page = BlipPage(self)
        self.tagger_page = TaggerPage(self)
        self.pages = QStackedWidget(self)
        self.pages.addWidget(self.blip_page)
        self.pages.addWidget(self.tagger_page)
        self.mode_combo = QComboBox(self)
        for mode in MODES:
            self.mode_combo.addItem(MODE_LABELS[mode], mode)
        self.prefix = QLineEdit(self)
        self.prefix.setPlaceholderText("e.g. the trigger word: sks")
        self.suffix = QLineEdit(self)
        self.batch_size = spin_box(1, 64, 4, self)

        model_box = QGroupBox("Model", self)
        mf = QFormLayout(model_box)
        mf.addRow("Model:", self.model_combo)
        mf.addRow("Model folder:", self.model_dir)
        mf.addRow(files_row)
        mf.addRow(self.download_bar)
        options_box = QGroupBox("Options", self)
        ol = QVBoxLayout(options_box)
        ol.setSpacing(10)
        ol.addWidget(self.pages)
        of = options_form()
        add_row(of, "Existing captions:", self.mode_combo)
        add_row(of, "Put first (trigger word):", self.prefix)
        add_row(of, "Put last:", self.suffix)
        add_row(of, "Images per batch:", pair(self.batch_size))
        ol.addLayout(of)

        self.table = QTableWidget(0, 2, self)
        self.table.setHorizontalHeaderLabels(["Image", "Caption"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(True)
        self.table.setMinimumHeight(150)
        self.progress = QProgressBar(self)
        self.progress.setFormat("%v / %m images")
        self.progress.hide()
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.preview_button = QPushButton(f"Preview first {PREVIEW_IMAGES}", self)
        self.preview_button.setToolTip("Run the model on the first images it would caption and show the captions "
                                       "here; nothing is written")
        self.run_button = QPushButton("Caption all", self)
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close", self)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addStretch(1)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        note = QLabel(f"Images in <code>{self.folder}</code>. Captions are written atomically; the images are never "
                      "changed; one Undo (Ctrl+Z) in the Dataset tab reverts the whole run.", self)
        note.setWordWrap(True)
        note.setStyleSheet(MUTED_STYLE)

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(model_box, 1)
        top.addWidget(options_box, 1)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(note)
        layout.addLayout(buttons)
        self.resize(980, 640)

    # --- model files -------------------------------------------------------------------------------------------
    def model(self) -> CaptionModel:
        return MODELS[self.model_combo.currentData()]

    def options(self):
        page = self.blip_page if self.model().kind == BLIP else self.tagger_page
        return page.options(self.batch_size.value())

    def _on_model(self) -> None:
        blip = self.model().kind == BLIP
        self.pages.setCurrentWidget(self.blip_page if blip else self.tagger_page)
        self.batch_size.setValue(BlipOptions().batch_size if blip else TaggerOptions().batch_size)
        self.check_files()

    def check_files(self) -> None:
        """Look for the model's files (quick: no network) and offer Download when they are missing."""
        self.model_folder = None
        try:
            self.model_folder = find_model(self.model(), self.model_dir.text().strip() or None)
        except Exception as exc:  # noqa: BLE001 - a wrong model folder is shown, not raised
            self._show_files(error_text(exc), error=True, offer=False)
            return
        if self.model_folder is not None:
            self._show_files(f"Model files: {self.model_folder}", error=False, offer=False)
        else:
            self._show_files(f"Not on this computer yet. {missing_message(self.model())}.", error=True, offer=True)

    def _show_files(self, text: str, *, error: bool, offer: bool) -> None:
        self.files_label.setText(text)
        self.files_label.setStyleSheet(f"color: {ERROR_COLOR};" if error and not offer else MUTED_STYLE)
        self.download_button.setVisible(offer)
        self._sync_buttons()

    def start_download(self) -> None:
        if self.busy:
            return
        self.download_bar.setRange(0, 0)
        self.download_bar.show()
        self.status.setText(f"Downloading {self.model().label} from {self.model().url}…")
        self._start(download, self.model(), on_progress=self._on_download_progress, on_done=self._on_downloaded,
                    pass_progress=True)

    def _on_download_progress(self, done: int, total: int) -> None:
        mb = 1_000_000
        self.download_bar.setRange(0, max(1, total // mb))
        self.download_bar.setValue(done // mb)
        self.download_bar.setFormat(f"{done / mb:,.0f} / {total / mb:,.0f} MB")

    def _on_downloaded(self, _folder) -> None:
        self.download_bar.hide()
        self.status.setText("Downloaded.")
        self.check_files()

    # --- preview and run ---------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.finished

    def start_preview(self) -> None:
        self._start_pass(PREVIEW_IMAGES)

    def start_run(self) -> None:
        self._start_pass(0)

    def _start_pass(self, preview: int) -> None:
        if self.busy or self.model_folder is None:
            return
        try:
            options = self.options()
            options.check()
        except PatinaError as exc:
            self.status.setText(str(exc))
            self.status.setStyleSheet(f"color: {ERROR_COLOR};")
            return
        self.table.setRowCount(0)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.status.setText(f"Loading {self.model().label}…")
        if not preview:
            self.run_started.emit()
        settings = (self.model(), self.model_folder, options, self.mode_combo.currentData(),
                    self.prefix.text(), self.suffix.text(), preview)
        self._start(self._work, *settings, on_progress=self._on_image, on_done=self._on_pass_done,
                    pass_task=True, written=not preview)

    def _work(self, task: Task, model, folder, options, mode, prefix, suffix, preview):
        key = (model.key, str(folder), repr(options))
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = (key, load_captioner(model, folder, options))
        task.progress(0, 0, None)
        return caption_pass(self.folder, self._loaded[1], mode=mode, prefix=prefix, suffix=suffix,
                            caption_extension=self.caption_extension, preview=preview,
                            on_result=task.progress, should_stop=lambda: task.stop_requested)

    def _on_image(self, done: int, total: int, result) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        if result is None:
            self.status.setText("Captioning…")
            return
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.table.setItem(row, 0, QTableWidgetItem(result.image.name))
        item = QTableWidgetItem(_row_text(result))
        item.setToolTip(str(result.image))
        if result.action == ERROR:
            item.setForeground(Qt.GlobalColor.red)
        self.table.setItem(row, 1, item)
        self.table.scrollToItem(item)

    def _on_pass_done(self, report) -> None:
        self.progress.hide()
        self.last_report = report
        if self._preview_run:
            self.status.setText(f"Preview of {len(report.results)} image(s); nothing was written.")
        else:
            self.status.setText(report.summary() + (". Undo in the Dataset tab with Ctrl+Z." if report.changes else "."))
        self.table.resizeRowsToContents()

    def cancel(self) -> None:
        """Stop after the current batch (what was written stays, and can be undone)."""
        if self.busy:
            self.task.stop()
            self.status.setText("Stopping after this batch…")

    # --- tasks ---------------------------------------------------------------------------------------------------
    def _start(self, fn, *args, on_progress, on_done, pass_task=False, pass_progress=False, written=False) -> None:
        self._preview_run = not written

        def done(value):
            self.task = None
            self._sync_buttons()
            on_done(value)
            if written:
                self.run_finished.emit(value)

        def failed(exc):
            self.task = None
            self._sync_buttons()
            self.progress.hide()
            self.download_bar.hide()
            self.status.setText(error_text(exc))
            self.status.setStyleSheet(f"color: {ERROR_COLOR};")
            if written:
                self.run_finished.emit(None)

        self.status.setStyleSheet("")
        if pass_progress:
            self.task = run_task(lambda task, *a: fn(*a, progress=task.progress), *args, pass_task=True,
                                 on_progress=on_progress, on_done=done, on_error=failed, owner=self,
                                 what="Captioning")
        else:
            self.task = run_task(fn, *args, pass_task=pass_task, on_progress=on_progress, on_done=done,
                                 on_error=failed, owner=self, what="Captioning")
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        busy = self.busy
        ready = self.model_folder is not None and not busy
        self.preview_button.setEnabled(ready)
        self.run_button.setEnabled(ready)
        self.download_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        for w in (self.model_combo, self.model_dir, self.pages, self.mode_combo, self.prefix, self.suffix,
                  self.batch_size):
            w.setEnabled(not busy)

    # --- remembered between openings ---------------------------------------------------------------------------
    def values(self) -> dict:
        """The choices worth keeping for next time (model, model folder, mode, what goes first and last)."""
        return {"model": self.model().key, "model_dir": self.model_dir.text().strip(),
                "mode": self.mode_combo.currentData(), "prefix": self.prefix.text(), "suffix": self.suffix.text()}

    def set_values(self, values: dict) -> None:
        index = self.model_combo.findData(values.get("model"))
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        self.model_dir.setText(str(values.get("model_dir") or ""))
        self.mode_combo.setCurrentIndex(max(0, self.mode_combo.findData(values.get("mode"))))
        self.prefix.setText(str(values.get("prefix") or ""))
        self.suffix.setText(str(values.get("suffix") or ""))

    def reject(self) -> None:
        if self.busy:
            self.cancel()
            return
        super().reject()
