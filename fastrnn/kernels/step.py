"""The compiled calls behind :meth:`fastrnn.Layer.step`: one time step of a
prepared layer, at the cost of its product.

A step of a small layer is worth a fraction of a microsecond of arithmetic
(B = 1, I = 16, H = 8, float32: 0.18 us), so what surrounds it decides its
time. Measured per call on this project's AVX2 Zen 3 machine (fastest of 15
runs of 50 000 calls): Numba's dispatcher takes about 0.1 us per argument,
and 0.1 us more per array when the kernel uses Numba's reference counting
(NRT: each array argument is wrapped in an allocated MemInfo). The kernels
here are compiled without NRT (0.25 against 0.45 us for four arrays), and
the dense one takes four arrays and nothing else, ``(x, h, out, packed)``:
H and whether there is a leak are read from ``packed``'s shape row, and
the activation is chosen when it is compiled (a kernel each). Its three
scalars (H, the activation, the leak) cost 0.17 us of 0.74 a call through
the dispatcher (float32, B = 1, I = 16, H = 8; 2-vCPU AMD Zen 4 VM, an empty
kernel of each signature, 300 interleaved samples). The two rows of
scratch per sample live on the stack (:func:`stack_matrix`), since a heap
allocation needs NRT. ``packed`` is the layer's :func:`.cells.pack_layer`,
the same array the forward pass reads: the packed w_ih.T and w_hh.T with
the fused bias, leak and 1 - leak, and the shape row.

The kernel of a dtype has two explicit signatures, (B, I)/(B, H) and (I,)/(H,) arrays
of any layout (x and h may be read-only), so that no new layout compiles
anything; a shape that does not fit the weights, or a scratch larger than
:data:`STACK_BYTES`, returns False before anything is written, and the caller
then checks the arguments in Python (the error messages) and runs the
general step kernel (:func:`general_step_kernel`: scratch on the heap, and
a sparse w_hh).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numba import from_dtype, njit, typeof, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from .cells import ROWS, Elman, LeakyElman, layer_shape, update, update_rows
from .jit import JIT, KERNEL_JIT, c_view, is_c_contiguous
from .product import matmul_rows
from .simd import VECTOR_BYTES
from .sparse import sparse_rows

# The largest scratch a step keeps on the stack: two rows of the packed
# width per sample (B = 32: float32 H <= 512, float64 H <= 256). Larger
# steps are worth tens of microseconds: they take the general kernel.
STACK_BYTES = 128 * 1024


@intrinsic
def stack_matrix(typingctx, rows, cols, like):
    """An uninitialised (rows, cols) C array of ``like``'s dtype on the
    stack of the calling function, 64-byte aligned; valid until it returns.
    (Only for a function that calls it once, outside loops: each call
    grows the stack.)"""
    if not (isinstance(rows, types.Integer) and isinstance(cols, types.Integer)
            and isinstance(like, types.Array) and isinstance(like.dtype, types.Float)):
        return None
    matrix = types.Array(like.dtype, 2, "C")

    def codegen(context, builder, sig, args):
        count_rows, count_cols = (context.cast(builder, value, typ, types.intp)
                                  for value, typ in zip(args[:2], sig.args[:2], strict=True))
        element = context.get_data_type(like.dtype)
        data = builder.alloca(element, size=builder.mul(count_rows, count_cols))
        data.align = 64
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(element))
        array = context.make_array(matrix)(context, builder)
        populate_array(array, data=data,
                       shape=cgutils.pack_array(builder, [count_rows, count_cols]),
                       strides=cgutils.pack_array(builder, [builder.mul(count_cols, itemsize),
                                                            itemsize]),
                       itemsize=itemsize, meminfo=None)
        return array._getvalue()

    return matrix(rows, cols, like), codegen


@intrinsic
def as_rows(typingctx, array):
    """A 2-D array as itself; a 1-D array of n values as a (1, n) view of
    the same memory. (A view made by slicing could not be returned from a
    helper compiled without NRT.)"""
    if not isinstance(array, types.Array) or array.ndim not in (1, 2):
        return None
    if array.ndim == 2:
        return array(array), lambda context, builder, sig, args: args[0]
    matrix = types.Array(array.dtype, 2, "A", readonly=not array.mutable)

    def codegen(context, builder, sig, args):
        given = context.make_array(array)(context, builder, value=args[0])
        view = context.make_array(matrix)(context, builder)
        count = builder.extract_value(given.shape, 0)
        stride = builder.extract_value(given.strides, 0)
        populate_array(view, data=given.data,
                       shape=cgutils.pack_array(builder,
                                                [context.get_constant(types.intp, 1), count]),
                       strides=cgutils.pack_array(builder, [builder.mul(count, stride), stride]),
                       itemsize=given.itemsize, meminfo=given.meminfo, parent=given.parent)
        return view._getvalue()

    return matrix(array), codegen


@njit(**KERNEL_JIT)
def recurrent_product(h, batch, hidden, weights, recurrent):
    """``recurrent`` <- h @ w_hh.T (the packed ``weights``), h a caller's
    array of any layout: a C-contiguous one through a C-typed view, whose
    rows the product reads at constant strides (with run-time strides,
    each of a block's broadcast loads computed its address: float64 B =
    32, H = 1024, one thread, 2832 us a step against 2226 in the forward's
    steps). One sample's row stride is never used, and the check cost its
    step 1-9% at H <= 64: it takes the caller's array as it is."""
    if batch > 1 and is_c_contiguous(h):
        matmul_rows(c_view(h), batch, hidden, weights, recurrent)
    else:
        matmul_rows(h, batch, hidden, weights, recurrent)


