"""fers:rx's local mode, anomaly mask and polygon outputs, and output styles, through processing.run."""

import math
import os

import numpy as np
import pytest
from osgeo import ogr
from qgis.core import QgsProcessingException, QgsProcessingFeedback
from scipy.stats import chi2

from .core.detectors.test_local_rx import brute_force_local_rx, correlated_cube
from .rasters import GEOTRANSFORM, read, write_cube
from .rasters import leftovers as all_leftovers

NODATA = -9999.0


def leftovers(folder, keep):
    """Files left besides `keep`, ignoring the .aux.xml statistics QGIS may write beside inputs."""
    return [name for name in all_leftovers(folder, keep) if not name.endswith(".aux.xml")]


def gaussian_cube(rows=30, cols=40, bands=8, seed=1):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((bands, bands))
    return (rng.standard_normal((rows * cols, bands)) @ mixing + 50).T.reshape(bands, rows, cols).astype(np.float32)


@pytest.fixture
def cube_path(tmp_path):
    return write_cube(tmp_path / "cube.tif", gaussian_cube())


def run_rx(run_alg, tmp_path, source, feedback=None, **parameters):
    parameters = {"INPUT": source, "OUTPUT": str(tmp_path / "rx.tif"), **parameters}
    return run_alg("fers:rx", parameters, feedback)


@pytest.mark.parametrize("method, threshold", [(0, 1.0), (0, 0.5), (1, 20.0), (2, 5.0)])
def test_mask_pixel_counts_for_each_threshold_method(run_alg, tmp_path, cube_path, method, threshold):
    result = run_rx(run_alg, tmp_path, cube_path, THRESHOLD_METHOD=method, THRESHOLD=threshold,
                    OUTPUT_MASK=str(tmp_path / "mask.tif"))
    scores = read(result["OUTPUT"])[0]
    mask, nodata, geotransform, _ = read(result["OUTPUT_MASK"])
    if method == 0:
        expected_count = math.ceil(scores.size * threshold / 100)  # 12 and 6 of 1200 pixels
        cut = np.sort(scores.ravel())[::-1][expected_count - 1]
    elif method == 1:
        cut = threshold
    else:
        cut = chi2.isf(threshold / 100, 8)  # 8 bands, full rank
        assert 0.02 < np.mean(scores >= cut) < 0.09  # Gaussian background: about 5% flagged
    assert result["THRESHOLD_VALUE"] == pytest.approx(cut, rel=1e-6)
    np.testing.assert_array_equal(mask, (scores >= result["THRESHOLD_VALUE"]).astype(np.uint8))
    assert result["ANOMALY_PIXELS"] == int(mask.sum())
    if method == 0:
        assert mask.sum() == expected_count
    assert nodata == 255 and geotransform == GEOTRANSFORM


def test_the_mask_stage_works_within_the_memory_budget(run_alg, tmp_path):
    """MEMORY_MB also governs the threshold and mask passes: 1 MB, in tiles of the tiled score raster, gives the
    threshold and the mask of the default budget."""
    source = write_cube(tmp_path / "wide.tif", gaussian_cube(rows=600, cols=1400, bands=3, seed=2))
    outputs = {}
    for budget in (64, 1):
        outputs[budget] = run_rx(run_alg, tmp_path, source, OUTPUT=str(tmp_path / f"rx{budget}.tif"),
                                 OUTPUT_MASK=str(tmp_path / f"mask{budget}.tif"), MEMORY_MB=budget, THRESHOLD=0.5)
    assert outputs[1]["THRESHOLD_VALUE"] == outputs[64]["THRESHOLD_VALUE"]
    np.testing.assert_array_equal(read(outputs[1]["OUTPUT_MASK"])[0], read(outputs[64]["OUTPUT_MASK"])[0])
    assert outputs[1]["ANOMALY_PIXELS"] == math.ceil(600 * 1400 * 0.5 / 100)


