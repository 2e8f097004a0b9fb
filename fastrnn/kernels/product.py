"""A small register-blocked matrix product for Numba kernels.

``matmul_rows(z, rows, inner, packed, acc)`` computes ``acc[:rows] = z[:rows,
:inner] @ W`` for a (K, Hp) matrix W (Hp a multiple of the vector width)
held in ``packed`` by :func:`pack_columns`: in panels of ``PANEL`` vectors of
columns, each panel's K rows stored one after another (row k of a panel is
``PANEL`` vectors, side by side), and a last, shorter panel stored vector by
vector. Each
panel is then one sequential run of memory: when the weights come from L3 the
hardware prefetchers stream it, where rows of the unpacked W^T, one 4 KB page
apart for H = 1024, stopped them at every row (float64, H = 1024: 38 against
52 GFLOP/s on one core).

Blocks of 4 rows x ``PANEL`` vectors keep their accumulators in registers
(the vector width and ``PANEL`` follow the CPU Numba compiles for, see
``.simd.TARGET``: 4 x 4 on AVX-512; on 16 registers (AVX2, AVX, SSE) 6 x 2
where the rows allow, 4 x 2 for the rest); each step of the inner loop
loads ``PANEL`` weight vectors, broadcasts one input per row and issues
rows x ``PANEL`` multiply-adds. Rows left over run as one block of 2 rows (two
chains each, by k mod 2), then a single row (the latency-bound case, B = 1),
which splits the inner loop four ways (k mod 4) with separate accumulators,
so four independent dependency chains run per vector. A single row is bound
by its weight loads, one per multiply-add; the block of 2 shares them
between two rows (one thread, K = H = 1024, GFLOP/s, AMD Zen 4: float32 two
rows 92 against 45 as two single rows, three rows 74 against 50; compiled for
haswell 88 against 45 and 69 against 47; float64 about the same ratios).
Every block sums ``BLOCK`` values of k in
registers and adds them to ``acc`` (float32; float64 sums all of K in one
block): float32 sums over K = 1024 stay as accurate as PyTorch's. A sum
depends on its row's place in the blocks (4 rows, one chain each; 2 rows,
two chains; one row, four), never on its vector's place: the callers keep
the rows' blocks the same whatever the threads (see .driver). ``packed``
and ``acc`` are 64-byte aligned (see :func:`aligned_zeros`): unaligned 64-byte
loads split cache lines and halved the speed on AVX-512.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .jit import JIT, KERNEL_JIT
from .simd import TARGET, VECTOR_BYTES, prefetch_read, vadd, vfma, vload, vsplat, vstore, vzero

# Buffers start on a cache line: unaligned vector loads that split cache
# lines halved the speed of the product on AVX-512.
ALIGN_BYTES = 64
# Vectors of units per panel of packed weights, and so per register block
# (4 samples x PANEL vectors of accumulators, PANEL weight vectors and one
# broadcast input live at once): 4 x 4 fills 32 AVX-512 (or NEON)
# registers; with 16 (AVX2, AVX, SSE) 4 x 2 fits.
PANEL = 4 if TARGET.registers >= 32 else 2
# With 2 vectors a panel, the rows run 6 at a time where they can (_rows6_panel).
SIX_ROWS = PANEL == 2
# With 2 vectors a panel (one 64-byte line a k), the blocks of 4 and 6 rows
# ask for the line PREFETCH values of k ahead (prefetcht0): the first block
# of rows over a panel reads it from L3 or memory, where the hardware's
# prefetchers alone left it waiting on the loads (perf: a quarter of the
# samples on the first weight load). Compiled for haswell, one thread, B =
# 32, K = H = 1024, paired in one process against no prefetch: float64
# two 8 MB matrices in turn (a forward's w_ih and w_hh) 1.17x at 32 (1.14x
# at 16, 1.19x at 64), one matrix 1.04x; float32 1.02x and 0.99x; weights
# in L2 (H = 256) 1.00x.
PREFETCH = 32 if PANEL == 2 else 0
# k is summed in blocks of BLOCK: each block's products in registers from
# zero, then added to acc. One chain per lane over all of K let the float32
# rounding error grow with the running sum: (32, 50, 1024, 1024) had 2.7x
# PyTorch's error against a float64 reference, one step's pre-activations 3x
# (bench/accuracy.py); in blocks of 64, 0.7x. The error grows about as
# sqrt(K * BLOCK) + K / sqrt(BLOCK): 32 would be a little more accurate, but
# its extra stores and loop exits cost more time (up to 15% at K = 1024).
# float64 sums need no blocks (its rounding error over K = 1024 is some
# 1e-13 of the sum): one block of all of K, as the release before issue 12
# (12a0eb6) summed. Blocks of 64 made float64 (128, 100, 256, 512) 1.036x
# and (1, 10 000, 1, 1000) 1.016x that release's time; one block, 1.007x
# and 1.000x (one process, 16 interleaved rounds, against the release and a
# copy of it: 0.999x, 1.007x).
BLOCK = 64
WIDE_BLOCK = 1 << 62


@njit(**dict(KERNEL_JIT, inline="always"))
def block_of(acc):
    """Values of k summed in registers before they are added to ``acc``:
    :data:`BLOCK` for float32, all of them for float64 (a constant when
    compiled: the dtype is part of the type)."""
    return BLOCK if acc.itemsize == 4 else WIDE_BLOCK


@njit(**JIT)
def aligned_zeros(rows, cols, like):
    """Zeros of shape (rows, cols) and ``like``'s dtype, 64-byte aligned."""
    buffer = aligned_empty(rows, cols, like)
    buffer[:] = 0
    return buffer


