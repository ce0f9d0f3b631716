"""The evaluation report's ROC plot: log false-alarm axis with plain labels, detection axis zoomed to the data,
legend (with each AUC) outside the plot area, so two good detectors are told apart at a glance."""

import re
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from fers.fers_core.detectors.evaluation import EvaluationReport, ScoreEvaluation
from fers.fers_core.detectors.metrics import best_f1, roc_auc, roc_curve, score_histogram
from fers.fers_core.detectors.report_html import render_html

SVG = "{http://www.w3.org/2000/svg}"


def evaluation(name, scores, labels):
    curve = roc_curve(scores, labels)
    f1, threshold = best_f1(curve, int(labels.sum()))
    return ScoreEvaluation(name, f"/data/{name}.tif", labels.size, int(labels.sum()), roc_auc(scores, labels),
                           curve.detection_at(0.001), curve.detection_at(0.01), f1, threshold, curve,
                           score_histogram(scores, labels))


def good_detectors():
    """50000 background and 55 anomaly pixels; 52 anomalies score above every background pixel in both
    detectors, the other 3 sit at the background's 88th (AUC 0.9935) or 96th percentile (AUC 0.9978)."""
    background = np.random.default_rng(0).normal(0, 1, 50000)
    labels = np.r_[np.zeros(50000, bool), np.ones(55, bool)]
    detectors = []
    for name, percentile in (("global RX", 88), ("FERS", 96)):
        anomalies = np.r_[np.full(52, 10.0), np.full(3, np.percentile(background, percentile))]
        detectors.append(evaluation(name, np.r_[background, anomalies], labels))
    return detectors


def roc_plot(evaluations):
    page = render_html(EvaluationReport(evaluations, "/data/truth.tif", None))
    start = page.index("<svg", page.index("ROC curves</h2>"))
    return ElementTree.fromstring(page[start:page.index("</svg>", start) + 6])


def plot_area(svg):
    frame = next(r for r in svg.iter(f"{SVG}rect") if r.get("class") == "frame")
    x, y, width, height = (float(frame.get(k)) for k in ("x", "y", "width", "height"))
    return x, y, x + width, y + height


def axis_labels(svg):
    """(x tick labels left to right, y tick labels bottom to top)."""
    left, top, right, bottom = plot_area(svg)
    in_legend = {id(t) for g in svg.iter(f"{SVG}g") if g.get("class") == "legend" for t in g.iter(f"{SVG}text")}
    texts = [t for t in svg.iter(f"{SVG}text") if t.get("class") is None and t.get("x") is not None
             and id(t) not in in_legend]
    x_labels = sorted((float(t.get("x")), t.text) for t in texts if float(t.get("y")) > bottom and
                      t.get("text-anchor") == "middle")
    y_labels = sorted((-float(t.get("y")), t.text) for t in texts if float(t.get("x")) < left)
    return [text for _, text in x_labels], [text for _, text in y_labels]


def curves(svg):
    return [np.array([[float(v) for v in point.split(",")] for point in line.get("points").split()])
            for line in svg.iter(f"{SVG}polyline")]


def test_two_good_detectors_are_told_apart():
    detectors = good_detectors()
    assert [round(d.auc, 4) for d in detectors] == [0.9935, 0.9978]
    svg = roc_plot(detectors)
    left, top, right, bottom = plot_area(svg)
    first, second = curves(svg)
    assert first.shape == second.shape  # sampled at the same false-alarm rates
    gap = np.abs(first[:, 1] - second[:, 1]).max()
    assert gap > 0.5 * (bottom - top), f"the curves are at most {gap:.0f} px apart"
    for curve in (first, second):
        assert curve[:, 0].min() >= left and curve[:, 0].max() <= right
        assert curve[:, 1].min() > top and curve[:, 1].max() < bottom  # clear of the frame, inside the plot


def test_detection_axis_is_zoomed_to_the_data():
    _, y_labels = axis_labels(roc_plot(good_detectors()))
    lowest = min(d.curve.detection_at(1e-5) for d in good_detectors())  # 52 / 55
    assert 0.85 <= float(y_labels[0]) < lowest
    assert float(y_labels[-1]) == 1.0
    assert len(y_labels) >= 4


def test_detection_axis_starts_at_zero_for_a_weak_detector():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(5000, bool), np.ones(50, bool)]
    weak = evaluation("weak", np.r_[rng.normal(0, 1, 5000), rng.normal(1.5, 1, 50)], labels)
    _, y_labels = axis_labels(roc_plot([weak]))
    assert float(y_labels[0]) == 0 and float(y_labels[-1]) == 1


def test_false_alarm_axis_has_plain_percent_labels():
    x_labels, _ = axis_labels(roc_plot(good_detectors()))
    assert x_labels == ["0.001%", "0.01%", "0.1%", "1%", "10%", "100%"]


