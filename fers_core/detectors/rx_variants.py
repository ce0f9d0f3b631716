"""ENVI's RX variants: RXD with a global or local mean, UTD and RXD-UTD, all with the global covariance.

With K the background covariance of the whole image (pseudo-inverse when singular, as fit_rx),
mu the background mean, r the pixel and 1 the all-ones vector (Chang and Chiang 2002, "Anomaly
detection and classification for hyperspectral imagery", IEEE TGRS 40(6); ENVI's "RX Anomaly
Detection"):

    RXD(r)     = (r - mu)^T K^-1 (r - mu)
    UTD(r)     = (1 - mu)^T K^-1 (r - mu)      (uniform target detector: the matched signature is 1)
    RXD-UTD(r) = (r - 1)^T K^-1 (r - mu)       (= RXD - UTD)

mu is the global mean, or a local mean: the mean of the usable pixels of an odd kernel around the
pixel, optionally without a guard window around it. Near the edges the kernel is shifted inside
the image (it keeps its size) and the guard stays centred and clipped, as local RX's windows.
UTD and RXD-UTD depend on the data's units (the 1 vector does); RXD does not.

Computation: one statistics pass (global mean and covariance, float64, as global RX), then one
score pass: each block is whitened once (a = F (r - mu_global), F^T F = K^-1, the float32
triangular factor of global RX), a local mean is a box mean of the data centred on the global mean
(whitening is linear; separable float32 run sums, see window_sums, band chunks on every core), and
each score is a dot product of whitened vectors. Memory follows the block: strips (or squares when
bands are many) with the halo the kernel reaches; the next block is read while one scores.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..feedback import Feedback, ProgressRange
from ..io.atomic import shown_name
from ..io.windows import DEFAULT_BLOCK_MB, check_window_fits, even_step, halo_tile_shape, halo_tiles
from ..io.writer import SCORE_NODATA, RasterWriter
from ..runtime.blas import strmm
from .rx import CovarianceAccumulator, fit_rx
from .throughput import ThroughputLog
from .window_sums import WindowSums

VARIANTS = ("rxd", "utd", "rxd-utd")
NAMES = {"rxd": "RXD", "utd": "UTD", "rxd-utd": "RXD-UTD"}


@dataclass
class RxVariantRunSummary:
    """What a run did, for the log and for tests."""

    output_path: str
    valid_pixels: int
    no_background_pixels: int
    bands: int
    rank: int
    seconds: float


def describe(variant, window=None, guard=0):
    text = NAMES[variant]
    if not window:
        return f"{text}, global mean"
    return f"{text}, local mean ({window} px kernel" + (f", {guard} px guard)" if guard else ")")


DETECTOR_VARIANTS = {"rxd-local-mean": ("rxd", True), "utd": ("utd", False), "rxd-utd": ("rxd-utd", False)}
"""Detector names (fers:detect's DETECTOR, the batch runner's --detector) -> (variant, local mean)."""


def detector_settings(detector, inner, outer):
    """(variant, window, guard) of a detector name: the local mean's kernel is the outer window, its guard the inner."""
    variant, local_mean = DETECTOR_VARIANTS[detector]
    return (variant, outer, inner) if local_mean else (variant, None, 0)


def chi_square_law(variant):
    """Whether the scores follow (about) a chi-square law for Gaussian backgrounds: RXD only."""
    return variant == "rxd"


def validate_variant(variant, window=None, guard=0):
    """(variant, window or None, guard) checked; InputError naming what is wrong."""
    if variant not in VARIANTS:
        raise InputError(f"Unknown RX variant '{variant}': use one of {', '.join(VARIANTS)}.")
    if window in (None, 0):
        return variant, None, 0
    window, guard = int(window), int(guard or 0)
    if window < 3 or window % 2 == 0:
        raise InputError(f"The local mean kernel must be an odd number of pixels, at least 3 (got {window}): "
                         "use e.g. 21.")
    if guard < 0 or (guard and guard % 2 == 0):
        raise InputError(f"The guard window must be 0 (none) or an odd number of pixels (got {guard}): use e.g. 5.")
    if guard >= window:
        raise InputError(f"The guard window ({guard} px) must be smaller than the local mean kernel ({window} px): "
                         f"use e.g. a guard of {max(1, window // 4 * 2 - 1)} or a larger kernel.")
    return variant, window, guard


