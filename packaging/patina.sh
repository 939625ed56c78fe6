#!/usr/bin/env bash
# Start Patina from the virtual environment made by packaging/install-linux.sh.
# Arguments are passed on: no arguments opens the window; "patina.sh train config.json" trains headless.
set -u
SELF="$(readlink -f -- "${BASH_SOURCE[0]}")"
APP_DIR="$(cd -- "$(dirname -- "$SELF")/.." && pwd -P)"
PY="${PATINA_VENV:-$APP_DIR/.venv}/bin/python"
if [ ! -x "$PY" ]; then
    msg="Patina is not installed yet. Run \"$APP_DIR/packaging/install-linux.sh\" first."
    printf '%s\n' "$msg" >&2
    if [ ! -t 2 ] && command -v notify-send >/dev/null 2>&1; then
        notify-send "Patina" "$msg" || true
    fi
    exit 1
fi
export PYTHONPATH="$APP_DIR${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m gui.launcher "$@"
