"""Try LoRA files on a base model: a grid of images, rows = LoRA files, columns = LoRA weights or prompts.

The base model is loaded once; each LoRA file in turn is applied at run time (no merge: the adapters wrap the
model's layers and are removed before the next file is built). Weight 0 is the base model itself, sampled once
per prompt and seed before any LoRA is applied, so that column is pixel-equal to what the base model draws.
Every image has its own ``torch.Generator`` seeded with its seed: a cell is reproducible on its own.

Columns vary fastest by the chosen *axis*: with ``axis="weights"`` the columns are, for each prompt and seed,
the weights side by side; with ``axis="prompts"``, for each weight and seed, the prompts side by side.

:func:`save_grid` writes the grid PNG atomically with the settings as JSON in its ``patina_grid`` text chunk.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from patina.core.errors import PatinaError

Progress = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]

AXES = ("weights", "prompts")
PNG_KEY = "patina_grid"
DEFAULT_WEIGHTS = (0.0, 0.4, 0.6, 0.8, 1.0)


@dataclass
class GridCell:
    row: int
    column: int
    lora: str | None          # the LoRA file (None: the base model, weight 0)
    weight: float
    prompt_index: int
    prompt: str
    seed: int
    image: Any                # PIL image


@dataclass
class GridResult:
    image: Any                        # the labelled grid (PIL image)
    cells: list[list[GridCell]]       # rows × columns
    settings: dict
    row_labels: list[str] = field(default_factory=list)
    column_labels: list[list[str]] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.cells), (len(self.cells[0]) if self.cells else 0)


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------

def parse_numbers(text: str | Sequence, what: str, kind=float) -> list:
    """``"0, 0.5,1"`` → [0.0, 0.5, 1.0] in the order given, duplicates dropped."""
    items = text if isinstance(text, (list, tuple)) else [t for t in re.split(r"[,\s]+", str(text)) if t.strip()]
    out = []
    for item in items:
        try:
            value = kind(item) if kind is float else int(str(item).strip())
        except (TypeError, ValueError):
            raise PatinaError(f'{what}: "{item}" is not a {"number" if kind is float else "whole number"}; '
                              f"write them separated by commas, e.g. {'0, 0.5, 1' if kind is float else '1, 2'}.") from None
        if value not in out:
            out.append(value)
    return out


def run_outputs(output_dir: str | os.PathLike, output_name: str) -> list[Path]:
    """The LoRA files of a run: ``<output_name>-000001.safetensors`` … (every epoch, in order), then the
    ``-step…`` files, then the final ``<output_name>.safetensors``."""
    folder = Path(output_dir)
    if not output_name or not folder.is_dir():
        return []
    pattern = re.compile(re.escape(output_name) + r"(?:-(\d{6})|-step(\d+))?\.safetensors", re.IGNORECASE)
    found = []
    for p in folder.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_file():
            epoch, step = m.group(1), m.group(2)
            key = (0, int(epoch)) if epoch else (1, int(step)) if step else (2, 0)
            found.append((key, p))
    return [p for _, p in sorted(found)]


def grid_prompts(text: str | Sequence, *, size: tuple[int, int], steps: int, cfg: float, sampler: str):
    """Prompts in kohya's sample syntax (one per line); *size*, *steps*, *cfg* and *sampler* fill in what a
    line does not set with ``--w/--h``, ``--s``, ``--l`` or ``--ss``."""
    from patina.core.train.sampling import _OPT, SamplePrompt, parse_prompt_line

    lines = [text] if isinstance(text, SamplePrompt) else (
        list(text) if isinstance(text, (list, tuple)) else str(text).splitlines())
    out = []
    for lineno, line in enumerate(lines, start=1):
        if isinstance(line, SamplePrompt):
            out.append(line)
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        sp = parse_prompt_line(line, default_size=size, lineno=lineno)
        parts = _OPT.split(" " + line.strip())
        flags = {p.strip().partition(" ")[0].lower() for i, p in enumerate(parts) if i % 2 == 0 and i > 0}
        if "s" not in flags:
            sp.steps = int(steps)
        if "l" not in flags:
            sp.cfg_scale = float(cfg)
        if "ss" not in flags:
            sp.sampler = sampler
        if not sp.prompt:
            raise PatinaError(f"Prompts, line {lineno}: the prompt text is empty.")
        out.append(sp)
    if not out:
        raise PatinaError("No prompt: write at least one prompt (one per line, kohya sample syntax).")
    return out


def _check_inputs(base_path, lora_paths, weights, seeds, axis, sampler, steps) -> list[Path]:
    from patina.core.config.schema import SAMPLERS

    if axis not in AXES:
        raise PatinaError(f'Grid columns: "{axis}" is not one of {", ".join(AXES)}.')
    if sampler not in SAMPLERS:
        raise PatinaError(f'Unknown sampler "{sampler}"; choose one of {", ".join(SAMPLERS)}.')
    if int(steps) < 1 or int(steps) > 1000:
        raise PatinaError(f"Steps: {steps} must be 1–1000.")
    if not Path(base_path).expanduser().exists():
        raise PatinaError(f"Base model not found: {base_path}. Choose a .safetensors checkpoint or a diffusers folder.")
    if not lora_paths:
        raise PatinaError("No LoRA file: add at least one .safetensors LoRA (or a run's outputs).")
    paths = []
    for p in lora_paths:
        p = Path(p).expanduser()
        if not p.is_file():
            raise PatinaError(f"LoRA file not found: {p}" if not p.exists() else
                              f"{p} is a folder; choose the LoRA .safetensors file inside it.")
        paths.append(p)
    if not weights:
        raise PatinaError("No LoRA weight: write at least one, e.g. 0, 0.5, 1.")
    if any(abs(w) > 10 for w in weights):
        raise PatinaError("LoRA weights must be between -10 and 10.")
    if not seeds:
        raise PatinaError("No seed: write at least one, e.g. 1, 2.")
    return paths


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------

def _columns(axis: str, n_prompts: int, seeds: list[int], weights: list[float]) -> list[tuple[int, int, float]]:
    """(prompt index, seed, weight) per column; the chosen axis varies fastest."""
    if axis == "weights":
        return [(p, s, w) for p in range(n_prompts) for s in seeds for w in weights]
    return [(p, s, w) for w in weights for s in seeds for p in range(n_prompts)]


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def render_lora_grid(base_path: str | os.PathLike, lora_paths: Sequence[str | os.PathLike],
                     prompts: str | Sequence, seeds: Sequence[int] = (1,), weights: Sequence[float] = DEFAULT_WEIGHTS,
                     *, axis: str = "weights", sampler: str = "euler_a", steps: int = 20, cfg: float = 7.0,
                     size: tuple[int, int] | None = None, device: str | None = None,
                     progress: Progress | None = None, cancelled: CancelCheck | None = None,
                     base=None) -> GridResult:
    """Render the grid (see the module docstring). *size* (width, height) defaults to the model's native
    resolution; a prompt's ``--w/--h/--s/--l/--ss`` override *size*/*steps*/*cfg*/*sampler* for that prompt.
    *base*: an already loaded :class:`~patina.core.models.loading.BaseModel` of *base_path* (else it is loaded).
    Raises :class:`~patina.core.lora.toolkit.Cancelled` when *cancelled* () turns true."""
    from patina.core.lora.toolkit import Cancelled, pick_device

    weights = [float(w) for w in parse_numbers(weights, "LoRA weights")]
    seeds = [int(s) for s in parse_numbers(seeds, "Seeds", kind=int)]
    paths = _check_inputs(base_path, lora_paths, weights, seeds, axis, sampler, steps)

    def check() -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("Cancelled; no grid was made.")

    state = {"done": 0, "total": 1}

    def tick(message: str, advance: int = 1) -> None:
        check()
        state["done"] += advance
        if progress is not None:
            progress(min(state["done"], state["total"]), state["total"], message)

    import torch

    from patina.core.lora.kohya_format import read_lora
    from patina.core.lora.network import build_network_from_weights
    from patina.core.models.families import FAMILY_NAMES
    from patina.core.train.sampling import make_scheduler

    grid_prompts(prompts, size=tuple(size) if size else (512, 512), steps=steps, cfg=cfg, sampler=sampler)
    dev = pick_device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    check()
    if progress is not None:
        progress(0, 1, "Loading the base model…")
    if base is None:
        from patina.core.models.loading import load_base_model

        base = load_base_model(base_path, dtype=dtype)
    for m in [base.unet, base.vae, *base.text_encoders]:
        m.to(dev)
        m.eval()
    pipe = base.pipeline()
    pipe.set_progress_bar_config(disable=True)
    native = int(base.unet.config.sample_size) * int(pipe.vae_scale_factor)
    size = tuple(int(v) for v in size) if size else (native, native)
    sps = grid_prompts(prompts, size=size, steps=steps, cfg=cfg, sampler=sampler)
    columns = _columns(axis, len(sps), seeds, weights)
    lora_weights = [w for w in weights if w != 0]
    n_base = len(sps) * len(seeds) if 0.0 in weights else 0
    state["total"] = 1 + n_base + len(paths) * (1 + len(sps) * len(seeds) * len(lora_weights))
    tick("Base model loaded")

    def stop_between_steps(_pipe, _i, _t, kwargs):
        check()
        return kwargs

    def generate(sp, seed: int):
        pipe.scheduler = make_scheduler(sp.sampler or sampler, base.scheduler_config)
        gen = torch.Generator("cpu").manual_seed(int(seed))
        with torch.no_grad():
            return pipe(prompt=sp.prompt, negative_prompt=sp.negative or None, width=sp.width, height=sp.height,
                        num_inference_steps=sp.steps, guidance_scale=sp.cfg_scale, generator=gen,
                        callback_on_step_end=stop_between_steps).images[0]

    base_images: dict[tuple[int, int], Any] = {}
    if 0.0 in weights:
        for pi, sp in enumerate(sps):
            for s in seeds:
                base_images[(pi, s)] = generate(sp, s)
                tick(f"Base model · prompt {pi + 1} · seed {s}")

    rows: list[list[GridCell]] = []
    net = None
    try:
        for r, path in enumerate(paths):
            check()
            if net is not None:
                net.remove()
                net = None
            sd, _md = read_lora(path)
            try:
                net = build_network_from_weights(base.unet, base.text_encoders, base.family, sd)
            except PatinaError as exc:
                raise PatinaError(f"{path.name}: {exc.message}", problems=exc.problems) from None
            del sd
            net.to(dev)
            net.cast_lora_params(dtype)
            for _, p in net.lora_parameters():
                p.requires_grad_(False)
            tick(f"{path.name} loaded")
            made: dict[tuple[int, int, float], Any] = {}
            for w in lora_weights:
                with net.weight(w):
                    for pi, sp in enumerate(sps):
                        for s in seeds:
                            made[(pi, s, w)] = generate(sp, s)
                            tick(f"{path.name} · weight {w:g} · prompt {pi + 1} · seed {s}")
            row = []
            for c, (pi, s, w) in enumerate(columns):
                img = base_images[(pi, s)] if w == 0 else made[(pi, s, w)]
                row.append(GridCell(row=r, column=c, lora=None if w == 0 else str(path), weight=w, prompt_index=pi,
                                    prompt=sps[pi].prompt, seed=s, image=img))
            rows.append(row)
    finally:
        if net is not None:
            net.remove()

    row_labels = [p.stem for p in paths]
    column_labels = []
    for pi, s, w in columns:
        head = f"weight {w:g}" if axis == "weights" else _short(sps[pi].prompt)
        rest = f"P{pi + 1} · seed {s}" if axis == "weights" else f"weight {w:g} · seed {s}"
        column_labels.append([head, rest])
    settings = {
        "version": 1,
        "base_model": str(base_path),
        "family": base.family,
        "family_name": FAMILY_NAMES.get(base.family, base.family),
        "loras": [str(p) for p in paths],
        "prompts": [{"prompt": sp.prompt, "negative": sp.negative, "width": sp.width, "height": sp.height,
                     "steps": sp.steps, "cfg_scale": sp.cfg_scale, "sampler": sp.sampler} for sp in sps],
        "seeds": seeds, "weights": weights, "axis": axis,
        "sampler": sampler, "steps": int(steps), "cfg": float(cfg), "size": list(size),
        "rows": row_labels,
        "columns": [{"prompt": pi + 1, "seed": s, "weight": w} for pi, s, w in columns],
        "device": dev.type, "dtype": str(dtype).replace("torch.", ""),
    }
    image = grid_image(rows, row_labels, column_labels)
    return GridResult(image=image, cells=rows, settings=settings, row_labels=row_labels, column_labels=column_labels)


def grid_image(rows: list[list[GridCell]], row_labels: list[str], column_labels: list[list[str]]):
    """The labelled grid of *rows* (full-size cells; tiny images enlarged)."""
    from patina.core.train.quality import compose_grid

    cells = [[c.image for c in row] for row in rows]
    width = cells[0][0].width if cells and cells[0] else 0
    return compose_grid(cells, row_labels, column_labels, cell=None, min_cell=128, max_left=max(320, width),
                        font_size=max(12, min(32, width // 24)))


# ----------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------

def save_grid(result: GridResult, path: str | os.PathLike) -> Path:
    """Write the grid PNG atomically with the settings (JSON) in its ``patina_grid`` text chunk."""
    from PIL.PngImagePlugin import PngInfo

    from patina.core.atomic import atomic_temp_path, commit_temp

    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise PatinaError(f"The grid is saved as a .png image; {path.name} has another extension.")
    if path.is_dir():
        raise PatinaError(f"{path} is a folder; give the grid a file name ending in .png.")
    inputs = [Path(p) for p in result.settings.get("loras", [])]
    if any(path.resolve() == p.resolve() for p in inputs if p.exists()):
        raise PatinaError(f"{path.name} is one of the LoRA files; choose another output name.")
    info = PngInfo()
    info.add_text(PNG_KEY, json.dumps(result.settings, ensure_ascii=False))
    info.add_text("Software", "Patina")
    tmp = atomic_temp_path(path)
    try:
        result.image.save(tmp, format="PNG", pnginfo=info)
        commit_temp(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_grid_settings(path: str | os.PathLike) -> dict | None:
    """The settings saved in a grid PNG (None when it has none)."""
    from PIL import Image

    with Image.open(path) as img:
        text = (getattr(img, "text", None) or img.info).get(PNG_KEY)
    return json.loads(text) if text else None
