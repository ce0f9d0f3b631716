"""Honest model selection: leave-one-sensor-out and leave-one-site-out over the development scenes.

    .venv/bin/python bench/select_protocol.py [--cache /tmp/fers-select] [--output table.md]

1. Score maps. Every *member* (plain RX, resampled RX, random-init networks at 50/100/200 bands, the
   bundled model's branches, the FERS authors' checkpoints as comparison anchors) scores every scene with
   a ground truth in ../shared/data/scenes through the plugin's own detection code. The maps are cached
   as .npy under --cache (outside the project: they are derived from the shared data, never commit them).
2. Candidates: every single member, and the fusions (rank mean and standardised-score mean,
   fers_core.pipeline.ensemble) of every set of 2 to 4 of our own members. The authors' checkpoints are anchors
   only: they cannot be shipped, so no candidate holds one.
3. Protocol. For each fold (one sensor, or one site, held out) the rule picks the candidate with the best
   mean AUC over the *other* folds' scenes, without reading the held-out fold's labels, and the held-out
   fold is scored with it. The protocol's estimate is the mean AUC of the selected candidates over the
   held-out scenes. A second rule ("do no harm") only admits candidates whose worst training scene is
   within 0.01 of plain RX. Finally the rule applied to all folds gives the configuration to ship.

Exits with a clear message, status 0, when ../shared is absent.
"""

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCENES = SHARED / "data" / "scenes"
CHECKPOINTS = SHARED / "reference" / "fers-checkpoints"
AUTHORS = ("had100-50", "had100-100", "had100-200", "abu-aviris-200")
sys.path.insert(0, str(ROOT))

SITES = {  # flight lines (scenes.json notes): a held-out site shares no flight line with the others
    "abu-beach-1": "Gulf coast", "abu-urban-1": "Gulf coast", "abu-urban-2": "Gulf coast",
    "abu-beach-2": "San Diego", "abu-beach-3": "San Diego", "sandiego-189": "San Diego",
    "sandiego-224": "San Diego", "abu-urban-4": "Los Angeles", "abu-urban-5": "Los Angeles",
    "hydice-urban-162": "HYDICE Urban", "hydice-urban-175": "HYDICE Urban",
}
OWN = ("rx", "rx50", "rand50", "rand100", "rand200", "rand50-ss", "bundled", "bundled-ss")
"""Members that may be shipped (our own weights or none); the authors' checkpoints are anchors only."""
HARM_LIMIT = 0.01


def scene_metadata():
    import json

    listed = {item["name"]: item for item in json.loads((SCENES / "scenes.json").read_text())}
    names = sorted(path.name[:-len("_gt.tif")] for path in SCENES.glob("*_gt.tif"))
    return {name: {"sensor": listed[name]["sensor"], "site": SITES.get(name, listed[name]["note"])} for name in names}


def read_all(path):
    from fers_core.io.reader import RasterReader
    from fers_core.io.windows import Window

    with RasterReader(str(path)) as reader:
        return reader.read(Window.whole(reader.height, reader.width))


def member_models():
    """member -> (model, branches) for the network members."""
    from fers_core.enhance.checkpoints import import_authors_checkpoint
    from fers_core.enhance.model_file import load_model, random_init_model

    bundled = load_model(ROOT / "weights" / "fers_default.pt")
    models = {f"rand{bands}": (random_init_model(bands, seed=0, branches=("spectral",)), ("spectral",))
              for bands in (50, 100, 200)}
    models["rand50-ss"] = (random_init_model(50, seed=0), ("spectral", "spatial"))
    models["bundled"] = (bundled, ("spectral",))
    models["bundled-ss"] = (bundled, ("spectral", "spatial"))
    for name in AUTHORS:
        if (CHECKPOINTS / name).is_dir():
            models[f"authors-{name}"] = (import_authors_checkpoint(CHECKPOINTS / name), ("spectral",))
    return models


