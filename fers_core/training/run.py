"""Training a FERS model from background rasters: checks, stage 1, stage 2, model file.

Every check that can fail on the inputs (paths, sizes, masks, band lists, the initial model, the
patch size) runs before the first training step, so a mistake costs seconds, not an epoch.
"""

import copy
import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import __version__
from ..enhance.checkpoints import load_any_model
from ..enhance.model_branches import build_branch_module
from ..enhance.model_file import FersModel, check_model_output, save_model
from ..enhance.precision import resolve_device
from ..errors import InputError, ModelFileError
from ..feedback import Feedback, ProgressRange
from ..io import band_list
from ..io.output_safety import check_distinct_inputs, check_outputs
from ..io.reader import nodata_values
from . import defaults
from .data import PatchSampler, TrainingRaster, load_backgrounds
from .defaults import STAGES_BOTH, STAGES_SPATIAL, STAGES_SPECTRAL
from .loop import LoopSettings, ResumeFile, plain, restore, resume_path, run_stage
from .memory import check_training_memory
from .stage1 import SpectralStage
from .stage2 import SpatialStage

STAGE_NAMES = {STAGES_BOTH: ("spectral", "spatial"), STAGES_SPECTRAL: ("spectral",), STAGES_SPATIAL: ("spatial",)}


@dataclass(frozen=True)
class TrainOptions:
    """Settings of one training run (defaults are the documented ones); frozen: a run never changes them."""

    inputs: list
    output_model: str
    masks: list = None
    bands: list = None
    nodata: tuple = ()  # values that are nodata in every band of every input, besides each raster's own
    raster_nodata: list = None  # per input, further nodata values of that raster (a QGIS layer's own); None = none
    model_bands: int = defaults.DEFAULT_MODEL_BANDS
    wavelengths_nm: list = None
    stages: int = STAGES_BOTH
    epochs: int = defaults.DEFAULT_EPOCHS
    patch_size: int = defaults.DEFAULT_PATCH_SIZE
    batch_size: int = defaults.DEFAULT_BATCH_SIZE
    learning_rate: float = defaults.DEFAULT_LEARNING_RATE
    seed: int = 0
    init_model: str = None
    device: str = "auto"
    resume: bool = True
    teacher: str = defaults.DEFAULT_TEACHER
    patches_per_epoch: int = None
    provenance: dict = field(default_factory=dict)


@dataclass
class TrainSummary:
    output_model: str
    branches: tuple
    bands: int
    epochs_run: dict
    history: dict
    seconds: float
    resumed_from: str = None


