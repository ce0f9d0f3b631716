"""FERS with a local detector: the enhanced cube written once, then local RX or an RX variant streams it."""

from contextlib import ExitStack
from dataclasses import replace

from ..choices import Fusion
from ..feedback import ProgressRange, StageFeedback
from ..io.atomic import Temporary
from ..io.writer import SCORE_NODATA, RasterWriter
from .fusion import PRODUCT_BRANCHES, branch_cubes, combine_maps, enhanced_cubes, open_cube_writers, score_range
from .options import extra_outputs


def detect_cubes(state, plan, window):
    """The enhanced cube(s) and the x + F asked for of one window, SCORE_NODATA where invalid (the cube task)."""
    x, valid, features = state.strips().compute(window, plan.scaling)
    cubes = enhanced_cubes(x, features, plan.fusion)
    for cube in cubes:
        cube[:, ~valid] = SCORE_NODATA
    extras = branch_cubes(x, features, plan.extra_names)
    for extra in extras.values():
        extra[:, ~valid] = SCORE_NODATA
    return cubes, extras


def run_local_detector(setup, options, output_path, model_bands, feedback, executor, plan, wavelengths_nm=None):
    """Local RX or an RX variant (rx_variants.DETECTOR_VARIANTS) on the enhanced cube(s), spilled to temporary rasters.

    These detectors need each pixel's neighbourhood of the enhanced cube (or, for the variants,
    two passes over it), so the cube is written once beside the output (strip by strip, as the
    score pass would) and the detector streams it with its own halo. `executor` computes the cubes
    and runs the detector's tiles; the detector runs here instead when the executor's workers may not
    see the temporary rasters (a cluster of other machines). `plan`: the run's DetectPlan, scaling fitted.
    `wavelengths_nm`: the model's, for the enhanced-cube outputs' bands.
    """
    from ..detectors.local_rx import run_local_rx
    from ..detectors.rx_variants import describe, detector_settings, run_rx_variant

    on_cube = executor if executor.shares_files else None

    def detector(cube_path, map_path, stage):
        if options.detector == "local":
            return run_local_rx(cube_path, map_path, mask_path=options.mask_path, inner=options.window_inner,
                                outer=options.window_outer, block_mb=options.block_mb, feedback=stage,
                                executor=on_cube, report_bands=False)  # the run's own cube: nothing to report
        settings = detector_settings(options.detector, options.window_inner, options.window_outer)
        return run_rx_variant(cube_path, map_path, *settings, mask_path=options.mask_path,
                              block_mb=options.block_mb, feedback=stage, executor=on_cube, report_bands=False)

    product = setup.fusion is Fusion.PRODUCT
    names = list(PRODUCT_BRANCHES) if product else ["enhanced"]
    with ExitStack() as stack:
        def scratch(purpose):  # a raster beside the output, unique to this run, deleted when the run ends
            return stack.enter_context(Temporary(output_path, purpose, ".tif")).path

        cube_paths = [scratch(f"{name}-cube") for name in names]
        map_paths = [scratch(f"{name}-local-rx") for name in names] if product else [output_path]
        feedback.info(f"The enhanced cube(s) for local RX are written beside the output (up to "
                      f"{setup.reader.pixel_count * model_bands * 4 * len(names) / 2**20:,.0f} MB) and deleted when "
                      "the run ends.")
        writers = [stack.enter_context(RasterWriter.like(setup.reader, path, model_bands)) for path in cube_paths]
        extras = open_cube_writers(stack, setup.reader, extra_outputs(options, setup.strips.networks, feedback),
                                   model_bands, wavelengths_nm)
        progress = ProgressRange(feedback, 10, 40)
        windows = setup.strips.windows
        results = executor.ordered(detect_cubes, replace(plan, extra_names=tuple(extras)), windows)
        for index, (window, (cubes, extra_cubes)) in enumerate(results):
            for writer, cube in zip(writers, cubes):
                writer.write(window, cube)
            for name, writer in extras.items():
                writer.write(window, extra_cubes[name])
            progress((index + 1) / len(windows))
        for writer in writers:
            writer.commit()
        span = 55 / len(names)
        for index, (cube_path, map_path) in enumerate(zip(cube_paths, map_paths)):
            label = f"{names[index].capitalize()} branch" if product else ""  # two cubes: say which one
            detector(cube_path, map_path, StageFeedback(feedback, 40 + index * span, 40 + (index + 1) * span, label))
        if product:
            ranges = [score_range(path) for path in map_paths]
            name = "local RX" if options.detector == "local" else \
                describe(*detector_settings(options.detector, options.window_inner, options.window_outer))
            combine_maps([(path, 0) for path in map_paths], setup.reader, output_path, ranges,
                          ProgressRange(feedback, 95, 100), name)
        for writer in extras.values():
            writer.commit()
