"""GRU and LSTM layers (PyTorch's ``nn.GRU`` and ``nn.LSTM`` formulas, weights
in PyTorch's layout), prepared once and run many times: whole sequences, a
chunk of a stream, or one time step.

They run on the step loop of the Elman layer (:mod:`fastrnn.kernels.driver`)
with a gated cell (:mod:`fastrnn.kernels.cells`): the products are G gates
wide (3 for a GRU, 4 for an LSTM), packed once, and the cell's update is
chosen when the loop is compiled. The NumPy backend runs the same formulas
with BLAS products (:func:`fastrnn._numpy.forward_gated`).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._backends import auto_backend_name, get_backend
from ._plan import PARALLEL_MIN_FMAS, STEP_BLAS_MIN_HIDDEN
from ._validate import (
    _describe,
    _wrong_shape,
    as_float_array,
    check_threads,
    is_sparse,
    validate_call,
)

_NDARRAY = np.ndarray
_empty = np.empty


def _state_array(name: str, value: Any, dtype: np.dtype, shape: tuple[int, ...],
                 what: str) -> np.ndarray:
    # One state array (h0, c0, h, c) checked against its expected shape.
    array = as_float_array(name, value)
    if array.dtype != dtype:
        raise TypeError(f"{name} must have the layer's dtype {dtype}, got {array.dtype}; "
                        f"convert it, e.g. {name}.astype(np.{dtype.name})")
    if array.shape != shape:
        raise _wrong_shape(name, array, shape, what)
    return array


class _GatedLayer:
    """What a GRU and an LSTM layer share; see :class:`GRULayer`."""

    _GATES = 0
    _NAMES = ""
    __slots__ = ("input_size", "hidden_size", "dtype", "backend", "threads", "_w_ih",
                 "_w_hh", "_b_ih", "_b_hh", "_w_ih_t", "_w_hh_t", "_bias", "_b_hn", "_packed",
                 "_cell", "_step_kernel", "_heap_kernel", "_split_from", "_kept", "_blas_step",
                 "_direct")

    def __init__(self, w_ih: ArrayLike, w_hh: ArrayLike, b_ih: ArrayLike | None = None,
                 b_hh: ArrayLike | None = None, *, threads: int | None = None,
                 backend: str = "auto") -> None:
        gates = self._GATES
        kind = type(self).__name__
        if threads is not None:
            threads = check_threads(threads)
        if not isinstance(backend, str):
            raise ValueError(f"backend must be a string, got {_describe(backend)}")
        if is_sparse(w_hh):
            raise TypeError(f"w_hh of a {kind} must be a dense array, got a SciPy sparse "
                            f"{type(w_hh).__name__}; pass w_hh.toarray()")
        w_ih_arr = as_float_array("w_ih", w_ih)
        w_hh_arr = as_float_array("w_hh", w_hh)
        if w_ih_arr.ndim != 2 or w_ih_arr.shape[0] == 0 or w_ih_arr.shape[0] % gates:
            raise ValueError(f"w_ih of a {kind} must be 2-D ({gates} * hidden_size, input_size),"
                             f" hidden_size >= 1 (gates {self._NAMES} stacked, PyTorch's "
                             f"weight_ih_l0), got shape {w_ih_arr.shape}")
        hidden = w_ih_arr.shape[0] // gates
        if w_hh_arr.shape != (gates * hidden, hidden):
            raise _wrong_shape("w_hh", w_hh_arr, (gates * hidden, hidden),
                               f"({gates} * hidden_size, hidden_size) for w_ih of shape "
                               f"{w_ih_arr.shape}")
        arrays = {"w_ih": w_ih_arr, "w_hh": w_hh_arr}
        for name, value in (("b_ih", b_ih), ("b_hh", b_hh)):
            if value is not None:
                array = as_float_array(name, value)
                if array.shape != (gates * hidden,):
                    raise _wrong_shape(name, array, (gates * hidden,),
                                       f"({gates} * hidden_size,) for w_ih of shape "
                                       f"{w_ih_arr.shape}")
                arrays[name] = array
        if len({array.dtype for array in arrays.values()}) > 1:
            listing = ", ".join(f"{name}={array.dtype}" for name, array in arrays.items())
            raise TypeError(f"the weights must share one dtype (float32 or float64), got "
                            f"{listing}; cast them to one dtype, e.g. .astype(np.float32)")
        get_backend(backend)  # (a ValueError for an unknown backend, ImportError for Numba)
        name = auto_backend_name() if backend == "auto" else backend
        dtype = w_ih_arr.dtype
        self.input_size = int(w_ih_arr.shape[1])
        self.hidden_size = int(hidden)
        self.dtype = dtype
        self.backend = name
        self.threads = threads
        # Copies: later changes to the caller's arrays do not reach the layer.
        self._w_ih = np.array(w_ih_arr, order="C", copy=True)
        self._w_hh = np.array(w_hh_arr, order="C", copy=True)
        self._b_ih = None if b_ih is None else np.array(arrays["b_ih"], copy=True)
        self._b_hh = None if b_hh is None else np.array(arrays["b_hh"], copy=True)
        # The NumPy backend's form: the transposed weights, contiguous, and
        # the bias added to the input product (a GRU's b_hh of the n gate
        # apart: it is added inside r * (...)).
        self._w_ih_t = np.ascontiguousarray(self._w_ih.T)
        self._w_hh_t = np.ascontiguousarray(self._w_hh.T)
        bias = np.zeros(gates * hidden, dtype)
        if self._b_ih is not None:
            bias += self._b_ih
        self._b_hn = None
        if self._b_hh is not None:
            if gates == 3:
                bias[:2 * hidden] += self._b_hh[:2 * hidden]
                self._b_hn = self._b_hh[2 * hidden:]
            else:
                bias += self._b_hh
        self._bias = bias
        self._packed: Any = None
        self._cell: Any = None
        # (B, T, I) -> the compiled call of a plain call of that shape, or
        # False (see _direct_call).
        self._direct: dict[tuple[int, ...], Any] = {}
        self._step_kernel: Any = None
        self._heap_kernel: Any = None
        # Steps of at least this many samples run on the batch split's
        # threads (see _split_step).
        self._split_from = sys.maxsize
        self._kept: Any = None
        # Whether a one-sample step runs NumPy's products (see _step).
        self._blas_step = False
        if name == "numba":
            from . import _numba
            from .kernels import cells
            from .kernels import step as step_kernels

            self._cell = cells.GRU_CELL if gates == 3 else cells.LSTM_CELL
            self._packed = _numba.pack_gated(self._w_ih, self._w_hh, self._b_ih, self._b_hh,
                                             gates)
            self._step_kernel = step_kernels.gated_step_kernel(dtype, self._cell, False)
            self._kept = _numba.KeptSplit()
            limit = _numba.default_threads() if threads is None else threads
            if min(limit, _numba._CORES) > 1:
                sample = gates * hidden * (hidden + self.input_size)
                self._split_from = max(2, -(-PARALLEL_MIN_FMAS // sample))
                # A one-sample step whose weights are as large as an Elman
                # layer's from STEP_BLAS_MIN_HIDDEN on streams them from L3
                # every step: OpenBLAS's matrix-vector products on every
                # core beat the compiled step on one (float32 B = 1, H =
                # 1024, us a step: GRU 141 against 171, LSTM 203 against
                # 255; see the README).
                self._blas_step = sample >= STEP_BLAS_MIN_HIDDEN * (STEP_BLAS_MIN_HIDDEN
                                                                    + self.input_size)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, dtype={self.dtype.name}, "
                f"backend={self.backend!r})")

    # -- whole sequences ---------------------------------------------------

    def _run(self, x: Any, h0: Any, c0: Any, batch_first: Any, lengths: Any,
             return_sequences: Any, out: Any) -> tuple[Any, ...]:
        # Validate, run, shape: (output or None, h_n, c_n or None), each as
        # returned (unbatched: without the batch axis).
        lstm = self._GATES == 4
        weights: dict[str, np.ndarray | None] = {"w_ih": self._w_ih, "w_hh": self._w_hh}
        (x_arr, h0_arr, out_arr, batch_first_, unbatched, output_shape, batch, lengths_arr,
         return_sequences) = validate_call(x, h0, self.input_size, self.hidden_size, self.dtype,
                                           batch_first, out, lengths, return_sequences,
                                           weights)
        hidden = self.hidden_size
        c0_arr = None
        if lstm and c0 is not None:
            shape = (hidden,) if unbatched else (batch, hidden)
            c0_arr = _state_array("c0", c0, self.dtype, shape,
                                  "h0's shape" if unbatched else
                                  f"(batch, hidden_size) for x of shape {np.shape(x)}")
            c0_arr = c0_arr.reshape(batch, hidden)
        output = out_arr
        if output is None and return_sequences:
            output = _empty(output_shape, self.dtype)
        h_n = _empty((batch, hidden), self.dtype)
        c_n = _empty((batch, hidden), self.dtype) if lstm else None
        if self._packed is not None:
            self._forward_numba(x_arr, h0_arr, c0_arr, output, h_n, c_n, batch_first_,
                                lengths_arr)
        else:
            self._forward_numpy(x_arr, h0_arr, c0_arr, output, h_n, c_n, batch_first_,
                                lengths_arr)
        if unbatched:
            h_n = h_n[0]
            c_n = None if c_n is None else c_n[0]
            if output is not None and out is None:
                output = output[0]
        if out is not None:
            output = out
        return (output if return_sequences else None), h_n, c_n

    def _direct_call(self, x: Any, start: Any) -> Any:
        # A plain call (batch first, every sequence whole, no `out`) of x, an
        # ndarray of the layer's dtype, from `start` (None, or the kernels'
        # state, (B, H) or (B, 2H) for an LSTM, of the layer's dtype) that
        # fastrnn._numba.forward_cell would run on this thread in one window
        # (a stream's chunk), run by the compiled kernel straight away
        # (fastrnn._numba.DirectCall, set up once per shape: the general
        # path's validation and plan cost a 100-step chunk of a float32 GRU,
        # H = 64, 9 us of its 80): (output, the state after it), or None
        # for a call that takes the general path.
        shape = x.shape
        entry: Any = self._direct.get(shape)
        if entry is None:
            entry = False
            if self._packed is not None and len(shape) == 3 and shape[2] == self.input_size:
                from . import _numba

                call = _numba.gated_direct(self._packed, self._cell, shape[0], shape[1],
                                           self.input_size, self.hidden_size, self.threads,
                                           self._bias)
                if call is not None:
                    columns = self.hidden_size * (2 if self._GATES == 4 else 1)
                    entry = (*call, (shape[0], shape[1], self.hidden_size),
                             (shape[0], columns))
            if len(self._direct) >= 16:
                self._direct.clear()
            self._direct[shape] = entry
        if entry is False or (start is not None and start.shape != entry[6]):
            return None
        kernel, packed, sparse, cell, chunk, output_shape, state_shape = entry
        output = _empty(output_shape, self.dtype)
        state = _empty(state_shape, self.dtype)
        if start is None:
            state.fill(0)  # (the kernel reads h0 before it writes h_n)
            start = state
        kernel(x, packed, sparse, cell, start, output, state, chunk)
        return output, state

    def _forward_numpy(self, x: np.ndarray, h0: np.ndarray | None, c0: np.ndarray | None,
                       output: np.ndarray | None, h_n: np.ndarray, c_n: np.ndarray | None,
                       batch_first: bool, lengths: np.ndarray | None) -> None:
        from . import _numpy

        _numpy.forward_gated(x, self._w_ih_t, self._w_hh_t, self._bias, self._b_hn, h0, c0,
                             output, h_n, c_n, batch_first, lengths)

    def _forward_numba(self, x: np.ndarray, h0: np.ndarray | None, c0: np.ndarray | None,
                       output: np.ndarray | None, h_n: np.ndarray, c_n: np.ndarray | None,
                       batch_first: bool, lengths: np.ndarray | None) -> None:
        from . import _numba

        hidden = self.hidden_size
        # Where the plan chooses BLAS's products (a large state compiled
        # without FMA), NumPy's forward pass writes the results itself.
        on_numpy = functools.partial(self._forward_numpy, x, h0, c0, output, h_n, c_n,
                                     batch_first, lengths)
        if c_n is None:  # GRU: the kernels' state is h
            _numba.forward_cell(x, self._packed, self._cell, hidden, h0, output, h_n,
                                batch_first, lengths, self.threads, on_numpy,
                                weights=self._weights(), kept=self._kept)
            return
        # LSTM: the kernels' state is [h | c], 2H wide.
        batch = h_n.shape[0]
        start = None
        if h0 is not None or c0 is not None:
            start = np.zeros((batch, 2 * hidden), self.dtype)
            if h0 is not None:
                start[:, :hidden] = h0
            if c0 is not None:
                start[:, hidden:] = c0
        both = _empty((batch, 2 * hidden), self.dtype)
        if _numba.forward_cell(x, self._packed, self._cell, hidden, start, output, both,
                               batch_first, lengths, self.threads, on_numpy,
                               weights=self._weights(), kept=self._kept):
            h_n[...] = both[:, :hidden]
            c_n[...] = both[:, hidden:]

    def _weights(self) -> tuple[Any, ...]:
        # What the units split packs a share of for each thread.
        return (self._w_ih, self._w_hh, self._b_ih, self._b_hh)

    # -- one step ----------------------------------------------------------

    def _step(self, x_t: Any, states: tuple[Any, ...], outs: tuple[Any, ...] | None
              ) -> tuple[np.ndarray, ...]:
        # One step from the state arrays (h,) or (h, c) into outs (None: new
        # arrays); returns the outs.
        kernel = self._step_kernel
        dtype = self.dtype
        h = states[0]
        if (kernel is not None and type(x_t) is _NDARRAY and type(h) is _NDARRAY
                and (h.ndim == 1 or h.shape[0] < self._split_from)
                and not (self._blas_step and h.size == self.hidden_size)):
            if outs is None:
                outs = tuple(_empty(h.shape, dtype) for _ in states)
            c = states[-1]
            try:
                if self._kernel_step(x_t, h, c, outs[0], outs[-1]):
                    return outs
            except TypeError:  # no signature matched: checked below
                pass
        return self._checked_step(x_t, states, outs)

    def _split_step(self, x: np.ndarray, states: list[np.ndarray],
                    targets: list[np.ndarray]) -> None:
        # A step of many samples (at least _split_from: PARALLEL_MIN_FMAS
        # multiply-adds) as a one-step call of the forward pass, on the
        # batch split's threads when its plan says so; checked arrays, 2-D.
        from . import _numba

        hidden = self.hidden_size
        if len(states) == 1:  # GRU: straight into out when it is C-contiguous
            h0 = states[0]
            h_n = targets[0] if targets[0].flags.c_contiguous else _empty(h0.shape, self.dtype)
        else:  # LSTM: the kernels' state [h | c]
            h0 = np.concatenate(states, axis=1)
            h_n = _empty(h0.shape, self.dtype)
        _numba.forward_cell(x[:, None, :], self._packed, self._cell, hidden, h0, None, h_n, True,
                            None, self.threads)
        if h_n is not targets[0]:
            targets[0][...] = h_n[:, :hidden]
            if len(targets) == 2:
                targets[1][...] = h_n[:, hidden:]

    def _kernel_step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray, out_h: np.ndarray,
                     out_c: np.ndarray) -> bool:
        # The compiled step: scratch on the stack, or, for a step too large
        # for it, on the heap (that kernel made on first use; 2-D arrays,
        # one sample's as views). False for shapes that do not fit the
        # layer; a TypeError for arrays no signature takes.
        if self._step_kernel(x, h, c, out_h, out_c, self._packed, self._cell):
            return True
        kernel = self._heap_kernel
        if kernel is None:
            from .kernels import step as step_kernels

            kernel = self._heap_kernel = step_kernels.gated_step_kernel(self.dtype, self._cell,
                                                                        True)
        if x.ndim == 1:
            x, h, c, out_h, out_c = x[None], h[None], c[None], out_h[None], out_c[None]
        return bool(kernel(x, h, c, out_h, out_c, self._packed, self._cell))

    def _checked_step(self, x_t: Any, states: tuple[Any, ...], outs: tuple[Any, ...] | None
                      ) -> tuple[np.ndarray, ...]:
        # Every check of a step, with its message; then the step itself.
        dtype = self.dtype
        names = ("h", "c")[:len(states)]
        x_arr = as_float_array("x_t", x_t)
        if x_arr.dtype != dtype:
            raise TypeError(f"x_t must have the layer's dtype {dtype}, got {x_arr.dtype}; "
                            f"convert it, e.g. x_t.astype(np.{dtype.name})")
        if x_arr.ndim not in (1, 2):
            raise ValueError(f"x_t must be (B, I), or (I,) for one sequence; got shape "
                             f"{x_arr.shape}")
        batch = x_arr.shape[:-1]
        if x_arr.shape[-1] != self.input_size:
            raise ValueError(f"x_t must have shape {batch + (self.input_size,)} (input_size = "
                             f"{self.input_size}), got {x_arr.shape}")
        expected = batch + (self.hidden_size,)
        what = f"(B, hidden_size) for x_t of shape {x_arr.shape}"
        state_arrs = tuple(_state_array(name, value, dtype, expected, what)
                           for name, value in zip(names, states, strict=True))
        if outs is None:
            outs = tuple(np.empty(expected, dtype) for _ in states)
        else:
            for name, value in zip(names, outs, strict=True):
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"out's {name} must be a NumPy array, got "
                                    f"{_describe(value)}")
                if value.shape != expected or value.dtype != dtype:
                    raise ValueError(f"out's {name} must have shape {expected} and dtype "
                                     f"{dtype}, got shape {value.shape} and dtype "
                                     f"{value.dtype}")
                if not value.flags.writeable:
                    raise ValueError(f"out's {name} must be writeable (shape {value.shape}, "
                                     f"read-only array given)")
        x2 = np.asarray(x_arr).reshape(-1, self.input_size)
        flat = [np.asarray(a).reshape(-1, self.hidden_size) for a in state_arrs]
        targets = [value.view(np.ndarray).reshape(-1, self.hidden_size) for value in outs]
        if self._packed is not None and x2.shape[0] >= self._split_from:
            self._split_step(x2, flat, targets)
            return outs
        if self._packed is not None and not (self._blas_step and x2.shape[0] == 1):
            if not self._kernel_step(x2, flat[0], flat[-1], targets[0], targets[-1]):
                raise AssertionError("gated step kernel refused checked shapes")  # pragma: no cover
            return outs
        from . import _numpy

        with np.errstate(invalid="ignore", over="ignore"):
            pre = x2 @ self._w_ih_t
            pre += self._bias
            h_new, c_new = _numpy.gated_cell(pre, flat[0] @ self._w_hh_t, flat[0],
                                             flat[1] if len(flat) == 2 else None, self._b_hn)
        targets[0][...] = h_new
        if c_new is not None:
            targets[1][...] = c_new
        return outs


class GRULayer(_GatedLayer):
    """One GRU layer with prepared weights (PyTorch's ``nn.GRU`` formula); made
    by :func:`prepare_gru`.

    ``layer(x, h0)`` runs whole sequences and returns ``(output, h_n)`` as
    ``torch.nn.GRU(batch_first=True)`` does; ``layer.step(x_t, h)`` runs one
    time step. Immutable: it may be called from many threads at once.

    Attributes
    ----------
    input_size, hidden_size : int
    dtype : numpy.dtype
    backend : {"numba", "numpy"}
    threads : int or None
    """

    _GATES = 3
    _NAMES = "r, z, n"
    __slots__ = ()

    def __call__(self, x: ArrayLike, h0: ArrayLike | None = None, *, batch_first: bool = True,
                 lengths: ArrayLike | None = None, return_sequences: bool = True,
                 out: np.ndarray | None = None) -> Any:
        """Run the layer over a batch of sequences.

        Parameters
        ----------
        x : array, shape (B, T, I) if ``batch_first``, (T, B, I) if not, or (T, I)
        h0 : array, shape (B, H), or (H,) for unbatched x, optional
            Initial state; zeros when None. Feeding a sequence in chunks,
            each chunk's ``h_n`` as the next ``h0``, gives the one-call result.
        batch_first, lengths, return_sequences, out
            As for :func:`fastrnn.forward` (a sequence shorter than T keeps
            its state past its length, where its output is zeros).

        Returns
        -------
        output : ndarray, shape (B, T, H), (T, B, H) or (T, H), like x
        h_n : ndarray, shape (B, H), or (H,) for unbatched x
            ``h_n`` alone when ``return_sequences`` is False.
        """
        dtype = self.dtype
        if (type(x) is _NDARRAY and x.dtype is dtype and batch_first is True and lengths is None
                and return_sequences is True and out is None
                and (h0 is None or (type(h0) is _NDARRAY and h0.dtype is dtype))):
            done = self._direct_call(x, h0)
            if done is not None:
                return done
        output, h_n, _ = self._run(x, h0, None, batch_first, lengths, return_sequences, out)
        return (output, h_n) if return_sequences else h_n

    def step(self, x_t: ArrayLike, h: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """One time step: the state after input ``x_t`` from state ``h``.

        ``x_t`` (B, I) or (I,); ``h`` (B, H) or (H,); ``out``: a writeable
        array of h's shape and the layer's dtype that receives the new state
        (it may be ``h`` itself: updated in place, nothing allocated).
        Stepping a sequence gives the states of a whole call on it. Wrong
        shapes or dtypes raise ``ValueError``/``TypeError`` with nothing
        modified.
        """
        return self._step(x_t, (h,), None if out is None else (out,))[0]


class LSTMLayer(_GatedLayer):
    """One LSTM layer with prepared weights (PyTorch's ``nn.LSTM`` formula,
    no projection); made by :func:`prepare_lstm`.

    ``layer(x, (h0, c0))`` runs whole sequences and returns
    ``(output, (h_n, c_n))`` as ``torch.nn.LSTM(batch_first=True)`` does;
    ``layer.step(x_t, (h, c))`` runs one time step. Immutable: it may be
    called from many threads at once.

    Attributes
    ----------
    input_size, hidden_size : int
    dtype : numpy.dtype
    backend : {"numba", "numpy"}
    threads : int or None
    """

    _GATES = 4
    _NAMES = "i, f, g, o"
    __slots__ = ()

    @staticmethod
    def _pair(name: str, value: Any) -> tuple[Any, Any]:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} must be a pair (h, c) of arrays, got {_describe(value)}")
        return value[0], value[1]

    def __call__(self, x: ArrayLike, state: tuple[ArrayLike | None, ArrayLike | None] | None
                 = None, *, batch_first: bool = True, lengths: ArrayLike | None = None,
                 return_sequences: bool = True, out: np.ndarray | None = None) -> Any:
        """Run the layer over a batch of sequences.

        Parameters
        ----------
        x : array, shape (B, T, I) if ``batch_first``, (T, B, I) if not, or (T, I)
        state : pair (h0, c0) of arrays, shape (B, H) or (H,) for unbatched x, optional
            Initial hidden and cell states; zeros when None (either may be None).
        batch_first, lengths, return_sequences, out
            As for :func:`fastrnn.forward`.

        Returns
        -------
        output : ndarray, shape (B, T, H), (T, B, H) or (T, H), like x
        (h_n, c_n) : pair of ndarrays, shape (B, H), or (H,) for unbatched x
            ``(h_n, c_n)`` alone when ``return_sequences`` is False.
        """
        h0, c0 = (None, None) if state is None else self._pair("state", state)
        dtype = self.dtype
        if (type(x) is _NDARRAY and x.dtype is dtype and batch_first is True and lengths is None
                and return_sequences is True and out is None
                and (h0 is None or (type(h0) is _NDARRAY and h0.dtype is dtype))
                and (c0 is None or (type(c0) is _NDARRAY and c0.dtype is dtype))):
            # The kernels' state is [h | c], (B, 2H).
            start = None
            if h0 is not None or c0 is not None:
                hidden = self.hidden_size
                pair = (x.shape[0], hidden) if x.ndim == 3 else None
                if pair is None or (h0 is not None and h0.shape != pair) or (
                        c0 is not None and c0.shape != pair):
                    # (the general path's checks and errors)
                    return self._call(x, h0, c0, batch_first, lengths, return_sequences, out)
                start = np.zeros((x.shape[0], 2 * hidden), dtype)
                if h0 is not None:
                    start[:, :hidden] = h0
                if c0 is not None:
                    start[:, hidden:] = c0
            done = self._direct_call(x, start)
            if done is not None:
                output, both = done
                hidden = self.hidden_size
                return output, (both[:, :hidden].copy(), both[:, hidden:].copy())
        return self._call(x, h0, c0, batch_first, lengths, return_sequences, out)

    def _call(self, x: Any, h0: Any, c0: Any, batch_first: Any, lengths: Any,
              return_sequences: Any, out: Any) -> Any:
        output, h_n, c_n = self._run(x, h0, c0, batch_first, lengths, return_sequences, out)
        return (output, (h_n, c_n)) if return_sequences else (h_n, c_n)

    def step(self, x_t: ArrayLike, state: tuple[ArrayLike, ArrayLike],
             out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One time step: ``(h', c')`` after input ``x_t`` from ``state = (h, c)``.

        ``x_t`` (B, I) or (I,); h and c (B, H) or (H,); ``out``: a pair of
        writeable arrays of h's shape and the layer's dtype that receive the
        new states (they may be h and c themselves: updated in place,
        nothing allocated). Wrong shapes or dtypes raise
        ``ValueError``/``TypeError`` with nothing modified.
        """
        h, c = self._pair("state", state)
        outs = None if out is None else self._pair("out", out)
        h_new, c_new = self._step(x_t, (h, c), outs)
        return h_new, c_new


def prepare_gru(w_ih: ArrayLike, w_hh: ArrayLike, b_ih: ArrayLike | None = None,
                b_hh: ArrayLike | None = None, *, threads: int | None = None,
                backend: str = "auto") -> GRULayer:
    """Prepare a GRU layer once, to run it many times.

    PyTorch's ``nn.GRU`` formula, gates r, z, n::

        r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
        z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
        n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
        h' = (1 - z) * n + z * h

    Validates and copies the weights (later changes to the caller's arrays do
    not affect the layer) and packs them as the kernels read them.

    Parameters
    ----------
    w_ih : array, shape (3H, I)
        PyTorch's ``weight_ih_l0``: W_ir, W_iz, W_in stacked.
    w_hh : array, shape (3H, H)
        PyTorch's ``weight_hh_l0`` (dense).
    b_ih, b_hh : array, shape (3H,), optional
        ``bias_ih_l0``, ``bias_hh_l0``; None means none.
    threads : int, optional
        The most threads a call uses (None: ``FASTRNN_NUM_THREADS``, else
        every core this process may use).
    backend : {"auto", "numba", "numpy"}

    Every array must share one dtype, float32 or float64: the layer's dtype,
    which its inputs must have too.

    Examples
    --------
    >>> import numpy as np
    >>> import fastrnn
    >>> rng = np.random.default_rng(0)
    >>> w_ih = rng.standard_normal((3 * 8, 4), dtype=np.float32) * np.float32(0.3)
    >>> w_hh = rng.standard_normal((3 * 8, 8), dtype=np.float32) * np.float32(0.3)
    >>> gru = fastrnn.prepare_gru(w_ih, w_hh)
    >>> x = rng.standard_normal((5, 4), dtype=np.float32)  # (T, I): one sequence
    >>> h = np.zeros(8, np.float32)
    >>> for x_t in x:
    ...     h = gru.step(x_t, h, out=h)  # in place
    >>> output, h_n = gru(x)
    >>> bool(np.allclose(h, h_n, atol=1e-6))
    True
    """
    return GRULayer(w_ih, w_hh, b_ih, b_hh, threads=threads, backend=backend)


def prepare_lstm(w_ih: ArrayLike, w_hh: ArrayLike, b_ih: ArrayLike | None = None,
                 b_hh: ArrayLike | None = None, *, threads: int | None = None,
                 backend: str = "auto") -> LSTMLayer:
    """Prepare an LSTM layer once, to run it many times.

    PyTorch's ``nn.LSTM`` formula (no projection), gates i, f, g, o::

        i, f, o = sigmoid(x W_i*^T + b_i* + h W_h*^T + b_h*)
        g = tanh(x W_ig^T + b_ig + h W_hg^T + b_hg)
        c' = f * c + i * g,  h' = o * tanh(c')

    Validates and copies the weights (later changes to the caller's arrays do
    not affect the layer) and packs them as the kernels read them.

    Parameters
    ----------
    w_ih : array, shape (4H, I)
        PyTorch's ``weight_ih_l0``: W_ii, W_if, W_ig, W_io stacked.
    w_hh : array, shape (4H, H)
        PyTorch's ``weight_hh_l0`` (dense).
    b_ih, b_hh : array, shape (4H,), optional
        ``bias_ih_l0``, ``bias_hh_l0``; None means none.
    threads, backend
        As for :func:`prepare_gru`.

    Examples
    --------
    >>> import numpy as np
    >>> import fastrnn
    >>> rng = np.random.default_rng(0)
    >>> w_ih = rng.standard_normal((4 * 8, 4), dtype=np.float32) * np.float32(0.3)
    >>> w_hh = rng.standard_normal((4 * 8, 8), dtype=np.float32) * np.float32(0.3)
    >>> lstm = fastrnn.prepare_lstm(w_ih, w_hh)
    >>> x = rng.standard_normal((5, 4), dtype=np.float32)
    >>> h, c = np.zeros(8, np.float32), np.zeros(8, np.float32)
    >>> for x_t in x:
    ...     h, c = lstm.step(x_t, (h, c), out=(h, c))  # in place
    >>> output, (h_n, c_n) = lstm(x)
    >>> bool(np.allclose(h, h_n, atol=1e-6) and np.allclose(c, c_n, atol=1e-6))
    True
    """
    return LSTMLayer(w_ih, w_hh, b_ih, b_hh, threads=threads, backend=backend)
