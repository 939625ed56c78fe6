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

from core import events as E
from core.atomic import atomic_temp_path, atomic_write_text, clean_leftovers, pid_alive
from core.config import save_config
from core.engine import plan, train
from core.events import Commands
from core.lora_io import save_lora, verify_lora
from core.tiny import save_tiny_diffusers
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


def test_ctrl_c_in_the_cli_saves_under_a_step_name_and_keeps_the_finished_file(sd1_dir, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    finished = out / "tiny.safetensors"
    finished.write_bytes(b"a finished LoRA from an earlier run")
    preset = save_config(tmp_path / "p.json", tiny_cfg(sd1_dir, data, out, epoch=200))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "core", "train", str(preset), "--overwrite", "--quiet"],
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
    import core.atomic as atomic
    import core.lora_io as lora_io

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
        from core.atomic import atomic_temp_path
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
