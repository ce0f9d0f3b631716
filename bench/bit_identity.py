"""Bit-identity check of the detectors' outputs across an engine refactor (issue 16).

Runs a fixed set of cases through stable public interfaces only: the QGIS Processing algorithms
`fers:rx` and `fers:detect` by id and parameter name (processing.run in a headless QGIS), and the
command line `python -m fers_core batch` / `rx` / `demo-scene`. `save` stores every output raster,
mask and polygon file with a manifest of digests (per-band sha256 of the raw pixel bytes, grid,
projection, nodata, data type, band descriptions, metadata; for vectors the feature count and a hash
of the sorted WKT + attributes). `compare` reruns the cases into a temporary folder and prints, per
output, whether it is identical, and for a raster that is not the largest absolute difference and
the number of differing pixels; it exits with status 1 when anything differs.

    # save the references from the old commit (a worktree with the venv linked in)
    git worktree add ../old_ref 5788a74 && ln -s "$PWD/.venv" ../old_ref/.venv
    .venv/bin/python bench/bit_identity.py --repo ../old_ref save ../bitref
    # after the refactor
    .venv/bin/python bench/bit_identity.py --repo . compare ../bitref

Synthetic inputs (demo-scene) are written once by `save` and reused by `compare` (a regenerated
demo scene is compared as a case of its own); the real scenes are read from ../shared/data/scenes
and never copied into the repository. Keep OUTDIR outside the repository.

Determinism: BLAS, OpenMP and PyTorch threads and QGIS's processing thread count are pinned
(--threads, default 2, stored in the manifest and reused by compare), since OpenBLAS and
PyTorch round differently at other thread counts. The feature spill is forced off by writing those
cases' outputs to a small tmpfs (below the spill's free-space margin; needs root to mount, else
shutil.disk_usage is patched in the QGIS process to report a nearly full disk), and on by writing
to the ordinary disk; the log must confirm which happened.
"""

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THIS = Path(__file__).resolve()
SCENES = THIS.parents[2] / "shared" / "data" / "scenes"  # ../shared beside the checkout
SPILL_ON_TEXT = "are kept between passes"
SPILL_OFF_TEXT = "the networks run again"
NOSPILL_MB = 160  # the spill needs 256 MB + 1.1 x its size free: never on a disk this small
RASTER_EXT = (".tif", ".tiff")
VECTOR_EXT = (".gpkg", ".shp", ".geojson")

# ---------------------------------------------------------------- inputs

SYNTHETIC = {  # name -> demo-scene arguments (the scenes carry nodata pixels; the truth doubles as a MASK)
    "syn_a": dict(rows=60, cols=80, bands=40, seed=0),
    "syn_wide": dict(rows=120, cols=200, bands=24, seed=3),  # several 96 px windows at MEMORY_MB 1
}
REAL = ["hydice-urban-sub", "abu-beach-2", "samson"]  # small real scenes: 78x34 float64 162 bands, 100x100 int16
# 193 bands with a truth (the MASK), 95x95 float64 156 bands


def inputs_map(inputs_dir):
    """Placeholder -> path of every input."""
    paths = {}
    for name in SYNTHETIC:
        paths[name] = str(inputs_dir / f"{name}.tif")
        paths[name + "_truth"] = str(inputs_dir / f"{name}_truth.tif")
    for name in REAL:
        paths[name] = str(SCENES / f"{name}.tif")
        truth = SCENES / f"{name}_gt.tif"
        if truth.exists():
            paths[name + "_truth"] = str(truth)
    paths["model_default"] = str(inputs_dir / "fers_default.pt")
    paths["model_random200"] = str(inputs_dir / "fers_random200.pt")
    return paths


# ---------------------------------------------------------------- cases

def ref(name):
    """The placeholder of input `name` in a case's parameters."""
    return "{" + name + "}"


