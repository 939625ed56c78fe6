"""Render every tab and page of Patina's window to PNGs, offscreen, for review.

    python scripts/screenshots.py [--out screenshots] [--size 1280x800]

Writes dataset.png, training-<page>.png for each Training page, training-invalid.png (fields marked),
monitor-idle.png, monitor-run.png (fed with a synthetic run: this script's own demo events, not the
engine), plan-dialog.png and wizard.png (the folder wizard). The user's
settings are not touched (a temporary config folder is used).
"""

from __future__ import annotations

import argparse
import time
import math
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _demo_image(path: Path, hue: int, epoch: int) -> str:
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QColor, QImage, QPainter, QRadialGradient

    img = QImage(384, 384, QImage.Format.Format_RGB32)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    g = QRadialGradient(QPointF(140, 120), 320)
    g.setColorAt(0, QColor.fromHsv(hue, 90, 235))
    g.setColorAt(1, QColor.fromHsv((hue + 40) % 360, 160, 90))
    p.fillRect(img.rect(), g)
    p.setPen(Qt.PenStyle.NoPen)
    sharp = min(1.0, 0.25 + 0.25 * epoch)
    p.setBrush(QColor.fromHsv((hue + 180) % 360, int(120 * sharp), 220))
    p.drawEllipse(QPointF(200, 230), 70 + 10 * epoch, 90 + 6 * epoch)
    p.end()
    img.save(str(path))
    return str(path)


def _feed_demo_run(monitor, folder: Path) -> None:
    """A plausible three-epoch run, as events, straight into the tab (no engine, no thread)."""
    from patina.core.train.events import EpochEnd, Metrics, Plan, Progress, Sample, Saved, Status

    rnd = random.Random(7)
    total, epochs = 600, 3
    out = folder / "sks-dog.safetensors"
    from patina.core.dataset.summary import epoch_arithmetic

    arithmetic = epoch_arithmetic([(20, 10)], batch_size=1).text
    plan = Plan(images=20, reg_images=0, samples_per_epoch=200, steps_per_epoch=200, epochs=epochs,
                total_steps=total, batch_size=1, grad_accum=1, buckets={"512x512": 12, "512x768": 5, "768x512": 3},
                skipped=[], output_path=str(out), family="sd1",
                text=f"Training plan\n\n  10_sks dog: 20 images × 10 repeats = 200 samples\n  Per epoch: {arithmetic}\n"
                     "  Epochs: 3   Total steps: 600\n  Buckets: 512x512 (12), 512x768 (5), 768x512 (3)",
                arithmetic=arithmetic)
    monitor.reset_view()
    monitor._set_state("running")
    monitor.handle_event(Status("loading", "Loading the model…"))
    monitor.handle_event(plan)
    monitor.handle_event(Status("training", "Training"))
    avg = 0.16
    prompts = ["a photo of sks dog on a beach", "sks dog wearing a red scarf, studio light",
               "an oil painting of sks dog in a field of sunflowers"]
    step_now = 430
    for step in range(1, step_now + 1):
        epoch = (step - 1) // 200 + 1
        lr_u = 1e-4 * 0.5 * (1 + math.cos(math.pi * step / total))
        loss = max(0.02, 0.09 + 0.07 * math.exp(-step / 120) + rnd.gauss(0, 0.035))
        avg = 0.95 * avg + 0.05 * loss
        monitor.handle_event(Metrics(step, epoch, loss, avg, {"unet": lr_u, "textencoder": lr_u / 2}))
        if step % 200 == 0:
            monitor.handle_event(EpochEnd(epoch, step, avg))
            for i, prompt in enumerate(prompts):
                img = _demo_image(folder / f"e{epoch}_{i}.png", 25 + 70 * i, epoch)
                monitor.handle_event(Sample(img, prompt, i, step, epoch))
            monitor.handle_event(Saved(str(out.with_name(f"sks-dog-{epoch:06d}.safetensors")), "lora", step, epoch))
    monitor.handle_event(Status("caching", "Caching latents 20/20…"))
    monitor.handle_event(Progress(step_now, total, 3, epochs, 3.42, step_now / 3.42, (total - step_now) / 3.42))
    monitor.handle_event(Status("training", f"Training — epoch 3 of 3, step {step_now} of {total}"))
    monitor.charts.redraw()


