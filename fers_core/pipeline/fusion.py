"""Fusion: the enhanced cube(s) x + F that RX scores, and the product of two normalised score maps."""

from contextlib import ExitStack

import numpy as np

from ..choices import Fusion
from ..io.gdal_cache import bounded_gdal_cache, write_cache_mb
from ..io.reader import RasterReader
from ..io.writer import SCORE_NODATA, RasterWriter
from .preprocess import RangeAccumulator

COMBINE_BLOCK_MB = 16  # blocks of the score maps that product fusion multiplies


PRODUCT_BRANCHES = ("spatial", "spectral")  # the cubes of product fusion, in the order of its RX maps


def branch_cubes(x, features, names):
    """{branch: x + F_branch} for the branches in `names` (the enhanced cubes of one branch each)."""
    return {name: x + features[name] for name in names}


def enhanced_cubes(x, features, fusion):
    """The cube(s) RX scores: x + sum of features, or x + each feature for product fusion."""
    if fusion is Fusion.PRODUCT:
        return list(branch_cubes(x, features, PRODUCT_BRANCHES).values())
    total = x.copy()
    for feature in features.values():
        total += feature
    return [total]


def open_cube_writers(stack, reader, paths, model_bands, wavelengths_nm=None):
    """{branch: RasterWriter} of the enhanced-cube outputs `paths` ({branch: path}) on `stack`, bands "model band N",
    with the model's wavelengths (nm) in each band's metadata when it has them."""
    band_names = [f"model band {i + 1}" + (f" ({wavelengths_nm[i]:.1f} nm)" if wavelengths_nm else "")
                  for i in range(model_bands)]
    writers = {name: stack.enter_context(RasterWriter.like(reader, path, model_bands, band_names=band_names))
               for name, path in paths.items()}
    if wavelengths_nm:
        for writer in writers.values():
            writer.set_band_wavelengths(wavelengths_nm)
    return writers


def score_range(path):
    ranges = RangeAccumulator()
    with RasterReader(path) as reader:
        for window in reader.windows():
            data, valid = reader.read(window, np.float32)
            ranges.add(data[0][valid])
    return ranges


def combine_maps(sources, reader, output_path, ranges, progress, detector):
    """Product fusion of two score maps, each (raster path, band index): min-max normalised, multiplied."""
    with bounded_gdal_cache(write_cache_mb(reader.width, 1 + len(sources))), ExitStack() as stack:
        maps = {path: stack.enter_context(RasterReader(path)) for path in dict.fromkeys(p for p, _ in sources)}
        writer = stack.enter_context(RasterWriter.like(reader, output_path, band_names=["FERS anomaly score"]))
        # float32 reads of small blocks: float64 reads of full-size blocks and their temporaries would set the
        # run's peak memory on large rasters
        windows = next(iter(maps.values())).windows(COMBINE_BLOCK_MB, bytes_per_value=4)
        for index, window in enumerate(windows):
            blocks = {path: m.read(window, np.float32) for path, m in maps.items()}
            valid = np.logical_and.reduce([blocks[path][1] for path, _ in sources])
            product = np.full((window.rows, window.cols), SCORE_NODATA, dtype=np.float32)
            normalised = [(blocks[path][0][band][valid].astype(np.float64) - r.min) / max(r.max - r.min, 1e-30)
                          for (path, band), r in zip(sources, ranges)]
            product[valid] = normalised[0] * normalised[1]
            writer.write(window, product)
            progress((index + 1) / len(windows))
        writer.set_metadata({"fers_detector": f"FERS + {detector}", "fers_fusion": Fusion.PRODUCT})
        writer.commit()
