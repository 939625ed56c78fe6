"""Can Qt open a window here?  Checked before Qt is imported, with the standard library only.

Without a display, or with a system library of Qt's platform plugin missing, Qt prints one line and
aborts the process (exit 134), which a desktop menu entry turns into "nothing happens". This module finds
those cases first: which display Qt would use (``QT_QPA_PLATFORM``, ``WAYLAND_DISPLAY``, ``DISPLAY``), whether
that display answers, and which shared libraries of the platform plugin (``libqxcb.so`` …) ``ldd`` cannot
find, mapped to the package that installs them on Debian/Ubuntu, Fedora and Arch.

It must not import PySide6 (or torch): it runs before either. ``python -m patina.gui.qt_preflight --libraries``
is the check ``packaging/install-linux.sh`` runs after installing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

# Platforms that need no display server.
HEADLESS_PLATFORMS = {"offscreen", "minimal", "vnc", "linuxfb", "eglfs", "minimalegl", "vkkhrdisplay"}

# soname -> (Debian/Ubuntu, Fedora, Arch) package. Qt 6's X11 plugin (libqxcb.so and the Qt libraries it
# loads) needs these; the xcb-util ones are missing from many minimal and older desktop installs.
PACKAGES: dict[str, tuple[str, str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util", "xcb-util"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb", "libx11"),
    "libX11.so.6": ("libx11-6", "libX11", "libx11"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon", "libxkbcommon"),
    "libSM.so.6": ("libsm6", "libSM", "libsm"),
    "libICE.so.6": ("libice6", "libICE", "libice"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl", "libglvnd"),
    "libGL.so.1": ("libgl1", "libglvnd-glx", "libglvnd"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl", "libglvnd"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx", "libglvnd"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype", "freetype2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs", "dbus"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2", "glib2"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client", "wayland"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor", "wayland"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl", "wayland"),
}
FAMILIES = ("apt", "dnf", "pacman")


class Problem:
    """Why the window cannot open: a one-line summary and the lines that explain what to do."""

    def __init__(self, summary: str, details: list[str], missing: list[str] | None = None):
        self.summary = summary
        self.details = details
        self.missing = list(missing or [])

    def text(self) -> str:
        return "\n".join([self.summary] + self.details)


def plugin_dir() -> Path | None:
    """PySide6's ``Qt/plugins/platforms`` folder, found without importing PySide6."""
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms"


