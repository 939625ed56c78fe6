#!/usr/bin/env python3
"""Decisions of the Windows installer (install-windows.ps1), in Python so that they are tested and so that
no path ever passes through the console's code page. Standard library only; runs with any Python 3.7+.

    python win_setup.py probe OUT.json
        Describe the Python running this (path, version, 64-bit, venv, Microsoft Store) and whether
        Patina can use it, with the reason when not. The installer runs this with every candidate
        (py -3.14 … py -3.10, python on PATH); the JSON file is UTF-8, so C:\\Users\\José\\… arrives intact.

    python win_setup.py plan-venv OUT.json --app-dir DIR --local-app-data DIR [--long-paths 0|1] [--venv DIR]
        Where the virtual environment goes. PyTorch's longest file is 171 characters below
        site-packages; Windows refuses paths over 259 characters unless long paths are enabled, so a deep
        app folder gets a short alternative (%LOCALAPPDATA%\\Patina\\venv) or an explanation.

Both write their answer as UTF-8 JSON to OUT (never through the console).
"""

from __future__ import annotations

import json
import ntpath
import os
import sys

SUPPORTED = ((3, 10), (3, 15))  # >= 3.10, < 3.15: what PyTorch and PySide6 publish Windows wheels for
INSTALLER_URL = "https://www.python.org/ftp/python/3.12.10/python-3.12.10-amd64.exe"
MAX_PATH = 259            # longest usable path without long-path support (260 with the terminating NUL)
TORCH_LONGEST = 171       # longest file name below site-packages in a CUDA torch wheel, with folders
LONG_PATHS_HELP = ("or enable long paths (as administrator: Set-ItemProperty "
                   "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\FileSystem LongPathsEnabled 1, then sign out "
                   "and in)")


def describe_this_python() -> dict:
    try:
        import venv  # noqa: F401
        has_venv = True
    except ImportError:
        has_venv = False
    return {
        "executable": sys.executable,
        "version": list(sys.version_info[:3]),
        "bits": 64 if sys.maxsize > 2 ** 32 else 32,
        "has_venv": has_venv,
        "store": "\\windowsapps\\" in sys.executable.lower(),
    }


def python_verdict(info: dict) -> tuple[bool, str]:
    """Whether Patina can build its environment with this Python, and why not."""
    v = tuple(info["version"][:2])
    shown = ".".join(str(p) for p in info["version"])
    if not (SUPPORTED[0] <= v < SUPPORTED[1]):
        return False, (f"Python {shown} at {info['executable']} is not 3.10 to 3.14 (the versions PyTorch "
                       "and PySide6 publish Windows packages for)")
    if info.get("bits") != 64:
        return False, f"Python {shown} at {info['executable']} is 32-bit; PyTorch needs the 64-bit Python"
    if not info.get("has_venv"):
        return False, f"Python {shown} at {info['executable']} has no venv module; reinstall it from python.org"
    # A Microsoft Store Python 3.10-3.14 works: it is the real interpreter (the WindowsApps stub that only
    # opens the Store never gets here, because it cannot run this script).
    return True, f"Python {shown} at {info['executable']}" + (" (Microsoft Store)" if info.get("store") else "")


def no_python_message(reasons: list[str]) -> str:
    lines = ["Patina needs 64-bit Python 3.10 to 3.14."]
    lines += [f"  found: {r}" for r in reasons]
    lines.append(f"Install Python 3.12 with this installer: {INSTALLER_URL}")
    lines.append("(in its first screen tick \"Add python.exe to PATH\"), then run install-windows.bat again.")
    return "\n".join(lines)


def longest_path(venv: str) -> int:
    site = ntpath.join(venv, "Lib", "site-packages") + "\\"
    return len(site) + TORCH_LONGEST


def venv_plan(app_dir: str, local_app_data: str, long_paths: bool, requested: str = "") -> dict:
    """Where the venv goes: {"venv", "ok", "ask", "message", "longest"}. ``ask`` is true when the default
    place is too deep and a short one is offered instead (the installer asks before using it)."""
    default = requested or ntpath.join(app_dir, ".venv")
    n = longest_path(default)
    if long_paths or n <= MAX_PATH:
        return {"venv": default, "ok": True, "ask": False, "longest": n,
                "message": f"environment: {default}"}
    if requested:
        return {"venv": default, "ok": False, "ask": False, "longest": n,
                "message": (f"{default} is too deep: PyTorch's files would reach {n} characters and Windows "
                            f"stops at {MAX_PATH + 1}. Choose a shorter folder, {LONG_PATHS_HELP}.")}
    short = ntpath.join(local_app_data, "Patina", "venv")
    m = longest_path(short)
    if m <= MAX_PATH:
        return {"venv": short, "ok": True, "ask": True, "longest": m,
                "message": (f"The app folder is too deep for PyTorch's files: they would reach {n} characters "
                            f"and Windows stops at {MAX_PATH + 1}. Patina can put its environment in {short} "
                            f"instead (the app stays where it is), {LONG_PATHS_HELP}.")}
    return {"venv": default, "ok": False, "ask": False, "longest": n,
            "message": (f"Both {default} and {short} are too deep for PyTorch's files ({n} and {m} characters; "
                        f"Windows stops at {MAX_PATH + 1}). Move the Patina folder to a short path such as "
                        f"C:\\Patina, {LONG_PATHS_HELP}.")}


def _write(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("out")
    pv = sub.add_parser("plan-venv")
    pv.add_argument("out")
    pv.add_argument("--app-dir", required=True)
    pv.add_argument("--local-app-data", required=True)
    pv.add_argument("--long-paths", default="0")
    pv.add_argument("--venv", default="")
    args = p.parse_args(argv)
    if args.cmd == "probe":
        info = describe_this_python()
        info["ok"], info["reason"] = python_verdict(info)
        _write(args.out, info)
        return 0
    plan = venv_plan(args.app_dir, args.local_app_data, args.long_paths.strip() in ("1", "true", "True"),
                     args.venv)
    _write(args.out, plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
