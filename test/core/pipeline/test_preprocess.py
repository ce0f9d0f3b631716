"""Band resampling, streaming min/max and the reference scaling."""

import numpy as np
import pytest

from fers.fers_core.errors import InputError
from fers.fers_core.pipeline.preprocess import (
    RangeAccumulator,
    apply_band_matrix,
    band_resampling_matrix,
    resample_bands,
    scale_reference,
    update_minmax,
    wavelength_coverage,
)


def test_same_band_count_is_the_identity():
    cube = np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32)
    matrix = band_resampling_matrix(7, 7)
    np.testing.assert_array_equal(matrix.toarray(), np.eye(7))
    np.testing.assert_array_equal(resample_bands(cube, 7), cube)


def test_linear_values_over_normalised_band_index():
    cube = np.array([0.0, 10.0, 40.0])[:, None]
    np.testing.assert_allclose(resample_bands(cube, 5)[:, 0], [0, 5, 10, 25, 40])
    np.testing.assert_allclose(resample_bands(np.arange(5.0)[:, None], 3)[:, 0], [0, 2, 4])
    np.testing.assert_allclose(resample_bands(cube, 1)[:, 0], [0])
    np.testing.assert_allclose(resample_bands(np.array([[3.0]]), 4)[:, 0], [3, 3, 3, 3])


def test_matches_numpy_interp_and_keeps_pixel_axes():
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(175, 4, 6))
    out = resample_bands(cube, 200)
    assert out.shape == (200, 4, 6) and out.dtype == np.float32
    expected = np.interp(np.linspace(0, 1, 200), np.linspace(0, 1, 175), cube[:, 2, 3])
    np.testing.assert_allclose(out[:, 2, 3], expected, rtol=1e-6, atol=1e-6)


def test_matrix_rows_are_convex_weights_of_neighbours():
    matrix = band_resampling_matrix(191, 200)
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0)
    assert np.diff(matrix.indptr).max() <= 2


def test_wavelength_mode_interpolates_and_clamps_to_edge_bands():
    cube = np.array([1.0, 2.0, 4.0])[:, None]
    src = [400.0, 500.0, 600.0]
    dst = [350.0, 450.0, 600.0, 700.0]
    np.testing.assert_allclose(resample_bands(cube, 4, src, dst)[:, 0], [1.0, 1.5, 4.0, 4.0])
    unsorted = resample_bands(cube[[2, 0, 1]], 4, [600.0, 400.0, 500.0], dst)
    np.testing.assert_allclose(unsorted[:, 0], [1.0, 1.5, 4.0, 4.0])


def test_wavelength_mode_refuses_duplicates_and_wrong_lengths():
    with pytest.raises(InputError, match="same wavelength"):
        band_resampling_matrix(3, 2, [400, 400, 500], [400, 500])
    with pytest.raises(InputError, match="do not match the band counts"):
        band_resampling_matrix(3, 2, [400, 500], [400, 500])


def test_wavelength_coverage():
    assert wavelength_coverage([400, 500, 600], [350, 700]) == pytest.approx(200 / 350)
    assert wavelength_coverage([400, 2500], [450, 900]) == 1.0
    assert wavelength_coverage([400, 500], [900, 1000]) == 0.0
    assert wavelength_coverage([400, 500], [450]) == 1.0


def test_apply_band_matrix_checks_band_count():
    with pytest.raises(InputError, match="has 4 bands"):
        apply_band_matrix(band_resampling_matrix(3, 2), np.zeros((4, 2)))


def test_range_accumulator_streams_merges_and_ignores_nan():
    first = RangeAccumulator().add(np.array([3.0, np.nan, -1.0])).add(np.array([], dtype=np.float32))
    second = RangeAccumulator().add(np.array([[7, 2]], dtype=np.int16))
    assert (first.min, first.max) == (-1.0, 3.0)
    first.merge(second).merge(RangeAccumulator())
    assert (first.min, first.max) == (-1.0, 7.0)
    assert RangeAccumulator().min is None
    assert update_minmax(update_minmax(None, np.array([5.0, 6.0])), np.array([2.0])) == (2.0, 6.0)
    assert update_minmax(None, np.array([np.nan])) is None


def test_scale_reference_maps_range_to_plus_minus_point_one():
    x = np.array([2.0, 4.0, 6.0])
    scaled = scale_reference(x, 2.0, 6.0)
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, [-0.1, 0.0, 0.1], atol=1e-8)
    np.testing.assert_allclose(scale_reference(x.astype(np.int16), 2, 6), [-0.1, 0.0, 0.1], atol=1e-8)


def test_scale_reference_refuses_constant_or_empty_data():
    with pytest.raises(InputError, match="constant"):
        scale_reference(np.ones(4), 1.0, 1.0)
    with pytest.raises(InputError, match="no valid pixels"):
        scale_reference(np.ones(4), None, None)
