"""Where Patina keeps per-user files (user presets, GUI state, caches)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "Patina"


def user_config_dir() -> Path:
    """%APPDATA%\\Patina on Windows, $XDG_CONFIG_HOME/patina (~/.config/patina) elsewhere.

    ``PATINA_CONFIG_DIR`` overrides both (tests, portable installs)."""
    override = os.environ.get("PATINA_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / APP
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP.lower()


def user_cache_dir() -> Path:
    override = os.environ.get("PATINA_CACHE_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / APP.lower()


def user_presets_dir() -> Path:
    return user_config_dir() / "presets"


def resources_dir() -> Path:
    """The ``resources/`` folder shipped next to the packages."""
    here = Path(__file__).resolve().parent.parent / "resources"
    return here