def test_pixels_tied_at_a_top_percent_cut_are_all_flagged_and_the_log_says_why(run_alg, tmp_path):
    from .conftest import Recorder

    cube = gaussian_cube(rows=20, cols=20, bands=3, seed=4)
    cube[:, 5, 5:15] = np.array([80.0, 20.0, 65.0])[:, None]  # ten identical outliers: the top 1% (4 px) cuts them
    source = write_cube(tmp_path / "ties.tif", cube)
    log = Recorder()
    result = run_rx(run_alg, tmp_path, source, log, OUTPUT_MASK=str(tmp_path / "mask.tif"), THRESHOLD=1.0)
    assert result["ANOMALY_PIXELS"] == 10
    assert "6 more pixel(s) score exactly the threshold, so the mask flags 10 (every pixel at the cut is kept)." \
        in log.infos


def test_a_saturated_area_tied_at_the_cut_does_not_flag_the_whole_raster(run_alg, tmp_path):
    """Every pixel but a 2x2 target holds one spectrum (a saturated or constant area): flagging all ties at the top
    0.2% flagged 100% of the raster; beyond ten times the pixels asked, only the pixels above the cut are flagged."""
    from .conftest import Recorder

    cube = np.full((3, 40, 40), 1000.0, dtype=np.float32)
    cube[:, 10:12, 10:12] = np.array([1500.0, 800.0, 1200.0])[:, None, None]
    cube[:, 30, 30] = np.array([1010.0, 990.0, 1000.0])  # one pixel of its own, below the target
    source = write_cube(tmp_path / "flat.tif", cube)
    log = Recorder()
    result = run_rx(run_alg, tmp_path, source, log, OUTPUT_MASK=str(tmp_path / "mask.tif"), THRESHOLD=0.5)
    assert result["ANOMALY_PIXELS"] == 5  # the target and the other pixel; asked: 8 of 1600
    assert [w for w in log.warnings if w.startswith("1595 pixels share the score at the cut (a saturated or constant "
                                                    "area?): flagging them all would flag 100% of the valid pixels, "
                                                    "so only the 5 above it are flagged.")]


def test_a_saturated_area_at_the_highest_score_is_flagged_with_a_warning(run_alg, tmp_path):
    """150 pixels of one far-out spectrum hold the top score: no pixel lies above them, so all are flagged (a
    detector cannot rank them), and the log warns that the mask is far larger than asked (10 pixels)."""
    from .conftest import Recorder

    cube = np.random.default_rng(3).normal(1000.0, 10.0, (3, 100, 100)).astype(np.float32)
    cube[:, 20:30, 0:15] = np.array([1400.0, 700.0, 1300.0])[:, None, None]
    source = write_cube(tmp_path / "saturated.tif", cube)
    log = Recorder()
    result = run_rx(run_alg, tmp_path, source, log, OUTPUT_MASK=str(tmp_path / "mask.tif"), THRESHOLD=0.1)
    assert result["ANOMALY_PIXELS"] == 150
    assert "150 pixels share the highest score (a saturated or constant area?), so the mask flags them all: 1.5% " \
           "of the valid pixels instead of 0.1%. Look at the scores, or choose an absolute threshold." in log.warnings


def targets_scene(tmp_path):
    """Gaussian background with three strong targets, masked out of the statistics."""
    cube = gaussian_cube(rows=30, cols=30, bands=4, seed=2)
    targets = np.zeros((30, 30), dtype=np.uint8)
    targets[5:7, 5:7] = 1                       # 4 pixels
    targets[10, 25] = 1                         # 1 pixel
    targets[20, 20] = targets[21, 20] = targets[21, 21] = 1  # an L of 3 pixels
    cube[:, targets == 1] += np.array([60, -40, 50, 80], np.float32)[:, None]
    return (write_cube(tmp_path / "targets.tif", cube), write_cube(tmp_path / "targets_mask.tif", targets),
            targets)


