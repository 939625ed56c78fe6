"""The demo's LoRA dataset: a few renders of the demo concept with trigger-word captions, in kohya layout,
and regularisation images of the shapes the model already knows.

``write_concept_dataset(root)`` writes ``root/img/20_zorbo shape/zorbo_NN.png`` with a ``.txt`` caption
beside each image (``a red zorbo shape on a striped blue background``): the concept in several colours
on several backgrounds, so the LoRA has to learn the shape rather than a colour or a background.
``write_reg_dataset(root)`` writes ``root/reg/1_shape/shape_NN.png``: the shapes the model already knows, in
the colours and on the backgrounds of the concept pictures (two per picture), so that training keeps the other
shapes as they were (prior preservation) and learns that the trigger word, not a colour or a background, means
the new shape — the part DreamBooth's class images play. The quality report's own class prompts are never
among them, so the report still measures scenes the LoRA was not shown.
The shipped copy lives in ``resources/demo/``; regenerate it with ``python -m patina.core.demo.dataset DIR``.
"""

from __future__ import annotations

import argparse
import os
import random
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
REG_PER_PICTURE = 2


def _write(stem: Path, image, caption: str) -> None:
    tmp = stem.with_name(stem.name + ".tmp.png")
    image.save(tmp, optimize=True)
    os.replace(tmp, stem.with_suffix(".png"))
    cap_tmp = stem.with_name(stem.name + ".txt.tmp")
    cap_tmp.write_text(caption + "\n", encoding="utf-8")
    os.replace(cap_tmp, stem.with_suffix(".txt"))


def _report_class_scenes() -> set[tuple[str, str, str]]:
    """(shape, colour, background) of the demo's quality-report prompts: kept out of the training pictures."""
    from .setup import QUALITY_PROMPTS

    found = (world.parse_caption(line.split(" --")[0]) for line in QUALITY_PROMPTS.splitlines())
    return {(p["shape"], p["colour"], p["background"]) for p in found if p}


def reg_scenes(per_picture: int = REG_PER_PICTURE, seed: int = REG_SEED) -> list[world.Scene]:
    """For each concept picture, *per_picture* known shapes in its colour on its background (not a report prompt)."""
    avoid = _report_class_scenes()
    rng = random.Random(seed)
    scenes = []
    for c in concept_scenes():
        shapes = [s for s in world.SHAPES if (s, c.colour, c.background) not in avoid]
        for shape in rng.sample(shapes, per_picture):
            scenes.append(world.make_scene(rng, shape, c.colour, c.background))
    return scenes


def write_reg_dataset(root: str | os.PathLike, per_picture: int = REG_PER_PICTURE, seed: int = REG_SEED) -> Path:
    """Write the regularisation pictures (:func:`reg_scenes`) under ``root/reg/1_shape`` and return the folder."""
    folder = Path(root) / "reg" / REG_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(reg_scenes(per_picture, seed)):
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
