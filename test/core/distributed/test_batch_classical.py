"""The batch runner's classical detectors (local RX, local-mean RXD, UTD, RXD-UTD): in process and on Dask."""

import subprocess
import sys

import numpy as np
import pytest

from fers.fers_core.detectors.local_rx import run_local_rx
from fers.fers_core.detectors.rx_variants import run_rx_variant
from fers.fers_core.distributed import batch as fb
from fers.fers_core.distributed import cluster as fd
from fers.fers_core.errors import InputError

from ...conftest import ROOT
from ...rasters import read, write_cube
from ..detectors.test_rx_variants import correlated_cube

DIRECT = {
    "local-rx": lambda source, output: run_local_rx(source, output, inner=3, outer=9, components=3),
    "rxd-local-mean": lambda source, output: run_rx_variant(source, output, "rxd", 9, 3),
    "utd": lambda source, output: run_rx_variant(source, output, "utd"),
    "rxd-utd": lambda source, output: run_rx_variant(source, output, "rxd-utd"),
}


@pytest.fixture
def rasters(tmp_path):
    return [write_cube(tmp_path / f"scene{i}.tif", correlated_cube(5, 30, 40, seed=i).astype(np.float32))
            for i in range(2)]


@pytest.mark.parametrize("detector", sorted(DIRECT))
def test_in_process_batch_equals_the_direct_run(tmp_path, rasters, detector):
    records = fb.run_batch(rasters, tmp_path / "out", detector=detector, windows=(3, 9), components=3)
    assert [r.status for r in records] == ["ok", "ok"]
    for source, record in zip(rasters, records):
        DIRECT[detector](source, tmp_path / "direct.tif")
        np.testing.assert_array_equal(read(record.output_path)[0], read(tmp_path / "direct.tif")[0])
        assert record.output_path.endswith(f"_{detector}.tif")


@pytest.mark.parametrize("detector, windows, components, message", [
    ("local-rx", (4, 21), None, "inner .guard. window must be an odd"),
    ("local-rx", (5, 21), 2.5, "neither a share of variance"),
    ("rxd-local-mean", (9, 9), None, "must be smaller than the local mean kernel"),
    ("rxd-local-mean", (3, 10), None, "local mean kernel must be an odd number"),
])
def test_bad_settings_fail_before_any_raster_is_read(tmp_path, detector, windows, components, message):
    with pytest.raises(InputError, match=message):
        fb.run_batch([str(tmp_path / "missing.tif")], tmp_path / "out", detector=detector, windows=windows,
                     components=components)


@pytest.mark.slow
@pytest.mark.skipif(not fd.dask_available(), reason="dask.distributed is not installed")
def test_command_line_runs_a_local_detector_on_a_dask_cluster(tmp_path, rasters):
    completed = subprocess.run(
        [sys.executable, "-m", "fers_core", "batch", "--detector", "rxd-local-mean", "--window-inner", "3",
         "--window-outer", "9", "--scheduler", "local", "--workers", "2", "--out-dir", str(tmp_path / "out"),
         *rasters],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    assert "2 of 2 raster(s) done" in completed.stdout
    for index, source in enumerate(rasters):
        run_rx_variant(source, tmp_path / "direct.tif", "rxd", 9, 3)
        np.testing.assert_allclose(read(tmp_path / "out" / f"scene{index}_rxd-local-mean.tif")[0],
                                   read(tmp_path / "direct.tif")[0], rtol=1e-6)


def test_the_command_line_takes_input_nodata_values(tmp_path):
    from osgeo import gdal

    data = correlated_cube(5, 30, 40, seed=3).astype(np.float32)
    data[:, :, :4] = 0  # an undeclared collar
    source = write_cube(tmp_path / "collar.tif", data)
    declared = str(tmp_path / "declared.tif")
    gdal.Translate(declared, source, noData=0)
    for detector in ("rx", "local-rx"):
        completed = subprocess.run(
            [sys.executable, "-m", "fers_core", "batch", "--detector", detector, "--nodata", "0", "--window-inner", "3",
             "--window-outer", "9", "--out-dir", str(tmp_path / "out"), source],
            capture_output=True, text=True, timeout=180, cwd=ROOT)
        assert completed.returncode == 0, completed.stderr + completed.stdout
        fb.run_batch([declared], tmp_path / "ref", detector=detector, windows=(3, 9))
        np.testing.assert_array_equal(read(tmp_path / "out" / f"collar_{detector}.tif")[0],
                                      read(tmp_path / "ref" / f"declared_{detector}.tif")[0])
    completed = subprocess.run([sys.executable, "-m", "fers_core", "rx", source, str(tmp_path / "rx.tif"), "--nodata",
                                "0", "-5"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr + completed.stdout
    np.testing.assert_array_equal(read(tmp_path / "rx.tif")[0], read(tmp_path / "ref" / "declared_rx.tif")[0])
