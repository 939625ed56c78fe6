"""What a base model path is: a diffusers folder or a single-file checkpoint, which family (SD1, SD2, SDXL),
epsilon or v-prediction, and a clear refusal for anything else (a LoRA, an embedding, a refiner, a broken
file). Light on purpose (no torch import): the GUI calls :func:`detect_family` to fill in the family.
Loading the weights is :mod:`patina.core.models.loading`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from patina.core.models.checkpoint_files import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    describe_file,
    load_state_dict_safely,
    read_safetensors_header,
    sniff_format,
)
from patina.core.errors import PatinaError
from patina.core.models.families import FAMILY_BY_CONTEXT_WIDTH, FAMILY_NAMES

SUPPORTED = (
    "Patina trains LoRAs on Stable Diffusion 1.x, 2.x and SDXL base models, given either as one "
    "checkpoint file (.safetensors or .ckpt, as used by A1111/ComfyUI) or as a diffusers folder "
    "(the folder that contains model_index.json)."
)

# Tensor-name markers of single-file checkpoints.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TE_PREFIX = "cond_stage_model.transformer."
SD2_TE_PREFIX = "cond_stage_model.model."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_TE_PREFIX = "conditioner.embedders.0.model."

# --------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`detect_family` found.

    ``family`` is ``"sd1"``, ``"sd2"`` or ``"sdxl"`` (``None`` only for a diffusers folder whose configs
    match none of them; pass ``family=`` to :func:`load_base_model` then). ``v_prediction`` is ``None``
    when the file does not say (typical for SD2 checkpoints: 512-base is epsilon, 768-v is not, and
    their tensors look the same). ``has_vae`` is False for checkpoints saved without the autoencoder."""

    family: str | None
    v_prediction: bool | None
    layout: str
    path: Path
    has_vae: bool = True

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family or "", "unknown Stable Diffusion version")


def _fail(path: Path, found: str, todo: str) -> PatinaError:
    return PatinaError(f"{path.name or str(path)}: {found}. {SUPPORTED} {todo}".strip())


def not_found_error(path: Path) -> PatinaError:
    text = str(path)
    hub_like = re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not text.startswith((".", "/"))
    hint = (" If this is a Hugging Face model id: Patina never downloads models. Download the model "
            "yourself (a .safetensors file or the whole diffusers folder) and choose it here."
            if hub_like else " Choose a model file or folder that exists on this computer.")
    return PatinaError(f"The base model {text!r} does not exist.{hint}")


def detect_family(path: str | Path) -> ModelInfo:
    """Identify a base model without loading its weights.

    For ``.safetensors`` only the header (tensor names, shapes, metadata) is read. A pickled
    ``.ckpt`` has no separate index, so it is opened through the restricted loader (memory-mapped).
    Raises :class:`PatinaError` for anything that is not a supported base model."""
    p = Path(path).expanduser()
    if not p.exists():
        raise not_found_error(p)
    if p.is_dir() or p.name == "model_index.json":
        return detect_diffusers(p if p.is_dir() else p.parent)
    shapes, meta, layout, _ = file_index(p)
    return classify(p, shapes, meta, layout)


def file_index(p: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], str, dict | None]:
    """(shapes, safetensors metadata, layout, state dict if it had to be loaded to be listed)."""
    kind = sniff_format(p)
    try:
        if kind == "safetensors" or (kind is None and p.suffix.lower() in SAFETENSORS_SUFFIXES):
            tensors, meta = read_safetensors_header(p)
            return {k: tuple(v.get("shape") or ()) for k, v in tensors.items()}, meta, "single_file", None
        if kind is None:
            raise _fail(p, f"this is {describe_file(p)}, not a model checkpoint",
                        "Choose a .safetensors or .ckpt file, or a diffusers folder.")
        sd = load_state_dict_safely(p)
    except PatinaError as exc:
        if SUPPORTED in exc.message:
            raise
        raise PatinaError(f"{exc.message} {SUPPORTED}") from None
    return {k: tuple(v.shape) for k, v in sd.items()}, {}, "ckpt", sd


