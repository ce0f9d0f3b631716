"""Thresholds, masks and polygons from score rasters, against hand-made rasters."""

import math

import numpy as np
import pytest
from osgeo import ogr
from scipy.stats import chi2

from fers.fers_core.errors import InputError
from fers.fers_core.pipeline.objects import write_polygons
from fers.fers_core.pipeline.postprocess import (
    ABSOLUTE,
    FALSE_ALARM_RATE,
    MASK_NODATA,
    TOP_PERCENT,
    score_percentiles,
    threshold_value,
    write_mask,
)

from ...rasters import GEOTRANSFORM, leftovers, read, utm_wkt, write_cube

NODATA = -9999.0


def kth_highest(values, percent):
    k = max(1, math.ceil(values.size * percent / 100 - 1e-9))
    return np.sort(values)[::-1][k - 1]


@pytest.fixture
def scores(tmp_path):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((120, 90)) ** 2 * 10).astype(np.float32)
    values[:3] = NODATA
    values[10:20, :] = np.float32(3.5)  # 900 tied scores
    values[50, 7] = np.nan
    return write_cube(tmp_path / "scores.tif", values, nodata=NODATA), values


@pytest.mark.parametrize("percent", [0.5, 1, 8, 50, 100, 0.001])
@pytest.mark.parametrize("max_in_memory", [10**9, 500, 1])
def test_top_percent_is_the_exact_kth_highest_valid_score(scores, percent, max_in_memory):
    path, values = scores
    valid = values[(values != NODATA) & np.isfinite(values)]
    result = threshold_value(path, TOP_PERCENT, percent, block_mb=0.01, max_in_memory=max_in_memory)
    assert result.value == kth_highest(valid, percent)
    assert result.valid_pixels == valid.size == 120 * 90 - 271
    assert result.target_pixels == max(1, math.ceil(valid.size * percent / 100 - 1e-9))


def test_top_percent_ties_flag_every_tied_pixel(scores, tmp_path):
    path, values = scores
    valid = values[(values != NODATA) & np.isfinite(values)]
    percent = 100 * (np.sum(valid > 3.5) + 10) / valid.size  # the cut falls inside the 900 ties
    result = threshold_value(path, TOP_PERCENT, percent, max_in_memory=50)
    assert result.value == np.float32(3.5)
    mask = write_mask(path, tmp_path / "mask.tif", result.value)
    assert mask.anomaly_pixels == np.sum(valid >= 3.5) > result.target_pixels


def test_absolute_and_false_alarm_rate_thresholds(scores):
    path, _ = scores
    assert threshold_value(path, ABSOLUTE, 12.5).value == 12.5
    result = threshold_value(path, FALSE_ALARM_RATE, 0.1, n_features=50)
    assert result.value == pytest.approx(chi2.isf(0.001, 50), rel=1e-12)
    assert abs(chi2.sf(result.value, 50) - 0.001) < 1e-12


@pytest.mark.parametrize("method, threshold, n_features, message", [
    (TOP_PERCENT, 0, None, "top percentage"),
    (TOP_PERCENT, 150, None, "top percentage"),
    (FALSE_ALARM_RATE, 0, 5, "false-alarm rate"),
    (FALSE_ALARM_RATE, 100, 5, "false-alarm rate"),
    (FALSE_ALARM_RATE, 1, None, "number of features"),
    (ABSOLUTE, float("nan"), None, "finite"),
    (7, 1, None, "Unknown threshold method"),
])
def test_bad_thresholds_are_refused(scores, method, threshold, n_features, message):
    with pytest.raises(InputError, match=message):
        threshold_value(scores[0], method, threshold, n_features)


def test_top_percent_of_an_all_nodata_raster_is_a_clear_error(tmp_path):
    path = write_cube(tmp_path / "empty.tif", np.full((4, 4), NODATA, np.float32), nodata=NODATA)
    with pytest.raises(InputError, match="no valid pixels"):
        threshold_value(path, TOP_PERCENT, 1)


