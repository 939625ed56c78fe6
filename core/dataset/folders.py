"""Reading a dataset laid out by the kohya convention.

The folder the user picks (the *image folder*) holds one subfolder per concept, named
``<repeats>_<instance> <class>``, e.g. ``img/10_sks dog``. Each image inside is trained ``repeats`` times
per epoch; its caption is the sidecar file (``photo.txt``) or, without one, the folder's tokens
(``sks dog``). A regularisation folder has the same layout (``reg/1_dog``).

:func:`scan_dataset` only reads. Bad files are reported with a reason and left out; layout mistakes are
reported by folder name with the fix; when nothing at all can be trained it raises
:class:`~patina.core.errors.PatinaError` listing why.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from patina.core.dataset.captions import caption_for_image, caption_path, normalize_extension
from patina.core.dataset.images import ImageCheck, is_image_name, probe_image
from patina.core.errors import PatinaError

CONCEPT_FOLDER_RE = re.compile(r"^(\d+)_(.*)$", re.DOTALL)

# With regularisation images every training sample is paired with one reg sample, which doubles the
# steps per epoch (kohya's "reg_factor").
REG_FACTOR = 2

# Caption file extensions other tools write; a dataset captioned with one of them while
# caption_extension names another is reported.
CAPTION_EXTENSIONS = (".txt", ".caption", ".tags", ".cap")


@dataclass
class ImageEntry:
    path: Path
    width: int          # after EXIF orientation
    height: int
    caption: str
    caption_source: str  # "file" (sidecar) or "folder" (the folder's tokens)
    caption_warning: str | None = None
    format: str = ""     # real content format (PNG, JPEG, WEBP, BMP)
    ext_mismatch: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass
class Subset:
    """One ``N_name`` concept folder."""

    path: Path
    name: str           # the folder name, e.g. "10_sks dog"
    repeats: int
    class_tokens: str   # the part after "N_", the fallback caption
    is_reg: bool
    images: list[ImageEntry] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def samples(self) -> int:
        """Samples this folder contributes per epoch (images × repeats)."""
        return len(self.images) * self.repeats


@dataclass
class SkippedFile:
    path: Path
    reason: str


@dataclass
class DatasetScan:
    train_data_dir: Path
    reg_data_dir: Path | None
    caption_extension: str
    subsets: list[Subset] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    folder_problems: list[str] = field(default_factory=list)
    too_small: list[ImageEntry] = field(default_factory=list)
    min_size: int = 256
    captioned: int = 0      # training images (of folders with repeats) that have a caption file
    other_captions: dict = field(default_factory=dict)  # {".txt": n}: images with a caption under another extension

    @property
    def train_subsets(self) -> list[Subset]:
        return [s for s in self.subsets if not s.is_reg]

    @property
    def reg_subsets(self) -> list[Subset]:
        return [s for s in self.subsets if s.is_reg]

    @property
    def images(self) -> list[ImageEntry]:
        return [img for s in self.subsets for img in s.images]

    @property
    def total_images(self) -> int:
        """Usable images in all folders with repeats, training and regularisation."""
        return sum(s.num_images for s in self.subsets if s.repeats > 0)

    @property
    def train_images(self) -> int:
        """Training images that are trained: a folder with 0 repeats is never used, so it is not counted."""
        return sum(s.num_images for s in self.train_subsets if s.repeats > 0)

    @property
    def reg_images(self) -> int:
        return sum(s.num_images for s in self.reg_subsets if s.repeats > 0)

    @property
    def samples_per_epoch(self) -> int:
        """Training samples per epoch: images × repeats summed over the training folders."""
        return sum(s.samples for s in self.train_subsets)

    @property
    def reg_samples_available(self) -> int:
        return sum(s.samples for s in self.reg_subsets)

    @property
    def reg_samples_used(self) -> int:
        """Regularisation samples per epoch. Like kohya, reg images are cycled or cut so that there
        are exactly as many as training samples (none when either side is empty)."""
        if self.reg_samples_available <= 0:
            return 0
        return self.samples_per_epoch

    @property
    def reg_factor(self) -> int:
        return REG_FACTOR if self.reg_samples_used > 0 else 1

    @property
    def total_samples_per_epoch(self) -> int:
        """Samples per epoch including regularisation (training samples × reg factor)."""
        return self.samples_per_epoch + self.reg_samples_used

    @property
    def trainable(self) -> bool:
        return self.samples_per_epoch > 0


def parse_concept_folder(name: str) -> tuple[int, str] | None:
    """``"10_sks dog"`` -> ``(10, "sks dog")``; ``None`` when the name has no ``N_`` prefix."""
    m = CONCEPT_FOLDER_RE.match(name)
    if not m:
        return None
    return int(m.group(1)), m.group(2)


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    # Hidden files and folders (".DS_Store", "._photo.jpg" AppleDouble files, backup folders) are skipped.
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name.lower())


def _listdir(path: Path) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """(subfolders, files) of *path*, hidden ones left out, sorted by name."""
    with os.scandir(path) as it:
        entries = _visible(list(it))
    dirs, files = [], []
    for e in entries:
        try:
            (dirs if e.is_dir() else files).append(e)
        except OSError:
            continue
    return dirs, files


def _image_files(path: Path) -> list[Path]:
    try:
        return [Path(f.path) for f in _listdir(path)[1] if is_image_name(f.name)]
    except OSError:
        return []


def _suggest(name: str) -> str:
    return f"10_{name.strip() or 'name'}"


class _RootScan:
    def __init__(self) -> None:
        self.concepts: list[tuple[Path, int, str]] = []  # (path, repeats, tokens)
        self.problems: list[str] = []
        self.fatal: str | None = None


def _scan_layout(root: Path, label: str) -> _RootScan:
    """Find the concept folders in *root* and describe layout mistakes (no image decoding here)."""
    out = _RootScan()
    if not root.exists():
        raise PatinaError(f"The {label} does not exist: {root}")
    if not root.is_dir():
        raise PatinaError(f"The {label} is a file, not a folder: {root}")
    try:
        dirs, files = _listdir(root)
    except OSError as exc:
        raise PatinaError(f"The {label} cannot be read: {root} ({exc.strerror or exc})") from None
    loose = [f for f in files if is_image_name(f.name)]
    for d in dirs:
        parsed = parse_concept_folder(d.name)
        if parsed is None:
            if _image_files(Path(d.path)):
                out.problems.append(f"`{d.name}` has no repeat prefix, so it is not used; "
                                    f"rename it to e.g. `{_suggest(d.name)}`")
            continue
        out.concepts.append((Path(d.path), parsed[0], parsed[1]))

    if out.concepts:
        if loose:
            out.problems.append(f"{len(loose)} image(s) directly in `{root.name}` are not used: only images inside "
                                f"`N_name` subfolders are read (e.g. move them into `{root / _suggest('name')}`)")
        return out

    # No concept folders: work out which level the user should have picked.
    parent = root.parent
    if parse_concept_folder(root.name) is not None:
        out.fatal = (f"You picked the concept folder `{root.name}` itself. Pick its parent folder instead: "
                     f"{parent}")
    elif loose:
        out.fatal = (f"`{root}` holds images directly, but only `N_name` subfolders are read (N = repeats). "
                     f"Rename `{root.name}` to e.g. `{_suggest(root.name)}` and pick its parent folder {parent}; "
                     f"or move the images into a subfolder such as `{root / _suggest(root.name)}`; "
                     f"or let `patina dataset prepare` build the folders")
    else:
        deeper = []
        for d in dirs:
            try:
                if any(parse_concept_folder(sd.name) for sd in _listdir(Path(d.path))[0]):
                    deeper.append(Path(d.path))
            except OSError:
                continue
        if deeper:
            out.fatal = (f"`{root}` has no `N_name` subfolders, but `{deeper[0]}` does: pick {deeper[0]} instead")
        elif not dirs and not files:
            out.fatal = (f"`{root}` is empty: put your images in a subfolder named like `10_sks dog` (10 = repeats) "
                         f"inside it, or let `patina dataset prepare` (the Dataset tab's folder wizard) build the "
                         "folders from a plain image folder")
        else:
            out.fatal = (f"`{root}` has no `N_name` subfolders (e.g. `10_sks dog`): put the images in such a "
                         f"subfolder, or let `patina dataset prepare` build the folders")
    return out


def scan_dataset(train_data_dir: str | os.PathLike, reg_data_dir: str | os.PathLike | None = None,
                 caption_extension: str = ".txt", *, min_size: int = 256,
                 progress: Callable[[int, int], None] | None = None) -> DatasetScan:
    """Read the image folder (and optional regularisation folder): every concept folder, every image
    decoded once, every caption.

    *min_size* only decides which images are listed in ``too_small``. *progress* is called as
    ``progress(done, total)`` while images are checked (from a worker thread pool, but never
    concurrently). Raises :class:`PatinaError` when a folder is missing or nothing can be trained.
    """
    root = Path(train_data_dir)
    reg_root = Path(reg_data_dir) if reg_data_dir not in (None, "") else None
    ext = normalize_extension(caption_extension)
    scan = DatasetScan(root, reg_root, ext, min_size=int(min_size))

    layouts = [(_scan_layout(root, "image folder"), False)]
    if reg_root is not None:
        if _same_path(root, reg_root):
            raise PatinaError(f"The regularisation folder is the same as the image folder: {root}")
        layouts.append((_scan_layout(reg_root, "regularisation folder"), True))

    # Gather every image of every concept folder, then decode them all at once (in parallel).
    pending: list[tuple[Subset, list[Path]]] = []
    for layout, is_reg in layouts:
        prefix = "regularisation: " if is_reg else ""
        scan.folder_problems.extend(prefix + p for p in layout.problems)
        if layout.fatal and is_reg:
            scan.folder_problems.append(prefix + layout.fatal + " (regularisation images are not used)")
        for path, repeats, tokens in layout.concepts:
            subset = Subset(path, path.name, repeats, tokens.strip(), is_reg)
            try:
                dirs, files = _listdir(path)
            except OSError as exc:
                scan.folder_problems.append(f"{prefix}`{path.name}` cannot be read ({exc.strerror or exc})")
                continue
            images = [Path(f.path) for f in files if is_image_name(f.name)]
            nested = [d.name for d in dirs if _image_files(Path(d.path))]
            if nested:
                scan.folder_problems.append(
                    f"{prefix}images in subfolder(s) {', '.join(f'`{path.name}/{n}`' for n in nested)} are not "
                    f"used (subfolders are not read); move them up into `{path.name}`")
            if not images:
                scan.folder_problems.append(f"{prefix}`{path.name}` has no images (PNG, JPEG, WebP or BMP)")
            elif repeats == 0:
                scan.folder_problems.append(
                    f"{prefix}`{path.name}` has 0 repeats, so its {len(images)} image(s) are never used; "
                    f"rename it to e.g. `{_suggest(tokens)}`")
            elif not tokens.strip():
                scan.folder_problems.append(
                    f"{prefix}`{path.name}` has no name after the repeat count; images without a caption "
                    f"file get an empty caption")
            scan.subsets.append(subset)
            pending.append((subset, images, {f.name for f in files}))

    all_paths = [p for _, images, _ in pending for p in images]
    checks = _probe_all(all_paths, progress)
    for subset, images, names in pending:
        for path in images:
            check = checks[path]
            if not check.ok:
                scan.skipped.append(SkippedFile(path, check.reason))
                continue
            text, source, warning = caption_for_image(path, ext, subset.class_tokens)
            entry = ImageEntry(path, check.width, check.height, text, source, warning, check.format,
                               check.ext_mismatch)
            subset.images.append(entry)
            if entry.width < scan.min_size or entry.height < scan.min_size:
                scan.too_small.append(entry)
            if subset.is_reg or subset.repeats <= 0:
                continue
            if caption_path(path, ext).name in names:
                scan.captioned += 1
            else:
                other = next((e for e in CAPTION_EXTENSIONS if e != ext and path.stem + e in names), None)
                if other:
                    scan.other_captions[other] = scan.other_captions.get(other, 0) + 1
    if scan.train_images and not scan.captioned and scan.other_captions:
        other, n = max(scan.other_captions.items(), key=lambda kv: kv[1])
        scan.folder_problems.append(
            f"no training image has a `{ext}` caption file, but {n} have a `{other}` file: set the caption "
            f"extension (caption_extension) to {other}, or every image is captioned with its folder name")

    if not scan.trainable:
        if layouts[0][0].fatal:
            message = layouts[0][0].fatal
        elif any(s.images for s in scan.train_subsets) and not any(s.repeats for s in scan.train_subsets
                                                                    if s.images):
            message = f"Nothing to train in {root}: every folder with images has 0 repeats"
        elif scan.skipped and not scan.train_images:
            message = f"Nothing to train in {root}: no image could be read"
        else:
            message = f"Nothing to train in {root}"
        problems = list(scan.folder_problems)
        problems += [f"{s.path}: {s.reason}" for s in scan.skipped[:20]]
        if len(scan.skipped) > 20:
            problems.append(f"... and {len(scan.skipped) - 20} more unreadable files")
        raise PatinaError(message, problems=problems)
    return scan


def _probe_all(paths: list[Path], progress: Callable[[int, int], None] | None) -> dict[Path, ImageCheck]:
    total = len(paths)
    results: dict[Path, ImageCheck] = {}
    if progress:
        progress(0, total)
    if total == 0:
        return results
    workers = max(1, min(8, os.cpu_count() or 1, math.ceil(total / 4)))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes outside the GIL
        for done, check in enumerate(pool.map(probe_image, paths), 1):
            results[check.path] = check
            if progress:
                progress(done, total)
    return results


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
