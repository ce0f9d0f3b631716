"""Crash-safe GDAL raster writing: a temporary file beside the destination, renamed into place when complete,
so a crash or a cancel never leaves a half-written output."""

import contextlib
import os
import sys
import threading

import numpy as np
from osgeo import gdal

from ..errors import InputError, OutputError
from .atomic import AtomicOutput
from .georeferencing import Georeferencing
from .output_formats import PLACEMENT_LOST, placement_lost, raster_output_format
from .windows import Window
from .write_failures import free_bytes, megabytes, write_failure

gdal.UseExceptions()

SCORE_NODATA = -9999.0


def output_folder(path: str) -> str:
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


_quiet = {"depth": 0, "hook": None}
_quiet_lock = threading.Lock()


@contextlib.contextmanager
def quiet_destructors():
    """Inside the block, an error raised by a destructor (a GDAL dataset closed after a failed write fails again
    as it closes, where nobody can catch it) is not printed as "Exception ignored in ...". Blocks of several threads
    may overlap: the hook is put back when the last one ends."""
    with _quiet_lock:
        if _quiet["depth"] == 0:
            _quiet["hook"], sys.unraisablehook = sys.unraisablehook, lambda *_: None
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                sys.unraisablehook = _quiet["hook"]


UNCOMPRESSED_DRIVERS = {"HFA", "ENVI"}  # formats whose file holds every pixel: the room needed is known up front


class RasterWriter:
    """Writes a raster under a temporary name; `commit()` renames it into place.

    Used as a context manager: leaving the block without commit() (an error or a cancel)
    deletes the temporary file, so the destination is never half-written.
    """

    def __init__(self, path: str, width: int, height: int, bands: int = 1, data_type=gdal.GDT_Float32,
                 georeferencing: Georeferencing = None, nodata: float = SCORE_NODATA, band_names: list = None):
        self.path = str(path)
        folder = output_folder(self.path)
        driver_name, options = raster_output_format(self.path, bands)
        driver = gdal.GetDriverByName(driver_name)
        self._output = AtomicOutput(self.path)  # unique to this run; deleted on abort, signals and failures
        self.temp_path = self._output.path
        self.needed_bytes = width * height * bands * gdal.GetDataTypeSize(data_type) // 8
        self._dataset = None  # abort() may run before the dataset exists
        free = free_bytes(folder)
        if driver_name in UNCOMPRESSED_DRIVERS and free is not None and free < self.needed_bytes:
            # these write every byte, and Erdas Imagine does not report a write the full disk refused
            self._output.remove()
            need, have = megabytes(self.needed_bytes), megabytes(free)
            if need == have:  # rounded alike: say it in kB
                need, have = f"{self.needed_bytes / 1024:,.0f} kB", f"{free / 1024:,.0f} kB"
            raise OutputError(f"'{self.path}' needs about {need} (uncompressed: this format holds every pixel), but "
                              f"only {have} are free there: free some space, or choose another location or a .tif "
                              "(compressed), then run again.")
        try:
            self._dataset = driver.Create(self.temp_path, width, height, bands, data_type, options=options)
        except RuntimeError as error:
            self.abort()
            failure = write_failure(error, self.path, self.needed_bytes, always=False)
            raise failure or InputError(f"Cannot create the output file in '{folder}' ({str(error).strip()}): "
                                        "choose an output location you can write to, with enough free space.") \
                from None
        if driver_name == "ENVI":  # its header's description is the dataset's: the final name, not the temporary
            self._dataset.SetDescription(self.path)
        if georeferencing is not None:
            if georeferencing.by_points and os.path.splitext(self.path)[1].lower() in PLACEMENT_LOST:
                self.abort()  # checked before the run (check_outputs_keep_placement); for callers of the engine
                raise placement_lost("the output", self.path)
            georeferencing.apply(self._dataset)
        for index in range(bands):
            band = self._dataset.GetRasterBand(index + 1)
            if nodata is not None:
                band.SetNoDataValue(nodata)
            if band_names:
                band.SetDescription(band_names[index])
        self._committed = False

    @classmethod
    def like(cls, reader, path: str, bands: int = 1, data_type=gdal.GDT_Float32, nodata: float = SCORE_NODATA,
             band_names: list = None) -> "RasterWriter":
        """A writer on the same grid as a RasterReader: its size and georeferencing (geotransform and CRS, GCPs,
        RPCs)."""
        return cls(path, reader.width, reader.height, bands, data_type, reader.georeferencing, nodata, band_names)

    def write(self, window: Window, array) -> None:
        """Write a (rows, cols) or (bands, rows, cols) array at the window."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        try:
            for index in range(array.shape[0]):
                self._dataset.GetRasterBand(index + 1).WriteArray(array[index], window.col, window.row)
        except (RuntimeError, OSError) as error:  # GDAL's write errors (a full disk, a file-size limit)
            self._fail(error)

    def set_band_wavelengths(self, wavelengths_nm) -> None:
        """Each band's centre wavelength (nm) in its metadata, as GDAL, QGIS and the reader read it."""
        for index, wavelength in enumerate(wavelengths_nm):
            band = self._dataset.GetRasterBand(index + 1)
            band.SetMetadataItem("wavelength", f"{float(wavelength):g}")
            band.SetMetadataItem("wavelength_units", "Nanometers")

    def set_metadata(self, metadata: dict) -> None:
        self._dataset.SetMetadata({str(k): str(v) for k, v in metadata.items()})

    def commit(self) -> None:
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
        written = max([os.path.getsize(path) for path in self._output.files() if os.path.isfile(path)], default=0)
        error.__traceback__ = None  # its frames hold GDAL band objects, which keep the dataset open
        self.abort()
        raise write_failure(error, self.path, self.needed_bytes, written_bytes=written) from None

    def abort(self) -> None:
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
        with quiet_destructors():
            self._dataset = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if not self._committed:
            self.abort()
