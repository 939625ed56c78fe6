"""scripts/pretrain_demo_model.py on its tiny size: every stage runs, a resumed run continues exactly,
and the export is an ordinary SD 1.x diffusers folder that Patina's model loader reads."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("pretrain_demo_model", ROOT / "scripts" / "pretrain_demo_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    mod = _script()
    work = tmp_path_factory.mktemp("demo") / "run"
    assert mod.main(["--tiny", "--work", str(work), "--threads", "1"]) == 0
    return mod, work


def test_every_stage_runs_and_logs(tiny_run):
    _, work = tiny_run
    recs = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    stages = {r["stage"] for r in recs}
    assert {"vae", "judge", "unet", "unet-eval"} <= stages
    vae = json.loads((work / "vae" / "done.json").read_text())
    assert vae["scaling_factor"] == pytest.approx(1 / vae["latent_std"], rel=1e-3)
    assert (work / "unet" / "done.json").is_file()
    ev = [json.loads(line) for line in (work / "eval.jsonl").read_text().splitlines()]
    assert {"shape", "colour", "shape_colour"} <= set(ev[0]["all"])
    assert list((work / "samples").glob("*.png"))


def test_resumed_unet_stage_matches_an_uninterrupted_run(tiny_run, tmp_path):
    mod, work = tiny_run
    other = tmp_path / "run"
    other.mkdir()
    for name in ("config.json", "vae", "judge"):  # same finished first stages
        src = work / name
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, other / name)
    assert mod.main(["--tiny", "--work", str(other), "--stop-after", "2"]) == 0
    assert torch.load(other / "unet" / "state.pt", weights_only=False)["step"] == 2
    assert not (other / "unet" / "done.json").exists()
    assert mod.main(["--tiny", "--work", str(other)]) == 0  # resumes at step 2
    a = torch.load(work / "unet" / "state.pt", weights_only=False)
    b = torch.load(other / "unet" / "state.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for key in ("unet", "te", "ema_unet", "ema_te"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), (key, name)
    # The resumed run really trained: its weights differ from the initial ones.
    unet0, _ = mod.build_unet_te(mod.Config(other, "tiny", {}))
    assert any(not torch.equal(t, b["unet"][n]) for n, t in unet0.state_dict().items())


def test_export_loads_with_patinas_model_loader(tiny_run, tmp_path):
    mod, work = tiny_run
    out = tmp_path / "model"
    assert mod.main(["--tiny", "--work", str(work), "--export", str(out)]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert (out / "judge" / "judge.safetensors").is_file()
    assert not list(out.rglob("*.bin"))
    from safetensors import safe_open

    with safe_open(str(out / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16

    from patina.core.models.loading import load_base_model

    m = load_base_model(out)
    assert m.family == "sd1" and m.v_prediction is False
    assert m.vae.config.latent_channels == 4
    vae_done = json.loads((work / "vae" / "done.json").read_text())
    assert m.vae.config.scaling_factor == pytest.approx(vae_done["scaling_factor"])
    sc = m.scheduler_config
    assert (sc["beta_schedule"], sc["beta_start"], sc["beta_end"], sc["num_train_timesteps"]) == \
        ("scaled_linear", 0.00085, 0.012, 1000)
    names = [n for n, _ in m.unet.named_modules()]
    for target in ("attn1.to_q", "attn2.to_k", "proj_in", "proj_out", "ff.net.0.proj"):
        assert any(n.endswith(target) for n in names), target
    # The bundled CLIP BPE tokenizer: the trigger word splits into real pieces.
    ids = m.tokenizers[0]("a zorbo shape").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 6
    # The exported EMA UNet is the checkpoint's.
    st = torch.load(work / "unet" / "state.pt", weights_only=False)["ema_unet"]
    for n, t in m.unet.state_dict().items():
        assert torch.allclose(t, st[n].half().float()), n


def test_judge_report_counts_every_class(tiny_run):
    mod, work = tiny_run
    assert mod.main(["--tiny", "--work", str(work), "--judge-report"]) == 0
    rep = json.loads((work / "judge" / "honesty.json").read_text())
    from patina.core.demo import world

    for part in ("renders", "reconstructions"):
        r = rep[part]
        assert set(r["confusion"]) == set(world.JUDGE_SHAPES)
        assert all(sum(row.values()) == 4 for row in r["confusion"].values())  # 4 per class (tiny)
        concept_row = r["confusion"][world.CONCEPT]
        assert r["concept_recall"] == pytest.approx(concept_row[world.CONCEPT] / 4, abs=1e-4)
        wrong = sum(row[world.CONCEPT] for t, row in r["confusion"].items() if t != world.CONCEPT)
        assert r["false_concept"] == pytest.approx(wrong / (r["n"] - 4), abs=1e-4)
