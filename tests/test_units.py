"""A forward split across threads by its units (fastrnn._units).

The path is taken for B = 1 with a large dense w_hh or a sparse one with many
non-zeros, and for small batches (B < 4 x threads) with a large dense w_hh,
when there is enough work; here its thresholds are lowered so that small
problems take it, and every result is checked against the naive reference.
Also: the thresholds as shipped, a part that fails (the others must not wait
for it forever), and concurrent callers.
"""

from __future__ import annotations

import gc
import threading
import time

import naive
import numpy as np
import pytest

pytest.importorskip("numba")
scipy_sparse = pytest.importorskip("scipy.sparse")

import fastrnn  # noqa: E402
from fastrnn import _numba, _plan, _units  # noqa: E402
from fastrnn._api import run_layer  # noqa: E402

DTYPES = (np.float32, np.float64)
TIMEOUT = 120  # seconds: a deadlock fails the test instead of hanging the suite


def _reservoir(hidden: int, dtype, density: float, seed: int = 3):
    """A sparse CSR w_hh, or a dense array when density is "dense"."""
    if density == "dense":
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(dtype)
    matrix = scipy_sparse.random(hidden, hidden, density=density, random_state=seed,
                                 format="csr", dtype=np.float64)
    scale = 1.5 / np.sqrt(max(density * hidden, 1.0))
    return (matrix * scale).astype(dtype).tocsr()


@pytest.fixture
def forced(monkeypatch):
    """Every call takes the plan of the split path on 3 threads (an uneven
    split, more threads than this machine's 2 cores), whatever its size;
    returns the list of part counts the path was called with."""
    monkeypatch.setattr(_numba, "choose", lambda **_: _plan.checked(_plan.UNITS_SPLIT, 3))
    calls: list[int] = []
    monkeypatch.setattr(_units, "Split", _spy_split(calls))
    return calls


def _spy_split(calls):
    """_units.Split, recording the thread count of every split set up."""

    class Spy(_units.Split):
        def __init__(self, *args):
            calls.append(args[-1])
            super().__init__(*args)

    return Spy


def _problem(make_problem, hidden, dtype, density, *, steps=23, input_size=3, seed=7, **kw):
    problem = make_problem(seed, batch=1, steps=steps, input_size=input_size,
                           hidden_size=hidden, dtype=dtype, **kw)
    problem["w_hh"] = _reservoir(hidden, dtype, density, seed)
    return problem


