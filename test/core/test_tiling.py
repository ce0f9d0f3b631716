"""Detection windows: their shape from the memory budget, the exact context they read, the memory estimate."""

import pytest
import torch
from osgeo import gdal

from fers.fers_core.enhance.networks import SpatialStudent, SpectralEnhancer
from fers.fers_core.enhance.networks.inference import inference_copy
from fers.fers_core.enhance.tiling import _spatial_windows, buffer_span, spatial_features, spectral_features
from fers.fers_core.io.reader import RasterReader
from fers.fers_core.io.tile_settings import window_grid, window_shape
from fers.fers_core.pipeline import memory_guard

TILE, MARGIN, CORE = 128, 16, 96


@pytest.mark.parametrize("width,budget", [(256, 41943), (512, 41943), (1024, 41943), (4096, 41943), (300, 3000),
                                          (1000, 10**9), (100, 10)])
def test_window_shape_keeps_whole_spatial_cores(width, budget):
    rows, cols = window_shape(width, budget, True, TILE, MARGIN)
    assert rows % CORE == 0 and rows >= CORE
    if cols < width:  # split into columns: whole cores, about square, within the budget
        assert cols % CORE == 0 and rows * cols <= max(budget, CORE * CORE) and rows <= 2 * cols
    if width * CORE <= budget or width <= TILE:
        assert cols == width


def test_window_shape_without_the_spatial_branch():
    assert window_shape(90, 2978, False, TILE, MARGIN) == (33, 90)
    rows, cols = window_shape(4096, 41943, False, TILE, MARGIN)
    assert cols % 128 == 0 and rows >= 16 and rows * cols <= 41943


def test_window_grid_covers_the_image_once():
    cells = window_grid(300, 200, 96, 96)
    covered = [[0] * 300 for _ in range(200)]
    for row, col, rows, cols in cells:
        for r in range(row, row + rows):
            for c in range(col, col + cols):
                covered[r][c] += 1
    assert all(value == 1 for line in covered for value in line) and len(cells) == 12


@pytest.mark.parametrize("start,length,image", [(0, 96, 1000), (96, 96, 1000), (96, 192, 1000), (864, 136, 1000),
                                                (960, 40, 1000), (0, 96, 100), (0, 40, 130)])
def test_buffer_span_is_the_tiles_and_halos_context(start, length, image):
    first, last = buffer_span(start, length, image, TILE, MARGIN)
    tiles = _spatial_windows(start, length, image, TILE, MARGIN)
    assert first == max(0, min(min(t[2] for t in tiles), start - SpectralEnhancer.HALO))
    assert last == min(image, max(max(t[2] + t[3] for t in tiles), start + length + SpectralEnhancer.HALO))
    if image > TILE:  # at most a margin each side, or one whole tile
        assert last - first <= max(length + 2 * MARGIN, TILE)
    assert buffer_span(start, length, image, with_spatial=False) == (max(0, start - 3), min(image, start + length + 3))


@pytest.mark.slow
@pytest.mark.parametrize("inference", [None, "float32", "mixed"],
                         ids=["training modules", "inference copies", "mixed-precision copies"])
def test_windows_give_the_features_of_the_whole_width(inference):
    """Features of (rows x cols) windows read with buffer_span's context equal one full-width pass (the spatial
    branch bit for bit: the same tiles; an inference copy's false colour is made once per window)."""
    torch.manual_seed(0)
    spectral, spatial = SpectralEnhancer(6).eval(), SpatialStudent(6).eval()
    if inference:
        mixed = inference == "mixed"
        spectral, spatial = inference_copy(spectral, mixed=mixed), inference_copy(spatial, mixed=mixed)
    height, width, tile, margin = 60, 150, 32, 4  # cores of 24 px
    image = torch.randn(6, height, width) * 0.1
    with torch.inference_mode():
        whole = {"spectral": spectral_features(spectral, image, 0, 0, height, height, "cpu", core=40),
                 "spatial": spatial_features(spatial, image, 0, 0, height, height, "cpu", tile, margin)}
        for row, col, rows, cols in window_grid(width, height, 24, 48):
            top, bottom = buffer_span(row, rows, height, tile, margin)
            left, right = buffer_span(col, cols, width, tile, margin)
            buffer = image[:, top:bottom, left:right]
            place = dict(buffer_col=left, out_col=col, out_cols=cols, image_width=width)
            got = {"spectral": spectral_features(spectral, buffer, top, row, rows, height, "cpu", 40, **place),
                   "spatial": spatial_features(spatial, buffer, top, row, rows, height, "cpu", tile, margin, **place)}
            expected = {name: features[:, row:row + rows, col:col + cols] for name, features in whole.items()}
            assert torch.equal(got["spatial"], expected["spatial"]), (row, col)
            # the same sums, but convolutions of other tile widths may round differently in the last bit
            torch.testing.assert_close(got["spectral"], expected["spectral"], rtol=1e-5, atol=1e-6)


def test_detection_estimate_is_flat_in_the_raster_width(tmp_path):
    """Windows bound the estimate: 4096^2 x 200 bands needs about what 1024^2 does (GDAL's cache aside)."""
    def estimate(size):
        path = str(tmp_path / f"{size}.tif")
        gdal.GetDriverByName("GTiff").Create(path, size, size, 200, gdal.GDT_Int16, ["SPARSE_OK=TRUE", "TILED=YES"])
        with RasterReader(path) as reader:
            return sum(memory_guard.estimate_detection(reader, 50, 64, rx_maps=2).parts.values())

    small, large = estimate(1024), estimate(4096)
    assert large <= 1.2 * small and large < 1024 * memory_guard.MB, (small, large)
