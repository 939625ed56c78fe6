"""The battery of user mistakes: each bad input gets one clear message, a non-zero exit and loses nothing.

Everything that can be checked before the first training step is checked then (patina.core.train.preflight): settings,
sample prompts, folders, free space, file names, the device, resume states. Pickles that would run code are
refused without torch's advice to load them unsafely.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from patina.core.train import preflight
from patina.core.cli import main as cli
from patina.core.config.files import read_config, save_config
from patina.core.errors import PatinaError
from patina.core.config.schema import defaults
from patina.core.train.preflight import DeviceInfo, check_device, machine_defaults
from trainkit import make_dataset, tiny_cfg

NO_GPU = DeviceInfo(cuda=False)


@pytest.fixture(scope="module")
def sd1_dir(tmp_path_factory):
    from patina.core.models.tiny import save_tiny_diffusers

    return save_tiny_diffusers(tmp_path_factory.mktemp("m") / "tiny-sd1", "sd1")


@pytest.fixture
def setup(sd1_dir, tmp_path):
    """(config file, output folder) of a valid tiny run on this machine."""
    data = make_dataset(tmp_path)
    out = tmp_path / "out"
    cfg = save_config(tmp_path / "run.json", tiny_cfg(sd1_dir, data, out, epoch=1, max_train_steps=2))
    return cfg, out


def one_clear_line(err: str) -> None:
    """A message for a person: present, no traceback, no exception class names."""
    assert err.strip(), "no message"
    assert "Traceback" not in err and "Error:" not in err.replace("patina:", "")


def nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.glob("*.safetensors"))


# --- 8.1 invalid settings never train ----------------------------------------------------------------------------

def test_train_refuses_a_config_with_errors_and_lists_every_one(setup, capsys):
    cfg, out = setup
    data = json.loads(cfg.read_text())
    data.update(epoch="ten", train_batch_size="two", network_dim=0)
    cfg.write_text(json.dumps(data))
    rc = cli(["train", str(cfg), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "3 invalid setting(s)" in err
    for key in ("epoch", "train_batch_size", "network_dim"):
        assert key in err
    one_clear_line(err)
    nothing_written(out)
    # config validate agrees
    assert cli(["config", "validate", str(cfg)]) == 2
    # a --set that replaces the bad value is enough for that key
    rc = cli(["train", str(cfg), "--set", "epoch=1", "--set", "train_batch_size=1", "--set", "network_dim=4",
              "--dry-run"])
    assert rc == 0, capsys.readouterr().err


def test_train_refuses_a_kohya_config_with_invalid_settings(setup, capsys):
    cfg, out = setup
    base = json.loads(cfg.read_text())
    kohya = {"LoRA_type": "Standard", "save_model_as": "safetensors", "epoch": "ten", "network_dim": "x",
             "train_batch_size": "", "learning_rate": "fast",
             **{k: base[k] for k in ("pretrained_model_name_or_path", "train_data_dir", "output_dir")}}
    path = cfg.with_name("kohya.json")
    path.write_text(json.dumps(kohya))
    rc = cli(["train", str(path), "--quiet"])
    cap = capsys.readouterr()
    assert rc == 2 and "epoch" in cap.err and "network_dim" in cap.err and "learning_rate" in cap.err
    one_clear_line(cap.err)
    nothing_written(out)
    # import-kohya may still write the file with defaults, but says so and exits non-zero
    dest = cfg.with_name("imported.json")
    assert cli(["config", "import-kohya", str(path), str(dest)]) == 1
    assert "took Patina's defaults" in capsys.readouterr().out and dest.is_file()


# --- 8.2 everything checkable before the first step -----------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["a cat --w abc", "a cat --w 7", "a cat --l abc"])
def test_bad_sample_prompts_are_refused_before_training(setup, capsys, prompt):
    cfg, out = setup
    rc = cli(["train", str(cfg), "--quiet", "--set", "sample_every_n_epochs=1", "--set", f"sample_prompts={prompt}"])
    cap = capsys.readouterr()
    assert rc != 0
    assert "sample_prompts" in cap.err and "line 1" in cap.err
    assert "Loading" not in cap.out  # refused before the model loads
    one_clear_line(cap.err)
    nothing_written(out)
    data = json.loads(cfg.read_text())
    data["sample_prompts"] = prompt
    cfg.write_text(json.dumps(data))
    assert cli(["config", "validate", str(cfg)]) == 2
    assert "sample_prompts" in capsys.readouterr().out


@pytest.mark.parametrize("which", ["output_dir", "logging_dir", "state"])
def test_a_file_where_a_folder_must_go_is_refused_before_training(setup, capsys, tmp_path, which):
    cfg, out = setup
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    sets = {"output_dir": ["--set", f"output_dir={blocker}"],
            "logging_dir": ["--set", f"logging_dir={blocker}"],
            "state": ["--set", "save_state_on_train_end=true"]}[which]
    if which == "state":
        out.mkdir()
        (out / "tiny-state").write_text("in the way")
    rc = cli(["train", str(cfg), "--quiet", *sets])
    cap = capsys.readouterr()
    assert rc != 0 and "is a file" in cap.err and "Loading" not in cap.out
    one_clear_line(cap.err)
    nothing_written(out)


def test_read_only_output_folder_is_refused_before_training(setup, capsys, monkeypatch):
    cfg, out = setup
    out.mkdir()

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(preflight.tempfile, "TemporaryFile", denied)
    rc = cli(["train", str(cfg), "--quiet"])
    cap = capsys.readouterr()
    assert rc != 0 and "not writable" in cap.err and str(out) in cap.err and "Loading" not in cap.out
    one_clear_line(cap.err)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_mode_555_output_folder_is_refused(setup, capsys):
    cfg, out = setup
    out.mkdir()
    out.chmod(0o555)
    try:
        assert cli(["train", str(cfg), "--quiet"]) != 0
        assert "not writable" in capsys.readouterr().err
    finally:
        out.chmod(0o755)


def test_not_enough_free_space_is_refused_before_training(setup, capsys, monkeypatch):
    cfg, out = setup

    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: Usage)
    rc = cli(["train", str(cfg), "--quiet"])
    cap = capsys.readouterr()
    assert rc != 0 and "not enough free space" in cap.err and "Loading" not in cap.out
    nothing_written(out)


def test_free_space_estimate_grows_with_rank_modules_and_saves():
    cfg = defaults()
    small = preflight.estimate_sizes(dict(cfg, network_dim=8), "sd1")[0]
    big = preflight.estimate_sizes(dict(cfg, network_dim=64), "sd1")[0]
    locon = preflight.estimate_sizes(dict(cfg, network_dim=8, LoRA_type="Kohya LoCon", conv_dim=8), "sd1")[0]
    xl = preflight.estimate_sizes(dict(cfg, network_dim=8), "sdxl")[0]
    assert small < locon and small < big and small < xl
    assert 5e6 < preflight.estimate_sizes(dict(cfg, network_dim=16), "sd1")[0] < 40e6  # ≈ 18 MB real
    assert preflight.planned_file_counts(dict(cfg, save_every_n_epochs=1), 10, 100)[0] == 10
    assert preflight.planned_file_counts(dict(cfg, save_every_n_epochs=1, save_last_n_epochs=2), 10, 100)[0] == 4


@pytest.mark.parametrize("length", [240, 300])  # 300: even the final file name is over the limit
def test_too_long_output_name_is_refused_with_the_limit(setup, capsys, length):
    cfg, out = setup
    out.mkdir()
    rc = cli(["train", str(cfg), "--quiet", "--set", "output_name=" + "n" * length])
    cap = capsys.readouterr()
    assert rc != 0 and "too long" in cap.err and "output_name" in cap.err and "Loading" not in cap.out
    one_clear_line(cap.err)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("args,needle", [(["--batch-size", "0"], "--batch-size"), (["--resolution", "7"], "--resolution"),
                                         (["--steps", "0"], "--steps"), (["--rank", "0"], "--rank")])
def test_bench_arguments_are_checked(capsys, args, needle):
    assert cli(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    one_clear_line(err)


def test_dry_run_prints_the_plan_and_every_problem(setup, capsys, tmp_path):
    cfg, out = setup
    blocker = tmp_path / "f"
    blocker.write_text("x")
    rc = cli(["train", str(cfg), "--dry-run", "--set", f"logging_dir={blocker}", "--set",
              "sample_prompts=a --w abc\nb --l x"])
    cap = capsys.readouterr()
    assert rc == 2 and "Training plan" in cap.out
    assert "line 1" in cap.out and "line 2" in cap.out and "logging_dir" in cap.out
    nothing_written(out)


# --- 8.4 resume honours --set ----------------------------------------------------------------------------------

def test_resume_honours_length_changes_and_refuses_locked_settings(setup, capsys):
    cfg, out = setup
    assert cli(["train", str(cfg), "--quiet", "--set", "save_state_on_train_end=true"]) == 0
    state = out / "tiny-state"
    assert state.is_dir()
    capsys.readouterr()
    # the README's example: a longer run from the saved state
    rc = cli(["train", str(cfg), "--quiet", "--overwrite", "--resume", str(state), "--set", "max_train_steps=4"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "Total steps: 4" in cap.out and "Resumed from" in cap.out and "Done: 4 steps" in cap.out
    # the same weights as 4 steps in one go (the resumed run continues the epoch where the first one stopped)
    assert cli(["train", str(cfg), "--quiet", "--set", "max_train_steps=4", "--set", "output_name=straight"]) == 0
    from safetensors.torch import load_file

    import torch

    resumed, straight = load_file(str(out / "tiny.safetensors")), load_file(str(out / "straight.safetensors"))
    assert resumed.keys() == straight.keys()
    assert all(torch.allclose(resumed[k], straight[k], atol=1e-6) for k in resumed)
    capsys.readouterr()
    # settings that shape the network or optimizer cannot change: refused, naming them, nothing touched
    before = (out / "tiny.safetensors").read_bytes()
    rc = cli(["train", str(cfg), "--quiet", "--resume", str(state), "--set", "network_dim=8",
              "--set", "network_alpha=2", "--set", "max_train_steps=6"])
    cap = capsys.readouterr()
    assert rc != 0 and "network_dim" in cap.err and "network_alpha" in cap.err and "resum" in cap.err
    assert "Loading" not in cap.out
    assert (out / "tiny.safetensors").read_bytes() == before
    # the plan (window and --dry-run) shows the same before anything starts
    from patina.core.train import engine

    values = dict(read_config(cfg).values, resume=str(state), network_dim=8, max_train_steps=6)
    assert {p.key for p in engine.plan(values).problems if p.severity == "error"} == {"network_dim"}


def test_resume_settings_rule():
    saved = defaults()
    wanted = dict(saved, epoch=20, max_train_steps=50, network_dim=32, LoRA_type="Kohya LoCon",
                  pretrained_model_name_or_path="/elsewhere/model.safetensors")
    saved["pretrained_model_name_or_path"] = "/models/model.safetensors"
    keys = {p.key for p in preflight.check_resume_settings(saved, wanted)}
    assert keys == {"network_dim", "LoRA_type"}  # the length may change; a moved model file is the same model
    wanted["pretrained_model_name_or_path"] = "/models/other.safetensors"
    assert "pretrained_model_name_or_path" in {p.key for p in preflight.check_resume_settings(saved, wanted)}


# --- 8.5 file-system mistakes: one line each ----------------------------------------------------------------------

def test_import_kohya_to_a_folder(tmp_path, capsys):
    src = tmp_path / "k.json"
    src.write_text(json.dumps({"LoRA_type": "Standard", "save_model_as": "safetensors"}))
    (tmp_path / "dest").mkdir()
    assert cli(["config", "import-kohya", str(src), str(tmp_path / "dest")]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and str(tmp_path / "dest") in err
    one_clear_line(err)


def test_config_new_where_the_folder_cannot_be(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli(["config", "new", str(tmp_path / "file" / "sub" / "c.json")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "c.json" in err
    one_clear_line(err)
    # a missing folder is created
    assert cli(["config", "new", str(tmp_path / "new" / "c.json")]) == 0


def test_config_new_into_a_read_only_folder(tmp_path, capsys, monkeypatch):
    import patina.core.atomic

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(patina.core.atomic.tempfile, "mkstemp", denied)
    assert cli(["config", "new", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert "permission denied" in err and "c.json" in err
    one_clear_line(err)


def test_dataset_prepare_into_a_read_only_destination(tmp_path, capsys, monkeypatch):
    import imagefactory

    imagefactory.save(tmp_path / "pics" / "a.png")
    dest = tmp_path / "train"
    dest.mkdir()
    monkeypatch.setattr(preflight.tempfile, "TemporaryFile",
                        lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    rc = cli(["dataset", "prepare", "--instance", "sks", "--class", "dog", "--images", str(tmp_path / "pics"),
              "--repeats", "10", "--dest", str(dest)])
    err = capsys.readouterr().err
    assert rc == 2 and "not writable" in err and "Nothing was copied" in err
    assert list(dest.iterdir()) == []
    one_clear_line(err)


def test_validate_an_unreadable_config(tmp_path, capsys, monkeypatch):
    path = save_config(tmp_path / "c.json", defaults())
    real = Path.read_text

    def read_text(self, *a, **k):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert cli(["config", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Cannot read" in err and "permission denied" in err and "c.json" in err
    one_clear_line(err)


def test_os_error_text_names_path_and_what_to_do():
    import errno

    for code, needle in [(errno.EISDIR, "is a folder"), (errno.EACCES, "permission denied"),
                         (errno.ENAMETOOLONG, "too long"), (errno.ENOSPC, "disk is full"),
                         (errno.ENOENT, "does not exist")]:
        text = preflight.os_error_text(OSError(code, os.strerror(code), "/x/y.json"))
        assert needle in text and "/x/y.json" in text and "\n" not in text


def _state_folder(root: Path, cfg: dict) -> Path:
    import torch
    from safetensors.torch import save_file

    d = root / "tiny-state"
    d.mkdir(parents=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, str(d / "lora.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        torch.save({"state": {}, "param_groups": []}, d / name)
    (d / "train_state.json").write_text(json.dumps({"patina_state": 1, "step": 1, "epoch": 0, "seed": 1,
                                                    "config": cfg}))
    return d


@pytest.mark.parametrize("damage", ["json", "truncated", "missing", "json-shape"])
def test_damaged_resume_state_is_one_line_before_loading(setup, capsys, damage):
    cfg, out = setup
    d = _state_folder(out.parent / "states", read_config(cfg).values)
    if damage == "json":
        (d / "train_state.json").write_text("{not json")
    elif damage == "json-shape":
        (d / "train_state.json").write_text("[1, 2]")
    elif damage == "truncated":
        data = (d / "optimizer.pt").read_bytes()
        (d / "optimizer.pt").write_bytes(data[: len(data) // 2])
    else:
        (d / "rng.pt").unlink()
    rc = cli(["train", str(cfg), "--quiet", "--resume", str(d)])
    cap = capsys.readouterr()
    assert rc != 0 and str(d) in cap.err and "Loading" not in cap.out
    assert ("damaged" in cap.err) or ("missing" in cap.err)
    assert "JSONDecodeError" not in cap.err and "RuntimeError" not in cap.err
    one_clear_line(cap.err)


# --- 8.6 pickles that would run code ---------------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


TORCH_ADVICE = ("Re-running", "weights_only", "Weights only load failed", "will likely succeed")


def test_malicious_resume_state_is_refused_without_torchs_advice(setup, capsys, tmp_path):
    import torch

    cfg, out = setup
    marker = tmp_path / "PWNED"
    d = _state_folder(out.parent / "states", read_config(cfg).values)
    torch.save({"state": {}, "param_groups": [], "x": _Payload(marker)}, d / "optimizer.pt")
    rc = cli(["train", str(cfg), "--quiet", "--resume", str(d)])
    err = capsys.readouterr().err
    assert rc != 0 and "Refused" in err and "optimizer.pt" in err and "system" in err
    assert "any program" in err  # why it is dangerous
    assert not any(t in err for t in TORCH_ADVICE)
    assert not marker.exists()
    # the loader used during resume says the same for a file changed after the check
    from patina.core.models.checkpoint_files import load_state_pickle

    with pytest.raises(PatinaError) as info:
        load_state_pickle(d / "optimizer.pt", "the state")
    assert not any(t in str(info.value) for t in TORCH_ADVICE) and not marker.exists()


@pytest.mark.parametrize("zip_format", [True, False])
def test_diffusers_folder_with_a_malicious_bin_is_refused_not_called_damaged(tmp_path, zip_format):
    import torch
    from safetensors.torch import load_file

    from patina.core.models.loading import load_base_model
    from patina.core.models.tiny import save_tiny_diffusers

    marker = tmp_path / "PWNED"
    folder = save_tiny_diffusers(tmp_path / "model", "sd1")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    weights.unlink()
    torch.save({**sd, "x": _Payload(marker)}, folder / "unet" / "diffusion_pytorch_model.bin",
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(PatinaError) as info:
        load_base_model(folder)
    msg = str(info.value)
    assert "Refusing" in msg and "diffusion_pytorch_model" in msg or "unet" in msg
    assert "incomplete or damaged" not in msg
    assert not any(t in msg for t in TORCH_ADVICE)
    assert ".safetensors" in msg and "trust" in msg  # how to go on safely
    assert not marker.exists()


# --- 8.10 the smaller ones ---------------------------------------------------------------------------------------------

def test_validate_says_an_empty_model_path_is_required_to_train(tmp_path, capsys):
    path = save_config(tmp_path / "c.json", defaults())
    assert cli(["config", "validate", str(path)]) == 0  # a half-done config is still a valid file
    out = capsys.readouterr().out
    assert "pretrained_model_name_or_path" in out and "required to train" in out


def test_a_config_path_that_is_a_folder(tmp_path, capsys):
    assert cli(["config", "validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "not found" not in err


def test_unknown_config_keys_get_did_you_mean(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"schema_version": 1, "network_dimm": 8, "learnig_rate": 1e-4, "zzz": 1}))
    cli(["config", "validate", str(path)])
    out = capsys.readouterr().out
    assert "network_dimm (did you mean network_dim" in out
    assert "learnig_rate (did you mean learning_rate" in out and "zzz" in out


def test_empty_image_folder_says_what_to_do(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli(["dataset", "check", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "is empty" in err and "10_" in err and "dataset prepare" in err


def test_already_exists_mentions_overwrite(setup, capsys):
    cfg, out = setup
    out.mkdir()
    (out / "tiny.safetensors").write_bytes(b"a finished LoRA")
    assert cli(["train", str(cfg), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert (out / "tiny.safetensors").read_bytes() == b"a finished LoRA"


def test_patina_config_without_schema_version_keeps_model_family(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"LoRA_type": "Kohya LoCon", "model_family": "sdxl", "network_dim": 16}))
    result = read_config(path)
    assert not result.kohya
    assert result.values["model_family"] == "sdxl" and result.values["LoRA_type"] == "Kohya LoCon"
    # a real kohya file (no Patina-only key) is still imported
    path.write_text(json.dumps({"LoRA_type": "Standard", "sdxl": True, "save_model_as": "safetensors"}))
    result = read_config(path)
    assert result.kohya and result.values["model_family"] == "sdxl"


# --- issue 7.5: device-dependent settings ------------------------------------------------------------------------------

def test_device_checks_offer_the_working_alternative():
    cfg = defaults()  # AdamW8bit, fp16
    problems = {p.key: p for p in check_device(cfg, NO_GPU)}
    assert problems["optimizer"].severity == "error" and problems["optimizer"].fix == {"optimizer": "AdamW"}
    assert problems["mixed_precision"].fix == {"mixed_precision": "no"}
    assert "CPU" in problems["device"].message and problems["device"].severity == "warning"
    old_card = DeviceInfo(cuda=True, name="GeForce GTX 1080", bf16=False, bitsandbytes=True, xformers=False)
    problems = {p.key: p for p in check_device(dict(cfg, mixed_precision="bf16", xformers="xformers"), old_card)}
    assert set(problems) == {"mixed_precision", "xformers"}
    assert problems["mixed_precision"].fix == {"mixed_precision": "fp16"} and "GTX 1080" in problems["mixed_precision"].message
    assert problems["xformers"].fix == {"xformers": "sdpa"}
    no_bnb = DeviceInfo(cuda=True, name="RTX 4090", bf16=True, bitsandbytes=False, xformers=True)
    assert [p.fix for p in check_device(dict(cfg, optimizer="PagedAdamW8bit"), no_bnb)] == [{"optimizer": "AdamW"}]
    full = DeviceInfo(cuda=True, name="RTX 4090", bf16=True, bitsandbytes=True, xformers=True)
    assert check_device(dict(cfg, mixed_precision="bf16", xformers="xformers"), full) == []


def test_train_refuses_an_8bit_optimizer_without_cuda_before_loading(setup, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "probe_device", lambda: NO_GPU)
    cfg, out = setup
    rc = cli(["train", str(cfg), "--quiet", "--set", "optimizer=AdamW8bit", "--set", "mixed_precision=fp16"])
    cap = capsys.readouterr()
    assert rc != 0 and "--set optimizer=AdamW" in cap.err and "Loading" not in cap.out
    nothing_written(out)
    # the fixes it names make the run go; the CPU warning is on the plan itself
    rc = cli(["train", str(cfg), "--dry-run", "--set", "optimizer=AdamW", "--set", "mixed_precision=fp16"])
    cap = capsys.readouterr()
    assert rc == 0 and "training runs on the CPU" in cap.out and "--set mixed_precision=no" in cap.out


def test_plan_carries_device_problems_before_any_model_loads(setup, monkeypatch):
    from patina.core.train import engine

    monkeypatch.setattr(preflight, "probe_device", lambda: NO_GPU)
    cfg, _ = setup
    values = dict(read_config(cfg).values, optimizer="AdamW8bit")
    plan = engine.plan(values)
    keys = {(p.key, p.severity) for p in plan.problems}
    assert ("optimizer", "error") in keys and ("device", "warning") in keys
    assert "on the CPU" in plan.text


@pytest.mark.parametrize("device,expected", [
    (NO_GPU, {"optimizer": "AdamW", "mixed_precision": "no"}),
    (DeviceInfo(cuda=True, name="RTX", bf16=True, bitsandbytes=True), {"optimizer": "AdamW8bit", "mixed_precision": "fp16"}),
])
def test_config_new_is_a_config_this_machine_runs(tmp_path, capsys, monkeypatch, device, expected):
    monkeypatch.setattr(preflight, "probe_device", lambda: device)
    path = tmp_path / "c.json"
    assert cli(["config", "new", str(path)]) == 0
    out = capsys.readouterr().out
    values = read_config(path).values
    assert {k: values[k] for k in expected} == expected
    assert ("No CUDA GPU" in out) == (not device.cuda)
    assert check_device(values, device) == [] or all(p.severity == "warning" for p in check_device(values, device))
    # an explicit --set wins over the machine's default
    assert cli(["config", "new", str(path), "--set", "optimizer=Adafactor"]) == 0
    assert read_config(path).values["optimizer"] == "Adafactor"


def test_machine_defaults_make_the_schema_defaults_runnable():
    changes, note = machine_defaults(NO_GPU)
    cfg = dict(defaults(), **changes)
    assert not [p for p in check_device(cfg, NO_GPU) if p.severity == "error"]
    assert "AdamW" in note and machine_defaults(DeviceInfo(cuda=True, bitsandbytes=True, bf16=True)) == ({}, "")


# --- the window: the plan dialog shows each problem with its one-click fix -------------------------------------------

def test_plan_dialog_fix_applies_the_setting_and_plans_again(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QDialog

    from trainkit import window_with_plan

    from patina.core.train.events import Plan
    from patina.core.config.schema import Problem

    seen = []

    def plan_fn(cfg):
        seen.append(dict(cfg))
        problems = [Problem("device", preflight.CPU_WARNING, None, "warning")]
        if cfg["optimizer"] == "AdamW8bit":
            problems.append(Problem("optimizer", "AdamW8bit needs an NVIDIA GPU; use AdamW instead", "AdamW8bit",
                                    fix={"optimizer": "AdamW"}))
        return Plan(images=1, reg_images=0, samples_per_epoch=1, steps_per_epoch=1, epochs=1, total_steps=1,
                    batch_size=1, grad_accum=1, buckets={}, skipped=[], output_path=str(tmp_path / "o.safetensors"),
                    family="sd1", text="Training plan", problems=problems)

    def answer(dialog):
        if dialog.fix_buttons:
            assert not dialog.start_button.isEnabled()  # an error blocks Start until it is fixed
            dialog.fix_buttons[0].click()
            return dialog.result()
        assert dialog.start_button.isEnabled()
        return QDialog.DialogCode.Rejected

    w, dialogs = window_with_plan(qtbot, monkeypatch, tmp_path, plan_fn, answer, optimizer="AdamW8bit")
    qtbot.waitUntil(lambda: len(dialogs) == 2, timeout=10000)
    assert dialogs[0].fix_buttons[0].text() == "Use AdamW"
    assert w.form.values()["optimizer"] == "AdamW" and w.is_dirty()
    assert seen[-1]["optimizer"] == "AdamW"
    # the CPU warning is on the plan itself
    assert not dialogs[1].blocking and any("CPU" in p.message for p in dialogs[1].plan.problems)
    qtbot.waitUntil(lambda: w.monitor.state == "idle", timeout=5000)
    w._mark_clean()  # closing must not ask to save


def test_new_config_in_the_window_uses_the_machine_defaults(qtbot, monkeypatch):
    from patina.gui.main_window import MainWindow

    import torch  # noqa: F401 - loaded: the window probes in-process (the patched probe below)

    monkeypatch.setattr(preflight, "probe_device", lambda: NO_GPU)
    w = MainWindow(restore_session=False, detect_family=False, probe_device=True)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.machine_defaults is not None, timeout=20000)
    assert w.form.values()["optimizer"] == "AdamW" and w.form.values()["mixed_precision"] == "no"
    assert not w.is_dirty() and "No CUDA GPU" in w.statusBar().currentMessage()
    w.form.set_values({"optimizer": "Adafactor"})
    w.new_config()
    assert w.form.values()["optimizer"] == "AdamW"


def test_gui_modules_do_not_import_torch():
    import subprocess

    code = ("import sys; import patina.gui.main_window, patina.gui.monitor_tab, patina.core.train.preflight; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parent.parent).returncode == 0


def test_the_window_probes_the_device_in_another_process_until_torch_is_loaded(monkeypatch):
    """Importing torch in the window's process would stall it; before torch is loaded the probe runs apart."""
    from patina.gui.main_window import _machine_defaults

    expected = machine_defaults(preflight.probe_device())
    monkeypatch.delitem(sys.modules, "torch")
    assert _machine_defaults() == expected
    assert "torch" not in sys.modules
