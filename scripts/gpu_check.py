"""The GPU check: what the CPU tests cannot reach, run on a CUDA machine (see scripts/gpu_check.sh).

1. ``patina bench`` on the full-size UNets with random weights: SD 1.5 at 512 with batch 1, 8 and 16; SDXL at
   1024 with batch 1, with and without gradient checkpointing (img/s, MFU, peak VRAM).
2. 30 real training steps (``patina train``'s engine) on random-weight full-size SD 1.5 and SDXL models made
   here: bf16 and fp16 mixed precision, AdamW8bit, SDPA (and xformers when installed), latents and
   text-encoder outputs cached; each LoRA must pass ``patina verify``. Plus SD 1.5 with PyTorch's plain
   attention and both families with gradient checkpointing, to check the VRAM estimate's other terms.
3. Beside every measured peak (``torch.cuda.max_memory_allocated``) the VRAM estimate of the plan
   (patina.core.train.vram) for the same settings; the bench rows are printed as calibration rows for
   ``MEASURED`` in patina/core/train/vram.py.

Results go to ``--out`` (default ``$OUT`` or ``./gpu-check``): results.json and results.md. The exit status is
1 when any run failed. ``--tiny --device cpu`` runs the same pipeline with the tests' tiny models on the CPU
(a few steps: the check that this script itself works); ``--dry-run`` lists the runs without running them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GiB = 2**30
# The goals of the performance work (img/s and MFU from the bench, VRAM from the batch-1 training runs).
GOALS = ("SD1.5 r16 ≥ 15 img/s at batch 1 and ≥ 35 % MFU at batch ≥ 16; SDXL ≥ 25 % MFU; "
         "VRAM SD1.5 batch 1 ≤ 2.0 GiB, SDXL batch 1 ≤ 6.0 GiB")


@dataclass
class Run:
    name: str
    kind: str                   # "bench" | "train"
    family: str                 # sd1 | sdxl (bench: its model name maps to one)
    resolution: int
    batch: int = 1
    precision: str = "bf16"
    attention: str = "sdpa"
    checkpointing: bool = False
    steps: int = 30
    result: dict = field(default_factory=dict)


def plan_runs(*, tiny: bool, xformers: bool) -> list[Run]:
    """Every run of the check, in order."""
    if tiny:
        return [Run("bench tiny b1", "bench", "tiny", 64, precision="fp32", steps=2),
                Run("train tiny-sd1 fp32", "train", "sd1", 64, precision="no", steps=3)]
    runs = [Run(f"bench sd15 b{b}", "bench", "sd15", 512, batch=b, steps=20) for b in (1, 8, 16)]
    runs += [Run(f"bench sdxl b1{' gc' if gc else ''}", "bench", "sdxl", 1024, checkpointing=gc, steps=10)
             for gc in (False, True)]
    attentions = ("sdpa", "xformers") if xformers else ("sdpa",)
    for family, res in (("sd1", 512), ("sdxl", 1024)):
        for precision in ("bf16", "fp16"):
            for att in attentions:
                runs.append(Run(f"train {family} {precision} {att}", "train", family, res, precision=precision,
                                attention=att))
        runs.append(Run(f"train {family} bf16 sdpa gc", "train", family, res, checkpointing=True))
    runs.append(Run("train sd1 bf16 plain-attention", "train", "sd1", 512, attention="none"))
    return runs


# --- models and data -------------------------------------------------------------------------------------------

def make_model(family: str, folder: Path, *, tiny: bool, device: str = "cuda") -> Path:
    """A diffusers folder with random weights: the full-size architecture from the shipped configs (fp16, built
    on *device*), or the tests' tiny model. Made once per work folder."""
    if (folder / "model_index.json").is_file():
        return folder
    if tiny:
        from patina.core.models.tiny import save_tiny_diffusers

        return save_tiny_diffusers(folder, family)
    import torch
    from diffusers.utils import logging as dlog

    from patina.core.models.loading import shipped_config_dir
    from patina.core.train.vram_counts import build_models

    dlog.set_verbosity_error()  # diffusers warns on every .to(dtype) of a from_config model

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(shipped_config_dir(family), tmp)
    torch.manual_seed(0)
    with torch.device(device):
        unet, tes, vae = build_models(shipped_config_dir(family), family)
    for sub, model in [("unet", unet), ("vae", vae)] + [(f"text_encoder{'_2' if i else ''}", te)
                                                          for i, te in enumerate(tes)]:
        model.to(torch.float16).save_pretrained(tmp / sub, safe_serialization=True)
    del unet, tes, vae
    if device == "cuda":
        torch.cuda.empty_cache()
    tmp.rename(folder)
    return folder


