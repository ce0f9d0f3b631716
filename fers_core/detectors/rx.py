"""Global RX (Reed-Xiaoli): squared Mahalanobis distance to the background mean.

Statistics are accumulated block by block in float64 (shifted sums, mergeable across
blocks and workers); the inverse covariance is applied through one eigen-decomposition, as
a whitening matrix, so scoring a block is one matrix product.

Raster blocks arrive band-first, (bands, pixels), in their stored type, and are processed in
short chunks of pixels that stay in cache: for the statistics, centred on the block's own
provisional mean (so a large offset, as in integer radiance, never cancels) and multiplied in
float64; for the scores, centred and multiplied in float32 by a triangular factor of the
inverse covariance (half the multiply-adds of a full whitening matrix), with the careful
float64 path for any pixel whose float32 score is not finite.

Singular or ill-conditioned covariances (fewer pixels than bands, constant or duplicate
bands) are handled as a pseudo-inverse: eigen-directions whose eigenvalue is below
`max_eigenvalue * n_features * machine epsilon` (numpy's matrix_rank tolerance) carry no
background variance and are dropped, so RX is measured in the subspace the background spans.
"""

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, NoValidPixels
from ..runtime.blas import add_gram, matmul, strmm

FLOAT32_MAX = float(np.finfo(np.float32).max)
SCORE_CLIP = 1e15  # scaled deviations beyond this (1e15 background standard deviations) are clipped
CHUNK_PIXELS = 2048  # pixels per product: the chunk's centred copy (3 MB at 200 bands) stays in cache
_FACTOR_RANGE = (1e-30, 1e30)  # float32 scoring needs the factor's entries well inside float32's range


def _chunks(n_pixels):
    return [(start, min(start + CHUNK_PIXELS, n_pixels)) for start in range(0, n_pixels, CHUNK_PIXELS)]


def _work_dtype(dtype):
    """The type `data - float32 vector` is computed in: float32 for float32 and small integers, else float64."""
    return np.result_type(dtype, np.float32)


