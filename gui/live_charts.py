"""The Monitor tab's live charts: loss and learning rate against the step (pyqtgraph, imported off the
GUI thread when the charts are first needed)."""

from __future__ import annotations

import html
import importlib
import sys
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QHBoxLayout, QLabel, QStackedLayout, QWidget

from patina.core.train.events import Metrics
from patina.gui.widgets import format_number
from patina.gui.tasks import run_task


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
