"""FERS detection over a raster: band mapping, scaling, learned features, global RX.

Passes over the raster (each streamed in windows, so memory follows the window size: full-width strips
when one fits MEMORY_MB, else windows of whole spatial tile cores; see FeatureStrips):
1. range: resample the bands of valid pixels to the model's bands; global min and max for the
   reference scaling, and band means (used to fill invalid pixels before the networks);
2. statistics: features of each strip (tiled network inference), RX mean and covariance of
   the enhanced cube(s) of valid pixels;
3. scores: the enhanced cubes kept from pass 2 in a temporary file (FeatureSpill; recomputed
   per strip when the disk lacks room, and on a Dask cluster of other machines), RX scores written
   (and the enhanced cubes, on request). Product fusion keeps the two RX maps in a temporary raster and multiplies their
   min-max normalised values in a last pass.

Every pass is a task of an executor (runtime/executor.py): a pure function of a frozen plan and one
strip (passes.detect_range, detect_statistics, detect_score), whose partial results are merged in the
fixed tree over the strip index (runtime.reduction.TreeReducer) and whose scores come back in strip order,
whether the tasks run in this process or on a Dask cluster (distributed/dask_executor.py): both give
bit-identical outputs.
"""

import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial

from ..choices import Fusion, Precision
from ..detectors.catalog import LABELS, check_detector
from ..enhance.feature_strips import FeatureStrips, network_threads
from ..enhance.precision import mixed_precision_checked, resolve_device, resolve_precision, torch_threads
from ..errors import InputError
from ..feedback import Feedback, ProgressRange
from ..io.atomic import Temporary
from ..io.bad_bands import explain_no_valid_pixels, report_band_selection
from ..io.fill_values import report_fill_values
from ..io.gdal_cache import bounded_gdal_cache, write_cache_mb
from ..io.grid import read_mask
from ..io.output_formats import check_raster_outputs
from ..io.output_safety import check_outputs
from ..io.reader import RasterReader
from ..io.windows import check_window_fits
from ..io.writer import RasterWriter
from ..runtime.executor import run_executor
from .fusion import combine_maps, open_cube_writers
from .local_detection import run_local_detector
from .options import DetectOptions, DetectSummary, describe_fusion, extra_outputs
from .passes import (
    DetectPlan,
    DetectSource,
    DetectState,
    detect_range,
    detect_score,
    detect_statistics,
    fit_rx_models,
    merge_statistics_partials,
)
from .preprocess import RangeAccumulator
from .scaling import BandMapping, fit_scaling, merge_range_partials, scale_window
from .spill import FeatureSpill


@dataclass(frozen=True)
class DetectionSetup:
    """Everything a detection run needs before its passes: reader, mask, band mapping, networks, fusion."""

    reader: RasterReader
    mask: RasterReader
    mapping: BandMapping
    strips: FeatureStrips
    fusion: Fusion  # resolved: SUM, PRODUCT or SINGLE
    device: str
    branches: tuple
    options: DetectOptions  # the run's resolved copy: the model's branches, the precision it uses


def check_model_branches(model, requested) -> tuple:
    """The `requested` branches the model has; InputError naming the ones it has when it has none of them."""
    branches = tuple(b for b in requested if model.has_branch(b))
    if not branches:
        raise InputError(f"The model has no {' or '.join(requested)} branch: choose BRANCHES it has "
                         f"({', '.join(model.branches)}).")
    return branches


def resolve_options(model, options: DetectOptions, device: str, feedback) -> DetectOptions:
    """A copy of `options` with the branches the model has and the precision the run uses (never AUTO).

    Resolved once per run, here, so every window (and every Dask worker) uses the submitting
    machine's choice; the caller's options are left as they are.
    """
    branches = check_model_branches(model, options.branches)
    missing = [b for b in options.branches if b not in branches]
    if missing:
        feedback.warning(f"The model has no {', '.join(missing)} branch; using {', '.join(branches)} only.")
    precision = resolve_precision(options.precision, device, model)
    if options.precision is Precision.AUTO and precision is Precision.MIXED:
        feedback.info("Network arithmetic: spectral encoder and spatial trunk in bfloat16 (this model's AUC was "
                      "checked under it); 'float32 everywhere' under Network arithmetic (PRECISION) forces float32.")
    elif options.precision is Precision.AUTO and not mixed_precision_checked(model):
        feedback.info("Network arithmetic: float32 (bfloat16 is used only for models whose AUC was checked under it).")
    return replace(options, branches=branches, precision=precision)


