"""Cells: what a step does after its products, chosen at compile time.

Every step of every path (:mod:`.driver`, the step kernels of :mod:`.step`)
computes two products for the units it owns, ``pre`` (the input product plus
the fused bias, hoisted a chunk of steps at a time) and ``rec`` (the
recurrent product), then hands them to :func:`update` with the previous
state; the cell writes the new state. The cell is the type of the ``cell``
argument, a small named tuple: Numba compiles the loops once per cell class
(the class picks the implementation when the kernel is compiled; its fields
are run-time values), so a new cell (GRU, LSTM) is a class and an
implementation here, not another copy of the step loops.

What a cell reads is packed once with the weights (:func:`pack_layer`):
the rows of w_ih.T and, dense, w_hh.T for the units, packed in panels for
:func:`fastrnn.kernels.product.matmul_rows`, then :data:`ROWS` rows, the first
the bias added to ``pre``, the rest the cell's own. A gated cell's products
are wider than its state (3 gates x units for a GRU, 4 for an LSTM: the
packed width covers them, and the cell reads its gates' columns of ``pre``
and ``rec``); a GRU would keep b_hn in one of its rows (it is added inside
the reset gate's product), and an LSTM's cell state, private to its units,
would travel beside ``cur``/``nxt``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from .activations import relu as _relu
from .activations import tanh as _tanh
from .activations import tanh_again as _tanh_again
from .jit import JIT, KERNEL_JIT, FewVariants
from .product import aligned_zeros, pack_columns
from .simd import VECTOR_BYTES

# Rows after the packed weights: the bias, the cell's rows (Elman: the
# leak and 1 - leak, read only when leaky), and last the layer's shape (H
# and whether it leaks: layer_shape), which the step kernels read instead
# of taking them as arguments (fastrnn.kernels.step).
ROWS = 4
SHAPE_BASE = 4096  # (the shape row's H: H // SHAPE_BASE and H % SHAPE_BASE)


class Elman(NamedTuple):
    """h' = act(pre + rec), act relu or tanh."""

    relu: bool


class LeakyElman(NamedTuple):
    """h' = (1 - a) h + a act(pre + rec), a the leak (a row of the cell's)."""

    relu: bool


class GRU(NamedTuple):
    """PyTorch's ``nn.GRU`` cell, gates r, z, n (PyTorch's order)::

        r = sigmoid(pre_r + rec_r), z = sigmoid(pre_z + rec_z)
        n = tanh(pre_n + r * (rec_n + b_hn)), h' = (1 - z) n + z h

    (pre: x W_ih^T with b_ih, and b_hh for r and z; b_hn in the cell's
    first row). ``gates`` is 3: the products' columns are the gates' blocks,
    each the units padded to whole vectors (see :func:`pack_gated`)."""

    gates: int


class LSTM(NamedTuple):
    """PyTorch's ``nn.LSTM`` cell, gates i, f, g, o (PyTorch's order)::

        c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c')

    The cell state c of the units u0.. travels in the state's columns
    H + u0.. (the state is [h | c], 2H wide; the products read its first H
    columns). The cell's rows hold each column's activation as
    ``a tanh(a v) + b``: a = 1, b = 0 for g (tanh), a = b = 1/2 for the
    others (sigmoid(v) = (1 + tanh(v / 2)) / 2: one vectorised tanh, with
    an absolute error of float's epsilon where the gate is near 0)."""

    gates: int


GRU_CELL = GRU(3)
LSTM_CELL = LSTM(4)


_ELMAN = {(relu, leaky): LeakyElman(relu) if leaky else Elman(relu)
          for relu in (False, True) for leaky in (False, True)}


def elman(relu: bool, leaky: bool) -> Elman | LeakyElman:
    """The Elman cell, with or without a leak (two cells: the leak is chosen
    when a kernel is compiled, see :func:`update`); made once, not per call."""
    return _ELMAN[bool(relu), bool(leaky)]


@njit(**dict(KERNEL_JIT, inline="always"))
def put_shape(row, hidden, leaky):
    """The shape row of a packed layer: H in two parts (exact in float32 up
    to 2^35 units), and whether it leaks (see :func:`layer_shape`)."""
    row[0] = hidden // SHAPE_BASE * 2 + (1 if leaky else 0)
    row[1] = hidden % SHAPE_BASE


@njit(**dict(KERNEL_JIT, inline="always"))
def shape_hidden(row):
    """H from a packed layer's shape row (:func:`put_shape`)."""
    return int(row[0]) // 2 * SHAPE_BASE + int(row[1])


def update(cell, pre, r, rec, i, cur, nxt, u0, units, rows):  # pragma: no cover
    """``nxt[i, u0:u0 + units]`` <- the new state of the units ``u0..`` of
    sample i, from ``pre[r]`` (input product + bias), ``rec[i]`` (recurrent
    product), ``cur[i, u0:...]`` (the previous state) and the cell's
    ``rows`` (columns local to the units). May overwrite ``rec[i]``; reads
    each value of cur before it writes the same value of nxt, so nxt may be
    cur. Numba code only."""
    raise NotImplementedError("fastrnn.kernels.cells.update only runs inside Numba code")


