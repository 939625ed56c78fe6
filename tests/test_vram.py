"""The VRAM estimate (patina.core.train.vram): exact counts on the meta device, the arithmetic of each part,
the verdict against a card, the one-click fixes, and where the plan shows it (CLI, the window's dialog)."""

from __future__ import annotations

import pytest

from patina.core.config.schema import check_values, defaults
from patina.core.train import vram
from patina.core.train.preflight import DeviceInfo
from patina.core.train.vram_counts import count_models

GiB = 2**30
CPU = DeviceInfo(cuda=False)


def config(**over) -> dict:
    cfg, problems = check_values(dict(defaults(), **over))
    assert not [p for p in problems if p.severity == "error"], problems
    return cfg


def card(total_gib: float, free_gib: float | None = None, **kw) -> DeviceInfo:
    free = (free_gib if free_gib is not None else total_gib - 0.5) * GiB
    return DeviceInfo(cuda=True, name="Test GPU", bf16=True, bitsandbytes=True, total_memory=int(total_gib * GiB),
                      free_memory=int(free), **kw)


def sd1(**over):
    cfg = config(**over)
    return cfg, vram.estimate(cfg, count_models(cfg, "sd1"), (512, 512))


# --- exact counts on the meta device --------------------------------------------------------------------------

def test_full_size_models_counted_on_the_meta_device_have_the_published_sizes():
    """SD 1.5 / SDXL parameter counts (performance.md §3.2) and kohya-target LoRA sizes (§5: parameters per
    rank SD1.5 UNet 423,936 + TE 165,888; SDXL UNet 2,659,840 + TEs 903,168), from Patina's own network code."""
    c = count_models(config(network_dim=16, network_alpha=8), "sd1")
    assert (c.unet, c.text_encoders, c.vae) == (859_520_964, (123_060_480,), 83_653_863)
    assert c.lora_params == 16 * (423_936 + 165_888) == 9_437_184  # 18.9 MB as an fp16 file
    assert len(c.attention) == 16 and {f for f, _ in c.attention} == {1, 2, 4, 8}
    assert c.te_layers == ((12, 768),)
    assert count_models(config(network_dim=16, text_encoder_lr=0.0), "sd1").lora_params == 16 * 423_936

    x = count_models(config(network_dim=16, network_alpha=8), "sdxl")
    assert (x.unet, x.text_encoders, x.vae) == (2_567_463_684, (123_060_480, 694_659_840), 83_653_863)
    assert x.lora_params == 16 * (2_659_840 + 903_168)
    assert len(x.attention) == 70 and max(h for _, h in x.attention) == 20


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("over", [dict(network_dim=4), dict(LoRA_type="Kohya LoCon", network_dim=4, conv_dim=2),
                                  dict(network_dim=4, text_encoder_lr=0.0, block_dims="",
                                       down_lr_weight="zeros", up_lr_weight="linear")])
def test_lora_shapes_are_the_trainable_tensors_of_the_real_network(family, over):
    """The shapes counted from the targets equal the parameters build_network trains (tiny models)."""
    from collections import Counter

    from patina.core.lora.network import build_network
    from patina.core.lora.targets import NetworkSpec
    from patina.core.models.tiny import tiny_pipeline
    from patina.core.train.vram_counts import network_shapes

    def parts():
        pipe = tiny_pipeline(family)
        return pipe.unet, [t for t in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if t is not None]

    spec = NetworkSpec.from_values(config(**over))
    unet, tes = parts()
    counted = network_shapes(unet, tes if spec.train_text_encoder else [], family, spec)
    unet, tes = parts()
    real = build_network(unet, tes if spec.train_text_encoder else [], family, spec).trainable_parameters()
    assert Counter(counted) == Counter(tuple(p.shape) for p in real) and counted


