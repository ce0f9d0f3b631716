#!/usr/bin/env bash
# Install what FERS for QGIS needs on Debian 12, idempotently: apt packages (as root, only
# when missing), then the venv .venv with torch and the test tools. Fast when all is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

apt_packages="qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv python3-scipy"
missing=""
for package in $apt_packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "Installing Debian packages:$missing"
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "Run as root (or install sudo) to install:$missing" >&2; exit 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi

stamp=".venv/.fers-requirements"
if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv (system site packages, from /usr/bin/python3)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! cmp -s requirements-dev.txt "$stamp"; then
    echo "Installing Python packages into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    cp requirements-dev.txt "$stamp"
fi
