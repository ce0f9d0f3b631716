"""Where the dialogs' Help button leads: the algorithm's README section on the project's site, or the README
shipped in the plugin folder while the project has no public home (QGIS-free, so scripts/package.py can use it)."""

import configparser
import os
from pathlib import Path

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNPUBLISHED_ADDRESSES = ("https://github.com/fers-qgis/fers-qgis",)
"""Addresses in metadata.txt that do not answer yet: the project's intended home, not published so far."""


def plugin_address():
    """The plugin's repository address from metadata.txt (the README lives there); '' when unknown."""
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(os.path.join(PLUGIN_DIR, "metadata.txt"), encoding="utf-8")
    return metadata.get("general", "repository", fallback="").strip().rstrip("/")


def help_address(anchor=""):
    """The README section `anchor` (a GitHub heading anchor) at the published repository, else the plugin's own
    README.md as a file URL (readable offline; a text file has no anchors)."""
    address = plugin_address()
    if address and not address.startswith(UNPUBLISHED_ADDRESSES):
        return f"{address}#{anchor}" if anchor else address
    return Path(PLUGIN_DIR, "README.md").as_uri()
