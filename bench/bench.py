"""Speed and memory benchmark: our RX and FERS detection against baselines, in one run.

Each measurement runs in a fresh subprocess (so peak memory is that run's own maximum resident
set size) on the same input files. Baselines:
- `spectral.rx` (Spectral Python; installed with --no-deps into bench/.site, never into the venv);
- a straightforward reference-style implementation: whole image in memory, float32 network on
  the whole image at once, float64 RX with a pseudo-inverse;
- the matrix-multiply floor: pixels x bands^2 multiply-adds at this machine's measured float64
  matrix-multiply rate (the covariance product RX cannot avoid).

Usage: .venv/bin/python bench/bench.py [--sizes 128 256 512 1024] [--bands 200] [--big 4096]
       [--detect-sizes [SIZE ...]] [--repeat N] [--output FILE]
Writes bench/RESULTS.md (`--detect-sizes` with no sizes: RX only; `--repeat 3`: RX medians of 3 rounds).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "bench" / ".site"
SHARED_SCENES = ROOT.parent / "shared" / "data" / "scenes"
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- workers (subprocess)

def work_rx(path, output):
    from fers_core.raster_io import bounded_gdal_cache
    from fers_core.rx_raster import run_global_rx

    with bounded_gdal_cache():  # as fers:rx runs it
        run_global_rx(path, output)


def work_spectral_rx(path, output):
    import numpy as np
    import spectral
    from osgeo import gdal

    cube = gdal.Open(path).ReadAsArray().astype(np.float64).transpose(1, 2, 0)
    scores = spectral.rx(cube)
    np.save(output + ".npy", scores.astype(np.float32))


def work_detect(path, output, model_path, branches="spectral,spatial", precision="auto"):
    from fers_core.checkpoints import load_any_model
    from fers_core.detect import DetectOptions, run_fers_detection
    from fers_core.raster_io import bounded_gdal_cache

    options = DetectOptions(branches=tuple(branches.split(",")), precision=precision)
    with bounded_gdal_cache():  # as fers:detect runs it
        run_fers_detection(path, output, load_any_model(model_path), options)


def work_reference_style(path, output, model_path, branches="spectral,spatial"):
    """Whole image in memory, float32 networks in one pass, float64 RX with a pseudo-inverse."""
    import numpy as np
    import torch
    from osgeo import gdal

    from fers_core.checkpoints import load_any_model
    from fers_core.preprocess import resample_bands

    model = load_any_model(model_path)
    cube = gdal.Open(path).ReadAsArray().astype(np.float32)
    cube = resample_bands(cube, model.bands)
    cube = ((cube - cube.min()) / (cube.max() - cube.min()) * 2 - 1) * 0.1
    x = torch.from_numpy(cube)[None]
    with torch.no_grad():
        enhanced = x.clone()
        for name in branches.split(","):
            enhanced += model.branches[name](x)
    pixels = enhanced[0].numpy().reshape(model.bands, -1).T.astype(np.float64)
    centred = pixels - pixels.mean(axis=0)
    inverse = np.linalg.pinv(np.cov(pixels, rowvar=False))
    scores = np.einsum("ij,jk,ik->i", centred, inverse, centred)
    np.save(output + ".npy", scores.astype(np.float32))


def work_matmul_rate(n, bands):
    """Measured float64 and float32 X^T X rate (multiply-adds per second)."""
    import numpy as np

    rates = {}
    for dtype in (np.float64, np.float32):
        x = np.random.default_rng(0).standard_normal((n, bands)).astype(dtype)
        x.T @ x
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            x.T @ x
            best = min(best, time.perf_counter() - start)
        rates[np.dtype(dtype).name] = n * bands * bands / best
    print(json.dumps(rates))


def peak_mb():
    """This process's peak resident memory (VmHWM: reset by exec, unlike ru_maxrss, which a forked
    child inherits from the benchmark driver)."""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


WORKERS = {"rx": work_rx, "spectral_rx": work_spectral_rx, "detect": work_detect,
           "reference_style": work_reference_style, "matmul": work_matmul_rate}


# ----------------------------------------------------------------------------- driver

def measure(kind, *args, extra_path=None):
    """Run one worker in a subprocess; return (seconds, peak MB, stdout)."""
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); import bench.bench as b; "
            f"t = time.perf_counter(); b.WORKERS[{kind!r}](*{tuple(args)!r}); "
            "print('BENCH', time.perf_counter() - t, b.peak_mb())")
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = f"{extra_path}:{env.get('PYTHONPATH', '')}"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if completed.returncode != 0:
        raise RuntimeError(f"{kind} failed: {completed.stderr[-2000:]}")
    line = [x for x in completed.stdout.splitlines() if x.startswith("BENCH")][-1].split()
    return float(line[1]), float(line[2]), completed.stdout


def matmul_rates(bands):
    """This machine's float64 and float32 X^T X rates now, from a fresh subprocess."""
    _, _, out = measure("matmul", 262144, bands)
    lines = out.strip().splitlines()
    return json.loads(lines[-2] if lines[-1].startswith("BENCH") else lines[-1])


def ensure_spectral():
    if not (SITE / "spectral").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(SITE),
                        "spectral==0.25"], check=True)
    return str(SITE)


