"""The public entry point: validation, allocation and dispatch, once."""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from ._backends import _UNKNOWN, _small, get_backend, get_small
from ._validate import plain_arrays, plain_shapes_agree, validate_forward

_empty = np.empty  # a global lookup fewer per plain call


# The result's type follows return_sequences: (output, h_n) or h_n alone.
@overload
def forward(
    x: ArrayLike,
    w_ih: ArrayLike,
    w_hh: ArrayLike,
    b_ih: ArrayLike | None = ...,
    b_hh: ArrayLike | None = ...,
    h0: ArrayLike | None = ...,
    *,
    nonlinearity: str = ...,
    batch_first: bool = ...,
    lengths: ArrayLike | None = ...,
    leak: ArrayLike | None = ...,
    return_sequences: Literal[True] = ...,
    out: np.ndarray | None = ...,
    threads: int | None = ...,
    backend: str = ...,
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def forward(
    x: ArrayLike,
    w_ih: ArrayLike,
    w_hh: ArrayLike,
    b_ih: ArrayLike | None = ...,
    b_hh: ArrayLike | None = ...,
    h0: ArrayLike | None = ...,
    *,
    nonlinearity: str = ...,
    batch_first: bool = ...,
    lengths: ArrayLike | None = ...,
    leak: ArrayLike | None = ...,
    return_sequences: Literal[False],
    out: np.ndarray | None = ...,
    threads: int | None = ...,
    backend: str = ...,
) -> np.ndarray: ...


@overload
def forward(
    x: ArrayLike,
    w_ih: ArrayLike,
    w_hh: ArrayLike,
    b_ih: ArrayLike | None = ...,
    b_hh: ArrayLike | None = ...,
    h0: ArrayLike | None = ...,
    *,
    nonlinearity: str = ...,
    batch_first: bool = ...,
    lengths: ArrayLike | None = ...,
    leak: ArrayLike | None = ...,
    return_sequences: bool,
    out: np.ndarray | None = ...,
    threads: int | None = ...,
    backend: str = ...,
) -> tuple[np.ndarray, np.ndarray] | np.ndarray: ...


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
    lengths: ArrayLike | None = None,
    leak: ArrayLike | None = None,
    return_sequences: bool = True,
    out: np.ndarray | None = None,
    threads: int | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    """Run a single-layer Elman RNN over a batch of sequences.

    For every step t, exactly as PyTorch's ``nn.RNN``::

        h_t = act(x_t @ w_ih.T + b_ih + h_{t-1} @ w_hh.T + b_hh)

    or, with a ``leak`` (the leaky update of echo state networks)::

        h_t = (1 - leak) * h_{t-1} + leak * act(...)

    Parameters
    ----------
    x : array, shape (B, T, I) if ``batch_first``, (T, B, I) if not, or (T, I)
        The input sequences; (T, I) is one unbatched sequence.
    w_ih : array, shape (H, I)
        Input-to-hidden weights (PyTorch's ``weight_ih_l0``).
    w_hh : array or SciPy sparse matrix/array, shape (H, H)
        Hidden-to-hidden weights (PyTorch's ``weight_hh_l0``). A sparse
        matrix (CSR, CSC or COO) is used as sparse: the recurrent product
        then costs in proportion to its non-zeros.
    b_ih, b_hh : array, shape (H,), optional
        Biases (PyTorch's ``bias_ih_l0``, ``bias_hh_l0``); ``None`` means none.
    h0 : array, shape (B, H), or (H,) for unbatched x, optional
        Initial hidden state; zeros when ``None``.
    nonlinearity : {"tanh", "relu"}
        The activation ``act``.
    batch_first : bool
        Whether x and the output are (B, T, ...) (default) or (T, B, ...).
        Ignored for unbatched x, as in PyTorch.
    lengths : integer array, shape (B,), optional
        Valid steps of each sequence, 0 <= length <= T, in any order (a
        scalar for unbatched x). As PyTorch's packed sequences: outputs at
        t >= length are zero and h_n is each sequence's state after its last
        valid step (h0 when the length is 0). Work is proportional to the sum
        of the lengths.
    leak : float or array of shape (H,), optional
        Leak rate(s) in (0, 1] (ReservoirPy's ``lr``); None means 1, the plain
        Elman update.
    return_sequences : bool
        When False only h_n is computed and returned, in memory O(B*H) plus a
        fixed-size chunk of time steps, whatever T is.
    out : ndarray, optional
        C-contiguous, writeable array of the output's exact shape and dtype,
        sharing no memory with any input; the output is written into it and it
        is returned.
    threads : int, optional
        The most threads this call uses (the Numba backend splits the batch
        across them); None means the environment variable
        ``FASTRNN_NUM_THREADS``, else every core this process may run on.
        Pass 1 when your own threads or processes already fill the cores.
    backend : {"auto", "numba", "numpy"}
        ``"auto"`` uses Numba when it can be imported, NumPy otherwise.

    All floating arguments must share one dtype, float32 or float64; the result
    has that dtype. Inputs may have any memory layout and are never modified.

    Returns
    -------
    output : ndarray, shape (B, T, H), (T, B, H) or (T, H), like x
        The hidden state at every step.
    h_n : ndarray, shape (B, H), or (H,) for unbatched x
        The hidden state after the last step (``h0`` when T = 0). Returned
        alone when ``return_sequences`` is False.

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
    if (h0 is None and out is None and lengths is None and leak is None and threads is None
            and return_sequences is True and batch_first is True
            and (nonlinearity == "tanh" or nonlinearity == "relu")):
        # The plain call, checked in a few comparisons: at the textbook size
        # the whole forward takes a few microseconds, and the full validation
        # would be half of it. Anything these checks do not accept goes on to
        # validate_forward, which accepts it or says what is wrong.
        plain = plain_arrays(x, w_ih, w_hh, b_ih, b_hh)
        if plain is not None:
            batch, steps, hidden, dtype = plain
            given: np.ndarray = x  # type: ignore[assignment]
            if batch < 0:  # unbatched: one sequence
                given = given[np.newaxis]
            rows = batch if batch >= 0 else 1
            try:
                small = _small.get(backend, _UNKNOWN)
            except TypeError:  # unhashable: get_small says it is no backend name
                small = _UNKNOWN
            if small is _UNKNOWN:
                small = get_small(backend)
            if small is not None and rows <= 1 and hidden <= small[1]:
                output = _empty((rows, steps, hidden), dtype)
                h_n = _empty((rows, hidden), dtype)
                # The kernel compares the shapes itself (False: they
                # disagree, and validate_forward below explains how).
                relu = nonlinearity == "relu"
                try:
                    done = small[0](given, w_ih, w_hh, b_ih, b_hh, output, h_n, relu)
                except TypeError:  # no compiled variant for these types yet
                    done = small[2](given, w_ih, w_hh, b_ih, b_hh, output, h_n, relu)
                if done:
                    return (output, h_n) if batch >= 0 else (output[0], h_n[0])
            elif plain_shapes_agree(given, w_ih, w_hh, b_ih, b_hh):  # type: ignore[arg-type]
                output = _empty((rows, steps, hidden), dtype)
                h_n = _empty((rows, hidden), dtype)
                get_backend(backend)(given, w_ih, w_hh, b_ih, b_hh, None, output, h_n,
                                     nonlinearity == "relu", True, None, None, False, None)
                return (output, h_n) if batch >= 0 else (output[0], h_n[0])
    (x_arr, w_ih_arr, w_hh_arr, b_ih_arr, b_hh_arr, h0_arr, output, relu, batch_first_,
     unbatched, output_shape, batch, hidden, lengths_arr, leak_arr) = validate_forward(
        x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity, batch_first, out, lengths, leak,
        return_sequences, threads)
    return finish_call(get_backend(backend), x_arr, w_ih_arr, w_hh_arr, b_ih_arr, b_hh_arr,
                       h0_arr, out, output, relu, batch_first_, unbatched, output_shape, batch,
                       hidden, lengths_arr, leak_arr, return_sequences, threads, None)


def finish_call(compute: Any, x: np.ndarray, w_ih: np.ndarray, w_hh: Any,
                b_ih: np.ndarray | None, b_hh: np.ndarray | None, h0: np.ndarray | None,
                given_out: np.ndarray | None, output: np.ndarray | None, relu: bool,
                batch_first: bool, unbatched: bool, output_shape: tuple[int, ...], batch: int,
                hidden: int, lengths: np.ndarray | None, leak: np.ndarray | None,
                return_sequences: bool, threads: int | None, prepared: Any) -> Any:
    """The rest of a validated call (of :func:`forward` or a prepared
    :class:`fastrnn.Layer`): allocate what the caller did not pass, run the
    backend, and shape the results as ``forward`` returns them. ``output``
    is the validated ``given_out`` in the backend's (B, T, H) form, or None.
    ``prepared``: the backend's packed weights of a Layer, or None."""
    if output is None and return_sequences:
        output = np.empty(output_shape, x.dtype)
    h_n = np.empty((batch, hidden), x.dtype)
    compute(x, w_ih, w_hh, b_ih, b_hh, h0, output, h_n, relu, batch_first, lengths, leak, False,
            threads, prepared=prepared)
    if not return_sequences:
        return h_n[0] if unbatched else h_n
    if unbatched:
        return (output[0] if given_out is None else given_out), h_n[0]  # type: ignore[index]
    return (output if given_out is None else given_out), h_n


def run_layer(x: np.ndarray, w_ih: np.ndarray, w_hh: Any, b_ih: np.ndarray | None,
              b_hh: np.ndarray | None, h0: np.ndarray | None, out: np.ndarray | None,
              h_n: np.ndarray, *, relu: bool, batch_first: bool,
              lengths: np.ndarray | None = None, leak: np.ndarray | None = None,
              reverse: bool = False, threads: int | None = None,
              backend: str = "auto") -> None:
    """One layer and direction on arguments validated by the caller
    (fastrnn.RNN, fastrnn.dask), written into ``out`` and ``h_n``.

    The backend contract (see :func:`fastrnn._numpy.forward`): ``out`` may be
    None (no sequence output) or a view whose last axis has unit stride, such
    as one direction's half of a bidirectional output. ``reverse`` runs each
    sequence from its last valid step back to its first, as PyTorch's reverse
    direction does.
    """
    get_backend(backend)(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first,
                         lengths, leak, reverse, threads)
