"""The Training tab: the parameter pages (:class:`~patina.gui.param_pages.ParamForm`) plus a footer with
the problem count and the Start button."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from patina.core.config.schema import BY_KEY
from patina.gui.monitor_tab import REQUIRED_TO_START
from patina.gui.param_pages import ParamForm


class TrainingTab(QWidget):
    """The parameter pages plus a footer with the problem count and a Start button."""

    start_requested = Signal()
    queue_requested = Signal()

    def __init__(self, parent=None, *, detect_family: bool = True):
        super().__init__(parent)
        self.form = ParamForm(self, detect_family=detect_family)
        self.summary = QLabel(self)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.linkActivated.connect(self._jump)
        self.start_button = QPushButton("Start training…", self)
        self.start_button.setObjectName("trainingStart")
        bold = self.start_button.font()
        bold.setBold(True)
        self.start_button.setFont(bold)
        self.start_button.setMinimumWidth(150)
        self.start_button.setMinimumHeight(30)
        self.start_button.setToolTip("Check everything, show the plan, then train (progress on the Monitor tab)")
        self.start_button.clicked.connect(self.start_requested)
        self.queue_button = QPushButton("Add to queue", self)
        self.queue_button.setObjectName("trainingQueue")
        self.queue_button.setMinimumHeight(30)
        self.queue_button.setToolTip("Queue a snapshot of these settings; the Queue tab trains its runs one after "
                                     "another")
        self.queue_button.clicked.connect(self.queue_requested)
        footer = QHBoxLayout()
        footer.setContentsMargins(12, 6, 12, 8)
        footer.addWidget(self.summary, 1)
        footer.addWidget(self.queue_button)
        footer.addWidget(self.start_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.form, 1)
        layout.addLayout(footer)
        self.form.problems_changed.connect(self._update_summary)
        self._update_summary(self.form.problems())

    def _update_summary(self, problems) -> None:
        errs = [p for p in problems if p.severity == "error"]
        warns = [p for p in problems if p.severity != "error"]
        vals = self.form.values()
        missing = [k for k in REQUIRED_TO_START if not str(vals.get(k, "")).strip()]
        if errs:
            self.summary.setText(f"<span style='color:#c62828'>● {len(errs)} setting(s) need fixing</span> — "
                                 f"<a href='{errs[0].key}'>show the first</a>")
        elif warns:
            self.summary.setText(f"<span style='color:#9a6200'>● {len(warns)} warning(s)</span> — "
                                 f"<a href='{warns[0].key}'>show</a>")
        elif missing:
            names = ", ".join(BY_KEY[k].label for k in missing)
            self.summary.setText(f"● To train, set: {names} — <a href='{missing[0]}'>go there</a>")
        else:
            self.summary.setText("<span style='color:#2e7d32'>● All settings are valid.</span>")

    def _jump(self, key: str) -> None:
        if key in BY_KEY:
            self.form.focus_field(key)

    def set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.start_button.setText("Training is running" if running else "Start training…")
