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
