"""fers:detect: FERS anomaly detection (learned background features + global RX)."""

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ..fers_core.choices import (
    BRANCH_CHOICES,
    ENSEMBLE_FUSION_CHOICES,
    FUSION_CHOICES,
    PRECISION_CHOICES,
    EnsembleFusion,
    Fusion,
    Precision,
)
from ..fers_core.detectors.catalog import DETECTORS
from ..fers_core.io.tile_settings import SPATIAL_MARGIN, SPATIAL_TILE
from ..fers_core.io.windows import DEFAULT_BLOCK_MB
from ..fers_core.pipeline.requests import check_detect_request, check_spatial_tiles
from . import outputs, scheduler, styles
from .base import (
    BAD_BANDS_HELP,
    INPUT_NODATA_HELP,
    FersAlgorithm,
    RasterLayerParameter,
    advanced,
    input_nodata_parameter,
    split_file_list,
    widget_value,
)

BRANCH_LABELS = {("spectral", "spatial"): "Spectral + spatial", ("spectral",): "Spectral only",
                 ("spatial",): "Spatial only"}
BRANCH_OPTIONS = [BRANCH_LABELS[branches] for branches in BRANCH_CHOICES]
FUSION_LABELS = {Fusion.REFERENCE: "As the reference (sum above 50 model bands, product at 50 or fewer)",
                 Fusion.SUM: "Sum", Fusion.PRODUCT: "Product"}
FUSION_OPTIONS = [FUSION_LABELS[fusion] for fusion in FUSION_CHOICES]
DEVICE_OPTIONS = ["Auto (CUDA when available)", "CPU", "CUDA"]
DEVICE_VALUES = ["auto", "cpu", "cuda"]
DETECTOR_LABELS = {"global": "Global RX", "local": "Local (dual-window) RX",
                   "rxd-local-mean": "RXD with a local mean (outer window minus the inner one), global covariance",
                   "utd": "UTD (uniform target), global mean", "rxd-utd": "RXD-UTD, global mean"}
DETECTOR_VALUES = list(DETECTORS)
DETECTOR_OPTIONS = [DETECTOR_LABELS[detector] for detector in DETECTOR_VALUES]
PRECISION_LABELS = {
    Precision.FLOAT32: "float32 everywhere",
    Precision.BFLOAT16: "bfloat16 everywhere (fastest, least exact)",
    Precision.AUTO: "auto (bfloat16 where native and checked)",
}
PRECISION_OPTIONS = [PRECISION_LABELS[precision] for precision in PRECISION_CHOICES]
PRECISION_DEFAULT = PRECISION_CHOICES.index(Precision.AUTO)
ENSEMBLE_FUSION_LABELS = {
    EnsembleFusion.RANK: "Rank (mean of each member's empirical CDF)",
    EnsembleFusion.STANDARDISED: "Standardised scores (mean of (score - mean) / standard deviation)",
}
ENSEMBLE_FUSION_OPTIONS = [ENSEMBLE_FUSION_LABELS[fusion] for fusion in ENSEMBLE_FUSION_CHOICES]


class ModelPathParameter(QgsProcessingParameterFile):
    """A file parameter that also accepts a folder (the FERS authors' checkpoint layout).

    The file widget stays the file picker; a folder path can be typed or pasted. The model
    loader checks the path and explains what is wrong.
    """

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802 (QGIS API)
        value = widget_value(value)  # an empty file widget hands over a null QVariant
        if value is None or (isinstance(value, str) and not value.strip()):
            return bool(self.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional)
        if isinstance(value, str):
            return True  # a file or a folder: the model loader checks it and explains what is wrong
        return super().checkValueIsAcceptable(value, context)  # a QgsProperty (model input, batch expression)

    def clone(self):
        optional = bool(self.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional)
        copy = ModelPathParameter(self.name(), self.description(), self.behavior(), self.extension(),
                                  self.defaultValue(), optional, self.fileFilter())
        copy.setFlags(self.flags())
        copy.setHelp(self.help())
        return copy


