"""The training engine: one readable step loop with typed events out and commands in.

``train(cfg, emit, commands)`` runs a whole LoRA/LoCon training for a complete config (see
patina.core.config.schema) and returns a :class:`~patina.core.train.events.Finished`. It never raises for user errors: a bad
setting, a missing folder, a broken model file, CUDA out-of-memory or a NaN loss all end in
``Finished(status="failed", message=...)`` with a message that says what to change, after saving the
last good state where there is one.

``plan(cfg)`` checks the settings and the dataset and returns the :class:`~patina.core.train.events.Plan` without
loading any model (the GUI shows it before starting).

Runs headless and under ``accelerate launch`` (several processes: only the main one writes files and
emits events; each process trains on its share of every epoch's batches).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import secrets
import shutil
import time
import traceback
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from patina.core.errors import PatinaError
from patina.core.train.events import (Commands, Emit, EpochEnd, Finished, Log, Metrics, Plan, Progress, Sample, Saved, Status)
from patina.core.config.schema import ValidConfig, check_values, errors, missing_required, training_lrs
from patina.core.dataset.buckets import parse_resolution

from patina.core.train.preflight import STATE_FILES  # noqa: F401 - the files of a <name>-state folder


# --- planning (no models) ---------------------------------------------------------------------------

@dataclass
class RunPlan:
    cfg: dict
    scan: object
    data: object            # patina.core.train.batches.DatasetPlan
    seed: int
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    output_path: Path
    warnings: list


def _require_paths(cfg: dict) -> None:
    missing = [f"{p.key} ({p.place}): choose {p.required}" for p in missing_required(cfg)]
    if missing:
        raise PatinaError("Some required settings are empty:", problems=missing)


def validated(cfg: dict) -> dict:
    """*cfg* checked by the schema's one validator; a :class:`ValidConfig` (already checked) is taken as it is."""
    if isinstance(cfg, ValidConfig):
        values = cfg
    else:
        values, problems = check_values(cfg)
        bad = errors(problems)
        if bad:
            raise PatinaError(f"{len(bad)} setting(s) are not valid; fix them and start again:",
                              problems=[str(p) for p in bad])
    _require_paths(values)
    return values


def make_plan(cfg: dict, *, seed: int | None = None, num_processes: int = 1) -> RunPlan:
    from patina.core.dataset.folders import scan_dataset
    from patina.core.dataset.summary import upscale_warning
    from patina.core.train.batches import DatasetPlan

    cfg = validated(cfg)
    scan = scan_dataset(cfg["train_data_dir"], cfg["reg_data_dir"] or None, cfg["caption_extension"],
                        min_size=cfg["min_bucket_reso"])
    if seed is None:
        seed = cfg["seed"] or (secrets.randbelow(2**31 - 1) + 1)
    data = DatasetPlan(scan, cfg, seed)
    batches = len(data.epoch_batches(0))
    per_process = math.ceil(batches / num_processes)
    spe = max(1, math.ceil(per_process / cfg["gradient_accumulation_steps"]))
    if cfg["max_train_epochs"] > 0:
        epochs, total = cfg["max_train_epochs"], cfg["max_train_epochs"] * spe
    elif cfg["max_train_steps"] > 0:
        total = cfg["max_train_steps"]
        epochs = math.ceil(total / spe)
    else:
        epochs, total = cfg["epoch"], cfg["epoch"] * spe
    warnings = [f"{s.path}: skipped — {s.reason}" for s in scan.skipped]
    warnings += [f"{p}" for p in scan.folder_problems]
    upscaled = upscale_warning((it.image, it.bucket) for it in data.items)
    if upscaled:
        warnings.append(upscaled)
    for bucket in data.small_buckets():
        warnings.append(f"bucket {bucket} holds fewer images than the batch size in some steps; those steps run "
                        "with a smaller batch")
    out = Path(cfg["output_dir"]) / f"{cfg['output_name']}.safetensors"
    return RunPlan(cfg, scan, data, seed, batches, spe, epochs, total, out, warnings)


def plan_event(rp: RunPlan, family: str = "auto", problems: list | None = None) -> Plan:
    from patina.core.dataset.summary import scan_arithmetic

    scan, cfg = rp.scan, rp.cfg
    arithmetic = scan_arithmetic(scan, cfg["train_batch_size"], cfg["gradient_accumulation_steps"],
                                 rp.steps_per_epoch)
    lines = ["Training plan", ""]
    for s in scan.subsets:
        kind = "reg " if s.is_reg else ""
        lines.append(f"  {kind}{s.name}: {s.num_images} images × {s.repeats} repeats = {s.samples} samples")
    lines += [
        f"  Per epoch: {arithmetic.text}",
        f"  Epochs: {rp.epochs}   Total steps: {rp.total_steps}",
        f"  Captions: {scan.captioned} of {scan.train_images} training image(s) have a {scan.caption_extension} "
        "caption file" + ("; the others are captioned with their folder name"
                          if scan.captioned < scan.train_images else ""),
        f"  Resolution {cfg['max_resolution']}, buckets: "
        + ", ".join(f"{k} ({v})" for k, v in rp.data.bucket_histogram().items()),
        f"  Output: {rp.output_path}",
    ]
    if scan.skipped:
        lines.append(f"  Skipped {len(scan.skipped)} file(s):")
        lines += [f"    {s.path} — {s.reason}" for s in scan.skipped]
    other = [w for w in rp.warnings if "skipped —" not in w]
    problems = list(problems or [])
    from patina.core.train.preflight import describe

    other += [describe(p) for p in problems if p.severity != "error"]
    if other:
        lines.append("  Warnings:")
        lines += [f"    {w}" for w in other]
    errs = [p for p in problems if p.severity == "error"]
    if errs:
        lines.append("  Problems to fix before training:")
        lines += [f"    {describe(p)}" for p in errs]
    return Plan(images=scan.train_images, reg_images=scan.reg_images, samples_per_epoch=scan.samples_per_epoch,
                steps_per_epoch=rp.steps_per_epoch, epochs=rp.epochs, total_steps=rp.total_steps,
                batch_size=cfg["train_batch_size"], grad_accum=cfg["gradient_accumulation_steps"],
                buckets=rp.data.bucket_histogram(), skipped=[(str(s.path), s.reason) for s in scan.skipped],
                output_path=str(rp.output_path), family=family, text="\n".join(lines),
                reg_samples=scan.reg_samples_used, arithmetic=arithmetic.text,
                warnings=[w for w in rp.warnings if "skipped —" not in w], problems=problems)


