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
  threads=1 (or FASTRNN_NUM_THREADS=1) never starts fastrnn's pool; the
  default shares one pool of (cores - 1) threads between all callers.
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

        def pool_threads():
            return sorted(t.name for t in threading.enumerate() if t.name.startswith("fastrnn"))
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
        assert len(pool_threads()) <= max(1, kernel._THREADS - 1), pool_threads()
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
    # asked for, no pool thread is ever started; by default every caller
    # shares one pool of at most (cores - 1) threads.
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
        print(kernel._THREADS, len(pool_threads()))
    """, env, tmp_path)
    limit, pool = map(int, out.split())
    if pool_expected and limit > 1:
        assert 1 <= pool <= limit - 1
    else:
        assert pool == 0


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
