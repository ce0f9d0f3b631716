"""fers:train: train a FERS model (spectral and/or spatial stage) on background rasters."""

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..fers_core.training.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MODEL_BANDS,
    DEFAULT_PATCH_SIZE,
    DEFAULT_TEACHER,
    MIN_MODEL_BANDS,
    MIN_PATCH_SIZE,
    TEACHER_OPTIONS,
)
from .base import FersAlgorithm
from .detect_algorithm import DEVICE_OPTIONS, DEVICE_VALUES, ModelPathParameter

STAGE_OPTIONS = ["Both (spectral, then spatial)", "Spectral only", "Spatial only (needs INIT_MODEL)"]
TEACHER_LABELS = {"frozen-random": "Frozen random encoder (convh and pixel head trained)",
                  "trained": "Trained encoder (the whole spectral network learns)"}


class TrainAlgorithm(FersAlgorithm):
    """Trains the spectral network (stage 1) and the spatial student (stage 2) on anomaly-free rasters."""

    INPUTS, MASKS, BANDS, MODEL_BANDS, WAVELENGTHS = "INPUTS", "MASKS", "BANDS", "MODEL_BANDS", "WAVELENGTHS"
    STAGES, EPOCHS, PATCH_SIZE, BATCH_SIZE = "STAGES", "EPOCHS", "PATCH_SIZE", "BATCH_SIZE"
    LEARNING_RATE, SEED, TEACHER, INIT_MODEL = "LEARNING_RATE", "SEED", "TEACHER", "INIT_MODEL"
    DEVICE, RESUME, OUTPUT_MODEL = "DEVICE", "RESUME", "OUTPUT_MODEL"
    group_name, group_id = "Models", "models"
    needs_torch = True

    def name(self):
        return "train"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("Train a FERS model")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return self.tr(
            "Trains a FERS model on background imagery (rasters without the anomalies you look for), for "
            "fers:detect. Stage 1 trains the spectral network by reverse distillation; stage 2 trains the spatial "
            "\"rebellious student\" with the spectral network frozen.\n\n"
            "Inputs: one or more rasters; their bands are resampled to the model's bands (over wavelength when the "
            "raster and WAVELENGTHS both give them, else over the normalised band index) and scaled with each "
            "raster's minimum and maximum, exactly as at detection.\n"
            "Masks: optional rasters on the inputs' grids, one per input in the same order; non-zero pixels "
            "(e.g. known targets) are left out of the training patches, as are nodata pixels.\n"
            "Bands: optional band numbers and ranges applied to every input, e.g. '1-100, 120-150'.\n"
            "Model bands / wavelengths: the model's band count and optionally its band centres in nm (comma-"
            "separated). With INIT_MODEL, its bands and wavelengths are used.\n"
            "Stages: both, spectral only, or spatial only (needs INIT_MODEL with a spectral branch).\n"
            "Init model: optional model file or FERS authors' checkpoint folder to fine-tune.\n"
            "One epoch is as many patches as cover the usable pixels once. Same inputs, settings and seed give "
            "the same model on the same machine. After every epoch a checkpoint <output>.resume.pt is written; "
            "with RESUME a later run with the same settings continues from it (it is deleted when training ends). "
            "A cancelled run writes no model file."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUTS, self.tr("Background rasters"), QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.MASKS, self.tr("Exclusion masks, one per input in the same order (non-zero = exclude)"),
            QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, self.tr("Bands to use, e.g. 1-100, 120 (default: all)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.MODEL_BANDS, self.tr("Model bands"), QgsProcessingParameterNumber.Integer, DEFAULT_MODEL_BANDS,
            minValue=MIN_MODEL_BANDS))
        self.addParameter(QgsProcessingParameterString(
            self.WAVELENGTHS, self.tr("Model band centres in nm, comma-separated (optional)"), optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.STAGES, self.tr("Stages"), STAGE_OPTIONS, defaultValue=0))
        for key, label, default, minimum in (
            (self.EPOCHS, "Epochs", DEFAULT_EPOCHS, 1),
            (self.PATCH_SIZE, "Patch size (px)", DEFAULT_PATCH_SIZE, MIN_PATCH_SIZE),
            (self.BATCH_SIZE, "Batch size", DEFAULT_BATCH_SIZE, 1),
        ):
            self.addParameter(QgsProcessingParameterNumber(
                key, self.tr(label), QgsProcessingParameterNumber.Integer, default, minValue=minimum))
        self.addParameter(QgsProcessingParameterNumber(
            self.LEARNING_RATE, self.tr("Learning rate (Adam)"), QgsProcessingParameterNumber.Double,
            DEFAULT_LEARNING_RATE, minValue=1e-9))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Integer, 0, minValue=0))
        teacher = QgsProcessingParameterEnum(
            self.TEACHER, self.tr("Stage-1 teacher"), [TEACHER_LABELS[o] for o in TEACHER_OPTIONS],
            defaultValue=TEACHER_OPTIONS.index(DEFAULT_TEACHER))
        teacher.setFlags(teacher.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(teacher)
        self.addParameter(ModelPathParameter(
            self.INIT_MODEL, self.tr("Initial model to fine-tune (file or authors' checkpoint folder)"),
            QgsProcessingParameterFile.File, optional=True, fileFilter="FERS model (*.pt);;All files (*)"))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), DEVICE_OPTIONS, defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(
            self.RESUME, self.tr("Resume from <output>.resume.pt when it matches these settings"), defaultValue=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, self.tr("Trained model"), "FERS model (*.pt)"))

    def layer_sources(self, parameters, name, context):
        return [layer.source().split("|")[0] for layer in self.parameterAsLayerList(parameters, name, context)]

    def compute(self, parameters, context, feedback):
        from ..fers_core.torch_support import require_torch

        require_torch()
        from ..fers_core.training.run import TrainOptions, parse_band_list, parse_wavelengths, train_model

        output = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        options = TrainOptions(
            inputs=self.layer_sources(parameters, self.INPUTS, context),
            masks=self.layer_sources(parameters, self.MASKS, context) or None,
            bands=parse_band_list(self.parameterAsString(parameters, self.BANDS, context)),
            model_bands=self.parameterAsInt(parameters, self.MODEL_BANDS, context),
            wavelengths_nm=parse_wavelengths(self.parameterAsString(parameters, self.WAVELENGTHS, context)),
            stages=self.parameterAsEnum(parameters, self.STAGES, context),
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            patch_size=self.parameterAsInt(parameters, self.PATCH_SIZE, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            teacher=TEACHER_OPTIONS[self.parameterAsEnum(parameters, self.TEACHER, context)],
            init_model=self.parameterAsFile(parameters, self.INIT_MODEL, context) or None,
            device=DEVICE_VALUES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            resume=self.parameterAsBoolean(parameters, self.RESUME, context),
            output_model=output,
        )
        train_model(options, feedback)
        return {self.OUTPUT_MODEL: output}
