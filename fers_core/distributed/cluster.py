"""Detection on a Dask cluster: many rasters (one task each), or one raster split into blocks.

Dask (``dask.distributed``) is optional: nothing here imports it until a cluster is asked for,
and then :func:`require_dask` says how to install it.

Many rasters: one task per raster runs the single-process detector on a worker and writes that
raster's output itself (one writer per file, temporary name + rename, so a task that is re-run
after its worker died simply writes the file again). The FERS model is loaded once per worker
process, from a cache keyed by the model's path and modification time.

One huge raster: the global statistics are a map-reduce over the fixed block list of the
single-process path (per-block partials, merged in the same fixed tree of
:class:`~fers_core.pipeline.blockwise.TreeReducer`, in float64), then every block is scored on a worker
by the same per-block function, and this process, the only writer, assembles the blocks in the
tiled GeoTIFF through RasterWriter. The output is bit-identical to the single-process run
(for FERS the networks run at this machine's PyTorch thread count, on the same kind of CPU).

Tasks are pure: they read rasters by path and return values, so Dask may re-run any of them
elsewhere when a worker dies. Rasters (and the model) must be readable at the same path on the
workers, e.g. on a shared file system.
"""

import collections
import dataclasses
import importlib.util
import logging
import os
import re
import sys
import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import Cancelled, DependencyError, FersError, InputError
from ..feedback import Feedback, ProgressRange, StageFeedback
from ..io.raster_io import DEFAULT_BLOCK_MB, RasterReader, check_raster_outputs, read_mask
from ..pipeline.blockwise import TreeReducer
from ..runtime.threads import blas_threads, blas_threads_set

LOCAL = "local"
INSTALL_COMMAND = 'python -m pip install "dask[distributed]"'
DETECTORS = ("rx", "fers", "local-rx", "rxd-local-mean", "utd", "rxd-utd")
WHOLE_RASTER_DETECTORS = ("local-rx", "rxd-local-mean", "utd", "rxd-utd")
"""Batch detectors that run one raster per task, never split into blocks across workers (their tiles need halos)."""
_POLL_SECONDS = 0.25
# no dashboard; the scheduler's small HTTP server (health checks) on a free loopback port, not on 8787
LOOPBACK_HTTP = {"dashboard_address": "127.0.0.1:0"}
_ADDRESS = re.compile(r"^([a-z]+://)?[\w.\-\[\]:]+:\d+$", re.IGNORECASE)
# how long to wait for a scheduler's answer: connecting, its handshake, and a check that it still answers
# while a run waits for results (a port that accepts connections but never answers must not hang a run)
SCHEDULER_TIMEOUT_ENV = "FERS_SCHEDULER_TIMEOUT_S"
DEFAULT_SCHEDULER_TIMEOUT_S = 20.0


# --- the optional dependency and the client ------------------------------------------------------------------------

def dask_available():
    return importlib.util.find_spec("distributed") is not None


def require_dask():
    """Raise DependencyError with install instructions when dask.distributed cannot be imported."""
    if not dask_available():
        raise DependencyError(
            "Running on a Dask cluster needs dask.distributed, which is not installed: run "
            f"'{INSTALL_COMMAND}' with the Python that runs FERS (for QGIS, the Python QGIS uses), "
            "or leave SCHEDULER empty to run in this process."
        )
    try:
        import distributed  # noqa: F401
    except Exception as error:  # a broken install is reported, not raised raw
        raise DependencyError(f"dask.distributed is installed but cannot be imported ({error}); reinstall it: "
                              f"{INSTALL_COMMAND}.") from None


def check_scheduler(scheduler):
    """The scheduler text cleaned: '' (in process), 'local' or an address; InputError for anything else."""
    text = (scheduler or "").strip()
    if text.lower() == LOCAL:
        return LOCAL
    if text and not _ADDRESS.match(text):
        raise InputError(f"SCHEDULER '{text}' is not a Dask scheduler address: leave it empty to run in this "
                         "process, write 'local' for a cluster on this machine, or give an address such as "
                         "tcp://host:8786.")
    return text


