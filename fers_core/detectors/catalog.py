"""The detectors fers:detect can run on the enhanced cube, and their settings check (no torch needed)."""

from ..errors import InputError

DETECTORS = ("global", "local", "rxd-local-mean", "utd", "rxd-utd")
"""Global RX, local (dual-window) RX, and ENVI's variants (rx_variants.DETECTOR_VARIANTS)."""

LABELS = {"global": "global RX", "local": "local RX", "rxd-local-mean": "RXD with a local mean", "utd": "UTD",
          "rxd-utd": "RXD-UTD"}
"""How the log names each detector."""


def check_detector(detector, inner, outer):
    """InputError for an unknown detector or windows it cannot use, before any pass over the data."""
    if detector not in DETECTORS:
        raise InputError(f"Unknown detector '{detector}': use one of {', '.join(DETECTORS)}.")
    if detector == "local":
        from .local_rx import validate_windows

        validate_windows(inner, outer)
    elif detector != "global":
        from .rx_variants import detector_settings, validate_variant

        validate_variant(*detector_settings(detector, inner, outer))


def has_chi_square_law(detector):
    """Whether the detector's scores follow (about) a chi-square law for Gaussian backgrounds."""
    from .rx_variants import DETECTOR_VARIANTS, chi_square_law

    return detector not in DETECTOR_VARIANTS or chi_square_law(DETECTOR_VARIANTS[detector][0])
