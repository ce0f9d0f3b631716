"""The SCHEDULER parameter of fers:rx and fers:detect through processing.run: same output on a Dask cluster."""

import importlib.util

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingException

from .rasters import write_cube

pytestmark = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason='dask.distributed is not installed (python -m pip install "dask[distributed]")')


@pytest.fixture(scope="module")
def scheduler():
    """The address of a two-worker LocalCluster on loopback."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      memory_limit="1.5GiB", scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(4)
    data = (rng.standard_normal((100 * 300, 20)) @ rng.standard_normal((20, 20)) + 300).T.reshape(20, 100, 300)
    return write_cube(tmp_path_factory.mktemp("input") / "cube.tif", data.astype(np.float32))


def pixels(path):
    return gdal.Open(str(path)).ReadAsArray()


@pytest.mark.slow
def test_rx_on_a_cluster_is_identical(run_alg, tmp_path, source, scheduler):
    here = run_alg("fers:rx", {"INPUT": source, "MEMORY_MB": 1, "OUTPUT": str(tmp_path / "here.tif")})
    there = run_alg("fers:rx", {"INPUT": source, "MEMORY_MB": 1, "SCHEDULER": scheduler,
                                "OUTPUT": str(tmp_path / "there.tif")})
    assert np.array_equal(pixels(here["OUTPUT"]), pixels(there["OUTPUT"]))


@pytest.mark.slow
def test_rx_on_the_embedded_local_cluster(run_alg, tmp_path, source):
    here = run_alg("fers:rx", {"INPUT": source, "MEMORY_MB": 1, "OUTPUT": str(tmp_path / "here.tif")})
    local = run_alg("fers:rx", {"INPUT": source, "MEMORY_MB": 1, "SCHEDULER": "local",
                                "OUTPUT": str(tmp_path / "local.tif")})
    assert np.array_equal(pixels(here["OUTPUT"]), pixels(local["OUTPUT"]))


@pytest.mark.slow
def test_detect_on_a_cluster_is_identical(run_alg, tmp_path, scheduler, model_file):
    from fers.fers_core.synthetic import write_scene

    scene, _ = write_scene(tmp_path / "scene.tif", tmp_path / "truth.tif", rows=64, cols=48, bands=20, seed=5)
    common = {"INPUT": scene, "MODEL": model_file, "BRANCHES": 1, "MEMORY_MB": 1}
    here = run_alg("fers:detect", {**common, "OUTPUT": str(tmp_path / "here.tif")})
    there = run_alg("fers:detect", {**common, "SCHEDULER": scheduler, "OUTPUT": str(tmp_path / "there.tif")})
    assert np.array_equal(pixels(here["OUTPUT"]), pixels(there["OUTPUT"]))


@pytest.mark.slow
@pytest.mark.parametrize("mode", [1, 2, 6])  # local RX, RXD with a local mean, RXD-UTD with a local mean
def test_local_modes_on_a_cluster_are_identical(run_alg, tmp_path, source, scheduler, mode):
    common = {"INPUT": source, "MODE": mode, "WINDOW_INNER": 3, "WINDOW_OUTER": 9, "MEMORY_MB": 1}
    here = run_alg("fers:rx", {**common, "OUTPUT": str(tmp_path / "here.tif")})
    there = run_alg("fers:rx", {**common, "SCHEDULER": scheduler, "OUTPUT": str(tmp_path / "there.tif")})
    assert np.array_equal(pixels(here["OUTPUT"]), pixels(there["OUTPUT"]))


@pytest.mark.slow
def test_detect_with_local_rx_on_a_cluster_is_identical(run_alg, tmp_path, scheduler, model_file):
    from fers.fers_core.synthetic import write_scene

    scene, _ = write_scene(tmp_path / "scene.tif", tmp_path / "truth.tif", rows=48, cols=40, bands=20, seed=6)
    common = {"INPUT": scene, "MODEL": model_file, "DETECTOR": 1, "WINDOW_INNER": 3, "WINDOW_OUTER": 9,
              "MEMORY_MB": 1}
    here = run_alg("fers:detect", {**common, "OUTPUT": str(tmp_path / "here.tif")})
    there = run_alg("fers:detect", {**common, "SCHEDULER": scheduler, "OUTPUT": str(tmp_path / "there.tif")})
    assert np.array_equal(pixels(here["OUTPUT"]), pixels(there["OUTPUT"]))


@pytest.mark.slow
def test_bad_scheduler_values_are_explained(run_alg, tmp_path, source):
    with pytest.raises(QgsProcessingException, match="not a Dask scheduler address"):
        run_alg("fers:rx", {"INPUT": source, "SCHEDULER": "my cluster", "OUTPUT": str(tmp_path / "a.tif")})
    assert not (tmp_path / "a.tif").exists()
