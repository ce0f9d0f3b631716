"""Robustness to other band sets: the band study's fold networks on development scenes cut to fewer bands.

    nice -n 5 .venv/bin/python bench/band_variants.py --cache /tmp/fers-bands [--output bench/BAND_VARIANTS.md]

The unseen sensors FERS must serve include VNIR-only imagers and sensors of 64 to 100 bands, while every
development scene has 162 to 224 bands over 0.4-2.5 um. This study makes two band-set variants of each of the 11
development scenes through band-list VRTs (same pixels, same labels): "vnir", the first 30 % of the bands (the
visible and near infrared, 49 to 67 bands, as a VNIR imager), and "third", every third band (63 to 75 bands over
the whole range, as a coarser sensor). Each member of bench/band_study.py (its fold networks: a scene is scored by
networks that never saw its sensor; --cache must be that study's) scores every variant, and so do the seed-1 and
seed-2 networks of the shipped recipe where the study trained them (its seed spread; never selectable); the
configurations are the study's. Reported per variant: mean AUC of anchors, the shipped recipe and the best
configurations, and the selection rule applied over the original scenes and both variants together. A
measurement: nothing here picks the shipped default by itself.

Exits with a clear message, status 0, when ../shared is absent.
"""

import argparse
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import band_study as bs  # noqa: E402
import learning_curve as lc  # noqa: E402
import select_protocol as sp  # noqa: E402

VARIANTS = {"vnir": lambda count: list(range(1, int(round(0.3 * count)) + 1)),
            "third": lambda count: list(range(1, count + 1, 3))}
SHIPPED = "rank(t100-bg + t200-bg + bundled-ss)"
ANCHORS = ("rx", "rx50", "rand50", "rand200", "bundled", "bundled-ss", "rank(rand200 + bundled-ss)")


def variant_raster(scene, variant, cache):
    from osgeo import gdal

    path = Path(cache) / "variants" / f"{scene}~{variant}.vrt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        source = gdal.Open(str(lc.SCENES / f"{scene}.tif"))
        bands = VARIANTS[variant](source.RasterCount)
        source = None
        temporary = f"{path}.tmp.vrt"
        if gdal.Translate(temporary, str(lc.SCENES / f"{scene}.tif"), format="VRT", bandList=bands) is None:
            raise SystemExit(f"Could not write the {variant} VRT of {scene}.")
        os.replace(temporary, path)
    return path


def score_variants(members, entries, cache, log):
    """{variant scene key: {member label: scores}} for every variant, cached beside the study's maps."""
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.options import DetectOptions

    for member in members:
        scenes = lc.FOLDS[member.fold]["scored"]
        wanted = [(scene, variant) for scene in scenes for variant in VARIANTS
                  if not (member.maps / f"{scene}~{variant}.npy").exists()]
        if not wanted or (member.trained and not member.model_path.exists()):
            continue
        model, _ = member.model(entries, cache, log)
        options = DetectOptions(branches=member.branches, precision="float32", threads=lc.THREADS)
        for scene, variant in wanted:
            with tempfile.TemporaryDirectory() as folder:
                output = os.path.join(folder, "scores.tif")
                run_fers_detection(variant_raster(scene, variant, cache), output, model, options)
                scores, valid = lc.read_all(output)
            np.save(member.maps / f"{scene}~{variant}.npy", scores[0][valid].astype(np.float64))
        log(f"{member.key}: variants scored")


