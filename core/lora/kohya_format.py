"""LoRA files: kohya/sd-scripts metadata, atomic safetensors save with A1111 hashes, reading ("Verify LoRA" is
:mod:`patina.core.lora.verify`).

LoHa/LoKr files carry ``ss_network_module = lycoris.kohya`` and ``ss_network_args`` with ``algo``,
``conv_dim``, ``conv_alpha``, ``factor`` (LoKr), the dropouts and the LyCORIS flags, as LyCORIS trained through
kohya_ss writes them.

The format is the one of ``shared/reference/lora-format.md`` (§0, §1.3, §3, §8): kohya key names, every
metadata value a string, ``ss_*`` training keys + ``sshs_model_hash``/``sshs_legacy_hash`` + ``modelspec.*``,
and never diffusers' ``lora_adapter_metadata`` (diffusers then refuses the file).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping

from patina.core import __version__
from patina.core.atomic import atomic_temp_path, commit_temp
from patina.core.config.schema import LORA_TYPE_ALGO, SS_KEYS
from patina.core.errors import PatinaError
from patina.core.models.families import check_family

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
FORBIDDEN_METADATA = ("lora_adapter_metadata",)
PRECISIONS = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
              "float": "float32", "fp32": "float32", "float32": "float32"}

# config key -> ss_* key, written when the config has the key (values kept as kohya writes them): the schema's
# (Param.ss_key), then the keys of kohya_ss configs that Patina has no setting for.
_KOHYA_ONLY_SS_KEYS = {
    "full_fp16": "ss_full_fp16",
    "full_bf16": "ss_full_bf16",
    "zero_terminal_snr": "ss_zero_terminal_snr",
    "face_crop_aug_range": "ss_face_crop_aug_range",
    "fp8_base": "ss_fp8_base",
}


# ----------------------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------------------

def _s(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _metadata_resolution(value: Any, family: str) -> tuple[int, int]:
    """``ss_resolution``: the config's resolution, or the family's usual one when the config has none."""
    from patina.core.dataset.buckets import parse_resolution

    if value in (None, "", 0):
        return (1024, 1024) if family == "sdxl" else (512, 512)
    try:
        return parse_resolution(value)
    except ValueError:
        raise PatinaError(f"max_resolution {value!r} is not a resolution like 512,512.") from None


def base_model_version(family: str, v_prediction: bool) -> str:
    """``ss_base_model_version``: sd_v1, sd_v2 (``_v`` suffix for v-prediction) or sdxl_base_v1-0."""
    if family == "sdxl":
        return "sdxl_base_v1-0"
    base = "sd_v2" if family == "sd2" else "sd_v1"
    return base + ("_v" if v_prediction else "")


def modelspec_architecture(family: str, v_prediction: bool) -> str:
    if family == "sdxl":
        arch = "stable-diffusion-xl-v1-base"
    elif family == "sd2":
        arch = "stable-diffusion-v2-768-v" if v_prediction else "stable-diffusion-v2-512"
    else:
        arch = "stable-diffusion-v1"
    return arch + "/lora"


def lycoris_algo(values: Mapping[str, Any]) -> str | None:
    """"loha" / "lokr" for a LyCORIS ``LoRA_type``, else None (a kohya ``networks.lora`` LoRA/LoCon)."""
    algo = LORA_TYPE_ALGO.get(str(values.get("LoRA_type") or ""))
    return algo if algo in ("loha", "lokr") else None


def network_module(values: Mapping[str, Any]) -> str:
    """``ss_network_module``: ``lycoris.kohya`` for LoHa/LoKr (LyCORIS's kohya entry point), else
    ``networks.lora``."""
    return "lycoris.kohya" if lycoris_algo(values) else "networks.lora"


def _lycoris_args(values: Mapping[str, Any], algo: str) -> dict[str, str]:
    """The LyCORIS ``network_args`` kohya_ss passes for a LoHa/LoKr (strings, as LyCORIS receives them): algo,
    the LoKr factor and decompose_both, rank/module dropout, and the LyCORIS options Patina trains with off."""
    def flag(key):
        return _s(bool(values.get(key)))

    args = {"algo": algo}
    if algo == "lokr":
        factor = values.get("factor")
        args["factor"] = _s(int(float(factor)) if factor not in (None, "") else -1)
        args["decompose_both"] = flag("decompose_both")
        args["rank_dropout_scale"] = flag("rank_dropout_scale")
    args["rank_dropout"] = _s(values.get("rank_dropout") or 0)
    args["module_dropout"] = _s(values.get("module_dropout") or 0)
    args["use_tucker"] = flag("use_tucker")
    for key in ("use_scalar", "train_norm", "dora_wd", "bypass_mode"):  # not trained by Patina: always off
        args[key] = "False"
    return args


def network_args_from_values(values: Mapping[str, Any]) -> dict[str, str]:
    """kohya ``network_args`` (for ``ss_network_args``) from a kohya_ss-style config: conv_dim/conv_alpha for
    LoCon; conv_dim/conv_alpha/algo (and factor for LoKr) for LyCORIS LoHa/LoKr, string values as LyCORIS's
    ``--network_args "algo=loha" ...`` leave them; block-wise settings and LoRA+ ratios when set."""
    if isinstance(values.get("network_args"), Mapping):
        return {str(k): _s(v) for k, v in values["network_args"].items()}
    args: dict[str, str] = {}
    lora_type = str(values.get("LoRA_type") or "")
    conv_dim = values.get("conv_dim")
    algo = lycoris_algo(values)
    is_locon = ("locon" in lora_type.lower() or algo is not None) if lora_type else bool(conv_dim)
    if is_locon and conv_dim and float(conv_dim) > 0:
        args["conv_dim"] = _s(int(float(conv_dim)))
        conv_alpha = values.get("conv_alpha")
        args["conv_alpha"] = _s(conv_alpha if conv_alpha not in (None, "") else 1)
    if algo is not None:
        args.update(_lycoris_args(values, algo))
    for key in ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims",
                "block_alphas", "conv_block_dims", "conv_block_alphas", "loraplus_lr_ratio",
                "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        v = values.get(key)
        if v in (None, "", 0, 0.0, [], False):
            continue
        args[key] = ",".join(_s(x) for x in v) if isinstance(v, (list, tuple)) else _s(v)
    return args


def build_metadata(*, values: Mapping[str, Any], family: str, v_prediction: bool = False,
                   base_model_name: str = "", num_train_images: int = 0, num_reg_images: int = 0,
                   num_batches_per_epoch: int = 0, steps: int = 0, epoch: int = 0,
                   tag_frequency: Mapping | None = None, bucket_info: Mapping | None = None,
                   dataset_dirs: Mapping | None = None, reg_dataset_dirs: Mapping | None = None,
                   training_started_at: float | None = None, training_finished_at: float | None = None,
                   session_id: int | str | None = None, network_args: Mapping[str, Any] | None = None,
                   optimizer_class: str | None = None) -> dict[str, str]:
    """The safetensors metadata of a LoRA file, kohya/sd-scripts style; every value a ``str``.

    *values* is the training config with kohya key names (network_dim, network_alpha, conv_dim, LoRA_type,
    learning_rate, unet_lr, optimizer, max_resolution, output_name, metadata_title/author/...). The hashes
    (``sshs_*``) are added by :func:`save_lora`. *bucket_info* is sd-scripts' shape (``{"buckets": {"0":
    {"resolution": [w, h], "count": n}}, "mean_img_ar_error": x}``); *optimizer_class* the optimizer's
    ``module.Class`` as sd-scripts writes it in ``ss_optimizer`` (the config's name is used without it).
    """
    family = check_family(family)
    now = time.time()
    started = float(training_started_at) if training_started_at is not None else now
    finished = float(training_finished_at) if training_finished_at is not None else now
    reso = _metadata_resolution(values.get("max_resolution") or values.get("resolution"), family)
    output_name = str(values.get("output_name") or "last")
    net_args = ({str(k): _s(v) for k, v in network_args.items()} if network_args is not None
                else network_args_from_values(values))
    network_dim = values.get("network_dim", 8)
    network_alpha = values.get("network_alpha", 1.0)

    md: dict[str, str] = {
        "ss_session_id": _s(session_id if session_id is not None else random.randint(0, 2**32 - 1)),
        "ss_training_started_at": _s(started),
        "ss_training_finished_at": _s(finished),
        "ss_output_name": output_name,
        "ss_sd_model_name": str(base_model_name or values.get("pretrained_model_name_or_path") or ""),
        "ss_network_module": network_module(values),
        "ss_network_dim": _s(int(float(network_dim))),
        "ss_network_alpha": _s(float(network_alpha if network_alpha not in (None, "") else 1.0)),
        "ss_network_args": json.dumps(net_args, ensure_ascii=False),
        "ss_v2": _s(family == "sd2"),
        "ss_base_model_version": base_model_version(family, v_prediction),
        "ss_v_parameterization": _s(bool(v_prediction)),
        "ss_resolution": f"({reso[0]}, {reso[1]})",  # str() of a tuple, as sd-scripts writes it
        "ss_num_train_images": _s(int(num_train_images)),
        "ss_num_reg_images": _s(int(num_reg_images)),
        "ss_num_batches_per_epoch": _s(int(num_batches_per_epoch)),
        "ss_num_epochs": _s(values.get("epoch", epoch)),
        "ss_epoch": _s(int(epoch)),
        "ss_steps": _s(int(steps)),
        "ss_tag_frequency": json.dumps(dict(tag_frequency or {}), ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(dict(dataset_dirs or {}), ensure_ascii=False),
    }
    if reg_dataset_dirs:
        md["ss_reg_dataset_dirs"] = json.dumps(dict(reg_dataset_dirs), ensure_ascii=False)
    if bucket_info:
        md["ss_bucket_info"] = json.dumps(dict(bucket_info), ensure_ascii=False)
    for key, ss_key in {**SS_KEYS, **_KOHYA_ONLY_SS_KEYS}.items():
        if key in values and values[key] is not None:
            md[ss_key] = _s(values[key])
    if "optimizer" in values:
        opt = optimizer_class or str(values["optimizer"])
        opt_args = values.get("optimizer_args")
        if opt_args:
            opt += f"({opt_args if isinstance(opt_args, str) else ','.join(map(str, opt_args))})"
        md["ss_optimizer"] = opt
    if "train_batch_size" in values:
        try:
            md["ss_total_batch_size"] = _s(int(values["train_batch_size"]) * int(values.get("gradient_accumulation_steps") or 1))
        except (TypeError, ValueError):
            pass
    md.setdefault("ss_clip_skip", "None")  # sd-scripts writes str(args.clip_skip) even when unset

    # SAI ModelSpec (sd-scripts library/sai_model_spec.py values).
    title = values.get("metadata_title") or values.get("output_name") or f"LoRA@{finished}"
    md["modelspec.sai_model_spec"] = "1.0.1"
    md["modelspec.architecture"] = modelspec_architecture(family, v_prediction)
    md["modelspec.implementation"] = ("https://github.com/Stability-AI/generative-models" if family == "sdxl"
                                      else "diffusers")
    md["modelspec.implementation_version"] = f"patina/{__version__}"
    md["modelspec.title"] = str(title)
    md["modelspec.resolution"] = f"{reso[0]}x{reso[1]}"
    md["modelspec.date"] = datetime.datetime.fromtimestamp(int(finished)).isoformat()
    md["modelspec.prediction_type"] = "v" if v_prediction else "epsilon"
    clip_skip = values.get("clip_skip")
    if clip_skip not in (None, "", 0):
        md["modelspec.encoder_layer"] = _s(clip_skip)
    lo, hi = values.get("min_timestep"), values.get("max_timestep")
    if lo not in (None, "") or hi not in (None, ""):
        md["modelspec.timestep_range"] = f"{int(lo or 0)},{int(hi if hi not in (None, '') else 1000)}"
    for field_name in ("author", "description", "license", "tags"):
        v = values.get(f"metadata_{field_name}")
        if v not in (None, ""):
            md[f"modelspec.{field_name}"] = _s(v)
    return md


# ----------------------------------------------------------------------------------------------------------
# Save / read
# ----------------------------------------------------------------------------------------------------------

def _tensor_data_sha256(blob: bytes) -> str:
    n = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(memoryview(blob)[8 + n:]).hexdigest()


def model_hashes(state_dict: Mapping[str, Any], metadata: Mapping[str, str]) -> tuple[str, str]:
    """(``sshs_model_hash``, ``sshs_legacy_hash``) as sd-scripts computes them: serialise the tensors with
    only the ``ss_*`` metadata; the model hash is the sha256 of the bytes after the header (the tensor data,
    so later metadata edits do not change it); the legacy hash is the first 8 hex digits of the sha256 of
    bytes [0x100000, 0x110000) of that serialisation (sd-webui-additional-networks' old hash)."""
    import safetensors.torch

    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    blob = safetensors.torch.save(dict(state_dict), metadata=ss_only)
    legacy = hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    return _tensor_data_sha256(blob), legacy


def save_lora(path: str | os.PathLike, state_dict: Mapping[str, Any], metadata: Mapping[str, str] | None = None,
              precision: str = "fp16") -> dict[str, str]:
    """Write a LoRA ``.safetensors`` atomically (temporary file in the same folder, then ``os.replace``; a
    crash leaves the previous file as it was). Tensors are cast to *precision* (fp16, bf16 or float) and made
    contiguous; ``sshs_model_hash``/``sshs_legacy_hash`` are added. Returns the metadata written."""
    import safetensors.torch
    import torch

    dtype_name = PRECISIONS.get(str(precision).lower())
    if dtype_name is None:
        raise PatinaError(f"Unknown save precision {precision!r}: use fp16, bf16 or float.")
    dtype = getattr(torch, dtype_name)
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise PatinaError(f"LoRA files are saved as .safetensors; {path.name} has another extension.")
    md: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if k in FORBIDDEN_METADATA:
            raise ValueError(f"metadata key {k!r} must not be written to a kohya-format LoRA "
                             "(diffusers then refuses the file)")
        if not isinstance(v, str):
            raise TypeError(f"metadata value of {k!r} is {type(v).__name__}; safetensors metadata must be str")
        md[str(k)] = v
    tensors = {}
    for k, t in state_dict.items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(dtype)
        tensors[k] = t.contiguous()
    md["sshs_model_hash"], md["sshs_legacy_hash"] = model_hashes(tensors, md)

    tmp = atomic_temp_path(path)
    try:
        safetensors.torch.save_file(tensors, str(tmp), metadata=md)
        commit_temp(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return md


def _open_error(path: Path, exc: Exception) -> PatinaError:
    return PatinaError(f"{path} is not a readable .safetensors file ({exc}). Is it a LoRA saved as "
                       ".ckpt/.pt, a partial download, or another kind of file?")


def read_lora_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of *path* (without reading the tensors)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError types
        raise _open_error(path, exc) from exc


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise PatinaError(f"LoRA file not found: {path}")
    if path.is_dir():
        raise PatinaError(f"{path} is a folder; choose the LoRA .safetensors file inside it.")
    return path


def read_lora(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """(state_dict, metadata) of a ``.safetensors`` LoRA file. Raises :class:`PatinaError` for a missing file,
    a file that is not safetensors, or one that holds no LoRA weights."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise _open_error(path, exc) from exc
    if not _looks_like_lora(sd):
        sample = ", ".join(list(sd)[:3]) or "no tensors at all"
        raise PatinaError(f"{path.name} is a safetensors file but not a LoRA (it holds {len(sd)} tensors such as "
                          f"{sample}). Choose a LoRA file (keys like lora_unet_….lora_down.weight).")
    return sd, metadata


_LORA_SUFFIXES = ("lora_down.weight", "lora_up.weight", "lora_A.weight", "lora_B.weight", "hada_w1_a",
                  "lokr_w1", "lokr_w1_a", "lora.down.weight", "lora_linear_layer.down.weight", "oft_blocks",
                  "oft_diag", "diff", "alpha")


def _looks_like_lora(sd: Mapping) -> bool:
    return any(k.endswith(_LORA_SUFFIXES[:-1]) or (k.startswith(KOHYA_PREFIXES) and k.endswith(".alpha")) for k in sd)


def tensor_data_hash(path: str | os.PathLike) -> str:
    """sha256 of the tensor data of a safetensors file (= ``sshs_model_hash``; Civitai's "AutoV3")."""
    digest = hashlib.sha256()
    with open(_existing(path), "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        fh.seek(8 + n)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = [
    "build_metadata", "save_lora", "read_lora", "read_lora_metadata", "model_hashes", "tensor_data_hash",
    "network_args_from_values", "base_model_version", "modelspec_architecture", "network_module", "lycoris_algo",
]

