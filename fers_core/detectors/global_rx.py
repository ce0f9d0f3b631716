"""Global RX over a raster file in two streaming passes (statistics, then scores)."""

import collections
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

from ..feedback import Feedback, ProgressRange
from ..io.atomic import shown_name
from ..io.bad_bands import explain_no_valid_pixels, report_band_selection
from ..io.fill_values import report_fill_values
from ..io.gdal_cache import bounded_gdal_cache, write_cache_mb
from ..io.grid import read_mask
from ..io.output_formats import check_raster_outputs
from ..io.output_safety import check_outputs
from ..io.reader import RasterReader, nodata_values
from ..io.windows import DEFAULT_BLOCK_MB
from ..io.writer import SCORE_NODATA, RasterWriter
from ..runtime.executor import run_executor
from .rx import CovarianceAccumulator, fit_rx, merged_covariance


@dataclass
class RxRunSummary:
    """What a run did, for the log and for tests."""

    output_path: str
    valid_pixels: int
    background_pixels: int
    bands: int
    rank: int
    seconds: float


def read_band_first(reader, window):
    """A block as (bands, pixels) in its stored type (float64 when scaled) and its (pixels,) valid mask."""
    data, valid = reader.read(window, dtype=None, reuse=True)
    return data.reshape(data.shape[0], -1), valid.reshape(-1)


@dataclass
class RxPartial:
    """Background statistics of one block (or of a merged run of blocks) and its valid pixel count."""

    accumulator: CovarianceAccumulator
    valid_pixels: int


def rx_block_statistics(reader, mask, window, block=None):
    """The RxPartial of one block: its own float64 accumulator, never shared with other blocks.

    `block`: the window's (data, valid) from read_band_first when already read (None: read it)."""
    data, valid = block if block is not None else read_band_first(reader, window)
    use = valid if mask is None else valid & (mask.read(window)[0][0].reshape(-1) == 0)
    accumulator = CovarianceAccumulator(reader.band_count)
    accumulator.add_bands(data, None if use.all() else use)
    return RxPartial(accumulator, int(valid.sum()))


def merge_rx_partials(left, right):
    """A new RxPartial: `left` then `right` (the merge used by TreeReducer in every path)."""
    return RxPartial(merged_covariance(left.accumulator, right.accumulator), left.valid_pixels + right.valid_pixels)


def rx_block_scores(reader, model, window, block=None):
    """Float32 RX scores of one block; invalid pixels are SCORE_NODATA. `block` as for rx_block_statistics."""
    data, valid = block if block is not None else read_band_first(reader, window)
    all_valid = valid.all()
    scores = model.score_bands(data, None if all_valid else valid)
    if not all_valid:
        scores[~valid] = SCORE_NODATA
    return scores.reshape(window.rows, window.cols)


def fit_rx_partial(partial, feedback):
    """The RxModel of the merged statistics, with the log lines every path writes."""
    model = fit_rx(partial.accumulator)
    if model.regularised:
        feedback.warning(
            f"The background covariance is singular (rank {model.rank} of {model.n_features}: constant, duplicate "
            "or too few pixels for the bands); RX uses its pseudo-inverse."
        )
    feedback.info(f"Statistics from {model.pixel_count} background pixels ({partial.valid_pixels} valid).")
    return model


@dataclass(frozen=True)
class RxSource:
    """The raster (and mask) a global RX pass reads: what each process opens for its tasks."""

    input_path: str
    bands: tuple = None
    mask_path: str = None
    nodata: tuple = ()  # extra nodata values (RasterReader's)

    @contextmanager
    def open(self):
        with RasterReader(self.input_path, self.bands, direct_io=True, nodata=self.nodata) as reader:
            mask = read_mask(self.mask_path, reader) if self.mask_path else None
            try:
                yield RxState(reader, mask)
            finally:
                if mask is not None:
                    mask.close()


