"""The Windows installer's decisions (packaging/win_setup.py; install-windows.ps1 only runs it and reads
its UTF-8 answers): which Python, where the venv goes (path length), and the launcher's message box when
the window cannot start under pythonw.exe. PowerShell itself is not available to the tests, so the script
is checked for the calls and settings these decisions rely on."""

import json
import ntpath
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "packaging"
sys.path.insert(0, str(PKG))
import win_setup  # noqa: E402

PS1 = (PKG / "install-windows.ps1").read_text(encoding="ascii")


def info(version=(3, 12, 10), exe=r"C:\Users\José\AppData\Local\Programs\Python\Python312\python.exe", bits=64,
         has_venv=True):
    return {"executable": exe, "version": list(version), "bits": bits, "has_venv": has_venv,
            "store": "\\windowsapps\\" in exe.lower()}


def test_probe_writes_the_interpreter_path_as_utf8_json(tmp_path):
    # The interpreter is started through a folder whose name no ANSI code page holds: the path must come
    # back exactly, which reading the console output of "print(sys.executable)" did not guarantee.
    folder = tmp_path / "José Ωμέγα 日本"
    folder.mkdir()
    link = folder / "python"
    try:
        link.symlink_to(sys.executable)
    except OSError:
        pytest.skip("no symlinks here")
    out = tmp_path / "probe é.json"
    r = subprocess.run([str(link), str(PKG / "win_setup.py"), "probe", str(out)], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONIOENCODING="cp1252"))
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_bytes().decode("utf-8"))
    assert data["executable"] == str(link)
    assert data["version"][:2] == list(sys.version_info[:2])
    assert data["ok"] is True and str(link) in data["reason"]


@pytest.mark.parametrize("kwargs, ok, words", [
    ({}, True, ["Python 3.12.10", "José"]),
    ({"version": (3, 14, 0)}, True, ["3.14.0"]),
    ({"version": (3, 10, 11)}, True, []),
    ({"version": (3, 9, 13)}, False, ["3.9.13", "3.10 to 3.14"]),
    ({"version": (3, 15, 0)}, False, ["3.15.0", "3.10 to 3.14"]),
    ({"bits": 32}, False, ["32-bit", "64-bit"]),
    ({"has_venv": False}, False, ["no venv module"]),
    ({"exe": r"C:\Users\Zoë\AppData\Local\Microsoft\WindowsApps\PythonSoftwareFoundation.Python.3.12_qbz5n2kfra8p0"
             r"\python.exe"}, True, ["Microsoft Store", "Zoë"]),
])
def test_python_verdict(kwargs, ok, words):
    good, reason = win_setup.python_verdict(info(**kwargs))
    assert good is ok
    for w in words:
        assert w in reason


def test_no_python_links_the_exact_installer():
    msg = win_setup.no_python_message(["Python 3.9.13 at C:\\Python39\\python.exe is not 3.10 to 3.14"])
    assert win_setup.INSTALLER_URL in msg and win_setup.INSTALLER_URL.endswith("-amd64.exe")
    assert "Python 3.9.13" in msg and "Add python.exe to PATH" in msg
    assert f'$PythonInstaller = "{win_setup.INSTALLER_URL}"' in PS1


LOCAL = r"C:\Users\José\AppData\Local"


def test_a_typical_download_folder_fits():
    app = r"C:\Users\José-María\Downloads\patina-main\patina-main"
    plan = win_setup.venv_plan(app, LOCAL, long_paths=False)
    assert plan["ok"] and not plan["ask"] and plan["venv"] == app + r"\.venv"
    assert plan["longest"] == len(app + r"\.venv\Lib\site-packages" + "\\") + 171 <= 259


