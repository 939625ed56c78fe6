"""The window's memory between sessions: last config file, recent files, geometry, current tab and page.

Kept as a small JSON file in :func:`patina.core.paths.user_config_dir` (``gui-state.json``), written atomically.
A missing or damaged file just means "no memory": the app starts with defaults.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from patina.core.atomic import atomic_write_text
from patina.core.paths import user_config_dir

STATE_FILE = "gui-state.json"
MAX_RECENT = 10


@dataclass
class GuiState:
    last_config: str = ""                 # the config file open when the app was closed ("" = untitled)
    recent: list[str] = field(default_factory=list)
    geometry: str = ""                    # base64 of QMainWindow.saveGeometry()
    tab: str = ""                         # "dataset" | "training" | "monitor"
    page: str = ""                        # Training tab page key ("model", "basic", ...)
    last_dir: str = ""                    # where the last file dialog was

    def add_recent(self, path: str | os.PathLike) -> None:
        p = str(Path(path).resolve()) if str(path) else ""
        if not p:
            return
        self.recent = [p] + [r for r in self.recent if r != p]
        del self.recent[MAX_RECENT:]

    def remove_recent(self, path: str) -> None:
        self.recent = [r for r in self.recent if r != path]


def state_path() -> Path:
    return user_config_dir() / STATE_FILE


def load_state() -> GuiState:
    try:
        data = json.loads(state_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return GuiState()
    if not isinstance(data, dict):
        return GuiState()
    st = GuiState()
    for key, default in asdict(GuiState()).items():
        value = data.get(key, default)
        if isinstance(value, type(default)):
            setattr(st, key, value)
    st.recent = [r for r in st.recent if isinstance(r, str) and r][:MAX_RECENT]
    return st


def save_state(state: GuiState) -> None:
    """Best effort: the app must close even if the config folder is not writable."""
    try:
        atomic_write_text(state_path(), json.dumps(asdict(state), indent=2, ensure_ascii=False) + "\n")
    except OSError:
        pass
