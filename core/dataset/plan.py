"""The run plan of a dataset: which images train in which bucket, how each epoch batches them, and how many
steps and epochs the run has. One object, read by ``patina dataset check`` (patina.core.dataset.summary),
the plan dialog and the engine (patina.core.train.engine), so the three can never disagree.

An epoch's batch order depends only on (seed, epoch), so a resumed run sees exactly the batches the
uninterrupted run would have seen. Every batch holds the images of one bucket.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

from patina.core.dataset.buckets import BucketSet, parse_resolution
from patina.core.dataset.folders import DatasetScan, ImageEntry


@dataclass(frozen=True)
class TrainItem:
    image: ImageEntry
    bucket: tuple[int, int]          # (width, height)
    is_reg: bool


@dataclass(frozen=True)
class BatchItem:
    """One image of one step's batch (not a generated sample image: that is events.BatchItem)."""

    item: int                        # index into DatasetPlan.items
    flip: bool


@dataclass(frozen=True)
class RunLength:
    """Steps and epochs of a run, with kohya's precedence (``rule`` says which setting decided, in words)."""

    steps_per_epoch: int
    epochs: int
    total_steps: int
    rule: str


def seed_for(*parts) -> int:
    """A seed derived from the run's seed and what it is for (e.g. ``(seed, "noise", epoch, micro)``)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


def run_length(steps_per_epoch: int, *, epochs: int = 1, max_train_steps: int = 0,
               max_train_epochs: int = 0) -> RunLength:
    """kohya's precedence: max_train_epochs > 0 wins, then max_train_steps > 0, else epochs × steps per epoch."""
    spe = steps_per_epoch
    if max_train_epochs > 0:
        return RunLength(spe, max_train_epochs, max_train_epochs * spe,
                         f"max train epochs {max_train_epochs} × {spe} steps per epoch")
    if max_train_steps > 0:
        n_epochs = math.ceil(max_train_steps / spe) if spe else 0
        return RunLength(spe, n_epochs, max_train_steps,
                         f"max train steps {max_train_steps} (about {n_epochs} epoch(s) of {spe} steps)")
    return RunLength(spe, epochs, epochs * spe, f"{epochs} epoch(s) × {spe} steps per epoch")


class DatasetPlan:
    """The items of a run and how each epoch batches them, from a scan and the settings (a config dict with
    ``max_resolution``, ``enable_bucket``, the ``*bucket*`` settings, ``train_batch_size``, ``flip_aug``,
    ``gradient_accumulation_steps``, ``epoch``, ``max_train_steps`` and ``max_train_epochs``)."""

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
        repeats: list[int] = []
        for subset in scan.subsets:
            for img in subset.images:
                bucket = self.buckets.assign(img.width, img.height) if self.buckets else res
                self.items.append(TrainItem(img, bucket, subset.is_reg))
                repeats.append(subset.repeats)
        self.validation_items = self._hold_out(float(cfg.get("validation_split") or 0.0),
                                               int(cfg.get("validation_seed") or 0) or seed)
        held = set(self.validation_items)
        for idx, item in enumerate(self.items):
            if idx not in held:
                (self.reg_samples if item.is_reg else self.train_samples).extend([idx] * repeats[idx])
        self.batch_size = int(cfg["train_batch_size"])

    def _hold_out(self, split: float, seed: int) -> list[int]:
        """Training images (never regularisation images) held out of training for the validation loss:
        round(split × images), at least one when split > 0 and always leaving one to train on."""
        train = [i for i, it in enumerate(self.items) if not it.is_reg]
        if split <= 0 or len(train) < 2:
            return []
        n = min(len(train) - 1, max(1, round(split * len(train))))
        random.Random(seed_for(seed, "validation")).shuffle(train)
        return sorted(train[:n])

    def epoch_samples(self, epoch: int) -> list[BatchItem]:
        """Samples of one epoch (0-based), reg samples cycled to match the training samples like kohya."""
        rng = random.Random(seed_for(self.seed, "epoch", epoch))
        idx = list(self.train_samples)
        if self.reg_samples:  # in folder order, cycled: the same reg samples (and batch count) every epoch
            reg = self.reg_samples
            idx += [reg[i % len(reg)] for i in range(len(idx))]
        flip = bool(self.cfg["flip_aug"])
        return [BatchItem(i, flip and rng.random() < 0.5) for i in idx]

    def epoch_batches(self, epoch: int) -> list[list[BatchItem]]:
        rng = random.Random(seed_for(self.seed, "batches", epoch))
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

    def batches_per_epoch(self) -> int:
        """Batches of every epoch (the same count each epoch: the samples per bucket do not change)."""
        counts: dict[tuple[int, int], int] = {}
        for s in self.epoch_samples(0):
            b = self.items[s.item].bucket
            counts[b] = counts.get(b, 0) + 1
        return sum(math.ceil(n / self.batch_size) for n in counts.values())

    def length(self, num_processes: int = 1) -> RunLength:
        """Steps per epoch (each of *num_processes* trains on its share of the batches, accumulating
        ``gradient_accumulation_steps`` of them per step), epochs and total steps."""
        batches = self.batches_per_epoch()
        spe = 0
        if batches:
            per_process = math.ceil(batches / max(1, num_processes))
            spe = max(1, math.ceil(per_process / max(1, int(self.cfg["gradient_accumulation_steps"]))))
        return run_length(spe, epochs=int(self.cfg["epoch"]), max_train_steps=int(self.cfg["max_train_steps"]),
                          max_train_epochs=int(self.cfg["max_train_epochs"]))

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

    def small_bucket_warnings(self) -> list[str]:
        """One warning per bucket that holds fewer pictures than the batch size: its batches repeat the same
        pictures (repeats) or come out smaller, since a batch never mixes buckets."""
        images: dict[tuple[int, int], set[int]] = {}
        for s in self.epoch_samples(0):
            images.setdefault(self.items[s.item].bucket, set()).add(s.item)
        return [f"bucket {w}x{h} holds {len(found)} image(s), fewer than the batch size {self.batch_size}: "
                "its batches repeat the same pictures or come out smaller"
                for (w, h), found in sorted(images.items()) if len(found) < self.batch_size]
