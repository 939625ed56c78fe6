"""Small reusable Qt widgets for Patina's forms.

* spin boxes and combo boxes that ignore the mouse wheel unless they have focus, so scrolling a long
  page never changes a value by accident;
* a float spin box that shows numbers the way people write them (``0.0001``, ``16``, ``0.5``) and
  accepts ``1e-4``, always with a dot whatever the system locale;
* a path field (line edit + Browse… + drag-and-drop of a file or folder);
* :class:`FieldFrame`, which draws a red border round an invalid editor without restyling it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QValidator
from PySide6.QtWidgets import (QComboBox, QSplitter, QDoubleSpinBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QLineEdit,
                               QMenu, QPushButton, QSizePolicy, QSpinBox, QToolButton, QWidget)

ERROR_COLOR = "#c62828"
WARNING_COLOR = "#9a6200"


# --- wheel guard ---------------------------------------------------------------------------------------

class _WheelGuard:
    """Mixin: the wheel changes the value only when the widget has keyboard focus; otherwise the event
    goes to the parent (the scroll area scrolls)."""

    def _init_wheel_guard(self) -> None:
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the wheel alone never gives focus

    def wheelEvent(self, event):  # noqa: N802 (Qt name)
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class NoWheelSpinBox(_WheelGuard, QSpinBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._init_wheel_guard()


class NoWheelComboBox(_WheelGuard, QComboBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._init_wheel_guard()


def format_number(value: float, *, integer: bool = False) -> str:
    """``0.0001`` not ``1e-04``; ``16`` not ``16.0``; at most 10 significant decimals."""
    if integer:
        return str(int(round(value)))
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    if text in ("", "-0", "0"):  # smaller than 1e-10: keep it visible
        return f"{value:g}"
    return text


_PARTIAL_NUMBER = re.compile(r"^[+-]?(\d*[.,]?\d*)([eE][+-]?\d*)?$")


class FloatSpinBox(_WheelGuard, QDoubleSpinBox):
    """A double spin box with readable numbers and the C decimal point.

    ``integer=True`` makes it hold whole numbers too large for QSpinBox (a 32-bit seed)."""

    def __init__(self, parent=None, *, integer: bool = False):
        super().__init__(parent)
        self._integer = integer
        self._init_wheel_guard()
        self.setDecimals(0 if integer else 10)

    def textFromValue(self, value: float) -> str:  # noqa: N802
        return format_number(value, integer=self._integer)

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(self._clean(text))
        except ValueError:
            return self.value()

    def _clean(self, text: str) -> str:
        text = text.strip()
        prefix, suffix = self.prefix(), self.suffix()
        if prefix and text.startswith(prefix):
            text = text[len(prefix):]
        if suffix and text.endswith(suffix):
            text = text[: -len(suffix)]
        return text.strip().replace(",", ".")

    def validate(self, text: str, pos: int):
        clean = self._clean(text)
        if not _PARTIAL_NUMBER.match(clean):
            return QValidator.State.Invalid, text, pos
        try:
            value = float(clean)
        except ValueError:
            return QValidator.State.Intermediate, text, pos
        if self._integer and not float(value).is_integer():
            return QValidator.State.Intermediate, text, pos
        if value < self.minimum() or value > self.maximum():
            return QValidator.State.Intermediate, text, pos
        return QValidator.State.Acceptable, text, pos

    def fixup(self, text: str) -> str:
        return self.textFromValue(self.value())


# --- invalid marker --------------------------------------------------------------------------------------

class FieldFrame(QWidget):
    """Holds one editor; draws a coloured border round it when marked, leaving the editor's own style
    untouched (a style sheet on a spin box would change its whole look)."""

    def __init__(self, editor: QWidget, parent=None):
        super().__init__(parent)
        self.editor = editor
        self._state = ""  # "" | "error" | "warning"
        layout = QHBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(0)
        layout.addWidget(editor)

    @property
    def state(self) -> str:
        return self._state

    def set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.update()

    def paintEvent(self, event):  # noqa: N802
        super().paintEvent(event)
        if not self._state:
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        color = QColor(ERROR_COLOR if self._state == "error" else WARNING_COLOR)
        painter.setPen(QPen(color, 2))
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(1, 1, -1, -1), 3, 3)


# --- path field -----------------------------------------------------------------------------------------

class PathLineEdit(QLineEdit):
    """A line edit that takes a dropped file or folder (only the kind it wants)."""

    dropped = Signal(str)

    def __init__(self, kind: str = "file", parent=None):
        super().__init__(parent)
        self.kind = kind
        self.setAcceptDrops(True)

    def _local_path(self, mime) -> str | None:
        if not mime.hasUrls():
            return None
        urls = [u for u in mime.urls() if u.isLocalFile()]
        if len(urls) != 1:
            return None
        path = urls[0].toLocalFile()
        is_dir = os.path.isdir(path)
        if self.kind == "dir" and not is_dir:
            return None
        if self.kind == "file" and is_dir:
            return None
        return path

    def dragEnterEvent(self, event):  # noqa: N802
        if self._local_path(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event):  # noqa: N802
        if self._local_path(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event):  # noqa: N802
        path = self._local_path(event.mimeData())
        if not path:
            event.ignore()
            return
        path = os.path.normpath(path)
        self.setText(path)
        self.setFocus()
        self.dropped.emit(path)
        event.acceptProposedAction()


class PathEdit(QWidget):
    """Line edit + Browse… button (file, folder, or a menu offering both) + drag-and-drop."""

    textChanged = Signal(str)  # noqa: N815 (mirrors QLineEdit)
    editingFinished = Signal()  # noqa: N815

    def __init__(self, kind: str = "file", file_filter: str = "", title: str = "", parent=None):
        super().__init__(parent)
        self.kind = kind or "file"
        self.file_filter = file_filter
        self.title = title
        self.line = PathLineEdit(self.kind, self)
        self.line.setClearButtonEnabled(True)
        if self.kind == "dir":
            self.line.setPlaceholderText("Choose a folder, or drop one here")
        elif self.kind == "file":
            self.line.setPlaceholderText("Choose a file, or drop one here")
        else:
            self.line.setPlaceholderText("Choose a file or folder, or drop one here")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.line, 1)
        if self.kind == "file_or_dir":
            self.button = QToolButton(self)
            self.button.setText("Browse…")
            self.button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
            menu = QMenu(self.button)
            menu.addAction("File…", lambda: self.browse("file"))
            menu.addAction("Folder…", lambda: self.browse("dir"))
            self.button.setMenu(menu)
            self.button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        else:
            self.button = QPushButton("Browse…", self)
            self.button.clicked.connect(lambda: self.browse(self.kind))
        self.button.setToolTip("Choose with a file dialog (or drop a file or folder on the field)")
        layout.addWidget(self.button)
        self.line.textChanged.connect(self.textChanged)
        self.line.editingFinished.connect(self.editingFinished)
        self.line.dropped.connect(lambda _p: self.editingFinished.emit())

    def text(self) -> str:
        return self.line.text()

    def setText(self, text: str) -> None:  # noqa: N802
        self.line.setText(text)

    def _start_dir(self) -> str:
        current = self.line.text().strip()
        if current:
            p = Path(current).expanduser()
            if p.is_dir():
                return str(p)
            if p.parent.is_dir():
                return str(p.parent)
        return str(Path.home())

    def browse(self, kind: str) -> None:
        title = self.title or ("Choose a folder" if kind == "dir" else "Choose a file")
        if kind == "dir":
            path = QFileDialog.getExistingDirectory(self, title, self._start_dir())
        else:
            filters = ";;".join(f for f in (self.file_filter, "All files (*)") if f)
            path, _ = QFileDialog.getOpenFileName(self, title, self._start_dir(), filters)
        if path:
            self.line.setText(os.path.normpath(path))
            self.editingFinished.emit()


class Banner(QFrame):
    """A coloured message strip with an optional action button and a close button."""

    KINDS = {
        "error": ("#fdecea", "#8e1c1c", "#e8a5a0"),
        "success": ("#e8f5e9", "#1b5e20", "#a5d6a7"),
        "info": ("#e8f0fe", "#174ea6", "#a8c0ee"),
        "warning": ("#fff4e0", "#7a4b00", "#f0c27a"),
    }

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.kind = ""
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton(self)
        self.action_button.hide()
        self.close_button = QToolButton(self)
        self.close_button.setText("✕")
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Hide this message")
        self.close_button.clicked.connect(self.hide)
        self._action = None
        self.action_button.clicked.connect(self._run_action)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, kind: str, text: str, action_text: str = "", action=None) -> None:
        bg, fg, border = self.KINDS.get(kind, self.KINDS["info"])
        self.kind = kind
        self.setStyleSheet(f"QFrame#banner {{ background: {bg}; border: 1px solid {border}; border-radius: 4px; }}"
                           f"QFrame#banner QLabel {{ color: {fg}; }}")
        self.label.setText(text)
        self._action = action
        if action_text and action is not None:
            self.action_button.setText(action_text)
            self.action_button.show()
        else:
            self.action_button.hide()
        self.show()

    def _run_action(self) -> None:
        if self._action is not None:
            self._action()

    def text(self) -> str:
        return self.label.text()


def stacked_splitter(parent, top: QWidget, bottom: QWidget, stretch: tuple[int, int]) -> QSplitter:
    """*top* over *bottom*, sharing the height as *stretch*; neither can be collapsed away."""
    split = QSplitter(Qt.Orientation.Vertical, parent)
    split.addWidget(top)
    split.addWidget(bottom)
    split.setStretchFactor(0, stretch[0])
    split.setStretchFactor(1, stretch[1])
    split.setChildrenCollapsible(False)
    return split
