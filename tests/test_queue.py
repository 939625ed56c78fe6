"""The training queue (patina.core.train.queue) and `patina queue`: snapshots, atomic persistence, order,
interrupted runs, a damaged file, one runner at a time, and tiny runs through the terminal."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patina.core.cli import main as cli
from patina.core.config.files import save_config
from patina.core.config.schema import defaults
from patina.core.errors import PatinaError
from patina.core.train.events import Finished
from patina.core.train.queue import QueueLock, TrainingQueue, queue_path, resume_point


def config(tmp_path, **over):
    cfg = defaults()
    cfg.update(pretrained_model_name_or_path=str(tmp_path / "model"), train_data_dir=str(tmp_path / "img"),
               output_dir=str(tmp_path / "out"), output_name="dog")
    cfg.update(over)
    return cfg


def test_a_queued_config_is_a_checked_snapshot_that_later_edits_do_not_change(tmp_path):
    q = TrainingQueue()
    assert q.path == queue_path() and not q.entries   # the user data folder (PATINA_DATA_DIR in tests)
    values = config(tmp_path, network_dim=8)
    entry = q.add(values, name="first")
    values["network_dim"] = 64
    values["output_name"] = "cat"
    assert entry.config["network_dim"] == 8 and entry.config["output_name"] == "dog"
    again = TrainingQueue().get(entry.id)
    assert again.config == entry.config and again.values()["network_dim"] == 8
    assert len(again.config) > 100                    # the whole config, not only what differs
    with pytest.raises(PatinaError) as bad:
        q.add(config(tmp_path, network_dim=-1))
    assert "network_dim" in str(bad.value)
    with pytest.raises(PatinaError) as missing:
        q.add(config(tmp_path, train_data_dir=""))
    assert "train_data_dir" in str(missing.value)
    assert [e.id for e in TrainingQueue().entries] == [entry.id]


def test_every_change_is_saved_atomically_reorder_remove_and_clear(tmp_path, monkeypatch):
    q = TrainingQueue()
    a, b, c = (q.add(config(tmp_path, output_name=n), name=n) for n in "abc")
    q.move(c.id, 1)
    assert [e.name for e in TrainingQueue().entries] == ["c", "a", "b"]
    q.move(c.id, 99)
    assert [e.name for e in TrainingQueue().entries] == ["a", "b", "c"]
    q.mark(a.id, "done", output="/x/a.safetensors")
    q.mark(b.id, "failed", message="no images")
    assert TrainingQueue().next_pending().name == "c"
    # a write that fails half-way leaves the previous file whole
    before = q.path.read_text(encoding="utf-8")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", broken_replace)
        with pytest.raises(OSError):
            q.remove(c.id)
    assert q.path.read_text(encoding="utf-8") == before
    assert not [p for p in q.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert q.clear_finished() == 2
    assert [e.name for e in TrainingQueue().entries] == ["c"]
    q.remove(c.id)
    d = q.add(config(tmp_path))
    assert d.id == 4                                   # ids are never reused
    with pytest.raises(PatinaError, match="no queue entry 3"):
        q.remove(3)


def test_a_run_left_running_becomes_interrupted_unless_its_runner_still_holds_the_lock(tmp_path):
    q = TrainingQueue()
    e = q.add(config(tmp_path))
    values, resume = q.begin(e.id)
    assert values["output_name"] == "dog" and resume is None
    with QueueLock(q, "this test"):
        assert TrainingQueue().get(e.id).status == "running"   # the runner lives: left alone
    reloaded = TrainingQueue()
    assert reloaded.get(e.id).status == "interrupted" and "interrupted" in reloaded.notice
    assert reloaded.next_pending().id == e.id              # it runs again with the queue
    # a lock left by a process that has ended does not count either
    q.begin(e.id)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    q.lock_path.write_text(json.dumps({"pid": int(dead.stdout), "by": "a crashed window"}), encoding="utf-8")
    assert TrainingQueue().get(e.id).status == "interrupted"


def test_an_interrupted_or_stopped_run_resumes_from_the_state_it_saved(tmp_path):
    q = TrainingQueue()
    e = q.add(config(tmp_path))
    q.begin(e.id)
    out = tmp_path / "out"
    old = out / "dog-000001-state"
    old.mkdir(parents=True)
    (old / "train_state.json").write_text("{}", encoding="utf-8")
    os.utime(old / "train_state.json", (time.time() - 3600,) * 2)   # from an earlier, unrelated run
    q.end(e.id, Finished("stopped", "Window closed."), interrupted=True)
    assert q.get(e.id).status == "interrupted" and resume_point(q.get(e.id)) is None
    new = out / "dog-state"
    new.mkdir()
    (new / "train_state.json").write_text("{}", encoding="utf-8")
    assert resume_point(q.get(e.id)) == str(new)
    assert q.begin(e.id)[1] == str(new)
    q.end(e.id, Finished("finished", "Done.", str(out / "dog.safetensors"), 10))
    done = q.get(e.id)
    assert done.status == "done" and done.output.endswith("dog.safetensors") and done.duration >= 0
    assert resume_point(q.requeue(e.id)) is None      # a finished run that runs again starts afresh
    (out / "dog.safetensors").write_bytes(b"x")
    with pytest.raises(PatinaError, match="already exists"):   # the queue never replaces a LoRA
        q.begin(e.id)
    assert q.get(e.id).status == "failed" and "already exists" in q.get(e.id).message


def test_a_damaged_queue_file_is_kept_aside_and_the_queue_starts_empty(tmp_path):
    path = queue_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"entries": [{"id": 1, "name": ', encoding="utf-8")
    q = TrainingQueue()
    assert q.entries == [] and "damaged" in q.notice and "\n" not in q.notice
    kept = list(path.parent.glob("queue.damaged-*.json"))
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8").startswith('{"entries"')
    q.add(config(tmp_path))
    assert len(TrainingQueue().entries) == 1


def test_only_one_process_runs_the_queue(tmp_path):
    q = TrainingQueue()
    other = ("import sys; from patina.core.train.queue import QueueLock, TrainingQueue\n"
             "from patina.core.errors import PatinaError\n"
             "try:\n    QueueLock(TrainingQueue(sys.argv[1]), 'x').acquire(); print('GOT')\n"
             "except PatinaError as e:\n    print('REFUSED', e)\n")
    with QueueLock(q, "the Patina window"):
        r = subprocess.run([sys.executable, "-c", other, str(q.path)], capture_output=True, text=True, timeout=60)
        assert "REFUSED The queue is already running in the Patina window" in r.stdout, r.stderr
    assert not q.lock_path.exists()
    r = subprocess.run([sys.executable, "-c", other, str(q.path)], capture_output=True, text=True, timeout=60)
    assert "GOT" in r.stdout, r.stderr                 # its process ended: the lock it left is stale
    with QueueLock(q, "this test"):                    # … and taken over
        assert json.loads(q.lock_path.read_text(encoding="utf-8"))["pid"] == os.getpid()


def test_a_lock_is_complete_the_moment_it_appears(tmp_path, monkeypatch):
    """Another process that looks at the lock file right after it is created must see who holds it; a
    half-written lock would look stale to it and be taken over."""
    from patina.core.train import queue as queue_mod

    q = TrainingQueue()
    seen = []
    real_link, real_open = os.link, os.open

    def link(src, dst, *a, **k):
        real_link(src, dst, *a, **k)
        seen.append(queue_mod.lock_holder(q.lock_path))

    def open_(path, flags, *a, **k):
        fd = real_open(path, flags, *a, **k)
        if str(path) == str(q.lock_path):
            seen.append(queue_mod.lock_holder(q.lock_path))
        return fd

    monkeypatch.setattr(queue_mod.os, "link", link)
    monkeypatch.setattr(queue_mod.os, "open", open_)
    with QueueLock(q, "the Patina window"):
        assert seen and all(h == {"pid": os.getpid(), "by": "the Patina window"} for h in seen), seen
    assert not q.lock_path.exists() and not list(q.lock_path.parent.glob("*.tmp"))


# --- the command line ---------------------------------------------------------------------------------------

def test_queue_cli_add_list_move_remove_clear(tmp_path, capsys):
    path = save_config(tmp_path / "dog.json", config(tmp_path))
    assert cli(["queue", "add", str(path)]) == 0
    assert cli(["queue", "add", str(path), "--set", "output_name=cat", "--name", "cat run"]) == 0
    capsys.readouterr()
    assert cli(["queue", "list"]) == 0
    out = capsys.readouterr().out
    assert out.index("dog") < out.index("cat run") and out.count("waiting") == 2 and str(tmp_path / "out") in out
    assert cli(["queue", "move", "2", "1"]) == 0
    assert [e.name for e in TrainingQueue().entries] == ["cat run", "dog"]
    TrainingQueue().mark(1, "failed", message="the model file is damaged")
    capsys.readouterr()
    cli(["queue", "list"])
    assert "1: the model file is damaged" in capsys.readouterr().out
    assert cli(["queue", "clear"]) == 0 and [e.name for e in TrainingQueue().entries] == ["cat run"]
    assert cli(["queue", "remove", "2"]) == 0 and TrainingQueue().entries == []
    capsys.readouterr()
    for bad in (["queue", "remove", "7"], ["queue", "add", str(path), "--set", "network_dim=-1"],
                ["queue", "add", str(tmp_path / "nope.json")]):
        assert cli(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("patina: ") and "Traceback" not in err
    with pytest.raises(SystemExit) as ex:
        cli(["queue", "move", "x", "1"])
    assert ex.value.code == 2 and "not a number" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sd1_dir(tmp_path_factory):
    from patina.core.models.tiny import save_tiny_diffusers

    return save_tiny_diffusers(tmp_path_factory.mktemp("m") / "tiny-sd1", "sd1")


def test_queue_run_goes_on_after_a_failure_and_ctrl_c_stops_it_saving(sd1_dir, tmp_path, capsys, monkeypatch):
    import patina.core.cli.train as cli_train
    from trainkit import make_dataset, tiny_cfg

    data = make_dataset(tmp_path, n=2, repeats=1)
    cfg = tiny_cfg(sd1_dir, data, tmp_path / "out", epoch=1, train_batch_size=1)
    path = save_config(tmp_path / "tiny.json", cfg)
    cli(["queue", "add", str(path), "--set", f"train_data_dir={tmp_path / 'gone'}", "--name", "missing"])
    cli(["queue", "add", str(path), "--set", "output_name=a", "--set", "max_train_steps=3"])
    cli(["queue", "add", str(path), "--set", "output_name=b", "--set", "max_train_steps=1"])

    class CtrlC(cli_train.Printer):  # Ctrl+C at run "a"'s first step
        def __call__(self, ev):
            super().__call__(ev)
            if type(ev).__name__ == "Progress" and ev.step == 1 and "a" not in sent:
                sent.add("a")
                signal.raise_signal(signal.SIGINT)

    sent: set = set()
    monkeypatch.setattr(cli_train, "Printer", CtrlC)
    assert cli(["queue", "run", "--quiet"]) == 0
    out = capsys.readouterr()
    assert [(e.name, e.status) for e in TrainingQueue().entries] == [
        ("missing", "failed"), ("tiny", "stopped"), ("tiny", "waiting")], out
    assert "queue stopped" in out.out and "patina queue retry 2" in out.out
    assert "gone" in TrainingQueue().get(1).message
    assert not (tmp_path / "out" / "b.safetensors").exists()
    # retry: run "a" continues from the state its stop saved, then "b" runs
    assert cli(["queue", "retry", "2"]) == 0
    assert cli(["queue", "run", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"Continuing from {tmp_path / 'out' / 'a-state'}" in out
    entries = TrainingQueue().entries
    assert [e.status for e in entries] == ["failed", "done", "done"]
    assert entries[1].output == str(tmp_path / "out" / "a.safetensors") and Path(entries[1].output).is_file()
    assert (tmp_path / "out" / "b.safetensors").is_file()
    assert cli(["queue", "retry", "1"]) == 0           # still no folder: a failure is exit code 1
    assert cli(["queue", "run", "--quiet"]) == 1
    assert "gone" in capsys.readouterr().err
