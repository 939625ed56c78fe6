#!/usr/bin/env bash
# Start Patina from the virtual environment made by packaging/install-linux.sh.
# Arguments are passed on: no arguments opens the window; "patina.sh train config.json" trains headless.
#
# The menu entry runs "patina.sh --menu": there is no terminal then, so Patina's output goes to
# ~/.local/state/patina/patina-output.log, and when the process dies on a signal (a crash inside Qt)
# this script shows a notification with its last lines. (Patina's own start-up checks show theirs.)
set -u
SELF="$(readlink -f -- "${BASH_SOURCE[0]}")"
APP_DIR="$(cd -- "$(dirname -- "$SELF")/.." && pwd -P)"
PY="${PATINA_VENV:-$APP_DIR/.venv}/bin/python"
FROM_MENU=0
if [ "${1:-}" = "--menu" ]; then
    FROM_MENU=1
    shift
fi
STATE_DIR="${PATINA_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/patina}"

notify() {
    if command -v notify-send >/dev/null 2>&1; then
        notify-send --urgency=critical --app-name=Patina "$1" "$2" >/dev/null 2>&1 && return 0
    fi
    if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
        if command -v zenity >/dev/null 2>&1; then zenity --error --title="$1" --text="$2" >/dev/null 2>&1 & return 0; fi
        if command -v kdialog >/dev/null 2>&1; then kdialog --title "$1" --error "$2" >/dev/null 2>&1 & return 0; fi
        if command -v xmessage >/dev/null 2>&1; then xmessage -center "$1: $2" >/dev/null 2>&1 & return 0; fi
    fi
    return 1
}

if [ ! -x "$PY" ]; then
    msg="Patina is not installed yet. Run \"$APP_DIR/packaging/install-linux.sh\" first."
    printf '%s\n' "$msg" >&2
    if [ "$FROM_MENU" = "1" ] || [ ! -t 2 ]; then
        notify "Patina" "$msg" || true
    fi
    exit 1
fi
export PYTHONPATH="$APP_DIR${PYTHONPATH:+:$PYTHONPATH}"
if [ "$FROM_MENU" = "0" ] || ! mkdir -p -- "$STATE_DIR" 2>/dev/null; then
    exec "$PY" -m patina.gui.launcher "$@"
fi
LOG="$STATE_DIR/patina-output.log"
{ printf -- '--- %s  patina %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*"; } >> "$LOG" 2>/dev/null
"$PY" -m patina.gui.launcher "$@" 2>> "$LOG"
rc=$?
if [ "$rc" -ge 128 ]; then
    last="$(tail -n 5 -- "$LOG" 2>/dev/null | grep -v '^--- ' | tail -n 3)"
    notify "Patina stopped unexpectedly (exit code $rc)" "${last:-no message}
Details: $LOG" || true
fi
# Keep the log from growing without end: its newest 256 KB are enough.
if [ "$(wc -c < "$LOG" 2>/dev/null || echo 0)" -gt 524288 ]; then
    tail -c 262144 -- "$LOG" > "$LOG.tmp" 2>/dev/null && mv -f -- "$LOG.tmp" "$LOG"
fi
exit "$rc"
