"""Block-wise GDAL raster reading and crash-safe writing.

Reading honours band selection, per-band nodata, NaN/inf, a per-dataset GDAL mask and
scale/offset metadata. Writing goes to a temporary file beside the destination, renamed into
place only when complete, so a crash or a cancel never leaves a half-written output.
"""

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array, osr

from ..errors import InputError, OutputError, capitalised
from .atomic import AtomicOutput, write_failure

gdal.UseExceptions()

DEFAULT_BLOCK_MB = 64
GDAL_CACHE_MB = 256
SCORE_NODATA = -9999.0

_GTIFF_OPTIONS = ["TILED=YES", "COMPRESS=DEFLATE", "ZLEVEL=1", "BIGTIFF=IF_SAFER"]
RASTER_OUTPUT_FORMATS = {  # extension: (GDAL driver, creation options); every one is written block by block
    ".tif": ("GTiff", _GTIFF_OPTIONS),
    ".tiff": ("GTiff", _GTIFF_OPTIONS),
    ".img": ("HFA", []),
    ".bsq": ("ENVI", ["INTERLEAVE=BSQ"]),
    ".bil": ("ENVI", ["INTERLEAVE=BIL"]),
    ".bip": ("ENVI", ["INTERLEAVE=BIP"]),
    ".dat": ("ENVI", ["INTERLEAVE=BSQ"]),
    ".envi": ("ENVI", ["INTERLEAVE=BSQ"]),
    ".nc": ("netCDF", []),
}
SINGLE_BAND_ONLY = {".nc": "GDAL writes each band of a netCDF as its own variable (subdataset)"}
SUPPORTED_OUTPUTS = ("'.tif'/'.tiff' (GeoTIFF), '.img' (Erdas Imagine), '.bsq', '.bil', '.bip', '.dat' or "
                     "'.envi' (ENVI, with a .hdr header), '.nc' (netCDF, one-band outputs only)")
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


_SUBDATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:")


def is_raster_source(value):
    """True for an existing file, or a GDAL subdataset name GDAL opens (e.g. NETCDF:"scene.nc":radiance).

    The algorithms take such values as given, without loading them as QGIS layers (loading computes a
    histogram that GDAL saves as '<input>.aux.xml' beside the input).
    """
    if not isinstance(value, str) or not value:
        return False
    if os.path.isfile(value):
        return True
    if not _SUBDATASET_NAME.match(value) or os.path.splitdrive(value)[0]:  # a Windows drive is not a driver
        return False
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        return gdal.OpenEx(value, gdal.OF_RASTER | gdal.OF_READONLY) is not None
    except RuntimeError:
        return False
    finally:
        gdal.PopErrorHandler()


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


@dataclass(frozen=True)
class StoredType:
    """How the values of one band are stored: the numpy type they are read as, and whether GDAL reports them
    as Byte that are really signed (GDAL 3.6 and older have no Int8 type: a signed 8-bit band is Byte with
    PIXELTYPE=SIGNEDBYTE in its IMAGE_STRUCTURE metadata)."""

    dtype: np.dtype
    signed_byte: bool

    @property
    def name(self):
        return "Int8" if self.dtype == np.int8 else gdal.GetDataTypeName(gdal_array.NumericTypeCodeToGDALTypeCode(
            self.dtype))


_COMPLEX_TYPES = {getattr(gdal, f"GDT_{name}") for name in ("CInt16", "CInt32", "CFloat32", "CFloat64")}


def stored_type(band, number, path):
    """The StoredType of a GDAL band (`number` and `path` name it in messages); InputError for complex bands.

    The one type rule of every read: signed bytes are int8 whether GDAL calls them Int8 (3.7 and later) or
    Byte with PIXELTYPE=SIGNEDBYTE, so their negative values and nodata (often -128) are read as stored.
    """
    if band.DataType in _COMPLEX_TYPES:
        raise InputError(
            f"Band {number} of '{os.path.basename(path)}' holds complex values "
            f"({gdal.GetDataTypeName(band.DataType)}), and FERS works on real values only: convert the raster "
            "first, e.g. to its magnitude with gdal_calc.py -A input --calc=\"numpy.abs(A)\" --type=Float32 "
            "--allBands=A --outfile=magnitude.tif, or with QGIS's Raster calculator."
        )
    if band.DataType == gdal.GDT_Byte and band.GetMetadataItem("PIXELTYPE", "IMAGE_STRUCTURE") == "SIGNEDBYTE":
        return StoredType(np.dtype(np.int8), True)
    code = gdal_array.GDALTypeCodeToNumericTypeCode(band.DataType)
    if code is None:
        raise InputError(f"Band {number} of '{os.path.basename(path)}' has GDAL type "
                         f"{gdal.GetDataTypeName(band.DataType)}, which FERS cannot read: convert it to Float32.")
    return StoredType(np.dtype(code), False)


