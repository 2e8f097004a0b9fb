"""Layer.step on the layer's crew (fastrnn._crew): helper threads that stay
in compiled code between steps. The crew's steps against the formula and
against one thread (the same sums, so the same bits), in place, one sample,
a growing batch, 8 concurrent callers, the ways timed against each other,
and the helpers gone when the layer is (after a fork: tests/test_fork.py)."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import fastrnn

pytest.importorskip("numba")

from fastrnn import _crew, _layer, _numba, _plan  # noqa: E402

DTYPES = (np.float32, np.float64)


@pytest.fixture
def crew_always(monkeypatch):
    # Two cores whatever the machine, and every step the crew may take on it.
    monkeypatch.setattr(_numba, "_CORES", 2)
    monkeypatch.setattr(_plan.CrewVerdict, "way", lambda self, now: True)


def _layer_and_naive(make_problem, dtype, batch, hidden, *, leak=None, relu=False, seed=5,
                     input_size=7, threads=2):
    problem = make_problem(seed, dtype=dtype, batch=batch, steps=4, input_size=input_size,
                           hidden_size=hidden, h0=True)
    weights = {k: problem[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
    layer = fastrnn.prepare(**weights, leak=leak, nonlinearity="relu" if relu else "tanh",
                            threads=threads, backend="numba")
    return problem, weights, layer


def _naive_step(x_t, h, weights, relu, leak):
    pre = (x_t.astype(np.float64) @ weights["w_ih"].T.astype(np.float64) + weights["b_ih"]
           + h.astype(np.float64) @ weights["w_hh"].T.astype(np.float64) + weights["b_hh"])
    new = np.maximum(pre, 0) if relu else np.tanh(pre)
    return new if leak is None else (1 - leak) * h + leak * new


def _crew_steps(layer):
    # How many steps the layer's crew has posted.
    crew = layer._crew[0]
    return 0 if crew is None else int(crew.ctrl[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "hidden", "leak", "relu"), [
    (1, 600, None, False), (3, 530, 0.3, False), (9, 300, None, True), (40, 257, 0.7, True)])
def test_crew_steps_against_naive_and_one_thread(crew_always, make_problem, assert_close, dtype,
                                                 batch, hidden, leak, relu):
    # Odd sizes: units not a whole number of vectors, cuts on cache lines,
    # the last part narrower; every sample a step of its own.
    problem, weights, layer = _layer_and_naive(make_problem, dtype, batch, hidden, leak=leak,
                                               relu=relu)
    one = fastrnn.prepare(**weights, leak=leak, nonlinearity="relu" if relu else "tanh",
                          threads=1, backend="numba")
    assert layer._crew_size <= batch * hidden
    h = problem["h0"].copy()
    h_one = problem["h0"].copy()
    for t in range(4):
        x_t = problem["x"][:, t]
        expected = _naive_step(x_t, h, weights, relu, leak)
        before = h.copy()
        new = layer.step(x_t, h)
        np.testing.assert_array_equal(h, before)  # h read, not written
        assert_close(new, expected)
        if batch > 1:
            # The same blocks of rows and sums as one thread's kernel: the
            # same bits (one sample alone on one thread is NumPy's product).
            np.testing.assert_array_equal(new, one.step(x_t, h_one, out=h_one))
        h = new
    assert _crew_steps(layer) == 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_crew_in_place_and_one_sample(crew_always, make_problem, assert_close, dtype):
    problem, weights, layer = _layer_and_naive(make_problem, dtype, 2, 520)
    x = problem["x"]
    h = problem["h0"].copy()
    expected = _naive_step(x[:, 0], h, weights, False, None)
    assert layer.step(x[:, 0], h, out=h) is h
    assert_close(h, expected)
    # One sequence as 1-D arrays, in place, read-only and strided inputs.
    h1 = problem["h0"][1].copy()
    x1 = np.asfortranarray(x[:, 0])[1]
    x1.flags.writeable = False
    assert layer.step(x1, h1, out=h1) is h1
    assert_close(h1, _naive_step(x[1, 0], problem["h0"][1], weights, False, None))
    assert _crew_steps(layer) == 2


def test_crew_grows_with_the_batch(crew_always, make_problem, assert_close):
    problem, weights, layer = _layer_and_naive(make_problem, np.float32, 12, 520)
    x, h0 = problem["x"], problem["h0"]
    for batch in (1, 5, 12, 2):
        assert_close(layer.step(x[:batch, 0], h0[:batch]),
                     _naive_step(x[:batch, 0], h0[:batch], weights, False, None))
    crew = layer._crew[0]
    assert crew.capacity >= 12
    names = [t.name for t in threading.enumerate()]
    assert names.count("fastrnn-crew") >= 1


def test_crew_concurrent_callers_get_their_own_steps(crew_always, make_problem):
    # 8 threads step one layer at once: one at a time holds the crew, the
    # others run the step on their own thread; each gets its step's states.
    problem, weights, layer = _layer_and_naive(make_problem, np.float64, 8, 520)
    x, h0 = problem["x"], problem["h0"]
    expected = [_naive_step(x[k:k + 1, 1], h0[k:k + 1], weights, False, None) for k in range(8)]
    results: dict[int, list] = {k: [] for k in range(8)}
    barrier = threading.Barrier(8)

    def run(k):
        barrier.wait()
        for _ in range(50):
            results[k].append(layer.step(x[k:k + 1, 1], h0[k:k + 1]))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(8):
        for result in results[k]:
            np.testing.assert_allclose(result, expected[k], rtol=1e-12, atol=1e-12)
    assert _crew_steps(layer) > 0


def test_crew_steps_follow_the_timed_way(monkeypatch, make_problem):
    # The ways are timed in blocks (fastrnn._plan.CrewVerdict): one thread
    # when it was faster, the crew when it was, each until the decision's
    # revision.
    monkeypatch.setattr(_numba, "_CORES", 2)
    problem, _, layer = _layer_and_naive(make_problem, np.float32, 4, 520)
    x, h = problem["x"][:, 0], problem["h0"]
    now = [0.0]
    seconds = {True: 3e-3, False: 1e-3}  # a step's time each way: one thread faster
    real_step = _crew.Crew.step

    def timed_step(self, *args):
        now[0] += seconds[True]
        return real_step(self, *args)

    real_one = fastrnn.Layer._one_thread_step

    def timed_one(self, *args):
        now[0] += seconds[False]
        return real_one(self, *args)

    monkeypatch.setattr(_layer, "_clock", lambda: now[0])
    monkeypatch.setattr(_crew.Crew, "step", timed_step)
    monkeypatch.setattr(fastrnn.Layer, "_one_thread_step", timed_one)
    for _ in range(60):
        layer.step(x, h)
    verdict = layer._crew_verdicts[4]
    assert verdict.comparing is None and not verdict.split
    # Decided for one thread: until the decision's revision its steps go
    # straight to the one-thread kernel, past the crew's routing, with one
    # thread's bits.
    posted = _crew_steps(layer)
    routed = [0]
    real_timed = fastrnn.Layer._timed

    def counted(self, *args):
        routed[0] += 1
        return real_timed(self, *args)

    monkeypatch.setattr(fastrnn.Layer, "_timed", counted)
    one = fastrnn.prepare(*(problem[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")), threads=1,
                          backend="numba")
    for _ in range(10):
        assert np.array_equal(layer.step(x, h), one.step(x, h))
    assert _crew_steps(layer) == posted and routed[0] == 0
    # Then both ways are timed again: the crew, faster now, is chosen.
    seconds[True], seconds[False] = 1e-4, 1e-2
    now[0] += verdict.revise
    for _ in range(200):
        layer.step(x, h)
    assert routed[0] > 0
    assert verdict.comparing is None and verdict.split
    posted = _crew_steps(layer)
    layer.step(x, h)
    assert _crew_steps(layer) == posted + 1


def test_crew_helpers_stop_with_the_layer(crew_always, make_problem):
    problem, _, layer = _layer_and_naive(make_problem, np.float32, 2, 520)
    layer.step(problem["x"][:, 0], problem["h0"])
    helpers = [t for t in threading.enumerate() if t.name == "fastrnn-crew"
               and t in layer._crew[0]._helpers]
    assert helpers
    del layer
    gc.collect()
    for helper in helpers:
        helper.join(timeout=10)
        assert not helper.is_alive()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "hidden", "leak"), [(1, 300, None), (3, 260, 0.4)])
def test_stream_chunks_on_the_crew_give_one_calls_bits(crew_always, monkeypatch, make_problem,
                                                       dtype, batch, hidden, leak):
    # A plain call planned on the units split but too short for windows (a
    # stream's chunk) runs on the crew (Crew.run_chunk): each thread its
    # units of every step, a barrier between steps. The same cuts and sums
    # as one thread: the bits of one thread's calls on the same chunks, with
    # h0 or without, and the caller's arrays are left as they were.

    def choose(**kwargs):
        if kwargs["limit"] > 1:
            return _plan.checked(_plan.UNITS_SPLIT, 2)
        return _plan.checked(_plan.BLOCKED)

    monkeypatch.setattr(_numba, "choose", choose)
    problem, weights, layer = _layer_and_naive(make_problem, dtype, batch, hidden, leak=leak)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((batch, 30, 7)).astype(dtype)
    h0 = problem["h0"]
    one = fastrnn.prepare(**weights, leak=leak, threads=1, backend="numba")
    chunks = [np.ascontiguousarray(x[:, s:s + 10]) for s in range(0, 30, 10)]
    copies = [chunk.copy() for chunk in chunks]
    for start in (None, h0):
        h = h_one = start
        for chunk in chunks:
            output, h = layer(chunk, h)
            expected, h_one = one(chunk, h_one)
            np.testing.assert_array_equal(output, expected)
            np.testing.assert_array_equal(h, h_one)
    for chunk, copy in zip(chunks, copies, strict=True):
        np.testing.assert_array_equal(chunk, copy)
    np.testing.assert_array_equal(h0, problem["h0"])
    assert layer._crew[0].steps_capacity >= 10
    assert _crew_steps(layer) == 6  # every chunk on the crew
    # A longer chunk: a crew with room for it.
    output, h_n = layer(x, h0)
    expected, h_one = one(x, h0)
    np.testing.assert_array_equal(output, expected)
    np.testing.assert_array_equal(h_n, h_one)
    assert layer._crew[0].steps_capacity >= 30
