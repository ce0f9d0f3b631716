"""The size of GDAL's block cache during a run: bounded, so that a run's memory follows its block budget."""

from contextlib import contextmanager

from osgeo import gdal

gdal.UseExceptions()

GDAL_CACHE_MB = 256


@contextmanager
def bounded_gdal_cache(megabytes=GDAL_CACHE_MB):
    """Cap GDAL's block cache during a run (restored afterwards).

    GDAL's default cache (5% of RAM, often more in QGIS) fills with every block read and would
    make a streamed run's memory grow with the machine, not with the block budget. Reads are
    block-aligned, so a small cache loses nothing.
    """
    previous = gdal.GetCacheMax()
    if previous > megabytes * 2**20:
        gdal.SetCacheMax(megabytes * 2**20)
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


def write_cache_mb(width, bands=1, tile_rows=256):
    """GDAL block cache (MB) for writing rasters row of windows by row of windows: three rows of their float32
    tiles for `bands` bands in all (every file being written), at least 16 MB.

    Written tiles are all GDAL caches while a run writes (reads bypass it or are block-aligned), and with a
    larger cache it keeps every written tile until the end, which raises the run's peak memory
    (bench/MEMORY_RESULTS.md). Three tile rows hold the rows a row of windows straddles, so no unfinished
    compressed tile is ever flushed and read back.
    """
    return max(16, -(-3 * width * tile_rows * 4 * bands // 2**20))
