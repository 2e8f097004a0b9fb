"""Each path of the Numba backend, forced and checked against the naive reference.

fastrnn._numba chooses a path by size (see its module docstring): the
register-blocked kernel on one thread, the same kernel with the batch split
across threads, and the units split (fastrnn._units, tested in
tests/test_units.py). The public tests reach every path only at sizes too large
for a quick suite, so here each one is forced at small sizes, including the
blocked product's remainders (rows not a multiple of 4, widths not a multiple
of 4 vectors) and the packing of the weights into panels.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("numba")

import naive  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn import _numba, _plan  # noqa: E402
from fastrnn.kernels import product as _gemm  # noqa: E402
from fastrnn.kernels import simd as _simd  # noqa: E402
from fastrnn.kernels import small  # noqa: E402

DTYPES = (np.float32, np.float64)


def _packed(w, u0, u1, dtype):
    # w[u0:u1].T packed into panels, as the kernels read it.
    lanes = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    vectors = -(-(u1 - u0) // lanes)
    packed = _gemm.aligned_zeros(vectors * w.shape[1], lanes, np.zeros(1, dtype))
    _gemm.pack_columns(w, u0, u1, packed)
    return packed, vectors * lanes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 8, 9, 14, 20])
@pytest.mark.parametrize("inner", [0, 1, 2, 3, 5, 8, 33, 129])
@pytest.mark.parametrize("vectors", [1, 2, 4, 5, 9])
def test_matmul_rows_matches_numpy(dtype, rows, inner, vectors):
    lanes = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    width = vectors * lanes
    rng = np.random.default_rng(rows * 1000 + inner * 10 + vectors)
    z = rng.standard_normal((rows, inner + 3)).astype(dtype)  # extra columns are ignored
    w = rng.standard_normal((width, inner)).astype(dtype)  # (units, inner), as w_hh
    packed, packed_width = _packed(w, 0, width, dtype)
    assert packed_width == width
    acc = _gemm.aligned_zeros(rows, width, np.zeros(1, dtype))
    acc[:] = np.nan  # every entry must be overwritten
    assert packed.ctypes.data % _gemm.ALIGN_BYTES == 0
    assert acc.ctypes.data % _gemm.ALIGN_BYTES == 0
    _gemm.matmul_rows(z, rows, inner, packed, acc)
    expected = z[:, :inner].astype(np.float64) @ w.T.astype(np.float64)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(acc, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_of_the_blocks_of_4_sum_alike_in_any_block(dtype):
    # Rows 0..n - n % 4 - 1 of n are summed one chain per lane, in blocks of
    # 4 rows (or of 6 on 16-register targets: 6, 6 + 4, 6 + 4 + 4 ...); the
    # rest in blocks of 2 and 1 (more chains). Whatever the blocks, the
    # one-chain rows give the same bits: the batch split and the step
    # kernels rely on it (tests/test_windows.py).
    lanes = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    width = 5 * lanes  # two panels of 2 vectors and one vector, or one of 4 and one
    rng = np.random.default_rng(7)
    z = rng.standard_normal((27, 200)).astype(dtype)
    w = rng.standard_normal((width, 200)).astype(dtype)
    packed, _ = _packed(w, 0, width, dtype)
    whole = _gemm.aligned_zeros(24, width, np.zeros(1, dtype))
    _gemm.matmul_rows(z, 24, 200, packed, whole)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(whole, z[:24].astype(np.float64) @ w.T.astype(np.float64),
                               rtol=tolerance, atol=tolerance)
    for rows in range(1, 28):
        acc = _gemm.aligned_zeros(rows, width, np.zeros(1, dtype))
        _gemm.matmul_rows(z, rows, 200, packed, acc)
        single = min(rows - rows % 4, 24)
        np.testing.assert_array_equal(acc[:single], whole[:single], err_msg=f"rows={rows}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("u0", "u1"), [(0, 5), (16, 83), (8, 8), (3, 300)])
@pytest.mark.parametrize("fortran", [False, True])
def test_pack_columns_of_a_slice_of_units(dtype, u0, u1, fortran):
    # A thread of the units split packs its own units u0..u1 of w (any
    # layout); lanes past u1 stay zero, so their products are zero.
    rng = np.random.default_rng(u0 * 7 + u1)
    w = rng.standard_normal((300, 37)).astype(dtype)
    w = np.asfortranarray(w) if fortran else w
    packed, width = _packed(w, u0, u1, dtype)
    z = rng.standard_normal((6, 37)).astype(dtype)
    acc = _gemm.aligned_zeros(6, width, np.zeros(1, dtype))
    _gemm.matmul_rows(z, 6, 37, packed, acc)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    expected = z.astype(np.float64) @ w[u0:u1].T.astype(np.float64)
    np.testing.assert_allclose(acc[:, :u1 - u0], expected, rtol=tolerance, atol=tolerance)
    assert not acc[:, u1 - u0:].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("units", [1, 5, 20, 37])
@pytest.mark.parametrize("extra", [1, 2, 3])
def test_packed_wider_than_the_units(dtype, units, extra):
    # A sparse w_hh's packed weights are as wide as its padded state (H + 1
    # columns): a width of more vectors than the units fill must be cut into
    # the same panels by the packing and by the product (float64, H = 20 on
    # AVX2 gave wrong sums for units 16-19 when it was not).
    lanes = _simd.VECTOR_BYTES // np.dtype(dtype).itemsize
    vectors = -(-units // lanes) + extra
    rng = np.random.default_rng(units * 10 + extra)
    w = rng.standard_normal((units, 9)).astype(dtype)
    packed = _gemm.aligned_zeros(vectors * 9, lanes, np.zeros(1, dtype))
    _gemm.pack_columns(w, 0, units, packed)
    z = rng.standard_normal((5, 9)).astype(dtype)
    acc = _gemm.aligned_zeros(5, vectors * lanes, np.zeros(1, dtype))
    _gemm.matmul_rows(z, 5, 9, packed, acc)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(acc[:, :units], z.astype(np.float64) @ w.T.astype(np.float64),
                               rtol=tolerance, atol=tolerance)
    assert not acc[:, units:].any()


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
    # The batch split on 3 threads (an uneven split), whatever the size and machine.
    monkeypatch.setattr(_numba, "choose", lambda **_: _plan.checked(_plan.BATCH_SPLIT, 3))
    problem = make_problem(31, batch=batch, steps=9, input_size=6, hidden_size=hidden,
                           dtype=dtype, batch_first=batch_first, h0=True)
    check_forward(problem, "numba", nonlinearity=nonlinearity)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("lengths", [None, [6, 0, 3, 6, 1, 5, 2, 6, 4, 4, 1]])
def test_threaded_split_large_hidden(monkeypatch, assert_close, make_problem, dtype,
                                     batch_first, lengths):
    # Hidden sizes of several panels and a ragged last one, the batch
    # split across threads that share one packed copy of the weights.
    monkeypatch.setattr(_numba, "choose", lambda **_: _plan.checked(_plan.BATCH_SPLIT, 3))
    problem = make_problem(32, batch=11, steps=6, input_size=5, hidden_size=259, dtype=dtype,
                           batch_first=batch_first, h0=True)
    output, h_n = fastrnn.forward(**problem, lengths=lengths, backend="numba")
    expected_output, expected_h_n = naive.rnn(**problem, lengths=lengths)
    assert_close(output, expected_output)
    assert_close(h_n, expected_h_n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_input_features(check_forward, make_problem, dtype):
    problem = make_problem(33, batch=2, steps=4, input_size=0, hidden_size=70, dtype=dtype)
    check_forward(problem, "numba")


@pytest.mark.parametrize("dtype", DTYPES)
def test_time_chunks(monkeypatch, check_forward, make_problem, dtype):
    # The input product is hoisted one chunk of steps at a time; a sequence
    # longer than several chunks (with a ragged last one) must not notice.
    steps = 3 * (_plan.CHUNK_ELEMENTS // 16) + 5
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize(("batch", "input_size", "hidden"),
                         [(1, 4, 8), (1, 0, 5), (1, 1, 1), (1, 7, 17), (1, 3, 32), (3, 5, 40),
                          (1, 6, 70)])
def test_small_kernel_matches_naive(assert_close, make_problem, dtype, batch_first,
                                    nonlinearity, batch, input_size, hidden):
    # _forward_small, called directly: one sample at a time, the joint
    # product of [x_t, h] (any B, any H compute correctly, though only one
    # sequence of H <= SMALL_MAX_HIDDEN takes it).
    problem = make_problem(40 + hidden, batch=batch, steps=11, input_size=input_size,
                           hidden_size=hidden, dtype=dtype, batch_first=batch_first, h0=True)
    x = problem["x"]
    out = np.full(x.shape[:2] + (hidden,), np.nan, dtype=dtype)
    h_n = np.full((batch, hidden), np.nan, dtype=dtype)
    small.forward_sequences(x, problem["w_ih"], problem["w_hh"], problem["b_ih"],
                          problem["b_hh"], problem["h0"], out, h_n, nonlinearity == "relu",
                          batch_first)
    expected_output, expected_h_n = naive.rnn(**problem, nonlinearity=nonlinearity)
    assert_close(out, expected_output)
    assert_close(h_n, expected_h_n)


@pytest.mark.parametrize("wrong", ["x", "w_hh rows", "w_hh columns", "b_ih", "b_hh", "hidden 0"])
def test_forward_small_refuses_shapes_that_disagree(make_problem, wrong):
    # The plain call checks types and dimensions in Python and leaves the
    # shapes to forward_small's compiled check: False, nothing read or
    # written.
    problem = make_problem(41, batch=1, steps=6, input_size=4, hidden_size=8,
                           dtype=np.float32)
    x, w_ih, w_hh = problem["x"], problem["w_ih"], problem["w_hh"]
    b_ih, b_hh = problem["b_ih"], problem["b_hh"]
    if wrong == "x":
        x = np.zeros((1, 6, 5), np.float32)
    elif wrong == "w_hh rows":
        w_hh = np.zeros((9, 8), np.float32)
    elif wrong == "w_hh columns":
        w_hh = np.zeros((8, 7), np.float32)
    elif wrong == "b_ih":
        b_ih = np.zeros(9, np.float32)
    elif wrong == "b_hh":
        b_hh = np.zeros(7, np.float32)
    else:
        w_ih = np.zeros((0, 4), np.float32)
    out = np.full((1, 6, 8), 7.0, np.float32)
    h_n = np.full((1, 8), 7.0, np.float32)
    assert _numba.forward_small(x, w_ih, w_hh, b_ih, b_hh, out, h_n, False) is False
    assert (out == 7.0).all() and (h_n == 7.0).all()
    with pytest.raises(ValueError, match="must have shape|at least 1"):
        fastrnn.forward(x, w_ih, w_hh, b_ih, b_hh)


def test_plain_textbook_call_takes_the_small_kernel(monkeypatch, assert_close, make_problem):
    from fastrnn import _backends

    calls = []
    original = _numba.forward_small
    assert _backends.get_small("numba") == (original, _plan.SMALL_MAX_HIDDEN,
                                            _numba.forward_small_call)

    def spy(*args):
        calls.append(args[0].shape)
        return original(*args)

    for name in ("auto", "numba"):  # as get_small finds it, for this test only
        monkeypatch.setitem(_backends._small, name, (spy, _plan.SMALL_MAX_HIDDEN, spy))
    problem = make_problem(42, batch=1, steps=10, input_size=4, hidden_size=8,
                           dtype=np.float32)
    expected_output, expected_h_n = naive.rnn(**problem)
    output, h_n = fastrnn.forward(**problem)
    assert_close(output, expected_output)
    assert_close(h_n, expected_h_n)
    unbatched = {**problem, "x": problem["x"][0]}
    output, h_n = fastrnn.forward(**unbatched)
    assert output.shape == (10, 8) and h_n.shape == (8,)
    assert_close(output, expected_output[0])
    fastrnn.forward(**problem, backend="numba")
    assert calls == [(1, 10, 4)] * 3
    # Anything else takes the general path: two sequences, a larger H, an
    # option.
    fastrnn.forward(**make_problem(43, batch=2, steps=3, input_size=4, hidden_size=8))
    fastrnn.forward(**make_problem(44, batch=1, steps=3, input_size=4, hidden_size=33))
    fastrnn.forward(**problem, nonlinearity="relu", leak=0.5)
    assert calls == [(1, 10, 4)] * 3


def _layouts(array):
    # The array C-ordered, Fortran-ordered, strided, reversed and read-only,
    # and whether each is C-contiguous as the kernels check it.
    read_only = array.copy()
    read_only.flags.writeable = False
    big = np.zeros(tuple(2 * n for n in array.shape), array.dtype)
    strided = big[::2, ::2, ::2]
    strided[...] = array
    return [(array, True), (np.asfortranarray(array), False), (strided, False),
            (np.ascontiguousarray(array[::-1])[::-1], False), (read_only, True)]


def _gathered(x, order, batch_first):
    from fastrnn.kernels import driver

    steps = x.shape[1] if batch_first else x.shape[0]
    batch = len(order)
    gathered = np.full((steps * batch, x.shape[2]), np.nan, x.dtype)
    row_start = np.zeros(steps, np.int64)
    rows = driver.gather(x, gathered, row_start, 0, steps, batch, order, None, 0, steps, False,
                         batch_first)
    assert rows == steps * batch
    np.testing.assert_array_equal(row_start, np.arange(steps) * batch)
    return gathered


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
def test_small_kernel_reads_every_layout_alike(assert_close, make_problem, dtype, batch_first):
    # The small kernel copies each step's input of a C-ordered x through a
    # C-typed view and any other through its strides: the same bits either
    # way, and the naive reference's values. (H = 40: blocks of four
    # vectors of units and single ones on every target.)
    from fastrnn.kernels import small

    problem = make_problem(45, batch=3, steps=7, input_size=5, hidden_size=40, dtype=dtype,
                           batch_first=batch_first, h0=True)
    expected_output, expected_h_n = naive.rnn(**problem, nonlinearity="tanh")
    results = []
    for given, _ in _layouts(np.ascontiguousarray(problem["x"])):
        out = np.full(given.shape[:2] + (40,), np.nan, dtype=dtype)
        h_n = np.full((3, 40), np.nan, dtype=dtype)
        small.forward_sequences(given, problem["w_ih"], problem["w_hh"], problem["b_ih"],
                                problem["b_hh"], problem["h0"], out, h_n, False, batch_first)
        assert_close(out, expected_output)
        assert_close(h_n, expected_h_n)
        results.append((out, h_n))
    for out, h_n in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(h_n, results[0][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
def test_gather_reads_every_layout_alike(dtype, batch_first):
    # driver.gather copies a C-ordered x through a C-typed view (vector
    # copies) and any other through its strides: both against NumPy's own
    # indexing, for every step of a batch taken in a given order.
    from fastrnn.kernels import jit

    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6, 5) if batch_first else (6, 4, 5)).astype(dtype)
    order = np.array([2, 0, 3, 1], np.int64)
    for given, contiguous in _layouts(x):
        assert jit.is_c_contiguous(given) == contiguous
        step_major = given.transpose(1, 0, 2) if batch_first else given
        expected = step_major[:, order].reshape(-1, 5)
        np.testing.assert_array_equal(_gathered(given, order, batch_first), expected)
    # A size-1 axis with a stride that is not C's: NumPy calls it
    # C-contiguous, the exact check does not (its any-layout copy serves).
    one = np.lib.stride_tricks.as_strided(x[:1], strides=(7 * x.itemsize,) + x.strides[1:])
    assert one.flags.c_contiguous and not jit.is_c_contiguous(one)
    batch = one.shape[0] if batch_first else one.shape[1]
    step_major = one.transpose(1, 0, 2) if batch_first else one
    np.testing.assert_array_equal(_gathered(one, np.arange(batch, dtype=np.int64), batch_first),
                                  step_major.reshape(-1, 5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("lengths", [None, [5, 0, 3, 7]])
@pytest.mark.parametrize("path", [(_plan.BLOCKED, 1), (_plan.BATCH_SPLIT, 2),
                                  (_plan.UNITS_SPLIT, 2)])
def test_half_of_a_wider_output_written_in_place(monkeypatch, assert_close, make_problem, dtype,
                                                 batch_first, lengths, path):
    # Each half of a (.., 2H) output (a bidirectional layer's: fastrnn.RNN
    # hands the whole output and the half's first column to Layer.run, and
    # the kernels write it in place; given the half as a strided view, or a
    # whole output that is not C-contiguous, they fill the half from a
    # C-contiguous buffer), on every path: that half holds
    # the naive reference (zeros past each length), the other half is
    # untouched.
    monkeypatch.setattr(_numba, "choose", lambda **_: _plan.checked(*path))
    hidden = 130
    problem = make_problem(33, batch=4, steps=7, input_size=5, hidden_size=hidden, dtype=dtype,
                           batch_first=batch_first, h0=True)
    expected_output, expected_h_n = naive.rnn(**problem, lengths=lengths)
    lead = (4, 7) if batch_first else (7, 4)
    layer = fastrnn.prepare(problem["w_ih"], problem["w_hh"], problem["b_ih"], problem["b_hh"],
                            threads=path[1])
    lens = None if lengths is None else np.array(lengths, np.int64)
    # The other half holds a value of its own each time (NaN would not
    # tell it from a reused buffer that held an earlier output's NaNs).
    mark = itertools.count(1000)
    for col in (0, hidden):
        for given in ("whole", "half", "whole, Fortran-ordered"):
            wide = np.full(lead + (2 * hidden,), np.nan, dtype)
            if given == "whole, Fortran-ordered":  # (a caller's out= of fastrnn.RNN)
                wide = np.asfortranarray(wide)
            other = wide[..., hidden - col:2 * hidden - col]
            other[...] = untouched = next(mark)
            h_n = np.full((4, hidden), np.nan, dtype)
            if given == "half":
                layer.run(problem["x"], problem["h0"], wide[..., col:col + hidden], h_n,
                          batch_first=batch_first, lengths=lens)
            else:
                layer.run(problem["x"], problem["h0"], wide, h_n, batch_first=batch_first,
                          lengths=lens, col=col)
            assert_close(wide[..., col:col + hidden], expected_output)
            assert_close(h_n, expected_h_n)
            assert (other == untouched).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [1, 7, 4095, 4096, 9001])
@pytest.mark.parametrize("leaky", [False, True])
def test_the_shape_row_gives_back_h_and_the_leak(dtype, hidden, leaky):
    # The step kernels read H and the leak's flag from the packed layer's
    # last row (kernels.cells.layer_shape), stored in two parts: exact at
    # H = 2^12 and past it, in float32 too. (A sparse w_hh: no H rows packed.)
    from fastrnn.kernels import cells

    w_ih = np.ones((hidden, 3), dtype)
    empty = np.empty(0, dtype)
    leak = np.full(hidden, 0.5, dtype) if leaky else empty
    packed = cells.pack_layer_call(w_ih, None, empty, empty, leak, 0, hidden, empty)
    assert cells.layer_shape(packed) == (hidden, leaky)
