"""Thumbnails decoded off the GUI thread, with a disk cache.

:class:`ThumbnailLoader` keeps a queue of wanted paths, newest first: the grid asks for an image when it
is about to paint it, so whatever is on screen now is decoded before what scrolled past. Worker threads
of a private :class:`~patina.gui.tasks.Lane` decode with Pillow (which releases the GIL) and hand a
``QImage`` back as task progress; the GUI thread turns it into a pixmap.

Decoded thumbnails are kept as small JPEGs under ``user_cache_dir()/thumbs``, keyed by the image's
absolute path, modification time and size, so an edited image gets a new thumbnail and reopening a
folder is instant. The images themselves are only ever read.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageOps
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from patina.core.atomic import atomic_write_bytes
from patina.core.dataset.images import to_rgb
from patina.core.paths import user_cache_dir
from patina.gui.tasks import Lane, Task, run_task

THUMB_PX = 192          # longest side of a cached thumbnail (sharp at 128 px on a 1.5× screen)
MAX_PENDING = 600       # older requests beyond this are dropped; they are asked for again when visible
_CACHE_VERSION = "1"    # bump when the thumbnail recipe changes


from patina.gui.qtfix import PYSIDE_REFCOUNT_GUARD  # noqa: E402,F401 - see gui/qtfix.py


# --- thumbnails ------------------------------------------------------------------------------------------

def thumbs_dir() -> Path:
    return user_cache_dir() / "thumbs"


def cache_key(path: str | os.PathLike, st: os.stat_result, px: int) -> str:
    raw = f"{_CACHE_VERSION}\0{os.path.abspath(path)}\0{st.st_mtime_ns}\0{st.st_size}\0{px}"
    return hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()


def cache_file(key: str, root: Path | None = None) -> Path:
    return (root or thumbs_dir()) / key[:2] / f"{key}.jpg"


def decode_scaled(path: str | os.PathLike, px: int) -> Image.Image:
    """The image at *path*, upright, as RGB, fitted into *px* × *px*. Raises on unreadable files."""
    with Image.open(path) as im:
        fmt = im.format
        if fmt in ("JPEG", "MPO"):
            im.draft("RGB", (px, px))  # decode at 1/2, 1/4 or 1/8 scale: much faster for photos
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGB", "RGBA", "L", "LA"):
            im.thumbnail((px, px), Image.Resampling.BICUBIC, reducing_gap=2.0)
            return to_rgb(im, source_format=fmt)
        im = to_rgb(im, source_format=fmt)  # 16-bit, CMYK, palette: convert first, then shrink
    im.thumbnail((px, px), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return im


def to_qimage(im: Image.Image) -> QImage:
    """An RGB Pillow image as a QImage that owns its pixels (safe to pass between threads)."""
    data = im.tobytes("raw", "RGB")
    return QImage(data, im.width, im.height, 3 * im.width, QImage.Format.Format_RGB888).copy()


class ThumbnailLoader(QObject):
    """Decode images to at most *px* pixels in background threads.

    ``loaded(path, image)`` or ``failed(path, reason)`` is emitted once per request, on the GUI thread.
    With *disk_cache* the result is also stored under :func:`thumbs_dir`.
    """

    loaded = Signal(str, QImage)
    failed = Signal(str, str)

    def __init__(self, px: int = THUMB_PX, *, threads: int | None = None, disk_cache: bool = True,
                 cache_root: Path | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.px = int(px)
        self.disk_cache = disk_cache
        self._cache_root = cache_root
        self._lock = threading.Lock()
        self._queue: OrderedDict[str, None] = OrderedDict()  # newest request last
        self._in_flight: set[str] = set()
        self._workers = 0
        self._stopped = False
        cores = os.cpu_count() or 2
        # Leave a core to the GUI thread: decoding competes with painting for the CPU (and the GIL).
        self._max_workers = threads if threads is not None else max(1, min(4, cores - 1))
        self._lane = Lane(self._max_workers)

    # --- GUI thread -------------------------------------------------------------------------------
    def request(self, path: str) -> None:
        """Ask for *path*; a repeated request moves it to the front of the queue."""
        with self._lock:
            if self._stopped or path in self._in_flight:
                return
            self._queue[path] = None
            self._queue.move_to_end(path)
            while len(self._queue) > MAX_PENDING:
                self._queue.popitem(last=False)
            start = self._workers < self._max_workers
            if start:
                self._workers += 1
        if start:
            run_task(self._drain, pass_task=True, lane=self._lane, on_progress=self._deliver,
                     what="Loading thumbnails")

    def cancel_all(self) -> None:
        """Forget every queued request (decodes already running still report)."""
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + len(self._in_flight)

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Stop taking work and wait for running decodes; safe to call more than once."""
        with self._lock:
            self._stopped = True
            self._queue.clear()
        self._lane.wait(timeout_ms)

    # --- worker threads -----------------------------------------------------------------------------
    def _deliver(self, path: str, image: QImage | None, error: str) -> None:   # GUI thread
        if self._stopped:
            return
        if image is None or image.isNull():
            self.failed.emit(path, error or "could not decode")
        else:
            self.loaded.emit(path, image)

    def _drain(self, task: Task) -> None:
        while True:
            with self._lock:
                if self._stopped or not self._queue:
                    self._workers -= 1
                    return
                path, _ = self._queue.popitem(last=True)
                self._in_flight.add(path)
            try:
                image, error = self._load(path), ""
            except Exception as exc:  # noqa: BLE001 - a bad file must only give a "broken" tile
                image, error = None, _describe(exc)
            with self._lock:
                self._in_flight.discard(path)
                stopped = self._stopped
            if not stopped:
                task.progress(path, image, error)

    def _load(self, path: str) -> QImage:
        st = os.stat(path)
        cached = None
        if self.disk_cache:
            cached = cache_file(cache_key(path, st, self.px), self._cache_root)
            if cached.is_file():
                image = QImage(str(cached))
                if not image.isNull():
                    return image
        im = decode_scaled(path, self.px)
        if cached is not None:
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=88)
            try:
                atomic_write_bytes(cached, buf.getvalue())
            except OSError:
                pass  # a read-only cache only costs speed
        return to_qimage(im)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
