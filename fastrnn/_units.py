"""One sequence on several threads: its hidden units split between them.

A single sequence (B = 1) cannot be split over its batch, nor over time; its
hidden units can. Thread ``p`` of ``parts`` owns units ``cuts[p]..cuts[p+1]``,
a contiguous run with about the same share of w_hh as the others': equal
rows of a dense w_hh, kept in the thread's own buffer (and so in its own L2
from step to step, when it fits), or equal non-zeros of a sparse one, packed
for the gathers as in ``_numba._sell_pack``. Every step it computes its
units' new state from the whole previous state, then publishes the step;
before the next step it waits for every thread (``_sync.wait_all``), which
costs about half a microsecond here.

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

import threading
from typing import Any

import numpy as np
from numba import njit

from ._activations import relu as _relu
from ._activations import tanh as _tanh
from ._gemm import ALIGN_BYTES, JIT, KERNEL_JIT, aligned_zeros, matmul_rows
from ._numba import _sell_pack, sell_product
from ._simd import vfma, vload, vstore, vzero
from ._sync import FLAG_STRIDE, store_release, wait_all

# The hoisted input product of a chunk of steps: about this many elements,
# so that it is read back from cache.
CHUNK_ELEMENTS = 32 * 1024


@njit(**KERNEL_JIT)
def _matvec_rows(w, rows, states, cur, scratch, acc):
    # acc[j] = w[j] . states[cur] for j < rows: w (rows, Hp) holds this
    # part's rows of w_hh, zero-padded to Hp (a multiple of the lanes), and is
    # read front to back, as the prefetchers like. Four rows at a time; each
    # row's vector of partial sums is then added up through `scratch`.
    lanes = ALIGN_BYTES // acc.itemsize
    padded = w.shape[1]
    j = 0
    while j + 4 <= rows:
        a0 = vzero(acc)
        a1 = vzero(acc)
        a2 = vzero(acc)
        a3 = vzero(acc)
        for k in range(0, padded, lanes):
            v = vload(states, cur, k)
            a0 = vfma(vload(w, j, k), v, a0)
            a1 = vfma(vload(w, j + 1, k), v, a1)
            a2 = vfma(vload(w, j + 2, k), v, a2)
            a3 = vfma(vload(w, j + 3, k), v, a3)
        vstore(scratch, 0, 0, a0)
        vstore(scratch, 1, 0, a1)
        vstore(scratch, 2, 0, a2)
        vstore(scratch, 3, 0, a3)
        for r in range(4):
            total = scratch[r, 0]
            for q in range(1, lanes):
                total += scratch[r, q]
            acc[j + r] = total
        j += 4
    while j < rows:
        a0 = vzero(acc)
        for k in range(0, padded, lanes):
            a0 = vfma(vload(w, j, k), vload(states, cur, k), a0)
        vstore(scratch, 0, 0, a0)
        total = scratch[0, 0]
        for q in range(1, lanes):
            total += scratch[0, q]
        acc[j] = total
        j += 1


@njit(**KERNEL_JIT)
def _sparse_rows(states, cur, sparse, product, acc):
    # acc[j] = (row j of this part's w_hh) . states[cur], over the non-zeros:
    # into `product` in the packed row order, then put back in unit order.
    sell_product(states, cur, sparse, product, 0)
    order = sparse[1]
    for r in range(order.shape[0]):
        acc[order[r]] = product[0, r]


@njit(**JIT)
def _forward_part(x, w_ih, b_ih, b_hh, leak, u0, u1, dense, sparse, states, out, relu,
                  batch_first, steps, reverse, part, parts, flags):
    # Steps 0..steps-1 of sample 0 of x ((1, T, I) if batch_first else
    # (T, 1, I)) for units u0..u1-1, whose rows of w_hh are those of `dense`
    # (the whole (H, H) array) or `sparse` (_sell_pack of those rows only).
    # Returns False if another part aborted.
    hidden = 0 if dense is None else dense.shape[1]
    lanes = ALIGN_BYTES // states.itemsize
    input_size = x.shape[2]
    mine = u1 - u0
    width = max(lanes, (mine + lanes - 1) // lanes * lanes)
    chunk = max(1, min(steps, CHUNK_ELEMENTS // width))
    # pre: chunk rows (input product + biases); w_ih_p: I rows (w_ih.T for
    # these units); scratch: 4 rows; product, acc, bias, leak_row, keep:
    # 1 row each.
    work = aligned_zeros(chunk + input_size + 4 + 5, width, states)
    pre = work[:chunk]
    w_ih_p = work[chunk:chunk + input_size]
    tail = chunk + input_size
    scratch = work[tail:tail + 4]
    product = work[tail + 4:tail + 5]
    acc, bias = work[tail + 5], work[tail + 6]
    leak_row, keep = work[tail + 7], work[tail + 8]
    # Dense: this part's rows of w_hh, each padded to a whole number of
    # vectors. They stay in this thread's L2 from step to step when they fit.
    padded = (hidden + lanes - 1) // lanes * lanes
    w_hh_p = aligned_zeros(mine if dense is not None else 0, padded, states)
    if dense is not None:
        for j in range(mine):
            for k in range(hidden):
                w_hh_p[j, k] = dense[u0 + j, k]
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
            if sparse is None:
                _matvec_rows(w_hh_p, mine, states, cur, scratch, acc)
            else:
                _sparse_rows(states, cur, sparse, product, acc)
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
    """One sequence (batch of 1) on ``parts`` threads (the caller's and
    parts - 1 started here); w_hh a dense array or a canonical CSR matrix.
    Same contract as ``_numba.forward`` otherwise."""
    hidden = h_n.shape[1]
    steps_total = x.shape[1] if batch_first else x.shape[0]
    steps = steps_total if lengths is None else int(lengths[0])
    lanes = ALIGN_BYTES // h_n.itemsize
    dense = w_hh if isinstance(w_hh, np.ndarray) else None
    packs: list[Any] = [None] * parts
    if dense is not None:
        cuts = split_units(np.arange(hidden + 1) * hidden, hidden, lanes, parts)
    else:
        cuts = split_units(w_hh.indptr, hidden, lanes, parts)
        for p in range(parts):
            u0, u1 = cuts[p], cuts[p + 1]
            indptr = w_hh.indptr[u0:u1 + 1] - w_hh.indptr[u0]
            rows = slice(w_hh.indptr[u0], w_hh.indptr[u1])
            packs[p] = _sell_pack(indptr, w_hh.indices[rows], w_hh.data[rows], u1 - u0, hidden)
    # Column H is the padding column of the gathers: always zero.
    states = aligned_zeros(2, (hidden + 1 + lanes - 1) // lanes * lanes, h_n)
    if h0 is not None:
        states[0, :hidden] = h0[0]
    flags = np.zeros((parts + 1) * FLAG_STRIDE, dtype=np.int64)
    failures: list[BaseException] = []

    def run(part: int) -> None:
        try:
            _forward_part(x, w_ih, b_ih, b_hh, leak, cuts[part], cuts[part + 1], dense,
                          packs[part], states, out, relu, batch_first, steps, reverse, part,
                          parts, flags)
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