def available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def connect(scheduler, feedback=None, n_workers=None, memory_limit="auto"):
    """A dask.distributed Client: 'local' starts a LocalCluster here (one single-threaded worker
    process per core unless `n_workers`), an address connects to that scheduler. Closed on exit."""
    feedback = feedback or Feedback()
    scheduler = check_scheduler(scheduler)
    if not scheduler:
        raise InputError("No Dask scheduler was given: use 'local' or an address such as tcp://host:8786.")
    require_dask()
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler == LOCAL:
        _use_a_python_for_workers()
        workers = n_workers or available_cores()
        feedback.info(f"Starting a local Dask cluster: {workers} worker process(es), one thread each.")
        try:
            with _environment_kept():  # Dask sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in this process to spawn workers
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, memory_limit=memory_limit,
                                       silence_logs=logging.ERROR, scheduler_kwargs=LOOPBACK_HTTP)
            client = Client(cluster, set_as_default=False)
        except Exception as error:
            if cluster is not None:
                cluster.close()
            raise DependencyError(f"Could not start a local Dask cluster ({type(error).__name__}: {error}); "
                                  "leave SCHEDULER empty to run in this process.") from None
    else:
        timeout = scheduler_timeout()
        try:
            _probe_scheduler(scheduler, timeout)
            client = Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
        except TimeoutError:
            raise InputError(_silent_scheduler(scheduler, timeout, "accepted the connection but did not answer"))\
                from None
        except Exception as error:
            raise InputError(f"Cannot reach the Dask scheduler at {scheduler} ({error}): check the address and "
                             "that 'dask scheduler' is running there.") from None
    try:
        check_workers(client, scheduler, feedback)
        yield client
    finally:
        client.close()
        if cluster is not None:
            with _environment_kept():  # a worker restarted during the run set them again
                cluster.close()


def scheduler_timeout():
    """Seconds to wait for a Dask scheduler's answer: FERS_SCHEDULER_TIMEOUT_S when set to a positive number."""
    try:
        value = float(os.environ.get(SCHEDULER_TIMEOUT_ENV, "") or DEFAULT_SCHEDULER_TIMEOUT_S)
    except ValueError:
        value = DEFAULT_SCHEDULER_TIMEOUT_S
    return value if value > 0 else DEFAULT_SCHEDULER_TIMEOUT_S


def _silent_scheduler(scheduler, timeout, what):
    return (f"The Dask scheduler at {scheduler} {what} within {timeout:g} s: check that the address is a Dask "
            "scheduler's (the address 'dask scheduler' prints, port 8786 by default), not another service's, and "
            f"that the scheduler is not stuck ({SCHEDULER_TIMEOUT_ENV} sets how long to wait), or leave SCHEDULER "
            "empty to run in this process.")


def _probe_scheduler(address, timeout):
    """Connect to the scheduler and complete Dask's handshake within `timeout` s (TimeoutError if it is silent).

    dask.distributed bounds the connection itself but then waits for the peer's handshake without a limit,
    so a port that accepts connections and never answers (another service, a hung scheduler) would hang the
    run for ever. The probe runs in its own thread and event loop, whatever the caller's thread runs.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    from distributed.comm import connect as open_comm

    async def probe():
        comm = await asyncio.wait_for(open_comm(address, timeout=timeout), timeout)
        await comm.close()

    executor = ThreadPoolExecutor(1, thread_name_prefix="fers-scheduler-probe")
    try:
        executor.submit(asyncio.run, probe()).result(timeout + 5)
    except (asyncio.TimeoutError, FutureTimeout):
        raise TimeoutError from None
    finally:
        executor.shutdown(wait=False)


class _SchedulerWatch:
    """While a run waits for results, checks now and then that the scheduler still answers.

    A scheduler that stops answering without closing the connection would leave every wait for results
    pending for ever; after `timeout` s without news the watch asks the scheduler for its identity and
    raises FersError when no answer comes within `timeout` s either.
    """

    def __init__(self, client, timeout=None):
        self.client = client
        self.timeout = timeout or scheduler_timeout()
        self._last = time.monotonic()

    def progressed(self):
        self._last = time.monotonic()

    def check(self):
        if time.monotonic() - self._last < self.timeout:
            return
        try:
            self.client.sync(self.client.scheduler.identity, callback_timeout=self.timeout)
        except Exception:  # a timeout, or a connection the scheduler dropped
            address = getattr(self.client.scheduler, "address", "?")
            raise FersError(_silent_scheduler(address, self.timeout, "stopped answering: no reply")) from None
        self._last = time.monotonic()


@contextmanager
def _environment_kept():
    """Restore the thread-limit variables Dask's Nanny writes into os.environ (other children of QGIS need them
    as they were)."""
    import dask

    keys = list(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _use_a_python_for_workers():
    """Worker processes are spawned with sys.executable, which inside QGIS is QGIS itself: use its Python."""
    if os.path.basename(sys.executable).lower().startswith("python"):
        return
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.join(sys.exec_prefix, name) for name in ("python.exe", "python3.exe")]
    candidates += [os.path.join(sys.exec_prefix, "bin", name) for name in (f"python{version}", "python3")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            import multiprocessing

            multiprocessing.set_executable(candidate)
            return


def _environment():
    """Versions that decide whether results are identical across machines (run on each worker)."""
    from importlib import metadata

    import numpy
    from osgeo import gdal

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"python": sys.version.split()[0], "numpy": numpy.__version__, "gdal": gdal.__version__,
            "torch": torch_version}


def check_workers(client, scheduler, feedback, timeout=60):
    """Wait for a worker; check that the workers can import this package; warn about differing versions."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception:
        raise InputError(f"The Dask scheduler at {scheduler} has no workers after {timeout} s: start some with "
                         f"'dask worker {scheduler}'.") from None
    try:
        environments = client.run(_environment, callback_timeout=timeout)
    except TimeoutError:
        raise InputError(f"The Dask workers of the scheduler at {scheduler} did not answer within {timeout} s: "
                         "check that they are running and not busy with other work, or leave SCHEDULER empty to "
                         "run in this process.") from None
    except Exception as error:
        package = __name__.rsplit(".", 1)[0]
        raise DependencyError(
            f"The Dask workers cannot run FERS ({type(error).__name__}: {error}): install the same packages on "
            f"them (numpy, GDAL, torch for FERS, dask[distributed]) and make the '{package}' package importable "
            "there, e.g. start 'dask worker' with PYTHONPATH set to the folder that holds it."
        ) from None
    here = _environment()
    differing = {address: env for address, env in environments.items() if env != here}
    if differing:
        address, env = next(iter(differing.items()))
        feedback.warning(f"{len(differing)} Dask worker(s) run other versions than this machine ({address}: {env}; "
                         f"here: {here}): results may differ slightly from a run in this process.")
    threads = sum(client.nthreads(callback_timeout=timeout).values())
    feedback.info(f"Dask cluster at {client.scheduler.address}: {len(environments)} worker(s), {threads} thread(s).")


