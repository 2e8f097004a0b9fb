"""Numba backend: the forward pass in compiled code, on one or more threads.

This module is the Python side: it takes the plan of
:func:`fastrnn._plan.plan` (pure Python, where the thresholds and the
measurements behind them are) and runs it on the kernels of
:mod:`fastrnn.kernels`. One small sequence goes to the joint product of
``kernels.small``; every other plan runs the one step loop of
``kernels.driver``: on the calling thread (:func:`.driver.forward_range`),
with the batch split across the process's team of kept threads
(fastrnn._team; each its share of the samples, every unit), or with the
units split across threads started for the call (fastrnn._units: every
sample, a share of the units, a barrier between steps). Compiled for a CPU
without FMA, large dense states go to the NumPy backend (``_plan.NUMPY``). A
long call runs a window of steps at a time (``_plan.Windows``): Ctrl-C
between windows, and a units split timed against one thread on a busy
machine.

Both products run in the register-blocked kernel of ``kernels.product`` on
weights packed in panels, never BLAS: per-step BLAS calls cost microseconds at
small sizes, OpenBLAS threads that keep spinning after a call fight ours for
the cores, and the packed kernel ran at about a core's full rate even with
the weights streamed from L3 (float32 (32, 50, 1024, 1024): 197 GFLOP/s on
two threads, against 142 for the per-step BLAS path this replaced). The
threads of the batch split share one packed copy of the weights: two
private copies of H = 1024 float64 weights (16 MB each) overflowed L3. A
sparse w_hh (CSR) replaces the recurrent product with the SELL gathers of
``kernels.sparse``. Importing this module imports Numba; the NumPy backend
never does.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, NamedTuple

import numpy as np

from ._plan import (
    BATCH_SPLIT,
    BLOCKED,
    CALL_MIN_GAIN,
    JUDGED_CALL_MAX_FMAS,
    NUMPY,
    SHARES_MIN_GAIN,
    SMALL,
    SPLIT_MIN_FMAS,
    UNITS_SPLIT,
    WINDOWS_MIN_FMAS,
    Plan,
    Verdict,
    Windows,
    available_cores,
    call_way,
    chunk_steps,
    judge_call,
)
from ._plan import plan as choose
from ._team import Team
from .kernels.barrier import FLAG_STRIDE, MAX_SHARES
from .kernels.cells import elman, pack_gated_call, pack_layer_call
from .kernels.driver import (
    direct_range_call,
    direct_stack_bytes,
    direct_stack_call,
    forward_range_call,
    forward_range_shares_call,
)
from .kernels.simd import TARGET, VECTOR_BYTES
from .kernels.small import (  # noqa: F401  (get_small)
    direct_small_call,
    forward_small,
    forward_small_call,
    pack_small,
    sequences_call,
)
from .kernels.sparse import sell_pack
from .kernels.step import STACK_BYTES


class KeptSplit:
    """A prepared layer's units split (fastrnn._units.Split), kept between
    calls with its packed weights and its threads; see :meth:`take_split`."""

    __slots__ = ("_split", "_split_lock", "__weakref__")

    def __init__(self) -> None:
        # [the kept units split or None]: a list the finalizer below can
        # hold without holding the layer.
        self._split: list[Any] = [None]
        self._split_lock = threading.Lock()

    def take_split(self, parts: int, batch: int, make: Any) -> Any:
        """The layer's units split (fastrnn._units.Split) for ``parts``
        threads and ``batch`` samples, kept between calls with its packed
        weights and its threads (a stream of 100-step chunks at H = 256 spent
        a third of its time packing and starting threads), or made by
        ``make()``; None while another call of this layer holds it. Give it
        back with :meth:`give_back_split`."""
        if not self._split_lock.acquire(blocking=False):
            return None
        split = self._split[0]
        if split is None or split.parts != parts or split.batch != batch:
            try:
                split = make()
            except BaseException:
                self._split_lock.release()
                raise
            if self._split[0] is not None:
                self._split[0].stop()
            else:  # its threads stop when the layer is freed
                weakref.finalize(self, _stop_kept_split, self._split)
            self._split[0] = split
        return split

    def give_back_split(self) -> None:
        self._split_lock.release()


class Prepared(KeptSplit):
    """A layer's weights as the kernels read them, made once for
    :class:`fastrnn.Layer`: ``packed`` (:func:`fastrnn.kernels.cells.pack_layer`
    of every unit: w_ih.T and a dense w_hh.T packed in panels, then the
    fused bias, the leak and 1 - leak), read by the forward pass and the
    step kernels alike, and ``sparse`` (a sparse w_hh in SELL-C-sigma form,
    else None); and its kept units split."""

    __slots__ = ("packed", "sparse")

    def __init__(self, w_ih: np.ndarray, w_hh: Any, bias: np.ndarray,
                 leak: np.ndarray | None) -> None:
        super().__init__()
        hidden = bias.shape[0]
        dense = w_hh if isinstance(w_hh, np.ndarray) else None
        none = np.empty(0, bias.dtype)  # (no bias, no leak: see forward)
        self.packed = pack_layer_call(w_ih, dense, bias, none, none if leak is None else leak, 0,
                                      hidden, bias)
        self.sparse = (None if dense is not None else
                       sell_pack(w_hh.indptr, w_hh.indices, w_hh.data, hidden, hidden))


def _stop_kept_split(kept: list[Any]) -> None:
    if kept[0] is not None:
        kept[0].stop()
        kept[0] = None


# Empty arrays of 1 and 3 dimensions, for the kernels' arguments that are
# not given (see forward).
_EMPTY = {np.dtype(dtype).char: {1: np.empty(0, dtype), 3: np.empty((0, 0, 0), dtype)}
          for dtype in (np.float32, np.float64)}


def _thread_count(setting: str | None) -> int:
    """FASTRNN_NUM_THREADS caps the threads one forward call uses (default:
    the cores this process may run on, within its CPU quota)."""
    if not setting:
        return _CORES
    try:
        count = int(setting)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"FASTRNN_NUM_THREADS must be a whole number of threads >= 1, got {setting!r}"
        )
    return count


# Read once: the cgroup's quota is a file to read, too slow for every call.
_CORES = available_cores()
_THREADS = _thread_count(os.environ.get("FASTRNN_NUM_THREADS"))


def default_threads() -> int:
    """The most threads a call uses when it does not say (FASTRNN_NUM_THREADS,
    else the CPUs this process may use)."""
    return _THREADS


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _thread_pool() -> ThreadPoolExecutor:
    # Locked: two threads making their first call at once must not each
    # start a pool.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, _THREADS - 1),
                                       thread_name_prefix="fastrnn")
        return _pool


_team: Team | None = None


def _batch_team(parts: int) -> Team | None:
    """The process's team for the batch split (fastrnn._team), held for this
    call (release its lock after), or None when another call holds it or
    it has too few helpers for ``parts`` (``threads=`` above the default):
    such calls hand their shares to the pool."""
    global _team
    with _pool_lock:
        if _team is None:
            _team = Team(max(1, _THREADS - 1), "fastrnn-batch")
        team = _team
    if parts - 1 > team.size or not team.lock.acquire(blocking=False):
        return None
    return team


def _forget_pool_after_fork() -> None:
    # A forked child has only the thread that forked: the parent's pool
    # workers do not exist there, yet the executor believes they are idle
    # and would queue the child's work for them forever. The child starts
    # a pool of its own on its first split call, and a team (whose lock
    # another parent thread may have held at the fork). The lock is
    # replaced, not released: another parent thread may have held it at
    # the fork.
    global _pool, _pool_lock, _team
    _pool = None
    _pool_lock = threading.Lock()
    _team = None


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def forward(x: np.ndarray, w_ih: np.ndarray, w_hh: Any, b_ih: np.ndarray | None,
            b_hh: np.ndarray | None, h0: np.ndarray | None, out: np.ndarray | None,
            h_n: np.ndarray, relu: bool, batch_first: bool, lengths: np.ndarray | None,
            leak: np.ndarray | None, reverse: bool, threads: int | None,
            prepared: Prepared | None = None, plan: Plan | None = None, col: int = 0) -> None:
    """Same contract as :func:`fastrnn._numpy.forward`; ``prepared``: a
    Layer's packed weights (else they are packed for this call); ``plan``:
    how to run it (else :func:`fastrnn._plan.plan` decides); ``col``: the
    output goes to columns col..col + H of ``out`` (one direction's half of
    a bidirectional output, written in place by the kernels: see
    fastrnn.Layer.run)."""
    # The path is chosen here, not inside compiled code, so that a first
    # call compiles only what it needs (compilation takes seconds). This
    # wrapper is part of every call's latency: keep it short.
    batch, hidden = h_n.shape
    # The caller's output, for the paths that take it as it is: its columns
    # col..col + H.
    given = out if out is None or out.shape[-1] == hidden else out[..., col:col + hidden]
    if out is not None and not out.flags.c_contiguous:
        assert given is not None  # (for mypy)
        # The kernels write C-contiguous outputs (one compiled variant, with
        # vector stores: stores to an output of any layout made float32 (1,
        # 100 000, 8, 64) 5% slower): a strided out is filled from one, as
        # wide as this call's columns.
        out = np.empty(given.shape, given.dtype)
        forward(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, lengths, leak,
                reverse, threads, prepared, plan)
        given[...] = out
        return
    # w_hh: an ndarray, or a canonical CSR matrix (see _validate.as_sparse_csr).
    dense = w_hh if type(w_hh) is np.ndarray else None
    plain = lengths is None and leak is None and not reverse
    if lengths is None:
        order = lens = None
        rows = x.shape[0] * x.shape[1]
    else:
        # Longest first: the sequences still running at a step are a prefix.
        order = np.argsort(-lengths, kind="stable")
        lens = lengths[order]
        rows = int(lens.sum())
    chosen = plan is None  # (a plan given is run as it is: tests force paths)
    if plan is None:
        plan = choose(batch=batch, hidden=hidden, input_size=x.shape[2], rows=rows,
                      recurrent=hidden * hidden if dense is not None else w_hh.nnz,
                      dense=dense is not None, plain=plain,
                      limit=_THREADS if threads is None else threads,
                      cores=_CORES, fused=TARGET.fma, itemsize=h_n.itemsize,
                      kept=prepared is not None and order is None)
    path = plan.path
    if path == NUMPY:
        # BLAS's products beat the compiled ones here (_plan.NUMPY_MIN_STATE_BYTES).
        from . import _numpy

        _numpy.forward(x, w_ih, w_hh, b_ih, b_hh, h0, given, h_n, relu, batch_first, lengths,
                       leak, reverse, threads)
        return
    # What the kernels receive is normalised to arrays, so that each
    # compiles a handful of variants (see the README): no output, no bias or
    # no leak is an empty array, no h0 zeros in h_n (the kernels read h0
    # before they write h_n).
    empty = _EMPTY[h_n.dtype.char]
    if out is None:
        out = empty[3]
    if h0 is None:
        h_n.fill(0)
        h0 = h_n
    if b_ih is None:
        b_ih = empty[1]
    if b_hh is None:
        b_hh = empty[1]
    leaky = leak is not None
    if leak is None:
        leak = empty[1]
    if path == SMALL:
        # (This kernel takes an output of any layout: a few scalar stores a
        # step.)
        sequences_call(x, w_ih, dense, b_ih, b_hh, h0, out if given is None else given, h_n,
                       relu, batch_first)
        return
    steps_total = x.shape[1] if batch_first else x.shape[0]
    longest = steps_total if lens is None else int(lens[0]) if batch else 0
    per_step = x.shape[2] * hidden + (hidden * hidden if dense is not None else w_hh.nnz)
    windowed = rows * per_step >= WINDOWS_MIN_FMAS and longest > 0
    chunk = chunk_steps(batch, hidden)
    cell = elman(relu, leaky)
    packed = sparse = None
    if prepared is not None:
        packed, sparse = prepared.packed, prepared.sparse

    def pack() -> tuple[np.ndarray, Any]:
        # The whole layer's weights (and a sparse w_hh's SELL form), packed
        # once for the call; a prepared layer's were packed when prepared.
        nonlocal packed, sparse
        if packed is None:
            packed = pack_layer_call(w_ih, dense, b_ih, b_hh, leak, 0, hidden, h_n)
        if dense is None and sparse is None:
            sparse = sell_pack(w_hh.indptr, w_hh.indices, w_hh.data, hidden, hidden)
        return packed, sparse

    def run_one(h: np.ndarray, first: int, last: int) -> None:
        # Steps first..last-1 of every sample on this thread.
        weights, sell = pack()
        forward_range_call(x, weights, sell, cell, h, out, col, h_n, batch_first, order, lens,
                           reverse, 0, batch, first, last, chunk)

    split = None
    kept = False  # whether split is the prepared layer's, to give back
    if path == UNITS_SPLIT:
        # Imported here: most programs never take this path, so they need
        # not pay for importing it at start-up.
        from . import _units

        def make_split() -> Any:
            return _units.Split(w_ih, w_hh, b_ih, b_hh, leak, h_n, order, lens, plan.parts)

        # A prepared layer keeps its split for calls of every sample's whole
        # length (a stream's chunks); the others make one for the call.
        busy = False  # whether the layer's kept split is another call's
        if prepared is not None and order is None:
            split = prepared.take_split(plan.parts, batch, make_split)
            kept = split is not None
            busy = not kept
        if busy and chosen and rows * per_step < SPLIT_MIN_FMAS:
            # Planned for the layer's kept split, which another call holds:
            # too short to start threads for, it runs on this one.
            path = BLOCKED
        elif split is None:
            split = make_split()

        def run_split(h: np.ndarray, first: int, last: int) -> None:
            assert split is not None  # (path is BLOCKED otherwise)
            split.run(x, h, out, col, h_n, cell, batch_first, reverse, first, last, chunk)
    elif path == BATCH_SPLIT:
        weights, sell = pack()
        shares, whole_blocks = _batch_split(x, weights, sell, cell, out, col, h_n, batch_first,
                                            order, lens, reverse, plan.parts, chunk)
        run_split = shares
        if not whole_blocks:
            def run_one(h: np.ndarray, first: int, last: int) -> None:
                # The caller alone: the batch split's shares (its bits), with
                # no hand-off (see below). Where every share is whole blocks
                # of 4 samples, the one-thread path (the run_one above) has
                # the same bits (fastrnn.kernels.product: a row's sums
                # depend on its block only if it is one of the last B % 4
                # rows) and runs the batch at once: float32 (32, 100, 32,
                # 64), quiet, 200 calls each way, the shares one after the
                # other took 1.05x its time (1.301 against 1.234 ms).
                shares(h, first, last, alone=True)
    if path == BLOCKED:
        run_split = run_one
    if not windowed:
        try:
            if chosen and (kept or path == BATCH_SPLIT):
                # A kept split, or the batch split, on a call too short for
                # windows (a chunk of a stream): whole calls are timed
                # against one thread instead (fastrnn._plan.judge_call).
                # (A verdict of its own: a whole short call pays the hand-off
                # to the threads, which a long call's windows do not.) The
                # batch split's one thread is its caller running every
                # share, with the threads' bits. With one busy process on
                # the 2-core Zen 3 VM, float32 (32, 100, 32, 64): 144 of 150
                # calls handed off ran their shares one thread after the
                # other (1.40-1.44 ms against 1.23 for threads=1); with the
                # host's second core slow, calls that did run on both took
                # 1.61 ms against 1.25 alone.
                _judged_call(("calls", path, plan.parts, batch, hidden, x.shape[2], per_step,
                              h_n.dtype.char), run_split, run_one, h0, steps_total,
                             rows * per_step,
                             SHARES_MIN_GAIN if path == BATCH_SPLIT else CALL_MIN_GAIN)
            else:
                run_split(h0, 0, steps_total)
        finally:
            _release(split, kept, prepared)
        return
    # A window at a time (see fastrnn._plan.Windows): Ctrl-C is answered
    # between two, and a split plan is timed against one thread.
    sample_steps = _sample_steps(batch, lens)
    # Only the units split is timed against one thread (its threads wait
    # for each other at every step, which a busy machine turns into waits
    # for a descheduled thread). The batch split's threads never wait for
    # each other within a window, and a probe short enough to cost little
    # chose one thread for it where its threads were 1.5x faster ((64, 200,
    # 128, 128) float32: 16 against 11 ms).
    verdict = None if path != UNITS_SPLIT else _verdict(
        (path, plan.parts, batch, hidden, x.shape[2], per_step, h_n.dtype.char))
    h = h0
    try:
        # Window boundaries at multiples of the chunk: the input product's
        # chunks (and so its sums) are those of one window.
        for first, last, threads_on in Windows(longest, sample_steps, per_step, verdict, chunk,
                                               startup=None if split is None else split.startup):
            # The last window also writes the zeros past every sequence's end.
            (run_split if threads_on else run_one)(h, first, steps_total if last == longest
                                                   else last)
            h = h_n
    finally:
        _release(split, kept, prepared)


def pack_gated(w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None,
               b_hh: np.ndarray | None, gates: int, u0: int = 0,
               u1: int | None = None) -> np.ndarray:
    """A gated layer's weights as the kernels read them
    (:func:`fastrnn.kernels.cells.pack_gated`) for units u0..u1-1 (every
    unit: packed once by :class:`fastrnn.GRULayer` and
    :class:`fastrnn.LSTMLayer`; a share of them: a thread's of the units
    split)."""
    empty = _EMPTY[w_ih.dtype.char][1]
    return pack_gated_call(w_ih, w_hh, empty if b_ih is None else b_ih,
                           empty if b_hh is None else b_hh, gates, u0,
                           w_hh.shape[1] if u1 is None else u1, w_ih)


def cell_plan(batch: int, rows: int, input_size: int, hidden: int, gates: int,
              threads: int | None, itemsize: int) -> Plan:
    """The plan of a gated layer's call (:func:`forward_cell`): as an Elman
    layer of G H units reading the state of H (the same multiply-adds a
    step)."""
    return choose(batch=batch, hidden=gates * hidden, input_size=input_size, rows=rows,
                  recurrent=gates * hidden * hidden, dense=True, plain=False,
                  limit=_THREADS if threads is None else threads, cores=_CORES,
                  fused=TARGET.fma, itemsize=itemsize, gated=True)


def gated_direct(packed: np.ndarray, cell: Any, batch: int, steps: int, input_size: int,
                 hidden: int, threads: int | None, like: np.ndarray) -> DirectCall | None:
    """The :class:`DirectCall` of a gated layer's plain call of ``batch``
    whole sequences of ``steps`` steps (h0 and h_n (B, H), or (B, 2H) for an
    LSTM: [h | c]), where :func:`forward_cell` would run it on this thread
    in one window; else None."""
    gates = cell.gates
    rows = batch * steps
    planned = cell_plan(batch, rows, input_size, hidden, gates, threads, like.itemsize)
    on_threads = planned.parts > 1 and (planned.path == UNITS_SPLIT or (
        planned.path == BATCH_SPLIT and batch > 1))
    if (planned.path == NUMPY or on_threads or rows == 0
            or rows * gates * hidden * (hidden + input_size) >= WINDOWS_MIN_FMAS):
        return None
    return _direct(packed, None, cell, batch, steps, input_size, gates * hidden,
                   hidden * (2 if gates == 4 else 1), like)


def forward_cell(x: np.ndarray, packed: np.ndarray, cell: Any, hidden: int,
                 h0: np.ndarray | None, out: np.ndarray | None, h_n: np.ndarray,
                 batch_first: bool, lengths: np.ndarray | None, threads: int | None,
                 numpy_forward: Any = None, plan: Plan | None = None,
                 weights: tuple[np.ndarray, ...] | None = None,
                 kept: KeptSplit | None = None) -> bool:
    """A gated layer's forward pass (fastrnn._gated) on the step loop of
    ``kernels.driver`` with the cell ``cell`` (``kernels.cells.GRU`` or
    ``LSTM``): on this thread, or with the batch split when the plan of an
    Elman layer as heavy would take several threads; a window at a time for
    Ctrl-C. ``h0`` and ``h_n``: (B, H), or (B, 2H) for an LSTM ([h | c]);
    h0 None for zeros; ``out`` None, or (B, T, H) / (T, B, H) like x,
    C-contiguous. Validated by the caller; only ``out`` and ``h_n`` are
    written. ``numpy_forward()``: the NumPy backend's call, made instead
    where the plan says BLAS's products win (large states compiled without
    FMA, ``_plan.NUMPY``); it writes the caller's results itself, and the
    call returns False (True: the kernels ran, into ``out`` and ``h_n``).
    ``plan``: how to run it (tests force paths; else
    :func:`fastrnn._plan.plan` decides). ``weights``: (w_ih, w_hh, b_ih,
    b_hh) as given to :func:`pack_gated`, which the units split packs a
    share of for each thread (every sample, a share of the units, a barrier
    between steps: fastrnn._units); without them a call it would take runs
    on one thread or the batch split. ``kept``: the layer's kept split, for
    calls of every sample's whole length (a stream's chunks: starting the
    threads and packing each call took float32 GRU H = 256 100-step chunks
    to 2.5x the time of one call)."""
    batch = h_n.shape[0]
    steps_total = x.shape[1] if batch_first else x.shape[0]
    input_size = x.shape[2]
    if lengths is None:
        order = lens = None
        rows = batch * steps_total
    else:
        order = np.argsort(-lengths, kind="stable")
        lens = lengths[order]
        rows = int(lens.sum())
    gates = cell.gates
    per_step = gates * hidden * (hidden + input_size)
    planned = plan or cell_plan(batch, rows, input_size, hidden, gates, threads, h_n.itemsize)
    if planned.path == NUMPY and numpy_forward is not None:
        numpy_forward()
        return False
    if h0 is None:
        h_n.fill(0)
        h0 = h_n
    if out is None:
        out = _EMPTY[h_n.dtype.char][3]
    longest = steps_total if lens is None else int(lens[0]) if batch else 0
    chunk = chunk_steps(batch, gates * hidden)
    def run_one(h: np.ndarray | None, first: int, last: int, alone: bool = False) -> None:
        forward_range_call(x, packed, None, cell, h, out, 0, h_n, batch_first, order, lens,
                           False, 0, batch, first, last, chunk)

    run = run_one
    split = verdict = None
    parts = planned.parts
    if planned.path == UNITS_SPLIT and weights is not None and parts > 1:
        from . import _units

        w_ih, w_hh, b_ih, b_hh = weights

        def make_split() -> Any:
            return _units.Split(w_ih, w_hh, None, None, None, h_n, order, lens, parts,
                                pack=lambda u0, u1: pack_gated(w_ih, w_hh, b_ih, b_hh, gates,
                                                               u0, u1))

        if kept is not None and order is None:
            split = kept.take_split(parts, batch, make_split)
        if split is None:
            kept = None  # (none, or another call's: one for this call)
            split = make_split()

        def run(h: np.ndarray | None, first: int, last: int, alone: bool = False) -> None:
            assert split is not None and h is not None
            split.run(x, h, out, 0, h_n, cell, batch_first, False, first, last, chunk)

        # Timed against one thread, as an Elman layer's units split (see forward).
        verdict = _verdict(("gated", UNITS_SPLIT, parts, batch, hidden, input_size, per_step,
                            h_n.dtype.char))
    elif planned.path in (BATCH_SPLIT, UNITS_SPLIT) and batch > 1 and parts > 1:
        run, _ = _batch_split(x, packed, None, cell, out, 0, h_n, batch_first, order, lens,
                              False, min(parts, batch), chunk)
    try:
        work = rows * per_step
        if kept is not None and split is not None and 0 < work < JUDGED_CALL_MAX_FMAS:
            # A kept split's call too short for windows or for a fair probe
            # (a stream's chunk): whole calls timed against one thread
            # (fastrnn._plan.judge_call), as an Elman layer's kept split's
            # (see forward and JUDGED_CALL_MAX_FMAS).
            _judged_call(("gated calls", UNITS_SPLIT, parts, batch, hidden, input_size,
                          per_step, h_n.dtype.char), run, run_one, h0, steps_total, work,
                         CALL_MIN_GAIN)
            return True
        if work < WINDOWS_MIN_FMAS or longest == 0:
            run(h0, 0, steps_total)
            return True
        h = h0
        for first, last, threads_on in Windows(longest, _sample_steps(batch, lens), per_step,
                                               verdict, chunk, startup=None if split is None
                                               else split.startup):
            (run if threads_on or verdict is None else run_one)(
                h, first, steps_total if last == longest else last)
            h = h_n
    finally:
        if kept is not None and split is not None:
            kept.give_back_split()
        elif split is not None:
            split.close()
    return True


def call_plan(batch: int, steps: int, input_size: int, hidden: int, nonzeros: int | None,
              leaky: bool, threads: int | None, itemsize: int) -> tuple[Plan, bool]:
    """The plan of a prepared layer's plain call of B sequences of T steps
    (batch first, every sequence whole), as :func:`forward` makes it, and
    whether the call runs in windows. ``nonzeros``: a sparse w_hh's, None
    for a dense one."""
    per_step = input_size * hidden + (hidden * hidden if nonzeros is None else nonzeros)
    rows = batch * steps
    plan = choose(batch=batch, hidden=hidden, input_size=input_size, rows=rows,
                  recurrent=hidden * hidden if nonzeros is None else nonzeros,
                  dense=nonzeros is None, plain=not leaky,
                  limit=_THREADS if threads is None else threads, cores=_CORES,
                  fused=TARGET.fma, itemsize=itemsize, kept=True)
    return plan, rows * per_step >= WINDOWS_MIN_FMAS


class DirectCall(NamedTuple):
    """For a prepared layer's plain call of x of one shape (B, T, I) (batch
    first, every sequence whole, no output given) planned on one thread
    without windows (see :func:`call_plan`): the compiled call and its
    arguments other than the call's arrays, so that ``kernel(x, packed,
    sparse, cell, h0, output, h_n, chunk)`` (h0 an array: h_n's zeros for
    none) computes what :func:`forward` would (the kernel:
    :func:`.kernels.driver.direct_range`). A stream of short chunks calls
    the kernel with no Python in between: fastrnn.Layer's plain call makes
    that call itself (calling this tuple, a Python frame more, cost a
    100-step chunk at B = 1, I = 16, float32 H = 64 0.25 us of its 20)."""

    kernel: Any
    packed: np.ndarray
    sparse: Any
    cell: Any
    chunk: int

    def __call__(self, x: np.ndarray, h0: np.ndarray, output: np.ndarray,
                 h_n: np.ndarray) -> None:
        kernel, packed, sparse, cell, chunk = self
        if kernel(x, packed, sparse, cell, h0, output, h_n, chunk) is False:
            raise RuntimeError(f"fastrnn: a direct call of {x.shape} declined (its scratch "
                               "was checked to fit its stack)")


def direct_call(prepared: Prepared, batch: int, steps: int, input_size: int, hidden: int,
                relu: bool, leaky: bool, like: np.ndarray) -> DirectCall:
    """The :class:`DirectCall` of a prepared layer's plain call of ``batch``
    sequences of ``steps`` steps, arrays of ``like``'s dtype."""
    return _direct(prepared.packed, prepared.sparse, elman(relu, leaky), batch, steps,
                   input_size, hidden, hidden, like)


