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
