"""The Monitor tab's quality report: the table from Quality events, the best epoch, the legend, the grid, reset."""

from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView

from patina.core.train.events import Quality
from patina.core.train.quality import best_epoch, table
from patina.gui.monitor_tab import MonitorTab
from patina.gui.quality_view import QualityView, column_help

PROMPTS = [{"id": "P1", "kind": "trigger", "prompt": "a red zorbo shape"},
           {"id": "P2", "kind": "class", "prompt": "a red circle"}]
WEIGHTS = [0.0, 0.5, 1.0]


def make_report(n_epochs, judged=True):
    """A report in the engine's shape, its best epoch chosen by the real rule."""
    epochs = []
    for e in range(1, n_epochs + 1):
        at = {"trigger_change": 0.05 * e, "prior_drift": 0.01 * e, "selectivity": 5.0,
              "fidelity": [0.25, 0.75, 0.5][e - 1] if e <= 3 else 0.5,
              "preservation": [1.0, 0.95, 0.8][e - 1] if e <= 3 else 0.8}
        epochs.append({"epoch": e, "step": 10 * e, "validation_loss": 0.2 - 0.01 * e,
                       "weights": {"0.5": dict(at), "1.0": dict(at)}})
    best, reason = best_epoch(epochs, judged)
    return {"output_name": "zorbo", "judge": judged, "weights": WEIGHTS, "prompts": PROMPTS,
            "base": {"fidelity": 0.0, "class_accuracy": 0.9}, "epochs": epochs,
            "best_epoch": best, "best_reason": reason}


def make_grid(path, rows, cols=len(PROMPTS) * len(WEIGHTS), cell=96):
    Image.new("RGB", (40 + cols * (cell + 2), 30 + rows * (cell + 2)), (200, 30, 30)).save(path)
    return str(path)


def quality_event(tmp_path, n):
    return Quality(epoch=n, step=10 * n, report=make_report(n), grid_path=make_grid(tmp_path / f"g{n}.png", n))


def test_quality_events_fill_the_table_highlight_the_best_row_and_show_the_grid(qtbot, tmp_path):
    m = MonitorTab(config_source=lambda: {})
    qtbot.addWidget(m)
    m.resize(1200, 760)
    m.show()
    q = m.quality
    assert not q.has_report() and q._stack.currentWidget() is q.placeholder

    m.handle_event(quality_event(tmp_path, 1))
    m.handle_event(quality_event(tmp_path, 3))

    report = make_report(3)
    header, rows = table(report)
    assert report["best_epoch"] == 2  # highest fidelity with preservation >= 90 %
    assert q._stack.currentWidget() is q.content
    assert q.table.rowCount() == 3 and q.table.columnCount() == len(header)
    assert [q.table.horizontalHeaderItem(c).text() for c in range(len(header))] == header
    assert [[q.table.item(r, c).text() for c in range(len(header))] for r in range(3)] == rows
    assert q.best_row == 1 and q.table.item(1, 0).text() == "2 ★"
    best, other = q.table.item(1, 2), q.table.item(0, 2)
    assert best.font().bold() and not other.font().bold()
    assert best.background().color() == QColor("#fff1c1") and other.background().style() == Qt.BrushStyle.NoBrush
    assert "epoch 2" in q.best_label.text() and report["best_reason"] in q.best_label.text()
    assert "Quality (best: epoch 2)" in [m.bottom.tabText(i) for i in range(m.bottom.count())]
    # The columns explain themselves; the read-only table cannot be edited.
    for c, name in enumerate(header):
        assert q.table.horizontalHeaderItem(c).toolTip() == column_help(name) != ""
    assert "trigger-prompt images" in column_help("Trigger change @1.0")
    assert "leaks" in column_help("Prior drift @1.0")
    assert q.table.editTriggers() == QAbstractItemView.EditTrigger.NoEditTriggers
    legend = q.legend_label.text()
    assert "P1T" in legend and "a red zorbo shape" in legend and "P2C" in legend and "class" in legend
    # The grid at 1:1, reloaded from the newest event (3 epoch rows).
    pix = q.grid_label.pixmap()
    assert (pix.width(), pix.height()) == (40 + 6 * 98, 30 + 3 * 98)
    # Shown: the table as wide as its columns (at most 60 %), the wide grid gets the rest.
    m.bottom.setCurrentWidget(q)
    def fitted():
        left, right = q.content.sizes()
        return left > 0 and (left >= q.table.horizontalHeader().length() or left >= int((left + right) * 0.6) - 1)

    qtbot.waitUntil(fitted, timeout=3000)
    m.activateWindow()
    q.table.setFocus()
    qtbot.wait(50)
    assert q.table.currentItem() is None   # no focus frame drawn over a row
    left, right = q.content.sizes()
    # every column visible (or the table at its 60 % cap), and the grid beside it
    assert left >= q.table.horizontalHeader().length() or left >= int((left + right) * 0.6) - 1
    assert right > 0
    assert right > 300


def test_a_grid_rewritten_at_the_same_path_is_reloaded(qtbot, tmp_path):
    q = QualityView()
    qtbot.addWidget(q)
    path = tmp_path / "zorbo-quality.png"
    q.set_report(make_report(1), make_grid(path, 1))
    q.set_report(make_report(2), make_grid(path, 2))
    assert q.grid_label.pixmap().height() == 30 + 2 * 98


def test_a_missing_grid_is_a_note_and_the_table_still_shows(qtbot, tmp_path):
    q = QualityView()
    qtbot.addWidget(q)
    q.set_report(make_report(2, judged=False), str(tmp_path / "gone.png"))
    assert q.table.rowCount() == 2 and q.table.columnCount() == 4   # no judge: no fidelity columns
    assert "could not be read" in q.grid_label.text()


def test_a_new_run_resets_the_quality_report(qtbot, tmp_path):
    m = MonitorTab(config_source=lambda: {})
    qtbot.addWidget(m)
    m.handle_event(quality_event(tmp_path, 2))
    assert m.quality.has_report()
    m.reset_view()   # what starting a run does first
    q = m.quality
    assert not q.has_report() and q.table.rowCount() == 0 and q.grid_label.pixmap().isNull()
    assert q._stack.currentWidget() is q.placeholder
    assert m.bottom.tabText(m.bottom.indexOf(q)) == "Quality"
