"""Anomaly objects: the connected groups of anomaly pixels of a mask, as a GeoPackage of polygons with attributes.

Objects are the connected groups with 8-connectivity (pixels touching by an edge or a corner are one object, so
a thin diagonal target stays one object). A group whose pixels touch only at corners is written as a valid
MultiPolygon. Objects are numbered 1, 2, ... in raster order (top to bottom, then left to right, by their first
pixel) after dropping those smaller than `min_pixels`; the `id` field and the feature id (FID) are that number.
Geometries and centroids lie where QGIS draws the mask's pixels (io.georeferencing: through the geotransform,
the GCPs or RPCs, or at x = column, y = -row without georeferencing). The labelling holds the whole mask in
memory as int32 labels (POLYGON_PIXEL_BYTES a pixel, whatever MEMORY_MB; the memory guard counts it); the outlines
are traced by GDAL into a scratch GeoPackage beside the output, on disk (deleted at the end), and written from there
one object at a time, so their number costs disk, not memory.
"""

import os
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, gdal_array, ogr, osr
from scipy import ndimage

from ..errors import Cancelled, InputError, OutputError
from ..feedback import Feedback, ProgressRange
from ..io.atomic import AtomicOutput, Temporary
from ..io.georeferencing import PIXEL_LINE, UNGEOREFERENCED, PixelToMap
from ..io.reader import RasterReader
from ..io.windows import DEFAULT_BLOCK_MB
from ..io.writer import output_folder, quiet_destructors
from .ground_area import GroundAreas
from .memory_guard import MemoryEstimate, check_memory
from .postprocess import SCORE_PASS_BYTES, score_reader
from .requests import check_polygons_path

ogr.UseExceptions()

POLYGON_PIXEL_BYTES = 8
"""Bytes a mask pixel costs while its objects are labelled and traced: int32 labels, the bool anomaly pixels, a
block of the mask as it is read, and GDAL's strip of the labels as it traces them (measured: 7 B)."""
POLYGON_OBJECT_BYTES = 320
"""Bytes an object costs: its attribute sums and GDAL's state while it traces (measured: 260 B)."""
POLYGONS_TOPIC = "the anomaly polygons"
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
        check_memory(estimate_polygons(mask.width, mask.height), Feedback())  # logged before the run
        feedback.info(f"Polygons: labelling the connected anomalies of the {mask.width}x{mask.height} pixel mask.")
        anomaly = _anomaly_pixels(mask, block_mb, ProgressRange(feedback, 0, 10))
        labels = np.empty(anomaly.shape, dtype=np.int32)
        found = ndimage.label(anomaly, structure=np.ones((3, 3), dtype=bool), output=labels)
        del anomaly
        progress(0.15)
        sizes = _object_sizes(labels, found)
        keep = sizes >= min_pixels
        keep[0] = False
        objects = int(keep.sum())
        if objects * POLYGON_OBJECT_BYTES > 64 * 2**20:  # the pixels' share was checked above
            check_memory(estimate_polygons(mask.width, mask.height, objects), feedback, POLYGONS_TOPIC)
        if objects < found:
            _renumber(labels, keep, progress)
        progress(0.2)
        georeferencing = mask.georeferencing if mask.georeferencing.crs or not scores.georeferencing.crs \
            else scores.georeferencing
        placement = PixelToMap(georeferencing)
        attributes = _object_attributes(labels, objects, scores, placement, block_mb, ProgressRange(feedback, 20, 45))
        projection = placement.crs
        in_pixels = (placement.geotransform == UNGEOREFERENCED  # placed at x = column, y = -row
                     and placement.georeferencing.geotransform is None)
        ground = GroundAreas("" if in_pixels else projection)
        if objects and not ground.usable:
            feedback.info(_no_ground_area_note(projection, in_pixels))
        if placement.failure:
            feedback.warning(f"The mask's GCPs or RPCs cannot place its pixels ({placement.failure}): the polygons "
                             "are in pixel coordinates (x = column, y = -row), where QGIS draws such a raster.")
    feedback.info(f"Polygons: tracing and writing the outlines of {objects} object(s).")
    _write_geopackage(polygons_path, labels, objects, attributes, placement, ground, feedback)
    progress(1.0)
    dropped = found - objects
    feedback.info(
        f"Polygons: {objects} object(s) of at least {min_pixels} pixel(s)"
        + (f"; {dropped} smaller object(s) dropped." if dropped else ".")
    )
    return PolygonSummary(str(polygons_path), objects, dropped, int(sizes[keep].sum()))


