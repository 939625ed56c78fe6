"""The Monitor tab: start a run, watch it, stop it.

Start checks every setting first (the schema, plus the engine's dry-run :func:`patina.core.train.engine.plan`, run off
the GUI thread), shows the plan in a confirm dialog and asks before overwriting an existing LoRA file.
The run itself happens in a :class:`~patina.gui.worker.TrainingWorker` thread; its events arrive here as queued
signals and feed the live charts (pyqtgraph, imported when the charts are first needed), the progress
bars, the status line, the log and the sample gallery.
"""

from __future__ import annotations

import html
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QFont, QIcon, QPixmap, QTextDocument
from PySide6.QtWidgets import (QApplication, QCheckBox, QDialog, QDialogButtonBox, QFrame, QGridLayout, QHBoxLayout,
                               QLabel, QMessageBox, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea,
                               QSplitter, QStackedLayout, QTabWidget, QToolButton, QVBoxLayout, QWidget)

from patina.core.errors import PatinaError
from patina.core.train.events import EpochEnd, Finished, Log, Metrics, Plan, Progress, Sample, Saved, Status
from patina.core.config.schema import FAMILY_LABELS, Problem, check_values, errors
from patina.gui.param_pages import problem_text
from patina.gui.widgets import Banner, format_number
from patina.gui.tasks import run_task
from patina.gui.worker import EngineFn, TrainingWorker, default_plan, default_train

# Needed before a run can start; the schema allows them empty so that a config can be saved half-done.
REQUIRED_TO_START = ("pretrained_model_name_or_path", "train_data_dir", "output_dir")

START_TEXT = "Start training"
STOP_TEXT = "Stop training"
STOPPING_TEXT = "Stopping…"
CHECKING_TEXT = "Checking…"


_COUNT = re.compile(r"(\d+)/(\d+)")


def _is_partial_count(ev: Status) -> bool:
    """A progress line such as "Caching latents 5/16…" that is not the last one."""
    m = _COUNT.search(ev.text)
    return bool(m) and ev.phase == "caching" and m.group(1) != m.group(2)


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


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


def fix_label(fix: Mapping[str, Any]) -> str:
    """Button text for a one-click fix, e.g. "Use AdamW" or "Set Mixed precision to no"."""
    from patina.core.config.schema import BY_KEY

    if len(fix) == 1:
        key, value = next(iter(fix.items()))
        if key in ("optimizer", "xformers"):
            return f"Use {value}"
        label = BY_KEY[key].label if key in BY_KEY else key
        return f"Set {label} to {value}"
    return "Apply the fix"


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

    def _choose_fix(self, fix: dict) -> None:
        self.chosen_fix = fix
        self.done(self.FIX)


# --- charts -----------------------------------------------------------------------------------------------

_LR_NAMES = {"unet": "UNet", "textencoder": "text encoder", "text_encoder": "text encoder",
             "textencoder1": "text encoder 1", "textencoder2": "text encoder 2"}
