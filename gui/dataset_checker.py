"""The Dataset tab's background check: every caption read, then every image fully decoded with
``patina.core.dataset.images.probe_image``, as one background task (:mod:`patina.gui.tasks`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal

from patina.core.dataset.captions import read_caption
from patina.core.dataset.images import ImageCheck, probe_image
from patina.core.dataset.listing import ImageItem
from patina.gui.tasks import Lane, Latest, Task


class DatasetChecker(QObject):
    """Reads every caption, then checks every image with ``probe_image``, as one background task on its own
    one-thread lane (:mod:`patina.gui.tasks`).

    Results come back in batches tagged with a generation number; starting a new check (a folder switch)
    cancels the old one, whose remaining batches are dropped. Check results are remembered by
    (path, modification time, size) for the session.
    """

    captions = Signal(int, object)   # gen, {image path: (text or None, warning)}  (object: no QVariant copy)
    checks = Signal(int, object)     # gen, [ImageCheck]
    progress = Signal(int, int, int)  # gen, done, total
    finished = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._lane = Lane(1)
        self._latest = Latest(self._lane)
        self._cache: dict[tuple[str, int, int], ImageCheck] = {}   # only touched on the lane's thread

    @property
    def generation(self) -> int:
        return self._latest.generation

    def start(self, items: list[ImageItem]) -> int:
        gen = self._latest.generation + 1
        work = [(str(it.path), it.caption_file, it.has_caption) for it in items]
        self._latest.start(self._run, work, pass_task=True, what="Checking the images",
                           on_progress=lambda kind, *values: self._report(gen, kind, *values),
                           on_done=lambda _none: self.finished.emit(gen))
        return gen

    def _report(self, gen: int, kind: str, *values) -> None:
        {"captions": self.captions, "checks": self.checks, "progress": self.progress}[kind].emit(gen, *values)

    def cancel(self) -> None:
        self._latest.cancel()

    def shutdown(self) -> None:
        self.cancel()
        self._lane.wait(10000)

    def _run(self, task: Task, work: list[tuple[str, Path, bool]]) -> None:
        QThread.currentThread().setPriority(QThread.Priority.LowPriority)  # honoured where the OS allows
        batch: dict = {}
        last = time.monotonic()
        for path, cap, has in work:
            if task.cancelled:
                return
            if has:
                try:
                    c = read_caption(cap)
                    batch[path] = (c.text, c.warning)
                except FileNotFoundError:
                    batch[path] = (None, None)
                except OSError as exc:
                    batch[path] = ("", f"{cap}: cannot be read ({exc.strerror or exc})")
            else:
                batch[path] = (None, None)
            if len(batch) >= 500 or time.monotonic() - last > 0.1:
                task.progress("captions", batch)
                batch, last = {}, time.monotonic()
        if batch:
            task.progress("captions", batch)

        total = len(work)
        checks: list[ImageCheck] = []
        last = time.monotonic()
        task.progress("progress", 0, total)
        for done, (path, _cap, _has) in enumerate(work, 1):
            if task.cancelled:
                return
            try:
                st = os.stat(path)
                key = (path, st.st_mtime_ns, st.st_size)
            except OSError:
                key = None
            check = self._cache.get(key) if key else None
            if check is None:
                check = probe_image(path)
                if key:
                    self._cache[key] = check
            checks.append(check)
            now = time.monotonic()
            if len(checks) >= 200 or now - last > 0.15:
                task.progress("checks", checks)
                task.progress("progress", done, total)
                checks, last = [], now
        if checks:
            task.progress("checks", checks)
        task.progress("progress", total, total)
