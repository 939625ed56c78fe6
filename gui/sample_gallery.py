"""The Monitor tab's sample gallery: the sample images of a run by step and prompt, enlarged or side by
side on click."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Mapping

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QIcon, QPixmap
from PySide6.QtWidgets import (QApplication, QCheckBox, QDialog, QDialogButtonBox, QFrame, QGridLayout, QHBoxLayout,
                               QLabel, QPushButton, QScrollArea, QToolButton, QVBoxLayout, QWidget)

from patina.core.train.events import Sample


THUMB = 150
ENLARGE_TO = 512     # the enlarge dialog shows a smaller sample at least about this big (nearest-neighbour)


def _row_title(epoch: int, step: int) -> str:
    if epoch <= 0 and step <= 0:
        return "Before training"
    return f"Epoch {epoch}\nstep {step}"


class ImageDialog(QDialog):
    """One sample, large, with its prompt (or *caption*, HTML) under it; *title*: the window's title."""

    def __init__(self, sample: Sample, parent=None, *, title: str | None = None, caption: str | None = None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(title or f"Sample — {_row_title(sample.epoch, sample.step).replace(chr(10), ', ')}")
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
        prompt = QLabel(caption or f"<b>Prompt {sample.index + 1}:</b> {html.escape(sample.prompt)}", self)
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
    """Samples as they arrive: one row per sampling moment (epoch/step), one column per prompt.

    Other grids reuse it: *row_title* names a row from its (epoch, step) key, *column_title* gives a column's
    header (HTML) from its index and the sample's prompt text, *hint* replaces the text above the grid."""

    count_changed = Signal(int)

    def __init__(self, parent=None, *, row_title=None, column_title=None, hint: str | None = None):
        super().__init__(parent)
        self.row_title = row_title or (lambda key: _row_title(*key))
        self.column_title = column_title or (
            lambda index, prompt: f"<b>{index + 1}.</b> {html.escape(prompt if len(prompt) <= 60 else prompt[:57] + '…')}")
        self.rows: list[tuple[int, int]] = []                    # (epoch, step) in arrival order
        self.samples: dict[tuple[int, int], dict[int, Sample]] = {}
        self.prompts: dict[int, str] = {}
        self.checks: dict[tuple[int, int], QCheckBox] = {}
        self.thumbs: dict[tuple[tuple[int, int], int], QToolButton] = {}
        self._headers: dict[int, QLabel] = {}
        top = QHBoxLayout()
        self.hint = QLabel(hint or "Samples appear here while training. Tick two rows to compare them side by "
                           "side; click an image to enlarge it.", self)
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
            check = QCheckBox(self.row_title(key), self.body)
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
            head.setText(self.column_title(int(s.index), s.prompt))
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
        key = (int(s.epoch), int(s.step))
        dlg = ImageDialog(s, self.window(), **(self.dialog_text(s, key) or {}))
        dlg.show()
        return dlg

    def dialog_text(self, s: Sample, key: tuple[int, int]) -> dict | None:
        """Title and caption of the enlarge dialog of *s* (None: the Monitor's)."""
        return None

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
        dlg = CompareDialog((self.row_title(a), self.samples[a]), (self.row_title(b), self.samples[b]), self.prompts,
                            self.window())
        dlg.show()
        return dlg