# Inlined where it is called (a call per row, with its arrays passed by
# value, cost 40 ns a step: float64, one sequence, H = 64, 1.2x the whole
# step). The activation is inlined once per implementation: Numba warns when
# one inlined activation is inlined twice in one function.
@overload(update, inline="always", jit_options=dict(fastmath={"contract"}))
def _update(cell, pre, r, rec, i, cur, nxt, u0, units, rows):
    kind = cell.instance_class if isinstance(cell, types.BaseNamedTuple) else None
    if kind is Elman:
        def elman_update(cell, pre, r, rec, i, cur, nxt, u0, units, rows):
            if cell.relu:
                for j in range(units):
                    nxt[i, u0 + j] = _relu(pre[r, j] + rec[i, j])
            else:
                for j in range(units):
                    nxt[i, u0 + j] = _tanh(pre[r, j] + rec[i, j])
        return elman_update
    if kind is LeakyElman:
        def leaky_update(cell, pre, r, rec, i, cur, nxt, u0, units, rows):
            # The activation into rec (this thread's scratch row) first,
            # then the state from cur and rec: one loop that read cur and
            # wrote nxt (which may be the same array) ran 2-3x slower.
            if cell.relu:
                for j in range(units):
                    rec[i, j] = _relu(pre[r, j] + rec[i, j])
            else:
                for j in range(units):
                    rec[i, j] = _tanh(pre[r, j] + rec[i, j])
            for j in range(units):
                nxt[i, u0 + j] = rows[2, j] * cur[i, u0 + j] + rows[1, j] * rec[i, j]
        return leaky_update
    # The gated cells' constants in the products' dtype (a float64 constant
    # would make float32 arithmetic float64).
    real = np.float32 if getattr(pre, "dtype", None) == types.float32 else np.float64
    half, one = real(0.5), real(1.0)
    if kind is GRU:
        def gru_update(cell, pre, r, rec, i, cur, nxt, u0, units, rows):
            # Each gate into its block of rec (this thread's scratch row),
            # then the state from cur and rec (see leaky_update). Every loop
            # reads and writes 1-D views, one a block: indexing one 2-D row
            # at offsets g and 2g apart left LLVM a dependence it could not
            # bound, and the loops scalar (float32, B = 32, H = 64: 10.3 us
            # a step's update against 3.9).
            g = rec.shape[1] // 3
            p, v = pre[r], rec[i]
            for j in range(2 * g):  # r and z
                v[j] = half * _tanh(half * (p[j] + v[j])) + half
            reset, keep, new = v[:g], v[g:2 * g], v[2 * g:]
            p_new, b_hn = p[2 * g:], rows[1, 2 * g:]
            for j in range(units):  # n
                new[j] = _tanh_again(p_new[j] + reset[j] * (new[j] + b_hn[j]))
            h, h_next = cur[i, u0:u0 + units], nxt[i, u0:u0 + units]
            for j in range(units):
                z = keep[j]
                h_next[j] = (one - z) * new[j] + z * h[j]
        return gru_update
    if kind is LSTM:
        def lstm_update(cell, pre, r, rec, i, cur, nxt, u0, units, rows):
            # 1-D views, one a block (see gru_update: 12.7 us a step's
            # update against 4.5 at B = 32, H = 64).
            g = rec.shape[1] // 4
            hidden = shape_hidden(rows[ROWS - 1])
            p, v, scale, shift = pre[r], rec[i], rows[1], rows[2]
            for j in range(4 * g):  # every gate: a tanh(a v) + b
                a = scale[j]
                v[j] = a * _tanh(a * (p[j] + v[j])) + shift[j]
            gi, gf, gg, go = v[:g], v[g:2 * g], v[2 * g:3 * g], v[3 * g:]
            c = cur[i, hidden + u0:hidden + u0 + units]
            for j in range(units):  # c' into the f block
                gf[j] = gf[j] * c[j] + gi[j] * gg[j]
            h_next = nxt[i, u0:u0 + units]
            c_next = nxt[i, hidden + u0:hidden + u0 + units]
            for j in range(units):
                c_new = gf[j]
                c_next[j] = c_new
                h_next[j] = go[j] * _tanh_again(c_new)
        return lstm_update
    return None


@njit(**KERNEL_JIT)
def update_rows(cell, pre, rec, cur, nxt, rows, count, units):
    """:func:`update` of rows 0..count-1 (pre's row i for sample i)."""
    for i in range(count):
        update(cell, pre, i, rec, i, cur, nxt, 0, units, rows)


