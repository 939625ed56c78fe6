"""Which modules of the UNet and text encoders a LoRA/LoCon spec adapts, and what kohya calls them.

LyCORIS LoHa/LoKr specs (``NetworkSpec.algo``) adapt the same modules as LoCon (conv_dim/conv_alpha for the
3×3 convolutions); LyCORIS's own "full" preset would add conv_in, conv_out and the time embedding too.

:class:`NetworkSpec` holds the network settings (ranks, alphas, block dims/alphas, block lr weights) and
checks them; :class:`UNetLayout` maps diffusers UNet paths to SGM paths and sd-scripts block indices;
:func:`collect_targets` chooses the modules (with their rank and alpha) that
:func:`patina.core.lora.network.build_network` injects adapters into; :func:`module_shapes` lists every
layer a kohya file can adapt in a model.

Block indices follow sd-scripts (facts from ``networks/lora.py``, re-implemented here):

* SD1/SD2: 25 blocks; block 0 = conv_in (never a LoRA), 1..11 = SGM ``input_blocks.1..11``, 12 = mid,
  13..24 = ``output_blocks.0..11``. down/up lr weights have 12 values each, mid 1.
* SDXL: 23 blocks; 0 = time/label embedding, 1..9 = ``input_blocks.0..8``, 10..12 = ``middle_block.0..2``,
  13..21 = ``output_blocks.0..8``, 22 = out. down/up lr weights have 9 values each, mid 3.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from patina.core.config.schema import LORA_TYPE_ALGO, LR_WEIGHT_PRESETS  # stated in the schema
from patina.core.errors import PatinaError
from patina.core.models.families import check_family

UNET_ATTN_CLASSES = ("Transformer2DModel",)
UNET_CONV_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")



@dataclass(frozen=True)
class BlockLayout:
    """kohya's block-weight layout for a model family."""

    down: int  # values in down_lr_weight
    mid: int  # values in mid_lr_weight
    up: int  # values in up_lr_weight
    total: int  # values in block_dims / block_alphas / conv_block_dims / conv_block_alphas


BLOCK_LAYOUTS = {
    "sd1": BlockLayout(down=12, mid=1, up=12, total=25),
    "sd2": BlockLayout(down=12, mid=1, up=12, total=25),
    "sdxl": BlockLayout(down=9, mid=3, up=9, total=23),
}


_family = check_family


# ----------------------------------------------------------------------------------------------------------
# Spec
# ----------------------------------------------------------------------------------------------------------

