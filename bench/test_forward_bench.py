"""Forward-pass speed: every implementation in fastrnn.benchmark.IMPLEMENTATIONS
(the one registry, shared with ``python -m fastrnn bench``), on the same
seeded problem, for each dtype and each size of fastrnn.benchmark.SIZES.

Each (dtype, size) is one pytest-benchmark group ("f32 B=64 T=200 I=128
H=128"), so a group reads as a comparison. Before timing, each test calls its
implementation once untimed (compilation, JIT tracing, thread start-up are
never timed) and checks that output against fastrnn's NumPy backend, so a
benchmark never times a wrong answer.

Rounds are planned from the median time of a few calls after the warm-up so
that a test spends about ``--benchmark-max-time`` seconds timing (default
1 s), with at least ``--benchmark-min-rounds`` rounds (default 5; down to
SLOW_MIN_ROUNDS for calls of seconds). Calls shorter than MIN_ROUND_TIME are
repeated within a round, and timing stops early (marked "truncated" in
extra_info) if it overruns its plan OVERRUN_FACTOR-fold. The whole bench/
folder takes about four minutes on a quiet 2-core machine;
``--benchmark-max-time=0.2 --benchmark-min-rounds=3`` makes a quick run.

Peers that are not installed (ONNX Runtime, OpenVINO, JAX, ...) are skipped
with the missing module's name. ONNX Runtime and OpenVINO run float32 only.

Run: ``pytest --benchmark-only --benchmark-json=bench.json`` then
``python bench/report.py bench.json``. For fastrnn compiled for another CPU
(NUMBA_CPU_NAME, NUMBA_CPU_FEATURES="", a fresh NUMBA_CACHE_DIR and the
peers' BLAS on the matching kernels): ``bench/run_for_cpu.sh haswell
--benchmark-json=haswell.json``.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest

# The one registry of implementations, problem sizes and tolerances, shared
# with ``python -m fastrnn bench``.
from fastrnn.benchmark import (
    IMPLEMENTATIONS,
    REFERENCE,
    SIZES,
    TOLERANCE,
    Impl,
    flops,
    make_problem,
)

DTYPES = {"f32": "float32", "f64": "float64"}  # short name (group, test id) -> registry's
MIN_ROUND_TIME = 100e-6  # seconds: shorter calls are repeated within a round
MAX_ROUNDS = 100_000
# Calls so slow that --benchmark-min-rounds of them would take longer than
# SLOW_TIMED_SECONDS get fewer rounds, never fewer than SLOW_MIN_ROUNDS.
SLOW_TIMED_SECONDS = 8.0
SLOW_MIN_ROUNDS = 3
# Timing stops early, keeping the rounds done, once it has taken this many
# times its planned time (plus one second): on a machine shared with another
# busy process some libraries slow down a hundredfold (OpenMP threads waiting
# on a preempted sibling), and rounds planned from a quiet estimate would then
# run for many minutes.
OVERRUN_FACTOR = 5


class _OverBudget(Exception):
    pass


def group_name(dtype: str, size: tuple[int, int, int, int]) -> str:
    batch, steps, input_size, hidden = size
    return f"{dtype} B={batch} T={steps} I={input_size} H={hidden}"


# dtype outermost, implementation innermost: a group's tests run back to
# back, so the cached problem and reference below are computed once per group.
CASES = [
    pytest.param(name, dtype, size, id=f"{name}-{dtype}-{'x'.join(map(str, size))}")
    for dtype in DTYPES
    for size in SIZES
    for name in IMPLEMENTATIONS
    if IMPLEMENTATIONS[name].plain and DTYPES[dtype] in IMPLEMENTATIONS[name].dtypes
]


@functools.lru_cache(maxsize=1)
def problem(dtype: str, size: tuple[int, int, int, int]):
    return make_problem(*size, DTYPES[dtype], seed=0)


@functools.lru_cache(maxsize=1)
def reference(dtype: str, size: tuple[int, int, int, int]) -> np.ndarray:
    output = IMPLEMENTATIONS[REFERENCE].factory(*problem(dtype, size))()
    output.setflags(write=False)
    return output


def seconds_per_call(run) -> float:
    """Median time of one call, from calls filling at least ~20 ms (one call
    when a call is slower than that)."""
    times: list[float] = []
    total = 0.0
    while total < 0.02 or len(times) < 3 and total < 0.2:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        total += elapsed
    return float(np.median(times))


@pytest.mark.parametrize(("name", "dtype", "size"), CASES)
def test_forward(benchmark, request, name: str, dtype: str, size: tuple[int, int, int, int]):
    impl: Impl = IMPLEMENTATIONS[name]
    for module in impl.requires:  # a missing optional peer is skipped, with its name
        pytest.importorskip(module)
    benchmark.group = group_name(dtype, size)
    x, w_ih, w_hh, b_ih, b_hh = problem(dtype, size)
    run = impl.factory(x, w_ih, w_hh, b_ih, b_hh)

    # Warm-up (compilation, tracing) and correctness, both untimed.
    output = run()
    expected = reference(dtype, size)
    assert output.shape == expected.shape, f"{name}: shape {output.shape}"
    assert output.dtype == expected.dtype, f"{name}: dtype {output.dtype}"
    tol = TOLERANCE[DTYPES[dtype]]
    np.testing.assert_allclose(output, expected, rtol=tol, atol=tol,
                               err_msg=f"{name} disagrees with fastrnn-numpy")
    del output

    batch, steps, input_size, hidden = size
    benchmark.extra_info.update(
        impl=name, dtype=dtype, B=batch, T=steps, I=input_size, H=hidden, flops=flops(size),
    )
    time_forward(benchmark, request, run, flops(size))


def time_forward(benchmark, request, run, work: int) -> None:
    """Time ``run`` (already warmed up and checked) with rounds planned from
    its speed, and record its rate of ``work`` FLOPs in extra_info."""
    per_call = seconds_per_call(run)
    iterations = max(1, math.ceil(MIN_ROUND_TIME / per_call))
    max_time = float(request.config.getoption("benchmark_max_time"))
    min_rounds = int(request.config.getoption("benchmark_min_rounds"))
    rounds = min(MAX_ROUNDS, max(min_rounds, round(max_time / (per_call * iterations))))
    if rounds * iterations * per_call > max(SLOW_TIMED_SECONDS, max_time):
        rounds = max(SLOW_MIN_ROUNDS, int(SLOW_TIMED_SECONDS / (per_call * iterations)))

    planned = rounds * iterations * per_call
    deadline = time.perf_counter() + OVERRUN_FACTOR * planned + 1.0

    def check_deadline():  # pedantic's teardown: runs after each round, untimed
        if time.perf_counter() > deadline:
            raise _OverBudget

    try:
        benchmark.pedantic(run, teardown=check_deadline, rounds=rounds, iterations=iterations,
                           warmup_rounds=0)
    except _OverBudget:
        done = len(benchmark.stats.stats.data) if benchmark.stats else 0
        if not done:
            raise
        # Keep the rounds that completed (pedantic marked the run as failed).
        benchmark.has_error = False
        if done < rounds:
            benchmark.extra_info["truncated"] = (
                f"{done} of {rounds} rounds: timing ran past {OVERRUN_FACTOR}x its planned "
                f"{planned:.2f} s (calls slower than the {per_call * 1e6:.0f} us estimated)"
            )
    if benchmark.stats:  # absent under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["gflops_per_s"] = work / median / 1e9
