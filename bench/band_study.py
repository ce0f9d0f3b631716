"""Trained spectral networks at 50, 100 and 200 bands, their ensembles, and a default chosen without held-out labels.

    nice -n 5 .venv/bin/python bench/band_study.py --cache /tmp/fers-bands [--seeds 0] [--output bench/BAND_STUDY.md]
        [--report-only]

Folds: leave-one-sensor-out over the development scenes, exactly as bench/learning_curve.py (its FOLDS and
POOL_ORDER, checked by its check_pools): a fold's networks are trained only on rasters of other sensor families,
so every held-out scene is scored by networks that never saw its sensor (nor, therefore, its site).

Pools, to separate composition from size:
- "all": every raster of the fold's learning-curve pool (background cubes, background scenes, and the other
  fold's development scenes with their labelled anomalies masked);
- "bg": the same without any development scene (background-only rasters);
- "bgw": "bg" with band wavelengths used where the raster stores them (EnMAP, AVIRIS-C Salton Sea): the
  water-vapour windows, the ends of the range and the repeated bands of overlapping detectors dropped
  (scripts/training_pool.py wavelength_kept), so those spectra look like development scenes' without water bands.

Members (FERS detection with global RX, float32): random init at 50/100/200 bands (and at 50 with both branches,
rand50-ss) and stage 1 of the bundled recipe (frozen-random teacher, 30 epochs of 32 px patches, batch 16, lr 5e-3)
at 50/100/200 model bands on each pool, spectral only, one network per seed; t50-bg-ss, the bundled recipe's
stage 2 (spatial student, 40 epochs) on top of t50-bg, both branches; the bundled model (fold-clean only for the
AVIRIS fold) with and without its spatial branch. The 50-band "all" networks are the learning curve's (same recipe
and pool); pass its cache with --reuse to skip retraining them.

Candidates: every member, and the rank fusion (fers_core.pipeline.ensemble.empirical_cdf mean, as fers:detect's
ENSEMBLE_FUSION rank) of declared member sets. Per-scene AUCs are fold-clean, so the table's fold means are honest
estimates of each fixed recipe. The selection protocol is bench/select_protocol.py's: for each held-out sensor
(or site) pick the candidate with the best mean over the other folds' scenes and score the held-out fold with it.
The recipe to ship is the rule applied to all folds. With several --seeds the report adds a seed-averaged table (each
configuration's AUC averaged over its versions with every trained or random member at seed k), and the recipe to
ship is that table's pick: one seed's differences between the best configurations are as large as the seed spread.

Models, score maps and AUCs are cached under --cache (outside the project: derived from the shared data).
Exits with a clear message, status 0, when ../shared is absent.
"""

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import learning_curve as lc  # noqa: E402  (the folds, pools and training inputs of the learning curve)
import select_protocol as sp  # noqa: E402  (the selection rule)

BANDS = (50, 100, 200)
POOLS = ("all", "bg")
MEMBER_NAMES = tuple([f"rand{b}" for b in BANDS] + [f"t{b}-{pool}" for pool in POOLS for b in BANDS]
                     + ["rand50-ss", "t50-bg-ss", "bundled", "bundled-ss", "t100-bgw", "t200-bgw"])
"""Every member of a fold: random init (rand50-ss: both branches, the strongest single anchor of the first round),
trained on each pool, t50-bg with the bundled recipe's stage 2 (spatial student) on top, the bundled model spectral
only and with both branches; t100-bgw and t200-bgw, the shipped recipe's trained members on the "bgw" pool."""
FIXED = ("rx", "rx50", "bundled", "bundled-ss")
"""Members without a training seed (the same at every seed of a seed-averaged configuration)."""
POOL = ("rx50", "rand200", "t50-all", "t100-all", "t200-all", "t50-bg", "t100-bg", "t200-bg", "t50-bg-ss", "bundled",
        "bundled-ss", "t100-bgw", "t200-bgw")
