"""The window keeps answering: no long stall of the GUI thread while the model family is detected, the
Monitor tab opens for the first time and a first run starts (model load, caching, training) on a tiny
model with the real engine.

tests/responsiveness.py runs in a fresh process (first imports are what used to freeze the window) with a
heartbeat QTimer; the worst gaps are printed and written to docs/benchmarks.md by hand. The bound here is
generous (a busy CI machine); the goal on a normal desktop is under 50 ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOUND_MS = 500
RUN_BOUND_MS = 3000


def test_no_long_gui_stall_on_first_contact(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("pyqtgraph")
    from patina.core.models.tiny import save_tiny_diffusers

    model = save_tiny_diffusers(tmp_path / "model", "sd1")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PATINA_CONFIG_DIR=str(tmp_path / "config"), XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               XDG_CACHE_HOME=str(tmp_path / "cache"), PATINA_CACHE_DIR=str(tmp_path / "pcache"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "work").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "responsiveness.py"), str(model),
                           str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print("GUI stalls (worst heartbeat gap per phase, ms):", result["worst_gap_ms"])
    assert result["detected"] and result["charts"] and result["run"] == "finished", result
    # pyqtgraph and torch are first imported off the GUI thread; detecting a diffusers folder's family
    # does not import torch at all (it reads JSON and safetensors headers).
    assert result["first_import"]["pyqtgraph"][0] == "worker", result
    assert result["first_import"]["torch"] == ["worker", "first run (model load and training)"], result
    gaps = result["worst_gap_ms"]
    for phase in ("family detection", "first Monitor tab opening"):
        assert gaps[phase] < BOUND_MS, f"the window froze for {gaps[phase]} ms during {phase}: {gaps}"
    # The first run: the engine imports torch/diffusers and builds the model in its worker thread. Python
    # code there holds the GIL in long stretches on a loaded machine (the GUI thread uses a few ms of CPU
    # in those gaps: it waits), so the bound is wider; a model loaded on the GUI thread takes many seconds.
    assert gaps["first run (model load and training)"] < RUN_BOUND_MS, gaps