def score_maps(scenes, cache, progress):
    """{scene: {member: float64 scores of the valid pixels}} and {scene: labels}; cached on disk."""
    from fers_core.detectors.rx import rx_scores
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.options import DetectOptions
    from fers_core.pipeline.preprocess import resample_bands

    models = None
    maps, labels = {}, {}
    for scene in scenes:
        raster = SCENES / f"{scene}.tif"
        data, valid = read_all(raster)
        truth, _ = read_all(SCENES / f"{scene}_gt.tif")
        labels[scene] = truth[0][valid] != 0
        folder = Path(cache) / scene
        folder.mkdir(parents=True, exist_ok=True)
        maps[scene] = {}
        members = list(OWN) + [f"authors-{name}" for name in AUTHORS if (CHECKPOINTS / name).is_dir()]
        for member in members:
            stored = folder / f"{member}.npy"
            if not stored.exists():
                started = time.perf_counter()
                if member == "rx":
                    scores = rx_scores(data[:, valid].T)
                elif member == "rx50":
                    scores = rx_scores(resample_bands(data[:, valid][:, :, None], 50)[:, :, 0].T.astype(np.float64))
                else:
                    models = models or member_models()
                    model, branches = models[member]
                    with tempfile.TemporaryDirectory() as temporary:
                        output = os.path.join(temporary, "scores.tif")
                        run_fers_detection(raster, output, model, DetectOptions(branches=branches, threads=2))
                        scores = read_all(output)[0][0][valid]
                np.save(stored, np.asarray(scores, dtype=np.float64))
                progress(f"{scene} {member}: {time.perf_counter() - started:.1f} s")
            maps[scene][member] = np.load(stored)
    return maps, labels


def fuse(maps, members, how):
    from fers_core.pipeline.ensemble import empirical_cdf

    if len(members) == 1:
        return maps[members[0]]
    if how == "rank":
        return np.mean([empirical_cdf(maps[m]) for m in members], axis=0)
    return np.mean([(maps[m] - maps[m].mean()) / maps[m].std() for m in members], axis=0)


def candidates(anchors):
    result = [(member,) for member in OWN] + [(anchor,) for anchor in anchors]
    pool = [m for m in OWN if m != "rand50-ss"]  # its spatial branch is untrained: a weak, slow member
    for size in (2, 3, 4):
        for combo in itertools.combinations(pool, size):
            if "rx" in combo and "rx50" in combo or "bundled" in combo and "bundled-ss" in combo:
                continue
            result += [combo + ("rank",), combo + ("z",)]
    return result


def name_of(candidate):
    if candidate[-1] in ("rank", "z"):
        return f"{candidate[-1]}({' + '.join(candidate[:-1])})"
    return candidate[0]


def auc_table(maps, labels, candidate_list):
    from fers_core.detectors.metrics import roc_auc

    table = {}
    for candidate in candidate_list:
        members, how = (candidate[:-1], candidate[-1]) if candidate[-1] in ("rank", "z") else (candidate, None)
        table[name_of(candidate)] = {scene: roc_auc(fuse(maps[scene], members, how), labels[scene])
                                     for scene in maps}
    return table


def select(table, scenes, selectable, harm):
    """The selectable candidate with the best mean AUC over ``scenes`` (optionally within HARM_LIMIT of RX)."""
    def admissible(name):
        return not harm or min(table[name][s] - table["rx"][s] for s in scenes) >= -HARM_LIMIT

    pool = [name for name in selectable if admissible(name)] or list(selectable)
    return max(pool, key=lambda name: np.mean([table[name][s] for s in scenes]))


def protocol(table, metadata, key, selectable, harm):
    """[(fold, selected candidate, its held-out AUCs {scene: AUC})] for folds defined by metadata[key]."""
    folds = sorted({meta[key] for meta in metadata.values()})
    rows = []
    for fold in folds:
        held_out = [s for s, meta in metadata.items() if meta[key] == fold]
        training = [s for s in metadata if s not in held_out]
        chosen = select(table, training, selectable, harm)
        rows.append((fold, chosen, {s: table[chosen][s] for s in held_out}))
    return rows


