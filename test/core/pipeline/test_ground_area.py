"""Polygons on the ground: area_m2 (the ellipsoidal area, in any CRS, against closed-form areas) and edges that
follow a curved GCP placement."""

import math

import numpy as np
import pytest
from osgeo import ogr, osr

from fers.fers_core.feedback import Feedback
from fers.fers_core.pipeline.ground_area import ground_areas
from fers.fers_core.pipeline.objects import write_polygons

from ...rasters import write_cube

WGS84_A, WGS84_F = 6378137.0, 1 / 298.257223563


def cell_area(west, east, south, north, a=WGS84_A, f=WGS84_F):
    """Exact area of a longitude-latitude box on an ellipsoid (square metres), through the authalic latitude."""
    b, e = a * (1 - f), math.sqrt(f * (2 - f))

    def q(latitude):
        s = math.sin(math.radians(latitude))
        return s / (2 * (1 - e * e * s * s)) + math.log((1 + e * s) / (1 - e * s)) / (4 * e)

    return 2 * math.pi * b * b * (q(north) - q(south)) * (east - west) / 360


class Notes(Feedback):
    def __init__(self):
        super().__init__()
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def objects_of(tmp_path, geotransform, epsg, feedback=None):
    """Polygons of a 20x20 mask with a 2x3-pixel object and a 1-pixel one, in `epsg` (None: no CRS)."""
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[4:6, 7:10] = 1
    mask[15, 2] = 1
    write_cube(tmp_path / "mask.tif", mask, geotransform=geotransform, epsg=epsg)
    write_cube(tmp_path / "scores.tif", mask.astype(np.float32), geotransform=geotransform, epsg=epsg)
    write_polygons(tmp_path / "mask.tif", tmp_path / "scores.tif", tmp_path / "objects.gpkg", feedback=feedback)
    dataset = ogr.Open(str(tmp_path / "objects.gpkg"))
    return [(f["pixels"], f["area"], f["area_m2"]) for f in dataset.GetLayer(0)]


def test_geographic_polygons_get_their_ellipsoidal_area(tmp_path):
    step = 0.001  # degrees, about 56 x 111 m at 60 degrees north
    found = objects_of(tmp_path, (10.0, step, 0.0, 60.02, 0.0, -step), 4326)
    (six, six_degrees, six_m2), (one, _, one_m2) = found
    assert (six, one) == (6, 1)
    assert six_degrees == pytest.approx(6 * step * step)  # map units: square degrees
    north = 60.02 - 4 * step
    assert six_m2 == pytest.approx(cell_area(10.007, 10.010, north - 2 * step, north), rel=1e-9)
    north = 60.02 - 15 * step
    assert one_m2 == pytest.approx(cell_area(10.002, 10.003, north - step, north), rel=1e-9)


def test_projected_polygons_get_their_ground_area_not_the_map_area(tmp_path):
    # UTM 32N at its central meridian: map distances are 0.9996 of ground distances
    ((_, utm_area, utm_m2), _) = objects_of(tmp_path, (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0), 32632)
    assert utm_area == pytest.approx(600.0)
    assert utm_m2 == pytest.approx(600.0 / 0.9996 ** 2, rel=2e-5)
    # Web Mercator at 60 degrees north inflates areas by about 1 / cos(60)^2 = 4
    y = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(60) / 2))
    ((_, mercator_area, mercator_m2), _) = objects_of(tmp_path, (0.0, 40.0, 0.0, y, 0.0, -40.0), 3857)
    assert mercator_area == pytest.approx(6 * 1600.0)
    assert mercator_m2 == pytest.approx(mercator_area * math.cos(math.radians(60)) ** 2, rel=1e-2)


def test_polygons_without_a_crs_have_no_ground_area_and_the_log_says_why(tmp_path):
    notes = Notes()
    found = objects_of(tmp_path, (0.0, 1.0, 0.0, 0.0, 0.0, -1.0), None, notes)
    assert [(pixels, area, m2) for pixels, area, m2 in found] == [(6, 6.0, None), (1, 1.0, None)]
    assert [line for line in notes.lines if "area_m2" in line and "has no CRS" in line]
    projected = Notes()
    objects_of(tmp_path, (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0), 32632, projected)
    assert not [line for line in projected.lines if "area_m2" in line]


