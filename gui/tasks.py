"""The window's one way to work off the GUI thread.

A :class:`Task` runs ``fn(*args)`` on a worker thread and reports back on the GUI thread:

* ``on_done(value)`` when *fn* returns, ``on_error(exc)`` when it raises. Without an ``on_error`` the
  exception goes to :func:`report_error` (the traceback on stderr and a non-blocking message box), never
  nowhere. An exception raised by a callback itself is reported the same way.
* ``on_progress(*values)`` for every ``task.progress(*values)`` the function calls (give
  ``pass_task=True`` and *fn* gets the task as its first argument: ``fn(task, *args)``).
* :meth:`Task.cancel` drops whatever the task has not reported yet; a long function may also look at
  ``task.cancelled`` and stop early. :meth:`Task.stop` only asks it to stop early (``task.stop_requested``)
  and still reports how it ended, so a Cancel button learns when the work is really over. With an *owner* widget, the task is cancelled when the widget is
  destroyed, so no callback ever reaches a deleted window.
* :class:`Latest` keeps one task per purpose: starting a new one cancels the one before, so a newer
  request (another folder, another model path) makes older results be dropped ("cancel by generation").
* A :class:`Lane` is a private set of threads: ``Lane(1)`` runs its tasks one at a time in the order they
  were started (caption writes, the dataset check), ``Lane(n)`` at most *n* at once (thumbnails). Tasks
  without a lane share Qt's global thread pool.

    run_task(detect_family, path, on_done=self._show_family, owner=self)

The training run is the one piece of work that does not use a Task: :class:`patina.gui.worker.TrainingWorker`
runs for hours, streams typed events and takes commands (stop, save, sample) while it runs, so it owns
a dedicated ``QThread`` instead of holding a pool thread that short tasks would wait for.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThreadPool, Qt, Signal, Slot
from PySide6.QtWidgets import QApplication, QMessageBox

from patina.core.errors import PatinaError


# --- errors nobody asked for -----------------------------------------------------------------------------

def error_text(exc: BaseException) -> str:
    """One line for the user: a PatinaError's own message, else the exception's type and first line."""
    if isinstance(exc, PatinaError):
        return str(exc)
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return f"{type(exc).__name__}: {text}"


def report_error(exc: BaseException, what: str = "A background task") -> None:
    """The default ``on_error``: the traceback on stderr, and a message box that does not block."""
    details = "".join(traceback.format_exception(exc)).rstrip()
    if sys.stderr is not None:
        print(f"patina: {what} failed\n{details}", file=sys.stderr)
    if not isinstance(QApplication.instance(), QApplication):
        return
    box = QMessageBox(QMessageBox.Icon.Warning, "Patina", f"{what} failed: {error_text(exc)}",
                      QMessageBox.StandardButton.Ok, QApplication.activeWindow())
    box.setObjectName("patinaTaskError")
    box.setDetailedText(details)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.NonModal)
    _open_reports.add(box)   # no parent when no window is active: Python must keep it alive while it shows
    box.finished.connect(lambda _result, b=box: _open_reports.discard(b))
    box.show()


_open_reports: set[QMessageBox] = set()


# --- threads -------------------------------------------------------------------------------------------

class Lane:
    """A private set of at most *threads* worker threads. With one thread, tasks run in the order started."""

    def __init__(self, threads: int = 1):
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(max(1, int(threads)))

    @property
    def threads(self) -> int:
        return self.pool.maxThreadCount()

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until every task started on this lane has returned (their reports arrive later)."""
        return self.pool.waitForDone(timeout_ms)


class _Relay(QObject):
    """Lives on the GUI thread; the worker emits, Qt queues the signal here."""

    done = Signal(object)
    failed = Signal(object)
    progress = Signal(object)


