#!/usr/bin/env bash
# Install or update Patina for the current user on Linux.
#
#   1. creates a virtual environment next to the app (<app>/.venv), or checks the existing one,
#   2. installs PyTorch: the CUDA build that fits the NVIDIA card and driver (packaging/pick_torch.py),
#      the CPU build without an NVIDIA card,
#   3. installs Patina and its libraries into it (pip install -e "<app>[captioning]"); on a re-run every library is
#      upgraded, while PyTorch is kept when the right build is installed (no multi-GB download),
#   4. checks the system libraries Qt's window needs and prints the command that installs missing ones,
#   5. adds "Patina" to the applications menu (a .desktop entry and its icon).
#
# Run it again to repair or update. "install-linux.sh --uninstall" removes it again (uninstall-linux.sh).
# Paths may contain spaces and any Unicode characters.
#
# Settings (environment variables):
#   PATINA_PYTHON        Python to build the venv with (default: python3.12, 3.13, 3.11, 3.14, 3.10, python3)
#   PATINA_VENV          venv folder (default: <app>/.venv)
#   PATINA_TORCH_INDEX   PyTorch wheel index to use instead of the detected one (e.g. …/whl/cpu)
#   PATINA_UPGRADE_TORCH=1  also upgrade PyTorch when the right build is already installed
#   PATINA_PIP_ARGS      extra arguments for every "pip install" (e.g. "--no-index --find-links /wheels"
#                        for an offline install, or "--index-url URL" for a local mirror)
#   PATINA_DRY_RUN=1     print the venv and pip commands instead of running them (nothing is downloaded);
#                        the launcher and the desktop entry are still set up, so their paths can be checked
#   XDG_DATA_HOME        where the desktop entry and icon go (default: ~/.local/share)
set -euo pipefail

APP_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
if [ "${1:-}" = "--uninstall" ]; then
    shift
    exec bash "$APP_DIR/packaging/uninstall-linux.sh" "$@"
fi
VENV="${PATINA_VENV:-$APP_DIR/.venv}"
MARKER="$VENV/.patina-install-complete"
DRY_RUN="${PATINA_DRY_RUN:-0}"
LAUNCHER="$APP_DIR/packaging/patina.sh"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
DESKTOP_FILE="$DATA_HOME/applications/patina.desktop"
ICON_DIR="$DATA_HOME/icons/hicolor"
read -r -a PIP_EXTRA <<< "${PATINA_PIP_ARGS:-}"
SUPPORTED="3.10 to 3.14"
WARNINGS=()
CREATED_VENV=0

say() { printf 'patina-install: %s\n' "$*"; }
die() { printf 'patina-install: error: %s\n' "$*" >&2; exit 1; }
warn() { say "WARNING: $*"; WARNINGS+=("$*"); }

# Run a command, or print it (each argument shell-quoted) in a dry run.
run() {
    if [ "$DRY_RUN" = "1" ]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# A failed step: say which one and what to try; remove a venv this run created (half-built), keep one that
# was there before (the next run checks it).
fail_step() {
    local what=$1 hint=$2 rc=$3
    printf '\npatina-install: error: %s failed (exit code %s). %s\n' "$what" "$rc" "$hint" >&2
    if [ "$CREATED_VENV" = "1" ] && [ -d "$VENV" ]; then
        rm -rf -- "$VENV"
        printf 'patina-install: the half-built environment %s was removed; run the installer again.\n' "$VENV" >&2
    elif [ -d "$VENV" ]; then
        printf 'patina-install: the environment %s is unchanged or partly updated; running the installer again checks and completes it.\n' "$VENV" >&2
    fi
    exit 1
}

# step "what" "what to try" command...
step() {
    local what=$1 hint=$2
    shift 2
    local rc=0
    run "$@" || rc=$?
    [ "$rc" = "0" ] || fail_step "$what" "$hint" "$rc"
}

python_ok() {
    "$1" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 15) else 1)' >/dev/null 2>&1
}

