"""What fers_core.pipeline tells the user about the enhanced cube's covariance, band interpolation and tiling."""

import numpy as np

from fers.fers_core.detectors.rx import CovarianceAccumulator
from fers.fers_core.enhance.model_file import random_init_model
from fers.fers_core.pipeline.detect import run_fers_detection
from fers.fers_core.pipeline.ensemble import Member, run_ensemble_detection
from fers.fers_core.pipeline.options import DetectOptions
from fers.fers_core.pipeline.passes import fit_rx_models

from ...rasters import write_cube
from .. import Log


def rank_deficient(features=12, rank=5, pixels=400):
    accumulator = CovarianceAccumulator(features)
    rng = np.random.default_rng(0)
    accumulator.add_bands(rng.normal(size=(features, rank)) @ rng.normal(size=(rank, pixels)))
    return accumulator


def test_a_singular_cube_is_a_warning_unless_the_raster_had_fewer_bands_than_the_model():
    for raster_bands, expected in ((None, "warning"), (12, "warning"), (20, "warning"), (8, "info")):
        log = Log()
        (model,) = fit_rx_models([rank_deficient()], log, raster_bands)
        assert model.regularised
        messages = log.warnings if expected == "warning" else log.infos
        assert [m for m in messages if "covariance is singular (rank 5 of 12)" in m], (raster_bands, log.__dict__)
        other = log.infos if expected == "warning" else log.warnings
        assert not [m for m in other if "singular" in m]
        if expected == "info":
            assert "raster's 8 bands are interpolated up to the model's 12" in log.infos[0]
        else:  # the causes and what to do, as fers:rx says
            assert log.warnings[0].endswith("the raster may hold constant or duplicate bands (leave them out with "
                                            "BANDS), or too few valid pixels for the model's bands.")


def test_the_two_cubes_of_product_fusion_are_named_when_singular():
    log = Log()
    fit_rx_models([rank_deficient(rank=5), rank_deficient(rank=7)], log)
    assert [m.split("(")[0] for m in log.warnings] == [
        "The spatial branch's enhanced cube's covariance is singular ",
        "The spectral branch's enhanced cube's covariance is singular "]


def test_detection_of_a_raster_with_fewer_bands_than_the_model_does_not_warn_of_its_expected_rank(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(6, 24, 24)).astype(np.float32)
    raster = write_cube(tmp_path / "six.tif", cube)
    log = Log()
    run_fers_detection(raster, str(tmp_path / "scores.tif"), random_init_model(40, seed=0, branches=("spectral",)),
                       DetectOptions(branches=("spectral",), threads=1), log)
    assert not [m for m in log.warnings if "singular" in m], log.warnings
    assert [m for m in log.infos if "singular" in m and "interpolated up to the model's 40" in m], log.infos


def test_band_interpolation_is_a_warning_only_when_every_member_is_a_model_with_over_twice_the_bands(tmp_path):
    raster = write_cube(tmp_path / "thirty.tif", np.random.default_rng(2).normal(size=(30, 16, 16)).astype(np.float32))
    models = {bands: random_init_model(bands, seed=0, branches=("spectral",)) for bands in (16, 48, 64)}
    options = DetectOptions(branches=("spectral",), threads=1, bands=list(range(1, 21)))  # 20 of the 30 bands

    def logged(*bands, plain_rx=False):
        log = Log()
        if len(bands) == 1 and not plain_rx:
            run_fers_detection(raster, str(tmp_path / "one.tif"), models[bands[0]], options, log)
        else:
            members = [Member(models[b], f"/models/random{b}.pt") for b in bands] + ([Member()] if plain_rx else [])
            run_ensemble_detection(raster, str(tmp_path / "fused.tif"), members, options, feedback=log)
        return [m for m in log.warnings if "far fewer" in m], [m for m in log.infos if "more than twice as many" in m]

    assert logged(48) == (["The 20 raster bands used are far fewer than the model's 48: they are interpolated, which "
                           "adds no information; results may be weaker than plain RX."], [])
    assert logged(48, 64) == (["The 20 raster bands used are far fewer than every model's 48 and 64: they are "
                               "interpolated, which adds no information; results may be weaker than plain RX."], [])
    assert logged(16, 48) == ([], ["The raster's 20 bands are interpolated up to more than twice as many in "
                                   "random48.pt (48 bands); that adds no information, and the other member, closer "
                                   "to the raster's band count, keeps it in the fused map."])
    warnings, infos = logged(48, 64, plain_rx=True)  # plain RX keeps the raster's bands in the fused map
    assert warnings == [] and len(infos) == 1, (warnings, infos)
    assert "in random48.pt (48 bands) and random64.pt (64 bands);" in infos[0] and "other member, closer" in infos[0]
    assert logged(16) == ([], []) and logged(16, 16) == ([], [])


def test_the_log_names_spatial_tiles_only_where_the_spatial_branch_tiles_the_raster(tmp_path):
    rng = np.random.default_rng(3)
    lines = {}
    for name, size, branches in (("small", 40, ("spectral", "spatial")), ("large", 140, ("spectral", "spatial")),
                                 ("spectral", 140, ("spectral",))):
        raster = write_cube(tmp_path / f"{name}.tif", rng.normal(size=(8, size, size + 4)).astype(np.float32))
        log = Log()
        run_fers_detection(raster, str(tmp_path / f"{name}-scores.tif"), random_init_model(8, seed=0),
                           DetectOptions(branches=branches, threads=1), log)
        (lines[name],) = [m for m in log.infos if m.startswith("Device:")]
    assert lines["small"].endswith("the spatial branch sees the whole 44x40 px raster as one tile (TILE_SIZE 128 px).")
    assert lines["large"].endswith("; spatial tiles 128 px (core 96 px).")
    assert "tile" not in lines["spectral"].split("px", 1)[1]
