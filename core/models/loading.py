"""Loading Stable Diffusion base models (SD 1.x, SD 2.x incl. 768-v, SDXL base) fully offline.

Accepted inputs:

* a **diffusers folder** (the one holding ``model_index.json``);
* a **single-file checkpoint** in the original LDM / A1111 layout: ``.safetensors`` (preferred) or a
  pickled ``.ckpt``/``.pt``, read through :mod:`patina.core.models.checkpoint_files`'s restricted loader;
* optionally a separate **VAE**: an LDM-layout VAE file, a diffusers-layout VAE file, or a diffusers
  ``vae`` folder.

Nothing here ever touches the network. Single-file checkpoints are given the diffusers configs that
Patina ships in ``resources/model_configs/<sd1|sd2|sd2-v|sdxl>/`` (the published configs of SD 1.5,
SD 2.1-base, SD 2.1-768-v and SDXL base 1.0); tokenizers are built from the CLIP BPE vocabulary in
``resources/tokenizers/clip/``. The UNet and VAE go through diffusers' ``from_single_file`` with
``config=<that folder>`` and ``local_files_only=True``; the text encoders are converted here (the
CLIP-L ``transformer.text_model`` layout and the OpenCLIP ``resblocks`` layout of SD2 / SDXL's second
encoder) and loaded strictly, so a truncated file is reported instead of silently half-loaded.

The model family is read from the checkpoint's tensor names (``conditioner.`` → SDXL,
``cond_stage_model.model.`` → SD2, ``cond_stage_model.transformer.`` → SD1), or for a diffusers folder
from its UNet/text-encoder configs. Everything a user can get wrong raises one
:class:`~patina.core.errors.PatinaError` that says what was found, what is supported and what to do.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # torch is imported where weights are loaded
    import torch

from patina.core.models.checkpoint_files import load_state_dict_safely
from patina.core.errors import PatinaError
from patina.core.models.detect import (
    SD1_TE_PREFIX,
    SD2_TE_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    VAE_PREFIX,
    ModelInfo,
    classify,
    detect_diffusers,
    file_index,
    looks_like_lora,
    not_found_error,
    read_json,
    weights_variant,
)
from patina.core.models.families import FAMILIES, FAMILY_NAMES
from patina.core.models.streaming import convert_in_place
from patina.core.paths import resources_dir

__all__ = [
    "FAMILIES", "BaseModel", "load_base_model", "load_state_dict_safely", "load_vae",
    "shipped_config_dir",
]



def model_configs_dir() -> Path:
    return resources_dir() / "model_configs"


def clip_tokenizer_dir() -> Path:
    return resources_dir() / "tokenizers" / "clip"


def shipped_config_dir(family: str, v_prediction: bool = False) -> Path:
    """The bundled diffusers config folder for *family* (SD2 has a 512-epsilon and a 768-v variant)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    name = "sd2-v" if family == "sd2" and v_prediction else family
    return model_configs_dir() / name


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


