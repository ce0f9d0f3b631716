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

Also scored: the shipped spectral networks themselves (s100, s200 = weights/fers_spectral100.pt and
fers_spectral200.pt, trained on every background raster: scene-clean, not sensor-clean), and each recipe "band-aware",
as fers:detect's default runs it: on each scene without the network members that have more than twice the scene's
bands (fers_core.pipeline.ensemble.members_for_raster); declared before any band-aware AUC was read. On the original
scenes (162-224 bands) band-aware changes nothing.

Exits with a clear message, status 0, when ../shared is absent.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

import band_study as bs  # noqa: E402
import learning_curve as lc  # noqa: E402
import select_protocol as sp  # noqa: E402
from training_pool import band_list_vrt  # noqa: E402

VARIANTS = {"vnir": lambda count: list(range(1, int(round(0.3 * count)) + 1)),
            "third": lambda count: list(range(1, count + 1, 3))}
SHIPPED = "rank(t100-bg + t200-bg + bundled-ss)"
SHIPPED_NETWORKS = ("s100", "s200")
"""The shipped spectral members, scored as themselves (weights/fers_spectral{100,200}.pt)."""
MODEL_BANDS = {"s100": 100, "s200": 200, "bundled": 50, "bundled-ss": 50}
BAND_AWARE = {  # title: members (seed-k labels where a seed is given)
    "band-aware recipe": ("t100-bg", "t200-bg", "bundled-ss"),
    "band-aware recipe, seed 1": ("t100-bg@1", "t200-bg@1", "bundled-ss"),
    "band-aware recipe, seed 2": ("t100-bg@2", "t200-bg@2", "bundled-ss"),
    "shipped networks": ("s100", "s200", "bundled-ss"),
    "band-aware shipped networks": ("s100", "s200", "bundled-ss"),
}
"""The recipe with and without fers:detect's band-count rule; "shipped networks" alone is not band-aware."""
ANCHORS = ("rx", "rx50", "rand50", "rand200", "bundled", "bundled-ss", "rank(rand200 + bundled-ss)")


def variant_raster(scene, variant, cache):
    from osgeo import gdal

    source = lc.SCENES / f"{scene}.tif"
    path = Path(cache) / "variants" / f"{scene}~{variant}.vrt"
    if path.exists():
        return path
    return band_list_vrt(source, VARIANTS[variant](gdal.Open(str(source)).RasterCount), path)


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


def score_shipped(sources, cache, log):
    """Cache the shipped spectral members' maps of every scene and variant under cache/maps/shipped-NAME/."""
    from fers_core.enhance.model_file import load_model
    from fers_core.pipeline.detect import run_fers_detection
    from fers_core.pipeline.options import DetectOptions

    for name in SHIPPED_NETWORKS:
        folder = Path(cache) / "maps" / f"shipped-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        wanted = [key for key in sources if not (folder / f"{key}.npy").exists()]
        if not wanted:
            continue
        model = load_model(ROOT / "weights" / f"fers_spectral{name[1:]}.pt")
        for key in wanted:
            with tempfile.TemporaryDirectory() as temporary:
                output = os.path.join(temporary, "scores.tif")
                run_fers_detection(sources[key][0], output, model,
                                   DetectOptions(branches=("spectral",), precision="float32", threads=lc.THREADS))
                scores, valid = lc.read_all(output)
            np.save(folder / f"{key}.npy", scores[0][valid].astype(np.float64))
        log(f"shipped {name}: scored")


def band_aware(members, raster_bands):
    """``members`` as fers:detect's default runs them on a ``raster_bands``-band raster (members_for_raster)."""
    from fers_core.feedback import Feedback
    from fers_core.pipeline.ensemble import Member, members_for_raster

    class Bands:  # the rule reads a model's band count only
        def __init__(self, bands):
            self.bands = bands

    bands = {m: MODEL_BANDS.get(m) or int(m.split("@")[0][1:].split("-")[0]) for m in members}
    wrapped = [Member(Bands(bands[m]), m, bundled=True) for m in members]
    return tuple(m.label for m in members_for_raster(raster_bands, wrapped, Feedback()))


