"""Start-to-first-step: loading straight into the training dtype, the window's model cache, the CPU thread
count, and ``patina train`` ending without the interpreter teardown."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from patina.core.config.files import save_config
from patina.core.models import tiny
from patina.core.models.cache import ModelCache
from patina.core.models.loading import load_base_model
from patina.core.train import events as E
from patina.core.train.engine import train
from patina.core.train.preflight import DeviceInfo, check_device
from patina.core.train.run import Reporter, _load_models
from patina.core.train.threads import choose_threads
from trainkit import Collector, make_dataset, tiny_cfg


@pytest.fixture(scope="module")
def fp16_single(tmp_path_factory):
    """A tiny SD1 single file stored in fp16 (as real checkpoints are) and its config folder."""
    folder = tmp_path_factory.mktemp("fp16")
    path = folder / "tiny-fp16.safetensors"
    save_file({k: v.half() for k, v in tiny.tiny_ldm_state_dict("sd1").items()}, str(path))
    return path, tiny.save_tiny_config_dir(folder / "config", "sd1")


@pytest.fixture(scope="module")
def sd1_dir(tmp_path_factory):
    return tiny.save_tiny_diffusers(tmp_path_factory.mktemp("m") / "tiny-sd1", "sd1")


class _Fp32Conversions(TorchDispatchMode):
    """Records every weight-sized tensor converted into float32 (``aten._to_copy``) while active."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default:
            for t in pytree.tree_leaves(out):
                if (isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type != "meta"
                        and t.numel() >= 1024):
                    self.seen.append(tuple(t.shape))
        return out


def _floating_dtypes(base) -> set:
    return {t.dtype for m in (base.unet, base.vae, *base.text_encoders) for t in m.state_dict().values()
            if t.is_floating_point()}


def test_mixed_precision_load_never_converts_weights_to_fp32(fp16_single, tmp_path, monkeypatch):
    path, cfg_dir = fp16_single
    # the engine gives single files the shipped configs; here the tiny model's own
    monkeypatch.setattr("patina.core.models.loading.shipped_config_dir", lambda family, v=False: cfg_dir)
    cfg = tiny_cfg(path, tmp_path, tmp_path / "out", mixed_precision="bf16", model_family="sd1")
    acc = SimpleNamespace(mixed_precision="bf16", device=torch.device("cpu"))
    with _Fp32Conversions() as spy:
        run = _load_models(cfg, None, acc, Reporter(None))
    assert spy.seen == []
    assert _floating_dtypes(run.base) == {torch.bfloat16}
    # "no half VAE" keeps SDXL's VAE in fp32; everything else stays bf16
    with _Fp32Conversions() as spy:
        base = load_base_model(path, dtype=torch.float16, vae_dtype=torch.float32, config_dir=cfg_dir)
    assert {t.dtype for t in base.unet.state_dict().values()} == {torch.float16}
    assert {t.dtype for t in base.vae.state_dict().values()} == {torch.float32}
    assert spy.seen and all(len(s) for s in spy.seen)  # only the VAE's tensors were converted to fp32
    vae_numel = sum(t.numel() for t in base.vae.state_dict().values())
    assert sum(torch.Size(s).numel() for s in spy.seen) <= vae_numel


def test_streamed_weights_equal_the_file(fp16_single):
    from safetensors.torch import load_file

    from patina.core.models.streaming import read_safetensors_to

    path, _cfg = fp16_single
    want = load_file(str(path))
    got = read_safetensors_to(path, lambda name: torch.bfloat16 if "diffusion_model" in name else None)
    assert got.keys() == want.keys()
    for k, v in want.items():
        expect = v.to(torch.bfloat16) if "diffusion_model" in k else v
        assert got[k].dtype == expect.dtype and torch.equal(got[k], expect), k


def _state(base) -> dict:
    return {f"{name}.{k}": v.clone() for name, m in (("unet", base.unet), ("vae", base.vae),
                                                     *((f"te{i}", te) for i, te in enumerate(base.text_encoders)))
            for k, v in m.state_dict().items()}