def _check(problem, assert_close, **options):
    output, h_n = fastrnn.forward(**problem, backend="numba", **options)
    expected_output, expected_h_n = naive.rnn(**problem, **options)
    assert_close(output, expected_output)
    assert_close(h_n, expected_h_n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize(("hidden", "density"), [(1, 1.0), (17, 0.3), (40, 0.1), (100, 0.05),
                                                 (1, "dense"), (17, "dense"), (70, "dense")])
def test_split_matches_naive(forced, make_problem, assert_close, dtype, batch_first,
                             nonlinearity, hidden, density):
    problem = _problem(make_problem, hidden, dtype, density, batch_first=batch_first, h0=True)
    _check(problem, assert_close, nonlinearity=nonlinearity)
    assert forced == [3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize(("batch", "hidden"), [(2, 1), (5, 17), (11, 70), (3, 130)])
def test_split_batch_matches_naive(forced, make_problem, assert_close, dtype, batch_first,
                                   nonlinearity, batch, hidden):
    # Several samples: each thread's units of every sample, through the
    # blocked product of the states and its packed columns of w_hh.T.
    problem = make_problem(batch * 100 + hidden, batch=batch, steps=13, input_size=4,
                           hidden_size=hidden, dtype=dtype, batch_first=batch_first, h0=True)
    _check(problem, assert_close, nonlinearity=nonlinearity)
    assert forced == [3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("out", [False, True])
def test_split_batch_lengths_leak_reverse(forced, make_problem, assert_close, dtype, reverse,
                                          out):
    # Lengths in any order (0 and T included): the running samples are a
    # prefix of the sorted batch, and each one's final state is in the
    # buffer its last step wrote.
    problem = make_problem(41, batch=7, steps=9, input_size=3, hidden_size=45, dtype=dtype,
                           h0=True)
    lengths = np.array([3, 9, 0, 9, 1, 6, 4])
    leak = np.linspace(0.1, 1.0, 45).astype(dtype)
    buffer = np.full((7, 9, 90), 7.0, dtype=dtype) if out else None
    h_n = np.empty((7, 45), dtype=dtype)
    run_layer(problem["x"], problem["w_ih"], problem["w_hh"], problem["b_ih"],
              problem["b_hh"], problem["h0"], None if buffer is None else buffer[..., :45],
              h_n, relu=False, batch_first=True, lengths=lengths, leak=leak, reverse=reverse,
              backend="numba")
    expected_output, expected_h_n = naive.rnn(**problem, lengths=lengths, leak=leak,
                                              reverse=reverse)
    assert_close(h_n, expected_h_n)
    if buffer is not None:
        assert_close(buffer[..., :45], expected_output)
        assert (buffer[..., 45:] == 7.0).all()
    assert forced == [3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("leak", [0.3, "per-unit"])
@pytest.mark.parametrize("length", [23, 11, 0])
@pytest.mark.parametrize("density", [0.1, "dense"])
def test_split_leak_and_lengths(forced, make_problem, assert_close, dtype, leak, length,
                                density):
    problem = _problem(make_problem, 50, dtype, density, h0=True)
    if leak == "per-unit":
        leak = np.linspace(0.05, 1.0, 50).astype(dtype)
    _check(problem, assert_close, leak=leak, lengths=np.array([length]))
    assert forced == [3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.2, "dense"])
def test_split_return_sequences_false_and_out(forced, make_problem, assert_close, dtype,
                                              density):
    problem = _problem(make_problem, 64, dtype, density)
    expected_output, expected_h_n = naive.rnn(**problem, leak=0.5)
    h_n = fastrnn.forward(**problem, leak=0.5, return_sequences=False, backend="numba")
    assert_close(h_n, expected_h_n)
    out = np.full((1, 23, 64), np.nan, dtype=dtype)
    output, h_n = fastrnn.forward(**problem, leak=0.5, out=out, backend="numba")
    assert output is out
    assert_close(out, expected_output)
    assert forced == [3, 3]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("density", [0.2, "dense"])
def test_split_reverse_into_half_of_a_buffer(forced, make_problem, assert_close, batch_first,
                                             density):
    # A bidirectional layer's reverse direction writes half of one buffer.
    problem = _problem(make_problem, 33, np.float64, density, batch_first=batch_first,
                       h0=True)
    buffer = np.full(problem["x"].shape[:2] + (66,), 7.0)
    h_n = np.empty((1, 33))
    lengths = np.array([15])
    run_layer(problem["x"], problem["w_ih"], problem["w_hh"], problem["b_ih"], problem["b_hh"],
              problem["h0"], buffer[..., 33:], h_n, relu=False, batch_first=batch_first,
              lengths=lengths, reverse=True, backend="numba")
    expected_output, expected_h_n = naive.rnn(**problem, lengths=lengths, reverse=True)
    assert_close(buffer[..., 33:], expected_output)
    assert_close(h_n, expected_h_n)
    assert (buffer[..., :33] == 7.0).all()
    assert forced == [3]


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_empty_rows_no_input_and_empty_matrix(forced, make_problem, assert_close, dtype):
    # Rows without non-zeros (a part may own only those), no input features,
    # and a matrix with no non-zeros at all.
    problem = _problem(make_problem, 48, dtype, 0.3, input_size=0)
    dense = problem["w_hh"].toarray()
    dense[8:40] = 0
    problem["w_hh"] = scipy_sparse.csr_matrix(dense)
    _check(problem, assert_close)
    problem["w_hh"] = scipy_sparse.csr_matrix((48, 48), dtype=dtype)
    _check(problem, assert_close)
    assert forced == [3, 3]


def test_split_units_boundaries():
    # Multiples of the lanes (no cache line written by two threads), about
    # equal non-zeros, and every unit owned once.
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=1000)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    for parts in (1, 2, 3, 7):
        cuts = _units.split_units(indptr, 1000, 16, parts)
        assert cuts[0] == 0 and cuts[-1] == 1000 and len(cuts) == parts + 1
        assert all(a <= b for a, b in zip(cuts, cuts[1:], strict=False))
        assert all(c % 16 == 0 for c in cuts[:-1])
        shares = np.diff(indptr[cuts])
        assert shares.max() - shares.min() <= 16 * 50 * 2
    assert _units.split_units(indptr[:6], 5, 16, 3) == [0, 0, 0, 5]


@pytest.mark.skipif(_numba._CORES < 2, reason="the path needs two cores")
@pytest.mark.parametrize(("hidden", "density", "steps"), [(300, 0.1, 2500), (128, "dense", 1300)])
def test_shipped_thresholds_take_the_path(monkeypatch, make_problem, assert_close, hidden,
                                          density, steps):
    # Defaults as a user runs them: 300 units at density 0.1 over 2500 steps,
    # 128 dense units over 1300 steps (just over SPLIT_MIN_FMAS each).
    calls: list[int] = []
    monkeypatch.setattr(_units, "Split", _spy_split(calls))
    problem = _problem(make_problem, hidden, np.float64, density, steps=steps, input_size=1)
    _check(problem, assert_close, leak=0.3)
    assert calls == [min(_numba._THREADS, _numba._CORES)]
    calls.clear()
    fastrnn.forward(**problem, leak=0.3, threads=1)
    fastrnn.forward(**problem, leak=0.3, lengths=np.array([steps // 2]))  # too little work
    assert calls == []


def _run_with_timeout(target):
    result: dict = {}

    def body():
        try:
            result["value"] = target()
        except BaseException as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the call did not return: threads waiting for each other"
    return result


def test_a_failing_part_does_not_hang_the_others(forced, monkeypatch, make_problem):
    original = _units.drive_call

    def failing(*args):
        if args[15] == 2:  # part 2 of 3 (the argument `part`) fails before its first step
            raise RuntimeError("part 2 failed")
        return original(*args)

    monkeypatch.setattr(_units, "drive_call", failing)
    problem = _problem(make_problem, 64, np.float64, "dense", steps=500)
    result = _run_with_timeout(lambda: fastrnn.forward(**problem, backend="numba"))
    assert isinstance(result.get("error"), RuntimeError)
    assert "part 2 failed" in str(result["error"])


def _packed_split(monkeypatch, density, seed=4):
    # A 3-part Split of a 96-unit layer (dense or sparse w_hh), and for
    # each part (by its first unit) the threads that packed it.
    threads: dict[int, list[int]] = {}
    original = _units.pack_layer_call

    def spy(w_ih, dense, b_ih, b_hh, leak, u0, u1, like):
        threads.setdefault(u0, []).append(threading.get_ident())
        return original(w_ih, dense, b_ih, b_hh, leak, u0, u1, like)

    monkeypatch.setattr(_units, "pack_layer_call", spy)
    rng = np.random.default_rng(seed)
    hidden = 96
    w_ih = rng.standard_normal((hidden, 5))
    w_hh = (_reservoir(hidden, np.float64, density) if density != "dense"
            else rng.standard_normal((hidden, hidden)))
    b_ih, b_hh, leak = rng.standard_normal(hidden), rng.standard_normal(hidden), np.full(1, 0.3)
    h_n = np.empty((2, hidden))
    split = _units.Split(w_ih, w_hh, b_ih, b_hh, leak, h_n, None, None, 3)
    return split, threads, (w_ih, w_hh, b_ih, b_hh, leak, h_n)


@pytest.mark.parametrize("density", [0.2, "dense"])
def test_every_part_is_packed_once_as_alone(monkeypatch, density):
    # Split's threads pack the parts at once (Team.share_out): each part
    # once, what packing it alone gives.
    from fastrnn.kernels.cells import pack_layer_call
    from fastrnn.kernels.sparse import sell_pack

    split, threads, (w_ih, w_hh, b_ih, b_hh, leak, h_n) = _packed_split(monkeypatch, density)
    try:
        cuts = split.cuts
        assert sorted(threads) == cuts[:-1]
        assert all(len(packers) == 1 for packers in threads.values())
        dense = w_hh if density == "dense" else None
        for p in range(3):
            u0, u1 = cuts[p], cuts[p + 1]
            np.testing.assert_array_equal(
                split.packed[p], pack_layer_call(w_ih, dense, b_ih, b_hh, leak, u0, u1, h_n))
            if dense is None:
                rows = slice(w_hh.indptr[u0], w_hh.indptr[u1])
                expected = sell_pack(w_hh.indptr[u0:u1 + 1] - w_hh.indptr[u0],
                                     w_hh.indices[rows], w_hh.data[rows], u1 - u0,
                                     w_hh.shape[1])
                for got, want in zip(split.sparse[p], expected, strict=True):
                    np.testing.assert_array_equal(got, want)
            else:
                assert split.sparse[p] is None
    finally:
        split.close()


def test_a_helper_not_yet_running_leaves_its_parts_to_the_caller(monkeypatch):
    # Helpers that the machine runs late (here: each held 0.5 s before its
    # job) claim nothing when they come: the caller packs every part and
    # Split returns without waiting for them.
    from fastrnn import _team

    original = _team.settle

    def late(cpus, part):
        time.sleep(0.5)
        original(cpus, part)

    monkeypatch.setattr(_team, "settle", late)
    split, threads, _ = _packed_split(monkeypatch, "dense")
    try:
        assert sorted(threads) == split.cuts[:-1]
        assert all(packers == [threading.get_ident()] for packers in threads.values())
        assert all(packed is not None for packed in split.packed)
    finally:
        split.close()


def test_a_failing_packer_stops_the_split_threads(monkeypatch):
    # A part whose packing raises: the error reaches the caller, and the
    # threads the split started are stopped (none left waiting).
    def failing(u0, u1):
        if u0 > 0:
            raise RuntimeError("packing failed")
        return np.zeros((1, 1))

    before = {t for t in threading.enumerate() if t.name == "fastrnn-units"}
    w_hh = np.zeros((64, 64))
    with pytest.raises(RuntimeError, match="packing failed"):
        _units.Split(np.zeros((64, 1)), w_hh, None, None, None, np.empty((1, 64)), None, None,
                     2, pack=failing)
    left = {t for t in threading.enumerate() if t.name == "fastrnn-units"} - before
    assert not any(t.is_alive() for t in left)


def test_concurrent_callers(forced, make_problem):
    # Four callers, each splitting its sequence over 3 threads, on 2 cores:
    # all finish, each with the result it gets alone.
    problems = [_problem(make_problem, 80, np.float32, 0.1, steps=400, seed=s) for s in range(4)]
    expected = [fastrnn.forward(**p, backend="numba") for p in problems]
    results: list = [None] * 4

    def call(k):
        results[k] = fastrnn.forward(**problems[k], backend="numba")

    def all_calls():
        threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert "error" not in _run_with_timeout(all_calls)
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert forced == [3] * 8


def test_prepared_layer_keeps_its_split(forced, make_problem, assert_close):
    # A prepared layer's calls reuse one split (its packed weights and its
    # threads): each call starts from its own h0, zeros when None (the
    # split's buffers hold the last call's states), and gives forward's
    # result; a call with lengths makes its own; freeing the layer stops
    # the threads.
    problem = _problem(make_problem, 40, np.float32, "dense", steps=30)
    problem["h0"] = np.random.default_rng(3).standard_normal((1, 40)).astype(np.float32)
    weights = {k: problem.get(k) for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
    layer = fastrnn.prepare(**weights, backend="numba")
    kept = layer._prepared._split
    for h0 in (problem["h0"], None, problem["h0"][::-1].copy(), None):
        output, h_n = layer(problem["x"], h0)
        expected = naive.rnn(**dict(problem, h0=h0))
        assert_close(output, expected[0])
        assert_close(h_n, expected[1])
    assert forced == [3]  # one split, made by the first call
    split = kept[0]
    workers = list(split.team.workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    layer(problem["x"], lengths=np.array([20]))
    assert forced == [3, 3] and kept[0] is split
    del layer
    gc.collect()
    for worker in workers:
        worker.join(timeout=10)
    assert not any(w.is_alive() for w in workers)


def test_split_wake_ups_do_not_pile_up(make_problem):
    # A part's finish is read from its count; the queue item that also wakes
    # the caller is left behind when the count was seen first, and dropped
    # after each window: a stream of short calls on a kept split once left
    # one item a window (1950 after 3000 calls).
    problem = make_problem(3, batch=1, steps=20, input_size=3, hidden_size=70,
                           dtype=np.float32, h0=True)
    h_n = np.empty_like(problem["h0"])
    none = np.empty(0, np.float32)  # (no bias, no leak: as _numba.forward passes them)
    split = _units.Split(problem["w_ih"], problem["w_hh"], none, none, none, h_n, None, None, 2)
    cell = _numba.elman(False, False)
    chunk = _plan.chunk_steps(1, 70)
    try:
        for _ in range(500):
            split.run(problem["x"], problem["h0"], np.empty((0, 0, 0), np.float32), 0, h_n,
                      cell, True, False, 0, 20, chunk)  # (no output)
            assert split.team.done.qsize() <= 1  # (a finish whose put came after the drop)
    finally:
        split.close()
    # (The units split gives one thread's bits.)
    _, expected = fastrnn.forward(problem["x"], problem["w_ih"], problem["w_hh"],
                                  h0=problem["h0"], threads=1)
    assert np.array_equal(h_n, expected)
