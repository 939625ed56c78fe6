"""The training engine end to end on tiny models (HF_HUB_OFFLINE=1, CPU)."""

import json
import re

import pytest
import torch

from patina.core.train import events as E
from patina.core.train.engine import Trainer, plan, train
from patina.core.train.events import Commands
from patina.core.lora.verify import verify_lora
from patina.core.models.tiny import save_tiny_diffusers
import imagefactory as imgs
from trainkit import Collector, make_dataset, tiny_cfg


@pytest.fixture(scope="session")
def sd1_dir(tmp_path_factory):
    return save_tiny_diffusers(tmp_path_factory.mktemp("models") / "tiny-sd1", "sd1")


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory):
    return save_tiny_diffusers(tmp_path_factory.mktemp("models") / "tiny-sdxl", "sdxl")


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path)


def _unet_inputs(pipe, family, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 500])
    ctx_dim = pipe.unet.config.cross_attention_dim
    ctx = torch.randn(2, 77, ctx_dim, generator=g)
    kw = {}
    if family == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 32, generator=g),
                                   "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=torch.float32)}
    return x, t, ctx, kw


@pytest.mark.parametrize("family,lora_type", [("sd1", "Standard"), ("sd1", "Kohya LoCon"),
                                              ("sdxl", "Standard"), ("sdxl", "Kohya LoCon")])
def test_trained_file_loads_in_diffusers_and_matches_the_trained_unet(family, lora_type, sd1_dir, sdxl_dir, data,
                                                                      tmp_path):
    from patina.core.models.tiny import tiny_pipeline

    model = sd1_dir if family == "sd1" else sdxl_dir
    cfg = tiny_cfg(model, data, tmp_path / "out", LoRA_type=lora_type, conv_dim=4, conv_alpha=2.0, epoch=1,
                   max_train_steps=4)
    events = Collector()
    trainer = Trainer(cfg, events, None, None)
    fin = trainer.run()
    assert fin.status == "finished", fin.message
    path = tmp_path / "out" / "tiny.safetensors"
    assert fin.output == str(path) and path.exists()
    unet = trainer.base.unet
    unet.eval()
    pipe = tiny_pipeline(family)  # a fresh pipeline with the same random base weights
    x, t, ctx, kw = _unet_inputs(pipe, family)
    with torch.no_grad():
        trained = unet(x, t, ctx, **kw).sample
        before = pipe.unet(x, t, ctx, **kw).sample
        pipe.load_lora_weights(str(path))
        loaded = pipe.unet(x, t, ctx, **kw).sample
    assert (trained - before).abs().max() > 1e-4  # training changed something
    assert (trained - loaded).abs().max() < 1e-4
    # text encoder LoRA too
    tok = pipe.tokenizer("sks toy", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        te_trained = trainer.base.text_encoders[0](tok).last_hidden_state
        te_loaded = pipe.text_encoder(tok).last_hidden_state
    assert (te_trained - te_loaded).abs().max() < 1e-4
    report = verify_lora(path)
    assert report.ok, report.compat
    keys = set(report.metadata)
    assert {"ss_network_dim", "ss_base_model_version", "sshs_model_hash", "modelspec.architecture"} <= keys
    if lora_type == "Kohya LoCon":
        assert report.conv3x3_modules > 0


def _denoise_loss(pipe, latents, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = pipe.tokenizer(["sks toy"] * len(latents), padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        ctx = pipe.text_encoder(ids).last_hidden_state
        total = 0.0
        for t in (100, 300, 500, 700, 900):
            noise = torch.randn(latents.shape, generator=g)
            tt = torch.full((len(latents),), t)
            noisy = pipe.scheduler.add_noise(latents, noise, tt)
            total += torch.nn.functional.mse_loss(pipe.unet(noisy, tt, ctx).sample, noise).item()
    return total / 5


def test_training_lowers_the_loss_on_the_training_images(sd1_dir, data, tmp_path):
    from diffusers import DDPMScheduler

    from patina.core.dataset.images import load_rgb
    from patina.core.models.tiny import tiny_pipeline

    cfg = tiny_cfg(sd1_dir, data, tmp_path / "out", epoch=6, text_encoder_lr=0.0, unet_lr=2e-3, network_dim=8,
                   network_alpha=8.0)
    fin = train(cfg)
    assert fin.status == "finished", fin.message
    pipe = tiny_pipeline("sd1")
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    px = torch.stack([torch.from_numpy(__import__("numpy").asarray(load_rgb(p), dtype="float32") / 127.5 - 1)
                      .permute(2, 0, 1) for p in sorted((data / "2_sks toy").glob("*.png"))])
    with torch.no_grad():
        latents = pipe.vae.encode(px).latent_dist.mode() * pipe.vae.config.scaling_factor
    before = _denoise_loss(pipe, latents)
    pipe.load_lora_weights(fin.output)
    after = _denoise_loss(pipe, latents)
    assert after < before * 0.9, (before, after)


def test_events_plan_metrics_samples_and_logs(sd1_dir, data, tmp_path):
    cfg = tiny_cfg(sd1_dir, data, tmp_path / "out", epoch=2, sample_every_n_steps=3, sample_every_n_epochs=1,
                   sample_at_first=True, sample_sampler="euler", logging_dir=str(tmp_path / "log"),
                   sample_prompts="sks toy --w 64 --h 64 --s 2 --d 7\n# comment\nred toy --n blue --w 64 --h 64 --s 2",
                   save_every_n_epochs=1)
    ev = Collector()
    fin = train(cfg, ev)
    assert fin.status == "finished", fin.message
    plan_ev = ev.of(E.Plan)[0]
    assert plan_ev.images == 6 and plan_ev.samples_per_epoch == 12 and plan_ev.steps_per_epoch == 6
    assert plan_ev.total_steps == 12 and "2_sks toy: 6 images × 2 repeats" in plan_ev.text
    metrics = ev.of(E.Metrics)
    assert [m.step for m in metrics] == list(range(1, 13))
    assert all(m.loss > 0 and "unet" in m.lrs for m in metrics)
    assert ev.of(E.Progress)[-1].step == 12
    assert [e.epoch for e in ev.of(E.EpochEnd)] == [1, 2]
    # samples: before training, every 3 steps (3,6,9,12) and every epoch (1,2): both honoured
    samples = ev.of(E.Sample)
    steps = sorted({(s.step, s.epoch) for s in samples})
    assert len(samples) == 2 * (1 + 4 + 2)
    names = [re.sub(r"_\d{14}", "_TS", s.path.split("/")[-1]) for s in samples]
    assert "tiny_e000001_00_TS_7.png" in names and "tiny_000003_01_TS.png" in names
    assert all((tmp_path / "out" / "sample").joinpath(s.path.split("/")[-1]).exists() for s in samples)
    assert steps[0][0] == 0
    # checkpoints: epoch 1 file, final file; no epoch-2 duplicate of the final
    saved = [s.path.split("/")[-1] for s in ev.of(E.Saved)]
    assert saved == ["tiny-000001.safetensors", "tiny.safetensors"]
    # logs
    run_dir = next((tmp_path / "log").iterdir())
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 13))
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())


