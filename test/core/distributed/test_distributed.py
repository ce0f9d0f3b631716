"""Detection on a Dask cluster (two worker processes on loopback) against the single-process path.

Outputs must be bit-identical: for many rasters (one task each) and for one raster split into
blocks over the workers, also when a worker is killed in the middle of a run.
"""

import contextlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal

from fers.fers_core.detectors.global_rx import run_global_rx
from fers.fers_core.detectors.rx import CovarianceAccumulator
from fers.fers_core.distributed import batch as fb
from fers.fers_core.distributed import cluster as fd
from fers.fers_core.distributed.dask_executor import DaskExecutor
from fers.fers_core.errors import DependencyError, InputError
from fers.fers_core.feedback import Feedback
from fers.fers_core.io.reader import RasterReader
from fers.fers_core.runtime.reduction import TreeReducer, tree_reduce

from ...conftest import ROOT
from ...rasters import write_cube

ORIGINAL_LIMITS = {key for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if key in os.environ}
needs_dask = pytest.mark.skipif(not fd.dask_available(),
                                reason='dask.distributed is not installed (python -m pip install "dask[distributed]")')


def cube(seed, rows=120, cols=400, bands=64):
    """Mixtures of a few spectra plus noise, as in real scenes (a covariance with a flat noise floor, whose
    eigenvectors depend on the BLAS thread count); wide, so that block_mb=1 gives a couple of dozen blocks."""
    rng = np.random.default_rng(seed)
    endmembers = rng.uniform(500, 4000, (6, bands))
    mixed = rng.dirichlet(np.ones(6), size=rows * cols) @ endmembers + rng.normal(0, 20, (rows * cols, bands))
    return mixed.T.reshape(bands, rows, cols)


def pixels(path):
    return gdal.Open(str(path)).ReadAsArray()


def assert_identical(a, b):
    a, b = pixels(a), pixels(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(a, b), f"max difference {np.abs(a.astype(np.float64) - b).max()}"


@pytest.fixture(scope="module")
def client():
    if not fd.dask_available():
        pytest.skip('dask.distributed is not installed (python -m pip install "dask[distributed]")')
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, memory_limit="1.5GiB", scheduler_kwargs=fd.LOOPBACK_HTTP)
    with cluster, Client(cluster, set_as_default=False) as connected:
        yield connected


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    good = []
    for seed in range(3):
        data = cube(seed).astype(np.int16)
        data[3, 7:9, 20:30] = -1  # nodata in one band
        good.append(write_cube(folder / f"scene{seed}.tif", data, nodata=-1))
    bad = folder / "broken.tif"
    bad.write_text("not a raster")
    return good, str(bad)


