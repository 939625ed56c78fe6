"""The Test tab: try LoRA files on a base model as a grid (rows = LoRA files, e.g. every epoch of a run;
columns = LoRA weights or prompts), rendered in the background with progress and cancel, shown like the
Monitor's samples (click to enlarge, tick two rows to compare) and saved as one PNG with its settings."""

from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QListWidget, QListWidgetItem, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea,
                               QSpinBox, QSplitter, QVBoxLayout, QWidget, QAbstractItemView, QFrame)

from patina.core.config.schema import SAMPLERS
from patina.core.errors import PatinaError
from patina.core.lora.grid import DEFAULT_WEIGHTS, run_outputs, save_grid
from patina.core.train.events import Sample
from patina.gui.sample_gallery import SampleGallery
from patina.gui.tasks import Lane, Task, error_text, run_task

AXIS_CHOICES = (("weights", "LoRA weights"), ("prompts", "Prompts"))
DEFAULT_PROMPT = "a photo"


def _remove_folder(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class GridGallery(SampleGallery):
    """The grid's cells: one row per LoRA file, one column per (weight or prompt, seed)."""

    def __init__(self, parent=None):
        self.row_labels: list[str] = []
        self.column_labels: list[list[str]] = []
        super().__init__(parent, row_title=self._row_name, column_title=self._column_name,
                         hint="Render a grid to see each LoRA file (rows) at each weight or prompt (columns). "
                              "Click an image to enlarge it; tick two rows to compare them side by side.")

    def _row_name(self, key: tuple[int, int]) -> str:
        return self.row_labels[key[0]] if key[0] < len(self.row_labels) else f"Row {key[0] + 1}"

    def _column_name(self, index: int, prompt: str) -> str:
        label = self.column_labels[index] if index < len(self.column_labels) else [prompt]
        head = label[0] if len(label[0]) <= 40 else label[0][:39] + "…"
        rest = "<br>".join(html.escape(t) for t in label[1:])
        return f"<b>{html.escape(head)}</b>" + (f"<br><span style='color: gray'>{rest}</span>" if rest else "")

    def dialog_text(self, s: Sample, key: tuple[int, int]) -> dict:
        label = " · ".join(self.column_labels[s.index]) if s.index < len(self.column_labels) else ""
        return {"title": f"{self._row_name(key)} — {label}",
                "caption": f"<b>{html.escape(self._row_name(key))}</b> · {html.escape(label)}<br>"
                           f"<b>Prompt:</b> {html.escape(s.prompt)}"}


class LoraTestTab(QWidget):
    """``config_source`` gives the current configuration (base model, output folder and name, sample prompts)."""

    rendered = Signal(object)        # the GridResult, once shown

    def __init__(self, parent=None, *, config_source: Callable[[], Mapping[str, Any]] | None = None):
        super().__init__(parent)
        self.config_source = config_source
        self.result = None
        self.task: Task | None = None
        self.lane = Lane(1)          # one render at a time: a new one waits until a cancelled one has stopped
        self._cells_dir: str | None = None
        self._filled = False

        # -- settings ----------------------------------------------------------------------------------------
        panel = QWidget(self)
        outer = QVBoxLayout(panel)
        form = QFormLayout()
        outer.addLayout(form)
        outer.addStretch(1)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.model_edit = QLineEdit(panel)
        self.model_edit.setPlaceholderText("base model: .safetensors file or diffusers folder")
        self.model_edit.setMinimumWidth(120)
        model_file = QPushButton("File…", panel)
        model_file.clicked.connect(self._browse_model_file)
        model_folder = QPushButton("Folder…", panel)
        model_folder.clicked.connect(self._browse_model_folder)
        row = QHBoxLayout()
        row.addWidget(self.model_edit, 1)
        row.addWidget(model_file)
        row.addWidget(model_folder)
        form.addRow("Base model", row)

        self.lora_list = QListWidget(panel)
        self.lora_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.lora_list.setMinimumHeight(90)
        self.lora_list.setMaximumHeight(170)
        self.lora_list.setToolTip("One grid row per LoRA file, in this order")
        add_files = QPushButton("Add files…", panel)
        add_files.clicked.connect(self._browse_loras)
        self.add_run_button = QPushButton("Add run outputs", panel)
        self.add_run_button.setToolTip("Every LoRA file the current configuration's run saved: "
                                       "<output folder>/<output name>*.safetensors")
        self.add_run_button.clicked.connect(self.add_run_outputs)
        remove = QPushButton("Remove", panel)
        remove.clicked.connect(self._remove_selected)
        clear = QPushButton("Clear", panel)
        clear.clicked.connect(self.lora_list.clear)
        buttons = QVBoxLayout()
        for b in (add_files, self.add_run_button, remove, clear):
            buttons.addWidget(b)
        buttons.addStretch(1)
        box = QHBoxLayout()
        box.addWidget(self.lora_list, 1)
        box.addLayout(buttons)
        form.addRow("LoRA files", box)

        self.prompts_edit = QPlainTextEdit(panel)
        self.prompts_edit.setPlaceholderText("one prompt per line, kohya syntax: a photo of sks dog --n blurry --s 20")
        self.prompts_edit.setMinimumHeight(70)
        self.prompts_edit.setMaximumHeight(130)
        form.addRow("Prompts", self.prompts_edit)
        self.seeds_edit = QLineEdit("1", panel)
        self.seeds_edit.setToolTip("Seeds, separated by commas; every prompt is drawn with each")
        form.addRow("Seeds", self.seeds_edit)
        self.weights_edit = QLineEdit(", ".join(f"{w:g}" for w in DEFAULT_WEIGHTS), panel)
        self.weights_edit.setToolTip("LoRA weights, separated by commas; 0 is the base model without the LoRA")
        form.addRow("Weights", self.weights_edit)
        self.axis_combo = QComboBox(panel)
        for key, text in AXIS_CHOICES:
            self.axis_combo.addItem(text, key)
        self.axis_combo.setToolTip("What the columns show side by side")
        form.addRow("Columns", self.axis_combo)
        self.sampler_combo = QComboBox(panel)
        self.sampler_combo.addItems(list(SAMPLERS))
        self.sampler_combo.setCurrentText("euler_a")
        self.steps_spin = QSpinBox(panel)
        self.steps_spin.setRange(1, 1000)
        self.steps_spin.setValue(20)
        self.cfg_spin = QDoubleSpinBox(panel)
        self.cfg_spin.setRange(0.0, 30.0)
        self.cfg_spin.setSingleStep(0.5)
        self.cfg_spin.setValue(7.0)
        sampling = QHBoxLayout()
        sampling.addWidget(self.sampler_combo, 1)
        sampling.addWidget(QLabel("Steps", panel))
        sampling.addWidget(self.steps_spin)
        sampling.addWidget(QLabel("CFG", panel))
        sampling.addWidget(self.cfg_spin)
        form.addRow("Sampler", sampling)

        self.render_button = QPushButton("Render grid", panel)
        self.render_button.setDefault(True)
        self.render_button.clicked.connect(self.render)
        self.cancel_button = QPushButton("Cancel", panel)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button = QPushButton("Save grid…", panel)
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_dialog)
        self.progress = QProgressBar(panel)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        actions = QHBoxLayout()
        actions.addWidget(self.render_button)
        actions.addWidget(self.cancel_button)
        actions.addStretch(1)
        actions.addWidget(self.save_button)
        form.addRow(actions)
        form.addRow(self.progress)
        self.status = QLabel("", panel)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.status)

        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(panel)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(panel.minimumSizeHint().width() + 20)

        # -- the grid ------------------------------------------------------------------------------------------
        self.gallery = GridGallery(self)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(scroll)
        split.addWidget(self.gallery)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([480, 800])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

    # -- the configuration's defaults -------------------------------------------------------------------------
    def _config(self) -> dict:
        try:
            return dict(self.config_source()) if self.config_source else {}
        except Exception:   # noqa: BLE001 - a half-typed form must not break the tab
            return {}

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._filled:
            self.fill_from_config()

    def fill_from_config(self) -> None:
        """Empty fields get the configuration's base model, its run's LoRA files and its sample prompts."""
        self._filled = True
        cfg = self._config()
        if not self.model_edit.text().strip():
            self.model_edit.setText(str(cfg.get("pretrained_model_name_or_path") or ""))
        if self.lora_list.count() == 0:
            self.add_run_outputs(quiet=True)
        if not self.prompts_edit.toPlainText().strip():
            self.prompts_edit.setPlainText(str(cfg.get("sample_prompts") or "").strip() or DEFAULT_PROMPT)
        sampler = str(cfg.get("sample_sampler") or "")
        if sampler in SAMPLERS:
            self.sampler_combo.setCurrentText(sampler)

    def add_run_outputs(self, quiet: bool = False) -> int:
        cfg = self._config()
        out, name = str(cfg.get("output_dir") or ""), str(cfg.get("output_name") or "")
        found = run_outputs(out, name) if out and name else []
        self.add_loras([str(p) for p in found])
        if not quiet:
            self.status.setText(f"Added {len(found)} LoRA file(s) of the run." if found else
                                f"No LoRA file of the run yet: nothing named {name or '<output name>'}*.safetensors "
                                f"in {out or '<output folder>'}.")
        return len(found)

    def add_loras(self, paths) -> None:
        have = set(self.lora_paths())
        for p in paths:
            if p not in have:
                item = QListWidgetItem(Path(p).name)
                item.setData(Qt.ItemDataRole.UserRole, p)
                item.setToolTip(p)
                self.lora_list.addItem(item)
                have.add(p)

    def lora_paths(self) -> list[str]:
        return [self.lora_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.lora_list.count())]

    def _remove_selected(self) -> None:
        for item in self.lora_list.selectedItems():
            self.lora_list.takeItem(self.lora_list.row(item))

    def _browse_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base model", self.model_edit.text(),
                                              "Checkpoints (*.safetensors *.ckpt);;All files (*)")
        if path:
            self.model_edit.setText(path)

    def _browse_model_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Base model (diffusers folder)", self.model_edit.text())
        if path:
            self.model_edit.setText(path)

    def _browse_loras(self) -> None:
        start = str(self._config().get("output_dir") or "")
        paths, _ = QFileDialog.getOpenFileNames(self, "LoRA files", start, "LoRA (*.safetensors)")
        self.add_loras(paths)

    # -- rendering -----------------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"base_path": self.model_edit.text().strip(), "lora_paths": self.lora_paths(),
                "prompts": self.prompts_edit.toPlainText(), "seeds": self.seeds_edit.text(),
                "weights": self.weights_edit.text(), "axis": self.axis_combo.currentData(),
                "sampler": self.sampler_combo.currentText(), "steps": self.steps_spin.value(),
                "cfg": self.cfg_spin.value()}

    def is_busy(self) -> bool:
        return self.task is not None

    def render(self) -> Task | None:
        if self.task is not None:
            return None
        settings = self.settings()
        if not settings["base_path"]:
            self.status.setText("Choose a base model first.")
            return None
        if not settings["lora_paths"]:
            self.status.setText("Add at least one LoRA file (Add files… or Add run outputs).")
            return None
        self._set_busy(True)
        self.status.setText("Loading the base model…")
        self.progress.setRange(0, 0)
        self.task = run_task(_render_job, settings, pass_task=True, lane=self.lane, owner=self,
                             on_done=self._show, on_error=self._failed, on_progress=self._progress,
                             what="Rendering the LoRA grid")
        return self.task

    def cancel(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        self.task = None
        self._set_busy(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText("Cancelled; the grid was not made.")

    def _set_busy(self, busy: bool) -> None:
        self.render_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.save_button.setEnabled(not busy and self.result is not None)

    def _progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.status.setText(message)

    def _failed(self, exc: BaseException) -> None:
        self.task = None
        self._set_busy(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        if isinstance(exc, PatinaError):
            self.status.setText(f"<span style='color: #c0392b'>{html.escape(str(exc), quote=False)}</span>".replace("\n", "<br>"))
        else:
            from patina.gui.tasks import report_error

            self.status.setText(html.escape(error_text(exc)))
            report_error(exc, "Rendering the LoRA grid")

    def _show(self, value) -> None:
        result, folder, paths = value
        self.task = None
        old, self._cells_dir = self._cells_dir, folder
        self.destroyed.connect(lambda *_a, f=folder: _remove_folder(f))
        self.result = result
        self.gallery.clear()
        self.gallery.row_labels = list(result.row_labels)
        self.gallery.column_labels = [list(c) for c in result.column_labels]
        for r, row in enumerate(result.cells):
            for c, cell in enumerate(row):
                self.gallery.add_sample(Sample(path=paths[r][c], prompt=cell.prompt, index=c, step=0, epoch=r))
        if old:
            _remove_folder(old)
        self._set_busy(False)
        rows, cols = result.shape
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.status.setText(f"{rows} row(s) × {cols} column(s). Save grid… writes it as one PNG with these settings.")
        self.rendered.emit(result)

    def save_to(self, path: str | Path) -> Path:
        if self.result is None:
            raise PatinaError("Render a grid first.")
        return save_grid(self.result, path)

    def _save_dialog(self) -> None:
        if self.result is None:
            return
        start = str(Path(str(self._config().get("output_dir") or Path.home())) / "lora-grid.png")
        path, _ = QFileDialog.getSaveFileName(self, "Save grid", start, "PNG image (*.png)")
        if not path:
            return
        if not path.lower().endswith(".png"):
            path += ".png"
        try:
            saved = self.save_to(path)
        except (PatinaError, OSError) as exc:
            self.status.setText(html.escape(error_text(exc)))
            return
        self.status.setText(f"Saved {html.escape(str(saved))}")


def _render_job(task: Task, settings: dict):
    """Worker thread: render the grid and write each cell to a temporary folder for the gallery."""
    from patina.core.lora.grid import render_lora_grid

    result = render_lora_grid(settings["base_path"], settings["lora_paths"], settings["prompts"],
                              settings["seeds"], settings["weights"], axis=settings["axis"],
                              sampler=settings["sampler"], steps=settings["steps"], cfg=settings["cfg"],
                              progress=task.progress, cancelled=lambda: task.cancelled)
    folder = tempfile.mkdtemp(prefix="patina-grid-")
    paths = []
    try:
        for r, row in enumerate(result.cells):
            paths.append([])
            for c, cell in enumerate(row):
                p = Path(folder) / f"r{r:03d}-c{c:03d}.png"
                cell.image.save(p, format="PNG")
                paths[-1].append(str(p))
    except BaseException:
        _remove_folder(folder)
        raise
    if task.cancelled:
        _remove_folder(folder)
    return result, folder, paths