python_help() {
    cat <<EOF
Patina needs Python $SUPPORTED (PyTorch and PySide6 publish wheels for these). Install one and run this again:
    Ubuntu 24.04 / Debian 12 or newer:  sudo apt install python3 python3-venv
    Ubuntu 22.04:                       sudo add-apt-repository ppa:deadsnakes/ppa && sudo apt install python3.12 python3.12-venv
    Fedora:                             sudo dnf install python3.12
    Arch:                               sudo pacman -S python   (when it is newer than 3.14: install uv, then: uv python install 3.12)
or point PATINA_PYTHON at a supported python (e.g. PATINA_PYTHON=/usr/bin/python3.12).
EOF
}

find_python() {
    if [ -n "${PATINA_PYTHON:-}" ]; then
        python_ok "$PATINA_PYTHON" || die "PATINA_PYTHON=\"$PATINA_PYTHON\" is not Python $SUPPORTED.
$(python_help)"
        printf '%s\n' "$PATINA_PYTHON"
        return
    fi
    local candidate
    for candidate in python3.12 python3.13 python3.11 python3.14 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    die "no Python $SUPPORTED found.
$(python_help)"
}

# Quote one argument for the Exec key of a .desktop file (Desktop Entry Specification, "The Exec key"):
# reserved characters inside double quotes get a backslash, % is doubled, then the string-value escape
# doubles every backslash once more.
desktop_exec_arg() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//\`/\\\`}
    s=${s//\$/\\\$}
    s=${s//%/%%}
    s=${s//\\/\\\\}
    printf '"%s"' "$s"
}

[ -f "$APP_DIR/pyproject.toml" ] || die "run this script from Patina's packaging folder (no pyproject.toml in \"$APP_DIR\")."

PY="$(find_python)"
say "app folder:  $APP_DIR"
say "Python:      $PY ($("$PY" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))'))"
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || die "the venv module is missing for $PY; install it \
(Debian/Ubuntu: sudo apt install python3-venv, or python3.12-venv for Python 3.12; Fedora and Arch include it)."

# --- which PyTorch build -------------------------------------------------------------------------------
BUILD=""
if [ -n "${PATINA_TORCH_INDEX:-}" ]; then
    TORCH_INDEX="$PATINA_TORCH_INDEX"
    case "$TORCH_INDEX" in */whl/cpu|*/whl/cpu/) BUILD=cpu ;; */whl/cu[0-9]*) BUILD="${TORCH_INDEX%/}"; BUILD="${BUILD##*/}" ;; esac
    say "PyTorch:     $TORCH_INDEX (from PATINA_TORCH_INDEX)"
else
    GPU_NAMES=()
    if command -v lspci >/dev/null 2>&1; then
        while IFS= read -r line; do GPU_NAMES+=(--gpu-name "$line"); done \
            < <(lspci 2>/dev/null | grep -Ei 'vga|3d controller|display controller' | sed 's/^[^:]*:[^:]*: //' || true)
    fi
    PICK_LOG="$(mktemp "${TMPDIR:-/tmp}/patina-pick.XXXXXX")"
    rc=0
    PICK="$("$PY" "$APP_DIR/packaging/pick_torch.py" --platform linux "${GPU_NAMES[@]}" 2>"$PICK_LOG")" || rc=$?
    sed 's/^/patina-install: /' "$PICK_LOG"
    rm -f -- "$PICK_LOG"
    if [ "$rc" != "0" ]; then
        die "no PyTorch build fits this machine (see above)."
    fi
    TORCH_INDEX="${PICK% *}"
    BUILD="${PICK##* }"
    if [ "$BUILD" = "cpu" ]; then
        warn "PyTorch is the CPU build: training will be very slow. Patina trains on NVIDIA GPUs (CUDA); with one, install its driver and run this again."
    fi
fi

