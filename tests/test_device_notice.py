"""The window's one-line notice when training would run on the CPU (gui/device_notice.py), found without
importing torch and shown in the status bar."""

import importlib.metadata
import shutil

import pytest

from patina.gui import device_notice


def fake_versions(monkeypatch, torch_version):
    def version(name):
        if name == "torch" and torch_version is not None:
            return torch_version
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


@pytest.mark.parametrize("torch_version, smi, words", [
    ("2.13.0+cpu", "/usr/bin/nvidia-smi", ["CPU build", "2.13.0+cpu"]),
    ("2.13.0+cu130", None, ["no NVIDIA driver"]),
    ("2.13.0", None, ["no NVIDIA driver"]),
    (None, "/usr/bin/nvidia-smi", ["not installed"]),
])
def test_reasons_for_training_on_the_cpu(monkeypatch, torch_version, smi, words):
    fake_versions(monkeypatch, torch_version)
    monkeypatch.setattr(shutil, "which", lambda name: smi if name == "nvidia-smi" else None)
    monkeypatch.setattr(device_notice.sys, "platform", "linux")
    reason = device_notice.cpu_training_reason()
    for w in words:
        assert w in reason


def test_a_cuda_build_with_a_driver_gets_no_notice(monkeypatch):
    fake_versions(monkeypatch, "2.13.0+cu130")
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(device_notice.sys, "platform", "linux")
    assert device_notice.cpu_training_reason() is None


def test_the_window_shows_the_notice(qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("PATINA_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr(device_notice, "cpu_training_reason", lambda: "Training would run on the CPU (test)")
    from patina.gui.main_window import MainWindow

    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.device_label.isVisible(), timeout=5000)
    assert "Training would run on the CPU (test)" in w.device_label.text()


def test_the_notice_never_shares_the_status_bar_with_a_message(qtbot, monkeypatch, tmp_path):
    """A message shown while the check runs ("Opened …") keeps the notice hidden until it clears: the two
    texts never lie on top of each other."""
    monkeypatch.setenv("PATINA_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setattr(device_notice, "cpu_training_reason", lambda: "Training would run on the CPU (test)")
    from patina.gui.main_window import MainWindow

    w = MainWindow(restore_session=False, detect_family=False)
    qtbot.addWidget(w)
    w.show()
    w.statusBar().showMessage("Opened something.json")
    qtbot.waitUntil(lambda: "(test)" in w.device_label.text(), timeout=5000)
    assert not w.device_label.isVisible()
    w.statusBar().clearMessage()
    assert w.device_label.isVisible()
    w.statusBar().showMessage("Saved.")
    assert not w.device_label.isVisible()
