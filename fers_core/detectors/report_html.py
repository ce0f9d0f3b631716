"""The evaluation report as one self-contained HTML page: the metrics table, the plots, definitions, inputs."""

import datetime

from .report_plots import COLOURS, escape, histogram_svg, number_label, roc_svg

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
            f'<tr><td><span class="swatch" style="background:{colour}"></span>{escape(e.name)}</td>'
            f"<td>{e.valid_pixels}</td><td>{e.anomaly_pixels}</td><td><b>{e.auc:.4f}</b></td>"
            f"<td>{e.detection_rate_0_1:.3f}</td><td>{e.detection_rate_1:.3f}</td><td>{e.best_f1:.3f}</td>"
            f"<td>{escape(number_label(e.best_f1_threshold))}</td></tr>"
        )
    plots = "".join(
        f'<div class="plot"><h3>{escape(e.name)}</h3>{histogram_svg(e, COLOURS[i % len(COLOURS)])}</div>'
        for i, e in enumerate(evaluations)
    )
    sources = "".join(f"<li>{escape(e.name)}: {escape(e.path)}</li>" for e in evaluations)
    mask = f"<li>Exclusion mask: {escape(report.mask_path)}</li>" if report.mask_path else ""
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>FERS anomaly detection evaluation</title>
<style>{_STYLE}</style></head><body>
<h1>Anomaly detection evaluation</h1>
<p class="meta">Ground truth: {escape(report.truth_path)} &middot; {created} &middot; FERS for QGIS</p>
<table>
<tr><th>Score raster</th><th>Pixels</th><th>Anomaly pixels</th><th>AUC</th><th>Detection at 0.1% FA</th>
<th>Detection at 1% FA</th><th>Best F1</th><th>Best-F1 threshold</th></tr>
{"".join(rows)}
</table>
<h2>ROC curves</h2>
{roc_svg(evaluations)}
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
