"""The Monitor tab and the training worker, with fake engines (no torch): charts, gallery, stop, failure,
overwrite confirmation, closing the window during a run; and one real run of the engine on a tiny model."""

import sys
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QDialog, QMessageBox

from patina.core.errors import PatinaError
from patina.core.train.events import EpochEnd, Finished, Log, Metrics, Plan, Progress, Sample, Saved, Status
from patina.core.config.schema import defaults
import patina.gui.monitor_tab as mt
from patina.gui.monitor_tab import MonitorTab, PlanDialog

SB = QMessageBox.StandardButton


def make_plan(output_path, total=6, epochs=2):
    return Plan(images=3, reg_images=0, samples_per_epoch=3 * 1, steps_per_epoch=total // epochs, epochs=epochs,
                total_steps=total, batch_size=1, grad_accum=1, buckets={"512x512": 2, "512x768": 1},
                skipped=[("notes.gif", "not a supported image")], output_path=str(output_path), family="sd1",
                text="3 images × 1 repeat\n6 steps")


def sample_png(path, hue):
    img = QImage(64, 64, QImage.Format.Format_RGB32)
    img.fill(QColor.fromHsv(hue, 150, 200))
    assert img.save(str(path))
    return str(path)


class FakeEngine:
    """Emits a small, complete run: Status, Plan, Progress/Metrics per step, EpochEnd, Sample, Saved."""

    def __init__(self, tmp_path, *, fail=None, wait_for_stop=False):
        self.tmp = tmp_path
        self.fail = fail
        self.wait_for_stop = wait_for_stop
        self.calls = 0
        self.commands_seen = []
        self.thread = None

    def __call__(self, cfg, emit, commands, *, resume=None):
        self.calls += 1
        self.thread = threading.current_thread()
        out = self.tmp / "out" / f"{cfg['output_name']}.safetensors"
        emit(Status("loading", "Loading the model"))
        emit(make_plan(out))
        if self.fail == "raise":
            raise RuntimeError("CUDA error: out of memory while allocating 2.00 GiB")
        if self.fail == "patina":
            raise PatinaError("The model file is damaged: model.safetensors")
        if self.fail == "failed":
            emit(Log("loss is NaN at step 1", "warning"))
            return Finished("failed", "Loss became NaN at step 1. Lower the learning rate.", None, 1)
        step = 0
        for epoch in (1, 2):
            for _ in range(3):
                step += 1
                emit(Metrics(step, epoch, 0.2 - step * 0.01, 0.2 - step * 0.005, {"unet": 1e-4, "textencoder": 5e-5}))
                emit(Progress(step, 6, epoch, 2, 3.5, step * 0.5, (6 - step) * 0.5))
                stop, save, sample = commands.take()
                if save or sample:
                    self.commands_seen.append(("save" if save else "sample", step))
            emit(EpochEnd(epoch, step, 0.15))
            for i in range(2):
                emit(Sample(sample_png(self.tmp / f"e{epoch}_{i}.png", epoch * 90 + i * 30), f"prompt {i}", i, step,
                            epoch))
            emit(Saved(str(out.with_name(f"{out.stem}-{epoch:06d}.safetensors")), "lora", step, epoch))
        if self.wait_for_stop:
            deadline = time.monotonic() + 10
            while not commands.stop_requested and time.monotonic() < deadline:
                stop, save, sample = commands.take()
                if save or sample:
                    self.commands_seen.append(("save" if save else "sample", step))
                time.sleep(0.01)
            emit(Status("saving", "Saving what was trained"))
            emit(Saved(str(out), "lora", step, 2))
            return Finished("stopped", "Stopped by you; the LoRA was saved.", str(out), step)
        emit(Saved(str(out), "lora", step, 2))
        return Finished("finished", "Done.", str(out), step)


