"""The Tools tab: each page runs its LoRA tool on tiny files through real widgets, shows the report, cancels
without leaving output, refuses an output that is an input, and shows a user mistake as one line."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QThreadPool, Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from patina.core.models import tiny  # noqa: E402
from patina.gui.tools_tab import ToolsTab  # noqa: E402
from test_lora_tools import _locon  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"sd1": {"file": tiny.save_tiny_single_file(root / "sd1.safetensors", "sd1", seed=0),
                    "cfg": tiny.save_tiny_config_dir(root / "sd1-cfg", "sd1"),
                    "folder": tiny.save_tiny_diffusers_any(root / "base", "sd1", seed=0),
                    "tuned": tiny.save_tiny_diffusers_any(root / "tuned", "sd1", seed=1)}}


@pytest.fixture
def tab(qtbot):
    t = ToolsTab()
    qtbot.addWidget(t)
    t.resize(1000, 700)
    t.show()
    return t


def _run(qtbot, page, timeout=30000):
    qtbot.mouseClick(page.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.state != "running", timeout=timeout)
    return page.log.toPlainText()


def _no_leftovers(folder: Path, stem: str) -> bool:
    return not [p for p in folder.iterdir() if stem in p.name]


def test_resize_page_proposes_an_output_runs_and_shows_the_report(qtbot, tab, models, tmp_path):
    lora = _locon(models, "sd1", tmp_path / "style.safetensors", rank=4)
    page = tab.show_page("resize")
    assert tab.stack.currentWidget() is page
    page.src.setText(str(lora))
    page.rank.setValue(2)
    assert page.out.text() == str(tmp_path / "style-r2.safetensors")   # follows the rank while not edited
    (tmp_path / "style-r2.safetensors").write_bytes(b"not mine")         # an existing file is never proposed
    page.rank.setValue(3)
    page.rank.setValue(2)
    assert page.out.text() == str(tmp_path / "style-r2-2.safetensors")
    page.precision.setCurrentText("float")
    text = _run(qtbot, page)
    assert page.state == "done" and page.message.text() == "Done.", text
    assert text.startswith("resize: wrote") and "retained" in text and "rank 4 → 2" in text
    assert page.progress.value() == page.progress.maximum() > 1
    assert page.run_button.isEnabled() and not page.cancel_button.isEnabled()
    out = load_file(str(tmp_path / "style-r2-2.safetensors"))
    assert {v.shape[0] for k, v in out.items() if k.endswith("lora_down.weight")} == {2}


def test_resize_page_dynamic_rank(qtbot, tab, models, tmp_path):
    lora = _locon(models, "sd1", tmp_path / "d.safetensors", rank=6)
    page = tab.show_page("resize")
    page.src.setText(str(lora))
    page.rank.setValue(6)
    assert not page.dynamic_param.isEnabled()
    page.dynamic.setCurrentText("sv_ratio")
    assert page.dynamic_param.isEnabled() and page.dynamic_param.value() == 8.0   # a valid ratio
    page.dynamic.setCurrentText("sv_fro")
    assert page.dynamic_param.value() == 0.9
    page.dynamic_param.setValue(0.5)
    text = _run(qtbot, page)
    assert page.state == "done", text
    ranks = {v.shape[0] for k, v in load_file(page.out.text()).items() if k.endswith("lora_down.weight")}
    assert max(ranks) < 6 and "rank 6 → " in text


def test_merge_pages_take_weights_per_lora(qtbot, tab, models, tmp_path):
    a = _locon(models, "sd1", tmp_path / "a.safetensors", rank=2, seed=1)
    b = _locon(models, "sd1", tmp_path / "b.safetensors", rank=2, seed=2)
    page = tab.show_page("merge")
    page.loras.add_lora(a, 0.5)
    page.loras.add_lora(b, 1.0)
    assert page.out.text() == str(tmp_path / "a-merged.safetensors")
    page.loras.table.item(1, 1).setText("lots")
    _run(qtbot, page)
    assert page.state == "failed" and page.log.toPlainText() == "The weight of b.safetensors (lots) is not a number."
    page.loras.table.item(1, 1).setText("0,25")
    page.precision.setCurrentText("float")
    text = _run(qtbot, page)
    assert page.state == "done" and text.startswith("merge (concat): wrote"), text
    merged = load_file(str(tmp_path / "a-merged.safetensors"))
    assert {v.shape[0] for k, v in merged.items() if k.endswith("lora_down.weight")} == {4}   # 2 + 2, exact

    into = tab.show_page("merge_into")
    into.base.setText(str(models["sd1"]["folder"]))
    into.loras.add_lora(a, 0.8)
    assert into.out.text() == str(Path(models["sd1"]["folder"]).parent / "base-a")   # a folder for a folder
    into.out.setText(str(tmp_path / "baked"))
    into.dtype.setCurrentText("fp32")
    text = _run(qtbot, into, timeout=60000)
    assert into.state == "done" and text.startswith("merge-into: wrote"), text
    assert (tmp_path / "baked" / "unet").is_dir()


def test_extract_and_verify_pages(qtbot, tab, models, tmp_path):
    page = tab.show_page("extract")
    page.base.setText(str(models["sd1"]["folder"]))
    page.tuned.setText(str(models["sd1"]["tuned"]))
    page.rank.setValue(4)
    assert page.out.text() == str(Path(models["sd1"]["tuned"]).parent / "tuned-lora-r4.safetensors")
    page.out.setText(str(tmp_path / "extracted.safetensors"))
    page.conv_rank.setValue(2)
    page.precision.setCurrentText("float")
    text = _run(qtbot, page, timeout=60000)
    assert page.state == "done" and text.startswith("extract: wrote"), text
    assert (tmp_path / "extracted.safetensors").exists()

    verify = tab.show_page("verify")
    verify.lora.setText(str(tmp_path / "extracted.safetensors"))
    text = _run(qtbot, verify)
    assert verify.state == "done" and "Network type: LoCon" in text and "Loaders:" in text, text
    assert "Against" not in text
    verify.model.setText(str(models["sd1"]["folder"]))
    text = _run(qtbot, verify, timeout=60000)
    assert f"Against {models['sd1']['folder']} (sd1): every module fits" in text, text
    assert verify.message.text() == "Done: loads in every loader."


def _hold_resize(monkeypatch) -> threading.Event:
    """Make resize wait after each module's progress report until the returned event is set."""
    import patina.core.lora.resize as resize_mod

    gate = threading.Event()
    real = resize_mod.resize

    def held(*args, progress, **kw):
        def report_then_wait(done, total, message):
            progress(done, total, message)
            gate.wait(10)
        return real(*args, progress=report_then_wait, **kw)

    monkeypatch.setattr(resize_mod, "resize", held)
    return gate


