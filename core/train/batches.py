"""From a scanned dataset to training batches: epoch plans with aspect-ratio buckets, image
transforms, latent caching (memory or disk) and caption processing.

An epoch's batch order depends only on (seed, epoch), so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from patina.core.dataset.buckets import BucketSet, resize_and_crop
from patina.core.dataset.captions import process_caption
from patina.core.dataset.folders import DatasetScan, ImageEntry
from patina.core.dataset.images import load_rgb
from patina.core.dataset.buckets import parse_resolution


@dataclass(frozen=True)
class TrainItem:
    image: ImageEntry
    bucket: tuple[int, int]          # (width, height)
    is_reg: bool


@dataclass(frozen=True)
class BatchItem:
    """One image of one step's batch (not a generated sample image: that is events.Sample)."""

    item: int                        # index into DatasetPlan.items
    flip: bool


def derive_seed(*parts) -> int:
    """A seed derived from the run's seed and what it is for (same parts, same seed, on every machine)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


class DatasetPlan:
    """The items of a run and how each epoch batches them."""

    def __init__(self, scan: DatasetScan, cfg: dict, seed: int):
        self.cfg = cfg
        self.seed = seed
        res = parse_resolution(cfg["max_resolution"])
        if cfg["enable_bucket"]:
            self.buckets = BucketSet(res, cfg["min_bucket_reso"], cfg["max_bucket_reso"], cfg["bucket_reso_steps"],
                                     cfg["bucket_no_upscale"])
        else:
            self.buckets = None
        self.resolution = res
        self.items: list[TrainItem] = []
        self.train_samples: list[int] = []     # item index repeated by the folder's repeats
        self.reg_samples: list[int] = []
        for subset in scan.subsets:
            for img in subset.images:
                bucket = self.buckets.assign(img.width, img.height) if self.buckets else res
                self.items.append(TrainItem(img, bucket, subset.is_reg))
                idx = len(self.items) - 1
                (self.reg_samples if subset.is_reg else self.train_samples).extend([idx] * subset.repeats)
        self.batch_size = int(cfg["train_batch_size"])

    def epoch_samples(self, epoch: int) -> list[BatchItem]:
        """Samples of one epoch (0-based), reg samples cycled to match the training samples like kohya."""
        rng = random.Random(derive_seed(self.seed, "epoch", epoch))
        idx = list(self.train_samples)
        if self.reg_samples:  # in folder order, cycled: the same reg samples (and batch count) every epoch
            reg = self.reg_samples
            idx += [reg[i % len(reg)] for i in range(len(idx))]
        flip = bool(self.cfg["flip_aug"])
        return [BatchItem(i, flip and rng.random() < 0.5) for i in idx]

    def epoch_batches(self, epoch: int) -> list[list[BatchItem]]:
        rng = random.Random(derive_seed(self.seed, "batches", epoch))
        by_bucket: dict[tuple[int, int], list[BatchItem]] = {}
        for s in self.epoch_samples(epoch):
            by_bucket.setdefault(self.items[s.item].bucket, []).append(s)
        batches = []
        for bucket in sorted(by_bucket):
            samples = by_bucket[bucket]
            rng.shuffle(samples)
            batches += [samples[i:i + self.batch_size] for i in range(0, len(samples), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def bucket_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for it in self.items:
            key = f"{it.bucket[0]}x{it.bucket[1]}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("x"))))

    def bucket_info(self) -> dict:
        """``ss_bucket_info`` in sd-scripts' shape, which AUTOMATIC1111's metadata panel reads: each bucket's
        resolution and sample count (images × repeats) and the mean |bucket − image| aspect-ratio error."""
        counts: dict[tuple[int, int], int] = {}
        for i in self.train_samples + self.reg_samples:
            b = self.items[i].bucket
            counts[b] = counts.get(b, 0) + 1
        errors = [abs(it.bucket[0] / it.bucket[1] - it.image.width / it.image.height)
                  for it in self.items if it.image.height]
        return {"buckets": {str(i): {"resolution": [w, h], "count": n}
                            for i, ((w, h), n) in enumerate(sorted(counts.items()))},
                "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0}

    def small_buckets(self) -> list[str]:
        """Buckets holding fewer samples than the batch size (those steps run at a smaller batch)."""
        counts: dict[tuple[int, int], int] = {}
        for s in self.epoch_samples(0):
            b = self.items[s.item].bucket
            counts[b] = counts.get(b, 0) + 1
        return [f"{w}x{h}" for (w, h), n in sorted(counts.items()) if n % self.batch_size]


def caption_for_step(plan: DatasetPlan, sample: BatchItem, epoch: int, step: int, position: int) -> str:
    cfg = plan.cfg
    rng = random.Random(derive_seed(plan.seed, "caption", epoch, step, position))
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
