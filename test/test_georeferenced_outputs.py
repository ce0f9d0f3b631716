"""Outputs draw where their input draws in QGIS: rasters placed by GCPs and rasters without georeferencing,
through processing.run of fers:rx and fers:detect, checked on QGIS layers."""

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsRasterLayer, QgsVectorLayer

from .core.io.test_georeferencing import rotated_gcps
from .rasters import utm_wkt, write_cube

ROWS, COLS, BANDS = 30, 40, 16
TARGET = (slice(10, 12), slice(20, 23))  # rows 10-11, columns 20-22


def scene():
    data = np.random.default_rng(0).normal(100, 5, (BANDS, ROWS, COLS)).astype(np.float32)
    data[:, TARGET[0], TARGET[1]] += 80
    return data


def gcp_scene(path):
    gcps, place = rotated_gcps(ROWS, COLS)
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), COLS, ROWS, BANDS, gdal.GDT_Float32)
    dataset.SetGCPs(gcps, utm_wkt())
    for index, plane in enumerate(scene()):
        dataset.GetRasterBand(index + 1).WriteArray(plane)
    dataset = None
    return str(path), place


def run_with_objects(run_alg, algorithm, path, tmp_path, model_file):
    parameters = {"INPUT": path, "OUTPUT": str(tmp_path / "scores.tif"), "OUTPUT_MASK": str(tmp_path / "mask.tif"),
                  "OUTPUT_POLYGONS": str(tmp_path / "objects.gpkg"), "THRESHOLD_METHOD": 1, "THRESHOLD": 0}
    if algorithm == "fers:detect":
        # rank-free single model; an absolute cut between the target and the background, from the scores
        parameters.update(MODEL=model_file, OUTPUT_SPECTRAL=str(tmp_path / "cube.tif"))
    run_alg(algorithm, {**parameters, "OUTPUT_MASK": None, "OUTPUT_POLYGONS": None})
    scores = gdal.Open(parameters["OUTPUT"]).ReadAsArray()
    parameters["THRESHOLD"] = float(np.sort(scores.ravel())[-7])  # the six target pixels score highest
    return run_alg(algorithm, parameters)


def polygon_layer(path):
    layer = QgsVectorLayer(path, "objects", "ogr")
    assert layer.isValid()
    return layer


@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_outputs_of_a_gcp_raster_keep_its_gcps_and_polygons_lie_on_its_pixels(run_alg, tmp_path, model_file,
                                                                              algorithm):
    path, place = gcp_scene(tmp_path / "swath.tif")
    results = run_with_objects(run_alg, algorithm, path, tmp_path, model_file)
    source = QgsRasterLayer(path, "swath")
    assert source.isValid() and source.crs().authid() == "EPSG:32632"  # QGIS draws it through its GCPs
    rasters = [results["OUTPUT"], results["OUTPUT_MASK"]] + ([results["OUTPUT_SPECTRAL"]]
                                                             if algorithm == "fers:detect" else [])
    for output in rasters:
        assert gdal.Open(output).GetGCPCount() == 4, output
        layer = QgsRasterLayer(output, "output")
        assert layer.crs() == source.crs(), output
        assert layer.extent().toString(3) == source.extent().toString(3), output
    assert results["OBJECT_COUNT"] == 1
    objects = polygon_layer(results["OUTPUT_POLYGONS"])
    assert objects.crs() == source.crs()
    feature = next(objects.getFeatures())
    corners = [place(c, r) for c, r in [(20, 10), (23, 10), (20, 12), (23, 12)]]
    xs, ys = zip(*corners)
    box = feature.geometry().boundingBox()
    assert np.allclose([box.xMinimum(), box.xMaximum(), box.yMinimum(), box.yMaximum()],
                       [min(xs), max(xs), min(ys), max(ys)], atol=1e-6)
    assert feature["area"] == pytest.approx(6 * 100.0)  # six 10 m pixels, turned
    assert feature["area_m2"] == pytest.approx(6 * 100.0, rel=2e-3)  # on the ellipsoid: UTM's scale differs
    assert (feature["centroid_x"], feature["centroid_y"]) == pytest.approx(place(21.5, 11.0))


@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_polygons_of_a_raster_without_georeferencing_lie_where_qgis_draws_its_pixels(run_alg, tmp_path, model_file,
                                                                                     algorithm):
    path = write_cube(tmp_path / "bare.tif", scene(), geotransform=None, epsg=None)
    results = run_with_objects(run_alg, algorithm, path, tmp_path, model_file)
    scores = QgsRasterLayer(results["OUTPUT"], "scores")
    assert scores.extent().toString(3) == QgsRasterLayer(path, "bare").extent().toString(3)
    assert scores.extent().toString(0) == "0,-30 : 40,0"  # QGIS: x = column, y = -row
    objects = polygon_layer(results["OUTPUT_POLYGONS"])
    assert objects.crs().description() == "Undefined Cartesian SRS"  # not GDAL's default, "Undefined geographic"
    feature = next(objects.getFeatures())
    assert feature.geometry().boundingBox().toString(0) == "20,-12 : 23,-10"
    assert (feature["centroid_x"], feature["centroid_y"], feature["area"]) == (21.5, -11.0, 6.0)


def test_gcps_gdal_cannot_use_give_polygons_in_pixel_coordinates_with_a_warning(run_alg, tmp_path, model_file):
    from .conftest import Recorder

    dataset = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "two.tif"), COLS, ROWS, BANDS, gdal.GDT_Float32)
    dataset.SetGCPs([gdal.GCP(500000, 4100000, 0, 0, 0), gdal.GCP(500400, 4099700, 0, COLS, ROWS)], utm_wkt())
    for index, plane in enumerate(scene()):
        dataset.GetRasterBand(index + 1).WriteArray(plane)
    dataset = None
    feedback = Recorder()
    results = run_alg("fers:rx", {"INPUT": str(tmp_path / "two.tif"), "OUTPUT": str(tmp_path / "scores.tif"),
                                  "OUTPUT_POLYGONS": str(tmp_path / "objects.gpkg"), "THRESHOLD": 0.5}, feedback)
    assert any("GCPs or RPCs cannot place its pixels" in warning for warning in feedback.warnings)
    feature = next(polygon_layer(results["OUTPUT_POLYGONS"]).getFeatures())
    assert feature.geometry().boundingBox().toString(0) == "20,-12 : 23,-10"


@pytest.mark.parametrize("algorithm", ["fers:rx", "fers:detect"])
def test_a_netcdf_output_of_a_gcp_raster_is_refused_before_the_first_pass(run_alg, tmp_path, model_file, algorithm):
    from qgis.core import QgsProcessingException

    from .conftest import Recorder

    path, _ = gcp_scene(tmp_path / "swath.tif")
    log = Recorder()
    with pytest.raises(QgsProcessingException, match=r"^OUTPUT '.*scores.nc': the input is placed by ground control "
                                                     r"points or RPCs, and a netCDF file cannot hold"):
        run_alg(algorithm, {"INPUT": path, "MODEL": model_file, "OUTPUT": str(tmp_path / "scores.nc")}
                if algorithm == "fers:detect" else {"INPUT": path, "OUTPUT": str(tmp_path / "scores.nc")}, log)
    assert not [line for line in log.infos if line.startswith(("Global RX on", "Device:", "Model:"))]  # no pass ran
