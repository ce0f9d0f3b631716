"""Local (dual-window) RX against a brute-force per-pixel reference, blocks, files, edge cases."""

import time

import numpy as np
import pytest

from fers.fers_core.detectors.local_rx import (
    RIDGE_FLOOR,
    RIDGE_UNDERSAMPLED,
    local_rx_scores,
    plan_tiles,
    run_local_rx,
    validate_windows,
)
from fers.fers_core.errors import Cancelled, InputError
from fers.fers_core.feedback import Feedback
from fers.fers_core.io.writer import SCORE_NODATA

from ...rasters import GEOTRANSFORM, leftovers, read, utm_wkt, write_cube
from .. import Log


def outer_start(centre, half, size):
    """First row/column of the outer window: shifted inside the image, keeping its size."""
    width = 2 * half + 1
    return 0 if size <= width else min(max(centre - half, 0), size - width)


def brute_force_local_rx(cube, valid, inner, outer, exclude=None):
    """Local RX pixel by pixel, by the textbook formula, with the module's documented window and ridge rules."""
    bands, rows, cols = cube.shape
    use = valid if exclude is None else valid & ~exclude
    scores = np.full((rows, cols), SCORE_NODATA, dtype=np.float64)
    half_in, half_out = inner // 2, outer // 2
    for i in range(rows):
        for j in range(cols):
            if not valid[i, j]:
                continue
            ring = np.zeros((rows, cols), dtype=bool)
            r0, c0 = outer_start(i, half_out, rows), outer_start(j, half_out, cols)
            ring[r0:r0 + outer, c0:c0 + outer] = True
            ring[max(i - half_in, 0):i + half_in + 1, max(j - half_in, 0):j + half_in + 1] = False
            pixels = cube[:, ring & use].T
            if len(pixels) < 2:
                continue
            covariance = np.atleast_2d(np.cov(pixels, rowvar=False))
            scale = np.trace(covariance) / bands
            if scale <= 0:
                continue
            ridge = RIDGE_UNDERSAMPLED if len(pixels) < bands + 1 else RIDGE_FLOOR
            covariance += ridge * scale * np.eye(bands)
            difference = cube[:, i, j] - pixels.mean(axis=0)
            scores[i, j] = difference @ np.linalg.solve(covariance, difference)
    return scores


