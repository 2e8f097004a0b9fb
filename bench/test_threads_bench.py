"""Throughput of fastrnn.forward from caller threads: 2 threads against 1 on
independent batches.

Each group is one workload: ``BATCHES`` independent (B, T, I, H) float32
problems, all run per round. Three ways of running it:

* ``1 caller, threads=1``: one Python thread, one kernel thread per call;
* ``2 callers, threads=1``: two Python threads (a persistent pool, created
  outside the timing) taking half of the batches each, one kernel thread per
  call: the kernels release the GIL, so this should approach 2x on 2 cores;
* ``1 caller, default threads``: one Python thread, fastrnn's own batch
  split (FASTRNN_NUM_THREADS or every core) where the size allows it.

``batches_per_s`` in extra_info is the workload's throughput. Before timing,
each test runs its workload once untimed (compilation, thread start-up) and
checks every result against a serial call, bit for bit. Skipped unless
``pytest --benchmark-only``; about 10 s in all.
"""

from __future__ import annotations

import functools
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastrnn

# (name, (B, T, I, H), batches): a mid-size batch where the kernel dominates,
# and single sequences where per-call Python work (under the GIL) is a
# visible share.
WORKLOADS = {
    "B=16 T=100 I=32 H=64 x16": ((16, 100, 32, 64), 16),
    "B=1 T=100 I=16 H=32 x64": ((1, 100, 16, 32), 64),
}
MODES = ("1 caller, threads=1", "2 callers, threads=1", "1 caller, default threads")
MIN_ROUNDS = 5


@functools.cache
def batches(name: str) -> list[tuple[np.ndarray, ...]]:
    (batch, steps, input_size, hidden), count = WORKLOADS[name]
    rng = np.random.default_rng(0)
    w_ih = (rng.standard_normal((hidden, input_size)) / math.sqrt(input_size)).astype(np.float32)
    w_hh = (rng.standard_normal((hidden, hidden)) / math.sqrt(hidden)).astype(np.float32)
    return [(rng.standard_normal((batch, steps, input_size), dtype=np.float32), w_ih, w_hh)
            for _ in range(count)]


@pytest.fixture(scope="module")
def callers():
    with ThreadPoolExecutor(2, thread_name_prefix="bench-caller") as pool:
        yield pool


def _runner(mode: str, work: list, pool: ThreadPoolExecutor):
    if mode == "1 caller, threads=1":
        return lambda: [fastrnn.forward(*args, threads=1) for args in work]
    if mode == "1 caller, default threads":
        return lambda: [fastrnn.forward(*args) for args in work]

    halves = (work[0::2], work[1::2])

    def half(part):
        return [fastrnn.forward(*args, threads=1) for args in part]

    def two_callers():
        first, second = pool.map(half, halves)
        merged = [None] * len(work)
        merged[0::2], merged[1::2] = first, second
        return merged

    return two_callers


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_caller_threads(benchmark, request, callers, workload: str, mode: str):
    benchmark.group = f"threads f32 {workload}"
    work = batches(workload)
    run = _runner(mode, work, callers)

    # Warm-up and correctness, untimed: every result equals a serial call's.
    results = run()
    for args, (output, h_n) in zip(work, results, strict=True):
        expected, expected_h_n = fastrnn.forward(*args, threads=1)
        if mode != "1 caller, default threads":  # a different split may round differently
            np.testing.assert_array_equal(output, expected)
            np.testing.assert_array_equal(h_n, expected_h_n)
        else:
            np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)

    start = time.perf_counter()
    run()
    per_round = time.perf_counter() - start
    max_time = float(request.config.getoption("benchmark_max_time"))
    rounds = max(MIN_ROUNDS, round(max_time / per_round))
    benchmark.extra_info.update(mode=mode, batches=len(work))
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    if benchmark.stats:  # absent under --benchmark-disable
        benchmark.extra_info["batches_per_s"] = len(work) / benchmark.stats.stats.median
