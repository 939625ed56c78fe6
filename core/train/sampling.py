"""Sample prompts in kohya's syntax, sampler names → diffusers schedulers, and sample file names.

A prompt line is ``text --n negative --w 512 --h 768 --d 42 --s 28 --l 7.5 --ss euler_a``. Blank lines and
lines starting with ``#`` are skipped (kohya-layout.md §8).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from patina.core.errors import PatinaError
from patina.core.config.schema import SAMPLERS


@dataclass
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    seed: int | None = None
    steps: int = 30
    cfg_scale: float = 7.5
    sampler: str | None = None
    line: int = 0


_OPT = re.compile(r"\s--(?=[A-Za-z]+(\s|$))")


def parse_prompt_line(line: str, *, default_size: tuple[int, int] = (512, 512), lineno: int = 0) -> SamplePrompt:
    parts = _OPT.split(" " + line.strip())
    # re.split with a group returns separators; keep only the text pieces
    pieces = [p for i, p in enumerate(parts) if i % 2 == 0]
    sp = SamplePrompt(prompt=pieces[0].strip(), width=default_size[0], height=default_size[1], line=lineno)
    for piece in pieces[1:]:
        flag, _, value = piece.strip().partition(" ")
        flag, value = flag.lower(), value.strip()
        try:
            if flag == "n":
                sp.negative = value
            elif flag == "w":
                sp.width = int(value)
            elif flag == "h":
                sp.height = int(value)
            elif flag == "d":
                sp.seed = int(value)
            elif flag == "s":
                sp.steps = max(1, min(1000, int(value)))
            elif flag == "l":
                sp.cfg_scale = float(value)
            elif flag == "ss":
                if value not in SAMPLERS:
                    raise ValueError
                sp.sampler = value
            # other kohya flags (--g, --cn, --fs, ...) are for other model families: ignored
        except ValueError:
            where = f"line {lineno}: " if lineno else ""
            raise PatinaError(f'Sample prompts, {where}"--{flag} {value}" is not valid '
                              f"(--w/--h/--d/--s take whole numbers, --l a number, --ss a sampler name).") from None
    for side in ("width", "height"):
        v = getattr(sp, side)
        if v < 64 or v > 4096:
            raise PatinaError(f"Sample prompts, line {lineno}: {side} {v} must be 64–4096.")
        setattr(sp, side, v - v % 8)
    return sp


def parse_prompts(text: str, *, default_size: tuple[int, int] = (512, 512)) -> list[SamplePrompt]:
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        out.append(parse_prompt_line(line, default_size=default_size, lineno=i))
    return out


def make_scheduler(sampler: str, scheduler_config: dict):
    """A diffusers scheduler for kohya's sampler name; ``k_`` variants use Karras sigmas where supported."""
    import diffusers as d

    base = sampler[2:] if sampler.startswith("k_") else sampler
    karras = sampler.startswith("k_")
    classes = {
        "ddim": d.DDIMScheduler, "pndm": d.PNDMScheduler, "lms": d.LMSDiscreteScheduler,
        "euler": d.EulerDiscreteScheduler, "euler_a": d.EulerAncestralDiscreteScheduler, "heun": d.HeunDiscreteScheduler,
        "dpm_2": d.KDPM2DiscreteScheduler, "dpm_2_a": d.KDPM2AncestralDiscreteScheduler,
        "dpmsolver": d.DPMSolverMultistepScheduler, "dpmsolver++": d.DPMSolverMultistepScheduler,
        "dpmsingle": d.DPMSolverSinglestepScheduler,
    }
    if base not in classes:
        raise PatinaError(f'Unknown sampler "{sampler}"; choose one of {", ".join(SAMPLERS)}.')
    cls = classes[base]
    kwargs = {}
    if base == "dpmsolver":
        kwargs["algorithm_type"] = "dpmsolver"
        kwargs["final_sigmas_type"] = "sigma_min"  # diffusers refuses "zero" for the first-order dpmsolver
    elif base == "dpmsolver++":
        kwargs["algorithm_type"] = "dpmsolver++"
    if base == "pndm":
        kwargs["skip_prk_steps"] = True
    if karras and "use_karras_sigmas" in inspect.signature(cls.__init__).parameters:
        kwargs["use_karras_sigmas"] = True
    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    with warnings.catch_warnings():
        # kohya's "dpmsolver" is diffusers' first-order algorithm, which diffusers marks as deprecated; it is
        # the user's choice of sampler, not something to warn about on every sample
        warnings.filterwarnings("ignore", message=".*algorithm_type dpmsolver is deprecated", category=FutureWarning)
        return cls.from_config(config, **kwargs)


