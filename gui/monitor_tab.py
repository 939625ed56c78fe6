"""The Monitor tab: start a run, watch it, stop it.

Start checks every setting first (the schema, plus the engine's dry-run :func:`patina.core.train.engine.plan`, run off
the GUI thread), shows the plan in a confirm dialog and asks before overwriting an existing LoRA file.
The run itself happens in a :class:`~patina.gui.worker.TrainingWorker` thread; its events arrive here as queued
signals and feed the live charts (pyqtgraph, imported when the charts are first needed), the progress
bars, the status line, the log, the sample gallery and the quality report (:mod:`~patina.gui.quality_view`).
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from PySide6.QtCore import Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QGridLayout, QHBoxLayout, QLabel, QMessageBox,
                               QPlainTextEdit, QProgressBar, QPushButton, QTabWidget, QVBoxLayout, QWidget)

from patina.core.errors import PatinaError
from patina.core.train.queue import format_duration
from patina.core.train.events import EpochEnd, Finished, Log, Metrics, Plan, Progress, Quality, Sample, Saved, Status
from patina.core.config.schema import REQUIRED_TO_START  # noqa: F401 - re-exported for the Training tab
from patina.core.config.schema import FAMILY_LABELS, Problem, check_values, errors, missing_required
from patina.gui.param_fields import problem_text
from patina.gui.live_charts import LiveCharts
from patina.gui.quality_view import QualityView
from patina.gui.sample_gallery import SampleGallery
from patina.gui.widgets import Banner, stacked_splitter
from patina.gui.tasks import run_task
from patina.gui.worker import EngineFn, TrainingWorker, default_plan, default_train

START_TEXT = "Start training"
STOP_TEXT = "Stop training"
STOPPING_TEXT = "Stopping…"
CHECKING_TEXT = "Checking…"


_COUNT = re.compile(r"(\d+)/(\d+)")


def _is_partial_count(ev: Status) -> bool:
    """A progress line such as "Caching latents 5/16…" that is not the last one."""
    m = _COUNT.search(ev.text)
    return bool(m) and ev.phase == "caching" and m.group(1) != m.group(2)


def output_file(cfg: Mapping[str, Any], plan: Any = None) -> Path | None:
    """The final LoRA file the run will write."""
    out = getattr(plan, "output_path", "") if plan is not None else ""
    if out:
        return Path(out)
    if cfg.get("output_dir") and cfg.get("output_name"):
        return Path(os.path.expanduser(str(cfg["output_dir"]))) / f"{cfg['output_name']}.safetensors"
    return None


def plan_rows(plan: Plan) -> list[tuple[str, str]]:
    """The plan as (label, value) lines for the confirm dialog."""
    buckets = ", ".join(f"{k.replace('x', '×')}: {v}" for k, v in sorted(plan.buckets.items(),
                                                                      key=lambda kv: -kv[1])) or "—"
    reg = getattr(plan, "reg_samples", 0)
    rows = [("Training images", f"{plan.images}")]
    if plan.reg_images:
        rows.append(("Regularisation images", f"{plan.reg_images}  → {reg} reg samples per epoch (cycled to as many "
                                              "as training samples)" if reg else f"{plan.reg_images}  (not used)"))
    samples = (f"{plan.samples_per_epoch + reg}  ({plan.samples_per_epoch} train + {reg} reg)" if reg
               else f"{plan.samples_per_epoch}")
    rows += [
        ("Per epoch", getattr(plan, "arithmetic", "") or "—"),
        ("Samples per epoch", samples),
        ("Batch size × accumulation", f"{plan.batch_size} × {plan.grad_accum}"),
        ("Steps per epoch", f"{plan.steps_per_epoch}"),
        ("Epochs", f"{plan.epochs}"),
        ("Total steps", f"{plan.total_steps}"),
        ("Model family", FAMILY_LABELS.get(plan.family, plan.family or "—")),
        ("Resolution buckets", buckets),
        ("Output file", plan.output_path or "—"),
        ("Skipped files", f"{len(plan.skipped)}" if plan.skipped else "none"),
    ]
    return rows


VERDICT_COLOURS = {"fits": "#1b7a2e", "tight": "#7a4b00", "will not fit": "#b00020"}


def vram_table(est) -> str:
    """The VRAM estimate's breakdown as a small HTML table for the plan dialog."""
    from patina.core.train.vram import gib

    w, h = est.resolution
    cells = "".join(f"<tr><td>{html.escape(part)}</td><td align='right'>&nbsp;{gib(n)}&nbsp;</td>"
                    f"<td style='color: palette(placeholder-text)'>{html.escape(what)}</td></tr>"
                    for part, what, n in est.rows())
    if est.card is None:
        verdict = "no CUDA GPU here: not compared with a card"
    else:
        colour = VERDICT_COLOURS.get(est.card.verdict, "#000")
        verdict = (f"of {gib(est.card.available)} free on {html.escape(est.card.name)}: "
                   f"<b style='color: {colour}'>{est.card.verdict}</b>")
    return (f"<b>VRAM estimate</b> — batch {est.batch} at {w}×{h}, the largest bucket"
            f"<table cellspacing='0' cellpadding='1'>{cells}<tr><td><b>Total</b></td>"
            f"<td align='right'>&nbsp;<b>{gib(est.total)}</b>&nbsp;</td><td>{verdict}</td></tr></table>")


