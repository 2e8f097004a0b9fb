"""Each path of the Numba backend, forced and checked against the naive reference.

fastrnn._numba chooses a path by size (see its module docstring): the
register-blocked kernel on one thread, the same kernel with the batch split
across threads, and BLAS products from BLAS_MIN_HIDDEN on. The public tests
reach every path only at sizes too large for a quick suite, so here each one
is forced at small sizes, including the blocked product's remainders (rows not
a multiple of 4, widths not a multiple of 4 vectors).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from fastrnn import _gemm, _numba  # noqa: E402

DTYPES = (np.float32, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("inner", [0, 1, 2, 3, 5, 8, 33])
@pytest.mark.parametrize("vectors", [1, 2, 4, 5, 9])
def test_matmul_rows_matches_numpy(dtype, rows, inner, vectors):
    lanes = _gemm.ALIGN_BYTES // np.dtype(dtype).itemsize
    width = vectors * lanes
    rng = np.random.default_rng(rows * 1000 + inner * 10 + vectors)
    z = rng.standard_normal((rows, inner + 3)).astype(dtype)  # extra columns are ignored
    like = np.zeros(1, dtype)
    w = _gemm.aligned_zeros(inner, width, like)
    w[:] = rng.standard_normal((inner, width))
    acc = _gemm.aligned_zeros(rows, width, like)
    acc[:] = np.nan  # every entry must be overwritten
    assert w.ctypes.data % _gemm.ALIGN_BYTES == 0 and acc.ctypes.data % _gemm.ALIGN_BYTES == 0
    _gemm.matmul_rows(z, rows, inner, w, acc)
    expected = z[:, :inner].astype(np.float64) @ w.astype(np.float64)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(acc, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 7])
def test_aligned_zeros(dtype, rows):
    array = _gemm.aligned_zeros(rows, 16, np.zeros(1, dtype))
    assert array.shape == (rows, 16) and array.dtype == dtype
    assert array.ctypes.data % _gemm.ALIGN_BYTES == 0
    assert array.flags.c_contiguous and not array.any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize(("batch", "hidden"), [(5, 80), (3, 17), (9, 1)])
def test_threaded_split(monkeypatch, check_forward, make_problem, dtype, batch_first,
                        nonlinearity, batch, hidden):
    monkeypatch.setattr(_numba, "PARALLEL_MIN_FMAS", 0)
    monkeypatch.setattr(_numba, "_THREADS", 3)  # an uneven split, whatever the machine
    problem = make_problem(31, batch=batch, steps=9, input_size=6, hidden_size=hidden,
                           dtype=dtype, batch_first=batch_first, h0=True)
    check_forward(problem, "numba", nonlinearity=nonlinearity)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("h0", [True, False])
def test_blas_path(check_forward, make_problem, dtype, batch_first, nonlinearity, h0):
    hidden = _numba.BLAS_MIN_HIDDEN + 3
    problem = make_problem(32, batch=3, steps=6, input_size=5, hidden_size=hidden, dtype=dtype,
                           batch_first=batch_first, h0=h0)
    check_forward(problem, "numba", nonlinearity=nonlinearity)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blas_path_no_input_features(check_forward, make_problem, dtype):
    problem = make_problem(33, batch=2, steps=4, input_size=0,
                           hidden_size=_numba.BLAS_MIN_HIDDEN, dtype=dtype)
    check_forward(problem, "numba")


@pytest.mark.parametrize("dtype", DTYPES)
def test_time_chunks(monkeypatch, check_forward, make_problem, dtype):
    # The input product is hoisted one chunk of steps at a time; a sequence
    # longer than several chunks (with a ragged last one) must not notice.
    steps = 3 * (_numba.CHUNK_ELEMENTS // 16) + 5
    for batch_first in (True, False):
        problem = make_problem(34, batch=1, steps=steps, input_size=2, hidden_size=16,
                               dtype=dtype, batch_first=batch_first)
        check_forward(problem, "numba")


@pytest.mark.parametrize("setting", ["0", "-2", "two", "1.5"])
def test_bad_thread_setting_is_named(setting):
    with pytest.raises(ValueError, match="FASTRNN_NUM_THREADS must be a whole number"):
        _numba._thread_count(setting)


@pytest.mark.parametrize(("setting", "expected"), [("1", 1), ("3", 3)])
def test_thread_setting(setting, expected):
    assert _numba._thread_count(setting) == expected
    assert _numba._thread_count(None) == _numba._thread_count("") >= 1