def test_one_folder_deeper_gets_the_short_folder_offered():
    app = r"C:\Users\José-María\Downloads\patina-main\patina-main\patina-main"
    assert win_setup.longest_path(app + r"\.venv") == 261
    plan = win_setup.venv_plan(app, LOCAL, long_paths=False)
    assert plan["ok"] and plan["ask"]
    assert plan["venv"] == ntpath.join(LOCAL, "Patina", "venv")
    assert "LongPathsEnabled" in plan["message"] and "too deep" in plan["message"]
    # with long paths enabled the app folder is fine
    plan = win_setup.venv_plan(app, LOCAL, long_paths=True)
    assert plan["ok"] and not plan["ask"] and plan["venv"] == app + r"\.venv"


def test_too_deep_everywhere_is_refused_with_what_to_do():
    deep_local = "C:\\Users\\" + "x" * 60 + "\\AppData\\Local\\" + "y" * 40
    app = "C:\\Users\\" + "x" * 60 + "\\Downloads\\patina-main\\patina-main"
    plan = win_setup.venv_plan(app, deep_local, long_paths=False)
    assert not plan["ok"] and "C:\\Patina" in plan["message"] and "LongPathsEnabled" in plan["message"]
    chosen = win_setup.venv_plan(app, LOCAL, long_paths=False, requested="D:\\" + "v" * 100)
    assert not chosen["ok"] and "too deep" in chosen["message"]


def test_plan_venv_cli_round_trips_unicode(tmp_path):
    out = tmp_path / "plan.json"
    app = r"C:\Users\Łukasz\Desktop\Patina"
    r = subprocess.run([sys.executable, str(PKG / "win_setup.py"), "plan-venv", str(out), "--app-dir", app,
                        "--local-app-data", r"C:\Users\Łukasz\AppData\Local", "--long-paths", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    plan = json.loads(out.read_text(encoding="utf-8"))
    assert plan["venv"] == app + r"\.venv" and plan["ok"]


def test_the_powershell_script_delegates_and_is_encoding_safe():
    assert '$env:PYTHONUTF8 = "1"' in PS1
    assert "[Console]::OutputEncoding = [System.Text.Encoding]::UTF8" in PS1
    assert "ReadAllText($Path, [System.Text.Encoding]::UTF8)" in PS1
    assert '$Helper, "probe", $out' in PS1 and '"plan-venv"' in PS1
    assert '@($Picker, "--platform", "windows")' in PS1
    # no more decoding of console output into a path, and no blanket rejection of the Store Python
    assert "print(sys.executable)" not in PS1 and "WindowsApps" not in PS1.split("param(")[1]
    # $null.Trim() crashed on names outside the ANSI code page: every Trim() is on a [string]-cast value
    for line in PS1.splitlines():
        if ".Trim()" in line:
            assert "[string]" in line or "$pick.Trim()" in line, line
    # every step names itself for the error message
    for step in ("creating the environment", "updating pip", "installing PyTorch",
                 "installing Patina and its libraries"):
        assert f'"{step}"' in PS1
    assert "--upgrade-strategy" in PS1 and '"-c", $constraints' in PS1


def test_pythonw_start_up_failure_shows_a_message_box_and_writes_the_log(tmp_path, monkeypatch):
    import ctypes

    from patina.gui import launcher

    boxes = []

    class User32:
        @staticmethod
        def MessageBoxW(hwnd, text, title, flags):
            boxes.append((text, title, flags))
            return 1

    class WinDLL:
        user32 = User32()

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "windll", WinDLL(), raising=False)
    monkeypatch.setattr(sys, "stderr", None)  # pythonw.exe has no console
    monkeypatch.delenv("PATINA_STATE_DIR", raising=False)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local é"))
    launcher.report_startup_failure("patina: the window could not start: ImportError: DLL load failed")
    log = tmp_path / "Local é" / "Patina" / "launcher.log"
    assert "DLL load failed" in log.read_text(encoding="utf-8")
    assert len(boxes) == 1
    text, title, _ = boxes[0]
    assert title == "Patina could not start" and "DLL load failed" in text and str(log) in text
