"""Numba backend: the whole recurrence in one compiled call.

The kernel receives the output buffer already holding the hoisted input
pre-activations and overwrites each step with its hidden state, so nothing is
allocated per step. Importing this module imports Numba; the NumPy backend
never does.
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


@njit(**_JIT)
def _recurrence_kernel(seq, w_hh_t, h0, h_n, relu):
    # seq is (B, T, H) with any strides; the state and the accumulator live in
    # small contiguous buffers so that the inner loops over the output unit j
    # run at unit stride over rows of w_hh_t (the transposed recurrent matrix,
    # so row k holds every output unit's weight for input unit k).
    batch, steps, hidden = seq.shape
    state = np.empty(hidden, dtype=seq.dtype)
    acc = np.empty(hidden, dtype=seq.dtype)
    for b in range(batch):
        for j in range(hidden):
            state[j] = h0[b, j]
        for t in range(steps):
            row = seq[b, t]
            for j in range(hidden):
                acc[j] = row[j]
            for k in range(hidden):
                h_k = state[k]
                w_k = w_hh_t[k]
                for j in range(hidden):
                    acc[j] += h_k * w_k[j]
            if relu:
                for j in range(hidden):
                    state[j] = _relu(acc[j])
            else:
                for j in range(hidden):
                    state[j] = _tanh(acc[j])
            for j in range(hidden):
                row[j] = state[j]
        for j in range(hidden):
            h_n[b, j] = state[j]


def recurrence(seq: np.ndarray, w_hh: np.ndarray, h0: np.ndarray, h_n: np.ndarray,
               relu: bool) -> None:
    """Same contract as :func:`fastrnn._numpy.recurrence`."""
    _recurrence_kernel(seq, np.ascontiguousarray(w_hh.T), h0, h_n, relu)
