"""``fastrnn.prepare`` and ``fastrnn.Layer``: an Elman RNN layer whose weights
are validated, copied and packed once, then run many times, a whole sequence,
a chunk of one, or one time step at a time."""

from __future__ import annotations

import functools
import math
import sys
import threading
import time
import weakref
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._api import finish_call
from ._backends import auto_backend_name, get_backend
from ._plan import (
    CREW_BLOCK_SECONDS,
    CREW_CHUNK_MAX_VALUES,
    CREW_MIN_BYTES,
    CREW_MIN_BYTES_ONE,
    FORKS,
    STEP_BLAS_MIN_HIDDEN,
    CrewVerdict,
)
from ._validate import (
    NONLINEARITIES,
    _describe,
    as_float_array,
    check_threads,
    validate_call,
    validate_forward,
)

_NDARRAY = np.ndarray
_empty = np.empty
_NEVER = sys.maxsize  # a size no step reaches
_clock = time.perf_counter  # (tests replace it)


class Layer:
    """One Elman RNN layer with prepared weights; made by :func:`prepare`.

    Calling it runs whole sequences, exactly as :func:`fastrnn.forward` with
    the weights and options given to :func:`prepare`; :meth:`step` runs one
    time step. Everything that depends only on the weights (validation,
    copies, the packed layout the kernels read, the fused bias) was done
    once, so a call pays only for its own data.

    A layer is immutable and may be called from many threads at once: each
    call gets what it would get alone.

    Attributes
    ----------
    input_size, hidden_size : int
        I and H.
    dtype : numpy.dtype
        float32 or float64: of the weights, and of every input and result.
    nonlinearity : {"tanh", "relu"}
    backend : {"numba", "numpy"}
        The backend the layer runs on ("auto" resolved when prepared).
    threads : int or None
        The most threads a call uses (None: fastrnn.forward's default).
    """

    __slots__ = ("input_size", "hidden_size", "dtype", "nonlinearity", "backend", "threads",
                 "_w_ih", "_w_hh", "_bias", "_leak", "_relu", "_compute", "_prepared",
                 "_step_fast", "_wide", "_crew_size", "_crew", "_crew_parts", "_crew_lock",
                 "_crew_verdicts", "_direct", "_packed", "_leaky", "_step_kernel",
                 "_step_args", "_numpy_step", "_numpy_weights", "_scratch", "_solo_size",
                 "_solo_until", "_small")

    def __init__(self, w_ih: ArrayLike, w_hh: Any, b_ih: ArrayLike | None = None,
                 b_hh: ArrayLike | None = None, *, nonlinearity: str = "tanh",
                 leak: ArrayLike | None = None, threads: int | None = None,
                 backend: str = "auto") -> None:
        if threads is not None:
            threads = check_threads(threads)
        # The checks of fastrnn.forward, on a stand-in x of one step: the
        # same messages for the same mistakes.
        probe_w_ih = as_float_array("w_ih", w_ih)
        if probe_w_ih.ndim != 2:
            raise ValueError(f"w_ih must be 2-D (hidden_size, input_size), got shape "
                             f"{probe_w_ih.shape}")
        # The weights' dtypes, named without the stand-in x below.
        given = {"w_ih": probe_w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
        dtypes = {name: np.dtype(value.dtype) for name, value in given.items()
                  if value is not None and hasattr(value, "dtype")}
        if len(set(dtypes.values())) > 1:
            listing = ", ".join(f"{name}={dtype}" for name, dtype in dtypes.items())
            raise TypeError(f"the weights must share one dtype (float32 or float64), got "
                            f"{listing}; cast them to one dtype, e.g. .astype(np.float32)")
        stand_in = np.zeros((1, 1, probe_w_ih.shape[1]), probe_w_ih.dtype)
        (_, w_ih_arr, w_hh_arr, b_ih_arr, b_hh_arr, _, _, relu, _, _, _, _, hidden, _,
         leak_arr) = validate_forward(stand_in, probe_w_ih, w_hh, b_ih, b_hh, None,
                                      nonlinearity, True, None, None, leak, True, threads)
        compute = get_backend(backend)
        name = auto_backend_name() if backend == "auto" else backend
        dtype = w_ih_arr.dtype
        self.input_size = int(w_ih_arr.shape[1])
        self.hidden_size = int(hidden)
        self.dtype = dtype
        self.nonlinearity = NONLINEARITIES[1] if relu else NONLINEARITIES[0]
        self.backend = name
        self.threads = threads
        # Copies: later changes to the caller's arrays do not reach the layer.
        self._w_ih = np.array(w_ih_arr, order="C", copy=True)
        if isinstance(w_hh_arr, np.ndarray):
            self._w_hh: Any = np.array(w_hh_arr, order="C", copy=True)
        else:
            self._w_hh = w_hh_arr.copy() if w_hh_arr is w_hh else w_hh_arr
        bias = np.zeros(hidden, dtype)
        for b in (b_ih_arr, b_hh_arr):
            if b is not None:
                bias += b  # summed in the dtype, as the kernels sum them
        self._bias = bias
        self._leak = leak_arr
        self._relu = relu
        self._leaky = leak_arr is not None
        self._compute = compute
        self._prepared: Any = None
        # A step runs one of: the dense step kernel (fastrnn.kernels.step:
        # four arrays, no allocation), the general step kernel (a sparse
        # w_hh, a wide dense one, or a dense step too large for the first
        # one's stack), NumPy's step (the NumPy backend; one sample of a wide
        # dense state), or, from _crew_size values of h (B x H), the layer's
        # crew of threads (fastrnn._crew; see _run_step).
        self._step_fast: Any = None
        self._wide = False
        self._crew_size = _NEVER
        self._crew: list[Any] = [None]  # (a list: the finalizer holds it, not the layer)
        self._crew_parts = 1
        self._crew_lock = threading.Lock()
        self._crew_verdicts: dict[Any, CrewVerdict] = {}
        # A step of _solo_size values of h goes straight to _step_fast until
        # _solo_until (its crew's verdict chose one thread then: see _timed).
        self._solo_size = -1
        self._solo_until = -math.inf
        # (B, T, I) -> the compiled call of a plain call of that shape, or
        # False (see _direct_for).
        self._direct: dict[tuple[int, ...], Any] = {}
        self._packed: Any = None
        self._small: Any = None  # (the small path's direct call, made when first needed)
        self._step_kernel: Any = None
        self._step_args: tuple[Any, ...] = ()
        self._numpy_step: Any = None
        self._numpy_weights: tuple[Any, ...] = ()
        self._scratch: list[tuple[np.ndarray, np.ndarray]] = []
        if name == "numba":
            from . import _numba
            from .kernels import step as step_kernels

            prepared = self._prepared = _numba.Prepared(self._w_ih, self._w_hh, bias, leak_arr)
            self._packed = prepared.packed
            if prepared.sparse is not None:
                self._step_kernel = step_kernels.general_step_kernel(dtype, True)
            elif hidden < STEP_BLAS_MIN_HIDDEN:
                self._step_fast = step_kernels.step_kernel(dtype, relu)
            else:
                # A wide dense state: its steps are routed by batch size
                # (see _run_step).
                self._wide = True
                self._step_kernel = step_kernels.general_step_kernel(dtype, False)
            self._step_args = (prepared.packed, prepared.sparse, relu)
            limit = _numba.default_threads() if threads is None else threads
            parts = min(limit, _numba._CORES)
            if parts > 1 and prepared.sparse is None:
                # Steps from this size of h on may run on the crew (see
                # _plan.CREW_MIN_BYTES).
                sample = hidden * (hidden + self.input_size) * dtype.itemsize
                batch = 1 if sample >= CREW_MIN_BYTES_ONE else max(2, -(-CREW_MIN_BYTES // sample))
                self._crew_size = batch * hidden
                self._crew_parts = parts
                weakref.finalize(prepared, _stop_crew, self._crew)
        if self._step_fast is None and (self._step_kernel is None or self._wide):
            # The NumPy backend, or a wide dense state whose one-sample
            # steps run NumPy's product (see _plan.STEP_BLAS_MIN_HIDDEN).
            from . import _numpy

            self._numpy_step = _numpy.step
            # w_ih.T and a dense w_hh.T made contiguous once, as NumPy's step
            # reads them (see fastrnn._numpy.step).
            self._numpy_weights = (np.ascontiguousarray(self._w_ih.T),
                                   np.ascontiguousarray(self._w_hh.T)
                                   if isinstance(self._w_hh, np.ndarray) else self._w_hh)

    def __repr__(self) -> str:
        sparse = "" if isinstance(self._w_hh, np.ndarray) else ", sparse w_hh"
        leak = "" if self._leak is None else ", leak"
        return (f"Layer(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"dtype={self.dtype.name}, nonlinearity={self.nonlinearity!r}{leak}{sparse}, "
                f"backend={self.backend!r})")

    def __call__(self, x: ArrayLike, h0: ArrayLike | None = None, *, batch_first: bool = True,
                 lengths: ArrayLike | None = None, return_sequences: bool = True,
                 out: np.ndarray | None = None) -> Any:
        """Run the layer over a batch of sequences: what :func:`fastrnn.forward`
        returns for the same arguments and the weights and options of
        :func:`prepare`.

        Parameters
        ----------
        x : array, shape (B, T, I) if ``batch_first``, (T, B, I) if not, or (T, I)
            Of the layer's dtype.
        h0 : array, shape (B, H), or (H,) for unbatched x, optional
            Initial state; zeros when None. Feeding a sequence in chunks, each
            chunk's ``h_n`` as the next ``h0``, gives the one-call result.
        batch_first, lengths, return_sequences, out
            As for :func:`fastrnn.forward`.

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
            # The call of a stream fed in chunks, checked in a few
            # comparisons (validate_call took a tenth of a 100-step chunk's
            # call at H = 64); anything else is validated in full below. A
            # shape called before has its entry (see _direct_for).
            shape = x.shape
            entry = self._direct.get(shape)
            if entry is None:
                hidden = self.hidden_size
                if len(shape) == 3 and shape[2] == self.input_size:
                    entry = self._direct_for(shape)
                elif len(shape) == 2 and shape[1] == self.input_size and (
                        h0 is None or h0.shape == (hidden,)):
                    output = _empty((1, shape[0], hidden), dtype)
                    h_n = _empty((1, hidden), dtype)
                    self._compute(x[None], self._w_ih, self._w_hh, self._bias, None,
                                  None if h0 is None else h0[None], output, h_n, self._relu,
                                  True, None, self._leak, False, self.threads,
                                  prepared=self._prepared)
                    return output[0], h_n[0]
            if entry is not None and (h0 is None or h0.shape == entry[6]):
                kernel, packed, sparse, cell, chunk, output_shape, state_shape, call = entry
                output = _empty(output_shape, dtype)
                h_n = _empty(state_shape, dtype)
                if call is None:
                    self._compute(x, self._w_ih, self._w_hh, self._bias, None, h0, output, h_n,
                                  self._relu, True, None, self._leak, False, self.threads,
                                  prepared=self._prepared)
                    return output, h_n
                if h0 is None:
                    h_n.fill(0)  # (the kernel reads h0 before it writes h_n)
                    h0 = h_n
                if kernel is None:
                    call(x, h0, output, h_n)
                # A fastrnn._numba.DirectCall's call, without its Python
                # frame, or the small path's (fastrnn._numba.direct_small).
                # False: the kernel declined (the small path's scratch
                # would not fit its stack: a long input row).
                elif (kernel(x, packed, sparse, cell, h0, output, h_n, chunk) if chunk is not None
                      else kernel(x, packed, h0, output, h_n, cell)) is False:
                    self._compute(x, self._w_ih, self._w_hh, self._bias, None, h0, output, h_n,
                                  self._relu, True, None, self._leak, False, self.threads,
                                  prepared=self._prepared)
                return output, h_n
        weights = {"w_ih": self._w_ih,
                   "w_hh": self._w_hh if isinstance(self._w_hh, np.ndarray) else self._w_hh.data,
                   "bias": self._bias}
        (x_arr, h0_arr, out_arr, batch_first_, unbatched, output_shape, batch, lengths_arr,
         return_sequences) = validate_call(x, h0, self.input_size, self.hidden_size, self.dtype,
                                           batch_first, out, lengths, return_sequences,
                                           weights)
        return finish_call(self._compute, x_arr, self._w_ih, self._w_hh, self._bias, None,
                           h0_arr, out, out_arr, self._relu, batch_first_, unbatched,
                           output_shape, batch, self.hidden_size, lengths_arr, self._leak,
                           return_sequences, self.threads, self._prepared)

    def _direct_for(self, shape: tuple[int, ...]) -> tuple[Any, ...]:
        # The entry of a plain call of x's shape (B, T, I), kept for the
        # next calls of the shape (a stream's chunks): (a DirectCall's
        # fields (kernel, packed, sparse, cell, chunk), the output's shape,
        # h_n's, the call), one flat tuple (its fields are read in one
        # unpacking). The call: when the shape's plan is one thread without
        # windows, a fastrnn._numba.DirectCall (on the small path, the
        # fields of fastrnn._numba.direct_small); the layer's crew, for a
        # units split of a call too short for windows (the crew's hand-off
        # is cheaper, see _crew_chunk); else None (the backend's full
        # call). The kernel's fields are None unless the call is direct.
        batch, steps = shape[0], shape[1]
        direct: Any = None
        fields: tuple = (None,) * 5
        if self._prepared is not None:
            from . import _numba
            from ._plan import BLOCKED, SMALL, UNITS_SPLIT

            nonzeros = None if isinstance(self._w_hh, np.ndarray) else int(self._w_hh.nnz)
            itemsize = self.dtype.itemsize
            plan, windowed = _numba.call_plan(batch, steps, self.input_size, self.hidden_size,
                                              nonzeros, self._leaky, self.threads, itemsize)
            # On the crew: a units split of a call too short for windows, whose
            # one-thread way (when the crew is slower) is a direct call.
            crew = (plan.path == UNITS_SPLIT and self._crew_size != _NEVER
                    and batch * steps * self.hidden_size <= CREW_CHUNK_MAX_VALUES)
            if crew:
                plan, _ = _numba.call_plan(batch, steps, self.input_size, self.hidden_size,
                                           nonzeros, self._leaky, 1, itemsize)
            if plan.path == SMALL and batch * steps > 0:
                if self._small is None:
                    self._small = _numba.direct_small(self._w_ih, self._w_hh, self._bias,
                                                      self._relu)
                direct = fields = self._small
            elif not windowed and batch * steps > 0 and plan.path == BLOCKED:
                direct = _numba.direct_call(self._prepared, batch, steps, self.input_size,
                                            self.hidden_size, self._relu, self._leaky,
                                            self._bias)
                if crew:
                    direct = functools.partial(self._crew_chunk, direct)
                else:
                    fields = direct
        if len(self._direct) >= 16:
            self._direct.clear()
        entry = (*fields, (batch, steps, self.hidden_size), (batch, self.hidden_size), direct)
        self._direct[shape] = entry
        return entry

    def _crew_chunk(self, one: Any, x: np.ndarray, h0: np.ndarray, output: np.ndarray,
                    h_n: np.ndarray) -> None:
        # A plain call on the layer's crew (fastrnn._crew.Crew.run_chunk), or
        # through `one` (the call's one-thread kernel) when one thread was
        # timed faster for this shape or another thread holds the crew.
        batch, steps = x.shape[0], x.shape[1]
        crew = self._crew_for(batch, steps)
        if crew is None:
            one(x, h0, output, h_n)
            return
        fmas = batch * steps * self.hidden_size * (self.hidden_size + self.input_size)
        if not self._timed((batch, steps), fmas, crew.run_chunk, one, x, h0, output, h_n):
            one(x, h0, output, h_n)

    def run(self, x: np.ndarray, h0: np.ndarray | None, out: np.ndarray | None,
            h_n: np.ndarray, *, batch_first: bool, lengths: np.ndarray | None = None,
            reverse: bool = False, threads: int | None = None, col: int = 0) -> None:
        """One direction of a layer on arguments its caller validated
        (fastrnn.RNN): the backend contract of ``fastrnn._numpy.forward``
        (``out`` None or a view whose last axis has unit stride, such as one
        direction's half of a bidirectional output), on the prepared
        weights; ``threads`` None means the layer's own; ``col``: the output
        goes to columns col..col + H of ``out`` (out the whole bidirectional
        output, C-contiguous, and col 0 or H: the Numba kernels write the
        direction's half in place. Given the half itself, a view that is not
        C-contiguous, they compute into a buffer that is then copied in:
        float64 (64, 200, 128, 128) bidirectional took 10% longer than the
        release before, 12a0eb6)."""
        threads = self.threads if threads is None else threads
        if self._prepared is not None:  # the Numba backend
            self._compute(x, self._w_ih, self._w_hh, self._bias, None, h0, out, h_n,
                          self._relu, batch_first, lengths, self._leak, reverse, threads,
                          prepared=self._prepared, col=col)
            return
        if out is not None and out.shape[-1] != self.hidden_size:
            out = out[..., col:col + self.hidden_size]
        self._compute(x, self._w_ih, self._w_hh, self._bias, None, h0, out, h_n, self._relu,
                      batch_first, lengths, self._leak, reverse, threads, prepared=None)

    def step(self, x_t: ArrayLike, h: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """One time step: the state after input ``x_t`` from state ``h``.

        The call a per-step loop makes (online inference, control, stepping
        while the input arrives): for NumPy arrays of the layer's dtype it is
        a few type checks and one compiled call, with the shapes compared in
        compiled code, and it allocates nothing when ``out`` is given.

        Parameters
        ----------
        x_t : array, shape (B, I), or (I,) for one sequence
        h : array, shape (B, H), or (H,) for one sequence
            The current state (zeros to start).
        out : ndarray, shape of ``h``, optional
            Writeable array of the layer's dtype that receives the new state
            and is returned; it may be ``h`` itself (updated in place).

        Returns
        -------
        ndarray, shape of ``h``
            The new state: ``act(x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh)``
            (with a leak, ``(1 - leak) * h + leak * act(...)``). Stepping a
            sequence gives the states of :meth:`__call__` on it.

        Raises
        ------
        TypeError
            When an array is not of the layer's dtype.
        ValueError
            When the shapes disagree with the layer or each other, or ``out``
            is not writeable. Nothing is modified then.
        """
        fast = self._step_fast
        if fast is not None and (type(h) is not _NDARRAY or h.size < self._crew_size
                                 or (h.size == self._solo_size and _clock() < self._solo_until)):
            # The kernel compares the shapes; anything it cannot take (not
            # arrays of the layer's dtype, a read-only out: TypeError, no
            # signature matches; wrong shapes: False) is checked below.
            target: Any = out
            if target is None and type(h) is _NDARRAY:
                target = _empty(h.shape, self.dtype)
            try:
                if fast(x_t, h, target, self._packed):
                    return target
            except TypeError:
                pass
            return self._checked_step(x_t, h, out)
        dtype = self.dtype
        kernel = self._step_kernel
        given = out
        if (kernel is not None and not self._wide and type(x_t) is _NDARRAY
                and type(h) is _NDARRAY and x_t.dtype is dtype and h.dtype is dtype):
            if out is None:
                out = _empty(h.shape, dtype)
            if type(out) is _NDARRAY and out.dtype is dtype:
                ndim = x_t.ndim
                try:
                    if ndim == 2 and h.ndim == 2 and out.ndim == 2:
                        if kernel(x_t, h, out, *self._step_args):
                            return out
                    elif ndim == 1 and h.ndim == 1 and out.ndim == 1:
                        if kernel(x_t[None], h[None], out[None], *self._step_args):
                            return out
                except TypeError:  # no signature matched, e.g. a read-only out
                    pass
        elif ((kernel is None or self._wide or self._crew_size != _NEVER)
              and type(x_t) is _NDARRAY and type(h) is _NDARRAY
              and (out is None or type(out) is _NDARRAY) and x_t.dtype is dtype
              and h.dtype is dtype and 0 < x_t.ndim == h.ndim < 3
              and x_t.shape[-1] == self.input_size and h.shape[-1] == self.hidden_size
              and x_t.shape[:-1] == h.shape[:-1]
              and (out is None or (out.shape == h.shape and out.dtype is dtype
                                   and out.flags.writeable))):
            # The NumPy backend, a wide dense state or a step for the crew:
            # the same few checks, then the step (see _run_step).
            if out is None:
                out = _empty(h.shape, dtype)
            if x_t.ndim == 2:
                self._run_step(x_t, h, out)
            else:
                self._run_step(x_t[None], h[None], out[None])
            return out
        return self._checked_step(x_t, h, given)

    def _run_step(self, x: np.ndarray, h: np.ndarray, out: np.ndarray) -> None:
        # One step of checked (B, I), (B, H) and (B, H) arrays of the
        # layer's dtype (out writeable), the way its size runs fastest
        # (measured: _plan.CREW_MIN_BYTES, _plan.STEP_BLAS_MIN_HIDDEN).
        if x.shape[0] * self.hidden_size >= self._crew_size and self._crew_step(x, h, out):
            return
        self._one_thread_step(x, h, out)

    def _crew_step(self, x: np.ndarray, h: np.ndarray, out: np.ndarray) -> bool:
        # The step on the layer's crew, or on this thread when one thread
        # has been timed faster for this batch (the crew's helpers
        # descheduled by a busy machine, or sharing a core); False, with
        # nothing done, when another thread holds the crew.
        batch = x.shape[0]
        crew = self._crew_for(batch, 0)
        if crew is None:
            return False
        fmas = batch * self.hidden_size * (self.hidden_size + self.input_size)
        return self._timed(batch, fmas, crew.step, self._one_thread_step, x, h, out)

    def _timed(self, key: Any, fmas: int, on_crew: Any, on_one: Any, *args: Any) -> bool:
        # on_crew(*args) (False: nothing done) or on_one(*args), the way the
        # crew's verdict of this key (a step's batch, a chunk's shape) says,
        # timed (fastrnn._plan.CrewVerdict); False when on_crew was chosen
        # and declined.
        verdict = self._crew_verdicts.get(key)
        if verdict is None:
            if len(self._crew_verdicts) >= 64:
                self._crew_verdicts.clear()
            verdict = self._crew_verdicts[key] = CrewVerdict()
        start = _clock()
        if verdict.comparing is None and start - verdict.when <= verdict.revise:
            # Decided (CrewVerdict.way and .record, inlined: a step is a
            # few microseconds).
            if verdict.split:
                if not on_crew(*args):
                    return False
            else:
                on_one(*args)
            verdict.fmas += fmas
            verdict.seconds += _clock() - start
            if verdict.seconds >= CREW_BLOCK_SECONDS:
                verdict.window_done()
            return True
        crew_way = verdict.way(start)
        if crew_way:
            if not on_crew(*args):
                return False
        else:
            on_one(*args)
        end = _clock()
        verdict.record(crew_way, fmas, end - start, end)
        if type(key) is int and verdict.comparing is None:
            # A step's batch decided: while one thread holds, its steps skip
            # the crew's routing (1-2.5 us of a 14 us step, float32 B = 1,
            # H = 512, on a busy machine), and with it the timing of its
            # windows for a slowdown.
            if verdict.split:
                self._solo_size = -1
            else:
                self._solo_size = key * self.hidden_size
                self._solo_until = verdict.when + verdict.revise
        return True

    def _crew_for(self, batch: int, steps: int) -> Any:
        # The layer's crew with room for `batch` samples and chunks of
        # `steps` (a new one if it has none, or too little room, or it was
        # made before a fork); None while another thread makes or holds it.
        crew = self._crew[0]
        if (crew is None or crew.capacity < batch or crew.steps_capacity < steps
                or crew.generation != FORKS[0]):
            crew = self._new_crew(batch, steps)
        return crew

    def _new_crew(self, batch: int, steps: int) -> Any:
        # A crew for at least `batch` samples and chunks of `steps` in place
        # of the layer's last one (stopped); None while another thread makes
        # or holds one.
        if not self._crew_lock.acquire(blocking=False):
            return None
        try:
            from . import _crew
            from .kernels.cells import elman

            old = self._crew[0]
            capacity = batch
            if old is not None and old.generation == FORKS[0]:
                capacity = max(batch, 2 * old.capacity if batch > old.capacity else old.capacity)
                steps = max(steps, old.steps_capacity)
                if not old.stop():
                    return None  # running a step on another thread
            crew = _crew.Crew(self._w_ih, self._w_hh, self._bias, self._leak,
                              elman(self._relu, self._leaky), self._crew_parts, capacity, steps)
            self._crew[0] = crew
            return crew
        finally:
            self._crew_lock.release()

    def _one_thread_step(self, x: np.ndarray, h: np.ndarray, out: np.ndarray) -> None:
        # The step on this thread.
        batch = x.shape[0]
        if self._step_fast is not None and self._step_fast(x, h, out, self._packed):
            pass
        elif self._step_kernel is not None and (batch > 1 or not self._wide
                                                or self._crew_size <= self.hidden_size):
            # (One sample of a wide state runs NumPy's product, unless the
            # layer has a crew: the crew's one-thread way is one thread.)
            if not self._step_kernel(x, h, out, *self._step_args):
                raise AssertionError("step kernel refused checked shapes")  # pragma: no cover
        elif self._numpy_step is not None:
            # NumPy's step, its products into a pair of buffers taken from
            # the layer's pool (one pair per concurrent caller; list.pop and
            # append are atomic).
            dtype = self.dtype
            try:
                scratch = self._scratch.pop()
            except IndexError:
                scratch = None
            if scratch is None or scratch[0].shape != h.shape:
                scratch = (_empty(h.shape, dtype), _empty(h.shape, dtype))
            self._numpy_step(x, h, out, *self._numpy_weights, self._bias, self._leak,
                             self._relu, scratch)
            self._scratch.append(scratch)
        else:
            # A dense state the stack kernel cannot hold, below the threads'
            # threshold: the general kernel (made on first use).
            from .kernels import step as step_kernels

            self._step_kernel = step_kernels.general_step_kernel(self.dtype, False)
            self._one_thread_step(x, h, out)

    def _checked_step(self, x_t: Any, h: Any, out: Any) -> np.ndarray:
        # Every check of a step, with its message; then the step itself.
        dtype = self.dtype
        x_arr = as_float_array("x_t", x_t)
        h_arr = as_float_array("h", h)
        if x_arr.dtype != dtype or h_arr.dtype != dtype:
            raise TypeError(f"x_t and h must have the layer's dtype {dtype}, got "
                            f"x_t={x_arr.dtype}, h={h_arr.dtype}; convert them, e.g. "
                            f"h.astype(np.{dtype.name})")
        if x_arr.ndim not in (1, 2) or h_arr.ndim != x_arr.ndim:
            raise ValueError(f"x_t and h must be (B, I) and (B, H), or (I,) and (H,) for one "
                             f"sequence; got shapes {x_arr.shape} and {h_arr.shape}")
        batch = () if x_arr.ndim == 1 else x_arr.shape[:1]
        expected_x = batch + (self.input_size,)
        expected_h = batch + (self.hidden_size,)
        if x_arr.shape != expected_x:
            raise ValueError(f"x_t must have shape {expected_x} (input_size = "
                             f"{self.input_size}), got {x_arr.shape}")
        if h_arr.shape != expected_h:
            raise ValueError(f"h must have shape {expected_h} (hidden_size = "
                             f"{self.hidden_size}) to match x_t of shape {x_arr.shape}, "
                             f"got {h_arr.shape}")
        if out is None:
            out = np.empty(expected_h, dtype)
        elif not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a NumPy array, got {_describe(out)}")
        elif out.shape != expected_h or out.dtype != dtype:
            raise ValueError(f"out must have shape {expected_h} and dtype {dtype} (h's), got "
                             f"shape {out.shape} and dtype {out.dtype}")
        elif not out.flags.writeable:
            raise ValueError(f"out must be writeable (shape {out.shape}, read-only array given)")
        # Plain 2-D arrays (ndarray subclasses as their plain views).
        x2, h2, out2 = (np.asarray(a).reshape(-1, a.shape[-1])
                        for a in (x_arr, h_arr, out.view(np.ndarray)))
        self._run_step(x2, h2, out2)
        return out



def _stop_crew(holder: list[Any]) -> None:
    # When the layer is freed: its crew's helpers stop.
    if holder[0] is not None:
        holder[0].stop()
        holder[0] = None


def prepare(w_ih: ArrayLike, w_hh: Any, b_ih: ArrayLike | None = None,
            b_hh: ArrayLike | None = None, *, nonlinearity: str = "tanh",
            leak: ArrayLike | None = None, threads: int | None = None,
            backend: str = "auto") -> Layer:
    """Prepare an Elman RNN layer once, to run it many times.

    Validates the weights, copies them (later changes to the caller's arrays
    do not affect the layer), packs them as the kernels read them and fuses
    the biases. The layer then runs whole sequences (``layer(x, ...)``, the
    result of :func:`fastrnn.forward`), chunks of a stream (each chunk's
    ``h_n`` as the next ``h0``) or one step at a time (:meth:`Layer.step`),
    without doing any of that again.

    Parameters
    ----------
    w_ih : array, shape (H, I)
        Input-to-hidden weights (PyTorch's ``weight_ih_l0``).
    w_hh : array or SciPy sparse matrix/array, shape (H, H)
        Hidden-to-hidden weights; a sparse one is used as sparse.
    b_ih, b_hh : array, shape (H,), optional
        Biases; None means none.
    nonlinearity : {"tanh", "relu"}
    leak : float or array of shape (H,), optional
        The leaky update ``h = (1 - leak) h + leak act(...)``; None means 1.
    threads : int, optional
        The most threads a call uses (None: ``FASTRNN_NUM_THREADS``, else
        every core this process may use).
    backend : {"auto", "numba", "numpy"}

    Every floating argument must share one dtype, float32 or float64: the
    layer's dtype, which its inputs must have too.

    Returns
    -------
    Layer

    Examples
    --------
    >>> import numpy as np
    >>> import fastrnn
    >>> rng = np.random.default_rng(0)
    >>> w_ih = rng.standard_normal((8, 4), dtype=np.float32)
    >>> w_hh = rng.standard_normal((8, 8), dtype=np.float32) * np.float32(0.3)
    >>> layer = fastrnn.prepare(w_ih, w_hh)
    >>> x = rng.standard_normal((5, 4), dtype=np.float32)  # (T, I): one sequence
    >>> h = np.zeros(8, np.float32)
    >>> for x_t in x:
    ...     h = layer.step(x_t, h, out=h)  # in place: no allocation
    >>> output, h_n = layer(x)  # the whole sequence at once
    >>> bool(np.allclose(h, h_n, atol=1e-6))
    True
    """
    return Layer(w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity, leak=leak,
                 threads=threads, backend=backend)