# --- the environment -----------------------------------------------------------------------------------
say "environment: $VENV"
VPY="$VENV/bin/python"
NEED_VENV=1
if [ -e "$VENV" ] || [ -L "$VENV" ]; then
    if [ -x "$VPY" ] && python_ok "$VPY" && "$VPY" -c 'import pip' >/dev/null 2>&1; then
        NEED_VENV=0
        if [ ! -f "$MARKER" ]; then
            say "             an earlier install did not finish; checking and completing it"
        fi
    elif [ -f "$VENV/pyvenv.cfg" ]; then
        say "             exists but does not work (its Python is missing, unsupported or has no pip); recreating it"
        run rm -rf -- "$VENV"
    else
        die "\"$VENV\" exists and is not a Python environment; move it away or set PATINA_VENV."
    fi
fi
if [ "$NEED_VENV" = "1" ]; then
    CREATED_VENV=1
    step "creating the environment" "Check the free disk space in \"$(dirname -- "$VENV")\"." "$PY" -m venv "$VENV"
    [ "$DRY_RUN" = "1" ] || [ -x "$VPY" ] || fail_step "creating the environment" "\"$VPY\" was not created." 1
fi

SPACE_HINT="PyTorch's CPU build needs about 1 GB of free space."
[ "$BUILD" = "cpu" ] || SPACE_HINT="PyTorch's CUDA build needs about 5 GB of free space."
NET_HINT="Check the internet connection (pip downloads from https://pypi.org and ${TORCH_INDEX%/whl/*}) and the free disk space; pip's message above names the package that failed."
step "updating pip" "$NET_HINT" "$VPY" -m pip install --upgrade pip "${PIP_EXTRA[@]}"

# --- PyTorch: install, switch build, or keep -------------------------------------------------------------
# The installed torch and its build (from its version tag, or torch/version.py for PyPI's wheels).
INSTALLED_TORCH=""
INSTALLED_BUILD=""
if [ -x "$VPY" ] && INFO="$("$VPY" "$APP_DIR/packaging/pick_torch.py" --installed 2>/dev/null)"; then
    INSTALLED_TORCH="${INFO%% *}"
    case "$INFO" in *" "*) INSTALLED_BUILD="${INFO#* }" ;; esac
fi
if [ -z "$INSTALLED_TORCH" ]; then
    say "PyTorch:     installing from $TORCH_INDEX"
    step "installing PyTorch" "$NET_HINT $SPACE_HINT" \
        "$VPY" -m pip install torch --index-url "$TORCH_INDEX" "${PIP_EXTRA[@]}"
elif [ -n "$BUILD" ] && [ "$INSTALLED_BUILD" != "$BUILD" ]; then
    say "PyTorch:     switching from $INSTALLED_TORCH to the $BUILD build"
    step "removing the old PyTorch build" "Run the installer again." "$VPY" -m pip uninstall -y torch
    step "installing PyTorch" "$NET_HINT $SPACE_HINT" \
        "$VPY" -m pip install torch --index-url "$TORCH_INDEX" "${PIP_EXTRA[@]}"
elif [ "${PATINA_UPGRADE_TORCH:-0}" = "1" ]; then
    say "PyTorch:     upgrading $INSTALLED_TORCH from $TORCH_INDEX"
    step "upgrading PyTorch" "$NET_HINT" "$VPY" -m pip install --upgrade torch --index-url "$TORCH_INDEX" "${PIP_EXTRA[@]}"
else
    say "PyTorch:     $INSTALLED_TORCH is installed and fits; kept (PATINA_UPGRADE_TORCH=1 upgrades it)"
fi

# --- Patina and every other library, upgraded; PyTorch held at the installed version ---------------------
CONSTRAINTS="$(mktemp "${TMPDIR:-/tmp}/patina-constraints.XXXXXX")"
trap 'rm -f -- "$CONSTRAINTS"' EXIT
TORCH_NOW=""
if [ "$DRY_RUN" != "1" ]; then
    TORCH_NOW="$("$VPY" -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null || true)"
elif [ -n "$INSTALLED_TORCH" ] && [ "$INSTALLED_BUILD" = "$BUILD" -o -z "$BUILD" ]; then
    TORCH_NOW="$INSTALLED_TORCH"