def kill_once_plugin(marker, prefix):
    """Worker plugin: the first task whose key starts with `prefix` kills its worker process as it starts.

    A marker file created with O_EXCL makes it happen exactly once, whichever worker gets there
    first; the class is local, so it travels to the workers by value.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class KillOnce(WorkerPlugin):
        name = "fers-test-kill-once"

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and str(key).startswith(prefix):
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return
                os._exit(1)

    return KillOnce()


@pytest.fixture
def kill_once(client, tmp_path):
    marker = tmp_path / "killed"
    armed = []

    def arm(prefix):
        plugin = kill_once_plugin(str(marker), prefix)
        client.register_plugin(plugin)
        armed.append(plugin.name)
        return marker

    yield arm
    for name in armed:
        client.unregister_worker_plugin(name)
    client.wait_for_workers(2, timeout=60)


# --- without a cluster ------------------------------------------------------------------------------------------------

def test_tree_is_fixed_by_the_block_count_only():
    def shape(n):
        return tree_reduce([str(i) for i in range(n)], lambda a, b: f"({a}+{b})")

    assert shape(1) == "0"
    assert shape(5) == "(((0+1)+(2+3))+4)"
    assert shape(7) == "(((0+1)+(2+3))+((4+5)+6))"
    reducer = TreeReducer(lambda a, b: f"({a}+{b})")
    for i in range(7):
        reducer.push(str(i))
    assert reducer.result() == shape(7) and reducer.result() == shape(7)  # result() leaves the reducer as it was


def test_merged_block_statistics_match_whole_array():
    from fers.fers_core.detectors.global_rx import RxPartial, merge_rx_partials

    data = np.random.default_rng(0).standard_normal((1000, 6)) * 3 + 1e4
    parts = []
    for block in np.array_split(data, 7):
        accumulator = CovarianceAccumulator(6)
        accumulator.add(block)
        parts.append(RxPartial(accumulator, len(block)))
    first = parts[0].accumulator.cross.copy()
    merged = tree_reduce(parts, merge_rx_partials)
    assert np.array_equal(parts[0].accumulator.cross, first)  # merging never modifies a partial
    assert merged.valid_pixels == 1000
    np.testing.assert_allclose(merged.accumulator.covariance, np.cov(data, rowvar=False), rtol=1e-9)


def test_scheduler_text_is_checked():
    assert fd.check_scheduler("") == "" and fd.check_scheduler(" Local ") == "local"
    assert fd.check_scheduler("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    with pytest.raises(InputError, match="not a Dask scheduler address"):
        fd.check_scheduler("my cluster")


def test_missing_dask_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(fd, "dask_available", lambda: False)
    with pytest.raises(DependencyError, match=r'pip install "dask\[distributed\]"'):
        fd.global_rx("local", "in.tif", str(tmp_path / "out.tif"))
    source = write_cube(tmp_path / "in.tif", cube(0, rows=20, cols=30, bands=5).astype(np.float32))
    fd.global_rx("", source, str(tmp_path / "out.tif"))  # in process: no dask needed
    assert (tmp_path / "out.tif").exists()


# --- on a two-worker cluster ------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_dask
def test_many_rasters_identical_and_a_bad_input_reported(client, rasters, tmp_path):
    good, bad = rasters
    records = fb.run_batch([good[0], bad, good[1], good[2]], tmp_path / "out", detector="rx", block_mb=1,
                           client=client)
    assert [r.status for r in records] == ["ok", "failed", "ok", "ok"]
    assert "Cannot open raster" in records[1].message
    assert len({r.worker for r in records if r.status == "ok"}) >= 1 and records[0].pixels == 120 * 400
    for source, record in zip([good[0], good[1], good[2]], [records[0], records[2], records[3]]):
        run_global_rx(source, tmp_path / "single.tif", block_mb=1)
        assert_identical(record.output_path, tmp_path / "single.tif")
    table = fb.format_summary(records)
    assert "broken.tif" in table and "failed" in table and "3 of 4 raster(s) done, 1 failed" in table


@needs_dask
def test_one_raster_split_over_workers_is_identical(client, rasters, tmp_path):
    source = rasters[0][1]
    mask = np.zeros((120, 400), np.uint8)
    mask[50:60, 100:140] = 1
    mask_path = write_cube(tmp_path / "mask.tif", mask)
    single = run_global_rx(source, tmp_path / "single.tif", mask_path=mask_path, block_mb=1)
    split = run_global_rx(source, tmp_path / "split.tif", mask_path=mask_path, block_mb=1,
                          executor=DaskExecutor(client))
    assert_identical(tmp_path / "split.tif", tmp_path / "single.tif")
    assert (split.valid_pixels, split.background_pixels, split.rank) == (single.valid_pixels,
                                                                        single.background_pixels, single.rank)
    assert len(RasterReader(source).windows(1)) >= 8  # really split into many blocks


@pytest.mark.slow
@needs_dask
def test_fers_split_over_workers_is_identical(client, model_file, tmp_path):
    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.pipeline.detect import run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions
    from fers.fers_core.synthetic import write_scene

    scene, _ = write_scene(tmp_path / "scene.tif", tmp_path / "truth.tif", rows=64, cols=48, bands=20, seed=3)

    def options(name):
        return DetectOptions(branches=("spectral",), block_mb=0.1, spectral_output=str(tmp_path / f"{name}_spe.tif"))

    single = run_fers_detection(scene, tmp_path / "single.tif", load_any_model(model_file), options("single"))
    summary = run_fers_detection(scene, tmp_path / "split.tif", load_any_model(model_file), options("split"),
                                 executor=DaskExecutor(client), model_path=model_file)
    assert summary.valid_pixels == single.valid_pixels > 0
    assert_identical(tmp_path / "split.tif", tmp_path / "single.tif")
    assert_identical(tmp_path / "split_spe.tif", tmp_path / "single_spe.tif")


class Log(Feedback):
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


@pytest.fixture(scope="module")
def fers_scene(tmp_path_factory):
    from fers.fers_core.synthetic import write_scene

    folder = tmp_path_factory.mktemp("fers")
    scene, _ = write_scene(folder / "synthetic.tif", folder / "truth.tif", rows=60, cols=50, bands=16, seed=4)
    mask = np.zeros((60, 50), np.uint8)
    mask[10:20, 5:25] = 1
    return write_cube(folder / "scene.tif", pixels(scene)), write_cube(folder / "mask.tif", mask)


@needs_dask
@pytest.mark.parametrize("fusion, spill", [("sum", True), ("sum", False), ("product", True), ("product", False)])
def test_fers_on_the_dask_executor_is_identical(client, model_file, fers_scene, tmp_path, fusion, spill):
    """Both fusions, the feature spill on (shared by the local cluster's workers) and off, a mask, several strips."""
    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.pipeline.detect import run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions

    scene, mask = fers_scene
    model = load_any_model(model_file)
    logs = {}
    for name, executor in (("single", None), ("split", DaskExecutor(client))):
        options = DetectOptions(fusion=fusion, spill=spill, block_mb=0.2, mask_path=mask,
                                spectral_output=str(tmp_path / f"{name}_spe.tif"),
                                spatial_output=str(tmp_path / f"{name}_spa.tif"))
        logs[name] = Log()
        run_fers_detection(scene, tmp_path / f"{name}.tif", model, options, logs[name], executor=executor,
                           model_path=model_file)
    assert any("strip task(s) per pass, on the Dask cluster" in line for line in logs["split"].lines)
    for log in logs.values():
        assert any("are kept between passes" in line for line in log.lines) == spill, log.lines
    for name in ("", "_spe", "_spa"):
        assert_identical(tmp_path / f"split{name}.tif", tmp_path / f"single{name}.tif")
    assert not [name for name in os.listdir(tmp_path) if ".partial-" in name]  # the spill file is gone


@needs_dask
def test_fers_with_a_band_list_runs_in_process_and_on_dask(client, model_file, fers_scene, tmp_path):
    """A run's source holds its options (a band list: not hashable); both executors take it."""
    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.pipeline.detect import run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions

    scene, _ = fers_scene
    options = DetectOptions(bands=[1, 4, 6, 9, 12], block_mb=0.2)
    model = load_any_model(model_file)
    run_fers_detection(scene, tmp_path / "single.tif", model, options)
    run_fers_detection(scene, tmp_path / "split.tif", model, options, executor=DaskExecutor(client),
                       model_path=model_file)
    assert_identical(tmp_path / "split.tif", tmp_path / "single.tif")


@needs_dask
def test_fers_on_workers_of_other_machines_recomputes_the_features(client, model_file, fers_scene, tmp_path):
    """Without a file system shared with the workers (a remote cluster), the score pass runs the networks again."""
    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.pipeline.detect import run_fers_detection

    scene, _ = fers_scene
    model = load_any_model(model_file)
    run_fers_detection(scene, tmp_path / "single.tif", model)
    executor = DaskExecutor(client)
    executor.shares_files = False
    log = Log()
    run_fers_detection(scene, tmp_path / "split.tif", model, feedback=log, executor=executor, model_path=model_file)
    assert any("the networks run again" in line for line in log.lines), log.lines
    assert_identical(tmp_path / "split.tif", tmp_path / "single.tif")


@needs_dask
def test_batch_split_fers_is_identical(client, model_file, fers_scene, tmp_path):
    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.pipeline.detect import run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions

    scene, _ = fers_scene
    records = fb.run_batch([scene], tmp_path / "out", detector="fers", model_path=model_file, block_mb=1,
                           client=client, split=True)
    assert [r.status for r in records] == ["ok"] and records[0].worker == "all workers"
    run_fers_detection(scene, tmp_path / "single.tif", load_any_model(model_file), DetectOptions(block_mb=1))
    assert_identical(records[0].output_path, tmp_path / "single.tif")


@needs_dask
@pytest.mark.parametrize("detector", ["local-rx", "rxd-local-mean", "utd"])
def test_local_detectors_on_the_dask_executor_are_identical(client, rasters, tmp_path, detector):
    """Local RX (projected onto principal components) and RX variants: tile tasks over the same tile plan."""
    from fers.fers_core.detectors.local_rx import run_local_rx
    from fers.fers_core.detectors.rx_variants import run_rx_variant

    source = rasters[0][0]
    mask = np.zeros((120, 400), np.uint8)
    mask[50:60, 100:140] = 1
    mask_path = write_cube(tmp_path / "mask.tif", mask)
    log = Log()
    for name, executor, feedback in (("single", None, None), ("split", DaskExecutor(client), log)):
        output = tmp_path / f"{name}.tif"
        if detector == "local-rx":
            summary = run_local_rx(source, output, mask_path=mask_path, inner=3, outer=7, block_mb=1, components=5,
                                   feedback=feedback, executor=executor)
        else:
            summary = run_rx_variant(source, output, *(("rxd", 9, 3) if detector == "rxd-local-mean" else ("utd",)),
                                     mask_path=mask_path, block_mb=1, feedback=feedback, executor=executor)
    tiles = [int(found.group(1)) for line in log.lines
             if (found := re.search(r"in (\d+) tile\(s\).*on the Dask cluster", line))]
    assert tiles and tiles[0] > 1, log.lines  # really split into several tile tasks
    assert summary.valid_pixels > 0
    assert_identical(tmp_path / "split.tif", tmp_path / "single.tif")


@needs_dask
@pytest.mark.parametrize("detector, fusion", [("local", "product"), ("rxd-local-mean", "sum")])
def test_fers_with_a_local_detector_on_the_dask_executor_is_identical(client, model_file, fers_scene, tmp_path,
                                                                       detector, fusion):
    from fers.fers_core.enhance.checkpoints import load_any_model
    from fers.fers_core.pipeline.detect import run_fers_detection
    from fers.fers_core.pipeline.options import DetectOptions

    scene, mask = fers_scene
    model = load_any_model(model_file)
    for name, executor in (("single", None), ("split", DaskExecutor(client))):
        options = DetectOptions(fusion=fusion, detector=detector, window_inner=3, window_outer=7, block_mb=0.2,
                                mask_path=mask, spectral_output=str(tmp_path / f"{name}_spe.tif"))
        run_fers_detection(scene, tmp_path / f"{name}.tif", model, options, executor=executor, model_path=model_file)
    assert_identical(tmp_path / "split.tif", tmp_path / "single.tif")
    assert_identical(tmp_path / "split_spe.tif", tmp_path / "single_spe.tif")


@pytest.mark.slow
@needs_dask
def test_worker_killed_during_a_split_run(client, kill_once, rasters, tmp_path):
    source = rasters[0][2]
    run_global_rx(source, tmp_path / "single.tif", block_mb=1)
    marker = kill_once("fers-rx-score")
    run_global_rx(source, tmp_path / "split.tif", block_mb=1, executor=DaskExecutor(client))
    assert marker.exists()  # a worker did die while scoring a block
    assert_identical(tmp_path / "split.tif", tmp_path / "single.tif")


@pytest.mark.slow
@needs_dask
def test_worker_killed_during_a_batch(client, kill_once, rasters, tmp_path):
    good, _ = rasters
    marker = kill_once("fers-batch-raster")
    records = fb.run_batch(good, tmp_path / "out", detector="rx", block_mb=1, client=client)
    assert marker.exists()
    assert [r.status for r in records] == ["ok"] * 3
    for source, record in zip(good, records):
        run_global_rx(source, tmp_path / "single.tif", block_mb=1)
        assert_identical(record.output_path, tmp_path / "single.tif")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.path.basename(r.output_path) for r in records)


