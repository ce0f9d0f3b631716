"""Checks for the optional PyTorch dependency, with install instructions per platform."""

import importlib.util
import platform

from .errors import DependencyError


def install_hint():
    """How to install torch into the Python that runs QGIS, for this platform."""
    system = platform.system()
    if system == "Windows":
        return ("open the OSGeo4W Shell that came with QGIS and run "
                "'python -m pip install torch --index-url https://download.pytorch.org/whl/cpu', then restart QGIS")
    if system == "Darwin":
        return ("run '/Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install torch' in a terminal, "
                "then restart QGIS")
    return ("run 'python3 -m pip install --user torch --index-url https://download.pytorch.org/whl/cpu' with the "
            "python3 that QGIS uses (Debian/Ubuntu: /usr/bin/python3; keep numpy below 2), then restart QGIS")


def torch_available():
    return importlib.util.find_spec("torch") is not None


def require_torch():
    """Raise DependencyError with instructions when torch cannot be imported."""
    if not torch_available():
        raise DependencyError(f"The FERS networks need PyTorch, which is not installed: {install_hint()}. "
                              "The classical detector fers:rx works without it.")
    try:
        import torch  # noqa: F401
    except Exception as error:  # a broken install (e.g. DLL load failure) is reported, not raised raw
        raise DependencyError(f"PyTorch is installed but cannot be imported ({error}); reinstall it: "
                              f"{install_hint()}.") from None
