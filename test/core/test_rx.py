"""Engine-level RX: streaming statistics and the regularised inverse."""

import numpy as np
import pytest

from fers_core.errors import InputError
from fers_core.rx import CovarianceAccumulator, fit_rx, rx_scores


def test_blockwise_statistics_equal_whole_array_statistics():
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((1000, 7)) * 3 + 1e4  # a large offset, as in integer radiance
    whole = CovarianceAccumulator(7)
    whole.add(pixels)
    parts = [CovarianceAccumulator(7) for _ in range(3)]
    for part, block in zip(parts, np.array_split(pixels, 3)):
        part.add(block)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    np.testing.assert_allclose(merged.mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.covariance, np.cov(pixels, rowvar=False), rtol=1e-9)
    np.testing.assert_allclose(whole.covariance, np.cov(pixels, rowvar=False), rtol=1e-9)


def test_scores_match_textbook_formula():
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((500, 5)) @ rng.standard_normal((5, 5))
    centred = pixels - pixels.mean(axis=0)
    expected = np.einsum("ij,jk,ik->i", centred, np.linalg.inv(np.cov(pixels, rowvar=False)), centred)
    np.testing.assert_allclose(rx_scores(pixels), expected, rtol=1e-4)


def test_rank_deficient_covariance_is_reported():
    pixels = np.random.default_rng(2).standard_normal((50, 3))
    pixels = np.hstack([pixels, pixels[:, :1] * 2, np.ones((50, 1))])
    accumulator = CovarianceAccumulator(5)
    accumulator.add(pixels)
    model = fit_rx(accumulator)
    assert model.rank == 3 and model.regularised


def test_identical_pixels_have_no_variance():
    accumulator = CovarianceAccumulator(3)
    accumulator.add(np.ones((10, 3)))
    with pytest.raises(InputError, match="no variance"):
        fit_rx(accumulator)
