"""FERS for QGIS: hyperspectral anomaly detection as QGIS Processing algorithms."""


def classFactory(iface):  # noqa: N802 (QGIS plugin entry point)
    """Create the plugin; QGIS calls this with its interface (None under qgis_process)."""
    use_profile_packages()
    from .plugin import FersPlugin

    return FersPlugin(iface)


def use_profile_packages():
    """Put the PyTorch the plugin installed into the QGIS profile on sys.path, before anything imports torch."""
    from qgis.core import QgsApplication

    from .fers_core.enhance import torch_support
    from .fers_core.runtime import torch_installer

    return torch_support.use_packages_folder(torch_installer.packages_folder(QgsApplication.qgisSettingsDirPath()))