def _no_bands_message(path, subdatasets, listed=8):
    """Why a raster without bands cannot be read; for a container (NetCDF, HDF) its subdatasets to choose from."""
    name = os.path.basename(path)
    if not subdatasets:
        return f"Raster '{name}' has no bands: choose a raster with at least one band."
    names = [f"{source} ({description})" for source, description in subdatasets[:listed]]
    more = f", and {len(subdatasets) - listed} more (gdalinfo lists them all)" if len(subdatasets) > listed else ""
    return (f"'{name}' has no bands of its own but {len(subdatasets)} subdatasets (one per variable): choose one "
            f"as the input, by its full name such as {subdatasets[0][0]} (in QGIS, Add Raster Layer on the file "
            f"offers them; in qgis_process, INPUT='{subdatasets[0][0]}'). Its subdatasets: {'; '.join(names)}{more}.")


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
            raise InputError(_no_bands_message(self.path, ds.GetSubDatasets()))
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
        stored = [stored_type(band, number, self.path) for band, number in zip(gdal_bands, self.bands)]
        self.data_type = stored[0].name
        self.stored_dtype = np.result_type(*(t.dtype for t in stored))  # the type read() returns unconverted
        self._signed_bytes = [index for index, t in enumerate(stored) if t.signed_byte]
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

    def read(self, window, dtype=np.float64, reuse=False, shape=None):
        """Return (data of shape (bands, rows, cols), valid mask of shape (rows, cols)).

        `dtype` None: the values as stored (stored_dtype, no conversion) when the raster has no
        scale/offset, else float64. `reuse`: read into a buffer the reader keeps, so a stream of blocks
        does not allocate (and page in) a new array each time; the data returned may then be that
        buffer, overwritten by the next such read. `shape`: (rows, cols) to read the window at, by
        nearest-neighbour decimation (a sample of a large raster); None = the window's own size.
        """
        rows, cols = (window.rows, window.cols) if shape is None else shape
        raw = self._read_raw(window, rows, cols, reuse)
        valid = np.ones((rows, cols), dtype=bool)
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
            valid &= mask.ReadAsArray(window.col, window.row, window.cols, window.rows, buf_xsize=cols,
                                      buf_ysize=rows) > 0
        return data, valid

    def _read_raw(self, window, rows, cols, reuse):
        """The window's values, as stored (self.stored_dtype), into a buffer this reader chooses.

        GDAL is always given the buffer: left to itself, ReadAsArray picks the type from band 1 of the file
        (not of the selection), reads signed bytes as unsigned into a given buffer, and mixed types as float32.
        """
        # signed bytes GDAL calls Byte are read as raw bytes: into uint8 memory viewed as int8 when every band
        # is one, else converted as unsigned (0..255, which stored_dtype holds) and shifted back below
        all_signed = len(self._signed_bytes) == self.band_count
        read_dtype = np.dtype(np.uint8) if all_signed else self.stored_dtype
        size = self.band_count * rows * cols
        if reuse:
            if self._buffer is None or self._buffer.size < size:
                self._buffer = None
                self._buffer = np.empty(size, read_dtype)
            out = self._buffer[:size].reshape(self.band_count, rows, cols)
        else:
            out = np.empty((self.band_count, rows, cols), read_dtype)
        self._dataset.ReadAsArray(window.col, window.row, window.cols, window.rows, buf_xsize=cols, buf_ysize=rows,
                                  band_list=self.bands, buf_obj=out)
        if all_signed:
            return out.view(np.int8)
        for index in self._signed_bytes:
            plane = out[index]
            plane[plane >= 128] -= 256
        return out

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


GRID_TOLERANCE_PX = 0.01  # how far (in pixels) two grids' corners may be apart and still be the same grid


def read_mask(path, like, what="mask", like_what="input"):
    """Open a mask raster that must be on the grid of `like` (a RasterReader); returns a RasterReader."""
    mask = RasterReader(path, bands=[1])
    try:
        check_same_grid(mask, like, what, like_what)
    except InputError:
        mask.close()
        raise
    return mask


