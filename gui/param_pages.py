"""The Training tab's parameter pages, generated from the one schema (:mod:`patina.core.config.schema`).

One editor per :class:`~patina.core.config.schema.Param`, chosen by type; label and tooltip from the schema; ranges and
choices from the schema; visibility and enabled state re-evaluated from ``visible_if``/``enabled_if`` on
every change; every field checked with :func:`patina.core.config.schema.check_values` (the schema's one validator) and
marked in place (border + message under the field). The base model's family is detected in the
background and stored as ``_detected_family`` so that the rules can use it.

:class:`ParamForm` is the public face: ``values()``, ``set_values()``, ``changed``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QCheckBox, QFrame, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QListWidgetItem, QPlainTextEdit, QScrollArea, QSplitter,
                               QStackedWidget, QVBoxLayout, QWidget)

from patina.core.config.schema import (BY_KEY, FAMILY_LABELS, PAGES, PARAMS, Param, Problem, ValueProblem, check_values,
                                       coerce, defaults, mirrored_on, sections)
from patina.gui.widgets import (ERROR_COLOR, WARNING_COLOR, FieldFrame, FloatSpinBox, NoWheelComboBox, NoWheelSpinBox,
                         PathEdit)
from patina.gui.worker import BackgroundCall

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
class _Field:
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


class _HelpFilter(QObject):
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


class ParamForm(QWidget):
    """All parameter pages: a page list on the left, the current page's grouped fields on the right."""

    changed = Signal()               # the user changed a value (not emitted by set_values)
    family_detected = Signal(str)    # "sd1" | "sd2" | "sdxl" | "" (unknown)
    problems_changed = Signal(list)  # [Problem] after every check
    page_changed = Signal(str)

    def __init__(self, parent=None, *, detect_family: bool = True):
        super().__init__(parent)
        self.detect_family_enabled = detect_family
        self.fields: dict[str, _Field] = {}
        self.detected_family: str | None = None
        self._detect_path: str | None = None
        self._detect_problem: Problem | None = None
        self._problems: list[Problem] = []
        self._loading = False
        self._help_filter = _HelpFilter(self)
        self._page_keys: list[str] = []
        self._scrolls: dict[str, QScrollArea] = {}
        self._columns: dict[str, ColumnsWidget] = {}
        # second editors of fields shown on two pages: key -> [(editor, getter, setter)]
        self._mirrors: dict[str, list[tuple[QWidget, Callable[[], Any], Callable[[Any], None]]]] = {}

        self.nav = QListWidget(self)
        self.nav.setObjectName("pageList")
        self.nav.setMinimumWidth(170)
        self.nav.setMaximumWidth(240)
        self.nav.setStyleSheet("QListWidget#pageList { padding-top: 6px; }"
                               "QListWidget#pageList::item { padding: 5px 8px; }")
        self.stack = QStackedWidget(self)
        self.help_strip = QLabel(self)
        self.help_strip.setObjectName("helpStrip")
        self.help_strip.setWordWrap(True)
        self.help_strip.setTextFormat(Qt.TextFormat.RichText)
        self.help_strip.setMinimumHeight(self.help_strip.fontMetrics().lineSpacing() * 2 + 12)
        self.help_strip.setStyleSheet("QLabel#helpStrip { padding: 6px 10px; border-top: 1px solid palette(mid); }")
        self._default_help = "Point at a field to see what it does. Fields marked in red need fixing before training."
        self.help_strip.setText(self._default_help)

        for page, title in PAGES:
            if page == "basic":
                header = QListWidgetItem("Parameters")
                header.setFlags(Qt.ItemFlag.NoItemFlags)
                f = header.font()
                f.setBold(True)
                header.setFont(f)
                header.setForeground(self.palette().color(self.palette().ColorRole.PlaceholderText))
                self.nav.addItem(header)
            item = QListWidgetItem(("    " if page in PARAMETER_PAGES else "") + title)
            item.setData(Qt.ItemDataRole.UserRole, page)
            self.nav.addItem(item)
            self.stack.addWidget(self._build_page(page))
            self._page_keys.append(page)
        self.nav.currentItemChanged.connect(self._nav_changed)

        right = QWidget(self)
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.setSpacing(0)
        rl.addWidget(self.stack, 1)
        rl.addWidget(self.help_strip)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(self.nav)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        split.setSizes([190, 1000])
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

        self._detect_timer = QTimer(self)
        self._detect_timer.setSingleShot(True)
        self._detect_timer.setInterval(400)
        self._detect_timer.timeout.connect(self._start_detection)

        self.set_values(defaults())
        self.show_page("model")

    # -- building ---------------------------------------------------------------------------------------

    def _build_page(self, page: str) -> QWidget:
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
            groups.append(self._build_group(section or PAGE_TITLES[page], params, mirrors))
            mirrors = []
        # one label width per page so that fields line up across its sections
        labels = [f.label for f in self.fields.values() if f.param.page == page and f.label is not None]
        if labels:
            fm = labels[0].fontMetrics()
            width = min(LABEL_MAX_WIDTH, max(fm.horizontalAdvance(lab.text()) for lab in labels) + 8)
            for lab in labels:
                lab.setFixedWidth(width)
        two_columns = page in ("basic", "advanced")
        cols = ColumnsWidget(groups, wide=900 if two_columns else 10**6, parent=content)
        self._columns[page] = cols
        outer.addWidget(cols)
        outer.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(content)
        scroll.setObjectName(f"page_{page}")
        self._scrolls[page] = scroll
        return scroll

    def _build_mirror(self, param: Param, box: QGroupBox, grid: QGridLayout, row: int) -> None:
        """A second editor for a field that lives on another page: edits go to the field itself (one value)."""
        editor, getter, setter, signals = _make_editor(param, box)
        home = PAGE_TITLES[param.page]
        editor.setToolTip(f"{param.help}\n(The same field as on the {home} page.)")
        label = QLabel(param.label, box)
        label.setToolTip(editor.toolTip())
        label.setBuddy(editor.line if isinstance(editor, PathEdit) else editor)
        label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        label.setProperty("patina_key", param.key)
        label.installEventFilter(self._help_filter)
        frame = FieldFrame(editor, box)
        label.setMinimumHeight(frame.sizeHint().height())
        grid.addWidget(label, row, 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(frame, row, 1)
        self._mirrors.setdefault(param.key, []).append((editor, getter, setter))
        for sig in signals:
            sig.connect(lambda *_a, k=param.key, g=getter: self._mirror_edited(k, g))

    def _mirror_edited(self, key: str, getter: Callable[[], Any]) -> None:
        if self._loading:
            return
        value = getter()
        if self.fields[key].getter() != value:
            self.fields[key].setter(value)  # the field's own signals check it and emit changed

    def _sync_mirrors(self, key: str) -> None:
        if key not in self._mirrors:
            return
        value = self.fields[key].getter()
        for editor, getter, setter in self._mirrors[key]:
            if getter() == value:
                continue
            blockers = [editor] + ([editor.line] if isinstance(editor, PathEdit) else [])
            old = [w.blockSignals(True) for w in blockers]
            try:
                setter(value)
            finally:
                for w, b in zip(blockers, old):
                    w.blockSignals(b)

    def _build_group(self, title: str, params: list[Param], mirrors: list[Param] = ()) -> QGroupBox:
        box = QGroupBox(title)
        grid = QGridLayout(box)
        grid.setContentsMargins(12, 14, 12, 12)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(6)
        grid.setColumnStretch(1, 1)
        for row, param in enumerate(mirrors):
            self._build_mirror(param, box, grid, row)
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
                label.installEventFilter(self._help_filter)
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
                w.installEventFilter(self._help_filter)
            field = _Field(param, editor, frame, label, message, cell, getter, setter, badge)
            self.fields[param.key] = field
            for sig in signals:
                sig.connect(lambda *_a, k=param.key: self._on_edit(k))
        return box

    @staticmethod
    def _compact(param: Param) -> bool:
        """Editors that should keep their natural width instead of filling the row."""
        if param.type in ("int", "float", "choice", "resolution"):
            return True
        return False

    # -- public API -------------------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        """Every parameter's current value (as typed where a text field holds something invalid), plus
        ``_detected_family`` once the base model's family is known."""
        out = {key: f.getter() for key, f in self.fields.items()}
        if self.detected_family:
            out["_detected_family"] = self.detected_family
        return out

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Show *values* (keys not in the schema are ignored); does not emit ``changed``."""
        self._loading = True
        try:
            for key, value in values.items():
                f = self.fields.get(key)
                if f is None or value is None:
                    continue
                blockers = [f.editor] + ([f.editor.line] if isinstance(f.editor, PathEdit) else [])
                old = [w.blockSignals(True) for w in blockers]
                try:
                    f.setter(value)
                finally:
                    for w, b in zip(blockers, old):
                        w.blockSignals(b)
        finally:
            self._loading = False
        for key in self._mirrors:
            self._sync_mirrors(key)
        self._model_path_changed()
        if values.get("_detected_family"):
            self._set_family(values["_detected_family"], str(values.get("pretrained_model_name_or_path", "")))
        self.refresh()

    def problems(self) -> list[Problem]:
        """Problems found by the last check (field errors, cross-field problems, missing inputs)."""
        return list(self._problems)

    def errors(self) -> list[Problem]:
        return [p for p in self._problems if p.severity == "error"]

    def field(self, key: str) -> _Field:
        return self.fields[key]

    def editor(self, key: str) -> QWidget:
        return self.fields[key].editor

    def current_page(self) -> str:
        return self._page_keys[self.stack.currentIndex()]

    def show_page(self, page: str) -> None:
        if page not in self._page_keys:
            raise KeyError(page)
        for i in range(self.nav.count()):
            if self.nav.item(i).data(Qt.ItemDataRole.UserRole) == page:
                self.nav.setCurrentRow(i)
                break
        self.stack.setCurrentIndex(self._page_keys.index(page))

    def focus_field(self, key: str) -> None:
        f = self.fields[key]
        self.show_page(f.param.page)
        scroll = self._scrolls[f.param.page]
        target = f.editor.line if isinstance(f.editor, PathEdit) else f.editor
        target.setFocus(Qt.FocusReason.OtherFocusReason)
        self.show_help(key)
        # once the page is laid out at its current size
        QTimer.singleShot(0, lambda: scroll.ensureWidgetVisible(f.cell, 40, 60))

    def show_help(self, key: str) -> None:
        p = BY_KEY.get(key)
        if p is None:
            return
        extra = ""
        if p.type in ("int", "float"):
            extra = f" <span style='color: gray'>({p.allowed()})</span>"
        self.help_strip.setText(f"<b>{p.label}</b> — {p.help}{extra}")

    # -- behaviour --------------------------------------------------------------------------------------

    def _nav_changed(self, current: QListWidgetItem | None, _previous=None) -> None:
        if current is None:
            return
        page = current.data(Qt.ItemDataRole.UserRole)
        if page:
            self.stack.setCurrentIndex(self._page_keys.index(page))
            self.page_changed.emit(page)

    def _on_edit(self, key: str) -> None:
        if self._loading:
            return
        if key == "pretrained_model_name_or_path":
            self._model_path_changed()
        self._sync_mirrors(key)
        self.refresh()
        self.changed.emit()

    def refresh(self) -> None:
        """Re-apply visible_if/enabled_if and re-check every field."""
        vals = self.values()
        for f in self.fields.values():
            f.set_visible(f.param.is_visible(vals))
            f.set_enabled(f.param.is_enabled(vals))
        self._validate(vals)

    def _validate(self, vals: Mapping[str, Any]) -> None:
        _, problems = check_values(vals, inputs=True)  # the schema's one validator
        if self._detect_problem is not None:
            problems.append(self._detect_problem)
        self._problems = problems
        by_key: dict[str, Problem] = {}
        for pr in problems:
            cur = by_key.get(pr.key)
            if cur is None or (cur.severity != "error" and pr.severity == "error"):
                by_key[pr.key] = pr
        for key, f in self.fields.items():
            f.set_problem(by_key.get(key))
        self._update_nav(by_key)
        self.problems_changed.emit(list(problems))

    def _update_nav(self, by_key: Mapping[str, Problem]) -> None:
        counts: dict[str, tuple[int, int]] = {}
        for key, pr in by_key.items():
            page = BY_KEY[key].page
            e, w = counts.get(page, (0, 0))
            counts[page] = (e + (pr.severity == "error"), w + (pr.severity != "error"))
        for i in range(self.nav.count()):
            item = self.nav.item(i)
            page = item.data(Qt.ItemDataRole.UserRole)
            if not page:
                continue
            e, w = counts.get(page, (0, 0))
            base = ("    " if page in PARAMETER_PAGES else "") + PAGE_TITLES[page]
            if e:
                item.setText(f"{base}   ● {e}")
                item.setForeground(QColor(ERROR_COLOR))
                item.setToolTip(f"{e} setting(s) on this page need fixing")
            elif w:
                item.setText(f"{base}   ● {w}")
                item.setForeground(QColor(WARNING_COLOR))
                item.setToolTip(f"{w} warning(s) on this page")
            else:
                item.setText(base)
                item.setData(Qt.ItemDataRole.ForegroundRole, None)
                item.setToolTip("")

    # -- model family detection ---------------------------------------------------------------------------

    def _model_path_changed(self) -> None:
        path = str(self.fields["pretrained_model_name_or_path"].getter()).strip()
        if path == self._detect_path:
            return
        self._detect_path = path
        self._detect_problem = None
        self._set_family(None, path)
        if path and self.detect_family_enabled:
            self._detect_timer.start()

    def _start_detection(self) -> None:
        path = self._detect_path
        if not path or not os.path.exists(os.path.expanduser(path)):
            return
        BackgroundCall(_detect_family, os.path.expanduser(path)).start(
            lambda fam, p=path: self._detection_done(p, fam, None),
            lambda exc, p=path: self._detection_done(p, None, exc))

    def _detection_done(self, path: str, family, exc) -> None:
        if path != self._detect_path:
            return  # the field changed while detecting
        if exc is not None:
            self._detect_problem = Problem("pretrained_model_name_or_path",
                                           f"could not read the model: {exc}", None, "warning")
            self._set_family(None, path)
            self.refresh()
            return
        self._set_family(family, path)
        self.refresh()

    def _set_family(self, family, path: str) -> None:
        fam = _family_name(family)
        self.detected_family = fam
        badge = self.fields["pretrained_model_name_or_path"].badge
        if badge is not None:
            if fam:
                badge.setText(f"Detected: <b>{FAMILY_LABELS.get(fam, fam)}</b>")
                badge.setToolTip(f"Model family read from {path}")
                badge.show()
            else:
                badge.hide()
        if fam or family is None:
            self.family_detected.emit(fam or "")


def _family_name(family) -> str | None:
    """detect_family may return "sdxl", an enum, or an object with a ``family`` attribute."""
    if family is None:
        return None
    for attr in ("family", "value", "name"):
        if not isinstance(family, str) and hasattr(family, attr):
            family = getattr(family, attr)
    fam = str(family).lower()
    return fam if fam in FAMILY_LABELS and fam != "auto" else None


def _detect_family(path: str):
    """Runs in a pool thread. A missing ``patina.core.models.detect`` module means "skip quietly"."""
    try:
        from patina.core.models.detect import detect_family  # noqa: WPS433
    except ImportError:
        return None
    return detect_family(path)
