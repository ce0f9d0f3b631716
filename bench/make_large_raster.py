"""Write a large synthetic int16 hyperspectral GeoTIFF strip by strip (memory stays small).

Usage: python bench/make_large_raster.py OUT.tif --rows 4096 --cols 4096 --bands 200
"""

import argparse

import numpy as np
from osgeo import gdal, osr


def write_large_raster(path, rows, cols, bands, seed=0, strip_rows=256):
    rng = np.random.default_rng(seed)
    endmembers = rng.uniform(500, 4000, (6, bands))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    options = ["TILED=YES", "INTERLEAVE=BAND", "BIGTIFF=YES"]
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, bands, gdal.GDT_Int16, options=options)
    dataset.SetGeoTransform((400000.0, 5.0, 0.0, 5600000.0, 0.0, -5.0))
    dataset.SetProjection(srs.ExportToWkt())
    for band in range(bands):
        dataset.GetRasterBand(band + 1).SetNoDataValue(-9999)
    for row in range(0, rows, strip_rows):
        n = min(strip_rows, rows - row)
        abundances = rng.dirichlet(np.ones(6), size=n * cols)
        block = abundances @ endmembers + rng.normal(0, 20, (n * cols, bands))
        block = block.T.reshape(bands, n, cols).astype(np.int16)
        dataset.WriteRaster(0, row, cols, n, block.tobytes(), cols, n, gdal.GDT_Int16)
    dataset = None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--bands", type=int, default=200)
    args = parser.parse_args()
    write_large_raster(args.output, args.rows, args.cols, args.bands)
