"""Shared test configuration: tolerances, random problems and the backend fixture.

Every tolerance of the suite is stated here, once, per dtype. Test modules get
them, and the helpers below, through fixtures (a test module cannot reliably
``import conftest``: bench/ has a conftest.py too).

Random data is always drawn from ``np.random.default_rng(seed)`` inside a test
or a helper, never at import time and never from the global NumPy state.
"""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest

import fastrnn

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
DTYPES = (FLOAT32, FLOAT64)
BACKENDS = ("numba", "numpy")

# fastrnn.forward against tests/naive.py's float64 loop, run on the same
# inputs upcast to float64: float32 results carry float32 rounding; float64
# results differ from the reference only in summation order and the
# vectorised tanh (about 1e-15 measured, even over 2000 steps).
FORWARD_TOLERANCE = {
    FLOAT32: {"rtol": 1e-5, "atol": 1e-5},
    FLOAT64: {"rtol": 1e-12, "atol": 1e-12},
}

# fastrnn.kernels.activations.tanh against float64 np.tanh over the whole float
# range: the largest absolute error allowed (measured: 2.6e-7 and 2.2e-16).
TANH_MAX_ABS_ERROR = {
    FLOAT32: 3e-7,
    FLOAT64: 5e-16,
}
# ... on a CPU without FMA (compiled for x86-64-v2) the float32 polynomial's
# multiply-adds round twice: measured 3.25e-7.
TANH_MAX_ABS_ERROR_WITHOUT_FMA = {
    FLOAT32: 3.5e-7,
    FLOAT64: 5e-16,
}


def make_problem(
    seed: int,
    *,
    batch: int = 2,
    steps: int = 5,
    input_size: int = 3,
    hidden_size: int = 4,
    dtype: np.dtype | type = np.float64,
    batch_first: bool = True,
    unbatched: bool = False,
    b_ih: bool = True,
    b_hh: bool = True,
    h0: bool = False,
) -> dict:
    """Keyword arguments for ``fastrnn.forward`` and ``naive.rnn`` (arrays and
    ``batch_first``), drawn from ``default_rng(seed)``.

    x is standard normal; the weights are scaled by 1/sqrt(fan-in) so that
    the pre-activations stay O(1) and the recurrence is neither saturated nor
    vanishing. Every array is always drawn, in a fixed order, so a seed gives
    the same weights whichever optional arguments are kept.
    """
    rng = np.random.default_rng(seed)
    if unbatched:
        x_shape = (steps, input_size)
        h0_shape = (hidden_size,)
    elif batch_first:
        x_shape = (batch, steps, input_size)
        h0_shape = (batch, hidden_size)
    else:
        x_shape = (steps, batch, input_size)
        h0_shape = (batch, hidden_size)
    arrays = {
        "x": rng.standard_normal(x_shape),
        "w_ih": rng.standard_normal((hidden_size, input_size)) / math.sqrt(max(input_size, 1)),
        "w_hh": rng.standard_normal((hidden_size, hidden_size)) / math.sqrt(hidden_size),
        "b_ih": 0.5 * rng.standard_normal(hidden_size),
        "b_hh": 0.5 * rng.standard_normal(hidden_size),
        "h0": rng.uniform(-1.0, 1.0, h0_shape),
    }
    problem = {name: array.astype(dtype) for name, array in arrays.items()}
    for name, keep in (("b_ih", b_ih), ("b_hh", b_hh), ("h0", h0)):
        if not keep:
            problem[name] = None
    problem["batch_first"] = batch_first
    return problem


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """``actual`` (float32 or float64) equals the float64 ``expected`` within
    the tolerance of ``actual``'s dtype; NaNs must be at the same places."""
    np.testing.assert_allclose(actual, expected, equal_nan=True,
                               **FORWARD_TOLERANCE[np.dtype(actual.dtype)])


def check_forward(problem: dict, backend: str, nonlinearity: str = "tanh",
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``fastrnn.forward`` on ``problem`` and check it against the naive
    reference: shapes, dtypes and values. Returns fastrnn's (output, h_n)."""
    output, h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity, out=out,
                                  backend=backend)
    expected_output, expected_h_n = naive.rnn(**problem, nonlinearity=nonlinearity)
    dtype = np.asarray(problem["x"]).dtype
    assert isinstance(output, np.ndarray) and isinstance(h_n, np.ndarray)
    assert output.dtype == dtype and h_n.dtype == dtype
    assert output.shape == expected_output.shape
    assert h_n.shape == expected_h_n.shape
    assert_close(output, expected_output)
    assert_close(h_n, expected_h_n)
    return output, h_n


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """Each explicit backend in turn ("auto" is tested separately)."""
    return request.param


@pytest.fixture(scope="session")
def forward_tolerance() -> dict:
    return FORWARD_TOLERANCE


@pytest.fixture(scope="session")
def tanh_max_abs_error() -> dict:
    # Only the kernels' tests use it, and they need Numba (the target's
    # features are read when fastrnn.kernels.simd is imported).
    from fastrnn.kernels.simd import TARGET

    return TANH_MAX_ABS_ERROR if TARGET.fma else TANH_MAX_ABS_ERROR_WITHOUT_FMA


# Session-scoped so that Hypothesis tests may use them too.
@pytest.fixture(name="make_problem", scope="session")
def make_problem_fixture():
    return make_problem


@pytest.fixture(name="assert_close", scope="session")
def assert_close_fixture():
    return assert_close


@pytest.fixture(name="check_forward", scope="session")
def check_forward_fixture():
    return check_forward