def qgis_cases():
    """[(case id, algorithm id, parameters, spill)]; "{name}" values are inputs, "@NAME.ext" outputs.

    spill: None (not a detection with the feature spill), True (on, ordinary disk) or False (forced off).
    """
    cases = []

    def add(case, alg, params, spill=None):
        cases.append((case, alg, params, spill))

    polygons = {"OUTPUT_MASK": "@OUTPUT_MASK.tif", "OUTPUT_POLYGONS": "@OUTPUT_POLYGONS.gpkg"}
    # fers:rx: every MODE, with and without a MASK, several blocks, thresholds and objects
    for scene in ("syn_a", "abu-beach-2"):
        for mode in range(7):
            for masked in (False, True):
                params = {"INPUT": ref(scene), "MODE": mode, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
                          "OUTPUT": "@OUTPUT.tif"}
                if masked:
                    params["MASK"] = ref(scene + "_truth")
                if mode in (0, 1, 2) and not masked:
                    params.update(polygons)
                add(f"rx/{scene}/mode{mode}{'-mask' if masked else ''}", "fers:rx", params)
    for scene in ("hydice-urban-sub", "samson"):
        for mode in range(7):
            add(f"rx/{scene}/mode{mode}", "fers:rx", {"INPUT": ref(scene), "MODE": mode, "OUTPUT": "@OUTPUT.tif"})
    add("rx/syn_wide/global-blocks1mb-bands", "fers:rx",
        {"INPUT": "{syn_wide}", "BANDS": [1, 3, 5, 7, 9, 11, 13, 15, 17, 19], "MEMORY_MB": 1,
         "OUTPUT": "@OUTPUT.tif", "THRESHOLD_METHOD": 2, "THRESHOLD": 0.1, **polygons})
    add("rx/syn_wide/local-blocks1mb", "fers:rx",
        {"INPUT": "{syn_wide}", "MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 7, "MEMORY_MB": 1,
         "OUTPUT": "@OUTPUT.tif"})
    add("rx/syn_a/local-components0.999", "fers:rx",
        {"INPUT": "{syn_a}", "MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9, "COMPONENTS": 0.999,
         "OUTPUT": "@OUTPUT.tif"})
    add("rx/syn_a/local-components8", "fers:rx",
        {"INPUT": "{syn_a}", "MODE": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9, "COMPONENTS": 8,
         "OUTPUT": "@OUTPUT.tif"})
    add("rx/syn_a/rxd-local-no-guard", "fers:rx",
        {"INPUT": "{syn_a}", "MODE": 2, "WINDOW_INNER": 0, "WINDOW_OUTER": 7, "OUTPUT": "@OUTPUT.tif"})
    add("rx/syn_a/threshold-absolute", "fers:rx",
        {"INPUT": "{syn_a}", "THRESHOLD_METHOD": 1, "THRESHOLD": 60, "MIN_PIXELS": 1, "OUTPUT": "@OUTPUT.tif",
         **polygons})
    add("rx/syn_wide/global-dask", "fers:rx",
        {"INPUT": "{syn_wide}", "MEMORY_MB": 1, "SCHEDULER": "local", "OUTPUT": "@OUTPUT.tif"})

    # fers:detect, one model (the bundled model file, 50 bands): every FUSION x BRANCHES x DETECTOR (spill on)
    single = {"MODEL": "{model_default}", "OUTPUT": "@OUTPUT.tif"}
    for scene in ("syn_a", "abu-beach-2"):
        for fusion in range(3):
            for branches in range(3):
                for detector in range(5):
                    params = {"INPUT": ref(scene), "FUSION": fusion, "BRANCHES": branches, "DETECTOR": detector,
                              "WINDOW_INNER": 3, "WINDOW_OUTER": 9, **single}
                    if scene == "syn_a":
                        params.update(polygons)  # top-percent threshold (the default): valid for every detector
                    add(f"detect/{scene}/model-fusion{fusion}-branches{branches}-detector{detector}", "fers:detect",
                        params, True if detector == 0 else None)  # the other detectors keep cubes, no spill
    # the feature spill forced off (global RX: the only detector that spills)
    for scene in ("syn_a", "hydice-urban-sub", "abu-beach-2"):
        for fusion in range(3):
            for branches in range(3):
                add(f"detect/{scene}/model-fusion{fusion}-branches{branches}-detector0-spilloff", "fers:detect",
                    {"INPUT": ref(scene), "FUSION": fusion, "BRANCHES": branches, **single}, False)
    # the bundled default ensemble (empty MODEL): every FUSION x BRANCHES, spill on and off
    for fusion in range(3):
        for branches in range(3):
            for spill in (True, False):
                add(f"detect/syn_a/default-ensemble-fusion{fusion}-branches{branches}-spill{'on' if spill else 'off'}",
                    "fers:detect", {"INPUT": "{syn_a}", "FUSION": fusion, "BRANCHES": branches,
                                    "OUTPUT": "@OUTPUT.tif"}, spill)
    add("detect/syn_a/model-global-mask-cubes-objects", "fers:detect",
        {"INPUT": "{syn_a}", "MASK": "{syn_a_truth}", "FUSION": 1, "OUTPUT_SPECTRAL": "@OUTPUT_SPECTRAL.tif",
         "OUTPUT_SPATIAL": "@OUTPUT_SPATIAL.tif", "THRESHOLD_METHOD": 2, "THRESHOLD": 0.5, **single, **polygons},
        True)
    add("detect/syn_a/model-product-cubes-spilloff", "fers:detect",
        {"INPUT": "{syn_a}", "FUSION": 2, "OUTPUT_SPECTRAL": "@OUTPUT_SPECTRAL.tif",
         "OUTPUT_SPATIAL": "@OUTPUT_SPATIAL.tif", **single}, False)
    add("detect/syn_a/model-local-mask", "fers:detect",
        {"INPUT": "{syn_a}", "MASK": "{syn_a_truth}", "DETECTOR": 1, "FUSION": 1, "WINDOW_INNER": 3,
         "WINDOW_OUTER": 9, **single})
    for precision in range(3):
        for scene in ("syn_a", "abu-beach-2"):
            add(f"detect/{scene}/model-precision{precision}", "fers:detect",
                {"INPUT": ref(scene), "PRECISION": precision, **single}, True)
        add(f"detect/syn_a/default-ensemble-precision{precision}", "fers:detect",
            {"INPUT": "{syn_a}", "PRECISION": precision, "OUTPUT": "@OUTPUT.tif"}, True)
    add("detect/syn_a/model-bands-tile48", "fers:detect",
        {"INPUT": "{syn_a}", "BANDS": list(range(1, 41, 2)), "TILE_SIZE": 48, "TILE_MARGIN": 8, **single}, True)
    # several windows (MEMORY_MB 1): spill on, off, and the Dask path of the algorithm
    for spill in (True, False):
        add(f"detect/syn_wide/model-sum-blocks1mb-spill{'on' if spill else 'off'}", "fers:detect",
            {"INPUT": "{syn_wide}", "FUSION": 1, "MEMORY_MB": 1, "PRECISION": 0, **single}, spill)
    add("detect/syn_wide/model-product-blocks1mb-spillon", "fers:detect",
        {"INPUT": "{syn_wide}", "FUSION": 2, "MEMORY_MB": 1, "PRECISION": 0, **single}, True)
    add("detect/syn_wide/model-sum-blocks1mb-dask", "fers:detect",
        {"INPUT": "{syn_wide}", "FUSION": 1, "MEMORY_MB": 1, "PRECISION": 0, "SCHEDULER": "local", **single})
    # the 200-band random-init member alone (a >50-band model: reference fusion is the sum)
    add("detect/abu-beach-2/model-random200", "fers:detect",
        {"INPUT": "{abu-beach-2}", "MODEL": "{model_random200}", "OUTPUT": "@OUTPUT.tif"}, True)
    # ensembles: the bundled default (empty MODEL), both ENSEMBLE_FUSION choices, FUSE_RX, MODELS
    for scene in ("syn_a", "hydice-urban-sub", "abu-beach-2", "samson"):
        add(f"detect/{scene}/default-ensemble", "fers:detect",
            {"INPUT": ref(scene), "OUTPUT": "@OUTPUT.tif", **(polygons if scene == "syn_a" else {})}, True)
    add("detect/syn_a/default-ensemble-standardised", "fers:detect",
        {"INPUT": "{syn_a}", "ENSEMBLE_FUSION": 1, "OUTPUT": "@OUTPUT.tif"}, True)
    add("detect/syn_a/default-ensemble-fuserx-spilloff", "fers:detect",
        {"INPUT": "{syn_a}", "FUSE_RX": True, "OUTPUT": "@OUTPUT.tif"}, False)
    add("detect/syn_a/model-fuserx-models-standardised", "fers:detect",
        {"INPUT": "{syn_a}", "MODELS": ["{model_random200}"], "FUSE_RX": True, "ENSEMBLE_FUSION": 1,
         "PRECISION": 0, **single}, True)
    add("detect/abu-beach-2/model-product-mask", "fers:detect",
        {"INPUT": "{abu-beach-2}", "MASK": "{abu-beach-2_truth}", "FUSION": 2, **single}, True)
    add("detect/hydice-urban-sub/model-sum-spilloff", "fers:detect",
        {"INPUT": "{hydice-urban-sub}", "FUSION": 1, **single}, False)
    return cases