@dataclass
class BaseModel:
    """A loaded base model, ready for LoRA training.

    ``text_encoders``/``tokenizers`` have one entry (SD 1.x/2.x) or two (SDXL: CLIP-L, then OpenCLIP
    bigG with projection). ``noise_scheduler`` is a :class:`diffusers.DDPMScheduler` with the model's
    beta schedule and ``prediction_type`` (use it for ``add_noise`` / targets); ``scheduler_config`` is
    the model's own scheduler config (``prediction_type`` set) for building sampling schedulers."""

    family: str
    v_prediction: bool
    unet: Any
    vae: Any
    text_encoders: list
    tokenizers: list
    noise_scheduler: Any
    scheduler_config: dict
    info: ModelInfo
    config_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    def make_scheduler(self, class_name: str | None = None):
        """A sampling scheduler built from :attr:`scheduler_config` (default: the model's own class)."""
        import diffusers

        name = class_name or self.scheduler_config.get("_class_name") or "DDIMScheduler"
        cls = getattr(diffusers, name, None)
        if cls is None:
            raise ValueError(f"unknown diffusers scheduler {name!r}")
        return cls.from_config({k: v for k, v in self.scheduler_config.items() if not k.startswith("_")})

    def pipeline(self, scheduler=None, *, unet=None, vae=None, text_encoders=None, tokenizers=None, **kwargs):
        """A StableDiffusion(XL)Pipeline over these components for sample images (no safety checker,
        no watermarker). ``unet``/``vae``/``text_encoders``/``tokenizers`` replace the loaded ones (e.g.
        the LoRA-wrapped UNet during training); other keyword arguments go to the pipeline constructor."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        scheduler = scheduler if scheduler is not None else self.make_scheduler()
        unet = unet if unet is not None else self.unet
        vae = vae if vae is not None else self.vae
        tes = list(text_encoders) if text_encoders else list(self.text_encoders)
        toks = list(tokenizers) if tokenizers else list(self.tokenizers)
        if len(tes) != len(self.text_encoders) or len(toks) != len(self.tokenizers):
            raise ValueError(f"{self.family} needs {len(self.text_encoders)} text encoder(s) and tokenizer(s)")
        if self.is_sdxl:
            kwargs.setdefault("force_zeros_for_empty_prompt", True)
            kwargs.setdefault("add_watermarker", False)
            return StableDiffusionXLPipeline(
                vae=vae, text_encoder=tes[0], text_encoder_2=tes[1], tokenizer=toks[0], tokenizer_2=toks[1],
                unet=unet, scheduler=scheduler, **kwargs)
        kwargs.setdefault("requires_safety_checker", False)
        return StableDiffusionPipeline(
            vae=vae, text_encoder=tes[0], tokenizer=toks[0], unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, **kwargs)


def _resolve_family(info: ModelInfo, family: str | None) -> str:
    if family is not None and family not in FAMILIES:
        raise PatinaError(f"Unknown model type {family!r}; use one of {', '.join(FAMILIES)} (or leave it on auto).")
    if family is None:
        if info.family is None:
            raise PatinaError(
                f"{info.path.name}: could not tell whether this is an SD 1.x, SD 2.x or SDXL model from its "
                "configuration. Set the model type (sd1 / sd2 / sdxl) by hand.")
        return info.family
    if info.family is not None and info.family != family:
        raise PatinaError(
            f"The model type is set to {FAMILY_NAMES[family]}, but {info.path.name} is a "
            f"{FAMILY_NAMES[info.family]} model (detected from its weights). Set the model type to "
            f"{info.family} or to auto-detect.")
    return family


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _check_complete(model: torch.nn.Module, what: str, source: str) -> None:
    missing = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if missing:
        raise PatinaError(
            f"{source}: the {what} weights are incomplete ({len(missing)} tensors missing, e.g. {missing[0]}). "
            "The file is damaged or truncated, or it is not the model type it appears to be.")


def _tokenizer(folder: Path, family: str, second: bool = False):
    """A CLIPTokenizer: from *folder* when it holds its own vocabulary, else Patina's bundled CLIP BPE
    with the pad token / length of *folder*'s tokenizer config (SD1 and SDXL's first tokenizer pad
    with ``<|endoftext|>``, SD2 and SDXL's second with ``!``)."""
    from transformers import CLIPTokenizer

    if (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file():
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    settings: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins, as in transformers
        f = folder / name
        if f.is_file():
            settings.update(read_json(f))
    pad = settings.get("pad_token") or ("!" if family == "sd2" or second else "<|endoftext|>")
    if isinstance(pad, dict):
        pad = pad.get("content", "<|endoftext|>")
    max_len = int(settings.get("model_max_length", 77) or 77)
    return CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir()), local_files_only=True, pad_token=pad,
                                         model_max_length=min(max_len, 77))


