"""The input product shared by every backend (PERFORMANCE.md, trap 3)."""

from __future__ import annotations

import numpy as np


def hoist_input(x: np.ndarray, w_ih: np.ndarray, bias: np.ndarray | None,
                out: np.ndarray) -> None:
    """Write ``x @ w_ih.T + bias`` for every step into ``out``, in one product.

    ``x`` is (N1, N2, I) in any layout, ``out`` the C-contiguous (N1, N2, H)
    output: all B*T rows become one large matrix product, the efficient shape
    for BLAS, and no per-step input product is left for the recurrence.
    """
    hidden = out.shape[-1]
    rows = out.reshape(-1, hidden)
    np.matmul(x.reshape(-1, x.shape[-1]), w_ih.T, out=rows)
    if bias is not None:
        rows += bias
