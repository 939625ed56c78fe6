"""Try the demo: the Dataset tab's button and Help > Try the demo prepare a demo folder, open its config as
File > Open does and start training; ``patina.gui.launcher.run_demo`` opens the window doing the same."""

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

import patina.core.demo.setup as demo_setup
from patina.core.config.files import read_config
from patina.gui.main_window import MainWindow
from patina.gui.monitor_tab import MonitorTab

pytestmark = pytest.mark.skipif(not (demo_setup.model_dir() / "model_index.json").is_file(),
                                reason="the demo model is not in this checkout")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "Documents").mkdir(parents=True)
    return tmp_path / "home"


@pytest.fixture
def starts(monkeypatch):
    """MonitorTab.start records its call (and the config it would train) instead of training."""
    calls = []

    def start(self):
        calls.append(dict(self.config_source()))
        return True

    monkeypatch.setattr(MonitorTab, "start", start)
    return calls


@pytest.fixture
def messages(monkeypatch):
    shown = []
    for name in ("critical", "warning", "information"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(
            lambda parent, title, text, *a, **k: shown.append((title, text)) or QMessageBox.StandardButton.Ok))
    return shown


@pytest.fixture
def win(qtbot):
    w = MainWindow(restore_session=False, detect_family=False, probe_device=False)
    qtbot.addWidget(w)
    return w


def test_the_dataset_tabs_demo_button_loads_the_demo_config_and_starts(win, qtbot, home, starts, messages):
    button = win.dataset_tab.empty_demo
    assert win.dataset_tab.stack.currentWidget() is win.dataset_tab.empty
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)

    folder = home / "Documents" / "Patina demo"
    config = folder / demo_setup.CONFIG_NAME
    assert config.is_file() and (folder / "img").is_dir()
    assert win.path == config and not win.is_dirty()          # opened as File > Open does
    assert win.state.recent and Path(win.state.recent[0]) == config
    expected = read_config(config).values
    assert win.form.values()["train_data_dir"] == expected["train_data_dir"] == str(folder / "img")
    assert win.form.values()["pretrained_model_name_or_path"] == str(demo_setup.model_dir())
    assert len(starts) == 1 and starts[0]["output_dir"] == str(folder / "output")
    assert starts[0]["quality_report"] is True
    assert win.current_tab() == "monitor"
    assert str(folder) in win.statusBar().currentMessage()
    assert messages == []
    # The Dataset tab now shows the demo images.
    qtbot.waitUntil(lambda: win.dataset_tab.stack.currentWidget() is not win.dataset_tab.empty, timeout=5000)


def test_help_menu_has_try_the_demo(win, home, starts, messages):
    help_menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Help")
    action = next(a for a in help_menu.actions() if a.text() == "Try the demo")
    action.trigger()
    assert len(starts) == 1 and win.path is not None and win.path.parent.name == "Patina demo"
    # Again: the earlier demo folder is reused, not mixed with another folder.
    action.trigger()
    assert len(starts) == 2 and win.path.parent.name == "Patina demo"


def test_a_demo_that_cannot_be_prepared_shows_the_message_and_changes_nothing(win, home, starts, messages,
                                                                            monkeypatch, tmp_path):
    monkeypatch.setattr(demo_setup, "model_dir", lambda: tmp_path / "no-model")
    before = win.form.values()
    assert win.try_demo() is False
    assert len(messages) == 1 and "demo model is missing" in messages[0][1] and str(tmp_path / "no-model") in messages[0][1]
    assert win.path is None and win.form.values() == before and starts == []
    assert win.current_tab() == "dataset"
    assert not (home / "Documents" / "Patina demo").exists()


def test_the_demo_is_refused_while_training_runs(win, home, starts, messages):
    win.monitor._set_state("running")
    assert not win.act_demo.isEnabled() and not win.dataset_tab.empty_demo.isEnabled()
    assert "stop it" in win.act_demo.toolTip()
    assert win.try_demo() is False
    assert starts == [] and "Training is running" in win.statusBar().currentMessage()
    assert not (home / "Documents" / "Patina demo").exists()
    win.monitor._set_state("idle")
    assert win.act_demo.isEnabled() and win.dataset_tab.empty_demo.isEnabled()


