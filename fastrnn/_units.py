"""One sequence on several threads: a sparse w_hh's units split between them.

A single sequence (B = 1) cannot be split over its batch, nor over time; its
hidden units can. With a sparse w_hh, thread ``p`` of ``parts`` owns units
``cuts[p]..cuts[p+1]``, a contiguous run with about the same number of
non-zeros as the others', its rows packed for the gathers as in
``_numba._sell_pack``. Every step it computes its units' new state from the
whole previous state, then publishes the step; before the next step it waits
for every thread (``_sync.wait_all``), which costs well under a microsecond
against tens of microseconds of work per step at H = 1000, density 0.1.

The state is double-buffered in ``states`` (2 rows): step ``s`` reads row
``s % 2`` and writes row ``(s + 1) % 2``, so one barrier per step suffices (a
thread overwrites a row only after every thread has finished reading it).
Column H of each row is the gathers' padding column, always zero. The cuts
are multiples of a cache line, so no two threads ever write one line of the
state or the output: when the threads' units were interleaved (the packed
order of the whole matrix), writes to shared lines cost a third of the
speed-up.

The threads are started per call, not taken from a pool: every part must run
at once, and a pool shared with concurrent callers could hold back some
parts of a call while the others wait for them. The path is taken only for
calls long enough (``_numba.SPLIT_MIN_FMAS``) that starting a thread is a
negligible cost.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from numba import njit

from ._activations import relu as _relu
from ._activations import tanh as _tanh
from ._gemm import ALIGN_BYTES, JIT, aligned_zeros, matmul_rows
from ._simd import vadd, vfma, vgather, vload, vstore, vzero
from ._sync import FLAG_STRIDE, store_release, wait_all

# The barrier yields the core with sched_yield (POSIX); elsewhere this path
# is not taken.
AVAILABLE = hasattr(os, "sched_yield")
# The hoisted input product of a chunk of steps: about this many elements,
# so that it is read back from cache.
CHUNK_ELEMENTS = 32 * 1024


@njit(**JIT)
def _forward_part(x, w_ih, b_ih, b_hh, leak, u0, u1, sparse, states, out, relu, batch_first,
                  steps, reverse, part, parts, flags):
    # Steps 0..steps-1 of sample 0 of x ((1, T, I) if batch_first else
    # (T, 1, I)) for units u0..u1-1, whose rows of w_hh are `sparse`
    # (_sell_pack of those rows). Returns False if another part aborted.
    slice_start, order, values, columns = sparse
    lanes = values.shape[1]
    input_size = x.shape[2]
    mine = u1 - u0
    width = max(lanes, (mine + lanes - 1) // lanes * lanes)
    chunk = max(1, min(steps, CHUNK_ELEMENTS // width))
    # pre: chunk rows (input product + biases); w_ih_p: I rows (w_ih.T for
    # these units); sorted_acc, acc, bias, leak_row, keep: 1 row each.
    work = aligned_zeros(chunk + input_size + 5, width, states)
    pre = work[:chunk]
    w_ih_p = work[chunk:chunk + input_size]
    tail = chunk + input_size
    sorted_acc = work[tail:tail + 1]
    acc, bias, leak_row, keep = work[tail + 1], work[tail + 2], work[tail + 3], work[tail + 4]
    for j in range(mine):
        for k in range(input_size):
            w_ih_p[k, j] = w_ih[u0 + j, k]
        if b_ih is not None:
            bias[j] += b_ih[u0 + j]
        if b_hh is not None:
            bias[j] += b_hh[u0 + j]
        if leak is not None:
            leak_row[j] = leak[u0 + j]
            keep[j] = 1 - leak[u0 + j]
    gathered = np.empty((chunk, input_size), dtype=states.dtype)
    for s0 in range(0, steps, chunk):
        s1 = min(steps, s0 + chunk)
        for s in range(s0, s1):
            t = steps - 1 - s if reverse else s
            for k in range(input_size):
                gathered[s - s0, k] = x[0, t, k] if batch_first else x[t, 0, k]
        matmul_rows(gathered, s1 - s0, input_size, w_ih_p, pre)
        for c in range(s1 - s0):
            for j in range(mine):
                pre[c, j] += bias[j]
        for s in range(s0, s1):
            if not wait_all(flags, parts, s):
                return False
            cur = s % 2
            nxt = 1 - cur
            for sl in range(slice_start.shape[0] - 1):
                a = vzero(acc)
                b = vzero(acc)
                q = slice_start[sl]
                end = slice_start[sl + 1]
                while q + 1 < end:
                    a = vfma(vload(values, q, 0), vgather(states, cur, columns, q * lanes), a)
                    b = vfma(vload(values, q + 1, 0),
                             vgather(states, cur, columns, (q + 1) * lanes), b)
                    q += 2
                if q < end:
                    a = vfma(vload(values, q, 0), vgather(states, cur, columns, q * lanes), a)
                vstore(sorted_acc, 0, sl * lanes, vadd(a, b))
            for r in range(mine):
                acc[order[r]] = sorted_acc[0, r]
            c = s - s0
            if relu:
                for j in range(mine):
                    states[nxt, u0 + j] = _relu(pre[c, j] + acc[j])
            else:
                for j in range(mine):
                    states[nxt, u0 + j] = _tanh(pre[c, j] + acc[j])
            if leak is not None:
                for j in range(mine):
                    states[nxt, u0 + j] = (keep[j] * states[cur, u0 + j]
                                           + leak_row[j] * states[nxt, u0 + j])
            if out is not None:
                t = steps - 1 - s if reverse else s
                for j in range(mine):
                    if batch_first:
                        out[0, t, u0 + j] = states[nxt, u0 + j]
                    else:
                        out[t, 0, u0 + j] = states[nxt, u0 + j]
            store_release(flags, part * FLAG_STRIDE, s + 1)
    return True


def split_units(indptr: np.ndarray, hidden: int, lanes: int, parts: int) -> list[int]:
    """Unit boundaries 0 = u_0 <= ... <= u_parts = H, multiples of ``lanes``
    (so that no two threads write one cache line of the state or output),
    with about equal non-zeros between them."""
    total = int(indptr[-1])
    cuts = [0]
    for p in range(1, parts):
        cut = int(np.searchsorted(indptr, total * p / parts))
        cut = min(hidden, (cut + lanes // 2) // lanes * lanes)
        cuts.append(max(cut, cuts[-1]))
    cuts.append(hidden)
    return cuts


def forward(x: np.ndarray, w_ih: np.ndarray, w_hh: Any, b_ih: np.ndarray | None,
            b_hh: np.ndarray | None, h0: np.ndarray | None, out: np.ndarray | None,
            h_n: np.ndarray, relu: bool, batch_first: bool, lengths: np.ndarray | None,
            leak: np.ndarray | None, reverse: bool, parts: int) -> None:
    """One sequence (batch of 1), w_hh a canonical CSR matrix, on ``parts``
    threads (the caller's and parts - 1 started here). Same contract as
    ``_numba.forward`` otherwise."""
    from ._numba import _sell_pack

    hidden = h_n.shape[1]
    steps_total = x.shape[1] if batch_first else x.shape[0]
    steps = steps_total if lengths is None else int(lengths[0])
    lanes = ALIGN_BYTES // h_n.itemsize
    cuts = split_units(w_hh.indptr, hidden, lanes, parts)
    packs = []
    for p in range(parts):
        u0, u1 = cuts[p], cuts[p + 1]
        indptr = w_hh.indptr[u0:u1 + 1] - w_hh.indptr[u0]
        rows = slice(w_hh.indptr[u0], w_hh.indptr[u1])
        packs.append(_sell_pack(indptr, w_hh.indices[rows], w_hh.data[rows], u1 - u0, hidden))
    # Column H is the padding column of the gathers: always zero.
    states = aligned_zeros(2, (hidden + 1 + lanes - 1) // lanes * lanes, h_n)
    if h0 is not None:
        states[0, :hidden] = h0[0]
    flags = np.zeros((parts + 1) * FLAG_STRIDE, dtype=np.int64)
    failures: list[BaseException] = []

    def run(part: int) -> None:
        try:
            _forward_part(x, w_ih, b_ih, b_hh, leak, cuts[part], cuts[part + 1], packs[part],
                          states, out, relu, batch_first, steps, reverse, part, parts, flags)
        except BaseException as exc:  # the other parts must not wait for this one
            failures.append(exc)
            flags[parts * FLAG_STRIDE] = 1

    workers = [threading.Thread(target=run, args=(p,), name="fastrnn-units", daemon=True)
               for p in range(1, parts)]
    started = []
    try:
        for worker in workers:
            worker.start()
            started.append(worker)
        run(0)
    except BaseException:
        flags[parts * FLAG_STRIDE] = 1
        raise
    finally:
        for worker in started:
            worker.join()
    if failures:
        raise failures[0]
    h_n[0] = states[steps % 2, :hidden]
    if out is not None and steps < steps_total:
        if batch_first:
            out[0, steps:] = 0
        else:
            out[steps:, 0] = 0
