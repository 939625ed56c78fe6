"""The LoRA grid (patina.core.lora.grid) and ``patina lora grid`` on the shipped demo model (SD1, 64 px) and a
tiny SDXL model: rows = LoRA files, columns = weights or prompts, weight 0 = the base model pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patina.core.demo.setup import model_dir
from patina.core.errors import PatinaError
from patina.core.lora import grid as G
from patina.core.lora.kohya_format import save_lora
from patina.core.lora.network import build_network
from patina.core.lora.targets import NetworkSpec
from patina.core.lora.toolkit import Cancelled
from patina.core.models.loading import load_base_model
from patina.core.train.sampling import make_scheduler

STEPS = 4


def random_lora(base, path, seed: int, scale: float = 0.2):
    """A LoRA with random (non-zero) factors on the UNet and text encoder(s) of *base*, saved as kohya file."""
    net = build_network(base.unet, base.text_encoders, base.family, NetworkSpec(network_dim=4, network_alpha=4))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in net.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    sd = net.kohya_state_dict()
    net.remove()
    save_lora(path, sd, {}, precision="float")
    return path


def base_image(base, prompt: str, seed: int, size: int, sampler="euler_a", cfg=7.0, steps=STEPS):
    """What the base model alone draws (no adapter ever injected)."""
    pipe = base.pipeline(make_scheduler(sampler, base.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe(prompt=prompt, width=size, height=size, num_inference_steps=steps, guidance_scale=cfg,
                    generator=torch.Generator("cpu").manual_seed(seed)).images[0]


def px(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    base = load_base_model(model_dir())
    a = random_lora(base, root / "run-000001.safetensors", seed=1)
    b = random_lora(base, root / "run-000002.safetensors", seed=2)
    return {"root": root, "base": base, "loras": [a, b]}


def test_rows_are_lora_files_columns_are_weights_and_weight_0_is_the_base_model(demo):
    seen = []
    result = G.render_lora_grid(model_dir(), demo["loras"], "a red circle", seeds=[1, 2], weights="0, 1",
                                steps=STEPS, progress=lambda d, t, m: seen.append((d, t)))
    assert result.shape == (2, 4)      # 2 files × (2 seeds × 2 weights)
    assert [[(c.seed, c.weight) for c in row] for row in result.cells] == [[(1, 0.0), (1, 1.0), (2, 0.0), (2, 1.0)]] * 2
    assert result.row_labels == ["run-000001", "run-000002"]
    assert result.column_labels[0][0] == "weight 0" and result.column_labels[1][0] == "weight 1"
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    size = result.settings["size"][0]
    assert size == 64
    for seed, col in ((1, 0), (2, 2)):
        ref = px(base_image(demo["base"], "a red circle", seed, size))
        for row in result.cells:
            assert np.array_equal(px(row[col].image), ref)                  # weight 0: the base model exactly
            assert np.abs(px(row[col + 1].image) - ref).mean() > 2           # weight 1: the LoRA changes it
    # the two LoRA files draw different images at weight 1
    assert np.abs(px(result.cells[0][1].image) - px(result.cells[1][1].image)).mean() > 2
    # the grid image: a label column and header, then rows × columns of (enlarged) cells
    cell = 128
    assert result.image.width >= 4 * (cell + 2) + 40 and 30 <= result.image.height - 2 * (cell + 2) <= 60


def test_each_cell_depends_only_on_its_seed_and_the_base_is_left_as_it_was(demo):
    base = demo["base"]
    before = px(base_image(base, "a blue star", 7, 64))
    both = G.render_lora_grid(model_dir(), demo["loras"][:1], ["a blue star"], seeds=[3, 7], weights=[0.6],
                              steps=STEPS, base=base)
    alone = G.render_lora_grid(model_dir(), demo["loras"][:1], ["a blue star"], seeds=[7], weights=[0.6],
                               steps=STEPS, base=base)
    assert np.array_equal(px(both.cells[0][1].image), px(alone.cells[0][0].image))
    assert not any(type(m).__module__.startswith("peft") for m in base.unet.modules())   # adapters removed
    assert np.array_equal(px(base_image(base, "a blue star", 7, 64)), before)


def test_prompt_axis_puts_the_prompts_side_by_side(demo):
    result = G.render_lora_grid(model_dir(), demo["loras"][:1], "a red circle\n# a comment\na blue star --s 3",
                                seeds=[5], weights=[0, 1], axis="prompts", steps=STEPS, base=demo["base"])
    assert result.shape == (1, 4)
    assert [(c.weight, c.prompt) for c in result.cells[0]] == [
        (0.0, "a red circle"), (0.0, "a blue star"), (1.0, "a red circle"), (1.0, "a blue star")]
    assert result.column_labels[1] == ["a blue star", "weight 0 · seed 5"]
    assert [p["steps"] for p in result.settings["prompts"]] == [STEPS, 3]   # --s in the line wins


def test_saved_png_holds_the_settings_and_is_written_atomically(demo, tmp_path):
    result = G.render_lora_grid(model_dir(), demo["loras"], "a red circle --n blurry", seeds="4", weights="0,0.5",
                                steps=STEPS, cfg=5.0, sampler="ddim", base=demo["base"])
    out = G.save_grid(result, tmp_path / "grid.png")
    settings = G.read_grid_settings(out)
    assert settings["loras"] == [str(p) for p in demo["loras"]]
    assert settings["weights"] == [0.0, 0.5] and settings["seeds"] == [4] and settings["axis"] == "weights"
    assert settings["prompts"][0]["negative"] == "blurry" and settings["prompts"][0]["sampler"] == "ddim"
    assert settings["cfg"] == 5.0 and settings["family"] == "sd1" and settings["rows"] == ["run-000001", "run-000002"]
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]    # no temporary file left
    with pytest.raises(PatinaError, match=r"\.png"):
        G.save_grid(result, tmp_path / "grid.jpg")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(PatinaError, match="is a folder"):
        G.save_grid(result, tmp_path / "folder.png")


def test_cancel_stops_the_grid(demo):
    calls = []

    def progress(done, total, message):
        calls.append(done)

    with pytest.raises(Cancelled):
        G.render_lora_grid(model_dir(), demo["loras"], "a red circle", seeds=[1], weights=[0, 1], steps=STEPS,
                           progress=progress, cancelled=lambda: len(calls) >= 2, base=demo["base"])
    assert max(calls) < 4
    assert not any(type(m).__module__.startswith("peft") for m in demo["base"].unet.modules())


def test_user_mistakes_get_one_line(demo, tmp_path):
    loras = demo["loras"]
    with pytest.raises(PatinaError, match="not found"):
        G.render_lora_grid(model_dir(), [tmp_path / "missing.safetensors"], "x", steps=STEPS)
    with pytest.raises(PatinaError, match='"x1" is not a number'):
        G.render_lora_grid(model_dir(), loras, "x", weights="0, x1", steps=STEPS)
    with pytest.raises(PatinaError, match="No prompt"):
        G.render_lora_grid(model_dir(), loras, "# only a comment\n", steps=STEPS)
    with pytest.raises(PatinaError, match="--s"):
        G.render_lora_grid(model_dir(), loras, "a red circle --s many", steps=STEPS)
    with pytest.raises(PatinaError, match="Base model not found"):
        G.render_lora_grid(tmp_path / "nope", loras, "x", steps=STEPS)


def test_run_outputs_lists_every_epoch_then_the_final_file(tmp_path):
    for name in ["demo.safetensors", "demo-000002.safetensors", "demo-000001.safetensors",
                 "demo-step00000050.safetensors", "demo2.safetensors", "demo-quality.png", "other-000001.safetensors"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in G.run_outputs(tmp_path, "demo")] == [
        "demo-000001.safetensors", "demo-000002.safetensors", "demo-step00000050.safetensors", "demo.safetensors"]
    assert G.run_outputs(tmp_path / "missing", "demo") == []


def test_cli_writes_the_grid(demo, tmp_path, capsys):
    from patina.core.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a blue star\n", encoding="utf-8")
    out = tmp_path / "grid.png"
    rc = main(["lora", "grid", "--model", str(model_dir()), "--lora", str(demo["loras"][0]), "--run",
               str(demo["root"]), "run", "--prompt", "a red circle", "--prompts-file", str(prompts),
               "--weights", "0,1", "--seeds", "1,2", "--steps", str(STEPS), "--quiet", "-o", str(out)])
    assert rc == 0
    settings = G.read_grid_settings(out)
    assert settings["rows"] == ["run-000001", "run-000001", "run-000002"]
    assert [p["prompt"] for p in settings["prompts"]] == ["a red circle", "a blue star"]
    assert len(settings["columns"]) == 2 * 2 * 2
    assert "3 row(s) × 8 column(s)" in capsys.readouterr().out
    bad = main(["lora", "grid", "--model", str(model_dir()), "--lora", str(tmp_path / "nope.safetensors"),
                "--prompt", "x", "-o", str(tmp_path / "bad.png")])
    assert bad == 2 and not (tmp_path / "bad.png").exists()
    assert "LoRA file not found" in capsys.readouterr().err


def test_sdxl_grid_weight_0_is_the_base_and_an_sd1_lora_is_refused(demo, tmp_path):
    from patina.core.models.tiny import save_tiny_diffusers

    folder = save_tiny_diffusers(tmp_path / "xl", "sdxl")
    base = load_base_model(folder)
    lora = random_lora(base, tmp_path / "xl.safetensors", seed=3, scale=0.3)
    result = G.render_lora_grid(folder, [lora], "a red circle", seeds=[1], weights=[0, 1], steps=2, base=base)
    size = result.settings["size"][0]
    assert result.shape == (1, 2) and result.settings["family"] == "sdxl"
    ref = px(base_image(base, "a red circle", 1, size, steps=2))
    assert np.array_equal(px(result.cells[0][0].image), ref)
    assert np.abs(px(result.cells[0][1].image) - ref).mean() > 1
    with pytest.raises(PatinaError, match="run-000001.safetensors: .*SDXL"):
        G.render_lora_grid(folder, demo["loras"][:1], "x", weights=[1], steps=2, base=base)
