"""The Tools tab: Verify, Resize, Merge LoRAs, Merge into checkpoint and Extract, one page each.

Each page runs its :mod:`patina.core.lora` tool on a worker thread (see :mod:`patina.gui.tool_page`): progress
per module, Cancel (no output is left behind), the report or a one-line error in the log. The output is
proposed next to the input with a suffix and is never allowed to be one of the inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QHBoxLayout, QListWidget, QStackedWidget, QWidget

from patina.gui.tool_page import LORA_FILTER, MODEL_FILTER, LoraTable, OutputPathEdit, ToolPage, existing
from patina.gui.widgets import FloatSpinBox, NoWheelComboBox, NoWheelSpinBox, PathEdit

DYNAMIC = [("Fixed rank", None), ("sv_ratio", "sv_ratio"), ("sv_fro", "sv_fro"), ("sv_cumulative", "sv_cumulative")]
PRECISIONS = ["fp16", "bf16", "float"]
DEVICES = ["auto", "cpu", "cuda"]


def _spin(low: int, high: int, value: int, special: str = "") -> NoWheelSpinBox:
    s = NoWheelSpinBox()
    s.setRange(low, high)
    s.setValue(value)
    if special:
        s.setSpecialValueText(special)
    return s


def _combo(items) -> NoWheelComboBox:
    c = NoWheelComboBox()
    for item in items:
        label, data = item if isinstance(item, tuple) else (item, item)
        c.addItem(label, data)
    return c


def _float(value: float, low: float, high: float, step: float) -> FloatSpinBox:
    f = FloatSpinBox()
    f.setDecimals(4)
    f.setRange(low, high)
    f.setSingleStep(step)
    f.setValue(value)
    f.setMinimumWidth(110)
    return f


def _stem(path: str) -> str:
    p = Path(path.strip().rstrip("/\\"))
    return p.stem if p.suffix.lower() in (".safetensors", ".ckpt") else p.name


class _DynamicFields:
    """Fixed rank, or kohya's dynamic rank methods with their parameter."""

    def add_dynamic(self, form) -> None:
        self.dynamic = _combo(DYNAMIC)
        self.dynamic_param = _float(0.9, 0.0, 1000.0, 0.05)
        self.dynamic_param.setToolTip("sv_ratio: keep singular values above max/ratio (e.g. 8); sv_fro and "
                                      "sv_cumulative: the share of energy to keep (0–1, e.g. 0.9)")
        self.dynamic_param.setEnabled(False)
        self.dynamic.currentIndexChanged.connect(self._dynamic_changed)
        form.addRow("Rank choice", self.dynamic)
        form.addRow("Dynamic parameter", self.dynamic_param)

    def _dynamic_changed(self, *_a) -> None:
        method = self.dynamic.currentData()
        self.dynamic_param.setEnabled(bool(method))
        value = self.dynamic_param.value()
        if method == "sv_ratio" and value < 1:           # a ratio of singular values: ≥ 1
            self.dynamic_param.setValue(8.0)
        elif method in ("sv_fro", "sv_cumulative") and not 0 < value <= 1:   # a share: (0, 1]
            self.dynamic_param.setValue(0.9)

    def dynamic_kwargs(self) -> dict[str, Any]:
        method = self.dynamic.currentData()
        return {"dynamic": method, "dynamic_param": self.dynamic_param.value() if method else None}


class VerifyPage(ToolPage):
    title = "Verify"
    run_text = "Verify"
    blurb = "What a LoRA file holds and whether A1111, Forge, ComfyUI, InvokeAI and diffusers load it."

    def build(self) -> None:
        self.lora = PathEdit("file", LORA_FILTER)
        self.model = PathEdit("file_or_dir", MODEL_FILTER)
        self.model.line.setPlaceholderText("Optional: a base model file or diffusers folder to check the shapes")
        self.form.addRow("LoRA file", self.lora)
        self.form.addRow("Base model", self.model)

    def inputs(self) -> list[str]:
        return [self.lora.text(), self.model.text()]

    def prepare(self):
        kwargs = {"path": existing(self.lora.text(), "LoRA file")}
        if self.model.text().strip():
            kwargs["model"] = existing(self.model.text(), "base model")
        return "verify", kwargs


