"""packaging/pick_torch.py: the PyTorch build for a card's compute capability and driver, run as the
installers run it, with a fake ``nvidia-smi`` on PATH."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PICK = ROOT / "packaging" / "pick_torch.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake nvidia-smi is a shell script")


def fake_nvidia_smi(folder: Path, rows: str | None, *, old_driver: bool = False) -> None:
    """An nvidia-smi that answers the installers' query with *rows* (CSV, no header). With *old_driver*
    it rejects the compute_cap field as drivers before 510 do, and answers name,driver_version only."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "rows.csv"
    data.write_text(rows or "", encoding="utf-8")
    script = folder / "nvidia-smi"
    if old_driver:
        body = (f'case "$*" in *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\'; exit 2;; esac\n'
                f'cut -d, -f1,3 "{data}"\n')
    else:
        body = f'case "$*" in *compute_cap*) cat "{data}";; *) exit 9;; esac\n'
    script.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def pick(tmp_path: Path, rows: str | None, *args: str, old_driver: bool = False):
    tools = tmp_path / "tools"
    if rows is not None:
        fake_nvidia_smi(tools, rows, old_driver=old_driver)
    else:
        tools.mkdir(exist_ok=True)
    path = [str(tools)] + [d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not (Path(d) / "nvidia-smi").exists()]
    env = dict(os.environ, PATH=os.pathsep.join(path))
    r = subprocess.run([sys.executable, str(PICK), *args], capture_output=True, text=True, env=env, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.mark.parametrize("rows, build", [
    ("NVIDIA GeForce GTX 1080, 6.1, 580.95.05", "cu126"),         # Pascal: only the CUDA 12.6 build has sm_60
    ("NVIDIA GeForce GTX 1060 6GB, 6.1, 535.247.01", "cu126"),
    ("NVIDIA GeForce GTX 970, 5.2, 560.35.03", "cu126"),           # Maxwell
    ("Tesla V100-SXM2-16GB, 7.0, 580.65.06", "cu126"),             # Volta: dropped by CUDA 13
    ("NVIDIA GeForce RTX 2080 Ti, 7.5, 580.95.05", "cu130"),       # Turing
    ("NVIDIA GeForce RTX 2060, 7.5, 550.144.03", "cu126"),         # Turing, driver older than 580
    ("NVIDIA GeForce RTX 3090, 8.6, 575.64.05", "cu126"),
    ("NVIDIA GeForce RTX 4090, 8.9, 590.44.01", "cu130"),          # Ada runs the 8.6 kernels
    ("NVIDIA GeForce RTX 5090, 12.0, 580.95.05", "cu130"),         # Blackwell
    ("NVIDIA GeForce RTX 5070, 12.0, 575.57.08", "cu128"),         # Blackwell on a pre-580 driver
    ("NVIDIA H100 80GB HBM3, 9.0, 570.133.20", "cu126"),
])
def test_the_build_fits_the_card_and_the_driver(tmp_path, rows, build):
    r = pick(tmp_path, rows)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [f"https://download.pytorch.org/whl/{build}", build]
    name, cc, driver = (p.strip() for p in rows.rsplit(",", 2))
    assert name in r.stderr and f"compute capability {cc}" in r.stderr and driver in r.stderr
    assert f"PyTorch: {build}" in r.stderr  # says what was picked, and why


def test_a_newer_build_that_needs_a_newer_driver_is_named(tmp_path):
    r = pick(tmp_path, "NVIDIA GeForce RTX 2060, 7.5, 550.144.03")
    assert "cu130 would need driver 580" in r.stderr
    r = pick(tmp_path, "NVIDIA GeForce GTX 1080, 6.1, 580.95.05")
    assert "cu130 has no kernels for this card" in r.stderr and "legacy" in r.stderr


@pytest.mark.parametrize("rows, words", [
    ("NVIDIA GeForce RTX 4070, 8.9, 520.61.05", ["driver 520.61.05 is too old", "580", "525.60"]),
    ("NVIDIA GeForce RTX 5080, 12.0, 520.61.05", ["driver 520.61.05 is too old", "580"]),
    ("NVIDIA GeForce GTX 780, 3.5, 470.256.02", ["compute capability 3.5", "cannot train"]),
])
def test_refused_with_what_to_do(tmp_path, rows, words):
    r = pick(tmp_path, rows)
    assert r.returncode == 3 and r.stdout == ""
    for w in words:
        assert w in r.stderr, r.stderr
    assert "PATINA_TORCH_INDEX=https://download.pytorch.org/whl/cpu" in r.stderr
    r = pick(tmp_path, rows, "--platform", "windows")
    assert r.returncode == 3 and "-TorchIndex https://download.pytorch.org/whl/cpu" in r.stderr


def test_a_driver_too_old_to_report_the_compute_capability_is_refused(tmp_path):
    r = pick(tmp_path, "NVIDIA GeForce GTX 1080, 6.1, 470.256.02", old_driver=True)
    assert r.returncode == 3
    assert "470.256.02 is too old" in r.stderr and "525" in r.stderr


def test_without_an_nvidia_card_the_cpu_build(tmp_path):
    r = pick(tmp_path, None)
    assert r.returncode == 0
    assert r.stdout.split() == ["https://download.pytorch.org/whl/cpu", "cpu"]
    assert "CPU" in r.stderr and "slow" in r.stderr
    assert "install the NVIDIA driver" not in r.stderr


def test_an_amd_card_is_told_that_rocm_is_not_supported(tmp_path):
    r = pick(tmp_path, None, "--gpu-name",
             "Advanced Micro Devices, Inc. [AMD/ATI] Navi 31 [Radeon RX 7900 XTX] (rev c8)")
    assert r.returncode == 0 and r.stdout.split()[1] == "cpu"
    assert "AMD" in r.stderr and "ROCm" in r.stderr and "not supported" in r.stderr
    assert "NVIDIA driver" not in r.stderr


def test_an_nvidia_card_without_a_working_driver_gets_the_driver_link(tmp_path):
    r = pick(tmp_path, None, "--gpu-name", "NVIDIA Corporation AD104 [GeForce RTX 4070] (rev a1)")
    assert r.returncode == 0 and r.stdout.split()[1] == "cpu"
    assert "install the NVIDIA driver" in r.stderr and "nvidia.com" in r.stderr


def test_two_cards_get_a_build_that_runs_on_both(tmp_path):
    r = pick(tmp_path, "NVIDIA GeForce RTX 4090, 8.9, 580.95.05\nNVIDIA GeForce GTX 1080 Ti, 6.1, 580.95.05")
    assert r.returncode == 0 and r.stdout.split()[1] == "cu126"
    assert "RTX 4090" in r.stderr and "GTX 1080 Ti" in r.stderr


def test_runs_with_the_oldest_python_the_installers_accept():
    # The installers run it with the system's python3 before any venv exists: no f-string or syntax
    # newer than the language level it claims (3.7), and only the standard library.
    import ast

    tree = ast.parse(PICK.read_text(encoding="utf-8"), feature_version=(3, 7))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "argparse", "glob", "importlib", "os", "re", "subprocess", "sys"}


