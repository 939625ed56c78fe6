"""Where Patina keeps per-user files (user presets, GUI state, caches, logs, rescued LoRAs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "Patina"


def _user_dir(override_var: str, win_var: str, win_default: tuple[str, ...], xdg_var: str,
              xdg_default: tuple[str, ...], win_sub: tuple[str, ...] = ()) -> Path:
    """One per-user folder: *override_var* wins (tests, portable installs); on Windows *win_var* (or its usual
    place under the home folder) / Patina; elsewhere the XDG variable (or its default) / patina."""
    override = os.environ.get(override_var)
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get(win_var) or str(Path.home().joinpath(*win_default))
        return Path(base).joinpath(APP, *win_sub)
    base = os.environ.get(xdg_var) or str(Path.home().joinpath(*xdg_default))
    return Path(base) / APP.lower()


def user_config_dir() -> Path:
    """%APPDATA%\\Patina on Windows, $XDG_CONFIG_HOME/patina (~/.config/patina) elsewhere;
    ``PATINA_CONFIG_DIR`` overrides both."""
    return _user_dir("PATINA_CONFIG_DIR", "APPDATA", ("AppData", "Roaming"), "XDG_CONFIG_HOME", (".config",))


def user_cache_dir() -> Path:
    """%LOCALAPPDATA%\\Patina\\cache on Windows, $XDG_CACHE_HOME/patina elsewhere; ``PATINA_CACHE_DIR``."""
    return _user_dir("PATINA_CACHE_DIR", "LOCALAPPDATA", ("AppData", "Local"), "XDG_CACHE_HOME", (".cache",),
                     win_sub=("cache",))


def user_data_dir() -> Path:
    """%LOCALAPPDATA%\\Patina on Windows, $XDG_DATA_HOME/patina (~/.local/share/patina) elsewhere: what the app
    keeps for the user, such as LoRAs it could not save where asked. ``PATINA_DATA_DIR`` overrides both."""
    return _user_dir("PATINA_DATA_DIR", "LOCALAPPDATA", ("AppData", "Local"), "XDG_DATA_HOME", (".local", "share"))


def user_state_dir() -> Path:
    """Logs and other state worth keeping between runs: %LOCALAPPDATA%\\Patina on Windows,
    $XDG_STATE_HOME/patina (~/.local/state/patina) elsewhere. ``PATINA_STATE_DIR`` overrides both."""
    return _user_dir("PATINA_STATE_DIR", "LOCALAPPDATA", ("AppData", "Local"), "XDG_STATE_HOME", (".local", "state"))


def rescue_dir() -> Path:
    """Where a LoRA (and its training state) goes when it cannot be saved in the output folder."""
    return user_data_dir() / "rescued"


def user_presets_dir() -> Path:
    return user_config_dir() / "presets"


def resources_dir() -> Path:
    """The ``resources/`` folder shipped next to the packages."""
    return Path(__file__).resolve().parent.parent / "resources"
