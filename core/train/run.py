"""The run object: everything a training run trains with, built once before the loop.

:func:`build_run` loads the base models onto the device, wraps them with the LoRA network, builds the
optimizer and learning-rate scheduler (prepared by accelerate) and fills the latent and text-encoder caches
(patina.core.train.caching). The loop (patina.core.train.engine), the state folder (patina.core.train.state),
the samples (patina.core.train.sampling) and the saved files (patina.core.train.outputs) all read this one
object; where the loop stands (step, epoch, micro-batch) is kept on it too, so a save at any moment knows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from patina.core.errors import PatinaError
from patina.core.train.events import Emit, Log, Status


class Reporter:
    """Events out of the run; under ``accelerate launch`` only the main process emits."""

    def __init__(self, emit: Emit | None):
        self._emit = emit or (lambda e: None)
        self.accelerator = None

    def emit(self, event) -> None:
        if self.accelerator is None or self.accelerator.is_main_process:
            self._emit(event)

    def status(self, phase: str, text: str) -> None:
        self.emit(Status(phase, text))

    def log(self, text: str, level: str = "info") -> None:
        self.emit(Log(text, level))


@dataclass
class Run:
    """One run's models, network, optimizer, scheduler and caches, and where its loop stands."""

    cfg: dict
    plan: Any                       # patina.core.train.engine.RunPlan
    accelerator: Any
    report: Reporter
    base: Any                       # patina.core.models.loading.BaseModel, on the device
    weight_dtype: Any
    vae_dtype: Any
    train_unet: bool = False
    train_te: bool = False
    network: Any = None             # patina.core.lora.network.LoraNetwork
    optimizer: Any = None           # prepared by accelerate
    lr_scheduler: Any = None
    group_names: list = field(default_factory=list)
    trainable: list = field(default_factory=list)
    unet_model: Any = None          # the UNet the loop calls (DDP-wrapped when it trains on several processes)
    te_models: list = field(default_factory=list)
    latent_cache: dict | None = None
    te_cache: dict | None = None
    # where the loop stands
    step: int = 0                   # optimizer steps done
    epoch: int = 0                  # 0-based epoch in progress
    micro_done: int = 0             # micro-batches of the epoch already trained when the loop starts (resume)
    micro_in_epoch: int = 0         # micro-batches of the epoch in progress trained so far
    resume_at: tuple | None = None  # (epoch, micro) where a run ended inside an epoch

    @property
    def seed(self) -> int:
        return self.plan.seed

    @property
    def v_pred(self) -> bool:
        return bool(self.base.v_prediction)

    @property
    def device(self):
        return self.accelerator.device

    def position(self) -> tuple[int, int]:
        """(epoch, micro-batch) to continue from: a resumed run trains on from exactly there."""
        return self.resume_at or (self.epoch, self.micro_in_epoch)

    def encode_text(self, captions: list[str], *, unwrapped: bool = False):
        """(hidden states, pooled) for *captions*. While the text encoders train this calls the prepared
        (DDP-wrapped) modules so gradients are synced; sampling runs on the main process only and must not
        call a DDP forward (``unwrapped=True``)."""
        from types import SimpleNamespace

        from patina.core.models.text import encode_prompts

        tes = self.te_models if self.train_te and self.te_models and not unwrapped else self.base.text_encoders
        base = SimpleNamespace(family=self.base.family, tokenizers=self.base.tokenizers, text_encoders=tes,
                               unet=self.base.unet)
        return encode_prompts(base, captions, max_token_length=int(self.cfg["max_token_length"]),
                              clip_skip=int(self.cfg["clip_skip"]), device=self.device)

    def encode_pixels(self, pixels):
        import torch

        vae = self.base.vae
        with torch.no_grad():
            px = pixels.to(self.device, dtype=self.vae_dtype)
            # The posterior's mean: deterministic, so a cached latent equals a fresh one.
            lat = vae.encode(px).latent_dist.mode()
            if torch.isnan(lat).any():
                raise PatinaError("The VAE produced NaN latents. For SDXL tick 'No half VAE' (sdxl_no_half_vae), or use "
                                  "a VAE fixed for fp16.")
            return lat.float() * vae.config.scaling_factor

    def agree(self, flag: bool) -> bool:
        """All processes act on a command if the main process received it."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return flag
        import torch

        t = torch.tensor([1.0 if flag else 0.0], device=acc.device)
        return bool(acc.reduce(t, reduction="sum").item() > 0)


def empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_run(cfg: dict, plan, accelerator, report: Reporter, loaded: Callable[[Run], None],
              model_cache=None) -> Run:
    """Load the models, build the network and optimizer and fill the caches. *loaded* is called once the base
    models are loaded (the engine announces the plan then, with the model family it found). *model_cache*
    (a patina.core.models.cache.ModelCache, the window's) keeps the base model for the next run."""
    from patina.core.train import caching

    report.status("loading", f"Loading {Path(cfg['pretrained_model_name_or_path']).name}…")
    run = _load_models(cfg, plan, accelerator, report, model_cache)
    loaded(run)
    _add_network(run)
    _add_optimizer(run)  # before caching: a missing optimizer package fails in seconds, not minutes
    caching.fill(run)
    return run


def _load_models(cfg: dict, plan, acc, report: Reporter, model_cache=None) -> Run:
    import torch
    from diffusers.utils import logging as dlog

    from patina.core.models.loading import load_base_model

    dlog.set_verbosity_error()  # diffusers warns about float32 modules on every .to(dtype)
    family = None if cfg["model_family"] == "auto" else cfg["model_family"]
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision, torch.float32)
    # The VAE's dtype depends on the family (SDXL's "no half VAE"); the file's header tells it before loading.
    no_half_vae = cfg["sdxl_no_half_vae"] and _family_of(cfg) == "sdxl"
    vae_dtype = torch.float32 if no_half_vae else weight_dtype
    # Straight into the training dtypes and onto the device: under fp16/bf16 no fp32 copy ever exists.
    settings = dict(family=family, v_parameterization=cfg["v_parameterization"] or None, dtype=weight_dtype,
                    vae_dtype=vae_dtype, device=acc.device)
    path, vae = cfg["pretrained_model_name_or_path"], cfg["vae"] or None
    if model_cache is None:
        base = load_base_model(path, vae_path=vae, **settings)
    else:
        base, reused = model_cache.load(load_base_model, path, vae_path=vae, **settings)
        if reused:
            report.log(f"Using the base model already loaded ({Path(path).name}, unchanged since the last run).")
    for m in [base.unet, base.vae, *base.text_encoders]:
        m.requires_grad_(False)
        m.eval()
    _set_attention(base.unet, cfg["xformers"])
    return Run(cfg, plan, acc, report, base, weight_dtype, vae_dtype)