_LR_COLORS = ["#1565c0", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#ef6c00"]
LOSS_POINT_RGBA = (30, 90, 200, 210)   # per-step loss dots: opaque enough to read at a glance
LOSS_POINT_SIZE = 6
LOSS_AVG_COLOR = "#e65100"


def _legend_entry(color: str, mark: str, name: str) -> str:
    return f"<span style='color:{color}; font-size: 12pt'>{mark}</span>&nbsp;{html.escape(name)}"


def _chart_title(title: str, entries: list[str]) -> str:
    """A chart's title with its legend: outside the plotted area, so it never covers a data point."""
    legend = "&nbsp;&nbsp;&nbsp;".join(entries)
    return (f"<span style='font-size: 11pt; font-weight: 600'>{title}</span>"
            + (f"&nbsp;&nbsp;&nbsp;&nbsp;<span style='font-size: 9pt'>{legend}</span>" if legend else ""))


class LiveCharts(QWidget):
    """Loss (each step as a point + the moving average as a line) and learning rate per parameter group,
    both against the step, with epoch boundaries as dashed vertical lines. Legends sit in the chart titles.

    Until the first step there is no chart, only a short note (no empty axes). pyqtgraph is imported on a
    pool thread the first time the charts are shown, and the two plots are then built one per event-loop
    turn, so that opening the Monitor tab never freezes the window."""

    REDRAW_MS = 250
    EMPTY_TEXT = "No run yet.\nThe loss and learning-rate charts appear here from the first training step."
    WAITING_TEXT = "Waiting for the first training step…\nThe charts appear here as soon as it is done."

    def __init__(self, parent=None):
        super().__init__(parent)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.avg_losses: list[float] = []
        self.lr_steps: list[int] = []
        self.lrs: dict[str, list[float]] = {}
        self.epoch_marks: list[tuple[int, int]] = []
        self._pg = None
        self._ready = False           # both plots built
        self._loading = False
        self.lr_lines: dict[str, Any] = {}
        self._epoch_lines: list[Any] = []
        self._stack = QStackedLayout(self)
        self.placeholder = QLabel(self.EMPTY_TEXT, self)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet("color: palette(placeholder-text); border: 1px dashed palette(mid);"
                                       "border-radius: 6px; padding: 24px;")
        self.plots = QWidget(self)
        self._layout = QHBoxLayout(self.plots)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(8)
        self._stack.addWidget(self.placeholder)
        self._stack.addWidget(self.plots)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.REDRAW_MS)
        self._timer.timeout.connect(self.redraw)
        self.setMinimumHeight(200)

    def showing_plots(self) -> bool:
        return self._stack.currentWidget() is self.plots

    def set_waiting(self, waiting: bool) -> None:
        """The note shown before the first step: a run is starting, or none has run yet."""
        self.placeholder.setText(self.WAITING_TEXT if waiting else self.EMPTY_TEXT)

    def showEvent(self, event):  # noqa: N802
        self.load_async()
        super().showEvent(event)

    def load_async(self) -> None:
        """Import pyqtgraph off the GUI thread, then build the plots (one per event-loop turn)."""
        if self._ready or self._loading:
            return
        self._loading = True
        if "pyqtgraph" in sys.modules:
            QTimer.singleShot(0, self._build_next)
        else:
            run_task(importlib.import_module, "pyqtgraph", on_done=lambda _module: self._build_next(),
                     on_error=self._load_failed, owner=self)

    def _load_failed(self, exc: BaseException) -> None:
        self._loading = False
        self.placeholder.setText(f"The charts cannot be shown: {type(exc).__name__}: {exc}\n"
                                 "Run the installer again (packaging/install-*) to repair the environment.")

    def ensure_plots(self) -> None:
        """Build the plots now (blocking); for scripts that render the tab at once."""
        while not self._ready:
            self._build_next()

    def _build_next(self) -> None:
        if self._ready:
            return
        if self._pg is None:
            import pyqtgraph as pg  # noqa: WPS433 - already imported by load_async's pool thread

            self._pg = pg
            pal = self.palette()
            pg.setConfigOptions(antialias=True, background=pal.color(pal.ColorRole.Base),
                                foreground=pal.color(pal.ColorRole.Text))
        if not hasattr(self, "loss_plot"):
            self.loss_plot = self._make_plot("Loss", "loss")
            pg = self._pg
            pi = self.loss_plot.getPlotItem()
            pi.setTitle(_chart_title("Loss", [_legend_entry("rgb(%d,%d,%d)" % LOSS_POINT_RGBA[:3], "●", "per step"),
                                              _legend_entry(LOSS_AVG_COLOR, "━", "moving average")]))
            self.loss_points = pi.plot([], [], pen=None, symbol="o", symbolSize=LOSS_POINT_SIZE, symbolPen=None,
                                       symbolBrush=pg.mkBrush(*LOSS_POINT_RGBA))
            self.loss_line = pi.plot([], [], pen=pg.mkPen(LOSS_AVG_COLOR, width=2.5))
            self.loss_line.setZValue(10)
            QTimer.singleShot(0, self._build_next)   # the second plot in the next turn: no long stall
            return
        self.lr_plot = self._make_plot("Learning rate", "learning rate")
        self.lr_plot.getPlotItem().setTitle(_chart_title("Learning rate", []))
        self._ready = True
        self._loading = False
        for step, epoch in self.epoch_marks:
            self._add_epoch_line(step, epoch)
        self.redraw()

    def _make_plot(self, title: str, ylabel: str):
        pg = self._pg

        class _Axis(pg.AxisItem):
            def tickStrings(self, values, scale, spacing):  # noqa: N802 - "0.00005", not "5e-05"
                return [format_number(v * scale) for v in values]

        plot = pg.PlotWidget(self.plots, axisItems={"left": _Axis("left")})
        pi = plot.getPlotItem()
        pi.setLabel("bottom", "step")
        pi.setLabel("left", ylabel)
        pi.showGrid(x=True, y=True, alpha=0.18)
        pi.getAxis("left").enableAutoSIPrefix(False)
        pi.setMenuEnabled(False)
        pi.setDownsampling(auto=True, mode="peak")
        pi.setClipToView(True)
        plot.setMinimumWidth(260)
        self._layout.addWidget(plot, 1)
        return plot

    def clear(self) -> None:
        self.steps.clear()
        self.losses.clear()
        self.avg_losses.clear()
        self.lr_steps.clear()
        self.lrs.clear()
        self.epoch_marks.clear()
        if self._ready:
            for line in self._epoch_lines:
                self.loss_plot.removeItem(line[0])
                self.lr_plot.removeItem(line[1])
            self._epoch_lines.clear()
            for item in self.lr_lines.values():
                self.lr_plot.removeItem(item)
            self.lr_lines.clear()
        self.redraw()

    def add_metrics(self, m: Metrics) -> None:
        self.steps.append(m.step)
        self.losses.append(float(m.loss))
        self.avg_losses.append(float(m.avg_loss))
        if m.lrs:
            self.lr_steps.append(m.step)
            n = len(self.lr_steps)
            for group, lr in m.lrs.items():
                series = self.lrs.setdefault(str(group), [float("nan")] * (n - 1))
                series.append(float(lr))
            for series in self.lrs.values():
                if len(series) < n:
                    series.append(float("nan"))
        self._schedule()

    def add_epoch(self, step: int, epoch: int) -> None:
        self.epoch_marks.append((step, epoch))
        if self._ready:
            self._add_epoch_line(step, epoch)

    def _add_epoch_line(self, step: int, epoch: int) -> None:
        pg = self._pg
        pen = pg.mkPen((120, 120, 120, 160), width=1, style=Qt.PenStyle.DashLine)
        a = pg.InfiniteLine(pos=step, angle=90, pen=pen, label=f"epoch {epoch}",
                            labelOpts={"position": 0.97, "color": (110, 110, 110), "anchors": [(1, 0), (1, 0)]})
        b = pg.InfiniteLine(pos=step, angle=90, pen=pen)
        self.loss_plot.addItem(a, ignoreBounds=True)
        self.lr_plot.addItem(b, ignoreBounds=True)
        self._epoch_lines.append((a, b))

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        has_data = bool(self.steps)
        self._stack.setCurrentWidget(self.plots if has_data and self._ready else self.placeholder)
        if not self._ready:
            return
        self.loss_points.setData(self.steps, self.losses)
        self.loss_line.setData(self.steps, self.avg_losses)
        entries = []
        for i, (group, series) in enumerate(self.lrs.items()):
            color = _LR_COLORS[i % len(_LR_COLORS)]
            item = self.lr_lines.get(group)
            if item is None:
                item = self.lr_plot.getPlotItem().plot([], [], pen=self._pg.mkPen(color, width=2), connect="finite")
                self.lr_lines[group] = item
            item.setData(self.lr_steps, series)
            entries.append(_legend_entry(color, "━", _LR_NAMES.get(group.lower(), group)))
        self.lr_plot.getPlotItem().setTitle(_chart_title("Learning rate", entries))
        if has_data:
            for plot in (self.loss_plot, self.lr_plot):
                plot.getPlotItem().enableAutoRange()

    def legend_text(self, which: str = "loss") -> str:
        """The legend (in the chart's title) as plain text."""
        if not self._ready:
            return ""
        plot = self.loss_plot if which == "loss" else self.lr_plot
        doc = QTextDocument()
        doc.setHtml(plot.getPlotItem().titleLabel.text)
        return doc.toPlainText()

    def loss_data(self) -> tuple[list, list]:
        """The points the loss chart is drawing (after the next redraw)."""
        if not self._ready:
            return [], []
        x, y = self.loss_points.getData()
        return ([] if x is None else list(x)), ([] if y is None else list(y))


