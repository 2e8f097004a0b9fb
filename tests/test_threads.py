"""fastrnn.forward called from many Python threads at once.

* 8 threads making many calls, on problems that take every kernel path (the
  one-thread blocked kernel, the threaded batch split, the units split of a
  small batch with H >= 256, the sparse recurrent product, the NumPy
  backend), both dtypes, with and without lengths: every result equals, bit
  for bit, the serial call's.
* The compiled kernels release the GIL: another Python thread keeps running
  while one runs.
* A fresh process whose 8 threads all make their first call at once (kernels
  compiling, the backend and the thread pool being created) gets the same
  numbers as a serial call, and starts one pool.
* Callers that bring their own threads do not oversubscribe the cores:
  threads=1 (or FASTRNN_NUM_THREADS=1) never starts fastrnn's threads; the
  default shares one team of (cores - 1) helpers between all callers, and
  one pool of at most (cores - 1) threads for calls made while another
  holds the team.
* The batch split's team: a stream's chunks go to its helper with one
  thread's bits, to the pool while the team is held; a failing share raises
  and leaves it usable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fastrnn

TESTS_DIR = Path(__file__).resolve().parent
CALLERS = 8
ROUNDS = 10  # each caller runs every case this many times, in its own order


def _case(make_problem, seed, *, batch, steps, input_size, hidden_size, dtype=np.float64,
          lengths=False, sparse=False, unbatched=False, batch_first=True, **options):
    problem = make_problem(seed, batch=batch, steps=steps, input_size=input_size,
                           hidden_size=hidden_size, dtype=dtype, h0=True, unbatched=unbatched,
                           batch_first=batch_first)
    if lengths:
        rng = np.random.default_rng(seed)
        problem["lengths"] = rng.integers(0, steps + 1, batch)
    if sparse:
        scipy_sparse = pytest.importorskip("scipy.sparse")
        w_hh = problem["w_hh"].copy()
        w_hh[np.abs(w_hh) < 0.2] = 0
        problem["w_hh"] = scipy_sparse.csr_matrix(w_hh)
    for value in problem.values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)  # shared by every thread, never written
    return dict(problem, **options)


# name -> forward's keyword arguments. "threaded" sizes are above the Numba
# kernel's PARALLEL_MIN_FMAS (B >= 2); "units-split" cases above SPLIT_MIN_FMAS
# with B < 4 x threads and H >= BATCH_SPLIT_MIN_HIDDEN.
CASE_SPECS = {
    "small-f32": dict(batch=3, steps=20, input_size=4, hidden_size=8, dtype=np.float32),
    "small-f64": dict(batch=3, steps=20, input_size=4, hidden_size=8),
    "small-lengths-relu": dict(batch=5, steps=20, input_size=4, hidden_size=8, lengths=True,
                               nonlinearity="relu"),
    "unbatched": dict(batch=1, steps=30, input_size=4, hidden_size=8, unbatched=True),
    "threaded-f32": dict(batch=10, steps=200, input_size=16, hidden_size=32,
                         dtype=np.float32),
    "threaded-f64": dict(batch=10, steps=200, input_size=16, hidden_size=32),
    "threaded-lengths-leak": dict(batch=10, steps=250, input_size=16, hidden_size=32,
                                  lengths=True, leak=0.4),
    "threaded-threads=1": dict(batch=10, steps=200, input_size=16, hidden_size=32, threads=1),
    "threaded-threads=3": dict(batch=10, steps=200, input_size=16, hidden_size=32, threads=3),
    "threaded-time-major": dict(batch=10, steps=200, input_size=16, hidden_size=32,
                                batch_first=False),
    "sparse": dict(batch=6, steps=100, input_size=8, hidden_size=32, sparse=True),
    "units-split-f32": dict(batch=4, steps=100, input_size=8, hidden_size=256,
                            dtype=np.float32),
    "units-split-f64-lengths": dict(batch=5, steps=150, input_size=8, hidden_size=256,
                                    lengths=True),
    "numpy-backend": dict(batch=4, steps=20, input_size=4, hidden_size=8, lengths=True,
                          backend="numpy"),
    "h_n-only": dict(batch=10, steps=200, input_size=16, hidden_size=32,
                     return_sequences=False),
}


@pytest.fixture(scope="module")
def cases(make_problem):
    built = {}
    for seed, (name, spec) in enumerate(CASE_SPECS.items()):
        built[name] = _case(make_problem, 500 + seed, **spec)
    return built


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def test_concurrent_calls_match_serial(cases):
    # Serial first: compiles every path, and gives the expected bits.
    expected = {name: _as_tuple(fastrnn.forward(**case)) for name, case in cases.items()}
    barrier = threading.Barrier(CALLERS)
    mismatches: list[str] = []

    def caller(index: int) -> int:
        rng = np.random.default_rng(index)
        names = list(cases)
        calls = 0
        barrier.wait()
        for _ in range(ROUNDS):
            for name in rng.permutation(names):
                got = _as_tuple(fastrnn.forward(**cases[name]))
                calls += 1
                for part, want in zip(got, expected[name], strict=True):
                    if not np.array_equal(part, want, equal_nan=True):
                        mismatches.append(f"caller {index}: {name}")
        return calls

    with ThreadPoolExecutor(CALLERS) as pool:
        calls = sum(pool.map(caller, range(CALLERS)))
    assert not mismatches, sorted(set(mismatches))
    assert calls == CALLERS * ROUNDS * len(cases)


def test_concurrent_calls_with_out(cases):
    # Each caller writes into its own out buffer, again and again.
    case = cases["threaded-f32"]
    expected, expected_h_n = fastrnn.forward(**case)
    barrier = threading.Barrier(CALLERS)

    def caller(_: int) -> bool:
        out = np.empty_like(expected)
        barrier.wait()
        ok = True
        for _ in range(10):
            out.fill(np.nan)
            output, h_n = fastrnn.forward(**case, out=out)
            ok &= output is out and np.array_equal(out, expected)
            ok &= np.array_equal(h_n, expected_h_n)
        return ok

    with ThreadPoolExecutor(CALLERS) as pool:
        assert all(pool.map(caller, range(CALLERS)))


@pytest.mark.parametrize(
    "size",
    [(1, 1_000_000, 4, 8), (4, 100_000, 16, 32), (2, 20_000, 64, 256)],
    ids=["one-thread", "threaded", "units-split"],
)
def test_kernels_release_the_gil(make_problem, size):
    # While one thread is inside a long forward, the main thread keeps
    # running Python: it must get the GIL in the middle of that call.
    batch, steps, input_size, hidden = size
    case = make_problem(0, batch=batch, steps=steps, input_size=input_size,
                        hidden_size=hidden, dtype=np.float32)
    small = {name: (value[:, :2] if name == "x" else value) for name, value in case.items()}
    fastrnn.forward(**small)  # compile outside the measurement
    span: list[float] = []

    def long_call():
        span.append(time.perf_counter())
        fastrnn.forward(**case, return_sequences=False)
        span.append(time.perf_counter())

    worker = threading.Thread(target=long_call)
    stamps = []
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
        time.sleep(0)
    worker.join()
    start, stop = span
    assert stop - start > 0.02, f"the call took only {stop - start:.3f} s: make it longer"
    quarter = (stop - start) / 4
    middle = [s for s in stamps if start + quarter < s < stop - quarter]
    assert middle, f"the main thread never ran during the middle of a {stop - start:.3f} s call"


def _run_child(script: str, env_extra: dict[str, str], tmp_path: Path,
               warnings_are_errors: bool = True, drop: tuple[str, ...] = ()) -> str:
    env = dict(os.environ, **env_extra)
    for name in ("PYTHONWARNINGS", *drop):
        env.pop(name, None)
    prelude = textwrap.dedent(f"""
        import sys, threading
        import numpy as np
        sys.path.insert(0, {str(TESTS_DIR)!r})

        def problem(seed, batch, steps, input_size, hidden, dtype=np.float64):
            rng = np.random.default_rng(seed)
            return dict(
                x=rng.standard_normal((batch, steps, input_size)).astype(dtype),
                w_ih=(rng.standard_normal((hidden, input_size)) / 4).astype(dtype),
                w_hh=(rng.standard_normal((hidden, hidden)) / 6).astype(dtype),
                b_ih=rng.standard_normal(hidden).astype(dtype),
            )

        def pool_threads(kind="pool"):
            # fastrnn's threads of the batch split: the process's team's
            # helpers ("team") or its pool's workers, for calls the team
            # cannot take ("pool").
            names = sorted(t.name for t in threading.enumerate() if t.name.startswith("fastrnn"))
            return [name for name in names if (name == "fastrnn-batch") == (kind == "team")]
    """)
    flags = ["-W", "error"] if warnings_are_errors else []
    result = subprocess.run([sys.executable, *flags, "-c", prelude + textwrap.dedent(script)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_first_calls_race(tmp_path):
    # A fresh Numba cache: the 8 first calls find nothing compiled. Half take
    # the one-thread path, half the threaded one (the same compiled kernel;
    # the thread pool is created on the way), through backend="auto".
    out = _run_child("""
        import fastrnn
        import fastrnn._numba as kernel
        cases = [problem(i % 2, *((3, 20, 4, 8) if i < 4 else (10, 200, 16, 32)))
                 for i in range(8)]
        barrier = threading.Barrier(8)
        results = [None] * 8

        def first(i):
            barrier.wait()
            results[i] = fastrnn.forward(**cases[i])

        threads = [threading.Thread(target=first, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(8):
            output, h_n = fastrnn.forward(**cases[i])
            assert np.array_equal(output, results[i][0]), i
            assert np.array_equal(h_n, results[i][1]), i
        import naive
        for i in (0, 4):
            expected, _ = naive.rnn(**cases[i])
            np.testing.assert_allclose(results[i][0], expected, rtol=1e-12, atol=1e-12)
        for kind in ("team", "pool"):
            assert len(pool_threads(kind)) <= max(1, kernel._THREADS - 1), pool_threads(kind)
        print("ok", kernel._THREADS, len(pool_threads()))
    """, {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}, tmp_path)
    assert out.startswith("ok")


@pytest.mark.parametrize(
    ("threads", "env", "pool_expected"),
    [(1, {}, False), (None, {"FASTRNN_NUM_THREADS": "1"}, False), (None, {}, True)],
    ids=["threads=1", "FASTRNN_NUM_THREADS=1", "default"],
)
def test_callers_threads_do_not_oversubscribe(tmp_path, threads, env, pool_expected):
    # Problems large enough for the threaded split. With one thread per call
    # asked for, no thread is ever started; by default every caller shares
    # one team of (cores - 1) helpers, and the calls it cannot take (it is
    # another's) one pool of at most (cores - 1) threads.
    out = _run_child(f"""
        import fastrnn
        import fastrnn._numba as kernel
        case = problem(1, 10, 200, 16, 32)
        barrier = threading.Barrier(8)

        def caller(i):
            barrier.wait()
            for _ in range(5):
                fastrnn.forward(**case, threads={threads!r})

        callers = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        print(kernel._THREADS, len(pool_threads("team")), len(pool_threads()))
    """, env, tmp_path)
    limit, team, pool = map(int, out.split())
    if pool_expected and limit > 1:
        assert team == limit - 1 and pool <= limit - 1
    else:
        assert team == pool == 0


def test_threads_1_keeps_a_large_call_on_the_calling_thread(tmp_path):
    # CPU time per thread of the process (/proc/self/task/*/stat) over calls
    # with threads=1: other threads (fastrnn's, or any library's) should use
    # next to none.
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc/self/task")
    out = _run_child("""
        import os
        import fastrnn

        def ticks():
            found = {}
            for tid in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{tid}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                found[int(tid)] = int(fields[11]) + int(fields[12])  # utime + stime
            return found

        case = problem(2, 32, 50, 256, 1024, np.float32)  # ~20 ms a call
        fastrnn.forward(**case, threads=1)
        me = threading.get_native_id()
        before = ticks()
        for _ in range(10):
            fastrnn.forward(**case, threads=1)
        after = ticks()
        mine = after[me] - before[me]
        others = sum(after[t] - before.get(t, 0) for t in after if t != me)
        print(mine, others)
    """, {}, tmp_path, warnings_are_errors=False,  # not about compilation warnings
        drop=("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    mine, others = map(int, out.split())
    assert mine >= 5, f"the calls took only {mine} ticks: make them longer"
    assert others <= max(2, mine // 10), f"caller {mine} ticks, other threads {others}"


# --- the batch split's team ---------------------------------------------------


@pytest.fixture
def batch_split_forced(monkeypatch):
    # Every Numba call takes the batch split on 2 threads, whatever its size.
    from fastrnn import _numba, _plan

    pytest.importorskip("numba")
    monkeypatch.setattr(_numba, "choose", lambda **_: _plan.checked(_plan.BATCH_SPLIT, 2))
    # Every call hands off (timed against the caller alone, a busy
    # machine's calls could go to the caller alone: fastrnn._plan.judge_call).
    monkeypatch.setattr(_numba, "call_way", lambda verdict, clock: True)
    if _numba._THREADS < 2:
        pytest.skip("one thread by default: the team has one helper only from 2 on")
    return _numba


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_stream_on_the_team_gives_one_threads_bits(batch_split_forced, make_problem, dtype):
    # A stream of chunks through a Layer: each chunk's shares go to the
    # process's team (its helper's count moves on), and the stream's states
    # and outputs are one thread's, bit for bit. Then, the team held by
    # another call, the same chunks go to the pool, with the same bits.
    _numba = batch_split_forced
    problem = make_problem(5, batch=7, steps=60, input_size=5, hidden_size=40, dtype=dtype,
                           h0=True)
    weights = {k: problem[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
    layer = fastrnn.prepare(**weights, backend="numba")
    expected = fastrnn.forward(problem["x"], **weights, h0=problem["h0"], threads=1)

    def stream():
        h, outputs = problem["h0"], []
        for start in range(0, 60, 20):
            output, h = layer(problem["x"][:, start:start + 20], h)
            outputs.append(output)
        return np.concatenate(outputs, axis=1), h

    team = _numba._batch_team(2)
    assert team is not None
    team.lock.release()
    before = int(team.counters[0])
    output, h_n = stream()
    assert np.array_equal(output, expected[0]) and np.array_equal(h_n, expected[1])
    posted = int(team.counters[0])
    assert posted == before + 3  # one hand-off a chunk
    # The helper takes each chunk's call (claiming a share, or none when
    # it comes after the caller has claimed both): the call does not wait
    # for it to end, so its count gets there a moment later.
    assert _eventually(lambda: team.counters[_team_slot(1)] == posted)
    with team.lock:  # another call's
        output, h_n = stream()
    assert int(team.counters[0]) == posted and _numba._pool is not None
    assert np.array_equal(output, expected[0]) and np.array_equal(h_n, expected[1])


def _team_slot(part):
    from fastrnn.kernels.barrier import FLAG_STRIDE

    return part * FLAG_STRIDE


def _eventually(check, seconds=10.0):
    # Whether check() becomes true within `seconds` (a helper thread's count
    # stored after its caller has returned).
    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.001)
    return True


def test_a_failing_share_raises_and_the_team_goes_on(batch_split_forced, monkeypatch,
                                                     make_problem):
    # The helper claims a share and raises without running it: the caller
    # runs the other share, gets the helper's exception instead of waiting
    # for the share forever, the team's lock is free, and the next calls run
    # on the team with the right result.
    from fastrnn.kernels.barrier import claim

    _numba = batch_split_forced
    problem = make_problem(6, batch=6, steps=30, input_size=4, hidden_size=24, h0=True)
    expected = fastrnn.forward(**problem, threads=1)
    fastrnn.forward(**problem, backend="numba")  # (compiled before it is patched)
    real = _numba.forward_range_shares_call
    claimed = threading.Event()
    shares = []

    def failing(*args):
        counts, claims, number, caller = args[16], args[17], args[19], args[20] == 0
        if caller:
            # The caller claims only after the helper has (or 30 s).
            claimed.wait(30)
            return real(*args)
        # (A job of an earlier call that its helper comes to only now
        # claims none: -1.)
        shares.append(claim(counts, claims, number, args[12].shape[0] - 1))
        if shares[-1] >= 0:
            claimed.set()
        raise RuntimeError("share failed")

    monkeypatch.setattr(_numba, "forward_range_shares_call", failing)
    with pytest.raises(RuntimeError, match="share failed"):
        fastrnn.forward(**problem, backend="numba")
    assert [share for share in shares if share >= 0] == [0]
    monkeypatch.setattr(_numba, "forward_range_shares_call", real)
    team = _numba._team
    assert team is not None and not team.lock.locked()
    posted = int(team.counters[0])
    for _ in range(3):
        output, h_n = fastrnn.forward(**problem, backend="numba")
        assert np.array_equal(output, expected[0]) and np.array_equal(h_n, expected[1])
    assert int(team.counters[0]) == posted + 3


def test_a_call_does_not_wait_for_a_helper_the_machine_runs_late(batch_split_forced,
                                                                  monkeypatch, make_problem):
    # A helper that comes to a call after its caller has claimed every
    # share (another process had its core) claims none: the call returns
    # without it, with the bits the shares give whichever thread runs them,
    # and the late helper writes nothing after.
    _numba = batch_split_forced
    problem = make_problem(7, batch=8, steps=40, input_size=5, hidden_size=24, h0=True)
    expected = fastrnn.forward(**problem, backend="numba")  # (on the team)
    team = _numba._team
    # The helper done with the calls before (a job it comes to late would
    # otherwise run the patched function below too).
    assert _eventually(lambda: team.counters[_team_slot(1)] == team.counters[0])
    real = _numba.forward_range_shares_call
    release, ran = threading.Event(), []

    def late(*args):
        number, part = args[19], args[20]
        if part != 0:  # the helper's job
            release.wait(30)
        ran.append((number, part, real(*args)))
        return ran[-1][2]

    monkeypatch.setattr(_numba, "forward_range_shares_call", late)
    output, h_n = fastrnn.forward(**problem, backend="numba")
    returned_first = not release.is_set()
    release.set()
    number = int(team.counters[0])
    assert returned_first and ran == [(number, 0, 2)]
    assert np.array_equal(output, expected[0]) and np.array_equal(h_n, expected[1])
    saved = output.copy(), h_n.copy()
    # The helper, let go, claims nothing and writes nothing.
    assert _eventually(lambda: len(ran) == 2) and ran[1] == (number, 1, 0)
    assert np.array_equal(output, saved[0]) and np.array_equal(h_n, saved[1])
    monkeypatch.setattr(_numba, "forward_range_shares_call", real)
    assert not _numba._team.lock.locked()
    again = fastrnn.forward(**problem, backend="numba")
    assert np.array_equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])



@pytest.mark.parametrize("batch", [6, 8])
def test_short_calls_are_timed_against_the_caller_alone_with_the_same_bits(
        batch_split_forced, monkeypatch, make_problem, batch):
    # A call too short for windows is timed against the caller running
    # every share (fastrnn._plan.judge_call): when the threads are timed
    # slower (a busy machine's, here told so), the next calls run alone,
    # with the threads' bits: shares of 3 samples one after the other (the
    # one-thread path's blocks of 4 rows would differ), shares of 4 as one
    # batch on the one-thread path (the same blocks).
    from fastrnn import _plan, _team

    _numba = batch_split_forced
    monkeypatch.setattr(_numba, "call_way", _plan.call_way)
    monkeypatch.setattr(_numba, "_verdicts", {})
    problem = make_problem(8, batch=batch, steps=20, input_size=4, hidden_size=24, h0=True)
    parts: list[int] = []
    real = _team.Team.share_out

    def counted(self, job, call_parts, shares):
        parts.append(call_parts)
        real(self, job, call_parts, shares)

    original_judge = _plan.judge_call

    def slow_threads(verdict, split, fmas, seconds, clock, *gain):
        # The threads' calls take 10 ms, the caller's alone 1 ms.
        return original_judge(verdict, split, fmas, 0.01 if split else 0.001, clock, *gain)

    monkeypatch.setattr(_team.Team, "share_out", counted)
    monkeypatch.setattr(_numba, "judge_call", slow_threads)
    # Blocks of CALL_TRIALS calls (tests/test_plan.py times longer blocks).
    monkeypatch.setattr(_plan, "CALL_BLOCK_SECONDS", 0.0)
    calls = 2 * (_plan.CALL_FIRST_WARMUP + _plan.CALL_TRIALS) + 5
    results = [fastrnn.forward(**problem, backend="numba") for _ in range(calls)]
    block = _plan.CALL_FIRST_WARMUP + _plan.CALL_TRIALS
    alone = [1] * (calls - block) if batch == 6 else []  # (batch 8: no hand-off)
    assert parts == [2] * block + alone, parts
    verdict, = _numba._verdicts.values()
    assert verdict.split is False
    for output, h_n in results[1:]:
        assert np.array_equal(output, results[0][0]) and np.array_equal(h_n, results[0][1])
