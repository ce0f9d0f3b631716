"""fers:rx: classical RX anomaly detectors (global, local dual-window, ENVI's RXD/UTD/RXD-UTD with a global or local
mean), with optional mask and polygons."""

from qgis.core import (
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ..fers_core.detectors.rx_variants import validate_variant
from ..fers_core.distributed.cluster import global_rx, local_rx, rx_variant
from ..fers_core.io.windows import DEFAULT_BLOCK_MB
from ..fers_core.pipeline.memory_guard import check_rx_run
from ..fers_core.pipeline.requests import check_rx_request
from . import outputs, scheduler
from .base import (
    BAD_BANDS_HELP,
    INPUT_NODATA_HELP,
    FersAlgorithm,
    RasterLayerParameter,
    advanced,
    input_nodata_parameter,
)


class RxAlgorithm(FersAlgorithm):
    """RX (Reed-Xiaoli): Mahalanobis distance of each pixel to the background, global or local."""

    INPUT, BANDS, MASK, MEMORY_MB, OUTPUT = "INPUT", "BANDS", "MASK", "MEMORY_MB", "OUTPUT"
    MODE, WINDOW_INNER, WINDOW_OUTER = "MODE", "WINDOW_INNER", "WINDOW_OUTER"
    COMPONENTS = "COMPONENTS"
    GLOBAL, LOCAL = 0, 1
    MODE_OPTIONS = ("Global (whole image)", "Local (ring between two windows)",
                    "RXD, local mean (outer window minus the inner one), global covariance",
                    "UTD (uniform target), global mean", "RXD-UTD, global mean",
                    "UTD, local mean", "RXD-UTD, local mean")
    VARIANT_MODES = {2: ("rxd", True), 3: ("utd", False), 4: ("rxd-utd", False), 5: ("utd", True),
                     6: ("rxd-utd", True)}  # MODE -> (rx_variants variant, local mean)
    group_name, group_id = "Anomaly detection", "anomaly"

    algorithm_name, display_name = "rx", "RX anomaly detector (classical)"
    help_anchor = "fersrx-rx-anomaly-detector-classical"
    summary = "Scores how anomalous every pixel of a hyperspectral raster is, by its distance to the background."
    icon_file = "rx.svg"
    search_tags = ("hyperspectral", "anomaly", "RX", "Reed-Xiaoli", "Mahalanobis", "local RX", "dual window",
                   "target detection", "threshold", "mask", "polygons")
    help_intro = (
        "Scores every pixel by its squared Mahalanobis distance to the background mean under the "
        "background covariance (RX, Reed-Xiaoli). Higher = more anomalous. Pixels that are nodata, NaN or "
        "infinite in any used band are nodata (-9999) in the output and never enter the statistics. A singular "
        "covariance (constant or duplicate bands, fewer pixels than bands) is handled with a pseudo-inverse. The "
        "raster is streamed in blocks, so memory depends on the block size, not the scene."
    )
    help_notes = outputs.HELP

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_parameter(RasterLayerParameter(self.INPUT, self.tr("Hyperspectral raster")),
                           "The raster to score, any band count; its nodata value, and a project layer's additional "
                           "nodata values (Transparency), are honoured.")
        self.add_parameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Bands to use (default: all not marked bad)"), None, self.INPUT, optional=True,
            allowMultiple=True,
        ), f"Band numbers to use; drop water-vapour or noisy bands here. {BAD_BANDS_HELP}")
        self.add_parameter(RasterLayerParameter(
            self.MASK, self.tr("Background exclusion mask (non-zero = exclude)"), optional=True,
        ), "Optional raster on the same grid; its non-zero pixels (known targets, clouds) are left out of the "
           "background statistics but still scored.")
        self.add_parameter(input_nodata_parameter(), INPUT_NODATA_HELP)
        self.add_parameter(QgsProcessingParameterEnum(
            self.MODE, self.tr("Detector (background)"), [self.tr(option) for option in self.MODE_OPTIONS],
            defaultValue=self.GLOBAL,
        ), "Global: one background (mean and covariance) for the whole image. Local: each pixel's own background, "
           "the ring between an inner (guard) window and an outer window centred on it; it finds targets that are "
           "unusual for their surroundings, at a higher cost. Near the edges the outer window is shifted inside "
           "the image so the ring keeps its size. ENVI's variants, all with the global covariance K (Chang and "
           "Chiang 2002): RXD = (r - m)' K^-1 (r - m) with a local mean m (the outer window minus the inner one; "
           "inner 0 = no guard), about as fast as global RX; UTD = (1 - m)' K^-1 (r - m), the uniform target "
           "detector, which depends on the data's units; RXD-UTD = (r - 1)' K^-1 (r - m) = RXD - UTD. UTD and "
           "RXD-UTD have no chi-square law, so the false-alarm-rate threshold does not apply to them.")
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.WINDOW_INNER, self.tr("Local detectors: inner (guard) window, odd, pixels"),
            QgsProcessingParameterNumber.Type.Integer, 5, minValue=0,
        )), "Local detectors only (local RX, RXD, UTD, RXD-UTD): side of the square around the pixel that is left "
            "out of its background, so a target does not spread into its own statistics (odd, default 5; 0 = no "
            "guard, RXD, UTD and RXD-UTD only).")
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.WINDOW_OUTER, self.tr("Local detectors: outer window, odd, pixels"),
            QgsProcessingParameterNumber.Type.Integer, 21, minValue=3,
        )), "Local detectors only: side of the square whose ring outside the inner window is the background "
            "(odd, larger than the inner window, default 21). For RXD, UTD and RXD-UTD: the local mean's kernel.")
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.COMPONENTS, self.tr("Local RX: principal components (0 = all bands)"),
            QgsProcessingParameterNumber.Type.Double, 0, minValue=0,
        )), "Local RX only: project the bands onto the leading principal components of the global covariance "
            "first (much faster with many bands; it drops the low-variance directions, where small targets can "
            "stand out). 0 = off (exact, all bands); below 1 = the share of variance to keep (e.g. 0.999); 1 or "
            "more = a number of components, at most the band count.")
        outputs.add_threshold_parameters(self)
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.MEMORY_MB, self.tr("Block memory budget (MB)"), QgsProcessingParameterNumber.Type.Integer,
            DEFAULT_BLOCK_MB, minValue=1, maxValue=65536,
        )), "Memory for one block of the raster; the scores are the same for any value, larger blocks read faster.")
        scheduler.add_parameter(self)
        self.add_parameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("RX scores")),
                           "Float32 GeoTIFF of the scores on the input's grid (nodata -9999).")
        outputs.add_object_destinations(self)

    def check_request(self, parameters, context):
        self.rx_request(parameters, context, false_alarm_rate=outputs.false_alarm_rate(self, parameters, context))
        outputs.check_object_parameters(self, parameters, context)

    def rx_request(self, parameters, context, **settings):
        """(MODE, RX variant, (inner, outer) windows), checked by the engine's request check with `settings`
        (false_alarm_rate); the variant is (variant, window or None, guard), None for global and local RX."""
        mode = self.parameterAsEnum(parameters, self.MODE, context)
        windows = (self.parameterAsInt(parameters, self.WINDOW_INNER, context),
                   self.parameterAsInt(parameters, self.WINDOW_OUTER, context))
        variant = None
        if mode in self.VARIANT_MODES:
            name, local_mean = self.VARIANT_MODES[mode]
            variant = validate_variant(name, windows[1], windows[0]) if local_mean else validate_variant(name)
        check_rx_request(variant, local_windows=windows if mode == self.LOCAL else None, **settings)
        return mode, variant, windows

    def compute(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        common = dict(
            bands=self.band_list(parameters, self.BANDS, context),
            mask_path=self.raster_source(parameters, self.MASK, context),
            feedback=outputs.detector_feedback(parameters, feedback),
            block_mb=self.parameterAsInt(parameters, self.MEMORY_MB, context),
            nodata=self.input_nodata(parameters, context, feedback),
        )
        source = self.raster_source(parameters, self.INPUT, context)
        cluster = scheduler.value(self, parameters, context)
        mode, variant, (inner, outer) = self.rx_request(parameters, context)
        components = self.parameterAsDouble(parameters, self.COMPONENTS, context) or None
        if components and mode != self.LOCAL:
            feedback.warning("COMPONENTS applies to local RX (MODE 1) only: it is ignored in this mode.")
            components = None
        outputs.check_polygons_memory(parameters, source, feedback)  # they run here, whatever the cluster
        if not cluster:  # on a Dask cluster the blocks use the workers' memory
            check_rx_run(source, common["bands"], common["block_mb"], mode == self.LOCAL, inner,
                         (variant[1] or 1) if variant else outer, feedback, variant=variant is not None,
                         local_bands=int(components) if components and components >= 1 else None)
        if mode == self.LOCAL:
            summary = local_rx(cluster, source, output, inner=inner, outer=outer, components=components, **common)
            n_features = summary.bands
        elif variant is not None:
            n_features = rx_variant(cluster, source, output, *variant, **common).rank
        else:
            n_features = global_rx(cluster, source, output, **common).rank
        return outputs.score_results(self, parameters, context, feedback, output, n_features)
