"""The engine's boundary: typed events out, commands in.

The engine calls ``emit(event)`` with one of the dataclasses below; it never knows who listens (the
CLI's progress bar, the Qt worker that turns them into signals, a test collecting them). Commands
reach the engine through :class:`Commands`, which is thread-safe and polled at step boundaries.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Union

# Phases reported by Status, in the order a run goes through them.
PHASES = ("checking", "loading", "caching", "training", "sampling", "saving", "done")


@dataclass(frozen=True)
class Status:
    phase: str          # one of PHASES
    text: str           # a line for the status bar / log


@dataclass(frozen=True)
class Log:
    text: str
    level: str = "info"  # "info" | "warning"


@dataclass(frozen=True)
class Plan:
    """What will happen, reported once the dataset is checked and before any training work."""

    images: int
    reg_images: int
    samples_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    batch_size: int
    grad_accum: int
    buckets: dict            # {"512x512": count, ...}
    skipped: list            # [(path, reason), ...]
    output_path: str
    family: str
    text: str                # the whole plan as readable text
    reg_samples: int = 0     # regularisation samples per epoch (as many as training samples, or 0)
    arithmetic: str = ""     # how the steps come about (patina.core.dataset.summary.EpochArithmetic.text)
    warnings: list = field(default_factory=list)   # dataset warnings, one line each
    problems: list = field(default_factory=list)  # patina.core.config.schema.Problem from the pre-flight check (patina.core.train.preflight)
    vram: object = None      # patina.core.train.vram.Estimate (None: family unknown, or not estimated)


@dataclass(frozen=True)
class Progress:
    step: int               # optimizer steps done
    total_steps: int
    epoch: int              # 1-based epoch in progress
    total_epochs: int
    images_per_sec: float
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True)
class Metrics:
    step: int
    epoch: int
    loss: float
    avg_loss: float         # moving average over the last steps
    lrs: dict               # {"unet": lr, "textencoder": lr, ...}


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    step: int
    avg_loss: float


@dataclass(frozen=True)
class Sample:
    path: str
    prompt: str
    index: int              # prompt index (0-based)
    step: int
    epoch: int


@dataclass(frozen=True)
class Saved:
    path: str
    kind: str               # "lora" | "state"
    step: int
    epoch: int


@dataclass(frozen=True)
class Quality:
    """The quality report after an epoch (patina.core.train.quality): ``report`` is the whole report so far,
    as written to quality.json (``report["epochs"][-1]`` is this epoch's entry)."""

    epoch: int
    step: int
    report: dict
    grid_path: str | None   # the grid image: rows = epochs, columns = prompts × LoRA weights


@dataclass(frozen=True)
class Finished:
    status: str             # "finished" | "stopped" | "failed"
    message: str            # user-facing: what happened and, on failure, what to change
    output: str | None = None   # the LoRA file written: <name>.safetensors only when finished, <name>-step<N>
    #                             when stopped or failed, a file in the rescue folder when the output folder failed
    step: int = 0


Event = Union[Status, Log, Plan, Progress, Metrics, EpochEnd, Sample, Saved, Quality, Finished]
Emit = Callable[[Event], None]


@dataclass
class Commands:
    """Requests from the user to a running engine; safe to call from any thread."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: bool = False
    _save: bool = False
    _sample: bool = False

    def request_stop(self) -> None:
        """Stop at the next step boundary and save what was trained."""
        with self._lock:
            self._stop = True

    def request_save(self) -> None:
        with self._lock:
            self._save = True

    def request_sample(self) -> None:
        with self._lock:
            self._sample = True

    @property
    def stop_requested(self) -> bool:
        with self._lock:
            return self._stop

    def take(self) -> tuple[bool, bool, bool]:
        """(stop, save, sample) requested since the last call; save/sample are cleared."""
        with self._lock:
            out = (self._stop, self._save, self._sample)
            self._save = self._sample = False
            return out
