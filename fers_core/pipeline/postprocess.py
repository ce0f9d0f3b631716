"""From anomaly scores to anomalies: a threshold and a binary mask (their polygons: `objects`).

Threshold methods (`threshold_value`):
  0 top percent: flag the given percentage of the valid pixels with the highest scores. The
    cut is the k-th highest valid score, k = ceil(valid pixels * percent / 100) (at least 1),
    found exactly while streaming the raster (a min/max pass, histogram passes that narrow the
    range holding the k-th value, then an in-memory selection once few candidates remain), so
    memory stays bounded whatever the raster size. Ties: every pixel whose score equals the
    cut is flagged too, so more than k pixels are flagged when several pixels share the k-th
    value (never fewer), unless that would flag more than TIE_LIMIT x k pixels (a saturated area of one
    score): then only the pixels above the cut are (Threshold.tied_out counts those left out).
  1 absolute: the given value is the cut.
  2 false-alarm rate: under the Gaussian background model RX scores follow a chi-square law
    with as many degrees of freedom as features, so the cut for a false-alarm rate of
    `threshold` percent is chi2.isf(threshold / 100, n_features).
A pixel is an anomaly when its score is >= the cut.

Masks (`write_mask`) are uint8 on the score raster's grid: 1 anomaly, 0 background, 255 nodata.

Polygons of the objects: `objects.write_polygons`.
"""

import math
from dataclasses import dataclass

import numpy as np
from osgeo import gdal
from scipy.stats import chi2

from ..choices import EnsembleFusion
from ..errors import InputError
from ..feedback import Feedback, ProgressRange
from ..io.reader import RasterReader
from ..io.windows import DEFAULT_BLOCK_MB, Window
from ..io.writer import RasterWriter
from .requests import ABSOLUTE, FALSE_ALARM_RATE, TOP_PERCENT, check_threshold

MASK_NODATA = 255
MAX_IN_MEMORY = 2**22  # candidate scores held at once by the exact top-percent selection
SCORE_PASS_BYTES = 48  # bytes a score pixel of a block costs in these passes (the read, its copies, bin indexes)
_HISTOGRAM_BINS = 65536


@dataclass
class Threshold:
    """The score cut and how it was obtained."""

    value: float
    method: int
    parameter: float
    valid_pixels: int = None  # top percent only: valid pixels counted
    target_pixels: int = None  # top percent only: k, the rank of the cut
    tied_out: int = 0  # top percent only: pixels tied at the k-th score left out (too many to flag; see ties)
    tied_score: float = None  # top percent only, with tied_out: the score they share (value is the next float32)

    def describe(self):
        if self.method == TOP_PERCENT and self.tied_out:
            return (f"top {self.parameter:g}% of {self.valid_pixels} valid pixels: {self.target_pixels} pixel(s) "
                    f"asked, but {self.tied_out} pixels tie at the cut, so only the scores above it are flagged "
                    f"(score > {self.tied_score:.6g})")
        if self.method == TOP_PERCENT:
            return (f"top {self.parameter:g}% of {self.valid_pixels} valid pixels: {self.target_pixels} pixel(s), "
                    f"score >= {self.value:.6g}")
        if self.method == FALSE_ALARM_RATE:
            return f"false-alarm rate {self.parameter:g}% under the chi-square background: score >= {self.value:.6g}"
        return f"absolute score >= {self.value:.6g}"


@dataclass
class MaskSummary:
    path: str
    threshold: float
    anomaly_pixels: int
    background_pixels: int
    nodata_pixels: int


def score_reader(path):
    """Band 1 of a score raster (its nodata, NaN and inf are invalid)."""
    return RasterReader(path, [1])


def threshold_value(score_path, method, threshold, n_features=None, feedback=None, block_mb=DEFAULT_BLOCK_MB,
                    max_in_memory=MAX_IN_MEMORY):
    """The score cut for `method` (0 top percent, 1 absolute, 2 false-alarm rate in percent); a Threshold."""
    feedback = feedback or Feedback()
    check_threshold(method, threshold)
    method = int(method)
    threshold = float(threshold)
    if method == ABSOLUTE:
        return Threshold(threshold, method, threshold)
    if method == FALSE_ALARM_RATE:
        if not n_features or int(n_features) < 1:
            raise InputError("A false-alarm-rate threshold needs the number of features (bands) the scores used.")
        return Threshold(float(chi2.isf(threshold / 100.0, int(n_features))), method, threshold)
    passes = _Passes(ProgressRange(feedback, 0, 100))
    with score_reader(score_path) as reader:
        result = _top_percent(reader, threshold, passes, block_mb, max_in_memory)
        return _without_mass_ties(reader, result, passes, block_mb)


TIE_LIMIT = 10
"""Flagging every pixel tied at the cut stops where that would flag more than this many times the pixels asked
(a saturated or constant area sharing one score): the pixels above the cut are flagged alone."""


def _without_mass_ties(reader, result, passes, block_mb):
    """`result`, or when more than TIE_LIMIT x its target pixels score at least its cut and some score above it, a
    cut just above the tied score (the next float32), with the tied pixels counted in `tied_out`."""
    cut = np.float32(result.value)
    above = at_or_above = 0
    for scores in passes.scan(reader, reader.windows(block_mb, SCORE_PASS_BYTES)):
        above += int((scores > cut).sum())
        at_or_above += int((scores >= cut).sum())
    if at_or_above <= TIE_LIMIT * result.target_pixels or above == 0:
        return result
    result.value = float(np.nextafter(cut, np.float32(np.inf)))
    result.tied_out, result.tied_score = at_or_above - above, float(cut)
    return result