@pytest.fixture(autouse=True)
def no_blocking_dialogs(monkeypatch):
    """The plan dialog is accepted; questions answer what the test queued (No by default)."""
    state = {"plan_dialogs": [], "answers": [], "asked": []}

    def plan_exec(self):
        state["plan_dialogs"].append(self)
        return QDialog.DialogCode.Accepted

    def question(parent, title, text, *a, **k):
        state["asked"].append((title, text))
        return state["answers"].pop(0) if state["answers"] else SB.No

    monkeypatch.setattr(PlanDialog, "exec", plan_exec)
    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    monkeypatch.setattr(QMessageBox, "information", staticmethod(lambda *a, **k: SB.Ok))
    return state


def good_config(tmp_path, **over):
    cfg = defaults()
    cfg.update(pretrained_model_name_or_path=str(tmp_path), train_data_dir=str(tmp_path),
               output_dir=str(tmp_path / "out"), output_name="dog")
    cfg.update(over)
    return cfg


@pytest.fixture
def make_monitor(qtbot, tmp_path):
    def make(engine, cfg=None):
        cfg = cfg if cfg is not None else good_config(tmp_path)
        m = MonitorTab(engine_fn=engine, plan_fn=lambda c: make_plan(tmp_path / "out" / "dog.safetensors"),
                       config_source=lambda: cfg)
        qtbot.addWidget(m)
        m.resize(1200, 760)
        m.show()
        return m
    return make


def wait_idle(qtbot, m, timeout=10000):
    qtbot.waitUntil(lambda: m.state == "idle", timeout=timeout)


def test_a_run_fills_charts_progress_gallery_and_log(qtbot, make_monitor, tmp_path, no_blocking_dialogs):
    engine = FakeEngine(tmp_path)
    m = make_monitor(engine)
    with qtbot.waitSignal(m.finished, timeout=10000) as fin:
        assert m.start()
        assert m.start_button.text() in ("Checking…", "Stop training")
    assert fin.args[0].status == "finished"
    assert engine.thread is not threading.main_thread()  # the engine ran in the worker thread
    dlg = no_blocking_dialogs["plan_dialogs"][0]
    assert "Start training" in dlg.start_button.text()
    qtbot.waitUntil(lambda: len(m.charts.loss_data()[0]) == 6, timeout=3000)
    xs, ys = m.charts.loss_data()
    assert xs == [1, 2, 3, 4, 5, 6] and ys[0] == pytest.approx(0.19)
    assert [s for s, _ in m.charts.epoch_marks] == [3, 6]
    assert set(m.charts.lrs) == {"unet", "textencoder"}
    assert m.step_bar.value() == 6 and m.step_bar.maximum() == 6
    assert m.epoch_bar.value() == 2 and m.eta_label.text() == "0:00"
    assert m.gallery.count() == 4 and m.gallery.rows == [(1, 3), (2, 6)]
    thumb = m.gallery.thumbs[((1, 3), 1)]
    assert not thumb.icon().isNull()
    assert m.bottom.tabText(0) == "Samples (4)"
    log = m.log.toPlainText()
    assert "Saved LoRA" in log and "Epoch 1 done" in log
    assert m.banner.isVisible() and m.banner.kind == "success" and "dog.safetensors" in m.banner.text()
    assert m.start_button.text() == "Start training" and m.start_button.isEnabled()


def test_gallery_enlarges_and_compares_two_epochs(qtbot, make_monitor, tmp_path):
    m = make_monitor(FakeEngine(tmp_path))
    with qtbot.waitSignal(m.finished, timeout=10000):
        m.start()
    g = m.gallery
    assert not g.compare_button.isEnabled()
    dlg = g.enlarge(g.samples[(2, 6)][1])
    qtbot.addWidget(dlg)
    assert dlg.image.pixmap() is not None and not dlg.image.pixmap().isNull()
    g.checks[(1, 3)].setChecked(True)
    assert not g.compare_button.isEnabled()
    g.checks[(2, 6)].setChecked(True)
    assert g.compare_button.isEnabled()
    cmp = g.compare()
    qtbot.addWidget(cmp)
    assert cmp.windowTitle() == "Compare samples"


