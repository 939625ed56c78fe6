"""Benchmark ``resize`` and ``extract`` on full-size SD 1.5 files with random weights (nothing downloaded).

Builds, from the shipped SD 1.5 configs (``resources/model_configs/sd1``), a random-weight single-file
checkpoint in the A1111/LDM layout (fp16, ~2 GB), a "fine-tuned" copy (the same weights plus small noise) and a
random rank-R LoRA over every layer a LoRA can adapt; then runs each tool in a fresh process and reports its
wall time and peak resident memory: the process's ``ru_maxrss`` (which counts the pages of the memory-mapped
input files that were read; the system can drop those at any time) and the peak of its anonymous memory
(``RssAnon`` sampled every 50 ms on Linux: what the tool itself holds).

    python scripts/bench_lora_tools.py --work /tmp/patina-bench            # all operations
    python scripts/bench_lora_tools.py --ops resize --device cpu          # only the resizes
    python scripts/bench_lora_tools.py --ops extract --device cuda

Files are written once into ``--work`` and reused by later runs (delete the folder afterwards: ~4 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading, time
args = json.loads(sys.argv[1])
peak_anon = [0]
def sample():
    while True:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
if args["op"] == "resize":
    from patina.core.lora.resize import resize
    rep = resize(args["src"], args["dst"], rank=args["rank"], dynamic=args.get("dynamic"),
                 dynamic_param=args.get("param"), device=args["device"])
else:
    from patina.core.lora.extract import extract
    rep = extract(args["base"], args["tuned"], args["dst"], rank=args["rank"], conv_rank=args["conv_rank"],
                  device=args["device"])
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ranks = sorted({m.rank_out for m in rep.modules})
print(json.dumps({"seconds": round(dt, 2), "peak_rss_mb": round(rss), "peak_anon_mb": round(peak_anon[0] / 1024),
                  "modules": len(rep.modules),
                  "ranks": [ranks[0], ranks[-1]]}))
"""


def _keys(cfg: Path):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from patina.core.models.detect import read_json
    from patina.core.models.tiny import clip_to_ldm, unet_to_ldm, vae_to_ldm

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(read_json(cfg / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(read_json(cfg / "vae" / "config.json"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(cfg / "text_encoder"), local_files_only=True))
    sd = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    sd.update({"first_stage_model." + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    sd.update({"cond_stage_model." + k: v for k, v in clip_to_ldm(te.state_dict()).items()})
    return [(k, tuple(v.shape), v.dtype) for k, v in sd.items()]


def build_checkpoints(work: Path) -> tuple[Path, Path]:
    import torch

    from patina.core.lora.toolkit import write_safetensors_stream
    from patina.core.models.loading import shipped_config_dir

    base, tuned = work / "sd15-random.safetensors", work / "sd15-random-tuned.safetensors"
    if base.exists() and tuned.exists():
        return base, tuned
    keys = _keys(shipped_config_dir("sd1"))
    index = {k: i for i, (k, _, _) in enumerate(keys)}
    entries = [(k, torch.float16 if dt.is_floating_point else dt, shape) for k, shape, dt in keys]
    shapes = {k: (shape, dt) for k, shape, dt in keys}

    def make(noise: float):
        def produce(key):
            shape, dt = shapes[key]
            g = torch.Generator().manual_seed(index[key])
            if not dt.is_floating_point:
                return torch.zeros(shape, dtype=dt)
            t = torch.randn(shape, generator=g) * 0.02
            if noise:
                t += torch.randn(shape, generator=torch.Generator().manual_seed(10**6 + index[key])) * noise
            return t.to(torch.float16)
        return produce

    t0 = time.perf_counter()
    write_safetensors_stream(base, entries, make(0.0), {"modelspec.architecture": "stable-diffusion-v1"})
    write_safetensors_stream(tuned, entries, make(1e-3), {"modelspec.architecture": "stable-diffusion-v1"})
    print(f"built two random SD 1.5 checkpoints ({base.stat().st_size / 2**30:.2f} GB each) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return base, tuned


def build_lora(work: Path, base: Path, rank: int) -> Path:
    import torch

    from patina.core.lora.checkpoint_map import ModelWeights
    from patina.core.lora.kohya_format import save_lora

    path = work / f"sd15-random-lora-r{rank}.safetensors"
    if path.exists():
        return path
    sd = {}
    g = torch.Generator().manual_seed(0)
    with ModelWeights(base) as mw:
        for ref in mw.modules:
            if ref.path.split(".")[0] in ("conv_in", "conv_out", "time_embedding", "add_embedding"):
                continue
            flat_in = 1
            for x in ref.shape[1:]:
                flat_in *= x
            down = torch.randn(rank, flat_in, generator=g).reshape(rank, *ref.shape[1:]) * 0.05
            up = torch.randn(ref.shape[0], rank, generator=g) * 0.01
            if len(ref.shape) == 4:
                up = up.reshape(ref.shape[0], rank, 1, 1)
            sd[f"{ref.name}.lora_down.weight"], sd[f"{ref.name}.lora_up.weight"] = down, up
            sd[f"{ref.name}.alpha"] = torch.tensor(rank / 2)
    save_lora(path, sd, {"ss_base_model_version": "sd_v1", "ss_network_dim": str(rank),
                         "ss_network_alpha": str(rank / 2),
                         "ss_network_args": json.dumps({"conv_dim": str(rank), "conv_alpha": str(rank / 2)})})
    return path


def run_child(args: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{args['op']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "patina-bench"))
    ap.add_argument("--ops", default="resize,extract", help="comma list of resize, extract")
    ap.add_argument("--rank", type=int, default=32, help="rank of the random LoRA and of the extraction (32)")
    ap.add_argument("--conv-rank", type=int, default=0, help="extract: 3x3 conv rank (0 = LoRA without conv)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    base, tuned = build_checkpoints(work)
    ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    rows = []
    if "resize" in ops:
        lora = build_lora(work, base, a.rank)
        for label, extra in ((f"resize r{a.rank} LoCon → r{a.rank // 2} (fixed)", {}),
                             (f"resize r{a.rank} LoCon → sv_fro 0.9 (max {a.rank})", {"dynamic": "sv_fro", "param": 0.9})):
            res = run_child({"op": "resize", "src": str(lora), "dst": str(work / "resized.safetensors"),
                             "rank": a.rank // 2 if not extra else a.rank, "device": a.device, **extra})
            rows.append((label, res))
            print(label, res, flush=True)
    if "extract" in ops:
        label = f"extract r{a.rank}" + (f" conv r{a.conv_rank}" if a.conv_rank else "") + " from 2×2 GB fp16"
        res = run_child({"op": "extract", "base": str(base), "tuned": str(tuned),
                         "dst": str(work / "extracted.safetensors"), "rank": a.rank, "conv_rank": a.conv_rank,
                         "device": a.device})
        rows.append((label, res))
        print(label, res, flush=True)
    print("\n| operation | modules | time | peak RSS | peak anonymous memory |\n|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['modules']} | {r['seconds']:.1f} s | {r['peak_rss_mb']} MB | {r.get('peak_anon_mb', '?')} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
