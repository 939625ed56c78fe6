"""Verify LoRA: what a LoRA file holds and whether A1111, Forge, ComfyUI, InvokeAI and diffusers will load it.

:func:`verify_lora` reads a file (and optionally the base model it is meant for) into a :class:`VerifyReport`;
the loader-compat judgement follows ``shared/reference/lora-format.md``; :func:`format_verify_report` writes
the report as text. Reading and saving the files is :mod:`patina.core.lora.kohya_format`.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from patina.core.lora.kohya_format import KOHYA_PREFIXES, read_lora, tensor_data_hash
from patina.core.models.families import FAMILY_BY_CONTEXT_WIDTH, FAMILY_LABELS

_TE_RE = re.compile(r"^lora_te[12]?_text_model_encoder_layers_(\d+)_(self_attn_(q|k|v|out)_proj|mlp_fc[12])$")
_TE_FLAT_RE = re.compile(r"^lora_te[12]?_encoder_layers_(\d+)_")
_SGM_RE = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks|out|time_embed|label_emb)_")
_DIFFUSERS_UNET_RE = re.compile(r"^lora_unet_(down_blocks|mid_block|up_blocks|conv_in|conv_out|time_embedding|add_embedding)_")
_TOP_LEVEL_RE = re.compile(r"^lora_unet_(conv_in|conv_out|time_embedding|add_embedding|input_blocks_0_0|out_2|time_embed|label_emb)(_|$)")

CLIENTS = ("A1111", "Forge", "ComfyUI", "InvokeAI", "diffusers")


@dataclass
class ModuleReport:
    name: str
    part: str  # unet / te1 / te2 / other
    kind: str  # linear / conv1x1 / conv3x3 / loha / lokr / other
    rank: int | None
    alpha: float | None
    tensors: list[str]
    untrained: bool = False  # lora_up all zero (LoHa/LoKr: a factor all zero)
    nonfinite: bool = False  # NaN or inf anywhere


@dataclass
class VerifyReport:
    path: str
    file_size: int
    num_tensors: int
    format: str  # "kohya", "diffusers-peft", "unknown"
    family: str | None  # sd1 / sd2 / sdxl / None (unknown)
    family_source: str
    modules: list[ModuleReport]
    counts: dict[str, int]  # unet / te1 / te2 / other
    ranks: list[int]
    alphas: list[float]
    conv3x3_modules: int
    conv1x1_modules: int
    unet_naming: str  # "diffusers", "sgm", "mixed", "none"
    te_naming: str  # "text_model", "flat (no text_model_)", "mixed", "none"
    metadata: dict[str, str]
    metadata_summary: dict[str, str]
    untrained: list[str]
    nonfinite: list[str]
    compat: dict[str, tuple[bool, list[str]]]  # client -> (loads correctly, reasons)
    warnings: list[str] = field(default_factory=list)
    hash_ok: bool | None = None
    broken: list[str] = field(default_factory=list)   # modules whose tensors do not fit together
    base_model: str | None = None                     # the model the shapes were checked against
    mismatched: list[str] = field(default_factory=list)  # modules that do not fit the base model's layers
    not_in_model: list[str] = field(default_factory=list)  # modules the base model has no layer for
    network_type: str = ""  # LoRA / LoCon / LyCORIS LoHa / LyCORIS LoKr / mixed (...) / unknown

    @property
    def ok(self) -> bool:
        return (not self.nonfinite and not self.broken and not self.mismatched
                and all(ok for ok, _ in self.compat.values()))


def _module_kind(tensors: Mapping[str, Any]) -> str:
    if "hada_w1_a" in tensors:
        return "loha"
    if any(k.startswith("lokr_") for k in tensors):
        return "lokr"
    down = tensors.get("lora_down.weight")
    if down is None:
        down = tensors.get("lora_A.weight")
    if down is None:
        return "other"
    if down.ndim == 4:
        return "conv1x1" if tuple(down.shape[2:]) == (1, 1) else "conv3x3"
    return "linear"


_TYPE_LABELS = {"loha": "LyCORIS LoHa", "lokr": "LyCORIS LoKr"}


def _network_type(modules: list["ModuleReport"]) -> str:
    """What kind of network the modules make: LoRA, LoCon (LoRA with 3×3 convs), LyCORIS LoHa / LoKr."""
    kinds = {m.kind for m in modules}
    types = set()
    for k in kinds:
        if k in _TYPE_LABELS:
            types.add(_TYPE_LABELS[k])
        elif k in ("linear", "conv1x1", "conv3x3"):
            types.add("LoCon" if "conv3x3" in kinds else "LoRA")
    if not types:
        return "unknown"
    if len(types) == 1:
        return types.pop()
    return "mixed (" + ", ".join(sorted(types)) + ")"


def _rank_of(tensors: Mapping[str, Any]) -> int | None:
    """The rank a module's scale divides by (lora_down, hada_w1_b or a LoKr _b factor); None for a LoKr
    module with two full factors (scale 1 in every loader) and other kinds."""
    for key in ("lora_down.weight", "lora_A.weight", "hada_w1_b", "lokr_w1_b", "lokr_w2_b"):
        t = tensors.get(key)
        if t is not None and getattr(t, "ndim", 0) >= 1:
            return int(t.shape[0])
    return None


def _part(name: str) -> str:
    if name.startswith("lora_unet_") or name.startswith("unet.") or name.startswith("lycoris_"):
        return "unet"
    if name.startswith(("lora_te_", "lora_te1_", "text_encoder.")):
        return "te1"
    if name.startswith(("lora_te2_", "text_encoder_2.")):
        return "te2"
    return "other"


def _group_modules(sd: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """Group tensors by module. kohya names split at the first '.', PEFT/diffusers names before the
    ``lora_A``/``lora_B`` part."""
    if any(k.startswith(KOHYA_PREFIXES) or k.startswith("lycoris_") for k in sd):
        groups: dict[str, dict[str, Any]] = {}
        for k, v in sd.items():
            name, _, suffix = k.partition(".")
            groups.setdefault(name, {})[suffix] = v
        return "kohya", groups
    groups = {}
    fmt = "unknown"
    for k, v in sd.items():
        m = re.match(r"^(.*)\.(lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)\.weight$", k)
        if m:
            fmt = "diffusers-peft"
            suffix = {"lora_A": "lora_down.weight", "lora.down": "lora_down.weight",
                      "lora_linear_layer.down": "lora_down.weight"}.get(m[2], "lora_up.weight")
            groups.setdefault(m[1], {})[suffix] = v
        else:
            name, _, suffix = k.rpartition(".")
            groups.setdefault(name or k, {})[suffix] = v
    return fmt, groups


def _detect_family(metadata: Mapping[str, str], groups: Mapping[str, Mapping[str, Any]], unet_naming: str
                   ) -> tuple[str | None, str]:
    version = metadata.get("ss_base_model_version", "")
    arch = metadata.get("modelspec.architecture", "")
    if version.startswith("sdxl") or arch.startswith("stable-diffusion-xl"):
        return "sdxl", "metadata"
    if version.startswith("sd_v2") or metadata.get("ss_v2") == "True" or arch.startswith("stable-diffusion-v2"):
        return "sd2", "metadata"
    if version.startswith("sd_v1") or arch.startswith("stable-diffusion-v1"):
        return "sd1", "metadata"
    if any(n.startswith("lora_te2_") for n in groups) or unet_naming == "sgm":
        return "sdxl", "key names"
    # InvokeAI's probe: the input width of a cross-attention to_k is the context width.
    for n, t in groups.items():
        if "attn2_to_k" in n and "lora_down.weight" in t:
            width = int(t["lora_down.weight"].shape[1])
            guess = FAMILY_BY_CONTEXT_WIDTH.get(width)
            if guess:
                return guess, f"cross-attention width {width}"
    if any(n.startswith(("lora_te_", "lora_unet_")) for n in groups):
        return None, "unknown (no metadata; tiny or unusual model)"
    return None, "unknown"


def _metadata_summary(md: Mapping[str, str]) -> dict[str, str]:
    keys = ("ss_output_name", "modelspec.title", "ss_base_model_version", "modelspec.architecture",
            "ss_sd_model_name", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
            "ss_resolution", "ss_num_train_images", "ss_num_epochs", "ss_epoch", "ss_steps", "ss_learning_rate",
            "ss_unet_lr", "ss_text_encoder_lr", "ss_optimizer", "ss_clip_skip", "ss_training_started_at",
            "sshs_model_hash", "modelspec.prediction_type")
    out = {k: md[k] for k in keys if k in md}
    if "ss_tag_frequency" in md:
        try:
            freq = json.loads(md["ss_tag_frequency"])
            tags: dict[str, int] = {}
            for per_dir in freq.values():
                for tag, count in (per_dir or {}).items():
                    tags[tag] = tags.get(tag, 0) + int(count)
            top = sorted(tags.items(), key=lambda kv: -kv[1])[:8]
            out["top tags"] = ", ".join(f"{t} ({c})" for t, c in top) or "(none)"
        except (ValueError, AttributeError, TypeError):
            out["top tags"] = "(ss_tag_frequency is not valid JSON)"
    return out


def _shape(t) -> str:
    return "×".join(str(int(x)) for x in t.shape) or "scalar"


def module_shape_problem(tensors: Mapping[str, Any]) -> str | None:
    """Why the tensors of one LoRA/LoCon module cannot work together, or None when they fit:
    lora_down is rank×in (×kh×kw for a conv), lora_up is out×rank (×1×1), alpha is one number, and with
    Tucker's lora_mid (rank×rank×kh×kw) lora_down is rank×in×1×1."""
    down, up = tensors.get("lora_down.weight"), tensors.get("lora_up.weight")
    mid, alpha = tensors.get("lora_mid.weight"), tensors.get("alpha")
    if alpha is not None and alpha.numel() != 1:
        return f"alpha holds {alpha.numel()} values ({_shape(alpha)}); it must be a single number"
    if down is None and up is None:
        if "hada_w1_a" in tensors or any(k.startswith("hada_") for k in tensors):
            return _loha_problem(tensors)
        if any(k.startswith("lokr_") for k in tensors):
            return _lokr_problem(tensors)
        return None  # other kinds: not checked here
    if down is None or up is None:
        have, lack = ("lora_down", "lora_up") if up is None else ("lora_up", "lora_down")
        return f"has {have} but no {lack}"
    if down.ndim not in (2, 4) or up.ndim != down.ndim:
        return (f"lora_down {_shape(down)} and lora_up {_shape(up)}: both must be 2-D (linear layer) or both 4-D "
                "(convolution)")
    rank = int(down.shape[0])
    if rank == 0:
        return f"lora_down {_shape(down)} has rank 0"
    if int(up.shape[1]) != rank:
        return (f"lora_down {_shape(down)} has rank {rank} but lora_up {_shape(up)} expects rank {int(up.shape[1])} "
                "(lora_down must be rank×in, lora_up out×rank)")
    if up.ndim == 4 and tuple(up.shape[2:]) != (1, 1):
        return f"lora_up {_shape(up)} of a convolution must have a 1×1 kernel"
    if mid is not None:
        if mid.ndim != 4 or tuple(mid.shape[:2]) != (rank, rank):
            return f"lora_mid {_shape(mid)} must be {rank}×{rank}×kh×kw for rank {rank}"
        if down.ndim != 4 or tuple(down.shape[2:]) != (1, 1):
            return f"with lora_mid, lora_down {_shape(down)} must have a 1×1 kernel"
    return None


