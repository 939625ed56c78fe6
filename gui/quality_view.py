"""The Monitor tab's quality report: the per-epoch table (:func:`patina.core.train.quality.table`), the best
epoch and why, the report's prompts and the grid image (rows = epochs, columns = prompts × LoRA weights).

It shows a note until the first :class:`~patina.core.train.events.Quality` event of a run arrives.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QAbstractScrollArea, QHeaderView, QLabel, QScrollArea, QSplitter, QStackedLayout,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

EMPTY_TEXT = ("The quality report appears here after the first epoch: how much the LoRA changes its trigger "
              "prompts, how far other prompts drift, the validation loss and the best epoch so far.\n"
              "Turn it on or off on the Training tab (Samples page, “Quality report every epoch”).")
BEST_TINT = "#fff1c1"
BEST_TEXT = "#3d2e00"

# What each column means (wording of patina.core.train.quality), matched by the start of the header.
COLUMN_HELP = (
    ("Epoch", "The epoch the numbers were measured after. ★ marks the best epoch."),
    ("Val. loss", "Validation loss: the diffusion loss on a fixed set of (image, noise, timestep) triples — "
                  "held-out images when Validation split > 0, else the training images with fixed noise. "
                  "Lower is better; rising again can mean overfitting."),
    ("Trigger change", "Trigger change: mean absolute pixel difference (0–1) between trigger-prompt images "
                       "with the LoRA and without it — how much the LoRA changes what it was trained for."),
    ("Prior drift", "Prior drift: the same difference for class prompts (prompts without the trigger word) — "
                    "how much the LoRA leaks into everything else. Low is good."),
    ("Fidelity @0", "Concept fidelity of the base model (LoRA weight 0): what the judge sees without the LoRA."),
    ("Fidelity", "Concept fidelity: share of trigger-prompt images the judge calls the trained concept."),
    ("Preservation", "Preservation: the judge's shape and colour accuracy on class prompts with the LoRA, "
                     "relative to the base model's (100 % = nothing else changed)."),
)
EXPLAIN = ("Numbers at the highest LoRA weight. Trigger change: how much the LoRA changes its trigger prompts "
           "(higher = learned more); prior drift: how much other prompts change (lower is better). "
           "Hover a column header for details.")


def column_help(header: str) -> str:
    for start, text in COLUMN_HELP:
        if header.startswith(start):
            return text
    return ""


class QualityView(QWidget):
    """The quality report of the current run; :meth:`set_report` on every Quality event, :meth:`clear` for a new
    run."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.report: dict | None = None
        self.grid_path: str | None = None
        self.best_row: int | None = None

        self.placeholder = QLabel(EMPTY_TEXT, self)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet("color: palette(placeholder-text); border: 1px dashed palette(mid);"
                                       "border-radius: 6px; padding: 24px;")

        self.table = QTableWidget(self)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        self.explain_label = QLabel(EXPLAIN, self)
        self.explain_label.setWordWrap(True)
        self.explain_label.setStyleSheet("color: palette(placeholder-text);")
        self.best_label = QLabel(self)
        self.best_label.setWordWrap(True)
        self.best_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.legend_label = QLabel(self)
        self.legend_label.setWordWrap(True)
        self.legend_label.setTextFormat(Qt.TextFormat.RichText)
        self.legend_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.left = left = QWidget(self)
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.setSpacing(6)
        ll.addWidget(self.table)
        ll.addWidget(self.best_label)
        ll.addWidget(self.explain_label)
        legend_scroll = QScrollArea(left)
        legend_scroll.setWidgetResizable(True)
        legend_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        legend_scroll.setWidget(self.legend_label)
        ll.addWidget(legend_scroll, 1)

        self.grid_label = QLabel(self)
        self.grid_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.grid_label.setToolTip("Rows: epochs. Columns: the report's prompts (P1T = prompt 1, trigger; "
                                   "C = class) at each LoRA weight (w 0 = the base model). First seed of each.")
        self.grid_scroll = QScrollArea(self)
        self.grid_scroll.setWidget(self.grid_label)
        self.grid_scroll.setWidgetResizable(False)   # 1:1, scrolled when wider than the view
        self.grid_scroll.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)

        self.content = QSplitter(Qt.Orientation.Horizontal, self)
        self.content.addWidget(left)
        self.content.addWidget(self.grid_scroll)
        self.content.setStretchFactor(0, 0)   # the table as wide as its columns; the grid gets the rest
        self.content.setStretchFactor(1, 1)
        self._sized = False   # True once the user has moved the splitter
        self.content.setChildrenCollapsible(False)
        self.content.splitterMoved.connect(self._user_sized)

        self._stack = QStackedLayout(self)
        self._stack.addWidget(self.placeholder)
        self._stack.addWidget(self.content)

    def has_report(self) -> bool:
        return self.report is not None

    def clear(self) -> None:
        """Back to the note: a new run has no report yet."""
        self.report = None
        self.grid_path = None
        self.best_row = None
        self._sized = False
        self.table.clear()
        self.table.setRowCount(0)
        self.table.setColumnCount(0)
        self.best_label.clear()
        self.legend_label.clear()
        self.grid_label.clear()
        self.grid_label.resize(0, 0)
        self._stack.setCurrentWidget(self.placeholder)

    def set_report(self, report: dict, grid_path: str | None) -> None:
        from patina.core.train.quality import table  # no torch: quality.py imports it only inside functions

        header, rows = table(report)
        self.report = report
        self.grid_path = grid_path
        self._fill_table(header, rows)
        best = report.get("best_epoch")
        reason = report.get("best_reason") or ""
        self.best_label.setText(f"★ Best so far: epoch {best} — {reason}" if best is not None else
                                "No best epoch yet.")
        self._fill_legend(report)
        self._load_grid(grid_path)
        self._stack.setCurrentWidget(self.content)
        self._fit_panels()

    def _fit_panels(self) -> None:
        """The table as wide as its columns (at most 60 %), the grid the rest — until the user moves the
        splitter; then their position stays for the run."""
        total = self.content.width()
        if self._sized or self.report is None or not self.content.isVisible() or total < 200:
            return
        self.table.resizeColumnsToContents()
        wanted = (self.table.horizontalHeader().length() + 2 * self.table.frameWidth()
                  + self.table.verticalScrollBar().sizeHint().width() + 8)
        left = min(max(wanted, self.table.sizeHint().width() + 8), int(total * 0.6))
        self.content.setSizes([left, total - left])

    def _user_sized(self, *_args) -> None:
        self._sized = True

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._fit_panels()

    def showEvent(self, event):  # noqa: N802
        super().showEvent(event)
        self._fit_panels()

    def _fill_table(self, header: list[str], rows: list[list[str]]) -> None:
        self.table.clear()
        self.table.setColumnCount(len(header))
        self.table.setRowCount(len(rows))
        for c, name in enumerate(header):
            item = QTableWidgetItem(name)
            item.setToolTip(column_help(name))
            self.table.setHorizontalHeaderItem(c, item)
        self.best_row = None
        for r, row in enumerate(rows):
            best = row[0].endswith("★")
            if best:
                self.best_row = r
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter if c else
                                      Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
                if best:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                    item.setBackground(QBrush(QColor(BEST_TINT)))
                    item.setForeground(QBrush(QColor(BEST_TEXT)))
                    item.setToolTip(self.report.get("best_reason") or "")
                self.table.setItem(r, c, item)
        self.table.setCurrentCell(-1, -1)   # no focus frame over the best row's tint
        if rows:
            self.table.scrollToItem(self.table.item(len(rows) - 1, 0))

    def _fill_legend(self, report: dict) -> None:
        weights = ", ".join(f"{float(w):g}" for w in report.get("weights") or [])
        lines = []
        for p in report.get("prompts") or []:
            kind = p.get("kind", "")
            tag = kind[:1].upper()
            lines.append(f"<b>{html.escape(str(p.get('id', '')))}{tag}</b> ({html.escape(kind)}): "
                         f"{html.escape(str(p.get('prompt', '')))}")
        head = "<b>Prompts</b> — T: trigger prompt, C: class prompt (without the trigger word)"
        if weights:
            head += f" · LoRA weights {html.escape(weights)} (0 = the base model)"
        self.legend_label.setText(head + "<br>" + "<br>".join(lines))

    def _load_grid(self, path: str | None) -> None:
        # QImage, not QPixmap(path): QPixmap's cache would keep an older grid written to the same path.
        image = QImage(path) if path else QImage()
        if image.isNull():
            self.grid_label.setPixmap(QPixmap())
            self.grid_label.setText("No grid image yet." if not path else f"The grid image could not be read:\n{path}")
        else:
            self.grid_label.setPixmap(QPixmap.fromImage(image))
        self.grid_label.adjustSize()
