"""fers:rx and fers:detect refuse what the engine's request check refuses, with its message, before writing anything
(through processing.run and qgis_process)."""

import re
import subprocess

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from fers.fers_core.choices import Fusion
from fers.fers_core.errors import InputError
from fers.fers_core.pipeline import requests

from .conftest import ROOT
from .rasters import leftovers, write_cube


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    path = tmp_path_factory.mktemp("cube") / "cube.tif"
    write_cube(path, np.random.default_rng(5).normal(100, 10, (6, 30, 40)).astype(np.float32))
    return str(path)


def engine_message(check, *args, **settings):
    with pytest.raises(InputError) as refused:
        check(*args, **settings)
    return str(refused.value)


FAR = {"OUTPUT_MASK": "mask.tif", "THRESHOLD_METHOD": 2, "THRESHOLD": 1.0}


@pytest.mark.parametrize("algorithm, parameters, check, args, settings", [
    ("fers:rx", {"MODE": 4, **FAR}, requests.check_rx_request, [("rxd-utd", None, 0)], {"false_alarm_rate": True}),
    ("fers:rx", {"MODE": 5, "WINDOW_INNER": 3, "WINDOW_OUTER": 9, **FAR}, requests.check_rx_request,
     [("utd", 9, 3)], {"false_alarm_rate": True}),
    ("fers:rx", {"THRESHOLD_METHOD": 0, "THRESHOLD": 0.0, "OUTPUT_MASK": "mask.tif"}, requests.check_threshold,
     [0, 0.0], {}),
    ("fers:rx", {"OUTPUT_POLYGONS": "objects.shp"}, requests.check_polygons_path, ["objects.shp"], {}),
    ("fers:detect", {"TILE_SIZE": 32, "TILE_MARGIN": 16}, requests.check_spatial_tiles, [32, 16], {}),
    ("fers:detect", {"DETECTOR": 3, **FAR}, requests.check_detect_request, ["utd"], {"false_alarm_rate": True}),
    ("fers:detect", {"FUSION": 2, **FAR}, requests.check_detect_request, ["global"],
     {"false_alarm_rate": True, "fusion": Fusion.PRODUCT}),
])
def test_refused_with_the_engines_message(run_alg, tmp_path, cube, model_file, algorithm, parameters, check, args,
                                          settings):
    parameters = {key: str(tmp_path / value) if key.startswith("OUTPUT_") else value
                  for key, value in parameters.items()}
    args = [str(tmp_path / arg) if arg == "objects.shp" else arg for arg in args]
    message = engine_message(check, *args, **settings)
    model = {"MODEL": model_file} if algorithm == "fers:detect" else {}
    with pytest.raises(QgsProcessingException, match=re.escape(message)):
        run_alg(algorithm, {"INPUT": cube, **model, "OUTPUT": str(tmp_path / "scores.tif"), **parameters})
    assert leftovers(tmp_path, set()) == []


def test_qgis_process_reports_a_refused_request(tmp_path, cube, model_file):
    completed = subprocess.run(
        [str(ROOT / "scripts" / "qgis_process"), "run", "fers:detect", "--", f"INPUT={cube}", f"MODEL={model_file}",
         "TILE_SIZE=32", "TILE_MARGIN=20", f"OUTPUT={tmp_path / 'scores.tif'}"],
        capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode != 0
    assert engine_message(requests.check_spatial_tiles, 32, 20) in completed.stdout + completed.stderr
    assert leftovers(tmp_path, set()) == []
