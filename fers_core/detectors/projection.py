"""Projection onto the leading principal components of the global covariance (COMPONENTS).

Local detectors cost about bands^3 per pixel; projecting the cube onto the k leading principal
components of the whole image's covariance first makes that k^3. The projection is optional and
off by default: it drops the low-variance directions in which small targets can stand out.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def resolve_components(value, bands):
    """None (no projection), ("count", k) or ("share", fraction) for a COMPONENTS value; InputError if bad.

    0 or None: off; a number in (0, 1): the fewest components that keep that share of the
    variance; a whole number from 1 to `bands`: that many components.
    """
    if value is None or value == 0:
        return None
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise InputError(f"COMPONENTS must be 0 (off), a share of variance between 0 and 1, or a count of "
                         f"components (got {value:g}).")
    if value < 1:
        return ("share", value)
    if value != int(value):
        raise InputError(f"COMPONENTS {value:g} is neither a share of variance (below 1) nor a whole number of "
                         "components: use e.g. 0.999 or 30.")
    if value > bands:
        raise InputError(f"COMPONENTS asks for {int(value)} principal components but only {bands} bands are "
                         f"selected: use at most {bands}, or a share of variance such as 0.999.")
    return ("count", int(value))


@dataclass
class PrincipalProjection:
    """x -> V_k^T (x - mean): the k leading eigenvectors of the global covariance."""

    mean: np.ndarray
    vectors: np.ndarray  # (bands, k)
    share: float  # of the total variance the k components keep

    @property
    def components(self):
        return self.vectors.shape[1]

    @classmethod
    def fit(cls, mean, covariance, choice):
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, eigenvectors = np.clip(eigenvalues[order], 0, None), eigenvectors[:, order]
        total = eigenvalues.sum()
        if not total > 0:
            raise InputError("The background has no variance: all valid pixels are identical, so no pixel can "
                             "stand out.")
        kept = np.cumsum(eigenvalues) / total
        kind, amount = choice
        count = amount if kind == "count" else int(np.searchsorted(kept, amount) + 1)
        count = min(count, len(eigenvalues))
        return cls(np.asarray(mean, np.float64), eigenvectors[:, :count].copy(), float(kept[count - 1]))

    def apply(self, cube):
        """(bands, rows, cols) -> (k, rows, cols) float64."""
        bands = cube.shape[0]
        flat = np.asarray(cube, np.float64).reshape(bands, -1) - self.mean[:, None]
        return (self.vectors.T @ flat).reshape((self.components,) + cube.shape[1:])

    def describe(self):
        return f"{self.components} principal component(s), {self.share:.4%} of the variance"