class CovarianceAccumulator:
    """Streaming mean and covariance of pixel vectors, in float64.

    Sums are taken around a shift (the first block's mean) so that large offsets, as in
    integer radiance, do not cancel catastrophically.
    """

    def __init__(self, n_features: int):
        self.n_features = n_features
        self.count = 0
        self.shift = None
        self.sum = np.zeros(n_features)
        self.cross = np.zeros((n_features, n_features))

    def add(self, pixels: np.ndarray) -> None:
        """Add an (n_pixels, n_features) block of valid pixels (add_bands of its band-first view)."""
        self.add_bands(np.asarray(pixels).T)

    def add_bands(self, data: np.ndarray, use: np.ndarray = None) -> None:
        """Add the pixels of a band-first (n_features, n_pixels) block of any real type.

        `use`: boolean (n_pixels,) selecting the pixels to add (None = all); the others may hold
        anything (nodata, NaN, inf). No float64 copy of the block is made,
        nor a transpose: chunks of pixels are centred on a provisional mean of the block into a
        small float64 buffer and multiplied there (float64 products: float32 ones lose ~1e-6 of
        the covariance, and real scenes, with condition numbers near 1e9, need far better).
        Into a non-empty accumulator the block is merged like any other partial result.
        """
        if self.count:
            block = CovarianceAccumulator(self.n_features)
            block.add_bands(data, use)
            self.merge(block)
            return
        n_pixels = data.shape[1]
        count = n_pixels if use is None else int(np.count_nonzero(use))
        if count == 0:
            return
        sample = np.arange(n_pixels) if use is None else np.flatnonzero(use)
        sample = sample[::max(1, len(sample) // 1024)]  # a provisional mean: any value near the mean serves
        with np.errstate(over="ignore", invalid="ignore"):
            shift = data[:, sample].mean(axis=1, dtype=np.float64)
        if not np.all(np.isfinite(shift)):  # values beyond float64's range: the covariance will say so
            shift = np.zeros(self.n_features)
        buffer = np.empty(self.n_features * min(n_pixels, CHUNK_PIXELS))
        total = np.zeros(self.n_features)
        cross = np.zeros((self.n_features, self.n_features))
        with np.errstate(over="ignore", invalid="ignore"):
            for start, stop in _chunks(n_pixels):
                chunk_use = None if use is None else use[start:stop]
                if chunk_use is not None and not chunk_use.any():
                    continue
                chunk = data[:, start:stop]
                centred = np.subtract(chunk, shift[:, None], out=buffer[:chunk.size].reshape(chunk.shape))
                if chunk_use is not None and not chunk_use.all():
                    centred[:, ~chunk_use] = 0
                total += centred.sum(axis=1)
                add_gram(cross, centred)
        self.count = count
        self.shift = shift
        self.sum = total
        self.cross = cross

    def merge(self, other: "CovarianceAccumulator") -> "CovarianceAccumulator":
        """Fold another accumulator (e.g. from another block or worker) into this one."""
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.shift = other.count, other.shift.copy()
            self.sum, self.cross = other.sum.copy(), other.cross.copy()
            return self
        delta = other.shift - self.shift
        moved_sum = other.sum + other.count * delta
        self.cross += other.cross + np.outer(other.sum, delta) + np.outer(delta, other.sum)
        self.cross += other.count * np.outer(delta, delta)
        self.sum += moved_sum
        self.count += other.count
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.shift + self.sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        """Sample covariance (denominator n - 1)."""
        centred_mean = self.sum / self.count
        scatter = self.cross - self.count * np.outer(centred_mean, centred_mean)
        return scatter / max(self.count - 1, 1)


def merged_covariance(left, right):
    """A new CovarianceAccumulator holding `left` merged with `right` (neither is modified)."""
    return copy.deepcopy(left).merge(right)


@dataclass
class RxModel:
    """Background mean and whitening matrix: score(x) = |(x - mean) @ whitening|^2."""

    mean: np.ndarray
    whitening: np.ndarray
    rank: int
    n_features: int
    pixel_count: int
    scale: float = 1.0  # applied to x - mean before the whitening, so float32 holds any data range
    # float32 upper-triangular (trapezoidal when rank-deficient) R, rank x n_features, with
    # R^T R = (whitening * scale)(whitening * scale)^T, so score(x) = |R (x - mean)|^2; None when
    # its entries do not fit float32 comfortably (data in extreme units): then scoring is careful
    factor: np.ndarray = None

    @property
    def regularised(self) -> bool:
        return self.rank < self.n_features

    def score(self, pixels: np.ndarray) -> np.ndarray:
        """RX scores (float32) of an (n_pixels, n_features) array.

        Computed in float32 on (x - mean) * scale, which is about one per background standard
        deviation whatever the data's units; pixels further out than SCORE_CLIP deviations are
        clipped there and scores saturate at the float32 maximum, so a score is never inf or NaN.
        """
        centred = (np.asarray(pixels, dtype=np.float64) - self.mean) * self.scale
        np.clip(centred, -SCORE_CLIP, SCORE_CLIP, out=centred)
        projected = matmul(centred.astype(np.float32), self.whitening.astype(np.float32, copy=False))
        scores = np.einsum("ij,ij->i", projected, projected)
        return np.minimum(scores, np.float32(FLOAT32_MAX), out=scores)

    def score_bands(self, data: np.ndarray, valid: np.ndarray = None) -> np.ndarray:
        """RX scores (float32, (n_pixels,)) of a band-first (n_features, n_pixels) block of any real type.

        `valid`: boolean (n_pixels,) (None = all); the other pixels may hold anything and score 0.
        Each chunk of pixels is centred in float32 (float64 for wider types, then rounded) and
        multiplied by the triangular factor in float32; a chunk with a score that is not finite
        (a pixel astronomically far out) is scored again by `score`, which clips, so a score is
        never inf or NaN.
        """
        n_pixels = data.shape[1]
        scores = np.zeros(n_pixels, np.float32)
        if self.factor is None:
            use = slice(None) if valid is None else valid
            scores[use] = self.score(data[:, use].T)
            return scores
        mean = self.mean.astype(_work_dtype(data.dtype))[:, None]
        triangular = strmm if self.factor.shape[0] == self.n_features else None
        factor = np.asfortranarray(self.factor) if triangular else self.factor
        centred_buffer = np.empty(self.n_features * min(n_pixels, CHUNK_PIXELS), np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for start, stop in _chunks(n_pixels):
                chunk = data[:, start:stop]
                centred = np.subtract(chunk, mean, out=centred_buffer[:chunk.size].reshape(chunk.shape),
                                      casting="unsafe")
                chunk_valid = None if valid is None or valid[start:stop].all() else valid[start:stop]
                if chunk_valid is not None:
                    centred[:, ~chunk_valid] = 0
                if triangular:  # R x in place: (x^T R^T), column-major, is the row-major block itself
                    projected = triangular(1.0, factor, centred.T, side=1, lower=0, trans_a=1, overwrite_b=1).T
                else:
                    projected = matmul(factor, centred)
                np.square(projected, out=projected)
                chunk_scores = np.sum(projected, axis=0, out=scores[start:stop])
                if not np.isfinite(chunk_scores).all():
                    use = slice(None) if chunk_valid is None else chunk_valid
                    chunk_scores[use] = self.score(chunk[:, use].T)
        return scores


def _float32_factor(whitening, scale):
    """The float32 triangular factor of an RxModel (see RxModel.factor), or None."""
    effective = whitening * scale  # eigenvectors / sqrt(eigenvalues): n_features x rank
    _, factor = np.linalg.qr(effective.T)  # effective^T = Q R, so effective effective^T = R^T R
    largest = np.abs(factor).max()
    if not (np.isfinite(largest) and _FACTOR_RANGE[0] < largest < _FACTOR_RANGE[1]):
        return None
    return np.ascontiguousarray(factor, dtype=np.float32)


def fit_rx(accumulator: CovarianceAccumulator) -> RxModel:
    """Build the RxModel from accumulated statistics."""
    if accumulator.count == 0:
        raise NoValidPixels(
            "No valid pixels for the background statistics: every pixel is nodata, NaN or masked. "
            "Check the input's nodata value, the band selection and the mask."
        )
    if accumulator.count < 3:  # even one feature needs three: two points are equally far from their mean
        raise InputError(f"Only {accumulator.count} valid background pixel{'s' if accumulator.count > 1 else ''}: RX "
                         "needs at least three (more than its features plus one); leave fewer pixels out (nodata, "
                         "mask) or use a larger area.")
    if accumulator.count <= accumulator.n_features + 1:  # n points span at most n - 1 dimensions: equal distances
        most = accumulator.count - 2
        raise InputError(
            f"Only {accumulator.count} valid background pixels for {accumulator.n_features} features (bands): with "
            "no more pixels than features plus one, every pixel gets the same RX score, so none can stand out. "
            f"Use at most {most} feature{'s' if most > 1 else ''} (fewer BANDS for fers:rx; for fers:detect a model "
            f"of at most {most} band{'s' if most > 1 else ''}, as the networks resample the raster to their own), or "
            "leave fewer pixels "
            "out (nodata, mask), or use a larger area."
        )
    covariance = accumulator.covariance
    # defensive: RasterReader already makes stored values of magnitude FILL_MAGNITUDE (1e30) or more nodata, so only
    # data given to the engine directly (or scaled past 1e150) reaches this
    if not (np.all(np.isfinite(covariance)) and np.all(np.isfinite(accumulator.mean))):
        raise InputError(
            "The pixel values are too large for the RX statistics (their squares overflow double precision): "
            "declare the nodata value of fill pixels or rescale the raster, then run again."
        )
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    largest = eigenvalues[-1]
    if not np.isfinite(largest) or largest <= 0:
        raise InputError(
            "The background has no variance: all valid pixels are identical, so no pixel can stand out."
        )
    tolerance = largest * accumulator.n_features * np.finfo(np.float64).eps
    keep = eigenvalues > tolerance
    # |(x - m) V / sqrt(l)|^2 = |((x - m) / sqrt(l_max)) V / sqrt(l / l_max)|^2: scaled, both factors fit float32
    whitening = eigenvectors[:, keep] / np.sqrt(eigenvalues[keep] / largest)
    scale = float(1.0 / np.sqrt(largest))
    return RxModel(accumulator.mean, whitening, int(keep.sum()), accumulator.n_features, accumulator.count,
                   scale, _float32_factor(whitening, scale))


def rx_scores(pixels: np.ndarray) -> np.ndarray:
    """Global RX of an in-memory (n_pixels, n_features) array; a convenience for small data."""
    accumulator = CovarianceAccumulator(pixels.shape[1])
    accumulator.add(pixels)
    return fit_rx(accumulator).score(pixels)
