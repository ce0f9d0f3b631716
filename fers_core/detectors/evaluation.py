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

The HTML report has no external dependency: plots are inline SVG drawn here.
"""

import csv
import datetime
import html
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..feedback import Feedback, ProgressRange
from ..io.atomic import AtomicOutput
from ..io.output_safety import check_outputs
from ..io.raster_io import RasterReader, Window, check_same_grid
from .metrics import roc_auc

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
FALSE_ALARM_RATES = (0.001, 0.01)
_HISTOGRAM_BINS = 60


@dataclass
class RocCurve:
    """ROC points at every distinct score, highest first, after the (0, 0) start (threshold +inf)."""

    thresholds: np.ndarray
    false_alarm_rate: np.ndarray
    detection_rate: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray

    def detection_at(self, rate):
        """Highest detection rate among thresholds whose false-alarm rate is <= rate."""
        index = int(np.searchsorted(self.false_alarm_rate, rate * (1 + 1e-12), side="right")) - 1
        return float(self.detection_rate[max(index, 0)])

    def corners(self):
        """Indices of the points where the curve changes direction (collinear points dropped)."""
        fp, tp = self.false_positives, self.true_positives
        if fp.size <= 2:
            return np.arange(fp.size)
        turning = np.logical_or(np.diff(fp, 2) != 0, np.diff(tp, 2) != 0)
        return np.nonzero(np.r_[True, turning, True])[0]


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


def roc_curve(scores, labels):
    """The full ROC curve of scores (1-D) against boolean labels."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel() != 0
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise InputError("The ground truth needs both anomaly and background pixels to draw a ROC curve.")
    order = np.argsort(-scores, kind="mergesort")
    ordered = scores[order]
    ends = np.r_[np.nonzero(np.diff(ordered))[0], ordered.size - 1]  # last position of each distinct score
    true_positives = np.cumsum(labels[order])[ends]
    false_positives = ends + 1 - true_positives
    return RocCurve(
        np.r_[np.inf, ordered[ends]],
        np.r_[0.0, false_positives / negatives],
        np.r_[0.0, true_positives / positives],
        np.r_[0, true_positives],
        np.r_[0, false_positives],
    )


def best_f1(curve, positives):
    """(best F1, its threshold) over the curve's thresholds."""
    tp, fp = curve.true_positives[1:], curve.false_positives[1:]
    f1 = 2 * tp / (tp + fp + positives)
    index = int(np.argmax(f1))
    return float(f1[index]), float(curve.thresholds[1:][index])


def _score_histogram(scores, labels):
    """Per-class histograms (fractions of each class per bin), on a log10 axis for positive heavy-tailed scores."""
    low, high = float(np.percentile(scores, 0.1)), float(scores.max())
    logarithmic = low > 0 and high / low > 10  # RX-like heavy tails: a log axis shows background and anomalies
    values = np.log10(np.maximum(scores, low)) if logarithmic else scores  # the few below `low` clip to it anyway
    lo, hi = (math.log10(low), math.log10(high)) if logarithmic else (low, high)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, _HISTOGRAM_BINS + 1)
    clipped = np.clip(values, lo, hi)
    background = np.histogram(clipped[~labels], edges)[0] / max(1, int((~labels).sum()))
    anomalies = np.histogram(clipped[labels], edges)[0] / max(1, int(labels.sum()))
    return {"edges": edges, "background": background, "anomalies": anomalies, "log": logarithmic}


def _read_whole(path):
    reader = RasterReader(path, [1])
    data, valid = reader.read(Window(0, 0, reader.height, reader.width), dtype=np.float32)
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
    truth, truth_values, truth_valid = _read_whole(truth_path)
    for path in score_paths:  # every grid first, before any long work
        with RasterReader(path, [1]) as reader:
            _same_grid(reader, truth, "score raster")
    area = truth_valid
    if mask_path:
        mask, mask_values, mask_valid = _read_whole(mask_path)
        _same_grid(mask, truth, "mask")
        area = area & ~(mask_valid & (mask_values != 0))
    anomaly = truth_values != 0
    if not (area & anomaly).any():
        raise InputError(
            "The ground truth has no anomaly (non-zero) pixel inside the evaluated area: check the ground-truth "
            "raster and the mask."
        )
    evaluations = []
    for index, (path, name) in enumerate(zip(score_paths, names)):
        reader, values, valid = _read_whole(path)
        _same_grid(reader, truth, "score raster")
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
            f1, f1_threshold, curve, _score_histogram(scores, labels),
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


# ---------------------------------------------------------------------------------------------
# HTML report with inline SVG plots


def _esc(text):
    return html.escape(str(text), quote=True)


