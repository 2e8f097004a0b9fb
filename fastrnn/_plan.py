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
``NUMPY``              dense rows of H values of at least NUMPY_MIN_STATE_BYTES,
                       compiled without FMA, from SPLIT_MIN_FMAS multiply-adds
                       on, more than one thread allowed and available: the
                       NumPy backend (its products are BLAS's, on every core)
``BLOCKED``            everything else: the register-blocked product on the
                       calling thread
=====================  ==========================================================
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any, NamedTuple

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
# ... or, for a prepared layer, whose split (its packed weights and its
# threads) is kept between calls (a stream fed in chunks), from this much:
# then a call costs only handing it to the waiting threads, 30-60 us. 100-step
# chunks of one sequence, I = 16, kept split against one thread (AMD Zen 3,
# 2 cores, ms per 10 000 steps): float32 H = 256 (7M a call) 19.3-21.0
# against 23.2; float64 H = 256 32.2-34.1 against 46.2; float32 H = 128
# (1.8M a call) 8.5-9.2 against 6.5. Such calls are too short for windows:
# whole calls are timed each way instead (see judge_call).
KEPT_SPLIT_MIN_FMAS = 4_000_000
# A batch too small to give each thread a block of 4 samples (B < 4 x
# threads) is split by units from this dense hidden size on: split by
# samples, its threads would run the latency-bound one-sample product
# (float32 B = 4, H = 512: 173 GFLOP/s by units, 98 by samples).
BATCH_SPLIT_MIN_HIDDEN = 256
# A prepared layer's one-sample step (Layer.step, B = 1) runs NumPy's product
# (OpenBLAS's matrix-vector product) from this dense hidden size on, the
# compiled step below it: the weights then stream from L3 every step. Per
# step, I = 16 (us, compiled against NumPy's): AVX2 AMD Zen 3, float32
# H = 256: 6.8 against 18; H = 1024: 90 against 79; AMD Zen 4, H = 1024:
# float32 48 against 40, float64 115 against 99.
STEP_BLAS_MIN_HIDDEN = 768
# From 2 samples on, OpenBLAS's product of a few rows ran 2-6x slower than
# the compiled one (AMD Zen 4, float32 H = 1024: B = 2, 314 against 51 us;
# B = 4, 259 against 87; B = 8, 233 against 160), so those steps run the
# compiled kernel.
#
# A dense step whose weights, read once a step, are at least
# CREW_MIN_BYTES_ONE (one sample: H x (H + I) x itemsize; float32 H >= 340,
# float64 H >= 240) or whose B x H x (H + I) x itemsize is at least
# CREW_MIN_BYTES (B >= 2: float32 400K multiply-adds, float64 200K) runs on
# the layer's crew (fastrnn._crew), when the layer may use more than one
# thread: each thread its share of the units, the hand-off a cache line
# (about 2 us a step in all: copies, dispatch, the wait). Per step, I = 16,
# us, crew on 2 threads against one thread, AMD Zen 4 VM, one process each:
# one sample, float32 H = 256 3.9 against 3.4, H = 384 6.0 against 6.8-7.1,
# H = 512 8.4 against 13.7-17.7; float64 H = 256 5.5-6.2 against 6.8-8.6,
# H = 384 10.3-10.7 against 15.9-19.3; float32 B = 4, H = 256 (279K) 6.4
# against 6.3-6.4; B = 16, H = 128 (295K) 8.7 against 7.5; float64 B = 8,
# H = 128 (147K) 8.6-10.9 against 7.9-9.4. Above them, whether the crew
# beats one thread is timed (fastrnn._plan.judge_call, per layer and batch):
# on this VM the same step ran 1.3x faster on the crew in one process and
# 1.3x slower in the next (float32 B = 32, H = 256: 34 and 60 against 46
# us), as the host placed its two vCPUs, and a busy machine deschedules a
# helper.
CREW_MIN_BYTES_ONE = 800_000
CREW_MIN_BYTES = 3_200_000
# A layer's plain call planned on the units split but too short for windows
# (a stream's chunk) runs on the crew too when its output, B x T x H values,
# is at most this many (the crew copies it from its own buffer).
CREW_CHUNK_MAX_VALUES = 1 << 22
# Compiled without FMA (x86-64-v2: 128-bit vectors, a multiply then an add),
# a dense w_hh whose state rows are at least this many bytes (float32 H >=
# 256, float64 H >= 128) runs the NumPy backend, when the call may use more
# than one thread and has SPLIT_MIN_FMAS of work: its products are then
# OpenBLAS's (Nehalem kernels) on every core, and the compiled product (4
# samples x 2 vectors of 4 floats, 16 registers, no FMA) loses to them.
# AMD Zen 3, x86-64-v2 / OPENBLAS_CORETYPE=Nehalem, quiet, ms, compiled
# (default threads) against the NumPy backend: float32 (64, 200, 128, 128)
# 28.5 against 35.5 (kept); (128, 100, 256, 512) 620 against 300; (32, 50,
# 1024, 1024) 362 against 188; (1, 10000, 1, 1000) 1173 against 837;
# float64 (64, 200, 128, 128) 120 against 89; (128, 100, 256, 512) 986
# against 724; (32, 50, 1024, 1024) 782 against 432; (1, 10000, 1, 1000)
# 2125 against 2244 (a tie). H <= 64 and every sparse reservoir: the
# compiled path is 1.3-11x faster. With FMA (haswell, OPENBLAS_CORETYPE=
# Haswell) the compiled product wins everywhere, so this never applies.
# With threads=1 it does not either: NumPy's BLAS would not keep to it (on
# one core the two were within 10%: H = 1000, 146 / 322 against 151 / 391
# us a step, float32 / float64). On a machine loaded by other processes
# OpenBLAS's own threads can collapse (load 4 on 2 cores: 7.9 ms a step at
# H = 1000): threads=1 keeps such calls compiled.
NUMPY_MIN_STATE_BYTES = 1024
# ... and only for a batch of NUMPY_MIN_BATCH samples or more, or one
# float32 sample from NUMPY_MIN_HIDDEN_ONE units on. A few samples are a
# product of a few rows, which OpenBLAS's gemm runs after packing the whole
# of w_hh again at every step; one sample is its gemv, which packs nothing.
# Compiled for x86-64-v2 on the 2-vCPU AMD Zen 4 VM (OPENBLAS_CORETYPE=
# Nehalem), forward calls of T = 2000, I = 16, compiled (default threads)
# against the NumPy backend, medians of 5 interleaved rounds: B = 2 0.20-0.36
# and B = 4 0.27-0.56 of its time (H = 256, 512, 768, both dtypes); B = 8
# 0.43-0.82 and B = 16 0.73-0.98 (H = 256 to 1024, shorter calls of about
# 300M multiply-adds); one sample, float32 H = 256 0.52, 512 0.60, 768 1.15,
# 1000 1.06-1.10 (T = 10 000), 1024 1.06; float64 256 0.52, 512 0.52, 768 0.75,
# 1000 0.81-0.85 (and 0.95 on the Zen 3 VM above, where this rule was set on
# the grid's rows: B = 1, 32, 64 and 128). From B = 32 on, the Zen 3 figures
# above hold (on the Zen 4 VM the two were within 0.83-1.13 of each other).
# A GRU's or LSTM's one sample stays compiled at every size: the NumPy
# backend's gated step is a dozen NumPy calls besides its gemv (float32,
# T = 1000-2000, I = 16, the compiled units split against it: GRU H = 256,
# 384, 512 3.09, 2.57, 1.87x; LSTM H = 192, 384 3.37, 1.91x).
NUMPY_MIN_BATCH = 32
NUMPY_MIN_HIDDEN_ONE = 768
# A batch is split by units, not by samples, where its dense weights (w_ih
# and w_hh) are at least this many bytes: split by samples, every thread
# reads all of them from L3 or memory at each step; by units, each its
# share. (32, 50, 1024, 1024), 2 threads, ms, by samples against by units:
# float64 (16 MB) compiled for haswell 156 against 107 (1 << 15 values a
# chunk) and 108 against 82 (1 << 19); on AVX-512 (AMD Zen 4) 78-85 against
# 78-86. Float32 (8 MB), medians of 9 interleaved calls (forced plans, one
# process, 2026-12-04): haswell 48.9-49.9 against 40.5-40.9, AVX-512 46.7
# against 35.6 (the fastest calls alike, 34-38: by samples, a call now and
# then ran at the units' speed). (128, 100, 256, 512): float64 (3 MB) 132
# against 132 (haswell) and 110 against 115 (AVX-512); float32 (1.5 MB,
# haswell) 52.1 against 58.8.
UNITS_SPLIT_MIN_BYTES = 6 << 20
# The units split's barrier yields the core with sched_yield (POSIX).
UNITS_SPLIT_AVAILABLE = hasattr(os, "sched_yield")


# Values (samples x units) in the input product's buffer: 128 KB of float32.
# One size for every w_ih: a chunk of 1 << 19 values where w_ih held 1 << 18
# or more (so that a chunk, not a step, read it from L3) helped the haswell
# kernels before their weight prefetch (.kernels.product.PREFETCH: float32
# (32, 50, 1024, 1024) one thread 93 against 76 ms); since, it costs time.
# Medians of calls interleaved in one process, the two sizes switched between
# them (2026-12-05), 1 << 15 over 1 << 19: (32, 50, 1024, 1024) AVX-512
# float32 0.986, threads=1 0.983; float64 0.988, threads=1 1.006; compiled
# for haswell float32 0.978, threads=1 0.993, float64 1.002, threads=1 1.014;
# LSTM float32 (32, 50, 512, 512) 1.000 (haswell 0.989), GRU 0.995, LSTM
# float64 (32, 50, 256, 256) 0.986.
CHUNK_ELEMENTS = 32 * 1024


def chunk_steps(batch: int, hidden: int) -> int:
    """Steps per chunk of the hoisted input product, for a call of ``batch``
    samples: the same for every way a call runs (one thread, the batch or
    units split, any windows, a layer's crew), and chunks start at
    multiples of it, so that the product's blocks of rows, and so its sums
    (fastrnn.kernels.product), are the same whatever the threads."""
    return max(1, CHUNK_ELEMENTS // max(1, batch * (hidden + 1)))


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
         dense: bool, plain: bool, limit: int, cores: int, fused: bool = True,
         itemsize: int = 8, kept: bool = False, gated: bool = False) -> Plan:
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
        (``fastrnn.kernels.simd.TARGET.fma``).
    itemsize : int, default 8
        Bytes per value (4 for float32).
    kept : bool, default False
        Whether a units split would be a prepared layer's, kept between
        calls (then from KEPT_SPLIT_MIN_FMAS multiply-adds on).
    gated : bool, default False
        Whether the call is a GRU's or an LSTM's (planned as an Elman
        layer of G x H units: ``hidden`` is G x H).
    """
    if batch == 1 and dense and plain and hidden <= SMALL_MAX_HIDDEN:
        # One small sequence: no thread helps (the units split starts at
        # H = SPLIT_MIN_HIDDEN).
        return _SMALL_PLAN
    work = rows * (input_size * hidden + recurrent)  # multiply-adds of the call
    if (dense and not fused and hidden * itemsize >= NUMPY_MIN_STATE_BYTES and limit > 1
            and cores > 1 and work >= SPLIT_MIN_FMAS
            and (batch >= NUMPY_MIN_BATCH
                 or batch == 1 and itemsize == 4 and hidden >= NUMPY_MIN_HIDDEN_ONE
                 and not gated)):
        # A large state without FMA, many samples (or one float32 sample of
        # many units): BLAS's products on every core beat the compiled ones
        # (see NUMPY_MIN_STATE_BYTES and NUMPY_MIN_BATCH).
        return _NUMPY_PLAN
    if (limit > 1 and work >= (KEPT_SPLIT_MIN_FMAS if kept else SPLIT_MIN_FMAS)
            and UNITS_SPLIT_AVAILABLE):
        parts = min(limit, cores)
        big = hidden >= SPLIT_MIN_HIDDEN if dense else recurrent >= SPLIT_MIN_NONZEROS
        small_batch = dense and hidden >= BATCH_SPLIT_MIN_HIDDEN and batch < 4 * parts
        heavy = dense and hidden * (hidden + input_size) * itemsize >= UNITS_SPLIT_MIN_BYTES
        if parts > 1 and (big if batch == 1 else small_batch or heavy):
            return Plan(UNITS_SPLIT, parts)
    if batch < 2 or limit < 2 or work < PARALLEL_MIN_FMAS:
        return _BLOCKED_PLAN
    return Plan(BATCH_SPLIT, min(limit, batch))


# --- Windows: a long call runs a window of steps at a time -----------------
#
# Between two windows the call is back in Python, where Ctrl-C raises
# KeyboardInterrupt (compiled code cannot be interrupted; every thread of a
# window stops at its end), and where a call planned on several threads is
# timed against one thread. The policy:
#
# - A call of at least WINDOWS_MIN_FMAS multiply-adds is cut into windows.
#   The first is FIRST_WINDOW_FMAS long; each next one is sized from the
#   rate measured so far to take about WINDOW_SECONDS (at most 8 times the
#   one before), so a Ctrl-C waits for at most about that much work.
#   A window costs a return to Python and, on a split, handing the window to
#   the threads (about 0.02 ms): well under 1% of WINDOW_SECONDS.
# - A split plan (several threads) is checked against one thread: a short
#   window (PROBE_SECONDS at the rate last measured, at least
#   PROBE_MIN_FMAS, at most a tenth of the call: the split's fixed cost a
#   window, ~0.2-1 ms, is a small share of it; shorter probes chose wrongly
#   on this noisy VM) of each, and the rest of the call goes the faster
#   way, the threads only if SPLIT_MIN_GAIN times faster. Where other
#   processes keep the cores busy, a thread of the split waits for a
#   descheduled one at every step's barrier, and one thread is faster
#   (AMD Zen 3, 2 cores, one busy process: float32 (1, 10 000, 1, 1000) 2x,
#   (2, 2000, 1, 512) 2.6x).
# - The verdict holds for REVISE_SECONDS, for this call and later calls of
#   the same shape (a stream of chunks), then both ways are timed again; and
#   sooner when the threads, chosen, fall below SLOWDOWN times their rate
#   when chosen (another process has started).
WINDOWS_MIN_FMAS = 20_000_000
FIRST_WINDOW_FMAS = 2_000_000
WINDOW_SECONDS = 0.02
# - The windows of a plan that is not timed (one thread, and the batch
#   split, whose threads never wait for each other) serve Ctrl-C only: the
#   first is UNTIMED_FIRST_WINDOW_FMAS long (10 ms at 100 GFLOP/s, 100 ms
#   at 10), the next ones UNTIMED_WINDOW_SECONDS. Each window of the batch
#   split hands its shares to the pool again: from FIRST_WINDOW_FMAS, as
#   the timed plans, float32 (64, 200, 128, 128) ran in 4 windows, 1.16x
#   the time of the release before the windows (12a0eb6, in one process,
#   9 rounds); in one window 1.08x.
UNTIMED_FIRST_WINDOW_FMAS = 1 << 29
UNTIMED_WINDOW_SECONDS = 0.05
PROBE_SECONDS = 0.02
PROBE_MIN_FMAS = 100_000_000
# A gated layer's call on its kept split (a stream's chunk) under
# JUDGED_CALL_MAX_FMAS is not cut into windows: whole calls are timed
# against one thread (judge_call), as an Elman layer's calls under
# WINDOWS_MIN_FMAS are. A gated step's multiply-adds are 3-4x an Elman
# step's of the same H, so 100-step chunks cross WINDOWS_MIN_FMAS at H = 256,
# where a probe (at most a tenth of the call: 10 steps, ~2M multiply-adds,
# ~0.1 ms on the threads) is mostly the threads' hand-off. float32 GRU (1,
# 10 000, 16, 256) in 100-step chunks, 2-vCPU Zen 4 VM: a revision chose one
# thread at 17.9e9 multiply-adds a second against 18.8 (the threads run
# 35e9 over whole chunks), and pytest-benchmark's stream took 91.6 ms against
# 42.7 for one call. 200M: ~10 ms on one thread, short enough for Ctrl-C.
JUDGED_CALL_MAX_FMAS = 200_000_000
SPLIT_MIN_GAIN = 1.15
REVISE_SECONDS = 2.0
# A verdict of one thread holds ONE_THREAD_REVISE_SECONDS only, doubling with
# each one after it in a row: another library's thread pool
# (OpenBLAS after a NumPy product, torch's, ONNX Runtime's) keeps spinning a
# while after its calls, and a probe in that while chose one thread for the
# next 2 s. Compiled for haswell, float32 (1, 10 000, 1, 1000) took 460-556
# ms a call on the default threads (one thread chosen) against 98 ms for
# 3000 steps forced on the units split (327 for 10 000) and 146 on one
# thread, the NumPy backend's calls between them; in `python -m fastrnn
# bench --cpu haswell`'s rounds, 502 ms before this rule and 317 with it
# (float64 1300 and 791). With one busy process (python -m bench.busy, same
# VM, same hour) the default's time over threads=1 was 1.04 / 1.02 / 1.16 /
# 1.02 with the rule and 1.04 / 1.02 / 1.15 / 1.01 without: a revision's
# probe on the threads costs its window's time once more, in a 1 s call of
# one thread three times (7% of its steps, tests/test_windows.py).
ONE_THREAD_REVISE_SECONDS = 0.25
# ... up to ONE_THREAD_MOST_REVISE_SECONDS (after 6 in a row). Each revision
# probes the threads for at least PROBE_MIN_FMAS (a sparse 1000-unit
# reservoir: 990 steps, a tenth of its call), which a busy machine makes
# twice as slow as one thread; with at most 2 s, `python -m bench.busy 5`
# on the 2-core AMD Zen 3 VM (one busy process) gave the default 1.41,
# 1.15 and 1.00 times the time of threads=1 on that reservoir in three
# runs (3 of its 12 figures above 1.1), with at most 8 s 1.05, 1.24 and
# 1.05 (1 of 12). A machine that becomes quiet gets the threads back
# within 8 s.
ONE_THREAD_MOST_REVISE_SECONDS = 8.0
# A verdict for the threads holds REVISE_SECONDS, doubling with each one
# after it in a row, up to SPLIT_MOST_REVISE_SECONDS (a slowdown still
# compares again at once): each revision runs a probe window on one thread,
# at most a tenth of the call's steps but a multiple of its chunk, and a
# call that ran it took that much longer (compiled for haswell, float64 (32,
# 50, 1024, 1024): 7 of 50 steps on one thread; in `python -m fastrnn bench`
# every implementation's turn came more than 2 s after the one before, so
# each turn probed again).
SPLIT_MOST_REVISE_SECONDS = 16.0


def doubled_hold(first: float, losses: int, most: float) -> float:
    """Seconds a verdict holds after ``losses`` verdicts the same way in a
    row (for one thread, or for the threads): ``first`` after the first,
    twice as long after each next, at most ``most`` (the doubling stops
    there: the count grows without bound on a machine that stays busy, or
    quiet)."""
    hold = first
    for _ in range(1, losses):
        if hold >= most:
            break
        hold *= 2
    return min(hold, most)


# A revision of one thread's verdict, while one thread runs (recent windows),
# cuts the threads' probe window in two: the first PRE_PROBE_PART of it, a
# pre-probe, then the rest (the probe's rate is over both). If the threads
# run the pre-probe below PRE_PROBE_LOSS times one thread's recent rate, one
# thread is chosen again without the rest of the probe: a busy machine's threads,
# 4.5x slower than one thread (examples/esn.py's reservoir, one busy process
# on the 2-core Zen 3 VM: 1040 steps in 73-94 ms against 21), cost such a
# call (200 ms) 30% more at each revision, while a quiet machine's threads
# (1.15x one thread at the least, when they win) run a short window at well
# over half one thread's rate (their fixed cost a window is ~0.2-1 ms).
PRE_PROBE_PART = 0.25
PRE_PROBE_LOSS = 0.5
# A pre-probe's time does not count its threads' start (``startup`` of
# Windows): threads asleep since the last probe (a quarter of a second and
# more) wake in ~0.3 ms in a KVM guest, a pre-probe's whole time at some
# sizes. float32 GRU (1, 1000, 16, 256) called every 0.2 s on the 2-vCPU
# Zen 4 VM: pre-probes at 9.5-12.6e9 multiply-adds a second against one
# thread's 22-23e9 chose one thread at every revision (9.2 ms calls), where
# the threads, running, took 4.3-5.5 ms.
# A revision's probe (REVISE_SECONDS after the last) counts the way that was
# running at no less than the median of its last RECENT_WINDOWS windows (of
# the last RECENT_SECONDS, none since a slowdown): one probe window on the
# threads that the VM's host delayed chose one thread for the next 2 s (AMD
# Zen 4 VM, float32 (1, 10 000, 1, 1000): its threads' windows at 3.5e10
# multiply-adds a second, the probe's at 2.1e10, one thread's 2.2e10:
# 460-520 ms calls against 270-350; rare: 1 of 16 threaded calls, before
# the rule as with it, in one measurement). Recent windows that a busy
# process has since made stale choose the threads once more; their first
# window then slows below SLOWDOWN and compares again without them.
RECENT_WINDOWS = 5
RECENT_SECONDS = 2 * REVISE_SECONDS
SLOWDOWN = 0.6


class Verdict:
    """Whether a split plan's threads beat one thread, as last measured for
    one shape of call (by :class:`Windows`, or by :func:`judge_call`)."""

    __slots__ = ("split", "when", "rate", "seen", "trials", "spent", "last", "streak",
                 "recent", "losses", "wins")

    def __init__(self) -> None:
        self.split = True  # the faster way
        self.when = -math.inf  # when it was measured (time.perf_counter), -inf: never
        self.rate = 0.0  # its rate then, multiply-adds a second
        # The ways that have run once: a way's first window may include
        # compiling its kernel (seconds), so it does not count.
        self.seen: set[bool] = set()
        # judge_call's rates of whole calls each way, while it compares them.
        self.trials: dict[bool, list[float]] = {True: [], False: []}
        self.spent = {True: 0.0, False: 0.0}  # ... and the seconds they took
        self.last: bool | None = None  # the way of the last call judge_call saw
        self.streak = 0  # calls that way in a row
        # (when, rate) of the last RECENT_WINDOWS windows outside probes (or
        # CALL_RECENT calls), each way.
        self.recent: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        self.losses = 0  # decisions for one thread in a row
        self.wins = 0  # decisions for the threads in a row

    def due(self, now: float) -> bool:
        """Whether both ways are to be timed again (REVISE_SECONDS and more
        since the last decision for the threads, ONE_THREAD_REVISE_SECONDS
        and more since one for one thread, or never decided, or a slowdown
        seen)."""
        if self.split:
            return now - self.when > doubled_hold(REVISE_SECONDS, self.wins,
                                                  SPLIT_MOST_REVISE_SECONDS)
        return now - self.when > doubled_hold(ONE_THREAD_REVISE_SECONDS, self.losses,
                                                 ONE_THREAD_MOST_REVISE_SECONDS)

    def decide(self, rates: dict[bool, float], gain: float, now: float) -> None:
        """Keep the threads if ``gain`` times faster than one thread."""
        self.split = rates[True] >= gain * rates[False]
        self.rate = rates[self.split]
        self.when = now
        self.losses = 0 if self.split else self.losses + 1
        self.wins = self.wins + 1 if self.split else 0

    def check(self, rate: float) -> None:
        """The chosen way ran at ``rate``: the threads below SLOWDOWN times
        their rate when chosen (another process has started), compare
        again, and forget the windows before (see RECENT_WINDOWS). One
        thread slowed down does not: the machine is busier, which only
        makes the threads worse, and a probe then is the costly part (a
        busy machine, examples/esn.py's reservoir: one thread's last window
        slowed by the busy process forgot the recent windows, the next
        call's probe met a one-thread window the host delayed (117 ms for
        1040 steps against 21) and chose the threads, 4.5x slower than one
        thread there: a 644 ms call against 222)."""
        if self.split and rate < SLOWDOWN * self.rate:
            self.when = -math.inf
            self.forget_recent()
            self.wins = 0

    def forget_recent(self) -> None:
        """Forget the recent windows (or calls) of both ways."""
        self.recent = {True: [], False: []}

    def note(self, way: bool, rate: float, now: float, keep: int = RECENT_WINDOWS) -> None:
        """A window (or call) outside probes ran ``way`` at ``rate``; the
        last ``keep`` are kept."""
        seen = self.recent[way]
        seen.append((now, rate))
        del seen[:-keep]

    def recent_rate(self, way: bool, now: float, least: int = 1, average: Any = None) -> float:
        """The median rate of ``way``'s recent windows (see
        RECENT_WINDOWS), or their ``average`` (a function of the rates),
        0.0 with fewer than ``least``."""
        fresh = [rate for when, rate in self.recent[way] if now - when <= RECENT_SECONDS]
        if not fresh or len(fresh) < least:
            return 0.0
        return (average or statistics.median)(fresh)

    def with_recent(self, rates: dict[bool, float], now: float) -> dict[bool, float]:
        """A probe's ``rates``, each way no less than the median of its
        recent windows (see RECENT_WINDOWS)."""
        return {way: max(rate, self.recent_rate(way, now)) for way, rate in rates.items()}


class Windows:
    """The windows of one call: iterate to get ``(first, last, split)``, run
    steps first..last-1 (on the plan's threads if ``split``, else on one),
    and the time until the next iteration is that window's. Every window
    but the last is a multiple of ``quantum`` steps. ``verdict``:
    the shape's :class:`Verdict` (None: a one-thread plan, nothing to
    compare); ``sample_steps(first, last)``: the sample-steps in a window;
    ``per_step``: multiply-adds per sample-step; ``clock``: for tests;
    ``startup()``: seconds of the last threaded window before its threads
    had all started (woken), which a pre-probe does not count (see the note
    after PRE_PROBE_LOSS); None: nothing to take out."""

    def __init__(self, steps: int, sample_steps, per_step: float,
                 verdict: Verdict | None, quantum: int = 1, clock=None,
                 startup=None) -> None:
        import time

        self.startup = startup

        self.steps = steps
        self.quantum = max(1, quantum)
        self.sample_steps = sample_steps
        self.per_step = max(1.0, float(per_step))
        self.verdict = verdict
        self.clock = clock or time.perf_counter
        self.rate = {True: 0.0, False: 0.0}  # the last window's rate each way
        self.log: list[tuple[int, int, bool, float]] = []  # what ran, for tests and tuning

    def _steps_for(self, first: int, fmas: float, most: int | None = None) -> int:
        # Steps from `first` that make about `fmas` multiply-adds (at most
        # `most`), a multiple of the quantum.
        running = self.sample_steps(first, first + 1)
        steps = max(1, int(fmas / (max(1, running) * self.per_step)))
        if most is not None:
            steps = min(steps, max(1, most))
        return -(-steps // self.quantum) * self.quantum

    def _window(self, first: int, last: int, split: bool):
        # Yields one window; returns its seconds and when it ended.
        start = self.clock()
        yield first, last, split
        end = self.clock()
        seconds = max(end - start, 1e-9)
        self.log.append((first, last, split, seconds))
        return seconds, end

    def __iter__(self):
        verdict = self.verdict
        first_fmas, window_seconds = (
            (UNTIMED_FIRST_WINDOW_FMAS, UNTIMED_WINDOW_SECONDS) if verdict is None
            else (FIRST_WINDOW_FMAS, WINDOW_SECONDS))
        # A shape already measured starts at its rate's window size.
        first = 0
        size = (first_fmas if verdict is None or verdict.rate <= 0
                else max(first_fmas, verdict.rate * window_seconds))
        while first < self.steps:
            now = self.clock()
            probe = verdict is not None and verdict.due(now)
            pre_rows, pre_seconds = 0, 0.0  # a pre-probe's sample-steps and time
            warm = verdict is not None and len(verdict.seen) == 2
            if probe:
                # Both ways, the same short window each; the split first.
                ways = (True, False)
                rate = max(max(self.rate.values()), verdict.rate)  # 0: never measured
                fmas = (max(PROBE_MIN_FMAS, PROBE_SECONDS * rate) if warm
                        else FIRST_WINDOW_FMAS)
                alone = verdict.recent_rate(False, now) if warm and not verdict.split else 0.0
                whole = self._steps_for(first, fmas, self.steps // 10) if alone > 0 else 0
                steps = max(1, int(whole * PRE_PROBE_PART) // self.quantum) * self.quantum
                if steps < whole:
                    # One thread chosen, and running: the threads' probe
                    # window starts with a pre-probe (see PRE_PROBE_PART).
                    last = min(self.steps, first + steps)
                    pre_seconds, end = yield from self._window(first, last, True)
                    if self.startup is not None:
                        pre_seconds = max(pre_seconds - self.startup(), 1e-9)
                    pre_rows = self.sample_steps(first, last)
                    first = last
                    rate = self.rate[True] = pre_rows * self.per_step / pre_seconds
                    if rate < PRE_PROBE_LOSS * alone:
                        verdict.decide({True: rate, False: alone}, SPLIT_MIN_GAIN, end)
                        continue
            else:
                ways = (True,) if verdict is None else (verdict.split,)
                fmas = size
            for split in ways:
                if first >= self.steps:
                    break
                most = self.steps // 10 if probe and warm else None
                count = self._steps_for(first, fmas, most)
                if split and pre_rows:
                    count = whole - steps  # the rest of the probe's window
                last = min(self.steps, first + count)
                seconds, end = yield from self._window(first, last, split)
                rows = self.sample_steps(first, last)
                if split and pre_rows:
                    rows += pre_rows
                    seconds += pre_seconds
                rate = rows * self.per_step / seconds
                self.rate[split] = rate
                first = last
                size = min(8 * size, rate * window_seconds)
                if verdict is not None:
                    verdict.seen.add(split)
                    if not probe:
                        verdict.note(split, rate, end)
            if verdict is None:
                continue
            if probe and warm and self.rate[False] > 0:
                now = self.clock()
                verdict.decide(verdict.with_recent(self.rate, now), SPLIT_MIN_GAIN, now)
            elif not probe:
                verdict.check(self.rate[verdict.split])


# Calls timed each way when judge_call compares a kept split with one thread,
# in a block of consecutive calls each way, CALL_TRIALS calls and
# CALL_BLOCK_SECONDS at least, their total time compared (see call_rate):
# a busy machine slows a tenth of the threads' calls 8x, which a block of a
# few calls may not meet (and once the fastest call counted: one call of a
# stream is a fraction of a millisecond, and this VM's noise is 20-45%). The
# first calls of a block are not counted: they may include loading a
# kernel, and they pay for the other way's run (the threads woken from their
# sleep, their share of the weights back into their caches). A way's first
# calls in a process are its slowest (float64 H = 256, 100-step chunks,
# GFMA/s, the threads: 0.4-0.5 for the first call, 1.1-11.7 for the second,
# 13.4-18.6 for the next five, 18-20 later; one thread: 0.4-0.8, then
# 6-16): with 3 calls of warm-up in the first blocks, one thread was chosen
# in 1 of 4 processes, with 10 in none of 5.
CALL_WARMUP = 3
CALL_FIRST_WARMUP = 10
CALL_TRIALS = 4
CALL_BLOCK_SECONDS = 0.02
# The threads are kept for such calls if this much faster than one thread
# (a window's SPLIT_MIN_GAIN, 1.15, took one thread in 1 of 4 streams above,
# at 16.2 against 14.2).
CALL_MIN_GAIN = 1.1
# A slowdown of the chosen way (Verdict.check) is judged on the rate of its
# last CALL_RECENT calls (call_rate: their total time), once
# CALL_RECENT_LEAST are recent, not on one call: on this project's Zen 4 VM,
# quiet, the batch split's 100-step chunks of a float64 (32, 10 000, 16, 64)
# stream took 788 us at the median and 1718 at the 99th percentile, and each
# call below SLOWDOWN times the chosen rate started a comparison whose calls
# on one thread took twice as long: 10 comparisons, all for the threads
# again, and 84 calls of 3000 on one thread in 2.2 s. Over 16 calls, the
# quiet machine's rare slow call does not start one (a gated layer's 100-step
# chunks on the threads, float32 H = 256: 0.24% of the calls over twice the
# median of 532 us, the slowest 4.9 ms), the busy machine's tail does (15% of
# the calls at 4.5 ms or more: the 16 calls' rate half the quiet one).
CALL_RECENT = 16
CALL_RECENT_LEAST = 8
# ... and the batch split's threads if no slower than its caller alone: both
# ways run the same shares (the same bits), so a tie is the threads' (a quiet
# machine's gain is theirs), while a busy machine's threads, slower, lose.
SHARES_MIN_GAIN = 1.0


def call_way(verdict: Verdict, clock) -> bool:
    """Whether the next call of a shape too short for windows runs on its
    kept split's threads (True) or on one thread: the verdict, or, when it
    is due for revision (REVISE_SECONDS, as for windows), a block of calls
    on the threads, then one on one thread (see CALL_TRIALS)."""
    if not verdict.due(clock()):
        return verdict.split
    return not _block_done(verdict, True)


def _block_done(verdict: Verdict, way: bool) -> bool:
    return len(verdict.trials[way]) >= CALL_TRIALS and verdict.spent[way] >= CALL_BLOCK_SECONDS


def call_rate(rates: list[float]) -> float:
    """The rate of a block of calls of one shape (the same multiply-adds
    each) that ran at ``rates``: their total work over their total time,
    the harmonic mean. With another process on the second core, a gated
    layer's 100-step chunks on the threads ran at a median 30e9
    multiply-adds a second and a tenth of them at 5e9 or less (the helper
    waiting for its core), one thread at 19.5e9: the fastest of 4 calls,
    and their median, chose the threads, 1.2-1.4x slower than one thread
    over a stream (see CALL_TRIALS). (Not statistics.harmonic_mean: it
    took 10 us, a fiftieth of such a call.) A rate of 0 (a call of no
    work) makes the block's 0."""
    if min(rates) <= 0:
        return 0.0
    return len(rates) / sum(1.0 / rate for rate in rates)