class ResizePage(_DynamicFields, ToolPage):
    title = "Resize"
    blurb = "A LoRA or LoCon at a lower rank (SVD per module), fixed or chosen per module; reports the energy kept."

    def build(self) -> None:
        self.src = PathEdit("file", LORA_FILTER)
        self.rank = _spin(1, 1024, 16)
        self.rank.setToolTip("The rank of every module; with a dynamic rank choice, the largest rank allowed")
        self.conv_rank = _spin(0, 1024, 0, "same as rank")
        self.conv_rank.setToolTip("The rank of 3×3 conv (LoCon) modules; by default the new rank, or their own "
                                  "rank when that is already lower")
        self.form.addRow("LoRA file", self.src)
        self.form.addRow("New rank", self.rank)
        self.form.addRow("Conv 3×3 rank", self.conv_rank)
        self.add_dynamic(self.form)
        self.precision = _combo(PRECISIONS)
        self.device = _combo(DEVICES)
        self.out = OutputPathEdit(LORA_FILTER)
        self.form.addRow("Save as", self.precision)
        self.form.addRow("Device", self.device)
        self.form.addRow("Output file", self.out)
        self.src.textChanged.connect(self._propose)
        self.rank.valueChanged.connect(self._propose)

    def _propose(self, *_a) -> None:
        if self.src.text().strip():
            p = Path(self.src.text().strip())
            self.propose(self.out, p.parent, f"{_stem(p.name)}-r{self.rank.value()}", ".safetensors")

    def inputs(self) -> list[str]:
        return [self.src.text()]

    def prepare(self):
        src = existing(self.src.text(), "LoRA file")
        return "resize", {"src": src, "dst": self.check_output(self.out.text()), "rank": self.rank.value(),
                          "conv_rank": self.conv_rank.value() or None, **self.dynamic_kwargs(),
                          "precision": self.precision.currentText(), "device": self.device.currentText()}


class MergePage(ToolPage):
    title = "Merge LoRAs"
    blurb = ("Several LoRAs of one model family into one: concatenate the ranks (exact) or SVD to a chosen "
             "rank. A weight scales each LoRA.")

    def build(self) -> None:
        self.loras = LoraTable()
        self.mode = _combo([("Concatenate ranks (exact)", "concat"), ("SVD to a rank", "svd")])
        self.rank = _spin(1, 1024, 32)
        self.conv_rank = _spin(0, 1024, 0, "same as rank")
        self.precision = _combo(PRECISIONS)
        self.device = _combo(DEVICES)
        self.out = OutputPathEdit(LORA_FILTER)
        for label, w in (("LoRA files", self.loras), ("Mode", self.mode), ("Rank", self.rank),
                         ("Conv 3×3 rank", self.conv_rank), ("Save as", self.precision), ("Device", self.device),
                         ("Output file", self.out)):
            self.form.addRow(label, w)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self._mode_changed()
        self.loras.changed.connect(self._propose)

    def _mode_changed(self, *_a) -> None:
        svd = self.mode.currentData() == "svd"
        self.rank.setEnabled(svd)
        self.conv_rank.setEnabled(svd)

    def _propose(self) -> None:
        paths = self.loras.paths()
        if paths:
            self.propose(self.out, Path(paths[0]).parent, f"{_stem(paths[0])}-merged", ".safetensors")

    def inputs(self) -> list[str]:
        return self.loras.paths()

    def prepare(self):
        entries = self.loras.entries()
        svd = self.mode.currentData() == "svd"
        return "merge", {"inputs": entries, "dst": self.check_output(self.out.text()),
                         "mode": self.mode.currentData(), "rank": self.rank.value() if svd else None,
                         "conv_rank": (self.conv_rank.value() or None) if svd else None,
                         "precision": self.precision.currentText(), "device": self.device.currentText()}


class MergeIntoPage(ToolPage):
    title = "Merge into checkpoint"
    blurb = ("Bake LoRAs into a base model: a single .safetensors file stays a single file (same key layout), "
             "a diffusers folder gives a new folder.")

    def build(self) -> None:
        self.base = PathEdit("file_or_dir", MODEL_FILTER)
        self.loras = LoraTable()
        self.dtype = _combo(["fp16", "bf16", "fp32"])
        self.out = OutputPathEdit("Models (*.safetensors);;A folder (give a new name)")
        for label, w in (("Base model", self.base), ("LoRA files", self.loras), ("Save as", self.dtype),
                         ("Output", self.out)):
            self.form.addRow(label, w)
        self.base.textChanged.connect(self._propose)
        self.loras.changed.connect(self._propose)

    def _folder_base(self) -> bool:
        return Path(self.base.text().strip()).expanduser().is_dir()

    def _propose(self, *_a) -> None:
        base = self.base.text().strip()
        if not base:
            return
        p = Path(base.rstrip("/\\"))
        names = self.loras.paths()
        stem = f"{_stem(base)}-{_stem(names[0]) if names else 'merged'}"
        self.propose(self.out, p.parent, stem, "" if self._folder_base() else ".safetensors")

    def inputs(self) -> list[str]:
        return [self.base.text(), *self.loras.paths()]

    def prepare(self):
        base = existing(self.base.text(), "base model")
        entries = self.loras.entries()
        return "merge_into", {"base": base, "loras": entries,
                              "dst": self.check_output(self.out.text(), folder=self._folder_base()),
                              "dtype": self.dtype.currentText()}


