"""Exact sizes for the VRAM estimate (patina.core.train.vram), counted without any weights.

The UNet, text encoder(s) and VAE are built from their diffusers configs on PyTorch's ``meta`` device (no
memory, no file read): the model's own folder for a diffusers model, the shipped configs
(``resources/model_configs``) for a single-file checkpoint, which is how Patina loads it. The network's
trainable tensors come from Patina's own targeting code on that meta model (patina.core.lora.targets: the
modules and ranks a run adapts); LoHa/LoKr networks are built by patina.core.lora.network itself. Results
are kept per process: planning again with a changed setting only redoes what the change affects.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from patina.core.models.loading import shipped_config_dir


@dataclass(frozen=True)
class ModelCounts:
    """What the estimate needs to know about one model and one network spec."""

    family: str
    unet: int                               # parameters
    text_encoders: tuple[int, ...]
    vae: int
    lora: tuple[tuple[int, ...], ...]       # shape of every trainable LoRA tensor
    attention: tuple[tuple[int, int], ...]  # (latent downsampling factor, heads) of every UNet self-attention
    te_layers: tuple[tuple[int, int], ...]  # (layers, width) of every text encoder

    @property
    def lora_params(self) -> int:
        return sum(math.prod(shape) for shape in self.lora)


def config_dir_for(model_path: str, family: str, v_prediction: bool = False) -> Path:
    """The diffusers config folder Patina builds *model_path* from."""
    p = Path(str(model_path or "")).expanduser()
    if p.is_file() and p.name == "model_index.json":
        p = p.parent
    if p.is_dir() and (p / "unet" / "config.json").is_file():
        return p
    return shipped_config_dir(family, v_prediction)


def build_models(config_dir: Path, family: str) -> tuple[Any, list, Any]:
    """(UNet, text encoders, VAE) from *config_dir*, with random weights on the current default device
    (call inside ``with torch.device("meta")`` for shapes only)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from patina.core.models.detect import read_json

    unet = UNet2DConditionModel.from_config(read_json(config_dir / "unet" / "config.json"))
    vae = AutoencoderKL.from_config(read_json(config_dir / "vae" / "config.json"))
    tes = [CLIPTextModel(CLIPTextConfig.from_pretrained(str(config_dir / "text_encoder"), local_files_only=True))]
    if family == "sdxl":
        tes.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(
            str(config_dir / "text_encoder_2"), local_files_only=True)))
    return unet, tes, vae


_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^mid_block\.")


def self_attention_layers(unet) -> list[tuple[int, int]]:
    """(latent downsampling factor, heads) of every self-attention layer of a diffusers UNet."""
    levels = len(unet.config.block_out_channels)
    out = []
    for name, module in unet.named_modules():
        if not name.endswith(".attn1") or not hasattr(module, "heads"):
            continue
        m = _BLOCK.match(name)
        if m is None:
            continue
        if m.group(1) == "down_blocks":
            level = int(m.group(2))
        elif m.group(1) == "up_blocks":
            level = levels - 1 - int(m.group(2))
        else:
            level = levels - 1
        out.append((2 ** level, int(module.heads)))
    return out


def network_shapes(unet, text_encoders: list, family: str, spec) -> tuple[tuple[int, ...], ...]:
    """The shape of every tensor the network of *spec* trains. LoRA/LoCon: from the modules Patina's targeting
    code chooses (a rank-r pair per module: down r×in(×k×k), up out×r); LoHa/LoKr factorise in peft's own
    way, so their network is built (slower)."""
    from patina.core.lora.network import build_network
    from patina.core.lora.targets import collect_targets

    if spec.algo != "lora":
        network = build_network(unet, text_encoders, family, spec)
        return tuple(tuple(p.shape) for p in network.trainable_parameters())
    spec.validate(family)
    shapes = []
    for t in collect_targets(unet, text_encoders, family, spec):
        out_features, in_features, *kernel = t.root.get_submodule(t.path).weight.shape
        shapes += [(t.rank, in_features, *kernel), (out_features, t.rank) + (1,) * len(kernel)]
    return tuple(shapes)


_BASE: dict[tuple, tuple] = {}
_LORA: dict[tuple, tuple] = {}


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_models(cfg: Mapping[str, Any], family: str) -> ModelCounts:
    """Parameter counts of the model *cfg* trains and of the network it would build (meta device)."""
    import torch

    from patina.core.lora.targets import NetworkSpec

    folder = config_dir_for(cfg["pretrained_model_name_or_path"], family, bool(cfg.get("v_parameterization")))
    spec = NetworkSpec.from_values(dict(cfg))
    base_key = (str(folder), family)
    lora_key = base_key + (repr(spec),)
    if base_key not in _BASE or lora_key not in _LORA:
        with torch.device("meta"):
            unet, tes, vae = build_models(folder, family)
            _BASE[base_key] = (_numel(unet), tuple(_numel(t) for t in tes), _numel(vae),
                               tuple(self_attention_layers(unet)),
                               tuple((t.config.num_hidden_layers, t.config.hidden_size) for t in tes))
            if lora_key not in _LORA:
                _LORA[lora_key] = network_shapes(unet, tes if spec.train_text_encoder else [], family, spec)
    unet_n, te_n, vae_n, attention, te_layers = _BASE[base_key]
    return ModelCounts(family, unet_n, te_n, vae_n, _LORA[lora_key], attention, te_layers)
