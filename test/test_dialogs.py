"""The desktop: every algorithm runs from QGIS's own Processing dialogs, as an analyst runs it.

Each test builds the real dialog the Toolbox opens (processing.gui.AlgorithmDialog, the batch
dialog, a model's dialog) in the offscreen GUI application of conftest.py, fills only the required
inputs through the dialog's own widget wrappers (setParameterValue, what choosing a file in the
widget does), leaves every other parameter at what the widget shows by default, collects the
parameters as the Run button does (createProcessingParameters, which refuses a value the
parameter's checkValueIsAcceptable rejects) and runs them through the dialog's own run path: a
QgsProcessingAlgRunnerTask, then QGIS loading the results into the project with the plugin's
styles. The rasters are small synthetic ones, so each run takes a second or two.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from .rasters import read, write_cube

TIMEOUT_S = 180


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 64 x 72 px, 30-band scene and its truth."""
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("scene")
    return write_scene(folder / "scene.tif", folder / "truth.tif", rows=64, cols=72, bands=30, seed=4)


@pytest.fixture
def project(qgis_app):
    """QGIS's current project, where the dialogs load their results; emptied before and after the test."""
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.clear()
    yield project
    project.clear()


_opened = []  # the dialogs of the running test, deleted when it ends


@pytest.fixture(autouse=True)
def delete_dialogs():
    """Close and delete the test's dialogs while the application runs (Qt widgets left to the garbage
    collector at exit crash the interpreter)."""
    yield
    from qgis.PyQt import sip
    from qgis.PyQt.QtCore import QCoreApplication, QEvent

    wait_for_tasks()

    while _opened:
        widget = _opened.pop()
        if sip.isdeleted(widget):  # a dialog that closed after its run deletes itself
            continue
        widget.close()
        widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


def wait_for_tasks(timeout_s=30):
    """Wait until QGIS's task manager runs no task (the batch dialog's progress task ends when Python frees it)."""
    import gc
    import time

    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication

    gc.collect()  # frees the batch dialog's QgsScopedProxyProgressTask, still referenced by a signal connection
    deadline = time.monotonic() + timeout_s
    while QgsApplication.taskManager().countActiveTasks() and time.monotonic() < deadline:
        QCoreApplication.processEvents()
    assert QgsApplication.taskManager().countActiveTasks() == 0, "a QGIS task is still running"


def opened(widget):
    _opened.append(widget)
    return widget


def algorithm(algorithm_id):
    from qgis.core import QgsApplication

    found = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    assert found is not None, f"{algorithm_id} is not registered"
    return found


def toolbox_dialog(alg):
    """The dialog the Toolbox opens for an algorithm: its custom widget if it has one, else AlgorithmDialog."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    return opened(alg.createCustomParametersWidget(None) or AlgorithmDialog(alg))


def required_inputs(alg):
    """Names of the inputs a user must fill: not optional, no default, not an output."""
    from qgis.core import QgsProcessingParameterDefinition

    return {p.name() for p in alg.parameterDefinitions() if not p.isDestination() and p.defaultValue() is None
            and not p.flags() & QgsProcessingParameterDefinition.FlagOptional}


def fill(dialog, values):
    """Set values through the dialog's widget wrappers, as choosing them in the widgets does."""
    from processing.tools import dataobjects

    context = dataobjects.createContext()
    for name, value in values.items():
        dialog.mainWidget().wrappers[name].setParameterValue(value, context)


def dialog_parameters(dialog):
    """The parameters as the Run button collects them; a clear failure when the dialog refuses a value."""
    from processing.gui.AlgorithmDialogBase import AlgorithmDialogBase

    try:
        return dialog.createProcessingParameters()
    except AlgorithmDialogBase.InvalidParameterValue as refused:
        value = dialog.mainWidget().wrappers[refused.parameter.name()].parameterValue()
        pytest.fail(f"the dialog refuses {refused.parameter.name()} = {value!r}: 'Wrong or missing parameter value: "
                    f"{refused.parameter.description()}'")


