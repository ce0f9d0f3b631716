"""Anomaly objects: the connected groups of anomaly pixels of a mask, as a GeoPackage of polygons with attributes.

Objects are the connected groups with 8-connectivity (pixels touching by an edge or a corner are one object, so
a thin diagonal target stays one object). A group whose pixels touch only at corners is written as a valid
MultiPolygon. Objects are numbered 1, 2, ... in raster order (top to bottom, then left to right, by their first
pixel) after dropping those smaller than `min_pixels`; the `id` field and the feature id (FID) are that number.
Geometries and centroids lie where QGIS draws the mask's pixels (io.georeferencing: through the geotransform,
the GCPs or RPCs, or at x = column, y = -row without georeferencing). The labelling holds the whole mask in
memory (about 5 bytes per pixel), and the polygons are held once (GDAL's polygonization) and written one object
at a time.
"""

import os
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array, ogr, osr
from scipy import ndimage

from ..errors import InputError, OutputError
from ..feedback import Feedback, ProgressRange
from ..io.atomic import AtomicOutput
from ..io.georeferencing import PIXEL_LINE, UNGEOREFERENCED, PixelToMap
from ..io.reader import RasterReader
from ..io.windows import DEFAULT_BLOCK_MB, Window
from ..io.writer import output_folder, quiet_destructors
from .ground_area import GroundAreas
from .postprocess import score_reader
from .requests import check_polygons_path

ogr.UseExceptions()

POLYGON_FIELDS = ("id", "pixels", "area", "area_m2", "max_score", "mean_score", "centroid_x", "centroid_y")


@dataclass
class PolygonSummary:
    path: str
    objects: int
    dropped_objects: int
    anomaly_pixels: int


def write_polygons(mask_path, score_path, polygons_path, min_pixels=1, feedback=None, block_mb=DEFAULT_BLOCK_MB):
    """Write the connected anomalies of a mask as a GeoPackage of (Multi)Polygons with attributes; a PolygonSummary.

    Fields: id, pixels, area (map units squared), area_m2 (ground area on the CRS's ellipsoid, square metres;
    empty without a CRS), max_score, mean_score (over the object's valid scores), centroid_x, centroid_y (mean
    of the pixel centres, in map coordinates).
    """
    feedback = feedback or Feedback()
    min_pixels = int(min_pixels)
    if min_pixels < 1:
        raise InputError(f"The minimum object size must be at least 1 pixel (got {min_pixels}).")
    check_polygons_path(polygons_path)
    progress = ProgressRange(feedback, 0, 100)
    with RasterReader(mask_path, [1]) as mask, score_reader(score_path) as scores:
        if (mask.width, mask.height) != (scores.width, scores.height):
            raise InputError(
                f"The mask is {mask.width}x{mask.height} pixels but the scores are {scores.width}x{scores.height}: "
                "use the mask made from this score raster."
            )
        whole = Window.whole(mask.height, mask.width)
        data, valid = mask.read(whole, dtype=np.float32)
        anomaly = valid & (data[0] != 0)
        del data, valid
        progress(0.1)
        labels, found = ndimage.label(anomaly, structure=np.ones((3, 3), dtype=bool))
        del anomaly
        labels = labels.astype(np.int32, copy=False)
        sizes = np.bincount(labels.ravel(), minlength=found + 1)
        keep = sizes >= min_pixels
        keep[0] = False
        renumber = np.zeros(found + 1, dtype=np.int32)
        renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels = renumber[labels]
        objects = int(keep.sum())
        progress(0.2)
        georeferencing = mask.georeferencing if mask.georeferencing.crs or not scores.georeferencing.crs \
            else scores.georeferencing
        placement = PixelToMap(georeferencing)
        attributes = _object_attributes(labels, objects, scores, placement, block_mb, progress)
        progress(0.6)
        polygons = _Polygons(labels, objects, placement.geotransform)
        del labels
        projection = placement.crs
        in_pixels = (placement.geotransform == UNGEOREFERENCED  # placed at x = column, y = -row
                     and placement.georeferencing.geotransform is None)
        ground = GroundAreas("" if in_pixels else projection)
        if objects and not ground.usable:
            feedback.info(_no_ground_area_note(projection, in_pixels))
        if placement.failure:
            feedback.warning(f"The mask's GCPs or RPCs cannot place its pixels ({placement.failure}): the polygons "
                             "are in pixel coordinates (x = column, y = -row), where QGIS draws such a raster.")
    progress(0.8)
    _write_geopackage(polygons_path, _features(attributes, polygons, placement, ground), projection)
    progress(1.0)
    dropped = found - objects
    feedback.info(
        f"Polygons: {objects} object(s) of at least {min_pixels} pixel(s)"
        + (f"; {dropped} smaller object(s) dropped." if dropped else ".")
    )
    return PolygonSummary(str(polygons_path), objects, dropped, int(sizes[keep].sum()))