def missing_libraries(library: Path, ldd: str | None = None) -> list[str] | None:
    """Sonames that the dynamic loader cannot find for *library* (``ldd``'s "=> not found"), in order,
    without repeats. ``None`` when ``ldd`` is not available or fails (then nothing can be said)."""
    ldd = ldd or shutil.which("ldd")
    if not ldd:
        return None
    try:
        out = subprocess.run([ldd, str(library)], capture_output=True, text=True, timeout=20,
                             errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    missing: list[str] = []
    for line in out.stdout.splitlines() + out.stderr.splitlines():
        m = re.match(r"\s*(\S+)\s*=>\s*not found", line)
        if m and m.group(1) not in missing:
            missing.append(m.group(1))
    if not missing and out.returncode != 0:
        return None
    return missing


def package_family(os_release: str | None = None) -> str | None:
    """"apt", "dnf" or "pacman" from /etc/os-release (ID and ID_LIKE), or None when unknown."""
    if os_release is None:
        for path in ("/etc/os-release", "/usr/lib/os-release"):
            try:
                os_release = Path(path).read_text(encoding="utf-8", errors="replace")
                break
            except OSError:
                continue
        else:
            return None
    ids: list[str] = []
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("ID", "ID_LIKE"):
            ids += value.strip().strip("\"'").lower().split()
    for ident in ids:
        if ident in ("debian", "ubuntu", "linuxmint", "pop", "elementary", "zorin", "raspbian"):
            return "apt"
        if ident in ("fedora", "rhel", "centos", "rocky", "almalinux", "nobara"):
            return "dnf"
        if ident in ("arch", "manjaro", "endeavouros", "cachyos", "garuda"):
            return "pacman"
    return None


def install_commands(sonames: list[str], family: str | None) -> list[str]:
    """The command line(s) that install the packages providing *sonames*: the one for *family*, or one
    per family when the distribution is unknown. Empty when none of the sonames is a known system library."""
    families = [family] if family in FAMILIES else list(FAMILIES)
    lines = []
    for fam in families:
        col = FAMILIES.index(fam)
        pkgs: list[str] = []
        for so in sonames:
            pkg = PACKAGES.get(so)
            if pkg and pkg[col] not in pkgs:
                pkgs.append(pkg[col])
        if not pkgs:
            continue
        verb = {"apt": "sudo apt install", "dnf": "sudo dnf install", "pacman": "sudo pacman -S --needed"}[fam]
        lines.append(f"{verb} {' '.join(pkgs)}")
    return lines


def library_problem(plugin: Path, what: str, family: str | None = None) -> Problem | None:
    """A Problem when *plugin* (a Qt platform plugin) has libraries the loader cannot find."""
    if not plugin.is_file():
        return Problem(f"patina: Qt's {what} plugin is missing ({plugin}).",
                       ["The PySide6 installation is incomplete: run the installer again."])
    missing = missing_libraries(plugin)
    if not missing:
        return None
    family = family if family is not None else package_family()
    cmds = install_commands(missing, family)
    qt_own = [so for so in missing if so not in PACKAGES]
    details = [f"Qt's {what} plugin needs these libraries, which are not installed: {', '.join(missing)}."]
    if cmds:
        details.append("Install them with:" if len(cmds) == 1 else "Install them with the line for your system:")
        details += [f"    {c}" for c in cmds]
    if qt_own:
        details.append("Some are part of PySide6 itself: run the installer again (packaging/install-linux.sh).")
    return Problem(f"patina: the window cannot start: {len(missing)} "
                   f"librar{'y' if len(missing) == 1 else 'ies'} missing for Qt's {what} plugin.",
                   details, missing)


def _x_display_answers(display: str) -> bool:
    """Whether an X server listens for *display* (":0", ":1.0", "host:10.0"). Unknown forms count as yes."""
    m = re.fullmatch(r"(?:unix)?(?P<host>[^:/]*):(?P<num>\d+)(?:\.\d+)?", display)
    if not m:
        return True
    num, host = int(m.group("num")), m.group("host")
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{num}"
        for address in (path, "\0" + path):  # file socket, then Linux's abstract socket
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(address)
                    return True
            except OSError:
                continue
        return False
    try:
        with socket.create_connection((host, 6000 + num), timeout=2):
            return True
    except OSError:
        return False


def _wayland_answers(env: dict[str, str]) -> bool:
    name = env.get("WAYLAND_DISPLAY", "")
    if not name:
        return False
    path = Path(name) if os.path.isabs(name) else Path(env.get("XDG_RUNTIME_DIR", "")) / name
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
            return True
    except OSError:
        return False


def headless_advice() -> list[str]:
    return ["Training works without a window: patina train CONFIG.json (see patina --help).",
            "patina --screenshot out.png renders the window without a display."]


def check(env: dict[str, str] | None = None, *, screenshot: bool = False,
          platforms: Path | None = None, family: str | None = None) -> Problem | None:
    """Why Qt could not open the window on this Linux machine, or None when it should work (or when this
    is not Linux: Windows and macOS always have their platform plugin)."""
    env = dict(os.environ if env is None else env)
    if not sys.platform.startswith("linux"):
        return None
    platforms = platforms or plugin_dir()
    if platforms is None:
        return Problem("patina: PySide6 (Qt) is not installed in this Python environment.",
                       ["Run the installer again (packaging/install-linux.sh)."] + headless_advice())
    requested = env.get("QT_QPA_PLATFORM", "")
    if not requested and screenshot:
        requested = "offscreen"
    names = [p.split(":", 1)[0].strip() for p in requested.split(";") if p.strip()]
    if not names:
        wayland_session = env.get("XDG_SESSION_TYPE", "") == "wayland" or env.get("WAYLAND_DISPLAY")
        names = ["wayland", "xcb"] if wayland_session else ["xcb"]
    problems: list[Problem] = []
    for name in names:
        if name in HEADLESS_PLATFORMS:
            return None  # no display needed; its libraries are Qt's own core set (checked by the installer)
        elif name.startswith("wayland"):
            if not env.get("WAYLAND_DISPLAY"):
                p = Problem("patina: no Wayland display (WAYLAND_DISPLAY is not set).", [])
            elif not _wayland_answers(env):
                p = Problem(f'patina: the Wayland display "{env["WAYLAND_DISPLAY"]}" does not answer.', [])
            else:
                p = library_problem(platforms / "libqwayland.so", "Wayland", family)
        elif name == "xcb":
            display = env.get("DISPLAY", "")
            if not display:
                p = Problem("patina: no display found (DISPLAY and WAYLAND_DISPLAY are not set), so the window "
                            "cannot open.", ["Start Patina from a desktop session (or ssh -X)."])
            elif not _x_display_answers(display):
                p = Problem(f'patina: cannot connect to the X display "{display}".',
                            ["Start Patina from a desktop session, or check DISPLAY."])
            else:
                p = library_problem(platforms / "libqxcb.so", "X11 (xcb)", family)
        else:
            return None  # a platform this check does not know: let Qt decide
        if p is None:
            return None
        problems.append(p)
    # Report the most useful problem: missing libraries first (they are the fix even when a Wayland
    # session is running), then the last one (xcb is Qt's last fallback).
    worst = next((p for p in problems if p.missing), problems[-1])
    worst.details += headless_advice()
    return worst


def main(argv: list[str] | None = None) -> int:
    """``--libraries``: check the X11 plugin's libraries only (no display needed); exit 1 with the install
    command when some are missing. Without it: the full check the launcher runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--libraries" in argv:
        if not sys.platform.startswith("linux"):
            return 0
        folder = plugin_dir()
        if folder is None:
            print("PySide6 is not installed in this environment.")
            return 1
        problem = library_problem(folder / "libqxcb.so", "X11 (xcb)")
    else:
        problem = check()
    if problem is None:
        print("ok: Qt can open the window." if "--libraries" not in argv else "ok: Qt's X11 libraries are installed.")
        return 0
    print(problem.text())
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