"""Members of the systematic candidates: every set of 2 to 4 of them (never two variants of one 50-band network:
bundled and bundled-ss, t50-bg and t50-bg-ss); bundled = weights/fers_default.pt (trained on three background
scenes, one of them HYDICE: not fold-clean for the HYDICE fold), bundled-ss = the same with its spatial branch (the
detector's default before); t50-bg-ss = the fold-clean counterpart of bundled-ss on the larger background pool.
t100-bgw and t200-bgw joined POOL (and ENSEMBLES) before any of them was trained.
--pool-extra adds members after the fact (an exploration, written to another report: not the selection)."""
VARIANTS = ({"bundled", "bundled-ss"}, {"t50-bg", "t50-bg-ss"}, {"t100-bg", "t100-bgw"}, {"t200-bg", "t200-bgw"})
ENSEMBLES = [  # declared before any AUC of a trained member was read; seed-0 members unless named
    ("t50-all", "t100-all"), ("t50-all", "t200-all"), ("t100-all", "t200-all"),
    ("t50-all", "t100-all", "t200-all"),
    ("t50-bg", "t100-bg", "t200-bg"),
    ("t50-all", "t100-all", "t200-all", "rand200"),
    ("t50-all", "rand200"), ("t50-bg", "rand200"),
    ("t50-all", "t200-all", "rand50"),
    ("t50-all", "t50-bg", "t200-all", "t200-bg"),
    ("t50-all", "t100-all", "t200-all", "t50-bg", "t100-bg", "t200-bg"),
    ("rand50", "rand100", "rand200"),
    ("rx50", "t50-all", "t100-all", "t200-all"),
    ("t100-bg@1", "t200-bg@1", "bundled-ss"),  # the chosen recipe with seed-1 and seed-2 networks: its seed spread
    ("t100-bg@2", "t200-bg@2", "bundled-ss"),
    ("t100-bgw", "t200-bgw", "bundled-ss"),  # the chosen recipe with members trained on the "bgw" pool
]


PREVIOUS_DEFAULT = ("rand200", "bundled-ss")
"""The default before this study (a systematic candidate), always listed for comparison."""


TIME_BUDGET = 2.0
"""Issue 17: the default stays within twice the detection time of the default before it."""


def member_seconds(name, measured):
    """Detection seconds of one member on bench/ensemble_time.py's raster, from its measured configurations."""
    if name in ("rx", "rx50"):
        return measured["rx"]
    if name in ("bundled", "bundled-ss"):
        return measured[name]
    if name.split("@")[0].endswith("-ss"):
        return measured["bundled-ss"]  # the same 50-band architecture with both branches
    bands = int(name.split("@")[0][1 if name.startswith("t") else 4:].split("-")[0])
    return measured["bundled"] if bands == 50 else measured["t100" if bands == 100 else "t200"]


def within_budget(table, measured):
    """The configurations whose summed member times stay within TIME_BUDGET x the previous default's."""
    from ensemble_time import PREVIOUS

    limit = TIME_BUDGET * measured[PREVIOUS]
    members = {name: name[5:-1].split(" + ") if name.startswith("rank(") else [name] for name in table}
    return {name for name, parts in members.items() if sum(member_seconds(p, measured) for p in parts) <= limit}


def pool_names(fold, pool, entries):
    names = [name for step in lc.POOL_ORDER[fold] for name in step]
    return names if pool == "all" else [name for name in names if entries[name]["mask"] is None]  # bg, bgw


