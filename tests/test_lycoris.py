"""LyCORIS LoHa and LoKr networks: the file math the loaders apply, save/load, metadata, engine runs, verify,
kohya_ss config import.

The acceptance test is ``test_loader_merge_equals_trained_network``: the update A1111/Forge/ComfyUI compute
from the saved tensors (lora-format.md §2.1-2.3, written out below in :func:`loader_delta` from the reference,
not from the layer code) gives, per module and for the whole UNet and text encoders, the output the trained
network gives.
"""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
import torch.nn.functional as F

from patina.core.config.files import format_load_report, import_kohya
from patina.core.config.schema import BY_KEY, check_values, defaults
from patina.core.errors import PatinaError
from patina.core.lora.kohya_format import build_metadata, read_lora, save_lora
from patina.core.lora.network import build_network, build_network_from_weights
from patina.core.lora.targets import NetworkSpec
from patina.core.lora.verify import format_verify_report, verify_lora
from patina.core.models.tiny import save_tiny_diffusers, tiny_sd1_components, tiny_sdxl_components
from trainkit import unet_te_inputs, unet_te_outputs

FAMILIES = ("sd1", "sdxl")
ALGOS = ("loha", "lokr")


# ------------------------------------------------------------------------------------------------ helpers

@functools.lru_cache(maxsize=None)
def _base(family: str):
    c = tiny_sdxl_components(0) if family == "sdxl" else tiny_sd1_components(0)
    tes = [c["text_encoder"]] + ([c["text_encoder_2"]] if family == "sdxl" else [])
    for m in [c["unet"], *tes]:
        m.eval()
    return c["unet"], tes


def fresh(family: str):
    unet, tes = _base(family)
    return copy.deepcopy(unet), [copy.deepcopy(t) for t in tes]


def make(family: str, algo: str, **kw):
    unet, tes = fresh(family)
    kw.setdefault("network_dim", 4)
    kw.setdefault("network_alpha", 2.0)
    kw.setdefault("conv_dim", 4)
    kw.setdefault("conv_alpha", 1.0)
    return build_network(unet, tes, family, NetworkSpec(algo=algo, **kw))


