"""The per-window work of a FERS run's passes (range, statistics, scores) and the merge of their partial results.

The passes are tasks of runtime/executor.py: pure functions of a frozen DetectPlan and a window,
on the state a process opens from the plan's DetectSource (reader, mask, model, networks).
"""

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..detectors.rx import CovarianceAccumulator, fit_rx, merged_covariance
from ..io.grid import read_mask
from ..io.reader import RasterReader
from ..io.writer import SCORE_NODATA
from .fusion import PRODUCT_BRANCHES, branch_cubes, enhanced_cubes
from .preprocess import RangeAccumulator
from .scaling import range_partial, scale_window


def statistics_partial(strips, scaling, mask, fusion, window, keep=None):
    """One float64 CovarianceAccumulator per RX map for the background pixels of one strip (under `scaling`).

    `keep(window, cubes, x, valid, features)`, when given, receives the strip's enhanced cubes
    (e.g. to spill them for the score pass instead of running the networks again).
    """
    x, valid, features = strips.compute(window, scaling)
    use = valid if mask is None else valid & (mask.read(window)[0][0] == 0)
    cubes = enhanced_cubes(x, features, fusion)
    if keep is not None:
        keep(window, cubes, x, valid, features)
    use = use.reshape(-1)
    partial = []
    for cube in cubes:
        accumulator = CovarianceAccumulator(cube.shape[0])
        accumulator.add_bands(cube.reshape(cube.shape[0], -1), None if use.all() else use)
        partial.append(accumulator)
    return partial


def merge_statistics_partials(left, right):
    """New accumulators: `left` then `right`, map by map (the merge of TreeReducer in every path)."""
    return [merged_covariance(a, b) for a, b in zip(left, right)]


def fit_rx_models(partial, feedback, raster_bands=None):
    """RX models of the enhanced cubes. A singular covariance is a warning, unless the raster has fewer bands
    than the cube (`raster_bands`: interpolated up to the model's bands, its rank is short by design)."""
    rx_models = [fit_rx(accumulator) for accumulator in partial]
    names = [f"The {name} branch's enhanced cube" for name in PRODUCT_BRANCHES] if len(rx_models) == 2 else \
        ["The enhanced cube"] * len(rx_models)
    for name, rx_model in zip(names, rx_models):
        if not rx_model.regularised:
            continue
        message = (f"{name}'s covariance is singular (rank {rx_model.rank} of {rx_model.n_features}); "
                   "RX uses its pseudo-inverse")
        if raster_bands is not None and raster_bands < rx_model.n_features:
            feedback.info(f"{message}, as expected when the raster's {raster_bands} bands are interpolated up to "
                          f"the model's {rx_model.n_features}.")
        else:  # what fers:rx names for a singular background, and what to do
            feedback.warning(f"{message}: the raster may hold constant or duplicate bands (leave them out with "
                             "BANDS), or too few valid pixels for the model's bands.")
    return rx_models


@dataclass
class ScoreBlock:
    """What the score pass produces for one strip: RX map(s), their ranges, enhanced cubes asked for."""

    scores: np.ndarray  # (maps, rows, cols) float32, SCORE_NODATA where invalid
    ranges: list  # one RangeAccumulator per map
    extras: dict  # branch name -> x + F (bands, rows, cols) float32, SCORE_NODATA where invalid


def score_strip(strips, scaling, rx_models, fusion, window, extra_names=()):
    """The ScoreBlock of one strip (features recomputed from the raster under `scaling`)."""
    x, valid, features = strips.compute(window, scaling)
    extras = branch_cubes(x, features, extra_names)
    return score_cubes(rx_models, enhanced_cubes(x, features, fusion), valid, extras)


def score_cubes(rx_models, cubes, valid, extras):
    """The ScoreBlock of one strip from its enhanced cubes (one per RX map) and extra cubes (x + F)."""
    scores = np.full((len(rx_models), valid.shape[0], valid.shape[1]), SCORE_NODATA, dtype=np.float32)
    ranges = []
    all_valid = bool(valid.all())
    for map_index, (rx_model, cube) in enumerate(zip(rx_models, cubes)):
        map_scores = rx_model.score_bands(cube.reshape(cube.shape[0], -1), None if all_valid else valid.reshape(-1))
        scores[map_index][valid] = map_scores.reshape(valid.shape)[valid]
        ranges.append(RangeAccumulator().add(scores[map_index][valid]))
    for enhanced in extras.values():
        enhanced[:, ~valid] = SCORE_NODATA
    return ScoreBlock(scores, ranges, extras)


@dataclass(frozen=True)
class DetectSource:
    """What a process opens to work on a run's windows: the raster, its mask and the model (by path).

    `options` is the run's resolved copy without output paths; `threads`: the PyTorch threads of the
    networks in a process that opens the source (0: leave as they are).
    """

    input_path: str
    model_path: str
    options: object
    device: str
    threads: int = 0

    @contextmanager
    def open(self):
        from ..enhance.model_cache import detection_model
        from ..enhance.precision import torch_threads
        from .scaling import BandMapping

        model = detection_model(self.model_path)
        with torch_threads(self.threads), RasterReader(self.input_path, self.options.bands, direct_io=True,
                                                             nodata=self.options.nodata) as reader:
            mask = read_mask(self.options.mask_path, reader) if self.options.mask_path else None
            try:
                yield DetectState(reader, mask, BandMapping.for_model(reader, model), model, self)
            finally:
                if mask is not None:
                    mask.close()


class DetectState:
    """A process's open objects for a run: reader, mask, band mapping, and the feature strips of a scaling."""

    def __init__(self, reader, mask, mapping, model, source, strips=None):
        self.reader, self.mask, self.mapping, self.model, self.source = reader, mask, mapping, model, source
        self._strips = strips

    def strips(self):
        """The FeatureStrips of the source (built on first use; the scaling comes with each window's task)."""
        if self._strips is None:
            from ..enhance.feature_strips import FeatureStrips

            self._strips = FeatureStrips(self.reader, partial(scale_window, self.reader, self.mapping), self.model,
                                         self.source.options, self.source.device)
        return self._strips


@dataclass(frozen=True)
class DetectPlan:
    """A pass of a FERS run: its source and what the earlier passes fitted."""

    source: DetectSource
    fusion: object  # choices.Fusion, resolved
    scaling: object = None  # the range pass's scaling.Scaling (fit_scaling)
    rx_models: tuple = None  # of the statistics pass, one per RX map
    extra_names: tuple = ()  # branches whose x + F is written
    spill: object = None  # a FeatureSpill the statistics pass fills and the score pass reads


def detect_range(state, plan, window):
    """The RangePartial of one window (the range pass's task)."""
    return range_partial(state.reader, state.mapping, window)


def detect_statistics(state, plan, window):
    """The statistics partial of one window, its enhanced cubes kept in the plan's spill (the statistics task)."""
    keep = None
    if plan.spill is not None:
        def keep(window, cubes, x, valid, features):
            plan.spill.put(window, list(cubes) + list(branch_cubes(x, features, plan.extra_names).values()), valid)

    return statistics_partial(state.strips(), plan.scaling, state.mask, plan.fusion, window, keep)


def detect_score(state, plan, window):
    """The ScoreBlock of one window, from the spill or with the features computed again (the score task)."""
    if plan.spill is None:
        return score_strip(state.strips(), plan.scaling, plan.rx_models, plan.fusion, window, plan.extra_names)
    arrays, valid = plan.spill.get(window)
    maps = len(plan.rx_models)
    return score_cubes(plan.rx_models, arrays[:maps], valid, dict(zip(plan.extra_names, arrays[maps:])))
