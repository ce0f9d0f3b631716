"""Build dist/fers-VERSION.zip, the installable plugin: runtime files only (no tests, no dev files).

It warns (and still builds) while metadata.txt's homepage, tracker or repository is a
placeholder: plugins.qgis.org refuses an upload whose addresses do not answer.
"""

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from algorithms.help_links import UNPUBLISHED_ADDRESSES  # noqa: E402 (QGIS-free)

RUNTIME = ["metadata.txt", "__init__.py", "plugin.py", "installer_gui.py", "LICENSE", "README.md", "CHANGELOG.md",
           "icons/", "algorithms/", "fers_core/", "weights/", "models/"]
EXCLUDED_SUFFIXES = (".pyc", ".aux.xml")
# Addresses in metadata.txt that do not answer yet (the project has no public home so far), and
# the Plugin Builder's defaults, which plugins.qgis.org refuses outright.
PLACEHOLDER_ADDRESSES = UNPUBLISHED_ADDRESSES + ("http://bugs", "http://repo", "http://homepage")
ADDRESS_KEYS = ("homepage", "tracker", "repository")


def read_metadata():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt", encoding="utf-8")
    return metadata["general"]


def placeholder_addresses(general):
    """metadata.txt keys whose address is a placeholder (or missing)."""
    return [key for key in ADDRESS_KEYS
            if not general.get(key, "").strip() or general[key].strip().rstrip("/").startswith(PLACEHOLDER_ADDRESSES)]


def runtime_paths():
    """RUNTIME and the screenshot metadata.txt names (the other screenshots stay out of the zip)."""
    screenshot = read_metadata().get("screenshot", "").strip()
    return RUNTIME + ([screenshot] if screenshot else [])


def runtime_files():
    """Files under the runtime paths that git tracks or would track (new files not yet committed are
    included, as in the working tree the tests run; ignored files, caches and local files never ship)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    paths = runtime_paths()
    return sorted({f for f in listed
                   if any(f == p or (p.endswith("/") and f.startswith(p)) for p in paths)
                   and not f.endswith(EXCLUDED_SUFFIXES) and "__pycache__" not in f and (ROOT / f).is_file()})


def main():
    general = read_metadata()
    version = general["version"]
    destination = ROOT / "dist" / f"fers-{version}.zip"
    destination.parent.mkdir(exist_ok=True)
    files = runtime_files()
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(ROOT / name, f"fers/{name}")
    print(f"{destination} ({len(files)} files, {destination.stat().st_size / 1e6:.1f} MB)")
    placeholders = placeholder_addresses(general)
    if placeholders:
        listed = ", ".join(f"{key}={general.get(key, '')}" for key in placeholders)
        print(f"WARNING: placeholder addresses in metadata.txt ({listed}). plugins.qgis.org refuses an upload "
              "whose homepage, tracker or repository does not answer: set the project's real addresses before "
              "a release (README, 'Releasing').", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
