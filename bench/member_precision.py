"""Detection AUC of model files under float32 and "mixed" precision, on the shared labelled scenes.

    .venv/bin/python bench/member_precision.py weights/fers_spectral100.pt weights/fers_spectral200.pt

For each model (its own branches, global RX, fers:detect's other defaults) and each scene with a ground truth in
../shared/data/scenes, the AUC with PRECISION float32 and mixed (bfloat16 encoder and trunk, on CPUs that have it
natively), and the largest difference: the check behind a model's "mixed_precision_checked" record
(fers_core.enhance.precision). Exits with a message, status 0, when ../shared is absent.
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "scenes"
sys.path.insert(0, str(ROOT))


def main(argv=None):
    paths = argv if argv is not None else sys.argv[1:]
    if not SCENES.is_dir():
        print(f"Skipped: the shared scenes are absent ({SCENES}).")
        return 0
    if not paths:
        sys.exit("Name one or more model files.")
    from fers_core.detectors.metrics import roc_auc
    from fers_core.enhance.model_file import load_model
    from fers_core.enhance.precision import bfloat16_native
    from fers_core.io.reader import RasterReader
    from fers_core.io.windows import Window
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.options import DetectOptions

    if not bfloat16_native("cpu"):
        sys.exit("This CPU has no native bfloat16: mixed precision would be emulated; run it on one that has.")

    def read(path):
        with RasterReader(str(path)) as reader:
            return reader.read(Window.whole(reader.height, reader.width))

    scenes = sorted(path.name[:-len("_gt.tif")] for path in SCENES.glob("*_gt.tif"))
    for model_path in paths:
        model = load_model(model_path)
        rows = []
        with tempfile.TemporaryDirectory() as folder:
            for scene in scenes:
                truth, _ = read(SCENES / f"{scene}_gt.tif")
                aucs = []
                for precision in ("float32", "mixed"):
                    output = os.path.join(folder, f"{precision}.tif")
                    run_fers_detection(SCENES / f"{scene}.tif", output, model,
                                       DetectOptions(branches=tuple(model.branches), precision=precision, threads=2))
                    scores, valid = read(output)
                    aucs.append(roc_auc(scores[0][valid], truth[0][valid] != 0))
                rows.append((scene, *aucs))
        print(f"\n{Path(model_path).name} ({model.bands} bands, {', '.join(model.branches)})\n")
        print("| scene | float32 | mixed | difference |\n|---|---|---|---|")
        for scene, single, mixed in rows:
            print(f"| {scene} | {single:.4f} | {mixed:.4f} | {mixed - single:+.5f} |")
        differences = np.array([mixed - single for _, single, mixed in rows])
        print(f"| **mean** | {np.mean([r[1] for r in rows]):.4f} | {np.mean([r[2] for r in rows]):.4f} | "
              f"largest {differences[np.argmax(np.abs(differences))]:+.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
