"""The folder wizard: kohya's "Dreambooth/LoRA Folder preparation" as a dialog.

It asks for the instance and class prompts, the folder of training images and its repeats, an optional
folder of regularisation images and its repeats, and a destination; then runs
:func:`patina.core.dataset.wizard.prepare_folders` on a background thread (it copies files), showing a busy bar.
Errors are shown in the dialog; on success ``prepared`` carries the result.
"""

from __future__ import annotations

from html import escape
import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QFrame, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QSizePolicy, QVBoxLayout)

from patina.core.dataset.images import is_image_name
from patina.core.dataset.summary import epoch_arithmetic
from patina.core.dataset.wizard import prepare_folders
from patina.core.errors import PatinaError
from patina.gui.widgets import ERROR_COLOR, NoWheelSpinBox, PathEdit
from patina.gui.tasks import run_task

# kohya's default. Patina, like kohya, defaults to 1 epoch and computes the steps from the images, so the
# repeats carry the whole schedule: 40 × a typical 15-30 images = 600-1,200 steps at batch size 1, the
# usual range for a character or style LoRA. Guides written for kohya then apply unchanged.
DEFAULT_REPEATS = 40
DEFAULT_REG_REPEATS = 1


def _count_images(folder: str) -> int | None:
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if not e.name.startswith(".") and is_image_name(e.name) and e.is_file())
    except OSError:
        return None


