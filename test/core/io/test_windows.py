"""The window planners of io/windows: every plan covers the raster exactly once, halos stay inside the image,
and the plans are the ones the engine made before they moved there (the expected lists were recorded from the
earlier planners: RasterReader.windows, local_rx.plan_tiles and _tiles, tiling._spatial_windows and buffer_span)."""

from dataclasses import astuple

import numpy as np
import pytest
from osgeo import gdal

from fers.fers_core.io.reader import RasterReader
from fers.fers_core.io.windows import (
    Placement,
    Span,
    Window,
    block_windows,
    context_span,
    core_tiles,
    even_step,
    grid,
    halo_tile_shape,
    halo_tiles,
    spans,
    strips,
)


def as_tuples(windows):
    return [(w.row, w.col, w.rows, w.cols) for w in windows]


def coverage(windows, height, width):
    """How often each pixel of the raster is in one of the windows."""
    counts = np.zeros((height, width), int)
    for window in windows:
        counts[window.slices()] += 1
    return counts


@pytest.mark.parametrize("length,step", [(1, 1), (10, 3), (10, 10), (10, 11), (97, 8), (256, 256)])
def test_spans_cover_the_axis_once_in_order(length, step):
    parts = spans(length, step)
    assert [p for span in parts for p in range(span.start, span.stop)] == list(range(length))
    assert all(span.length == step for span in parts[:-1]) and 0 < parts[-1].length <= step


def test_span_and_window_names():
    span = Span(4, 6)
    assert (span.stop, span.as_slice(), span.as_slice(origin=3)) == (10, slice(4, 10), slice(1, 7))
    assert Span(2, 7).split(3) == [Span(2, 3), Span(5, 3), Span(8, 1)]
    window = Window.of(Span(3, 4), Span(10, 5))
    assert window == Window(3, 10, 4, 5) and (window.row_span, window.col_span) == (Span(3, 4), Span(10, 5))
    assert window.pixels == 20 and window.slices() == (slice(3, 7), slice(10, 15))
    assert window.within(Window(1, 8, 10, 10)) == (slice(2, 6), slice(2, 7))
    whole = Placement.whole(30, 40)
    assert whole.output == whole.buffer == Window(0, 0, 30, 40) and (whole.height, whole.width) == (30, 40)


@pytest.mark.parametrize("width,height,rows,cols", [(300, 200, 96, 96), (7, 5, 1, 1), (50, 30, 30, 50), (9, 4, 4, 2)])
def test_grid_covers_the_raster_once_row_by_row(width, height, rows, cols):
    windows = grid(width, height, rows, cols)
    assert (coverage(windows, height, width) == 1).all()
    corners = [(w.row, w.col) for w in windows]
    assert corners == sorted(corners)  # row by row, left to right
    assert as_tuples(strips(width, height, rows)) == as_tuples(grid(width, height, rows, width))


@pytest.mark.parametrize("length,step,even", [(100, 30, 25), (100, 50, 50), (7, 7, 7), (10, 3, 3), (257, 256, 129)])
def test_even_step_is_the_smallest_step_giving_as_many_spans(length, step, even):
    assert even_step(length, step) == even
    count = len(spans(length, step))
    assert len(spans(length, even)) == count and len(spans(length, even - 1)) > count


# (width, height, (block cols, block rows), bytes per pixel, budget bytes) -> the windows RasterReader.windows made
BLOCK_CASES = [
    ((50, 30, (50, 1), 32, 7000), [(row, 0, 4, 50) for row in range(0, 28, 4)] + [(28, 0, 2, 50)]),
    ((50, 30, (50, 8), 32, 128000), [(0, 0, 30, 50)]),
    ((100, 40, (32, 16), 32, 32768), [(0, 0, 16, 64), (0, 64, 16, 36), (16, 0, 16, 64), (16, 64, 16, 36),
                                      (32, 0, 8, 64), (32, 64, 8, 36)]),
    ((100, 40, (32, 32), 32, 10240), [(row, col, rows, 32 if col < 96 else 4) for col in (0, 32, 64, 96)
                                      for row, rows in ((0, 10), (10, 10), (20, 10), (30, 2))]
     + [(32, col, 8, 32 if col < 96 else 4) for col in (0, 32, 64, 96)]),
]


@pytest.mark.parametrize("args,expected", BLOCK_CASES)
def test_block_windows_are_the_readers_windows_of_before(args, expected):
    width, height = args[:2]
    windows = block_windows(*args)
    assert as_tuples(windows) == expected
    assert (coverage(windows, height, width) == 1).all()


