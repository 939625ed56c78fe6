"""The files a run writes in its output folder: LoRA checkpoints with kohya's metadata, training state
folders, the rescue copy when the output folder cannot be written, and the TensorBoard/JSONL logs.

Every write is atomic and happens on the main process; a failed write raises :class:`SaveFailed` on every
process, so all of them stop together.
"""

from __future__ import annotations

import errno
import json
import re
import time
from datetime import datetime
from pathlib import Path

from patina.core.train.events import Saved
from patina.core.train.run import Run


class SaveFailed(Exception):
    """Writing a file of the run failed (disk full, no permission, a folder that disappeared)."""

    def __init__(self, path: Path, error: BaseException | None):
        super().__init__(f"{path}: {error}")
        self.path = Path(path)
        self.error = error

    def describe(self) -> str:
        return f"Could not save {self.path}: {why(self.error)}."


def why(exc: BaseException | None) -> str:
    """What a failed write means for the user, and what to do."""
    if exc is None:
        return "the main process could not write it"
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err is None:  # safetensors reports OS errors in its message: "... (os error 28)"
        m = re.search(r"os error (\d+)", text)
        err = int(m.group(1)) if m else None
    detail = getattr(exc, "strerror", None) or text or type(exc).__name__
    if err == errno.ENOSPC or "No space left" in text:
        return "the disk is full (no space left on device); free some space or choose another output folder"
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write there ({detail}); choose a folder you can write to"
    if err in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST):
        return f"the folder is gone or is not a folder ({detail}); choose an existing output folder"
    if err == errno.ENAMETOOLONG:
        return "the file name is too long for this file system; choose a shorter output name"
    return f"{type(exc).__name__}: {detail}"


def lora_path(cfg: dict, stem: str) -> Path:
    return Path(cfg["output_dir"]) / f"{stem}.safetensors"


def state_dir(cfg: dict, stem: str) -> Path:
    return Path(cfg["output_dir"]) / f"{stem}-state"


def metadata(run: Run, started: float) -> dict:
    from patina.core.dataset.captions import tag_frequency
    from patina.core.lora.kohya_format import build_metadata

    rp = run.plan
    freq = {s.name: dict(tag_frequency(img.caption for img in s.images)) for s in rp.scan.train_subsets}
    values = dict(run.cfg)
    values["seed"] = run.seed
    opt = getattr(run.optimizer, "optimizer", run.optimizer)  # accelerate's wrapper holds the real one
    return build_metadata(
        values=values, family=run.base.family, v_prediction=run.v_pred,
        base_model_name=Path(run.cfg["pretrained_model_name_or_path"]).name,
        num_train_images=rp.scan.train_images, num_reg_images=rp.scan.reg_images,
        num_batches_per_epoch=rp.batches_per_epoch, steps=run.step, epoch=run.epoch,
        tag_frequency=freq, bucket_info=rp.data.bucket_info(),
        dataset_dirs={s.name: {"n_repeats": s.repeats, "img_count": s.num_images} for s in rp.scan.train_subsets},
        reg_dataset_dirs={s.name: {"n_repeats": s.repeats, "img_count": s.num_images} for s in rp.scan.reg_subsets},
        training_started_at=started, session_id=run.seed,
        optimizer_class=f"{type(opt).__module__}.{type(opt).__name__}")


def save_lora(run: Run, path: Path, started: float) -> None:
    """Write the LoRA to *path*; raises :class:`SaveFailed` on every process when the write fails."""
    import torch

    from patina.core.lora.kohya_format import save_lora as write_lora

    acc = run.accelerator
    acc.wait_for_everyone()
    error = None
    if acc.is_main_process:
        run.report.status("saving", f"Saving {path.name}…")
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(run.cfg["save_precision"], torch.float32)
        try:
            write_lora(path, run.network.kohya_state_dict(dtype=dtype), metadata(run, started),
                       precision=run.cfg["save_precision"])
        except Exception as exc:  # noqa: BLE001 - disk full, permissions, a folder that vanished
            error = exc
        else:
            run.report.emit(Saved(path=str(path), kind="lora", step=run.step, epoch=run.epoch))
            run.report.status("training", "Training…")
    acc.wait_for_everyone()
    if run.agree(error is not None):
        raise SaveFailed(path, error)


def save_state(run: Run, folder: Path) -> None:
    """Write the training state folder; raises :class:`SaveFailed` on every process when it fails."""
    from patina.core.train.state import write_state

    acc = run.accelerator
    acc.wait_for_everyone()
    error = None
    if acc.is_main_process:
        try:
            write_state(run, folder)
        except Exception as exc:  # noqa: BLE001 - disk full, permissions, a folder that vanished
            error = exc
        else:
            run.report.emit(Saved(path=str(folder), kind="state", step=run.step, epoch=run.epoch))
    acc.wait_for_everyone()
    if run.agree(error is not None):
        raise SaveFailed(folder, error)


