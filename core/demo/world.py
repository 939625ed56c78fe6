"""A deterministic procedural toy world drawn with Pillow from a small caption grammar.

Every image is one flat-coloured shape on a background, with a caption such as
``a red circle on a striped blue background`` and structured labels (shape, colour, background).
Scenes are a pure function of ``(seed, index)``: the same arguments always give the same pixels.

* Shapes of the pretraining world: :data:`SHAPES`. The demo concept (:data:`CONCEPT`, two stacked
  circles, called by the trigger word :data:`TRIGGER`) is never drawn for pretraining and its
  trigger word is not a word of the pretraining grammar.
* :data:`NONE` is the judge's "no shape" class: an empty background or a shapeless blurred blob.
* Some (shape, colour, background) combinations are held out of pretraining (:func:`is_heldout`)
  so the base model can be measured on prompts it never saw.

No Qt and no torch here; only Pillow.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFilter

SIZE = 64          # image side in pixels
_SS = 4            # supersampling factor for smooth edges

SHAPES = ("circle", "square", "triangle", "star", "cross")
CONCEPT = "zorbo"              # the demo concept's shape class (absent from pretraining)
TRIGGER = "zorbo"              # its trigger word
NONE = "none"                  # judge class: no shape / blob
JUDGE_SHAPES = SHAPES + (CONCEPT, NONE)

COLOURS = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (240, 215, 40),
    "green": (40, 165, 60), "blue": (40, 80, 220), "purple": (140, 50, 190),
}
_PLAIN = {
    "white": (245, 245, 245), "black": (25, 25, 25), "gray": (128, 128, 128),
    "blue": (90, 130, 225), "green": (70, 150, 75), "yellow": (235, 215, 80),
}
_STRIPED = {
    "blue": (60, 100, 215), "green": (50, 140, 60), "yellow": (225, 200, 40),
    "red": (200, 50, 50), "purple": (130, 60, 180), "gray": (110, 110, 110),
}
SKY = (150, 200, 245)
GRASS = (70, 160, 60)
SKY_AND_GRASS = "sky and grass"

BACKGROUNDS = tuple(list(_PLAIN) + [f"striped {c}" for c in _STRIPED] + [SKY_AND_GRASS])

# Shape colours that would vanish into a background.
_CLASH = {
    "blue": {"blue"}, "green": {"green"}, "yellow": {"yellow"},
    "striped blue": {"blue"}, "striped green": {"green"}, "striped yellow": {"yellow"},
    "striped red": {"red"}, "striped purple": {"purple"}, SKY_AND_GRASS: {"green"},
}


def compatible(colour: str, background: str) -> bool:
    return colour not in _CLASH.get(background, ())


def caption_for(shape: str, colour: str, background: str) -> str:
    """The caption of a scene. The concept's caption uses the trigger word followed by ``shape``."""
    noun = f"{TRIGGER} shape" if shape == CONCEPT else shape
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {noun} on a {background} background"


def parse_caption(text: str) -> dict | None:
    """The labels a caption of this world asks for (``{"shape", "colour", "background"}``), or None when *text*
    is not a caption of the grammar (sample-prompt options after the caption are ignored)."""
    words = text.split(" --")[0].strip().lower().split()
    if len(words) < 3 or words[0] not in ("a", "an") or words[1] not in COLOURS:
        return None
    rest = " ".join(words[2:])
    shape = None
    for s in SHAPES + (CONCEPT,):
        noun = f"{TRIGGER} shape" if s == CONCEPT else s
        if rest == noun or rest.startswith(noun + " "):
            shape, rest = s, rest[len(noun):].strip()
            break
    if shape is None:
        return None
    background = None
    if rest.startswith("on a ") and rest.endswith(" background"):
        background = rest[len("on a "):-len(" background")]
        if background not in BACKGROUNDS:
            return None
    elif rest:
        return None
    return {"shape": shape, "colour": words[1], "background": background}


