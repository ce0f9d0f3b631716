"""Matrix products through BLAS's Fortran interface (scipy.linalg.blas), not numpy's CBLAS calls.

QGIS's executables (qgis, qgis_process) link GSL, whose reference CBLAS (libgslcblas) exports
the `cblas_*` symbols. Loaded first and globally, it captures numpy's `cblas_dgemm`/`cblas_sgemm`,
so inside QGIS every `a @ b` runs single-threaded reference loops (the README gives the cost for global
RX through qgis_process). scipy's wrappers call the Fortran `dgemm_`/`sgemm_` symbols, which only the
real BLAS (OpenBLAS on Debian) provides. Without scipy, numpy's product is the fallback.
"""

import numpy as np

try:
    from scipy.linalg import blas as _blas
except ImportError:  # pragma: no cover - scipy ships with QGIS
    _blas = None

_GEMM = {np.dtype(np.float32): "sgemm", np.dtype(np.float64): "dgemm"}

strmm = _blas.strmm if _blas is not None else None
"""BLAS strmm (float32 triangular product, in place), or None without scipy."""


def matmul(a, b):
    """a @ b for 2-D float32/float64 arrays of one type, as a C-ordered array, computed by BLAS gemm.

    Row-major C = A B is column-major C^T = B^T A^T, and the transposes of C-ordered arrays are
    Fortran-ordered views: no copies for C-contiguous inputs.
    """
    a, b = np.asarray(a), np.asarray(b)
    gemm = _GEMM.get(a.dtype) if _blas is not None and a.dtype == b.dtype and a.ndim == b.ndim == 2 else None
    if gemm is None or 0 in a.shape or 0 in b.shape:
        return a @ b
    return getattr(_blas, gemm)(1.0, b.T, a.T).T


def add_gram(cross, rows):
    """cross += rows @ rows.T (float64) for a (n_features, n_pixels) block of rows, in place."""
    if _blas is None or rows.dtype != np.float64 or 0 in rows.shape:
        cross += rows @ rows.T
        return cross
    if rows.flags.f_contiguous:  # a Fortran-ordered block is BLAS's own layout: rows rows^T directly
        cross += _blas.dgemm(1.0, rows, rows, trans_b=1)
    else:  # rows.T of a C-ordered block is a Fortran-ordered view: rows rows^T = (rows.T)^T (rows.T)
        cross += _blas.dgemm(1.0, rows.T, rows.T, trans_a=1)
    return cross
