"""tests/fuzz.py: its float64 references against tests/naive.py's, and a
short seeded run of its random configurations (``python tests/fuzz.py
SECONDS`` runs as many as time allows)."""

import fuzz
import naive
import numpy as np
import pytest
import scipy.sparse as sp


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_elman_reference_matches_naive(relu, reverse):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9, 3))
    w_ih, bias = rng.uniform(-0.5, 0.5, (6, 3)), rng.uniform(-0.5, 0.5, 6)
    w_hh = sp.random(6, 6, density=0.4, format="csr", random_state=1)
    h0, leak = rng.uniform(-1, 1, (4, 6)), rng.uniform(0.1, 1, 6)
    lengths = np.array([9, 0, 4, 1])
    got = fuzz.elman(x, w_ih, w_hh, bias, h0, relu, leak, lengths, reverse=reverse)
    want = naive.rnn(x, w_ih, w_hh, bias, None, h0, "relu" if relu else "tanh",
                     lengths=lengths, leak=leak, reverse=reverse)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_gated_reference_matches_naive(kind):
    rng = np.random.default_rng(1)
    gates = 3 if kind == "gru" else 4
    x = rng.standard_normal((3, 7, 2))
    w_ih, w_hh = rng.uniform(-0.5, 0.5, (gates * 5, 2)), rng.uniform(-0.5, 0.5, (gates * 5, 5))
    b_ih, b_hh = rng.uniform(-0.5, 0.5, gates * 5), rng.uniform(-0.5, 0.5, gates * 5)
    h0, c0 = rng.uniform(-1, 1, (3, 5)), rng.uniform(-1, 1, (3, 5))
    lengths = np.array([7, 3, 0])
    got = fuzz.gated(kind, x, w_ih, w_hh, b_ih, b_hh, h0, c0 if kind == "lstm" else None,
                     lengths)
    if kind == "gru":  # (output, h_n): a GRU has no cell state
        want = naive.gru(x, w_ih, w_hh, b_ih, b_hh, h0, lengths=lengths)
        got = got[:2]
    else:
        want = naive.lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths=lengths)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_rnn_reference_matches_naive_layer_by_layer():
    import fastrnn

    model = fastrnn.RNN(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    rng = np.random.default_rng(2)
    x, h0 = rng.standard_normal((2, 6, 3)), rng.uniform(-1, 1, (4, 2, 4))
    lengths = np.array([6, 2])
    got_out, got_h = fuzz.rnn(model, x, h0, lengths)
    weights = model.state_dict()
    layer_input, finals = x, []
    for layer in range(2):
        outs = []
        for d, suffix in enumerate(["", "_reverse"]):
            name = f"l{layer}{suffix}"
            out, h = naive.rnn(layer_input, weights[f"weight_ih_{name}"],
                               weights[f"weight_hh_{name}"], weights[f"bias_ih_{name}"],
                               weights[f"bias_hh_{name}"], h0[2 * layer + d],
                               lengths=lengths, reverse=d == 1)
            outs.append(out)
            finals.append(h)
        layer_input = np.concatenate(outs, axis=2)
    np.testing.assert_allclose(got_out, layer_input, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_h, np.stack(finals), rtol=1e-12, atol=1e-12)


def test_a_wrong_result_fails_the_check():
    config = {"kind": "elman"}
    with pytest.raises(AssertionError, match="max relative error"):
        fuzz.check("output", np.float32([1.0, 0.5]), np.array([1.0, 0.501]),
                   np.dtype(np.float32), config)
    with pytest.raises(AssertionError, match="shape"):
        fuzz.check("output", np.zeros(3), np.zeros(2), np.dtype(np.float64), config)


def test_random_configurations_match_the_references():
    # A fixed seed: the same 40 configurations every run (every kind, both
    # dtypes, threads, lengths, sparse, leaks, chunks, steps).
    rng = np.random.default_rng(20261204)
    kinds = {fuzz.one(rng)["kind"] for _ in range(40)}
    assert kinds == {"elman", "gru", "lstm", "rnn"}
