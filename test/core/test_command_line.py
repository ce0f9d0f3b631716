"""The engine's command line (`python -m fers_core`): demo-scene, auc, rx --bands and batch refusals, as a user
types them (a subprocess, no QGIS)."""

import os
import subprocess
import sys

import numpy as np

from ..conftest import ROOT
from ..rasters import read, write_cube


def cli(*arguments):
    completed = subprocess.run([sys.executable, "-m", "fers_core", *map(str, arguments)], capture_output=True,
                               text=True, timeout=180, cwd=ROOT)
    return completed.returncode, completed.stdout + completed.stderr


def test_demo_scene_sizes_are_checked_and_its_folder_is_created(tmp_path):
    status, log = cli("demo-scene", tmp_path / "new" / "s.tif", tmp_path / "new" / "t.tif", "--rows", 24, "--cols",
                      40, "--bands", 6)
    assert status == 0, log
    assert read(tmp_path / "new" / "t.tif")[0].shape == (24, 40)
    for option, value, message in [("--rows", 3, "argument --rows: 3 is too small: at least 24"),
                                   ("--bands", 0, "argument --bands: 0 is too small: at least 3"),
                                   ("--cols", "x", "argument --cols: 'x' is not a whole number")]:
        status, log = cli("demo-scene", tmp_path / "a.tif", tmp_path / "b.tif", option, value)
        assert status == 2 and message in log and "Traceback" not in log, log
    assert not (tmp_path / "a.tif").exists()


def test_auc_is_fers_evaluate_s_and_honours_the_truth_s_nodata(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), np.uint8)
    truth[10:13, 10:13] = 1
    scores = rng.uniform(0, 1, (40, 40)) + truth
    truth[:4] = 255  # a border the truth declares nodata: left out, not counted as anomalies
    scores_path = write_cube(tmp_path / "scores.tif", scores.astype(np.float32))
    truth_path = write_cube(tmp_path / "truth.tif", truth, nodata=255)
    status, log = cli("auc", scores_path, truth_path)
    assert status == 0 and log.strip() == "AUC 1.0000 over 1440 valid pixels (9 anomalous)", log
    status, log = cli("auc", scores_path, write_cube(tmp_path / "small.tif", truth[:20]))
    assert status == 1 and log.startswith("Error: The score raster 'scores.tif' is 40x40 pixels"), log


def test_rx_bands_take_ranges_and_refuse_a_band_given_twice(tmp_path):
    source = write_cube(tmp_path / "cube.tif", np.random.default_rng(0).normal(100, 5, (8, 20, 20)).astype(np.float32))
    status, log = cli("rx", source, tmp_path / "rx.tif", "--bands", "1-4", 6)
    assert status == 0, log
    from osgeo import gdal

    assert gdal.Open(str(tmp_path / "rx.tif")).GetMetadataItem("fers_bands") == "1,2,3,4,6"
    status, log = cli("rx", source, tmp_path / "twice.tif", "--bands", "1-4", 4)
    assert status == 1 and "Error: --bands '1-4 4' lists band 4 more than once" in log, log  # as typed
    status, log = cli("rx", source, tmp_path / "bad.tif", "--bands", "1-x")
    assert status == 2 and "'1-x' is not a band number" in log and "Traceback" not in log, log
    status, log = cli("rx", source, tmp_path / "bad.tif", "--bands", "")
    assert status == 2 and "an empty band item" in log and "Traceback" not in log, log
    assert not (tmp_path / "twice.tif").exists() and not (tmp_path / "bad.tif").exists()


def test_batch_refusals_leave_no_folder_and_name_the_problem(tmp_path):
    source = write_cube(tmp_path / "cube.tif", np.random.default_rng(0).normal(100, 5, (8, 20, 20)).astype(np.float32))
    (tmp_path / "file.tif").write_bytes(b"")
    status, log = cli("batch", source, "--out-dir", tmp_path / "file.tif", "--detector", "rx")
    assert status == 1 and "Error: The output folder" in log and "is a file" in log and "Traceback" not in log, log
    for option, value, message in [("--block-mb", 0, "The block memory budget must be a positive number of MB"),
                                   ("--threads", -2, "The thread count must be 0")]:
        status, log = cli("batch", source, "--out-dir", tmp_path / "out", "--detector", "rx", option, value)
        assert status == 1 and message in log, log
        assert not (tmp_path / "out").exists()


def test_the_batch_runner_says_which_model_its_fers_detector_runs(tmp_path):
    scene = write_cube(tmp_path / "scene.tif", np.random.default_rng(2).normal(100, 5, (20, 30, 30)).astype("f4"))
    code, output = cli("batch", "--detector", "fers", "--out-dir", tmp_path / "out", scene)
    assert code == 0, output
    assert "Model: " in output and "fers_default.pt (the bundled model alone: fers:detect's default also fuses two " \
        "spectral models, which this runner does not)." in output


WITHOUT_TORCH = """
import runpy, sys
from importlib.abc import MetaPathFinder

class NoTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked for this test")

sys.meta_path.insert(0, NoTorch())
sys.modules.pop("torch", None)
sys.argv = ["fers_core"] + sys.argv[1:]
runpy.run_module("fers_core", run_name="__main__")
"""


def test_without_torch_the_batch_runner_says_how_to_install_it_for_its_own_python(tmp_path):
    """The QGIS install advice (the profile's packages folder, restart QGIS) cannot help the batch runner, which
    never reads that folder: outside QGIS the advice is pip for this Python."""
    scene = write_cube(tmp_path / "scene.tif", np.random.default_rng(2).normal(100, 5, (20, 30, 30)).astype("f4"))
    completed = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "batch", "--detector", "fers", "--out-dir",
                                str(tmp_path / "out"), str(scene)], capture_output=True, text=True, timeout=180,
                               cwd=ROOT)
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert f"install it for this Python, '{sys.executable} -m pip install torch --index-url " in output, output
    assert "QGIS" not in output.split("PyTorch, which is not installed", 1)[1].split(".", 1)[0]


def test_a_package_named_torch_that_is_no_pytorch_is_named_with_what_to_do(tmp_path):
    """A stub on the path (PyPI's old 'torch 0.1.2', a user's torch.py, a half-copied packages folder) imports, then
    failed with a traceback at 'from torch import nn'."""
    stub = tmp_path / "stub" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('__version__ = "0.1.2"\n')
    scene = write_cube(tmp_path / "scene.tif", np.random.default_rng(2).normal(100, 5, (20, 30, 30)).astype("f4"))
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "stub"), str(ROOT)]))
    completed = subprocess.run([sys.executable, "-m", "fers_core", "batch", "--detector", "fers", "--out-dir",
                                str(tmp_path / "out"), str(scene)], capture_output=True, text=True, timeout=180,
                               cwd=ROOT, env=environment)
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0 and "Traceback" not in output, output
    assert f"The package 'torch' found at {stub / '__init__.py'} is not a usable PyTorch (" in output, output
    assert "FERS needs PyTorch 2.0 or newer. Remove it and install PyTorch: install it for this Python" in output