def prepare_detection(input_path: str, model, options: DetectOptions, feedback) -> DetectionSetup:
    """Check the model against the options and the raster; open them (no pass over the data yet).

    The setup holds the resolved copy of `options` (resolve_options); `options` itself is not changed.
    """
    device = resolve_device(options.device)
    options = resolve_options(model, options, device, feedback)
    branches = options.branches
    fusion = options.fusion.resolve(model.bands, branches)

    reader = RasterReader(input_path, options.bands, direct_io=True, nodata=options.nodata)  # past GDAL's block cache
    if options.report_bands:
        report_band_selection(reader, feedback)
        report_fill_values(reader, feedback)
    mask = read_mask(options.mask_path, reader) if options.mask_path else None
    mapping = BandMapping.for_model(reader, model, feedback if options.report_bands else None)
    strips = FeatureStrips(reader, partial(scale_window, reader, mapping), model, options, device)
    feedback.info(f"Model: {model.bands} bands, branches {', '.join(model.branches)}; "
                  f"{model.provenance.get('summary', model.provenance.get('source', ''))}")
    feedback.info(f"Band mapping: {mapping.description}.")
    feedback.info(f"Device: {device}, {options.precision} precision; branches used: {', '.join(branches)}; "
                  f"fusion: {describe_fusion(options.fusion, fusion, model.bands)}; "
                  f"{len(strips)} window(s) of up to {strips.windows[0].rows}x{strips.windows[0].cols} px"
                  f"{_spatial_tiling(options, branches, reader.height, reader.width)}.")
    return DetectionSetup(reader, mask, mapping, strips, fusion, device, branches, options)


def _spatial_tiling(options, branches, height, width):
    """The log's words for the spatial branch's tiles ('' without the spatial branch)."""
    if "spatial" not in branches:
        return ""
    tile = options.spatial_tile
    if height <= tile and width <= tile:
        return f"; the spatial branch sees the whole {width}x{height} px raster as one tile (TILE_SIZE {tile} px)"
    return f"; spatial tiles {tile} px (core {tile - 2 * options.spatial_margin} px)"


def check_detection_formats(output_path, options, model_bands):
    """The score raster's and the enhanced cubes' (model bands each) output formats, before the first pass."""
    check_raster_outputs([("the score output", output_path, 1),
                          ("the spectral cube output", options.spectral_output, model_bands),
                          ("the spatial cube output", options.spatial_output, model_bands)])


