"""patina.gui.tasks, the window's one background-task layer: work off the GUI thread, results, failures and
progress back on it, a default error report, cancel by generation, ordered lanes."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QApplication, QMessageBox, QWidget  # noqa: E402

from patina.core.errors import PatinaError  # noqa: E402
from patina.gui.tasks import Lane, Latest, Task, run_task  # noqa: E402


def _error_boxes() -> list[QMessageBox]:
    return [w for w in QApplication.topLevelWidgets()
            if isinstance(w, QMessageBox) and w.objectName() == "patinaTaskError" and w.isVisible()]


def _close_boxes() -> None:
    for box in _error_boxes():
        box.close()


def test_a_failure_nobody_handles_is_reported_not_dropped(qtbot, capsys):
    """Before this layer, a background call started without on_error lost its exception silently."""
    def boom():
        raise ValueError("the model file is truncated")

    task = run_task(boom, what="Reading the model")
    qtbot.waitUntil(lambda: task.finished, timeout=5000)
    boxes = _error_boxes()
    assert len(boxes) == 1
    assert boxes[0].text() == "Reading the model failed: ValueError: the model file is truncated"
    assert "Traceback" in boxes[0].detailedText() and "boom" in boxes[0].detailedText()
    assert "Reading the model failed" in capsys.readouterr().err
    _close_boxes()


def test_a_patina_error_is_reported_by_its_message_and_on_error_replaces_the_report(qtbot):
    def fail():
        raise PatinaError("The folder is empty.")

    task = run_task(fail, what="Checking")
    qtbot.waitUntil(lambda: task.finished, timeout=5000)
    assert [b.text() for b in _error_boxes()] == ["Checking failed: The folder is empty."]
    _close_boxes()
    seen = []
    task = run_task(fail, on_error=seen.append)
    qtbot.waitUntil(lambda: task.finished, timeout=5000)
    assert [str(e) for e in seen] == ["The folder is empty."] and not _error_boxes()


def test_work_runs_off_the_gui_thread_and_callbacks_on_it(qtbot):
    where = {}

    def work(task, n):
        where["work"] = threading.current_thread() is threading.main_thread()
        for i in range(n):
            task.progress(i, n)
        return n * 2

    progress, done = [], []

    def on_progress(i, n):
        where["progress"] = threading.current_thread() is threading.main_thread()
        progress.append((i, n))

    def on_done(value):
        where["done"] = threading.current_thread() is threading.main_thread()
        done.append(value)

    run_task(work, 5, pass_task=True, on_progress=on_progress, on_done=on_done)
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    assert done == [10] and progress == [(i, 5) for i in range(5)]
    assert where == {"work": False, "progress": True, "done": True}


def test_a_newer_request_drops_the_older_results(qtbot):
    latest = Latest()
    release = threading.Event()
    got, progress = [], []

    def slow(task, name):
        release.wait(5)
        task.progress(name)
        return name

    old = latest.start(slow, "old folder", pass_task=True, on_done=got.append, on_progress=progress.append)
    assert latest.generation == 1 and latest.is_current(old)
    new = latest.start(lambda: "new folder", on_done=got.append)
    assert latest.generation == 2 and old.cancelled and not latest.is_current(old) and latest.is_current(new)
    qtbot.waitUntil(lambda: got == ["new folder"], timeout=5000)
    release.set()
    qtbot.waitUntil(lambda: old not in Task._running, timeout=5000)
    qtbot.wait(50)
    assert got == ["new folder"] and progress == [] and not old.finished


def test_a_destroyed_owner_gets_no_callback(qtbot):
    owner = QWidget()
    release = threading.Event()
    got = []
    task = run_task(lambda: release.wait(5) and "late", on_done=got.append, owner=owner)
    owner.deleteLater()
    qtbot.waitUntil(lambda: task.cancelled, timeout=5000)
    release.set()
    qtbot.waitUntil(lambda: task not in Task._running, timeout=5000)
    assert got == []


def test_a_callback_that_raises_is_reported(qtbot):
    def on_done(_value):
        raise KeyError("missing")

    task = run_task(lambda: 1, on_done=on_done, what="Detecting the family")
    qtbot.waitUntil(lambda: task.finished, timeout=5000)
    qtbot.waitUntil(lambda: bool(_error_boxes()), timeout=5000)
    assert _error_boxes()[0].text().startswith("Detecting the family: handling its result failed: KeyError")
    _close_boxes()


def test_a_one_thread_lane_runs_in_order_and_wait_blocks_until_done(qtbot):
    lane = Lane(1)
    order, done = [], []

    def job(i):
        time.sleep(0.01 * (5 - i))   # later jobs are quicker: only the lane keeps them in order
        order.append(i)
        return i

    for i in range(5):
        run_task(job, i, lane=lane, on_done=done.append)
    assert lane.wait(5000)
    assert order == [0, 1, 2, 3, 4]
    qtbot.waitUntil(lambda: len(done) == 5, timeout=5000)
    assert done == [0, 1, 2, 3, 4] and lane.threads == 1


def test_stop_asks_the_function_to_end_and_still_reports_how_it_ended(qtbot):
    started = threading.Event()

    def work(task):
        started.set()
        while not task.stop_requested:
            time.sleep(0.01)
        raise PatinaError("Stopped early.")

    seen = []
    task = run_task(work, pass_task=True, on_error=seen.append)
    assert started.wait(5)
    assert not task.stop_requested
    task.stop()
    qtbot.waitUntil(lambda: task.finished, timeout=5000)
    assert [str(e) for e in seen] == ["Stopped early."] and not task.cancelled
    dropped = []
    task = run_task(work, pass_task=True, on_error=dropped.append)
    task.cancel()   # cancel also makes the function stop, and drops its report
    QApplication.processEvents()
    qtbot.wait(200)
    assert task.stop_requested and not dropped