def _no_ground_area_note(projection, in_pixels=False):
    """The log line that says why the polygons' area_m2 field is empty."""
    if in_pixels:
        return ("The mask has no geotransform (nor GCPs or RPCs), so the polygons are in pixel coordinates (x = "
                "column, y = -row, where QGIS draws such a raster) and their area_m2 field (ground area in square "
                "metres) is empty. Georeference the input raster to have ground areas.")
    cause = "has no CRS" if not projection else "has a CRS without an ellipsoid (a local or engineering CRS)"
    return (f"The mask {cause}, so the polygons' area_m2 field (ground area in square metres) is empty; their "
            "area field is in map units squared. Assign the input raster's CRS to have ground areas.")


def _object_attributes(labels, objects, scores, placement, block_mb, progress):
    count = objects + 1
    pixels = np.zeros(count, dtype=np.int64)
    row_sum, col_sum = np.zeros(count), np.zeros(count)
    score_sum = np.zeros(count)
    score_count = np.zeros(count, dtype=np.int64)
    score_max = np.full(count, -np.inf)
    windows = scores.windows(block_mb)
    for index, window in enumerate(windows):
        data, valid = scores.read(window)
        block_labels = labels[window.slices()]
        r, c = np.nonzero(block_labels)
        ids = block_labels[r, c]
        pixels += np.bincount(ids, minlength=count)
        row_sum += np.bincount(ids, weights=r + (window.row + 0.5), minlength=count)
        col_sum += np.bincount(ids, weights=c + (window.col + 0.5), minlength=count)
        use = valid & (block_labels > 0)
        ids, values = block_labels[use], data[0][use]
        score_sum += np.bincount(ids, weights=values, minlength=count)
        score_count += np.bincount(ids, minlength=count)
        present = np.unique(ids)
        if present.size:
            maxima = ndimage.maximum(data[0], np.where(use, block_labels, 0), present)
            score_max[present] = np.maximum(score_max[present], maxima)
        progress(0.2 + 0.4 * (index + 1) / len(windows))
    gt = placement.geotransform
    pixel_area = abs(gt[1] * gt[5] - gt[2] * gt[4]) if gt is not None else None
    counted = np.maximum(pixels[1:], 1)
    centroid_x, centroid_y = placement.points(col_sum[1:] / counted, row_sum[1:] / counted)

    def rows():  # one dict at a time: a list of them all cost about 500 bytes an object
        for ident in range(1, count):
            n = int(pixels[ident])
            scored = int(score_count[ident])
            yield {
                "id": ident,
                "pixels": n,
                "area": n * pixel_area if pixel_area is not None else None,
                "max_score": float(score_max[ident]) if scored else None,
                "mean_score": float(score_sum[ident] / scored) if scored else None,
                "centroid_x": float(centroid_x[ident - 1]),
                "centroid_y": float(centroid_y[ident - 1]),
            }

    return rows()


