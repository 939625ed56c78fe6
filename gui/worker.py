"""The training run off the GUI thread.

:class:`TrainingWorker` is the QThread that runs the training engine. The engine is imported inside
:meth:`TrainingWorker.run` (it pulls torch), every event it emits becomes the ``event`` signal, which Qt
queues to the GUI thread, and the run ends with exactly one ``done(Finished)``; an exception in the engine
becomes a ``failed`` Finished with a readable message, never a crash of the app. Every other piece of
background work is a :class:`patina.gui.tasks.Task` (why the run is not one: see there).

Nothing here imports torch or the engine at module level.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import traceback
from typing import Callable

from PySide6.QtCore import QThread, Signal

from patina.core.errors import PatinaError
from patina.core.train.events import Commands, Finished, Log

EngineFn = Callable[..., Finished]


def _engine_function(name: str, doing: str):
    """``patina.core.train.engine.<name>``, imported on first use (it pulls torch); a missing dependency is a
    PatinaError."""
    try:
        import patina.core.train.engine as engine  # noqa: WPS433 (heavy: torch, diffusers)
    except ModuleNotFoundError as exc:
        raise PatinaError(f"The Python package '{exc.name}' is not installed in Patina's environment, so {doing}. "
                          "Run the installer again (packaging/install-*) to repair the environment.") from None
    return getattr(engine, name)


def preload_torch_libraries() -> bool:
    """Load torch's native libraries with the GIL released, before ``import torch``.

    Python holds the GIL while an extension module's shared libraries are loaded, and torch's take most
    of a second (seconds on a busy machine): imported on a worker thread, that still freezes the window.
    ``dlopen`` called through ctypes releases the GIL; the import that follows finds the libraries
    already loaded. Best effort: on any problem the normal import does the loading. Linux only."""
    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return False
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.origin:
            return False
        lib = os.path.join(os.path.dirname(spec.origin), "lib")
        libc = ctypes.CDLL(None)
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        ok = True
        # The same modes torch uses: its global deps globally, the rest local to what links them.
        for name, mode in (("libtorch_global_deps.so", os.RTLD_GLOBAL), ("libtorch_python.so", os.RTLD_LOCAL)):
            path = os.path.join(lib, name)
            if os.path.exists(path):
                ok = bool(libc.dlopen(path.encode(), os.RTLD_NOW | mode)) and ok
        return ok
    except Exception:  # noqa: BLE001 - purely an optimisation
        return False


def default_train(cfg: dict, emit, commands: Commands, *, resume: str | None = None) -> Finished:
    """The real engine; called inside the worker thread. The window keeps the loaded base model between runs
    (patina.core.models.cache; "Free model memory" releases it)."""
    from patina.core.models.cache import window_cache

    preload_torch_libraries()
    return _engine_function("train", "training cannot start")(cfg, emit, commands, resume=resume,
                                                              model_cache=window_cache())


def default_plan(cfg: dict):
    """The engine's dry run: checks the settings and the dataset without loading models."""
    return _engine_function("plan", "the run cannot be planned")(cfg)


def describe_exception(exc: BaseException) -> str:
    """A user-facing sentence for an exception that escaped the engine."""
    if isinstance(exc, PatinaError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "The computer ran out of memory. Lower the batch size or resolution, or turn on gradient checkpointing."
    text = str(exc).strip() or type(exc).__name__
    if "out of memory" in text.lower():
        return ("The GPU ran out of memory. Lower the batch size or resolution, turn on gradient checkpointing, "
                "or use an 8-bit optimizer. (" + text.splitlines()[0] + ")")
    return (f"Training stopped because of an unexpected error: {type(exc).__name__}: {text.splitlines()[0]}. "
            "The full details are in the log below.")


class TrainingWorker(QThread):
    """Runs ``engine_fn(cfg, emit, commands, resume=...)`` in its own thread."""

    event = Signal(object)   # every engine event except Finished, queued to the GUI thread
    done = Signal(object)    # the one Finished that ends the run

    def __init__(self, cfg: dict, engine_fn: EngineFn | None = None, *, resume: str | None = None, parent=None):
        super().__init__(parent)
        self.cfg = dict(cfg)
        self.engine_fn = engine_fn or default_train
        self.resume = resume or None
        self.commands = Commands()
        self.result: Finished | None = None
        self._emitted_finished: Finished | None = None

    # Called from the engine's thread.
    def _emit(self, ev) -> None:
        if isinstance(ev, Finished):
            self._emitted_finished = ev
            return
        self.event.emit(ev)

    def run(self) -> None:  # runs in the worker thread
        try:
            result = self.engine_fn(self.cfg, self._emit, self.commands, resume=self.resume)
            if not isinstance(result, Finished):
                result = self._emitted_finished or Finished("finished", "Training ended.")
        except BaseException as exc:  # noqa: BLE001 - the GUI must survive any engine failure
            if not isinstance(exc, PatinaError):
                self.event.emit(Log("".join(traceback.format_exception(exc)).rstrip(), "warning"))
            result = Finished("failed", describe_exception(exc), None, 0)
        self.result = result
        self.done.emit(result)

    # Called from the GUI thread.
    def request_stop(self) -> None:
        self.commands.request_stop()

    def request_save(self) -> None:
        self.commands.request_save()

    def request_sample(self) -> None:
        self.commands.request_sample()
