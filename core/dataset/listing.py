"""Listing a kohya dataset folder for browsing: the concept folders (``<repeats>_<name>``) directly in
the image folder and the images in each, by name. Only names are read (``os.scandir``); captions and image
checks are filled in later by whoever shows the list. Nothing here writes a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from patina.core.dataset.captions import caption_path, normalize_extension
from patina.core.dataset.folders import parse_concept_folder
from patina.core.dataset.images import ImageCheck, is_image_name


@dataclass
class ImageItem:
    path: Path
    folder: str                   # the concept folder's name, e.g. "10_sks dog"
    tokens: str                   # the folder's caption tokens ("sks dog"), used when there is no caption
    caption_file: Path
    has_caption: bool
    caption: str | None = None    # caption text; None until read (the background pass reads it)
    caption_warning: str | None = None
    check: ImageCheck | None = None  # None until the background check has decoded the image

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def rejected(self) -> bool:
        return self.check is not None and not self.check.ok

    @property
    def reason(self) -> str:
        return self.check.reason if self.rejected else ""


@dataclass
class ConceptFolder:
    path: Path
    name: str
    repeats: int
    tokens: str
    count: int = 0


def _visible_entries(path: Path) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    entries.sort(key=lambda e: e.name.lower())
    return entries


def list_dataset(root: str | os.PathLike, caption_extension: str) -> tuple[list[ConceptFolder], list[ImageItem]]:
    """The concept folders (``N_name``) directly in *root* and the images in each, by name.

    Only names are read. Raises ``OSError`` when *root* cannot be listed.
    """
    ext = normalize_extension(caption_extension)
    folders: list[ConceptFolder] = []
    items: list[ImageItem] = []
    for entry in _visible_entries(Path(root)):
        parsed = parse_concept_folder(entry.name)
        try:
            if parsed is None or not entry.is_dir():
                continue
        except OSError:
            continue
        folder = ConceptFolder(Path(entry.path), entry.name, parsed[0], parsed[1].strip())
        try:
            files = _visible_entries(folder.path)
        except OSError:
            folders.append(folder)
            continue
        names = {os.path.normcase(f.name) for f in files}
        for f in files:
            if not is_image_name(f.name):
                continue
            try:
                if not f.is_file():
                    continue
            except OSError:
                continue
            img = Path(f.path)
            cap = caption_path(img, ext)
            items.append(ImageItem(img, folder.name, folder.tokens, cap, os.path.normcase(cap.name) in names))
            folder.count += 1
        folders.append(folder)
    return folders, items
