"""fers:train through processing.run and qgis_process: a tiny model trains in seconds and detects.

The scenes are small synthetic ones (fers_core.synthetic), the model tiny (16 bands, 16 px
patches, 1 epoch), so every run takes a few seconds on a CPU. Mid-stage resume (optimizer state,
epoch numbering) is covered more cheaply in test/core/training/test_training.py.
"""

import os
import subprocess

import numpy as np
import pytest
import torch
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from .conftest import ROOT, Recorder
from .rasters import read, write_cube

TINY = {"MODEL_BANDS": 16, "EPOCHS": 1, "PATCH_SIZE": 16, "BATCH_SIZE": 4, "SEED": 3, "DEVICE": 1}
"""Per epoch: a.tif and b.tif give 2 batches of 4 patches, a.tif alone 1."""


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two small synthetic scenes with different band counts, and the first one's ground truth."""
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("scenes")
    first, truth = write_scene(folder / "a.tif", folder / "a_gt.tif", rows=28, cols=30, bands=24, seed=1)
    second, _ = write_scene(folder / "b.tif", folder / "b_gt.tif", rows=28, cols=30, bands=30, seed=2)
    return first, second, truth


def train(run_alg, output, inputs, feedback=None, **settings):
    parameters = {**TINY, "INPUTS": list(inputs), "OUTPUT_MODEL": str(output), **settings}
    return run_alg("fers:train", parameters, feedback)


@pytest.fixture(scope="module")
def tiny_model(qgis_app, scenes, tmp_path_factory):
    """Both stages, one epoch, on two rasters with 24 and 30 bands."""
    import processing
    from qgis.core import QgsProcessingContext

    output = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    parameters = {**TINY, "INPUTS": list(scenes[:2]), "OUTPUT_MODEL": str(output)}
    processing.run("fers:train", parameters, context=QgsProcessingContext(), feedback=QgsProcessingFeedback())
    return output


def weights(path):
    from fers.fers_core.enhance.model_file import load_model

    model = load_model(path)
    return {f"{branch}.{key}": value for branch, module in model.branches.items()
            for key, value in module.state_dict().items()}


def assert_same_weights(path_a, path_b):
    a, b = weights(path_a), weights(path_b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_tiny_model_trains_on_rasters_of_different_band_counts_and_detects(run_alg, scenes, tiny_model, tmp_path):
    from fers.fers_core.enhance.model_file import load_model

    assert not tiny_model.with_name("tiny.pt.resume.pt").exists()
    model = load_model(tiny_model)
    assert model.bands == 16 and set(model.branches) == {"spectral", "spatial"}
    assert model.provenance["inputs"] == ["a.tif", "b.tif"] and model.provenance["seed"] == 3

    scores_path = tmp_path / "scores.tif"
    run_alg("fers:detect", {"INPUT": scenes[0], "MODEL": str(tiny_model), "OUTPUT": str(scores_path)})
    scores, nodata, _, _ = read(scores_path)
    valid = scores != nodata
    assert valid.sum() > 700 and np.isfinite(scores[valid]).all()


class CancelAt(QgsProcessingFeedback):
    """Cancels as soon as progress reaches the given percent; keeps the log."""

    def __init__(self, percent=None):
        super().__init__()
        self.percent = percent
        self.log = []
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value):
        if self.percent is not None and value >= self.percent:
            self.cancel()

    def pushInfo(self, info):  # noqa: N802 (QGIS API)
        self.log.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning):  # noqa: N802 (QGIS API)
        self.log.append(warning)
        super().pushWarning(warning)


