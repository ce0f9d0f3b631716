"""fers:rx through processing.run and qgis_process, against a float64 reference."""

import re
import subprocess

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from .conftest import ROOT, SHARED, CancelAt, require_scenes
from .rasters import GEOTRANSFORM, leftovers, read, rx_reference, utm_wkt, write_cube


def random_cube(rows=30, cols=40, bands=8, seed=1):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((bands, bands))
    return (rng.standard_normal((rows * cols, bands)) @ mixing + 50).T.reshape(bands, rows, cols)


@pytest.mark.slow
def test_scores_equal_float64_reference(run_alg, tmp_path):
    cube = random_cube().astype(np.float32)
    source = write_cube(tmp_path / "cube.tif", cube)
    result = run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx.tif")})
    scores, nodata, _, _ = read(result["OUTPUT"])
    expected = rx_reference(cube.reshape(cube.shape[0], -1).T.astype(np.float64)).reshape(scores.shape)
    np.testing.assert_allclose(scores, expected, rtol=2e-4, atol=1e-4)
    assert nodata == -9999


def test_georeference_and_nodata_preserved(run_alg, tmp_path):
    source = write_cube(tmp_path / "cube.tif", random_cube().astype(np.float32))
    result = run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx.tif")})
    scores, nodata, geotransform, projection = read(result["OUTPUT"])
    assert scores.shape == (30, 40) and scores.dtype == np.float32
    assert geotransform == GEOTRANSFORM
    assert "32632" in projection and projection == utm_wkt()
    assert nodata == -9999


def test_nodata_and_nan_pixels_are_nodata_and_excluded(run_alg, tmp_path):
    cube = random_cube().round().astype(np.int16)
    cube[2, 0:3, 0:5] = -1  # nodata in one band only
    source = write_cube(tmp_path / "int.tif", cube, nodata=-1)
    result = run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx.tif")})
    scores, _, _, _ = read(result["OUTPUT"])
    invalid = np.zeros((30, 40), bool)
    invalid[0:3, 0:5] = True
    assert np.all(scores[invalid] == -9999)
    pixels = cube.reshape(cube.shape[0], -1).T.astype(np.float64)
    expected = rx_reference(pixels[~invalid.ravel()])
    np.testing.assert_allclose(scores[~invalid], expected, rtol=2e-4, atol=1e-4)

    floats = random_cube().astype(np.float32)
    floats[0, 5, 5] = np.nan
    floats[3, 7, 9] = np.inf
    source = write_cube(tmp_path / "nan.tif", floats)
    scores = read(run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx_nan.tif")})["OUTPUT"])[0]
    assert scores[5, 5] == -9999 and scores[7, 9] == -9999
    assert np.isfinite(scores).all() and (scores[scores != -9999] >= 0).all()


def test_mask_excludes_pixels_from_statistics_but_scores_them(run_alg, tmp_path):
    cube = random_cube().astype(np.float32)
    cube[:, 10:13, 10:13] += 40  # a target
    mask = np.zeros((30, 40), np.uint8)
    mask[10:13, 10:13] = 1
    source = write_cube(tmp_path / "cube.tif", cube)
    mask_path = write_cube(tmp_path / "mask.tif", mask)
    result = run_alg("fers:rx", {"INPUT": source, "MASK": mask_path, "OUTPUT": str(tmp_path / "rx.tif")})
    scores = read(result["OUTPUT"])[0]
    pixels = cube.reshape(cube.shape[0], -1).T.astype(np.float64)
    expected = rx_reference(pixels, background=pixels[mask.ravel() == 0]).reshape(30, 40)
    np.testing.assert_allclose(scores, expected, rtol=2e-4, atol=1e-3)
    unmasked = read(run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx2.tif")})["OUTPUT"])[0]
    assert scores[11, 11] > 2 * unmasked[11, 11]  # the target no longer inflates the covariance


def test_band_selection(run_alg, tmp_path):
    cube = random_cube().astype(np.float32)
    source = write_cube(tmp_path / "cube.tif", cube)
    result = run_alg("fers:rx", {"INPUT": source, "BANDS": [1, 3, 4], "OUTPUT": str(tmp_path / "rx.tif")})
    scores = read(result["OUTPUT"])[0]
    expected = rx_reference(cube[[0, 2, 3]].reshape(3, -1).T.astype(np.float64)).reshape(30, 40)
    np.testing.assert_allclose(scores, expected, rtol=2e-4, atol=1e-4)


def test_singular_covariance_uses_pseudo_inverse(run_alg, tmp_path):
    cube = random_cube(bands=6).astype(np.float64)
    cube = np.concatenate([cube, cube[:2], np.full((1, 30, 40), 7.0)])  # duplicate and constant bands
    source = write_cube(tmp_path / "singular.tif", cube)
    scores = read(run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx.tif")})["OUTPUT"])[0]
    expected = rx_reference(cube[:6].reshape(6, -1).T).reshape(30, 40)
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-3)


def test_fewer_pixels_than_bands(run_alg, tmp_path):
    """12 pixels in 20 bands: the pseudo-inverse gives every pixel (n - 1)^2 / n, so the run is refused."""
    cube = np.random.default_rng(3).standard_normal((20, 3, 4)).astype(np.float32)
    expected = rx_reference(cube.reshape(20, -1).T.astype(np.float64))
    np.testing.assert_allclose(expected, 11 ** 2 / 12)  # what the scores would all be
    source = write_cube(tmp_path / "tiny.tif", cube)
    with pytest.raises(QgsProcessingException, match=r"^Only 12 valid background pixels for 20 features"):
        run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx.tif")})
    assert leftovers(tmp_path, {"tiny.tif"}) == []
    scores = read(run_alg("fers:rx", {"INPUT": source, "BANDS": "1-10", "OUTPUT": str(tmp_path / "rx.tif")})
                  ["OUTPUT"])[0]
    reference = rx_reference(cube[:10].reshape(10, -1).T.astype(np.float64)).reshape(3, 4)
    np.testing.assert_allclose(scores, reference, rtol=1e-3, atol=1e-3)


def test_all_nodata_gets_a_clear_error_and_no_output(run_alg, tmp_path):
    source = write_cube(tmp_path / "empty.tif", np.full((4, 10, 10), -5, np.int16), nodata=-5)
    with pytest.raises(QgsProcessingException, match="No valid pixels"):
        run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(tmp_path / "rx.tif")})
    assert leftovers(tmp_path, {"empty.tif"}) == []


