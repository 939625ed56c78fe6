"""``patina bench``: training-step speed of the real SD1.5/SDXL UNet architectures with random weights.

Nothing is downloaded: the UNet is built from the shipped config (same FLOPs as the real model), a LoRA
is injected like a real run, and N steps are timed on random latents and text states. Reports
steady-state images/s, peak memory, FLOPs per image (counted by torch's FlopCounterMode on one step)
and MFU against a peak-TFLOPS figure. A benchmark reports numbers; it is not a test.
"""

from __future__ import annotations

import json
import os
import platform
import time

from patina.core.paths import resources_dir

# Dense BF16/FP16 tensor peak with FP32 accumulate, TFLOPS (vendor specs; performance.md §3.4).
PEAK_TFLOPS = {
    "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0,
    "RTX 4090": 165.2, "RTX 4080": 97.5, "RTX 3090": 71.0, "RTX 3080": 59.5, "RTX 3060": 25.5,
}


def _peak_for(name: str) -> float | None:
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_TFLOPS[key]
    return None


def _unet(model: str):
    from diffusers import UNet2DConditionModel

    if model == "tiny":
        from patina.core.models.tiny import SD1_UNET

        return UNet2DConditionModel(**SD1_UNET), "sd1", 32
    folder = {"sd15": "sd1", "sdxl": "sdxl"}[model]
    cfg_path = resources_dir() / "model_configs" / folder / "unet" / "config.json"
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    unet = UNet2DConditionModel.from_config(config)
    return unet, ("sdxl" if model == "sdxl" else "sd1"), int(config["cross_attention_dim"])


def _rss_bytes() -> int:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(kb) * (1 if platform.system() == "Darwin" else 1024)
    except ImportError:  # Windows
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().peak_wset)


def run_bench(*, model: str = "tiny", resolution: int | None = None, batch_size: int = 1,
              gradient_checkpointing: bool = False, steps: int = 10, warmup: int = 3, rank: int = 16,
              precision: str | None = None, peak_tflops: float | None = None) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from patina.core.lora.network import build_network
    from patina.core.lora.targets import NetworkSpec

    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()  # diffusers warns on every .to(dtype) of a from_config model
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    precision = precision or ("bf16" if cuda else "fp32")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    res = resolution or {"tiny": 64, "sd15": 512, "sdxl": 1024}[model]
    torch.manual_seed(0)
    unet, family, ctx_dim = _unet(model)
    unet.requires_grad_(False)
    network = build_network(unet, [], family, NetworkSpec(network_dim=rank, network_alpha=rank / 2, conv_dim=0,
                                                          conv_alpha=0, network_dropout=0.0, train_unet=True,
                                                          train_text_encoder=False))
    unet.to(device, dtype=dtype)
    params = list(network.trainable_parameters())
    for p in params:
        p.data = p.data.float()
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    opt = torch.optim.AdamW(params, lr=1e-4)
    b = batch_size
    lat = torch.randn(b, 4, res // 8, res // 8, device=device, dtype=dtype)
    ctx = torch.randn(b, 77, ctx_dim, device=device, dtype=dtype)
    t = torch.randint(0, 1000, (b,), device=device)
    kwargs = {}
    if family == "sdxl":
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(b, 1280, device=device, dtype=dtype),
                                       "time_ids": torch.tensor([[res, res, 0, 0, res, res]] * b, device=device,
                                                                dtype=dtype)}
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            pred = unet(lat, t, ctx, **kwargs).sample
        loss = torch.nn.functional.mse_loss(pred.float(), lat.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    # Count with the math attention kernel: its matmuls are counted on every device (the fused CPU kernel is
    # not registered with the flop counter). Timing below uses the normal fast kernels.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    flops_per_image = counter.get_total_flops() / b
    for _ in range(max(0, warmup - 1)):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    ips = steps * b / elapsed
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
    peak = peak_tflops if peak_tflops is not None else (_peak_for(name) if cuda else None)
    mem = torch.cuda.max_memory_allocated() if cuda else _rss_bytes()
    return {
        "model": model, "resolution": res, "batch_size": b, "gradient_checkpointing": gradient_checkpointing,
        "precision": precision, "lora_rank": rank, "device": name, "steps_timed": steps,
        "images_per_sec": round(ips, 4), "seconds_per_step": round(elapsed / steps, 4),
        "peak_memory_gib": round(mem / 2**30, 3),
        "peak_memory_kind": "cuda_max_allocated" if cuda else "process_max_rss",
        "flops_per_image_gflop": round(flops_per_image / 1e9, 3),
        "peak_tflops": peak,
        "mfu": round(flops_per_image * ips / (peak * 1e12), 4) if peak else None,
        "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
        "lora_params_m": round(sum(p.numel() for p in params) / 1e6, 3),
        "torch": torch.__version__,
    }


def main() -> None:  # pragma: no cover - convenience for `python -m patina.core.train.bench`
    print(json.dumps(run_bench(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