def _loha_problem(t: Mapping[str, Any]) -> str | None:
    need = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    lacking = [k for k in need if k not in t]
    if lacking:
        return f"LoHa module lacks {', '.join(lacking)} (all four hada_ matrices are needed)"
    if "hada_t1" in t or "hada_t2" in t:
        return None  # Tucker layout: not checked here
    w1a, w1b, w2a, w2b = (t[k] for k in need)
    if any(x.ndim != 2 for x in (w1a, w1b, w2a, w2b)):
        return "LoHa hada_w* matrices must be 2-D without hada_t1/hada_t2"
    if w1a.shape[1] != w1b.shape[0] or w2a.shape[1] != w2b.shape[0]:
        return (f"hada_w1_a {_shape(w1a)} / hada_w1_b {_shape(w1b)} or hada_w2_a {_shape(w2a)} / hada_w2_b "
                f"{_shape(w2b)} do not share a rank")
    if w1a.shape[0] != w2a.shape[0] or w1b.shape[1] != w2b.shape[1]:
        return f"the two LoHa products have different shapes ({w1a.shape[0]}×{w1b.shape[1]} vs {w2a.shape[0]}×{w2b.shape[1]})"
    return None


def _lokr_factor(t: Mapping[str, Any], which: str):
    """(rows, other dims product) of LoKr factor *which* ("w1"/"w2"), or a problem string."""
    full, a, b = t.get(f"lokr_{which}"), t.get(f"lokr_{which}_a"), t.get(f"lokr_{which}_b")
    if full is not None:
        return int(full.shape[0]), int(full.numel() // max(int(full.shape[0]), 1))
    if a is None or b is None:
        return f"LoKr module needs lokr_{which} or both lokr_{which}_a and lokr_{which}_b"
    if which == "w2" and "lokr_t2" in t:
        return None
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        return f"lokr_{which}_a {_shape(a)} and lokr_{which}_b {_shape(b)} do not share a rank"
    return int(a.shape[0]), int(b.shape[1])


def _lokr_problem(t: Mapping[str, Any]) -> str | None:
    for which in ("w1", "w2"):
        f = _lokr_factor(t, which)
        if isinstance(f, str):
            return f
    return None


def _lycoris_out_in(t: Mapping[str, Any]) -> tuple[int, int] | None:
    """(out, in·kh·kw) of the ΔW a LoHa/LoKr module makes, or None when it cannot be told."""
    if "hada_w1_a" in t and "hada_w1_b" in t and "hada_t1" not in t:
        return int(t["hada_w1_a"].shape[0]), int(t["hada_w1_b"].shape[1])
    if any(k.startswith("lokr_") for k in t):
        f1, f2 = _lokr_factor(t, "w1"), _lokr_factor(t, "w2")
        if isinstance(f1, tuple) and isinstance(f2, tuple):
            return f1[0] * f2[0], f1[1] * f2[1]
    return None


def _base_shape_problem(tensors: Mapping[str, Any], kind: str, shape: tuple[int, ...]) -> str | None:
    """Why a module does not fit the base model's layer of weight *shape* (out, in[, kh, kw])."""
    down, up, mid = tensors.get("lora_down.weight"), tensors.get("lora_up.weight"), tensors.get("lora_mid.weight")
    if down is None or up is None:
        dims = _lycoris_out_in(tensors)
        if dims is None:
            return None
        want = (shape[0], int(math.prod(shape[1:])))
        if dims != want:
            return (f"the LyCORIS factors make a {dims[0]}×{dims[1]} update, the model's layer is "
                    f"{'×'.join(map(str, shape))} ({want[0]}×{want[1]})")
        return None
    out_f, in_f = shape[0], shape[1]
    layer = f"the model's layer is {'×'.join(map(str, shape))}"
    if int(down.shape[1]) != in_f:
        return f"lora_down {_shape(down)} takes {int(down.shape[1])} inputs, {layer} ({in_f} inputs)"
    if int(up.shape[0]) != out_f:
        return f"lora_up {_shape(up)} gives {int(up.shape[0])} outputs, {layer} ({out_f} outputs)"
    kernel = tuple(shape[2:]) if len(shape) == 4 else ()
    got = tuple((mid if mid is not None else down).shape[2:]) if down.ndim == 4 else ()
    if kernel and got and got != kernel:
        return f"kernel {'×'.join(map(str, got))}, {layer}"
    if not kernel and got and got != (1, 1):
        return f"lora_down {_shape(down)} is a convolution, {layer} (a linear layer)"
    return None


def base_model_shapes(model: str | os.PathLike) -> tuple[str, dict[str, tuple[str, tuple[int, ...]]]]:
    """(family, {kohya module name: (kind, weight shape)}) of a base model, for :func:`verify_lora`."""
    from patina.core.models.loading import load_base_model
    from patina.core.lora.targets import module_shapes

    base = load_base_model(model)
    return base.family, module_shapes(base.unet, base.text_encoders, base.family)


def verify_lora(path: str | os.PathLike, model: str | os.PathLike | None = None) -> VerifyReport:
    """Inspect a LoRA file like kohya's "Verify LoRA": modules per part, ranks, alphas, conv modules,
    untrained (all-zero lora_up) and NaN/inf modules, metadata, and which loaders the key format suits.

    The tensors of each module must fit together (a broken file is reported as broken for every loader);
    with *model* (a base model file or diffusers folder) each module must also fit the model's layer."""
    import torch

    path = Path(path)
    sd, md = read_lora(path)
    fmt, groups = _group_modules(sd)
    modules: list[ModuleReport] = []
    for name, tensors in groups.items():
        down = tensors.get("lora_down.weight")
        up = tensors.get("lora_up.weight")
        alpha_t = tensors.get("alpha")
        rank = _rank_of(tensors)
        alpha = float(alpha_t.float().item()) if alpha_t is not None and alpha_t.numel() == 1 else None
        nonfinite = any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors.values())
        untrained = up is not None and not bool((up != 0).any())
        if up is None and down is None:  # LoHa/LoKr: ΔW is 0 when one of its factors is all zero
            untrained = any(not bool((t != 0).any()) for k, t in tensors.items() if k.startswith(("hada_w", "lokr_w")))
        modules.append(ModuleReport(name, _part(name), _module_kind(tensors), rank, alpha, sorted(tensors),
                                    untrained, nonfinite))

    counts = {"unet": 0, "te1": 0, "te2": 0, "other": 0}
    for m in modules:
        counts[m.part] += 1
    unet_names = [m.name for m in modules if m.name.startswith("lora_unet_")]
    n_sgm = sum(1 for n in unet_names if _SGM_RE.match(n))
    n_diff = sum(1 for n in unet_names if _DIFFUSERS_UNET_RE.match(n))
    unet_naming = ("none" if not unet_names else "mixed" if n_sgm and n_diff else "sgm" if n_sgm
                   else "diffusers" if n_diff else "unrecognised")
    te_names = [m.name for m in modules if m.name.startswith(("lora_te_", "lora_te1_", "lora_te2_"))]
    n_te_ok = sum(1 for n in te_names if _TE_RE.match(n))
    n_te_flat = sum(1 for n in te_names if _TE_FLAT_RE.match(n))
    te_naming = ("none" if not te_names else "text_model" if n_te_ok == len(te_names)
                 else "flat (no text_model_)" if n_te_flat == len(te_names) else "mixed")
    family, family_source = _detect_family(md, groups, unet_naming)

    report = VerifyReport(
        path=str(path), file_size=path.stat().st_size, num_tensors=len(sd), format=fmt, family=family,
        family_source=family_source, modules=modules, counts=counts,
        ranks=sorted({m.rank for m in modules if m.rank is not None}),
        alphas=sorted({m.alpha for m in modules if m.alpha is not None}),
        conv3x3_modules=sum(1 for m in modules if m.kind == "conv3x3"),
        conv1x1_modules=sum(1 for m in modules if m.kind == "conv1x1"),
        unet_naming=unet_naming, te_naming=te_naming, metadata=md, metadata_summary=_metadata_summary(md),
        untrained=[m.name for m in modules if m.untrained], nonfinite=[m.name for m in modules if m.nonfinite],
        compat={},
    )
    broken_names = set()
    for name, tensors in groups.items():
        why = module_shape_problem(tensors)
        if why:
            broken_names.add(name)
            report.broken.append(f"{name}: {why}")
    if model is not None and fmt != "kohya":
        report.warnings.append("the shapes were not checked against the model: that is done for kohya-format "
                               "files only")
    elif model is not None:
        fam, shapes = base_model_shapes(model)
        report.base_model = f"{model} ({fam})"
        for name, tensors in groups.items():
            if name in broken_names:
                continue
            if name not in shapes:
                if "lora_down.weight" in tensors or "lora_up.weight" in tensors or _module_kind(tensors) in _TYPE_LABELS:
                    report.not_in_model.append(name)
                continue
            why = _base_shape_problem(tensors, *shapes[name])
            if why:
                report.mismatched.append(f"{name}: {why}")
        if report.not_in_model:
            report.warnings.append(f"{len(report.not_in_model)} module(s) name no layer of {model}; loaders ignore "
                                   f"them (e.g. {report.not_in_model[0]})")
    if "sshs_model_hash" in md:
        report.hash_ok = tensor_data_hash(path) == md["sshs_model_hash"]
        if not report.hash_ok:
            report.warnings.append("sshs_model_hash does not match the tensor data: the weights were changed "
                                   "after saving (A1111 will show a stale hash).")
    report.network_type = _network_type(modules)
    _judge_compat(report, sd, groups)
    return report


