"""The layering rules, checked on the source: ``core/`` never imports Qt, so that the CLI and the engine run
without a display, and the Dataset tab's caption and listing logic is testable without widgets."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_core_never_imports_qt_or_the_gui():
    bad = {}
    for path in sorted((ROOT / "core").rglob("*.py")):
        hits = sorted(n for n in _imports(path)
                      if n.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph") or n.startswith("patina.gui"))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    assert not bad, bad
