"""The options beyond the plain forward: lengths, leak, sparse w_hh,
return_sequences, threads and the reverse direction (through run_layer).

Every case is checked against tests/naive.py's per-sample, per-step loop.
Hidden size 4 runs the Numba backend's blocked kernel, 300 several panels of it;
(16, 120, 16, 64) is enough work for the batch to be split across threads.
"""

from __future__ import annotations

import naive
import numpy as np
import pytest

import fastrnn
from fastrnn._api import run_layer

scipy_sparse = pytest.importorskip("scipy.sparse")

DTYPES = (np.float32, np.float64)
# (batch, steps, input_size, hidden_size): blocked kernel, wide, threads
SHAPES = [(5, 7, 3, 4), (3, 6, 5, 300), (16, 120, 16, 64)]
SHAPE_IDS = ["blocked", "wide", "threaded"]


def _lengths(batch: int, steps: int, seed: int = 0) -> np.ndarray:
    # Random lengths that include 0 and T (when the batch has room for both).
    lengths = np.random.default_rng(seed).integers(0, steps + 1, batch)
    lengths[0] = steps
    if batch > 1:
        lengths[1] = 0
    return lengths


def _problem(make_problem, shape, dtype, **options):
    batch, steps, input_size, hidden = shape
    return make_problem(11, batch=batch, steps=steps, input_size=input_size,
                        hidden_size=hidden, dtype=dtype, **options)


def _check(problem, backend, assert_close, **options):
    nonlinearity = options.pop("nonlinearity", "tanh")
    output, h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity, backend=backend,
                                  **options)
    expected_output, expected_h_n = naive.rnn(**problem, nonlinearity=nonlinearity,
                                              lengths=options.get("lengths"),
                                              leak=options.get("leak"))
    assert output.dtype == problem["x"].dtype and output.shape == expected_output.shape
    assert h_n.shape == expected_h_n.shape
    assert_close(output, expected_output)
    assert_close(h_n, expected_h_n)
    return output, h_n


# lengths ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_h0", [False, True])
def test_lengths(backend, make_problem, assert_close, shape, dtype, batch_first, with_h0):
    problem = _problem(make_problem, shape, dtype, batch_first=batch_first, h0=with_h0)
    lengths = _lengths(shape[0], shape[1])
    output, h_n = _check(problem, backend, assert_close, lengths=lengths)
    seq = output if batch_first else output.transpose(1, 0, 2)
    for b, length in enumerate(lengths):
        assert not seq[b, length:].any()  # zero past each sequence's end
    if with_h0:
        np.testing.assert_array_equal(h_n[1], problem["h0"][1])  # length 0 keeps h0
    else:
        assert not h_n[1].any()


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_lengths_relu_and_leak(backend, make_problem, assert_close, nonlinearity):
    problem = _problem(make_problem, SHAPES[0], np.float64, h0=True)
    _check(problem, backend, assert_close, lengths=_lengths(5, 7, seed=3), leak=0.4,
           nonlinearity=nonlinearity)


