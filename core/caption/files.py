"""Where a captioning model's files are, and fetching them — only when the user asks.

A model is used from the first of these that holds all its required files:

1. the folder the user names (``--model-dir``, "Model folder" in the window);
2. Patina's offline folder for it, :func:`offline_folder` (``<user cache>/caption-models/<name>``), where files
   copied from another computer go;
3. the Hugging Face cache, read with ``local_files_only`` (a model downloaded once is never fetched again).

:func:`download` fetches the files with ``huggingface_hub`` into its cache (a dropped connection resumes),
reporting ``progress(bytes_done, bytes_total)``. Offline, it fails with :class:`ModelMissing`, whose one-line
message says how big the download is, where from, and where to put the files instead.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

from patina.core.caption.models import CaptionModel
from patina.core.errors import PatinaError
from patina.core.paths import user_cache_dir

Progress = Callable[[int, int], None]


class ModelMissing(PatinaError):
    """The model's files are not on this computer (and were not, or could not be, downloaded)."""


def offline_folder(model: CaptionModel) -> Path:
    """Where files copied by hand (from a computer with internet) are looked for."""
    return user_cache_dir() / "caption-models" / model.key


def missing_files(folder: str | os.PathLike, model: CaptionModel) -> list[str]:
    """The required files *folder* lacks (by their usual name); empty when the model can load from it."""
    root = Path(folder)
    return [names[0] for names in model.required if not any((root / n).is_file() for n in names)]


def missing_message(model: CaptionModel) -> str:
    """The one line that says what a model needs: the download, and how to do without one."""
    return (f"The captioning model {model.key} needs a download of about {model.size_mb:,} MB from {model.url}; "
            f"put the files ({', '.join(model.required_names)}) in {offline_folder(model)} "
            f"(or in a folder given as the model folder, --model-dir) to use them offline")


def find_model(model: CaptionModel, model_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder to load *model* from, or None when it still has to be downloaded.

    A *model_dir* that lacks files is a mistake to report (:class:`PatinaError`), not a reason to look elsewhere.
    """
    if model_dir:
        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise PatinaError(f"--model-dir: {folder} is not a folder; give the folder that holds "
                              f"{', '.join(model.required_names)}")
        lacking = missing_files(folder, model)
        if lacking:
            raise PatinaError(f"--model-dir: {folder} has no {', '.join(lacking)} (files of {model.url}); "
                              f"put them there or leave the model folder empty")
        return folder
    own = offline_folder(model)
    if own.is_dir() and not missing_files(own, model):
        return own
    return _cached_snapshot(model)


def _cached_snapshot(model: CaptionModel) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model.repo, allow_patterns=list(model.files), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or an unreadable cache): it needs a download
        return None
    return folder if not missing_files(folder, model) else None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or value.strip().upper() in ("1", "ON", "YES", "TRUE")


def download(model: CaptionModel, progress: Progress | None = None) -> Path:
    """Fetch *model*'s files into the Hugging Face cache and return the folder holding them.

    Files already cached are not fetched again; a dropped connection resumes where it stopped. Raises
    :class:`ModelMissing` when offline or when the hub cannot be reached.
    """
    if _hub_offline():
        raise ModelMissing(missing_message(model) + " (downloads are off: HF_HUB_OFFLINE is set)")
    from huggingface_hub import hf_hub_download

    meter = _Meter(model, progress)
    supports_bar = "tqdm_class" in inspect.signature(hf_hub_download).parameters
    folder: Path | None = None
    for name in model.files:
        meter.start(name)
        extra = {"tqdm_class": meter.bar_class()} if supports_bar else {}
        try:
            path = Path(hf_hub_download(model.repo, name, **extra))
        except Exception as exc:  # noqa: BLE001 - every hub or network failure becomes the one-line message
            if _not_published(exc):
                meter.skip(name)
                continue   # a file this repository does not have: fine unless it is required (checked below)
            raise ModelMissing(f"{missing_message(model)}. The download failed: {_reason(exc)}") from exc
        meter.finish(name, path)
        folder = path.parent
    if folder is None or missing_files(folder, model):
        raise ModelMissing(f"{missing_message(model)}. The download did not bring "
                           f"{', '.join(missing_files(folder, model)) if folder else 'any file'}")
    return folder


def model_files(model: CaptionModel, model_dir: str | os.PathLike | None = None, *, download_missing: bool = False,
                progress: Progress | None = None) -> Path:
    """The folder to load *model* from: found on this computer, or downloaded when *download_missing*.

    Without permission to download, a missing model raises :class:`ModelMissing`.
    """
    folder = find_model(model, model_dir)
    if folder is not None:
        return folder
    if not download_missing:
        raise ModelMissing(missing_message(model))
    return download(model, progress)


def _not_published(exc: BaseException) -> bool:
    return type(exc).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class _Meter:
    """Adds up the bytes of every file of a download for one ``progress(done, total)``. Until a file starts,
    its size is estimated from the model's size."""

    def __init__(self, model: CaptionModel, progress: Progress | None):
        self.progress = progress
        weights = next(n for n in model.files if n.startswith("model."))
        self.sizes = {n: (model.size_mb * 1_000_000 if n == weights else 0) for n in model.files}
        self.done = {n: 0 for n in model.files}
        self.current = ""

    def start(self, name: str) -> None:
        self.current = name

    def skip(self, name: str) -> None:
        self.sizes[name] = self.done[name] = 0
        self._report()

    def finish(self, name: str, path: Path) -> None:
        try:
            size = path.stat().st_size
        except OSError:
            size = self.sizes[name]
        self.sizes[name] = self.done[name] = size
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(sum(self.done.values()), max(sum(self.sizes.values()), sum(self.done.values())))

    def bar_class(self):
        """A tqdm class for ``hf_hub_download``: it never draws, it counts into this meter."""
        from tqdm import tqdm

        meter = self

        class _Bar(tqdm):
            def __init__(self, *args, **kwargs):
                kwargs["disable"] = True
                kwargs.pop("name", None)
                super().__init__(*args, **kwargs)
                if kwargs.get("total"):
                    meter.sizes[meter.current] = int(kwargs["total"])
                meter.done[meter.current] = int(kwargs.get("initial") or 0)
                meter._report()

            def update(self, n=1):
                meter.done[meter.current] += int(n or 0)
                meter._report()
                return super().update(n)

        return _Bar