def save_checkpoint(run: Run, stem: str, started: float, *, with_state: bool) -> None:
    """A checkpoint during the run: ``<stem>.safetensors`` and, with *with_state*, ``<stem>-state``."""
    save_lora(run, lora_path(run.cfg, stem), started)
    if with_state:
        save_state(run, state_dir(run.cfg, stem))


def keep(run: Run, stem: str, with_state: bool, started: float) -> tuple[Path | None, Path | None, str]:
    """Save the LoRA as ``<stem>.safetensors`` (and the state as ``<output_name>-state``) in the output
    folder. What cannot be saved there (disk full, no permission, a folder that disappeared) is saved in
    the rescue folder of the user data folder instead; the weights stay in memory until then.
    Returns (LoRA path, state folder, a message about what went wrong, "" when nothing did)."""
    from patina.core.paths import rescue_dir

    name = run.cfg["output_name"]
    lora = state = None
    failures: list[SaveFailed] = []
    try:
        save_lora(run, lora_path(run.cfg, stem), started)
        lora = lora_path(run.cfg, stem)
    except SaveFailed as exc:
        failures.append(exc)
    if with_state:
        try:
            save_state(run, state_dir(run.cfg, name))
            state = state_dir(run.cfg, name)
        except SaveFailed as exc:
            failures.append(exc)
    if not failures:
        return lora, state, ""
    lines = [f.describe() for f in failures]
    rescue = rescue_dir() / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    if lora is None:
        try:
            save_lora(run, rescue / f"{stem}.safetensors", started)
            lora = rescue / f"{stem}.safetensors"
            lines.append(f"The LoRA was saved instead to {lora} — move it where you want it.")
        except SaveFailed as exc:
            lines.append(f"Saving it to {rescue} failed too ({why(exc.error)}). Nothing could be saved: free "
                         "some disk space or choose another output folder, then start again.")
    if with_state and state is None:
        try:
            save_state(run, rescue / f"{name}-state")
            state = rescue / f"{name}-state"
            lines.append(f"The training state was saved instead to {state} (resume from there).")
        except SaveFailed as exc:
            lines.append(f"The training state could not be saved in {rescue} either ({why(exc.error)}).")
    for line in lines:
        run.report.log(line, "warning")
    return lora, state, "\n".join(lines)


def clean_leftovers(cfg: dict, report) -> None:
    """Remove temporary files and state folders that a crashed run left in the output folder."""
    from patina.core.atomic import clean_leftovers as clean

    out = Path(cfg["output_dir"])
    removed = clean(out) + clean(out / "sample")
    if removed:
        report.log(f"Removed {len(removed)} temporary file(s) left by an interrupted run in {out}: "
                   + ", ".join(p.name for p in removed[:5]) + (" …" if len(removed) > 5 else ""))


class RunLogs:
    """TensorBoard scalars and ``metrics.jsonl`` in ``<logging_dir>/<output_name>_<time>/`` (main process)."""

    def __init__(self, cfg: dict, run: Run):
        self.tb = self.jsonl = None
        if not cfg["logging_dir"] or not run.accelerator.is_main_process:
            return
        folder = Path(cfg["logging_dir"]) / f"{cfg['output_name']}_{datetime.now():%Y%m%d%H%M%S}"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder))
        except ImportError:
            run.report.log("tensorboard is not installed: no TensorBoard logs (metrics.jsonl is still written).",
                           "warning")
        self.jsonl = open(folder / "metrics.jsonl", "a", encoding="utf-8")  # append-only log, not a user file

    def step(self, step: int, epoch: int, loss: float, avg: float, lrs: dict) -> None:
        if self.tb is not None:
            self.tb.add_scalar("loss/current", loss, step)
            self.tb.add_scalar("loss/average", avg, step)
            for name, lr in lrs.items():
                self.tb.add_scalar("lr/textencoder" if name == "textencoder" else f"lr/{name}", lr, step)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"step": step, "epoch": epoch, "loss": loss, "avg_loss": avg,
                                         "lr": lrs, "time": time.time()}) + "\n")
            self.jsonl.flush()

    def epoch(self, epoch: int, avg: float) -> None:
        if self.tb is not None:
            self.tb.add_scalar("loss/epoch", avg, epoch)

    def quality(self, entry: dict) -> None:
        """One epoch of the quality report (patina.core.train.quality)."""
        step, epoch = entry["step"], entry["epoch"]
        if self.tb is not None:
            if entry.get("validation_loss") is not None:
                self.tb.add_scalar("quality/validation_loss", entry["validation_loss"], step)
            for w, values in entry["weights"].items():
                for name, v in values.items():
                    if v is not None:
                        self.tb.add_scalar(f"quality/{name}@{w}", v, step)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"step": step, "epoch": epoch, "quality": entry, "time": time.time()}) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
