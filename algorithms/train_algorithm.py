"""fers:train: train a FERS model (spectral and/or spatial stage) on background rasters."""

import os

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..fers_core.training import defaults
from ..fers_core.training.output_path import default_model_output
from .base import FersAlgorithm, RasterListParameter, advanced, input_nodata_parameter, layer_nodata, widget_value
from .detect_algorithm import DEVICE_OPTIONS, DEVICE_VALUES, ModelPathParameter

STAGE_LABELS = {defaults.STAGES_BOTH: "Both (spectral, then spatial)", defaults.STAGES_SPECTRAL: "Spectral only",
                defaults.STAGES_SPATIAL: "Spatial only (needs an initial model)"}
STAGE_OPTIONS = [STAGE_LABELS[stages] for stages in sorted(STAGE_LABELS)]  # the enum index is the stages value
TEACHER_LABELS = {"frozen-random": "Frozen random encoder (convh and pixel head trained)",
                  "trained": "Trained encoder (the whole spectral network learns)"}


class TrainAlgorithm(FersAlgorithm):
    """Trains the spectral network (stage 1) and the spatial student (stage 2) on anomaly-free rasters."""

    INPUTS, MASKS, BANDS, MODEL_BANDS, WAVELENGTHS = "INPUTS", "MASKS", "BANDS", "MODEL_BANDS", "WAVELENGTHS"
    STAGES, EPOCHS, PATCH_SIZE, BATCH_SIZE = "STAGES", "EPOCHS", "PATCH_SIZE", "BATCH_SIZE"
    LEARNING_RATE, SEED, TEACHER, INIT_MODEL = "LEARNING_RATE", "SEED", "TEACHER", "INIT_MODEL"
    DEVICE, RESUME, OUTPUT_MODEL = "DEVICE", "RESUME", "OUTPUT_MODEL"
    group_name, group_id = "Model training", "training"
    needs_torch = True

    algorithm_name, display_name = "train", "Train a FERS model"
    help_anchor = "ferstrain-train-a-fers-model"
    summary = "Trains a FERS model on background rasters, for the FERS anomaly detector."
    icon_file = "train.svg"
    search_tags = ("hyperspectral", "anomaly", "FERS", "deep learning", "neural network", "training",
                   "fine-tune", "reverse distillation", "background", "model")
    help_intro = (
        "Trains a FERS model on background imagery (rasters without the anomalies you look for), for the FERS "
        "anomaly detector. Stage 1 trains the spectral network by reverse distillation (a student network learns to "
        "reproduce a teacher's features of background pixels); stage 2 trains the spatial "
        "\"rebellious student\" with the spectral network frozen. Needs PyTorch."
    )
    help_notes = (
        "One epoch is as many patches as cover the usable pixels once. Same inputs, settings and seed give "
        "the same model on the same machine. After every epoch a checkpoint is written beside the trained model "
        "(its name + .resume.pt); it is deleted when training ends. A cancelled run writes no model file."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_parameter(RasterListParameter(self.INPUTS, self.tr("Background rasters")),
            "One or more rasters; their bands are resampled to the model's bands (over wavelength when the raster "
            "and the model band centres both give them, else over the normalised band index) and scaled with each "
            "raster's minimum and maximum, exactly as at detection.")
        self.add_parameter(RasterListParameter(
            self.MASKS, self.tr("Exclusion masks, one per input in the same order (non-zero = exclude)"),
            optional=True),
            "Optional rasters on the inputs' grids; non-zero pixels (e.g. known targets) are left out of the "
            "training patches, as are nodata pixels.")
        self.add_parameter(input_nodata_parameter("Input nodata value for every input (besides each raster's own)"),
                           "A value that marks missing pixels in the inputs (e.g. a collar of 0 or -9999 that a file "
                           "does not declare), compared with the stored values: pixels holding it in any used band "
                           "are left out of the training patches, besides each raster's own nodata and an input "
                           "layer's additional nodata values (Transparency), which are honoured too. Empty = none.")
        self.add_parameter(QgsProcessingParameterString(
            self.BANDS, self.tr("Bands to use, e.g. 1-100, 120 (default: all not marked bad)"), optional=True),
            "Band numbers and ranges applied to every input, e.g. '1-100, 120-150'. Empty = all bands, less those "
            "each raster's metadata marks bad (ENVI bbl = 0).")
        self.add_parameter(ModelPathParameter(
            self.INIT_MODEL, self.tr("Initial model to fine-tune (file or authors' checkpoint folder)"),
            QgsProcessingParameterFile.Behavior.File, optional=True, fileFilter="FERS model (*.pt);;All files (*)"),
            "Optional FERS model file or FERS authors' checkpoint folder to start from; its bands and wavelengths "
            "are used. Empty = train from scratch.")
        self.add_parameter(QgsProcessingParameterBoolean(
            self.RESUME, self.tr("Resume an interrupted training when its checkpoint matches these settings"),
            defaultValue=True),
            "Continue from the checkpoint beside the trained model (its name + .resume.pt) that an interrupted run "
            "with the same settings left; off = start again.")
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.STAGES, self.tr("Stages"), STAGE_OPTIONS, defaultValue=defaults.STAGES_BOTH)),
            "Both (default), spectral only, or spatial only (needs an initial model with a spectral branch).")
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.MODEL_BANDS, self.tr("Model bands"), QgsProcessingParameterNumber.Type.Integer,
            defaults.DEFAULT_MODEL_BANDS, minValue=defaults.MIN_MODEL_BANDS, maxValue=defaults.MAX_MODEL_BANDS)),
            f"The model's band count (default {defaults.DEFAULT_MODEL_BANDS}); every raster is resampled to it. "
            "Ignored with an initial model.")
        self.add_parameter(advanced(QgsProcessingParameterString(
            self.WAVELENGTHS, self.tr("Model band centres in nm, comma-separated"), optional=True)),
            "Optional: the model's band centres, one per model band, so rasters with wavelengths are resampled "
            "over wavelength. Ignored with an initial model.")
        for key, label, default, minimum, text in (
            (self.EPOCHS, "Epochs", defaults.DEFAULT_EPOCHS, 1, "Passes over the training pixels, per stage."),
            (self.PATCH_SIZE, "Patch size (px)", defaults.DEFAULT_PATCH_SIZE, defaults.MIN_PATCH_SIZE,
             "Side of the square training patches."),
            (self.BATCH_SIZE, "Batch size", defaults.DEFAULT_BATCH_SIZE, 1, "Patches per optimisation step."),
        ):
            self.add_parameter(advanced(QgsProcessingParameterNumber(
                key, self.tr(label), QgsProcessingParameterNumber.Type.Integer, default, minValue=minimum)), text)
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.LEARNING_RATE, self.tr("Learning rate (Adam)"), QgsProcessingParameterNumber.Type.Double,
            defaults.DEFAULT_LEARNING_RATE, minValue=1e-9)), "Step size of the Adam optimiser.")
        self.add_parameter(advanced(QgsProcessingParameterNumber(
            self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0)),
            "Seed of the initialisation and of the patch order: the same seed gives the same model.")
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.TEACHER, self.tr("Stage-1 teacher"), [TEACHER_LABELS[o] for o in defaults.TEACHER_OPTIONS],
            defaultValue=defaults.TEACHER_OPTIONS.index(defaults.DEFAULT_TEACHER))),
            "Frozen random encoder (default: only the input layer, convh, and the pixel head learn, around a fixed "
            "random encoder) or a trained encoder (the whole spectral network learns).")
        self.add_parameter(advanced(QgsProcessingParameterEnum(
            self.DEVICE, self.tr("Device"), DEVICE_OPTIONS, defaultValue=0)),
            "Where the networks train: Auto uses an NVIDIA GPU (CUDA) when PyTorch sees one, else the CPU.")
        self.add_parameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, self.tr("Trained model (left temporary: kept beside the first raster)"),
            "FERS model (*.pt)", optional=True, createByDefault=True),
            "The FERS model file (.pt) to write, for the FERS anomaly detector's Model parameter. Left at "
            "[Save to temporary file] (the default) or empty, the model is kept beside the first input, named after "
            "it (e.g. scene_fers_model.pt for scene.tif; in the QGIS profile's fers/models folder when that "
            "folder is read-only), with _2, _3, ... rather than replacing a model; the log names the file.")

    def layer_sources(self, parameters, name, context):
        return [path for path, _ in self.raster_sources(parameters, name, context)]

    def model_output(self, parameters, context, inputs, feedback):
        """The model file to write: the one asked for, else a real file beside the first input.

        "Save to temporary file" (the dialog's default) and no value at all give the default of
        fers_core.training.output_path: a temporary model, and its resume checkpoint, would be
        lost when QGIS closes.
        """
        value = widget_value(parameters.get(self.OUTPUT_MODEL))
        if not inputs or value not in (None, "", QgsProcessing.TEMPORARY_OUTPUT):
            return self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        fallback = os.path.join(QgsApplication.qgisSettingsDirPath(), "fers", "models")
        path = default_model_output(inputs[0], fallback)
        feedback.info(f"Trained model: {path} (no model file was chosen; it is kept, with its resume checkpoint "
                      "while training runs).")
        return path

    def out_of_memory_message(self):
        return ("Training ran out of memory: lower BATCH_SIZE, PATCH_SIZE or MODEL_BANDS, or close other programs, "
                "then run again (the resume checkpoint, if any, lets the run continue where it stopped).")

    def compute(self, parameters, context, feedback):
        from ..fers_core.enhance.torch_support import require_torch

        require_torch()
        from ..fers_core.training.run import TrainOptions, parse_band_list, parse_wavelengths, train_model

        rasters = self.raster_inputs(parameters, self.INPUTS, context)
        inputs = [path for path, _, _ in rasters]
        output = self.model_output(parameters, context, inputs, feedback)
        options = TrainOptions(
            inputs=inputs,
            masks=self.layer_sources(parameters, self.MASKS, context) or None,
            bands=parse_band_list(self.parameterAsString(parameters, self.BANDS, context)),
            nodata=self.input_nodata(parameters, context, name=None),
            raster_nodata=[tuple(layer_nodata(layer, feedback)) if layer is not None else ()  # Transparency nodata
                           for _, _, layer in rasters],
            model_bands=self.parameterAsInt(parameters, self.MODEL_BANDS, context),
            wavelengths_nm=parse_wavelengths(self.parameterAsString(parameters, self.WAVELENGTHS, context)),
            stages=self.parameterAsEnum(parameters, self.STAGES, context),
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            patch_size=self.parameterAsInt(parameters, self.PATCH_SIZE, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            teacher=defaults.TEACHER_OPTIONS[self.parameterAsEnum(parameters, self.TEACHER, context)],
            init_model=self.parameterAsFile(parameters, self.INIT_MODEL, context) or None,
            device=DEVICE_VALUES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            resume=self.parameterAsBoolean(parameters, self.RESUME, context),
            output_model=output,
        )
        train_model(options, feedback)
        return {self.OUTPUT_MODEL: output}