@njit(**JIT)
def aligned_empty(rows, cols, like):
    """An uninitialised (rows, cols) array of ``like``'s dtype, 64-byte
    aligned: for a workspace whose every value is written before it is read
    (zeroing a 100-step chunk's 26 KB took 0.4 us of its 20)."""
    size = rows * cols
    pad = ALIGN_BYTES // like.itemsize
    buffer = np.empty(size + pad, dtype=like.dtype)
    offset = ((ALIGN_BYTES - buffer.ctypes.data % ALIGN_BYTES) % ALIGN_BYTES) // like.itemsize
    return buffer[offset:offset + size].reshape(rows, cols)


@njit(**KERNEL_JIT)
def pack_columns(w, u0, u1, packed):
    """``packed`` (zeroed, ``vectors * K`` rows of ``lanes``, ``vectors * lanes``
    >= u1 - u0) <- W = w[u0:u1].T in panels, for :func:`matmul_rows` with an
    ``acc`` of ``vectors * lanes`` columns; w is (H, K) in any layout."""
    inner = w.shape[1]
    if inner == 0:
        return
    # The panels follow the packed width, which may hold more vectors than
    # the units need (a sparse w_hh's state has a padding column): matmul_rows
    # cuts the same width into the same panels. (Cut by the units' vectors
    # instead, float64 H = 20 on AVX2 packed its last vector alone where the
    # product read a panel of two: wrong sums for units 16-19.)
    lanes = VECTOR_BYTES // packed.itemsize  # a constant: no division at run time
    vectors = packed.shape[0] // inner
    full = vectors // PANEL * PANEL
    # Row by row of w (read front to back: 0.69 ms for a 1024 x 1024 float32
    # matrix, where writing each packed row whole, from `lanes` rows of w
    # 4 KB apart, took 1.42 ms).
    for j in range(u1 - u0):
        v = j // lanes
        lane = j - v * lanes
        # Vector v's row for k: its panel's start + PANEL k + v % PANEL in a
        # full panel, start + k in the last one.
        if v < full:
            start, stride = (v - v % PANEL) * inner + v % PANEL, PANEL
        else:
            start, stride = v * inner, 1
        for k in range(inner):
            packed[start + stride * k, lane] = w[u0 + j, k]


# Vectors after the first of a panel, each clamped into the panel: a
# panel of fewer than 4 vectors loads a row it already has instead of one
# past its end (LLVM merges the loads, and drops the multiply-adds whose
# accumulators are never stored).
_V1, _V2, _V3 = min(1, PANEL - 1), min(2, PANEL - 1), min(3, PANEL - 1)


@njit(**KERNEL_JIT)
def _put(acc, r, j, a, first):
    # The first block of k stores its sums; later blocks add theirs. (z is
    # indexed with np.uintp(k) in the blocks: k from range(k0, ...) is not
    # known to be >= 0, and the wraparound for negative indices cost three
    # instructions per load and halved the unrolling.)
    if first:
        vstore(acc, r, j, a)
    else:
        vstore(acc, r, j, vadd(vload(acc, r, j), a))


