"""Pure-NumPy backend: one hoisted input product, then one BLAS product and
one in-place activation per step.

Imports nothing but NumPy, so fastrnn works where Numba is missing.
"""

from __future__ import annotations

import numpy as np


def forward(x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None,
            b_hh: np.ndarray | None, h0: np.ndarray | None, out: np.ndarray, h_n: np.ndarray,
            relu: bool, batch_first: bool) -> None:
    """Compute the forward pass into ``out`` and ``h_n``; the backend contract.

    ``x`` is (B, T, I) if ``batch_first`` else (T, B, I), any memory layout;
    ``out`` the C-contiguous output of x's layout with H features; ``h0``
    (None for zeros) and ``h_n`` are (B, H); biases are (H,) or None. Every
    argument is already validated (any memory layout); only ``out`` and
    ``h_n`` are written.
    """
    # inf - inf gives NaN here as in the Numba backend, without NumPy's warning.
    with np.errstate(invalid="ignore", over="ignore"):
        _forward(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first)


def _forward(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first):
    hidden = out.shape[-1]
    # The input product for all B*T rows at once: one large BLAS call
    # (per-step input products waste most of the time at large I), written
    # straight into the output.
    rows = out.reshape(-1, hidden)
    np.matmul(x.reshape(rows.shape[0], x.shape[-1]), w_ih.T, out=rows)
    if b_ih is not None:
        rows += b_ih
    if b_hh is not None:
        rows += b_hh

    seq = out if batch_first else out.transpose(1, 0, 2)  # (B, T, H) view
    w_hh_t = w_hh.T
    recurrent = np.empty_like(h_n)
    h_prev = np.zeros_like(h_n) if h0 is None else h0
    for t in range(seq.shape[1]):
        step = seq[:, t]
        np.matmul(h_prev, w_hh_t, out=recurrent)
        step += recurrent
        if relu:
            np.maximum(step, 0, out=step)
        else:
            np.tanh(step, out=step)
        h_prev = step
    h_n[...] = h_prev