def correlated_cube(bands, rows, cols, seed=0, offset=500.0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((bands, bands))
    return np.einsum("kb,brc->krc", mixing, rng.standard_normal((bands, rows, cols))) + offset


def assert_matches_reference(scores, expected):
    defined = expected != SCORE_NODATA
    assert np.all(scores[~defined] == SCORE_NODATA)
    np.testing.assert_allclose(scores[defined], expected[defined], rtol=1e-6)


@pytest.mark.parametrize("inner, outer", [(3, 7), (1, 5), (5, 11), (3, 25)])
def test_matches_brute_force_with_nodata_and_exclusions(inner, outer):
    rng = np.random.default_rng(inner * 100 + outer)
    cube = correlated_cube(6, 17, 23, seed=outer)
    valid = rng.random((17, 23)) > 0.1
    exclude = rng.random((17, 23)) > 0.9
    scores = local_rx_scores(cube, valid, inner, outer, exclude)
    assert scores.dtype == np.float32 and scores.shape == (17, 23)
    expected = brute_force_local_rx(cube, valid, inner, outer, exclude)
    assert_matches_reference(scores, expected)
    assert np.all(scores[~valid] == SCORE_NODATA)
    assert np.all(scores[exclude & valid] != SCORE_NODATA)  # excluded pixels are still scored


def test_undersampled_rings_use_the_ridge_like_the_reference():
    # 3/7 windows hold 40 ring pixels; with 30 bands and a nodata hole some rings have fewer than 31.
    cube = correlated_cube(30, 14, 14, seed=5)
    valid = np.ones((14, 14), dtype=bool)
    valid[4:10, 3:12] = False
    scores = local_rx_scores(cube, valid, 3, 7)
    assert_matches_reference(scores, brute_force_local_rx(cube, valid, 3, 7))


@pytest.mark.parametrize("budget_mb, tiles", [(0.01, (1, 30)), (0.03, (7, 7)), (0.05, (5, 30))])
def test_tiles_give_the_same_scores_as_one_block(budget_mb, tiles):
    cube = correlated_cube(5, 40, 30, seed=2)
    valid = np.ones((40, 30), dtype=bool)
    whole = local_rx_scores(cube, valid, 3, 9)
    assert plan_tiles(30, 5, 9, budget_mb=100)[1] == 30  # a large budget: full-width strips
    assert plan_tiles(30, 5, 9, budget_mb=budget_mb) == tiles  # thin strips, or squares
    np.testing.assert_allclose(local_rx_scores(cube, valid, 3, 9, budget_mb=budget_mb), whole, rtol=1e-6)


def test_many_bands_use_square_tiles_within_the_budget():
    rows, cols = plan_tiles(1000, 200, 21, budget_mb=64)
    assert rows == cols < 120  # a full-width strip and its 20 halo rows would not fit 64 MB at 200 bands
    assert (rows + 20) * (cols + 20) * (3 * 200 + 1) * 8 <= 64 * 2**20


def test_anomalous_pixel_stands_out_from_its_ring():
    cube = correlated_cube(8, 30, 30, seed=3)
    cube[:, 15, 15] += 25.0
    scores = local_rx_scores(cube, np.ones((30, 30), dtype=bool), 3, 11)
    assert np.unravel_index(np.argmax(scores), scores.shape) == (15, 15)
    # the guard window keeps the target out of its neighbours' backgrounds: they stay ordinary
    assert scores[14, 15] < np.percentile(scores, 99)


def test_duplicate_and_constant_bands_stay_finite():
    cube = correlated_cube(5, 25, 25, seed=4)
    padded = np.concatenate([cube, cube[:2], np.full((1, 25, 25), 7.0)])
    valid = np.ones((25, 25), dtype=bool)
    scores = local_rx_scores(padded, valid, 3, 9)
    assert np.isfinite(scores).all() and (scores >= 0).all()
    np.testing.assert_allclose(scores, local_rx_scores(cube, valid, 3, 9), rtol=1e-4)


def test_no_background_is_nodata():
    cube = correlated_cube(3, 9, 9, seed=6)
    valid = np.zeros((9, 9), dtype=bool)
    valid[4, 4] = True  # alone: its ring has no usable pixel
    scores = local_rx_scores(cube, valid, 1, 3)
    assert np.all(scores == SCORE_NODATA)


def test_image_smaller_than_the_outer_window_uses_its_whole_extent():
    cube = correlated_cube(3, 6, 8, seed=7)
    valid = np.ones((6, 8), dtype=bool)
    assert_matches_reference(local_rx_scores(cube, valid, 1, 21), brute_force_local_rx(cube, valid, 1, 21))


@pytest.mark.parametrize("inner, outer, message", [
    (4, 21, "inner .guard. window must be an odd"),
    (0, 21, "inner .guard. window must be an odd"),
    (5, 20, "outer window must be an odd"),
    (5, 5, "larger than the inner window"),
    (7, 3, "larger than the inner window"),
])
def test_windows_are_validated(inner, outer, message):
    with pytest.raises(InputError, match=message):
        validate_windows(inner, outer)
    with pytest.raises(InputError, match=message):
        local_rx_scores(np.zeros((2, 5, 5)), np.ones((5, 5), bool), inner, outer)


def test_file_run_matches_in_memory_scores_in_tiles(tmp_path):
    cube = correlated_cube(6, 45, 20, seed=8).astype(np.float32)
    cube[:, 0:2, 0:3] = -9999.0
    mask = np.zeros((45, 20), dtype=np.uint8)
    mask[20:24, 5:9] = 1
    source = write_cube(tmp_path / "cube.tif", cube, nodata=-9999.0)
    mask_path = write_cube(tmp_path / "mask.tif", mask)
    output = tmp_path / "local.tif"
    assert plan_tiles(20, 5, 9, budget_mb=0.022) == (5, 5)
    summary = run_local_rx(source, output, bands=[1, 2, 4, 5, 6], mask_path=mask_path, inner=3, outer=9,
                           block_mb=0.022)  # 5x5-pixel tiles
    scores, nodata, geotransform, projection = read(output)
    valid = np.ones((45, 20), dtype=bool)
    valid[0:2, 0:3] = False
    expected = local_rx_scores(cube[[0, 1, 3, 4, 5]].astype(np.float64), valid, 3, 9, exclude=mask != 0)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert nodata == SCORE_NODATA and geotransform == GEOTRANSFORM and projection == utm_wkt()
    assert summary.valid_pixels == 45 * 20 - 6 and summary.bands == 5
    assert leftovers(tmp_path, {"cube.tif", "mask.tif", "local.tif"}) == []


class CancelAfter(Feedback):
    def __init__(self, calls):
        self.calls = calls

    def is_cancelled(self):
        self.calls -= 1
        return self.calls < 0


def test_cancel_leaves_no_output(tmp_path):
    source = write_cube(tmp_path / "cube.tif", correlated_cube(4, 60, 20, seed=9).astype(np.float32))
    with pytest.raises(Cancelled):
        run_local_rx(source, tmp_path / "local.tif", inner=3, outer=7, feedback=CancelAfter(5), block_mb=0.02)
    assert leftovers(tmp_path, {"cube.tif"}) == []


def test_all_nodata_is_a_clear_error(tmp_path):
    source = write_cube(tmp_path / "empty.tif", np.full((3, 8, 8), -5, np.int16), nodata=-5)
    with pytest.raises(InputError, match="No valid pixels"):
        run_local_rx(source, tmp_path / "local.tif", inner=1, outer=5)
    assert leftovers(tmp_path, {"empty.tif"}) == []


def test_speed_is_reasonable(capsys):
    """About 100x100x50 in a second or two; prints pixels per second (the module docstring quotes these)."""
    cube = np.random.default_rng(0).standard_normal((50, 100, 100))
    started = time.perf_counter()
    local_rx_scores(cube, np.ones((100, 100), dtype=bool), 5, 21)
    rate = 100 * 100 / (time.perf_counter() - started)
    with capsys.disabled():
        print(f"\nlocal RX 100x100x50, windows 5/21: {rate:,.0f} pixels/s")
    assert rate > 1000


def test_rows_longer_than_the_restart_interval_match_brute_force():
    """The ring Gram slides along each row and is summed afresh every RESTART_COLUMNS pixels."""
    from fers.fers_core.detectors.local_rx import RESTART_COLUMNS

    cols = 2 * RESTART_COLUMNS + 17
    rng = np.random.default_rng(11)
    cube = correlated_cube(5, 9, cols, seed=12)
    valid = rng.random((9, cols)) > 0.05
    exclude = rng.random((9, cols)) > 0.95
    scores = local_rx_scores(cube, valid, 3, 7, exclude)
    assert_matches_reference(scores, brute_force_local_rx(cube, valid, 3, 7, exclude))


def test_ill_conditioned_bands_match_brute_force():
    # nearly collinear bands, as real radiance (condition numbers near 1e9): the bordered factorisation holds
    rng = np.random.default_rng(13)
    base = rng.standard_normal((3, 15, 15))
    cube = np.concatenate([base, base[:2] + 1e-4 * rng.standard_normal((2, 15, 15))]) * 1000 + 4000
    valid = np.ones((15, 15), dtype=bool)
    scores = local_rx_scores(cube, valid, 3, 9)
    expected = brute_force_local_rx(cube, valid, 3, 9)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_components_project_onto_the_leading_principal_components():
    from fers.fers_core.detectors.projection import PrincipalProjection

    cube = correlated_cube(8, 20, 20, seed=14)
    valid = np.ones((20, 20), dtype=bool)
    np.testing.assert_allclose(local_rx_scores(cube, valid, 3, 9, components=8), local_rx_scores(cube, valid, 3, 9),
                               rtol=1e-6)  # all components: the same scores (RX is affine invariant)
    pixels = cube.reshape(8, -1)
    projection = PrincipalProjection.fit(pixels.mean(axis=1), np.cov(pixels), ("count", 3))
    projected = projection.apply(cube)
    expected = brute_force_local_rx(projected, valid, 3, 9)
    assert_matches_reference(local_rx_scores(cube, valid, 3, 9, components=3), expected)
    share = PrincipalProjection.fit(pixels.mean(axis=1), np.cov(pixels), ("share", 0.9))
    assert share.share >= 0.9 and share.components < 8


@pytest.mark.parametrize("components, message", [
    (9, "asks for 9 principal components but only 8 bands"),
    (2.5, "neither a share of variance"),
    (-1, "COMPONENTS must be 0"),
])
def test_bad_components_are_refused_before_any_pass(tmp_path, components, message):
    cube = correlated_cube(8, 10, 10, seed=15)
    with pytest.raises(InputError, match=message):
        local_rx_scores(cube, np.ones((10, 10), bool), 3, 7, components=components)
    source = write_cube(tmp_path / "cube.tif", cube.astype(np.float32))
    with pytest.raises(InputError, match=message):
        run_local_rx(source, tmp_path / "local.tif", inner=3, outer=7, components=components)
    assert leftovers(tmp_path, {"cube.tif"}) == []


def test_file_run_logs_throughput_and_time_left(tmp_path):
    messages = []

    class Recorder(Feedback):
        def info(self, message):
            messages.append(message)

    source = write_cube(tmp_path / "cube.tif", correlated_cube(4, 30, 20, seed=16).astype(np.float32))
    run_local_rx(source, tmp_path / "local.tif", inner=3, outer=7, feedback=Recorder(), block_mb=0.02, components=3)
    assert any("pixels/s, about" in m and "left" in m for m in messages)
    assert any("Projection onto 3 principal component(s)" in m for m in messages)


def test_a_flat_ring_has_no_background_and_no_score_is_huge_or_negative(tmp_path):
    """A constant 7 with a 3x3 target of 9: the target centre's ring is constant, and the rounding of the sliding
    sums left it a 'variance' of 1e-14 that the ridge turned into a score of 1e17; other flat rings scored -6e-20."""
    cube = np.full((5, 40, 40), 7.0, np.float32)
    cube[:, 18:21, 18:21] = 9.0
    source = write_cube(tmp_path / "flat.tif", cube)
    log = Log()
    run_local_rx(source, str(tmp_path / "local.tif"), inner=3, outer=9, feedback=log)
    scores = read(tmp_path / "local.tif")[0]
    assert scores[19, 19] == -9999  # its whole ring is constant: no background, as fers:rx says for the others
    valid = scores[scores != -9999]
    assert valid.size and valid.min() >= 0 and valid.max() < 100
    assert [w for w in log.warnings if "had no usable background in their ring and are nodata" in w]
