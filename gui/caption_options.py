"""The option pages of the "Caption images" dialog (:mod:`patina.gui.caption_dialog`): BLIP's generation
settings and the WD14 tagger's thresholds and switches, each turned into its core options object."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QRadioButton, QSpinBox, QWidget

from patina.core.caption.blip import BlipOptions
from patina.core.caption.wd14 import TaggerOptions
from patina.gui.widgets import FloatSpinBox


def spin_box(low: int, high: int, value: int, parent) -> QSpinBox:
    box = QSpinBox(parent)
    box.setRange(low, high)
    box.setValue(value)
    return box


def fraction_box(value: float, parent) -> FloatSpinBox:
    box = FloatSpinBox(parent)
    box.setRange(0.0, 1.0)
    box.setSingleStep(0.05)
    box.setDecimals(2)
    box.setValue(value)
    box.setMinimumWidth(90)
    return box


LABEL_WIDTH = 190


def options_form(parent=None) -> QFormLayout:
    form = QFormLayout(parent)
    form.setContentsMargins(0, 0, 0, 0)
    return form


def add_row(form: QFormLayout, text: str, field) -> None:
    """A row whose label column is as wide in every form of the options box, so the fields line up."""
    label = QLabel(text)
    label.setMinimumWidth(LABEL_WIDTH)
    form.addRow(label, field)


class BlipPage(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        d = BlipOptions()
        self.beam = QRadioButton("Beam search", self)
        self.sampling = QRadioButton("Nucleus sampling", self)
        self.beam.setChecked(True)
        self.beams = spin_box(1, 16, d.num_beams, self)
        self.top_p = fraction_box(d.top_p, self)
        self.min_length = spin_box(0, 200, d.min_length, self)
        self.max_length = spin_box(1, 200, d.max_length, self)
        how = QHBoxLayout()
        how.addWidget(self.beam)
        how.addWidget(self.sampling)
        how.addStretch(1)
        form = options_form(self)
        add_row(form, "Method:", how)
        add_row(form, "Beams:", self.beams)
        add_row(form, "Top p:", self.top_p)
        add_row(form, "Min / max length (tokens):", pair(self.min_length, self.max_length))
        self.beam.toggled.connect(self._sync)
        self._sync()

    def _sync(self) -> None:
        self.beams.setEnabled(self.beam.isChecked())
        self.top_p.setEnabled(not self.beam.isChecked())

    def options(self, batch_size: int) -> BlipOptions:
        return BlipOptions(sampling=self.sampling.isChecked(), num_beams=self.beams.value(), top_p=self.top_p.value(),
                           min_length=self.min_length.value(), max_length=self.max_length.value(),
                           batch_size=batch_size)


class TaggerPage(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        d = TaggerOptions()
        self.general = fraction_box(d.general_threshold, self)
        self.character = fraction_box(d.character_threshold, self)
        self.exclude = QLineEdit(self)
        self.exclude.setPlaceholderText("comma-separated, e.g. simple background, white background")
        self.underscores = QCheckBox("Replace underscores with spaces", self)
        self.underscores.setChecked(d.replace_underscores)
        self.by_confidence = QCheckBox("Most likely tags first (else in the tag list's order)", self)
        self.by_confidence.setChecked(d.sort_by_confidence)
        self.ratings = QCheckBox("Add the rating tag (general, sensitive, …)", self)
        self.max_tags = spin_box(0, 200, 0, self)
        self.max_tags.setSpecialValueText("no limit")
        self.max_tags.setSuffix(" tags")
        form = options_form(self)
        add_row(form, "General tags, score at least:", pair(self.general))
        add_row(form, "Characters, score at least:", pair(self.character))
        add_row(form, "Exclude tags:", self.exclude)
        add_row(form, "At most:", pair(self.max_tags))
        for box in (self.underscores, self.by_confidence, self.ratings):
            add_row(form, "", box)

    def options(self, batch_size: int) -> TaggerOptions:
        return TaggerOptions(general_threshold=self.general.value(), character_threshold=self.character.value(),
                             exclude=[t.strip() for t in self.exclude.text().split(",") if t.strip()],
                             replace_underscores=self.underscores.isChecked(),
                             sort_by_confidence=self.by_confidence.isChecked(), rating_tags=self.ratings.isChecked(),
                             max_tags=self.max_tags.value(), batch_size=batch_size)


def pair(*widgets: QWidget) -> QHBoxLayout:
    """Fields side by side at their natural width."""
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    row.addStretch(1)
    return row
