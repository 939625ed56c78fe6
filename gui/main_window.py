"""Patina's main window: the configuration bar, the Dataset / Training / Monitor tabs, the last session,
and the document life cycle (new, open, save, presets, recent files, unsaved changes; in
:mod:`patina.gui.config_document`)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Mapping

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import (QLabel, QMainWindow, QMenu, QMessageBox, QSizePolicy, QStyle, QTabWidget, QToolBar,
                               QToolButton)

from patina.core import __version__
from patina.core.config.schema import BY_KEY, defaults
from patina.core.errors import PatinaError
from patina.core.paths import resources_dir
from patina.gui.config_document import ConfigDocument
from patina.gui.dataset_tab import DatasetTab
from patina.gui.monitor_tab import MonitorTab
from patina.gui.param_fields import problem_text
from patina.gui.queue_tab import QueueTab
from patina.gui.state import GuiState, load_state, save_state
from patina.gui.tasks import run_task
from patina.gui.test_tab import LoraTestTab
from patina.gui.tools_tab import ToolsTab
from patina.gui.training_tab import TrainingTab

TABS = ("dataset", "training", "monitor", "queue", "test", "tools")
TAB_TITLES = {"dataset": "Dataset", "training": "Training", "monitor": "Monitor", "queue": "Queue", "test": "Test",
              "tools": "Tools"}
DATASET_KEYS = ("train_data_dir", "reg_data_dir", "output_dir", "logging_dir")
DEMO_TIP = ("Copy a small demo dataset into a new folder (Documents/Patina demo) and train a LoRA on the tiny demo "
            "model that comes with Patina: a few minutes, no GPU needed")
DEMO_BUSY_TIP = "Training is running: stop it (Monitor tab) before trying the demo."


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


class MainWindow(ConfigDocument, QMainWindow):
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
        self.queue_tab = QueueTab(self.monitor, self, config_source=self._config_for_run, source_path=lambda: self.path)
        self.tabs.addTab(self.queue_tab, TAB_TITLES["queue"])
        self.test_tab = LoraTestTab(self, config_source=self.form.values)
        self.tabs.addTab(self.test_tab, TAB_TITLES["test"])
        self.tools = ToolsTab(self)
        self.tabs.addTab(self.tools, TAB_TITLES["tools"])
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
        self.training.queue_requested.connect(self.add_to_queue)
        self.monitor.problems_found.connect(self._show_problems)
        self.monitor.fix_requested.connect(self.apply_fix)
        self.monitor.running_changed.connect(self._running_changed)
        self.monitor.finished.connect(self._run_finished)
        self.dataset_tab.folders_prepared.connect(self.apply_prepared_folders)
        self.dataset_tab.demo_requested.connect(self.try_demo)
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
        self._device_notice = ""
        self.statusBar().messageChanged.connect(self._sync_device_notice)
        # A notice is not worth an error: a failed check shows nothing.
        run_task(cpu_training_reason, owner=self, on_error=lambda exc: None,
                 on_done=lambda reason: reason and self._show_device_notice(reason))

    def _show_device_notice(self, text: str) -> None:
        self._device_notice = text
        self.device_label.setText("⚠ " + text)
        self.device_label.setToolTip(text)
        self._sync_device_notice()

    def _sync_device_notice(self, *_message) -> None:
        """The notice shows while no status message does (they share the left of the status bar)."""
        self.device_label.setVisible(bool(self._device_notice) and not self.statusBar().currentMessage())

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
        self.act_import_kohya_presets = act("Import kohya_ss presets…", lambda: self.import_kohya_presets(), None, None,
                                            "Bring every preset of a kohya_ss presets folder (and its "
                                            "user_presets) into My presets, with a report")
        self.act_save_preset = act("Save as preset…", self.save_as_preset, None, None,
                                   "Keep the current training settings (no paths) as a preset of your own")
        self.act_open_presets = act("Open presets folder", self._open_presets_folder)
        self.act_quit = act("Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_about = act("About Patina", self._about)
        self.act_demo = act("Try the demo", self.try_demo, None, None, DEMO_TIP)
        self.act_start = act("Start training…", self.start_training, None, SP.SP_MediaPlay,
                             "Check everything, show the plan, then train (progress on the Monitor tab)")
        self.act_queue_add = act("Add current config to queue", self.add_to_queue, None, None,
                                 "Queue a snapshot of these settings to train later, one run after another")
        self.act_queue_start = act("Start queue", self.start_queue, None, None,
                                   "Train the waiting runs of the Queue tab one after the other")
        self.act_free_model = act("Free model memory", self.free_model_memory, None, None,
                                  "Release the base model kept loaded since the last run (the next run loads it "
                                  "again; a run with the same model and precision otherwise starts at once)")

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
        file_menu.addAction(self.act_import_kohya_presets)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        mb.addMenu(self.presets_menu)
        run_menu = mb.addMenu("&Run")
        for a in (self.act_start, self.act_queue_add, self.act_queue_start):
            run_menu.addAction(a)
        run_menu.addSeparator()
        run_menu.addAction(self.act_free_model)
        help_menu = mb.addMenu("&Help")
        help_menu.addAction(self.act_demo)
        help_menu.addSeparator()
        help_menu.addAction(self.act_about)

    def free_model_memory(self) -> None:
        """Release the base model that the window keeps between runs (patina.core.models.cache)."""
        from patina.core.models.cache import window_cache

        cache = window_cache()
        if self.monitor.is_running():
            self.statusBar().showMessage("The running training uses the loaded model; free it when the run ends.",
                                         8000)
            return
        name = cache.holds
        cache.clear()
        self.statusBar().showMessage(f"Freed the memory held by {name}." if name else
                                     "No base model was kept in memory.", 8000)

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

    def add_to_queue(self) -> None:
        """Queue a snapshot of the current settings (Training tab, Run menu); problems show on the Queue tab."""
        entry = self.queue_tab.add_current()
        if entry is None:
            self.tabs.setCurrentWidget(self.queue_tab)
        else:
            self.statusBar().showMessage(f"Queued “{entry.name}” ({len(self.queue_tab.queue.pending())} run(s) "
                                         "waiting on the Queue tab).", 8000)

    def start_queue(self) -> None:
        self.tabs.setCurrentWidget(self.monitor if self.queue_tab.start_queue() else self.queue_tab)

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
        tip = DEMO_BUSY_TIP if running else DEMO_TIP
        for widget in (self.act_demo, self.dataset_tab.empty_demo):
            widget.setEnabled(not running)
            widget.setToolTip(tip)
        self.act_demo.setStatusTip(tip)

    # -- the demo ---------------------------------------------------------------------------------------------

    def try_demo(self) -> bool:
        """Help > Try the demo: copy the demo dataset to a new folder (``patina.core.demo.setup.prepare``), open
        its config as File > Open does, and start training as the Start button does. False if it did not start."""
        if self.monitor.is_busy():
            self.statusBar().showMessage(DEMO_BUSY_TIP, 8000)
            return False
        if not self.maybe_save("trying the demo"):
            return False
        from patina.core.demo.setup import prepare

        try:
            demo = prepare()
        except PatinaError as exc:
            QMessageBox.critical(self, "The demo cannot start", str(exc))
            return False
        return self.start_demo(demo.config_path, where=demo.root)

    def start_demo(self, config_path, *, where=None) -> bool:
        """Open a demo folder's config and start training it (also used by ``patina demo``)."""
        if self.monitor.is_busy():
            self.statusBar().showMessage(DEMO_BUSY_TIP, 8000)
            return False
        if not self.open_file(config_path):
            return False
        folder = Path(where) if where is not None else Path(config_path).parent
        self.tabs.setCurrentWidget(self.monitor)
        if not self.monitor.start():   # settings to fix: the Training tab shows them
            return False
        self.statusBar().showMessage(f"Demo folder: {folder} (images in img/, the LoRA in output/).", 30000)
        return True

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
            self.tools.abandon()
            self.queue_tab.shutdown()
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
            text = ("Stop training and quit? What was trained so far is saved first; Patina closes when the file "
                    "is written.")
            if self.queue_tab.running:
                text = ("Stop the queue and quit? The current run is saved first and continues when you resume the "
                        "queue; Patina closes when the file is written.")
            answer = QMessageBox.question(
                self, "Training is running", text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            if not self.maybe_save("quitting"):
                event.ignore()
                return
            self._quit_when_stopped = True
            if self.queue_tab.running:
                self.queue_tab.prepare_close()
            self.monitor.stop()
            self.statusBar().showMessage("Stopping training — Patina closes when the LoRA file is written…")
            event.ignore()
            return
        if not self.maybe_save("quitting"):
            event.ignore()
            return
        self.tools.abandon()   # a running LoRA tool stops and removes its partial output
        self.queue_tab.shutdown()
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
