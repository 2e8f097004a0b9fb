"""The public entry point: validation, allocation and dispatch, once."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._backends import get_backend
from ._validate import validate_forward


def forward(
    x: ArrayLike,
    w_ih: ArrayLike,
    w_hh: ArrayLike,
    b_ih: ArrayLike | None = None,
    b_hh: ArrayLike | None = None,
    h0: ArrayLike | None = None,
    *,
    nonlinearity: str = "tanh",
    batch_first: bool = True,
    out: np.ndarray | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Run a single-layer Elman RNN over a batch of sequences.

    For every step t, exactly as PyTorch's ``nn.RNN``::

        h_t = act(x_t @ w_ih.T + b_ih + h_{t-1} @ w_hh.T + b_hh)

    Parameters
    ----------
    x : array, shape (B, T, I) if ``batch_first``, (T, B, I) if not, or (T, I)
        The input sequences; (T, I) is one unbatched sequence.
    w_ih : array, shape (H, I)
        Input-to-hidden weights (PyTorch's ``weight_ih_l0``).
    w_hh : array, shape (H, H)
        Hidden-to-hidden weights (PyTorch's ``weight_hh_l0``).
    b_ih, b_hh : array, shape (H,), optional
        Biases (PyTorch's ``bias_ih_l0``, ``bias_hh_l0``); ``None`` means none.
    h0 : array, shape (B, H), or (H,) for unbatched x, optional
        Initial hidden state; zeros when ``None``.
    nonlinearity : {"tanh", "relu"}
        The activation ``act``.
    batch_first : bool
        Whether x and the output are (B, T, ...) (default) or (T, B, ...).
        Ignored for unbatched x, as in PyTorch.
    out : ndarray, optional
        C-contiguous, writeable array of the output's exact shape and dtype,
        sharing no memory with any input; the output is written into it and it
        is returned.
    backend : {"auto", "numba", "numpy"}
        ``"auto"`` uses Numba when it can be imported, NumPy otherwise.

    All floating arguments must share one dtype, float32 or float64; the result
    has that dtype. Inputs may have any memory layout and are never modified.

    Returns
    -------
    output : ndarray, shape (B, T, H), (T, B, H) or (T, H), like x
        The hidden state at every step.
    h_n : ndarray, shape (B, H), or (H,) for unbatched x
        The hidden state after the last step (``h0`` when T = 0).

    Raises
    ------
    TypeError
        When an argument is not float32/float64 or the dtypes differ.
    ValueError
        When shapes disagree, ``out`` is unsuitable, or an option is unknown.
    ImportError
        When ``backend="numba"`` and Numba is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> import fastrnn
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((2, 5, 4), dtype=np.float32)  # (B, T, I)
    >>> w_ih = rng.standard_normal((8, 4), dtype=np.float32)  # (H, I)
    >>> w_hh = rng.standard_normal((8, 8), dtype=np.float32) * 0.3
    >>> output, h_n = fastrnn.forward(x, w_ih, w_hh)
    >>> output.shape, h_n.shape, output.dtype
    ((2, 5, 8), (2, 8), dtype('float32'))
    >>> bool(np.array_equal(output[:, -1], h_n))
    True
    """
    (x_arr, w_ih_arr, w_hh_arr, b_ih_arr, b_hh_arr, h0_arr, output, relu, batch_first_,
     unbatched, output_shape, batch, hidden) = validate_forward(
        x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity, batch_first, out)
    compute = get_backend(backend)
    if output is None:
        output = np.empty(output_shape, x_arr.dtype)
    h_n = np.empty((batch, hidden), x_arr.dtype)
    compute(x_arr, w_ih_arr, w_hh_arr, b_ih_arr, b_hh_arr, h0_arr, output, h_n, relu,
            batch_first_)
    if unbatched:
        return (output[0] if out is None else out), h_n[0]
    return (output if out is None else out), h_n
