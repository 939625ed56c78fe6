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
from typing import NoReturn

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


# Commands that end by exiting at once once their files are written: after a training, tearing the interpreter
# down (torch, diffusers, transformers and their thousands of objects) takes seconds and does nothing useful.
FAST_EXIT_COMMANDS = ("train",)


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def console(argv: list[str] | None = None) -> NoReturn:
    """The console entry point (``python -m patina.core``): :func:`main`, then :func:`exit_after`. Library
    code and tests call :func:`main`, which always returns."""
    argv = list(sys.argv[1:] if argv is None else argv)
    exit_after(main(argv), argv)


def exit_after(code: int, argv: list[str]) -> NoReturn:
    """End a console run with *code*. After ``patina train`` (finished, stopped or a handled failure: the
    engine has saved and closed every file) stdout, stderr and the logging handlers are flushed and the
    process ends without the interpreter's teardown; anything else exits the ordinary way (an unexpected
    exception never gets here)."""
    if _command(argv) in FAST_EXIT_COMMANDS:
        import logging
        import os

        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        handlers = [h for lg in loggers for h in getattr(lg, "handlers", ())]
        for stream in (*handlers, sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed stream or a broken pipe: nothing left to flush
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
