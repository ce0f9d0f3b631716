"""From anomaly scores to objects: a threshold, a binary mask and polygons with attributes.

Threshold methods (`threshold_value`):
  0 top percent: flag the given percentage of the valid pixels with the highest scores. The
    cut is the k-th highest valid score, k = ceil(valid pixels * percent / 100) (at least 1),
    found exactly while streaming the raster (a min/max pass, histogram passes that narrow the
    range holding the k-th value, then an in-memory selection once few candidates remain), so
    memory stays bounded whatever the raster size. Ties: every pixel whose score equals the
    cut is flagged too, so more than k pixels are flagged when several pixels share the k-th
    value (never fewer).
  1 absolute: the given value is the cut.
  2 false-alarm rate: under the Gaussian background model RX scores follow a chi-square law
    with as many degrees of freedom as features, so the cut for a false-alarm rate of
    `threshold` percent is chi2.isf(threshold / 100, n_features).
A pixel is an anomaly when its score is >= the cut.

Masks (`write_mask`) are uint8 on the score raster's grid: 1 anomaly, 0 background, 255 nodata.

Polygons (`write_polygons`) are the connected groups of anomaly pixels, with 8-connectivity
(pixels touching by an edge or a corner are one object, so a thin diagonal target stays one
object). A group whose pixels touch only at corners is written as a valid MultiPolygon. Objects
are numbered 1, 2, ... in raster order (top to bottom, then left to right, by their first pixel)
after dropping those smaller than `min_pixels`; the `id` field and the feature id (FID) are that
number. The labelling holds the whole mask in memory (about 5 bytes per pixel).
"""

import math
import os
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, ogr, osr
from scipy import ndimage
from scipy.stats import chi2

from ..choices import EnsembleFusion
from ..errors import InputError
from ..feedback import Feedback, ProgressRange
from ..io.atomic import AtomicOutput
from ..io.reader import RasterReader
from ..io.windows import DEFAULT_BLOCK_MB, Window
from ..io.writer import RasterWriter, output_folder
from .requests import ABSOLUTE, FALSE_ALARM_RATE, TOP_PERCENT, check_polygons_path, check_threshold

ogr.UseExceptions()

MASK_NODATA = 255
MAX_IN_MEMORY = 2**22  # candidate scores held at once by the exact top-percent selection
_HISTOGRAM_BINS = 65536
POLYGON_FIELDS = ("id", "pixels", "area", "max_score", "mean_score", "centroid_x", "centroid_y")


@dataclass
class Threshold:
    """The score cut and how it was obtained."""

    value: float
    method: int
    parameter: float
    valid_pixels: int = None  # top percent only: valid pixels counted
    target_pixels: int = None  # top percent only: k, the rank of the cut

    def describe(self):
        if self.method == TOP_PERCENT:
            return (f"top {self.parameter:g}% of {self.valid_pixels} valid pixels: {self.target_pixels} pixel(s), "
                    f"score >= {self.value:.6g}")
        if self.method == FALSE_ALARM_RATE:
            return f"false-alarm rate {self.parameter:g}% under the chi-square background: score >= {self.value:.6g}"
        return f"absolute score >= {self.value:.6g}"


@dataclass
class MaskSummary:
    path: str
    threshold: float
    anomaly_pixels: int
    background_pixels: int
    nodata_pixels: int


@dataclass
class PolygonSummary:
    path: str
    objects: int
    dropped_objects: int
    anomaly_pixels: int


def _score_reader(path):
    """Band 1 of a score raster (its nodata, NaN and inf are invalid)."""
    return RasterReader(path, [1])


def threshold_value(score_path, method, threshold, n_features=None, feedback=None, block_mb=DEFAULT_BLOCK_MB,
                    max_in_memory=MAX_IN_MEMORY):
    """The score cut for `method` (0 top percent, 1 absolute, 2 false-alarm rate in percent); a Threshold."""
    feedback = feedback or Feedback()
    check_threshold(method, threshold)
    method = int(method)
    threshold = float(threshold)
    if method == ABSOLUTE:
        return Threshold(threshold, method, threshold)
    if method == FALSE_ALARM_RATE:
        if not n_features or int(n_features) < 1:
            raise InputError("A false-alarm-rate threshold needs the number of features (bands) the scores used.")
        return Threshold(float(chi2.isf(threshold / 100.0, int(n_features))), method, threshold)
    with _score_reader(score_path) as reader:
        return _top_percent(reader, threshold, feedback, block_mb, max_in_memory)


def _members(values, predicates):
    """Which values satisfy every (lo, hi, bins, bin) histogram-bin predicate."""
    keep = np.ones(values.shape, dtype=bool)
    for lo, hi, bins, chosen in predicates:
        keep &= _bin_index(values, lo, hi, bins) == chosen
    return keep


