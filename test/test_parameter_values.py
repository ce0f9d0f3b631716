"""The plugin's own parameter classes accept every kind of value QGIS hands over, and the algorithms read it.

QGIS calls checkValueIsAcceptable with what a widget, a model or a batch row holds: a null QVariant
from an empty file widget (PyQt5 cannot turn it into None), a layer id from a layer picked in a
combo box, a layer object, a QgsProperty from a model input or a batch expression. A custom check
that knows only `str` refuses these (the empty-model bug of the dialogs). Every parameter whose class
is defined in the plugin is checked here with each kind, then real runs read the kinds back.
"""

import os
import re

import numpy as np
import pytest

from .rasters import read

ALGORITHMS = ["fers:detect", "fers:rx", "fers:train", "fers:evaluate", "fers:import_checkpoint"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("scene")
    return write_scene(folder / "scene.tif", folder / "truth.tif", rows=30, cols=36, bands=20, seed=5)


@pytest.fixture
def project_layer(qgis_app, scene):
    """The scene as a layer of the current project, as when a user picks it in a layer combo box."""
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(scene[0], "scene")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    yield layer
    QgsProject.instance().removeAllMapLayers()


def custom_parameters():
    """(algorithm id, parameter) for every parameter of the plugin's own classes, and their clones (the modeler
    works on clones)."""
    from qgis.core import QgsApplication

    found = []
    for algorithm_id in ALGORITHMS:
        alg = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
        _keep.append(alg)  # the algorithm owns its parameters
        for parameter in alg.parameterDefinitions():
            if type(parameter).__module__.startswith("fers."):
                found += [(algorithm_id, parameter), (algorithm_id + " (clone)", parameter.clone())]
    return found


_keep = []


def test_every_custom_parameter_accepts_what_the_widgets_hand_over(qgis_app, scene, project_layer, tmp_path):
    from qgis.core import QgsProcessingParameterDefinition, QgsProcessingParameterFile, QgsProperty
    from qgis.PyQt.QtCore import QVariant

    from fers.algorithms.base import RasterLayerParameter, RasterListParameter
    from fers.algorithms.detect_algorithm import ModelPathParameter

    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"checked when loaded")
    empty = [None, "", QVariant(), QVariant(QVariant.String)]
    given = {
        RasterLayerParameter: [scene[0], project_layer, project_layer.id(), QgsProperty.fromValue(scene[0]),
                               QgsProperty.fromExpression(f"'{scene[0]}'")],
        RasterListParameter: [[scene[0]], [project_layer], [project_layer.id()], [scene[0], project_layer.id()]],
        ModelPathParameter: [str(model_file), str(tmp_path), QgsProperty.fromValue(str(model_file))],
    }
    parameters = custom_parameters()
    assert {type(p) for _, p in parameters} == set(given)  # a new custom class must be added here
    for algorithm_id, parameter in parameters:
        where = f"{algorithm_id} {parameter.name()}"
        optional = bool(parameter.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional)
        for value in empty:
            assert parameter.checkValueIsAcceptable(value) == optional, f"{where}: {value!r}"
        for value in given[type(parameter)]:
            assert parameter.checkValueIsAcceptable(value), f"{where}: {value!r}"
        if isinstance(parameter, QgsProcessingParameterFile):
            assert parameter.clone().behavior() == parameter.behavior(), where


def run(algorithm_id, parameters):
    """processing.run with a context on the current project, as the dialogs create it; (results, log)."""
    import processing
    from processing.tools import dataobjects
    from qgis.core import QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        text = ""

        def pushInfo(self, info):  # noqa: N802 (QGIS API)
            self.text += info + "\n"

    feedback = Log()
    context = dataobjects.createContext(feedback)
    return processing.run(algorithm_id, parameters, context=context, feedback=feedback), feedback.text


def test_rx_reads_a_layer_object_a_layer_id_and_a_property_as_the_file(qgis_app, scene, project_layer, tmp_path):
    reference = read(run("fers:rx", {"INPUT": scene[0], "OUTPUT": str(tmp_path / "path.tif")})[0]["OUTPUT"])[0]
    for name, value in (("layer", project_layer), ("id", project_layer.id()), ("property",
                                                                            _property(scene[0]))):
        result, _ = run("fers:rx", {"INPUT": value, "OUTPUT": str(tmp_path / f"{name}.tif")})
        np.testing.assert_array_equal(read(result["OUTPUT"])[0], reference, err_msg=name)


def _property(value):
    from qgis.core import QgsProperty

    return QgsProperty.fromValue(value)


