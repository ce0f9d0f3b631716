"""Per-scene AUC table of the bundled model on the shared scenes it was not trained on.

    .venv/bin/python bench/evaluate.py [--model weights/fers_default.pt] [--output table.md]

Scenes: every scene with a ground truth in ../shared/data/scenes (relative to the project root)
whose file is not among the model's training inputs (read from the model file's provenance).
Columns, all through the plugin's own detection code (fers_core.pipeline.detect.run_fers_detection with its
default options, and fers_core.detectors.global_rx.run_global_rx):

- plain RX: global RX on the raster as it is;
- plain RX at the model's bands: global RX on the raster resampled to the model's band count, the
  preprocessing FERS applies before its networks (no network), so the networks' own share shows;
- random init: the random-init ablation (fers_core.enhance.model_file.random_init_model, seed 0) at the
  model's band count, spectral only and spectral + spatial;
- the FERS authors' spectral checkpoints, imported (spectral only), when ../shared/reference is there;
- the model itself, spectral only and spectral + spatial (when it has a spatial branch);
- the default ensemble (fers:detect with an empty MODEL: fers_core.enhance.default_model.default_model_paths,
  rank fusion, default options) when the model is the bundled one; scenes any member trained on are left out.

Prints the markdown table (and writes it to --output). Exits with a clear message, status 0, when
../shared is absent (a fresh clone elsewhere does not have it). Never used for model selection.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCENES = SHARED / "data" / "scenes"
CHECKPOINTS = SHARED / "reference" / "fers-checkpoints"
AUTHORS = ("had100-50", "had100-100", "had100-200", "abu-aviris-200")
sys.path.insert(0, str(ROOT))

from fers_core.io.reader import RasterReader  # noqa: E402
from fers_core.io.windows import Window  # noqa: E402


def read_band(path):
    with RasterReader(path, [1]) as reader:
        data, valid = reader.read(Window.whole(reader.height, reader.width))
    return data[0], valid


def auc_of(score_path, truth_path):
    from fers_core.detectors.metrics import roc_auc

    scores, valid = read_band(score_path)
    truth, _ = read_band(truth_path)
    return roc_auc(scores[valid], truth[valid])


def evaluation_scenes(models):
    """Scenes with a ground truth that are not among any of the models' training inputs."""
    trained_on = {os.path.basename(name) for model in models for name in model.provenance.get("inputs", [])}
    scenes = sorted(path.name[:-len("_gt.tif")] for path in SCENES.glob("*_gt.tif"))
    return [name for name in scenes if f"{name}.tif" not in trained_on]


def resampled_rx_auc(raster, truth, bands):
    """AUC of global RX on the raster resampled to ``bands`` bands (RX is affine invariant: no scaling)."""
    from fers_core.detectors.metrics import roc_auc
    from fers_core.detectors.rx import rx_scores
    from fers_core.pipeline.preprocess import resample_bands

    with RasterReader(str(raster)) as reader:
        data, valid = reader.read(Window.whole(reader.height, reader.width))
    cube = resample_bands(data[:, valid].astype(np.float64)[:, :, None], bands)[:, :, 0]
    labels, _ = read_band(truth)
    return roc_auc(rx_scores(cube.T), labels[valid])


def columns(model, model_name, baselines=True):
    """(column title, model, branches) for every FERS column (only the model's own without baselines)."""
    from fers_core.enhance.checkpoints import import_authors_checkpoint
    from fers_core.enhance.model_file import random_init_model

    result = []
    if baselines:
        random_model = random_init_model(model.bands, seed=0)
        result += [(f"random init {model.bands}, spectral", random_model, ("spectral",)),
                   (f"random init {model.bands}, spectral + spatial", random_model, ("spectral", "spatial"))]
        for name in AUTHORS:
            if (CHECKPOINTS / name).is_dir():
                result.append((f"authors {name}", import_authors_checkpoint(CHECKPOINTS / name), ("spectral",)))
    result.append((f"{model_name}, spectral", model, ("spectral",)))
    if model.has_branch("spatial"):
        result.append((f"{model_name}, spectral + spatial", model, ("spectral", "spatial")))
    return result