def _has(keys, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def looks_like_lora(keys) -> bool:
    return any(
        k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"))
        or any(s in k for s in (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.",
                                ".hada_w1_", ".lokr_w1"))
        for k in keys
    )


def _looks_like_embedding(keys) -> bool:
    names = set(keys)
    return bool(names) and len(names) <= 8 and (
        "emb_params" in names or any(k.startswith("string_to_param") for k in names) or {"clip_l", "clip_g"} <= names)


def _v_from_metadata(meta: Mapping[str, str], keys) -> bool | None:
    pred = (meta.get("modelspec.prediction_type") or "").strip().lower()
    if pred in ("v", "v_prediction", "v-prediction"):
        return True
    if pred in ("epsilon", "eps"):
        return False
    if "v_pred" in keys:  # marker tensor some v-prediction SDXL finetunes carry
        return True
    return None


def classify(p: Path, shapes: Mapping[str, tuple[int, ...]], meta: Mapping[str, str], layout: str) -> ModelInfo:
    keys = list(shapes)
    if not keys:
        raise _fail(p, "the file contains no tensors", "Choose a complete base model checkpoint.")
    has_unet = _has(keys, UNET_PREFIX)
    other_arch = re.compile(r"(model\.diffusion_model\.)?(double_blocks|joint_blocks|x_embedder)\.")
    flux_or_sd3 = any(other_arch.match(k) for k in keys)
    if flux_or_sd3:
        raise _fail(p, "this is a FLUX or Stable Diffusion 3 model, which Patina does not train",
                    "Choose an SD 1.x, SD 2.x or SDXL checkpoint.")
    if not has_unet:
        if looks_like_lora(keys):
            raise _fail(p, "this is a LoRA / LyCORIS file (the kind of file Patina produces), not a base model",
                        "Choose the full model the LoRA is trained on, e.g. an SD 1.5 or SDXL checkpoint; "
                        "a LoRA can only be applied on top of one.")
        if _looks_like_embedding(keys):
            raise _fail(p, "this is a textual-inversion embedding, not a base model",
                        "Choose a full checkpoint (several GB) as the base model.")
        if _has(keys, "encoder.down.") or _has(keys, "decoder.up.") or _has(keys, VAE_PREFIX) \
                or _has(keys, "encoder.down_blocks.") or _has(keys, "decoder.up_blocks."):
            raise _fail(p, "this is a VAE (the image autoencoder) on its own, not a full base model",
                        "Choose it in the VAE field instead, and a complete checkpoint as the base model.")
        if _has(keys, "down_blocks.") and ("conv_in.weight" in shapes or "time_embedding.linear_1.weight" in shapes):
            raise _fail(p, "this is only the UNet weights file of a diffusers model",
                        "Choose the model's top folder (the one containing model_index.json) instead.")
        if _has(keys, "cond_stage_model.") or _has(keys, "conditioner.") or _has(keys, "text_model.") \
                or _has(keys, "encoder.layers."):
            raise _fail(p, "this contains only a text encoder, no UNet", "Choose a complete base model checkpoint.")
        sample = ", ".join(keys[:3])
        raise _fail(p, f"this is not a Stable Diffusion checkpoint (its {len(keys)} tensors are named like {sample})",
                    "Choose a base model checkpoint.")

    conv_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] != 4:
        kind = {9: "an inpainting model", 8: "an instruct-pix2pix model"}.get(conv_in[1], "a model")
        raise _fail(p, f"this is {kind} (its UNet takes {conv_in[1]} input channels instead of 4)",
                    "LoRAs are trained on the regular text-to-image base model; choose that one.")

    if _has(keys, SDXL_TE2_PREFIX):
        family = "sdxl"
    elif _has(keys, SDXL_REFINER_TE_PREFIX):
        raise _fail(p, "this is the SDXL refiner, which is not a base model",
                    "Choose SDXL base 1.0 (or a finetune of it).")
    elif _has(keys, SD2_TE_PREFIX):
        family = "sd2"
    elif _has(keys, SD1_TE_PREFIX):
        family = "sd1"
    else:
        guess = _family_from_unet(shapes)
        looks = f" (its UNet looks like {FAMILY_NAMES[guess]})" if guess else ""
        raise _fail(p, f"this checkpoint has a UNet but no text encoder{looks}",
                    "Patina needs the complete checkpoint with its text encoder(s); choose the full model file.")

    v = _v_from_metadata(meta, shapes)
    if v is None and family != "sd2":
        v = False
    return ModelInfo(family=family, v_prediction=v, layout=layout, path=p, has_vae=_has(keys, VAE_PREFIX))