def test_polygons_of_a_raster_with_a_crs_but_no_geotransform_have_no_ground_area(tmp_path):
    """Their pixels sit at x = column, y = -row: taken as 1 CRS unit each, a pixel came out 0.99 m² in UTM and
    1.2e10 m² in EPSG:4326."""
    for epsg in (32632, 4326, None):
        notes = Notes()
        found = objects_of(tmp_path, None, epsg, notes)
        assert [m2 for _, _, m2 in found] == [None, None], epsg
        assert [line for line in notes.lines if line.startswith("The mask has no geotransform") and "area_m2" in line]


def test_local_and_missing_crs_give_none():
    square = {1: ogr.CreateGeometryFromWkt("POLYGON((0 0,1 0,1 1,0 1,0 0))")}
    local = osr.SpatialReference()
    local.SetLocalCS("lab bench")
    assert ground_areas(square, local.ExportToWkt()) is None
    assert ground_areas(square, "") is None
    assert ground_areas({}, local.ExportToWkt()) is None


def test_polygons_far_apart_each_get_their_own_area():
    """Boxes on both sides of the antimeridian: one projection centred between them (at longitude 0) put them
    near its antipode, 10^5 times too large."""
    boxes = {1: (179.98, 179.99, 0.0, 0.01), 2: (-179.99, -179.98, 0.0, 0.01), 3: (10.0, 10.01, 60.0, 60.01)}
    geometries = {ident: ogr.CreateGeometryFromWkt(f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))")
                  for ident, (w, e, s, n) in boxes.items()}
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    areas = ground_areas(geometries, srs.ExportToWkt())
    for ident, (w, e, s, n) in boxes.items():
        assert areas[ident] == pytest.approx(cell_area(w, e, s, n), rel=1e-7), ident


def test_a_coarse_geographic_polygon_near_the_pole_follows_its_parallels():
    """Four corners of a 36 x 0.5 degree box at 88.5N: straight lines between them cut 6 % of its area off."""
    box = ogr.CreateGeometryFromWkt("POLYGON((0 88.5,36 88.5,36 89,0 89,0 88.5))")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    assert ground_areas({1: box}, srs.ExportToWkt())[1] == pytest.approx(cell_area(0, 36, 88.5, 89), rel=1e-5)


def test_polygon_edges_follow_a_curved_gcp_placement(tmp_path):
    """Ten GCPs of a bent swath: GDAL fits a second-order polynomial, so a long edge must not be a straight chord."""
    from osgeo import gdal

    from fers.fers_core.io.georeferencing import Georeferencing, PixelToMap

    def place(col, row):
        return 500000 + 10 * col + 0.05 * row * row, 4100000 - 10 * row + 0.02 * col * col

    gcps = [gdal.GCP(*place(c, r), 0, c, r) for r in (0, 20, 40) for c in (0, 20, 40)] + \
        [gdal.GCP(*place(10, 30), 0, 10, 30)]
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[10, 5:35] = 1  # a 30-pixel strip
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32632)
    for name, values in (("mask.tif", mask), ("scores.tif", mask.astype(np.float32))):
        dataset = gdal.GetDriverByName("GTiff").Create(str(tmp_path / name), 40, 40, 1,
                                                       gdal.GDT_Byte if name == "mask.tif" else gdal.GDT_Float32)
        dataset.SetGCPs(gcps, srs.ExportToWkt())
        dataset.GetRasterBand(1).WriteArray(values)
        dataset = None
    write_polygons(tmp_path / "mask.tif", tmp_path / "scores.tif", tmp_path / "objects.gpkg")
    dataset = ogr.Open(str(tmp_path / "objects.gpkg"))
    layer = dataset.GetLayer(0)
    feature = layer.GetNextFeature()
    geometry = feature.GetGeometryRef().Clone()
    vertices = np.array(geometry.GetGeometryRef(0).GetGeometryRef(0).GetPoints())[:, :2]
    placement = PixelToMap(Georeferencing.of(gdal.Open(str(tmp_path / "mask.tif"))))
    cols = np.arange(5, 36, dtype=np.float64)
    for row in (10.0, 11.0):  # every pixel corner of both long edges is a vertex, where the transformer puts it
        xs, ys = placement.points(cols, np.full_like(cols, row))
        distance = np.hypot(vertices[:, None, 0] - xs[None], vertices[:, None, 1] - ys[None]).min(axis=0)
        assert distance.max() < 1e-6, (row, distance.max())