def estimate_polygons(width, height, objects=0):
    """Peak memory of write_polygons on a width x height mask of `objects` objects (0: not known yet): its labels
    and anomaly pixels, and a little per object (the outlines go to disk as they are traced)."""
    pixels = int(width) * int(height)
    parts = {"leave out the anomaly polygons, or run on a smaller extent": pixels * POLYGON_PIXEL_BYTES}
    if objects:
        parts["raise THRESHOLD or MIN_PIXELS"] = int(objects) * POLYGON_OBJECT_BYTES
    return MemoryEstimate(f"Anomaly polygons of a {width}x{height} pixel mask"
                          + (f" with {objects} objects" if objects else ""), parts)


def check_polygons_run(input_path, feedback=None):
    """The memory check of the polygons of a run on `input_path`, before its detector runs (InputError when the
    machine lacks the memory for the mask's labels)."""
    with RasterReader(input_path, [1]) as reader:
        estimate = estimate_polygons(reader.width, reader.height)
    check_memory(estimate, feedback, POLYGONS_TOPIC)


def _anomaly_pixels(mask, block_mb, progress):
    """The mask's valid non-zero pixels as one bool array, read block by block (1 byte a pixel)."""
    anomaly = np.zeros((mask.height, mask.width), dtype=bool)
    windows = mask.windows(block_mb, SCORE_PASS_BYTES)
    for index, window in enumerate(windows):
        data, valid = mask.read(window, dtype=np.float32)
        anomaly[window.slices()] = valid & (data[0] != 0)
        progress((index + 1) / len(windows))
    return anomaly


def _object_sizes(labels, found, rows=1024):
    """Pixels per label 0..found, counted a strip of rows at a time (bincount copies its input to int64)."""
    sizes = np.zeros(found + 1, dtype=np.int64)
    for row in range(0, labels.shape[0], rows):
        sizes += np.bincount(labels[row:row + rows].ravel(), minlength=found + 1)
    return sizes


