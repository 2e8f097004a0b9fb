"""Naive, obviously-right reference implementations for the tests.

Like STUMPY's ``tests/naive.py``: each function is written for clarity, never
speed. One sample at a time, one step at a time, in float64, exactly as the
textbook loop::

    for input_t in inputs:
        output_t = np.tanh(np.dot(Wx, input_t) + np.dot(Wh, h) + b)
        h = output_t

Nothing here is shared with fastrnn's implementation.
"""

from __future__ import annotations

import math

import numpy as np


def relu(value):
    """max(value, 0) for one float; NaN stays NaN (as in PyTorch)."""
    if math.isnan(value):
        return value
    return max(value, 0.0)


def rnn(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, nonlinearity="tanh", batch_first=True,
        lengths=None, leak=None, reverse=False):
    """PyTorch's single-layer ``nn.RNN`` forward pass, in float64.

    Same arguments and output shapes as ``fastrnn.forward``: x is (B, T, I) if
    batch_first, (T, B, I) if not, or (T, I) for one unbatched sequence (then
    h0 is (H,), the output (T, H) and h_n (H,)). Returns float64 arrays.

    ``lengths`` (one per sequence, a scalar when unbatched): sequence b uses
    only its first lengths[b] steps; its other outputs are zero and h_n is its
    state after its last step. ``leak`` (a float or one per unit): the leaky
    update h = (1 - leak) * h + leak * act(...). ``reverse``: each sequence is
    read from its last valid step back to its first (PyTorch's reverse
    direction); output[t] is the state after reading step t.
    """
    x = np.array(x, dtype=np.float64)
    w_ih = np.array(w_ih, dtype=np.float64)
    if hasattr(w_hh, "toarray"):  # a SciPy sparse matrix
        w_hh = w_hh.toarray()
    w_hh = np.array(w_hh, dtype=np.float64)
    hidden_size = w_ih.shape[0]
    b_ih = np.zeros(hidden_size) if b_ih is None else np.array(b_ih, dtype=np.float64)
    b_hh = np.zeros(hidden_size) if b_hh is None else np.array(b_hh, dtype=np.float64)

    unbatched = x.ndim == 2
    if unbatched:
        sequences = [x]  # batch_first does not apply to one sequence
    elif batch_first:
        sequences = [x[b] for b in range(x.shape[0])]
    else:
        sequences = [x[:, b] for b in range(x.shape[1])]

    if h0 is None:
        initial_states = [np.zeros(hidden_size) for _ in sequences]
    elif unbatched:
        initial_states = [np.array(h0, dtype=np.float64)]
    else:
        initial_states = [np.array(h0[b], dtype=np.float64) for b in range(len(sequences))]

    steps = x.shape[0] if unbatched or not batch_first else x.shape[1]
    if lengths is None:
        lengths = [steps] * len(sequences)
    lengths = [int(length) for length in np.reshape(lengths, -1)]
    leak = None if leak is None else np.array(leak, dtype=np.float64)

    outputs = []  # one (T, H) array per sample
    final_states = []
    for inputs, h, length in zip(sequences, initial_states, lengths, strict=True):
        states = np.zeros((steps, hidden_size))
        times = range(length - 1, -1, -1) if reverse else range(length)
        for t in times:
            pre_activation = np.dot(w_ih, inputs[t]) + b_ih + np.dot(w_hh, h) + b_hh
            if nonlinearity == "tanh":
                activation = np.tanh(pre_activation)
            elif nonlinearity == "relu":
                activation = np.array([relu(value) for value in pre_activation])
            else:
                raise ValueError(nonlinearity)
            # Without a leak, h is the activation itself (0 * inf would be NaN).
            h = activation if leak is None else (1 - leak) * h + leak * activation
            states[t] = h
        outputs.append(states)
        final_states.append(h)

    if unbatched:
        return outputs[0], final_states[0]
    output = np.array(outputs).reshape(len(sequences), steps, hidden_size)  # (B, T, H)
    h_n = np.array(final_states).reshape(len(sequences), hidden_size)
    if not batch_first:
        output = output.transpose(1, 0, 2)  # (T, B, H)
    return output, h_n


def sigmoid(value):
    """1 / (1 + e^-value) for one float, without overflow."""
    if math.isnan(value):
        return value
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    e = math.exp(value)
    return e / (1.0 + e)


