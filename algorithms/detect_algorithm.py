"""fers:detect: FERS anomaly detection (learned background features + global RX)."""

from qgis.core import (
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ..fers_core.errors import Cancelled, InputError
from ..fers_core.feedback import StageFeedback
from ..fers_core.raster_io import DEFAULT_BLOCK_MB
from ..fers_core.tile_settings import SPATIAL_MARGIN, SPATIAL_TILE
from . import outputs, scheduler, styles
from .base import FersAlgorithm, RasterLayerParameter

BRANCH_OPTIONS = ["Spectral + spatial", "Spectral only", "Spatial only"]
FUSION_OPTIONS = ["As the reference (sum above 50 model bands, product at 50 or fewer)", "Sum", "Product"]
DEVICE_OPTIONS = ["Auto (CUDA when available)", "CPU", "CUDA"]
DEVICE_VALUES = ["auto", "cpu", "cuda"]
DETECTOR_OPTIONS = ["Global RX", "Local (dual-window) RX"]
DETECTOR_VALUES = ["global", "local"]
PRECISION_OPTIONS = [
    "float32 everywhere",
    "bfloat16 everywhere (fastest; AUC moved by up to 0.0065 on the real test scenes)",
    "auto: network trunks in bfloat16 where the CPU/GPU has it natively, else float32 (AUC within 0.0003)",
]
PRECISION_VALUES = ["float32", "bfloat16", "auto"]
PRECISION_DEFAULT = 2


class ModelPathParameter(QgsProcessingParameterFile):
    """A file parameter that also accepts a folder (the FERS authors' checkpoint layout).

    The file widget stays the file picker; a folder path can be typed or pasted. The model
    loader checks the path and explains what is wrong.
    """

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802 (QGIS API)
        if value is None or (isinstance(value, str) and not value.strip()):
            return bool(self.flags() & QgsProcessingParameterDefinition.FlagOptional)
        return isinstance(value, str)

    def clone(self):
        optional = bool(self.flags() & QgsProcessingParameterDefinition.FlagOptional)
        copy = ModelPathParameter(self.name(), self.description(), self.behavior(), self.extension(),
                                  self.defaultValue(), optional, self.fileFilter())
        copy.setFlags(self.flags())
        return copy


class DetectAlgorithm(FersAlgorithm):
    """FERS: the model's spectral and spatial features are added to the cube, global RX scores it."""

    INPUT, BANDS, MASK, MODEL = "INPUT", "BANDS", "MASK", "MODEL"
    BRANCHES, FUSION, DEVICE = "BRANCHES", "FUSION", "DEVICE"
    MEMORY_MB, TILE_SIZE, TILE_MARGIN = "MEMORY_MB", "TILE_SIZE", "TILE_MARGIN"
    OUTPUT, OUTPUT_SPECTRAL, OUTPUT_SPATIAL = "OUTPUT", "OUTPUT_SPECTRAL", "OUTPUT_SPATIAL"
    DETECTOR, WINDOW_INNER, WINDOW_OUTER, PRECISION = "DETECTOR", "WINDOW_INNER", "WINDOW_OUTER", "PRECISION"
    group_name, group_id = "Anomaly detection", "anomaly"
    needs_torch = True

    def name(self):
        return "detect"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("FERS anomaly detector")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return self.tr(
            "FERS (\"Rebellious Student\"): networks trained once on background imagery add learned background "
            "features to the cube, then global RX scores it. No per-scene training or tuning.\n\n"
            "Model: a FERS model file (.pt) or a FERS authors' checkpoint folder (convh.pt, enc.pt, pc.pt, "
            "optionally spa_fen.pt); empty = the bundled default model.\n"
            "Bands: optional band numbers (default all). The selected bands are resampled to the model's band "
            "count: linearly over wavelength when the raster and the model both carry wavelengths, else over the "
            "normalised band index. Fewer bands than the model are interpolated (a warning says so); more are "
            "averaged down by the interpolation.\n"
            "Branches: spectral + spatial (default), spectral only or spatial only. A model without a branch uses "
            "what it has and says so in the log.\n"
            "Fusion: as the reference (RX of x + F_spe + F_spa above 50 model bands; product of the min-max "
            "normalised RX of x + F_spa and of x + F_spe at 50 or fewer), sum or product.\n"
            "Mask: optional raster; non-zero pixels are left out of the RX background statistics.\n"
            "Enhanced cube outputs (x + F_spe, x + F_spa, in model bands) can feed any other detector.\n"
            "Tiling (advanced): the spectral branch gives identical results for any tiling. The spatial branch "
            "sees one tile at a time (pyramid pooling), so its output depends on the tile size: tiles are "
            "TILE_SIZE px (default 128), of which the central part (TILE_SIZE - 2 x TILE_MARGIN) is kept; AUC on real "
            "scenes changed by under 0.0005 between 32 px tiles and the whole image.\n\n"
        ) + self.tr(scheduler.HELP)

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(RasterLayerParameter(self.INPUT, self.tr("Hyperspectral raster")))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Bands to use (default: all)"), None, self.INPUT, optional=True, allowMultiple=True))
        self.addParameter(ModelPathParameter(
            self.MODEL, self.tr("Model file or authors' checkpoint folder (empty = bundled model)"),
            QgsProcessingParameterFile.File, optional=True, fileFilter="FERS model (*.pt);;All files (*)"))
        self.addParameter(QgsProcessingParameterEnum(self.BRANCHES, self.tr("Branches"), BRANCH_OPTIONS,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.FUSION, self.tr("Fusion"), FUSION_OPTIONS, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), DEVICE_OPTIONS, defaultValue=0))
        self.addParameter(RasterLayerParameter(
            self.MASK, self.tr("Background exclusion mask (non-zero = exclude)"), optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.DETECTOR, self.tr("Detector on the enhanced cube"),
                                                     DETECTOR_OPTIONS, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.WINDOW_INNER, self.tr("Local: inner (guard) window, odd, pixels"),
            QgsProcessingParameterNumber.Integer, 5, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.WINDOW_OUTER, self.tr("Local: outer window, odd, pixels"), QgsProcessingParameterNumber.Integer, 21,
            minValue=3))
        outputs.add_threshold_parameters(self)
        precision = QgsProcessingParameterEnum(self.PRECISION, self.tr("Network arithmetic"), PRECISION_OPTIONS,
                                               defaultValue=PRECISION_DEFAULT)
        precision.setFlags(precision.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(precision)
        for key, label, default, minimum in (
            (self.MEMORY_MB, "Window memory budget (MB)", DEFAULT_BLOCK_MB, 1),
            (self.TILE_SIZE, "Spatial tile size (px)", SPATIAL_TILE, 16),
            (self.TILE_MARGIN, "Spatial tile margin (px)", SPATIAL_MARGIN, 0),
        ):
            parameter = QgsProcessingParameterNumber(key, self.tr(label), QgsProcessingParameterNumber.Integer,
                                                     default, minValue=minimum)
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        scheduler.add_parameter(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("FERS anomaly scores")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_SPECTRAL, self.tr("Spectrally enhanced cube (x + F_spe)"), optional=True,
            createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_SPATIAL, self.tr("Spatially enhanced cube (x + F_spa)"), optional=True,
            createByDefault=False))
        outputs.add_object_destinations(self)

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API)
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        margin = self.parameterAsInt(parameters, self.TILE_MARGIN, context)
        if tile - 2 * margin < 1:
            return False, self.tr(f"TILE_MARGIN ({margin}) must be less than half of TILE_SIZE ({tile}).")
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        if DETECTOR_VALUES[self.parameterAsEnum(parameters, self.DETECTOR, context)] == "local":
            problem = self.local_window_problem(parameters, context)
            if problem:
                return False, problem
        return outputs.check_object_parameters(self, parameters, context)

    def compute(self, parameters, context, feedback):
        from ..fers_core.torch_support import require_torch

        require_torch()
        from ..fers_core.default_model import default_model_path
        from ..fers_core.detect import BRANCH_CHOICES, DetectOptions, choose_fusion
        from ..fers_core.distributed import fers_detection
        from ..fers_core.memory_guard import check_detection_run
        from ..fers_core.model_cache import detection_model

        cluster = scheduler.value(self, parameters, context)
        model_path = self.parameterAsFile(parameters, self.MODEL, context) or str(default_model_path())
        model = detection_model(model_path)  # kept for the session's next run while the file is unchanged
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        options = DetectOptions(
            bands=self.band_list(parameters, self.BANDS, context),
            mask_path=self.raster_source(parameters, self.MASK, context),
            branches=BRANCH_CHOICES[self.parameterAsEnum(parameters, self.BRANCHES, context)],
            fusion=self.parameterAsEnum(parameters, self.FUSION, context),
            device=DEVICE_VALUES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            block_mb=self.parameterAsInt(parameters, self.MEMORY_MB, context),
            spatial_tile=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            spatial_margin=self.parameterAsInt(parameters, self.TILE_MARGIN, context),
            spectral_output=self.optional_output(parameters, self.OUTPUT_SPECTRAL, context),
            spatial_output=self.optional_output(parameters, self.OUTPUT_SPATIAL, context),
            detector=DETECTOR_VALUES[self.parameterAsEnum(parameters, self.DETECTOR, context)],
            window_inner=self.parameterAsInt(parameters, self.WINDOW_INNER, context),
            window_outer=self.parameterAsInt(parameters, self.WINDOW_OUTER, context),
            precision=PRECISION_VALUES[self.parameterAsEnum(parameters, self.PRECISION, context)],
            threads=self.thread_count(),
        )
        if cluster and options.detector == "local":
            raise InputError("SCHEDULER runs global RX only: leave it empty for the local detector.")
        available = tuple(b for b in options.branches if model.has_branch(b))
        if outputs.asked_for(parameters) and choose_fusion(options.fusion, model.bands, available) == "product" and \
                self.parameterAsEnum(parameters, outputs.THRESHOLD_METHOD, context) == outputs.FALSE_ALARM_RATE:
            raise InputError("Product fusion gives normalised scores with no chi-square law, so a false-alarm-rate "
                             "threshold does not apply: choose a top-percentage or absolute threshold, or sum fusion.")
        source = self.raster_source(parameters, self.INPUT, context)
        feedback.info(f"Model: {model_path}")
        if not cluster:  # on a Dask cluster the strips use the workers' memory
            check_detection_run(source, model, options, feedback)
        detector_feedback = StageFeedback(feedback, 0, 85 if outputs.asked_for(parameters) else 100)
        fers_detection(cluster, source, output, model_path, options, detector_feedback, model)
        results = {self.OUTPUT: output}
        try:
            results.update(outputs.run_object_outputs(self, parameters, context, feedback, output, model.bands))
        except Cancelled:
            outputs.remove_outputs(output)
            raise
        styles.style_scores(context, output)
        for key, path in ((self.OUTPUT_SPECTRAL, options.spectral_output),
                          (self.OUTPUT_SPATIAL, options.spatial_output)):
            if path:
                results[key] = path
        return results
