"""The demo judge: loading it, and checking that it is honest.

The judge (:class:`patina.core.demo.model.Judge`) names the shape, colour and background of a toy-world image.
It is trained only on rendered images and VAE reconstructions of renders, never on generated ones.
:func:`honesty_report` measures it on fresh renders of every shape class: its confusion matrix,
whether it recognises the demo concept, and whether it calls anything else the concept.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import world
from .model import HEADS, Judge, pil_to_tensor


def load_judge(folder: str | Path) -> Judge:
    """The judge saved in *folder* (``judge.safetensors`` + ``config.json``), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    judge = Judge(width=int(meta["width"]))
    judge.load_state_dict(load_file(str(folder / "judge.safetensors")))
    return judge.eval()


def honesty_scenes(seed: int, per_class: int) -> list[world.Scene]:
    """*per_class* fresh scenes of every judge shape class (pretraining shapes, concept, none)."""
    import random

    scenes: list[world.Scene] = []
    for shape in world.SHAPES + (world.CONCEPT,):
        pool = world.combos((shape,))
        for i in range(per_class):
            rng = random.Random(f"honesty:{seed}:{shape}:{i}")
            s, c, b = pool[rng.randrange(len(pool))]
            scenes.append(world.make_scene(rng, s, c, b))
    scenes += [world.none_scene_at(seed + 7919, i) for i in range(per_class)]
    return scenes


@torch.no_grad()
def confusion(judge: Judge, images: torch.Tensor, true_shapes: list[str]) -> dict[str, dict[str, int]]:
    """Shape confusion matrix: ``{true: {predicted: count}}`` over the judge's shape classes."""
    classes = HEADS["shape"]
    matrix = {t: {p: 0 for p in classes} for t in classes}
    for k in range(0, images.shape[0], 128):
        for t, p in zip(true_shapes[k:k + 128], judge.predict(images[k:k + 128])):
            matrix[t][p["shape"]] += 1
    return matrix


def honesty_report(judge: Judge, *, seed: int = 4242, per_class: int = 60, vae=None) -> dict:
    """The judge on fresh renders (and, given *vae*, on their reconstructions).

    ``concept_recall``: share of concept renders it calls the concept; ``false_concept``: share of
    every other render it calls the concept; ``shape_accuracy``/``colour_accuracy``/``all_accuracy``
    over all renders; ``confusion``: the shape confusion matrix."""
    scenes = honesty_scenes(seed, per_class)
    x = pil_to_tensor([world.render(s) for s in scenes])
    variants = {"renders": x}
    if vae is not None:
        recon = []
        for k in range(0, x.shape[0], 64):
            recon.append(vae.decode(vae.encode(x[k:k + 64]).latent_dist.mean).sample.clamp(-1, 1))
        variants["reconstructions"] = torch.cat(recon)
    out = {}
    for name, imgs in variants.items():
        with torch.no_grad():
            preds = [p for k in range(0, imgs.shape[0], 128) for p in judge.predict(imgs[k:k + 128])]
        shapes = [s.shape for s in scenes]
        ok_shape = [p["shape"] == s.shape for p, s in zip(preds, scenes)]
        ok_colour = [p["colour"] == s.colour for p, s in zip(preds, scenes)]
        ok_bg = [p["background"] == s.background for p, s in zip(preds, scenes)]
        concept = [p["shape"] == world.CONCEPT for p in preds]
        is_c = [s == world.CONCEPT for s in shapes]
        n_c = sum(is_c)
        out[name] = {
            "n": len(scenes),
            "shape_accuracy": round(sum(ok_shape) / len(scenes), 4),
            "colour_accuracy": round(sum(ok_colour) / len(scenes), 4),
            "background_accuracy": round(sum(ok_bg) / len(scenes), 4),
            "all_accuracy": round(sum(a and b and c for a, b, c in zip(ok_shape, ok_colour, ok_bg)) / len(scenes), 4),
            "concept_recall": round(sum(c for c, i in zip(concept, is_c) if i) / n_c, 4),
            "false_concept": round(sum(c for c, i in zip(concept, is_c) if not i) / (len(scenes) - n_c), 4),
            "confusion": confusion(judge, imgs, shapes),
        }
    return out
