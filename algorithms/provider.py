"""The `fers` Processing provider."""

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .detect_algorithm import DetectAlgorithm
from .evaluate_algorithm import EvaluateAlgorithm
from .import_checkpoint_algorithm import ImportCheckpointAlgorithm
from .rx_algorithm import RxAlgorithm
from .train_algorithm import TrainAlgorithm

ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icons", "fers.svg")


class FersProvider(QgsProcessingProvider):
    """Hyperspectral anomaly detection algorithms (provider id `fers`)."""

    def id(self):
        return "fers"

    def name(self):
        return "FERS hyperspectral anomaly detection"

    def longName(self):  # noqa: N802 (QGIS API)
        return self.name()

    def icon(self):
        return QIcon(ICON_PATH)

    def loadAlgorithms(self):  # noqa: N802 (QGIS API)
        for algorithm in (DetectAlgorithm(), ImportCheckpointAlgorithm(), RxAlgorithm(), EvaluateAlgorithm(),
                          TrainAlgorithm()):
            self.addAlgorithm(algorithm)
