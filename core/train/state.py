"""Training state folders (``<name>-state``): write, check-and-read for a resume, load, and prune old ones.

A state folder holds the files of patina.core.train.preflight.STATE_FILES: the LoRA weights in float32,
the optimizer and scheduler state, the mixed-precision scaler (``rng.pt``; no generator states are needed:
the loop derives every random number from the seed, the epoch and the micro-batch) and ``train_state.json``
(step, epoch, micro-batch, seed, config). Resuming continues exactly where the saved run stood.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from patina.core.config.schema import check_values
from patina.core.errors import PatinaError
from patina.core.train.run import Run

# Settings a resume takes from the caller even when they are paths (the data may have moved).
RESUME_PATHS = ("pretrained_model_name_or_path", "train_data_dir", "reg_data_dir", "output_dir", "logging_dir",
                "vae", "output_name", "resume")


def read_for_resume(resume_dir: Path, raw_cfg: dict) -> tuple[dict, dict]:
    """Check the state folder (complete, not damaged, no code in its pickles) and merge the configs.

    Returns ``(config to run, saved state)``. The run continues with the saved config. The caller's config may
    change what does not touch the saved network, optimizer and data order
    (patina.core.train.preflight.RESUME_CHANGEABLE: the length of the run, what and where it saves and samples,
    paths); any other difference is refused, naming the settings."""
    from patina.core.train.preflight import RESUME_CHANGEABLE, check_resume_settings, check_state_folder

    state = check_state_folder(resume_dir)
    saved = dict(state["config"])
    wanted, _ = check_values(raw_cfg)
    given = {k for k in raw_cfg if not k.startswith("_")}
    locked = check_resume_settings(saved, {k: wanted[k] for k in given if k in wanted})
    if locked:
        raise PatinaError(f"These settings differ from the run saved in {resume_dir} and cannot change when resuming:",
                          problems=[str(p) for p in locked])
    merged = dict(saved)
    for key in given:
        if key in RESUME_PATHS:
            if wanted.get(key):
                merged[key] = wanted[key]
        elif key in RESUME_CHANGEABLE and key in wanted:
            merged[key] = wanted[key]
    return merged, state


def write_state(run: Run, folder: Path) -> None:
    """Write *folder* whole or not at all: a temporary folder replaces it, the previous one is restored on failure."""
    import torch
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    old = folder.with_name(folder.name + ".old")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(run.network.kohya_state_dict(dtype=torch.float32), str(tmp / "lora.safetensors"))
        torch.save(run.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(run.lr_scheduler.state_dict(), tmp / "scheduler.pt")
        scaler = run.accelerator.scaler
        torch.save({"scaler": scaler.state_dict() if scaler is not None else None}, tmp / "rng.pt")
        at_epoch, at_micro = run.position()
        state = {"patina_state": 1, "step": run.step, "epoch": at_epoch, "micro_in_epoch": at_micro,
                 "seed": run.seed, "total_steps": run.plan.total_steps, "config": run.cfg,
                 "saved_at": datetime.now(timezone.utc).isoformat()}
        (tmp / "train_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        if folder.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():  # put the previous state back
            with contextlib.suppress(OSError):
                os.replace(old, folder)
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def load_state(run: Run, resume_dir: Path, state: dict) -> None:
    """Load the saved network, optimizer, scheduler and scaler into *run* and move it to the saved position."""
    from safetensors.torch import load_file

    from patina.core.models.checkpoint_files import load_state_pickle

    d = Path(resume_dir)
    owner = f"the training state {d}"
    run.network.load_kohya_state_dict(load_file(str(d / "lora.safetensors")))
    try:
        run.optimizer.load_state_dict(load_state_pickle(d / "optimizer.pt", owner))
        run.lr_scheduler.load_state_dict(load_state_pickle(d / "scheduler.pt", owner))
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise PatinaError(f"{owner} does not match these settings ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160]}); it was saved by a different optimizer or "
                          "network. Resume with the settings it was saved with.") from None
    saved = load_state_pickle(d / "rng.pt", owner)
    if saved.get("scaler") and run.accelerator.scaler is not None:
        run.accelerator.scaler.load_state_dict(saved["scaler"])
    run.step = int(state["step"])
    run.epoch = int(state["epoch"])
    run.micro_done = int(state.get("micro_in_epoch", 0))
    run.report.log(f"Resumed from {d} at step {run.step} (epoch {run.epoch + 1}).")


def prune(cfg: dict, kind: str, current: int) -> None:
    """Delete checkpoints (and their state folders) older than save_last_n_steps/epochs(_state), like kohya.
    *kind* is "step" or "epoch", *current* the step or epoch just saved. Call on the main process only."""
    keep = cfg["save_last_n_steps"] if kind == "step" else cfg["save_last_n_epochs"]
    keep_state = cfg["save_last_n_steps_state"] if kind == "step" else cfg["save_last_n_epochs_state"]
    if not (keep or keep_state):
        return
    out, name = Path(cfg["output_dir"]), cfg["output_name"]
    digits = 8 if kind == "step" else 6
    files = sorted(out.glob(f"{name}-{'step' if kind == 'step' else ''}" + "[0-9]" * digits + ".safetensors"))
    limit = current - keep if keep else None
    for f in files:
        num = int(f.stem[-digits:])
        if limit is not None and num <= limit:
            f.unlink(missing_ok=True)
            state = f.with_name(f.stem + "-state")
            if keep_state and state.exists() and num <= current - keep_state:
                shutil.rmtree(state, ignore_errors=True)
