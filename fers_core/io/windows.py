"""Windows of a raster, and every plan that cuts a raster into them.

Every pass reads and writes a raster window by window, so that its memory follows the budget, not the
raster. The outputs depend on how a raster is cut (the spatial branch sees its tiles, the statistics
are merged block by block), so every cut is planned here, in one place, from named spans and windows:

- ``block_windows``: the streaming windows of a pass, full-width strips or tiles aligned to GDAL blocks.
- ``spans``, ``grid``, ``strips``: windows of one shape covering the raster once, row by row
  (``even_step``: the smallest side that gives as many windows, so none is thin).
- ``detection_window_shape``: the shape of detection windows (whole spatial tile cores).
- ``core_tiles``, ``context_span``: the spatial branch's tiles along one axis, the core each keeps, and
  the context an output span needs (``Placement`` carries an output window in the buffer read for it).
- ``halo_tile_shape``, ``halo_tiles``: output tiles of the local detectors with the halo their
  neighbourhood windows reach.
"""

from dataclasses import dataclass

from ..errors import InputError
from .tile_settings import SPECTRAL_CORE

DEFAULT_BLOCK_MB = 64
"""Default memory budget (MB) of one window of a streaming pass (MEMORY_MB)."""
MIN_STRIP_ROWS = 16
"""Fewest rows of a spectral-branch detection window."""


@dataclass(frozen=True)
class Span:
    """Positions [start, start + length) along one axis."""

    start: int
    length: int

    @property
    def stop(self) -> int:
        return self.start + self.length

    def as_slice(self, origin: int = 0) -> slice:
        """The span as a slice of an array whose first element is at `origin`."""
        return slice(self.start - origin, self.stop - origin)

    def split(self, step: int) -> list:
        """Consecutive spans of `step` positions (the last one shorter) covering this span once."""
        return [Span(start, min(step, self.stop - start)) for start in range(self.start, self.stop, step)]


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: row/column offset and size."""

    row: int
    col: int
    rows: int
    cols: int

    @classmethod
    def whole(cls, height: int, width: int) -> "Window":
        """The window of a whole raster of `height` rows and `width` columns."""
        return cls(0, 0, height, width)

    @classmethod
    def of(cls, rows: Span, cols: Span) -> "Window":
        """The window of a span of rows and a span of columns."""
        return cls(rows.start, cols.start, rows.length, cols.length)

    @property
    def row_span(self) -> Span:
        return Span(self.row, self.rows)

    @property
    def col_span(self) -> Span:
        return Span(self.col, self.cols)

    @property
    def pixels(self) -> int:
        return self.rows * self.cols

    def slices(self) -> tuple:
        return self.row_span.as_slice(), self.col_span.as_slice()

    def within(self, outer: "Window") -> tuple:
        """This window's (rows, cols) slices in an array holding `outer` (which contains it)."""
        return self.row_span.as_slice(outer.row), self.col_span.as_slice(outer.col)


def spans(length: int, step: int) -> list:
    """Consecutive spans of `step` positions (the last one shorter) covering [0, length) once."""
    return Span(0, length).split(step)


def grid(width: int, height: int, rows: int, cols: int) -> list:
    """Windows of (rows, cols) covering a width x height raster once, row by row (the last ones clipped)."""
    return [Window.of(row, col) for row in spans(height, rows) for col in spans(width, cols)]


def strips(width: int, height: int, rows: int) -> list:
    """Full-width strips of `rows` rows (the last one shorter) covering a width x height raster, top down."""
    return grid(width, height, rows, width)


