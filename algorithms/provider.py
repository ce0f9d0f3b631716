"""The `fers` Processing provider."""

import os

from qgis.core import QgsApplication, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..fers_core.io.output_formats import RASTER_OUTPUT_FORMATS
from .detect_algorithm import DetectAlgorithm
from .evaluate_algorithm import EvaluateAlgorithm
from .example_model import ExampleModel
from .import_checkpoint_algorithm import ImportCheckpointAlgorithm
from .rx_algorithm import RxAlgorithm
from .train_algorithm import TrainAlgorithm

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icons", "fers.svg")


class FersProvider(QgsProcessingProvider):
    """Hyperspectral anomaly detection algorithms (provider id `fers`)."""

    def id(self):
        return "fers"

    def name(self):
        return "FERS"  # the Toolbox's group title: short, or it is cut off

    def longName(self):  # noqa: N802 (QGIS API)
        return "FERS hyperspectral anomaly detection"

    def icon(self):
        return QIcon(ICON_PATH)

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 (QGIS API)
        """The formats the engine writes block by block (the dialog's file chooser offers these)."""
        return [extension.lstrip(".") for extension in RASTER_OUTPUT_FORMATS]

    def defaultRasterFileExtension(self):  # noqa: N802 (QGIS API)
        return "tif"

    def loadAlgorithms(self):  # noqa: N802 (QGIS API)
        for algorithm in (DetectAlgorithm(), ImportCheckpointAlgorithm(), RxAlgorithm(), EvaluateAlgorithm(),
                          TrainAlgorithm()):
            self.addAlgorithm(algorithm)
        model = ExampleModel.load()
        if model is not None:
            self.addAlgorithm(model)
            if not model.attached():  # first load: the registry lists this provider only once it is added
                QgsApplication.processingRegistry().providerAdded.connect(self._attach_models)

    def _attach_models(self, provider_id):
        if provider_id != self.id():
            return
        QgsApplication.processingRegistry().providerAdded.disconnect(self._attach_models)
        for algorithm in self.algorithms():
            if isinstance(algorithm, ExampleModel):
                algorithm.attach()