class _Axes:
    """Maps data to SVG coordinates inside a plot area."""

    def __init__(self, width, height, x_range, y_range, x_log=False, margin=(62, 18, 22, 52)):
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = margin
        self.x_range, self.y_range, self.x_log = x_range, y_range, x_log

    def x(self, value):
        lo, hi = self.x_range
        if self.x_log:
            value, lo, hi = math.log10(value), math.log10(lo), math.log10(hi)
        return self.left + (value - lo) / (hi - lo) * (self.width - self.left - self.right)

    def y(self, value):
        lo, hi = self.y_range
        return self.height - self.bottom - (value - lo) / (hi - lo) * (self.height - self.top - self.bottom)

    def frame(self, x_ticks, y_ticks, x_label, y_label):
        parts = []
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.top, self.height - self.bottom
        for value, text in x_ticks:
            px = self.x(value)
            parts.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y1}" class="grid"/>')
            parts.append(f'<text x="{px:.1f}" y="{y1 + 16}" text-anchor="middle">{text}</text>')
        for value, text in y_ticks:
            py = self.y(value)
            parts.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" class="grid"/>')
            parts.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{text}</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" class="frame"/>')
        parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{self.height - 10}" text-anchor="middle" class="label">'
                     f"{_esc(x_label)}</text>")
        parts.append(f'<text transform="translate(16 {(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle" '
                     f'class="label">{_esc(y_label)}</text>')
        return parts


def _svg(width, height, parts, title):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{_esc(title)}">' + "".join(parts) + "</svg>")


def _roc_x_range(curves):
    """(lowest, highest) false-alarm rate plotted: the decade of one false alarm in the largest background, up
    to the decade where every curve has found every anomaly (at least 10%, so both markers show)."""
    negatives = min(max(1, int(c.false_positives[-1])) for c in curves)
    lowest = 10.0 ** math.floor(math.log10(max(1.0 / negatives, 1e-6)))
    complete = max(float(c.false_alarm_rate[int(np.argmax(c.detection_rate >= 1))]) for c in curves)
    highest = min(1.0, 10.0 ** math.ceil(math.log10(max(complete, 0.1)) - 1e-9))
    return lowest, max(highest, lowest * 10)


def _roc_y_floor(curves, lowest_rate):
    """Bottom of the detection axis: a bit below the lowest detection rate any curve has at the lowest plotted
    false-alarm rate, on a round tick (0 when that is low anyway), so curves of good detectors fill the plot."""
    reached = min(c.detection_at(lowest_rate) for c in curves)
    floor = reached - max(0.1 * (1 - reached), 0.01)
    if floor <= 0.3:
        return 0.0
    step = _linear_step(1.0 - floor)
    return round(math.floor(round(floor / step, 9)) * step, 9)


def _roc_svg(evaluations, plot_width=600, height=430):
    """ROC curves on a log false-alarm axis, the detection axis zoomed to the data, the legend beside the plot."""
    curves = [e.curve for e in evaluations]
    x_range = _roc_x_range(curves)
    y_floor = _roc_y_floor(curves, x_range[0])
    pad = 0.015 * (1.0 - y_floor)  # curves at 0 or 1 stay clear of the frame
    axes = _Axes(plot_width, height, x_range, (y_floor - pad, 1.0 + pad), x_log=True)
    decades = range(int(round(math.log10(x_range[0]))), int(round(math.log10(x_range[1]))) + 1)
    x_ticks = [(10.0**d, _rate_label(10.0**d)) for d in decades]
    step = _linear_step(1.0 - y_floor)
    y_ticks = [(v, f"{v:.{_decimals(step)}f}") for v in _linear_ticks(y_floor, 1.0)]
    parts = []
    for decade in decades[:-1]:  # minor grid: 2..9 times each decade
        for factor in range(2, 10):
            px = axes.x(factor * 10.0**decade)
            parts.append(f'<line x1="{px:.1f}" y1="{axes.top}" x2="{px:.1f}" y2="{height - axes.bottom}" '
                         'class="grid minor"/>')
    parts += axes.frame(x_ticks, y_ticks, "false-alarm rate (log scale)", "detection rate")
    for rate in FALSE_ALARM_RATES:
        if x_range[0] <= rate <= x_range[1]:
            px = axes.x(rate)
            parts.append(f'<line x1="{px:.1f}" y1="{axes.top}" x2="{px:.1f}" y2="{height - axes.bottom}" '
                         'class="marker"/>')
    grid = np.logspace(math.log10(x_range[0]), math.log10(x_range[1]), 600)
    for index, evaluation in enumerate(evaluations):
        curve = evaluation.curve
        positions = np.searchsorted(curve.false_alarm_rate, grid, side="right") - 1
        detection = curve.detection_rate[positions]
        points, previous = [], None
        for rate, value in zip(grid, detection):  # a staircase: detection at each false-alarm rate
            if previous is not None:
                points.append(f"{axes.x(rate):.1f},{axes.y(previous):.1f}")
            points.append(f"{axes.x(rate):.1f},{axes.y(value):.1f}")
            previous = value
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" {_curve_style(index)}/>')
    legend, legend_width, legend_height = _roc_legend(evaluations, plot_width, axes.top)
    return _svg(plot_width + legend_width, max(height, legend_height), parts + legend, "ROC curves")