# --- worker side: model cache, task functions --------------------------------------------------------------------

_MODELS = collections.OrderedDict()
_MODELS_LOCK = threading.Lock()
_MODELS_KEPT = 2


def model_key(path):
    """(absolute path, modification time, size) of a model file or checkpoint folder: the model cache's key."""
    path = os.path.abspath(str(path))
    if os.path.isdir(path):
        files = [os.path.join(path, name) for name in sorted(os.listdir(path))]
        stats = [os.stat(f) for f in files if os.path.isfile(f)]
        return path, max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats)
    try:
        stat = os.stat(path)
    except OSError:
        raise InputError(f"The model {path} does not exist; check the path.") from None
    return path, stat.st_mtime_ns, stat.st_size


def cached_model(key):
    """The model of a model_key, loaded at most once per process (a worker keeps the last two)."""
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        from ..enhance.checkpoints import load_any_model
        from ..enhance.torch_support import require_torch

        require_torch()
        model = load_any_model(key[0])
        _MODELS[key] = model
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
        return model


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:  # not on a Dask worker (in-process batch)
        return "this process"


def _identity(value):
    return value


def _rx_statistics_task(input_path, bands, mask_path, window, blas):
    from ..detectors.global_rx import rx_block_statistics

    with RasterReader(input_path, bands) as reader, blas_threads_set(blas):
        mask = read_mask(mask_path, reader) if mask_path else None
        try:
            return rx_block_statistics(reader, mask, window)
        finally:
            if mask is not None:
                mask.close()


def _rx_merge_task(left, right):
    from ..detectors.global_rx import merge_rx_partials

    return merge_rx_partials(left, right)


def _rx_score_task(input_path, bands, model, window, blas):
    from ..detectors.global_rx import rx_block_scores

    with RasterReader(input_path, bands) as reader, blas_threads_set(blas):
        return rx_block_scores(reader, model, window)


@dataclass
class DetectTaskSpec:
    """What a worker needs to rebuild a FERS run's per-strip engine (small: the model travels by path)."""

    input_path: str
    model_key: tuple
    options: object  # the run's resolved DetectOptions (prepare_detection) without output paths
    fusion: object  # choices.Fusion, resolved
    threads: int  # PyTorch threads
    blas: int  # BLAS threads
    vmin: float = None
    vmax: float = None
    fill: object = None  # float64 band means, scaled
    rx_models: list = None
    extra_names: tuple = ()


@contextmanager
def _detect_engine(spec):
    from ..enhance.feature_strips import FeatureStrips
    from ..enhance.precision import resolve_device, torch_threads
    from ..pipeline.scaling import Preprocessor

    model = cached_model(spec.model_key)
    with RasterReader(spec.input_path, spec.options.bands) as reader, torch_threads(spec.threads), \
            blas_threads_set(spec.blas):
        mask = read_mask(spec.options.mask_path, reader) if spec.options.mask_path else None
        try:
            preprocessor = Preprocessor(reader, model, Feedback())
            preprocessor.vmin, preprocessor.vmax, preprocessor.fill = spec.vmin, spec.vmax, spec.fill
            yield preprocessor, FeatureStrips(reader, preprocessor, model, spec.options,
                                              resolve_device(spec.options.device)), mask
        finally:
            if mask is not None:
                mask.close()


