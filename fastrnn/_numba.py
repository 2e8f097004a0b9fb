"""Numba backend: the whole forward pass in compiled code, one of three paths.

Chosen by size in :func:`forward` (measured on the 2-core AVX-512 machine):

=====================  ==========================================================
path                   when
=====================  ==========================================================
blocked, one thread    H < BLAS_MIN_HIDDEN and fewer than PARALLEL_MIN_FMAS
                       multiply-adds, or B = 1
blocked, threads       H < BLAS_MIN_HIDDEN, B >= 2, more work than that: each
                       thread runs every step for its share of the batch
BLAS                   H >= BLAS_MIN_HIDDEN (256)
=====================  ==========================================================

Blocked: the input product is hoisted into the output buffer a chunk of time
steps at a time (still in cache when the recurrence reads it back), then each
step's pre-activations are overwritten with the hidden state; nothing is
allocated per step. Both products run in our register-blocked AVX-512 kernel
(fastrnn._gemm), not BLAS: per-step BLAS calls cost microseconds at small
sizes, and BLAS threads that keep spinning after a call would fight ours for
the cores. BLAS: SciPy's BLAS (Numba's np.dot) for the hoisted product and
one product per step, on all cores; our kernel has no cache blocking for
weights that outgrow L2. Importing this module imports Numba; the NumPy
backend never does.
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
from ._gemm import ALIGN_BYTES, KERNEL_JIT, aligned_zeros, matmul_rows

# "contract" lets LLVM fuse multiply-adds. Nothing that assumes finite
# values ("nnan", "ninf") or reorders sums ("reassoc") is enabled, so NaN and
# inf propagate as IEEE arithmetic does.
_FASTMATH = {"contract"}
_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath=_FASTMATH)

# The hoisted input product of one chunk of time steps is kept near this
# many elements, so that the recurrence reads it back from L2, not memory.
CHUNK_ELEMENTS = 32 * 1024
# Rows of the input product computed per call of the blocked kernel.
HOIST_ROWS = 64
# From this hidden size on, BLAS runs the products (see _forward_blas).
BLAS_MIN_HIDDEN = 256
# A forward is split across threads from this many multiply-adds on (about
# 100 us of work): below it, handing work to a thread costs more than it saves.
PARALLEL_MIN_FMAS = 2_000_000


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


@njit(**KERNEL_JIT)
def _input_product(x2d, first, rows, w_ih_p, bias, out2d, scratch):
    # out2d[first:first+rows] = x2d[first:first+rows] @ w_ih.T + bias
    hidden = out2d.shape[1]
    input_size = x2d.shape[1]
    block = scratch.shape[0]
    for r0 in range(0, rows, block):
        n = min(block, rows - r0)
        start = first + r0
        matmul_rows(x2d[start:start + n], n, input_size, w_ih_p, scratch)
        for i in range(n):
            for j in range(hidden):
                out2d[start + i, j] = scratch[i, j] + bias[j]


@njit(**_JIT)
def _forward_range(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first,
                   b_start, b_stop):
    # Samples b_start..b_stop-1 of the batch, all steps. x: (B, T, I) if
    # batch_first else (T, B, I), any layout; out: C-contiguous, x's layout;
    # row b*T + t (batch_first) or t*B + b of out2d is h_t of sample b.
    n1, n2, input_size = x.shape
    hidden = w_hh.shape[0]
    batch = n1 if batch_first else n2
    steps = n2 if batch_first else n1
    count = b_stop - b_start
    lanes = ALIGN_BYTES // out.itemsize
    width = (hidden + lanes - 1) // lanes * lanes

    # One aligned, zeroed workspace holds every buffer (one allocation: at
    # the textbook size each allocation is a visible share of the call), rows
    # of `width` values, so every buffer starts 64-byte aligned:
    #   state   count rows  h of samples b_start.., zero-padded: the left
    #                       operand of the recurrent product
    #   acc     count rows  the recurrent product
    #   scratch hoist rows  the input product of a block of rows
    #   w_ih_p  I rows      w_ih.T, padded;  w_hh_p  H rows  w_hh.T, padded
    #   bias    1 row       b_ih + b_hh
    rows = n1 * n2
    hoist = min(HOIST_ROWS, rows)
    work = aligned_zeros(2 * count + hoist + input_size + hidden + 1, width, out)
    state = work[:count]
    if h0 is not None:
        for i in range(count):
            for j in range(hidden):
                state[i, j] = h0[b_start + i, j]
    if steps > 0 and count > 0:
        acc = work[count:2 * count]
        scratch = work[2 * count:2 * count + hoist]
        first = 2 * count + hoist
        w_ih_p = work[first:first + input_size]
        w_hh_p = work[first + input_size:first + input_size + hidden]
        _pack_transposed(w_ih, w_ih_p)
        _pack_transposed(w_hh, w_hh_p)
        bias = work[first + input_size + hidden]
        _add_biases(bias, b_ih, b_hh)
        x2d = np.ascontiguousarray(x).reshape(rows, input_size)
        out2d = out.reshape(rows, hidden)
        chunk = max(1, CHUNK_ELEMENTS // (count * width))
        for t0 in range(0, steps, chunk):
            t1 = min(steps, t0 + chunk)
            if batch_first:
                for b in range(b_start, b_stop):
                    _input_product(x2d, b * steps + t0, t1 - t0, w_ih_p, bias, out2d, scratch)
            else:
                for t in range(t0, t1):
                    _input_product(x2d, t * batch + b_start, count, w_ih_p, bias, out2d,
                                   scratch)
            for t in range(t0, t1):
                matmul_rows(state, count, hidden, w_hh_p, acc)
                _activate_step(out2d, acc, state, t, steps, batch, b_start, batch_first, relu)
    for i in range(count):
        for j in range(hidden):
            h_n[b_start + i, j] = state[i, j]


@njit(**KERNEL_JIT)
def _activate_step(out2d, acc, state, t, steps, batch, b_start, batch_first, relu):
    # h_t = act(pre-activation + recurrent product), written to the output row
    # and to the state that the next step's product reads.
    # Plain 2-D indexing, no row slices: a slice costs a reference-count
    # update, which at H = 8 was most of the step.
    count = acc.shape[0]
    hidden = out2d.shape[1]
    for i in range(count):
        b = b_start + i
        row = b * steps + t if batch_first else t * batch + b
        if relu:
            for j in range(hidden):
                v = _relu(out2d[row, j] + acc[i, j])
                out2d[row, j] = v
                state[i, j] = v
        else:
            for j in range(hidden):
                v = _tanh(out2d[row, j] + acc[i, j])
                out2d[row, j] = v
                state[i, j] = v


@njit(**_JIT)
def _forward_blas(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first):
    # Large hidden sizes: BLAS (SciPy's, through Numba's np.dot) for the
    # hoisted input product and one product per step, on all cores; only the
    # activation is ours. Our blocked kernel has no cache blocking for
    # weights that outgrow L2.
    n1, n2, input_size = x.shape
    batch, hidden = h_n.shape
    rows = n1 * n2
    steps = rows // batch if batch > 0 else 0
    state = np.zeros((batch, hidden), dtype=out.dtype)
    if h0 is not None:
        state[:] = h0
    if rows > 0:
        out2d = out.reshape(rows, hidden)
        if input_size > 0:
            np.dot(np.ascontiguousarray(x).reshape(rows, input_size),
                   np.ascontiguousarray(w_ih).T, out2d)
        else:
            out2d[:] = 0
        bias = np.zeros(hidden, dtype=out.dtype)
        _add_biases(bias, b_ih, b_hh)
        for r in range(rows):
            o = out2d[r]
            for j in range(hidden):
                o[j] += bias[j]
        w_hh_c = np.ascontiguousarray(w_hh)
        if out.itemsize == 4 and batch <= 32:
            # Small float32 batches: OpenBLAS ran w_hh @ state.T (H x B) at
            # 191 GFLOP/s where state @ w_hh.T ran at 135 (B=32, H=1024). The
            # activation then reads the product transposed, which cost more
            # than it saved at B=128 (50 -> 62 ms at (128, 100, 256, 512));
            # float64 showed no gap.
            acc_t = np.empty((hidden, batch), dtype=out.dtype)
            for t in range(steps):
                np.dot(w_hh_c, state.T, acc_t)
                _activate_step(out2d, acc_t.T, state, t, steps, batch, 0, batch_first, relu)
        else:
            acc = np.empty_like(state)
            for t in range(steps):
                np.dot(state, w_hh_c.T, acc)
                _activate_step(out2d, acc, state, t, steps, batch, 0, batch_first, relu)
    h_n[:] = state


@njit(**_JIT)
def _forward_kernel(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first):
    _forward_range(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first,
                   0, h_n.shape[0])


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
            _pool = ThreadPoolExecutor(max_workers=_THREADS - 1, thread_name_prefix="fastrnn")
        return _pool


def forward(x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None,
            b_hh: np.ndarray | None, h0: np.ndarray | None, out: np.ndarray, h_n: np.ndarray,
            relu: bool, batch_first: bool) -> None:
    """Same contract as :func:`fastrnn._numpy.forward`."""
    # The path is chosen here, not inside one compiled function, so that a
    # first call compiles only the path it takes (compilation is seconds).
    # The common small case is tested first: this wrapper is part of every
    # call's latency.
    hidden = w_hh.shape[0]
    if hidden >= BLAS_MIN_HIDDEN:
        _forward_blas(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first)
        return
    batch = h_n.shape[0]
    if batch < 2 or _THREADS < 2 or out.size * (x.shape[2] + hidden) < PARALLEL_MIN_FMAS:
        _forward_kernel(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first)
        return
    # Samples are independent: each thread runs every step for its share of
    # the batch (the kernels release the GIL), with no per-step hand-off.
    # A non-contiguous x is copied once here, not once per thread.
    x = np.ascontiguousarray(x)
    parts = min(_THREADS, batch)
    bounds = [batch * p // parts for p in range(parts + 1)]
    futures = [
        _thread_pool().submit(_forward_range, x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu,
                              batch_first, bounds[p], bounds[p + 1])
        for p in range(1, parts)
    ]
    _forward_range(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first,
                   bounds[0], bounds[1])
    for future in futures:
        future.result()
