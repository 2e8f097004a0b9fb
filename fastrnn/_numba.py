"""Numba backend: the whole forward pass in one compiled call.

The kernel hoists the input product into the output buffer, then overwrites
each step's pre-activations with its hidden state, so nothing is allocated per
step. Importing this module imports Numba; the NumPy backend never does.

Numba's ``np.dot`` calls SciPy's BLAS; both the hoisted product and the large
per-step products go through it, so one BLAS thread pool serves the whole
call (PERFORMANCE.md, trap 2).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._activations import relu as _relu
from ._activations import tanh as _tanh

# "contract" lets LLVM fuse multiply-adds. Nothing that assumes finite
# values ("nnan", "ninf") or reorders sums ("reassoc") is enabled, so NaN and
# inf propagate as IEEE arithmetic does.
_FASTMATH = {"contract"}
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=_FASTMATH)

# Below this many multiply-adds per step (B * H * H) the per-step product
# runs in our own loop; above it a BLAS call's fixed cost (~0.1-0.2 us) is
# repaid. Measured on the 2-core AVX-512 machine: at (B=1, H=64) the loop and
# BLAS tie, from (B=8, H=64) BLAS wins clearly.
BLAS_STEP_MIN_FMAS = 8 * 64 * 64


@njit(**_JIT)
def _small_product(a, w_t, acc):
    # acc += a @ w_t for small matrices, in our own loop: a BLAS call's fixed
    # cost would dominate. w_t is C-contiguous (row k holds input unit k's
    # weight to every output unit), so the inner loop runs over output units j
    # at unit stride and LLVM vectorises it. Four k at a time, summed as a
    # tree, cut the loads/stores of acc fourfold and keep the dependent-add
    # chain short.
    rows, inner = a.shape
    width = w_t.shape[1]
    k4 = inner - inner % 4
    for r in range(rows):
        c = acc[r]
        s = a[r]
        for k in range(0, k4, 4):
            w0 = w_t[k]
            w1 = w_t[k + 1]
            w2 = w_t[k + 2]
            w3 = w_t[k + 3]
            p0 = s[k]
            p1 = s[k + 1]
            p2 = s[k + 2]
            p3 = s[k + 3]
            for j in range(width):
                c[j] += (p0 * w0[j] + p1 * w1[j]) + (p2 * w2[j] + p3 * w3[j])
        for k in range(k4, inner):
            w = w_t[k]
            p = s[k]
            for j in range(width):
                c[j] += p * w[j]


@njit(**_JIT)
def _forward_kernel(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first):
    # x: (B, T, I) if batch_first else (T, B, I); out: C-contiguous, x's layout
    # with H features. Row b*T + t (batch_first) or t*B + b of out2d is h_t of
    # sample b. Layout fixes (copies) happen here, compiled per input layout,
    # so that contiguous inputs cost nothing and Python does no array work.
    batch, hidden = h_n.shape
    input_size = x.shape[2]
    rows = out.shape[0] * out.shape[1]
    steps = rows // batch if batch > 0 else 0
    if h0 is None:
        state = np.zeros((batch, hidden), dtype=out.dtype)
    else:
        state = np.ascontiguousarray(h0).copy()
    if rows == 0:
        h_n[:] = state
        return
    out2d = out.reshape(rows, hidden)

    blas = batch * hidden * hidden >= BLAS_STEP_MIN_FMAS

    # The input product for all B*T rows at once (PERFORMANCE.md, trap 3),
    # written into the output: one BLAS call, or our loop for small problems.
    x2d = np.ascontiguousarray(x).reshape(rows, input_size)
    if blas and input_size > 0:
        np.dot(x2d, np.ascontiguousarray(w_ih).T, out2d)
    else:
        out2d[:] = 0
        _small_product(x2d, np.ascontiguousarray(w_ih.T), out2d)
    if b_ih is not None or b_hh is not None:
        bias = np.zeros(hidden, dtype=out.dtype)
        if b_ih is not None:
            bias += b_ih
        if b_hh is not None:
            bias += b_hh
        for r in range(rows):
            o = out2d[r]
            for j in range(hidden):
                o[j] += bias[j]

    acc = np.empty_like(state)
    if blas:
        w_hh_t = np.ascontiguousarray(w_hh).T  # F-ordered view: BLAS reads it transposed
        for t in range(steps):
            np.dot(state, w_hh_t, acc)
            _activate_step(out2d, acc, state, t, steps, batch_first, relu)
    else:
        w_hh_c = np.ascontiguousarray(w_hh.T)  # our loop wants rows of w_hh.T
        for t in range(steps):
            acc[:] = 0
            _small_product(state, w_hh_c, acc)
            _activate_step(out2d, acc, state, t, steps, batch_first, relu)
    h_n[:] = state


@njit(**_JIT)
def _activate_step(out2d, acc, state, t, steps, batch_first, relu):
    # h_t = act(pre-activation + recurrent product), written to the output row
    # and to the contiguous state that the next step's product reads.
    batch, hidden = state.shape
    for b in range(batch):
        o = out2d[b * steps + t] if batch_first else out2d[t * batch + b]
        a = acc[b]
        s = state[b]
        if relu:
            for j in range(hidden):
                v = _relu(o[j] + a[j])
                o[j] = v
                s[j] = v
        else:
            for j in range(hidden):
                v = _tanh(o[j] + a[j])
                o[j] = v
                s[j] = v


# The backend contract (see fastrnn._numpy.forward), called without a Python
# wrapper: at the textbook size one extra Python call is 5% of the forward.
forward = _forward_kernel