def _family_of(cfg: dict) -> str:
    if cfg["model_family"] != "auto":
        return cfg["model_family"]
    from patina.core.models.detect import detect_family

    try:
        return detect_family(cfg["pretrained_model_name_or_path"]).family or "auto"
    except PatinaError:
        return "auto"  # loading will say what is wrong


def _set_attention(unet, mode: str) -> None:
    if mode == "xformers":
        try:
            unet.enable_xformers_memory_efficient_attention()
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
            raise PatinaError(f"xformers attention is not available ({exc}). Install xformers for your torch "
                              "build, or set Cross attention to sdpa.") from None
    elif mode == "none":
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())


def long_caption_warnings(run: Run) -> list[str]:
    """Captions longer than max_token_length are cut by the text encoder; say so before training."""
    limit = int(run.cfg["max_token_length"])
    limit = 75 * max(1, limit // 75)
    tok = run.base.tokenizers[0] if run.base.tokenizers else None
    if tok is None:
        return []
    seen: dict[str, tuple[int, Path]] = {}
    for item in run.plan.data.items:
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


def _add_network(run: Run) -> None:
    import torch

    from patina.core.config.schema import training_lrs
    from patina.core.lora.network import build_network, build_network_from_weights
    from patina.core.lora.targets import NetworkSpec

    cfg, base = run.cfg, run.base
    lrs = training_lrs(cfg)
    run.train_unet, run.train_te = lrs.train_unet, lrs.train_text_encoder
    weights_sd = None
    if cfg["network_weights"]:
        from patina.core.lora.kohya_format import read_lora

        weights_sd, _ = read_lora(cfg["network_weights"])

    spec = NetworkSpec.from_values(cfg)  # the one config → network spec mapping
    torch.manual_seed(run.seed)
    tes = base.text_encoders if run.train_te else []
    if weights_sd is not None and cfg["dim_from_weights"]:
        # modules, ranks and alphas come from the file (kohya's "DIM from weights")
        run.network = build_network_from_weights(base.unet, tes, base.family, weights_sd, spec)
    else:
        run.network = build_network(base.unet, tes, base.family, spec)
        if weights_sd is not None:
            res = run.network.load_kohya_state_dict(weights_sd, strict=False)
            if res.missing or res.unexpected:
                run.report.log(f"{cfg['network_weights']}: {len(res.loaded)} module(s) loaded, {len(res.missing)} "
                               f"start fresh, {len(res.unexpected)} in the file are not trained in this run.",
                               "warning")
    if weights_sd is not None:
        run.report.log(f"Continuing from {cfg['network_weights']}.")
    run.network.cast_lora_params(torch.float32)
    if cfg["gradient_checkpointing"]:
        if run.train_unet:
            base.unet.enable_gradient_checkpointing()
        if run.train_te:
            for te in base.text_encoders:  # transformers ≥ 5 renamed it
                enable = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
                enable()
    if run.train_unet:
        base.unet.train()
    if run.train_te:
        for te in base.text_encoders:
            te.train()


def _add_optimizer(run: Run) -> None:
    from patina.core.train.optimizers import build_optimizer, build_scheduler

    cfg, base = run.cfg, run.base
    base_ratio = cfg["loraplus_lr_ratio"]
    groups = run.network.param_groups(
        unet_lr=cfg["unet_lr"], text_encoder_lr=cfg["text_encoder_lr"],
        loraplus_unet_ratio=cfg["loraplus_unet_lr_ratio"] or base_ratio,
        loraplus_te_ratio=cfg["loraplus_text_encoder_lr_ratio"] or base_ratio)
    run.group_names = [g.pop("name", f"group{i}") for i, g in enumerate(groups)]
    run.trainable = [p for g in groups for p in g["params"]]
    optimizer = build_optimizer(cfg["optimizer"], groups, cfg["learning_rate"], cfg["optimizer_args"])
    run.lr_scheduler = build_scheduler(cfg, optimizer, run.plan.total_steps)
    models = []
    if run.train_unet:
        models.append(base.unet)
    if run.train_te:
        models += base.text_encoders
    prepared = run.accelerator.prepare(*models, optimizer)
    prepared = prepared if isinstance(prepared, (list, tuple)) else [prepared]
    run.optimizer = prepared[-1]
    wrapped = list(prepared[:-1])
    run.unet_model = wrapped.pop(0) if run.train_unet else base.unet
    run.te_models = wrapped if run.train_te else base.text_encoders