@njit(**KERNEL_JIT)
def _rows4_panel(z, r, inner, w, base, acc, j):
    # Rows r..r+3 x one panel of PANEL vectors: 4 * PANEL accumulators, per
    # block of BLOCK k (see BLOCK).
    lanes = VECTOR_BYTES // acc.itemsize
    j1 = j + lanes
    j2 = j + 2 * lanes
    j3 = j + 3 * lanes
    r1 = r + 1
    r2 = r + 2
    r3 = r + 3
    for k0 in range(0, inner, block_of(acc)):
        a00 = vzero(acc)
        a01 = vzero(acc)
        a02 = vzero(acc)
        a03 = vzero(acc)
        a10 = vzero(acc)
        a11 = vzero(acc)
        a12 = vzero(acc)
        a13 = vzero(acc)
        a20 = vzero(acc)
        a21 = vzero(acc)
        a22 = vzero(acc)
        a23 = vzero(acc)
        a30 = vzero(acc)
        a31 = vzero(acc)
        a32 = vzero(acc)
        a33 = vzero(acc)
        for k in range(k0, min(k0 + block_of(acc), inner)):
            q = base + PANEL * k
            if PREFETCH > 0:
                prefetch_read(w, q + PANEL * PREFETCH, 0)
            w0 = vload(w, q, 0)
            w1 = vload(w, q + _V1, 0)
            w2 = vload(w, q + _V2, 0)
            w3 = vload(w, q + _V3, 0)
            s = vsplat(z[r, np.uintp(k)])
            a00 = vfma(w0, s, a00)
            a01 = vfma(w1, s, a01)
            a02 = vfma(w2, s, a02)
            a03 = vfma(w3, s, a03)
            s = vsplat(z[r1, np.uintp(k)])
            a10 = vfma(w0, s, a10)
            a11 = vfma(w1, s, a11)
            a12 = vfma(w2, s, a12)
            a13 = vfma(w3, s, a13)
            s = vsplat(z[r2, np.uintp(k)])
            a20 = vfma(w0, s, a20)
            a21 = vfma(w1, s, a21)
            a22 = vfma(w2, s, a22)
            a23 = vfma(w3, s, a23)
            s = vsplat(z[r3, np.uintp(k)])
            a30 = vfma(w0, s, a30)
            a31 = vfma(w1, s, a31)
            a32 = vfma(w2, s, a32)
            a33 = vfma(w3, s, a33)
        first = k0 == 0
        _put(acc, r, j, a00, first)
        _put(acc, r1, j, a10, first)
        _put(acc, r2, j, a20, first)
        _put(acc, r3, j, a30, first)
        if PANEL > 1:
            _put(acc, r, j1, a01, first)
            _put(acc, r1, j1, a11, first)
            _put(acc, r2, j1, a21, first)
            _put(acc, r3, j1, a31, first)
        if PANEL > 2:
            _put(acc, r, j2, a02, first)
            _put(acc, r1, j2, a12, first)
            _put(acc, r2, j2, a22, first)
            _put(acc, r3, j2, a32, first)
        if PANEL > 3:
            _put(acc, r, j3, a03, first)
            _put(acc, r1, j3, a13, first)
            _put(acc, r2, j3, a23, first)
            _put(acc, r3, j3, a33, first)
    if inner == 0:
        _zero_rows(acc, r, 4, j, PANEL)