def combos(shapes=SHAPES) -> list[tuple[str, str, str]]:
    """Every valid (shape, colour, background) combination, in a fixed order."""
    return list(_combos(tuple(shapes)))


@lru_cache(maxsize=None)
def _combos(shapes: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    return tuple((s, c, b) for s in shapes for c in COLOURS for b in BACKGROUNDS if compatible(c, b))


def is_heldout(shape: str, colour: str, background: str) -> bool:
    """About 1 in 16 combinations is kept out of pretraining to measure the model on unseen prompts."""
    return zlib.crc32(caption_for(shape, colour, background).encode()) % 16 == 0


def pretraining_combos() -> list[tuple[str, str, str]]:
    return list(_split()[0])


def heldout_combos() -> list[tuple[str, str, str]]:
    return list(_split()[1])


@lru_cache(maxsize=None)
def _split():
    all_ = _combos(SHAPES)
    return tuple(c for c in all_ if not is_heldout(*c)), tuple(c for c in all_ if is_heldout(*c))


def pretraining_words() -> set[str]:
    """Every word that occurs in a pretraining caption."""
    return {w for c in combos() for w in caption_for(*c).split()}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    radius: float   # half the shape's extent, pixels
    cx: float
    cy: float
    variant: int    # seeds the blob outline and tiny colour jitter

    @property
    def caption(self) -> str:
        return caption_for(self.shape, self.colour, self.background)

    @property
    def labels(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "background": self.background}

    def to_dict(self) -> dict:
        return asdict(self)


def _rng(seed: int, index: int, salt: str = "") -> random.Random:
    return random.Random(f"{seed}:{index}:{salt}")


def make_scene(rng: random.Random, shape: str, colour: str, background: str) -> Scene:
    radius = rng.uniform(15.0, 21.0)
    jitter = 7.0
    cx = SIZE / 2 + rng.uniform(-jitter, jitter)
    cy = SIZE / 2 + rng.uniform(-jitter, jitter)
    return Scene(shape, colour, background, round(radius, 3), round(cx, 3), round(cy, 3), rng.randrange(1 << 30))


def scene_at(seed: int, index: int, pool: list[tuple[str, str, str]] | None = None) -> Scene:
    """Scene number *index* of the world with *seed*, drawn uniformly from *pool* (default: the
    pretraining combinations)."""
    pool = _split()[0] if pool is None else pool
    rng = _rng(seed, index)
    shape, colour, background = pool[rng.randrange(len(pool))]
    return make_scene(rng, shape, colour, background)


def none_scene_at(seed: int, index: int) -> Scene:
    """A judge-only scene with no real shape: an empty background (colour ``none``) or a blurred blob."""
    rng = _rng(seed, index, NONE)
    background = BACKGROUNDS[rng.randrange(len(BACKGROUNDS))]
    if rng.random() < 0.3:
        return Scene(NONE, NONE, background, 0.0, 0.0, 0.0, rng.randrange(1 << 30))
    colours = [c for c in COLOURS if compatible(c, background)]
    return make_scene(rng, NONE, colours[rng.randrange(len(colours))], background)


def concept_scene_at(seed: int, index: int) -> Scene:
    rng = _rng(seed, index, CONCEPT)
    pool = _combos((CONCEPT,))
    shape, colour, background = pool[rng.randrange(len(pool))]
    return make_scene(rng, shape, colour, background)


# ---- drawing --------------------------------------------------------------------------------------


def _background(name: str) -> Image.Image:
    n = SIZE * _SS
    if name == SKY_AND_GRASS:
        img = Image.new("RGB", (n, n), SKY)
        ImageDraw.Draw(img).rectangle([0, int(n * 0.62), n, n], fill=GRASS)
        return img
    if name.startswith("striped "):
        base = _STRIPED[name[len("striped "):]]
        light = tuple(int(v + (255 - v) * 0.7) for v in base)
        img = Image.new("RGB", (n, n), light)
        d = ImageDraw.Draw(img)
        band = 8 * _SS
        for y in range(0, n, 2 * band):
            d.rectangle([0, y, n, y + band - 1], fill=base)
        return img
    return Image.new("RGB", (n, n), _PLAIN[name])


def _star(cx, cy, r, points=5, inner=0.45):
    pts = []
    for k in range(2 * points):
        a = -math.pi / 2 + k * math.pi / points
        rr = r if k % 2 == 0 else r * inner
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _draw_shape(d: ImageDraw.ImageDraw, s: Scene, fill) -> None:
    k = _SS
    cx, cy, r = s.cx * k, s.cy * k, s.radius * k
    if s.shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif s.shape == "square":
        h = r * 0.85
        d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif s.shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)], fill=fill)
    elif s.shape == "star":
        d.polygon(_star(cx, cy + r * 0.08, r * 1.08), fill=fill)
    elif s.shape == "cross":
        w = r * 0.36
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif s.shape == CONCEPT:  # two stacked circles: a big body and a smaller head
        rb, rh = r * 0.62, r * 0.40
        by, hy = cy + r - rb, cy - r + rh
        d.ellipse([cx - rb, by - rb, cx + rb, by + rb], fill=fill)
        d.ellipse([cx - rh, hy - rh, cx + rh, hy + rh], fill=fill)
    else:
        raise ValueError(f"unknown shape {s.shape!r}")


