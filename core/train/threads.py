"""How many threads a training on the CPU uses.

torch's default (every logical CPU) is the wrong choice on a shared or busy machine: its worker threads
spin-wait, and a step measured 8–45× slower with two threads than with one while other work ran. So the
count is chosen deliberately: the ``cpu_threads`` setting when it is above 0, else ``OMP_NUM_THREADS``
when the user set it, else the physical cores (hyper-threads add nothing to these kernels) available to
this process, less one left for the window, capped at :data:`MAX_AUTO`.
"""

from __future__ import annotations

import os

MAX_AUTO = 16


def _physical_cores() -> int:
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil missing or unable to tell
        physical = None
    logical = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = logical
    physical = physical or max(1, logical // 2)
    return max(1, min(physical, allowed))


def choose_threads(setting: int, environ=None) -> tuple[int, str]:
    """(thread count, why) for a CPU run with ``cpu_threads`` = *setting*."""
    environ = os.environ if environ is None else environ
    if setting and setting > 0:
        return int(setting), "set by cpu_threads"
    env = str(environ.get("OMP_NUM_THREADS", "")).strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "from OMP_NUM_THREADS"
    cores = _physical_cores()
    n = min(MAX_AUTO, max(1, cores - 1))
    if cores == 1:
        return n, "automatic: 1 physical core"
    return n, f"automatic: {cores} physical cores, one left free" + (f", at most {MAX_AUTO}" if n == MAX_AUTO else "")


def apply_threads(setting: int) -> tuple[int, str]:
    """Choose the count and give it to torch; returns what :func:`choose_threads` said."""
    import torch

    n, why = choose_threads(setting)
    torch.set_num_threads(n)
    return n, why
