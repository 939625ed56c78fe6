"""Entry point of the ``patina`` command.

With a subcommand it runs the headless CLI (``patina.core.cli``); with no arguments, or with
``--screenshot``, it opens the window. Qt is imported only when the window is wanted, so
``patina train`` works on a machine without a display.

Before Qt is imported, :mod:`patina.gui.qt_preflight` checks that a window can open (a display, the platform
plugin's system libraries): Qt itself would abort the process with one unhelpful line. When the window
cannot start, the reason goes to the terminal, to a log file in the user's state folder
(``~/.local/state/patina/launcher.log``, ``%LOCALAPPDATA%\\Patina\\launcher.log``) and, when Patina was
started from a menu or shortcut (no terminal), to a desktop notification or a message box.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback
from typing import NoReturn

LOG_NAME = "launcher.log"
LOG_KEEP_BYTES = 256 * 1024


def _wants_gui(argv: list[str]) -> bool:
    return not argv or argv[0].startswith("--screenshot") or argv[0] in ("--tab", "--size", "--gui")


def log_path():
    from patina.core.paths import user_state_dir

    return user_state_dir() / LOG_NAME


def write_log(text: str) -> str | None:
    """Append *text* (with a time stamp) to the launcher log, keeping its newest part; the file is
    replaced atomically. Returns the log's path, or None when it could not be written."""
    from patina.core.atomic import atomic_write_text

    path = log_path()
    try:
        old = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        old = ""
    entry = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}  patina {' '.join(sys.argv[1:])}\n"
             f"Python {sys.version.split()[0]} at {sys.executable}\n{text.rstrip()}\n")
    keep = old[-LOG_KEEP_BYTES:]
    try:
        atomic_write_text(path, keep + entry)
    except OSError:
        return None
    return str(path)


def _interactive() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def notify(title: str, body: str) -> bool:
    """Show *body* outside a terminal: a message box on Windows, a desktop notification on Linux
    (notify-send, zenity, kdialog or xmessage, the first one found). True when one was shown."""
    if sys.platform == "win32":
        try:
            import ctypes

            ctypes.windll.user32.MessageBoxW(None, body, title, 0x10)  # MB_ICONERROR
            return True
        except Exception:  # noqa: BLE001 - nothing else can be shown
            return False
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    for cmd in (["notify-send", "--urgency=critical", "--app-name=Patina", title, body],
                ["zenity", "--error", f"--title={title}", f"--text={body}"],
                ["kdialog", "--title", title, "--error", body],
                ["xmessage", "-center", f"{title}\n\n{body}"]):
        exe = shutil.which(cmd[0])
        if not exe or (cmd[0] != "notify-send" and not has_display):
            continue
        try:
            proc = subprocess.Popen([exe] + cmd[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            rc = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return True  # a dialog is up, waiting for the user; it outlives this process
        except OSError:
            continue
        if rc == 0:
            return True
    return False


def report_startup_failure(text: str) -> None:
    """Say why the window could not start: terminal, log file, and a notification when there is no
    terminal to read it in."""
    logged = write_log(text)
    where = f"Details: {logged}" if logged else ""
    if sys.stderr is not None:
        print(text + (f"\n({where})" if where else ""), file=sys.stderr)
    if not _interactive():
        body = text if len(text) < 900 else text[:900] + "…"
        notify("Patina could not start", body + (f"\n\n{where}" if where else ""))


def _start_window(start, *, screenshot: bool = False) -> int:
    """Check that a window can open, then run ``start()`` (which imports Qt and runs the window); every
    failure on the way is reported (terminal, log file, notification) and gives exit status 1."""
    from patina.gui.qt_preflight import check

    problem = check(screenshot=screenshot)
    if problem is not None:
        report_startup_failure(problem.text())
        return 1
    try:
        return start()
    except ModuleNotFoundError as exc:
        report_startup_failure(f"patina: the window could not start: {exc}.\nRun the installer again to "
                               f"repair the environment.\n\n{traceback.format_exc()}")
        return 1
    except Exception as exc:  # noqa: BLE001 - anything that stops the window from starting is reported
        report_startup_failure(f"patina: the window could not start: {type(exc).__name__}: {exc}\n\n"
                               f"{traceback.format_exc()}")
        return 1


def _start_gui(argv: list[str]) -> int:
    def start() -> int:
        from patina.gui.app import run_app  # lazy on purpose: Qt only when the window is wanted

        return run_app(argv)

    return _start_window(start, screenshot=any(a.startswith("--screenshot") for a in argv))


def run_demo(config_path) -> int:
    """``patina demo``: open the window with the demo folder's config *config_path* loaded and its training
    started (:func:`patina.gui.app.run_demo`). Returns 1 with the reason reported when no window can open,
    else the window's exit status when it is closed."""
    def start() -> int:
        from patina.gui.app import run_demo as run_demo_window

        return run_demo_window(config_path)

    return _start_window(start)


def _demo_in_window(argv: list[str]) -> bool:
    """``patina demo`` opens the window unless told --headless (or asking for help) or no window can open
    (no display, or an offscreen Qt platform: a window nobody sees would train with no one watching)."""
    if argv[:1] != ["demo"] or any(a in ("--headless", "-h", "--help") for a in argv[1:]):
        return False
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal"):
        return False
    from patina.gui.qt_preflight import check

    problem = check(screenshot=False)
    if problem is not None:
        print(f"{problem.summary} The demo trains in the terminal instead.", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants_gui(argv):
        return _start_gui(argv)
    if _demo_in_window(argv):
        from patina.core.cli import build_parser
        from patina.core.cli.demo import prepare_from_args
        from patina.core.errors import PatinaError

        args = build_parser().parse_args(argv)
        try:
            folder = prepare_from_args(args)
        except PatinaError as exc:
            print(f"patina: {exc}", file=sys.stderr)
            return exc.exit_code
        return run_demo(folder.config_path)
    from patina.core.cli import main as cli_main
    return cli_main(argv)


def console() -> NoReturn:
    """The ``patina`` console script: :func:`main`, then exit (``patina train`` without the interpreter's
    teardown, see patina.core.cli.exit_after). Tests call :func:`main`, which returns."""
    argv = sys.argv[1:]
    code = main(argv)
    if _wants_gui(argv):
        sys.exit(code)
    from patina.core.cli import exit_after

    exit_after(code, argv)


def main_gui() -> int:
    return main([])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