ENSEMBLE_TITLE = "default ensemble (empty MODEL)"


def default_members(model_path, model):
    """The default ensemble's members when ``model_path`` is the bundled model (``model``, already loaded), else []."""
    from fers_core.enhance.default_model import DEFAULT_MODEL_FILE, default_model_paths
    from fers_core.enhance.model_file import load_model
    from fers_core.pipeline.ensemble import Member

    if Path(model_path).resolve() != DEFAULT_MODEL_FILE.resolve():
        return []
    first, *others = default_model_paths()
    return [Member(model, first.name, bundled=True)] + [Member(load_model(path), path.name, bundled=True)
                                                          for path in others]


def evaluate(model_path, spatial_tile=None, progress=print, baselines=True):
    """{scene: {column: AUC}} and the column order."""
    import torch

    from fers_core.detectors.global_rx import run_global_rx
    from fers_core.enhance.checkpoints import load_any_model
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.ensemble import run_ensemble_detection
    from fers_core.pipeline.options import DetectOptions

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_any_model(model_path)
    model_name = Path(model_path).stem
    table_columns = columns(model, model_name, baselines)
    resampled_title = f"plain RX, {model.bands} bands"
    titles = ["plain RX", resampled_title] + [title for title, _, _ in table_columns]
    members = default_members(model_path, model)
    if members:
        titles.append(ENSEMBLE_TITLE)
    table = {}
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "scores.tif")
        for scene in evaluation_scenes([model] + [member.model for member in members]):
            started = time.perf_counter()
            raster, truth = SCENES / f"{scene}.tif", SCENES / f"{scene}_gt.tif"
            run_global_rx(raster, output)
            row = {"plain RX": auc_of(output, truth), resampled_title: resampled_rx_auc(raster, truth, model.bands)}
            for title, column_model, branches in table_columns:
                options = DetectOptions(branches=branches, **({"spatial_tile": spatial_tile} if spatial_tile else {}))
                run_fers_detection(raster, output, column_model, options)
                row[title] = auc_of(output, truth)
            if members:
                run_ensemble_detection(raster, output, members, DetectOptions())
                row[ENSEMBLE_TITLE] = auc_of(output, truth)
            table[scene] = row
            progress(f"{scene}: {time.perf_counter() - started:.0f} s")
    return table, titles


def markdown(table, titles):
    """The table with one row per scene, a mean row and a row of differences to plain RX."""
    lines = ["| scene | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for scene, row in table.items():
        best = max(row.values())
        cells = [f"**{row[t]:.4f}**" if row[t] == best else f"{row[t]:.4f}" for t in titles]
        lines.append(f"| {scene} | " + " | ".join(cells) + " |")
    means = {t: float(np.mean([row[t] for row in table.values()])) for t in titles}
    lines.append("| **mean** | " + " | ".join(f"{means[t]:.4f}" for t in titles) + " |")
    worst = {t: min(row[t] - row["plain RX"] for row in table.values()) for t in titles}
    lines.append("| worst scene vs plain RX | " + " | ".join(f"{worst[t]:+.4f}" for t in titles) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "weights" / "fers_default.pt"))
    parser.add_argument("--output", help="also write the markdown table to this file")
    parser.add_argument("--spatial-tile", type=int, help="spatial tile size at detection (default: the plugin's)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="only plain RX and the model's own columns (faster)")
    args = parser.parse_args(argv)
    if not SCENES.is_dir():
        print(f"Skipped: the shared scenes are absent ({SCENES} does not exist beside the project).")
        return 0
    table, titles = evaluate(args.model, args.spatial_tile, progress=lambda line: print(line, file=sys.stderr),
                             baselines=not args.no_baselines)
    from fers_core.pipeline.options import DetectOptions

    tile = args.spatial_tile or DetectOptions().spatial_tile
    text = f"Global RX AUC; fers:detect defaults, spatial tiles of {tile} px.\n\n" + markdown(table, titles)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
