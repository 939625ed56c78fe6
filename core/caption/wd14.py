"""The WD14 tagger: booru tags from the ONNX models SmilingWolf publishes (``model.onnx`` and its
``selected_tags.csv``), run with onnxruntime — on the GPU through the CUDA provider when it is there.

Published facts the code relies on (v2 and v3 models alike): the input is NHWC float32, BGR, values 0–255, the
picture padded to a square with white and resized to the side the ONNX input declares (448); the output is one
probability per row of ``selected_tags.csv`` (columns ``tag_id,name,category,count``; category 9 = rating,
0 = general, 4 = character). Some v2 exports fix the batch size to 1; then images go one by one.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from patina.core.errors import PatinaError

RATING, GENERAL, CHARACTER = 9, 0, 4
WHITE = (255, 255, 255)
DEFAULT_SIDE = 448


@dataclass
class TaggerOptions:
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    exclude: list[str] = field(default_factory=list)   # tags never written ("long hair" also drops long_hair)
    replace_underscores: bool = True                    # long_hair -> long hair (not in kaomoji like ^_^)
    sort_by_confidence: bool = True                     # else in the order of selected_tags.csv
    rating_tags: bool = False                           # general / sensitive / questionable / explicit
    max_tags: int = 0                                   # 0: no limit
    batch_size: int = 8

    def check(self) -> None:
        for name, value in (("--threshold", self.general_threshold),
                            ("--character-threshold", self.character_threshold)):
            if not 0 <= value <= 1:
                raise PatinaError(f"{name} must be between 0 and 1, not {value}")
        if self.max_tags < 0:
            raise PatinaError(f"--max-tags must be 0 (no limit) or more, not {self.max_tags}")
        if self.batch_size < 1:
            raise PatinaError(f"--batch-size must be at least 1, not {self.batch_size}")


@dataclass(frozen=True)
class Tag:
    name: str
    category: int


def read_tags(path: str | os.PathLike) -> list[Tag]:
    """The rows of ``selected_tags.csv``. A file without ``name``/``category`` columns is a clear error."""
    p = Path(path)
    try:
        with p.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise PatinaError(f"{p}: cannot be read ({exc}); download the tagger again") from None
    try:
        return [Tag(r["name"], int(r["category"])) for r in rows]
    except (KeyError, TypeError, ValueError):
        raise PatinaError(f"{p}: not a tagger tag list (needs name and category columns); "
                          "download the tagger again") from None


def _normal(tag: str) -> str:
    return tag.replace("_", " ").strip().lower()


def tag_text(name: str, replace_underscores: bool) -> str:
    """How a tag is written: underscores become spaces, except in short kaomoji such as ``^_^`` or ``o_o``."""
    return name.replace("_", " ") if replace_underscores and len(name) > 3 else name


def select_tags(probs: np.ndarray, tags: list[Tag], options: TaggerOptions) -> list[str]:
    """The tags of one image: general and character tags above their thresholds, without excluded ones, sorted
    by confidence or in list order, at most ``max_tags``; then the most likely rating when asked."""
    if len(probs) != len(tags):
        raise PatinaError(f"the tagger gives {len(probs)} scores but its tag list has {len(tags)} tags; "
                          "model.onnx and selected_tags.csv do not belong together")
    excluded = {_normal(t) for t in options.exclude if t.strip()}
    picked: list[tuple[float, int, str]] = []   # (-score or 0, index, name)
    ratings = [(float(probs[i]), i) for i, t in enumerate(tags) if t.category == RATING]
    for i, tag in enumerate(tags):
        score = float(probs[i])
        if tag.category == RATING or _normal(tag.name) in excluded:
            continue
        limit = options.character_threshold if tag.category == CHARACTER else options.general_threshold
        if score >= limit:
            picked.append((-score if options.sort_by_confidence else 0.0, i, tag.name))
    picked.sort()
    names = [p[2] for p in picked]
    if options.max_tags:
        names = names[: options.max_tags]
    if options.rating_tags and ratings:
        best = max(ratings)[1]
        if _normal(tags[best].name) not in excluded:
            names.append(tags[best].name)
    return [tag_text(n, options.replace_underscores) for n in names]


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    device = (device or "auto").lower()
    if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
        raise PatinaError("--device cuda: onnxruntime here has no CUDA provider; install onnxruntime-gpu or use "
                          "--device cpu")
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise PatinaError("The WD14 tagger needs the onnxruntime package: pip install onnxruntime "
                          "(or onnxruntime-gpu for NVIDIA GPUs), or pip install patina[captioning]") from None
    return onnxruntime


class WD14Tagger:
    """``caption(images) -> "tag, tag, ..."`` per image."""

    background = WHITE   # transparent pixels become white, as the tagger was trained

    def __init__(self, folder: str | os.PathLike, options: TaggerOptions | None = None, device: str = "auto"):
        ort = import_onnxruntime()
        self.options = options or TaggerOptions()
        self.options.check()
        self.batch_size = self.options.batch_size
        folder = Path(folder)
        self.tags = read_tags(folder / "selected_tags.csv")
        try:
            self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=_providers(device))
        except PatinaError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors: a damaged or foreign file
            raise PatinaError(f"{folder / 'model.onnx'}: onnxruntime cannot load it ({str(exc).splitlines()[0]}); "
                              "download the tagger again") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        shape = list(inp.shape)
        self.channels_first = len(shape) == 4 and shape[1] == 3 and shape[3] != 3
        side = shape[2] if self.channels_first else (shape[1] if len(shape) == 4 else None)
        self.side = side if isinstance(side, int) and side > 0 else DEFAULT_SIDE
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 0

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One picture as the model wants it: padded to a white square, resized, BGR float32 0–255."""
        w, h = image.size
        side = max(w, h)
        square = Image.new("RGB", (side, side), WHITE)
        square.paste(image.convert("RGB"), ((side - w) // 2, (side - h) // 2))
        if side != self.side:
            square = square.resize((self.side, self.side), Image.Resampling.BICUBIC)
        arr = np.asarray(square, dtype=np.float32)[:, :, ::-1]
        return np.ascontiguousarray(arr.transpose(2, 0, 1) if self.channels_first else arr)

    def scores(self, images: list[Image.Image]) -> np.ndarray:
        batch = np.stack([self.prepare(im) for im in images])
        step = self.fixed_batch or len(batch)
        parts = [self.session.run([self.output_name], {self.input_name: batch[i:i + step]})[0]
                 for i in range(0, len(batch), step)]
        return np.concatenate(parts).reshape(len(images), -1)

    def caption(self, images: list[Image.Image]) -> list[str]:
        return [", ".join(select_tags(p, self.tags, self.options)) for p in self.scores(images)]
