"""`patina train`, `patina verify`, `patina bench` and multi-process training with accelerate."""

import json
import os
import subprocess
import sys

import pytest

from patina.core.cli import main as cli
from patina.core.config.files import save_config
from patina.core.models.tiny import save_tiny_diffusers
from trainkit import make_dataset, tiny_cfg


@pytest.fixture(scope="module")
def sd1_dir(tmp_path_factory):
    return save_tiny_diffusers(tmp_path_factory.mktemp("m") / "tiny-sd1", "sd1")


def test_train_cli_then_verify(sd1_dir, tmp_path, capsys):
    data = make_dataset(tmp_path)
    preset = save_config(tmp_path / "p.json", tiny_cfg(sd1_dir, data, tmp_path / "out", epoch=1))
    rc = cli(["train", str(preset), "--set", "max_train_steps=3", "--set", "output_name=cli", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "Training plan" in out.out and "Total steps: 3" in out.out
    # each warning is printed once: as it is found, not again in the plan
    printed = out.out + out.err
    warnings = [line[len("warning: "):] for line in printed.splitlines() if line.startswith("warning: ")]
    assert all(printed.count(w) == 1 for w in warnings), warnings
    import torch

    if not torch.cuda.is_available():
        assert printed.count("no CUDA GPU found") == 1
    lora = tmp_path / "out" / "cli.safetensors"
    assert lora.exists() and "Your LoRA is" in out.out
    assert cli(["verify", str(lora)]) == 0
    report = capsys.readouterr().out
    # what a trained file must show: the family, the trained rank and alpha, a hash that fits, every loader OK
    assert "Base model: SD 1.x" in report
    assert "Ranks: 4; alphas: 4" in report
    assert "Model hash: matches the tensors" in report
    assert "PROBLEM" not in report and "NaN/inf" not in report
    # the same file with one tensor made NaN: verify fails and names it
    from safetensors.torch import load_file, save_file

    from patina.core.lora.kohya_format import read_lora_metadata

    tensors = load_file(str(lora))
    name = next(k for k in sorted(tensors) if k.endswith("lora_up.weight"))
    tensors[name] = tensors[name] * float("nan")
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=read_lora_metadata(lora))
    assert cli(["verify", str(broken)]) == 1
    report = capsys.readouterr().out
    assert "NaN/inf in 1 module(s)" in report and name.rsplit(".", 2)[0] in report
    assert "Model hash: DOES NOT MATCH the tensors" in report
    # the output exists now: without --overwrite it is refused, with a message and no traceback
    rc = cli(["train", str(preset), "--set", "max_train_steps=1", "--set", "output_name=cli", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "already exists" in err and "Traceback" not in err


def test_train_cli_reports_bad_settings(tmp_path, capsys):
    preset = save_config(tmp_path / "p.json", tiny_cfg(tmp_path, tmp_path, tmp_path))
    assert cli(["train", str(preset), "--set", "network_dim=-1"]) == 2
    assert "network_dim" in capsys.readouterr().err


def test_verify_refuses_non_lora(tmp_path, capsys):
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    assert cli(["verify", str(tmp_path / "x.safetensors")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_bench_tiny_prints_numbers(capsys):
    assert cli(["bench", "--model", "tiny", "--steps", "2", "--warmup", "1", "--batch-size", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images_per_sec"] > 0 and result["flops_per_image_gflop"] > 0
    assert result["peak_memory_gib"] > 0 and result["model"] == "tiny"


def test_accelerate_two_processes_on_cpu(sd1_dir, tmp_path):
    data = make_dataset(tmp_path)
    cfg = tiny_cfg(sd1_dir, data, tmp_path / "out", epoch=1, logging_dir=str(tmp_path / "log"), clip_skip=2,
                   sample_prompts="sks toy --w 64 --h 64 --s 2 --d 1", sample_every_n_epochs=1)
    preset = save_config(tmp_path / "p.json", cfg)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        # accelerate's multi-process launcher is --multi_gpu even without GPUs; the engine then uses gloo on CPU
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", "-m", "patina.core", "train",
         str(preset), "--quiet"],
        capture_output=True, text=True, env=env, timeout=240, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    assert files == ["sample", "tiny.safetensors"], files
    assert len(list((out / "sample").iterdir())) == 1  # one process sampled
    assert proc.stdout.count("Your LoRA is") == 1
    # 12 samples per epoch, batch 2, shared by 2 processes: 3 steps, logged once each
    run = next((tmp_path / "log").iterdir())
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_bench_builds_the_real_architectures_from_the_shipped_configs(monkeypatch):
    from diffusers import UNet2DConditionModel

    import patina.core.train.bench as bench

    seen = []
    monkeypatch.setattr(UNet2DConditionModel, "from_config", classmethod(lambda cls, c: seen.append(c) or "unet"))
    assert bench._unet("sd15") == ("unet", "sd1", 768)
    assert bench._unet("sdxl") == ("unet", "sdxl", 2048)
    assert seen[0]["block_out_channels"] == [320, 640, 1280, 1280]
    assert seen[1]["transformer_layers_per_block"] == [1, 2, 10]