def _detect_range_task(spec, window):
    with _detect_engine(spec) as (preprocessor, _, _):
        return preprocessor.range_partial(window)


def _detect_range_merge_task(left, right):
    from ..pipeline.scaling import merge_range_partials

    return merge_range_partials(left, right)


def _detect_statistics_task(spec, window):
    from ..pipeline.passes import statistics_partial

    with _detect_engine(spec) as (_, strips, mask):
        return statistics_partial(strips, mask, spec.fusion, window)


def _detect_statistics_merge_task(left, right):
    from ..pipeline.passes import merge_statistics_partials

    return merge_statistics_partials(left, right)


def _detect_score_task(spec, window):
    from ..pipeline.passes import score_strip

    with _detect_engine(spec) as (_, strips, _):
        return score_strip(strips, spec.rx_models, spec.fusion, window, spec.extra_names)


# --- client side: following futures ------------------------------------------------------------------------------

class _Run:
    """Names this run's tasks (readable keys, e.g. fers-rx-score-<run>-<block>) and cancels them on failure.

    It keeps only weak references: a result the run no longer needs is released at once.
    """

    def __init__(self, client, kind):
        self.client = client
        self.prefix = f"fers-{kind}"
        self.run_id = uuid.uuid4().hex[:10]
        self.futures = []
        self._counter = 0

    def submit(self, stage, function, *args):
        self._counter += 1
        future = self.client.submit(function, *args, key=f"{self.prefix}-{stage}-{self.run_id}-{self._counter}",
                                    pure=False)
        self.futures.append(weakref.ref(future))
        return future

    def share(self, stage, value):
        """A small task holding `value`: sent once to each worker that needs it, recomputable if its worker dies."""
        return self.submit(stage, _identity, value)

    def cancel(self):
        pending = [f for f in (ref() for ref in self.futures) if f is not None and not f.done()]
        if pending:
            self.client.cancel(pending)
        self.futures = []


def _tree(combine, leaves):
    """The fixed TreeReducer tree of merge tasks over `leaves` (futures, in block order)."""
    reducer = TreeReducer(combine)
    for leaf in leaves:
        reducer.push(leaf)
    return reducer.result()


def _wait(futures, return_when="ALL_COMPLETED"):
    """distributed.wait for a short while (TimeoutError when nothing is done); no default client needed."""
    from distributed import wait

    futures = list(futures)
    with futures[0].client.as_current():
        return wait(futures, timeout=_POLL_SECONDS, return_when=return_when)


def _result(future, feedback):
    """The future's result, checking for a cancel (and that the scheduler answers) while waiting; task failures
    become FersErrors."""
    watch = _SchedulerWatch(future.client)
    while True:
        try:
            _wait([future])
            break
        except TimeoutError:
            feedback.check_cancelled()
            watch.check()
    try:
        return future.result()
    except FersError:
        raise
    except Exception as error:
        raise _task_error(error) from None


def _task_error(error):
    name = type(error).__name__
    if name == "KilledWorker":
        return FersError(f"A task was running on every Dask worker that died while running it ({error}); the "
                         "usual cause is memory: give the workers more memory or use smaller blocks (MEMORY_MB).")
    return FersError(f"A Dask task failed: {name}: {error}")


def _follow(futures, feedback, progress):
    """Wait until every future is done, reporting progress and checking for a cancel; raise the first error.

    Empties the `futures` list, so that finished results are released as soon as their merge is done.
    """
    pending, total = set(futures), len(futures)
    futures.clear()
    for done, remaining in _as_they_finish(pending, feedback):
        for future in done:
            if future.status == "error":
                _result(future, feedback)
        progress(1 - remaining / total)


def _as_they_finish(futures, feedback):
    """Yield (futures just finished, how many are still pending) until all are done, checking for a cancel."""
    pending = set(futures)
    watch = _SchedulerWatch(next(iter(pending)).client) if pending else None
    while pending:
        try:
            done, pending = _wait(pending, "FIRST_COMPLETED")
        except TimeoutError:
            feedback.check_cancelled()
            watch.check()
            continue
        watch.progressed()
        yield done, len(pending)


def _in_order(submit, items, feedback, ahead):
    """Yield (item, result) in the order of `items`, keeping at most `ahead` tasks submitted at a time."""
    queue = collections.deque()
    iterator = iter(items)

    def fill():
        while len(queue) < ahead:
            item = next(iterator, _END)
            if item is _END:
                return
            queue.append((item, submit(item)))

    try:
        fill()
        while queue:
            item, future = queue.popleft()
            fill()
            result = _result(future, feedback)
            future.release()
            yield item, result
    finally:
        for _, future in queue:
            future.cancel()


