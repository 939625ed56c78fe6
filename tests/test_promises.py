"""What Patina promises when things go wrong: each fault, and what it must leave behind.

README.md ("What Patina promises") quotes these tests; a promise there is only as true as a test here.
Faults: Stop / Ctrl+C / "save now", a crash or kill -9 in the middle of a save, a full disk, a folder made
read-only or taken away during a run, a resumed run resumed again, a broken LoRA file, surprising data.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from patina.core.train import events as E
from patina.core.atomic import atomic_temp_path, atomic_write_text, clean_leftovers, pid_alive
from patina.core.config.files import save_config
from patina.core.train.engine import plan, train
from patina.core.train.events import Commands
from patina.core.lora.kohya_format import save_lora
from patina.core.lora.verify import verify_lora
from patina.core.models.tiny import save_tiny_diffusers
from trainkit import Collector, make_dataset, tiny_cfg

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sd1_dir(tmp_path_factory):
    return save_tiny_diffusers(tmp_path_factory.mktemp("models") / "tiny-sd1", "sd1")


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path, n=4)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def _no_traceback(events) -> None:
    assert not any("Traceback" in e.text for e in events if isinstance(e, E.Log))


# --- Stop, Ctrl+C and "save now" never replace a finished LoRA ---------------------------------------------

def test_stop_and_save_now_never_replace_a_finished_lora_and_resume_twice_does_not_replay(
        sd1_dir, data, tmp_path, umask022):
    out = tmp_path / "out"
    cfg = tiny_cfg(sd1_dir, data, out, max_train_steps=3)
    first = train(cfg)
    assert first.status == "finished", first.message
    final = out / "tiny.safetensors"
    finished_bytes = final.read_bytes()
    assert stat.S_IMODE(final.stat().st_mode) == 0o644  # honours the umask: other users can read it

    commands = Commands()

    def on_event(ev):
        if isinstance(ev, E.Metrics) and ev.step == 1:
            commands.request_save()
        if isinstance(ev, E.Metrics) and ev.step == 2:
            commands.request_stop()

    ev = Collector(on_event)
    fin = train(dict(cfg, max_train_steps=6), ev, commands)
    assert fin.status == "stopped" and fin.step == 2
    assert final.read_bytes() == finished_bytes  # the finished LoRA is untouched
    stopped = out / "tiny-step00000002.safetensors"
    assert fin.output == str(stopped) and str(stopped) in fin.message and verify_lora(stopped).ok
    saved_now = out / "tiny-step00000001.safetensors"
    assert verify_lora(saved_now).ok and (out / "tiny-step00000001-state").is_dir()
    assert {e.path for e in ev.of(E.Saved)} >= {str(saved_now), str(stopped), str(out / "tiny-state")}
    assert ev.of(E.Finished)[0] == fin
    state = out / "tiny-state"
    assert json.loads((state / "train_state.json").read_text())["step"] == 2

    # resuming finishes the run, writes <name>.safetensors and replaces the state it came from...
    resumed = Collector()
    fin = train(dict(cfg, max_train_steps=6), resumed, resume=str(state))
    assert fin.status == "finished", fin.message
    assert [m.step for m in resumed.of(E.Metrics)] == [3, 4, 5, 6]
    assert json.loads((state / "train_state.json").read_text())["step"] == 6
    # ...so resuming again does not train steps 3-6 a second time
    again = Collector()
    fin = train(dict(cfg, max_train_steps=6), again, resume=str(state))
    assert fin.status == "finished" and again.of(E.Metrics) == []

    # a resume state whose optimizer.pt carries a pickle payload: refused, the payload never runs
    import shutil
    evil = tmp_path / "evil-state"
    shutil.copytree(state, evil)
    marker = tmp_path / "PWNED"
    torch.save({"state": {}, "param_groups": [], "x": _Payload(marker)}, evil / "optimizer.pt")
    fin = train(dict(cfg, max_train_steps=6), resume=str(evil))
    assert fin.status == "failed" and not marker.exists()
    assert fin.output is None or Path(fin.output).name != "tiny.safetensors"


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_ctrl_c_in_the_cli_saves_under_a_step_name_and_keeps_the_finished_file(sd1_dir, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    finished = out / "tiny.safetensors"
    finished.write_bytes(b"a finished LoRA from an earlier run")
    preset = save_config(tmp_path / "p.json", tiny_cfg(sd1_dir, data, out, epoch=200))
    # keep the caller's PYTHONPATH: it decides which copy of patina the child process runs
    pythonpath = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "patina.core", "train", str(preset), "--overwrite", "--quiet"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Seed "):  # the models are loaded; training starts now
                time.sleep(2)
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + rest
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "Stopped at step" in text
    assert finished.read_bytes() == b"a finished LoRA from an earlier run"
    saved = sorted(out.glob("tiny-step*.safetensors"))
    assert len(saved) == 1 and str(saved[0]) in text and verify_lora(saved[0]).ok
    assert (out / "tiny-state" / "train_state.json").is_file() and str(out / "tiny-state") in text


# --- a save that fails: full disk, no permission, a folder taken away ------------------------------------

def _fail_writes_in(monkeypatch, folder: Path, error: OSError, where: str = "commit") -> None:
    """Make every atomic write into *folder* fail like a full disk (after the data was written) or a
    folder without write permission (when the file is created)."""
    import patina.core.atomic as atomic
    import patina.core.lora.kohya_format as lora_io

    if where == "commit":
        real = lora_io.commit_temp

        def commit(tmp, path):
            if Path(path).parent == folder:
                raise error
            return real(tmp, path)

        monkeypatch.setattr(lora_io, "commit_temp", commit)
    else:
        real_mk = atomic._mkstemp

        def mkstemp(target):
            if Path(target).parent == folder:
                raise error
            return real_mk(target)

        monkeypatch.setattr(atomic, "_mkstemp", mkstemp)


@pytest.mark.parametrize("fault", ["disk full", "permission denied"])
def test_a_failed_final_save_keeps_the_lora_in_the_user_data_folder(sd1_dir, data, tmp_path, monkeypatch, fault):
    out = tmp_path / "out"
    if fault == "disk full":
        _fail_writes_in(monkeypatch, out, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    else:
        _fail_writes_in(monkeypatch, out, PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "create")
    ev = Collector()
    fin = train(tiny_cfg(sd1_dir, data, out, max_train_steps=2), ev)
    assert fin.status == "failed"
    rescued = Path(fin.output)
    assert rescued.is_relative_to(Path(os.environ["PATINA_DATA_DIR"])) and verify_lora(rescued).ok
    assert str(rescued) in fin.message and str(out / "tiny.safetensors") in fin.message
    assert ("disk is full" if fault == "disk full" else "no permission") in fin.message
    assert not (out / "tiny.safetensors").exists()
    assert not [p for p in out.glob("*") if p.name.endswith(".tmp")]  # no half-written file left
    assert ev.of(E.Finished) == [fin] and str(rescued) in {e.path for e in ev.of(E.Saved)}
    _no_traceback(ev.events)


def test_a_failed_save_during_the_run_ends_it_with_a_message_and_keeps_the_weights(sd1_dir, data, tmp_path,
                                                                                     monkeypatch):
    out = tmp_path / "out"
    _fail_writes_in(monkeypatch, out, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    ev = Collector()
    fin = train(tiny_cfg(sd1_dir, data, out, max_train_steps=4, save_every_n_steps=2), ev)
    assert fin.status == "failed" and fin.step == 2
    assert f"Could not save {out / 'tiny-step00000002.safetensors'}: the disk is full" in fin.message
    assert verify_lora(fin.output).ok and Path(fin.output).is_relative_to(Path(os.environ["PATINA_DATA_DIR"]))
    _no_traceback(ev.events)


def test_a_sample_that_cannot_be_written_ends_the_run_with_a_message(sd1_dir, data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _fail_writes_in(monkeypatch, out / "sample", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "create")
    ev = Collector()
    fin = train(tiny_cfg(sd1_dir, data, out, max_train_steps=3, sample_every_n_steps=1,
                         sample_prompts="sks toy --w 64 --h 64 --s 1"), ev)
    assert fin.status == "failed" and fin.step == 1
    assert f"Could not save {out / 'sample'}" in fin.message and "the disk is full" in fin.message
    assert fin.output == str(out / "tiny-step00000001.safetensors") and verify_lora(fin.output).ok
    _no_traceback(ev.events)


def test_output_folder_taken_away_during_the_run(sd1_dir, data, tmp_path):
    out = tmp_path / "out"

    def remove(ev):  # the folder is deleted: it is made again at the save
        if isinstance(ev, E.Metrics) and ev.step == 1:
            import shutil
            shutil.rmtree(out, ignore_errors=True)

    fin = train(tiny_cfg(sd1_dir, data, out, max_train_steps=2), Collector(remove))
    assert fin.status == "finished" and verify_lora(out / "tiny.safetensors").ok

    blocked = tmp_path / "blocked"

    def replace_by_a_file(ev):  # the folder becomes a file: the LoRA goes to the user data folder
        if isinstance(ev, E.Metrics) and ev.step == 1:
            import shutil
            shutil.rmtree(blocked, ignore_errors=True)
            blocked.write_text("not a folder")

    ev = Collector(replace_by_a_file)
    fin = train(tiny_cfg(sd1_dir, data, blocked, max_train_steps=2), ev)
    assert fin.status == "failed" and "not a folder" in fin.message
    assert verify_lora(fin.output).ok and fin.output in fin.message
    _no_traceback(ev.events)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_output_folder_made_read_only_during_the_run(sd1_dir, data, tmp_path):
    out = tmp_path / "out"

    def lock(ev):
        if isinstance(ev, E.Metrics) and ev.step == 1:
            out.chmod(0o555)

    try:
        fin = train(tiny_cfg(sd1_dir, data, out, max_train_steps=2), Collector(lock))
    finally:
        out.chmod(0o755)
    assert fin.status == "failed" and "no permission" in fin.message and verify_lora(fin.output).ok


# --- a crash or kill -9 in the middle of a save ------------------------------------------------------------

def test_kill_during_a_save_leaves_the_old_file_and_the_next_run_cleans_up(sd1_dir, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "tiny.safetensors"
    target.write_bytes(b"previous LoRA")
    # a process killed (SIGKILL) while it writes the new file
    crash = textwrap.dedent(f"""
        import os, signal
        from patina.core.atomic import atomic_temp_path
        tmp = atomic_temp_path({str(target)!r})
        with open(tmp, "wb") as fh:
            fh.write(b"half of a new LoRA")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", crash], env=env, cwd=tmp_path)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"previous LoRA"
    leftovers = [p for p in out.iterdir() if p.name.endswith(f".p{proc.pid}.tmp")]
    assert len(leftovers) == 1
    # and a state folder that a crashed run was writing, next to things that are not Patina's
    dead = _dead_pid()
    (out / f"tiny-state.tmp-{dead}").mkdir()
    (out / f"tiny-state.tmp-{dead}" / "optimizer.pt").write_bytes(b"partial")
    live = out / f"tiny-state.tmp-{os.getppid()}"  # a process that is still running
    live.mkdir()
    mine = [out / ".my-notes.tmp", out / "draft.tmp", out / f".x.abcdefgh.p{dead}.tmp.keep"]
    for p in mine:
        p.write_text("the user's")

    ev = Collector()
    fin = train(tiny_cfg(sd1_dir, data, out, max_train_steps=1), ev)
    assert fin.status == "finished", fin.message
    assert not leftovers[0].exists() and not (out / f"tiny-state.tmp-{dead}").exists()
    assert live.is_dir() and all(p.read_text() == "the user's" for p in mine)
    assert any("temporary file(s) left by an interrupted run" in e.text for e in ev.of(E.Log))


