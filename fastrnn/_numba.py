"""Numba backend: the whole forward pass in compiled code, one of four paths.

Which one, and on how many threads, is decided by :func:`fastrnn._plan.plan`
(pure Python, where the thresholds and the measurements behind them are):
one small sequence (:func:`_forward_small`, one joint product of [x_t, h] a
step, also reached from fastrnn.forward's plain call through
:func:`forward_small`), the register-blocked product on the calling thread
(:func:`_forward_range`), the same with the batch split across threads, or
the units split across threads with a barrier between steps
(fastrnn._units); compiled for a CPU without FMA, large dense states go to
the NumPy backend (``_plan.NUMPY``). A long call runs a window of steps at a
time (``_plan.Windows``): Ctrl-C between windows, and a split plan timed
against one thread on a busy machine.

Every path: samples are taken longest first, so the sequences still running
at a step are a prefix of the batch and each step works on that prefix only
(work in proportion to the sum of the lengths). The input product is hoisted
a chunk of steps at a time into a fixed-size buffer (still in cache when the
recurrence reads it back; no buffer grows with T, so return_sequences=False
runs in O(B*H + chunk) memory); nothing is allocated per step.

Both products run in our register-blocked AVX-512 kernel (fastrnn._gemm) on
weights packed in panels, never BLAS: per-step BLAS calls cost microseconds at
small sizes, OpenBLAS threads that keep spinning after a call fight ours for
the cores, and the packed kernel ran at about a core's full rate even with
the weights streamed from L3 (float32 (32, 50, 1024, 1024): 197 GFLOP/s on
two threads, against 142 for the per-step BLAS path this replaced). The
threads of the blocked path share one packed copy of the weights: two
private copies of H = 1024 float64 weights (16 MB each) overflowed L3. A
sparse w_hh (CSR) replaces the recurrent product with a gather-and-sum over
its non-zeros. Importing this module imports Numba; the NumPy backend never
does.
"""

from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from numba import from_dtype, njit, types

from ._activations import relu as _relu
from ._activations import tanh as _tanh
from ._gemm import (
    ALIGN_BYTES,
    JIT,
    KERNEL_JIT,
    FewVariants,
    aligned_zeros,
    matmul_rows,
    pack_columns,
)
from ._plan import (
    BATCH_SPLIT,
    BLOCKED,
    NUMPY,
    SMALL,
    UNITS_SPLIT,
    WINDOWS_MIN_FMAS,
    Plan,
    Verdict,
    Windows,
    available_cores,
)
from ._plan import plan as choose
from ._simd import TARGET, VECTOR_BYTES, vadd, vfma, vgather, vload, vsplat, vstore, vzero
from ._step import step_tail, step_weights

# The hoisted input product of one chunk of time steps is kept near this
# many elements, so that the recurrence reads it back from L2, not memory.
CHUNK_ELEMENTS = 32 * 1024