def test_mask_values_counts_and_grid(scores, tmp_path):
    path, values = scores
    summary = write_mask(path, tmp_path / "mask.tif", 20.0, block_mb=0.01)
    mask, nodata, geotransform, projection = read(tmp_path / "mask.tif")
    invalid = (values == NODATA) | ~np.isfinite(values)
    assert mask.dtype == np.uint8 and nodata == MASK_NODATA
    np.testing.assert_array_equal(mask[invalid], MASK_NODATA)
    np.testing.assert_array_equal(mask[~invalid], (values[~invalid] >= 20.0).astype(np.uint8))
    assert summary.anomaly_pixels == np.sum(values[~invalid] >= 20.0)
    assert summary.nodata_pixels == 271 and summary.background_pixels == np.sum(values[~invalid] < 20.0)
    assert geotransform == GEOTRANSFORM and projection == utm_wkt()
    assert leftovers(tmp_path, {"scores.tif", "mask.tif"}) == []


def hand_made(tmp_path):
    """A 12x14 mask with four objects and a score raster with known values."""
    mask = np.zeros((12, 14), dtype=np.uint8)
    mask[1:3, 1:4] = 1          # object 1: 6 pixels, a 2x3 block
    mask[2, 10] = 1             # object 2: 3 pixels joined only through corners (8-connectivity)
    mask[3, 11] = 1
    mask[4, 12] = 1
    mask[6, 5] = 1              # object 3: 1 pixel
    mask[8:11, 1:4] = 1         # object 4: a 3x3 ring with a hole (8 pixels)
    mask[9, 2] = 0
    mask[0, 13] = MASK_NODATA
    scores = np.arange(12 * 14, dtype=np.float32).reshape(12, 14) / 4
    scores[0, 13] = NODATA
    scores[1, 1] = NODATA       # a nodata score inside object 1 (left out of its statistics)
    return (write_cube(tmp_path / "mask.tif", mask, nodata=MASK_NODATA),
            write_cube(tmp_path / "scores.tif", scores, nodata=NODATA), mask, scores)


def read_polygons(path):
    dataset = ogr.Open(str(path))
    layer = dataset.GetLayer(0)
    features = []
    for feature in layer:
        row = {name: feature.GetField(name) for name in
               ("id", "pixels", "area", "area_m2", "max_score", "mean_score", "centroid_x", "centroid_y")}
        geometry = feature.GetGeometryRef()
        row.update(fid=feature.GetFID(), geometry_area=geometry.GetArea(), valid=geometry.IsValid(),
                   geometry_type=geometry.GetGeometryName(), parts=geometry.GetGeometryCount())
        features.append(row)
    return features, layer.GetSpatialRef().ExportToWkt()


def expected_object(scores, pixels):
    rows, cols = zip(*pixels)
    values = [float(scores[r, c]) for r, c in pixels if scores[r, c] != NODATA]
    x = GEOTRANSFORM[0] + (np.mean(cols) + 0.5) * GEOTRANSFORM[1]
    y = GEOTRANSFORM[3] + (np.mean(rows) + 0.5) * GEOTRANSFORM[5]
    return {"pixels": len(pixels), "area": len(pixels) * 100.0, "max_score": max(values),
            "mean_score": np.mean(values), "centroid_x": x, "centroid_y": y}