@njit(**KERNEL_JIT)
def _rows6_panel(z, r, inner, w, base, acc, j):
    # Rows r..r+5 x one panel of 2 vectors (16-register targets: AVX2, AVX,
    # SSE): 12 accumulators, 2 weight vectors and one broadcast input fill
    # 15 of the 16 registers. The 4 x 2 block kept 8 multiply-adds in
    # flight, exactly the FMA units' latency times their throughput on AMD
    # Zen (4 x 2) and less than Intel Haswell's (5 x 2), so any stall cost
    # time; 12 leave slack, and each weight vector feeds 6 rows, not 4. Each
    # row sums as in the block of 4 (one chain per lane, per block of BLOCK
    # k): the same bits whichever of the two blocks a row falls in.
    lanes = VECTOR_BYTES // acc.itemsize
    j1 = j + lanes
    r1 = r + 1
    r2 = r + 2
    r3 = r + 3
    r4 = r + 4
    r5 = r + 5
    for k0 in range(0, inner, block_of(acc)):
        a00 = vzero(acc)
        a01 = vzero(acc)
        a10 = vzero(acc)
        a11 = vzero(acc)
        a20 = vzero(acc)
        a21 = vzero(acc)
        a30 = vzero(acc)
        a31 = vzero(acc)
        a40 = vzero(acc)
        a41 = vzero(acc)
        a50 = vzero(acc)
        a51 = vzero(acc)
        for k in range(k0, min(k0 + block_of(acc), inner)):
            q = base + 2 * k
            if PREFETCH > 0:
                prefetch_read(w, q + 2 * PREFETCH, 0)
            w0 = vload(w, q, 0)
            w1 = vload(w, q + 1, 0)
            s = vsplat(z[r, np.uintp(k)])
            a00 = vfma(w0, s, a00)
            a01 = vfma(w1, s, a01)
            s = vsplat(z[r1, np.uintp(k)])
            a10 = vfma(w0, s, a10)
            a11 = vfma(w1, s, a11)
            s = vsplat(z[r2, np.uintp(k)])
            a20 = vfma(w0, s, a20)
            a21 = vfma(w1, s, a21)
            s = vsplat(z[r3, np.uintp(k)])
            a30 = vfma(w0, s, a30)
            a31 = vfma(w1, s, a31)
            s = vsplat(z[r4, np.uintp(k)])
            a40 = vfma(w0, s, a40)
            a41 = vfma(w1, s, a41)
            s = vsplat(z[r5, np.uintp(k)])
            a50 = vfma(w0, s, a50)
            a51 = vfma(w1, s, a51)
        first = k0 == 0
        _put(acc, r, j, a00, first)
        _put(acc, r1, j, a10, first)
        _put(acc, r2, j, a20, first)
        _put(acc, r3, j, a30, first)
        _put(acc, r4, j, a40, first)
        _put(acc, r5, j, a50, first)
        _put(acc, r, j1, a01, first)
        _put(acc, r1, j1, a11, first)
        _put(acc, r2, j1, a21, first)
        _put(acc, r3, j1, a31, first)
        _put(acc, r4, j1, a41, first)
        _put(acc, r5, j1, a51, first)
    if inner == 0:
        _zero_rows(acc, r, 6, j, 2)


