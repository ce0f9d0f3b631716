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
corner pixel 112 instead of 416 ring pixels with windows 5/21; on the real scenes that inflated
edge scores by orders of magnitude (AUC 0.81 instead of 0.96 on abu-urban-1, 0.98 instead of
0.995 on hydice-urban-162). An image smaller than the outer window uses its whole extent.

Regularisation: every covariance gets a ridge of 1e-9 * trace/bands on its diagonal, far below
any real variance, so that duplicate or constant bands stay solvable. A ring with fewer than
bands + 1 usable pixels has a singular covariance: it falls back to a ridge of
1e-6 * trace/bands (the "ridge-regularised covariance"). Such pixels are counted and reported,
since their scores are less reliable. A ring with fewer than 2 usable pixels, or whose pixels
are all identical, gives no background: the pixel is nodata.

Speed: window sums of x and of the products x_k x_l come from summed-area tables (integral
images) built separably (cumulative sums down the rows, then along the columns) over a tile, so
each window sum costs four look-ups whatever the window size; the quadratic forms are then
solved for hundreds of pixels at once: a batched Cholesky factorisation (np.linalg.cholesky on
(n, b, b)) and a forward substitution vectorised over the batch (a batched np.linalg.solve if
a matrix is not positive definite).

Memory: the products' upper triangle (b (b + 1) / 2 values per pixel) is stored for the output
pixels of one tile at a time. Tiles are full-width strips of rows, or squares when the bands are
many (so that one tile's products fit the budget), each read with the halo its outer windows
reach (outer // 2 pixels, up to outer - 1 at the image edges); plan_tiles picks whichever
re-reads fewer halo pixels. The batched solves use about a quarter of the budget.

Measured with the default 64 MB budget, windows 5/21, float64 random data, on the 2-core
development machine while other jobs ran (load about 1.8); `python -m fers_core.local_rx` reruns it:
    100 x 100 pixels x 50 bands:  0.64 s, about 15,000 pixels/s
    200 x 200 pixels x 30 bands:  0.78 s, about 51,000 pixels/s
    (under a load of 3.5 the same runs gave 6,400 and 25,000 pixels/s)
Time grows with bands^2 (window sums) and bands^3 (solves): 100 x 60 pixels x 200 bands ran at
about 600 pixels/s, so a 1000 x 1000 pixel, 200-band scene takes about half an hour where global
RX takes seconds.
"""

import time
from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import dsyrk as syrk
from scipy.linalg.lapack import dpotrf as potrf

from .errors import InputError
from .feedback import Feedback, ProgressRange
from .output_safety import check_outputs
from .projection import PrincipalProjection, resolve_components
from .raster_io import (
    DEFAULT_BLOCK_MB,
    SCORE_NODATA,
    RasterReader,
    RasterWriter,
    Window,
    check_raster_outputs,
    read_mask,
)
from .threads import blas_threads_set

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


def plan_tiles(width, bands, outer, budget_mb=DEFAULT_BLOCK_MB, in_bytes=None, out_bytes=None):
    """(rows, cols) of output per tile: full-width strips or squares, whichever re-reads fewer halo pixels.

    Each tile is read with up to outer - 1 extra rows and columns around it (the halo); the tile
    and its halo fit the budget, at least one pixel. `in_bytes` and `out_bytes` per input and
    output pixel default to local RX's.
    """
    budget = budget_mb * 2**20
    halo = outer - 1
    out_bytes = _bytes_per_output_pixel(bands) if out_bytes is None else out_bytes
    in_bytes = _bytes_per_input_pixel(bands) if in_bytes is None else in_bytes

    def cost(rows, cols):
        return rows * cols * out_bytes + (rows + halo) * min(cols + halo, width) * in_bytes

    def overhead(rows, cols):
        return (rows + halo) * min(cols + halo, width) / (rows * cols)

    strip = max(1, int((budget - halo * width * in_bytes) // (width * (out_bytes + in_bytes))))
    side = 1
    while side < width and cost(side + 1, side + 1) <= budget:
        side += 1
    if side >= width or overhead(strip, width) <= overhead(side, side):
        return strip, width
    return side, side


def rows_per_block(cols, bands, outer, budget_mb=DEFAULT_BLOCK_MB):
    """Output rows per tile (see plan_tiles)."""
    return plan_tiles(cols, bands, outer, budget_mb)[0]


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


def block_rows(first, last, height, outer):
    """Rows [top, bottom) of the image that the outer windows of output rows [first, last) reach.

    The same function gives the columns a tile of output columns needs.
    """
    start, stop = _outer_bounds(np.array([first, last - 1]), outer // 2, height)
    return int(start[0]), int(stop[1])


@dataclass(frozen=True)
class _Tile:
    """Output rows [first, last) x columns [left, right) of an image of height x width, read as block."""

    first: int
    last: int
    left: int
    right: int
    height: int
    width: int
    outer: int

    @property
    def block(self):
        """The Window to read: every pixel the tile's outer windows reach."""
        top, bottom = block_rows(self.first, self.last, self.height, self.outer)
        start, stop = block_rows(self.left, self.right, self.width, self.outer)
        return Window(top, start, bottom - top, stop - start)

    @property
    def output(self):
        return Window(self.first, self.left, self.last - self.first, self.right - self.left)


def _tiles(height, width, outer, tile_rows, tile_cols):
    return [_Tile(first, min(height, first + tile_rows), left, min(width, left + tile_cols), height, width, outer)
            for first in range(0, height, tile_rows) for left in range(0, width, tile_cols)]


RESTART_COLUMNS = 64
"""The ring Gram slides along a row this many pixels before it is summed afresh (bounds rounding drift)."""
_BORDER = 1e300  # the bordered matrix's last diagonal: any value above z^T G^-1 z keeps it positive definite


class _SlidingGram:
    """The Gram matrix G = sum of z z^T, z = (x, 1), over the ring of one pixel after another along a row.

    From G come the ring's count n = G[b, b], sum s = G[b, :b] and scatter S = G[:b, :b]. Moving one
    pixel to the right changes the ring by at most one column of the outer window (in and out) and one
    of the inner window, so G is updated by four symmetric rank-k products (BLAS dsyrk, k = the window
    height) instead of summed afresh; only the lower triangle is kept.
    """

    def __init__(self, columns, outer_rows, inner_rows):
        self.columns = columns  # (block cols, block rows, bands + 1): z of usable pixels, 0 elsewhere
        self.outer_rows, self.inner_rows = outer_rows, inner_rows
        self.gram = None
        self.window = None

    def _add(self, alpha, cols, rows):
        for col in range(*cols):
            piece = self.columns[col, rows[0]:rows[1]]
            if piece.shape[0]:
                self.gram = syrk(alpha, piece.T, beta=1.0, c=self.gram, lower=1, overwrite_c=1)

    def _fresh(self, outer_cols, inner_cols):
        size = self.columns.shape[2]
        self.gram = np.zeros((size, size), order="F")
        (r0, r1), (i0, i1) = self.outer_rows, self.inner_rows
        outer = self.columns[outer_cols[0]:outer_cols[1], r0:r1].reshape(-1, size)
        inner = self.columns[inner_cols[0]:inner_cols[1], i0:i1].reshape(-1, size)
        self.gram = syrk(1.0, outer.T, beta=0.0, c=self.gram, lower=1, overwrite_c=1)
        if inner.shape[0]:
            self.gram = syrk(-1.0, inner.T, beta=1.0, c=self.gram, lower=1, overwrite_c=1)

    def move(self, outer_cols, inner_cols, fresh):
        """The ring's Gram for windows outer_cols and inner_cols ([start, stop) column pairs)."""
        if fresh or self.window is None:
            self._fresh(outer_cols, inner_cols)
        else:
            (po0, po1), (pi0, pi1) = self.window
            self._add(1.0, (po1, outer_cols[1]), self.outer_rows)  # outer window's new column
            self._add(-1.0, (po0, outer_cols[0]), self.outer_rows)  # and the one it left
            self._add(-1.0, (pi1, inner_cols[1]), self.inner_rows)  # inner window's new column leaves the ring
            self._add(1.0, (pi0, inner_cols[0]), self.inner_rows)  # the column the inner window left rejoins it
        self.window = (outer_cols, inner_cols)
        return self.gram


def _quadratic_form(gram, z, bands, ridge_factor, border):
    """(n - 1) d^T (C + ridge)^-1 d from the ring's Gram matrix and the pixel's z = (x, 1), or None.

    With P = S - s s^T / n = (n - 1) C, block elimination of the Gram matrix gives
    z^T G^-1 z = d^T P^-1 d + 1/n (d = x - s / n), and one Cholesky factorisation of the bordered
    matrix [[G, z], [z^T, big]] yields L^-1 z as its last row: the factor and the solve in one
    LAPACK call. The ridge (ridge_factor * trace(C) / bands on C's diagonal) goes on S's diagonal.
    Returns None when the ring has no usable background (fewer than 2 pixels, or no variance).
    """
    n = gram[bands, bands]
    if n < 1.5:  # counts are exact small integers
        return None
    total = gram[bands, :bands]
    trace = (np.trace(gram[:bands, :bands]) - total @ total / n) / (n - 1)
    if not trace > 0:
        return None
    size = bands + 1
    border[:size, :size] = gram
    diagonal = border.reshape(-1, order="F")[:size * (size + 2):size + 2]  # a view of the first b + 1 diagonal
    diagonal[:bands] += ridge_factor * trace / bands * (n - 1)
    border[size, :size] = z
    border[size, size] = _BORDER
    factor, info = potrf(border, lower=1, clean=0, overwrite_a=1)
    if info == 0:
        solved = factor[size, :size]
        return max(0.0, (n - 1) * (solved @ solved - 1.0 / n))
    # not positive definite even with the ridge (rounding in a nearly degenerate ring): a least-squares solve
    scatter = np.tril(gram[:bands, :bands]) + np.tril(gram[:bands, :bands], -1).T - np.outer(total, total) / n
    covariance = scatter / (n - 1) + np.eye(bands) * (ridge_factor * trace / bands)
    difference = z[:bands] - total / n
    return float(difference @ np.linalg.lstsq(covariance, difference, rcond=None)[0])


def _score_block(cube, valid, use, tile, inner, outer, tick=None):
    """Local RX scores of a tile's output pixels from its block (tile.block) held in memory.

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
            gram = _SlidingGram(columns, tuple(outer_rows[:, k]), tuple(inner_rows[:, k]))
            for m in range(out.cols):
                g = gram.move(tuple(outer_cols[:, m]), tuple(inner_cols[:, m]), m % RESTART_COLUMNS == 0)
                if not row_valid[m]:
                    continue
                n = g[bands, bands]
                small = n < bands + 1
                z[:bands] = centred[:, first + k, left + m]
                value = _quadratic_form(g, z, bands, RIDGE_UNDERSAMPLED if small else RIDGE_FLOOR, border)
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


def _duration(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ThroughputLog:
    """Logs pixels per second and the estimated time left: after the first tile, then every `every` seconds."""

    def __init__(self, feedback, total_pixels, what, every=30.0):
        self.feedback, self.total, self.what, self.every = feedback, max(1, int(total_pixels)), what, every
        self.started = time.perf_counter()
        self.last = None

    def __call__(self, done_pixels):
        now = time.perf_counter()
        if done_pixels >= self.total or (self.last is not None and now - self.last < self.every):
            return
        self.last = now
        rate = done_pixels / max(now - self.started, 1e-9)
        left = (self.total - done_pixels) / max(rate, 1e-9)
        self.feedback.info(f"{self.what}: {done_pixels:,} of {self.total:,} pixels, {rate:,.0f} pixels/s, "
                           f"about {_duration(left)} left.")


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
        cube = _projection_of(np.where(valid, cube, 0.0), use, choice).apply(np.where(valid, cube, 0.0))
    bands, height, width = cube.shape
    tiles = _tiles(height, width, outer, *plan_tiles(width, bands, outer, budget_mb))
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


def run_local_rx(input_path, output_path, bands=None, mask_path=None, inner=5, outer=21, feedback=None,
                 block_mb=DEFAULT_BLOCK_MB, components=None):
    """Score every valid pixel of `input_path` with local RX and write a float32 raster.

    Mirrors run_global_rx: `bands` 1-based (None = all); `mask_path` non-zero pixels are kept out
    of every background ring but still scored; invalid pixels are nodata. One streaming pass:
    tiles (full-width strips, or squares when bands are many) are read with the halo their outer
    windows reach. `components` (projection.resolve_components): a first pass computes the global
    covariance and every tile is projected onto its leading principal components.
    """
    feedback = feedback or Feedback()
    check_outputs([("the output", output_path)], [("the input", input_path), ("the mask", mask_path)])
    check_raster_outputs([("the output", output_path, 1)])
    started = time.perf_counter()
    inner, outer = validate_windows(inner, outer)
    reader = RasterReader(input_path, bands)
    choice = resolve_components(components, reader.band_count)
    mask = read_mask(mask_path, reader) if mask_path else None
    height, width = reader.height, reader.width
    projection, score_start = None, 0
    if choice is not None:
        from .rx_raster import background_statistics

        partial = background_statistics(reader, mask, block_mb, ProgressRange(feedback, 0, 10))
        if partial.accumulator.count < 2:
            raise InputError("Too few valid background pixels for the principal components (COMPONENTS): "
                             "check the nodata value, the band selection and the mask.")
        projection = PrincipalProjection.fit(partial.accumulator.mean, partial.accumulator.covariance, choice)
        feedback.info(f"Projection onto {projection.describe()} of the global covariance.")
        score_start = 10
    band_count = projection.components if projection else reader.band_count
    tile_rows, tile_cols = plan_tiles(width, band_count, outer, block_mb)
    tiles = _tiles(height, width, outer, tile_rows, tile_cols)
    ring = outer * outer - inner * inner
    feedback.info(
        f"Local RX on {width}x{height} pixels x {band_count} bands, windows {inner}/{outer} "
        f"({ring} background pixels each), in {len(tiles)} tile(s) of up to {tile_rows}x{min(tile_cols, width)} "
        "pixels."
    )
    if ring < band_count + 1:
        feedback.warning(
            f"The ring between the {inner} and {outer} pixel windows holds {ring} pixels, fewer than bands + 1 "
            f"({band_count + 1}): every covariance is singular and ridge-regularised. Use a larger outer window "
            "or fewer bands."
        )
    progress = ProgressRange(feedback, score_start, 100)
    throughput = ThroughputLog(feedback, width * height, "Local RX")
    valid_pixels = scored = undersampled = no_background = done = 0
    with RasterWriter.like(reader, output_path, band_names=["local RX score"]) as writer:
        for index, tile in enumerate(tiles):
            block = tile.block
            data, valid = reader.read(block)
            if projection is not None:
                data = projection.apply(np.where(valid, data, 0.0))
            exclude = mask.read(block)[0][0] != 0 if mask else None
            _, _, use = _check_block(data, valid, exclude)

            def tick(fraction, index=index):
                progress((index + fraction) / len(tiles))

            scores, small, empty = _score_block(data, valid, use, tile, inner, outer, tick)
            out = tile.output
            tile_valid = int(valid[out.row - block.row:out.row - block.row + out.rows,
                                   out.col - block.col:out.col - block.col + out.cols].sum())
            valid_pixels += tile_valid
            scored += tile_valid - empty
            undersampled += small
            no_background += empty
            writer.write(out, scores)
            progress((index + 1) / len(tiles))
            done += out.pixels
            throughput(done)
        if valid_pixels == 0:
            raise InputError(
                "No valid pixels: every pixel is nodata, NaN or infinite in some band. "
                "Check the input's nodata value and the band selection."
            )
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
    feedback.info(f"Wrote {output_path} in {seconds:.2f} s ({valid_pixels / max(seconds, 1e-9):,.0f} pixels/s).")
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