def parse_wavelengths(text: str) -> list:
    """'450, 460.5, ...' -> list of floats (None for empty text); InputError for anything else."""
    if text is None or not str(text).strip():
        return None
    try:
        values = [float(part) for part in str(text).replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise InputError(
            "WAVELENGTHS must be numbers in nanometres separated by commas, e.g. '400, 410, 420'."
        ) from None
    if any(not value > 0 for value in values):
        raise InputError("WAVELENGTHS must all be positive numbers in nanometres.")
    if values and max(values) < 30:  # the raster readers' rule for lists without units: micrometres
        raise InputError(f"WAVELENGTHS look like micrometres (at most {max(values):g}); give them in nanometres, "
                         f"e.g. '{', '.join(f'{value * 1000:g}' for value in values[:3])}, ...'.")
    repeated = sorted(value for value, count in Counter(values).items() if count > 1)
    if repeated:
        raise InputError(f"WAVELENGTHS lists {', '.join(f'{value:g}' for value in repeated[:5])} nm more than once: "
                         "two model bands at one wavelength would hold the same values; give each band its own.")
    return values


def parse_band_list(text: str) -> list:
    """'1-50, 60, 70-80' -> [1, ..., 50, 60, 70, ..., 80] (None for empty text); see fers_core.io.band_list."""
    bands = band_list.parse_band_list(text)
    if bands and any(band < 1 for band in bands):
        raise InputError("BANDS numbers start at 1; remove zero or negative numbers.")
    return bands


def _check_options(options):
    if not options.inputs:
        raise InputError("No training raster was given: choose at least one background raster in INPUTS.")
    if options.raster_nodata is not None and len(options.raster_nodata) != len(options.inputs):
        raise InputError(f"{len(options.raster_nodata)} nodata list(s) were given for {len(options.inputs)} input "
                         "raster(s): give one per input, in the same order.")
    check_distinct_inputs([(f"training raster {index + 1}", path) for index, path in enumerate(options.inputs)
                           if path and os.path.exists(str(path))],
                          "a raster listed twice would weigh twice in the training; list each raster once.")
    masks = list(options.masks or [])
    if masks and len(masks) != len(options.inputs):
        raise InputError(
            f"{len(masks)} mask(s) were given for {len(options.inputs)} input raster(s): give one mask per input, "
            "in the same order, or none."
        )
    if options.stages not in STAGE_NAMES:
        raise InputError("STAGES must be 0 (both), 1 (spectral only) or 2 (spatial only).")
    if options.stages == STAGES_SPATIAL and not options.init_model:
        raise InputError(
            "STAGES = spatial only needs INIT_MODEL, a model with a trained spectral branch: train the spectral "
            "stage first or choose both stages."
        )
    for name, value, minimum in (("EPOCHS", options.epochs, 1), ("BATCH_SIZE", options.batch_size, 1),
                                 ("PATCH_SIZE", options.patch_size, defaults.MIN_PATCH_SIZE)):
        if int(value) < minimum:
            raise InputError(f"{name} must be at least {minimum} (it is {value}).")
    if options.stages != STAGES_SPECTRAL and options.batch_size < 2:
        raise InputError("The spatial stage needs BATCH_SIZE of at least 2 (its losses use batch statistics).")
    if not options.learning_rate > 0:
        raise InputError(f"LEARNING_RATE must be positive (it is {options.learning_rate}).")
    if options.teacher not in defaults.TEACHER_OPTIONS:
        raise InputError(f"The teacher option must be one of {', '.join(defaults.TEACHER_OPTIONS)}.")
    if not options.output_model:
        raise InputError("No OUTPUT_MODEL was given: choose where to save the trained model (.pt).")
    check_model_output(options.output_model, "OUTPUT_MODEL")
    check_outputs([("OUTPUT_MODEL", options.output_model),
                   ("the resume checkpoint", resume_path(options.output_model))],
                  [("INPUTS", path) for path in options.inputs] + [("MASKS", path) for path in options.masks or ()]
                  + [("INIT_MODEL", options.init_model)])
    folder = os.path.dirname(os.path.abspath(str(options.output_model)))
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise InputError(f"Cannot write to folder '{folder}': choose an output location you can write to.")
    return masks or [None] * len(options.inputs)


def _initial_model(options, feedback):
    """The INIT_MODEL (or None), checked for the chosen stages; model bands and wavelengths to use."""
    if not options.init_model:
        bands = int(options.model_bands)
        if not defaults.MIN_MODEL_BANDS <= bands <= defaults.MAX_MODEL_BANDS:
            raise InputError(f"MODEL_BANDS must be from {defaults.MIN_MODEL_BANDS} to {defaults.MAX_MODEL_BANDS:,} "
                             f"(it is {bands:,}); hyperspectral sensors have up to a few hundred bands.")
        wavelengths = options.wavelengths_nm
        if wavelengths is not None and len(wavelengths) != bands:
            raise InputError(
                f"WAVELENGTHS lists {len(wavelengths)} values but MODEL_BANDS is {bands}: give one wavelength per "
                "model band, or leave WAVELENGTHS empty."
            )
        return None, bands, wavelengths
    try:
        model = load_any_model(options.init_model)
    except ModelFileError as error:
        raise ModelFileError(f"INIT_MODEL: {error}") from None
    if options.stages == STAGES_SPATIAL and not model.has_branch("spectral"):
        raise InputError(
            "INIT_MODEL has no spectral branch, which the spatial stage needs: choose a model with a spectral "
            "branch or train both stages."
        )
    if int(options.model_bands) != model.bands:
        feedback.info(f"The initial model has {model.bands} bands; MODEL_BANDS ({options.model_bands}) is ignored.")
    if options.wavelengths_nm is not None:
        feedback.info("The initial model's wavelengths are kept; WAVELENGTHS is ignored.")
    return model, model.bands, model.wavelengths_nm


def _fingerprint(options, rasters, cubes, bands, wavelengths, device_type):
    def file_identity(path):
        if not path:
            return None
        path = os.path.abspath(str(path))
        size = os.path.getsize(path) if os.path.isfile(path) else None
        return [path, size]

    return {
        "inputs": [[file_identity(r.path), file_identity(r.mask_path), list(c.bands)] for r, c in zip(rasters, cubes)],
        # an input rewritten in place (same path and size) is not resumed; no digest when nothing is resumed
        "content": [_digest(c) for c in cubes] if options.resume else None,
        "model_bands": bands,
        "wavelengths_nm": wavelengths,
        "stages": options.stages,
        "epochs": options.epochs,
        "patch_size": options.patch_size,
        "batch_size": options.batch_size,
        "learning_rate": float(options.learning_rate),
        "seed": int(options.seed),
        "init_model": file_identity(options.init_model),
        "teacher": options.teacher,
        "patches_per_epoch": options.patches_per_epoch,
        "device_type": device_type,
        **({"nodata": [list(raster.nodata) for raster in rasters]} if any(raster.nodata for raster in rasters)
           else {}),
    }


def _digest(cube):
    """A digest of a preprocessed training cube and its usable pixels: what the networks are trained on."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (cube.cube, cube.usable):
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def _fresh_branch(name, bands, settings, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_branch_module(name, bands, settings or {})


def train_model(options: TrainOptions, feedback: Feedback = None) -> TrainSummary:
    """Train the chosen stages on background rasters and save a FERS model file; returns a TrainSummary."""
    feedback = feedback or Feedback()
    started = time.perf_counter()
    masks = _check_options(options)
    device = resolve_device(options.device)
    init, bands, wavelengths = _initial_model(options, feedback)
    rasters = [TrainingRaster(str(path), str(mask) if mask else None, options.bands,
                              nodata_values(nodata_values(options.nodata) + nodata_values(own)))
               for path, mask, own in zip(options.inputs, masks, options.raster_nodata or [()] * len(options.inputs))]
    check_training_memory(rasters, bands, int(options.batch_size), int(options.patch_size), feedback, device)
    cubes = load_backgrounds(rasters, bands, wavelengths, feedback, ProgressRange(feedback, 0, 5))
    sampler = PatchSampler(cubes, options.patch_size)
    patches = int(options.patches_per_epoch or sampler.patches_per_epoch(options.batch_size))
    settings = LoopSettings(options.epochs, options.batch_size, patches, options.seed, device)
    stage_names = STAGE_NAMES[options.stages]
    feedback.info(
        f"Training {' and '.join(stage_names)} stage(s) of a {bands}-band model on {sampler.usable_pixels} usable "
        f"pixels in {len(cubes)} raster(s): {options.epochs} epoch(s) of {patches} patches of "
        f"{options.patch_size}x{options.patch_size} px (batch {options.batch_size}), device {device}, "
        f"seed {options.seed}."
    )

    fingerprint = _fingerprint(options, rasters, cubes, bands, wavelengths, torch.device(device).type)
    resume_file = ResumeFile(resume_path(options.output_model), fingerprint, feedback, enabled=options.resume)
    checkpoint = resume_file.load(map_location=device)
    resumed_from = None
    if checkpoint is not None:
        resumed_from = f"{checkpoint['stage']} stage, epoch {checkpoint['epochs_done']}"
        feedback.info(f"Resuming from {os.path.basename(resume_file.path)} ({resumed_from} done).")

    head_width = (init.architecture.get("spectral") or {}).get("head_width") if init else None
    spectral = (copy.deepcopy(init.branches["spectral"]) if init is not None and init.has_branch("spectral")
                else _fresh_branch("spectral", bands, {"head_width": head_width}, options.seed))
    histories, epochs_run = {}, {}
    bounds = [5 + 95 * index / len(stage_names) for index in range(len(stage_names) + 1)]
    ranges = {name: ProgressRange(feedback, bounds[index], bounds[index + 1]) for index, name in enumerate(stage_names)}
    spatial_checkpoint = checkpoint if checkpoint is not None and checkpoint["stage"] == "spatial" else None

    with resume_file.named_when_stopped():
        if "spectral" in stage_names and spatial_checkpoint is None:
            torch.manual_seed(options.seed)
            trainer = SpectralStage(spectral, options.teacher, options.learning_rate, device)
            start, history = 0, []
            if checkpoint is not None:
                restore(trainer, checkpoint)
                start, history = checkpoint["epochs_done"], checkpoint["history"]
            histories["spectral"] = run_stage(trainer, sampler, settings, feedback, ranges["spectral"], resume_file,
                                              start, history)
            epochs_run["spectral"] = options.epochs - start
            spectral = trainer.result()

        spatial = None
        if "spatial" in stage_names:
            initial_spatial = (copy.deepcopy(init.branches["spatial"])
                               if init is not None and init.has_branch("spatial")
                               else _fresh_branch("spatial", bands, {}, options.seed))
            torch.manual_seed(options.seed)
            trainer = SpatialStage(spectral, initial_spatial, options.learning_rate, device)
            start, history = 0, []
            if spatial_checkpoint is not None:
                restore(trainer, spatial_checkpoint)
                start, history = spatial_checkpoint["epochs_done"], spatial_checkpoint["history"]
                histories["spectral"] = (spatial_checkpoint.get("extra") or {}).get("spectral_history", [])
            extra = {"spectral_history": histories.get("spectral", [])}
            histories["spatial"] = run_stage(trainer, sampler, settings, feedback, ranges["spatial"], resume_file,
                                             start, history, extra)
            epochs_run["spatial"] = options.epochs - start
            spectral = trainer.network["spectral"].cpu().eval()
            spatial = trainer.result()

    branches = {"spectral": spectral.cpu().eval()}
    if spatial is not None:
        branches["spatial"] = spatial
    elif init is not None and init.has_branch("spatial"):
        feedback.warning("The initial model's spatial branch was dropped: it was trained against the old spectral "
                         "branch. Train the spatial stage again (STAGES = spatial only) to add one.")
    seconds = time.perf_counter() - started
    provenance = {
        "source": "trained with fers:train",
        "summary": f"trained with fers:train ({', '.join(stage_names)}; seed {options.seed})",
        "plugin_version": __version__,
        "inputs": [os.path.basename(str(path)) for path in options.inputs],
        "masks": [os.path.basename(str(mask)) if mask else None for mask in masks],
        "stages_trained": list(stage_names),
        "epochs": int(options.epochs),
        "patch_size": int(options.patch_size),
        "batch_size": int(options.batch_size),
        "patches_per_epoch": patches,
        "learning_rate": float(options.learning_rate),
        "seed": int(options.seed),
        "teacher": options.teacher if "spectral" in stage_names else None,
        "init_model": os.path.basename(str(options.init_model)) if options.init_model else None,
        "device": device,
        "seconds": round(seconds, 1),
        "loss_history": {name: [round(entry["loss"], 6) for entry in history] for name, history in histories.items()},
        **options.provenance,
    }
    model = FersModel(bands=bands, wavelengths_nm=wavelengths, branches=branches, provenance=plain(provenance))
    save_model(model, options.output_model)
    resume_file.remove()
    feedback.set_progress(100)
    feedback.info(f"Saved the {bands}-band model ({', '.join(branches)}) to {options.output_model} "
                  f"in {seconds:.0f} s.")
    return TrainSummary(str(options.output_model), tuple(branches), bands, epochs_run, histories, seconds, resumed_from)
