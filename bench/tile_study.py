"""How the spatial branch's tile size changes detection AUC on the real scenes.

The spectral branch is tiling-invariant; the spatial branch's pyramid pooling sees one tile,
so its output depends on the tile size. This runs fers:detect's engine with both branches at
several tile sizes (the margin is 1/8 of the tile) and with the whole image as one tile, and
writes a markdown table. Scenes come from ../shared/data/scenes (skipped when absent).

Usage: .venv/bin/python bench/tile_study.py [--model weights/fers_default.pt] [--tiles 32 48 64 96 128]
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "scenes"
sys.path.insert(0, str(ROOT))


def scene_names():
    return sorted(p.name[:-len("_gt.tif")] for p in SCENES.glob("*_gt.tif"))


def auc_of(path, truth_path):
    from osgeo import gdal

    from fers_core.detectors.metrics import roc_auc

    scores = gdal.Open(str(path)).ReadAsArray()
    truth = gdal.Open(str(truth_path)).ReadAsArray()
    valid = scores != -9999
    return roc_auc(scores[valid], truth[valid])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights" / "fers_default.pt"))
    parser.add_argument("--tiles", type=int, nargs="+", default=[32, 48, 64, 96, 128])
    parser.add_argument("--output", default=str(ROOT / "bench" / "TILE_RESULTS.md"))
    args = parser.parse_args()
    if not SCENES.is_dir():
        print(f"Skipped: {SCENES} is absent (the real scenes exist only beside the development checkout).")
        return 0

    from fers_core.enhance.checkpoints import load_any_model
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.options import DetectOptions

    model = load_any_model(args.model)
    if not model.has_branch("spatial"):
        print("Skipped: the model has no spatial branch.")
        return 0
    columns = [f"tile {t}" for t in args.tiles] + ["whole image", "spectral only", "bfloat16"]
    lines = [f"# Spatial tile size vs AUC\n\nModel: `{Path(args.model).name}`; both branches, global RX; "
             "margin = tile / 8; 'whole image' = one tile as large as the "
             "scene; the last column runs the networks in bfloat16 (autocast) at the default tile (128 px).\n",
             "| scene | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    sums = [0.0] * len(columns)
    names = scene_names()
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            settings = [dict(spatial_tile=t, spatial_margin=t // 8) for t in args.tiles]
            settings += [dict(spatial_tile=100000, spatial_margin=0), dict(branches=("spectral",)),
                         dict(precision="bfloat16")]
            row = []
            for index, extra in enumerate(settings):
                output = Path(folder) / f"{name}_{index}.tif"
                run_fers_detection(str(SCENES / f"{name}.tif"), str(output), model, DetectOptions(**extra))
                row.append(auc_of(output, SCENES / f"{name}_gt.tif"))
            sums = [s + a for s, a in zip(sums, row)]
            lines.append(f"| {name} | " + " | ".join(f"{a:.4f}" for a in row) + " |")
            print(lines[-1], flush=True)
    lines.append("| **mean** | " + " | ".join(f"**{s / len(names):.4f}**" for s in sums) + " |")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
