"""Build dist/fers-VERSION.zip, the installable plugin: runtime files only (no tests, no dev files)."""

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ["metadata.txt", "__init__.py", "plugin.py", "installer_gui.py", "LICENSE", "README.md", "CHANGELOG.md",
           "icons/", "algorithms/", "fers_core/", "weights/", "models/"]
EXCLUDED_SUFFIXES = (".pyc", ".aux.xml")


def runtime_files():
    """Files under the runtime paths that git tracks or would track (new files not yet committed are
    included, as in the working tree the tests run; ignored files, caches and local files never ship)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return sorted({f for f in listed
                   if any(f == p or (p.endswith("/") and f.startswith(p)) for p in RUNTIME)
                   and not f.endswith(EXCLUDED_SUFFIXES) and "__pycache__" not in f and (ROOT / f).is_file()})


def main():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt")
    version = metadata["general"]["version"]
    destination = ROOT / "dist" / f"fers-{version}.zip"
    destination.parent.mkdir(exist_ok=True)
    files = runtime_files()
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(ROOT / name, f"fers/{name}")
    print(f"{destination} ({len(files)} files, {destination.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
