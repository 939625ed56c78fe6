"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over the target.

A crash or kill during a save leaves the previous file intact (rename is atomic on POSIX and on NTFS
via os.replace). The temporary file is named ``.<target name>.<random>.p<pid>.tmp``; a crash can leave
one behind, and :func:`clean_leftovers` removes those of processes that are no longer running.

The saved file gets the permissions of a new file under the process umask (``0644`` with the usual
umask 022), or keeps those of the file it replaces, so other users and programs (ComfyUI running as
another user) can read a LoRA as they could any file the user creates.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator

_umask_lock = threading.Lock()

# ".<name>.<8 random chars>.p<pid>.tmp" (this module) and "<name>-state.tmp-<pid>" (the engine's state
# folders while they are written).
_TEMP_FILE_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.p(\d+)\.tmp$")
_TEMP_STATE_RE = re.compile(r"^.+-state\.tmp-(\d+)$")


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(existing: str | os.PathLike | None = None) -> int:
    """Permissions for a saved file: those of *existing* when it is there, else 0666 minus the umask."""
    if existing is not None:
        with contextlib.suppress(OSError):
            return stat.S_IMODE(os.stat(existing).st_mode)
    return 0o666 & ~current_umask()


def new_dir_mode() -> int:
    return 0o777 & ~current_umask()


def _mkstemp(target: Path) -> tuple[int, str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".p{os.getpid()}.tmp", dir=target.parent)
    if os.name == "posix":  # mkstemp creates 0600; a saved file is an ordinary user file
        with contextlib.suppress(OSError):
            os.fchmod(fd, new_file_mode(target))
    return fd, tmp


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """Open a temporary sibling of *path* for writing; on success it replaces *path*."""
    if "w" not in mode:
        raise ValueError("atomic_open is for writing")
    target = Path(path)
    fd, tmp = _mkstemp(target)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", newline: str | None = "") -> None:
    """Write *text* atomically. ``newline=""`` writes the string's line endings unchanged."""
    with atomic_open(path, "w", encoding=encoding, newline=newline) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary path next to *path*, for libraries that insist on writing a file name
    themselves (safetensors, torch.save). Call :func:`commit_temp` afterwards."""
    fd, tmp = _mkstemp(Path(path))
    os.close(fd)
    return Path(tmp)


def commit_temp(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    if os.name == "posix":  # a library may have recreated the file under its own name (0600 or umask)
        with contextlib.suppress(OSError):
            os.chmod(tmp, new_file_mode(path))
    os.replace(tmp, path)


# --- leftovers of a crash ------------------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    """True when a process with this id runs on this computer (or when that cannot be known)."""
    if pid <= 0:
        return True
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would send Ctrl+C there
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def clean_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove Patina's own temporary files and state folders that a crashed process left in *folder*.

    Only names this module and the engine create are touched (``.<name>.<random>.p<pid>.tmp`` files and
    ``<name>-state.tmp-<pid>`` folders), and only when process *pid* is no longer running. A state folder
    whose replacement was interrupted (``<name>-state.old`` with no ``<name>-state``) is put back.
    Returns what was removed."""
    root = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_FILE_RE.match(e.name)
        if m and e.is_file(follow_symlinks=False) and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(e.path)
                removed.append(Path(e.path))
            continue
        m = _TEMP_STATE_RE.match(e.name)
        if m and e.is_dir(follow_symlinks=False) and not pid_alive(int(m.group(1))):
            shutil.rmtree(e.path, ignore_errors=True)
            if not os.path.exists(e.path):
                removed.append(Path(e.path))
    for e in entries:
        if e.name.endswith("-state.old") and e.is_dir(follow_symlinks=False):
            live = root / e.name[: -len(".old")]
            busy = any(_TEMP_STATE_RE.match(x.name) and x.name.startswith(live.name + ".tmp-")
                       and os.path.exists(x.path) for x in entries)
            if not live.exists() and not busy:
                with contextlib.suppress(OSError):
                    os.replace(e.path, live)
    return removed
