"""fastrnn.forward against the naive reference (tests/naive.py), backend by backend."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import _backends

DTYPES = [np.float32, np.float64]


def _copies(problem: dict) -> dict:
    return {name: value.copy() for name, value in problem.items() if isinstance(value, np.ndarray)}


def _assert_unchanged(problem: dict, copies: dict) -> None:
    for name, copy in copies.items():
        array = problem[name]
        assert array.dtype == copy.dtype and array.shape == copy.shape, name
        assert array.tobytes() == copy.tobytes(), f"{name} was modified"


def _last_step(output: np.ndarray, batch_first: bool, unbatched: bool) -> np.ndarray:
    if unbatched or not batch_first:
        return output[-1]
    return output[:, -1]


# --- the textbook example ----------------------------------------------------


def test_textbook_example(backend):
    # The textbook's loop: one sequence, uniform [0, 1) data and weights, one bias b.
    rng = np.random.default_rng(0)
    timesteps, input_size, hidden_size = 10, 4, 8
    inputs = rng.random((timesteps, input_size))
    w_x = rng.random((hidden_size, input_size))
    w_h = rng.random((hidden_size, hidden_size))
    b = rng.random(hidden_size)

    states, h_n = fastrnn.forward(inputs, w_x, w_h, b, backend=backend)

    # The loop itself, verbatim in spirit.
    h = np.zeros(hidden_size)
    expected = []
    for input_t in inputs:
        output_t = np.tanh(np.dot(w_x, input_t) + np.dot(w_h, h) + b)
        expected.append(output_t)
        h = output_t
    expected = np.stack(expected)

    assert states.shape == (timesteps, hidden_size) and h_n.shape == (hidden_size,)
    np.testing.assert_allclose(states, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(states, naive.rnn(inputs, w_x, w_h, b)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(h_n, states[-1])


# --- shapes at the edges ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("hidden_size", [4, 300])  # 300: several panels, a ragged last one
def test_zero_steps(backend, check_forward, make_problem, dtype, with_h0, batch_first,
                    hidden_size):
    problem = make_problem(1, batch=3, steps=0, hidden_size=hidden_size, dtype=dtype,
                           batch_first=batch_first, h0=with_h0)
    output, h_n = check_forward(problem, backend)
    assert output.shape == ((3, 0, hidden_size) if batch_first else (0, 3, hidden_size))
    expected_h_n = problem["h0"] if with_h0 else np.zeros((3, hidden_size), dtype)
    np.testing.assert_array_equal(h_n, expected_h_n)
    if with_h0:
        assert not np.shares_memory(h_n, problem["h0"])


@pytest.mark.parametrize("with_h0", [False, True])
def test_zero_steps_unbatched(backend, check_forward, make_problem, with_h0):
    problem = make_problem(2, steps=0, unbatched=True, h0=with_h0)
    output, h_n = check_forward(problem, backend)
    assert output.shape == (0, 4) and h_n.shape == (4,)
    np.testing.assert_array_equal(h_n, problem["h0"] if with_h0 else np.zeros(4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("hidden_size", [4, 300])
def test_zero_batch(backend, check_forward, make_problem, dtype, batch_first, hidden_size):
    problem = make_problem(3, batch=0, steps=6, hidden_size=hidden_size, dtype=dtype,
                           batch_first=batch_first, h0=True)
    output, h_n = check_forward(problem, backend)
    assert output.shape == ((0, 6, hidden_size) if batch_first else (6, 0, hidden_size))
    assert h_n.shape == (0, hidden_size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("input_size", "hidden_size"),
    [(1, 1), (1, 5), (5, 1), (3, 16), (7, 17), (16, 130), (5, 300)],
)
def test_sizes(backend, check_forward, make_problem, dtype, input_size, hidden_size):
    # 130 is no multiple of any vector width; 300 is several panels of the blocked product.
    problem = make_problem(4, batch=3, steps=9, input_size=input_size,
                           hidden_size=hidden_size, dtype=dtype, h0=True)
    check_forward(problem, backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_batch_sizes(backend, check_forward, make_problem, dtype, batch):
    check_forward(make_problem(5, batch=batch, steps=11, dtype=dtype), backend)


# --- layouts of x --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_h0", [False, True])
def test_unbatched(backend, check_forward, make_problem, dtype, with_h0):
    problem = make_problem(6, steps=8, unbatched=True, dtype=dtype, h0=with_h0)
    output, h_n = check_forward(problem, backend)
    assert output.shape == (8, 4) and h_n.shape == (4,)

    # The same sequence as a batch of one gives the same numbers.
    batched = dict(problem, x=problem["x"][np.newaxis])
    if with_h0:
        batched["h0"] = problem["h0"][np.newaxis]
    batched_output, batched_h_n = fastrnn.forward(**batched, backend=backend)
    np.testing.assert_array_equal(output, batched_output[0])
    np.testing.assert_array_equal(h_n, batched_h_n[0])


def test_unbatched_ignores_batch_first(backend, check_forward, make_problem):
    # As in PyTorch, (T, I) is one sequence whatever batch_first says.
    problem = make_problem(7, steps=6, unbatched=True, h0=True)
    output, h_n = check_forward(problem, backend)
    output_tm, h_n_tm = check_forward(dict(problem, batch_first=False), backend)
    np.testing.assert_array_equal(output_tm, output)
    np.testing.assert_array_equal(h_n_tm, h_n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_h0", [False, True])
def test_time_major(backend, check_forward, make_problem, assert_close, dtype, with_h0):
    problem = make_problem(8, batch=3, steps=7, dtype=dtype, batch_first=False, h0=with_h0)
    output, h_n = check_forward(problem, backend)
    assert output.shape == (7, 3, 4)

    # The same sequences batch-first give the transposed output.
    batch_major = dict(problem, x=np.ascontiguousarray(problem["x"].transpose(1, 0, 2)),
                       batch_first=True)
    output_bf, h_n_bf = fastrnn.forward(**batch_major, backend=backend)
    assert_close(output, output_bf.transpose(1, 0, 2).astype(np.float64))
    assert_close(h_n, h_n_bf.astype(np.float64))


# --- optional arguments ---------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
def test_h0(backend, check_forward, make_problem, dtype, batch_first):
    problem = make_problem(9, batch=4, steps=6, dtype=dtype, batch_first=batch_first, h0=True)
    output, _ = check_forward(problem, backend)
    # h0 matters: a zero initial state gives a different first step.
    output_zero, _ = fastrnn.forward(**dict(problem, h0=None), backend=backend)
    first = output[:, 0] if batch_first else output[0]
    first_zero = output_zero[:, 0] if batch_first else output_zero[0]
    assert not np.allclose(first, first_zero)


@pytest.mark.parametrize(
    ("b_ih", "b_hh", "dtypes"),
    [
        (False, False, DTYPES),
        (True, False, [np.float64]),  # one bias alone: float64 only, to spare Numba compiles
        (False, True, [np.float64]),
        (True, True, DTYPES),
    ],
)
def test_biases(backend, check_forward, make_problem, b_ih, b_hh, dtypes):
    for dtype in dtypes:
        problem = make_problem(10, batch=3, steps=5, dtype=dtype, b_ih=b_ih, b_hh=b_hh)
        check_forward(problem, backend)


def test_biases_add_up(backend, make_problem):
    # Only b_ih + b_hh matters: moving all of it into either bias changes nothing
    # beyond rounding.
    problem = make_problem(11, batch=2, steps=5)
    total = problem["b_ih"] + problem["b_hh"]
    output, h_n = fastrnn.forward(**problem, backend=backend)
    for split in (dict(b_ih=total, b_hh=None), dict(b_ih=None, b_hh=total)):
        output_split, h_n_split = fastrnn.forward(**dict(problem, **split), backend=backend)
        np.testing.assert_allclose(output_split, output, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(h_n_split, h_n, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("unbatched", [False, True])
def test_relu(backend, check_forward, make_problem, dtype, batch_first, unbatched):
    problem = make_problem(12, batch=3, steps=8, hidden_size=6, dtype=dtype,
                           batch_first=batch_first, unbatched=unbatched, h0=True)
    output, _ = check_forward(problem, backend, nonlinearity="relu")
    assert (output >= 0).all()
    assert (output == 0).any() and (output > 0).any()  # both sides of the kink are hit


# --- out= ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("batch_first", "unbatched"), [(True, False), (False, False), (True, True)]
)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_out(backend, check_forward, make_problem, dtype, batch_first, unbatched, nonlinearity):
    problem = make_problem(13, batch=3, steps=7, dtype=dtype, batch_first=batch_first,
                           unbatched=unbatched, h0=True)
    expected_output, expected_h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity,
                                                    backend=backend)
    out = np.full(expected_output.shape, np.nan, dtype)  # every element must be written
    output, h_n = check_forward(problem, backend, nonlinearity=nonlinearity, out=out)
    assert output is out
    np.testing.assert_array_equal(out, expected_output)
    np.testing.assert_array_equal(h_n, expected_h_n)
    assert not np.shares_memory(h_n, out)


def test_out_reused(backend, make_problem):
    # A buffer can be reused across calls; each call overwrites all of it.
    out = np.empty((2, 5, 4))
    for seed in (14, 15):
        problem = make_problem(seed)
        expected, _ = fastrnn.forward(**problem, backend=backend)
        output, _ = fastrnn.forward(**problem, out=out, backend=backend)
        assert output is out
        np.testing.assert_array_equal(out, expected)


def test_out_empty(backend, make_problem):
    problem = make_problem(16, steps=0, h0=True)
    out = np.empty((2, 0, 4))
    output, h_n = fastrnn.forward(**problem, out=out, backend=backend)
    assert output is out
    np.testing.assert_array_equal(h_n, problem["h0"])


# --- memory layouts and read-only inputs ---------------------------------------------


def _fortran(array):
    return np.asfortranarray(array)


def _strided(array):
    # A view taking every other element of a larger array, along every axis.
    big = np.full(tuple(2 * n + 1 for n in array.shape), np.nan, array.dtype)
    view = big[tuple(slice(1, None, 2) for _ in array.shape)]
    view[...] = array
    return view


def _reversed(array):
    # Negative strides.
    flipped = np.ascontiguousarray(array[::-1])
    return flipped[::-1]


def _read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


# Every array argument at once in the given layout. float64 only: each layout
# is a new Numba signature, compiled on first use.
@pytest.mark.parametrize("layout", [_fortran, _strided, _reversed, _read_only],
                         ids=["fortran", "strided", "reversed", "read-only"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_input_layouts(backend, check_forward, make_problem, layout, batch_first, nonlinearity):
    problem = make_problem(17, batch=3, steps=6, input_size=5, hidden_size=7,
                           batch_first=batch_first, h0=True)
    expected_output, expected_h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity,
                                                    backend=backend)
    arranged = {name: layout(value) if isinstance(value, np.ndarray) else value
                for name, value in problem.items()}
    if layout is _fortran:
        assert not arranged["x"].flags.c_contiguous
    if layout is _strided:
        assert not arranged["w_hh"].flags.c_contiguous and not arranged["b_ih"].flags.contiguous
    output, h_n = check_forward(arranged, backend, nonlinearity=nonlinearity)
    np.testing.assert_array_equal(output, expected_output)
    np.testing.assert_array_equal(h_n, expected_h_n)
    assert output.flags.c_contiguous and output.flags.writeable


def test_read_only_unbatched(backend, check_forward, make_problem):
    problem = make_problem(18, steps=5, unbatched=True, h0=True)
    arranged = {name: _read_only(value) if isinstance(value, np.ndarray) else value
                for name, value in problem.items()}
    check_forward(arranged, backend)


# --- longer and larger ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_long_sequence(backend, check_forward, make_problem, dtype, nonlinearity):
    problem = make_problem(19, batch=2, steps=2000, input_size=4, hidden_size=16, dtype=dtype,
                           h0=True)
    check_forward(problem, backend, nonlinearity=nonlinearity)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
def test_large_hidden(backend, check_forward, make_problem, dtype, batch_first):
    problem = make_problem(20, batch=5, steps=12, input_size=9, hidden_size=130, dtype=dtype,
                           batch_first=batch_first, h0=True)
    check_forward(problem, backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize(
    ("batch", "steps", "batch_first"),
    # Large enough for the Numba backend to split the batch across threads
    # (evenly and unevenly) when the machine has several cores.
    [(8, 50, True), (8, 50, False), (7, 100, True)],
)
def test_backends_agree(make_problem, forward_tolerance, dtype, nonlinearity, batch, steps,
                        batch_first):
    problem = make_problem(21, batch=batch, steps=steps, input_size=16, hidden_size=64,
                           dtype=dtype, batch_first=batch_first, h0=True)
    numba_output, numba_h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity,
                                              backend="numba")
    numpy_output, numpy_h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity,
                                              backend="numpy")
    tolerance = forward_tolerance[np.dtype(dtype)]
    np.testing.assert_allclose(numba_output, numpy_output, **tolerance)
    np.testing.assert_allclose(numba_h_n, numpy_h_n, **tolerance)
    expected_output, _ = naive.rnn(**problem, nonlinearity=nonlinearity)
    np.testing.assert_allclose(numba_output, expected_output, **tolerance)


def test_auto_backend(check_forward, make_problem):
    assert _backends.auto_backend_name() == "numba"  # Numba is installed here
    problem = make_problem(22, batch=3, steps=6, h0=True)
    output, h_n = check_forward(problem, "auto")
    numba_output, numba_h_n = fastrnn.forward(**problem, backend="numba")
    np.testing.assert_array_equal(output, numba_output)
    np.testing.assert_array_equal(h_n, numba_h_n)


# --- non-finite inputs -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_nan_propagates(backend, check_forward, make_problem, dtype, nonlinearity, batch_first):
    problem = make_problem(23, batch=3, steps=8, dtype=dtype, batch_first=batch_first)
    x = problem["x"]
    sample, step = 1, 3
    if batch_first:
        x[sample, step, 0] = np.nan
    else:
        x[step, sample, 0] = np.nan
    output, h_n = check_forward(problem, backend, nonlinearity=nonlinearity)
    expected, _ = naive.rnn(**problem, nonlinearity=nonlinearity)
    np.testing.assert_array_equal(np.isnan(output), np.isnan(expected))
    seq = output if batch_first else output.transpose(1, 0, 2)
    assert np.isnan(seq[sample, step:]).all()  # from the NaN on, every state is NaN
    assert not np.isnan(seq[sample, :step]).any()
    assert not np.isnan(np.delete(seq, sample, axis=0)).any()  # other samples untouched
    assert np.isnan(h_n[sample]).all() and not np.isnan(np.delete(h_n, sample, axis=0)).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_h0_propagates(backend, check_forward, make_problem, dtype):
    problem = make_problem(24, batch=3, steps=4, dtype=dtype, h0=True)
    problem["h0"][2, 1] = np.nan
    output, _ = check_forward(problem, backend)
    assert np.isnan(output[2]).all() and not np.isnan(output[:2]).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_inf_saturates_tanh(backend, check_forward, make_problem, dtype, sign):
    # One infinite input per step: each pre-activation is +-inf, so tanh gives
    # +-1 exactly there (float64; float32 within its tolerance) and the
    # sequence stays finite.
    problem = make_problem(25, batch=2, steps=6, dtype=dtype)
    problem["x"][0, 2, 1] = sign * np.inf
    problem["x"][1, 4, 0] = -sign * np.inf
    output, _ = check_forward(problem, backend)
    assert np.isfinite(output).all()
    expected_step = np.sign(sign * problem["w_ih"][:, 1])
    np.testing.assert_allclose(output[0, 2], expected_step, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inf_with_relu(backend, check_forward, make_problem, dtype):
    # relu lets +inf through; the next step then sums +inf and -inf terms into
    # NaN. Positions of inf and NaN must match the reference. (The NumPy
    # backend's matmul reports "invalid value" as a RuntimeWarning here.)
    problem = make_problem(26, batch=2, steps=6, dtype=dtype)
    problem["x"][0, 2, 1] = np.inf
    problem["x"][1, 3, 0] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        output, _ = check_forward(problem, backend, nonlinearity="relu")
        expected, _ = naive.rnn(**problem, nonlinearity="relu")
    np.testing.assert_array_equal(np.isnan(output), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(output), np.isposinf(expected))
    assert np.isposinf(output[0, 2]).any() and np.isnan(output[0, -1]).any()
    assert np.isfinite(output[:, :2]).all()  # before the first inf, all is finite


# --- invariants ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_first", "unbatched"), [(True, False), (False, False), (True, True)]
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_last_output_is_h_n(backend, make_problem, batch_first, unbatched, dtype):
    problem = make_problem(27, batch=3, steps=9, dtype=dtype, batch_first=batch_first,
                           unbatched=unbatched, h0=True)
    output, h_n = fastrnn.forward(**problem, backend=backend)
    np.testing.assert_array_equal(_last_step(output, batch_first, unbatched), h_n)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("batch_first", "unbatched"), [(True, False), (False, False), (True, True)]
)
@pytest.mark.parametrize("use_out", [False, True])
def test_arguments_unchanged(backend, make_problem, nonlinearity, dtype, batch_first, unbatched,
                             use_out):
    problem = make_problem(28, batch=3, steps=7, dtype=dtype, batch_first=batch_first,
                           unbatched=unbatched, h0=True)
    copies = _copies(problem)
    out = None
    if use_out:
        shape = (7, 4) if unbatched else ((3, 7, 4) if batch_first else (7, 3, 4))
        out = np.empty(shape, dtype)
    output, h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity, out=out, backend=backend)
    _assert_unchanged(problem, copies)
    # The results are new arrays, not views of any input.
    for value in copies:
        assert not np.shares_memory(output, problem[value])
        assert not np.shares_memory(h_n, problem[value])


def test_results_are_independent_arrays(backend, make_problem):
    problem = make_problem(29, batch=2, steps=4, h0=True)
    output, h_n = fastrnn.forward(**problem, backend=backend)
    assert not np.shares_memory(output, h_n)
    assert output.flags.writeable and h_n.flags.writeable
    assert output.flags.c_contiguous and h_n.flags.c_contiguous


def test_repeatable(backend, make_problem):
    problem = make_problem(30, batch=8, steps=50, input_size=16, hidden_size=64, h0=True)
    first = fastrnn.forward(**problem, backend=backend)
    second = fastrnn.forward(**problem, backend=backend)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


# --- the reference itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nonlinearity", "batch_first", "unbatched", "bias", "with_h0"),
    [
        ("tanh", True, False, True, False),
        ("tanh", False, False, True, True),
        ("relu", True, False, False, True),
        ("tanh", True, True, True, True),
    ],
)
def test_naive_matches_pytorch(make_problem, nonlinearity, batch_first, unbatched, bias,
                               with_h0):
    # tests/naive.py is what everything else is checked against; check it in
    # turn against torch.nn.RNN itself, when PyTorch is installed.
    torch = pytest.importorskip("torch")
    problem = make_problem(31, batch=3, steps=6, input_size=5, hidden_size=7,
                           batch_first=batch_first, unbatched=unbatched, b_ih=bias,
                           b_hh=bias, h0=with_h0)
    rnn = torch.nn.RNN(5, 7, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
                       dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(problem["w_ih"]))
        rnn.weight_hh_l0.copy_(torch.from_numpy(problem["w_hh"]))
        if bias:
            rnn.bias_ih_l0.copy_(torch.from_numpy(problem["b_ih"]))
            rnn.bias_hh_l0.copy_(torch.from_numpy(problem["b_hh"]))
        h0 = None if problem["h0"] is None else torch.from_numpy(problem["h0"][np.newaxis])
        torch_output, torch_h_n = rnn(torch.from_numpy(problem["x"]), h0)
    output, h_n = naive.rnn(**problem, nonlinearity=nonlinearity)
    np.testing.assert_allclose(output, torch_output.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n, torch_h_n.numpy()[0], rtol=1e-12, atol=1e-12)


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(0, 5),
    steps=st.integers(0, 12),
    input_size=st.integers(1, 9),
    hidden_size=st.integers(1, 20),
    dtype=st.sampled_from(DTYPES),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    batch_first=st.booleans(),
    unbatched=st.booleans(),
    bias=st.booleans(),
    with_h0=st.booleans(),
    backend=st.sampled_from(["numba", "numpy", "auto"]),
)
def test_matches_reference(make_problem, check_forward, seed, batch, steps, input_size,
                           hidden_size, dtype, nonlinearity, batch_first, unbatched, bias,
                           with_h0, backend):
    problem = make_problem(seed, batch=batch, steps=steps, input_size=input_size,
                           hidden_size=hidden_size, dtype=dtype, batch_first=batch_first,
                           unbatched=unbatched, b_ih=bias, b_hh=bias, h0=with_h0)
    copies = _copies(problem)
    output, h_n = check_forward(problem, backend, nonlinearity=nonlinearity)
    _assert_unchanged(problem, copies)
    if steps > 0:
        np.testing.assert_array_equal(_last_step(output, batch_first, unbatched), h_n)
    elif with_h0:
        np.testing.assert_array_equal(h_n, problem["h0"])
    else:
        assert not h_n.any()


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(0, 5),
    steps=st.integers(0, 12),
    hidden_size=st.integers(1, 20),
    dtype=st.sampled_from(DTYPES),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    batch_first=st.booleans(),
    unbatched=st.booleans(),
    backend=st.sampled_from(["numba", "numpy"]),
)
def test_out_property(make_problem, seed, batch, steps, hidden_size, dtype, nonlinearity,
                      batch_first, unbatched, backend):
    problem = make_problem(seed, batch=batch, steps=steps, hidden_size=hidden_size, dtype=dtype,
                           batch_first=batch_first, unbatched=unbatched, h0=True)
    expected_output, expected_h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity,
                                                    backend=backend)
    out = np.full(expected_output.shape, np.nan, dtype)
    output, h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity, out=out, backend=backend)
    assert output is out
    np.testing.assert_array_equal(out, expected_output)
    np.testing.assert_array_equal(h_n, expected_h_n)
