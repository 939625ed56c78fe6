#!/usr/bin/env bash
# Install Patina for the current user on Linux.
#
#   1. creates a virtual environment next to the app (<app>/.venv),
#   2. installs PyTorch: the CUDA build when nvidia-smi finds an NVIDIA GPU, the CPU build otherwise,
#   3. installs Patina into it (pip install -e <app>),
#   4. adds "Patina" to the applications menu (a .desktop entry with the icon).
#
# Run it again to repair or update the environment. Paths may contain spaces and any Unicode characters.
#
# Settings (environment variables):
#   PATINA_PYTHON       Python to build the venv with (default: python3.12, python3.11, python3.10 or python3)
#   PATINA_VENV         venv folder (default: <app>/.venv)
#   PATINA_TORCH_INDEX  PyTorch wheel index to use instead of the detected one
#   PATINA_CUDA_INDEX   CUDA wheel index (default: https://download.pytorch.org/whl/cu128)
#   PATINA_DRY_RUN=1    print the venv and pip commands instead of running them (nothing is downloaded);
#                       the launcher and the desktop entry are still set up, so their paths can be checked
#   XDG_DATA_HOME       where the desktop entry goes (default: ~/.local/share)
set -euo pipefail

APP_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="${PATINA_VENV:-$APP_DIR/.venv}"
CUDA_INDEX="${PATINA_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
DRY_RUN="${PATINA_DRY_RUN:-0}"
LAUNCHER="$APP_DIR/packaging/patina.sh"
ICON="$APP_DIR/resources/icons/patina-256.png"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
DESKTOP_FILE="$DATA_HOME/applications/patina.desktop"

say() { printf 'patina-install: %s\n' "$*"; }
die() { printf 'patina-install: error: %s\n' "$*" >&2; exit 1; }

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

python_ok() {
    "$1" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 13) else 1)' >/dev/null 2>&1
}

find_python() {
    if [ -n "${PATINA_PYTHON:-}" ]; then
        python_ok "$PATINA_PYTHON" || die "PATINA_PYTHON=\"$PATINA_PYTHON\" is not Python 3.10, 3.11 or 3.12."
        printf '%s\n' "$PATINA_PYTHON"
        return
    fi
    local candidate
    for candidate in python3.12 python3.11 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    die "Patina needs Python 3.10, 3.11 or 3.12 (PyTorch has no wheels for newer ones yet). Install one, e.g. \
'sudo apt install python3.12 python3.12-venv', or point PATINA_PYTHON at it."
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

desktop_string() {
    local s=$1
    printf '%s' "${s//\\/\\\\}"
}

[ -f "$APP_DIR/pyproject.toml" ] || die "run this script from Patina's packaging folder (no pyproject.toml in \"$APP_DIR\")."

PY="$(find_python)"
say "app folder:  $APP_DIR"
say "Python:      $PY ($("$PY" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))'))"
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || die "the venv module is missing for $PY; install it \
(Debian/Ubuntu: sudo apt install python3-venv, or python3.12-venv for Python 3.12)."

if [ -n "${PATINA_TORCH_INDEX:-}" ]; then
    TORCH_INDEX="$PATINA_TORCH_INDEX"
    say "PyTorch:     $TORCH_INDEX (from PATINA_TORCH_INDEX)"
elif command -v nvidia-smi >/dev/null 2>&1 && GPUS="$(nvidia-smi -L 2>/dev/null)" && [ -n "$GPUS" ]; then
    TORCH_INDEX="$CUDA_INDEX"
    say "GPU:         ${GPUS%%$'\n'*}"
    say "PyTorch:     CUDA build from $TORCH_INDEX"
else
    TORCH_INDEX="$CPU_INDEX"
    say "GPU:         none found (nvidia-smi is missing or lists no GPU)"
    say "PyTorch:     CPU build from $TORCH_INDEX (training will be very slow; install the NVIDIA driver and run this again)"
fi

say "environment: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    run "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
run "$VPY" -m pip install --upgrade pip
run "$VPY" -m pip install --upgrade torch --index-url "$TORCH_INDEX"
run "$VPY" -m pip install -e "$APP_DIR"

chmod +x "$LAUNCHER"
mkdir -p "$(dirname -- "$DESKTOP_FILE")"
TMP_DESKTOP="$(mktemp "$(dirname -- "$DESKTOP_FILE")/.patina.desktop.XXXXXX")"
{
    printf '[Desktop Entry]\n'
    printf 'Type=Application\n'
    printf 'Version=1.0\n'
    printf 'Name=Patina\n'
    printf 'GenericName=LoRA trainer\n'
    printf 'Comment=Train Stable Diffusion LoRAs on your own GPU\n'
    printf 'Exec=%s\n' "$(desktop_exec_arg "$LAUNCHER")"
    printf 'Icon=%s\n' "$(desktop_string "$ICON")"
    printf 'Terminal=false\n'
    printf 'Categories=Graphics;Science;\n'
    printf 'Keywords=LoRA;Stable Diffusion;training;kohya;\n'
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
fi
