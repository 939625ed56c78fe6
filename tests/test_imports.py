"""Every import of Patina's own modules resolves, including imports inside functions (which only fail when
that code path runs — e.g. after a module moves)."""

import ast
import importlib
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_patina_import_names_something_that_exists():
    problems = []
    files = [p for d in ("core", "gui", "scripts", "tests") for p in (ROOT / d).rglob("*.py")]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: resolve within the package
                rel = f.relative_to(ROOT).parent.as_posix().replace("/", ".")
                node.module = importlib.util.resolve_name("." * node.level + (node.module or ""), f"patina.{rel}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("patina"):
                try:
                    mod = importlib.import_module(node.module)
                except ImportError as exc:
                    problems.append(f"{f.relative_to(ROOT)}:{node.lineno}: {exc}")
                    continue
                for alias in node.names:
                    if alias.name == "*" or hasattr(mod, alias.name):
                        continue
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        problems.append(f"{f.relative_to(ROOT)}:{node.lineno}: {node.module} has no {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("patina"):
                        try:
                            importlib.import_module(alias.name)
                        except ImportError as exc:
                            problems.append(f"{f.relative_to(ROOT)}:{node.lineno}: {exc}")
    assert not problems, "\n".join(problems)
