"""One time step at a time: the ``step`` call pattern of ``python -m fastrnn
bench`` (fastrnn.benchmark.STEP_IMPLEMENTATIONS, the same registry), for each
dtype and each (B, I, H) of fastrnn.benchmark.STEP_SIZES.

Each implementation's callable runs ONE time step per call from the state the
previous call left: fastrnn's ``layer.step(x_t, h, out=h)`` on a layer prepared
once (both backends), the NumPy loop a careful user writes, torch's
``nn.RNNCell`` (NumPy in and out each step), a ``jax.jit`` step (device arrays
from and to NumPy each step) and ONNX Runtime's and OpenVINO's RNN on one-step
sequences. Before timing, :func:`fastrnn.benchmark.checked_step` runs it
CHECK_STEPS steps untimed (compilation, tracing) and checks the state against
``fastrnn.forward`` over those steps. Timing as in test_forward_bench.py: a
round repeats the call until it lasts at least 100 us, and pytest-benchmark
divides by the repetitions, so the figures are per step.

Each (dtype, size) is one group ("step f32 B=1 I=16 H=64").
Run: ``pytest --benchmark-only bench/test_step_bench.py``.
"""

from __future__ import annotations

import functools

import pytest

from fastrnn.benchmark import (
    STEP_IMPLEMENTATIONS,
    STEP_SIZES,
    STEPS_PER_SAMPLE,
    PatternImpl,
    checked_step,
    make_problem,
)

from .test_forward_bench import DTYPES, time_forward

CASES = [
    pytest.param(name, dtype, size, id=f"{name}-{dtype}-{'x'.join(map(str, size))}-step")
    for dtype in DTYPES
    for size in STEP_SIZES
    for name in STEP_IMPLEMENTATIONS
    if DTYPES[dtype] in STEP_IMPLEMENTATIONS[name].dtypes
]


def group_name(dtype: str, size: tuple[int, int, int]) -> str:
    batch, input_size, hidden = size
    return f"step {dtype} B={batch} I={input_size} H={hidden}"


@functools.lru_cache(maxsize=1)
def problem(dtype: str, size: tuple[int, int, int]):
    batch, input_size, hidden = size
    return make_problem(batch, STEPS_PER_SAMPLE, input_size, hidden, DTYPES[dtype], seed=0)


@pytest.mark.parametrize(("name", "dtype", "size"), CASES)
def test_step(benchmark, request, name: str, dtype: str, size: tuple[int, int, int]):
    impl: PatternImpl = STEP_IMPLEMENTATIONS[name]
    for module in impl.requires:  # a missing optional peer is skipped, with its name
        pytest.importorskip(module)
    benchmark.group = group_name(dtype, size)
    # Warm-up and correctness, untimed; the state is carried on into the timing.
    run, max_abs_diff = checked_step(name, problem(dtype, size))

    batch, input_size, hidden = size
    work = 2 * batch * hidden * (input_size + hidden)  # one step's products
    benchmark.extra_info.update(impl=name, dtype=dtype, B=batch, I=input_size, H=hidden,
                                flops=work, pattern="step", max_abs_diff=max_abs_diff)
    time_forward(benchmark, request, run, work)
