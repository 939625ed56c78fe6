"""Resize a LoRA/LoCon to a lower rank with an SVD of each module's weight change (3×3 conv modules too).

Fixed rank, or a rank per module chosen from its singular values (``sv_ratio``, ``sv_fro``,
``sv_cumulative``, as kohya's resize offers; the rank given is then the upper limit). The new ``alpha`` keeps
each module's scale (``new alpha = old alpha / old rank × new rank``, kohya's convention), so the effective
weight is the best rank-k approximation of the original one. Tensors are read one module at a time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from patina.core.errors import PatinaError
from patina.core.lora.toolkit import (
    CancelCheck,
    LoraReader,
    ModuleReport,
    Progress,
    Report,
    Steps,
    add_comment,
    carried_metadata,
    check_dynamic,
    check_output,
    choose_rank,
    pick_device,
    retained,
    svd_of_product,
    to_lora,
    update_dims,
)


def resize(src: str | os.PathLike, dst: str | os.PathLike, *, rank: int, conv_rank: int | None = None,
           dynamic: str | None = None, dynamic_param: float | None = None, precision: str = "fp16",
           device: str | None = "auto", progress: Progress | None = None,
           cancelled: CancelCheck | None = None) -> Report:
    """Write *dst*, a copy of the LoRA *src* with each module's rank lowered to *rank* (3×3 conv modules to
    *conv_rank*; without it to *rank*, or their own rank when that is lower); with *dynamic* the rank of each module is chosen by that method and
    *dynamic_param* and *rank* is its upper limit. A module whose rank is already ≤ the target keeps it
    (re-factored). Raises :class:`PatinaError` when *rank* exceeds every module's rank (nothing to do)."""
    from patina.core.lora.kohya_format import save_lora

    t0 = time.perf_counter()
    check_dynamic(dynamic, dynamic_param)
    rank = int(rank)
    if rank < 1 or (conv_rank is not None and int(conv_rank) < 1):
        raise PatinaError("The new rank must be at least 1.")
    dst = check_output(dst, [src])
    dev = pick_device(device)
    with LoraReader(src) as reader:
        lin_dim, conv_dim = reader.dims()
        # without a conv rank, 3x3 modules go to the new rank, or keep theirs when it is already lower
        conv_rank = int(conv_rank) if conv_rank else (min(rank, conv_dim) if conv_dim else rank)
        if dynamic is None:
            if lin_dim and rank > lin_dim:
                raise PatinaError(f"The new rank {rank} is larger than the rank of {reader.path.name} ({lin_dim}); "
                                  "resizing only lowers the rank.")
            if conv_dim and conv_rank > conv_dim:
                raise PatinaError(f"The new conv rank {conv_rank} is larger than the 3×3 conv rank of "
                                  f"{reader.path.name} ({conv_dim}).")
        steps = Steps(progress, cancelled, len(reader.names))
        sd: dict = {}
        written: dict[str, tuple[str, int, float]] = {}
        report = Report("resize", Path(dst))
        for name in reader.names:
            steps.check()
            m = reader.module(name)
            a, b = m.factors()
            u, s, vh = svd_of_product(a, b, dev)
            cap = conv_rank if m.kind == "conv3x3" else rank
            k = choose_rank(s, min(cap, m.rank), dynamic, dynamic_param)
            new_alpha = m.scale * k
            up, down = to_lora(u, s, vh, k, m.weight_shape, m.scale)
            import torch

            sd[f"{name}.lora_down.weight"] = down
            sd[f"{name}.lora_up.weight"] = up
            sd[f"{name}.alpha"] = torch.tensor(new_alpha)
            written[name] = (m.kind, k, new_alpha)
            report.modules.append(ModuleReport(name, m.kind, m.rank, k, retained(s, k)))
            steps.step(name)
        md = carried_metadata(reader.metadata)
    update_dims(md, written, dynamic is not None)
    how = f"dynamic resize with {dynamic}: {dynamic_param} (max rank {rank})" if dynamic else f"resized to rank {rank}"
    if conv_dim and dynamic is None and conv_rank != rank:
        how += f", conv rank {conv_rank}"
    add_comment(md, f"{how} from {lin_dim or conv_dim} by Patina")
    md["patina_resize"] = json.dumps({"from_dim": lin_dim, "from_conv_dim": conv_dim, "rank": rank,
                                      "conv_rank": conv_rank, "dynamic": dynamic, "dynamic_param": dynamic_param,
                                      "source": Path(src).name})
    steps.check()
    save_lora(dst, sd, md, precision=precision)
    report.seconds = time.perf_counter() - t0
    return report