def clean_environment():
    """This process's environment without the thread limits a LocalCluster leaves in it (Dask's pre-spawn-environ),
    so that the runner's BLAS thread count is that of a fresh process, like the reference computed here."""
    from dask import config

    limits = set(config.get("distributed.nanny.pre-spawn-environ", {}))
    return {key: value for key, value in os.environ.items() if key not in limits or key in ORIGINAL_LIMITS}


@contextlib.contextmanager
def external_cluster(folder, scheduler_has_the_engine=True, as_plugin=False):
    """A scheduler and one worker in their own processes, as a user's cluster would be (the test process's own
    LocalCluster cannot serve the command line: its scheduler would load the engine under its bare name here);
    the worker can import the engine (also as the plugin's `fers.fers_core` with `as_plugin`), the scheduler
    only when `scheduler_has_the_engine`."""
    from distributed import Client

    paths = [str(ROOT)] + ([str(ROOT / ".plugins")] if as_plugin else [])
    env = dict(clean_environment(), PYTHONPATH=os.pathsep.join(paths))
    scheduler_env = env if scheduler_has_the_engine else clean_environment()
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    address_file = folder / "scheduler.json"
    scheduler = subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
                                         "--scheduler-file", str(address_file)], env=scheduler_env,
                                 cwd=ROOT if scheduler_has_the_engine else folder,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                               str(address_file), "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Client(scheduler_file=str(address_file), timeout=60) as watcher:
            watcher.wait_for_workers(1, timeout=60)
            yield watcher.scheduler.address
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture()
def external_scheduler(tmp_path):
    with external_cluster(tmp_path) as address:
        yield address


