"""Speed and memory benchmark: our RX and FERS detection against baselines, in one run.

Each measurement runs in a fresh subprocess (so peak memory is that run's own maximum resident
set size) on the same input files. Baselines:
- `spectral.rx` (Spectral Python; installed with --no-deps into bench/.site, never into the venv);
- a straightforward reference-style implementation: whole image in memory, float32 network on
  the whole image at once, float64 RX with a pseudo-inverse, the reference's fusion;
- the matrix-multiply floor: pixels x bands^2 multiply-adds at this machine's measured float64
  matrix-multiply rate (the covariance product RX cannot avoid).

Then every real scene of ../shared/data/scenes with a ground truth (when present): the same workers,
with the ROC AUC of each one's own output, so "same AUC" is measured where speed is.

Usage: .venv/bin/python bench/bench.py [--sizes 128 256 512 1024] [--bands 200] [--big 4096]
       [--detect-sizes [SIZE ...]] [--repeat N] [--no-real] [--output FILE]
Writes bench/RESULTS.md (`--detect-sizes` with no sizes: no synthetic detection; `--repeat 3`: RX medians
of 3 rounds).
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
    from fers_core.detectors.global_rx import run_global_rx
    from fers_core.io.gdal_cache import bounded_gdal_cache

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
    from fers_core.enhance.model_cache import detection_model
    from fers_core.io.gdal_cache import bounded_gdal_cache
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.options import DetectOptions

    options = DetectOptions(branches=tuple(branches.split(",")), precision=precision)
    with bounded_gdal_cache():  # as fers:detect runs it (which keeps the model for the session's next run)
        run_fers_detection(path, output, detection_model(model_path), options)


def reference_rx(cube):
    """Float64 global RX of a (bands, rows, cols) cube with a pseudo-inverse, whole image in memory."""
    import numpy as np

    pixels = cube.reshape(cube.shape[0], -1).T.astype(np.float64)
    centred = pixels - pixels.mean(axis=0)
    inverse = np.linalg.pinv(np.cov(pixels, rowvar=False))
    return np.einsum("ij,jk,ik->i", centred, inverse, centred)


def work_reference_style(path, output, model_path, branches="spectral,spatial"):
    """Whole image in memory, float32 networks in one pass, float64 RX with a pseudo-inverse, and the
    reference's fusion (method.md section 6): RX(x + F_spe + F_spa) above 50 model bands, else the product of
    the min-max normalised RX(x + F_spa) and RX(x + F_spe)."""
    import numpy as np
    import torch
    from osgeo import gdal

    from fers_core.enhance.checkpoints import load_any_model
    from fers_core.pipeline.preprocess import resample_bands

    model = load_any_model(model_path)
    cube = gdal.Open(path).ReadAsArray().astype(np.float32)
    cube = resample_bands(cube, model.bands)
    cube = ((cube - cube.min()) / (cube.max() - cube.min()) * 2 - 1) * 0.1
    with torch.no_grad():
        x = torch.from_numpy(cube)[None]
        features = [model.branches[name](x)[0].numpy() for name in branches.split(",")]
    if model.bands > 50 or len(features) == 1:
        scores = reference_rx(cube + sum(features))
    else:
        maps = [reference_rx(cube + feature) for feature in features]
        scores = np.prod([(m - m.min()) / (m.max() - m.min()) for m in maps], axis=0)
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


def work_network_cost(model_path, size):
    """Network multiply-adds of one whole size x size image (torch's FLOP counter; the reference's 4 px padding
    included), split into the parts the mixed precision runs in bfloat16 and the float32 rest, and this machine's
    3x3 convolution rate in both types (128 -> 128 channels, channels-last, 4 x 128^2 px)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fers_core.enhance.checkpoints import load_any_model
    from fers_core.enhance.networks.inference import MIXED_PARTS

    model = load_any_model(model_path)
    x = torch.zeros(1, model.bands, size, size)
    low = total = 0.0
    for network in model.branches.values():
        with torch.inference_mode(), FlopCounterMode(display=False, depth=2) as counter:
            network(x)
        for name, counts in counter.get_flop_counts().items():
            parts = name.split(".")
            if len(parts) == 1 and parts[0] != "Global":
                total += sum(counts.values()) / 2
            elif len(parts) == 2 and parts[1] in MIXED_PARTS:
                low += sum(counts.values()) / 2
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).to(dtype, memory_format=torch.channels_last)
        tiles = torch.randn(4, 128, 128, 128).to(dtype).contiguous(memory_format=torch.channels_last)
        best = float("inf")
        with torch.inference_mode():
            conv(tiles)
            for _ in range(3):
                start = time.perf_counter()
                conv(tiles)
                best = min(best, time.perf_counter() - start)
        rates[str(dtype).split(".")[1]] = 4 * 128 ** 2 * 128 * 128 * 9 / best
    print(json.dumps({"bfloat16_parts": low, "float32_parts": total - low, "rates": rates}))


