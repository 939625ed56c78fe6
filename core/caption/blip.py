"""BLIP captions (one sentence per image) with transformers' ``BlipForConditionalGeneration``.

The folder holds what ``save_pretrained`` writes (the published Salesforce repositories, or a tiny model made
for tests): the same loading code for both. On CUDA the model runs in fp16, several images per call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from PIL import Image

from patina.core.caption.device import pick_device
from patina.core.dataset.images import ALPHA_BACKGROUND
from patina.core.errors import PatinaError


@dataclass
class BlipOptions:
    sampling: bool = False      # nucleus sampling instead of beam search
    num_beams: int = 3          # beam search
    top_p: float = 0.9          # nucleus sampling
    min_length: int = 5         # tokens
    max_length: int = 75
    batch_size: int = 4

    def check(self) -> None:
        if self.num_beams < 1:
            raise PatinaError(f"--beams must be at least 1, not {self.num_beams}")
        if not 0 < self.top_p <= 1:
            raise PatinaError(f"--top-p must be above 0 and at most 1, not {self.top_p}")
        if self.min_length < 0 or self.max_length < 1 or self.min_length > self.max_length:
            raise PatinaError(f"--min-length ({self.min_length}) must be between 0 and --max-length ({self.max_length})")
        if self.batch_size < 1:
            raise PatinaError(f"--batch-size must be at least 1, not {self.batch_size}")


class BlipCaptioner:
    """``caption(images) -> sentences``, ``batch_size`` images at a time."""

    background = ALPHA_BACKGROUND

    def __init__(self, folder: str | os.PathLike, options: BlipOptions | None = None, device: str = "auto"):
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.options = options or BlipOptions()
        self.options.check()
        self.batch_size = self.options.batch_size
        self.device = pick_device(device)
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.processor = BlipProcessor.from_pretrained(os.fspath(folder))
        self.model = BlipForConditionalGeneration.from_pretrained(os.fspath(folder))
        self.model.to(self.device, self.dtype).eval()

    def generate_kwargs(self) -> dict:
        o = self.options
        common = {"min_length": o.min_length, "max_length": o.max_length}
        if o.sampling:
            return {**common, "do_sample": True, "top_p": o.top_p, "num_beams": 1}
        return {**common, "do_sample": False, "num_beams": o.num_beams}

    def caption(self, images: list[Image.Image]) -> list[str]:
        import torch

        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, **self.generate_kwargs())
        return [" ".join(t.split()) for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