def cli_cases():
    """[(case id, argv after `python -m fers_core`)]; "@" is the case's output folder."""
    batch_inputs = ["{syn_a}", "{hydice-urban-sub}", "{abu-beach-2}", "{samson}"]
    cases = [
        ("cli/demo-scene", ["demo-scene", "@/scene.tif", "@/truth.tif", "--rows", "40", "--cols", "50",
                            "--bands", "30", "--seed", "7"]),
        ("cli/rx-mask", ["rx", "{syn_a}", "@/rx.tif", "--mask", "{syn_a_truth}"]),
    ]
    for detector, extra in (("rx", []), ("fers", ["--model", "{model_default}"]),
                            ("local-rx", ["--window-inner", "3", "--window-outer", "9"]),
                            ("rxd-local-mean", ["--window-inner", "3", "--window-outer", "9"]), ("utd", [])):
        cases.append((f"batch/{detector}/in-process",
                      ["batch", *batch_inputs, "--out-dir", "@", "--detector", detector, *extra]))
        cases.append((f"batch/{detector}/dask-local-split",
                      ["batch", *batch_inputs, "--out-dir", "@", "--detector", detector, *extra,
                       "--scheduler", "local", "--split", "--workers", "2"]))
    cases.append(("batch/fers/default-model-blocks1mb", ["batch", "{syn_wide}", "--out-dir", "@", "--detector",
                                                        "fers", "--block-mb", "1"]))
    cases.append(("batch/fers/dask-local-split-blocks1mb",
                  ["batch", "{syn_wide}", "--out-dir", "@", "--detector", "fers", "--model", "{model_default}",
                   "--block-mb", "1", "--scheduler", "local", "--split", "--workers", "2"]))
    cases.append(("batch/rx/dask-local-tasks", ["batch", *batch_inputs, "--out-dir", "@", "--detector", "rx",
                                                "--scheduler", "local", "--workers", "2"]))
    return cases