def perturb(net, seed: int = 1, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in net.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def grouped(sd: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for k, v in sd.items():
        name, _, suffix = k.partition(".")
        out.setdefault(name, {})[suffix] = v.float()
    return out


def loader_delta(t: dict, weight_shape) -> torch.Tensor:
    """ΔW of one module as A1111 (network_hada.py / network_lokr.py) and ComfyUI (weight_adapter) compute it,
    lora-format.md §2.1-2.3:

    * LoHa: (hada_w1_a @ hada_w1_b) ⊙ (hada_w2_a @ hada_w2_b) · alpha / hada_w1_b.shape[0];
    * LoKr: kron(w1, w2) · alpha / dim, w1 = lokr_w1 or lokr_w1_a @ lokr_w1_b (w2 likewise); dim is the rank
      of a ``_b`` matrix, and with no ``_b`` matrix the scale is 1.0 (alpha is not used);
    * reshaped to the layer's weight shape; no alpha means alpha = rank.
    """
    alpha = t.get("alpha")
    if "hada_w1_a" in t:
        rank = t["hada_w1_b"].shape[0]
        scale = (float(alpha) if alpha is not None else rank) / rank
        w = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
        return w.reshape(weight_shape) * scale
    dim = None
    w1 = t.get("lokr_w1")
    if w1 is None:
        dim = t["lokr_w1_b"].shape[0]
        w1 = t["lokr_w1_a"] @ t["lokr_w1_b"]
    w2 = t.get("lokr_w2")
    if w2 is None:
        dim = t["lokr_w2_b"].shape[0]
        w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    scale = (float(alpha) / dim if alpha is not None else 1.0) if dim else 1.0
    return torch.kron(w1, w2).reshape(weight_shape) * scale


def apply_delta(base, x, delta):
    if isinstance(base, torch.nn.Conv2d):
        return base(x) + F.conv2d(x, delta, stride=base.stride, padding=base.padding, dilation=base.dilation,
                                  groups=base.groups)
    return base(x) + F.linear(x, delta)


def layer_input(base, g):
    if isinstance(base, torch.nn.Conv2d):
        return torch.randn(2, base.in_channels, 6, 6, generator=g)
    return torch.randn(2, 3, base.in_features, generator=g)


inputs = unet_te_inputs      # shared with the other network tests (trainkit)
outputs = unet_te_outputs


def close(a, b, tol=1e-4):
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


# ------------------------------------------------------------------------------------------------ the math

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("algo", ALGOS)
def test_loader_merge_equals_trained_network(family, algo):
    net = make(family, algo)
    perturb(net)
    sd = net.kohya_state_dict(dtype=torch.float32)
    files = grouped(sd)
    kinds = {m.kind for m in net.modules}
    assert {"linear", "conv3x3"} <= kinds and {m.part for m in net.modules} >= {"unet", "te1"}
    if algo == "lokr":  # both layouts occur; full-factor modules train with scale 1 (LyCORIS's rule)
        assert any(m.lokr_full for m in net.modules) and any(not m.lokr_full for m in net.modules)
        assert all(m.scale == 1 for m in net.modules if m.lokr_full)
        assert any(m.scale != 1 for m in net.modules if not m.lokr_full)
        full = next(m for m in net.modules if m.lokr_full and m.kind == "conv3x3")
        net._set_alpha(full, 0.5 * full.rank)  # a full-factor module holding another scale ...
        sd = net.kohya_state_dict(dtype=torch.float32)
        files = grouped(sd)
        assert float(files[full.name]["alpha"]) == full.rank  # ... gets it baked into lokr_w2, alpha/r = 1
        assert torch.allclose(files[full.name]["lokr_w2"], 0.5 * full.weights()["lokr_w2"].detach())
    expected_suffixes = ({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"} if algo == "loha" else None)

    # per module: the adapted layer's output == base layer + the loader's ΔW
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in net.modules:
            t = files[m.name]
            if expected_suffixes:
                assert set(t) == expected_suffixes
            else:
                assert "alpha" in t and ("lokr_w1" in t or "lokr_w1_a" in t) and ("lokr_w2" in t or "lokr_w2_a" in t)
            base = m.layer.get_base_layer()
            x = layer_input(base, g)
            want = apply_delta(base, x, loader_delta(t, base.weight.shape))
            assert close(m.layer(x), want), m.name

    # whole models: merge every ΔW into fresh base weights (what "merge into checkpoint" and A1111 do)
    trained_u, trained_t = outputs(family, net.unet, net.text_encoders)
    unet, tes = fresh(family)
    roots = {"unet": unet, "te1": tes[0], "te2": tes[-1]}
    with torch.no_grad():
        for m in net.modules:
            layer = roots[m.part].get_submodule(m.path)
            layer.weight += loader_delta(files[m.name], layer.weight.shape)
    merged_u, merged_t = outputs(family, unet, tes)
    base_u, _ = outputs(family, *fresh(family))
    assert not close(base_u, trained_u)  # the LoRA does change the UNet
    assert close(merged_u, trained_u, 1e-3)
    for a, b in zip(merged_t, trained_t):
        assert close(a, b, 1e-3)


@pytest.mark.parametrize("algo", ALGOS)
def test_weight_multiplier_and_disable(algo):
    net = make("sd1", algo)
    perturb(net)
    m = next(m for m in net.modules if m.kind == "conv3x3")
    base = m.layer.get_base_layer()
    x = layer_input(base, torch.Generator().manual_seed(0))
    delta = loader_delta(grouped(net.kohya_state_dict(dtype=torch.float32))[m.name], base.weight.shape)
    with torch.no_grad():
        with net.weight(0.5):
            assert close(m.layer(x), apply_delta(base, x, 0.5 * delta))
        with net.disable_adapters():
            assert close(m.layer(x), base(x))
        assert close(m.layer(x), apply_delta(base, x, delta))


def test_initial_network_changes_nothing_and_trains():
    for algo in ALGOS:
        net = make("sd1", algo)
        base_u, _ = outputs("sd1", *fresh("sd1"))
        u, _ = outputs("sd1", net.unet, net.text_encoders)
        assert close(u, base_u, 1e-6)
        params = net.trainable_parameters()
        assert params and all(p.requires_grad and p.dtype == torch.float32 for p in params)
        groups = net.param_groups(1e-4, 5e-5, loraplus_unet_ratio=16)
        assert sum(len(g["params"]) for g in groups) == len(params)  # LoRA+ has no up matrix to single out
        assert not any(p.requires_grad for p in net.unet.parameters() if all(p is not q for q in params))


@pytest.mark.parametrize("algo", ALGOS)
def test_apply_max_norm_caps_the_loader_delta(algo):
    net = make("sd1", algo)
    perturb(net, scale=0.5)
    scaled, _mean, top = net.apply_max_norm(0.5)
    assert scaled > 0 and top <= 0.5 + 1e-5
    for name, t in grouped(net.kohya_state_dict(dtype=torch.float32)).items():
        m = net.module(name)
        norm = float(loader_delta(t, m.layer.get_base_layer().weight.shape).norm())
        assert norm <= 0.5 + 1e-3, name


# ------------------------------------------------------------------------------------------------ files

@pytest.mark.parametrize("family,algo", [("sd1", "loha"), ("sdxl", "lokr"), ("sdxl", "loha"), ("sd1", "lokr")])
def test_save_load_round_trip(tmp_path, family, algo):
    net = make(family, algo, factor=-1)
    perturb(net, seed=3)
    if algo == "lokr":  # the full-factor bake and its undoing on load
        m = next(m for m in net.modules if m.lokr_full)
        net._set_alpha(m, 0.25 * m.rank)
    want_u, want_t = outputs(family, net.unet, net.text_encoders)
    values = {"LoRA_type": "LyCORIS/LoHa" if algo == "loha" else "LyCORIS/LoKr", "network_dim": 4,
              "network_alpha": 2.0, "conv_dim": 4, "conv_alpha": 1.0, "factor": -1}
    path = tmp_path / "x.safetensors"
    save_lora(path, net.kohya_state_dict(dtype=torch.float32), build_metadata(values=values, family=family),
              precision="float")
    sd, md = read_lora(path)
    assert md["ss_network_module"] == "lycoris.kohya"
    args = json.loads(md["ss_network_args"])
    assert args["algo"] == algo and args["conv_dim"] == "4" and args["conv_alpha"] == "1.0"
    assert ("factor" in args) == (algo == "lokr") and args.get("factor", "-1") == "-1"
    assert all(k.startswith(("lora_unet_", "lora_te")) for k in sd)

    # network_weights into a network built from the same settings (resume / continue training)
    other = make(family, algo)
    res = other.load_kohya_state_dict(sd, strict=True)
    assert not res.missing and not res.unexpected
    got_u, got_t = outputs(family, other.unet, other.text_encoders)
    assert close(got_u, want_u) and all(close(a, b) for a, b in zip(got_t, want_t))
    if algo == "lokr":  # the network being loaded keeps its own scale (1); the file's tensor is the baked one
        assert other.module(m.name).scale == 1
        assert torch.allclose(other.module(m.name).weights()["lokr_w2"], 0.25 * m.weights()["lokr_w2"], atol=1e-6)
    else:
        for (n1, p1), (n2, p2) in zip(net.lora_parameters(), other.lora_parameters()):
            assert n1 == n2 and torch.allclose(p1, p2, atol=1e-6), n1

    # "rank from weights": modules, ranks, alphas (and the LoKr factor) come from the file
    unet, tes = fresh(family)
    rebuilt = build_network_from_weights(unet, tes, family, sd)
    assert rebuilt.algo == algo and len(rebuilt) == len(net)
    got_u, got_t = outputs(family, rebuilt.unet, rebuilt.text_encoders)
    assert close(got_u, want_u) and all(close(a, b) for a, b in zip(got_t, want_t))


def test_lokr_factor_and_rank_from_weights():
    net = make("sd1", "lokr", factor=4, network_dim=2)
    perturb(net, seed=4)
    assert any(not m.lokr_full for m in net.modules)
    w1 = [tuple(m.weights()["lokr_w1"].shape) for m in net.modules if "lokr_w1" in m.weights()]
    assert w1 and all(s[0] == 4 or s[1] == 4 for s in w1)
    unet, tes = fresh("sd1")
    rebuilt = build_network_from_weights(unet, tes, "sd1", net.kohya_state_dict(dtype=torch.float32))
    assert rebuilt.spec.factor == 4
    assert close(outputs("sd1", rebuilt.unet, rebuilt.text_encoders)[0], outputs("sd1", net.unet, net.text_encoders)[0])


def test_loading_another_type_is_refused():
    loha = make("sd1", "loha")
    lora_net = make("sd1", "lora")
    with pytest.raises(PatinaError, match="LoRA network cannot continue training"):
        lora_net.load_kohya_state_dict(loha.kohya_state_dict())
    with pytest.raises(PatinaError, match="LoKr network"):
        make("sd1", "lokr").load_kohya_state_dict(loha.kohya_state_dict())


def test_spec_validation():
    with pytest.raises(PatinaError, match="use_tucker"):
        make("sd1", "loha", use_tucker=True)
    with pytest.raises(PatinaError, match="network_dropout"):
        make("sd1", "lokr", network_dropout=0.1)
    with pytest.raises(PatinaError, match="factor"):
        make("sd1", "lokr", factor=0)


# ------------------------------------------------------------------------------------------------ config

def test_schema_types_and_visibility():
    assert {"LyCORIS/LoHa", "LyCORIS/LoKr"} <= set(BY_KEY["LoRA_type"].choices)
    cfg = defaults()
    assert BY_KEY["factor"].default == -1 and not BY_KEY["factor"].is_visible(cfg)
    for lt, factor_shown in (("LyCORIS/LoHa", False), ("LyCORIS/LoKr", True)):
        cfg["LoRA_type"] = lt
        assert BY_KEY["conv_dim"].is_visible(cfg) and BY_KEY["conv_alpha"].is_visible(cfg)
        assert BY_KEY["use_tucker"].is_visible(cfg)
        assert BY_KEY["factor"].is_visible(cfg) == factor_shown
    _, problems = check_values(dict(defaults(), LoRA_type="LyCORIS/LoKr", use_tucker=True))
    assert any(p.key == "use_tucker" and p.severity == "error" for p in problems)
    _, problems = check_values(dict(defaults(), LoRA_type="Standard", use_tucker=True))
    assert not any(p.key == "use_tucker" for p in problems)


def test_kohya_config_import():
    src = {  # keys and values as kohya_ss saves them (flat JSON, numbers sometimes as strings)
        "LoRA_type": "LyCORIS/LoKr", "LyCORIS_preset": "full", "network_dim": 100000, "network_alpha": 1,
        "conv_dim": "100000", "conv_alpha": 1, "factor": "8", "use_cp": False, "use_tucker": False,
        "train_norm": False, "decompose_both": False, "dora_wd": False, "bypass_mode": False, "unet_lr": 0.0001,
        "text_encoder_lr": 0.00005, "learning_rate": 0.0001, "optimizer": "AdamW", "sdxl": True,
        "save_model_as": "safetensors", "network_dropout": 0,
    }
    res = import_kohya(src)
    assert not res.errors, res.errors
    v = res.values
    assert v["LoRA_type"] == "LyCORIS/LoKr" and v["factor"] == 8 and v["model_family"] == "sdxl"
    assert v["network_dim"] == 100000 and v["conv_dim"] == 100000  # LyCORIS's full-matrix request, kept
    assert any("network_dim 100000: LyCORIS's full-matrix LoKr" in n for n in res.notes)
    spec = NetworkSpec.from_values(v)
    assert (spec.algo, spec.factor, spec.conv_dim, spec.use_tucker) == ("lokr", 8, 100000, False)
    unet, tes = fresh("sd1")  # kohya's "full matrix" LoKr: every module full, trained at scale 1 like LyCORIS
    spec.factor, spec.network_alpha = -1, 1.0
    net = build_network(unet, tes, "sd1", spec)
    assert all(m.lokr_full and m.scale == 1 for m in net.modules)

    res = import_kohya({"LoRA_type": "LyCORIS/LoHa", "network_dim": 8, "conv_dim": 4, "use_tucker": True,
                        "train_norm": True})
    assert res.values["LoRA_type"] == "LyCORIS/LoHa" and res.ok  # reported as not carried over, not an error
    assert res.values["use_tucker"] is False
    assert {"train_norm", "use_tucker"} <= set(res.unsupported_set)  # not trained by Patina: reported
    spec = NetworkSpec.from_values(res.values)
    assert (spec.algo, spec.conv_dim) == ("loha", 4)

    res = import_kohya({"LoRA_type": "Kohya LoHa"})
    assert res.values["LoRA_type"] == "LyCORIS/LoHa" and any("LyCORIS/LoHa" in n for n in res.notes)
    res = import_kohya({"LoRA_type": "LyCORIS/LoKr", "use_cp": True, "conv_dim": 8})
    assert res.ok and res.values["use_tucker"] is False and res.unsupported_set == {"use_cp": True}
    assert "Tucker core" in format_load_report(res)


# ------------------------------------------------------------------------------------------------ engine + verify

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {f: save_tiny_diffusers(root / f"tiny-{f}", f) for f in FAMILIES}


@pytest.mark.parametrize("family,lora_type", [("sd1", "LyCORIS/LoHa"), ("sdxl", "LyCORIS/LoKr")])
def test_engine_run_and_verify(tiny_models, tmp_path, family, lora_type):
    from patina.core.train.engine import Trainer
    from trainkit import Collector, make_dataset, tiny_cfg

    data = make_dataset(tmp_path, n=2, repeats=1)
    cfg = tiny_cfg(tiny_models[family], data, tmp_path / "out", LoRA_type=lora_type, conv_dim=4, conv_alpha=2.0,
                   epoch=1, max_train_steps=2, scale_weight_norms=1.0, train_batch_size=1)
    fin = Trainer(cfg, Collector(), None, None).run()
    assert fin.status == "finished", fin.message
    path = tmp_path / "out" / "tiny.safetensors"
    sd, md = read_lora(path)
    algo = "loha" if "LoHa" in lora_type else "lokr"
    assert md["ss_network_module"] == "lycoris.kohya" and json.loads(md["ss_network_args"])["algo"] == algo
    assert any(k.endswith(".hada_w1_a" if algo == "loha" else ".lokr_w1") for k in sd)

    report = verify_lora(path, model=tiny_models[family])
    expected = "LyCORIS LoHa" if algo == "loha" else "LyCORIS LoKr"
    assert report.network_type == expected
    assert not report.broken and not report.mismatched and not report.not_in_model
    for client in ("A1111", "Forge", "ComfyUI", "InvokeAI"):
        assert report.compat[client][0], (client, report.compat[client])
    assert not report.compat["diffusers"][0]  # diffusers' SD loader has no LoHa/LoKr (lora-format.md §2.7)
    assert not any("unknown tensor" in why for _ok, whys in report.compat.values() for why in whys)
    text = format_verify_report(report)
    assert f"Network type: {expected} (ss_network_module lycoris.kohya)" in text

    # continue training from the file (network_weights, ranks from the file)
    cfg2 = dict(cfg, output_dir=str(tmp_path / "out2"), network_weights=str(path), dim_from_weights=True,
                max_train_steps=1, scale_weight_norms=0.0)
    fin = Trainer(cfg2, Collector(), None, None).run()
    assert fin.status == "finished", fin.message


def test_verify_checks_lycoris_shapes(tmp_path):
    xl = {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "lycoris.kohya"}
    name = "lora_unet_input_blocks_4_1_proj_in"
    broken = {f"{name}.hada_w1_a": torch.randn(8, 2), f"{name}.hada_w1_b": torch.randn(3, 8),
              f"{name}.hada_w2_a": torch.randn(8, 2), f"{name}.hada_w2_b": torch.randn(2, 8)}
    path = tmp_path / "broken.safetensors"
    save_lora(path, broken, xl, precision="float")
    r = verify_lora(path)
    assert r.network_type == "LyCORIS LoHa" and r.broken and not r.compat["A1111"][0]
    lokr = {f"{name}.lokr_w1": torch.randn(4, 4), f"{name}.lokr_w2_a": torch.randn(8, 2),
            f"{name}.lokr_w2_b": torch.randn(2, 8), f"{name}.alpha": torch.tensor(2.0)}
    save_lora(path, lokr, xl, precision="float")
    r = verify_lora(path)
    assert r.network_type == "LyCORIS LoKr" and not r.broken and r.ranks == [2]

    # a file for one family checked against the other family's model: the LyCORIS factors do not fit
    net = make("sd1", "lokr")
    perturb(net)
    save_lora(path, net.kohya_state_dict(), build_metadata(values={"LoRA_type": "LyCORIS/LoKr"}, family="sd1"))
    sdxl_dir = save_tiny_diffusers(tmp_path / "tiny-sdxl", "sdxl")
    r = verify_lora(path, model=sdxl_dir)
    assert r.mismatched or r.not_in_model
    fresh_net = make("sd1", "loha")  # untrained: hada_w2_b is all zero, the module does nothing
    save_lora(path, fresh_net.kohya_state_dict(), build_metadata(values={"LoRA_type": "LyCORIS/LoHa"}, family="sd1"))
    assert len(verify_lora(path).untrained) == len(fresh_net)


# the LyCORIS values of kohya_ss's LoKr presets: full-matrix ranks, factor, decompose_both, dropouts, flags
KOHYA_FULL_LOKR = {
    "LoRA_type": "LyCORIS/LoKr", "LyCORIS_preset": "full", "network_dim": 100000, "network_alpha": 1,
    "conv_dim": 100000, "conv_alpha": 1, "factor": 6, "use_cp": True, "use_tucker": False, "decompose_both": True,
    "rank_dropout": 0.1, "module_dropout": 0.1, "rank_dropout_scale": True, "train_norm": True, "use_scalar": False,
    "constrain": 0.0, "rescaled": False, "bypass_mode": False, "dora_wd": False, "network_dropout": 0,
    "bucket_reso_steps": 1, "caption_extension": ".none-use-foldername", "sdxl": False,
}
_NETWORK_KEYS = ("LoRA_type", "network_dim", "network_alpha", "conv_dim", "conv_alpha", "factor", "decompose_both",
                 "rank_dropout", "module_dropout", "rank_dropout_scale", "use_tucker", "bucket_reso_steps",
                 "caption_extension")


def test_lokr_full_matrix_100000_trains_saves_and_loads(tiny_models, tmp_path):
    from patina.core.train.engine import Trainer
    from trainkit import Collector, make_dataset, tiny_cfg

    res = import_kohya(KOHYA_FULL_LOKR)
    assert res.ok, res.errors
    v = res.values
    assert (v["network_dim"], v["conv_dim"], v["factor"], v["decompose_both"]) == (100000, 100000, 6, True)
    assert (v["rank_dropout"], v["module_dropout"], v["rank_dropout_scale"]) == (0.1, 0.1, True)
    assert set(res.unsupported_set) == {"use_cp", "train_norm"}
    report = format_load_report(res)
    assert "use_cp = True: no effect here" in report and "w_norm/b_norm" in report

    data = make_dataset(tmp_path, n=2, repeats=1)
    cfg = tiny_cfg(tiny_models["sd1"], data, tmp_path / "out", epoch=1, max_train_steps=2, train_batch_size=1,
                   **{k: v[k] for k in _NETWORK_KEYS})
    fin = Trainer(cfg, Collector(), None, None).run()
    assert fin.status == "finished", fin.message
    path = tmp_path / "out" / "tiny.safetensors"
    sd, md = read_lora(path)
    # the metadata LyCORIS writes through kohya_ss: the requested rank, its network_args as strings
    assert md["ss_network_dim"] == "100000" and md["ss_network_module"] == "lycoris.kohya"
    args = json.loads(md["ss_network_args"])
    assert args == {"conv_dim": "100000", "conv_alpha": "1.0", "algo": "lokr", "factor": "6",
                    "decompose_both": "True", "rank_dropout_scale": "True", "rank_dropout": "0.1",
                    "module_dropout": "0.1", "use_tucker": "False", "use_scalar": "False", "train_norm": "False",
                    "dora_wd": "False", "bypass_mode": "False"}
    files = grouped(sd)
    assert files and all({"lokr_w1", "lokr_w2", "alpha"} == set(t) for t in files.values())  # full factors only

    report = verify_lora(path, model=tiny_models["sd1"])
    assert report.network_type == "LyCORIS LoKr" and not report.broken and not report.mismatched
    assert all(report.compat[c][0] for c in ("A1111", "Forge", "ComfyUI"))
    # the loaders' formula (scale 1 for full factors) gives the output of the network rebuilt from the file
    unet, tes = fresh("sd1")
    net = build_network_from_weights(unet, tes, "sd1", sd)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.modules:
            assert m.lokr_full and m.scale == 1
            base = m.layer.get_base_layer()
            x = layer_input(base, g)
            assert close(m.layer(x), apply_delta(base, x, loader_delta(files[m.name], base.weight.shape))), m.name
    assert any(float(files[m.name]["lokr_w2"].abs().sum()) > 0 for m in net.modules)  # it did train
