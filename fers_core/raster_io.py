"""Block-wise GDAL raster reading and crash-safe writing.

Reading honours band selection, per-band nodata, NaN/inf, a per-dataset GDAL mask and
scale/offset metadata. Writing goes to a temporary file beside the destination, renamed into
place only when complete, so a crash or a cancel never leaves a half-written output.
"""

import glob
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array, osr

from .errors import InputError

gdal.UseExceptions()

DEFAULT_BLOCK_MB = 64
GDAL_CACHE_MB = 256
SCORE_NODATA = -9999.0

_DRIVER_BY_EXTENSION = {
    ".tif": "GTiff",
    ".tiff": "GTiff",
    ".img": "HFA",
    ".bsq": "ENVI",
    ".dat": "ENVI",
    ".nc": "netCDF",
}
_CREATION_OPTIONS = {
    "GTiff": ["TILED=YES", "COMPRESS=DEFLATE", "ZLEVEL=1", "BIGTIFF=IF_SAFER"],
}
_WAVELENGTH_KEYS = ("wavelength", "WAVELENGTH", "CENTRAL_WAVELENGTH_UM", "wavelengths")


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: row/column offset and size."""

    row: int
    col: int
    rows: int
    cols: int

    @property
    def pixels(self):
        return self.rows * self.cols

    def slices(self):
        return slice(self.row, self.row + self.rows), slice(self.col, self.col + self.cols)


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
    larger cache it keeps every written tile until the end: measured +61 MB of peak memory for fers:rx at
    4096^2 px with the 256 MB run-wide cap, against none with 16 MB. Three tile rows hold the rows a row
    of windows straddles, so no unfinished compressed tile is ever flushed and read back.
    """
    return max(16, -(-3 * width * tile_rows * 4 * bands // 2**20))


def strip_windows(width, height, bytes_per_row, budget_bytes):
    """Full-width strips whose size stays within the memory budget (at least one row each)."""
    rows_per_strip = max(1, int(budget_bytes // max(1, bytes_per_row)))
    return [Window(row, 0, min(rows_per_strip, height - row), width) for row in range(0, height, rows_per_strip)]


def _open(path):
    if not path:
        raise InputError("No raster was given: choose an input raster layer.")
    try:
        dataset = gdal.Open(str(path), gdal.GA_ReadOnly)
    except RuntimeError as error:
        raise InputError(f"Cannot open raster '{path}' with GDAL: {error}") from None
    if dataset is None:
        raise InputError(f"Cannot open raster '{path}' with GDAL.")
    return dataset


class RasterReader:
    """Reads selected bands of a raster block by block, with a validity mask per block.

    `bands` are 1-based band numbers (None = all). A pixel is valid when every selected band
    is finite and differs from that band's nodata value, and the dataset mask (if any) is set.
    """

    def __init__(self, path, bands=None, direct_io=False):
        self.path = str(path)
        self._buffer = None
        # direct_io: uncompressed GeoTIFF blocks are read straight into the array, past GDAL's block
        # cache (faster for big reads, and no cache memory); other files are unaffected. GDAL takes
        # the option when the file is opened, so it is set (for this thread only) around the opening.
        if direct_io:
            gdal.SetThreadLocalConfigOption("GTIFF_DIRECT_IO", "YES")
        try:
            self._dataset = _open(path)
        finally:
            if direct_io:
                gdal.SetThreadLocalConfigOption("GTIFF_DIRECT_IO", None)
        ds = self._dataset
        self.width = ds.RasterXSize
        self.height = ds.RasterYSize
        total = ds.RasterCount
        if total == 0:
            raise InputError(f"Raster '{path}' has no bands.")
        if bands is None or len(bands) == 0:
            bands = list(range(1, total + 1))
        bad = [b for b in bands if not 1 <= int(b) <= total]
        if bad:
            raise InputError(
                f"Band number(s) {bad} are out of range: '{os.path.basename(self.path)}' has bands 1 to {total}."
            )
        self.bands = [int(b) for b in bands]
        gdal_bands = [ds.GetRasterBand(b) for b in self.bands]
        self.nodata = [band.GetNoDataValue() for band in gdal_bands]
        self.scales = [band.GetScale() or 1.0 for band in gdal_bands]
        self.offsets = [band.GetOffset() or 0.0 for band in gdal_bands]
        self.data_type = gdal.GetDataTypeName(gdal_bands[0].DataType)
        self._scaled = any(s != 1.0 for s in self.scales) or any(o != 0.0 for o in self.offsets)
        flags = gdal_bands[0].GetMaskFlags()
        per_dataset = bool(flags & gdal.GMF_PER_DATASET)
        self._dataset_mask = per_dataset and not flags & (gdal.GMF_NODATA | gdal.GMF_ALL_VALID)
        self.geotransform = ds.GetGeoTransform(can_return_null=True)
        self.projection = ds.GetProjection() or ""
        self.wavelengths_nm = read_wavelengths_nm(ds, self.bands)

    @property
    def band_count(self):
        return len(self.bands)

    @property
    def pixel_count(self):
        return self.width * self.height

    def windows(self, budget_mb=DEFAULT_BLOCK_MB, bytes_per_value=8):
        """Windows covering the raster, each holding at most budget_mb of data, aligned to GDAL blocks.

        Full-width strips when a whole row of blocks fits in the budget; otherwise block-aligned
        tiles, so no block is read more than once per pass (misaligned thin strips of a tiled,
        band-interleaved file would re-read each block many times).
        """
        budget = budget_mb * 2**20
        pixel_bytes = self.band_count * bytes_per_value
        block_cols, block_rows = self._dataset.GetRasterBand(self.bands[0]).GetBlockSize()
        block_cols, block_rows = min(block_cols, self.width), min(block_rows, self.height)
        if self.width * block_rows * pixel_bytes <= budget or block_cols >= self.width:
            rows = max(1, budget // (self.width * pixel_bytes))
            if rows >= block_rows:
                rows -= rows % block_rows
            return strip_windows(self.width, self.height, self.width * pixel_bytes, rows * self.width * pixel_bytes)
        blocks_across = max(1, budget // (block_cols * block_rows * pixel_bytes))
        cols = min(self.width, block_cols * blocks_across)
        # a single block larger than the budget is split into row bands; GDAL's cache serves the re-reads
        rows = min(block_rows, max(1, budget // (cols * pixel_bytes)))
        windows = []
        for block_row in range(0, self.height, block_rows):
            block_end = min(block_row + block_rows, self.height)
            for col in range(0, self.width, cols):
                windows += [Window(row, col, min(rows, block_end - row), min(cols, self.width - col))
                            for row in range(block_row, block_end, rows)]
        return windows

    def read(self, window, dtype=np.float64, reuse=False):
        """Return (data of shape (bands, rows, cols), valid mask of shape (rows, cols)).

        `dtype` None: the values as stored (no conversion) when the raster has no scale/offset,
        else float64. `reuse`: read into a buffer the reader keeps, so a stream of blocks does not
        allocate (and page in) a new array each time; the data returned may then be that buffer,
        overwritten by the next such read.
        """
        out = None
        if reuse:
            size = self.band_count * window.pixels
            if self._buffer is None or self._buffer.size < size:
                self._buffer = None
                read_type = self._dataset.GetRasterBand(1).DataType  # the type ReadAsArray reads all bands in
                self._buffer = np.empty(size, gdal_array.GDALTypeCodeToNumericTypeCode(read_type))
            out = self._buffer[:size].reshape(self.band_count, window.rows, window.cols)
        raw = self._dataset.ReadAsArray(window.col, window.row, window.cols, window.rows, band_list=self.bands,
                                        buf_obj=out)
        raw = raw.reshape(self.band_count, window.rows, window.cols)
        valid = np.ones((window.rows, window.cols), dtype=bool)
        for index, nodata in enumerate(self.nodata):
            if nodata is None or np.isnan(nodata):
                continue
            if raw.dtype.kind in "iu":  # compare in the stored type; a nodata it cannot hold matches nothing
                info = np.iinfo(raw.dtype)
                if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
                    continue
                nodata = raw.dtype.type(nodata)
            valid &= raw[index] != nodata
        if dtype is None:
            dtype = np.float64 if self._scaled else raw.dtype
        data = raw.astype(dtype, copy=False)
        if self._scaled:
            data = data * np.asarray(self.scales, dtype)[:, None, None] + np.asarray(self.offsets, dtype)[:, None, None]
        if data.dtype.kind in "fc" and (self._scaled or raw.dtype.kind in "fc"):  # integers are always finite
            for band in data:
                valid &= np.isfinite(band)
        if self._dataset_mask:
            mask = self._dataset.GetRasterBand(self.bands[0]).GetMaskBand()
            valid &= mask.ReadAsArray(window.col, window.row, window.cols, window.rows) > 0
        return data, valid

    def close(self):
        self._dataset = None
        self._buffer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_wavelengths_nm(dataset, bands):
    """Band centre wavelengths in nanometres from GDAL band metadata or an ENVI header, else None."""
    values = []
    for band_number in bands:
        band = dataset.GetRasterBand(band_number)
        metadata = band.GetMetadata() or {}
        value = next((metadata[k] for k in _WAVELENGTH_KEYS if k in metadata), None)
        if value is None:
            values = None
            break
        try:
            number = float(str(value).split()[0])
        except ValueError:
            values = None
            break
        units = (metadata.get("wavelength_units") or metadata.get("WAVELENGTH_UNITS") or "").lower()
        values.append(_to_nanometres(number, units, "_UM" in "".join(k for k in _WAVELENGTH_KEYS if k in metadata)))
    if values:
        return values
    envi = dataset.GetMetadata("ENVI") or {}
    if "wavelength" in envi:
        try:
            parsed = [float(v) for v in envi["wavelength"].strip("{} ").split(",")]
        except ValueError:
            return None
        units = envi.get("wavelength_units", "").lower()
        parsed = [_to_nanometres(v, units, False) for v in parsed]
        if len(parsed) >= max(bands):
            return [parsed[b - 1] for b in bands]
    return None


def _to_nanometres(value, units, micrometres_key):
    if micrometres_key or units.startswith("micro") or units in ("um", "µm") or (not units and value < 30):
        return value * 1000.0
    return value


def read_mask(path, like):
    """Open a mask raster that must match `like` (a RasterReader) in size; returns a RasterReader."""
    mask = RasterReader(path, bands=[1])
    if (mask.width, mask.height) != (like.width, like.height):
        raise InputError(
            f"The mask is {mask.width}x{mask.height} pixels but the input is {like.width}x{like.height}: "
            "use a mask raster on the same grid as the input."
        )
    if mask.projection and like.projection and not _same_crs(mask.projection, like.projection):
        raise InputError("The mask has a different CRS from the input: reproject it onto the input's grid first.")
    return mask


def _same_crs(wkt_a, wkt_b):
    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(wkt_a)
    b.ImportFromWkt(wkt_b)
    return bool(a.IsSame(b))


def output_folder(path):
    """The folder of an output path, created when missing; InputError when it cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:  # a parent is a file, a read-only or missing drive, ...
        raise InputError(f"Cannot create the output folder '{folder}' ({error.strerror}): "
                         "choose an output location you can write to.") from None
    if not os.access(folder, os.W_OK):
        raise InputError(f"Cannot write to folder '{folder}': choose an output location you can write to.")
    return folder


class RasterWriter:
    """Writes a raster under a temporary name; `commit()` renames it into place.

    Used as a context manager: leaving the block without commit() (an error or a cancel)
    deletes the temporary file, so the destination is never half-written.
    """

    def __init__(self, path, width, height, bands=1, data_type=gdal.GDT_Float32, geotransform=None,
                 projection="", nodata=SCORE_NODATA, band_names=None):
        self.path = str(path)
        folder = output_folder(self.path)
        stem, extension = os.path.splitext(os.path.basename(self.path))
        driver_name = _DRIVER_BY_EXTENSION.get(extension.lower(), "GTiff")
        self._driver = gdal.GetDriverByName(driver_name)
        self._temp_base = os.path.join(folder, f".{stem}.partial-{uuid.uuid4().hex[:8]}")
        self.temp_path = self._temp_base + extension
        options = _CREATION_OPTIONS.get(driver_name, [])
        try:
            self._dataset = self._driver.Create(self.temp_path, width, height, bands, data_type, options=options)
        except RuntimeError as error:
            self.abort()
            raise InputError(f"Cannot create the output file in '{folder}' ({str(error).strip()}): "
                             "choose an output location you can write to, with enough free space.") from None
        if geotransform is not None:
            self._dataset.SetGeoTransform(geotransform)
        if projection:
            self._dataset.SetProjection(projection)
        for index in range(bands):
            band = self._dataset.GetRasterBand(index + 1)
            if nodata is not None:
                band.SetNoDataValue(nodata)
            if band_names:
                band.SetDescription(band_names[index])
        self._committed = False

    @classmethod
    def like(cls, reader, path, bands=1, data_type=gdal.GDT_Float32, nodata=SCORE_NODATA, band_names=None):
        """A writer on the same grid (size, geotransform, CRS) as a RasterReader."""
        return cls(path, reader.width, reader.height, bands, data_type, reader.geotransform, reader.projection,
                   nodata, band_names)

    def write(self, window, array):
        """Write a (rows, cols) or (bands, rows, cols) array at the window."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        for index in range(array.shape[0]):
            self._dataset.GetRasterBand(index + 1).WriteArray(array[index], window.col, window.row)

    def set_metadata(self, metadata):
        self._dataset.SetMetadata({str(k): str(v) for k, v in metadata.items()})

    def commit(self):
        """Flush, close and move the finished file (and any sidecar files) to the destination."""
        self._dataset.FlushCache()
        self._dataset = None
        destination_base = os.path.splitext(self.path)[0]
        for temp_file in self._temp_files():
            suffix = temp_file[len(self._temp_base):]
            os.replace(temp_file, destination_base + suffix)
        self._committed = True

    def abort(self):
        """Delete the temporary file and its sidecars (safe to call twice)."""
        self._dataset = None
        for temp_file in self._temp_files():
            os.remove(temp_file)

    def _temp_files(self):
        return sorted(glob.glob(glob.escape(self._temp_base) + "*"))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if not self._committed:
            self.abort()