# ---------------------------------------------------------------- environment

def pinned_env(repo, threads):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONPATH"] = str(repo)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env.pop("FERS_SKIP_MEMORY_CHECK", None)
    return env


def python_of(repo):
    """The checkout's venv python (Debian's python3 with system site-packages: QGIS, GDAL; plus torch)."""
    for candidate in (Path(repo) / ".venv" / "bin" / "python", Path(sys.executable)):
        if candidate.exists():
            return str(candidate)
    return sys.executable


def substitute(value, inputs, out):
    if isinstance(value, list):
        return [substitute(v, inputs, out) for v in value]
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return inputs[value[1:-1]]
    if isinstance(value, str) and value.startswith("@"):
        return str(Path(out) / value[1:].lstrip("/")) if len(value) > 1 else str(out)
    return value


# ---------------------------------------------------------------- QGIS worker (runs inside the checkout's QGIS)

def qgis_worker(args):
    """Run the QGIS cases listed in args.job (JSON) and write their results beside it."""
    job = json.loads(Path(args.job).read_text())
    repo = Path(job["repo"])
    threads = job["threads"]
    runtime = Path(job["scratch"]) / "xdg"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(Path(job["scratch"]) / "qgis-profile")
    plugins = repo / ".plugins"
    plugins.mkdir(exist_ok=True)
    link = plugins / "fers"
    if not link.exists():
        link.symlink_to(repo)
    if link.resolve() != repo.resolve():
        sys.exit(f"{link} points to {link.resolve()}, not to {repo}")
    for path in (str(plugins), str(repo), "/usr/share/qgis/python/plugins"):
        sys.path.insert(0, path)

    import torch

    torch.set_num_threads(threads)
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback

    app = QgsApplication([], False)
    app.initQgis()
    QgsApplication.setMaxThreads(threads)
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing

    import fers

    if Path(fers.__file__).resolve().parent != repo.resolve():
        sys.exit(f"the fers plugin was imported from {fers.__file__}, not from {repo}")
    plugin = fers.classFactory(None)
    plugin.initProcessing()

    class Log(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, text):  # noqa: N802 (QGIS API)
            self.lines.append(text)

        def pushWarning(self, text):  # noqa: N802 (QGIS API)
            self.lines.append("WARNING " + text)

        def reportError(self, text, fatal=False):  # noqa: N802 (QGIS API)
            self.lines.append("ERROR " + text)

        def pushDebugInfo(self, text):  # noqa: N802 (QGIS API)
            self.lines.append(text)

        def pushCommandInfo(self, text):  # noqa: N802 (QGIS API)
            self.lines.append(text)

        def pushConsoleInfo(self, text):  # noqa: N802 (QGIS API)
            self.lines.append(text)

    results = {}
    real_disk_usage = shutil.disk_usage
    for case in job["cases"]:
        out = Path(case["run_dir"])
        out.mkdir(parents=True, exist_ok=True)
        params = {key: substitute(value, job["inputs"], out) for key, value in case["params"].items()}
        feedback = Log()
        started = time.perf_counter()
        if case["spill"] is False and job["patch_disk"]:
            shutil.disk_usage = lambda path: real_disk_usage(path)._replace(free=64 * 2**20)
        try:
            result = processing.run(case["alg"], params, context=QgsProcessingContext(), feedback=feedback)
            error = None
            numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        except Exception as exc:  # recorded and compared like an output
            error, numbers = f"{type(exc).__name__}: {exc}", {}
        finally:
            shutil.disk_usage = real_disk_usage
        log = "\n".join(feedback.lines)
        (out / "log.txt").write_text(log + (f"\n{error}\n" if error else ""))
        results[case["id"]] = {"error": error, "numbers": numbers, "seconds": time.perf_counter() - started,
                               "spill_on_logged": SPILL_ON_TEXT in log, "spill_off_logged": SPILL_OFF_TEXT in log}
        print(f"  {case['id']}: {'ERROR ' + error if error else 'ok'} ({time.perf_counter() - started:.1f} s)",
              flush=True)
        Path(job["results"]).write_text(json.dumps(results, indent=1))  # after each case: a crash keeps the rest
    plugin.unload()
    app.exitQgis()