def test_launcher_run_demo_opens_the_window_with_the_demo_started(qtbot, home, starts, messages, monkeypatch):
    from patina.gui import launcher

    demo = demo_setup.prepare(home / "demo")
    seen = []

    def start_then_close(self):
        seen.append((self.window().path, self.window().current_tab()))
        QApplication.instance().closeAllWindows()
        return True

    monkeypatch.setattr(MonitorTab, "start", start_then_close)
    assert launcher.run_demo(demo.config_path) == 0
    assert seen == [(demo.config_path, "monitor")]
    assert json.loads(demo.config_path.read_text())  # the config was left as it was written


def test_the_demo_trains_end_to_end_and_fills_the_quality_report(win, qtbot, home, messages, monkeypatch):
    """Try the demo with the real engine on the shipped demo model, made short: one epoch, two report prompts
    of a few sampling steps at weights 0 and 1, one seed."""
    pytest.importorskip("diffusers")
    from patina.gui.monitor_tab import PlanDialog

    opts = "--w 64 --h 64 --s 3 --l 5"
    monkeypatch.setitem(demo_setup.SETTINGS, "epoch", 1)
    monkeypatch.setitem(demo_setup.SETTINGS, "sample_every_n_epochs", 0)
    monkeypatch.setitem(demo_setup.SETTINGS, "quality_seeds", 1)
    monkeypatch.setitem(demo_setup.SETTINGS, "quality_weights", "0,1")
    monkeypatch.setitem(demo_setup.SETTINGS, "quality_prompts",
                        f"a red zorbo shape on a white background {opts} --d 1\n"
                        f"a red circle on a white background {opts} --d 1")
    monkeypatch.setattr(PlanDialog, "exec", lambda self: PlanDialog.DialogCode.Accepted)
    with qtbot.waitSignal(win.monitor.finished, timeout=120000) as fin:
        assert win.try_demo()
    assert fin.args[0].status == "finished", fin.args[0].message
    q = win.monitor.quality
    assert q.has_report() and q.table.rowCount() == 1 and q.best_row == 0
    assert q.table.item(0, 0).text() == "1 ★"
    assert not q.grid_label.pixmap().isNull()
    folder = home / "Documents" / "Patina demo"
    assert q.grid_path == str(folder / "output" / "zorbo-quality.png")
    assert json.loads((folder / "output" / "zorbo-quality.json").read_text())["best_epoch"] == 1


def test_patina_demo_opens_the_window_only_where_one_can_be_seen(home, monkeypatch):
    from patina.gui import launcher, qt_preflight

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert not launcher._demo_in_window(["demo"])            # nobody would see it: train in the terminal
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(qt_preflight, "check", lambda **kw: None)
    assert launcher._demo_in_window(["demo", "--out", str(home / "d")])
    assert not launcher._demo_in_window(["demo", "--headless"]) and not launcher._demo_in_window(["train", "x"])
    monkeypatch.setattr(qt_preflight, "check", lambda **kw: qt_preflight.Problem("patina: no display.", []))
    assert not launcher._demo_in_window(["demo"])

    monkeypatch.setattr(qt_preflight, "check", lambda **kw: None)
    opened = []
    monkeypatch.setattr(launcher, "run_demo", lambda path: opened.append(path) or 0)
    assert launcher.main(["demo", "--out", str(home / "d")]) == 0
    assert opened == [home / "d" / demo_setup.CONFIG_NAME] and (home / "d" / "img").is_dir()
    (home / "mine").mkdir()
    (home / "mine" / "notes.txt").write_text("keep", encoding="utf-8")
    assert launcher.main(["demo", "--out", str(home / "mine")]) == 2        # a user's folder is refused
    assert (home / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep" and len(opened) == 1
