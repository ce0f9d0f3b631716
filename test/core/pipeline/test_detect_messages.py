"""What fers_core.pipeline tells the user about the enhanced cube's covariance and about band interpolation."""

import numpy as np

from fers.fers_core.detectors.rx import CovarianceAccumulator
from fers.fers_core.enhance.model_file import random_init_model
from fers.fers_core.feedback import Feedback
from fers.fers_core.pipeline.detect import run_fers_detection
from fers.fers_core.pipeline.ensemble import Member, run_ensemble_detection
from fers.fers_core.pipeline.options import DetectOptions
from fers.fers_core.pipeline.passes import fit_rx_models

from ...rasters import write_cube


class Log(Feedback):
    def __init__(self):
        self.infos, self.warnings = [], []

    def info(self, message):
        self.infos.append(message)

    def warning(self, message):
        self.warnings.append(message)


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


def test_detection_of_a_raster_with_fewer_bands_than_the_model_does_not_warn_of_its_expected_rank(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(6, 24, 24)).astype(np.float32)
    raster = write_cube(tmp_path / "six.tif", cube)
    log = Log()
    run_fers_detection(raster, str(tmp_path / "scores.tif"), random_init_model(40, seed=0, branches=("spectral",)),
                       DetectOptions(branches=("spectral",), threads=1), log)
    assert not [m for m in log.warnings if "singular" in m], log.warnings
    assert [m for m in log.infos if "singular" in m and "interpolated up to the model's 40" in m], log.infos


def test_band_interpolation_is_a_warning_only_when_every_model_of_an_ensemble_has_over_twice_the_bands(tmp_path):
    raster = write_cube(tmp_path / "twenty.tif", np.random.default_rng(2).normal(size=(20, 16, 16)).astype(np.float32))
    models = {bands: random_init_model(bands, seed=0, branches=("spectral",)) for bands in (16, 48, 64)}
    options = DetectOptions(branches=("spectral",), threads=1)

    def logged(*bands):
        log = Log()
        if len(bands) == 1:
            run_fers_detection(raster, str(tmp_path / "one.tif"), models[bands[0]], options, log)
        else:
            members = [Member(models[b], f"random {b}") for b in bands] + [Member()]
            run_ensemble_detection(raster, str(tmp_path / "fused.tif"), members, options, feedback=log)
        return [m for m in log.warnings if "far fewer" in m], [m for m in log.infos if "more than twice as many" in m]

    warnings, _ = logged(48)
    assert warnings == ["The raster has 20 bands, far fewer than the model's 48: bands are interpolated, which adds "
                        "no information; results may be weaker than plain RX."]
    warnings, infos = logged(16, 48)
    assert warnings == [] and len(infos) == 1 and "in random 48 (48 bands)" in infos[0], infos
    assert "random 16" not in infos[0]
    warnings, infos = logged(48, 64)
    assert len(warnings) == 1 and "far fewer than every model's 48 and 64" in warnings[0], warnings
    assert logged(16)[0] == [] and logged(16, 16)[0] == []
