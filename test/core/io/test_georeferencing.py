"""io.georeferencing: a raster's geotransform, GCPs and RPCs carried to outputs, and pixel positions on the map."""

import numpy as np
import pytest
from osgeo import gdal, osr

from fers.fers_core.errors import InputError, OutputError
from fers.fers_core.io.georeferencing import Georeferencing, PixelToMap
from fers.fers_core.io.grid import check_same_grid
from fers.fers_core.io.reader import RasterReader
from fers.fers_core.io.windows import Window
from fers.fers_core.io.writer import RasterWriter

from ...rasters import GEOTRANSFORM, utm_wkt, write_cube


def rotated_gcps(rows=30, cols=40):
    """Four corner GCPs of a grid turned by 30 degrees (an affine map, so a first-order fit is exact)."""
    angle = np.radians(30)

    def place(col, row):
        return (500000 + 10 * (col * np.cos(angle) + row * np.sin(angle)),
                4100000 + 10 * (col * np.sin(angle) - row * np.cos(angle)))

    return [gdal.GCP(*place(c, r), 0, c, r) for r, c in [(0, 0), (0, cols), (rows, 0), (rows, cols)]], place


def rpc_metadata():
    """RPCs of a 1e-4 degree grid whose top left corner is at 8 E, 45 N (line = -latitude, sample = longitude)."""
    def terms(index):
        return " ".join("1" if i == index else "0" for i in range(20))

    return {"LINE_OFF": "50", "SAMP_OFF": "50", "LAT_OFF": "44.995", "LONG_OFF": "8.005", "HEIGHT_OFF": "0",
            "LINE_SCALE": "50", "SAMP_SCALE": "50", "LAT_SCALE": "0.005", "LONG_SCALE": "0.005",
            "HEIGHT_SCALE": "1", "LINE_NUM_COEFF": terms(2).replace("1", "-1", 1), "LINE_DEN_COEFF": terms(0),
            "SAMP_NUM_COEFF": terms(1), "SAMP_DEN_COEFF": terms(0)}


def gcp_raster(path, bands=3, rows=30, cols=40):
    gcps, _ = rotated_gcps(rows, cols)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, bands, gdal.GDT_Float32)
    dataset.SetGCPs(gcps, utm_wkt())
    dataset = None
    return str(path)


def test_gcps_are_read_and_written_to_every_output_format(tmp_path):
    with RasterReader(gcp_raster(tmp_path / "gcp.tif")) as reader:
        assert reader.geotransform is None and len(reader.georeferencing.gcps) == 4
        for name in ("s.tif", "s.img", "s.bsq"):
            with RasterWriter.like(reader, tmp_path / name) as writer:
                writer.write(Window.whole(30, 40), np.ones((30, 40), np.float32))
                writer.commit()
            copy = Georeferencing.of(gdal.Open(str(tmp_path / name)))
            assert np.allclose(copy.gcps, reader.georeferencing.gcps, rtol=0, atol=1e-6), name  # .aux.xml: 1e-7
            assert osr.SpatialReference(copy.gcp_projection).IsSame(osr.SpatialReference(utm_wkt())), name
            assert copy.geotransform is None, name


def test_rpcs_are_carried_and_place_pixels_in_longitude_and_latitude(tmp_path):
    path = write_cube(tmp_path / "rpc.tif", np.ones((3, 100, 100), np.float32), geotransform=None, epsg=None)
    dataset = gdal.Open(path, gdal.GA_Update)
    dataset.SetMetadata(rpc_metadata(), "RPC")
    dataset = None
    with RasterReader(path) as reader:
        georeferencing = reader.georeferencing
        assert georeferencing.by_points and dict(georeferencing.rpc)["LINE_OFF"] == "50"
        with RasterWriter.like(reader, tmp_path / "s.tif") as writer:
            writer.commit()
    assert dict(Georeferencing.of(gdal.Open(str(tmp_path / "s.tif"))).rpc) == dict(georeferencing.rpc)
    xs, ys = PixelToMap(georeferencing).points([0, 100, 50], [0, 100, 25])
    assert np.allclose(xs, [8.0, 8.01, 8.005], atol=1e-7) and np.allclose(ys, [45.0, 44.99, 44.9975], atol=1e-7)
    assert osr.SpatialReference(georeferencing.crs).GetAuthorityCode(None) == "4326"


