"""Build the example Processing model models/detect_mask_polygons_report.model3.

    .venv/bin/python scripts/make_example_model.py [OUTPUT.model3]

The model chains "detect -> mask -> polygons -> report": fers:detect (the bundled FERS model)
scores the scene and writes the anomaly mask and polygons, then fers:evaluate compares the
scores with a ground truth and writes the HTML report.

Model parameters: scene, ground_truth, mode (0 global RX, 1 local RX on the enhanced cube),
threshold_percent, min_pixels. Model outputs (qgis_process names): detect:scores, detect:mask,
detect:objects, evaluate:report. Example:

    scripts/qgis_process run models/detect_mask_polygons_report.model3 -- scene=a.tif \
        ground_truth=a_gt.tif mode=0 threshold_percent=0.5 min_pixels=1 detect:scores=scores.tif \
        detect:mask=mask.tif detect:objects=objects.gpkg evaluate:report=report.html
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = ROOT / "models" / "detect_mask_polygons_report.model3"
MODEL_NAME = "Detect, mask, polygons, report"
MODEL_GROUP = "FERS examples"


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


def build_model():
    """The model as a QgsProcessingModelAlgorithm (QGIS must be running with the fers provider)."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterEnum,
        QgsProcessingParameterNumber,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.PyQt.QtCore import QPointF

    from fers.fers_core.raster_io import DEFAULT_BLOCK_MB
    from fers.fers_core.tile_settings import SPATIAL_MARGIN, SPATIAL_TILE

    model = QgsProcessingModelAlgorithm(MODEL_NAME, MODEL_GROUP)
    model.setHelpContent({
        "ALG_DESC": "Scores a hyperspectral scene with RX, thresholds the scores into an anomaly mask and polygons, "
                    "and evaluates the scores against a ground truth in an HTML report.",
        "scene": "Hyperspectral raster to search for anomalies.",
        "ground_truth": "Raster on the scene's grid, non-zero = anomaly.",
        "mode": "0 = global RX, 1 = local RX (windows 5 and 21 pixels).",
        "threshold_percent": "Percentage of valid pixels flagged as anomalies (highest scores).",
        "min_pixels": "Smallest object kept as a polygon, in pixels.",
    })
    inputs = (
        (QgsProcessingParameterRasterLayer("scene", "Hyperspectral scene"), 60),
        (QgsProcessingParameterRasterLayer("ground_truth", "Ground truth (non-zero = anomaly)"), 120),
        (QgsProcessingParameterEnum("mode", "RX background", ["Global", "Local (windows 5 and 21)"],
                                    defaultValue=0), 180),
        (QgsProcessingParameterNumber("threshold_percent", "Top percent of pixels flagged",
                                      QgsProcessingParameterNumber.Double, 0.5, minValue=0.0001,
                                      maxValue=100), 240),
        (QgsProcessingParameterNumber("min_pixels", "Minimum object size (pixels)",
                                      QgsProcessingParameterNumber.Integer, 1, minValue=1), 300),
    )
    for definition, y in inputs:
        component = QgsProcessingModelParameter(definition.name())
        component.setPosition(QPointF(120, y))
        model.addModelParameter(definition, component)

    def from_input(name):
        return [QgsProcessingModelChildParameterSource.fromModelParameter(name)]

    def static(value):
        return [QgsProcessingModelChildParameterSource.fromStaticValue(value)]

    def output(child_id, name, child_output, description):
        result = QgsProcessingModelOutput(name, description)
        result.setChildId(child_id)
        result.setChildOutputName(child_output)
        return result

    detect = QgsProcessingModelChildAlgorithm("fers:detect")
    detect.setChildId("detect")
    detect.setDescription("Detect: FERS scores, anomaly mask and polygons")
    detect.setPosition(QPointF(420, 160))
    _set_sources(detect, {
        "INPUT": from_input("scene"),
        "DETECTOR": from_input("mode"),
        "WINDOW_INNER": static(5),
        "WINDOW_OUTER": static(21),
        "THRESHOLD_METHOD": static(0),
        "THRESHOLD": from_input("threshold_percent"),
        "MIN_PIXELS": from_input("min_pixels"),
        "BRANCHES": static(0),
        "FUSION": static(0),
        "DEVICE": static(0),
        "PRECISION": static(0),
        "MEMORY_MB": static(DEFAULT_BLOCK_MB),
        "TILE_SIZE": static(SPATIAL_TILE),
        "TILE_MARGIN": static(SPATIAL_MARGIN),
    })
    detect.setModelOutputs({
        "scores": output("detect", "scores", "OUTPUT", "Anomaly scores"),
        "mask": output("detect", "mask", "OUTPUT_MASK", "Anomaly mask"),
        "objects": output("detect", "objects", "OUTPUT_POLYGONS", "Anomaly objects"),
    })
    model.addChildAlgorithm(detect)

    evaluate = QgsProcessingModelChildAlgorithm("fers:evaluate")
    evaluate.setChildId("evaluate")
    evaluate.setDescription("Report: ROC, AUC and score distributions")
    evaluate.setPosition(QPointF(720, 240))
    _set_sources(evaluate, {
        "SCORES": [QgsProcessingModelChildParameterSource.fromChildOutput("detect", "OUTPUT")],
        "GROUND_TRUTH": from_input("ground_truth"),
    })
    evaluate.setModelOutputs({"report": output("evaluate", "report", "OUTPUT_HTML", "Evaluation report")})
    evaluate.setDependencies([])
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
