"""fers:rx's ENVI-style modes (RXD with a local mean, UTD, RXD-UTD) and local RX's COMPONENTS, through
processing.run and qgis_process."""

import subprocess

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from .conftest import ROOT
from .core.detectors.test_local_rx import brute_force_local_rx
from .core.detectors.test_rx_variants import correlated_cube, textbook
from .rasters import leftovers, read, write_cube

NODATA = -9999.0
MODES = {2: ("rxd", True), 3: ("utd", False), 4: ("rxd-utd", False), 5: ("utd", True), 6: ("rxd-utd", True)}


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(21)
    cube = correlated_cube(6, 19, 25, seed=21).astype(np.float32)
    invalid = rng.random((19, 25)) < 0.08
    cube[:, invalid] = NODATA
    excluded = (rng.random((19, 25)) < 0.1).astype(np.uint8)
    return (cube, invalid, excluded, write_cube(tmp_path / "cube.tif", cube, nodata=NODATA),
            write_cube(tmp_path / "exclude.tif", excluded))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_modes_match_the_textbook_with_nodata_and_mask(run_alg, tmp_path, scene, mode):
    cube, invalid, excluded, source, mask = scene
    result = run_alg("fers:rx", {"INPUT": source, "MASK": mask, "MODE": mode, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
                                 "OUTPUT": str(tmp_path / "out.tif")})
    scores = read(result["OUTPUT"])[0]
    variant, local = MODES[mode]
    expected = textbook(cube.astype(np.float64), ~invalid, variant, 9 if local else None, 3 if local else 0,
                        excluded != 0)
    defined = expected != NODATA
    assert np.all(scores[~defined] == NODATA) and np.all(scores[invalid] == NODATA)
    np.testing.assert_allclose(scores[defined], expected[defined], rtol=1e-4,
                               atol=1e-5 * np.abs(expected[defined]).max())


def test_local_mean_without_guard_and_object_outputs_with_a_false_alarm_rate(run_alg, tmp_path, scene):
    cube, invalid, excluded, source, mask = scene
    result = run_alg("fers:rx", {"INPUT": source, "MODE": 2, "WINDOW_INNER": 0, "WINDOW_OUTER": 7,
                                 "THRESHOLD_METHOD": 2, "THRESHOLD": 5.0, "MIN_PIXELS": 1,
                                 "OUTPUT": str(tmp_path / "out.tif"),
                                 "OUTPUT_MASK": str(tmp_path / "mask.tif"),
                                 "OUTPUT_POLYGONS": str(tmp_path / "objects.gpkg")})
    expected = textbook(cube.astype(np.float64), ~invalid, "rxd", 7, 0)
    scores = read(result["OUTPUT"])[0]
    np.testing.assert_allclose(scores[~invalid], expected[~invalid], rtol=1e-4)
    flagged = read(result["OUTPUT_MASK"])[0]
    assert result["ANOMALY_PIXELS"] == int((flagged == 1).sum()) > 0 and np.all(flagged[invalid] == 255)
    assert result["OBJECT_COUNT"] >= 1


@pytest.mark.parametrize("parameters, message", [
    ({"MODE": 2, "WINDOW_OUTER": 8}, "local mean kernel must be an odd number"),
    ({"MODE": 5, "WINDOW_INNER": 4}, "guard window must be 0 .none. or an odd"),
    ({"MODE": 6, "WINDOW_INNER": 9, "WINDOW_OUTER": 9}, "must be smaller than the local mean kernel"),
    ({"MODE": 3, "OUTPUT_MASK": "mask.tif", "THRESHOLD_METHOD": 2, "THRESHOLD": 1.0}, "no chi-square law"),
    ({"MODE": 6, "OUTPUT_MASK": "mask.tif", "THRESHOLD_METHOD": 2, "THRESHOLD": 1.0}, "no chi-square law"),
    ({"MODE": 1, "COMPONENTS": 7}, "asks for 7 principal components but only 6 bands"),
    ({"MODE": 1, "COMPONENTS": 2.5}, "neither a share of variance"),
])
def test_bad_parameters_are_refused_before_any_pass(run_alg, tmp_path, scene, parameters, message):
    parameters = dict(parameters)
    if "OUTPUT_MASK" in parameters:
        parameters["OUTPUT_MASK"] = str(tmp_path / parameters["OUTPUT_MASK"])
    with pytest.raises(QgsProcessingException, match=message):
        run_alg("fers:rx", {"INPUT": scene[3], "OUTPUT": str(tmp_path / "out.tif"), **parameters})
    assert leftovers(tmp_path, {"cube.tif", "exclude.tif"}) == [] or \
        all(name.endswith(".aux.xml") for name in leftovers(tmp_path, {"cube.tif", "exclude.tif"}))


def test_local_rx_components_through_processing(run_alg, tmp_path, scene):
    cube, invalid, _, source, _ = scene
    exact = read(run_alg("fers:rx", {"INPUT": source, "MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
                                     "OUTPUT": str(tmp_path / "exact.tif")})["OUTPUT"])[0]
    expected = brute_force_local_rx(cube.astype(np.float64), ~invalid, 3, 9)
    defined = expected != NODATA
    np.testing.assert_allclose(exact[defined], expected[defined], rtol=1e-6)
    projected = read(run_alg("fers:rx", {"INPUT": source, "MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
                                         "COMPONENTS": 6, "OUTPUT": str(tmp_path / "all.tif")})["OUTPUT"])[0]
    np.testing.assert_allclose(projected[defined], exact[defined], rtol=1e-5)  # all components: the same
    fewer = read(run_alg("fers:rx", {"INPUT": source, "MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
                                     "COMPONENTS": 0.9, "OUTPUT": str(tmp_path / "fewer.tif")})["OUTPUT"])[0]
    assert np.all(fewer[invalid] == NODATA) and not np.allclose(fewer[defined], exact[defined])


@pytest.mark.slow
def test_qgis_process_runs_the_local_mean_and_utd_modes(tmp_path):
    from fers.fers_core.detectors.metrics import roc_auc
    from fers.fers_core.synthetic import write_scene

    scene, truth = write_scene(tmp_path / "scene.tif", tmp_path / "truth.tif", rows=50, cols=60, bands=30)
    for mode, minimum in ((2, 0.9), (4, 0.5)):
        output = tmp_path / f"mode{mode}.tif"
        completed = subprocess.run(
            [str(ROOT / "scripts" / "qgis_process"), "run", "fers:rx", "--", f"INPUT={scene}", f"MODE={mode}",
             "WINDOW_INNER=3", "WINDOW_OUTER=15", f"OUTPUT={output}"],
            capture_output=True, text=True, timeout=120,
        )
        assert completed.returncode == 0, completed.stderr + completed.stdout
        scores, nodata, _, _ = read(output)
        valid = scores != nodata
        assert roc_auc(scores[valid], read(truth)[0][valid]) > minimum, mode