def test_stop_saves_a_valid_file_and_resume_reproduces_the_losses(sd1_dir, data, tmp_path):
    full = Collector()
    cfg = tiny_cfg(sd1_dir, data, tmp_path / "a", epoch=2, optimizer="AdamW", lr_scheduler="cosine", lr_warmup=20)
    assert train(cfg, full).status == "finished"
    want = [m.loss for m in full.of(E.Metrics)]

    commands = Commands()
    first = Collector(lambda e: isinstance(e, E.Metrics) and e.step == 5 and commands.request_stop())
    cfg_b = dict(cfg, output_dir=str(tmp_path / "b"))
    fin = train(cfg_b, first, commands)
    assert fin.status == "stopped" and fin.step == 5
    assert fin.output == str(tmp_path / "b" / "tiny-step00000005.safetensors") and fin.output in fin.message
    assert verify_lora(fin.output).ok
    assert not (tmp_path / "b" / "tiny.safetensors").exists()  # only a finished run writes <name>.safetensors
    state = tmp_path / "b" / "tiny-state"
    assert (state / "train_state.json").exists()
    # No generator state is saved or restored: every random number of the loop comes from (seed, epoch, micro).
    assert set(torch.load(state / "rng.pt", weights_only=True)) == {"scaler"}
    torch.manual_seed(987)
    torch.rand(100)

    second = Collector()
    fin2 = train(cfg_b, second, resume=str(state))
    assert fin2.status == "finished", fin2.message
    got = [m.loss for m in first.of(E.Metrics)] + [m.loss for m in second.of(E.Metrics)]
    assert [m.step for m in second.of(E.Metrics)] == list(range(6, 13))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_corrupt_images_are_skipped_and_listed(sd1_dir, data, tmp_path):
    folder = data / "2_sks toy"
    imgs.truncated_jpeg(folder / "broken.jpg")
    imgs.zero_byte(folder / "empty.png")
    imgs.text_file(folder / "notes.png")
    ev = Collector()
    fin = train(tiny_cfg(sd1_dir, data, tmp_path / "out", max_train_steps=2), ev)
    assert fin.status == "finished", fin.message
    skipped = {p.split("/")[-1] for p, _ in ev.of(E.Plan)[0].skipped}
    assert skipped == {"broken.jpg", "empty.png", "notes.png"}
    assert ev.of(E.Plan)[0].images == 6