def read_features(path):
    """Fields, FID and geometry area of each feature (the dataset stays open while reading: GDAL pitfall)."""
    dataset = ogr.Open(str(path))
    rows = []
    for feature in dataset.GetLayer(0):
        row = {key: feature.GetField(key) for key in feature.keys()}
        row.update(fid=feature.GetFID(), geometry_area=feature.GetGeometryRef().GetArea())
        rows.append(row)
    return rows


def test_polygon_attributes_of_hand_made_targets(run_alg, tmp_path):
    source, exclusion, targets = targets_scene(tmp_path)
    result = run_rx(run_alg, tmp_path, source, MASK=exclusion, THRESHOLD_METHOD=1, THRESHOLD=500.0, MIN_PIXELS=1,
                    OUTPUT_MASK=str(tmp_path / "mask.tif"), OUTPUT_POLYGONS=str(tmp_path / "objects.gpkg"))
    scores = read(result["OUTPUT"])[0]
    assert scores[targets == 1].min() > 500 > scores[targets == 0].max()
    np.testing.assert_array_equal(read(result["OUTPUT_MASK"])[0], targets)
    assert result["OBJECT_COUNT"] == 3
    features = read_features(result["OUTPUT_POLYGONS"])
    expected = [  # raster order of the first pixel
        [(5, 5), (5, 6), (6, 5), (6, 6)],
        [(10, 25)],
        [(20, 20), (21, 20), (21, 21)],
    ]
    for feature, pixels in zip(features, expected):
        rows, cols = np.array(pixels).T
        assert feature["id"] == feature["fid"]
        assert feature["pixels"] == len(pixels)
        assert feature["area"] == pytest.approx(len(pixels) * 100.0)
        assert feature["geometry_area"] == pytest.approx(feature["area"])
        assert feature["max_score"] == pytest.approx(float(scores[rows, cols].max()), rel=1e-7)
        assert feature["mean_score"] == pytest.approx(float(scores[rows, cols].astype(np.float64).mean()), rel=1e-7)
        assert feature["centroid_x"] == pytest.approx(GEOTRANSFORM[0] + (cols.mean() + 0.5) * 10)
        assert feature["centroid_y"] == pytest.approx(GEOTRANSFORM[3] - (rows.mean() + 0.5) * 10)
    assert len(features) == 3

    bigger = run_rx(run_alg, tmp_path, source, MASK=exclusion, THRESHOLD_METHOD=1, THRESHOLD=500.0, MIN_PIXELS=2,
                    OUTPUT_POLYGONS=str(tmp_path / "objects2.gpkg"), OUTPUT=str(tmp_path / "rx2.tif"))
    assert bigger["OBJECT_COUNT"] == 2
    assert sorted(f["pixels"] for f in read_features(bigger["OUTPUT_POLYGONS"])) == [3, 4]


def test_local_mode_matches_brute_force(run_alg, tmp_path):
    rng = np.random.default_rng(11)
    cube = correlated_cube(6, 17, 23, seed=11).astype(np.float32)
    invalid = rng.random((17, 23)) < 0.08
    cube[:, invalid] = NODATA
    excluded = (rng.random((17, 23)) < 0.1).astype(np.uint8)
    source = write_cube(tmp_path / "cube.tif", cube, nodata=NODATA)
    exclusion = write_cube(tmp_path / "exclude.tif", excluded)
    result = run_rx(run_alg, tmp_path, source, MODE=1, WINDOW_INNER=3, WINDOW_OUTER=9, MASK=exclusion)
    scores = read(result["OUTPUT"])[0]
    expected = brute_force_local_rx(cube.astype(np.float64), ~invalid, 3, 9, excluded != 0)
    defined = expected != NODATA
    assert np.all(scores[~defined] == NODATA) and np.all(scores[invalid] == NODATA)
    np.testing.assert_allclose(scores[defined], expected[defined], rtol=1e-6)