def test_stop_reads_stopping_until_finished(qtbot, make_monitor, tmp_path):
    engine = FakeEngine(tmp_path, wait_for_stop=True)
    m = make_monitor(engine)
    m.start()
    qtbot.waitUntil(lambda: m.start_button.text() == "Stop training", timeout=5000)
    qtbot.waitUntil(lambda: m.step_bar.value() == 6, timeout=5000)
    m.save_now()
    qtbot.waitUntil(lambda: ("save", 6) in engine.commands_seen, timeout=5000)
    m.sample_now()
    qtbot.waitUntil(lambda: ("sample", 6) in engine.commands_seen, timeout=5000)
    m.start_button.click()  # Stop
    assert m.start_button.text() == "Stopping…" and not m.start_button.isEnabled()
    assert not m.save_button.isEnabled()
    with qtbot.waitSignal(m.finished, timeout=10000) as fin:
        pass
    assert fin.args[0].status == "stopped"
    assert m.start_button.text() == "Start training" and m.start_button.isEnabled()
    assert "stopped" in m.banner.text().lower()


@pytest.mark.parametrize("mode, expected", [
    ("failed", "Lower the learning rate"),
    ("patina", "The model file is damaged"),
    ("raise", "GPU ran out of memory"),
])
def test_a_failing_run_shows_its_message_and_start_works_again(qtbot, make_monitor, tmp_path, mode, expected):
    engine = FakeEngine(tmp_path, fail=mode)
    m = make_monitor(engine)
    with qtbot.waitSignal(m.finished, timeout=10000) as fin:
        m.start()
    assert fin.args[0].status == "failed"
    assert m.banner.isVisible() and m.banner.kind == "error"
    assert expected in m.banner.text()
    if mode == "raise":
        assert "Traceback" in m.log.toPlainText()  # details in the log, not in a crash
    assert m.start_button.text() == "Start training" and m.start_button.isEnabled()
    engine.fail = None
    with qtbot.waitSignal(m.finished, timeout=10000) as fin2:
        m.start()
    assert fin2.args[0].status == "finished" and engine.calls == 2
    assert m.banner.kind == "success"


def test_invalid_settings_stop_start_before_planning(qtbot, make_monitor, tmp_path):
    planned = []
    cfg = good_config(tmp_path, pretrained_model_name_or_path="", max_resolution="big")
    m = make_monitor(FakeEngine(tmp_path), cfg)
    m.plan_fn = lambda c: planned.append(c)
    with qtbot.waitSignal(m.problems_found) as sig:
        assert not m.start()
    keys = [p.key for p in sig.args[0]]
    assert "pretrained_model_name_or_path" in keys and "max_resolution" in keys
    assert m.banner.kind == "error" and "Pretrained model" in m.banner.text()
    assert planned == [] and m.state == "idle"


def test_plan_errors_are_shown_not_raised(qtbot, make_monitor, tmp_path):
    m = make_monitor(FakeEngine(tmp_path))

    def bad_plan(cfg):
        raise PatinaError("No images found in /data/img. Name the concept folders like '10_sks dog'.")

    m.plan_fn = bad_plan
    m.start()
    qtbot.waitUntil(lambda: m.banner.isVisible(), timeout=5000)
    assert "No images found" in m.banner.text() and m.state == "idle"


def test_existing_output_needs_confirmation(qtbot, make_monitor, tmp_path, no_blocking_dialogs):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dog.safetensors").write_bytes(b"old")
    engine = FakeEngine(tmp_path)
    m = make_monitor(engine)
    m.start()  # the default answer is No
    qtbot.waitUntil(lambda: no_blocking_dialogs["asked"] != [] and m.state == "idle", timeout=5000)
    title, text = no_blocking_dialogs["asked"][0]
    assert "Overwrite" in title and engine.calls == 0
    # the prompt tells what the engine does: replaced only by a finished run, a stopped run saves dog-step<N>
    assert "only when the run finishes" in text and "dog-step<N>.safetensors" in text
    no_blocking_dialogs["answers"].append(SB.Yes)
    with qtbot.waitSignal(m.finished, timeout=10000):
        m.start()
    assert engine.calls == 1


