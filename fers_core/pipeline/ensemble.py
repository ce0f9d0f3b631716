"""Multi-model detection: several members' score maps fused into one.

Each member (a FERS model, or plain global RX on the raster) writes its score map to a temporary raster
beside the output; the maps are then fused block by block:

- ``rank``: the mean over members of each pixel's empirical CDF value (mid-rank: the fraction of valid
  pixels scoring lower plus half of those scoring the same). Members on different scales (RX of 50 or
  200 features, product-fused maps in [0, 1]) weigh alike, and one member's extreme scores cannot swamp
  the others. The CDF comes from a streamed quantile sketch: a strided sample of at most SAMPLE_SIZE
  scores gives up to BINS + 1 bin edges, a second pass counts the pixels at and between the edges, and a
  pixel between two edges is interpolated linearly. It is exact when every score is an edge (scenes of up
  to SAMPLE_SIZE pixels); otherwise a pixel's CDF is off by at most its bin's share of the pixels (about
  1 / BINS). Memory: a few MB per member, whatever the scene size.
- ``standardised``: the mean over members of (score - mean) / standard deviation (exact, one pass more).

The fused score has no chi-square law: false-alarm-rate thresholds do not apply to it.
"""

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import rankdata

from ..choices import EnsembleFusion
from ..errors import InputError
from ..feedback import Feedback, ProgressRange, StageFeedback
from ..io.atomic import Temporary
from ..io.bad_bands import report_band_selection
from ..io.fill_values import report_fill_values
from ..io.gdal_cache import bounded_gdal_cache, write_cache_mb
from ..io.output_safety import check_distinct_inputs, check_outputs
from ..io.reader import RasterReader
from ..io.writer import SCORE_NODATA, RasterWriter
from .scaling import BandMapping, interpolates_sparsely, sparse_bands_warning

SAMPLE_SIZE = 1 << 18
BINS = 1 << 16
FUSE_BLOCK_MB = 16
PLAIN_RX = "plain global RX"


@dataclass
class Member:
    """One member: a FersModel, or None for plain global RX on the raster (its BANDS, its MASK).

    ``bundled``: a member of the bundled default, left out of a run on a raster with fewer than half its model
    bands (``members_for_raster``); a model the user chose is never left out.
    """

    model: object = None
    label: str = PLAIN_RX
    bundled: bool = False


def empirical_cdf(scores):
    """Exact mid-rank empirical CDF of an in-memory score vector: (count below + count equal / 2) / n."""
    scores = np.asarray(scores, dtype=np.float64)
    return (rankdata(scores) - 0.5) / scores.size


