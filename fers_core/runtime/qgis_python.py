"""Find the Python interpreter QGIS runs, to run pip with it.

Inside QGIS `sys.executable` can be the QGIS binary rather than Python, so the interpreter is looked
for beside the Python prefix and checked: it must be the same version and binary ABI as QGIS's
Python, so the packages pip installs with it load in QGIS.
"""

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from typing import List, Optional, Sequence

from ..errors import DependencyError

NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows: no console window flashing up over QGIS


def python_candidates(executable=None, base_executable=None, prefix=None, system=None, version=None) -> List[str]:
    """Interpreters that may be QGIS's Python, most likely first (not yet checked).

    Inside QGIS `sys.executable` can be the QGIS binary rather than Python: then the interpreter is
    looked for beside the Python prefix (Linux: /usr/bin/python3.X; Windows/OSGeo4W: python.exe in
    the Python home; macOS bundle: Contents/MacOS/bin/python3).
    """
    executable = sys.executable if executable is None else executable
    base_executable = getattr(sys, "_base_executable", None) if base_executable is None else base_executable
    prefix = sys.base_exec_prefix if prefix is None else prefix
    system = platform.system() if system is None else system
    major, minor = (version or sys.version_info)[:2]
    candidates = [c for c in (executable, base_executable) if c and re.match(r"python", os.path.basename(c), re.I)]
    if system == "Windows":
        candidates += [os.path.join(prefix, "python.exe"), os.path.join(prefix, "python3.exe")]
        if executable:
            candidates += [os.path.join(os.path.dirname(executable), "python3.exe"),
                           os.path.join(os.path.dirname(executable), "python.exe")]
    else:
        candidates += [os.path.join(prefix, "bin", f"python{major}.{minor}"), os.path.join(prefix, "bin", "python3")]
        if executable and system == "Darwin":  # the bundle's QGIS binary is Contents/MacOS/QGIS
            candidates.append(os.path.join(os.path.dirname(executable), "bin", "python3"))
        candidates += [shutil.which(f"python{major}.{minor}") or "", "/usr/bin/python3"]
    unique = []
    for candidate in candidates:
        if candidate and candidate not in unique:
            unique.append(candidate)
    return unique


IDENTITY_SCRIPT = ("import sys, sysconfig; "
                   "print('%d.%d' % sys.version_info[:2], sysconfig.get_config_var('SOABI') or '')")


def interpreter_identity() -> str:
    """This Python's version and binary ABI (what its wheels are built for): '3.11 cpython-311-x86_64-linux-gnu'."""
    return f"{sys.version_info[0]}.{sys.version_info[1]} {sysconfig.get_config_var('SOABI') or ''}"


def find_python(candidates: Optional[Sequence[str]] = None, version=None) -> str:
    """The first candidate that runs and is the same Python as this one (version and binary ABI), so the
    packages it installs load in QGIS; `version` (major, minor) checks the version only. DependencyError if none."""
    major, minor = (version or sys.version_info)[:2]
    candidates = python_candidates(version=version) if candidates is None else candidates

    def matches(found):
        return found.split()[0] == f"{major}.{minor}" if version else found == interpreter_identity().strip()

    tried = []
    for candidate in candidates:
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            continue
        try:
            completed = subprocess.run([candidate, "-c", IDENTITY_SCRIPT], capture_output=True, text=True,
                                       timeout=30, creationflags=NO_WINDOW)
        except (OSError, subprocess.TimeoutExpired):
            continue
        found = completed.stdout.strip()
        if completed.returncode == 0 and found and matches(found):
            return candidate
        tried.append(f"{candidate} (Python {found or 'failed'})")
    raise DependencyError(
        f"No Python {major}.{minor} interpreter matching QGIS's was found to run pip"
        + (f" (tried {', '.join(tried)})" if tried else "")
        + "; install PyTorch by hand with the command in the README's 'Installing into desktop QGIS'.")
