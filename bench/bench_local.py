"""Local detectors: exact local RX (ours now, ours before, spectral.rx(window=...)), local-mean RXD against global
RX, and the AUC of each on the shared real scenes. All ratios are measured in the same run (the machine is shared).

Sections:
1. pixels/s vs bands (30, 50, 100, 200) at windows 5/21, and vs window size at 100 bands: local_rx_scores now,
   the local RX of commit BASELINE (the summed-area-table version, loaded from git) and spectral.rx(window=...),
   on the same cube;
2. local-mean RXD, UTD and RXD-UTD against global RX on the same file (fers:rx's engines), and spectral.rx with a
   window and a fixed covariance (its local-mean RXD);
3. real scenes (../shared/data/scenes with *_gt.tif): AUC of local RX (exact and with COMPONENTS), the variants
   and global RX on every scene, with a float64 brute-force local RX (numpy covariance and solve per pixel);
   spectral.rx(window=...) and the local RX before on REFERENCE_SCENES (spectral.rx runs at about 200 pixels/s).

Usage: .venv/bin/python bench/bench_local.py [--quick] [--sections 1 2 3] [--reference-scenes NAME ...]
       [--output FILE]
Writes bench/LOCAL_RESULTS.md. spectral is installed with --no-deps into bench/.site (never into the venv).
"""

import argparse
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "bench" / ".site"
SCENES = ROOT.parent / "shared" / "data" / "scenes"
BASELINE = "e20a4aa"  # the last commit with the summed-area-table local RX
REFERENCE_SCENES = ("hydice-urban-162", "abu-beach-3")
sys.path.insert(0, str(ROOT))

from fers_core.detectors.local_rx import RIDGE_FLOOR, RIDGE_UNDERSAMPLED, local_rx_scores  # noqa: E402
from fers_core.detectors.metrics import roc_auc  # noqa: E402
from fers_core.io.reader import RasterReader  # noqa: E402
from fers_core.io.windows import Window  # noqa: E402
from fers_core.io.writer import SCORE_NODATA  # noqa: E402


def ensure_spectral():
    if not (SITE / "spectral").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(SITE),
                        "spectral==0.25"], check=True)
    sys.path.insert(0, str(SITE))
    import spectral

    return spectral


