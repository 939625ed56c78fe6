"""Noise and loss for one diffusion training step: noise offset, multires noise, input perturbation,
timestep range, epsilon/v-prediction targets, min-SNR / debiased weighting, Huber losses.

All functions take an explicit ``torch.Generator`` so a run is reproducible step by step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _randn(shape, gen, device, dtype):
    return torch.randn(shape, generator=gen, device=gen.device if gen is not None else device,
                       dtype=torch.float32).to(device=device, dtype=dtype)


def _rand(shape, gen, device):
    return torch.rand(shape, generator=gen, device=gen.device if gen is not None else device).to(device)


def make_noise(latents: torch.Tensor, cfg: dict, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise with kohya's optional offset / multi-resolution (pyramid) components."""
    b, c, h, w = latents.shape
    dev, dt = latents.device, latents.dtype
    noise = _randn(latents.shape, gen, dev, dt)
    if cfg["noise_offset_type"] == "Multires" and cfg["multires_noise_iterations"] > 0:
        discount = float(cfg["multires_noise_discount"])
        for i in range(1, int(cfg["multires_noise_iterations"]) + 1):
            r = 2 + _rand((1,), gen, dev).item() * 2
            sh, sw = max(1, int(h / (r ** i))), max(1, int(w / (r ** i)))
            low = _randn((b, c, sh, sw), gen, dev, dt)
            noise = noise + F.interpolate(low, size=(h, w), mode="bilinear") * discount ** i
            if sh == 1 or sw == 1:
                break
        noise = noise / noise.std()
    elif cfg["noise_offset_type"] == "Original" and cfg["noise_offset"] > 0:
        offset = torch.full((b, 1, 1, 1), float(cfg["noise_offset"]), device=dev)
        if cfg["noise_offset_random_strength"]:
            offset = offset * _rand((b, 1, 1, 1), gen, dev)
        if cfg["adaptive_noise_scale"]:
            mean = latents.float().mean(dim=(1, 2, 3), keepdim=True).abs()
            offset = (offset + cfg["adaptive_noise_scale"] * mean).clamp(min=0)
        noise = noise + offset.to(dt) * _randn((b, c, 1, 1), gen, dev, dt)
    return noise


def sample_timesteps(batch: int, cfg: dict, num_train_timesteps: int, gen: torch.Generator, device) -> torch.Tensor:
    lo = int(cfg["min_timestep"])
    hi = min(int(cfg["max_timestep"]), num_train_timesteps)
    t = torch.randint(lo, hi, (batch,), generator=gen, device=gen.device if gen is not None else device)
    return t.to(device=device, dtype=torch.long)


def noisy_latents(scheduler, latents, noise, timesteps, cfg: dict, gen: torch.Generator):
    gamma = float(cfg["ip_noise_gamma"])
    if gamma > 0:
        if cfg["ip_noise_gamma_random_strength"]:
            gamma = gamma * _rand((latents.shape[0], 1, 1, 1), gen, latents.device).to(latents.dtype)
        perturbed = noise + gamma * _randn(latents.shape, gen, latents.device, latents.dtype)
        return scheduler.add_noise(latents, perturbed, timesteps)
    return scheduler.add_noise(latents, noise, timesteps)


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1.0 - ac)


def _huber_c(scheduler, timesteps, cfg: dict) -> torch.Tensor:
    c = float(cfg["huber_c"])
    schedule = cfg["huber_schedule"]
    if schedule == "constant":
        return torch.full(timesteps.shape, c, device=timesteps.device)
    if schedule == "exponential":
        alpha = -math.log(c) / scheduler.config.num_train_timesteps
        return torch.exp(-alpha * timesteps.float())
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    sigmas = ((1.0 - ac) / ac) ** 0.5
    return (1 - c) / (1 + sigmas) ** 2 + c


def per_sample_loss(pred, target, timesteps, scheduler, cfg: dict, v_prediction: bool) -> torch.Tensor:
    """Loss per batch item (shape ``[B]``), before reg-image weighting."""
    pred, target = pred.float(), target.float()
    kind = cfg["loss_type"]
    if kind == "l2":
        loss = F.mse_loss(pred, target, reduction="none")
    elif kind == "l1":
        loss = F.l1_loss(pred, target, reduction="none")
    else:
        c = _huber_c(scheduler, timesteps, cfg).view(-1, 1, 1, 1)
        core = torch.sqrt((pred - target) ** 2 + c ** 2) - c
        loss = (2 * c * core if kind == "huber" else 2 * core) * float(cfg["huber_scale"])
    loss = loss.mean(dim=(1, 2, 3))

    s = None
    if cfg["min_snr_gamma"] > 0 or cfg["debiased_estimation_loss"] or cfg["scale_v_pred_loss_like_noise_pred"] \
            or cfg["v_pred_like_loss"] > 0:
        s = snr(scheduler, timesteps)
    if cfg["min_snr_gamma"] > 0:
        gamma = float(cfg["min_snr_gamma"])
        clipped = torch.minimum(s, torch.full_like(s, gamma))
        loss = loss * (clipped / (s + 1) if v_prediction else clipped / s)
    if cfg["scale_v_pred_loss_like_noise_pred"] and v_prediction:
        ss = torch.clamp(s, max=1000)
        loss = loss * (ss / (ss + 1))
    if cfg["v_pred_like_loss"] > 0:
        ss = torch.clamp(s, max=1000)
        loss = loss + loss / (ss / (ss + 1)) * float(cfg["v_pred_like_loss"])
    if cfg["debiased_estimation_loss"]:
        loss = loss / torch.sqrt(torch.clamp(s, max=1000))
    return loss


def target_for(scheduler, latents, noise, timesteps, v_prediction: bool):
    return scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
