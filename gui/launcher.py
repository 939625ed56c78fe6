"""Entry point of the ``patina`` command.

With a subcommand it runs the headless CLI (``core.cli``); with no arguments, or with
``--screenshot``, it opens the window. Qt is imported only when the window is wanted, so
``patina train`` works on a machine without a display.
"""

from __future__ import annotations

import sys


def _wants_gui(argv: list[str]) -> bool:
    return not argv or argv[0].startswith("--screenshot") or argv[0] in ("--tab", "--size", "--gui")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants_gui(argv):
        try:
            from gui.app import run_app  # noqa: WPS433 (lazy on purpose)
        except ModuleNotFoundError as exc:
            if exc.name not in ("gui.app",):
                raise
            from core.cli import main as cli_main
            return cli_main(argv)
        return run_app(argv)
    from core.cli import main as cli_main
    return cli_main(argv)


def main_gui() -> int:
    return main([])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