@pytest.mark.parametrize("inner, outer, message", [
    (4, 21, "inner .guard. window must be an odd"),
    (5, 20, "outer window must be an odd"),
    (7, 7, "larger than the inner window"),
])
def test_local_windows_are_validated(run_alg, tmp_path, cube_path, inner, outer, message):
    with pytest.raises(QgsProcessingException, match=message):
        run_rx(run_alg, tmp_path, cube_path, MODE=1, WINDOW_INNER=inner, WINDOW_OUTER=outer)
    assert leftovers(tmp_path, {"cube.tif"}) == []
    run_rx(run_alg, tmp_path, cube_path, MODE=0, WINDOW_INNER=inner, WINDOW_OUTER=outer)  # ignored in global mode


@pytest.mark.parametrize("parameters, message", [
    ({"THRESHOLD_METHOD": 0, "THRESHOLD": 0.0}, "top percentage"),
    ({"THRESHOLD_METHOD": 2, "THRESHOLD": 100.0}, "false-alarm rate"),
])
def test_thresholds_are_validated_when_objects_are_asked_for(run_alg, tmp_path, cube_path, parameters, message):
    with pytest.raises(QgsProcessingException, match=message):
        run_rx(run_alg, tmp_path, cube_path, OUTPUT_MASK=str(tmp_path / "mask.tif"), **parameters)
    run_rx(run_alg, tmp_path, cube_path, **parameters)  # no mask or polygons: the threshold is not used
    assert leftovers(tmp_path, {"cube.tif", "rx.tif"}) == []


def test_polygons_must_be_a_geopackage(run_alg, tmp_path, cube_path):
    with pytest.raises(QgsProcessingException, match=r"\.gpkg"):
        run_rx(run_alg, tmp_path, cube_path, OUTPUT_POLYGONS=str(tmp_path / "objects.shp"))


def test_nothing_extra_is_written_unless_asked(run_alg, tmp_path, cube_path):
    result = run_rx(run_alg, tmp_path, cube_path)
    assert set(result) == {"OUTPUT"}
    assert leftovers(tmp_path, {"cube.tif", "rx.tif"}) == []


def test_polygons_alone_leave_no_temporary_mask(run_alg, tmp_path, cube_path):
    from qgis.core import QgsProcessingUtils

    temp = QgsProcessingUtils.tempFolder()
    before = {name for name in os.listdir(temp) if name.startswith("fers_mask_")}
    result = run_rx(run_alg, tmp_path, cube_path, MIN_PIXELS=1, OUTPUT_POLYGONS=str(tmp_path / "objects.gpkg"))
    assert "OUTPUT_MASK" not in result and result["OBJECT_COUNT"] >= 1
    assert leftovers(tmp_path, {"cube.tif", "rx.tif", "objects.gpkg"}) == []
    assert {name for name in os.listdir(temp) if name.startswith("fers_mask_")} == before


class CancelAt(QgsProcessingFeedback):
    def __init__(self, percent):
        super().__init__()
        self.percent = percent
        self.progressChanged.connect(lambda value: value >= self.percent and self.cancel())


def test_cancel_during_the_object_outputs_leaves_nothing(run_alg, tmp_path, cube_path):
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_rx(run_alg, tmp_path, cube_path, CancelAt(90), OUTPUT_MASK=str(tmp_path / "mask.tif"),
               OUTPUT_POLYGONS=str(tmp_path / "objects.gpkg"))
    assert leftovers(tmp_path, {"cube.tif"}) == []


class ErrorLog(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.errors = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS API)
        self.errors.append(error)


def test_temporary_outputs_are_written_once(run_alg, tmp_path, cube_path):
    result = run_rx(run_alg, tmp_path, cube_path, OUTPUT_MASK="TEMPORARY_OUTPUT", OUTPUT_POLYGONS="TEMPORARY_OUTPUT")
    assert os.path.isfile(result["OUTPUT_MASK"]) and result["OUTPUT_POLYGONS"].endswith(".gpkg")
    assert os.path.isfile(result["OUTPUT_POLYGONS"])


