"""How long the window stops answering: a heartbeat QTimer on the GUI thread while the user detects a model
family, opens the Monitor tab for the first time and starts a first run on a tiny model (real engine).

Run in a fresh process (first imports are what freeze a window), e.g.

    QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 python tests/responsiveness.py MODEL_DIR WORK_DIR

Prints one JSON object: the worst gap between heartbeat ticks per phase (ms), which thread first imported
torch and pyqtgraph, and the run's status. tests/test_gui_responsive.py runs it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIRST_IMPORT: dict[str, list] = {}   # module -> [thread ("main"/"worker"), phase]
PHASE = ["startup"]


class _ImportWatch:
    """Records which thread imports a watched top-level module first (finds nothing itself)."""

    WATCH = ("torch", "pyqtgraph")

    def find_spec(self, name, path=None, target=None):  # noqa: D401
        if name in self.WATCH and name not in FIRST_IMPORT:
            thread = "main" if threading.current_thread() is threading.main_thread() else "worker"
            FIRST_IMPORT[name] = [thread, PHASE[0]]
        return None


sys.meta_path.insert(0, _ImportWatch())


def main(model: str, work: str) -> dict:
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication, QDialog

    app = QApplication.instance() or QApplication([])
    from patina.gui.main_window import MainWindow
    from patina.gui.monitor_tab import PlanDialog
    from trainkit import make_dataset, tiny_cfg

    PlanDialog.exec = lambda self: QDialog.DialogCode.Accepted  # the user clicks Start
    work_dir = Path(work)
    data = make_dataset(work_dir)

    worst: dict[str, int] = {}
    phase = PHASE
    clock = QElapsedTimer()
    clock.start()
    last = [0]

    def tick():
        now = clock.elapsed()
        worst[phase[0]] = max(worst.get(phase[0], 0), now - last[0])
        last[0] = now

    beat = QTimer()
    beat.setInterval(5)
    beat.timeout.connect(tick)
    beat.start()

    def enter(name: str) -> None:
        tick()
        phase[0] = name

    def spin(until, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not until():
            if time.monotonic() > end:
                return False
            app.processEvents()
            time.sleep(0.001)
        return True

    w = MainWindow(restore_session=False)
    w.resize(1280, 800)
    w.show()
    spin(lambda: False, 0.5)

    enter("family detection")
    # quality_report off: measuring it takes minutes on a CPU and is not what this checks
    w.form.set_values(tiny_cfg(Path(model), data, work_dir / "out", epoch=2, quality_report=False))
    detected = spin(lambda: w.form.detected_family == "sd1", 120)
    spin(lambda: False, 0.3)

    enter("first Monitor tab opening")
    w.tabs.setCurrentWidget(w.monitor)
    charts = spin(lambda: w.monitor.charts._ready, 120)
    spin(lambda: False, 0.3)

    enter("first run (model load and training)")
    w.start_training()
    finished = spin(lambda: w.monitor.state == "idle" and w.monitor.last_finished is not None, 500)
    enter("end")
    status = w.monitor.last_finished.status if w.monitor.last_finished else "timeout"
    w.close()
    worst.pop("end", None)
    worst.pop("startup", None)
    return {"worst_gap_ms": worst, "first_import": FIRST_IMPORT, "detected": detected, "charts": charts,
            "run": status if finished else "timeout"}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
