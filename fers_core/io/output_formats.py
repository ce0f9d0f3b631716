"""The raster formats FERS writes, chosen by the output's extension, and why any other cannot be written.

Outputs are written block by block into a file created empty, so only formats GDAL can create that way
qualify; the check runs before a run's first pass, so a run never fails at its end for its output's name.
"""

import os

from osgeo import gdal

from ..errors import OutputError, capitalised

gdal.UseExceptions()

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


PLACEMENT_LOST = {".nc": "a netCDF file cannot hold the ground control points or RPCs that place it on the map"}


def check_outputs_keep_placement(outputs, source):
    """OutputError for a (name, path) raster output in a format that cannot hold the GCPs or RPCs that place the
    raster `source` (a path; None or an unreadable one: nothing to check), before the run's first pass."""
    from .georeferencing import Georeferencing
    from .reader import quiet_open

    lossy = [(name, path) for name, path in outputs
             if path and os.path.splitext(str(path))[1].lower() in PLACEMENT_LOST]
    dataset = quiet_open(str(source), gdal.OF_RASTER) if lossy and source else None
    if dataset is None or not Georeferencing.of(dataset).by_points:
        return
    raise placement_lost(*lossy[0])


def placement_lost(name, path):
    """The OutputError for an output `path` whose format cannot hold the GCPs or RPCs that place its input."""
    return OutputError(f"{capitalised(name)} '{path}': the input is placed by ground control points or RPCs, and "
                       f"{PLACEMENT_LOST[os.path.splitext(str(path))[1].lower()]}: write a .tif (or .img, ENVI) "
                       "instead.")


def _unsupported_format(extension):
    """Why FERS cannot write a raster with this extension, and what to do instead (a sentence or two)."""
    supported = f"use one of {SUPPORTED_OUTPUTS}"
    if not extension:
        return f"the name has no extension, so it names no raster format: add one of {SUPPORTED_OUTPUTS}."
    if extension == ".hdr":
        return ("a .hdr is an ENVI header, written beside the ENVI file it describes: name the output '.bsq' (or "
                f"'.bil', '.bip', '.dat'), and its .hdr comes with it; or {supported}.")
    if extension in (".xml", ".ovr", ".msk", ".aux"):
        return (f"'{extension}' names a file GDAL writes beside a raster (statistics, overviews, a mask), not a "
                f"raster: {supported}.")
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
