"""Dask clusters: the optional dependency, the scheduler check, connecting (or starting a local cluster),
the workers' environment, and the entry points the algorithms call with a SCHEDULER text.

Dask (``dask.distributed``) is optional: nothing here imports it until a cluster is asked for,
and then :func:`require_dask` says how to install it. What runs on a cluster is the one pipeline of
each detector with the Dask executor (dask_executor.py); many rasters at once is the batch runner
(batch.py).
"""

import importlib.util
import logging
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import replace

from ..errors import DependencyError, FersError, InputError
from ..feedback import Feedback
from ..io.windows import DEFAULT_BLOCK_MB

LOCAL = "local"
INSTALL_COMMAND = 'python -m pip install "dask[distributed]"'
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

    _check_listening(address, timeout)
    executor = ThreadPoolExecutor(1, thread_name_prefix="fers-scheduler-probe")
    try:
        executor.submit(asyncio.run, probe()).result(timeout + 5)
    except (asyncio.TimeoutError, FutureTimeout):
        raise TimeoutError from None
    finally:
        executor.shutdown(wait=False)


def _check_listening(address, timeout):
    """OSError saying why when nothing accepts a TCP connection at the address's host and port (refused, unknown
    host, no answer): Dask itself retries a refused connection until its timeout, which would read as a silent
    scheduler."""
    from distributed.comm.addressing import get_address_host_port

    try:
        host, port = get_address_host_port(address)
    except ValueError:
        return  # not a TCP address (e.g. inproc://): Dask's own connection reports it
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as error:
        raise OSError(f"unknown host '{host}': {error.strerror}") from None
    except (socket.timeout, TimeoutError):  # one class from Python 3.10, two before
        raise OSError(f"no answer from {host}:{port} to a connection within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise OSError(f"nothing accepts connections at {host}:{port}") from None


class SchedulerWatch:
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
    package = __name__.split(".")[0]
    environments = _asked(
        lambda: client.run(_environment, callback_timeout=timeout), timeout,
        f"The Dask workers of the scheduler at {scheduler} did not answer within {timeout} s: check that they are "
        "running and not busy with other work",
        "The Dask workers cannot run FERS ({}): install the same packages on them (numpy, GDAL, torch for FERS, "
        f"dask[distributed]) and make the '{package}' package importable there, e.g. start 'dask worker' with "
        "PYTHONPATH set to the folder that holds it.")
    _asked(  # it unpickles every task graph: without the package each task failed with Dask's deserialization error
        lambda: client.run_on_scheduler(_environment, callback_timeout=timeout), timeout,
        f"The Dask scheduler at {scheduler} did not answer within {timeout} s: check that it is running and not "
        "overloaded",
        f"The Dask scheduler at {scheduler} cannot read FERS's tasks ({{}}): it unpickles every task, so it needs "
        f"the '{package}' package too. Start 'dask scheduler' with the same PYTHONPATH as the workers (the folder "
        "that holds the package).")
    here = _environment()
    differing = {address: env for address, env in environments.items() if env != here}
    if differing:
        address, env = next(iter(differing.items()))
        feedback.warning(f"{len(differing)} Dask worker(s) run other versions than this machine ({address}: {env}; "
                         f"here: {here}): results may differ slightly from a run in this process.")
    threads = sum(client.nthreads(callback_timeout=timeout).values())
    feedback.info(f"Dask cluster at {client.scheduler.address}: {len(environments)} worker(s), {threads} thread(s).")


def _asked(call, timeout, silent, failed):
    """call()'s answer from the cluster; InputError `silent` (+ the way out) when it times out, DependencyError
    `failed` (its {} filled with the error) when it fails."""
    try:
        return call()
    except TimeoutError:
        raise InputError(f"{silent}, or leave SCHEDULER empty to run in this process.") from None
    except Exception as error:
        raise DependencyError(failed.format(f"{type(error).__name__}: {error}")) from None


# --- entry points for the algorithms: in process, or on a cluster ---------------------------------------------------

def on_cluster(scheduler: str, feedback: Feedback, run):
    """run(executor) in this process (scheduler empty: executor None) or on a Dask cluster ('local' or an
    address): the one place that turns a SCHEDULER into an executor."""
    scheduler = check_scheduler(scheduler)
    if not scheduler:
        return run(None)
    from .dask_executor import DaskExecutor

    with connect(scheduler, feedback) as client:
        return run(DaskExecutor(client, feedback))


def _absolute(path):
    """A relative file path made absolute (the same file here; workers would resolve it against their own folder);
    None, and GDAL strings such as NETCDF:file.nc:var or /vsizip/..., are left as they are."""
    if not path or ":" in str(path) or os.path.isabs(str(path)):
        return path
    return os.path.abspath(str(path))


def global_rx(scheduler: str, input_path: str, output_path: str, bands: list = None, mask_path: str = None,
              feedback: Feedback = None, block_mb: float = DEFAULT_BLOCK_MB, nodata: tuple = ()):
    """Global RX in this process (scheduler empty) or on a Dask cluster ('local' or an address)."""
    from ..detectors.global_rx import run_global_rx

    input_path, output_path, mask_path = _absolute(input_path), _absolute(output_path), _absolute(mask_path)

    return on_cluster(scheduler, feedback, lambda executor: run_global_rx(
        input_path, output_path, bands=bands, mask_path=mask_path, feedback=feedback, block_mb=block_mb,
        executor=executor, nodata=nodata))


def local_rx(scheduler: str, input_path: str, output_path: str, **settings):
    """Local (dual-window) RX (detectors.local_rx.run_local_rx's settings) in this process or on a Dask cluster."""
    from ..detectors.local_rx import run_local_rx

    input_path, output_path = _absolute(input_path), _absolute(output_path)
    settings["mask_path"] = _absolute(settings.get("mask_path"))
    return on_cluster(scheduler, settings.get("feedback"),
                      lambda executor: run_local_rx(input_path, output_path, executor=executor, **settings))


def rx_variant(scheduler: str, input_path: str, output_path: str, variant: str, window: int = None, guard: int = 0,
               **settings):
    """One of ENVI's RX variants (detectors.rx_variants.run_rx_variant) in this process or on a Dask cluster."""
    from ..detectors.rx_variants import run_rx_variant

    input_path, output_path = _absolute(input_path), _absolute(output_path)
    settings["mask_path"] = _absolute(settings.get("mask_path"))
    return on_cluster(scheduler, settings.get("feedback"), lambda executor: run_rx_variant(
        input_path, output_path, variant, window, guard, executor=executor, **settings))


def fers_detection(scheduler: str, input_path: str, output_path: str, model_path: str, options=None,
                   feedback: Feedback = None, model=None):
    """FERS detection in this process (scheduler empty) or on a Dask cluster ('local' or an address).

    `model`: the model of `model_path` when already loaded here (None: loaded now); the workers load
    their own from `model_path`."""
    from ..enhance.checkpoints import load_any_model
    from ..pipeline.detect import run_fers_detection

    input_path, output_path, model_path = _absolute(input_path), _absolute(output_path), _absolute(model_path)
    if options is not None and options.mask_path:
        options = replace(options, mask_path=_absolute(options.mask_path))

    def run(executor):
        loaded = model if model is not None else load_any_model(model_path)
        if executor is None:
            return run_fers_detection(input_path, output_path, loaded, options, feedback)
        return run_fers_detection(input_path, output_path, loaded, options, feedback, executor=executor,
                                  model_path=model_path)

    return on_cluster(scheduler, feedback, run)