class FolderWizardDialog(QDialog):
    """Build ``<dest>/img/<N>_<instance> <class>`` (+ reg, log, model) from a plain folder of images."""

    prepared = Signal(object)   # patina.core.dataset.wizard.PreparedFolders

    def __init__(self, parent=None, values: dict | None = None):
        super().__init__(parent)
        self.setWindowTitle("Prepare training folders")
        self.setModal(True)
        self.result_folders = None
        self._running = False

        self.instance = QLineEdit(self)
        self.instance.setPlaceholderText("a rare word for your subject, e.g. sks")
        self.instance.setToolTip("The trigger word you will type in prompts to get your subject")
        self.klass = QLineEdit(self)
        self.klass.setPlaceholderText("what it is, e.g. dog, person, style")
        self.images = PathEdit("dir", title="Folder with your training images", parent=self)
        self.repeats = NoWheelSpinBox(self)
        self.repeats.setRange(1, 10000)
        self.repeats.setMinimumWidth(90)
        self.repeats.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.repeats.setValue(DEFAULT_REPEATS)
        self.repeats.setToolTip("How many times each image is seen per epoch (kohya's default is 40)")
        self.repeats_hint = QLabel(self)
        self.repeats_hint.setStyleSheet("color: palette(placeholder-text);")
        self.reg_images = PathEdit("dir", title="Folder with regularisation images (optional)", parent=self)
        self.reg_images.line.setPlaceholderText("Optional: generic pictures of the class")
        self.reg_repeats = NoWheelSpinBox(self)
        self.reg_repeats.setRange(0, 10000)
        self.reg_repeats.setMinimumWidth(90)
        self.reg_repeats.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.reg_repeats.setToolTip("How many times each regularisation image is used per epoch (0: none)")
        self.reg_repeats.setValue(DEFAULT_REG_REPEATS)
        self.dest = PathEdit("dir", title="Destination training folder", parent=self)
        self.dest.line.setPlaceholderText("A new folder for this training, e.g. ~/lora/sks-dog")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.addRow("Instance prompt:", self.instance)
        form.addRow("Class prompt:", self.klass)
        form.addRow("Training images:", self.images)
        form.addRow("Repeats:", self.repeats)
        form.addRow("", self.repeats_hint)
        form.addRow("Regularisation images:", self.reg_images)
        form.addRow("Regularisation repeats:", self.reg_repeats)
        form.addRow("Destination folder:", self.dest)

        self.plan = QLabel(self)
        self.plan.setWordWrap(True)
        self.plan.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plan.setStyleSheet("color: palette(placeholder-text);")
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setMinimumHeight(self.fontMetrics().lineSpacing() * 3)
        self.status.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.busy = QProgressBar(self)
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setMaximumHeight(8)
        self.busy.hide()

        self.buttons = QDialogButtonBox(self)
        self.prepare_button = QPushButton("Prepare training folders", self)
        self.prepare_button.setDefault(True)
        self.buttons.addButton(self.prepare_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.prepare_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.reject)

        intro = QLabel("Copies your images into the folder layout training reads: "
                       "<code>img/&lt;repeats&gt;_&lt;instance&gt; &lt;class&gt;</code>, plus <code>reg</code>, "
                       "<code>model</code> and <code>log</code> folders. Your original images are only read, "
                       "never changed.", self)
        intro.setWordWrap(True)
        line = QFrame(self)
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.plan)
        layout.addWidget(line)
        layout.addWidget(self.busy)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(620)

        for w in (self.instance, self.klass):
            w.textChanged.connect(self._update_plan)
        for w in (self.images, self.reg_images, self.dest):
            w.textChanged.connect(self._update_plan)
        self.repeats.valueChanged.connect(self._update_plan)
        self.reg_repeats.valueChanged.connect(self._update_plan)
        self.images.editingFinished.connect(self._update_count)
        self.repeats.valueChanged.connect(self._update_count)
        self.reg_images.editingFinished.connect(self._update_count)
        self.reg_repeats.valueChanged.connect(self._update_count)
        self.batch_size = 1
        try:
            self.batch_size = max(1, int((values or {}).get("train_batch_size", 1)))
        except (TypeError, ValueError):
            pass
        self._image_count: int | None = None
        self.set_values(values or {})

    # --- values ------------------------------------------------------------------------------------
    def values(self) -> dict:
        return {"instance_prompt": self.instance.text(), "class_prompt": self.klass.text(),
                "images_dir": self.images.text(), "repeats": self.repeats.value(),
                "reg_images_dir": self.reg_images.text(), "reg_repeats": self.reg_repeats.value(),
                "dest_dir": self.dest.text()}

    def set_values(self, values: dict) -> None:
        self.instance.setText(str(values.get("instance_prompt", "")))
        self.klass.setText(str(values.get("class_prompt", "")))
        self.images.setText(str(values.get("images_dir", "")))
        self.reg_images.setText(str(values.get("reg_images_dir", "")))
        self.dest.setText(str(values.get("dest_dir", "")))
        for box, key, default in ((self.repeats, "repeats", DEFAULT_REPEATS),
                                  (self.reg_repeats, "reg_repeats", DEFAULT_REG_REPEATS)):
            try:
                box.setValue(int(values.get(key, default)))
            except (TypeError, ValueError):
                box.setValue(default)
        self._update_count()
        self._update_plan()

    def _update_count(self) -> None:
        folder = self.images.text().strip()
        self._image_count = _count_images(folder) if folder else None
        n, r = self._image_count, self.repeats.value()
        reg_folder = self.reg_images.text().strip()
        reg_n = (_count_images(reg_folder) or 0) if reg_folder else 0
        if n is None:
            self.repeats_hint.setText("Each image is trained this many times per epoch.")
        elif n == 0:
            self.repeats_hint.setText("That folder has no PNG, JPEG, WebP or BMP images.")
        else:
            # The same arithmetic as the plan dialog and `patina dataset check` (before bucketing).
            text = epoch_arithmetic([(n, r)], reg_n * self.reg_repeats.value(), self.batch_size).text
            self.repeats_hint.setText(text + ".")

    def _update_plan(self) -> None:
        dest = self.dest.text().strip()
        inst, cls = self.instance.text().strip(), self.klass.text().strip()
        if not dest:
            self.plan.setText("")
            return
        root = Path(dest).expanduser()
        concept = f"{self.repeats.value()}_{inst or '<instance>'} {cls or '<class>'}"
        lines = [str(root / "img" / concept)]
        if self.reg_images.text().strip() and self.reg_repeats.value() > 0:
            lines.append(str(root / "reg" / f"{self.reg_repeats.value()}_{cls or '<class>'}"))
        lines += [str(root / "model"), str(root / "log")]
        self.plan.setText("Will create:<br>" + "<br>".join("&nbsp;&nbsp;" + escape(x) for x in lines))

    # --- running -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Run the wizard on a background thread."""
        if self._running:
            return
        v = self.values()
        self._set_running(True)
        self.status.setStyleSheet("")
        self.status.setText("Copying images…")
        run_task(prepare_folders, v["instance_prompt"], v["class_prompt"], v["images_dir"], v["repeats"],
                 v["dest_dir"], v["reg_images_dir"] or None, v["reg_repeats"], on_done=self._on_done,
                 on_error=self._on_error, owner=self)

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, PatinaError):
            message = str(exc)
        elif isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            message = f"Could not prepare the folders{where}: {exc.strerror or exc}"
        else:
            message = f"Could not prepare the folders: {type(exc).__name__}: {exc}"
        self._on_failed(message)

    def _set_running(self, running: bool) -> None:
        self._running = running
        self.busy.setVisible(running)
        for w in (self.instance, self.klass, self.images, self.repeats, self.reg_images, self.reg_repeats,
                  self.dest, self.prepare_button, self.close_button):
            w.setEnabled(not running)
        self.setCursor(Qt.CursorShape.BusyCursor if running else Qt.CursorShape.ArrowCursor)

    def _on_failed(self, message: str) -> None:
        self._set_running(False)
        self.status.setStyleSheet(f"color: {ERROR_COLOR};")
        self.status.setText(escape(message).replace("\n", "<br>"))

    def _on_done(self, result) -> None:
        self._set_running(False)
        self.result_folders = result
        parts = [f"<b>Done.</b> Copied {result.copied} image(s) into <code>{escape(str(result.concept_dir))}</code>"]
        if result.reg_dir is not None:
            parts[0] += f" and {result.reg_copied} regularisation image(s) into <code>{escape(str(result.reg_concept_dir))}</code>"
        parts[0] += ". The image, output and logging folders were filled in."
        parts += [f"• {escape(note)}" for note in result.notes]
        self.status.setStyleSheet("")
        self.status.setText("<br>".join(parts))
        self.prepare_button.setText("Prepare again")
        self.close_button.setText("Done")
        self.close_button.setDefault(True)
        self.prepared.emit(result)

    def reject(self) -> None:
        if self._running:
            return   # the copy cannot be interrupted half way; the dialog closes when it is done
        super().reject()

    def closeEvent(self, event):  # noqa: N802
        if self._running:
            event.ignore()
            return
        super().closeEvent(event)

