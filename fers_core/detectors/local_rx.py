"""Local (dual-window) RX: each pixel against the background in a ring around it.

For every pixel the background is the ring between an odd-sized inner (guard) window and an
odd-sized outer window, both centred on the pixel: score = (x - m)^T C^-1 (x - m) with m and C
the mean and sample covariance (denominator n - 1) of the ring's usable pixels. Pixels that
are invalid (nodata, NaN, inf) or excluded by the mask never enter any ring; excluded pixels
are still scored, invalid ones are nodata.

Borders: the outer window is shifted inwards so that it stays inside the image and keeps its
full size (as SPy's `rx(window=...)` does); the inner window stays centred on the pixel and is
clipped. The windows are therefore not centred near the edges, but every pixel keeps a ring of
about outer^2 - inner^2 pixels. Clipping the outer window instead (the first design) leaves a
corner pixel a quarter of the ring, whose small, unstable background inflated edge scores by
orders of magnitude on the real scenes (see the README). An image smaller than the outer window
uses its whole extent.

Regularisation: every covariance gets a ridge of 1e-9 * trace/bands on its diagonal, far below
any real variance, so that duplicate or constant bands stay solvable. A ring with fewer than
bands + 1 usable pixels has a singular covariance: it falls back to a ridge of
1e-6 * trace/bands (the "ridge-regularised covariance"). Such pixels are counted and reported,
since their scores are less reliable. A ring with fewer than 2 usable pixels, or whose pixels
are all identical, gives no background: the pixel is nodata.

Speed: along each row of output pixels the ring's Gram matrix G of z = (x, 1) slides one pixel at a
time: the outer window gains and loses at most one column, the inner window too, so G changes by four
symmetric rank-k products (BLAS dsyrk, k = a window's height) and is summed afresh every
RESTART_COLUMNS pixels, which bounds the rounding drift of the downdates. From G come the count n,
the sum s and the scatter S of the ring; block elimination gives z^T G^-1 z = d^T P^-1 d + 1/n with
P = S - s s^T / n = (n - 1) C, and one Cholesky factorisation of the bordered matrix
[[G, z], [z^T, big]] (LAPACK dpotrf) yields L^-1 z as its last row: the factor and the solve in one
call, per pixel, with BLAS on one thread (threads only slow down factorisations this small). The
factorisation (bands^3 / 3 multiply-adds) is the floor (the README gives its rate per core).
COMPONENTS projects the cube onto the leading principal components of the global covariance
first (projection.py), making that k^3.

Memory: the tile's block (with its halo) as float64, its centred copy and a pixel-major copy of z
(bands + 1 values per pixel, by column so that a column piece is contiguous). Tiles are full-width
strips of rows, or squares when the bands are many, each read with the halo its outer windows
reach (outer // 2 pixels, up to outer - 1 at the image edges); plan_tiles picks whichever re-reads
fewer halo pixels (io/windows.py plans the tiles: halo_tile_shape, halo_tiles).

bench/bench_local.py measures it against the previous summed-area-table version and spectral.rx.
"""

import time
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, NoValidPixels
from ..feedback import Feedback, ProgressRange
from ..io.atomic import shown_name
from ..io.bad_bands import check_mask_leaves_background
from ..io.output_formats import check_raster_outputs
from ..io.output_safety import check_outputs
from ..io.windows import DEFAULT_BLOCK_MB, check_window_fits, halo_tile_shape, halo_tiles
from ..io.writer import SCORE_NODATA, RasterWriter
from ..runtime.threads import blas_threads_set
from .projection import PrincipalProjection, resolve_components
from .sliding_gram import RESTART_COLUMNS, SlidingGram, quadratic_form
from .throughput import ThroughputLog

RIDGE_FLOOR = 1e-9
RIDGE_UNDERSAMPLED = 1e-6


@dataclass
class LocalRxRunSummary:
    """What a local RX run did, for the log and for tests."""

    output_path: str
    valid_pixels: int
    scored_pixels: int
    undersampled_pixels: int
    no_background_pixels: int
    bands: int
    inner: int
    outer: int
    seconds: float


def validate_windows(inner, outer):
    """Raise InputError unless inner and outer are odd, inner >= 1 and outer > inner."""
    inner, outer = int(inner), int(outer)
    if inner < 1 or inner % 2 == 0:
        raise InputError(
            f"The inner (guard) window must be an odd number of pixels, at least 1 (got {inner}): use e.g. 3 or 5."
        )
    if outer % 2 == 0 or outer <= inner:
        raise InputError(
            f"The outer window must be an odd number of pixels larger than the inner window {inner} (got {outer}): "
            f"use e.g. {inner + 16 if inner % 2 else inner + 15}."
        )
    return inner, outer