class Task:
    """``fn(*args)`` off the GUI thread, its result, failure and progress back on the GUI thread.

    Create and start tasks on the GUI thread. See the module docstring for the callbacks.
    """

    _running: set["Task"] = set()   # a task keeps itself alive until it has reported

    def __init__(self, fn: Callable[..., Any], *args: Any, on_done: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 on_progress: Callable[..., None] | None = None, lane: Lane | None = None,
                 owner: QObject | None = None, what: str = "", pass_task: bool = False):
        self.fn = fn
        self.args = args
        self.on_done = on_done
        self.on_error = on_error
        self.on_progress = on_progress
        self.lane = lane
        self.what = what or f"A background task ({getattr(fn, '__name__', 'task')})"
        self.pass_task = pass_task
        self.finished = False            # set on the GUI thread once the result (or failure) was handled
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._relay = _Relay()
        self._relay.done.connect(self._deliver_done)
        self._relay.failed.connect(self._deliver_failed)
        self._relay.progress.connect(self._deliver_progress)
        self._owner = owner
        if owner is not None:
            owner.destroyed.connect(self.cancel)

    # --- either thread ------------------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self, *_args) -> None:
        """Drop every report the task has not delivered yet (the function itself runs to its end unless
        it looks at :attr:`cancelled`)."""
        self._cancel.set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` or :meth:`cancel` was called: a long function should end early."""
        return self._stop.is_set() or self._cancel.is_set()

    def stop(self) -> None:
        """Ask the function to end early (it polls :attr:`stop_requested`); unlike :meth:`cancel`, its
        result or failure is still reported."""
        self._stop.set()

    # --- GUI thread -----------------------------------------------------------------------------------
    def start(self) -> "Task":
        Task._running.add(self)
        pool = self.lane.pool if self.lane is not None else QThreadPool.globalInstance()
        pool.start(self._run)
        return self

    # --- worker thread --------------------------------------------------------------------------------
    def progress(self, *values: Any) -> None:
        """Report progress; ``on_progress(*values)`` runs on the GUI thread (dropped once cancelled)."""
        if not self.cancelled:
            self._emit(self._relay.progress, values)

    def _run(self) -> None:
        try:
            value = self.fn(self, *self.args) if self.pass_task else self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - reported on the GUI thread
            self._emit(self._relay.failed, exc)
            return
        self._emit(self._relay.done, value)

    @staticmethod
    def _emit(signal, value) -> None:
        try:
            signal.emit(value)
        except RuntimeError:
            pass  # the application is closing and the relay is gone: nobody waits for the answer

    # --- delivery (GUI thread) ----------------------------------------------------------------------------
    def _call(self, fn: Callable, *values: Any) -> None:
        try:
            fn(*values)
        except Exception as exc:  # noqa: BLE001 - a broken callback is reported, never lost
            report_error(exc, f"{self.what}: handling its result")

    @Slot(object)
    def _deliver_progress(self, values) -> None:
        if self.on_progress is not None and not self.cancelled:
            self._call(self.on_progress, *values)

    def _release(self) -> None:
        Task._running.discard(self)
        owner, self._owner = self._owner, None
        if owner is not None:   # the connection would keep the task alive as long as its owner
            try:
                owner.destroyed.disconnect(self.cancel)
            except (RuntimeError, TypeError):
                pass  # the owner is gone already

    @Slot(object)
    def _deliver_done(self, value) -> None:
        self._release()
        if self.cancelled:
            return
        self.finished = True
        if self.on_done is not None:
            self._call(self.on_done, value)

    @Slot(object)
    def _deliver_failed(self, exc) -> None:
        self._release()
        if self.cancelled:
            return
        self.finished = True
        if self.on_error is not None:
            self._call(self.on_error, exc)
        else:
            report_error(exc, self.what)


def run_task(fn: Callable[..., Any], *args: Any, **options: Any) -> Task:
    """Start ``Task(fn, *args, **options)`` and return it."""
    return Task(fn, *args, **options).start()


class Latest:
    """One purpose, one live task: :meth:`start` cancels the task started before, so only the newest
    request's results arrive. :attr:`generation` counts the starts."""

    def __init__(self, lane: Lane | None = None):
        self.lane = lane
        self.generation = 0
        self.task: Task | None = None

    def start(self, fn: Callable[..., Any], *args: Any, **options: Any) -> Task:
        self.cancel()
        self.generation += 1
        options.setdefault("lane", self.lane)
        self.task = run_task(fn, *args, **options)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def is_current(self, task: Task) -> bool:
        return task is self.task and not task.cancelled