def sample_filename(output_name: str, *, step: int, epoch: int | None, index: int, seed: int | None,
                    when: datetime | None = None) -> str:
    """kohya's naming: ``<name>_<e000001|000500>_<NN>_<YYYYmmddHHMMSS>[_<seed>].png``."""
    stamp = (when or datetime.now()).strftime("%Y%m%d%H%M%S")
    at = f"e{epoch:06d}" if epoch is not None else f"{step:06d}"
    seed_part = f"_{seed}" if seed is not None else ""
    return f"{output_name}_{at}_{index:02d}_{stamp}{seed_part}.png"


@contextlib.contextmanager
def inference(run):
    """The run's models ready for sampling on the main process, as a pipeline (patina.core.models.loading):
    the VAE and text encoders on the device, everything in eval mode; put back as they were afterwards."""
    from patina.core.train.run import empty_device_cache

    acc, base = run.accelerator, run.base
    unet = acc.unwrap_model(run.unet_model)
    tes = [acc.unwrap_model(t) for t in run.te_models]
    moved = []
    for m in [base.vae, *tes]:
        if next(m.parameters()).device != acc.device:
            m.to(acc.device)
            moved.append(m)
    was_training = unet.training
    unet.eval()
    for t in tes:
        t.eval()
    try:
        pipe = base.pipeline(unet=unet, text_encoders=tes)
        pipe.set_progress_bar_config(disable=True)
        yield pipe
    finally:
        for m in moved:
            m.to("cpu")
        if was_training:
            unet.train()
        if run.train_te:
            for t in tes:
                t.train()
        empty_device_cache()


def prompt_kwargs(run, sp: SamplePrompt) -> dict:
    """The pipeline's keyword arguments for *sp*'s text and size (no seed, no scheduler)."""
    import torch

    cfg = run.cfg
    kw = dict(prompt=sp.prompt, negative_prompt=sp.negative or None, width=sp.width, height=sp.height,
              num_inference_steps=sp.steps, guidance_scale=sp.cfg_scale)
    if run.base.family != "sdxl" and (cfg["clip_skip"] > 1 or cfg["max_token_length"] > 75):
        # encode like training does (clip skip, long prompts); the pipeline's own clip_skip
        # path also breaks on transformers' flattened CLIPTextModel
        with torch.no_grad():
            pos, _ = run.encode_text([sp.prompt], unwrapped=True)
            neg, _ = run.encode_text([sp.negative], unwrapped=True)
        kw.update(prompt=None, negative_prompt=None, prompt_embeds=pos.to(run.weight_dtype),
                  negative_prompt_embeds=neg.to(run.weight_dtype))
    return kw


def generate_samples(run, epoch: int | None) -> None:
    """Generate the sample images of the run's sample prompts with the LoRA as trained so far (main process)
    into ``<output_dir>/sample``. Raises patina.core.train.outputs.SaveFailed on every process when an image
    cannot be written."""
    import random

    import torch

    from patina.core.atomic import atomic_temp_path, commit_temp
    from patina.core.dataset.buckets import parse_resolution
    from patina.core.train.events import Sample
    from patina.core.train.outputs import SaveFailed

    cfg, acc, base = run.cfg, run.accelerator, run.base
    if not cfg["sample_prompts"].strip():
        return
    acc.wait_for_everyone()
    failure = None
    if acc.is_main_process:
        prompts = parse_prompts(cfg["sample_prompts"], default_size=parse_resolution(cfg["max_resolution"]))
        run.report.status("sampling", f"Generating {len(prompts)} sample(s)…")
        out_dir = Path(cfg["output_dir"]) / "sample"
        with inference(run) as pipe:
            for i, sp in enumerate(prompts):
                pipe.scheduler = make_scheduler(sp.sampler or cfg["sample_sampler"], base.scheduler_config)
                seed = sp.seed if sp.seed is not None else random.Random(
                    hash((run.seed, run.step, i))).randint(0, 2**31 - 1)
                gen = torch.Generator("cpu").manual_seed(seed)
                with torch.no_grad(), acc.autocast():
                    image = pipe(**prompt_kwargs(run, sp), generator=gen).images[0]
                name = sample_filename(cfg["output_name"], step=run.step, epoch=epoch, index=i, seed=sp.seed)
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
                    failure = SaveFailed(path, exc)
                    break
                run.report.emit(Sample(path=str(path), prompt=sp.prompt, index=i, step=run.step,
                                       epoch=epoch if epoch is not None else run.epoch + 1))
        run.report.status("training", "Training…")
    acc.wait_for_everyone()
    if run.agree(failure is not None):
        raise failure or SaveFailed(Path(cfg["output_dir"]) / "sample", None)