def run_dialog(dialog):
    """Run the dialog as its Run button does and wait for it; (parameters, results, log text)."""
    from processing.tools import dataobjects
    from qgis.PyQt.QtCore import QEventLoop, QTimer
    from qgis.PyQt.QtWidgets import QTextEdit

    parameters = dialog_parameters(dialog)
    ok, message = dialog.algorithm().checkParameterValues(parameters, dataobjects.createContext())
    assert ok, message  # else the dialog would open a message box and not run
    finished = {}
    loop = QEventLoop()

    def on_finished(successful, results):
        finished.update(ok=successful, results=results)
        loop.quit()

    dialog.algorithmFinished.connect(on_finished)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(TIMEOUT_S * 1000)
    dialog.runAlgorithm()  # starts a QgsProcessingAlgRunnerTask; the results load when it ends
    if not finished:
        loop.exec_()
    log = dialog.findChild(QTextEdit, "txtLog").toPlainText()
    assert finished, f"the dialog gave no result within {TIMEOUT_S} s:\n{log}"
    assert finished["ok"], log
    return parameters, finished["results"], log


def loaded_layers(project):
    """The project's layers, top of the layer tree first."""
    return [node.layer() for node in project.layerTreeRoot().findLayers()]


def source(layer):
    return layer.source().split("|")[0]


def assert_score_style(layer):
    from qgis.core import QgsSingleBandPseudoColorRenderer

    from fers.algorithms.styles import MAGMA

    renderer = layer.renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert items[0].color.name() == MAGMA[0] and items[-1].color.name() == MAGMA[-1]


def assert_rank_style(layer):
    """A rank map's ramp: the Magma stops on the exceedance scale (algorithms.styles.rank_stops)."""
    from fers.algorithms.styles import rank_stops

    items = layer.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert [round(item.value, 6) for item in items] == [round(p, 6) for p, _ in rank_stops()]
    assert items[5].value == pytest.approx(0.99) and items[-1].value == pytest.approx(0.9999)


def assert_object_styles(mask_layer, objects_layer):
    from qgis.core import QgsPalettedRasterRenderer
    from qgis.PyQt.QtCore import Qt

    from fers.algorithms.styles import MASK_COLOUR, OUTLINE_COLOUR

    assert isinstance(mask_layer.renderer(), QgsPalettedRasterRenderer)
    assert {c.value: c.color for c in mask_layer.renderer().classes()}[1] == MASK_COLOUR
    outline = objects_layer.renderer().symbol().symbolLayer(0)
    assert outline.brushStyle() == Qt.NoBrush and outline.strokeColor() == OUTLINE_COLOUR


def test_detect_dialog_with_only_the_raster_runs_the_bundled_model(project, scene):
    """The blocker: the empty Model widget hands over a null QVariant, which the dialog used to refuse."""
    alg = algorithm("fers:detect")
    assert required_inputs(alg) == {"INPUT"}
    dialog = toolbox_dialog(alg)
    fill(dialog, {"INPUT": scene[0]})
    parameters, results, log = run_dialog(dialog)
    assert not parameters.get("MODEL")  # left empty
    assert "weights/fers_default.pt" in log
    scores = read(results["OUTPUT"])[0]
    assert scores.shape == (64, 72) and np.isfinite(scores).all()
    layers = loaded_layers(project)
    assert [source(layer) for layer in layers] == [results["OUTPUT"]]
    assert_score_style(layers[0])
    assert_rank_style(layers[0])  # the default ensemble's rank map


# Output names chosen so that QGIS 3.22, which loads outputs in the order of their paths (the last one
# on top), loads them in different orders: scores last (on top), and scores between the two others.
STACK_NAMES = [("c_scores.tif", "a_mask.tif", "b_objects.gpkg"), ("b_scores.tif", "c_mask.tif", "a_objects.gpkg")]


@pytest.mark.slow
@pytest.mark.parametrize("names", STACK_NAMES)
@pytest.mark.parametrize("algorithm_id", ["fers:detect", "fers:rx"])
def test_dialog_loads_objects_above_the_mask_above_the_scores(project, scene, tmp_path, algorithm_id, names):
    """With the mask and the objects asked for, the opaque scores come last in the layer tree, whatever the load
    order, and the mask and outlines have their colours."""
    dialog = toolbox_dialog(algorithm(algorithm_id))
    scores, mask, objects = (str(tmp_path / name) for name in names)
    fill(dialog, {"INPUT": scene[0], "OUTPUT": scores, "OUTPUT_MASK": mask, "OUTPUT_POLYGONS": objects})
    _, results, _ = run_dialog(dialog)
    assert (results["OUTPUT"], results["OUTPUT_MASK"], results["OUTPUT_POLYGONS"]) == (scores, mask, objects)
    layers = loaded_layers(project)
    assert [source(layer) for layer in layers] == [objects, mask, scores]
    assert_score_style(layers[2])
    assert_object_styles(layers[1], layers[0])


