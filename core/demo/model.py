"""Architecture of Patina's demo model (a tiny SD 1.x) and of its judge.

The demo model is an ordinary Stable Diffusion 1.x in the diffusers layout: ``UNet2DConditionModel``
with cross-attention, ``AutoencoderKL`` with 4 latent channels, a few-layer ``CLIPTextModel`` used with
the CLIP BPE tokenizer bundled in ``resources/tokenizers/clip`` and the SD1 noise schedule. Only the
sizes are small. ``scripts/pretrain_demo_model.py`` trains it on the toy world of
:mod:`patina.core.demo.world`.

The judge is a small CNN that names the shape, colour and background of a toy-world image.
"""

from __future__ import annotations

import torch
from torch import nn

from .world import BACKGROUNDS, COLOURS, JUDGE_SHAPES, NONE

CLIP_VOCAB = 49408
BOS_ID, EOS_ID = 49406, 49407

# Full size (what the shipped model uses) and a tiny size for tests.
SIZES = {
    "full": dict(
        vae=dict(block_out_channels=[16, 32, 64, 64], layers_per_block=1, norm_num_groups=4),
        unet=dict(block_out_channels=[32, 64, 64], layers_per_block=1, attention_head_dim=8, norm_num_groups=8),
        text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4),
        judge=dict(width=16),
    ),
    "tiny": dict(
        vae=dict(block_out_channels=[8, 8, 8, 16], layers_per_block=1, norm_num_groups=4),
        unet=dict(block_out_channels=[8, 16, 16], layers_per_block=1, attention_head_dim=4, norm_num_groups=4),
        text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        judge=dict(width=4),
    ),
}

SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def build_vae(cfg: dict):
    from diffusers import AutoencoderKL

    n = len(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(cfg["block_out_channels"]), layers_per_block=cfg["layers_per_block"],
        norm_num_groups=cfg["norm_num_groups"], scaling_factor=cfg.get("scaling_factor", 1.0),
    )


def build_unet(cfg: dict, cross_attention_dim: int, sample_size: int = 8):
    from diffusers import UNet2DConditionModel

    ch = list(cfg["block_out_channels"])
    # SD1 block order: cross-attention on every level but the deepest.
    down = ["CrossAttnDownBlock2D"] * (len(ch) - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (len(ch) - 1)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=ch,
        down_block_types=down, up_block_types=up, layers_per_block=cfg["layers_per_block"],
        cross_attention_dim=cross_attention_dim, attention_head_dim=cfg["attention_head_dim"],
        norm_num_groups=cfg["norm_num_groups"],
    )


def build_text_encoder(cfg: dict):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=CLIP_VOCAB, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID, projection_dim=cfg["hidden_size"],
        hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
    ))


# ---- judge ------------------------------------------------------------------------------------------

JUDGE_COLOURS = tuple(COLOURS) + (NONE,)
HEADS = {"shape": JUDGE_SHAPES, "colour": JUDGE_COLOURS, "background": BACKGROUNDS}


class Judge(nn.Module):
    """Names shape, colour and background of a 64×64 image in [-1, 1] (N, 3, 64, 64)."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        chans = [3, w, 2 * w, 4 * w, 4 * w]
        for a, b in zip(chans, chans[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)  # 64 -> 4
        self.width = width
        feat = chans[-1] * 4 * 4
        self.heads = nn.ModuleDict({k: nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(feat, len(v)))
                                    for k, v in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> list[dict[str, str]]:
        was = self.training
        self.eval()
        out = self(x)
        self.train(was)
        idx = {k: v.argmax(1).tolist() for k, v in out.items()}
        return [{k: HEADS[k][idx[k][i]] for k in HEADS} for i in range(x.shape[0])]


def label_indices(labels: dict) -> tuple[int, int, int]:
    return (JUDGE_SHAPES.index(labels["shape"]), JUDGE_COLOURS.index(labels["colour"]),
            BACKGROUNDS.index(labels["background"]))


def pil_to_tensor(images) -> torch.Tensor:
    """List of PIL RGB images -> float tensor (N, 3, H, W) in [-1, 1]."""
    import numpy as np

    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
