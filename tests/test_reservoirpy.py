"""fastrnn reproduces ReservoirPy's ``Reservoir`` states.

ReservoirPy 0.4's update (``reservoirpy/nodes/reservoir.py``, no noise)::

    s = (1 - lr) * s + lr * f(W @ s + Win @ u + bias)

is fastrnn's leaky update with ``w_hh = W`` (sparse or dense, used as given),
``w_ih = Win`` (no bias column), ``b_ih + b_hh = bias`` and ``leak = lr``
(a float or one per unit); the initial state is its ``state["out"]``, zeros
after ``reset()``. The mapping is also what ``fastrnn.benchmark`` uses to time
ReservoirPy against fastrnn, so it is checked here: states within 1e-10 in
float64, over enough steps for any mismatch to show.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

import fastrnn

pytest.importorskip("reservoirpy")
from reservoirpy.nodes import Reservoir  # noqa: E402

TOLERANCE = 1e-10  # float64 states, absolute (states are bounded by 1)


def _reservoir(seed: int, hidden: int, input_size: int, sparse: bool):
    rng = np.random.default_rng(seed)
    w_hh = rng.standard_normal((hidden, hidden)) * (rng.random((hidden, hidden)) < 0.2)
    w_hh *= 0.9 / np.max(np.abs(np.linalg.eigvals(w_hh)))  # spectral radius 0.9
    w_ih = rng.uniform(-1, 1, (hidden, input_size))
    b_ih = 0.2 * rng.standard_normal(hidden)
    b_hh = 0.2 * rng.standard_normal(hidden)
    x = rng.standard_normal((300, input_size))
    return x, w_ih, scipy.sparse.csr_matrix(w_hh) if sparse else w_hh, b_ih, b_hh


def _reservoirpy_states(x, w_ih, w_hh, bias, lr, h0=None):
    node = Reservoir(w_ih.shape[0], lr=lr, W=w_hh, Win=w_ih, bias=bias, activation="tanh")
    node.initialize(x)
    if h0 is not None:
        node.state = {"out": np.array(h0)}
    return node.run(x)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("leak", ["scalar", "per-unit", "one"])
def test_states_match_reservoirpy(backend, sparse, bias, leak):
    hidden, input_size = 40, 3
    x, w_ih, w_hh, b_ih, b_hh = _reservoir(7, hidden, input_size, sparse)
    lr = {"scalar": 0.3, "per-unit": np.linspace(0.05, 1.0, hidden), "one": 1.0}[leak]
    if not bias:
        b_ih = b_hh = None
    expected = _reservoirpy_states(x, w_ih, w_hh, 0.0 if b_ih is None else b_ih + b_hh, lr)

    output, h_n = fastrnn.forward(x, w_ih, w_hh, b_ih, b_hh, leak=lr, backend=backend)
    np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(h_n, expected[-1], rtol=0, atol=TOLERANCE)
    # The mapping is not vacuous: the states move and the leak matters.
    assert np.std(expected) > 0.1


def test_initial_state_and_batch_match_reservoirpy(backend):
    """A non-zero initial state (ReservoirPy's ``state["out"]``) is h0, and a
    batch of sequences is ReservoirPy run on each in turn."""
    hidden, input_size = 30, 2
    x, w_ih, w_hh, b_ih, b_hh = _reservoir(11, hidden, input_size, sparse=True)
    rng = np.random.default_rng(12)
    batch = np.stack([x, x[::-1], 0.5 * x])  # (3, T, I)
    h0 = rng.uniform(-1, 1, (3, hidden))
    expected = np.stack([_reservoirpy_states(seq, w_ih, w_hh, b_ih + b_hh, 0.5, h)
                         for seq, h in zip(batch, h0, strict=True)])

    output, h_n = fastrnn.forward(batch, w_ih, w_hh, b_ih, b_hh, h0, leak=0.5, backend=backend)
    np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(h_n, expected[:, -1], rtol=0, atol=TOLERANCE)


def test_benchmark_mapping_matches_fastrnn():
    """fastrnn.benchmark's ReservoirPy factory, on a reservoir case's kind of
    problem, gives fastrnn's states: the report compares like with like."""
    from fastrnn.benchmark import (
        IMPLEMENTATIONS,
        ReservoirCase,
        make_reservoir_problem,
        reservoir_inputs,
    )

    problem, leak = make_reservoir_problem(ReservoirCase((2, 500, 2, 50)), np.float64)
    expected = IMPLEMENTATIONS["fastrnn-numpy"].factory(*problem, leak=leak)()
    for name in ("reservoirpy", "fastrnn-numba", "fastrnn-numba-dense"):
        impl = IMPLEMENTATIONS[name]
        output = impl.factory(*reservoir_inputs(impl, problem), leak=leak)()
        np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE, err_msg=name)