_DASHES = ("", "7 4", "2 3", "10 3 2 3")
_LEGEND_NAME_CHARS = 44


def _curve_style(index):
    """Stroke of curve `index`: its colour, and a dash pattern so curves that coincide stay visible."""
    dash = _DASHES[index % len(_DASHES)]
    style = f'stroke="{COLOURS[index % len(COLOURS)]}" stroke-width="2.2"'
    return style + (f' stroke-dasharray="{dash}"' if dash else "")


def _roc_legend(evaluations, left, top):
    """(SVG parts, width, bottom) of the legend right of the plot: one entry per curve, with its AUC."""
    x = left + 8
    parts = [f'<g class="legend" transform="translate({x} {top})">']
    longest = 10
    for index, evaluation in enumerate(evaluations):
        name = evaluation.name
        shown = name if len(name) <= _LEGEND_NAME_CHARS else name[:_LEGEND_NAME_CHARS - 1] + "\u2026"
        longest = max(longest, len(shown))
        y = 12 + 38 * index
        parts.append(f'<g class="entry"><title>{_esc(name)}</title>'
                     f'<line x1="0" y1="{y - 4}" x2="28" y2="{y - 4}" {_curve_style(index)}/>'
                     f'<text x="36" y="{y}">{_esc(shown)}</text>'
                     f'<text x="36" y="{y + 16}" class="auc">AUC {evaluation.auc:.4f}</text></g>')
    parts.append("</g>")
    width = 8 + 36 + int(longest * 7.2) + 12
    return parts, width, top + 38 * len(evaluations) + 12


def _rate_label(rate):
    """A false-alarm rate as a plain percentage: 0.001%, 0.01%, 0.1%, 1%, 10%, 100%."""
    percent = rate * 100
    return f"{percent:.{max(0, -math.floor(math.log10(percent) + 1e-9))}f}%"


def _histogram_svg(evaluation, colour, width=500, height=280):
    h = evaluation.histogram
    edges, background, anomalies = h["edges"], h["background"], h["anomalies"]
    top = max(float(background.max()), float(anomalies.max()), 1e-12) * 1.08
    axes = _Axes(width, height, (float(edges[0]), float(edges[-1])), (0.0, top), margin=(62, 18, 26, 52))
    x_ticks = _nice_ticks(edges[0], edges[-1], log=h["log"])
    y_ticks = [(v, f"{round(v * 100, 6):g}%") for v in _linear_ticks(0.0, top)]
    label = ("score (log scale)" if h["log"] else "score") + "; dashed: best-F1 threshold"
    parts = axes.frame(x_ticks, y_ticks, label, "share of the class's pixels")
    for counts, fill, opacity in ((background, "#7f7f7f", 0.55), (anomalies, colour, 0.55)):
        for left, right, value in zip(edges[:-1], edges[1:], counts):
            if value <= 0:
                continue
            x0, x1, y = axes.x(left), axes.x(right), axes.y(value)
            parts.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
                         f'height="{axes.y(0) - y:.1f}" fill="{fill}" fill-opacity="{opacity}"/>')
    threshold = evaluation.best_f1_threshold
    position = math.log10(threshold) if h["log"] and threshold > 0 else threshold
    if edges[0] <= position <= edges[-1]:
        px = axes.x(position)
        parts.append(f'<line x1="{px:.1f}" y1="{axes.top}" x2="{px:.1f}" y2="{height - axes.bottom}" class="marker"/>')
    x = axes.left  # the legend sits above the plot area, clear of the bars
    for text, fill in ((f"background ({evaluation.valid_pixels - evaluation.anomaly_pixels} pixels)", "#7f7f7f"),
                       (f"anomalies ({evaluation.anomaly_pixels} pixels)", colour)):
        parts.append(f'<g class="legend"><rect x="{x}" y="4" width="12" height="12" fill="{fill}" '
                     f'fill-opacity="0.7"/><text x="{x + 18}" y="14">{_esc(text)}</text></g>')
        x += 18 + int(len(text) * 7) + 20
    return _svg(width, height, parts, f"Score distributions of {evaluation.name}")


