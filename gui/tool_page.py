"""The frame every page of the Tools tab shares: a form of inputs, Run and Cancel, a progress bar with the
tool's per-module message, and a log that shows the tool's report or its one-line error.

A page subclass builds its fields in :meth:`ToolPage.build` and returns the work to do from
:meth:`ToolPage.prepare` as ``(tool name, keyword arguments)``; :func:`run_tool` runs it on a worker thread
(:mod:`patina.gui.tasks`), importing the torch-heavy core module only there.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
                               QPlainTextEdit, QProgressBar, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from patina.core.errors import PatinaError
from patina.gui.tasks import Task, error_text, run_task
from patina.gui.widgets import PathEdit

LORA_FILTER = "LoRA files (*.safetensors)"
MODEL_FILTER = "Models (*.safetensors *.ckpt)"


def run_tool(task: Task, tool: str, kwargs: dict[str, Any]) -> tuple[str, str]:
    """Worker thread: run one LoRA tool (or verify); returns (its report as text, a one-line status)."""
    if tool == "verify":
        from patina.core.lora.verify import format_verify_report, verify_lora

        report = verify_lora(**kwargs)
        verdict = "loads in every loader" if report.ok else "problems found (see Loaders)"
        return format_verify_report(report), f"Done: {verdict}."
    if tool == "resize":
        from patina.core.lora.resize import resize as fn
    elif tool == "merge":
        from patina.core.lora.merge import merge as fn
    elif tool == "merge_into":
        from patina.core.lora.merge_into import merge_into as fn
    elif tool == "extract":
        from patina.core.lora.extract import extract as fn
    else:  # pragma: no cover - a programming error
        raise ValueError(f"unknown tool {tool}")
    report = fn(**kwargs, progress=lambda done, total, message: task.progress(done, total, message),
                cancelled=lambda: task.stop_requested)
    return "\n".join(report.lines(True)), "Done."


def free_name(folder: Path, stem: str, suffix: str, taken: list[str]) -> Path:
    """``folder/stem+suffix``, numbered (``-2``, ``-3`` …) until it names nothing that exists or is an input."""
    taken_paths = {os.path.normcase(os.path.abspath(t)) for t in taken if t}
    n = 1
    while True:
        p = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        if not p.exists() and os.path.normcase(os.path.abspath(p)) not in taken_paths:
            return p
        n += 1


def existing(path: str, what: str) -> str:
    """*path* stripped, or a one-line PatinaError naming *what* when it is empty or missing."""
    path = path.strip()
    if not path:
        raise PatinaError(f"Choose the {what}.")
    if not Path(path).expanduser().exists():
        raise PatinaError(f"The {what} {path} does not exist.")
    return path


class OutputPathEdit(PathEdit):
    """A path to write: Browse… opens a save dialog, where a new name can be typed."""

    def __init__(self, file_filter: str = "", title: str = "Save as", parent=None):
        super().__init__("file", file_filter, title, parent)
        self.line.setPlaceholderText("Where to write the result")

    def browse(self, kind: str) -> None:
        filters = ";;".join(f for f in (self.file_filter, "All files (*)") if f)
        path, _ = QFileDialog.getSaveFileName(self, self.title, self.line.text().strip() or self._start_dir(),
                                              filters)
        if path:
            self.line.setText(os.path.normpath(path))
            self.editingFinished.emit()


class LoraTable(QWidget):
    """LoRA files with a weight each (merge, merge into a checkpoint): Add…, Remove, weights edited in place."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table = QTableWidget(0, 2, self)
        self.table.setHorizontalHeaderLabels(["LoRA file", "Weight"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setMinimumHeight(110)
        add = QPushButton("Add…", self)
        add.clicked.connect(self._browse)
        self.remove = QPushButton("Remove", self)
        self.remove.clicked.connect(self._remove_selected)
        buttons = QVBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(self.remove)
        buttons.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)

    def add_lora(self, path: str | os.PathLike, weight: float = 1.0) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        item = QTableWidgetItem(os.path.normpath(str(path)))
        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
        item.setToolTip(str(path))
        self.table.setItem(row, 0, item)
        self.table.setItem(row, 1, QTableWidgetItem(f"{weight:g}"))
        self.changed.emit()

    def _browse(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Choose LoRA files", "", f"{LORA_FILTER};;All files (*)")
        for p in paths:
            self.add_lora(p)

    def _remove_selected(self) -> None:
        for row in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(row)
        self.changed.emit()

    def paths(self) -> list[str]:
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())]

    def entries(self) -> list[tuple[str, float]]:
        """[(path, weight)], or a one-line PatinaError for a missing file or a weight that is not a number."""
        if not self.table.rowCount():
            raise PatinaError("Add at least one LoRA file (Add…).")
        out = []
        for r in range(self.table.rowCount()):
            path = existing(self.table.item(r, 0).text(), "LoRA file")
            text = (self.table.item(r, 1).text() if self.table.item(r, 1) else "").strip().replace(",", ".")
            try:
                weight = float(text)
            except ValueError:
                raise PatinaError(f"The weight of {Path(path).name} ({text or 'empty'}) is not a number.") from None
            out.append((path, weight))
        return out


