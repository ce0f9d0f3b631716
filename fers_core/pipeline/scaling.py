"""A raster's bands mapped onto a model's bands and scaled as the reference code scales them."""

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, NoValidPixels
from ..io.bad_bands import band_parameter
from ..runtime.reduction import TreeReducer
from .preprocess import (
    RangeAccumulator,
    apply_band_matrix,
    band_resampling_matrix,
    scale_reference,
    wavelength_coverage,
)

MIN_WAVELENGTH_COVERAGE = 0.8


MIN_INPUT_BANDS = 3  # 1 or 2 bands interpolate to a flat or straight-line spectrum the networks never saw


def interpolates_sparsely(raster_bands: int, model_bands: int) -> bool:
    """True when a raster has fewer than half a model's bands: most model bands are interpolated, adding nothing."""
    return int(raster_bands) < int(model_bands) / 2


def sparse_bands_warning(raster_bands: int, model_bands: str, several: bool = False) -> str:
    """The warning for `raster_bands` against `model_bands` ("16"; "50, 100 and 200" for `several` models)."""
    whose = "every model's" if several else "the model's"
    return (f"The {raster_bands} raster bands used are far fewer than {whose} {model_bands}: they are interpolated, "
            "which adds no information; results may be weaker than plain RX.")


class BandMapping:
    """Maps a raster's selected bands onto a model's bands (one sparse matrix).

    Built from the band counts and wavelengths alone (`for_model` reads them from a reader and a
    model), so training maps its rasters exactly as detection does. With a `feedback`, it warns when
    the raster has far fewer bands than the model (an ensemble passes none and reports once for all).
    """

    def __init__(self, raster_bands: int, model_bands: int, raster_wavelengths=None, model_wavelengths=None,
                 feedback=None, band_numbers=None):
        n_in, n_out = int(raster_bands), int(model_bands)
        if n_in < MIN_INPUT_BANDS:
            raise InputError(
                f"The FERS networks need at least {MIN_INPUT_BANDS} bands but only {n_in} "
                f"{'is' if n_in == 1 else 'are'} selected: select more bands, or use the classical RX detector "
                "(fers:rx), which works with any number of bands."
            )
        use_wavelengths = raster_wavelengths is not None and model_wavelengths is not None
        if use_wavelengths:
            _check_distinct_wavelengths(raster_wavelengths, band_numbers or list(range(1, n_in + 1)))
            coverage = wavelength_coverage(raster_wavelengths, model_wavelengths)
            if coverage < MIN_WAVELENGTH_COVERAGE:
                raise InputError(
                    f"The raster's wavelengths ({min(raster_wavelengths):.0f}-{max(raster_wavelengths):.0f} nm) "
                    f"cover only {coverage:.0%} of the model's range ({min(model_wavelengths):.0f}-"
                    f"{max(model_wavelengths):.0f} nm): use a model for this sensor's range."
                )
        self.matrix = band_resampling_matrix(
            n_in, n_out, raster_wavelengths if use_wavelengths else None,
            model_wavelengths if use_wavelengths else None,
        )
        how = "over wavelength" if use_wavelengths else "over the normalised band index"
        self.description = (f"identity ({n_in} bands)" if n_in == n_out and not use_wavelengths
                            else f"{n_in} raster bands resampled linearly {how} to the model's {n_out} bands")
        if raster_wavelengths is not None and model_wavelengths is None:
            self.description += " (the model stores no band wavelengths, so the raster's are not used)"
        if interpolates_sparsely(n_in, n_out) and feedback is not None:
            feedback.warning(sparse_bands_warning(n_in, str(n_out)))

    @classmethod
    def for_model(cls, reader, model, feedback=None) -> "BandMapping":
        """The mapping of `reader`'s selected bands onto `model`'s (its `bands` and `wavelengths_nm`)."""
        return cls(reader.band_count, model.bands, reader.wavelengths_nm, model.wavelengths_nm, feedback,
                   list(reader.bands))

    def __call__(self, data: np.ndarray) -> np.ndarray:
        return apply_band_matrix(self.matrix, data, keep_float64=True)