def chunk_steps(batch: int, hidden: int) -> int:
    """Steps per chunk of the hoisted input product, for a call of ``batch``
    samples: the same for every way a call runs (one thread, the batch or
    units split, any windows), and chunks start at multiples of it, so that
    the product's blocks of 4 rows, and so its sums (fastrnn._gemm), are the
    same whatever the threads."""
    return max(1, CHUNK_ELEMENTS // max(1, batch * (hidden + 1)))


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
def _pack_weights(w_ih, w_hh, weights):
    # weights: (I + H, width) rows (I rows for a sparse w_hh), zeroed <-
    # w_ih.T, then w_hh.T, each packed for _gemm.matmul_rows.
    hidden, input_size = w_ih.shape
    lanes = VECTOR_BYTES // weights.itemsize
    vectors = weights.shape[1] // lanes
    pack_columns(w_ih, 0, hidden, weights[:input_size].reshape(input_size * vectors, lanes))
    if w_hh is not None:
        pack_columns(w_hh, 0, hidden,
                     weights[input_size:input_size + hidden].reshape(hidden * vectors, lanes))


@njit(**JIT)
def _packed_weights(w_ih, w_hh, like):
    # The packed weights of _pack_weights in a buffer of their own, for
    # threads that share them (one copy in L3, not one per thread).
    hidden, input_size = w_ih.shape
    lanes = VECTOR_BYTES // like.itemsize
    used = hidden if w_hh is not None else hidden + 1  # as in _forward_range
    width = (used + lanes - 1) // lanes * lanes
    weights = aligned_zeros(input_size + hidden, width, like)
    _pack_weights(w_ih, w_hh, weights)
    return weights


@njit(**JIT)
def _forward_range(x, w_ih, w_hh, sparse, b_ih, b_hh, h0, out, h_n, relu, batch_first, order,
                   lens, leak, reverse, b_start, count, weights, first, last, chunk):
    # Our blocked kernel (dense w_hh) or the sparse product (w_hh None,
    # sparse = _sell_pack's tuple) for `count` samples, steps first..last-1
    # (a window of the call: h0 holds the states after step first - 1, and
    # h_n gets them after step last - 1): samples order[0..count)
    # (sorted by length, longest first; lens their lengths) or, with order
    # None, b_start.. (every sequence T steps long). x: (B, T, I) if
    # batch_first else (T, B, I), any layout; out: x's layout with H
    # features, or None. weights: _packed_weights(w_ih, w_hh), or None to
    # pack them here. chunk: steps per chunk of the hoisted input product
    # (chunk_steps), its chunks starting at multiples of it.
    n1, n2, input_size = x.shape
    hidden = h_n.shape[1]
    steps_total = n2 if batch_first else n1
    lanes = VECTOR_BYTES // h_n.itemsize
    # The sparse product reads column H of the state for its padding: one
    # more column, always zero.
    used = hidden if w_hh is not None else hidden + 1
    width = (used + lanes - 1) // lanes * lanes
    longest = _longest(lens, count, steps_total)
    stop = min(longest, last)
    held = max(1, min(longest, chunk))  # steps the input product's buffer holds

    # One aligned, zeroed workspace holds every buffer (one allocation: at
    # the textbook size each allocation is a visible share of the call), rows
    # of `width` values, so every buffer starts 64-byte aligned:
    #   state   count rows  h of the samples, zero-padded: the left operand of
    #                       the recurrent product
    #   acc     count rows  the recurrent product
    #   pre     chunk*count the input product (+ biases) of a chunk of steps,
    #                       step-major, only the running samples' rows
    #   sorted  count rows  the sparse product in its row order (sparse only)
    #   bias, leak, keep    1 row each
    #   weights I + H rows  w_ih.T and w_hh.T packed (_pack_weights), unless
    #                       given
    pre_rows = held * count
    sorted_rows = count if w_hh is None else 0
    weight_rows = input_size + (hidden if w_hh is not None else 0)
    tail = 2 * count + pre_rows + sorted_rows
    work = aligned_zeros(tail + 3 + (weight_rows if weights is None else 0), width, h_n)
    state = work[:count]
    _load_state(state, h0, order, b_start)
    if first < stop:
        acc = work[count:2 * count]
        pre = work[2 * count:2 * count + pre_rows]
        sorted_acc = work[2 * count + pre_rows:tail]
        bias, leak_row, keep = work[tail], work[tail + 1], work[tail + 2]
        _prepare_rows(bias, leak_row, keep, b_ih, b_hh, leak)
        if weights is None:
            packed = work[tail + 3:]
            _pack_weights(w_ih, w_hh, packed)
        else:
            packed = weights
        vectors = packed.shape[1] // lanes
        w_ih_p = packed[:input_size].reshape(input_size * vectors, lanes)
        w_hh_p = packed[input_size:weight_rows].reshape((weight_rows - input_size) * vectors,
                                                        lanes)
        gathered = np.empty((pre_rows, input_size), dtype=h_n.dtype)
        row_start = np.empty(held, dtype=np.int64)
        active = count
        s0 = first
        while s0 < stop:
            s1 = min(stop, (s0 // chunk + 1) * chunk)
            rows = _gather(x, gathered, row_start, s0, s1, active, order, lens, b_start,
                           steps_total, reverse, batch_first)
            matmul_rows(gathered, rows, input_size, w_ih_p, pre)
            _add_bias(pre, rows, bias, hidden)
            for s in range(s0, s1):
                active = _running(lens, active, s)
                if sparse is not None:
                    _sparse_product(state, active, sparse, sorted_acc, acc)
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
            s0 = s1
    _finish(out, h_n, state, state, order, lens, b_start, steps_total, batch_first, last)


# Called from Python through a few variants (see fastrnn._gemm.FewVariants):
# x, w_ih, w_hh, b_ih, b_hh, h0, order, lens and leak are read, out and h_n
# written.
_forward_range_call = FewVariants(_forward_range, inputs=(0, 1, 2, 4, 5, 6, 11, 12, 13),
                                  outputs=(7, 8))


@njit(**JIT)
def _forward_small(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first):
    # The whole batch, dense w_hh, no lengths, leak or reverse, for the
    # smallest problems (see SMALL_MAX_HIDDEN), where _forward_range's
    # set-up (a chunked input product, a gather, the packing of two
    # matrices) and its per-step overhead cost more than the arithmetic: one
    # sample at a time, each step one product of the joint row [x_t, h] with
    # [w_ih | w_hh].T, packed as one matrix of I + H rows.
    hidden, input_size = w_ih.shape
    lanes = VECTOR_BYTES // h_n.itemsize
    vectors = (hidden + lanes - 1) // lanes
    inner = input_size + hidden
    joint = (inner + lanes - 1) // lanes
    # Rows of `lanes` values: acc (the product), bias, the joint row, and
    # the packed weights (`inner` rows a vector of units). Allocated here,
    # viewed and zeroed in _run_small, which has no reference counts to
    # update for each view (np.zeros and the views here: 0.1 us more).
    rows = 2 * vectors + joint + vectors * inner
    # (padded by a cache line, for the alignment _run_small makes)
    buffer = np.empty(rows * lanes + ALIGN_BYTES // h_n.itemsize, dtype=h_n.dtype)
    _run_small(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, buffer, rows,
               vectors, joint)


@njit(**KERNEL_JIT)
def _run_small(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, buffer, rows,
               vectors, joint):
    n1, n2, input_size = x.shape
    batch, steps = (n1, n2) if batch_first else (n2, n1)
    hidden = w_ih.shape[0]
    lanes = VECTOR_BYTES // h_n.itemsize
    inner = input_size + hidden
    offset = ((ALIGN_BYTES - buffer.ctypes.data % ALIGN_BYTES) % ALIGN_BYTES) // h_n.itemsize
    work = buffer[offset:offset + rows * lanes].reshape(rows, lanes)
    # Zeros in the padding lanes too: garbage there could be subnormal,
    # which slows the multiply-adds on some CPUs.
    for r in range(rows):
        vstore(work, r, 0, vzero(work))
    acc = work[:vectors].reshape(1, vectors * lanes)
    bias = work[vectors:2 * vectors].reshape(1, vectors * lanes)
    z = work[2 * vectors:2 * vectors + joint].reshape(1, joint * lanes)
    packed = work[2 * vectors + joint:]
    for v in range(vectors):
        # Row v * inner + k: units v * lanes.. of column k of [w_ih | w_hh].
        first = v * lanes
        count = min(lanes, hidden - first)
        for k in range(input_size):
            for lane in range(count):
                packed[v * inner + k, lane] = w_ih[first + lane, k]
        for k in range(hidden):
            for lane in range(count):
                packed[v * inner + input_size + k, lane] = w_hh[first + lane, k]
    _add_biases(bias[0], b_ih, b_hh)
    for b in range(batch):
        for j in range(hidden):
            z[0, input_size + j] = 0 if h0 is None else h0[b, j]
        for t in range(steps):
            for k in range(input_size):
                z[0, k] = x[b, t, k] if batch_first else x[t, b, k]
            for v in range(vectors):
                # Two chains of multiply-adds: one sample is bound by their
                # latency.
                base = v * inner
                a0 = vload(bias, 0, v * lanes)
                a1 = vzero(work)
                k = 0
                while k + 2 <= inner:
                    a0 = vfma(vload(packed, base + k, 0), vsplat(z[0, k]), a0)
                    a1 = vfma(vload(packed, base + k + 1, 0), vsplat(z[0, k + 1]), a1)
                    k += 2
                if k < inner:
                    a0 = vfma(vload(packed, base + k, 0), vsplat(z[0, k]), a0)
                vstore(acc, 0, v * lanes, vadd(a0, a1))
            if relu:
                for j in range(hidden):
                    z[0, input_size + j] = _relu(acc[0, j])
            else:
                for j in range(hidden):
                    z[0, input_size + j] = _tanh(acc[0, j])
            if out is not None:
                for j in range(hidden):
                    if batch_first:
                        out[b, t, j] = z[0, input_size + j]
                    else:
                        out[t, b, j] = z[0, input_size + j]
        for j in range(hidden):
            h_n[b, j] = z[0, input_size + j]


@njit(**JIT)
def forward_small(x, w_ih, w_hh, b_ih, b_hh, out, h_n, relu):
    """The plain call (:func:`fastrnn._api.forward`'s fast path) of one small
    sequence (B = 1, H <= SMALL_MAX_HIDDEN; any B computes correctly): x
    (B, T, I) batch first, no h0, every other option at its default. Fewer
    arguments than the backend contract, for a shorter dispatch (Numba's
    costs some 50 ns an argument). The caller has checked the types and
    dimensions only: the shapes are compared here, in compiled code, and a
    mismatch returns False before anything is read."""
    hidden, input_size = w_ih.shape
    if (hidden < 1 or x.shape[2] != input_size or w_hh.shape[0] != hidden
            or w_hh.shape[1] != hidden or (b_ih is not None and b_ih.shape[0] != hidden)
            or (b_hh is not None and b_hh.shape[0] != hidden)):
        return False
    _forward_small(x, w_ih, w_hh, b_ih, b_hh, None, out, h_n, relu, True)
    return True


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
def _finish(out, h_n, state_a, state_b, order, lens, b_start, steps_total, batch_first, last):
    # Each sample's state after the window's last step (last - 1, or its
    # own last) into h_n, and, after the call's last window, zeros in the
    # output past its length (as PyTorch's padded output). A double-buffered
    # state (fastrnn._units) holds it in the buffer its last step wrote:
    # state_a after an even number of steps; a single one is passed as both.
    hidden = h_n.shape[1]
    for i in range(state_a.shape[0]):
        b = b_start + i if order is None else order[i]
        steps = min(last, steps_total if lens is None else lens[i])
        final = state_a if steps % 2 == 0 else state_b
        for j in range(hidden):
            h_n[b, j] = final[i, j]
        if out is not None and last >= steps_total:
            for t in range(steps, steps_total):
                for j in range(hidden):
                    if batch_first:
                        out[b, t, j] = 0
                    else:
                        out[t, b, j] = 0


@njit(**KERNEL_JIT)
def _time(s, i, lens, steps_total, reverse):
    # The time index of step s of sample i: reversed, each sequence starts
    # at its own last valid step.
    if not reverse:
        return s
    if lens is None:
        return steps_total - 1 - s
    return lens[i] - 1 - s


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
    lanes = VECTOR_BYTES // data.itemsize
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


def _step(x, h, out, weights, sparse, rows, relu):
    # One time step of a prepared layer (fastrnn.Layer.step): out = the
    # state after x (B, I) from h (B, H). weights: _packed_weights (w_ih.T
    # then, dense, w_hh.T); sparse: _sell_pack's tuple for a sparse w_hh, or
    # None; rows: (1, H) the fused bias, or (3, H) bias, leak and 1 - leak.
    # (w_ih.T packed in the first I rows, the dense w_hh.T in the next H.)
    # Every input is read before `out` is written, so out may be h itself
    # (or overlap anything). The shapes are compared here, in compiled code
    # (a call's Python checks are a visible share of one step's time); a
    # mismatch returns False before anything is written.
    batch, input_size = x.shape
    hidden = rows.shape[1]
    if (weights.shape[0] != input_size + hidden or h.shape[0] != batch
            or h.shape[1] != hidden or out.shape[0] != batch or out.shape[1] != hidden):
        return False
    lanes = VECTOR_BYTES // weights.itemsize
    width = weights.shape[1]
    vectors = width // lanes
    # Unaligned and not zeroed: the products write every column of their
    # rows (vstore takes any alignment), and at one small step the zeroed,
    # aligned allocation was a third of the kernel's time.
    work = np.empty((2 * batch if sparse is None else 4 * batch, width), dtype=weights.dtype)
    acc = work[:batch]
    recurrent = work[batch:2 * batch]
    matmul_rows(x, batch, input_size, weights[:input_size].reshape(input_size * vectors, lanes),
                acc)
    if sparse is None:
        matmul_rows(h, batch, hidden, weights[input_size:].reshape(hidden * vectors, lanes),
                    recurrent)
    else:
        # The gathers read a zero-padded copy of the state (column H is
        # their padding column).
        state = work[2 * batch:3 * batch]
        for i in range(batch):
            for j in range(hidden):
                state[i, j] = h[i, j]
            for j in range(hidden, width):
                state[i, j] = 0
        _sparse_product(state, batch, sparse, work[3 * batch:], recurrent)
    step_tail(acc, recurrent, h, out, rows, relu)
    return True


_step_kernels: dict[tuple[np.dtype, bool], Any] = {}
_step_lock = threading.Lock()


def step_kernel(dtype: np.dtype, sparse: bool) -> Any:
    """The compiled :func:`_step` for ``dtype`` and a dense or sparse w_hh,
    with one explicit signature: x, h and out in any layout (x and h may be
    read-only), so that no new layout compiles anything (Numba converts C or
    F arrays to the 'A' layout of the signature; without a signature it
    compiles a variant per combination of layouts)."""
    key = (dtype, sparse)
    kernel = _step_kernels.get(key)
    if kernel is None:
        with _step_lock:  # compile (or load from the cache) once
            kernel = _step_kernels.get(key)
            if kernel is None:
                value = from_dtype(dtype)
                given = types.Array(value, 2, "A", readonly=True)
                matrix = types.Array(value, 2, "C")
                if sparse:
                    index = types.Array(types.int64, 1, "C")
                    pack: Any = types.Tuple((index, index, matrix,
                                             types.Array(types.int32, 1, "C")))
                else:
                    pack = types.none
                signature = types.boolean(given, given, types.Array(value, 2, "A"), matrix,
                                          pack, matrix, types.boolean)
                kernel = _step_kernels[key] = njit([signature], **JIT)(_step)
    return kernel


class Prepared:
    """A layer's weights as the kernels read them, made once for
    :class:`fastrnn.Layer`: ``weights`` (w_ih.T and a dense w_hh.T packed in
    panels), ``sparse`` (a sparse w_hh in SELL-C-sigma form, else None) and
    ``rows`` (the fused bias, and with a leak the leak and 1 - leak: the
    rows of :func:`_step`) and, for a dense w_hh, ``step`` (the weights with
    the rows appended: :func:`fastrnn._step.step_weights`)."""

    __slots__ = ("weights", "sparse", "rows", "step", "_split", "_split_lock", "__weakref__")

    def __init__(self, w_ih: np.ndarray, w_hh: Any, bias: np.ndarray,
                 leak: np.ndarray | None) -> None:
        hidden = bias.shape[0]
        dense = w_hh if isinstance(w_hh, np.ndarray) else None
        packed = _packed_weights(w_ih, dense, bias)
        self.sparse = (None if dense is not None else
                       _sell_pack(w_hh.indptr, w_hh.indices, w_hh.data, hidden, hidden))
        rows = [bias] if leak is None else [bias, leak, 1 - leak]
        self.rows = np.ascontiguousarray(np.stack(rows), dtype=bias.dtype)
        # A dense layer's step kernels read the rows after the weights, in
        # one array (fastrnn._step); the forward pass reads a view of its
        # leading rows, the same memory.
        self.step = None if dense is None else step_weights(packed, self.rows)
        self.weights = packed if self.step is None else self.step[:packed.shape[0]]
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


def _stop_kept_split(kept: list[Any]) -> None:
    if kept[0] is not None:
        kept[0].stop()
        kept[0] = None


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


def _forget_pool_after_fork() -> None:
    # A forked child has only the thread that forked: the parent's pool
    # workers do not exist there, yet the executor believes they are idle
    # and would queue the child's work for them forever. The child starts
    # a pool of its own on its first split call. The lock is replaced, not
    # released: another parent thread may have held it at the fork.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def forward(x: np.ndarray, w_ih: np.ndarray, w_hh: Any, b_ih: np.ndarray | None,
            b_hh: np.ndarray | None, h0: np.ndarray | None, out: np.ndarray | None,
            h_n: np.ndarray, relu: bool, batch_first: bool, lengths: np.ndarray | None,
            leak: np.ndarray | None, reverse: bool, threads: int | None,
            prepared: Prepared | None = None, plan: Plan | None = None) -> None:
    """Same contract as :func:`fastrnn._numpy.forward`; ``prepared``: a
    Layer's packed weights (else they are packed for this call); ``plan``:
    how to run it (else :func:`fastrnn._plan.plan` decides)."""
    # The path is chosen here, not inside compiled code, so that a first
    # call compiles only what it needs (compilation takes seconds). This
    # wrapper is part of every call's latency: keep it short.
    batch, hidden = h_n.shape
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
    if plan is None:
        plan = choose(batch=batch, hidden=hidden, input_size=x.shape[2], rows=rows,
                      recurrent=hidden * hidden if dense is not None else w_hh.nnz,
                      dense=dense is not None, plain=plain,
                      limit=_THREADS if threads is None else threads,
                      cores=_CORES, fused=TARGET.fma, itemsize=h_n.itemsize)
    path = plan.path
    if path == NUMPY:
        # BLAS's products beat the compiled ones here (_plan.NUMPY_MIN_STATE_BYTES).
        from . import _numpy

        _numpy.forward(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, lengths,
                       leak, reverse, threads)
        return
    if path == SMALL:
        # Through a call of fewer arguments (Numba's dispatch costs some 50
        # ns an argument).
        _forward_small(x, w_ih, dense, b_ih, b_hh, h0, out, h_n, relu, batch_first)
        return
    steps_total = x.shape[1] if batch_first else x.shape[0]
    longest = steps_total if lens is None else int(lens[0]) if batch else 0
    per_step = x.shape[2] * hidden + (hidden * hidden if dense is not None else w_hh.nnz)
    weights = None if prepared is None else prepared.weights
    one_sparse = None if prepared is None else prepared.sparse
    windowed = rows * per_step >= WINDOWS_MIN_FMAS and longest > 0
    chunk = chunk_steps(batch, hidden)

    def run_one(h: np.ndarray | None, first: int, last: int) -> None:
        # Steps first..last-1 of every sample on this thread.
        nonlocal weights, one_sparse
        if dense is None and one_sparse is None:
            one_sparse = _sell_pack(w_hh.indptr, w_hh.indices, w_hh.data, hidden, hidden)
        if weights is None and (windowed or path != BLOCKED):
            # Packed once for the windows (else each would pack them again).
            weights = _packed_weights(w_ih, dense, h_n)
        _forward_range_call(x, w_ih, dense, one_sparse, b_ih, b_hh, h, out, h_n, relu,
                            batch_first, order, lens, leak, reverse, 0, batch, weights, first,
                            last, chunk)

    split = None
    kept = False  # whether split is the prepared layer's, to give back
    if path == UNITS_SPLIT:
        # Imported here: most programs never take this path, so they need
        # not pay for importing it (and defining its kernels) at start-up.
        from . import _units

        def make_split() -> Any:
            return _units.Split(w_ih, w_hh, b_ih, b_hh, leak, h_n, order, lens, plan.parts)

        # A prepared layer keeps its split for calls of every sample's whole
        # length (a stream's chunks); the others make one for the call.
        if prepared is not None and order is None:
            split = prepared.take_split(plan.parts, batch, make_split)
            kept = split is not None
        if split is None:
            split = make_split()

        def run_split(h: np.ndarray | None, first: int, last: int) -> None:
            split.run(x, h, out, h_n, relu, batch_first, reverse, first, last, chunk)
    elif path == BATCH_SPLIT:
        run_split = _batch_split(x, w_ih, dense, w_hh, b_ih, b_hh, out, h_n, relu, batch_first,
                                 order, lens, leak, reverse, plan.parts, prepared, chunk)
    else:
        run_split = run_one
    if not windowed:
        try:
            run_split(h0, 0, steps_total)
        finally:
            _release(split, kept, prepared)
        return
    # A window at a time (see fastrnn._plan.Windows): Ctrl-C is answered
    # between two, and a split plan is timed against one thread.
    if lens is None:
        def sample_steps(first: int, last: int) -> int:
            return batch * (last - first)
    else:
        def sample_steps(first: int, last: int) -> int:
            return int(np.clip(lens - first, 0, last - first).sum())
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
        for first, last, threads_on in Windows(longest, sample_steps, per_step, verdict, chunk):
            # The last window also writes the zeros past every sequence's end.
            (run_split if threads_on else run_one)(h, first, steps_total if last == longest
                                                   else last)
            h = h_n
    finally:
        _release(split, kept, prepared)


def _release(split: Any, kept: bool, prepared: Prepared | None) -> None:
    # The end of a call: a prepared layer's split goes back to it, threads
    # running; a split made for the call stops its threads.
    if kept and prepared is not None:
        prepared.give_back_split()
    elif split is not None:
        split.close()


_verdicts: dict[tuple, Verdict] = {}


def _verdict(key: tuple) -> Verdict:
    """The :class:`fastrnn._plan.Verdict` of one shape of call, kept for
    later calls (a stream of chunks; the last few dozen shapes)."""
    verdict = _verdicts.get(key)
    if verdict is None:
        if len(_verdicts) >= 64:
            _verdicts.clear()
        verdict = _verdicts[key] = Verdict()
    return verdict


def _batch_split(x: np.ndarray, w_ih: np.ndarray, dense: np.ndarray | None, w_hh: Any,
                 b_ih: np.ndarray | None, b_hh: np.ndarray | None, out: np.ndarray | None,
                 h_n: np.ndarray, relu: bool, batch_first: bool, order: np.ndarray | None,
                 lens: np.ndarray | None, leak: np.ndarray | None, reverse: bool, parts: int,
                 prepared: Prepared | None, chunk: int):
    """The batch split's window runner: samples are independent, so each
    thread runs every step of the window for its share of the batch (the
    kernels release the GIL), with no per-step hand-off, all reading one
    packed copy of the weights. With lengths, thread p takes every
    parts-th sequence of the sorted order, so that each gets a fair share
    of long and short ones."""
    batch, hidden = h_n.shape
    parts = min(parts, batch)
    if prepared is not None:
        weights, sparse = prepared.weights, prepared.sparse
    else:
        weights = _packed_weights(w_ih, dense, h_n)
        sparse = (None if dense is not None else
                  _sell_pack(w_hh.indptr, w_hh.indices, w_hh.data, hidden, hidden))
    jobs: list[tuple[np.ndarray | None, np.ndarray | None, int, int]] = []
    for p in range(parts):
        if order is None or lens is None:
            start, stop = batch * p // parts, batch * (p + 1) // parts
            jobs.append((None, None, start, stop - start))
        else:
            mine = np.ascontiguousarray(order[p::parts])
            jobs.append((mine, np.ascontiguousarray(lens[p::parts]), 0, mine.shape[0]))

    def run(h: np.ndarray | None, first: int, last: int) -> None:
        pool = _thread_pool()
        futures = [
            pool.submit(_forward_range_call, x, w_ih, dense, sparse, b_ih, b_hh, h, out, h_n,
                        relu, batch_first, job_order, job_lens, leak, reverse, start, count,
                        weights, first, last, chunk)
            for job_order, job_lens, start, count in jobs[1:]
        ]
        job_order, job_lens, start, count = jobs[0]
        try:
            _forward_range_call(x, w_ih, dense, sparse, b_ih, b_hh, h, out, h_n, relu,
                                batch_first, job_order, job_lens, leak, reverse, start, count,
                                weights, first, last, chunk)
        finally:
            # Every thread's share is done before the call returns, or
            # raises (Ctrl-C while waiting): the pool is idle again, and
            # nothing writes the output after it.
            wait(futures)
        for future in futures:
            future.result()

    return run
