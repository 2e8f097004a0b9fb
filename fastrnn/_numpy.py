"""Pure-NumPy backend: one BLAS product and one in-place activation per step.

Imports nothing but NumPy, so fastrnn works where Numba is missing.
"""

from __future__ import annotations

import numpy as np


def recurrence(seq: np.ndarray, w_hh: np.ndarray, h0: np.ndarray, h_n: np.ndarray,
               relu: bool) -> None:
    """Run the recurrence in place.

    ``seq`` is a (B, T, H) view (any strides) holding the hoisted input
    pre-activations ``x_t W_ih^T + b``; step t overwrites ``seq[:, t]`` with
    ``h_t``. ``h0`` is (B, H); the last state is written to ``h_n`` (B, H).
    """
    w_hh_t = w_hh.T
    recurrent = np.empty_like(h0)
    h_prev = h0
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
