"""Parameters that each work alone, combined: the first problem is the one named, thresholds use the law the
scores follow, and settings that cannot work on this raster are refused before the work (processing.run)."""

import re

import numpy as np
import pytest
from qgis.core import QgsProcessingException
from scipy.stats import chi2

from .conftest import TEST_MODEL_BANDS, Recorder
from .rasters import leftovers, read, write_cube


@pytest.fixture
def scene(tmp_path):
    data = np.random.default_rng(0).normal(100, 5, (TEST_MODEL_BANDS, 30, 36)).astype(np.float32)
    data[:, 10:12, 20:22] += 60
    return write_cube(tmp_path / "scene.tif", data)


@pytest.fixture(scope="module")
def spectral_only(tmp_path_factory):
    from fers.fers_core.enhance.model_file import random_init_model, save_model

    path = tmp_path_factory.mktemp("spectral") / "spectral16.pt"
    save_model(random_init_model(TEST_MODEL_BANDS, seed=1, branches=("spectral",)), path)
    return str(path)


def test_a_missing_branch_is_named_before_the_fusion_s_threshold_rules(run_alg, tmp_path, scene, spectral_only):
    with pytest.raises(QgsProcessingException, match=r"^The model has no spatial branch: choose BRANCHES it has "
                                                     r"\(spectral\)"):
        run_alg("fers:detect", {"INPUT": scene, "MODEL": spectral_only, "BRANCHES": 2, "THRESHOLD_METHOD": 2,
                                "THRESHOLD": 1, "OUTPUT_MASK": str(tmp_path / "m.tif"),
                                "OUTPUT": str(tmp_path / "s.tif")})
    assert leftovers(tmp_path, {"scene.tif"}) == []


def test_an_ensemble_member_without_the_chosen_branch_says_what_it_uses(run_alg, tmp_path, scene, model_file,
                                                                         spectral_only):
    feedback = Recorder()
    run_alg("fers:detect", {"INPUT": scene, "MODEL": model_file, "MODELS": [spectral_only], "BRANCHES": 2,
                            "OUTPUT": str(tmp_path / "s.tif")}, feedback)
    assert "Ensemble member 2 has no spatial branch: it uses its spectral branch instead." in feedback.warnings


def test_a_false_alarm_rate_uses_the_rank_of_the_enhanced_cube(run_alg, tmp_path, model_file):
    """5 raster bands interpolated up to 16 model bands: the cube's covariance has a lower rank, and its RX scores
    follow the chi-square law of that many degrees of freedom."""
    from fers.fers_core.synthetic import write_scene

    source, _ = write_scene(tmp_path / "site.tif", tmp_path / "site_gt.tif", rows=40, cols=50, bands=24, seed=1)
    feedback = Recorder()
    result = run_alg("fers:detect", {"INPUT": source, "MODEL": model_file, "BRANCHES": 1, "BANDS": "1,3,5,7,9",
                                     "THRESHOLD_METHOD": 2,
                                     "THRESHOLD": 5, "OUTPUT_MASK": str(tmp_path / "m.tif"),
                                     "OUTPUT": str(tmp_path / "s.tif")}, feedback)
    ranks = [int(m.group(1)) for line in feedback.infos + feedback.warnings
             for m in [re.search(r"singular \(rank (\d+) of 16\)", line)] if m]
    assert ranks and ranks[0] < TEST_MODEL_BANDS
    assert result["THRESHOLD_VALUE"] == pytest.approx(chi2.isf(0.05, ranks[0]))


def test_an_absolute_threshold_outside_the_scores_says_so(run_alg, tmp_path, scene):
    for threshold, what in ((1e9, "No"), (-1.0, "Every")):
        feedback = Recorder()
        result = run_alg("fers:rx", {"INPUT": scene, "THRESHOLD_METHOD": 1, "THRESHOLD": threshold,
                                     "OUTPUT_MASK": str(tmp_path / f"m{what}.tif"), "OUTPUT": str(tmp_path / "s.tif")},
                         feedback)
        assert result["ANOMALY_PIXELS"] == (0 if what == "No" else 30 * 36)
        assert any(line.startswith(f"{what} valid pixel reaches the absolute threshold") and "scores range from" in line
                   for line in feedback.warnings), feedback.warnings


@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_a_local_window_larger_than_the_raster_is_refused_before_the_work(run_alg, tmp_path, scene, model_file,
                                                                           algorithm):
    local = {"MODE": 1} if algorithm == "fers:rx" else {"DETECTOR": 1, "MODEL": model_file}
    with pytest.raises(QgsProcessingException, match=r"^The outer window \(41 px\) is larger than the 36x30 px raster, "
                                                     r"so its ring cannot keep its size: use an odd WINDOW_OUTER of "
                                                     r"at most 29"):
        run_alg(algorithm, {"INPUT": scene, "WINDOW_INNER": 5, "WINDOW_OUTER": 41, "OUTPUT": str(tmp_path / "s.tif"),
                            **local})
    assert leftovers(tmp_path, {"scene.tif"}) == []


def test_local_rx_refuses_a_mask_that_leaves_no_background(run_alg, tmp_path, scene):
    mask = write_cube(tmp_path / "everything.tif", np.ones((30, 36), np.uint8))
    with pytest.raises(QgsProcessingException, match=r"^The mask 'everything.tif' leaves out all 1080 valid pixels"):
        run_alg("fers:rx", {"INPUT": scene, "MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9, "MASK": mask,
                            "OUTPUT": str(tmp_path / "s.tif")})
    assert leftovers(tmp_path, {"scene.tif", "everything.tif"}) == []


def test_a_netcdf_rank_map_is_known_as_one(tmp_path):
    from fers.fers_core.io.windows import Window
    from fers.fers_core.io.writer import RasterWriter
    from fers.fers_core.pipeline.postprocess import is_rank_map

    with RasterWriter(tmp_path / "rank.nc", 4, 3) as writer:
        writer.write(Window(0, 0, 3, 4), np.zeros((3, 4), np.float32))
        writer.set_metadata({"fers_fusion": "rank"})
        writer.commit()
    assert is_rank_map(tmp_path / "rank.nc")


def test_a_local_mean_kernel_larger_than_the_raster_is_refused(run_alg, tmp_path, scene):
    with pytest.raises(QgsProcessingException, match=r"^The outer window \(41 px\) is larger than the 36x30 px raster"):
        run_alg("fers:rx", {"INPUT": scene, "MODE": 2, "WINDOW_INNER": 0, "WINDOW_OUTER": 41,
                            "OUTPUT": str(tmp_path / "s.tif")})
    assert leftovers(tmp_path, {"scene.tif"}) == []


def test_components_outside_local_rx_are_named_as_ignored(run_alg, tmp_path, scene):
    feedback = Recorder()
    with_components = run_alg("fers:rx", {"INPUT": scene, "COMPONENTS": 5, "OUTPUT": str(tmp_path / "a.tif")},
                              feedback)
    assert "COMPONENTS applies to local RX (MODE 1) only: it is ignored in this mode." in feedback.warnings
    plain = run_alg("fers:rx", {"INPUT": scene, "OUTPUT": str(tmp_path / "b.tif")})
    np.testing.assert_array_equal(read(with_components["OUTPUT"])[0], read(plain["OUTPUT"])[0])
