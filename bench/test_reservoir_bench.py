"""Reservoir speed: the echo-state cases of fastrnn.benchmark.RESERVOIR_CASES
(a leaky update, w_hh a SciPy CSR matrix of density 0.1 at spectral radius
0.9, B = 1, T = 10 000), 100 and 1000 units, in both dtypes.

Every implementation of the registry that runs reservoirs takes part, with the
same weights, leak and input: fastrnn's backends with the sparse w_hh,
ReservoirPy's ``Reservoir`` (float64 only), and, given w_hh as a dense array,
fastrnn-numba-dense (what sparsity saves) and JAX. PyTorch's ``nn.RNN`` has no
leak and is left out. Each output is checked against fastrnn's NumPy backend
before timing (float64: within 1e-10). Timing as in test_forward_bench.py.

Run: ``pytest --benchmark-only bench/test_reservoir_bench.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from fastrnn.benchmark import (
    IMPLEMENTATIONS,
    REFERENCE,
    RESERVOIR_CASES,
    TOLERANCE,
    ReservoirCase,
    flops,
    make_reservoir_problem,
    reservoir_inputs,
)

from .test_forward_bench import DTYPES, time_forward

CASES = [
    pytest.param(name, dtype, case,
                 id=f"{name}-{dtype}-{'x'.join(map(str, case.size))}-reservoir")
    for dtype in DTYPES
    for case in RESERVOIR_CASES
    for name in IMPLEMENTATIONS
    if IMPLEMENTATIONS[name].reservoir is not None
    and DTYPES[dtype] in IMPLEMENTATIONS[name].dtypes
]


def group_name(dtype: str, case: ReservoirCase) -> str:
    batch, steps, input_size, hidden = case.size
    return (f"{dtype} reservoir B={batch} T={steps} I={input_size} H={hidden} "
            f"leak={case.leak:g} density={case.density:g}")


@functools.lru_cache(maxsize=1)
def problem(dtype: str, case: ReservoirCase):
    return make_reservoir_problem(case, DTYPES[dtype], seed=0)


@functools.lru_cache(maxsize=1)
def reference(dtype: str, case: ReservoirCase) -> np.ndarray:
    inputs, leak = problem(dtype, case)
    output = IMPLEMENTATIONS[REFERENCE].factory(*inputs, leak=leak)()
    output.setflags(write=False)
    return output


@pytest.mark.parametrize(("name", "dtype", "case"), CASES)
def test_reservoir(benchmark, request, name: str, dtype: str, case: ReservoirCase):
    impl = IMPLEMENTATIONS[name]
    for module in impl.requires:  # a missing optional peer is skipped, with its name
        pytest.importorskip(module)
    benchmark.group = group_name(dtype, case)
    inputs, leak = problem(dtype, case)
    run = impl.factory(*reservoir_inputs(impl, inputs), leak=leak)

    # Warm-up (compilation, tracing) and correctness, both untimed.
    output = run()
    expected = reference(dtype, case)
    assert output.shape == expected.shape and output.dtype == expected.dtype, name
    tol = TOLERANCE[DTYPES[dtype]]
    np.testing.assert_allclose(output, expected, rtol=tol, atol=tol,
                               err_msg=f"{name} disagrees with {REFERENCE}")
    max_abs_diff = float(np.max(np.abs(output - expected)))
    del output

    batch, steps, input_size, hidden = case.size
    work = flops(case.size, inputs[2].nnz)  # 2*B*T*(H*I + nnz): the sparse work
    benchmark.extra_info.update(
        impl=name, dtype=dtype, B=batch, T=steps, I=input_size, H=hidden, flops=work,
        leak=case.leak, density=case.density, w_hh=impl.reservoir, max_abs_diff=max_abs_diff,
    )
    time_forward(benchmark, request, run, work)