@dataclass
class RxState:
    """A process's open reader and mask, and what the orchestration in this process adds to them.

    `last`: the block the last statistics task read (still in the reader's buffer); `progress`:
    callable(window, fraction) for progress within a long task (None where no one watches, on a worker);
    `ahead`: a read-ahead of the blocks the tasks will ask for, in their order (read_ahead).
    """

    reader: RasterReader
    mask: RasterReader = None
    last: tuple = None
    progress: object = None
    ahead: object = None

    def take(self, window):
        """The block of `window` when it is the one read last (then forgotten: the next read overwrites it)."""
        last, self.last = self.last, None
        return last[1] if last is not None and last[0] == window else None

    @contextmanager
    def read_ahead(self, windows):
        """While the block is open, `read` returns each of `windows` (in order) read while the previous one was
        being worked on."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="fers-read-ahead")
        queue = collections.deque(windows)
        self.ahead = pool, queue, [pool.submit(self.reader.read, queue[0], dtype=None) if queue else None]
        try:
            yield
        finally:
            self.ahead = None
            pool.shutdown()

    def read(self, window):
        """reader.read(window, dtype=None), from the read-ahead when there is one and `window` is its next."""
        if self.ahead is None or not self.ahead[1] or self.ahead[1][0] != window:
            return self.reader.read(window, dtype=None)
        pool, queue, pending = self.ahead
        block = pending[0].result()
        queue.popleft()
        pending[0] = pool.submit(self.reader.read, queue[0], dtype=None) if queue else None
        return block


@dataclass(frozen=True)
class RxPlan:
    """A pass of global RX: its source, and for the score pass the fitted RxModel."""

    source: RxSource
    model: object = None


def rx_statistics(state, plan, window):
    """The RxPartial of one block (the statistics pass's task)."""
    state.last = (window, read_band_first(state.reader, window))
    return rx_block_statistics(state.reader, state.mask, window, state.last[1])


def rx_score(state, plan, window):
    """The RX scores of one block (the score pass's task)."""
    return rx_block_scores(state.reader, plan.model, window, state.take(window))


def open_rx_run(input_path, bands, mask_path, executor, feedback, stack, report_bands=True, nodata=()):
    """(executor, source, state) of a run over a raster: `executor` (None: one in this process), its RxSource and
    this process's open state of it, attached to the executor; closed with `stack`. `report_bands`: log the bad
    bands left out (io.bad_bands) and undeclared fill values (io.fill_values). `nodata`: extra nodata values. A run
    that finds no valid pixel names the bands without any valid value."""
    nodata = nodata_values(nodata)
    stack.enter_context(explain_no_valid_pixels(input_path, bands, feedback, nodata, mask_path))
    executor = run_executor(executor, feedback, stack)
    source = RxSource(str(input_path), tuple(bands) if bands else None, str(mask_path) if mask_path else None, nodata)
    state = stack.enter_context(source.open())
    source = replace(source, bands=tuple(state.reader.bands))  # every process reads the bands resolved here
    if report_bands:
        report_band_selection(state.reader, feedback)
        report_fill_values(state.reader, feedback)
    executor.attach(source, state)
    return executor, source, state


def background_statistics(executor, source, windows, progress):
    """The merged RxPartial of the raster's `windows`: the statistics pass of run_global_rx (its fixed tree)."""
    return executor.reduce(rx_statistics, RxPlan(source), windows, merge_rx_partials, progress)


def write_rx_scores(reader, output_path, blocks, n_blocks, progress):
    """Write (window, scores) pairs, in any order, to a new RX score raster; committed only when all are in."""
    with bounded_gdal_cache(write_cache_mb(reader.width)), \
            RasterWriter.like(reader, output_path, band_names=["RX score"]) as writer:
        for index, (window, scores) in enumerate(blocks):
            writer.write(window, scores)
            progress((index + 1) / n_blocks)
        writer.set_metadata({"fers_detector": "global RX", "fers_bands": ",".join(map(str, reader.bands))})
        writer.commit()


def run_global_rx(input_path, output_path, bands: list = None, mask_path: str = None, feedback: Feedback = None,
                  block_mb: float = DEFAULT_BLOCK_MB, executor=None, report_bands: bool = True,
                  nodata: tuple = ()) -> RxRunSummary:
    """Score every valid pixel of `input_path` with global RX and write a float32 raster.

    `bands`: 1-based band numbers (None = every band not marked bad). `mask_path`: raster whose non-zero pixels are
    left out of the background statistics (they are still scored). Invalid pixels (nodata,
    NaN, inf in any used band) are nodata in the output and never enter the statistics.
    `executor`: who runs the block tasks (runtime.executor; None = this process). `report_bands`: log the bad
    bands a default selection leaves out (an ensemble member does not). `nodata`: values that are nodata in every
    band besides the raster's own (compared with the stored values).
    """
    feedback = feedback or Feedback()
    check_outputs([("the output", output_path)], [("the input", input_path), ("the mask", mask_path)])
    check_raster_outputs([("the output", output_path, 1)])
    started = time.perf_counter()
    with ExitStack() as stack:
        executor, source, state = open_rx_run(input_path, bands, mask_path, executor, feedback, stack, report_bands,
                                              nodata)
        reader = state.reader
        windows = reader.windows(block_mb)
        feedback.info(
            f"Global RX on {reader.width}x{reader.height} pixels x {reader.band_count} bands "
            f"in {len(windows)} block(s) of up to {windows[0].rows} rows{executor.where}."
        )
        partial = background_statistics(executor, source, windows, ProgressRange(feedback, 0, 50))
        model = executor.fit(fit_rx_partial, partial, feedback)

        # The score pass starts with the block the statistics pass read last, still in the reader's buffer: one
        # read fewer (a whole-image read fewer when the raster is one block; decompression is most of small runs).
        order = windows[-1:] + windows[:-1]
        blocks = executor.ordered(rx_score, RxPlan(source, model), order)
        write_rx_scores(reader, output_path, blocks, len(windows), ProgressRange(feedback, 50, 100))
    seconds = time.perf_counter() - started
    feedback.info(f"Wrote {shown_name(output_path)} in {seconds:.2f} s.")
    return RxRunSummary(str(output_path), partial.valid_pixels, model.pixel_count, reader.band_count, model.rank,
                        seconds)