def _direct(packed: np.ndarray, sparse: Any, cell: Any, batch: int, steps: int,
            input_size: int, units: int, state: int, like: np.ndarray) -> DirectCall:
    # A DirectCall of a packed layer of `units` product columns (H, or G H
    # for a gated cell) and a state of `state` columns.
    chunk = chunk_steps(batch, units)
    # The compiled variant's own entry point (compiled, or loaded from the
    # cache, for the types of these empty stand-ins, which are the caller's
    # arrays' types): the types are known (checked by the caller), so
    # Numba's dispatch (their types looked up, a variant chosen: about 1 us)
    # is skipped.
    # Scratch that fits the stack is taken there (direct_stack: no
    # allocation, no reference counts); else from the heap (direct_range).
    sequences = _EMPTY[like.dtype.char][3]
    h = np.empty((0, 0), like.dtype)
    lanes = VECTOR_BYTES // like.itemsize
    scratch = direct_stack_bytes(batch, steps, input_size, packed.shape[1],
                                 (state + lanes) // lanes * lanes, chunk, sparse, like.itemsize)
    call = direct_stack_call if scratch <= STACK_BYTES else direct_range_call
    kernel = call.compile_for((sequences, packed, sparse, cell, h, sequences, h, chunk))
    return DirectCall(kernel, packed, sparse, cell, chunk)


def direct_small(w_ih: np.ndarray, w_hh: np.ndarray, bias: np.ndarray, relu: bool) -> tuple:
    """For a prepared layer's plain call on the small path (its dense
    weights and fused bias), the fields of a :class:`DirectCall`:
    ``(kernel, packed, None, relu, None)``, ``kernel(x, packed, h0,
    output, h_n, relu)`` computing what :func:`forward` would (h0 an
    array), or returning False when its buffer would not fit its stack (a
    long input row: see :func:`.kernels.small.direct_small`)."""
    packed = pack_small(w_ih, w_hh, bias)
    sequences = _EMPTY[bias.dtype.char][3]
    h = np.empty((0, 0), bias.dtype)
    kernel = direct_small_call.compile_for((sequences, packed, h, sequences, h, relu))
    return kernel, packed, None, relu, None


def _sample_steps(batch: int, lens: np.ndarray | None) -> Any:
    """``sample_steps(first, last)`` for fastrnn._plan.Windows: the
    sample-steps of steps first..last-1 of a batch (lens: the lengths,
    longest first; None: every sample runs every step)."""
    if lens is None:
        def sample_steps(first: int, last: int) -> int:
            return batch * (last - first)
    else:
        def sample_steps(first: int, last: int) -> int:
            return int(np.clip(lens - first, 0, last - first).sum())
    return sample_steps


def _release(split: Any, kept: bool, prepared: Prepared | None) -> None:
    # The end of a call: a prepared layer's split goes back to it, threads
    # running; a split made for the call stops its threads.
    if kept and prepared is not None:
        prepared.give_back_split()
    elif split is not None:
        split.close()


_verdicts: dict[tuple, Verdict] = {}
_clock = time.perf_counter  # (tests replace it)


def _judged_call(key: tuple, run_split: Any, run_one: Any, h0: np.ndarray | None,
                 steps: int, fmas: int, gain: float) -> None:
    """A whole call run on its split's threads or on one thread as the
    verdict of ``key`` says (:func:`fastrnn._plan.call_way`), then timed
    into it (:func:`fastrnn._plan.judge_call`)."""
    judged = _verdict(key)
    threads_on = call_way(judged, _clock)
    start = _clock()
    (run_split if threads_on else run_one)(h0, 0, steps)
    judge_call(judged, threads_on, fmas, _clock() - start, _clock, gain)


def _verdict(key: tuple) -> Verdict:
    """The :class:`fastrnn._plan.Verdict` of one shape of call, kept for
    later calls (a stream of chunks; the last few dozen shapes)."""
    verdict = _verdicts.get(key)
    if verdict is None:
        if len(_verdicts) >= 64:
            _verdicts.clear()
        verdict = _verdicts[key] = Verdict()
    return verdict


# The batch split's shares of a batch without lengths, by (B, parts): their
# bounds (read by the kernels, never written) and whether they are whole
# blocks of 4 samples.
_SHARES: dict[tuple[int, int], tuple[np.ndarray, bool]] = {}


def _batch_split(x: np.ndarray, packed: np.ndarray, sparse: Any, cell: Any,
                 out: np.ndarray | None, col: int, h_n: np.ndarray, batch_first: bool,
                 order: np.ndarray | None, lens: np.ndarray | None, reverse: bool, parts: int,
                 chunk: int) -> tuple[Any, bool]:
    """The batch split's window runner, and whether its shares are whole
    blocks of 4 samples of the batch in order (no lengths: then the
    one-thread path runs them with the same bits). Samples are
    independent, so each thread runs every step of the window for shares of the batch (the
    kernels release the GIL), with no per-step hand-off, all reading one
    packed copy of the weights. With lengths, share p is every parts-th
    sequence of the sorted order, so that each gets a fair share of long
    and short ones. The shares are fixed by the call (a sample's sums are
    the same whichever thread runs it): ``run(..., alone=True)`` runs
    them all on the caller, with the same bits."""
    batch = h_n.shape[0]
    parts = min(parts, batch)
    if order is None or lens is None:
        # Share k: samples bounds[k]..bounds[k + 1] of the batch (made once
        # a batch and parts: this Python runs after the last call's kernels
        # have emptied the caches, where it took 88 us a call, 20 warm).
        shares = _SHARES.get((batch, parts))
        if shares is None:
            if len(_SHARES) >= 256:  # (a program of many batch sizes keeps the last ones)
                _SHARES.clear()
            ends = [batch * p // parts for p in range(parts + 1)]
            shares = _SHARES[batch, parts] = (
                np.array(ends, dtype=np.int64),
                all((ends[p + 1] - ends[p]) % 4 == 0 for p in range(parts)))
        bounds, whole_blocks = shares
    else:
        # Share k: positions bounds[k]..bounds[k + 1] of order and lens,
        # rearranged so that each share's sequences are contiguous.
        order = np.concatenate([order[p::parts] for p in range(parts)])
        lens = np.concatenate([lens[p::parts] for p in range(parts)])
        sizes = [(batch - p + parts - 1) // parts for p in range(parts)]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        whole_blocks = False

    def shares_from(h: np.ndarray | None, first: int, last: int, counts: np.ndarray,
                    claims: int, finished: int, number: int, part: int) -> None:
        # This thread's shares of the window, claimed on `counts`
        # (.kernels.driver.forward_range_shares).
        forward_range_shares_call(x, packed, sparse, cell, h, out, col, h_n, batch_first,
                                  order, lens, reverse, bounds, first, last, chunk, counts,
                                  claims, finished, number, part)

    def run(h: np.ndarray | None, first: int, last: int, alone: bool = False) -> None:
        team = _batch_team(parts)
        if team is not None:
            # The process's team: its helpers are handed the shares by a
            # spin, and stay awake a while for the next call (a stream's
            # chunks), where a pool's workers are woken (fastrnn._team).
            # 100-step chunks of a float32 (32, 10 000, 16, 64) stream took
            # 1.29-1.48x the time of one call on the pool, 1.06-1.10x on
            # the team (2-core AMD Zen 3 VM, chunked and one call
            # alternating, 11 rounds, two runs each). Each thread claims
            # shares until none is left: a helper that the machine runs
            # late leaves its share to the caller (Team.share_out).
            def team_share(part: int, number: int) -> None:
                shares_from(h, first, last, team.counters, team.claims, team.finished, number,
                            part)

            try:
                team.share_out(team_share, 1 if alone else parts, parts)
            finally:
                team.lock.release()
            return
        # The pool (or the caller alone): the same claims, on counts of this
        # call's own (call 1: the claims count, then a slot a share).
        counts = np.zeros((parts + 1) * FLAG_STRIDE, dtype=np.int64)
        counts[0] = MAX_SHARES
        if alone:
            shares_from(h, first, last, counts, 0, FLAG_STRIDE, 1, 0)
            return
        pool = _thread_pool()
        futures: list[Any] = []
        try:
            # (Submitted inside the try: a Ctrl-C between two submits still
            # waits for the shares already given to the pool.)
            for part in range(1, parts):
                futures.append(pool.submit(shares_from, h, first, last, counts, 0, FLAG_STRIDE,
                                           1, part))
            shares_from(h, first, last, counts, 0, FLAG_STRIDE, 1, 0)
        finally:
            # Every thread's share is done before the call returns, or
            # raises (Ctrl-C while waiting): the pool is idle again, and
            # nothing writes the output after it.
            wait(futures)
        for future in futures:
            future.result()

    return run, whole_blocks