def _bytes_per_output_pixel(bands):
    """The float32 score and the bookkeeping of one output pixel (the statistics live per input pixel)."""
    return 16


def _bytes_per_input_pixel(bands):
    """The block read as float64, its centred copy and the pixel-major (bands + 1) copy the Gram slides over."""
    return (3 * bands + 1) * 8


def plan_tiles(width: int, bands: int, outer: int, budget_mb: float = DEFAULT_BLOCK_MB) -> tuple:
    """(rows, cols) of output per tile: windows.halo_tile_shape with local RX's memory per pixel."""
    return halo_tile_shape(width, outer, budget_mb * 2**20, _bytes_per_input_pixel(bands),
                           _bytes_per_output_pixel(bands))


def _inner_bounds(centres, half, size):
    """Start (inclusive) and stop (exclusive) of centred windows of half-width `half`, clipped to [0, size)."""
    return np.maximum(centres - half, 0), np.minimum(centres + half + 1, size)


def _outer_bounds(centres, half, size):
    """Outer windows of width 2 * half + 1 shifted (not clipped) to lie inside [0, size), so they keep their size."""
    width = 2 * half + 1
    if size <= width:
        return np.zeros_like(centres), np.full_like(centres, size)
    start = np.clip(centres - half, 0, size - width)
    return start, start + width