class Member:
    """One network of one fold: random init ("rand200"), trained ("t100-bg" at seed 0), or a trained 50-band
    network with the spatial stage on top ("t50-bg-ss": stage 2 of the bundled recipe on t50-bg's pool)."""

    def __init__(self, fold, name, seed, cache):
        self.fold, self.name, self.seed = fold, name, seed
        self.trained = name.startswith("t")
        self.bundled = name.startswith("bundled")
        self.spatial = name.endswith("-ss")
        self.branches = ("spectral", "spatial") if self.spatial else ("spectral",)
        self.bands = None if self.bundled else int(name[1 if self.trained else 4:].split("-")[0])
        self.pool = name.split("-")[1] if self.trained else None
        self.key = f"{lc.slug(fold)}-{name}-seed{seed}"
        self.model_path = Path(cache) / "models" / f"{self.key}.pt"
        self.maps = Path(cache) / "maps" / self.key

    def label(self):
        return self.name if self.seed == 0 else f"{self.name}@{self.seed}"

    def done(self, scenes):
        return all((self.maps / f"{scene}.npy").exists() for scene in scenes)

    def model(self, entries, cache, log):
        from fers_core.enhance.model_file import load_model, random_init_model

        if self.bundled:
            return load_model(ROOT / "weights" / "fers_default.pt"), 0.0
        if not self.trained:
            return random_init_model(self.bands, seed=self.seed, branches=self.branches), 0.0
        seconds = 0.0
        if not self.model_path.exists():
            seconds = self.train(entries, cache, log)
        return load_model(self.model_path), seconds

    def train(self, entries, cache, log):
        from fers_core.feedback import Feedback
        from fers_core.training.data import PatchSampler, TrainingRaster, load_backgrounds
        from fers_core.training.run import STAGES_SPATIAL, STAGES_SPECTRAL, TrainOptions, train_model

        names = pool_names(self.fold, self.pool, entries)
        pairs = [lc.training_input(name, entries[name], cache, by_wavelength=self.pool == "bgw") for name in names]
        masks = [mask for _, mask in pairs]
        usable = PatchSampler(load_backgrounds([TrainingRaster(p, m) for p, m in pairs], self.bands),
                              lc.STAGE1["patch_size"]).usable_pixels
        self.model_path.parent.mkdir(parents=True, exist_ok=True)
        stage, extra, seconds = lc.STAGE1, {"stages": STAGES_SPECTRAL, "teacher": lc.STAGE1["teacher"]}, 0.0
        if self.spatial:  # stage 2 on top of the fold's stage-1 network, which is trained first if need be
            base = Member(self.fold, self.name[:-len("-ss")], self.seed, cache)
            if not base.model_path.exists():
                seconds = base.train(entries, cache, log)
            stage, extra = {**lc.STAGE1, **lc.STAGE2}, {"stages": STAGES_SPATIAL, "init_model": str(base.model_path)}
        options = TrainOptions(
            inputs=[path for path, _ in pairs], masks=masks if any(masks) else None,
            output_model=str(self.model_path), model_bands=self.bands, epochs=stage["epochs"],
            patch_size=stage["patch_size"], batch_size=stage["batch_size"], learning_rate=stage["learning_rate"],
            seed=self.seed, device="cpu", provenance={"band_study": self.key, "pool": names, "usable_pixels": usable},
            **extra)
        log(f"{self.key}: training on {len(names)} raster(s), {usable} usable px")
        return seconds + train_model(options, Feedback()).seconds

    def score(self, entries, cache, scenes, log):
        """Write the score map of every held-out scene (valid pixels, float64); returns training seconds."""
        from fers_core.pipeline.detect import run_fers_detection
        from fers_core.pipeline.options import DetectOptions

        model, seconds = self.model(entries, cache, log)
        options = DetectOptions(branches=self.branches, precision="float32", threads=lc.THREADS)
        self.maps.mkdir(parents=True, exist_ok=True)
        for scene in scenes:
            with tempfile.TemporaryDirectory() as temporary:
                output = os.path.join(temporary, "scores.tif")
                run_fers_detection(lc.SCENES / f"{scene}.tif", output, model, options)
                scores, valid = lc.read_all(output)
            np.save(self.maps / f"{scene}.npy", scores[0][valid].astype(np.float64))
        return seconds


def reuse_learning_curve(members, reuse):
    """Copy the learning curve's 50-band "all" networks (same recipe, pool and seed) instead of retraining."""
    for member in members:
        source = Path(reuse) / "models" / f"{lc.slug(member.fold)}-all-seed{member.seed}.pt"
        if member.name == "t50-all" and not member.model_path.exists() and source.exists():
            member.model_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, member.model_path)


def plain_maps(sources):
    """{key: {"rx": scores, "rx50": scores}}, {key: labels} and {key: band count} for {key: (raster, truth)}."""
    from fers_core.detectors.rx import rx_scores
    from fers_core.pipeline.preprocess import resample_bands

    maps, labels, bands = {}, {}, {}
    for key, (raster, truth_path) in sources.items():
        data, valid = lc.read_all(raster)
        truth, _ = lc.read_all(truth_path)
        labels[key], bands[key] = truth[0][valid] != 0, int(data.shape[0])
        pixels = data[:, valid]
        maps[key] = {"rx": rx_scores(pixels.T.astype(np.float64)),
                     "rx50": rx_scores(resample_bands(pixels[:, :, None], 50)[:, :, 0].T.astype(np.float64))}
    return maps, labels, bands


