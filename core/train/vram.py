"""Will the run fit the GPU? The VRAM estimate shown in the plan, before Start.

Peak memory = the frozen weights on the GPU + the LoRA's trainable state + activations + overhead:

* **weights**: UNet, text encoder(s) and VAE at the training dtype (fp16/bf16 under mixed precision, fp32
  without; the SDXL VAE in fp32 with "No half VAE"). The VAE leaves the GPU once the latents are cached, the
  text encoders once their outputs are cached (they do not train and the captions never change), as
  patina.core.train.caching does.
* **LoRA + gradients + optimizer**: every trainable tensor of the network Patina would build (counted on the
  meta device, patina.core.train.vram_counts) in fp32, its gradient in fp32, the optimizer's states (see
  :func:`optimizer_bytes`) and, under mixed precision, autocast's half copy of each.
* **activations**: what the backward pass keeps, per image, at the largest bucket, from the calibration table
  below (bytes per pixel, scaling with the pixel count and the batch); plus the attention maps that PyTorch's
  plain attention ("none") stores (quadratic in the tokens); plus the text encoders' when they train.
* **overhead**: the CUDA context, outside PyTorch's allocator, and the allocator's slack.

The phase that caches latents holds every model at once; the peak is the larger of the two phases.
:func:`check` compares the total with the detected card and proposes one-click fixes.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

GiB = 2**30

# --- calibration -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """One measured peak: ``peak_gib`` is ``torch.cuda.max_memory_allocated``; ``other_gib`` is what the run
    held besides activations (frozen weights, LoRA, gradients, optimizer states), so that
    ``(peak_gib - other_gib) / batch`` are the activations of one image at ``resolution``."""

    family: str
    resolution: tuple[int, int]
    batch: int
    checkpointing: bool
    peak_gib: float
    other_gib: float
    source: str


# Published figures (../shared/reference/performance.md §1.1, §1.2, §2.1): SimpleTuner's segmented-checkpointing
# tables, bf16 weights, batch 1, cached latents and text embeddings, PyTorch SDPA attention.
# SD 1.5 (PEFT LoRA r16, adamw_bf16): other = UNet 859,520,964 × 2 B = 1.601 GiB + ~6.8 M LoRA params × 8 B
# (bf16 weights, gradients and two states) = 0.051 GiB.
# SDXL (LyCORIS LoKr on attention, adamw_bf16): other = UNet 2,567,463,684 × 2 B = 4.782 GiB + ~0.02 GiB LoKr.
_SD1_OTHER, _SDXL_OTHER = 1.652, 4.80
_ST = "SimpleTuner documentation/experimental/SEGMENTED_CHECKPOINTING.md"
PUBLISHED: tuple[Calibration, ...] = (
    Calibration("sd1", (512, 512), 1, False, 2.87, _SD1_OTHER, f"{_ST}, SD 1.x, H100"),
    Calibration("sd1", (512, 512), 1, False, 2.83, _SD1_OTHER, f"{_ST}, SD 1.x, L40S"),
    Calibration("sd1", (512, 512), 1, True, 1.98, _SD1_OTHER, f"{_ST}, SD 1.x, H100"),
    Calibration("sd1", (512, 512), 1, True, 1.93, _SD1_OTHER, f"{_ST}, SD 1.x, L40S"),
    Calibration("sdxl", (1024, 1024), 1, False, 13.03, _SDXL_OTHER, f"{_ST}, SDXL, H100"),
    Calibration("sdxl", (1024, 1024), 1, False, 12.98, _SDXL_OTHER, f"{_ST}, SDXL, L40S"),
    Calibration("sdxl", (1024, 1024), 1, True, 6.53, _SDXL_OTHER, f"{_ST}, SDXL, H100"),
    Calibration("sdxl", (1024, 1024), 1, True, 6.48, _SDXL_OTHER, f"{_ST}, SDXL, L40S"),
)

# Figures measured with Patina on a real GPU (``scripts/gpu_check.sh`` prints these rows, SDPA runs only).
# When a family has measured rows they replace the published ones.
MEASURED: tuple[Calibration, ...] = ()

# SD 2.x has SD 1.x's channel widths and block layout; until it has figures of its own it uses SD 1.x's.
CALIBRATION_FAMILY = {"sd1": "sd1", "sd2": "sd1", "sdxl": "sdxl"}

# Not calibrated yet (no published figure isolates them); the GPU check measures the totals they feed:
# PyTorch's plain attention keeps each self-attention map for the backward pass: under autocast the softmax
# output in fp32 (4 B) and its half copy for the value matmul (2 B); without autocast one fp32 map.
PLAIN_ATTENTION_BYTES = {2: 6, 4: 4}          # by activation bytes (2: fp16/bf16, 4: fp32)
# A training text encoder keeps ~17 values of its width per token and layer (norms, q/k/v, attention output,
# the MLP's 4× hidden twice); with checkpointing one value per layer plus one whole layer.
TE_VALUES_PER_TOKEN_LAYER = 17
# Caching latents: the VAE encoder's largest live tensors, ~4 of 128 channels at full resolution per image.
VAE_ENCODE_VALUES_PER_PIXEL = 4 * 128
# The CUDA context (kernels loaded lazily) lives outside PyTorch's allocator; the caching allocator reserves
# more than it hands out (fragmentation). Estimates, to be replaced by the GPU check's figures.
CUDA_CONTEXT = int(0.5 * GiB)
ALLOCATOR_SLACK = 0.10


def activation_bytes_per_pixel(family: str, checkpointing: bool) -> float:
    """Bytes of activations per image pixel (bf16/fp16 training, memory-efficient attention)."""
    fam = CALIBRATION_FAMILY.get(family, "sdxl")
    rows = [r for r in MEASURED if r.family == fam and r.checkpointing == checkpointing]
    rows = rows or [r for r in PUBLISHED if r.family == fam and r.checkpointing == checkpointing]
    per = [(r.peak_gib - r.other_gib) * GiB / r.batch / (r.resolution[0] * r.resolution[1]) for r in rows]
    return sum(per) / len(per)


# --- the arithmetic ----------------------------------------------------------------------------------------

EIGHT_BIT_MIN = 4096        # bitsandbytes keeps 32-bit states for tensors smaller than this
EIGHT_BIT_BLOCK = 256       # one fp32 scale per block of 256 values


def optimizer_bytes(optimizer: str, shapes, optimizer_args: str = "") -> int:
    """Bytes of optimizer state for fp32 parameters of these *shapes*."""
    total = 0
    for shape in shapes:
        n = math.prod(shape)
        if optimizer in ("AdamW8bit", "PagedAdamW8bit", "Lion8bit", "SGDNesterov8bit"):
            states = 2 if "Adam" in optimizer else 1
            per = (1 + 4 / EIGHT_BIT_BLOCK) if n >= EIGHT_BIT_MIN else 4
            total += int(states * per * n)
        elif optimizer == "Adafactor":
            if len(shape) >= 2:
                total += 4 * (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1])
            else:
                total += 4 * n
            if "beta1" in (optimizer_args or ""):
                total += 4 * n
        else:
            states = {"AdamW": 2, "Lion": 1, "SGDNesterov": 1, "Prodigy": 4, "DAdaptation": 3, "DAdaptAdam": 3}
            total += 4 * n * states.get(optimizer, 2)
    return total


@dataclass
class Estimate:
    """The estimate for one config at its largest bucket. Sizes in bytes; :attr:`card` once compared."""

    resolution: tuple[int, int]
    batch: int
    weights: int
    weights_what: str
    train_state: int
    train_what: str
    activations: int
    activations_what: str
    caching_peak: int           # allocated while latents are cached (every model on the GPU)
    overhead: int = 0
    card: "CardCheck | None" = None

    @property
    def training_peak(self) -> int:
        return self.weights + self.train_state + self.activations

    @property
    def allocated(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` should report for the run."""
        return max(self.training_peak, self.caching_peak)

    @property
    def total(self) -> int:
        return self.allocated + self.overhead

    def rows(self) -> list[tuple[str, str, int]]:
        """(part, what it is, bytes) for the breakdown table."""
        rows = [("Weights", self.weights_what, self.weights),
                ("LoRA + gradients + optimizer", self.train_what, self.train_state),
                ("Activations", self.activations_what, self.activations)]
        if self.caching_peak > self.training_peak:
            rows.append(("Caching latents", "every model on the GPU at once, before training",
                         self.caching_peak - self.training_peak))
        return rows + [("Overhead", "CUDA context, allocator", self.overhead)]


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= 10 * GiB else f"{n / GiB:.2f} GiB"