def _scheduler_configs(raw: dict, v_prediction: bool) -> tuple[dict, Any]:
    from diffusers import DDPMScheduler

    cfg = dict(raw)
    cfg["prediction_type"] = "v_prediction" if v_prediction else "epsilon"
    allowed = set(DDPMScheduler.__init__.__code__.co_varnames)
    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "steps_offset",
            "timestep_spacing", "rescale_betas_zero_snr")
    kwargs = {k: cfg[k] for k in keep if k in cfg and k in allowed}
    noise = DDPMScheduler(**kwargs, prediction_type=cfg["prediction_type"], clip_sample=False)
    return cfg, noise


# ---- text encoders from LDM checkpoints ----------------------------------------------------------


def _clip_l_from_ldm(sd: Mapping[str, torch.Tensor], prefix: str, n_layers: int) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        name = name[len("text_model."):] if name.startswith("text_model.") else name
        if name.endswith("position_ids"):
            continue
        m = re.match(r"encoder\.layers\.(\d+)\.", name)
        if m and int(m[1]) >= n_layers:
            continue
        out[name] = v
    return out


def _open_clip_from_ldm(sd: Mapping[str, torch.Tensor], prefix: str, n_layers: int,
                        projection: bool) -> dict[str, torch.Tensor]:
    """OpenCLIP text tower (fused in_proj, resblocks) -> HF CLIP text names; keeps the first
    ``n_layers`` blocks (SD2's diffusers encoder drops OpenCLIP's last block, as SD2 uses the
    penultimate layer)."""

    def get(name: str) -> torch.Tensor:
        try:
            return sd[prefix + name]
        except KeyError:
            raise KeyError(prefix + name) from None

    out = {
        "embeddings.token_embedding.weight": get("token_embedding.weight"),
        "embeddings.position_embedding.weight": get("positional_embedding"),
        "final_layer_norm.weight": get("ln_final.weight"),
        "final_layer_norm.bias": get("ln_final.bias"),
    }
    if projection:
        out["text_projection.weight"] = get("text_projection").t().contiguous()
    renames = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
               "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(n_layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = get(src + f"attn.in_proj_{kind}").chunk(3, dim=0)
            out[dst + f"self_attn.q_proj.{kind}"] = q.contiguous()
            out[dst + f"self_attn.k_proj.{kind}"] = k.contiguous()
            out[dst + f"self_attn.v_proj.{kind}"] = v.contiguous()
            for a, b in renames.items():
                out[dst + f"{b}.{kind}"] = get(src + f"{a}.{kind}")
    return out


def _text_encoder_from_ldm(sd: Mapping[str, torch.Tensor], config_dir: Path, subfolder: str, prefix: str,
                           open_clip: bool, projection: bool, dtype: torch.dtype, source: str, device=None):
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    what = "second text encoder" if subfolder.endswith("_2") else "text encoder"
    config = CLIPTextConfig.from_pretrained(str(config_dir / subfolder), local_files_only=True)
    try:
        if open_clip:
            weights = _open_clip_from_ldm(sd, prefix, config.num_hidden_layers, projection)
        else:
            weights = _clip_l_from_ldm(sd, prefix, config.num_hidden_layers)
    except KeyError as exc:
        raise PatinaError(f"{source}: the {what} weights are incomplete ({exc.args[0]} is missing). "
                          "The file is damaged or not a standard checkpoint.") from None
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with init_empty_weights():
        model = cls(config)
    expected = list(model.state_dict().keys())
    state = {}
    missing = []
    for key in expected:
        base = key[len("text_model."):] if key.startswith("text_model.") else key
        if base in weights:
            state[key] = weights[base]
        else:
            missing.append(key)
    if missing:
        raise PatinaError(f"{source}: the {what} weights are incomplete ({len(missing)} tensors missing, e.g. "
                          f"{missing[0]}). The file is damaged or not a standard checkpoint.")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise PatinaError(f"{source}: the {what} does not match the expected architecture ({_short(exc)}).") from exc
    model.to(device=device, dtype=dtype)  # already there when streamed: a no-op
    _check_complete(model, what, source)
    return model.eval()


