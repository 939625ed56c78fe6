"""Merge several LoRA/LoCon files (each with a weight) into one LoRA.

* ``mode="concat"``: the ranks are stacked; module by module ``up = [w₁·s₁·up₁ | w₂·s₂·up₂ | …]``,
  ``down = [down₁; down₂; …]`` and ``alpha`` = the new rank, so ``ΔW = Σ wᵢ ΔWᵢ`` exactly (the output rank
  is the sum of the input ranks of that module).
* ``mode="svd"``: the same sum, re-factored by SVD to *rank* (3×3 conv modules to *conv_rank*), alpha = rank.

Modules present in only some inputs are taken from those. Inputs for different model families are refused.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from patina.core.errors import PatinaError
from patina.core.lora.toolkit import (
    CancelCheck,
    LoraReader,
    ModuleReport,
    Progress,
    Report,
    Steps,
    add_comment,
    check_output,
    lora_family_hint,
    pick_device,
    retained,
    svd_of_product,
    to_lora,
    update_dims,
)

MODES = ("concat", "svd")
_CARRIED = ("ss_base_model_version", "ss_v2", "ss_v_parameterization", "ss_resolution", "ss_sd_model_name",
            "ss_clip_skip", "modelspec.sai_model_spec", "modelspec.architecture", "modelspec.implementation",
            "modelspec.resolution", "modelspec.prediction_type", "modelspec.encoder_layer")


def merge(inputs: Sequence[tuple[str | os.PathLike, float]], dst: str | os.PathLike, *, mode: str = "concat",
          rank: int | None = None, conv_rank: int | None = None, precision: str = "fp16",
          device: str | None = "auto", progress: Progress | None = None,
          cancelled: CancelCheck | None = None) -> Report:
    """Write *dst*, the weighted sum of the LoRAs ``[(path, weight), ...]`` (see the module docstring)."""
    import torch

    from patina.core.lora.kohya_format import save_lora

    t0 = time.perf_counter()
    if mode not in MODES:
        raise PatinaError(f"Unknown merge mode {mode!r}; use concat or svd.")
    if not inputs:
        raise PatinaError("Give at least one LoRA to merge.")
    if mode == "svd":
        if not rank or int(rank) < 1:
            raise PatinaError("Merging with SVD needs a rank (--rank) of at least 1.")
        rank = int(rank)
        conv_rank = int(conv_rank) if conv_rank else rank
    dst = check_output(dst, [p for p, _ in inputs])
    dev = pick_device(device)
    readers = [LoraReader(p) for p, _ in inputs]
    try:
        fams = {r.path.name: lora_family_hint(r.names, r.metadata) for r in readers}
        known = {f for f in fams.values() if f}
        if len(known) > 1:
            raise PatinaError("These LoRAs are for different model families (" +
                              ", ".join(f"{n}: {f}" for n, f in fams.items() if f) + "); they cannot be merged.")
        names: list[str] = []
        for r in readers:
            names.extend(n for n in r.names if n not in names)
        steps = Steps(progress, cancelled, len(names))
        sd: dict = {}
        written: dict[str, tuple[str, int, float]] = {}
        report = Report(f"merge ({mode})", Path(dst))
        for name in names:
            steps.check()
            ups, downs, shape, kind = [], [], None, None
            for r, (_, w) in zip(readers, inputs):
                if name not in r.names:
                    continue
                m = r.module(name)
                if shape is not None and m.weight_shape != shape:
                    raise PatinaError(f"Module {name} has shape {m.weight_shape} in {r.path.name} but {shape} in "
                                      "another input: the LoRAs are for different models and cannot be merged.")
                shape, kind = m.weight_shape, m.kind
                a, b = m.factors()
                ups.append(a * float(w))
                downs.append(b)
            a = torch.cat(ups, dim=1)
            b = torch.cat(downs, dim=0)
            total = int(a.shape[1])
            if mode == "concat":
                k = total
                up, down = a, b
                if len(shape) == 4:
                    up = up.reshape(shape[0], k, 1, 1)
                    down = down.reshape(k, *shape[1:])
                kept = 1.0
            else:
                u, s, vh = svd_of_product(a, b, dev)
                k = max(1, min(conv_rank if kind == "conv3x3" else rank, int(s.numel())))
                up, down = to_lora(u, s, vh, k, shape, 1.0)
                kept = retained(s, k)
            sd[f"{name}.lora_down.weight"] = down.contiguous()
            sd[f"{name}.lora_up.weight"] = up.contiguous()
            sd[f"{name}.alpha"] = torch.tensor(float(k))
            written[name] = (kind, k, float(k))
            report.modules.append(ModuleReport(name, kind, total, k, kept))
            steps.step(name)
        first = readers[0].metadata
        md = {k: first[k] for k in _CARRIED if k in first}
    finally:
        for r in readers:
            r.close()
    md["ss_network_module"] = "networks.lora"
    update_dims(md, written, True)
    sources = [f"{Path(p).name}×{w:g}" for p, w in inputs]
    add_comment(md, f"merged ({mode}) by Patina from " + ", ".join(sources))
    md["ss_output_name"] = Path(dst).stem
    md["patina_merge"] = json.dumps({"mode": mode, "rank": rank, "conv_rank": conv_rank,
                                     "inputs": [[Path(p).name, float(w)] for p, w in inputs]})
    steps.check()
    save_lora(dst, sd, md, precision=precision)
    report.seconds = time.perf_counter() - t0
    return report