def _bin_index(values, lo, hi, bins):
    # Monotone in the value (each rounded operation is), so a bin is an interval of values.
    return np.clip(np.floor((values - lo) / (hi - lo) * bins), 0, bins - 1).astype(np.int64)


def _valid_scores(reader, windows, progress):
    """Yield the valid scores of each block (one pass over the raster)."""
    for index, window in enumerate(windows):
        data, valid = reader.read(window)
        yield data[0][valid]
        progress((index + 1) / len(windows) * 0.99)


def _top_percent(reader, percent, feedback, block_mb, max_in_memory):
    windows = reader.windows(block_mb)
    progress = ProgressRange(feedback, 0, 100)
    collect = reader.pixel_count <= max_in_memory
    total, lo, hi, kept = 0, np.inf, -np.inf, []
    for block in _valid_scores(reader, windows, progress):  # pass 1: count and range
        total += block.size
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        if collect:
            kept.append(block)
    if total == 0:
        raise InputError("The score raster has no valid pixels, so no top-percent threshold can be set.")
    k = max(1, math.ceil(total * percent / 100.0 - 1e-9))
    result = Threshold(None, TOP_PERCENT, percent, total, k)
    values = np.concatenate(kept) if collect else None
    predicates, above = [], 0  # candidates: values in every chosen bin; `above` valid values lie above them
    while values is None:
        if lo == hi:
            result.value = lo
            return result
        histogram = np.zeros(_HISTOGRAM_BINS, dtype=np.int64)
        low, high = np.inf, -np.inf
        for block in _valid_scores(reader, windows, progress):  # narrowing pass: histogram of the candidates
            block = block[_members(block, predicates)]
            if block.size:
                histogram += np.bincount(_bin_index(block, lo, hi, _HISTOGRAM_BINS), minlength=_HISTOGRAM_BINS)
                low, high = min(low, float(block.min())), max(high, float(block.max()))
        if low == high:  # every candidate has the same value (ties)
            result.value = low
            return result
        from_top = np.cumsum(histogram[::-1])
        position = int(np.searchsorted(from_top, k - above))  # first bin from the top reaching rank k
        chosen = _HISTOGRAM_BINS - 1 - position
        above += int(from_top[position - 1]) if position else 0
        predicates.append((lo, hi, _HISTOGRAM_BINS, chosen))
        width = (hi - lo) / _HISTOGRAM_BINS
        lo, hi = lo + chosen * width, lo + (chosen + 1) * width
        if histogram[chosen] <= max_in_memory or not hi > lo:
            values = np.concatenate([block[_members(block, predicates)]
                                     for block in _valid_scores(reader, windows, progress)])
    rank = k - above  # 1-based rank from the top among the candidates
    result.value = float(np.partition(values, values.size - rank)[values.size - rank])
    return result


def write_mask(score_path, mask_path, value, feedback=None, block_mb=DEFAULT_BLOCK_MB):
    """Write a uint8 mask: 1 where score >= value, 0 below, 255 where the score is nodata; a MaskSummary."""
    feedback = feedback or Feedback()
    progress = ProgressRange(feedback, 0, 100)
    anomalies = background = nodata = 0
    with _score_reader(score_path) as reader:
        windows = reader.windows(block_mb)
        with RasterWriter.like(reader, mask_path, data_type=gdal.GDT_Byte, nodata=MASK_NODATA,
                               band_names=["anomaly mask (1 = anomaly)"]) as writer:
            for index, window in enumerate(windows):
                data, valid = reader.read(window)
                flagged = valid & (data[0] >= value)
                block = np.where(valid, flagged, MASK_NODATA).astype(np.uint8)
                writer.write(window, block)
                flagged_count = int(flagged.sum())
                anomalies += flagged_count
                background += int(valid.sum()) - flagged_count
                nodata += window.pixels - int(valid.sum())
                progress((index + 1) / len(windows))
            writer.set_metadata({"fers_threshold": repr(float(value))})
            writer.commit()
    feedback.info(f"Mask: {anomalies} anomaly pixel(s), {background} background, {nodata} nodata.")
    return MaskSummary(str(mask_path), float(value), anomalies, background, nodata)


