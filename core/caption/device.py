"""Which device a captioner runs on."""

from __future__ import annotations

from patina.core.errors import PatinaError


def pick_device(device: str = "auto") -> str:
    """``auto``: CUDA when torch sees a GPU, else the CPU. ``cuda`` without a GPU is a user mistake."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PatinaError("--device cuda: no CUDA GPU is available here; use --device cpu (or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise PatinaError(f"--device: use auto, cuda or cpu, not {device!r}")
    return device
