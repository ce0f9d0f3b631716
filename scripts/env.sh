# Environment for running QGIS headless with this checkout's venv, profile and plugin.
# Source it: `. scripts/env.sh`. Sets FERS_ROOT and the variables qgis_process and PyQGIS need.
FERS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FERS_ROOT
export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="$FERS_ROOT/.run/xdg"
export QGIS_CUSTOM_CONFIG_PATH="$FERS_ROOT/.qgis-profile"
export QGIS_PLUGINPATH="$FERS_ROOT/.plugins"
export PATH="$FERS_ROOT/.venv/bin:$PATH"
mkdir -p "$XDG_RUNTIME_DIR" "$QGIS_CUSTOM_CONFIG_PATH" "$QGIS_PLUGINPATH"
chmod 0700 "$XDG_RUNTIME_DIR"
# The plugin folder must be named `fers`, whatever the checkout is called.
[ -L "$QGIS_PLUGINPATH/fers" ] || ln -sfn "$FERS_ROOT" "$QGIS_PLUGINPATH/fers"
