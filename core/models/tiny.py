"""Tiny Stable Diffusion components with random weights, built in code (nothing downloaded).

Used by the test suite and by ``patina bench --model tiny``. Shapes follow the small models of
diffusers' own tests (see ../shared/reference/lora-format.md §6):

* SD1: a 2-level UNet in SD1 block order (cross-attention first) so it also converts to an LDM
  single-file checkpoint; 32-wide CLIP text encoder.
* SDXL: a 2-level UNet with text_time conditioning and two text encoders (the second with projection).

The tokenizer is a 514-token byte-level CLIP tokenizer (no merges): every byte is a token, plus
``<|startoftext|>`` = 512 and ``<|endoftext|>`` = 513. It needs no vocabulary download.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TINY_VOCAB_SIZE = 514
BOS_ID = 512
EOS_ID = 513


def _bytes_to_unicode() -> dict[int, str]:
    # The reversible byte -> printable-unicode table that CLIP's BPE uses (GPT-2 scheme).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tiny_tokenizer(folder: str | os.PathLike, pad_token: str = "<|endoftext|>") -> Path:
    """Write vocab.json / merges.txt / tokenizer_config.json of the byte-level tiny tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = [c for _, c in sorted(_bytes_to_unicode().items())]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = BOS_ID
    vocab["<|endoftext|>"] = EOS_ID
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token,
        "do_lower_case": True,
    }), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }), encoding="utf-8")
    return folder


def tiny_tokenizer(pad_token: str = "<|endoftext|>"):
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(tmp, pad_token)
        return CLIPTokenizer.from_pretrained(tmp)


def _text_config(projection: bool = False):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, vocab_size=TINY_VOCAB_SIZE,
        hidden_act="gelu" if projection else "quick_gelu", projection_dim=32, max_position_embeddings=77,
    )


SD1_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8,
)
SDXL_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
    cross_attention_dim=64,
)
VAE = dict(
    block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, layers_per_block=2, sample_size=64,
)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 clip_sample=False, steps_offset=1)


def tiny_sd1_components(seed: int = 0) -> dict:
    """Components of a tiny SD1 pipeline (dict usable as ``StableDiffusionPipeline(**c)``)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD1_UNET)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config())
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(),
                scheduler=DDPMScheduler(**SCHEDULER), safety_checker=None, feature_extractor=None,
                image_encoder=None, requires_safety_checker=False)


def tiny_sdxl_components(seed: int = 0) -> dict:
    """Components of a tiny SDXL pipeline (dict usable as ``StableDiffusionXLPipeline(**c)``)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SDXL_UNET)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config())
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(projection=True))
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
                                   timestep_spacing="leading")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                tokenizer=tiny_tokenizer(), tokenizer_2=tiny_tokenizer(pad_token="!"), scheduler=sched,
                image_encoder=None, feature_extractor=None)


def tiny_pipeline(family: str = "sd1", seed: int = 0):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "sdxl":
        return StableDiffusionXLPipeline(**tiny_sdxl_components(seed))
    return StableDiffusionPipeline(**tiny_sd1_components(seed))


def save_tiny_diffusers(folder: str | os.PathLike, family: str = "sd1", seed: int = 0) -> Path:
    """Save a tiny pipeline as a diffusers folder (the layout ``from_pretrained`` reads)."""
    folder = Path(folder)
    tiny_pipeline(family, seed).save_pretrained(folder, safe_serialization=True)
    return folder


# ------------------------------------------------------------------------------------------------
# Tiny SD2 components and tiny single-file (LDM / A1111 layout) checkpoints.
#
# The converters below write diffusers state dicts under the original Stable Diffusion ("LDM") key
# names, so tests can exercise Patina's single-file loader without any real checkpoint. They follow
# the published key layout of the CompVis/Stability code (input_blocks/middle_block/output_blocks,
# encoder.down.N/decoder.up.N, cond_stage_model / conditioner.embedders) for any number of levels.
# ------------------------------------------------------------------------------------------------

SD2_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True,
)