def scene_sources(scenes):
    """{scene: (raster, ground truth)} of development scenes."""
    return {scene: (lc.SCENES / f"{scene}.tif", lc.SCENES / f"{scene}_gt.tif") for scene in scenes}


def candidate_list(labels, extra=(), pool=POOL):
    """Every single member of ``labels`` (with plain RX and RX at 50 bands), then the rank ensembles: ENSEMBLES,
    every set of 2 to 4 of ``pool`` (never two VARIANTS of one network) and ``extra``, each once, whose members
    are all scored."""
    scored = set(labels) | {"rx", "rx50"}
    systematic = [combo for size in (2, 3, 4) for combo in itertools.combinations(pool, size)
                  if not any(variants <= set(combo) for variants in VARIANTS)]
    unique = {frozenset(combo): combo for combo in reversed(ENSEMBLES + systematic + list(extra))}
    return [("rx",), ("rx50",)] + [(label,) for label in sorted(labels)] + \
        [combo + ("rank",) for combo in list(unique.values())[::-1] if set(combo) <= scored]


def seed_sets(members):
    """Seed ensembles: every trained or random member name with more than one seed scored."""
    by_name = {}
    for member in members:
        by_name.setdefault(member.name, set()).add(member.label())
    return [tuple(sorted(labels)) for name, labels in by_name.items() if len(labels) > 1]


def table_of(maps, labels, candidates):
    from fers_core.detectors.metrics import roc_auc

    return {sp.name_of(c): {scene: roc_auc(sp.fuse(maps[scene], c[:-1], "rank") if c[-1] == "rank"
                                           else maps[scene][c[0]], labels[scene]) for scene in maps}
            for c in candidates}


def seed_label(member, seed):
    return member if member in FIXED or seed == 0 else f"{member}@{seed}"


def seed_averaged(maps, labels, candidates, seeds, table):
    """{name: {scene: mean AUC over seeds}}: each seed-0 candidate with every trained or random member taken at
    seed k (FIXED members unchanged), for the candidates whose members are scored at every seed; seed 0's AUCs are
    ``table``'s (table_of of ``candidates``)."""
    scored = set.intersection(*(set(scene_maps) for scene_maps in maps.values()))  # scored on every scene
    averaged = {}
    for candidate in candidates:
        members, how = (candidate[:-1], candidate[-1:]) if candidate[-1] == "rank" else (candidate, ())
        if any("@" in member for member in members):
            continue
        variants = [tuple(seed_label(member, seed) for member in members) + how for seed in seeds]
        if all(set(variant[:len(members)]) <= scored for variant in variants):
            name = sp.name_of(candidate)
            tables = [table[name] if seed == 0 else table_of(maps, labels, [variant])[sp.name_of(variant)]
                      for seed, variant in zip(seeds, variants)]
            averaged[name] = {scene: float(np.mean([t[scene] for t in tables])) for scene in maps}
    return averaged


def protocol_lines(table, metadata, selectable):
    lines = []
    for key in ("sensor", "site"):
        for harm in (False, True):
            rows = sp.protocol(table, metadata, key, selectable, harm)
            held = [auc for _, _, aucs in rows for auc in aucs.values()]
            worst = min(auc - table["rx"][s] for _, _, aucs in rows for s, auc in aucs.items())
            rule = "do no harm (worst training scene within 0.01 of RX)" if harm else "best training mean"
            lines.append(f"- leave-one-{key}-out, rule {rule}: protocol estimate **{np.mean(held):.4f}** "
                         f"(worst scene vs RX {worst:+.4f}); picks: "
                         + "; ".join(f"{fold}: {chosen}" for fold, chosen, _ in rows))
    return lines


