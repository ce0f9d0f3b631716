"""The batch runner: many rasters, each detected in full, in this process or on a Dask cluster; and its summary table.

By default one task per raster runs the single-process detector on a worker and writes that raster's
output itself (one writer per file, temporary name + rename, so a task that is re-run after its worker
died simply writes the file again). With `split` (or a single raster), rasters run one after another,
each spread over the cluster window by window by the Dask executor. The FERS model is loaded once per
process, through the model cache (enhance/model_cache.py).
"""

import dataclasses
import os
import time
from dataclasses import dataclass

from ..errors import Cancelled, FersError, InputError
from ..feedback import Feedback, ProgressRange, StageFeedback
from ..io.reader import RasterReader
from ..io.windows import DEFAULT_BLOCK_MB
from ..runtime.threads import blas_threads, blas_threads_set
from .cluster import check_scheduler, connect

DETECTORS = ("rx", "fers", "local-rx", "rxd-local-mean", "utd", "rxd-utd")
WHOLE_RASTER_DETECTORS = ("local-rx", "rxd-local-mean", "utd", "rxd-utd")
"""Batch detectors that run one raster per task, never split into blocks across workers (their tiles need halos)."""


def _worker_name():
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:  # not on a Dask worker (in-process batch)
        return "this process"


def _model(path):
    from ..enhance.model_cache import detection_model

    return detection_model(path)


@dataclass(frozen=True)
class BatchJob:
    """One raster of a batch (picklable; the model travels as its path)."""

    input_path: str
    output_path: str
    detector: str = "rx"
    bands: list = None
    block_mb: int = DEFAULT_BLOCK_MB
    model_path: str = None
    options: object = None  # DetectOptions for FERS
    blas: int = None  # BLAS threads (the submitting process's)
    windows: tuple = (5, 21)  # inner (guard) and outer window of local RX and of the local-mean RXD
    components: float = None  # local RX's COMPONENTS (projection.resolve_components)
    nodata: tuple = ()  # extra nodata values of every band (RasterReader's)


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


def run_batch_job(job: BatchJob) -> BatchRecord:
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
                            block_mb=job.block_mb, components=job.components, nodata=job.nodata)
    from ..detectors.rx_variants import detector_settings, run_rx_variant

    return run_rx_variant(job.input_path, job.output_path, *detector_settings(job.detector, inner, outer),
                          bands=job.bands, block_mb=job.block_mb, nodata=job.nodata)


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
    else:
        _run_blockwise(job, Feedback())


def _run_blockwise(job, feedback, executor=None):
    """Global RX or FERS of one raster, its blocks run by `executor` (None: this process)."""
    if job.detector == "rx":
        from ..detectors.global_rx import run_global_rx

        run_global_rx(job.input_path, job.output_path, job.bands, None, feedback, job.block_mb, executor,
                      nodata=job.nodata)
    else:
        from ..pipeline.detect import run_fers_detection

        run_fers_detection(job.input_path, job.output_path, _model(job.model_path), job.options, feedback,
                           executor, job.model_path)


def describe_error(error):
    return str(error) if isinstance(error, FersError) else f"{type(error).__name__}: {error}"