def run_fers_detection(input_path, output_path, model, options: DetectOptions = None, feedback: Feedback = None,
                       executor=None, model_path: str = None) -> DetectSummary:
    """Score `input_path` with FERS (model features + global RX); write a float32 score raster.

    `executor` runs the passes' window tasks (runtime.executor; None = this process). An executor
    whose tasks run in other processes opens the model from `model_path` there (through the model
    cache: once per process); `model` is the same model loaded here.
    """
    options = options or DetectOptions()
    feedback = feedback or Feedback()
    check_outputs([("the score output", output_path), ("the spectral cube output", options.spectral_output),
                   ("the spatial cube output", options.spatial_output)],
                  [("the input", input_path), ("the mask", options.mask_path)])
    check_detection_formats(output_path, options, model.bands)
    check_detector(options.detector, options.window_inner, options.window_outer)
    timings = {}
    started = time.perf_counter()
    with torch_threads(options.threads), ExitStack() as stack:
        stack.enter_context(explain_no_valid_pixels(input_path, options.bands, feedback, options.nodata,
                                                    options.mask_path))
        executor = run_executor(executor, feedback, stack)
        setup = prepare_detection(input_path, model, options, feedback)
        stack.callback(setup.reader.close)
        if options.detector in ("local", "rxd-local-mean"):  # windows checked before the networks run
            check_window_fits(options.window_outer, setup.reader.height, setup.reader.width)
        windows = setup.strips.windows
        threads = options.threads or executor.threads or network_threads()
        source = DetectSource(str(input_path), model_path and str(model_path),  # workers read the bands resolved here
                              replace(setup.options, bands=list(setup.reader.bands), spectral_output=None,
                                      spatial_output=None), setup.device, threads)
        executor.attach(source, DetectState(setup.reader, setup.mask, setup.mapping, model, source, setup.strips))
        if executor.where:
            feedback.info(f"{len(windows)} strip task(s) per pass{executor.where}, {threads} PyTorch thread(s) per "
                          "task.")
        plan = DetectPlan(source, setup.fusion)
        ranges = executor.reduce(detect_range, plan, windows, merge_range_partials, ProgressRange(feedback, 0, 10))
        plan, valid_pixels = replace(plan, scaling=fit_scaling(ranges)), ranges.count
        timings["range pass"] = time.perf_counter() - started
        if options.detector != "global":
            run_local_detector(setup, options, output_path, model.bands, feedback, executor, plan,
                               model.wavelengths_nm)
            timings[LABELS[options.detector]] = time.perf_counter() - started - sum(timings.values())
            return _summary(output_path, setup, valid_pixels, timings, feedback)

        extra = extra_outputs(options, setup.strips.networks, feedback)
        n_maps = 2 if setup.fusion is Fusion.PRODUCT else 1
        spill = None
        if options.spill and not executor.shares_files:
            feedback.info("The Dask workers may not see this machine's disk, so the features are not kept between "
                          "passes: the networks run again in the score pass.")
        elif options.spill:
            spill = FeatureSpill.create(output_path, windows, model.bands, n_maps + len(extra), feedback, stack)
        plan = replace(plan, extra_names=tuple(extra), spill=spill)
        rx_models = executor.fit(fit_rx_models, executor.reduce(detect_statistics, plan, windows,
                                                                merge_statistics_partials,
                                                                ProgressRange(feedback, 10, 55)), feedback,
                                 setup.reader.band_count)
        timings["statistics pass"] = time.perf_counter() - started - sum(timings.values())
        if options.mask_path:  # say what the mask kept out, as fers:rx does
            feedback.info(f"Statistics from {rx_models[0].pixel_count} background pixels ({valid_pixels} valid; "
                          "the mask keeps the others out).")
        blocks = executor.ordered(detect_score, replace(plan, rx_models=tuple(rx_models)), windows)
        write_detection_outputs(setup.reader, blocks, len(windows), len(rx_models), setup.fusion, output_path,
                                extra, model.bands, feedback, model.wavelengths_nm)
        timings["score pass"] = time.perf_counter() - started - sum(timings.values())
    return _summary(output_path, setup, valid_pixels, timings, feedback,
                    rx_models[0].rank if len(rx_models) == 1 else None)


def _summary(output_path, setup, valid_pixels, timings, feedback, rank=None):
    """Log each stage's seconds; the run's DetectSummary."""
    for stage, seconds in timings.items():
        feedback.info(f"{stage}: {seconds:.2f} s")
    return DetectSummary(str(output_path), setup.branches, setup.fusion, setup.device, valid_pixels, timings, rank)


def write_detection_outputs(reader, blocks, n_blocks, n_maps, fusion, output_path, extra, model_bands, feedback,
                            wavelengths_nm=None):
    """Write (window, ScoreBlock) pairs, in any order: the score raster and the enhanced cubes in `extra` (their
    bands carry the model's `wavelengths_nm` when it has them).

    The only writer of these files (the Dask path sends it the blocks); every file is committed
    only at the end.
    """
    product = fusion is Fusion.PRODUCT
    written_bands = (2 if product else 1) + model_bands * len(extra)
    with bounded_gdal_cache(write_cache_mb(reader.width, written_bands)), ExitStack() as stack:
        writers = open_cube_writers(stack, reader, extra, model_bands, wavelengths_nm)
        if product:
            maps_path = stack.enter_context(Temporary(output_path, "rx-maps", ".tif")).path
            target = stack.enter_context(RasterWriter.like(reader, maps_path, 2))
        else:
            target = stack.enter_context(RasterWriter.like(reader, output_path, band_names=["FERS anomaly score"]))
        ranges = [RangeAccumulator() for _ in range(n_maps)]
        progress = ProgressRange(feedback, 55, 90 if product else 100)
        for index, (window, block) in enumerate(blocks):
            target.write(window, block.scores)
            for total, block_range in zip(ranges, block.ranges):
                total.merge(block_range)
            for name, writer in writers.items():
                writer.write(window, block.extras[name])
            progress((index + 1) / n_blocks)
        target.set_metadata({"fers_detector": "FERS + global RX", "fers_fusion": fusion})
        target.commit()
        if product:
            _write_product(maps_path, reader, output_path, ranges, ProgressRange(feedback, 90, 100))
        for writer in writers.values():
            writer.commit()


def _write_product(maps_path, reader, output_path, ranges, progress):
    """Product fusion (reference "ham"): min-max normalised RX(x + F_spa) times RX(x + F_spe)."""
    combine_maps([(maps_path, 0), (maps_path, 1)], reader, output_path, ranges, progress, "global RX")