class CdfSketch:
    """A member's streamed empirical CDF (see the module's docstring): ``sample``, ``fit``, ``count``, ``cdf``."""

    def __init__(self, pixel_count, sample_size=SAMPLE_SIZE, bins=BINS):
        self.stride = max(1, -(-pixel_count // sample_size))
        self.bins = bins
        self._samples = []
        self.low, self.high = np.inf, -np.inf
        self.edges = None

    def sample(self, values, flat_index):
        """Pass 1: `values` of valid pixels and their flat indices in the raster."""
        if values.size:
            self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
            self._samples.append(values[flat_index % self.stride == 0].astype(np.float64))

    def fit(self):
        sample = np.concatenate(self._samples + [np.array([self.low, self.high])])
        self._samples = []
        self.edges = np.unique(sample)  # sample values only, so every sampled score is an edge when they fit
        if self.edges.size > self.bins + 1:
            self.edges = np.unique(np.quantile(sample, np.linspace(0.0, 1.0, self.bins + 1), method="inverted_cdf"))
        self.edges[0], self.edges[-1] = self.low, self.high  # quantile rounding must not leave pixels outside
        self.equal = np.zeros(self.edges.size, dtype=np.int64)
        self.between = np.zeros(self.edges.size, dtype=np.int64)  # between[i]: in (edges[i], edges[i + 1])

    def count(self, values):
        """Pass 2: count the valid pixels at and between the edges."""
        left, right = self._positions(values)
        at_edge = right > left
        self.equal += np.bincount(left[at_edge], minlength=self.edges.size)
        self.between += np.bincount(right[~at_edge] - 1, minlength=self.edges.size)

    def finish(self):
        n = max(int(self.equal.sum() + self.between.sum()), 1)
        self.below = (np.cumsum(self.equal + self.between) - self.equal - self.between) / n
        self.equal_share, self.between_share = self.equal / n, self.between / n
        self.max_error = float(self.between_share.max(initial=0.0))

    def cdf(self, values):
        """Pass 3: the CDF values of `values` (float64)."""
        left, right = self._positions(values)
        at_edge = right > left
        result = np.empty(values.shape, dtype=np.float64)
        result[at_edge] = self.below[left[at_edge]] + self.equal_share[left[at_edge]] / 2
        inside = ~at_edge
        index = np.minimum(right[inside] - 1, self.edges.size - 2)
        low, high = self.edges[index], self.edges[index + 1]
        fraction = (values[inside] - low) / np.where(high > low, high - low, 1.0)
        result[inside] = self.below[index] + self.equal_share[index] + fraction * self.between_share[index]
        return result

    def _positions(self, values):
        values = np.asarray(values, dtype=np.float64)
        return np.searchsorted(self.edges, values, "left"), np.searchsorted(self.edges, values, "right")


class Standardiser:
    """A member's exact mean and standard deviation, streamed: ``sample`` (one pass), ``fit``, ``cdf``."""

    def __init__(self, pixel_count):
        self.count, self.total, self.squares = 0, 0.0, 0.0
        self.max_error = 0.0

    def sample(self, values, flat_index):
        values = values.astype(np.float64)
        self.count += values.size
        self.total += float(values.sum())
        self.squares += float(np.square(values).sum())

    def fit(self):
        self.mean = self.total / max(self.count, 1)
        variance = max(self.squares / max(self.count, 1) - self.mean ** 2, 0.0)
        self.scale = np.sqrt(variance) if variance > 0 else 1.0

    def cdf(self, values):
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.scale


def _valid_blocks(readers, windows):
    for window in windows:
        blocks = [reader.read(window, np.float32) for reader in readers]
        valid = np.logical_and.reduce([v for _, v in blocks])
        rows, cols = np.nonzero(valid)
        flat = (rows + window.row).astype(np.int64) * readers[0].width + cols + window.col
        yield window, valid, [data[0][valid] for data, _ in blocks], flat


def fuse_score_rasters(paths: list, output_path: str, fusion: EnsembleFusion = EnsembleFusion.RANK,
                       feedback: Feedback = None, sample_size: int = SAMPLE_SIZE, bins: int = BINS) -> float:
    """Fuse single-band score rasters on one grid into `output_path`; nodata where any member is invalid.

    Returns the largest CDF error bound over the members (0 when exact, always 0 for standardised).
    """
    fusion = EnsembleFusion.parse(fusion)
    feedback = feedback or Feedback()
    with ExitStack() as stack:
        readers = [stack.enter_context(RasterReader(path)) for path in paths]
        windows = readers[0].windows(FUSE_BLOCK_MB, bytes_per_value=4 * len(readers))
        pixels = readers[0].pixel_count
        fitters = [CdfSketch(pixels, sample_size, bins) if fusion is EnsembleFusion.RANK else Standardiser(pixels)
                   for _ in readers]
        for _, _, values, flat in _valid_blocks(readers, windows):
            for fitter, member_values in zip(fitters, values):
                fitter.sample(member_values, flat)
        for fitter in fitters:
            fitter.fit()
        if fusion is EnsembleFusion.RANK:
            for _, _, values, _ in _valid_blocks(readers, windows):
                for fitter, member_values in zip(fitters, values):
                    fitter.count(member_values)
            for fitter in fitters:
                fitter.finish()
        progress = ProgressRange(feedback, 0, 100)
        if len(paths) > 1:
            feedback.info(f"Fusing {len(paths)} score maps ({fusion} fusion) in {len(windows)} block(s).")
        with bounded_gdal_cache(write_cache_mb(readers[0].width)), \
                RasterWriter.like(readers[0], output_path, band_names=[f"FERS ensemble score ({fusion} fusion)"]) \
                as writer:
            for index, (window, valid, values, _) in enumerate(_valid_blocks(readers, windows)):
                fused = np.full((window.rows, window.cols), SCORE_NODATA, dtype=np.float32)
                fused[valid] = np.mean([f.cdf(v) for f, v in zip(fitters, values)], axis=0) if values[0].size \
                    else np.zeros(0)
                writer.write(window, fused)
                progress((index + 1) / len(windows))
            writer.set_metadata({"fers_detector": "FERS ensemble", "fers_fusion": fusion,
                                 "fers_members": str(len(paths))})
            writer.commit()
    return max(fitter.max_error for fitter in fitters)


def check_members(members, options):
    """InputError for an ensemble the engine cannot run, before any pass over the data."""
    if len(members) < 2:
        raise InputError("An ensemble needs at least two members (models, or a model and plain RX).")
    check_distinct_models([member.label for member in members if member.model is not None])
    if options.spectral_output or options.spatial_output:
        if all(member.bundled for member in members if member.model is not None):
            from ..enhance.default_model import DEFAULT_MODEL_FILE

            raise InputError("The enhanced-cube outputs belong to one model, and the bundled default fuses several: "
                             f"choose one under Model (for example '{DEFAULT_MODEL_FILE}', the default's model with "
                             "both branches) to write them, or leave them empty.")
        raise InputError("The enhanced-cube outputs belong to one model: leave them empty when several models "
                         "are fused (run fers:detect with one model to write them).")


def check_distinct_models(paths, names=None):
    """InputError when one model file (or checkpoint folder) is listed twice: it would count twice in the fusion.
    `names`: what each path is in the run (default 'ensemble model N')."""
    names = names or [f"ensemble model {index + 1}" for index in range(len(paths))]
    check_distinct_inputs([(name, path) for name, path in zip(names, paths) if path and os.path.exists(str(path))],
                          "a model listed twice would weigh twice in the fused map; list each model once.")


def member_options(member, options):
    """The member's DetectOptions: the requested branches it has (all of its own when it has none of them);
    the band selection and interpolation are reported once for the ensemble, not by each member."""
    branches = tuple(b for b in options.branches if member.model.has_branch(b)) or tuple(member.model.branches)
    return replace(options, branches=branches, spectral_output=None, spatial_output=None, report_bands=False)


def members_for_raster(raster_bands, members, feedback, raster_pixels=None):
    """The members to run on a raster of ``raster_bands`` bands: without the bundled members that would
    interpolate most of their model bands (fewer raster bands than half theirs; ``interpolates_sparsely``), or
    whose band count its ``raster_pixels`` cannot support (RX needs more pixels than features + 1). When that would
    leave no model at all, the bundled models with the fewest bands stay. On development scenes cut to 49-75 bands
    this keeps the mean AUC and halves the worst loss against plain RX (bench/BAND_VARIANTS.md).
    `feedback` None: quiet (a caller that only needs to know which members run)."""
    if raster_pixels is not None:
        members = _leave_out(members, lambda model: raster_pixels <= model.bands + 1, feedback,
                             f"The raster has {raster_pixels} pixels, too few for the background statistics of",
                             lambda kept: ".")
    return _leave_out(members, lambda model: interpolates_sparsely(raster_bands, model.bands), feedback,
                      f"The {raster_bands} raster bands used are fewer than half of",
                      lambda kept: " (interpolating most of a model's bands adds no information): "
                      + ("the other runs alone." if kept == 1 else f"{kept} members are fused."))


def _leave_out(members, unfit, feedback, why, then):
    """`members` without the bundled models for which `unfit(model)` holds, but keeping those with the fewest bands
    when no model would be left; logged as `why` + the names + "left out" + `then(members kept)`."""
    out = {index for index, m in enumerate(members) if m.bundled and m.model is not None and unfit(m.model)}
    if out and all(members[i].model is None for i in range(len(members)) if i not in out):
        fewest = min(members[i].model.bands for i in out)
        out = {i for i in out if members[i].model.bands != fewest}
    if out and feedback is not None:
        names = _listed(f"{os.path.basename(str(members[i].label))} ({members[i].model.bands} bands)"
                        for i in sorted(out))
        feedback.info(f"{why} {names}: {'that bundled member is' if len(out) == 1 else 'those bundled members are'} "
                      f"left out{then(len(members) - len(out))}")
    return [m for index, m in enumerate(members) if index not in out]


def members_for_input(input_path, bands, members, feedback=None):
    """The members `run_ensemble_detection` runs on `input_path` with `bands` (members_for_raster; quiet without
    `feedback`)."""
    with RasterReader(input_path, bands) as reader:
        return members_for_raster(reader.band_count, members, feedback, reader.pixel_count)


def report_band_interpolation(raster_bands, members, feedback):
    """Warn when every member is a model with more than twice the raster's bands; otherwise name those that are
    (info). A member that interpolates most of its bands adds little, but the others (plain RX included) still
    carry the raster's information into the fused map."""
    sparse = [m for m in members if m.model is not None and interpolates_sparsely(raster_bands, m.model.bands)]
    if not sparse:
        return
    if len(sparse) == len(members):
        counts = sorted({member.model.bands for member in sparse})
        feedback.warning(sparse_bands_warning(raster_bands, _listed(map(str, counts)), several=len(sparse) > 1))
        return
    names = _listed(f"{os.path.basename(str(member.label))} ({member.model.bands} bands)" for member in sparse)
    others = ("the other member, closer to the raster's band count, keeps" if len(members) - len(sparse) == 1
              else "the other members, closer to the raster's band count, keep")
    feedback.info(f"The raster's {raster_bands} bands are interpolated up to more than twice as many in {names}; "
                  f"that adds no information, and {others} it in the fused map.")


def _listed(items):
    items = list(items)
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else items[0]


def run_ensemble_detection(input_path: str, output_path: str, members: list, options=None,
                           fusion: EnsembleFusion = EnsembleFusion.RANK, feedback: Feedback = None,
                           left_out_reported: bool = False) -> str:
    """Score `input_path` with every member and fuse the maps (rank or standardised) into `output_path`.

    Bundled members that do not fit the raster are left out (members_for_raster), with a log line unless
    `left_out_reported` (the caller logged members_for_input's)."""
    from ..detectors.global_rx import run_global_rx
    from .detect import DetectOptions, run_fers_detection

    options = options or DetectOptions()
    feedback = feedback or Feedback()
    fusion = EnsembleFusion.parse(fusion)
    check_members(members, options)
    check_outputs([("the score output", output_path)], [("the input", input_path), ("the mask", options.mask_path)])
    with RasterReader(input_path, options.bands, nodata=options.nodata) as reader:
        report_band_selection(reader, feedback)
        report_fill_values(reader, feedback)
        options = replace(options, bands=list(reader.bands))  # every member uses these bands
        for member in members:  # band-count and wavelength-coverage errors before any member spends time
            if member.model is not None:
                BandMapping.for_model(reader, member.model)
        members = members_for_raster(reader.band_count, members, None if left_out_reported else feedback,
                                     reader.pixel_count)
        report_band_interpolation(reader.band_count, members, feedback)
    started = time.perf_counter()
    share = 90 / len(members)
    with ExitStack() as stack:
        paths = []
        for index, member in enumerate(members):
            path = stack.enter_context(Temporary(output_path, f"member{index + 1}", ".tif")).path
            stage = StageFeedback(feedback, index * share, (index + 1) * share)
            if len(members) > 1:  # one left (the others left out for the band count): the Model line named it
                feedback.info(f"Ensemble member {index + 1} of {len(members)}: {member.label}")
            if member.model is not None and not any(member.model.has_branch(b) for b in options.branches):
                feedback.warning(f"Ensemble member {index + 1} has no {' or '.join(options.branches)} branch: it "
                                 f"uses its {', '.join(member.model.branches)} branch instead.")
            if member.model is None:
                run_global_rx(input_path, path, bands=options.bands, mask_path=options.mask_path, feedback=stage,
                              block_mb=options.block_mb, report_bands=False, nodata=options.nodata)
            else:
                run_fers_detection(input_path, path, member.model, member_options(member, options), stage)
            paths.append(path)
        error = fuse_score_rasters(paths, output_path, fusion, StageFeedback(feedback, 90, 100))
    note = f" (CDF sketch error at most {error:.1e})" if error else ""
    what = f"Fused {len(members)} score maps" if len(members) > 1 else "Transformed the single member's score map"
    feedback.info(f"{what} by {fusion} fusion{note}: {os.path.basename(str(output_path))} (the ensemble took "
                  f"{time.perf_counter() - started:.2f} s)")
    return output_path
