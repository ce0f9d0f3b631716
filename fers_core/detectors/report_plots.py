"""The evaluation report's plots as inline SVG (no external dependency): ROC curves and score histograms."""

import html
import math

import numpy as np

from .metrics import FALSE_ALARM_RATES

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")


def escape(text):
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
                     f"{escape(x_label)}</text>")
        parts.append(f'<text transform="translate(16 {(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle" '
                     f'class="label">{escape(y_label)}</text>')
        return parts


def _svg(width, height, parts, title):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{escape(title)}">' + "".join(parts) + "</svg>")


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


def roc_svg(evaluations, plot_width=600, height=430):
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
        parts.append(f'<g class="entry"><title>{escape(name)}</title>'
                     f'<line x1="0" y1="{y - 4}" x2="28" y2="{y - 4}" {_curve_style(index)}/>'
                     f'<text x="36" y="{y}">{escape(shown)}</text>'
                     f'<text x="36" y="{y + 16}" class="auc">AUC {evaluation.auc:.4f}</text></g>')
    parts.append("</g>")
    width = 8 + 36 + int(longest * 7.2) + 12
    return parts, width, top + 38 * len(evaluations) + 12


def _rate_label(rate):
    """A false-alarm rate as a plain percentage: 0.001%, 0.01%, 0.1%, 1%, 10%, 100%."""
    percent = rate * 100
    return f"{percent:.{max(0, -math.floor(math.log10(percent) + 1e-9))}f}%"


def histogram_svg(evaluation, colour, width=500, height=280):
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
                     f'fill-opacity="0.7"/><text x="{x + 18}" y="14">{escape(text)}</text></g>')
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
        ticks = [(float(d), number_label(10.0**d)) for d in range(math.ceil(lo), math.floor(hi) + 1)]
        if len(ticks) >= 2:
            return ticks
    return [(v, number_label(10.0**v if log else v)) for v in _linear_ticks(lo, hi)]


def number_label(value):
    """Four significant digits (a best-F1 threshold is reused as an absolute threshold: '3e-04' lost them)."""
    return "0" if value == 0 else f"{value:.4g}"

