"""The example model models/detect_mask_polygons_report.model3: it loads, is current, and runs."""

import math
import subprocess
import sys

import numpy as np
import pytest
from osgeo import ogr

from .conftest import ROOT
from .rasters import read

MODEL = ROOT / "models" / "detect_mask_polygons_report.model3"
INPUTS = {"scene", "ground_truth", "mode", "threshold_percent", "min_pixels"}
OUTPUTS = {"detect:scores", "detect:mask", "detect:objects", "evaluate:report"}


@pytest.fixture(scope="module")
def demo_scene(tmp_path_factory):
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("scene")
    return write_scene(folder / "scene.tif", folder / "truth.tif", rows=60, cols=70, bands=40)


def load_model(path=MODEL):
    from qgis.core import QgsProcessingModelAlgorithm

    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(path)), f"cannot load {path}"
    return model


def test_model_loads_and_is_valid(qgis_app):
    model = load_model()
    assert set(model.childAlgorithms()) == {"detect", "evaluate"}
    for child_id, child in model.childAlgorithms().items():
        assert child.algorithm() is not None, child.algorithmId()
        ok, issues = model.validateChildAlgorithm(child_id)
        assert ok, issues
    assert {p.name() for p in model.parameterDefinitions()} == INPUTS | OUTPUTS
    sources = model.childAlgorithm("evaluate").parameterSources()["SCORES"]
    assert [(s.outputChildId(), s.outputName()) for s in sources] == [("detect", "OUTPUT")]


def test_model_file_matches_the_script(qgis_app, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_example_model
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    fresh = tmp_path / "fresh.model3"
    assert make_example_model.build_model().toFile(str(fresh))
    assert load_model().toVariant() == load_model(fresh).toVariant(), (
        "models/detect_mask_polygons_report.model3 is stale: rerun scripts/make_example_model.py"
    )


def check_outputs(scene, truth, scores_path, mask_path, objects_path, report_path, percent):
    from fers.fers_core.metrics import roc_auc

    scores, nodata, _, _ = read(scores_path)
    valid = scores != nodata
    assert roc_auc(scores[valid], read(truth)[0][valid]) > 0.95
    mask = read(mask_path)[0]
    assert (mask == 1).sum() == math.ceil(valid.sum() * percent / 100)  # continuous scores: no ties
    assert np.all(mask[~valid] == 255)
    dataset = ogr.Open(str(objects_path))
    layer = dataset.GetLayer(0)
    assert layer.GetFeatureCount() >= 1
    assert sum(f["pixels"] for f in layer) == (mask == 1).sum()  # min_pixels 1: every anomaly pixel
    page = open(report_path, encoding="utf-8").read()
    assert "<polyline" in page and "AUC" in page


def test_model_runs_in_process(run_alg, tmp_path, demo_scene):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    scene, truth = demo_scene
    parameters = {
        "scene": scene, "ground_truth": truth, "mode": 1, "threshold_percent": 1.0, "min_pixels": 1,
        "detect:scores": str(tmp_path / "scores.tif"), "detect:mask": str(tmp_path / "mask.tif"),
        "detect:objects": str(tmp_path / "objects.gpkg"), "evaluate:report": str(tmp_path / "report.html"),
    }
    results = processing.run(load_model(), parameters, context=QgsProcessingContext(),
                             feedback=QgsProcessingFeedback())
    assert OUTPUTS <= set(results)
    check_outputs(scene, truth, results["detect:scores"], results["detect:mask"], results["detect:objects"],
                  results["evaluate:report"], 1.0)


def test_model_runs_through_qgis_process(tmp_path, demo_scene):
    scene, truth = demo_scene
    out = tmp_path / "out"
    out.mkdir()
    arguments = [
        f"scene={scene}", f"ground_truth={truth}", "mode=0", "threshold_percent=0.5", "min_pixels=1",
        f"detect:scores={out / 'scores.tif'}", f"detect:mask={out / 'mask.tif'}",
        f"detect:objects={out / 'objects.gpkg'}",
        f"evaluate:report={out / 'report.html'}",
    ]
    completed = subprocess.run([str(ROOT / "scripts" / "qgis_process"), "run", str(MODEL), "--", *arguments],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr + completed.stdout
    check_outputs(scene, truth, out / "scores.tif", out / "mask.tif", out / "objects.gpkg", out / "report.html", 0.5)
