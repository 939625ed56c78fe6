"""The LoRA / LoCon network: peft adapters injected into the UNet and text encoders, named like kohya.

What this module does
---------------------
* :func:`build_network` injects peft LoRA layers (``peft.inject_adapter_in_model``) into the modules kohya's
  ``networks.lora`` targets (see ``shared/reference/lora-format.md`` §1.2):

  - UNet: every ``Linear``/``Conv2d`` inside a ``Transformer2DModel`` (proj_in/proj_out, attn1/attn2
    to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2);
  - LoCon (``conv_dim`` > 0): also every ``Linear``/``Conv2d`` inside ``ResnetBlock2D`` (conv1, conv2,
    conv_shortcut, time_emb_proj), ``Downsample2D`` and ``Upsample2D``. 3×3 convs use conv_dim/conv_alpha,
    the 1×1 conv_shortcut and the Linear time_emb_proj use network_dim/network_alpha (as kohya);
  - text encoders: every Linear inside ``CLIPAttention``/``CLIPMLP`` (q/k/v/out_proj, fc1, fc2).

* :meth:`LoraNetwork.kohya_state_dict` writes kohya names: ``lora_unet_`` + diffusers path (SD1/SD2) or SGM
  path (SDXL), ``lora_te_``/``lora_te1_``/``lora_te2_`` + ``text_model_`` + path; per module
  ``lora_down.weight`` (peft lora_A), ``lora_up.weight`` (peft lora_B) and a 0-dim ``alpha``.

Why ``peft.inject_adapter_in_model`` and not diffusers' ``unet.add_adapter``: it works the same way on the
UNet and on transformers' CLIP models (one code path for three models), it does not depend on diffusers'
or transformers' peft integration (whose behaviour changes between releases), and it lets us name the
adapter ourselves so that a LoRA loaded later by a diffusers pipeline (``adapter_name="default_0"``) never
collides with the one being trained.

Per-module ranks (conv vs linear, block_dims) are peft ``rank_pattern``/``alpha_pattern`` entries keyed by
the *escaped full module path* (peft matches them as regular expressions anchored at the end).

Block indices follow sd-scripts (facts from ``networks/lora.py``, re-implemented here):

* SD1/SD2: 25 blocks; block 0 = conv_in (never a LoRA), 1..11 = SGM ``input_blocks.1..11``, 12 = mid,
  13..24 = ``output_blocks.0..11``. down/up lr weights have 12 values each, mid 1.
* SDXL: 23 blocks; 0 = time/label embedding, 1..9 = ``input_blocks.0..8``, 10..12 = ``middle_block.0..2``,
  13..21 = ``output_blocks.0..8``, 22 = out. down/up lr weights have 9 values each, mid 3.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from patina.core.config.schema import LR_WEIGHT_PRESETS  # noqa: F401 - kohya's presets, stated in the schema
from patina.core.errors import PatinaError
from patina.core.models.families import check_family

if TYPE_CHECKING:  # pragma: no cover
    import torch

ADAPTER_NAME = "patina"

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
        locon = "locon" in lora_type.lower()
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
        if not 0.0 <= float(self.network_dropout or 0.0) < 1.0:
            raise PatinaError(f"network_dropout must be in [0, 1) (got {self.network_dropout}).")
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


# ----------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------

@dataclass
class LoraModuleInfo:
    """One adapted module."""

    name: str  # kohya name, e.g. lora_unet_input_blocks_4_1_proj_in
    part: str  # "unet", "te1" or "te2" (an SD1/SD2 text encoder is "te1", written with prefix lora_te)
    path: str  # module path inside its model (diffusers / transformers spelling)
    kind: str  # "linear", "conv1x1" or "conv3x3"
    rank: int
    alpha: float
    block: int | None = None  # sd-scripts block index (UNet only)
    layer: Any = field(default=None, repr=False)  # the peft LoraLayer
    aliases: tuple[str, ...] = ()  # other names accepted when loading (diffusers-style SDXL, no text_model_)

    @property
    def lora_down(self):
        return self.layer.lora_A[ADAPTER_NAME].weight

    @property
    def lora_up(self):
        return self.layer.lora_B[ADAPTER_NAME].weight

    @property
    def scale(self) -> float:
        return float(self.layer.scaling[ADAPTER_NAME])


@dataclass
class WeightsLoad:
    """What :meth:`LoraNetwork.load_kohya_state_dict` did (a config file's load is config.files.LoadResult)."""

    loaded: list[str]
    missing: list[str]  # network modules the file has no weights for (they keep their initial weights)
    unexpected: list[str]  # file modules the network does not have


@dataclass
class _Target:
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


def _check_not_adapted(root, what: str) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for _name, module in root.named_modules():
        if isinstance(module, BaseTunerLayer):
            raise PatinaError(
                f"The {what} already carries LoRA layers. Build the network on a freshly loaded model "
                "(or call LoraNetwork.remove() on the old network first).")


def _collect_targets(unet, text_encoders, family: str, spec: NetworkSpec,
                     from_weights: dict[str, tuple[int, float]] | None = None) -> list[_Target]:
    targets: list[_Target] = []
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
                targets.append(_Target(part, te, path, _kind(module), name,
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
            targets.append(_Target("unet", unet, path, _kind(module), name, aliases,
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
    for t in _collect_targets(unet, text_encoders or [], _family(family), NetworkSpec(), from_weights=_AnyModule()):
        shape = tuple(int(x) for x in t.root.get_submodule(t.path).weight.shape)
        for name in (t.name,) + t.aliases:
            out.setdefault(name, (t.kind, shape))
    return out


def _patterns(values: dict[str, Any]) -> dict[str, Any]:
    r"""peft rank/alpha patterns: one regex per distinct value, an alternation of the escaped full paths.

    peft tries every pattern on every module (``re.match(rf"(.*\.)?({pattern})$", key)``); one pattern per
    module would cost O(modules²) regex compilations once they overflow ``re``'s cache (measured: 30 s for
    a real SDXL UNet with block_dims), one per distinct value keeps it to a handful of patterns."""
    by_value: dict[Any, list[str]] = {}
    for path, value in values.items():
        by_value.setdefault(value, []).append(re.escape(path))
    return {"(?:" + "|".join(paths) + ")": value for value, paths in by_value.items()}


def _inject(root, targets: list[_Target], dropout: float) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    if not targets:
        return
    rank_counts = Counter(t.rank for t in targets)
    alpha_counts = Counter(t.alpha for t in targets)
    r = rank_counts.most_common(1)[0][0]
    alpha = alpha_counts.most_common(1)[0][0]
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=[t.path for t in targets],
        rank_pattern=_patterns({t.path: t.rank for t in targets if t.rank != r}),
        alpha_pattern=_patterns({t.path: t.alpha for t in targets if t.alpha != alpha}),
        # peft applies dropout to the layer *input* (x -> dropout -> lora_A -> lora_B); sd-scripts'
        # network_dropout drops the *output of lora_down* (the rank-r activations). Both are regularisers
        # of the same strength class; the saved file is identical either way, only training noise differs.
        lora_dropout=float(dropout or 0.0),
        bias="none",
        init_lora_weights=True,  # lora_A kaiming-uniform(a=sqrt(5)), lora_B zeros: the same as sd-scripts
    )
    inject_adapter_in_model(config, root, adapter_name=ADAPTER_NAME)


def _assemble(unet, text_encoders, family: str, spec: NetworkSpec, targets: list[_Target]) -> "LoraNetwork":
    import torch

    roots = [unet] + [te for te in (text_encoders or []) if te is not None]
    for root in roots:
        if root is not None:
            _check_not_adapted(root, "UNet" if root is unet else "text encoder")
            root.requires_grad_(False)

    by_root: dict[int, list[_Target]] = {}
    for t in targets:
        by_root.setdefault(id(t.root), []).append(t)
    for root in roots:
        if root is not None and id(root) in by_root:
            _inject(root, by_root[id(root)], spec.network_dropout)

    modules = []
    for t in targets:
        layer = t.root.get_submodule(t.path)
        if int(layer.r[ADAPTER_NAME]) != t.rank or float(layer.lora_alpha[ADAPTER_NAME]) != t.alpha:
            raise RuntimeError(f"peft gave {t.path} rank {layer.r[ADAPTER_NAME]} alpha "
                               f"{layer.lora_alpha[ADAPTER_NAME]}, expected {t.rank}/{t.alpha}")
        modules.append(LoraModuleInfo(t.name, t.part, t.path, t.kind, t.rank, t.alpha, t.block, layer, t.aliases))
    net = LoraNetwork(unet, list(text_encoders or []), family, spec, modules)
    net.cast_lora_params(torch.float32)
    return net


def build_network(unet, text_encoders: list | None, family: str, spec: NetworkSpec) -> "LoraNetwork":
    """Inject LoRA (or LoCon) adapters into *unet* and *text_encoders* (SD1/SD2: ``[te]``; SDXL:
    ``[te1, te2]``) in place and return the :class:`LoraNetwork` that manages them.

    Base weights are frozen; only LoRA parameters require grad and they are fp32 whatever the base dtype.
    Parts that are not trained (``spec.train_unet``/``spec.train_text_encoder`` False) get no adapters.
    """
    family = _family(family)
    spec.validate(family)
    text_encoders = list(text_encoders or [])
    _check_te_count(family, text_encoders, spec.train_text_encoder)
    if not spec.train_unet and not spec.train_text_encoder:
        raise PatinaError("Nothing to train: both the UNet and the text encoder are switched off.")
    targets = _collect_targets(unet, text_encoders, family, spec)
    if not targets:
        raise PatinaError("These settings create no LoRA module at all (every block has rank 0 or lr weight 0).")
    return _assemble(unet, text_encoders, family, spec, targets)


def build_network_from_weights(unet, text_encoders: list | None, family: str, state_dict: dict,
                               spec: NetworkSpec | None = None) -> "LoraNetwork":
    """Build a network whose modules, ranks and alphas are those of a kohya-format *state_dict* (kohya's
    ``dim_from_weights``) and load the weights. *spec* still supplies dropout and block lr weights."""
    family = _family(family)
    spec = spec or NetworkSpec()
    spec.validate(family)
    text_encoders = list(text_encoders or [])
    modules = _group_kohya(state_dict)
    shapes: dict[str, tuple[int, float]] = {}
    for name, tensors in modules.items():
        down = tensors.get("lora_down.weight")
        if down is None:
            continue
        rank = int(down.shape[0])
        alpha = tensors.get("alpha")
        alpha = float(alpha.item()) if alpha is not None else float(rank)
        shapes[name] = (rank, alpha or float(rank))
    if not shapes:
        raise PatinaError("The LoRA weights hold no kohya-format module (no '*.lora_down.weight' keys).")
    has_te = any(n.startswith("lora_te") for n in shapes)
    _check_te_count(family, text_encoders, has_te)
    targets = _collect_targets(unet, text_encoders, family, spec, from_weights=shapes)
    found = {t.name for t in targets} | {a for t in targets for a in t.aliases}
    unknown = sorted(n for n in shapes if n not in found)
    if unknown:
        raise PatinaError(
            f"{len(unknown)} module(s) of the LoRA file do not exist in this {family.upper()} model; is the file "
            f"for another model family?", problems=unknown[:10] + (["…"] if len(unknown) > 10 else []))
    net = _assemble(unet, text_encoders, family, spec, targets)
    try:
        net.load_kohya_state_dict(state_dict, strict=True)
    except BaseException:
        net.remove()  # leave the models as they were
        raise
    return net


def _check_te_count(family: str, text_encoders: list, needed: bool) -> None:
    if not needed:
        return
    want = 2 if family == "sdxl" else 1
    if len([t for t in text_encoders if t is not None]) != want:
        raise PatinaError(
            f"{family.upper()} has {want} text encoder{'s' if want > 1 else ''}; got {len(text_encoders)}. "
            "Pass them all (or switch text encoder training off).")


_SUPPORTED_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")


def _group_kohya(sd: dict) -> dict[str, dict[str, Any]]:
    modules: dict[str, dict[str, Any]] = {}
    for key, value in sd.items():
        name, dot, suffix = key.partition(".")
        if not dot:
            suffix = ""
        modules.setdefault(name, {})[suffix] = value
    return modules


class LoraNetwork:
    """The adapters of one training run. Build with :func:`build_network`."""

    def __init__(self, unet, text_encoders: list, family: str, spec: NetworkSpec, modules: list[LoraModuleInfo]):
        self.unet = unet
        self.text_encoders = text_encoders
        self.family = family
        self.spec = spec
        self.modules = modules
        self.block_lr_weights = spec.block_lr_weights(family)
        self._by_name: dict[str, LoraModuleInfo] = {}
        for m in modules:
            if m.name in self._by_name:
                raise RuntimeError(f"duplicate LoRA name {m.name}")
            self._by_name[m.name] = m
        self._aliases = {a: m for m in modules for a in m.aliases if a not in self._by_name}

    # -- inspection ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.modules)

    @property
    def unet_modules(self) -> list[LoraModuleInfo]:
        return [m for m in self.modules if m.part == "unet"]

    @property
    def text_encoder_modules(self) -> list[LoraModuleInfo]:
        return [m for m in self.modules if m.part != "unet"]

    def module(self, name: str) -> LoraModuleInfo:
        return self._by_name[name]

    def lora_parameters(self) -> Iterator[tuple[str, "torch.nn.Parameter"]]:
        """(``<kohya name>.lora_down.weight`` | ``.lora_up.weight``, parameter) for every module."""
        for m in self.modules:
            yield f"{m.name}.lora_down.weight", m.lora_down
            yield f"{m.name}.lora_up.weight", m.lora_up

    def trainable_parameters(self) -> list["torch.nn.Parameter"]:
        return [p for _, p in self.lora_parameters() if p.requires_grad]

    # -- optimizer -------------------------------------------------------------------------------------
    def param_groups(self, unet_lr: float | None, text_encoder_lr: float | Sequence[float] | None,
                     loraplus_unet_ratio: float | None = 0, loraplus_te_ratio: float | None = 0, *,
                     default_lr: float | None = None) -> list[dict]:
        """Optimizer parameter groups, each ``{"params", "lr", "name"}``.

        * ``"textencoder"`` (or ``"textencoder1"``/``"textencoder2"`` when *text_encoder_lr* is a sequence with
          different values per encoder) and ``"unet"``, or ``"unet_block_N"`` per sd-scripts block when block lr
          weights are set (lr multiplied by the block's weight).
        * LoRA+: with a ratio > 0, each group's ``lora_up`` (peft lora_B) parameters go to a ``<name>_plus``
          group with lr × ratio.
        * A None lr falls back to *default_lr*. Groups with lr 0 are left out (as sd-scripts), so a part with
          lr 0 is not trained.
        """
        def resolve(lr, what):
            if lr is None:
                lr = default_lr
            if lr is None:
                raise PatinaError(f"No learning rate for the {what}: set it or the base learning rate.")
            return float(lr)

        groups: list[dict] = []

        def add(mods: list[LoraModuleInfo], lr: float, ratio: float | None, name: str) -> None:
            if not mods or lr == 0:
                return
            if ratio:
                plain = [m.lora_down for m in mods]
                plus = [m.lora_up for m in mods]
                groups.append({"params": plain, "lr": lr, "name": name})
                groups.append({"params": plus, "lr": lr * float(ratio), "name": name + "_plus"})
            else:
                params = [p for m in mods for p in (m.lora_down, m.lora_up)]
                groups.append({"params": params, "lr": lr, "name": name})

        te_mods = self.text_encoder_modules
        if te_mods:
            if isinstance(text_encoder_lr, (list, tuple)):
                lrs = [resolve(v, "text encoder") for v in text_encoder_lr] or [resolve(None, "text encoder")]
                parts = sorted({m.part for m in te_mods})
                if len(set(lrs)) == 1 or len(parts) == 1:
                    add(te_mods, lrs[0], loraplus_te_ratio, "textencoder")
                else:
                    for part in parts:
                        i = int(part[2:]) - 1
                        lr = lrs[i] if i < len(lrs) else lrs[-1]
                        add([m for m in te_mods if m.part == part], lr, loraplus_te_ratio, f"textencoder{i + 1}")
            else:
                add(te_mods, resolve(text_encoder_lr, "text encoder"), loraplus_te_ratio, "textencoder")

        unet_mods = self.unet_modules
        if unet_mods:
            base = resolve(unet_lr, "UNet")
            if self.block_lr_weights is None:
                add(unet_mods, base, loraplus_unet_ratio, "unet")
            else:
                by_block: dict[int, list[LoraModuleInfo]] = {}
                for m in unet_mods:
                    by_block.setdefault(m.block if m.block is not None else -1, []).append(m)
                for block in sorted(by_block):
                    w = self.block_lr_weights[block] if 0 <= block < len(self.block_lr_weights) else 1.0
                    add(by_block[block], base * w, loraplus_unet_ratio, f"unet_block_{block}")
        return groups

    # -- export / import -------------------------------------------------------------------------------
    def export_alpha(self, m: LoraModuleInfo) -> float:
        """The ``.alpha`` to write so that every client's ``alpha / rank`` equals the trained scale."""
        alpha = float(m.layer.lora_alpha[ADAPTER_NAME])
        if m.layer.use_rslora.get(ADAPTER_NAME, False):  # not used by Patina; kept exact if ever switched on
            alpha *= math.sqrt(m.rank)
        return alpha

    def kohya_state_dict(self, dtype: "torch.dtype | None" = None) -> dict[str, "torch.Tensor"]:
        """kohya-format tensors (CPU, contiguous, *dtype*, default fp16):
        ``<name>.lora_down.weight``, ``<name>.lora_up.weight`` and a 0-dim ``<name>.alpha``."""
        import torch

        dtype = dtype or torch.float16
        sd: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for m in self.modules:
                sd[f"{m.name}.lora_down.weight"] = m.lora_down.detach().to("cpu", dtype).contiguous().clone()
                sd[f"{m.name}.lora_up.weight"] = m.lora_up.detach().to("cpu", dtype).contiguous().clone()
                sd[f"{m.name}.alpha"] = torch.tensor(self.export_alpha(m), dtype=dtype)
        return sd

    def load_kohya_state_dict(self, sd: dict, strict: bool = True) -> WeightsLoad:
        """Copy kohya-format weights into the adapters (continue training from ``network_weights``).

        Also accepts the usual variants of the names (SDXL UNet in diffusers spelling, text encoder names
        without ``text_model_``, ``lora_te1_`` in an SD1 file). A file alpha different from the network's
        replaces it (sd-scripts loads the alpha buffer too), so the scale stays the trained one.

        Raises :class:`PatinaError` for a rank/shape mismatch, for tensors other than lora_down/lora_up/alpha
        (LyCORIS, DoRA, ...) and, when *strict*, for modules missing on either side.
        """
        import torch

        grouped = _group_kohya(sd)
        unexpected, unsupported, mismatched, loaded = [], [], [], []
        matched: dict[str, tuple[LoraModuleInfo, dict]] = {}
        for name, tensors in grouped.items():
            m = self._by_name.get(name) or self._aliases.get(name)
            if m is None:
                unexpected.append(name)
                continue
            extra = sorted(s for s in tensors if s not in _SUPPORTED_SUFFIXES)
            if extra:
                unsupported.append(f"{name}: {', '.join(extra)}")
                continue
            if "lora_down.weight" not in tensors or "lora_up.weight" not in tensors:
                unsupported.append(f"{name}: lora_down.weight and lora_up.weight are both needed")
                continue
            down, up = tensors["lora_down.weight"], tensors["lora_up.weight"]
            if tuple(down.shape) != tuple(m.lora_down.shape) or tuple(up.shape) != tuple(m.lora_up.shape):
                mismatched.append(
                    f"{name}: file down {tuple(down.shape)} up {tuple(up.shape)}, network down "
                    f"{tuple(m.lora_down.shape)} up {tuple(m.lora_up.shape)}")
                continue
            matched[m.name] = (m, tensors)
        if unsupported:
            raise PatinaError(
                "The LoRA file holds tensors Patina cannot continue training from (only plain LoRA/LoCon "
                "lora_down/lora_up/alpha are supported; LyCORIS LoHa/LoKr, Tucker lora_mid and DoRA are not):",
                problems=unsupported[:10] + (["…"] if len(unsupported) > 10 else []))
        if mismatched:
            raise PatinaError(
                "The LoRA file does not fit this network (different rank or model). Set network_dim/conv_dim to "
                "the file's ranks, or build the network from the file's dims:",
                problems=mismatched[:10] + (["…"] if len(mismatched) > 10 else []))
        missing = [m.name for m in self.modules if m.name not in matched]
        if strict and (missing or unexpected):
            problems = [f"missing in file: {n}" for n in missing[:8]] + [f"not in network: {n}" for n in unexpected[:8]]
            raise PatinaError(
                f"The LoRA file and the network differ: {len(missing)} network module(s) have no weights in the "
                f"file and {len(unexpected)} file module(s) are not in the network (another LoRA type, model "
                "family, or train UNet/text encoder setting?).", problems=problems)
        with torch.no_grad():
            for m, tensors in matched.values():
                m.lora_down.copy_(tensors["lora_down.weight"].to(m.lora_down.dtype))
                m.lora_up.copy_(tensors["lora_up.weight"].to(m.lora_up.dtype))
                alpha = tensors.get("alpha")
                alpha = float(alpha.item()) if alpha is not None else float(m.rank)
                self._set_alpha(m, alpha or float(m.rank))
                loaded.append(m.name)
        return WeightsLoad(loaded=loaded, missing=missing, unexpected=unexpected)

    def _set_alpha(self, m: LoraModuleInfo, alpha: float) -> None:
        m.alpha = alpha
        m.layer.lora_alpha[ADAPTER_NAME] = alpha
        m.layer.scaling[ADAPTER_NAME] = alpha / m.rank

    # -- training helpers ------------------------------------------------------------------------------
    def cast_lora_params(self, dtype: "torch.dtype") -> None:
        """Cast the LoRA weights (default after build: fp32, whatever the base model's dtype)."""
        for m in self.modules:
            m.layer.lora_A[ADAPTER_NAME].to(dtype=dtype)
            m.layer.lora_B[ADAPTER_NAME].to(dtype=dtype)

    def to(self, device) -> "LoraNetwork":
        """Move the LoRA weights (not the base model) to *device*."""
        for m in self.modules:
            m.layer.lora_A[ADAPTER_NAME].to(device)
            m.layer.lora_B[ADAPTER_NAME].to(device)
        return self

    def apply_max_norm(self, max_norm: float) -> tuple[int, float, float]:
        """sd-scripts' ``scale_weight_norms``: where ‖ΔW‖ = ‖up·down‖·alpha/rank exceeds *max_norm*, scale
        up and down by sqrt(max_norm/‖ΔW‖) each. Returns (modules scaled, mean norm, max norm) after scaling."""
        import torch

        if not self.modules:
            return 0, 0.0, 0.0
        scaled, norms = 0, []
        with torch.no_grad():
            for m in self.modules:
                down, up = m.lora_down, m.lora_up
                delta = up.reshape(up.shape[0], -1).float() @ down.reshape(down.shape[0], -1).float()
                norm = float(delta.norm()) * m.scale
                if norm > max_norm and norm > 0:
                    ratio = max_norm / norm
                    factor = math.sqrt(ratio)
                    up.mul_(factor)
                    down.mul_(factor)
                    scaled += 1
                    norm *= ratio
                norms.append(norm)
        return scaled, sum(norms) / len(norms), max(norms)

    def set_enabled(self, enabled: bool) -> None:
        """Switch the adapters on or off (off: the models behave like the base models). Keeps requires_grad."""
        flags = [(p, p.requires_grad) for _, p in self.lora_parameters()]
        for m in self.modules:
            m.layer.enable_adapters(bool(enabled))
        for p, flag in flags:  # peft toggles requires_grad; a switch must not change what trains
            p.requires_grad_(flag)

    @property
    def enabled(self) -> bool:
        return bool(self.modules) and not self.modules[0].layer.disable_adapters

    @contextlib.contextmanager
    def disable_adapters(self) -> Iterator[None]:
        """``with net.disable_adapters(): ...`` runs the base models (e.g. a sample without the LoRA)."""
        was = self.enabled
        self.set_enabled(False)
        try:
            yield
        finally:
            self.set_enabled(was)

    def remove(self) -> None:
        """Take the adapters out of the models again (the base layers are put back)."""
        for m in self.modules:
            root = self.unet if m.part == "unet" else self.text_encoders[int(m.part[2:]) - 1]
            parent_path, _, child = m.path.rpartition(".")
            parent = root.get_submodule(parent_path) if parent_path else root
            setattr(parent, child, m.layer.get_base_layer())
        for root in [self.unet, *self.text_encoders]:
            if root is not None and hasattr(root, "peft_config"):  # set by peft.inject_adapter_in_model
                with contextlib.suppress(AttributeError):
                    del root.peft_config
        self.modules = []
        self._by_name = {}
        self._aliases = {}