def _invokeai_probe_width(groups: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The width InvokeAI identifies a LoRA's base model by: the input width of a UNet cross-attention
    to_k/to_v (the context width), else of text-encoder self-attention (SD1/SD2 ``lora_te_``; SDXL
    ``lora_te1_`` + ``lora_te2_`` summed, so both encoders must be present). None: nothing to probe."""
    te1 = te2 = None
    for n, t in groups.items():
        down = t.get("lora_down.weight")
        if down is None or getattr(down, "ndim", 0) < 2:
            continue
        width = int(down.shape[1])
        if n.startswith("lora_unet_") and ("attn2_to_k" in n or "attn2_to_v" in n):
            return width
        if "_self_attn_" in n:
            if n.startswith("lora_te_"):
                return width
            if n.startswith("lora_te1_"):
                te1 = width
            elif n.startswith("lora_te2_"):
                te2 = width
            if te1 is not None and te2 is not None:
                return te1 + te2
    return None


def _judge_invokeai_probe(r: VerifyReport, groups: Mapping[str, Mapping[str, Any]], fail, notes: list[str]) -> None:
    if not any("lora_down.weight" in t for t in groups.values()):
        return  # LoHa/LoKr/other layouts: judged elsewhere
    width = _invokeai_probe_width(groups)
    if width is None:
        has_unet = bool(r.counts.get("unet"))
        what = ("no UNet cross-attention (attn2 to_k/to_v) module" if has_unet else
                "text-encoder modules only, and " + ("not both SDXL encoders' self-attention"
                                                     if r.family == "sdxl" else "no self-attention module"))
        fail(("InvokeAI",), f"InvokeAI cannot tell which base model this LoRA is for ({what}); "
                            "train the UNet too, including attn2 to_k/to_v")
        return
    guess = FAMILY_BY_CONTEXT_WIDTH.get(width)
    if guess is None:
        notes.append(f"InvokeAI's base-model probe reads width {width}, which is no SD1/SD2/SDXL width "
                     "(a tiny or unusual base model)")
    elif r.family and guess != r.family:
        fail(("InvokeAI",), f"InvokeAI's base-model probe reads width {width} and takes it for {guess}, "
                            f"not {r.family}")


def _judge_compat(r: VerifyReport, sd: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any]]) -> None:
    problems: dict[str, list[str]] = {c: [] for c in CLIENTS}
    notes: dict[str, list[str]] = {c: [] for c in CLIENTS}

    def fail(clients, why):
        for c in clients:
            problems[c].append(why)

    names = list(groups)
    if r.format == "diffusers-peft":
        fail(("A1111", "Forge", "ComfyUI"),
             "diffusers/PEFT key format (unet.…lora_A.weight); A1111/Forge/ComfyUI map only kohya names — "
             "convert it to kohya format")
        notes["InvokeAI"].append("diffusers/PEFT key format: not checked for InvokeAI; kohya format is safer")
    elif r.format == "unknown":
        fail(CLIENTS, "no known LoRA key layout")
    else:
        others = sorted({k.split(".")[0].split("_")[0] for k in sd if not k.startswith(KOHYA_PREFIXES)})
        lycoris = [k for k in sd if k.startswith("lycoris_")]
        if lycoris:
            fail(("A1111", "InvokeAI"), "uses the 'lycoris_' prefix, which only ComfyUI-based loaders map")
        if any(not k.startswith(KOHYA_PREFIXES) and not k.startswith("lycoris_") for k in sd):
            fail(("diffusers",), f"keys outside lora_unet_/lora_te*_ ({', '.join(others)}…) switch off diffusers' "
                                 "kohya conversion")
        elif lycoris:
            fail(("diffusers",), "the 'lycoris_' prefix is not a kohya prefix diffusers recognises")

        if r.unet_naming == "mixed":
            fail(("InvokeAI",), "UNet keys mix SGM (input_blocks…) and diffusers (down_blocks…) names; InvokeAI "
                                "refuses partially convertible SDXL files")
            fail(("diffusers",), "UNet keys mix SGM and diffusers names; diffusers silently drops every SGM key")
        if r.unet_naming == "sgm" and r.family in ("sd1", "sd2"):
            fail(("diffusers",), "SGM UNet names in an SD1/SD2 file; diffusers maps SGM names only for SDXL")
        if r.family == "sdxl" and r.unet_naming == "diffusers":
            if any("up_blocks_0_upsamplers" in n for n in names):
                fail(("A1111",), "SDXL upsampler LoRA in diffusers names: A1111 computes the wrong output block")
            notes["InvokeAI"].append("SDXL UNet in diffusers names (sd-scripts writes SGM names); loads")

        flat = [n for n in names if _TE_FLAT_RE.match(n)]
        if flat:
            why = (f"{len(flat)} text encoder key(s) lack 'text_model_' (lora_te*_encoder_layers_…, the "
                   "transformers ≥ 5.6 naming bug); those modules are silently ignored")
            fail(("A1111", "Forge", "ComfyUI", "InvokeAI"), why)
            notes["diffusers"].append("text encoder keys without text_model_ load only with transformers ≥ 5.6")
        if r.family in ("sd1", "sd2") and any(n.startswith("lora_te1_") for n in names) \
                and not any(n.startswith("lora_te2_") for n in names):
            fail(("InvokeAI",), "SD1/SD2 text encoder written as lora_te1_; InvokeAI's SD1 path reads lora_te_ "
                                "(the text encoder part is ignored)")
        if r.family == "sdxl" and any(n.startswith("lora_te_") for n in names):
            fail(("A1111", "InvokeAI"), "SDXL file with lora_te_ keys (SDXL loaders expect lora_te1_/lora_te2_; "
                                        "the text encoder part is ignored)")

        # TE2 attention: A1111 patches OpenCLIP in_proj only when q, k, v and out all exist.
        te2_layers: dict[str, set[str]] = {}
        for n in names:
            m = re.match(r"^lora_te2_text_model_encoder_layers_(\d+)_self_attn_(q|k|v|out)_proj$", n)
            if m:
                te2_layers.setdefault(m[1], set()).add(m[2])
        partial = sorted((int(k) for k, v in te2_layers.items() if v != {"q", "k", "v", "out"}))
        if partial:
            fail(("A1111",), f"text encoder 2 layers {partial[:6]} train only part of q/k/v/out; A1111 applies TE2 "
                             "attention LoRA only when all four exist (silently ignored)")

        suffixes = {s for t in groups.values() for s in t}
        if any(s.startswith(("hada_", "lokr_")) for s in suffixes):
            fail(("diffusers",), "LyCORIS LoHa/LoKr tensors; diffusers' SD/SDXL loader supports only LoRA/LoCon")
        if "lora_mid.weight" in suffixes:
            fail(("diffusers",), "Tucker 'lora_mid' tensors (LoCon with use_tucker); diffusers raises on them")
        if "dora_scale" in suffixes:
            notes["diffusers"].append("dora_scale is dropped with a warning (the DoRA part is not applied)")
            fail(("diffusers",), "DoRA (dora_scale) is dropped by diffusers, so the result differs")
            out_axis = any(t["dora_scale"].ndim >= 2 and t["dora_scale"].shape[0] > 1 and t["dora_scale"].shape[1] == 1
                           for t in groups.values() if "dora_scale" in t)
            if out_axis:
                fail(("A1111", "InvokeAI"), "output-axis dora_scale (out,1): A1111 broadcasts it wrongly, InvokeAI "
                                            "expects input-axis")
        if any(s in ("lora_A.weight", "lora_B.weight") for s in suffixes):
            fail(("diffusers", "InvokeAI"), "lora_A/lora_B tensors under kohya names are not read by this loader")
        unknown = sorted(s for s in suffixes if s not in ("lora_down.weight", "lora_up.weight", "alpha", "lora_mid.weight",
                                                          "dora_scale", "lora_A.weight", "lora_B.weight", "scale")
                         and not s.startswith(("hada_", "lokr_")))
        if unknown:
            fail(("A1111", "Forge"), f"unknown tensor kinds {unknown[:4]}: A1111 stops at a module of no known "
                                     "type (AssertionError for the whole file)")
            fail(("diffusers",), f"unknown tensor kinds {unknown[:4]}: diffusers raises 'keys have not been "
                                 "correctly renamed'")
        if any(_TOP_LEVEL_RE.match(n) for n in names):
            notes["diffusers"].append("conv_in/conv_out/time embedding modules need diffusers ≥ 0.39")
        missing_alpha = [n for n, t in groups.items() if "lora_down.weight" in t and "alpha" not in t]
        if missing_alpha:
            r.warnings.append(f"{len(missing_alpha)} module(s) have no alpha: every loader then uses scale 1.0")
        _judge_invokeai_probe(r, groups, fail, notes["InvokeAI"])

    if "lora_adapter_metadata" in r.metadata and r.format == "kohya":
        fail(("diffusers",), "metadata has 'lora_adapter_metadata': diffusers raises 'Both network_alphas and "
                             "metadata cannot be specified'")
    if r.nonfinite:
        fail(CLIENTS, f"{len(r.nonfinite)} module(s) contain NaN/inf: images will be black or noise")
    if r.broken:
        fail(CLIENTS, f"{len(r.broken)} module(s) have tensors whose shapes do not fit together (first: "
                      f"{r.broken[0]}): the file is damaged and cannot be applied")
    if r.mismatched:
        fail(CLIENTS, f"{len(r.mismatched)} module(s) do not fit the layers of {r.base_model} (first: "
                      f"{r.mismatched[0]}): the LoRA was made for another model")
    if r.untrained:
        r.warnings.append(f"{len(r.untrained)} module(s) are untrained (lora_up all zero): they do nothing")
    r.compat = {c: (not problems[c], problems[c] + [f"note: {n}" for n in notes[c]]) for c in CLIENTS}


def format_verify_report(report: VerifyReport) -> str:
    """A plain-text rendering of :func:`verify_lora`'s report, for the GUI's text box and the CLI."""
    r = report
    lines = [f"LoRA file: {r.path}", f"Size: {r.file_size:,} bytes, {r.num_tensors} tensors, key format: {r.format}"]
    fam = FAMILY_LABELS.get(r.family or "", "unknown")
    lines.append(f"Base model: {fam} (from {r.family_source})")
    module = r.metadata.get("ss_network_module")
    lines.append(f"Network type: {r.network_type or 'unknown'}" + (f" (ss_network_module {module})" if module else ""))
    te = f"TE1 {r.counts['te1']}, TE2 {r.counts['te2']}" if r.counts["te2"] or r.family == "sdxl" else f"TE {r.counts['te1']}"
    lines.append(f"Modules: {len(r.modules)} (UNet {r.counts['unet']}, {te}"
                 + (f", other {r.counts['other']}" if r.counts["other"] else "") + ")")
    lines.append(f"UNet names: {r.unet_naming}; text encoder names: {r.te_naming}")
    lines.append(f"Ranks: {', '.join(map(str, r.ranks)) or '-'}; alphas: "
                 f"{', '.join(_fmt_num(a) for a in r.alphas) or '- (none: scale 1.0)'}")
    lines.append(f"Conv modules: {r.conv3x3_modules} 3x3 (LoCon), {r.conv1x1_modules} 1x1")
    if r.metadata_summary:
        lines.append("Metadata:")
        lines.extend(f"  {k}: {v if len(v) <= 120 else v[:117] + '...'}" for k, v in r.metadata_summary.items())
    else:
        lines.append("Metadata: none")
    if r.hash_ok is not None:
        lines.append(f"Model hash: {'matches the tensors' if r.hash_ok else 'DOES NOT MATCH the tensors'}")
    if r.nonfinite:
        lines.append(f"NaN/inf in {len(r.nonfinite)} module(s):")
        lines.extend(f"  {n}" for n in r.nonfinite[:20])
    if r.broken:
        lines.append(f"BROKEN: {len(r.broken)} module(s) whose tensor shapes do not fit together:")
        lines.extend(f"  {b}" for b in r.broken[:20])
        if len(r.broken) > 20:
            lines.append(f"  … and {len(r.broken) - 20} more")
    if r.base_model is not None:
        if r.mismatched:
            lines.append(f"Against {r.base_model}: {len(r.mismatched)} module(s) do not fit the model's layers:")
            lines.extend(f"  {m}" for m in r.mismatched[:20])
            if len(r.mismatched) > 20:
                lines.append(f"  … and {len(r.mismatched) - 20} more")
        else:
            lines.append(f"Against {r.base_model}: every module fits the model's layers")
    if r.untrained:
        lines.append(f"Untrained (all-zero lora_up) modules: {len(r.untrained)}")
        lines.extend(f"  {n}" for n in r.untrained[:20])
        if len(r.untrained) > 20:
            lines.append(f"  … and {len(r.untrained) - 20} more")
    lines.append("Loaders:")
    for client, (ok, reasons) in r.compat.items():
        lines.append(f"  {client}: {'OK' if ok else 'PROBLEM'}")
        lines.extend(f"    - {why}" for why in reasons)
    for w in r.warnings:
        lines.append(f"Warning: {w}")
    return "\n".join(lines)


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


__all__ = ["verify_lora", "format_verify_report", "VerifyReport", "ModuleReport", "CLIENTS",
           "module_shape_problem", "base_model_shapes"]