@pytest.mark.slow
def test_cancel_leaves_no_model_and_resume_gives_the_same_weights_as_an_uninterrupted_run(
        run_alg, scenes, tiny_model, tmp_path):
    """Same seed -> identical weights: the cancelled run recomputes stage 1 on its own, then resumes stage 2."""
    output = tmp_path / "model.pt"
    checkpoint = tmp_path / "model.pt.resume.pt"
    # stage 1 spans 5-52.5 %, stage 2 52.5-100 % in 2 batches: cancel after the first stage-2 batch
    with pytest.raises(QgsProcessingException, match=r"^Cancelled by the user; no model was written\. The checkpoint "
                                                     r"of the finished epochs is kept in '.*model\.pt\.resume\.pt': "
                                                     r"run again with the same settings and 'Resume an "
                                                     r"interrupted training' \(RESUME\) ticked"):
        train(run_alg, output, scenes[:2], CancelAt(60))
    assert not output.exists()
    saved = torch.load(checkpoint, weights_only=True)
    assert (saved["stage"], saved["epochs_done"]) == ("spectral", 1)

    feedback = CancelAt()
    train(run_alg, output, scenes[:2], feedback)
    assert any("Resuming from model.pt.resume.pt (spectral stage, epoch 1 done)" in line for line in feedback.log)
    assert not checkpoint.exists()
    assert_same_weights(output, tiny_model)


def test_an_input_rewritten_in_place_is_not_resumed(run_alg, scenes, tmp_path):
    """Same path, same size, other pixels: the checkpoint belongs to other data, so training starts afresh."""
    import shutil

    from osgeo import gdal

    source = str(shutil.copy(scenes[0], tmp_path / "site.tif"))
    output = tmp_path / "model.pt"
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        train(run_alg, output, [source], CancelAt(50), EPOCHS=3, STAGES=1)
    assert (tmp_path / "model.pt.resume.pt").exists()
    size = os.path.getsize(source)
    dataset = gdal.Open(source, gdal.GA_Update)
    for index in range(dataset.RasterCount):
        band = dataset.GetRasterBand(index + 1)
        band.WriteArray(band.ReadAsArray()[::-1])  # the same values upside down
    dataset = None
    assert os.path.getsize(source) == size
    feedback = CancelAt()
    train(run_alg, output, [source], feedback, EPOCHS=3, STAGES=1)
    assert not any("Resuming from" in line for line in feedback.log)
    assert any("was written with other settings or inputs; training starts afresh" in line for line in feedback.log)


def test_a_diverging_training_says_what_to_lower_and_leaves_nothing(run_alg, scenes, tmp_path):
    output = tmp_path / "model.pt"
    with pytest.raises(QgsProcessingException, match=r"^The spatial training diverged \(the loss became NaN or "
                                                     r"infinite in epoch \d+\): lower LEARNING_RATE"):
        train(run_alg, output, scenes[:1], EPOCHS=2, LEARNING_RATE=1e6)
    assert list(tmp_path.iterdir()) == []  # no model, and no checkpoint that would diverge again


@pytest.mark.slow
def test_spatial_stage_fine_tunes_an_initial_model_with_its_bands(run_alg, scenes, tiny_model, tmp_path):
    output = tmp_path / "tuned.pt"
    train(run_alg, output, scenes[:1], STAGES=2, INIT_MODEL=str(tiny_model), MODEL_BANDS=50)
    before, after = weights(tiny_model), weights(output)
    assert before.keys() == after.keys()
    for key, value in before.items():
        if key.startswith("spectral."):
            assert torch.equal(value, after[key]), key  # frozen
    assert not torch.equal(before["spatial.false_colour.expand.weight"], after["spatial.false_colour.expand.weight"])


