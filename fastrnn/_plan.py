"""How a forward call runs on the Numba backend: the path and the threads,
decided in pure Python (no Numba) from the shapes, the density, the options
and the thread count, before anything is compiled.

:func:`plan` returns a :class:`Plan`; ``fastrnn._numba.forward`` carries it
out (and takes one given explicitly, which is how the tests force each path
at small sizes). Every threshold lives here, with the measurement that set
it (2-core AVX-512 machine, AMD Zen 4, unless said otherwise).

=====================  ==========================================================
path                   when
=====================  ==========================================================
``SMALL``              B = 1, dense H <= SMALL_MAX_HIDDEN, no lengths, leak or
                       reverse: one joint product of [x_t, h] a step
``UNITS_SPLIT``        more than one thread allowed and available, from
                       SPLIT_MIN_FMAS multiply-adds on, and either B = 1 with
                       a dense w_hh of H >= SPLIT_MIN_HIDDEN or a sparse one
                       of at least SPLIT_MIN_NONZEROS non-zeros, or
                       2 <= B < 4 x threads with a dense H >=
                       BATCH_SPLIT_MIN_HIDDEN: each thread computes its share
                       of the units every step, a barrier between steps
``BATCH_SPLIT``        otherwise B >= 2 from PARALLEL_MIN_FMAS multiply-adds
                       on, more than one thread allowed: each thread runs
                       every step for its share of the batch
``NUMPY``              B = 1, dense H >= NUMPY_MIN_HIDDEN, compiled without
                       FMA, more than one thread allowed and available: the
                       NumPy backend (its product is BLAS's, on every core)
``BLOCKED``            everything else: the register-blocked product on the
                       calling thread
=====================  ==========================================================
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

SMALL = "small"
BLOCKED = "blocked"
BATCH_SPLIT = "batch split"
UNITS_SPLIT = "units split"
NUMPY = "numpy"
PATHS = (SMALL, BLOCKED, BATCH_SPLIT, UNITS_SPLIT, NUMPY)

# One sequence (B = 1) of a plain call runs the small kernel up to this
# hidden size. Against the blocked path, inside the kernel (float32 /
# float64 us): (T, I, H) = (10, 4, 8) 0.73 / 0.79 against 1.12 / 1.28;
# (1000, 4, 8) 28.9 / 45.8 against 61.2 / 77.2; (100, 16, 32) 11.3 / 20.0
# against 12.8 / 19.2; from H = 64 or B = 4 on, the blocked path wins
# ((200, 8, 64): 48 / 102 against 39 / 86).
SMALL_MAX_HIDDEN = 32
# A forward is split across threads from this many multiply-adds on (about
# 100 us of work): below it, handing work to a thread costs more than it saves.
PARALLEL_MIN_FMAS = 2_000_000
# One sequence (B = 1) is split across threads by its units from this many
# non-zeros of a sparse w_hh on: each step then ends with a barrier, about
# 0.5 us, which broke even near 4000 non-zeros (H = 200, density 0.1) and
# gained 1.45x at 25 000 and 1.75x at 100 000 ...
SPLIT_MIN_NONZEROS = 8192
# ... or from this hidden size with a dense w_hh: each thread keeps its rows
# in its own L2. Per step, against the paths otherwise taken: 1.1-1.2x at
# H = 128, 1.7-2.2x at 256, 2.1-3.3x at 512, equal to BLAS from 1000 on.
SPLIT_MIN_HIDDEN = 128
# ... and from this much work per call: starting the threads costs about
# 100 us.
SPLIT_MIN_FMAS = 20_000_000
# A batch too small to give each thread a block of 4 samples (B < 4 x
# threads) is split by units from this dense hidden size on: split by
# samples, its threads would run the latency-bound one-sample product
# (float32 B = 4, H = 512: 173 GFLOP/s by units, 98 by samples).
BATCH_SPLIT_MIN_HIDDEN = 256
# A prepared layer's step (Layer.step) runs NumPy's product (OpenBLAS, on
# every core) from this dense hidden size on, the compiled one-thread step
# below it: the weights then stream from L3 every step, and two cores read
# them faster than one. Per step, AVX2 AMD Zen 3, I = 16, float32 (us,
# compiled against the careful NumPy loop): B = 1, H = 256: 6.8 against 18;
# H = 1024: 90 against 79; B = 32, H = 256: 100 against 117; H = 1024: 1239
# against 1115 (float64: 3920 against 2424).
STEP_BLAS_MIN_HIDDEN = 768
# Compiled without FMA (x86-64-v2: 128-bit vectors, a multiply then an add),
# one sequence with a dense w_hh runs the NumPy backend from this hidden
# size on, when it may use more than one thread: its product is then
# OpenBLAS's matrix-vector product (Nehalem kernels) on every core, which
# the compiled product on one core only ties and the units split on two
# lost to. AMD Zen 3, x86-64-v2 / OPENBLAS_CORETYPE=Nehalem, (1, 10000, 1,
# 1000) float32: 3.52 s against 2.99 s (units split, 2 threads); per step
# on one thread each (us, compiled against NumPy; float32 / float64): H =
# 512: 51 / 103 against 62 / 152; H = 768: 129 / 304 against 150 / 365;
# H = 1024: 264 / 645 against 263 / 708; H = 1536: 682 / 3647 against 952
# / 2450 (busy machine: the two-thread figures moved 3x from run to run).
# H = 1000, T = 1000, on one core each: 146 / 322 against 151 / 391; so the
# gain is OpenBLAS's second thread only, and on a loaded machine (load 4 on
# 2 cores) its two threads collapsed: 7929 / 2730 us a step, against 273 /
# 320 for the units split. To be re-measured on a quiet machine.
# With FMA (haswell / OPENBLAS_CORETYPE=Haswell) the compiled product wins
# on one core (H = 1024: 176 / 307 against 229 / 401), so it stays.
NUMPY_MIN_HIDDEN = 1000
# The units split's barrier yields the core with sched_yield (POSIX).
UNITS_SPLIT_AVAILABLE = hasattr(os, "sched_yield")


class Plan(NamedTuple):
    """How one call runs: ``path`` (one of :data:`PATHS`) on ``parts``
    threads (the caller's included). A tuple: made on every call, it must
    cost next to nothing (a frozen dataclass with checks took 2 us of a
    100-step chunk's call); :func:`checked` checks one made by hand."""

    path: str
    parts: int = 1


def checked(path: str, parts: int = 1) -> Plan:
    """A :class:`Plan`, or a ValueError when the path is unknown or its
    thread count impossible (tests and callers forcing a plan use this)."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if parts < 1 or (path in (SMALL, BLOCKED, NUMPY) and parts != 1):
        raise ValueError(f"a {path!r} plan runs on 1 thread or more (1 for "
                         f"{SMALL!r}, {BLOCKED!r} and {NUMPY!r}, whose BLAS picks "
                         f"its own), got parts={parts}")
    return Plan(path, parts)


_SMALL_PLAN = Plan(SMALL)
_BLOCKED_PLAN = Plan(BLOCKED)
_NUMPY_PLAN = Plan(NUMPY)


def _cgroup_cpus(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max``, else v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) in CPUs, or None when
    there is none (or it cannot be read)."""
    try:
        with open(os.path.join(root, "cpu.max"), encoding="ascii") as handle:
            quota, period = handle.read().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us"), encoding="ascii") as handle:
            quota_us = int(handle.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us"), encoding="ascii") as handle:
            period_us = int(handle.read())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The cores this process may use: its affinity mask (``os.cpu_count``
    where there is none), capped by its cgroup's CPU quota, rounded up (a
    container with 8 visible cores and 2 CPUs of quota ran the units split
    on 8 threads 4.8x slower than on one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def plan(*, batch: int, hidden: int, input_size: int, rows: int, recurrent: int,
         dense: bool, plain: bool, limit: int, cores: int, fused: bool = True) -> Plan:
    """The plan of one call of the Numba backend.

    Parameters
    ----------
    batch, hidden, input_size : int
        B, H and I.
    rows : int
        The sample-steps to run: B * T, or the sum of the lengths.
    recurrent : int
        Multiply-adds of the recurrent product per sample-step: H * H for a
        dense w_hh, its non-zeros for a sparse one.
    dense : bool
        Whether w_hh is dense.
    plain : bool
        No lengths, leak or reverse direction.
    limit : int
        The most threads the call may use (``threads=``, else the default).
    cores : int
        The cores available (:func:`available_cores`).
    fused : bool, default True
        Whether the kernels are compiled with fused multiply-adds
        (``fastrnn._simd.TARGET.fma``).
    """
    if batch == 1 and dense and plain and hidden <= SMALL_MAX_HIDDEN:
        # One small sequence: no thread helps (the units split starts at
        # H = SPLIT_MIN_HIDDEN).
        return _SMALL_PLAN
    if (batch == 1 and dense and not fused and hidden >= NUMPY_MIN_HIDDEN and limit > 1
            and cores > 1):
        # One large state without FMA: BLAS's product on every core beats
        # the compiled one (see NUMPY_MIN_HIDDEN). On one thread they tie,
        # and NumPy's BLAS would not keep to threads=1: compiled then.
        return _NUMPY_PLAN
    work = rows * (input_size * hidden + recurrent)  # multiply-adds of the call
    if limit > 1 and work >= SPLIT_MIN_FMAS and UNITS_SPLIT_AVAILABLE:
        parts = min(limit, cores)
        big = hidden >= SPLIT_MIN_HIDDEN if dense else recurrent >= SPLIT_MIN_NONZEROS
        small_batch = dense and hidden >= BATCH_SPLIT_MIN_HIDDEN and batch < 4 * parts
        if parts > 1 and (big if batch == 1 else small_batch):
            return Plan(UNITS_SPLIT, parts)
    if batch < 2 or limit < 2 or work < PARALLEL_MIN_FMAS:
        return _BLOCKED_PLAN
    return Plan(BATCH_SPLIT, min(limit, batch))
