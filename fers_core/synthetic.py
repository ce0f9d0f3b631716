"""A realistic synthetic hyperspectral scene with known anomalies, for the demo and tests.

The background mixes five smooth material spectra (vegetation, soil, dry grass, asphalt,
water) with spatially coherent abundances, under a shared atmospheric transmission with
water-vapour absorption. Anomalies are rare man-made spectra implanted as full-pixel blocks
and as sub-pixel mixtures. The cube is int16 reflectance x 10000 on a UTM grid, with a
nodata wedge along one edge as at the border of a flight line.
"""

import numpy as np
from osgeo import gdal, osr
from scipy.ndimage import gaussian_filter

from .errors import InputError
from .io.atomic import AtomicOutput
from .io.output_safety import check_outputs
from .io.writer import output_folder

NODATA = -9999
DEMO_EPSG = 32633
DEMO_ORIGIN = (400000.0, 5500000.0)
DEMO_PIXEL_SIZE = 4.0
MIN_SCENE_SIDE = 24  # pixels: no smaller scene holds its anomalies; up to about 28 px some seeds do not (refused)


def _gauss(wavelengths, centre, width):
    return np.exp(-0.5 * ((wavelengths - centre) / width) ** 2)


def _sigmoid(wavelengths, centre, width):
    return 1.0 / (1.0 + np.exp(-(wavelengths - centre) / width))


def background_spectra(wavelengths):
    """Reflectance (materials x bands) of vegetation, soil, dry grass, asphalt and water."""
    w = wavelengths
    vegetation = 0.04 + 0.06 * _gauss(w, 550, 35) + 0.42 * _sigmoid(w, 715, 12) * (1 - 0.35 * _sigmoid(w, 1300, 80))
    vegetation -= 0.15 * _gauss(w, 1450, 60) + 0.2 * _gauss(w, 1940, 80) + 0.06 * _gauss(w, 980, 30)
    soil = 0.12 + 0.22 * _sigmoid(w, 700, 250) - 0.05 * _gauss(w, 2200, 40) - 0.04 * _gauss(w, 1420, 50)
    grass = 0.10 + 0.25 * _sigmoid(w, 650, 120) - 0.08 * _gauss(w, 1450, 60) - 0.1 * _gauss(w, 1930, 70)
    grass -= 0.04 * _gauss(w, 2100, 60)
    asphalt = 0.07 + 0.05 * (w - 400) / 2100 - 0.01 * _gauss(w, 1700, 100)
    water = 0.06 * np.exp(-(w - 400) / 180) + 0.005
    return np.clip(np.stack([vegetation, soil, grass, asphalt, water]), 0.002, 1.0)


def anomaly_spectra(wavelengths):
    """Reflectance (targets x bands) of blue paint, a green tarp and a white roof panel."""
    w = wavelengths
    blue_paint = 0.05 + 0.35 * _gauss(w, 460, 40) + 0.3 * _sigmoid(w, 800, 60) - 0.1 * _gauss(w, 1720, 40)
    green_tarp = 0.06 + 0.2 * _gauss(w, 540, 30) + 0.12 * _sigmoid(w, 1100, 150) - 0.08 * _gauss(w, 2300, 50)
    roof_panel = 0.55 - 0.2 * (w - 400) / 2100 - 0.12 * _gauss(w, 1210, 50) - 0.15 * _gauss(w, 2300, 60)
    return np.clip(np.stack([blue_paint, green_tarp, roof_panel]), 0.002, 1.0)


def atmospheric_transmission(wavelengths):
    """Smooth transmission with the 940, 1140, 1380 and 1880 nm water-vapour bands."""
    w = wavelengths
    t = 1.0 - 0.45 * _gauss(w, 940, 25) - 0.45 * _gauss(w, 1140, 30) - 0.9 * _gauss(w, 1380, 45)
    t -= 0.92 * _gauss(w, 1880, 60) + 0.3 * _gauss(w, 2500, 120)
    return np.clip(t, 0.03, 1.0)