@pytest.mark.slow
def test_detect_dialog_loads_an_enhanced_cube_below_the_scores(project, scene, tmp_path):
    """An enhanced cube (opaque, many bands) goes below the scores, not on top of everything."""
    from fers.fers_core.enhance.default_model import default_model_path

    dialog = toolbox_dialog(algorithm("fers:detect"))
    paths = [str(tmp_path / name) for name in ("c_cube.tif", "a_mask.tif", "b_scores.tif")]  # the cube loads last
    fill(dialog, {"INPUT": scene[0], "MODEL": str(default_model_path()),  # the cubes need a single model
                  "OUTPUT_SPECTRAL": paths[0], "OUTPUT_MASK": paths[1], "OUTPUT": paths[2]})
    run_dialog(dialog)
    assert [source(layer) for layer in loaded_layers(project)] == [paths[1], paths[2], paths[0]]


def test_outputs_loaded_into_a_results_group_are_stacked_there(project, scene, tmp_path):
    """With Processing's "Results group name" set, QGIS appends each output at the group's bottom; the order holds."""
    from processing.core.ProcessingConfig import ProcessingConfig

    ProcessingConfig.setSettingValue(ProcessingConfig.RESULTS_GROUP_NAME, "FERS results")
    try:
        dialog = toolbox_dialog(algorithm("fers:rx"))
        scores, mask, objects = (str(tmp_path / name) for name in STACK_NAMES[1])
        fill(dialog, {"INPUT": scene[0], "OUTPUT": scores, "OUTPUT_MASK": mask, "OUTPUT_POLYGONS": objects})
        run_dialog(dialog)
    finally:
        ProcessingConfig.setSettingValue(ProcessingConfig.RESULTS_GROUP_NAME, "")
    group = project.layerTreeRoot().findGroup("FERS results")
    assert group is not None
    assert [source(node.layer()) for node in group.findLayers()] == [objects, mask, scores]


def test_two_runs_keep_each_run_stacked(project, scene, tmp_path):
    """A second run's layers go on top of the first run's, each run in its own order."""
    runs = []
    for run, names in enumerate(STACK_NAMES):
        dialog = toolbox_dialog(algorithm("fers:rx"))
        paths = [str(tmp_path / f"{run}{name}") for name in names]
        fill(dialog, {"INPUT": scene[0], "OUTPUT": paths[0], "OUTPUT_MASK": paths[1], "OUTPUT_POLYGONS": paths[2]})
        run_dialog(dialog)
        runs.append([paths[2], paths[1], paths[0]])
    assert [source(layer) for layer in loaded_layers(project)] == runs[1] + runs[0]


def test_rx_dialog_with_only_the_raster(project, scene):
    alg = algorithm("fers:rx")
    assert required_inputs(alg) == {"INPUT"}
    dialog = toolbox_dialog(alg)
    fill(dialog, {"INPUT": scene[0]})
    _, results, _ = run_dialog(dialog)
    assert read(results["OUTPUT"])[0].shape == (64, 72)
    layers = loaded_layers(project)
    assert [source(layer) for layer in layers] == [results["OUTPUT"]]
    assert_score_style(layers[0])


@pytest.mark.slow
def test_train_dialog_with_only_the_rasters_saves_a_real_model_beside_them(project, scene, tmp_path, run_alg):
    """The empty "Initial model" is accepted, and the default output is a real file beside the first input
    (never a temporary one, never an existing model): here <stem>_fers_model.pt, then _2 on the next run.

    Only the expert (Advanced) sizes of the training are set small, so that it takes seconds: the defaults
    train 60 epochs of 64 px patches per stage, which takes many minutes.
    """
    from fers.fers_core.enhance.model_file import load_model
    from fers.fers_core.synthetic import write_scene

    from .test_train_algorithm import TINY

    folder = tmp_path / "data"
    folder.mkdir()
    raster, _ = write_scene(folder / "site.tif", tmp_path / "site_gt.tif", rows=28, cols=30, bands=24, seed=1)
    alg = algorithm("fers:train")
    assert required_inputs(alg) == {"INPUTS"}
    dialog = toolbox_dialog(alg)
    fill(dialog, {"INPUTS": [str(raster)], **TINY})
    parameters, results, log = run_dialog(dialog)
    assert not parameters.get("INIT_MODEL") and parameters["OUTPUT_MODEL"] == "TEMPORARY_OUTPUT"  # the defaults
    first = folder / "site_fers_model.pt"
    assert results["OUTPUT_MODEL"] == str(first) and str(first) in log
    model = load_model(first)
    assert model.bands == 16 and set(model.branches) == {"spectral", "spatial"}
    assert not (folder / "site_fers_model.pt.resume.pt").exists()  # removed when training ends
    model_bytes = first.read_bytes()

    again = run_alg("fers:train", {**TINY, "INPUTS": [str(raster)]})  # no OUTPUT_MODEL at all
    assert again["OUTPUT_MODEL"] == str(folder / "site_fers_model_2.pt")
    assert load_model(again["OUTPUT_MODEL"]).bands == 16 and first.read_bytes() == model_bytes  # first one kept


