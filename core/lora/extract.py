"""Extract a LoRA from a fine-tuned checkpoint: ``ΔW = W_tuned − W_base`` per module, SVD, keep *rank*.

Like kohya's ``extract_lora_from_models``: the UNet's attention-block layers and the text encoders' layers
at *rank*; with *conv_rank* > 0 also the ResNet/down/upsampler layers (3×3 convs at *conv_rank*, the 1×1
shortcut and the time-embedding projection at *rank*), i.e. a LoCon. ``up = U·S``, ``down = Vh`` with both
clamped to the *clamp_quantile* of their absolute values, and ``alpha = rank`` (scale 1). A text encoder
whose largest change is at most *min_diff* is treated as unchanged and left out. Optionally the rank is
chosen per module from its singular values (*dynamic*: sv_ratio / sv_fro / sv_cumulative, *rank* the upper
limit). SD1, SD2 and SDXL; single files or diffusers folders, mixed freely; one module in memory at a time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from patina.core.errors import PatinaError
from patina.core.lora.checkpoint_map import ModelWeights
from patina.core.lora.toolkit import (
    CancelCheck,
    ModuleReport,
    Progress,
    Report,
    Steps,
    check_dynamic,
    check_output,
    choose_rank,
    pick_device,
    retained,
    svd_full,
)


def _quantile(x, q: float) -> float:
    import torch

    x = x.detach().abs().flatten().float().cpu()
    if x.numel() <= (1 << 24) - 1:
        return float(torch.quantile(x, q))
    import numpy as np

    return float(np.quantile(x.numpy(), q))


def extract(base: str | os.PathLike, tuned: str | os.PathLike, dst: str | os.PathLike, *, rank: int = 32,
            conv_rank: int = 0, dynamic: str | None = None, dynamic_param: float | None = None,
            clamp_quantile: float = 0.99, min_diff: float = 0.01, precision: str = "fp16",
            device: str | None = "auto", family: str | None = None, config_dir: str | os.PathLike | None = None,
            progress: Progress | None = None, cancelled: CancelCheck | None = None) -> Report:
    """Write *dst*, a kohya LoRA (LoCon with *conv_rank*) approximating *tuned* − *base* (module docstring).
    *config_dir* replaces the shipped diffusers configs used to name a single file's layers (tests)."""
    import torch

    from patina.core.lora.kohya_format import build_metadata, save_lora

    t0 = time.perf_counter()
    check_dynamic(dynamic, dynamic_param)
    rank, conv_rank = int(rank), int(conv_rank or 0)
    if rank < 1 or conv_rank < 0:
        raise PatinaError("The rank must be at least 1 (and the conv rank 0 or more).")
    if not 0 < clamp_quantile <= 1:
        raise PatinaError(f"clamp_quantile must be in (0, 1]; got {clamp_quantile}.")
    dst = check_output(dst, [base, tuned])
    dev = pick_device(device)
    mb = ModelWeights(base, family=family, config_dir=config_dir, what="base model")
    mt = ModelWeights(tuned, family=family, config_dir=config_dir, what="fine-tuned model")
    try:
        if mb.family != mt.family:
            raise PatinaError(f"The base model {mb.path.name} is {mb.family.upper()} but the fine-tuned model "
                              f"{mt.path.name} is {mt.family.upper()}; both must be the same family.")
        chosen = []
        for ref in mb.modules:
            if ref.part == "unet" and ref.path.split(".")[0] in ("conv_in", "conv_out", "time_embedding",
                                                                   "add_embedding"):
                continue
            if not ref.in_attention and conv_rank == 0:
                continue
            other = mt.by_name.get(ref.name)
            if other is None:
                raise PatinaError(f"{mt.path.name} has no layer {ref.name}; it is not a fine-tune of {mb.path.name}.")
            if other.shape != ref.shape:
                raise PatinaError(f"Layer {ref.name} is {ref.shape} in {mb.path.name} but {other.shape} in "
                                  f"{mt.path.name}; the models do not match.")
            chosen.append((ref, other))
        steps = Steps(progress, cancelled, len(chosen))
        sd: dict = {}
        report = Report("extract", dst)
        te_max: dict[str, float] = {}
        te_names: dict[str, list[str]] = {}
        for ref, other in chosen:
            steps.check()
            diff = (mt.read(other) - mb.read(ref)).to(dev)
            biggest = float(diff.abs().max())
            if ref.part != "unet":
                te_max[ref.part] = max(te_max.get(ref.part, 0.0), biggest)
                te_names.setdefault(ref.part, []).append(ref.name)
            cap = conv_rank if ref.kind == "conv3x3" else rank
            mat = diff.reshape(ref.shape[0], -1)
            cap = min(cap, *mat.shape)
            u, s, vh = svd_full(mat, dev)
            k = choose_rank(s, cap, dynamic, dynamic_param)
            up = u[:, :k] * s[:k][None, :]
            down = vh[:k]
            if clamp_quantile < 1:
                hi = _quantile(torch.cat([up.flatten(), down.flatten()]), clamp_quantile)
                up, down = up.clamp(-hi, hi), down.clamp(-hi, hi)
            if len(ref.shape) == 4:
                up = up.reshape(ref.shape[0], k, 1, 1)
                down = down.reshape(k, *ref.shape[1:])
            sd[f"{ref.name}.lora_down.weight"] = down.cpu().contiguous()
            sd[f"{ref.name}.lora_up.weight"] = up.cpu().contiguous()
            sd[f"{ref.name}.alpha"] = torch.tensor(float(k))
            report.modules.append(ModuleReport(ref.name, ref.kind, min(ref.shape[0], mat.shape[1]), k, retained(s, k)))
            steps.step(ref.name)
        for part, biggest in te_max.items():
            if biggest <= min_diff:
                for n in te_names[part]:
                    for suffix in (".lora_down.weight", ".lora_up.weight", ".alpha"):
                        sd.pop(n + suffix, None)
                dropped = set(te_names[part])
                report.modules = [m for m in report.modules if m.name not in dropped]
                report.warnings.append(f"text encoder {part[-1]} is unchanged (largest difference {biggest:.3g} ≤ "
                                       f"min_diff {min_diff}); left out of the LoRA")
        if not report.modules:
            raise PatinaError(f"{mt.path.name} and {mb.path.name} do not differ in any layer a LoRA covers; "
                              "nothing to extract.")
        values = {"network_dim": rank, "network_alpha": rank, "output_name": Path(dst).stem}
        net_args = {"conv_dim": str(conv_rank), "conv_alpha": str(float(conv_rank))} if conv_rank else {}
        md = build_metadata(values=values, family=mb.family, v_prediction=mb.v_prediction,
                            base_model_name=mb.path.name, network_args=net_args)
        md["ss_training_comment"] = (f"extracted by Patina from {mt.path.name} − {mb.path.name}, rank {rank}"
                                     + (f", conv rank {conv_rank}" if conv_rank else "")
                                     + (f", dynamic {dynamic}: {dynamic_param}" if dynamic else ""))
        if dynamic:
            md["ss_network_dim"] = md["ss_network_alpha"] = "Dynamic"
        md["patina_extract"] = json.dumps({"base": mb.path.name, "tuned": mt.path.name, "rank": rank,
                                           "conv_rank": conv_rank, "dynamic": dynamic, "dynamic_param": dynamic_param,
                                           "clamp_quantile": clamp_quantile, "min_diff": min_diff})
        steps.check()
        save_lora(dst, sd, md, precision=precision)
    finally:
        mb.close()
        mt.close()
    report.seconds = time.perf_counter() - t0
    return report