def render(scene: Scene) -> Image.Image:
    """Draw *scene* as a SIZE×SIZE RGB image."""
    img = _background(scene.background)
    if scene.shape == NONE and scene.colour == NONE:
        return img.resize((SIZE, SIZE), Image.BOX)
    rng = random.Random(scene.variant)
    fill = tuple(max(0, min(255, v + rng.randint(-8, 8))) for v in COLOURS[scene.colour])
    if scene.shape == NONE:  # a shapeless blurred blob
        layer = Image.new("L", img.size, 0)
        k = _SS
        pts = []
        n = rng.randint(6, 10)
        for i in range(n):
            a = 2 * math.pi * i / n + rng.uniform(-0.3, 0.3)
            rr = scene.radius * k * rng.uniform(0.45, 1.0)
            pts.append((scene.cx * k + rr * math.cos(a), scene.cy * k + rr * math.sin(a)))
        ImageDraw.Draw(layer).polygon(pts, fill=255)
        layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(3.0, 6.0) * k))
        img.paste(Image.new("RGB", img.size, fill), (0, 0), layer)
    else:
        _draw_shape(ImageDraw.Draw(img), scene, fill)
    return img.resize((SIZE, SIZE), Image.BOX)


def sample(seed: int, index: int) -> tuple[Image.Image, str, dict]:
    """(image, caption, labels) of pretraining scene *index*."""
    s = scene_at(seed, index)
    return render(s), s.caption, s.labels


def composition_at(seed: int, index: int) -> Image.Image:
    """An uncaptioned picture of 1–3 random parts (ellipses, boxes, triangles) of random colours on a
    random background. Only the VAE sees these, so that it encodes shapes in general — including
    ones made of parts it was never shown as such — rather than just the pretraining shapes."""
    rng = _rng(seed, index, "composition")
    img = _background(BACKGROUNDS[rng.randrange(len(BACKGROUNDS))])
    d = ImageDraw.Draw(img)
    k = _SS
    palette = list(COLOURS.values())
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.7:
            fill = palette[rng.randrange(len(palette))]
        else:
            fill = tuple(rng.randrange(256) for _ in range(3))
        cx, cy = rng.uniform(10, 54) * k, rng.uniform(10, 54) * k
        rx, ry = rng.uniform(4, 18) * k, rng.uniform(4, 18) * k
        kind = rng.randrange(3)
        if kind == 0:
            d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
        elif kind == 1:
            d.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
        else:
            d.polygon([(cx + rng.uniform(-rx, rx), cy + rng.uniform(-ry, ry)) for _ in range(3)], fill=fill)
    return img.resize((SIZE, SIZE), Image.BOX)
