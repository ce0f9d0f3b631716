"""Evaluate score rasters against a ground truth: ROC, AUC, detection rates, best F1, and a report.

Pixels evaluated for one score raster: valid scores (not nodata, NaN or inf), valid ground
truth, and not excluded by the optional mask (non-zero = exclude). The ground truth's non-zero
pixels are anomalies. Each score raster is evaluated over its own valid pixels (the report
lists the counts, and a warning says when they differ between rasters).

Definitions (a pixel is flagged when its score is >= the threshold):
  false-alarm rate = flagged background pixels / background pixels
  detection rate   = flagged anomaly pixels / anomaly pixels
  AUC              = area under the ROC curve, by fers_core.detectors.metrics.roc_auc (ties count one half)
  detection rate at a false-alarm rate a = the highest detection rate among thresholds whose
                     false-alarm rate is <= a
  best F1          = max over thresholds of 2 TP / (2 TP + FP + FN), with its threshold.
The rasters are read whole (about 13 bytes per pixel per score raster): this is meant for
benchmark scenes and labelled subsets, not continental mosaics.

The report itself is drawn by report_html (the page) and report_plots (its inline SVG plots).
"""

import csv
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..feedback import Feedback, ProgressRange
from ..io.atomic import AtomicOutput
from ..io.grid import check_not_vector, check_same_grid
from ..io.output_safety import check_outputs
from ..io.reader import RasterReader
from ..io.windows import Window
from .metrics import FALSE_ALARM_RATES, RocCurve, best_f1, roc_auc, roc_curve, score_histogram
from .report_html import render_html


@dataclass
class ScoreEvaluation:
    """Metrics of one score raster."""

    name: str
    path: str
    valid_pixels: int
    anomaly_pixels: int
    auc: float
    detection_rate_0_1: float
    detection_rate_1: float
    best_f1: float
    best_f1_threshold: float
    curve: RocCurve = field(repr=False)
    histogram: dict = field(repr=False)


@dataclass
class EvaluationReport:
    evaluations: list
    truth_path: str
    mask_path: str
    html_path: str = None
    csv_path: str = None

    @property
    def first(self):
        return self.evaluations[0]


def _read_whole(path):
    """The raster's band 1 and valid pixels, and its (closed) reader for its grid."""
    with RasterReader(path, [1]) as reader:
        data, valid = reader.read(Window.whole(reader.height, reader.width), dtype=np.float32)
    return reader, data[0], valid


def _same_grid(reader, truth, what):
    check_same_grid(reader, truth, f"{what} '{os.path.basename(reader.path)}'", "ground truth")


def evaluate(score_paths, truth_path, mask_path=None, html_path=None, csv_path=None, names=None, feedback=None):
    """Evaluate each score raster against the ground truth; write the HTML report and CSV curves when asked."""
    feedback = feedback or Feedback()
    score_paths = [str(p) for p in score_paths or []]
    if not score_paths:
        raise InputError("No score raster was given: choose at least one score raster to evaluate.")
    check_outputs([("the HTML report", html_path), ("the CSV curves", csv_path)],
                  [("a score raster", p) for p in score_paths] + [("the ground truth", truth_path),
                                                                  ("the mask", mask_path)])
    names = list(names) if names else [os.path.splitext(os.path.basename(p))[0] for p in score_paths]
    progress = ProgressRange(feedback, 0, 100)
    try:
        truth, truth_values, truth_valid = _read_whole(truth_path)
    except InputError:
        with RasterReader(score_paths[0], [1]) as scores:
            check_not_vector(truth_path, scores, "ground truth", "score raster")
        raise
    for path in score_paths:  # every grid first, before any long work
        with RasterReader(path, [1]) as reader:
            _same_grid(reader, truth, "score raster")
    area = truth_valid
    if mask_path:
        try:
            mask, mask_values, mask_valid = _read_whole(mask_path)
        except InputError:
            check_not_vector(mask_path, truth, "mask", "ground truth")
            raise
        _same_grid(mask, truth, "mask")
        area = area & ~(mask_valid & (mask_values != 0))
    anomaly = truth_values != 0
    if not (area & anomaly).any():
        raise InputError(
            "The ground truth has no anomaly (non-zero) pixel inside the evaluated area: check the ground-truth "
            "raster and the mask."
        )
    if not (area & ~anomaly).any():
        raise InputError(
            "The ground truth has no background (zero) pixel inside the evaluated area: every pixel is non-zero. "
            "0 must mark the background and non-zero the anomalies; convert a truth that marks them otherwise "
            "(e.g. background 255) first, e.g. with QGIS's Raster calculator."
        )
    evaluations = []
    for index, (path, name) in enumerate(zip(score_paths, names)):
        _, values, valid = _read_whole(path)  # its grid was checked above
        use = area & valid
        scores, labels = values[use].astype(np.float64), anomaly[use]
        positives = int(labels.sum())
        if positives == 0 or positives == labels.size:
            raise InputError(
                f"Score raster '{name}' has valid scores on {'no anomaly' if positives == 0 else 'no background'} "
                "pixel of the ground truth: check its nodata and that it covers the ground truth."
            )
        curve = roc_curve(scores, labels)
        f1, f1_threshold = best_f1(curve, positives)
        evaluations.append(ScoreEvaluation(
            name, path, int(labels.size), positives, roc_auc(scores, labels),
            curve.detection_at(FALSE_ALARM_RATES[0]), curve.detection_at(FALSE_ALARM_RATES[1]),
            f1, f1_threshold, curve, score_histogram(scores, labels),
        ))
        feedback.info(
            f"{name}: AUC {evaluations[-1].auc:.4f}, detection {evaluations[-1].detection_rate_0_1:.3f} at 0.1% "
            f"and {evaluations[-1].detection_rate_1:.3f} at 1% false alarms, best F1 {f1:.3f} at score >= "
            f"{f1_threshold:.6g} ({labels.size} pixels, {positives} anomalous)."
        )
        progress((index + 1) / (len(score_paths) + 1))
    if len({e.valid_pixels for e in evaluations}) > 1:
        feedback.warning(
            "The score rasters have valid scores on different pixels, so their curves cover different pixels: "
            "see the pixel counts in the report."
        )
    report = EvaluationReport(evaluations, str(truth_path), str(mask_path) if mask_path else None)
    if csv_path:
        _write_atomically(csv_path, lambda stream: _write_csv(stream, evaluations), newline="")
        report.csv_path = str(csv_path)
    if html_path:
        _write_atomically(html_path, lambda stream: stream.write(render_html(report)))
        report.html_path = str(html_path)
    progress(1.0)
    return report


def _write_atomically(path, write, newline=None):
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with AtomicOutput(path) as output:  # unique to this run; removed unless committed
        try:
            with open(output.path, "w", encoding="utf-8", newline=newline) as stream:
                write(stream)
        except OSError as error:
            raise output.fail(error, path) from None
        output.commit()


def _write_csv(stream, evaluations):
    writer = csv.writer(stream)
    writer.writerow(["raster", "threshold", "false_alarm_rate", "detection_rate", "false_positives",
                     "true_positives"])
    for evaluation in evaluations:
        curve = evaluation.curve
        for i in curve.corners():
            threshold = "inf" if np.isinf(curve.thresholds[i]) else repr(float(curve.thresholds[i]))
            writer.writerow([evaluation.name, threshold, repr(float(curve.false_alarm_rate[i])),
                             repr(float(curve.detection_rate[i])), int(curve.false_positives[i]),
                             int(curve.true_positives[i])])