def test_detect_reads_an_empty_model_as_the_bundled_one_and_a_property_as_its_file(qgis_app, scene, tmp_path,
                                                                                  model_file):
    from qgis.PyQt.QtCore import QVariant

    _, log = run("fers:detect", {"INPUT": scene[0], "MODEL": QVariant(QVariant.String),
                                 "OUTPUT": str(tmp_path / "bundled.tif")})
    assert "weights/fers_default.pt" in log
    _, log = run("fers:detect", {"INPUT": scene[0], "MODEL": _property(model_file), "OUTPUT": str(tmp_path / "p.tif")})
    assert f"Model: {model_file}" in log


def test_evaluate_reads_score_layers_picked_in_the_project(qgis_app, scene, project_layer, tmp_path):
    scores = run("fers:rx", {"INPUT": scene[0], "OUTPUT": str(tmp_path / "rx.tif")})[0]["OUTPUT"]
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(scores, "Global RX of the scene")
    QgsProject.instance().addMapLayer(layer)
    by_path, path_log = run("fers:evaluate", {"SCORES": [scores], "GROUND_TRUTH": scene[1],
                                              "OUTPUT_HTML": str(tmp_path / "a.html")})
    by_layer, layer_log = run("fers:evaluate", {"SCORES": [layer.id()], "GROUND_TRUTH": scene[1],
                                                "OUTPUT_HTML": str(tmp_path / "b.html")})
    assert by_layer["AUC"] == by_path["AUC"] > 0.5
    for log, report in ((path_log, "a.html"), (layer_log, "b.html")):  # a path of a project layer: the layer's name
        assert "Global RX of the scene: AUC" in log and "Global RX of the scene" in (tmp_path / report).read_text()


@pytest.mark.parametrize("algorithm, values, message", [
    ("fers:train", {"EPOCHS": 0}, r"^Epochs \(EPOCHS\) must be at least 1 \(got 0\)\.$"),
    ("fers:train", {"MODEL_BANDS": 10001}, r"^Model bands \(MODEL_BANDS\) must be at most 10000 \(got 10001\)\.$"),
    ("fers:train", {"EPOCHS": "abc"}, r"^Epochs \(EPOCHS\): 'abc' is not a number\.$"),
    ("fers:train", {"INPUTS": ["/no/such.tif"]}, r"^Background rasters \(INPUTS\): '/no/such.tif' is neither an "
                                                 r"existing file nor a layer of the project; check the path\.$"),
    ("fers:detect", {"TILE_SIZE": 8}, r"^Spatial tile size \(px\) \(TILE_SIZE\) must be at least 16 \(got 8\)\.$"),
    ("fers:detect", {"INPUT_NODATA": float("inf")}, r"\(INPUT_NODATA\) must be a finite number \(got inf\)\.$"),
    ("fers:rx", {"INPUT": "/no/such.tif"}, r"^Hyperspectral raster \(INPUT\): '/no/such.tif' is neither"),
    ("fers:evaluate", {"SCORES": ["/no/such.tif"]}, r"^Score rasters \(SCORES\): '/no/such.tif' is neither"),
    ("fers:train", {"EPOCHS": 1.5}, r"^Epochs \(EPOCHS\) must be a whole number \(got 1.5\)\.$"),
    ("fers:detect", {"TILE_SIZE": "64.5"}, r"\(TILE_SIZE\) must be a whole number \(got 64.5\)\.$"),
    ("fers:rx", {"INPUT_NODATA": "abc"}, r"\(INPUT_NODATA\): 'abc' is not a number\.$"),
    ("fers:train", {"INPUT_NODATA": "-9999x"}, r"\(INPUT_NODATA\): '-9999x' is not a number\.$"),
])
def test_a_value_qgis_refuses_is_named_with_why(qgis_app, scene, tmp_path, algorithm, values, message):
    """QGIS's own check says only "Incorrect parameter value for X"; the algorithms say what is wrong with it."""
    from qgis.core import QgsApplication, QgsProcessingContext

    base = {"fers:train": {"INPUTS": [scene[0]], "OUTPUT_MODEL": str(tmp_path / "m.pt")},
            "fers:detect": {"INPUT": scene[0], "OUTPUT": str(tmp_path / "s.tif")},
            "fers:rx": {"INPUT": scene[0], "OUTPUT": str(tmp_path / "s.tif")},
            "fers:evaluate": {"SCORES": [scene[0]], "GROUND_TRUTH": scene[1],
                              "OUTPUT_HTML": str(tmp_path / "r.html")}}[algorithm]
    alg = QgsApplication.processingRegistry().algorithmById(algorithm)
    ok, reason = alg.checkParameterValues({**base, **values}, QgsProcessingContext())
    assert not ok
    assert re.search(message, reason), reason