def table_lines(table, metadata, declared, title):
    """The fold table and the per-scene table of the 30 best by mean of folds, every single member and ``declared``
    (the declared ensembles and the pick)."""
    scenes = list(metadata)
    folds = {fold: [s for s in scenes if metadata[s]["sensor"] == fold] for fold in ("AVIRIS", "HYDICE")}
    ranked = sorted(table, key=lambda n: -np.mean([np.mean([table[n][s] for s in f]) for f in folds.values()]))
    listed = set(ranked[:30]) | {name for name in table if not name.startswith("rank(")} | set(declared)
    ranked = [name for name in ranked if name in listed]
    lines = [f"{title}: {len(table)} configurations; listed: the 30 best by mean of folds, every single member and "
             "every declared ensemble (ENSEMBLES, seed ensembles, the previous default) and the pick.", "",
             "| configuration | AVIRIS (9) | HYDICE (2) | mean of folds | mean of scenes | worst scene vs RX |",
             "|---|---|---|---|---|---|"]
    for name in ranked:
        per_fold = [np.mean([table[name][s] for s in f]) for f in folds.values()]
        worst = min(table[name][s] - table["rx"][s] for s in scenes)
        lines.append(f"| {name} | {per_fold[0]:.4f} | {per_fold[1]:.4f} | {np.mean(per_fold):.4f} | "
                     f"{np.mean([table[name][s] for s in scenes]):.4f} | {worst:+.4f} |")
    short = [s.replace("abu-", "").replace("sandiego-", "sd-").replace("hydice-urban-", "hu-") for s in scenes]
    lines += ["", "Per scene:", "", "| configuration | " + " | ".join(short) + " |", "|---|" + "---|" * len(scenes)]
    lines += [f"| {name} | " + " | ".join(f"{table[name][s]:.4f}" for s in scenes) + " |" for name in ranked]
    return lines


