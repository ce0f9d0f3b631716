"""QGIS plugin object: registers the FERS Processing provider."""

from qgis.core import QgsApplication


class FersPlugin:
    """Registers the provider in initProcessing(), which qgis_process calls without a GUI."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API)
        from .algorithms.provider import FersProvider

        if self.provider is None:
            self.provider = FersProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
