"""The request check: combinations of settings a detection run refuses before it reads a pixel.

Each front end (the QGIS algorithms, the command line, the batch runner) gathers its settings its
own way; which settings go together is decided here, once, so every front end refuses the same
request with the same message. The messages name the QGIS parameters (SCHEDULER, MODEL, ...) the
user sets. Torch-free: the QGIS dialog checks a request without importing the networks.
"""

import math
import os

from ..choices import Fusion
from ..detectors.catalog import check_detector, has_chi_square_law
from ..detectors.local_rx import validate_windows
from ..detectors.rx_variants import chi_square_law, describe
from ..errors import InputError

TOP_PERCENT, ABSOLUTE, FALSE_ALARM_RATE = 0, 1, 2
"""Threshold methods of the anomaly mask and objects (postprocess.threshold_value reads them)."""
# A short list of credible objects rather than every isolated bright pixel; chosen on the demo scene
# and the shared real scenes with a ground truth (README, "Anomaly masks and objects").
DEFAULT_TOP_PERCENT = 0.2
DEFAULT_MIN_PIXELS = 2


def check_threshold(method: int, threshold: float) -> None:
    """InputError for a threshold `method` cannot read: the front ends check it before the detection, and
    postprocess.threshold_value again before it reads the scores."""
    method, threshold = int(method), float(threshold)
    if method == ABSOLUTE and not math.isfinite(threshold):
        raise InputError("The absolute threshold must be a finite score value.")
    if method == FALSE_ALARM_RATE and not 0 < threshold < 100:
        raise InputError(
            f"The false-alarm rate must be a percentage between 0 and 100 (got {threshold:g}): use e.g. 0.1."
        )
    if method not in (TOP_PERCENT, ABSOLUTE, FALSE_ALARM_RATE):
        raise InputError(
            f"Unknown threshold method {method}: use 0 (top percent), 1 (absolute) or 2 (false-alarm rate)."
        )
    if method == TOP_PERCENT and not 0 < threshold <= 100:
        raise InputError(f"The top percentage must be greater than 0 and at most 100 (got {threshold:g}): use e.g. "
                         f"{DEFAULT_TOP_PERCENT:g}.")


def check_polygons_path(path) -> None:
    """InputError unless the anomaly polygons go to a GeoPackage (.gpkg), the only format they are written in."""
    if os.path.splitext(str(path))[1].lower() != ".gpkg":
        raise InputError(f"Anomaly polygons are written as a GeoPackage: give the output a .gpkg name (got '{path}').")


def _no_chi_square_law(scores, alternative=""):
    """The refusal of a false-alarm-rate threshold for `scores` (a clause saying why they have no chi-square law)."""
    return InputError(f"{scores}, so a false-alarm-rate threshold does not apply: choose a top-percentage or absolute "
                      f"threshold{alternative}.")


def check_rx_request(variant: tuple = None, *, local_windows: tuple = None, false_alarm_rate: bool = False) -> None:
    """InputError for a classical RX request (fers:rx) whose settings do not go together.

    variant: (variant, window or None, guard) of one of ENVI's variants (rx_variants.validate_variant), None for
    global or local RX; local_windows: (inner, outer) of local RX, None for the others; false_alarm_rate: a mask or
    polygons are asked for with a false-alarm-rate threshold. Every mode runs in this process and on a Dask cluster.
    """
    if local_windows is not None:
        validate_windows(*local_windows)
    if false_alarm_rate and variant is not None and not chi_square_law(variant[0]):
        raise _no_chi_square_law(f"{describe(*variant)} scores follow no chi-square law")


def check_detect_request(detector: str = "global", windows: tuple = (5, 21), *, scheduler: str = "",
                         members: int = 1, false_alarm_rate: bool = False, fusion: Fusion = None) -> None:
    """InputError for a FERS detection request (fers:detect) whose settings do not go together.

    detector: one of catalog.DETECTORS, with its (inner, outer) windows; scheduler: the checked SCHEDULER ('' = in
    this process); members: the score maps an ensemble fuses (models, and plain RX when fused in);
    false_alarm_rate: a mask or polygons are asked for with a false-alarm-rate threshold; fusion: what the
    branches' fusion becomes for the model (choices.Fusion.resolve: single, sum or product), None while the
    model is not loaded yet.
    """
    check_detector(detector, *windows)
    if scheduler and members > 1:
        raise InputError("The Dask scheduler (SCHEDULER) runs one model: leave it empty to fuse several models "
                         "(MODELS, FUSE_RX, or the bundled default ensemble), or set one MODEL.")
    if not false_alarm_rate:
        return
    if not has_chi_square_law(detector):
        raise _no_chi_square_law("UTD and RXD-UTD scores follow no chi-square law")
    if members > 1:
        raise _no_chi_square_law("Fused ensemble scores have no chi-square law",
                                 ", or run one model (set MODEL, e.g. the bundled fers_default.pt) with sum fusion "
                                 "of its branches (FUSION) or one branch (BRANCHES)")
    if fusion == Fusion.PRODUCT:
        raise _no_chi_square_law("Product fusion gives normalised scores with no chi-square law",
                                 ", or sum fusion of the branches (FUSION) or one branch (BRANCHES)")


def check_spatial_tiles(tile: int, margin: int) -> None:
    """InputError when the margin leaves no core of a spatial tile (TILE_SIZE - 2 x TILE_MARGIN < 1)."""
    if tile - 2 * margin < 1:
        raise InputError(f"The spatial tile margin (TILE_MARGIN, {margin}) must be less than half of the spatial tile "
                         f"size (TILE_SIZE, {tile}).")
