"""The Queue tab: configs to train one after the other (:mod:`patina.core.train.queue`).

Each run goes through the Monitor tab exactly like a run started with Start (:meth:`MonitorTab.run_queued`
→ :class:`~patina.gui.worker.TrainingWorker`), so the Monitor shows the current queue run. A failed run is
recorded and the queue goes on; a run stopped by the user (Monitor › Stop) stops the queue; "Pause after
current run" stops it once the current run ends. The queue lives in the user data folder, so it survives
closing the window; runs the window was closed on come back "interrupted" and one click resumes them.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QFont
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from patina.core.config.schema import BY_KEY, non_default
from patina.core.errors import PatinaError
from patina.core.train.queue import Entry, QueueLock, TrainingQueue, lock_holder, time_text
from patina.gui.widgets import Banner, stacked_splitter

COLUMNS = ("Name", "Status", "Time", "Output")
STATUS_TEXT = {"waiting": "Waiting", "running": "▶ Running", "done": "✔ Done", "failed": "✖ Failed",
               "stopped": "■ Stopped", "interrupted": "↻ Interrupted"}
STATUS_COLOR = {"running": "#174ea6", "done": "#1b5e20", "failed": "#b00020", "stopped": "#7a4b00",
                "interrupted": "#7a4b00"}


def snapshot_text(entry: Entry) -> str:
    """The queued settings that differ from the defaults, one per line, and where they came from."""
    cfg = {k: v for k, v in entry.config.items() if k in BY_KEY}
    lines = [f"Queued from {entry.source}" if entry.source else "Queued from the window (untitled config)",
             f"Settings that differ from the defaults ({len(non_default(cfg))}; the whole snapshot is kept):", ""]
    for key, value in non_default(cfg).items():
        lines.append(f"{BY_KEY[key].label} ({key}) = {json.dumps(value, ensure_ascii=False)}")
    if entry.message:
        lines += ["", entry.message]
    return "\n".join(lines)


def open_folder(path: str) -> None:
    p = Path(path)
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(p if p.is_dir() else p.parent)))


class QueueTab(QWidget):
    """The queue's list, its snapshot view and its actions; runs the queue through *monitor*."""

    running_changed = Signal(bool)

    def __init__(self, monitor, parent=None, *, config_source: Callable[[], Mapping[str, Any]] | None = None,
                 source_path: Callable[[], Any] | None = None):
        super().__init__(parent)
        self.monitor = monitor
        self.config_source = config_source
        self.source_path = source_path or (lambda: None)
        self.queue = TrainingQueue()
        self.lock: QueueLock | None = None
        self.current: int | None = None     # the entry the Monitor runs now
        self.closing = False                # the window closes: the current run is recorded as interrupted
        self._shown: tuple = ()
        self._build()
        monitor.finished.connect(self._run_done)
        self.refresh()
        self._offer_resume()
        self._timer = QTimer(self)
        self._timer.setInterval(2000)       # the running time, and changes made by `patina queue`
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    def _build(self) -> None:
        self.banner = Banner(self)

        def button(text, slot, tip):
            b = QPushButton(text, self)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            return b

        self.add_button = button("Add current config", self.add_current,
                                 "Queue a snapshot of the Training tab's settings (later edits do not change it)")
        self.start_button = button("Start queue", self.start_queue, "Train the waiting runs one after the other")
        bold = self.start_button.font()
        bold.setBold(True)
        self.start_button.setFont(bold)
        self.pause_button = button("Pause after current run", lambda: self._update_buttons(),
                                   "Let the current run finish, then stop the queue")
        self.pause_button.setCheckable(True)
        self.up_button = button("Move up", lambda: self.move_selected(-1), "Train this run earlier")
        self.down_button = button("Move down", lambda: self.move_selected(1), "Train this run later")
        self.retry_button = button("Run again", self.retry_selected,
                                   "Let a failed, stopped or finished run wait again (a stopped one continues)")
        self.remove_button = button("Remove", self.remove_selected, "Remove the run from the queue")
        self.clear_button = button("Clear finished", self.clear_finished, "Remove the done, failed and stopped runs")
        bar = QHBoxLayout()
        for b in (self.add_button, self.start_button, self.pause_button):
            bar.addWidget(b)
        bar.addStretch(1)
        for b in (self.up_button, self.down_button, self.retry_button, self.remove_button, self.clear_button):
            bar.addWidget(b)

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2):
            head.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.cellClicked.connect(self.open_output)
        self.snapshot_view = QPlainTextEdit(self)
        self.snapshot_view.setReadOnly(True)
        self.snapshot_view.setFont(QFont("monospace"))
        self.snapshot_view.setPlaceholderText("Select a run to see the settings it was queued with.")
        self.status_label = QLabel("Runs train one after the other, each as a normal run on the Monitor tab. "
                                   "Close Patina mid-queue and it offers to resume.", self)
        self.status_label.setWordWrap(True)
        split = stacked_splitter(self, self.table, self.snapshot_view, (3, 2))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(8)
        layout.addWidget(self.banner)
        layout.addLayout(bar)
        layout.addWidget(self.status_label)
        layout.addWidget(split, 1)

    # -- the list ---------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.lock is not None

    def refresh(self) -> None:
        """Re-read the queue (``patina queue`` may have changed it) and show it."""
        self.queue.load()
        if self.queue.notice:
            self.banner.show_message("warning", html.escape(self.queue.notice))
        shown = tuple((e.id, e.name, e.status, time_text(e), e.output) for e in self.queue.entries)
        if shown != self._shown:
            self._fill(shown)
        self._update_buttons()

    def _fill(self, shown: tuple) -> None:
        selected = self.selected_id()
        self._shown = shown
        self.table.setRowCount(len(shown))
        for row, (entry_id, name, status, when, output) in enumerate(shown):
            item = QTableWidgetItem(f"{entry_id}. {name}")
            item.setData(Qt.ItemDataRole.UserRole, entry_id)
            self.table.setItem(row, 0, item)
            st = QTableWidgetItem(STATUS_TEXT[status])
            if status in STATUS_COLOR:
                st.setForeground(QColor(STATUS_COLOR[status]))
            self.table.setItem(row, 1, st)
            self.table.setItem(row, 2, QTableWidgetItem(when))
            self.table.setItem(row, 3, self._output_item(output))
            if entry_id == selected:
                self.table.selectRow(row)
        self._selection_changed()

    def _output_item(self, output: str) -> QTableWidgetItem:
        """The output as a link: a click opens its folder (:meth:`open_output`)."""
        item = QTableWidgetItem(output)
        if output:
            item.setForeground(QColor("#1a56b0"))
            font = item.font()
            font.setUnderline(True)
            item.setFont(font)
            item.setToolTip("Click to open the folder")
        return item

    def open_output(self, row: int, column: int = 3) -> None:
        item = self.table.item(row, 3)
        if column == 3 and item is not None and item.text():
            open_folder(item.text())

    def selected_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        item = self.table.item(rows[0].row(), 0) if rows else None
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def select(self, entry_id: int) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == entry_id:
                self.table.selectRow(row)

    def _selection_changed(self) -> None:
        entry_id = self.selected_id()
        entry = next((e for e in self.queue.entries if e.id == entry_id), None)
        self.snapshot_view.setPlainText(snapshot_text(entry) if entry else "")
        self._update_buttons()

    def _update_buttons(self) -> None:
        entry_id = self.selected_id()
        entry = next((e for e in self.queue.entries if e.id == entry_id), None)
        elsewhere = None if self.running else lock_holder(self.queue.lock_path)
        if elsewhere is not None and elsewhere["pid"] == os.getpid():
            elsewhere = None
        self.start_button.setEnabled(not self.running and elsewhere is None and bool(self.queue.pending()))
        self.start_button.setToolTip(f"The queue is running in {elsewhere['by']} (process {elsewhere['pid']})"
                                     if elsewhere else "Train the waiting runs one after the other")
        self.start_button.setText("Queue running" if self.running else "Start queue")
        self.pause_button.setEnabled(self.running)
        if not self.running:
            self.pause_button.setChecked(False)
        editable = entry is not None and entry.status != "running"
        self.remove_button.setEnabled(editable)
        self.retry_button.setEnabled(editable and entry.status not in ("waiting", "interrupted"))
        ids = [e.id for e in self.queue.entries]
        self.up_button.setEnabled(entry is not None and ids.index(entry.id) > 0)
        self.down_button.setEnabled(entry is not None and ids.index(entry.id) < len(ids) - 1)
        self.clear_button.setEnabled(any(e.status in ("done", "failed", "stopped") for e in self.queue.entries))

    # -- actions ----------------------------------------------------------------------------------------------

    def _act(self, fn: Callable[[], Any]) -> Any:
        """Run a queue change; a PatinaError becomes the banner's message."""
        try:
            result = fn()
        except PatinaError as exc:
            self.banner.show_message("error", html.escape(str(exc)).replace("\n", "<br>"))
            return None
        self.refresh()
        return result

    def add_current(self) -> Entry | None:
        """Queue a snapshot of the window's config."""
        if self.config_source is None:
            return None
        values = dict(self.config_source())
        source = self.source_path() or ""
        entry = self._act(lambda: self.queue.add(values, source=source))
        if entry is not None:
            self.banner.hide()
            self.select(entry.id)
            self.status_label.setText(f"Queued “{entry.name}”. Later edits in the window do not change it.")
        return entry

    def move_selected(self, delta: int) -> None:
        entry_id = self.selected_id()
        if entry_id is not None:
            ids = [e.id for e in self.queue.entries]
            self._act(lambda: self.queue.move(entry_id, ids.index(entry_id) + 1 + delta))
            self.select(entry_id)

    def remove_selected(self) -> None:
        entry_id = self.selected_id()
        if entry_id is not None:
            self._act(lambda: self.queue.remove(entry_id))

    def retry_selected(self) -> None:
        entry_id = self.selected_id()
        if entry_id is not None:
            self._act(lambda: self.queue.requeue(entry_id))

    def clear_finished(self) -> None:
        self._act(self.queue.clear_finished)

    # -- running ----------------------------------------------------------------------------------------------

    def _offer_resume(self) -> None:
        stopped = [e for e in self.queue.entries if e.status == "interrupted"]
        if stopped:
            self.banner.show_message(
                "info", f"<b>The queue was running when Patina closed.</b> {len(stopped)} run(s) were interrupted; "
                        "they continue from their saved training state where there is one.",
                "Resume queue", self.start_queue)

    def start_queue(self) -> bool:
        if self.running:
            return False
        if self.monitor.is_busy():
            self.banner.show_message("warning", "A training run is going on; start the queue when it has ended.")
            return False
        lock = QueueLock(self.queue, "the Patina window")
        if self._act(lock.acquire) is None:
            return False
        self.lock = lock
        self.banner.hide()
        self.running_changed.emit(True)
        self._next()
        return True

    def _next(self) -> None:
        if not self.running:
            return
        if self.pause_button.isChecked():
            self._halt("The queue is paused; Start queue goes on with the next run.")
            return
        entry = self.queue.load().next_pending()
        if entry is None:
            failed = sum(e.status == "failed" for e in self.queue.entries)
            self._halt("The queue is done." + (f" {failed} run(s) failed; select one to see why." if failed else ""))
            return
        try:
            values, resume = self.queue.begin(entry.id)
        except PatinaError:
            self.refresh()
            QTimer.singleShot(0, self._next)   # recorded as failed; the queue goes on
            return
        self.current = entry.id
        self.refresh()
        self.status_label.setText(f"Running “{entry.name}” (progress on the Monitor tab); "
                                  f"{len(self.queue.pending())} more waiting.")
        if not self.monitor.run_queued(values, resume, entry.name):
            self.queue.mark(entry.id, "waiting", started=None)
            self.current = None
            self._halt("The Monitor is busy with another run; the queue stopped.")

    def _run_done(self, fin) -> None:
        if self.current is None:
            return
        entry_id, self.current = self.current, None
        self.queue.end(entry_id, fin, interrupted=self.closing)
        self.refresh()
        if fin.status == "stopped":
            self._halt("The run was stopped, so the queue stopped. Start queue goes on with the next run; "
                       "Run again lets the stopped run continue.")
        else:
            QTimer.singleShot(0, self._next)

    def _halt(self, text: str) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            self.running_changed.emit(False)
        self.status_label.setText(text)
        self.refresh()

    def prepare_close(self) -> None:
        """The window closes while a queue run goes on: the run stops (saving) and resumes with the queue."""
        self.closing = True
        self.pause_button.setChecked(True)

    def shutdown(self) -> None:
        self._timer.stop()
        if self.lock is not None and self.current is None:
            self._halt("")