def test_band_out_of_range_is_refused(run_alg, tmp_path):
    source = write_cube(tmp_path / "cube.tif", random_cube().astype(np.float32))
    with pytest.raises(QgsProcessingException):
        run_alg("fers:rx", {"INPUT": source, "BANDS": [2, 99], "OUTPUT": str(tmp_path / "rx.tif")})
    assert not (tmp_path / "rx.tif").exists()


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_cancel_leaves_no_output(run_alg, tmp_path, percent):
    source = write_cube(tmp_path / "cube.tif", random_cube(rows=400, cols=400).astype(np.float32))
    feedback = CancelAt(percent)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_alg("fers:rx", {"INPUT": source, "MEMORY_MB": 1, "OUTPUT": str(tmp_path / "rx.tif")}, feedback)
    assert feedback.seen and max(feedback.seen) >= percent
    assert leftovers(tmp_path, {"cube.tif"}) == []


def test_missing_output_folder_is_created(run_alg, tmp_path):
    source = write_cube(tmp_path / "cube.tif", random_cube().astype(np.float32))
    output = tmp_path / "new" / "folder" / "rx.tif"
    run_alg("fers:rx", {"INPUT": source, "OUTPUT": str(output)})
    assert output.exists()


def shared_rx_table():
    """Plain global RX AUCs from the table in ../shared/data/README.md."""
    text = (SHARED / "data" / "README.md").read_text()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| ([a-z0-9-]+) .*\| (0\.\d{4}) \|$", text, re.M)}


@pytest.mark.slow
def test_real_scenes_reproduce_published_plain_rx_auc(run_alg, tmp_path):
    scenes = require_scenes()
    from fers.fers_core.detectors.metrics import roc_auc

    table = shared_rx_table()
    assert len(table) >= 11
    for name, expected in table.items():
        result = run_alg("fers:rx", {"INPUT": str(scenes / f"{name}.tif"), "OUTPUT": str(tmp_path / f"{name}.tif")})
        scores = read(result["OUTPUT"])[0]
        truth = read(scenes / f"{name}_gt.tif")[0]
        assert abs(roc_auc(scores, truth) - expected) <= 0.0005, name


def test_qgis_process_runs_rx_on_the_demo_scene(tmp_path):
    from fers.fers_core.detectors.metrics import roc_auc
    from fers.fers_core.synthetic import write_scene

    scene, truth = write_scene(tmp_path / "scene.tif", tmp_path / "truth.tif", rows=60, cols=70, bands=40)
    output = tmp_path / "out" / "rx.tif"
    completed = subprocess.run(
        [str(ROOT / "scripts" / "qgis_process"), "run", "fers:rx", "--", f"INPUT={scene}", f"OUTPUT={output}"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    scores, nodata, geotransform, _ = read(output)
    valid = scores != nodata
    assert roc_auc(scores[valid], read(truth)[0][valid]) > 0.95
    assert geotransform[1] == 4.0
