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


def user_data_dir() -> Path:
    """%LOCALAPPDATA%\\Patina on Windows, $XDG_DATA_HOME/patina (~/.local/share/patina) elsewhere.

    Holds what the app keeps for the user, such as LoRAs it could not save where asked.
    ``PATINA_DATA_DIR`` overrides both (tests, portable installs)."""
    override = os.environ.get("PATINA_DATA_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP.lower()


def rescue_dir() -> Path:
    """Where a LoRA (and its training state) goes when it cannot be saved in the output folder."""
    return user_data_dir() / "rescued"


def user_presets_dir() -> Path:
    return user_config_dir() / "presets"


def resources_dir() -> Path:
    """The ``resources/`` folder shipped next to the packages."""
    here = Path(__file__).resolve().parent.parent / "resources"
    return here


def user_state_dir() -> Path:
    """Logs and other state worth keeping between runs: %LOCALAPPDATA%\\Patina on Windows,
    $XDG_STATE_HOME/patina (~/.local/state/patina) elsewhere. ``PATINA_STATE_DIR`` overrides both."""
    override = os.environ.get("PATINA_STATE_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / APP.lower()