def test_an_interrupted_state_replacement_is_put_back(tmp_path):
    (tmp_path / "tiny-state.old").mkdir()
    (tmp_path / "tiny-state.old" / "train_state.json").write_text("{}")
    (tmp_path / f"tiny-state.tmp-{_dead_pid()}").mkdir()
    clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-state"]
    assert (tmp_path / "tiny-state" / "train_state.json").is_file()


# --- files are readable by other users (umask) --------------------------------------------------------------

def test_saved_files_honour_the_umask(tmp_path, umask022):
    atomic_write_text(tmp_path / "config.json", "{}")
    save_lora(tmp_path / "x.safetensors", {"lora_unet_a.lora_down.weight": torch.zeros(2, 4),
                                          "lora_unet_a.lora_up.weight": torch.zeros(4, 2),
                                          "lora_unet_a.alpha": torch.tensor(2.0)})
    tmp = atomic_temp_path(tmp_path / "y.bin")
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o644
    for name in ("config.json", "x.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    os.umask(0o077)
    atomic_write_text(tmp_path / "private.json", "{}")
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    (tmp_path / "x.safetensors").chmod(0o640)  # a file the user set up keeps its permissions
    atomic_write_text(tmp_path / "x.safetensors", "replaced")
    assert stat.S_IMODE((tmp_path / "x.safetensors").stat().st_mode) == 0o640


# --- a bad LoRA file is reported as broken ------------------------------------------------------------------

def _lora_for(model_dir, conv_dim=0):
    from patina.core.models.loading import load_base_model
    from patina.core.lora.network import build_network
    from patina.core.lora.targets import NetworkSpec

    base = load_base_model(model_dir)
    net = build_network(base.unet, base.text_encoders, base.family,
                        NetworkSpec(network_dim=4, network_alpha=2.0, conv_dim=conv_dim or None, conv_alpha=1.0))
    sd = net.kohya_state_dict(dtype=torch.float32)
    return {k: (torch.randn_like(v) if k.endswith("lora_up.weight") else v) for k, v in sd.items()}


def test_verify_reports_shapes_that_do_not_fit_together_for_every_loader(tmp_path, capsys):
    from patina.core.cli import main as cli
    from patina.core.lora.verify import CLIENTS

    good = {"lora_unet_a_to_k.lora_down.weight": torch.randn(4, 8), "lora_unet_a_to_k.lora_up.weight": torch.randn(8, 4),
            "lora_unet_a_to_k.alpha": torch.tensor(4.0)}
    save_lora(tmp_path / "good.safetensors", good, precision="float")
    assert verify_lora(tmp_path / "good.safetensors").broken == []
    cases = {
        "rank": {"lora_unet_a_to_k.lora_down.weight": torch.randn(4, 8),
                 "lora_unet_a_to_k.lora_up.weight": torch.randn(8, 5)},
        "alpha": dict(good, **{"lora_unet_a_to_k.alpha": torch.ones(4)}),
        "no_up": {"lora_unet_a_to_k.lora_down.weight": torch.randn(4, 8), "lora_unet_a_to_k.alpha": torch.tensor(4.0)},
        "conv_up": {"lora_unet_c_conv1.lora_down.weight": torch.randn(4, 8, 3, 3),
                    "lora_unet_c_conv1.lora_up.weight": torch.randn(8, 4, 3, 3)},
        "mixed_dims": {"lora_unet_c_conv1.lora_down.weight": torch.randn(4, 8, 3, 3),
                       "lora_unet_c_conv1.lora_up.weight": torch.randn(8, 4)},
    }
    for name, sd in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_lora(path, sd, precision="float")
        report = verify_lora(path)
        assert len(report.broken) == 1 and not report.ok, name
        assert all(not ok for ok, _ in report.compat.values()), name
        assert cli(["verify", str(path)]) == 1
        out = capsys.readouterr().out
        assert "BROKEN" in out and all(f"{c}: PROBLEM" in out for c in CLIENTS), (name, out)
    assert "rank 4 but lora_up 8×5 expects rank 5" in verify_lora(tmp_path / "rank.safetensors").broken[0]


def test_verify_against_the_base_model(sd1_dir, tmp_path, tmp_path_factory, capsys):
    from patina.core.cli import main as cli

    sd = _lora_for(sd1_dir, conv_dim=2)
    path = tmp_path / "fits.safetensors"
    save_lora(path, sd, precision="float")
    report = verify_lora(path, model=sd1_dir)
    assert report.ok and report.mismatched == [] and report.not_in_model == [], report.mismatched[:3]
    assert cli(["verify", str(path), "--model", str(sd1_dir)]) == 0
    assert "every module fits the model's layers" in capsys.readouterr().out

    linear = next(k for k in sd if "attn2_to_k" in k and k.endswith("lora_down.weight"))
    conv = next(k for k, v in sd.items() if k.endswith("lora_down.weight") and v.ndim == 4 and v.shape[2] == 3)
    bad = dict(sd)
    bad[linear] = torch.randn(4, sd[linear].shape[1] + 8)  # consistent in itself, wrong input width
    bad[conv] = torch.randn(*sd[conv].shape[:2], 1, 1)      # a 1×1 LoCon on a 3×3 layer
    save_lora(tmp_path / "other.safetensors", bad, precision="float")
    assert verify_lora(tmp_path / "other.safetensors").broken == []  # without the model it cannot be seen
    report = verify_lora(tmp_path / "other.safetensors", model=sd1_dir)
    assert not report.ok and len(report.mismatched) == 2
    assert all(not ok for ok, _ in report.compat.values())
    assert cli(["verify", str(tmp_path / "other.safetensors"), "--model", str(sd1_dir)]) == 1
    out = capsys.readouterr().out
    assert "do not fit the model's layers" in out and linear.split(".")[0] in out

    sdxl = save_tiny_diffusers(tmp_path_factory.mktemp("models") / "tiny-sdxl", "sdxl")
    report = verify_lora(path, model=sdxl)  # an SD1 LoRA checked against an SDXL model
    assert not report.ok and (report.mismatched or report.not_in_model)


# --- surprises in the data are said before training ------------------------------------------------------

def test_captions_under_another_extension_are_reported(sd1_dir, data, tmp_path):
    p = plan(tiny_cfg(sd1_dir, data, tmp_path / "out", caption_extension=".caption"))
    assert "Captions: no training image has a .caption caption file, so folder names are used as captions" in p.text
    assert "4 have a `.txt` file: set the caption extension (caption_extension) to .txt" in p.text
    p = plan(tiny_cfg(sd1_dir, data, tmp_path / "out"))
    assert "Captions: 4 of 4 training image(s) have a .txt caption file" in p.text and ".caption" not in p.text


def test_a_folder_with_0_repeats_is_not_counted(sd1_dir, data, tmp_path):
    make_dataset(tmp_path, n=3, name="0_unused")
    p = plan(tiny_cfg(sd1_dir, data, tmp_path / "out"))
    assert p.images == 4 and "0 repeats" in p.text


def test_long_captions_warn_with_the_token_count(sd1_dir, data, tmp_path):
    long = ", ".join(f"tag{i} word{i}" for i in range(60))
    (data / "2_sks toy" / "img01.txt").write_text(long, encoding="utf-8")
    ev = Collector()
    fin = train(tiny_cfg(sd1_dir, data, tmp_path / "out", max_train_steps=1), ev)
    assert fin.status == "finished", fin.message
    plan_text = ev.of(E.Plan)[0].text
    warning = next(e.text for e in ev.of(E.Log) if "max_token_length" in e.text)
    assert "1 caption(s) are longer than max_token_length (75 tokens)" in warning and "img01.png" in warning
    assert "only their first 75 tokens are used" in warning and "set max_token_length to" in warning
    assert warning in plan_text


def test_an_unreadable_image_says_permission_denied(tmp_path, monkeypatch):
    from PIL import Image

    import patina.core.dataset.images as images

    path = tmp_path / "locked.png"
    Image.new("RGB", (8, 8)).save(path)
    real = Image.open

    def open_(p, *a, **k):
        if Path(p) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real(p, *a, **k)

    monkeypatch.setattr(images.Image, "open", open_)
    check = images.probe_image(path)
    assert not check.ok and check.reason.startswith("permission denied")
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root reads everything
        monkeypatch.setattr(images.Image, "open", real)
        path.chmod(0)
        assert images.probe_image(path).reason.startswith("permission denied")


def test_dataset_prepare_skips_broken_images_and_lists_them(tmp_path, capsys, umask022):
    import imagefactory as imgs
    from patina.core.cli import main as cli

    src = tmp_path / "src"
    make_dataset(tmp_path / "made", n=2)
    src.mkdir()
    for f in (tmp_path / "made" / "img" / "2_sks toy").iterdir():
        f.rename(src / f.name)
    imgs.truncated_jpeg(src / "broken.jpg")
    (src / "broken.txt").write_text("caption of a broken image")
    imgs.zero_byte(src / "empty.png")
    imgs.text_file(src / "notes.png")
    (src / "img00.png").chmod(0o600)
    rc = cli(["dataset", "prepare", "--instance", "sks", "--class", "toy", "--images", str(src), "--repeats", "3",
              "--dest", str(tmp_path / "dest")])
    out = capsys.readouterr().out
    assert rc == 0
    concept = tmp_path / "dest" / "img" / "3_sks toy"
    assert sorted(p.name for p in concept.iterdir()) == ["img00.png", "img00.txt", "img01.png", "img01.txt"]
    assert "Copied 2 training image(s)" in out
    for name in ("broken.jpg", "empty.png", "notes.png"):
        assert f"{src / name} was not copied" in out
    # an ordinary folder and files (umask 022), not private ones
    assert stat.S_IMODE(concept.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in concept.iterdir()} == {0o644}
    for p in src.iterdir():
        p.unlink()
    imgs.zero_byte(src / "empty.png")
    rc = cli(["dataset", "prepare", "--instance", "sks", "--class", "toy", "--images", str(src), "--repeats", "3",
              "--dest", str(tmp_path / "dest2")])
    err = capsys.readouterr().err
    assert rc == 2 and "can be read" in err and "empty.png" in err and "Traceback" not in err