def peak_mb():
    """This process's peak resident memory (VmHWM: reset by exec, unlike ru_maxrss, which a forked
    child inherits from the benchmark driver)."""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


WORKERS = {"rx": work_rx, "spectral_rx": work_spectral_rx, "detect": work_detect,
           "reference_style": work_reference_style, "matmul": work_matmul_rate, "network_cost": work_network_cost}


# ----------------------------------------------------------------------------- driver

def measure(kind, *args, extra_path=None, runs=1):
    """Run one worker in a fresh subprocess `runs` times; return (seconds of the first run, peak MB, stdout).

    With runs > 1 the stdout has a line 'BENCH_RUN <seconds>' per run (see warm_seconds)."""
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); import bench.bench as b\n"
            f"for _ in range({runs}):\n"
            f"    t = time.perf_counter(); b.WORKERS[{kind!r}](*{tuple(args)!r}); "
            "print('BENCH_RUN', time.perf_counter() - t)\n"
            "print('BENCH', 0, b.peak_mb())")
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = f"{extra_path}:{env.get('PYTHONPATH', '')}"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if completed.returncode != 0:
        raise RuntimeError(f"{kind} failed: {completed.stderr[-2000:]}")
    peak = [x for x in completed.stdout.splitlines() if x.startswith("BENCH ")][-1].split()[2]
    return run_seconds(completed.stdout)[0], float(peak), completed.stdout


def run_seconds(stdout):
    """Seconds of each run of a worker, from measure's stdout."""
    return [float(x.split()[1]) for x in stdout.splitlines() if x.startswith("BENCH_RUN ")]


def warm_seconds(stdout):
    """The fastest run after the first: the time once torch is imported and the files cached, as in a QGIS session."""
    return min(run_seconds(stdout)[1:])


def matmul_rates(bands):
    """This machine's float64 and float32 X^T X rates now, from a fresh subprocess."""
    _, _, out = measure("matmul", 262144, bands)
    lines = out.strip().splitlines()
    return json.loads(next(x for x in lines if x.startswith("{")))


def ensure_spectral():
    if not (SITE / "spectral").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(SITE),
                        "spectral==0.25"], check=True)
    return str(SITE)


def bench_model(folder):
    """The bundled model when present, else a random-init 200-band model with both branches."""
    from fers_core.enhance.default_model import DEFAULT_MODEL_FILE
    from fers_core.enhance.model_file import random_init_model, save_model

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
    parser.add_argument("--no-real", dest="real", action="store_false",
                        help="skip the real scenes of ../shared/data/scenes (run by default when present)")
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

        if args.detect_sizes or args.big:
            lines.append(DETECT_NOTE.format(model_note=model_note))
            detect_points = []
            for size in args.detect_sizes:
                path = str(Path(folder) / f"scene{size}.tif")
                if not Path(path).exists():
                    write_large_raster(path, size, size, args.bands)
                ours_s, ours_mb, ours_out = measure("detect", path, path + ".det.tif", model_path, runs=3)
                ref_s, ref_mb, ref_out = measure("reference_style", path, path + ".ref", model_path, runs=3)
                ours_warm, ref_warm = warm_seconds(ours_out), warm_seconds(ref_out)
                _, _, cost_out = measure("network_cost", model_path, size)
                cost = json.loads(next(x for x in cost_out.splitlines() if x.startswith("{")))
                floor = (cost["bfloat16_parts"] / cost["rates"]["bfloat16"]
                         + cost["float32_parts"] / cost["rates"]["float32"])
                detect_points.append((size * size, ours_s))
                lines.append(f"| {size}x{size} | {ours_s:.2f} | {ours_warm:.2f} | {ours_mb:.0f} | {ref_s:.2f} | "
                             f"{ref_warm:.2f} | {ref_mb:.0f} | {ref_s / ours_s:.1f}x | {ref_warm / ours_warm:.1f}x | "
                             f"{(cost['bfloat16_parts'] + cost['float32_parts']) / 1e9:.1f} | {floor:.3f} | "
                             f"{ours_warm / floor:.1f}x |")
                print(lines[-1], flush=True)
            for size in args.big:
                path = str(Path(folder) / f"big{size}.tif")
                write_large_raster(path, size, size, args.bands)
                ours_s, ours_mb, _ = measure("detect", path, path + ".det.tif", model_path)
                detect_points.append((size * size, ours_s))
                lines.append(f"| {size}x{size} | {ours_s:.1f} | | {ours_mb:.0f} | (not run) | | | | | | | |")
                print(lines[-1], flush=True)
                os.remove(path)
            lines.append(f"\nfers:detect time ~ pixels^{fitted_exponent(detect_points):.2f}.\n")
        if args.real and real_scenes():
            lines += bench_real_scenes(model_path, model_note, site, folder)
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"Wrote {args.output}")