def test_evaluate_dialog_with_only_scores_and_truth(project, scene, tmp_path):
    from fers.fers_core.synthetic import DEMO_EPSG

    truth, _, geotransform, _ = read(scene[1])
    noisy = truth + np.random.default_rng(0).normal(0, 0.3, truth.shape)
    scores = write_cube(tmp_path / "scores.tif", noisy.astype(np.float32), geotransform=geotransform, epsg=DEMO_EPSG)
    alg = algorithm("fers:evaluate")
    assert required_inputs(alg) == {"SCORES", "GROUND_TRUTH"}
    dialog = toolbox_dialog(alg)
    fill(dialog, {"SCORES": [scores], "GROUND_TRUTH": scene[1]})
    _, results, _ = run_dialog(dialog)
    assert results["AUC"] > 0.95
    page = Path(results["OUTPUT_HTML"]).read_text(encoding="utf-8")
    assert "<polyline" in page and "AUC" in page


def test_import_checkpoint_dialog_with_only_the_folder(project, tmp_path):
    from fers.fers_core.enhance.model_file import load_model, random_init_model

    from .core.enhance.test_model_file import write_authors_folder

    folder = write_authors_folder(tmp_path / "checkpoint", random_init_model(16, seed=1))
    alg = algorithm("fers:import_checkpoint")
    assert required_inputs(alg) == {"FOLDER"}
    dialog = toolbox_dialog(alg)
    fill(dialog, {"FOLDER": str(folder)})
    _, results, _ = run_dialog(dialog)
    assert results["SUMMARY"].startswith("16 bands")
    assert load_model(results["OUTPUT_MODEL"]).bands == 16


@pytest.mark.slow
@pytest.mark.parametrize("algorithm_id", ["fers:detect", "fers:rx"])
def test_batch_dialog_runs_two_rows_with_only_the_required_inputs(project, scene, tmp_path, algorithm_id):
    """The batch dialog, two rows: the raster and the score file typed in, everything else as the table shows it,
    and "Load layers on completion" ticked."""
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.tools import dataobjects

    alg = algorithm(algorithm_id)
    dialog = opened(BatchAlgorithmDialog(alg))
    panel = dialog.mainWidget()
    panel.addRow()
    assert panel.batchRowCount() == 2
    second = tmp_path / "second.tif"
    shutil.copy(scene[0], second)
    outputs = [tmp_path / "out" / "first_scores.tif", tmp_path / "out" / "second_scores.tif"]
    outputs[0].parent.mkdir()
    panel.checkLoadLayersOnCompletion.setChecked(True)
    context = dataobjects.createContext()
    for row, (raster, output) in enumerate(zip((scene[0], str(second)), outputs)):
        panel.wrappers[row][panel.parameter_to_column["INPUT"]].setParameterValue(raster, context)
        panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column["OUTPUT"]).setValue(str(output))
    for row in range(2):
        parameters, ok = panel.parametersForRow(row, warnOnInvalid=True)
        assert ok, f"the batch dialog refuses row {row + 2}: {dialog.messageBar().currentItem().text()}"
        assert alg.checkParameterValues(parameters, context)[0]
        assert alg.input_nodata(parameters, context, name=None) == ()  # an empty cell is no value, not 0
    dialog.runAlgorithm()  # runs the rows one after the other, then loads the results
    assert "not correctly generated" not in dialog_log(dialog)  # skipped outputs are not layers to load
    assert sorted(p.name for p in outputs[0].parent.iterdir()) == ["first_scores.tif", "second_scores.tif"]
    for output in outputs:
        assert read(output)[0].shape == (64, 72)
    layers = loaded_layers(project)
    assert sorted(source(layer) for layer in layers) == sorted(str(p) for p in outputs)
    for layer in layers:
        assert_score_style(layer)


