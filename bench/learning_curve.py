"""Learning curve: held-out AUC of stage-1 (spectral) networks against training pixels, vs random init.

    nice -n 5 .venv/bin/python bench/learning_curve.py --cache /tmp/fers-lc [--seeds 0,1] [--random-seeds 0,1,2]
        [--output bench/LEARNING_CURVE.md] [--quick]

Folds (leave-one-sensor-out over the development scenes of ../shared/data/scenes):
- "AVIRIS held out" scores the 9 AVIRIS scenes; its training pool holds no AVIRIS-family cube (AVIRIS,
  AVIRIS-C, AVIRIS-NG, jasper-ridge).
- "HYDICE held out" scores hydice-urban-162/175; its pool holds no HYDICE raster (hydice-urban-sub and
  the HYDICE development scenes are left out).
The development scenes of the other fold are training backgrounds with their labelled anomalies masked
(TrainingRaster mask = the scene's _gt raster; non-zero pixels are excluded from every patch).

Pools: each fold adds rasters in a fixed order (POOL_ORDER, chosen before any AUC was read: the
background-only rasters first, interleaving sensors, then the other fold's masked development scenes),
cut at about 20k and 40k pixels and at the whole pool. Bad bands (backgrounds.json ``bad_bands_1based``)
are dropped through a band-list VRT written under --cache: TrainOptions takes one band list for all
inputs, so per-raster band lists reach TrainingRaster through the VRT. The AVIRIS-NG cubes (10x10 px)
are too small for a 32 px patch and are left out of every pool.

Networks: 0 pixels = the random-init model (fers_core.enhance.model_file.random_init_model, one per
--random-seeds seed); otherwise stage 1 of the bundled recipe (scripts/train_default.py RECIPE: 50 model
bands, frozen-random teacher, 30 epochs, 32 px patches, batch 16, lr 5e-3) through
fers_core.training.run.train_model, one network per --seeds seed, two threads.

Scoring: spectral-only FERS detection (global RX, fusion single, float32) through
fers_core.pipeline.detect.run_fers_detection; AUC per held-out scene (fers_core.detectors.metrics.roc_auc)
over the valid pixels. Nothing is selected: this is a measurement, no held-out label steers any choice.

Trained models, VRTs and per-model AUCs are cached under --cache (outside the project: they are derived
from the shared data, never commit them), so an interrupted run resumes (a training also resumes from its
per-epoch checkpoint). Jobs run cheapest-first: random init, then training seed by seed. The report is
rewritten after every job, so a stopped run leaves the tables of what finished (seed counts shown).
--quick: 1 epoch, the smallest pool, seed 0, two scenes per fold, a separate cache subfolder, report to
/tmp (a smoke test of the whole path).

Exits with a clear message, status 0, when ../shared is absent.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from training_pool import BACKGROUNDS, SCENES, SHARED, TOO_SMALL, catalogue, family, training_input  # noqa: E402, F401

THREADS = 2
STAGE1 = {"model_bands": 50, "teacher": "frozen-random", "epochs": 30, "patch_size": 32, "batch_size": 16,
          "learning_rate": 5e-3}
"""Stage 1 of scripts/train_default.py RECIPE (checked against it at start)."""
STAGE2 = {"epochs": 40, "patch_size": 32}
"""Stage 2 (spatial student, on top of a stage-1 network) of the same RECIPE (checked likewise)."""
AVIRIS_SCENES = ("abu-beach-1", "abu-beach-2", "abu-beach-3", "abu-urban-1", "abu-urban-2", "abu-urban-4",
                 "abu-urban-5", "sandiego-189", "sandiego-224")
HYDICE_SCENES = ("hydice-urban-162", "hydice-urban-175")
FOLDS = {"AVIRIS held out": {"family": "AVIRIS", "scored": AVIRIS_SCENES},
         "HYDICE held out": {"family": "HYDICE", "scored": HYDICE_SCENES}}
POOL_ORDER = {
    # fold: list of steps; the pool at step k = every raster of steps 0..k (about 20k, about 40k, all)
    "AVIRIS held out": [
        ["samson", "hydice-urban-sub", "paris-hyperion", "enmap-potsdam-b"],
        ["hydice-urban-162", "enmap-potsdam-c"],
        ["hydice-urban-175", "enmap-potsdam-a"],
    ],
    "HYDICE held out": [
        ["jasper-ridge", "samson", "moffett-50"],
        ["salinas-a-224", "enmap-potsdam-c", "cuprite-50x90"],
        ["salton-sea-224", "enmap-potsdam-a", "enmap-potsdam-b", "paris-hyperion", *AVIRIS_SCENES],
    ],
}
SIZE_LABELS = ("~20k", "~40k", "all")


def check_pools(entries):
    """Every pool raster exists, is of another family than the fold's, and is not a scored scene."""
    for fold, steps in POOL_ORDER.items():
        held = FOLDS[fold]
        for name in (name for step in steps for name in step):
            if family(entries[name]["sensor"]) == held["family"] or name in held["scored"]:
                raise SystemExit(f"{fold}: {name} ({entries[name]['sensor']}) must not be in its training pool.")
            if name.startswith(TOO_SMALL):
                raise SystemExit(f"{name} is too small for a {STAGE1['patch_size']} px patch.")


