"""Offline base-model loading (patina.core.models.detect / loading / checkpoint_files) with tiny random models only.

Nothing here downloads anything: HF_HUB_OFFLINE=1 (conftest), an empty HF_HOME, and for the loading
tests the socket layer itself refuses connections.
"""

from __future__ import annotations

import json
import os
import socket
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from patina.core.models import tiny
from patina.core.models.checkpoint_files import load_state_dict_safely, read_safetensors_header
from patina.core.errors import PatinaError
from patina.core.models.detect import ModelInfo, detect_family
from patina.core.models.loading import (
    BaseModel,
    _tokenizer,
    clip_tokenizer_dir,
    load_base_model,
    load_vae,
    model_configs_dir,
    shipped_config_dir,
)

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """An empty Hugging Face cache and no network at all: any connection attempt fails the test."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def tiny_sd1_single(work):
    """A tiny SD1 checkpoint in LDM/A1111 layout + the config folder from_single_file needs."""
    ckpt = tiny.save_tiny_single_file(work / "sd1" / "tiny-sd1.safetensors", "sd1", seed=0)
    cfg = tiny.save_tiny_config_dir(work / "sd1" / "config", "sd1")
    return ckpt, cfg


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sb)


def _write_safetensors(path: Path, keys: dict[str, tuple], metadata: dict | None = None) -> Path:
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path), metadata=metadata)
    return path


# ---------------------------------------------------------------------------------------------------
# Shipped resources
# ---------------------------------------------------------------------------------------------------


def test_shipped_tokenizer_is_the_real_clip_vocabulary():
    tok = _tokenizer(shipped_config_dir("sd1") / "tokenizer", "sd1")
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == CAT_IDS
    assert tok("A  Photo of a CAT!").input_ids == CAT_IDS[:6] + [256, 49407]  # lower-cased; "!</w>" is 256
    padded = tok("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[7:] == [49407] * 70
    # SD2 and SDXL's second tokenizer pad with "!" (id 0), as open_clip does.
    for fam, sub, second in (("sd2", "tokenizer", False), ("sdxl", "tokenizer_2", True)):
        t = _tokenizer(shipped_config_dir(fam) / sub, fam, second=second)
        assert t.pad_token == "!" and t.pad_token_id == 0
        assert t("a photo of a cat", padding="max_length", max_length=77).input_ids == CAT_IDS + [0] * 70
    sdxl1 = _tokenizer(shipped_config_dir("sdxl") / "tokenizer", "sdxl")
    assert sdxl1.pad_token_id == 49407 and sdxl1.model_max_length == 77
    # The vocabulary is stored once, not per model folder.
    assert (clip_tokenizer_dir() / "vocab.json").stat().st_size > 900_000
    assert not list(model_configs_dir().rglob("vocab.json"))


def test_tokenizer_generator_reproduces_the_shipped_files():
    """packaging/make_clip_tokenizer.py builds exactly what is committed (checked from the files it
    writes, without the open_clip wheel: merges.txt + the byte alphabet determine vocab.json)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_clip_tokenizer", Path(__file__).resolve().parent.parent / "packaging" / "make_clip_tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    merges_text = (clip_tokenizer_dir() / "merges.txt").read_text(encoding="utf-8")
    merges = merges_text.splitlines()[1:]
    assert len(merges) == 48894
    symbols = mod.byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [mod.BOS, mod.EOS]
    vocab = json.loads((clip_tokenizer_dir() / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == {t: i for i, t in enumerate(tokens)}
    files = mod.tokenizer_files(vocab, merges)
    assert files["merges.txt"].decode("utf-8") == merges_text
    assert files["vocab.json"] == (clip_tokenizer_dir() / "vocab.json").read_bytes()


def test_shipped_configs_are_the_published_ones():
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    expect_unet = {
        "sd1": dict(cross_attention_dim=768, attention_head_dim=8, sample_size=64,
                    block_out_channels=[320, 640, 1280, 1280]),
        "sd2": dict(cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
                    sample_size=64, upcast_attention=False),
        "sd2-v": dict(cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
                      sample_size=96, upcast_attention=True),
        "sdxl": dict(cross_attention_dim=2048, attention_head_dim=[5, 10, 20], transformer_layers_per_block=[1, 2, 10],
                     addition_embed_type="text_time", addition_time_embed_dim=256,
                     projection_class_embeddings_input_dim=2816, sample_size=128, use_linear_projection=True),
    }
    expect_te = {
        "sd1": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu"),
        "sd2": dict(hidden_size=1024, num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu",
                    intermediate_size=4096),
        "sdxl": dict(hidden_size=768, num_hidden_layers=12, hidden_act="quick_gelu"),
    }
    expect_pred = {"sd1": "epsilon", "sd2": "epsilon", "sd2-v": "v_prediction", "sdxl": "epsilon"}
    for name in ("sd1", "sd2", "sd2-v", "sdxl"):
        root = model_configs_dir() / name
        index = json.loads((root / "model_index.json").read_text())
        assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
        unet = UNet2DConditionModel.load_config(str(root), subfolder="unet")
        for k, v in expect_unet[name].items():
            assert unet[k] == v, (name, k)
        vae = AutoencoderKL.load_config(str(root), subfolder="vae")
        assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["latent_channels"] == 4
        te = CLIPTextConfig.from_pretrained(str(root / "text_encoder"))
        for k, v in expect_te[name.split("-")[0]].items():
            assert getattr(te, k) == v, (name, k)
        assert te.vocab_size == 49408 and te.max_position_embeddings == 77
        sched = DDIMScheduler.load_config(str(root), subfolder="scheduler")
        assert (sched["beta_start"], sched["beta_end"], sched["beta_schedule"]) == (0.00085, 0.012, "scaled_linear")
        assert sched.get("prediction_type", "epsilon") == expect_pred[name]
    te2 = CLIPTextConfig.from_pretrained(str(model_configs_dir() / "sdxl" / "text_encoder_2"))
    assert (te2.hidden_size, te2.num_hidden_layers, te2.projection_dim, te2.intermediate_size) == (1280, 32, 1280, 5120)
    assert AutoencoderKL.load_config(str(model_configs_dir() / "sdxl"), subfolder="vae")["scaling_factor"] == 0.13025


def test_real_architectures_from_shipped_configs_have_the_known_sizes():
    """Built on the meta device (no memory): the parameter counts of the published models."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def count(m):
        return sum(p.numel() for p in m.parameters())

    root = model_configs_dir()
    with init_empty_weights():
        sd15 = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(root / "sd1"), subfolder="unet"))
        assert count(sd15) == 859_520_964
        sd21 = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(root / "sd2"), subfolder="unet"))
        assert count(sd21) == 865_910_724
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(root / "sd1"), subfolder="vae"))
        assert count(vae) == 83_653_863
        assert count(CLIPTextModel(CLIPTextConfig.from_pretrained(str(root / "sd1" / "text_encoder")))) == 123_060_480
        assert count(CLIPTextModel(CLIPTextConfig.from_pretrained(str(root / "sd2" / "text_encoder")))) == 340_387_840
        assert count(CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(str(root / "sdxl" / "text_encoder_2")))) == 694_659_840
    assert next(sd15.parameters()).device.type == "meta"


# ---------------------------------------------------------------------------------------------------
# Single-file checkpoints (LDM / A1111 layout)
# ---------------------------------------------------------------------------------------------------


def test_tiny_sd1_single_file_loads_offline_and_reproduces_the_unet(tiny_sd1_single):
    ckpt, cfg = tiny_sd1_single
    keys, _ = read_safetensors_header(ckpt)
    assert any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in keys)  # really LDM names
    assert any(k.startswith("first_stage_model.decoder.up.1.upsample.") for k in keys)  # 2-level VAE, shifted
    assert not any(k.startswith(("down_blocks.", "unet.")) for k in keys)

    info = detect_family(ckpt)
    assert info == ModelInfo(family="sd1", v_prediction=False, layout="single_file", path=ckpt, has_vae=True)

    model = load_base_model(ckpt, config_dir=cfg)
    assert isinstance(model, BaseModel) and model.family == "sd1" and not model.v_prediction
    ref = tiny.tiny_pipeline("sd1", seed=0)

    torch.manual_seed(123)
    latents = torch.randn(2, 4, 16, 16)
    ids = torch.randint(0, tiny.TINY_VOCAB_SIZE, (2, 77))
    t = torch.tensor([10, 700])
    with torch.no_grad():
        ctx_ref = ref.text_encoder(ids)[0]
        ctx = model.text_encoders[0](ids)[0]
        assert torch.allclose(ctx, ctx_ref, atol=1e-6)
        out = model.unet(latents, t, encoder_hidden_states=ctx).sample
        out_ref = ref.unet(latents, t, encoder_hidden_states=ctx_ref).sample
        assert torch.allclose(out, out_ref, atol=1e-5)
        img = torch.rand(1, 3, 32, 32) * 2 - 1
        assert torch.allclose(model.vae.encode(img).latent_dist.mean, ref.vae.encode(img).latent_dist.mean, atol=1e-5)
        assert torch.allclose(model.vae.decode(latents[:1]).sample, ref.vae.decode(latents[:1]).sample, atol=1e-5)
    assert _same_weights(model.unet, ref.unet) and _same_weights(model.vae, ref.vae)
    # tokenizer came from the config folder (the tiny byte-level one), schedulers carry the prediction type
    tok = model.tokenizers[0]
    assert len(tok) == tiny.TINY_VOCAB_SIZE
    ids_ab = tok("ab").input_ids
    assert ids_ab[0] == tiny.BOS_ID and ids_ab[-1] == tiny.EOS_ID and len(ids_ab) == 4
    assert type(model.noise_scheduler).__name__ == "DDPMScheduler"
    assert model.noise_scheduler.config.prediction_type == "epsilon"
    assert model.noise_scheduler.config.num_train_timesteps == 1000
    assert model.scheduler_config["prediction_type"] == "epsilon"


def test_single_file_v_prediction_override_and_pipeline(tiny_sd1_single):
    ckpt, cfg = tiny_sd1_single
    model = load_base_model(ckpt, config_dir=cfg, v_parameterization=True, dtype=torch.float16)
    assert model.v_prediction is True
    assert model.noise_scheduler.config.prediction_type == "v_prediction"
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    assert next(model.unet.parameters()).dtype == torch.float16
    assert next(model.text_encoders[0].parameters()).dtype == torch.float16
    pipe = model.pipeline()
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None and pipe.unet is model.unet
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    # components can be swapped (the training engine passes its LoRA-wrapped UNet / text encoders)
    other_unet, other_te = tiny.tiny_pipeline("sd1", seed=5).unet, tiny.tiny_pipeline("sd1", seed=6).text_encoder
    pipe = model.pipeline(unet=other_unet, text_encoders=[other_te])
    assert pipe.unet is other_unet and pipe.text_encoder is other_te and pipe.vae is model.vae


def test_tiny_sdxl_and_sd2_single_files_load_every_component(work):
    for fam in ("sdxl", "sd2"):
        ckpt = tiny.save_tiny_single_file(work / fam / f"tiny-{fam}.safetensors", fam, seed=3)
        cfg = tiny.save_tiny_config_dir(work / fam / "config", fam)
        keys, _ = read_safetensors_header(ckpt)
        marker = "conditioner.embedders.1.model." if fam == "sdxl" else "cond_stage_model.model."
        assert any(k.startswith(marker + "transformer.resblocks.0.attn.in_proj_weight") for k in keys)
        ref = tiny.tiny_pipeline_any(fam, seed=3)
        model = load_base_model(ckpt, config_dir=cfg, v_parameterization=(fam == "sd2") or None)
        assert model.family == fam
        assert _same_weights(model.unet, ref.unet) and _same_weights(model.vae, ref.vae)
        refs = [ref.text_encoder] + ([ref.text_encoder_2] if fam == "sdxl" else [])
        assert len(model.text_encoders) == len(refs) == len(model.tokenizers)
        for te, r in zip(model.text_encoders, refs):
            assert type(te) is type(r) and _same_weights(te, r)
        ids = torch.randint(0, tiny.TINY_VOCAB_SIZE, (1, 77))
        with torch.no_grad():
            assert torch.allclose(model.text_encoders[-1](ids)[0], refs[-1](ids)[0], atol=1e-6)
        if fam == "sdxl":
            assert type(model.pipeline()).__name__ == "StableDiffusionXLPipeline"
            assert [t.pad_token for t in model.tokenizers] == ["<|endoftext|>", "!"]
        else:
            assert model.v_prediction and model.noise_scheduler.config.prediction_type == "v_prediction"
            # SD2 files don't say eps vs v: without the flag Patina assumes epsilon and says so.
            info = detect_family(ckpt)
            assert info.family == "sd2" and info.v_prediction is None
            plain = load_base_model(ckpt, config_dir=cfg)
            assert plain.v_prediction is False and any("v-prediction" in w for w in plain.warnings)


def test_ckpt_checkpoint_loads_through_the_restricted_unpickler(work):
    ckpt = tiny.save_tiny_single_file(work / "ckpt" / "tiny-sd1.ckpt", "sd1", seed=0)
    info = detect_family(ckpt)
    assert (info.family, info.layout) == ("sd1", "ckpt")
    cfg = tiny.save_tiny_config_dir(work / "ckpt" / "config", "sd1")
    model = load_base_model(ckpt, config_dir=cfg)
    assert _same_weights(model.unet, tiny.tiny_pipeline("sd1", seed=0).unet)
    # The format is judged from the bytes, not the name: a .safetensors renamed to .ckpt still works.
    renamed = work / "ckpt" / "renamed.ckpt"
    renamed.write_bytes(tiny.save_tiny_single_file(work / "ckpt" / "orig.safetensors", "sd1").read_bytes())
    assert detect_family(renamed).layout == "single_file"
    assert _same_weights(load_base_model(renamed, config_dir=cfg).unet, model.unet)


def test_benign_lightning_ckpt_with_numpy_values_loads(tmp_path, monkeypatch):
    import sys
    import types

    import numpy as np

    class ModelCheckpoint:  # what a CompVis/Lightning training checkpoint pickles in "callbacks"
        pass

    ModelCheckpoint.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    cb = ModelCheckpoint()
    cb.__dict__.update({"monitor": "val/loss", "best_model_score": 0.5})
    obj = {"state_dict": {"model.x": torch.arange(3.0)}, "global_step": 470000, "epoch": 6,
           "callbacks": {"ModelCheckpoint": cb}, "loss": np.float64(0.125), "dtype": np.dtype("float32")}
    path = tmp_path / "lightning.ckpt"
    with monkeypatch.context() as m:  # a fake pytorch_lightning only while saving
        fake = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
        fake.ModelCheckpoint = ModelCheckpoint
        m.setitem(sys.modules, "pytorch_lightning", types.ModuleType("pytorch_lightning"))
        m.setitem(sys.modules, "pytorch_lightning.callbacks", types.ModuleType("pytorch_lightning.callbacks"))
        m.setitem(sys.modules, "pytorch_lightning.callbacks.model_checkpoint", fake)
        torch.save(obj, path)
    assert "pytorch_lightning" not in sys.modules
    assert "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in \
        torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert torch.equal(load_state_dict_safely(path)["model.x"], torch.arange(3.0))

    # numpy 1.x writes the scalar constructor as numpy.core.multiarray.scalar: also allowed.
    np1 = tmp_path / "numpy1.ckpt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(np1, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(item, data)
    assert torch.equal(load_state_dict_safely(np1)["model.x"], torch.arange(3.0))


class _Payload:
    """Pickles into a call of os.system that would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_without_running(tmp_path, zip_format):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    sd = tiny.tiny_ldm_state_dict("sd1") if zip_format else {"model.diffusion_model.x": torch.ones(1)}
    torch.save({"state_dict": sd, "x": _Payload(marker)}, path, _use_new_zipfile_serialization=zip_format)
    for call in (lambda: load_state_dict_safely(path), lambda: detect_family(path), lambda: load_base_model(path)):
        with pytest.raises(PatinaError) as err:
            call()
        msg = str(err.value)
        assert "evil.ckpt" in msg and "Refusing" in msg and "system" in msg and ".safetensors" in msg
        assert "Traceback" not in msg
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# Detection from tensor names (synthetic headers)
# ---------------------------------------------------------------------------------------------------

UNET = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
        "model.diffusion_model.out.2.weight": (4, 8, 3, 3)}
VAE = {"first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3)}


def test_family_detection_from_header_keys(tmp_path, monkeypatch):
    cases = {
        "sd1": {**UNET, **VAE, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (4, 2)},
        "sd2": {**UNET, **VAE, "cond_stage_model.model.token_embedding.weight": (4, 2)},
        "sdxl": {**UNET, **VAE, "model.diffusion_model.label_emb.0.0.weight": (4, 2),
                 "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (4, 2),
                 "conditioner.embedders.1.model.token_embedding.weight": (4, 2)},
    }
    files = {fam: _write_safetensors(tmp_path / f"{fam}.safetensors", keys) for fam, keys in cases.items()}
    # Detection must not read tensor data: make loading tensors impossible.
    import safetensors.torch

    def no_tensors(*a, **k):
        raise AssertionError("detect_family loaded tensors")

    monkeypatch.setattr(safetensors.torch, "load_file", no_tensors)
    monkeypatch.setattr(safetensors, "safe_open", no_tensors)
    for fam, path in files.items():
        info = detect_family(path)
        assert (info.family, info.layout, info.path, info.has_vae) == (fam, "single_file", path, True)
        assert info.v_prediction is (None if fam == "sd2" else False)

    # v-prediction markers: SAI model-spec metadata, or a v_pred tensor (v-pred SDXL finetunes)
    v_meta = _write_safetensors(tmp_path / "sd2v.safetensors", cases["sd2"], {"modelspec.prediction_type": "v"})
    assert detect_family(v_meta).v_prediction is True
    eps_meta = _write_safetensors(tmp_path / "sd2e.safetensors", cases["sd2"],
                                  {"modelspec.prediction_type": "epsilon"})
    assert detect_family(eps_meta).v_prediction is False
    vpred = _write_safetensors(tmp_path / "xlv.safetensors", {**cases["sdxl"], "v_pred": (0,)})
    assert detect_family(vpred).v_prediction is True
    no_vae = {k: v for k, v in cases["sd1"].items() if not k.startswith("first_stage_model.")}
    info = detect_family(_write_safetensors(tmp_path / "novae.safetensors", no_vae))
    assert info.family == "sd1" and info.has_vae is False


def test_diffusers_folders_detect_and_load(work):
    expected = {"sd1": ("StableDiffusionPipeline", False, 1), "sdxl": ("StableDiffusionXLPipeline", False, 2),
                "sd2": ("StableDiffusionPipeline", True, 1)}
    for fam, (pipe_name, v, n_te) in expected.items():
        folder = (tiny.save_tiny_diffusers(work / f"diffusers-{fam}", fam) if fam != "sd2"
                  else tiny.save_tiny_diffusers_any(work / f"diffusers-{fam}", fam))
        info = detect_family(folder)
        assert (info.family, info.layout, info.v_prediction) == (fam, "diffusers", v)
        assert detect_family(folder / "model_index.json").family == fam
        model = load_base_model(folder)
        assert model.family == fam and model.v_prediction is v
        assert len(model.text_encoders) == n_te == len(model.tokenizers)
        assert model.noise_scheduler.config.prediction_type == ("v_prediction" if v else "epsilon")
        assert type(model.pipeline()).__name__ == pipe_name
        ref = tiny.tiny_pipeline_any(fam)
        assert _same_weights(model.unet, ref.unet)
    with pytest.raises(PatinaError, match="SDXL"):
        load_base_model(work / "diffusers-sd1", family="sdxl")


def test_separate_vae_file_or_folder_replaces_the_builtin_one(tiny_sd1_single, work):
    ckpt, cfg = tiny_sd1_single
    other = tiny.tiny_pipeline("sd1", seed=42).vae
    ldm_vae = work / "vae-ldm.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.vae_to_ldm(other.state_dict(), other.config).items()}, str(ldm_vae))
    diff_vae = work / "vae-diffusers.safetensors"
    save_file(other.state_dict(), str(diff_vae))
    other.save_pretrained(work / "vae-folder")
    for vae_path in (ldm_vae, diff_vae, work / "vae-folder"):
        model = load_base_model(ckpt, config_dir=cfg, vae_path=vae_path)
        assert _same_weights(model.vae, other), vae_path
    # a base model without a VAE needs one
    sd = {k: v for k, v in tiny.tiny_ldm_state_dict("sd1").items() if not k.startswith("first_stage_model.")}
    novae = work / "novae.safetensors"
    save_file(sd, str(novae))
    with pytest.raises(PatinaError, match="contains no VAE"):
        load_base_model(novae, config_dir=cfg)
    assert _same_weights(load_base_model(novae, config_dir=cfg, vae_path=ldm_vae).vae, other)
    with pytest.raises(PatinaError, match="is a LoRA file .no autoencoder weights"):
        load_vae(tmp_lora(work), family="sd1", config_dir=cfg)


def tmp_lora(work: Path) -> Path:
    return _write_safetensors(work / "style-lora.safetensors", {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (8, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": ()})


# ---------------------------------------------------------------------------------------------------
# Things that are not supported base models: one clear message each
# ---------------------------------------------------------------------------------------------------


def test_non_model_inputs_give_one_clear_message(tmp_path, tiny_sd1_single):
    ckpt, cfg = tiny_sd1_single
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    fake_st = tmp_path / "fake.safetensors"
    fake_st.write_text("definitely not safetensors")
    comp_folder = tmp_path / "unet_only_folder"
    comp_folder.mkdir()
    (comp_folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    empty_folder = tmp_path / "downloads"
    empty_folder.mkdir()
    (empty_folder / "model-a.safetensors").write_bytes(b"")
    inpaint = dict(UNET, **{"model.diffusion_model.input_blocks.0.0.weight": (8, 9, 3, 3),
                            "cond_stage_model.transformer.text_model.x": (1,)})
    sd = tiny.tiny_ldm_state_dict("sd1")
    truncated = {k: v for k, v in sd.items() if "output_blocks.2." not in k}
    cases = [
        (tmp_lora(tmp_path), ["LoRA", "not a base model"]),
        (_write_safetensors(tmp_path / "random.safetensors", {"foo.weight": (2, 2), "bar": (3,)}),
         ["not a Stable Diffusion checkpoint", "foo.weight"]),
        (_write_safetensors(tmp_path / "vae.safetensors", {"encoder.down.0.block.0.conv1.weight": (2, 2),
                                                           "decoder.up.0.block.0.conv1.weight": (2, 2)}),
         ["VAE", "VAE field"]),
        (_write_safetensors(tmp_path / "unet.safetensors", {"conv_in.weight": (2, 2), "down_blocks.0.x": (1,)}),
         ["UNet weights file of a diffusers model", "model_index.json"]),
        (_write_safetensors(tmp_path / "emb.safetensors", {"emb_params": (2, 768)}), ["textual-inversion"]),
        (_write_safetensors(tmp_path / "unet_no_te.safetensors", UNET), ["no text encoder"]),
        (_write_safetensors(tmp_path / "inpaint.safetensors", inpaint), ["inpainting", "9 input channels"]),
        (_write_safetensors(tmp_path / "refiner.safetensors",
                            {**UNET, "conditioner.embedders.0.model.token_embedding.weight": (2, 2)}), ["refiner"]),
        (_write_safetensors(tmp_path / "flux.safetensors", {"double_blocks.0.img_attn.norm.key_norm.scale": (2,)}),
         ["FLUX"]),
        (text, ["text file, not a model checkpoint", ".safetensors"]),
        (fake_st, ["not a valid .safetensors file", "text file"]),
        (tmp_path / "missing.safetensors", ["does not exist"]),
        (Path("runwayml/stable-diffusion-v1-5"), ["never downloads"]),
        (comp_folder, ["UNet2DConditionModel component", "parent folder"]),
        (empty_folder, ["no model_index.json", "model-a.safetensors"]),
        (model_configs_dir() / "sd1", ["no UNet weights"]),
    ]
    for path, phrases in cases:
        for call in (detect_family, load_base_model):
            with pytest.raises(PatinaError) as err:
                call(path)
            msg = str(err.value)
            for phrase in phrases:
                assert phrase in msg, (path, msg)
            if path.exists() or "never" in phrases[0]:
                assert "Stable Diffusion 1.x, 2.x and SDXL" in msg or "does not exist" in msg, msg
            assert "Traceback" not in msg and "\n" not in msg

    # A damaged checkpoint (tensors missing) is caught instead of leaving meta tensors behind.
    save_file(truncated, str(tmp_path / "truncated.safetensors"))
    with pytest.raises(PatinaError, match="UNet weights are incomplete"):
        load_base_model(tmp_path / "truncated.safetensors", config_dir=cfg)
    # Without config_dir the bundled SD 1.5 config is used (offline): the tiny weights don't fit it.
    with pytest.raises(PatinaError, match=r"tiny-sd1.safetensors: could not load the UNet \(.*expected shape"):
        load_base_model(ckpt)
    assert shipped_config_dir("sd2", v_prediction=True).name == "sd2-v" and shipped_config_dir("sd2").name == "sd2"
    # A detected family that contradicts the requested one, and nonsense family names.
    with pytest.raises(PatinaError, match="set to SDXL.*Stable Diffusion 1.x"):
        load_base_model(ckpt, family="sdxl", config_dir=cfg)
    with pytest.raises(PatinaError, match="Unknown model type"):
        load_base_model(ckpt, family="sd3", config_dir=cfg)
