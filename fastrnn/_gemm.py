"""A small register-blocked matrix product for Numba kernels.

``matmul_rows(z, rows, inner, w, acc)`` computes ``acc[:rows] = z[:rows, :inner]
@ w[:inner]`` where ``w`` is (K, Hp) with Hp a multiple of the vector width,
64-byte aligned (see :func:`aligned_zeros`), and ``acc`` is (>= rows, Hp),
aligned too. Blocks of 4 rows x 4 vectors keep 16 accumulators in AVX-512
registers; each step of the inner loop loads 4 weight vectors, broadcasts 4
inputs and issues 16 fused multiply-adds. A single row (B = 1: the
latency-bound case) splits the inner loop in two halves with separate
accumulators, so two independent dependency chains run per vector.

Unaligned 64-byte loads split cache lines and halve the speed here, hence the
aligned buffers.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numba import njit

from ._simd import vadd, vfma, vload, vsplat, vstore, vzero


def _cache_available() -> bool:
    # njit(cache=True) raises at decoration when Numba finds no folder it may
    # write its cache to (this package's __pycache__, NUMBA_CACHE_DIR, the
    # user's cache folder): then compile in every process rather than fail.
    try:
        njit(cache=True)(_cache_available)
    except RuntimeError as exc:
        warnings.warn(
            f"fastrnn: Numba cannot cache compiled kernels ({exc}); they will be compiled "
            "again in every process. Point NUMBA_CACHE_DIR at a writable folder to cache them.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


# "contract" lets LLVM fuse multiply-adds. Nothing that assumes finite
# values ("nnan", "ninf") or reorders sums ("reassoc") is enabled, so NaN and
# inf propagate as IEEE arithmetic does.
JIT: dict[str, Any] = dict(cache=_cache_available(), nogil=True, error_model="numpy",
                           fastmath={"contract"})
# The product kernels allocate nothing, so they are compiled without Numba's
# reference counting (_nrt=False): otherwise every array passed between these
# small functions costs atomic increments and decrements in the hot loop.
KERNEL_JIT: dict[str, Any] = dict(JIT, _nrt=False)
ALIGN_BYTES = 64


@njit(**JIT)
def aligned_zeros(rows, cols, like):
    """Zeros of shape (rows, cols) and ``like``'s dtype, 64-byte aligned."""
    size = rows * cols
    pad = ALIGN_BYTES // like.itemsize
    buffer = np.zeros(size + pad, dtype=like.dtype)
    offset = ((ALIGN_BYTES - buffer.ctypes.data % ALIGN_BYTES) % ALIGN_BYTES) // like.itemsize
    return buffer[offset:offset + size].reshape(rows, cols)


@njit(**KERNEL_JIT)
def _rows4_vecs4(z, r, inner, w, acc, j):
    lanes = ALIGN_BYTES // acc.itemsize
    j1 = j + lanes
    j2 = j + 2 * lanes
    j3 = j + 3 * lanes
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
    r1 = r + 1
    r2 = r + 2
    r3 = r + 3
    for k in range(inner):
        w0 = vload(w, k, j)
        w1 = vload(w, k, j1)
        w2 = vload(w, k, j2)
        w3 = vload(w, k, j3)
        s = vsplat(z[r, k])
        a00 = vfma(w0, s, a00)
        a01 = vfma(w1, s, a01)
        a02 = vfma(w2, s, a02)
        a03 = vfma(w3, s, a03)
        s = vsplat(z[r1, k])
        a10 = vfma(w0, s, a10)
        a11 = vfma(w1, s, a11)
        a12 = vfma(w2, s, a12)
        a13 = vfma(w3, s, a13)
        s = vsplat(z[r2, k])
        a20 = vfma(w0, s, a20)
        a21 = vfma(w1, s, a21)
        a22 = vfma(w2, s, a22)
        a23 = vfma(w3, s, a23)
        s = vsplat(z[r3, k])
        a30 = vfma(w0, s, a30)
        a31 = vfma(w1, s, a31)
        a32 = vfma(w2, s, a32)
        a33 = vfma(w3, s, a33)
    vstore(acc, r, j, a00)
    vstore(acc, r, j1, a01)
    vstore(acc, r, j2, a02)
    vstore(acc, r, j3, a03)
    vstore(acc, r1, j, a10)
    vstore(acc, r1, j1, a11)
    vstore(acc, r1, j2, a12)
    vstore(acc, r1, j3, a13)
    vstore(acc, r2, j, a20)
    vstore(acc, r2, j1, a21)
    vstore(acc, r2, j2, a22)
    vstore(acc, r2, j3, a23)
    vstore(acc, r3, j, a30)
    vstore(acc, r3, j1, a31)
    vstore(acc, r3, j2, a32)
    vstore(acc, r3, j3, a33)


