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

from .errors import InputError
from .feedback import Feedback, ProgressRange
from .raster_io import DEFAULT_BLOCK_MB, SCORE_NODATA, RasterReader, RasterWriter, Window, read_mask

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
    """Stored products (upper triangle) plus the ring-sum temporaries of one output pixel."""
    return (bands * (bands + 1) // 2 + 8 * bands + 16) * 8


def _bytes_per_input_pixel(bands):
    """The block read as float64, centred, and the per-band product and cumulative-sum tables."""
    return bands * 8 * 6


def solve_batch(bands, budget_mb=DEFAULT_BLOCK_MB):
    """Pixels per batched solve: their covariance and factor matrices use about a quarter of the budget."""
    return int(min(4096, max(8, budget_mb * 2**20 // 4 // (bands * bands * 8 * 3))))


def plan_tiles(width, bands, outer, budget_mb=DEFAULT_BLOCK_MB):
    """(rows, cols) of output per tile: full-width strips or squares, whichever re-reads fewer halo pixels.

    Each tile is read with up to outer - 1 extra rows and columns around it (the halo); the tile
    and its halo fit three quarters of the budget (the rest is for the batched solves), at
    least one pixel.
    """
    budget = budget_mb * 2**20 * 0.75
    halo = outer - 1
    out_bytes, in_bytes = _bytes_per_output_pixel(bands), _bytes_per_input_pixel(bands)

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


class _RingSums:
    """Ring sums (outer window minus inner window) for the output pixels of a tile, from its block."""

    def __init__(self, tile, inner, outer):
        block = tile.block
        out_rows, out_cols = np.arange(tile.first, tile.last), np.arange(tile.left, tile.right)
        self.ro = tuple(b - block.row for b in _outer_bounds(out_rows, outer // 2, tile.height))
        self.ri = tuple(b - block.row for b in _inner_bounds(out_rows, inner // 2, tile.height))
        self.co = tuple(b - block.col for b in _outer_bounds(out_cols, outer // 2, tile.width))
        self.ci = tuple(b - block.col for b in _inner_bounds(out_cols, inner // 2, tile.width))

    def __call__(self, image):
        """Ring sums of image (..., block_rows, cols) -> (..., out_rows, cols)."""
        table = np.zeros(image.shape[:-2] + (image.shape[-2] + 1, image.shape[-1]))
        np.cumsum(image, axis=-2, out=table[..., 1:, :])
        ring = None
        for (r0, r1), (c0, c1) in ((self.ro, self.co), (self.ri, self.ci)):
            rows = table[..., r1, :] - table[..., r0, :]
            column_table = np.zeros(rows.shape[:-1] + (rows.shape[-1] + 1,))
            np.cumsum(rows, axis=-1, out=column_table[..., 1:])
            part = column_table[..., c1] - column_table[..., c0]
            ring = part if ring is None else ring - part
        return ring


def _packed_index(bands):
    """For each (k, l) of a bands x bands matrix, its index in the packed upper triangle (row by row)."""
    index = np.arange(bands)
    low, high = np.minimum.outer(index, index), np.maximum.outer(index, index)
    return (low * bands - low * (low - 1) // 2 + (high - low)).ravel()


def _quadratic_forms(covariance, difference):
    """d^T C^-1 d for a batch: Cholesky C = L L^T, then |L^-1 d|^2 by forward substitution over the batch."""
    try:
        lower = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:  # not positive definite beyond the ridge: a general solve
        solved = np.linalg.solve(covariance, difference[:, :, None])[:, :, 0]
        return np.einsum("ij,ij->i", difference, solved)
    whitened = np.empty_like(difference)
    for i in range(difference.shape[1]):
        dot = np.einsum("pj,pj->p", lower[:, i, :i], whitened[:, :i])
        whitened[:, i] = (difference[:, i] - dot) / lower[:, i, i]
    return np.einsum("ij,ij->i", whitened, whitened)


def _score_block(cube, valid, use, tile, inner, outer, batch, tick=None):
    """Local RX scores of a tile's output pixels from its block (tile.block) held in memory.

    Returns (scores float32 (tile rows, tile cols), number of undersampled pixels, number of
    pixels without background).
    """
    bands = cube.shape[0]
    sums = _RingSums(tile, inner, outer)
    block, out = tile.block, tile.output
    first, left = out.row - block.row, out.col - block.col
    last, cols = first + out.rows, out.cols
    shift = cube[:, use].mean(axis=1) if use.any() else np.zeros(bands)
    centred = np.where(use, cube - shift[:, None, None], 0.0)
    # one scale for every band (RX does not depend on it): products stay inside float64 for any data range
    span = float(np.abs(centred).max()) if centred.size else 0.0
    span = span if np.isfinite(span) and span > 0 else 1.0
    centred /= span
    count = sums(use.astype(np.float64))
    total = sums(centred)
    pairs = bands * (bands + 1) // 2
    products = np.empty((out.pixels, pairs))  # pixel-major: one pixel's products are contiguous
    offset = 0
    for k in range(bands):
        products[:, offset:offset + bands - k] = sums(centred[k] * centred[k:]).reshape(bands - k, -1).T
        offset += bands - k
        if tick is not None:
            tick((k + 1) / bands * 0.6)

    scores = np.full((out.rows, cols), SCORE_NODATA, dtype=np.float32)
    packed_index = _packed_index(bands)
    rows, columns = np.nonzero(valid[first:last, left:left + cols])
    diagonal = np.arange(bands)
    undersampled = no_background = 0
    for start in range(0, rows.size, batch):
        r, c = rows[start:start + batch], columns[start:start + batch]
        n = count[r, c]
        ok = n >= 1.5  # at least 2 ring pixels (counts are exact small integers)
        no_background += int((~ok).sum())
        r, c, n = r[ok], c[ok], n[ok]
        s = total[:, r, c].T
        mean = s / n[:, None]
        covariance = np.take(products[r * cols + c], packed_index, axis=1).reshape(r.size, bands, bands)
        covariance -= s[:, :, None] * mean[:, None, :]
        covariance /= (n - 1)[:, None, None]
        trace = covariance[:, diagonal, diagonal].sum(axis=1) / bands
        small = n < bands + 1
        undersampled += int(small.sum())
        covariance[:, diagonal, diagonal] += (np.where(small, RIDGE_UNDERSAMPLED, RIDGE_FLOOR) * trace)[:, None]
        usable = trace > 0
        no_background += int((~usable).sum())
        covariance[~usable] = np.eye(bands)
        difference = (cube[:, first + r, left + c].T - shift) / span - mean
        values = _quadratic_forms(covariance, difference)
        values[~usable] = SCORE_NODATA
        scores[r, c] = values.astype(np.float32)
        if tick is not None:
            tick(0.6 + 0.4 * min(start + batch, rows.size) / rows.size)
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


def local_rx_scores(cube, valid, inner, outer, exclude=None, budget_mb=DEFAULT_BLOCK_MB, progress=None):
    """Local RX of an in-memory cube (bands, rows, cols) -> float32 scores (rows, cols).

    `valid` (rows, cols) bool: pixels to score and to use as background; `exclude` (rows, cols)
    bool: valid pixels kept out of every ring (still scored). Invalid pixels get SCORE_NODATA.
    `progress(fraction)` is called now and then (it may raise Cancelled).
    """
    inner, outer = validate_windows(inner, outer)
    cube, valid, use = _check_block(cube, valid, exclude)
    bands, height, width = cube.shape
    tiles = _tiles(height, width, outer, *plan_tiles(width, bands, outer, budget_mb))
    batch = solve_batch(bands, budget_mb)
    scores = np.full((height, width), SCORE_NODATA, dtype=np.float32)
    for index, tile in enumerate(tiles):

        def tick(fraction, index=index):
            if progress is not None:
                progress((index + fraction) / len(tiles))

        rows, cols = tile.block.slices()
        out_rows, out_cols = tile.output.slices()
        scores[out_rows, out_cols] = _score_block(
            cube[:, rows, cols], valid[rows, cols], use[rows, cols], tile, inner, outer, batch, tick
        )[0]
    return scores


def run_local_rx(input_path, output_path, bands=None, mask_path=None, inner=5, outer=21, feedback=None,
                 block_mb=DEFAULT_BLOCK_MB):
    """Score every valid pixel of `input_path` with local RX and write a float32 raster.

    Mirrors run_global_rx: `bands` 1-based (None = all); `mask_path` non-zero pixels are kept out
    of every background ring but still scored; invalid pixels are nodata. One streaming pass:
    tiles (full-width strips, or squares when bands are many) are read with the halo their outer
    windows reach.
    """
    feedback = feedback or Feedback()
    started = time.perf_counter()
    inner, outer = validate_windows(inner, outer)
    reader = RasterReader(input_path, bands)
    mask = read_mask(mask_path, reader) if mask_path else None
    height, width, band_count = reader.height, reader.width, reader.band_count
    tile_rows, tile_cols = plan_tiles(width, band_count, outer, block_mb)
    tiles = _tiles(height, width, outer, tile_rows, tile_cols)
    batch = solve_batch(band_count, block_mb)
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
    progress = ProgressRange(feedback, 0, 100)
    valid_pixels = scored = undersampled = no_background = 0
    with RasterWriter.like(reader, output_path, band_names=["local RX score"]) as writer:
        for index, tile in enumerate(tiles):
            block = tile.block
            data, valid = reader.read(block)
            exclude = mask.read(block)[0][0] != 0 if mask else None
            _, _, use = _check_block(data, valid, exclude)

            def tick(fraction, index=index):
                progress((index + fraction) / len(tiles))

            scores, small, empty = _score_block(data, valid, use, tile, inner, outer, batch, tick)
            out = tile.output
            tile_valid = int(valid[out.row - block.row:out.row - block.row + out.rows,
                                   out.col - block.col:out.col - block.col + out.cols].sum())
            valid_pixels += tile_valid
            scored += tile_valid - empty
            undersampled += small
            no_background += empty
            writer.write(out, scores)
            progress((index + 1) / len(tiles))
        if valid_pixels == 0:
            raise InputError(
                "No valid pixels: every pixel is nodata, NaN or infinite in some band. "
                "Check the input's nodata value and the band selection."
            )
        writer.set_metadata({
            "fers_detector": "local RX", "fers_bands": ",".join(map(str, reader.bands)),
            "fers_inner_window": inner, "fers_outer_window": outer,
        })
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
    for bands, rows, cols in ((50, 100, 100), (30, 200, 200)):
        cube = rng.standard_normal((bands, rows, cols))
        valid = np.ones((rows, cols), bool)
        started = time.perf_counter()
        local_rx_scores(cube, valid, 5, 21)
        seconds = time.perf_counter() - started
        print(f"{rows} x {cols} x {bands}: {seconds:.2f} s, {rows * cols / seconds:,.0f} pixels/s")


if __name__ == "__main__":
    _benchmark()