def test_locon_loha_and_lokr_counts_come_from_the_real_network():
    plain = count_models(config(network_dim=8, text_encoder_lr=0.0), "sd1").lora_params
    locon = count_models(config(network_dim=8, text_encoder_lr=0.0, LoRA_type="Kohya LoCon", conv_dim=8), "sd1")
    loha = count_models(config(network_dim=8, text_encoder_lr=0.0, LoRA_type="LyCORIS/LoHa", conv_dim=8), "sd1")
    lokr = count_models(config(network_dim=8, text_encoder_lr=0.0, LoRA_type="LyCORIS/LoKr", conv_dim=8), "sd1")
    assert plain < locon.lora_params < loha.lora_params == 2 * locon.lora_params
    assert lokr.lora_params < locon.lora_params


# --- the arithmetic -------------------------------------------------------------------------------------------

def test_weights_follow_the_dtype_and_what_caching_frees():
    cfg, est = sd1(mixed_precision="fp16")
    counts = count_models(cfg, "sd1")
    assert est.weights == 2 * (counts.unet + counts.text_encoders[0])  # VAE freed after caching latents
    _, cached_te = sd1(mixed_precision="fp16", text_encoder_lr=0.0)
    assert est.weights - cached_te.weights == 2 * counts.text_encoders[0]
    _, shuffled = sd1(mixed_precision="fp16", text_encoder_lr=0.0, shuffle_caption=True)
    assert shuffled.weights == est.weights  # captions change every step: the text encoder stays
    _, no_cache = sd1(mixed_precision="fp16", cache_latents=False)
    assert no_cache.weights - est.weights == 2 * counts.vae
    _, fp32 = sd1(mixed_precision="no")
    assert fp32.weights == 2 * est.weights and fp32.activations > 1.9 * est.activations
    xcfg = config(mixed_precision="fp16", sdxl_no_half_vae=True, cache_latents=False, text_encoder_lr=0.0)
    x = vram.estimate(xcfg, count_models(xcfg, "sdxl"), (1024, 1024))
    assert x.weights == 2 * 2_567_463_684 + 4 * 83_653_863 and "VAE fp32" in x.weights_what


def test_checkpointing_lowers_the_estimate_and_the_batch_scales_activations():
    _, plain = sd1()
    _, gc = sd1(gradient_checkpointing=True)
    assert gc.activations < plain.activations / 3 and gc.total < plain.total
    _, four = sd1(train_batch_size=4)
    assert four.activations == pytest.approx(4 * plain.activations, rel=1e-6)
    cfg, unet_only = sd1(text_encoder_lr=0.0)   # a training text encoder adds activations that do not scale
    big = vram.estimate(cfg, count_models(cfg, "sd1"), (768, 768))
    assert big.activations == pytest.approx(2.25 * unet_only.activations, rel=1e-6)  # memory-efficient: ∝ pixels


