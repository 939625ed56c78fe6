"""The Queue tab: three tiny runs (one failing at run time) run through the window one after the other; pause
after the current run; the queue survives closing the window and resumes with one click."""

import threading
import time
from pathlib import Path

import pytest
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox

from patina.core.config.schema import defaults
from patina.core.train.events import Finished, Progress
from patina.core.train.queue import TrainingQueue
from patina.gui.main_window import MainWindow

SB = QMessageBox.StandardButton


@pytest.fixture(autouse=True)
def answers(monkeypatch):
    """Questions are answered Yes (quit while the queue runs); other message boxes are recorded."""
    shown = []
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda parent, title, text, *a, **k: shown.append(text)
                                                              or SB.Yes))
    for name in ("critical", "warning", "information"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(lambda parent, title, text, *a, **k: shown.append(title)
                                                            or SB.Ok))
    return shown


def queue_three(w, cfg_for):
    """Add three configs through the Training tab's "Add to queue" button."""
    for name in ("a", "b", "c"):
        w.form.set_values(cfg_for(name))
        w._mark_clean()
        w.training.queue_button.click()
    return TrainingQueue().entries


def statuses():
    return [e.status for e in TrainingQueue().entries]


def test_three_tiny_runs_run_through_the_queue_and_a_failure_does_not_stop_it(qtbot, tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from patina.core.models.tiny import save_tiny_diffusers
    from trainkit import make_dataset, tiny_cfg

    model = save_tiny_diffusers(tmp_path / "model", "sd1")
    data = make_dataset(tmp_path, n=2, repeats=1)
    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)

    def cfg_for(name):  # "b" names a folder that is gone by the time it runs
        return tiny_cfg(model, data if name != "b" else tmp_path / "moved", tmp_path / "out", output_name=name,
                        epoch=1, max_train_steps=2, train_batch_size=1)

    entries = queue_three(w, cfg_for)
    assert [e.name for e in entries] == ["a", "b", "c"] and statuses() == ["waiting"] * 3
    w.form.set_values({"output_name": "edited", "network_dim": 16})   # later edits do not reach the queue
    tab = w.queue_tab
    tab.select(entries[2].id)
    shown = tab.snapshot_view.toPlainText()
    assert '(output_name) = "c"' in shown and "(network_dim) = 4" in shown and "edited" not in shown
    with qtbot.waitSignal(tab.running_changed, timeout=5000):
        w.act_queue_start.trigger()                   # Run › Start queue
    assert w.current_tab() == "monitor" and w.monitor.is_running()
    qtbot.waitUntil(lambda: not tab.running, timeout=120000)
    assert statuses() == ["done", "failed", "done"], [e.message for e in TrainingQueue().entries]
    done = TrainingQueue().entries
    assert done[0].output == str(tmp_path / "out" / "a.safetensors") and Path(done[0].output).is_file()
    assert (tmp_path / "out" / "c.safetensors").is_file() and not (tmp_path / "out" / "edited.safetensors").exists()
    assert "moved" in done[1].message
    assert w.monitor.last_finished.output == done[2].output       # the Monitor showed the runs
    assert "The queue is done. 1 run(s) failed" in tab.status_label.text()
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile())))
    tab.open_output(0)                                # the output link opens the LoRA's folder
    assert tab.table.item(0, 3).text().endswith("a.safetensors") and opened == [str(tmp_path / "out")]
    assert tab.table.item(1, 1).text() == "✖ Failed"


class HeldEngine:
    """A fake engine whose runs last until released (``release``) or stopped; records what it ran."""

    def __init__(self):
        self.ran = []
        self.release = threading.Event()

    def __call__(self, cfg, emit, commands, *, resume=None):
        self.ran.append((cfg["output_name"], resume))
        emit(Progress(1, 2, 1, 1, 1.0, 0.1, 0.1))
        deadline = time.monotonic() + 20
        while not self.release.is_set() and not commands.stop_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        out = str(Path(cfg["output_dir"]) / f"{cfg['output_name']}.safetensors")
        if commands.stop_requested:
            return Finished("stopped", "Stopped at step 1.", out, 1)
        return Finished("finished", "Done.", out, 2)


def test_pause_after_the_current_run_and_resume_after_closing_the_window(qtbot, tmp_path, answers):
    def cfg_for(name):
        cfg = defaults()
        cfg.update(pretrained_model_name_or_path=str(tmp_path), train_data_dir=str(tmp_path),
                   output_dir=str(tmp_path / "out"), output_name=name)
        return cfg

    engine = HeldEngine()
    w = MainWindow(restore_session=False, detect_family=False, engine_fn=engine)
    qtbot.addWidget(w)
    queue_three(w, cfg_for)
    w.show()
    tab = w.queue_tab
    assert tab.start_queue()
    qtbot.waitUntil(lambda: engine.ran == [("a", None)], timeout=5000)
    tab.pause_button.click()                          # pause after current run
    engine.release.set()
    qtbot.waitUntil(lambda: not tab.running, timeout=5000)
    assert statuses() == ["done", "waiting", "waiting"] and "paused" in tab.status_label.text()
    engine.release.clear()
    assert tab.start_queue()
    qtbot.waitUntil(lambda: [n for n, _ in engine.ran] == ["a", "b"] and w.monitor.is_running(), timeout=5000)
    assert not w.close()                              # asks, stops the run (saving), closes when it is written
    assert answers[-1].startswith("Stop the queue and quit?")
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10000)
    assert statuses() == ["done", "interrupted", "waiting"]

    engine.release.set()
    again = MainWindow(restore_session=False, detect_family=False, engine_fn=engine)
    qtbot.addWidget(again)
    tab = again.queue_tab
    assert [tab.table.item(r, 1).text() for r in range(3)] == ["✔ Done", "↻ Interrupted", "Waiting"]
    assert tab.banner.isVisibleTo(tab) and "was running when Patina closed" in tab.banner.text()
    tab.banner.action_button.click()                  # Resume queue
    qtbot.waitUntil(lambda: statuses() == ["done", "done", "done"] and not tab.running, timeout=10000)
    assert [n for n, _ in engine.ran] == ["a", "b", "b", "c"]