def test_plan_dialog_shows_the_numbers(qtbot, tmp_path):
    dlg = PlanDialog(make_plan(tmp_path / "o.safetensors"))
    qtbot.addWidget(dlg)
    rows = dict(mt.plan_rows(dlg.plan))
    assert rows["Total steps"] == "6" and rows["Epochs"] == "2" and rows["Steps per epoch"] == "3"
    assert "512×512: 2" in rows["Resolution buckets"] and rows["Skipped files"] == "1"
    assert rows["Model family"] == "SD 1.x"


def test_closing_the_window_during_a_run_stops_and_waits(qtbot, tmp_path, monkeypatch, no_blocking_dialogs):
    from patina.gui.main_window import MainWindow
    engine = FakeEngine(tmp_path, wait_for_stop=True)
    w = MainWindow(restore_session=False, detect_family=False, engine_fn=engine,
                   plan_fn=lambda c: make_plan(tmp_path / "out" / "dog.safetensors"))
    qtbot.addWidget(w)
    w.form.set_values(good_config(tmp_path))
    w._mark_clean()
    w.show()
    w.training.start_button.click()
    assert w.current_tab() == "monitor"
    qtbot.waitUntil(lambda: w.monitor.state == "running" and w.monitor.step_bar.value() == 6, timeout=5000)
    assert not w.training.start_button.isEnabled()
    no_blocking_dialogs["answers"].append(SB.Yes)  # "Stop training and quit?"
    assert not w.close()  # not yet: the LoRA is still being written
    assert w.isVisible() and w.monitor.state == "stopping"
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10000)
    assert w.monitor.last_finished.status == "stopped"
    assert "Saved LoRA" in w.monitor.log.toPlainText()