# ---------------------------------------------------------------- digests

def sha256(data):
    return hashlib.sha256(data).hexdigest()


def raster_digest(path):
    from osgeo import gdal

    dataset = gdal.Open(str(path))
    digest = {"type": "raster", "size": [dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount],
              "geotransform": list(dataset.GetGeoTransform(can_return_null=True) or []),
              "projection": dataset.GetProjection(), "metadata": {}, "bands": []}
    for domain in sorted(set(dataset.GetMetadataDomainList() or []) - {"DERIVED_SUBDATASETS"}):
        digest["metadata"][domain] = dataset.GetMetadata(domain)
    for index in range(1, dataset.RasterCount + 1):
        band = dataset.GetRasterBand(index)
        digest["bands"].append({"dtype": gdal.GetDataTypeName(band.DataType), "nodata": band.GetNoDataValue(),
                                "description": band.GetDescription(), "metadata": band.GetMetadata(),
                                "sha256": sha256(band.ReadRaster())})
    return digest


def vector_digest(path):
    from osgeo import ogr

    source = ogr.Open(str(path))
    layers = {}
    for layer in source:
        definition = layer.GetLayerDefn()
        fields = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
        rows = []
        for feature in layer:
            geometry = feature.GetGeometryRef()
            rows.append(json.dumps([geometry.ExportToWkt() if geometry else None,
                                    [feature.GetField(name) for name in fields]], default=str))
        srs = layer.GetSpatialRef()
        layers[layer.GetName()] = {"features": len(rows), "fields": fields,
                                   "srs": srs.ExportToWkt() if srs else None,
                                   "geometry_type": ogr.GeometryTypeToName(layer.GetGeomType()),
                                   "sha256": sha256("\n".join(sorted(rows)).encode())}
    return {"type": "vector", "layers": layers}


