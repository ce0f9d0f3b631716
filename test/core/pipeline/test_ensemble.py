"""Multi-model detection (fers_core.pipeline.ensemble) against float64 oracles on small real rasters."""

import numpy as np
import pytest
from scipy.stats import rankdata

from fers.fers_core.choices import ENSEMBLE_FUSION_CHOICES
from fers.fers_core.detectors.global_rx import run_global_rx
from fers.fers_core.enhance.model_file import random_init_model
from fers.fers_core.errors import InputError, OutputError
from fers.fers_core.io.writer import SCORE_NODATA
from fers.fers_core.pipeline.detect import run_fers_detection
from fers.fers_core.pipeline.ensemble import (
    CdfSketch,
    Member,
    fuse_score_rasters,
    members_for_raster,
    run_ensemble_detection,
)
from fers.fers_core.pipeline.options import DetectOptions

from ...rasters import leftovers, read, write_cube
from .. import Log


def mid_rank_cdf(values):
    """The oracle: (pixels scoring lower + half of those scoring the same) / n, in float64."""
    return (rankdata(np.asarray(values, dtype=np.float64)) - 0.5) / len(values)


@pytest.fixture
def two_maps(tmp_path):
    """Two known score maps on one grid, nodata at different pixels of each, ties in the second."""
    rng = np.random.default_rng(3)
    first = rng.gamma(2.0, 3.0, size=(37, 53)).astype(np.float32)
    second = np.round(rng.normal(size=(37, 53)) * 4, 0).astype(np.float32)  # many ties
    first[0, :5] = SCORE_NODATA
    second[10:12, 20:30] = SCORE_NODATA
    paths = [write_cube(tmp_path / "a.tif", first, nodata=SCORE_NODATA),
             write_cube(tmp_path / "b.tif", second, nodata=SCORE_NODATA)]
    return paths, first, second


def test_rank_fusion_equals_the_float64_oracle_with_nodata(tmp_path, two_maps):
    paths, first, second = two_maps
    error = fuse_score_rasters(paths, tmp_path / "fused.tif", "rank")
    fused, nodata, _, _ = read(tmp_path / "fused.tif")
    valid = (first != SCORE_NODATA) & (second != SCORE_NODATA)
    expected = (mid_rank_cdf(first[valid]) + mid_rank_cdf(second[valid])) / 2
    assert error == 0  # every score is a sketch edge: exact
    assert nodata == SCORE_NODATA
    np.testing.assert_array_equal(fused[~valid], SCORE_NODATA)
    np.testing.assert_allclose(fused[valid], expected, rtol=0, atol=1e-6)
    assert leftovers(tmp_path, {"a.tif", "b.tif", "fused.tif"}) == []


def test_standardised_fusion_equals_the_float64_oracle(tmp_path, two_maps):
    paths, first, second = two_maps
    fuse_score_rasters(paths, tmp_path / "z.tif", "standardised")
    valid = (first != SCORE_NODATA) & (second != SCORE_NODATA)
    a, b = first[valid].astype(np.float64), second[valid].astype(np.float64)
    expected = ((a - a.mean()) / a.std() + (b - b.mean()) / b.std()) / 2
    np.testing.assert_allclose(read(tmp_path / "z.tif")[0][valid], expected, rtol=0, atol=1e-5)


def test_a_coarse_sketch_stays_within_its_error_bound(tmp_path, two_maps):
    paths, first, second = two_maps
    error = fuse_score_rasters(paths, tmp_path / "coarse.tif", "rank", sample_size=300, bins=32)
    valid = (first != SCORE_NODATA) & (second != SCORE_NODATA)
    expected = (mid_rank_cdf(first[valid]) + mid_rank_cdf(second[valid])) / 2
    difference = np.abs(read(tmp_path / "coarse.tif")[0][valid] - expected).max()
    assert 0 < error < 0.1
    assert 1e-4 < difference <= error + 1e-6  # approximate, but never beyond the bound it reports


def test_sketch_cdf_is_exact_for_ties_and_monotone():
    values = np.array([5.0, 1.0, 1.0, 3.0, 5.0, 5.0, 2.0])
    sketch = CdfSketch(values.size)
    sketch.sample(values, np.arange(values.size))
    sketch.fit()
    sketch.count(values)
    sketch.finish()
    np.testing.assert_allclose(sketch.cdf(values), mid_rank_cdf(values))
    grid = np.linspace(0.5, 6, 40)
    assert np.all(np.diff(sketch.cdf(np.clip(grid, 1, 5))) >= 0)


class Bands:
    """A stand-in model for the band-count rule, which reads only ``bands``."""

    def __init__(self, bands):
        self.bands = bands


def kept_labels(raster_bands, members):
    log = Log()
    return [m.label for m in members_for_raster(raster_bands, members, log)], log.infos


def test_band_aware_members_with_more_than_twice_the_raster_bands_are_left_out():
    bundled = [Member(Bands(b), f"m{b}.pt", bundled=True) for b in (50, 100, 200)]
    assert kept_labels(120, bundled) == (["m50.pt", "m100.pt", "m200.pt"], [])
    assert kept_labels(100, bundled)[0] == ["m50.pt", "m100.pt", "m200.pt"]  # exactly half: kept
    labels, infos = kept_labels(99, bundled)
    assert labels == ["m50.pt", "m100.pt"]
    assert infos == ["The 99 raster bands used are fewer than half of m200.pt (200 bands): that bundled member is left "
                     "out (interpolating most of a model's bands adds no information): 2 members are fused."]
    assert kept_labels(49, bundled)[0] == ["m50.pt"]
    assert kept_labels(10, bundled)[0] == ["m50.pt"]  # every model interpolates: the one with the fewest bands stays
    with_rx = bundled + [Member()]
    assert kept_labels(10, with_rx)[0] == ["m50.pt", "plain global RX"]  # plain RX alone is not enough
    assert kept_labels(60, with_rx)[0] == ["m50.pt", "m100.pt", "plain global RX"]