def test_loaded_outputs_are_styled(qgis_app, tmp_path):
    import processing
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (
        QgsPalettedRasterRenderer,
        QgsProcessingContext,
        QgsProcessingOutputLayerDefinition,
        QgsProject,
        QgsSingleBandPseudoColorRenderer,
    )
    from qgis.PyQt.QtCore import Qt

    from fers.algorithms.styles import MAGMA, MASK_COLOUR, OUTLINE_COLOUR, SCORE_PERCENTILES

    source, exclusion, _ = targets_scene(tmp_path)
    project = QgsProject()
    context = QgsProcessingContext()
    context.setProject(project)
    outputs = {name: QgsProcessingOutputLayerDefinition(value, project) for name, value in
               (("OUTPUT", str(tmp_path / "rx.tif")), ("OUTPUT_MASK", "TEMPORARY_OUTPUT"),
                ("OUTPUT_POLYGONS", "TEMPORARY_OUTPUT"))}
    feedback = ErrorLog()
    results = processing.run("fers:rx", {"INPUT": source, "MASK": exclusion, **outputs},
                             onFinish=handleAlgorithmResults, context=context, feedback=feedback)
    assert feedback.errors == []  # every layer registered for loading was written and loaded
    layers = {}
    for layer in project.mapLayers().values():
        path = layer.source().split("|")[0]
        layers["rx.tif" if path == results["OUTPUT"] else "mask.tif" if path == results["OUTPUT_MASK"]
               else "objects.gpkg" if path == results["OUTPUT_POLYGONS"] else path] = layer
    assert set(layers) == {"rx.tif", "mask.tif", "objects.gpkg"}

    scores = layers["rx.tif"].renderer()
    assert isinstance(scores, QgsSingleBandPseudoColorRenderer) and scores.type() == "singlebandpseudocolor"
    values = read(results["OUTPUT"])[0]
    low, high = np.percentile(values, SCORE_PERCENTILES)
    assert scores.classificationMin() == pytest.approx(low, rel=1e-5)
    assert scores.classificationMax() == pytest.approx(high, rel=1e-5)
    items = scores.shader().rasterShaderFunction().colorRampItemList()
    assert items[0].color.name() == MAGMA[0] and items[-1].color.name() == MAGMA[-1]

    mask = layers["mask.tif"].renderer()
    assert isinstance(mask, QgsPalettedRasterRenderer)
    colours = {c.value: c.color for c in mask.classes()}
    assert colours[1] == MASK_COLOUR and colours[1].alpha() == 255 and colours[0].alpha() == 0

    polygons = layers["objects.gpkg"].renderer()
    assert polygons.type() == "singleSymbol"
    fill = polygons.symbol().symbolLayer(0)
    assert fill.brushStyle() == Qt.NoBrush and fill.strokeColor() == OUTLINE_COLOUR
    assert_outside_ramp(scores, colours[1], fill.strokeColor())

    stack = [node.layer() for node in project.layerTreeRoot().findLayers()]  # top first
    assert stack == [layers["objects.gpkg"], layers["mask.tif"], layers["rx.tif"]]


def assert_outside_ramp(score_renderer, *colours):
    """Each colour's hue is at least 60 degrees from every visibly coloured step of the score ramp (saturated and
    not near black: the ramp's darkest, blue-black steps read as black)."""
    ramp = score_renderer.shader().rasterShaderFunction().sourceColorRamp()
    steps = [ramp.color(i / 100) for i in range(101)]
    hues = [c.hsvHue() for c in steps if c.hsvSaturation() > 40 and c.value() > 80 and c.hsvHue() >= 0]
    assert len(hues) > 50
    for colour in colours:
        distance = min(min(abs(colour.hsvHue() - h), 360 - abs(colour.hsvHue() - h)) for h in hues)
        assert distance >= 60, (colour.name(), distance)