def check_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_default", ROOT / "scripts" / "train_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = module.RECIPE
    bundled = {"model_bands": recipe["model_bands"], "teacher": recipe["teacher"], "batch_size": recipe["batch_size"],
               "learning_rate": recipe["learning_rate"], **recipe["stage1"]}
    if bundled != STAGE1:
        raise SystemExit(f"STAGE1 {STAGE1} differs from scripts/train_default.py's stage 1 {bundled}: update it.")
    if recipe["stage2"] != STAGE2:
        raise SystemExit(f"STAGE2 {STAGE2} differs from scripts/train_default.py's stage 2 {recipe['stage2']}.")


def read_all(path):
    from fers_core.io.reader import RasterReader
    from fers_core.io.windows import Window

    with RasterReader(str(path)) as reader:
        return reader.read(Window.whole(reader.height, reader.width))


def score(model, scenes):
    """{scene: AUC} of spectral-only FERS detection, and the seconds it took."""
    from fers_core.choices import Fusion
    from fers_core.detectors.metrics import roc_auc
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.options import DetectOptions

    started = time.perf_counter()
    options = DetectOptions(branches=("spectral",), precision="float32", threads=THREADS)
    result = {}
    for scene in scenes:
        with tempfile.TemporaryDirectory() as temporary:
            output = os.path.join(temporary, "scores.tif")
            summary = run_fers_detection(SCENES / f"{scene}.tif", output, model, options)
            if summary.fusion is not Fusion.SINGLE:
                raise SystemExit(f"{scene}: expected a single-branch run, got fusion {summary.fusion}.")
            scores, valid = read_all(output)
        truth, _ = read_all(SCENES / f"{scene}_gt.tif")
        result[scene] = roc_auc(scores[0][valid], truth[0][valid] != 0)
    return result, time.perf_counter() - started


def plain_rx_auc(scenes):
    """{scene: AUC} of plain global RX on every raw band (the reference row; no network)."""
    from fers_core.detectors.metrics import roc_auc
    from fers_core.detectors.rx import rx_scores

    result = {}
    for scene in scenes:
        data, valid = read_all(SCENES / f"{scene}.tif")
        truth, _ = read_all(SCENES / f"{scene}_gt.tif")
        result[scene] = roc_auc(rx_scores(data[:, valid].T.astype(np.float64)), truth[0][valid] != 0)
    return result


def slug(text):
    return text.lower().replace(" ", "-").replace("~", "")


class Job:
    """One network of the curve: (fold, step or None for random init, seed); its cached result."""

    def __init__(self, fold, step, seed, cache):
        self.fold, self.step, self.seed = fold, step, seed
        size = "random" if step is None else SIZE_LABELS[step]
        self.key = f"{slug(fold)}-{slug(size)}-seed{seed}"
        self.model_path = Path(cache) / "models" / f"{self.key}.pt"
        self.result_path = Path(cache) / "results" / f"{self.key}.json"

    def result(self):
        return json.loads(self.result_path.read_text()) if self.result_path.exists() else None

    def run(self, entries, cache, epochs, scenes, log):
        from fers_core.enhance.model_file import load_model, random_init_model

        record = {"fold": self.fold, "step": self.step, "seed": self.seed}
        if self.step is None:
            model = random_init_model(STAGE1["model_bands"], seed=self.seed, branches=("spectral",))
        else:
            if not self.model_path.exists():
                record.update(self.train(entries, cache, epochs, log))
            else:
                stored = load_model(self.model_path).provenance
                record.update({"train_seconds": stored.get("seconds"), "usable_pixels": stored.get("usable_pixels")})
            model = load_model(self.model_path)
        record["auc"], record["score_seconds"] = score(model, scenes)
        self.result_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.result_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=1))
        os.replace(temporary, self.result_path)
        return record

    def train(self, entries, cache, epochs, log):
        from fers_core.feedback import Feedback
        from fers_core.training.data import PatchSampler, TrainingRaster, load_backgrounds
        from fers_core.training.run import STAGES_SPECTRAL, TrainOptions, train_model

        names = [name for step in POOL_ORDER[self.fold][:self.step + 1] for name in step]
        pairs = [training_input(name, entries[name], cache) for name in names]
        inputs, masks = [path for path, _ in pairs], [mask for _, mask in pairs]
        usable = PatchSampler(load_backgrounds([TrainingRaster(p, m) for p, m in pairs],
                                               STAGE1["model_bands"]), STAGE1["patch_size"]).usable_pixels
        self.model_path.parent.mkdir(parents=True, exist_ok=True)
        options = TrainOptions(
            inputs=inputs, masks=masks if any(masks) else None, output_model=str(self.model_path),
            model_bands=STAGE1["model_bands"], stages=STAGES_SPECTRAL, epochs=epochs,
            patch_size=STAGE1["patch_size"], batch_size=STAGE1["batch_size"], learning_rate=STAGE1["learning_rate"],
            seed=self.seed, teacher=STAGE1["teacher"], device="cpu",
            provenance={"learning_curve": self.key, "pool": names, "usable_pixels": usable})
        log(f"{self.key}: training on {len(inputs)} raster(s), {usable} usable px")
        summary = train_model(options, Feedback())
        return {"train_seconds": summary.seconds, "usable_pixels": usable}