class DetectAlgorithm(FersAlgorithm):
    """FERS: the model's spectral and spatial features are added to the cube, global RX scores it."""

    INPUT, BANDS, MASK, MODEL = "INPUT", "BANDS", "MASK", "MODEL"
    BRANCHES, FUSION, DEVICE = "BRANCHES", "FUSION", "DEVICE"
    MEMORY_MB, TILE_SIZE, TILE_MARGIN = "MEMORY_MB", "TILE_SIZE", "TILE_MARGIN"
    OUTPUT, OUTPUT_SPECTRAL, OUTPUT_SPATIAL = "OUTPUT", "OUTPUT_SPECTRAL", "OUTPUT_SPATIAL"
    DETECTOR, WINDOW_INNER, WINDOW_OUTER, PRECISION = "DETECTOR", "WINDOW_INNER", "WINDOW_OUTER", "PRECISION"
    MODELS, ENSEMBLE_FUSION, FUSE_RX = "MODELS", "ENSEMBLE_FUSION", "FUSE_RX"
    group_name, group_id = "Anomaly detection", "anomaly"
    needs_torch = True

    algorithm_name, display_name = "detect", "FERS anomaly detector"
    help_anchor = "fersdetect-fers-anomaly-detector"
    summary = "Scores how anomalous every pixel of a hyperspectral raster is, with learned background features."
    icon_file = "detect.svg"
    search_tags = ("hyperspectral", "anomaly", "FERS", "deep learning", "neural network", "RX", "Reed-Xiaoli",
                   "target detection", "rebellious student", "threshold", "mask", "polygons")
    help_intro = (
        "FERS (\"Rebellious Student\"): networks trained once on background imagery add learned background "
        "features to the cube, then global RX scores it. No per-scene training or tuning. Needs PyTorch."
    )
    help_notes = outputs.HELP

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_parameter(RasterLayerParameter(self.INPUT, self.tr("Hyperspectral raster")),
                           "The raster to score, any band count; its nodata value, and a project layer's additional "
                           "nodata values (Transparency), are honoured.")
        self.add_parameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Bands to use (default: all not marked bad)"), None, self.INPUT, optional=True,
            allowMultiple=True),
            f"Band numbers to use. {BAD_BANDS_HELP} The selected bands are resampled to the model's "
            "band count: "
            "linearly over wavelength when the raster and the model both carry wavelengths, else over the "
            "normalised band index. Fewer bands than the model's are interpolated (the log says so when under half); "
            "more are thinned: each model band interpolates between its two nearest raster bands.")
        self.add_parameter(ModelPathParameter(
            self.MODEL, self.tr("Model file or authors' checkpoint folder (empty = bundled model)"),
            QgsProcessingParameterFile.Behavior.File, optional=True, fileFilter="FERS model (*.pt);;All files (*)"),
            "A FERS model file (.pt, from Train a FERS model or Import FERS authors' checkpoint) or a FERS "
            "authors' checkpoint folder (convh.pt, enc.pt, pc.pt, optionally spa_fen.pt; type or paste the "
            "folder path). Empty = the bundled default: the ensemble of fers_default.pt (the branches asked under "
            "Branches) and fers_spectral100.pt and fers_spectral200.pt (trained spectral networks at 100 and 200 "
            "model bands), fused by rank. A bundled member with more than twice the raster's bands is left out "
            "(under 100 bands the 200-band one, under 50 both spectral ones): it would interpolate most of its "
            "bands.")
        self.add_parameter(advanced(QgsProcessingParameterMultipleLayers(
            self.MODELS, self.tr("Further models to fuse with the model (ensemble)"),
            QgsProcessing.SourceType.TypeFile, optional=True)),
            "FERS model files (.pt) or authors' checkpoint folders scored alongside the model above (or the bundled "
            "default); the score maps are fused as Ensemble fusion says. Models of any band count can be mixed.")
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.ENSEMBLE_FUSION, self.tr("Ensemble fusion"), ENSEMBLE_FUSION_OPTIONS, defaultValue=0)),
            "How several members' score maps become one: rank (default; each member's score becomes its percentile "
            "among the valid pixels, its empirical CDF, and the percentiles are averaged) or standardised scores "
            "(each map minus its mean, over its standard deviation, averaged). The fused score has no chi-square law.")
        self.add_parameter(advanced(QgsProcessingParameterBoolean(
            self.FUSE_RX, self.tr("Fuse plain global RX in as one more member (do no harm)"), defaultValue=False)),
            "Adds plain global RX on the raster (its selected bands) to the ensemble: limits the loss on scenes the "
            "networks do not fit, at some cost in mean AUC on the development scenes (weights/README.md).")
        self.add_parameter(RasterLayerParameter(
            self.MASK, self.tr("Background exclusion mask (non-zero = exclude)"), optional=True),
            "Optional raster on the same grid; its non-zero pixels (known targets, clouds) are left out of the RX "
            "background statistics but still scored.")
        self.add_parameter(input_nodata_parameter(), INPUT_NODATA_HELP)
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.BRANCHES, self.tr("Branches"), BRANCH_OPTIONS, defaultValue=0)),
            "Spectral + spatial (default), spectral only or spatial only. With both, a model that has one uses "
            "it and says so in the log; a model without the one chosen is refused, and an ensemble member "
            "without it uses its own, with a warning.")
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.FUSION, self.tr("Fusion"), FUSION_OPTIONS, defaultValue=0)),
            "How the two branches' features are combined. As the reference: RX of x + F_spe + F_spa above 50 model "
            "bands; the product of the min-max normalised (scaled to 0-1) RX of x + F_spa and of x + F_spe at 50 or "
            "fewer (the bundled model has 50). Sum or product force one of the two.")
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.DEVICE, self.tr("Device"), DEVICE_OPTIONS, defaultValue=0)),
            "Where the networks run: Auto uses an NVIDIA GPU (CUDA) when PyTorch sees one, else the CPU.")
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.DETECTOR, self.tr("Detector on the enhanced cube"), DETECTOR_OPTIONS, defaultValue=0)),
            "Global RX (the FERS method) or local dual-window RX on the enhanced cube, or one of ENVI's variants with "
            "the global covariance (see fers:rx): RXD with a local mean (the outer window minus the inner one), UTD "
            "or RXD-UTD. UTD and RXD-UTD have no chi-square law (no false-alarm-rate threshold).")
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.WINDOW_INNER, self.tr("Local detectors: inner (guard) window, odd, pixels"),
            QgsProcessingParameterNumber.Type.Integer, 5, minValue=0)),
            "Local detectors only (local RX, RXD, UTD, RXD-UTD): side of the square around the pixel that is left "
            "out of its background (odd, default 5; 0 = no guard, RXD, UTD and RXD-UTD only).")
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.WINDOW_OUTER, self.tr("Local detectors: outer window, odd, pixels"),
            QgsProcessingParameterNumber.Type.Integer, 21, minValue=3)),
            "Local detectors only: side of the square whose ring outside the inner window is the background "
            "(odd, larger than the inner window, default 21). For RXD, UTD and RXD-UTD: the local mean's kernel.")
        outputs.add_threshold_parameters(self, fused_scores=True)
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.PRECISION, self.tr("Network arithmetic"), PRECISION_OPTIONS, defaultValue=PRECISION_DEFAULT)),
            "Number format of the networks. Auto (default) runs the network trunks in bfloat16 (a 16-bit "
            "floating-point format of about 3 significant digits) where the CPU or GPU "
            "has it natively and the model's AUC was checked under it, else float32. bfloat16 everywhere is the "
            "fastest and changes the scores more than auto (see the README).")
        for key, label, default, minimum, text in (
            (self.MEMORY_MB, "Window memory budget (MB)", DEFAULT_BLOCK_MB, 1,
             "Memory for one window of the raster; the scores do not depend on it."),
            (self.TILE_SIZE, "Spatial tile size (px)", SPATIAL_TILE, 16,
             "The spatial branch sees one tile at a time (its pyramid pooling summarises the whole tile), so its "
             "output depends on the tile "
             "size, a little (the README's fers:detect Tiling paragraph has the measured effect). The "
             "spectral branch gives identical results for any tiling."),
            (self.TILE_MARGIN, "Spatial tile margin (px)", SPATIAL_MARGIN, 0,
             "Pixels of each tile's border that are computed but not kept: the central part (tile size - 2 x "
             "margin) of every tile is written."),
        ):
            self.add_parameter(advanced(QgsProcessingParameterNumber(
                key, self.tr(label), QgsProcessingParameterNumber.Type.Integer, default, minValue=minimum)), text)
        scheduler.add_parameter(self, models=True)
        self.add_parameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("FERS anomaly scores")),
                           "Float32 GeoTIFF of the scores on the input's grid (nodata -9999); higher = more anomalous.")
        self.add_parameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_SPECTRAL, self.tr("Spectrally enhanced cube (x + F_spe)"), optional=True,
            createByDefault=False),
            "Optional: the input in model bands plus the spectral features, for any other detector. It belongs to one "
            "model: choose one under Model (the bundled default fuses several).")
        self.add_parameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_SPATIAL, self.tr("Spatially enhanced cube (x + F_spa)"), optional=True,
            createByDefault=False),
            "Optional: the input in model bands plus the spatial features, for any other detector. It belongs to one "
            "model: choose one under Model (the bundled default fuses several).")
        outputs.add_object_destinations(self)

    def check_request(self, parameters, context):
        """The settings known before the models load; compute checks the rest (members, fusion, SCHEDULER)."""
        check_spatial_tiles(self.parameterAsInt(parameters, self.TILE_SIZE, context),
                            self.parameterAsInt(parameters, self.TILE_MARGIN, context))
        check_detect_request(DETECTOR_VALUES[self.parameterAsEnum(parameters, self.DETECTOR, context)],
                             self.windows(parameters, context),
                             false_alarm_rate=outputs.false_alarm_rate(self, parameters, context))
        outputs.check_object_parameters(self, parameters, context)

    def windows(self, parameters, context):
        """(inner, outer) of the local detectors."""
        return (self.parameterAsInt(parameters, self.WINDOW_INNER, context),
                self.parameterAsInt(parameters, self.WINDOW_OUTER, context))

    def compute(self, parameters, context, feedback):
        from ..fers_core.enhance.torch_support import require_torch

        require_torch()
        from ..fers_core.distributed.cluster import fers_detection
        from ..fers_core.enhance.default_model import default_model_paths
        from ..fers_core.enhance.model_cache import detection_model
        from ..fers_core.pipeline.detect import check_model_branches
        from ..fers_core.pipeline.ensemble import (
            Member,
            check_distinct_models,
            members_for_input,
            run_ensemble_detection,
        )
        from ..fers_core.pipeline.memory_guard import check_detection_run
        from ..fers_core.pipeline.options import DetectOptions

        cluster = scheduler.value(self, parameters, context)
        chosen = self.parameterAsFile(parameters, self.MODEL, context)
        bundled = [] if chosen else [str(path) for path in default_model_paths()]  # left out where they don't fit
        model_paths = ([chosen] if chosen else bundled) + \
            [path for item in self.parameterAsFileList(parameters, self.MODELS, context) if item
             for path in split_file_list(item)]
        model_path = model_paths[0]
        leading = ["MODEL"] if chosen else [f"the bundled model {Path(path).name}" for path in bundled]
        check_distinct_models(model_paths, leading + [f"MODELS item {index + 1}"
                                                      for index in range(len(model_paths) - len(leading))])
        # kept for the session's next run while the files are unchanged
        models = [detection_model(path) for path in model_paths]
        model = models[0]
        members = [Member(m, p, bundled=i < len(bundled)) for i, (m, p) in enumerate(zip(models, model_paths))]
        if self.parameterAsBool(parameters, self.FUSE_RX, context):
            members.append(Member())
        fusion = ENSEMBLE_FUSION_CHOICES[self.parameterAsEnum(parameters, self.ENSEMBLE_FUSION, context)]
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        inner, outer = self.windows(parameters, context)
        options = DetectOptions(
            bands=self.band_list(parameters, self.BANDS, context),
            mask_path=self.raster_source(parameters, self.MASK, context),
            nodata=self.input_nodata(parameters, context, feedback),
            branches=BRANCH_CHOICES[self.parameterAsEnum(parameters, self.BRANCHES, context)],
            fusion=FUSION_CHOICES[self.parameterAsEnum(parameters, self.FUSION, context)],
            device=DEVICE_VALUES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            block_mb=self.parameterAsInt(parameters, self.MEMORY_MB, context),
            spatial_tile=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            spatial_margin=self.parameterAsInt(parameters, self.TILE_MARGIN, context),
            spectral_output=self.optional_output(parameters, self.OUTPUT_SPECTRAL, context),
            spatial_output=self.optional_output(parameters, self.OUTPUT_SPATIAL, context),
            detector=DETECTOR_VALUES[self.parameterAsEnum(parameters, self.DETECTOR, context)],
            window_inner=inner,
            window_outer=outer,
            precision=PRECISION_CHOICES[self.parameterAsEnum(parameters, self.PRECISION, context)],
            threads=self.thread_count(),
        )
        if len(members) == 1:
            check_model_branches(model, options.branches)  # before the fusion's checks, which assume one it has
        available = tuple(b for b in options.branches if model.has_branch(b))
        check_detect_request(options.detector, (inner, outer), scheduler=cluster,
                             members=len(members), false_alarm_rate=outputs.false_alarm_rate(self, parameters, context),
                             fusion=options.fusion.resolve(model.bands, available))
        source = self.raster_source(parameters, self.INPUT, context)
        running = members_for_input(source, options.bands, members, feedback) if bundled else members  # that fit
        alone = f" (the other bundled members left out; its scores are mapped by {fusion} fusion, as the ensemble's " \
            "are)" if len(members) > 1 else ""
        feedback.info("Model: " + " + ".join(member.label for member in running) +
                      (f" ({fusion} fusion)" if len(running) > 1 else alone))
        outputs.check_polygons_memory(parameters, source, feedback)  # they run here, whatever the cluster
        if not cluster:  # on a Dask cluster the strips use the workers' memory
            check_detection_run(source, [m.model for m in running if m.model is not None], options, feedback)
        detector_feedback = outputs.detector_feedback(parameters, feedback)
        features = model.bands  # the chi-square law's degrees of freedom, unless the run found a lower rank
        if len(members) > 1:
            run_ensemble_detection(source, output, members, options, fusion, detector_feedback, left_out_reported=True)
        else:
            features = fers_detection(cluster, source, output, model_path, options, detector_feedback, model).rank \
                or model.bands
        results = outputs.score_results(self, parameters, context, feedback, output, features)
        for key, path in ((self.OUTPUT_SPECTRAL, options.spectral_output),
                          (self.OUTPUT_SPATIAL, options.spatial_output)):
            if path and Path(path).exists():  # a branch the run did not compute is warned of, not written
                results[key] = path
                styles.stack_cube(context, path, output)
        return results
