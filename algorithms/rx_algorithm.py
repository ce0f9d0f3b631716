"""fers:rx: classical global RX anomaly detector."""

from qgis.core import (
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..fers_core.raster_io import DEFAULT_BLOCK_MB
from ..fers_core.rx_raster import run_global_rx
from .base import FersAlgorithm


class RxAlgorithm(FersAlgorithm):
    """Global RX (Reed-Xiaoli): Mahalanobis distance of each pixel to the background."""

    INPUT, BANDS, MASK, MEMORY_MB, OUTPUT = "INPUT", "BANDS", "MASK", "MEMORY_MB", "OUTPUT"
    group_name, group_id = "Anomaly detection", "anomaly"

    def name(self):
        return "rx"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("RX anomaly detector (classical)")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return self.tr(
            "Scores every pixel by its squared Mahalanobis distance to the background mean under the "
            "background covariance (global RX, Reed-Xiaoli). Higher = more anomalous.\n\n"
            "Bands: optional band numbers to use (default all); drop water-vapour or noisy bands here.\n"
            "Mask: optional raster on the same grid; its non-zero pixels (known targets, clouds) are left out "
            "of the background statistics but still scored.\n"
            "Pixels that are nodata, NaN or infinite in any used band are nodata (-9999) in the output and "
            "never enter the statistics. A singular covariance (constant or duplicate bands, fewer pixels "
            "than bands) is handled with a pseudo-inverse.\n"
            "The raster is streamed in blocks (two passes), so memory depends on the block size, not the scene."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Hyperspectral raster")))
        self.addParameter(
            QgsProcessingParameterBand(
                self.BANDS, self.tr("Bands to use (default: all)"), None, self.INPUT, optional=True,
                allowMultiple=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.MASK, self.tr("Background exclusion mask (non-zero = exclude)"), optional=True
            )
        )
        memory = QgsProcessingParameterNumber(
            self.MEMORY_MB, self.tr("Block memory budget (MB)"), QgsProcessingParameterNumber.Integer,
            DEFAULT_BLOCK_MB, minValue=1, maxValue=65536,
        )
        memory.setFlags(memory.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(memory)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("RX scores")))

    def compute(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        run_global_rx(
            self.raster_source(parameters, self.INPUT, context),
            output,
            bands=self.band_list(parameters, self.BANDS, context),
            mask_path=self.raster_source(parameters, self.MASK, context),
            feedback=feedback,
            block_mb=self.parameterAsInt(parameters, self.MEMORY_MB, context),
        )
        return {self.OUTPUT: output}