def check_same_grid(reader, like, what="mask", like_what="input"):
    """InputError unless `reader` lies on the pixel grid of `like` (size, CRS and geotransform).

    Rasters are combined pixel by pixel, so a shifted origin, another pixel size or a rotation would
    pair each pixel with the wrong one without a word. Two grids are the same when their corners are
    within GRID_TOLERANCE_PX pixels of each other. A raster without georeferencing has no grid of its
    own and is taken as lying on the other's. `what` and `like_what` name the two in the message.
    """
    if (reader.width, reader.height) != (like.width, like.height):
        raise InputError(
            f"The {what} is {reader.width}x{reader.height} pixels but the {like_what} is "
            f"{like.width}x{like.height}: use a raster on the same grid as the {like_what}"
            f"{_align_hint(like, like_what)}."
        )
    if reader.projection and like.projection and not _same_crs(reader.projection, like.projection):
        raise InputError(f"The {what} has a different CRS from the {like_what}: reproject it onto the "
                         f"{like_what}'s grid first{_align_hint(like, like_what)}.")
    difference = _grid_difference(reader.geotransform, like.geotransform, like.width, like.height)
    if difference:
        raise InputError(f"The {what} has the {like_what}'s size but not its grid: {difference}. Its pixels would "
                         f"be paired with the wrong {like_what} pixels: resample it onto the {like_what}'s grid "
                         f"first{_align_hint(like, like_what)}.")


def _grid_difference(geotransform, like, width, height):
    """What differs between two geotransforms of grids of width x height pixels ('' when none does)."""
    if geotransform is None or like is None or tuple(geotransform) == tuple(like):
        return ""
    inverse = gdal.InvGeoTransform(like)
    if inverse is None:
        return ""  # a degenerate geotransform of the reference: nothing to compare with
    corners = [(0, 0), (width, 0), (0, height), (width, height)]
    offsets = []
    for col, row in corners:
        x, y = gdal.ApplyGeoTransform(geotransform, col, row)
        like_col, like_row = gdal.ApplyGeoTransform(inverse, x, y)
        offsets.append((like_col - col, like_row - row))
    if max(max(abs(dc), abs(dr)) for dc, dr in offsets) <= GRID_TOLERANCE_PX:
        return ""
    problems = []
    if (geotransform[2], geotransform[4]) != (0, 0) or (like[2], like[4]) != (0, 0):
        if not np.allclose((geotransform[2], geotransform[4]), (like[2], like[4]), rtol=0, atol=1e-12):
            problems.append("the two grids are rotated differently")
    size, like_size = (geotransform[1], geotransform[5]), (like[1], like[5])
    if not np.allclose(size, like_size, rtol=GRID_TOLERANCE_PX / max(width, height, 1), atol=0):
        problems.append(f"its pixels are {_pixel_size(size)} against {_pixel_size(like_size)}")
    dcol, drow = offsets[0]
    if max(abs(dcol), abs(drow)) > GRID_TOLERANCE_PX:
        problems.append(f"its origin is {dcol:+.3g} columns and {drow:+.3g} rows away")
    return "; ".join(problems) or "its corners are up to " \
        f"{max(max(abs(dc), abs(dr)) for dc, dr in offsets):.3g} pixels away"


def _pixel_size(size):
    return f"{abs(size[0]):.10g} x {abs(size[1]):.10g}"


def _align_hint(like, like_what):
    """How to put a raster onto `like`'s grid: gdalwarp's options for a north-up grid, and the QGIS tool."""
    tools = f"QGIS's Align rasters with the {like_what} as the reference layer and nearest-neighbour resampling"
    transform = like.geotransform
    if transform is None or (transform[2], transform[4]) != (0, 0):
        return f" ({tools})"
    xs = (transform[0], transform[0] + like.width * transform[1])
    ys = (transform[3], transform[3] + like.height * transform[5])
    return (f" (gdalwarp -r near -te {min(xs):.10g} {min(ys):.10g} {max(xs):.10g} {max(ys):.10g} "
            f"-ts {like.width} {like.height}, in the {like_what}'s CRS, or {tools})")


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


def raster_output_format(path, bands=1, name="the output"):
    """(GDAL driver name, creation options) for a raster output, from its extension; OutputError when FERS
    cannot write that format. Checked before a run's first pass, and again by RasterWriter.

    Outputs are written block by block into a file created empty, so only formats GDAL can create that way
    qualify: never a GeoTIFF under another format's name. `bands`: the output's band count.
    """
    extension = os.path.splitext(str(path))[1].lower()
    known = RASTER_OUTPUT_FORMATS.get(extension)
    if known is not None:
        if bands > 1 and extension in SINGLE_BAND_ONLY:
            raise OutputError(f"{capitalised(name)} '{path}' has {bands} bands, but {SINGLE_BAND_ONLY[extension]}: "
                              "write it as a .tif (GeoTIFF), .img or ENVI file instead.")
        return known
    raise OutputError(f"{capitalised(name)} '{path}': {_unsupported_format(extension)}")


def check_raster_outputs(outputs):
    """raster_output_format of each (name, path, band count) raster output of a run (empty paths skipped)."""
    for name, path, bands in outputs:
        if path:
            raster_output_format(path, bands, name)



