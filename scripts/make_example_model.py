"""Build the example Processing model models/detect_mask_polygons_report.model3.

    .venv/bin/python scripts/make_example_model.py [OUTPUT.model3]

The model chains "detect -> mask -> polygons -> report": fers:detect (the bundled FERS model)
scores the scene and writes the anomaly mask and polygons, then fers:evaluate compares the
scores with a ground truth and writes the HTML report. The FERS provider ships it in the
Toolbox as fers:detect_mask_polygons_report (group "Example models").

Model inputs, in the order an analyst fills them: scene, ground_truth, detector (0 global RX,
1 local RX on the enhanced cube), threshold_percent, min_pixels; the last three default to
fers:detect's own defaults. Every other fers:detect parameter gets fers:detect's default (precision
auto, the bundled model, ...): rerun this script when those defaults change. Model outputs, all created
by default (qgis_process names): detect:scores, detect:mask, detect:objects, evaluate:report.
Example:

    scripts/qgis_process run fers:detect_mask_polygons_report -- scene=a.tif ground_truth=a_gt.tif \
        detect:mask=mask.tif detect:objects=objects.gpkg evaluate:report=report.html
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = ROOT / "models" / "detect_mask_polygons_report.model3"
MODEL_NAME = "Detect, mask, polygons, report"
MODEL_GROUP = "Example models"


def _start_qgis():
    """A headless QgsApplication with Processing and the fers provider (as the tests set it up)."""
    runtime = ROOT / ".run" / "xdg"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ.setdefault("QT_HASH_SEED", "0")  # a stable attribute order in the saved XML (clean diffs)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    os.environ.setdefault("QGIS_CUSTOM_CONFIG_PATH", str(ROOT / ".qgis-profile"))
    plugins = ROOT / ".plugins"
    plugins.mkdir(exist_ok=True)
    if not (plugins / "fers").exists():
        (plugins / "fers").symlink_to(ROOT)
    for path in (str(plugins), "/usr/share/qgis/python/plugins"):
        if path not in sys.path:
            sys.path.insert(0, path)
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import fers

    plugin = fers.classFactory(None)
    plugin.initProcessing()
    app.fers_plugin = plugin
    return app


def _set_sources(child, sources):
    # One key at a time: QgsProcessingModelChildAlgorithm.setParameterSources with a Python dict
    # crashes PyQGIS 3.22 (segmentation fault).
    for name, values in sources.items():
        child.addParameterSources(name, values)


# Modeler canvas layout: component centres on a grid of columns and rows, every box COMPONENT_SIZE
# (children CHILD_SIZE) and smaller than its cell, so no two boxes overlap.
COLUMN_X = (150, 480, 810, 1140)
ROW_Y = (60, 130, 200, 270, 340, 430)
COMPONENT_SIZE = (220, 40)
CHILD_SIZE = (260, 56)
INPUT_ORDER = ("scene", "ground_truth", "detector", "threshold_percent", "min_pixels")
HELP = {
    "ALG_DESC": "Runs the FERS anomaly detector (fers:detect, with its default bundled models) on a hyperspectral "
                "scene, thresholds its scores into an anomaly mask and anomaly objects (polygons), and compares "
                "the scores with a ground truth in an HTML report (fers:evaluate: ROC curve, AUC, detection rates, "
                "score distributions). Every fers:detect setting that the model does not expose keeps fers:detect's "
                "default. Open the .model3 file in the Graphical Modeler to adapt it.",
    "scene": "Hyperspectral raster to search for anomalies.",
    "ground_truth": "Raster on the scene's grid, non-zero = anomaly.",
    "detector": "Detector run on the FERS-enhanced cube: global RX (background statistics of the whole scene; the "
                "FERS method), local dual-window RX, or one of ENVI's RX variants (RXD with a local mean, UTD, "
                "RXD-UTD), with fers:detect's default windows.",
    "threshold_percent": "Percentage of the valid pixels flagged as anomalies (those with the highest scores).",
    "min_pixels": "Smallest anomaly object kept as a polygon, in pixels.",
    "detect:scores": "The FERS anomaly score of every pixel (float32 GeoTIFF).",
    "detect:mask": "1 = anomaly, 0 = background, 255 = nodata.",
    "detect:objects": "One polygon per group of connected anomaly pixels, with its size and scores (GeoPackage).",
    "evaluate:report": "HTML page: ROC curve, AUC, detection rates and score distributions against the ground truth.",
    "ALG_CREATOR": "FERS for QGIS",
}


def _place(component, column, row, size=COMPONENT_SIZE):
    from qgis.PyQt.QtCore import QPointF, QSizeF

    component.setPosition(QPointF(COLUMN_X[column], ROW_Y[row]))
    component.setSize(QSizeF(*size))


def build_model():
    """The model as a QgsProcessingModelAlgorithm (QGIS must be running with the fers provider)."""
    from qgis.core import (
        QgsApplication,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterDefinition,
        QgsProcessingParameterEnum,
        QgsProcessingParameterNumber,
        QgsProcessingParameterRasterLayer,
    )

    from fers.algorithms import outputs as object_outputs
    from fers.algorithms.detect_algorithm import DETECTOR_OPTIONS
    from fers.fers_core.pipeline.postprocess import TOP_PERCENT

    detect_algorithm = QgsApplication.processingRegistry().algorithmById("fers:detect")
    default = {name: detect_algorithm.parameterDefinition(name).defaultValue()
               for name in ("DETECTOR", object_outputs.THRESHOLD_METHOD, object_outputs.THRESHOLD,
                            object_outputs.MIN_PIXELS)}
    top_percent = default[object_outputs.THRESHOLD] if default[object_outputs.THRESHOLD_METHOD] == TOP_PERCENT \
        else 0.5

    model = QgsProcessingModelAlgorithm(MODEL_NAME, MODEL_GROUP)
    model.setHelpContent(HELP)
    inputs = {
        "scene": (QgsProcessingParameterRasterLayer("scene", "Hyperspectral scene"), (0, 0)),
        "ground_truth": (QgsProcessingParameterRasterLayer("ground_truth", "Ground truth (non-zero = anomaly)"),
                         (0, 5)),
        "detector": (QgsProcessingParameterEnum("detector", "Detector on the enhanced cube", DETECTOR_OPTIONS,
                                                defaultValue=default["DETECTOR"]), (0, 1)),
        "threshold_percent": (QgsProcessingParameterNumber(
            "threshold_percent", "Top percent of valid pixels flagged (mask and objects)",
            QgsProcessingParameterNumber.Type.Double, top_percent, minValue=0.0001, maxValue=100), (0, 2)),
        "min_pixels": (QgsProcessingParameterNumber(
            "min_pixels", "Minimum object size (pixels)", QgsProcessingParameterNumber.Type.Integer,
            default[object_outputs.MIN_PIXELS], minValue=1), (0, 3)),
    }
    for name in INPUT_ORDER:
        definition, (column, row) = inputs[name]
        definition.setHelp(HELP[name])
        component = QgsProcessingModelParameter(name)
        _place(component, column, row)
        model.addModelParameter(definition, component)
    model.setParameterOrder(list(INPUT_ORDER))

    def from_input(name):
        return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]

    def static(value):
        return [QgsProcessingModelChildParameterSource.fromStaticValue(value)]

    def output(child_id, name, child_output, description, column, row):
        result = QgsProcessingModelOutput(name, description)
        result.setChildId(child_id)
        result.setChildOutputName(child_output)
        result.setMandatory(True)  # created by default (an optional child output would default to "Skip")
        _place(result, column, row)
        return result

    detect = QgsProcessingModelChildAlgorithm("fers:detect")
    detect.setChildId("detect")
    detect.setDescription("FERS anomaly detector: scores, mask, objects")
    _place(detect, 1, 1, CHILD_SIZE)
    _set_sources(detect, {
        "INPUT": from_input("scene"),
        "DETECTOR": from_input("detector"),
        object_outputs.THRESHOLD_METHOD: static(TOP_PERCENT),
        object_outputs.THRESHOLD: from_input("threshold_percent"),
        object_outputs.MIN_PIXELS: from_input("min_pixels"),
    })
    for definition in detect_algorithm.parameterDefinitions():  # the rest: fers:detect's defaults
        mandatory = not definition.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional
        if mandatory and not definition.isDestination() and definition.name() not in detect.parameterSources():
            detect.addParameterSources(definition.name(), static(definition.defaultValue()))
    detect.setModelOutputs({
        "scores": output("detect", "scores", "OUTPUT", "Anomaly scores", 2, 0),
        "mask": output("detect", "mask", "OUTPUT_MASK", "Anomaly mask", 2, 1),
        "objects": output("detect", "objects", "OUTPUT_POLYGONS", "Anomaly objects", 2, 2),
    })
    model.addChildAlgorithm(detect)

    evaluate = QgsProcessingModelChildAlgorithm("fers:evaluate")
    evaluate.setChildId("evaluate")
    evaluate.setDescription("Evaluation report: ROC, AUC, score distributions")
    _place(evaluate, 2, 5, CHILD_SIZE)
    _set_sources(evaluate, {
        "SCORES": [QgsProcessingModelChildParameterSource.fromChildOutput("detect", "OUTPUT")],
        "GROUND_TRUTH": from_input("ground_truth"),
    })
    evaluate.setModelOutputs({"report": output("evaluate", "report", "OUTPUT_HTML", "Evaluation report", 3, 5)})
    model.addChildAlgorithm(evaluate)
    model.updateDestinationParameters()
    return model


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0]) if argv else MODEL_PATH
    app = _start_qgis()
    model = build_model()
    problems = [f"{child}: {issue}" for child in model.childAlgorithms()
                for issue in model.validateChildAlgorithm(child)[1]]
    if problems:
        sys.exit("The model is not valid:\n" + "\n".join(problems))
    target.parent.mkdir(parents=True, exist_ok=True)
    if not model.toFile(str(target)):
        sys.exit(f"Could not write {target}")
    print(f"Wrote {target}")
    app.exitQgis()


if __name__ == "__main__":
    main()
