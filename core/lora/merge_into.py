"""Bake one or more LoRA/LoCon files (each with a weight) into a base checkpoint.

``W' = W + Σ weightᵢ · ΔWᵢ`` for every module the LoRAs adapt (UNet and text encoders; the fused OpenCLIP
``in_proj`` of SD2 / SDXL's second encoder gets its q/k/v row blocks). The output keeps the input's layout:
a single-file checkpoint gives a single-file ``.safetensors`` with the same (LDM/SGM) keys, a diffusers folder
gives a diffusers folder (configs and tokenizers copied). Every floating-point tensor is cast to *dtype*.
Tensors are read and written one at a time (the output file is streamed), so memory stays at about one
tensor plus the LoRAs; a pickled ``.ckpt`` base is read whole (it has no index) but still written as
``.safetensors``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from patina.core.errors import PatinaError
from patina.core.lora.checkpoint_map import COMPONENTS, ModelWeights
from patina.core.lora.toolkit import (
    CancelCheck,
    LoraReader,
    ModuleReport,
    Progress,
    Report,
    Steps,
    atomic_folder,
    check_output,
    lora_family_hint,
    write_safetensors_stream,
)

DTYPES = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp32": "float32", "float": "float32", "float32": "float32"}


def _dtype(name: str):
    import torch

    key = DTYPES.get(str(name).lower())
    if key is None:
        raise PatinaError(f"Unknown dtype {name!r}: use fp16, bf16 or fp32.")
    return getattr(torch, key)


def merge_into(base: str | os.PathLike, loras: Sequence[tuple[str | os.PathLike, float]], dst: str | os.PathLike, *,
               dtype: str = "fp16", family: str | None = None, config_dir: str | os.PathLike | None = None,
               progress: Progress | None = None, cancelled: CancelCheck | None = None) -> Report:
    """Write *dst*: the base model *base* with ``[(lora path, weight), ...]`` merged in (module docstring).
    *dst* is a ``.safetensors`` file for a single-file base and a folder for a diffusers folder base.
    *config_dir* replaces the shipped diffusers configs used to name a single file's layers (tests)."""
    import torch

    t0 = time.perf_counter()
    if not loras:
        raise PatinaError("Give at least one LoRA to merge into the model.")
    out_dtype = _dtype(dtype)
    base_p = Path(base).expanduser()
    folder = base_p.is_dir()
    dst = check_output(dst, [base, *[p for p, _ in loras]], folder=folder)
    if folder and dst.exists() and not dst.is_dir():
        raise PatinaError(f"The base model is a diffusers folder, so the output must be a folder; {dst} is a file.")
    mw = ModelWeights(base_p, family=family, config_dir=config_dir)
    readers = [LoraReader(p) for p, _ in loras]
    try:
        # which LoRA modules go where
        patches: dict[tuple[Path, str], list] = {}
        report = Report("merge-into", dst)
        for r, (_, w) in zip(readers, loras):
            hint = lora_family_hint(r.names, r.metadata)
            if hint and (hint == "sdxl") != (mw.family == "sdxl"):
                raise PatinaError(f"{r.path.name} is a LoRA for {hint.upper()}, but {base_p.name} is "
                                  f"{mw.family.upper()}; choose a LoRA made for this model.")
            unknown = [n for n in r.names if n not in mw.by_name]
            if unknown:
                raise PatinaError(f"{len(unknown)} of {len(r.names)} modules of {r.path.name} do not exist in "
                                  f"{base_p.name} ({mw.family.upper()}), e.g. {unknown[0]}; is the LoRA for another "
                                  "model family?")
            for n in r.names:
                ref = mw.by_name[n]
                m = r.module(n)
                numel = 1
                for x in ref.shape:
                    numel *= x
                if m.up.shape[0] * (m.down[0].numel()) != numel:
                    raise PatinaError(f"Module {n} of {r.path.name} has shape {m.weight_shape}, but the model's layer "
                                      f"is {ref.shape}; the LoRA is for another model.")
                patches.setdefault((ref.file, ref.key), []).append((r, n, float(w), ref))
                report.modules.append(ModuleReport(n, m.kind, m.rank, m.rank, note=f"{r.path.name} ×{w:g}"))

        def produce_for(file: Path):
            def produce(key: str) -> "torch.Tensor":
                t = mw.tensor(file, key)
                todo = patches.get((file, key))
                if todo:
                    t = t.float().clone()
                    for r, n, w, ref in todo:
                        delta = r.module(n).delta().reshape(ref.shape) * w
                        if ref.rows is not None:
                            t[ref.rows[0]:ref.rows[1]] += delta.reshape(t[ref.rows[0]:ref.rows[1]].shape)
                        else:
                            t += delta.reshape(t.shape)
                return t.to(out_dtype) if t.is_floating_point() else t
            return produce

        def entries_for(file: Path):
            if mw._pickle is not None:
                items = [(k, v.dtype, tuple(v.shape)) for k, v in mw._pickle.items()]
            else:
                h = mw.handle(file)
                items = []
                for k in h.keys():
                    sl = h.get_slice(k)
                    dt = _st_to_torch(sl.get_dtype())
                    items.append((k, dt, tuple(sl.get_shape())))
            return [(k, out_dtype if dt.is_floating_point else dt, shape) for k, dt, shape in items]

        source_meta = {}
        extra_md = {"patina_merged_loras": json.dumps([[Path(p).name, float(w)] for p, w in loras])}
        if not folder:
            entries = entries_for(base_p)
            if mw._pickle is None:
                source_meta = dict(mw.handle(base_p).metadata() or {})
            steps = Steps(progress, cancelled, len(entries))
            write_safetensors_stream(dst, entries, produce_for(base_p), {**source_meta, **extra_md}, steps)
        else:
            files = [f for f in base_p.rglob("*") if f.is_file()]
            weight_files = [f for f in files if f.suffix == ".safetensors"
                            and f.relative_to(base_p).parts[0] in (*COMPONENTS.values(), "vae")]
            total = 0
            plans = {}
            for f in weight_files:
                plans[f] = entries_for(f)
                total += len(plans[f])
            steps = Steps(progress, cancelled, total)
            with atomic_folder(dst) as tmp:
                for f in files:
                    steps.check()
                    rel = f.relative_to(base_p)
                    target = tmp / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if f in plans:
                        md = dict(mw.handle(f).metadata() or {})
                        write_safetensors_stream(target, plans[f], produce_for(f), md or None, steps)
                    else:
                        shutil.copy2(f, target)
    finally:
        for r in readers:
            r.close()
        mw.close()
    report.extra["modules merged"] = len(report.modules)
    report.extra["dtype"] = str(out_dtype).replace("torch.", "")
    report.seconds = time.perf_counter() - t0
    return report


def _st_to_torch(name: str):
    import torch

    table = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
    if name not in table:
        raise PatinaError(f"The checkpoint holds tensors of type {name}, which this tool cannot write.")
    return table[name]
