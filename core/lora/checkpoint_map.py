"""Where each LoRA-adaptable layer of a base model lives in its files, without loading the model.

For a single-file checkpoint (LDM/SGM keys: ``model.diffusion_model.input_blocks.4.1...``, CLIP-L
``cond_stage_model.transformer.text_model...``, OpenCLIP ``...resblocks.N.attn.in_proj_weight`` with q/k/v
stacked) or a diffusers folder (``unet/diffusion_pytorch_model.safetensors``, ``text_encoder/model.safetensors``),
:class:`ModelWeights` maps every kohya module name (and its aliases: SDXL diffusers names, ``lora_te1_`` for
SD1) to the tensor key, file and row range of its weight. The layer list comes from the model's configs:
the UNet and text encoders are built on PyTorch's ``meta`` device (no memory), so the names are exactly those
Patina's own LoRA network uses. Tensors are then read one at a time with ``safe_open``; a pickled ``.ckpt`` is
loaded whole through the restricted loader (it has no index).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patina.core.errors import PatinaError
from patina.core.models.detect import (
    SD1_TE_PREFIX,
    SD2_TE_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    detect_family,
    read_json,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

_EXTRA_UNET = ("conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2",
               "add_embedding.linear_1", "add_embedding.linear_2")
_OPEN_CLIP = re.compile(r"^(?:text_model\.)?encoder\.layers\.(\d+)\.(self_attn\.(q|k|v|out)_proj|mlp\.fc1|mlp\.fc2)$")
COMPONENTS = {"unet": "unet", "te1": "text_encoder", "te2": "text_encoder_2"}


@dataclass
class ModuleRef:
    name: str
    aliases: tuple[str, ...]
    part: str  # unet | te1 | te2
    path: str  # module path inside the diffusers model
    kind: str  # linear | conv1x1 | conv3x3
    shape: tuple[int, ...]
    file: Path
    key: str
    rows: tuple[int, int] | None = None  # a slice of a fused OpenCLIP in_proj weight

    @property
    def in_attention(self) -> bool:
        return self.part != "unet" or ".attentions." in f".{self.path}"


def _component_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        plain = [i for i in indexes if i.name.count(".") == 3] or indexes
        weight_map = read_json(plain[0]).get("weight_map") or {}
        return sorted({folder / f for f in weight_map.values()})
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if f.name.count(".") == 1]
    return plain[:1] or files[:1]


def _kind(shape: tuple[int, ...]) -> str:
    if len(shape) == 4:
        return "conv1x1" if shape[2:] == (1, 1) else "conv3x3"
    return "linear"


class ModelWeights:
    """The LoRA-adaptable layers of a base model and where their weights are (see the module docstring).

    ``family`` (sd1/sd2/sdxl), ``layout`` ("diffusers" or "single_file"), ``modules`` (list of
    :class:`ModuleRef`), ``by_name`` (kohya name or alias → ModuleRef). :meth:`read` returns a weight as
    float32."""

    def __init__(self, path: str | os.PathLike, *, family: str | None = None, config_dir: str | os.PathLike | None = None,
                 what: str = "base model"):
        import torch
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        from patina.core.lora.targets import UNetLayout, _AnyModule, collect_targets
        from patina.core.lora.targets import NetworkSpec
        from patina.core.models.loading import shipped_config_dir

        p = Path(path).expanduser()
        if not p.exists():
            raise PatinaError(f"The {what} {p} does not exist.")
        self.path = p
        self.what = what
        info = detect_family(p)
        fam = family or info.family
        if fam is None:
            raise PatinaError(f"Could not tell the model family of {p.name}; give it (sd1, sd2 or sdxl).")
        if family and info.family and family != info.family:
            raise PatinaError(f"{p.name} is a {info.family.upper()} model, not {family.upper()}.")
        self.family = fam
        self.v_prediction = bool(info.v_prediction)
        self.layout = "diffusers" if p.is_dir() or p.name == "model_index.json" else "single_file"
        if p.name == "model_index.json":
            p = self.path = p.parent
        cfg = p if self.layout == "diffusers" else Path(config_dir) if config_dir else shipped_config_dir(fam, self.v_prediction)
        self._handles: dict[Path, Any] = {}
        self._pickle: dict | None = None

        with torch.device("meta"), _quiet():
            unet = UNet2DConditionModel.from_config(read_json(cfg / "unet" / "config.json"))
            tes = [CLIPTextModel(CLIPTextConfig.from_pretrained(str(cfg / "text_encoder"), local_files_only=True))]
            if fam == "sdxl":
                tes.append(CLIPTextModelWithProjection(
                    CLIPTextConfig.from_pretrained(str(cfg / "text_encoder_2"), local_files_only=True)))
        targets = collect_targets(unet, tes, fam, NetworkSpec(), from_weights=_AnyModule())
        layout = UNetLayout(unet)
        extra = []
        for path_ in _EXTRA_UNET:
            with contextlib.suppress(AttributeError):
                mod = unet.get_submodule(path_)
                sgm = layout.to_sgm(path_)
                dn, sn = "lora_unet_" + path_.replace(".", "_"), "lora_unet_" + sgm.replace(".", "_")
                name, aliases = (sn, (dn,)) if fam == "sdxl" else (dn, (sn,))
                extra.append(("unet", path_, name, aliases, tuple(mod.weight.shape)))
        entries = [(t.part, t.path, t.name, t.aliases, tuple(t.root.get_submodule(t.path).weight.shape))
                   for t in targets] + extra

        # where the tensors are: {key: file}
        self.keys: dict[str, Path] = {}
        if self.layout == "diffusers":
            from patina.core.models.checkpoint_files import read_safetensors_header

            if not _component_files(p / "unet"):
                raise PatinaError(f"{p.name}/unet has no .safetensors weights; the LoRA tools read .safetensors only "
                                  "(re-save the folder with safe serialization, or use a single-file checkpoint).")
            for part, sub in COMPONENTS.items():
                for f in _component_files(p / sub):
                    tensors, _ = read_safetensors_header(f)
                    for k in tensors:
                        self.keys[f"{sub}/{k}"] = f
        else:
            from patina.core.models.checkpoint_files import load_state_dict_safely, read_safetensors_header, sniff_format

            if sniff_format(p) == "safetensors":
                tensors, _ = read_safetensors_header(p)
                self.keys = {k: p for k in tensors}
            else:
                self._pickle = load_state_dict_safely(p)
                self.keys = {k: p for k in self._pickle}

        self.modules: list[ModuleRef] = []
        self.by_name: dict[str, ModuleRef] = {}
        missing = 0
        for part, mpath, name, aliases, shape in entries:
            loc = self._locate(part, mpath, shape, layout)
            if loc is None:
                missing += 1
                continue
            key, rows = loc
            stored = key.split("/", 1)[1] if self.layout == "diffusers" else key
            ref = ModuleRef(name, tuple(aliases), part, mpath, _kind(shape), shape, self.keys[key], stored, rows)
            self.modules.append(ref)
            for n in (name, *aliases):
                self.by_name.setdefault(n, ref)
        if not any(m.part == "unet" for m in self.modules):
            raise PatinaError(f"{p.name}: no UNet weights were found where a {fam.upper()} model keeps them; "
                              "the file or folder is incomplete, or not a base model.")

    # -- key lookup ------------------------------------------------------------------------------------------
    def _locate(self, part: str, path: str, shape: tuple[int, ...], layout) -> tuple[str, tuple[int, int] | None] | None:
        bare = path[len("text_model."):] if path.startswith("text_model.") else path
        if self.layout == "diffusers":
            sub = COMPONENTS[part]
            for cand in ((path,) if part == "unet" else (bare, "text_model." + bare)):
                if f"{sub}/{cand}.weight" in self.keys:
                    return f"{sub}/{cand}.weight", None
            return None
        if part == "unet":
            key = UNET_PREFIX + layout.to_sgm(path) + ".weight"
            return (key, None) if key in self.keys else None
        if self.family == "sd1":
            prefix, open_clip = SD1_TE_PREFIX, False
        elif self.family == "sd2":
            prefix, open_clip = SD2_TE_PREFIX, True
        else:
            prefix, open_clip = (SDXL_TE1_PREFIX, False) if part == "te1" else (SDXL_TE2_PREFIX, True)
        if not open_clip:
            key = prefix + "text_model." + bare + ".weight"
            return (key, None) if key in self.keys else None
        m = _OPEN_CLIP.match(bare)
        if m is None:
            return None
        layer, sub, qkv = m[1], m[2], m[3]
        base = f"{prefix}transformer.resblocks.{layer}."
        if qkv in ("q", "k", "v"):
            d = shape[0]
            i = "qkv".index(qkv)
            key = base + "attn.in_proj_weight"
            return (key, (i * d, (i + 1) * d)) if key in self.keys else None
        key = base + {"self_attn.out_proj": "attn.out_proj.weight", "mlp.fc1": "mlp.c_fc.weight",
                      "mlp.fc2": "mlp.c_proj.weight"}[sub]
        return (key, None) if key in self.keys else None

    # -- reading ---------------------------------------------------------------------------------------------
    def handle(self, file: Path):
        from safetensors import safe_open

        h = self._handles.get(file)
        if h is None:
            try:
                h = self._handles[file] = safe_open(str(file), framework="pt")
            except Exception as exc:  # noqa: BLE001
                raise PatinaError(f"Could not read {file} ({exc}); the file may be damaged.") from None
        return h

    def tensor(self, file: Path, key: str) -> "torch.Tensor":
        if self._pickle is not None:
            return self._pickle[key]
        return self.handle(file).get_tensor(key)

    def read(self, ref: ModuleRef) -> "torch.Tensor":
        t = self.tensor(ref.file, ref.key)
        if ref.rows is not None:
            t = t[ref.rows[0]:ref.rows[1]]
        return t.float().reshape(ref.shape)

    def close(self) -> None:
        self._handles.clear()
        self._pickle = None

    def __enter__(self) -> "ModelWeights":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _quiet():
    import logging

    loggers = [logging.getLogger(n) for n in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
