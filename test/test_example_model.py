"""The example model models/detect_mask_polygons_report.model3: current, readable in the modeler, shipped in
the Toolbox as fers:detect_mask_polygons_report, and run from its dialog and qgis_process."""

import math
import subprocess
import sys

import numpy as np
import pytest
from osgeo import ogr

from .conftest import ROOT
from .rasters import read

MODEL = ROOT / "models" / "detect_mask_polygons_report.model3"
MODEL_ID = "fers:detect_mask_polygons_report"
INPUTS = ["scene", "ground_truth", "detector", "threshold_percent", "min_pixels"]  # as an analyst fills them
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


def toolbox_model():
    from qgis.core import QgsApplication

    model = QgsApplication.processingRegistry().createAlgorithmById(MODEL_ID)
    assert model is not None, f"{MODEL_ID} is not in the Processing registry"
    return model


def test_model_loads_and_is_valid(qgis_app):
    model = load_model()
    assert set(model.childAlgorithms()) == {"detect", "evaluate"}
    for child_id, child in model.childAlgorithms().items():
        assert child.algorithm() is not None, child.algorithmId()
        ok, issues = model.validateChildAlgorithm(child_id)
        assert ok, issues
    assert {p.name() for p in model.parameterDefinitions()} == set(INPUTS) | OUTPUTS
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


def test_help_names_what_the_model_runs(qgis_app):
    model = toolbox_model()
    help_text = model.shortHelpString()
    assert "fers:detect" in help_text and "fers:evaluate" in help_text
    assert "with RX" not in help_text
    for name in INPUTS:
        assert model.parameterDefinition(name).help(), name


