"""A stream fed in chunks: the ``chunk`` call pattern of ``python -m fastrnn
bench`` (fastrnn.benchmark.CHUNK_IMPLEMENTATIONS, the same registry), for
each dtype and each (B, T, I, H) of fastrnn.benchmark.CHUNK_SIZES.

Each call streams the whole sequence through the model CHUNK (100) steps at
a time, each call's final state the next one's initial state: fastrnn's
``layer(chunk, h)`` on a layer prepared once (both backends), torch's
``nn.RNN`` per chunk with its h carried, a ``jax.jit`` scan per chunk; and
fastrnn-numba-one-call, the same prepared layer over the whole sequence in one
call, what chunking is measured against. Before timing,
:func:`fastrnn.benchmark.checked_chunks` runs the stream once untimed
(compilation, tracing) and checks the final state against ``fastrnn.forward``
over the whole sequence. Timing as in test_forward_bench.py; the figures are
per whole stream.

Each (dtype, size) is one group ("chunk f32 B=1 T=10000 I=16 H=64 by 100").
Run: ``pytest --benchmark-only bench/test_chunk_bench.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fastrnn.benchmark import (
    CHUNK,
    CHUNK_IMPLEMENTATIONS,
    CHUNK_SIZES,
    PatternImpl,
    checked_chunks,
    flops,
    make_problem,
    step_reference,
)

from .test_forward_bench import DTYPES, time_forward

CASES = [
    pytest.param(name, dtype, size, id=f"{name}-{dtype}-{'x'.join(map(str, size))}-chunk")
    for dtype in DTYPES
    for size in CHUNK_SIZES
    for name in CHUNK_IMPLEMENTATIONS
    if DTYPES[dtype] in CHUNK_IMPLEMENTATIONS[name].dtypes
]


def group_name(dtype: str, size: tuple[int, int, int, int]) -> str:
    batch, steps, input_size, hidden = size
    return f"chunk {dtype} B={batch} T={steps} I={input_size} H={hidden} by {CHUNK}"


@functools.lru_cache(maxsize=1)
def problem(dtype: str, size: tuple[int, int, int, int]):
    return make_problem(*size, DTYPES[dtype], seed=0)


@functools.lru_cache(maxsize=1)
def reference(dtype: str, size: tuple[int, int, int, int]) -> np.ndarray:
    h_n = step_reference(problem(dtype, size), size[1])
    h_n.setflags(write=False)
    return h_n


@pytest.mark.parametrize(("name", "dtype", "size"), CASES)
def test_chunk(benchmark, request, name: str, dtype: str, size: tuple[int, int, int, int]):
    impl: PatternImpl = CHUNK_IMPLEMENTATIONS[name]
    for module in impl.requires:  # a missing optional peer is skipped, with its name
        pytest.importorskip(module)
    benchmark.group = group_name(dtype, size)
    # Warm-up and correctness, untimed.
    run, max_abs_diff = checked_chunks(name, problem(dtype, size), CHUNK,
                                       reference(dtype, size))

    batch, steps, input_size, hidden = size
    benchmark.extra_info.update(impl=name, dtype=dtype, B=batch, T=steps, I=input_size,
                                H=hidden, flops=flops(size), pattern="chunk", chunk=CHUNK,
                                max_abs_diff=max_abs_diff)
    time_forward(benchmark, request, run, flops(size))
