"""GRU and LSTM layers (fastrnn.prepare_gru, fastrnn.prepare_lstm) against the
naive references of tests/naive.py, PyTorch, each other's call patterns (whole
sequences, chunks, steps) and bad input."""

from __future__ import annotations

import threading

import naive
import numpy as np
import pytest

import fastrnn

CELLS = {"gru": (3, fastrnn.prepare_gru), "lstm": (4, fastrnn.prepare_lstm)}
DTYPES = (np.float32, np.float64)


def weights(cell, input_size, hidden, dtype, seed=0, biases=True, scale=None):
    """PyTorch's initialisation: U(-1/sqrt(H), 1/sqrt(H)) (or U(-scale, scale))."""
    gates = CELLS[cell][0]
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden) if scale is None else scale
    shapes = [(gates * hidden, input_size), (gates * hidden, hidden)]
    if biases:
        shapes += [(gates * hidden,), (gates * hidden,)]
    return [rng.uniform(-bound, bound, shape).astype(dtype) for shape in shapes]


def reference(cell, x, w, state=None, batch_first=True, lengths=None):
    """(output, h_n, c_n or None) of the naive reference."""
    b_ih, b_hh = (w[2], w[3]) if len(w) == 4 else (None, None)
    if cell == "gru":
        output, h_n = naive.gru(x, w[0], w[1], b_ih, b_hh, h0=state, batch_first=batch_first,
                                lengths=lengths)
        return output, h_n, None
    h0, c0 = (None, None) if state is None else state
    return naive.lstm(x, w[0], w[1], b_ih, b_hh, h0=h0, c0=c0, batch_first=batch_first,
                      lengths=lengths)


def run(cell, layer, x, state=None, **options):
    """(output, h_n, c_n or None) of a layer's call."""
    if cell == "gru":
        output, h_n = layer(x, state, **options)
        return output, h_n, None
    output, (h_n, c_n) = layer(x, state, **options)
    return output, h_n, c_n


def start_state(cell, shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    h0 = rng.uniform(-0.9, 0.9, shape).astype(dtype)
    if cell == "gru":
        return h0
    return h0, rng.uniform(-2, 2, shape).astype(dtype)


def check(actual, expected, assert_close):
    for got, want in zip(actual, expected, strict=True):
        if want is None:
            assert got is None
            continue
        assert got.shape == want.shape
        assert_close(got, want)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 10, 4, 8), (3, 7, 5, 20), (5, 12, 16, 64), (6, 3, 3, 37),
                                   (2, 1, 1, 1), (9, 4, 7, 130)])
def test_matches_naive(cell, dtype, shape, backend, assert_close):
    batch, steps, input_size, hidden = shape
    w = weights(cell, input_size, hidden, dtype)
    layer = CELLS[cell][1](*w, backend=backend)
    x = np.random.default_rng(2).standard_normal((batch, steps, input_size)).astype(dtype)
    state = start_state(cell, (batch, hidden), dtype)
    got = run(cell, layer, x, state)
    assert all(a is None or a.dtype == dtype for a in got)
    check(got, reference(cell, x, w, state), assert_close)
    # No state: zeros; no biases.
    check(run(cell, layer, x), reference(cell, x, w), assert_close)
    bare = weights(cell, input_size, hidden, dtype, biases=False)
    check(run(cell, CELLS[cell][1](*bare, backend=backend), x), reference(cell, x, bare),
          assert_close)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_layouts_unbatched_and_options(cell, backend, assert_close):
    dtype = np.float64
    w = weights(cell, 5, 11, dtype, seed=3)
    layer = CELLS[cell][1](*w, backend=backend)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 4, 5))  # (T, B, I)
    state = start_state(cell, (4, 11), dtype)
    check(run(cell, layer, x, state, batch_first=False),
          reference(cell, x, w, state, batch_first=False), assert_close)
    # Fortran-ordered and strided views of x.
    check(run(cell, layer, np.asfortranarray(x), state, batch_first=False),
          reference(cell, x, w, state, batch_first=False), assert_close)
    wide = rng.standard_normal((7, 4, 10))
    check(run(cell, layer, wide[:, :, ::2], state, batch_first=False),
          reference(cell, wide[:, :, ::2], w, state, batch_first=False), assert_close)
    # One unbatched sequence (T, I), state (H,).
    one = x[:, 0]
    one_state = start_state(cell, (11,), dtype)
    got = run(cell, layer, one, one_state)
    assert got[0].shape == (7, 11) and got[1].shape == (11,)
    check(got, reference(cell, one, w, one_state), assert_close)
    # return_sequences=False: the final states alone.
    final = layer(x, state, batch_first=False, return_sequences=False)
    expected = reference(cell, x, w, state, batch_first=False)
    if cell == "gru":
        assert_close(final, expected[1])
    else:
        assert_close(final[0], expected[1])
        assert_close(final[1], expected[2])
    # out=: written in place and returned; C-contiguous, as fastrnn.forward's.
    out = np.empty((7, 4, 11))
    got = run(cell, layer, x, state, batch_first=False, out=out)
    assert got[0] is out
    assert_close(out, expected[0])
    with pytest.raises(ValueError, match=r"out must be C-contiguous"):
        run(cell, layer, x, state, batch_first=False, out=np.empty((7, 4, 22))[:, :, ::2])


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_lengths(cell, dtype, backend, assert_close):
    w = weights(cell, 3, 19, dtype, seed=5)
    layer = CELLS[cell][1](*w, backend=backend)
    x = np.random.default_rng(6).standard_normal((6, 9, 3)).astype(dtype)
    lengths = np.array([9, 0, 4, 9, 1, 6])
    state = start_state(cell, (6, 19), dtype)
    got = run(cell, layer, x, state, lengths=lengths)
    check(got, reference(cell, x, w, state, lengths=lengths), assert_close)
    assert not got[0][1].any() and not got[0][2, 4:].any()  # zeros past each length


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize(("dtype", "path"), [(np.float32, "blocked"), (np.float64, "blocked"),
                                             (np.float32, "batch-split"),
                                             (np.float32, "units-split"),
                                             (np.float64, "units-split")])
