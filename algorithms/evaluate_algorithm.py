"""fers:evaluate: ROC, AUC, detection rates and best F1 of score rasters against a ground truth."""

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterFileDestination,
)

from ..fers_core.detectors.evaluation import evaluate
from .base import FersAlgorithm, RasterLayerParameter, RasterListParameter


class EvaluateAlgorithm(FersAlgorithm):
    """Evaluate one or more anomaly score rasters against a ground-truth raster."""

    SCORES, GROUND_TRUTH, MASK = "SCORES", "GROUND_TRUTH", "MASK"
    OUTPUT_HTML, OUTPUT_CSV = "OUTPUT_HTML", "OUTPUT_CSV"
    AUC, DETECTION_RATE_0_1, DETECTION_RATE_1 = "AUC", "DETECTION_RATE_0_1", "DETECTION_RATE_1"
    BEST_F1, BEST_F1_THRESHOLD = "BEST_F1", "BEST_F1_THRESHOLD"
    group_name, group_id = "Anomaly detection", "anomaly"

    algorithm_name, display_name = "evaluate", "Evaluate anomaly scores (ROC, AUC, F1)"
    help_anchor = "fersevaluate-evaluate-anomaly-scores-against-ground-truth"
    summary = "Compares anomaly score rasters with a ground truth: ROC curves, AUC, detection rates, F1."
    icon_file = "evaluate.svg"
    search_tags = ("hyperspectral", "anomaly", "evaluation", "accuracy", "ROC", "AUC", "F1", "ground truth",
                   "detection rate", "false alarm", "benchmark")
    help_intro = (
        "Compares anomaly score rasters with a ground truth and writes an HTML report: the ROC curve of every "
        "score raster on one plot (false-alarm rate on a log axis), the score distributions of background and "
        "anomaly pixels, and a table of metrics. The rasters are read whole, so this is meant for benchmark scenes "
        "and labelled areas."
    )
    help_notes = (
        "Numeric outputs (of the first score raster): AUC (area under the ROC curve, ties count one half); "
        "detection rate at 0.1% and at 1% false alarms (share of anomaly pixels found when at most that share "
        "of background pixels is flagged); best F1 over all thresholds and the score threshold reaching it "
        "(pixels with a score at or above the threshold are flagged)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_parameter(RasterListParameter(self.SCORES, self.tr("Score rasters")),
                           "One or more score rasters (e.g. from the FERS and RX anomaly detectors) on the ground "
                           "truth's grid (same size); their nodata pixels are left out.")
        self.add_parameter(RasterLayerParameter(
            self.GROUND_TRUTH, self.tr("Ground truth (non-zero = anomaly)"),
        ), "Raster on the same grid: non-zero = anomaly pixel, 0 = background.")
        self.add_parameter(RasterLayerParameter(
            self.MASK, self.tr("Evaluation mask (non-zero = leave out)"), optional=True,
        ), "Optional raster on the same grid: its non-zero pixels are left out of the evaluation.")
        self.add_parameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, self.tr("Evaluation report"), self.tr("HTML files (*.html)"),
        ), "HTML report with the ROC plot, the score distributions and the metrics table.")
        self.add_parameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_CSV, self.tr("ROC curves (CSV)"), self.tr("CSV files (*.csv)"), optional=True,
            createByDefault=False,
        ), "Optional: the ROC curve points of every score raster (raster, threshold, false_alarm_rate, "
           "detection_rate, false_positives, true_positives).")
        for name, description in (
            (self.AUC, "AUC (first score raster)"),
            (self.DETECTION_RATE_0_1, "Detection rate at 0.1% false alarms"),
            (self.DETECTION_RATE_1, "Detection rate at 1% false alarms"),
            (self.BEST_F1, "Best F1"),
            (self.BEST_F1_THRESHOLD, "Score threshold of the best F1"),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(description)))

    def compute(self, parameters, context, feedback):
        layers = self.raster_sources(parameters, self.SCORES, context)  # none: the engine says to choose one
        html = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        csv = self.parameterAsFileOutput(parameters, self.OUTPUT_CSV, context) if parameters.get(
            self.OUTPUT_CSV) is not None else None
        report = evaluate(
            [path for path, _ in layers],
            self.raster_source(parameters, self.GROUND_TRUTH, context),
            mask_path=self.raster_source(parameters, self.MASK, context),
            html_path=html,
            csv_path=csv or None,
            names=[name for _, name in layers],
            feedback=feedback,
        )
        first = report.first
        results = {
            self.AUC: first.auc,
            self.DETECTION_RATE_0_1: first.detection_rate_0_1,
            self.DETECTION_RATE_1: first.detection_rate_1,
            self.BEST_F1: first.best_f1,
            self.BEST_F1_THRESHOLD: first.best_f1_threshold,
            self.OUTPUT_HTML: html,
        }
        if report.csv_path:
            results[self.OUTPUT_CSV] = report.csv_path
        return results
