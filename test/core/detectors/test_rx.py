"""Engine-level RX: streaming statistics and the regularised inverse."""

import numpy as np
import pytest

from fers.fers_core.detectors.rx import CHUNK_PIXELS, CovarianceAccumulator, fit_rx, rx_scores
from fers.fers_core.errors import InputError


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


def radiance_cube(n_pixels, bands=40, seed=3):
    """int16 'radiance' (bands, pixels): a few endmembers ~3000 mixed, plus noise of 20, so the covariance
    spans a large range (condition number ~1e4, like real scenes' 1e6 to 1e9 in miniature)."""
    rng = np.random.default_rng(seed)
    endmembers = rng.uniform(2500, 3500, (4, bands))
    mixed = rng.dirichlet(np.ones(4), n_pixels) @ endmembers + rng.normal(0, 20, (n_pixels, bands))
    return np.round(mixed).astype(np.int16).T.copy()


def normalised_error(covariance, reference):
    """Largest error relative to the entry's scale, sqrt(c_ii c_jj)."""
    scale = np.sqrt(np.diag(reference))
    return (np.abs(covariance - reference) / np.outer(scale, scale)).max()


def test_band_first_blocks_match_the_float64_reference():
    """add_bands (stored type, chunked, no transpose) gives the float64 statistics to ~1e-13: float32 products
    (~1e-6 here) would fail, as would dropping the shift (the offset of 3000 cancels catastrophically)."""
    data = radiance_cube(3 * CHUNK_PIXELS + 123)
    reference = CovarianceAccumulator(data.shape[0])
    reference.add(data.T.astype(np.float64))
    fast = CovarianceAccumulator(data.shape[0])
    fast.add_bands(data)
    assert fast.count == reference.count
    np.testing.assert_allclose(fast.mean, reference.mean, rtol=1e-13)
    assert normalised_error(fast.covariance, reference.covariance) < 1e-11
    float32 = data.astype(np.float32) - data[:, :1024].mean(axis=1, keepdims=True).astype(np.float32)
    float32_cross = sum((c @ c.T).astype(np.float64) for c in np.array_split(float32, 4, axis=1))
    assert normalised_error(float32_cross, reference.cross) > 1e-9  # the shortcut this test is there to catch


def test_band_first_blocks_skip_unused_pixels_and_merge():
    data = radiance_cube(2 * CHUNK_PIXELS + 77).astype(np.float32)
    use = np.random.default_rng(4).random(data.shape[1]) > 0.3
    use[:CHUNK_PIXELS] = False  # a whole chunk unused
    data[:, ~use] = np.nan
    data[3, ~use & (np.arange(data.shape[1]) % 2 == 0)] = np.inf
    reference = CovarianceAccumulator(data.shape[0])
    reference.add(data[:, use].T.astype(np.float64))
    merged = CovarianceAccumulator(data.shape[0])
    halves = np.array_split(np.arange(data.shape[1]), 2)
    for half in halves:  # the second call merges into the first
        merged.add_bands(data[:, half], use[half])
    assert merged.count == use.sum()
    assert normalised_error(merged.covariance, reference.covariance) < 1e-11
    empty = CovarianceAccumulator(data.shape[0])
    empty.add_bands(data, np.zeros(data.shape[1], bool))
    assert empty.count == 0


@pytest.mark.parametrize("kind", ["full rank", "rank deficient", "extreme units"])
def test_band_first_scores_match_the_careful_path(kind):
    data = radiance_cube(CHUNK_PIXELS + 500, bands=12).astype(np.float64)
    if kind == "rank deficient":
        data[5] = data[2] * 2 - 7
    if kind == "extreme units":
        data *= 1e-40  # the float32 factor would underflow: scored by the careful path
    accumulator = CovarianceAccumulator(data.shape[0])
    accumulator.add_bands(data)
    model = fit_rx(accumulator)
    assert (model.factor is None) == (kind == "extreme units")
    assert model.regularised == (kind == "rank deficient")
    valid = np.random.default_rng(5).random(data.shape[1]) > 0.1
    data[:, ~valid] = np.nan
    scores = model.score_bands(data, valid)
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    np.testing.assert_allclose(scores[valid], model.score(data[:, valid].T), rtol=2e-4, atol=1e-3)