@pytest.mark.parametrize("lengths", [False, True])
def test_every_plan_and_windows(cell, dtype, path, lengths, assert_close):
    # The Numba backend's plans, forced: one thread, the batch split and the
    # units split on two threads, over a call long enough for windows
    # (>= WINDOWS_MIN_FMAS). (The float64 batch split: a step of 32
    # samples, test_steps_match_the_call; each compiled variant adds
    # seconds to the suite.)
    pytest.importorskip("numba")
    from fastrnn import _numba
    from fastrnn._plan import BATCH_SPLIT, BLOCKED, UNITS_SPLIT, WINDOWS_MIN_FMAS, checked

    batch, steps, input_size, hidden = 7, 700, 6, 48
    gates = CELLS[cell][0]
    assert batch * steps * gates * hidden * (hidden + input_size) >= WINDOWS_MIN_FMAS
    w = weights(cell, input_size, hidden, dtype, seed=7)
    layer = CELLS[cell][1](*w, backend="numba")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((batch, steps, input_size)).astype(dtype)
    lens = rng.integers(0, steps + 1, batch) if lengths else None
    h0 = rng.uniform(-1, 1, (batch, gates // 2 * hidden)).astype(dtype)  # LSTM: [h | c]
    out = np.empty((batch, steps, hidden), dtype)
    h_n = np.empty_like(h0)
    plan = {"blocked": checked(BLOCKED), "batch-split": checked(BATCH_SPLIT, 2),
            "units-split": checked(UNITS_SPLIT, 2)}[path]
    _numba.forward_cell(x, layer._packed, layer._cell, hidden, h0, out, h_n, True, lens, None,
                        plan=plan, weights=layer._weights())
    state = h0 if cell == "gru" else (h0[:, :hidden], h0[:, hidden:])
    expected = reference(cell, x, w, state, lengths=lens)
    assert_close(out, expected[0])
    assert_close(h_n[:, :hidden], expected[1])
    if cell == "lstm":
        assert_close(h_n[:, hidden:], expected[2])


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch(cell, dtype, backend, forward_tolerance):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(10, 33, batch_first=True)
    module = module.to(torch.float32 if dtype == np.float32 else torch.float64)
    w = [p.detach().numpy() for p in (module.weight_ih_l0, module.weight_hh_l0,
                                      module.bias_ih_l0, module.bias_hh_l0)]
    layer = CELLS[cell][1](*w, backend=backend)
    x = torch.randn(4, 25, 10, dtype=module.weight_ih_l0.dtype)
    h0 = torch.randn(1, 4, 33, dtype=x.dtype)
    tolerance = forward_tolerance[np.dtype(dtype)]
    with torch.no_grad():
        if cell == "gru":
            expected, h_n = module(x, h0)
            got, got_h = layer(x.numpy(), h0[0].numpy())
        else:
            c0 = torch.randn(1, 4, 33, dtype=x.dtype)
            expected, (h_n, c_n) = module(x, (h0, c0))
            got, (got_h, got_c) = layer(x.numpy(), (h0[0].numpy(), c0[0].numpy()))
            np.testing.assert_allclose(got_c, c_n[0].numpy(), **tolerance)
    np.testing.assert_allclose(got, expected.numpy(), **tolerance)
    np.testing.assert_allclose(got_h, h_n[0].numpy(), **tolerance)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, hidden", [(1, 8), (3, 64), (2, 300), (32, 256), (1, 800)])
@pytest.mark.parametrize("threads", [None, 1])
def test_steps_match_the_call(cell, dtype, batch, hidden, threads, backend, assert_close):
    # Stepping a sequence (in place, out= the state) gives the call's
    # states. (32, 256): on one thread the step kernel whose scratch is on
    # the heap (over STACK_BYTES), else (on 2+ cores) a one-step call on
    # the batch split's threads; (1, 800) on 2+ cores NumPy's products; the
    # others the stack's kernel.
    w = weights(cell, 6, hidden, dtype, seed=9)
    layer = CELLS[cell][1](*w, backend=backend, threads=threads)
    x = np.random.default_rng(10).standard_normal((batch, 5, 6)).astype(dtype)
    state = start_state(cell, (batch, hidden), dtype)
    output, h_n, c_n = run(cell, layer, x, state)
    if cell == "gru":
        h = state.copy()
        for t in range(5):
            returned = layer.step(x[:, t], h, out=h)
            assert returned is h
            assert_close(h, output[:, t].astype(np.float64))
        fresh = layer.step(x[:, 0], state)  # out=None: a new array, the state untouched
        assert fresh is not state and np.array_equal(state, start_state(cell, state.shape, dtype))
    else:
        h, c = state[0].copy(), state[1].copy()
        for t in range(5):
            returned = layer.step(x[:, t], (h, c), out=(h, c))
            assert returned[0] is h and returned[1] is c
            assert_close(h, output[:, t].astype(np.float64))
        assert_close(c, c_n.astype(np.float64))
    assert_close(h, h_n.astype(np.float64))
    # One sequence's step with 1-D arrays.
    one = (state[0] if cell == "gru" else (state[0][0], state[1][0]))
    stepped = layer.step(x[0, 0], one)
    first = run(cell, layer, x[:1, :1], (one[None] if cell == "gru" else
                                         (one[0][None], one[1][None])))
    assert_close(stepped if cell == "gru" else stepped[0], first[1][0].astype(np.float64))


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("batch, hidden", [(2, 40), (1, 256)])
def test_chunks_match_one_call(cell, batch, hidden, backend):
    # (1, 256): 100-step chunks of 21M+ multiply-adds, planned on the units
    # split (2+ cores), which the layer keeps between calls.
    dtype = np.float32
    w = weights(cell, 16, hidden, dtype, seed=11)
    layer = CELLS[cell][1](*w, backend=backend)
    x = np.random.default_rng(12).standard_normal((batch, 300, 16)).astype(dtype)
    output, h_n, c_n = run(cell, layer, x)
    state = None
    pieces = []
    for start in range(0, 300, 100):
        piece, h, c = run(cell, layer, x[:, start:start + 100], state)
        pieces.append(piece)
        state = h if cell == "gru" else (h, c)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), output, rtol=0, atol=1e-6)
    np.testing.assert_allclose(h, h_n, rtol=0, atol=1e-6)
    if backend == "numba" and hidden == 256:
        from fastrnn import _numba
        from fastrnn.kernels.simd import TARGET

        # (Compiled without FMA, the plan gives such states to NumPy's products.)
        if min(_numba.default_threads(), _numba._CORES) > 1 and TARGET.fma:
            assert layer._kept._split[0] is not None  # kept, threads and all
            # The chunks were judged as whole calls (JUDGED_CALL_MAX_FMAS),
            # not cut into windows whose probes are a few steps long.
            assert any(key[0] == "gated calls" and key[3:5] == (batch, hidden)
                       for key in _numba._verdicts)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "steps", "hidden", "kernel"),
                         [(1, 40, 20, "direct_stack"), (3, 300, 70, "direct_range")])
