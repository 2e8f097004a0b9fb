"""Activations for Numba kernels, written so LLVM vectorises them.

Numba compiles ``math.tanh`` to a scalar libm call (no SVML here), ~40x the
cost of NumPy's vectorised one (8.8 ns against 0.24 ns per value here). These are branch-free:
clamps and path choices are plain comparisons, which LLVM turns into vector
selects, so a loop over the hidden units runs 16 (float32) or 8 (float64)
lanes at a time. NaN propagates (every select keeps a NaN operand), +-inf maps
to +-1, and no ``fastmath`` flag that assumes finite values is used.

Largest absolute errors against float64 ``np.tanh`` are measured in
``tests/test_activations.py`` over the whole float range.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

_F32 = np.float32

# float32: the clamped odd rational approximation Eigen uses for float32
# (numerator degree 13, denominator degree 6, in x**2).
_CLAMP32 = _F32(7.90531110763549805)
_TINY32 = _F32(0.0004)
# From here on float32 tanh rounds to exactly +-1 (tanh(9) = 1 - 3e-8); the
# rational form would stop at 0.99999976.
_ONE32 = _F32(1.0)
_SATURATE32 = _F32(9.0)
_A1, _A3, _A5, _A7 = (_F32(4.89352455891786e-03), _F32(6.37261928875436e-04),
                      _F32(1.48572235717979e-05), _F32(5.12229709037114e-08))
_A9, _A11, _A13 = (_F32(-8.60467152213735e-11), _F32(2.00018790482477e-13),
                   _F32(-2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (_F32(4.89352518554385e-03), _F32(2.26843463243900e-03),
                      _F32(1.18534705686654e-04), _F32(1.19825839466702e-06))


@njit(inline="always")
def _tanh32(x):
    c = _CLAMP32 if x > _CLAMP32 else x
    c = -_CLAMP32 if c < -_CLAMP32 else c
    x2 = c * c
    p = x2 * _A13 + _A11
    p = p * x2 + _A9
    p = p * x2 + _A7
    p = p * x2 + _A5
    p = p * x2 + _A3
    p = p * x2 + _A1
    p = p * c
    q = x2 * _B6 + _B4
    q = q * x2 + _B2
    q = q * x2 + _B0
    r = p / q
    r = _ONE32 if x > _SATURATE32 else r
    r = -_ONE32 if x < -_SATURATE32 else r
    return x if abs(x) < _TINY32 else r


# float64: |x| < 0.625 uses Cephes' rational approximation x + x^3 P(x^2)/Q(x^2);
# beyond it, 1 - 2/(exp(2|x|) + 1) with exp computed as 2^n * e^r,
# |r| <= ln2/2, by Cody-Waite reduction and a degree-13 Taylor polynomial.
# 2^n is built exactly as float(1 << n) (n <= 55), which vectorises, where
# ldexp would not. tanh(19.1) rounds to 1.0, so 2|x| is clamped at 38.2.
_P0, _P1, _P2 = -9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3
_Q1, _Q2, _Q3 = 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # few significant bits: n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_COEFFS = tuple(1.0 / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(14))
(_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13) = _EXP_COEFFS


@njit(inline="always")
def _tanh64(x):
    ax = abs(x)
    z = x * x
    num = (_P0 * z + _P1) * z + _P2
    den = ((z + _Q1) * z + _Q2) * z + _Q3
    y = 2.0 * ax
    y = y if y < 38.2 else 38.2  # also maps NaN and inf to 38.2: safe for the int cast
    n = np.int64(y * _LOG2E + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    # e^r by Estrin's scheme: the terms of Horner's, summed in a tree of
    # depth 5 rather than a chain of 13 multiply-adds. One sequence's next
    # step waits for this latency (textbook forward, float64: 1.40 against
    # 1.50 us for the kernel call).
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    e = (((_E1 * r + _E0) + (_E3 * r + _E2) * r2) + ((_E5 * r + _E4) + (_E7 * r + _E6) * r2) * r4
         + (((_E9 * r + _E8) + (_E11 * r + _E10) * r2) + (_E13 * r + _E12) * r4) * r8)
    e = e * np.float64(np.int64(1) << n)
    # Both forms need a quotient, P/Q or 2/(e + 1): one division serves the
    # form each lane takes (divisions are the slowest vector operation here;
    # 1.31 against 1.41 ns a value).
    small = ax < 0.625
    q = (num if small else 2.0) / (den if small else e + 1.0)
    large = 1.0 - q
    large = -large if x < 0.0 else large
    result = x + x * z * q if small else large
    # Below 1e-8, tanh(x) rounds to x itself; returning x also keeps the sign
    # of -0.0, which the rational form would turn into +0.0.
    result = x if ax < 1e-8 else result
    return x if x != x else result


_tanh32_again = njit(inline="always")(_tanh32.py_func)
_tanh64_again = njit(inline="always")(_tanh64.py_func)


def tanh(x):
    """Vectorisable tanh for float32 or float64 scalars inside Numba code."""
    raise NotImplementedError("fastrnn.kernels.activations.tanh only runs inside Numba code")


@overload(tanh, inline="always")
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    if x == types.float64:
        return lambda x: _tanh64(x)
    return None


def tanh_again(x):
    """:func:`tanh` once more: Numba's IR checks warn when one inlined
    function is inlined twice into one function (a variable out of
    scope), so code that takes tanh in two places calls this in the second."""
    raise NotImplementedError("fastrnn.kernels.activations.tanh_again only runs inside Numba code")


@overload(tanh_again, inline="always")
def _tanh_again_overload(x):
    if x == types.float32:
        return lambda x: _tanh32_again(x)
    if x == types.float64:
        return lambda x: _tanh64_again(x)
    return None


def relu(x):
    """max(x, 0) for float32 or float64 scalars inside Numba code, keeping NaN."""
    raise NotImplementedError("fastrnn.kernels.activations.relu only runs inside Numba code")


@overload(relu, inline="always")
def _relu_overload(x):
    if x == types.float32:
        zero32 = _F32(0.0)
        return lambda x: zero32 if x < zero32 else x
    if x == types.float64:
        return lambda x: 0.0 if x < 0.0 else x
    return None