def test_nan_loss_and_oom_end_with_a_message_and_the_last_good_state(sd1_dir, data, tmp_path, monkeypatch):
    import patina.core.train.losses as L

    real = L.per_sample_loss
    calls = {"n": 0}

    def nan_at_third(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(L, "per_sample_loss", nan_at_third)
    fin = train(tiny_cfg(sd1_dir, data, tmp_path / "nan"))
    assert fin.status == "failed" and "NaN" in fin.message and "learning rate" in fin.message
    assert fin.output and verify_lora(fin.output).ok  # step 2's LoRA

    calls["n"] = 0

    def oom_at_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **k)

    monkeypatch.setattr(L, "per_sample_loss", oom_at_third)
    fin = train(tiny_cfg(sd1_dir, data, tmp_path / "oom"))
    assert fin.status == "failed" and "out of memory" in fin.message and "Train batch size" in fin.message
    assert fin.output and (tmp_path / "oom" / "tiny-state").is_dir()


def test_user_errors_fail_with_a_message(sd1_dir, data, tmp_path):
    fin = train(tiny_cfg(tmp_path / "no-model", data, tmp_path / "out"))
    assert fin.status == "failed" and "no-model" in fin.message
    fin = train(tiny_cfg(sd1_dir, data / "2_sks toy", tmp_path / "out"))
    assert fin.status == "failed" and str(data) in fin.message  # "pick the parent folder"
    fin = train(tiny_cfg(sd1_dir, data, tmp_path / "out", network_dim=0))
    assert fin.status == "failed" and "network_dim" in fin.message


def test_plan_without_loading_a_model(sd1_dir, data, tmp_path):
    p = plan(tiny_cfg(sd1_dir, data, tmp_path / "out", epoch=3, train_batch_size=4))
    assert (p.images, p.steps_per_epoch, p.total_steps, p.family) == (6, 3, 9, "sd1")
    p = plan(tiny_cfg(sd1_dir, data, tmp_path / "out", max_train_steps=5))
    assert (p.total_steps, p.epochs) == (5, 1)
    p = plan(tiny_cfg(sd1_dir, data, tmp_path / "out", max_train_epochs=2, max_train_steps=5))
    assert (p.total_steps, p.epochs) == (12, 2)  # kohya: max_train_epochs wins over max_train_steps


def test_latent_disk_cache_is_reused_and_never_stale(sd1_dir, data, tmp_path, monkeypatch):
    from patina.core.paths import user_cache_dir

    cfg = tiny_cfg(sd1_dir, data, tmp_path / "out", max_train_steps=1, cache_latents_to_disk=True)
    assert train(cfg).status == "finished"
    cache = user_cache_dir() / "latents"
    first = {p.name for p in cache.iterdir()}
    assert len(first) == 6
    assert train(cfg).status == "finished"
    assert {p.name for p in cache.iterdir()} == first  # reused, nothing new
    imgs.save(data / "2_sks toy" / "img00.png", size=(64, 64), color=(1, 2, 3))
    assert train(cfg).status == "finished"
    assert len({p.name for p in cache.iterdir()} - first) == 1  # the changed image got a new entry


def test_caching_reports_its_progress_up_to_the_last_image(sd1_dir, data, tmp_path, monkeypatch):
    from patina.core.train import caching

    monkeypatch.setattr(caching, "PROGRESS_EVERY_S", 0.0)  # every batch of the VAE reports
    ev = Collector()
    assert train(tiny_cfg(sd1_dir, data, tmp_path / "out", max_train_steps=1, vae_batch_size=1), ev).status == "finished"
    counts = [re.search(r"Caching latents (\d+)/(\d+)", s.text) for s in ev.of(E.Status) if s.phase == "caching"]
    counts = [(int(m[1]), int(m[2])) for m in counts if m]
    assert counts == [(k, 6) for k in range(1, 7)]  # 1/6 … 6/6, not stuck at 1/6


def test_continue_from_network_weights_with_rank_from_the_file(sd1_dir, data, tmp_path):
    from patina.core.lora.kohya_format import read_lora

    first = train(tiny_cfg(sd1_dir, data, tmp_path / "a", max_train_steps=2, network_dim=4))
    assert first.status == "finished", first.message
    ev = Collector()
    cfg = tiny_cfg(sd1_dir, data, tmp_path / "b", max_train_steps=2, network_dim=16, network_weights=first.output,
                   dim_from_weights=True)
    fin = train(cfg, ev)
    assert fin.status == "finished", fin.message
    sd, _ = read_lora(fin.output)
    ranks = {v.shape[0] for k, v in sd.items() if k.endswith("lora_down.weight")}
    assert ranks == {4}
    assert any("Continuing from" in e.text for e in ev.of(E.Log))


