"""Differential fuzzing: random configurations of every public entry point
against plain float64 NumPy references, for as long as asked.

    python tests/fuzz.py SECONDS [SEED]

Each configuration draws a kind (Elman, GRU, LSTM, or a multi-layer,
possibly bidirectional ``fastrnn.RNN``), a dtype, shapes from 1 up to the
sizes where the plans change path (threads, the units split, the crew),
biases or none, an initial state or none, lengths or none, a thread cap,
and for Elman layers relu, a leak (scalar or per unit), a sparse ``w_hh``,
time-major input and Fortran-ordered input. It then checks, against the
references below: ``fastrnn.forward``; a prepared layer's call; the same
layer over the sequence in chunks with the state carried; its ``step`` in
place (``out=h``); and that no input array was modified. A failure prints
the configuration; the exit status is the number of failing configurations
(0: none).

The references are written for clarity, one time step of the whole batch
at a time in float64 (the test suite's per-sample, per-unit references in
naive.py are too slow to run thousands of configurations;
test_fuzz.py checks these against them). Compile for another CPU
with ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=""`` (or ``x86-64-v2``)
and a fresh ``NUMBA_CACHE_DIR``: most of the first minutes then go to
compiling.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any

import numpy as np
import scipy.sparse as sp

import fastrnn

# Largest problems drawn, in multiply-adds per call (the references run in
# NumPy, one step at a time): big enough for the units split and the crew.
MAX_FMAS = {"elman": 1.5e8, "gru": 5e7, "lstm": 5e7, "rnn": 3e7}
# Errors allowed, relative to max(1, |reference|). The worst seen (H = 1 and
# I = 200: the largest pre-activations), float32 / float64: 4.4e-6 / 1.2e-14
# in 7139 configurations on AVX-512, 4.9e-6 / 1.1e-14 in 5266 compiled for
# haswell, 4.4e-6 / 9.1e-15 in 4234 for x86-64-v2.
TOLERANCE = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def sigmoid(value: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-value))


def elman(x, w_ih, w_hh, bias, h0, relu, leak, lengths, reverse=False):
    """(output, h_n) of one Elman layer, batch first, in float64. Sequence b
    runs its first lengths[b] steps (zeros after), read backwards if
    ``reverse`` (output[t] is the state after reading step t)."""
    batch, steps, _ = x.shape
    if reverse:
        # Each sequence's valid steps reversed, run forwards, outputs put back.
        lens = np.full(batch, steps) if lengths is None else np.asarray(lengths)
        flipped = np.zeros(x.shape, np.float64)
        for b in range(batch):
            flipped[b, :lens[b]] = x[b, :lens[b]][::-1]
        out, h = elman(flipped, w_ih, w_hh, bias, h0, relu, leak, lengths)
        for b in range(batch):
            out[b, :lens[b]] = out[b, :lens[b]][::-1].copy()
        return out, h
    dense = w_hh.toarray() if sp.issparse(w_hh) else w_hh
    x, w_ih, dense = (np.asarray(a, np.float64) for a in (x, w_ih, dense))
    h = np.zeros((batch, dense.shape[0])) if h0 is None else np.array(h0, np.float64)
    out = np.zeros((batch, steps, dense.shape[0]))
    for t in range(steps):
        z = x[:, t] @ w_ih.T + h @ dense.T + bias
        a = np.maximum(z, 0) if relu else np.tanh(z)
        if leak is not None:
            a = (1 - leak) * h + leak * a
        running = np.ones(batch, bool) if lengths is None else t < lengths
        h = np.where(running[:, None], a, h)
        out[:, t] = np.where(running[:, None], a, 0)
    return out, h


def gated(kind, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths):
    """(output, h_n, c_n) of one GRU (gates r, z, n) or LSTM (i, f, g, o)
    layer with PyTorch's equations, batch first, in float64."""
    batch, steps, _ = x.shape
    hidden = w_hh.shape[1]
    x, w_ih, w_hh = (np.asarray(a, np.float64) for a in (x, w_ih, w_hh))
    b_ih = np.zeros(w_ih.shape[0]) if b_ih is None else np.asarray(b_ih, np.float64)
    b_hh = np.zeros(w_ih.shape[0]) if b_hh is None else np.asarray(b_hh, np.float64)
    h = np.zeros((batch, hidden)) if h0 is None else np.array(h0, np.float64)
    c = np.zeros((batch, hidden)) if c0 is None else np.array(c0, np.float64)
    out = np.zeros((batch, steps, hidden))
    for t in range(steps):
        gi = x[:, t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        if kind == "gru":
            r = sigmoid(gi[:, :hidden] + gh[:, :hidden])
            z = sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
            n = np.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
            new_h, new_c = (1 - z) * n + z * h, c
        else:
            g = gi + gh
            i, f = sigmoid(g[:, :hidden]), sigmoid(g[:, hidden:2 * hidden])
            cell, o = np.tanh(g[:, 2 * hidden:3 * hidden]), sigmoid(g[:, 3 * hidden:])
            new_c = f * c + i * cell
            new_h = o * np.tanh(new_c)
        running = np.ones(batch, bool) if lengths is None else t < lengths
        h = np.where(running[:, None], new_h, h)
        c = np.where(running[:, None], new_c, c)
        out[:, t] = np.where(running[:, None], new_h, 0)
    return out, h, c


def rnn(model, x, h0, lengths):
    """(output, h_n) of a ``fastrnn.RNN`` (concatenated directions), from
    its state_dict, layer by layer."""
    weights = {k: np.asarray(v, np.float64) for k, v in model.state_dict().items()}
    hidden, directions = model.hidden_size, model.num_directions
    relu = model.nonlinearity == "relu"
    layer_input, finals = np.asarray(x, np.float64), []
    for layer in range(model.num_layers):
        outs = []
        for d in range(directions):
            name = f"l{layer}" + ("_reverse" if d else "")
            bias = (weights[f"bias_ih_{name}"] + weights[f"bias_hh_{name}"] if model.bias
                    else np.zeros(hidden))
            state = None if h0 is None else h0[layer * directions + d]
            out, h = elman(layer_input, weights[f"weight_ih_{name}"],
                           weights[f"weight_hh_{name}"], bias, state, relu, None, lengths,
                           reverse=d == 1)
            outs.append(out)
            finals.append(h)
        layer_input = np.concatenate(outs, axis=2)
    return layer_input, np.stack(finals)


def check(name: str, got: Any, want: np.ndarray, dtype: np.dtype, config: dict) -> None:
    got = np.asarray(got, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape}, expected {want.shape}; {config}")
    err = np.abs(got - want) / np.maximum(1, np.abs(want))
    worst = float(err.max(initial=0))
    if not np.all(np.isfinite(got)) or worst > TOLERANCE[dtype]:
        raise AssertionError(f"{name}: max relative error {worst:.3g}; {config}")


def _choice(rng, values):
    return values[int(rng.integers(len(values)))]


def one(rng: np.random.Generator) -> dict:
    """Draw one configuration, run and check it; returns the configuration
    (raises AssertionError on a wrong result)."""
    kind = _choice(rng, ["elman", "elman", "gru", "lstm", "rnn"])
    dtype = np.dtype(_choice(rng, [np.float32, np.float64]))
    batch = _choice(rng, [1, 1, 2, 3, 5, 8, 13, 32, 33, 64])
    steps = _choice(rng, [1, 2, 7, 33, 100, 250])
    inputs = _choice(rng, [1, 3, 16, 64, 200])
    hidden = _choice(rng, [1, 5, 8, 17, 31, 64, 100, 128, 200, 256, 300, 513, 768, 1024]
                     if kind == "elman" else [1, 5, 8, 17, 64, 100, 128, 256, 300, 513])
    gates = {"elman": 1, "rnn": 1, "gru": 3, "lstm": 4}[kind]
    per_step = batch * gates * hidden * (hidden + inputs)
    steps = max(1, min(steps, int(MAX_FMAS[kind] / per_step)))
    bound = 1 / np.sqrt(hidden)
    x = rng.standard_normal((batch, steps, inputs)).astype(dtype)
    if rng.random() < 0.2:
        x = np.asfortranarray(x)
    threads = _choice(rng, [None, None, 1, 2])
    lengths = (rng.integers(0 if rng.random() < 0.3 else 1, steps + 1, batch)
               if rng.random() < 0.3 else None)
    h0 = rng.uniform(-1, 1, (batch, hidden)).astype(dtype) if rng.random() < 0.5 else None
    config: dict[str, Any] = dict(kind=kind, dtype=dtype.name, B=batch, T=steps, I=inputs,
                                  H=hidden, h0=h0 is not None, threads=threads,
                                  lengths=None if lengths is None else lengths.tolist())
    x_before = x.copy()
    if kind == "rnn":
        layers, bidirectional = int(rng.integers(1, 4)), bool(rng.random() < 0.5)
        relu, bias = bool(rng.random() < 0.3), bool(rng.random() < 0.8)
        config.update(layers=layers, bidirectional=bidirectional, relu=relu, bias=bias)
        model = fastrnn.RNN(inputs, hidden, layers, "relu" if relu else "tanh", bias,
                            bidirectional=bidirectional, dtype=dtype,
                            seed=int(rng.integers(1 << 31)))
        states = None
        if h0 is not None:
            states = rng.uniform(-1, 1, (layers * model.num_directions, batch, hidden))
            states = states.astype(dtype)
        want_out, want_h = rnn(model, x, states, lengths)
        out, h_n = model(x, states, lengths, threads=threads)
        check("RNN output", out, want_out, dtype, config)
        check("RNN h_n", h_n, want_h, dtype, config)
        if not np.array_equal(x, x_before):
            raise AssertionError(f"x modified; {config}")
        return config
    w_ih = rng.uniform(-bound, bound, (gates * hidden, inputs)).astype(dtype)
    w_hh: Any = rng.uniform(-bound, bound, (gates * hidden, hidden)).astype(dtype)
    b_ih = rng.uniform(-bound, bound, gates * hidden).astype(dtype) if rng.random() < 0.7 else None
    b_hh = rng.uniform(-bound, bound, gates * hidden).astype(dtype) if rng.random() < 0.7 else None
    config.update(bias=(b_ih is not None, b_hh is not None))
    if kind == "elman":
        relu = bool(rng.random() < 0.3)
        leak: Any = None
        if rng.random() < 0.3:
            leak = (float(rng.uniform(0.05, 1)) if rng.random() < 0.5
                    else rng.uniform(0.05, 1, hidden).astype(dtype))
        if rng.random() < 0.3:
            density = _choice(rng, [0.01, 0.05, 0.2])
            w_hh = sp.random(hidden, hidden, density=density, format="csr",
                             random_state=int(rng.integers(1 << 30)))
            w_hh.data = (2 * w_hh.data - 1) * min(1.0, 1 / np.sqrt(max(1.0, density * hidden)))
            w_hh = w_hh.astype(dtype)
            config.update(sparse=density)
        config.update(relu=relu, leak=None if leak is None else np.ndim(leak))
        bias = sum(np.asarray(b, np.float64) for b in (b_ih, b_hh) if b is not None)
        want_out, want_h = elman(x, w_ih, w_hh, bias, h0, relu,
                                 None if leak is None else np.asarray(leak, np.float64),
                                 lengths)
        nonlinearity = "relu" if relu else "tanh"
        out, h_n = fastrnn.forward(x, w_ih, w_hh, b_ih, b_hh, h0, nonlinearity=nonlinearity,
                                   lengths=lengths, leak=leak, threads=threads)
        check("forward output", out, want_out, dtype, config)
        check("forward h_n", h_n, want_h, dtype, config)
        if rng.random() < 0.3:
            out, h_n = fastrnn.forward(np.ascontiguousarray(x.transpose(1, 0, 2)), w_ih, w_hh,
                                       b_ih, b_hh, h0, nonlinearity=nonlinearity,
                                       batch_first=False, lengths=lengths, leak=leak,
                                       threads=threads)
            check("time-major output", out.transpose(1, 0, 2), want_out, dtype, config)
            check("time-major h_n", h_n, want_h, dtype, config)
        layer: Any = fastrnn.prepare(w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity,
                                     leak=leak, threads=threads)
        state: Any = h0
    else:
        want_out, want_h, _ = gated(kind, x, w_ih, w_hh, b_ih, b_hh, h0, None, lengths)
        prepare = fastrnn.prepare_gru if kind == "gru" else fastrnn.prepare_lstm
        layer = prepare(w_ih, w_hh, b_ih, b_hh, threads=threads)
        state = h0 if kind == "gru" or h0 is None else (h0, np.zeros_like(h0))
    first = (lambda s: s[0]) if kind == "lstm" else (lambda s: s)
    out, final = layer(x, state, lengths=lengths)
    check("layer output", out, want_out, dtype, config)
    check("layer h_n", first(final), want_h, dtype, config)
    if lengths is None and steps > 1:
        chunk = _choice(rng, [1, 3, 10, 50])
        carried, outs = state, []
        for t0 in range(0, steps, chunk):
            out, carried = layer(x[:, t0:t0 + chunk], carried)
            outs.append(out)
        check("chunks' output", np.concatenate(outs, axis=1), want_out, dtype, config)
        check("chunks' h_n", first(carried), want_h, dtype, config)
        n = min(steps, 12)
        h = np.zeros((batch, hidden), dtype) if h0 is None else h0.copy()
        c = np.zeros_like(h)
        for t in range(n):
            if kind == "lstm":
                layer.step(x[:, t], (h, c), out=(h, c))
            else:
                layer.step(x[:, t], h, out=h)
        check("steps in place", h, want_out[:, n - 1], dtype, config)
    if not np.array_equal(x, x_before):
        raise AssertionError(f"x modified; {config}")
    return config


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__)
        return 2
    seconds = float(argv[0])
    seed = int(argv[1]) if len(argv) > 1 else int(time.time())
    rng = np.random.default_rng(seed)
    end = time.perf_counter() + seconds
    passed = failed = 0
    while time.perf_counter() < end:
        try:
            one(rng)
            passed += 1
        except AssertionError as exc:
            failed += 1
            print("FAIL", exc, flush=True)
        except Exception:  # an error where a result was expected
            failed += 1
            traceback.print_exc()
    print(f"seed {seed}: {passed} configurations passed, {failed} failed")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
