"""The recurrent product of a sparse ``w_hh``: SELL-C-sigma gathers.

A CSR matrix is packed once (:func:`sell_pack`) with its rows sorted by their
number of non-zeros, most first, in slices of ``lanes`` rows (one vector); a
slice's q-th non-zeros sit side by side, so each multiply-add takes one
vector of weights and one gathered vector of state values
(:func:`sell_product`). Rows shorter than their slice's longest are padded
with zero weights that read a state column always zero (``zero_column``:
``0 * inf`` would be NaN). The product is written in the packed row order
and put back in unit order by :func:`sparse_rows`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .jit import JIT, KERNEL_JIT
from .product import aligned_zeros
from .simd import VECTOR_BYTES, vadd, vfma, vgather, vload, vstore, vzero


@njit(**JIT)
def sell_pack(indptr, indices, data, hidden, zero_column):
    """A CSR matrix (``hidden`` rows) in SELL-C-sigma form: ``(slice_start,
    order, values, columns)``. Slice s is rows slice_start[s]..slice_start[s+1]
    of ``values`` (``lanes`` columns: row q holds the q-th non-zero of each of
    the slice's matrix rows); ``columns`` (flat, int32) their column numbers,
    ``zero_column`` for padding; ``order[r]`` is the matrix row at sorted
    position r."""
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
    """``sorted_acc[k]`` = w_hh @ state[i] over the non-zeros only, in the
    packed row order (row r of the result is matrix row order[r]): per slice
    of rows, a vector of lanes accumulates one gathered state value per row
    and non-zero (two accumulators: two chains of gathers in flight)."""
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
def sparse_rows(state, active, sparse, sorted_acc, acc):
    """``acc[i, j]`` = (row j of the packed matrix) . state[i] for the running
    samples i < active, over the non-zeros: into ``sorted_acc`` in the packed
    row order, then put back in row order."""
    order = sparse[1]
    for i in range(active):
        sell_product(state, i, sparse, sorted_acc, i)
        for r in range(order.shape[0]):
            acc[i, order[r]] = sorted_acc[i, r]