_END = object()


def _blas_threads(feedback, threads=0):
    """BLAS threads for the tasks: `threads`, else this process's count (a warning when it cannot be known)."""
    if threads:
        return int(threads)
    threads = blas_threads()
    if threads is None:
        feedback.warning("numpy's BLAS here is not a controllable OpenBLAS, so the workers cannot match its thread "
                         "count: results may differ from a run in this process in the last bits.")
    return threads


def _ahead(client):
    return max(4, 2 * sum(client.nthreads().values()))


# --- one raster split across the cluster -----------------------------------------------------------------------------

def run_global_rx_distributed(client, input_path, output_path, bands=None, mask_path=None, feedback=None,
                              block_mb=DEFAULT_BLOCK_MB, threads=0):
    """run_global_rx with the blocks spread over a Dask cluster; same output, bit for bit, and summary.

    threads: BLAS threads per task; 0 = this process's count, which makes the output bit-identical
    to run_global_rx here (another count matches run_global_rx run at that count).
    """
    from ..detectors.global_rx import RxRunSummary, fit_rx_partial, write_rx_scores

    feedback = feedback or Feedback()
    check_raster_outputs([("the output", output_path, 1)])
    started = time.perf_counter()
    reader = RasterReader(input_path, bands)
    if mask_path:
        read_mask(mask_path, reader).close()
    windows = reader.windows(block_mb)
    feedback.info(f"Global RX on {reader.width}x{reader.height} pixels x {reader.band_count} bands in "
                  f"{len(windows)} block(s) of up to {windows[0].rows} rows, on the Dask cluster.")
    blas = _blas_threads(feedback, threads)
    run = _Run(client, "rx")
    try:
        leaves = [run.submit("statistics", _rx_statistics_task, str(input_path), reader.bands, mask_path, window,
                             blas) for window in windows]
        root = _tree(lambda left, right: run.submit("merge", _rx_merge_task, left, right), leaves)
        _follow(leaves, feedback, ProgressRange(feedback, 0, 50))
        partial = _result(root, feedback)
        with blas_threads_set(blas):  # the eigen-decomposition too runs at the tasks' thread count
            model = fit_rx_partial(partial, feedback)
        shared = run.share("model", model)
        blocks = _in_order(lambda window: run.submit("score", _rx_score_task, str(input_path), reader.bands,
                                                     shared, window, blas), windows, feedback, _ahead(client))
        write_rx_scores(reader, output_path, blocks, len(windows), ProgressRange(feedback, 50, 100))
    except BaseException:
        run.cancel()
        raise
    finally:
        reader.close()
    seconds = time.perf_counter() - started
    feedback.info(f"Wrote {output_path} in {seconds:.2f} s.")
    return RxRunSummary(str(output_path), partial.valid_pixels, model.pixel_count, reader.band_count, model.rank,
                        seconds)


