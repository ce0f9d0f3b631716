"""Preprocessing (method.md section 1): band resampling to the model's band count, then scaling.

Band resampling is linear interpolation over the normalised band index (source positions
``linspace(0, 1, n_in)``, targets ``linspace(0, 1, n_out)``), or over wavelength when both
grids are given (targets outside the source range take the nearest edge band). It is a sparse
(n_out x n_in) matrix, built once, so each tile is resampled with one matrix product.

Scaling uses one minimum and maximum for the whole (resampled) cube, accumulated over blocks
with :class:`RangeAccumulator`, then ``((x - min) / (max - min) * 2 - 1) * 0.1``.
"""

import numpy as np
from scipy import sparse

from ..errors import InputError

SCALE_FACTOR = 0.1


def _wavelength_grid(values, name):
    """A 1-D float64 array of finite wavelengths, or InputError."""
    grid = np.asarray(values, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)):
        raise InputError(f"The {name} wavelengths are empty or not all numbers; fix or remove them.")
    return grid


def _interpolation_weights(src_positions, dst_positions):
    """Left source index and weight of the right neighbour for each target (clamped at edges)."""
    n_in = src_positions.size
    if n_in == 1:
        return np.zeros(dst_positions.size, dtype=np.int64), np.zeros(dst_positions.size)
    left = np.searchsorted(src_positions, dst_positions, side="right") - 1
    left = np.clip(left, 0, n_in - 2)
    span = src_positions[left + 1] - src_positions[left]
    weight = np.clip((dst_positions - src_positions[left]) / span, 0.0, 1.0)
    return left, weight


def band_resampling_matrix(n_in: int, n_out: int, src_wavelengths=None, dst_wavelengths=None) -> sparse.csr_matrix:
    """Sparse (n_out x n_in) float64 matrix of linear band interpolation weights (CSR).

    Over the normalised band index, unless both wavelength grids are given (then over
    wavelength; unsorted source grids are fine, duplicated source wavelengths are not).
    """
    n_in, n_out = int(n_in), int(n_out)
    if n_in < 1 or n_out < 1:
        raise InputError("Band resampling needs at least one source band and one target band.")
    if src_wavelengths is not None and dst_wavelengths is not None:
        src = _wavelength_grid(src_wavelengths, "raster")
        dst = _wavelength_grid(dst_wavelengths, "model")
        if src.size != n_in or dst.size != n_out:
            raise InputError(
                f"The wavelength lists ({src.size} and {dst.size} values) do not match the band counts "
                f"({n_in} and {n_out}); fix the band metadata."
            )
        order = np.argsort(src, kind="stable")
        if np.any(np.diff(src[order]) == 0):
            raise InputError("The raster lists the same wavelength for two bands; drop one of them first.")
        left, weight = _interpolation_weights(src[order], dst)
        columns_left, columns_right = order[left], order[np.minimum(left + 1, n_in - 1)]
    else:
        src = np.linspace(0.0, 1.0, n_in)
        dst = np.linspace(0.0, 1.0, n_out)
        left, weight = _interpolation_weights(src, dst)
        columns_left, columns_right = left, np.minimum(left + 1, n_in - 1)
    rows = np.tile(np.arange(n_out), 2)
    columns = np.concatenate([columns_left, columns_right])
    weights = np.concatenate([1.0 - weight, weight])
    matrix = sparse.coo_matrix((weights, (rows, columns)), shape=(n_out, n_in)).tocsr()
    matrix.eliminate_zeros()
    return matrix


def apply_band_matrix(matrix: sparse.csr_matrix, cube: np.ndarray, keep_float64: bool = False) -> np.ndarray:
    """Apply a band resampling matrix to a cube (bands, ...) -> (n_out, ...) float32 (float64 for a float64 cube
    with `keep_float64`: values with a large common offset keep their differences until they are scaled)."""
    cube = np.asarray(cube)
    if cube.shape[0] != matrix.shape[1]:
        raise InputError(
            f"The data has {cube.shape[0]} bands but the resampling expects {matrix.shape[1]}; "
            "check the band selection."
        )
    work_dtype = np.float64 if cube.dtype == np.float64 else np.float32
    flat = cube.reshape(cube.shape[0], -1).astype(work_dtype, copy=False)
    resampled = matrix.astype(work_dtype) @ flat
    out_dtype = work_dtype if keep_float64 else np.float32
    return np.asarray(resampled, dtype=out_dtype).reshape((matrix.shape[0],) + cube.shape[1:])


def resample_bands(cube: np.ndarray, n_out: int, src_wavelengths=None, dst_wavelengths=None) -> np.ndarray:
    """Resample the band axis of ``cube`` (bands, ...) to ``n_out`` bands; float32 result."""
    cube = np.asarray(cube)
    matrix = band_resampling_matrix(cube.shape[0], n_out, src_wavelengths, dst_wavelengths)
    return apply_band_matrix(matrix, cube)


def wavelength_coverage(src, dst) -> float:
    """Fraction (0..1) of the target wavelength range that lies inside the source range."""
    src = _wavelength_grid(src, "raster")
    dst = _wavelength_grid(dst, "model")
    low, high = dst.min(), dst.max()
    if high == low:
        return float(src.min() <= low <= src.max())
    overlap = min(high, src.max()) - max(low, src.min())
    return float(np.clip(overlap / (high - low), 0.0, 1.0))


class RangeAccumulator:
    """Streaming minimum and maximum of valid values; ``min``/``max`` stay None until data arrives.

    Non-finite values (NaN, inf) are ignored.
    """

    def __init__(self):
        self.min = None
        self.max = None

    def add(self, values) -> "RangeAccumulator":
        """Include an array of valid pixel values (any shape)."""
        values = np.asarray(values)
        if not values.size:
            return self
        low, high = values.min(), values.max()
        if not (np.isfinite(low) and np.isfinite(high)):  # NaN or inf somewhere: the finite values only
            values = values[np.isfinite(values)]
            if not values.size:
                return self
            low, high = values.min(), values.max()
        self._include(float(low), float(high))
        return self

    def merge(self, other: "RangeAccumulator") -> "RangeAccumulator":
        """Include the range of another accumulator (for example from another worker)."""
        if other.min is not None:
            self._include(other.min, other.max)
        return self

    def _include(self, low, high):
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)


def update_minmax(state: tuple, block) -> tuple:
    """Functional form of :class:`RangeAccumulator`: ``(min, max)`` or None -> updated pair."""
    accumulator = RangeAccumulator()
    if state is not None:
        accumulator.min, accumulator.max = state
    accumulator.add(block)
    return None if accumulator.min is None else (accumulator.min, accumulator.max)


def scale_reference(x, vmin: float, vmax: float) -> np.ndarray:
    """Reference scaling ``((x - vmin) / (vmax - vmin) * 2 - 1) * 0.1`` as float32.

    Computed in float64 for float64 input, else in float32.
    """
    if vmin is None or vmax is None or not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise InputError("The input has no valid pixels to scale; check the nodata value and the mask.")
    if not vmax > vmin:
        raise InputError(
            f"The input data is constant (every valid value is {vmin}), so it cannot be scaled; "
            "check the band selection and the nodata value."
        )
    x = np.asarray(x)
    work_dtype = np.float64 if x.dtype == np.float64 else np.float32
    x = x.astype(work_dtype, copy=False)
    scaled = ((x - work_dtype(vmin)) / work_dtype(vmax - vmin) * 2 - 1) * work_dtype(SCALE_FACTOR)
    return scaled.astype(np.float32, copy=False)
