"""The per-epoch quality report: is the LoRA learning the subject, and is it leaving everything else alone?

LoRA trainers judge overfitting and "concept contamination" (class prompts drifting toward the trained subject)
by eye from sample grids. After every epoch this module makes that judgement a set of numbers, from fixed
prompts and fixed seeds sampled at several LoRA weights (0 = the base model, sampled once):

* **trigger change** — mean absolute pixel difference (0–1) between trigger-prompt images with the LoRA and
  without it: how much the LoRA changes what it was trained for;
* **prior drift** — the same for class prompts (prompts without the trigger word): how much the LoRA leaks
  into everything else. Low is good;
* **validation loss** — the diffusion loss on a fixed set of (image, noise, timestep) triples: held-out images
  when ``validation_split`` > 0, else the training images with fixed noise;
* with a **judge** beside the base model (the demo model's ``judge/``), **concept fidelity** (share of
  trigger-prompt images the judge calls the concept) and **preservation** (the judge's shape+colour accuracy on
  class prompts with the LoRA, relative to the base model's).

The **best epoch** is the one these numbers favour (see :func:`best_epoch`). Everything is written to
``<output_dir>/<output_name>-quality.json`` and a grid image ``<output_name>-quality.png`` (rows = epochs,
columns = prompts × LoRA weights, first seed), logged to metrics.jsonl/TensorBoard and emitted as a
:class:`~patina.core.train.events.Quality` event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from patina.core.dataset.plan import seed_for
from patina.core.errors import PatinaError
from patina.core.train.sampling import SamplePrompt, parse_prompts

MAX_PROMPTS = 4          # per kind (trigger / class), to bound the report's time
VALIDATION_TRIPLES = 16
CELL = 128               # grid cell side, pixels (larger samples are shrunk)
PRESERVATION_OK = 0.9


@dataclass
class ReportPrompt:
    sample: SamplePrompt
    kind: str                     # "trigger" | "class"
    expect: dict | None = None    # what the judge should see (class prompts of the demo world)


def parse_weights(text: str) -> list[float]:
    ws = sorted({float(x) for x in str(text).split(",") if x.strip()})
    return ws if 0.0 in ws else [0.0] + ws


def trigger_words(scan) -> list[str]:
    """Instance tokens of the training folders: ``10_sks dog`` → ``sks`` (a one-word name is its own trigger)."""
    words = []
    for s in scan.subsets:
        if s.is_reg or not s.class_tokens.strip():
            continue
        parts = s.class_tokens.split()
        words.append(" ".join(parts[:-1]) if len(parts) > 1 else parts[0])
    return list(dict.fromkeys(words))


def _has_trigger(text: str, triggers: list[str]) -> bool:
    low = f" {text.lower()} "
    return any(f" {t.lower()} " in low or f" {t.lower()}," in low for t in triggers)


def report_prompts(cfg: dict, scan, default_size: tuple[int, int]) -> list[ReportPrompt]:
    """Trigger and class prompts for the report: ``quality_prompts``, else the sample prompts, else
    ``<trigger> <class>`` / ``<class>`` from the folder names. Class prompts are also derived from trigger prompts
    (the trigger word removed) when none are given."""
    triggers = trigger_words(scan)
    text = cfg["quality_prompts"].strip() or cfg["sample_prompts"].strip()
    prompts = parse_prompts(text, default_size=default_size) if text else []
    if not prompts:
        names = [s.class_tokens for s in scan.subsets if not s.is_reg and s.class_tokens.strip()]
        prompts = [SamplePrompt(prompt=n, width=default_size[0], height=default_size[1]) for n in names[:MAX_PROMPTS]]
    trig = [p for p in prompts if _has_trigger(p.prompt, triggers)][:MAX_PROMPTS]
    klass = [p for p in prompts if not _has_trigger(p.prompt, triggers)][:MAX_PROMPTS]
    if not klass:
        for p in trig:
            words = [w for w in p.prompt.split() if not _has_trigger(w, triggers)]
            if words:
                klass.append(SamplePrompt(**{**p.__dict__, "prompt": " ".join(words)}))
    if not trig:
        # no prompt names the trigger: the report still measures drift and validation loss
        pass
    out = [ReportPrompt(p, "trigger") for p in trig] + [ReportPrompt(p, "class") for p in klass]
    from patina.core.demo import world

    for rp in out:
        if rp.kind == "class":
            labels = world.parse_caption(rp.sample.prompt)
            rp.expect = labels if labels and labels["shape"] != world.CONCEPT else None
    return out


def best_epoch(epochs: list[dict], judged: bool) -> tuple[int | None, str]:
    """The epoch the numbers favour, and why (at the highest LoRA weight measured).

    With a judge: the highest concept fidelity among epochs whose preservation is at least 90 % (ties: the
    better preservation, then the earlier epoch); if none preserves enough, the best fidelity × preservation.
    Without: among epochs whose validation loss is within 10 % of the lowest, the one whose trigger prompts
    changed most relative to the class prompts' drift (selectivity)."""
    if not epochs:
        return None, ""
    top = max(epochs[0]["weights"], key=float)
    at = [(e["epoch"], e["weights"][top]) for e in epochs]
    if judged:
        ok = [(ep, w) for ep, w in at if (w.get("preservation") or 0) >= PRESERVATION_OK]
        if ok:
            ep, _ = max(ok, key=lambda x: (x[1]["fidelity"], x[1]["preservation"], -x[0]))
            return ep, f"highest concept fidelity at weight {top} with preservation ≥ {PRESERVATION_OK:.0%}"
        ep, _ = max(at, key=lambda x: (x[1]["fidelity"] * (x[1].get("preservation") or 0), -x[0]))
        return ep, f"no epoch kept preservation ≥ {PRESERVATION_OK:.0%}; best fidelity × preservation at weight {top}"
    losses = [e["validation_loss"] for e in epochs if e.get("validation_loss") is not None]
    low = min(losses) if losses else None
    cand = [(e["epoch"], e["weights"][top]) for e in epochs
            if low is None or e.get("validation_loss") is None or e["validation_loss"] <= low * 1.1]
    ep, _ = max(cand, key=lambda x: (x[1]["selectivity"] or 0, -x[0]))
    return ep, (f"largest trigger change relative to prior drift at weight {top}, among epochs whose validation "
                "loss is within 10 % of the lowest")


