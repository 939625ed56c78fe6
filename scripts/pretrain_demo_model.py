#!/usr/bin/env python
"""Pretrain Patina's demo model (a tiny Stable Diffusion 1.x) on the toy world of patina.core.demo.world.

Stages, each seeded and resumable from ``--work DIR`` (checkpoints every few minutes, and on SIGTERM):

1. ``vae``   AutoencoderKL (4 latent channels, 64×64 images -> 8×8 latents); then its scaling factor
             is measured as 1 / std of the latents of held-out renders.
2. ``judge`` a small CNN naming shape / colour / background, trained only on renders and on VAE
             reconstructions of renders (never on generated images).
3. ``unet``  the UNet and the CLIP text encoder on cached latents (SD1 noise schedule, epsilon,
             10 % caption dropout, min-SNR weighting, EMA); every ``eval_every`` steps the EMA weights
             are sampled for fixed prompts and the judge scores them (``eval.jsonl``, ``samples/``).

Every batch is a pure function of (seed, stage, step), so a run resumed from a checkpoint continues
exactly as if it had never stopped.

    python scripts/pretrain_demo_model.py --work DIR            # run / resume all stages
    python scripts/pretrain_demo_model.py --work DIR --eval     # judge the current UNet
    python scripts/pretrain_demo_model.py --work DIR --export OUT   # SD1 diffusers folder (+ OUT/judge)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path


import torch
import torch.nn.functional as F

from patina.core.demo import world
from patina.core.demo.model import (HEADS, SCHEDULER, SIZES, Judge, build_text_encoder, build_unet, build_vae,
                                    label_indices, pil_to_tensor)

DEFAULT_WORK = Path.home() / ".cache" / "patina" / "demo-pretrain"

STEPS = {
    "full": dict(
        seed=1234, checkpoint_seconds=300,
        vae=dict(steps=3000, batch=8, lr=1e-3, lr_min=5e-5, kl=1e-6, n_scale=512),
        judge=dict(steps=2500, batch=64, lr=2e-3, n_train=8000, n_val=1400),
        unet=dict(steps=20000, batch=48, lr=1e-3, te_lr=1e-3, warmup=500, ema=0.999, min_snr=5.0,
                  caption_dropout=0.1, n_latents=16384, eval_every=1500, eval_n=48, eval_steps=25, cfg=5.0),
    ),
    "tiny": dict(
        seed=7, checkpoint_seconds=300,
        vae=dict(steps=3, batch=2, lr=1e-3, lr_min=1e-4, kl=1e-6, n_scale=4),
        judge=dict(steps=3, batch=4, lr=2e-3, n_train=16, n_val=8),
        unet=dict(steps=4, batch=2, lr=1e-3, te_lr=1e-3, warmup=2, ema=0.9, min_snr=5.0,
                  caption_dropout=0.5, n_latents=8, eval_every=3, eval_n=2, eval_steps=2, cfg=5.0),
    ),
}

_STOP = {"flag": False}


def _on_term(signum, frame):  # noqa: ARG001
    _STOP["flag"] = True


# ---- small helpers ----------------------------------------------------------------------------------


def log(work: Path, rec: dict) -> None:
    rec = {"time": round(time.time(), 1), **rec}
    with open(work / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def gen(seed: int, stage: str, step: int) -> torch.Generator:
    salt = {"vae": 1, "judge": 2, "unet": 3, "eval": 4}[stage]
    return torch.Generator().manual_seed(seed * 1_000_003 + salt * 100_000_007 + step)


def tokenizer():
    from transformers import CLIPTokenizer

    from patina.core.models.loading import clip_tokenizer_dir

    return CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir()), local_files_only=True)


def tokenize(tok, captions: list[str]) -> torch.Tensor:
    return tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def classic_attention(unet) -> None:
    # Same math as the default processor; on CPU the bmm version is faster for these tiny heads.
    from diffusers.models.attention_processor import AttnProcessor

    unet.set_attn_processor(AttnProcessor())


def noise_scheduler():
    from diffusers import DDPMScheduler

    cfg = {k: v for k, v in SCHEDULER.items() if k not in ("set_alpha_to_one",)}
    return DDPMScheduler(**cfg)


class Config:
    """The run's configuration, fixed at the first start and read back on every resume."""

    def __init__(self, work: Path, size: str, overrides: dict):
        path = work / "config.json"
        if path.is_file():
            cfg = json.loads(path.read_text(encoding="utf-8"))
            if cfg["size"] != size:
                raise SystemExit(f"{work} holds a '{cfg['size']}' run; use another --work folder for '{size}'.")
        else:
            cfg = {"size": size, "arch": SIZES[size], **json.loads(json.dumps(STEPS[size]))}
        for (stage, key), value in overrides.items():  # only step counts may change on resume
            cfg[stage][key] = value
        write_json(path, cfg)
        self.__dict__.update(cfg)
        self.work = work