def score_percentiles(score_path, percents, max_samples=1_000_000):
    """Percentiles of the valid scores from a regular sample of at most max_samples pixels (None if none valid)."""
    with _score_reader(score_path) as reader:
        step = max(1, math.ceil(math.sqrt(reader.pixel_count / max_samples)))
        whole = Window.whole(reader.height, reader.width)
        data, valid = reader.read(whole, shape=(max(1, reader.height // step), max(1, reader.width // step)))
        if not valid.any():
            return None
        return [float(v) for v in np.percentile(data[0][valid], percents)]


def is_rank_map(score_path):
    """Whether a score raster is a rank-fused ensemble map (mean empirical CDFs: values in [0, 1])."""
    dataset = gdal.Open(str(score_path))
    return dataset is not None and (dataset.GetMetadata() or {}).get("fers_fusion") == EnsembleFusion.RANK


def write_polygons(mask_path, score_path, polygons_path, min_pixels=1, feedback=None, block_mb=DEFAULT_BLOCK_MB):
    """Write the connected anomalies of a mask as a GeoPackage of (Multi)Polygons with attributes; a PolygonSummary.

    Fields: id, pixels, area (map units squared), max_score, mean_score (over the object's valid
    scores), centroid_x, centroid_y (mean of the pixel centres, in map coordinates).
    """
    feedback = feedback or Feedback()
    min_pixels = int(min_pixels)
    if min_pixels < 1:
        raise InputError(f"The minimum object size must be at least 1 pixel (got {min_pixels}).")
    check_polygons_path(polygons_path)
    progress = ProgressRange(feedback, 0, 100)
    with RasterReader(mask_path, [1]) as mask, _score_reader(score_path) as scores:
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
        attributes = _object_attributes(labels, objects, scores, mask.geotransform, block_mb, progress)
        progress(0.6)
        geometries = _polygonize(labels, objects, mask.geotransform)
        projection = mask.projection or scores.projection
    progress(0.8)
    _write_geopackage(polygons_path, geometries, attributes, projection)
    progress(1.0)
    dropped = found - objects
    feedback.info(
        f"Polygons: {objects} object(s) of at least {min_pixels} pixel(s)"
        + (f"; {dropped} smaller object(s) dropped." if dropped else ".")
    )
    return PolygonSummary(str(polygons_path), objects, dropped, int(sizes[keep].sum()))


def _object_attributes(labels, objects, scores, geotransform, block_mb, progress):
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
    gt = geotransform or (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    pixel_area = abs(gt[1] * gt[5] - gt[2] * gt[4])
    table = []
    for ident in range(1, count):
        n = int(pixels[ident])
        col_mean, row_mean = col_sum[ident] / n, row_sum[ident] / n
        scored = int(score_count[ident])
        table.append({
            "id": ident,
            "pixels": n,
            "area": n * pixel_area,
            "max_score": float(score_max[ident]) if scored else None,
            "mean_score": float(score_sum[ident] / scored) if scored else None,
            "centroid_x": gt[0] + col_mean * gt[1] + row_mean * gt[2],
            "centroid_y": gt[3] + col_mean * gt[4] + row_mean * gt[5],
        })
    return table


def _polygonize(labels, objects, geotransform):
    """MultiPolygon geometry of each object id, from gdal.Polygonize with 8-connectivity."""
    rows, cols = labels.shape
    raster = gdal.GetDriverByName("MEM").Create("", cols, rows, 1, gdal.GDT_Int32)
    if geotransform:
        raster.SetGeoTransform(geotransform)
    band = raster.GetRasterBand(1)
    band.WriteArray(labels)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("objects")
    layer = memory.CreateLayer("objects", geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("id", ogr.OFTInteger))
    gdal.Polygonize(band, band, layer, 0, ["8CONNECTED=8"])
    parts = {}
    for feature in layer:
        parts.setdefault(feature.GetField(0), []).append(feature.GetGeometryRef().Clone())
    geometries = {}
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        for ident, pieces in parts.items():
            geometry = ogr.Geometry(ogr.wkbMultiPolygon)
            for piece in pieces:
                geometry.AddGeometry(piece)
            if not geometry.IsValid():
                geometry = geometry.MakeValid()
            geometries[ident] = ogr.ForceToMultiPolygon(geometry)
    finally:
        gdal.PopErrorHandler()
    missing = set(range(1, objects + 1)) - set(geometries)
    if missing:  # cannot happen with matching connectivity; a guard so ids never go silently missing
        raise InputError(f"Polygonizing lost {len(missing)} object(s); please report this with the mask raster.")
    return geometries


def _write_geopackage(path, geometries, attributes, projection):
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
        layer = dataset.CreateLayer(stem or "objects", srs=srs, geom_type=ogr.wkbMultiPolygon,
                                    options=["FID=fid", "GEOMETRY_NAME=geom"])
        types = {"id": ogr.OFTInteger, "pixels": ogr.OFTInteger64}
        for name in POLYGON_FIELDS:
            layer.CreateField(ogr.FieldDefn(name, types.get(name, ogr.OFTReal)))
        definition = layer.GetLayerDefn()
        layer.StartTransaction()
        for row in attributes:
            feature = ogr.Feature(definition)
            feature.SetFID(row["id"])
            for name in POLYGON_FIELDS:
                if row[name] is not None:
                    feature.SetField(name, row[name])
            feature.SetGeometry(geometries[row["id"]])
            layer.CreateFeature(feature)
        layer.CommitTransaction()
        dataset = None
        output.commit()
    except (RuntimeError, OSError) as error:
        dataset = None
        failure = output.fail(error, path, always=False)
        if failure is None:
            raise
        raise failure from None
    except BaseException:
        dataset = None
        output.remove()
        raise