def model_inputs(model, scene):
    """The example model's required inputs, filled by type: rasters get the scene, a ground truth the truth."""
    from qgis.core import QgsProcessingParameterRasterLayer

    values = {}
    for name in required_inputs(model):
        parameter = model.parameterDefinition(name)
        assert isinstance(parameter, QgsProcessingParameterRasterLayer), f"unexpected required input {name}"
        truth = "truth" in (name + parameter.description()).lower()
        values[name] = scene[1] if truth else scene[0]
    return values


def example_model_dialog(opened_from):
    """(model, dialog) for the example model: from the Toolbox (the provider ships it), or opened from its file in
    the modeler and run with the modeler's Run button (which opens a copy of the model, with the modeler's values)."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from processing.modeler.ModelerDialog import ModelerDialog

    from .conftest import ROOT

    if opened_from == "toolbox":
        model = algorithm("fers:detect_mask_polygons_report")
        return model, toolbox_dialog(model)
    modeler = opened(ModelerDialog())
    modeler.loadModel(str(ROOT / "models" / "detect_mask_polygons_report.model3"))  # the modeler's Open
    model = modeler.model()
    assert model.childAlgorithms()
    dialog = opened(AlgorithmDialog(model.create(), parent=modeler))
    dialog.setParameters(model.designerParameterValues())
    return model, dialog


@pytest.mark.slow
@pytest.mark.parametrize("opened_from", ["toolbox", "modeler"])
def test_example_model_runs_from_its_dialog_with_only_its_required_inputs(project, scene, opened_from):
    """models/detect_mask_polygons_report.model3 run from its dialog with only its required inputs filled: every
    output is written, and the layers are loaded objects, mask, scores from the top, styled."""
    model, dialog = example_model_dialog(opened_from)
    values = model_inputs(model, scene)
    assert sorted(values.values()) == sorted(scene)
    fill(dialog, values)
    parameters, results, _ = run_dialog(dialog)
    outputs = [p.name() for p in model.destinationParameterDefinitions()]
    assert outputs and all(results.get(name) for name in outputs), (outputs, results)
    layers = {source(layer): layer for layer in loaded_layers(project)}
    scores, mask, objects = (next(v for k, v in results.items() if k.endswith(suffix))
                             for suffix in (":scores", ":mask", ":objects"))
    assert [source(layer) for layer in loaded_layers(project)][:3] == [objects, mask, scores]
    assert_score_style(layers[scores])
    assert_object_styles(layers[mask], layers[objects])
    report = next(v for k, v in results.items() if k.endswith(":report"))
    assert "AUC" in Path(report).read_text(encoding="utf-8")


NO_TORCH_DIALOG = """
import json, sys
sys.path = [path for path in sys.path if path != {torch_home!r}]  # as on a machine without PyTorch
sys.path[:0] = [{plugins!r}, "/usr/share/qgis/python/plugins"]
from qgis.core import QgsApplication, QgsProcessingException
app = QgsApplication([], True)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import fers
plugin = fers.classFactory(None)
plugin.initProcessing()
import processing
from processing.gui.AlgorithmDialog import AlgorithmDialog
from processing.tools import dataobjects
alg = QgsApplication.processingRegistry().createAlgorithmById("fers:detect")
dialog = AlgorithmDialog(alg)
dialog.mainWidget().wrappers["INPUT"].setParameterValue({scene!r}, dataobjects.createContext())
parameters = dialog.createProcessingParameters()  # refused the empty Model before PyTorch was ever asked for
try:
    processing.run(alg, parameters)
    error = ""
except QgsProcessingException as raised:
    error = str(raised)
print(json.dumps({{"collected": sorted(parameters), "error": error}}))
dialog.deleteLater()
"""


@pytest.mark.slow
def test_without_pytorch_the_detect_dialog_reaches_the_install_message(scene, tmp_path):
    """A user without PyTorch gets past the dialog's parameter check to the message that says how to install it."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    torch_home = os.path.dirname(importlib.util.find_spec("torch").submodule_search_locations[0])
    environment = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    script = NO_TORCH_DIALOG.format(plugins=str(ROOT / ".plugins"), scene=scene[0], torch_home=torch_home)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert "MODEL" in result["collected"]
    assert "need PyTorch, which is not installed" in result["error"], result["error"]


def dialog_log(dialog):
    """The text of a processing dialog's log panel."""
    from qgis.PyQt.QtWidgets import QTextEdit

    return "\n".join(widget.toPlainText() for widget in dialog.findChildren(QTextEdit))