def test_polygon_attributes_match_the_hand_made_raster(tmp_path):
    mask_path, score_path, mask, scores = hand_made(tmp_path)
    summary = write_polygons(mask_path, score_path, tmp_path / "objects.gpkg", min_pixels=1)
    assert (summary.objects, summary.dropped_objects, summary.anomaly_pixels) == (4, 0, 18)
    features, crs = read_polygons(tmp_path / "objects.gpkg")
    objects = [
        [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)],
        [(2, 10), (3, 11), (4, 12)],
        [(6, 5)],
        [(r, c) for r in range(8, 11) for c in range(1, 4) if (r, c) != (9, 2)],
    ]
    assert [f["id"] for f in features] == [1, 2, 3, 4]
    for feature, pixels in zip(features, objects):
        expected = expected_object(scores, pixels)
        for key, value in expected.items():
            assert feature[key] == pytest.approx(value, rel=1e-9), (feature["id"], key)
        assert feature["fid"] == feature["id"]
        assert feature["geometry_area"] == pytest.approx(feature["area"])  # ids match their polygons
        assert feature["valid"] and feature["geometry_type"] == "MULTIPOLYGON"
    assert features[1]["parts"] == 3  # corner-touching pixels: one object, a valid 3-part MultiPolygon
    assert crs and "32632" in crs
    assert leftovers(tmp_path, {"mask.tif", "scores.tif", "objects.gpkg"}) == []


def test_small_objects_are_dropped_and_ids_stay_consecutive(tmp_path):
    mask_path, score_path, _, scores = hand_made(tmp_path)
    summary = write_polygons(mask_path, score_path, tmp_path / "objects.gpkg", min_pixels=4)
    assert (summary.objects, summary.dropped_objects, summary.anomaly_pixels) == (2, 2, 14)
    features, _ = read_polygons(tmp_path / "objects.gpkg")
    assert [(f["id"], f["pixels"]) for f in features] == [(1, 6), (2, 8)]
    assert features[1]["max_score"] == scores[10, 3]
    assert features[1]["geometry_area"] == pytest.approx(800.0)  # the hole is not part of the polygon


def test_empty_mask_gives_an_empty_layer(tmp_path):
    mask = write_cube(tmp_path / "mask.tif", np.zeros((5, 5), np.uint8), nodata=MASK_NODATA)
    scores = write_cube(tmp_path / "scores.tif", np.ones((5, 5), np.float32), nodata=NODATA)
    assert write_polygons(mask, scores, tmp_path / "objects.gpkg").objects == 0
    assert read_polygons(tmp_path / "objects.gpkg")[0] == []


def test_polygons_need_a_geopackage_name_and_a_matching_grid(tmp_path):
    mask_path, score_path, _, _ = hand_made(tmp_path)
    with pytest.raises(InputError, match=r"\.gpkg"):
        write_polygons(mask_path, score_path, tmp_path / "objects.shp")
    other = write_cube(tmp_path / "other.tif", np.ones((5, 5), np.float32))
    with pytest.raises(InputError, match="12 pixels but the scores are 5x5"):
        write_polygons(mask_path, other, tmp_path / "objects.gpkg")
    assert not (tmp_path / "objects.gpkg").exists()


def test_score_percentiles_ignore_nodata(scores):
    path, values = scores
    valid = values[(values != NODATA) & np.isfinite(values)]
    low, high = score_percentiles(path, [2, 98])
    np.testing.assert_allclose([low, high], np.percentile(valid, [2, 98]), rtol=1e-6)


def test_top_percent_progress_only_moves_forward_over_its_passes(tmp_path):
    """The narrowing passes (forced here by a tiny in-memory limit) and the ties pass each add to the progress;
    each pass used to restart from zero."""
    from fers.fers_core.feedback import Feedback

    class Progress(Feedback):
        def __init__(self):
            self.values = []

        def set_progress(self, percent):
            self.values.append(percent)

    values = np.random.default_rng(5).random((300, 300)).astype(np.float32)  # several 1 MB blocks
    path = write_cube(tmp_path / "scores.tif", values)
    progress = Progress()
    result = threshold_value(path, TOP_PERCENT, 1.0, feedback=progress, block_mb=1, max_in_memory=50)
    assert result.value == kth_highest(values.ravel(), 1.0)
    assert len(progress.values) > 3 and progress.values == sorted(progress.values), progress.values
    assert progress.values[-1] <= 100
