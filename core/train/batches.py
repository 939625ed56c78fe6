"""From planned batches to tensors' inputs: image transforms, latent cache keys and caption processing.

Which images train in which bucket and how each epoch batches them is the run plan,
patina.core.dataset.plan.DatasetPlan (re-exported here).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from patina.core.dataset.buckets import resize_and_crop
from patina.core.dataset.captions import process_caption
from patina.core.dataset.images import load_rgb
from patina.core.dataset.plan import BatchItem, DatasetPlan, TrainItem, seed_for

__all__ = ["BatchItem", "DatasetPlan", "TrainItem", "caption_for_step", "captions_are_static", "can_cache_latents",
           "prepare_image", "latent_cache_key"]


def caption_for_step(plan: DatasetPlan, sample: BatchItem, epoch: int, step: int, position: int) -> str:
    cfg = plan.cfg
    rng = random.Random(seed_for(plan.seed, "caption", epoch, step, position))
    return process_caption(plan.items[sample.item].image.caption, shuffle=cfg["shuffle_caption"],
                           keep_tokens=cfg["keep_tokens"], caption_dropout_rate=cfg["caption_dropout_rate"],
                           caption_dropout_every_n_epochs=cfg["caption_dropout_every_n_epochs"],
                           caption_tag_dropout_rate=cfg["caption_tag_dropout_rate"], epoch=epoch + 1, rng=rng)


def captions_are_static(cfg: dict) -> bool:
    return not (cfg["shuffle_caption"] or cfg["caption_dropout_rate"] > 0 or cfg["caption_dropout_every_n_epochs"] > 0
                or cfg["caption_tag_dropout_rate"] > 0)


def can_cache_latents(cfg: dict) -> bool:
    return bool(cfg["cache_latents"]) and not cfg["color_aug"] and not cfg["random_crop"]


@dataclass
class Prepared:
    """One image ready for the VAE: pixels in [-1, 1], CHW, plus SDXL size conditioning."""

    pixels: np.ndarray
    original_size: tuple[int, int]   # (height, width) as SDXL's time ids want
    crop_top_left: tuple[int, int]   # (top, left)


def prepare_image(item: TrainItem, flip: bool, cfg: dict, rng: random.Random | None = None) -> Prepared:
    img = load_rgb(item.image.path)
    res = resize_and_crop(img, item.bucket, random_crop=bool(cfg["random_crop"]), rng=rng)
    out = res.image
    if flip:
        out = ImageOps.mirror(out)
    if cfg["color_aug"]:
        r = rng or random.Random()
        hsv = np.asarray(out.convert("HSV")).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + r.randint(-10, 10)) % 256
        hsv[..., 1] = np.clip(hsv[..., 1] * r.uniform(0.8, 1.2), 0, 255)
        out = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    arr = np.asarray(out, dtype=np.float32) / 127.5 - 1.0
    w, h = res.original_size
    return Prepared(arr.transpose(2, 0, 1).copy(), (h, w), res.crop_top_left)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def latent_cache_key(path: Path, bucket: tuple[int, int], flip: bool, vae_id: str) -> str:
    """Content of the file + bucket + flip + which VAE: a changed image never reuses a stale latent."""
    return hashlib.sha256(f"{file_digest(path)}|{bucket[0]}x{bucket[1]}|{int(flip)}|{vae_id}".encode()).hexdigest()
