"""fers:detect with several models (MODELS, FUSE_RX, the bundled default ensemble) through processing.run and
qgis_process."""

import subprocess

import numpy as np
import pytest
from qgis.core import QgsProcessingException
from scipy.stats import rankdata

from .conftest import ROOT, Recorder
from .rasters import leftovers, read, write_cube


def mid_rank_cdf(values):
    return (rankdata(np.asarray(values, dtype=np.float64)) - 0.5) / len(values)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two random-init model files of different band counts (spectral only) and one with both branches."""
    from fers.fers_core.enhance.model_file import random_init_model, save_model

    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, bands, branches in (("r12", 12, ("spectral",)), ("r30", 30, ("spectral",)),
                                  ("r16ss", 16, ("spectral", "spatial"))):
        paths[name] = str(folder / f"{name}.pt")
        save_model(random_init_model(bands, seed=0, branches=branches), paths[name])
    return paths


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("scene")
    return write_scene(folder / "scene.tif", folder / "truth.tif", rows=50, cols=60, bands=24, seed=2)


@pytest.mark.slow
def test_two_models_and_plain_rx_fuse_to_the_rank_mean_of_single_runs(run_alg, tmp_path, scene, models):
    fused = run_alg("fers:detect", {"INPUT": scene[0], "MODEL": models["r12"], "MODELS": [models["r30"]],
                                    "FUSE_RX": True, "BRANCHES": 1, "OUTPUT": str(tmp_path / "fused.tif")})
    singles = [read(run_alg("fers:detect", {"INPUT": scene[0], "MODEL": models[name], "BRANCHES": 1,
                                            "OUTPUT": str(tmp_path / f"{name}.tif")})["OUTPUT"])[0]
               for name in ("r12", "r30")]
    singles.append(read(run_alg("fers:rx", {"INPUT": scene[0], "OUTPUT": str(tmp_path / "rx.tif")})["OUTPUT"])[0])
    valid = np.logical_and.reduce([s != -9999 for s in singles])
    expected = np.mean([mid_rank_cdf(s[valid]) for s in singles], axis=0)
    scores = read(fused["OUTPUT"])[0]
    np.testing.assert_allclose(scores[valid], expected, atol=1e-6)
    assert np.all(scores[~valid] == -9999)
    assert leftovers(tmp_path, {"fused.tif", "r12.tif", "r30.tif", "rx.tif"}) == []


def test_an_ensemble_reports_the_bands_marked_bad_once(run_alg, tmp_path, scene, models):
    from osgeo import gdal

    marked = str(tmp_path / "marked.tif")
    gdal.Translate(marked, scene[0])
    dataset = gdal.Open(marked, gdal.GA_Update)
    dataset.GetRasterBand(7).SetMetadataItem("bbl", "0")
    dataset = None
    parameters = {"INPUT": marked, "MODEL": models["r12"], "MODELS": [models["r30"]], "FUSE_RX": True, "BRANCHES": 1}
    feedback = Recorder()
    run_alg("fers:detect", {**parameters, "OUTPUT": str(tmp_path / "default.tif")}, feedback)
    assert [line for line in feedback.infos if "marked bad" in line] == [
        "Band 7 is marked bad in the raster's metadata (bbl = 0) and left out: 23 bands are used. List bands in BANDS "
        "to choose them yourself."]
    feedback = Recorder()
    run_alg("fers:detect", {**parameters, "BANDS": "1-10", "OUTPUT": str(tmp_path / "listed.tif")}, feedback)
    assert [line for line in feedback.warnings if "marks bad" in line] == [
        "BANDS includes band 7, which the raster's metadata marks bad (bbl = 0): noisy bands can weaken the results."]


def bundled_scene(folder, bands):
    from fers.fers_core.synthetic import write_scene

    return write_scene(folder / f"scene{bands}.tif", folder / f"truth{bands}.tif", rows=40, cols=40, bands=bands,
                       seed=bands)[0]


def test_on_a_tiny_area_the_default_leaves_out_members_its_pixels_cannot_support(run_alg, tmp_path):
    """100 pixels of 120 bands: RX on 100 or 200 model bands has no statistics there (it needs more pixels than
    features + 1), the 50-band model has; the run used to stop at the 100-band member with advice that did not help."""
    from fers.fers_core.enhance.default_model import DEFAULT_MODEL_FILE

    tiny = write_cube(tmp_path / "tiny.tif", np.random.default_rng(3).normal(100, 5, (120, 10, 10)).astype(np.float32))
    feedback = Recorder()
    default = run_alg("fers:detect", {"INPUT": tiny, "MODEL": "", "OUTPUT": str(tmp_path / "d.tif")}, feedback)
    assert [line for line in feedback.infos if "too few for" in line] == [
        "The raster has 100 pixels, too few for the background statistics of fers_spectral100.pt (100 bands) and "
        "fers_spectral200.pt (200 bands): those bundled members are left out."]
    order = [line for line in feedback.infos if "too few for" in line or line.startswith("Model: ")]
    assert order[0].startswith("The raster has 100 pixels") and order[1].startswith("Model: ")
    single = run_alg("fers:detect", {"INPUT": tiny, "MODEL": str(DEFAULT_MODEL_FILE),
                                     "OUTPUT": str(tmp_path / "s.tif")})
    expected = mid_rank_cdf(read(single["OUTPUT"])[0].ravel()).reshape(10, 10)  # the 50-band model, as a rank
    np.testing.assert_allclose(read(default["OUTPUT"])[0], expected, atol=1e-6)


@pytest.mark.slow
def test_empty_model_runs_the_bundled_default_ensemble(run_alg, tmp_path):
    from fers.fers_core.enhance.default_model import DEFAULT_MEMBER_FILES, DEFAULT_MODEL_FILE

    assert len(DEFAULT_MEMBER_FILES) == 2
    source = bundled_scene(tmp_path, 120)  # at least half of every member's bands: all three are fused
    feedback = Recorder()
    default = run_alg("fers:detect", {"INPUT": source, "MODEL": "", "OUTPUT": str(tmp_path / "default.tif")},
                      feedback)
    log = feedback.infos + feedback.warnings
    assert not [line for line in log if "left out" in line or "far fewer" in line]
    assert len([line for line in log if line.startswith("Memory: about")]) == 1  # the largest member's need
    assert not [line for line in log if ".partial-" in line]  # no temporary file names in the log
    explicit = run_alg("fers:detect", {"INPUT": source, "MODEL": str(DEFAULT_MODEL_FILE),
                                       "MODELS": [str(path) for path in DEFAULT_MEMBER_FILES],
                                       "OUTPUT": str(tmp_path / "three.tif")})
    scores = read(default["OUTPUT"])[0]
    valid = scores != -9999
    assert 0 < scores[valid].min() and scores[valid].max() < 1  # a rank mean, not one model's RX scores
    np.testing.assert_array_equal(scores, read(explicit["OUTPUT"])[0])
    assert leftovers(tmp_path, {"default.tif", "three.tif", "scene120.tif", "truth120.tif"}) == []


@pytest.mark.slow
def test_the_default_leaves_out_bundled_members_with_more_than_twice_the_bands(run_alg, tmp_path):
    from fers.fers_core.enhance.default_model import DEFAULT_MEMBER_FILES, DEFAULT_MODEL_FILE

    source = bundled_scene(tmp_path, 60)  # fewer than half of fers_spectral200.pt's bands
    feedback = Recorder()
    default = run_alg("fers:detect", {"INPUT": source, "OUTPUT": str(tmp_path / "default.tif")}, feedback)
    assert [line for line in feedback.infos if "left out" in line] == [
        "The 60 raster bands used are fewer than half of fers_spectral200.pt (200 bands): that bundled member is left "
        "out (interpolating most of a model's bands adds no information): 2 members are fused."]
    models = [line for line in feedback.infos if line.startswith("Model: ") and "rank fusion" in line]
    assert len(models) == 1 and "fers_spectral100.pt" in models[0] and "fers_spectral200.pt" not in models[0]
    order = [line for line in feedback.infos if "left out" in line or line.startswith("Model: ")]
    assert order[0].startswith("The 60 raster bands") and order[1] == models[0]  # why, before the reduced list
    two = run_alg("fers:detect", {"INPUT": source, "MODEL": str(DEFAULT_MODEL_FILE),
                                  "MODELS": [str(DEFAULT_MEMBER_FILES[0])], "OUTPUT": str(tmp_path / "two.tif")})
    np.testing.assert_array_equal(read(default["OUTPUT"])[0], read(two["OUTPUT"])[0])
    # a model the analyst lists is never left out: with all three listed, the 200-band one is fused too
    feedback = Recorder()
    three = run_alg("fers:detect", {"INPUT": source, "MODEL": str(DEFAULT_MODEL_FILE),
                                    "MODELS": [str(path) for path in DEFAULT_MEMBER_FILES],
                                    "OUTPUT": str(tmp_path / "three.tif")}, feedback)
    assert not [line for line in feedback.infos if "left out" in line]
    assert not np.array_equal(read(three["OUTPUT"])[0], read(two["OUTPUT"])[0])


@pytest.mark.slow
def test_on_far_fewer_bands_the_default_keeps_its_50_band_model_alone(run_alg, tmp_path, scene):
    from fers.fers_core.enhance.default_model import DEFAULT_MODEL_FILE

    feedback = Recorder()
    default = run_alg("fers:detect", {"INPUT": scene[0], "MODEL": "", "OUTPUT": str(tmp_path / "default.tif")},
                      feedback)
    assert [line for line in feedback.infos if line.startswith("The 24 raster bands")] == [
        "The 24 raster bands used are fewer than half of fers_spectral100.pt (100 bands) and fers_spectral200.pt (200 "
        "bands): those bundled members are left out (interpolating most of a model's bands adds no information): the "
        "other runs alone."]
    assert [line for line in feedback.infos if line.startswith("Model: /")] == [
        f"Model: {DEFAULT_MODEL_FILE} (the other bundled members left out; its scores are mapped by rank fusion, as "
        "the ensemble's are)"]
    assert [line for line in feedback.warnings if "far fewer" in line] == [
        "The 24 raster bands used are far fewer than the model's 50: they are interpolated, which adds no information; "
        "results may be weaker than plain RX."]
    single = read(run_alg("fers:detect", {"INPUT": scene[0], "MODEL": str(DEFAULT_MODEL_FILE),
                                          "OUTPUT": str(tmp_path / "single.tif")})["OUTPUT"])[0]
    scores = read(default["OUTPUT"])[0]
    valid = single != -9999
    np.testing.assert_array_equal(scores != -9999, valid)
    np.testing.assert_allclose(scores[valid], mid_rank_cdf(single[valid]), atol=1e-6)  # the output is still a rank
    assert leftovers(tmp_path, {"default.tif", "single.tif"}) == []


def test_an_incomplete_bundled_ensemble_is_refused_clearly(run_alg, tmp_path, scene, monkeypatch):
    from fers.fers_core.enhance import default_model

    monkeypatch.setattr(default_model, "DEFAULT_MEMBER_FILES", (tmp_path / "fers_spectral100.pt",))
    with pytest.raises(QgsProcessingException, match="fers_spectral100.pt missing.*reinstall the plugin"):
        run_alg("fers:detect", {"INPUT": scene[0], "MODEL": "", "OUTPUT": str(tmp_path / "x.tif")})
    assert leftovers(tmp_path, set()) == []


def test_models_given_as_one_semicolon_separated_string_are_each_a_member(run_alg, tmp_path, scene, models):
    listed = run_alg("fers:detect", {"INPUT": scene[0], "MODELS": [models["r12"], models["r30"]], "BRANCHES": 1,
                                     "MODEL": models["r16ss"], "OUTPUT": str(tmp_path / "listed.tif")})
    joined = run_alg("fers:detect", {"INPUT": scene[0], "MODELS": f"{models['r12']};{models['r30']}", "BRANCHES": 1,
                                     "MODEL": models["r16ss"], "OUTPUT": str(tmp_path / "joined.tif")})
    np.testing.assert_array_equal(read(listed["OUTPUT"])[0], read(joined["OUTPUT"])[0])


def test_enhanced_cubes_of_the_bundled_default_name_the_model_to_choose(run_alg, tmp_path, scene):
    from fers.fers_core.enhance.default_model import DEFAULT_MODEL_FILE

    with pytest.raises(QgsProcessingException, match=r"the bundled default fuses several: choose one under Model "
                                                     r"\(for example '.*fers_default.pt'"):
        run_alg("fers:detect", {"INPUT": scene[0], "MODEL": "", "OUTPUT": str(tmp_path / "x.tif"),
                                "OUTPUT_SPECTRAL": str(tmp_path / "spe.tif")})
    result = run_alg("fers:detect", {"INPUT": scene[0], "MODEL": str(DEFAULT_MODEL_FILE),
                                     "OUTPUT": str(tmp_path / "x.tif"), "OUTPUT_SPECTRAL": str(tmp_path / "spe.tif")})
    assert read(result["OUTPUT_SPECTRAL"])[0].shape == read(result["OUTPUT"])[0].shape  # the advice works


def test_bad_ensembles_are_refused_with_clear_messages(run_alg, tmp_path, scene, models):
    base = {"INPUT": scene[0], "MODEL": models["r12"], "MODELS": [models["r30"]], "OUTPUT": str(tmp_path / "x.tif")}
    cases = [
        ({"OUTPUT_SPECTRAL": str(tmp_path / "spe.tif")}, "enhanced-cube outputs belong to one model"),
        ({"OUTPUT_MASK": str(tmp_path / "mask.tif"), "THRESHOLD_METHOD": 2}, "no chi-square law"),
        ({"MODELS": [str(tmp_path / "missing.pt")]}, "does not exist"),
        ({"SCHEDULER": "local"}, "runs one model"),
        ({"MODELS": [models["r12"]]}, r"^MODEL and MODELS item 1 are the same file .*: a model listed "
                                      "twice would weigh twice in the fused map; list each model once"),
        ({"MODELS": [models["r30"], models["r30"].replace("/r30", "/./r30")]},
         "^MODELS item 1 and MODELS item 2 are the same file"),
    ]
    for extra, message in cases:
        with pytest.raises(QgsProcessingException, match=message):
            run_alg("fers:detect", {**base, **extra})
    assert leftovers(tmp_path, set()) == []


@pytest.mark.slow
def test_qgis_process_fuses_two_models(tmp_path, scene, models):
    output = tmp_path / "cli.tif"
    completed = subprocess.run(
        [str(ROOT / "scripts" / "qgis_process"), "run", "fers:detect", "--", f"INPUT={scene[0]}",
         f"MODEL={models['r16ss']}", f"MODELS={models['r30']}", f"MODELS={models['r12']}", "ENSEMBLE_FUSION=1",
         f"OUTPUT={output}"],
        capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    assert "Ensemble member 3 of 3" in completed.stdout
    assert "standardised fusion" in completed.stdout
    scores = read(output)[0]
    valid = scores != -9999
    assert valid.any() and abs(float(scores[valid].mean())) < 1e-3  # the mean of standardised maps is 0


@pytest.mark.slow
def test_an_authors_checkpoint_folder_can_be_a_further_model(run_alg, tmp_path, scene, models):
    from .conftest import require_reference

    folder = require_reference() / "fers-checkpoints" / "had100-50"
    result = run_alg("fers:detect", {"INPUT": scene[0], "MODEL": models["r12"], "MODELS": [str(folder)],
                                     "OUTPUT": str(tmp_path / "authors.tif")})
    scores = read(result["OUTPUT"])[0]
    assert 0 < scores[scores != -9999].min() and scores.max() < 1
