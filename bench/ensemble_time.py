"""Detection time of the default ensemble, the previous default and their members, in the same run.

    .venv/bin/python bench/ensemble_time.py [--size 256] [--bands 120] [--repeat 3] [--json times.json]

Writes the synthetic scene (fers_core.synthetic, size x size px, --bands bands) to a temporary folder, loads the
models once (as fers:detect's session cache keeps them), warms up, then times every configuration --repeat times,
interleaved, two threads, fers:detect's default options (BRANCHES spectral + spatial, PRECISION auto):
- each member alone: plain global RX ("rx"), weights/fers_default.pt with both branches ("bundled-ss") and
  spectral only ("bundled"), weights/fers_spectral100.pt, weights/fers_spectral200.pt, and the untrained
  random_init_model(200, seed=0);
- the previous default, rank(fers_default.pt + the untrained 200-band network);
- rank(fers_default.pt + fers_spectral100.pt), and the default ensemble (default_model_paths()), with all three
  members and as fers:detect runs it ("as run": its bundled members, left out on rasters with fewer than half
  their bands, e.g. --bands 60 runs two).
Prints the medians and the ratios to the previous default (these machines are noisy: only ratios within one run
mean much); --json writes the medians (bench/band_study.py --seconds reads them for its time budget).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PREVIOUS = "previous default: rank(bundled-ss + rand200)"


def configurations():
    """{label: callable(scene, output)}."""
    from dataclasses import replace

    from fers_core.detectors.global_rx import run_global_rx
    from fers_core.enhance.default_model import default_model_paths
    from fers_core.enhance.model_file import load_model, random_init_model
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.ensemble import Member, run_ensemble_detection
    from fers_core.pipeline.options import DetectOptions

    options = DetectOptions(threads=2)
    paths = default_model_paths()
    bundled, t100, t200 = (load_model(path) for path in paths)
    rand200 = random_init_model(200, seed=0, branches=("spectral",))

    def one(model, branches=None):
        member_options = replace(options, branches=branches) if branches else options
        return lambda scene, output: run_fers_detection(scene, output, model, member_options)

    def fused(*models, bundled=False):
        members = [Member(model, f"member {index}", bundled=bundled) for index, model in enumerate(models)]
        return lambda scene, output: run_ensemble_detection(scene, output, members, options)

    def rx(scene, output):
        run_global_rx(scene, output)

    return {"rx": rx, "bundled-ss": one(bundled), "bundled": one(bundled, ("spectral",)), "t100": one(t100),
            "t200": one(t200), "rand200": one(rand200), PREVIOUS: fused(bundled, rand200),
            "rank(bundled-ss + t100)": fused(bundled, t100),
            "default: rank(bundled-ss + t100 + t200)": fused(bundled, t100, t200),
            "default as run (band-aware)": fused(bundled, t100, t200, bundled=True)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--bands", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the median seconds of every configuration to this file")
    args = parser.parse_args(argv)
    import torch

    from fers_core.synthetic import write_scene

    torch.set_num_threads(2)
    runs = configurations()
    times = {label: [] for label in runs}
    with tempfile.TemporaryDirectory() as folder:
        scene = os.path.join(folder, "scene.tif")
        write_scene(scene, os.path.join(folder, "truth.tif"), rows=args.size, cols=args.size, bands=args.bands)
        for run in runs.values():  # warm-up: first-call costs out of the timings
            run(scene, os.path.join(folder, "warm.tif"))
        for index in range(args.repeat):
            for label, run in runs.items():
                started = time.perf_counter()
                run(scene, os.path.join(folder, f"out{index}.tif"))
                times[label].append(time.perf_counter() - started)
    medians = {label: statistics.median(values) for label, values in times.items()}
    print(f"{args.size}x{args.size}x{args.bands} px, 2 threads, median of {args.repeat}:")
    for label, median in medians.items():
        print(f"- {label}: {median:.2f} s ({median / medians[PREVIOUS]:.2f}x the previous default; "
              f"runs {', '.join(f'{v:.2f}' for v in times[label])})")
    if args.json:
        Path(args.json).write_text(json.dumps(medians, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