def bench_model(folder):
    """The bundled model when present, else a random-init 200-band model with both branches."""
    from fers_core.default_model import DEFAULT_MODEL_FILE
    from fers_core.model_file import random_init_model, save_model

    if DEFAULT_MODEL_FILE.exists():
        return str(DEFAULT_MODEL_FILE), "bundled default model"
    path = Path(folder) / "random200.pt"
    save_model(random_init_model(200, seed=0), path)
    return str(path), "random-init 200-band model (no bundled model yet)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--bands", type=int, default=200)
    parser.add_argument("--detect-sizes", type=int, nargs="*", default=[128, 256, 512],
                        help="sizes for fers:detect; the option with no sizes skips detection (RX only)")
    parser.add_argument("--big", type=int, nargs="*", default=[], help="extra large sizes for fers:detect memory")
    parser.add_argument("--repeat", type=int, default=1,
                        help="RX rounds per size (median reported): timings on a shared machine are noisy")
    parser.add_argument("--output", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()

    import numpy as np
    from make_large_raster import write_large_raster

    site = ensure_spectral()
    lines = [f"# Benchmark results\n\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; run {time.strftime('%Y-%m-%d %H:%M')}.\n"
             f"Command: `.venv/bin/python bench/bench.py {' '.join(sys.argv[1:])}`\n"]
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as folder:
        model_path, model_note = bench_model(folder)
        rates = matmul_rates(args.bands)
        lines.append(f"Measured X^T X rate: float64 {rates['float64'] / 1e9:.1f} G multiply-adds/s, "
                     f"float32 {rates['float32'] / 1e9:.1f} G/s.\n")
        repeat_note = ""
        if args.repeat > 1:
            repeat_note = (f"\nEach figure is the median of {args.repeat} rounds (ours, spectral.rx and the X^T X "
                           "rate measured in turn each round; ratios per round, then their median).\n")
        lines.append(f"## RX\n{repeat_note}\n| pixels | ours s | ours MB | spectral.rx s | spectral.rx MB | "
                     "speed-up | floor s | ours / floor |\n|---|---|---|---|---|---|---|---|")
        rx_points = []
        for size in args.sizes:
            path = str(Path(folder) / f"scene{size}.tif")
            write_large_raster(path, size, size, args.bands)
            rounds = []
            for index in range(args.repeat):
                ours_s, ours_mb, _ = measure("rx", path, path + ".rx.tif")
                spy_s, spy_mb, _ = measure("spectral_rx", path, path + ".spy", extra_path=site)
                round_rates = rates if index == 0 else matmul_rates(args.bands)
                floor = size * size * args.bands ** 2 / round_rates["float64"]
                rounds.append((ours_s, ours_mb, spy_s, spy_mb, floor, spy_s / ours_s, ours_s / floor))
            ours_s, ours_mb, spy_s, spy_mb, floor, speed_up, over_floor = np.median(np.array(rounds), axis=0)
            rx_points.append((size * size, ours_s))
            lines.append(f"| {size}x{size} | {ours_s:.2f} | {ours_mb:.0f} | {spy_s:.2f} | {spy_mb:.0f} | "
                         f"{speed_up:.1f}x | {floor:.3f} | {over_floor:.1f}x |")
            print(lines[-1], flush=True)
        lines.append(f"\nRX time ~ pixels^{fitted_exponent(rx_points):.2f}.\n")

        if not args.detect_sizes and not args.big:
            Path(args.output).write_text("\n".join(lines) + "\n")
            print(f"Wrote {args.output}")
            return
        lines.append(f"## FERS detection ({model_note})\n\n| pixels | fers:detect s | MB | reference-style s | "
                     "MB | speed-up |\n|---|---|---|---|---|---|")
        detect_points = []
        for size in args.detect_sizes:
            path = str(Path(folder) / f"scene{size}.tif")
            if not Path(path).exists():
                write_large_raster(path, size, size, args.bands)
            ours_s, ours_mb, _ = measure("detect", path, path + ".det.tif", model_path)
            ref_s, ref_mb, _ = measure("reference_style", path, path + ".ref", model_path)
            detect_points.append((size * size, ours_s))
            lines.append(f"| {size}x{size} | {ours_s:.2f} | {ours_mb:.0f} | {ref_s:.2f} | {ref_mb:.0f} | "
                         f"{ref_s / ours_s:.1f}x |")
            print(lines[-1], flush=True)
        for size in args.big:
            path = str(Path(folder) / f"big{size}.tif")
            write_large_raster(path, size, size, args.bands)
            ours_s, ours_mb, _ = measure("detect", path, path + ".det.tif", model_path)
            detect_points.append((size * size, ours_s))
            lines.append(f"| {size}x{size} | {ours_s:.1f} | {ours_mb:.0f} | (not run) | | |")
            print(lines[-1], flush=True)
            os.remove(path)
        lines.append(f"\nfers:detect time ~ pixels^{fitted_exponent(detect_points):.2f}.\n")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"Wrote {args.output}")


def fitted_exponent(points):
    """Least-squares slope of log(time) against log(pixels)."""
    import numpy as np

    if len(points) < 2:
        return float("nan")
    x, y = np.log([p for p, _ in points]), np.log([t for _, t in points])
    return float(np.polyfit(x, y, 1)[0])


if __name__ == "__main__":
    main()
