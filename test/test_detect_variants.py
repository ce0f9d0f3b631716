"""fers:detect's RX variants on the enhanced cube (DETECTOR 2-4) through processing.run."""

import re

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException

from .rasters import leftovers, read
from .test_detect_algorithm import detect, scene  # noqa: F401 (fixtures)

VARIANT_MODES = {2: 2, 3: 3, 4: 4}  # fers:detect DETECTOR -> the fers:rx MODE computing the same on a cube


@pytest.mark.slow
@pytest.mark.parametrize("detector, inner", [(2, 3), (3, 3), (4, 3), (2, 0)])  # 0: no guard, as in fers:rx
def test_variants_equal_fers_rx_on_the_enhanced_cube(run_alg, tmp_path, scene, model_file, detector,  # noqa: F811
                                                     inner):
    result = detect(run_alg, tmp_path, scene[0], model_file, "v.tif", BRANCHES=1, DETECTOR=detector,
                    WINDOW_INNER=inner, WINDOW_OUTER=9, OUTPUT_SPECTRAL=str(tmp_path / "cube.tif"))
    direct = run_alg("fers:rx", {"INPUT": result["OUTPUT_SPECTRAL"], "MODE": VARIANT_MODES[detector],
                                 "WINDOW_INNER": inner, "WINDOW_OUTER": 9, "OUTPUT": str(tmp_path / "direct.tif")})
    ours, expected = read(result["OUTPUT"])[0], read(direct["OUTPUT"])[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert leftovers(tmp_path, {"v.tif", "cube.tif", "direct.tif"}) == []


@pytest.mark.slow
def test_local_mean_with_product_fusion_and_objects(run_alg, tmp_path, scene, model_file):  # noqa: F811
    result = detect(run_alg, tmp_path, scene[0], model_file, "lp.tif", DETECTOR=2, FUSION=2, WINDOW_INNER=3,
                    WINDOW_OUTER=9, THRESHOLD_METHOD=0, THRESHOLD=1.0, MIN_PIXELS=1,
                    OUTPUT_MASK=str(tmp_path / "mask.tif"))
    scores = read(result["OUTPUT"])[0]
    valid = scores != -9999
    assert 0 <= scores[valid].min() and scores[valid].max() <= 1.0
    assert result["ANOMALY_PIXELS"] >= int(valid.sum() * 0.01)
    assert leftovers(tmp_path, {"lp.tif", "mask.tif"}) == []


@pytest.mark.slow
def test_the_log_of_a_local_detector_names_no_temporary_file(run_alg, tmp_path, scene, model_file):  # noqa: F811
    from .conftest import Recorder

    log = Recorder()
    run_alg("fers:detect", {"INPUT": scene[0], "MODEL": model_file, "DETECTOR": 2, "WINDOW_INNER": 3,
                            "WINDOW_OUTER": 9, "OUTPUT": str(tmp_path / "v.tif")}, feedback=log)
    lines = log.infos + log.warnings
    assert any(line.startswith("Spatial branch: Wrote an intermediate raster in ") for line in lines)
    assert any(line.startswith("RXD with a local mean: ") for line in lines)  # the stage's time, not 'rxd-local-mean'
    assert not [line for line in lines if ".partial-" in line]
    assert [line for line in lines if line.startswith("Spatial branch: RXD")] and \
        [line for line in lines if line.startswith("Spectral branch: RXD")]  # product fusion: which cube is which
    dataset = gdal.Open(scene[0])
    for cols, rows in re.findall(r"tile\(s\) of up to (\d+)x(\d+) pixels", "\n".join(lines)):
        assert int(cols) <= dataset.RasterXSize and int(rows) <= dataset.RasterYSize


@pytest.mark.parametrize("parameters, message", [
    ({"DETECTOR": 2, "WINDOW_OUTER": 8}, "local mean kernel must be an odd number"),
    ({"DETECTOR": 2, "WINDOW_INNER": 9, "WINDOW_OUTER": 9}, "must be smaller than the local mean kernel"),
    ({"DETECTOR": 3, "OUTPUT_MASK": "m.tif", "FUSION": 1, "THRESHOLD_METHOD": 2, "THRESHOLD": 1.0},
     "no chi-square law"),
])
def test_bad_parameters_are_refused(run_alg, tmp_path, scene, model_file, parameters, message):  # noqa: F811
    parameters = dict(parameters)
    if "OUTPUT_MASK" in parameters:
        parameters["OUTPUT_MASK"] = str(tmp_path / parameters["OUTPUT_MASK"])
    with pytest.raises(QgsProcessingException, match=message):
        detect(run_alg, tmp_path, scene[0], model_file, "bad.tif", **parameters)
    assert leftovers(tmp_path, set()) == []