@pytest.mark.slow
@needs_dask
def test_relative_paths_reach_the_workers_as_the_files_they_name_here(rasters, tmp_path, monkeypatch):
    """The workers of an external cluster run in their own folder: a relative INPUT (qgis_process run from the
    data's folder) failed there with 'No such file'."""
    good, _ = rasters
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(good[0], data / "scene.tif")
    with external_cluster(tmp_path, as_plugin=True) as address:
        monkeypatch.chdir(data)
        fd.global_rx(address, "scene.tif", "relative_scores.tif", block_mb=1)
    run_global_rx(good[0], tmp_path / "single.tif", block_mb=1)
    assert_identical(data / "relative_scores.tif", tmp_path / "single.tif")


@pytest.mark.slow
@needs_dask
def test_a_scheduler_that_cannot_import_the_engine_is_named_before_any_task(rasters, tmp_path):
    """The scheduler unpickles every task graph: without the engine on its PYTHONPATH each task failed with Dask's
    "Error during deserialization of the task graph" while the workers' check passed."""
    good, _ = rasters
    with external_cluster(tmp_path, scheduler_has_the_engine=False) as address:
        completed = subprocess.run(
            [sys.executable, "-m", "fers_core", "batch", "--detector", "rx", "--scheduler", address,
             "--out-dir", str(tmp_path / "out"), "--block-mb", "1", good[0]],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=clean_environment(),
        )
    assert completed.returncode != 0
    assert (f"The Dask scheduler at {address} cannot read FERS's tasks (ModuleNotFoundError: No module named "
            "'fers_core'): it unpickles every task, so it needs the 'fers_core' package too.") in completed.stderr
    assert "deserialization" not in completed.stderr + completed.stdout
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


@pytest.mark.slow
@needs_dask
def test_command_line_batch_runner(external_scheduler, rasters, tmp_path):
    good, bad = rasters
    completed = subprocess.run(
        [sys.executable, "-m", "fers_core", "batch", "--detector", "rx", "--scheduler", external_scheduler,
         "--out-dir", str(tmp_path / "out"), "--block-mb", "1", good[0], bad],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=clean_environment(),
    )
    assert completed.returncode == 1, completed.stderr  # one input failed
    assert "1 of 2 raster(s) done, 1 failed" in completed.stdout
    assert "scene0.tif" in completed.stdout and "broken.tif" in completed.stdout
    assert "[2/2]" in completed.stderr or "[1/2]" in completed.stderr  # progress lines
    run_global_rx(good[0], tmp_path / "single.tif", block_mb=1)
    assert_identical(tmp_path / "out" / "scene0_rx.tif", tmp_path / "single.tif")