def _family(cfg: dict, *, strict: bool) -> str:
    family = cfg.get("model_family", "auto")
    if family == "auto":
        try:
            from patina.core.models.loading import detect_family

            family = detect_family(cfg["pretrained_model_name_or_path"]).family
        except PatinaError:
            if strict:
                raise
            family = "auto"
        except Exception:  # noqa: BLE001 - the plan is still useful without the family
            family = "auto"
    return family


def run_preflight(rp: RunPlan, family: str, device=None, *, resume: str | None = None) -> list:
    """The pre-flight check (patina.core.train.preflight) for a planned run: every problem found before any model loads."""
    from patina.core.train.preflight import check_resume_settings, check_state_folder, preflight, probe_device

    problems = preflight(rp.cfg, device=device if device is not None else probe_device(), family=family,
                         epochs=rp.epochs, total_steps=rp.total_steps)
    if resume:
        from patina.core.config.schema import Problem

        try:
            state = check_state_folder(resume)
        except PatinaError as exc:
            problems.append(Problem("resume", str(exc)))
        else:
            problems += check_resume_settings(state["config"], rp.cfg)
    return problems


def plan(cfg: dict) -> Plan:
    """Check settings, dataset, folders and device and describe the run, without loading a model.

    Raises PatinaError when the run cannot even be planned (invalid settings, no dataset); every other problem
    (patina.core.train.preflight) is in ``Plan.problems``, errors first-class: a plan with an error must not be started."""
    rp = make_plan(cfg)
    family = _family(rp.cfg, strict=True)
    return plan_event(rp, family, run_preflight(rp, family, resume=rp.cfg.get("resume") or None))


# --- the run ------------------------------------------------------------------------------------------

class _Stop(Exception):
    pass


