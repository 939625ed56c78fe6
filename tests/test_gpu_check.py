"""scripts/gpu_check.py: the runs it plans on a GPU, and the whole pipeline with the tiny models on the CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_gpu_runs_cover_the_goals(capsys):
    gc = _script()
    runs = {r.name: r for r in gc.plan_runs(tiny=False, xformers=True)}
    benches = [r for r in runs.values() if r.kind == "bench"]
    assert sorted((r.family, r.resolution, r.batch, r.checkpointing) for r in benches) == [
        ("sd15", 512, 1, False), ("sd15", 512, 8, False), ("sd15", 512, 16, False),
        ("sdxl", 1024, 1, False), ("sdxl", 1024, 1, True)]
    trains = [r for r in runs.values() if r.kind == "train"]
    for family in ("sd1", "sdxl"):
        for precision in ("bf16", "fp16"):
            for attention in ("sdpa", "xformers"):
                assert any((r.family, r.precision, r.attention) == (family, precision, attention) for r in trains)
    assert all(r.steps == 30 and r.batch == 1 for r in trains)
    assert not any(r.attention == "xformers" for r in gc.plan_runs(tiny=False, xformers=False))
    cfg = gc.train_config(runs["train sdxl fp16 xformers"], Path("m"), Path("d"), Path("o"), tiny=False)
    assert (cfg["optimizer"], cfg["cache_latents"], cfg["text_encoder_lr"], cfg["max_train_steps"]) == (
        "AdamW8bit", True, 0.0, 30)
    assert gc.main(["--dry-run", "--only", "sdxl"]) == 0
    assert "bench sdxl b1 gc" in capsys.readouterr().out


def test_the_check_runs_end_to_end_on_the_cpu_with_tiny_models(tmp_path, capsys):
    """A real training run in its own process with the plan's VRAM estimate, `patina verify` of the LoRA, and
    the results written (the tiny bench is `patina bench --model tiny`, tested in test_cli_train); a
    full-size run without a GPU is refused with a clear message."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--only", "train", "--out", str(out)], capture_output=True, text=True, timeout=900,
                          env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    by_name = {r["name"]: r["result"] for r in results["runs"]}
    train = by_name["train tiny-sd1 fp32"]
    assert train["status"] == "finished" and train["verify"] == "ok" and Path(train["lora"]).is_file()
    assert train["estimate"]["allocated"] > 0
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| train tiny-sd1 fp32 | finished |" in md and "Goals:" in md

    import torch

    if not torch.cuda.is_available():
        assert _script().main(["--out", str(tmp_path / "x")]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