def test_false_alarm_axis_ends_where_every_anomaly_is_found():
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(9000, bool), np.ones(40, bool)]
    background = rng.normal(0, 1, 9000)
    scores = np.r_[background, np.full(38, 9.0), np.percentile(background, [99.5, 98])]  # all found at 2%
    x_labels, _ = axis_labels(roc_plot([evaluation("sharp", scores, labels)]))
    assert x_labels == ["0.01%", "0.1%", "1%", "10%"]


def test_legend_is_outside_the_plot_with_each_auc():
    detectors = good_detectors()
    svg = roc_plot(detectors)
    _, _, right, _ = plot_area(svg)
    legend = next(g for g in svg.iter(f"{SVG}g") if g.get("class") == "legend")
    offset = float(re.match(r"translate\(([-\d.]+) ", legend.get("transform")).group(1))
    assert offset > right
    for element in legend.iter():
        if element.get("x") is not None:
            assert offset + float(element.get("x")) > right
        if element.get("x1") is not None:
            assert offset + min(float(element.get("x1")), float(element.get("x2"))) > right
    entries = ["".join(entry.itertext()) for entry in legend.iter(f"{SVG}g") if entry.get("class") == "entry"]
    assert len(entries) == 2
    for entry, detector in zip(entries, detectors):
        assert detector.name in entry and f"AUC {detector.auc:.4f}" in entry
    assert int(svg.get("width")) >= offset + 100  # the legend fits in the picture


def test_long_names_are_shortened_in_the_legend_and_kept_in_its_tooltip():
    long_name = "abu-urban-2 FERS anomaly scores with the fine-tuned model (second try, local RX)"
    detector = good_detectors()[0]
    detector.name = long_name
    svg = roc_plot([detector])
    entry = next(g for g in svg.iter(f"{SVG}g") if g.get("class") == "entry")
    assert entry.find(f"{SVG}title").text == long_name
    shown = [t.text for t in entry.iter(f"{SVG}text")][0]
    assert shown.endswith("\u2026") and len(shown) < len(long_name)


@pytest.mark.parametrize("count", [1, 4, 12])
def test_legend_fits_any_number_of_curves(count):
    detector = good_detectors()[0]
    svg = roc_plot([detector] * count)
    legend = next(g for g in svg.iter(f"{SVG}g") if g.get("class") == "legend")
    offset_y = float(re.match(r"translate\([-\d.]+ ([-\d.]+)\)", legend.get("transform")).group(1))
    lowest = max(float(t.get("y")) for t in legend.iter(f"{SVG}text"))
    assert offset_y + lowest < int(svg.get("height"))


def test_best_f1_threshold_keeps_four_significant_digits():
    detector = good_detectors()[0]
    detector.best_f1_threshold = 0.000302159
    page = render_html(EvaluationReport([detector], "/data/truth.tif", None))
    assert "<td>0.0003022</td>" in page


@pytest.mark.parametrize("html, csv, message", [
    ("report.tif", None, r"^The HTML report '.*report.tif' must be named with .html or .htm"),
    ("report", None, r"^The HTML report '.*report' must be named with .html or .htm"),
    ("report.html", "roc.xlsx", r"^The CSV curves '.*roc.xlsx' must be named with .csv or .txt"),
])
def test_report_outputs_are_named_for_what_they_hold(tmp_path, html, csv, message):
    import os

    from fers.fers_core.detectors.evaluation import evaluate
    from fers.fers_core.errors import OutputError

    from ...rasters import write_cube

    truth = np.zeros((6, 6), np.uint8)
    truth[2, 2] = 1
    truth_path = write_cube(tmp_path / "truth.tif", truth)
    scores_path = write_cube(tmp_path / "scores.tif", truth.astype(np.float32))
    with pytest.raises(OutputError, match=message):
        evaluate([scores_path], truth_path, html_path=str(tmp_path / html),
                 csv_path=str(tmp_path / csv) if csv else None)
    assert sorted(os.listdir(tmp_path)) == ["scores.tif", "truth.tif"]


def test_infinite_scores_are_named_not_dropped_silently(tmp_path):
    """Half the anomalies at +inf: the AUC was computed on the other half, without a word."""
    from fers.fers_core.detectors.evaluation import evaluate

    from ...rasters import write_cube
    from .. import Log

    rng = np.random.default_rng(0)
    truth = np.zeros((30, 30), dtype=np.uint8)
    truth[5:9, 5:9] = 1
    scores = rng.normal(size=(30, 30)).astype(np.float32) + 3 * truth
    scores[5:7, 5:9] = np.inf
    score_path = write_cube(tmp_path / "scores.tif", scores[None])
    truth_path = write_cube(tmp_path / "truth.tif", truth[None])
    log = Log()
    evaluate([score_path], truth_path, feedback=log)
    assert [w for w in log.warnings if "holds 8 infinite score(s) in the evaluated area (8 on anomaly pixels): they "
                                       "are left out, as nodata is." in w]