def report(table, metadata, training_minutes, command, declared, budget=None, averaged=None, seeds=(), added=()):
    scenes = list(metadata)
    selectable = [name for name in table if "@" not in name  # recipes; other seeds only show the seed spread
                  and (budget is None or name in budget)]
    lines = ["# Band-count study: trained spectral networks at 50/100/200 bands and their ensembles", "",
             "Written by `bench/band_study.py` (its docstring gives the protocol). Command:", "", f"    {command}", "",
             "Every AUC of a network member comes from networks trained without the scene's sensor family "
             "(leave-one-sensor-out), so each fold mean is an honest estimate of that fixed recipe. 'all' pools hold "
             "the other fold's masked development scenes, 'bg' pools only background rasters, 'bgw' pools the same "
             "with the wavelength-storing cubes cut to water-free, increasing wavelengths. rank(...) = mean of "
             "per-member empirical CDFs, as fers:detect's rank ensemble. `name@k` = seed k (no suffix: seed 0).", "",
             f"Training compute of the networks below: {training_minutes:.1f} min (2 threads).", "",
             "Networks at other seeds than 0 (their seed spread; never selectable): "
             + (", ".join(sorted(n for n in table if "@" in n and not n.startswith("rank("))) or "none") + ".", ""]
    lines += [f"Only the {len(selectable)} configurations within {TIME_BUDGET}x the previous default's detection time "
              "(bench/ensemble_time.py, summed member times) are selectable." if budget is not None else
              "No time budget applied (run with --seconds).", ""]
    if added:
        lines += [f"**Exploration, not the selection**: POOL extended after the fact by {', '.join(added)} (chosen "
                  "after its single-member AUC was seen), so these estimates are optimistic.", ""]
    lines += ["## Seed 0", ""]
    lines += protocol_lines(table, metadata, selectable)
    chosen = sp.select(table, scenes, selectable, True)
    lines += ["", f"The rule on all scenes (do-no-harm variant) picks: **{chosen}**.", ""]
    lines += table_lines(table, metadata, declared + [chosen], "Seed 0")
    if averaged:
        pickable = [name for name in averaged if name in selectable]
        lines += ["", f"## Seed-averaged (seeds {', '.join(map(str, seeds))})", "",
                  "Each configuration's AUC is the mean over the seeds of the same configuration with every trained "
                  "or random member at that seed (RX and the bundled model are the same at every seed): the recipe's "
                  f"expected AUC, with the seed noise averaged out. {len(pickable)} configurations are scored at "
                  "every seed and within the time budget; the shipped default is this section's pick.", ""]
        lines += protocol_lines(averaged, metadata, pickable)
        pick = sp.select(averaged, scenes, pickable, True)
        lines += ["", f"The rule on all scenes (do-no-harm variant) picks: **{pick}**.", ""]
        lines += table_lines(averaged, metadata, [n for n in declared if n in averaged] + [pick], "Seed-averaged")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", required=True, help="folder outside the project for models and score maps")
    parser.add_argument("--reuse", default=None, help="bench/learning_curve.py cache whose 50-band networks to copy")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    parser.add_argument("--output", default=str(ROOT / "bench" / "BAND_STUDY.md"))
    parser.add_argument("--report-only", action="store_true", help="report what is cached; train nothing")
    parser.add_argument("--no-train", action="store_true", help="score the networks already trained; train none")
    parser.add_argument("--seconds", default=None,
                        help="bench/ensemble_time.py --json output: keep the choice within TIME_BUDGET x the previous "
                             "default's detection time")
    parser.add_argument("--pool-extra", default="",
                        help="members to add to POOL after the fact (comma-separated; an exploration, not the "
                             "selection: write it to another --output)")
    parser.add_argument("--only", default=None, help="run only these member names (comma-separated), e.g. t100-all")
    args = parser.parse_args(argv)
    if not lc.SCENES.is_dir() or not lc.BACKGROUNDS.is_dir():
        print(f"The shared data is absent ({lc.SHARED}): nothing to measure.")
        return 0
    cache = Path(args.cache).resolve()
    if ROOT in cache.parents or cache == ROOT:
        sys.exit("--cache must be outside the project: its files derive from the shared data.")
    import torch

    torch.set_num_threads(lc.THREADS)
    lc.check_recipe()
    entries = lc.catalogue()
    lc.check_pools(entries)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    started = time.perf_counter()

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')} +{(time.perf_counter() - started) / 60:.1f} min] {message}", flush=True)

    members = [Member(fold, name, seed, cache) for seed in seeds for name in MEMBER_NAMES for fold in lc.FOLDS
               if seed == 0 or name not in FIXED]
    if args.reuse:
        reuse_learning_curve(members, args.reuse)
    timings = cache / "train_seconds.json"
    seconds = json.loads(timings.read_text()) if timings.exists() else {}
    if not args.report_only:
        for index, member in enumerate(members, 1):
            scenes = lc.FOLDS[member.fold]["scored"]
            if member.done(scenes) or args.no_train and member.trained and not member.model_path.exists():
                continue
            if args.only and member.name not in args.only.split(","):
                continue
            log(f"{index}/{len(members)} {member.key}: start")
            spent = member.score(entries, cache, scenes, log)
            if spent:
                seconds[member.key] = spent
                timings.write_text(json.dumps(seconds, indent=1))
            log(f"{index}/{len(members)} {member.key}: done" + (f", trained in {spent / 60:.1f} min" if spent else ""))
    metadata = {s: m for s, m in sp.scene_metadata().items()}
    maps, labels, _ = plain_maps(scene_sources(metadata))
    finished = {}
    for member in members:
        scenes = lc.FOLDS[member.fold]["scored"]
        if member.done(scenes):
            finished.setdefault(member.label(), set()).add(member.fold)
            for scene in scenes:
                maps[scene][member.label()] = np.load(member.maps / f"{scene}.npy")
    complete = {label for label, folds in finished.items() if folds == set(lc.FOLDS)}
    seeds_fused = seed_sets([m for m in members if m.label() in complete])
    extra = [name.strip() for name in args.pool_extra.split(",") if name.strip()]
    unknown = [name for name in extra if name not in MEMBER_NAMES or name in POOL]
    if unknown:
        sys.exit(f"--pool-extra: {', '.join(unknown)} not a member name outside POOL ({', '.join(MEMBER_NAMES)}).")
    pool = POOL + tuple(dict.fromkeys(extra))
    candidates = candidate_list(complete, seeds_fused, pool)
    table = table_of(maps, labels, candidates)
    averaged = seed_averaged(maps, labels, candidates, seeds, table) if len(seeds) > 1 else None
    budget = within_budget(table, json.loads(Path(args.seconds).read_text())) if args.seconds else None
    command = "nice -n 5 .venv/bin/python bench/band_study.py " + " ".join(argv or sys.argv[1:])
    declared = [sp.name_of(c + ("rank",)) for c in ENSEMBLES + seeds_fused + [PREVIOUS_DEFAULT]]
    Path(args.output).write_text(report(table, metadata, sum(seconds.values()) / 60, command, declared, budget,
                                        averaged, seeds, pool[len(POOL):]))
    log(f"report in {args.output} ({len(table)} configurations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
