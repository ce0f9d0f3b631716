"""Block-wise GDAL raster reading: selected bands, a validity mask per block, the values as stored.

Reading honours band selection, per-band nodata, NaN/inf, a per-dataset GDAL mask and scale/offset
metadata; signed bytes are read as int8 whatever GDAL calls them; band wavelengths come from GDAL band
metadata or an ENVI header. With no band selection, the bands the raster's metadata marks bad (ENVI ``bbl`` = 0)
are left out.
"""

import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array

from ..errors import InputError
from .band_list import check_each_band_once
from .band_metadata import read_bad_band_flags, read_wavelengths
from .georeferencing import Georeferencing
from .windows import DEFAULT_BLOCK_MB, Window, block_windows

gdal.UseExceptions()


_SUBDATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:")


def is_raster_source(value) -> bool:
    """True for an existing file, or a GDAL subdataset name or virtual file path GDAL opens (e.g.
    NETCDF:"scene.nc":radiance, /vsizip//data/scenes.zip/scene.tif).

    The algorithms take such values as given, without loading them as QGIS layers (loading computes a
    histogram that GDAL saves as '<input>.aux.xml' beside the input).
    """
    if not isinstance(value, str) or not value:
        return False
    if os.path.isfile(value):
        return True
    virtual = value.startswith("/vsi")
    if not virtual and (not _SUBDATASET_NAME.match(value) or os.path.splitdrive(value)[0]):  # a drive is no driver
        return False
    return quiet_open(value) is not None


