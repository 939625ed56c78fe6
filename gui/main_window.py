"""Patina's main window: the configuration bar, the Dataset / Training / Monitor tabs, and the document
life cycle (new, open, save, presets, recent files, unsaved changes, last session)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Mapping

from PySide6.QtCore import QByteArray, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QFont, QIcon, QKeySequence
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QInputDialog, QLabel, QMainWindow, QMenu,
                               QMessageBox, QPlainTextEdit, QSizePolicy, QStyle, QTabWidget, QToolBar, QToolButton,
                               QVBoxLayout)

from patina.core import __version__
from patina.core.config.files import (LoadResult, apply_preset, format_load_report, list_presets, read_config, save_config,
                         save_user_preset, write_kohya)
from patina.core.errors import PatinaError
from patina.core.config.schema import BY_KEY, defaults
from patina.core.paths import resources_dir, user_presets_dir
from patina.gui.dataset_tab import DatasetTab
from patina.gui.monitor_tab import MonitorTab
from patina.gui.param_pages import problem_text
from patina.gui.state import GuiState, load_state, save_state
from patina.gui.tasks import run_task
from patina.gui.training_tab import TrainingTab

TABS = ("dataset", "training", "monitor")
TAB_TITLES = {"dataset": "Dataset", "training": "Training", "monitor": "Monitor"}
CONFIG_FILTER = "Patina or kohya_ss config (*.json);;All files (*)"
DATASET_KEYS = ("train_data_dir", "reg_data_dir", "output_dir", "logging_dir")


def app_icon() -> QIcon:
    icons = resources_dir() / "icons"
    icon = QIcon()
    for size in (16, 32, 48, 64, 128, 256):
        png = icons / f"patina-{size}.png"
        if png.is_file():
            icon.addFile(str(png))
    if icon.isNull() and (icons / "patina.svg").is_file():
        icon = QIcon(str(icons / "patina.svg"))
    return icon


class ReportDialog(QDialog):
    """A readable, copyable report (what a loaded file contained, what was not carried over)."""

    def __init__(self, title: str, heading: str, text: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.report_text = text
        layout = QVBoxLayout(self)
        head = QLabel(heading, self)
        head.setWordWrap(True)
        layout.addWidget(head)
        body = QPlainTextEdit(self)
        body.setReadOnly(True)
        body.setPlainText(text)
        body.setFont(QFont("monospace"))
        body.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        layout.addWidget(body, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok, self)
        buttons.accepted.connect(self.accept)
        layout.addWidget(buttons)
        self.resize(720, 460)


class MainWindow(QMainWindow):
    """The main window. ``engine_fn``/``plan_fn`` replace the training engine (tests); ``restore_session``
    reopens the last config file and the window's geometry, tab and page."""

    def __init__(self, *, restore_session: bool = True, engine_fn=None, plan_fn=None,
                 detect_family: bool = True, probe_device: bool | None = None, parent=None):
        super().__init__(parent)
        # (changes, note) from patina.core.train.preflight.machine_defaults once the device is known (probed in the background)
        self.machine_defaults: tuple[dict, str] | None = None
        self.state: GuiState = load_state() if restore_session else GuiState()
        self._restore = restore_session
        self.path: Path | None = None
        self.imported_from: Path | None = None
        self._saved: dict[str, Any] = {}
        self._dirty = False
        self._quit_when_stopped = False
        self._dataset_sent: tuple[str, str] | None = None

        self.setWindowIcon(app_icon())
        self.setMinimumSize(760, 540)
        self.resize(1280, 800)

        self.training = TrainingTab(self, detect_family=detect_family)
        self.form = self.training.form
        self.monitor = MonitorTab(self, engine_fn=engine_fn, plan_fn=plan_fn, config_source=self._config_for_run)
        self.dataset_tab = DatasetTab(self)
        self.dataset_tab.batch_size_source = lambda: self.form.fields["train_batch_size"].getter()
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.dataset_tab, TAB_TITLES["dataset"])
        self.tabs.addTab(self.training, TAB_TITLES["training"])
        self.tabs.addTab(self.monitor, TAB_TITLES["monitor"])
        self.setCentralWidget(self.tabs)

        self._build_actions()
        self._build_toolbar()
        self._build_menus()
        self.path_label = QLabel(self)
        self.path_label.setStyleSheet("color: palette(placeholder-text); padding: 0 8px;")
        self.statusBar().addPermanentWidget(self.path_label)
        self._start_device_notice()

        self.form.changed.connect(self._form_changed)
        self.training.start_requested.connect(self.start_training)
        self.monitor.problems_found.connect(self._show_problems)
        self.monitor.fix_requested.connect(self.apply_fix)
        self.monitor.running_changed.connect(self._running_changed)
        self.monitor.finished.connect(self._run_finished)
        self.dataset_tab.folders_prepared.connect(self.apply_prepared_folders)
        self._dataset_timer = QTimer(self)
        self._dataset_timer.setSingleShot(True)
        self._dataset_timer.setInterval(300)
        self._dataset_timer.timeout.connect(self.sync_dataset_tab)

        self._mark_clean()
        if restore_session:
            self._restore_session()
        self.sync_dataset_tab()
        self._probe_device = restore_session if probe_device is None else probe_device
        self._probing = False
        if self._probe_device and self.path is None and self.imported_from is None:
            self._start_probe()

    def _start_probe(self) -> None:
        if self._probing or not self._probe_device:
            return
        self._probing = True
        # Without the probe the defaults stay as they are: nothing for the user to act on, so no report.
        run_task(_machine_defaults, on_done=self._machine_known, on_error=lambda exc: None, owner=self)

    def _machine_known(self, result: tuple[dict, str]) -> None:
        """The device is known: a new, untouched config takes the defaults this machine can run."""
        self.machine_defaults = result
        if self.path is None and self.imported_from is None and not self._dirty:
            self._apply_machine_defaults()

    def _apply_machine_defaults(self) -> None:
        changes, note = self.machine_defaults or ({}, "")
        base = defaults()
        current = self.form.values()
        todo = {k: v for k, v in changes.items() if current.get(k) == base.get(k)}
        if not todo:
            return
        self.form.set_values(todo)
        self._mark_clean()
        self.statusBar().showMessage(note, 30000)

    # -- construction -------------------------------------------------------------------------------------

    def _start_device_notice(self) -> None:
        """A one-line notice in the status bar when training would run on the CPU (checked off the GUI
        thread, without importing torch)."""
        from patina.gui.device_notice import cpu_training_reason

        self.device_label = QLabel(self)
        self.device_label.setStyleSheet("color: #b26a00; padding: 0 8px;")
        self.device_label.hide()
        self.statusBar().addWidget(self.device_label)
        # A notice is not worth an error: a failed check shows nothing.
        run_task(cpu_training_reason, owner=self, on_error=lambda exc: None,
                 on_done=lambda reason: reason and self._show_device_notice(reason))

    def _show_device_notice(self, text: str) -> None:
        self.device_label.setText("⚠ " + text)
        self.device_label.setToolTip(text)
        self.device_label.show()

    def _build_actions(self) -> None:
        st = self.style()

        def act(text, slot, shortcut=None, icon=None, tip=""):
            a = QAction(text, self)
            if shortcut is not None:
                a.setShortcut(shortcut)
            if icon is not None:
                a.setIcon(st.standardIcon(icon))
            if tip:
                a.setToolTip(tip)
                a.setStatusTip(tip)
            a.triggered.connect(slot)
            return a

        SP = QStyle.StandardPixmap
        self.act_new = act("New", self.new_config, QKeySequence.StandardKey.New, SP.SP_FileIcon,
                           "Start from the default settings")
        self.act_open = act("Open…", self.open_dialog, QKeySequence.StandardKey.Open, SP.SP_DialogOpenButton,
                            "Open a Patina config or import a kohya_ss LoRA config (.json)")
        self.act_save = act("Save", self.save, QKeySequence.StandardKey.Save, SP.SP_DialogSaveButton,
                            "Save the settings to the current file")
        self.act_save_as = act("Save As…", self.save_as, QKeySequence.StandardKey.SaveAs, None,
                               "Save the settings to a new file")
        self.act_export = act("Export for kohya_ss…", self.export_kohya, None, None,
                              "Write a JSON that kohya_ss's LoRA tab can load")
        self.act_save_preset = act("Save as preset…", self.save_as_preset, None, None,
                                   "Keep the current training settings (no paths) as a preset of your own")
        self.act_open_presets = act("Open presets folder", self._open_presets_folder)
        self.act_quit = act("Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_about = act("About Patina", self._about)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Configuration", self)
        tb.setObjectName("configBar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.addWidget(_bar_label("Configuration", tb))
        for a in (self.act_new, self.act_open, self.act_save, self.act_save_as):
            tb.addAction(a)
        tb.addSeparator()
        self.presets_menu = QMenu("Presets", self)
        self.presets_menu.aboutToShow.connect(self._fill_presets_menu)
        self.presets_button = QToolButton(tb)
        self.presets_button.setText("Presets")
        self.presets_button.setMenu(self.presets_menu)
        self.presets_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.presets_button.setToolTip("Apply a preset (your paths, names and prompts are kept) or save one")
        tb.addWidget(self.presets_button)
        self.recent_menu = QMenu("Recent files", self)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.recent_button = QToolButton(tb)
        self.recent_button.setText("Recent")
        self.recent_button.setMenu(self.recent_menu)
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        tb.addWidget(self.recent_button)
        self.addToolBar(tb)
        self.toolbar = tb
        self._fill_presets_menu()
        self._fill_recent_menu()

    def _build_menus(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        for a in (self.act_new, self.act_open):
            file_menu.addAction(a)
        file_menu.addMenu(self.recent_menu)
        file_menu.addSeparator()
        for a in (self.act_save, self.act_save_as, self.act_export):
            file_menu.addAction(a)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        mb.addMenu(self.presets_menu)
        help_menu = mb.addMenu("&Help")
        help_menu.addAction(self.act_about)

    # -- document state --------------------------------------------------------------------------------------

    @staticmethod
    def _comparable(values: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if not k.startswith("_")}

    def values(self) -> dict[str, Any]:
        return self.form.values()

    def is_dirty(self) -> bool:
        return self._dirty

    def _mark_clean(self) -> None:
        self._saved = self._comparable(self.form.values())
        self._set_dirty(False)

    def _set_dirty(self, dirty: bool) -> None:
        self._dirty = dirty
        self._update_title()

    def _form_changed(self) -> None:
        self._set_dirty(self._comparable(self.form.values()) != self._saved)
        self._dataset_timer.start()

    def document_name(self) -> str:
        if self.path is not None:
            return self.path.name
        if self.imported_from is not None:
            return f"{self.imported_from.name} (imported from kohya_ss)"
        return "Untitled"

    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.document_name()}{'*' if self._dirty else ''} — Patina")
        if hasattr(self, "path_label"):
            self.path_label.setText(str(self.path) if self.path else "not saved yet")

    def _config_for_run(self) -> dict[str, Any]:
        self.flush_dataset_tab()
        return self.form.values()

    # -- new / open / save ------------------------------------------------------------------------------------

    def maybe_save(self, action: str = "continuing") -> bool:
        """Ask Save / Discard / Cancel when there are unsaved changes. True means go ahead."""
        self.flush_dataset_tab()
        if not self._dirty:
            return True
        answer = QMessageBox.question(
            self, "Unsaved changes",
            f"The settings in “{self.document_name()}” have changed. Save them before {action}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    def new_config(self) -> None:
        if not self.maybe_save("starting a new configuration"):
            return
        self.form.set_values(defaults())
        self.path = None
        self.imported_from = None
        self._mark_clean()
        self.sync_dataset_tab()
        self.statusBar().showMessage("New configuration with the default settings.", 5000)
        if self.machine_defaults:
            self._apply_machine_defaults()
        else:
            self._start_probe()

    def open_dialog(self) -> None:
        if not self.maybe_save("opening another file"):
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open a config", self._dialog_dir(), CONFIG_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str | os.PathLike, *, quiet: bool = False) -> bool:
        """Open a Patina config, or import a kohya_ss one. ``quiet`` reports in the status bar instead of a
        dialog (used when the last session is restored)."""
        path = Path(path)
        try:
            result = read_config(path)
        except PatinaError as exc:
            if quiet:
                self.statusBar().showMessage(f"Could not reopen the last config: {exc}", 15000)
            else:
                QMessageBox.critical(self, "Cannot open the file", str(exc))
            return False
        self.form.set_values(result.values)
        self.state.last_dir = str(path.parent)
        report = format_load_report(result, path.name)
        if result.kohya:
            # Never save Patina's format over a kohya_ss file: the import is a new, unsaved document.
            self.path = None
            self.imported_from = path
            self._saved = self._comparable(defaults())
            self._set_dirty(True)
            self._show_report("kohya_ss config imported",
                              f"<b>{path.name}</b> is a kohya_ss config. Its settings were imported; Save writes a "
                              "Patina config (the kohya_ss file is left as it is).", report)
        else:
            self.path = path
            self.imported_from = None
            self._mark_clean()
            self.state.add_recent(path)
            self._persist_state()
            if result.problems or result.unknown:
                if quiet:
                    n = len(result.errors)
                    self.statusBar().showMessage(
                        f"Reopened {path.name}" + (f"; {n} setting(s) were invalid and were reset" if n else ""),
                        15000)
                else:
                    self._show_report("Opened with problems",
                                      f"<b>{path.name}</b> was opened, but some settings need attention. Invalid "
                                      "settings were reset to their defaults.", report)
            else:
                self.statusBar().showMessage(f"Opened {path}", 5000)
        self.sync_dataset_tab()
        return True

    def _show_report(self, title: str, heading: str, text: str) -> None:
        ReportDialog(title, heading, text, self).exec()

    def save(self) -> bool:
        if self.path is None:
            return self.save_as()
        return self._write(self.path)

    def save_as(self) -> bool:
        if self.path is not None:
            suggestion = str(self.path)
        else:
            stem = self.imported_from.stem + "-patina" if self.imported_from else (
                str(self.form.values().get("output_name") or "lora"))
            suggestion = str(Path(self._training_folder() or self._dialog_dir()) / f"{stem}.json")
        path, _ = QFileDialog.getSaveFileName(self, "Save the config", suggestion, "Patina config (*.json)")
        if not path:
            return False
        path = Path(path)
        if path.suffix.lower() != ".json":
            path = path.with_suffix(path.suffix + ".json") if path.suffix else path.with_suffix(".json")
        return self._write(path)

    def _write(self, path: Path) -> bool:
        self.flush_dataset_tab()
        values = self.form.values()
        try:
            save_config(path, values)
        except (OSError, PatinaError) as exc:
            QMessageBox.critical(self, "Cannot save", f"Could not write {path}:\n{exc}")
            return False
        self.path = path
        self.imported_from = None
        self.state.add_recent(path)
        self.state.last_dir = str(path.parent)
        self._mark_clean()
        self._persist_state()
        errs = self.form.errors()
        note = f" — {len(errs)} setting(s) still need fixing before training" if errs else ""
        self.statusBar().showMessage(f"Saved {path}{note}", 6000)
        return True

    def export_kohya(self) -> None:
        stem = str(self.form.values().get("output_name") or "lora")
        path, _ = QFileDialog.getSaveFileName(self, "Export for kohya_ss", str(Path(self._dialog_dir()) /
                                                                              f"{stem}-kohya.json"),
                                              "kohya_ss config (*.json)")
        if not path:
            return
        try:
            notes = write_kohya(path, self.form.values())
        except (OSError, PatinaError, KeyError) as exc:
            QMessageBox.critical(self, "Cannot export", f"Could not write {path}:\n{exc}")
            return
        msg = f"Exported {path}."
        if notes:
            self._show_report("Exported for kohya_ss", msg + " Notes on what kohya_ss handles differently:",
                              "\n".join(f"- {n}" for n in notes))
        else:
            self.statusBar().showMessage(msg, 6000)

    def _training_folder(self) -> str:
        """The project folder around the image folder (``<training>/img`` → ``<training>``), if it exists."""
        img = str(self.form.values().get("train_data_dir") or "").strip()
        if not img:
            return ""
        parent = Path(os.path.expanduser(img)).parent
        return str(parent) if parent.is_dir() and parent != Path(parent.anchor) else ""

    def _dialog_dir(self) -> str:
        for d in (self.state.last_dir, str(self.path.parent) if self.path else ""):
            if d and Path(d).is_dir():
                return d
        return str(Path.home())

    # -- presets and recent files --------------------------------------------------------------------------------

    def _fill_presets_menu(self) -> None:
        m = self.presets_menu
        m.clear()
        try:
            presets = list_presets()
        except OSError:
            presets = []
        builtin = [p for p in presets if p.builtin]
        user = [p for p in presets if not p.builtin]
        if builtin:
            m.addSection("Built-in")
        for p in builtin:
            self._preset_action(m, p)
        if user:
            m.addSection("My presets")
        for p in user:
            self._preset_action(m, p)
        if not presets:
            a = m.addAction("No presets found")
            a.setEnabled(False)
        m.addSeparator()
        m.addAction(self.act_save_preset)
        m.addAction(self.act_open_presets)

    def _preset_action(self, menu: QMenu, preset) -> QAction:
        a = menu.addAction(preset.name)
        if preset.description:
            a.setToolTip(preset.description)
            a.setStatusTip(preset.description)
        a.triggered.connect(lambda _=False, p=preset.path: self.apply_preset_file(p))
        return a

    def apply_preset_file(self, path: str | os.PathLike) -> bool:
        """Apply a preset onto the current settings (paths, names and prompts are kept)."""
        try:
            result: LoadResult = apply_preset(self.form.values(), path)
        except PatinaError as exc:
            QMessageBox.critical(self, "Cannot apply the preset", str(exc))
            return False
        self.form.set_values(result.values)
        self._form_changed()
        name = Path(path).stem
        for p in list_presets():
            if Path(p.path) == Path(path):
                name = p.name
        if result.errors:
            self._show_report("Preset applied with problems", f"The preset <b>{name}</b> has invalid settings; "
                              "they kept their defaults.", format_load_report(result, Path(path).name))
        self.statusBar().showMessage(f"Applied preset “{name}” (your paths, names and prompts were kept).", 6000)
        return True

    def save_as_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save as preset",
                                        "Preset name (the training settings are saved, not your paths):")
        name = (name or "").strip()
        if not ok or not name:
            return
        existing = [p for p in list_presets() if not p.builtin and p.name == name]
        if existing:
            answer = QMessageBox.question(self, "Replace preset?", f"A preset named “{name}” exists. Replace it?",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return
        try:
            path = save_user_preset(name, self.form.values())
        except (OSError, PatinaError) as exc:
            QMessageBox.critical(self, "Cannot save the preset", str(exc))
            return
        self.statusBar().showMessage(f"Saved preset “{name}” to {path}", 6000)

    def _open_presets_folder(self) -> None:
        d = user_presets_dir()
        d.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(d)))

    def _fill_recent_menu(self) -> None:
        m = self.recent_menu
        m.clear()
        if not self.state.recent:
            a = m.addAction("No recent files")
            a.setEnabled(False)
            return
        for i, path in enumerate(self.state.recent):
            label = f"&{i + 1}  {Path(path).name}" if i < 9 else Path(path).name
            a = m.addAction(label)
            a.setToolTip(path)
            a.setStatusTip(path)
            a.triggered.connect(lambda _=False, p=path: self.open_recent(p))
        m.addSeparator()
        m.addAction("Clear recent files", self._clear_recent)

    def open_recent(self, path: str) -> None:
        if not Path(path).is_file():
            QMessageBox.warning(self, "File not found", f"{path}\nno longer exists; it was removed from the list.")
            self.state.remove_recent(path)
            return
        if self.maybe_save("opening another file"):
            self.open_file(path)

    def _clear_recent(self) -> None:
        self.state.recent = []

    # -- dataset tab --------------------------------------------------------------------------------------------

    def apply_prepared_folders(self, folders: Mapping[str, Any]) -> None:
        """The folder wizard made a training layout: fill the four folder fields."""
        vals = {k: ("" if folders.get(k) is None else str(folders[k])) for k in DATASET_KEYS if k in folders}
        if not vals:
            return
        self.form.set_values(vals)
        self._form_changed()
        self.sync_dataset_tab()
        self.statusBar().showMessage("Folder fields filled in from the folder wizard (Training tab).", 6000)

    def sync_dataset_tab(self) -> None:
        vals = self.form.values()
        pair = (str(vals.get("train_data_dir") or ""), str(vals.get("caption_extension") or ".txt"))
        try:
            self.dataset_tab.set_reg_folder(str(vals.get("reg_data_dir") or ""))
        except Exception as exc:  # noqa: BLE001 - a Dataset tab problem must not break the window
            self.statusBar().showMessage(f"The Dataset tab could not use the regularisation folder: {exc}", 10000)
        if pair == self._dataset_sent:
            return
        self._dataset_sent = pair
        try:
            self.dataset_tab.set_dataset(*pair)
        except Exception as exc:  # noqa: BLE001 - a Dataset tab problem must not break the window
            self.statusBar().showMessage(f"The Dataset tab could not show {pair[0]}: {exc}", 10000)

    def flush_dataset_tab(self) -> None:
        try:
            self.dataset_tab.flush()
        except Exception as exc:  # noqa: BLE001
            QMessageBox.warning(self, "Captions not saved", f"Pending caption edits could not be saved:\n{exc}")

    # -- training ---------------------------------------------------------------------------------------------

    def start_training(self) -> None:
        self.tabs.setCurrentWidget(self.monitor)
        self.monitor.start()

    def _show_problems(self, problems: list) -> None:
        if not problems:
            return
        self.tabs.setCurrentWidget(self.training)
        self.form.focus_field(problems[0].key)
        self.statusBar().showMessage(problem_text(problems[0]), 10000)

    def apply_fix(self, values: Mapping[str, Any]) -> None:
        """A one-click fix chosen in the plan dialog: set those fields (the document becomes unsaved)."""
        self.form.set_values(dict(values))
        self._form_changed()
        names = ", ".join(f"{BY_KEY[k].label if k in BY_KEY else k} = {v}" for k, v in values.items())
        self.statusBar().showMessage(f"Changed {names}.", 8000)

    def _running_changed(self, running: bool) -> None:
        self.training.set_running(running)

    def _run_finished(self, fin) -> None:
        if self._quit_when_stopped:
            QTimer.singleShot(0, self.close)

    # -- session ----------------------------------------------------------------------------------------------

    def select_tab(self, name: str) -> None:
        """``dataset``, ``training``, ``monitor`` or a Training page (``basic``, ``advanced``...)."""
        name = name.lower()
        if name in TABS:
            self.tabs.setCurrentIndex(TABS.index(name))
        elif name in self.form._page_keys:  # a page of the Training tab
            self.tabs.setCurrentWidget(self.training)
            self.form.show_page(name)
        else:
            raise ValueError(name)

    def current_tab(self) -> str:
        return TABS[self.tabs.currentIndex()]

    def _restore_session(self) -> None:
        st = self.state
        if st.geometry:
            try:
                self.restoreGeometry(QByteArray(base64.b64decode(st.geometry)))
            except (ValueError, TypeError):
                pass
        if st.last_config:
            if Path(st.last_config).is_file():
                self.open_file(st.last_config, quiet=True)
            else:
                self.statusBar().showMessage(f"The last config {st.last_config} no longer exists.", 10000)
        if st.page in self.form._page_keys:
            self.form.show_page(st.page)
        if st.tab in TABS:
            self.tabs.setCurrentIndex(TABS.index(st.tab))

    def _persist_state(self) -> None:
        """Recent files and the last config survive even if the app is killed later."""
        if self._restore:
            self.state.last_config = str(self.path) if self.path else ""
            save_state(self.state)

    def _save_session(self) -> None:
        if not self._restore:  # a window made for a screenshot or a test leaves the user's session alone
            return
        st = self.state
        st.last_config = str(self.path) if self.path else ""
        st.geometry = base64.b64encode(bytes(self.saveGeometry())).decode("ascii")
        st.tab = self.current_tab()
        st.page = self.form.current_page()
        save_state(st)

    def closeEvent(self, event):  # noqa: N802
        if self._quit_when_stopped and not self.monitor.is_running():
            self._save_session()
            event.accept()
            return
        if self.monitor.is_running():
            if self._quit_when_stopped or self.monitor.state == "stopping":
                QMessageBox.information(self, "Stopping", "Training is stopping and the LoRA file is being "
                                        "written. Patina closes by itself when that is done.")
                self._quit_when_stopped = True
                event.ignore()
                return
            answer = QMessageBox.question(
                self, "Training is running",
                "Stop training and quit? What was trained so far is saved first; Patina closes when the file "
                "is written.", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            if not self.maybe_save("quitting"):
                event.ignore()
                return
            self._quit_when_stopped = True
            self.monitor.stop()
            self.statusBar().showMessage("Stopping training — Patina closes when the LoRA file is written…")
            event.ignore()
            return
        if not self.maybe_save("quitting"):
            event.ignore()
            return
        self._save_session()
        event.accept()

    def _about(self) -> None:
        QMessageBox.about(self, "About Patina",
                          f"<h3>Patina {__version__}</h3><p>Train Stable Diffusion LoRAs on your own NVIDIA GPU, "
                          "with kohya_ss's LoRA settings and files that load in A1111, ComfyUI, Forge and "
                          "diffusers.</p>")


def _machine_defaults() -> tuple[dict, str]:
    """Run in the background. Probing the device needs torch: when it is not imported yet, the probe runs in a
    separate Python process so that importing torch never holds up the window."""
    import sys

    if "torch" in sys.modules:
        from patina.core.train.preflight import machine_defaults, probe_device

        return machine_defaults(probe_device())
    import json
    import subprocess

    import patina.core

    root = str(Path(patina.core.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    code = ("import json; from patina.core.train.preflight import machine_defaults, probe_device; "
            "print(json.dumps(machine_defaults(probe_device())))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    changes, note = json.loads(done.stdout.strip().splitlines()[-1])
    return dict(changes), str(note)


def _bar_label(text: str, parent) -> QLabel:
    lab = QLabel(text, parent)
    lab.setStyleSheet("color: palette(placeholder-text); padding: 0 6px 0 4px;")
    lab.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
    return lab
