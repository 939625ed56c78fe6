"""The folder wizard: build a kohya-style training folder from a plain folder of images.

::

    <dest>/img/<repeats>_<instance> <class>/   copies of the images and their caption files
    <dest>/reg/<reg repeats>_<class>/          copies of the regularisation images (optional)
    <dest>/log/
    <dest>/model/

Sources are only ever read. Each concept folder is copied into a temporary folder next to its target
and then swapped in, so running the wizard again gives the same result with no duplicates; if the
folder being replaced held files that the new copy does not (a caption edited there, say), it is kept
under ``<dest>/backup/`` instead of being deleted.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from patina.core.atomic import new_dir_mode, new_file_mode
from patina.core.dataset.folders import parse_concept_folder
from patina.core.dataset.images import is_image_name, probe_image
from patina.core.errors import PatinaError

# Sidecars that are caches, not user data: rebuilt by training, not worth copying.
_SKIPPED_SIDECARS = (".npz",)
_BAD_NAME_CHARS = set('<>:"/\\|?*')


@dataclass
class PreparedFolders:
    img_dir: Path                 # -> the "Image folder" field
    reg_dir: Path | None          # -> the "Regularisation folder" field (None when not made)
    log_dir: Path                 # -> the "Logging folder" field
    model_dir: Path               # -> the "Output folder" field
    copied: int                   # training images copied
    concept_dir: Path | None = None
    reg_concept_dir: Path | None = None
    reg_copied: int = 0
    sidecars_copied: int = 0      # caption (and other same-name) files copied, training and reg
    backups: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images, not copied


def prepare_folders(instance_prompt: str, class_prompt: str, images_dir: str | os.PathLike, repeats: int,
                    dest_dir: str | os.PathLike, reg_images_dir: str | os.PathLike | None = None,
                    reg_repeats: int = 1) -> PreparedFolders:
    """Create the training folder layout under *dest_dir* and copy the images into it.

    Raises :class:`PatinaError` (before changing anything) for a missing field, a bad repeat count,
    a missing source, a prompt that cannot be part of a folder name, or source and destination that
    are the same folder or nested in either direction.
    """
    instance = (instance_prompt or "").strip()
    klass = (class_prompt or "").strip()
    missing = [label for label, value in (("instance prompt", instance), ("class prompt", klass),
                                          ("training images folder", _text(images_dir)),
                                          ("destination folder", _text(dest_dir))) if not value]
    if missing:
        raise PatinaError("Fill in the " + ", ".join(missing) + ".")
    _check_name_part(instance, "instance prompt")
    _check_name_part(klass, "class prompt")
    n = _as_int(repeats, "Repeats", minimum=1)
    use_reg = bool(_text(reg_images_dir))
    reg_n = _as_int(reg_repeats, "Regularisation repeats", minimum=0) if use_reg else 0

    src = _existing_dir(images_dir, "training images folder")
    reg_src = _existing_dir(reg_images_dir, "regularisation images folder") if use_reg and reg_n > 0 else None
    dest = Path(_text(dest_dir)).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise PatinaError(f"The destination is a file, not a folder: {dest}")
    _check_pair(src, dest, "training images folder")
    if reg_src is not None:
        _check_pair(reg_src, dest, "regularisation images folder")
        if reg_src == src:
            raise PatinaError(f"The regularisation images folder is the training images folder: {src}. "
                              "Regularisation images are generic pictures of the class, kept apart.")

    img_dir, log_dir, model_dir = dest / "img", dest / "log", dest / "model"
    concept = img_dir / f"{n}_{instance} {klass}"
    reg_dir = dest / "reg" if reg_src is not None else None
    reg_concept = reg_dir / f"{reg_n}_{klass}" if reg_dir is not None else None

    plan = [(src, concept, _collect(src, "training images folder"))]
    early_notes = []
    if use_reg and reg_n == 0:
        early_notes.append("Regularisation repeats is 0, so no regularisation folder was made")
    if reg_src is not None:
        plan.append((reg_src, reg_concept, _collect(reg_src, "regularisation images folder")))

    result = PreparedFolders(img_dir, reg_dir, log_dir, model_dir, copied=0, concept_dir=concept,
                             reg_concept_dir=reg_concept, notes=early_notes)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for source, target, (images, sidecars, nested, skipped) in plan:
        result.skipped.extend(skipped)
        for path, reason in skipped:
            result.notes.append(f"{path} was not copied: {reason}")
        if nested:
            result.notes.append(f"{nested} image(s) in subfolders of {source} were not copied "
                                "(only the images directly inside it are)")
        backup = _copy_swap(source, target, images + sidecars, dest / "backup" / stamp / target.parent.name)
        if backup is not None:
            result.backups.append(backup)
            result.notes.append(f"{target} already held files that differ from the new copy; "
                                f"the old folder was kept at {backup}")
        if target == concept:
            result.copied = len(images)
        else:
            result.reg_copied = len(images)
        result.sidecars_copied += len(sidecars)
        result.notes.extend(_sibling_notes(target))
    log_dir.mkdir(parents=True, exist_ok=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    return result


def _text(value) -> str:
    return str(value).strip() if value not in (None, "") else ""


def _check_name_part(text: str, label: str) -> None:
    bad = sorted({c for c in text if c in _BAD_NAME_CHARS or ord(c) < 32})
    if bad:
        shown = " ".join(repr(c)[1:-1] for c in bad)
        raise PatinaError(f"The {label} {text!r} cannot be part of a folder name: remove {shown}")
    if text.endswith("."):
        raise PatinaError(f"The {label} {text!r} cannot end with a dot (Windows drops it from folder names)")


def _as_int(value, label: str, minimum: int) -> int:
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        number = int(value.strip())
    if number is None:
        raise PatinaError(f"{label} must be a whole number; got {value!r}")
    if number < minimum:
        raise PatinaError(f"{label} must be at least {minimum}; got {number}")
    return number


def _existing_dir(value, label: str) -> Path:
    path = Path(_text(value)).expanduser()
    if not path.exists():
        raise PatinaError(f"The {label} does not exist: {path}")
    if not path.is_dir():
        raise PatinaError(f"The {label} is a file, not a folder: {path}")
    return path.resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and child.is_relative_to(parent)


def _check_pair(src: Path, dest: Path, label: str) -> None:
    if src == dest:
        raise PatinaError(f"The {label} and the destination are the same folder: {src}. "
                          "Pick a new, separate destination folder.")
    if _inside(dest, src):
        raise PatinaError(f"The destination {dest} is inside the {label} {src}. "
                          "Copying a folder into itself is refused; pick a destination outside it.")
    if _inside(src, dest):
        raise PatinaError(f"The {label} {src} is inside the destination {dest}, where the wizard replaces "
                          "folders. Keep the source images outside the destination folder.")


def _collect(src: Path, label: str) -> tuple[list[Path], list[Path], int, list[tuple[Path, str]]]:
    """(images, sidecar files, images in subfolders, unreadable images with the reason) of *src*, hidden
    files left out. Images that cannot be decoded (truncated, empty, not an image) and their caption files
    are not copied."""
    images: list[Path] = []
    others: list[Path] = []
    nested = 0
    with os.scandir(src) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for e in entries:
        if e.is_dir():
            nested += sum(1 for _root, _dirs, files in os.walk(e.path) for f in files if is_image_name(f))
        elif e.is_file():
            (images if is_image_name(e.name) else others).append(Path(e.path))
    if not images:
        raise PatinaError(f"The {label} has no images (PNG, JPEG, WebP or BMP): {src}")
    checks = [probe_image(p) for p in images]
    skipped = [(c.path, c.reason) for c in checks if not c.ok]
    images = [c.path for c in checks if c.ok]
    if not images:
        raise PatinaError(f"No image in the {label} {src} can be read, so nothing was copied:",
                          problems=[f"{p.name}: {why}" for p, why in skipped[:20]])
    stems = {p.stem for p in images}
    sidecars = [p for p in others if _belongs(p.name, stems) and not p.name.lower().endswith(_SKIPPED_SIDECARS)]
    return images, sidecars, nested, skipped


def _belongs(name: str, stems: set[str]) -> bool:
    """True when *name* is ``<stem>.<anything>`` for an image stem (``a.txt``, ``a.wd14.txt``)."""
    dot = name.find(".")
    while dot > 0:
        if name[:dot] in stems:
            return True
        dot = name.find(".", dot + 1)
    return False


def _copy_swap(source: Path, target: Path, files: list[Path], backup_parent: Path) -> Path | None:
    """Copy *files* into a fresh folder next to *target*, then swap it in. Returns where the replaced
    folder was kept, or None when it was identical (or there was none) and was removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise PatinaError(f"{target} exists and is a file; move it away and try again")
    if target.is_symlink():
        raise PatinaError(f"{target} is a link to another folder; remove the link and try again")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.patina-new-", dir=target.parent))
    try:
        # mkdtemp makes a private (0700) folder; the training folder is an ordinary one (umask), and so
        # are the copies, whatever the source's permissions
        os.chmod(tmp, new_dir_mode())
        file_mode = new_file_mode()
        for f in files:
            shutil.copy2(f, tmp / f.name)
            os.chmod(tmp / f.name, file_mode)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PatinaError(f"Copying from {source} failed: {exc}. Nothing was changed in {target.parent}.") from None
    if not target.exists():
        os.replace(tmp, target)
        return None
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.patina-old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(tmp, target)
    old_tree = old / target.name
    if _covered_by(old_tree, target):
        shutil.rmtree(old)
        return None
    backup = backup_parent / target.name
    suffix = 1
    while backup.exists():
        suffix += 1
        backup = backup_parent / f"{target.name} ({suffix})"
    backup.parent.mkdir(parents=True, exist_ok=True)
    os.replace(old_tree, backup)
    shutil.rmtree(old, ignore_errors=True)
    return backup


def _covered_by(old: Path, new: Path) -> bool:
    """True when every file under *old* also exists under *new* with the same bytes."""
    for root, _dirs, files in os.walk(old):
        for name in files:
            rel = Path(root, name).relative_to(old)
            other = new / rel
            if not other.is_file() or not filecmp.cmp(Path(root, name), other, shallow=False):
                return False
    return True


def _sibling_notes(target: Path) -> list[str]:
    """Warn about other concept folders with the same name but other repeats (an earlier run)."""
    mine = parse_concept_folder(target.name)
    notes = []
    try:
        siblings = sorted(p for p in target.parent.iterdir() if p.is_dir() and p != target)
    except OSError:
        return notes
    for p in siblings:
        other = parse_concept_folder(p.name)
        if other and mine and other[1] == mine[1]:
            notes.append(f"{p} is also there (repeats {other[0]}), probably from an earlier run; both folders "
                         f"will be trained — delete the one you do not want")
    return notes
