"""fastrnn._plan: the path and threads of a call, decided in pure Python.

The kernels of each path are checked against the naive reference in
tests/test_kernel_paths.py and tests/test_units.py (with plans forced), the
NumPy path's hand-over here; here also the decisions themselves: which plan
each kind of call gets, at the thresholds' edges, and the cores a CPU quota allows.
"""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest

import fastrnn
from fastrnn import _numba, _plan
from fastrnn._plan import (
    BATCH_SPLIT,
    BLOCKED,
    NUMPY,
    SMALL,
    UNITS_SPLIT,
    Plan,
    available_cores,
    plan,
)
from fastrnn.kernels.simd import TARGET

DTYPES = [np.float32, np.float64]


def _plan_of(batch=1, hidden=8, input_size=4, steps=10, recurrent=None, dense=True, plain=True,
             limit=2, cores=2, fused=True, itemsize=8):
    return plan(batch=batch, hidden=hidden, input_size=input_size, rows=batch * steps,
                recurrent=hidden * hidden if recurrent is None else recurrent, dense=dense,
                plain=plain, limit=limit, cores=cores, fused=fused, itemsize=itemsize)


def test_one_small_sequence():
    assert _plan_of(hidden=_plan.SMALL_MAX_HIDDEN) == Plan(SMALL)
    # Larger, with an option, sparse, or two sequences: not the small kernel.
    assert _plan_of(hidden=_plan.SMALL_MAX_HIDDEN + 1) == Plan(BLOCKED)
    assert _plan_of(plain=False) == Plan(BLOCKED)
    assert _plan_of(dense=False, recurrent=10) == Plan(BLOCKED)
    assert _plan_of(batch=2) == Plan(BLOCKED)


@pytest.mark.skipif(not _plan.UNITS_SPLIT_AVAILABLE, reason="no sched_yield here")
def test_a_prepared_layers_kept_split_starts_at_less_work():
    # A prepared layer keeps its split between calls, so a chunk of a stream
    # is split from KEPT_SPLIT_MIN_FMAS on, a call of its own from
    # SPLIT_MIN_FMAS on.
    hidden = 256
    per_step = hidden * (16 + hidden)
    steps = _plan.KEPT_SPLIT_MIN_FMAS // per_step + 1
    assert steps * per_step < _plan.SPLIT_MIN_FMAS
    common = dict(batch=1, hidden=hidden, input_size=16, rows=steps, recurrent=hidden * hidden,
                  dense=True, plain=True, limit=2, cores=2)
    assert plan(**common, kept=True) == Plan(UNITS_SPLIT, 2)
    assert plan(**common) == Plan(BLOCKED)
    assert plan(**{**common, "rows": steps - 2}, kept=True) == Plan(BLOCKED)
    assert plan(**{**common, "limit": 1}, kept=True) == Plan(BLOCKED)


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _stream(verdict, clock, seconds, calls, fmas=1e6):
    # `calls` calls judged one after another, each taking seconds[way] (a
    # number, or a list whose values the way's calls take in turn); returns
    # the ways they ran.
    ways = []
    turns = {True: 0, False: 0}
    for _ in range(calls):
        way = _plan.call_way(verdict, clock)
        taken = seconds[way]
        if isinstance(taken, list):
            taken = taken[turns[way] % len(taken)]
            turns[way] += 1
        clock.now += taken
        _plan.judge_call(verdict, way, fmas, taken, clock)
        ways.append(way)
    return ways


def _counted(seconds, turn=0):
    # The counted calls of a comparison's block of calls taking `seconds`
    # (as in _stream, from the way's call number `turn` on): CALL_TRIALS,
    # and CALL_BLOCK_SECONDS of them.
    taken = seconds if isinstance(seconds, list) else [seconds]
    calls, spent = 0, 0.0
    while calls < _plan.CALL_TRIALS or spent < _plan.CALL_BLOCK_SECONDS:
        spent += taken[(turn + calls) % len(taken)]
        calls += 1
    return calls


def _decided(verdict, clock, seconds):
    # The first comparison of a stream, the threads first; returns its ways.
    blocks = {way: _plan.CALL_FIRST_WARMUP + _counted(seconds[way], _plan.CALL_FIRST_WARMUP)
              for way in (True, False)}
    ways = _stream(verdict, clock, seconds, blocks[True] + blocks[False])
    assert ways == [True] * blocks[True] + [False] * blocks[False]
    return ways


