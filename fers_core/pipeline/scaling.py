"""A raster's bands mapped onto a model's bands and scaled as the reference code scales them."""

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .blockwise import TreeReducer
from .preprocess import (
    RangeAccumulator,
    apply_band_matrix,
    band_resampling_matrix,
    scale_reference,
    wavelength_coverage,
)

MIN_WAVELENGTH_COVERAGE = 0.8


MIN_INPUT_BANDS = 3  # 1 or 2 bands interpolate to a flat or straight-line spectrum the networks never saw


class BandMapping:
    """Maps the raster's selected bands onto the model's bands (one sparse matrix)."""

    def __init__(self, reader, model, feedback):
        n_in, n_out = reader.band_count, model.bands
        if n_in < MIN_INPUT_BANDS:
            raise InputError(
                f"The FERS networks need at least {MIN_INPUT_BANDS} bands but only {n_in} "
                f"{'is' if n_in == 1 else 'are'} selected: select more bands, or use the classical RX detector "
                "(fers:rx), which works with any number of bands."
            )
        use_wavelengths = reader.wavelengths_nm is not None and model.wavelengths_nm is not None
        if use_wavelengths:
            coverage = wavelength_coverage(reader.wavelengths_nm, model.wavelengths_nm)
            if coverage < MIN_WAVELENGTH_COVERAGE:
                raise InputError(
                    f"The raster's wavelengths ({min(reader.wavelengths_nm):.0f}-{max(reader.wavelengths_nm):.0f} nm) "
                    f"cover only {coverage:.0%} of the model's range ({min(model.wavelengths_nm):.0f}-"
                    f"{max(model.wavelengths_nm):.0f} nm): use a model for this sensor's range."
                )
        self.matrix = band_resampling_matrix(
            n_in, n_out, reader.wavelengths_nm if use_wavelengths else None,
            model.wavelengths_nm if use_wavelengths else None,
        )
        how = "over wavelength" if use_wavelengths else "over the normalised band index"
        self.description = (f"identity ({n_in} bands)" if n_in == n_out and not use_wavelengths
                            else f"{n_in} raster bands resampled linearly {how} to the model's {n_out} bands")
        if n_in < n_out / 2:
            feedback.warning(
                f"The raster has {n_in} bands, far fewer than the model's {n_out}: bands are interpolated, "
                "which adds no information; results may be weaker than plain RX."
            )

    def __call__(self, data):
        return apply_band_matrix(self.matrix, data)


@dataclass
class RangePartial:
    """The range pass of one window (or of a merged run of windows)."""

    min: float
    max: float
    sum: np.ndarray
    count: int


def merge_range_partials(left, right):
    """A new RangePartial: `left` then `right` (min/max are exact in any order; sums follow the tree)."""
    def pick(a, b, function):
        return b if a is None else a if b is None else function(a, b)

    total = pick(left.sum, right.sum, lambda a, b: a + b)
    return RangePartial(pick(left.min, right.min, min), pick(left.max, right.max, max), total,
                        left.count + right.count)


class Preprocessor:
    """Band mapping, reference scaling and filling of invalid pixels, per strip."""

    def __init__(self, reader, model, feedback):
        self.reader = reader
        self.mapping = BandMapping(reader, model, feedback)
        self.vmin = self.vmax = None
        self.fill = None

    def fit(self, windows, progress):
        """Scaling range and fill values from every window (one partial per window, merged as a fixed tree)."""
        reducer = TreeReducer(merge_range_partials)
        for index, window in enumerate(windows):
            reducer.push(self.range_partial(window))
            progress((index + 1) / len(windows))
        return self.apply_range(reducer.result())

    def range_partial(self, window):
        """Minimum, maximum, float64 band sums and count of the valid model-band pixels of one window."""
        data, valid = self.reader.read(window, np.float32)
        flat, use = data.reshape(data.shape[0], -1), valid.reshape(-1)
        # np.compress keeps the band-first layout (boolean indexing would return a transposed copy)
        pixels = self.mapping(flat if use.all() else np.compress(use, flat, axis=1))
        ranges = RangeAccumulator().add(pixels)
        block_sum = pixels.sum(axis=1, dtype=np.float64) if pixels.shape[1] else None
        return RangePartial(ranges.min, ranges.max, block_sum, int(pixels.shape[1]))

    def apply_range(self, partial):
        """Set the scaling from merged RangePartials; returns the number of valid pixels."""
        if partial.count == 0:
            raise InputError(
                "No valid pixels: every pixel is nodata, NaN or infinite in at least one used band. "
                "Check the input's nodata value and the band selection."
            )
        if not partial.max > partial.min:
            raise InputError(f"The input is constant (every valid value is {partial.min}): nothing can stand out.")
        self.vmin, self.vmax = partial.min, partial.max
        self.fill = scale_reference(partial.sum / partial.count, self.vmin, self.vmax)
        return partial.count

    def strip(self, window):
        """Scaled model-band cube (bands, rows, cols) float32 with invalid pixels filled, and validity.

        Only the window is read; its raster bands are mapped to the model's at once and let go."""
        data, valid = self.reader.read(window, np.float32)
        mapped = self.mapping(data)
        del data
        scaled = scale_reference(mapped, self.vmin, self.vmax)
        scaled[:, ~valid] = self.fill[:, None]
        return scaled, valid