@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers 0.42 warns "modules that should be kept in float32: []" on every ``model.to(dtype)``,
    which ``from_single_file`` does itself; hide that noise while loading."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity(max(level, dlogging.ERROR))
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


def _single_file_component(cls, sd: Mapping[str, torch.Tensor], config_dir: Path, subfolder: str,
                           dtype: torch.dtype, what: str, source: str, device=None):
    try:
        with _quiet_diffusers():
            model = cls.from_single_file(dict(sd), config=str(config_dir), subfolder=subfolder,
                                         local_files_only=True, torch_dtype=dtype, device=device)
    except PatinaError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on a user file becomes one clear message
        if "meta tensor" in str(exc):  # diffusers leaves missing weights on the meta device, then .to() fails
            raise PatinaError(f"{source}: the {what} weights are incomplete (some tensors are missing). The file "
                              "is damaged or truncated, or it is not the model type it appears to be.") from exc
        raise PatinaError(f"{source}: could not load the {what} ({_short(exc)}). The file may be damaged, "
                          "or it is not the model type it appears to be.") from exc
    _check_complete(model, what, source)
    return model.eval()


# ---- VAE -------------------------------------------------------------------------------------------


_OLD_VAE_ATTN = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def read_weights(p: Path, dtype_for, device=None) -> dict:
    """A checkpoint's tensors in their target dtypes (``dtype_for(name)``) on *device*: a ``.safetensors``
    file is streamed tensor by tensor (patina.core.models.streaming), a pickle is unpickled then converted."""
    from patina.core.models.checkpoint_files import read_safetensors_header, sniff_format
    from patina.core.models.streaming import convert_in_place, read_safetensors_to

    kind = sniff_format(p)
    if kind == "safetensors" or (kind is None and p.suffix.lower() == ".safetensors"):
        read_safetensors_header(p)  # the clear message for a file that is not safetensors at all
        return read_safetensors_to(p, dtype_for, device)
    return convert_in_place(load_state_dict_safely(p), dtype_for, device)