def test_a_parameter_name_the_algorithm_lacks_is_named_with_the_closest_ones(qgis_app, scene, tmp_path):
    import processing

    from .conftest import Recorder

    log = Recorder()
    result = processing.run("fers:rx", {"INPUT": scene[0], "OUTPUT": str(tmp_path / "s.tif"), "THRESHHOLD": 5,
                                        "colour": 1}, feedback=log)
    assert read(result["OUTPUT"])[0].shape == (30, 36)  # the run goes on: QGIS drops the names it does not know
    assert log.warnings[:2] == [
        "'THRESHHOLD' is not a parameter of fers:rx, so it was ignored; did you mean THRESHOLD or THRESHOLD_METHOD?",
        "'colour' is not a parameter of fers:rx, so it was ignored; its parameters are INPUT, BANDS, MASK, "
        "INPUT_NODATA, MODE, WINDOW_INNER, WINDOW_OUTER, COMPONENTS, THRESHOLD_METHOD, THRESHOLD, MIN_PIXELS, "
        "MEMORY_MB, SCHEDULER, OUTPUT, OUTPUT_MASK, OUTPUT_POLYGONS."]


@pytest.mark.parametrize("values, message", [
    ({"INPUT": "/no/such.tif"}, "is neither an existing file nor a layer of the project"),
    ({"OUTPUT_POLYGONS": "objects.shp"}, "give the output a .gpkg name"),
])
def test_a_run_without_qgis_parameter_check_refuses_as_the_dialog_does(qgis_app, scene, tmp_path, values, message):
    """QGIS 3.22's batch dialog and models call the algorithm's run() without its parameter check: the algorithm
    makes the same check itself, before any work, with the same message."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback

    class Errors(QgsProcessingFeedback):
        errors = []

        def reportError(self, text, fatalError=False):  # noqa: N802, N803 (QGIS API)
            self.errors.append(text)

    parameters = {"INPUT": scene[0], "OUTPUT": str(tmp_path / "out" / "s.tif"), **values}
    if "OUTPUT_POLYGONS" in values:
        parameters["OUTPUT_POLYGONS"] = str(tmp_path / "out" / values["OUTPUT_POLYGONS"])
    alg = QgsApplication.processingRegistry().createAlgorithmById("fers:rx")
    log = Errors()
    results, ok = alg.run(parameters, QgsProcessingContext(), log)
    assert not ok and not results
    assert any(message in line for line in log.errors), log.errors
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []  # nothing was computed


def test_a_project_layer_whose_file_is_gone_is_named_with_its_source(qgis_app, scene, tmp_path):
    import shutil

    from processing.tools import dataobjects
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    moved = str(shutil.copy(scene[0], tmp_path / "moved.tif"))
    layer = QgsRasterLayer(moved, "Flight line 7")
    QgsProject.instance().addMapLayer(layer)
    try:
        os.remove(moved)
        layer.setDataSource(moved, "Flight line 7", "gdal")  # as a project opens when its file has gone
        assert not layer.isValid()
        alg = QgsApplication.processingRegistry().algorithmById("fers:rx")
        ok, reason = alg.checkParameterValues({"INPUT": layer.id(), "OUTPUT": str(tmp_path / "s.tif")},
                                              dataobjects.createContext())
        assert not ok
        assert re.search(r"the project's layer 'Flight line 7' cannot be read: its source '.*moved.tif' is missing",
                         reason), reason
    finally:
        QgsProject.instance().removeAllMapLayers()


def test_two_project_layers_of_one_name_are_numbered_in_the_evaluation(qgis_app, scene, tmp_path):
    """Their folders would say nothing (QGIS's temporary outputs sit in folders named by UUIDs)."""
    import csv

    from qgis.core import QgsProject, QgsRasterLayer

    paths = []
    for folder in ("0f3c", "9ab1"):
        (tmp_path / folder).mkdir()
        paths.append(run("fers:rx", {"INPUT": scene[0], "OUTPUT": str(tmp_path / folder / "OUTPUT.tif")})[0]["OUTPUT"])
    try:
        for path in paths:
            QgsProject.instance().addMapLayer(QgsRasterLayer(path, "RX scores"))
        run("fers:evaluate", {"SCORES": paths, "GROUND_TRUTH": scene[1], "OUTPUT_HTML": str(tmp_path / "r.html"),
                              "OUTPUT_CSV": str(tmp_path / "r.csv")})
        with open(tmp_path / "r.csv", newline="") as stream:
            assert {row["raster"] for row in csv.DictReader(stream)} == {"RX scores (1)", "RX scores (2)"}
    finally:
        QgsProject.instance().removeAllMapLayers()