@njit(**JIT)
def pack_layer(w_ih, dense, b_ih, b_hh, leak, u0, u1, like):
    """What units u0..u1-1 read at every step, packed once: rows of
    ``width`` (the units padded to whole vectors, 64-byte aligned, zeros
    past them) holding w_ih.T for these units (I rows, in panels for
    matmul_rows), then w_hh.T for them (H rows; a dense w_hh only: None for a
    sparse one), then the :data:`ROWS` rows: the fused bias b_ih + b_hh, the
    leak and 1 - leak, and the shape row (H, and 1 when there is a leak)."""
    hidden, input_size = w_ih.shape
    lanes = VECTOR_BYTES // like.itemsize
    mine = u1 - u0
    width = max(lanes, (mine + lanes - 1) // lanes * lanes)
    vectors = width // lanes
    packed = hidden if dense is not None else 0
    rows = input_size + packed
    work = aligned_zeros(rows + ROWS, width, like)
    pack_columns(w_ih, u0, u1, work[:input_size].reshape(input_size * vectors, lanes))
    if dense is not None:
        pack_columns(dense, u0, u1, work[input_size:rows].reshape(hidden * vectors, lanes))
    # Either bias, and the leak, may be an empty array: none (fastrnn._numba
    # passes arrays, not None, for fewer compiled variants).
    for j in range(mine):
        if b_ih.size != 0:
            work[rows, j] += b_ih[u0 + j]
        if b_hh.size != 0:
            work[rows, j] += b_hh[u0 + j]
        if leak.size != 0:
            work[rows + 1, j] = leak[u0 + j]
            work[rows + 2, j] = 1 - leak[u0 + j]
    put_shape(work[rows + 3], hidden, leak.size != 0)
    return work


@njit(**JIT)
def pack_gated(w_ih, w_hh, b_ih, b_hh, gates, u0, u1, like):
    """A gated layer's :func:`pack_layer` for units u0..u1-1: w_ih (G H, I)
    and w_hh (G H, H) in PyTorch's layout (the gates' rows one after the
    other), G = 3 (GRU: r, z, n) or 4 (LSTM: i, f, g, o). The products'
    columns are the gates' blocks for these units, each the units padded to
    whole vectors (zeros past them); then the :data:`ROWS` rows: the bias
    (b_ih, plus b_hh except a GRU's n gate), the cell's two rows (GRU: b_hn
    in the n block; LSTM: each column's activation, see :class:`LSTM`) and
    the shape row (the layer's H)."""
    rows_given, input_size = w_ih.shape
    hidden = rows_given // gates
    mine = u1 - u0
    lanes = VECTOR_BYTES // like.itemsize
    g = max(lanes, (mine + lanes - 1) // lanes * lanes)
    width = gates * g
    vectors = width // lanes
    # The gates' rows at their blocks' columns, then packed as one layer's.
    wi = np.zeros((width, input_size), dtype=like.dtype)
    wh = np.zeros((width, hidden), dtype=like.dtype)
    for gate in range(gates):
        for j in range(mine):
            for k in range(input_size):
                wi[gate * g + j, k] = w_ih[gate * hidden + u0 + j, k]
            for k in range(hidden):
                wh[gate * g + j, k] = w_hh[gate * hidden + u0 + j, k]
    work = aligned_zeros(input_size + hidden + ROWS, width, like)
    pack_columns(wi, 0, width, work[:input_size].reshape(input_size * vectors, lanes))
    pack_columns(wh, 0, width, work[input_size:input_size + hidden].reshape(hidden * vectors,
                                                                              lanes))
    rows = work[input_size + hidden:]
    for gate in range(gates):
        for j in range(mine):
            column = gate * g + j
            if b_ih.size != 0:
                rows[0, column] += b_ih[gate * hidden + u0 + j]
            if b_hh.size != 0:
                if gates == 3 and gate == 2:
                    rows[1, column] = b_hh[gate * hidden + u0 + j]  # b_hn, inside r * (...)
                else:
                    rows[0, column] += b_hh[gate * hidden + u0 + j]
    if gates == 4:
        for column in range(width):
            tanh_gate = 2 * g <= column < 3 * g
            rows[1, column] = 1.0 if tanh_gate else 0.5
            rows[2, column] = 0.0 if tanh_gate else 0.5
    put_shape(rows[ROWS - 1], hidden, False)
    return work


@njit(**JIT)
def layer_shape(packed):
    """(H, whether there is a leak) from a :func:`pack_layer` array's shape
    row (every vector is at least two values wide: two columns)."""
    row = packed[packed.shape[0] - 1]
    return shape_hidden(row), int(row[0]) % 2 == 1


# Called from Python through a few variants (see .jit.FewVariants): the
# weights, biases and leak are read.
pack_layer_call = FewVariants(pack_layer, inputs=(0, 1, 2, 3, 4), outputs=())
pack_gated_call = FewVariants(pack_gated, inputs=(0, 1, 2, 3), outputs=())
