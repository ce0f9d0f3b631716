"""fers:detect through processing.run and qgis_process."""

import re
import subprocess

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from fers.fers_core.detectors.metrics import roc_auc

from .conftest import ROOT, SHARED, Recorder, require_reference, require_scenes
from .rasters import GEOTRANSFORM, leftovers, read, write_cube


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("scene")
    return write_scene(folder / "scene.tif", folder / "truth.tif", rows=70, cols=90, bands=24, seed=2)


def detect(run_alg, tmp_path, source, model, name="scores.tif", **parameters):
    parameters = {"INPUT": source, "MODEL": model, "OUTPUT": str(tmp_path / name), **parameters}
    return run_alg("fers:detect", parameters)


def authors_table():
    """Spectral-only AUCs of the authors' ABU-200 checkpoint from method.md section 8."""
    text = (SHARED / "design" / "method.md").read_text()
    number = r" \| ([0-9.]+)"
    rows = re.findall(r"^\| ([a-z0-9-]+)" + number * 5 + r" \|$", text, re.M)
    return {row[0]: float(row[3]) for row in rows}


@pytest.mark.slow
def test_authors_checkpoint_reproduces_reference_auc_on_real_scenes(run_alg, tmp_path):
    scenes = require_scenes()
    folder = require_reference() / "fers-checkpoints" / "abu-aviris-200"
    table = authors_table()
    assert len(table) == 11
    for name, expected in table.items():
        result = detect(run_alg, tmp_path, str(scenes / f"{name}.tif"), str(folder), f"{name}.tif", BRANCHES=1,
                        PRECISION=0)  # the reference AUCs are float32 ("auto" may run bfloat16)
        auc = roc_auc(read(result["OUTPUT"])[0], read(scenes / f"{name}_gt.tif")[0])
        assert round(auc, 4) == pytest.approx(expected, abs=1.5e-4), name