def test_reader_windows_of_a_tiled_file_are_aligned_to_its_blocks(tmp_path):
    path = str(tmp_path / "tiled.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(path, 2048, 300, 1, gdal.GDT_Float32,
                                                   options=["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256"])
    dataset.GetRasterBand(1).Fill(1.0)
    dataset = None
    with RasterReader(path) as reader:
        windows = reader.windows(1)  # a row of blocks (2048 x 256 x 8 bytes) is over 1 MB: two blocks per tile
    assert as_tuples(windows) == [(0, col, 256, 512) for col in range(0, 2048, 512)] + \
        [(256, col, 44, 512) for col in range(0, 2048, 512)]
    assert as_tuples(windows) == as_tuples(block_windows(2048, 300, (256, 256), 8, 2**20))


@pytest.mark.parametrize("args,expected", [
    ((30, 9, 100 * 2**20, 128, 16), (24265, 30)),  # local RX, 5 bands: a strip
    ((20, 9, 0.022 * 2**20, 128, 16), (5, 5)),  # a small budget: squares re-read fewer halo pixels
    ((1000, 21, 64 * 2**20, 4808, 16), (98, 98)),  # local RX, 200 bands
    ((300, 21, 2**20, 2000, 100), (1, 300)),  # the budget holds no square: one-row strips
])
def test_halo_tile_shape_is_local_rxs_plan_of_before(args, expected):
    assert halo_tile_shape(*args) == expected


def reached(start, length, size, outer):
    """[first, last) of the union of the outer windows of positions start..start + length - 1, each window
    shifted to lie inside [0, size) (the whole axis when it is shorter), position by position."""
    if size <= outer:
        return 0, size
    starts = [min(max(p - outer // 2, 0), size - outer) for p in range(start, start + length)]
    return min(starts), max(starts) + outer


def test_halo_tiles_of_before_and_their_halos_are_clipped_at_the_edges():
    tiles = halo_tiles(12, 10, 5, 5, 4)
    assert [(astuple(t.output), astuple(t.block)) for t in tiles] == [
        ((0, 0, 5, 4), (0, 0, 7, 6)), ((0, 4, 5, 4), (0, 2, 7, 8)), ((0, 8, 5, 2), (0, 5, 7, 5)),
        ((5, 0, 5, 4), (3, 0, 9, 6)), ((5, 4, 5, 4), (3, 2, 9, 8)), ((5, 8, 5, 2), (3, 5, 9, 5)),
        ((10, 0, 2, 4), (7, 0, 5, 6)), ((10, 4, 2, 4), (7, 2, 5, 8)), ((10, 8, 2, 2), (7, 5, 5, 5))]
    assert (coverage([t.output for t in tiles], 12, 10) == 1).all()
    for height, width, outer in ((12, 10, 5), (40, 33, 21), (8, 8, 21), (30, 50, 1)):
        for tile in halo_tiles(height, width, outer, 7, 9):
            block, out = tile.block, tile.output
            assert 0 <= block.row and block.row + block.rows <= height  # clipped to the image
            assert 0 <= block.col and block.col + block.cols <= width
            assert block.row <= out.row and out.row + out.rows <= block.row + block.rows  # holds the output
            assert block.col <= out.col and out.col + out.cols <= block.col + block.cols
            assert (block.row, block.row + block.rows) == reached(out.row, out.rows, height, outer)
            assert (block.col, block.col + block.cols) == reached(out.col, out.cols, width, outer)
            assert block.rows <= out.rows + outer - 1 and block.cols <= out.cols + outer - 1


@pytest.mark.parametrize("output,image,tile,margin,expected", [
    (Span(0, 300), 300, 128, 16, [(0, 96, 0, 128), (96, 96, 80, 128), (192, 96, 172, 128), (288, 12, 172, 128)]),
    (Span(40, 100), 300, 64, 8, [(40, 48, 32, 64), (88, 48, 80, 64), (136, 4, 128, 64)]),
    (Span(5, 20), 100, 128, 16, [(5, 20, 0, 100)]),  # an image smaller than a tile is run whole
])
def test_core_tiles_of_before(output, image, tile, margin, expected):
    tiles = core_tiles(output, image, tile, margin)
    assert [(t.core.start, t.core.length, t.tile.start, t.tile.length) for t in tiles] == expected
    assert [p for t in tiles for p in range(t.core.start, t.core.stop)] == list(range(output.start, output.stop))
    for t in tiles:  # each core inside its tile, each tile inside the image
        assert t.tile.start <= t.core.start and t.core.stop <= t.tile.stop and 0 <= t.tile.start
        assert t.tile.stop <= image


def test_context_span_of_before():
    assert context_span(Span(40, 100), 300, 3, 64, 8) == Span(32, 160)  # the spatial tiles reach further
    assert context_span(Span(40, 100), 300, 3) == Span(37, 106)  # the spectral halo only
    assert context_span(Span(0, 10), 12, 3) == Span(0, 12)  # clipped at both edges
