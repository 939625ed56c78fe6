"""Start the window: ``patina`` (no arguments) or ``patina --screenshot PATH [--tab NAME] [--size WxH]``.

``--screenshot`` renders the window offscreen (no display needed), writes a PNG and exits 0. ``--tab``
selects a tab (dataset, training, monitor) or a Training page (model, folders, metadata, basic, advanced,
samples).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_T0 = time.perf_counter()


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # no SystemExit from inside run_app
        raise _ArgError(message)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a size; write it as WIDTHxHEIGHT, e.g. 1280x800') from None
    if not (320 <= w <= 8192 and 240 <= h <= 8192):
        raise argparse.ArgumentTypeError(f'size "{text}" is out of range (320x240 to 8192x8192)')
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="patina", description="Open Patina's window (or render it to a PNG with --screenshot).")
    p.add_argument("--gui", action="store_true", help="open the window (the default without arguments)")
    p.add_argument("--screenshot", metavar="PATH", help="render the window offscreen to this PNG and exit")
    p.add_argument("--tab", default="", help="tab or Training page to show: dataset, training, monitor, queue, "
                                              "test, tools, model, folders, metadata, basic, advanced, samples")
    p.add_argument("--size", type=_size, default=(1280, 800), help="window size WIDTHxHEIGHT (default 1280x800)")
    return p


def make_application(argv: list[str] | None = None):
    """The QApplication (created once), with Patina's name, icon and a locale-independent number format."""
    from PySide6.QtCore import QLocale
    from PySide6.QtWidgets import QApplication

    import patina.gui.qtfix  # noqa: F401 - PySide6 6.12 refcount guard, before any Qt calls from Python

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "patina"] + list(argv or []))
    app.setApplicationName("Patina")
    app.setOrganizationName("Patina")
    app.setApplicationDisplayName("Patina")
    app.setDesktopFileName("patina")
    QLocale.setDefault(QLocale.c())  # "0.0001" everywhere, whatever the system's decimal separator
    return app


def render_window(window, path: str, size: tuple[int, int]) -> None:
    """Lay out *window* at *size*, paint it and save a PNG of exactly that size (in logical pixels)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    window.resize(*size)
    window.show()
    for _ in range(5):
        QApplication.processEvents()
    pix = window.grab()
    if pix.size().width() != size[0] or pix.size().height() != size[1]:
        pix = pix.scaled(size[0], size[1], Qt.AspectRatioMode.IgnoreAspectRatio,
                         Qt.TransformationMode.SmoothTransformation)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # QPixmap.save writes in place; go through a temporary file so a half-written PNG never remains.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.png")
    if not pix.save(tmp, "PNG"):
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)


def run_app(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except _ArgError as exc:
        print(f"patina: {exc}", file=sys.stderr)
        return 2
    if args.screenshot:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = make_application()
    from patina.gui.main_window import MainWindow  # after QApplication: keeps the import cost measurable

    window = MainWindow(restore_session=not args.screenshot)
    if args.tab:
        try:
            window.select_tab(args.tab)
        except ValueError:
            print(f'patina: unknown tab "{args.tab}"; use dataset, training, monitor, model, folders, metadata, '
                  "basic, advanced or samples", file=sys.stderr)
            return 2
    if args.screenshot:
        try:
            render_window(window, args.screenshot, args.size)
        except OSError as exc:
            print(f"patina: {exc}", file=sys.stderr)
            return 1
        if os.environ.get("PATINA_STARTUP_TIME"):
            print(f"startup-to-rendered: {time.perf_counter() - _T0:.3f} s", file=sys.stderr)
        window.hide()
        return 0
    if argv and args.size != (1280, 800):
        window.resize(*args.size)
    window.show()
    return app.exec()


def run_demo(config_path: str | os.PathLike) -> int:
    """Open the window with a demo folder's config (``patina.core.demo.setup.prepare``) loaded and its training
    started, as Help > Try the demo does; returns when the window is closed (0). Call it through
    :func:`patina.gui.launcher.run_demo`, which first checks that a window can open."""
    app = make_application()
    from PySide6.QtCore import QTimer

    from patina.gui.main_window import MainWindow

    window = MainWindow(probe_device=False)   # the demo's config replaces a new config's machine defaults
    window.show()
    # After the window is up: the plan dialog and any message open over it.
    QTimer.singleShot(0, lambda: window.start_demo(config_path))
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_app())
