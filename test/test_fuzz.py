"""Fuzzing fers:rx and fers:detect with random small GeoTIFFs (hypothesis).

Each example writes a raster of random size (1xN and Nx1 included), data type (uint8, signed int8, int16,
uint16, float32, float64), band count (1-12), nodata value, NaN/inf patches, constant and
duplicate bands and value scale, and runs one algorithm in process. The run must either write a
valid score raster (the input's size, float32, every value finite and >= 0 or the nodata -9999)
or stop with a clean QgsProcessingException (one sentence, no traceback), leaving no file behind;
any other exception, a crash or a run longer than TIME_LIMIT seconds fails.

`make test` runs 40 derandomised examples; FERS_FUZZ_EXAMPLES=200 runs 200 random ones.
"""

import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from osgeo import gdal
from qgis.core import QgsProcessingException

from .rasters import read, write_cube

EXAMPLES = int(os.environ.get("FERS_FUZZ_EXAMPLES", "40"))
TIME_LIMIT = 60
DTYPES = ["uint8", "int8", "int16", "uint16", "float32", "float64"]
MODEL_BANDS = 8


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory):
    from fers.fers_core.enhance.model_file import random_init_model, save_model

    path = tmp_path_factory.mktemp("fuzz_model") / "random8.pt"
    save_model(random_init_model(MODEL_BANDS, seed=1), path)
    return str(path)


@st.composite
def rasters(draw):
    """(cube, nodata) of a random small raster with the awkward features real data has."""
    rows = draw(st.one_of(st.just(1), st.integers(1, 24)))
    cols = draw(st.one_of(st.just(1), st.integers(1, 24)))
    bands = draw(st.integers(1, 12))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind == "f":
        scale = draw(st.sampled_from([1e-6, 1.0, 1e3, 1e30, 1e100, 1e300] if dtype == np.float64
                                     else [1e-6, 1.0, 1e3, 1e15, 1e37]))
        data = rng.normal(draw(st.sampled_from([0.0, 100.0, -5e3])), 1.0, (bands, rows, cols)) * scale
    else:
        info = np.iinfo(dtype)
        low = draw(st.integers(int(info.min), int(info.max)))
        high = draw(st.integers(low, int(info.max)))
        data = rng.integers(low, high, (bands, rows, cols), endpoint=True)
    data = data.astype(dtype)
    if bands > 1 and draw(st.booleans()):  # constant bands
        for band in rng.choice(bands, draw(st.integers(1, bands)), replace=False):
            data[band] = data[band].flat[0]
    if bands > 1 and draw(st.booleans()):  # a duplicate band
        data[rng.integers(bands)] = data[rng.integers(bands)]
    if dtype.kind == "f" and draw(st.booleans()):  # NaN, inf and undeclared float32-minimum fill patches
        for value in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf, -3.4028235e38]), min_size=1,
                                   max_size=3)):
            r, c = rng.integers(rows), rng.integers(cols)
            data[rng.integers(bands), r:r + rng.integers(1, rows + 1), c:c + rng.integers(1, cols + 1)] = value
    nodata_choice = draw(st.sampled_from(["none", "present", "absent", "nan"]))
    nodata = None
    if nodata_choice == "present":
        nodata = data.flat[int(rng.integers(data.size))].item()
        if isinstance(nodata, float) and not np.isfinite(nodata):
            nodata = None
    elif nodata_choice == "absent":
        nodata = -9999.0 if dtype.kind == "f" else int(np.iinfo(dtype).max)
    elif nodata_choice == "nan" and dtype.kind == "f":
        nodata = float("nan")
    return data, nodata


@st.composite
def runs(draw, bands):
    """Algorithm and parameters (BANDS subsets, now and then one out of range; local RX; branches, fusion)."""
    algorithm = draw(st.sampled_from(["fers:rx", "fers:detect"]))
    parameters = {}
    if draw(st.booleans()):
        parameters["BANDS"] = draw(st.lists(st.integers(1, bands + (draw(st.integers(0, 9)) == 0)), min_size=1,
                                            max_size=6, unique=True))
    if draw(st.integers(0, 3)) == 0:
        parameters["MEMORY_MB"] = 1
    if algorithm == "fers:rx" and draw(st.integers(0, 3)) == 0:
        parameters.update(MODE=1, WINDOW_INNER=1, WINDOW_OUTER=draw(st.sampled_from([3, 5, 7])))
    if algorithm == "fers:detect":
        parameters.update(BRANCHES=draw(st.integers(0, 2)), FUSION=draw(st.integers(0, 2)), DEVICE=1)
    return algorithm, parameters


class TimeLimit(Exception):
    pass


def _alarm(signum, frame):
    raise TimeLimit(f"a run took longer than {TIME_LIMIT} s")


def write_raster(path, data, nodata):
    write_cube(path, data, nodata=None)
    if nodata is not None:
        dataset = gdal.Open(str(path), gdal.GA_Update)
        for index in range(dataset.RasterCount):
            dataset.GetRasterBand(index + 1).SetNoDataValue(nodata)
        dataset = None


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize="FERS_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=rasters().flatmap(lambda raster: st.tuples(st.just(raster), runs(raster[0].shape[0]))))
@example(case=((np.arange(12, dtype=np.float32).reshape(1, 1, 12), None), ("fers:rx", {})))
@example(case=((np.arange(36, dtype=np.int16).reshape(3, 12, 1), None), ("fers:detect", {"DEVICE": 1})))
def test_random_rasters_give_scores_or_a_clean_error(run_alg, fuzz_model, case):
    (data, nodata), (algorithm, parameters) = case
    with tempfile.TemporaryDirectory(prefix="fers_fuzz_") as folder:
        folder = Path(folder)
        source = folder / "input.tif"
        write_raster(source, data, nodata)
        output = folder / "out" / "scores.tif"
        parameters = {"INPUT": str(source), "OUTPUT": str(output), **parameters}
        if algorithm == "fers:detect":
            parameters["MODEL"] = fuzz_model
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(TIME_LIMIT)
        try:
            result = run_alg(algorithm, parameters)
        except QgsProcessingException as error:
            message = str(error)
            event(f"{algorithm} refused: {message[:50]}")
            assert "Traceback" not in message and "\n" not in message.strip(), message
            assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["input.tif"], message
            return
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        scores, score_nodata, _, _ = read(result["OUTPUT"])
        event(f"{algorithm} scored")
        assert scores.shape == data.shape[1:] and scores.dtype == np.float32
        assert score_nodata == -9999
        valid = scores != -9999
        assert np.isfinite(scores).all(), scores
        assert (scores[valid] >= 0).all(), scores[valid].min()
        assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["input.tif", "scores.tif"]
