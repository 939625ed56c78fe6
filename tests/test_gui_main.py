"""The main window offscreen: config bar, presets, kohya import, unsaved changes, last session, the Dataset
tab contract, --screenshot, and the no-torch-at-import rule."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QFileDialog, QMessageBox

from patina.core.config.files import find_preset, read_config
from patina.core.config.schema import BY_KEY, defaults
from patina.gui.config_document import ReportDialog
from patina.gui.main_window import MainWindow

ROOT = Path(__file__).resolve().parent.parent
SB = QMessageBox.StandardButton


@pytest.fixture
def reports(monkeypatch):
    """ReportDialogs are recorded instead of blocking."""
    shown = []
    monkeypatch.setattr(ReportDialog, "exec", lambda self: shown.append(self.report_text) or 1)
    return shown


@pytest.fixture(autouse=True)
def answers(monkeypatch):
    """QMessageBox.question answers, popped in order (Discard when none is queued, so that closing a
    window at teardown never blocks); other message boxes are recorded."""
    queue = _Q()
    asked = []
    messages = []

    def question(parent, title, text, *a, **k):
        asked.append(title)
        return queue.pop(0) if queue else SB.Discard

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    for name in ("critical", "warning", "information"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(
            lambda parent, title, text, *a, **k: messages.append((title, text)) or SB.Ok))
    queue.asked = asked
    queue.messages = messages
    return queue


class _Q(list):
    pass


@pytest.fixture
def win(qtbot, reports, monkeypatch):
    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)
    return w


def set_by_user(w, key, value):
    """Change a field the way a person would: through its editor (emits the change signals)."""
    ed = w.form.editor(key)
    p = BY_KEY[key]
    if p.type == "bool":
        ed.setChecked(value)
    elif p.type in ("int", "float"):
        ed.setValue(value)
    elif p.type == "choice":
        ed.setCurrentIndex(p.choices.index(value))
    elif p.type == "text":
        ed.setPlainText(value)
    else:
        ed.setText(value)


def test_preset_then_fields_on_every_page_save_and_reload(win, tmp_path, monkeypatch):
    preset = find_preset("sd15-character")
    assert win.apply_preset_file(preset.path)
    assert win.form.values()["network_dim"] == 32 and win.form.values()["epoch"] == 10
    assert win.is_dirty() and win.windowTitle().startswith("Untitled*")
    edits = {
        "output_name": "my dog",                       # Model
        "output_dir": str(tmp_path / "out dir é"),     # Folders
        "metadata_author": "Zoë",                      # Metadata
        "network_dim": 48,                             # Basic
        "lr_scheduler": "constant",                    # Basic
        "gradient_checkpointing": True,                # Advanced
        "noise_offset": 0.05,                          # Advanced
        "sample_prompts": "sks dog --w 512\nsks dog on grass",  # Samples
        "sample_every_n_epochs": 2,                    # Samples
    }
    pages = {BY_KEY[k].page for k in edits}
    assert pages == {"model", "folders", "metadata", "basic", "advanced", "samples"}
    for k, v in edits.items():
        set_by_user(win, k, v)
    target = tmp_path / "configs é" / "dog run"
    target.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    assert win.save()
    saved = target.with_suffix(".json")
    assert saved.is_file() and not win.is_dirty()
    assert win.windowTitle() == "dog run.json — Patina"
    on_disk = json.loads(saved.read_text(encoding="utf-8"))
    for k, v in edits.items():
        assert on_disk[k] == v, k
    assert on_disk["network_alpha"] == 16.0  # from the preset

    expected = {k: v for k, v in win.form.values().items() if not k.startswith("_")}
    win.new_config()
    assert win.form.values()["network_dim"] == defaults()["network_dim"]
    assert win.open_file(saved)
    assert {k: v for k, v in win.form.values().items() if not k.startswith("_")} == expected
    assert not win.is_dirty() and win.path == saved
    assert str(saved.resolve()) in win.state.recent


def test_kohya_import_lists_unsupported_keys(win, tmp_path, reports):
    kohya = {"LoRA_type": "Standard", "network_dim": "16", "learning_rate": 0.0005, "optimizer": "AdamW",
             "save_model_as": "safetensors", "output_name": "from-kohya", "LyCORIS_preset": "attn-only",
             "use_wandb": True, "wandb_api_key": "", "huber_c": 0.1, "dataset_config": "/x/dataset.toml"}
    path = tmp_path / "kohya config.json"
    path.write_text(json.dumps(kohya), encoding="utf-8")
    assert win.open_file(path)
    vals = win.form.values()
    assert vals["network_dim"] == 16 and vals["learning_rate"] == 0.0005 and vals["output_name"] == "from-kohya"
    assert len(reports) == 1
    text = reports[0]
    assert "kohya_ss config imported" in text
    for key in ("LyCORIS_preset", "use_wandb", "dataset_config"):
        assert key in text
    # the kohya file is never overwritten by Save: the import is an unsaved, untitled document
    assert win.path is None and win.is_dirty()
    assert "imported from kohya_ss" in win.windowTitle() and "*" in win.windowTitle()
    assert json.loads(path.read_text(encoding="utf-8")) == kohya


def test_bad_file_gives_a_message_not_a_traceback(win, tmp_path, answers):
    bad = tmp_path / "broken.json"
    bad.write_text("{ not json", encoding="utf-8")
    assert not win.open_file(bad)
    title, text = answers.messages[0]
    assert title == "Cannot open the file" and "broken.json" in text and "line 1" in text


def test_unsaved_mark_and_close_prompt(win, qtbot, answers, tmp_path, monkeypatch):
    assert "*" not in win.windowTitle()
    set_by_user(win, "network_dim", 12)
    assert win.windowTitle() == "Untitled* — Patina" and win.is_dirty()
    set_by_user(win, "network_dim", defaults()["network_dim"])  # back to what was saved: clean again
    assert "*" not in win.windowTitle()
    set_by_user(win, "network_dim", 12)
    win.show()

    answers.append(SB.Cancel)
    assert not win.close()
    assert win.isVisible() and answers.asked == ["Unsaved changes"]

    answers.append(SB.Save)  # Save → Save As dialog → written, then closed
    target = tmp_path / "closing.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    assert win.close()
    assert read_config(target).values["network_dim"] == 12


def test_discard_closes_without_writing(win, answers, tmp_path):
    win.show()
    set_by_user(win, "epoch", 7)
    answers.append(SB.Discard)
    assert win.close()
    assert not list(tmp_path.iterdir())


def test_last_session_is_restored(qtbot, reports, monkeypatch, tmp_path):
    cfg = tmp_path / "run.json"
    w = MainWindow(restore_session=True, detect_family=False)
    qtbot.addWidget(w)
    set_by_user(w, "network_dim", 24)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(cfg), "")))
    assert w.save_as()
    w.select_tab("advanced")
    w.resize(780, 650)  # the offscreen screen is 800×800
    w.show()
    assert w.close()

    w2 = MainWindow(restore_session=True, detect_family=False)
    qtbot.addWidget(w2)
    assert w2.path == cfg and w2.form.values()["network_dim"] == 24 and not w2.is_dirty()
    assert w2.current_tab() == "training" and w2.form.current_page() == "advanced"
    assert (w2.width(), w2.height()) == (780, 650)
    assert w2.state.recent[0] == str(cfg.resolve())
    recent = [a.text() for a in w2.recent_menu.actions()]
    assert any("run.json" in t for t in recent)


def test_presets_menu_lists_builtin_and_user_presets(win, monkeypatch):
    from PySide6.QtWidgets import QInputDialog
    set_by_user(win, "network_dim", 20)
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("My dogs", True)))
    win.save_as_preset()
    win._fill_presets_menu()
    names = [a.text() for a in win.presets_menu.actions()]
    assert "SD1.5 character/object" in names and "My dogs" in names and "Save as preset…" in names
    set_by_user(win, "network_dim", 8)
    set_by_user(win, "train_data_dir", "/my/images")
    [a for a in win.presets_menu.actions() if a.text() == "My dogs"][0].trigger()
    assert win.form.values()["network_dim"] == 20
    assert win.form.values()["train_data_dir"] == "/my/images"  # paths are kept when a preset is applied


def test_dataset_tab_follows_the_folder_fields_and_fills_them_from_the_wizard(qtbot, reports, answers, tmp_path):
    """The window and the real Dataset tab: the folder fields choose what the tab shows, the wizard's
    folders fill the fields, and closing writes a pending caption edit."""
    from patina.gui.dataset_tab import DatasetTab

    img = tmp_path / "img"
    (img / "10_sks dog").mkdir(parents=True)
    QImage(8, 8, QImage.Format.Format_RGB888).save(str(img / "10_sks dog" / "a.png"))
    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)
    tab = w.dataset_tab
    assert isinstance(tab, DatasetTab) and w.tabs.widget(0) is tab
    assert [w.tabs.tabText(i) for i in range(w.tabs.count())] == ["Dataset", "Training", "Monitor", "Queue", "Test", "Tools"]
    assert tab._loaded_key == ("", ".txt")
    folders = {"train_data_dir": str(img), "reg_data_dir": None, "output_dir": str(tmp_path / "model"),
               "logging_dir": str(tmp_path / "log")}
    tab.folders_prepared.emit(folders)
    vals = w.form.values()
    assert vals["train_data_dir"] == folders["train_data_dir"] and vals["output_dir"] == folders["output_dir"]
    assert vals["logging_dir"] == folders["logging_dir"] and vals["reg_data_dir"] == ""
    assert w.is_dirty() and "*" in w.windowTitle()
    assert tab._loaded_key == (str(img), ".txt")
    qtbot.waitUntil(lambda: tab.model.rowCount() == 1, timeout=5000)
    set_by_user(w, "caption_extension", ".caption")
    qtbot.waitUntil(lambda: tab._loaded_key == (str(img), ".caption"), timeout=3000)
    tab.select_path(str(img / "10_sks dog" / "a.png"))
    qtbot.waitUntil(lambda: tab.caption_panel.item is not None, timeout=5000)
    tab.caption_panel.editor.setPlainText("sks dog, grass")   # not yet saved: autosave waits 500 ms
    w.show()
    answers.append(SB.Discard)
    assert w.close()
    assert (img / "10_sks dog" / "a.caption").read_text(encoding="utf-8") == "sks dog, grass"
    tab.shutdown()


def _env(tmp_path):
    env = dict(os.environ, PATINA_CONFIG_DIR=str(tmp_path / "cfg"), QT_QPA_PLATFORM="offscreen")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_screenshot_option_writes_a_1280x800_png(tmp_path):
    out = tmp_path / "shots é" / "advanced.png"
    r = subprocess.run([sys.executable, "-m", "patina.gui.launcher", "--screenshot", str(out), "--tab", "advanced"],
                       cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1280, 800)
    assert len({img.pixel(x, y) for x in range(0, 1280, 40) for y in range(0, 800, 40)}) > 3  # not blank
    bad = subprocess.run([sys.executable, "-m", "patina.gui.launcher", "--screenshot", str(out), "--tab", "nope"],
                         cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown tab" in bad.stderr and "Traceback" not in bad.stderr


def test_gui_modules_import_and_open_without_torch(tmp_path):
    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "import patina.gui.app, patina.gui.main_window, patina.gui.param_pages, patina.gui.monitor_tab, patina.gui.worker, patina.gui.state, patina.gui.widgets\n"
        "app = QApplication([])\n"
        "w = patina.gui.main_window.MainWindow(restore_session=False)\n"
        "w.show(); app.processEvents()\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "print('PYQTGRAPH', 'pyqtgraph' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    assert "PYQTGRAPH False" in r.stdout  # the charts load when the Monitor tab is first shown


def test_save_as_suggests_the_training_folder_not_home(win, tmp_path, monkeypatch):
    project = tmp_path / "sks-dog"
    (project / "img" / "10_sks dog").mkdir(parents=True)
    w = win
    w.state.last_dir = ""
    w.form.set_values({"train_data_dir": str(project / "img"), "output_name": "sks-dog"})
    offered = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda parent, title, suggestion, *a, **k: offered.append(suggestion) or ("", "")))
    assert not w.save_as()
    assert offered == [str(project / "sks-dog.json")]   # next to img/, where the wizard put model/ and log/


def test_dataset_tab_gets_the_reg_folder_and_the_batch_size(qtbot, reports, monkeypatch, tmp_path):
    from patina.gui.dataset_tab import DatasetTab
    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)
    assert isinstance(w.dataset_tab, DatasetTab)
    w.form.set_values({"train_data_dir": str(tmp_path / "img"), "reg_data_dir": str(tmp_path / "reg"),
                       "train_batch_size": 3})
    w.sync_dataset_tab()
    assert w.dataset_tab._reg_root == str(tmp_path / "reg") and w.dataset_tab.source_combo.isVisibleTo(w.dataset_tab)
    assert w.dataset_tab.batch_size_source() == 3
    w.dataset_tab.shutdown()