def band_range(meta, variant):
    counts = [m["bands"] for m in meta.values() if m["variant"] == variant]
    return f"{variant} {min(counts)}-{max(counts)}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", required=True, help="bench/band_study.py's cache")
    parser.add_argument("--output", default=str(ROOT / "bench" / "BAND_VARIANTS.md"))
    args = parser.parse_args(argv)
    if not lc.SCENES.is_dir():
        print(f"The shared data is absent ({lc.SHARED}): nothing to measure.")
        return 0
    import torch

    from fers_core.detectors.metrics import roc_auc
    from fers_core.detectors.rx import rx_scores
    from fers_core.pipeline.preprocess import resample_bands

    torch.set_num_threads(lc.THREADS)
    cache = Path(args.cache).resolve()
    entries = lc.catalogue()
    names = [f"rand{b}" for b in bs.BANDS] + [f"t{b}-{pool}" for pool in bs.POOLS for b in bs.BANDS] + \
        ["bundled", "bundled-ss"]
    members = [bs.Member(fold, name, 0, cache) for name in names for fold in lc.FOLDS]
    members += [member for member in (bs.Member(fold, name, seed, cache) for seed in (1, 2)
                                      for name in ("t100-bg", "t200-bg") for fold in lc.FOLDS)
                if member.model_path.exists()]  # the shipped recipe's seed spread
    score_variants(members, entries, cache, lambda message: print(message, flush=True))
    metadata = sp.scene_metadata()
    maps, labels, meta = {}, {}, {}
    for scene in metadata:
        for variant in ("", *VARIANTS):
            key = f"{scene}~{variant}" if variant else scene
            raster = variant_raster(scene, variant, cache) if variant else lc.SCENES / f"{scene}.tif"
            data, valid = lc.read_all(raster)
            truth, _ = lc.read_all(lc.SCENES / f"{scene}_gt.tif")
            labels[key] = truth[0][valid] != 0
            pixels = data[:, valid]
            maps[key] = {"rx": rx_scores(pixels.T.astype(np.float64)),
                         "rx50": rx_scores(resample_bands(pixels[:, :, None], 50)[:, :, 0].T.astype(np.float64))}
            meta[key] = {**metadata[scene], "variant": variant or "original", "bands": int(data.shape[0])}
    for member in members:
        for scene in lc.FOLDS[member.fold]["scored"]:
            for variant in ("", *VARIANTS):
                key = f"{scene}~{variant}" if variant else scene
                maps[key][member.label()] = np.load(member.maps / f"{key}.npy")
    labels_done = {m.label() for m in members}
    singles = [("rx",), ("rx50",)] + [(label,) for label in sorted(labels_done)]
    systematic = [combo for size in (2, 3, 4) for combo in itertools.combinations(bs.POOL, size)
                  if not {"bundled", "bundled-ss"} <= set(combo)]
    extra = [("rand200", "bundled-ss")] + [(f"t100-bg@{seed}", f"t200-bg@{seed}", "bundled-ss") for seed in (1, 2)
                                            if f"t100-bg@{seed}" in labels_done and f"t200-bg@{seed}" in labels_done]
    unique = {frozenset(c): c for c in reversed([c for c in bs.ENSEMBLES if "@" not in " ".join(c)] + systematic
                                                 + extra)}
    candidates = singles + [combo + ("rank",) for combo in list(unique.values())[::-1]]
    table = {sp.name_of(c): {key: roc_auc(sp.fuse(maps[key], c[:-1], "rank") if c[-1] == "rank"
                                          else maps[key][c[0]], labels[key]) for key in maps} for c in candidates}
    budget = bs.within_budget(table, json.loads((cache / "times.json").read_text())) \
        if (cache / "times.json").exists() else set(table)
    lines = ["# Band-set variants: the band study's fold networks on development scenes cut to fewer bands", "",
             "Written by `bench/band_variants.py` (its docstring gives the protocol). Command:", "",
             "    nice -n 5 .venv/bin/python bench/band_variants.py " + " ".join(argv or sys.argv[1:]), "",
             "Band counts: " + "; ".join(band_range(meta, variant or "original") for variant in ("", *VARIANTS))
             + ".", ""]
    groups = {"original": [k for k in maps if "~" not in k], **{v: [k for k in maps if k.endswith(f"~{v}")]
                                                                 for v in VARIANTS}}
    for key in ("sensor",):
        def folds_of(scenes):
            return {s: meta[s] for s in scenes}
        everything = [k for k in maps]
        selectable = [n for n in table if n in budget and "@" not in n]  # other seeds: the spread only
        for label, scenes in (("original scenes only (the shipped rule)", groups["original"]),
                              ("original + both variants", everything)):
            rows = sp.protocol(table, folds_of(scenes), key, selectable, True)
            held = {s: auc for _, _, aucs in rows for s, auc in aucs.items()}
            chosen = sp.select(table, scenes, selectable, True)
            lines.append(f"- Rule over {label}: picks **{chosen}** on all; leave-one-{key}-out estimate over the "
                         f"same scenes {np.mean(list(held.values())):.4f} (picks per fold: "
                         + "; ".join(f"{fold}: {pick}" for fold, pick, _ in rows) + ")")
    lines += ["", "Mean AUC per band set (fold-clean networks; mean over the 11 scenes of each set):", "",
              "| configuration | original | vnir | third | mean of the three | worst scene vs RX of its set |",
              "|---|---|---|---|---|---|"]
    means = {n: [np.mean([table[n][k] for k in groups[g]]) for g in groups] for n in table}
    ranked = sorted(table, key=lambda n: -np.mean(means[n]))
    listed = set(ranked[:20]) | set(ANCHORS) | {SHIPPED} | {n for n in table if not n.startswith("rank(") or "@" in n}
    shown = [n for n in ranked if n in listed]
    for name in shown:
        worst = min(table[name][k] - table["rx"][k] for k in maps)
        bold = "**" if name == SHIPPED else ""
        lines.append(f"| {bold}{name}{bold} | " + " | ".join(f"{v:.4f}" for v in means[name])
                     + f" | {np.mean(means[name]):.4f} | {worst:+.4f} |")
    lines += ["", "Per scene and band set (plain RX, the previous default, the shipped recipe):", "",
              "| scene | set | bands | plain RX | rank(rand200 + bundled-ss) | shipped recipe |",
              "|---|---|---|---|---|---|"]
    for key in sorted(maps):
        scene, _, variant = key.partition("~")
        lines.append(f"| {scene} | {variant or 'original'} | {meta[key]['bands']} | {table['rx'][key]:.4f} | "
                     f"{table['rank(rand200 + bundled-ss)'][key]:.4f} | {table[SHIPPED][key]:.4f} |")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"report in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