def _unsupported_format(extension):
    """Why FERS cannot write a raster with this extension, and what to do instead (a sentence or two)."""
    supported = f"use one of {SUPPORTED_OUTPUTS}"
    if not extension:
        return f"the name has no extension, so it names no raster format: add one of {SUPPORTED_OUTPUTS}."
    if extension == ".vrt":
        return ("a VRT (.vrt) only describes other rasters and holds no pixels of its own, so the results cannot be "
                f"written into one: {supported}; if you need a VRT, build it on that file afterwards (gdalbuildvrt, "
                "or QGIS's Build virtual raster).")
    driver = _driver_for_extension(extension)
    if driver is not None and not driver.GetMetadataItem(gdal.DCAP_CREATE) and \
            driver.GetMetadataItem(gdal.DCAP_CREATECOPY):
        single = " (one band only)" if driver.ShortName == "AAIGrid" else ""
        return (f"{driver.LongName}{single} ({extension}) files can only be copied whole from a finished raster "
                f"(GDAL's {driver.ShortName} driver cannot write block by block, as FERS writes its outputs): write "
                f"a .tif, then convert it with gdal_translate -of {driver.ShortName}, or QGIS's Translate (Convert "
                f"format); or {supported}.")
    what = f"{driver.LongName} ({extension}) is not among the formats FERS writes" if driver is not None else \
        f"'{extension}' names no raster format FERS writes"
    return f"{what}: {supported}."


def _driver_for_extension(extension):
    for index in range(gdal.GetDriverCount()):
        driver = gdal.GetDriver(index)
        if not driver.GetMetadataItem(gdal.DCAP_RASTER):
            continue
        extensions = (driver.GetMetadataItem(gdal.DMD_EXTENSIONS) or "").lower().split()
        if extension.lstrip(".") in extensions:
            return driver
    return None


class RasterWriter:
    """Writes a raster under a temporary name; `commit()` renames it into place.

    Used as a context manager: leaving the block without commit() (an error or a cancel)
    deletes the temporary file, so the destination is never half-written.
    """

    def __init__(self, path, width, height, bands=1, data_type=gdal.GDT_Float32, geotransform=None,
                 projection="", nodata=SCORE_NODATA, band_names=None):
        self.path = str(path)
        folder = output_folder(self.path)
        driver_name, options = raster_output_format(self.path, bands)
        self._driver = gdal.GetDriverByName(driver_name)
        self._output = AtomicOutput(self.path)  # unique to this run; deleted on abort, signals and failures
        self.temp_path = self._output.path
        self.needed_bytes = width * height * bands * gdal.GetDataTypeSize(data_type) // 8
        try:
            self._dataset = self._driver.Create(self.temp_path, width, height, bands, data_type, options=options)
        except RuntimeError as error:
            self.abort()
            failure = write_failure(error, self.path, self.needed_bytes, always=False)
            raise failure or InputError(f"Cannot create the output file in '{folder}' ({str(error).strip()}): "
                                        "choose an output location you can write to, with enough free space.") \
                from None
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
        try:
            for index in range(array.shape[0]):
                self._dataset.GetRasterBand(index + 1).WriteArray(array[index], window.col, window.row)
        except (RuntimeError, OSError) as error:  # GDAL's write errors (a full disk, a file-size limit)
            self._fail(error)

    def set_metadata(self, metadata):
        self._dataset.SetMetadata({str(k): str(v) for k, v in metadata.items()})

    def commit(self):
        """Flush, close and move the finished file (and any sidecar files) to the destination."""
        try:
            gdal.ErrorReset()
            self._dataset.FlushCache()
            self._close()  # closing writes the last blocks and the header: its errors are only recorded
            if gdal.GetLastErrorType() >= gdal.CE_Failure:
                raise RuntimeError(gdal.GetLastErrorMsg())
        except (RuntimeError, OSError) as error:
            self._fail(error)
        self._output.commit()
        self._committed = True

    def _fail(self, error):
        """Delete the temporary file and raise the OutputError that says why writing failed."""
        written = sum(os.path.getsize(path) for path in self._output.files() if os.path.isfile(path))
        error.__traceback__ = None  # its frames hold GDAL band objects, which keep the dataset open
        self.abort()
        raise write_failure(error, self.path, self.needed_bytes, written_bytes=written) from None

    def abort(self):
        """Delete the temporary file and its sidecars (safe to call twice)."""
        if self._dataset is not None:  # closing a file that failed to write fails again: not worth a traceback
            gdal.PushErrorHandler("CPLQuietErrorHandler")
            try:
                self._close()
            finally:
                gdal.PopErrorHandler()
        self._output.remove()

    def _close(self):
        """Close the dataset; an error while closing (GDAL raises it where nobody can catch it) is left in
        gdal.GetLastErrorType() instead of being printed as a traceback."""
        hook, sys.unraisablehook = sys.unraisablehook, lambda *_: None
        try:
            self._dataset = None
        finally:
            sys.unraisablehook = hook

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if not self._committed:
            self.abort()