def judge_call(verdict: Verdict, split: bool, fmas: float, seconds: float, clock,
               gain: float = CALL_MIN_GAIN) -> None:
    """Record a whole call run one way (``split``: on the threads) that took
    ``seconds`` for ``fmas`` multiply-adds. While comparing, after a block
    of counted calls each way (CALL_TRIALS, CALL_BLOCK_SECONDS) the threads
    are kept only if ``gain`` times faster than one thread (:func:`call_rate`
    of each block); otherwise the chosen threads' recent calls (see
    CALL_RECENT) slower than SLOWDOWN times the verdict's rate start a
    comparison again (see Verdict.check).
    The first CALL_WARMUP calls after one of the other way do not count
    (CALL_FIRST_WARMUP in a way's first block)."""
    rate = fmas / max(seconds, 1e-9)
    # A way's first block warms up longer (its first calls in the process
    # are its slowest), the later blocks CALL_WARMUP calls.
    warmup = CALL_WARMUP if split in verdict.seen else CALL_FIRST_WARMUP
    verdict.streak = verdict.streak + 1 if verdict.last is split else 1
    verdict.last = split
    if verdict.streak <= warmup:
        return
    verdict.seen.add(split)
    now = clock()
    if not verdict.due(now):
        if split == verdict.split:
            verdict.note(split, rate, now, CALL_RECENT)
            recent = verdict.recent_rate(split, now, CALL_RECENT_LEAST, call_rate)
            if recent > 0:
                verdict.check(recent)
        return
    trials = verdict.trials
    trials[split].append(rate)
    verdict.spent[split] += seconds
    if _block_done(verdict, True) and _block_done(verdict, False):
        verdict.decide({way: call_rate(rates) for way, rates in trials.items()}, gain, now)
        trials[True].clear()
        trials[False].clear()
        verdict.spent = {True: 0.0, False: 0.0}
        # (The calls before the comparison, slower, are not the chosen
        # way's now.)
        verdict.forget_recent()


