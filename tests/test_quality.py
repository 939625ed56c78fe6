"""The per-epoch quality report (patina.core.train.quality) and its parts: held-out validation images, LoRA
weights at sampling time, the report's fields and files, and the best-epoch choice."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from patina.core.config.schema import check_values, defaults, errors
from patina.core.dataset.folders import scan_dataset
from patina.core.dataset.plan import DatasetPlan
from patina.core.demo import world
from patina.core.models.tiny import save_tiny_diffusers
from patina.core.train import events as E
from patina.core.train import quality as Q
from patina.core.train.engine import train
from trainkit import Collector, make_dataset, tiny_cfg


@pytest.fixture(scope="module")
def sd1_dir(tmp_path_factory):
    return save_tiny_diffusers(tmp_path_factory.mktemp("models") / "tiny-sd1", "sd1")


# --- held-out validation images -------------------------------------------------------------------------------

def _plan(tmp_path, n=10, **over):
    data = make_dataset(tmp_path, n=n, repeats=3)
    cfg = {**defaults(), "max_resolution": "64,64", "min_bucket_reso": 64, **over}
    return DatasetPlan(scan_dataset(data, None, ".txt", min_size=64), cfg, seed=7)


def test_validation_split_holds_images_out_of_training(tmp_path):
    plan = _plan(tmp_path, validation_split=0.2)
    held = plan.validation_items
    assert len(held) == 2
    assert not set(held) & set(plan.train_samples)
    assert len(plan.train_samples) == (10 - 2) * 3          # the others keep their repeats
    again = _plan(tmp_path / "b", validation_split=0.2)
    assert again.validation_items == held                  # the same seed picks the same images
    other = _plan(tmp_path / "c", validation_split=0.2, validation_seed=99)
    assert other.validation_items != held


def test_no_split_trains_every_image_and_a_split_always_leaves_one(tmp_path):
    assert _plan(tmp_path, validation_split=0.0).validation_items == []
    tiny = _plan(tmp_path / "t", n=2, validation_split=0.5)
    assert len(tiny.validation_items) == 1 and len(set(tiny.train_samples)) == 1


# --- LoRA weight while sampling ----------------------------------------------------------------------------

def test_network_weight_scales_the_lora_and_puts_it_back():
    from patina.core.lora.network import build_network
    from patina.core.lora.targets import NetworkSpec
    from patina.core.models.tiny import tiny_sd1_components

    comp = tiny_sd1_components()
    unet = comp["unet"]
    net = build_network(unet, None, "sd1", NetworkSpec(network_dim=4, network_alpha=4.0, train_text_encoder=False))
    with torch.no_grad():
        for _, p in net.lora_parameters():
            p.normal_(0, 0.2)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])
    run = lambda: unet(x, t, ctx).sample  # noqa: E731
    with torch.no_grad():
        full = run()
        with net.disable_adapters():
            base = run()
        with net.weight(0.0):
            zero = run()
        with net.weight(1.0):
            one = run()
        with net.weight(0.5):
            half = run()
        after = run()
    assert torch.allclose(zero, base, atol=1e-6)
    assert torch.allclose(one, full, atol=1e-6) and torch.allclose(after, full, atol=1e-6)
    assert not torch.allclose(half, full, atol=1e-4) and not torch.allclose(half, base, atol=1e-4)
    # half the weight lands between the base and the full LoRA
    assert (half - base).abs().mean() < (full - base).abs().mean()


# --- prompts, best epoch, table ------------------------------------------------------------------------------

def test_report_prompts_split_trigger_and_class_and_derive_class_prompts(tmp_path):
    data = make_dataset(tmp_path, name="2_sks toy")
    scan = scan_dataset(data, None, ".txt", min_size=64)
    assert Q.trigger_words(scan) == ["sks"]
    cfg = {**defaults(), "sample_prompts": "a photo of sks toy --d 5\na red circle on a white background --d 1"}
    prompts = Q.report_prompts(cfg, scan, (64, 64))
    assert [(p.kind, p.sample.prompt) for p in prompts] == [("trigger", "a photo of sks toy"),
                                                             ("class", "a red circle on a white background")]
    assert prompts[1].expect == {"shape": "circle", "colour": "red", "background": "white"}
    only_trigger = Q.report_prompts({**defaults(), "sample_prompts": "a photo of sks toy"}, scan, (64, 64))
    assert [(p.kind, p.sample.prompt) for p in only_trigger] == [("trigger", "a photo of sks toy"),
                                                                  ("class", "a photo of toy")]
    from_folders = Q.report_prompts(defaults(), scan, (64, 64))
    assert [(p.kind, p.sample.prompt) for p in from_folders] == [("trigger", "sks toy"), ("class", "toy")]


def _epoch(n, loss, fid=None, pres=None, change=0.2, drift=0.05):
    w = {"trigger_change": change, "prior_drift": drift, "selectivity": round(change / drift, 3)}
    if fid is not None:
        w.update(fidelity=fid, preservation=pres, class_accuracy=pres)
    return {"epoch": n, "step": n * 10, "validation_loss": loss, "weights": {"0.5": w, "1.0": w}}


def test_best_epoch_with_a_judge_wants_fidelity_while_preserving_the_class():
    epochs = [_epoch(1, 0.05, 0.5, 1.0), _epoch(2, 0.04, 0.9, 0.95), _epoch(3, 0.03, 1.0, 0.7)]
    best, why = Q.best_epoch(epochs, judged=True)
    assert best == 2 and "preservation" in why          # epoch 3 draws the concept but breaks other prompts
    none_preserve = [_epoch(1, 0.05, 0.5, 0.5), _epoch(2, 0.04, 0.9, 0.8)]
    assert Q.best_epoch(none_preserve, judged=True)[0] == 2


def test_best_epoch_without_a_judge_wants_selectivity_near_the_lowest_validation_loss():
    epochs = [_epoch(1, 0.050, change=0.30, drift=0.02),   # most selective, but the validation loss is far off
              _epoch(2, 0.030, change=0.20, drift=0.05),
              _epoch(3, 0.031, change=0.25, drift=0.05)]
    assert Q.best_epoch(epochs, judged=False)[0] == 3


def test_table_has_one_row_per_epoch_and_marks_the_best():
    report = {"judge": True, "base": {"fidelity": 0.0}, "best_epoch": 2,
              "epochs": [_epoch(1, 0.05, 0.5, 1.0), _epoch(2, 0.04, 0.9, 0.95)]}
    header, rows = Q.table(report)
    assert header[:2] == ["Epoch", "Val. loss"] and "Fidelity @1.0" in header and "Preservation @1.0" in header
    assert [r[0] for r in rows] == ["1", "2 ★"]
    assert rows[1][header.index("Fidelity @1.0")] == "90%"
    assert "best epoch 2" in Q.format_table(report)


def test_quality_weights_are_checked_by_the_schema():
    _, problems = check_values({**defaults(), "quality_weights": "0, half"})
    assert [p.key for p in errors(problems)] == ["quality_weights"]
    assert Q.parse_weights("1, 0.5") == [0.0, 0.5, 1.0]    # the base model is always measured


# --- the engine writes the report ---------------------------------------------------------------------------

def test_engine_reports_quality_every_epoch_on_any_model(sd1_dir, tmp_path):
    data = make_dataset(tmp_path, n=6, repeats=1)
    out = tmp_path / "out"
    log = tmp_path / "log"
    cfg = tiny_cfg(sd1_dir, data, out, epoch=2, quality_report=True, quality_seeds=2, quality_weights="0,1",
                   validation_split=0.34, logging_dir=str(log),
                   quality_prompts="sks toy --w 64 --h 64 --s 4 --d 3\na toy --w 64 --h 64 --s 4 --d 3")
    events = Collector()
    fin = train(cfg, events)
    assert fin.status == "finished", fin.message
    reports = events.of(E.Quality)
    assert [q.epoch for q in reports] == [1, 2]
    report = json.loads((out / "tiny-quality.json").read_text(encoding="utf-8"))
    assert report == reports[-1].report
    assert report["judge"] is False and report["validation"]["held_out_images"] == 2
    assert [p["kind"] for p in report["prompts"]] == ["trigger", "class"]
    for entry in report["epochs"]:
        assert entry["validation_loss"] > 0
        w1 = entry["weights"]["1.0"]
        assert set(w1) == {"trigger_change", "prior_drift", "selectivity"}
        assert 0 < w1["trigger_change"] < 1 and 0 < w1["prior_drift"] < 1
    assert report["best_epoch"] in (1, 2) and report["best_reason"]
    grid = Image.open(reports[-1].grid_path)
    # header + 2 epoch rows; 2 prompts × 2 weights columns of enlarged 64 px cells
    assert grid.height > 2 * 64 and grid.width > 4 * 64
    lines = [json.loads(x) for f in log.rglob("metrics.jsonl") for x in f.read_text().splitlines()]
    assert [x["epoch"] for x in lines if "quality" in x] == [1, 2]


def test_a_failing_report_never_stops_the_training(sd1_dir, tmp_path, monkeypatch):
    data = make_dataset(tmp_path, n=4, repeats=1)
    cfg = tiny_cfg(sd1_dir, data, tmp_path / "out", epoch=2, quality_report=True, quality_seeds=1,
                   quality_prompts="sks toy --w 64 --h 64 --s 2")

    def broken(self, epoch):
        raise RuntimeError("judge exploded")

    monkeypatch.setattr(Q.QualityReport, "measure", broken)
    events = Collector()
    fin = train(cfg, events)
    assert fin.status == "finished", fin.message
    warnings = [e.text for e in events.of(E.Log) if e.level == "warning" and "quality report" in e.text]
    assert len(warnings) == 1 and "judge exploded" in warnings[0]


# --- the demo: the judge, and a LoRA that learns the concept -------------------------------------------------

demo_model = pytest.importorskip("patina.core.demo.setup").model_dir()
needs_demo = pytest.mark.skipif(not (demo_model / "model_index.json").is_file(), reason="demo model not built")


@needs_demo
def test_the_judge_is_honest_on_fresh_renders():
    from patina.core.demo.judge import honesty_report, load_judge

    report = honesty_report(load_judge(demo_model / "judge"), seed=777, per_class=12)["renders"]
    assert report["concept_recall"] >= 0.9          # it knows the concept when it sees it
    assert report["false_concept"] <= 0.02          # and rejects every other shape
    assert report["shape_accuracy"] >= 0.95 and report["colour_accuracy"] >= 0.95
    circles = report["confusion"]["circle"]
    assert circles[world.CONCEPT] == 0 and circles["circle"] >= 11   # one circle is not two stacked circles


@needs_demo
def test_a_short_demo_run_moves_trigger_prompts_far_more_than_class_prompts(tmp_path):
    from patina.core.demo.setup import prepare

    folder = prepare(tmp_path / "demo")
    opts = "--w 64 --h 64 --s 12 --l 5"
    # without the regularisation images (they double the steps): this checks that the LoRA learns the concept
    cfg = {**folder.config, "reg_data_dir": "", "epoch": 2, "sample_every_n_epochs": 0, "quality_seeds": 2,
           "quality_weights": "0,1",
           "quality_prompts": "\n".join([f"a red zorbo shape on a white background {opts} --d 1",
                                         f"a blue zorbo shape on a sky and grass background {opts} --d 2",
                                         f"a red circle on a white background {opts} --d 1",
                                         f"a blue square on a sky and grass background {opts} --d 2"])}
    events = Collector()
    fin = train(cfg, events)
    assert fin.status == "finished", fin.message
    report = events.of(E.Quality)[-1].report
    assert report["judge"] is True
    last = report["epochs"][-1]["weights"]["1.0"]
    assert last["trigger_change"] > 2.5 * last["prior_drift"], last
    assert set(last) >= {"fidelity", "preservation", "class_accuracy"}
    assert report["base"]["fidelity"] == 0.0   # the base model has never seen the concept


def test_parse_caption_reads_the_world_grammar():
    assert world.parse_caption("an orange zorbo shape on a striped gray background --d 3") == {
        "shape": world.CONCEPT, "colour": "orange", "background": "striped gray"}
    assert world.parse_caption("a blue star") == {"shape": "star", "colour": "blue", "background": None}
    assert world.parse_caption("a photo of a dog") is None
    assert world.parse_caption("a red circle on a plaid background") is None


def test_grid_is_epochs_by_prompts_times_weights():
    prompts = [Q.ReportPrompt(Q.SamplePrompt("a"), "trigger"), Q.ReportPrompt(Q.SamplePrompt("b"), "class")]
    cell = np.zeros((64, 64, 3), dtype=np.float32)
    rows = [(1, [cell] * 6), (2, [cell + 1] * 6)]
    img = Q.render_grid(rows, prompts, [0.0, 0.5, 1.0])
    arr = np.asarray(img)
    assert img.width == 40 + 6 * (64 + 2) and img.height == 30 + 2 * (64 + 2)
    assert arr[30 + 10, 40 + 10].tolist() == [0, 0, 0] and arr[30 + 66 + 10, 40 + 10].tolist() == [255, 255, 255]


def test_the_terminal_shows_each_epochs_numbers():
    report = {"judge": True, "base": {"fidelity": 0.0}, "best_epoch": 1,
              "epochs": [_epoch(1, 0.05, 0.5, 1.0), _epoch(2, 0.04, 0.9, 0.95)]}
    line = Q.epoch_line(report)
    assert line.startswith("quality after epoch 2:") and "fidelity @1.0 90%" in line and "val. loss 0.0400" in line


def test_the_plan_names_the_held_out_images(sd1_dir, tmp_path):
    from patina.core.train.engine import plan

    data = make_dataset(tmp_path, n=5, repeats=2)
    p = plan(tiny_cfg(sd1_dir, data, tmp_path / "out", validation_split=0.2, quality_report=True))
    assert "Validation: 1 image(s) held out of training" in p.text and "Quality report after every epoch" in p.text
    assert p.steps_per_epoch == 4   # 4 training images × 2 repeats, batch 2


def test_large_report_images_are_generated_a_few_at_a_time(monkeypatch):
    """At SDXL's size the report asks the pipeline for one prompt's seeds at a time (memory), at the demo's
    64×64 for every prompt at once."""
    calls = []

    class Pipe:
        scheduler = None

        def __call__(self, prompt, generator, num_images_per_prompt, width, height, **kw):
            calls.append((len(prompt), num_images_per_prompt))
            n = len(prompt) * num_images_per_prompt
            return type("Out", (), {"images": np.zeros((n, 8, 8, 3), dtype=np.float32)})()

    class Net:
        def weight(self, w):
            import contextlib
            return contextlib.nullcontext()

    import types

    import patina.core.train.sampling as S
    monkeypatch.setattr(S, "make_scheduler", lambda *a, **k: None)
    for size, expected in ((1024, [(1, 2)] * 3), (64, [(3, 2)])):
        calls.clear()
        rep = Q.QualityReport.__new__(Q.QualityReport)
        rep.seeds_n = 2
        rep.prompts = [Q.ReportPrompt(Q.SamplePrompt(f"p{i}", width=size, height=size, seed=1), "class")
                       for i in range(3)]
        rep.run = types.SimpleNamespace(
            cfg={"sample_sampler": "ddim", "clip_skip": 1, "max_token_length": 75}, seed=1, network=Net(),
            base=types.SimpleNamespace(family="sd1", scheduler_config={}),
            accelerator=types.SimpleNamespace(autocast=lambda: __import__("contextlib").nullcontext()))
        out = rep._images(Pipe(), 1.0)
        assert calls == expected and [o.shape[0] for o in out] == [2, 2, 2]
