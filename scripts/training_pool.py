"""The shared training rasters: background cubes, background scenes and masked development scenes.

Used by the weight scripts (`make weights`) and the bench studies. Reads ../shared/data (relative to the
project root); nothing here is bundled. Bad bands (backgrounds.json ``bad_bands_1based``) are dropped
through a band-list VRT: TrainOptions takes one band list for all inputs, so a per-raster band list
reaches fers_core.training through the VRT. ``by_wavelength``: for a raster that stores band wavelengths,
the VRT also leaves out what `wavelength_kept` drops (water-vapour windows, the ends of the range and the
repeated bands where two detectors overlap), so its spectra look like those of development scenes whose
water bands were removed; rasters without wavelengths are unchanged.
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


WATER_WINDOWS_NM = ((1340.0, 1450.0), (1790.0, 1960.0))
"""Water-vapour absorption windows, as the usual AVIRIS bad-band lists drop them (bands 107-113 and 153-166)."""
RANGE_NM = (400.0, 2450.0)
"""The range kept: the ends are noisy (AVIRIS drops bands 1-6 and 221-224)."""


def wavelength_kept(wavelengths):
    """For each band, in file order, whether it is kept: inside RANGE_NM, outside WATER_WINDOWS_NM, and above every
    band kept before it (where two detectors overlap, as EnMAP's VNIR and SWIR near 950 nm or AVIRIS's
    spectrometers, the later detector's repeated bands are dropped)."""
    kept, highest = [], -float("inf")
    for value in wavelengths:
        keep = RANGE_NM[0] <= value <= RANGE_NM[1] and value > highest and \
            not any(low <= value <= high for low, high in WATER_WINDOWS_NM)
        highest = value if keep else highest  # a kept band is above every one before it
        kept.append(keep)
    return kept


def stored_wavelengths(path):
    """Every band's wavelength (nm) of ``path``, or None when it stores none."""
    from osgeo import gdal

    from fers_core.io.band_metadata import read_wavelengths_nm

    dataset = gdal.Open(str(path))
    return read_wavelengths_nm(dataset, range(1, dataset.RasterCount + 1))


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


def training_input(name, entry, folder, by_wavelength=False):
    """(raster path, mask path or None): the raster itself, or a VRT under ``folder``/vrt without its bad bands
    (and, ``by_wavelength``, without the bands `wavelength_kept` drops, when the raster stores wavelengths)."""
    mask = str(entry["mask"]) if entry["mask"] else None
    keep = [band for band in range(1, entry["bands"] + 1) if band not in set(entry["bad"])]
    wavelengths = stored_wavelengths(entry["path"]) if by_wavelength else None
    if wavelengths is not None:
        kept = wavelength_kept(wavelengths)
        keep = [band for band in keep if kept[band - 1]]
        return str(band_list_vrt(entry["path"], keep, Path(folder) / "vrt" / f"{name}-wl.vrt")), mask
    if not entry["bad"]:
        return str(entry["path"]), mask
    return str(band_list_vrt(entry["path"], keep, Path(folder) / "vrt" / f"{name}.vrt")), mask
