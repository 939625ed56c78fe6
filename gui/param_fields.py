"""The pieces the parameter pages are made of: one editor per schema type, a field (editor, frame, label,
message), the page and group layout (:class:`PageBuilder`), and the texts shown under fields. :mod:`patina.gui.param_pages`
puts them together into :class:`~patina.gui.param_pages.ParamForm` and gives them behaviour."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QCheckBox, QCompleter, QFrame, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QPlainTextEdit, QScrollArea, QVBoxLayout, QWidget)

from patina.core.config.schema import (BY_KEY, PAGES, PARAMS, Param, Problem, ValueProblem, coerce, mirrored_on,
                                       sections)
from patina.gui.widgets import (ERROR_COLOR, WARNING_COLOR, FieldFrame, FloatSpinBox, NoWheelComboBox, NoWheelSpinBox,
                                PathEdit)

if TYPE_CHECKING:
    from patina.gui.param_pages import ParamForm

PAGE_TITLES = dict(PAGES)
PAGE_INTROS = {
    "model": "The base model you train on, the folder with your training images and the name of the LoRA file.",
    "folders": "Your training images, where the trained LoRA, the samples and the logs are written, and optional "
               "regularisation images.",
    "metadata": "Stored inside the LoRA file and shown by UIs that read modelspec metadata.",
    "basic": "What most runs change: network size, learning rate, optimizer, training length and resolution.",
    "advanced": "Memory, captions, augmentation, loss, noise, saving and block weights. The defaults suit most runs.",
    "samples": "Images generated while training so you can watch the LoRA learn. Each epoch's samples appear on "
               "the Monitor tab.",
}
PARAMETER_PAGES = ("basic", "advanced", "samples")

_INT32_MAX = 2**31 - 1
NUMBER_WIDTH = 130
LABEL_MAX_WIDTH = 240
_KEY_IN_TEXT = re.compile(r"\b(" + "|".join(sorted((re.escape(p.key) for p in PARAMS if "_" in p.key),
                                                  key=len, reverse=True)) + r")\b")


def problem_text(problem: Problem) -> str:
    """A sentence for the message under a field: names fields by their labels, not their JSON keys."""
    param = BY_KEY.get(problem.key)
    msg = _KEY_IN_TEXT.sub(lambda m: f"“{BY_KEY[m.group(1)].label}”", problem.message)
    if param and re.match(r"^(is|must|changes|has)\b", msg):
        return f"{param.label} {msg}."
    msg = msg[:1].upper() + msg[1:]
    return msg if msg.endswith((".", "…")) else msg + "."


# --- one field ------------------------------------------------------------------------------------------

@dataclass
class Field:
    param: Param
    editor: QWidget
    frame: FieldFrame
    label: QLabel | None
    message: QLabel
    cell: QWidget
    getter: Callable[[], Any]
    setter: Callable[[Any], None]
    badge: QLabel | None = None
    visible: bool = True

    def set_visible(self, on: bool) -> None:
        self.visible = on
        self.cell.setVisible(on)
        if self.label is not None:
            self.label.setVisible(on)

    def set_enabled(self, on: bool) -> None:
        self.editor.setEnabled(on)
        if self.label is not None:
            self.label.setEnabled(on)

    def set_problem(self, problem: Problem | None) -> None:
        if problem is None:
            self.frame.set_state("")
            self.message.clear()
            self.message.hide()
            return
        error = problem.severity == "error"
        self.frame.set_state("error" if error else "warning")
        self.message.setStyleSheet(f"color: {ERROR_COLOR if error else WARNING_COLOR};")
        self.message.setText(problem_text(problem))
        self.message.show()


def _make_editor(param: Param, parent: QWidget) -> tuple[QWidget, Callable[[], Any], Callable[[Any], None], list]:
    """(editor, getter, setter, change signals) for one parameter."""
    w = _make_editor_inner(param, parent)
    editor = w[0]
    if param.type in ("int", "float"):
        editor.setMinimumWidth(NUMBER_WIDTH)
        editor.setMaximumWidth(NUMBER_WIDTH + 40)
    elif param.type == "choice":
        editor.setMinimumWidth(NUMBER_WIDTH)
    elif param.type == "resolution":
        editor.setFixedWidth(NUMBER_WIDTH + 40)
    elif param.type == "str":
        editor.setMaximumWidth(560)
    return w


def _make_editor_inner(param: Param, parent: QWidget):
    t = param.type
    if t == "int":
        lo = int(param.min) if param.min is not None else -_INT32_MAX
        hi = int(param.max) if param.max is not None else _INT32_MAX
        if hi > _INT32_MAX or lo < -_INT32_MAX:
            w = FloatSpinBox(parent, integer=True)
            w.setRange(lo, hi)
            w.setSingleStep(param.step or 1)
            return w, lambda: int(round(w.value())), lambda v: w.setValue(float(v)), [w.valueChanged]
        w = NoWheelSpinBox(parent)
        w.setRange(lo, hi)
        w.setSingleStep(int(param.step or 1))
        w.setAccelerated(True)
        return w, w.value, lambda v: w.setValue(int(v)), [w.valueChanged]
    if t == "float":
        w = FloatSpinBox(parent)
        w.setRange(param.min if param.min is not None else -1e12, param.max if param.max is not None else 1e12)
        w.setSingleStep(param.step or 0.1)
        return w, lambda: float(w.value()), lambda v: w.setValue(float(v)), [w.valueChanged]
    if t == "bool":
        w = QCheckBox(param.label, parent)
        return w, w.isChecked, lambda v: w.setChecked(bool(v)), [w.toggled]
    if t == "choice":
        w = NoWheelComboBox(parent)
        for c in param.choices:
            w.addItem(param.choice_label(c), c)
            w.setItemData(w.count() - 1, str(c), Qt.ItemDataRole.ToolTipRole)

        def set_choice(v, w=w, param=param):
            for i in range(w.count()):
                if w.itemData(i) == v and type(w.itemData(i)) is type(v):
                    w.setCurrentIndex(i)
                    return
            try:  # "150" for 150, "Euler_A" for "euler_a"
                v2 = coerce(param, v)
            except ValueProblem:
                return
            w.setCurrentIndex(param.choices.index(v2))

        return w, w.currentData, set_choice, [w.currentIndexChanged]
    if t == "text":
        w = QPlainTextEdit(parent)
        w.setTabChangesFocus(True)
        lines = 14 if param.key == "sample_prompts" else 4
        w.setFixedHeight(w.fontMetrics().lineSpacing() * lines + 14)
        w.setPlaceholderText(param.placeholder)
        if param.key == "sample_prompts":
            w.setFont(QFont("monospace"))
            w.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        return w, w.toPlainText, lambda v: w.setPlainText(str(v)), [w.textChanged]
    if t == "path":
        w = PathEdit(param.path_kind or "file", param.file_filter, param.label, parent)
        return w, w.text, lambda v: w.setText(str(v)), [w.textChanged]
    # str, resolution
    w = QLineEdit(parent)
    w.setPlaceholderText(param.placeholder)
    if param.choices:  # free text with the usual values offered (caption_extension)
        w.setCompleter(QCompleter([str(c) for c in param.choices], w))
    if t == "resolution":

        def tidy(w=w, param=param):  # "768x512" → "768,512" once the user is done typing
            try:
                canon = coerce(param, w.text())
            except ValueProblem:
                return
            if canon != w.text():
                w.setText(canon)

        w.editingFinished.connect(tidy)
    return w, w.text, lambda v: w.setText(str(v)), [w.textChanged]


# --- page layout ------------------------------------------------------------------------------------------

class ColumnsWidget(QWidget):
    """Group boxes in one column when narrow and two when wide. The split is chosen once per column count
    (balanced by height) so that sections do not jump around while the user edits. Each column is a real
    widget, so that a field appearing or disappearing re-lays out the page even while it is hidden."""

    def __init__(self, groups: list[QWidget], *, wide: int = 900, parent=None):
        super().__init__(parent)
        self.groups = groups
        self.wide = wide
        self._ncols = 0
        self._row = QHBoxLayout(self)
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.setSpacing(14)
        self._cols: list[QWidget] = []
        self._arrange(1)

    def _arrange(self, ncols: int) -> None:
        ncols = min(ncols, len(self.groups)) or 1
        if ncols == self._ncols:
            return
        heights = [0] * ncols
        assignment: list[list[QWidget]] = [[] for _ in range(ncols)]
        # keep reading order: fill the first column up to about its share of the height, then the next
        total = sum(g.sizeHint().height() for g in self.groups) or 1
        col = 0
        for g in self.groups:
            h = g.sizeHint().height()
            if col < ncols - 1 and heights[col] > 0 and heights[col] + h / 2 > total / ncols:
                col += 1
            assignment[col].append(g)
            heights[col] += h
        old = self._cols
        self._cols = []
        for groups in assignment:
            column = QWidget(self)
            lay = QVBoxLayout(column)
            lay.setContentsMargins(0, 0, 0, 0)
            lay.setSpacing(14)
            for g in groups:
                lay.addWidget(g)  # re-parents g into this column
            lay.addStretch(1)
            self._row.addWidget(column, 1)
            self._cols.append(column)
        for column in old:
            self._row.removeWidget(column)
            column.deleteLater()
        self._ncols = ncols

    def resizeEvent(self, event):  # noqa: N802
        self._arrange(2 if event.size().width() >= self.wide else 1)
        super().resizeEvent(event)

    @property
    def columns(self) -> int:
        return self._ncols


class HelpFilter(QObject):
    """Shows a field's help in the form's help strip when the mouse enters it or it gets focus."""

    def __init__(self, form: "ParamForm"):
        super().__init__(form)
        self.form = form

    def eventFilter(self, obj, event):  # noqa: N802
        if event.type() in (QEvent.Type.Enter, QEvent.Type.FocusIn):
            key = obj.property("patina_key")
            if key:
                self.form.show_help(key)
        return False


class PageBuilder:
    """Builds the form's pages, groups and fields from the schema (layout only; the form owns behaviour)."""

    def __init__(self, form: "ParamForm"):
        self.form = form

    def build_page(self, page: str) -> QWidget:
        content = QWidget()
        outer = QVBoxLayout(content)
        outer.setContentsMargins(18, 14, 18, 18)
        outer.setSpacing(12)
        title = QLabel(PAGE_TITLES[page], content)
        f = title.font()
        f.setPointSizeF(f.pointSizeF() * 1.35)
        f.setBold(True)
        title.setFont(f)
        intro = QLabel(PAGE_INTROS.get(page, ""), content)
        intro.setWordWrap(True)
        intro.setStyleSheet("color: palette(placeholder-text);")
        outer.addWidget(title)
        outer.addWidget(intro)
        groups = []
        mirrors = mirrored_on(page)
        for section, params in sections(page):
            groups.append(self.build_group(section or PAGE_TITLES[page], params, mirrors))
            mirrors = []
        # one label width per page so that fields line up across its sections
        labels = [f.label for f in self.form.fields.values() if f.param.page == page and f.label is not None]
        if labels:
            fm = labels[0].fontMetrics()
            width = min(LABEL_MAX_WIDTH, max(fm.horizontalAdvance(lab.text()) for lab in labels) + 8)
            for lab in labels:
                lab.setFixedWidth(width)
        two_columns = page in ("basic", "advanced")
        cols = ColumnsWidget(groups, wide=900 if two_columns else 10**6, parent=content)
        self.form.columns[page] = cols
        outer.addWidget(cols)
        outer.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(content)
        scroll.setObjectName(f"page_{page}")
        self.form.scrolls[page] = scroll
        return scroll

    def build_mirror(self, param: Param, box: QGroupBox, grid: QGridLayout, row: int) -> None:
        """A second editor for a field that lives on another page: edits go to the field itself (one value)."""
        editor, getter, setter, signals = _make_editor(param, box)
        home = PAGE_TITLES[param.page]
        editor.setToolTip(f"{param.help}\n(The same field as on the {home} page.)")
        label = QLabel(param.label, box)
        label.setToolTip(editor.toolTip())
        label.setBuddy(editor.line if isinstance(editor, PathEdit) else editor)
        label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        label.setProperty("patina_key", param.key)
        label.installEventFilter(self.form.help_filter)
        frame = FieldFrame(editor, box)
        label.setMinimumHeight(frame.sizeHint().height())
        grid.addWidget(label, row, 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(frame, row, 1)
        self.form.mirrors.setdefault(param.key, []).append((editor, getter, setter))
        for sig in signals:
            sig.connect(lambda *_a, k=param.key, g=getter: self.form.mirror_edited(k, g))

    def build_group(self, title: str, params: list[Param], mirrors: list[Param] = ()) -> QGroupBox:
        box = QGroupBox(title)
        grid = QGridLayout(box)
        grid.setContentsMargins(12, 14, 12, 12)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(6)
        grid.setColumnStretch(1, 1)
        for row, param in enumerate(mirrors):
            self.build_mirror(param, box, grid, row)
        for row, param in enumerate(params, start=len(mirrors)):
            editor, getter, setter, signals = _make_editor(param, box)
            editor.setToolTip(param.help)
            frame = FieldFrame(editor, box)
            message = QLabel(box)
            message.setWordWrap(True)
            message.hide()
            cell = QWidget(box)
            cl = QVBoxLayout(cell)
            cl.setContentsMargins(0, 0, 0, 0)
            cl.setSpacing(1)
            line = QHBoxLayout()
            line.setSpacing(8)
            capped = editor.maximumWidth() < 16777215  # QWIDGETSIZE_MAX
            if capped:  # the frame, not the editor, carries the cap, so the field stays left-aligned
                m = frame.layout().contentsMargins()
                frame.setMaximumWidth(editor.maximumWidth() + m.left() + m.right())
            line.addWidget(frame, 0 if self._compact(param) else 1)
            badge = None
            if param.key == "pretrained_model_name_or_path":
                badge = QLabel(box)
                badge.setObjectName("familyBadge")
                badge.hide()
                line.addWidget(badge)
            if self._compact(param) or capped:
                line.addStretch(1 if self._compact(param) else 0)
            cl.addLayout(line)
            if param.type == "text":
                caption = QLabel(param.help, box)
                caption.setWordWrap(True)
                caption.setStyleSheet("color: palette(placeholder-text);")
                cl.addWidget(caption)
            cl.addWidget(message)
            label = None
            if param.type != "bool":
                label = QLabel(param.label, box)
                label.setToolTip(param.help)
                label.setBuddy(editor.line if isinstance(editor, PathEdit) else editor)
                label.setWordWrap(True)
                label.setProperty("patina_key", param.key)
                label.installEventFilter(self.form.help_filter)
                # as tall as the editor and pinned to the top, so that it stays level with the editor when
                # a message appears under the field
                label.setMinimumHeight(frame.sizeHint().height() if param.type != "text" else 0)
                label.setAlignment(Qt.AlignmentFlag.AlignRight | (Qt.AlignmentFlag.AlignTop if param.type == "text"
                                                                  else Qt.AlignmentFlag.AlignVCenter))
                if param.type == "text":
                    label.setContentsMargins(0, 5, 0, 0)
                grid.addWidget(label, row, 0, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(cell, row, 1)
            for w in [editor] + ([editor.line] if isinstance(editor, PathEdit) else []):
                w.setProperty("patina_key", param.key)
                w.installEventFilter(self.form.help_filter)
            field = Field(param, editor, frame, label, message, cell, getter, setter, badge)
            self.form.fields[param.key] = field
            for sig in signals:
                sig.connect(lambda *_a, k=param.key: self.form.on_edit(k))
        return box

    @staticmethod
    def _compact(param: Param) -> bool:
        """Editors that should keep their natural width instead of filling the row."""
        if param.type in ("int", "float", "choice", "resolution"):
            return True
        return False

