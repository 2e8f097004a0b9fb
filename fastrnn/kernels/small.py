"""One small sequence: each step one product of the joint row [x_t, h].

For the smallest problems (see ``fastrnn._plan.SMALL_MAX_HIDDEN``) the
driver's set-up (a chunked input product, a gather, two packed matrices)
and its per-step overhead cost more than the arithmetic: here one sample at
a time, each step one product of [x_t, h] with [w_ih | w_hh].T, packed as one
matrix of I + H rows, two chains of multiply-adds (one sample is bound by
their latency). Dense w_hh, no lengths, leak or reverse. Reached from
fastrnn.forward's plain call through :func:`forward_small`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .activations import relu as _relu
from .activations import tanh as _tanh
from .jit import JIT, KERNEL_JIT, FewVariants, c_view, is_c_contiguous
from .product import ALIGN_BYTES, aligned_zeros
from .simd import VECTOR_BYTES, vadd, vfma, vload, vsplat, vstore, vzero
from .step import STACK_BYTES, stack_matrix


@njit(**KERNEL_JIT)
def add_biases(bias, b_ih, b_hh):
    # bias[:H] += b_ih + b_hh, either of which may be None.
    if b_ih is not None:
        for j in range(b_ih.shape[0]):
            bias[j] += b_ih[j]
    if b_hh is not None:
        for j in range(b_hh.shape[0]):
            bias[j] += b_hh[j]


@njit(**JIT)
def _buffer(w_ih, h_n):
    # _run's buffer and its layout: rows of `lanes` values, acc (the
    # product), bias, the joint row, and the packed weights (`inner` rows a
    # vector of units). Allocated here, viewed and zeroed in _run, which has
    # no reference counts to update for each view (np.zeros and the views
    # here: 0.1 us more).
    hidden, input_size = w_ih.shape
    lanes = VECTOR_BYTES // h_n.itemsize
    vectors = (hidden + lanes - 1) // lanes
    inner = input_size + hidden
    joint = (inner + lanes - 1) // lanes
    rows = 2 * vectors + joint + vectors * inner
    # (padded by a cache line, for the alignment _run makes)
    buffer = np.empty(rows * lanes + ALIGN_BYTES // h_n.itemsize, dtype=h_n.dtype)
    return buffer, rows, vectors, joint


@njit(**dict(KERNEL_JIT, inline="always"))
def pack_joint(w_ih, w_hh, packed):
    """``packed`` (zeroed, ``vectors * (I + H)`` rows of ``lanes``) <-
    [w_ih | w_hh].T: row v * (I + H) + k holds units v * lanes.. of column
    k."""
    hidden, input_size = w_ih.shape
    lanes = packed.shape[1]
    inner = input_size + hidden
    for v in range((hidden + lanes - 1) // lanes):
        first = v * lanes
        count = min(lanes, hidden - first)
        for k in range(input_size):
            for lane in range(count):
                packed[v * inner + k, lane] = w_ih[first + lane, k]
        for k in range(hidden):
            for lane in range(count):
                packed[v * inner + input_size + k, lane] = w_hh[first + lane, k]


# Each compiled caller of _run optimises _run's code again with its own (LLVM
# links the callee into the caller's module): forward_small calls it itself,
# not through forward_sequences (the textbook call's cold compile: 3.6-3.9 s
# with both levels on the 2-vCPU Zen 4 VM).


@njit(**JIT)
def forward_sequences(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first):
    # The whole batch, one sample at a time (see the module's docstring).
    # b_ih, b_hh: None or an array (an empty one adds nothing); h0: None
    # (zeros) or an array (h0 may be h_n); out: an array, empty for no
    # output.
    buffer, rows, vectors, joint = _buffer(w_ih, h_n)
    _run(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, buffer, rows, vectors,
         joint, None)


@njit(**KERNEL_JIT)
def _run(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first, buffer, rows, vectors,
         joint, packed_given):
    # packed_given: None, or the weights packed already (pack_small: the
    # bias's rows, then the packed rows), copied in (w_ih, w_hh, b_ih and
    # b_hh are then not read).
    n1, n2, input_size = x.shape
    batch, steps = (n1, n2) if batch_first else (n2, n1)
    hidden = h_n.shape[1]
    lanes = VECTOR_BYTES // h_n.itemsize
    inner = input_size + hidden
    offset = ((ALIGN_BYTES - buffer.ctypes.data % ALIGN_BYTES) % ALIGN_BYTES) // h_n.itemsize
    work = buffer[offset:offset + rows * lanes].reshape(rows, lanes)
    acc = work[:vectors].reshape(1, vectors * lanes)
    bias = work[vectors:2 * vectors].reshape(1, vectors * lanes)
    z = work[2 * vectors:2 * vectors + joint].reshape(1, joint * lanes)
    packed = work[2 * vectors + joint:]
    if packed_given is None:
        # Zeros in the padding lanes too: garbage there could be subnormal,
        # which slows the multiply-adds on some CPUs.
        for r in range(rows):
            vstore(work, r, 0, vzero(work))
        pack_joint(w_ih, w_hh, packed)
        add_biases(bias[0], b_ih, b_hh)
    else:
        for r in range(vectors):
            vstore(work, r, 0, vzero(work))
        for r in range(2 * vectors, 2 * vectors + joint):
            vstore(work, r, 0, vzero(work))
        for r in range(vectors):
            vstore(work, vectors + r, 0, vload(packed_given, r, 0))
        for r in range(rows - 2 * vectors - joint):
            vstore(packed, r, 0, vload(packed_given, vectors + r, 0))
    contiguous = is_c_contiguous(x)
    xc = c_view(x)  # (read only if contiguous)
    for b in range(batch):
        for j in range(hidden):
            z[0, input_size + j] = 0 if h0 is None else h0[b, j]
        for t in range(steps):
            if contiguous:  # (vector copies: see .driver.gather)
                for k in range(input_size):
                    z[0, k] = xc[b, t, k] if batch_first else xc[t, b, k]
            else:
                for k in range(input_size):
                    z[0, k] = x[b, t, k] if batch_first else x[t, b, k]
            # Four vectors of units at a time, then one at a time, each
            # input broadcast once for the block; two chains of multiply-adds
            # per vector, by k mod 2 (each vector sums in the same order in
            # any block). One vector at a time broadcast each input once a
            # vector: on AVX2 (Zen 3) float32 (1, 100, 16, 32) ran 1.18x the
            # time of the release before issue 12, whose 512-bit vectors,
            # split in two by LLVM, shared them; with blocks of 4, the
            # kernel alone, paired in one process: float32 0.99x, float64
            # 1.02x (blocks of 2: 1.09x and 1.12x; blocks of 2 as well cost
            # 0.5-1.5 s more in the cold compile of the textbook call).
            v = 0
            while v + 4 <= vectors:
                base = v * inner
                a0 = vload(bias, 0, v * lanes)
                a1 = vzero(work)
                c0 = vload(bias, 0, (v + 1) * lanes)
                c1 = vzero(work)
                d0 = vload(bias, 0, (v + 2) * lanes)
                d1 = vzero(work)
                e0 = vload(bias, 0, (v + 3) * lanes)
                e1 = vzero(work)
                k = 0
                while k + 2 <= inner:
                    s0 = vsplat(z[0, k])
                    s1 = vsplat(z[0, k + 1])
                    a0 = vfma(vload(packed, base + k, 0), s0, a0)
                    c0 = vfma(vload(packed, base + inner + k, 0), s0, c0)
                    d0 = vfma(vload(packed, base + 2 * inner + k, 0), s0, d0)
                    e0 = vfma(vload(packed, base + 3 * inner + k, 0), s0, e0)
                    a1 = vfma(vload(packed, base + k + 1, 0), s1, a1)
                    c1 = vfma(vload(packed, base + inner + k + 1, 0), s1, c1)
                    d1 = vfma(vload(packed, base + 2 * inner + k + 1, 0), s1, d1)
                    e1 = vfma(vload(packed, base + 3 * inner + k + 1, 0), s1, e1)
                    k += 2
                if k < inner:
                    s0 = vsplat(z[0, k])
                    a0 = vfma(vload(packed, base + k, 0), s0, a0)
                    c0 = vfma(vload(packed, base + inner + k, 0), s0, c0)
                    d0 = vfma(vload(packed, base + 2 * inner + k, 0), s0, d0)
                    e0 = vfma(vload(packed, base + 3 * inner + k, 0), s0, e0)
                vstore(acc, 0, v * lanes, vadd(a0, a1))
                vstore(acc, 0, (v + 1) * lanes, vadd(c0, c1))
                vstore(acc, 0, (v + 2) * lanes, vadd(d0, d1))
                vstore(acc, 0, (v + 3) * lanes, vadd(e0, e1))
                v += 4
            while v < vectors:
                base = v * inner
                a0 = vload(bias, 0, v * lanes)
                a1 = vzero(work)
                k = 0
                while k + 2 <= inner:
                    a0 = vfma(vload(packed, base + k, 0), vsplat(z[0, k]), a0)
                    a1 = vfma(vload(packed, base + k + 1, 0), vsplat(z[0, k + 1]), a1)
                    k += 2
                if k < inner:
                    a0 = vfma(vload(packed, base + k, 0), vsplat(z[0, k]), a0)
                vstore(acc, 0, v * lanes, vadd(a0, a1))
                v += 1
            if relu:
                for j in range(hidden):
                    z[0, input_size + j] = _relu(acc[0, j])
            else:
                for j in range(hidden):
                    z[0, input_size + j] = _tanh(acc[0, j])
            if out.size != 0:
                for j in range(hidden):
                    if batch_first:
                        out[b, t, j] = z[0, input_size + j]
                    else:
                        out[t, b, j] = z[0, input_size + j]
        for j in range(hidden):
            h_n[b, j] = z[0, input_size + j]


@njit(**JIT)
def forward_small(x, w_ih, w_hh, b_ih, b_hh, out, h_n, relu):
    """The plain call (:func:`fastrnn._api.forward`'s fast path) of one small
    sequence (B = 1, H <= SMALL_MAX_HIDDEN; any B computes correctly): x
    (B, T, I) batch first, no h0, every other option at its default. Fewer
    arguments than the backend contract, for a shorter dispatch (Numba's
    costs some 50 ns an argument). The caller has checked the types and
    dimensions only: the shapes are compared here, in compiled code, and a
    mismatch returns False before anything is read."""
    hidden, input_size = w_ih.shape
    if (hidden < 1 or x.shape[2] != input_size or w_hh.shape[0] != hidden
            or w_hh.shape[1] != hidden or (b_ih is not None and b_ih.shape[0] != hidden)
            or (b_hh is not None and b_hh.shape[0] != hidden)):
        return False
    buffer, rows, vectors, joint = _buffer(w_ih, h_n)
    _run(x, w_ih, w_hh, b_ih, b_hh, None, out, h_n, relu, True, buffer, rows, vectors, joint,
         None)
    return True


@njit(**JIT)
def pack_small(w_ih, w_hh, bias):
    """A prepared layer's weights for :func:`direct_small`, packed once: a
    64-byte aligned (vectors + vectors * (I + H), lanes) array, the fused
    bias's rows (zero padded), then :func:`pack_joint` of the weights."""
    hidden, input_size = w_ih.shape
    lanes = VECTOR_BYTES // bias.itemsize
    vectors = (hidden + lanes - 1) // lanes
    packed = aligned_zeros(vectors + vectors * (input_size + hidden), lanes, bias)
    add_biases(packed[:vectors].reshape(vectors * lanes), bias, None)
    pack_joint(w_ih, w_hh, packed[vectors:])
    return packed


@njit(**KERNEL_JIT)
def direct_small(x, packed, h0, out, h_n, relu):
    """A prepared layer's plain call on the small path (fastrnn.Layer): x
    (B, T, I) batch first, h0 (B, H), out (B, T, H), h_n (B, H), from its
    weights packed once (:func:`pack_small`): what :func:`forward_sequences`
    computes (the same loop, the same bits), with its buffer on the stack.
    Compiled without Numba's reference counts, whose wrapping of each
    array argument cost more than a 100-step chunk's steps at H = 8 (see
    .step). Returns False, having done nothing, when the shapes do not fit
    (the caller checks them: a safeguard) or the buffer would not fit
    :data:`.step.STACK_BYTES` (a long input row)."""
    batch, steps, input_size = x.shape
    hidden = h_n.shape[1]
    lanes = VECTOR_BYTES // h_n.itemsize
    vectors = (hidden + lanes - 1) // lanes
    inner = input_size + hidden
    joint = (inner + lanes - 1) // lanes
    rows = 2 * vectors + joint + vectors * inner
    size = rows * lanes + ALIGN_BYTES // h_n.itemsize
    if (size * h_n.itemsize > STACK_BYTES or packed.shape[0] != vectors * (1 + inner)
            or packed.shape[1] != lanes or h0.shape[0] != batch or h0.shape[1] != hidden
            or h_n.shape[0] != batch or out.shape[0] != batch or out.shape[1] != steps
            or out.shape[2] != hidden):
        return False
    buffer = stack_matrix(1, size, h_n)
    # (packed in the weights' places too, unread: they must type as
    # matrices, the branch that packs them is still typed)
    _run(x, packed, packed, None, None, h0, out, h_n, relu, True, buffer[0], rows, vectors,
         joint, packed)
    return True


@njit(**JIT)
def sequences(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first):
    """:func:`forward_sequences`, called from Python (which is also called
    from compiled code, and so must be able to compile the variants it
    needs)."""
    forward_sequences(x, w_ih, w_hh, b_ih, b_hh, h0, out, h_n, relu, batch_first)


# fastrnn._api's plain call calls forward_small as Numba's own dispatcher
# (a Python wrapper would cost a twentieth of the textbook call), which
# FewVariants makes compile one variant for inputs of any layout, read-only
# or not: it compiled one for each layout it met (with a warm cache, a first
# textbook call with a Fortran-ordered x compiled for 3.1 s). The outputs
# keep their exact types: the caller allocates them, C-contiguous (stores
# to arrays of any layout made the textbook call 0.1-0.2 us slower, of 1.7
# in the kernel). Types that no variant takes (a bias given where it was
# None) raise TypeError there, and forward_small_call compiles their
# variant.
forward_small_call = FewVariants(forward_small, inputs=(0, 1, 2, 3, 4), outputs=())

# Called from Python through a few variants (see .jit.FewVariants), with
# every optional argument an array (fastrnn._numba.forward normalises them):
# x, the weights, biases and h0 are read, out and h_n written.
sequences_call = FewVariants(sequences, inputs=(0, 1, 2, 3, 4, 5), outputs=(6, 7))

# A prepared layer's small plain call (fastrnn.Layer), called through the
# variant's own entry point (fastrnn._numba.direct_small): x and h0 of any
# layout, read-only or not.
direct_small_call = FewVariants(direct_small, inputs=(0, 2), outputs=())