def _members(values, predicates):
    """Which values satisfy every (lo, hi, bins, bin) histogram-bin predicate."""
    keep = np.ones(values.shape, dtype=bool)
    for lo, hi, bins, chosen in predicates:
        keep &= _bin_index(values, lo, hi, bins) == chosen
    return keep


def _bin_index(values, lo, hi, bins):
    # Monotone in the value (each rounded operation is), so a bin is an interval of values.
    return np.clip(np.floor((values - lo) / (hi - lo) * bins), 0, bins - 1).astype(np.int64)


class _Passes:
    """Progress over passes of unknown number: pass i covers [1 - 2^-i, 1 - 2^-(i+1)) of the range, so it only
    ever moves forward."""

    def __init__(self, progress):
        self._progress, self._done = progress, 0

    def scan(self, reader, windows):
        """Yield the valid scores of each block (one pass over the raster)."""
        start, share = 1 - 0.5 ** self._done, 0.5 ** (self._done + 1)
        self._done += 1
        for index, window in enumerate(windows):
            data, valid = reader.read(window)
            yield data[0][valid]
            self._progress(start + share * (index + 1) / len(windows))


def _top_percent(reader, percent, passes, block_mb, max_in_memory):
    windows = reader.windows(block_mb, SCORE_PASS_BYTES)
    collect = reader.pixel_count <= max_in_memory
    total, lo, hi, kept = 0, np.inf, -np.inf, []
    for block in passes.scan(reader, windows):  # pass 1: count and range
        total += block.size
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        if collect:
            kept.append(block)
    if total == 0:
        raise InputError("The score raster has no valid pixels, so no top-percent threshold can be set.")
    k = max(1, math.ceil(total * percent / 100.0 - 1e-9))
    result = Threshold(None, TOP_PERCENT, percent, total, k)
    values = np.concatenate(kept) if collect else None
    predicates, above = [], 0  # candidates: values in every chosen bin; `above` valid values lie above them
    while values is None:
        if lo == hi:
            result.value = lo
            return result
        histogram = np.zeros(_HISTOGRAM_BINS, dtype=np.int64)
        low, high = np.inf, -np.inf
        for block in passes.scan(reader, windows):  # narrowing pass: histogram of the candidates
            block = block[_members(block, predicates)]
            if block.size:
                histogram += np.bincount(_bin_index(block, lo, hi, _HISTOGRAM_BINS), minlength=_HISTOGRAM_BINS)
                low, high = min(low, float(block.min())), max(high, float(block.max()))
        if low == high:  # every candidate has the same value (ties)
            result.value = low
            return result
        from_top = np.cumsum(histogram[::-1])
        position = int(np.searchsorted(from_top, k - above))  # first bin from the top reaching rank k
        chosen = _HISTOGRAM_BINS - 1 - position
        above += int(from_top[position - 1]) if position else 0
        predicates.append((lo, hi, _HISTOGRAM_BINS, chosen))
        width = (hi - lo) / _HISTOGRAM_BINS
        lo, hi = lo + chosen * width, lo + (chosen + 1) * width
        if histogram[chosen] <= max_in_memory or not hi > lo:
            values = np.concatenate([block[_members(block, predicates)]
                                     for block in passes.scan(reader, windows)])
    rank = k - above  # 1-based rank from the top among the candidates
    result.value = float(np.partition(values, values.size - rank)[values.size - rank])
    return result


def write_mask(score_path, mask_path, value, feedback=None, block_mb=DEFAULT_BLOCK_MB):
    """Write a uint8 mask: 1 where score >= value, 0 below, 255 where the score is nodata; a MaskSummary."""
    feedback = feedback or Feedback()
    progress = ProgressRange(feedback, 0, 100)
    anomalies = background = nodata = 0
    with score_reader(score_path) as reader:
        windows = reader.windows(block_mb, SCORE_PASS_BYTES)
        with RasterWriter.like(reader, mask_path, data_type=gdal.GDT_Byte, nodata=MASK_NODATA,
                               band_names=["anomaly mask (1 = anomaly)"]) as writer:
            for index, window in enumerate(windows):
                data, valid = reader.read(window)
                flagged = valid & (data[0] >= value)
                block = np.where(valid, flagged, MASK_NODATA).astype(np.uint8)
                writer.write(window, block)
                flagged_count = int(flagged.sum())
                anomalies += flagged_count
                background += int(valid.sum()) - flagged_count
                nodata += window.pixels - int(valid.sum())
                progress((index + 1) / len(windows))
            writer.set_metadata({"fers_threshold": repr(float(value))})
            writer.commit()
    feedback.info(f"Mask: {anomalies} anomaly pixel(s), {background} background, {nodata} nodata.")
    return MaskSummary(str(mask_path), float(value), anomalies, background, nodata)


def score_percentiles(score_path, percents, max_samples=1_000_000):
    """Percentiles of the valid scores from a regular sample of at most max_samples pixels (None if none valid)."""
    with score_reader(score_path) as reader:
        step = max(1, math.ceil(math.sqrt(reader.pixel_count / max_samples)))
        whole = Window.whole(reader.height, reader.width)
        data, valid = reader.read(whole, shape=(max(1, reader.height // step), max(1, reader.width // step)))
        if not valid.any():
            return None
        return [float(v) for v in np.percentile(data[0][valid], percents)]


def is_rank_map(score_path):
    """Whether a score raster is a rank-fused ensemble map (mean empirical CDFs: values in [0, 1]); netCDF keeps
    the metadata item as NC_GLOBAL#GDAL_fers_fusion."""
    dataset = gdal.Open(str(score_path))
    metadata = (dataset.GetMetadata() or {}) if dataset is not None else {}
    fusion = metadata.get("fers_fusion", metadata.get("NC_GLOBAL#GDAL_fers_fusion"))
    return fusion == EnsembleFusion.RANK