def digest_folder(folder):
    """{relative name: digest} of every raster and vector file under folder."""
    digests = {}
    for path in sorted(Path(folder).rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.suffix.lower() in RASTER_EXT:
            digests[name] = raster_digest(path)
        elif path.suffix.lower() in VECTOR_EXT:
            digests[name] = vector_digest(path)
    return digests


def pixel_difference(old_path, new_path):
    """'max |diff| X, N of M pixels differ' between two rasters of the same shape, else why not comparable."""
    import numpy as np
    from osgeo import gdal

    old, new = gdal.Open(str(old_path)), gdal.Open(str(new_path))
    if (old.RasterXSize, old.RasterYSize, old.RasterCount) != (new.RasterXSize, new.RasterYSize, new.RasterCount):
        return "shapes differ"
    a = old.ReadAsArray().astype(np.float64)
    b = new.ReadAsArray().astype(np.float64)
    differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    if a.ndim == 3:
        differ = differ.any(axis=0)
    both = np.isfinite(a) & np.isfinite(b)
    delta = np.abs(a - b)[both]
    biggest = float(delta.max()) if delta.size else 0.0
    scale = float(np.abs(a[both]).max()) if both.any() else 0.0
    return (f"max |diff| {biggest:.3g} (values up to {scale:.3g}), {int(differ.sum())} of {differ.size} "
            "pixels differ")


def describe_difference(old, new):
    """Which fields of two digests differ (short text)."""
    if old is None:
        return "new output"
    if new is None:
        return "missing"
    if old["type"] == "vector":
        parts = []
        for name in sorted(set(old["layers"]) | set(new["layers"])):
            a, b = old["layers"].get(name), new["layers"].get(name)
            if a != b:
                parts.append(f"layer {name}: " + ("missing" if b is None else "new" if a is None else
                             f"features {a['features']} -> {b['features']}" if a["features"] != b["features"] else
                             ", ".join(k for k in a if a[k] != b.get(k)) + " differ"))
        return "; ".join(parts)
    parts = [key for key in ("size", "geotransform", "projection", "metadata") if old[key] != new[key]]
    for index, (a, b) in enumerate(zip(old["bands"], new["bands"])):
        keys = [k for k in a if a[k] != b.get(k) and k != "sha256"]
        if keys:
            parts.append(f"band {index + 1} {'/'.join(keys)}")
    pixels = [i + 1 for i, (a, b) in enumerate(zip(old["bands"], new["bands"])) if a["sha256"] != b["sha256"]]
    if pixels:
        parts.append(f"pixels of band(s) {','.join(map(str, pixels[:5]))}{'...' if len(pixels) > 5 else ''}")
    return ", ".join(parts) + " differ"


# ---------------------------------------------------------------- running all cases

def selected(case_id, patterns):
    return not patterns or any(fnmatch.fnmatch(case_id, p) for p in patterns)


def mount_nospill(scratch):
    """A small tmpfs where the feature spill never fits; (path, mounted)."""
    folder = Path(scratch) / "nospill"
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={NOSPILL_MB}m", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode == 0:
            return folder, True
    return folder, False


def write_synthetic(repo, inputs_dir, env):
    inputs_dir.mkdir(parents=True, exist_ok=True)
    for name, settings in SYNTHETIC.items():
        argv = [python_of(repo), "-m", "fers_core", "demo-scene", str(inputs_dir / f"{name}.tif"),
                str(inputs_dir / f"{name}_truth.tif")]
        for key, value in settings.items():
            argv += [f"--{key}", str(value)]
        subprocess.run(argv, cwd=repo, env=env, check=True, capture_output=True)
    shutil.copy2(Path(repo) / "weights" / "fers_default.pt", inputs_dir / "fers_default.pt")
    random200 = Path(repo) / "weights" / "fers_random200.pt"  # bundled until the spectral members replaced it
    if random200.exists():
        shutil.copy2(random200, inputs_dir / random200.name)
    else:  # the same network: random_init_model(200, seed=0)
        script = ("import sys; from fers_core.enhance.model_file import random_init_model, save_model; "
                  "save_model(random_init_model(200, seed=0, branches=('spectral',)), sys.argv[1])")
        subprocess.run([python_of(repo), "-c", script, str(inputs_dir / random200.name)], cwd=repo, env=env,
                       check=True, capture_output=True)


def run_all(repo, outputs_dir, inputs, threads, patterns, scratch):
    """Run every selected case into outputs_dir/<case id>/; returns {case id: record}."""
    env = pinned_env(repo, threads)
    records = {}
    nospill, mounted = mount_nospill(scratch)
    try:
        job_cases = []
        for case, alg, params, spill in qgis_cases():
            if not selected(case, patterns):
                continue
            run_dir = (nospill / case) if spill is False and mounted else (outputs_dir / case)
            job_cases.append({"id": case, "alg": alg, "params": params, "spill": spill, "run_dir": str(run_dir)})
        if job_cases:
            job = Path(scratch) / "job.json"
            job.write_text(json.dumps({"repo": str(repo), "threads": threads, "scratch": str(scratch),
                                       "inputs": inputs, "cases": job_cases, "patch_disk": not mounted,
                                       "results": str(Path(scratch) / "results.json")}))
            print(f"QGIS cases ({len(job_cases)}) in {repo}; the spill is forced off "
                  f"{'by a ' + str(NOSPILL_MB) + ' MB tmpfs' if mounted else 'by patching shutil.disk_usage'}",
                  flush=True)
            status = subprocess.run([python_of(repo), str(THIS), "qgis-worker", str(job)], cwd=scratch,
                                    env=env).returncode
            done = Path(scratch) / "results.json"
            results = json.loads(done.read_text()) if done.exists() else {}
            for case in job_cases:
                run_dir, final = Path(case["run_dir"]), outputs_dir / case["id"]
                if run_dir != final and run_dir.exists():
                    final.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(run_dir, final)
                    shutil.rmtree(run_dir)
                final.mkdir(parents=True, exist_ok=True)
                record = results.get(case["id"]) or {
                    "error": f"no result: the QGIS process ended with status {status} before or during this case",
                    "numbers": {}, "seconds": 0.0}
                record.update(kind="qgis", alg=case["alg"], params=case["params"], spill=case["spill"])
                if case["spill"] is not None and not record["error"]:
                    wanted = SPILL_ON_TEXT if case["spill"] else SPILL_OFF_TEXT
                    record["spill_confirmed"] = record["spill_on_logged" if case["spill"] else "spill_off_logged"]
                    if not record["spill_confirmed"]:
                        print(f"  WARNING {case['id']}: the log does not say '{wanted}'", flush=True)
                records[case["id"]] = record
    finally:
        if mounted:
            subprocess.run(["umount", str(nospill)], check=False)
    for case, argv in cli_cases():
        if not selected(case, patterns):
            continue
        out = outputs_dir / case
        out.mkdir(parents=True, exist_ok=True)
        full = [substitute(a, inputs, out) for a in argv]
        started = time.perf_counter()
        done = subprocess.run([python_of(repo), "-m", "fers_core", *full], cwd=scratch, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        (out / "log.txt").write_text(done.stdout + done.stderr)
        error = None if done.returncode == 0 else f"exit status {done.returncode}: {done.stderr.strip()[-300:]}"
        print(f"  {case}: {'ERROR ' + error if error else 'ok'} ({seconds:.1f} s)", flush=True)
        records[case] = {"kind": "cli", "argv": argv, "error": error, "numbers": {}, "seconds": seconds}
    for case, record in records.items():
        record["files"] = digest_folder(outputs_dir / case)
    return records


def file_sha(path):
    with open(path, "rb") as handle:
        return sha256(handle.read())


def save(args, repo):
    outdir = Path(args.outdir).resolve()
    if outdir.exists() and any(outdir.iterdir()):
        sys.exit(f"{outdir} is not empty: choose a new folder (references are never overwritten)")
    if outdir.is_relative_to(repo.resolve()):
        sys.exit(f"{outdir} is inside the checkout: keep the references outside the repository")
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    inputs_dir = outdir / "inputs"
    env = pinned_env(repo, args.threads)
    write_synthetic(repo, inputs_dir, env)
    inputs = inputs_map(inputs_dir)
    with tempfile.TemporaryDirectory(prefix="bit-identity-") as scratch:
        records = run_all(repo, outdir / "outputs", inputs, args.threads, args.only, scratch)
    manifest = {"commit": commit.strip(), "dirty": bool(dirty), "repo": str(repo), "threads": args.threads,
                "created": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": time.perf_counter() - started,
                "inputs": {name: file_sha(path) for name, path in inputs.items()},
                "bundled_weights": {p.name: file_sha(p) for p in sorted((repo / "weights").glob("*.pt"))},
                "cases": records}
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    errors = [case for case, record in records.items() if record["error"]]
    print(f"Saved {len(records)} cases ({sum(len(r['files']) for r in records.values())} output files) from "
          f"{commit.strip()[:10]}{' (dirty)' if dirty else ''} to {outdir} in {manifest['seconds']:.0f} s"
          + (f"; {len(errors)} cases failed: {', '.join(errors)}" if errors else ""))


def compare(args, repo):
    refdir = Path(args.outdir).resolve()
    manifest = json.loads((refdir / "manifest.json").read_text())
    threads = args.threads or manifest["threads"]
    inputs = inputs_map(refdir / "inputs")
    for name, digest in manifest["inputs"].items():
        if name in inputs and file_sha(inputs[name]) != digest:
            print(f"WARNING: input {name} ({inputs[name]}) changed since the references were saved")
    for name, digest in manifest["bundled_weights"].items():
        path = repo / "weights" / name
        if not path.exists() or file_sha(path) != digest:
            print(f"WARNING: bundled weights/{name} differ from the references' (default-ensemble cases)")
    started = time.perf_counter()
    keep = Path(args.keep).resolve() if args.keep else None
    with tempfile.TemporaryDirectory(prefix="bit-identity-") as scratch:
        outputs_dir = keep or Path(scratch) / "outputs"
        records = run_all(repo, outputs_dir, inputs, threads, args.only, scratch)
        rows = []
        for case, old in manifest["cases"].items():
            if not selected(case, args.only):
                continue
            new = records.get(case)
            if new is None:
                rows.append((case, "(run)", False, "this case is no longer defined"))
                continue
            if old.get("error") != new.get("error"):
                rows.append((case, "(run)", False, f"error {old.get('error')!r} -> {new.get('error')!r}"))
            if old.get("numbers") != new.get("numbers"):
                rows.append((case, "(numbers)", False, f"{old.get('numbers')} -> {new.get('numbers')}"))
            for name in sorted(set(old["files"]) | set(new["files"])):
                a, b = old["files"].get(name), new["files"].get(name)
                if a == b:
                    rows.append((case, name, True, ""))
                    continue
                detail = describe_difference(a, b)
                if a and b and a["type"] == "raster" and any(x["sha256"] != y["sha256"]
                                                             for x, y in zip(a["bands"], b["bands"])):
                    detail += "; " + pixel_difference(refdir / "outputs" / case / name, outputs_dir / case / name)
                rows.append((case, name, False, detail))
        seconds = time.perf_counter() - started
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'case':<{width}}  {'output':<22} identical  detail")
    for case, name, same, detail in rows:
        if same and args.differences:
            continue
        print(f"{case:<{width}}  {name:<22} {'yes' if same else 'NO ':<9}  {detail}")
    rows += [(case, "(run)", False, "a new case without references") for case in records
             if case not in manifest["cases"]]
    differing = [r for r in rows if not r[2]]
    print(f"\n{len(rows) - len(differing)} of {len(rows)} outputs identical to the references of "
          f"{manifest['commit'][:10]} (threads {threads}); compare ran {seconds:.0f} s "
          f"(save ran {manifest['seconds']:.0f} s).")
    sys.exit(1 if differing else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(THIS.parents[1]), help="the checkout to run (default: this one)")
    parser.add_argument("--threads", type=int, default=0,
                        help="BLAS/OpenMP/PyTorch/QGIS threads (save: default 2; compare: the manifest's)")
    parser.add_argument("--only", action="append", help="run only the cases matching this glob (repeatable)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("save", help="run all cases and save outputs + manifest").add_argument("outdir")
    compare_parser = commands.add_parser("compare", help="rerun all cases and compare with saved references")
    compare_parser.add_argument("outdir")
    compare_parser.add_argument("--keep", help="write the new outputs here (default: a temporary folder)")
    compare_parser.add_argument("--differences", action="store_true", help="list only the outputs that differ")
    worker = commands.add_parser("qgis-worker", help=argparse.SUPPRESS)
    worker.add_argument("job")
    args = parser.parse_args()
    if args.command == "qgis-worker":
        return qgis_worker(args)
    repo = Path(args.repo).resolve()
    if not (repo / "fers_core" / "__main__.py").exists():
        sys.exit(f"{repo} is not a FERS checkout")
    if args.command == "save":
        args.threads = args.threads or 2
        return save(args, repo)
    return compare(args, repo)


if __name__ == "__main__":
    main()