# --- The crew's verdict: a layer's steps and short calls -------------------
#
# A layer's crew (fastrnn._crew) is timed against one thread per layer and
# key (a step's batch, a chunk's shape) by CrewVerdict, in blocks of calls of
# at least CREW_BLOCK_SECONDS each way (after CREW_WARMUP calls of the way,
# CREW_FIRST_WARMUP in the first comparison: its first calls load kernels and
# start threads), the crew kept if CALL_MIN_GAIN times faster over its block.
# A block's total time, not its fastest call: with another process on the
# second core, the crew's steps were fast while its helper had the core and
# slow while it waited for it, and the fastest of 4 steps chose the crew at
# 2x one thread's time (float32 B = 32, H = 256: 94 against 47 us a step).
# Decided, the chosen way is timed over windows of CREW_BLOCK_SECONDS; the
# crew slower than SLOWDOWN times its rate when chosen compares again, as does
# CREW_REVISE_SECONDS[way] after deciding for that way (True: the crew;
# one thread twice as long with each loss of the crew in a row, up to 64x):
# one thread, chosen while other threads spun on the second core (a peer's
# pool after its calls, in `python -m fastrnn bench`'s rounds), held for 2 s
# after they had stopped (float32 B = 32, H = 1024: 711 us a step against
# 355-400 on the crew), while on a busy machine each comparison's block on
# the crew is its slowest time.
# Forks this process descends through (os.register_at_fork): a crew made
# before the last one has no helpers in this process (os.getpid, a system
# call, cost 0.3 us a step).
FORKS = [0]


