"""LoRA/LoCon network (patina.core.lora.network): peft injection, kohya names, loading back, block weights, LoRA+, max norm.

The acceptance test is ``test_diffusers_loads_exported_file``: a file written by Patina, loaded by diffusers'
own ``load_lora_weights`` into a fresh tiny pipeline, gives the same UNet and text-encoder outputs as the
network that was trained (lora-format.md §8 (a)).
"""

from __future__ import annotations

import copy
import functools
import re

import pytest
import torch

from patina.core.errors import PatinaError
from patina.core.lora.kohya_format import build_metadata, save_lora
from patina.core.lora.network import LoraNetwork, build_network, build_network_from_weights
from patina.core.lora.targets import BLOCK_LAYOUTS, NetworkSpec, UNetLayout, lr_weight_preset
from patina.core.models.tiny import tiny_pipeline, tiny_sd1_components, tiny_sdxl_components
from trainkit import unet_te_inputs, unet_te_outputs

TE_KEY = re.compile(r"^lora_te[12]?_text_model_encoder_layers_\d+_(self_attn_(q|k|v|out)_proj|mlp_fc[12])$")
SGM_KEY = re.compile(r"^lora_unet_(input_blocks_\d+_\d+|middle_block_\d+|output_blocks_\d+_\d+)_")
DIFFUSERS_KEY = re.compile(r"^lora_unet_(down_blocks_\d+_(attentions|resnets|downsamplers)_\d+|mid_block_(attentions|resnets)_\d+"
                           r"|up_blocks_\d+_(attentions|resnets|upsamplers)_\d+)_")


# ------------------------------------------------------------------------------------------------ helpers

@functools.lru_cache(maxsize=None)
def _base(family: str):
    c = tiny_sdxl_components(0) if family == "sdxl" else tiny_sd1_components(0)
    tes = [c["text_encoder"]] + ([c["text_encoder_2"]] if family == "sdxl" else [])
    for m in [c["unet"], *tes]:
        m.eval()
    return c["unet"], tes


def fresh(family: str):
    """Deep copies of the seed-0 tiny UNet and text encoders (the same weights tiny_pipeline(seed=0) has)."""
    unet, tes = _base(family)
    return copy.deepcopy(unet), [copy.deepcopy(t) for t in tes]


def make(family: str, **spec_kwargs) -> LoraNetwork:
    unet, tes = fresh(family)
    spec_kwargs.setdefault("network_dim", 4)
    spec_kwargs.setdefault("network_alpha", 2)
    return build_network(unet, tes, family, NetworkSpec(**spec_kwargs))