def fix_label(fix: Mapping[str, Any]) -> str:
    """Button text for a one-click fix, e.g. "Use AdamW" or "Set Mixed precision to no"."""
    from patina.core.config.schema import BY_KEY

    if len(fix) == 1:
        key, value = next(iter(fix.items()))
        if key in ("optimizer", "xformers"):
            return f"Use {value}"
        label = BY_KEY[key].label if key in BY_KEY else key
        if isinstance(value, bool):
            return f"Turn {'on' if value else 'off'} {label}"
        return f"Set {label} to {value}"
    return f"Change these {len(fix)} settings"


class PlanDialog(QDialog):
    """"Start training?" with the readable plan, skipped files, setting warnings and the pre-flight problems
    (``Plan.problems``), each with its one-click fix where there is one. A problem that is an error keeps
    Start disabled. Choosing a fix closes the dialog with :attr:`FIX` and :attr:`chosen_fix` set."""

    FIX = 2

    def __init__(self, plan: Plan, warnings: list[Problem] | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Start training?")
        self.plan = plan
        self.chosen_fix: dict | None = None
        self.fix_buttons: list[QPushButton] = []
        problems = list(getattr(plan, "problems", None) or [])
        self.blocking = [p for p in problems if p.severity == "error"]
        layout = QVBoxLayout(self)
        head = QLabel("<b>This is what the run will do.</b> Check the numbers, then start.", self)
        layout.addWidget(head)
        grid = QGridLayout()
        grid.setHorizontalSpacing(16)
        for r, (label, value) in enumerate(plan_rows(plan)):
            lab = QLabel(label + ":", self)
            lab.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            val = QLabel(value, self)
            val.setWordWrap(True)
            val.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(lab, r, 0)
            grid.addWidget(val, r, 1)
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)
        self.vram_label: QLabel | None = None
        if getattr(plan, "vram", None) is not None:
            self.vram_label = QLabel(vram_table(plan.vram), self)
            self.vram_label.setTextFormat(Qt.TextFormat.RichText)
            self.vram_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(self.vram_label)
        notes: list[str] = []
        if plan.skipped:
            notes.append(f"<b>{len(plan.skipped)} file(s) will be skipped:</b>")
            for item in list(plan.skipped)[:20]:
                path, reason = (item if isinstance(item, (tuple, list)) and len(item) == 2 else (item, ""))
                notes.append(f"&nbsp;&nbsp;{html.escape(str(path))} — {html.escape(str(reason))}")
            if len(plan.skipped) > 20:
                notes.append(f"&nbsp;&nbsp;… and {len(plan.skipped) - 20} more (see the plan details)")
        for w in getattr(plan, "warnings", None) or []:
            notes.append("⚠ " + html.escape(str(w)))
        for w in warnings or []:
            notes.append("⚠ " + html.escape(problem_text(w)))
        if notes:
            note = QLabel("<br>".join(notes), self)
            note.setWordWrap(True)
            note.setStyleSheet("color: #7a4b00;")
            layout.addWidget(note)
        if problems:
            box = QGridLayout()
            for r, p in enumerate(sorted(problems, key=lambda p: p.severity != "error")):
                error = p.severity == "error"
                text = p.message[:1].upper() + p.message[1:] if p.key == "device" else problem_text(p)
                lab = QLabel(("<b>Fix first:</b> " if error else "⚠ ") + html.escape(text), self)
                lab.setTextFormat(Qt.TextFormat.RichText)
                lab.setWordWrap(True)
                lab.setStyleSheet("color: #b00020;" if error else "color: #7a4b00;")
                box.addWidget(lab, r, 0)
                if p.fix:
                    btn = QPushButton(fix_label(p.fix), self)
                    btn.setToolTip("Change the setting and check the run again")
                    btn.clicked.connect(lambda _=False, fix=dict(p.fix): self._choose_fix(fix))
                    box.addWidget(btn, r, 1, Qt.AlignmentFlag.AlignTop)
                    self.fix_buttons.append(btn)
            box.setColumnStretch(0, 1)
            layout.addLayout(box)
        if plan.text:
            details = QPlainTextEdit(self)
            details.setReadOnly(True)
            details.setPlainText(plan.text)
            details.setFont(QFont("monospace"))
            details.setMinimumHeight(90)
            layout.addWidget(details, 1)
        buttons = QDialogButtonBox(self)
        self.start_button = buttons.addButton(START_TEXT, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.start_button.setDefault(True)
        if self.blocking:
            self.start_button.setEnabled(False)
            self.start_button.setToolTip("Fix the problems marked “Fix first” before training")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        lines = (plan.text or "").count("\n") + 1
        self.resize(640, 400 + min(12, lines) * details.fontMetrics().lineSpacing() if plan.text else 380)
        if problems:
            self.resize(self.width(), self.height() + 48 * len(problems))
        if self.vram_label is not None:
            self.resize(max(self.width(), self.vram_label.sizeHint().width() + 24),
                        self.height() + self.vram_label.sizeHint().height())

    def _choose_fix(self, fix: dict) -> None:
        self.chosen_fix = fix
        self.done(self.FIX)


# --- the tab ------------------------------------------------------------------------------------------------

class MonitorTab(QWidget):
    """Start/stop, live progress, charts, samples and log of one training run at a time.

    Why this class is ~370 lines: it is the run's state machine (idle, checking, running, stopping) and
    the one receiver of the engine's events, which each update several widgets; the charts
    (:mod:`~patina.gui.live_charts`) and the samples (:mod:`~patina.gui.sample_gallery`) are their own
    modules."""

    finished = Signal(object)          # patina.core.train.events.Finished
    problems_found = Signal(list)      # [Problem]: settings to fix before a run can start
    fix_requested = Signal(dict)       # {key: value} chosen in the plan dialog; the form applies it
    running_changed = Signal(bool)

    def __init__(self, parent=None, *, engine_fn: EngineFn | None = None,
                 plan_fn: Callable[[dict], Plan] | None = None,
                 config_source: Callable[[], Mapping[str, Any]] | None = None):
        super().__init__(parent)
        self.engine_fn = engine_fn or default_train
        self.plan_fn = plan_fn or default_plan
        self.config_source = config_source
        self.state = "idle"            # idle | checking | running | stopping
        self.worker: TrainingWorker | None = None
        self.last_plan: Plan | None = None
        self.last_finished: Finished | None = None
        self._pending_warnings: list[Problem] = []
        self._build()

    def _build(self) -> None:
        self.banner = Banner(self)

        self.start_button = QPushButton(START_TEXT, self)
        self.start_button.setObjectName("startButton")
        bold = self.start_button.font()
        bold.setBold(True)
        self.start_button.setFont(bold)
        self.start_button.setMinimumWidth(150)
        self.start_button.setMinimumHeight(32)
        self.start_button.clicked.connect(self._start_or_stop)
        self.save_button = QPushButton("Save now", self)
        self.save_button.setToolTip("Write the LoRA as it is now, without stopping")
        self.save_button.clicked.connect(self.save_now)
        self.sample_button = QPushButton("Sample now", self)
        self.sample_button.setToolTip("Generate the sample prompts at the next step")
        self.sample_button.clicked.connect(self.sample_now)
        self.status_label = QLabel("Ready. Set up the Dataset and Training tabs, then start.", self)
        self.status_label.setWordWrap(True)
        f = self.status_label.font()
        f.setPointSizeF(f.pointSizeF() * 1.08)
        self.status_label.setFont(f)

        buttons = QHBoxLayout()
        buttons.setSpacing(8)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.sample_button)
        buttons.addSpacing(12)
        buttons.addWidget(self.status_label, 1)

        self.step_bar = QProgressBar(self)
        self.epoch_bar = QProgressBar(self)
        self._reset_bars()
        self.speed_label = QLabel("—", self)
        self.elapsed_label = QLabel("—", self)
        self.eta_label = QLabel("—", self)
        self.loss_label = QLabel("—", self)
        stats = QGridLayout()
        stats.setHorizontalSpacing(10)
        stats.setVerticalSpacing(4)
        stats.addWidget(QLabel("Steps", self), 0, 0)
        stats.addWidget(self.step_bar, 0, 1)
        stats.addWidget(QLabel("Epochs", self), 1, 0)
        stats.addWidget(self.epoch_bar, 1, 1)
        stats.setColumnStretch(1, 1)
        numbers = QGridLayout()
        numbers.setHorizontalSpacing(8)
        for i, (name, lab) in enumerate((("Speed", self.speed_label), ("Elapsed", self.elapsed_label),
                                         ("Remaining", self.eta_label), ("Avg loss", self.loss_label))):
            cap = QLabel(name, self)
            cap.setStyleSheet("color: palette(placeholder-text);")
            lab.setMinimumWidth(80)
            numbers.addWidget(cap, i // 2, (i % 2) * 2)
            numbers.addWidget(lab, i // 2, (i % 2) * 2 + 1)
        progress = QHBoxLayout()
        progress.addLayout(stats, 3)
        progress.addSpacing(16)
        progress.addLayout(numbers, 1)

        self.charts = LiveCharts(self)
        self.gallery = SampleGallery(self)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setFont(QFont("monospace"))
        self.plan_view = QPlainTextEdit(self)
        self.plan_view.setReadOnly(True)
        self.plan_view.setFont(QFont("monospace"))
        self.plan_view.setPlaceholderText("The plan of the current run (images, steps, buckets) appears here.")
        self.bottom = QTabWidget(self)
        self.bottom.addTab(self.gallery, "Samples")
        self.bottom.addTab(self.log, "Log")
        self.bottom.addTab(self.plan_view, "Plan")
        self.quality = QualityView(self)
        self.bottom.addTab(self.quality, "Quality")
        self.gallery.count_changed.connect(
            lambda n: self.bottom.setTabText(0, f"Samples ({n})" if n else "Samples"))

        self.splitter = stacked_splitter(self, self.charts, self.bottom, (5, 4))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(8)
        layout.addWidget(self.banner)
        layout.addLayout(buttons)
        layout.addLayout(progress)
        layout.addWidget(self.splitter, 1)
        self._update_buttons()

    # -- state ----------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.state in ("running", "stopping")

    def is_busy(self) -> bool:
        return self.state != "idle"

    def _set_state(self, state: str) -> None:
        was_running = self.is_running()
        self.state = state
        self._update_buttons()
        if was_running != self.is_running():
            self.running_changed.emit(self.is_running())

    def _update_buttons(self) -> None:
        text = {"idle": START_TEXT, "checking": CHECKING_TEXT, "running": STOP_TEXT, "stopping": STOPPING_TEXT}
        self.start_button.setText(text[self.state])
        self.start_button.setEnabled(self.state in ("idle", "running"))
        self.start_button.setProperty("running", self.state == "running")
        running = self.state == "running"
        self.save_button.setEnabled(running)
        self.sample_button.setEnabled(running)

    def _start_or_stop(self) -> None:
        if self.state == "idle":
            self.start()
        elif self.state == "running":
            self.stop()

    # -- starting -------------------------------------------------------------------------------------

    def check_config(self, raw: Mapping[str, Any]) -> tuple[dict, list[Problem], list[Problem]]:
        """(complete config, errors, warnings) for *raw* values from the form."""
        cfg, problems = check_values(raw)
        errs = errors(problems)
        for param in missing_required(raw):
            errs.append(Problem(param.key, "is needed to start training; set it on the Training tab", ""))
        warns = [p for p in problems if p.severity != "error"]
        return cfg, errs, warns

    def start(self) -> bool:
        """Check the settings, then plan the run in the background. Returns False if it did not get that far."""
        if self.state != "idle":
            return False
        raw = dict(self.config_source()) if self.config_source else {}
        cfg, errs, warns = self.check_config(raw)
        if errs:
            lines = "".join(f"<br>• {html.escape(problem_text(p))}" for p in errs[:8])
            more = f"<br>… and {len(errs) - 8} more" if len(errs) > 8 else ""
            self.banner.show_message("error", f"<b>Fix {len(errs)} setting(s) before training:</b>{lines}{more}",
                                     "Show", lambda: self.problems_found.emit(errs))
            self.status_label.setText("Not started: some settings need fixing.")
            self.problems_found.emit(errs)
            return False
        self.banner.hide()
        self._set_state("checking")
        self.status_label.setText("Checking the dataset and settings…")
        self._pending_warnings = warns
        run_task(self.plan_fn, cfg, on_done=lambda plan, cfg=cfg: self._plan_ready(cfg, plan),
                 on_error=self._plan_failed, owner=self)
        return True

    def _plan_failed(self, exc: BaseException) -> None:
        self._set_state("idle")
        if isinstance(exc, PatinaError):
            msg = str(exc)
        else:
            import traceback
            self._log("".join(traceback.format_exception(exc)).rstrip(), "warning")
            msg = f"Could not check the run: {type(exc).__name__}: {exc}"
        self.status_label.setText("Not started.")
        self.banner.show_message("error", "<b>The run cannot start.</b><br>" + html.escape(msg).replace("\n", "<br>"))

    def _plan_ready(self, cfg: dict, plan: Plan) -> None:
        self.last_plan = plan
        self.plan_view.setPlainText(getattr(plan, "text", "") or "")
        dlg = PlanDialog(plan, self._pending_warnings, self.window())
        answer = dlg.exec()
        if answer == PlanDialog.FIX and dlg.chosen_fix:
            self._set_state("idle")
            self.fix_requested.emit(dict(dlg.chosen_fix))
            self.status_label.setText("Setting changed; checking again…")
            QTimer.singleShot(0, self.start)  # plan again with the fixed setting
            return
        if answer != QDialog.DialogCode.Accepted or dlg.blocking:
            self._set_state("idle")
            self.status_label.setText("Not started: fix the problems shown in the plan." if dlg.blocking
                                      else "Not started.")
            return
        target = output_file(cfg, plan)
        if target is not None and target.exists():
            answer = QMessageBox.question(
                self.window(), "Overwrite the LoRA file?",
                f"{target}\nalready exists. Training will replace it only when the run finishes (and per-epoch "
                "files with the same name). If you stop the run, or it fails, this file is left as it is and what "
                f"was trained is saved as {target.stem}-step<N>.safetensors.\n\nReplace it when the run finishes? "
                "Choose No to change the output name first.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                self._set_state("idle")
                self.status_label.setText("Not started: change the output name or folder, or allow overwriting.")
                return
        self._launch(cfg, plan)

    def _launch(self, cfg: dict, plan: Plan | None) -> None:
        self.reset_view()
        self.charts.set_waiting(True)
        if plan is not None:
            self.step_bar.setRange(0, max(1, int(plan.total_steps)))
            self.epoch_bar.setRange(0, max(1, int(plan.epochs)))
        self.worker = TrainingWorker(cfg, self.engine_fn, resume=cfg.get("resume") or None)
        self.worker.event.connect(self.handle_event)
        self.worker.done.connect(self._on_done)
        self._set_state("running")
        self.status_label.setText("Starting…")
        self._log("Training started.", "status")
        self.worker.start()

    def run_queued(self, cfg: dict, resume: str | None, name: str) -> bool:
        """Start a run of the training queue: its snapshot was checked when it was queued, so no plan dialog;
        problems found now end the run as failed. False if a run is already going on."""
        if self.state != "idle":
            return False
        self._launch(dict(cfg, resume=resume or ""), None)
        self.status_label.setText(f"Queue: {name} — starting…")
        self._log(f"Queue run: {name}" + (f" (continuing from {resume})" if resume else ""), "status")
        return True

    def reset_view(self) -> None:
        self.charts.clear()
        self.gallery.clear()
        self.log.clear()
        self.bottom.setTabText(1, "Log")
        self.quality.clear()
        self.bottom.setTabText(self.bottom.indexOf(self.quality), "Quality")
        self.banner.hide()
        self._reset_bars(running=True)
        for lab in (self.speed_label, self.elapsed_label, self.eta_label, self.loss_label):
            lab.setText("—")

    def _reset_bars(self, running: bool = False) -> None:
        for bar, fmt in ((self.step_bar, "step %v / %m"), (self.epoch_bar, "epoch 1 of %m")):
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setTextVisible(True)
            bar.setFormat(fmt if running else "no run yet")

    # -- commands -------------------------------------------------------------------------------------

    def stop(self) -> None:
        if self.state != "running" or self.worker is None:
            return
        self.worker.request_stop()
        self._set_state("stopping")
        self.status_label.setText("Stopping at the end of this step; what was trained is being saved…")
        self._log("Stop requested.", "status")

    def save_now(self) -> None:
        if self.state == "running" and self.worker is not None:
            self.worker.request_save()
            self._log("Save requested: the LoRA is written after the current step.", "status")

    def sample_now(self) -> None:
        if self.state == "running" and self.worker is not None:
            self.worker.request_sample()
            self._log("Samples requested: they are generated after the current step.", "status")

    # -- events ---------------------------------------------------------------------------------------

    @Slot(object)
    def handle_event(self, ev) -> None:
        if isinstance(ev, Metrics):
            self.charts.add_metrics(ev)
            self.loss_label.setText(f"{ev.avg_loss:.4f}")
        elif isinstance(ev, Progress):
            self.step_bar.setRange(0, max(1, ev.total_steps))
            self.step_bar.setValue(min(ev.step, ev.total_steps))
            # ev.epoch is the epoch in progress: the bar counts finished epochs (EpochEnd), the text says
            # which one is running, so step 1 does not read as "epoch 1 complete".
            self.epoch_bar.setRange(0, max(1, ev.total_epochs))
            self.epoch_bar.setValue(max(0, min(ev.epoch - 1, ev.total_epochs)))
            self.epoch_bar.setFormat(f"epoch {ev.epoch} of {ev.total_epochs}")
            self.speed_label.setText(f"{ev.images_per_sec:.2f} img/s")
            self.elapsed_label.setText(format_duration(ev.elapsed_s))
            self.eta_label.setText(format_duration(ev.eta_s) if ev.eta_s is not None else "estimating…")
        elif isinstance(ev, EpochEnd):
            self.charts.add_epoch(ev.step, ev.epoch)
            self.epoch_bar.setValue(min(ev.epoch, self.epoch_bar.maximum()))
            self.epoch_bar.setFormat(f"{ev.epoch} of %m epochs done")
            self._log(f"Epoch {ev.epoch} done at step {ev.step}: average loss {ev.avg_loss:.4f}", "info")
        elif isinstance(ev, Sample):
            self.gallery.add_sample(ev)
        elif isinstance(ev, Quality):
            self.quality.set_report(ev.report, ev.grid_path)
            best = ev.report.get("best_epoch")
            self.bottom.setTabText(self.bottom.indexOf(self.quality),
                                   f"Quality (best: epoch {best})" if best is not None else "Quality")
        elif isinstance(ev, Saved):
            what = "training state" if ev.kind == "state" else "LoRA"
            self._log(f"Saved {what}: {ev.path}", "info")
            if self.state == "running":
                self.status_label.setText(f"Saved {Path(ev.path).name} (step {ev.step}).")
        elif isinstance(ev, Status):
            if self.state != "stopping" or ev.phase in ("saving", "done"):
                self.status_label.setText(ev.text)
            if not _is_partial_count(ev):  # "Caching latents 5/16…" updates the status line, not the log
                self._log(ev.text, "status")
        elif isinstance(ev, Log):
            self._log(ev.text, ev.level)
        elif isinstance(ev, Plan):
            self.last_plan = ev
            self.plan_view.setPlainText(ev.text or "")
            self.step_bar.setRange(0, max(1, ev.total_steps))
            self.epoch_bar.setRange(0, max(1, ev.epochs))
        # Finished never arrives here: the worker delivers it once, through its ``done`` signal (_on_done).

    @Slot(object)
    def _on_done(self, fin: Finished) -> None:
        if self.state not in ("running", "stopping"):
            return
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.wait(5000)
            worker.deleteLater()
        self.last_finished = fin
        self._set_state("idle")
        self.charts.set_waiting(False)
        if fin.status != "finished":
            self.eta_label.setText("—")  # nothing remains of a stopped or failed run
        if fin.status == "finished":
            self.step_bar.setValue(self.step_bar.maximum())
            self.epoch_bar.setValue(self.epoch_bar.maximum())
            self.epoch_bar.setFormat("%v of %m epochs done")
            out = fin.output or ""
            text = "<b>Training finished.</b> " + html.escape(fin.message or "")
            if out and out not in (fin.message or ""):
                text += f"<br>Saved {html.escape(out)}"
            action = (lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(out).parent)))) if out else None
            self.banner.show_message("success", text, "Open folder" if out else "", action)
            self.status_label.setText("Finished.")
        elif fin.status == "stopped":
            # The engine's message already says where it stopped; say it once.
            said = f"step {fin.step}" in (fin.message or "")
            text = ("<b>Training stopped.</b> " if said else f"<b>Training stopped at step {fin.step}.</b> ") \
                + html.escape(fin.message or "")
            if fin.output and fin.output not in (fin.message or ""):
                text += f"<br>Saved {html.escape(fin.output)}"
            out = fin.output or ""
            action = (lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(out).parent)))) if out else None
            self.banner.show_message("info", text, "Open folder" if out else "", action)
            self.status_label.setText("Stopped.")
        else:
            out = fin.output or ""
            action = (lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(out).parent)))) if out else None
            self.banner.show_message("error", "<b>Training failed.</b><br>"
                                     + html.escape(fin.message or "No message.").replace("\n", "<br>"),
                                     "Open folder" if out else "", action)
            self.status_label.setText(f"Failed; what was trained is in {out}." if out
                                      else "Failed. Change the settings and start again.")
        self._log(f"Run {fin.status}: {fin.message}", "warning" if fin.status == "failed" else "status")
        self.finished.emit(fin)

    def _log(self, text: str, level: str = "info") -> None:
        color = {"warning": "#b00020", "status": "#607d8b"}.get(level)
        body = html.escape(text).replace("\n", "<br>").replace("  ", "&nbsp;&nbsp;")
        if level == "warning":
            body = "⚠ " + body
        self.log.appendHtml(f"<span style='color:{color}'>{body}</span>" if color else body)
        if level == "warning":
            self.bottom.setTabText(1, "Log ⚠")
