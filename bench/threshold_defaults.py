"""The README's threshold-defaults table: objects listed by each (top percent, minimum size) setting.

    .venv/bin/python bench/threshold_defaults.py [--output table.md]

Scores the demo scene (`make demo`'s, written here when absent) and the shared real scenes with a ground truth
with fers:detect's default (the bundled ensemble, fers_core.pipeline.ensemble.run_ensemble_detection with the
default members and options) and with global RX, then, for each setting, thresholds the scores at the top percent
(the product's own threshold_value: exact, ties at the cut flagged up to TIE_LIMIT x) and counts the 8-connected
objects of at least the minimum size, the objects that touch a true anomaly, and the true anomalies (8-connected
groups of ground-truth pixels) touched by an object. Real scenes: sums over the scenes, and the median of objects
per scene. A description of the defaults' effect, never used to pick a model. Skips the real scenes with a message when
../shared is absent.
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fers_core.io.reader import RasterReader  # noqa: E402
from fers_core.io.windows import Window  # noqa: E402

SCENES = ROOT.parent / "shared" / "data" / "scenes"
DEMO = ROOT / "demo"
SETTINGS = ((0.5, 1), (0.1, 2), (0.2, 1), (0.2, 2), (0.3, 2), (0.5, 3))
EIGHT = np.ones((3, 3), dtype=bool)


def read_band(path):
    with RasterReader(path, [1]) as reader:
        data, valid = reader.read(Window.whole(reader.height, reader.width))
    return data[0], valid


def demo_scene():
    from fers_core.synthetic import write_scene

    scene, truth = DEMO / "demo_scene.tif", DEMO / "demo_truth.tif"
    if not (scene.exists() and truth.exists()):
        DEMO.mkdir(exist_ok=True)
        write_scene(scene, truth)  # `python -m fers_core demo-scene`'s defaults, as make demo
    return scene, truth


def default_members():
    from fers_core.enhance.default_model import default_model_paths
    from fers_core.enhance.model_file import load_model
    from fers_core.pipeline.ensemble import Member

    return [Member(load_model(path), path.name, bundled=True) for path in default_model_paths()]


def score_maps(raster, folder, members):
    """{detector: score raster path} of the default ensemble and global RX."""
    from fers_core.detectors.global_rx import run_global_rx
    from fers_core.pipeline.ensemble import run_ensemble_detection
    from fers_core.pipeline.options import DetectOptions

    stem = Path(raster).stem
    fers, rx = os.path.join(folder, f"{stem}_fers.tif"), os.path.join(folder, f"{stem}_rx.tif")
    run_ensemble_detection(str(raster), fers, members, DetectOptions())
    run_global_rx(str(raster), rx)
    return {"FERS": fers, "RX": rx}


def counts(score_path, truth_path, percent, min_pixels):
    """(objects, objects on an anomaly, anomalies found) at the top `percent` with objects of >= `min_pixels`."""
    from fers_core.pipeline.postprocess import threshold_value

    cut = threshold_value(score_path, 0, percent).value  # 0: top percent
    scores, valid = read_band(score_path)
    truth, _ = read_band(truth_path)
    labels, found = ndimage.label(valid & (scores >= cut), structure=EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=found + 1)
    kept = np.flatnonzero(sizes >= min_pixels)
    kept = kept[kept > 0]
    anomalies, _ = ndimage.label(truth > 0, structure=EIGHT)
    listed = np.isin(labels, kept)
    on_anomaly = np.unique(labels[listed & (anomalies > 0)])
    touched = np.unique(anomalies[listed & (anomalies > 0)])
    return len(kept), len(on_anomaly), len(touched)


def table(demo, real):
    """Markdown rows: setting, demo objects (true) per detector, real sums and median per detector."""
    lines = ["| top % | min px | demo: objects (true), FERS / RX | real, FERS: objects, on an anomaly, anomalies "
             "found, median per scene | real, RX: the same |", "|---|---|---|---|---|"]
    for percent, min_pixels in SETTINGS:
        cells = [f"{percent:g}", str(min_pixels)]
        cells.append(" / ".join(f"{o} ({a})" for o, a, _ in (demo[d][(percent, min_pixels)] for d in ("FERS", "RX"))))
        for detector in ("FERS", "RX"):
            rows = [scene[detector][(percent, min_pixels)] for scene in real]
            if not rows:
                cells.append("-")
                continue
            objects, on, found = (sum(row[i] for row in rows) for i in range(3))
            median = statistics.median(row[0] for row in rows)
            cells.append(f"{objects}, {on} ({100 * on / max(objects, 1):.0f}%), {found}, {median:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    members = default_members()
    scenes = sorted(path.name[:-len("_gt.tif")] for path in SCENES.glob("*_gt.tif")) if SCENES.is_dir() else []
    if not scenes:
        print(f"{SCENES} is absent: the table has the demo scene only.", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        pairs = [demo_scene()] + [(SCENES / f"{s}.tif", SCENES / f"{s}_gt.tif") for s in scenes]
        results = []
        for raster, truth in pairs:
            maps = score_maps(raster, folder, members)
            results.append({detector: {setting: counts(path, truth, *setting) for setting in SETTINGS}
                            for detector, path in maps.items()})
            print(f"{Path(raster).stem}: done", file=sys.stderr)
    anomalies = sum(int(ndimage.label(read_band(t)[0] > 0, structure=EIGHT)[1]) for _, t in pairs[1:])
    text = table(results[0], results[1:]) + f"\n\n{len(scenes)} real scenes, {anomalies} anomalies.\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
