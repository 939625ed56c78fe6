"""The demo's LoRA dataset: a few renders of the demo concept with trigger-word captions, in kohya layout,
and regularisation images of the shapes the model already knows.

``write_concept_dataset(root)`` writes ``root/img/20_zorbo shape/zorbo_NN.png`` with a ``.txt`` caption
beside each image (``a red zorbo shape on a striped blue background``): the concept in several colours
on several backgrounds, so the LoRA has to learn the shape rather than a colour or a background.
``write_reg_dataset(root)`` writes ``root/reg/1_shape/shape_NN.png``: renders of the pretraining world with
their captions, so that training keeps the other shapes as they were (prior preservation).
The shipped copy lives in ``resources/demo/``; regenerate it with ``python -m patina.core.demo.dataset DIR``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import world

REPEATS = 20
FOLDER = f"{REPEATS}_{world.TRIGGER} shape"
SEED = 2024


def concept_scenes(n: int = 8, seed: int = SEED) -> list[world.Scene]:
    """*n* concept scenes, no colour used more than ⌈n/6⌉ times and no background twice (while they last)."""
    picked: list[world.Scene] = []
    colours: dict[str, int] = {}
    backgrounds: set[str] = set()
    limit = -(-n // len(world.COLOURS))
    i = 0
    while len(picked) < n:
        s = world.concept_scene_at(seed, i)
        i += 1
        fresh_bg = s.background not in backgrounds or len(backgrounds) >= len(world.BACKGROUNDS)
        if colours.get(s.colour, 0) < limit and fresh_bg:
            picked.append(s)
            colours[s.colour] = colours.get(s.colour, 0) + 1
            backgrounds.add(s.background)
    return picked


def write_concept_dataset(root: str | os.PathLike, n: int = 8, seed: int = SEED) -> Path:
    """Write the concept dataset under *root* and return the image folder."""
    folder = Path(root) / "img" / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(concept_scenes(n, seed)):
        stem = folder / f"{world.TRIGGER}_{k:02d}"
        tmp = stem.with_name(stem.name + ".tmp.png")
        world.render(s).save(tmp, optimize=True)
        os.replace(tmp, stem.with_suffix(".png"))
        cap = stem.with_suffix(".txt")
        cap_tmp = stem.with_name(stem.name + ".txt.tmp")
        cap_tmp.write_text(s.caption + "\n", encoding="utf-8")
        os.replace(cap_tmp, cap)
    return folder


REG_FOLDER = "1_shape"
REG_SEED = 555


def _write(stem: Path, image, caption: str) -> None:
    tmp = stem.with_name(stem.name + ".tmp.png")
    image.save(tmp, optimize=True)
    os.replace(tmp, stem.with_suffix(".png"))
    cap_tmp = stem.with_name(stem.name + ".txt.tmp")
    cap_tmp.write_text(caption + "\n", encoding="utf-8")
    os.replace(cap_tmp, stem.with_suffix(".txt"))


def write_reg_dataset(root: str | os.PathLike, n: int = 16, seed: int = REG_SEED) -> Path:
    """Write *n* regularisation renders of pretraining scenes under ``root/reg/1_shape`` and return the folder."""
    folder = Path(root) / "reg" / REG_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        s = world.scene_at(seed, k)
        _write(folder / f"shape_{k:02d}", world.render(s), s.caption)
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write the demo concept's LoRA dataset (kohya layout).")
    ap.add_argument("root", type=Path, help="folder that receives img/")
    ap.add_argument("-n", type=int, default=8)
    args = ap.parse_args(argv)
    print(write_concept_dataset(args.root, args.n))
    print(write_reg_dataset(args.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