@pytest.mark.slow
def test_spectral_branch_is_tiling_invariant(run_alg, tmp_path, scene, model_file):
    whole = detect(run_alg, tmp_path, scene[0], model_file, "whole.tif", BRANCHES=1,
                   OUTPUT_SPECTRAL=str(tmp_path / "whole_spe.tif"))
    strips = detect(run_alg, tmp_path, scene[0], model_file, "strips.tif", BRANCHES=1, MEMORY_MB=1,
                    OUTPUT_SPECTRAL=str(tmp_path / "strips_spe.tif"))
    from osgeo import gdal

    a = gdal.Open(whole["OUTPUT_SPECTRAL"]).ReadAsArray()
    b = gdal.Open(strips["OUTPUT_SPECTRAL"]).ReadAsArray()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(read(whole["OUTPUT"])[0], read(strips["OUTPUT"])[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_strips_match_whole_image_features(tmp_path, scene, model_file):
    """Tiled strips (many cores, halo, edge padding) equal one whole-image network pass."""
    from osgeo import gdal

    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.enhance.features import compute_features
    from fers.fers_core.io.reader import RasterReader
    from fers.fers_core.io.windows import Window
    from fers.fers_core.pipeline.detect import run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions
    from fers.fers_core.pipeline.preprocess import apply_band_matrix, band_resampling_matrix

    model = load_any_model(model_file)
    options = DetectOptions(branches=("spectral",), block_mb=1, spectral_output=str(tmp_path / "spe.tif"),
                            precision="float32")  # exact tiling is a float32 property ("auto" may use bfloat16)
    run_fers_detection(scene[0], str(tmp_path / "s.tif"), model, options)
    with RasterReader(scene[0]) as reader:
        data, valid = reader.read(Window.whole(reader.height, reader.width), np.float32)
        wavelengths = reader.wavelengths_nm
    mapped = apply_band_matrix(band_resampling_matrix(24, 16, None, None), data)
    assert wavelengths is not None and model.wavelengths_nm is None  # index mapping is the one used
    vmin, vmax = mapped[:, valid].min(), mapped[:, valid].max()
    scaled = ((mapped - vmin) / (vmax - vmin) * 2 - 1) * 0.1
    scaled[:, ~valid] = scaled[:, valid].mean(axis=1)[:, None]
    expected = scaled + compute_features(model, scaled, ["spectral"])["spectral"]
    written = gdal.Open(str(tmp_path / "spe.tif")).ReadAsArray()
    np.testing.assert_allclose(written[:, valid], expected[:, valid], rtol=1e-4, atol=1e-5)
    assert np.all(written[:, ~valid] == -9999)


@pytest.mark.slow
def test_writing_caps_gdal_cache_to_a_few_output_tile_rows(tmp_path, scene, model_file):
    """Written score tiles are all GDAL caches while writing: the cap keeps them from piling up (the growth of
    peak memory with the raster's size), and the run-wide cap is back afterwards."""
    from osgeo import gdal

    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.feedback import Feedback
    from fers.fers_core.io.gdal_cache import bounded_gdal_cache, write_cache_mb
    from fers.fers_core.pipeline.detect import run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions

    seen = []

    class CacheProbe(Feedback):
        def set_progress(self, percent):
            seen.append((percent, gdal.GetCacheMax()))

    with bounded_gdal_cache(256):
        run_fers_detection(scene[0], str(tmp_path / "s.tif"), load_any_model(model_file),
                           DetectOptions(fusion="product"), CacheProbe())
        assert gdal.GetCacheMax() == 256 * 2**20
    writing = [cache for percent, cache in seen if percent > 55]
    networks = [cache for percent, cache in seen if 10 < percent <= 55]
    assert writing and max(writing) == write_cache_mb(90, 3) * 2**20 == 16 * 2**20
    assert networks and min(networks) == 256 * 2**20
    assert write_cache_mb(4096, 2) == 24  # the two product-fusion maps, three rows of 256 px tiles


@pytest.fixture(scope="module")
def wide_scene(tmp_path_factory):
    """Wider than two spatial tiles (128 px) and taller than one core (96 px), with nodata pixels."""
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("wide")
    return write_scene(folder / "scene.tif", folder / "truth.tif", rows=200, cols=300, bands=24, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("settings", [
    # product fusion (its temporary map file), networks run again in the score pass (as on Dask), enhanced cubes
    dict(fusion="product", spill=False, spectral=True, spatial=True),
    dict(fusion="sum", detector="local", window_inner=3, window_outer=7),  # sum fusion, local RX on the spilled cube
])
def test_small_windows_equal_one_window(tmp_path, wide_scene, model_file, settings):
    """A tiny MEMORY_MB splits detection into several column chunks and row strips; the outputs equal the
    single-window run's. Windows are whole spatial tile cores, so every spatial tile is the one of the single
    window, and the spectral branch is exactly tiling-invariant: the features are bit-identical (spatial tiles
    are never run as a batch of one, which PyTorch's CPU kernels round differently). Scores may differ in the
    last float32 bit (relative 1e-6), because the float64 RX statistics are merged over other windows and
    local RX streams the cube in its own blocks.
    """
    from osgeo import gdal

    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.feedback import Feedback
    from fers.fers_core.pipeline.detect import prepare_detection, run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions

    model = load_any_model(model_file)
    settings = dict(settings)
    extras = {name: settings.pop(name, False) for name in ("spectral", "spatial")}
    outputs = {}
    for budget in (1, 4096):
        folder = tmp_path / str(budget)
        paths = {f"{name}_output": str(folder / f"{name}.tif") for name, wanted in extras.items() if wanted}
        options = DetectOptions(block_mb=budget, precision="float32", device="cpu", **settings, **paths)
        setup = prepare_detection(wide_scene[0], model, DetectOptions(block_mb=budget, device="cpu"), Feedback())
        windows = setup.strips.windows
        setup.reader.close()
        if budget == 1:
            assert len({w.col for w in windows}) >= 3 and len({w.row for w in windows}) >= 3, windows
            assert all(w.col % 96 == 0 and w.row % 96 == 0 for w in windows)
        else:
            assert len(windows) == 1
        run_fers_detection(wide_scene[0], str(folder / "scores.tif"), model, options)
        outputs[budget] = {path.name: gdal.Open(str(path)).ReadAsArray() for path in sorted(folder.glob("*.tif"))}
        assert leftovers(folder, set(outputs[budget])) == []
    small, large = outputs[1], outputs[4096]
    assert small.keys() == large.keys() and len(small) == 1 + sum(extras.values())
    for name in small:
        assert small[name].dtype == np.float32
        np.testing.assert_array_equal(small[name] == -9999, large[name] == -9999)
        if name == "scores.tif":
            np.testing.assert_allclose(small[name], large[name], rtol=1e-6, atol=0, err_msg=name)
        else:  # the enhanced cubes x + F: no statistics involved
            np.testing.assert_array_equal(small[name], large[name], err_msg=name)


@pytest.mark.slow
def test_outputs_keep_grid_nodata_and_find_targets(run_alg, tmp_path, scene, model_file):
    result = detect(run_alg, tmp_path, scene[0], model_file)
    scores, nodata, geotransform, projection = read(result["OUTPUT"])
    truth = read(scene[1])[0]
    source_nodata = read(scene[0])[0] == -9999
    assert scores.shape == (70, 90) and nodata == -9999
    assert np.all(scores[source_nodata] == -9999) and np.all(scores[~source_nodata] >= 0)
    assert geotransform[1] == 4.0 and "32633" in projection
    assert roc_auc(scores[~source_nodata], truth[~source_nodata]) > 0.9


def test_non_square_raster_without_georeference(run_alg, tmp_path, model_file):
    cube = np.random.default_rng(0).normal(100, 10, (20, 13, 150)).astype(np.float32)
    source = write_cube(tmp_path / "strip.tif", cube, geotransform=GEOTRANSFORM, epsg=None)
    scores = read(detect(run_alg, tmp_path, source, model_file)["OUTPUT"])[0]
    assert scores.shape == (13, 150) and np.isfinite(scores).all()


@pytest.mark.slow
@pytest.mark.parametrize("branches,fusion", [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)])
def test_branch_and_fusion_choices(run_alg, tmp_path, scene, model_file, branches, fusion):
    result = detect(run_alg, tmp_path, scene[0], model_file, BRANCHES=branches, FUSION=fusion)
    scores = read(result["OUTPUT"])[0]
    valid = scores != -9999
    assert valid.sum() > 5000 and np.all(scores[valid] >= 0)
    if fusion == 2 or (fusion == 0 and branches == 0):  # 16 model bands: the reference fuses by product
        assert scores[valid].max() <= 1.0


@pytest.mark.slow
def test_sum_and_product_fusion_differ(run_alg, tmp_path, scene, model_file):
    product = read(detect(run_alg, tmp_path, scene[0], model_file, "p.tif", FUSION=2)["OUTPUT"])[0]
    total = read(detect(run_alg, tmp_path, scene[0], model_file, "s.tif", FUSION=1)["OUTPUT"])[0]
    assert not np.allclose(product, total)


@pytest.mark.slow
def test_device_choices(run_alg, tmp_path, scene, model_file):
    import torch

    cpu = read(detect(run_alg, tmp_path, scene[0], model_file, "cpu.tif", DEVICE=1, BRANCHES=1)["OUTPUT"])[0]
    auto = read(detect(run_alg, tmp_path, scene[0], model_file, "auto.tif", DEVICE=0, BRANCHES=1)["OUTPUT"])[0]
    np.testing.assert_allclose(cpu, auto, rtol=1e-4, atol=1e-4)
    if not torch.cuda.is_available():
        with pytest.raises(QgsProcessingException, match="no CUDA GPU"):
            detect(run_alg, tmp_path, scene[0], model_file, "cuda.tif", DEVICE=2)
        assert not (tmp_path / "cuda.tif").exists()


@pytest.mark.slow
def test_model_without_spatial_branch_uses_spectral_and_says_so(run_alg, tmp_path, scene):
    from fers.fers_core.enhance.model_file import random_init_model, save_model

    path = tmp_path / "spectral_only.pt"
    save_model(random_init_model(16, seed=0, branches=("spectral",)), path)

    feedback = Recorder()
    run_alg("fers:detect", {"INPUT": scene[0], "MODEL": str(path), "OUTPUT": str(tmp_path / "o.tif")}, feedback)
    assert any("no spatial branch" in line for line in feedback.warnings)
    with pytest.raises(QgsProcessingException, match="no spatial branch"):
        detect(run_alg, tmp_path, scene[0], str(path), "spa.tif", BRANCHES=2)


@pytest.mark.slow
def test_enhanced_cube_outputs(run_alg, tmp_path, scene, model_file):
    from osgeo import gdal

    result = detect(run_alg, tmp_path, scene[0], model_file, OUTPUT_SPECTRAL=str(tmp_path / "spe.tif"),
                    OUTPUT_SPATIAL=str(tmp_path / "spa.tif"))
    for key in ("OUTPUT_SPECTRAL", "OUTPUT_SPATIAL"):
        dataset = gdal.Open(result[key])
        assert dataset.RasterCount == 16 and dataset.GetGeoTransform()[1] == 4.0
        cube = dataset.ReadAsArray()
        assert np.all(cube[:, read(scene[0])[0] == -9999] == -9999)
    spectral = gdal.Open(result["OUTPUT_SPECTRAL"]).ReadAsArray()
    spatial = gdal.Open(result["OUTPUT_SPATIAL"]).ReadAsArray()
    assert not np.allclose(spectral, spatial)


@pytest.mark.slow
def test_imported_model_file_equals_the_folder(run_alg, tmp_path):
    scenes = require_scenes()
    folder = str(require_reference() / "fers-checkpoints" / "had100-50")
    imported = run_alg("fers:import_checkpoint", {"FOLDER": folder, "OUTPUT_MODEL": str(tmp_path / "m.pt")})
    assert imported["SUMMARY"].startswith("50 bands")
    source = str(scenes / "hydice-urban-162.tif")
    a = read(detect(run_alg, tmp_path, source, folder, "a.tif", BRANCHES=1)["OUTPUT"])[0]
    b = read(detect(run_alg, tmp_path, source, imported["OUTPUT_MODEL"], "b.tif", BRANCHES=1)["OUTPUT"])[0]
    np.testing.assert_array_equal(a, b)


def test_malformed_model_files_are_refused_with_their_reason(run_alg, tmp_path, scene):
    (tmp_path / "text.pt").write_text("not a model")
    (tmp_path / "empty_folder").mkdir()
    cases = {str(tmp_path / "text.pt"): "not a PyTorch", str(tmp_path / "missing.pt"): "does not exist",
             str(tmp_path / "empty_folder"): "convh.pt"}
    for model, message in cases.items():
        with pytest.raises(QgsProcessingException, match=message):
            detect(run_alg, tmp_path, scene[0], model, "x.tif")
    assert leftovers(tmp_path, {"text.pt", "empty_folder"}) == []


@pytest.mark.slow
def test_empty_model_uses_the_bundled_model_or_names_the_parameter(run_alg, tmp_path, scene):
    from fers.fers_core.enhance.default_model import DEFAULT_MODEL_FILE

    parameters = {"INPUT": scene[0], "OUTPUT": str(tmp_path / "default.tif")}
    if DEFAULT_MODEL_FILE.exists():
        assert read(run_alg("fers:detect", parameters)["OUTPUT"])[0].shape == (70, 90)
    else:
        with pytest.raises(QgsProcessingException, match="set MODEL"):
            run_alg("fers:detect", parameters)


@pytest.mark.slow
def test_qgis_process_runs_detect(tmp_path, scene, model_file):
    output = tmp_path / "cli.tif"
    completed = subprocess.run(
        [str(ROOT / "scripts" / "qgis_process"), "run", "fers:detect", "--", f"INPUT={scene[0]}",
         f"MODEL={model_file}", "BRANCHES=1", "BANDS=1", "BANDS=5", "BANDS=9", "BANDS=20", f"OUTPUT={output}"],
        capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    assert "4 raster bands resampled" in completed.stdout
    assert "far fewer than the model's 16" in completed.stdout + completed.stderr
    assert read(output)[0].shape == (70, 90)



@pytest.mark.slow
def test_local_detector_equals_local_rx_on_the_enhanced_cube(run_alg, tmp_path, scene, model_file):
    result = detect(run_alg, tmp_path, scene[0], model_file, "local.tif", BRANCHES=1, DETECTOR=1,
                    WINDOW_INNER=3, WINDOW_OUTER=9, OUTPUT_SPECTRAL=str(tmp_path / "cube.tif"))
    direct = run_alg("fers:rx", {"INPUT": result["OUTPUT_SPECTRAL"], "MODE": 1, "WINDOW_INNER": 3,
                                 "WINDOW_OUTER": 9, "OUTPUT": str(tmp_path / "direct.tif")})
    np.testing.assert_allclose(read(result["OUTPUT"])[0], read(direct["OUTPUT"])[0], rtol=1e-4, atol=1e-3)
    assert leftovers(tmp_path, {"local.tif", "cube.tif", "direct.tif"}) == []


@pytest.mark.slow
def test_local_detector_with_product_fusion(run_alg, tmp_path, scene, model_file):
    scores = read(detect(run_alg, tmp_path, scene[0], model_file, "lp.tif", DETECTOR=1, FUSION=2,
                         WINDOW_INNER=3, WINDOW_OUTER=9)["OUTPUT"])[0]
    valid = scores != -9999
    assert 0 <= scores[valid].min() and scores[valid].max() <= 1.0
    assert leftovers(tmp_path, {"lp.tif"}) == []


def test_an_exclusion_mask_is_reported_with_the_background_it_leaves(run_alg, tmp_path, scene, model_file):
    from osgeo import gdal

    truth, _, geotransform, projection = read(scene[1])
    height, width = truth.shape
    mask = str(tmp_path / "exclude.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(mask, width, height, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform(geotransform)
    dataset.SetProjection(projection)
    exclusion = np.zeros((height, width), np.uint8)
    exclusion[:10, :] = 1
    dataset.GetRasterBand(1).WriteArray(exclusion)
    dataset = None
    log = Recorder()
    detect_feedback = run_alg("fers:detect", {"INPUT": scene[0], "MODEL": model_file, "MASK": mask,
                                              "OUTPUT": str(tmp_path / "s.tif")}, log)
    valid = read(detect_feedback["OUTPUT"])[0] != -9999
    lines = [line for line in log.infos if line.startswith("Statistics from ")]
    assert lines == [f"Statistics from {int(valid[10:].sum())} background pixels ({int(valid.sum())} valid; the mask "
                     "keeps the others out)."]


def test_mask_and_polygon_outputs(run_alg, tmp_path, scene, model_file):
    result = detect(run_alg, tmp_path, scene[0], model_file, BRANCHES=1, THRESHOLD_METHOD=0, THRESHOLD=1.0,
                    OUTPUT_MASK=str(tmp_path / "mask.tif"), OUTPUT_POLYGONS=str(tmp_path / "objects.gpkg"))
    mask = read(result["OUTPUT_MASK"])[0]
    valid_pixels = int((read(result["OUTPUT"])[0] != -9999).sum())
    assert int((mask == 1).sum()) == result["ANOMALY_PIXELS"] >= int(np.ceil(valid_pixels * 0.01))
    assert result["ANOMALY_PIXELS"] <= valid_pixels * 0.01 + 5  # ties only
    assert result["OBJECT_COUNT"] >= 1 and (tmp_path / "objects.gpkg").exists()


def test_false_alarm_threshold_is_refused_for_product_fusion(run_alg, tmp_path, scene, model_file):
    with pytest.raises(QgsProcessingException, match="no chi-square law"):
        detect(run_alg, tmp_path, scene[0], model_file, "p.tif", FUSION=2, THRESHOLD_METHOD=2, THRESHOLD=0.1,
               OUTPUT_MASK=str(tmp_path / "m.tif"))
    assert leftovers(tmp_path, set()) == []


@pytest.mark.slow
def test_bfloat16_precision_keeps_the_detection(run_alg, tmp_path, scene, model_file):
    """PRECISION 0 = float32, 1 = bfloat16 everywhere, 2 = auto (the default): all keep the detection."""
    truth = read(scene[1])[0]
    aucs = []
    for precision in (0, 1, 2):
        scores = read(detect(run_alg, tmp_path, scene[0], model_file, f"p{precision}.tif", BRANCHES=1,
                             PRECISION=precision)["OUTPUT"])[0]
        valid = scores != -9999
        aucs.append(roc_auc(scores[valid], truth[valid]))
    assert abs(aucs[0] - aucs[1]) < 0.005
    assert abs(aucs[0] - aucs[2]) < 0.001


def test_precision_default_is_auto(qgis_app):
    from fers.algorithms.detect_algorithm import DetectAlgorithm
    from fers.fers_core.choices import PRECISION_CHOICES

    algorithm = DetectAlgorithm()
    algorithm.initAlgorithm()
    assert PRECISION_CHOICES[algorithm.parameterDefinition("PRECISION").defaultValue()] == "auto"
    from fers.fers_core.enhance.default_model import DEFAULT_MODEL_FILE
    from fers.fers_core.enhance.model_file import load_model
    from fers.fers_core.enhance.precision import mixed_precision_checked

    # the bundled model records its AUC check under mixed precision, so auto may use bfloat16 for it
    assert mixed_precision_checked(load_model(DEFAULT_MODEL_FILE))


@pytest.mark.slow
def test_precision_choices(tmp_path, scene, model_file):
    """'auto' is 'mixed' where bfloat16 is native, else 'float32'; 'float32' forces float32 everywhere;
    'mixed' keeps the detection (bfloat16 only in the spectral encoder and the spatial trunk)."""
    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.enhance.networks.inference import LowPrecision, inference_copy
    from fers.fers_core.enhance.precision import MIXED_PRECISION_CHECKED, bfloat16_native, resolve_precision
    from fers.fers_core.errors import InputError
    from fers.fers_core.pipeline.detect import run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions

    assert resolve_precision("auto", "cpu") == ("mixed" if bfloat16_native("cpu") else "float32")
    assert resolve_precision("float32", "cpu") == "float32"
    unchecked = load_any_model(model_file)
    assert resolve_precision("auto", "cpu", unchecked) == "float32"  # no AUC check recorded: float32
    unchecked.provenance[MIXED_PRECISION_CHECKED] = "checked"
    assert resolve_precision("auto", "cpu", unchecked) == ("mixed" if bfloat16_native("cpu") else "float32")
    with pytest.raises(InputError, match="Unknown precision"):
        resolve_precision("half", "cpu")
    model = load_any_model(model_file)
    for network in model.branches.values():
        assert not any(isinstance(m, LowPrecision) for m in inference_copy(network, "cpu").modules())
        assert sum(isinstance(m, LowPrecision) for m in inference_copy(network, "cpu", mixed=True).modules()) == 1
    truth = read(scene[1])[0]
    aucs = {}
    for precision in ("float32", "mixed"):
        options = DetectOptions(precision=precision)
        run_fers_detection(scene[0], str(tmp_path / f"{precision}.tif"), model, options)
        assert options.precision == precision
        scores = read(str(tmp_path / f"{precision}.tif"))[0]
        valid = scores != -9999
        aucs[precision] = roc_auc(scores[valid], truth[valid])
    assert abs(aucs["float32"] - aucs["mixed"]) < 0.005


def test_bands_listed_out_of_order_are_used_in_the_files_order(run_alg, tmp_path, scene, model_file):
    """The networks read a spectrum in its order: BANDS '13-24, 1-12' fed them a scrambled one (scores moved by up
    to 0.29 with the bundled model); the bands are used in the file's order, and the log says so."""
    log = Recorder()
    shuffled = run_alg("fers:detect", {"INPUT": scene[0], "MODEL": model_file, "BANDS": list(range(13, 25)) +
                                       list(range(1, 13)), "OUTPUT": str(tmp_path / "shuffled.tif")}, log)
    ordered = detect(run_alg, tmp_path, scene[0], model_file, "ordered.tif", BANDS=list(range(1, 25)))
    np.testing.assert_array_equal(read(shuffled["OUTPUT"])[0], read(ordered["OUTPUT"])[0])
    assert [line for line in log.infos if line.startswith("BANDS lists the raster's bands out of their order: they "
                                                          "are used in the file's order (1-24)")]


def test_a_branch_cube_the_run_does_not_compute_is_not_among_the_results(run_alg, tmp_path, scene, model_file):
    """Spectral only with OUTPUT_SPATIAL: the warning said the file is not written, yet the results named it, and the
    desktop then failed to load it."""
    log = Recorder()
    result = run_alg("fers:detect", {"INPUT": scene[0], "MODEL": model_file, "BRANCHES": 1,
                                     "OUTPUT_SPATIAL": str(tmp_path / "spa.tif"), "OUTPUT": str(tmp_path / "s.tif")},
                     log)
    assert not result.get("OUTPUT_SPATIAL") and not (tmp_path / "spa.tif").exists()
    assert "No spatial features were computed, so spa.tif is not written." in log.warnings
