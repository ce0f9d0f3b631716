"""The band mapping and the frozen reference scaling (pipeline/scaling.py), and training's use of them."""

import dataclasses

import numpy as np
import pytest

from fers.fers_core.errors import InputError
from fers.fers_core.io.reader import RasterReader
from fers.fers_core.io.windows import Window
from fers.fers_core.pipeline.preprocess import scale_reference
from fers.fers_core.pipeline.scaling import (
    BandMapping,
    RangePartial,
    Scaling,
    fit_scaling,
    range_partial,
    range_pass,
    scale_window,
)

from ...rasters import write_cube

NODATA = -1.0


@pytest.fixture
def raster(tmp_path):
    """12 bands, 30 x 25 px, a few nodata pixels; raster and its float32 cube."""
    cube = np.random.default_rng(4).normal(100.0, 20.0, (12, 30, 25)).astype(np.float32)
    cube[:, 3, 4] = NODATA
    cube[5, 20, 7] = NODATA
    path = str(tmp_path / "cube.tif")
    write_cube(path, cube, nodata=NODATA)
    return path, cube


def strips(reader, rows=7):
    return [Window(row, 0, min(rows, reader.height - row), reader.width) for row in range(0, reader.height, rows)]


def test_band_mapping_needs_only_band_counts_and_wavelengths(raster):
    with RasterReader(raster[0]) as reader:
        model = type("Model", (), {"bands": 8, "wavelengths_nm": None})()
        from_reader = BandMapping.for_model(reader, model)
    plain = BandMapping(12, 8)
    assert (plain.matrix != from_reader.matrix).nnz == 0
    assert plain.description == "12 raster bands resampled linearly over the normalised band index to the model's 8 " \
                                "bands"
    by_wavelength = BandMapping(12, 8, np.linspace(400, 900, 12), np.linspace(450, 850, 8))
    assert "over wavelength" in by_wavelength.description
    assert BandMapping(12, 8, np.linspace(400, 900, 12), None).description == plain.description + \
        " (the model stores no band wavelengths, so the raster's are not used)"
    with pytest.raises(InputError, match="at least 3 bands"):
        BandMapping(2, 8)
    with pytest.raises(InputError, match="cover only"):
        BandMapping(12, 8, np.linspace(400, 500, 12), np.linspace(400, 2400, 8))


def test_fit_scaling_is_the_range_of_the_mapped_valid_pixels(raster):
    path, cube = raster
    mapping = BandMapping(12, 8)
    with RasterReader(path) as reader:
        partial = range_pass(reader, mapping, strips(reader), lambda fraction: None)
        scaling = fit_scaling(partial)
        valid = np.all(cube != NODATA, axis=0)
        mapped = mapping(cube[:, valid])
        assert partial.count == valid.sum() == 30 * 25 - 2
        assert (scaling.vmin, scaling.vmax) == (float(mapped.min()), float(mapped.max()))
        np.testing.assert_allclose(scaling.fill, scale_reference(mapped.mean(axis=1, dtype=np.float64), scaling.vmin,
                                                                 scaling.vmax), rtol=1e-6)
        # any window plan merges to the same range; the first window's partial is its own
        assert range_partial(reader, mapping, strips(reader)[0]).count == 7 * 25 - 1
        window = Window(0, 0, 10, 25)
        scaled, window_valid = scale_window(reader, mapping, scaling, window)
    assert scaled.dtype == np.float32 and scaled.shape == (8, 10, 25)
    assert not window_valid[3, 4] and window_valid.sum() == 10 * 25 - 1
    assert np.array_equal(scaled[:, 3, 4], scaling.fill)
    expected = scale_reference(mapping(cube[:, :10]), scaling.vmin, scaling.vmax)
    assert np.array_equal(scaled[:, window_valid], expected[:, window_valid])


def test_scaling_is_frozen_and_refuses_what_cannot_be_scaled():
    scaling = fit_scaling(RangePartial(0.0, 2.0, np.array([3.0, 4.0]), 4))
    assert scaling.fill.dtype == np.float32
    np.testing.assert_array_equal(scaling.fill, scale_reference(np.array([0.75, 1.0]), 0.0, 2.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        scaling.vmin = 1.0
    assert isinstance(scaling, Scaling)
    with pytest.raises(InputError, match="No valid pixels"):
        fit_scaling(RangePartial(None, None, None, 0))
    with pytest.raises(InputError, match="constant"):
        fit_scaling(RangePartial(5.0, 5.0, np.array([10.0]), 2))


def test_training_scales_a_raster_as_detection_does(raster):
    """load_background: the detection's mapping and scaling of every strip, unusable pixels filled."""
    from fers.fers_core.training.data import TrainingRaster, load_background

    path, _ = raster
    background = load_background(TrainingRaster(path), 8)
    mapping = BandMapping(12, 8)
    with RasterReader(path) as reader:
        whole = Window.whole(reader.height, reader.width)
        scaling = fit_scaling(range_pass(reader, mapping, strips(reader, 256), lambda fraction: None))
        expected, valid = scale_window(reader, mapping, scaling, whole)
    assert np.array_equal(background.usable, valid)
    assert np.array_equal(background.cube, expected)
    assert background.description.endswith("to the model's 8 bands, 2 px excluded (nodata or mask)")


@pytest.mark.parametrize("dtype, offset", [(np.float64, 1e8), (np.int32, 1e9)])
def test_a_large_common_offset_does_not_change_the_scaled_cube(tmp_path, dtype, offset):
    """Scaling subtracts the minimum: values read as float32 first lost the differences under a 1e8 offset (the
    bundled model's scores moved by up to 0.09; fers:rx was exact)."""
    cube = np.round(np.random.default_rng(5).normal(100.0, 20.0, (12, 30, 25)))
    results = []
    for name, shift in (("plain", 0.0), ("shifted", offset)):
        path = write_cube(tmp_path / f"{name}.tif", (cube + shift).astype(dtype))
        with RasterReader(path) as reader:
            mapping = BandMapping(reader.band_count, 8)
            windows = strips(reader)
            scaling = fit_scaling(range_pass(reader, mapping, windows, lambda fraction: None))
            results.append(np.concatenate([scale_window(reader, mapping, scaling, w)[0] for w in windows], axis=1))
    np.testing.assert_allclose(results[1], results[0], atol=1e-6)
