"""The Dataset tab's batch caption tools: find/replace and prefix/postfix across a folder
(:class:`BatchPanel`) and how many shown captions use each tag (:class:`TagFrequencyPanel`). The edits
themselves are :mod:`patina.core.dataset.caption_edits`; these widgets only ask for them."""

from __future__ import annotations

from collections import Counter

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from patina.gui.caption_widgets import ERROR_COLOR, MUTED_STYLE, section_label

SCOPE_FOLDER, SCOPE_ALL = "folder", "all"


class BatchPanel(QWidget):
    """Find/replace and prefix/postfix over every caption file of one concept folder or all of them."""

    replace_requested = Signal(str, str, bool, str)      # find, replace, match case, scope
    prefix_requested = Signal(str, bool, str)            # text, as tag, scope
    postfix_requested = Signal(str, bool, str)
    create_requested = Signal()   # create the caption files the last edit left alone

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scope = QComboBox(self)
        self.scope.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.scope.setMinimumContentsLength(16)
        self.find = QLineEdit(self)
        self.find.setPlaceholderText("Text to find")
        self.replace = QLineEdit(self)
        self.replace.setPlaceholderText("Replace with (empty = delete)")
        self.match_case = QCheckBox("Match case", self)
        self.replace_button = QPushButton("Replace in all captions", self)
        self.prefix = QLineEdit(self)
        self.prefix.setPlaceholderText("e.g. sks dog")
        self.prefix_button = QPushButton("Add to start", self)
        self.postfix = QLineEdit(self)
        self.postfix.setPlaceholderText("e.g. high quality")
        self.postfix_button = QPushButton("Add to end", self)
        self.as_tag = QCheckBox("As a tag: add a comma, skip captions that have it", self)
        self.as_tag.setToolTip("On: “sks dog” + “sitting” gives “sks dog, sitting”, and captions whose first (or "
                               "last) tag is already “sks dog” are left alone.\nOff: the text is added exactly "
                               "as typed.")
        self.as_tag.setChecked(True)
        self.result = QLabel(self)
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.create_button = QPushButton(self)
        self.create_button.setToolTip("Write a caption file for each of them: the folder's name (e.g. “sks dog”, "
                                      "what training uses for them now) with the same change applied")
        self.create_button.hide()
        self.create_button.clicked.connect(self.create_requested)
        note = QLabel("Only existing caption files are changed; for images without one you can create it from "
                      "the folder's name afterwards. Every change can be undone (Ctrl+Z).", self)
        note.setWordWrap(True)
        note.setStyleSheet(MUTED_STYLE)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(8)
        scope_row = QFormLayout()
        scope_row.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        scope_row.addRow("Apply to:", self.scope)
        layout.addLayout(scope_row)

        grid = QGridLayout()
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(6)
        grid.setColumnStretch(1, 1)
        grid.addWidget(section_label("Find and replace"), 0, 0, 1, 3)
        grid.addWidget(QLabel("Find:"), 1, 0)
        grid.addWidget(self.find, 1, 1, 1, 2)
        grid.addWidget(QLabel("Replace:"), 2, 0)
        grid.addWidget(self.replace, 2, 1, 1, 2)
        grid.addWidget(self.match_case, 3, 1)
        grid.addWidget(self.replace_button, 3, 2)
        grid.setRowMinimumHeight(4, 10)
        grid.addWidget(section_label("Add to every caption"), 5, 0, 1, 3)
        grid.addWidget(QLabel("Prefix:"), 6, 0)
        grid.addWidget(self.prefix, 6, 1)
        grid.addWidget(self.prefix_button, 6, 2)
        grid.addWidget(QLabel("Postfix:"), 7, 0)
        grid.addWidget(self.postfix, 7, 1)
        grid.addWidget(self.postfix_button, 7, 2)
        grid.addWidget(self.as_tag, 8, 1, 1, 2)
        layout.addLayout(grid)
        layout.addWidget(self.result)
        layout.addWidget(self.create_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(note)
        layout.addStretch(1)

        self.replace_button.clicked.connect(self._replace)
        self.find.returnPressed.connect(self._replace)
        self.replace.returnPressed.connect(self._replace)
        self.prefix_button.clicked.connect(
            lambda: self.prefix_requested.emit(self.prefix.text(), self.as_tag.isChecked(), self.scope_value()))
        self.postfix_button.clicked.connect(
            lambda: self.postfix_requested.emit(self.postfix.text(), self.as_tag.isChecked(), self.scope_value()))
        self._scope_choice = SCOPE_FOLDER   # what the user picked last; the folder until they choose
        self.scope.activated.connect(lambda _i: setattr(self, "_scope_choice", self.scope_value()))
        self.set_scopes(None, 0, 0)

    def _replace(self) -> None:
        if not self.find.text():
            self.show_result("Type the text to find first.", error=True)
            return
        self.replace_requested.emit(self.find.text(), self.replace.text(), self.match_case.isChecked(),
                                    self.scope_value())

    def scope_value(self) -> str:
        return self.scope.currentData() or SCOPE_ALL

    def set_scopes(self, folder: str | None, folder_captions: int, all_captions: int) -> None:
        """*folder*: the concept folder the grid shows (None when it shows all)."""
        keep = self._scope_choice
        self.scope.blockSignals(True)
        self.scope.clear()
        if folder:
            self.scope.addItem(f"Folder “{folder}” ({folder_captions} caption files)", SCOPE_FOLDER)
        self.scope.addItem(f"All folders ({all_captions} caption files)", SCOPE_ALL)
        idx = self.scope.findData(keep)
        self.scope.setCurrentIndex(idx if idx >= 0 else 0)
        self.scope.blockSignals(False)

    def offer_create(self, n: int) -> None:
        """Offer to create caption files for *n* images an edit left alone (0: no offer)."""
        self.create_button.setText(f"Create captions for these {n:,} images")
        self.create_button.setVisible(n > 0)

    def show_result(self, text: str, error: bool = False) -> None:
        self.result.setText(text)
        self.result.setStyleSheet(f"color: {ERROR_COLOR};" if error else "")

    def set_busy(self, busy: bool) -> None:
        for w in (self.replace_button, self.prefix_button, self.postfix_button):
            w.setEnabled(not busy)


# --- tag frequency -----------------------------------------------------------------------------------------------

class TagFrequencyPanel(QWidget):
    """How many of the shown captions use each tag. Double-click a tag to filter the grid by it."""

    tag_activated = Signal(str)
    add_to_quick = Signal(object)   # list of tags

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = QLabel(self)
        self.summary.setWordWrap(True)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Find a tag")
        self.search.setClearButtonEnabled(True)
        self.tree = QTreeWidget(self)
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Tag", "Captions"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSortingEnabled(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.ExtendedSelection)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, self.tree.header().ResizeMode.Stretch)
        self.tree.header().setSectionResizeMode(1, self.tree.header().ResizeMode.ResizeToContents)
        self.filter_button = QPushButton("Show images with this tag", self)
        self.quick_button = QPushButton("Add to quick tags", self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.search)
        layout.addWidget(self.tree, 1)
        row = QHBoxLayout()
        row.addWidget(self.filter_button)
        row.addWidget(self.quick_button)
        row.addStretch(1)
        layout.addLayout(row)
        self.tree.itemDoubleClicked.connect(lambda it, _c: self.tag_activated.emit(it.text(0)))
        self.filter_button.clicked.connect(self._filter_selected)
        self.quick_button.clicked.connect(lambda: self.add_to_quick.emit(self.selected_tags()))
        self.search.textChanged.connect(self._apply_search)
        self.set_counts(Counter(), 0)

    def selected_tags(self) -> list[str]:
        return [it.text(0) for it in self.tree.selectedItems()]

    def _filter_selected(self) -> None:
        tags = self.selected_tags()
        if tags:
            self.tag_activated.emit(", ".join(tags))

    def set_counts(self, counts: Counter, captions: int) -> None:
        self.counts = counts
        self.tree.setSortingEnabled(False)
        self.tree.clear()
        items = []
        for tag, n in counts.items():
            it = _CountItem([tag, str(n)])
            it.setData(1, Qt.ItemDataRole.UserRole, n)
            it.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            items.append(it)
        self.tree.addTopLevelItems(items)
        self.tree.setSortingEnabled(True)
        self.tree.sortItems(1, Qt.SortOrder.DescendingOrder)
        self.summary.setText(f"{len(counts)} different tags in {captions} shown captions"
                             if captions else "No captions shown")
        self._apply_search(self.search.text())

    def _apply_search(self, text: str) -> None:
        needle = text.strip().casefold()
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            it.setHidden(bool(needle) and needle not in it.text(0).casefold())


class _CountItem(QTreeWidgetItem):
    def __lt__(self, other):
        col = self.treeWidget().sortColumn() if self.treeWidget() else 0
        if col == 1:
            a, b = self.data(1, Qt.ItemDataRole.UserRole), other.data(1, Qt.ItemDataRole.UserRole)
            if a != b:
                return a < b
            return self.text(0).casefold() > other.text(0).casefold()
        return self.text(0).casefold() < other.text(0).casefold()
