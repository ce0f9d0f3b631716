"""Whether two rasters lie on one pixel grid (size, CRS, geotransform), and opening a mask that must.

Rasters are combined pixel by pixel, so a shifted origin, another pixel size or a rotation would pair each
pixel with the wrong one without a word: such rasters are refused with the gdalwarp options, or the QGIS
tool, that put them on the reference's grid.
"""

import os

import numpy as np
from osgeo import gdal, osr

from ..errors import InputError
from .georeferencing import PixelToMap
from .reader import RasterReader, quiet_open

gdal.UseExceptions()

GRID_TOLERANCE_PX = 0.01  # how far (in pixels) two grids' corners may be apart and still be the same grid


def read_mask(path, like, what="mask", like_what="input"):
    """Open a mask raster that must be on the grid of `like` (a RasterReader); returns a RasterReader.

    A vector file (target polygons, say) is refused with how to rasterise it onto the grid."""
    try:
        mask = RasterReader(path, bands=[1])
    except InputError:
        check_not_vector(path, like, what, like_what)
        raise
    try:
        check_same_grid(mask, like, what, like_what)
        if mask.total_bands > 1:  # which band marks the exclusions is not known: using band 1 silently was a guess
            name = os.path.basename(str(path))
            raise InputError(f"The {what} '{name}' has {mask.total_bands} bands, but a {what} has one (non-zero = "
                             f"left out of the background): extract the band you mean, e.g. gdal_translate -b 1 "
                             f"'{name}' {what.replace(' ', '_')}_band1.tif, and give that file.")
    except InputError:
        mask.close()
        raise
    return mask


def check_not_vector(path, like, what="mask", like_what="input"):
    """InputError saying how to rasterise it onto `like`'s grid when `path` is a vector file (polygons given where a
    raster on that grid is needed); nothing otherwise."""
    if quiet_open(path, gdal.OF_VECTOR) is None:
        return
    name = os.path.basename(str(path))
    extent = ""
    if like.geotransform is not None and like.geotransform[2] == like.geotransform[4] == 0:
        x0, dx, _, y0, _, dy = like.geotransform
        xs, ys = sorted((x0, x0 + dx * like.width)), sorted((y0, y0 + dy * like.height))
        extent = f" -te {xs[0]:.10g} {ys[0]:.10g} {xs[1]:.10g} {ys[1]:.10g}"
    raise InputError(
        f"The {what} '{name}' is a vector file, but the {what} must be a raster on the {like_what}'s grid: rasterise "
        f"it first (1 inside the polygons, 0 elsewhere), e.g. gdal_rasterize -burn 1 -init 0 -ot Byte "
        f"-ts {like.width} {like.height}{extent} '{name}' {what.replace(' ', '_')}.tif, or with QGIS's Rasterize "
        f"(vector to raster) on the {like_what}'s extent and size.")


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
    difference = _grid_difference(reader.geotransform, like.geotransform, like.width, like.height) or \
        _placement_difference(reader.georeferencing, like.georeferencing, like.width, like.height)
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


def _placement_difference(georeferencing, like, width, height):
    """What differs between two grids when either is placed by GCPs or RPCs ('' when both place a 3 x 3 lattice of
    pixel positions within GRID_TOLERANCE_PX of `like`'s pixels of each other, or either has no georeferencing).
    Both forward maps are compared on the map, in `like`'s pixels there: a GCP fit's inverse is not exact."""
    if not (georeferencing.by_points or like.by_points) or _same_placement(georeferencing, like):
        return ""
    mine, theirs = PixelToMap(georeferencing), PixelToMap(like)
    if not (mine.crs and theirs.crs):
        return ""  # one without (usable) georeferencing lies on the other's grid
    if not _same_crs(mine.crs, theirs.crs):
        return "its GCPs or RPCs are in another CRS"
    cols, rows = (grid.ravel() for grid in np.meshgrid([0.0, width / 2, width], [0.0, height / 2, height]))
    here, there = np.array(mine.points(cols, rows)), np.array(theirs.points(cols, rows))
    pixel = np.minimum(np.hypot(*(np.array(theirs.points(cols + 1, rows)) - there)),
                       np.hypot(*(np.array(theirs.points(cols, rows + 1)) - there)))
    apart = float(np.max(np.hypot(*(here - there)) / pixel))
    if apart <= GRID_TOLERANCE_PX:
        return ""
    return f"its georeferencing places its pixels up to {apart:.3g} pixels away (GCPs or RPCs)"


def _same_placement(georeferencing, like):
    """Whether two georeferencings hold the same numbers (formats round GCPs and RPCs differently) in one CRS."""
    if georeferencing == like:
        return True
    if (georeferencing.geotransform is None) != (like.geotransform is None) or \
            len(georeferencing.gcps) != len(like.gcps) or dict(georeferencing.rpc).keys() != dict(like.rpc).keys():
        return False
    if georeferencing.gcps and not np.allclose(georeferencing.gcps, like.gcps, rtol=1e-9, atol=1e-6):
        return False
    for key, value in georeferencing.rpc:
        mine, theirs = _numbers(value), _numbers(dict(like.rpc)[key])
        if mine is None or theirs is None or len(mine) != len(theirs) or not np.allclose(mine, theirs, rtol=1e-9):
            if value.strip() != dict(like.rpc)[key].strip():
                return False
    return bool(georeferencing.crs and like.crs and _same_crs(georeferencing.crs, like.crs))


def _numbers(text):
    try:
        return [float(part) for part in str(text).split()]
    except ValueError:
        return None


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