def _linear_step(span, count=5):
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving at most `count` steps over span."""
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 2.5, 5, 10):
        if span / (step * factor) <= count + 1e-9:
            return step * factor
    return step * 10


def _decimals(step):
    """Decimals that print every multiple of step exactly."""
    return next((d for d in range(8) if abs(round(step, d) - step) < 1e-9 * max(step, 1)), 8)


def _linear_ticks(lo, hi, count=5):
    span = hi - lo
    if span <= 0:
        return [lo]
    step = _linear_step(span, count)
    first = math.ceil(round(lo / step, 9)) * step
    return [round(first + i * step, 9) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _nice_ticks(lo, hi, log):
    if log:
        ticks = [(float(d), _number(10.0**d)) for d in range(math.ceil(lo), math.floor(hi) + 1)]
        if len(ticks) >= 2:
            return ticks
    return [(v, _number(10.0**v if log else v)) for v in _linear_ticks(lo, hi)]


def _number(value):
    """Four significant digits (a best-F1 threshold is reused as an absolute threshold: '3e-04' lost them)."""
    return "0" if value == 0 else f"{value:.4g}"


_STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px auto; max-width: 1040px; color: #222;
       padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
p.meta { color: #555; font-size: 13px; margin-top: 0; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { border-bottom: 1px solid #ddd; padding: 5px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
svg { background: #fff; font-size: 12px; font-family: "DejaVu Sans", Arial, sans-serif; }
svg .grid { stroke: #e4e4e4; stroke-width: 1; } svg .minor { stroke: #f2f2f2; }
svg .legend text { font-size: 13px; } svg .legend .auc { fill: #444; font-size: 12px; }
svg .frame { fill: none; stroke: #888; }
svg .marker { stroke: #999; stroke-dasharray: 4 3; } svg .label { font-size: 13px; }
svg .note { fill: #666; font-size: 11px; }
.plots { display: flex; flex-wrap: wrap; gap: 8px 24px; }
.plot h3 { font-size: 14px; margin: 12px 0 2px 0; } .swatch { display: inline-block; width: 10px; height: 10px;
 margin-right: 6px; }
dl { font-size: 13px; color: #444; } dt { font-weight: bold; margin-top: 6px; } dd { margin-left: 16px; }
"""


def render_html(report):
    """The evaluation report as a self-contained HTML page."""
    evaluations = report.evaluations
    rows = []
    for index, e in enumerate(evaluations):
        colour = COLOURS[index % len(COLOURS)]
        rows.append(
            f'<tr><td><span class="swatch" style="background:{colour}"></span>{_esc(e.name)}</td>'
            f"<td>{e.valid_pixels}</td><td>{e.anomaly_pixels}</td><td><b>{e.auc:.4f}</b></td>"
            f"<td>{e.detection_rate_0_1:.3f}</td><td>{e.detection_rate_1:.3f}</td><td>{e.best_f1:.3f}</td>"
            f"<td>{_esc(_number(e.best_f1_threshold))}</td></tr>"
        )
    plots = "".join(
        f'<div class="plot"><h3>{_esc(e.name)}</h3>{_histogram_svg(e, COLOURS[i % len(COLOURS)])}</div>'
        for i, e in enumerate(evaluations)
    )
    sources = "".join(f"<li>{_esc(e.name)}: {_esc(e.path)}</li>" for e in evaluations)
    mask = f"<li>Exclusion mask: {_esc(report.mask_path)}</li>" if report.mask_path else ""
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>FERS anomaly detection evaluation</title>
<style>{_STYLE}</style></head><body>
<h1>Anomaly detection evaluation</h1>
<p class="meta">Ground truth: {_esc(report.truth_path)} &middot; {created} &middot; FERS for QGIS</p>
<table>
<tr><th>Score raster</th><th>Pixels</th><th>Anomaly pixels</th><th>AUC</th><th>Detection at 0.1% FA</th>
<th>Detection at 1% FA</th><th>Best F1</th><th>Best-F1 threshold</th></tr>
{"".join(rows)}
</table>
<h2>ROC curves</h2>
{_roc_svg(evaluations)}
<h2>Score distributions: background and anomalies</h2>
<div class="plots">{plots}</div>
<h2>Definitions</h2>
<dl>
<dt>Pixels</dt><dd>Pixels evaluated: valid score, valid ground truth, not excluded by the mask.</dd>
<dt>Detection at x% FA</dt><dd>Share of the anomaly pixels flagged by the threshold that flags at most x% of
the background pixels (false alarms); the dashed lines on the ROC plot mark 0.1% and 1%.</dd>
<dt>AUC</dt><dd>Area under the ROC curve (1 = perfect, 0.5 = chance), tied scores counting one half.</dd>
<dt>Best F1</dt><dd>Highest F1 = 2&nbsp;TP / (2&nbsp;TP + FP + FN) over all thresholds; pixels with a score
&ge; the threshold are flagged.</dd>
<dt>Score distributions</dt><dd>Each class's histogram as a share of that class's pixels, so the few anomaly
pixels stay visible next to the background.</dd>
</dl>
<h2>Inputs</h2>
<ul>{sources}{mask}</ul>
</body></html>
"""
