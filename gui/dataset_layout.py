"""The Dataset tab's widgets and how they are laid out (the toolbar, the grid or the empty-folder page, the
side panels). A part of :class:`patina.gui.dataset_tab.DatasetTab`, which wires and drives them.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSplitter, QStackedWidget,
                               QTabWidget, QToolButton, QVBoxLayout, QWidget)

from patina.gui.caption_batch import BatchPanel, TagFrequencyPanel
from patina.gui.caption_editor import CaptionPanel
from patina.gui.image_grid import ImageGridView
from patina.gui.widgets import ERROR_COLOR, Banner

CONVENTION_HTML = (
    "Training reads the images in <b>subfolders named <code>&lt;repeats&gt;_&lt;name&gt;</code></b> of the "
    "image folder, for example <code>img/40_sks dog/</code>. Each image in <code>40_sks dog</code> is trained "
    "40 times per epoch, and <code>sks dog</code> is its caption when it has no caption file.<br><br>"
    "Set the <b>Image folder</b> to the folder that <i>holds</i> those subfolders (<code>img</code>), not to "
    "a subfolder itself. Starting from a plain folder of pictures? The wizard builds the layout for you "
    "(your originals are only read).")

SOURCE_TRAIN = "train"
SOURCE_REG = "reg"


class DatasetTabLayout:
    """Mixed into DatasetTab: :meth:`_build_ui` creates the widgets as attributes of the tab."""

    # --- UI -----------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.source_combo = QComboBox(self)
        self.source_combo.addItem("Training images", SOURCE_TRAIN)
        self.source_combo.addItem("Regularisation images", SOURCE_REG)
        self.source_combo.setToolTip("Browse the training images or the regularisation images")
        self.source_combo.setVisible(False)   # only when a regularisation folder is set
        self.folder_combo = QComboBox(self)
        self.folder_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.folder_combo.setMinimumContentsLength(14)
        self.folder_combo.setToolTip("Show the images of one concept folder, or of all of them")
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter by caption text or file name (commas: all must match)")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setMinimumWidth(220)
        self.counter = QLabel(self)
        self.counter.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcut(QKeySequence.StandardKey.Redo)
        self.prev_action = QAction("Previous image", self)
        self.prev_action.setShortcut(QKeySequence("Alt+Up"))
        self.next_action = QAction("Next image", self)
        self.next_action.setShortcut(QKeySequence("Alt+Down"))
        for a in (self.undo_action, self.redo_action, self.prev_action, self.next_action):
            a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(a)
        self.undo_action.setEnabled(False)
        self.redo_action.setEnabled(False)
        self.undo_button = QToolButton(self)
        self.undo_button.setDefaultAction(self.undo_action)
        self.redo_button = QToolButton(self)
        self.redo_button.setDefaultAction(self.redo_action)
        self.reload_button = QPushButton("Reload", self)
        self.reload_button.setToolTip("Read the folder again (after adding or removing files elsewhere)")
        self.caption_button = QPushButton("Caption images…", self)
        self.caption_button.setToolTip("Write a first draft of the captions with BLIP (sentences) or the WD14 tagger "
                                       "(tags); preview first, undo in one step")
        self.wizard_button = QPushButton("Prepare folders…", self)
        self.wizard_button.setToolTip("Build the img/N_name, reg, model and log folders from a plain folder of images")

        top = QHBoxLayout()
        top.setSpacing(8)
        top.addWidget(self.source_combo)
        self.folder_label = QLabel("Folder:", self)
        top.addWidget(self.folder_label)
        top.addWidget(self.folder_combo)
        top.addWidget(self.filter_edit, 1)
        top.addSpacing(8)
        top.addWidget(self.counter)
        top.addStretch(0)   # keeps the buttons at their size while the filter box is hidden
        top.addSpacing(8)
        top.addWidget(self.undo_button)
        top.addWidget(self.redo_button)
        top.addWidget(self.reload_button)
        top.addWidget(self.caption_button)
        top.addWidget(self.wizard_button)

        self.banner = Banner(self)

        # empty state
        self.empty = QWidget(self)
        self.empty_title = QLabel(self.empty)
        font = self.empty_title.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        self.empty_title.setFont(font)
        self.empty_problem = QLabel(self.empty)
        self.empty_problem.setWordWrap(True)
        self.empty_problem.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.empty_problem.setStyleSheet(f"color: {ERROR_COLOR};")
        self.empty_text = QLabel(CONVENTION_HTML, self.empty)
        self.empty_text.setWordWrap(True)
        self.empty_text.setTextFormat(Qt.TextFormat.RichText)
        self.empty_wizard = QPushButton("Prepare training folders…", self.empty)
        self.empty_wizard.setDefault(True)
        self.empty_wizard.setMinimumHeight(self.empty_wizard.sizeHint().height() + 10)
        self.empty_wizard.setStyleSheet("padding: 4px 16px;")
        box = QWidget(self.empty)
        box.setMaximumWidth(640)
        bl = QVBoxLayout(box)
        bl.setSpacing(12)
        bl.addWidget(self.empty_title)
        bl.addWidget(self.empty_problem)
        bl.addWidget(self.empty_text)
        self.empty_demo = QPushButton("Try the demo", self.empty)
        self.empty_demo.setObjectName("tryDemoButton")
        self.empty_demo.setToolTip("Copy a small demo dataset into a new folder (Documents/Patina demo) and train a "
                                   "LoRA on the tiny demo model that comes with Patina: a few minutes, no GPU needed")
        self.empty_demo.setMinimumHeight(self.empty_wizard.minimumHeight())
        self.empty_demo.setStyleSheet("padding: 4px 16px;")
        row = QHBoxLayout()
        row.addWidget(self.empty_wizard)
        row.addWidget(self.empty_demo)
        row.addStretch(1)
        bl.addLayout(row)
        self.empty_demo_note = QLabel("New to LoRA training? <b>Try the demo</b> trains a small LoRA on a tiny "
                                      "model that comes with Patina, in a few minutes, even without a GPU.",
                                      self.empty)
        self.empty_demo_note.setWordWrap(True)
        self.empty_demo_note.setStyleSheet("color: palette(placeholder-text);")
        bl.addWidget(self.empty_demo_note)
        el = QVBoxLayout(self.empty)
        el.addStretch(1)
        eh = QHBoxLayout()
        eh.addStretch(1)
        eh.addWidget(box, 3)
        eh.addStretch(1)
        el.addLayout(eh)
        el.addStretch(2)

        # grid + details
        self.grid = ImageGridView(self)
        self.grid.setModel(self.proxy)
        self.model.device_pixel_ratio = self.devicePixelRatioF()
        self.caption_panel = CaptionPanel(self.store, self.undo_stack, self)
        self.batch_panel = BatchPanel(self)
        self.tag_panel = TagFrequencyPanel(self)
        self.side = QTabWidget(self)
        self.side.setDocumentMode(True)
        self.side.addTab(self.caption_panel, "Caption")
        self.side.addTab(self.batch_panel, "All captions")
        self.side.addTab(self.tag_panel, "Tag frequency")
        side_box = QWidget(self)
        sl = QVBoxLayout(side_box)
        sl.setContentsMargins(8, 0, 0, 0)
        sl.addWidget(self.side)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.grid)
        self.splitter.addWidget(side_box)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.grid.setMinimumWidth(300)
        side_box.setMinimumWidth(380)
        self.splitter.setSizes([760, 480])

        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.splitter)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 6)
        layout.setSpacing(6)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.status)

        self._filter_timer = QTimer(self, singleShot=True, interval=150)
        self._counter_timer = QTimer(self, singleShot=True, interval=80)
        self._tags_timer = QTimer(self, singleShot=True, interval=250)