def _stop_demo_run(monitor, folder: Path) -> None:
    """The demo run, stopped by the user at its current step."""
    from PySide6.QtWidgets import QApplication

    from patina.core.train.events import Finished, Saved, Status

    out = folder / "sks-dog-step00000430.safetensors"  # a stopped run never replaces sks-dog.safetensors
    monitor._set_state("stopping")
    monitor.handle_event(Status("saving", "Saving what was trained…"))
    monitor.handle_event(Saved(str(out), "lora", 430, 3))
    monitor._on_done(Finished("stopped", f"Stopped at step 430 of 600. The LoRA so far is saved as {out}. "
                                         f"Continue later from {folder / 'sks-dog-state'}.", str(out), 430))
    QApplication.processEvents()


def _demo_queue(win):
    """A queue with runs in every state: two done/failed, one running (its lock held), two waiting."""
    from patina.core.config.schema import defaults
    from patina.core.train.queue import QueueLock

    q = win.queue_tab.queue
    lock = QueueLock(q, "the screenshot").acquire()   # the running entry's runner lives
    now = time.time()
    runs = [("sks-dog", "sd15-character", "done", 1712, ""), ("sks-dog-rank32", "sd15-character", "failed", 41,
            "The GPU ran out of memory (CUDA out of memory). To fit: turn on Gradient checkpointing; lower the "
            "batch size to 1."), ("oil-style", "sd15-style", "running", 754, ""),
            ("oil-style-lr2e4", "sd15-style", "waiting", 0, ""), ("xl-dog", "sdxl-character", "waiting", 0, "")]
    for i, (name, preset, status, seconds, message) in enumerate(runs):
        cfg = defaults()
        folder = f"/home/ana/LoRAs/{name.split('-rank')[0].split('-lr')[0]}"
        cfg.update(pretrained_model_name_or_path="/home/ana/models/v1-5-pruned-emaonly.safetensors",
                   train_data_dir=f"{folder}/img", output_dir=f"{folder}/output", output_name=name,
                   network_dim=32 if "rank32" in name else 16, learning_rate=2e-4 if "lr2e4" in name else 1e-4,
                   epoch=10, train_batch_size=2)
        entry = q.add(cfg, name=name, source=f"/home/ana/LoRAs/{preset}.json")
        if status != "waiting":
            start = now - 4000 + 600 * i
            q.mark(entry.id, status, started=start, finished=None if status == "running" else start + seconds,
                   message=message, output=f"{folder}/output/{name}.safetensors" if status == "done"
                   else f"{folder}/output")
    win.queue_tab.refresh()
    win.queue_tab.select(2)
    return lock


def _vram_plan(folder: Path):
    """An SDXL plan with the real VRAM estimate (counted on the meta device) against a 12 GiB card that it
    does not fit: the estimate table and the one-click fixes."""
    from patina.core.config.schema import check_values, defaults
    from patina.core.train import vram
    from patina.core.train.events import Plan
    from patina.core.train.preflight import DeviceInfo

    cfg, _ = check_values(dict(defaults(), model_family="sdxl", max_resolution="1024,1024", train_batch_size=2,
                               network_dim=32, network_alpha=16, mixed_precision="bf16"))
    card = DeviceInfo(cuda=True, name="NVIDIA GeForce RTX 4070", bf16=True, bitsandbytes=True,
                      total_memory=12 * 2**30, free_memory=int(11.2 * 2**30))
    buckets = {"1024x1024": 14, "896x1152": 4, "1152x896": 2}
    est, problems = vram.for_config(cfg, "sdxl", buckets, card, platform="win32")
    text = "\n".join(["Training plan", "", "  10_sks dog: 20 images × 10 repeats = 200 samples",
                      "  Epochs: 2   Total steps: 200"] + vram.format_lines(est))
    plan = Plan(images=20, reg_images=0, samples_per_epoch=200, steps_per_epoch=100, epochs=2, total_steps=200,
                batch_size=2, grad_accum=1, buckets=buckets, skipped=[], output_path=str(folder / "sks-dog.safetensors"),
                family="sdxl", text=text, arithmetic="20 images × 10 repeats = 200 samples / batch 2 = 100 steps",
                problems=problems, vram=est)
    return plan


