"""The Dataset tab's "Caption images…" dialog with the tiny tagger: model files found or downloaded on request,
preview writes nothing, a run writes with progress and is undone in one step, Cancel stops between batches.
With PATINA_DOCS_SCREENSHOTS=1 it also renders docs/screenshots/caption-dialog.png."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import captionkit as kit  # noqa: E402
from captionkit import network_attempts  # noqa: E402,F401 - fixture
from patina.gui.dataset_tab import DatasetTab  # noqa: E402
from test_captioning import blip_dir, dataset, fake_hub, hashes, read, tagger_dir  # noqa: E402,F401 - fixtures
from test_gui_dataset import make_tab  # noqa: E402,F401 - fixture

pytestmark = pytest.mark.usefixtures("network_attempts")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tab(make_tab) -> DatasetTab:
    return make_tab()


def open_dialog(qtbot, tab, img, model_dir=None):
    tab.set_dataset(str(img), ".txt")
    qtbot.waitUntil(lambda: tab.model.rowCount() == 3, timeout=5000)
    assert tab.caption_button.isVisible()
    tab.caption_button.click()
    dlg = tab.caption_dialog
    assert dlg is not None and dlg.isVisible()
    dlg.model_combo.setCurrentIndex(dlg.model_combo.findData("wd14-swinv2-v3"))
    if model_dir is not None:
        dlg.model_dir.setText(str(model_dir))
    return dlg


def test_gui_imports_no_model_libraries_until_used():
    import subprocess

    code = ("import sys; import patina.gui.caption_dialog, patina.gui.dataset_tab; "
            "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_preview_then_run_then_one_undo(qtbot, tab, tmp_path, tagger_dir):
    img = dataset(tmp_path)
    before = hashes(img)
    dlg = open_dialog(qtbot, tab, img, tagger_dir)
    assert "Model files:" in dlg.files_label.text() and not dlg.download_button.isVisible()
    dlg.prefix.setText("sks")
    dlg.tagger_page.character.setValue(0.5)
    dlg.preview_button.click()
    qtbot.waitUntil(lambda: not dlg.busy and dlg.table.rowCount() == 2, timeout=30000)
    assert [dlg.table.item(r, 1).text() for r in range(2)] == ["sks, green theme, ^_^", "sks, blue theme, ^_^"]
    assert "nothing was written" in dlg.status.text()
    assert read(img / "2_other" / "green.txt") is None and read(img / "5_sks" / "blue.txt") is None
    if os.environ.get("PATINA_DOCS_SCREENSHOTS"):
        from patina.gui.app import render_window

        dlg.table.resizeRowsToContents()
        render_window(dlg, str(tmp_path / "caption-dialog.png"), (980, 640))
        from PIL import Image

        with Image.open(tmp_path / "caption-dialog.png") as im:
            im.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(
                ROOT / "docs" / "screenshots" / "caption-dialog.png", optimize=True)

    dlg.mode_combo.setCurrentIndex(dlg.mode_combo.findData("append"))
    dlg.run_button.click()
    assert tab.caption_panel.editor.isReadOnly()                  # no hand edits while the run writes
    qtbot.waitUntil(lambda: not dlg.busy and dlg.last_report is not None and not dlg._preview_run, timeout=30000)
    assert dlg.progress.isHidden() and "3 caption(s) written" in dlg.status.text()
    assert read(img / "5_sks" / "red.txt") == "old tag, sks, red theme, red knight (hero), ^_^"
    assert read(img / "2_other" / "green.txt") == "sks, green theme, ^_^"
    by_name = {it.name: it for it in tab.model.items()}
    assert by_name["green.png"].has_caption and by_name["green.png"].caption == "sks, green theme, ^_^"
    assert not tab.caption_panel.editor.isReadOnly()
    assert tab.undo_stack.count() == 1 and "Caption 3 images" in tab.undo_stack.undoText()
    tab.undo()
    qtbot.waitUntil(lambda: read(img / "5_sks" / "red.txt") == "old tag", timeout=10000)
    qtbot.waitUntil(lambda: not (img / "2_other" / "green.txt").exists(), timeout=10000)
    assert not (img / "5_sks" / "blue.txt").exists() and hashes(img) == before
    dlg.close_button.click()                                      # the choices are there next time
    again = tab.open_caption_dialog()
    assert again is not dlg and again.prefix.text() == "sks" and again.mode_combo.currentData() == "append"
    assert again.model_dir.text() == str(tagger_dir) and "Model files:" in again.files_label.text()


def test_model_folder_of_another_model_and_bad_options_are_shown(qtbot, tab, tmp_path, tagger_dir, blip_dir):
    img = dataset(tmp_path)
    dlg = open_dialog(qtbot, tab, img, tagger_dir)
    dlg.model_combo.setCurrentIndex(dlg.model_combo.findData("blip"))
    assert "has no config.json" in dlg.files_label.text() and not dlg.run_button.isEnabled()
    dlg.model_dir.setText(str(blip_dir))
    assert dlg.run_button.isEnabled()
    dlg.blip_page.min_length.setValue(50)          # more than the maximum length (75 → 10)
    dlg.blip_page.max_length.setValue(10)
    dlg.run_button.click()
    assert "--min-length (50) must be between 0 and --max-length (10)" in dlg.status.text()
    assert not dlg.busy and not tab._batch_running and not tab.caption_panel.editor.isReadOnly()
    assert read(img / "5_sks" / "blue.txt") is None


def test_missing_model_offers_download_with_progress(qtbot, tab, tmp_path, tagger_dir, monkeypatch):
    calls: list = []
    fake_hub(monkeypatch, tmp_path / "hub", tagger_dir, calls)
    dlg = open_dialog(qtbot, tab, dataset(tmp_path))
    assert "needs a download of about 470 MB" in dlg.files_label.text()
    assert dlg.download_button.isVisible() and not dlg.run_button.isEnabled() and calls == []
    seen = []
    dlg.download_bar.valueChanged.connect(seen.append)
    dlg.download_button.click()
    qtbot.waitUntil(lambda: "Model files:" in dlg.files_label.text(), timeout=20000)
    assert calls == ["model.onnx", "selected_tags.csv"] and dlg.run_button.isEnabled()
    assert dlg.download_bar.isHidden() and not dlg.download_button.isVisible()
    dlg.model_dir.setText(str(tmp_path / "empty"))
    assert "is not a folder" in dlg.files_label.text() and not dlg.run_button.isEnabled()


def test_cancel_stops_after_the_batch_and_keeps_it_undoable(qtbot, tab, tmp_path, tagger_dir, monkeypatch):
    from patina.core.caption.wd14 import WD14Tagger

    img = dataset(tmp_path)
    gate, entered = threading.Event(), threading.Event()
    real = WD14Tagger.caption

    def held(self, images):
        entered.set()
        assert gate.wait(20)
        return real(self, images)

    monkeypatch.setattr(WD14Tagger, "caption", held)
    dlg = open_dialog(qtbot, tab, img, tagger_dir)
    dlg.mode_combo.setCurrentIndex(dlg.mode_combo.findData("overwrite"))
    dlg.batch_size.setValue(1)
    dlg.run_button.click()
    qtbot.waitUntil(entered.is_set, timeout=20000)
    assert dlg.cancel_button.isEnabled()
    dlg.cancel_button.click()
    gate.set()
    qtbot.waitUntil(lambda: not dlg.busy, timeout=20000)
    assert dlg.last_report.cancelled and len(dlg.last_report.changes) == 1
    assert "cancelled" in dlg.status.text() and tab.undo_stack.count() == 1
    assert read(img / "5_sks" / "red.txt") == "old tag"          # the later batches never ran
