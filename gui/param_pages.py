"""The Training tab's parameter pages, generated from the one schema (:mod:`patina.core.config.schema`).

One editor per :class:`~patina.core.config.schema.Param`, chosen by type; label and tooltip from the schema; ranges and
choices from the schema; visibility and enabled state re-evaluated from ``visible_if``/``enabled_if`` on
every change; every field checked with :func:`patina.core.config.schema.check_values` (the schema's one validator) and
marked in place (border + message under the field). The base model's family is detected in the
background and stored as ``_detected_family`` so that the rules can use it. The editors, fields and page
layout are built by :mod:`patina.gui.param_fields`.

:class:`ParamForm` is the public face: ``values()``, ``set_values()``, ``changed``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QScrollArea, QSplitter,
                               QStackedWidget, QVBoxLayout, QWidget)

from patina.core.config.schema import BY_KEY, FAMILY_LABELS, PAGES, Problem, check_values, defaults
from patina.gui.param_fields import PAGE_TITLES, PARAMETER_PAGES, ColumnsWidget, Field, HelpFilter, PageBuilder
from patina.gui.widgets import ERROR_COLOR, WARNING_COLOR, PathEdit
from patina.gui.tasks import Latest

class ParamForm(QWidget):
    """All parameter pages: a page list on the left, the current page's grouped fields on the right."""

    changed = Signal()               # the user changed a value (not emitted by set_values)
    family_detected = Signal(str)    # "sd1" | "sd2" | "sdxl" | "" (unknown)
    problems_changed = Signal(list)  # [Problem] after every check
    page_changed = Signal(str)

    def __init__(self, parent=None, *, detect_family: bool = True):
        super().__init__(parent)
        self.detect_family_enabled = detect_family
        self.fields: dict[str, Field] = {}
        self.detected_family: str | None = None
        self._detect_path: str | None = None
        self._detect_problem: Problem | None = None
        self._problems: list[Problem] = []
        self._loading = False
        self.help_filter = HelpFilter(self)
        self._page_keys: list[str] = []
        self.scrolls: dict[str, QScrollArea] = {}
        self.columns: dict[str, ColumnsWidget] = {}
        # second editors of fields shown on two pages: key -> [(editor, getter, setter)]
        self.mirrors: dict[str, list[tuple[QWidget, Callable[[], Any], Callable[[Any], None]]]] = {}

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

        builder = PageBuilder(self)
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
            self.stack.addWidget(builder.build_page(page))
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
        self._detection = Latest()   # a newer model path drops the older path's answer

        self.set_values(defaults())
        self.show_page("model")

    # -- building ---------------------------------------------------------------------------------------

    def mirror_edited(self, key: str, getter: Callable[[], Any]) -> None:
        if self._loading:
            return
        value = getter()
        if self.fields[key].getter() != value:
            self.fields[key].setter(value)  # the field's own signals check it and emit changed

    def _sync_mirrors(self, key: str) -> None:
        if key not in self.mirrors:
            return
        value = self.fields[key].getter()
        for editor, getter, setter in self.mirrors[key]:
            if getter() == value:
                continue
            blockers = [editor] + ([editor.line] if isinstance(editor, PathEdit) else [])
            old = [w.blockSignals(True) for w in blockers]
            try:
                setter(value)
            finally:
                for w, b in zip(blockers, old):
                    w.blockSignals(b)

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
        for key in self.mirrors:
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

    def field(self, key: str) -> Field:
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
        scroll = self.scrolls[f.param.page]
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

    def on_edit(self, key: str) -> None:
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
        self._detection.start(_detect_family, os.path.expanduser(path), owner=self,
                              on_done=lambda fam, p=path: self._detection_done(p, fam, None),
                              on_error=lambda exc, p=path: self._detection_done(p, None, exc))

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
    """Runs off the GUI thread: detection reads the file's header (no torch)."""
    from patina.core.models.detect import detect_family  # noqa: WPS433

    return detect_family(path)