def _small_png(src: Path, dest: Path) -> None:
    """A copy for the docs: 256-colour PNG (a screenshot has few colours), well under 200 KB."""
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            dest, optimize=True)


# a kohya_ss presets folder of the kinds kohya_ss ships (written here; its own presets are not needed)
_KOHYA_PRESETS = {
    "SDXL - LoRA standard.json": {"LoRA_type": "Standard", "sdxl": True, "network_dim": 32, "network_alpha": 32,
                                  "optimizer": "Prodigy", "learning_rate": 1.0, "mixed_precision": "bf16",
                                  "save_model_as": "safetensors"},
    "SDXL - LoRA by-folder.json": {"LoRA_type": "Standard", "sdxl": True, "caption_extension": ".txt-no",
                                   "log_with": "wandb", "optimizer": "AdamW", "sdxl_no_half_vae": True},
    "lokr-sd15.json": {"LoRA_type": "LyCORIS/LoKr", "network_dim": 100000, "conv_dim": 100000, "factor": 6,
                       "use_cp": True, "train_norm": True, "bucket_reso_steps": 1,
                       "caption_extension": ".none-use-foldername", "LyCORIS_preset": "full"},
    "loha-sd15.json": {"LoRA_type": "LyCORIS/LoHa", "network_dim": 32, "conv_dim": 8, "rank_dropout": 0.1,
                       "LyCORIS_preset": "full"},
    "flux1D - adamw8bit fp8.json": {"LoRA_type": "Flux1", "flux1_checkbox": True},
    "ia3-sd15.json": {"LoRA_type": "LyCORIS/iA3", "train_on_input": True},
    "sd15 - GLoRA.json": {"LoRA_type": "LyCORIS/GLoRA"},
    "user_presets/my style.json": {"LoRA_type": "Kohya LoCon", "network_dim": 16, "conv_dim": 8},
    "user_presets/half saved.json": '{"LoRA_type": "Standard", ',
}