# --- sample gallery ----------------------------------------------------------------------------------------

THUMB = 150
ENLARGE_TO = 512     # the enlarge dialog shows a smaller sample at least about this big (nearest-neighbour)


def _row_title(epoch: int, step: int) -> str:
    if epoch <= 0 and step <= 0:
        return "Before training"
    return f"Epoch {epoch}\nstep {step}"


class ImageDialog(QDialog):
    """One sample, large, with its prompt."""

    def __init__(self, sample: Sample, parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(f"Sample — {_row_title(sample.epoch, sample.step).replace(chr(10), ', ')}")
        layout = QVBoxLayout(self)
        pix = QPixmap(sample.path)
        self.image = QLabel(self)
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        if pix.isNull():
            self.image.setText(f"The image could not be read:\n{sample.path}")
        else:
            screen = (parent.screen() if parent is not None else QApplication.primaryScreen()).availableSize()
            limit = QSize(int(screen.width() * 0.8), int(screen.height() * 0.75))
            self.original_size = (pix.width(), pix.height())
            self.zoom = 1
            if pix.width() > limit.width() or pix.height() > limit.height():
                pix = pix.scaled(limit, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            elif max(pix.width(), pix.height()) < ENLARGE_TO:
                # A tiny sample (a 64-px test run) is enlarged by a whole factor with nearest-neighbour: its
                # pixels stay sharp, and it is never smaller than its thumbnail.
                side = max(pix.width(), pix.height())
                fits = min(limit.width() // max(1, pix.width()), limit.height() // max(1, pix.height()))
                self.zoom = max(1, min(-(-ENLARGE_TO // side), fits))
                if self.zoom > 1:
                    pix = pix.scaled(pix.width() * self.zoom, pix.height() * self.zoom,
                                     Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)
            self.image.setPixmap(pix)
        layout.addWidget(self.image, 1)
        prompt = QLabel(f"<b>Prompt {sample.index + 1}:</b> {html.escape(sample.prompt)}", self)
        prompt.setWordWrap(True)
        prompt.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(prompt)
        size_note = ""
        if getattr(self, "zoom", 1) > 1:
            size_note = f"  ({self.original_size[0]}×{self.original_size[1]} px, shown {self.zoom}× enlarged)"
        path = QLabel(html.escape(sample.path + size_note), self)
        path.setStyleSheet("color: palette(placeholder-text);")
        path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(path)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        open_folder = buttons.addButton("Open folder", QDialogButtonBox.ButtonRole.ActionRole)
        open_folder.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(sample.path).parent))))
        buttons.rejected.connect(self.close)
        layout.addWidget(buttons)


class CompareDialog(QDialog):
    """Two rows of the gallery side by side, one line per prompt."""

    def __init__(self, left: tuple[str, dict[int, Sample]], right: tuple[str, dict[int, Sample]],
                 prompts: Mapping[int, str], parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle("Compare samples")
        outer = QVBoxLayout(self)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        body = QWidget()
        grid = QGridLayout(body)
        grid.setSpacing(10)
        size = 384
        for c, (title, _) in enumerate((left, right)):
            head = QLabel(f"<b>{html.escape(title.replace(chr(10), ', '))}</b>", body)
            head.setAlignment(Qt.AlignmentFlag.AlignCenter)
            grid.addWidget(head, 0, c + 1)
        indices = sorted(set(left[1]) | set(right[1]))
        for r, idx in enumerate(indices, start=1):
            p = QLabel(html.escape(prompts.get(idx, f"Prompt {idx + 1}")), body)
            p.setWordWrap(True)
            p.setMaximumWidth(200)
            p.setAlignment(Qt.AlignmentFlag.AlignTop)
            grid.addWidget(p, r, 0)
            for c, (_, samples) in enumerate((left, right)):
                lab = QLabel(body)
                lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
                s = samples.get(idx)
                pix = QPixmap(s.path) if s else QPixmap()
                if pix.isNull():
                    lab.setText("—")
                else:
                    lab.setPixmap(pix.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation))
                grid.addWidget(lab, r, c + 1)
        scroll.setWidget(body)
        outer.addWidget(scroll)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.close)
        outer.addWidget(buttons)
        self.resize(1040, 760)


class SampleGallery(QWidget):
    """Samples as they arrive: one row per sampling moment (epoch/step), one column per prompt."""

    count_changed = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[tuple[int, int]] = []                    # (epoch, step) in arrival order
        self.samples: dict[tuple[int, int], dict[int, Sample]] = {}
        self.prompts: dict[int, str] = {}
        self.checks: dict[tuple[int, int], QCheckBox] = {}
        self.thumbs: dict[tuple[tuple[int, int], int], QToolButton] = {}
        self._headers: dict[int, QLabel] = {}
        top = QHBoxLayout()
        self.hint = QLabel("Samples appear here while training. Tick two rows to compare them side by side; "
                           "click an image to enlarge it.", self)
        self.hint.setStyleSheet("color: palette(placeholder-text);")
        self.hint.setWordWrap(True)
        self.compare_button = QPushButton("Compare selected", self)
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self.compare)
        top.addWidget(self.hint, 1)
        top.addWidget(self.compare_button)
        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.body = QWidget()
        self.grid = QGridLayout(self.body)
        self.grid.setSpacing(8)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.scroll.setWidget(self.body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.scroll, 1)

    def count(self) -> int:
        return sum(len(v) for v in self.samples.values())

    def clear(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.rows.clear()
        self.samples.clear()
        self.prompts.clear()
        self.checks.clear()
        self.thumbs.clear()
        self._headers.clear()
        self.compare_button.setEnabled(False)
        self.count_changed.emit(0)

    def add_sample(self, s: Sample) -> None:
        key = (int(s.epoch), int(s.step))
        if key not in self.samples:
            self.samples[key] = {}
            self.rows.append(key)
            row = len(self.rows)
            check = QCheckBox(_row_title(*key), self.body)
            check.toggled.connect(self._selection_changed)
            self.grid.addWidget(check, row, 0, Qt.AlignmentFlag.AlignTop)
            self.checks[key] = check
        row = self.rows.index(key) + 1
        col = int(s.index) + 1
        if s.index not in self.prompts or s.index not in self._headers:
            self.prompts[s.index] = s.prompt
            head = self._headers.get(s.index)
            if head is None:
                head = QLabel(self.body)
                head.setWordWrap(True)
                head.setFixedWidth(THUMB)
                head.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom)
                self.grid.addWidget(head, 0, col)
                self._headers[s.index] = head
            short = s.prompt if len(s.prompt) <= 60 else s.prompt[:57] + "…"
            head.setText(f"<b>{s.index + 1}.</b> {html.escape(short)}")
            head.setToolTip(s.prompt)
        self.samples[key][int(s.index)] = s
        button = self.thumbs.get((key, col))
        if button is None:
            button = QToolButton(self.body)
            button.setAutoRaise(True)
            button.setIconSize(QSize(THUMB, THUMB))
            button.setFixedSize(THUMB + 8, THUMB + 8)
            self.grid.addWidget(button, row, col)
            self.thumbs[(key, col)] = button
            button.clicked.connect(lambda _=False, key=key, idx=int(s.index): self.enlarge(self.samples[key][idx]))
        pix = QPixmap(s.path)
        if pix.isNull():
            button.setText("(missing)")
        else:
            button.setIcon(QIcon(pix.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.SmoothTransformation)))
        button.setToolTip(f"{s.prompt}\n{s.path}\nClick to enlarge")
        self.count_changed.emit(self.count())

    def enlarge(self, s: Sample) -> ImageDialog:
        dlg = ImageDialog(s, self.window())
        dlg.show()
        return dlg

    def selected_rows(self) -> list[tuple[int, int]]:
        return [k for k in self.rows if self.checks[k].isChecked()]

    def _selection_changed(self) -> None:
        n = len(self.selected_rows())
        self.compare_button.setEnabled(n == 2)
        self.compare_button.setToolTip("" if n == 2 else "Tick exactly two rows to compare them")

    def compare(self) -> CompareDialog | None:
        sel = self.selected_rows()
        if len(sel) != 2:
            return None
        a, b = sel
        dlg = CompareDialog((_row_title(*a), self.samples[a]), (_row_title(*b), self.samples[b]), self.prompts,
                            self.window())
        dlg.show()
        return dlg


# --- the tab ------------------------------------------------------------------------------------------------

class MonitorTab(QWidget):
    """Start/stop, live progress, charts, samples and log of one training run at a time."""

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
        self.gallery.count_changed.connect(
            lambda n: self.bottom.setTabText(0, f"Samples ({n})" if n else "Samples"))

        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.charts)
        split.addWidget(self.bottom)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 4)
        split.setChildrenCollapsible(False)
        self.splitter = split

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(8)
        layout.addWidget(self.banner)
        layout.addLayout(buttons)
        layout.addLayout(progress)
        layout.addWidget(split, 1)
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
        for key in REQUIRED_TO_START:
            if not str(raw.get(key, "")).strip():
                errs.append(Problem(key, "is needed to start training; set it on the Training tab", ""))
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

    def reset_view(self) -> None:
        self.charts.clear()
        self.gallery.clear()
        self.log.clear()
        self.bottom.setTabText(1, "Log")
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
        elif isinstance(ev, Finished):
            self._on_done(ev)

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