def _parse_list(value: Any, field_name: str, cast=float) -> list | None:
    """None/""/[] → None; "1,2,3" or a sequence → list of numbers."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        parts = [p.strip() for p in text.split(",") if p.strip()]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
        if not parts:
            return None
    out = []
    for p in parts:
        try:
            number = float(p)
            out.append(cast(number) if cast is not int else int(round(number)))
        except (TypeError, ValueError):
            raise PatinaError(f"{field_name}: {p!r} is not a number. Write numbers separated by commas.") from None
    return out


def lr_weight_preset(name: str, count: int) -> list[float]:
    """kohya's down/up lr weight presets: sine, cosine, linear, reverse_linear, zeros, with an optional
    ``+base`` suffix added to every value (e.g. ``"cosine+0.5"``)."""
    preset, _, base_text = name.strip().partition("+")
    try:
        base = float(base_text) if base_text else 0.0
    except ValueError:
        raise PatinaError(f"Block lr weight preset {name!r}: {base_text!r} after '+' is not a number.") from None
    n = max(count - 1, 1)
    if preset == "sine":
        values = [math.sin(math.pi / 2 * i / n) for i in range(count)]
    elif preset == "cosine":
        values = [math.sin(math.pi / 2 * i / n) for i in range(count)][::-1]
    elif preset == "linear":
        values = [i / n for i in range(count)]
    elif preset == "reverse_linear":
        values = [i / n for i in range(count)][::-1]
    elif preset == "zeros":
        values = [0.0] * count
    else:
        raise PatinaError(
            f"Unknown block lr weight preset {preset!r}: use {', '.join(LR_WEIGHT_PRESETS)} or a list of numbers.")
    return [v + base for v in values]


@dataclass
class NetworkSpec:
    """What network to build. Field names follow kohya's settings (``network_dim`` etc.).

    Block-wise fields accept a list of numbers or a comma-separated string (the way kohya_ss stores them);
    ``down_lr_weight``/``up_lr_weight`` also accept a preset name (sine, cosine, linear, reverse_linear, zeros,
    optionally ``+base``). ``mid_lr_weight`` accepts a single number too.
    """

    network_dim: int = 8
    network_alpha: float | None = 1.0
    conv_dim: int | None = None  # 0/None: plain LoRA; > 0: LoCon (3×3 convs of ResNet blocks and samplers)
    conv_alpha: float | None = None  # None: 1.0, as sd-scripts
    network_dropout: float = 0.0
    train_unet: bool = True
    train_text_encoder: bool = True
    down_lr_weight: Any = None
    mid_lr_weight: Any = None
    up_lr_weight: Any = None
    block_lr_zero_threshold: float = 0.0
    block_dims: Any = None
    block_alphas: Any = None
    conv_block_dims: Any = None
    conv_block_alphas: Any = None
    algo: str = "lora"  # "lora" (LoRA/LoCon), "loha" or "lokr" (LyCORIS; see network.py)
    factor: int = -1  # LoKr: Kronecker factor (-1: nearest the square root), as LyCORIS's ``factor``
    use_tucker: bool = False  # LyCORIS Tucker/CP decomposition of 3x3 convs: not supported, must stay off
    decompose_both: bool = False  # LoKr: split the first factor too (set when a file has lokr_w1_a/_b)
    rank_dropout: float = 0.0  # LoHa/LoKr: share of the update's rows dropped each step (LyCORIS's rank_dropout)
    module_dropout: float = 0.0  # LoHa/LoKr: probability of skipping a module for a step
    rank_dropout_scale: bool = False  # LoKr: rescale the kept rows (peft's LoHa always does)

    @classmethod
    def from_values(cls, values: dict) -> "NetworkSpec":
        """The spec of a training config (Patina's, or kohya_ss-style: ``network_dim``, ``LoRA_type``,
        ``unet_lr``, ...). The engine builds its network from this; it is the one config → spec mapping.

        conv_dim/conv_alpha and the conv block settings count only for a LoCon ``LoRA_type`` (kohya_ss hides
        and ignores them for Standard). A part trains when its learning rate is above 0, as
        :func:`patina.core.config.schema.training_lrs` says (a missing lr, in a kohya_ss config, trains it);
        ``network_train_unet_only``/``..._text_encoder_only`` flags win. Block settings are kohya's text (or
        lists); blank text is "not set"."""
        def num(key):
            v = values.get(key)
            return None if v in (None, "") else float(v)

        def block(key, allowed=True):
            v = values.get(key) if allowed else None
            if isinstance(v, str):
                v = v.strip()
            return v if v not in (None, "", [], ()) else None

        lora_type = str(values.get("LoRA_type") or "Standard")
        algo = LORA_TYPE_ALGO.get(lora_type, "lora")
        locon = "locon" in lora_type.lower() or algo != "lora"  # the types with convolution modules
        unet_lr, te_lr = num("unet_lr"), num("text_encoder_lr")
        train_unet = unet_lr is None or unet_lr > 0
        train_te = te_lr is None or te_lr > 0
        if values.get("network_train_unet_only"):
            train_te = False
        if values.get("network_train_text_encoder_only"):
            train_unet = False
        return cls(
            network_dim=_int(values.get("network_dim") or 8),
            network_alpha=num("network_alpha") if num("network_alpha") is not None else 1.0,
            conv_dim=_int(values["conv_dim"]) if locon and num("conv_dim") else None,
            conv_alpha=num("conv_alpha") if locon else None,
            network_dropout=num("network_dropout") or 0.0,
            train_unet=train_unet,
            train_text_encoder=train_te,
            down_lr_weight=block("down_lr_weight"),
            mid_lr_weight=block("mid_lr_weight"),
            up_lr_weight=block("up_lr_weight"),
            block_lr_zero_threshold=num("block_lr_zero_threshold") or 0.0,
            block_dims=block("block_dims"),
            block_alphas=block("block_alphas"),
            conv_block_dims=block("conv_block_dims", locon),
            conv_block_alphas=block("conv_block_alphas", locon),
            algo=algo,
            factor=_int(values["factor"]) if algo == "lokr" and num("factor") is not None else -1,
            use_tucker=bool(values.get("use_tucker")) and algo != "lora",
            decompose_both=bool(values.get("decompose_both")) and algo == "lokr",
            rank_dropout=(num("rank_dropout") or 0.0) if algo != "lora" else 0.0,
            module_dropout=(num("module_dropout") or 0.0) if algo != "lora" else 0.0,
            rank_dropout_scale=bool(values.get("rank_dropout_scale")) and algo == "lokr",
        )

    # -- derived -----------------------------------------------------------------------------------------
    @property
    def is_locon(self) -> bool:
        return bool(self.conv_dim and _int(self.conv_dim) > 0) or _parse_list(
            self.conv_block_dims, "conv_block_dims", int) is not None

    @property
    def uses_block_lr(self) -> bool:
        return any(_present(v) for v in (self.down_lr_weight, self.mid_lr_weight, self.up_lr_weight))

    @property
    def uses_block_dims(self) -> bool:
        """True when ranks/alphas are chosen per block: any of block_dims, block_alphas, conv_block_dims,
        conv_block_alphas given, or block lr weights given (a weight of 0 removes the block's modules).
        (sd-scripts ignores conv_block_dims without block_dims; Patina honours it.)"""
        return self.uses_block_lr or any(_present(v) for v in (
            self.block_dims, self.block_alphas, self.conv_block_dims, self.conv_block_alphas))

    def validate(self, family: str) -> None:
        """Raise :class:`PatinaError` naming the field for any bad value. Called by :func:`build_network`."""
        family = _family(family)
        for name in ("network_dim", "network_alpha", "conv_dim", "conv_alpha", "network_dropout",
                     "block_lr_zero_threshold"):
            value = getattr(self, name)
            if value is None or value == "":
                if name in ("network_dim",):
                    raise PatinaError(f"{name} must be set.")
                continue
            try:
                float(value)
            except (TypeError, ValueError):
                raise PatinaError(f"{name} must be a number (got {value!r}).") from None
        if _int(self.network_dim) < 1:
            raise PatinaError(f"network_dim must be at least 1 (got {self.network_dim}).")
        if self.network_alpha is not None and float(self.network_alpha) < 0:
            raise PatinaError(f"network_alpha must not be negative (got {self.network_alpha}).")
        if self.conv_dim is not None and _int(self.conv_dim) < 0:
            raise PatinaError(f"conv_dim must not be negative (got {self.conv_dim}).")
        if self.conv_alpha is not None and float(self.conv_alpha) < 0:
            raise PatinaError(f"conv_alpha must not be negative (got {self.conv_alpha}).")
        for name in ("network_dropout", "rank_dropout", "module_dropout"):
            if not 0.0 <= float(getattr(self, name) or 0.0) < 1.0:
                raise PatinaError(f"{name} must be in [0, 1) (got {getattr(self, name)}).")
        if self.algo not in ("lora", "loha", "lokr"):
            raise PatinaError(f"Unknown network algorithm {self.algo!r}: use lora, loha or lokr.")
        if self.algo != "lora":
            what = "LoHa" if self.algo == "loha" else "LoKr"
            if self.use_tucker:
                raise PatinaError(f"use_tucker: Tucker/CP decomposition is not supported for {what}; switch it off.")
            if float(self.network_dropout or 0.0) > 0:
                raise PatinaError(f"network_dropout is not available for {what}; set it to 0.")
            if self.algo == "lokr" and (_int(self.factor) == 0 or _int(self.factor) < -1):
                raise PatinaError(f"factor must be -1 (automatic) or a positive number (got {self.factor}).")
        self.block_lr_weights(family)
        self.block_ranks(family)

    def block_lr_weights(self, family: str) -> list[float] | None:
        """The per-block lr multipliers (length ``BLOCK_LAYOUTS[family].total``), after the zero threshold;
        None when no block lr weight is set."""
        family = _family(family)
        if not self.uses_block_lr:
            return None
        lay = BLOCK_LAYOUTS[family]
        label = "SDXL" if family == "sdxl" else "SD1/SD2"

        def part(value, count, name, kind):
            if not _present(value):
                return [1.0] * count
            if isinstance(value, str) and re.match(r"^\s*[A-Za-z_]", value):
                if name == "mid_lr_weight":
                    raise PatinaError("mid_lr_weight takes numbers, not a preset name.")
                return lr_weight_preset(value, count)  # raises for an unknown preset name
            values = _parse_list(value, name, float)
            if len(values) != count:
                raise PatinaError(
                    f"{name} has {len(values)} value{'s' if len(values) != 1 else ''}; {label} needs {count} "
                    f"(one per {kind}).")
            return values

        down = part(self.down_lr_weight, lay.down, "down_lr_weight", "input block")
        mid = part(self.mid_lr_weight, lay.mid, "mid_lr_weight", "middle block")
        up = part(self.up_lr_weight, lay.up, "up_lr_weight", "output block")
        thr = float(self.block_lr_zero_threshold or 0.0)
        weights = [w if w > thr else 0.0 for w in down + mid + up]
        if family == "sdxl":  # sd-scripts: block 0 (embeddings) and 22 (out) always 1.0
            weights = [1.0] + weights + [1.0]
        return weights

    def block_ranks(self, family: str):
        """(block_dims, block_alphas, conv_block_dims, conv_block_alphas) with one entry per block, or None when
        ranks are not chosen per block. Blocks whose lr weight is 0 get dim 0 (no module, as sd-scripts)."""
        family = _family(family)
        if not self.uses_block_dims:
            return None
        n = BLOCK_LAYOUTS[family].total
        label = "SDXL" if family == "sdxl" else "SD1/SD2"
        blocks = ("1 embedding + 9 input + 3 middle + 9 output + 1 out" if family == "sdxl"
                  else "12 input + 1 middle + 12 output")

        def full(value, name, cast, default):
            values = _parse_list(value, name, cast)
            if values is None:
                return None if default is None else [default] * n
            if len(values) != n:
                raise PatinaError(
                    f"{name} has {len(values)} value{'s' if len(values) != 1 else ''}; {label} needs {n} "
                    f"(one per block: {blocks}).")
            if any(v < 0 for v in values):
                raise PatinaError(f"{name} must not contain negative numbers.")
            return values

        dims = full(self.block_dims, "block_dims", int, _int(self.network_dim))
        alphas = full(self.block_alphas, "block_alphas", float,
                      float(self.network_alpha) if self.network_alpha is not None else 0.0)
        conv_dim = _int(self.conv_dim) if self.conv_dim else None
        conv_alpha = float(self.conv_alpha) if self.conv_alpha is not None else 1.0
        conv_dims = full(self.conv_block_dims, "conv_block_dims", int, conv_dim)
        conv_alphas = full(self.conv_block_alphas, "conv_block_alphas", float,
                           conv_alpha if conv_dims is not None else None)
        if conv_dims is not None and conv_alphas is None:
            conv_alphas = [conv_alpha] * n
        weights = self.block_lr_weights(family)
        if weights is not None:
            for i, w in enumerate(weights):
                if w == 0:
                    dims[i] = 0
                    if conv_dims is not None:
                        conv_dims[i] = 0
        return dims, alphas, conv_dims, conv_alphas


def _int(v: Any) -> int:
    return int(round(float(v)))


def _num(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple)):
        return len(value) > 0
    return True


# ----------------------------------------------------------------------------------------------------------
# Names: diffusers UNet path -> SGM path; kohya names
# ----------------------------------------------------------------------------------------------------------

_RESNET_TO_SGM = {
    "conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection", "norm1": "in_layers.0", "norm2": "out_layers.0",
}
_TOP_LEVEL_TO_SGM = {
    "conv_in": "input_blocks.0.0", "conv_out": "out.2", "conv_norm_out": "out.0",
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
}
_RE_DOWN = re.compile(r"^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)(?:\.(.+))?$")
_RE_DOWNSAMPLER = re.compile(r"^down_blocks\.(\d+)\.downsamplers\.0(?:\.(.+))?$")
_RE_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)(?:\.(.+))?$")
_RE_UP = re.compile(r"^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)(?:\.(.+))?$")
_RE_UPSAMPLER = re.compile(r"^up_blocks\.(\d+)\.upsamplers\.0(?:\.(.+))?$")


class UNetLayout:
    """Where each diffusers UNet module sits in the SGM/LDM layout (``input_blocks``/``middle_block``/
    ``output_blocks``), derived from the model itself: the number of resnets per down/up block, which down
    blocks have a downsampler and which up blocks have attentions. Works for 2-level tiny UNets and for
    the real 3-level (SDXL) / 4-level (SD1) ones.
    """

    def __init__(self, unet):
        self.down_start: list[int] = []
        self.down_layers: list[int] = []
        self.down_has_sampler: list[bool] = []
        idx = 1  # input_blocks.0 is conv_in
        for block in unet.down_blocks:
            n = len(block.resnets)
            has_down = getattr(block, "downsamplers", None) is not None and len(block.downsamplers) > 0
            self.down_start.append(idx)
            self.down_layers.append(n)
            self.down_has_sampler.append(has_down)
            idx += n + (1 if has_down else 0)
        self.num_input_blocks = idx
        self.up_start: list[int] = []
        self.up_layers: list[int] = []
        self.up_has_attn: list[bool] = []
        idx = 0
        for block in unet.up_blocks:
            n = len(block.resnets)
            self.up_start.append(idx)
            self.up_layers.append(n)
            attn = getattr(block, "attentions", None)
            self.up_has_attn.append(attn is not None and len(attn) > 0)
            idx += n
        self.num_output_blocks = idx

    @staticmethod
    def _resnet_rest(rest: str | None) -> str | None:
        if rest is None:
            return None
        head, dot, tail = rest.partition(".")
        mapped = _RESNET_TO_SGM.get(head)
        if mapped is None:
            return rest
        return mapped + (dot + tail if dot else "")

    def locate(self, path: str) -> tuple[str, int, int, str | None] | None:
        """(``input``|``middle``|``output``, block index, sub index, rest in SGM spelling) for a module
        path inside a down/mid/up block; None for anything else."""
        m = _RE_DOWN.match(path)
        if m:
            b, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            return ("input", self.down_start[b] + layer, 0 if kind == "resnets" else 1,
                    self._resnet_rest(rest) if kind == "resnets" else rest)
        m = _RE_DOWNSAMPLER.match(path)
        if m:
            b, rest = int(m[1]), m[2]
            if rest is not None and (rest == "conv" or rest.startswith("conv.")):
                rest = "op" + rest[4:]
            return "input", self.down_start[b] + self.down_layers[b], 0, rest
        m = _RE_MID.match(path)
        if m:
            kind, i, rest = m[1], int(m[2]), m[3]
            if kind == "resnets":
                return "middle", 2 * i, 0, self._resnet_rest(rest)
            return "middle", 2 * i + 1, 0, rest
        m = _RE_UP.match(path)
        if m:
            b, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            return ("output", self.up_start[b] + layer, 0 if kind == "resnets" else 1,
                    self._resnet_rest(rest) if kind == "resnets" else rest)
        m = _RE_UPSAMPLER.match(path)
        if m:
            b, rest = int(m[1]), m[2]
            return ("output", self.up_start[b] + self.up_layers[b] - 1, 2 if self.up_has_attn[b] else 1, rest)
        return None

    def to_sgm(self, path: str) -> str:
        """SGM path of a diffusers UNet module path (``down_blocks.1.attentions.0.proj_in`` →
        ``input_blocks.4.1.proj_in``). Raises ValueError for a path with no SGM equivalent."""
        loc = self.locate(path)
        if loc is None:
            for src, dst in _TOP_LEVEL_TO_SGM.items():
                if path == src or path.startswith(src + "."):
                    return dst + path[len(src):]
            raise ValueError(f"no SGM name for UNet module {path!r}")
        where, idx, sub, rest = loc
        if where == "middle":
            base = f"middle_block.{idx}"
        else:
            base = f"{where}_blocks.{idx}.{sub}"
        return base + ("." + rest if rest else "")

    def block_index(self, path: str, family: str) -> int | None:
        """sd-scripts' block index of a UNet module (see the module docstring); None outside the blocks."""
        loc = self.locate(path)
        if loc is None:
            return None
        where, idx, _sub, _rest = loc
        if family == "sdxl":
            return {"input": 1 + idx, "middle": 10 + idx, "output": 13 + idx}[where]
        return {"input": idx, "middle": 12, "output": 13 + idx}[where]


def kohya_te_name(prefix: str, path: str) -> str:
    """``lora_te1`` + ``encoder.layers.0.mlp.fc1`` → ``lora_te1_text_model_encoder_layers_0_mlp_fc1``.
    The ``text_model.`` prefix is forced: transformers ≥ 5.6 flattened CLIPTextModel drops it, but A1111,
    ComfyUI, InvokeAI and sd-scripts only recognise the nested spelling (lora-format.md §1.3)."""
    if not path.startswith("text_model."):
        path = "text_model." + path
    return prefix + "_" + path.replace(".", "_")


def te_prefixes(family: str, count: int) -> list[str]:
    if _family(family) == "sdxl":
        return ["lora_te1", "lora_te2"][:count]
    return ["lora_te"] * count

@dataclass
class Target:
    part: str
    root: Any
    path: str
    kind: str
    name: str
    aliases: tuple[str, ...]
    block: int | None
    rank: int = 0
    alpha: float = 0.0


def _kind(module) -> str:
    import torch

    if isinstance(module, torch.nn.Conv2d):
        return "conv1x1" if tuple(module.kernel_size) == (1, 1) else "conv3x3"
    return "linear"


def _iter_targets(root, classes: Sequence[str]) -> Iterator[tuple[str, Any]]:
    import torch

    seen: set[str] = set()
    for name, module in root.named_modules():
        if type(module).__name__ not in classes:
            continue
        for child_name, child in module.named_modules():
            if not child_name or not isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            path = f"{name}.{child_name}" if name else child_name
            if path not in seen:
                seen.add(path)
                yield path, child


def check_not_adapted(root, what: str) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for _name, module in root.named_modules():
        if isinstance(module, BaseTunerLayer):
            raise PatinaError(
                f"The {what} already carries LoRA layers. Build the network on a freshly loaded model "
                "(or call LoraNetwork.remove() on the old network first).")


def collect_targets(unet, text_encoders, family: str, spec: NetworkSpec,
                     from_weights: dict[str, tuple[int, float]] | None = None) -> list[Target]:
    targets: list[Target] = []
    # Text encoders first (sd-scripts' order).
    if text_encoders and (spec.train_text_encoder or from_weights is not None):
        prefixes = te_prefixes(family, len(text_encoders))
        for i, (te, prefix) in enumerate(zip(text_encoders, prefixes)):
            if te is None:
                continue
            part = f"te{i + 1}"
            for path, module in _iter_targets(te, TE_CLASSES):
                name = kohya_te_name(prefix, path)
                aliases = [prefix + "_" + path.replace(".", "_")]
                if prefix == "lora_te":
                    aliases.append(kohya_te_name("lora_te1", path))
                targets.append(Target(part, te, path, _kind(module), name,
                                       tuple(a for a in aliases if a != name), None))
    if unet is not None and (spec.train_unet or from_weights is not None):
        layout = UNetLayout(unet)
        classes = UNET_ATTN_CLASSES + (UNET_CONV_CLASSES if (spec.is_locon or from_weights is not None) else ())
        for path, module in _iter_targets(unet, classes):
            diffusers_name = "lora_unet_" + path.replace(".", "_")
            if family == "sdxl":
                name = "lora_unet_" + layout.to_sgm(path).replace(".", "_")
                aliases = (diffusers_name,)
            else:
                name, aliases = diffusers_name, ()
            targets.append(Target("unet", unet, path, _kind(module), name, aliases,
                                   layout.block_index(path, family)))

    if from_weights is not None:
        chosen = []
        for t in targets:
            for n in (t.name,) + t.aliases:
                if n in from_weights:
                    t.rank, t.alpha = from_weights[n]
                    chosen.append(t)
                    break
        return chosen

    default_alpha = float(spec.network_alpha) if spec.network_alpha is not None else 0.0
    conv_dim = _int(spec.conv_dim) if spec.conv_dim else 0
    conv_alpha = float(spec.conv_alpha) if spec.conv_alpha is not None else 1.0
    blocks = spec.block_ranks(family)
    chosen = []
    for t in targets:
        rank, alpha = 0, 0.0
        if t.part == "unet" and blocks is not None:
            dims, alphas, conv_dims, conv_alphas = blocks
            if t.block is None:
                raise PatinaError(f"UNet module {t.path} is outside the blocks that block_dims describe.")
            if t.block >= len(dims):
                raise PatinaError(
                    f"This UNet has more blocks than kohya's {family.upper()} block layout "
                    f"({len(dims)} values); block-wise settings cannot be used with it.")
            if t.kind != "conv3x3":
                rank, alpha = dims[t.block], alphas[t.block]
            elif conv_dims is not None:
                rank, alpha = conv_dims[t.block], conv_alphas[t.block]
        elif t.kind != "conv3x3":
            rank, alpha = _int(spec.network_dim), default_alpha
        elif conv_dim:
            rank, alpha = conv_dim, conv_alpha
        if not rank:
            continue
        t.rank = int(rank)
        t.alpha = float(alpha) if alpha else float(rank)  # alpha 0/None means alpha = rank (sd-scripts)
        chosen.append(t)
    return chosen


class _AnyModule(dict):
    """A ``from_weights`` stand-in that selects every module (see :func:`module_shapes`)."""

    def __contains__(self, key) -> bool:
        return True

    def __getitem__(self, key):
        return (1, 1.0)


def module_shapes(unet, text_encoders, family: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every layer a kohya LoRA/LoCon file can adapt in this model: ``{kohya name: (kind, weight shape)}``
    (aliases included: diffusers names of SDXL, ``lora_te1_`` for an SD1/SD2 text encoder)."""
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for t in collect_targets(unet, text_encoders or [], _family(family), NetworkSpec(), from_weights=_AnyModule()):
        shape = tuple(int(x) for x in t.root.get_submodule(t.path).weight.shape)
        for name in (t.name,) + t.aliases:
            out.setdefault(name, (t.kind, shape))
    return out