class Trainer:
    """One training run. ``run()`` is the whole story, top to bottom."""

    CACHE_PROGRESS_S = 0.5   # "Caching latents k/N…" at most this often (and always at the end)

    def __init__(self, cfg: dict, emit: Emit | None, commands: Commands | None, resume: str | None,
                 overwrite: bool = True):
        self.raw_cfg = dict(cfg)
        self._emit = emit or (lambda e: None)
        self.commands = commands or Commands()
        self.resume_dir = Path(resume) if resume else (Path(cfg["resume"]) if cfg.get("resume") else None)
        self.overwrite = overwrite
        self.global_step = 0
        self.epoch = 0              # 0-based epoch in progress
        self.micro_done = 0         # micro-batches of the current epoch already trained (resume)
        self.last_saved: str | None = None
        self.losses: deque = deque(maxlen=50)
        self.epoch_losses: list[float] = []
        self.started = time.time()
        self.accelerator = None
        self.tb = None
        self.jsonl = None

    # events only from the main process
    def emit(self, event) -> None:
        if self.accelerator is None or self.accelerator.is_main_process:
            self._emit(event)

    def status(self, phase: str, text: str) -> None:
        self.emit(Status(phase, text))

    def log(self, text: str, level: str = "info") -> None:
        self.emit(Log(text, level))

    # -- setup -------------------------------------------------------------------------------------------
    def run(self) -> Finished:
        import torch

        self.status("checking", "Checking settings and dataset…")
        resume_state = self._read_resume_state() if self.resume_dir else None
        from accelerate import Accelerator

        cfg = validated(self.raw_cfg)
        mp = cfg["mixed_precision"]
        if not torch.cuda.is_available() and mp == "fp16":
            mp = "no"  # fp16 autocast is a GPU feature; the CPU trains in full precision
        # cpu=True on a machine without CUDA also makes several launched processes use gloo (MULTI_CPU)
        from accelerate.utils import DistributedDataParallelKwargs

        # find_unused_parameters: with clip skip / SDXL's penultimate layer the last text-encoder layer's LoRA
        # gets no gradient, which plain DDP refuses.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        self.accelerator = Accelerator(mixed_precision=mp, gradient_accumulation_steps=1,
                                       cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
        acc = self.accelerator

        seed = resume_state["seed"] if resume_state else None
        self.rp = make_plan(cfg, seed=seed, num_processes=acc.num_processes)
        self.cfg = cfg = self.rp.cfg
        self.seed = self.rp.seed
        out = self.rp.output_path
        # Everything checkable is checked now, before any model loads (patina.core.train.preflight).
        from patina.core.train.preflight import refuse_if_errors

        problems = run_preflight(self.rp, _family(cfg, strict=False))
        refuse_if_errors(problems)
        if out.exists() and not self.overwrite and not resume_state:
            raise PatinaError(f"{out} already exists. Choose another output name, or replace it (`patina train "
                              "--overwrite`, or answer Yes when the window asks).")
        self._clean_leftovers()
        for w in self.rp.warnings:
            self.log(w, "warning")
        from patina.core.train.preflight import describe

        for p in problems:
            self.log(describe(p), "warning")

        self.status("loading", f"Loading {Path(cfg['pretrained_model_name_or_path']).name}…")
        self._load_models()
        for w in self._long_caption_warnings():
            self.rp.warnings.append(w)
            self.log(w, "warning")
        self.emit(plan_event(self.rp, self.base.family, problems))
        self.log(f"Seed {self.seed}. {self.rp.total_steps} steps over {self.rp.epochs} epoch(s).")

        self._build_network()
        self._build_optimizer()  # before caching: a missing optimizer package fails in seconds, not minutes
        self._cache()
        if resume_state:
            self._load_state(resume_state)
        self._open_logs()
        try:
            if cfg["sample_at_first"] and self.global_step == 0:
                self._sample(epoch=None)
            stopped = self._loop()
        except _NanLoss as exc:
            return self._finish_failed(str(exc), save=True)
        except _SaveFailed as exc:
            return self._finish_failed(exc.describe() + " Training stopped there.", save=True)
        except Exception as exc:
            if _is_oom(exc):
                return self._finish_failed(_oom_message(cfg), save=True)
            raise
        finally:
            self._close_logs()
        return self._finish(stopped)

    def _read_resume_state(self) -> dict:
        """Check the state folder (complete, not damaged, no code in its pickles) and merge the configs.

        The run continues with the saved config. The caller's config may change what does not touch the saved
        network, optimizer and data order (patina.core.train.preflight.RESUME_CHANGEABLE: the length of the run, what and
        where it saves and samples, paths); any other difference is refused, naming the settings."""
        from patina.core.train.preflight import RESUME_CHANGEABLE, check_resume_settings, check_state_folder

        d = self.resume_dir
        state = check_state_folder(d)
        saved = dict(state["config"])
        wanted, _ = check_values(self.raw_cfg)
        given = {k for k in self.raw_cfg if not k.startswith("_")}
        locked = check_resume_settings(saved, {k: wanted[k] for k in given if k in wanted})
        if locked:
            raise PatinaError(f"These settings differ from the run saved in {d} and cannot change when resuming:",
                              problems=[str(p) for p in locked])
        merged = dict(saved)
        paths = ("pretrained_model_name_or_path", "train_data_dir", "reg_data_dir", "output_dir", "logging_dir",
                 "vae", "output_name", "resume")
        for key in given:
            if key in paths:
                if wanted.get(key):
                    merged[key] = wanted[key]
            elif key in RESUME_CHANGEABLE and key in wanted:
                merged[key] = wanted[key]
        self.raw_cfg = merged
        return state

    def _load_models(self) -> None:
        import torch

        from patina.core.models.loading import load_base_model

        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()  # diffusers warns about float32 modules on every .to(dtype)
        cfg, acc = self.cfg, self.accelerator
        family = None if cfg["model_family"] == "auto" else cfg["model_family"]
        self.base = load_base_model(cfg["pretrained_model_name_or_path"], family=family,
                                    v_parameterization=cfg["v_parameterization"] or None,
                                    vae_path=cfg["vae"] or None, dtype=torch.float32)
        self.v_pred = bool(self.base.v_prediction)
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision, torch.float32)
        dev = acc.device
        self.base.unet.to(dev, dtype=self.weight_dtype)
        for te in self.base.text_encoders:
            te.to(dev, dtype=self.weight_dtype)
        no_half_vae = cfg["sdxl_no_half_vae"] and self.base.family == "sdxl"
        self.vae_dtype = torch.float32 if no_half_vae else self.weight_dtype
        self.base.vae.to(dev, dtype=self.vae_dtype)
        for m in [self.base.unet, self.base.vae, *self.base.text_encoders]:
            m.requires_grad_(False)
            m.eval()
        self._set_attention()

    def _long_caption_warnings(self) -> list[str]:
        """Captions longer than max_token_length are cut by the text encoder; say so before training."""
        limit = int(self.cfg["max_token_length"])
        limit = 75 * max(1, limit // 75)
        tok = self.base.tokenizers[0] if self.base.tokenizers else None
        if tok is None:
            return []
        seen: dict[str, tuple[int, Path]] = {}
        for item in self.rp.data.items:
            cap = item.image.caption
            if cap in seen or not cap:
                continue
            try:
                n = len(tok(cap, truncation=False, add_special_tokens=False).input_ids)
            except Exception:  # noqa: BLE001 - a tokenizer that cannot count is no reason to stop
                return []
            seen[cap] = (n, item.image.path)
        long = sorted((v for v in seen.values() if v[0] > limit), key=lambda v: -v[0])
        if not long:
            return []
        n_tokens, path = long[0]
        fix = ("shorten them" if limit >= 225 else
               f"set max_token_length to {150 if n_tokens <= 150 else 225} to use up to "
               f"{150 if n_tokens <= 150 else 225} tokens, or shorten them")
        return [f"{len(long)} caption(s) are longer than max_token_length ({limit} tokens): only their first {limit} "
                f"tokens are used and the rest is cut (longest: {path.name}, {n_tokens} tokens). To keep them whole, "
                f"{fix}."]

    def _set_attention(self) -> None:
        mode = self.cfg["xformers"]
        unet = self.base.unet
        if mode == "xformers":
            try:
                unet.enable_xformers_memory_efficient_attention()
            except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
                raise PatinaError(f"xformers attention is not available ({exc}). Install xformers for your torch "
                                  "build, or set Cross attention to sdpa.") from None
        elif mode == "none":
            from diffusers.models.attention_processor import AttnProcessor

            unet.set_attn_processor(AttnProcessor())

    def _build_network(self) -> None:
        import torch

        from patina.core.lora.network import NetworkSpec, build_network, build_network_from_weights
        cfg = self.cfg
        lrs = training_lrs(cfg)
        self.train_unet, self.train_te = lrs.train_unet, lrs.train_text_encoder
        weights_sd = None
        if cfg["network_weights"]:
            from patina.core.lora.kohya_format import read_lora

            weights_sd, _ = read_lora(cfg["network_weights"])

        spec = NetworkSpec.from_values(cfg)
        torch.manual_seed(self.seed)
        tes = self.base.text_encoders if self.train_te else []
        if weights_sd is not None and cfg["dim_from_weights"]:
            # modules, ranks and alphas come from the file (kohya's "DIM from weights")
            self.network = build_network_from_weights(self.base.unet, tes, self.base.family, weights_sd, spec)
        else:
            self.network = build_network(self.base.unet, tes, self.base.family, spec)
            if weights_sd is not None:
                res = self.network.load_kohya_state_dict(weights_sd, strict=False)
                if res.missing or res.unexpected:
                    self.log(f"{cfg['network_weights']}: {len(res.loaded)} module(s) loaded, {len(res.missing)} start "
                             f"fresh, {len(res.unexpected)} in the file are not trained in this run.", "warning")
        if weights_sd is not None:
            self.log(f"Continuing from {cfg['network_weights']}.")
        self.network.cast_lora_params(torch.float32)
        if cfg["gradient_checkpointing"]:
            if self.train_unet:
                self.base.unet.enable_gradient_checkpointing()
            if self.train_te:
                for te in self.base.text_encoders:  # transformers ≥ 5 renamed it
                    enable = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
                    enable()
        if self.train_unet:
            self.base.unet.train()
        if self.train_te:
            for te in self.base.text_encoders:
                te.train()

    # -- caching -------------------------------------------------------------------------------------------
    def _cache(self) -> None:
        from patina.core.train.batches import can_cache_latents, captions_are_static

        self.latent_cache: dict | None = None
        self.te_cache: dict | None = None
        if can_cache_latents(self.cfg):
            self._cache_latents()
        elif self.cfg["cache_latents"]:
            self.log("Latents are not cached because colour augmentation or random crop changes the image every step.")
        if not self.train_te and captions_are_static(self.cfg):
            self._cache_text()

    def _vae_id(self) -> str:
        p = Path(self.cfg["vae"] or self.cfg["pretrained_model_name_or_path"])
        try:
            st = p.stat()
            stamp = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = str(p)
        return f"{stamp}|{self.vae_dtype}"

    def _cache_latents(self) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        from patina.core.atomic import atomic_temp_path, commit_temp
        from patina.core.paths import user_cache_dir
        from patina.core.train.batches import latent_cache_key, prepare_image

        data = self.rp.data
        flips = (False, True) if self.cfg["flip_aug"] else (False,)
        todo = [(i, f) for i in range(len(data.items)) for f in flips]
        self.status("caching", f"Caching latents of {len(data.items)} image(s)…")
        disk = user_cache_dir() / "latents" if self.cfg["cache_latents_to_disk"] else None
        vae_id = self._vae_id()
        cache: dict = {}
        bs = max(1, self.cfg["vae_batch_size"] or self.cfg["train_batch_size"])
        pending: list = []   # (cache key, prepared image, disk path or None), all of one bucket
        shown_at = [time.monotonic()]

        def progress(done: int) -> None:
            """'Caching latents k/N…' as the work is done: every half second, and at the end."""
            now = time.monotonic()
            if done == len(todo) or now - shown_at[0] >= self.CACHE_PROGRESS_S:
                shown_at[0] = now
                self.status("caching", f"Caching latents {done}/{len(todo)}…")

        def flush():
            if not pending:
                return
            lat = self._encode_pixels(torch.stack([torch.from_numpy(prep.pixels) for _, prep, _ in pending]))
            for (key, prep, path), z in zip(pending, lat):
                entry = {"latent": z.to("cpu", torch.float32).contiguous(),
                         "sizes": torch.tensor([*prep.original_size, *prep.crop_top_left])}
                cache[key] = entry
                if path is not None:
                    tmp = atomic_temp_path(path)
                    save_file(entry, str(tmp))
                    commit_temp(tmp, path)
            pending.clear()
            progress(len(cache))

        for i, flip in sorted(todo, key=lambda t: data.items[t[0]].bucket):
            item = data.items[i]
            path = None
            if disk is not None:
                path = disk / f"{latent_cache_key(item.image.path, item.bucket, flip, vae_id)}.safetensors"
                if path.exists():
                    try:
                        cache[(i, flip)] = load_file(str(path))
                        progress(len(cache))
                        continue
                    except Exception:  # noqa: BLE001 - a damaged cache file is just recomputed
                        pass
            if pending and data.items[pending[0][0][0]].bucket != item.bucket:
                flush()
            pending.append(((i, flip), prepare_image(item, flip, self.cfg), path))
            if len(pending) >= bs:
                flush()
        flush()
        self.latent_cache = cache
        if not self._needs_vae_on_device():
            self.base.vae.to("cpu")
            self._empty_cache()

    def _needs_vae_on_device(self) -> bool:
        return False  # samples move it back for the few seconds they need it

    def _encode_pixels(self, pixels):
        import torch

        vae = self.base.vae
        with torch.no_grad():
            px = pixels.to(self.accelerator.device, dtype=self.vae_dtype)
            # The posterior's mean: deterministic, so a cached latent equals a fresh one.
            lat = vae.encode(px).latent_dist.mode()
            if torch.isnan(lat).any():
                raise PatinaError("The VAE produced NaN latents. For SDXL tick 'No half VAE' (sdxl_no_half_vae), or use "
                                  "a VAE fixed for fp16.")
            return lat.float() * vae.config.scaling_factor

    def _cache_text(self) -> None:
        import torch

        captions = sorted({it.image.caption for it in self.rp.data.items} | {""})
        self.status("caching", f"Caching text-encoder outputs of {len(captions)} caption(s)…")
        cache = {}
        with torch.no_grad():
            for i in range(0, len(captions), 16):
                chunk = captions[i:i + 16]
                hidden, pooled = self._encode_text(chunk)
                for j, c in enumerate(chunk):
                    cache[c] = (hidden[j].cpu(), None if pooled is None else pooled[j].cpu())
        self.te_cache = cache
        for te in self.base.text_encoders:
            te.to("cpu")
        self._empty_cache()

    def _empty_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- text encoding ---------------------------------------------------------------------------------------
    def _encode_text(self, captions: list[str], *, unwrapped: bool = False):
        from types import SimpleNamespace

        from patina.core.models.text import encode_prompts

        # while the text encoders train, call the prepared (DDP-wrapped) modules so gradients are synced
        # (sampling runs on the main process only and must not call a DDP forward: unwrapped=True)
        tes = self.te_models if getattr(self, "train_te", False) and hasattr(self, "te_models") and not unwrapped \
            else self.base.text_encoders
        base = SimpleNamespace(family=self.base.family, tokenizers=self.base.tokenizers, text_encoders=tes,
                               unet=self.base.unet)
        return encode_prompts(base, captions, max_token_length=int(self.cfg["max_token_length"]),
                              clip_skip=int(self.cfg["clip_skip"]), device=self.accelerator.device)

    # -- optimizer ---------------------------------------------------------------------------------------------
    def _build_optimizer(self) -> None:
        from patina.core.train.optimizers import build_optimizer, build_scheduler

        cfg = self.cfg
        base_ratio = cfg["loraplus_lr_ratio"]
        groups = self.network.param_groups(
            unet_lr=cfg["unet_lr"], text_encoder_lr=cfg["text_encoder_lr"],
            loraplus_unet_ratio=cfg["loraplus_unet_lr_ratio"] or base_ratio,
            loraplus_te_ratio=cfg["loraplus_text_encoder_lr_ratio"] or base_ratio)
        self.group_names = [g.pop("name", f"group{i}") for i, g in enumerate(groups)]
        self.trainable = [p for g in groups for p in g["params"]]
        optimizer = build_optimizer(cfg["optimizer"], groups, cfg["learning_rate"], cfg["optimizer_args"])
        self.lr_scheduler = build_scheduler(cfg, optimizer, self.rp.total_steps)
        models = []
        if self.train_unet:
            models.append(self.base.unet)
        if self.train_te:
            models += self.base.text_encoders
        prepared = self.accelerator.prepare(*models, optimizer)
        prepared = prepared if isinstance(prepared, (list, tuple)) else [prepared]
        self.optimizer = prepared[-1]
        wrapped = list(prepared[:-1])
        self.unet_model = wrapped.pop(0) if self.train_unet else self.base.unet
        self.te_models = wrapped if self.train_te else self.base.text_encoders

    # -- the loop ------------------------------------------------------------------------------------------------
    def _loop(self) -> bool:
        """Train until the plan's total steps; returns True when stopped by the user."""
        import torch

        cfg, acc, rp = self.cfg, self.accelerator, self.rp
        ga = cfg["gradient_accumulation_steps"]
        self.status("training", "Training…")
        self.step_started = time.time()
        self.images_since = 0
        self.loop_started = time.time()
        self.steps_at_start = self.global_step
        while self.epoch < rp.epochs and self.global_step < rp.total_steps:
            batches = rp.data.epoch_batches(self.epoch)
            mine = batches[acc.process_index::acc.num_processes]
            micro = self.micro_done
            self.micro_done = 0
            acc_losses: list[float] = []
            for batch in mine[micro:]:
                loss = self._micro_step(batch, micro, acc_losses, ga)
                micro += 1
                last_in_epoch = micro == len(mine)
                if len(acc_losses) == ga or last_in_epoch:
                    self._optimizer_step()
                    step_loss = sum(acc_losses) / len(acc_losses)
                    acc_losses = []
                    self.global_step += 1
                    self.micro_in_epoch = micro
                    if self._after_step(step_loss):
                        return True
                    if self.global_step >= rp.total_steps:
                        break
                del loss
            # A run whose last step falls inside an epoch records where it stopped, so that resuming it with more
            # steps continues this epoch instead of skipping its rest.
            self.resume_at = (self.epoch, micro) if micro < len(mine) else None
            self.micro_in_epoch = 0
            self.epoch += 1
            if self._after_epoch():
                return True
        return False

    def _micro_step(self, batch, micro: int, acc_losses: list, ga: int):
        import torch

        from patina.core.train import losses as L
        from patina.core.train.batches import derive_seed

        acc = self.accelerator
        gen = torch.Generator("cpu").manual_seed(derive_seed(self.seed, "noise", self.epoch, micro, acc.process_index))
        torch.manual_seed(derive_seed(self.seed, "torch", self.epoch, micro, acc.process_index))
        latents, sizes = self._latents_for(batch, micro)
        hidden, pooled = self._text_for(batch, micro)
        sched = self.base.noise_scheduler
        noise = L.make_noise(latents, self.cfg, gen)
        t = L.sample_timesteps(latents.shape[0], self.cfg, sched.config.num_train_timesteps, gen, latents.device)
        noisy = L.noisy_latents(sched, latents, noise, t, self.cfg, gen)
        target = L.target_for(sched, latents, noise, t, self.v_pred)
        with acc.autocast():
            kwargs = {}
            if self.base.family == "sdxl":
                tgt = torch.tensor([[latents.shape[2] * 8, latents.shape[3] * 8]] * latents.shape[0])
                time_ids = torch.cat([sizes, tgt], dim=1).to(latents.device, dtype=self.weight_dtype)
                kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(self.weight_dtype), "time_ids": time_ids}
            pred = self.unet_model(noisy.to(self.weight_dtype), t, hidden.to(self.weight_dtype), **kwargs).sample
        per_item = L.per_sample_loss(pred, target, t, sched, self.cfg, self.v_pred)
        weights = torch.tensor([self.cfg["prior_loss_weight"] if self.rp.data.items[s.item].is_reg else 1.0
                                for s in batch], device=per_item.device)
        loss = (per_item * weights).mean()
        if not torch.isfinite(loss).all():
            raise _NanLoss(self._nan_message())
        acc.backward(loss / ga)
        value = acc.gather(loss.detach().reshape(1)).mean().item()
        acc_losses.append(value)
        self.images_since += len(batch) * acc.num_processes
        return loss

    def _latents_for(self, batch, micro):
        import torch

        from patina.core.train.batches import derive_seed, prepare_image

        dev = self.accelerator.device
        if self.latent_cache is not None:
            entries = [self.latent_cache[(s.item, s.flip)] for s in batch]
            lat = torch.stack([e["latent"] for e in entries]).to(dev)
            sizes = torch.stack([e["sizes"] for e in entries]).float()
            return lat, sizes
        rng = random.Random(derive_seed(self.seed, "aug", self.epoch, micro))
        preps = [prepare_image(self.rp.data.items[s.item], s.flip, self.cfg, rng) for s in batch]
        self.base.vae.to(dev)
        pixels = torch.stack([torch.from_numpy(p.pixels) for p in preps])
        lat = self._encode_pixels(pixels)
        sizes = torch.tensor([[*p.original_size, *p.crop_top_left] for p in preps]).float()
        return lat, sizes

    def _text_for(self, batch, micro):
        import torch

        from patina.core.train.batches import caption_for_step

        dev = self.accelerator.device
        if self.te_cache is not None:
            entries = [self.te_cache[self.rp.data.items[s.item].image.caption] for s in batch]
            hidden = torch.stack([h for h, _ in entries]).to(dev)
            pooled = None if entries[0][1] is None else torch.stack([p for _, p in entries]).to(dev)
            return hidden, pooled
        captions = [caption_for_step(self.rp.data, s, self.epoch, micro, i) for i, s in enumerate(batch)]
        if self.train_te:
            with self.accelerator.autocast():
                return self._encode_text(captions)
        with torch.no_grad():
            return self._encode_text(captions)

    def _optimizer_step(self) -> None:
        acc = self.accelerator
        if self.cfg["max_grad_norm"] > 0 and acc.sync_gradients:
            acc.clip_grad_norm_(self.trainable, self.cfg["max_grad_norm"])
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _after_step(self, loss: float) -> bool:
        from patina.core.train.optimizers import current_lrs

        cfg, rp = self.cfg, self.rp
        if cfg["scale_weight_norms"] > 0:
            self.network.apply_max_norm(cfg["scale_weight_norms"])
        self.losses.append(loss)
        self.epoch_losses.append(loss)
        avg = sum(self.losses) / len(self.losses)
        lrs = current_lrs(self.optimizer, self.group_names)
        step, epoch = self.global_step, self.epoch + 1
        self.emit(Metrics(step=step, epoch=epoch, loss=loss, avg_loss=avg, lrs=lrs))
        now = time.time()
        rate = self.images_since / max(now - self.step_started, 1e-9)
        done = step - self.steps_at_start
        eta = (now - self.loop_started) / done * (rp.total_steps - step) if done else None
        self.emit(Progress(step=step, total_steps=rp.total_steps, epoch=epoch, total_epochs=rp.epochs,
                           images_per_sec=rate, elapsed_s=now - self.started, eta_s=eta))
        if now - self.step_started > 5:
            self.step_started, self.images_since = now, 0
        self._log_scalars(step, loss, avg, lrs)

        stop, save_now, sample_now = self.commands.take()
        stop = self._agree(stop)
        if stop:
            return True
        if self._agree(save_now):
            self._save_lora(self._path(f"{cfg['output_name']}-step{step:08d}"))
            self._save_state(self._state_dir(f"{cfg['output_name']}-step{step:08d}"))
        n = cfg["save_every_n_steps"]
        if n and step % n == 0 and step < rp.total_steps:
            self._save_lora(self._path(f"{cfg['output_name']}-step{step:08d}"))
            if cfg["save_state"]:
                self._save_state(self._state_dir(f"{cfg['output_name']}-step{step:08d}"))
            self._prune("step", step)
        n = cfg["sample_every_n_steps"]
        if self._agree(sample_now) or (n and step % n == 0):
            self._sample(epoch=None)
        return False

    def _after_epoch(self) -> bool:
        cfg, rp = self.cfg, self.rp
        epoch = self.epoch  # now 1-based count of finished epochs
        avg = sum(self.epoch_losses) / max(1, len(self.epoch_losses))
        self.epoch_losses = []
        self.emit(EpochEnd(epoch=epoch, step=self.global_step, avg_loss=avg))
        if self.tb is not None:
            self.tb.add_scalar("loss/epoch", avg, epoch)
        last = epoch >= rp.epochs or self.global_step >= rp.total_steps
        n = cfg["save_every_n_epochs"]
        if n and epoch % n == 0 and not last:
            self._save_lora(self._path(f"{cfg['output_name']}-{epoch:06d}"))
            if cfg["save_state"]:
                self._save_state(self._state_dir(f"{cfg['output_name']}-{epoch:06d}"))
            self._prune("epoch", epoch)
        n = cfg["sample_every_n_epochs"]
        if n and epoch % n == 0:
            self._sample(epoch=epoch)
        return False

    def _agree(self, flag: bool) -> bool:
        """All processes act on a command if the main process received it."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return flag
        import torch

        t = torch.tensor([1.0 if flag else 0.0], device=acc.device)
        return bool(acc.reduce(t, reduction="sum").item() > 0)

    # -- files -------------------------------------------------------------------------------------------------
    def _path(self, stem: str) -> Path:
        return Path(self.cfg["output_dir"]) / f"{stem}.safetensors"

    def _state_dir(self, stem: str) -> Path:
        return Path(self.cfg["output_dir"]) / f"{stem}-state"

    def _metadata(self) -> dict:
        from patina.core.dataset.captions import tag_frequency
        from patina.core.lora.kohya_format import build_metadata

        rp = self.rp
        freq = {}
        for s in rp.scan.train_subsets:
            freq[s.name] = dict(tag_frequency(img.caption for img in s.images))
        values = dict(self.cfg)
        values["seed"] = self.seed
        opt = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate's wrapper holds the real one
        return build_metadata(
            values=values, family=self.base.family, v_prediction=self.v_pred,
            base_model_name=Path(self.cfg["pretrained_model_name_or_path"]).name,
            num_train_images=rp.scan.train_images, num_reg_images=rp.scan.reg_images,
            num_batches_per_epoch=rp.batches_per_epoch, steps=self.global_step, epoch=self.epoch,
            tag_frequency=freq, bucket_info=rp.data.bucket_info(),
            dataset_dirs={s.name: {"n_repeats": s.repeats, "img_count": s.num_images} for s in rp.scan.train_subsets},
            reg_dataset_dirs={s.name: {"n_repeats": s.repeats, "img_count": s.num_images}
                              for s in rp.scan.reg_subsets},
            training_started_at=self.started, session_id=self.seed,
            optimizer_class=f"{type(opt).__module__}.{type(opt).__name__}")

    def _save_lora(self, path: Path) -> None:
        """Write the LoRA to *path*; raises :class:`_SaveFailed` on every process when the write fails."""
        import torch

        from patina.core.lora.kohya_format import save_lora

        acc = self.accelerator
        acc.wait_for_everyone()
        error = None
        if acc.is_main_process:
            self.status("saving", f"Saving {path.name}…")
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.cfg["save_precision"], torch.float32)
            try:
                save_lora(path, self.network.kohya_state_dict(dtype=dtype), self._metadata(),
                          precision=self.cfg["save_precision"])
            except Exception as exc:  # noqa: BLE001 - disk full, permissions, a folder that vanished
                error = exc
            else:
                self.last_saved = str(path)
                self.emit(Saved(path=str(path), kind="lora", step=self.global_step, epoch=self.epoch))
                self.status("training", "Training…")
        acc.wait_for_everyone()
        if self._agree(error is not None):
            raise _SaveFailed(path, error)

    def _save_state(self, folder: Path) -> None:
        """Write the training state folder; raises :class:`_SaveFailed` on every process when it fails."""
        acc = self.accelerator
        acc.wait_for_everyone()
        error = None
        if acc.is_main_process:
            try:
                self._write_state(folder)
            except Exception as exc:  # noqa: BLE001 - disk full, permissions, a folder that vanished
                error = exc
        acc.wait_for_everyone()
        if self._agree(error is not None):
            raise _SaveFailed(folder, error)

    def _write_state(self, folder: Path) -> None:
        import numpy as np
        import torch
        from safetensors.torch import save_file

        acc = self.accelerator
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        old = folder.with_name(folder.name + ".old")
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            save_file(self.network.kohya_state_dict(dtype=torch.float32), str(tmp / "lora.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.lr_scheduler.state_dict(), tmp / "scheduler.pt")
            rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
                   "python": repr(random.getstate())}
            if acc.scaler is not None:
                rng["scaler"] = acc.scaler.state_dict()
            torch.save({"torch": rng["torch"], "scaler": rng.get("scaler")}, tmp / "rng.pt")
            at_epoch, at_micro = getattr(self, "resume_at", None) or (self.epoch, getattr(self, "micro_in_epoch", 0))
            state = {"patina_state": 1, "step": self.global_step, "epoch": at_epoch,
                     "micro_in_epoch": at_micro, "seed": self.seed,
                     "total_steps": self.rp.total_steps, "config": self.cfg,
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
        self.emit(Saved(path=str(folder), kind="state", step=self.global_step, epoch=self.epoch))

    def _load_state(self, state: dict) -> None:
        import torch
        from safetensors.torch import load_file

        from patina.core.models.checkpoint_files import load_state_pickle

        d = self.resume_dir
        owner = f"the training state {d}"
        self.network.load_kohya_state_dict(load_file(str(d / "lora.safetensors")))
        try:
            self.optimizer.load_state_dict(load_state_pickle(d / "optimizer.pt", owner))
            self.lr_scheduler.load_state_dict(load_state_pickle(d / "scheduler.pt", owner))
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise PatinaError(f"{owner} does not match these settings ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160]}); it was saved by a different optimizer or "
                              "network. Resume with the settings it was saved with.") from None
        rng = load_state_pickle(d / "rng.pt", owner)
        if rng.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(rng["scaler"])
        self.global_step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.micro_done = int(state.get("micro_in_epoch", 0))
        self.log(f"Resumed from {d} at step {self.global_step} (epoch {self.epoch + 1}).")

    def _prune(self, kind: str, current: int) -> None:
        cfg = self.cfg
        keep = cfg["save_last_n_steps"] if kind == "step" else cfg["save_last_n_epochs"]
        keep_state = cfg["save_last_n_steps_state"] if kind == "step" else cfg["save_last_n_epochs_state"]
        if not self.accelerator.is_main_process or not (keep or keep_state):
            return
        out, name = Path(cfg["output_dir"]), cfg["output_name"]
        if kind == "step":
            # kohya: keep the checkpoints of the last N steps
            files = sorted(out.glob(f"{name}-step" + "[0-9]" * 8 + ".safetensors"))
            limit = current - keep if keep else None
            num = (lambda p: int(p.stem[-8:]))
        else:
            files = sorted(out.glob(f"{name}-" + "[0-9]" * 6 + ".safetensors"))
            limit = current - keep if keep else None
            num = (lambda p: int(p.stem[-6:]))
        for f in files:
            if limit is not None and num(f) <= limit:
                f.unlink(missing_ok=True)
                state = f.with_name(f.stem + "-state")
                if keep_state and state.exists() and num(f) <= current - keep_state:
                    shutil.rmtree(state, ignore_errors=True)

    # -- samples ------------------------------------------------------------------------------------------------
    def _sample(self, epoch: int | None) -> None:
        import torch

        from patina.core.atomic import atomic_temp_path, commit_temp
        from patina.core.train.sampling import make_scheduler, parse_prompts, sample_filename

        cfg, acc = self.cfg, self.accelerator
        if not cfg["sample_prompts"].strip():
            return
        acc.wait_for_everyone()
        failure = None
        if acc.is_main_process:
            prompts = parse_prompts(cfg["sample_prompts"], default_size=parse_resolution(cfg["max_resolution"]))
            self.status("sampling", f"Generating {len(prompts)} sample(s)…")
            unet = acc.unwrap_model(self.unet_model)
            tes = [acc.unwrap_model(t) for t in self.te_models]
            dev = acc.device
            moved = []
            for m in [self.base.vae, *tes]:
                if next(m.parameters()).device != dev:
                    m.to(dev)
                    moved.append(m)
            was_training = unet.training
            unet.eval()
            for t in tes:
                t.eval()
            out_dir = Path(cfg["output_dir"]) / "sample"
            try:
                pipe = self.base.pipeline(unet=unet, text_encoders=tes)
                pipe.set_progress_bar_config(disable=True)
                for i, sp in enumerate(prompts):
                    pipe.scheduler = make_scheduler(sp.sampler or cfg["sample_sampler"], self.base.scheduler_config)
                    seed = sp.seed if sp.seed is not None else random.Random(
                        hash((self.seed, self.global_step, i))).randint(0, 2**31 - 1)
                    gen = torch.Generator("cpu").manual_seed(seed)
                    kw = dict(prompt=sp.prompt, negative_prompt=sp.negative or None, width=sp.width, height=sp.height,
                              num_inference_steps=sp.steps, guidance_scale=sp.cfg_scale, generator=gen)
                    if self.base.family != "sdxl" and (cfg["clip_skip"] > 1 or cfg["max_token_length"] > 75):
                        # encode like training does (clip skip, long prompts); the pipeline's own clip_skip
                        # path also breaks on transformers' flattened CLIPTextModel
                        with torch.no_grad():
                            pos, _ = self._encode_text([sp.prompt], unwrapped=True)
                            neg, _ = self._encode_text([sp.negative], unwrapped=True)
                        kw.update(prompt=None, negative_prompt=None, prompt_embeds=pos.to(self.weight_dtype),
                                  negative_prompt_embeds=neg.to(self.weight_dtype))
                    with torch.no_grad(), acc.autocast():
                        image = pipe(**kw).images[0]
                    name = sample_filename(cfg["output_name"], step=self.global_step, epoch=epoch, index=i,
                                           seed=sp.seed)
                    path = out_dir / name
                    try:
                        tmp = atomic_temp_path(path)
                        try:
                            image.save(tmp, format="PNG")
                            commit_temp(tmp, path)
                        except BaseException:
                            with contextlib.suppress(OSError):
                                os.unlink(tmp)
                            raise
                    except OSError as exc:
                        failure = _SaveFailed(path, exc)
                        break
                    self.emit(Sample(path=str(path), prompt=sp.prompt, index=i, step=self.global_step,
                                     epoch=epoch if epoch is not None else self.epoch + 1))
            finally:
                for m in moved:
                    m.to("cpu")
                if was_training:
                    unet.train()
                if self.train_te:
                    for t in tes:
                        t.train()
                self._empty_cache()
            self.status("training", "Training…")
        acc.wait_for_everyone()
        if self._agree(failure is not None):
            raise failure or _SaveFailed(Path(cfg["output_dir"]) / "sample", None)

    # -- logs ---------------------------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        if not self.cfg["logging_dir"] or not self.accelerator.is_main_process:
            return
        run = Path(self.cfg["logging_dir"]) / f"{self.cfg['output_name']}_{datetime.now():%Y%m%d%H%M%S}"
        run.mkdir(parents=True, exist_ok=True)
        self.log_dir = run
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run))
        except ImportError:
            self.log("tensorboard is not installed: no TensorBoard logs (metrics.jsonl is still written).", "warning")
        self.jsonl = open(run / "metrics.jsonl", "a", encoding="utf-8")  # append-only log, not a user file

    def _log_scalars(self, step, loss, avg, lrs) -> None:
        if self.tb is not None:
            self.tb.add_scalar("loss/current", loss, step)
            self.tb.add_scalar("loss/average", avg, step)
            for name, lr in lrs.items():
                self.tb.add_scalar("lr/textencoder" if name == "textencoder" else f"lr/{name}", lr, step)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"step": step, "epoch": self.epoch + 1, "loss": loss, "avg_loss": avg,
                                         "lr": lrs, "time": time.time()}) + "\n")
            self.jsonl.flush()

    def _close_logs(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None

    # -- endings ------------------------------------------------------------------------------------------------
    def _finish(self, stopped: bool) -> Finished:
        """Save the result. Only a run that trained to its end writes ``<output_name>.safetensors``; a stopped
        run saves ``<output_name>-step<N>.safetensors`` and never replaces a finished LoRA of the same name."""
        cfg, name = self.cfg, self.cfg["output_name"]
        stem = f"{name}-step{self.global_step:08d}" if stopped else name
        # A resumed run replaces the state it started from, so resuming again does not replay old steps.
        with_state = bool(stopped or cfg["save_state_on_train_end"] or cfg["save_state"] or self.resume_dir)
        lora, state, problem = self._keep(stem, with_state)
        if stopped:
            msg = f"Stopped at step {self.global_step} of {self.rp.total_steps}."
            if lora is not None and not problem:
                msg += f" The LoRA so far is saved as {lora}"
                if self.rp.output_path.exists():
                    msg += f" ({self.rp.output_path.name} is left as it was)"
                msg += "."
            if state is not None:
                msg += f" Continue later from {state}."
            if problem:
                msg += "\n" + problem
            return Finished("stopped", msg, str(lora) if lora else None, self.global_step)
        if problem and lora != self._path(stem):
            msg = (f"Training finished ({self.global_step} steps), but the LoRA could not be saved where asked.\n"
                   + problem)
            return Finished("failed", msg, str(lora) if lora else None, self.global_step)
        msg = f"Done: {self.global_step} steps. Your LoRA is {lora}." + ("\n" + problem if problem else "")
        return Finished("finished", msg, str(lora), self.global_step)

    def _finish_failed(self, message: str, save: bool) -> Finished:
        saved = None
        if save and self.global_step > 0 and hasattr(self, "network"):
            try:
                self.optimizer.zero_grad(set_to_none=True)
                self._empty_cache()
                lora, _state, problem = self._keep(f"{self.cfg['output_name']}-step{self.global_step:08d}", True)
                saved = str(lora) if lora else None
                if lora is not None and not problem:
                    message += f"\nThe last good state (step {self.global_step}) was saved as {lora}."
                if problem:
                    message += "\n" + problem
            except Exception as exc:  # noqa: BLE001 - report the original failure, note the save failure
                message += f"\n(Saving the last good state failed too: {exc}.)"
        return Finished("failed", message, saved, self.global_step)

    def _keep(self, stem: str, with_state: bool) -> tuple[Path | None, Path | None, str]:
        """Save the LoRA as ``<stem>.safetensors`` (and the state as ``<output_name>-state``) in the output
        folder. What cannot be saved there (disk full, no permission, a folder that disappeared) is saved in
        the rescue folder of the user data folder instead; the weights stay in memory until then.
        Returns (LoRA path, state folder, a message about what went wrong, "" when nothing did)."""
        from patina.core.paths import rescue_dir

        lora = state = None
        failures: list[_SaveFailed] = []
        try:
            self._save_lora(self._path(stem))
            lora = self._path(stem)
        except _SaveFailed as exc:
            failures.append(exc)
        if with_state:
            try:
                self._save_state(self._state_dir(self.cfg["output_name"]))
                state = self._state_dir(self.cfg["output_name"])
            except _SaveFailed as exc:
                failures.append(exc)
        if not failures:
            return lora, state, ""
        lines = [f.describe() for f in failures]
        rescue = rescue_dir() / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
        if lora is None:
            try:
                self._save_lora(rescue / f"{stem}.safetensors")
                lora = rescue / f"{stem}.safetensors"
                lines.append(f"The LoRA was saved instead to {lora} — move it where you want it.")
            except _SaveFailed as exc:
                lines.append(f"Saving it to {rescue} failed too ({_why(exc.error)}). Nothing could be saved: free "
                             "some disk space or choose another output folder, then start again.")
        if with_state and state is None:
            try:
                self._save_state(rescue / f"{self.cfg['output_name']}-state")
                state = rescue / f"{self.cfg['output_name']}-state"
                lines.append(f"The training state was saved instead to {state} (resume from there).")
            except _SaveFailed as exc:
                lines.append(f"The training state could not be saved in {rescue} either ({_why(exc.error)}).")
        for line in lines:
            self.log(line, "warning")
        return lora, state, "\n".join(lines)

    def _clean_leftovers(self) -> None:
        """Remove temporary files and state folders that a crashed run left in the output folder."""
        from patina.core.atomic import clean_leftovers

        if self.accelerator is not None and not self.accelerator.is_main_process:
            return
        out = Path(self.cfg["output_dir"])
        removed = clean_leftovers(out) + clean_leftovers(out / "sample")
        if removed:
            self.log(f"Removed {len(removed)} temporary file(s) left by an interrupted run in {out}: "
                     + ", ".join(p.name for p in removed[:5]) + (" …" if len(removed) > 5 else ""))

    def _nan_message(self) -> str:
        return (f"The loss became NaN/inf at step {self.global_step + 1} (epoch {self.epoch + 1}): training diverged. "
                "Lower the learning rate (e.g. halve unet_lr and text_encoder_lr), use bf16 instead of fp16 if your "
                "GPU supports it, and for SDXL tick 'No half VAE'.")


class _NanLoss(Exception):
    pass


class _SaveFailed(Exception):
    """Writing a file of the run failed (disk full, no permission, a folder that disappeared)."""

    def __init__(self, path: Path, error: BaseException | None):
        super().__init__(f"{path}: {error}")
        self.path = Path(path)
        self.error = error

    def describe(self) -> str:
        return f"Could not save {self.path}: {_why(self.error)}."


def _why(exc: BaseException | None) -> str:
    """What a failed write means for the user, and what to do."""
    if exc is None:
        return "the main process could not write it"
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err is None:  # safetensors reports OS errors in its message: "... (os error 28)"
        import re

        m = re.search(r"os error (\d+)", text)
        err = int(m.group(1)) if m else None
    detail = getattr(exc, "strerror", None) or text or type(exc).__name__
    if err == errno.ENOSPC or "No space left" in text:
        return "the disk is full (no space left on device); free some space or choose another output folder"
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write there ({detail}); choose a folder you can write to"
    if err in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST):
        return f"the folder is gone or is not a folder ({detail}); choose an existing output folder"
    if err == errno.ENAMETOOLONG:
        return "the file name is too long for this file system; choose a shorter output name"
    return f"{type(exc).__name__}: {detail}"


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


def _oom_message(cfg: dict) -> str:
    tips = []
    if cfg["train_batch_size"] > 1:
        tips.append(f"lower Train batch size (now {cfg['train_batch_size']})")
    if not cfg["gradient_checkpointing"]:
        tips.append("tick Gradient checkpointing")
    tips.append(f"lower Max resolution (now {cfg['max_resolution']})")
    if cfg["optimizer"] == "AdamW":
        tips.append("use the AdamW8bit or Adafactor optimizer")
    if cfg["text_encoder_lr"] > 0:
        tips.append("set Text encoder learning rate to 0 (UNet only)")
    return "The GPU ran out of memory (CUDA out of memory). To fit: " + "; ".join(tips) + "."


def train(cfg: dict, emit: Emit | None = None, commands: Commands | None = None, *, resume: str | None = None,
          overwrite: bool = True) -> Finished:
    """Run a training; never raises for user errors (see module docstring)."""
    trainer = Trainer(cfg, emit, commands, resume, overwrite)
    try:
        result = trainer.run()
    except PatinaError as exc:
        result = Finished("failed", str(exc), None, trainer.global_step)
    except Exception as exc:  # noqa: BLE001 - the process must survive; the user gets a message
        if _is_oom(exc):
            result = trainer._finish_failed(_oom_message(trainer.raw_cfg if not hasattr(trainer, "cfg") else trainer.cfg),
                                            save=hasattr(trainer, "network"))
        else:
            trainer.log(traceback.format_exc(), "warning")
            result = Finished("failed", f"Training stopped with an unexpected error: {type(exc).__name__}: {exc}. "
                                        "The full error is in the log.", None, trainer.global_step)
    trainer.status("done", {"finished": "Finished", "stopped": "Stopped", "failed": "Failed"}[result.status])
    trainer.emit(result)
    return result