def test_pixel_positions_follow_the_geotransform_the_gcps_or_qgis_convention(tmp_path):
    with RasterReader(write_cube(tmp_path / "gt.tif", np.ones((3, 30, 40), np.float32))) as reader:
        xs, ys = PixelToMap(reader.georeferencing).points([0, 2.5], [0, 4])
        assert PixelToMap(reader.georeferencing).geotransform == GEOTRANSFORM
        assert list(xs) == [500000.0, 500025.0] and list(ys) == [4100000.0, 4099960.0]
    gcps, place = rotated_gcps()
    with RasterReader(gcp_raster(tmp_path / "gcp.tif")) as reader:
        placement = PixelToMap(reader.georeferencing)
        assert placement.geotransform is None and reader.georeferencing.crs == reader.georeferencing.gcp_projection
        xs, ys = placement.points(np.array([[3.5, 20.0]]), np.array([[7.25, 29.0]]))
        assert xs.shape == (1, 2)
        assert np.allclose(np.column_stack([xs[0], ys[0]]), [place(3.5, 7.25), place(20.0, 29.0)], atol=1e-6)
    with RasterReader(write_cube(tmp_path / "none.tif", np.ones((3, 30, 40), np.float32), geotransform=None,
                                 epsg=None)) as reader:
        xs, ys = PixelToMap(reader.georeferencing).points([0, 40], [0, 30])
        assert list(xs) == [0.0, 40.0] and list(ys) == [0.0, -30.0]  # where QGIS draws a raster without any
        assert reader.georeferencing.crs == ""


@pytest.mark.parametrize("kind", ["geotransform", "none"])
def test_a_georeferenced_or_bare_raster_writes_no_gcps(tmp_path, kind):
    geotransform = GEOTRANSFORM if kind == "geotransform" else None
    path = write_cube(tmp_path / "in.tif", np.ones((3, 10, 10), np.float32), geotransform=geotransform,
                      epsg=32632 if geotransform else None)
    with RasterReader(path) as reader, RasterWriter.like(reader, tmp_path / "s.tif") as writer:
        writer.commit()
    output = gdal.Open(str(tmp_path / "s.tif"))
    assert output.GetGCPCount() == 0 and output.GetGeoTransform(can_return_null=True) == geotransform


def test_a_mask_is_on_a_gcp_raster_s_grid_only_where_its_georeferencing_places_it_there(tmp_path):
    gcps, place = rotated_gcps()
    shifted = [gdal.GCP(g.GCPX + 5.0, g.GCPY, 0, g.GCPPixel, g.GCPLine) for g in gcps]  # 5 m east: half a 10 m pixel

    def mask(name, points=None, geotransform=None):
        dataset = gdal.GetDriverByName("GTiff").Create(str(tmp_path / name), 40, 30, 1, gdal.GDT_Byte)
        if points:
            dataset.SetGCPs(points, utm_wkt())
        if geotransform:
            dataset.SetGeoTransform(geotransform)
            dataset.SetProjection(utm_wkt())
        dataset = None
        return RasterReader(str(tmp_path / name))

    x0, y0 = place(0, 0)
    (x1, y1), (x2, y2) = place(1, 0), place(0, 1)
    with RasterReader(gcp_raster(tmp_path / "gcp.tif")) as scene:
        check_same_grid(mask("same.tif", gcps), scene)
        check_same_grid(mask("bare.tif"), scene)  # no georeferencing: taken as on the scene's grid
        check_same_grid(mask("affine.tif", geotransform=(x0, x1 - x0, x2 - x0, y0, y1 - y0, y2 - y0)), scene)
        with pytest.raises(InputError, match=r"places its pixels up to 0\.5 pixels away \(GCPs or RPCs\)"):
            check_same_grid(mask("shifted.tif", shifted), scene)
        with pytest.raises(InputError, match="places its pixels"):
            check_same_grid(mask("north-up.tif", geotransform=GEOTRANSFORM), scene)


def noisy_gcp_raster(path, wkt=None):
    """16 GCPs that no affine map fits exactly: GDAL fits a polynomial of order 2 or more."""
    rng = np.random.default_rng(1)
    points = [gdal.GCP(500000 + 10 * c + rng.normal(0, 3), 4100000 - 10 * r + rng.normal(0, 3), 0, c, r)
              for r in np.linspace(0, 30, 4) for c in np.linspace(0, 40, 4)]
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), 40, 30, 1, gdal.GDT_Float32)
    dataset.SetGCPs(points, wkt or utm_wkt())
    dataset = None
    return str(path)


@pytest.mark.parametrize("name", ["mask.tif", "mask.bsq", "mask.img"])
def test_an_output_of_a_gcp_raster_is_on_its_grid_in_every_format(tmp_path, name):
    with RasterReader(noisy_gcp_raster(tmp_path / "swath.tif")) as scene:
        with RasterWriter.like(scene, tmp_path / name, data_type=gdal.GDT_Byte) as writer:
            writer.commit()
        with RasterReader(str(tmp_path / name)) as mask:
            check_same_grid(mask, scene)  # the .aux.xml rounds the GCPs: still the same placement
    renamed = utm_wkt().replace("WGS 84 / UTM zone 32N", "UTM 32 North")
    with RasterReader(noisy_gcp_raster(tmp_path / "renamed.tif", renamed)) as other, \
            RasterReader(str(tmp_path / "swath.tif")) as scene:
        check_same_grid(other, scene)