def test_bad_inputs_get_clear_errors_before_training(run_alg, scenes, tmp_path):
    first = scenes[0]
    small = write_cube(tmp_path / "small.tif", np.random.default_rng(0).uniform(0, 1, (8, 10, 12)).astype(np.float32))
    empty = write_cube(tmp_path / "empty.tif", np.full((8, 30, 30), -5, np.int16), nodata=-5)
    mask = write_cube(tmp_path / "mask.tif", np.zeros((20, 20), np.uint8))
    cases = [
        ({"INPUTS": [small]}, "small.tif is 12x10 px, too small for one 16x16 patch"),
        ({"INPUTS": [empty]}, "empty.tif: No valid pixels"),
        ({"MASKS": [mask]}, "a.tif: The mask is 20x20 pixels but the input is 30x28"),
        ({"MASKS": [mask, mask]}, "2 mask\\(s\\) were given for 1 input raster"),
        ({"INPUTS": [first, first]}, "Training raster 1 and training raster 2 are the same file .*: a raster listed "
                                     "twice would weigh twice in the training"),
        ({"STAGES": 2}, "needs INIT_MODEL"),
        ({"WAVELENGTHS": "400, 500"}, "WAVELENGTHS lists 2 values but MODEL_BANDS is 16"),
        ({"WAVELENGTHS": ", ".join(["500"] * 16)}, "WAVELENGTHS lists 500 nm more than once: two model bands"),
        ({"WAVELENGTHS": ", ".join(f"{0.4 + 0.1 * i:.1f}" for i in range(16))},
         "WAVELENGTHS look like micrometres \\(at most 1.9\\); give them in nanometres, e.g. '400, 500, 600, ...'"),
        ({"BANDS": "1-x"}, "BANDS '1-x': '1-x' is not a band number or a range"),
        ({"BANDS": "1-99"}, "out of range"),
        ({"INIT_MODEL": str(tmp_path / "missing.pt")}, "INIT_MODEL: The model file .* does not exist"),
    ]
    for settings, message in cases:
        output = tmp_path / "never.pt"
        parameters = {"INPUTS": [first], **settings}
        with pytest.raises(QgsProcessingException, match=message):
            train(run_alg, output, parameters.pop("INPUTS"), **parameters)
        assert not output.exists() and not (tmp_path / "never.pt.resume.pt").exists()


@pytest.mark.slow
def test_qgis_process_runs_train(scenes, tmp_path):
    output = tmp_path / "out" / "model.pt"
    arguments = [f"{key}={value}" for key, value in TINY.items()]
    completed = subprocess.run(
        [str(ROOT / "scripts" / "qgis_process"), "run", "fers:train", "--", f"INPUTS={scenes[0]}", *arguments,
         "STAGES=1", f"OUTPUT_MODEL={output}"],
        capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    assert output.exists()
    assert "spectral stage, epoch 1/1" in completed.stdout + completed.stderr


@pytest.mark.slow
def test_input_nodata_and_layer_nodata_train_as_on_a_raster_that_declares_it(run_alg, tmp_path):
    from osgeo import gdal

    data = np.random.default_rng(4).normal(100, 5, (12, 30, 32)).astype(np.float32)
    data[:, :, :5] = 0  # an undeclared collar
    source = write_cube(tmp_path / "collar.tif", data)
    declared = str(tmp_path / "declared.tif")
    gdal.Translate(declared, source, noData=0)
    train(run_alg, tmp_path / "declared.pt", [declared])
    feedback = Recorder()
    train(run_alg, tmp_path / "given.pt", [source], feedback, INPUT_NODATA=0)
    assert_same_weights(tmp_path / "declared.pt", tmp_path / "given.pt")
    assert not [line for line in feedback.warnings if "in every band" in line]
    from qgis.core import QgsProject, QgsRasterLayer, QgsRasterRange

    layer = QgsRasterLayer(source, "collar")  # the collar set as nodata in the layer's properties (Transparency)
    for band in range(1, layer.bandCount() + 1):
        layer.dataProvider().setUserNoDataValue(band, [QgsRasterRange(0, 0)])
    QgsProject.instance().addMapLayer(layer)
    try:
        train(run_alg, tmp_path / "layer.pt", [layer])
    finally:
        QgsProject.instance().removeAllMapLayers()
    assert_same_weights(tmp_path / "declared.pt", tmp_path / "layer.pt")
    train(run_alg, tmp_path / "plain.pt", [source])  # without it the collar is trained on
    assert weights(tmp_path / "plain.pt").keys() == weights(tmp_path / "given.pt").keys()
    assert any(not torch.equal(a, b) for a, b in zip(weights(tmp_path / "plain.pt").values(),
                                                    weights(tmp_path / "given.pt").values()))
