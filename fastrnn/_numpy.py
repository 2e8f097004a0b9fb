"""Pure-NumPy backend: the input product hoisted a chunk of steps at a time,
then one matrix product and one in-place activation per step.

Imports nothing but NumPy (SciPy only through a sparse ``w_hh`` the caller
passed), so fastrnn works where Numba is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Elements of the hoisted input product kept per chunk of time steps: large
# enough for few, big BLAS calls, small enough that no buffer grows with T
# (256 kB in float32).
CHUNK_ELEMENTS = 1 << 16


def forward(x: np.ndarray, w_ih: np.ndarray, w_hh: Any, b_ih: np.ndarray | None,
            b_hh: np.ndarray | None, h0: np.ndarray | None, out: np.ndarray | None,
            h_n: np.ndarray, relu: bool, batch_first: bool, lengths: np.ndarray | None,
            leak: np.ndarray | None, reverse: bool, threads: int | None,
            prepared: Any = None) -> None:
    """Compute the forward pass into ``out`` and ``h_n``; the backend contract.

    ``x`` is (B, T, I) if ``batch_first`` else (T, B, I), any memory layout;
    ``w_hh`` an (H, H) ndarray or a canonical SciPy CSR matrix; ``out`` None
    (only h_n wanted) or an array of x's layout with H features whose last
    axis has unit stride; ``h0`` (None for zeros) and ``h_n`` are (B, H);
    biases are (H,) or None; ``lengths`` an int64 (B,) array or None (every
    sequence has T steps); ``leak`` an (H,) array or None (1); ``reverse``
    runs each sequence from its last valid step back to its first;
    ``threads`` caps the threads used (NumPy's BLAS decides its own here);
    ``prepared`` is what a backend keeps of a :class:`fastrnn.Layer`'s
    weights between calls (nothing here: NumPy reads them as they are).
    Every argument is already validated; only ``out`` and ``h_n`` are written.
    """
    # inf - inf gives NaN here as in the Numba backend, without NumPy's warning.
    with np.errstate(invalid="ignore", over="ignore"):
        _forward(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, lengths, leak,
                 reverse)


def _forward(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, lengths, leak,
             reverse):
    seq = x if batch_first else x.transpose(1, 0, 2)  # (B, T, I) views
    out_seq = None if out is None else (out if batch_first else out.transpose(1, 0, 2))
    batch, steps = seq.shape[:2]
    hidden = h_n.shape[1]
    uniform = lengths is None  # every sequence T steps long: basic slicing only
    if uniform:
        order = ordered_lengths = None
        state = np.zeros((batch, hidden), h_n.dtype) if h0 is None else h0.copy()
        longest = steps if batch else 0
    else:
        # Longest first (stable): the sequences still running at any step are
        # a prefix, so each step works on state[:active] only.
        order = np.argsort(-lengths, kind="stable")
        ordered_lengths = lengths[order]
        state = np.zeros((batch, hidden), h_n.dtype) if h0 is None else h0[order]
        longest = int(ordered_lengths[0]) if batch else 0
    bias = np.zeros(hidden, h_n.dtype)
    for b in (b_ih, b_hh):
        if b is not None:
            bias += b
    w_ih_t = w_ih.T
    sparse = not isinstance(w_hh, np.ndarray)
    w_hh_t = None if sparse else w_hh.T
    keep = None if leak is None else 1 - leak
    recurrent = np.empty((batch, hidden), h_n.dtype)

    # In place in the output when the steps fill a contiguous output in order
    # (the common case): the input product of every step goes straight into
    # it as one BLAS call, and each step then works on its own rows there.
    in_place = uniform and not reverse and out is not None and out.flags.c_contiguous
    if in_place:
        rows = out.reshape(-1, hidden)
        np.matmul(x.reshape(rows.shape[0], x.shape[-1]), w_ih_t, out=rows)
        rows += bias
    chunk = max(1, CHUNK_ELEMENTS // max(1, batch * hidden))
    for s0 in range(0, longest, chunk):
        s1 = min(longest, s0 + chunk)
        if uniform:
            # The chunk's inputs, in the order the steps read them.
            inputs = seq[:, steps - s1:steps - s0][:, ::-1] if reverse else seq[:, s0:s1]
            running = batch
        else:
            running = int(np.count_nonzero(ordered_lengths > s0))
            step_index = np.arange(s0, s1)
            if reverse:
                times = ordered_lengths[:running, None] - 1 - step_index
            else:
                times = np.broadcast_to(step_index, (running, s1 - s0))
            # Steps past a sequence's end read a clipped index, never used.
            times = np.clip(times, 0, steps - 1)
            inputs = seq[order[:running, None], times]
        if in_place:
            pre = out_seq[:, s0:s1]  # already holds the input product
        else:
            # One 2-D product for the chunk (a 3-D matmul would run one small
            # product per sequence).
            pre = (inputs.reshape(-1, inputs.shape[-1]) @ w_ih_t).reshape(
                running, s1 - s0, hidden)
            pre += bias
        for k, s in enumerate(range(s0, s1)):
            active = running if uniform else int(np.count_nonzero(ordered_lengths[:running] > s))
            h = state[:active]
            z = pre[:active, k]
            if sparse:
                z += (w_hh @ h.T).T
            else:
                np.matmul(h, w_hh_t, out=recurrent[:active])
                z += recurrent[:active]
            _activate(z, h, relu, leak, keep)
            if in_place:
                state = z  # already in the output
                continue
            state[:active] = z
            if out_seq is None:
                continue
            if uniform:
                out_seq[:, steps - 1 - s if reverse else s] = z
            else:
                out_seq[order[:active], times[:active, k]] = z
    if uniform:
        h_n[...] = state
        return
    if out_seq is not None:
        for b in np.flatnonzero(lengths < steps):
            out_seq[b, lengths[b]:] = 0
    h_n[order] = state


def step(x: np.ndarray, h: np.ndarray, out: np.ndarray, w_ih_t: np.ndarray, w_hh_t: Any,
         bias: np.ndarray, leak: np.ndarray | None, relu: bool,
         scratch: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """One time step of a prepared layer (:meth:`fastrnn.Layer.step`): ``out``
    (B, H) <- the state after ``x`` (B, I) from ``h`` (B, H), summed as the
    forward pass sums it. ``w_ih_t`` is w_ih.T, C-contiguous, and ``w_hh_t``
    w_hh.T, C-contiguous, or a sparse w_hh itself (the layer transposes the
    dense weights once: a product with a transposed view ran other OpenBLAS
    kernels, up to 1.6x slower at B = 32, H = 1024). ``scratch``: two (B, H)
    arrays of the dtype for the products, else allocated (an allocation of
    256 KB, B = 32, H = 1024 float64, is fresh pages every step). Every
    input is read before ``out`` is written, so ``out`` may be ``h``."""
    with np.errstate(invalid="ignore", over="ignore"):
        z = np.matmul(x, w_ih_t, out=None if scratch is None else scratch[0])
        z += bias
        if isinstance(w_hh_t, np.ndarray):
            z += np.matmul(h, w_hh_t, out=None if scratch is None else scratch[1])
        else:
            z += (w_hh_t @ h.T).T
        _activate(z, h, relu, leak, None if leak is None else 1 - leak)
        out[...] = z


def _activate(z: np.ndarray, h: np.ndarray, relu: bool, leak: np.ndarray | None,
              keep: np.ndarray | None) -> None:
    """z <- act(z), in place; with a leak, (1 - leak) h + leak act(z) (``keep``
    is 1 - leak): the tail of every step, of the forward pass and of
    :func:`step`."""
    if relu:
        np.maximum(z, 0, out=z)
    else:
        np.tanh(z, out=z)
    if keep is not None:
        z *= leak
        z += keep * h


# --- Gated cells (fastrnn.GRULayer, fastrnn.LSTMLayer) ---------------------


def _sigmoid(z: np.ndarray) -> None:
    """z <- sigmoid(z), in place, as (1 + tanh(z / 2)) / 2 (the compiled
    cells' form; no overflow for any z)."""
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5


def gated_cell(pre: np.ndarray, rec: np.ndarray, h: np.ndarray, c: np.ndarray | None,
               b_hn: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A GRU's or LSTM's new state (h', c'; c' None for a GRU) from ``pre``
    (B, G H: the input product and bias) and ``rec`` (B, G H: h @ w_hh.T),
    both overwritten; G is 3 (gates r, z, n) or 4 (i, f, g, o), PyTorch's
    order. ``b_hn``: a GRU's b_hh of the n gate (inside r * (...)), or None.
    Reads h and c before returning new arrays, so the caller may write them
    over h and c."""
    hidden = h.shape[1]
    if c is None:  # GRU
        gates = pre[:, :2 * hidden]
        gates += rec[:, :2 * hidden]
        _sigmoid(gates)
        r, z = gates[:, :hidden], gates[:, hidden:]
        n = rec[:, 2 * hidden:]
        if b_hn is not None:
            n += b_hn
        n *= r
        n += pre[:, 2 * hidden:]
        np.tanh(n, out=n)
        # (1 - z) n + z h
        return (1 - z) * n + z * h, None
    gates = pre
    gates += rec
    _sigmoid(gates[:, :2 * hidden])
    np.tanh(gates[:, 2 * hidden:3 * hidden], out=gates[:, 2 * hidden:3 * hidden])
    _sigmoid(gates[:, 3 * hidden:])
    c_new = gates[:, hidden:2 * hidden] * c
    c_new += gates[:, :hidden] * gates[:, 2 * hidden:3 * hidden]
    h_new = np.tanh(c_new)
    h_new *= gates[:, 3 * hidden:]
    return h_new, c_new


def forward_gated(x: np.ndarray, w_ih_t: np.ndarray, w_hh_t: np.ndarray, bias: np.ndarray,
                  b_hn: np.ndarray | None, h0: np.ndarray | None, c0: np.ndarray | None,
                  out: np.ndarray | None, h_n: np.ndarray, c_n: np.ndarray | None,
                  batch_first: bool, lengths: np.ndarray | None) -> None:
    """A GRU (``c_n`` None) or LSTM layer's forward pass with NumPy: the
    input product hoisted a chunk of steps at a time, then per step one
    product and the cell (:func:`gated_cell`). ``w_ih_t`` (I, G H) and
    ``w_hh_t`` (H, G H) are the transposed weights, ``bias`` (G H,) what is
    added to the input product; h0, c0 None for zeros; out None or (B, T, H)
    / (T, B, H) like x. A sequence shorter than T keeps its state past its
    length, where its output is zeros (PyTorch's padded output). Validated
    by the caller; only out, h_n and c_n are written."""
    with np.errstate(invalid="ignore", over="ignore"):
        seq = x if batch_first else x.transpose(1, 0, 2)
        out_seq = None if out is None else (out if batch_first else out.transpose(1, 0, 2))
        batch, steps = seq.shape[:2]
        hidden = h_n.shape[1]
        h = np.zeros((batch, hidden), h_n.dtype) if h0 is None else h0.copy()
        c = None
        if c_n is not None:
            c = np.zeros((batch, hidden), h_n.dtype) if c0 is None else c0.copy()
        width = w_hh_t.shape[1]
        chunk = max(1, CHUNK_ELEMENTS // max(1, batch * width))
        for s0 in range(0, steps, chunk):
            s1 = min(steps, s0 + chunk)
            inputs = seq[:, s0:s1]
            pre = (inputs.reshape(-1, inputs.shape[-1]) @ w_ih_t).reshape(batch, s1 - s0, width)
            pre += bias
            for k, t in enumerate(range(s0, s1)):
                h_new, c_new = gated_cell(pre[:, k], h @ w_hh_t, h, c, b_hn)
                if lengths is not None:
                    running = (lengths > t)[:, None]
                    h_new = np.where(running, h_new, h)
                    if c is not None and c_new is not None:
                        c_new = np.where(running, c_new, c)
                    if out_seq is not None:
                        out_seq[:, t] = np.where(running, h_new, 0)
                elif out_seq is not None:
                    out_seq[:, t] = h_new
                h, c = h_new, c_new
        h_n[...] = h
        if c_n is not None:
            c_n[...] = c