def fake_torch(site: Path, version: str, cuda: str | None, hip: str | None = None) -> None:
    dist = site / f"torch-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n", encoding="utf-8")
    pkg = site / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('importing torch is not needed')\n", encoding="utf-8")
    (pkg / "version.py").write_text(
        "from typing import Optional\n"
        f"__version__ = '{version}'\ndebug = False\n"
        f"cuda: Optional[str] = {cuda!r}\nhip: Optional[str] = {hip!r}\n", encoding="utf-8")


@pytest.mark.parametrize("version, cuda, hip, expected", [
    ("2.13.0+cu126", "12.6", None, "2.13.0+cu126 cu126"),
    ("2.13.0+cpu", None, None, "2.13.0+cpu cpu"),
    ("2.13.0", "13.0", None, "2.13.0 cu130"),   # PyPI's wheel: no tag, CUDA 13.0 inside
    ("2.13.0", None, None, "2.13.0 cpu"),
    ("2.13.0", None, "6.4.1", "2.13.0 rocm"),
])
def test_installed_build_is_read_without_importing_torch(tmp_path, version, cuda, hip, expected):
    site = tmp_path / "site"
    fake_torch(site, version, cuda, hip)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-S", str(PICK), "--installed"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def test_no_torch_installed(tmp_path):
    r = subprocess.run([sys.executable, "-S", str(PICK), "--installed"], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 1 and r.stdout == ""