BAND_CHUNK = 8  # whitened bands box-filtered at once: the filter's temporaries stay small


def bytes_per_pixel(bands, value_bytes=8):
    """A block pixel: two reads (this block and the next, read ahead; `value_bytes` a value) and each thread's
    band chunk: its centred copy and run sums."""
    return 2 * bands * value_bytes + _threads() * BAND_CHUNK * 4 * 8 + 16


def bytes_per_output_pixel(bands, variant=None):
    """An output pixel: its float32 differences to the local mean and (UTD, RXD-UTD; None: any variant) the local
    mean, whitened in place."""
    return bands * 4 * (1 if variant == "rxd" else 2) + 32


def plan(width, bands, outer, block_mb=DEFAULT_BLOCK_MB, value_bytes=8, variant=None):
    """(rows, cols) of output per tile (windows.halo_tile_shape with this module's memory per pixel)."""
    return halo_tile_shape(width, outer, block_mb * 2**20, bytes_per_pixel(bands, value_bytes),
                           bytes_per_output_pixel(bands, variant))


class _Whitening:
    """a = F (x - mean): global RX's float32 factor (F^T F = K^-1 restricted to the background's span)."""

    def __init__(self, model):
        self.model = model
        # the float32 factor includes the scale; without it (data in extreme units) the float64 whitening does
        self.factor = model.factor if model.factor is not None else (model.whitening * model.scale).T
        square = model.factor is not None and model.factor.shape[0] == model.n_features
        self._triangular = np.asfortranarray(self.factor) if square else None
        self.ones = self(np.ones((model.n_features, 1))).astype(np.float64)[:, 0]  # the uniform target, whitened

    def __call__(self, data):
        """F (x - mean) of (bands, pixels) -> (rank, pixels)."""
        return self.apply(np.asarray(data, np.float64) - self.model.mean[:, None])

    def apply(self, centred):
        """F d of already centred (bands, pixels) -> (rank, pixels), in the factor's type.

        A square float32 factor is upper triangular: a triangular product (BLAS strmm, half the
        multiply-adds), as global RX scores."""
        centred = np.ascontiguousarray(centred, dtype=self.factor.dtype)
        if self._triangular is None or strmm is None:
            return self.factor @ centred
        # R d for every pixel in place: (d^T R^T), column-major, is the row-major block itself
        return strmm(1.0, self._triangular, centred.T, side=1, lower=0, trans_a=1, overwrite_b=1).T


_POOL = []


def _threads():
    return max(1, min(4, os.cpu_count() or 1))