def _family_from_unet(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    if _has(shapes, UNET_PREFIX + "label_emb."):
        return "sdxl"
    for k, s in shapes.items():
        if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight") and len(s) == 2:
            return FAMILY_BY_CONTEXT_WIDTH.get(s[1])
    return None


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PatinaError(f"Could not read {path}: {exc}.") from None
    if not isinstance(data, dict):
        raise PatinaError(f"{path} is not a JSON object.")
    return data


_WEIGHT_NAMES = ("diffusion_pytorch_model", "model", "pytorch_model")
_WEIGHT_EXTS = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def weights_variant(folder: Path) -> str | None | bool:
    """None when *folder* has regular weights, the variant name (e.g. ``"fp16"``) when it only has a
    variant, False when it has no weights at all."""
    if not folder.is_dir():
        return False
    names = {f.name for f in folder.iterdir() if f.is_file()}
    if any(n + e in names for n in _WEIGHT_NAMES for e in _WEIGHT_EXTS):
        return None
    for name in sorted(names):
        m = re.fullmatch(r"(?:%s)\.([\w-]+)\.(?:safetensors|bin)" % "|".join(_WEIGHT_NAMES), name)
        if m:
            return m[1]
    return False


def detect_diffusers(folder: Path) -> ModelInfo:
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        own = folder / "config.json"
        if own.is_file():
            own_cfg = read_json(own)
            cls = own_cfg.get("_class_name") or (own_cfg.get("architectures") or ["?"])[0]
            raise _fail(folder, f"this folder is the {cls} component of a diffusers model, not the model itself",
                        "Choose its parent folder (the one containing model_index.json).")
        files = sorted(f.name for f in folder.iterdir()
                       if f.is_file() and f.suffix.lower() in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
        todo = (f"It contains {', '.join(files[:5])}{' …' if len(files) > 5 else ''}: choose one of those files."
                if files else "Choose a checkpoint file or a diffusers model folder.")
        raise _fail(folder, "this folder is not a diffusers model (there is no model_index.json in it)", todo)
    index = read_json(index_path)
    pipe_cls = str(index.get("_class_name", "?"))

    def component(name: str) -> str | None:
        v = index.get(name)
        return v[1] if isinstance(v, list) and len(v) == 2 and v[1] else None

    if component("unet") != "UNet2DConditionModel":
        raise _fail(folder, f"this diffusers model is a {pipe_cls}, which is not an SD 1.x/2.x/SDXL pipeline",
                    "Choose an SD 1.x, SD 2.x or SDXL model.")
    unet_cfg_path = folder / "unet" / "config.json"
    if not unet_cfg_path.is_file():
        raise _fail(folder, "the diffusers folder has no unet/config.json (it is incomplete)",
                    "Download the complete model folder again.")
    unet_cfg = read_json(unet_cfg_path)
    if weights_variant(folder / "unet") is False:
        raise _fail(folder, "the diffusers folder has configs but no UNet weights",
                    "Download the model's weight files too (unet/diffusion_pytorch_model.safetensors, ...).")
    in_ch = unet_cfg.get("in_channels", 4)
    if in_ch != 4:
        kind = {9: "an inpainting model", 8: "an instruct-pix2pix model"}.get(in_ch, "a model")
        raise _fail(folder, f"this is {kind} (its UNet takes {in_ch} input channels instead of 4)",
                    "LoRAs are trained on the regular text-to-image base model; choose that one.")

    family: str | None
    if unet_cfg.get("addition_embed_type") == "text_time" or "text_encoder_2" in index:
        if not component("text_encoder") or not component("text_encoder_2"):
            raise _fail(folder, "this is the SDXL refiner (it has only one text encoder), not a base model",
                        "Choose SDXL base 1.0 (or a finetune of it).")
        family = "sdxl"
    else:
        if not component("text_encoder"):
            raise _fail(folder, f"this {pipe_cls} has no text encoder", "Choose a complete model folder.")
        family = FAMILY_BY_CONTEXT_WIDTH.get(unet_cfg.get("cross_attention_dim"))
        if family == "sdxl":  # a 2048 context with one text encoder is not an SDXL base
            family = None
        if family is None:  # non-standard sizes (e.g. tiny test models): the text encoder tells
            te_cfg_path = folder / "text_encoder" / "config.json"
            act = read_json(te_cfg_path).get("hidden_act") if te_cfg_path.is_file() else None
            family = {"quick_gelu": "sd1", "gelu": "sd2"}.get(act or "")

    v: bool | None = None
    sched_path = folder / "scheduler" / "scheduler_config.json"
    if sched_path.is_file():
        v = read_json(sched_path).get("prediction_type", "epsilon") == "v_prediction"
    elif family != "sd2":
        v = False
    return ModelInfo(family=family, v_prediction=v, layout="diffusers", path=folder,
                     has_vae=(folder / "vae").is_dir() and weights_variant(folder / "vae") is not False)
