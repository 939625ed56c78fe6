"""Would training run on the CPU?  A quick answer for the window's status bar, without importing torch.

The plan dialog checks the device for certain when a run is planned; this only reads what is installed
(the torch build's version tag, the NVIDIA driver's ``nvidia-smi``), so it can run at start-up. It takes
a fraction of a second (reading package metadata), so the window runs it on a worker thread.
"""

from __future__ import annotations

import shutil
import sys


def cpu_training_reason() -> str | None:
    """One line saying why training would run on the CPU, or None when a CUDA GPU is probably there."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        return "PyTorch is not installed: training cannot run (run the installer again)."
    if torch_version.endswith("+cpu"):
        return (f"Training would run on the CPU (very slow): PyTorch {torch_version} is the CPU build. "
                "Run the installer again on a machine with an NVIDIA GPU.")
    if sys.platform == "darwin":
        return "Training would run on the CPU (very slow): there is no CUDA on macOS."
    if shutil.which("nvidia-smi") is None:
        return "Training would run on the CPU (very slow): no NVIDIA driver found (nvidia-smi is missing)."
    return None