def test_real_engine_run_from_the_window(qtbot, tmp_path, monkeypatch):
    """One real run through the window: patina.core.train.engine on a tiny SD1 model (CPU, offline), with the model
    family detected in the background by patina.core.models.loading."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from patina.core.models.tiny import save_tiny_diffusers
    from patina.gui.main_window import MainWindow
    from trainkit import make_dataset, tiny_cfg

    model = save_tiny_diffusers(tmp_path / "model", "sd1")
    data = make_dataset(tmp_path)
    w = MainWindow(restore_session=False)
    qtbot.addWidget(w)
    # The quality report (minutes on this CPU) has its own end-to-end test (test_gui_demo.py).
    w.form.set_values(tiny_cfg(model, data, tmp_path / "out", epoch=1, sample_every_n_epochs=1,
                               sample_prompts="sks toy", quality_report=False))
    w._mark_clean()
    qtbot.waitUntil(lambda: w.form.detected_family == "sd1", timeout=60000)
    with qtbot.waitSignal(w.monitor.finished, timeout=120000) as fin:
        w.start_training()
    assert fin.args[0].status == "finished", fin.args[0].message
    assert (tmp_path / "out" / "tiny.safetensors").is_file()
    assert len(w.monitor.charts.steps) == w.monitor.last_plan.total_steps > 0
    assert w.monitor.gallery.count() == 1


def test_real_engine_stop_from_the_window_gives_a_valid_lora(qtbot, tmp_path, monkeypatch):
    """Loss points and a sample arrive from the real engine; Stop writes a LoRA that verifies."""
    pytest.importorskip("diffusers")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from patina.core.lora.verify import verify_lora
    from patina.core.models.tiny import save_tiny_diffusers
    from patina.gui.main_window import MainWindow
    from trainkit import make_dataset, tiny_cfg

    model = save_tiny_diffusers(tmp_path / "model", "sd1")
    data = make_dataset(tmp_path)
    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)
    w.form.set_values(tiny_cfg(model, data, tmp_path / "out", epoch=50, sample_every_n_steps=2,
                               sample_prompts="sks toy --w 64 --h 64 --s 2"))
    w._mark_clean()
    w.start_training()
    qtbot.waitUntil(lambda: len(w.monitor.charts.steps) >= 3 and w.monitor.gallery.count() >= 1, timeout=120000)
    assert w.monitor.state == "running"
    with qtbot.waitSignal(w.monitor.finished, timeout=120000) as fin:
        w.monitor.start_button.click()  # reads "Stop training" while running
        assert w.monitor.state == "stopping" and "Stopping" in w.monitor.start_button.text()
    assert fin.args[0].status == "stopped", fin.args[0].message
    assert fin.args[0].step < w.monitor.last_plan.total_steps
    assert fin.args[0].output == str(tmp_path / "out" / f"tiny-step{fin.args[0].step:08d}.safetensors")
    assert verify_lora(fin.args[0].output).ok
    assert not (tmp_path / "out" / "tiny.safetensors").exists()
    assert w.monitor.state == "idle" and w.training.start_button.isEnabled()


def test_an_engine_that_cannot_be_imported_is_a_message(monkeypatch):
    from patina.gui.worker import default_plan, default_train
    monkeypatch.setitem(sys.modules, "patina.core.train.engine", None)  # its import raises ModuleNotFoundError
    with pytest.raises(PatinaError, match="the run cannot be planned. Run the installer again"):
        default_plan({})
    with pytest.raises(PatinaError, match="training cannot start. Run the installer again"):
        default_train({}, print, None)


# --- first contact: what the Monitor shows before, during and after a run --------------------------------

def _metrics(step, loss=0.2):
    return Metrics(step=step, epoch=1, loss=loss, avg_loss=loss, lrs={"unet": 1e-4, "textencoder": 5e-5})


def test_charts_before_the_first_step_are_a_note_not_empty_axes(qtbot, make_monitor, tmp_path):
    m = make_monitor(FakeEngine(tmp_path))
    qtbot.waitUntil(lambda: m.charts._ready, timeout=20000)  # pyqtgraph loads in the background
    assert not m.charts.showing_plots() and m.charts.placeholder.isVisible()
    assert "No run yet" in m.charts.placeholder.text()
    m.handle_event(_metrics(1))
    m.charts.redraw()
    assert m.charts.showing_plots() and not m.charts.placeholder.isVisible()
    m.charts.clear()
    assert not m.charts.showing_plots()


def test_legends_are_outside_the_plotted_area_and_the_dots_are_visible(qtbot, make_monitor, tmp_path):
    m = make_monitor(FakeEngine(tmp_path))
    m.charts.ensure_plots()
    for step in range(1, 30):
        m.handle_event(_metrics(step, 1.0 / step))
    m.charts.redraw()
    for plot in (m.charts.loss_plot, m.charts.lr_plot):
        assert plot.getPlotItem().legend is None  # no legend box inside the view, over the newest points
    assert "per step" in m.charts.legend_text("loss") and "moving average" in m.charts.legend_text("loss")
    assert "UNet" in m.charts.legend_text("lr") and "text encoder" in m.charts.legend_text("lr")
    opts = m.charts.loss_points.opts
    assert opts["symbolSize"] >= 5 and opts["symbolBrush"].color().alpha() >= 180


def test_epoch_bar_counts_finished_epochs_not_the_one_in_progress(qtbot, make_monitor, tmp_path):
    m = make_monitor(FakeEngine(tmp_path))
    m.handle_event(Progress(step=1, total_steps=30, epoch=1, total_epochs=3, images_per_sec=2.0, elapsed_s=1,
                            eta_s=60))
    assert m.epoch_bar.value() == 0 and m.epoch_bar.text() == "epoch 1 of 3"
    m.handle_event(EpochEnd(epoch=1, step=10, avg_loss=0.1))
    assert m.epoch_bar.value() == 1 and "1 of 3 epochs done" in m.epoch_bar.text()
    m.handle_event(Progress(step=11, total_steps=30, epoch=2, total_epochs=3, images_per_sec=2.0, elapsed_s=2,
                            eta_s=50))
    assert m.epoch_bar.value() == 1 and m.epoch_bar.text() == "epoch 2 of 3"


def test_after_stop_nothing_remains_and_the_banner_says_the_step_once(qtbot, make_monitor, tmp_path):
    m = make_monitor(FakeEngine(tmp_path))
    m.reset_view()
    m._set_state("running")
    m.handle_event(Progress(step=21, total_steps=960, epoch=1, total_epochs=10, images_per_sec=1.0, elapsed_s=30,
                            eta_s=10335))
    assert m.eta_label.text() == "2:52:15"
    m._set_state("stopping")
    m._on_done(Finished("stopped", "Stopped at step 21 of 960. The LoRA so far is saved as /o/dog.safetensors.",
                        "/o/dog.safetensors", 21))
    assert m.eta_label.text() == "—"
    assert m.banner.text().count("step 21") == 1 and "stopped" in m.banner.text().lower()


def test_caching_progress_updates_the_status_line_without_flooding_the_log(qtbot, make_monitor, tmp_path):
    m = make_monitor(FakeEngine(tmp_path))
    for k in (1, 5, 16):
        m.handle_event(Status("caching", f"Caching latents {k}/16…"))
        assert m.status_label.text() == f"Caching latents {k}/16…"
    log = m.log.toPlainText()
    assert "16/16" in log and "5/16" not in log


def test_plan_dialog_shows_train_and_reg_samples_and_the_arithmetic(qtbot, tmp_path):
    plan = Plan(images=16, reg_images=4, samples_per_epoch=160, steps_per_epoch=160, epochs=1, total_steps=160,
                batch_size=2, grad_accum=1, buckets={"512x512": 20}, skipped=[], output_path="/o/x.safetensors",
                family="sd1", text="", reg_samples=160,
                arithmetic="16 images × 10 repeats = 160 train + 160 reg = 320 samples / batch 2 = 160 steps per epoch",
                warnings=["2 image(s) are smaller than their bucket and will be enlarged"])
    dlg = PlanDialog(plan)
    qtbot.addWidget(dlg)
    rows = dict(mt.plan_rows(plan))
    assert rows["Samples per epoch"] == "320  (160 train + 160 reg)"
    assert rows["Per epoch"].startswith("16 images × 10 repeats = 160 train + 160 reg")
    assert "160 reg samples per epoch" in rows["Regularisation images"]
    texts = " ".join(lab.text() for lab in dlg.findChildren(mt.QLabel))
    assert "smaller than their bucket" in texts


def test_enlarging_a_tiny_sample_scales_it_up_sharply(qtbot, tmp_path):
    img = QImage(64, 64, QImage.Format.Format_RGB32)
    img.fill(QColor(10, 10, 10))
    for x in range(0, 64, 2):
        for y in range(64):
            img.setPixelColor(x, y, QColor(250, 250, 250))   # 1-px stripes: blurred by smooth scaling
    path = tmp_path / "s.png"
    img.save(str(path))
    from patina.gui.sample_gallery import THUMB, ImageDialog

    dlg = ImageDialog(Sample(str(path), "sks toy", 0, 4, 1))
    qtbot.addWidget(dlg)
    shown = dlg.image.pixmap().toImage()
    assert shown.width() >= 512 and shown.width() > THUMB  # never smaller than its thumbnail
    assert dlg.zoom == shown.width() // 64
    values = {shown.pixelColor(x, 10).red() for x in range(shown.width())}
    assert values <= {10, 250}  # nearest-neighbour: only the two original values, no blur