def test_cancel_during_a_run_leaves_no_output(qtbot, tab, models, tmp_path, monkeypatch):
    """The tool is held after its first module until Cancel was clicked, so the click lands mid-run."""
    lora = _locon(models, "sd1", tmp_path / "l.safetensors", rank=4)
    gate = _hold_resize(monkeypatch)
    page = tab.show_page("resize")
    page.src.setText(str(lora))
    page.rank.setValue(2)
    qtbot.mouseClick(page.run_button, Qt.MouseButton.LeftButton)
    assert page.state == "running" and not page.run_button.isEnabled() and page.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: page.progress.value() == 1, timeout=10000)
    assert page.message.text()   # the tool's per-module message
    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    gate.set()
    qtbot.waitUntil(lambda: page.state != "running", timeout=10000)
    assert page.state == "cancelled" and page.log.toPlainText() == "Cancelled; no output was written."
    assert _no_leftovers(tmp_path, "l-r2") and page.run_button.isEnabled()

    # closing the window: the running tool stops, and nothing is reported to the closed page
    gate.clear()
    qtbot.mouseClick(page.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.progress.value() == 1, timeout=10000)
    assert tab.is_running()
    tab.abandon()
    gate.set()
    assert QThreadPool.globalInstance().waitForDone(10000)
    assert _no_leftovers(tmp_path, "l-r2") and not tab.is_running()


def test_closing_the_window_cancels_a_running_tool(qtbot, models, tmp_path, monkeypatch):
    from patina.gui.main_window import TABS, MainWindow

    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Discard))
    lora = _locon(models, "sd1", tmp_path / "l.safetensors", rank=4)
    gate = _hold_resize(monkeypatch)
    w = MainWindow(restore_session=False, detect_family=False, probe_device=False)
    qtbot.addWidget(w)
    w.show()
    assert TABS[-1] == "tools" and w.tabs.tabText(w.tabs.indexOf(w.tools)) == "Tools"
    w.select_tab("tools")
    assert w.current_tab() == "tools"
    page = w.tools.show_page("resize")
    page.src.setText(str(lora))
    page.rank.setValue(2)
    page.run()
    qtbot.waitUntil(lambda: page.progress.value() == 1, timeout=10000)
    assert w.close()
    gate.set()
    assert QThreadPool.globalInstance().waitForDone(10000)
    assert _no_leftovers(tmp_path, "l-r2")


def test_output_equal_to_an_input_is_refused_before_running(qtbot, tab, models, tmp_path):
    lora = _locon(models, "sd1", tmp_path / "l.safetensors", rank=4)
    before = lora.read_bytes()
    page = tab.show_page("resize")
    page.src.setText(str(lora))
    page.out.setText(str(tmp_path / "." / "l.safetensors"))
    page.run()
    assert page.task is None and page.state == "failed" and page.run_button.isEnabled()
    assert "same as an input" in page.log.toPlainText() and len(page.log.toPlainText().splitlines()) == 1

    into = tab.show_page("merge_into")
    into.base.setText(str(models["sd1"]["file"]))
    into.loras.add_lora(lora, 1.0)
    into.out.setText(str(lora))
    into.run()
    assert into.task is None and "same as an input" in into.log.toPlainText()
    assert lora.read_bytes() == before


def test_user_mistakes_show_one_line(qtbot, tab, models, tmp_path):
    page = tab.show_page("resize")
    missing = tmp_path / "missing.safetensors"
    page.src.setText(str(missing))
    assert page.out.text() == str(tmp_path / "missing-r16.safetensors")
    page.run()
    assert page.log.toPlainText() == f"The LoRA file {missing} does not exist." and page.message.text() == "Failed."
    # a mistake only the tool itself can see arrives from the worker thread as its one-line message
    page.src.setText(str(_locon(models, "sd1", tmp_path / "small.safetensors", rank=4)))
    page.out.setText(str(tmp_path / "big.safetensors"))
    page.rank.setValue(9)
    text = _run(qtbot, page)
    assert page.state == "failed" and "larger than the rank" in text and len(text.splitlines()) == 1, text
    assert "Traceback" not in text and not (tmp_path / "big.safetensors").exists()

    verify = tab.show_page("verify")
    verify.run()
    assert verify.log.toPlainText() == "Choose the LoRA file."
    merge = tab.show_page("merge")
    merge.run()
    assert merge.log.toPlainText() == "Add at least one LoRA file (Add…)."
