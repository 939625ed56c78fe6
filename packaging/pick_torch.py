#!/usr/bin/env python3
"""Which PyTorch build fits this machine: the CUDA build for the NVIDIA card and driver, the CPU build
without one, or a clear refusal. Both installers run it (standard library only, any Python 3.7+).

    python3 pick_torch.py [--platform linux|windows] [--gpu-name NAME ...]
    <venv python> pick_torch.py --installed      (prints "<torch version> <build>", e.g. "2.13.0 cu130")

It runs ``nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader`` itself.
stdout gets one line, ``<index-url> <build>`` (e.g. ``https://download.pytorch.org/whl/cu130 cu130``);
stderr gets what was found and why that build was picked. Exit status: 0 a build was picked, 3 the
machine has an NVIDIA card that no current build can use (driver too old, card too old); the message
says what to do. ``--gpu-name`` passes other display adapters (from lspci or Windows) so that an AMD or
Intel card gets the right message; on Linux, /sys/class/drm is read for that as well.

The builds (PyTorch's CUDA support matrix for releases 2.12 to 2.14, Linux x86-64 and Windows; a card
also runs code built for a lower minor version of its own major, e.g. 8.9 runs 8.6 and 6.1 runs 6.0):

    cu130  CUDA 13.0  Turing 7.5, Ampere 8.0/8.6, Hopper 9.0, Blackwell 10.0/12.0   driver >= 580
    cu126  CUDA 12.6  Maxwell 5.0, Pascal 6.0, Volta 7.0, Turing 7.5, Ampere, Hopper  driver >= 525
           (legacy build; PyTorch 2.15 stops publishing it, so pip installs torch 2.14 from it)
    cu128  CUDA 12.8  Turing 7.5 to Blackwell 12.0                                   driver >= 525
           (published up to torch 2.11: only for RTX 50 cards whose driver is older than 580)
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys

INDEX = "https://download.pytorch.org/whl/"

# name, CUDA version, architectures (compute capabilities with kernels), minimum driver (major, minor).
# Minimum drivers are CUDA's minor-version-compatibility floors: 525 for any CUDA 12.x, 580 for 13.x.
BUILDS = [
    ("cu130", "13.0", [(7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)], (580, 0)),
    ("cu126", "12.6", [(5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)], (525, 60)),
    ("cu128", "12.8", [(7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)], (525, 60)),
]
BUILD_NOTES = {
    "cu126": "the legacy CUDA 12.6 build (pip installs the newest torch published for it)",
    "cu128": "the CUDA 12.8 build (published up to torch 2.11; update the driver to 580+ for newer torch)",
}
VENDORS = {"0x10de": "NVIDIA", "0x1002": "AMD", "0x8086": "Intel"}
FAMILIES = {(5, 0): "Maxwell", (6, 0): "Pascal", (7, 0): "Volta", (7, 5): "Turing", (8, 0): "Ampere",
            (8, 9): "Ada Lovelace", (9, 0): "Hopper", (10, 0): "Blackwell", (12, 0): "Blackwell"}
DRIVER_URL = "https://www.nvidia.com/Download/index.aspx"
REFUSED = 3


class Gpu:
    def __init__(self, name: str, cc: tuple[int, int] | None, driver_text: str):
        self.name, self.cc = name, cc
        self.driver_text = driver_text.strip()
        self.driver = _version(self.driver_text)

    def describe(self) -> str:
        cc = f"compute capability {self.cc[0]}.{self.cc[1]}" if self.cc else "compute capability unknown"
        drv = f"driver {self.driver_text}" if self.driver else "driver version unknown"
        return f"{self.name} ({cc}, {drv})"


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in text.strip().split("."))
    except ValueError:
        return None


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Rows of ``--query-gpu=name,compute_cap,driver_version --format=csv,noheader``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3 or not parts[0]:
            continue
        cc = _version(parts[1])
        gpus.append(Gpu(parts[0], (cc[0], cc[1]) if cc and len(cc) >= 2 else None, parts[2]))
    return gpus


def query_nvidia_smi() -> tuple[list[Gpu], str]:
    """The NVIDIA GPUs nvidia-smi reports, and a note when it is missing or failed."""
    base = ["nvidia-smi", "--format=csv,noheader"]
    try:
        out = subprocess.run(base + ["--query-gpu=name,compute_cap,driver_version"], capture_output=True,
                             text=True, timeout=60)
    except FileNotFoundError:
        return [], "nvidia-smi not found"
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"nvidia-smi failed ({exc})"
    if out.returncode == 0:
        return parse_nvidia_smi(out.stdout), ""
    # Drivers older than 510 do not know the compute_cap field; ask for the driver only.
    try:
        old = subprocess.run(base + ["--query-gpu=name,driver_version"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        old = None
    if old is not None and old.returncode == 0:
        rows = [ln.rsplit(",", 1) for ln in old.stdout.splitlines() if "," in ln]
        return [Gpu(n.strip(), None, d) for n, d in rows], ""
    msg = (out.stderr or out.stdout).strip().splitlines()
    return [], f"nvidia-smi failed: {msg[0] if msg else 'exit code %d' % out.returncode}"


def linux_display_vendors(root: str = "/sys/class/drm") -> list[str]:
    """Vendors of the display adapters Linux knows (AMD, Intel, NVIDIA), from sysfs."""
    found = []
    for path in sorted(glob.glob(os.path.join(root, "card*", "device", "vendor"))):
        try:
            with open(path, encoding="ascii") as fh:
                vendor = VENDORS.get(fh.read().strip().lower())
        except OSError:
            continue
        if vendor and vendor not in found:
            found.append(vendor)
    return found


def runs_on(build, cc: tuple[int, int]) -> bool:
    """A card runs kernels built for its own major version and a minor version at or below its own."""
    return any(a[0] == cc[0] and a[1] <= cc[1] for a in build[2])


def driver_ok(build, driver: tuple[int, ...] | None) -> bool:
    return driver is not None and tuple(driver[:2]) >= build[3]


def _fmt(v) -> str:
    """(580, 0) -> "580", (525, 60) -> "525.60", (8, 9) -> "8.9" (compute capabilities keep their ".0")."""
    if len(v) == 2 and v[0] >= 100 and v[1] == 0:
        return str(v[0])
    return ".".join(str(p) for p in v)


def choose(gpus: list[Gpu], other_vendors: list[str], platform: str) -> tuple[int, str, str, list[str]]:
    """(status, index url, build name, lines to show). status 0 = use this build, REFUSED = stop."""
    cpu = (0, INDEX + "cpu", "cpu")
    if not gpus:
        lines = []
        amd = [v for v in other_vendors if v in ("AMD", "Intel")]
        if amd:
            lines.append(f"GPU:     {' and '.join(amd)} graphics, no NVIDIA card. Patina trains on NVIDIA GPUs "
                         "only (CUDA); AMD ROCm and Intel GPUs are not supported.")
        else:
            lines.append("GPU:     no NVIDIA GPU found (nvidia-smi is missing or lists none).")
        lines.append("PyTorch: the CPU build. Training on the CPU works but is very slow (hours for what a GPU "
                     "does in minutes).")
        return cpu + (lines,)
    first = gpus[0]
    lines = [f"GPU:     {g.describe()}" for g in gpus]
    override = ("To install the CPU build instead (very slow training), run the installer with "
                + ("PATINA_TORCH_INDEX=https://download.pytorch.org/whl/cpu" if platform == "linux"
                   else "-TorchIndex https://download.pytorch.org/whl/cpu") + ".")
    if first.driver is None:
        return (REFUSED, "", "", lines + ["Could not read the NVIDIA driver version from nvidia-smi. Install or "
                                          f"repair the NVIDIA driver ({DRIVER_URL}), then run this again.",
                                          override])
    if first.cc is None:
        # Only drivers older than 510 lack compute_cap; every build needs 525 or newer.
        return (REFUSED, "", "", lines + [f"NVIDIA driver {first.driver_text} is too old for any current "
                                          "PyTorch build (525 or newer is needed; 580 or newer for the newest "
                                          f"builds). Update the driver ({DRIVER_URL}), then run this again.",
                                          override])
    usable = [g for g in gpus if g.cc is not None]
    fits_card = [b for b in BUILDS if runs_on(b, first.cc)]
    if not fits_card:
        return (REFUSED, "", "", lines + [
            f"{first.name} has compute capability {_fmt(first.cc)}; current PyTorch CUDA builds need 5.0 "
            "(Maxwell, GTX 900) or newer, and builds for 5.0 to 7.0 only until PyTorch 2.14. This card cannot "
            "train with PyTorch's CUDA builds.", override])
    fits = [b for b in fits_card if driver_ok(b, first.driver)]
    if not fits:
        need = min(b[3] for b in fits_card)
        best = fits_card[0]
        return (REFUSED, "", "", lines + [
            f"NVIDIA driver {first.driver_text} is too old: the PyTorch build for this card ({best[0]}, CUDA "
            f"{best[1]}) needs driver {_fmt(best[3])} or newer"
            + (f" (at least {_fmt(need)} for an older build)" if need != best[3] else "")
            + f". Update the NVIDIA driver ({DRIVER_URL}), then run this again.", override])
    # Prefer a build that runs on every card; the first card is the one training uses by default.
    all_cards = [b for b in fits if all(runs_on(b, g.cc) for g in usable)]
    build = (all_cards or fits)[0]
    arch = ([v for k, v in sorted(FAMILIES.items()) if k[0] == first.cc[0] and k[1] <= first.cc[1]] or [""])[-1]
    why = (f"PyTorch: {build[0]} (CUDA {build[1]}), which has kernels for compute capability {_fmt(first.cc)}"
           + (f" ({arch})" if arch else "") + f" and runs with driver {first.driver_text}")
    note = BUILD_NOTES.get(build[0])
    if build is not BUILDS[0]:
        newest = BUILDS[0]
        if runs_on(newest, first.cc):
            why += (f"; {newest[0]} would need driver {_fmt(newest[3])}+ (update the driver to get it, then run "
                    "this again)")
        else:
            why += f"; {newest[0]} has no kernels for this card"
    lines.append(why + ".")
    if note:
        lines.append(f"         This is {note}.")
    skipped = [g for g in usable if not runs_on(build, g.cc)]
    if skipped:
        lines.append("Note:    " + ", ".join(g.name for g in skipped) + " cannot run this build; Patina will "
                     "use the first GPU.")
    return (0, INDEX + build[0], build[0], lines)


def installed_torch() -> tuple[str, str] | None:
    """The torch installed for the Python running this, and its build ("cu130", "cpu", "rocm6.4", "" when
    unknown), read from its metadata and torch/version.py without importing torch (which takes seconds).
    Wheels from download.pytorch.org say the build in their version ("2.13.0+cu130"); PyPI's do not."""
    import importlib.util

    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # Python 3.7
        return None
    try:
        ver = version("torch")
    except PackageNotFoundError:
        return None
    if "+" in ver:
        return ver, ver.split("+", 1)[1]
    try:
        spec = importlib.util.find_spec("torch")
        folder = list(spec.submodule_search_locations)[0]
        with open(os.path.join(folder, "version.py"), encoding="utf-8") as fh:
            text = fh.read()
    except (ImportError, AttributeError, IndexError, TypeError, OSError):
        return ver, ""
    fields = dict(re.findall(r"^(cuda|hip)\b[^=\n]*=\s*'?([^'\n]*)'?\s*$", text, re.M))
    cuda, hip = fields.get("cuda", ""), fields.get("hip", "")
    if cuda and cuda != "None":
        return ver, "cu" + "".join(cuda.split(".")[:2])
    if hip and hip != "None":
        return ver, "rocm"
    if cuda == "None":
        return ver, "cpu"
    return ver, ""


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--installed"]:
        found = installed_torch()
        if found is None:
            return 1
        print(f"{found[0]} {found[1]}".strip())
        return 0
    p = argparse.ArgumentParser(description="Pick the PyTorch build for this machine.")
    p.add_argument("--platform", choices=("linux", "windows"),
                   default="windows" if sys.platform == "win32" else "linux")
    p.add_argument("--gpu-name", action="append", default=[],
                   help="name of a display adapter found by other means (repeatable)")
    args = p.parse_args(argv)
    gpus, note = query_nvidia_smi()
    vendors = linux_display_vendors() if args.platform == "linux" else []
    for name in args.gpu_name:
        for pattern, vendor in ((r"\b(amd|ati|radeon)\b", "AMD"), (r"\bintel\b", "Intel"), (r"\bnvidia\b", "NVIDIA")):
            if re.search(pattern, name, re.IGNORECASE) and vendor not in vendors:
                vendors.append(vendor)
    status, url, build, lines = choose(gpus, vendors, args.platform)
    if note and not gpus and "NVIDIA" in vendors:
        lines.insert(0, f"GPU:     an NVIDIA card is present but {note}; install the NVIDIA driver "
                        f"({DRIVER_URL}) to train on it.")
    for line in lines:
        print(line, file=sys.stderr)
    if status == 0:
        print(f"{url} {build}")
    return status


if __name__ == "__main__":
    sys.exit(main())
