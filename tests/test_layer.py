"""fastrnn.prepare / fastrnn.Layer: a prepared layer gives what fastrnn.forward
gives, whole sequences or one step at a time, on every path, from any number
of threads; its step checks its input and modifies nothing on bad input."""

from __future__ import annotations

import threading

import naive
import numpy as np
import pytest

import fastrnn

DTYPES = (np.float32, np.float64)


def _problem(make_problem, seed, dtype, **kwargs):
    problem = make_problem(seed, dtype=dtype, **kwargs)
    weights = {k: problem[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
    return problem, weights


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize(("batch", "hidden"), [(1, 4), (1, 40), (3, 4), (6, 70)])
def test_call_equals_forward(backend, make_problem, dtype, nonlinearity, batch, hidden):
    problem, weights = _problem(make_problem, batch * 100 + hidden, dtype, batch=batch,
                                steps=7, input_size=5, hidden_size=hidden, h0=True)
    layer = fastrnn.prepare(**weights, nonlinearity=nonlinearity, backend=backend)
    expected = fastrnn.forward(**problem, nonlinearity=nonlinearity, backend=backend)
    actual = layer(problem["x"], problem["h0"])
    np.testing.assert_array_equal(actual[0], expected[0])
    np.testing.assert_array_equal(actual[1], expected[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_call_options_against_naive(backend, make_problem, assert_close, dtype):
    # lengths, leak, time-major, return_sequences=False and out=, at once.
    problem, weights = _problem(make_problem, 3, dtype, batch=4, steps=6, input_size=3,
                                hidden_size=5, batch_first=False, h0=True)
    leak = np.linspace(0.2, 1.0, 5)
    lengths = np.array([6, 0, 3, 5])
    layer = fastrnn.prepare(**weights, leak=leak, backend=backend)
    out = np.empty((6, 4, 5), dtype)
    output, h_n = layer(problem["x"], problem["h0"], batch_first=False, lengths=lengths, out=out)
    assert output is out
    expected = naive.rnn(**problem, lengths=lengths, leak=leak)
    assert_close(output, expected[0])
    assert_close(h_n, expected[1])
    only = layer(problem["x"], problem["h0"], batch_first=False, lengths=lengths,
                 return_sequences=False)
    np.testing.assert_array_equal(only, h_n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("leak", [None, 0.3])
@pytest.mark.parametrize("batch", [None, 1, 5])
def test_steps_equal_forward(backend, make_problem, assert_close, dtype, sparse, leak, batch):
    # Stepping a sequence gives forward's states, from h0, for dense and
    # sparse w_hh, with and without a leak, batched or one (I,) sequence.
    problem, weights = _problem(make_problem, 11, dtype, batch=batch or 1, steps=9,
                                input_size=4, hidden_size=21, h0=True, unbatched=batch is None)
    if sparse:
        scipy_sparse = pytest.importorskip("scipy.sparse")
        w_hh = problem["w_hh"].copy()
        w_hh[np.abs(w_hh) < 0.3] = 0
        weights["w_hh"] = problem["w_hh"] = scipy_sparse.csr_matrix(w_hh)
    layer = fastrnn.prepare(**weights, leak=leak, backend=backend)
    output, h_n = fastrnn.forward(**problem, leak=leak, backend=backend)
    x = problem["x"]
    h = problem["h0"].copy()
    for t in range(x.shape[-2]):
        x_t = x[t] if batch is None else x[:, t]
        h = layer.step(x_t, h)
        assert h.dtype == dtype
        assert_close(h, output[t] if batch is None else output[:, t])
    assert_close(h, h_n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_in_place_and_into_out(backend, make_problem, dtype):
    problem, weights = _problem(make_problem, 5, dtype, batch=3, steps=4, input_size=2,
                                hidden_size=6, h0=True)
    layer = fastrnn.prepare(**weights, leak=0.5, backend=backend)
    x_t, h0 = problem["x"][:, 0], problem["h0"]
    expected = layer.step(x_t, h0)
    out = np.full_like(h0, np.nan)
    assert layer.step(x_t, h0, out=out) is out
    np.testing.assert_array_equal(out, expected)
    h = h0.copy()
    assert layer.step(x_t, h, out=h) is h  # in place
    np.testing.assert_array_equal(h, expected)


def test_weights_are_copied(make_problem):
    problem, weights = _problem(make_problem, 8, np.float32, batch=2, steps=3, input_size=3,
                                hidden_size=4)
    layer = fastrnn.prepare(**weights)
    before = layer(problem["x"])[0]
    step_before = layer.step(problem["x"][:, 0], np.zeros((2, 4), np.float32))
    for array in weights.values():
        array *= 2  # the caller changes its arrays afterwards
    np.testing.assert_array_equal(layer(problem["x"])[0], before)
    np.testing.assert_array_equal(layer.step(problem["x"][:, 0], np.zeros((2, 4), np.float32)),
                                  step_before)


def test_any_layout_compiles_nothing_new(make_problem):
    # The dense step kernel has two explicit signatures per dtype, (B, I)
    # and (I,) arrays of any layout: C, Fortran, strided and read-only
    # inputs all take them, and compile nothing.
    pytest.importorskip("numba")
    problem, weights = _problem(make_problem, 9, np.float32, batch=4, steps=3, input_size=6,
                                hidden_size=8)
    layer = fastrnn.prepare(**weights, backend="numba")
    kernel = layer._step_fast
    compiled = set(kernel.overloads)
    assert len(compiled) == 2
    x = problem["x"]
    expected = layer.step(np.ascontiguousarray(x[:, 1]), np.zeros((4, 8), np.float32))
    readonly = np.ascontiguousarray(x[:, 1])
    readonly.flags.writeable = False
    h_fortran = np.asfortranarray(np.zeros((4, 8), np.float32))
    for x_t, h in [(x[:, 1], np.zeros((4, 8), np.float32)),  # strided
                   (np.asfortranarray(x[:, 1]), h_fortran),
                   (readonly, np.zeros((8, 4), np.float32).T)]:
        np.testing.assert_array_equal(layer.step(x_t, h), expected)
    # One (I,) sequence: its own product (one row, not a row of a block of
    # 4), so compared with the C-ordered (I,) call.
    expected_one = layer.step(np.ascontiguousarray(x[0, 1]), np.zeros(8, np.float32))
    for x_t, h in [(x[0, 1], np.zeros(8, np.float32)),
                   (x[:, 1].T[:, 0], np.zeros((8, 2), np.float32)[:, 1]),  # strided
                   (readonly[0], np.zeros(8, np.float32))]:
        np.testing.assert_array_equal(layer.step(x_t, h), expected_one)
    assert set(kernel.overloads) == compiled


def _naive_step(x_t, h, weights, relu, leak):
    # One step in float64 by the formula: act(x W_ih^T + b_ih + h W_hh^T
    # + b_hh), leaky when leak is given.
    pre = (x_t.astype(np.float64) @ weights["w_ih"].T.astype(np.float64) + weights["b_ih"]
           + h.astype(np.float64) @ weights["w_hh"].T.astype(np.float64) + weights["b_hh"])
    new = np.maximum(pre, 0) if relu else np.tanh(pre)
    return new if leak is None else (1 - leak) * h + leak * new


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("leak", [None, 0.25])
@pytest.mark.parametrize(("batch", "hidden"), [(None, 3), (1, 17), (5, 40), (40, 520)])
def test_step_kernels_against_naive(make_problem, assert_close, dtype, relu, leak, batch,
                                    hidden):
    # The dense step kernel (fastrnn.kernels.step) on every activation and leak,
    # and (40 samples of 520 units: more scratch than its stack takes) the
    # general step kernel, against the formula.
    pytest.importorskip("numba")
    problem, weights = _problem(make_problem, hidden, dtype, batch=batch or 1, steps=1,
                                input_size=7, hidden_size=hidden, h0=True,
                                unbatched=batch is None)
    # (One thread: a step this large may run on the layer's crew, tested in
    # test_crew.py.)
    layer = fastrnn.prepare(**weights, nonlinearity="relu" if relu else "tanh", leak=leak,
                            backend="numba", threads=1)
    x_t = problem["x"][0] if batch is None else problem["x"][:, 0]
    h = problem["h0"]
    assert_close(layer.step(x_t, h), _naive_step(x_t, h, weights, relu, leak))
    assert (layer._step_kernel is not None) == (batch == 40)


def test_general_step_kernel_gives_the_fast_ones_bits(make_problem):
    # A step too large for the dense kernel's stack runs the general kernel;
    # both sum in the same order, so 40 samples at once give the bits of
    # five calls of 8 (blocks of 4 rows stay blocks of 4 rows).
    pytest.importorskip("numba")
    problem, weights = _problem(make_problem, 41, np.float32, batch=40, steps=1,
                                input_size=9, hidden_size=520, h0=True)
    layer = fastrnn.prepare(**weights, leak=0.5, backend="numba", threads=1)  # (no crew)
    x_t, h = problem["x"][:, 0], problem["h0"]
    whole = layer.step(x_t, h)
    assert layer._step_kernel is not None
    parts = np.concatenate([layer.step(x_t[i:i + 8], h[i:i + 8]) for i in range(0, 40, 8)])
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_eight_concurrent_callers(make_problem, backend):
    # One layer called from 8 threads at once gives each caller what it
    # gets alone, whole sequences and steps (of 6 or 5 samples: NumPy's
    # step shares a pool of scratch buffers among its callers).
    problem, weights = _problem(make_problem, 12, np.float64, batch=6, steps=40,
                                input_size=8, hidden_size=48)
    layer = fastrnn.prepare(**weights, backend=backend)
    rng = np.random.default_rng(12)
    inputs = [rng.standard_normal((6 - k % 2, 40, 8)) for k in range(8)]
    alone = [layer(x) for x in inputs]
    alone_steps = [layer.step(x[:, 0], x[:, 1, :1].repeat(48, axis=1)) for x in inputs]
    results: list = [None] * 8
    failures: list = []
    barrier = threading.Barrier(8)

    def run(k):
        try:
            barrier.wait()
            for _ in range(5):
                output = layer(inputs[k])
                state = layer.step(inputs[k][:, 0], inputs[k][:, 1, :1].repeat(48, axis=1))
            results[k] = (output, state)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    for k in range(8):
        np.testing.assert_array_equal(results[k][0][0], alone[k][0])
        np.testing.assert_array_equal(results[k][0][1], alone[k][1])
        np.testing.assert_array_equal(results[k][1], alone_steps[k])


@pytest.mark.parametrize(
    ("x_t", "h", "out", "error", "match"),
    [
        (np.zeros((2, 3)), np.zeros((2, 4)), None, TypeError, "layer's dtype float32"),
        (np.zeros((2, 5), np.float32), np.zeros((2, 4), np.float32), None, ValueError,
         r"x_t must have shape \(2, 3\)"),
        (np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float32), None, ValueError,
         r"h must have shape \(2, 4\)"),
        # x one column short and h one column long: as many packed rows
        # (the kernel reads H from the layer's shape row, not from h).
        (np.zeros((2, 2), np.float32), np.zeros((2, 5), np.float32), None, ValueError,
         r"x_t must have shape \(2, 3\)"),
        (np.zeros((2, 3), np.float32), np.zeros(4, np.float32), None, ValueError,
         r"\(B, I\) and \(B, H\)"),
        (np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32),
         np.zeros((2, 5), np.float32), ValueError, r"out must have shape \(2, 4\)"),
        (np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32),
         np.zeros((2, 4), np.float64), ValueError, "dtype float32"),
        ([[0.0, 0.0, 0.0]], np.zeros((1, 4), np.float32), None, TypeError, "layer's dtype"),
    ],
)
def test_step_rejects_bad_input_and_modifies_nothing(make_problem, x_t, h, out, error, match):
    _, weights = _problem(make_problem, 1, np.float32, hidden_size=4, input_size=3)
    layer = fastrnn.prepare(**weights)
    h_before = np.array(h, copy=True)
    out_before = None if out is None else out.copy()
    with pytest.raises(error, match=match):
        layer.step(x_t, h, out=out)
    np.testing.assert_array_equal(h, h_before)
    if out is not None:
        np.testing.assert_array_equal(out, out_before)


def test_a_sparse_layers_step_rejects_an_h_one_column_long():
    # Its kernel packs no w_hh rows: only the layer's shape row tells an h
    # of H + 1 columns (within the packed width's padding) from the layer's.
    sparse = pytest.importorskip("scipy.sparse")
    w_hh = sparse.random(10, 10, density=0.3, format="csr", dtype=np.float32, random_state=0)
    layer = fastrnn.prepare(np.ones((10, 3), np.float32), w_hh)
    h = np.zeros((2, 11), np.float32)
    with pytest.raises(ValueError, match=r"h must have shape \(2, 10\)"):
        layer.step(np.zeros((2, 3), np.float32), h)
    assert not h.any()


def test_step_rejects_read_only_out(make_problem):
    _, weights = _problem(make_problem, 1, np.float32, hidden_size=4, input_size=3)
    layer = fastrnn.prepare(**weights)
    out = np.zeros((2, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        layer.step(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32), out=out)


def test_call_rejects_other_dtype_and_input_size(make_problem):
    problem, weights = _problem(make_problem, 2, np.float32, input_size=3, hidden_size=4)
    layer = fastrnn.prepare(**weights)
    with pytest.raises(TypeError, match="layer's dtype float32"):
        layer(problem["x"].astype(np.float64))
    with pytest.raises(ValueError, match="3 features"):
        layer(np.zeros((2, 5, 4), np.float32))


def test_prepare_validates_like_forward(make_problem):
    _, weights = _problem(make_problem, 2, np.float32, input_size=3, hidden_size=4)
    with pytest.raises(ValueError, match="w_hh must have shape"):
        fastrnn.prepare(weights["w_ih"], weights["w_hh"][:3])
    with pytest.raises(ValueError, match="leak must lie in"):
        fastrnn.prepare(weights["w_ih"], weights["w_hh"], leak=1.5)
    with pytest.raises(ValueError, match="nonlinearity"):
        fastrnn.prepare(weights["w_ih"], weights["w_hh"], nonlinearity="gelu")
    with pytest.raises(TypeError, match=r"share one dtype .*w_ih=float32, w_hh=float64$|"
                                        r"w_ih=float32, w_hh=float64;"):
        fastrnn.prepare(weights["w_ih"], weights["w_hh"].astype(np.float64))
    layer = fastrnn.prepare(weights["w_ih"], weights["w_hh"], nonlinearity="relu")
    assert (layer.input_size, layer.hidden_size, layer.dtype) == (3, 4, np.float32)
    assert layer.nonlinearity == "relu"
    assert "hidden_size=4" in repr(layer)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("unbatched", [False, True])
def test_chunks_equal_one_call(backend, make_problem, assert_close, dtype, unbatched):
    # A stream fed in chunks, each chunk's h_n the next h0, gives the
    # one-call states (the chunk call's short path, batched and unbatched).
    problem, weights = _problem(make_problem, 21, dtype, batch=3, steps=50, input_size=4,
                                hidden_size=40, h0=True, unbatched=unbatched)
    layer = fastrnn.prepare(**weights, backend=backend)
    output, h_n = layer(problem["x"], problem["h0"])
    h = problem["h0"]
    pieces = []
    for start in range(0, 50, 7):
        chunk = problem["x"][start:start + 7] if unbatched else problem["x"][:, start:start + 7]
        piece, h = layer(chunk, h)
        pieces.append(piece)
    assert_close(np.concatenate(pieces, axis=-2), output.astype(np.float64))
    assert_close(h, h_n.astype(np.float64))
    expected = naive.rnn(**problem)
    assert_close(output, expected[0])
    assert_close(h_n, expected[1])


def test_rnn_keeps_prepared_layers_and_prepares_again_on_new_weights():
    rnn = fastrnn.RNN(3, 5, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 4, 3), dtype=np.float32)
    first = rnn(x)
    layers = rnn._prepared(rnn.backend)
    assert len(layers) == 4 and all(isinstance(layer, fastrnn.Layer) for layer in layers)
    rnn(x)
    assert rnn._prepared(rnn.backend) is layers  # kept between calls
    weights = rnn.state_dict()
    weights["weight_hh_l1_reverse"] *= -1
    rnn.load_state_dict(weights)
    assert rnn._prepared(rnn.backend) is not layers  # prepared from the new weights
    second = rnn(x)
    assert not np.array_equal(first[0], second[0])
    # astype prepares layers of the new dtype.
    np.testing.assert_allclose(rnn.astype(np.float64)(x.astype(np.float64))[0], second[0],
                               atol=1e-5)


@pytest.mark.parametrize(("threads", "batch", "route"), [
    (1, 1, "numpy"), (1, 2, "kernel"), (1, 16, "kernel"),
    (2, 1, "crew"), (2, 2, "crew"), (2, 16, "crew")])
def test_wide_dense_steps_are_routed_by_batch(monkeypatch, make_problem, assert_close, threads,
                                              batch, route):
    # From STEP_BLAS_MIN_HIDDEN units on, a dense layer's step on one thread
    # is NumPy's product for one sample and the compiled kernel for more;
    # a layer that may use more threads runs steps from CREW_MIN_BYTES on
    # its crew (fastrnn._crew), here every batch: each gives forward's
    # states.
    from fastrnn import _crew, _layer, _numba, _plan

    monkeypatch.setattr(_numba, "_CORES", 2)  # (a 1-core machine would have no crew)
    monkeypatch.setattr(_plan.CrewVerdict, "way", lambda self, now: True)  # the crew when it may
    hidden = 1024
    problem, weights = _problem(make_problem, 31, np.float32, batch=batch, steps=3, input_size=5,
                                hidden_size=hidden, h0=True)
    layer = fastrnn.prepare(**weights, leak=0.5, threads=threads)
    assert hidden >= _plan.STEP_BLAS_MIN_HIDDEN
    assert layer._crew_size == (hidden if threads == 2 else _layer._NEVER)
    routes = []
    numpy_step, kernel = layer._numpy_step, layer._step_kernel

    def spy(name, function):
        def spied(*args, **kwargs):
            routes.append(name)
            return function(*args, **kwargs)
        return spied

    layer._numpy_step = spy("numpy", numpy_step)
    layer._step_kernel = spy("kernel", kernel)
    monkeypatch.setattr(_crew.Crew, "step", spy("crew", _crew.Crew.step))
    output, h_n = fastrnn.forward(**problem, leak=0.5)
    h = problem["h0"]
    for t in range(3):
        h = layer.step(problem["x"][:, t], h)
        assert_close(h, output[:, t])
    # In place, and one sequence as 1-D arrays.
    h = problem["h0"].copy()
    assert layer.step(problem["x"][:, 0], h, out=h) is h
    assert_close(h, output[:, 0])
    assert routes == [route] * 4
    assert_close(layer.step(problem["x"][0, 0], problem["h0"][0]), output[0, 0])