def run_fers_detection_distributed(client, input_path, output_path, model_path, options=None, feedback=None,
                                   model=None, threads=0):
    """run_fers_detection with the strips spread over a Dask cluster; same outputs, bit for bit.

    The workers load the model from `model_path` (once per worker); `model`, when given, is the
    same model already loaded here (used for the checks and the band mapping). threads: BLAS and
    PyTorch threads per task (options.threads, when set, for PyTorch); 0 = this process's counts,
    which makes the outputs bit-identical to run_fers_detection here.
    """
    from ..enhance.checkpoints import load_any_model
    from ..pipeline.detect import check_detection_formats, prepare_detection, write_detection_outputs
    from ..pipeline.options import DetectOptions, DetectSummary, extra_outputs
    from ..pipeline.passes import fit_rx_models

    options = options or DetectOptions()
    feedback = feedback or Feedback()
    timings = {}
    started = time.perf_counter()
    key = model_key(model_path)
    model = model if model is not None else load_any_model(model_path)
    check_detection_formats(output_path, options, model.bands)
    import torch

    blas = _blas_threads(feedback, threads)
    threads = options.threads or threads or torch.get_num_threads()
    setup = prepare_detection(input_path, model, options, feedback)
    windows = setup.strips.windows
    spec = DetectTaskSpec(str(input_path), key, dataclasses.replace(setup.options, spectral_output=None,
                                                                    spatial_output=None), setup.fusion, threads,
                          blas)
    feedback.info(f"On the Dask cluster: {len(windows)} strip task(s) per pass, {threads} PyTorch thread(s) per task.")
    run = _Run(client, "detect")
    try:
        shared = run.share("spec", spec)
        leaves = [run.submit("range", _detect_range_task, shared, window) for window in windows]
        root = _tree(lambda left, right: run.submit("range-merge", _detect_range_merge_task, left, right), leaves)
        _follow(leaves, feedback, ProgressRange(feedback, 0, 10))
        valid_pixels = setup.preprocessor.apply_range(_result(root, feedback))
        timings["range pass"] = time.perf_counter() - started

        spec = dataclasses.replace(spec, vmin=setup.preprocessor.vmin, vmax=setup.preprocessor.vmax,
                                   fill=setup.preprocessor.fill)
        shared = run.share("spec", spec)
        leaves = [run.submit("statistics", _detect_statistics_task, shared, window) for window in windows]
        root = _tree(lambda left, right: run.submit("statistics-merge", _detect_statistics_merge_task, left, right),
                     leaves)
        _follow(leaves, feedback, ProgressRange(feedback, 10, 55))
        with blas_threads_set(blas):
            rx_models = fit_rx_models(_result(root, feedback), feedback)
        timings["statistics pass"] = time.perf_counter() - started - sum(timings.values())

        extra = extra_outputs(options, setup.strips.networks, feedback)
        shared = run.share("spec", dataclasses.replace(spec, rx_models=rx_models, extra_names=tuple(extra)))
        blocks = _in_order(lambda window: run.submit("score", _detect_score_task, shared, window), windows,
                           feedback, _ahead(client))
        write_detection_outputs(setup.reader, blocks, len(windows), len(rx_models), setup.fusion, output_path,
                                extra, model.bands, feedback)
        timings["score pass"] = time.perf_counter() - started - sum(timings.values())
    except BaseException:
        run.cancel()
        raise
    finally:
        setup.reader.close()
    for stage, seconds in timings.items():
        feedback.info(f"{stage}: {seconds:.2f} s")
    return DetectSummary(str(output_path), setup.branches, setup.fusion, setup.device, valid_pixels, timings)


# --- entry points for the algorithms: in process, or on a cluster ---------------------------------------------------

def global_rx(scheduler, input_path, output_path, bands=None, mask_path=None, feedback=None,
              block_mb=DEFAULT_BLOCK_MB):
    """Global RX in this process (scheduler empty) or on a Dask cluster ('local' or an address)."""
    from ..detectors.global_rx import run_global_rx

    scheduler = check_scheduler(scheduler)
    if not scheduler:
        return run_global_rx(input_path, output_path, bands=bands, mask_path=mask_path, feedback=feedback,
                             block_mb=block_mb)
    with connect(scheduler, feedback) as client:
        return run_global_rx_distributed(client, input_path, output_path, bands, mask_path, feedback, block_mb)


def fers_detection(scheduler, input_path, output_path, model_path, options=None, feedback=None, model=None):
    """FERS detection in this process (scheduler empty) or on a Dask cluster ('local' or an address)."""
    scheduler = check_scheduler(scheduler)
    if not scheduler:
        from ..enhance.checkpoints import load_any_model
        from ..pipeline.detect import run_fers_detection

        model = model if model is not None else load_any_model(model_path)
        return run_fers_detection(input_path, output_path, model, options, feedback)
    with connect(scheduler, feedback) as client:
        return run_fers_detection_distributed(client, input_path, output_path, model_path, options, feedback, model)


# --- many rasters: the batch runner -----------------------------------------------------------------------------------

@dataclass
class BatchJob:
    """One raster of a batch (picklable; the model travels as a model_key)."""

    input_path: str
    output_path: str
    detector: str = "rx"
    bands: list = None
    block_mb: int = DEFAULT_BLOCK_MB
    model_key: tuple = None
    options: object = None  # DetectOptions for FERS
    blas: int = None  # BLAS threads (the submitting process's)
    windows: tuple = (5, 21)  # inner (guard) and outer window of local RX and of the local-mean RXD
    components: float = None  # local RX's COMPONENTS (projection.resolve_components)


@dataclass
class BatchRecord:
    """The outcome of one raster of a batch, for the summary table."""

    input_path: str
    output_path: str
    status: str  # "ok" or "failed"
    seconds: float = 0.0
    pixels: int = 0
    message: str = ""
    worker: str = ""


def run_batch_job(job):
    """Run one raster; never raises for a bad input (the record says what went wrong)."""
    started = time.perf_counter()
    pixels = 0
    try:
        with RasterReader(job.input_path, job.bands) as reader:
            pixels = reader.pixel_count
        with blas_threads_set(job.blas):
            _run_job(job)
        status, message = "ok", ""
    except Exception as error:  # one bad input must not stop the others
        status, message = "failed", describe_error(error)
    return BatchRecord(job.input_path, job.output_path, status, time.perf_counter() - started, pixels, message,
                       _worker_name())


