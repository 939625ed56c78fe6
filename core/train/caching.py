"""Latent and text-encoder-output caches, and each step's inputs: from the cache, or encoded fresh.

Latents are cached (in memory, and on disk with cache_latents_to_disk) when the image is the same every
epoch (no colour augmentation, no random crop); text-encoder outputs when the text encoders do not train
and the captions never change (no shuffling or dropout). The disk cache key is the image's content, its
bucket, the flip and the VAE, so a changed image never reuses a stale latent.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from patina.core.train.run import Run, empty_device_cache

PROGRESS_EVERY_S = 0.5   # "Caching latents k/N…" at most this often (and always at the end)


def fill(run: Run) -> None:
    from patina.core.train.batches import can_cache_latents, captions_are_static

    if can_cache_latents(run.cfg):
        run.latent_cache = _cache_latents(run)
        # samples move the VAE back for the few seconds they need it
        run.base.vae.to("cpu")
        empty_device_cache()
    elif run.cfg["cache_latents"]:
        run.report.log("Latents are not cached because colour augmentation or random crop changes the image "
                       "every step.")
    if not run.train_te and captions_are_static(run.cfg):
        run.te_cache = _cache_text(run)


def _vae_id(run: Run) -> str:
    p = Path(run.cfg["vae"] or run.cfg["pretrained_model_name_or_path"])
    try:
        st = p.stat()
        stamp = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        stamp = str(p)
    return f"{stamp}|{run.vae_dtype}"


def _cache_latents(run: Run) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from patina.core.atomic import atomic_temp_path, commit_temp
    from patina.core.paths import user_cache_dir
    from patina.core.train.batches import latent_cache_key, prepare_image

    cfg, data = run.cfg, run.plan.data
    flips = (False, True) if cfg["flip_aug"] else (False,)
    todo = [(i, f) for i in range(len(data.items)) for f in flips]
    run.report.status("caching", f"Caching latents of {len(data.items)} image(s)…")
    disk = user_cache_dir() / "latents" if cfg["cache_latents_to_disk"] else None
    vae_id = _vae_id(run)
    cache: dict = {}
    bs = max(1, cfg["vae_batch_size"] or cfg["train_batch_size"])
    pending: list = []   # (cache key, prepared image, disk path or None), all of one bucket
    shown_at = [time.monotonic()]

    def progress(done: int) -> None:
        """'Caching latents k/N…' as the work is done: every half second, and at the end."""
        now = time.monotonic()
        if done == len(todo) or now - shown_at[0] >= PROGRESS_EVERY_S:
            shown_at[0] = now
            run.report.status("caching", f"Caching latents {done}/{len(todo)}…")

    def flush():
        if not pending:
            return
        lat = run.encode_pixels(torch.stack([torch.from_numpy(prep.pixels) for _, prep, _ in pending]))
        for (key, prep, path), z in zip(pending, lat):
            entry = {"latent": z.to("cpu", torch.float32).contiguous(),
                     "sizes": torch.tensor([*prep.original_size, *prep.crop_top_left])}
            cache[key] = entry
            if path is not None:
                tmp = atomic_temp_path(path)
                save_file(entry, str(tmp))
                commit_temp(tmp, path)
        pending.clear()
        progress(len(cache))

    for i, flip in sorted(todo, key=lambda t: data.items[t[0]].bucket):
        item = data.items[i]
        path = None
        if disk is not None:
            path = disk / f"{latent_cache_key(item.image.path, item.bucket, flip, vae_id)}.safetensors"
            if path.exists():
                try:
                    cache[(i, flip)] = load_file(str(path))
                    progress(len(cache))
                    continue
                except Exception:  # noqa: BLE001 - a damaged cache file is just recomputed
                    pass
        if pending and data.items[pending[0][0][0]].bucket != item.bucket:
            flush()
        pending.append(((i, flip), prepare_image(item, flip, cfg), path))
        if len(pending) >= bs:
            flush()
    flush()
    return cache


def _cache_text(run: Run) -> dict:
    import torch

    captions = sorted({it.image.caption for it in run.plan.data.items} | {""})
    run.report.status("caching", f"Caching text-encoder outputs of {len(captions)} caption(s)…")
    cache = {}
    with torch.no_grad():
        for i in range(0, len(captions), 16):
            chunk = captions[i:i + 16]
            hidden, pooled = run.encode_text(chunk)
            for j, c in enumerate(chunk):
                cache[c] = (hidden[j].cpu(), None if pooled is None else pooled[j].cpu())
    for te in run.base.text_encoders:
        te.to("cpu")
    empty_device_cache()
    return cache


def latents_for(run: Run, batch, micro: int):
    """(latents, SDXL size conditioning) of one micro-batch of the epoch in progress."""
    import torch

    from patina.core.dataset.plan import seed_for
    from patina.core.train.batches import prepare_image

    if run.latent_cache is not None:
        entries = [run.latent_cache[(s.item, s.flip)] for s in batch]
        lat = torch.stack([e["latent"] for e in entries]).to(run.device)
        sizes = torch.stack([e["sizes"] for e in entries]).float()
        return lat, sizes
    rng = random.Random(seed_for(run.seed, "aug", run.epoch, micro))
    preps = [prepare_image(run.plan.data.items[s.item], s.flip, run.cfg, rng) for s in batch]
    run.base.vae.to(run.device)
    pixels = torch.stack([torch.from_numpy(p.pixels) for p in preps])
    lat = run.encode_pixels(pixels)
    sizes = torch.tensor([[*p.original_size, *p.crop_top_left] for p in preps]).float()
    return lat, sizes


def text_for(run: Run, batch, micro: int):
    """(hidden states, pooled) of one micro-batch's captions, shuffled and dropped out as configured."""
    import torch

    from patina.core.train.batches import caption_for_step

    if run.te_cache is not None:
        entries = [run.te_cache[run.plan.data.items[s.item].image.caption] for s in batch]
        hidden = torch.stack([h for h, _ in entries]).to(run.device)
        pooled = None if entries[0][1] is None else torch.stack([p for _, p in entries]).to(run.device)
        return hidden, pooled
    captions = [caption_for_step(run.plan.data, s, run.epoch, micro, i) for i, s in enumerate(batch)]
    if run.train_te:
        with run.accelerator.autocast():
            return run.encode_text(captions)
    with torch.no_grad():
        return run.encode_text(captions)