@pytest.mark.parametrize("split_seconds, expect_split", [(0.5e-3, True), (0.95e-3, False)])
def test_short_calls_of_a_kept_split_are_timed_against_one_thread(split_seconds, expect_split):
    # One thread takes 1 ms a call; the threads are kept only when they are
    # CALL_MIN_GAIN times faster (0.5 ms), not at 0.95 ms.
    clock = _Clock()
    verdict = _plan.Verdict()
    seconds = {True: split_seconds, False: 1e-3}
    # A block of calls each way, the threads first; the first calls of each
    # block are not counted (more in a way's first block).
    _decided(verdict, clock, seconds)
    assert verdict.split is expect_split
    assert verdict.rate == pytest.approx(1e6 / seconds[expect_split])
    # Then every call goes that way until REVISE_SECONDS have passed...
    assert _stream(verdict, clock, seconds, 5) == [expect_split] * 5
    clock.now += _plan.REVISE_SECONDS
    # ... and both are timed again (the threads' block counts at once when
    # the calls before were theirs).
    block = {way: _plan.CALL_WARMUP + _counted(seconds[way]) for way in (True, False)}
    first = _counted(seconds[True]) if expect_split else block[True]
    assert _stream(verdict, clock, seconds, first + block[False]) == (
        [True] * first + [False] * block[False])
    assert _stream(verdict, clock, seconds, 3) == [expect_split] * 3


def test_a_comparison_counts_the_threads_slow_calls_at_their_time():
    # With another process on the second core, a tenth or so of the threads'
    # calls wait for their helper's core, 8x slower. The threads' block is
    # their total time: one slow call in 8 (0.75 ms on average, against one
    # thread's 1 ms) keeps them; one in 4 (1.1 ms) does not, though their
    # median call and their fastest are 2.5x faster than one thread's.
    for tail, expect_split in (([0.4e-3] * 7 + [3.2e-3], True), ([0.4e-3] * 3 + [3.2e-3], False)):
        clock = _Clock()
        verdict = _plan.Verdict()
        seconds = {True: tail, False: 1e-3}
        _decided(verdict, clock, seconds)
        assert verdict.split is expect_split
        if expect_split:  # the rate of the block's calls, the slow ones counted
            counted = _counted(tail, _plan.CALL_FIRST_WARMUP)
            taken = [tail[(_plan.CALL_FIRST_WARMUP + i) % len(tail)] for i in range(counted)]
            assert verdict.rate == pytest.approx(counted * 1e6 / sum(taken))


def test_a_block_rate_is_its_total_work_over_its_total_time():
    # Calls of the same work: 1e6 multiply-adds in 1 ms and in 3 ms run 2e6
    # in 4 ms; a call of no work (rate 0) does not divide by zero.
    assert _plan.call_rate([1e9, 1e6 / 3e-3]) == pytest.approx(2e6 / 4e-3)
    assert _plan.call_rate([0.0, 1e9]) == 0.0


def test_a_slow_call_of_the_chosen_way_starts_a_new_comparison():
    clock = _Clock()
    verdict = _plan.Verdict()
    fast = {True: 0.4e-3, False: 1e-3}
    _decided(verdict, clock, fast)
    assert verdict.split is True
    assert _stream(verdict, clock, fast, _plan.CALL_RECENT) == [True] * _plan.CALL_RECENT
    # Another process starts: the threads' calls take 8x as long. Over the
    # last CALL_RECENT calls, one slow call keeps the threads' rate above
    # SLOWDOWN times their rate when chosen, the second does not and starts
    # a comparison; the calls that follow are its blocks.
    busy = {True: 3.2e-3, False: 1e-3}
    assert _stream(verdict, clock, busy, 1) == [True]
    assert verdict.when > -math.inf
    assert _stream(verdict, clock, busy, 1) == [True]
    assert verdict.when == -math.inf
    block = _plan.CALL_WARMUP + _counted(busy[False])
    assert _stream(verdict, clock, busy, _counted(busy[True]) + block) == (
        [True] * _counted(busy[True]) + [False] * block)
    assert verdict.split is False
    assert _stream(verdict, clock, busy, 3) == [False] * 3


