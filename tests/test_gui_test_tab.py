"""The Test tab: a LoRA grid of the run's outputs on the demo model, rendered in the background, shown in the
gallery, saved with its settings; cancel leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patina.core.demo.setup import model_dir
from patina.core.lora.grid import read_grid_settings
from patina.gui.test_tab import LoraTestTab


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run's output folder with two epochs' LoRA files (random weights) for the demo model."""
    from patina.core.models.loading import load_base_model
    from test_lora_grid import random_lora

    out = tmp_path_factory.mktemp("run")
    base = load_base_model(model_dir())
    random_lora(base, out / "toy-000001.safetensors", seed=1)
    random_lora(base, out / "toy-000002.safetensors", seed=2)
    (out / "other.safetensors").write_bytes(b"not this run")
    return out


@pytest.fixture
def tab(qtbot, run_dir):
    cfg = {"pretrained_model_name_or_path": str(model_dir()), "output_dir": str(run_dir), "output_name": "toy",
           "sample_prompts": "a red circle --s 3\n", "sample_sampler": "ddim"}
    t = LoraTestTab(config_source=lambda: cfg)
    qtbot.addWidget(t)
    t.resize(1200, 700)
    t.show()
    qtbot.waitExposed(t)
    return t


def test_the_tab_starts_from_the_config_and_renders_the_runs_epochs(qtbot, tab, tmp_path):
    assert tab.model_edit.text() == str(model_dir())
    assert [Path(p).name for p in tab.lora_paths()] == ["toy-000001.safetensors", "toy-000002.safetensors"]
    assert tab.prompts_edit.toPlainText() == "a red circle --s 3" and tab.sampler_combo.currentText() == "ddim"
    assert tab.add_run_outputs() == 2 and len(tab.lora_paths()) == 2        # no duplicates
    tab.weights_edit.setText("0, 1")
    tab.seeds_edit.setText("1, 2")
    steps_seen = []
    tab.progress.valueChanged.connect(steps_seen.append)
    with qtbot.waitSignal(tab.rendered, timeout=60000) as sig:
        assert tab.render() is not None
        assert not tab.render_button.isEnabled() and tab.cancel_button.isEnabled()
    result = sig.args[0]
    assert result.shape == (2, 4)
    assert tab.render_button.isEnabled() and not tab.cancel_button.isEnabled() and tab.save_button.isEnabled()
    assert len(set(steps_seen)) > 2 and tab.progress.value() == tab.progress.maximum()
    # the gallery: one row per LoRA file (named by file), one thumbnail per column
    g = tab.gallery
    assert g.count() == 8 and [g.checks[k].text() for k in g.rows] == ["toy-000001", "toy-000002"]
    headers = [g._headers[i].text() for i in range(4)]
    assert "weight 0" in headers[0] and "weight 1" in headers[1] and "seed 2" in headers[2]
    # weight 0 is the base model: the same image in both rows; weight 1 differs between the epochs
    cell = lambda r, c: np.asarray(Image.open(g.samples[(r, 0)][c].path).convert("RGB"), dtype=np.int16)  # noqa: E731
    assert np.array_equal(cell(0, 0), cell(1, 0)) and np.abs(cell(0, 1) - cell(1, 1)).mean() > 2
    dlg = g.enlarge(g.samples[(1, 0)][1])
    qtbot.addWidget(dlg)
    assert "toy-000002" in dlg.windowTitle() and "weight 1" in dlg.windowTitle()
    g.checks[g.rows[0]].setChecked(True)
    g.checks[g.rows[1]].setChecked(True)
    cmp = g.compare()
    qtbot.addWidget(cmp)
    assert "toy-000001" in cmp.findChildren(type(tab.status))[0].text()
    saved = tab.save_to(tmp_path / "grid.png")
    settings = read_grid_settings(saved)
    assert settings["weights"] == [0.0, 1.0] and settings["seeds"] == [1, 2] and settings["sampler"] == "ddim"
    assert [Path(p).name for p in settings["loras"]] == ["toy-000001.safetensors", "toy-000002.safetensors"]
    shots = os.environ.get("PATINA_SHOTS")
    if shots:
        for d in (dlg, cmp):
            d.close()
        g.checks[g.rows[1]].setChecked(False)
        qtbot.wait(200)
        tab.window().grab().save(str(Path(shots) / "testtab-grid.png"))


def test_cancel_stops_the_render_and_shows_nothing(qtbot, tab):
    tab.weights_edit.setText("0, 0.5, 1")
    tab.steps_spin.setValue(1000)
    tab.prompts_edit.setPlainText("a red circle")
    cells_dirs = set(Path(tempfile.gettempdir()).glob("patina-grid-*"))
    task = tab.render()
    qtbot.waitUntil(lambda: tab.progress.maximum() > 1 and tab.progress.value() >= 1, timeout=60000)
    tab.cancel()
    assert task.cancelled and tab.render_button.isEnabled() and not tab.cancel_button.isEnabled()
    assert "Cancelled" in tab.status.text()
    assert tab.lane.wait(30000)          # the worker stops within a denoising step
    qtbot.wait(50)
    assert tab.result is None and tab.gallery.count() == 0 and not tab.save_button.isEnabled()
    assert not set(Path(tempfile.gettempdir()).glob("patina-grid-*")) - cells_dirs    # no cell written


def test_a_mistake_is_one_line_in_the_tab(qtbot, tab):
    tab.weights_edit.setText("0, heavy")
    tab.render()
    qtbot.waitUntil(lambda: tab.task is None, timeout=30000)
    assert '"heavy" is not a number' in tab.status.text() and tab.render_button.isEnabled()


def test_the_main_window_has_the_test_tab_after_the_monitor(qtbot):
    from patina.gui.main_window import MainWindow

    w = MainWindow(restore_session=False, detect_family=False, probe_device=False)
    qtbot.addWidget(w)
    titles = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert titles[titles.index("Monitor") + 1:][:2] == ["Queue", "Test"]   # the Queue tab holds runs to come
    w.select_tab("test")
    assert w.tabs.currentWidget() is w.test_tab and w.current_tab() == "test"
    assert w.test_tab.config_source()["output_name"] == w.form.fields["output_name"].getter()
