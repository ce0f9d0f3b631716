"""fers_core.runtime.blas: BLAS products through scipy's Fortran interface equal numpy's."""

import numpy as np
import pytest

from fers.fers_core.runtime.blas import add_gram, matmul


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_matmul_equals_numpy(dtype, layout):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 50)).astype(dtype)
    b = rng.standard_normal((50, 23)).astype(dtype)
    if layout == "F":
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    elif layout == "strided":
        a, b = rng.standard_normal((37, 100)).astype(dtype)[:, ::2], rng.standard_normal((100, 23)).astype(dtype)[::2]
    result = matmul(a, b)
    assert result.dtype == dtype and result.shape == (37, 23) and result.flags.c_contiguous
    np.testing.assert_allclose(result, a @ b, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_matmul_falls_back_for_other_types_and_empty_arrays():
    a, b = np.arange(6).reshape(2, 3), np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(matmul(a, b), a @ b)  # integers: numpy
    assert matmul(np.zeros((0, 3)), np.zeros((3, 4))).shape == (0, 4)


@pytest.mark.parametrize("order", ["C", "F"])
def test_add_gram_accumulates_rows_times_their_transpose(order):
    rng = np.random.default_rng(1)
    rows = np.asarray(rng.standard_normal((20, 300)), order=order)
    cross = np.eye(20)
    add_gram(cross, rows)
    add_gram(cross, rows[:, :7])
    expected = np.eye(20) + rows @ rows.T + rows[:, :7] @ rows[:, :7].T
    np.testing.assert_allclose(cross, expected, rtol=1e-12, atol=1e-12)