def make_dataset(folder: Path, size: int, n: int = 8) -> Path:
    """*n* pictures of coloured shapes with captions, repeated so that an epoch has more than 30 steps."""
    from PIL import Image, ImageDraw

    concept = folder / "img" / "4_sks thing"
    if concept.is_dir():
        return concept.parent
    concept.mkdir(parents=True)
    for i in range(n):
        im = Image.new("RGB", (size, size), ((i * 53) % 200 + 30, 120, 180 - i * 9))
        ImageDraw.Draw(im).ellipse((size // 5, size // 4, size * 3 // 4, size * 4 // 5), fill=(230 - i * 10, 200, 90))
        im.save(concept / f"p{i}.png")
        (concept / f"p{i}.txt").write_text(f"sks thing, picture {i}", encoding="utf-8")
    return concept.parent


def train_config(run: Run, model: Path, data: Path, out: Path, *, tiny: bool) -> dict:
    from patina.core.config.schema import defaults

    cfg = dict(defaults(), pretrained_model_name_or_path=str(model), train_data_dir=str(data), output_dir=str(out),
               output_name=run.name.replace(" ", "_"), model_family=run.family,
               max_resolution=f"{run.resolution},{run.resolution}", min_bucket_reso=min(256, run.resolution),
               train_batch_size=run.batch, max_train_steps=run.steps, epoch=1000, save_every_n_epochs=0,
               network_dim=16, network_alpha=8, text_encoder_lr=0.0, optimizer="AdamW" if tiny else "AdamW8bit",
               mixed_precision=run.precision, xformers=run.attention, gradient_checkpointing=run.checkpointing,
               cache_latents=True, sdxl_no_half_vae=run.family == "sdxl", quality_report=False, seed=1)
    return cfg


def bench_config(run: Run) -> dict:
    """The training settings a bench run matches: UNet-only rank-16 LoRA, AdamW, nothing else on the GPU."""
    from patina.core.config.schema import defaults

    return dict(defaults(), model_family={"sd15": "sd1"}.get(run.family, run.family), train_batch_size=run.batch,
                network_dim=16, network_alpha=8, text_encoder_lr=0.0, optimizer="AdamW",
                mixed_precision=run.precision, gradient_checkpointing=run.checkpointing, cache_latents=True)


# --- one run, each in its own process (a clean CUDA allocator and peak) ----------------------------------------

def child_train(spec: dict) -> dict:
    """Plan (with the VRAM estimate) and train one config; the peak memory the CUDA allocator saw."""
    import torch

    from patina.core.train.engine import plan, train
    from patina.core.train.events import Progress

    cfg = spec["config"]
    est = plan(cfg).vram
    speeds = []
    fin = train(cfg, lambda ev: speeds.append(ev.images_per_sec) if isinstance(ev, Progress) else None)
    cuda = torch.cuda.is_available()
    return {"status": fin.status, "message": fin.message, "images_per_sec": speeds[-1] if speeds else None,
            "peak_allocated": torch.cuda.max_memory_allocated() if cuda else None,
            "peak_reserved": torch.cuda.max_memory_reserved() if cuda else None,
            "estimate": _estimate_dict(est),
            "lora": str(Path(cfg["output_dir"]) / f"{cfg['output_name']}.safetensors")}


def _estimate_dict(est) -> dict | None:
    if est is None:
        return None
    return {"allocated": est.allocated, "training_peak": est.training_peak, "total": est.total,
            "weights": est.weights, "train_state": est.train_state, "activations": est.activations}


def run_child(args: list[str], timeout: float) -> tuple[int, str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", DIFFUSERS_VERBOSITY="error")
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)
    return done.returncode, done.stdout, done.stderr


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result in the output")


def do_bench(run: Run, device: str) -> dict:
    from patina.core.train import vram

    args = ["-m", "patina.core", "bench", "--model", run.family, "--resolution", str(run.resolution),
            "--batch-size", str(run.batch), "--steps", str(run.steps), "--warmup", "1" if run.steps < 5 else "3",
            "--precision", run.precision]
    if run.checkpointing:
        args.append("--gradient-checkpointing")
    rc, out, err = run_child(args, 1800)
    if rc != 0:
        return {"status": "failed", "message": (err or out).strip().splitlines()[-1:]}
    res = json.loads(out[out.index("{"):])
    est = None
    if run.family != "tiny":
        cfg = bench_config(run)
        est, _ = vram.for_config(_checked(cfg), cfg["model_family"], [(run.resolution, run.resolution)], None)
    cuda = res.get("peak_memory_kind") == "cuda_max_allocated"
    return {"status": "finished", "images_per_sec": res["images_per_sec"], "mfu": res["mfu"],
            "peak_allocated": int(res["peak_memory_gib"] * GiB) if cuda else None, "estimate": _estimate_dict(est),
            "device": res["device"]}


def _checked(cfg: dict) -> dict:
    from patina.core.config.schema import check_values

    return check_values(cfg)[0]


def do_train(run: Run, work: Path, out: Path, *, tiny: bool) -> dict:
    model = make_model(run.family, work / f"{'tiny-' if tiny else ''}{run.family}-random", tiny=tiny)
    data = make_dataset(work / f"data-{run.resolution}", run.resolution)
    cfg = train_config(run, model, data, out / "loras", tiny=tiny)
    rc, stdout, err = run_child([str(Path(__file__)), "--train-one", json.dumps({"config": cfg})], 3600)
    if rc != 0:
        return {"status": "failed", "message": (err or stdout).strip().splitlines()[-3:]}
    res = last_json(stdout)
    if res["status"] != "finished":
        return res
    vrc, vout, verr = run_child(["-m", "patina.core", "verify", res["lora"]], 600)
    res["verify"] = "ok" if vrc == 0 else (vout + verr).strip().splitlines()[-3:]
    if vrc != 0:
        res["status"] = "failed"
    return res


# --- the report -----------------------------------------------------------------------------------------------

def _g(n) -> str:
    return "—" if n is None else f"{n / GiB:.2f}"


def report(runs: list[Run], env: dict) -> str:
    lines = [f"GPU check on {env.get('device')} (torch {env.get('torch')}, bitsandbytes "
             f"{env.get('bitsandbytes') or 'no'}, xformers {env.get('xformers') or 'no'})", "",
             "| run | status | img/s | MFU | peak allocated GiB | estimate GiB | estimate / peak |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        res = r.result
        est = (res.get("estimate") or {})
        # the bench has no caching phase: compare its training peak
        guess = est.get("training_peak") if r.kind == "bench" else est.get("allocated")
        peak = res.get("peak_allocated")
        ratio = f"{guess / peak:.2f}" if guess and peak else "—"
        ips = res.get("images_per_sec")
        mfu = res.get("mfu")
        lines.append(f"| {r.name} | {res.get('status', 'not run')} | {'—' if ips is None else f'{ips:.2f}'} | "
                     f"{'—' if mfu is None else f'{100 * mfu:.1f} %'} | {_g(peak)} | {_g(guess)} | {ratio} |")
    lines += ["", f"Goals: {GOALS}.", "", "Calibration rows for MEASURED in core/train/vram.py (bench, SDPA):", ""]
    for r in runs:
        res, est = r.result, r.result.get("estimate")
        if r.kind == "bench" and est and res.get("peak_allocated"):
            family = {"sd15": "sd1"}.get(r.family, r.family)
            other = (est["weights"] + est["train_state"]) / GiB
            lines.append(f'    Calibration("{family}", ({r.resolution}, {r.resolution}), {r.batch}, {r.checkpointing}, '
                         f'{res["peak_allocated"] / GiB:.3f}, {other:.3f}, "patina bench, {env.get("device")}, '
                         f'{time.strftime("%Y-%m-%d")}"),')
    return "\n".join(lines) + "\n"


def environment() -> dict:
    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda": cuda, "device": torch.cuda.get_device_name(0) if cuda else "CPU",
            "bitsandbytes": importlib.util.find_spec("bitsandbytes") is not None,
            "xformers": importlib.util.find_spec("xformers") is not None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="results folder (default $OUT)")
    ap.add_argument("--work", default=None, help="models and data (default: <out>/../gpu-check-work, not in --out)")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny models, a few steps (checks the script)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--only", default="", help="run only the runs whose name contains this text")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    ap.add_argument("--train-one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.train_one:
        print(json.dumps(child_train(json.loads(args.train_one))))
        return 0
    if args.device == "cpu" and not args.tiny:
        ap.error("--device cpu needs --tiny (full-size models train for minutes per step on a CPU)")
    env = environment() if not args.dry_run else {}
    runs = [r for r in plan_runs(tiny=args.tiny, xformers=bool(env.get("xformers"))) if args.only in r.name]
    if args.dry_run:
        print("\n".join(r.name for r in runs))
        return 0
    if args.device == "cuda" and not env["cuda"]:
        print("The GPU check needs a CUDA GPU (torch sees none); use --tiny --device cpu to check the script.",
              file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else out.parent / f"{out.name}-work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    for r in runs:
        print(f"== {r.name}", flush=True)
        start = time.perf_counter()
        try:
            r.result = do_bench(r, args.device) if r.kind == "bench" else do_train(r, work, out, tiny=args.tiny)
        except Exception as exc:  # noqa: BLE001 - one broken run must not hide the others
            r.result = {"status": "failed", "message": f"{type(exc).__name__}: {exc}"}
        r.result["seconds"] = round(time.perf_counter() - start, 1)
        print(f"   {r.result.get('status')} in {r.result['seconds']} s {r.result.get('message', '')}", flush=True)
    from patina.core.atomic import atomic_write_text

    text = report(runs, env)
    print(text)
    atomic_write_text(out / "results.md", text)
    atomic_write_text(out / "results.json", json.dumps({"environment": env, "runs": [asdict(r) for r in runs]},
                                                       indent=2))
    return 0 if all(r.result.get("status") == "finished" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