# ---- stage 1: VAE -----------------------------------------------------------------------------------


def vae_batch(seed: int, step: int, batch: int) -> torch.Tensor:
    """Pretraining scenes, shapeless blobs and uncaptioned random compositions of parts."""
    imgs = []
    for j in range(batch):
        i = step * batch + j
        if i % 8 == 7:
            imgs.append(world.render(world.none_scene_at(seed + 1, i)))
        elif i % 8 in (2, 5):
            imgs.append(world.composition_at(seed + 1, i))
        else:
            imgs.append(world.render(world.scene_at(seed + 1, i)))
    return pil_to_tensor(imgs)


def stage_vae(cfg: Config) -> None:
    d = cfg.work / "vae"
    d.mkdir(exist_ok=True)
    if (d / "done.json").is_file():
        return
    c = cfg.vae
    torch.manual_seed(cfg.seed + 11)
    vae = build_vae(cfg.arch["vae"])
    opt = torch.optim.AdamW(vae.parameters(), lr=c["lr"], weight_decay=0.0)
    step = 0
    ck = d / "state.pt"
    if ck.is_file():
        st = torch.load(ck, weights_only=True)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        print(f"vae: resumed at step {step}", flush=True)
    vae.train()
    last_ck, t0, acc = time.time(), time.time(), []
    while step < c["steps"]:
        lr = c["lr_min"] + 0.5 * (c["lr"] - c["lr_min"]) * (1 + math.cos(math.pi * step / c["steps"]))
        for g in opt.param_groups:
            g["lr"] = lr
        x = vae_batch(cfg.seed, step, c["batch"])
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen(cfg.seed, "vae", step))
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        loss = mse + c["kl"] * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        acc.append(mse.item())
        if step % 25 == 0 or step == c["steps"]:
            log(cfg.work, {"stage": "vae", "step": step, "mse": round(sum(acc) / len(acc), 5), "lr": lr,
                           "s_per_step": round((time.time() - t0) / len(acc), 3)})
            acc, t0 = [], time.time()
        if _STOP["flag"] or time.time() - last_ck > cfg.checkpoint_seconds or step == c["steps"]:
            save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ck)
            last_ck = time.time()
            if _STOP["flag"]:
                raise SystemExit(0)
    # Measure the scaling factor on held-out renders, and the held-out reconstruction error.
    vae.eval()
    with torch.no_grad():
        zs, errs = [], []
        n = c["n_scale"]
        for k in range(0, n, 64):
            x = pil_to_tensor([world.render(world.scene_at(cfg.seed + 2, i)) for i in range(k, min(n, k + 64))])
            dist = vae.encode(x).latent_dist
            z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen(cfg.seed, "vae", 10**8 + k))
            zs.append(z)
            errs.append(F.mse_loss(vae.decode(dist.mean).sample, x, reduction="sum").item() / x[0].numel())
        z = torch.cat(zs)
        std = z.std().item()
        mse = sum(errs) / n
    scale = 1.0 / std
    vae.register_to_config(scaling_factor=round(scale, 5))
    vae.save_pretrained(d / "model", safe_serialization=True)
    res = {"scaling_factor": round(scale, 5), "latent_std": std, "latent_mean": z.mean().item(),
           "heldout_mse": mse, "psnr_db": 10 * math.log10(4.0 / max(mse, 1e-12))}
    write_json(d / "done.json", res)
    log(cfg.work, {"stage": "vae", "done": res})