def load_vae(path: str | Path, *, family: str, dtype: torch.dtype | None = None,
             config_dir: str | Path | None = None, device=None):
    """Load a separate VAE: a single-file VAE in LDM layout (``.safetensors``/``.ckpt``/``.pt``, e.g.
    ``vae-ft-mse-840000``), a diffusers-layout VAE file (``diffusion_pytorch_model.safetensors``) or a
    diffusers ``vae`` folder. The architecture/scaling factor come from *family*'s config (dtype: float32 if
    not given); the weights are read straight into *dtype* on *device*."""
    import torch
    from diffusers import AutoencoderKL

    dtype = torch.float32 if dtype is None else dtype

    p = Path(path).expanduser()
    cfg_dir = Path(config_dir) if config_dir else shipped_config_dir(family)
    if not p.exists():
        raise PatinaError(f"The VAE {str(p)!r} does not exist. Choose a VAE file or folder on this computer, "
                          "or leave the VAE empty to use the one inside the base model.")
    if p.is_dir():
        sub = None if (p / "config.json").is_file() else ("vae" if (p / "vae" / "config.json").is_file() else "")
        if sub == "":
            raise PatinaError(f"{p.name}: this folder is not a diffusers VAE (no config.json). Choose a VAE "
                              ".safetensors file or a diffusers vae folder.")
        try:
            with _quiet_diffusers():
                vae = AutoencoderKL.from_pretrained(str(p), subfolder=sub, local_files_only=True, torch_dtype=dtype,
                                                    variant=weights_variant(p / sub if sub else p) or None)
        except Exception as exc:  # noqa: BLE001
            raise PatinaError(f"{p.name}: could not load the VAE folder ({_short(exc)}).") from exc
        return vae.to(device).eval() if device is not None else vae.eval()

    sd = read_weights(p, lambda _name: dtype, device)
    keys = list(sd)
    ldm = any(k.startswith(("encoder.down.", VAE_PREFIX + "encoder.", "vae.encoder.down.")) for k in keys)
    diffusers_layout = any(k.startswith("encoder.down_blocks.") for k in keys)
    if not ldm and not diffusers_layout:
        kind = "a LoRA file" if looks_like_lora(keys) else "not a VAE"
        raise PatinaError(f"{p.name}: this is {kind} (no autoencoder weights found). Choose a VAE file such as "
                          "sdxl_vae.safetensors or vae-ft-mse-840000-ema-pruned.safetensors, or leave the VAE "
                          "empty to use the base model's own.")
    conv_out = next((v for k, v in sd.items() if k.endswith("encoder.conv_out.weight")), None)
    if conv_out is not None and conv_out.shape[0] != 8:
        raise PatinaError(f"{p.name}: this VAE has {conv_out.shape[0] // 2} latent channels; SD 1.x/2.x/SDXL "
                          "use 4 (it is probably an SD3 or FLUX VAE). Choose a matching VAE.")
    source = f"VAE {p.name}"
    if ldm:
        return _single_file_component(AutoencoderKL, sd, cfg_dir, "vae", dtype, "VAE", source, device)
    from accelerate import init_empty_weights

    state = {}
    for k, v in sd.items():
        for old, new in _OLD_VAE_ATTN.items():
            if ".mid_block.attentions." in k:
                k = k.replace(old, new)
        state[k] = v
    with init_empty_weights():
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(cfg_dir), subfolder="vae", local_files_only=True))
    try:
        vae.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise PatinaError(f"{source}: the weights do not fit the {FAMILY_NAMES.get(family, family)} VAE "
                          f"({_short(exc)}).") from exc
    torch.nn.Module.to(vae, device=device, dtype=dtype)
    _check_complete(vae, "VAE", source)
    return vae.eval()


# ---- public entry point ----------------------------------------------------------------------------