def test_lengths_each_sequence_alone(backend, make_problem):
    # Unsorted lengths: each sequence's result is what it gives run alone
    # on its own valid steps (no sorting asked of the caller).
    problem = _problem(make_problem, SHAPES[0], np.float64, h0=True)
    lengths = np.array([2, 7, 0, 5, 3])
    output, h_n = fastrnn.forward(**problem, lengths=lengths, backend=backend)
    for b, length in enumerate(lengths):
        alone_out, alone_h = fastrnn.forward(
            problem["x"][b, :length], problem["w_ih"], problem["w_hh"], problem["b_ih"],
            problem["b_hh"], problem["h0"][b], backend=backend)
        np.testing.assert_allclose(output[b, :length], alone_out, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(h_n[b], alone_h, rtol=1e-13, atol=1e-13)


def test_full_lengths_equal_no_lengths(backend, make_problem):
    problem = _problem(make_problem, SHAPES[2], np.float32)
    plain = fastrnn.forward(**problem, backend=backend)
    full = fastrnn.forward(**problem, lengths=np.full(16, 120), backend=backend)
    for a, b in zip(plain, full, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("lengths", [3, np.int32(3), [3], np.array([3], np.uint8)],
                         ids=["int", "numpy-int", "list", "array"])
def test_lengths_unbatched(backend, make_problem, assert_close, lengths):
    problem = make_problem(2, steps=6, unbatched=True, h0=True)
    output, h_n = fastrnn.forward(**problem, lengths=lengths, backend=backend)
    expected_output, expected_h_n = naive.rnn(**problem, lengths=[3])
    assert output.shape == (6, 4) and h_n.shape == (4,)
    assert_close(output, expected_output)
    assert_close(h_n, expected_h_n)


def test_lengths_not_modified(backend, make_problem):
    problem = _problem(make_problem, SHAPES[0], np.float64)
    lengths = np.array([7, 1, 4, 0, 2], dtype=np.int32)
    before = lengths.copy()
    fastrnn.forward(**problem, lengths=lengths, backend=backend)
    np.testing.assert_array_equal(lengths, before)
    assert lengths.dtype == np.int32


@pytest.mark.parametrize(
    ("lengths", "error", "match"),
    [
        (np.array([1.0, 2.0]), TypeError, r"lengths must be an integer array, got dtype float64"),
        (np.array([True, False]), TypeError, r"lengths must be an integer array, got dtype bool"),
        (np.array([1, 2, 3]), ValueError, r"lengths must have shape \(2,\).*got \(3,\)"),
        (np.array([[1, 2]]), ValueError, r"lengths must have shape \(2,\).*got \(1, 2\)"),
        (np.array([1, -1]), ValueError, r"lengths must lie in \[0, 5\].*lengths\[1\] = -1"),
        (np.array([6, 1]), ValueError, r"lengths must lie in \[0, 5\].*lengths\[0\] = 6"),
        ("abc", TypeError, r"lengths must be an integer array"),
    ],
    ids=["float", "bool", "too-long", "2-d", "negative", "beyond-T", "string"],
)
def test_lengths_rejected(backend, make_problem, lengths, error, match):
    problem = make_problem(0)  # B = 2, T = 5
    with pytest.raises(error, match=match):
        fastrnn.forward(**problem, lengths=lengths, backend=backend)


# leak ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("leak_kind", ["scalar", "per-unit"])
def test_leak(backend, make_problem, assert_close, shape, dtype, leak_kind):
    problem = _problem(make_problem, shape, dtype, h0=True)
    hidden = shape[3]
    leak = 0.3 if leak_kind == "scalar" else np.linspace(0.05, 1.0, hidden)
    _check(problem, backend, assert_close, leak=leak)


def test_leak_one_is_the_plain_update(backend, make_problem):
    problem = _problem(make_problem, SHAPES[0], np.float32, h0=True)
    plain = fastrnn.forward(**problem, backend=backend)
    for leak in (1.0, 1, np.ones(4)):
        leaky = fastrnn.forward(**problem, leak=leak, backend=backend)
        for a, b in zip(plain, leaky, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("leak", "error", "match"),
    [
        (0.0, ValueError, r"leak must lie in \(0, 1\], got 0.0"),
        (1.5, ValueError, r"leak must lie in \(0, 1\], got 1.5"),
        (float("nan"), ValueError, r"leak must lie in \(0, 1\], got nan"),
        (np.array([0.5, 0.5, -0.1, 0.5]), ValueError, r"leak must lie in \(0, 1\], got -0.1"),
        (np.full(3, 0.5), ValueError, r"leak must be a float or have shape \(4,\).*got \(3,\)"),
        ("0.5", TypeError, r"leak must be a float or an array of floats, got dtype <U3"),
        (0.5 + 0j, TypeError, r"leak must be a float or an array of floats, got dtype complex"),
    ],
    ids=["zero", "above-one", "nan", "negative-unit", "wrong-shape", "string", "complex"],
)
def test_leak_rejected(backend, make_problem, leak, error, match):
    problem = make_problem(0)  # H = 4
    with pytest.raises(error, match=match):
        fastrnn.forward(**problem, leak=leak, backend=backend)


@pytest.mark.parametrize("leak", [1e-50, np.array([0.5, 0.5, 1e-46, 0.5])],
                         ids=["scalar", "per-unit"])
def test_leak_underflowing_in_float32_rejected(backend, make_problem, leak):
    # In (0, 1] as given (float64), 0 once cast to float32: the state would
    # stay h0, silently.
    problem = make_problem(0, dtype=np.float32, h0=True)  # H = 4
    with pytest.raises(ValueError, match=r"leak must lie in \(0, 1\] in the computation's "
                                         r"dtype, but 1e-(50|46) underflows to 0 in float32"):
        fastrnn.forward(**problem, leak=leak, backend=backend)


def test_tiny_leak_in_float64(backend, make_problem, assert_close):
    # The same leak is representable in float64: accepted, and computed.
    problem = make_problem(0, h0=True)
    _check(problem, backend, assert_close, leak=1e-50)


# sparse w_hh -----------------------------------------------------------------

def _sparse(hidden: int, dtype, fmt: str, seed: int = 5, density: float = 0.2):
    matrix = scipy_sparse.random(hidden, hidden, density=density, random_state=seed,
                                 format="coo", dtype=np.float64)
    matrix = matrix * (1.5 / np.sqrt(density * hidden))
    return matrix.astype(dtype).asformat(fmt)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [4, 300])
def test_sparse_w_hh(backend, make_problem, assert_close, fmt, dtype, hidden):
    problem = make_problem(8, batch=3, steps=9, input_size=2, hidden_size=hidden, dtype=dtype,
                           h0=True)
    problem["w_hh"] = _sparse(hidden, dtype, fmt)
    _check(problem, backend, assert_close, leak=0.3)


def test_sparse_array_and_batch_split(backend, make_problem, assert_close):
    # scipy.sparse arrays as well as matrices; enough work for threads.
    problem = _problem(make_problem, SHAPES[2], np.float64, h0=True)
    problem["w_hh"] = scipy_sparse.csr_array(_sparse(64, np.float64, "csr", density=0.5))
    _check(problem, backend, assert_close, lengths=_lengths(16, 120))


def test_sparse_duplicates_and_explicit_zeros(backend, make_problem, assert_close):
    # COO entries at the same place are summed, as SciPy does; explicit
    # zeros change nothing. The caller's matrix is left as it was.
    problem = make_problem(4, hidden_size=3)
    rows, cols = np.array([0, 0, 1, 2, 2]), np.array([1, 1, 2, 0, 2])
    values = np.array([0.5, -0.2, 0.7, 0.0, 0.4])
    coo = scipy_sparse.coo_matrix((values, (rows, cols)), shape=(3, 3))
    problem["w_hh"] = coo
    _check(problem, backend, assert_close)
    np.testing.assert_array_equal(coo.data, values)
    np.testing.assert_array_equal(coo.row, rows)


def test_sparse_empty(backend, make_problem, assert_close):
    problem = make_problem(4)
    problem["w_hh"] = scipy_sparse.csr_matrix((4, 4))
    _check(problem, backend, assert_close)


@pytest.mark.parametrize(
    ("w_hh", "error", "match"),
    [
        (scipy_sparse.csr_matrix(np.eye(4, dtype=np.float32)), TypeError,
         r"all floating arguments must share one dtype.*w_hh=float32"),
        (scipy_sparse.csr_matrix(np.eye(4, dtype=np.int64)), TypeError,
         r"w_hh must have dtype float32 or float64, got sparse int64"),
        (scipy_sparse.csr_matrix(np.eye(5)), ValueError, r"w_hh must have shape \(4, 4\)"),
    ],
    ids=["mixed-dtype", "integer", "wrong-shape"],
)
def test_sparse_rejected(backend, make_problem, w_hh, error, match):
    problem = make_problem(0)  # float64, H = 4
    problem["w_hh"] = w_hh
    with pytest.raises(error, match=match):
        fastrnn.forward(**problem, backend=backend)


# return_sequences=False ------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_return_sequences_false(backend, make_problem, assert_close, shape, dtype):
    problem = _problem(make_problem, shape, dtype, h0=True)
    lengths = _lengths(shape[0], shape[1])
    h_n = fastrnn.forward(**problem, lengths=lengths, leak=0.5, return_sequences=False,
                          backend=backend)
    assert isinstance(h_n, np.ndarray) and h_n.shape == (shape[0], shape[3])
    assert_close(h_n, naive.rnn(**problem, lengths=lengths, leak=0.5)[1])
    # The same arithmetic as the full call, without the sequence output.
    _, full_h_n = fastrnn.forward(**problem, lengths=lengths, leak=0.5, backend=backend)
    np.testing.assert_array_equal(h_n, full_h_n)


def test_return_sequences_false_unbatched(backend, make_problem, assert_close):
    problem = make_problem(1, steps=8, unbatched=True)
    h_n = fastrnn.forward(**problem, return_sequences=False, backend=backend)
    assert h_n.shape == (4,)
    assert_close(h_n, naive.rnn(**problem)[1])


def test_return_sequences_rejected(backend, make_problem):
    problem = make_problem(0)
    with pytest.raises(ValueError, match=r"out must be None when return_sequences=False"):
        fastrnn.forward(**problem, return_sequences=False, out=np.empty((2, 5, 4)),
                        backend=backend)
    with pytest.raises(TypeError, match=r"return_sequences must be a bool, got str"):
        fastrnn.forward(**problem, return_sequences="no", backend=backend)


# threads ---------------------------------------------------------------------

@pytest.mark.parametrize("with_lengths", [False, True])
def test_threads_do_not_change_results(backend, make_problem, assert_close, with_lengths):
    # Each thread count gives the reference's numbers. Not bitwise the same
    # numbers: the blocked kernel sums a row's products in another order
    # when the row falls outside a block of 4 rows, and the split moves rows.
    problem = _problem(make_problem, SHAPES[2], np.float32, h0=True)
    lengths = _lengths(16, 120) if with_lengths else None
    expected_output, expected_h_n = naive.rnn(**problem, lengths=lengths)
    for threads in (1, 2, 3, None):
        output, h_n = fastrnn.forward(**problem, lengths=lengths, threads=threads,
                                      backend=backend)
        assert_close(output, expected_output)
        assert_close(h_n, expected_h_n)
        again = fastrnn.forward(**problem, lengths=lengths, threads=threads, backend=backend)
        np.testing.assert_array_equal(again[0], output)  # the same call: the same bits
        np.testing.assert_array_equal(again[1], h_n)


@pytest.mark.parametrize(
    ("threads", "error", "match"),
    [
        (0, ValueError, r"threads must be None or an int >= 1, got 0"),
        (-2, ValueError, r"threads must be None or an int >= 1, got -2"),
        (1.5, TypeError, r"threads must be None or an int >= 1, got float"),
        (True, TypeError, r"threads must be None or an int >= 1, got bool"),
    ],
    ids=["zero", "negative", "float", "bool"],
)
def test_threads_rejected(backend, make_problem, threads, error, match):
    with pytest.raises(error, match=match):
        fastrnn.forward(**make_problem(0), threads=threads, backend=backend)


# reverse direction (fastrnn.RNN's building block) ----------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_run_layer_reverse_into_half_of_a_buffer(backend, make_problem, assert_close, shape,
                                                  batch_first, with_lengths):
    batch, steps, _, hidden = shape
    problem = _problem(make_problem, shape, np.float64, batch_first=batch_first, h0=True)
    lengths = _lengths(batch, steps) if with_lengths else None
    # Each direction of a bidirectional layer writes its half of one buffer.
    buffer = np.full(problem["x"].shape[:2] + (2 * hidden,), 7.0)
    h_n = np.empty((batch, hidden))
    run_layer(problem["x"], problem["w_ih"], problem["w_hh"], problem["b_ih"], problem["b_hh"],
              problem["h0"], buffer[..., hidden:], h_n, relu=False, batch_first=batch_first,
              lengths=lengths, reverse=True, backend=backend)
    expected_output, expected_h_n = naive.rnn(**problem, lengths=lengths, reverse=True)
    assert_close(buffer[..., hidden:], expected_output)
    assert_close(h_n, expected_h_n)
    assert (buffer[..., :hidden] == 7.0).all()  # the other half untouched