DETECT_NOTE = """## FERS detection ({model_note})

Cold: a fresh process's first run (importing torch, about 1 s, included). Warm: the fastest of its next
two runs, as a QGIS session runs every detection after its first. Floor: the networks' multiply-adds on
the whole image (torch's FLOP counter) at this machine's measured 3x3 convolution rate, bfloat16 for the
parts the default mixed precision runs in it, float32 for the rest; no I/O, no RX, no tiling overlap.

| pixels | fers:detect cold s | warm s | MB | reference-style cold s | warm s | MB | speed-up cold | \
speed-up warm | network G multiply-adds | floor s | ours warm / floor |
|---|---|---|---|---|---|---|---|---|---|---|---|"""


def real_scenes():
    """(name, raster, ground truth) of each shared scene with a ground truth; none without ../shared."""
    if not SHARED_SCENES.is_dir():
        return []
    return [(truth.name[:-len("_gt.tif")], str(truth).replace("_gt.tif", ".tif"), str(truth))
            for truth in sorted(SHARED_SCENES.glob("*_gt.tif"))]


def output_auc(path, truth_path):
    """ROC AUC of one worker's scores (a score GeoTIFF, or a .npy of the whole image) against a ground truth."""
    import numpy as np
    from osgeo import gdal

    from fers_core.detectors.metrics import roc_auc
    from fers_core.io.writer import SCORE_NODATA

    truth = gdal.Open(truth_path).ReadAsArray()
    scores = np.load(path).reshape(truth.shape) if path.endswith(".npy") else gdal.Open(path).ReadAsArray()
    valid = scores != SCORE_NODATA
    return roc_auc(scores[valid], truth[valid])


def bench_real_scenes(model_path, model_note, site, folder):
    """Table lines: every worker on each real scene, with the AUC of its own output."""
    import numpy as np
    from osgeo import gdal

    lines = [REAL_NOTE.format(model_note=model_note)]
    speed_ups, differences = [], []
    for name, raster, truth in real_scenes():
        dataset = gdal.Open(raster)
        size = f"{dataset.RasterXSize}x{dataset.RasterYSize}x{dataset.RasterCount}"
        out = str(Path(folder) / name)
        rx_s, rx_mb, _ = measure("rx", raster, out + ".rx.tif")
        spy_s, spy_mb, _ = measure("spectral_rx", raster, out + ".spy", extra_path=site)
        det_s, det_mb, det_out = measure("detect", raster, out + ".det.tif", model_path, runs=3)
        ref_s, ref_mb, ref_out = measure("reference_style", raster, out + ".ref", model_path, runs=3)
        det_warm, ref_warm = warm_seconds(det_out), warm_seconds(ref_out)
        aucs = [output_auc(path, truth) for path in
                (out + ".rx.tif", out + ".spy.npy", out + ".det.tif", out + ".ref.npy")]
        speed_ups.append(ref_warm / det_warm)
        differences.append(aucs[2] - aucs[3])
        lines.append(f"| {name} | {size} | {rx_s:.2f} | {spy_s:.2f} | {aucs[0]:.4f} | {aucs[1]:.4f} | "
                     f"{det_s:.2f} | {det_warm:.2f} | {det_mb:.0f} | {ref_s:.2f} | {ref_warm:.2f} | {ref_mb:.0f} | "
                     f"{ref_warm / det_warm:.1f}x | {aucs[2]:.4f} | {aucs[3]:.4f} | {aucs[2] - aucs[3]:+.4f} |")
        print(lines[-1], flush=True)
    lines.append(f"\nfers:detect vs reference style on {len(differences)} scenes: warm speed-up median "
                 f"{np.median(speed_ups):.1f}x (range {min(speed_ups):.1f}x to {max(speed_ups):.1f}x); AUC difference "
                 f"mean {np.mean(differences):+.4f}, largest {max(differences, key=abs):+.4f}.\n")
    return lines


REAL_NOTE = """## Real scenes ({model_note})

Each shared scene with a ground truth, as stored (80 to 150 px a side, 162 to 224 bands, integer or
float32): the same workers, and the ROC AUC of each run's own output. fers:detect runs its defaults (both
branches; at 50 model bands the reference's product fusion; spatial tiles of 128 px; PRECISION auto, so
bfloat16 encoder and trunk on this CPU); the reference style runs the same model in float32 on the whole
image with the same fusion. Scenes larger than a spatial tile (abu-beach-1, 150 px) are tiled by
fers:detect and not by the reference style.

| scene | size | ours RX s | spectral.rx s | RX AUC ours | RX AUC spectral.rx | fers:detect cold s | warm s | MB | \
reference-style cold s | warm s | MB | speed-up warm | AUC fers:detect | AUC reference-style | AUC difference |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"""


def fitted_exponent(points):
    """Least-squares slope of log(time) against log(pixels)."""
    import numpy as np

    if len(points) < 2:
        return float("nan")
    x, y = np.log([p for p, _ in points]), np.log([t for _, t in points])
    return float(np.polyfit(x, y, 1)[0])


if __name__ == "__main__":
    main()
