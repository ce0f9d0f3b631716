"""The per-window work of the statistics and score passes, and the merge of their partial results."""

from dataclasses import dataclass

import numpy as np

from ..detectors.rx import CovarianceAccumulator, fit_rx
from ..io.raster_io import SCORE_NODATA
from .blockwise import merged_covariance
from .fusion import enhanced_cubes
from .preprocess import RangeAccumulator


def statistics_partial(strips, mask, fusion, window, keep=None):
    """One float64 CovarianceAccumulator per RX map for the background pixels of one strip.

    `keep(window, cubes, x, valid, features)`, when given, receives the strip's enhanced cubes
    (e.g. to spill them for the score pass instead of running the networks again).
    """
    x, valid, features = strips.compute(window)
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


def fit_rx_models(partial, feedback):
    rx_models = [fit_rx(accumulator) for accumulator in partial]
    for rx_model in rx_models:
        if rx_model.regularised:
            feedback.warning(f"The enhanced cube's covariance is singular (rank {rx_model.rank} of "
                             f"{rx_model.n_features}); RX uses its pseudo-inverse.")
    return rx_models


@dataclass
class ScoreBlock:
    """What the score pass produces for one strip: RX map(s), their ranges, enhanced cubes asked for."""

    scores: np.ndarray  # (maps, rows, cols) float32, SCORE_NODATA where invalid
    ranges: list  # one RangeAccumulator per map
    extras: dict  # branch name -> x + F (bands, rows, cols) float32, SCORE_NODATA where invalid


def score_strip(strips, rx_models, fusion, window, extra_names=()):
    """The ScoreBlock of one strip (features recomputed from the raster)."""
    x, valid, features = strips.compute(window)
    extras = {name: x + features[name] for name in extra_names}
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
