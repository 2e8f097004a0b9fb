"""The compiled call behind :meth:`fastrnn.Layer.step`: one time step of a
prepared layer with a dense ``w_hh``, at the cost of its product.

A step of a small layer is worth a fraction of a microsecond of arithmetic
(B = 1, I = 16, H = 8, float32: 0.18 us), so what surrounds it decides its
time. Measured per call on this project's AVX2 Zen 3 machine (fastest of 15
runs of 50 000 calls): Numba's dispatcher takes about 0.1 us per argument,
and 0.1 us more per array when the kernel uses Numba's reference counting
(NRT: each array argument is wrapped in an allocated MemInfo). The kernels
here therefore take four arrays, ``(x, h, out, weights)``, and three
scalars (H, the activation, whether there is a leak: scalars cost little), and are
compiled without NRT (0.25 against 0.45 us for four arrays); the two rows of
scratch per sample live on the stack (:func:`stack_matrix`), since a heap
allocation needs NRT. ``weights`` is :func:`step_weights`: the packed w_ih.T
and w_hh.T of the forward pass with the fused bias (and leak, 1 - leak)
appended as rows, one array.

The kernel of a dtype has two explicit signatures, (B, I)/(B, H) and (I,)/(H,) arrays
of any layout (x and h may be read-only), so that no new layout compiles
anything; a shape that does not fit the weights, or a scratch larger than
:data:`STACK_BYTES`, returns False before anything is written, and the caller
then checks the arguments in Python (the error messages) and runs the
general step kernel.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numba import from_dtype, njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from ._activations import relu as _relu
from ._activations import tanh as _tanh
from ._gemm import KERNEL_JIT, aligned_zeros, matmul_rows
from ._simd import VECTOR_BYTES

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
def step_tail(acc, recurrent, h, out, rows, relu):
    """The end of a step, for both step kernels: ``out`` <- act(acc + rows[0]
    + recurrent) for the (B, H) products ``acc`` (input) and ``recurrent``;
    with ``rows`` of 3 (bias, leak, 1 - leak), the leaky update from ``h``,
    rows[2] * h + rows[1] * act(...). The sums of the forward pass, in its
    order; every input is read (into acc) before ``out`` is written, so out
    may be h."""
    batch, hidden = out.shape
    for i in range(batch):
        if relu:
            for j in range(hidden):
                acc[i, j] = _relu(acc[i, j] + rows[0, j] + recurrent[i, j])
        else:
            for j in range(hidden):
                acc[i, j] = _tanh(acc[i, j] + rows[0, j] + recurrent[i, j])
        if rows.shape[0] == 3:
            for j in range(hidden):
                acc[i, j] = rows[2, j] * h[i, j] + rows[1, j] * acc[i, j]
    for i in range(batch):
        for j in range(hidden):
            out[i, j] = acc[i, j]


def _dense_step(x_given, h_given, out_given, weights, hidden, relu, leak):
    # out = the state after x (B, I) from h (B, H), or (I,) and (H,).
    # weights: step_weights (w_ih.T packed in the first I rows, w_hh.T in
    # the next H, then the bias, and with a leak the leak and 1 - leak);
    # hidden: the layer's H (the weights' shape alone would take an x one
    # column short with an h one column long).
    # Every input is read before `out` is written, so out may be h itself
    # (or overlap anything). The sums are those of the forward pass, in its
    # order: (input product + bias) + recurrent product.
    x = as_rows(x_given)
    h = as_rows(h_given)
    out = as_rows(out_given)
    batch, input_size = x.shape
    lanes = VECTOR_BYTES // weights.itemsize
    width = weights.shape[1]
    bias = input_size + hidden
    if (weights.shape[0] != bias + (3 if leak else 1) or width < hidden
            or width - hidden >= lanes or h.shape[0] != batch or h.shape[1] != hidden
            or out.shape[0] != batch or out.shape[1] != hidden
            or 2 * batch * width * weights.itemsize > STACK_BYTES):
        return False
    vectors = width // lanes
    work = stack_matrix(2 * batch, width, weights)
    acc = work[:batch]
    recurrent = work[batch:]
    matmul_rows(x, batch, input_size,
                weights[:input_size].reshape(input_size * vectors, lanes), acc)
    matmul_rows(h, batch, hidden,
                weights[input_size:bias].reshape(hidden * vectors, lanes), recurrent)
    step_tail(acc, recurrent, h, out, weights[bias:], relu)
    return True


_kernels: dict[np.dtype, Any] = {}
_lock = threading.Lock()


def step_kernel(dtype: np.dtype) -> Any:
    """The compiled dense step for ``dtype`` (compiled, or loaded from
    Numba's cache, on first use): ``kernel(x, h, out, weights, hidden,
    relu, leak)``."""
    key = np.dtype(dtype)
    kernel = _kernels.get(key)
    if kernel is None:
        with _lock:  # compile once, whichever thread asks first
            kernel = _kernels.get(key)
            if kernel is None:
                value = from_dtype(key)
                signatures = [types.boolean(types.Array(value, ndim, "A", readonly=True),
                                            types.Array(value, ndim, "A", readonly=True),
                                            types.Array(value, ndim, "A"),
                                            types.Array(value, 2, "C"), types.intp,
                                            types.boolean, types.boolean)
                              for ndim in (2, 1)]
                kernel = _kernels[key] = njit(signatures, **KERNEL_JIT)(_dense_step)
    return kernel


def step_weights(weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``weights`` (the packed (I + H, width) forward weights) with ``rows``
    (the fused bias, and with a leak the leak and 1 - leak; (1 or 3, H))
    appended, zero-padded to the width, in one 64-byte aligned array."""
    used, width = weights.shape
    hidden = rows.shape[1]
    combined = aligned_zeros(used + rows.shape[0], width, weights)
    combined[:used] = weights
    combined[used:, :hidden] = rows
    return combined