def tiny_sd2_components(seed: int = 0, v_prediction: bool = True) -> dict:
    """Components of a tiny SD2-style pipeline: linear attention projections, a GELU text encoder
    converted from OpenCLIP layout in real checkpoints, ``!`` padding and (by default) v-prediction."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD2_UNET)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_text_config(projection=True))  # gelu, like OpenCLIP ViT-H
    sched = DDIMScheduler(**SCHEDULER, set_alpha_to_one=False,
                          prediction_type="v_prediction" if v_prediction else "epsilon")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(pad_token="!"),
                scheduler=sched, safety_checker=None, feature_extractor=None, image_encoder=None,
                requires_safety_checker=False)


def tiny_pipeline_any(family: str = "sd1", seed: int = 0):
    """Like :func:`tiny_pipeline` but also knows ``"sd2"`` (tiny v-prediction SD2)."""
    if family == "sd2":
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(**tiny_sd2_components(seed))
    return tiny_pipeline(family, seed)


def save_tiny_diffusers_any(folder: str | os.PathLike, family: str = "sd1", seed: int = 0) -> Path:
    folder = Path(folder)
    tiny_pipeline_any(family, seed).save_pretrained(folder, safe_serialization=True)
    return folder


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx")


def save_tiny_config_dir(folder: str | os.PathLike, family: str = "sd1", seed: int = 0) -> Path:
    """A diffusers folder of a tiny pipeline with its weight files removed: the configs (and the tiny
    tokenizer) that ``from_single_file(config=folder)`` needs for a tiny single-file checkpoint."""
    folder = save_tiny_diffusers_any(folder, family, seed)
    for f in folder.rglob("*"):
        if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES):
            f.unlink()
    return folder


def _sub(rules, key: str) -> str:
    import re

    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


_RESNET_LDM = [
    (r"\.norm1\.", ".in_layers.0."), (r"\.conv1\.", ".in_layers.2."), (r"\.time_emb_proj\.", ".emb_layers.1."),
    (r"\.norm2\.", ".out_layers.0."), (r"\.conv2\.", ".out_layers.3."), (r"\.conv_shortcut\.", ".skip_connection."),
]


def unet_to_ldm(state_dict: dict, config) -> dict:
    """diffusers UNet2DConditionModel keys -> LDM ``diffusion_model`` keys (without the prefix)."""
    import re

    per = config["layers_per_block"] + 1  # resnets per level + the down/upsampler slot
    up_types = list(config["up_block_types"])
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
    }
    out = {}
    for key, value in state_dict.items():
        new = None
        for src, dst in fixed.items():
            if key.startswith(src):
                new = dst + key[len(src):]
        if new is None and (m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)):
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = 1 + level * per + j
            new = f"input_blocks.{idx}.{0 if kind == 'resnets' else 1}.{rest}"
            if kind == "resnets":
                new = _sub(_RESNET_LDM, "." + new)[1:]
        elif new is None and (m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)):
            new = f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
        elif new is None and (m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)):
            kind, j, rest = m[1], int(m[2]), m[3]
            new = f"middle_block.{2 * j if kind == 'resnets' else 1}.{rest}"
            if kind == "resnets":
                new = _sub(_RESNET_LDM, "." + new)[1:]
        elif new is None and (m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)):
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            new = f"output_blocks.{level * per + j}.{0 if kind == 'resnets' else 1}.{rest}"
            if kind == "resnets":
                new = _sub(_RESNET_LDM, "." + new)[1:]
        elif new is None and (m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)):
            level = int(m[1])
            slot = 2 if up_types[level].startswith("CrossAttn") else 1
            new = f"output_blocks.{level * per + per - 1}.{slot}.conv.{m[2]}"
        if new is None:
            raise KeyError(f"no LDM name for UNet key {key}")
        out[new] = value
    return out


def vae_to_ldm(state_dict: dict, config) -> dict:
    """diffusers AutoencoderKL keys -> LDM ``first_stage_model`` keys (without the prefix).

    Decoder levels are numbered from the bottom in LDM (``decoder.up.{n-1-i}``); attention
    projections are 1x1 convolutions there."""
    import re

    n = len(config["block_out_channels"])
    rules = [
        (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
        (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
        (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
        (r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}."),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
        (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}."),
        (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{n - 1 - int(m[1])}.upsample."),
        (r"\.conv_shortcut\.", ".nin_shortcut."),
        (r"\.attn_1\.group_norm\.", ".attn_1.norm."), (r"\.attn_1\.to_q\.", ".attn_1.q."),
        (r"\.attn_1\.to_k\.", ".attn_1.k."), (r"\.attn_1\.to_v\.", ".attn_1.v."),
        (r"\.attn_1\.to_out\.0\.", ".attn_1.proj_out."),
    ]
    out = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        if ".attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[new] = value
    return out


def _hf_text_keys(state_dict: dict) -> dict:
    """HF CLIP text keys without the ``text_model.`` level (transformers >= 5.6 flattens CLIPTextModel)."""
    return {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in state_dict.items()}


def clip_to_ldm(state_dict: dict) -> dict:
    """HF CLIPTextModel keys -> the ``transformer.text_model.*`` names SD1 / SDXL-TE1 checkpoints use."""
    return {"transformer.text_model." + k: v for k, v in _hf_text_keys(state_dict).items()
            if k != "text_projection.weight"}


def clip_to_open_clip(state_dict: dict, *, extra_layer: bool = False) -> dict:
    """HF CLIP text keys -> OpenCLIP names (SD2 ``cond_stage_model.model.*``, SDXL TE2
    ``conditioner.embedders.1.model.*``), fusing q/k/v into ``in_proj``.

    ``extra_layer`` appends one more resblock (a copy of the last), as real SD2 files carry the 24th
    OpenCLIP layer that diffusers-format SD2 text encoders drop."""
    import re

    import torch

    sd = _hf_text_keys(state_dict)
    out = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
    }
    if "text_projection.weight" in sd:
        out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    else:  # SD2 files carry a projection the diffusers text encoder does not use
        hidden = out["ln_final.weight"].shape[0]
        out["text_projection"] = torch.eye(hidden)
    layers = sorted({int(m[1]) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in layers + ([layers[-1] + 1] if extra_layer else []):
        src = min(i, layers[-1])
        p, q = f"encoder.layers.{src}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[q + f"attn.in_proj_{kind}"] = torch.cat(
                [sd[p + f"self_attn.{x}_proj.{kind}"] for x in ("q", "k", "v")], dim=0)
            for hf, oc in names.items():
                out[q + f"{oc}.{kind}"] = sd[p + f"{hf}.{kind}"]
    return out


def tiny_ldm_state_dict(family: str = "sd1", seed: int = 0, *, include_vae: bool = True) -> dict:
    """The tiny pipeline of *family* as one LDM-layout (A1111 single-file) state dict."""
    pipe = tiny_pipeline_any(family, seed)
    sd = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config).items()}
    if include_vae:
        sd.update({"first_stage_model." + k: v for k, v in vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config).items()})
    if family == "sdxl":
        sd.update({"conditioner.embedders.0." + k: v for k, v in clip_to_ldm(pipe.text_encoder.state_dict()).items()})
        sd.update({"conditioner.embedders.1.model." + k: v
                   for k, v in clip_to_open_clip(pipe.text_encoder_2.state_dict()).items()})
    elif family == "sd2":
        sd.update({"cond_stage_model.model." + k: v
                   for k, v in clip_to_open_clip(pipe.text_encoder.state_dict(), extra_layer=True).items()})
    else:
        sd.update({"cond_stage_model." + k: v for k, v in clip_to_ldm(pipe.text_encoder.state_dict()).items()})
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def save_tiny_single_file(path: str | os.PathLike, family: str = "sd1", seed: int = 0, *,
                          include_vae: bool = True, metadata: dict | None = None) -> Path:
    """Write a tiny single-file checkpoint: ``.safetensors``, or a ``{"state_dict": ...}`` pickle for
    ``.ckpt``/``.pt`` (the shape of pruned A1111/CompVis checkpoints)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = tiny_ldm_state_dict(family, seed, include_vae=include_vae)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path), metadata=metadata)
    else:
        torch.save({"state_dict": sd, "global_step": 1, "epoch": 0}, path)
    return path
