"""The window's start-up checks (gui/qt_preflight.py, gui/launcher.py, packaging/patina.sh): no display,
a system library of Qt's X11 plugin missing, or a crash inside Qt each end with a message that says what
to do, in the terminal, in a log file in the user's state folder and as a desktop notification, instead
of Qt's abort (exit 134) that a menu entry turns into "nothing happens"."""

import os
import shutil
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from patina.gui import qt_preflight as qp

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's xcb/wayland checks are Linux")

NO_CURSOR = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibxcb-cursor.so.0 => not found\n" \
            "\tlibxcb-icccm.so.4 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"


def tool(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def fake_ldd(folder: Path, output: str) -> None:
    out = folder / "ldd-output.txt"
    folder.mkdir(parents=True, exist_ok=True)
    out.write_text(output, encoding="utf-8")
    tool(folder, "ldd", f'cat "{out}"')


@pytest.fixture
def x_display():
    """An X display number with something listening on its (abstract) socket, like a running X server."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for num in range(4000 + os.getpid() % 1000, 5000 + os.getpid() % 1000):
        try:
            s.bind(f"\0/tmp/.X11-unix/X{num}")
            break
        except OSError:
            continue
    s.listen(5)
    yield f":{num}"
    s.close()


def platforms_dir() -> Path:
    folder = qp.plugin_dir()
    if folder is None or not (folder / "libqxcb.so").is_file():
        pytest.skip("PySide6's xcb platform plugin is not installed")
    return folder


def test_package_family_from_os_release():
    assert qp.package_family('NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n') == "apt"
    assert qp.package_family("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n") == "apt"
    assert qp.package_family('ID=fedora\nVERSION_ID=41\n') == "dnf"
    assert qp.package_family('ID="rocky"\nID_LIKE="rhel centos fedora"\n') == "dnf"
    assert qp.package_family("ID=arch\n") == "pacman"
    assert qp.package_family("ID=manjaro\nID_LIKE=arch\n") == "pacman"
    assert qp.package_family("ID=nixos\n") is None


def test_install_commands_name_each_distributions_packages():
    missing = ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    assert qp.install_commands(missing, "apt") == ["sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1"]
    assert qp.install_commands(missing, "dnf") == ["sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms"]
    assert qp.install_commands(missing, "pacman") == [
        "sudo pacman -S --needed xcb-util-cursor xcb-util-wm xcb-util-keysyms"]
    assert len(qp.install_commands(missing, None)) == 3  # unknown distribution: all three lines
    assert qp.install_commands(["libQt6XcbQpa.so.6"], "apt") == []


def test_real_ldd_reports_a_hidden_library(tmp_path):
    # A copy of the plugin away from PySide6's Qt/lib folder: its $ORIGIN-relative RUNPATH no longer
    # finds Qt's own libraries, so the real ldd reports them as not found.
    if not shutil.which("ldd"):
        pytest.skip("no ldd")
    copy = tmp_path / "a" / "platforms" / "libqxcb.so"
    copy.parent.mkdir(parents=True)
    shutil.copy2(platforms_dir() / "libqxcb.so", copy)
    env_before = os.environ.get("LD_LIBRARY_PATH")
    os.environ.pop("LD_LIBRARY_PATH", None)
    try:
        missing = qp.missing_libraries(copy)
    finally:
        if env_before is not None:
            os.environ["LD_LIBRARY_PATH"] = env_before
    assert missing and "libQt6XcbQpa.so.6" in missing
    problem = qp.library_problem(copy, "X11 (xcb)", family="apt")
    assert "libQt6XcbQpa.so.6" in problem.text() and "run the installer again" in problem.text()


def test_no_display_is_found_before_qt_starts(tmp_path):
    folder = platforms_dir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    problem = qp.check(env, platforms=folder)
    assert problem is not None
    assert "no display" in problem.summary
    assert "patina train" in problem.text() and "--screenshot" in problem.text()


def test_offscreen_and_screenshots_need_no_display(tmp_path):
    folder = platforms_dir()
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    assert qp.check(dict(base, QT_QPA_PLATFORM="offscreen"), platforms=folder) is None
    assert qp.check(base, screenshot=True, platforms=folder) is None


def test_a_display_that_does_not_answer(tmp_path):
    env = {"PATH": os.environ["PATH"], "DISPLAY": f":{3000 + os.getpid() % 900}"}
    problem = qp.check(env, platforms=platforms_dir())
    assert problem is not None and "cannot connect to the X display" in problem.summary


def test_a_missing_xcb_library_gets_the_install_command(tmp_path, x_display, monkeypatch):
    folder = platforms_dir()
    fake_ldd(tmp_path / "bin", NO_CURSOR)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    problem = qp.check({"DISPLAY": x_display}, platforms=folder, family="apt")
    assert problem is not None
    assert problem.missing == ["libxcb-cursor.so.0", "libxcb-icccm.so.4"]
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4" in problem.text()
    assert "patina train" in problem.text()
    # with every library found, the same display is fine
    fake_ldd(tmp_path / "bin", "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n")
    assert qp.check({"DISPLAY": x_display}, platforms=folder, family="apt") is None


def launcher_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE")
           and not k.startswith("PATINA_")}
    tools = tmp_path / "tools"
    tool(tools, "notify-send", f'printf "%s\\n" "$@" > "{tmp_path / "notified.txt"}"')
    env.update(PATH=f"{tools}{os.pathsep}{env.get('PATH', '')}", HOME=str(tmp_path / "home"),
               XDG_STATE_HOME=str(tmp_path / "state"), PATINA_CONFIG_DIR=str(tmp_path / "cfg"),
               PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def test_launcher_without_a_display_explains_logs_and_notifies(tmp_path):
    platforms_dir()
    env = launcher_env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "patina.gui.launcher"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr  # before the check: Qt's abort, exit 134
    assert "no display found" in r.stderr and "patina train" in r.stderr and "Traceback" not in r.stderr
    log = tmp_path / "state" / "patina" / "launcher.log"
    assert log.is_file() and "no display found" in log.read_text(encoding="utf-8")
    assert str(log) in r.stderr
    notified = (tmp_path / "notified.txt").read_text(encoding="utf-8")
    assert "Patina could not start" in notified and "no display found" in notified and str(log) in notified


def test_launcher_with_a_missing_library_prints_the_install_command(tmp_path, x_display):
    platforms_dir()
    env = launcher_env(tmp_path, DISPLAY=x_display)
    fake_ldd(tmp_path / "tools", NO_CURSOR)
    r = subprocess.run([sys.executable, "-m", "patina.gui.launcher"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "libxcb-cursor.so.0" in r.stderr
    family = qp.package_family()
    for line in qp.install_commands(["libxcb-cursor.so.0", "libxcb-icccm.so.4"], family):
        assert line in r.stderr
    assert "libxcb-cursor" in (tmp_path / "notified.txt").read_text(encoding="utf-8")


def test_headless_commands_and_screenshots_still_work_without_a_display(tmp_path):
    platforms_dir()
    env = launcher_env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "patina.gui.launcher", "--version"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("patina ")
    out = tmp_path / "shot é.png"
    r = subprocess.run([sys.executable, "-m", "patina.gui.launcher", "--screenshot", str(out), "--size", "640x480"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "notified.txt").exists()


def test_a_crash_inside_qt_started_from_the_menu_is_shown(tmp_path):
    # patina.sh started without a terminal (the menu entry): when the process dies on a signal, as Qt's
    # abort does, the script shows a notification with Qt's last words and keeps them in a log.
    app = tmp_path / "app é"
    shutil.copytree(ROOT / "packaging", app / "packaging")
    venv_bin = app / ".venv" / "bin"
    tool(venv_bin, "python", 'echo "qt.qpa.plugin: Could not load the Qt platform plugin \\"xcb\\"" >&2\n'
                            'kill -ABRT $$')
    env = launcher_env(tmp_path)
    r = subprocess.run(["bash", str(app / "packaging" / "patina.sh"), "--menu"], env=env, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 134
    log = tmp_path / "state" / "patina" / "patina-output.log"
    assert "Could not load the Qt platform plugin" in log.read_text(encoding="utf-8")
    notified = (tmp_path / "notified.txt").read_text(encoding="utf-8")
    assert "stopped unexpectedly (exit code 134)" in notified
    assert "Could not load the Qt platform plugin" in notified and str(log) in notified


def test_a_startup_exception_is_reported_not_a_traceback_only(tmp_path, monkeypatch):
    from patina.gui import launcher

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("PATINA_STATE_DIR", raising=False)
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    shown = []
    monkeypatch.setattr(launcher, "notify", lambda title, body: shown.append((title, body)) or True)
    monkeypatch.setattr(launcher, "_interactive", lambda: False)
    import patina.gui.app

    def boom(argv):
        raise RuntimeError("no OpenGL context " + uuid.uuid4().hex[:6])

    monkeypatch.setattr(patina.gui.app, "run_app", boom)
    assert launcher.main(["--gui"]) == 1
    log = (tmp_path / "state" / "patina" / "launcher.log").read_text(encoding="utf-8")
    assert "RuntimeError: no OpenGL context" in log and "Traceback" in log
    assert shown and "no OpenGL context" in shown[0][1]
