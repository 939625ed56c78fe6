"""Small widgets of the caption editor: a wrapping flow layout, tag chips and the image preview."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import QLabel, QLayout, QSizePolicy, QToolButton, QWidget

ERROR_COLOR = "#c62828"
MUTED_STYLE = "color: palette(placeholder-text);"


class FlowLayout(QLayout):
    """Lays children out left to right, wrapping to new rows (for tag chips)."""

    def __init__(self, parent=None, spacing: int = 4):
        super().__init__(parent)
        self._items = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item):  # noqa: N802 (Qt name)
        self._items.append(item)

    def count(self):
        return len(self._items)

    def itemAt(self, i):  # noqa: N802
        return self._items[i] if 0 <= i < len(self._items) else None

    def takeAt(self, i):  # noqa: N802
        return self._items.pop(i) if 0 <= i < len(self._items) else None

    def expandingDirections(self):  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self):  # noqa: N802
        return True

    def heightForWidth(self, width):  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect):  # noqa: N802
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self):  # noqa: N802
        return self.minimumSize()

    def minimumSize(self):  # noqa: N802
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _arrange(self, rect: QRect, move: bool) -> int:
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, row_h = area.x(), area.y(), 0
        for item in self._items:
            if item.isEmpty():   # hidden widgets take no room
                continue
            hint = item.sizeHint()
            if x + hint.width() > area.right() + 1 and row_h > 0:
                x, y = area.x(), y + row_h + self._spacing
                row_h = 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            row_h = max(row_h, hint.height())
        return y + row_h - rect.y() + m.bottom()


CHIP_STYLE = """
QToolButton[chip="true"] { border: 1px solid palette(mid); border-radius: 10px; padding: 2px 8px;
                           background: palette(base); }
QToolButton[chip="true"]:checked { background: palette(highlight); color: palette(highlighted-text);
                                   border-color: palette(highlight); }
QToolButton[chip="true"]:hover { border-color: palette(highlight); }
"""


def make_chip(text: str, checked: bool, tip: str, parent=None, strike_unchecked: bool = True) -> QToolButton:
    chip = QToolButton(parent)
    chip.setText(text.replace("&", "&&"))
    chip.setProperty("chip", True)
    chip.setProperty("tag", text)
    chip.setCheckable(True)
    chip.setChecked(checked)
    chip.setToolTip(tip)
    chip.setCursor(Qt.CursorShape.PointingHandCursor)
    chip.setFocusPolicy(Qt.FocusPolicy.TabFocus)
    if strike_unchecked and not checked:
        font = chip.font()
        font.setStrikeOut(True)
        chip.setFont(font)
    return chip


class ChipArea(QWidget):
    """A wrapping row of chips, rebuilt from a list of (tag, checked, tooltip)."""

    toggled = Signal(str, bool)   # tag, now checked

    def __init__(self, empty_text: str = "", parent=None, strike_unchecked: bool = True):
        super().__init__(parent)
        self.strike_unchecked = strike_unchecked   # "removed" chips are struck through; quick tags are not
        self.flow = FlowLayout(self)
        self._empty = QLabel(empty_text, self)
        self._empty.setStyleSheet(MUTED_STYLE)
        self.flow.addWidget(self._empty)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)

    def chips(self) -> list[QToolButton]:
        return [w for w in self.findChildren(QToolButton) if w.property("chip")]

    def chip(self, tag: str) -> QToolButton | None:
        return next((c for c in self.chips() if c.property("tag") == tag), None)

    def set_chips(self, chips: list[tuple[str, bool, str]]) -> None:
        current = [(c.property("tag"), c.isChecked(), c.toolTip()) for c in self.chips()]
        if current == chips:
            return
        while self.flow.count():
            w = self.flow.takeAt(0).widget()
            if w is not None and w is not self._empty:
                w.hide()
                w.setParent(None)   # gone now, not at the next event-loop turn
                w.deleteLater()
        self._empty.setVisible(not chips)
        self.flow.addWidget(self._empty)
        for tag, checked, tip in chips:
            chip = make_chip(tag, checked, tip, self, self.strike_unchecked)
            chip.clicked.connect(lambda on, t=tag: self.toggled.emit(t, on))
            chip.ensurePolished()  # the style sheet's padding must count in the size the flow uses
            self.flow.addWidget(chip)
        self.updateGeometry()


class PreviewLabel(QLabel):
    """Shows a pixmap scaled to fit, keeping its aspect ratio, whatever the label's size. An image shown
    larger than it is gets a visible mark ("Enlarged 6× — 64×64 px"), and from 2× it is enlarged with
    nearest-neighbour so that its real pixels show instead of a blur."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self._actual: tuple[int, int] | None = None   # the image's real size, when the pixmap is the real image
        self.enlarged = 1.0                           # how much the shown image is enlarged (1.0: not)
        self.mark_text = ""
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setMinimumSize(120, 120)
        self.setWordWrap(True)

    def set_image(self, pixmap: QPixmap | None, text: str = "", actual_size: tuple[int, int] | None = None) -> None:
        """*actual_size*: the image's real (w, h) when *pixmap* is the image itself, not a stand-in thumbnail;
        only then is an enlargement marked."""
        self._pixmap = pixmap if pixmap is not None and not pixmap.isNull() else None
        self._actual = actual_size
        if self._pixmap is None:
            self.clear()
            self.setText(text)
        self._rescale()

    def has_image(self) -> bool:
        return self._pixmap is not None

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._pixmap is None:
            return
        dpr = self.devicePixelRatioF()
        fit = self._pixmap.size().scaled(self.size() * dpr, Qt.AspectRatioMode.KeepAspectRatio)
        factor = 1.0
        if self._actual and self._actual[0] > 0:
            factor = fit.width() / dpr / self._actual[0]
        mode = (Qt.TransformationMode.FastTransformation if factor >= 2 else
                Qt.TransformationMode.SmoothTransformation)
        scaled = self._pixmap.scaled(self.size() * dpr, Qt.AspectRatioMode.KeepAspectRatio, mode)
        self.enlarged = factor if factor > 1.01 else 1.0
        self.mark_text = ""
        if self.enlarged > 1.0:
            w, h = self._actual
            self.mark_text = f"Enlarged {factor:.1f}× — the image is only {w}×{h} px"
            self._paint_mark(scaled, self.mark_text, dpr)
        scaled.setDevicePixelRatio(dpr)
        self.setPixmap(scaled)

    def _paint_mark(self, pixmap: QPixmap, text: str, dpr: float) -> None:
        p = QPainter(pixmap)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = self.font()
        font.setPixelSize(max(10, int(12 * dpr)))
        font.setBold(True)
        p.setFont(font)
        fm = p.fontMetrics()
        pad = int(6 * dpr)
        box = fm.boundingRect(text).adjusted(-pad, -pad // 2, pad, pad // 2)
        box.moveTopLeft(QPoint(pad, pad))
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(180, 95, 0, 225))
        p.drawRoundedRect(box, 4 * dpr, 4 * dpr)
        p.setPen(QColor("white"))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        p.end()


def section_label(text: str) -> QLabel:
    label = QLabel(text)
    font = label.font()
    font.setBold(True)
    label.setFont(font)
    return label