def test_band_first_scores_of_astronomical_outliers_stay_finite():
    data = radiance_cube(1000, bands=6).astype(np.float32)
    accumulator = CovarianceAccumulator(6)
    accumulator.add_bands(data)
    model = fit_rx(accumulator)
    data[:, 10] = 3e38  # its float32 square overflows: the chunk is scored again, clipped
    scores = model.score_bands(data)
    assert np.isfinite(scores).all() and scores[10] > 1e25
    np.testing.assert_allclose(scores[:20], model.score(data[:, :20].T), rtol=2e-4)


def test_scoring_pass_caps_gdal_cache_to_a_few_output_tile_rows(tmp_path):
    """The written score tiles are all GDAL caches while scoring: the cap keeps them from piling up."""
    from osgeo import gdal

    from fers.fers_core.detectors.global_rx import run_global_rx
    from fers.fers_core.feedback import Feedback
    from fers.fers_core.io.gdal_cache import bounded_gdal_cache, write_cache_mb

    from ...rasters import write_cube

    cube = np.random.default_rng(0).normal(1000, 20, (6, 40, 30)).astype(np.float32)
    write_cube(tmp_path / "cube.tif", cube)
    seen = []

    class CacheProbe(Feedback):
        def set_progress(self, percent):
            seen.append((percent, gdal.GetCacheMax()))

    with bounded_gdal_cache(256):
        run_global_rx(tmp_path / "cube.tif", tmp_path / "rx.tif", feedback=CacheProbe())
        assert gdal.GetCacheMax() == 256 * 2**20  # restored after the run
    scoring = [cache for percent, cache in seen if percent > 50]
    statistics = [cache for percent, cache in seen if percent <= 50]
    assert scoring and max(scoring) == write_cache_mb(30) * 2**20 == 16 * 2**20
    assert min(statistics) == 256 * 2**20
    assert write_cache_mb(16384) == 48  # three rows of 256 px float32 tiles across 16384 px
    assert write_cache_mb(4096, bands=3) == 36


@pytest.mark.parametrize("block_mb", [64, 0.02])
def test_score_pass_reuses_the_block_the_statistics_pass_read_last(tmp_path, monkeypatch, block_mb):
    """One read per block and pass, less the one block both passes share; scores as from the whole array."""
    from fers.fers_core.detectors.global_rx import run_global_rx
    from fers.fers_core.io.reader import RasterReader

    from ...rasters import read, rx_reference, write_cube

    cube = np.random.default_rng(1).normal(1000, 20, (6, 40, 30)).astype(np.float32)
    write_cube(tmp_path / "cube.tif", cube)
    reads = []
    original = RasterReader.read

    def counting_read(self, window, *args, **kwargs):
        if kwargs.get("shape") is None:  # a pass's block, not the fill-value survey's decimated sample
            reads.append((window.row, window.col, window.rows, window.cols))
        return original(self, window, *args, **kwargs)

    monkeypatch.setattr(RasterReader, "read", counting_read)
    run_global_rx(tmp_path / "cube.tif", tmp_path / "rx.tif", block_mb=block_mb)
    blocks = sorted(set(reads))
    assert len(reads) == 2 * len(blocks) - 1
    assert (len(blocks) == 1) == (block_mb == 64) and sum(rows * cols for _, _, rows, cols in blocks) == 1200
    expected = rx_reference(cube.reshape(6, -1).T.astype(np.float64)).reshape(40, 30)
    np.testing.assert_allclose(read(tmp_path / "rx.tif")[0], expected, rtol=1e-4)