@njit(**KERNEL_JIT)
def _rows1_vecs4(z, r, inner, w, acc, j):
    # One row: the chain of dependent adds, not throughput, bounds the time,
    # so even and odd k accumulate separately (8 chains instead of 4).
    lanes = ALIGN_BYTES // acc.itemsize
    j1 = j + lanes
    j2 = j + 2 * lanes
    j3 = j + 3 * lanes
    a0 = vzero(acc)
    a1 = vzero(acc)
    a2 = vzero(acc)
    a3 = vzero(acc)
    b0 = vzero(acc)
    b1 = vzero(acc)
    b2 = vzero(acc)
    b3 = vzero(acc)
    half = inner // 2
    for i in range(half):
        k = 2 * i
        s = vsplat(z[r, k])
        a0 = vfma(vload(w, k, j), s, a0)
        a1 = vfma(vload(w, k, j1), s, a1)
        a2 = vfma(vload(w, k, j2), s, a2)
        a3 = vfma(vload(w, k, j3), s, a3)
        k += 1
        s = vsplat(z[r, k])
        b0 = vfma(vload(w, k, j), s, b0)
        b1 = vfma(vload(w, k, j1), s, b1)
        b2 = vfma(vload(w, k, j2), s, b2)
        b3 = vfma(vload(w, k, j3), s, b3)
    if inner % 2:
        k = inner - 1
        s = vsplat(z[r, k])
        a0 = vfma(vload(w, k, j), s, a0)
        a1 = vfma(vload(w, k, j1), s, a1)
        a2 = vfma(vload(w, k, j2), s, a2)
        a3 = vfma(vload(w, k, j3), s, a3)
    vstore(acc, r, j, vadd(a0, b0))
    vstore(acc, r, j1, vadd(a1, b1))
    vstore(acc, r, j2, vadd(a2, b2))
    vstore(acc, r, j3, vadd(a3, b3))


@njit(**KERNEL_JIT)
def _rows4_vecs1(z, r, inner, w, acc, j):
    a0 = vzero(acc)
    a1 = vzero(acc)
    a2 = vzero(acc)
    a3 = vzero(acc)
    for k in range(inner):
        wv = vload(w, k, j)
        a0 = vfma(wv, vsplat(z[r, k]), a0)
        a1 = vfma(wv, vsplat(z[r + 1, k]), a1)
        a2 = vfma(wv, vsplat(z[r + 2, k]), a2)
        a3 = vfma(wv, vsplat(z[r + 3, k]), a3)
    vstore(acc, r, j, a0)
    vstore(acc, r + 1, j, a1)
    vstore(acc, r + 2, j, a2)
    vstore(acc, r + 3, j, a3)


@njit(**KERNEL_JIT)
def _rows1_vecs1(z, r, inner, w, acc, j):
    a0 = vzero(acc)
    a1 = vzero(acc)
    a2 = vzero(acc)
    a3 = vzero(acc)
    quarter = inner // 4
    for i in range(quarter):
        k = 4 * i
        a0 = vfma(vload(w, k, j), vsplat(z[r, k]), a0)
        a1 = vfma(vload(w, k + 1, j), vsplat(z[r, k + 1]), a1)
        a2 = vfma(vload(w, k + 2, j), vsplat(z[r, k + 2]), a2)
        a3 = vfma(vload(w, k + 3, j), vsplat(z[r, k + 3]), a3)
    for k in range(4 * quarter, inner):
        a0 = vfma(vload(w, k, j), vsplat(z[r, k]), a0)
    vstore(acc, r, j, vadd(vadd(a0, a1), vadd(a2, a3)))


@njit(**KERNEL_JIT)
def matmul_rows(z, rows, inner, w, acc):
    """acc[:rows, :Hp] = z[:rows, :inner] @ w[:inner, :Hp] (see module docstring)."""
    lanes = ALIGN_BYTES // acc.itemsize
    width = w.shape[1]
    block = 4 * lanes
    j = 0
    while j + block <= width:
        r = 0
        while r + 4 <= rows:
            _rows4_vecs4(z, r, inner, w, acc, j)
            r += 4
        while r < rows:
            _rows1_vecs4(z, r, inner, w, acc, j)
            r += 1
        j += block
    while j < width:
        r = 0
        while r + 4 <= rows:
            _rows4_vecs1(z, r, inner, w, acc, j)
            r += 4
        while r < rows:
            _rows1_vecs1(z, r, inner, w, acc, j)
            r += 1
        j += lanes