@njit(**KERNEL_JIT)
def step_tail(acc, recurrent, h, out, rows, relu, leaky):
    """The end of a step, for both step kernels: ``out`` <- the Elman cell's
    new state (:func:`.cells.update`) from the (B, H) products ``acc``
    (input) and ``recurrent`` and the state ``h``; ``rows``: the layer's
    :data:`.cells.ROWS` rows (bias, leak, 1 - leak). The sums of the forward
    pass, in its order ((input + bias) + recurrent). The new state goes to
    acc first and is copied to out after every input has been read, so out
    may be h (or overlap anything)."""
    batch, hidden = out.shape
    for i in range(batch):
        for j in range(hidden):
            acc[i, j] += rows[0, j]
    if leaky:  # (a call: the activation is inlined once per function)
        update_rows(LeakyElman(relu), acc, recurrent, h, acc, rows, batch, hidden)
    else:
        cell = Elman(relu)
        for i in range(batch):
            update(cell, acc, i, recurrent, i, h, acc, 0, hidden, rows)
    for i in range(batch):
        for j in range(hidden):
            out[i, j] = acc[i, j]


@njit(**KERNEL_JIT)
def fits(x, h, out, packed, hidden, tail):
    """Whether x (B, I), h and out (B, H) fit the layer ``packed`` (H
    ``hidden``, from its shape row; ``tail`` its weight rows, I + H dense,
    I sparse): the one shape check of both step kernels."""
    batch = x.shape[0]
    width = packed.shape[1]
    lanes = VECTOR_BYTES // packed.itemsize
    return (packed.shape[0] == tail + ROWS and hidden <= width < hidden + lanes
            and h.shape[0] == batch and h.shape[1] == hidden
            and out.shape[0] == batch and out.shape[1] == hidden)


def _dense_step(x_given, h_given, out_given, packed, relu):
    # out = the state after x (B, I) from h (B, H), or (I,) and (H,).
    # packed: the layer's .cells.pack_layer (w_ih.T packed in the first I
    # rows, w_hh.T in the next H, then the cell's rows and the shape row,
    # whose H tells an x one column short with an h one column long from
    # the layer's).
    x = as_rows(x_given)
    h = as_rows(h_given)
    out = as_rows(out_given)
    batch, input_size = x.shape
    lanes = VECTOR_BYTES // packed.itemsize
    width = packed.shape[1]
    hidden, leaky = layer_shape(packed)
    tail = input_size + hidden
    if (not fits(x, h, out, packed, hidden, tail)
            or 2 * batch * width * packed.itemsize > STACK_BYTES):
        return False
    vectors = width // lanes
    work = stack_matrix(2 * batch, width, packed)
    acc = work[:batch]
    recurrent = work[batch:]
    matmul_rows(x, batch, input_size,
                packed[:input_size].reshape(input_size * vectors, lanes), acc)
    recurrent_product(h, batch, hidden, packed[input_size:tail].reshape(hidden * vectors, lanes),
                      recurrent)
    step_tail(acc, recurrent, h, out, packed[tail:], relu, leaky)
    return True


_dense_step_inner = njit(**KERNEL_JIT)(_dense_step)


# The dense kernels themselves: the activation a compile-time constant, so
# that the kernel takes four arrays only.
def _dense_step_tanh(x, h, out, packed):
    return _dense_step_inner(x, h, out, packed, False)


def _dense_step_relu(x, h, out, packed):
    return _dense_step_inner(x, h, out, packed, True)