def batch_jobs(inputs: list, out_dir: str, detector: str = "rx", model_path: str = None, bands: list = None,
               block_mb: float = DEFAULT_BLOCK_MB, options=None, threads: int = 0, windows: tuple = (5, 21),
               components=None, nodata=()) -> list:
    """One BatchJob per input, writing <out_dir>/<input name>_<detector>.tif; refuses clashing output names.

    threads: BLAS (and PyTorch) threads per raster; 0 = this process's counts. nodata: extra nodata values of
    every band of every input.
    """
    from ..io.reader import nodata_values

    nodata = nodata_values(nodata)
    if detector not in DETECTORS:
        raise InputError(f"Unknown detector '{detector}': use one of {', '.join(DETECTORS)}.")
    check_classical_settings(detector, windows, components)
    if not inputs:
        raise InputError("No input rasters were given.")
    if not block_mb or block_mb <= 0:
        raise InputError(f"The block memory budget must be a positive number of MB (got {block_mb}): e.g. 64.")
    if threads is not None and threads < 0:
        raise InputError(f"The thread count must be 0 (this process's counts) or more (got {threads}).")
    out_dir = os.path.abspath(str(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"The output folder '{out_dir}' is a file: give a folder (it is created when missing).")
    model = None
    if detector == "fers":
        from ..enhance.default_model import default_model_path
        from ..enhance.feature_strips import network_threads
        from ..pipeline.options import DetectOptions

        model = os.path.abspath(str(model_path or default_model_path()))
        if not os.path.exists(model):
            raise InputError(f"The model {model} does not exist; check the path.")
        options = options or DetectOptions()
        # every task at this process's thread count unless told: outputs bit-identical to a run here
        options = dataclasses.replace(options, bands=bands, block_mb=block_mb, nodata=nodata,
                                      threads=threads or options.threads or network_threads())
    jobs, seen = [], {}
    blas = threads or blas_threads()
    for path in inputs:
        stem = os.path.splitext(os.path.basename(str(path)))[0]
        output = os.path.join(out_dir, f"{stem}_{detector}.tif")
        if output in seen:
            raise InputError(f"{seen[output]} and {path} would both write {output}: give inputs distinct names.")
        seen[output] = path
        jobs.append(BatchJob(os.path.abspath(str(path)), output, detector, bands, block_mb, model, options, blas,
                             tuple(windows), components, nodata))
    from ..io.output_safety import check_outputs

    check_outputs([(f"the output of {os.path.basename(job.input_path)}", job.output_path) for job in jobs],
                  [(f"input {os.path.basename(str(path))}", path) for path in inputs]
                  + ([("the model", model)] if model else []))
    os.makedirs(out_dir, exist_ok=True)  # only once every check passed: a refused batch leaves no empty folder
    return jobs


def run_batch(inputs: list, out_dir: str, detector: str = "rx", model_path: str = None, scheduler: str = "",
              bands: list = None, block_mb: float = DEFAULT_BLOCK_MB, options=None, split: bool = False,
              feedback: Feedback = None, client=None, n_workers: int = None, threads: int = 0,
              windows: tuple = (5, 21), components=None, nodata=()) -> list:
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
    jobs = batch_jobs(inputs, out_dir, detector, model_path, bands, block_mb, options, threads, windows, components,
                      nodata)
    if detector == "fers":
        _model(jobs[0].model_path)  # a bad model file is one clear error, not one per raster
        bundled = "" if model_path else (" (the bundled model alone: fers:detect's default also fuses two spectral "
                                         "models, which this runner does not)")
        feedback.info(f"Model: {jobs[0].model_path}{bundled}.")
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
    from .dask_executor import TaskRun, as_they_finish, blas_threads_for, task_error

    if split:
        return _batch_split(client, jobs, feedback)
    if jobs[0].blas is None:
        blas_threads_for(feedback)  # the warning
    run = TaskRun(client)
    records = [None] * len(jobs)
    try:
        futures = {run.submit("batch-raster", run_batch_job, job): index for index, job in enumerate(jobs)}
        progress = ProgressRange(feedback, 0, 100)
        for done, remaining in as_they_finish(futures, feedback):
            for future in done:
                job = jobs[futures[future]]
                try:
                    record = future.result()
                except Exception as error:  # e.g. its workers kept dying: that raster failed, the rest go on
                    record = BatchRecord(job.input_path, job.output_path, "failed",
                                         message=describe_error(task_error(error)))
                records[futures[future]] = record
                _report(feedback, sum(r is not None for r in records), len(jobs), record)
            progress(1 - remaining / len(jobs))
    except BaseException:
        run.cancel()
        raise
    return records


def _batch_split(client, jobs, feedback):
    from .dask_executor import DaskExecutor

    records = []
    for index, job in enumerate(jobs):
        started = time.perf_counter()
        pixels = 0
        stage = StageFeedback(feedback, 100 * index / len(jobs), 100 * (index + 1) / len(jobs))
        try:
            with RasterReader(job.input_path, job.bands) as reader:
                pixels = reader.pixel_count
            _run_blockwise(job, stage, DaskExecutor(client, stage, job.blas or 0))
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

    return remove_stale(os.path.dirname(os.path.abspath(output_path))).removed


def format_summary(records: list) -> str:
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