def test_plain_attention_adds_maps_quadratic_in_the_tokens():
    cfg, sdpa = sd1(xformers="sdpa")
    _, none = sd1(xformers="none")
    counts = count_models(cfg, "sd1")
    extra = none.activations - sdpa.activations
    # 512×512: 64×64 latent; heads × tokens² per self-attention layer, 6 bytes each under fp16 autocast
    maps = sum(h * (64 // f * 64 // f) ** 2 for f, h in counts.attention)
    assert extra == pytest.approx(6 * maps, rel=1e-6)
    none_768 = vram.estimate(dict(cfg, xformers="none"), counts, (768, 768))
    sdpa_768 = vram.estimate(cfg, counts, (768, 768))
    assert none_768.activations - sdpa_768.activations == pytest.approx(6 * maps * 2.25 ** 2, rel=1e-3)
    _, none_gc = sd1(xformers="none", gradient_checkpointing=True)
    _, sdpa_gc = sd1(xformers="sdpa", gradient_checkpointing=True)
    assert none_gc.activations - sdpa_gc.activations < extra / 4  # one block's maps at a time


def test_optimizer_states_by_kind():
    big, small = (16, 320), (16, 64)   # 5,120 and 1,024 values
    assert vram.optimizer_bytes("AdamW", [big]) == 8 * 5120
    assert vram.optimizer_bytes("AdamW8bit", [big]) == int(2 * (1 + 4 / 256) * 5120)
    assert vram.optimizer_bytes("AdamW8bit", [small]) == 8 * 1024  # bitsandbytes keeps small tensors in 32 bit
    assert vram.optimizer_bytes("Lion", [big]) == vram.optimizer_bytes("SGDNesterov", [big]) == 4 * 5120
    assert vram.optimizer_bytes("Prodigy", [big]) == 16 * 5120
    assert vram.optimizer_bytes("DAdaptAdam", [big]) == 12 * 5120
    assert vram.optimizer_bytes("Adafactor", [big]) == 4 * (16 + 320)  # factored second moment
    assert vram.optimizer_bytes("Adafactor", [big], "beta1=0.9") == 4 * (16 + 320) + 4 * 5120


def test_an_8bit_optimizer_lowers_the_estimate():
    _, adamw = sd1(optimizer="AdamW", network_dim=64)
    _, eight = sd1(optimizer="AdamW8bit", network_dim=64)
    assert eight.train_state < adamw.train_state and eight.total < adamw.total
    assert eight.weights == adamw.weights and eight.activations == adamw.activations


def test_the_estimate_reproduces_the_published_peaks_it_is_calibrated_from():
    """SimpleTuner's SD 1.5 r16 runs (bf16, batch 1, cached latents and embeddings): 2.87 GiB without, 1.98 GiB
    with gradient checkpointing (performance.md §1.1); Patina trains fp32 LoRA weights (a little more)."""
    for gc, published in ((False, 2.87), (True, 1.98)):
        _, est = sd1(mixed_precision="bf16", network_dim=16, text_encoder_lr=0.0, gradient_checkpointing=gc)
        assert est.training_peak / GiB == pytest.approx(published, rel=0.05)


def test_caching_latents_holds_every_model_at_once():
    _, est = sd1(gradient_checkpointing=True, text_encoder_lr=0.0)
    assert est.caching_peak > est.training_peak and est.allocated == est.caching_peak
    assert [r[0] for r in est.rows()] == ["Weights", "LoRA + gradients + optimizer", "Activations",
                                          "Caching latents", "Overhead"]
    assert sum(n for _, _, n in est.rows()) == est.total


# --- against the card -----------------------------------------------------------------------------------------

def test_verdicts():
    assert vram.verdict(8 * GiB, 24 * GiB, 20 * GiB) == "fits"
    assert vram.verdict(19 * GiB, 24 * GiB, 20 * GiB) == "tight"       # within 10 % of what is free
    assert vram.verdict(22 * GiB, 24 * GiB, 24 * GiB) == "tight"       # over 90 % of the card
    assert vram.verdict(21 * GiB, 24 * GiB, 20 * GiB) == "will not fit"
    assert vram.largest_bucket(["512x768", "640x640", "768x512"]) == (640, 640)


def test_fits_tight_and_will_not_fit_against_a_faked_card():
    cfg = config(model_family="sd1", train_batch_size=4, optimizer="AdamW", network_dim=128)
    est, problems = vram.for_config(cfg, "sd1", {"512x512": 3}, card(24))
    assert est.card.verdict == "fits" and problems == []

    est, problems = vram.for_config(cfg, "sd1", {"512x512": 3}, card(est.total / GiB * 1.05, est.total / GiB))
    assert est.card.verdict == "tight" and len(problems) == 1 and problems[0].fix

    est, problems = vram.for_config(cfg, "sd1", {"512x512": 3}, card(6), platform="linux")
    assert est.card.verdict == "will not fit" and all(p.severity == "warning" for p in problems)
    assert "will not fit" in problems[0].message and "Windows" not in problems[0].message
    fixes = [p.fix for p in problems]
    for fix in ({"gradient_checkpointing": True}, {"text_encoder_lr": 0.0}, {"optimizer": "AdamW8bit"}):
        assert any(f == fix or (len(f) > 1 and fix.items() <= f.items()) for f in fixes), (fix, fixes)
    assert any("train_batch_size" in f for f in fixes)
    # each fix really gives what it says
    for p in problems:
        changed = dict(cfg, **p.fix)
        after = vram.estimate(changed, count_models(changed, "sd1"), (512, 512))
        assert vram.gib(after.total) in p.message and after.total < est.total

    _, problems = vram.for_config(cfg, "sd1", {"512x512": 3}, card(6), platform="win32")
    assert "5–10× slower" in problems[0].message


def test_no_gpu_shows_the_estimate_only():
    est, problems = vram.for_config(config(), "sd1", {"512x512": 1}, CPU)
    assert est.card is None and problems == []
    assert "no CUDA GPU here" in vram.format_lines(est)[-1]
    assert vram.for_config(config(), "auto", {"512x512": 1}, CPU) == (None, [])


# --- where it shows ---------------------------------------------------------------------------------------------

def test_train_dry_run_and_dataset_check_print_the_breakdown(tmp_path, capsys, monkeypatch):
    from trainkit import make_dataset, tiny_cfg

    from patina.core.cli import main as cli
    from patina.core.config import files as cfgmod
    from patina.core.models.tiny import save_tiny_diffusers
    from patina.core.train import preflight

    model = save_tiny_diffusers(tmp_path / "m", "sd1")
    data = make_dataset(tmp_path)
    preset = cfgmod.save_config(tmp_path / "p.json", tiny_cfg(model, data, tmp_path / "out"))
    tiny_card = DeviceInfo(cuda=True, name="Tiny GPU", total_memory=GiB // 2, free_memory=GiB // 4)
    monkeypatch.setattr(preflight, "probe_device", lambda: tiny_card)
    assert cli(["train", str(preset), "--plan"]) == 0  # a warning: the estimate may be off, Start stays open
    out = capsys.readouterr().out
    for part in ("VRAM estimate (batch 2 at 64×64", "Weights", "LoRA + gradients + optimizer", "Activations",
                 "Overhead", "Total"):
        assert part in out, out
    assert "free on Tiny GPU: will not fit" in out
    assert "--set gradient_checkpointing=True" in out  # the fix, as the command line applies it

    monkeypatch.setattr(preflight, "probe_device", lambda: CPU)
    assert cli(["dataset", "check", str(data), "--family", "sdxl", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "VRAM estimate (batch 2 at" in out and "UNet fp16" in out and "no CUDA GPU here" in out


def test_the_window_plan_dialog_shows_the_estimate_and_applies_a_fix(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QDialog

    from trainkit import window_with_plan

    from patina.core.train.events import Plan

    small = card(4.0, 3.6)

    def plan_fn(cfg):
        est, problems = vram.for_config(cfg, "sd1", {"512x512": 2}, small)
        return Plan(images=2, reg_images=0, samples_per_epoch=2, steps_per_epoch=1, epochs=1, total_steps=1,
                    batch_size=cfg["train_batch_size"], grad_accum=1, buckets={"512x512": 2}, skipped=[],
                    output_path=str(tmp_path / "o.safetensors"), family="sd1", text="Training plan",
                    problems=problems, vram=est)

    def answer(dialog):
        buttons = {b.text(): b for b in dialog.fix_buttons}
        if "Turn on Gradient checkpointing" in buttons:
            buttons["Turn on Gradient checkpointing"].click()
            return dialog.result()
        return QDialog.DialogCode.Rejected

    w, dialogs = window_with_plan(qtbot, monkeypatch, tmp_path, plan_fn, answer, train_batch_size=2)
    qtbot.waitUntil(lambda: len(dialogs) == 2, timeout=120000)  # the first count imports diffusers
    first, second = (d.vram_label.text() for d in dialogs)
    assert "VRAM estimate" in first and "LoRA + gradients + optimizer" in first and "will not fit" in first
    assert w.form.values()["gradient_checkpointing"] is True
    assert "gradient checkpointing" in second and dialogs[1].plan.vram.total < dialogs[0].plan.vram.total
    qtbot.waitUntil(lambda: w.monitor.state == "idle", timeout=5000)
    w._mark_clean()