def make_scene(rows=160, cols=200, bands=120, seed=0, n_full=6, n_subpixel=6):
    """Return (cube float32 reflectance (bands, rows, cols), truth uint8 (rows, cols), wavelengths nm, valid)."""
    if min(rows, cols) < MIN_SCENE_SIDE or bands < 3:
        raise InputError(f"A demo scene needs at least {MIN_SCENE_SIDE}x{MIN_SCENE_SIDE} pixels and 3 bands (got "
                         f"{rows}x{cols} px, {bands} bands).")
    rng = np.random.default_rng(seed)
    wavelengths = np.linspace(400.0, 2500.0, bands)
    materials = background_spectra(wavelengths) * atmospheric_transmission(wavelengths)
    fields = np.stack([gaussian_filter(rng.standard_normal((rows, cols)), sigma=rng.uniform(5, 12)) for _ in materials])
    fields /= fields.std(axis=(1, 2), keepdims=True)
    abundances = np.exp(2.2 * fields)
    abundances /= abundances.sum(axis=0, keepdims=True)
    brightness = 1.0 + 0.08 * gaussian_filter(rng.standard_normal((rows, cols)), sigma=3)
    cube = np.einsum("mb,mrc->brc", materials, abundances) * brightness

    valid = _flight_line_mask(rows, cols)
    truth = np.zeros((rows, cols), dtype=np.uint8)
    targets = anomaly_spectra(wavelengths) * atmospheric_transmission(wavelengths)
    occupied = ~valid
    for index in range(n_full + n_subpixel):
        size = int(rng.integers(2, 4)) if index < n_full else 1
        row, col = _free_spot(rng, occupied, size)
        fraction = rng.uniform(0.35, 0.7) if index < n_full else rng.uniform(0.06, 0.2)
        target = targets[index % len(targets)][:, None, None]
        block = np.s_[:, row:row + size, col:col + size]
        cube[block] = fraction * target + (1 - fraction) * cube[block]
        truth[row:row + size, col:col + size] = 1
        occupied[max(row - 3, 0):row + size + 3, max(col - 3, 0):col + size + 3] = True

    noise_sigma = 0.004 + 0.01 * (1 - atmospheric_transmission(wavelengths))
    cube += rng.standard_normal(cube.shape) * noise_sigma[:, None, None]
    return cube.astype(np.float32), truth, wavelengths, valid


def _flight_line_mask(rows, cols):
    """True inside the imaged swath: a slanted nodata wedge on the left edge, like a flight line border."""
    row_index, col_index = np.mgrid[0:rows, 0:cols]
    return col_index >= (0.08 * cols * (1 - row_index / max(rows - 1, 1))).astype(int)


def _free_spot(rng, occupied, size):
    rows, cols = occupied.shape
    for _ in range(10000):
        row = int(rng.integers(4, rows - size - 4))
        col = int(rng.integers(4, cols - size - 4))
        if not occupied[row:row + size, col:col + size].any():
            return row, col
    raise InputError(f"The {rows}x{cols} px demo scene is too small for its anomalies: give it more rows and "
                     "columns (32x32 always fits; the default is 160x200).")


def write_scene(path, truth_path, rows=160, cols=200, bands=120, seed=0):
    """Write the scene as an int16 GeoTIFF (reflectance x 10000, nodata -9999) and its uint8 truth."""
    cube, truth, wavelengths, valid = make_scene(rows, cols, bands, seed)
    data = np.clip(np.round(cube * 10000), -32767, 32767).astype(np.int16)
    data[:, ~valid] = NODATA
    geotransform = (DEMO_ORIGIN[0], DEMO_PIXEL_SIZE, 0.0, DEMO_ORIGIN[1], 0.0, -DEMO_PIXEL_SIZE)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(DEMO_EPSG)
    check_outputs([("the scene", path), ("the ground truth", truth_path)])
    for output in (path, truth_path):
        output_folder(output)  # created when missing
    driver = gdal.GetDriverByName("GTiff")
    with AtomicOutput(path) as scene_output, AtomicOutput(truth_path) as truth_output:  # renamed when complete
        dataset = driver.Create(scene_output.path, cols, rows, bands, gdal.GDT_Int16,
                                options=["INTERLEAVE=BAND", "TILED=YES"])
        dataset.SetGeoTransform(geotransform)
        dataset.SetProjection(srs.ExportToWkt())
        for index in range(bands):
            band = dataset.GetRasterBand(index + 1)
            band.SetNoDataValue(NODATA)
            band.SetDescription(f"Band {index + 1} ({wavelengths[index]:.1f} nm)")
            band.SetMetadata({"wavelength": f"{wavelengths[index]:.2f}", "wavelength_units": "Nanometers"})
            band.WriteArray(data[index])
        band = dataset = None  # the band keeps the file open too
        truth_set = driver.Create(truth_output.path, cols, rows, 1, gdal.GDT_Byte)
        truth_set.SetGeoTransform(geotransform)
        truth_set.SetProjection(srs.ExportToWkt())
        truth_set.GetRasterBand(1).WriteArray(truth)
        truth_set.GetRasterBand(1).SetDescription("anomaly ground truth (1 = anomaly)")
        truth_set = None
        scene_output.commit()
        truth_output.commit()
    return str(path), str(truth_path)