def load_vae(cfg: Config):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(cfg.work / "vae" / "model")).eval()


# ---- stage 2: judge ---------------------------------------------------------------------------------


def judge_scene(seed: int, i: int):
    k = i % 8
    if k == 6:
        return world.concept_scene_at(seed, i)
    if k == 7:
        return world.none_scene_at(seed, i)
    return world.scene_at(seed, i, world.combos())


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor) -> torch.Tensor:
    out = []
    for k in range(0, x.shape[0], 64):
        out.append(vae.decode(vae.encode(x[k:k + 64]).latent_dist.mean).sample.clamp(-1, 1))
    return torch.cat(out)


def to_u8(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def from_u8(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0)


def judge_data(cfg: Config, vae, seed: int, n: int, path: Path) -> dict:
    if path.is_file():
        return torch.load(path, weights_only=True)
    scenes = [judge_scene(seed, i) for i in range(n)]
    x = pil_to_tensor([world.render(s) for s in scenes])
    data = {"render": to_u8(x), "recon": to_u8(reconstruct(vae, x)),
            "labels": torch.tensor([label_indices(s.labels) for s in scenes])}
    save_atomic(data, path)
    return data


@torch.no_grad()
def judge_accuracy(judge: Judge, x: torch.Tensor, labels: torch.Tensor) -> dict:
    judge.eval()
    preds = {k: [] for k in HEADS}
    for k in range(0, x.shape[0], 128):
        out = judge(x[k:k + 128])
        for h in HEADS:
            preds[h].append(out[h].argmax(1))
    p = {h: torch.cat(v) for h, v in preds.items()}
    ok = {h: p[h] == labels[:, i] for i, h in enumerate(HEADS)}
    ok["all"] = ok["shape"] & ok["colour"] & ok["background"]
    return {h: round(v.float().mean().item(), 4) for h, v in ok.items()}, p


def stage_judge(cfg: Config) -> None:
    d = cfg.work / "judge"
    d.mkdir(exist_ok=True)
    if (d / "done.json").is_file():
        return
    c = cfg.judge
    vae = load_vae(cfg)
    train = judge_data(cfg, vae, cfg.seed + 20, c["n_train"], d / "train.pt")
    val = judge_data(cfg, vae, cfg.seed + 21, c["n_val"], d / "val.pt")
    torch.manual_seed(cfg.seed + 22)
    judge = Judge(**cfg.arch["judge"])
    opt = torch.optim.AdamW(judge.parameters(), lr=c["lr"], weight_decay=1e-4)
    step = 0
    ck = d / "state.pt"
    if ck.is_file():
        st = torch.load(ck, weights_only=True)
        judge.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
    n = train["labels"].shape[0]
    last_ck, t0, acc = time.time(), time.time(), []
    while step < c["steps"]:
        lr = 0.5 * c["lr"] * (1 + math.cos(math.pi * step / c["steps"]))
        for g in opt.param_groups:
            g["lr"] = lr
        g_ = gen(cfg.seed, "judge", step)
        idx = torch.randint(0, n, (c["batch"],), generator=g_)
        use_rec = torch.rand(c["batch"], generator=g_) < 0.5
        x = torch.where(use_rec[:, None, None, None], from_u8(train["recon"][idx]), from_u8(train["render"][idx]))
        sigma = torch.rand(c["batch"], 1, 1, 1, generator=g_) * 0.08 * (torch.rand(c["batch"], 1, 1, 1, generator=g_) < 0.5)
        x = x + sigma * torch.randn(x.shape, generator=g_)
        y = train["labels"][idx]
        judge.train()
        out = judge(x)
        loss = sum(F.cross_entropy(out[h], y[:, i]) for i, h in enumerate(HEADS))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc.append(loss.item())
        if step % 50 == 0 or step == c["steps"]:
            log(cfg.work, {"stage": "judge", "step": step, "loss": round(sum(acc) / len(acc), 4), "lr": lr,
                           "s_per_step": round((time.time() - t0) / len(acc), 3)})
            acc, t0 = [], time.time()
        if _STOP["flag"] or time.time() - last_ck > cfg.checkpoint_seconds or step == c["steps"]:
            save_atomic({"model": judge.state_dict(), "opt": opt.state_dict(), "step": step}, ck)
            last_ck = time.time()
            if _STOP["flag"]:
                raise SystemExit(0)
    acc_render, _ = judge_accuracy(judge, from_u8(val["render"]), val["labels"])
    acc_recon, _ = judge_accuracy(judge, from_u8(val["recon"]), val["labels"])
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(d / "judge.safetensors"))
    write_json(d / "config.json", {"width": judge.width, "heads": {k: list(v) for k, v in HEADS.items()}})
    res = {"heldout_renders": acc_render, "heldout_reconstructions": acc_recon}
    write_json(d / "done.json", res)
    log(cfg.work, {"stage": "judge", "done": res})