@pytest.mark.slow
def test_qgis_process_help_is_plain_text_with_every_input():
    completed = subprocess.run([str(ROOT / "scripts" / "qgis_process"), "help", MODEL_ID], capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    description = completed.stdout.split("Arguments")[0]
    assert "<" not in description and "fers:detect" in description
    for label in ("Hyperspectral scene", "Ground truth", "Detector on the enhanced cube", "Anomaly mask",
                  "Anomaly objects", "Evaluation report"):
        assert f"{label}" in description, label


def test_inputs_are_in_the_order_an_analyst_fills_them(qgis_app):
    for model in (load_model(), toolbox_model()):
        assert [p.name() for p in model.parameterDefinitions() if not p.isDestination()] == INPUTS


def test_detector_input_sets_the_detector_on_the_enhanced_cube(qgis_app):
    from fers.algorithms.detect_algorithm import DETECTOR_OPTIONS

    model = load_model()
    detector = model.parameterDefinition("detector")
    assert detector.options() == DETECTOR_OPTIONS
    assert "RX background" not in detector.description()
    sources = model.childAlgorithm("detect").parameterSources()["DETECTOR"]
    assert [s.parameterName() for s in sources] == ["detector"]


def test_unexposed_detect_settings_are_its_defaults(qgis_app):
    """Precision (and every other setting the model does not expose) is fers:detect's default, not pinned."""
    model = load_model()
    child = model.childAlgorithm("detect")
    exposed = {"INPUT", "DETECTOR", "THRESHOLD", "MIN_PIXELS"}
    for name, sources in child.parameterSources().items():
        if name not in exposed and name != "THRESHOLD_METHOD":
            default = child.algorithm().parameterDefinition(name).defaultValue()
            assert [s.staticValue() for s in sources] == [default], name
    from fers.fers_core.choices import PRECISION_CHOICES

    assert PRECISION_CHOICES[child.parameterSources()["PRECISION"][0].staticValue()] == "auto"


def test_components_do_not_overlap_in_the_modeler(qgis_app):
    """The real modeler scene: no component box (with its In/Out labels) touches another."""
    from qgis.core import QgsProcessingContext
    from qgis.gui import QgsModelGraphicsScene

    model = load_model()
    scene = QgsModelGraphicsScene()
    scene.setModel(model)
    scene.createItems(model, QgsProcessingContext())
    for item in scene.items():
        item.setSelected(True)
    components = scene.selectedComponentItems()
    assert len(components) == len(INPUTS) + len(OUTPUTS) + 2  # inputs, outputs and the two algorithms
    for item in components:
        overlapping = [other.component().description() for other in scene.collidingItems(item) if other in components]
        assert overlapping == [], f"{item.component().description() or 'an input'} overlaps {overlapping}"


def test_an_unreadable_model_file_leaves_the_other_algorithms(qgis_app, monkeypatch, tmp_path):
    from qgis.core import QgsApplication

    from fers.algorithms import example_model

    provider = QgsApplication.processingRegistry().providerById("fers")
    monkeypatch.setattr(example_model, "MODEL_FILE", str(tmp_path / "missing.model3"))
    provider.refreshAlgorithms()
    try:
        listed = {algorithm.id() for algorithm in provider.algorithms()}
        assert "fers:detect" in listed and "fers:evaluate" in listed and MODEL_ID not in listed
    finally:
        monkeypatch.undo()
        provider.refreshAlgorithms()
    assert toolbox_model().attached()


def check_outputs(scene, truth, scores_path, mask_path, objects_path, report_path, percent, min_pixels):
    from fers.fers_core.detectors.metrics import roc_auc

    scores, nodata, _, _ = read(scores_path)
    valid = scores != nodata
    assert roc_auc(scores[valid], read(truth)[0][valid]) > 0.95
    mask = read(mask_path)[0]
    assert (mask == 1).sum() == math.ceil(valid.sum() * percent / 100)  # continuous scores: no ties
    assert np.all(mask[~valid] == 255)
    dataset = ogr.Open(str(objects_path))
    layer = dataset.GetLayer(0)
    assert layer.GetFeatureCount() >= 1
    sizes = [f["pixels"] for f in layer]
    assert min(sizes) >= min_pixels
    if min_pixels == 1:
        assert sum(sizes) == (mask == 1).sum()  # every anomaly pixel is in an object
    page = open(report_path, encoding="utf-8").read()
    assert "<polyline" in page and "AUC" in page


@pytest.mark.slow
def test_toolbox_model_dialog_with_only_required_inputs_writes_mask_and_objects(qgis_app, demo_scene):
    """The Toolbox's dialog with scene and ground truth filled: every output is created (none skipped)."""
    import processing
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    scene, truth = demo_scene
    model = toolbox_model()
    assert model.id() == MODEL_ID
    dialog = AlgorithmDialog(model)
    dialog.setParameters({"scene": scene, "ground_truth": truth})
    parameters = dialog.createProcessingParameters()
    assert all(parameters.get(name) is not None for name in OUTPUTS), parameters
    results = processing.run(MODEL_ID, parameters, context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    percent = model.parameterDefinition("threshold_percent").defaultValue()
    min_pixels = model.parameterDefinition("min_pixels").defaultValue()
    check_outputs(scene, truth, results["detect:scores"], results["detect:mask"], results["detect:objects"],
                  results["evaluate:report"], percent, min_pixels)


@pytest.mark.slow
def test_model_runs_through_qgis_process_by_its_id(tmp_path, demo_scene):
    scene, truth = demo_scene
    out = tmp_path / "out"
    out.mkdir()
    arguments = [
        f"scene={scene}", f"ground_truth={truth}", "detector=1", "threshold_percent=1", "min_pixels=1",
        f"detect:scores={out / 'scores.tif'}", f"detect:mask={out / 'mask.tif'}",
        f"detect:objects={out / 'objects.gpkg'}", f"evaluate:report={out / 'report.html'}",
    ]
    completed = subprocess.run([str(ROOT / "scripts" / "qgis_process"), "run", MODEL_ID, "--", *arguments],
                               capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr + completed.stdout
    check_outputs(scene, truth, out / "scores.tif", out / "mask.tif", out / "objects.gpkg", out / "report.html",
                  1.0, 1)
