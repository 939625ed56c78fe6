"""Patina's model load and the window's repeated run against diffusers' ``from_single_file``, side by side
(docs/benchmarks.md).

Writes random-weight, full-size single-file checkpoints (fp16 .safetensors in the original LDM layout:
SD 1.5, 2.0 GiB; with ``--sdxl`` also SDXL base, 6.5 GiB) into ``--work`` (never into the repository), then
measures in fresh processes, rounds interleaved (Patina, diffusers, diffusers, Patina, …):

* **Patina, first run**: ``python -c`` → ``patina.core.train.engine.train`` on a one-image dataset, from
  process start to the moment the engine reports the base model loaded (its plan event, sent once the
  UNet, VAE and text encoders are in the training dtype on the training device), everything before it
  included: imports, settings and dataset checks, pre-flight, the load. ``--mark step`` measures to the
  start of the first step instead (LoRA, optimizer and caches built too; on a CPU under bf16 the VAE's
  latent caching runs on emulated bf16 convolutions and takes minutes, so "ready" is the default there).
* **Patina, repeated run**: in the same process, a second ``train`` with the window's model cache
  (patina.core.models.cache), measured from the ``train`` call to the same moment.
* **diffusers, load alone**: ``StableDiffusion(XL)Pipeline.from_single_file(file, config=<Patina's shipped
  config folder>, torch_dtype=<the same dtype>)`` with Patina's bundled CLIP tokenizer passed in (offline):
  from process start to the pipeline returned ("models ready").

Peak RSS is the process's VmHWM at that moment. The default dtype, bf16, is what a CPU run holds its
frozen weights in under mixed precision (mixed precision fp16 on a CPU trains in full precision, see
core/train/engine.py); ``--dtype float16`` for fp16 (on a CUDA machine Patina's side then streams the
weights onto the GPU while diffusers' load alone stays on the CPU). Usage::

    OMP_NUM_THREADS=1 python scripts/bench_load.py --rounds 3 [--sdxl] [--work /tmp/patina-bench-load]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = {"sd15": "sd15-random.safetensors", "sdxl": "sdxl-random.safetensors"}


def cpu_s() -> float:
    """CPU seconds this process used so far (all threads): far less disturbed by other work on a busy
    machine than wall time."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def vm_hwm_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


# --- the checkpoints --------------------------------------------------------------------------------------------

def _ldm_shapes(family: str) -> dict:
    """LDM-layout tensor names and shapes of the full-size model (built on the meta device: no memory)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from patina.core.models.loading import shipped_config_dir
    from patina.core.models.tiny import clip_to_ldm, clip_to_open_clip, unet_to_ldm, vae_to_ldm

    cfg = shipped_config_dir("sdxl" if family == "sdxl" else "sd1")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder"))
        te2 = (CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg / "text_encoder_2"))
               if family == "sdxl" else None)
    sd = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    sd.update({"first_stage_model." + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    if family == "sdxl":
        sd.update({"conditioner.embedders.0." + k: v for k, v in clip_to_ldm(te.state_dict()).items()})
        sd.update({"conditioner.embedders.1.model." + k: v for k, v in clip_to_open_clip(te2.state_dict()).items()})
    else:
        sd.update({"cond_stage_model." + k: v for k, v in clip_to_ldm(te.state_dict()).items()})
    return {k: tuple(v.shape) for k, v in sd.items()}


def write_random_checkpoint(path: Path, family: str) -> None:
    """Random fp16 weights (norm weights 1, biases 0), written tensor by tensor (never all in memory)."""
    import torch

    shapes = _ldm_shapes(family)
    header, offset = {}, 0
    for k, shape in shapes.items():
        n = 2 * int(torch.Size(shape).numel())
        header[k] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    g = torch.Generator().manual_seed(0)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for k, shape in shapes.items():
            if k.endswith("bias"):
                t = torch.zeros(shape, dtype=torch.float16)
            elif "norm" in k or k.endswith(("ln_1.weight", "ln_2.weight", "ln_final.weight")):
                t = torch.ones(shape, dtype=torch.float16)
            else:
                t = (torch.randn(shape, generator=g) * 0.02).to(torch.float16)
            fh.write(t.contiguous().view(torch.uint8).numpy().tobytes())
    tmp.replace(path)


# --- the measured processes -------------------------------------------------------------------------------------

def child_diffusers(path: str, family: str, dtype: str) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from patina.core.models.loading import clip_tokenizer_dir, shipped_config_dir

    tok_dir = str(clip_tokenizer_dir())
    kw = {"tokenizer": CLIPTokenizer.from_pretrained(tok_dir)}
    if family == "sdxl":
        cls, cfg = StableDiffusionXLPipeline, shipped_config_dir("sdxl")
        kw["tokenizer_2"] = CLIPTokenizer.from_pretrained(tok_dir, pad_token="!")
    else:
        cls, cfg = StableDiffusionPipeline, shipped_config_dir("sd1")
        kw.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls.from_single_file(path, config=str(cfg), local_files_only=True, torch_dtype=getattr(torch, dtype), **kw)
    ready = time.time()
    assert pipe.unet.dtype == getattr(torch, dtype)
    return {"ready": ready, "cpu_s": cpu_s(), "rss_gib": vm_hwm_gib()}


class _AtFirstStep(Exception):
    pass


def child_patina(path: str, family: str, dtype: str, work: str, mark: str = "ready") -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from trainkit import make_dataset, tiny_cfg  # the engine tests' one-image dataset and config

    from patina.core.models.cache import ModelCache
    from patina.core.train.engine import train
    from patina.core.train.events import Plan, Status

    work_dir = Path(work)
    data = make_dataset(work_dir / f"data-{os.getpid()}", n=1, repeats=1)
    mp = {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}[dtype]
    cfg = tiny_cfg(path, data, work_dir / f"out-{os.getpid()}", mixed_precision=mp, train_batch_size=1, epoch=1,
                   network_dim=16, network_alpha=16.0, model_family="sdxl" if family == "sdxl" else "sd1")
    marks: list[tuple[float, float]] = []

    def emit(ev):
        # "ready": the plan event the engine sends once the base model is loaded (in its training dtype, on
        # its device); "step": the step loop begins (network, optimizer and caches built too)
        if (isinstance(ev, Plan) and mark == "ready") or (isinstance(ev, Status) and ev.phase == "training"):
            marks.append((time.time(), vm_hwm_gib(), cpu_s()))
            raise _AtFirstStep  # stop there: the step itself is slow on a CPU and not what is measured

    cache = ModelCache()
    first = train(cfg, emit, model_cache=cache)
    started, started_cpu = time.time(), cpu_s()
    second = train(cfg, emit, model_cache=cache)
    if len(marks) != 2 or cache.loads != 1:
        raise SystemExit(f"the runs did not reach the first step: {first.message} / {second.message}")
    return {"ready": marks[0][0], "rss_gib": marks[0][1], "cpu_s": marks[0][2], "repeat_s": marks[1][0] - started,
            "repeat_cpu_s": marks[1][2] - started_cpu}


def run_child(kind: str, path: Path, family: str, dtype: str, work: Path, mark: str = "ready") -> dict:
    extra = f", {str(work)!r}, {mark!r}" if kind == "patina" else ""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import bench_load as b; "
            f"r = b.child_{kind}({str(path)!r}, {family!r}, {dtype!r}" + extra
            + "); print('RESULT ' + json.dumps(r), flush=True); import os; os._exit(0)")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{kind} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    r["wall_s"] = r.pop("ready") - t0
    return r


_TEARDOWN = """
import os, sys, time
import torch, accelerate
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel
from patina.core.models.tiny import tiny_pipeline
pipe = tiny_pipeline("sd1")
print(time.time(), flush=True)
if sys.argv[1] == "fast":
    os._exit(0)
