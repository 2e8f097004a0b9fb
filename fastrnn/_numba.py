"""Numba backend: the whole forward pass in compiled code, one of four paths.

Chosen in :func:`forward` (measured on the 2-core AVX-512 machine):

=====================  ==========================================================
path                   when
=====================  ==========================================================
units split            B = 1, dense w_hh with H >= SPLIT_MIN_HIDDEN or sparse
                       with at least SPLIT_MIN_NONZEROS non-zeros, from
                       SPLIT_MIN_FMAS multiply-adds on, more than one thread:
                       each thread computes its share of the units every
                       step, with a barrier between steps (fastrnn._units)
blocked, one thread    otherwise dense H < BLAS_MIN_HIDDEN or sparse w_hh,
                       with fewer than PARALLEL_MIN_FMAS multiply-adds, or B = 1
blocked, threads       the same with more work and B >= 2: each thread runs
                       every step for its share of the batch
BLAS                   otherwise dense w_hh with H >= BLAS_MIN_HIDDEN (256),
                       unless one thread is allowed (threads=1,
                       FASTRNN_NUM_THREADS=1)
=====================  ==========================================================

Every path: samples are taken longest first, so the sequences still running
at a step are a prefix of the batch and each step works on that prefix only
(work in proportion to the sum of the lengths). The input product is hoisted
a chunk of steps at a time into a fixed-size buffer (still in cache when the
recurrence reads it back; no buffer grows with T, so return_sequences=False
runs in O(B*H + chunk) memory); nothing is allocated per step.

Blocked: both products run in our register-blocked AVX-512 kernel
(fastrnn._gemm), not BLAS: per-step BLAS calls cost microseconds at small
sizes, and BLAS threads that keep spinning after a call would fight ours for
the cores. A sparse w_hh (CSR) replaces the recurrent product with a
gather-and-sum over its non-zeros. BLAS: SciPy's BLAS (Numba's np.dot) for
both products, on all cores; our kernel has no cache blocking for weights
that outgrow L2. Importing this module imports Numba; the NumPy backend never
does.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numba import njit

from ._activations import relu as _relu
from ._activations import tanh as _tanh
from ._gemm import ALIGN_BYTES, JIT, KERNEL_JIT, aligned_zeros, matmul_rows
from ._simd import vadd, vfma, vgather, vload, vstore, vzero

# The hoisted input product of one chunk of time steps is kept near this
# many elements, so that the recurrence reads it back from L2, not memory.
CHUNK_ELEMENTS = 32 * 1024
# The same for the BLAS path: fewer, larger calls.
BLAS_CHUNK_ELEMENTS = 1 << 20
# From this hidden size on, BLAS runs the products (see _forward_blas).
BLAS_MIN_HIDDEN = 256
# A forward is split across threads from this many multiply-adds on (about
# 100 us of work): below it, handing work to a thread costs more than it saves.
PARALLEL_MIN_FMAS = 2_000_000
# One sequence (B = 1) is split across threads by its units (fastrnn._units)
# from this many non-zeros of a sparse w_hh on: each step then ends with a
# barrier, about 0.5 us here, which broke even near 4000 non-zeros (H = 200,
# density 0.1) and gained 1.45x at 25 000 and 1.75x at 100 000 ...
SPLIT_MIN_NONZEROS = 8192
# ... or from this hidden size with a dense w_hh: each thread keeps its rows
# in its own L2. Per step, against the paths otherwise taken: 1.1-1.2x at
# H = 128, 1.7-2.2x at 256, 2.1-3.3x at 512, equal to BLAS from 1000 on (the
# rows no longer fit: both stream them from L3).
SPLIT_MIN_HIDDEN = 128
# The split's barrier yields the core with sched_yield (POSIX).
_SPLIT_AVAILABLE = hasattr(os, "sched_yield")
# ... and from this much work per call: starting the threads costs about
# 100 us.
SPLIT_MIN_FMAS = 20_000_000


@njit(**KERNEL_JIT)
def _pack_transposed(w, packed):
    # (H, K) -> packed (K, width), zero-padded beyond H: row k holds every
    # output unit's weight for input k.
    h_out, inner = w.shape
    for k in range(inner):
        for j in range(h_out):
            packed[k, j] = w[j, k]


@njit(**KERNEL_JIT)
def _add_biases(bias, b_ih, b_hh):
    # bias[:H] += b_ih + b_hh, either of which may be None.
    if b_ih is not None:
        for j in range(b_ih.shape[0]):
            bias[j] += b_ih[j]
    if b_hh is not None:
        for j in range(b_hh.shape[0]):
            bias[j] += b_hh[j]


@njit(**JIT)
def _forward_range(x, w_ih, w_hh, sparse, b_ih, b_hh, h0, out, h_n, relu, batch_first, order,
                   lens, leak, reverse, b_start, count):
    # Our blocked kernel (dense w_hh) or the sparse product (w_hh None,
    # sparse = _sell_pack's tuple) for `count` samples, all their steps: samples order[0..count)
    # (sorted by length, longest first; lens their lengths) or, with order
    # None, b_start.. (every sequence T steps long). x: (B, T, I) if
    # batch_first else (T, B, I), any layout; out: x's layout with H
    # features, or None.
    n1, n2, input_size = x.shape
    hidden = h_n.shape[1]
    steps_total = n2 if batch_first else n1
    lanes = ALIGN_BYTES // h_n.itemsize
    # The sparse product reads column H of the state for its padding: one
    # more column, always zero.
    used = hidden if w_hh is not None else hidden + 1
    width = (used + lanes - 1) // lanes * lanes
    # The hoisted input product of a chunk of steps stays near CHUNK_ELEMENTS,
    # so that the recurrence reads it back from cache and no buffer grows
    # with T.
    longest = _longest(lens, count, steps_total)
    chunk = max(1, min(longest, CHUNK_ELEMENTS // max(1, count * width)))

    # One aligned, zeroed workspace holds every buffer (one allocation: at
    # the textbook size each allocation is a visible share of the call), rows
    # of `width` values, so every buffer starts 64-byte aligned:
    #   state   count rows  h of the samples, zero-padded: the left operand of
    #                       the recurrent product
    #   acc     count rows  the recurrent product
    #   pre     chunk*count the input product (+ biases) of a chunk of steps,
    #                       step-major, only the running samples' rows
    #   w_ih_p  I rows      w_ih.T, padded;  w_hh_p  H rows  w_hh.T, padded
    #                       (dense), or the sparse product's rows in its
    #                       order, count rows (sparse)
    #   bias, leak, keep    1 row each
    pre_rows = chunk * count
    packed = input_size + (hidden if w_hh is not None else count)
    work = aligned_zeros(2 * count + pre_rows + packed + 3, width, h_n)
    state = work[:count]
    _load_state(state, h0, order, b_start)
    if longest > 0:
        acc = work[count:2 * count]
        pre = work[2 * count:2 * count + pre_rows]
        first = 2 * count + pre_rows
        w_ih_p = work[first:first + input_size]
        w_hh_p = work[first + input_size:first + packed]
        tail = first + packed
        bias, leak_row, keep = work[tail], work[tail + 1], work[tail + 2]
        _prepare_rows(bias, leak_row, keep, b_ih, b_hh, leak)
        _pack_transposed(w_ih, w_ih_p)
        if w_hh is not None:
            _pack_transposed(w_hh, w_hh_p)
        gathered = np.empty((pre_rows, input_size), dtype=h_n.dtype)
        row_start = np.empty(chunk, dtype=np.int64)
        active = count
        for s0 in range(0, longest, chunk):
            s1 = min(longest, s0 + chunk)
            rows = _gather(x, gathered, row_start, s0, s1, active, order, lens, b_start,
                           steps_total, reverse, batch_first)
            matmul_rows(gathered, rows, input_size, w_ih_p, pre)
            _add_bias(pre, rows, bias, hidden)
            for s in range(s0, s1):
                active = _running(lens, active, s)
                if sparse is not None:
                    _sparse_product(state, active, sparse, w_hh_p, acc)
                else:
                    matmul_rows(state, active, hidden, w_hh_p, acc)
                # _activate_step, written out: at H = 8 the call (some 60
                # values of arguments) was a third of the step. (Numba's
                # inline="always" inlines it, but warns on the inlined tanh.)
                base = row_start[s - s0]
                for i in range(active):
                    r = base + i
                    if relu:
                        for j in range(hidden):
                            state[i, j] = _leaky(_relu(pre[r, j] + acc[i, j]), state[i, j],
                                                 leak, leak_row, keep, j)
                    else:
                        for j in range(hidden):
                            state[i, j] = _leaky(_tanh(pre[r, j] + acc[i, j]), state[i, j],
                                                 leak, leak_row, keep, j)
                    if out is not None:
                        _store(out, state, i, b_start + i if order is None else order[i],
                               _time(s, i, lens, steps_total, reverse), hidden, batch_first)
    _finish(out, h_n, state, order, lens, b_start, steps_total, batch_first)


@njit(**JIT)
def _forward_blas(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, order, lens,
                  leak, reverse):
    # Large hidden sizes: BLAS (SciPy's, through Numba's np.dot) for the
    # hoisted input product and one product per step, on all cores; only
    # the activation is ours. Our blocked kernel has no cache blocking for
    # weights that outgrow L2. w_ih and w_hh are C-contiguous. Same
    # arguments as _forward_range, for the whole batch.
    n1, n2, input_size = x.shape
    count, hidden = h_n.shape
    steps_total = n2 if batch_first else n1
    longest = _longest(lens, count, steps_total)
    chunk = max(1, min(longest, BLAS_CHUNK_ELEMENTS // max(1, count * hidden)))
    pre_rows = chunk * count
    work = np.zeros((2 * count + pre_rows + 3, hidden), dtype=h_n.dtype)
    state = work[:count]
    _load_state(state, h0, order, 0)
    if longest > 0:
        pre = work[2 * count:2 * count + pre_rows]
        tail = 2 * count + pre_rows
        bias, leak_row, keep = work[tail], work[tail + 1], work[tail + 2]
        _prepare_rows(bias, leak_row, keep, b_ih, b_hh, leak)
        acc_flat = np.empty(count * hidden, dtype=h_n.dtype)
        gathered = np.empty((pre_rows, input_size), dtype=h_n.dtype)
        row_start = np.empty(chunk, dtype=np.int64)
        # Small float32 batches: OpenBLAS ran w_hh @ state.T (H x B) at 191
        # GFLOP/s where state @ w_hh.T ran at 135 (B=32, H=1024). Reading the
        # product transposed cost more than it saved at B=128; float64 showed
        # no gap.
        transposed = h_n.itemsize == 4 and count <= 32
        active = count
        for s0 in range(0, longest, chunk):
            s1 = min(longest, s0 + chunk)
            rows = _gather(x, gathered, row_start, s0, s1, active, order, lens, 0,
                           steps_total, reverse, batch_first)
            if input_size > 0:
                np.dot(gathered[:rows], w_ih.T, pre[:rows])
            else:
                pre[:rows] = 0
            _add_bias(pre, rows, bias, hidden)
            for s in range(s0, s1):
                active = _running(lens, active, s)
                if transposed:
                    acc_t = acc_flat[:hidden * active].reshape(hidden, active)
                    np.dot(w_hh, state[:active].T, acc_t)
                    _activate_step(pre, row_start[s - s0], acc_t.T, state, active, hidden,
                                   relu, leak, leak_row, keep, out, order, lens, 0, s,
                                   steps_total, reverse, batch_first)
                else:
                    acc = acc_flat[:active * hidden].reshape(active, hidden)
                    np.dot(state[:active], w_hh.T, acc)
                    _activate_step(pre, row_start[s - s0], acc, state, active, hidden, relu,
                                   leak, leak_row, keep, out, order, lens, 0, s, steps_total,
                                   reverse, batch_first)
    _finish(out, h_n, state, order, lens, 0, steps_total, batch_first)


@njit(**KERNEL_JIT)
def _load_state(state, h0, order, b_start):
    # The initial state of the samples, in their order (zeros without h0).
    if h0 is not None:
        for i in range(state.shape[0]):
            b = b_start + i if order is None else order[i]
            for j in range(h0.shape[1]):
                state[i, j] = h0[b, j]


@njit(**KERNEL_JIT)
def _longest(lens, count, steps_total):
    if count == 0:
        return 0
    return steps_total if lens is None else lens[0]


@njit(**KERNEL_JIT)
def _running(lens, active, s):
    # How many samples (a prefix: longest first) still run at step s.
    if lens is not None:
        while active > 0 and lens[active - 1] <= s:
            active -= 1
    return active


@njit(**KERNEL_JIT)
def _prepare_rows(bias, leak_row, keep, b_ih, b_hh, leak):
    _add_biases(bias, b_ih, b_hh)
    if leak is not None:
        for j in range(leak.shape[0]):
            leak_row[j] = leak[j]
            keep[j] = 1 - leak[j]


@njit(**KERNEL_JIT)
def _gather(x, gathered, row_start, s0, s1, active, order, lens, b_start, steps_total, reverse,
            batch_first):
    # The inputs of steps s0..s1-1 of the running samples, step-major, into
    # gathered; row_start[s - s0] is step s's first row. Returns the rows.
    input_size = x.shape[2]
    rows = 0
    running = active
    for s in range(s0, s1):
        running = _running(lens, running, s)
        row_start[s - s0] = rows
        for i in range(running):
            b = b_start + i if order is None else order[i]
            t = _time(s, i, lens, steps_total, reverse)
            if batch_first:
                for k in range(input_size):
                    gathered[rows + i, k] = x[b, t, k]
            else:
                for k in range(input_size):
                    gathered[rows + i, k] = x[t, b, k]
        rows += running
    return rows


@njit(**KERNEL_JIT)
def _add_bias(pre, rows, bias, hidden):
    for r in range(rows):
        for j in range(hidden):
            pre[r, j] += bias[j]


@njit(**KERNEL_JIT)
def _finish(out, h_n, state, order, lens, b_start, steps_total, batch_first):
    # Zero the output past each sequence's end (as PyTorch's padded output)
    # and store the final states.
    hidden = h_n.shape[1]
    for i in range(state.shape[0]):
        b = b_start + i if order is None else order[i]
        if out is not None and lens is not None:
            for t in range(lens[i], steps_total):
                for j in range(hidden):
                    if batch_first:
                        out[b, t, j] = 0
                    else:
                        out[t, b, j] = 0
        for j in range(hidden):
            h_n[b, j] = state[i, j]


@njit(**KERNEL_JIT)
def _time(s, i, lens, steps_total, reverse):
    # The time index of step s of sample i: reversed, each sequence starts
    # at its own last valid step.
    if not reverse:
        return s
    if lens is None:
        return steps_total - 1 - s
    return lens[i] - 1 - s


@njit(**KERNEL_JIT)
def _activate_step(pre, base, acc, state, active, hidden, relu, leak, leak_row, keep, out,
                   order, lens, b_start, s, steps_total, reverse, batch_first):
    # h_t = act(pre-activation + recurrent product), leaky if asked, written
    # to the state that the next step's product reads and to the output.
    # Plain 2-D indexing, no row slices: a slice costs a reference-count
    # update, which at H = 8 was most of the step.
    for i in range(active):
        r = base + i
        if relu:
            for j in range(hidden):
                state[i, j] = _leaky(_relu(pre[r, j] + acc[i, j]), state[i, j], leak, leak_row,
                                     keep, j)
        else:
            for j in range(hidden):
                state[i, j] = _leaky(_tanh(pre[r, j] + acc[i, j]), state[i, j], leak, leak_row,
                                     keep, j)
        if out is not None:
            _store(out, state, i, b_start + i if order is None else order[i],
                   _time(s, i, lens, steps_total, reverse), hidden, batch_first)


@njit(**dict(KERNEL_JIT, inline="always"))
def _store(out, state, i, b, t, hidden, batch_first):
    # Sample b's state after its time step t, into the output.
    if batch_first:
        for j in range(hidden):
            out[b, t, j] = state[i, j]
    else:
        for j in range(hidden):
            out[t, b, j] = state[i, j]


@njit(**dict(KERNEL_JIT, inline="always"))
def _leaky(value, previous, leak, leak_row, keep, j):
    if leak is None:
        return value
    return keep[j] * previous + leak_row[j] * value


@njit(**JIT)
def _sell_pack(indptr, indices, data, hidden, zero_column):
    # A CSR matrix in SELL-C-sigma form, for the vector gathers of
    # _sparse_product: rows sorted by their number of non-zeros (most first),
    # in slices of `lanes` rows; row q of slice s's block of `values` holds
    # the q-th non-zero of each of the slice's rows side by side, `columns`
    # (flat, int32) their column numbers. Shorter rows are padded with zeros
    # at `zero_column`, a state column that is always zero (0 * inf would be
    # NaN). Returns (slice_start, order, values, columns): slice s is rows
    # slice_start[s]..slice_start[s+1] of values; order[r] is the matrix row
    # at sorted position r.
    lanes = ALIGN_BYTES // data.itemsize
    counts = indptr[1:] - indptr[:-1]
    order = np.argsort(-counts, kind="mergesort")
    slices = (hidden + lanes - 1) // lanes
    slice_start = np.zeros(slices + 1, dtype=np.int64)
    for s in range(slices):
        slice_start[s + 1] = slice_start[s] + counts[order[s * lanes]]
    total = slice_start[slices]
    values = aligned_zeros(total, lanes, data)
    columns = np.full(total * lanes, zero_column, dtype=np.int32)
    for r in range(hidden):
        row = order[r]
        s = r // lanes
        lane = r - s * lanes
        for q in range(counts[row]):
            values[slice_start[s] + q, lane] = data[indptr[row] + q]
            columns[(slice_start[s] + q) * lanes + lane] = indices[indptr[row] + q]
    return slice_start, order, values, columns


@njit(**KERNEL_JIT)
def sell_product(state, i, sparse, sorted_acc, k):
    # sorted_acc[k] = w_hh @ state[i] over the non-zeros only, in the packed
    # row order (row r of the result is matrix row order[r]): per slice of
    # rows, a vector of lanes accumulates one gathered state value per row
    # and non-zero (two accumulators: two chains of gathers in flight).
    slice_start, order, values, columns = sparse
    lanes = values.shape[1]
    for s in range(slice_start.shape[0] - 1):
        a = vzero(sorted_acc)
        b = vzero(sorted_acc)
        q = slice_start[s]
        end = slice_start[s + 1]
        while q + 1 < end:
            a = vfma(vload(values, q, 0), vgather(state, i, columns, q * lanes), a)
            b = vfma(vload(values, q + 1, 0), vgather(state, i, columns, (q + 1) * lanes), b)
            q += 2
        if q < end:
            a = vfma(vload(values, q, 0), vgather(state, i, columns, q * lanes), a)
        vstore(sorted_acc, k, s * lanes, vadd(a, b))


@njit(**KERNEL_JIT)
def _sparse_product(state, active, sparse, sorted_acc, acc):
    # acc[i, :H] = w_hh @ state[i] for the running samples, over the
    # non-zeros only, put back in row order.
    order = sparse[1]
    for i in range(active):
        sell_product(state, i, sparse, sorted_acc, i)
        for r in range(order.shape[0]):
            acc[i, order[r]] = sorted_acc[i, r]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _thread_count(setting: str | None) -> int:
    """FASTRNN_NUM_THREADS caps the threads one forward call uses (default:
    the cores this process may run on)."""
    if not setting:
        return _cpu_count()
    try:
        count = int(setting)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"FASTRNN_NUM_THREADS must be a whole number of threads >= 1, got {setting!r}"
        )
    return count


_THREADS = _thread_count(os.environ.get("FASTRNN_NUM_THREADS"))
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


def forward(x: np.ndarray, w_ih: np.ndarray, w_hh: Any, b_ih: np.ndarray | None,
            b_hh: np.ndarray | None, h0: np.ndarray | None, out: np.ndarray | None,
            h_n: np.ndarray, relu: bool, batch_first: bool, lengths: np.ndarray | None,
            leak: np.ndarray | None, reverse: bool, threads: int | None) -> None:
    """Same contract as :func:`fastrnn._numpy.forward`."""
    # The path is chosen here, not inside compiled code, so that a first
    # call compiles only what it needs (compilation takes seconds). This
    # wrapper is part of every call's latency: keep it short.
    batch, hidden = h_n.shape
    limit = _THREADS if threads is None else threads
    # w_hh: an ndarray, or a canonical CSR matrix (see _validate.as_sparse_csr).
    dense = w_hh if type(w_hh) is np.ndarray else None
    if dense is not None:
        recurrent = hidden * hidden  # multiply-adds per sample and step
        big = hidden >= SPLIT_MIN_HIDDEN
    else:
        recurrent = w_hh.nnz
        big = recurrent >= SPLIT_MIN_NONZEROS
    if batch == 1 and big and limit > 1 and _SPLIT_AVAILABLE:
        # Imported here: most programs never take this path, so they need
        # not pay for importing it (and defining its kernels) at start-up.
        from . import _units

        parts = min(limit, _cpu_count())
        steps = x.shape[1] if batch_first else x.shape[0]
        steps = steps if lengths is None else int(lengths[0])
        if parts > 1 and steps * (x.shape[2] * hidden + recurrent) >= SPLIT_MIN_FMAS:
            _units.forward(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, lengths,
                           leak, reverse, parts)
            return
    sparse = None
    if dense is None:
        sparse = _sell_pack(w_hh.indptr, w_hh.indices, w_hh.data, hidden, hidden)
    if lengths is None:
        order = lens = None
        rows = x.shape[0] * x.shape[1]
    else:
        # Longest first: the sequences still running at a step are a prefix.
        order = np.argsort(-lengths, kind="stable")
        lens = lengths[order]
        rows = int(lens.sum())
    # BLAS runs on threads of its own; with one thread allowed, our kernel
    # runs on the caller's thread instead.
    if dense is not None and hidden >= BLAS_MIN_HIDDEN and limit > 1:
        _forward_blas(x, np.ascontiguousarray(w_ih), np.ascontiguousarray(dense), b_ih, b_hh,
                      h0, out, h_n, relu, batch_first, order, lens, leak, reverse)
        return
    if batch < 2 or limit < 2 or rows * (x.shape[2] * hidden + recurrent) < PARALLEL_MIN_FMAS:
        _forward_range(x, w_ih, dense, sparse, b_ih, b_hh, h0, out, h_n, relu, batch_first,
                       order, lens, leak, reverse, 0, batch)
        return
    # Samples are independent: each thread runs every step for its share of
    # the batch (the kernels release the GIL), with no per-step hand-off.
    # With lengths, thread p takes every parts-th sequence of the sorted
    # order, so that each gets a fair share of long and short ones.
    parts = min(limit, batch)
    jobs: list[tuple[np.ndarray | None, np.ndarray | None, int, int]] = []
    for p in range(parts):
        if order is None or lens is None:
            start, stop = batch * p // parts, batch * (p + 1) // parts
            jobs.append((None, None, start, stop - start))
        else:
            mine = np.ascontiguousarray(order[p::parts])
            jobs.append((mine, np.ascontiguousarray(lens[p::parts]), 0, mine.shape[0]))
    pool = _thread_pool()
    futures = [
        pool.submit(_forward_range, x, w_ih, dense, sparse, b_ih, b_hh, h0, out, h_n, relu,
                    batch_first, job_order, job_lens, leak, reverse, start, count)
        for job_order, job_lens, start, count in jobs[1:]
    ]
    job_order, job_lens, start, count = jobs[0]
    _forward_range(x, w_ih, dense, sparse, b_ih, b_hh, h0, out, h_n, relu, batch_first,
                   job_order, job_lens, leak, reverse, start, count)
    for future in futures:
        future.result()