@njit(**KERNEL_JIT)
def _rows2_panels(z, r, inner, w, acc, v0, v1):
    # Two rows x the full panels of vectors v0..v1 - 1 (v0, v1 multiples of
    # PANEL): each weight vector loaded once for both rows (one row is
    # bound by those loads: rows 2 and 3 run as fast as a pair
    # of single rows ran, float32 H = 1024, 49 against 47 GFLOP/s one row;
    # a block of 4 rows, 107). Two chains per row by k mod 2 keep
    # 4 * PANEL multiply-adds in flight; the last value of an odd block
    # joins the first chain.
    lanes = VECTOR_BYTES // acc.itemsize
    for v in range(v0, v1, PANEL):
        base = v * inner
        j = v * lanes
        j1 = j + lanes
        j2 = j + 2 * lanes
        j3 = j + 3 * lanes
        r1 = r + 1
        for k0 in range(0, inner, block_of(acc)):
            a0 = vzero(acc)
            a1 = vzero(acc)
            a2 = vzero(acc)
            a3 = vzero(acc)
            b0 = vzero(acc)
            b1 = vzero(acc)
            b2 = vzero(acc)
            b3 = vzero(acc)
            c0 = vzero(acc)
            c1 = vzero(acc)
            c2 = vzero(acc)
            c3 = vzero(acc)
            d0 = vzero(acc)
            d1 = vzero(acc)
            d2 = vzero(acc)
            d3 = vzero(acc)
            count = min(block_of(acc), inner - k0)
            for i in range(count // 2):
                k = k0 + 2 * i
                q = base + PANEL * k
                w0 = vload(w, q, 0)
                w1 = vload(w, q + _V1, 0)
                w2 = vload(w, q + _V2, 0)
                w3 = vload(w, q + _V3, 0)
                s = vsplat(z[r, np.uintp(k)])
                a0 = vfma(w0, s, a0)
                a1 = vfma(w1, s, a1)
                a2 = vfma(w2, s, a2)
                a3 = vfma(w3, s, a3)
                s = vsplat(z[r1, np.uintp(k)])
                c0 = vfma(w0, s, c0)
                c1 = vfma(w1, s, c1)
                c2 = vfma(w2, s, c2)
                c3 = vfma(w3, s, c3)
                q += PANEL
                w0 = vload(w, q, 0)
                w1 = vload(w, q + _V1, 0)
                w2 = vload(w, q + _V2, 0)
                w3 = vload(w, q + _V3, 0)
                s = vsplat(z[r, np.uintp(k + 1)])
                b0 = vfma(w0, s, b0)
                b1 = vfma(w1, s, b1)
                b2 = vfma(w2, s, b2)
                b3 = vfma(w3, s, b3)
                s = vsplat(z[r1, np.uintp(k + 1)])
                d0 = vfma(w0, s, d0)
                d1 = vfma(w1, s, d1)
                d2 = vfma(w2, s, d2)
                d3 = vfma(w3, s, d3)
            if count % 2:
                k = k0 + count - 1
                q = base + PANEL * k
                w0 = vload(w, q, 0)
                w1 = vload(w, q + _V1, 0)
                w2 = vload(w, q + _V2, 0)
                w3 = vload(w, q + _V3, 0)
                s = vsplat(z[r, np.uintp(k)])
                a0 = vfma(w0, s, a0)
                a1 = vfma(w1, s, a1)
                a2 = vfma(w2, s, a2)
                a3 = vfma(w3, s, a3)
                s = vsplat(z[r1, np.uintp(k)])
                c0 = vfma(w0, s, c0)
                c1 = vfma(w1, s, c1)
                c2 = vfma(w2, s, c2)
                c3 = vfma(w3, s, c3)
            first = k0 == 0
            _put(acc, r, j, vadd(a0, b0), first)
            _put(acc, r1, j, vadd(c0, d0), first)
            if PANEL > 1:
                _put(acc, r, j1, vadd(a1, b1), first)
                _put(acc, r1, j1, vadd(c1, d1), first)
            if PANEL > 2:
                _put(acc, r, j2, vadd(a2, b2), first)
                _put(acc, r1, j2, vadd(c2, d2), first)
            if PANEL > 3:
                _put(acc, r, j3, vadd(a3, b3), first)
                _put(acc, r1, j3, vadd(c3, d3), first)
        if inner == 0:
            _zero_rows(acc, r, 2, j, PANEL)


@njit(**KERNEL_JIT)
def _row1_panels(z, r, inner, w, acc, v0, v1):
    # One row x the full panels of vectors v0..v1 - 1 (v0, v1 multiples of
    # PANEL). The chain of dependent adds, not throughput, bounds the time,
    # so k accumulates in four chains by k mod 4 (4 * PANEL accumulators),
    # per block of BLOCK k; the last count % 4 values of a block join the
    # first chain. (Two chains kept one multiply-add in flight per cycle,
    # half of what the FMA units take.)
    lanes = VECTOR_BYTES // acc.itemsize
    for v in range(v0, v1, PANEL):
        base = v * inner
        j = v * lanes
        j1 = j + lanes
        j2 = j + 2 * lanes
        j3 = j + 3 * lanes
        for k0 in range(0, inner, block_of(acc)):
            a0 = vzero(acc)
            a1 = vzero(acc)
            a2 = vzero(acc)
            a3 = vzero(acc)
            b0 = vzero(acc)
            b1 = vzero(acc)
            b2 = vzero(acc)
            b3 = vzero(acc)
            c0 = vzero(acc)
            c1 = vzero(acc)
            c2 = vzero(acc)
            c3 = vzero(acc)
            d0 = vzero(acc)
            d1 = vzero(acc)
            d2 = vzero(acc)
            d3 = vzero(acc)
            count = min(block_of(acc), inner - k0)
            for i in range(count // 4):
                k = k0 + 4 * i
                q = base + PANEL * k
                s = vsplat(z[r, np.uintp(k)])
                a0 = vfma(vload(w, q, 0), s, a0)
                a1 = vfma(vload(w, q + _V1, 0), s, a1)
                a2 = vfma(vload(w, q + _V2, 0), s, a2)
                a3 = vfma(vload(w, q + _V3, 0), s, a3)
                q += PANEL
                s = vsplat(z[r, np.uintp(k + 1)])
                b0 = vfma(vload(w, q, 0), s, b0)
                b1 = vfma(vload(w, q + _V1, 0), s, b1)
                b2 = vfma(vload(w, q + _V2, 0), s, b2)
                b3 = vfma(vload(w, q + _V3, 0), s, b3)
                q += PANEL
                s = vsplat(z[r, np.uintp(k + 2)])
                c0 = vfma(vload(w, q, 0), s, c0)
                c1 = vfma(vload(w, q + _V1, 0), s, c1)
                c2 = vfma(vload(w, q + _V2, 0), s, c2)
                c3 = vfma(vload(w, q + _V3, 0), s, c3)
                q += PANEL
                s = vsplat(z[r, np.uintp(k + 3)])
                d0 = vfma(vload(w, q, 0), s, d0)
                d1 = vfma(vload(w, q + _V1, 0), s, d1)
                d2 = vfma(vload(w, q + _V2, 0), s, d2)
                d3 = vfma(vload(w, q + _V3, 0), s, d3)
            for k in range(k0 + count - count % 4, k0 + count):
                q = base + PANEL * k
                s = vsplat(z[r, np.uintp(k)])
                a0 = vfma(vload(w, q, 0), s, a0)
                a1 = vfma(vload(w, q + _V1, 0), s, a1)
                a2 = vfma(vload(w, q + _V2, 0), s, a2)
                a3 = vfma(vload(w, q + _V3, 0), s, a3)
            first = k0 == 0
            _put(acc, r, j, vadd(vadd(a0, b0), vadd(c0, d0)), first)
            if PANEL > 1:
                _put(acc, r, j1, vadd(vadd(a1, b1), vadd(c1, d1)), first)
            if PANEL > 2:
                _put(acc, r, j2, vadd(vadd(a2, b2), vadd(c2, d2)), first)
            if PANEL > 3:
                _put(acc, r, j3, vadd(vadd(a3, b3), vadd(c3, d3)), first)
        if inner == 0:
            _zero_rows(acc, r, 1, j, PANEL)


@njit(**KERNEL_JIT)
def _rows4_vecs1(z, r, inner, w, base, acc, j):
    # The last panel's vectors, one at a time.
    for k0 in range(0, inner, block_of(acc)):
        a0 = vzero(acc)
        a1 = vzero(acc)
        a2 = vzero(acc)
        a3 = vzero(acc)
        for k in range(k0, min(k0 + block_of(acc), inner)):
            wv = vload(w, base + k, 0)
            a0 = vfma(wv, vsplat(z[r, np.uintp(k)]), a0)
            a1 = vfma(wv, vsplat(z[r + 1, np.uintp(k)]), a1)
            a2 = vfma(wv, vsplat(z[r + 2, np.uintp(k)]), a2)
            a3 = vfma(wv, vsplat(z[r + 3, np.uintp(k)]), a3)
        first = k0 == 0
        _put(acc, r, j, a0, first)
        _put(acc, r + 1, j, a1, first)
        _put(acc, r + 2, j, a2, first)
        _put(acc, r + 3, j, a3, first)
    if inner == 0:
        _zero_rows(acc, r, 4, j, 1)


@njit(**KERNEL_JIT)
def _rows2_vecs1(z, r, inner, w, base, acc, j):
    # The last panel's vectors, one at a time, for two rows: two chains
    # per row by k mod 2, as _rows2_panels.
    for k0 in range(0, inner, block_of(acc)):
        a0 = vzero(acc)
        b0 = vzero(acc)
        c0 = vzero(acc)
        d0 = vzero(acc)
        count = min(block_of(acc), inner - k0)
        for i in range(count // 2):
            k = k0 + 2 * i
            wv = vload(w, base + k, 0)
            a0 = vfma(wv, vsplat(z[r, np.uintp(k)]), a0)
            c0 = vfma(wv, vsplat(z[r + 1, np.uintp(k)]), c0)
            wv = vload(w, base + k + 1, 0)
            b0 = vfma(wv, vsplat(z[r, np.uintp(k + 1)]), b0)
            d0 = vfma(wv, vsplat(z[r + 1, np.uintp(k + 1)]), d0)
        if count % 2:
            k = k0 + count - 1
            wv = vload(w, base + k, 0)
            a0 = vfma(wv, vsplat(z[r, np.uintp(k)]), a0)
            c0 = vfma(wv, vsplat(z[r + 1, np.uintp(k)]), c0)
        first = k0 == 0
        _put(acc, r, j, vadd(a0, b0), first)
        _put(acc, r + 1, j, vadd(c0, d0), first)
    if inner == 0:
        _zero_rows(acc, r, 2, j, 1)


@njit(**KERNEL_JIT)
def _rows1_vecs1(z, r, inner, w, base, acc, j):
    # Four chains by k mod 4, per block, as _row1_panels: a vector's sums do
    # not depend on whether it falls in a full panel or the last one.
    for k0 in range(0, inner, block_of(acc)):
        a0 = vzero(acc)
        b0 = vzero(acc)
        c0 = vzero(acc)
        d0 = vzero(acc)
        count = min(block_of(acc), inner - k0)
        for i in range(count // 4):
            k = k0 + 4 * i
            a0 = vfma(vload(w, base + k, 0), vsplat(z[r, np.uintp(k)]), a0)
            b0 = vfma(vload(w, base + k + 1, 0), vsplat(z[r, np.uintp(k + 1)]), b0)
            c0 = vfma(vload(w, base + k + 2, 0), vsplat(z[r, np.uintp(k + 2)]), c0)
            d0 = vfma(vload(w, base + k + 3, 0), vsplat(z[r, np.uintp(k + 3)]), d0)
        for k in range(k0 + count - count % 4, k0 + count):
            a0 = vfma(vload(w, base + k, 0), vsplat(z[r, np.uintp(k)]), a0)
        _put(acc, r, j, vadd(vadd(a0, b0), vadd(c0, d0)), k0 == 0)
    if inner == 0:
        _zero_rows(acc, r, 1, j, 1)


@njit(**KERNEL_JIT)
def _zero_rows(acc, r, rows, j, vectors):
    # An empty product (inner == 0) is zero, as the unblocked loops stored.
    lanes = VECTOR_BYTES // acc.itemsize
    for i in range(r, r + rows):
        for v in range(vectors):
            vstore(acc, i, j + v * lanes, vzero(acc))


@njit(**KERNEL_JIT)
def matmul_rows(z, rows, inner, packed, acc):
    """acc[:rows] = z[:rows, :inner] @ W, W packed by :func:`pack_columns`
    with as many vectors as acc is wide (see module docstring)."""
    lanes = VECTOR_BYTES // acc.itemsize
    vectors = acc.shape[1] // lanes
    full = vectors // PANEL * PANEL
    # The rows summed one chain per lane (see the module docstring): those
    # of the blocks of 4, whatever the blocks; on 16 registers as many as
    # possible in blocks of 6 (see _rows6_panel), the rest (0, 4 or 8) in
    # blocks of 4.
    single = rows - rows % 4
    sixes = single // 6 if SIX_ROWS else 0
    if sixes > 0 and single - 6 * sixes == 2:
        sixes -= 1
    v = 0
    if rows <= 2:
        # One or two samples (a stream, B = 1): every panel in one call, the
        # same sums as a panel at a time. A call per panel cost float32 (1,
        # 100 000, 8, 64) on AVX2 (8 vectors: 4 panels) 1.16x the time of
        # the release before issue 12 (12a0eb6, whose one-row block took all
        # 4 of its 512-bit vectors in one call); one call, 0.92x (paired in
        # one process, 9 rounds). (Three rows stay a panel at a time: their
        # two calls over every panel read the weights twice, and at H = 1024
        # from L3, a step took 1.16-1.19x as long.)
        if rows == 2:
            _rows2_panels(z, 0, inner, packed, acc, 0, full)
        else:
            _row1_panels(z, 0, inner, packed, acc, 0, full)
        v = full
    while v < full:
        base = v * inner
        r = 0
        for _ in range(sixes):
            _rows6_panel(z, r, inner, packed, base, acc, v * lanes)
            r += 6
        while r + 4 <= rows:
            _rows4_panel(z, r, inner, packed, base, acc, v * lanes)
            r += 4
        if r + 2 <= rows:
            _rows2_panels(z, r, inner, packed, acc, v, v + PANEL)
            r += 2
        if r < rows:
            _row1_panels(z, r, inner, packed, acc, v, v + PANEL)
        v += PANEL
    while v < vectors:
        base = v * inner
        r = 0
        while r + 4 <= rows:
            _rows4_vecs1(z, r, inner, packed, base, acc, v * lanes)
            r += 4
        if r + 2 <= rows:
            _rows2_vecs1(z, r, inner, packed, base, acc, v * lanes)
            r += 2
        if r < rows:
            _rows1_vecs1(z, r, inner, packed, base, acc, v * lanes)
        v += 1
