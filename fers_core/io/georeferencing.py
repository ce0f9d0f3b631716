"""A raster's georeferencing, carried to the outputs made from it, and pixel positions in map coordinates.

Three kinds, as GDAL and QGIS know them: a geotransform with a CRS (orthorectified products); ground control
points with their CRS (GCPs: scenes in sensor geometry, georeferenced by tie points); rational polynomial
coefficients (the RPC metadata domain of satellite level-1 products). QGIS draws a raster without a
geotransform but with GCPs or RPCs through a warped view of it, and a raster without any georeferencing with
x = column and y = -row. Outputs copy all three, so each draws where its input draws; `PixelToMap` gives the
coordinates of pixel positions where QGIS draws them, for polygons and centroids. Geolocation arrays (the
GEOLOCATION domain: a longitude and a latitude raster per pixel, as in swath products) are copied to the
outputs too, for `gdalwarp -geoloc`; QGIS 3.22 does not draw by them, so polygons do not use them.
"""

from dataclasses import dataclass

import numpy as np
from osgeo import gdal, osr

from ..errors import InputError

gdal.UseExceptions()

UNGEOREFERENCED = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # where QGIS draws a raster without any georeferencing
PIXEL_LINE = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # GDAL's pixel/line coordinates


@dataclass(frozen=True)
class Georeferencing:
    """What places a raster on the map: `geotransform` (None when absent) and `projection` (WKT, '' when none),
    or `gcps` ((x, y, z, pixel, line) each) in `gcp_projection`, or `rpc` (the RPC domain's items); and
    `geolocation` (the GEOLOCATION domain's items, naming the longitude and latitude rasters)."""

    geotransform: tuple = None
    projection: str = ""
    gcps: tuple = ()
    gcp_projection: str = ""
    rpc: tuple = ()
    geolocation: tuple = ()

    @classmethod
    def of(cls, dataset) -> "Georeferencing":
        """The georeferencing of an open GDAL dataset."""
        gcps = tuple((g.GCPX, g.GCPY, g.GCPZ, g.GCPPixel, g.GCPLine) for g in dataset.GetGCPs() or ())
        return cls(geotransform=dataset.GetGeoTransform(can_return_null=True),
                   projection=dataset.GetProjection() or "",
                   gcps=gcps, gcp_projection=(dataset.GetGCPProjection() or "") if gcps else "",
                   rpc=tuple(sorted((dataset.GetMetadata("RPC") or {}).items())),
                   geolocation=tuple(sorted((dataset.GetMetadata("GEOLOCATION") or {}).items())))

    @property
    def by_points(self) -> bool:
        """Whether pixels are placed by GCPs or RPCs (no geotransform): map positions need a transformer."""
        return self.geotransform is None and bool(self.gcps or self.rpc)

    @property
    def crs(self) -> str:
        """The WKT of the map coordinates PixelToMap gives ('' when the raster has none)."""
        if self.geotransform is not None or not self.by_points:
            return self.projection
        if self.gcps:
            return self.gcp_projection
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(4326)  # RPCs map to WGS 84 longitude and latitude
        return srs.ExportToWkt()

    def apply(self, dataset) -> None:
        """Give a GDAL dataset being created this georeferencing."""
        if self.geotransform is not None:
            dataset.SetGeoTransform(self.geotransform)
        if self.projection:
            dataset.SetProjection(self.projection)
        if self.gcps and self.geotransform is None:
            dataset.SetGCPs([gdal.GCP(*point) for point in self.gcps], self.gcp_projection)
        if self.rpc:
            dataset.SetMetadata(dict(self.rpc), "RPC")
        if self.geolocation:
            dataset.SetMetadata(dict(self.geolocation), "GEOLOCATION")


class PixelToMap:
    """Map coordinates of pixel positions (column, row; 0, 0 is the top left corner of the top left pixel),
    where QGIS draws them: through the geotransform, through a GCP or RPC transformer as QGIS's warped view,
    or as column, -row for a raster without georeferencing."""

    def __init__(self, georeferencing: Georeferencing):
        self.georeferencing = georeferencing
        self._transformer = None
        self.failure = ""  # why GDAL could not build the raster's GCP or RPC transformer ('' when it could)
        if georeferencing.by_points:
            self._holder = gdal.GetDriverByName("MEM").Create("", 1, 1, 1, gdal.GDT_Byte)
            georeferencing.apply(self._holder)
            options = []
            if georeferencing.rpc and not georeferencing.gcps:  # GDAL's order: GCPs first, then RPCs
                rpc = dict(georeferencing.rpc)
                height = rpc.get("HEIGHT_DEFAULT", rpc.get("HEIGHT_OFF"))  # the terrain height QGIS's view uses
                options = ["METHOD=RPC"] + ([f"RPC_HEIGHT={height.split()[0]}"] if height else [])
            try:
                self._transformer = gdal.Transformer(self._holder, None, options)
            except RuntimeError as error:  # e.g. fewer than 3 GCPs: QGIS then draws the raster ungeoreferenced
                self.failure = str(error).strip() or "GDAL could not build the transformer"

    @property
    def geotransform(self) -> tuple:
        """The affine map of pixel positions (None when a GCP or RPC transformer places them)."""
        if self._transformer is not None:
            return None
        if self.failure:
            return UNGEOREFERENCED
        return self.georeferencing.geotransform or UNGEOREFERENCED

    @property
    def crs(self) -> str:
        """The WKT of the coordinates points() gives ('' when none, or when the GCPs or RPCs could not be used)."""
        return "" if self.failure else self.georeferencing.crs

    def points(self, cols, rows) -> tuple:
        """(x, y) arrays of map coordinates of the pixel positions `cols`, `rows` (arrays of one shape)."""
        return self._apply(cols, rows, inverse=False)

    def pixels(self, xs, ys) -> tuple:
        """(cols, rows) arrays of the pixel positions of map coordinates `xs`, `ys`: the inverse of points()."""
        return self._apply(xs, ys, inverse=True)

    def _apply(self, first, second, inverse):
        first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
        if self._transformer is None:
            gt = gdal.InvGeoTransform(self.geotransform) if inverse else self.geotransform
            return gt[0] + first * gt[1] + second * gt[2], gt[3] + first * gt[4] + second * gt[5]
        if first.size == 0:
            return first.copy(), second.copy()
        positions = np.column_stack([first.ravel(), second.ravel()]).tolist()
        moved, ok = self._transformer.TransformPoints(inverse, positions)
        moved = np.asarray(moved, dtype=np.float64).reshape(-1, 3)
        if not all(ok):
            raise InputError(f"{len(ok) - sum(ok)} position(s) could not be moved between pixels and the map through "
                             "the raster's GCPs or RPCs: check them (gdalinfo), or use an orthorectified copy of the "
                             "raster (gdalwarp)")
        return moved[:, 0].reshape(first.shape), moved[:, 1].reshape(first.shape)