def quiet_open(name, flags=gdal.OF_RASTER):
    """The GDAL dataset `name` opens as (read-only, `flags` such as gdal.OF_VECTOR), or None; GDAL says nothing."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        return gdal.OpenEx(str(name), flags | gdal.OF_READONLY)
    except RuntimeError:
        return None
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
            f"({gdal.GetDataTypeName(band.DataType)}), and FERS works on real values only: leave it out with "
            "BANDS if the other bands are real, or convert the raster first, e.g. to its magnitude with "
            "gdal_calc.py -A input --calc=\"numpy.abs(A)\" --type=Float32 --allBands=A --outfile=magnitude.tif, or "
            "with QGIS's Raster calculator."
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


def nodata_values(values) -> tuple:
    """Extra nodata values as a tuple of floats: None or empty = none, one number or several; NaN is dropped (it is
    never valid anyway). A string is refused (it is no list of numbers)."""
    if values is None:
        return ()
    if isinstance(values, (str, bytes)):
        raise InputError(f"Nodata values are numbers, not the text {values!r}.")
    items = values if isinstance(values, (list, tuple, set, np.ndarray)) else (values,)
    return tuple(dict.fromkeys(float(value) for value in items if not np.isnan(float(value))))


FILL_MAGNITUDE = 1e30
"""Values at least this large in magnitude are fill, never measurements (float32's maximum 3.4e38, netCDF's default
fill 9.97e36, 1e30): invalid like NaN, so one such pixel cannot swamp the statistics of every other."""


def _check_geotransform(path, geotransform):
    """InputError for a geotransform holding NaN or an infinity: no pixel of the raster could be placed (its outputs
    would carry it, and its objects' polygons cannot be built)."""
    if geotransform is not None and not all(math.isfinite(value) for value in geotransform):
        shown = ", ".join(f"{value:g}" for value in geotransform)
        raise InputError(f"'{os.path.basename(path)}' has a geotransform that is not a finite number ({shown}): its "
                         f"pixels cannot be placed. Repair it (gdal_edit.py -a_ullr ULX ULY LRX LRY '{path}', or "
                         "-unsetgt to drop it), then run again.")


class RasterReader:
    """Reads selected bands of a raster block by block, with a validity mask per block.

    `bands` are 1-based band numbers (None = every band not marked bad: `read_bad_band_flags`). A pixel is
    valid when every selected band is finite, below FILL_MAGNITUDE in magnitude and differs from that band's
    nodata value and from each of `nodata` (extra nodata values for every band: fers' INPUT_NODATA, a QGIS layer's
    additional nodata), and the dataset mask (if any) is set. `skipped_bad_bands`: the marked bands a default selection
    left out; `selected_bad_bands`: the marked bands an explicit selection includes; `bad_band_problem`: why the
    ENVI header's bad-band list was ignored ("has 3 values for 4 bands"), or None.
    """

    def __init__(self, path: str, bands: list = None, direct_io: bool = False, nodata: tuple = ()):
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
        total = self.total_bands = ds.RasterCount  # every band of the raster, used or not
        if total == 0:
            raise InputError(_no_bands_message(self.path, ds.GetSubDatasets()))
        marked, self.bad_band_problem = read_bad_band_flags(ds)
        self.skipped_bad_bands, self.selected_bad_bands = [], []
        alpha = [b for b in range(1, total + 1) if ds.GetRasterBand(b).GetColorInterpretation() == gdal.GCI_AlphaBand]
        self.alpha_band = alpha[0] if alpha else None  # transparency (gdalwarp -dstalpha): 0 = no data, never data
        if bands is None or len(bands) == 0:
            bands = [b for b in range(1, total + 1) if not marked[b - 1] and b not in alpha]
            self.skipped_bad_bands = [b for b in range(1, total + 1) if marked[b - 1] and b not in alpha]
            if not bands:
                raise InputError(
                    f"Every band of '{os.path.basename(self.path)}' is marked bad in its metadata (bbl = 0): "
                    "list the bands to use in BANDS, or correct the raster's bad-band list."
                )
        bad = [b for b in bands if not 1 <= int(b) <= total]
        if bad:
            raise InputError(
                f"Band number(s) {bad} are out of range: '{os.path.basename(self.path)}' has bands 1 to {total}."
            )
        listed = [int(b) for b in bands]
        check_each_band_once(listed)
        self.bands = sorted(listed)  # the file's band order, the order of its spectrum, however BANDS lists them
        self.listed_out_of_order = listed != self.bands
        if not self.skipped_bad_bands:
            self.selected_bad_bands = [b for b in self.bands if marked[b - 1]]
        gdal_bands = [ds.GetRasterBand(b) for b in self.bands]
        self.nodata = [band.GetNoDataValue() for band in gdal_bands]
        self.extra_nodata = nodata_values(nodata)
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
        if self._dataset_mask and flags & gdal.GMF_ALPHA:
            self.alpha_band = None  # GDAL's own mask is the alpha band already (rasters of 2 or 4 bands)
        self.georeferencing = Georeferencing.of(ds)
        _check_geotransform(self.path, self.georeferencing.geotransform)
        self.geotransform = self.georeferencing.geotransform
        self.projection = self.georeferencing.projection
        self.wavelengths_nm, self.wavelength_problem = read_wavelengths(ds, self.bands)  # problem: why not used

    @property
    def band_count(self) -> int:
        return len(self.bands)

    @property
    def pixel_count(self) -> int:
        return self.width * self.height

    @property
    def block_shape(self) -> tuple:
        """(rows, cols) of the raster's GDAL blocks (of its first selected band)."""
        cols, rows = self._dataset.GetRasterBand(self.bands[0]).GetBlockSize()
        return rows, cols

    def windows(self, budget_mb: float = DEFAULT_BLOCK_MB, bytes_per_value: int = 8) -> list:
        """Windows covering the raster, each holding at most budget_mb of data, aligned to GDAL blocks
        (windows.block_windows: full-width strips when a whole row of blocks fits in the budget, else
        block-aligned tiles)."""
        rows, cols = self.block_shape
        return block_windows(self.width, self.height, (cols, rows), self.band_count * bytes_per_value,
                             budget_mb * 2**20)


    def read(self, window: Window, dtype=np.float64, reuse: bool = False, shape: tuple = None) -> tuple:
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
        for index, plane in enumerate(raw):
            usable = self._usable(index, plane)
            if usable is not None:
                valid &= usable
        if dtype is None:
            dtype = np.float64 if self._scaled else raw.dtype
        data = raw.astype(dtype, copy=False)
        if self._scaled:
            data = data * np.asarray(self.scales, dtype)[:, None, None] + np.asarray(self.offsets, dtype)[:, None, None]
            if data.dtype.kind in "fc":  # a huge stored value times its scale may overflow
                for band in data:
                    valid &= np.isfinite(band)
        if self._dataset_mask:
            valid &= self._mask(window, rows, cols)
        if self.alpha_band is not None:
            valid &= self._alpha_shown(window, rows, cols)
        return data, valid

    def read_stored(self, window: Window, shape: tuple = None) -> tuple:
        """(values as stored, of shape (bands, rows, cols); declared: where the raster's nodata values, the extra
        nodata values or its mask mark a pixel as missing, of shape (rows, cols)); `shape` as for read. No scale,
        offset or fill magnitude applied: what the file holds, for io.fill_values."""
        rows, cols = (window.rows, window.cols) if shape is None else shape
        raw = self._read_raw(window, rows, cols, False)
        declared = np.zeros((rows, cols), dtype=bool)
        for index, nodata in enumerate(self.nodata):
            for value in self._nodata_values(nodata, raw.dtype):
                declared |= raw[index] == value
        if self._dataset_mask:
            declared |= ~self._mask(window, rows, cols)
        if self.alpha_band is not None:
            declared |= ~self._alpha_shown(window, rows, cols)
        return raw, declared

    def _usable(self, index, plane):
        """Whether each stored value of band `index`'s `plane` is valid: not the band's nodata nor an extra nodata
        value, and for a floating-point band finite and below FILL_MAGNITUDE in magnitude (NaN and inf compare
        False: both tests at once). None when no test applies (an integer band without nodata: all valid)."""
        values = self._nodata_values(self.nodata[index], plane.dtype)
        if plane.dtype.kind in "fc":
            usable = (plane < FILL_MAGNITUDE) & (plane > -FILL_MAGNITUDE)
        elif values:
            usable, values = plane != values[0], values[1:]
        else:
            return None
        for value in values:
            usable &= plane != value
        return usable

    def _mask(self, window, rows, cols):
        """The dataset mask of `window` at (rows, cols), True where set."""
        mask = self._dataset.GetRasterBand(self.bands[0]).GetMaskBand()
        with self._read_errors(window):
            return mask.ReadAsArray(window.col, window.row, window.cols, window.rows, buf_xsize=cols,
                                    buf_ysize=rows) > 0

    def _alpha_shown(self, window, rows, cols):
        """Where the alpha band of `window` at (rows, cols) shows the pixel (alpha > 0)."""
        band = self._dataset.GetRasterBand(self.alpha_band)
        with self._read_errors(window):
            return band.ReadAsArray(window.col, window.row, window.cols, window.rows, buf_xsize=cols,
                                    buf_ysize=rows) > 0

    def band_validity(self, window: Window) -> np.ndarray:
        """Per selected band, whether any pixel of `window` holds a valid value in it (`_usable`)."""
        raw = self._read_raw(window, window.rows, window.cols, False)
        usable = (self._usable(index, plane) for index, plane in enumerate(raw))
        return np.array([found is None or bool(found.any()) for found in usable], dtype=bool)

    def _nodata_values(self, nodata, dtype):
        """A band's nodata value and the extra nodata values, in the stored type `dtype` (those that can match)."""
        values = (stored_nodata(value, dtype) for value in (nodata, *self.extra_nodata))
        return list(dict.fromkeys(value for value in values if value is not None))

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
        with self._read_errors(window):
            self._dataset.ReadAsArray(window.col, window.row, window.cols, window.rows, buf_xsize=cols,
                                      buf_ysize=rows, band_list=self.bands, buf_obj=out)
        if all_signed:
            return out.view(np.int8)
        for index in self._signed_bytes:
            plane = out[index]
            plane[plane >= 128] -= 256
        return out

    @contextmanager
    def _read_errors(self, window):
        """GDAL's read errors (a damaged or truncated file, a VRT whose source is gone) as one InputError sentence."""
        try:
            yield
        except RuntimeError as error:
            reason = (str(error).strip() or gdal.GetLastErrorMsg() or "unknown GDAL error").rstrip(".")
            raise InputError(
                f"Cannot read '{os.path.basename(self.path)}' at rows {window.row + 1}-{window.row + window.rows}, "
                f"columns {window.col + 1}-{window.col + window.cols}: {reason}. The file may be damaged or truncated, "
                "or a file it refers to (a VRT's source) may be missing: check it with 'gdalinfo -checksum', or "
                "copy it again."
            ) from None

    def close(self) -> None:
        self._dataset = None
        self._buffer = None

    def __enter__(self) -> "RasterReader":
        return self

    def __exit__(self, *exc):
        self.close()


def stored_nodata(nodata, dtype):
    """`nodata` in the stored type `dtype`, or None when no value can match it (none, NaN: NaN is never valid
    anyway, or a value integers of `dtype` cannot hold)."""
    if nodata is None or np.isnan(nodata):
        return None
    if dtype.kind in "iu":  # compare in the stored type
        info = np.iinfo(dtype)
        if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
            return None
        return dtype.type(nodata)
    if dtype.kind == "f":  # in the stored precision, as GDAL compares it (-0.005 as float32)
        with np.errstate(over="ignore"):
            return dtype.type(nodata)
    return nodata
