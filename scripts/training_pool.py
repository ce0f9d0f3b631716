"""The shared training rasters: background cubes, background scenes and masked development scenes.

Used by the weight scripts (`make weights`) and the bench studies. Reads ../shared/data (relative to the
project root); nothing here is bundled. Bad bands (backgrounds.json ``bad_bands_1based``) are dropped
through a band-list VRT: TrainOptions takes one band list for all inputs, so a per-raster band list
reaches fers_core.training through the VRT.
"""

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCENES = SHARED / "scenes"
BACKGROUNDS = SHARED / "backgrounds"
TOO_SMALL = ("avirisng-",)
"""10x10 px cubes: no 32 px training patch fits in them."""


def family(sensor):
    """Sensor family for leave-one-sensor-out: every AVIRIS variant (AVIRIS-C, AVIRIS-NG) is AVIRIS."""
    return "AVIRIS" if sensor.upper().startswith("AVIRIS") else sensor.split(" ")[0]


def catalogue():
    """name -> {path, sensor, bad (1-based bad bands), bands, pixels, mask (ground-truth path or None)}."""
    entries = {}
    for item in json.loads((BACKGROUNDS / "backgrounds.json").read_text()):
        entries[item["name"]] = {"path": BACKGROUNDS / f"{item['name']}.tif", "sensor": item["sensor"],
                                 "bad": list(item.get("bad_bands_1based") or []), "bands": item["bands"],
                                 "pixels": item["rows"] * item["cols"], "mask": None}
    for item in json.loads((SCENES / "scenes.json").read_text()):
        truth = SCENES / f"{item['name']}_gt.tif"
        entries[item["name"]] = {"path": SCENES / f"{item['name']}.tif", "sensor": item["sensor"], "bad": [],
                                 "bands": item["bands"], "pixels": item["rows"] * item["cols"],
                                 "mask": truth if truth.exists() else None}
    return entries


def band_list_vrt(source, bands, vrt):
    """``vrt``: a VRT of ``source`` with only ``bands`` (1-based), written once (atomically) and reused."""
    vrt = Path(vrt)
    if not vrt.exists():
        from osgeo import gdal

        vrt.parent.mkdir(parents=True, exist_ok=True)
        temporary = f"{vrt}.tmp.vrt"
        dataset = gdal.Translate(temporary, str(source), format="VRT", bandList=list(bands))
        if dataset is None:
            raise SystemExit(f"Could not write the band-list VRT {vrt} of {source}.")
        dataset = None
        os.replace(temporary, vrt)
    return vrt


def training_input(name, entry, folder):
    """(raster path, mask path or None): the raster itself, or a VRT under ``folder``/vrt without its bad bands."""
    mask = str(entry["mask"]) if entry["mask"] else None
    if not entry["bad"]:
        return str(entry["path"]), mask
    keep = [band for band in range(1, entry["bands"] + 1) if band not in set(entry["bad"])]
    return str(band_list_vrt(entry["path"], keep, Path(folder) / "vrt" / f"{name}.vrt")), mask
