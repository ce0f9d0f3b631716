"""Checks for the optional PyTorch dependency, with install instructions per platform.

PyTorch goes into a folder of the QGIS profile (`<profile>/python/fers-packages/pythonX.Y`) with
`pip install --target`, which needs no root and works where the system Python refuses pip
(PEP 668: Debian 12, Ubuntu 24.04). The plugin's installer does this; `install_hint()` gives the
same command for doing it by hand.
"""

import importlib.util
import os
import platform
import re
import sys
from pathlib import Path

from ..errors import DependencyError
from ..runtime import torch_installer

_state = {"folder": None, "installer_link": None}


def use_packages_folder(folder):
    """Record the profile's packages folder (for the hint) and put it on sys.path if it exists."""
    _state["folder"] = Path(folder)
    return torch_installer.activate(folder)


def set_installer_link(url):
    """The URL that opens the plugin's installer in the desktop (None: no desktop), for canExecute's message."""
    _state["installer_link"] = url


def default_packages_folder(system=None):
    """The packages folder of QGIS's default profile on this platform (when the plugin did not say)."""
    system = platform.system() if system is None else system
    if system == "Windows":
        profile = Path(os.environ.get("APPDATA", "~/AppData/Roaming")) / "QGIS" / "QGIS3" / "profiles" / "default"
    elif system == "Darwin":
        profile = Path("~/Library/Application Support/QGIS/QGIS3/profiles/default")
    else:
        profile = Path("~/.local/share/QGIS/QGIS3/profiles/default")
    return torch_installer.packages_folder(profile.expanduser())


def install_hint(folder=None, system=None, in_qgis=None):
    """How to install torch on this platform: for QGIS, the plugin's installer or the pip command into the
    profile's packages folder; outside QGIS (`in_qgis` None: QGIS is not loaded in this process and the plugin set
    no folder), pip for this Python, since only the plugin reads the profile's folder."""
    system = platform.system() if system is None else system
    index = torch_installer.CPU_INDEX
    if not (_in_qgis(folder) if in_qgis is None else in_qgis):
        return (f"install it for this Python, '{sys.executable} -m pip install torch --index-url {index}' (where "
                "the system refuses pip, PEP 668, use a virtual environment made with --system-site-packages, or "
                "pip install --target DIR and add DIR to PYTHONPATH)")
    folder = folder or _state["folder"] or default_packages_folder(system)
    if system == "Windows":
        command = f'python -m pip install --target "{folder}" torch --index-url {index}'
        where = "in the OSGeo4W Shell that came with QGIS"
    elif system == "Darwin":
        command = f'/Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install --target "{folder}" torch'
        where = "in a terminal"
    else:
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
        command = f'{python} -m pip install --target "{folder}" torch --index-url {index}'
        where = "in a terminal (no root needed)"
    return (f"in QGIS choose Plugins > FERS > Install PyTorch, or run '{command}' {where}; then restart QGIS")


def _in_qgis(folder=None):
    """Whether the advice is for QGIS: a packages folder is known (the plugin set it) or QGIS is loaded."""
    return bool(folder or _state["folder"]) or "qgis.core" in sys.modules


def torch_available():
    """Whether torch can be found (not imported); False when even looking for it fails."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def missing_torch_message(html_link=False):
    """Why the networks cannot run and how to fix it when torch is not installed, else None (no import).

    html_link adds a link to the desktop's installer (the Toolbox shows canExecute's message as HTML).
    """
    if torch_available():
        return None
    classical = "The classical detector fers:rx works" if _in_qgis() else \
        "The classical detectors (--detector rx, local-rx, rxd-local-mean, utd, rxd-utd) work"
    message = f"The FERS networks need PyTorch, which is not installed: {install_hint()}. {classical} without it."
    if html_link and _state["installer_link"]:
        message += f' <a href="{_state["installer_link"]}">Install PyTorch now</a>'
    return message


def require_torch():
    """Raise DependencyError with instructions when torch cannot be imported."""
    missing = missing_torch_message()
    if missing:
        raise DependencyError(missing)
    try:
        import torch
    except Exception as error:  # a broken install (e.g. DLL load failure) is reported, not raised raw
        raise DependencyError(f"PyTorch is installed but cannot be imported ({error}); reinstall it: "
                              f"{install_hint()}.") from None
    problem = _unusable(torch)
    if problem:
        raise DependencyError(f"The package 'torch' found at {getattr(torch, '__file__', None) or 'an unknown place'} "
                              f"is not a usable PyTorch ({problem}): FERS needs PyTorch {MINIMUM_TORCH} or newer. "
                              f"Remove it and install PyTorch: {install_hint()}.")


MINIMUM_TORCH = "2.0"


def _unusable(torch):
    """Why the imported `torch` cannot run FERS ('' when it can): a stub or foreign package of that name (no
    torch.nn), or a version older than MINIMUM_TORCH (Debian 12's python3-torch is 1.13)."""
    try:
        importlib.import_module("torch.nn")  # not `import torch.nn`, which would rebind `torch` here
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    version = str(getattr(torch, "__version__", "") or "")
    numbers = re.match(r"(\d+)\.(\d+)", version)
    if not numbers:
        return f"its version '{version}' is not a PyTorch version" if version else "it has no version"
    if tuple(int(n) for n in numbers.groups()) < tuple(int(n) for n in MINIMUM_TORCH.split(".")):
        return f"version {version}"
    return ""