def _weights(cfg: Mapping[str, Any], counts, wb: int, vb: int) -> tuple[int, str]:
    """Frozen weights on the GPU while training, and what they are."""
    from patina.core.config.schema import training_lrs
    from patina.core.train.batches import can_cache_latents, captions_are_static

    dtype = cfg["mixed_precision"] if wb == 2 else "fp32"
    weights, what = counts.unet * wb, [f"UNet {dtype}"]
    if not training_lrs(cfg).train_text_encoder and captions_are_static(cfg):
        what.append("text encoders freed after caching")
    else:
        weights += sum(counts.text_encoders) * wb
        what.append(f"text encoders {dtype}")
    if can_cache_latents(cfg):
        what.append("VAE freed after caching")
    else:
        weights += counts.vae * vb
        what.append("VAE " + ("fp32" if vb == 4 else dtype))
    return weights, ", ".join(what)


def _activations(cfg: Mapping[str, Any], counts, w: int, h: int, wb: int) -> tuple[float, str]:
    """What the backward pass keeps for one batch at *w*×*h*, and what decides it."""
    from patina.core.config.schema import training_lrs

    batch, gc, attention = int(cfg["train_batch_size"]), bool(cfg["gradient_checkpointing"]), cfg["xformers"]
    acts = activation_bytes_per_pixel(counts.family, gc) * (wb / 2) * w * h * batch
    if attention == "none":
        # one heads × tokens × tokens map per self-attention layer; tokens = latent pixels at its level
        maps = [heads * (((w // 8) // f) * ((h // 8) // f)) ** 2 for f, heads in counts.attention]
        acts += (max(maps) if gc else sum(maps)) * PLAIN_ATTENTION_BYTES[wb] * batch
    train_te = training_lrs(cfg).train_text_encoder
    if train_te:
        tokens = 77 * max(1, int(cfg.get("max_token_length") or 75) // 75)
        for layers, width in counts.te_layers:
            values = layers + TE_VALUES_PER_TOKEN_LAYER if gc else layers * TE_VALUES_PER_TOKEN_LAYER
            acts += values * tokens * width * wb * batch
    what = {"xformers": "xformers", "sdpa": "SDPA"}.get(attention, "plain attention")
    what += ", gradient checkpointing" if gc else ", no checkpointing"
    return acts, what + (", text encoder trains" if train_te else "")


def estimate(cfg: Mapping[str, Any], counts, resolution: tuple[int, int]) -> Estimate:
    """The estimate for config *cfg* (validated) with *counts* (vram_counts.ModelCounts) at the bucket
    *resolution* (width, height) with the config's batch size."""
    from patina.core.train.batches import can_cache_latents

    w, h = resolution
    batch = int(cfg["train_batch_size"])
    mixed = cfg["mixed_precision"] in ("fp16", "bf16")
    wb = 2 if mixed else 4                                               # bytes of a weight / activation
    vb = 4 if counts.family == "sdxl" and cfg.get("sdxl_no_half_vae") else wb
    weights, weights_what = _weights(cfg, counts, wb, vb)

    n_lora = counts.lora_params
    opt = optimizer_bytes(cfg["optimizer"], counts.lora, cfg.get("optimizer_args", ""))
    train_state = n_lora * (4 + 4 + (2 if mixed else 0)) + opt          # fp32 weights and gradients, half copies
    size = f"{n_lora / 1e6:.1f} M" if n_lora >= 100_000 else f"{n_lora / 1e3:.0f} K"
    acts, acts_what = _activations(cfg, counts, w, h, wb)

    caching = (counts.unet + sum(counts.text_encoders)) * wb + counts.vae * vb + n_lora * 4
    if can_cache_latents(cfg):
        vae_batch = int(cfg.get("vae_batch_size") or 0) or batch
        caching += VAE_ENCODE_VALUES_PER_PIXEL * w * h * vb * vae_batch
    est = Estimate((w, h), batch, weights, weights_what, train_state, f"{size} params, {cfg['optimizer']}",
                   int(acts), acts_what, int(caching))
    est.overhead = int(est.allocated * ALLOCATOR_SLACK) + CUDA_CONTEXT
    return est


# --- against the card ----------------------------------------------------------------------------------------

WINDOWS_NOTE = ("on Windows the driver then borrows system memory instead of stopping, and the run goes 5–10× "
                "slower")


@dataclass(frozen=True)
class CardCheck:
    name: str
    total: int          # bytes on the card
    available: int      # bytes a run here can use (free + what this process already holds)
    verdict: str        # "fits" | "tight" | "will not fit"


def verdict(need: int, total: int, available: int) -> str:
    """"fits", "tight" (within 10 % of what is free, or over 90 % of the card) or "will not fit"."""
    if need > available:
        return "will not fit"
    if need > 0.9 * available or need > 0.9 * total:
        return "tight"
    return "fits"


def largest_bucket(buckets) -> tuple[int, int]:
    """The bucket with the most pixels; *buckets* holds ``(w, h)`` tuples or ``"WxH"`` strings."""
    sizes = [tuple(int(v) for v in b.split("x")) if isinstance(b, str) else tuple(b) for b in buckets]
    return max(sizes, key=lambda s: (s[0] * s[1], s))


def _fixes(cfg: Mapping[str, Any], device) -> list[dict]:
    from patina.core.config.schema import training_lrs
    from patina.core.train.batches import captions_are_static

    out: list[dict] = []
    if not cfg["gradient_checkpointing"]:
        out.append({"gradient_checkpointing": True})
    if training_lrs(cfg).train_text_encoder or not captions_are_static(cfg):
        fix: dict = {"text_encoder_lr": 0.0} if training_lrs(cfg).train_text_encoder else {}
        for key, off in (("shuffle_caption", False), ("caption_dropout_rate", 0.0),
                         ("caption_dropout_every_n_epochs", 0), ("caption_tag_dropout_rate", 0.0)):
            if cfg[key] != off:
                fix[key] = off
        out.append(fix)
    if not cfg["cache_latents"] and not cfg["color_aug"] and not cfg["random_crop"]:
        out.append({"cache_latents": True})
    if cfg["mixed_precision"] == "no":
        out.append({"mixed_precision": "bf16" if device.bf16 else "fp16"})
    eight = {"AdamW": "AdamW8bit", "Lion": "Lion8bit", "SGDNesterov": "SGDNesterov8bit"}
    if cfg["optimizer"] in eight and device.bitsandbytes:
        out.append({"optimizer": eight[cfg["optimizer"]]})
    if cfg["train_batch_size"] > 1:
        out += [{"train_batch_size": b} for b in range(int(cfg["train_batch_size"]) - 1, 0, -1)]
    return out


_FIX_WORDS = {"gradient_checkpointing": "turn on gradient checkpointing", "text_encoder_lr":
              "train the UNet only and cache the text-encoder outputs", "shuffle_caption":
              "keep the captions fixed so their text-encoder outputs are cached", "cache_latents": "cache latents",
              "mixed_precision": "use mixed precision", "optimizer": "use an 8-bit optimizer",
              "train_batch_size": "lower the batch size"}


def check(cfg: Mapping[str, Any], est: Estimate, device, counts_for: Callable[[Mapping[str, Any]], Any], *,
          platform: str | None = None) -> list:
    """Compare *est* with the card of *device* (preflight.DeviceInfo); set ``est.card`` and return the
    problems (warnings) to show, each fix with the estimate it would give. *counts_for* gives the counts of a
    changed config (the text encoder's LoRA goes when it stops training)."""
    from patina.core.config.schema import Problem

    if not device.cuda or not device.total_memory:
        return []
    # probing created this process's CUDA context, which the run does not pay twice (it is in est.overhead)
    free = device.free_memory + CUDA_CONTEXT if device.free_memory is not None else device.total_memory
    available = min(device.total_memory, free)
    est.card = CardCheck(device.name, device.total_memory, available,
                         verdict(est.total, device.total_memory, available))
    if est.card.verdict == "fits":
        return []
    windows = (platform or sys.platform) == "win32"
    options = []
    for fix in _fixes(cfg, device):
        changed = dict(cfg, **fix)
        after = estimate(changed, counts_for(changed), est.resolution)
        if after.total < est.total * 0.97:
            options.append((after.total, fix))
    batch_fixes = [o for o in options if "train_batch_size" in o[1]]
    fitting = [o for o in batch_fixes if verdict(o[0], est.card.total, available) == "fits"]
    options = [o for o in options if "train_batch_size" not in o[1]] + (fitting[:1] or batch_fixes[-1:])
    options.sort(key=lambda o: o[0])
    if len(options) > 1 and verdict(options[0][0], est.card.total, available) != "fits":
        # no single change is enough: offer them all at once
        together = {k: v for _, fix in options for k, v in fix.items()}
        changed = dict(cfg, **together)
        options.insert(0, (estimate(changed, counts_for(changed), est.resolution).total, together))
    head = (f"the run needs about {gib(est.total)} of VRAM and {device.name} has {gib(available)} free "
            f"({gib(device.total_memory)} in all): ")
    head += ("it will not fit" if est.card.verdict == "will not fit" else "that is tight")
    if windows:
        head += f"; {WINDOWS_NOTE}"
    if not options:
        return [Problem("vram", head + "; lower the resolution or the rank", None, "warning")]
    out = []
    for i, (total, fix) in enumerate(options if est.card.verdict == "will not fit" else options[:1]):
        words = " and ".join(_FIX_WORDS.get(k, f"set {k}") + (f" to {v}" if k == "train_batch_size" else "")
                             for k, v in fix.items() if k in _FIX_WORDS)
        text = (head + "; " if i == 0 else "or ") + f"{words}: about {gib(total)}"
        out.append(Problem("vram", text, None, "warning", fix=fix))
    return out


def format_lines(est: Estimate, indent: str = "  ") -> list[str]:
    """The compact breakdown table for the plan text."""
    w, h = est.resolution
    lines = [f"{indent}VRAM estimate (batch {est.batch} at {w}×{h}, the largest bucket):"]
    for part, what, n in est.rows():
        lines.append(f"{indent}  {part:<29} {gib(n):>9}   {what}")
    total = f"{indent}  {'Total':<29} {gib(est.total):>9}"
    if est.card is None:
        total += "   (no CUDA GPU here: not compared with a card)"
    else:
        total += f"   of {gib(est.card.available)} free on {est.card.name}: {est.card.verdict}"
    lines.append(total)
    return lines


def summary_text(est: Estimate) -> str:
    """One line: the total and the verdict."""
    if est.card is None:
        return f"about {gib(est.total)} (no CUDA GPU here to compare with)"
    return f"about {gib(est.total)} of {gib(est.card.available)} free on {est.card.name}: {est.card.verdict}"


def for_config(cfg: Mapping[str, Any], family: str, buckets, device, *, platform: str | None = None
               ) -> tuple[Estimate | None, list]:
    """(estimate, problems) for a validated *cfg*, or (None, []) when the family is unknown or the model
    cannot be described (the plan is still useful without an estimate)."""
    from patina.core.models.families import FAMILIES
    from patina.core.train.vram_counts import count_models

    if family not in FAMILIES or not buckets:
        return None, []

    def counts_for(c):
        return count_models(c, family)

    try:
        est = estimate(cfg, counts_for(cfg), largest_bucket(buckets))
    except Exception:  # noqa: BLE001 - an unusual model or setting: the plan is still useful without the estimate
        return None, []
    problems = check(cfg, est, device, counts_for, platform=platform) if device is not None else []
    return est, problems