def load_judge(folder: Path) -> Judge:
    from patina.core.demo.judge import load_judge as load

    return load(folder)


# ---- stage 3: UNet + text encoder --------------------------------------------------------------------


def latent_cache(cfg: Config, vae, tok) -> dict:
    path = cfg.work / "unet" / "latents.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    n = cfg.unet["n_latents"]
    scenes = [world.scene_at(cfg.seed + 3, i) for i in range(n)]
    captions = sorted({s.caption for s in scenes})
    cap_idx = {c: i for i, c in enumerate(captions)}
    means, stds = [], []
    with torch.no_grad():
        for k in range(0, n, 64):
            x = pil_to_tensor([world.render(s) for s in scenes[k:k + 64]])
            dist = vae.encode(x).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    data = {"mean": torch.cat(means), "std": torch.cat(stds),
            "caption": torch.tensor([cap_idx[s.caption] for s in scenes]),
            "ids": tokenize(tok, captions + [""]), "captions": captions}
    save_atomic(data, path)
    return data


def eval_prompts(n: int) -> list[tuple[str, str, str]]:
    """Fixed eval prompts: half from combinations seen in pretraining, half held out."""
    import random

    rng = random.Random(99)
    seen, held = world.pretraining_combos(), world.heldout_combos()
    a = [seen[rng.randrange(len(seen))] for _ in range(n - n // 2)]
    b = [held[i % len(held)] for i in range(n // 2)]
    return a + b


@torch.no_grad()
def sample_images(unet, te, vae, tok, captions: list[str], seed: int, steps: int, cfg_scale: float,
                  batch: int = 32) -> torch.Tensor:
    """DDIM samples for *captions* with classifier-free guidance; images in [-1, 1]."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**SCHEDULER)
    sched.set_timesteps(steps)
    sf = vae.config.scaling_factor
    size = unet.config.sample_size
    uncond = te(tokenize(tok, [""])).last_hidden_state
    out = []
    for k in range(0, len(captions), batch):
        caps = captions[k:k + batch]
        b = len(caps)
        cond = te(tokenize(tok, caps)).last_hidden_state
        ctx = torch.cat([uncond.expand(b, -1, -1), cond])
        g = torch.Generator().manual_seed(seed + k)
        lat = torch.randn((b, 4, size, size), generator=g)
        for t in sched.timesteps:
            eps = unet(torch.cat([lat, lat]), t, ctx).sample
            eu, ec = eps.chunk(2)
            lat = sched.step(eu + cfg_scale * (ec - eu), t, lat).prev_sample
        out.append(vae.decode(lat / sf).sample.clamp(-1, 1))
    return torch.cat(out)


def judge_samples(judge: Judge, images: torch.Tensor, combos: list[tuple[str, str, str]]) -> dict:
    preds = judge.predict(images)
    res = {}
    for name, sel in (("all", range(len(combos))),
                      ("seen", [i for i, c in enumerate(combos) if not world.is_heldout(*c)]),
                      ("heldout", [i for i, c in enumerate(combos) if world.is_heldout(*c)])):
        sel = list(sel)
        if not sel:
            continue
        sh = [preds[i]["shape"] == combos[i][0] for i in sel]
        co = [preds[i]["colour"] == combos[i][1] for i in sel]
        bg = [preds[i]["background"] == combos[i][2] for i in sel]
        res[name] = {"n": len(sel), "shape": round(sum(sh) / len(sel), 3), "colour": round(sum(co) / len(sel), 3),
                     "shape_colour": round(sum(a and b for a, b in zip(sh, co)) / len(sel), 3),
                     "background": round(sum(bg) / len(sel), 3)}
    res["predicted_shapes"] = {s: sum(p["shape"] == s for p in preds) for s in HEADS["shape"]}
    return res


def save_grid(images: torch.Tensor, path: Path, cols: int = 8) -> None:
    from PIL import Image

    u8 = to_u8(images).permute(0, 2, 3, 1).numpy()
    n, h, w, _ = u8.shape
    rows = (n + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * h))
    for i in range(n):
        grid.paste(Image.fromarray(u8[i]), ((i % cols) * w, (i // cols) * h))
    tmp = path.with_name(path.stem + ".tmp.png")
    grid.save(tmp)
    os.replace(tmp, path)


def build_unet_te(cfg: Config):
    te_cfg = cfg.arch["text"]
    torch.manual_seed(cfg.seed + 31)
    unet = build_unet(cfg.arch["unet"], te_cfg["hidden_size"])
    torch.manual_seed(cfg.seed + 32)
    te = build_text_encoder(te_cfg)
    return unet, te


def load_unet_state(cfg: Config, ema: bool = True):
    """UNet and text encoder of the current checkpoint (EMA weights by default)."""
    unet, te = build_unet_te(cfg)
    st = torch.load(cfg.work / "unet" / "state.pt", weights_only=True)
    unet.load_state_dict(st["ema_unet" if ema else "unet"])
    te.load_state_dict(st["ema_te" if ema else "te"])
    return unet.eval(), te.eval(), st["step"]


def run_eval(cfg: Config, unet, te, vae, tok, judge, n: int, steps: int, step: int, tag: str) -> dict:
    combos = eval_prompts(n)
    caps = [world.caption_for(*c) for c in combos]
    t0 = time.time()
    imgs = sample_images(unet, te, vae, tok, caps, seed=cfg.seed + 41, steps=steps, cfg_scale=cfg.unet["cfg"])
    res = {"step": step, "tag": tag, **judge_samples(judge, imgs, combos), "seconds": round(time.time() - t0, 1)}
    (cfg.work / "samples").mkdir(exist_ok=True)
    save_grid(imgs, cfg.work / "samples" / f"{tag}_step{step:06d}.png")
    with open(cfg.work / "eval.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(res) + "\n")
    return res


def stage_unet(cfg: Config, stop_after: int | None = None) -> None:
    d = cfg.work / "unet"
    d.mkdir(exist_ok=True)
    c = cfg.unet
    vae = load_vae(cfg)
    tok = tokenizer()
    data = latent_cache(cfg, vae, tok)
    judge = load_judge(cfg.work / "judge")
    sf = vae.config.scaling_factor
    unet, te = build_unet_te(cfg)
    classic_attention(unet)
    ema_unet, ema_te = build_unet_te(cfg)
    ema_unet.load_state_dict(unet.state_dict())
    ema_te.load_state_dict(te.state_dict())
    classic_attention(ema_unet)
    ema_unet.eval()
    ema_te.eval()
    for p in list(ema_unet.parameters()) + list(ema_te.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.AdamW([
        {"params": list(unet.parameters()), "lr": c["lr"], "weight_decay": 1e-2, "base": c["lr"]},
        {"params": list(te.parameters()), "lr": c["te_lr"], "weight_decay": 0.0, "base": c["te_lr"]},
    ])
    step = 0
    ck = d / "state.pt"
    if ck.is_file():
        st = torch.load(ck, weights_only=True)
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["te"])
        ema_unet.load_state_dict(st["ema_unet"])
        ema_te.load_state_dict(st["ema_te"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        print(f"unet: resumed at step {step}", flush=True)
    sched = noise_scheduler()
    ac = sched.alphas_cumprod
    snr_all = ac / (1 - ac)
    n = data["mean"].shape[0]
    empty = data["ids"].shape[0] - 1
    unet.train()
    te.train()
    params = [p for g in opt.param_groups for p in g["params"]]
    ema_pairs = list(zip(list(ema_unet.parameters()) + list(ema_te.parameters()),
                         list(unet.parameters()) + list(te.parameters())))
    last_ck, t0, acc = time.time(), time.time(), []

    def checkpoint():
        save_atomic({"unet": unet.state_dict(), "te": te.state_dict(), "ema_unet": ema_unet.state_dict(),
                     "ema_te": ema_te.state_dict(), "opt": opt.state_dict(), "step": step}, ck)

    last = c["steps"] if stop_after is None else min(c["steps"], stop_after)
    while step < last:
        warm = min(1.0, (step + 1) / c["warmup"])
        for g in opt.param_groups:
            g["lr"] = g["base"] * warm
        g_ = gen(cfg.seed, "unet", step)
        b = c["batch"]
        idx = torch.randint(0, n, (b,), generator=g_)
        mean, std = data["mean"][idx].float(), data["std"][idx].float()
        lat = (mean + std * torch.randn(mean.shape, generator=g_)) * sf
        drop = torch.rand(b, generator=g_) < c["caption_dropout"]
        cap = torch.where(drop, torch.full_like(idx, empty), data["caption"][idx])
        ids = data["ids"][cap]
        t = torch.randint(0, 1000, (b,), generator=g_)
        noise = torch.randn(lat.shape, generator=g_)
        noisy = sched.add_noise(lat, noise, t)
        ctx = te(ids).last_hidden_state
        pred = unet(noisy, t, ctx).sample
        mse = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        snr = snr_all[t]
        w = torch.clamp(snr, max=c["min_snr"]) / snr if c["min_snr"] else torch.ones_like(snr)
        loss = (w * mse).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(c["ema"], (1 + step) / (10 + step))
            for pe, p in ema_pairs:
                pe.lerp_(p, 1 - decay)
        step += 1
        acc.append((loss.item(), mse.mean().item()))
        if step % 25 == 0 or step == c["steps"]:
            log(cfg.work, {"stage": "unet", "step": step, "loss": round(sum(a for a, _ in acc) / len(acc), 5),
                           "mse": round(sum(m for _, m in acc) / len(acc), 5), "lr": opt.param_groups[0]["lr"],
                           "s_per_step": round((time.time() - t0) / len(acc), 3)})
            acc, t0 = [], time.time()
        if _STOP["flag"] or time.time() - last_ck > cfg.checkpoint_seconds or step == last \
                or step % c["eval_every"] == 0:
            checkpoint()
            last_ck = time.time()
            if _STOP["flag"]:
                raise SystemExit(0)
        if step % c["eval_every"] == 0:
            res = run_eval(cfg, ema_unet, ema_te, vae, tok, judge, c["eval_n"], c["eval_steps"], step, "train")
            log(cfg.work, {"stage": "unet-eval", **res})
            t0 = time.time()
    if step >= c["steps"]:
        write_json(d / "done.json", {"step": step})


# ---- export ---------------------------------------------------------------------------------------


def export(cfg: Config, out: Path, fp16: bool = True) -> Path:
    """Write the EMA weights as an ordinary SD 1.x diffusers folder, with the judge in ``out/judge``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from patina.core.models.loading import clip_tokenizer_dir

    unet, te, step = load_unet_state(cfg)
    vae = load_vae(cfg)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tokenizer(), unet=unet,
                                   scheduler=DDIMScheduler(**SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    if fp16:
        pipe.to(torch.float16)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    for name in ("vocab.json", "merges.txt", "NOTICE.txt"):  # the exact bundled tokenizer files
        src = clip_tokenizer_dir() / name
        if src.is_file():
            shutil.copyfile(src, tmp / "tokenizer" / name)
    (tmp / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)  # 3.6 MB, rebuilt from vocab + merges
    jd = tmp / "judge"
    jd.mkdir()
    for name in ("judge.safetensors", "config.json", "done.json", "honesty.json"):
        if (cfg.work / "judge" / name).is_file():
            shutil.copyfile(cfg.work / "judge" / name, jd / name)
    info = {"pretraining_step": step, "size": cfg.size, "seed": cfg.seed,
            "vae": json.loads((cfg.work / "vae" / "done.json").read_text(encoding="utf-8"))}
    (tmp / "demo_model.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


# ---- main -----------------------------------------------------------------------------------------


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"run folder (default {DEFAULT_WORK})")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and a few steps (tests)")
    ap.add_argument("--vae-steps", type=int)
    ap.add_argument("--judge-steps", type=int)
    ap.add_argument("--unet-steps", type=int)
    ap.add_argument("--stop-after", type=int, help="stop (with a checkpoint) once the UNet reaches this step")
    ap.add_argument("--eval", action="store_true", help="sample the current UNet and report the judge's accuracy")
    ap.add_argument("--eval-n", type=int, default=96)
    ap.add_argument("--judge-report", action="store_true",
                    help="the judge's confusion matrix on fresh renders and reconstructions (judge/honesty.json)")
    ap.add_argument("--export", type=Path, metavar="DIR", help="write the model as an SD1 diffusers folder")
    ap.add_argument("--fp32", action="store_true", help="export float32 weights instead of float16")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(max(1, args.threads))
    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    overrides = {(s, "steps"): v for s, v in (("vae", args.vae_steps), ("judge", args.judge_steps),
                                              ("unet", args.unet_steps)) if v is not None}
    cfg = Config(work, "tiny" if args.tiny else "full", overrides)
    if args.export:
        out = export(cfg, args.export.expanduser().resolve(), fp16=not args.fp32)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"exported to {out} ({size / 1e6:.2f} MB)")
        return 0
    if args.judge_report:
        from patina.core.demo.judge import honesty_report

        with torch.no_grad():
            rep = honesty_report(load_judge(work / "judge"), vae=load_vae(cfg), per_class=4 if args.tiny else 60)
        write_json(work / "judge" / "honesty.json", rep)
        print(json.dumps(rep, indent=1))
        return 0
    if args.eval:
        unet, te, step = load_unet_state(cfg)
        classic_attention(unet)
        res = run_eval(cfg, unet, te, load_vae(cfg), tokenizer(), load_judge(work / "judge"), args.eval_n,
                       cfg.unet["eval_steps"], step, "eval")
        print(json.dumps(res, indent=1))
        return 0
    signal.signal(signal.SIGTERM, _on_term)
    stage_vae(cfg)
    stage_judge(cfg)
    stage_unet(cfg, args.stop_after)
    print("pretraining finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
