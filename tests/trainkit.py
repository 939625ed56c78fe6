"""Shared pieces for engine tests: a tiny learnable dataset and configs for tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from patina.core.config.schema import defaults

PALETTE = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40), (200, 60, 200), (30, 200, 200)]


def make_dataset(root: Path, n: int = 6, repeats: int = 2, size=(64, 64), name="2_sks toy") -> Path:
    """``root/img/<repeats>_sks toy/`` with *n* simple, learnable images (colour halves) and captions."""
    folder = root / "img" / name.replace("2_", f"{repeats}_", 1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        a[:, : size[0] // 2] = PALETTE[i % len(PALETTE)]
        a[:, size[0] // 2:] = PALETTE[(i + 2) % len(PALETTE)]
        Image.fromarray(a).save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"sks toy, colour {i % len(PALETTE)}", encoding="utf-8")
    return root / "img"


def tiny_cfg(model_dir: Path, data_dir: Path, out_dir: Path, **overrides) -> dict:
    cfg = defaults()
    cfg.update(
        pretrained_model_name_or_path=str(model_dir), train_data_dir=str(data_dir), output_dir=str(out_dir),
        output_name="tiny", max_resolution="64,64", min_bucket_reso=64, max_bucket_reso=128, bucket_reso_steps=64,
        optimizer="AdamW", mixed_precision="no", learning_rate=1e-3, unet_lr=1e-3, text_encoder_lr=1e-4,
        network_dim=4, network_alpha=4.0, train_batch_size=2, epoch=2, save_every_n_epochs=0, seed=1234,
        lr_scheduler="constant", save_precision="float", xformers="sdpa",
        quality_report=False,  # on by default; the tests of the report (test_quality.py) turn it on
    )
    cfg.update(overrides)
    return cfg


class Collector:
    """An ``emit`` that keeps every event, and can run a hook on each."""

    def __init__(self, hook=None):
        self.events = []
        self.hook = hook

    def __call__(self, ev):
        self.events.append(ev)
        if self.hook:
            self.hook(ev)

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


def unet_te_inputs(family: str):
    """Fixed inputs for a tiny UNet and its text encoders: (latents, context, token ids, UNet keyword args)."""
    import torch

    g = torch.Generator().manual_seed(123)
    sample = torch.randn(1, 4, 16, 16, generator=g)
    ctx = torch.randn(1, 77, 64 if family == "sdxl" else 32, generator=g)
    ids = torch.randint(0, 500, (1, 77), generator=g)
    kw = {}
    if family == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    return sample, ctx, ids, kw


def unet_te_outputs(family: str, unet, tes):
    """The UNet's output and each text encoder's last hidden state on :func:`unet_te_inputs`."""
    import torch

    sample, ctx, ids, kw = unet_te_inputs(family)
    with torch.no_grad():
        return unet(sample, 10, ctx, **kw).sample, [te(ids).last_hidden_state for te in tes]


def window_with_plan(qtbot, monkeypatch, tmp_path, plan_fn, answer, **values):
    """A main window that plans with *plan_fn* and never trains; every plan dialog is handed to *answer*
    (which returns the dialog's result) instead of being shown. Returns (window, dialogs seen); the run is
    started with *values* set on the form, next to the three required folders."""
    import pytest
    from patina.gui.main_window import MainWindow
    from patina.gui.monitor_tab import PlanDialog

    dialogs = []

    def fake_exec(self):
        dialogs.append(self)
        return answer(self)

    monkeypatch.setattr(PlanDialog, "exec", fake_exec)
    w = MainWindow(restore_session=False, detect_family=False, plan_fn=plan_fn,
                   engine_fn=lambda *a, **k: pytest.fail("must not train"))
    qtbot.addWidget(w)
    w.form.set_values(dict(pretrained_model_name_or_path=str(tmp_path), train_data_dir=str(tmp_path),
                           output_dir=str(tmp_path / "out"), **values))
    w.start_training()
    return w, dialogs
