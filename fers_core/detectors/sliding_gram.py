"""The ring statistics of local RX, slid along a row, and its quadratic form from one factorisation.

See local_rx for the method; kept apart so that the per-pixel arithmetic reads on its own.
"""

import numpy as np
from scipy.linalg.blas import dsyrk as syrk
from scipy.linalg.lapack import dpotrf as potrf

RESTART_COLUMNS = 64
"""The ring Gram slides along a row this many pixels before it is summed afresh (bounds rounding drift)."""
_BORDER = 1e300  # the bordered matrix's last diagonal: any value above z^T G^-1 z keeps it positive definite


class SlidingGram:
    """The Gram matrix G = sum of z z^T, z = (x, 1), over the ring of one pixel after another along a row.

    From G come the ring's count n = G[b, b], sum s = G[b, :b] and scatter S = G[:b, :b]. Moving one
    pixel to the right changes the ring by at most one column of the outer window (in and out) and one
    of the inner window, so G is updated by four symmetric rank-k products (BLAS dsyrk, k = the window
    height) instead of summed afresh; only the lower triangle is kept.
    """

    def __init__(self, columns, outer_rows, inner_rows):
        self.columns = columns  # (block cols, block rows, bands + 1): z of usable pixels, 0 elsewhere
        self.outer_rows, self.inner_rows = outer_rows, inner_rows
        self.gram = None
        self.window = None

    def _add(self, alpha, cols, rows):
        for col in range(*cols):
            piece = self.columns[col, rows[0]:rows[1]]
            if piece.shape[0]:
                self.gram = syrk(alpha, piece.T, beta=1.0, c=self.gram, lower=1, overwrite_c=1)

    def _fresh(self, outer_cols, inner_cols):
        size = self.columns.shape[2]
        self.gram = np.zeros((size, size), order="F")
        (r0, r1), (i0, i1) = self.outer_rows, self.inner_rows
        outer = self.columns[outer_cols[0]:outer_cols[1], r0:r1].reshape(-1, size)
        inner = self.columns[inner_cols[0]:inner_cols[1], i0:i1].reshape(-1, size)
        self.gram = syrk(1.0, outer.T, beta=0.0, c=self.gram, lower=1, overwrite_c=1)
        if inner.shape[0]:
            self.gram = syrk(-1.0, inner.T, beta=1.0, c=self.gram, lower=1, overwrite_c=1)

    def move(self, outer_cols, inner_cols, fresh):
        """The ring's Gram for windows outer_cols and inner_cols ([start, stop) column pairs)."""
        if fresh or self.window is None:
            self._fresh(outer_cols, inner_cols)
        else:
            (po0, po1), (pi0, pi1) = self.window
            self._add(1.0, (po1, outer_cols[1]), self.outer_rows)  # outer window's new column
            self._add(-1.0, (po0, outer_cols[0]), self.outer_rows)  # and the one it left
            self._add(-1.0, (pi1, inner_cols[1]), self.inner_rows)  # inner window's new column leaves the ring
            self._add(1.0, (pi0, inner_cols[0]), self.inner_rows)  # the column the inner window left rejoins it
        self.window = (outer_cols, inner_cols)
        return self.gram


FLAT_RING = 1e-10
"""Variance per band below which a ring has none, for values scaled to |x| <= 1 (local_rx._score_block scales its
block so): the sliding float64 sums of a constant ring leave about 1e-14, which a ridge scaled to that 'variance'
turned into scores of 1e17."""


def quadratic_form(gram, z, bands, ridge_factor, border):
    """(n - 1) d^T (C + ridge)^-1 d from the ring's Gram matrix and the pixel's z = (x, 1), or None.

    With P = S - s s^T / n = (n - 1) C, block elimination of the Gram matrix gives
    z^T G^-1 z = d^T P^-1 d + 1/n (d = x - s / n), and one Cholesky factorisation of the bordered
    matrix [[G, z], [z^T, big]] yields L^-1 z as its last row: the factor and the solve in one
    LAPACK call. The ridge (ridge_factor * trace(C) / bands on C's diagonal) goes on S's diagonal.
    Returns None when the ring has no usable background (fewer than 2 pixels, or no variance).
    """
    n = gram[bands, bands]
    if n < 1.5:  # counts are exact small integers
        return None
    total = gram[bands, :bands]
    trace = (np.trace(gram[:bands, :bands]) - total @ total / n) / (n - 1)
    if not trace > FLAT_RING * bands:  # no variance beyond the rounding of the sliding sums: a flat ring
        return None
    size = bands + 1
    border[:size, :size] = gram
    diagonal = border.reshape(-1, order="F")[:size * (size + 2):size + 2]  # a view of the first b + 1 diagonal
    diagonal[:bands] += ridge_factor * trace / bands * (n - 1)
    border[size, :size] = z
    border[size, size] = _BORDER
    factor, info = potrf(border, lower=1, clean=0, overwrite_a=1)
    if info == 0:
        solved = factor[size, :size]
        return max(0.0, (n - 1) * (solved @ solved - 1.0 / n))
    # not positive definite even with the ridge (rounding in a nearly degenerate ring): a least-squares solve
    scatter = np.tril(gram[:bands, :bands]) + np.tril(gram[:bands, :bands], -1).T - np.outer(total, total) / n
    covariance = scatter / (n - 1) + np.eye(bands) * (ridge_factor * trace / bands)
    difference = z[:bands] - total / n
    return max(0.0, float(difference @ np.linalg.lstsq(covariance, difference, rcond=None)[0]))