_kernels: dict[tuple[np.dtype, str], Any] = {}
_lock = threading.Lock()


def step_kernel(dtype: np.dtype, relu: bool) -> Any:
    """The compiled dense step for ``dtype`` and the activation (relu or
    tanh), compiled, or loaded from Numba's cache, on first use:
    ``kernel(x, h, out, packed)``."""
    key = (np.dtype(dtype), "dense relu" if relu else "dense tanh")
    kernel = _kernels.get(key)
    if kernel is None:
        with _lock:  # compile once, whichever thread asks first
            kernel = _kernels.get(key)
            if kernel is None:
                value = from_dtype(key[0])
                signatures = [types.boolean(types.Array(value, ndim, "A", readonly=True),
                                            types.Array(value, ndim, "A", readonly=True),
                                            types.Array(value, ndim, "A"),
                                            types.Array(value, 2, "C"))
                              for ndim in (2, 1)]
                kernel = _kernels[key] = njit(signatures, **KERNEL_JIT)(
                    _dense_step_relu if relu else _dense_step_tanh)
    return kernel


def _general_step(x, h, out, packed, sparse, relu):
    # One time step of any prepared layer: out = the state after x (B, I)
    # from h (B, H). packed: the layer's .cells.pack_layer (w_ih.T, then a
    # dense w_hh.T, then the cell's rows); sparse: .sparse.sell_pack's tuple
    # for a sparse w_hh, or None. Scratch from the heap (any size). Every
    # input is read before `out` is written, so out may be h itself (or
    # overlap anything). A shape that does not fit returns False before
    # anything is written.
    batch, input_size = x.shape
    hidden, leaky = layer_shape(packed)
    width = packed.shape[1]
    tail = input_size + (0 if sparse is not None else hidden)
    lanes = VECTOR_BYTES // packed.itemsize
    if not fits(x, h, out, packed, hidden, tail):
        return False
    vectors = width // lanes
    # Unaligned and not zeroed: the products write every column of their
    # rows (vstore takes any alignment).
    work = np.empty((2 * batch if sparse is None else 3 * batch, width), dtype=packed.dtype)
    acc = work[:batch]
    recurrent = work[batch:2 * batch]
    matmul_rows(x, batch, input_size, packed[:input_size].reshape(input_size * vectors, lanes),
                acc)
    if sparse is None:
        recurrent_product(h, batch, hidden,
                          packed[input_size:tail].reshape(hidden * vectors, lanes), recurrent)
    else:
        # The gathers read a zero-padded copy of the state (column H is
        # their padding column: the state's width is one vector more).
        state = np.zeros((batch, width + lanes), dtype=packed.dtype)
        for i in range(batch):
            for j in range(hidden):
                state[i, j] = h[i, j]
        sparse_rows(state, batch, sparse, work[2 * batch:], recurrent)
    step_tail(acc, recurrent, h, out, packed[tail:], relu, leaky)
    return True


def general_step_kernel(dtype: np.dtype, sparse: bool) -> Any:
    """The compiled :func:`_general_step` for ``dtype`` and a dense or
    sparse w_hh, with one explicit signature: x, h and out in any layout (x
    and h may be read-only), so that no new layout compiles anything."""
    key = (np.dtype(dtype), "sparse" if sparse else "general")
    kernel = _kernels.get(key)
    if kernel is None:
        with _lock:  # compile (or load from the cache) once
            kernel = _kernels.get(key)
            if kernel is None:
                value = from_dtype(key[0])
                given = types.Array(value, 2, "A", readonly=True)
                matrix = types.Array(value, 2, "C")
                if sparse:
                    index = types.Array(types.int64, 1, "C")
                    pack: Any = types.Tuple((index, index, matrix,
                                             types.Array(types.int32, 1, "C")))
                else:
                    pack = types.none
                signature = types.boolean(given, given, types.Array(value, 2, "A"), matrix,
                                          pack, types.boolean)
                kernel = _kernels[key] = njit([signature], **JIT)(_general_step)
    return kernel


# --- Gated cells (fastrnn.GRULayer, fastrnn.LSTMLayer) ---------------------