def _run_classical(job):
    """Local RX or an RX variant of one raster (WHOLE_RASTER_DETECTORS)."""
    inner, outer = job.windows
    if job.detector == "local-rx":
        from ..detectors.local_rx import run_local_rx

        return run_local_rx(job.input_path, job.output_path, bands=job.bands, inner=inner, outer=outer,
                            block_mb=job.block_mb, components=job.components)
    from ..detectors.rx_variants import detector_settings, run_rx_variant

    return run_rx_variant(job.input_path, job.output_path, *detector_settings(job.detector, inner, outer),
                          bands=job.bands, block_mb=job.block_mb)


def check_classical_settings(detector, windows, components):
    """InputError for windows or COMPONENTS a batch detector cannot use, before any raster is read."""
    inner, outer = windows
    if detector == "local-rx":
        from ..detectors.local_rx import validate_windows
        from ..detectors.projection import resolve_components

        validate_windows(inner, outer)
        resolve_components(components, 10**9)  # the band count is checked per raster
    elif detector in WHOLE_RASTER_DETECTORS:
        from ..detectors.rx_variants import detector_settings, validate_variant

        validate_variant(*detector_settings(detector, inner, outer))


def _run_job(job):
    if job.detector in WHOLE_RASTER_DETECTORS:
        _run_classical(job)
    elif job.detector == "rx":
        from ..detectors.global_rx import run_global_rx

        run_global_rx(job.input_path, job.output_path, bands=job.bands, block_mb=job.block_mb)
    else:
        from ..pipeline.detect import run_fers_detection

        run_fers_detection(job.input_path, job.output_path, cached_model(job.model_key),
                           dataclasses.replace(job.options), Feedback())


def describe_error(error):
    return str(error) if isinstance(error, FersError) else f"{type(error).__name__}: {error}"