def test_rare_slow_calls_do_not_start_a_comparison():
    # This VM's quiet calls of a stream: a slow one now and then (0.24% of a
    # gated layer's chunks over twice the median). One 8x slower call in
    # CALL_RECENT keeps the verdict; one in four starts a comparison.
    clock = _Clock()
    verdict = _plan.Verdict()
    fast = {True: 0.4e-3, False: 1e-3}
    slow = {True: 3.2e-3, False: 1e-3}
    _decided(verdict, clock, fast)
    assert verdict.split is True
    decided = verdict.when
    # Right after the decision: too few recent calls to judge by one.
    assert _stream(verdict, clock, slow, 1) == [True]
    assert verdict.when == decided
    for _ in range(10):
        assert _stream(verdict, clock, fast, _plan.CALL_RECENT - 1) == [True] * (
            _plan.CALL_RECENT - 1)
        assert _stream(verdict, clock, slow, 1) == [True]
        assert verdict.when == decided
    for _ in range(_plan.CALL_RECENT // 4):
        assert _stream(verdict, clock, fast, 3) + _stream(verdict, clock, slow, 1) == [True] * 4
    assert verdict.when == -math.inf


@pytest.mark.skipif(not _plan.UNITS_SPLIT_AVAILABLE or _numba._CORES < 2,
                    reason="the path needs sched_yield and two cores")
def test_a_stream_through_a_prepared_layer_follows_the_verdict(monkeypatch, make_problem,
                                                                assert_close):
    # 100-step chunks of one H = 256 sequence through a prepared layer: each
    # chunk's plan is the kept units split, and whole calls are timed each
    # way. A clock that makes the threads' calls slow sends the rest of the
    # stream to one thread; the states are the one-call states either way.
    from fastrnn import _layer, _units

    monkeypatch.setattr(_numba, "_THREADS", 2)
    monkeypatch.setattr(_numba, "_verdicts", {})
    # The kept split, not the layer's crew (a dense chunk's way since: see
    # tests/test_crew.py).
    monkeypatch.setattr(_layer, "CREW_CHUNK_MAX_VALUES", 0)
    runs = []
    original_run = _units.Split.run

    def counted_run(self, *args, **kwargs):
        runs.append(self.parts)
        return original_run(self, *args, **kwargs)

    original_judge = _plan.judge_call

    def slow_threads(verdict, split, fmas, seconds, clock, *gain):
        # The threads' calls take 10 ms, one thread's 1 ms.
        return original_judge(verdict, split, fmas, 0.01 if split else 0.001, clock, *gain)

    monkeypatch.setattr(_units.Split, "run", counted_run)
    monkeypatch.setattr(_numba, "judge_call", slow_threads)
    # Blocks of CALL_TRIALS calls (the tests above time longer blocks).
    monkeypatch.setattr(_plan, "CALL_BLOCK_SECONDS", 0.0)
    steps = 4000
    problem = make_problem(7, batch=1, steps=steps, input_size=16, hidden_size=256, h0=True,
                           dtype=np.float32)
    expected, expected_h_n = fastrnn.forward(**problem, backend="numpy")
    layer = fastrnn.prepare(problem["w_ih"], problem["w_hh"], problem["b_ih"],
                            problem["b_hh"])
    h = problem["h0"]
    outputs = []
    for t in range(0, steps, 100):
        output, h = layer(problem["x"][:, t:t + 100], h)
        outputs.append(output)
    assert_close(np.concatenate(outputs, axis=1), expected)
    assert_close(h, expected_h_n)
    # A block of calls on the threads, then one on one thread, which wins:
    # then none on the threads (40 calls in all).
    assert runs == [2] * (_plan.CALL_FIRST_WARMUP + _plan.CALL_TRIALS), runs
    verdict, = _numba._verdicts.values()
    assert verdict.split is False
    # A long call of the same shape has a verdict of its own (its windows do
    # not pay a hand-off each), and runs on the threads.
    before = len(runs)
    long = {**problem, "x": np.concatenate([problem["x"]] * 10, axis=1)}
    layer(long["x"], long["h0"])
    assert len(runs) > before
    assert len(_numba._verdicts) == 2


@pytest.mark.skipif(not _plan.UNITS_SPLIT_AVAILABLE or _numba._CORES < 2,
                    reason="the path needs sched_yield and two cores")
def test_a_short_call_does_not_start_threads_while_the_kept_split_is_busy(monkeypatch,
                                                                          make_problem,
                                                                          assert_close):
    # While another call holds the layer's kept split, a chunk too short to
    # start threads for runs on its caller's thread.
    from fastrnn import _layer, _units

    monkeypatch.setattr(_numba, "_THREADS", 2)
    monkeypatch.setattr(_layer, "CREW_CHUNK_MAX_VALUES", 0)  # (the kept split, not the crew)
    made = []
    original_init = _units.Split.__init__

    def counted_init(self, *args, **kwargs):
        made.append(args)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(_units.Split, "__init__", counted_init)
    problem = make_problem(8, batch=1, steps=100, input_size=16, hidden_size=256, h0=True,
                           dtype=np.float32)
    expected, expected_h_n = fastrnn.forward(**problem, backend="numpy")
    layer = fastrnn.prepare(problem["w_ih"], problem["w_hh"], problem["b_ih"],
                            problem["b_hh"])
    lock = layer._prepared._split_lock
    assert lock.acquire(blocking=False)  # as another call of the layer would
    try:
        output, h_n = layer(problem["x"], problem["h0"])
    finally:
        lock.release()
    assert made == []
    assert_close(output, expected)
    assert_close(h_n, expected_h_n)
    layer(problem["x"], problem["h0"])  # free: the kept split is made
    assert len(made) == 1


@pytest.mark.skipif(not _plan.UNITS_SPLIT_AVAILABLE, reason="no sched_yield here")
def test_units_split_of_one_long_sequence():
    hidden = _plan.SPLIT_MIN_HIDDEN
    steps = _plan.SPLIT_MIN_FMAS // (hidden * (hidden + 1)) + 1
    assert _plan_of(hidden=hidden, input_size=1, steps=steps) == Plan(UNITS_SPLIT, 2)
    # Threads are capped by the cores, and one thread allowed means none.
    assert _plan_of(hidden=hidden, input_size=1, steps=steps, limit=8, cores=3) == Plan(
        UNITS_SPLIT, 3)
    assert _plan_of(hidden=hidden, input_size=1, steps=steps, limit=1) == Plan(BLOCKED)
    assert _plan_of(hidden=hidden, input_size=1, steps=steps, cores=1) == Plan(BLOCKED)
    # Too little work, or too few units.
    assert _plan_of(hidden=hidden, input_size=1, steps=steps // 2) == Plan(BLOCKED)
    assert _plan_of(hidden=hidden - 1, input_size=1, steps=10 * steps) == Plan(BLOCKED)
    # A sparse w_hh: by its non-zeros.
    nonzeros = _plan.SPLIT_MIN_NONZEROS
    steps = _plan.SPLIT_MIN_FMAS // nonzeros + 1
    assert _plan_of(hidden=1000, input_size=0, steps=steps, recurrent=nonzeros, dense=False,
                    plain=False) == Plan(UNITS_SPLIT, 2)
    assert _plan_of(hidden=1000, input_size=0, steps=10 * steps, recurrent=nonzeros - 1,
                    dense=False) == Plan(BLOCKED)


@pytest.mark.skipif(not _plan.UNITS_SPLIT_AVAILABLE, reason="no sched_yield here")
def test_small_batch_of_large_states_splits_units():
    hidden = _plan.BATCH_SPLIT_MIN_HIDDEN
    # B = 4 on 2 threads: too few samples for a 4-sample block each.
    assert _plan_of(batch=4, hidden=hidden, steps=100) == Plan(UNITS_SPLIT, 2)
    assert _plan_of(batch=8, hidden=hidden, steps=100) == Plan(BATCH_SPLIT, 2)
    assert _plan_of(batch=4, hidden=hidden - 1, steps=100) == Plan(BATCH_SPLIT, 2)


@pytest.mark.skipif(not _plan.UNITS_SPLIT_AVAILABLE, reason="no sched_yield here")
@pytest.mark.parametrize("itemsize", [4, 8])
def test_batch_of_heavy_weights_splits_units(itemsize):
    # Split by samples, each thread would read all of w_ih and w_hh every
    # step: from UNITS_SPLIT_MIN_BYTES on, each thread reads its units'.
    values = _plan.UNITS_SPLIT_MIN_BYTES // itemsize  # H * (H + I)
    heavy = {"batch": 32, "hidden": 512, "input_size": values // 512 - 512,
             "steps": 50, "itemsize": itemsize}
    assert _plan_of(**heavy) == Plan(UNITS_SPLIT, 2)
    assert _plan_of(**dict(heavy, input_size=heavy["input_size"] - 1)) == Plan(BATCH_SPLIT, 2)
    assert _plan_of(**dict(heavy, recurrent=10**6, dense=False)) == Plan(BATCH_SPLIT, 2)
    assert _plan_of(**dict(heavy, limit=1)) == Plan(BLOCKED)


def test_chunks_hold_a_fixed_number_of_values():
    # Whatever w_ih's size: about CHUNK_ELEMENTS values (samples x (H + 1)),
    # at least one step.
    assert _plan.chunk_steps(1, 8) == _plan.CHUNK_ELEMENTS // 9
    assert _plan.chunk_steps(32, 1024) == 1  # 32 K values / (32 x 1025)
    assert _plan.chunk_steps(4, 1000) == _plan.CHUNK_ELEMENTS // 4004
    assert _plan.chunk_steps(0, 64) == _plan.CHUNK_ELEMENTS
    assert _plan.chunk_steps(512, 4096) == 1


def test_batch_split():
    steps = _plan.PARALLEL_MIN_FMAS // (64 * 128) + 1
    assert _plan_of(batch=64, hidden=64, input_size=64, steps=steps // 64 + 1) == Plan(
        BATCH_SPLIT, 2)
    # Threads as allowed, up to one per sample.
    assert _plan_of(batch=3, hidden=64, input_size=64, steps=steps, limit=8) == Plan(
        BATCH_SPLIT, 3)
    assert _plan_of(batch=64, hidden=64, input_size=64, steps=1) == Plan(BLOCKED)
    assert _plan_of(batch=64, hidden=64, input_size=64, steps=steps, limit=1) == Plan(BLOCKED)


@pytest.mark.parametrize(("batch", "parts", "bounds", "whole"), [
    (8, 2, [0, 4, 8], True), (6, 2, [0, 3, 6], False), (10, 3, [0, 3, 6, 10], False),
    (24, 3, [0, 8, 16, 24], True), (3, 8, [0, 1, 2, 3], False)])
def test_batch_split_shares(monkeypatch, batch, parts, bounds, whole):
    # The shares of a batch without lengths (made once per batch and parts)
    # and whether they are whole blocks of 4 samples (then the caller alone
    # runs the batch at once, with the same bits).
    monkeypatch.setattr(_numba, "_SHARES", {})
    x = np.zeros((batch, 2, 3), np.float32)
    h_n = np.zeros((batch, 4), np.float32)
    for _ in range(2):  # made, then taken from the cache
        _, whole_blocks = _numba._batch_split(x, np.zeros((8, 16), np.float32), None, None, None,
                                              0, h_n, True, None, None, False, parts, 1)
        assert whole_blocks is whole
        (key, (cached, cached_whole)), = _numba._SHARES.items()
        assert key == (batch, min(parts, batch)) and cached_whole is whole
        assert cached.tolist() == bounds


def test_batch_split_shares_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_numba, "_SHARES", {})
    for batch in range(1, 600):
        h_n = np.zeros((batch, 4), np.float32)
        _numba._batch_split(np.zeros((batch, 1, 1), np.float32), np.zeros((8, 16), np.float32),
                            None, None, None, 0, h_n, True, None, None, False, 2, 1)
    assert 0 < len(_numba._SHARES) <= 256


@pytest.mark.parametrize("itemsize", [4, 8])
def test_numpy_path_for_large_states_without_fma(itemsize):
    hidden = _plan.NUMPY_MIN_STATE_BYTES // itemsize  # float32 256, float64 128
    batch = _plan.NUMPY_MIN_BATCH
    steps = 10_000
    assert _plan_of(batch=batch, hidden=hidden, steps=steps, fused=False,
                    itemsize=itemsize) == Plan(NUMPY)
    # Any larger batch, with any option.
    assert _plan_of(batch=4 * batch, hidden=hidden, steps=steps, fused=False,
                    itemsize=itemsize) == Plan(NUMPY)
    assert _plan_of(batch=batch, hidden=hidden, steps=steps, plain=False, fused=False,
                    itemsize=itemsize) == Plan(NUMPY)
    # Below the thresholds (in units, samples or work), with FMA (the
    # default): the compiled paths, as with FMA.
    for below in (dict(batch=batch, hidden=hidden - 1, steps=steps),
                  dict(batch=batch - 1, hidden=4 * hidden, steps=steps),
                  dict(batch=2, hidden=4 * hidden, steps=steps),
                  dict(batch=batch, hidden=hidden, steps=1)):
        compiled = _plan_of(**below, fused=False, itemsize=itemsize)
        assert compiled.path != NUMPY, below
        assert compiled == _plan_of(**below, itemsize=itemsize), below
    fused = _plan_of(batch=batch, hidden=hidden, steps=steps, fused=True, itemsize=itemsize)
    assert fused.path != NUMPY
    assert fused == _plan_of(batch=batch, hidden=hidden, steps=steps, itemsize=itemsize)
    # A sparse w_hh of that size keeps its compiled gathers.
    assert _plan_of(batch=batch, hidden=hidden, steps=steps, recurrent=hidden * 100,
                    dense=False, fused=False, itemsize=itemsize).path != NUMPY
    # One thread allowed or available: the compiled product (NumPy's BLAS
    # would not keep to threads=1).
    assert _plan_of(batch=batch, hidden=hidden, steps=steps, limit=1, fused=False,
                    itemsize=itemsize).path != NUMPY
    assert _plan_of(batch=batch, hidden=hidden, steps=steps, cores=1, fused=False,
                    itemsize=itemsize).path != NUMPY


def test_numpy_path_for_one_sample_without_fma_float32_only():
    # One sample is BLAS's gemv: from NUMPY_MIN_HIDDEN_ONE units on in
    # float32; in float64 the compiled split was faster at every size.
    many = _plan.NUMPY_MIN_HIDDEN_ONE
    assert _plan_of(hidden=many, input_size=1, steps=10_000, fused=False,
                    itemsize=4) == Plan(NUMPY)
    for hidden, itemsize in ((many - 1, 4), (many, 8), (4 * many, 8)):
        compiled = _plan_of(hidden=hidden, input_size=1, steps=10_000, fused=False,
                            itemsize=itemsize)
        assert compiled.path == UNITS_SPLIT, (hidden, itemsize)
        assert compiled == _plan_of(hidden=hidden, input_size=1, steps=10_000,
                                    itemsize=itemsize)
    # A GRU's or LSTM's one sample stays compiled (planned as G x H units:
    # an LSTM of H = many); its batches of 32 follow the rule.
    lstm = dict(hidden=4 * many, input_size=1, recurrent=4 * many * many, dense=True,
                plain=False, limit=2, cores=2, fused=False, itemsize=4, gated=True)
    assert plan(batch=1, rows=10_000, **lstm).path == UNITS_SPLIT
    assert plan(batch=32, rows=320_000, **lstm) == Plan(NUMPY)
    assert plan(batch=1, rows=10_000, **{**lstm, "gated": False}) == Plan(NUMPY)


def test_forward_plans_for_the_compiled_target(monkeypatch, make_problem):
    # _numba.forward tells the plan whether its kernels are fused.
    seen = {}

    def spy(**arguments):
        seen.update(arguments)
        return plan(**arguments)

    monkeypatch.setattr(_numba, "choose", spy)
    problem = make_problem(40, batch=1, steps=3, input_size=2, hidden_size=40)
    fastrnn.forward(**problem, backend="numba")
    assert seen["fused"] is TARGET.fma


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_forced_numpy_plan_matches_naive(monkeypatch, check_forward, make_problem, dtype,
                                         batch_first, nonlinearity):
    monkeypatch.setattr(_numba, "choose", lambda **_: _plan.checked(NUMPY))
    problem = make_problem(41, batch=3, steps=7, input_size=5, hidden_size=37, dtype=dtype,
                           batch_first=batch_first, h0=True)
    check_forward(problem, "numba", nonlinearity=nonlinearity)


@pytest.mark.parametrize("dtype", DTYPES)
def test_forced_numpy_plan_with_options_matches_naive(monkeypatch, assert_close, make_problem,
                                                      dtype):
    # Lengths, leak and a sparse w_hh reach the NumPy backend unchanged.
    scipy_sparse = pytest.importorskip("scipy.sparse")
    monkeypatch.setattr(_numba, "choose", lambda **_: _plan.checked(NUMPY))
    problem = make_problem(42, batch=4, steps=6, input_size=3, hidden_size=21, dtype=dtype,
                           h0=True)
    lengths = np.array([6, 0, 2, 5])
    leak = np.linspace(0.2, 1.0, 21).astype(dtype)
    expected_output, expected_h_n = naive.rnn(**problem, lengths=lengths, leak=leak)
    for w_hh in (problem["w_hh"], scipy_sparse.csr_matrix(problem["w_hh"])):
        output, h_n = fastrnn.forward(**{**problem, "w_hh": w_hh}, lengths=lengths, leak=leak,
                                      backend="numba")
        assert output.dtype == dtype and h_n.dtype == dtype
        assert_close(output, expected_output)
        assert_close(h_n, expected_h_n)


def test_plans_are_checked():
    with pytest.raises(ValueError, match="path must be one of"):
        _plan.checked("fast")
    with pytest.raises(ValueError, match="parts=2"):
        _plan.checked(BLOCKED, 2)
    with pytest.raises(ValueError, match="parts=0"):
        _plan.checked(BATCH_SPLIT, 0)
    assert _plan.checked(UNITS_SPLIT, 3) == Plan(UNITS_SPLIT, 3)
    with pytest.raises(ValueError, match="parts=2"):
        _plan.checked(NUMPY, 2)
    assert _plan.checked(NUMPY) == Plan(NUMPY)


@pytest.mark.parametrize(("content", "expected"), [("max 100000", None), ("200000 100000", 2.0),
                                                   ("150000 100000", 1.5), ("junk", None)])
def test_cgroup_v2_quota(tmp_path, content, expected):
    (tmp_path / "cpu.max").write_text(content + "\n")
    assert _plan._cgroup_cpus(str(tmp_path)) == expected
    cores = available_cores(str(tmp_path))
    assert cores >= 1
    if expected is not None:
        assert cores <= max(1, -(-expected // 1))


def test_cgroup_v1_quota_and_none(tmp_path):
    assert _plan._cgroup_cpus(str(tmp_path)) is None  # no files: no quota
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _plan._cgroup_cpus(str(tmp_path)) == 0.5
    assert available_cores(str(tmp_path)) == 1  # half a CPU: one thread
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
    assert _plan._cgroup_cpus(str(tmp_path)) is None


def test_crew_verdict_compares_blocks_not_fastest_calls():
    # With another process on the second core, the crew's calls are fast
    # while its helper has the core and slow while it waits for it: a block's
    # total time shows it (the fastest call would choose the crew). Then the
    # decision holds CREW_REVISE_SECONDS[way], and a slower window of the
    # chosen way compares again.
    verdict = _plan.CrewVerdict()
    now = 0.0
    times = {True: [1e-4, 1e-2], False: [1e-3]}  # the crew: 5 ms a call on average
    calls = {True: 0, False: 0}
    while True:
        way = verdict.way(now)
        seconds = times[way][calls[way] % len(times[way])]
        calls[way] += 1
        now += seconds
        verdict.record(way, 1e6, seconds, now)
        if verdict.comparing is None:
            break
    assert verdict.split is False
    assert verdict.rates[True] < verdict.rates[False]
    assert calls[True] > _plan.CREW_FIRST_WARMUP and calls[False] > _plan.CREW_FIRST_WARMUP
    # Decided: one thread, until its revision.
    assert verdict.way(now + _plan.CREW_REVISE_SECONDS[False] / 2) is False
    assert verdict.way(now + 2 * _plan.CREW_REVISE_SECONDS[False]) is True  # compares again
    # A slowdown of the chosen way compares again before that.
    slowed = _plan.CrewVerdict()
    slowed.split, slowed.rate, slowed.when = True, 1e9, now
    for _ in range(3):
        slowed.record(True, 1e6, 5e-3, now)  # 2e8 a second: below SLOWDOWN x 1e9
    assert slowed.way(now) is True and slowed.comparing is True


def test_a_verdict_for_the_threads_holds_longer_each_time_until_a_slowdown():
    verdict = _plan.Verdict()
    rates = {True: 2e10, False: 1e10}
    verdict.decide(rates, _plan.SPLIT_MIN_GAIN, 0.0)
    assert verdict.split and not verdict.due(_plan.REVISE_SECONDS - 0.1)
    assert verdict.due(_plan.REVISE_SECONDS + 0.1)
    verdict.decide(rates, _plan.SPLIT_MIN_GAIN, 10.0)  # the threads again: twice as long
    assert not verdict.due(10.0 + 2 * _plan.REVISE_SECONDS - 0.1)
    assert verdict.due(10.0 + 2 * _plan.REVISE_SECONDS + 0.1)
    for when in range(20, 30):
        verdict.decide(rates, _plan.SPLIT_MIN_GAIN, when)
    assert not verdict.due(29 + _plan.SPLIT_MOST_REVISE_SECONDS - 0.1)
    assert verdict.due(29 + _plan.SPLIT_MOST_REVISE_SECONDS + 0.1)
    # A slowdown compares again at once, and the next verdict holds the
    # first hold only.
    verdict.check(0.5 * rates[True])
    assert verdict.due(29.0)
    verdict.decide(rates, _plan.SPLIT_MIN_GAIN, 40.0)
    assert verdict.due(40.0 + _plan.REVISE_SECONDS + 0.1)
    # One thread's verdict ends the run.
    verdict.decide({True: 1e10, False: 1e10}, _plan.SPLIT_MIN_GAIN, 50.0)
    verdict.decide(rates, _plan.SPLIT_MIN_GAIN, 60.0)
    assert verdict.due(60.0 + _plan.REVISE_SECONDS + 0.1)


def test_one_thread_slowed_down_does_not_compare_again_sooner():
    # A busier machine only makes the threads worse: a slowdown of one
    # thread, chosen, keeps its hold (and its recent windows); the threads'
    # slowdown compares again at once.
    verdict = _plan.Verdict()
    verdict.decide({True: 1e10, False: 2e10}, _plan.SPLIT_MIN_GAIN, 0.0)
    assert verdict.split is False
    verdict.note(False, 2e10, 0.1)
    verdict.check(0.1 * 2e10)
    hold = _plan.ONE_THREAD_REVISE_SECONDS
    assert not verdict.due(hold - 0.01) and verdict.due(hold + 0.01)
    assert verdict.recent[False] == [(0.1, 2e10)]
    verdict.decide({True: 4e10, False: 2e10}, _plan.SPLIT_MIN_GAIN, 10.0)
    assert verdict.split is True
    verdict.check(0.1 * 4e10)
    assert verdict.due(10.0)
    crew = _plan.CrewVerdict()
    crew.split, crew.rate, crew.when, crew.comparing = False, 1e9, 0.0, None
    for _ in range(3):
        crew.record(False, 1e6, 5e-3, 0.0)  # 2e8 a second: below SLOWDOWN x 1e9
    assert crew.when == 0.0 and crew.way(0.0) is False
    crew.split = True
    for _ in range(3):
        crew.record(True, 1e6, 5e-3, 0.0)
    assert crew.when == -math.inf


def test_doubled_hold_doubles_up_to_its_bound_however_many_losses():
    holds = [_plan.doubled_hold(0.25, losses, 2.0) for losses in range(1, 7)]
    assert holds == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    # A machine that stays busy: one thread chosen thousands of times in a
    # row (2**1024 once overflowed a float here).
    assert _plan.doubled_hold(0.05, 10**6, 3.2) == 3.2
    verdict = _plan.Verdict()
    verdict.split, verdict.when, verdict.losses = False, 0.0, 5000
    most = _plan.ONE_THREAD_MOST_REVISE_SECONDS
    assert verdict.due(most - 0.5) is False and verdict.due(most + 0.5) is True
    crew = _plan.CrewVerdict()
    crew.losses = 5000
    now, seconds = 0.0, {True: 1e-2, False: 1e-3}  # the crew slower: one more loss
    while True:
        way = crew.way(now)
        now += seconds[way]
        crew.record(way, 1e6, seconds[way], now)
        if crew.comparing is None:
            break
    assert crew.split is False and crew.losses == 5001
    assert crew.revise == _plan.CREW_REVISE_SECONDS[False] * 2 ** _plan.CREW_MAX_DOUBLINGS

