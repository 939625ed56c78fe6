"""The LoRA tools (resize, merge, merge-into, extract) and ``patina lora ...`` on tiny SD1 / SDXL models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from patina.core.errors import PatinaError
from patina.core.lora.checkpoint_map import ModelWeights
from patina.core.lora.kohya_format import read_lora_metadata, save_lora
from patina.core.lora.toolkit import Cancelled, LoraReader, choose_rank
from patina.core.lora.verify import format_verify_report, verify_lora
from patina.core.models import tiny

_TOP = ("conv_in", "conv_out", "time_embedding", "add_embedding")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny SD1, SD2 and SDXL models as single files (+ config folders) and diffusers folders."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for fam in ("sd1", "sd2", "sdxl"):
        out[fam] = {
            "file": tiny.save_tiny_single_file(root / f"{fam}.safetensors", fam, seed=0),
            "cfg": tiny.save_tiny_config_dir(root / f"{fam}-cfg", fam),
            "folder": tiny.save_tiny_diffusers_any(root / f"{fam}-diffusers", fam, seed=0),
        }
    return out


def _delta(sd: dict, name: str) -> torch.Tensor:
    down, up = sd[f"{name}.lora_down.weight"].float(), sd[f"{name}.lora_up.weight"].float()
    r = down.shape[0]
    alpha = float(sd[f"{name}.alpha"]) if f"{name}.alpha" in sd else r
    w = up.reshape(up.shape[0], -1) @ down.reshape(r, -1)
    return (w * alpha / r).reshape(up.shape[0], *down.shape[1:])


def _random_lora(refs, rank: int, seed: int, alpha: float | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for ref in refs:
        out = ref.shape[0]
        if len(ref.shape) == 4:
            down = torch.randn(rank, *ref.shape[1:], generator=g) * 0.2
            up = torch.randn(out, rank, 1, 1, generator=g) * 0.2
        else:
            down = torch.randn(rank, ref.shape[1], generator=g) * 0.2
            up = torch.randn(out, rank, generator=g) * 0.2
        sd[f"{ref.name}.lora_down.weight"] = down
        sd[f"{ref.name}.lora_up.weight"] = up
        sd[f"{ref.name}.alpha"] = torch.tensor(float(alpha if alpha is not None else rank / 2))
    return sd


def _lora_refs(models, fam, conv=True):
    with ModelWeights(models[fam]["file"], config_dir=models[fam]["cfg"]) as mw:
        refs = [m for m in mw.modules if m.path.split(".")[0] not in _TOP]
    if not conv:
        refs = [m for m in refs if m.in_attention]
    return refs


def _locon(models, fam, path: Path, rank=4, seed=0, **kw) -> Path:
    """A LoCon file over a selection of every kind of layer (attention linear, 1x1/linear proj, 3x3 conv, TE)."""
    refs = _lora_refs(models, fam)
    kinds: dict = {}
    for r in refs:
        kinds.setdefault((r.part, r.kind), []).append(r)
    chosen = [x for group in kinds.values() for x in group[:3]]
    save_lora(path, _random_lora(chosen, rank, seed, **kw),
              {"ss_base_model_version": "sdxl_base_v1-0" if fam == "sdxl" else "sd_v1",
               "ss_network_dim": str(rank), "ss_network_alpha": str(rank / 2)}, precision="float")
    return path


# ---------------------------------------------------------------------------------------------------------
# resize
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fam", ["sd1", "sdxl"])
def test_resize_to_full_rank_reproduces_delta(models, tmp_path, fam):
    from patina.core.lora.resize import resize

    src = _locon(models, fam, tmp_path / "src.safetensors", rank=4)
    dst = tmp_path / "same.safetensors"
    report = resize(src, dst, rank=4, precision="float", device="cpu")
    a, b = load_file(str(src)), load_file(str(dst))
    names = {k.split(".")[0] for k in a}
    assert {k.split(".")[0] for k in b} == names
    assert any(b[f"{n}.lora_down.weight"].ndim == 4 and b[f"{n}.lora_down.weight"].shape[2] == 3 for n in names)
    for n in names:
        torch.testing.assert_close(_delta(b, n), _delta(a, n), atol=1e-5, rtol=1e-4)
        # kohya convention: the scale alpha/rank is kept
        assert float(b[f"{n}.alpha"]) / b[f"{n}.lora_down.weight"].shape[0] == pytest.approx(0.5)
    assert all(m.retained == pytest.approx(1.0) for m in report.modules)


def test_resize_lower_rank_error_is_the_discarded_singular_values(models, tmp_path):
    from patina.core.lora.resize import resize

    src = _locon(models, "sd1", tmp_path / "src.safetensors", rank=6)
    dst = tmp_path / "r2.safetensors"
    report = resize(src, dst, rank=2, precision="float", device="cpu")
    a, b = load_file(str(src)), load_file(str(dst))
    md = read_lora_metadata(dst)
    assert md["ss_network_dim"] == "2" and float(md["ss_network_alpha"]) == pytest.approx(1.0)
    assert "resized to rank 2" in md["ss_training_comment"] and "patina_resize" in md
    by_name = {m.name: m for m in report.modules}
    for n in {k.split(".")[0] for k in a}:
        full = _delta(a, n)
        s = torch.linalg.svdvals(full.reshape(full.shape[0], -1).double())
        err = (full - _delta(b, n)).double().norm()
        assert b[f"{n}.lora_down.weight"].shape[0] == 2
        assert float(err) == pytest.approx(float(s[2:].pow(2).sum().sqrt()), rel=1e-3, abs=1e-5)
        assert by_name[n].retained == pytest.approx(float((s[:2].pow(2).sum() / s.pow(2).sum()).sqrt()), rel=1e-4)


def _spectrum_lora(path: Path, spectra: dict[str, list[float]]) -> Path:
    g = torch.Generator().manual_seed(3)
    sd = {}
    for name, s in spectra.items():
        r = len(s)
        u, _ = torch.linalg.qr(torch.randn(24, r, generator=g))
        v, _ = torch.linalg.qr(torch.randn(20, r, generator=g))
        sd[f"{name}.lora_up.weight"] = u * torch.tensor(s)[None, :]
        sd[f"{name}.lora_down.weight"] = v.T.contiguous()
        sd[f"{name}.alpha"] = torch.tensor(float(r))  # scale 1: ΔW has exactly these singular values
    save_lora(path, sd, {}, precision="float")
    return path


@pytest.mark.parametrize("method, param, max_rank, expected", [
    ("sv_ratio", 10, 8, 4),        # keep s > 8/10
    ("sv_ratio", 10, 3, 3),        # capped by the rank
    ("sv_cumulative", 0.9, 8, 4),  # cumulative sums 0.5, 0.75, 0.875, 0.9375
    ("sv_fro", 0.95, 8, 2),        # Frobenius shares 0.866, 0.968
    ("sv_fro", 0.98, 8, 3),        # ... 0.992
])
def test_dynamic_methods_pick_the_expected_rank(tmp_path, method, param, max_rank, expected):
    from patina.core.lora.resize import resize

    s = [8, 4, 2, 1, 0.5, 0.25, 0.125, 0.125]
    assert choose_rank(torch.tensor(s), max_rank, method, param) == expected
    src = _spectrum_lora(tmp_path / "spec.safetensors", {"lora_unet_a": s, "lora_unet_b": [1.0] * 8})
    dst = tmp_path / "dyn.safetensors"
    resize(src, dst, rank=max_rank, dynamic=method, dynamic_param=param, precision="float", device="cpu")
    out = load_file(str(dst))
    assert out["lora_unet_a.lora_down.weight"].shape[0] == expected
    flat = min(max_rank, {"sv_ratio": 8, "sv_cumulative": 8, "sv_fro": 8}[method])
    if method == "sv_fro":
        flat = min(max_rank, math.ceil(param ** 2 * 8))
    elif method == "sv_cumulative":
        flat = min(max_rank, math.ceil(param * 8))
    assert out["lora_unet_b.lora_down.weight"].shape[0] == flat
    md = read_lora_metadata(dst)
    assert md["ss_network_dim"] == ("Dynamic" if flat != expected else str(expected))
    assert method in md["ss_training_comment"]


def test_resize_refuses_a_larger_rank_and_non_lora(tmp_path):
    from patina.core.lora.resize import resize

    src = _spectrum_lora(tmp_path / "spec.safetensors", {"lora_unet_a": [3.0, 2.0, 1.0]})
    with pytest.raises(PatinaError, match="larger than the rank"):
        resize(src, tmp_path / "big.safetensors", rank=8)
    loha = tmp_path / "loha.safetensors"
    save_file({"lora_unet_a.hada_w1_a": torch.zeros(2, 2), "lora_unet_a.hada_w1_b": torch.zeros(2, 2)}, str(loha))
    with pytest.raises(PatinaError, match="LoHa"):
        resize(loha, tmp_path / "x.safetensors", rank=1)
    assert not (tmp_path / "big.safetensors").exists() and not (tmp_path / "x.safetensors").exists()


def test_resize_without_conv_rank_keeps_a_lower_conv_rank(models, tmp_path):
    from patina.core.lora.resize import resize

    refs = _lora_refs(models, "sd1")
    conv = [r for r in refs if r.kind == "conv3x3"][:2]
    lin = [r for r in refs if r.kind == "linear"][:2]
    src = tmp_path / "locon.safetensors"
    save_lora(src, {**_random_lora(lin, 8, 1), **_random_lora(conv, 4, 2)}, {}, precision="float")
    out = tmp_path / "r6.safetensors"
    resize(src, out, rank=6, precision="float", device="cpu")
    sd = load_file(str(out))
    assert {sd[f"{r.name}.lora_down.weight"].shape[0] for r in lin} == {6}
    assert {sd[f"{r.name}.lora_down.weight"].shape[0] for r in conv} == {4}
    args = json.loads(read_lora_metadata(out)["ss_network_args"])
    assert args["conv_dim"] == "4" and read_lora_metadata(out)["ss_network_dim"] == "6"
    with pytest.raises(PatinaError, match="conv rank 5 is larger"):
        resize(src, tmp_path / "c5.safetensors", rank=6, conv_rank=5)


# ---------------------------------------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------------------------------------

def test_merge_concat_is_exact_and_svd_at_full_rank_too(models, tmp_path):
    from patina.core.lora.merge import merge

    refs = _lora_refs(models, "sd1")
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    save_lora(a, _random_lora(refs[:6], 4, 1), {"ss_base_model_version": "sd_v1"}, precision="float")
    save_lora(b, _random_lora(refs[3:9], 2, 2, alpha=1.0), {"ss_base_model_version": "sd_v1"}, precision="float")
    sa, sb = load_file(str(a)), load_file(str(b))
    out = tmp_path / "m.safetensors"
    merge([(a, 0.7), (b, -0.3)], out, mode="concat", precision="float", device="cpu")
    sm = load_file(str(out))
    names = {r.name for r in refs[:9]}
    assert {k.split(".")[0] for k in sm} == names
    for n in names:
        want = 0
        if f"{n}.alpha" in sa:
            want = want + 0.7 * _delta(sa, n)
        if f"{n}.alpha" in sb:
            want = want - 0.3 * _delta(sb, n)
        torch.testing.assert_close(_delta(sm, n), want, atol=1e-5, rtol=1e-5)
        assert sm[f"{n}.lora_down.weight"].shape[0] == (4 if f"{n}.alpha" in sa else 0) + (2 if f"{n}.alpha" in sb else 0)
    assert "merged (concat)" in read_lora_metadata(out)["ss_training_comment"]

    svd = tmp_path / "s.safetensors"
    report = merge([(a, 0.7), (b, -0.3)], svd, mode="svd", rank=6, precision="float", device="cpu")
    ss = load_file(str(svd))
    for n in names:
        torch.testing.assert_close(_delta(ss, n), _delta(sm, n), atol=1e-5, rtol=1e-4)
    low = tmp_path / "low.safetensors"
    report = merge([(a, 0.7), (b, -0.3)], low, mode="svd", rank=1, precision="float", device="cpu")
    assert all(m.rank_out == 1 for m in report.modules) and min(m.retained for m in report.modules) < 1


def test_merge_refuses_loras_of_different_families(models, tmp_path):
    from patina.core.lora.merge import merge

    a = _locon(models, "sd1", tmp_path / "sd1.safetensors")
    b = _locon(models, "sdxl", tmp_path / "sdxl.safetensors")
    with pytest.raises(PatinaError, match="different model families"):
        merge([(a, 1), (b, 1)], tmp_path / "m.safetensors")


# ---------------------------------------------------------------------------------------------------------
# merge-into
# ---------------------------------------------------------------------------------------------------------

def _unet_and_te_outputs(model, net=None, weight=1.0):
    torch.manual_seed(0)
    unet = model.unet
    cfg = unet.config
    b = 1
    sample = torch.randn(b, cfg.in_channels, 16, 16)
    ctx = torch.randn(b, 7, cfg.cross_attention_dim)
    kwargs = {}
    if cfg.addition_embed_type == "text_time":
        dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(b, dim), "time_ids": torch.randn(b, 6)}
    ids = torch.tensor([[1, 5, 9, 3, 2, 0, 0]])

    def run():
        with torch.no_grad():
            u = unet(sample, 10, encoder_hidden_states=ctx, **kwargs).sample
            t = [te(ids).last_hidden_state for te in model.text_encoders]
        return u, t

    if net is None:
        return run()
    with net.weight(weight):
        return run()


@pytest.mark.parametrize("fam, layout", [("sd1", "file"), ("sd2", "file"), ("sdxl", "file"), ("sd1", "folder"),
                                         ("sdxl", "folder")])
def test_merge_into_equals_base_plus_lora_at_run_time(models, tmp_path, fam, layout):
    from patina.core.lora.merge_into import merge_into
    from patina.core.lora.network import build_network_from_weights
    from patina.core.models.loading import load_base_model

    lora = _locon(models, fam, tmp_path / "l.safetensors", rank=2)
    base = models[fam][layout]
    cfg = models[fam]["cfg"] if layout == "file" else None
    out = tmp_path / ("merged.safetensors" if layout == "file" else "merged")
    report = merge_into(base, [(lora, 0.8)], out, dtype="fp32", config_dir=cfg)
    assert len(report.modules) == len(LoraReader(lora).names)

    ref = load_base_model(base, config_dir=cfg)
    net = build_network_from_weights(ref.unet, ref.text_encoders, fam, load_file(str(lora)))
    want_u, want_t = _unet_and_te_outputs(ref, net, 0.8)
    base_u, _ = _unet_and_te_outputs(ref, net, 0.0)
    got = load_base_model(out, config_dir=cfg)
    got_u, got_t = _unet_and_te_outputs(got)
    assert (want_u - base_u).abs().max() > 1e-3  # the LoRA changes the output
    torch.testing.assert_close(got_u, want_u, atol=2e-4, rtol=1e-4)
    for g, w in zip(got_t, want_t):
        torch.testing.assert_close(g, w, atol=2e-4, rtol=1e-4)
    if layout == "file":  # same keys as the input, cast to the requested dtype
        with safe_open(str(base), "pt") as fb, safe_open(str(out), "pt") as fo:
            assert set(fb.keys()) == set(fo.keys())


def test_merge_into_writes_fp16_and_refuses_wrong_family(models, tmp_path):
    from patina.core.lora.merge_into import merge_into

    lora = _locon(models, "sdxl", tmp_path / "xl.safetensors", rank=2)
    with pytest.raises(PatinaError, match="SDXL"):
        merge_into(models["sd1"]["file"], [(lora, 1.0)], tmp_path / "bad.safetensors", config_dir=models["sd1"]["cfg"])
    assert not (tmp_path / "bad.safetensors").exists()
    out = tmp_path / "half.safetensors"
    merge_into(models["sdxl"]["file"], [(lora, 1.0)], out, dtype="fp16", config_dir=models["sdxl"]["cfg"])
    sd = load_file(str(out))
    assert {t.dtype for t in sd.values() if t.is_floating_point()} == {torch.float16}


# ---------------------------------------------------------------------------------------------------------
# extract
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fam", ["sd1", "sdxl"])
def test_extract_recovers_a_known_low_rank_delta(models, tmp_path, fam):
    from patina.core.lora.extract import extract

    base = models[fam]["file"]
    cfg = models[fam]["cfg"]
    with ModelWeights(base, config_dir=cfg) as mw:
        refs = [m for m in mw.modules if m.path.split(".")[0] not in _TOP]
    # the delta: rank 2 on attention layers, a 3x3 conv and (SD1: TE1; SDXL: TE2's fused q rows) the text encoder
    te_part = "te1" if fam == "sd1" else "te2"
    picked = ([m for m in refs if m.part == "unet" and m.in_attention][:4]
              + [m for m in refs if m.kind == "conv3x3"][:2]
              + [m for m in refs if m.part == te_part and "q_proj" in m.name][:1])
    known = _random_lora(picked, 2, 5, alpha=2.0)
    sd = load_file(str(base))
    for m in picked:
        d = _delta(known, m.name).reshape(m.shape)
        if m.rows:
            sd[m.key][m.rows[0]:m.rows[1]] += d
        else:
            sd[m.key] += d.reshape(sd[m.key].shape)
    tuned = tmp_path / "tuned.safetensors"
    save_file(sd, str(tuned))

    out = tmp_path / "extracted.safetensors"
    report = extract(base, tuned, out, rank=4, conv_rank=4, clamp_quantile=1.0, precision="float", device="cpu",
                     config_dir=cfg)
    got = load_file(str(out))
    names = {k.split(".")[0] for k in got}
    for m in picked:
        torch.testing.assert_close(_delta(got, m.name).reshape(m.shape), _delta(known, m.name).reshape(m.shape),
                                   atol=1e-4, rtol=1e-4)
    untouched = [n for n in names if n not in {m.name for m in picked}]
    assert untouched and all(_delta(got, n).abs().max() < 1e-5 for n in untouched)
    other_te = "lora_te2_" if fam == "sd1" else "lora_te1_"
    assert not any(n.startswith(other_te) for n in names)
    if fam == "sdxl":  # TE1 unchanged: left out, with a warning
        assert any("text encoder 1 is unchanged" in w for w in report.warnings)
        assert any(n.startswith("lora_te2_") for n in names)
    check = verify_lora(out, model=models[fam]["folder"])  # Patina's own "Verify LoRA" accepts it
    assert check.ok and check.family == fam and not check.not_in_model, format_verify_report(check)
    md = read_lora_metadata(out)
    assert md["ss_network_dim"] == "4" and md["ss_base_model_version"].startswith("sdxl" if fam == "sdxl" else "sd_v1")

    plain = tmp_path / "plain.safetensors"
    extract(base, tuned, plain, rank=4, conv_rank=0, precision="float", device="cpu", config_dir=cfg)
    assert not any(load_file(str(plain))[k].shape[-1] == 3 for k in load_file(str(plain)) if k.endswith("down.weight"))


# ---------------------------------------------------------------------------------------------------------
# cancel, refusals, CLI
# ---------------------------------------------------------------------------------------------------------

def _leftovers(folder: Path, stem: str) -> list[Path]:
    return [p for p in folder.iterdir() if stem in p.name]


def test_cancel_leaves_no_output(models, tmp_path):
    from patina.core.lora.extract import extract
    from patina.core.lora.merge_into import merge_into
    from patina.core.lora.resize import resize

    lora = _locon(models, "sd1", tmp_path / "l.safetensors", rank=4)

    def cancel_after(n):
        calls = {"n": 0}

        def cancelled():
            calls["n"] += 1
            return calls["n"] > n
        return cancelled

    seen = []
    with pytest.raises(Cancelled):
        resize(lora, tmp_path / "r.safetensors", rank=2, cancelled=cancel_after(3),
               progress=lambda d, t, m: seen.append((d, t)))
    assert seen and seen[0][1] == len(LoraReader(lora).names)
    with pytest.raises(Cancelled):
        merge_into(models["sd1"]["file"], [(lora, 1)], tmp_path / "m.safetensors", config_dir=models["sd1"]["cfg"],
                   cancelled=cancel_after(20))
    with pytest.raises(Cancelled):
        merge_into(models["sd1"]["folder"], [(lora, 1)], tmp_path / "mf", cancelled=cancel_after(40))
    with pytest.raises(Cancelled):
        extract(models["sd1"]["file"], models["sd1"]["folder"], tmp_path / "e.safetensors",
                config_dir=models["sd1"]["cfg"], cancelled=cancel_after(5))
    for stem in ("r.safetensors", "m.safetensors", "mf", "e.safetensors"):
        assert not _leftovers(tmp_path, stem), stem


def test_output_equal_to_an_input_is_refused(models, tmp_path):
    from patina.core.lora.extract import extract
    from patina.core.lora.merge import merge
    from patina.core.lora.merge_into import merge_into
    from patina.core.lora.resize import resize

    lora = _locon(models, "sd1", tmp_path / "l.safetensors", rank=4)
    before = lora.read_bytes()
    with pytest.raises(PatinaError, match="same as an input"):
        resize(lora, lora, rank=2)
    with pytest.raises(PatinaError, match="same as an input"):
        merge([(lora, 1.0)], tmp_path / "." / "l.safetensors")
    with pytest.raises(PatinaError, match="same as an input"):
        merge_into(models["sd1"]["file"], [(lora, 1)], models["sd1"]["file"])
    with pytest.raises(PatinaError, match="same as an input|inside the input folder"):
        merge_into(models["sd1"]["folder"], [(lora, 1)], models["sd1"]["folder"])
    with pytest.raises(PatinaError, match="same as an input"):
        extract(models["sd1"]["file"], models["sd1"]["file"], models["sd1"]["file"])
    assert lora.read_bytes() == before


def test_cli_lora_tools(models, tmp_path, capsys):
    from patina.core.cli import main

    lora = _locon(models, "sd1", tmp_path / "l.safetensors", rank=4)
    out = tmp_path / "r.safetensors"
    assert main(["lora", "resize", str(lora), "-o", str(out), "--rank", "2", "--quiet", "--verbose"]) == 0
    text = capsys.readouterr().out
    assert "resize: wrote" in text and "retained" in text and out.exists()

    assert main(["lora", "merge", f"{lora}:0.5", f"{out}:0.5", "-o", str(tmp_path / "m.safetensors"), "--quiet"]) == 0
    assert (tmp_path / "m.safetensors").exists()

    cases = [
        (["lora", "resize", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.safetensors"), "--rank", "2"],
         "does not exist"),
        (["lora", "resize", str(lora), "-o", str(lora), "--rank", "2"], "same as an input"),
        (["lora", "resize", str(lora), "-o", str(tmp_path / "x.safetensors"), "--rank", "9"], "larger than the rank"),
        (["lora", "merge-into", str(models["sdxl"]["folder"]), str(lora), "-o", str(tmp_path / "xl")], "for SD1/SD2"),
    ]
    for argv, msg in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "xl").exists()