def batch_rows(alg, rows, tmp_path):
    """Fill a real batch dialog with `rows` (dicts of parameter values; outputs typed as paths), run it; the dialog."""
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.tools import dataobjects

    dialog = opened(BatchAlgorithmDialog(alg))
    panel = dialog.mainWidget()
    for _ in rows[1:]:
        panel.addRow()
    assert panel.batchRowCount() == len(rows)
    context = dataobjects.createContext()
    outputs = {definition.name() for definition in alg.destinationParameterDefinitions()}
    for row, values in enumerate(rows):
        for name, value in values.items():
            column = panel.parameter_to_column[name]
            if name in outputs:
                panel.tblParameters.cellWidget(row + 1, column).setValue(str(value))
            else:
                panel.wrappers[row][column].setParameterValue(value, context)
    for row in range(len(rows)):
        parameters, ok = panel.parametersForRow(row, warnOnInvalid=True)
        assert ok, f"the batch dialog refuses row {row + 2}: {dialog.messageBar().currentItem().text()}"
        assert alg.checkParameterValues(parameters, context)[0]
    dialog.runAlgorithm()
    return dialog


@pytest.mark.slow
def test_batch_dialog_runs_evaluate_train_and_import_with_only_the_required_inputs(project, scene, tmp_path):
    """The other three algorithms from the batch dialog, two rows each, only the required inputs (and the files
    the rows write) filled; training's expert sizes small so that it takes seconds."""
    from fers.fers_core.enhance.model_file import load_model, random_init_model
    from fers.fers_core.synthetic import DEMO_EPSG, write_scene
    from fers.plugin import mend_batch_html_results

    from .core.enhance.test_model_file import write_authors_folder
    from .test_train_algorithm import TINY

    assert mend_batch_html_results()  # what initGui does in the desktop: QGIS 3.22's batch dialog fails on HTML
    truth, _, geotransform, _ = read(scene[1])
    rng = np.random.default_rng(0)
    scores = [write_cube(tmp_path / f"scores{i}.tif", (truth + rng.normal(0, 0.3, truth.shape)).astype(np.float32),
                         geotransform=geotransform, epsg=DEMO_EPSG) for i in range(2)]
    reports = [tmp_path / "reports" / f"report{i}.html" for i in range(2)]
    reports[0].parent.mkdir()
    batch_rows(algorithm("fers:evaluate"), [{"SCORES": [s], "GROUND_TRUTH": scene[1], "OUTPUT_HTML": r}
                                            for s, r in zip(scores, reports)], tmp_path)
    for report in reports:
        assert "<polyline" in report.read_text(encoding="utf-8")

    folders = [write_authors_folder(tmp_path / f"checkpoint{i}", random_init_model(16, seed=i)) for i in range(2)]
    imported = [tmp_path / "models" / f"imported{i}.pt" for i in range(2)]
    imported[0].parent.mkdir()
    batch_rows(algorithm("fers:import_checkpoint"), [{"FOLDER": str(f), "OUTPUT_MODEL": m}
                                                     for f, m in zip(folders, imported)], tmp_path)
    assert [load_model(m).bands for m in imported] == [16, 16]

    sites = []
    for i in range(2):
        folder = tmp_path / f"site{i}"
        folder.mkdir()
        sites.append(write_scene(folder / "site.tif", tmp_path / f"site{i}_gt.tif", rows=28, cols=30, bands=24,
                                 seed=i)[0])
    batch_rows(algorithm("fers:train"), [{"INPUTS": [str(s)], **TINY} for s in sites], tmp_path)
    for site in sites:  # no output typed: each row's model is a real file beside its input
        assert load_model(Path(site).parent / "site_fers_model.pt").bands == 16


@pytest.mark.parametrize("algorithm_id, raster", [("fers:rx", "INPUT"), ("fers:detect", "INPUT"),
                                                  ("fers:train", "INPUTS")])
def test_the_input_nodata_value_stays_empty_unless_typed(project, scene, algorithm_id, raster):
    """An untouched optional number must reach the run as no value, not as 0 (which would make every 0 nodata)."""
    from qgis.core import QgsProcessingContext

    alg = algorithm(algorithm_id)
    dialog = toolbox_dialog(alg)
    fill(dialog, {raster: scene[0] if raster == "INPUT" else [scene[0]]})
    parameters = dialog_parameters(dialog)
    assert alg.input_nodata(parameters, QgsProcessingContext(), name=None) == ()
    fill(dialog, {"INPUT_NODATA": -9999})
    parameters = dialog_parameters(dialog)
    assert alg.input_nodata(parameters, QgsProcessingContext(), name=None) == (-9999.0,)
