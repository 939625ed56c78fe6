"""The window's loaded base model, kept between runs.

A second run with tweaked settings should start at once, not spend seconds (a 7 GB SDXL file: a minute)
loading the same checkpoint again. :class:`ModelCache` keeps the frozen base weights of the last model
loaded and hands every run **fresh modules** built around them: LoRA injection wraps the UNet and text
encoder modules in place, gradient checkpointing and attention processors are module state too, so a
run never gets the modules an earlier run changed, only the same weight tensors (the base is frozen:
nothing writes to them). A cached model is reused only when the file (path, size, modification time),
the VAE, the model type, the dtypes and the device are all unchanged; anything else releases it before
the new one loads, so two base models are never held at once. :meth:`ModelCache.clear` frees it
("Free model memory" in the window). Headless ``patina train`` loads without a cache.

Nothing here imports torch at module level (the window imports this module).
"""

from __future__ import annotations

import copy
import gc
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


def _stat_key(path) -> tuple | None:
    if not path:
        return None
    p = Path(path).expanduser()
    try:
        p = p.resolve()
        st = p.stat()
    except OSError:
        return (str(p),)
    if p.is_dir():  # a diffusers folder: its component weight files decide
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return (str(p),) + tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return (str(p), st.st_size, st.st_mtime_ns)


def load_key(path, *, vae_path=None, **settings) -> tuple:
    """What decides whether a loaded base model can be reused: the files and every load setting."""
    return (_stat_key(path), _stat_key(vae_path), tuple(sorted((k, str(v)) for k, v in settings.items())))


@dataclass
class _Entry:
    key: tuple
    base: Any                  # the BaseModel as loaded (its modules are never handed out)
    weights: dict              # component name -> its frozen state dict (the tensors runs share)


def _components(base) -> dict:
    parts = {"unet": base.unet, "vae": base.vae}
    parts.update({f"text_encoder_{i}": te for i, te in enumerate(base.text_encoders)})
    return parts


def _rebuild(module, weights: dict):
    """A new module of *module*'s class and config with *weights* assigned (not copied)."""
    import torch
    from accelerate import init_empty_weights

    config = module.config
    with init_empty_weights():  # parameters on the meta device; buffers (e.g. position ids) real
        new = type(module).from_config(config) if hasattr(type(module), "from_config") else type(module)(config)
    new.load_state_dict(weights, strict=True, assign=True)
    device = next(iter(weights.values())).device if weights else torch.device("cpu")
    return new.to(device).eval().requires_grad_(False)


class ModelCache:
    """One cached base model (see the module docstring). Thread-safe: the window's run is a QThread."""

    def __init__(self):
        self._entry: _Entry | None = None
        self._lock = threading.Lock()
        self.loads = 0             # how many times a model was really loaded (tests, the log)

    @property
    def holds(self) -> str | None:
        """The cached model's file name, or None."""
        entry = self._entry
        return Path(entry.key[0][0]).name if entry is not None and entry.key[0] else None

    def load(self, loader, path, *, vae_path=None, **settings):
        """``loader(path, vae_path=..., **settings)`` (a :func:`load_base_model`), or the cached model's
        weights in fresh modules when nothing that decides the load has changed. Returns
        ``(base model, reused)``."""
        key = load_key(path, vae_path=vae_path, **settings)
        with self._lock:
            if self._entry is not None and self._entry.key == key:
                return self._fresh(self._entry), True
            self._release()
            base = loader(path, vae_path=vae_path, **settings)
            weights = {name: m.state_dict() for name, m in _components(base).items()}
            self._entry = _Entry(key, base, weights)
            self.loads += 1
            return self._fresh(self._entry), False

    def clear(self) -> bool:
        """Release the cached model; True when one was held."""
        with self._lock:
            held = self._entry is not None
            self._release()
            return held

    def _release(self) -> None:
        if self._entry is None:
            return
        self._entry = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    @staticmethod
    def _fresh(entry: _Entry):
        base = entry.base
        parts = {name: _rebuild(m, entry.weights[name]) for name, m in _components(base).items()}
        tes = [parts[f"text_encoder_{i}"] for i in range(len(base.text_encoders))]
        return replace(base, unet=parts["unet"], vae=parts["vae"], text_encoders=tes,
                       noise_scheduler=copy.deepcopy(base.noise_scheduler), warnings=list(base.warnings))


_WINDOW_CACHE = ModelCache()


def window_cache() -> ModelCache:
    """The cache the window's training runs share."""
    return _WINDOW_CACHE