class ToolPage(QWidget):
    """One tool: :meth:`build` adds fields to :attr:`form`; :meth:`prepare` returns ``(tool, kwargs)``."""

    title = ""
    blurb = ""
    run_text = "Run"
    running_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.task: Task | None = None
        self._proposed = ""          # the output path this page proposed last (replaced while unchanged)
        layout = QVBoxLayout(self)
        head = QLabel(f"<b>{self.title}</b><br>{self.blurb}", self)
        head.setWordWrap(True)
        layout.addWidget(head)
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        layout.addLayout(self.form)
        self.build()
        row = QHBoxLayout()
        self.run_button = QPushButton(self.run_text, self)
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.progress, 1)
        layout.addLayout(row)
        self.message = QLabel("", self)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.message)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log.setPlaceholderText("The report appears here.")
        layout.addWidget(self.log, 1)
        self.state = "idle"          # idle / running / done / failed / cancelled

    # --- subclasses --------------------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def prepare(self) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def inputs(self) -> list[str]:
        """The input paths (an output naming one of them is refused)."""
        return []

    # --- the output proposal -----------------------------------------------------------------------------
    def propose(self, out_edit, folder: Path, stem: str, suffix: str) -> None:
        """Put a free path next to the input into *out_edit*, unless the user typed one of their own."""
        current = out_edit.text().strip()
        if current and current != self._proposed:
            return
        self._proposed = str(free_name(folder, stem, suffix, self.inputs()))
        out_edit.setText(self._proposed)

    def check_output(self, path: str, *, folder: bool = False) -> str:
        from patina.core.lora.toolkit import check_output

        path = path.strip()
        if not path:
            raise PatinaError("Choose the output file.")
        return str(check_output(path, [p for p in self.inputs() if p.strip()], folder=folder))

    # --- running ---------------------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.task is not None

    def run(self) -> None:
        if self.task is not None:
            return
        try:
            tool, kwargs = self.prepare()
        except PatinaError as exc:
            self._finish("failed", str(exc))
            return
        self.log.clear()
        self.progress.setRange(0, 0)   # busy until the tool reports its first module
        self.message.setText("Starting…")
        self.state = "running"
        self._set_running(True)
        self.task = run_task(run_tool, tool, kwargs, pass_task=True, owner=self, what=self.title,
                             on_done=self._done, on_error=self._failed, on_progress=self._progress)

    def cancel(self) -> None:
        """Ask the tool to stop after the module it is working on; it removes its partial output."""
        if self.task is not None:
            self.task.stop()
            self.cancel_button.setEnabled(False)
            self.message.setText("Cancelling…")

    def abandon(self) -> None:
        """The window closes: stop the tool and drop its report."""
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def _progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.message.setText(message)

    def _done(self, result: tuple[str, str]) -> None:
        self.task = None
        text, status = result
        self._finish("done", text)
        self.message.setText(status)

    def _failed(self, exc: BaseException) -> None:
        from patina.core.lora.toolkit import Cancelled

        self.task = None
        if not isinstance(exc, PatinaError) and sys.stderr is not None:   # a bug: keep its traceback
            traceback.print_exception(exc, file=sys.stderr)
        self._finish("cancelled" if isinstance(exc, Cancelled) else "failed", error_text(exc))

    def _finish(self, state: str, text: str) -> None:
        self.state = state
        self._set_running(False)
        if self.progress.maximum() == 0:   # still busy: the tool ended before its first module
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        if state == "done":
            self.progress.setValue(self.progress.maximum())
        self.message.setText({"done": "Done.", "cancelled": "Cancelled.", "failed": "Failed."}[state])
        self.log.setPlainText(text)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.running_changed.emit(running)