def _chunk_pool():
    """The threads that box-filter band chunks in parallel (one a core, at most 4), made once."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(_threads(), thread_name_prefix="fers-local-mean"))
    return _POOL[0]


def _squared_norms(vectors):
    """Each column's squared norm (float64 sums) of (k, pixels), pixel ranges on every core."""
    result = np.empty(vectors.shape[1], np.float64)
    step = -(-vectors.shape[1] // _threads())

    def part(start):
        np.einsum("kp,kp->p", vectors[:, start:start + step], vectors[:, start:start + step], dtype=np.float64,
                  out=result[start:start + step])

    list(_chunk_pool().map(part, range(0, vectors.shape[1], max(step, 1))))
    return result


def _score_tile(data, valid, use, tile, whitening, variant, window, guard):
    """Scores (rows, cols) float32 of a tile's output pixels from its block, and the pixels without background.

    Whitening is linear, so the local mean is taken of the data (centred on the global mean) and
    only the output pixels are whitened: RXD = |F (x - m)|^2, UTD = (F (1 - m)) . (F (x - m)).
    """
    block, out = tile.block, tile.output
    bands = data.shape[0]
    first, left = out.row - block.row, out.col - block.col
    inside = (slice(None), slice(first, first + out.rows), slice(left, left + out.cols))
    work = np.result_type(data.dtype, np.float32)  # float32 for float32 and small integers, as global RX
    mean = whitening.model.mean[:, None, None].astype(work)
    keep = valid[inside[1:]].copy()
    empty = 0
    difference = np.empty((bands, out.rows, out.cols), np.float32)
    local = None
    with np.errstate(over="ignore", invalid="ignore"):  # invalid pixels may hold anything; they are zeroed
        if window:
            sums = WindowSums(tile, window, guard)
            all_usable = bool(use.all())
            count = sums.areas() if all_usable else np.rint(sums(use[None].astype(np.float32))[0])
            empty = int((keep & (count < 1)).sum())
            keep &= count >= 1
            inverse_count = np.where(count > 0, 1.0 / np.maximum(count, 1), 0.0).astype(np.float32)
            local = np.empty((bands, out.rows, out.cols), np.float32) if variant != "rxd" else None

            def local_means(start):  # one band chunk, so its temporaries stay in the core's cache
                chunk = slice(start, start + BAND_CHUNK)
                with np.errstate(over="ignore", invalid="ignore"):  # per thread
                    padded, centred = sums.padded(len(range(*chunk.indices(bands))), *use.shape)
                    np.subtract(data[chunk], mean[chunk], out=centred, dtype=work, casting="unsafe")
                    if not all_usable:
                        centred[:, ~use] = 0
                    means = sums.padded_sums(padded)
                    means *= inverse_count
                    if all_usable:  # the centred block holds the output pixels' differences to the global mean
                        np.subtract(centred[inside], means, out=difference[chunk])
                    else:  # its excluded pixels are zeroed, though scored
                        np.subtract(data[chunk][inside], mean[chunk], out=difference[chunk], casting="unsafe")
                        difference[chunk] -= means
                if local is not None:
                    local[chunk] = means

            # numpy releases the GIL in its array loops: the chunks run on every core
            list(_chunk_pool().map(local_means, range(0, bands, BAND_CHUNK)))
        else:
            np.subtract(data[inside], mean, out=difference, casting="unsafe")
    if not keep.all():
        difference[:, ~keep] = 0
    whitened = whitening.apply(difference.reshape(bands, -1))
    rxd = _squared_norms(whitened)
    if variant == "rxd":
        scores = rxd
    else:
        target = whitening.ones[:, None]
        if local is not None:
            target = target - whitening.apply(local.reshape(bands, -1))
        utd = np.einsum("kp,kp->p", np.broadcast_to(target, whitened.shape), whitened, dtype=np.float64)
        scores = utd if variant == "utd" else rxd - utd
    result = np.full((out.rows, out.cols), SCORE_NODATA, np.float32)
    result[keep] = scores.reshape(out.rows, out.cols)[keep]
    return result, empty


def rx_variant_scores(cube, valid, variant, window=None, guard=0, exclude=None):
    """An RX variant of an in-memory cube (bands, rows, cols) -> float32 scores (rows, cols); see the module.

    `valid`: pixels to score and to use as background; `exclude`: valid pixels kept out of the
    background (covariance and local means) but still scored. Invalid pixels are SCORE_NODATA.
    """
    variant, window, guard = validate_variant(variant, window, guard)
    cube = np.asarray(cube, np.float64)
    valid = np.asarray(valid, bool)
    use = valid if exclude is None else valid & ~np.asarray(exclude, bool)
    bands, height, width = cube.shape
    accumulator = CovarianceAccumulator(bands)
    accumulator.add_bands(cube.reshape(bands, -1), use.reshape(-1))
    whitening = _Whitening(fit_rx(accumulator))
    tile = halo_tiles(height, width, window or 1, height, width)[0]
    return _score_tile(cube, valid, use, tile, whitening, variant, window, guard)[0]


@dataclass(frozen=True)
class RxVariantPlan:
    """The score pass of an RX variant: the raster (global_rx.RxSource), the variant, the global whitening."""

    source: object
    variant: str
    window: int
    guard: int
    whitening: object


def rx_variant_tile(state, plan, tile):
    """(scores, pixels without background) of one tile (the tile task)."""
    data, valid = state.read(tile.block)
    use = valid if state.mask is None else valid & (state.mask.read(tile.block)[0][0] == 0)
    return _score_tile(data, valid, use, tile, plan.whitening, plan.variant, plan.window, plan.guard)


def run_rx_variant(input_path, output_path, variant: str, window: int = None, guard: int = 0, bands: list = None,
                   mask_path: str = None, feedback: Feedback = None, block_mb: float = DEFAULT_BLOCK_MB,
                   executor=None, nodata: tuple = (), report_bands: bool = True) -> RxVariantRunSummary:
    """Score every valid pixel of `input_path` with RXD (global or local mean), UTD or RXD-UTD; float32 raster.

    `bands` 1-based (None = every band not marked bad); `mask_path` non-zero pixels stay out of the covariance and the
    local means but are scored; invalid pixels are nodata. Two streaming passes (statistics, scores).
    `executor` runs the block and tile tasks (runtime.executor; None = this process). `nodata`, `report_bands`: as
    run_global_rx's.
    """
    from .global_rx import background_statistics, fit_rx_partial, open_rx_run

    feedback = feedback or Feedback()
    started = time.perf_counter()
    variant, window, guard = validate_variant(variant, window, guard)
    with ExitStack() as stack:
        executor, source, state = open_rx_run(input_path, bands, mask_path, executor, feedback, stack, report_bands,
                                              nodata)
        reader = state.reader
        height, width = reader.height, reader.width
        if window:  # the local mean's kernel is shifted inside the image as local RX's outer window
            check_window_fits(window, height, width)
        what = describe(variant, window, guard)
        scaled = any(s != 1.0 for s in reader.scales) or any(o != 0.0 for o in reader.offsets)  # read as float64
        value_bytes = 8 if scaled or np.dtype(reader.stored_dtype).kind == "c" else \
            np.dtype(reader.stored_dtype).itemsize
        tile_rows, tile_cols = plan(width, reader.band_count, window or 1, block_mb, value_bytes, variant)
        # as many tiles, of even sizes: no thin last tile rereading a whole halo for a few pixels
        tile_rows, tile_cols = even_step(height, tile_rows), even_step(width, tile_cols)
        tiles = halo_tiles(height, width, window or 1, tile_rows, tile_cols)
        feedback.info(f"{what} on {width}x{height} pixels x {reader.band_count} bands, global covariance, in "
                      f"{len(tiles)} tile(s) of up to {min(tile_cols, width)}x{min(tile_rows, height)} pixels"
                      f"{executor.where}.")
        partial = background_statistics(executor, source, reader.windows(block_mb), ProgressRange(feedback, 0, 40))
        model = executor.fit(fit_rx_partial, partial, feedback)
        scores_plan = RxVariantPlan(source, variant, window, guard, _Whitening(model))
        progress = ProgressRange(feedback, 40, 100)
        throughput = ThroughputLog(feedback, width * height, NAMES[variant])
        no_background = done = 0
        with RasterWriter.like(reader, output_path, band_names=[f"{NAMES[variant]} score"]) as writer:
            with state.read_ahead([tile.block for tile in tiles]):  # the next block is read while this one scores
                for index, (tile, (scores, empty)) in enumerate(executor.ordered(rx_variant_tile, scores_plan, tiles)):
                    no_background += empty
                    writer.write(tile.output, scores)
                    progress((index + 1) / len(tiles))
                    done += tile.output.pixels
                    throughput(done)
            metadata = {"fers_detector": what, "fers_bands": ",".join(map(str, reader.bands))}
            if window:
                metadata.update(fers_mean_window=window, fers_guard_window=guard)
            writer.set_metadata(metadata)
            writer.commit()
    if no_background:
        feedback.warning(f"{no_background} valid pixel(s) had no usable pixel in their local mean kernel and are "
                         "nodata.")
    seconds = time.perf_counter() - started
    feedback.info(f"Wrote {shown_name(output_path)} in {seconds:.2f} s "
                  f"({partial.valid_pixels / max(seconds, 1e-9):,.0f} pixels/s).")
    return RxVariantRunSummary(str(output_path), partial.valid_pixels, no_background, reader.band_count, model.rank,
                               seconds)
