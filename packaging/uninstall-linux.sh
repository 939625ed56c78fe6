#!/usr/bin/env bash
# Remove what packaging/install-linux.sh added: the menu entry, the icons, the virtual environment (with
# PyTorch and every library), Patina's caches (thumbnails, cached latents) and its log folder.
#
# Never removed: your datasets, captions, configs (saved .json/.toml files), trained LoRAs and samples
# (they live in the folders you chose), and Patina's settings and presets in ~/.config/patina. The app
# folder itself (this source tree) is left too; delete it yourself when you no longer want it.
#
#   PATINA_VENV, XDG_DATA_HOME, XDG_CACHE_HOME, XDG_STATE_HOME: as for the installer.
#   PATINA_DRY_RUN=1  only list what would be removed.
set -euo pipefail

APP_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="${PATINA_VENV:-$APP_DIR/.venv}"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/patina"
STATE="${XDG_STATE_HOME:-$HOME/.local/state}/patina"
CONFIG="${XDG_CONFIG_HOME:-$HOME/.config}/patina"
DRY_RUN="${PATINA_DRY_RUN:-0}"

say() { printf 'patina-uninstall: %s\n' "$*"; }

remove() {
    local path=$1
    [ -e "$path" ] || [ -L "$path" ] || return 0
    if [ "$DRY_RUN" = "1" ]; then
        say "would remove: $path"
    else
        rm -rf -- "$path"
        say "removed: $path"
    fi
}

remove "$DATA_HOME/applications/patina.desktop"
for icon in "$DATA_HOME"/icons/hicolor/*/apps/patina.png; do
    remove "$icon"
done
if command -v update-desktop-database >/dev/null 2>&1 && [ "$DRY_RUN" != "1" ]; then
    update-desktop-database "$DATA_HOME/applications" >/dev/null 2>&1 || true
fi
if [ -e "$VENV" ]; then
    if [ -f "$VENV/pyvenv.cfg" ]; then
        remove "$VENV"
    else
        say "left $VENV alone: it is not a Python environment."
    fi
fi
remove "$CACHE"
remove "$STATE"
say "kept: your datasets, configs, LoRAs and samples (wherever you saved them)."
if [ -d "$CONFIG" ]; then
    say "kept: Patina's settings and presets in $CONFIG (delete that folder to forget them)."
fi
say "the app folder $APP_DIR is still there; delete it to remove Patina completely."
