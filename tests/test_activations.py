"""fastrnn.kernels.activations: the vectorisable tanh and relu used inside the Numba kernels.

They only run inside Numba code, so each is applied elementwise by a small
compiled wrapper, with the same fastmath and error-model flags as the kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from fastrnn.kernels import activations as _activations  # noqa: E402  (imports Numba)

DTYPES = [np.float32, np.float64]


@numba.njit(fastmath={"contract"}, error_model="numpy")
def _apply_tanh(values):
    result = np.empty_like(values)
    for i in range(values.size):
        result[i] = _activations.tanh(values[i])
    return result


@numba.njit(fastmath={"contract"}, error_model="numpy")
def _apply_relu(values):
    result = np.empty_like(values)
    for i in range(values.size):
        result[i] = _activations.relu(values[i])
    return result


def _tanh(values, dtype):
    values = np.asarray(values, dtype=dtype)
    result = _apply_tanh(values)
    assert result.dtype == values.dtype
    return result


def _grid(dtype) -> np.ndarray:
    """Sorted values covering the whole float range of ``dtype``: dense over
    [-30, 30], then every binade from the smallest subnormal to the largest
    finite value, both signs, with +-0."""
    info = np.finfo(dtype)
    dense = np.linspace(-30.0, 30.0, 600_001).astype(dtype)
    # 16 mantissas in every binade 2**e, e from the smallest subnormal's to the
    # largest finite value's; np.ldexp rounds the subnormal ones.
    exponents = np.arange(info.minexp - info.nmant, info.maxexp)
    mantissas = np.linspace(1.0, 2.0, 16, endpoint=False, dtype=dtype)
    magnitudes = np.ldexp(mantissas[np.newaxis, :], exponents[:, np.newaxis]).ravel()
    magnitudes = np.concatenate([magnitudes, [info.smallest_subnormal, info.smallest_normal,
                                              info.eps, 1.0, info.max]]).astype(dtype)
    assert np.isfinite(magnitudes).all() and (magnitudes > 0).all()
    grid = np.concatenate([dense, magnitudes, -magnitudes, np.array([0.0], dtype=dtype)])
    return np.unique(grid)  # sorted; -0.0 and 0.0 are one value here


def _bit_patterns(dtype, seed) -> np.ndarray:
    """Finite non-negative floats spread evenly over their bit patterns (so
    evenly over every binade): every 1021st float32, or 2 million random float64."""
    if np.dtype(dtype) == np.float32:
        return np.arange(0, 0x7F800000, 1021, dtype=np.uint32).view(np.float32)
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 0x7FF0000000000000, 2_000_000, dtype=np.uint64)
    return np.sort(bits.view(np.float64))


def _max_abs_error(values, dtype) -> float:
    result = _tanh(values, dtype).astype(np.float64)
    expected = np.tanh(values.astype(np.float64))
    return float(np.max(np.abs(result - expected)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_accuracy_grid(dtype, tanh_max_abs_error):
    assert _max_abs_error(_grid(dtype), dtype) <= tanh_max_abs_error[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_accuracy_bit_patterns(dtype, tanh_max_abs_error):
    values = _bit_patterns(dtype, seed=0)
    bound = tanh_max_abs_error[np.dtype(dtype)]
    assert _max_abs_error(values, dtype) <= bound
    assert _max_abs_error(-values, dtype) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_accuracy_near_the_path_switches(dtype, tanh_max_abs_error):
    # Where the float32 version stops returning x (0.0004) and clamps (7.905),
    # and the float64 version switches formulas (0.625) and saturates (19.1):
    # every float within a few thousand ULPs of each.
    points = [4e-4, 7.90531110763549805, 0.625, 19.1]
    values = []
    for point in points:
        center = np.asarray(point, dtype=dtype)
        below = center
        above = center
        for _ in range(4000):
            below = np.nextafter(below, dtype(-np.inf))
            above = np.nextafter(above, dtype(np.inf))
            values += [below, above]
        values.append(center)
    values = np.array(values, dtype=dtype)
    bound = tanh_max_abs_error[np.dtype(dtype)]
    assert _max_abs_error(values, dtype) <= bound
    assert _max_abs_error(-values, dtype) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_infinities(dtype, tanh_max_abs_error):
    result = _tanh([np.inf, -np.inf], dtype)
    bound = tanh_max_abs_error[np.dtype(dtype)]
    np.testing.assert_allclose(result, [1.0, -1.0], rtol=0, atol=bound)
    assert result[0] <= 1.0 and result[1] >= -1.0


@pytest.mark.parametrize(
    "dtype",
    DTYPES,
)
def test_tanh_infinities_exact(dtype):
    np.testing.assert_array_equal(_tanh([np.inf, -np.inf], dtype), [1.0, -1.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_nan(dtype):
    result = _tanh([np.nan, -np.nan], dtype)
    assert np.isnan(result).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_zeros(dtype):
    result = _tanh([0.0, -0.0], dtype)
    np.testing.assert_array_equal(result, [0.0, 0.0])
    assert not np.signbit(result[0])


@pytest.mark.parametrize(
    "dtype",
    DTYPES,
)
def test_tanh_negative_zero_keeps_its_sign(dtype):
    assert np.signbit(_tanh([-0.0], dtype)[0])  # np.tanh(-0.0) is -0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_subnormals(dtype):
    # tanh(x) rounds to x for every |x| this small: the result is x itself.
    info = np.finfo(dtype)
    subnormals = np.geomspace(float(info.smallest_subnormal), float(info.smallest_normal),
                              1000).astype(dtype)
    subnormals = np.concatenate([subnormals, [info.smallest_subnormal, info.smallest_normal],
                                 -subnormals]).astype(dtype)
    np.testing.assert_array_equal(_tanh(subnormals, dtype), subnormals)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_small_values_are_x(dtype):
    # Below these sizes, the correctly rounded tanh(x) is x.
    limit = {np.float32: 1e-4, np.float64: 1e-9}[dtype]
    values = np.geomspace(float(np.finfo(dtype).smallest_normal), limit, 2000).astype(dtype)
    np.testing.assert_array_equal(_tanh(values, dtype), values)
    np.testing.assert_array_equal(_tanh(-values, dtype), -values)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_bounded(dtype):
    for values in (_grid(dtype), _bit_patterns(dtype, seed=1)):
        result = _tanh(values, dtype)
        assert np.all(np.abs(result) <= 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_odd(dtype):
    for values in (_grid(dtype), _bit_patterns(dtype, seed=2)):
        np.testing.assert_array_equal(_tanh(-values, dtype), -_tanh(values, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_sign(dtype):
    values = _grid(dtype)
    result = _tanh(values, dtype)
    np.testing.assert_array_equal(np.sign(result), np.sign(values))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_nearly_monotonic(dtype, tanh_max_abs_error):
    # Any decrease along a sorted grid is within the accuracy bound (twice it:
    # one value may err up, the next down).
    for values in (_grid(dtype), _bit_patterns(dtype, seed=3)):
        steps = np.diff(_tanh(values, dtype).astype(np.float64))
        assert steps.min() >= -2 * tanh_max_abs_error[np.dtype(dtype)]


@pytest.mark.parametrize(
    "dtype",
    [pytest.param(np.float32, marks=pytest.mark.xfail(
        strict=True, raises=AssertionError,
        reason="float32 tanh is not monotonic: between |x| = 1.3 and 7.9 the rational "
               "approximation steps down by up to 7 ULPs (4.2e-7)")),
     np.float64],
)
def test_tanh_monotonic(dtype):
    for values in (_grid(dtype), _bit_patterns(dtype, seed=3)):
        assert np.all(np.diff(_tanh(values, dtype)) >= 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(dtype):
    values = np.array([-np.inf, -1e30, -2.5, -np.finfo(dtype).smallest_subnormal, -0.0, 0.0,
                       np.finfo(dtype).smallest_subnormal, 3.25, 1e30, np.inf, np.nan],
                      dtype=dtype)
    result = _apply_relu(values)
    assert result.dtype == values.dtype
    expected = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, np.finfo(dtype).smallest_subnormal,
                         3.25, 1e30, np.inf, np.nan], dtype=dtype)
    np.testing.assert_array_equal(result, expected)  # NaN kept, at the same place


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_grid(dtype):
    values = _grid(dtype)
    np.testing.assert_array_equal(_apply_relu(values), np.maximum(values, 0))


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_python_call_refused(name):
    with pytest.raises(NotImplementedError, match=rf"fastrnn.kernels.activations.{name} only runs "
                                                  r"inside Numba code"):
        getattr(_activations, name)(0.5)