class _Polygons:
    """The objects' polygons, from gdal.Polygonize with 8-connectivity (through the geotransform, else in pixel/line
    coordinates), held once in an OGR memory layer and handed out one object at a time, so that memory holds no
    second copy of them all."""

    def __init__(self, labels, objects, geotransform):
        raster = gdal_array.OpenArray(np.ascontiguousarray(labels, dtype=np.int32))  # no copy of the labels
        raster.SetGeoTransform(geotransform or PIXEL_LINE)  # None: placed later, by GCPs or RPCs
        band = raster.GetRasterBand(1)
        self._memory = ogr.GetDriverByName("Memory").CreateDataSource("objects")
        self._layer = self._memory.CreateLayer("objects", geom_type=ogr.wkbPolygon)
        self._layer.CreateField(ogr.FieldDefn("id", ogr.OFTInteger))
        gdal.Polygonize(band, band, self._layer, 0, ["8CONNECTED=8"])
        band = raster = None
        self._parts = {}  # id -> FIDs of its parts in the memory layer
        for feature in self._layer:
            self._parts.setdefault(feature.GetField(0), []).append(feature.GetFID())
        missing = set(range(1, objects + 1)) - set(self._parts)
        if missing:  # cannot happen with matching connectivity; a guard so ids never go silently missing
            raise InputError(f"Polygonizing lost {len(missing)} object(s); please report this with the mask raster.")

    def geometry(self, ident, placement):
        """Object `ident`'s valid MultiPolygon where `placement` (a PixelToMap) puts its pixels on the map."""
        geometry = ogr.Geometry(ogr.wkbMultiPolygon)
        for fid in self._parts.pop(ident):
            feature = self._layer.GetFeature(fid)
            piece = feature.GetGeometryRef().Clone()
            geometry.AddGeometry(piece if placement.geotransform else _placed(piece, placement))
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            if not geometry.IsValid():
                geometry = geometry.MakeValid()
            return ogr.ForceToMultiPolygon(geometry)
        finally:
            gdal.PopErrorHandler()


def _features(attributes, polygons, placement, ground):
    """(attribute row, geometry) of each object in id order, each geometry made when it is written."""
    for row in attributes:
        geometry = polygons.geometry(row["id"], placement)
        if placement.geotransform is None:  # placed by GCPs or RPCs: pixels are no longer of one area
            row["area"] = geometry.GetArea()
        row["area_m2"] = ground.area(geometry)
        yield row, geometry


def _placed(polygon, placement):
    """A polygon in pixel/line coordinates moved onto the map, vertex by vertex, by a GCP or RPC transformer; edges
    are first cut at every pixel corner, so they follow a transform that is not affine instead of cutting chords."""
    polygon.Segmentize(1.0)
    for index in range(polygon.GetGeometryCount()):
        ring = polygon.GetGeometryRef(index)
        cols, rows = np.asarray(ring.GetPoints(), dtype=np.float64)[:, :2].T
        xs, ys = placement.points(cols, rows)
        for point, (x, y) in enumerate(zip(xs.tolist(), ys.tolist())):
            ring.SetPoint_2D(point, x, y)
    return polygon


def _write_geopackage(path, features, projection):
    path = str(path)
    output_folder(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    output = AtomicOutput(path)  # unique to this run; its -wal/-shm files go with it
    temp_path = output.path
    srs = None
    if projection:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(projection)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    try:
        dataset = ogr.GetDriverByName("GPKG").CreateDataSource(temp_path)
    except RuntimeError as error:  # a full disk or a file-size limit, else a location SQLite cannot write
        failure = output.fail(error, path, always=False)
        raise failure or OutputError(f"Cannot create the polygons file '{path}' ({str(error).strip()}): choose an "
                                     "output location you can write to.") from None
    try:
        layer = dataset.CreateLayer(stem or "objects", srs=srs, geom_type=ogr.wkbMultiPolygon,
                                    options=["FID=fid", "GEOMETRY_NAME=geom"])
        types = {"id": ogr.OFTInteger, "pixels": ogr.OFTInteger64}
        for name in POLYGON_FIELDS:
            layer.CreateField(ogr.FieldDefn(name, types.get(name, ogr.OFTReal)))
        definition = layer.GetLayerDefn()
        layer.StartTransaction()
        for row, geometry in features:
            feature = ogr.Feature(definition)
            feature.SetFID(row["id"])
            for name in POLYGON_FIELDS:
                if row[name] is not None:
                    feature.SetField(name, row[name])
            feature.SetGeometry(geometry)
            layer.CreateFeature(feature)
        layer.CommitTransaction()
        if srs is None:  # GDAL writes srs_id 0, "Undefined geographic SRS": coordinates here are not degrees
            for table in ("gpkg_geometry_columns", "gpkg_contents"):
                name = layer.GetName().replace("'", "''")
                dataset.ExecuteSQL(f"UPDATE {table} SET srs_id = -1 WHERE table_name = '{name}'")
        dataset = None
        output.commit()
    except (RuntimeError, OSError) as error:
        grown = output.largest_file()  # before closing, which rolls the failed transaction back
        with quiet_destructors():  # closing a file whose write failed fails again
            dataset = None
        failure = output.fail(error, path, always=False, written_bytes=grown)
        if failure is None:
            raise
        raise failure from None
    except BaseException:
        with quiet_destructors():
            dataset = None
        output.remove()
        raise