def test_models_the_analyst_chose_are_never_left_out():
    chosen = [Member(Bands(50), "a.pt"), Member(Bands(200), "b.pt"),
              Member(Bands(200), "bundled.pt", bundled=True)]
    assert kept_labels(20, chosen) == (["a.pt", "b.pt"], [
        "The 20 raster bands used are fewer than half of bundled.pt (200 bands): that bundled member is left out "
        "(interpolating most of a model's bands adds no information): 2 members are fused."])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("scene")
    return write_scene(folder / "scene.tif", folder / "truth.tif", rows=40, cols=44, bands=20, seed=5)


@pytest.mark.slow
def test_ensemble_of_two_models_and_plain_rx_is_the_rank_mean_of_their_runs(tmp_path, scene):
    models = [random_init_model(16, seed=0, branches=("spectral",)), random_init_model(32, seed=1)]
    options = DetectOptions(branches=("spectral", "spatial"), spatial_tile=32, spatial_margin=4)
    members = [Member(models[0], "random 16"), Member(models[1], "random 32"), Member()]
    run_ensemble_detection(scene[0], tmp_path / "ensemble.tif", members, options)
    singles = []
    for index, model in enumerate(models):
        path = tmp_path / f"single{index}.tif"
        branches = ("spectral",) if index == 0 else ("spectral", "spatial")
        run_fers_detection(scene[0], path, model, DetectOptions(branches=branches, spatial_tile=32, spatial_margin=4))
        singles.append(read(path)[0].ravel())
    run_global_rx(scene[0], tmp_path / "rx.tif")
    singles.append(read(tmp_path / "rx.tif")[0].ravel())
    valid = np.logical_and.reduce([s != SCORE_NODATA for s in singles])
    assert 0 < valid.sum() < valid.size  # the scene has nodata pixels
    expected = np.mean([mid_rank_cdf(s[valid]) for s in singles], axis=0)
    fused = read(tmp_path / "ensemble.tif")[0].ravel()
    np.testing.assert_allclose(fused[valid], expected, atol=1e-6)
    np.testing.assert_array_equal(fused[~valid], SCORE_NODATA)
    assert leftovers(tmp_path, {"ensemble.tif", "single0.tif", "single1.tif", "rx.tif"}) == []


def test_bad_ensembles_are_refused_before_any_output(tmp_path, scene):
    model = random_init_model(16, seed=0, branches=("spectral",))
    with pytest.raises(InputError, match="at least two members"):
        run_ensemble_detection(scene[0], tmp_path / "one.tif", [Member(model, "m")])
    refusal = "Unknown ensemble fusion 'median': use one of " + ", ".join(ENSEMBLE_FUSION_CHOICES)
    with pytest.raises(InputError, match=refusal):
        run_ensemble_detection(scene[0], tmp_path / "bad.tif", [Member(model, "m"), Member()], fusion="median")
    with pytest.raises(InputError, match="enhanced-cube outputs belong to one model"):
        run_ensemble_detection(scene[0], tmp_path / "cube.tif", [Member(model, "m"), Member()],
                               DetectOptions(spectral_output=str(tmp_path / "spe.tif")))
    with pytest.raises(OutputError, match="would destroy the input"):
        run_ensemble_detection(scene[0], scene[0], [Member(model, "m"), Member()])
    assert leftovers(tmp_path, set()) == []


def test_a_member_that_cannot_map_the_raster_is_refused_before_any_member_runs(tmp_path):
    from osgeo import gdal

    vnir = write_cube(tmp_path / "vnir.tif", np.random.default_rng(4).normal(size=(10, 12, 12)).astype(np.float32))
    dataset = gdal.Open(vnir, gdal.GA_Update)
    for index, value in enumerate(np.linspace(400, 1000, 10)):
        dataset.GetRasterBand(index + 1).SetMetadata({"wavelength": f"{value:.1f}", "wavelength_units": "nm"})
    dataset = None
    two = write_cube(tmp_path / "two.tif", np.random.default_rng(5).normal(size=(2, 12, 12)).astype(np.float32))
    plain, full_range = random_init_model(16, seed=0, branches=("spectral",)), random_init_model(16, seed=1)
    full_range.wavelengths_nm = list(np.linspace(400, 2500, 16))
    for raster, message in ((vnir, "cover only 29% of the model's range"), (two, "need at least 3 bands")):
        log = Log()
        with pytest.raises(InputError, match=message):
            run_ensemble_detection(raster, tmp_path / "fused.tif", [Member(plain, "plain"), Member(full_range, "wl")],
                                   feedback=log)
        assert not [line for line in log.infos if line.startswith("Ensemble member")], log.infos
    assert leftovers(tmp_path, {"vnir.tif", "two.tif"}) == []


def test_only_rank_fused_maps_are_recognised_as_rank_maps(tmp_path, two_maps):
    from fers.fers_core.pipeline.postprocess import is_rank_map

    paths, _, _ = two_maps
    fuse_score_rasters(paths, tmp_path / "rank.tif", "rank")
    fuse_score_rasters(paths, tmp_path / "z.tif", "standardised")
    assert is_rank_map(tmp_path / "rank.tif")
    assert not is_rank_map(tmp_path / "z.tif") and not is_rank_map(paths[0])
