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
The rasters are read whole (about 17 bytes per pixel per score raster, scores in float64): this is meant for
benchmark scenes and labelled subsets, not continental mosaics.

The report itself is drawn by report_html (the page) and report_plots (its inline SVG plots).
"""

import csv
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, OutputError
from ..feedback import Feedback, ProgressRange
from ..io.atomic import AtomicOutput
from ..io.grid import check_not_vector, check_same_grid
from ..io.output_safety import check_distinct_inputs, check_outputs
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


def _read_whole(path, feedback, what, dtype=np.float32):
    """The raster's band 1 and valid pixels, and its (closed) reader for its grid; a raster of several bands is
    named in a warning (`what`: what it is in the run)."""
    with RasterReader(path, [1]) as reader:
        data, valid = reader.read(Window.whole(reader.height, reader.width), dtype=dtype)
        bands = reader.total_bands
    if bands > 1:
        feedback.warning(f"The {what} '{os.path.basename(str(path))}' has {bands} bands: only band 1 is used (a "
                         "score raster or mask has one band; choose the detector's output, not its input).")
    return reader, data[0], valid


def _same_grid(reader, truth, what):
    check_same_grid(reader, truth, f"{what} '{os.path.basename(reader.path)}'", "ground truth")


def evaluate(score_paths, truth_path, mask_path=None, html_path=None, csv_path=None, names=None, feedback=None):
    """Evaluate each score raster against the ground truth; write the HTML report and CSV curves when asked."""
    feedback = feedback or Feedback()
    score_paths = [str(p) for p in score_paths or []]
    if not score_paths:
        raise InputError("No score raster was given: choose at least one score raster to evaluate.")
    for what, path, extensions in (("The HTML report", html_path, (".html", ".htm")),
                                   ("The CSV curves", csv_path, (".csv", ".txt"))):
        if path and os.path.splitext(str(path))[1].lower() not in extensions:
            raise OutputError(f"{what} '{path}' must be named with {' or '.join(extensions)}: other programs "
                              "(and QGIS) open a file by its extension.")
    check_outputs([("the HTML report", html_path), ("the CSV curves", csv_path)],
                  [("a score raster", p) for p in score_paths] + [("the ground truth", truth_path),
                                                                  ("the mask", mask_path)])
    check_distinct_inputs([(f"score raster {index + 1}", path) for index, path in enumerate(score_paths)]
                          + [("the ground truth", truth_path)],
                          "give each score raster once, and the ground truth as its own raster.")
    names = _distinct_names(score_paths, names)
    progress = ProgressRange(feedback, 0, 100)
    try:
        truth, truth_values, truth_valid = _read_whole(truth_path, feedback, "ground truth")
    except InputError:
        with RasterReader(score_paths[0], [1]) as scores:
            check_not_vector(truth_path, scores, "ground truth", "score raster")
        raise
    for path in score_paths:  # every grid first, before any long work
        with RasterReader(path, [1]) as reader:
            _same_grid(reader, truth, "score raster")
    kept = np.ones_like(truth_valid)  # not excluded by the mask
    if mask_path:
        try:
            mask, mask_values, mask_valid = _read_whole(mask_path, feedback, "mask")
        except InputError:
            check_not_vector(mask_path, truth, "mask", "ground truth")
            raise
        _same_grid(mask, truth, "mask")
        kept = ~(mask_valid & (mask_values != 0))
    area = truth_valid & kept
    anomaly = truth_values != 0
    _check_truth_classes(truth, truth_values, truth_valid, kept, anomaly)
    evaluations = []
    for index, (path, name) in enumerate(zip(score_paths, names)):
        _, values, valid = _read_whole(path, feedback, "score raster", np.float64)  # its grid was checked above
        use = area & valid
        infinite = area & ~valid & np.isinf(values)  # invalid like nodata: say so, they may be its top scores
        if infinite.any():
            feedback.warning(f"Score raster '{name}' holds {int(infinite.sum())} infinite score(s) in the evaluated "
                             f"area ({int((infinite & anomaly).sum())} on anomaly pixels): they are left out, as "
                             "nodata is. Give them finite values (such as the largest finite score) to count them.")
        scores, labels = values[use], anomaly[use]  # float64 as read
        positives = int(labels.sum())
        if positives == 0 or positives == labels.size:
            raise InputError(
                f"Score raster '{name}' has valid scores on {'no anomaly' if positives == 0 else 'no background'} "
                "pixel of the ground truth: check its nodata, that its scores there are finite, and that it covers "
                "the ground truth."
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


def _distinct_names(paths, names=None):
    """A name per score raster (`names`, or its file name without the extension), prefixed with its folder where
    two file names would clash, and numbered if that is not enough (or for clashing names of another kind, such
    as project layers' names, whose folders may be QGIS's temporary ones)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = list(names) if names else stems
    names = [f"{os.path.basename(os.path.dirname(os.path.abspath(p)))}/{name}"
             if names.count(name) > 1 and name == stem else name for p, name, stem in zip(paths, names, stems)]
    return [f"{name} ({names[:index].count(name) + 1})" if names.count(name) > 1 else name
            for index, name in enumerate(names)]


def _check_truth_classes(truth, values, valid, kept, anomaly):
    """InputError when the evaluated area (`valid` truth pixels that the mask `kept`) holds no anomaly or no
    background pixel, saying whether the truth's nodata value took them out."""
    name = os.path.basename(truth.path)
    nodata = truth.nodata[0]
    unset = f"unset the nodata value (gdal_edit.py -unsetnodata '{name}', or in the layer's properties) and run again"
    if not valid.any():
        raise InputError(f"The ground truth '{name}' holds no valid pixel: "
                         + (f"its nodata value is {nodata:g}; if that value marks the anomalies or the background, "
                            f"{unset}." if nodata is not None else "every pixel is NaN, infinite or a fill value."))
    area = valid & kept
    for wanted, label, marks in ((anomaly, "anomaly (non-zero)", "anomalies"), (~anomaly, "background (zero)",
                                                                                "the background")):
        if (area & wanted).any():
            continue
        masked = int((valid & wanted & ~kept).sum())
        if masked:
            raise InputError(f"The mask leaves out all {masked} {label} pixels of the ground truth '{name}', so none "
                             "is left to evaluate: the mask marks what to exclude (non-zero); shrink or invert it.")
        hidden = 0
        if nodata is not None and (nodata != 0) == (marks == "anomalies"):
            hidden = int((kept & ~valid & (values == nodata)).sum())
        if hidden:
            raise InputError(f"The ground truth '{name}' has no {label} pixel left to evaluate: its nodata value is "
                             f"{nodata:g}, so its {hidden} pixels of that value are left out. If {nodata:g} marks "
                             f"{marks}, {unset}.")
        if marks == "anomalies":
            raise InputError("The ground truth has no anomaly (non-zero) pixel inside the evaluated area: check the "
                             "ground-truth raster and the mask.")
        raise InputError("The ground truth has no background (zero) pixel inside the evaluated area: every pixel is "
                         "non-zero. 0 must mark the background and non-zero the anomalies; convert a truth that marks "
                         "them otherwise (e.g. background 255) first, e.g. with QGIS's Raster calculator.")


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

