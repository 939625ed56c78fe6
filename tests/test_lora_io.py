"""LoRA files (patina.core.lora.kohya_format, patina.core.lora.verify): metadata, atomic save with A1111 hashes, reading,
Verify LoRA."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from patina.core.errors import PatinaError
from patina.core.lora.kohya_format import (
    build_metadata,
    model_hashes,
    read_lora,
    read_lora_metadata,
    save_lora,
    tensor_data_hash,
)
from patina.core.lora.network import build_network
from patina.core.lora.targets import NetworkSpec
from patina.core.lora.verify import CLIENTS, format_verify_report, verify_lora
from patina.core.models.tiny import tiny_sd1_components, tiny_sdxl_components

VALUES = {
    "LoRA_type": "Kohya LoCon", "network_dim": 16, "network_alpha": 8, "conv_dim": 4, "conv_alpha": 1,
    "learning_rate": 1e-4, "unet_lr": 1e-4, "text_encoder_lr": 5e-5, "optimizer": "AdamW8bit",
    "optimizer_args": "weight_decay=0.1", "lr_scheduler": "cosine", "train_batch_size": 2,
    "gradient_accumulation_steps": 2, "epoch": 10, "max_resolution": "768,512", "output_name": "my_lora",
    "seed": 42, "clip_skip": 2, "mixed_precision": "bf16", "noise_offset": 0.05, "min_snr_gamma": 5,
    "metadata_title": "My LoRA", "metadata_author": "me", "metadata_description": "test",
    "metadata_license": "CreativeML Open RAIL-M", "metadata_tags": "style, test", "training_comment": "hello",
    "network_dropout": 0.1, "cache_latents": True,
}


@functools.lru_cache(maxsize=None)
def _base(family: str):
    c = tiny_sdxl_components(0) if family == "sdxl" else tiny_sd1_components(0)
    return c["unet"], [c["text_encoder"]] + ([c["text_encoder_2"]] if family == "sdxl" else [])


def lora_sd(family="sd1", conv_dim=2, seed=1, dtype=torch.float16) -> dict:
    unet, tes = _base(family)
    net = build_network(copy.deepcopy(unet), [copy.deepcopy(t) for t in tes], family,
                        NetworkSpec(network_dim=4, network_alpha=2, conv_dim=conv_dim, conv_alpha=1))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in net.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net.kohya_state_dict(dtype)


def metadata(family="sd1", **kw):
    args = dict(values=VALUES, family=family, v_prediction=False, base_model_name="v1-5-pruned.safetensors",
                num_train_images=20, num_reg_images=0, num_batches_per_epoch=10, steps=100, epoch=10,
                tag_frequency={"10_cat": {"cat": 20, "sitting": 7}}, bucket_info={"buckets": {"0": {"resolution": [512, 512], "count": 20}}, "mean_img_ar_error": 0.0},
                dataset_dirs={"10_cat": {"n_repeats": 10, "img_count": 20}}, training_started_at=1700000000.5,
                session_id=1234)
    args.update(kw)
    return build_metadata(**args)


# ------------------------------------------------------------------------------------------------ metadata

def test_metadata_keys_and_values():
    md = metadata()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in md.items())
    for key in ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_v2",
                "ss_base_model_version", "ss_output_name", "ss_resolution", "ss_tag_frequency",
                "ss_training_started_at", "ss_session_id", "ss_num_train_images", "ss_steps", "ss_epoch",
                "modelspec.sai_model_spec", "modelspec.architecture", "modelspec.implementation",
                "modelspec.title", "modelspec.resolution", "modelspec.prediction_type", "modelspec.date"):
        assert key in md, key
    assert "lora_adapter_metadata" not in md
    assert md["ss_network_module"] == "networks.lora"
    assert md["ss_network_dim"] == "16" and md["ss_network_alpha"] == "8.0"
    assert json.loads(md["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "1"}
    assert md["ss_v2"] == "False" and md["ss_base_model_version"] == "sd_v1"
    assert md["ss_resolution"] == "(768, 512)" and md["modelspec.resolution"] == "768x512"
    assert json.loads(md["ss_tag_frequency"]) == {"10_cat": {"cat": 20, "sitting": 7}}
    assert json.loads(md["ss_dataset_dirs"])["10_cat"]["img_count"] == 20
    assert json.loads(md["ss_bucket_info"])["buckets"]["0"]["count"] == 20
    assert md["ss_training_started_at"] == "1700000000.5" and md["ss_session_id"] == "1234"
    assert md["ss_sd_model_name"] == "v1-5-pruned.safetensors"
    assert md["ss_optimizer"] == "AdamW8bit(weight_decay=0.1)"
    assert md["ss_total_batch_size"] == "4" and md["ss_num_epochs"] == "10"
    assert md["ss_cache_latents"] == "True" and md["ss_clip_skip"] == "2"
    assert md["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert md["modelspec.implementation"] == "diffusers"
    assert md["modelspec.title"] == "My LoRA" and md["modelspec.author"] == "me"
    assert md["modelspec.license"] == "CreativeML Open RAIL-M" and md["modelspec.tags"] == "style, test"
    assert md["modelspec.encoder_layer"] == "2" and md["modelspec.prediction_type"] == "epsilon"
    assert md["modelspec.sai_model_spec"] == "1.0.1"


def test_metadata_per_family():
    xl = metadata("sdxl", values={**VALUES, "max_resolution": ""})
    assert xl["ss_base_model_version"] == "sdxl_base_v1-0" and xl["ss_v2"] == "False"
    assert xl["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert xl["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert xl["ss_resolution"] == "(1024, 1024)"
    v2 = metadata("sd2", v_prediction=True)
    assert v2["ss_v2"] == "True" and v2["ss_base_model_version"] == "sd_v2_v"
    assert v2["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora" and v2["modelspec.prediction_type"] == "v"
    plain = metadata(values={**VALUES, "LoRA_type": "Standard"})
    assert json.loads(plain["ss_network_args"]) == {}
    with pytest.raises(PatinaError, match="family"):
        metadata("flux")


# ------------------------------------------------------------------------------------------------ save / read

def _data_sha256(path) -> str:
    blob = open(path, "rb").read()
    n = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + n:]).hexdigest()


def test_save_round_trip_metadata_and_hashes(tmp_path):
    sd = lora_sd()
    md = metadata()
    path = tmp_path / "out.safetensors"
    written = save_lora(path, sd, md, precision="fp16")
    with safe_open(str(path), framework="pt") as f:
        on_disk = f.metadata()
    assert on_disk == written
    assert {k: v for k, v in on_disk.items() if not k.startswith("sshs_")} == md
    assert "lora_adapter_metadata" not in on_disk
    assert all(isinstance(v, str) for v in on_disk.values())
    # sshs_model_hash = sha256 of everything after the header, i.e. of the tensor data
    assert on_disk["sshs_model_hash"] == _data_sha256(path) == tensor_data_hash(path)
    assert len(on_disk["sshs_legacy_hash"]) == 8
    loaded, md2 = read_lora(path)
    assert md2 == on_disk and read_lora_metadata(path) == on_disk
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert all(loaded[k].ndim == 0 for k in sd if k.endswith(".alpha"))

    # the tensor-data hash does not change when metadata is edited afterwards
    edited = tmp_path / "edited.safetensors"
    safetensors.torch.save_file(loaded, str(edited), metadata={**on_disk, "ss_output_name": "renamed"})
    assert _data_sha256(edited) == on_disk["sshs_model_hash"]


def test_save_precision_and_contiguity(tmp_path):
    sd = lora_sd(dtype=torch.float32)
    name = next(k for k in sd if k.endswith("lora_down.weight") and sd[k].ndim == 2)
    sd[name] = sd[name].t().contiguous().t()  # non-contiguous view
    assert not sd[name].is_contiguous()
    for precision, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("float", torch.float32)):
        path = tmp_path / f"{precision}.safetensors"
        save_lora(path, sd, {}, precision=precision)
        loaded, _ = read_lora(path)
        assert {t.dtype for t in loaded.values()} == {dtype}
        assert torch.equal(loaded[name], sd[name].to(dtype))
    with pytest.raises(PatinaError, match="precision"):
        save_lora(tmp_path / "x.safetensors", sd, {}, precision="int8")


def test_legacy_hash_matches_definition(tmp_path):
    big = {"lora_unet_x.lora_down.weight": torch.arange(400_000, dtype=torch.float32).reshape(4, 100_000),
           "lora_unet_x.lora_up.weight": torch.ones(8, 4), "lora_unet_x.alpha": torch.tensor(4.0)}
    md = {"ss_network_dim": "4", "modelspec.title": "t"}
    written = save_lora(tmp_path / "big.safetensors", big, md, precision="float")
    # legacy: bytes [0x100000, 0x110000) of the file re-serialised with only the ss_* metadata
    blob = safetensors.torch.save(big, metadata={"ss_network_dim": "4"})
    assert written["sshs_legacy_hash"] == hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    assert written["sshs_legacy_hash"] != hashlib.sha256(b"").hexdigest()[:8]
    assert model_hashes(big, md) == (written["sshs_model_hash"], written["sshs_legacy_hash"])


def test_save_rejects_bad_metadata(tmp_path):
    sd = lora_sd(conv_dim=0)
    with pytest.raises(ValueError, match="lora_adapter_metadata"):
        save_lora(tmp_path / "x.safetensors", sd, {"lora_adapter_metadata": "{}"})
    with pytest.raises(TypeError, match="str"):
        save_lora(tmp_path / "x.safetensors", sd, {"ss_network_dim": 4})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["tensor_write", "replace"])
def test_save_is_atomic(tmp_path, monkeypatch, where):
    path = tmp_path / "lora.safetensors"
    save_lora(path, lora_sd(conv_dim=0), metadata())
    before = path.read_bytes()

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:  # half a file, then the crash
            fh.write(b"\x00" * 1000)
        raise OSError("disk full")

    def broken_replace(src, dst):
        raise OSError("power cut")

    if where == "tensor_write":
        monkeypatch.setattr(safetensors.torch, "save_file", broken_save_file)
    else:
        monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_lora(path, lora_sd(conv_dim=0, seed=2), metadata())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]  # no temp file left behind
    monkeypatch.undo()
    read_lora(path)


# ------------------------------------------------------------------------------------------------ verify

@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_verify_good_file(tmp_path, family):
    path = tmp_path / "good.safetensors"
    save_lora(path, lora_sd(family), metadata(family))
    r = verify_lora(path)
    te_count = 30
    assert r.format == "kohya" and r.family == family and r.family_source == "metadata"
    assert r.counts["te1"] == te_count and r.counts["te2"] == (te_count if family == "sdxl" else 0)
    assert r.counts["unet"] > 0 and r.counts["other"] == 0
    assert r.ranks == [2, 4] and r.alphas == [1.0, 2.0]
    assert r.conv3x3_modules == 26
    assert r.unet_naming == ("sgm" if family == "sdxl" else "diffusers") and r.te_naming == "text_model"
    assert not r.untrained and not r.nonfinite and r.hash_ok is True
    assert set(r.compat) == set(CLIENTS) and all(ok for ok, _ in r.compat.values()), r.compat
    assert r.ok
    text = format_verify_report(r)
    for client in CLIENTS:
        assert f"{client}: OK" in text
    assert "my_lora" in text and "cat (20)" in text


def test_verify_nan_and_untrained_modules(tmp_path):
    sd = lora_sd("sd1", conv_dim=0)
    bad = "lora_unet_down_blocks_0_attentions_0_proj_in"
    zero = "lora_te_text_model_encoder_layers_2_mlp_fc1"
    sd[f"{bad}.lora_up.weight"][0, 0] = float("nan")
    sd[f"{zero}.lora_up.weight"].zero_()
    path = tmp_path / "nan.safetensors"
    save_lora(path, sd, metadata())
    r = verify_lora(path)
    assert r.nonfinite == [bad] and r.untrained == [zero]
    assert not r.ok and not r.compat["A1111"][0]
    text = format_verify_report(r)
    assert "NaN/inf in 1 module" in text and bad in text and zero in text


def test_verify_rejects_bad_input(tmp_path):
    with pytest.raises(PatinaError, match="not found"):
        verify_lora(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(PatinaError, match="not a readable .safetensors"):
        verify_lora(junk)
    unet = _base("sd1")[0]
    not_lora = tmp_path / "unet.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in list(unet.state_dict().items())[:5]}, str(not_lora))
    with pytest.raises(PatinaError, match="not a LoRA"):
        verify_lora(not_lora)
    with pytest.raises(PatinaError, match="folder"):
        read_lora(tmp_path)


def _module(prefix_name: str, rank=2, width=8, extra: dict | None = None) -> dict:
    d = {f"{prefix_name}.lora_down.weight": torch.randn(rank, width),
         f"{prefix_name}.lora_up.weight": torch.randn(width, rank), f"{prefix_name}.alpha": torch.tensor(1.0)}
    d.update(extra or {})
    return d


def _verify_synthetic(tmp_path, sd: dict, md: dict | None = None):
    path = tmp_path / "s.safetensors"
    safetensors.torch.save_file(sd, str(path), metadata=md)
    return verify_lora(path)


def test_verify_flags_loader_problems(tmp_path):
    xl = {"ss_base_model_version": "sdxl_base_v1-0"}
    good_te = _module("lora_te1_text_model_encoder_layers_0_mlp_fc1")
    # (a) mixed SGM + diffusers UNet names
    r = _verify_synthetic(tmp_path, {**_module("lora_unet_input_blocks_4_1_proj_in"),
                                     **_module("lora_unet_down_blocks_1_attentions_0_proj_out"), **good_te}, xl)
    assert r.unet_naming == "mixed"
    assert not r.compat["InvokeAI"][0] and not r.compat["diffusers"][0] and r.compat["ComfyUI"][0]
    # (b) text encoder names without text_model_ (the transformers >= 5.6 naming bug)
    r = _verify_synthetic(tmp_path, {**_module("lora_unet_input_blocks_4_1_proj_in"),
                                     **_module("lora_te1_encoder_layers_0_mlp_fc1")}, xl)
    assert r.te_naming.startswith("flat")
    assert not r.compat["A1111"][0] and not r.compat["ComfyUI"][0] and not r.compat["InvokeAI"][0]
    assert any("text_model" in why for why in r.compat["A1111"][1])
    # (c) LyCORIS LoHa tensors: fine for A1111/ComfyUI, diffusers refuses
    loha = {f"lora_unet_input_blocks_4_1_proj_in.{k}": torch.randn(*shape) for k, shape in
            (("hada_w1_a", (8, 2)), ("hada_w1_b", (2, 8)), ("hada_w2_a", (8, 2)), ("hada_w2_b", (2, 8)))}
    r = _verify_synthetic(tmp_path, {**loha, "lora_unet_input_blocks_4_1_proj_in.alpha": torch.tensor(1.0)}, xl)
    assert r.compat["A1111"][0] and r.compat["ComfyUI"][0] and not r.compat["diffusers"][0]
    # (d) diffusers' lora_adapter_metadata in a kohya file
    r = _verify_synthetic(tmp_path, {**_module("lora_unet_input_blocks_4_1_proj_in"), **good_te},
                          {**xl, "lora_adapter_metadata": "{}"})
    assert not r.compat["diffusers"][0] and r.compat["A1111"][0]
    # (e) TE2 trained on q/v only: A1111 ignores it
    te2 = {**_module("lora_te2_text_model_encoder_layers_0_self_attn_q_proj"),
           **_module("lora_te2_text_model_encoder_layers_0_self_attn_v_proj")}
    r = _verify_synthetic(tmp_path, {**te2, **good_te, **_module("lora_unet_input_blocks_4_1_proj_in")}, xl)
    assert not r.compat["A1111"][0] and r.compat["ComfyUI"][0]
    # (f) the lycoris_ prefix: only ComfyUI-style loaders map it
    r = _verify_synthetic(tmp_path, _module("lycoris_down_blocks_1_attentions_0_proj_in"))
    assert r.compat["ComfyUI"][0] and not r.compat["A1111"][0] and not r.compat["diffusers"][0]
    # (g) diffusers/PEFT format: diffusers only
    r = _verify_synthetic(tmp_path, {"unet.down_blocks.1.attentions.0.proj_in.lora_A.weight": torch.randn(2, 8),
                                     "unet.down_blocks.1.attentions.0.proj_in.lora_B.weight": torch.randn(8, 2)})
    assert r.format == "diffusers-peft" and r.counts["unet"] == 1
    assert r.compat["diffusers"][0] and not r.compat["A1111"][0] and not r.compat["ComfyUI"][0]
    text = format_verify_report(r)
    assert "A1111: PROBLEM" in text and "diffusers: OK" in text


def test_verify_simulates_invokeais_base_model_probe(tmp_path):
    """InvokeAI names a LoRA's base model from the input width of UNet attn2 to_k/to_v, else of text-encoder
    self-attention (SDXL: both encoders, widths summed). A file it cannot classify is not 'InvokeAI: OK'."""
    xl = {"ss_base_model_version": "sdxl_base_v1-0"}
    te1 = _module("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", width=768)
    te2 = _module("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", width=1280)
    # SDXL, text encoder 1 only: InvokeAI cannot identify it
    r = _verify_synthetic(tmp_path, te1, xl)
    assert not r.compat["InvokeAI"][0] and r.compat["ComfyUI"][0]
    assert any("cannot tell which base model" in why for why in r.compat["InvokeAI"][1])
    assert "InvokeAI: PROBLEM" in format_verify_report(r)
    # SDXL, text-encoder MLPs only: nothing to probe
    r = _verify_synthetic(tmp_path, _module("lora_te1_text_model_encoder_layers_0_mlp_fc1", width=768), xl)
    assert not r.compat["InvokeAI"][0]
    # both encoders: 768 + 1280 = 2048, SDXL's context width
    r = _verify_synthetic(tmp_path, {**te1, **te2}, xl)
    assert r.compat["InvokeAI"][0], r.compat["InvokeAI"]
    # a cross-attention key with SD1's width in a file that says SDXL: InvokeAI takes it for SD1
    r = _verify_synthetic(tmp_path, _module("lora_unet_output_blocks_5_1_transformer_blocks_0_attn2_to_k",
                                            width=768), xl)
    assert not r.compat["InvokeAI"][0] and any("takes it for sd1" in w for w in r.compat["InvokeAI"][1])
    # the UNet's own cross-attention with SDXL's width: fine
    r = _verify_synthetic(tmp_path, _module("lora_unet_output_blocks_5_1_transformer_blocks_0_attn2_to_k",
                                            width=2048), xl)
    assert r.compat["InvokeAI"][0], r.compat["InvokeAI"]