fi
if [ -n "$TORCH_NOW" ]; then
    printf 'torch==%s\n' "$TORCH_NOW" > "$CONSTRAINTS"
    say "libraries:   upgrading all; torch held at $TORCH_NOW"
fi
step "installing Patina and its libraries" "$NET_HINT" \
    "$VPY" -m pip install --upgrade --upgrade-strategy eager -c "$CONSTRAINTS" -e "$APP_DIR[captioning]" "${PIP_EXTRA[@]}"

# --- checks that need the finished environment -----------------------------------------------------------
if [ "$DRY_RUN" != "1" ]; then
    if [ -n "$BUILD" ] && [ "$BUILD" != "cpu" ]; then
        if CHECK="$("$VPY" -c 'import torch; x = torch.ones(4, device="cuda"); print(torch.__version__, torch.cuda.get_device_name(0), float((x * 2).sum()))' 2>&1)"; then
            say "CUDA check:  ok (${CHECK%% *} on ${CHECK#* })"
        else
            warn "PyTorch cannot use the GPU: $(printf '%s' "$CHECK" | tail -n 1). Training would fail or run on the CPU; update the NVIDIA driver, then run this again."
        fi
    fi
    if QT="$(cd -- "$APP_DIR" && "$VPY" -m patina.gui.qt_preflight --libraries 2>&1)"; then
        say "window:      Qt's X11 libraries are installed"
    else
        warn "the window cannot start until system libraries are installed ('patina train' works without them):
$QT"
    fi
    date -u +%Y-%m-%dT%H:%M:%SZ > "$MARKER"
fi

# --- menu entry and icon ---------------------------------------------------------------------------------
chmod +x "$LAUNCHER"
for size in 16 32 48 64 128 256; do
    src="$APP_DIR/resources/icons/patina-$size.png"
    [ -f "$src" ] || continue
    mkdir -p "$ICON_DIR/${size}x${size}/apps"
    cp -f -- "$src" "$ICON_DIR/${size}x${size}/apps/patina.png"
done
if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -f "$ICON_DIR/index.theme" ]; then
    gtk-update-icon-cache -q -t "$ICON_DIR" >/dev/null 2>&1 || true
fi
mkdir -p "$(dirname -- "$DESKTOP_FILE")"
TMP_DESKTOP="$(mktemp "$(dirname -- "$DESKTOP_FILE")/.patina.desktop.XXXXXX")"
{
    printf '[Desktop Entry]\n'
    printf 'Type=Application\n'
    printf 'Version=1.0\n'
    printf 'Name=Patina\n'
    printf 'GenericName=LoRA trainer\n'
    printf 'Comment=Train Stable Diffusion LoRAs on your own GPU\n'
    printf 'Exec=%s --menu\n' "$(desktop_exec_arg "$LAUNCHER")"
    printf 'Icon=patina\n'
    printf 'Terminal=false\n'
    printf 'Categories=Graphics;RasterGraphics;\n'
    printf 'Keywords=LoRA;Stable Diffusion;training;kohya;\n'
    printf 'StartupWMClass=patina\n'
} > "$TMP_DESKTOP"
chmod 644 "$TMP_DESKTOP"
mv -f -- "$TMP_DESKTOP" "$DESKTOP_FILE"
if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database "$(dirname -- "$DESKTOP_FILE")" >/dev/null 2>&1 || true
fi
say "menu entry:  $DESKTOP_FILE"
if [ "$DRY_RUN" = "1" ]; then
    say "dry run: nothing was downloaded or installed."
else
    say "done. Start Patina from the applications menu, or run: \"$LAUNCHER\""
    say "update: run this installer again; uninstall: \"$APP_DIR/packaging/install-linux.sh\" --uninstall"
fi
# The warnings again, after pip's long output, so they are the last thing on screen.
for w in "${WARNINGS[@]+"${WARNINGS[@]}"}"; do
    say "WARNING: $w"
done