def load_base_model(path: str | Path, *, family: str | None = None, v_parameterization: bool | None = None,
                    vae_path: str | Path | None = None, dtype: torch.dtype | None = None,
                    config_dir: str | Path | None = None, vae_dtype: torch.dtype | None = None,
                    device=None) -> BaseModel:
    """Load a base model (UNet, VAE, text encoder(s), tokenizer(s), schedulers) fully offline.

    * ``family``: ``"sd1"``/``"sd2"``/``"sdxl"`` or ``None`` to detect. A value that contradicts the
      weights is an error (the load would fail anyway); it decides only when detection cannot.
    * ``v_parameterization``: force v-prediction on/off. ``None`` uses what the model says (diffusers
      scheduler config, safetensors ``modelspec.prediction_type``, a ``v_pred`` marker); SD2
      checkpoints that say nothing are treated as epsilon (512-base) with a warning in
      :attr:`BaseModel.warnings`; pass ``True`` for the 768-v models.
    * ``vae_path``: replace the model's VAE (see :func:`load_vae`).
    * ``config_dir``: diffusers config folder to use for a single-file checkpoint instead of the
      bundled one (tests, unusual models).
    * ``dtype``: of the loaded weights; float32 if not given. ``vae_dtype``: the VAE's (default ``dtype``).
    * ``device``: where the weights go (default CPU). A single file is read tensor by tensor straight into
      these dtypes and onto this device, so under fp16/bf16 the weights never exist in fp32, nor twice.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    vae_dtype = dtype if vae_dtype is None else vae_dtype
    p = Path(path).expanduser()
    if not p.exists():
        raise not_found_error(p)
    if p.is_file() and p.name == "model_index.json":
        p = p.parent
    if p.is_dir():
        info = detect_diffusers(p)
        sd = None
    else:
        shapes, meta, layout, sd = file_index(p)  # sd: only for pickles, which must be loaded to be listed
        info = classify(p, shapes, meta, layout)
    fam = _resolve_family(info, family)
    warnings: list[str] = []
    if v_parameterization is not None:
        v = bool(v_parameterization)
    elif info.v_prediction is not None:
        v = info.v_prediction
    else:
        v = False
        warnings.append(
            f"{p.name} does not say whether it predicts noise (epsilon, SD 2.x 512-base) or velocity "
            "(v-prediction, SD 2.x 768-v); assuming epsilon. Turn on v-parameterization for 768-v models.")
    if not info.has_vae and vae_path is None:
        raise PatinaError(f"{p.name} contains no VAE. Choose a separate VAE file (for {FAMILY_NAMES[fam]}) "
                          "in the VAE field.")

    if info.layout == "diffusers":
        model = _load_diffusers(p, fam, v, vae_path, (dtype, vae_dtype), info,
                                Path(config_dir) if config_dir else None, device)
    else:
        cfg_dir = Path(config_dir) if config_dir else shipped_config_dir(fam, v)

        def dtype_for(name: str):
            return vae_dtype if name.startswith(VAE_PREFIX) else dtype

        sd = read_weights(p, dtype_for, device) if sd is None else convert_in_place(sd, dtype_for, device)
        model = _load_single_file(sd, p, fam, v, vae_path, (dtype, vae_dtype), info, cfg_dir, device)
        del sd
    model.warnings.extend(warnings)
    return model


def _load_single_file(sd: dict, p: Path, fam: str, v: bool, vae_path, dtypes: tuple, info: ModelInfo,
                      cfg_dir: Path, device=None) -> BaseModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    dtype, vae_dtype = dtypes
    if not (cfg_dir / "unet" / "config.json").is_file():
        raise PatinaError(f"The model config folder {cfg_dir} is missing unet/config.json.")
    source = p.name
    unet = _single_file_component(UNet2DConditionModel, sd, cfg_dir, "unet", dtype, "UNet", source, device)
    if vae_path is not None:
        vae = load_vae(vae_path, family=fam, dtype=vae_dtype, config_dir=cfg_dir, device=device)
    else:
        vae = _single_file_component(AutoencoderKL, sd, cfg_dir, "vae", vae_dtype, "VAE", source, device)
    # (subfolder, checkpoint prefix, OpenCLIP layout, projection) of each text encoder
    encoders = {"sdxl": [("text_encoder", SDXL_TE1_PREFIX, False, False),
                         ("text_encoder_2", SDXL_TE2_PREFIX, True, True)],
                "sd2": [("text_encoder", SD2_TE_PREFIX, True, False)],
                "sd1": [("text_encoder", SD1_TE_PREFIX, False, False)]}[fam]
    tes = [_text_encoder_from_ldm(sd, cfg_dir, sub, prefix, open_clip, proj, dtype, source, device)
           for sub, prefix, open_clip, proj in encoders]
    toks = [_tokenizer(cfg_dir / sub.replace("text_encoder", "tokenizer"), fam, second=i == 1)
            for i, (sub, *_rest) in enumerate(encoders)]
    sched_cfg, noise = _scheduler_configs(read_json(cfg_dir / "scheduler" / "scheduler_config.json"), v)
    return BaseModel(family=fam, v_prediction=v, unet=unet, vae=vae, text_encoders=tes, tokenizers=toks,
                     noise_scheduler=noise, scheduler_config=sched_cfg, info=info, config_dir=cfg_dir)


def _from_pretrained(cls, folder: Path, subfolder: str, what: str, dtype: torch.dtype, transformers_model: bool):
    sub = folder / subfolder
    variant = weights_variant(sub)
    if variant is False:
        raise PatinaError(f"{folder.name}: the {what} weights are missing ({subfolder}/ has no weight files). "
                          "Download the complete model folder.")
    _refuse_unsafe_pickles(sub)
    try:
        if transformers_model:
            model = cls.from_pretrained(str(folder), subfolder=subfolder, local_files_only=True, dtype=dtype,
                                        **({"variant": variant} if variant else {}))
            model.to(dtype)  # modules transformers keeps in fp32 too
        else:
            with _quiet_diffusers():
                model = cls.from_pretrained(str(folder), subfolder=subfolder, local_files_only=True,
                                            torch_dtype=dtype, **({"variant": variant} if variant else {}))
    except Exception as exc:  # noqa: BLE001
        from patina.core.models.checkpoint_files import is_weights_only_refusal, refusal_message, weights_only_detail

        if is_weights_only_refusal(exc):  # never show torch's own text (it suggests the unsafe option)
            raise PatinaError(refusal_message(sub, weights_only_detail(exc))) from None
        raise PatinaError(f"{folder.name}: could not load the {what} ({_short(exc)}). The folder may be "
                          "incomplete or damaged.") from exc
    return model.eval()


def _refuse_unsafe_pickles(sub: Path) -> None:
    """A component folder whose weights are pickles (.bin): refuse any that refers to code, before loading."""
    if not sub.is_dir():
        return
    files = [f for f in sub.iterdir() if f.is_file()]
    if any(f.name.endswith(".safetensors") for f in files):
        return  # diffusers and transformers load the .safetensors weights and never open the .bin
    from patina.core.models.checkpoint_files import pickle_unsafe_globals, refusal_message

    for f in files:
        if f.suffix.lower() != ".bin" or not zipfile_is_zip(f):
            continue
        try:
            unsafe = pickle_unsafe_globals(f)
        except Exception:  # noqa: BLE001 - a broken archive: loading will say so
            continue
        if unsafe:
            raise PatinaError(refusal_message(f, ", ".join(sorted(set(unsafe)))))


def zipfile_is_zip(path: Path) -> bool:
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _load_diffusers(folder: Path, fam: str, v: bool, vae_path, dtypes: tuple, info: ModelInfo,
                    config_dir: Path | None, device=None) -> BaseModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    dtype, vae_dtype = dtypes
    shipped = config_dir or shipped_config_dir(fam, v)
    unet = _from_pretrained(UNet2DConditionModel, folder, "unet", "UNet", dtype, False)
    if vae_path is not None:
        vae = load_vae(vae_path, family=fam, dtype=vae_dtype, config_dir=shipped)
    else:
        vae = _from_pretrained(AutoencoderKL, folder, "vae", "VAE", vae_dtype, False)
    tes = [_from_pretrained(CLIPTextModel, folder, "text_encoder", "text encoder", dtype, True)]
    tok_dirs = [folder / "tokenizer"]
    if fam == "sdxl":
        tes.append(_from_pretrained(CLIPTextModelWithProjection, folder, "text_encoder_2", "second text encoder",
                                    dtype, True))
        tok_dirs.append(folder / "tokenizer_2")
    toks = []
    for i, d in enumerate(tok_dirs):
        if not d.is_dir():
            d = shipped / d.name  # fall back to the bundled tokenizer settings
        toks.append(_tokenizer(d, fam, second=i == 1))
    if device is not None:
        for m in (unet, vae, *tes):
            m.to(device)
    sched_path = folder / "scheduler" / "scheduler_config.json"
    raw = read_json(sched_path if sched_path.is_file() else shipped / "scheduler" / "scheduler_config.json")
    sched_cfg, noise = _scheduler_configs(raw, v)
    return BaseModel(family=fam, v_prediction=v, unet=unet, vae=vae, text_encoders=tes, tokenizers=toks,
                     noise_scheduler=noise, scheduler_config=sched_cfg, info=info, config_dir=folder)