def baseline_local_rx():
    """local_rx_scores of commit BASELINE: its whole fers_core extracted from git and imported as fers_core_baseline."""
    folder = Path(tempfile.mkdtemp(prefix="fers-baseline-"))
    archive = subprocess.run(["git", "archive", BASELINE, "fers_core"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / "fers_core").rename(folder / "fers_core_baseline")
    sys.path.insert(0, str(folder))
    return importlib.import_module("fers_core_baseline.local_rx").local_rx_scores


def rate(function, pixels, repeat=1):
    """Best pixels/s of `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return pixels / best


def mixture_cube(bands, rows, cols, seed=0):
    rng = np.random.default_rng(seed)
    endmembers = rng.uniform(500, 4000, (6, bands))
    abundances = rng.dirichlet(np.ones(6), size=rows * cols)
    pixels = abundances @ endmembers + rng.normal(0, 20, (rows * cols, bands))
    return pixels.T.reshape(bands, rows, cols)


def throughput_section(spectral, baseline, quick):
    lines = ["## 1. Exact local RX: pixels/s\n",
             "Same cube (mixtures of 6 spectra plus noise) and windows for the three; `spectral.rx(X, window=(inner, "
             "outer))` is Spectral Python 0.25.\n",
             "| bands | windows | pixels | ours px/s | before px/s | spectral.rx px/s | ours / before | "
             "ours / spectral |", "|---|---|---|---|---|---|---|---|"]
    cases = [(bands, 5, 21) for bands in (30, 50, 100, 200)] + [(100, 3, 11), (100, 7, 31)]
    results = []
    for bands, inner, outer in cases:
        side = {30: 64, 50: 56, 100: 48, 200: 40}[bands] if not quick else 20
        side = max(side, outer + 4)
        cube = mixture_cube(bands, side, side, seed=bands)
        valid = np.ones((side, side), bool)
        pixels = side * side
        ours = rate(partial(local_rx_scores, cube, valid, inner, outer), pixels, repeat=2)
        before = rate(partial(baseline, cube, valid, inner, outer), pixels)
        image = np.ascontiguousarray(cube.transpose(1, 2, 0))
        theirs = rate(partial(spectral.rx, image, window=(inner, outer)), pixels)
        results.append(dict(bands=bands, inner=inner, outer=outer, ours=ours, before=before, spectral=theirs))
        lines.append(f"| {bands} | {inner}/{outer} | {side}x{side} | {ours:,.0f} | {before:,.0f} | {theirs:,.0f} | "
                     f"{ours / before:.1f}x | {ours / theirs:.0f}x |")
        print(lines[-1], flush=True)
    return lines, results


def variants_section(spectral, folder, quick):
    from make_large_raster import write_large_raster

    from fers_core.detectors.global_rx import run_global_rx
    from fers_core.detectors.rx import CovarianceAccumulator
    from fers_core.detectors.rx_variants import run_rx_variant, rx_variant_scores

    lines = ["\n## 2. RXD with a local mean, UTD, RXD-UTD against global RX (files, two passes each)\n",
             "fers:rx's engines on the same int16 GeoTIFF (512 x 512 pixels, or 256 x 256 with --quick), local "
             "windows 21 (kernel) / 5 (guard); each figure the best of 5 rounds, interleaved; in parentheses the "
             "median of the 5 rounds' ratios.\n",
             "| bands | global RX px/s | local-mean RXD px/s | ratio | local mean, no guard px/s | ratio | UTD px/s | "
             "RXD-UTD local mean px/s |", "|---|---|---|---|---|---|---|---|"]
    side = 256 if quick else 512
    ratios = {}
    for bands in (50, 200):
        path = os.path.join(folder, f"cube{bands}.tif")
        write_large_raster(path, side, side, bands)
        out = os.path.join(folder, "out.tif")
        best, rounds = {}, []
        for _ in range(5):
            rounds.append({})
            for name, run in (("global", partial(run_global_rx, path, out)),
                              ("rxd", partial(run_rx_variant, path, out, "rxd", 21, 5)),
                              ("rxd0", partial(run_rx_variant, path, out, "rxd", 21, 0)),
                              ("utd", partial(run_rx_variant, path, out, "utd")),
                              ("rxd-utd", partial(run_rx_variant, path, out, "rxd-utd", 21, 5))):
                rounds[-1][name] = rate(run, side * side)
                best[name] = max(best.get(name, 0), rounds[-1][name])
        ratios[bands] = best["rxd"] / best["global"]

        def median_ratio(name, rounds=rounds):
            return float(np.median([r[name] / r["global"] for r in rounds]))

        lines.append(f"| {bands} | {best['global']:,.0f} | {best['rxd']:,.0f} | {ratios[bands]:.2f} "
                     f"({median_ratio('rxd'):.2f}) | {best['rxd0']:,.0f} | {best['rxd0'] / best['global']:.2f} "
                     f"({median_ratio('rxd0'):.2f}) | {best['utd']:,.0f} | {best['rxd-utd']:,.0f} |")
        print(lines[-1], flush=True)
    # spectral's local-mean RXD: rx(window=..., cov=global covariance), on a crop (it loops over pixels in Python)
    with RasterReader(os.path.join(folder, "cube200.tif")) as reader:
        crop = reader.read(Window(0, 0, 64, 64))[0]
    accumulator = CovarianceAccumulator(200)
    accumulator.add_bands(crop.reshape(200, -1))
    image = np.ascontiguousarray(crop.transpose(1, 2, 0))
    theirs = rate(partial(spectral.rx, image, window=(5, 21), cov=accumulator.covariance), 64 * 64)
    ours = rate(partial(rx_variant_scores, crop, np.ones((64, 64), bool), "rxd", 21, 5), 64 * 64)
    lines.append(f"\nspectral.rx(X, window=(5, 21), cov=K) (its local-mean RXD: ring mean, global covariance) on a "
                 f"64 x 64 x 200 crop: {theirs:,.0f} pixels/s; ours (rx_variant_scores, kernel 21, guard 5) on the "
                 f"same crop: {ours:,.0f} pixels/s ({ours / theirs:.0f}x).")
    return lines, ratios


def brute_force_local_rx(cube, valid, inner, outer):
    """Float64 textbook local RX: each ring's numpy covariance (n - 1), our ridge rule, a direct solve."""
    bands, rows, cols = cube.shape
    scores = np.full((rows, cols), SCORE_NODATA)
    half_in = inner // 2

    def start(centre, size):
        return 0 if size <= outer else min(max(centre - outer // 2, 0), size - outer)

    for i in range(rows):
        r0 = start(i, rows)
        for j in range(cols):
            if not valid[i, j]:
                continue
            c0 = start(j, cols)
            ring = valid[r0:r0 + outer, c0:c0 + outer].copy()
            ring[max(i - half_in, 0) - r0:i + half_in + 1 - r0, max(j - half_in, 0) - c0:j + half_in + 1 - c0] = False
            pixels = cube[:, r0:r0 + outer, c0:c0 + outer][:, ring].T
            if len(pixels) < 2:
                continue
            mean = pixels.mean(axis=0)
            centred = pixels - mean
            covariance = centred.T @ centred / (len(pixels) - 1)
            scale = np.trace(covariance) / bands
            if scale <= 0:
                continue
            covariance[np.diag_indices(bands)] += (RIDGE_UNDERSAMPLED if len(pixels) < bands + 1 else
                                                   RIDGE_FLOOR) * scale
            difference = cube[:, i, j] - mean
            scores[i, j] = difference @ np.linalg.solve(covariance, difference)
    return scores


def read_scene(name):
    with RasterReader(str(SCENES / f"{name}.tif")) as reader:
        cube, valid = reader.read(Window.whole(reader.height, reader.width))
    with RasterReader(str(SCENES / f"{name}_gt.tif"), [1]) as reader:
        truth = reader.read(Window.whole(reader.height, reader.width))[0][0]
    return cube, valid, truth


def auc(scores, truth, valid):
    use = valid & (scores != SCORE_NODATA)
    return roc_auc(scores[use], truth[use])


def real_section(spectral, baseline, reference_scenes):
    from fers_core.detectors.rx import rx_scores
    from fers_core.detectors.rx_variants import rx_variant_scores

    scenes = sorted(p.name[:-7] for p in SCENES.glob("*_gt.tif")) if SCENES.is_dir() else []
    if not scenes:
        return ["\n## 3. Real scenes\n", "No shared scenes found."], {}
    lines = ["\n## 3. Real scenes: ROC AUC (local windows 5/21; local mean kernel 21, guard 5)\n",
             "| scene | bands | global RX | local RX | local RX px/s | COMPONENTS 30 | COMPONENTS 0.9999 | "
             "local-mean RXD | UTD | RXD-UTD |", "|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for name in scenes:
        cube, valid, truth = read_scene(name)
        bands = cube.shape[0]
        started = time.perf_counter()
        exact = local_rx_scores(cube, valid, 5, 21)
        speed = valid.sum() / (time.perf_counter() - started)
        row = dict(bands=bands, exact=auc(exact, truth, valid), speed=speed,
                   pc30=auc(local_rx_scores(cube, valid, 5, 21, components=30), truth, valid),
                   share=auc(local_rx_scores(cube, valid, 5, 21, components=0.9999), truth, valid))
        pixels = cube.reshape(bands, -1)[:, valid.ravel()].T
        global_scores = np.full(valid.shape, SCORE_NODATA, np.float32)
        global_scores[valid] = rx_scores(pixels)
        row["global"] = auc(global_scores, truth, valid)
        for variant, window in (("rxd", 21), ("utd", None), ("rxd-utd", None)):
            row[variant] = auc(rx_variant_scores(cube, valid, variant, window, 5 if window else 0), truth, valid)
        if reference_scenes:
            reference = brute_force_local_rx(cube, valid, 5, 21)
            row["reference"] = auc(reference, truth, valid)
            defined = reference != SCORE_NODATA
            row["max_relative"] = float(np.max(np.abs(exact[defined] - reference[defined]) /
                                               np.abs(reference[defined])))
        if name in reference_scenes:
            row["before"] = auc(baseline(cube, valid, 5, 21), truth, valid)
            started = time.perf_counter()
            image = np.ascontiguousarray(cube.transpose(1, 2, 0))
            row["spectral"] = auc(np.asarray(spectral.rx(image, window=(5, 21)), np.float64), truth, valid)
            row["spectral_speed"] = valid.sum() / (time.perf_counter() - started)
        summary[name] = row
        lines.append(f"| {name} | {bands} | {row['global']:.4f} | {row['exact']:.6f} | {speed:,.0f} | "
                     f"{row['pc30']:.4f} | {row['share']:.4f} | {row['rxd']:.4f} | {row['utd']:.4f} | "
                     f"{row['rxd-utd']:.4f} |")
        print(lines[-1], flush=True)
    lines += ["\nExact local RX against the float64 brute force (numpy covariance and solve per pixel, the same "
              "window and ridge rules) on every scene; the local RX before and spectral.rx(window=(5, 21)) on "
              + ", ".join(reference_scenes) + " (spectral.rx uses no ridge):\n",
              "| scene | ours AUC | float64 brute force AUC | difference | max relative score difference | "
              "before AUC | spectral.rx(window) AUC | spectral.rx px/s |",
              "|---|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        if "reference" in row:
            extra = (f"{row['before']:.8f} | {row['spectral']:.6f} | {row['spectral_speed']:,.0f}" if "before" in row
                     else " | | ")
            lines.append(f"| {name} | {row['exact']:.8f} | {row['reference']:.8f} | "
                         f"{abs(row['exact'] - row['reference']):.1e} | {row['max_relative']:.1e} | {extra} |")
    return lines, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cubes, for a smoke test")
    parser.add_argument("--reference-scenes", nargs="*", default=list(REFERENCE_SCENES))
    parser.add_argument("--output", default=str(ROOT / "bench" / "LOCAL_RESULTS.md"))
    parser.add_argument("--sections", nargs="*", type=int, default=[1, 2, 3], help="which sections to run")
    args = parser.parse_args()
    spectral = ensure_spectral()
    baseline = baseline_local_rx()
    started = time.perf_counter()
    load = os.getloadavg()[0]
    lines = ["# Local detectors benchmark\n",
             f"`{' '.join(['.venv/bin/python', 'bench/bench_local.py'] + sys.argv[1:])}` on {platform.machine()}, "
             f"{os.cpu_count()} cores, load average {load:.1f} at the start (the cores are shared: ratios measured "
             "in the same run are the comparable figures). 'before' = local RX of commit " + BASELINE + ".\n"]
    if 1 in args.sections:
        lines += throughput_section(spectral, baseline, args.quick)[0]
    if 2 in args.sections:
        with tempfile.TemporaryDirectory() as folder:
            lines += variants_section(spectral, folder, args.quick)[0]
    if 3 in args.sections:
        lines += real_section(spectral, baseline, [] if args.quick else args.reference_scenes)[0]
    lines.append(f"\nTotal {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f} at the end.")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
