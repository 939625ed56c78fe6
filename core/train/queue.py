"""The training queue: configs to train one after the other, kept in ``queue.json`` in the user data folder.

Every entry holds a *snapshot* of the whole checked config taken when it was queued, so later edits in the
window or to the config file never change a queued run. The file is written atomically on every change, and
every change re-reads it first, so the window and ``patina queue`` can both edit one queue.

One runner at a time: :class:`QueueLock` (``queue.lock`` holding the runner's pid) keeps the window and
``patina queue run`` from running the same queue twice; a lock left by a process that no longer runs is taken
over. An entry found "running" while nobody holds the lock belonged to a runner that crashed or was closed: it
becomes "interrupted" and runs again with the rest of the queue — resuming from the training state that run
saved (a stop always saves one; otherwise the config's ``save_state`` checkpoints) when there is one, from
the start otherwise. A damaged queue file is put aside (renamed, never deleted) and the queue starts empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from patina.core.atomic import atomic_write_text, pid_alive
from patina.core.errors import PatinaError
from patina.core.paths import user_data_dir

QUEUE_FILE = "queue.json"
LOCK_FILE = "queue.lock"
STATUSES = ("waiting", "running", "done", "failed", "stopped", "interrupted")
PENDING = ("waiting", "interrupted")          # what a runner takes, in queue order
FINISHED = ("done", "failed", "stopped")     # what "clear" removes
RESULT_STATUS = {"finished": "done", "stopped": "stopped", "failed": "failed"}  # Finished.status → entry status


def queue_path() -> Path:
    return user_data_dir() / QUEUE_FILE


@dataclass
class Entry:
    id: int
    name: str
    config: dict                       # the snapshot: patina.core.config.files.config_to_dict of the checked config
    source: str = ""                   # the config file it came from, if any
    status: str = "waiting"
    added: float = 0.0                 # Unix times
    started: float | None = None
    finished: float | None = None
    output: str = ""                   # the LoRA file written (or the output folder)
    message: str = ""                  # why it failed or stopped

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (time.time() if self.status == "running" else None)
        return None if end is None else max(0.0, end - self.started)

    def values(self) -> dict:
        """The snapshot as a complete, checked config; a PatinaError if it no longer is one."""
        from patina.core.config.files import config_from_dict

        result = config_from_dict(self.config, source=f"queue entry {self.id}")
        if result.errors:
            raise PatinaError(f"Queue entry {self.id} ({self.name}) has invalid settings:",
                              problems=[str(p) for p in result.errors])
        return dict(result.values)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Entry":
        known = {f.name for f in fields(cls)}
        entry = cls(**{k: v for k, v in data.items() if k in known})
        if not isinstance(entry.config, dict) or entry.status not in STATUSES or not isinstance(entry.id, int):
            raise ValueError(f"entry {data.get('id')!r} is not a queue entry")
        return entry


def snapshot(values: Mapping[str, Any]) -> dict:
    """The checked, complete config to queue (a deep copy), or a PatinaError listing what must be fixed."""
    from patina.core.config.files import config_to_dict
    from patina.core.config.schema import check_values, errors, missing_required

    cfg, problems = check_values(values)
    bad = [str(p) for p in errors(problems)]
    bad += [f"{p.key}: is needed to train; set it first" for p in missing_required(cfg)]
    if bad:
        raise PatinaError("This config cannot be queued; fix these settings first:", problems=bad)
    return json.loads(json.dumps(config_to_dict(cfg)))


class TrainingQueue:
    """The queue in *path* (default: ``queue.json`` in the user data folder). ``notice`` holds a one-line
    message about the last load (a damaged file put aside, runs found interrupted), "" when there is none."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else queue_path()
        self.lock_path = self.path.with_name(LOCK_FILE)
        self.entries: list[Entry] = []
        self.next_id = 1
        self.notice = ""
        self.load()

    # -- the file ---------------------------------------------------------------------------------------------

    def load(self) -> "TrainingQueue":
        self.notice = ""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.entries, self.next_id = [], 1
            return self
        try:
            data = json.loads(text)
            entries = [Entry.from_dict(e) for e in data["entries"]]
            next_id = int(data.get("next_id", 1))
        except (ValueError, KeyError, TypeError) as exc:
            self._put_aside(exc)
            return self
        self.entries = entries
        self.next_id = max([next_id] + [e.id + 1 for e in entries])
        running = [e for e in entries if e.status == "running"]
        if running and lock_holder(self.lock_path) is None:
            for e in running:
                e.status, e.finished = "interrupted", None
                e.message = "Patina closed or crashed during this run; it runs again with the queue."
            self.notice = f"{len(running)} run(s) were interrupted when Patina closed; they run again with the queue."
            self._write()
        return self

    def _put_aside(self, exc: Exception) -> None:
        aside = self.path.with_name(f"queue.damaged-{time.strftime('%Y%m%d-%H%M%S')}.json")
        with contextlib.suppress(OSError):
            os.replace(self.path, aside)
        self.entries, self.next_id = [], 1
        self.notice = (f"The queue file {self.path} was damaged ({str(exc)[:80]}); it was kept as {aside.name} and "
                       "the queue starts empty.")

    def _write(self) -> None:
        data = {"version": 1, "next_id": self.next_id, "entries": [asdict(e) for e in self.entries]}
        atomic_write_text(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def _change(self, fn: Callable[[], Any]) -> Any:
        """Re-read the file (another Patina may have changed it), apply *fn*, write the file."""
        notice = self.notice
        self.load()
        self.notice = self.notice or notice
        result = fn()
        self._write()
        return result

    # -- look-ups ---------------------------------------------------------------------------------------------

    def get(self, entry_id: int) -> Entry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise PatinaError(f"There is no queue entry {entry_id}; `patina queue list` shows the entries.")

    def next_pending(self) -> Entry | None:
        return next((e for e in self.entries if e.status in PENDING), None)

    def pending(self) -> list[Entry]:
        return [e for e in self.entries if e.status in PENDING]

    # -- changes ----------------------------------------------------------------------------------------------

    def add(self, values: Mapping[str, Any], *, name: str = "", source: str | os.PathLike = "") -> Entry:
        snap = snapshot(values)

        def do() -> Entry:
            entry = Entry(self.next_id, name or default_name(snap, source), snap,
                          str(Path(source).resolve()) if source else "", added=time.time())
            self.next_id += 1
            self.entries.append(entry)
            return entry

        return self._change(do)

    def remove(self, entry_id: int) -> Entry:
        def do() -> Entry:
            entry = self.get(entry_id)
            if entry.status == "running":
                raise PatinaError(f"Queue entry {entry_id} is running; stop it before removing it.")
            self.entries.remove(entry)
            return entry

        return self._change(do)

    def move(self, entry_id: int, position: int) -> None:
        """Put the entry at 1-based *position* (clamped to the queue)."""
        def do() -> None:
            entry = self.get(entry_id)
            self.entries.remove(entry)
            self.entries.insert(max(0, min(len(self.entries), position - 1)), entry)

        self._change(do)

    def clear_finished(self) -> int:
        def do() -> int:
            before = len(self.entries)
            self.entries = [e for e in self.entries if e.status not in FINISHED]
            return before - len(self.entries)

        return self._change(do)

    def requeue(self, entry_id: int) -> Entry:
        """A failed, stopped or finished entry waits again (a stopped one resumes from its saved state)."""
        def do() -> Entry:
            entry = self.get(entry_id)
            if entry.status == "running":
                raise PatinaError(f"Queue entry {entry_id} is running already.")
            if entry.status not in ("stopped", "interrupted"):  # only a stopped run continues where it was
                entry.started = entry.finished = None
            entry.status, entry.message = "waiting", ""
            return entry

        return self._change(do)

    def mark(self, entry_id: int, status: str, **changes: Any) -> Entry:
        if status not in STATUSES:
            raise ValueError(status)

        def do() -> Entry:
            entry = self.get(entry_id)
            entry.status = status
            for key, value in changes.items():
                setattr(entry, key, value)
            return entry

        return self._change(do)

    # -- running ----------------------------------------------------------------------------------------------

    def begin(self, entry_id: int) -> tuple[dict, str | None]:
        """Mark the entry running and return (config, state folder to resume from or None). A config that
        cannot run (invalid now, or its LoRA file exists and nothing resumes) marks it failed and raises."""
        entry = self.get(entry_id)
        resume = resume_point(entry)
        try:
            values = entry.values()
            out = Path(os.path.expanduser(str(values["output_dir"]))) / f"{values['output_name']}.safetensors"
            if out.exists() and resume is None:
                raise PatinaError(f"{out} already exists; the queue never replaces a LoRA. Remove or rename it, "
                                  "or queue the config with another output name.")
        except PatinaError as exc:
            self.mark(entry_id, "failed", message=str(exc), started=time.time(), finished=time.time())
            raise
        self.mark(entry_id, "running", started=time.time(), finished=None, message="",
                  output=str(values["output_dir"]))
        return values, resume

    def end(self, entry_id: int, fin: Any, *, interrupted: bool = False) -> Entry:
        """Record a run's :class:`~patina.core.train.events.Finished`. *interrupted*: the run was stopped
        because the window closed; it runs again (resuming) when the queue is resumed."""
        status = "interrupted" if interrupted and fin.status == "stopped" else RESULT_STATUS.get(fin.status, "failed")
        entry = self.get(entry_id)
        message = "" if status == "done" else (fin.message or "")
        return self.mark(entry_id, status, finished=time.time(), message=message,
                         output=fin.output or entry.output)


def format_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; "—" when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def time_text(entry: Entry) -> str:
    """What the queue lists as an entry's time: how long it ran (or runs), else when it was added."""
    if entry.started is not None and entry.status != "waiting":
        return format_duration(entry.duration)
    return "added " + time.strftime("%d %b %H:%M", time.localtime(entry.added))


def default_name(config: Mapping[str, Any], source: str | os.PathLike = "") -> str:
    return Path(source).stem if source else str(config.get("output_name") or "run")


def resume_point(entry: Entry) -> str | None:
    """The newest training state this entry's earlier attempt saved (``<output_name>…-state`` in its output
    folder, written after that attempt started), or None: the run starts from the beginning."""
    if entry.started is None or entry.status not in ("interrupted", "stopped", "waiting"):
        return None
    cfg = entry.config
    folder = Path(os.path.expanduser(str(cfg.get("output_dir") or "")))
    name = str(cfg.get("output_name") or "")
    if not name or not folder.is_dir():
        return None
    found = []
    for d in folder.glob(f"{name}*-state"):
        marker = d / "train_state.json"
        with contextlib.suppress(OSError):
            if marker.is_file() and marker.stat().st_mtime >= entry.started - 1:
                found.append((marker.stat().st_mtime, str(d)))
    return max(found)[1] if found else None


# --- one runner at a time -------------------------------------------------------------------------------------

def lock_holder(lock_path: Path) -> dict | None:
    """{"pid", "by"} of the live process that holds the lock, or None (no lock, or a dead process's)."""
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8"))
        pid = int(data["pid"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: treated as stale
    return {"pid": pid, "by": str(data.get("by", ""))} if pid_alive(pid) else None


class QueueLock:
    """``with QueueLock(queue, "the window"):`` — run the queue; a PatinaError if another live process runs it."""

    def __init__(self, queue: TrainingQueue, by: str):
        self.path = queue.lock_path
        self.by = by
        self.held = False

    def acquire(self) -> "QueueLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                self._create()
            except FileExistsError:
                holder = lock_holder(self.path)
                if holder is None:  # left by a process that no longer runs: take it over
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                    continue
                if holder["pid"] == os.getpid():
                    self.held = True
                    return self
                raise PatinaError(f"The queue is already running in {holder['by'] or 'another Patina'} (process "
                                  f"{holder['pid']}); wait for it to finish or stop it there.") from None
            self.held = True
            return self
        raise PatinaError(f"Could not lock the queue ({self.path}); try again.")

    def _create(self) -> None:
        """Create the lock file with its content complete the moment it appears (written aside, then linked:
        a link never replaces an existing file), so another process never reads a half-written lock and takes
        it for a stale one. FileExistsError when a lock is there."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "by": self.by}), encoding="utf-8")
        try:
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: exclusive create, then write
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(tmp.read_text(encoding="utf-8"))
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def release(self) -> None:
        if self.held:
            holder = lock_holder(self.path)
            if holder is not None and holder["pid"] == os.getpid():
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self.held = False

    def __enter__(self) -> "QueueLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
