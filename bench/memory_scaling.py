"""Peak memory and time of fers:rx and fers:detect through qgis_process, from 1024^2 to 4096^2 pixels.

    .venv/bin/python bench/memory_scaling.py [--sizes 1024 2048 4096] [--bands 200] [--folder /work]

Each run is `scripts/qgis_process run ALGORITHM` (the user's path: QGIS itself, the plugin, the
bundled model) under `/usr/bin/time`, which reports the process's maximum resident set size.
Inputs are synthetic int16 GeoTIFFs (bench/make_large_raster.py), written once to --folder and
reused; a 4096^2 x 200 raster is 6.7 GB. Writes bench/MEMORY_RESULTS.md (its notes, from "Where the
memory goes" on, are kept).
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

ALGORITHMS = ("fers:rx", "fers:detect")


def run_measured(algorithm, raster, output):
    """(seconds, peak MB) of one qgis_process run; raises with its log when it fails."""
    command = ["/usr/bin/time", "-f", "TIME %e %M", str(ROOT / "scripts" / "qgis_process"), "run", algorithm, "--",
               f"INPUT={raster}", f"OUTPUT={output}"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    match = re.search(r"TIME ([\d.]+) (\d+)", completed.stderr)
    if completed.returncode != 0 or not match:
        raise RuntimeError(f"{algorithm} on {raster} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return float(match.group(1)), int(match.group(2)) / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--bands", type=int, default=200)
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where the input rasters are kept")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--output", default=str(ROOT / "bench" / "MEMORY_RESULTS.md"))
    args = parser.parse_args(argv)
    from make_large_raster import write_large_raster

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            raster = Path(args.folder) / f"big{size}.tif"
            if not raster.exists():
                print(f"Writing {raster} ...", flush=True)
                write_large_raster(str(raster), size, size, args.bands)
            gigabytes = raster.stat().st_size / 1e9
            for algorithm in args.algorithms:
                output = os.path.join(scratch, f"{algorithm.split(':')[1]}{size}.tif")
                seconds, peak = run_measured(algorithm, raster, output)
                os.remove(output)
                rows.append((algorithm, size, gigabytes, seconds, peak))
                print(f"{algorithm} {size}x{size}: {seconds:.0f} s, peak {peak:.0f} MB", flush=True)

    lines = [f"# Peak memory from 1024^2 to 4096^2 pixels ({args.bands} bands, int16)\n",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, {_memory_gb():.0f} GB; run "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Command: `.venv/bin/python bench/memory_scaling.py "
             f"{' '.join(sys.argv[1:])}`. Each row is one `scripts/qgis_process run` with default parameters "
             "(bundled model for fers:detect); peak = maximum resident set size of the whole process, QGIS "
             "included. Times are wall times on a shared machine.\n",
             "| algorithm | pixels | input GB | time s | peak MB | peak vs smallest |", "|---|---|---|---|---|---|"]
    for algorithm in args.algorithms:
        mine = [row for row in rows if row[0] == algorithm]
        for _, size, gigabytes, seconds, peak in mine:
            lines.append(f"| {algorithm} | {size}x{size} | {gigabytes:.2f} | {seconds:.0f} | {peak:.0f} | "
                         f"{peak / mine[0][4]:.2f}x |")
    lines.append("")
    for algorithm in args.algorithms:
        lines.append(exponent_line(algorithm, [(size ** 2, seconds) for name, size, _, seconds, _ in rows
                                               if name == algorithm]))
    Path(args.output).write_text("\n".join(lines) + "\n" + kept_notes(args.output))
    print(f"Wrote {args.output}")
    return 0


NOTES_HEADING = "Where the memory goes"


def kept_notes(path):
    """The hand-written notes of an existing results file (from NOTES_HEADING on), kept across reruns."""
    text = Path(path).read_text() if Path(path).exists() else ""
    start = text.find(NOTES_HEADING)
    return "" if start < 0 else "\n" + text[start:]


def exponent_line(algorithm, points):
    """'time ~ pixels^k' from bench.py's least-squares fit of log(time) on log(pixels) (start-up included)."""
    from bench import fitted_exponent  # bench/bench.py (this folder is first on sys.path)

    if len(points) < 2:
        return f"{algorithm}: one size, no exponent."
    return f"{algorithm}: time ~ pixels^{fitted_exponent(points):.2f} (fitted over these sizes, with QGIS start-up)."


def _memory_gb():
    with open("/proc/meminfo") as info:
        return int(next(line for line in info if line.startswith("MemTotal")).split()[1]) / 1024 ** 2


if __name__ == "__main__":
    sys.exit(main())