def report(table, metadata, selectable, anchors):
    scenes = list(metadata)
    lines = []
    for key in ("sensor", "site"):
        folds = sorted({meta[key] for meta in metadata.values()})
        lines.append(f"\n## Leave-one-{key}-out ({len(folds)} folds: {', '.join(folds)})\n")
        for harm in (False, True):
            rows = protocol(table, metadata, key, selectable, harm)
            held = [auc for _, _, aucs in rows for auc in aucs.values()]
            worst = min(auc - table["rx"][s] for _, _, aucs in rows for s, auc in aucs.items())
            rule = f"best training mean, worst training scene within {HARM_LIMIT} of RX" if harm else \
                "best training mean"
            lines.append(f"Rule: {rule}. Protocol estimate (selected per fold, held-out scenes): "
                         f"mean AUC **{np.mean(held):.4f}**, worst scene vs plain RX {worst:+.4f}.\n")
            lines.append("| held-out fold | selected on the other folds | held-out mean AUC |")
            lines.append("|---|---|---|")
            for fold, chosen, aucs in rows:
                lines.append(f"| {fold} | {chosen} | {np.mean(list(aucs.values())):.4f} |")
            lines.append("")
        lines.append(f"Fixed configurations, per held-out {key} (mean AUC over the fold's scenes):\n")
        fixed = ["rx", "rx50", "rand50", "rand100", "rand200", "bundled", "bundled-ss"] + list(anchors)
        best = sorted(selectable, key=lambda n: -np.mean([table[n][s] for s in scenes]))[:5]
        shown = fixed + [n for n in best if n not in fixed]
        lines.append("| configuration | " + " | ".join(folds) + " | mean of folds | mean of scenes |")
        lines.append("|---" * (len(folds) + 3) + "|")
        for name in shown:
            per_fold = [np.mean([table[name][s] for s in scenes if metadata[s][key] == f]) for f in folds]
            lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in per_fold) +
                         f" | {np.mean(per_fold):.4f} | {np.mean([table[name][s] for s in scenes]):.4f} |")
    final = select(table, scenes, selectable, harm=True)
    lines.append(f"\nThe rule on all 11 scenes (do-no-harm variant) picks: **{final}**.\n")
    return "\n".join(lines), final


def per_scene(table, names, scenes):
    lines = ["| scene | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for scene in scenes:
        lines.append(f"| {scene} | " + " | ".join(f"{table[n][scene]:.4f}" for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(f"{np.mean([table[n][s] for s in scenes]):.4f}" for n in names) + " |")
    lines.append("| worst vs RX | " + " | ".join(
        f"{min(table[n][s] - table['rx'][s] for s in scenes):+.4f}" for n in names) + " |")
    return "\n".join(lines)


def every_candidate(table, metadata):
    """One row per candidate: mean over the sensor folds, the site folds and the scenes, worst scene vs RX."""
    scenes = list(metadata)

    def fold_mean(name, key):
        folds = sorted({meta[key] for meta in metadata.values()})
        return np.mean([np.mean([table[name][s] for s in scenes if metadata[s][key] == f]) for f in folds])

    rows = sorted(table, key=lambda n: -np.mean([table[n][s] for s in scenes]))
    lines = ["| configuration | mean of sensor folds | mean of site folds | mean of scenes | worst scene vs RX |",
             "|---|---|---|---|---|"]
    for name in rows:
        lines.append(f"| {name} | {fold_mean(name, 'sensor'):.4f} | {fold_mean(name, 'site'):.4f} | "
                     f"{np.mean([table[name][s] for s in scenes]):.4f} | "
                     f"{min(table[name][s] - table['rx'][s] for s in scenes):+.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "fers-select"))
    parser.add_argument("--output", help="also write the report to this file (bench/SELECT_RESULTS.md)")
    parser.add_argument("--show", nargs="*", default=[], help="extra candidates for the per-scene table")
    args = parser.parse_args(argv)
    if not SCENES.is_dir():
        print(f"Skipped: the shared scenes are absent ({SCENES} does not exist beside the project).")
        return 0
    import torch

    torch.set_num_threads(2)
    metadata = scene_metadata()
    maps, labels = score_maps(list(metadata), args.cache, lambda line: print(line, file=sys.stderr))
    anchors = [f"authors-{name}" for name in AUTHORS if (CHECKPOINTS / name).is_dir()]
    candidate_list = candidates(anchors)
    table = auc_table(maps, labels, candidate_list)
    selectable = [name_of(c) for c in candidate_list if not any(m.startswith("authors-") for m in c)]
    text, final = report(table, metadata, selectable, anchors)
    shown = ["rx", "rx50", "rand50", "rand200", "bundled", "bundled-ss"] + anchors + [final] + args.show
    text += "\nPer scene:\n\n" + per_scene(table, list(dict.fromkeys(shown)), list(metadata)) + "\n"
    text += "\nEvery configuration (rank: rank fusion; z: standardised-score fusion):\n\n" + \
        every_candidate(table, metadata) + "\n"
    text = f"{len(candidate_list)} candidates ({len(selectable)} selectable).\n" + text
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
