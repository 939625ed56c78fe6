"""The ``patina`` command line (headless).

Subcommands are registered by small modules (``patina.core.cli.config``, ``patina.core.cli.dataset``, ...),
each exposing ``register(subparsers)``; a subcommand's handler takes the parsed namespace and returns an
exit code. A :class:`~patina.core.errors.PatinaError` ends the command with its message and exit code 2, never
with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from patina.core import __version__
from patina.core.errors import PatinaError

# Modules that add subcommands. Listed by name so that ``patina --help`` stays fast: each module
# keeps its heavy imports (torch, diffusers) inside the handlers.
COMMAND_MODULES = (
    "patina.core.cli.config",
    "patina.core.cli.dataset",
    "patina.core.cli.train",
    "patina.core.cli.demo",
    "patina.core.cli.lora",
    "patina.core.cli.queue",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patina",
        description="Train Stable Diffusion LoRAs on your own GPU. Run without arguments to open the window.",
    )
    parser.add_argument("--version", action="version", version=f"patina {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except PatinaError as exc:
        print(f"patina: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file-system mistake the command did not foresee: one line, no traceback
        from patina.core.train.preflight import os_error_text

        print(f"patina: {os_error_text(exc, doing='use')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("patina: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
