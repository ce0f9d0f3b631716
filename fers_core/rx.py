"""Global RX (Reed-Xiaoli): squared Mahalanobis distance to the background mean.

Statistics are accumulated block by block in float64 (shifted sums, mergeable across
blocks and workers); the inverse covariance is applied through one eigen-decomposition, as
a whitening matrix, so scoring a block is one matrix product.

Singular or ill-conditioned covariances (fewer pixels than bands, constant or duplicate
bands) are handled as a pseudo-inverse: eigen-directions whose eigenvalue is below
`max_eigenvalue * n_features * machine epsilon` (numpy's matrix_rank tolerance) carry no
background variance and are dropped, so RX is measured in the subspace the background spans.
"""

from dataclasses import dataclass

import numpy as np

from .errors import InputError

FLOAT32_MAX = float(np.finfo(np.float32).max)
SCORE_CLIP = 1e15  # scaled deviations beyond this (1e15 background standard deviations) are clipped


def pixel_vectors(data, use):
    """Pixel vectors (n, bands) of the pixels selected by `use`; a view, not a copy, when all are."""
    if use.all():
        return data.reshape(data.shape[0], -1).T
    return data[:, use].T


class CovarianceAccumulator:
    """Streaming mean and covariance of pixel vectors, in float64.

    Sums are taken around a shift (the first block's mean) so that large offsets, as in
    integer radiance, do not cancel catastrophically.
    """

    def __init__(self, n_features):
        self.n_features = n_features
        self.count = 0
        self.shift = None
        self.sum = np.zeros(n_features)
        self.cross = np.zeros((n_features, n_features))

    def add(self, pixels):
        """Add an (n_pixels, n_features) block of valid pixels."""
        pixels = np.asarray(pixels, dtype=np.float64)
        if pixels.shape[0] == 0:
            return
        if self.shift is None:
            self.shift = pixels.mean(axis=0)
        centred = pixels - self.shift
        self.count += pixels.shape[0]
        self.sum += centred.sum(axis=0)
        self.cross += centred.T @ centred

    def merge(self, other):
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
    def mean(self):
        return self.shift + self.sum / self.count

    @property
    def covariance(self):
        """Sample covariance (denominator n - 1)."""
        centred_mean = self.sum / self.count
        scatter = self.cross - self.count * np.outer(centred_mean, centred_mean)
        return scatter / max(self.count - 1, 1)


@dataclass
class RxModel:
    """Background mean and whitening matrix: score(x) = |(x - mean) @ whitening|^2."""

    mean: np.ndarray
    whitening: np.ndarray
    rank: int
    n_features: int
    pixel_count: int
    scale: float = 1.0  # applied to x - mean before the whitening, so float32 holds any data range

    @property
    def regularised(self):
        return self.rank < self.n_features

    def score(self, pixels):
        """RX scores (float32) of an (n_pixels, n_features) array.

        Computed in float32 on (x - mean) * scale, which is about one per background standard
        deviation whatever the data's units; pixels further out than SCORE_CLIP deviations are
        clipped there and scores saturate at the float32 maximum, so a score is never inf or NaN.
        """
        centred = (np.asarray(pixels, dtype=np.float64) - self.mean) * self.scale
        np.clip(centred, -SCORE_CLIP, SCORE_CLIP, out=centred)
        projected = centred.astype(np.float32) @ self.whitening.astype(np.float32, copy=False)
        scores = np.einsum("ij,ij->i", projected, projected)
        return np.minimum(scores, np.float32(FLOAT32_MAX), out=scores)


def fit_rx(accumulator):
    """Build the RxModel from accumulated statistics."""
    if accumulator.count == 0:
        raise InputError(
            "No valid pixels for the background statistics: every pixel is nodata, NaN or masked. "
            "Check the input's nodata value, the band selection and the mask."
        )
    if accumulator.count < 2:
        raise InputError("Only one valid pixel: RX needs at least two valid background pixels.")
    covariance = accumulator.covariance
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
    return RxModel(accumulator.mean, whitening, int(keep.sum()), accumulator.n_features, accumulator.count,
                   float(1.0 / np.sqrt(largest)))


def rx_scores(pixels):
    """Global RX of an in-memory (n_pixels, n_features) array; a convenience for small data."""
    accumulator = CovarianceAccumulator(pixels.shape[1])
    accumulator.add(pixels)
    return fit_rx(accumulator).score(pixels)