def test_gradient_checkpointing_still_trains_every_module(sd1_dir, data, tmp_path):
    fin = train(tiny_cfg(sd1_dir, data, tmp_path / "gc", max_train_steps=2, gradient_checkpointing=True,
                         unet_lr=1e-2, text_encoder_lr=1e-2))
    assert fin.status == "finished", fin.message
    report = verify_lora(fin.output)
    assert report.ok and not report.untrained, report.untrained[:5]


def test_dataset_check_and_engine_plan_agree_on_steps(sd1_dir, tmp_path):
    from patina.core.dataset.folders import scan_dataset
    from patina.core.dataset.summary import summarize

    img = tmp_path / "img"
    for i, size in enumerate([(64, 64), (64, 64), (128, 64), (64, 128), (128, 64), (128, 128)]):
        imgs.save(img / "3_sks toy" / f"a{i}.png", size=size)
    for i, size in enumerate([(64, 64), (128, 64), (64, 128)]):
        imgs.save(tmp_path / "reg" / "1_toy" / f"r{i}.png", size=size)
    cfg = tiny_cfg(sd1_dir, img, tmp_path / "out", reg_data_dir=str(tmp_path / "reg"), train_batch_size=2, epoch=3,
                   max_resolution="128,128", min_bucket_reso=64, max_bucket_reso=256, bucket_reso_steps=64)
    p = plan(cfg)
    s = summarize(scan_dataset(img, tmp_path / "reg"), batch_size=2, epochs=3, resolution=(128, 128),
                  min_bucket_reso=64, max_bucket_reso=256, bucket_reso_steps=64)
    assert (s.steps_per_epoch, s.total_steps) == (p.steps_per_epoch, p.total_steps)
    assert p.steps_per_epoch > 18 // 2  # uneven buckets make more batches than samples / batch
    # one small-bucket rule (patina.core.dataset.plan): the same warnings in the check and the plan
    small = [w for w in p.warnings if w.startswith("bucket ")]
    assert small and small == s.bucket_warnings
    assert p.arithmetic == s.arithmetic.text


def test_samples_with_clip_skip_and_long_prompts(sd1_dir, data, tmp_path):
    ev = Collector()
    fin = train(tiny_cfg(sd1_dir, data, tmp_path / "cs", max_train_steps=1, clip_skip=2, max_token_length=150,
                         sample_at_first=True, sample_prompts="sks toy --n blurry --w 64 --h 64 --s 2"), ev)
    assert fin.status == "finished", fin.message
    assert len(ev.of(E.Sample)) == 1


def test_metadata_has_sd_scripts_shapes_for_buckets_optimizer_and_reg_dirs(sd1_dir, tmp_path):
    """AUTOMATIC1111's metadata panel reads ss_bucket_info only in sd-scripts' shape; ss_optimizer is
    module.Class; regularisation folders go to ss_reg_dataset_dirs, not ss_dataset_dirs."""
    from safetensors import safe_open

    img = tmp_path / "img"
    for i, size in enumerate([(64, 64), (64, 64), (128, 64)]):
        imgs.save(img / "2_sks toy" / f"a{i}.png", size=size)
    imgs.save(tmp_path / "reg" / "1_toy" / "r0.png", size=(64, 128))
    cfg = tiny_cfg(sd1_dir, img, tmp_path / "out", reg_data_dir=str(tmp_path / "reg"), epoch=1,
                   max_resolution="128,128", min_bucket_reso=64, max_bucket_reso=256, bucket_reso_steps=64,
                   optimizer_args="weight_decay=0.1")
    fin = train(cfg)
    assert fin.status == "finished", fin.message
    with safe_open(fin.output, "pt") as f:
        md = f.metadata()
    info = json.loads(md["ss_bucket_info"])
    buckets = {tuple(b["resolution"]): b["count"] for b in info["buckets"].values()}
    assert buckets == {(64, 64): 4, (64, 128): 1, (128, 64): 2}  # images × repeats, reg included
    assert sorted(info["buckets"]) == ["0", "1", "2"] and info["mean_img_ar_error"] == 0.0
    assert md["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.1)"
    assert json.loads(md["ss_dataset_dirs"]) == {"2_sks toy": {"n_repeats": 2, "img_count": 3}}
    assert json.loads(md["ss_reg_dataset_dirs"]) == {"1_toy": {"n_repeats": 1, "img_count": 1}}