def _check_distinct_wavelengths(wavelengths, band_numbers):
    """InputError naming two bands of one wavelength (`band_numbers`: the raster's numbers of the selected bands)
    and the BANDS value that leaves the second out: bands are mapped by wavelength, so each needs its own."""
    first = {}
    shared = [band for band, wavelength in zip(band_numbers, wavelengths) if wavelength == wavelengths[0]]
    if len(shared) == len(band_numbers) > 2:  # one wavelength for all: leaving bands out one by one cannot help
        raise InputError(f"All {len(shared)} selected bands of the raster list the same wavelength, "
                         f"{wavelengths[0]:g} nm: its wavelength metadata is wrong. Correct it, or remove it (e.g. "
                         "gdal_edit.py -unsetmd, or edit the ENVI header) so that the bands are mapped by position.")
    for band, wavelength in zip(band_numbers, wavelengths):
        if wavelength in first:
            keep = [number for number in band_numbers if number != band]
            raise InputError(f"Bands {first[wavelength]} and {band} of the raster both list {wavelength:g} nm: the "
                             "bands are mapped onto the model's by wavelength, so leave one out, e.g. BANDS "
                             f"'{band_parameter(keep)}'.")
        first[wavelength] = band


@dataclass
class RangePartial:
    """The range pass of one window (or of a merged run of windows)."""

    min: float
    max: float
    sum: np.ndarray
    count: int


def merge_range_partials(left: RangePartial, right: RangePartial) -> RangePartial:
    """A new RangePartial: `left` then `right` (min/max are exact in any order; sums follow the tree)."""
    def pick(a, b, function):
        return b if a is None else a if b is None else function(a, b)

    total = pick(left.sum, right.sum, lambda a, b: a + b)
    return RangePartial(pick(left.min, right.min, min), pick(left.max, right.max, max), total,
                        left.count + right.count)


@dataclass(frozen=True, eq=False)
class Scaling:
    """The reference scaling of one raster, fitted by the range pass (fit_scaling).

    One minimum and maximum over every valid model-band value, and the scaled band means that fill
    invalid pixels before the networks. Frozen and small: a plan carries it to every window task.
    """

    vmin: float
    vmax: float
    fill: np.ndarray  # float32 (model bands,): the scaled mean spectrum of the valid pixels


def read_dtype(reader):
    """float64 for values float32 cannot hold exactly (float64, 32- and 64-bit integers, scaled bands), so that a
    large common offset (1e8 + small differences) survives until the scaling subtracts the minimum; else float32."""
    wide = reader.stored_dtype == np.float64 or (reader.stored_dtype.kind in "iu" and reader.stored_dtype.itemsize > 2)
    scaled = any(scale != 1.0 for scale in reader.scales) or any(offset != 0.0 for offset in reader.offsets)
    return np.float64 if wide or scaled else np.float32


def range_partial(reader, mapping: BandMapping, window) -> RangePartial:
    """Minimum, maximum, float64 band sums and count of the valid model-band pixels of one window."""
    data, valid = reader.read(window, read_dtype(reader))
    flat, use = data.reshape(data.shape[0], -1), valid.reshape(-1)
    # np.compress keeps the band-first layout (boolean indexing would return a transposed copy)
    pixels = mapping(flat if use.all() else np.compress(use, flat, axis=1))
    ranges = RangeAccumulator().add(pixels)
    block_sum = pixels.sum(axis=1, dtype=np.float64) if pixels.shape[1] else None
    return RangePartial(ranges.min, ranges.max, block_sum, int(pixels.shape[1]))


def range_pass(reader, mapping: BandMapping, windows, progress) -> RangePartial:
    """The merged RangePartial of every window, in this process (one partial per window, merged as a fixed tree)."""
    reducer = TreeReducer(merge_range_partials)
    for index, window in enumerate(windows):
        reducer.push(range_partial(reader, mapping, window))
        progress((index + 1) / len(windows))
    return reducer.result()


def fit_scaling(partial: RangePartial) -> Scaling:
    """The Scaling of the merged RangePartial of a raster's windows; InputError when nothing can be scaled."""
    if partial.count == 0:
        raise NoValidPixels(
            "No valid pixels: every pixel is nodata, NaN or infinite in at least one used band. "
            "Check the input's nodata value and the band selection."
        )
    if not partial.max > partial.min:
        raise InputError(f"The input is constant (every valid value is {partial.min}): nothing can stand out.")
    return Scaling(partial.min, partial.max, scale_reference(partial.sum / partial.count, partial.min, partial.max))


def scale_window(reader, mapping: BandMapping, scaling: Scaling, window) -> tuple:
    """(scaled model-band cube (bands, rows, cols) float32 with invalid pixels filled, validity) of one window.

    Only the window is read; its raster bands are mapped to the model's at once and let go."""
    data, valid = reader.read(window, read_dtype(reader))
    mapped = mapping(data)
    del data
    scaled = scale_reference(mapped, scaling.vmin, scaling.vmax)
    scaled[:, ~valid] = scaling.fill[:, None]
    return scaled, valid