def aggregate(records, scenes):
    """Per seed the fold's mean AUC; the mean and min-max over seeds; per-scene means over seeds."""
    per_seed = [float(np.mean([record["auc"][scene] for scene in scenes])) for record in records]
    per_scene = {scene: float(np.mean([record["auc"][scene] for record in records])) for scene in scenes}
    seconds = [record.get("train_seconds") for record in records if record.get("train_seconds")]
    return {"mean": float(np.mean(per_seed)), "min": min(per_seed), "max": max(per_seed), "seeds": len(records),
            "seed_list": sorted(record["seed"] for record in records), "per_scene": per_scene,
            "train_minutes": (float(np.mean(seconds)) / 60 if seconds else None),
            "usable": records[0].get("usable_pixels")}


def compute_minutes(jobs):
    records = [record for record in (job.result() for job in jobs) if record]
    return sum((record.get("train_seconds") or 0) + record["score_seconds"] for record in records) / 60


def report(jobs, entries, scenes_of, planned, command, rx):
    lines = ["# Learning curve: held-out AUC against training pixels, trained stage 1 vs random init", "",
             "Written by `bench/learning_curve.py` (its docstring gives the protocol). Command:", "",
             f"    {command}", "",
             "Spectral-only FERS detection (global RX, fusion single, float32) of each fold's held-out development "
             "scenes; networks: random init (0 training pixels) or stage 1 of the bundled recipe (50 model bands, "
             "frozen-random teacher, 30 epochs of 32 px patches, batch 16, lr 5e-3, 2 threads) trained only on "
             "rasters of other sensors. 'mean' is the mean over seeds of the fold's mean AUC; 'min-max' its range "
             "over seeds; per-scene columns are means over seeds. 'vs random' = mean minus the random-init mean.",
             "", f"Compute time of the jobs reported (training + scoring, summed): {compute_minutes(jobs):.1f} min.",
             ""]
    for fold in FOLDS:
        scenes = scenes_of[fold]
        lines += [f"## {fold} (scored: {', '.join(scenes)})", ""]
        header = ["training pixels", "seeds", "mean AUC", "min-max", "vs random", "train min/seed",
                  *[scene.replace("abu-", "").replace("sandiego-", "sd-").replace("hydice-urban-", "hu-")
                    for scene in scenes]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines.append(f"| plain RX (reference, no network) | - | {np.mean([rx[s] for s in scenes]):.4f} | | | | "
                     + " | ".join(f"{rx[s]:.4f}" for s in scenes) + " |")
        base = None
        for step in [None, *range(len(POOL_ORDER[fold]))]:
            records = [job.result() for job in jobs if job.fold == fold and job.step == step]
            records = [record for record in records if record]
            wanted = planned[(fold, step)]
            label = "0 (random init)" if step is None else f"{SIZE_LABELS[step]}"
            if not records:
                lines.append(f"| {label} | 0 of {wanted} | not run | | | | " + " | ".join("" for _ in scenes) + " |")
                continue
            stats = aggregate(records, scenes)
            if step is None:
                base = stats["mean"]
            else:
                label = f"{stats['usable']} ({SIZE_LABELS[step]})"
            seeds = f"{stats['seeds']} of {wanted} ({','.join(map(str, stats['seed_list']))})"
            delta = "-" if step is None or base is None else f"{stats['mean'] - base:+.4f}"
            minutes = "-" if stats["train_minutes"] is None else f"{stats['train_minutes']:.1f}"
            lines.append(f"| {label} | {seeds} | {stats['mean']:.4f} | {stats['min']:.4f}-{stats['max']:.4f} | "
                         f"{delta} | {minutes} | " + " | ".join(f"{stats['per_scene'][s]:.4f}" for s in scenes) + " |")
        lines += ["", "Per seed (fold mean AUC):", ""]
        for step in [None, *range(len(POOL_ORDER[fold]))]:
            records = sorted((r for r in (job.result() for job in jobs if job.fold == fold and job.step == step) if r),
                             key=lambda record: record["seed"])
            label = "random init" if step is None else SIZE_LABELS[step]
            values = ", ".join(f"seed {r['seed']}: {np.mean([r['auc'][s] for s in scenes]):.4f}" for r in records)
            lines.append(f"- {label}: {values or 'none finished'}")
        lines += ["", "Pools (rasters in the order added; pixels = rows x cols before masks and nodata; "
                  "'masked' = labelled anomalies excluded; 'VRT' = bad bands dropped):", ""]
        total = 0
        for index, step in enumerate(POOL_ORDER[fold]):
            parts = []
            for name in step:
                entry = entries[name]
                total += entry["pixels"]
                notes = [entry["sensor"]] + (["masked"] if entry["mask"] else []) + \
                        ([f"VRT, {len(entry['bad'])} bad bands dropped"] if entry["bad"] else [])
                parts.append(f"{name} ({entry['pixels']} px; {'; '.join(notes)})")
            lines.append(f"- {SIZE_LABELS[index]}: + {', '.join(parts)}; pool {total} px")
        lines.append("")
    lines += ["Size and composition change together: each step adds rasters of other sensors or sites (the HYDICE "
              "fold's last step is mostly the nine masked AVIRIS development scenes), so each row measures its "
              "nested pool, not the pixel count alone.", "",
              "Left out of every pool: the AVIRIS-NG cubes (10x10 px, smaller than one 32 px patch). "
              "Training time is the wall time of fers_core.training's train_model on this 2-core machine "
              "(two threads, nice 5; other processes may have shared the cores).", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", required=True, help="folder outside the project for models and results")
    parser.add_argument("--seeds", default="0,1", help="training seeds, comma-separated")
    parser.add_argument("--random-seeds", default="0,1,2", help="random-init seeds, comma-separated")
    parser.add_argument("--output", default=None, help="report (default bench/LEARNING_CURVE.md; --quick: /tmp)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, smallest pool, 2 scenes a fold")
    args = parser.parse_args(argv)
    if not SCENES.is_dir() or not BACKGROUNDS.is_dir():
        print(f"The shared data is absent ({SHARED}): nothing to measure.")
        return 0
    cache = Path(args.cache).resolve()
    if ROOT in cache.parents or cache == ROOT:
        sys.exit("--cache must be outside the project: its files derive from the shared data.")
    import torch

    torch.set_num_threads(THREADS)
    check_recipe()
    entries = catalogue()
    check_pools(entries)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    random_seeds = [int(s) for s in args.random_seeds.split(",") if s.strip()]
    epochs, steps = STAGE1["epochs"], range(len(SIZE_LABELS))
    scenes_of = {fold: list(held["scored"]) for fold, held in FOLDS.items()}
    output = Path(args.output) if args.output else ROOT / "bench" / "LEARNING_CURVE.md"
    if args.quick:
        cache, epochs, steps, seeds, random_seeds = cache / "quick", 1, range(1), seeds[:1], random_seeds[:1]
        scenes_of = {fold: scenes[:2] for fold, scenes in scenes_of.items()}
        output = Path(args.output) if args.output else Path(tempfile.gettempdir()) / "LEARNING_CURVE.quick.md"
    jobs = [Job(fold, None, seed, cache) for seed in random_seeds for fold in FOLDS]
    jobs += [Job(fold, step, seed, cache) for seed in seeds for fold in FOLDS for step in steps]
    planned = {(fold, step): (len(random_seeds) if step is None else (len(seeds) if step in steps else 0))
               for fold in FOLDS for step in [None, *range(len(SIZE_LABELS))]}
    command = "nice -n 5 .venv/bin/python bench/learning_curve.py " + " ".join(argv or sys.argv[1:])
    started = time.perf_counter()

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')} +{(time.perf_counter() - started) / 60:.1f} min] {message}", flush=True)

    rx = plain_rx_auc([scene for scenes in scenes_of.values() for scene in scenes])
    for index, job in enumerate(jobs, 1):
        if job.result() is None:
            log(f"job {index}/{len(jobs)} {job.key}: start")
            record = job.run(entries, cache, epochs, scenes_of[job.fold], log)
            mean = np.mean(list(record["auc"].values()))
            train = f", trained in {record['train_seconds'] / 60:.1f} min" if record.get("train_seconds") else ""
            log(f"job {index}/{len(jobs)} {job.key}: mean AUC {mean:.4f}{train}, scored in "
                f"{record['score_seconds']:.0f} s")
        else:
            log(f"job {index}/{len(jobs)} {job.key}: cached")
        output.write_text(report(jobs, entries, scenes_of, planned, command, rx))
    log(f"done; report in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