def perturb(net: LoraNetwork, seed: int = 1, scale: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in net.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


inputs = unet_te_inputs      # shared with the other network tests (trainkit)
outputs = unet_te_outputs


def modules_of(sd: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for k, v in sd.items():
        name, _, suffix = k.partition(".")
        out.setdefault(name, {})[suffix] = v
    return out


# ------------------------------------------------------------------------------------------------ acceptance

@pytest.mark.parametrize("family,conv_dim", [("sd1", 0), ("sd1", 2), ("sdxl", 0), ("sdxl", 2)],
                         ids=["sd1-lora", "sd1-locon", "sdxl-lora", "sdxl-locon"])
def test_diffusers_loads_exported_file(tmp_path, family, conv_dim):
    net = make(family, network_dim=4, network_alpha=2, conv_dim=conv_dim, conv_alpha=1)
    perturb(net)
    u_ref, t_ref = outputs(family, net.unet, net.text_encoders)
    with net.disable_adapters():
        u_base, t_base = outputs(family, net.unet, net.text_encoders)
    assert (u_ref - u_base).abs().max() > 1e-2, "the LoRA must change the UNet output for the test to mean anything"
    assert all((a - b).abs().max() > 1e-2 for a, b in zip(t_ref, t_base))

    sd = net.kohya_state_dict(torch.float32)
    if conv_dim:
        assert any(v.ndim == 4 and v.shape[-1] == 3 for k, v in sd.items() if k.endswith("lora_down.weight"))
    md = build_metadata(values={"network_dim": 4, "network_alpha": 2, "conv_dim": conv_dim, "conv_alpha": 1,
                                "LoRA_type": "Kohya LoCon" if conv_dim else "Standard", "output_name": "t"},
                        family=family)
    path = tmp_path / "lora.safetensors"
    save_lora(path, sd, md, precision="float")

    pipe = tiny_pipeline(family, seed=0)
    pipe.load_lora_weights(str(path))
    tes = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    u, t = outputs(family, pipe.unet, tes)
    assert torch.allclose(u, u_ref, atol=1e-4), (u - u_ref).abs().max()
    for a, b in zip(t, t_ref):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


# ------------------------------------------------------------------------------------------------ key format (§8 b-d)

@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_key_format(family):
    net = make(family, conv_dim=2, conv_alpha=1)
    sd = net.kohya_state_dict()
    mods = modules_of(sd)
    unet_names = [n for n in mods if n.startswith("lora_unet_")]
    te_names = [n for n in mods if n.startswith("lora_te")]
    assert unet_names and te_names
    if family == "sdxl":
        assert not any("down_blocks" in n or "up_blocks" in n or "mid_block" in n for n in unet_names)
        assert all(SGM_KEY.match(n) for n in unet_names), [n for n in unet_names if not SGM_KEY.match(n)]
        assert {n[:8] for n in te_names} == {"lora_te1", "lora_te2"}
    else:
        assert all(DIFFUSERS_KEY.match(n) for n in unet_names), [n for n in unet_names if not DIFFUSERS_KEY.match(n)]
        assert all(n.startswith("lora_te_") for n in te_names)
    assert all(TE_KEY.match(n) for n in te_names), [n for n in te_names if not TE_KEY.match(n)]
    # TE: 5 layers x 6 linears per encoder; TE2 has all four attention projections (A1111 needs all of them).
    assert len(te_names) == 30 * (2 if family == "sdxl" else 1)
    for name, tensors in mods.items():
        assert set(tensors) == {"lora_down.weight", "lora_up.weight", "alpha"}, name
        down, up, alpha = tensors["lora_down.weight"], tensors["lora_up.weight"], tensors["alpha"]
        assert down.shape[0] == up.shape[1], name
        assert alpha.ndim == 0 and down.dtype == up.dtype == alpha.dtype == torch.float16
        assert down.ndim == up.ndim
        if down.ndim == 4:
            assert tuple(up.shape[2:]) == (1, 1), name
        assert down.is_contiguous() and up.is_contiguous()


def test_sdxl_names_follow_the_sgm_table():
    sd = make("sdxl", conv_dim=2, conv_alpha=1).kohya_state_dict()
    names = set(modules_of(sd))
    for expected in [
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",  # down_blocks.1.attentions.0
        "lora_unet_input_blocks_5_1_proj_in",  # down_blocks.1.attentions.1
        "lora_unet_middle_block_1_transformer_blocks_1_ff_net_2",
        "lora_unet_middle_block_0_in_layers_2", "lora_unet_middle_block_2_emb_layers_1",
        "lora_unet_output_blocks_0_1_transformer_blocks_1_ff_net_0_proj",  # up_blocks.0.attentions.0
        "lora_unet_output_blocks_2_1_proj_out",
        "lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_input_blocks_1_0_out_layers_3",
        "lora_unet_input_blocks_1_0_emb_layers_1", "lora_unet_input_blocks_4_0_skip_connection",
        "lora_unet_input_blocks_3_0_op",  # down_blocks.0.downsamplers.0.conv
        "lora_unet_output_blocks_2_2_conv",  # up_blocks.0.upsamplers.0.conv (block has attentions -> .2)
        "lora_unet_output_blocks_5_0_out_layers_3",
    ]:
        assert expected in names, expected


def _real_layout_unet(family: str):
    """A UNet with the block structure of the real SD1 (4 levels) / SDXL (3 levels) model, tiny channels."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if family == "sdxl":
        return UNet2DConditionModel(
            block_out_channels=(8, 8, 8), layers_per_block=2, norm_num_groups=4, cross_attention_dim=8,
            attention_head_dim=2, use_linear_projection=True, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=1)
    return UNet2DConditionModel(
        block_out_channels=(8, 8, 8, 8), layers_per_block=2, norm_num_groups=4, cross_attention_dim=8,
        attention_head_dim=2, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def test_sgm_mapping_on_real_sdxl_layout():
    layout = UNetLayout(_real_layout_unet("sdxl"))
    table = {
        "down_blocks.0.resnets.0.conv1": ("input_blocks.1.0.in_layers.2", 2),
        "down_blocks.0.downsamplers.0.conv": ("input_blocks.3.0.op", 4),
        "down_blocks.1.attentions.0.proj_in": ("input_blocks.4.1.proj_in", 5),
        "down_blocks.1.downsamplers.0.conv": ("input_blocks.6.0.op", 7),
        "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k": ("input_blocks.8.1.transformer_blocks.0.attn2.to_k", 9),
        "down_blocks.2.resnets.0.conv_shortcut": ("input_blocks.7.0.skip_connection", 8),
        "mid_block.resnets.0.time_emb_proj": ("middle_block.0.emb_layers.1", 10),
        "mid_block.attentions.0.proj_out": ("middle_block.1.proj_out", 11),
        "mid_block.resnets.1.conv2": ("middle_block.2.out_layers.3", 12),
        "up_blocks.0.attentions.2.transformer_blocks.0.ff.net.2": ("output_blocks.2.1.transformer_blocks.0.ff.net.2", 15),
        "up_blocks.0.upsamplers.0.conv": ("output_blocks.2.2.conv", 15),
        "up_blocks.1.resnets.0.conv1": ("output_blocks.3.0.in_layers.2", 16),
        "up_blocks.1.upsamplers.0.conv": ("output_blocks.5.2.conv", 18),
        "up_blocks.2.resnets.2.conv2": ("output_blocks.8.0.out_layers.3", 21),
        "conv_in": ("input_blocks.0.0", None),
        "conv_out": ("out.2", None),
    }
    for path, (sgm, block) in table.items():
        assert layout.to_sgm(path) == sgm, path
        assert layout.block_index(path, "sdxl") == block, path
    assert layout.num_input_blocks == 9 and layout.num_output_blocks == 9


def test_sd1_block_index_on_real_layout():
    layout = UNetLayout(_real_layout_unet("sd1"))
    assert layout.block_index("down_blocks.0.attentions.0.proj_in", "sd1") == 1
    assert layout.block_index("down_blocks.0.downsamplers.0.conv", "sd1") == 3
    assert layout.block_index("down_blocks.3.resnets.1.conv1", "sd1") == 11
    assert layout.block_index("mid_block.attentions.0.proj_in", "sd1") == 12
    assert layout.block_index("up_blocks.0.upsamplers.0.conv", "sd1") == 15
    assert layout.block_index("up_blocks.3.attentions.2.proj_out", "sd1") == 24
    # the upsampler of an up block without attentions sits at .1 (with attentions at .2)
    assert layout.to_sgm("up_blocks.0.upsamplers.0.conv") == "output_blocks.2.1.conv"
    assert layout.to_sgm("up_blocks.1.upsamplers.0.conv") == "output_blocks.5.2.conv"


# ------------------------------------------------------------------------------------------------ build basics

def test_build_freezes_base_and_keeps_lora_fp32():
    unet, tes = fresh("sd1")
    unet.half()
    net = build_network(unet, tes, "sd1", NetworkSpec(network_dim=4, network_alpha=1))
    lora_ids = {id(p) for _, p in net.lora_parameters()}
    trainable = [p for m in (unet, *tes) for p in m.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == lora_ids
    assert len(net.trainable_parameters()) == 2 * len(net)
    assert all(p.dtype == torch.float32 for _, p in net.lora_parameters())
    # kohya initialisation: up = 0 (the network starts as a no-op), down random
    assert all(not m.lora_up.any() for m in net.modules)
    assert all(m.lora_down.abs().sum() > 0 for m in net.modules)
    net.cast_lora_params(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for _, p in net.lora_parameters())


def test_fp16_base_with_fp32_lora_runs():
    unet, tes = fresh("sd1")
    net = build_network(unet.half(), [tes[0].half()], "sd1", NetworkSpec(network_dim=4))
    perturb(net, scale=0.01)
    ids = torch.randint(0, 500, (1, 8))
    out = tes[0](ids).last_hidden_state
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_initial_network_is_identity_and_disable_adapters():
    net = make("sd1")
    base = outputs("sd1", net.unet, net.text_encoders)[0]
    sample, ctx, _ids, _kw = inputs("sd1")
    with torch.no_grad():
        ref = _base("sd1")[0](sample, 10, ctx).sample
    assert torch.equal(base, ref)
    perturb(net)
    adapted = outputs("sd1", net.unet, net.text_encoders)[0]
    assert not torch.allclose(adapted, ref)
    with net.disable_adapters():
        assert not net.enabled
        assert torch.equal(outputs("sd1", net.unet, net.text_encoders)[0], ref)
    assert net.enabled
    assert torch.equal(outputs("sd1", net.unet, net.text_encoders)[0], adapted)
    assert all(p.requires_grad for _, p in net.lora_parameters())


def test_train_text_encoder_false_gives_no_te_adapters():
    from peft.tuners.tuners_utils import BaseTunerLayer

    net = make("sdxl", train_text_encoder=False)
    sd = net.kohya_state_dict()
    assert sd and not any(k.startswith("lora_te") for k in sd)
    assert not any(isinstance(m, BaseTunerLayer) for te in net.text_encoders for m in te.modules())
    assert [g["name"] for g in net.param_groups(1e-4, 5e-5)] == ["unet"]

    net = make("sd1", train_unet=False)
    sd = net.kohya_state_dict()
    assert sd and all(k.startswith("lora_te_") for k in sd)
    assert not any(isinstance(m, BaseTunerLayer) for m in net.unet.modules())


def test_plain_lora_has_no_conv_modules_and_locon_uses_both_ranks():
    plain = make("sd1", network_dim=4, conv_dim=0)
    assert not any(m.kind == "conv3x3" for m in plain.modules)
    assert not any("resnets" in m.name for m in plain.modules)
    locon = make("sd1", network_dim=4, network_alpha=2, conv_dim=3, conv_alpha=1.5)
    kinds = {m.kind: (m.rank, m.alpha) for m in locon.modules if m.part == "unet"}
    assert kinds["conv3x3"] == (3, 1.5)
    assert kinds["linear"] == (4, 2.0) and kinds["conv1x1"] == (4, 2.0)
    shortcut = [m for m in locon.modules if m.name.endswith("conv_shortcut")]
    temb = [m for m in locon.modules if m.name.endswith("time_emb_proj")]
    assert shortcut and all(m.rank == 4 for m in shortcut) and temb and all(m.rank == 4 for m in temb)


def test_alpha_zero_means_rank():
    net = make("sd1", network_dim=4, network_alpha=0)
    assert all(m.alpha == 4 and m.scale == 1.0 for m in net.modules)


def test_build_twice_and_remove():
    unet, tes = fresh("sd1")
    net = build_network(unet, tes, "sd1", NetworkSpec())
    with pytest.raises(PatinaError, match="already carries LoRA"):
        build_network(unet, tes, "sd1", NetworkSpec())
    net.remove()
    base = _base("sd1")[0]
    assert [n for n, _ in unet.named_parameters()] == [n for n, _ in base.named_parameters()]
    build_network(unet, tes, "sd1", NetworkSpec())


def test_validation_errors():
    unet, tes = fresh("sd1")
    with pytest.raises(PatinaError, match="family"):
        build_network(unet, tes, "sd3", NetworkSpec())
    with pytest.raises(PatinaError, match="2 text encoders"):
        build_network(unet, tes, "sdxl", NetworkSpec())
    with pytest.raises(PatinaError, match="network_dim"):
        build_network(unet, tes, "sd1", NetworkSpec(network_dim=0))
    with pytest.raises(PatinaError, match="Nothing to train"):
        build_network(unet, tes, "sd1", NetworkSpec(train_unet=False, train_text_encoder=False))


# ------------------------------------------------------------------------------------------------ load back

def test_load_kohya_state_dict_round_trip(tmp_path):
    src = make("sdxl", conv_dim=2, conv_alpha=1)
    perturb(src)
    want = outputs("sdxl", src.unet, src.text_encoders)
    sd = src.kohya_state_dict(torch.float32)

    # alpha in the file wins over the spec's (sd-scripts loads the alpha buffer too)
    dst = make("sdxl", conv_dim=2, conv_alpha=7, network_alpha=3)
    result = dst.load_kohya_state_dict(sd)
    assert len(result.loaded) == len(dst) and not result.missing and not result.unexpected
    got = outputs("sdxl", dst.unet, dst.text_encoders)
    assert torch.equal(got[0], want[0]) and all(torch.equal(a, b) for a, b in zip(got[1], want[1]))
    assert dst.kohya_state_dict(torch.float32).keys() == sd.keys()

    # dim_from_weights: modules, ranks and alphas come from the file
    unet, tes = fresh("sdxl")
    net = build_network_from_weights(unet, tes, "sdxl", sd)
    assert len(net) == len(src)
    got = outputs("sdxl", net.unet, net.text_encoders)
    assert torch.equal(got[0], want[0])


def test_load_reports_mismatches():
    src = make("sd1", network_dim=4)
    sd = src.kohya_state_dict(torch.float32)
    unet_only = make("sd1", train_text_encoder=False)
    with pytest.raises(PatinaError, match="not in the network|file module") as err:
        unet_only.load_kohya_state_dict(sd)
    assert any("lora_te_text_model_encoder_layers_0" in p for p in err.value.problems)
    result = unet_only.load_kohya_state_dict(sd, strict=False)
    assert len(result.unexpected) == 30 and not result.missing

    with pytest.raises(PatinaError, match="rank") as err:
        make("sd1", network_dim=8).load_kohya_state_dict(sd)
    assert "(4, 32)" in str(err.value)

    # a file of another family: its module names do not exist in this model
    unet, tes = fresh("sd1")
    sdxl_file = {"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(4, 64),
                 "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(64, 4)}
    with pytest.raises(PatinaError, match="another model family"):
        build_network_from_weights(unet, tes, "sd1", sdxl_file)

    bad = dict(sd)
    name = next(iter(modules_of(sd)))
    bad[f"{name}.dora_scale"] = torch.ones(1, 32)
    with pytest.raises(PatinaError, match="DoRA"):
        make("sd1", network_dim=4).load_kohya_state_dict(bad)


def test_load_accepts_name_variants():
    src = make("sd1")
    perturb(src)
    sd = src.kohya_state_dict(torch.float32)
    # transformers >= 5.6 bug spelling (no text_model_) and lora_te1_ in an SD1 file
    variant = {}
    for k, v in sd.items():
        if k.startswith("lora_te_text_model_encoder_layers_0_"):
            k = k.replace("lora_te_", "lora_te1_")
        elif k.startswith("lora_te_text_model_"):
            k = k.replace("lora_te_text_model_", "lora_te_")
        variant[k] = v
    dst = make("sd1")
    result = dst.load_kohya_state_dict(variant)
    assert not result.missing and not result.unexpected
    assert torch.equal(dst.kohya_state_dict(torch.float32)["lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight"],
                       sd["lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight"])


# ------------------------------------------------------------------------------------------------ block-wise

def test_block_dims_give_per_block_ranks():
    dims = [0] + [i % 5 + 1 for i in range(1, 25)]  # block 0 (conv_in) has no module
    alphas = [float(d) / 2 for d in dims]
    conv_dims = [2] * 25
    net = make("sd1", block_dims=dims, block_alphas=alphas, conv_block_dims=conv_dims)
    unet_mods = net.unet_modules
    assert unet_mods
    for m in unet_mods:
        if m.kind == "conv3x3":
            assert m.rank == 2 and m.alpha == 1.0, m.name  # conv_alpha default 1.0
        else:
            assert m.rank == dims[m.block], m.name
            assert m.alpha == alphas[m.block]
    assert {m.rank for m in net.text_encoder_modules} == {4}  # block dims are UNet-only
    assert len({m.rank for m in unet_mods}) > 2

    # a string as kohya_ss stores it; a zero removes the block's modules
    dims2 = ",".join(["4"] * 12 + ["0"] + ["4"] * 12)
    net2 = make("sd1", block_dims=dims2)
    assert not any(m.block == 12 for m in net2.unet_modules)
    assert any(m.block == 16 for m in net2.unet_modules)


@pytest.mark.parametrize("family,field,expected", [
    ("sd1", "block_dims", 25), ("sdxl", "block_dims", 23), ("sdxl", "conv_block_alphas", 23),
    ("sd1", "down_lr_weight", 12), ("sdxl", "up_lr_weight", 9), ("sdxl", "mid_lr_weight", 3),
])
def test_block_counts_are_validated(family, field, expected):
    spec = NetworkSpec(**{field: [1.0] * (expected - 1)}, conv_dim=2 if "conv" in field else None)
    with pytest.raises(PatinaError, match=rf"{field} has {expected - 1} values.*needs {expected}"):
        spec.validate(family)
    spec = NetworkSpec(**{field: [1.0] * expected}, conv_dim=2 if "conv" in field else None)
    spec.validate(family)
    assert BLOCK_LAYOUTS[family].total == (25 if family != "sdxl" else 23)


def test_lr_weight_presets():
    sine = lr_weight_preset("sine", 12)
    assert sine[0] == 0.0 and sine[-1] == pytest.approx(1.0) and sine == sorted(sine)
    assert lr_weight_preset("cosine", 12) == sine[::-1]
    lin = lr_weight_preset("linear+0.5", 9)
    assert lin[0] == 0.5 and lin[-1] == pytest.approx(1.5)
    assert lr_weight_preset("reverse_linear", 3) == [1.0, 0.5, 0.0]
    assert lr_weight_preset("zeros", 4) == [0.0] * 4
    with pytest.raises(PatinaError, match="preset"):
        NetworkSpec(down_lr_weight="tangent").validate("sd1")
    w = NetworkSpec(down_lr_weight="sine", up_lr_weight="cosine").block_lr_weights("sdxl")
    assert len(w) == 23 and w[0] == 1.0 and w[22] == 1.0 and w[1] == 0.0 and w[10:13] == [1.0] * 3


def test_block_lr_weights_change_groups_and_threshold_removes_modules():
    down = [0.0, 0.05, 0.5, 1.0, 2.0, 0.3] + [1.0] * 6
    up = [1.0, 0.5, 0.25, 0.1, 1.0, 0.7] + [1.0] * 6
    net = make("sd1", down_lr_weight=down, mid_lr_weight=0.5, up_lr_weight=up, block_lr_zero_threshold=0.1,
               conv_dim=2, conv_alpha=1)
    weights = net.block_lr_weights
    assert len(weights) == 25
    blocks = {m.block for m in net.unet_modules}
    # weights <= threshold (0.05 at block 1, 0.1 at block 16) -> no module at all
    assert 1 not in blocks and 16 not in blocks
    assert {2, 3, 4, 5, 12, 13, 14, 15, 17, 18} <= blocks
    groups = net.param_groups(1e-3, 5e-5)
    by_name = {g["name"]: g for g in groups}
    assert by_name["textencoder"]["lr"] == 5e-5
    assert by_name["unet_block_4"]["lr"] == pytest.approx(2e-3)
    assert by_name["unet_block_2"]["lr"] == pytest.approx(5e-4)
    assert by_name["unet_block_12"]["lr"] == pytest.approx(5e-4)
    assert by_name["unet_block_14"]["lr"] == pytest.approx(5e-4)
    assert "unet" not in by_name and "unet_block_1" not in by_name
    # every trainable parameter is in exactly one group
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.trainable_parameters())


def test_loraplus_ratio():
    net = make("sd1")
    groups = {g["name"]: g for g in net.param_groups(1e-4, 2e-5, loraplus_unet_ratio=16, loraplus_te_ratio=4)}
    assert set(groups) == {"unet", "unet_plus", "textencoder", "textencoder_plus"}
    up_ids = {id(m.lora_up) for m in net.modules}
    assert {id(p) for p in groups["unet_plus"]["params"]} == {id(m.lora_up) for m in net.unet_modules}
    assert not any(id(p) in up_ids for p in groups["unet"]["params"])
    assert groups["unet_plus"]["lr"] == pytest.approx(1.6e-3) and groups["unet"]["lr"] == 1e-4
    assert groups["textencoder_plus"]["lr"] == pytest.approx(8e-5)
    # no ratio: plain groups; lr 0 leaves the part out; None falls back to default_lr
    assert [g["name"] for g in net.param_groups(1e-4, 0)] == ["unet"]
    assert {g["lr"] for g in net.param_groups(None, None, default_lr=3e-4)} == {3e-4}
    with pytest.raises(PatinaError, match="learning rate"):
        net.param_groups(None, 1e-4)


def test_sdxl_per_encoder_lr():
    net = make("sdxl")
    names = {g["name"]: g["lr"] for g in net.param_groups(1e-4, [1e-5, 2e-5])}
    assert names == {"textencoder1": 1e-5, "textencoder2": 2e-5, "unet": 1e-4}


# ------------------------------------------------------------------------------------------------ max norm

def test_apply_max_norm():
    net = make("sd1", conv_dim=2, conv_alpha=1)
    perturb(net, scale=0.5)
    small = net.modules[0]
    with torch.no_grad():  # one module well under the limit stays untouched
        small.lora_up.mul_(1e-4)
    before_small = small.lora_up.clone()

    def norm(m):
        with torch.no_grad():
            return float((m.lora_up.reshape(m.lora_up.shape[0], -1) @ m.lora_down.reshape(m.rank, -1)).norm()) * m.scale

    norms_before = [norm(m) for m in net.modules]
    limit = sorted(norms_before)[len(norms_before) // 2]
    scaled, mean, top = net.apply_max_norm(limit)
    assert scaled == sum(n > limit for n in norms_before)
    assert top == pytest.approx(limit, rel=1e-5)
    after = [norm(m) for m in net.modules]
    assert max(after) <= limit * (1 + 1e-5)
    assert mean == pytest.approx(sum(after) / len(after), rel=1e-4)
    assert torch.equal(small.lora_up, before_small)
    for b, a in zip(norms_before, after):  # modules under the limit keep their norm
        if b <= limit:
            assert a == pytest.approx(b, rel=1e-6)


def test_spec_from_kohya_values():
    spec = NetworkSpec.from_values({"LoRA_type": "Kohya LoCon", "network_dim": 16, "network_alpha": 8, "conv_dim": 4,
                                    "conv_alpha": 1, "unet_lr": 1e-4, "text_encoder_lr": 0, "block_dims": "",
                                    "down_lr_weight": "sine", "mid_lr_weight": "0.5"})
    assert (spec.network_dim, spec.network_alpha, spec.conv_dim, spec.conv_alpha) == (16, 8.0, 4, 1.0)
    assert spec.train_unet and not spec.train_text_encoder and spec.is_locon
    assert spec.block_dims is None and spec.block_lr_weights("sd1")[12] == 0.5
    assert (spec.down_lr_weight, spec.mid_lr_weight, spec.up_lr_weight) == ("sine", "0.5", None)
    standard = NetworkSpec.from_values({"LoRA_type": "Standard", "network_dim": 8, "conv_dim": 4, "unet_lr": 0,
                                        "text_encoder_lr": 1e-5})
    assert standard.conv_dim is None and not standard.is_locon
    assert standard.train_text_encoder and not standard.train_unet
    # the engine's spec: a complete Patina config, where a Standard LoRA's conv block settings do not count and
    # blank block text is "not set"
    from patina.core.config.schema import defaults

    cfg = defaults()
    cfg.update(conv_block_dims=",".join(["2"] * 25), block_dims="  ", text_encoder_lr=0.0)
    plain = NetworkSpec.from_values(cfg)
    assert not plain.is_locon and plain.conv_block_dims is None and plain.block_dims is None
    assert plain.train_unet and not plain.train_text_encoder
    assert NetworkSpec.from_values(dict(cfg, LoRA_type="Kohya LoCon")).conv_block_dims == cfg["conv_block_dims"]
