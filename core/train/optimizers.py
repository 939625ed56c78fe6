"""Optimizers and learning-rate schedulers, by kohya_ss's names.

Each optimizer comes from the library made for it (torch, bitsandbytes, transformers, prodigyopt,
lion-pytorch, dadaptation). A missing optional package gives a message naming the package to install.
"""

from __future__ import annotations

import ast
import math
from typing import Any, Iterable

from patina.core.errors import PatinaError


def parse_kv_args(text: str, field: str) -> dict[str, Any]:
    """``"weight_decay=0.01 betas=0.9,0.99 relative_step=False"`` → dict with Python values."""
    out: dict[str, Any] = {}
    for token in text.split():
        key, sep, raw = token.partition("=")
        if not sep or not key:
            raise PatinaError(f'{field}: "{token}" is not key=value; write e.g. "weight_decay=0.01".')
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            low = raw.lower()
            value = True if low == "true" else False if low == "false" else raw
        if isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def _need(package: str, pip_name: str, optimizer: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise PatinaError(f"The {optimizer} optimizer needs the '{pip_name}' package, which is not installed. "
                          f"Install it with `pip install {pip_name}`, or choose AdamW.") from None


def _bnb(optimizer: str):
    import torch

    if not torch.cuda.is_available():
        raise PatinaError(f"{optimizer} (bitsandbytes 8-bit) needs an NVIDIA GPU with CUDA; no CUDA device was found. "
                          "Choose AdamW (or Adafactor) instead.")
    return _need("bitsandbytes", "bitsandbytes", optimizer)


def build_optimizer(name: str, param_groups: list[dict], lr: float, args_text: str = ""):
    """Create the optimizer *name* for *param_groups* (each with its own ``lr``)."""
    import torch

    kwargs = parse_kv_args(args_text, "optimizer_args")
    try:
        if name == "AdamW":
            return torch.optim.AdamW(param_groups, lr=lr, **kwargs)
        if name in ("AdamW8bit", "PagedAdamW8bit", "Lion8bit", "SGDNesterov8bit"):
            bnb = _bnb(name)
            if name == "AdamW8bit":
                return bnb.optim.AdamW8bit(param_groups, lr=lr, **kwargs)
            if name == "PagedAdamW8bit":
                return bnb.optim.PagedAdamW8bit(param_groups, lr=lr, **kwargs)
            if name == "Lion8bit":
                return bnb.optim.Lion8bit(param_groups, lr=lr, **kwargs)
            kwargs.setdefault("momentum", 0.9)
            return bnb.optim.SGD8bit(param_groups, lr=lr, nesterov=True, **kwargs)
        if name == "SGDNesterov":
            kwargs.setdefault("momentum", 0.9)
            return torch.optim.SGD(param_groups, lr=lr, nesterov=True, **kwargs)
        if name == "Adafactor":
            from transformers.optimization import Adafactor

            kwargs.setdefault("relative_step", True)
            kwargs.setdefault("scale_parameter", True)
            kwargs.setdefault("warmup_init", False)
            if kwargs["relative_step"]:
                # Adafactor computes its own step size; an explicit lr is not allowed with relative_step.
                for g in param_groups:
                    g.pop("lr", None)
                return Adafactor(param_groups, lr=None, **kwargs)
            return Adafactor(param_groups, lr=lr, **kwargs)
        if name == "Lion":
            lion = _need("lion_pytorch", "lion-pytorch", name)
            return lion.Lion(param_groups, lr=lr, **kwargs)
        if name == "Prodigy":
            prodigy = _need("prodigyopt", "prodigyopt", name)
            return prodigy.Prodigy(param_groups, lr=lr, **kwargs)
        if name in ("DAdaptation", "DAdaptAdam"):
            dadapt = _need("dadaptation", "dadaptation", name)
            return dadapt.DAdaptAdam(param_groups, lr=lr, **kwargs)
    except TypeError as exc:
        raise PatinaError(f"optimizer_args do not fit {name}: {exc}. Check the names in optimizer_args.") from None
    raise PatinaError(f'Unknown optimizer "{name}".')


def warmup_steps(cfg: dict, total_steps: int) -> int:
    if cfg["lr_scheduler"] in ("constant", "adafactor"):
        return 0
    if cfg["lr_warmup_steps"] > 0:
        return int(cfg["lr_warmup_steps"])
    return int(math.ceil(total_steps * cfg["lr_warmup"] / 100))


def build_scheduler(cfg: dict, optimizer, total_steps: int):
    """The LR scheduler for *cfg* (warmup as % of steps or absolute steps)."""
    from diffusers.optimization import get_scheduler

    name = cfg["lr_scheduler"]
    extra = parse_kv_args(cfg["lr_scheduler_args"], "lr_scheduler_args")
    warm = warmup_steps(cfg, total_steps)
    if name == "adafactor":
        from transformers.optimization import AdafactorSchedule

        if type(optimizer).__name__ != "Adafactor":
            raise PatinaError('The "adafactor" LR scheduler only works with the Adafactor optimizer; choose another '
                              "scheduler or switch the optimizer to Adafactor.")
        return AdafactorSchedule(optimizer, initial_lr=cfg["learning_rate"])
    if name == "constant" and warm == 0:
        return get_scheduler("constant", optimizer)
    kwargs: dict[str, Any] = dict(num_warmup_steps=warm, num_training_steps=max(total_steps, 1))
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = int(cfg["lr_scheduler_num_cycles"])
    if name == "polynomial":
        kwargs["power"] = float(cfg["lr_scheduler_power"])
    if name == "constant":
        name = "constant_with_warmup"
    kwargs.update(extra)
    try:
        return get_scheduler(name, optimizer, **kwargs)
    except TypeError as exc:
        raise PatinaError(f"lr_scheduler_args do not fit {name}: {exc}.") from None


def current_lrs(optimizer, group_names: Iterable[str]) -> dict[str, float]:
    """The learning rate of each named group (for D-Adaptation/Prodigy: d × lr, the effective one)."""
    out = {}
    for name, group in zip(group_names, optimizer.param_groups):
        lr = group.get("lr")
        if lr is None:  # Adafactor relative step
            state = optimizer.state.get(group["params"][0], {})
            lr = _adafactor_lr(optimizer, group, state)
        if "d" in group:
            lr = group["d"] * lr
        out[name] = float(lr)
    return out


def _adafactor_lr(optimizer, group, state) -> float:
    try:
        return float(optimizer._get_lr(group, state)) if state else 0.0
    except Exception:  # noqa: BLE001 - private API; the chart just shows 0
        return 0.0