def test_window_cache_reuses_the_base_model_and_keeps_it_pristine(sd1_dir, tmp_path):
    data = make_dataset(tmp_path, n=2, repeats=1)
    cache = ModelCache()
    cfg = tiny_cfg(sd1_dir, data, tmp_path / "out", epoch=1, train_batch_size=2, cpu_threads=2)
    pristine = _state(load_base_model(sd1_dir))
    threads = []
    first = Collector(lambda ev: isinstance(ev, E.Progress) and threads.append(torch.get_num_threads()))
    old = torch.get_num_threads()
    try:
        assert train(cfg, first, model_cache=cache).status == "finished"
    finally:
        torch.set_num_threads(old)
    assert threads == [2]  # the engine gave torch the chosen CPU thread count
    assert cache.loads == 1 and cache.holds == sd1_dir.name
    second = Collector()
    assert train(cfg, second, model_cache=cache).status == "finished"
    assert cache.loads == 1  # nothing changed: the second run did not load the file
    assert any("already loaded" in e.text for e in second.of(E.Log))
    assert not any("already loaded" in e.text for e in first.of(E.Log))
    # the runs trained LoRAs on fresh modules around the same weights: the base is bit-identical
    # (the settings the engine loads with for this config)
    base, reused = cache.load(load_base_model, sd1_dir, vae_path=None, family=None, v_parameterization=None,
                              dtype=torch.float32, vae_dtype=torch.float32, device=torch.device("cpu"))
    assert reused and cache.loads == 1
    after = _state(base)
    assert after.keys() == pristine.keys() and all(torch.equal(after[k], pristine[k]) for k in pristine)
    assert not any("lora" in n for n, _ in base.unet.named_modules())
    # another dtype releases the cached model and loads again; so does a changed file
    cache.load(load_base_model, sd1_dir, vae_path=None, dtype=torch.bfloat16)
    assert cache.loads == 2
    weights = next(sd1_dir.joinpath("unet").glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    cache.load(load_base_model, sd1_dir, vae_path=None, dtype=torch.bfloat16)
    assert cache.loads == 3
    # "Free model memory" empties it
    assert cache.clear() and cache.holds is None and not cache.clear()


def test_cpu_thread_count_is_chosen_and_explained(sd1_dir, tmp_path, monkeypatch):
    assert choose_threads(3, {"OMP_NUM_THREADS": "7"}) == (3, "set by cpu_threads")
    assert choose_threads(0, {"OMP_NUM_THREADS": "7"}) == (7, "from OMP_NUM_THREADS")
    monkeypatch.setattr("patina.core.train.threads._physical_cores", lambda: 8)
    assert choose_threads(0, {})[0] == 7  # one left free
    monkeypatch.setattr("patina.core.train.threads._physical_cores", lambda: 64)
    assert choose_threads(0, {})[0] == 16
    monkeypatch.setattr("patina.core.train.threads._physical_cores", lambda: 1)
    assert choose_threads(0, {})[0] == 1
    # the plan says CPU training is for trying things out, with the count
    cfg = tiny_cfg(sd1_dir, tmp_path, tmp_path / "out", cpu_threads=2)
    text = " ".join(p.message for p in check_device(cfg, DeviceInfo(cuda=False)))
    assert "for trying things out" in text and "2 CPU thread(s)" in text


def test_exit_after_train_flushes_then_exits_at_once(monkeypatch, capsys):
    from patina.core import cli

    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code) or (_ for _ in ()).throw(SystemExit(code)))
    print("last line", end="")
    with pytest.raises(SystemExit):
        cli.exit_after(0, ["train", "cfg.json", "--quiet"])
    assert exits == [0] and capsys.readouterr().out == "last line"
    with pytest.raises(SystemExit) as ordinary:
        cli.exit_after(3, ["config", "show"])
    assert exits == [0] and ordinary.value.code == 3


def test_patina_train_process_ends_with_every_file_complete(sd1_dir, tmp_path):
    data = make_dataset(tmp_path, n=2, repeats=1)
    out = tmp_path / "out"
    preset = save_config(tmp_path / "p.json", tiny_cfg(sd1_dir, data, out, epoch=2, train_batch_size=2,
                                                       logging_dir=str(tmp_path / "logs"), save_every_n_epochs=1))
    proc = subprocess.run([sys.executable, "-m", "patina.core", "train", str(preset), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith(f"Your LoRA is {out / 'tiny.safetensors'}.")
    from patina.core.lora.verify import verify_lora

    for name in ("tiny.safetensors", "tiny-000001.safetensors"):
        assert verify_lora(out / name).ok, name
    lines = next((tmp_path / "logs").glob("tiny_*/metrics.jsonl")).read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if "step" in x and "quality" not in x] == [1, 2]


def test_free_model_memory_in_the_window_empties_the_kept_model(qtbot, sd1_dir):
    from patina.core.models.cache import window_cache
    from patina.gui.main_window import MainWindow

    cache = window_cache()
    cache.load(load_base_model, sd1_dir, vae_path=None, dtype=torch.float32)
    assert cache.holds == sd1_dir.name
    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)
    run_menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&Run")
    assert w.act_free_model in run_menu.actions()
    w.act_free_model.trigger()
    assert cache.holds is None
    assert w.statusBar().currentMessage() == f"Freed the memory held by {sd1_dir.name}."
    w.act_free_model.trigger()
    assert w.statusBar().currentMessage() == "No base model was kept in memory."
