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

Where the parts live: the run plan (which images, buckets, batches, steps) is patina.core.dataset.plan; the
run object (models, network, optimizer, scheduler, caches) patina.core.train.run; the caches
patina.core.train.caching; state folders patina.core.train.state; sample images patina.core.train.sampling;
saved LoRAs, the rescue folder and the logs patina.core.train.outputs. This module plans and runs the loop.
"""

from __future__ import annotations

import secrets
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from patina.core.config.schema import ValidConfig, check_values, errors, missing_required
from patina.core.dataset.plan import seed_for
from patina.core.errors import PatinaError
from patina.core.train import caching, outputs, state
from patina.core.train.events import Commands, Emit, EpochEnd, Finished, Metrics, Plan, Progress
from patina.core.train.run import Reporter, Run, build_run, empty_device_cache, long_caption_warnings
from patina.core.train.sampling import generate_samples


# --- planning (no models) ---------------------------------------------------------------------------

@dataclass
class RunPlan:
    cfg: dict
    scan: object
    data: object            # patina.core.dataset.plan.DatasetPlan
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
    from patina.core.dataset.plan import DatasetPlan

    cfg = validated(cfg)
    scan = scan_dataset(cfg["train_data_dir"], cfg["reg_data_dir"] or None, cfg["caption_extension"],
                        min_size=cfg["min_bucket_reso"])
    if seed is None:
        seed = cfg["seed"] or (secrets.randbelow(2**31 - 1) + 1)
    data = DatasetPlan(scan, cfg, seed)
    length = data.length(num_processes)
    spe = max(1, length.steps_per_epoch)
    epochs, total = length.epochs, length.total_steps
    batches = data.batches_per_epoch()
    warnings = [f"{s.path}: skipped — {s.reason}" for s in scan.skipped]
    warnings += [f"{p}" for p in scan.folder_problems]
    upscaled = upscale_warning((it.image, it.bucket) for it in data.items)
    if upscaled:
        warnings.append(upscaled)
    warnings += data.small_bucket_warnings()
    out = Path(cfg["output_dir"]) / f"{cfg['output_name']}.safetensors"
    return RunPlan(cfg, scan, data, seed, batches, spe, epochs, total, out, warnings)


def plan_event(rp: RunPlan, family: str = "auto", problems: list | None = None, vram=None) -> Plan:
    from patina.core.dataset.summary import captions_text, scan_arithmetic

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
        f"  Captions: {captions_text(scan)}",
        f"  Resolution {cfg['max_resolution']}, buckets: "
        + ", ".join(f"{k} ({v})" for k, v in rp.data.bucket_histogram().items()),
        f"  Output: {rp.output_path}",
    ]
    if vram is not None:
        from patina.core.train.vram import format_lines

        lines += format_lines(vram)
    held = rp.data.validation_items
    if held:
        lines.append(f"  Validation: {len(held)} image(s) held out of training (validation split "
                     f"{cfg['validation_split']:g}): " + ", ".join(rp.data.items[i].image.path.name for i in held[:5])
                     + (" …" if len(held) > 5 else ""))
    if cfg["quality_report"]:
        lines.append("  Quality report after every epoch (LoRA weights " + cfg["quality_weights"] + ")")
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
                warnings=[w for w in rp.warnings if "skipped —" not in w], problems=problems, vram=vram)


def _family(cfg: dict, *, strict: bool) -> str:
    family = cfg.get("model_family", "auto")
    if family == "auto":
        try:
            from patina.core.models.detect import detect_family

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
    """Check settings, dataset, folders and device and describe the run, with the VRAM estimate
    (patina.core.train.vram), without loading a model.

    Raises PatinaError when the run cannot even be planned (invalid settings, no dataset); every other problem
    (patina.core.train.preflight) is in ``Plan.problems``, errors first-class: a plan with an error must not be started."""
    from patina.core.train import vram
    from patina.core.train.preflight import probe_device

    rp = make_plan(cfg)
    family = _family(rp.cfg, strict=True)
    device = probe_device()
    problems = run_preflight(rp, family, device, resume=rp.cfg.get("resume") or None)
    estimate, fits = vram.for_config(rp.cfg, family, rp.data.bucket_histogram(), device)
    return plan_event(rp, family, problems + fits, vram=estimate)


# --- the run ------------------------------------------------------------------------------------------

class Trainer:
    """One training run. ``run()`` is the whole story, top to bottom: plan and check, build the run object
    (patina.core.train.run), train step by step, save what the run produced (patina.core.train.outputs)."""

    def __init__(self, cfg: dict, emit: Emit | None, commands: Commands | None, resume: str | None,
                 overwrite: bool = True, model_cache=None):
        self.raw_cfg = dict(cfg)
        self.cfg = self.raw_cfg         # the validated config once run() has planned the run
        self.report = Reporter(emit)
        self.commands = commands or Commands()
        self.resume_dir = Path(resume) if resume else (Path(cfg["resume"]) if cfg.get("resume") else None)
        self.overwrite = overwrite
        self.model_cache = model_cache  # the window's patina.core.models.cache.ModelCache; None: load every run
        self.run_: Run | None = None   # built by run() before the loop
        self.quality = None            # the quality report (patina.core.train.quality), when on
        self.losses: deque = deque(maxlen=50)
        self.epoch_losses: list[float] = []
        self.started = time.time()

    @property
    def global_step(self) -> int:
        return self.run_.step if self.run_ is not None else 0

    @property
    def base(self):
        """The base models (the UNet and text encoders carry the LoRA after training)."""
        return self.run_.base if self.run_ is not None else None

    def emit(self, event) -> None:
        self.report.emit(event)

    def log(self, text: str, level: str = "info") -> None:
        self.report.log(text, level)

    def run(self) -> Finished:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        from patina.core.train.preflight import describe, refuse_if_errors

        self.report.status("checking", "Checking settings and dataset…")
        resume_state = None
        if self.resume_dir:
            self.raw_cfg, resume_state = state.read_for_resume(self.resume_dir, self.raw_cfg)
        cfg = validated(self.raw_cfg)
        mp = cfg["mixed_precision"]
        if not torch.cuda.is_available() and mp == "fp16":
            mp = "no"  # fp16 autocast is a GPU feature; the CPU trains in full precision
        # find_unused_parameters: with clip skip / SDXL's penultimate layer the last text-encoder layer's LoRA
        # gets no gradient, which plain DDP refuses. cpu=True on a machine without CUDA also makes several
        # launched processes use gloo (MULTI_CPU).
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        acc = Accelerator(mixed_precision=mp, gradient_accumulation_steps=1, cpu=not torch.cuda.is_available(),
                          kwargs_handlers=[ddp])
        self.report.accelerator = acc
        if acc.device.type == "cpu":  # a deliberate thread count (patina.core.train.threads)
            from patina.core.train.threads import apply_threads

            apply_threads(cfg["cpu_threads"])

        rp = make_plan(cfg, seed=resume_state["seed"] if resume_state else None, num_processes=acc.num_processes)
        self.cfg = cfg = rp.cfg
        # Everything checkable is checked now, before any model loads (patina.core.train.preflight).
        problems = run_preflight(rp, _family(cfg, strict=False))
        refuse_if_errors(problems)
        if rp.output_path.exists() and not self.overwrite and not resume_state:
            raise PatinaError(f"{rp.output_path} already exists. Choose another output name, or replace it "
                              "(`patina train --overwrite`, or answer Yes when the window asks).")
        if acc.is_main_process:
            outputs.clean_leftovers(cfg, self.report)
        for w in rp.warnings:
            self.log(w, "warning")
        for p in problems:
            self.log(describe(p), "warning")

        def loaded(run: Run) -> None:  # the models are loaded: the plan is complete
            for w in long_caption_warnings(run):
                rp.warnings.append(w)
                self.log(w, "warning")
            self.emit(plan_event(rp, run.base.family, problems))
            self.log(f"Seed {rp.seed}. {rp.total_steps} steps over {rp.epochs} epoch(s).")

        self.run_ = run = build_run(cfg, rp, acc, self.report, loaded, self.model_cache)
        if resume_state:
            state.load_state(run, self.resume_dir, resume_state)
        self.logs = outputs.RunLogs(cfg, run)
        self.quality = self._quality_report(run)
        try:
            if cfg["sample_at_first"] and run.step == 0:
                generate_samples(run, epoch=None)
            stopped = self._loop(run)
        except _NanLoss as exc:
            return self._finish_failed(str(exc), save=True)
        except outputs.SaveFailed as exc:
            return self._finish_failed(exc.describe() + " Training stopped there.", save=True)
        except Exception as exc:
            if _is_oom(exc):
                return self._finish_failed(_oom_message(cfg), save=True)
            raise
        finally:
            self.logs.close()
        return self._finish(stopped)

    # -- the loop ------------------------------------------------------------------------------------------------
    def _loop(self, run: Run) -> bool:
        """Train until the plan's total steps; returns True when stopped by the user."""
        acc, rp = run.accelerator, run.plan
        ga = run.cfg["gradient_accumulation_steps"]
        self.report.status("training", "Training…")
        self.timer = _Rate(run.step)
        while run.epoch < rp.epochs and run.step < rp.total_steps:
            batches = rp.data.epoch_batches(run.epoch)
            mine = batches[acc.process_index::acc.num_processes]
            micro, run.micro_done = run.micro_done, 0
            acc_losses: list[float] = []
            for batch in mine[micro:]:
                acc_losses.append(self._micro_step(run, batch, micro, ga))
                self.timer.images += len(batch) * acc.num_processes
                micro += 1
                if len(acc_losses) == ga or micro == len(mine):
                    self._optimizer_step(run)
                    step_loss = sum(acc_losses) / len(acc_losses)
                    acc_losses = []
                    run.step += 1
                    run.micro_in_epoch = micro
                    if self._after_step(run, step_loss):
                        return True
                    if run.step >= rp.total_steps:
                        break
            # A run whose last step falls inside an epoch records where it stopped, so that resuming it with more
            # steps continues this epoch instead of skipping its rest.
            run.resume_at = (run.epoch, micro) if micro < len(mine) else None
            run.micro_in_epoch = 0
            run.epoch += 1
            self._after_epoch(run)
        return False

    def _micro_step(self, run: Run, batch, micro: int, ga: int) -> float:
        """Forward and backward of one micro-batch; returns its loss (averaged over the processes)."""
        import torch

        from patina.core.train import losses as L

        acc, cfg, base = run.accelerator, run.cfg, run.base
        gen = torch.Generator("cpu").manual_seed(seed_for(run.seed, "noise", run.epoch, micro, acc.process_index))
        torch.manual_seed(seed_for(run.seed, "torch", run.epoch, micro, acc.process_index))
        latents, sizes = caching.latents_for(run, batch, micro)
        hidden, pooled = caching.text_for(run, batch, micro)
        sched = base.noise_scheduler
        noise = L.make_noise(latents, cfg, gen)
        t = L.sample_timesteps(latents.shape[0], cfg, sched.config.num_train_timesteps, gen, latents.device)
        noisy = L.noisy_latents(sched, latents, noise, t, cfg, gen)
        target = L.target_for(sched, latents, noise, t, run.v_pred)
        with acc.autocast():
            kwargs = {}
            if base.family == "sdxl":
                tgt = torch.tensor([[latents.shape[2] * 8, latents.shape[3] * 8]] * latents.shape[0])
                time_ids = torch.cat([sizes, tgt], dim=1).to(latents.device, dtype=run.weight_dtype)
                kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(run.weight_dtype), "time_ids": time_ids}
            pred = run.unet_model(noisy.to(run.weight_dtype), t, hidden.to(run.weight_dtype), **kwargs).sample
        per_item = L.per_sample_loss(pred, target, t, sched, cfg, run.v_pred)
        weights = torch.tensor([cfg["prior_loss_weight"] if run.plan.data.items[s.item].is_reg else 1.0
                                for s in batch], device=per_item.device)
        loss = (per_item * weights).mean()
        if not torch.isfinite(loss).all():
            raise _NanLoss(_nan_message(run))
        acc.backward(loss / ga)
        return acc.gather(loss.detach().reshape(1)).mean().item()

    def _optimizer_step(self, run: Run) -> None:
        acc = run.accelerator
        if run.cfg["max_grad_norm"] > 0 and acc.sync_gradients:
            acc.clip_grad_norm_(run.trainable, run.cfg["max_grad_norm"])
        run.optimizer.step()
        run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)

    def _after_step(self, run: Run, loss: float) -> bool:
        """Report the step, then act on commands and on the save/sample schedule; True to stop."""
        from patina.core.train.optimizers import current_lrs

        cfg, rp = run.cfg, run.plan
        if cfg["scale_weight_norms"] > 0:
            run.network.apply_max_norm(cfg["scale_weight_norms"])
        self.losses.append(loss)
        self.epoch_losses.append(loss)
        avg = sum(self.losses) / len(self.losses)
        lrs = current_lrs(run.optimizer, run.group_names)
        step, epoch = run.step, run.epoch + 1
        self.emit(Metrics(step=step, epoch=epoch, loss=loss, avg_loss=avg, lrs=lrs))
        rate, eta = self.timer.tick(step, rp.total_steps)
        self.emit(Progress(step=step, total_steps=rp.total_steps, epoch=epoch, total_epochs=rp.epochs,
                           images_per_sec=rate, elapsed_s=time.time() - self.started, eta_s=eta))
        self.logs.step(step, epoch, loss, avg, lrs)

        stop, save_now, sample_now = self.commands.take()
        if run.agree(stop):
            return True
        stem = f"{cfg['output_name']}-step{step:08d}"
        if run.agree(save_now):
            outputs.save_checkpoint(run, stem, self.started, with_state=True)
        n = cfg["save_every_n_steps"]
        if n and step % n == 0 and step < rp.total_steps:
            outputs.save_checkpoint(run, stem, self.started, with_state=cfg["save_state"])
            if run.accelerator.is_main_process:
                state.prune(cfg, "step", step)
        n = cfg["sample_every_n_steps"]
        if run.agree(sample_now) or (n and step % n == 0):
            generate_samples(run, epoch=None)
        return False

    def _after_epoch(self, run: Run) -> None:
        cfg, rp = run.cfg, run.plan
        epoch = run.epoch  # now the 1-based count of finished epochs
        avg = sum(self.epoch_losses) / max(1, len(self.epoch_losses))
        self.epoch_losses = []
        self.emit(EpochEnd(epoch=epoch, step=run.step, avg_loss=avg))
        self.logs.epoch(epoch, avg)
        last = epoch >= rp.epochs or run.step >= rp.total_steps
        n = cfg["save_every_n_epochs"]
        if n and epoch % n == 0 and not last:
            outputs.save_checkpoint(run, f"{cfg['output_name']}-{epoch:06d}", self.started,
                                    with_state=cfg["save_state"])
            if run.accelerator.is_main_process:
                state.prune(cfg, "epoch", epoch)
        n = cfg["sample_every_n_epochs"]
        if n and epoch % n == 0:
            generate_samples(run, epoch=epoch)
        if self.quality is not None:
            self._measure_quality(run, epoch)

    def _quality_report(self, run: Run):
        """The run's quality report (patina.core.train.quality), or None when it is off or cannot be set up."""
        if not run.cfg["quality_report"] or not run.accelerator.is_main_process:
            return None
        from patina.core.train.quality import QualityReport

        try:
            return QualityReport(run)
        except PatinaError as exc:
            self.log(f"No quality report for this run: {exc}", "warning")
        except Exception as exc:  # noqa: BLE001 - the report is an extra; the training goes on without it
            self.log(f"No quality report for this run ({type(exc).__name__}: {exc}).", "warning")
        return None

    def _measure_quality(self, run: Run, epoch: int) -> None:
        """Measure after *epoch* (main process; the others wait). A failing report is switched off with a
        warning: it never stops the training."""
        acc = run.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process and self.quality is not None:
            try:
                event = self.quality.measure(epoch)
            except Exception as exc:  # noqa: BLE001 - see above
                if _is_oom(exc):
                    empty_device_cache()
                self.quality = None
                detail = outputs.why(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
                self.log(f"The quality report stopped after an error ({detail}); training goes on without it.",
                         "warning")
                run.report.status("training", "Training…")
            else:
                self.emit(event)
                self.logs.quality(event.report["epochs"][-1])
        acc.wait_for_everyone()

    # -- endings ------------------------------------------------------------------------------------------------
    def _finish(self, stopped: bool) -> Finished:
        """Save the result. Only a run that trained to its end writes ``<output_name>.safetensors``; a stopped
        run saves ``<output_name>-step<N>.safetensors`` and never replaces a finished LoRA of the same name."""
        run = self.run_
        cfg, step = run.cfg, run.step
        stem = f"{cfg['output_name']}-step{step:08d}" if stopped else cfg["output_name"]
        # A resumed run replaces the state it started from, so resuming again does not replay old steps.
        with_state = bool(stopped or cfg["save_state_on_train_end"] or cfg["save_state"] or self.resume_dir)
        lora, saved_state, problem = outputs.keep(run, stem, with_state, self.started)
        if stopped:
            msg = f"Stopped at step {step} of {run.plan.total_steps}."
            if lora is not None and not problem:
                msg += f" The LoRA so far is saved as {lora}"
                if run.plan.output_path.exists():
                    msg += f" ({run.plan.output_path.name} is left as it was)"
                msg += "."
            if saved_state is not None:
                msg += f" Continue later from {saved_state}."
            if problem:
                msg += "\n" + problem
            return Finished("stopped", msg, str(lora) if lora else None, step)
        if problem and lora != outputs.lora_path(cfg, stem):
            msg = f"Training finished ({step} steps), but the LoRA could not be saved where asked.\n" + problem
            return Finished("failed", msg, str(lora) if lora else None, step)
        msg = f"Done: {step} steps. Your LoRA is {lora}." + ("\n" + problem if problem else "")
        return Finished("finished", msg, str(lora), step)

    def _finish_failed(self, message: str, save: bool) -> Finished:
        """A failed run keeps its last good state (``<output_name>-step<N>``) when it trained at least a step."""
        run, saved = self.run_, None
        if save and run is not None and run.step > 0:
            try:
                run.optimizer.zero_grad(set_to_none=True)
                empty_device_cache()
                lora, _state, problem = outputs.keep(run, f"{run.cfg['output_name']}-step{run.step:08d}", True,
                                                     self.started)
                saved = str(lora) if lora else None
                if lora is not None and not problem:
                    message += f"\nThe last good state (step {run.step}) was saved as {lora}."
                if problem:
                    message += "\n" + problem
            except Exception as exc:  # noqa: BLE001 - report the original failure, note the save failure
                message += f"\n(Saving the last good state failed too: {exc}.)"
        return Finished("failed", message, saved, self.global_step)


class _Rate:
    """Images per second over the last few seconds, and the time left from the steps done so far."""

    def __init__(self, first_step: int):
        self.loop_started = self.window_started = time.time()
        self.first_step = first_step
        self.images = 0

    def tick(self, step: int, total: int) -> tuple[float, float | None]:
        now = time.time()
        rate = self.images / max(now - self.window_started, 1e-9)
        done = step - self.first_step
        eta = (now - self.loop_started) / done * (total - step) if done else None
        if now - self.window_started > 5:
            self.window_started, self.images = now, 0
        return rate, eta


class _NanLoss(Exception):
    pass


def _nan_message(run: Run) -> str:
    return (f"The loss became NaN/inf at step {run.step + 1} (epoch {run.epoch + 1}): training diverged. "
            "Lower the learning rate (e.g. halve unet_lr and text_encoder_lr), use bf16 instead of fp16 if your "
            "GPU supports it, and for SDXL tick 'No half VAE'.")


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
          overwrite: bool = True, model_cache=None) -> Finished:
    """Run a training; never raises for user errors (see module docstring). *model_cache* keeps the loaded
    base model for the next run (the window's; see patina.core.models.cache)."""
    trainer = Trainer(cfg, emit, commands, resume, overwrite, model_cache)
    try:
        result = trainer.run()
    except PatinaError as exc:
        result = Finished("failed", str(exc), None, trainer.global_step)
    except Exception as exc:  # noqa: BLE001 - the process must survive; the user gets a message
        if _is_oom(exc):
            result = trainer._finish_failed(_oom_message(trainer.cfg), save=True)
        else:
            trainer.log(traceback.format_exc(), "warning")
            result = Finished("failed", f"Training stopped with an unexpected error: {type(exc).__name__}: {exc}. "
                                        "The full error is in the log.", None, trainer.global_step)
    trainer.report.status("done", {"finished": "Finished", "stopped": "Stopped", "failed": "Failed"}[result.status])
    trainer.emit(result)
    return result
