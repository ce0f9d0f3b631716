"""Peak memory and time of the polygons pass (write_polygons) on a random mask of many small objects.

    .venv/bin/python bench/polygons_memory.py gen 3000 /tmp/polygons  # a 3000x3000 mask (1.5% anomalies), scores
    .venv/bin/python bench/polygons_memory.py run /tmp/polygons       # in a fresh process: objects, seconds, peak

Measured on the 2-core machine (CHANGELOG): 3000x3000, 126,828 objects: 217 MB peak (114 MB before the pass), 10 s.
"""

import os
import resource
import sys
import time

import numpy as np
from osgeo import gdal

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def generate(size, folder):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, data_type in (("mask.tif", gdal.GDT_Byte), ("scores.tif", gdal.GDT_Float32)):
        dataset = gdal.GetDriverByName("GTiff").Create(os.path.join(folder, name), size, size, 1, data_type,
                                                       ["TILED=YES"])
        dataset.SetGeoTransform((0, 1, 0, 0, 0, -1))
        for row in range(0, size, 500):
            values = rng.random((min(500, size - row), size))
            block = (values > 0.985).astype(np.uint8) if data_type == gdal.GDT_Byte else values.astype(np.float32)
            dataset.GetRasterBand(1).WriteArray(block, 0, row)
        dataset = None


def measure(folder):
    from fers_core.feedback import PrintFeedback
    from fers_core.pipeline.objects import write_polygons

    output = os.path.join(folder, "objects.gpkg")
    if os.path.exists(output):
        os.remove(output)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    summary = write_polygons(os.path.join(folder, "mask.tif"), os.path.join(folder, "scores.tif"), output,
                             feedback=PrintFeedback())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"objects {summary.objects}, {time.perf_counter() - start:.1f} s, peak {peak / 1024:.0f} MB "
          f"({before / 1024:.0f} MB before the pass)")


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        generate(int(sys.argv[2]), sys.argv[3])
    else:
        measure(sys.argv[2])