def test_plain_calls_run_the_compiled_call_directly(cell, dtype, batch, steps, hidden, kernel,
                                                    assert_close):
    # A plain call planned on one thread in one window (a stream's chunk)
    # calls the compiled kernel straight away, its scratch on the stack or
    # (too large for it) from the heap: the general path's bits (lengths
    # given take it; every sequence whole, the same sums), from any layout
    # of x, with the state or without, each of an LSTM's two or one alone.
    pytest.importorskip("numba")
    w = weights(cell, 5, hidden, dtype, seed=3)
    layer = CELLS[cell][1](*w, threads=1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((batch, steps, 5)).astype(dtype)
    h0, c0 = start_state("lstm", (batch, hidden), dtype)
    states = [None, h0] if cell == "gru" else [None, (h0, c0), (h0, None), (None, c0)]
    whole = np.full(batch, steps)
    for state in states:
        expected = run(cell, layer, x, state, lengths=whole)
        check(expected, reference(cell, x, w, state), assert_close)
        for given in (x, np.asfortranarray(x), x[:, ::-1][:, ::-1]):
            actual = run(cell, layer, given, state)
            for got, want in zip(actual, expected, strict=True):
                np.testing.assert_array_equal(got, want)
                assert got is None or got.flags.c_contiguous
    entry = layer._direct[x.shape]
    assert entry is not False and entry[0].__name__ == kernel
    # A state of the wrong shape: the general path's error, nothing run.
    wrong = np.zeros((batch, hidden + 1), dtype)
    with pytest.raises(ValueError, match="h0"):
        run(cell, layer, x, wrong if cell == "gru" else (wrong, c0))


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_saturation_and_nan(cell, backend, assert_close):
    # Inputs that drive every gate far into saturation (sigmoid near 0 and
    # 1, tanh at +-1), and a NaN, which stays in its own sample only.
    dtype = np.float64
    w = weights(cell, 3, 9, dtype, seed=13, scale=3.0)
    layer = CELLS[cell][1](*w, backend=backend)
    x = np.random.default_rng(14).standard_normal((3, 6, 3)) * 1e3
    check(run(cell, layer, x), reference(cell, x, w), assert_close)
    x[1, 2, 0] = np.nan
    output = run(cell, layer, x)[0]
    assert np.isnan(output[1, 2:]).all() and not np.isnan(output[[0, 2]]).any()


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_weights_copied_and_inputs_untouched(cell, backend):
    w = weights(cell, 4, 10, np.float64, seed=15)
    kept = [a.copy() for a in w]
    layer = CELLS[cell][1](*w, backend=backend)
    x = np.random.default_rng(16).standard_normal((2, 5, 4))
    state = start_state(cell, (2, 10), np.float64)
    before = run(cell, layer, x, state)
    for a in w:
        a[...] = 7.0  # the caller's arrays change; the layer does not
    x_copy = x.copy()
    states_copy = [np.copy(a) for a in (state if cell == "lstm" else (state,))]
    after = run(cell, layer, x, state)
    for b, a in zip(before, after, strict=True):
        assert a is None or np.array_equal(a, b)
    assert np.array_equal(x, x_copy)
    assert all(np.array_equal(a, b) for a, b in
               zip(states_copy, state if cell == "lstm" else (state,), strict=True))
    layer_kept = CELLS[cell][1](*kept, backend=backend)
    assert np.array_equal(run(cell, layer_kept, x, state)[0], before[0])


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_concurrent_callers(cell, backend):
    # One layer called from 8 threads at once, calls and steps: each gets
    # what it gets alone.
    dtype = np.float32
    w = weights(cell, 8, 96, dtype, seed=17)
    layer = CELLS[cell][1](*w, backend=backend)
    rng = np.random.default_rng(18)
    inputs = [rng.standard_normal((3, 40, 8)).astype(dtype) for _ in range(8)]
    alone = [run(cell, layer, x)[0] for x in inputs]
    steps_alone = [layer.step(x[:, 0], np.zeros((3, 96), dtype)) if cell == "gru" else
                   layer.step(x[:, 0], (np.zeros((3, 96), dtype), np.zeros((3, 96), dtype)))[0]
                   for x in inputs]
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()
        for _ in range(5):
            output = run(cell, layer, inputs[k])[0]
            zeros = np.zeros((3, 96), dtype)
            step = (layer.step(inputs[k][:, 0], zeros) if cell == "gru" else
                    layer.step(inputs[k][:, 0], (zeros, zeros.copy()))[0])
            results[k] = (output, step)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(8):
        assert np.array_equal(results[k][0], alone[k])
        assert np.array_equal(results[k][1], steps_alone[k])


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_bad_weights(cell):
    gates, prepare = CELLS[cell]
    w_ih, w_hh, b_ih, b_hh = weights(cell, 4, 6, np.float32)
    with pytest.raises(ValueError, match=rf"w_ih of a .* \({gates} \* hidden_size"):
        prepare(w_ih[:-1], w_hh)
    with pytest.raises(ValueError, match=r"w_hh must have shape"):
        prepare(w_ih, w_hh[:, :-1])
    with pytest.raises(ValueError, match=r"b_hh must have shape"):
        prepare(w_ih, w_hh, b_ih, b_hh[:-1])
    with pytest.raises(TypeError, match=r"share one dtype.*b_ih=float64"):
        prepare(w_ih, w_hh, b_ih.astype(np.float64), b_hh)
    with pytest.raises(TypeError, match=r"float32 or float64"):
        prepare(w_ih.astype(np.int32), w_hh)
    with pytest.raises(ValueError, match=r"backend"):
        prepare(w_ih, w_hh, backend="cuda")
    with pytest.raises(ValueError, match=r"threads"):
        prepare(w_ih, w_hh, threads=0)
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match=r"w_hh of a .* dense array"):
        prepare(w_ih, scipy_sparse.csr_matrix(w_hh))


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_bad_calls(cell, backend):
    layer = CELLS[cell][1](*weights(cell, 4, 6, np.float32), backend=backend)
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"x must have 4 features"):
        layer(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(TypeError, match=r"x and h0 must have the layer's dtype float32"):
        layer(x.astype(np.float64))
    bad_h0 = np.zeros((3, 6), np.float32)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 6\)"):
        layer(x, bad_h0 if cell == "gru" else (bad_h0, None))
    if cell == "lstm":
        with pytest.raises(ValueError, match=r"c0 must have shape \(2, 6\)"):
            layer(x, (None, bad_h0))
        with pytest.raises(TypeError, match=r"state must be a pair"):
            layer(x, np.zeros((2, 6), np.float32))
    # Inputs of other dimensions, with a state given or not: the error names x.
    for wrong in (np.zeros((), np.float32), np.zeros(4, np.float32),
                  np.zeros((1, 2, 3, 4), np.float32)):
        h = np.zeros(6, np.float32)
        for state in (None, h if cell == "gru" else (h, h)):
            with pytest.raises(ValueError, match=r"x must be 3-D"):
                layer(wrong, state)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_bad_steps_modify_nothing(cell, backend):
    layer = CELLS[cell][1](*weights(cell, 4, 6, np.float32), backend=backend)
    x = np.ones((2, 4), np.float32)
    h = np.full((2, 6), 0.5, np.float32)
    c = np.full((2, 6), 0.25, np.float32)

    def step(x_t, h_t, out=None):
        if cell == "gru":
            return layer.step(x_t, h_t, out=out)
        return layer.step(x_t, (h_t, c), out=None if out is None else (out, c))

    cases = [
        ((np.ones((2, 5), np.float32), h), ValueError, r"x_t must have shape \(2, 4\)"),
        ((x, np.zeros((3, 6), np.float32)), ValueError, r"h must have shape \(2, 6\)"),
        ((x.astype(np.float64), h), TypeError, r"x_t must have the layer's dtype float32"),
        ((x, h.astype(np.float64)), TypeError, r"h must have the layer's dtype float32"),
        ((np.ones((2, 2, 4), np.float32), h), ValueError, r"x_t must be \(B, I\)"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            step(*args, out=h)
        assert (h == 0.5).all() and (c == 0.25).all()
    read_only = np.zeros((2, 6), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match=r"writeable"):
        step(x, h, out=read_only)
    with pytest.raises(ValueError, match=r"out's h must have shape \(2, 6\)"):
        step(x, h, out=np.zeros((2, 7), np.float32))
    assert (h == 0.5).all() and (c == 0.25).all()
    if cell == "lstm":
        with pytest.raises(TypeError, match=r"state must be a pair"):
            layer.step(x, h)
        with pytest.raises(ValueError, match=r"c must have shape \(2, 6\)"):
            layer.step(x, (h, np.zeros(6, np.float32)))


def test_repr_and_attributes(backend):
    gru = fastrnn.prepare_gru(*weights("gru", 4, 6, np.float32), backend=backend)
    lstm = fastrnn.prepare_lstm(*weights("lstm", 4, 6, np.float64), threads=1, backend=backend)
    assert repr(gru) == (f"GRULayer(input_size=4, hidden_size=6, dtype=float32, "
                         f"backend={backend!r})")
    assert (lstm.input_size, lstm.hidden_size, lstm.dtype, lstm.threads) == (4, 6,
                                                                             np.float64, 1)
    assert isinstance(gru, fastrnn.GRULayer) and isinstance(lstm, fastrnn.LSTMLayer)