def test_rpcs_place_pixels_at_the_height_qgis_uses(tmp_path):
    metadata = rpc_metadata()
    metadata.update(HEIGHT_OFF="1500", HEIGHT_SCALE="500",
                    SAMP_NUM_COEFF=" ".join(["0", "1", "0", "0.01"] + ["0"] * 16))  # sample moves with height
    path = write_cube(tmp_path / "rpc.tif", np.ones((1, 100, 100), np.float32), geotransform=None, epsg=None)
    dataset = gdal.Open(path, gdal.GA_Update)
    dataset.SetMetadata(metadata, "RPC")
    dataset = None
    with RasterReader(path) as reader:
        xs, ys = PixelToMap(reader.georeferencing).points([10.0, 80.0], [20.0, 70.0])
    source = gdal.Open(path)
    at_offset = gdal.Transformer(source, None, ["METHOD=RPC", "RPC_HEIGHT=1500"])
    at_zero = gdal.Transformer(source, None, ["METHOD=RPC"])
    expected = [at_offset.TransformPoint(False, c, r)[1][:2] for c, r in [(10, 20), (80, 70)]]
    assert np.allclose(np.column_stack([xs, ys]), expected, atol=1e-9)
    assert not np.allclose(expected, [at_zero.TransformPoint(False, c, r)[1][:2] for c, r in [(10, 20), (80, 70)]])


def test_gcps_gdal_cannot_use_leave_pixel_coordinates_as_qgis_draws_them(tmp_path):
    dataset = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "two.tif"), 40, 30, 1, gdal.GDT_Float32)
    dataset.SetGCPs([gdal.GCP(500000, 4100000, 0, 0, 0), gdal.GCP(500400, 4099700, 0, 40, 30)], utm_wkt())
    dataset = None
    with RasterReader(str(tmp_path / "two.tif")) as reader:
        placement = PixelToMap(reader.georeferencing)
    assert "GCP" in placement.failure or "points" in placement.failure.lower()
    assert placement.crs == "" and placement.geotransform == (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    assert [list(v) for v in placement.points([3.0], [4.0])] == [[3.0], [-4.0]]


def test_a_netcdf_output_of_a_gcp_raster_is_refused(tmp_path):
    with RasterReader(gcp_raster(tmp_path / "gcp.tif", bands=1)) as reader:
        with pytest.raises(OutputError, match=r"a netCDF file cannot hold the ground control points or RPCs .* write "
                                              r"a \.tif"):
            RasterWriter.like(reader, tmp_path / "scores.nc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gcp.tif"]


def geolocated_raster(folder, rows=30, cols=40):
    """A cube placed by geolocation arrays: longitude 8 + 1e-3 column, latitude 45 - 1e-3 row (pixel centres)."""
    rows_grid, cols_grid = np.mgrid[0:rows, 0:cols].astype(np.float64)
    for name, values in (("lon.tif", 8 + 1e-3 * (cols_grid + 0.5)), ("lat.tif", 45 - 1e-3 * (rows_grid + 0.5))):
        write_cube(folder / name, values, geotransform=None, epsg=None)
    dataset = gdal.GetDriverByName("GTiff").Create(str(folder / "swath.tif"), cols, rows, 2, gdal.GDT_Float32)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    dataset.SetMetadata({"X_DATASET": str(folder / "lon.tif"), "X_BAND": "1", "Y_DATASET": str(folder / "lat.tif"),
                         "Y_BAND": "1", "PIXEL_OFFSET": "0", "LINE_OFFSET": "0", "PIXEL_STEP": "1", "LINE_STEP": "1",
                         "SRS": srs.ExportToWkt()}, "GEOLOCATION")
    dataset = None
    return str(folder / "swath.tif")


def test_geolocation_arrays_are_carried_so_gdalwarp_places_outputs_like_the_input(tmp_path):
    with RasterReader(geolocated_raster(tmp_path)) as reader:
        assert reader.georeferencing.geolocation and not reader.georeferencing.by_points
        with RasterWriter.like(reader, tmp_path / "scores.tif") as writer:
            writer.write(Window.whole(30, 40), np.ones((30, 40), np.float32))
            writer.commit()
        assert Georeferencing.of(gdal.Open(str(tmp_path / "scores.tif"))).geolocation == \
            reader.georeferencing.geolocation
    warped = gdal.Warp(str(tmp_path / "warped.tif"), str(tmp_path / "scores.tif"), geoloc=True, dstSRS="EPSG:4326")
    west, step, _, north, _, _ = warped.GetGeoTransform()
    east, south = west + step * warped.RasterXSize, north + warped.GetGeoTransform()[5] * warped.RasterYSize
    warped = None
    assert np.allclose([west, east, south, north], [8.0, 8.04, 44.97, 45.0], atol=2e-3)


def test_a_geotransform_that_is_not_finite_is_refused_with_the_repair(tmp_path):
    """NaN in the geotransform: the scores were written with a NaN origin and the polygons failed in GEOS."""
    for bad in ((float("nan"), 4.0, 0.0, 5500000.0, 0.0, -4.0), (500000.0, float("inf"), 0.0, 0.0, 0.0, -4.0)):
        path = write_cube(tmp_path / "bad.tif", np.ones((3, 5, 5), dtype=np.float32), geotransform=bad)
        with pytest.raises(InputError, match=r"'bad.tif' has a geotransform that is not a finite number \(.*\): its "
                                             r"pixels cannot be placed. Repair it \(gdal_edit.py -a_ullr"):
            RasterReader(path)