def even_step(length: int, step: int) -> int:
    """The smallest step that cuts [0, length) into as many spans as `step` does: no thin last span."""
    return -(-length // -(-length // step))


def block_windows(width: int, height: int, block_size: tuple, pixel_bytes: int, budget_bytes: int) -> list:
    """Windows covering the raster, each holding at most budget_bytes, aligned to GDAL blocks.

    `block_size`: the file's (cols, rows) block; `pixel_bytes`: the bytes one pixel of the window holds.
    Full-width strips of whole block rows when a whole row of blocks fits the budget; otherwise
    block-aligned tiles, so no block is read more than once per pass (misaligned thin strips of a tiled,
    band-interleaved file would re-read each block many times).
    """
    block_cols, block_rows = min(block_size[0], width), min(block_size[1], height)
    budget_bytes = int(budget_bytes)  # a fractional budget (MEMORY_MB is a real number) gives whole windows
    if width * block_rows * pixel_bytes <= budget_bytes or block_cols >= width:
        rows = max(1, budget_bytes // (width * pixel_bytes))
        if rows >= block_rows:
            rows -= rows % block_rows
        return strips(width, height, int(rows))
    blocks_across = max(1, budget_bytes // (block_cols * block_rows * pixel_bytes))
    cols = min(width, block_cols * blocks_across)
    # a single block larger than the budget is split into row bands; GDAL's cache serves the re-reads
    rows = min(block_rows, max(1, budget_bytes // (cols * pixel_bytes)))
    return [Window.of(row, col) for band in spans(height, block_rows) for col in spans(width, cols)
            for row in band.split(rows)]


def detection_window_shape(width: int, budget_pixels: int, spatial: bool, tile: int, margin: int) -> tuple:
    """(rows, cols) of the windows detection runs on, for a budget of output pixels per window.

    Full-width strips when a strip of the minimum height fits the budget; otherwise windows of
    about square shape (the context each window reads around itself then costs least). With the
    spatial branch both sides are whole numbers of tile cores (tile - 2 x margin, at least one
    core), so the windows' spatial tiles are exactly those of a whole-image run; an image no wider
    than a tile is one tile across and is never split into columns. The spectral branch is
    tiling-invariant: its windows are at least MIN_STRIP_ROWS rows and whole SPECTRAL_CORE columns.
    """
    budget_pixels = max(1, int(budget_pixels))
    if spatial:
        unit = max(1, tile - 2 * margin)
        row_unit, min_rows = unit, unit
        splittable = width > tile and width > unit
    else:
        unit, row_unit, min_rows = SPECTRAL_CORE, 1, MIN_STRIP_ROWS
        splittable = width > unit

    def rows_for(cols):
        return max(min_rows, (budget_pixels // cols) // row_unit * row_unit)

    if width * min_rows <= budget_pixels or not splittable:
        return rows_for(width), width
    units_across = -(-width // unit)
    per_window = max(1, int(budget_pixels ** 0.5) // unit)
    chunks = -(-units_across // per_window)
    per_window = -(-units_across // chunks)  # the same number of chunks, balanced
    cols = min(width, per_window * unit)
    return rows_for(cols), cols


@dataclass(frozen=True)
class CoreTile:
    """One spatial-branch tile along one axis: the core of output positions it gives and the tile it runs on."""

    core: Span
    tile: Span


def core_tiles(output: Span, image_length: int, tile: int, margin: int) -> list:
    """The CoreTiles that give the output span: cores of tile - 2 x margin positions, each run on the tile
    around it, tiles at the image's edges shifted inwards so that every tile is full-size. An image no
    longer than a tile is one tile, run whole."""
    if image_length <= tile:
        return [CoreTile(output, Span(0, image_length))]
    return [CoreTile(core, Span(min(max(core.start - margin, 0), image_length - tile), tile))
            for core in output.split(tile - 2 * margin)]


def context_span(output: Span, image_length: int, halo: int, tile: int = None, margin: int = 0) -> Span:
    """The span of the image the output span's features need: `halo` positions on each side (clipped to the
    image) and, with a spatial `tile` size, every spatial tile of its cores."""
    first, last = max(output.start - halo, 0), min(output.stop + halo, image_length)
    if tile is not None:
        for core_tile in core_tiles(output, image_length, tile, margin):
            first, last = min(first, core_tile.tile.start), max(last, core_tile.tile.stop)
    return Span(first, last - first)


@dataclass(frozen=True)
class Placement:
    """An output window, the buffer window of the image held in memory for it (which contains it), and the
    image's size (height, width): where tiled inference finds its pixels and the image's edges."""

    output: Window
    buffer: Window
    height: int
    width: int

    @classmethod
    def whole(cls, height: int, width: int) -> "Placement":
        """The whole image, held whole."""
        window = Window.whole(height, width)
        return cls(window, window, height, width)


def halo_tile_shape(width: int, outer: int, budget_bytes: float, in_bytes: int, out_bytes: int) -> tuple:
    """(rows, cols) of output per halo tile: full-width strips or squares, whichever re-reads fewer halo pixels.

    Each tile is read with up to outer - 1 extra rows and columns around it (the halo); the tile
    (`out_bytes` an output pixel) and its block (`in_bytes` an input pixel) fit the budget, at least
    one pixel.
    """
    halo = outer - 1

    def cost(rows, cols):
        return rows * cols * out_bytes + (rows + halo) * min(cols + halo, width) * in_bytes

    def overhead(rows, cols):
        return (rows + halo) * min(cols + halo, width) / (rows * cols)

    strip = max(1, int((budget_bytes - halo * width * in_bytes) // (width * (out_bytes + in_bytes))))
    side = 1
    while side < width and cost(side + 1, side + 1) <= budget_bytes:
        side += 1
    if side >= width or overhead(strip, width) <= overhead(side, side):
        return strip, width
    return side, side


def _reach(output: Span, size: int, outer: int) -> Span:
    """The positions that windows of `outer` around the output span's positions cover, each window shifted
    (not clipped) to lie inside [0, size) so that it keeps its size; the whole axis when it is shorter."""
    half = outer // 2
    window = 2 * half + 1
    if size <= window:
        return Span(0, size)
    start = min(max(output.start - half, 0), size - window)
    stop = min(max(output.stop - 1 - half, 0), size - window) + window
    return Span(start, stop - start)


@dataclass(frozen=True)
class HaloTile:
    """An output window of an image of height x width, read as the block its `outer` px windows reach."""

    output: Window
    height: int
    width: int
    outer: int

    @property
    def block(self) -> Window:
        """The window to read: every pixel the tile's outer windows reach."""
        return Window.of(_reach(self.output.row_span, self.height, self.outer),
                         _reach(self.output.col_span, self.width, self.outer))


def halo_tiles(height: int, width: int, outer: int, rows: int, cols: int) -> list:
    """HaloTiles of (rows, cols) output pixels covering the image once, row by row."""
    return [HaloTile(window, height, width, outer) for window in grid(width, height, rows, cols)]


def check_window_fits(outer, height, width):
    """InputError when the outer window is larger than the raster: near the edges it is shifted inside the image so
    the ring keeps its size, which a window larger than the image cannot do."""
    side = min(height, width)
    if outer > side:
        largest = side if side % 2 else side - 1
        advice = (f"use an odd WINDOW_OUTER of at most {largest} (with a smaller inner window)" if largest >= 3 else
                  "use global RX, which needs no window")
        raise InputError(f"The outer window ({outer} px) is larger than the {width}x{height} px raster, so its ring "
                         f"cannot keep its size: {advice}.")
