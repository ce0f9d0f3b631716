"""FERS for QGIS: hyperspectral anomaly detection as QGIS Processing algorithms."""


def classFactory(iface):  # noqa: N802 (QGIS plugin entry point)
    """Create the plugin; QGIS calls this with its interface (None under qgis_process)."""
    from .plugin import FersPlugin

    return FersPlugin(iface)