def _kohya_import_report(win, folder: Path):
    """File ▸ Import kohya_ss presets… on a sample folder: the report dialog it shows."""
    import json

    from patina.gui.config_document import ReportDialog

    for name, data in _KOHYA_PRESETS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    shown = []
    win._show_report = lambda *a: shown.append(a)
    win.import_kohya_presets(folder)
    del win._show_report
    title, heading, text, html = shown[0]
    dlg = ReportDialog(title, heading, text, win, html)
    dlg.resize(900, 700)
    return dlg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "screenshots"), help="output folder (default: screenshots/)")
    ap.add_argument("--size", default="1280x800", help="window size WxH (default 1280x800)")
    ap.add_argument("--docs", action="store_true",
                    help="also write the Monitor screenshots that docs/screenshots.md shows into docs/screenshots/")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="patina-shots-"))
    os.environ["PATINA_CONFIG_DIR"] = str(tmp / "config")  # never the user's own state
    os.environ["PATINA_DATA_DIR"] = str(tmp / "data")      # nor the user's training queue

    from PySide6.QtWidgets import QApplication

    from patina.gui.app import make_application, render_window
    from patina.gui.main_window import MainWindow
    from patina.gui.monitor_tab import PlanDialog

    make_application()
    win = MainWindow(restore_session=False)
    written = []

    def shot(name, widget=None, size=(w, h)):
        path = out / f"{name}.png"
        render_window(widget or win, str(path), size)
        written.append(path)

    def dialog_shot(name, dlg):
        """A dialog at the size it opens with (never scaled)."""
        dlg.show()
        QApplication.processEvents()
        size = (max(dlg.width(), dlg.minimumSizeHint().width()), max(dlg.height(), dlg.minimumSizeHint().height()))
        shot(name, dlg, size)
        dlg.hide()

    win.select_tab("dataset")
    shot("dataset-empty")
    # a small demo dataset: coloured pictures with captions, one without, and one broken file
    concept = tmp / "demo" / "img" / "10_sks dog"
    concept.mkdir(parents=True)
    from PIL import Image, ImageDraw

    for i in range(14):
        im = Image.new("RGB", (512 + 64 * (i % 3), 512 + 64 * ((i + 1) % 3)), ((i * 53) % 200 + 30, 120, 180 - i * 9))
        ImageDraw.Draw(im).ellipse((96, 128, 380, 420), fill=(230 - i * 10, 200, 90 + i * 8))
        im.save(concept / f"photo_{i:02d}.jpg", quality=90)
        if i % 5:
            (concept / f"photo_{i:02d}.txt").write_text(f"sks dog, {['outdoors', 'indoors', 'close-up', 'full body'][i % 4]}",
                                                        encoding="utf-8")
    (concept / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    win.form.set_values({"train_data_dir": str(concept.parent)})
    win.sync_dataset_tab()
    deadline = time.time() + 8
    while time.time() < deadline:  # thumbnails and the image check arrive from background threads
        QApplication.processEvents()
        time.sleep(0.05)
    win.dataset_tab.select_path(str(concept / "photo_01.jpg"))
    deadline = time.time() + 2
    while time.time() < deadline:  # the large preview arrives from a background thread
        QApplication.processEvents()
        time.sleep(0.02)
    shot("dataset")
    win.form.set_values({"train_data_dir": ""})
    for page in ("model", "folders", "metadata", "basic", "advanced", "samples"):
        win.select_tab(page)
        shot(f"training-{page}")

    # a half-filled config with mistakes, to see how problems are marked
    win.form.set_values({"pretrained_model_name_or_path": str(tmp / "missing-model.safetensors"),
                         "LoRA_type": "Kohya LoCon", "max_resolution": "512 by 512", "min_bucket_reso": 1024,
                         "max_bucket_reso": 512, "lr_scheduler": "constant"})
    win.select_tab("basic")
    shot("training-invalid")
    from patina.core.config.schema import defaults
    win.form.set_values(defaults())
    win._mark_clean()

    win.select_tab("monitor")
    deadline = time.time() + 15
    while not win.monitor.charts._ready and time.time() < deadline:  # pyqtgraph loads in the background
        QApplication.processEvents()
        time.sleep(0.02)
    shot("monitor-idle")
    _feed_demo_run(win.monitor, tmp)
    shot("monitor-run")
    plan = win.monitor.last_plan
    dialog_shot("plan-dialog", PlanDialog(plan, [], win))
    dialog_shot("plan-vram", PlanDialog(_vram_plan(tmp), [], win))
    _stop_demo_run(win.monitor, tmp)
    shot("monitor-stopped")
    if args.docs:
        for name in ("monitor-idle", "monitor-run", "monitor-stopped", "plan-vram"):
            _small_png(out / f"{name}.png", ROOT / "docs" / "screenshots" / f"{name}.png")

    dialog_shot("kohya-import", _kohya_import_report(win, tmp / "kohya_ss" / "presets" / "lora"))
    if args.docs:
        _small_png(out / "kohya-import.png", ROOT / "docs" / "screenshots" / "kohya-import.png")
    lock = _demo_queue(win)
    win.select_tab("queue")
    shot("queue")
    lock.release()
    if args.docs:
        _small_png(out / "queue.png", ROOT / "docs" / "screenshots" / "queue.png")

    from patina.gui.wizard_dialog import FolderWizardDialog

    dialog_shot("wizard", FolderWizardDialog(win))
    QApplication.processEvents()
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