def add_band_aware(table, maps, labels, meta):
    from fers_core.detectors.metrics import roc_auc

    for title, members in BAND_AWARE.items():
        if not all(m in maps[key] for m in members for key in maps):
            continue
        aware = title.startswith("band-aware")
        table[title] = {key: roc_auc(sp.fuse(maps[key], band_aware(members, meta[key]["bands"]) if aware else members,
                                             "rank"), labels[key]) for key in maps}


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

    torch.set_num_threads(lc.THREADS)
    cache = Path(args.cache).resolve()
    entries = lc.catalogue()
    members = [bs.Member(fold, name, 0, cache) for name in bs.MEMBER_NAMES for fold in lc.FOLDS]
    members += [member for member in (bs.Member(fold, name, seed, cache) for seed in (1, 2)
                                      for name in ("t100-bg", "t200-bg") for fold in lc.FOLDS)
                if member.model_path.exists()]  # the shipped recipe's seed spread
    score_variants(members, entries, cache, lambda message: print(message, flush=True))
    metadata = sp.scene_metadata()
    sources = bs.scene_sources(metadata)
    sources.update({f"{scene}~{variant}": (variant_raster(scene, variant, cache), truth)
                    for scene, (_, truth) in list(sources.items()) for variant in VARIANTS})
    maps, labels, band_counts = bs.plain_maps(sources)
    meta = {key: {**metadata[key.split("~")[0]], "variant": key.partition("~")[2] or "original",
                  "bands": band_counts[key]} for key in maps}
    for member in members:
        for scene in lc.FOLDS[member.fold]["scored"]:
            for key in (scene, *(f"{scene}~{variant}" for variant in VARIANTS)):
                maps[key][member.label()] = np.load(member.maps / f"{key}.npy")
    score_shipped(sources, cache, lambda message: print(message, flush=True))
    for key in maps:
        for name in SHIPPED_NETWORKS:
            maps[key][name] = np.load(cache / "maps" / f"shipped-{name}" / f"{key}.npy")
    table = bs.table_of(maps, labels, bs.candidate_list({m.label() for m in members}))
    budget = bs.within_budget(table, json.loads((cache / "times.json").read_text())) \
        if (cache / "times.json").exists() else set(table)
    table.update(bs.table_of(maps, labels, [(name,) for name in SHIPPED_NETWORKS]))  # shown, never selectable
    add_band_aware(table, maps, labels, meta)
    lines = ["# Band-set variants: the band study's fold networks on development scenes cut to fewer bands", "",
             "Written by `bench/band_variants.py` (its docstring gives the protocol). Command:", "",
             "    nice -n 5 .venv/bin/python bench/band_variants.py " + " ".join(argv or sys.argv[1:]), "",
             "Band counts: " + "; ".join(band_range(meta, variant or "original") for variant in ("", *VARIANTS))
             + ".", ""]
    groups = {"original": [k for k in maps if "~" not in k], **{v: [k for k in maps if k.endswith(f"~{v}")]
                                                                 for v in VARIANTS}}
    selectable = [n for n in table if n in budget and "@" not in n  # other seeds: the spread only
                  and n not in BAND_AWARE and n not in SHIPPED_NETWORKS]  # shown, not selected
    for label, scenes in (("original scenes only (the shipped rule)", groups["original"]),
                          ("original + both variants", list(maps))):
        rows = sp.protocol(table, {s: meta[s] for s in scenes}, "sensor", selectable, True)
        held = {s: auc for _, _, aucs in rows for s, auc in aucs.items()}
        chosen = sp.select(table, scenes, selectable, True)
        lines.append(f"- Rule over {label}: picks **{chosen}** on all; leave-one-sensor-out estimate over the "
                     f"same scenes {np.mean(list(held.values())):.4f} (picks per fold: "
                     + "; ".join(f"{fold}: {pick}" for fold, pick, _ in rows) + ")")
    lines += ["", "Mean AUC per band set (fold-clean networks; mean over the 11 scenes of each set):", "",
              "| configuration | original | vnir | third | mean of the three | worst scene vs RX of its set |",
              "|---|---|---|---|---|---|"]
    means = {n: [np.mean([table[n][k] for k in groups[g]]) for g in groups] for n in table}
    ranked = sorted(table, key=lambda n: -np.mean(means[n]))
    listed = set(ranked[:20]) | set(ANCHORS) | {SHIPPED} | {n for n in table if not n.startswith("rank(") or "@" in n}
    seeds = [name for name in BAND_AWARE if name.startswith("band-aware recipe") and name in table]
    averaged = {"band-aware recipe, mean of seeds 0-2": seeds, "recipe, mean of seeds 0-2": [
        SHIPPED, "rank(t100-bg@1 + t200-bg@1 + bundled-ss)", "rank(t100-bg@2 + t200-bg@2 + bundled-ss)"]}
    for title, names in averaged.items():
        if len(names) == 3 and all(n in table for n in names):
            table[title] = {key: float(np.mean([table[n][key] for n in names])) for key in maps}
            means[title] = [np.mean([table[title][k] for k in groups[g]]) for g in groups]
            listed.add(title)
    ranked = sorted(table, key=lambda n: -np.mean(means[n]))
    shown = [n for n in ranked if n in listed]
    for name in shown:
        worst = min(table[name][k] - table["rx"][k] for k in maps)
        bold = "**" if name == SHIPPED else ""
        lines.append(f"| {bold}{name}{bold} | " + " | ".join(f"{v:.4f}" for v in means[name])
                     + f" | {np.mean(means[name]):.4f} | {worst:+.4f} |")
    lines += ["", "Per scene and band set (plain RX, the previous default, the shipped recipe):", "",
              "| scene | set | bands | plain RX | rank(rand200 + bundled-ss) | shipped recipe | band-aware recipe | "
              "shipped networks | band-aware shipped networks |",
              "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(maps):
        scene, _, variant = key.partition("~")
        lines.append(f"| {scene} | {variant or 'original'} | {meta[key]['bands']} | {table['rx'][key]:.4f} | "
                     f"{table['rank(rand200 + bundled-ss)'][key]:.4f} | {table[SHIPPED][key]:.4f} | "
                     f"{table['band-aware recipe'][key]:.4f} | {table['shipped networks'][key]:.4f} | "
                     f"{table['band-aware shipped networks'][key]:.4f} |")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"report in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