def _sequences(x, batch_first):
    # (sequences as (T, I) arrays, whether x was one unbatched sequence, T)
    x = np.array(x, dtype=np.float64)
    if x.ndim == 2:
        return [x], True, x.shape[0]
    if batch_first:
        return [x[b] for b in range(x.shape[0])], False, x.shape[1]
    return [x[:, b] for b in range(x.shape[1])], False, x.shape[0]


def _initial(state, count, hidden, unbatched):
    if state is None:
        return [np.zeros(hidden) for _ in range(count)]
    state = np.array(state, dtype=np.float64)
    return [state] if unbatched else [state[b] for b in range(count)]


def _gated(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, batch_first, lengths, gates):
    w_ih = np.array(w_ih, dtype=np.float64)
    w_hh = np.array(w_hh, dtype=np.float64)
    hidden = w_ih.shape[0] // gates
    b_ih = np.zeros(gates * hidden) if b_ih is None else np.array(b_ih, dtype=np.float64)
    b_hh = np.zeros(gates * hidden) if b_hh is None else np.array(b_hh, dtype=np.float64)
    sequences, unbatched, steps = _sequences(x, batch_first)
    hs = _initial(h0, len(sequences), hidden, unbatched)
    cs = _initial(c0, len(sequences), hidden, unbatched)
    if lengths is None:
        lengths = [steps] * len(sequences)
    lengths = [int(length) for length in np.reshape(lengths, -1)]
    outputs, h_final, c_final = [], [], []
    for inputs, h, c, length in zip(sequences, hs, cs, lengths, strict=True):
        states = np.zeros((steps, hidden))
        for t in range(length):
            # One unit at a time, each gate's row of the weights by name.
            input_part = [np.dot(w_ih[row], inputs[t]) + b_ih[row]
                          for row in range(gates * hidden)]
            hidden_part = [np.dot(w_hh[row], h) + b_hh[row] for row in range(gates * hidden)]
            h, c = cell(input_part, hidden_part, h, c, hidden)
            states[t] = h
        outputs.append(states)
        h_final.append(h)
        c_final.append(c)
    if unbatched:
        return outputs[0], h_final[0], c_final[0]
    output = np.stack(outputs)
    if not batch_first:
        output = output.transpose(1, 0, 2)
    return output, np.stack(h_final), np.stack(c_final)


def _gru_cell(input_part, hidden_part, h, c, hidden):
    new_h = np.zeros(hidden)
    for j in range(hidden):
        r = sigmoid(input_part[j] + hidden_part[j])
        z = sigmoid(input_part[hidden + j] + hidden_part[hidden + j])
        n = math.tanh(input_part[2 * hidden + j] + r * hidden_part[2 * hidden + j])
        new_h[j] = (1 - z) * n + z * h[j]
    return new_h, c


def _lstm_cell(input_part, hidden_part, h, c, hidden):
    new_h, new_c = np.zeros(hidden), np.zeros(hidden)
    for j in range(hidden):
        gate = [input_part[k * hidden + j] + hidden_part[k * hidden + j] for k in range(4)]
        i, f, g, o = sigmoid(gate[0]), sigmoid(gate[1]), math.tanh(gate[2]), sigmoid(gate[3])
        new_c[j] = f * c[j] + i * g
        new_h[j] = o * math.tanh(new_c[j])
    return new_h, new_c


def gru(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, batch_first=True, lengths=None):
    """PyTorch's single-layer ``nn.GRU`` forward pass, in float64, one sample,
    one step and one unit at a time: (output, h_n) shaped as ``rnn``'s.
    Gates r, z, n (PyTorch's order); b_hh's n part is inside r * (...)."""
    output, h_n, _ = _gated(_gru_cell, x, w_ih, w_hh, b_ih, b_hh, h0, None, batch_first,
                            lengths, 3)
    return output, h_n


def lstm(x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, batch_first=True,
         lengths=None):
    """PyTorch's single-layer ``nn.LSTM`` forward pass, in float64, one
    sample, one step and one unit at a time: (output, h_n, c_n). Gates i, f,
    g, o (PyTorch's order)."""
    return _gated(_lstm_cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, batch_first, lengths, 4)