def table(report: dict) -> tuple[list[str], list[list[str]]]:
    """The report as a table (header, rows) for the terminal and the Monitor tab: one row per epoch, the numbers
    at the highest LoRA weight; the best epoch is marked with ★."""
    judged = bool(report.get("judge"))
    epochs = report.get("epochs", [])
    if not epochs:
        return [], []
    top = max(epochs[0]["weights"], key=float)
    header = ["Epoch", "Val. loss", f"Trigger change @{top}", f"Prior drift @{top}"]
    if judged:
        header += [f"Fidelity @{top}", "Fidelity @0", f"Preservation @{top}"]
    rows = []
    base = report.get("base") or {}
    for e in epochs:
        w = e["weights"][top]
        row = [f"{e['epoch']}{' ★' if e['epoch'] == report.get('best_epoch') else ''}",
               "—" if e.get("validation_loss") is None else f"{e['validation_loss']:.4f}",
               f"{w['trigger_change']:.3f}" if w.get("trigger_change") is not None else "—",
               f"{w['prior_drift']:.3f}" if w.get("prior_drift") is not None else "—"]
        if judged:
            row += [_pct(w.get("fidelity")), _pct(base.get("fidelity")), _pct(w.get("preservation"))]
        rows.append(row)
    return header, rows


def _pct(v) -> str:
    return "—" if v is None else f"{v:.0%}"


def epoch_line(report: dict) -> str:
    """One line for the latest epoch of *report* (the terminal's progress output)."""
    header, rows = table(report)
    if not rows:
        return "quality: nothing measured"
    cells = [f"{h.lower()} {c}" for h, c in zip(header[1:], rows[-1][1:])]
    return f"quality after epoch {rows[-1][0]}: " + ", ".join(cells)


def format_table(report: dict) -> str:
    header, rows = table(report)
    if not header:
        return "(no quality report)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    if report.get("best_epoch") is not None:
        lines.append(f"★ best epoch {report['best_epoch']}: {report.get('best_reason', '')}")
    return "\n".join(lines)


