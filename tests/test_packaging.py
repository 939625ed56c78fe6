"""Installers and launchers (packaging/): path handling with spaces and non-ASCII characters, GPU → CUDA
wheel index, and a clear refusal of an unsupported Python. Nothing is downloaded: the Linux installer runs
in dry-run mode."""

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "packaging"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def copy_app(dest: Path) -> Path:
    """A copy of the app (what a user unpacks) in *dest*."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", "*.egg-info")
    for name in ("core", "gui", "packaging", "resources"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def unquote_desktop_exec(value: str) -> list[str]:
    """Parse an Exec value as the Desktop Entry Specification says: string unescaping first, then the
    quoting rules (inside double quotes, a backslash escapes ", `, $ and \\); %% is a literal %."""
    s = value.replace("\\\\", "\x00").replace("\\s", " ").replace("\\n", "\n").replace("\\t", "\t")
    s = s.replace("\\r", "\r").replace("\x00", "\\")
    args, cur, i, quoted, have = [], "", 0, False, False
    while i < len(s):
        c = s[i]
        if quoted:
            if c == "\\" and i + 1 < len(s) and s[i + 1] in '"`$\\':
                cur += s[i + 1]
                i += 2
                continue
            if c == '"':
                quoted = False
            else:
                cur += c
        elif c == '"':
            quoted, have = True, True
        elif c == " ":
            if cur or have:
                args.append(cur)
            cur, have = "", False
        else:
            cur += c
        i += 1
    if cur or have:
        args.append(cur)
    return [a.replace("%%", "%") for a in args]


def fake_tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text("#!/bin/sh\n" + script + "\n", encoding="utf-8")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


def run_installer(app: Path, tmp_path: Path, *, gpu: bool, extra_env=None):
    tools = tmp_path / "tools"
    shutil.rmtree(tools, ignore_errors=True)
    tools.mkdir()
    if gpu:
        fake_tool(tools, "nvidia-smi", 'echo "GPU 0: NVIDIA GeForce RTX 4070 (UUID: GPU-1234)"')
    path = [str(tools)] + [d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not (Path(d) / "nvidia-smi").exists()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATINA_")}
    env.update(PATH=os.pathsep.join(path), HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data dir é"),
               PATINA_DRY_RUN="1", PATINA_PYTHON=sys.executable)
    env.update(extra_env or {})
    return subprocess.run(["bash", str(app / "packaging" / "install-linux.sh")], env=env, capture_output=True,
                          text=True, timeout=60, cwd=str(tmp_path))


def test_linux_installer_dry_run_in_a_path_with_spaces_and_accents(tmp_path):
    app = copy_app(tmp_path / "Mes Applis é" / "Patina $HOME `x` 100%")
    r = run_installer(app, tmp_path, gpu=True)
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("would run:")]
    assert len(lines) == 4
    cmds = [shlex.split(ln[len("would run:"):]) for ln in lines]
    venv = str(app / ".venv")
    assert cmds[0] == [sys.executable, "-m", "venv", venv]
    assert cmds[2] == [f"{venv}/bin/python", "-m", "pip", "install", "--upgrade", "torch", "--index-url",
                       "https://download.pytorch.org/whl/cu128"]
    assert cmds[3] == [f"{venv}/bin/python", "-m", "pip", "install", "-e", str(app)]
    assert "RTX 4070" in out and "dry run" in out
    assert not (app / ".venv").exists()  # nothing was created or downloaded

    desktop = tmp_path / "data dir é" / "applications" / "patina.desktop"
    text = desktop.read_text(encoding="utf-8")
    entries = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert entries["Type"] == "Application" and entries["Name"] == "Patina" and entries["Terminal"] == "false"
    exec_args = unquote_desktop_exec(entries["Exec"])
    assert exec_args == [str(app / "packaging" / "patina.sh")]
    assert os.access(exec_args[0], os.X_OK)
    icon = Path(entries["Icon"].replace("\\\\", "\\"))
    assert icon.is_file() and icon.suffix == ".png"
    if shutil.which("desktop-file-validate"):
        v = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr


def test_linux_installer_picks_the_cpu_build_without_a_gpu(tmp_path):
    app = copy_app(tmp_path / "app é")
    r = run_installer(app, tmp_path, gpu=False)
    assert r.returncode == 0, r.stderr
    assert "--index-url https://download.pytorch.org/whl/cpu" in r.stdout
    assert "none found" in r.stdout
    r2 = run_installer(app, tmp_path, gpu=False, extra_env={"PATINA_TORCH_INDEX": "https://example.invalid/whl"})
    assert "--index-url https://example.invalid/whl" in r2.stdout


def test_linux_installer_refuses_an_unsupported_python(tmp_path):
    app = copy_app(tmp_path / "app")
    old = tmp_path / "old python"
    fake_tool(old, "python", "exit 1")  # any version check fails
    r = run_installer(app, tmp_path, gpu=False, extra_env={"PATINA_PYTHON": str(old / "python")})
    assert r.returncode != 0
    assert "3.10, 3.11 or 3.12" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "data dir é" / "applications" / "patina.desktop").exists()


def test_linux_launcher_runs_the_venv_python_from_a_path_with_spaces(tmp_path):
    app = copy_app(tmp_path / "Mon dossier é" / "patina app")
    launcher = app / "packaging" / "patina.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATINA_")}
    env["PATINA_CONFIG_DIR"] = str(tmp_path / "cfg")
    r = subprocess.run(["bash", str(launcher), "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not installed yet" in r.stderr and str(app) in r.stderr
    (app / ".venv" / "bin").mkdir(parents=True)
    # A stand-in for the venv's python that runs this interpreter *as itself*: a symlink to sys.executable
    # would make Python look for pyvenv.cfg beside the link, miss it, and start without this venv's packages.
    fake = app / ".venv" / "bin" / "python"
    fake.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n', encoding="utf-8")
    fake.chmod(0o755)
    link = tmp_path / "bin dir" / "patina"  # a symlink elsewhere still finds the app
    link.parent.mkdir()
    link.symlink_to(launcher)
    r = subprocess.run([str(link), "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("patina ")


def test_windows_scripts_quote_every_path():
    ps1 = (PKG / "install-windows.ps1").read_bytes()
    assert all(b < 128 for b in ps1), "install-windows.ps1 must stay ASCII (PowerShell 5.1 reads it as ANSI)"
    text = ps1.decode("ascii")
    assert "https://download.pytorch.org/whl/cu128" in text and "nvidia-smi" in text
    assert '"-e", $AppDir' in text and "pythonw.exe" in text and "-LiteralPath" in text
    for bat in ("install-windows.bat", "patina.bat"):
        raw = (PKG / bat).read_bytes()
        assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""), f"{bat} needs CRLF line endings"
        body = raw.decode("ascii")
        assert '"%~dp0' in body  # the script's own folder, always quoted
    assert 'start "" "%PYW%" -m gui.launcher' in (PKG / "patina.bat").read_text(encoding="ascii")