def batch_jobs(inputs, out_dir, detector="rx", model_path=None, bands=None, block_mb=DEFAULT_BLOCK_MB,
               options=None, threads=0, windows=(5, 21), components=None):
    """One BatchJob per input, writing <out_dir>/<input name>_<detector>.tif; refuses clashing output names.

    threads: BLAS (and PyTorch) threads per raster; 0 = this process's counts.
    """
    if detector not in DETECTORS:
        raise InputError(f"Unknown detector '{detector}': use one of {', '.join(DETECTORS)}.")
    check_classical_settings(detector, windows, components)
    if not inputs:
        raise InputError("No input rasters were given.")
    out_dir = os.path.abspath(str(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    key = None
    if detector == "fers":
        import torch

        from ..enhance.default_model import default_model_path
        from ..pipeline.options import DetectOptions

        key = model_key(model_path or default_model_path())
        options = options or DetectOptions()
        # every task at this process's thread count unless told: outputs bit-identical to a run here
        options = dataclasses.replace(options, bands=bands, block_mb=block_mb,
                                      threads=threads or options.threads or torch.get_num_threads())
    jobs, seen = [], {}
    blas = threads or blas_threads()
    for path in inputs:
        stem = os.path.splitext(os.path.basename(str(path)))[0]
        output = os.path.join(out_dir, f"{stem}_{detector}.tif")
        if output in seen:
            raise InputError(f"{seen[output]} and {path} would both write {output}: give inputs distinct names.")
        seen[output] = path
        jobs.append(BatchJob(os.path.abspath(str(path)), output, detector, bands, block_mb, key, options, blas,
                             tuple(windows), components))
    from ..io.output_safety import check_outputs

    check_outputs([(f"the output of {os.path.basename(job.input_path)}", job.output_path) for job in jobs],
                  [(f"input {os.path.basename(str(path))}", path) for path in inputs]
                  + ([("the model", key[0])] if key else []))
    return jobs


def run_batch(inputs, out_dir, detector="rx", model_path=None, scheduler="", bands=None, block_mb=DEFAULT_BLOCK_MB,
              options=None, split=False, feedback=None, client=None, n_workers=None, threads=0, windows=(5, 21),
              components=None):
    """Detect anomalies in many rasters; returns one BatchRecord per input, in input order.

    scheduler: '' = one raster after another in this process; 'local' or an address = on that
    Dask cluster (or pass a connected `client`; `n_workers` sizes a 'local' cluster). By default
    each raster is one task; with `split` (or a single input), rasters run one after another, each
    spread over the cluster block by block. A raster that fails is recorded as failed and does not
    stop the others. threads: BLAS and PyTorch threads per task; 0 = this process's counts, which
    keeps every output bit-identical to a run in this process.
    """
    feedback = feedback or Feedback()
    if detector == "fers":
        from ..enhance.torch_support import require_torch

        require_torch()
    jobs = batch_jobs(inputs, out_dir, detector, model_path, bands, block_mb, options, threads, windows, components)
    if detector == "fers":
        cached_model(jobs[0].model_key)  # a bad model file is one clear error, not one per raster
    scheduler = check_scheduler(scheduler)
    split = (split or len(jobs) == 1) and detector not in WHOLE_RASTER_DETECTORS  # those run a raster per task
    if client is None and not scheduler:
        records = _batch_in_process(jobs, feedback)
    elif client is not None:
        records = _batch_on(client, jobs, split, feedback)
    else:
        with connect(scheduler, feedback, n_workers=n_workers) as connected:
            records = _batch_on(connected, jobs, split, feedback)
    for job in jobs:
        remove_stale_partials(job.output_path)
    return records


def _report(feedback, index, total, record):
    name = os.path.basename(record.input_path)
    if record.status == "ok":
        feedback.info(f"[{index}/{total}] {name}: done in {record.seconds:.1f} s on {record.worker}.")
    else:
        feedback.warning(f"[{index}/{total}] {name}: FAILED: {record.message}")


def _batch_in_process(jobs, feedback):
    records = []
    progress = ProgressRange(feedback, 0, 100)
    for index, job in enumerate(jobs):
        feedback.check_cancelled()
        records.append(run_batch_job(job))
        _report(feedback, index + 1, len(jobs), records[-1])
        progress((index + 1) / len(jobs))
    return records


def _batch_on(client, jobs, split, feedback):
    if split:
        return _batch_split(client, jobs, feedback)
    if jobs[0].blas is None:
        _blas_threads(feedback)  # the warning
    run = _Run(client, "batch")
    records = [None] * len(jobs)
    try:
        futures = {run.submit("raster", run_batch_job, job): index for index, job in enumerate(jobs)}
        progress = ProgressRange(feedback, 0, 100)
        for done, remaining in _as_they_finish(futures, feedback):
            for future in done:
                job = jobs[futures[future]]
                try:
                    record = future.result()
                except Exception as error:  # e.g. its workers kept dying: that raster failed, the rest go on
                    record = BatchRecord(job.input_path, job.output_path, "failed",
                                         message=describe_error(_task_error(error)))
                records[futures[future]] = record
                _report(feedback, sum(r is not None for r in records), len(jobs), record)
            progress(1 - remaining / len(jobs))
    except BaseException:
        run.cancel()
        raise
    return records


def _batch_split(client, jobs, feedback):
    records = []
    for index, job in enumerate(jobs):
        started = time.perf_counter()
        pixels = 0
        stage = StageFeedback(feedback, 100 * index / len(jobs), 100 * (index + 1) / len(jobs))
        try:
            with RasterReader(job.input_path, job.bands) as reader:
                pixels = reader.pixel_count
            if job.detector == "rx":
                run_global_rx_distributed(client, job.input_path, job.output_path, job.bands, None, stage,
                                          job.block_mb, job.blas or 0)
            else:
                run_fers_detection_distributed(client, job.input_path, job.output_path, job.model_key[0],
                                               dataclasses.replace(job.options), stage, cached_model(job.model_key),
                                               job.blas or 0)
            record = BatchRecord(job.input_path, job.output_path, "ok", time.perf_counter() - started, pixels,
                                 worker="all workers")
        except Cancelled:
            raise
        except Exception as error:
            record = BatchRecord(job.input_path, job.output_path, "failed", time.perf_counter() - started, pixels,
                                 describe_error(error), "all workers")
        records.append(record)
        _report(feedback, index + 1, len(jobs), record)
    return records


def remove_stale_partials(output_path):
    """Delete the temporaries that attempts killed mid-write left beside an output (atomic.remove_stale: ours
    only, and only when their process on this machine is gone, so a concurrent run's files stay)."""
    from ..io.atomic import remove_stale

    return remove_stale(os.path.dirname(os.path.abspath(output_path)))


def format_summary(records):
    """A plain-text table: one row per raster (status, time, pixels, worker, output or error) and a total line."""
    rows = [("input", "status", "seconds", "pixels", "worker", "output / error")]
    for record in records:
        rows.append((os.path.basename(record.input_path), record.status, f"{record.seconds:.1f}",
                     f"{record.pixels:,}", record.worker,
                     record.output_path if record.status == "ok" else record.message))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) if i in (0, 1, 4) else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row[:5], widths))) + "  " + row[5] for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    ok = [r for r in records if r.status == "ok"]
    pixels = sum(r.pixels for r in ok)
    lines.append(f"{len(ok)} of {len(records)} raster(s) done, {len(records) - len(ok)} failed; "
                 f"{pixels:,} pixels in {sum(r.seconds for r in ok):.1f} task-seconds.")
    return "\n".join(lines)