class QualityReport:
    """Measures one run after each epoch (main process only; the others wait). Built once the models are loaded."""

    def __init__(self, run):
        from patina.core.dataset.buckets import parse_resolution

        cfg = run.cfg
        self.run = run
        self.weights = parse_weights(cfg["quality_weights"])
        self.seeds_n = int(cfg["quality_seeds"])
        self.prompts = report_prompts(cfg, run.plan.scan, parse_resolution(cfg["max_resolution"]))
        self.judge = self._load_judge(cfg["pretrained_model_name_or_path"])
        self.vseed = int(cfg["validation_seed"]) or run.seed
        out = Path(cfg["output_dir"])
        self.json_path = out / f"{cfg['output_name']}-quality.json"
        self.grid_path = out / f"{cfg['output_name']}-quality.png"
        self.base_images: list | None = None     # per prompt: (N, H, W, 3) float arrays at weight 0
        self.validation: list | None = None
        self.grid_rows: list[tuple[int, list]] = []
        self.data = self._start_data(run)

    # -- setup ---------------------------------------------------------------------------------------------
    @staticmethod
    def _load_judge(model_path: str):
        folder = Path(model_path) / "judge"
        if not (folder / "judge.safetensors").is_file():
            return None
        from patina.core.demo.judge import load_judge

        return load_judge(folder)

    def _start_data(self, run) -> dict:
        data = {
            "version": 1, "output_name": run.cfg["output_name"],
            "model": run.cfg["pretrained_model_name_or_path"], "judge": self.judge is not None,
            "weights": self.weights, "seeds_per_prompt": self.seeds_n,
            "prompts": [{"id": f"P{i + 1}", "kind": p.kind, "prompt": p.sample.prompt}
                        for i, p in enumerate(self.prompts)],
            "validation": {"held_out_images": len(run.plan.data.validation_items),
                           "on": "held-out images" if run.plan.data.validation_items else "training images, fixed noise"},
            "base": {}, "epochs": [], "best_epoch": None, "best_reason": "",
            "grid": self.grid_path.name,
        }
        # A resumed run keeps the epochs measured before it stopped.
        try:
            old = json.loads(self.json_path.read_text(encoding="utf-8"))
            if old.get("output_name") == data["output_name"] and old.get("prompts") == data["prompts"]:
                data["epochs"] = [e for e in old.get("epochs", []) if e["epoch"] <= run.epoch]
                data["base"] = old.get("base", {})
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return data

    # -- measuring -----------------------------------------------------------------------------------------
    def _seeds(self, sp: SamplePrompt) -> list[int]:
        first = sp.seed if sp.seed is not None else seed_for(self.run.seed, "quality", sp.prompt) % (2**31 - 1)
        return [first + k for k in range(self.seeds_n)]

    def _images(self, pipe, weight: float) -> list:
        """Per prompt, (N, H, W, 3) float images in [0, 1] at LoRA *weight*, with the prompt's fixed seeds.
        Prompts that share size, steps, guidance, sampler and negative prompt go through the pipeline together."""
        import torch

        from patina.core.train.sampling import make_scheduler, prompt_kwargs

        run = self.run
        groups: dict[tuple, list[int]] = {}
        for i, rp in enumerate(self.prompts):
            sp = rp.sample
            groups.setdefault((sp.width, sp.height, sp.steps, sp.cfg_scale, sp.sampler, sp.negative), []).append(i)
        out: list = [None] * len(self.prompts)
        for members in groups.values():
            first = self.prompts[members[0]].sample
            kw = prompt_kwargs(run, first)
            batched = kw.get("prompt") is not None   # prompts given as text (not as embeddings) batch together
            # at most about 4 images of 512×512 (1 of 1024×1024) per pipeline call, so that the report fits
            # wherever training fits; one prompt's seeds always go together
            per_call = max(1, (4 * 512 * 512) // (first.width * first.height) // self.seeds_n)
            step = per_call if batched else 1
            chunks = [members[k:k + step] for k in range(0, len(members), step)]
            for chunk in chunks:
                sps = [self.prompts[i].sample for i in chunk]
                if batched:
                    kw = {**kw, "prompt": [sp.prompt for sp in sps],
                          "negative_prompt": [first.negative] * len(sps) if first.negative else None}
                else:
                    kw = prompt_kwargs(run, sps[0])
                gens = [torch.Generator("cpu").manual_seed(s) for sp in sps for s in self._seeds(sp)]
                pipe.scheduler = make_scheduler(first.sampler or run.cfg["sample_sampler"], run.base.scheduler_config)
                with run.network.weight(weight), torch.no_grad(), run.accelerator.autocast():
                    images = pipe(**kw, generator=gens, num_images_per_prompt=self.seeds_n, output_type="np").images
                for k, i in enumerate(chunk):
                    out[i] = images[k * self.seeds_n:(k + 1) * self.seeds_n].astype("float32")
        return out

    def _judge_scores(self, rp: ReportPrompt, images) -> dict:
        """{"concept": share judged the concept, "correct": share with the expected shape and colour}."""
        import torch
        import torch.nn.functional as F

        from patina.core.demo import world

        x = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
        if x.shape[-1] != world.SIZE or x.shape[-2] != world.SIZE:
            x = F.interpolate(x, size=(world.SIZE, world.SIZE), mode="bilinear", align_corners=False)
        with torch.no_grad():
            preds = self.judge.predict(x)
        concept = sum(p["shape"] == world.CONCEPT for p in preds) / len(preds)
        correct = None
        if rp.expect:
            correct = sum(p["shape"] == rp.expect["shape"] and p["colour"] == rp.expect["colour"]
                          for p in preds) / len(preds)
        return {"concept": concept, "correct": correct}

    def _summarise(self, per_prompt: list[dict]) -> dict:
        def mean(values):
            values = [v for v in values if v is not None]
            return round(sum(values) / len(values), 4) if values else None

        trig = [r for r, p in zip(per_prompt, self.prompts) if p.kind == "trigger"]
        klass = [r for r, p in zip(per_prompt, self.prompts) if p.kind == "class"]
        out = {"trigger_change": mean([r.get("change") for r in trig]),
               "prior_drift": mean([r.get("change") for r in klass])}
        tc, pd = out["trigger_change"], out["prior_drift"]
        out["selectivity"] = round(tc / max(pd, 1e-4), 3) if tc is not None and pd is not None else None
        if self.judge is not None:
            out["fidelity"] = mean([r["concept"] for r in trig])
            out["class_accuracy"] = mean([r["correct"] for r in klass])
        return out

    def _validation_set(self):
        """Fixed (latent, caption, noise, timestep, size conditioning) triples, built once."""
        import random

        import torch

        from patina.core.train.batches import prepare_image

        run, data = self.run, self.run.plan.data
        items = list(data.validation_items) or [i for i, it in enumerate(data.items) if not it.is_reg]
        random.Random(seed_for(self.vseed, "validation items")).shuffle(items)
        items = items[:VALIDATION_TRIPLES]
        cfg = {**run.cfg, "random_crop": False, "color_aug": False}
        n_t = run.base.noise_scheduler.config.num_train_timesteps
        triples = []
        for k in range(VALIDATION_TRIPLES):
            idx = items[k % len(items)]
            item = data.items[idx]
            prep = prepare_image(item, False, cfg)
            latent = run.encode_pixels(torch.from_numpy(prep.pixels)[None]).cpu()
            gen = torch.Generator("cpu").manual_seed(seed_for(self.vseed, "validation noise", k))
            noise = torch.randn(latent.shape, generator=gen)
            t = int((k + 0.5) / VALIDATION_TRIPLES * n_t)   # spread over the schedule
            size = list(prep.original_size) + list(prep.crop_top_left) + [item.bucket[1], item.bucket[0]]
            triples.append((latent, item.image.caption, noise, t, size))
        return triples

    def _validation_loss(self) -> float:
        import torch

        from patina.core.train import losses as L

        run = self.run
        base, sched = run.base, run.base.noise_scheduler
        unet = run.accelerator.unwrap_model(run.unet_model)
        total = 0.0
        with torch.no_grad(), run.accelerator.autocast():
            for latent, caption, noise, t, size in self.validation:
                lat, nz = latent.to(run.device), noise.to(run.device)
                tt = torch.tensor([t], device=run.device)
                noisy = sched.add_noise(lat, nz, tt)
                hidden, pooled = run.encode_text([caption], unwrapped=True)
                kwargs = {}
                if base.family == "sdxl":
                    time_ids = torch.tensor([size], device=run.device, dtype=run.weight_dtype)
                    kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(run.weight_dtype), "time_ids": time_ids}
                pred = unet(noisy.to(run.weight_dtype), tt, hidden.to(run.weight_dtype), **kwargs).sample
                target = L.target_for(sched, lat, nz, tt, run.v_pred)
                total += float(torch.nn.functional.mse_loss(pred.float(), target.float()))
        return round(total / len(self.validation), 5)

    def measure(self, epoch: int):
        """Measure the LoRA after *epoch*; write quality.json and the grid; return the Quality event."""
        from patina.core.train.events import Quality
        from patina.core.train.sampling import inference

        run = self.run
        run.report.status("quality", f"Measuring quality after epoch {epoch}…")
        with inference(run) as pipe:
            if self.base_images is None:
                self.base_images = self._images(pipe, 0.0)
                base_rows = []
                for rp, imgs in zip(self.prompts, self.base_images):
                    base_rows.append(self._judge_scores(rp, imgs) if self.judge is not None else {})
                if self.judge is not None:
                    s = self._summarise(base_rows)
                    self.data["base"] = {"fidelity": s["fidelity"], "class_accuracy": s["class_accuracy"],
                                         "per_prompt": {f"P{i + 1}": r for i, r in enumerate(base_rows)}}
            if self.validation is None:
                self.validation = self._validation_set()
            entry = {"epoch": epoch, "step": run.step, "validation_loss": self._validation_loss(), "weights": {},
                     "per_prompt": {}}
            cells = []
            for w in self.weights:
                if w == 0:
                    cells.append([imgs[0] for imgs in self.base_images])
                    continue
                per_prompt = []
                firsts = []
                for rp, base_imgs, imgs in zip(self.prompts, self.base_images, self._images(pipe, w)):
                    firsts.append(imgs[0])
                    r = {"change": float(abs(imgs - base_imgs).mean())}
                    if self.judge is not None:
                        r.update(self._judge_scores(rp, imgs))
                    per_prompt.append(r)
                for i, r in enumerate(per_prompt):
                    entry["per_prompt"].setdefault(f"P{i + 1}", {})[str(w)] = {
                        k: (round(v, 4) if v is not None else None) for k, v in r.items()}
                summary = self._summarise(per_prompt)
                if self.judge is not None:
                    base_acc = self.data["base"].get("class_accuracy")
                    acc = summary.get("class_accuracy")
                    summary["preservation"] = (round(min(1.0, acc / base_acc), 4)
                                               if acc is not None and base_acc else None)
                entry["weights"][str(w)] = summary
                cells.append(firsts)
        # cells[weight][prompt] → columns prompt-major: P1@w0, P1@w0.5, ...
        self.grid_rows.append((epoch, [cells[wi][pi] for pi in range(len(self.prompts))
                                       for wi in range(len(self.weights))]))
        self.data["epochs"] = [e for e in self.data["epochs"] if e["epoch"] != epoch] + [entry]
        self.data["best_epoch"], self.data["best_reason"] = best_epoch(self.data["epochs"], self.judge is not None)
        self._write()
        run.report.status("training", "Training…")
        return Quality(epoch=epoch, step=run.step, report=json.loads(json.dumps(self.data)),
                       grid_path=str(self.grid_path) if self.grid_path.exists() else None)

    # -- files ---------------------------------------------------------------------------------------------
    def _write(self) -> None:
        from patina.core.atomic import atomic_temp_path, atomic_write_text, commit_temp

        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.json_path, json.dumps(self.data, indent=2) + "\n")
        grid = render_grid(self.grid_rows, self.prompts, self.weights)
        tmp = atomic_temp_path(self.grid_path)
        try:
            grid.save(tmp, format="PNG")
            commit_temp(tmp, self.grid_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def render_grid(rows: list[tuple[int, list]], prompts: list[ReportPrompt], weights: list[float]):
    """The grid image: a header row (prompt id, LoRA weight), then one row per epoch (its number on the left)."""
    if not rows or not rows[0][1]:
        from PIL import Image

        return Image.new("RGB", (64, 64), "white")
    columns = []
    for c in range(len(rows[0][1])):
        pi, wi = divmod(c, len(weights))
        tag = prompts[pi].kind[0].upper() if pi < len(prompts) else ""
        columns.append([f"P{pi + 1}{tag}", f"w {weights[wi]:g}"])
    return compose_grid([cells for _, cells in rows], [f"e{epoch}" for epoch, _ in rows], columns)


LINE = 13   # label line height, pixels


def compose_grid(rows: list[list], row_labels: list[str], column_labels: list[list[str]], *, cell: int | None = CELL,
                 min_cell: int = 96, max_left: int = 240, font_size: int | None = None):
    """A labelled image grid: *rows* of (H, W, 3) float images in [0, 1] (or PIL images), a label left of each
    row and a few lines of label above each column (the first line black, the others grey).

    Cells larger than *cell* pixels are shrunk to it (``None``: kept at the first cell's size); cells smaller
    than *min_cell* are enlarged by a whole factor with nearest-neighbour so their pixels stay sharp. Every
    cell is drawn at the first cell's size. Labels that do not fit are shortened with an ellipsis.
    *font_size*: of the labels (None: Pillow's small default font)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    if not rows or not rows[0]:
        return Image.new("RGB", (64, 64), "white")

    def as_image(arr):
        if isinstance(arr, Image.Image):
            return arr.convert("RGB")
        return Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype("uint8"))

    first = as_image(rows[0][0])
    w, h = first.size
    scale = 1.0 if cell is None else min(1.0, cell / max(h, w))
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    if max(h, w) < min_cell:   # tiny samples: enlarge sharply so they can be seen
        k = max(1, min_cell // max(h, w))
        ch, cw = h * k, w * k
    font, line = None, LINE
    if font_size:
        try:
            font, line = ImageFont.load_default(size=font_size), font_size + 4
        except (TypeError, OSError):   # an old Pillow or one without FreeType: the small bitmap font
            pass
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def fit(text: str, width: int) -> str:
        text = str(text)
        if measure.textlength(text, font=font) <= width:
            return text
        while text and measure.textlength(text + "…", font=font) > width:
            text = text[:-1]
        return text + "…"

    gap = 2
    lines = max((len(c) for c in column_labels), default=0)
    top = max(30, line * lines + 4)
    left = max(40, min(max_left, max((int(measure.textlength(str(t), font=font)) + 8 for t in row_labels),
                                     default=0)))
    cols = max(len(r) for r in rows)
    img = Image.new("RGB", (left + cols * (cw + gap), top + len(rows) * (ch + gap)), "white")
    draw = ImageDraw.Draw(img)
    for c, label in enumerate(column_labels[:cols]):
        x = left + c * (cw + gap)
        for i, text in enumerate(label):
            draw.text((x + 2, 2 + line * i), fit(text, cw + gap - 4), fill=(0, 0, 0) if i == 0 else (90, 90, 90),
                      font=font)
    for r, cells in enumerate(rows):
        y = top + r * (ch + gap)
        if r < len(row_labels):
            draw.text((4, y + ch // 2 - line // 2), fit(row_labels[r], left - 8), fill=(0, 0, 0), font=font)
        for c, arr in enumerate(cells):
            tile = as_image(arr)
            resample = Image.NEAREST if cw >= tile.width else Image.LANCZOS
            img.paste(tile.resize((cw, ch), resample), (left + c * (cw + gap), y))
    return img


def check_prompts(cfg: dict, scan) -> None:
    """Raise PatinaError when the report's prompts cannot be read (used before a run starts)."""
    from patina.core.dataset.buckets import parse_resolution

    if cfg["quality_report"]:
        try:
            report_prompts(cfg, scan, parse_resolution(cfg["max_resolution"]))
        except PatinaError as exc:
            raise PatinaError(f"Quality report prompts: {exc}") from None
