"""Installers and launchers (packaging/): path handling with spaces and non-ASCII characters, GPU → CUDA
wheel index, a clear refusal of an unsupported Python, and the Linux installer end to end (install, update,
a failed pip step, uninstall) in a scratch home. Nothing is downloaded: the end-to-end runs reuse the
packages of the Python running the tests and give pip --no-index."""

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


RTX_4070 = "NVIDIA GeForce RTX 4070, 8.9, 580.95.05"


def run_installer(app: Path, tmp_path: Path, *, gpu, extra_env=None, dry_run=True, script="install-linux.sh",
                  args=(), timeout=120):
    """Run a Linux packaging script with a fake nvidia-smi (*gpu*: True for an RTX 4070, a CSV row for
    another card, False for none), a scratch HOME and no lspci."""
    tools = tmp_path / "tools"
    shutil.rmtree(tools, ignore_errors=True)
    tools.mkdir()
    if gpu:
        row = RTX_4070 if gpu is True else gpu
        fake_tool(tools, "nvidia-smi", f'echo "{row}"')
    fake_tool(tools, "lspci", "exit 0")
    path = [str(tools)] + [d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not (Path(d) / "nvidia-smi").exists()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATINA_", "PIP_", "XDG_"))}
    env.update(PATH=os.pathsep.join(path), HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data dir é"),
               PATINA_PYTHON=sys.executable, PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    if dry_run:
        env["PATINA_DRY_RUN"] = "1"
    env.update(extra_env or {})
    return subprocess.run(["bash", str(app / "packaging" / script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=str(tmp_path))


def would_run(out: str) -> list[list[str]]:
    return [shlex.split(ln[len("would run:"):]) for ln in out.splitlines() if ln.startswith("would run:")]


def test_linux_installer_dry_run_in_a_path_with_spaces_and_accents(tmp_path):
    app = copy_app(tmp_path / "Mes Applis é" / "Patina $HOME `x` 100%")
    r = run_installer(app, tmp_path, gpu=True)
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    cmds = would_run(out)
    assert len(cmds) == 4
    venv = str(app / ".venv")
    assert cmds[0] == [sys.executable, "-m", "venv", venv]
    assert cmds[1] == [f"{venv}/bin/python", "-m", "pip", "install", "--upgrade", "pip"]
    assert cmds[2] == [f"{venv}/bin/python", "-m", "pip", "install", "torch", "--index-url",
                       "https://download.pytorch.org/whl/cu130"]
    assert cmds[3][:7] == [f"{venv}/bin/python", "-m", "pip", "install", "--upgrade", "--upgrade-strategy", "eager"]
    assert cmds[3][7] == "-c" and cmds[3][9:] == ["-e", f"{app}[captioning]"]   # with the WD14 tagger's runtime
    assert "RTX 4070" in out and "compute capability 8.9" in out and "dry run" in out
    assert not (app / ".venv").exists()  # nothing was created or downloaded

    desktop = tmp_path / "data dir é" / "applications" / "patina.desktop"
    text = desktop.read_text(encoding="utf-8")
    entries = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert entries["Type"] == "Application" and entries["Name"] == "Patina" and entries["Terminal"] == "false"
    exec_args = unquote_desktop_exec(entries["Exec"])
    assert exec_args == [str(app / "packaging" / "patina.sh"), "--menu"]
    assert os.access(exec_args[0], os.X_OK)
    # One main category (Graphics) so menus list Patina once; the icon is installed in the icon theme.
    cats = [c for c in entries["Categories"].split(";") if c]
    main = {"AudioVideo", "Audio", "Video", "Development", "Education", "Game", "Graphics", "Network",
            "Office", "Science", "Settings", "System", "Utility"}
    assert [c for c in cats if c in main] == ["Graphics"]
    assert entries["Icon"] == "patina"
    icon = tmp_path / "data dir é" / "icons" / "hicolor" / "256x256" / "apps" / "patina.png"
    assert icon.read_bytes() == (app / "resources" / "icons" / "patina-256.png").read_bytes()
    if shutil.which("desktop-file-validate"):
        v = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr


def test_linux_installer_picks_the_cpu_build_without_a_gpu(tmp_path):
    app = copy_app(tmp_path / "app é")
    r = run_installer(app, tmp_path, gpu=False)
    assert r.returncode == 0, r.stderr
    assert "--index-url https://download.pytorch.org/whl/cpu" in r.stdout
    assert "no NVIDIA GPU found" in r.stdout
    # the CPU warning is repeated as the last thing printed, after pip's output
    assert r.stdout.rstrip().splitlines()[-1].startswith("patina-install: WARNING: PyTorch is the CPU build")
    r2 = run_installer(app, tmp_path, gpu=False, extra_env={"PATINA_TORCH_INDEX": "https://example.invalid/whl"})
    assert "--index-url https://example.invalid/whl" in r2.stdout


def test_linux_installer_picks_the_build_for_a_pascal_card_and_refuses_an_old_driver(tmp_path):
    app = copy_app(tmp_path / "app")
    r = run_installer(app, tmp_path, gpu="NVIDIA GeForce GTX 1080, 6.1, 550.144.03")
    assert r.returncode == 0, r.stderr
    assert "--index-url https://download.pytorch.org/whl/cu126" in r.stdout and "Pascal" in r.stdout
    shutil.rmtree(tmp_path / "data dir é")
    r = run_installer(app, tmp_path, gpu="NVIDIA GeForce RTX 4070, 8.9, 470.256.02")
    assert r.returncode != 0
    assert "too old" in r.stdout + r.stderr and "no PyTorch build fits" in r.stderr
    assert would_run(r.stdout) == []
    assert not (tmp_path / "data dir é" / "applications" / "patina.desktop").exists()


def test_linux_installer_refuses_an_unsupported_python(tmp_path):
    app = copy_app(tmp_path / "app")
    old = tmp_path / "old python"
    fake_tool(old, "python", "exit 1")  # any version check fails
    r = run_installer(app, tmp_path, gpu=False, extra_env={"PATINA_PYTHON": str(old / "python")})
    assert r.returncode != 0
    assert "3.10 to 3.14" in r.stderr and "Traceback" not in r.stderr
    for distro in ("Ubuntu", "Fedora", "Arch"):
        assert distro in r.stderr
    assert not (tmp_path / "data dir é" / "applications" / "patina.desktop").exists()


def test_python_range_matches_pyproject():
    import re

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'requires-python = ">=3\.(\d+),<3\.(\d+)"', text)
    lo, hi = int(m.group(1)), int(m.group(2))
    script = (PKG / "install-linux.sh").read_text(encoding="utf-8")
    assert f"(3, {lo}) <= sys.version_info[:2] < (3, {hi})" in script
    assert f'SUPPORTED="3.{lo} to 3.{hi - 1}"' in script
    assert f"python3.{hi - 1}" in script


def test_project_metadata_has_no_setuptools_warnings():
    # setuptools reads pyproject.toml as a build would, in a fresh interpreter; a deprecated license
    # table printed three warnings per build.
    import importlib.util

    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed")
    code = ("import warnings, json, sys\n"
            "warnings.simplefilter('always')\n"
            "from setuptools.config.pyprojecttoml import read_configuration\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    conf = read_configuration(sys.argv[1])\n"
            "print(json.dumps([conf['project'].get('license'), [str(w.message) for w in caught]]))\n")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    import json

    license_, warned = json.loads(r.stdout.strip().splitlines()[-1])
    assert license_ == "Apache-2.0"
    assert not [w for w in warned if "license" in w.lower()], warned


def test_linux_installer_checks_an_existing_environment(tmp_path):
    app = copy_app(tmp_path / "app")
    venv = app / ".venv"
    # A venv whose Python is gone (the system Python was upgraded, or an earlier run was cut short).
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nonexistent\n", encoding="utf-8")
    r = run_installer(app, tmp_path, gpu=False)
    assert r.returncode == 0, r.stderr
    assert "recreating it" in r.stdout
    cmds = would_run(r.stdout)
    assert cmds[0] == ["rm", "-rf", "--", str(venv)] and cmds[1] == [sys.executable, "-m", "venv", str(venv)]
    # A folder that is not a venv is never deleted.
    shutil.rmtree(venv)
    venv.mkdir()
    (venv / "notes.txt").write_text("mine", encoding="utf-8")
    r = run_installer(app, tmp_path, gpu=False)
    assert r.returncode != 0 and "is not a Python environment" in r.stderr
    assert (venv / "notes.txt").exists()


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
    assert "pick_torch.py" in text and "Win32_VideoController" in text
    assert '"-e", ($AppDir + "[captioning]")' in text and "pythonw.exe" in text and "-LiteralPath" in text
    for bat in ("install-windows.bat", "patina.bat", "uninstall-windows.bat"):
        raw = (PKG / bat).read_bytes()
        assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""), f"{bat} needs CRLF line endings"
        body = raw.decode("ascii")
        assert '"%~dp0' in body  # the script's own folder, always quoted
    assert 'start "" /D "%APP_DIR%" "%PYW%" -m patina.gui.launcher' in (PKG / "patina.bat").read_text(encoding="ascii")


def _reuse_this_environment(venv: Path) -> Path:
    """Make *venv* (without pip) whose site-packages point at this interpreter's through a .pth file: pip
    in it sees torch, PySide6 and every other dependency as installed, so the installer downloads nothing.
    pip never removes packages outside its own environment, so this one is left untouched."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "patina-test-reuse.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return Path(sysconfig.get_paths()["purelib"])


def _tiny_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel of *name* *version* (an empty package), for offline upgrade tests."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": b"",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def _needs_reusable_environment():
    import importlib.util

    for mod in ("pip", "setuptools", "torch", "PySide6"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"the end-to-end install reuses this environment's packages; {mod} is missing")
    from importlib.metadata import version

    if int(version("setuptools").split(".")[0]) < 77:
        pytest.skip("building Patina needs setuptools>=77 in this environment (no index to fetch it from)")


def test_linux_installer_end_to_end_update_and_uninstall(tmp_path):
    _needs_reusable_environment()
    app = copy_app(tmp_path / "Mes Applis é" / "Patina app")
    home = tmp_path / "home"
    venv = app / ".venv"
    shared = _reuse_this_environment(venv)
    shared_before = sorted(p.name for p in shared.glob("*.dist-info"))
    offline = {"PATINA_PIP_ARGS": "--no-index --no-build-isolation"}

    # A failed pip step in an existing environment: which step, what to try; the venv is kept for the re-run.
    bad = run_installer(app, tmp_path, gpu=False, dry_run=False, timeout=300,
                        extra_env={"PATINA_PIP_ARGS": "--no-index --no-such-pip-option"})
    assert bad.returncode == 1
    assert "error: updating pip failed" in bad.stderr and "Check the internet connection" in bad.stderr
    assert "running the installer again checks and completes it" in bad.stderr
    assert (venv / "pyvenv.cfg").exists() and not (venv / ".patina-install-complete").exists()

    r = run_installer(app, tmp_path, gpu=False, dry_run=False, timeout=300, extra_env=offline)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "an earlier install did not finish" in r.stdout
    assert "torch held at" in r.stdout and "is installed and fits; kept" in r.stdout
    assert (venv / ".patina-install-complete").is_file()
    assert list(venv.glob("lib/python*/site-packages/__editable__*patina*"))  # Patina itself, editable
    desktop = tmp_path / "data dir é" / "applications" / "patina.desktop"
    icon = tmp_path / "data dir é" / "icons" / "hicolor" / "256x256" / "apps" / "patina.png"
    assert desktop.is_file() and icon.is_file()

    # The installed launcher runs the venv's Python from a path with spaces and an accent.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATINA_")}
    env.update(HOME=str(home), PATINA_CONFIG_DIR=str(tmp_path / "cfg"))
    v = subprocess.run([str(app / "packaging" / "patina.sh"), "--version"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert v.returncode == 0 and v.stdout.startswith("patina "), v.stderr

    # Update: a newer release of a dependency (pyqtgraph, served from a local folder) is installed, while
    # torch stays: nothing of it is downloaded or reinstalled.
    wheels = tmp_path / "wheels"
    _tiny_wheel(wheels, "pyqtgraph", "999.0")
    u = run_installer(app, tmp_path, gpu=False, dry_run=False, timeout=300,
                      extra_env={"PATINA_PIP_ARGS": f"--no-index --no-build-isolation --find-links {wheels}"})
    assert u.returncode == 0, u.stderr[-3000:]
    assert "is installed and fits; kept" in u.stdout
    installed = [ln for ln in u.stdout.splitlines() if ln.startswith("Successfully installed")]
    assert installed and "pyqtgraph-999.0" in installed[-1] and "torch" not in installed[-1]
    assert "Installing collected packages: torch" not in u.stdout and "Uninstalling torch" not in u.stdout
    assert list(venv.glob("lib/python*/site-packages/pyqtgraph-999.0.dist-info"))

    # The user's things, which uninstall must never touch.
    keep = [home / ".config" / "patina" / "presets" / "mine.json", home / "datasets" / "10_cat" / "a.png",
            home / "loras" / "cat.safetensors", home / "loras" / "cat.toml"]
    for p in keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"user data")
    cache = home / ".cache" / "patina" / "thumbs" / "x.jpg"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"thumb")
    un = run_installer(app, tmp_path, gpu=False, dry_run=False, args=("--uninstall",))
    assert un.returncode == 0, un.stderr
    assert not desktop.exists() and not icon.exists() and not venv.exists() and not cache.exists()
    assert all(p.read_bytes() == b"user data" for p in keep)
    assert (app / "pyproject.toml").exists()  # the app folder is the user's to delete
    assert "kept" in un.stdout and str(home / ".config" / "patina") in un.stdout
    assert sorted(p.name for p in shared.glob("*.dist-info")) == shared_before


def test_linux_installer_failed_pip_step_removes_a_new_half_built_venv(tmp_path):
    app = copy_app(tmp_path / "app é")
    r = run_installer(app, tmp_path, gpu=False, dry_run=False, timeout=300,
                      extra_env={"PATINA_PIP_ARGS": "--no-index"})  # torch cannot be found offline
    assert r.returncode == 1
    assert "error: installing PyTorch failed" in r.stderr and "free space" in r.stderr
    assert "half-built environment" in r.stderr and "was removed" in r.stderr
    assert not (app / ".venv").exists()
    assert not (tmp_path / "data dir é" / "applications" / "patina.desktop").exists()
    assert "Traceback" not in r.stderr.split("error: installing PyTorch failed")[1]


def test_linux_uninstall_dry_run_lists_and_keeps_everything(tmp_path):
    app = copy_app(tmp_path / "app")
    run_installer(app, tmp_path, gpu=False)  # dry run: entry and icons only
    desktop = tmp_path / "data dir é" / "applications" / "patina.desktop"
    assert desktop.exists()
    r = run_installer(app, tmp_path, gpu=False, script="uninstall-linux.sh")
    assert r.returncode == 0 and f"would remove: {desktop}" in r.stdout
    assert desktop.exists()


def test_linux_update_switches_the_torch_build_only_when_the_card_needs_another(tmp_path):
    _needs_reusable_environment()
    from importlib.metadata import version

    app = copy_app(tmp_path / "app é")
    venv = app / ".venv"
    _reuse_this_environment(venv)
    torch_version = version("torch")
    vpy = f"{venv}/bin/python"
    # The installed build fits: torch is kept and held; everything else is upgraded.
    build = torch_version.split("+")[1] if "+" in torch_version else None
    if build == "cpu":
        r = run_installer(app, tmp_path, gpu=False)
        assert r.returncode == 0, r.stderr
        cmds = would_run(r.stdout)
        assert [c for c in cmds if "torch" in c] == []
        assert cmds[-1][:7] == [vpy, "-m", "pip", "install", "--upgrade", "--upgrade-strategy", "eager"]
        assert f"torch held at {torch_version}" in r.stdout
    # A card that needs another build: the old one is removed, the new one installed from its index.
    r = run_installer(app, tmp_path, gpu="NVIDIA GeForce GTX 1080, 6.1, 550.144.03")
    assert r.returncode == 0, r.stderr
    assert f"switching from {torch_version} to the cu126 build" in r.stdout
    cmds = would_run(r.stdout)
    assert [vpy, "-m", "pip", "uninstall", "-y", "torch"] in cmds
    assert [vpy, "-m", "pip", "install", "torch", "--index-url", "https://download.pytorch.org/whl/cu126"] in cmds