def _score_block(cube, valid, use, tile, inner, outer, tick=None):
    """Local RX scores of a windows.HaloTile's output pixels from its block (tile.block) held in memory.

    Returns (scores float32 (tile rows, tile cols), number of undersampled pixels, number of
    pixels without background).
    """
    bands = cube.shape[0]
    block, out = tile.block, tile.output
    first, left = out.row - block.row, out.col - block.col
    shift = cube[:, use].mean(axis=1) if use.any() else np.zeros(bands)
    centred = np.where(valid, cube - shift[:, None, None], 0.0)
    # one scale for every band (RX does not depend on it): products stay inside float64 for any data range
    span = float(np.abs(centred).max()) if centred.size else 0.0
    span = span if np.isfinite(span) and span > 0 else 1.0
    centred /= span
    columns = np.empty((block.cols, block.rows, bands + 1))  # pixel-major by column: a column piece is contiguous
    columns[..., :bands] = centred.transpose(2, 1, 0)
    columns[..., bands] = 1.0
    columns[~use.T] = 0.0
    out_rows, out_cols = np.arange(out.row, out.row + out.rows), np.arange(out.col, out.col + out.cols)
    outer_rows = np.stack(_outer_bounds(out_rows, outer // 2, tile.height)) - block.row
    inner_rows = np.stack(_inner_bounds(out_rows, inner // 2, tile.height)) - block.row
    outer_cols = np.stack(_outer_bounds(out_cols, outer // 2, tile.width)) - block.col
    inner_cols = np.stack(_inner_bounds(out_cols, inner // 2, tile.width)) - block.col

    scores = np.full((out.rows, out.cols), SCORE_NODATA, dtype=np.float32)
    border = np.zeros((bands + 2, bands + 2), order="F")
    z = np.ones(bands + 1)
    undersampled = no_background = 0
    with blas_threads_set(1):  # LAPACK threads only slow down factorisations this small
        for k in range(out.rows):
            row_valid = valid[first + k, left:left + out.cols]
            if not row_valid.any():
                continue
            gram = SlidingGram(columns, tuple(outer_rows[:, k]), tuple(inner_rows[:, k]))
            for m in range(out.cols):
                g = gram.move(tuple(outer_cols[:, m]), tuple(inner_cols[:, m]), m % RESTART_COLUMNS == 0)
                if not row_valid[m]:
                    continue
                n = g[bands, bands]
                small = n < bands + 1
                z[:bands] = centred[:, first + k, left + m]
                value = quadratic_form(g, z, bands, RIDGE_UNDERSAMPLED if small else RIDGE_FLOOR, border)
                if value is None:
                    no_background += 1
                    continue
                undersampled += int(small)
                scores[k, m] = value
            if tick is not None:
                tick((k + 1) / out.rows)
    return scores, undersampled, no_background


def _check_block(cube, valid, exclude):
    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 3:
        raise InputError("Local RX needs a (bands, rows, cols) cube.")
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != cube.shape[1:]:
        raise InputError(f"The validity mask is {valid.shape} but the cube is {cube.shape[1:]}.")
    use = valid if exclude is None else valid & ~np.asarray(exclude, dtype=bool)
    return cube, valid, use


def _projection_of(cube, use, components):
    """The PrincipalProjection of an in-memory cube's usable pixels for a resolved COMPONENTS choice."""
    from .rx import CovarianceAccumulator

    accumulator = CovarianceAccumulator(cube.shape[0])
    accumulator.add_bands(cube.reshape(cube.shape[0], -1), use.reshape(-1))
    if accumulator.count < 2:
        raise InputError("Too few valid background pixels for the principal components (COMPONENTS).")
    return PrincipalProjection.fit(accumulator.mean, accumulator.covariance, components)


def local_rx_scores(cube, valid, inner, outer, exclude=None, budget_mb=DEFAULT_BLOCK_MB, progress=None,
                    components=None):
    """Local RX of an in-memory cube (bands, rows, cols) -> float32 scores (rows, cols).

    `valid` (rows, cols) bool: pixels to score and to use as background; `exclude` (rows, cols)
    bool: valid pixels kept out of every ring (still scored). Invalid pixels get SCORE_NODATA.
    `progress(fraction)` is called now and then (it may raise Cancelled). `components`: see
    projection.resolve_components (None: the exact method on every band).
    """
    inner, outer = validate_windows(inner, outer)
    cube, valid, use = _check_block(cube, valid, exclude)
    choice = resolve_components(components, cube.shape[0])
    if choice is not None:
        filled = np.where(valid, cube, 0.0)
        cube = _projection_of(filled, use, choice).apply(filled)
    bands, height, width = cube.shape
    tiles = halo_tiles(height, width, outer, *plan_tiles(width, bands, outer, budget_mb))
    scores = np.full((height, width), SCORE_NODATA, dtype=np.float32)
    for index, tile in enumerate(tiles):

        def tick(fraction, index=index):
            if progress is not None:
                progress((index + fraction) / len(tiles))

        rows, cols = tile.block.slices()
        out_rows, out_cols = tile.output.slices()
        scores[out_rows, out_cols] = _score_block(
            cube[:, rows, cols], valid[rows, cols], use[rows, cols], tile, inner, outer, tick
        )[0]
    return scores


@dataclass(frozen=True)
class LocalRxPlan:
    """The score pass of local RX: the raster (global_rx.RxSource), the windows, the fitted projection."""

    source: object
    inner: int
    outer: int
    projection: object = None


def local_rx_tile(state, plan, tile):
    """(scores, valid pixels, undersampled pixels, pixels without background) of one tile (the tile task)."""
    block = tile.block
    data, valid = state.reader.read(block)
    if plan.projection is not None:
        data = plan.projection.apply(np.where(valid, data, 0.0))
    exclude = state.mask.read(block)[0][0] != 0 if state.mask else None
    _, _, use = _check_block(data, valid, exclude)
    tick = None if state.progress is None else (lambda fraction: state.progress(tile, fraction))
    scores, small, empty = _score_block(data, valid, use, tile, plan.inner, plan.outer, tick)
    out = tile.output
    tile_valid = int(valid[out.within(block)].sum())
    return scores, tile_valid, small, empty


def run_local_rx(input_path, output_path, bands: list = None, mask_path: str = None, inner: int = 5, outer: int = 21,
                 feedback: Feedback = None, block_mb: float = DEFAULT_BLOCK_MB, components=None,
                 executor=None, nodata: tuple = (), report_bands: bool = True) -> LocalRxRunSummary:
    """Score every valid pixel of `input_path` with local RX and write a float32 raster.

    Mirrors run_global_rx: `bands` 1-based (None = every band not marked bad); `mask_path` non-zero pixels are kept out
    of every background ring but still scored; invalid pixels are nodata. One streaming pass:
    tiles (full-width strips, or squares when bands are many) are read with the halo their outer
    windows reach. `components` (projection.resolve_components): a first pass computes the global
    covariance and every tile is projected onto its leading principal components. `executor` runs
    the tile tasks (runtime.executor; None = this process). `nodata`, `report_bands`: as run_global_rx's.
    """
    from .global_rx import background_statistics, open_rx_run

    feedback = feedback or Feedback()
    check_outputs([("the output", output_path)], [("the input", input_path), ("the mask", mask_path)])
    check_raster_outputs([("the output", output_path, 1)])
    started = time.perf_counter()
    inner, outer = validate_windows(inner, outer)
    with ExitStack() as stack:
        executor, source, state = open_rx_run(input_path, bands, mask_path, executor, feedback, stack, report_bands,
                                              nodata)
        reader = state.reader
        choice = resolve_components(components, reader.band_count)
        height, width = reader.height, reader.width
        check_window_fits(outer, height, width)
        projection, score_start = None, 0
        if choice is not None:
            partial = background_statistics(executor, source, reader.windows(block_mb), ProgressRange(feedback, 0, 10))
            if partial.accumulator.count == 0:
                raise NoValidPixels("No valid pixels: every pixel is nodata, NaN or infinite in some band, or masked. "
                                    "Check the input's nodata value, the band selection and the mask.")
            if partial.accumulator.count < 2:
                raise InputError("Too few valid background pixels for the principal components (COMPONENTS): "
                                 "check the nodata value, the band selection and the mask.")
            projection = PrincipalProjection.fit(partial.accumulator.mean, partial.accumulator.covariance, choice)
            feedback.info(f"Projection onto {projection.describe()} of the global covariance.")
            score_start = 10
        band_count = projection.components if projection else reader.band_count
        tile_rows, tile_cols = plan_tiles(width, band_count, outer, block_mb)
        tiles = halo_tiles(height, width, outer, tile_rows, tile_cols)
        ring = outer * outer - inner * inner
        feedback.info(
            f"Local RX on {width}x{height} pixels x {band_count} bands, windows {inner}/{outer} "
            f"({ring} background pixels each), in {len(tiles)} tile(s) of up to "
            f"{min(tile_cols, width)}x{min(tile_rows, height)} "
            f"pixels{executor.where}."
        )
        if ring < band_count + 1:
            feedback.warning(
                f"The ring between the {inner} and {outer} pixel windows holds {ring} pixels, fewer than bands + 1 "
                f"({band_count + 1}): every covariance is singular and ridge-regularised. Use a larger outer window "
                "or fewer bands."
            )
        progress = ProgressRange(feedback, score_start, 100)
        order = {tile: index for index, tile in enumerate(tiles)}
        state.progress = lambda tile, fraction: progress((order[tile] + fraction) / len(tiles))
        throughput = ThroughputLog(feedback, width * height, "Local RX")
        valid_pixels = scored = undersampled = no_background = done = 0
        with RasterWriter.like(reader, output_path, band_names=["local RX score"]) as writer:
            results = executor.ordered(local_rx_tile, LocalRxPlan(source, inner, outer, projection), tiles)
            for index, (tile, (scores, tile_valid, small, empty)) in enumerate(results):
                valid_pixels += tile_valid
                scored += tile_valid - empty
                undersampled += small
                no_background += empty
                writer.write(tile.output, scores)
                progress((index + 1) / len(tiles))
                done += tile.output.pixels
                throughput(done)
            if valid_pixels == 0:
                raise NoValidPixels(
                    "No valid pixels: every pixel is nodata, NaN or infinite in some band. "
                    "Check the input's nodata value and the band selection."
                )
            if mask_path and scored == 0:  # no ring found background: when the mask is why, refused as global RX is
                check_mask_leaves_background(input_path, reader.bands, mask_path, feedback, nodata)
            metadata = {"fers_detector": "local RX", "fers_bands": ",".join(map(str, reader.bands)),
                        "fers_inner_window": inner, "fers_outer_window": outer}
            if projection is not None:
                metadata["fers_components"] = projection.components
            writer.set_metadata(metadata)
            writer.commit()
    if undersampled:
        feedback.warning(
            f"{undersampled} pixel(s) had fewer than {band_count + 1} usable background pixels in their ring "
            "(image edges, nodata or masked areas); their covariance was ridge-regularised, so their scores are "
            "less reliable."
        )
    if no_background:
        feedback.warning(f"{no_background} valid pixel(s) had no usable background in their ring and are nodata.")
    seconds = time.perf_counter() - started
    feedback.info(f"Wrote {shown_name(output_path)} in {seconds:.2f} s "
                  f"({valid_pixels / max(seconds, 1e-9):,.0f} pixels/s).")
    return LocalRxRunSummary(str(output_path), valid_pixels, scored, undersampled, no_background, band_count,
                             inner, outer, seconds)


def _benchmark():
    rng = np.random.default_rng(0)
    for bands, rows, cols in ((50, 100, 100), (30, 200, 200), (200, 40, 60)):
        cube = rng.standard_normal((bands, rows, cols))
        valid = np.ones((rows, cols), bool)
        started = time.perf_counter()
        local_rx_scores(cube, valid, 5, 21)
        seconds = time.perf_counter() - started
        print(f"{rows} x {cols} x {bands}: {seconds:.2f} s, {rows * cols / seconds:,.0f} pixels/s")


if __name__ == "__main__":
    _benchmark()
