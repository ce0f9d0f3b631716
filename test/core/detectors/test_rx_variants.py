"""RXD with a local mean, UTD and RXD-UTD against float64 textbook formulas, pixel by pixel."""

import numpy as np
import pytest

from fers.fers_core.detectors.rx_variants import chi_square_law, run_rx_variant, rx_variant_scores, validate_variant
from fers.fers_core.errors import InputError
from fers.fers_core.io.writer import SCORE_NODATA

from ...rasters import leftovers, read, write_cube


def kernel_start(centre, half, size):
    width = 2 * half + 1
    return 0 if size <= width else min(max(centre - half, 0), size - width)


def textbook(cube, valid, variant, window=None, guard=0, exclude=None):
    """Chang and Chiang's formulas with numpy's float64 covariance and pseudo-inverse, one pixel at a time."""
    bands, rows, cols = cube.shape
    use = valid if exclude is None else valid & ~exclude
    background = cube[:, use].T
    inverse = np.linalg.pinv(np.cov(background, rowvar=False))
    ones = np.ones(bands)
    scores = np.full((rows, cols), SCORE_NODATA)
    for i in range(rows):
        for j in range(cols):
            if not valid[i, j]:
                continue
            mean = background.mean(axis=0)
            if window:
                kernel = np.zeros((rows, cols), bool)
                r0, c0 = kernel_start(i, window // 2, rows), kernel_start(j, window // 2, cols)
                kernel[r0:r0 + window, c0:c0 + window] = True
                if guard:
                    g = guard // 2
                    kernel[max(i - g, 0):i + g + 1, max(j - g, 0):j + g + 1] = False
                kernel &= use
                if not kernel.any():
                    continue
                mean = cube[:, kernel].mean(axis=1)
            r = cube[:, i, j]
            scores[i, j] = {"rxd": (r - mean) @ inverse @ (r - mean),
                            "utd": (ones - mean) @ inverse @ (r - mean),
                            "rxd-utd": (r - ones) @ inverse @ (r - mean)}[variant]
    return scores


def correlated_cube(bands, rows, cols, seed, offset=3.0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((bands, bands))
    cube = np.einsum("kb,brc->krc", mixing, rng.standard_normal((bands, rows, cols))) + offset
    cube += np.linspace(0, 2, cols)[None, None, :]  # a background that drifts across the scene
    return cube


def assert_close(scores, expected):
    defined = expected != SCORE_NODATA
    assert np.all(scores[~defined] == SCORE_NODATA)
    # float32 whitening, as global RX: relative to the score range
    np.testing.assert_allclose(scores[defined], expected[defined], rtol=1e-4,
                               atol=1e-5 * np.abs(expected[defined]).max())


@pytest.mark.parametrize("variant", ["rxd", "utd", "rxd-utd"])
@pytest.mark.parametrize("window, guard", [(None, 0), (5, 0), (7, 3), (3, 1), (31, 5)])
def test_matches_the_textbook_with_nodata_and_exclusions(variant, window, guard):
    rng = np.random.default_rng(7)
    cube = correlated_cube(6, 17, 23, seed=window or 1)
    valid = rng.random((17, 23)) > 0.1
    exclude = rng.random((17, 23)) > 0.9
    cube[:, ~valid] = np.nan  # invalid pixels may hold anything
    scores = rx_variant_scores(cube, valid, variant, window, guard, exclude)
    assert scores.dtype == np.float32
    assert_close(scores, textbook(cube, valid, variant, window, guard, exclude))
    assert np.all(scores[~valid] == SCORE_NODATA) and np.all(scores[valid & exclude] != SCORE_NODATA)


@pytest.mark.parametrize("window, guard", [(7, 3), (9, 0), (31, 5)])
def test_every_pixel_usable_matches_the_textbook(window, guard):
    """Without nodata or mask the kernel counts are the window areas (clipped guards at the edges)."""
    cube = correlated_cube(5, 16, 21, seed=window)
    valid = np.ones((16, 21), bool)
    assert_close(rx_variant_scores(cube, valid, "rxd-utd", window, guard), textbook(cube, valid, "rxd-utd", window,
                                                                                    guard))


def test_rxd_utd_is_rxd_minus_utd_and_global_rxd_is_global_rx():
    from fers.fers_core.detectors.rx import rx_scores

    cube = correlated_cube(5, 12, 14, seed=3)
    valid = np.ones((12, 14), bool)
    rxd, utd, both = (rx_variant_scores(cube, valid, v, 5, 1) for v in ("rxd", "utd", "rxd-utd"))
    np.testing.assert_allclose(both, rxd - utd, rtol=1e-4, atol=1e-4 * np.abs(rxd).max())
    np.testing.assert_allclose(rx_variant_scores(cube, valid, "rxd"), rx_scores(cube.reshape(5, -1).T).reshape(12, 14),
                               rtol=1e-5)


def test_a_local_mean_finds_a_target_the_drifting_background_hides():
    cube = correlated_cube(4, 30, 60, seed=5, offset=0)
    cube += np.linspace(0, 40, 60)[None, None, :] * np.array([1, -1, 0.5, 2])[:, None, None]  # strong gradient
    cube[:, 15, 30] += 6.0
    valid = np.ones((30, 60), bool)
    local = rx_variant_scores(cube, valid, "rxd", 9, 3)
    assert np.unravel_index(np.argmax(local), local.shape) == (15, 30)


def test_pixels_without_usable_kernel_pixels_are_nodata():
    cube = correlated_cube(3, 12, 12, seed=2)
    valid = np.ones((12, 12), bool)
    exclude = np.zeros((12, 12), bool)
    exclude[3:8, 3:8] = True  # a 5x5 excluded patch: its centre's 5x5 kernel has no usable pixel
    scores = rx_variant_scores(cube, valid, "rxd", 5, 0, exclude)
    assert scores[5, 5] == SCORE_NODATA and scores[5, 2] != SCORE_NODATA


@pytest.mark.parametrize("variant, window, guard, message", [
    ("rxx", None, 0, "Unknown RX variant"),
    ("rxd", 4, 0, "odd number of pixels, at least 3"),
    ("rxd", 1, 0, "odd number of pixels, at least 3"),
    ("utd", 7, 2, "guard window must be 0 .none. or an odd"),
    ("rxd", 7, 7, "must be smaller than the local mean kernel"),
    ("rxd", 7, 9, "must be smaller than the local mean kernel"),
])
def test_bad_parameters_are_refused_before_any_pass(tmp_path, variant, window, guard, message):
    with pytest.raises(InputError, match=message):
        validate_variant(variant, window, guard)
    with pytest.raises(InputError, match=message):  # the file is never opened
        run_rx_variant(tmp_path / "missing.tif", tmp_path / "out.tif", variant, window, guard)


def test_only_rxd_keeps_the_chi_square_law():
    assert chi_square_law("rxd") and not chi_square_law("utd") and not chi_square_law("rxd-utd")


@pytest.mark.parametrize("variant, window, guard", [("rxd", 7, 3), ("utd", None, 0), ("rxd-utd", 5, 1)])
def test_file_run_in_tiles_matches_in_memory(tmp_path, variant, window, guard):
    cube = correlated_cube(5, 40, 33, seed=9).astype(np.float32)
    cube[:, 0:2, 0:3] = -9999.0
    mask = np.zeros((40, 33), np.uint8)
    mask[20:24, 5:9] = 1
    source = write_cube(tmp_path / "cube.tif", cube, nodata=-9999.0)
    mask_path = write_cube(tmp_path / "mask.tif", mask)
    output = tmp_path / "out.tif"
    summary = run_rx_variant(source, output, variant, window, guard, bands=[1, 2, 4, 5], mask_path=mask_path,
                             block_mb=0.02)
    scores = read(output)[0]
    valid = np.ones((40, 33), bool)
    valid[0:2, 0:3] = False
    expected = rx_variant_scores(cube[[0, 1, 3, 4]].astype(np.float64), valid, variant, window, guard, mask != 0)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert summary.valid_pixels == 40 * 33 - 6 and summary.bands == 4
    assert leftovers(tmp_path, {"cube.tif", "mask.tif", "out.tif"}) == []


@pytest.mark.parametrize("variant", ["rxd", "rxd-utd"])
def test_large_offset_int16_file_in_tiles_matches_the_textbook(tmp_path, variant):
    """Values near 10,000 varying by a few units: the box sums must not lose the variations (no float32
    cancellation), in tiles with halos, with the kernel shifted at the edges and the guard clipped."""
    rng = np.random.default_rng(3)
    cube = np.rint(10000 + 3 * correlated_cube(6, 37, 45, seed=4, offset=0.0)
                   + rng.normal(0, 1, (6, 37, 45))).astype(np.int16)
    cube[:, 30:32, 10:12] += 25  # a small bright target
    source = write_cube(tmp_path / "cube.tif", cube)
    output = tmp_path / "out.tif"
    run_rx_variant(source, output, variant, 21, 5, block_mb=0.5)  # tiles of 10 x 10
    valid = np.ones((37, 45), bool)
    assert_close(read(output)[0], textbook(cube.astype(np.float64), valid, variant, 21, 5))