class ExtractPage(_DynamicFields, ToolPage):
    title = "Extract"
    blurb = "A LoRA from the difference between a fine-tuned model and its base (SVD per module)."

    def build(self) -> None:
        self.base = PathEdit("file_or_dir", MODEL_FILTER)
        self.tuned = PathEdit("file_or_dir", MODEL_FILTER)
        self.rank = _spin(1, 1024, 32)
        self.conv_rank = _spin(0, 1024, 0, "none (no 3×3 conv)")
        for label, w in (("Base model", self.base), ("Fine-tuned model", self.tuned), ("Rank", self.rank),
                         ("Conv 3×3 rank", self.conv_rank)):
            self.form.addRow(label, w)
        self.add_dynamic(self.form)
        self.clamp = _float(0.99, 0.5, 1.0, 0.01)
        self.min_diff = _float(0.01, 0.0, 10.0, 0.005)
        self.precision = _combo(PRECISIONS)
        self.device = _combo(DEVICES)
        self.out = OutputPathEdit(LORA_FILTER)
        for label, w in (("Clamp quantile", self.clamp), ("Minimum difference", self.min_diff),
                         ("Save as", self.precision), ("Device", self.device), ("Output file", self.out)):
            self.form.addRow(label, w)
        self.tuned.textChanged.connect(self._propose)
        self.rank.valueChanged.connect(self._propose)

    def _propose(self, *_a) -> None:
        tuned = self.tuned.text().strip()
        if tuned:
            p = Path(tuned.rstrip("/\\"))
            self.propose(self.out, p.parent, f"{_stem(tuned)}-lora-r{self.rank.value()}", ".safetensors")

    def inputs(self) -> list[str]:
        return [self.base.text(), self.tuned.text()]

    def prepare(self):
        base = existing(self.base.text(), "base model")
        tuned = existing(self.tuned.text(), "fine-tuned model")
        return "extract", {"base": base, "tuned": tuned, "dst": self.check_output(self.out.text()),
                           "rank": self.rank.value(), "conv_rank": self.conv_rank.value(), **self.dynamic_kwargs(),
                           "clamp_quantile": self.clamp.value(), "min_diff": self.min_diff.value(),
                           "precision": self.precision.currentText(), "device": self.device.currentText()}


class ToolsTab(QWidget):
    """A list of the tools on the left, the chosen tool's page on the right."""

    PAGES = {"verify": VerifyPage, "resize": ResizePage, "merge": MergePage, "merge_into": MergeIntoPage,
             "extract": ExtractPage}

    def __init__(self, parent=None):
        super().__init__(parent)
        self.list = QListWidget(self)
        self.stack = QStackedWidget(self)
        self.pages: dict[str, ToolPage] = {}
        for key, cls in self.PAGES.items():
            page = cls(self.stack)
            self.pages[key] = page
            self.stack.addWidget(page)
            self.list.addItem(page.title)
        self.list.setSpacing(3)
        self.list.setFixedWidth(max(170, self.list.sizeHintForColumn(0) + 24))
        self.list.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.list.setCurrentRow(0)
        layout = QHBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(self.stack, 1)

    def show_page(self, key: str) -> ToolPage:
        self.list.setCurrentRow(list(self.pages).index(key))
        return self.pages[key]

    def is_running(self) -> bool:
        return any(p.is_running() for p in self.pages.values())

    def abandon(self) -> None:
        """The window closes: stop every running tool (each removes its partial output)."""
        for page in self.pages.values():
            page.abandon()


__all__ = ["ToolsTab", "VerifyPage", "ResizePage", "MergePage", "MergeIntoPage", "ExtractPage"]