def _renumber(labels, keep, progress, rows=1024):
    """Renumber the kept labels 1, 2, ... in place (dropped ones become 0), a strip of rows at a time."""
    renumber = np.zeros(keep.size, dtype=np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    for row in range(0, labels.shape[0], rows):
        labels[row:row + rows] = renumber[labels[row:row + rows]]
        progress(0.15 + 0.05 * min(1.0, (row + rows) / labels.shape[0]))


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
    windows = scores.windows(block_mb, SCORE_PASS_BYTES)
    for index, window in enumerate(windows):
        data, valid = scores.read(window)
        block_labels = labels[window.slices()]
        r, c = np.nonzero(block_labels)  # only the objects' pixels from here on
        ids = block_labels[r, c]
        pixels += np.bincount(ids, minlength=count)
        row_sum += np.bincount(ids, weights=r + (window.row + 0.5), minlength=count)
        col_sum += np.bincount(ids, weights=c + (window.col + 0.5), minlength=count)
        use = valid[r, c]
        ids, values = ids[use], data[0][r[use], c[use]]
        del data, valid, r, c
        score_sum += np.bincount(ids, weights=values, minlength=count)
        score_count += np.bincount(ids, minlength=count)
        np.maximum.at(score_max, ids, values)
        progress((index + 1) / len(windows))
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


TRACED_LAYER = "outlines"  # the layer of the scratch GeoPackage that gdal.Polygonize fills
PROGRESS_EVERY = 2000  # the most objects written between two progress reports (and cancel checks)


def _write_geopackage(path, labels, objects, attributes, placement, ground, feedback):
    """Trace the labels' outlines into a scratch GeoPackage beside the output (on disk, so memory holds none of
    them; deleted at the end), then write one feature per object in id order, its parts merged into a valid
    MultiPolygon."""
    path = str(path)
    output_folder(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    output = AtomicOutput(path)  # unique to this run; its -wal/-shm files go with it
    srs = None
    if placement.crs:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(placement.crs)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    try:
        dataset = ogr.GetDriverByName("GPKG").CreateDataSource(output.path)
    except RuntimeError as error:  # a full disk or a file-size limit, else a location SQLite cannot write
        failure = output.fail(error, path, always=False)
        raise failure or OutputError(f"Cannot create the polygons file '{path}' ({str(error).strip()}): choose an "
                                     "output location you can write to.") from None
    scratch = None
    try:
        scratch = _Scratch(path)
        traced = _trace(scratch.dataset, labels, placement.geotransform, ProgressRange(feedback, 45, 65))
        layer = dataset.CreateLayer(stem or "objects", srs=srs, geom_type=ogr.wkbMultiPolygon,
                                    options=["FID=fid", "GEOMETRY_NAME=geom"])
        types = {"id": ogr.OFTInteger, "pixels": ogr.OFTInteger64}
        for name in POLYGON_FIELDS:
            layer.CreateField(ogr.FieldDefn(name, types.get(name, ogr.OFTReal)))
        definition = layer.GetLayerDefn()
        progress = ProgressRange(feedback, 65, 97)
        step = max(1, min(PROGRESS_EVERY, objects // 50))
        layer.StartTransaction()
        parts = scratch.dataset.ExecuteSQL(f'SELECT id, geom FROM "{traced}" ORDER BY id, fid')
        try:
            for row, geometry in _features(attributes, _grouped_parts(parts), placement, ground):
                feature = ogr.Feature(definition)
                feature.SetFID(row["id"])
                for name in POLYGON_FIELDS:
                    if row[name] is not None:
                        feature.SetField(name, row[name])
                feature.SetGeometry(geometry)
                layer.CreateFeature(feature)
                if row["id"] % step == 0:
                    progress(row["id"] / objects)
        finally:
            scratch.dataset.ReleaseResultSet(parts)
        layer.CommitTransaction()
        if srs is None:  # GDAL writes srs_id 0, "Undefined geographic SRS": coordinates here are not degrees
            for table in ("gpkg_geometry_columns", "gpkg_contents"):
                name = layer.GetName().replace("'", "''")
                dataset.ExecuteSQL(f"UPDATE {table} SET srs_id = -1 WHERE table_name = '{name}'")
        feedback.check_cancelled()
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
    finally:
        _close(scratch)


class _Scratch:
    """A scratch GeoPackage beside the polygons' destination (a registered temporary: a failed or killed run's is
    removed too), never committed."""

    def __init__(self, destination):
        self.temporary = Temporary(destination, purpose="outlines")
        self.dataset = ogr.GetDriverByName("GPKG").CreateDataSource(self.temporary.path)


def _close(scratch):
    """Close and delete a _Scratch (None: nothing to do)."""
    if scratch is not None:
        with quiet_destructors():
            scratch.dataset = None
        scratch.temporary.remove()


def _trace(dataset, labels, geotransform, progress):
    """gdal.Polygonize of the labels with 8-connectivity into a scratch layer of `dataset` (through the
    geotransform, else in pixel/line coordinates), indexed by id; the layer's name."""
    stopped = []

    def report(fraction, *_):
        try:
            progress(fraction)
        except Cancelled:
            stopped.append(True)
            return 0  # GDAL stops and raises a RuntimeError, turned back into the cancel below
        return 1

    raster = gdal_array.OpenArray(np.ascontiguousarray(labels, dtype=np.int32))  # no copy of the labels
    try:
        raster.SetGeoTransform(geotransform or PIXEL_LINE)  # None: placed later, by GCPs or RPCs
        band = raster.GetRasterBand(1)
        layer = dataset.CreateLayer(TRACED_LAYER, geom_type=ogr.wkbPolygon, options=["SPATIAL_INDEX=NO"])
        layer.CreateField(ogr.FieldDefn("id", ogr.OFTInteger))
        layer.StartTransaction()
        try:
            gdal.Polygonize(band, band, layer, 0, ["8CONNECTED=8"], callback=report)
        except RuntimeError:
            if stopped:
                raise Cancelled() from None
            raise
        layer.CommitTransaction()
        dataset.ExecuteSQL(f'CREATE INDEX "{TRACED_LAYER}_id" ON "{TRACED_LAYER}" (id)')
        return TRACED_LAYER
    finally:  # a failure's traceback must not keep the scratch file open after the caller deleted it
        layer = band = raster = dataset = None


def _grouped_parts(parts):
    """(id, [polygons]) per object from rows ordered by id."""
    ident, pieces = None, []
    for feature in parts:
        current = feature.GetField(0)
        if current != ident and pieces:
            yield ident, pieces
            pieces = []
        ident = current
        pieces.append(feature.GetGeometryRef().Clone())
    if pieces:
        yield ident, pieces


def _features(attributes, parts, placement, ground):
    """(attribute row, geometry) of each object in id order, each geometry made from its parts when it is written."""
    parts = iter(parts)
    for row in attributes:
        ident, pieces = next(parts, (None, None))
        if ident != row["id"]:  # cannot happen with matching connectivity; a guard so ids never go silently astray
            raise InputError(f"Polygonizing lost object {row['id']}; please report this with the mask raster.")
        geometry = _multipolygon(pieces, placement)
        if placement.geotransform is None:  # placed by GCPs or RPCs: pixels are no longer of one area
            row["area"] = geometry.GetArea()
        row["area_m2"] = ground.area(geometry)
        yield row, geometry


def _multipolygon(pieces, placement):
    """A valid MultiPolygon of an object's traced parts where `placement` (a PixelToMap) puts its pixels."""
    geometry = ogr.Geometry(ogr.wkbMultiPolygon)
    for piece in pieces:
        geometry.AddGeometry(piece if placement.geotransform else _placed(piece, placement))
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        if not geometry.IsValid():
            geometry = geometry.MakeValid()
        return ogr.ForceToMultiPolygon(geometry)
    finally:
        gdal.PopErrorHandler()