@njit(**KERNEL_JIT)
def _gated_body(x, h, c, out_h, out_c, packed, cell, work):
    # One step of a gated layer (packed: .cells.pack_gated): the products
    # into work's first 2B rows, the state [h | c] (c: an LSTM's) into the
    # next B, updated there by the cell, then copied out. Every input is
    # read before out_h and out_c are written: they may be h and c.
    batch, input_size = x.shape
    hidden = h.shape[1]
    width = packed.shape[1]
    lanes = VECTOR_BYTES // packed.itemsize
    vectors = width // lanes
    tail = input_size + hidden
    acc = work[:batch]
    recurrent = work[batch:2 * batch]
    state = work[2 * batch:3 * batch]
    rows = packed[tail:]
    matmul_rows(x, batch, input_size, packed[:input_size].reshape(input_size * vectors, lanes),
                acc)
    for i in range(batch):
        for j in range(width):
            acc[i, j] += rows[0, j]
    recurrent_product(h, batch, hidden, packed[input_size:tail].reshape(hidden * vectors, lanes),
                      recurrent)
    lstm = cell.gates == 4
    for i in range(batch):
        for j in range(hidden):
            state[i, j] = h[i, j]
        if lstm:
            for j in range(hidden):
                state[i, hidden + j] = c[i, j]
    for i in range(batch):
        update(cell, acc, i, recurrent, i, state, state, 0, hidden, rows)
    for i in range(batch):
        for j in range(hidden):
            out_h[i, j] = state[i, j]
        if lstm:
            for j in range(hidden):
                out_c[i, j] = state[i, hidden + j]


@njit(**KERNEL_JIT)
def gated_fits(x, h, c, out_h, out_c, packed, cell):
    """Whether x (B, I), h, out_h (and an LSTM's c, out_c: (B, H)) fit the
    gated layer ``packed``."""
    batch, input_size = x.shape
    hidden = layer_shape(packed)[0]
    lanes = VECTOR_BYTES // packed.itemsize
    gate = packed.shape[1] // cell.gates
    fits = (packed.shape[0] == input_size + hidden + ROWS and hidden <= gate < hidden + lanes
            and h.shape[0] == batch and h.shape[1] == hidden
            and out_h.shape[0] == batch and out_h.shape[1] == hidden)
    if cell.gates == 4:
        fits = fits and (c.shape[0] == batch and c.shape[1] == hidden
                         and out_c.shape[0] == batch and out_c.shape[1] == hidden)
    return fits


def _gated_step(x_given, h_given, c_given, out_h_given, out_c_given, packed, cell):
    # Scratch on the stack (3 rows of the packed width a sample), or False
    # when it would not fit there (the heap kernel then runs).
    x = as_rows(x_given)
    h = as_rows(h_given)
    c = as_rows(c_given)
    out_h = as_rows(out_h_given)
    out_c = as_rows(out_c_given)
    batch = x.shape[0]
    width = packed.shape[1]
    if (not gated_fits(x, h, c, out_h, out_c, packed, cell)
            or 3 * batch * width * packed.itemsize > STACK_BYTES):
        return False
    _gated_body(x, h, c, out_h, out_c, packed, cell, stack_matrix(3 * batch, width, packed))
    return True


def _gated_step_heap(x, h, c, out_h, out_c, packed, cell):
    # (2-D arrays only: as_rows's views are for kernels without reference
    # counts, and this one counts them, for its heap scratch.)
    if not gated_fits(x, h, c, out_h, out_c, packed, cell):
        return False
    work = np.empty((3 * x.shape[0], packed.shape[1]), dtype=packed.dtype)
    _gated_body(x, h, c, out_h, out_c, packed, cell, work)
    return True


def gated_step_kernel(dtype: np.dtype, cell: Any, heap: bool) -> Any:
    """The compiled step of a gated layer (``cell``: .cells.GRU_CELL or
    LSTM_CELL) for ``dtype``: ``kernel(x, h, c, out_h, out_c, packed, cell)``
    (a GRU passes h and out_h again as c and out_c), (B, I)/(B, H) or
    (I,)/(H,) arrays of any layout (x, h and c may be read-only), returning
    False for shapes that do not fit the layer, or (``heap`` False) scratch
    over :data:`STACK_BYTES`; ``heap``: scratch from the heap, any size,
    2-D arrays only."""
    key = (np.dtype(dtype), f"{type(cell).__name__} {'heap' if heap else 'stack'}")
    kernel = _kernels.get(key)
    if kernel is None:
        with _lock:
            kernel = _kernels.get(key)
            if kernel is None:
                value = from_dtype(key[0])
                cell_type = typeof(cell)
                signatures = [types.boolean(*([types.Array(value, ndim, "A", readonly=True)] * 3),
                                            *([types.Array(value, ndim, "A")] * 2),
                                            types.Array(value, 2, "C"), cell_type)
                              for ndim in ((2,) if heap else (2, 1))]
                body = _gated_step_heap if heap else _gated_step
                kernel = _kernels[key] = njit(signatures, **(JIT if heap else KERNEL_JIT))(body)
    return kernel