def _forked() -> None:
    FORKS[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)

CREW_BLOCK_SECONDS = 0.01
CREW_WARMUP = 3
CREW_FIRST_WARMUP = 10
CREW_REVISE_SECONDS = {True: 0.5, False: 0.05}
# One thread's hold doubles with each loss of the crew in a row, up to
# CREW_REVISE_SECONDS[False] * 2 ** CREW_MAX_DOUBLINGS.
CREW_MAX_DOUBLINGS = 6


class CrewVerdict:
    """Whether a layer's crew beats one thread for one key (see
    CREW_BLOCK_SECONDS). :meth:`way` says which way the next call runs,
    :meth:`record` takes its time."""

    __slots__ = ("split", "when", "rate", "comparing", "calls", "fmas", "seconds", "rates",
                 "first", "losses", "revise")

    def __init__(self) -> None:
        self.split = True  # the faster way
        self.when = -math.inf  # when decided (-inf: never, or a slowdown seen)
        self.rate = 0.0  # the chosen way's rate then, multiply-adds a second
        self.comparing: bool | None = None  # the way being timed, None when decided
        self.calls = 0  # calls of this block (or window)
        self.fmas = 0.0  # their multiply-adds and seconds, warm-up left out
        self.seconds = 0.0
        self.rates: dict[bool, float] = {}
        self.first = True  # no comparison finished yet
        self.losses = 0  # comparisons the crew has lost in a row
        self.revise = CREW_REVISE_SECONDS[True]  # seconds the decision holds

    def way(self, now: float) -> bool:
        """Whether the next call runs on the crew."""
        if self.comparing is None:
            if now - self.when <= self.revise:
                return self.split
            self.comparing = True  # the crew's block first
            self.calls, self.fmas, self.seconds = 0, 0.0, 0.0
        return self.comparing

    def window_done(self) -> None:
        """Decided, the chosen way's calls have added up to a window
        (``fmas`` in ``seconds``): the crew slower than SLOWDOWN times its
        rate when chosen, compare again (one thread slowed down: see
        Verdict.check)."""
        if self.split and self.fmas < SLOWDOWN * self.rate * self.seconds:
            self.when = -math.inf
        self.calls, self.fmas, self.seconds = 0, 0.0, 0.0

    def record(self, way: bool, fmas: float, seconds: float, now: float) -> None:
        """A call that way of ``fmas`` multiply-adds took ``seconds``."""
        self.calls += 1
        if self.comparing is None:
            self.fmas += fmas
            self.seconds += seconds
            if self.seconds >= CREW_BLOCK_SECONDS:
                self.window_done()
            return
        if self.calls <= (CREW_FIRST_WARMUP if self.first else CREW_WARMUP):
            return
        self.fmas += fmas
        self.seconds += seconds
        if self.seconds < CREW_BLOCK_SECONDS:
            return
        self.rates[way] = self.fmas / self.seconds
        self.calls, self.fmas, self.seconds = 0, 0.0, 0.0
        if way:
            self.comparing = False  # then one thread's block
            return
        self.split = self.rates[True] >= CALL_MIN_GAIN * self.rates[False]
        self.rate = self.rates[self.split]
        self.when = now
        # One thread holds 50 ms after the crew's first loss, twice as long
        # after each next loss in a row, up to 3.2 s: a loss is often
        # passing (the second vCPU woken after an idle spell ran the
        # helper's share at 500-600 us a step for 5-15 ms, float32 B = 32,
        # H = 256, against 40-45 later and 47-55 on one thread; 0.25 s held
        # took a whole 0.2 s bench turn); on a busy machine, where the
        # crew's block is its slowest time, the comparisons' cost falls
        # with the doubling (7 comparisons in the first 6.4 s).
        self.losses = 0 if self.split else self.losses + 1
        self.revise = CREW_REVISE_SECONDS[True] if self.split else doubled_hold(
            CREW_REVISE_SECONDS[False], self.losses,
            CREW_REVISE_SECONDS[False] * 2 ** CREW_MAX_DOUBLINGS)
        self.comparing = None
        self.first = False

