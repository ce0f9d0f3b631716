"""Detection windows: their shape from the memory budget, the exact context they read, the memory estimate."""

import pytest
import torch
from osgeo import gdal

from fers.fers_core.enhance.networks import SpatialStudent, SpectralEnhancer
from fers.fers_core.enhance.networks.inference import inference_copy
from fers.fers_core.enhance.tiling import feature_placement, spatial_features, spectral_features
from fers.fers_core.io.reader import RasterReader
from fers.fers_core.io.windows import Placement, Window, core_tiles, detection_window_shape, grid
from fers.fers_core.pipeline import memory_guard

TILE, MARGIN, CORE = 128, 16, 96


@pytest.mark.parametrize("width,budget", [(256, 41943), (512, 41943), (1024, 41943), (4096, 41943), (300, 3000),
                                          (1000, 10**9), (100, 10)])
def test_window_shape_keeps_whole_spatial_cores(width, budget):
    rows, cols = detection_window_shape(width, budget, True, TILE, MARGIN)
    assert rows % CORE == 0 and rows >= CORE
    if cols < width:  # split into columns: whole cores, about square, within the budget
        assert cols % CORE == 0 and rows * cols <= max(budget, CORE * CORE) and rows <= 2 * cols
    if width * CORE <= budget or width <= TILE:
        assert cols == width


def test_window_shape_without_the_spatial_branch():
    assert detection_window_shape(90, 2978, False, TILE, MARGIN) == (33, 90)
    rows, cols = detection_window_shape(4096, 41943, False, TILE, MARGIN)
    assert cols % 128 == 0 and rows >= 16 and rows * cols <= 41943


def test_window_grid_covers_the_image_once():
    cells = grid(300, 200, 96, 96)
    covered = [[0] * 300 for _ in range(200)]
    for cell in cells:
        for r in range(cell.row, cell.row + cell.rows):
            for c in range(cell.col, cell.col + cell.cols):
                covered[r][c] += 1
    assert all(value == 1 for line in covered for value in line) and len(cells) == 12


@pytest.mark.parametrize("start,length,image", [(0, 96, 1000), (96, 96, 1000), (96, 192, 1000), (864, 136, 1000),
                                                (960, 40, 1000), (0, 96, 100), (0, 40, 130)])
def test_feature_placement_is_the_tiles_and_halos_context(start, length, image):
    window = Window(start, 0, length, 10)  # the rows under test; a narrow image's columns are read whole
    buffer = feature_placement(window, image, 10, TILE, MARGIN).buffer
    first, last = buffer.row, buffer.row + buffer.rows
    tiles = core_tiles(window.row_span, image, TILE, MARGIN)
    assert first == max(0, min(min(t.tile.start for t in tiles), start - SpectralEnhancer.HALO))
    assert last == min(image, max(max(t.tile.stop for t in tiles), start + length + SpectralEnhancer.HALO))
    if image > TILE:  # at most a margin each side, or one whole tile
        assert last - first <= max(length + 2 * MARGIN, TILE)
    assert (buffer.col, buffer.cols) == (0, 10)
    spectral_only = feature_placement(window, image, 10, TILE, MARGIN, spatial=False).buffer.row_span
    assert (spectral_only.start, spectral_only.stop) == (max(0, start - 3), min(image, start + length + 3))


@pytest.mark.slow
@pytest.mark.parametrize("inference", [None, "float32", "mixed"],
                         ids=["training modules", "inference copies", "mixed-precision copies"])
def test_windows_give_the_features_of_the_whole_width(inference):
    """Features of (rows x cols) windows read with feature_placement's context equal one full-width pass (the spatial
    branch bit for bit: the same tiles; an inference copy's false colour is made once per window)."""
    torch.manual_seed(0)
    spectral, spatial = SpectralEnhancer(6).eval(), SpatialStudent(6).eval()
    if inference:
        mixed = inference == "mixed"
        spectral, spatial = inference_copy(spectral, mixed=mixed), inference_copy(spatial, mixed=mixed)
    height, width, tile, margin = 60, 150, 32, 4  # cores of 24 px
    image = torch.randn(6, height, width) * 0.1
    with torch.inference_mode():
        everything = Placement.whole(height, width)
        whole = {"spectral": spectral_features(spectral, image, everything, "cpu", core=40),
                 "spatial": spatial_features(spatial, image, everything, "cpu", tile, margin)}
        for window in grid(width, height, 24, 48):
            placement = feature_placement(window, height, width, tile, margin)
            buffer = image[(slice(None), *placement.buffer.slices())]
            got = {"spectral": spectral_features(spectral, buffer, placement, "cpu", 40),
                   "spatial": spatial_features(spatial, buffer, placement, "cpu", tile, margin)}
            expected = {name: features[(slice(None), *window.slices())] for name, features in whole.items()}
            assert torch.equal(got["spatial"], expected["spatial"]), window
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
