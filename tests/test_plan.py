"""fastrnn._plan: the path and threads of a call, decided in pure Python.

The kernels of each path are checked against the naive reference in
tests/test_kernel_paths.py and tests/test_units.py (with plans forced), the
NumPy path's hand-over here; here also the decisions themselves: which plan
each kind of call gets, at the thresholds' edges, and the cores a CPU quota allows.
"""

from __future__ import annotations

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


def test_batch_split():
    steps = _plan.PARALLEL_MIN_FMAS // (64 * 128) + 1
    assert _plan_of(batch=64, hidden=64, input_size=64, steps=steps // 64 + 1) == Plan(
        BATCH_SPLIT, 2)
    # Threads as allowed, up to one per sample.
    assert _plan_of(batch=3, hidden=64, input_size=64, steps=steps, limit=8) == Plan(
        BATCH_SPLIT, 3)
    assert _plan_of(batch=64, hidden=64, input_size=64, steps=1) == Plan(BLOCKED)
    assert _plan_of(batch=64, hidden=64, input_size=64, steps=steps, limit=1) == Plan(BLOCKED)


@pytest.mark.parametrize("itemsize", [4, 8])
def test_numpy_path_for_large_states_without_fma(itemsize):
    hidden = _plan.NUMPY_MIN_STATE_BYTES // itemsize  # float32 256, float64 128
    steps = 10_000
    assert _plan_of(hidden=hidden, input_size=1, steps=steps, fused=False,
                    itemsize=itemsize) == Plan(NUMPY)
    # Any batch, with any option.
    assert _plan_of(batch=64, hidden=hidden, steps=steps, fused=False,
                    itemsize=itemsize) == Plan(NUMPY)
    assert _plan_of(hidden=hidden, steps=steps, plain=False, fused=False,
                    itemsize=itemsize) == Plan(NUMPY)
    # Below the threshold (in units or in work), with FMA (the default):
    # the compiled paths, as before.
    below = _plan_of(hidden=hidden - 1, input_size=1, steps=steps, fused=False,
                     itemsize=itemsize)
    assert below.path != NUMPY
    assert below == _plan_of(hidden=hidden - 1, input_size=1, steps=steps, itemsize=itemsize)
    little = _plan_of(hidden=hidden, steps=1, fused=False, itemsize=itemsize)
    assert little == _plan_of(hidden=hidden, steps=1, itemsize=itemsize)
    fused = _plan_of(hidden=hidden, input_size=1, steps=steps, fused=True, itemsize=itemsize)
    assert fused.path != NUMPY
    assert fused == _plan_of(hidden=hidden, input_size=1, steps=steps, itemsize=itemsize)
    # A sparse w_hh of that size keeps its compiled gathers.
    assert _plan_of(hidden=hidden, steps=steps, recurrent=hidden * 100, dense=False,
                    fused=False, itemsize=itemsize).path != NUMPY
    # One thread allowed or available: the compiled product (NumPy's BLAS
    # would not keep to threads=1).
    assert _plan_of(hidden=hidden, steps=steps, limit=1, fused=False,
                    itemsize=itemsize).path != NUMPY
    assert _plan_of(hidden=hidden, steps=steps, cores=1, fused=False,
                    itemsize=itemsize).path != NUMPY


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