"""


def measure_teardown(rounds: int) -> dict:
    """Seconds from a process's last line to its end, with the interpreter's teardown and with os._exit
    (what ``patina train`` does), after importing what a training imports and building a (tiny) pipeline."""
    times: dict[str, list] = {"normal": [], "fast": []}
    for _ in range(rounds):
        for mode in times:
            proc = subprocess.Popen([sys.executable, "-c", _TEARDOWN, mode], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
            printed = float(proc.stdout.readline())
            proc.wait()
            times[mode].append(time.time() - printed)
    return {f"{k}_exit_s": round(statistics.median(v), 2) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/patina-bench-load"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sdxl", action="store_true", help="also SDXL (writes a 6.5 GiB file; needs ~16 GiB of RAM)")
    ap.add_argument("--sdxl-rounds", type=int, default=None, help="rounds for SDXL (default: --rounds)")
    ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    ap.add_argument("--mark", choices=("ready", "step"), default="ready",
                    help="Patina's moment: models ready (as diffusers') or the first step begins")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    families = ["sd15"] + (["sdxl"] if args.sdxl else [])
    report = {}
    for fam in families:
        path = args.work / FILES[fam]
        if not path.exists():
            print(f"writing {path} …", flush=True)
            write_random_checkpoint(path, fam)
        size_gib = path.stat().st_size / 2**30
        rows: dict[str, list] = {"patina": [], "diffusers": []}
        rounds = args.sdxl_rounds if fam == "sdxl" and args.sdxl_rounds else args.rounds
        for r in range(rounds):
            for kind in ("patina", "diffusers") if r % 2 == 0 else ("diffusers", "patina"):
                res = run_child(kind, path, fam, args.dtype, args.work, args.mark)
                rows[kind].append(res)
                print(fam, r, kind, json.dumps(res), flush=True)
        med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in rows.items()}
        d = med["diffusers"]["wall_s"]
        report[fam] = {
            "file_gib": round(size_gib, 3), "rounds": rounds, "dtype": args.dtype, "mark": args.mark,
            "patina_first_s": round(med["patina"]["wall_s"], 2), "patina_repeat_s": round(med["patina"]["repeat_s"], 3),
            "diffusers_load_s": round(d, 2),
            "first_ratio": round(med["patina"]["wall_s"] / d, 3), "repeat_ratio": round(med["patina"]["repeat_s"] / d, 4),
            "patina_first_cpu_s": round(med["patina"]["cpu_s"], 2),
            "patina_repeat_cpu_s": round(med["patina"]["repeat_cpu_s"], 3),
            "diffusers_load_cpu_s": round(med["diffusers"]["cpu_s"], 2),
            "first_cpu_ratio": round(med["patina"]["cpu_s"] / med["diffusers"]["cpu_s"], 3),
            "repeat_cpu_ratio": round(med["patina"]["repeat_cpu_s"] / med["diffusers"]["cpu_s"], 4),
            "patina_rss_gib": round(med["patina"]["rss_gib"], 2), "diffusers_rss_gib": round(med["diffusers"]["rss_gib"], 2),
            "patina_rss_per_file": round(med["patina"]["rss_gib"] / size_gib, 3),
            "diffusers_rss_per_file": round(med["diffusers"]["rss_gib"] / size_gib, 3),
            "all": rows,
        }
        print(json.dumps({k: v for k, v in report[fam].items() if k != "all"}, indent=1), flush=True)
    report["teardown"] = measure_teardown(args.rounds)
    print(json.dumps(report["teardown"]), flush=True)
    out = args.work / "bench_load.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
