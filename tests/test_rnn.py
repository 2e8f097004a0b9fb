"""fastrnn.RNN: the multi-layer, bidirectional model.

Checked against torch.nn.RNN (skipped where torch is absent: the tests that
need it call pytest.importorskip), against its own single-layer pieces
(merge="sum"), and for initialisation, PyTorch state dicts, .npz files,
argument errors and the caller's arrays being left untouched.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import random
import re
import time

import numpy as np
import pytest

import fastrnn
from fastrnn import RNN

# Small problems: the torch comparisons are about semantics, not size.
BATCH, STEPS, INPUT, HIDDEN = 4, 7, 3, 5
# What a state dict cannot hold, passed to from_state_dict (required there).
TANH_BATCH_FIRST = {"nonlinearity": "tanh", "batch_first": True}


def torch_run(model, x: np.ndarray, h0: np.ndarray | None, lengths: np.ndarray | None,
              batch_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """torch.nn.RNN on NumPy arrays; with lengths, through pack_padded_sequence
    (enforce_sorted=False) and pad_packed_sequence back to the full T."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    xt = torch.from_numpy(x)
    h0t = None if h0 is None else torch.from_numpy(h0)
    with torch.no_grad():
        if lengths is None:
            output, h_n = model(xt, h0t)
        else:
            steps = x.shape[1] if batch_first else x.shape[0]
            packed = pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=batch_first,
                                          enforce_sorted=False)
            packed_output, h_n = model(packed, h0t)
            output, _ = pad_packed_sequence(packed_output, batch_first=batch_first,
                                            total_length=steps)
    return output.numpy(), h_n.numpy()


def torch_model(seed: int, *, num_layers=1, nonlinearity="tanh", bias=True, batch_first=True,
                bidirectional=False, dtype=np.float32, input_size=INPUT, hidden_size=HIDDEN):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    model = torch.nn.RNN(input_size, hidden_size, num_layers=num_layers,
                         nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional)
    return model.double() if np.dtype(dtype) == np.float64 else model


def draw_inputs(seed: int, *, num_states: int, dtype, batch_first: bool, h0: bool,
                lengths: bool, batch: int = BATCH, steps: int = STEPS, low_length: int = 1):
    rng = np.random.default_rng(seed)
    shape = (batch, steps, INPUT) if batch_first else (steps, batch, INPUT)
    x = rng.standard_normal(shape).astype(dtype)
    h0_arr = rng.uniform(-1, 1, (num_states, batch, HIDDEN)).astype(dtype) if h0 else None
    lengths_arr = rng.integers(low_length, steps + 1, batch) if lengths else None
    return x, h0_arr, lengths_arr


def check_close(actual: np.ndarray, expected: np.ndarray, tolerance: dict) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **tolerance[np.dtype(actual.dtype)])


# A seeded sample of the full grid (384 combinations), each level of each
# factor present: layers, nonlinearity, bias, bidirectional, batch_first, h0,
# dtype, lengths.
GRID = list(itertools.product((1, 2, 3), ("tanh", "relu"), (True, False), (True, False),
                              (True, False), (True, False), ("float32", "float64"),
                              (True, False)))
TORCH_CASES = random.Random(4).sample(GRID, 24)
for _factor, _levels in enumerate(zip(*GRID, strict=True)):
    assert set(_levels) == {case[_factor] for case in TORCH_CASES}, "a level is never sampled"


@pytest.mark.parametrize(
    ("num_layers", "nonlinearity", "bias", "bidirectional", "batch_first", "with_h0", "dtype",
     "with_lengths"), TORCH_CASES)
def test_matches_torch(backend, forward_tolerance, num_layers, nonlinearity, bias,
                       bidirectional, batch_first, with_h0, dtype, with_lengths):
    seed = TORCH_CASES.index((num_layers, nonlinearity, bias, bidirectional, batch_first,
                              with_h0, dtype, with_lengths))
    model = torch_model(seed, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
                        batch_first=batch_first, bidirectional=bidirectional, dtype=dtype)
    rnn = RNN.from_torch(model, backend=backend)  # every setting read from the module
    assert (rnn.num_layers, rnn.nonlinearity, rnn.bias, rnn.bidirectional, rnn.batch_first,
            rnn.dtype) == (num_layers, nonlinearity, bias, bidirectional, batch_first,
                           np.dtype(dtype))
    directions = 2 if bidirectional else 1
    x, h0, lengths = draw_inputs(seed, num_states=num_layers * directions, dtype=dtype,
                                 batch_first=batch_first, h0=with_h0, lengths=with_lengths)

    output, h_n = rnn(x, h0, lengths)

    assert output.dtype == h_n.dtype == np.dtype(dtype)
    assert h_n.shape == (num_layers * directions, BATCH, HIDDEN)
    # Against torch in float64 on the same numbers (as conftest's tolerances
    # are stated against a float64 reference), and against torch itself.
    reference = copy.deepcopy(model).double()
    h0_64 = None if h0 is None else h0.astype(np.float64)
    expected_output, expected_h_n = torch_run(reference, x.astype(np.float64), h0_64, lengths,
                                              batch_first)
    check_close(output, expected_output, forward_tolerance)
    check_close(h_n, expected_h_n, forward_tolerance)
    same_output, same_h_n = torch_run(model, x, h0, lengths, batch_first)
    check_close(output, same_output, forward_tolerance)
    check_close(h_n, same_h_n, forward_tolerance)
    if lengths is not None:  # zeros past each sequence's end, exactly
        steps = np.arange(STEPS)
        past = steps[None, :] >= lengths[:, None]  # (B, T)
        assert not (output if batch_first else output.swapaxes(0, 1))[past].any()


@pytest.mark.parametrize("with_h0", [False, True])
def test_unbatched_matches_torch(backend, forward_tolerance, with_h0):
    model = torch_model(11, num_layers=2, bidirectional=True, dtype=np.float64)
    rnn = RNN.from_torch(model, backend=backend)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((STEPS, INPUT))
    h0 = rng.uniform(-1, 1, (4, HIDDEN)) if with_h0 else None

    output, h_n = rnn(x, h0)

    assert output.shape == (STEPS, 2 * HIDDEN) and h_n.shape == (4, HIDDEN)
    expected_output, expected_h_n = torch_run(model, x, h0, None, True)
    check_close(output, expected_output, forward_tolerance)
    check_close(h_n, expected_h_n, forward_tolerance)
    # One length for one sequence: a scalar (or shape (1,)).
    short_output, short_h_n = rnn(x, h0, lengths=3)
    check_close(short_output[:3], torch_run(model, x[:3], h0, None, True)[0], forward_tolerance)
    check_close(short_h_n, torch_run(model, x[:3], h0, None, True)[1], forward_tolerance)
    assert not short_output[3:].any()


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_zero_lengths(backend, forward_tolerance, with_h0, batch_first):
    """Length 0 (which PyTorch refuses): zero output and h_n = h0 (or zeros);
    the other sequences as torch computes them on their own."""
    model = torch_model(5, num_layers=2, bidirectional=True, batch_first=batch_first,
                        dtype=np.float64)
    rnn = RNN.from_torch(model, backend=backend)
    lengths = np.array([3, 0, STEPS, 0, 1])
    batch = len(lengths)
    x, h0, _ = draw_inputs(5, num_states=4, dtype=np.float64, batch_first=batch_first,
                           h0=with_h0, lengths=False, batch=batch)

    output, h_n = rnn(x, h0, lengths)

    by_batch = output if batch_first else output.swapaxes(0, 1)
    empty = lengths == 0
    assert not by_batch[empty].any()
    np.testing.assert_array_equal(h_n[:, empty], 0 if h0 is None else h0[:, empty])
    rows = np.flatnonzero(~empty)
    x_rows = x[rows] if batch_first else x[:, rows]
    expected_output, expected_h_n = torch_run(model, x_rows, None if h0 is None else h0[:, rows],
                                              lengths[rows], batch_first)
    check_close(by_batch[rows], expected_output if batch_first else
                expected_output.swapaxes(0, 1), forward_tolerance)
    check_close(h_n[:, rows], expected_h_n, forward_tolerance)


@pytest.mark.parametrize(("batch", "steps", "lengths"),
                         [(3, 4, [0, 0, 0]), (2, 0, None), (2, 0, [0, 0]), (0, 4, None),
                          (0, 4, [])])
def test_empty_work(backend, batch, steps, lengths):
    rnn = RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=0, backend=backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, INPUT)).astype(np.float32)
    h0 = rng.standard_normal((4, batch, HIDDEN)).astype(np.float32)
    lengths_arr = None if lengths is None else np.array(lengths, dtype=np.int64)

    output, h_n = rnn(x, h0, lengths_arr)

    assert output.shape == (batch, steps, 2 * HIDDEN) and not output.any()
    np.testing.assert_array_equal(h_n, h0)
    output, h_n = rnn(x, None, lengths_arr)
    assert not h_n.any()


def split_layer(state_dict: dict, layer: int) -> dict:
    """Layer ``layer``'s weights renamed as a one-layer model's."""
    suffix = f"_l{layer}"
    return {key.replace(suffix, "_l0"): value for key, value in state_dict.items()
            if key.endswith((suffix, suffix + "_reverse"))}


@pytest.mark.parametrize("with_lengths", [False, True])
def test_merge_sum(backend, forward_tolerance, with_lengths):
    """One layer: "sum" is the sum of "concat"'s two halves. Three layers:
    each layer reads the previous layer's summed (H-feature) output."""
    x, h0, lengths = draw_inputs(3, num_states=6, dtype=np.float64, batch_first=True, h0=True,
                                 lengths=with_lengths)
    concat = RNN(INPUT, HIDDEN, bidirectional=True, dtype=np.float64, seed=3, backend=backend)
    summed = RNN.from_state_dict(concat.state_dict(), **TANH_BATCH_FIRST, merge="sum",
                                 backend=backend)
    assert summed.output_size == HIDDEN and concat.output_size == 2 * HIDDEN
    concat_output, concat_h_n = concat(x, h0[:2], lengths)
    output, h_n = summed(x, h0[:2], lengths)
    check_close(output, concat_output[..., :HIDDEN] + concat_output[..., HIDDEN:],
                forward_tolerance)
    np.testing.assert_array_equal(h_n, concat_h_n)

    deep = RNN(INPUT, HIDDEN, num_layers=3, bidirectional=True, merge="sum", dtype=np.float64,
               seed=4, backend=backend)
    weights = deep.state_dict()
    assert weights["weight_ih_l1"].shape == (HIDDEN, HIDDEN)
    output, h_n = deep(x, h0, lengths)
    layer_input = x
    for layer in range(3):
        one = RNN.from_state_dict(split_layer(weights, layer), **TANH_BATCH_FIRST, merge="sum",
                                  backend=backend)
        layer_input, layer_h_n = one(layer_input, h0[2 * layer:2 * layer + 2], lengths)
        check_close(h_n[2 * layer:2 * layer + 2], layer_h_n, forward_tolerance)
    check_close(output, layer_input, forward_tolerance)


def test_merge_sum_matches_torch_one_layer(forward_tolerance):
    model = torch_model(8, bidirectional=True, dtype=np.float64)
    rnn = RNN.from_state_dict(model.state_dict(), nonlinearity=model.nonlinearity,
                              batch_first=model.batch_first, merge="sum")
    x, _, lengths = draw_inputs(8, num_states=2, dtype=np.float64, batch_first=True, h0=False,
                                lengths=True)
    expected_output, expected_h_n = torch_run(model, x, None, lengths, True)
    output, h_n = rnn(x, lengths=lengths)
    check_close(output, expected_output[..., :HIDDEN] + expected_output[..., HIDDEN:],
                forward_tolerance)
    check_close(h_n, expected_h_n, forward_tolerance)


def test_bidirectional_halves_are_the_two_directions(backend, forward_tolerance):
    """Concat's halves equal one-direction runs: fastrnn.forward for the
    forward half, and forward on time-reversed sequences for the reverse."""
    x, _, lengths = draw_inputs(9, num_states=2, dtype=np.float64, batch_first=True, h0=False,
                                lengths=True)
    rnn = RNN(INPUT, HIDDEN, bidirectional=True, nonlinearity="relu", dtype=np.float64, seed=9,
              backend=backend)
    w = rnn.state_dict()
    output, h_n = rnn(x, lengths=lengths)
    forward_output, forward_h_n = fastrnn.forward(
        x, w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"],
        nonlinearity="relu", lengths=lengths, backend=backend)
    check_close(output[..., :HIDDEN], forward_output, forward_tolerance)
    check_close(h_n[0], forward_h_n, forward_tolerance)
    for b, length in enumerate(lengths):
        reversed_output, reversed_h_n = fastrnn.forward(
            x[b, :length][::-1], w["weight_ih_l0_reverse"], w["weight_hh_l0_reverse"],
            w["bias_ih_l0_reverse"], w["bias_hh_l0_reverse"], nonlinearity="relu",
            backend=backend)
        check_close(output[b, :length, HIDDEN:], reversed_output[::-1], forward_tolerance)
        check_close(h_n[1, b], reversed_h_n, forward_tolerance)


# -- initialisation ------------------------------------------------------------------


def test_seed_reproducible_and_init_range():
    kwargs = dict(num_layers=3, bidirectional=True, dtype=np.float64)
    a = RNN(INPUT, 64, seed=7, **kwargs).state_dict()
    b = RNN(INPUT, 64, seed=7, **kwargs).state_dict()
    c = RNN(INPUT, 64, seed=8, **kwargs).state_dict()
    d = RNN(INPUT, 64, seed=np.random.default_rng(7), **kwargs).state_dict()
    assert list(a) == list(b) == list(c) == list(d)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(a[name], d[name])
        assert not np.array_equal(a[name], c[name])
    bound = 1 / np.sqrt(64)
    values = np.concatenate([v.ravel() for v in a.values()])
    assert np.abs(values).max() <= bound
    assert values.min() < -0.99 * bound and values.max() > 0.99 * bound  # the whole range
    assert abs(values.mean()) < 0.01 * bound and abs(values.std() - bound / np.sqrt(3)) < 0.01
    # No seed: fresh entropy each time.
    assert not np.array_equal(RNN(2, 3).state_dict()["weight_hh_l0"],
                              RNN(2, 3).state_dict()["weight_hh_l0"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", np.dtype("float64")])
def test_weights_dtype_and_layout(dtype):
    rnn = RNN(INPUT, HIDDEN, num_layers=2, bias=False, dtype=dtype, seed=0)
    assert rnn.dtype == np.dtype(dtype)
    for value in rnn._params.values():
        assert value.dtype == np.dtype(dtype) and value.flags.c_contiguous
    for value in rnn.state_dict().values():
        assert value.dtype == np.dtype(dtype) and value.flags.c_contiguous


@pytest.mark.parametrize(("num_layers", "bias", "bidirectional"),
                         list(itertools.product((1, 3), (True, False), (True, False))))
def test_state_dict_names_and_shapes_match_torch(num_layers, bias, bidirectional):
    model = torch_model(0, num_layers=num_layers, bias=bias, bidirectional=bidirectional)
    rnn = RNN(INPUT, HIDDEN, num_layers=num_layers, bias=bias, bidirectional=bidirectional)
    ours = rnn.state_dict()
    theirs = model.state_dict()
    assert list(ours) == list(theirs)  # same names, same order
    assert {k: v.shape for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


# -- state dicts and PyTorch -----------------------------------------------------------


def test_state_dict_round_trip_with_torch(backend, forward_tolerance):
    torch = pytest.importorskip("torch")
    rnn = RNN(INPUT, HIDDEN, num_layers=2, nonlinearity="relu", bidirectional=True,
              dtype=np.float64, seed=1, backend=backend)
    model = torch_model(99, num_layers=2, nonlinearity="relu", bidirectional=True,
                        dtype=np.float64)
    # fastrnn -> torch (strict load: same names and shapes), same numbers.
    model.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    x, h0, lengths = draw_inputs(1, num_states=4, dtype=np.float64, batch_first=True, h0=True,
                                 lengths=True)
    output, h_n = rnn(x, h0, lengths)
    expected_output, expected_h_n = torch_run(model, x, h0, lengths, True)
    check_close(output, expected_output, forward_tolerance)
    check_close(h_n, expected_h_n, forward_tolerance)

    # torch -> fastrnn into an existing model; parameters that require grad work.
    torch.manual_seed(3)
    other = torch.nn.RNN(INPUT, HIDDEN, num_layers=2, nonlinearity="relu", batch_first=True,
                         bidirectional=True).double()
    parameters = dict(other.named_parameters())
    assert all(p.requires_grad for p in parameters.values())
    rnn.load_state_dict(parameters)
    for name, value in rnn.state_dict().items():
        np.testing.assert_array_equal(value, other.state_dict()[name].numpy())
    output, h_n = rnn(x, h0, lengths)
    expected_output, expected_h_n = torch_run(other, x, h0, lengths, True)
    check_close(output, expected_output, forward_tolerance)
    check_close(h_n, expected_h_n, forward_tolerance)


class ArrayLikeOnly:
    """Has __array__ only."""

    def __init__(self, value):
        self.value = value

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.value, dtype=dtype)


class NumpyMethodOnly:
    """Like a tensor of another library: .numpy() but no __array__."""

    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value


def test_load_state_dict_accepts_array_likes_and_casts():
    source = RNN(INPUT, HIDDEN, num_layers=2, dtype=np.float64, seed=2).state_dict()
    wrappers = [lambda v: v.tolist(), ArrayLikeOnly, NumpyMethodOnly, lambda v: v]
    mixed = {name: wrappers[i % len(wrappers)](value)
             for i, (name, value) in enumerate(source.items())}
    mixed["bias_hh_l1"] = source["bias_hh_l1"].astype(np.float16)
    rnn = RNN(INPUT, HIDDEN, num_layers=2, seed=0)  # float32
    rnn.load_state_dict(mixed)
    loaded = rnn.state_dict()
    for name, value in source.items():
        assert loaded[name].dtype == np.float32 and loaded[name].flags.c_contiguous
        expected = value.astype(np.float16) if name == "bias_hh_l1" else value
        np.testing.assert_array_equal(loaded[name], expected.astype(np.float32))


def test_state_dict_copies():
    rnn = RNN(INPUT, HIDDEN, seed=0)
    weights = rnn.state_dict()
    before = weights["weight_hh_l0"].copy()
    weights["weight_hh_l0"][:] = 7  # changing the returned dict leaves the model alone
    np.testing.assert_array_equal(rnn.state_dict()["weight_hh_l0"], before)
    weights["weight_hh_l0"][:] = before
    rnn.load_state_dict(weights)
    weights["weight_hh_l0"][:] = 7  # nor does changing a loaded dict afterwards
    np.testing.assert_array_equal(rnn.state_dict()["weight_hh_l0"], before)
    source = {k: v.copy() for k, v in weights.items()}
    rnn.load_state_dict(weights)
    for name in weights:  # loading never modifies what it loads
        np.testing.assert_array_equal(weights[name], source[name])


def bidirectional_two_layers() -> dict:
    return RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=0).state_dict()


@pytest.mark.parametrize(("change", "error", "match"), [
    (lambda d: d.pop("weight_hh_l1"), KeyError, r"missing keys \['weight_hh_l1'\]"),
    (lambda d: d.pop("bias_ih_l0_reverse"), KeyError, r"missing keys \['bias_ih_l0_reverse'\]"),
    (lambda d: d.update(weight_ih_l2=np.zeros((HIDDEN, 2 * HIDDEN))), KeyError,
     r"unexpected keys \['weight_ih_l2'\]"),
    (lambda d: d.update(extra=np.zeros(1)), KeyError, r"unexpected keys \['extra'\]"),
    (lambda d: d.update(weight_ih_l1=np.zeros((HIDDEN, HIDDEN))), ValueError,
     r"'weight_ih_l1'.* shape \(5, 10\).*got \(5, 5\)"),
    (lambda d: d.update(bias_hh_l0=np.zeros((1, HIDDEN))), ValueError,
     r"'bias_hh_l0'.* shape \(5,\).*got \(1, 5\)"),
    (lambda d: d.update(weight_hh_l0=np.full((HIDDEN, HIDDEN), "a")), TypeError,
     r"'weight_hh_l0'.*real numbers"),
    (lambda d: d.update(weight_hh_l0=np.zeros((HIDDEN, HIDDEN), complex)), TypeError,
     r"'weight_hh_l0'.*complex"),
])
def test_load_state_dict_errors(change, error, match):
    rnn = RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=1)
    before = rnn.state_dict()
    bad = bidirectional_two_layers()
    change(bad)
    with pytest.raises(error, match=match):
        rnn.load_state_dict(bad)
    for name, value in rnn.state_dict().items():  # unchanged on failure
        np.testing.assert_array_equal(value, before[name])


def test_load_state_dict_not_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        RNN(INPUT, HIDDEN).load_state_dict([("weight_ih_l0", np.zeros((HIDDEN, INPUT)))])


@pytest.mark.parametrize(("num_layers", "bias", "bidirectional", "dtype"),
                         [(1, True, False, np.float32), (3, False, True, np.float64),
                          (2, True, True, np.float32), (2, False, False, np.float64)])
def test_from_state_dict_infers_architecture(num_layers, bias, bidirectional, dtype):
    source = RNN(INPUT, HIDDEN, num_layers=num_layers, bias=bias, bidirectional=bidirectional,
                 dtype=dtype, seed=0)
    rnn = RNN.from_state_dict(source.state_dict(), nonlinearity="relu", batch_first=False)
    assert (rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias, rnn.bidirectional,
            rnn.dtype, rnn.nonlinearity, rnn.batch_first) == (
        INPUT, HIDDEN, num_layers, bias, bidirectional, np.dtype(dtype), "relu", False)
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(rnn.state_dict()[name], value)
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    assert RNN.from_state_dict(source.state_dict(), **TANH_BATCH_FIRST,
                               dtype=other).dtype == np.dtype(other)


def test_from_state_dict_dtype_inference():
    weights = RNN(INPUT, HIDDEN, seed=0).state_dict()
    assert RNN.from_state_dict(weights, **TANH_BATCH_FIRST).dtype == np.float32
    half = {k: v.astype(np.float16) for k, v in weights.items()}
    assert RNN.from_state_dict(half, **TANH_BATCH_FIRST).dtype == np.float32
    weights["bias_hh_l0"] = weights["bias_hh_l0"].astype(np.float64)
    assert RNN.from_state_dict(weights, **TANH_BATCH_FIRST).dtype == np.float64


def test_from_state_dict_torch_tensors():
    model = torch_model(4, num_layers=3, nonlinearity="relu", bias=False, batch_first=False,
                        bidirectional=True)
    rnn = RNN.from_state_dict(model.state_dict(), nonlinearity="relu", batch_first=False)
    assert (rnn.num_layers, rnn.bias, rnn.bidirectional, rnn.dtype, rnn.nonlinearity,
            rnn.batch_first) == (3, False, True, np.float32, "relu", False)


@pytest.mark.parametrize(("state_dict", "kwargs", "error", "match"), [
    ({}, {}, KeyError, "missing key 'weight_ih_l0'"),
    ({"rnn.weight_ih_l0": np.zeros((HIDDEN, INPUT))}, {}, KeyError,
     r"unexpected keys \['rnn.weight_ih_l0'\]"),
    ({"weight_ih_l0": np.zeros(HIDDEN)}, {}, ValueError,
     r"'weight_ih_l0'.*2-D.*got shape \(5,\)"),
    ({"weight_ih_l0": np.zeros((HIDDEN, INPUT))}, {}, KeyError,
     r"missing keys \['weight_hh_l0'\]"),
    ({**RNN(INPUT, HIDDEN, seed=0).state_dict(), "weight_hh_l2": np.zeros((HIDDEN, HIDDEN))},
     {}, KeyError, r"missing keys \['weight_ih_l1', .*'weight_ih_l2'"),
    # PyTorch's bidirectional layer 1 reads 2H features; a "sum" model reads H.
    (bidirectional_two_layers(), {"merge": "sum"}, ValueError,
     r"'weight_ih_l1'.*shape \(5, 5\).*got \(5, 10\)"),
    ({**RNN(INPUT, HIDDEN, seed=0).state_dict(), "bias_ih_l0": np.zeros(4)}, {}, ValueError,
     r"'bias_ih_l0'.*\(5,\).*got \(4,\)"),
    (RNN(INPUT, HIDDEN, seed=0).state_dict(), {"nonlinearity": "gelu"}, ValueError,
     "nonlinearity"),
])
def test_from_state_dict_errors(state_dict, kwargs, error, match):
    with pytest.raises(error, match=match):
        RNN.from_state_dict(state_dict, **(TANH_BATCH_FIRST | kwargs))


def test_from_state_dict_requires_what_a_state_dict_cannot_hold():
    """No guess: a default batch_first=True (torch's is False) or tanh gave
    outputs of the right shape and the wrong values."""
    weights = RNN(INPUT, HIDDEN, seed=0).state_dict()
    with pytest.raises(TypeError, match="missing 2 required keyword-only arguments: "
                                        "'nonlinearity' and 'batch_first'"):
        RNN.from_state_dict(weights)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: "
                                        "'batch_first'"):
        RNN.from_state_dict(weights, nonlinearity="tanh")


def test_from_state_dict_refuses_a_model():
    model = torch_model(0)
    with pytest.raises(TypeError, match=re.escape(
            "got the model itself (RNN): for a torch.nn.RNN call "
            "fastrnn.RNN.from_torch(module)")) as raised:
        RNN.from_state_dict(model, **TANH_BATCH_FIRST)
    assert "from_state_dict(module.state_dict(), nonlinearity=..., batch_first=...)" in str(
        raised.value)
    with pytest.raises(TypeError, match=r"fastrnn.RNN.from_torch\(module\)"):
        RNN(INPUT, HIDDEN).load_state_dict(model)
    with pytest.raises(TypeError, match=r"got a fastrnn.RNN model: pass its rnn.state_dict\(\)"):
        RNN.from_state_dict(RNN(INPUT, HIDDEN, seed=0), **TANH_BATCH_FIRST)


@pytest.mark.parametrize("seed", range(3))
def test_from_state_dict_with_settings_equals_from_torch(seed):
    rng = random.Random(seed)
    model = torch_model(seed, num_layers=rng.choice((1, 2, 3)),
                        nonlinearity=rng.choice(("tanh", "relu")), bias=rng.random() < 0.5,
                        batch_first=rng.random() < 0.5, bidirectional=rng.random() < 0.5,
                        dtype=rng.choice((np.float32, np.float64)))
    converted = RNN.from_torch(model)
    by_hand = RNN.from_state_dict(model.state_dict(), nonlinearity=model.nonlinearity,
                                  batch_first=model.batch_first)
    assert converted._config() == by_hand._config()
    for name, value in converted.state_dict().items():
        np.testing.assert_array_equal(by_hand.state_dict()[name], value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_torch_two_layer_bidirectional_relu_time_major(forward_tolerance, dtype):
    """The case of issue 14: converted with from_state_dict's former defaults
    (tanh, batch-first) this model's output differed from torch's by up to 1.3."""
    model = torch_model(14, num_layers=2, nonlinearity="relu", batch_first=False,
                        bidirectional=True, dtype=dtype)
    rnn = RNN.from_torch(model)
    x, h0, lengths = draw_inputs(14, num_states=4, dtype=dtype, batch_first=False, h0=True,
                                 lengths=True)
    output, h_n = rnn(x, h0, lengths)
    expected_output, expected_h_n = torch_run(model, x, h0, lengths, False)
    check_close(output, expected_output, forward_tolerance)
    check_close(h_n, expected_h_n, forward_tolerance)


def test_from_torch_ignores_dropout(forward_tolerance):
    """Dropout acts between layers in training only: inference has none."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    model = torch.nn.RNN(INPUT, HIDDEN, num_layers=3, dropout=0.5).double()
    rnn = RNN.from_torch(model)
    x, _, _ = draw_inputs(2, num_states=3, dtype=np.float64, batch_first=False, h0=False,
                          lengths=False)
    model.eval()
    expected_output, expected_h_n = torch_run(model, x, None, None, False)
    output, h_n = rnn(x)
    check_close(output, expected_output, forward_tolerance)
    check_close(h_n, expected_h_n, forward_tolerance)


def test_from_torch_parametrized_weights(forward_tolerance):
    """A weight computed by a parametrisation (weight norm): from_torch reads
    the effective weight, which the state dict holds only in parts."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils import parametrizations

    torch.manual_seed(6)
    model = parametrizations.weight_norm(torch.nn.RNN(INPUT, HIDDEN, batch_first=True).double(),
                                         name="weight_hh_l0")
    assert "weight_hh_l0" not in model.state_dict()
    with torch.no_grad():
        model.parametrizations.weight_hh_l0.original0.mul_(0.5)  # not the weight it started as
    rnn = RNN.from_torch(model)
    x, _, _ = draw_inputs(6, num_states=1, dtype=np.float64, batch_first=True, h0=False,
                          lengths=False)
    expected_output, expected_h_n = torch_run(model, x, None, None, True)
    output, h_n = rnn(x)
    check_close(output, expected_output, forward_tolerance)
    check_close(h_n, expected_h_n, forward_tolerance)


def test_from_torch_refuses_other_modules():
    torch = pytest.importorskip("torch")
    for module in (torch.nn.LSTM(INPUT, HIDDEN), torch.nn.GRU(INPUT, HIDDEN)):
        name = type(module).__name__
        with pytest.raises(TypeError, match=rf"got torch.nn.{name}: fastrnn.RNN is the Elman "
                                            rf"RNN; for one layer of one direction call "
                                            rf"fastrnn.prepare_{name.lower()}\(") as error:
            RNN.from_torch(module)
        # The call the message names runs, and gives the module's output.
        suggested = str(error.value).split(" call ", 1)[1].rsplit(" (several", 1)[0]
        layer = eval(suggested, {"fastrnn": fastrnn, "module": module})
        x = np.random.default_rng(3).standard_normal((2, 5, INPUT)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x).transpose(0, 1))[0].transpose(0, 1).numpy()
        np.testing.assert_allclose(layer(x)[0], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match=r"got Sequential; for an nn.RNN inside a larger model "
                                        r"pass that submodule"):
        RNN.from_torch(torch.nn.Sequential(torch.nn.RNN(INPUT, HIDDEN)))
    with pytest.raises(TypeError, match=r"module must be a torch.nn.RNN, got OrderedDict; for a "
                                        r"state dict call fastrnn.RNN.from_state_dict"):
        RNN.from_torch(torch.nn.RNN(INPUT, HIDDEN).state_dict())
    with pytest.raises(TypeError, match="module must be a torch.nn.RNN, got RNN"):
        RNN.from_torch(RNN(INPUT, HIDDEN))  # fastrnn's own RNN is not a torch module


def test_from_torch_refuses_projections_and_other_dtypes():
    torch = pytest.importorskip("torch")
    # torch's constructor refuses proj_size for nn.RNN; a module changed afterwards:
    model = torch.nn.RNN(INPUT, HIDDEN)
    model.proj_size = 2
    with pytest.raises(ValueError, match="module has proj_size=2: projections"):
        RNN.from_torch(model)
    with pytest.raises(TypeError, match=r"must all be float32 or all float64, got torch.float16; "
                                        r"convert it with module.float\(\)"):
        RNN.from_torch(torch.nn.RNN(INPUT, HIDDEN).half())
    mixed = torch.nn.RNN(INPUT, HIDDEN)
    mixed.bias_hh_l0.data = mixed.bias_hh_l0.data.double()
    with pytest.raises(TypeError, match="got torch.float32, torch.float64"):
        RNN.from_torch(mixed)


# -- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"num_layers": 3, "bidirectional": True, "merge": "sum", "dtype": np.float64},
    {"num_layers": 2, "bias": False, "nonlinearity": "relu", "batch_first": False,
     "bidirectional": True},
])
def test_save_load_round_trip(tmp_path, kwargs):
    rnn = RNN(INPUT, HIDDEN, seed=5, **kwargs)
    path = tmp_path / "model"  # no suffix added
    rnn.save(path)
    assert path.exists()
    with np.load(path, allow_pickle=False) as data:  # plain arrays and strings only
        assert all(data[name].dtype.kind in "fU" for name in data.files)
        assert set(data.files) - set(rnn.state_dict()) == {"fastrnn_rnn_config"}
    loaded = RNN.load(str(path))
    assert repr(loaded) == repr(rnn) and loaded._config() == rnn._config()
    for name, value in rnn.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)
    x, _, lengths = draw_inputs(5, num_states=1, dtype=rnn.dtype,
                                batch_first=rnn.batch_first, h0=False, lengths=True)
    for a, b in zip(rnn(x, lengths=lengths), loaded(x, lengths=lengths), strict=True):
        np.testing.assert_array_equal(a, b)


def test_save_load_file_objects():
    rnn = RNN(INPUT, HIDDEN, num_layers=2, seed=0)
    buffer = io.BytesIO()
    rnn.save(buffer)
    buffer.seek(0)
    loaded = RNN.load(buffer, backend="numpy")
    assert loaded.backend == "numpy"
    np.testing.assert_array_equal(loaded.state_dict()["weight_ih_l1"],
                                  rnn.state_dict()["weight_ih_l1"])


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "weights.npz", **RNN(INPUT, HIDDEN).state_dict())
    with pytest.raises(ValueError, match="not a fastrnn.RNN file"):
        RNN.load(tmp_path / "weights.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a fastrnn.RNN file"):
        RNN.load(tmp_path / "one.npy")
    np.savez(tmp_path / "future.npz", fastrnn_rnn_config=np.array('{"format": 99}'))
    with pytest.raises(ValueError, match="format 99"):
        RNN.load(tmp_path / "future.npz")
    rnn = RNN(INPUT, HIDDEN)
    rnn.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as data:
        arrays = dict(data)
    arrays.pop("weight_hh_l0")
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match=r"broken.npz'\): .* lacks the weights \['weight_hh_l0'\]"):
        RNN.load(tmp_path / "broken.npz")


def _saved_parts() -> tuple[dict, dict]:
    # The configuration and weights RNN.save writes for a 2-layer
    # bidirectional model, to be altered and written back by _write.
    buffer = io.BytesIO()
    RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=0).save(buffer)
    buffer.seek(0)
    with np.load(buffer) as data:
        arrays = dict(data)
    return json.loads(str(arrays.pop("fastrnn_rnn_config"))), arrays


def _write(path, config, arrays) -> None:
    text = config if isinstance(config, str) else json.dumps(config)
    np.savez(path, fastrnn_rnn_config=np.array(text), **arrays)


def _config_change(**changes):
    def change(config, arrays):
        config.update(changes)
        return config, arrays
    return change


def _config_without(key):
    def change(config, arrays):
        del config[key]
        return config, arrays
    return change


def _arrays_change(drop=(), **extra):
    def change(config, arrays):
        return config, {k: v for k, v in arrays.items() if k not in drop} | extra
    return change


BAD_FILES = {
    "many-layers": (_config_change(num_layers=10**6),
                    r"num_layers is 1000000, but the file holds the weights of layers \[0, 1\]"),
    "fewer-layers": (_config_change(num_layers=1),
                     r"num_layers is 1, but the file holds the weights of layers \[0, 1\]"),
    "zero-layers": (_config_change(num_layers=0), r"num_layers must be an int >= 1, got 0"),
    "string-layers": (_config_change(num_layers="2"), r"num_layers must be an int >= 1, got '2'"),
    "bool-layers": (_config_change(num_layers=True), r"num_layers must be an int >= 1, got True"),
    "float-layers": (_config_change(num_layers=2.0), r"num_layers must be an int >= 1, got 2.0"),
    "negative-hidden": (_config_change(hidden_size=-1), r"hidden_size must be an int >= 1"),
    "null-input": (_config_change(input_size=None), r"input_size must be an int >= 1, got None"),
    "nonlinearity": (_config_change(nonlinearity="sigmoid"),
                     r"nonlinearity must be one of \('tanh', 'relu'\), got 'sigmoid'"),
    "merge": (_config_change(merge=3), r"merge must be one of \('concat', 'sum'\), got 3"),
    "dtype": (_config_change(dtype="float16"), r"dtype must be 'float32' or 'float64'"),
    "bias-string": (_config_change(bias="yes"), r"bias must be true or false, got 'yes'"),
    "batch-first-int": (_config_change(batch_first=1), r"batch_first must be true or false"),
    "unknown-key": (_config_change(dropout=0.5),
                    r"unknown keys \['dropout'\]; expected exactly \['input_size'"),
    "missing-key": (_config_without("merge"), r"missing keys \['merge'\]"),
    "no-format": (_config_without("format"), r"it has no 'format' entry"),
    "format-true": (_config_change(format=True), r"has fastrnn.RNN file format True"),
    "list": (lambda config, arrays: ([1, 2], arrays),
             r"it must be a JSON object, got a JSON list"),
    "string": (lambda config, arrays: ('"abc"', arrays),
               r"it must be a JSON object, got a JSON str"),
    "not-json": (lambda config, arrays: ("{", arrays),
                 r"unreadable fastrnn.RNN configuration: JSONDecodeError"),
    "nested": (lambda config, arrays: ("[" * 100_000, arrays),
               r"unreadable fastrnn.RNN configuration: RecursionError"),
    "not-bidirectional": (_config_change(bidirectional=False),
                          r"bidirectional is false, but the file holds bidirectional weights"),
    "no-bias": (_config_change(bias=False), r"bias is false, but the file holds bias weights"),
    "stray-array": (_arrays_change(extra=np.zeros(3)),
                    r"arrays that are not nn.RNN weights: \['extra'\]"),
    "missing-weight": (_arrays_change(drop=("bias_hh_l1_reverse",)),
                       r"lacks the weights \['bias_hh_l1_reverse'\]"),
    "hidden-size": (_config_change(hidden_size=HIDDEN + 1),
                    r"weights that do not fit the configuration: state_dict\['weight_ih_l0'\] "
                    rf"must have shape \({HIDDEN + 1}, {INPUT}\)"),
    "weight-shape": (_arrays_change(weight_hh_l1=np.zeros((HIDDEN, HIDDEN + 1))),
                     r"weights that do not fit the configuration: state_dict\['weight_hh_l1'\] "
                     rf"must have shape \({HIDDEN}, {HIDDEN}\)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_load_checks_the_configuration(tmp_path, case):
    # The file is not trusted: every problem is a ValueError that names the
    # file, raised before a model is built. (num_layers=10**6 took 8 s and
    # raised a KeyError of 159 MB; a JSON list escaped as AttributeError.)
    change, match = BAD_FILES[case]
    config, arrays = change(*_saved_parts())
    path = tmp_path / "model.npz"
    _write(path, config, arrays)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=re.escape(repr(path)) + r".*" + match) as info:
        RNN.load(path)
    assert time.perf_counter() - started < 5  # nothing in proportion to num_layers
    assert len(str(info.value)) < 1000


def test_load_config_entry_not_a_string(tmp_path):
    _, arrays = _saved_parts()
    np.savez(tmp_path / "model.npz", fastrnn_rnn_config=np.zeros(3), **arrays)
    with pytest.raises(ValueError, match=r"'fastrnn_rnn_config' must be one JSON string, got "
                                         r"an array of shape \(3,\) and dtype float64"):
        RNN.load(tmp_path / "model.npz")


def test_load_refuses_pickled_weights(tmp_path):
    config, arrays = _saved_parts()
    arrays["weight_ih_l0"] = np.array([None, 1], dtype=object)  # savez pickles it
    _write(tmp_path / "model.npz", config, arrays)
    with pytest.raises(ValueError, match=r"unreadable fastrnn.RNN weights: Object arrays "
                                         r"cannot be loaded when allow_pickle=False"):
        RNN.load(tmp_path / "model.npz")


def test_load_written_by_hand(tmp_path):
    # A configuration written by other code than save, in another key order,
    # loads like save's own.
    config, arrays = _saved_parts()
    _write(tmp_path / "model.npz", dict(reversed(list(config.items()))), arrays)
    loaded = RNN.load(tmp_path / "model.npz")
    assert loaded.num_layers == 2 and loaded.bidirectional
    for name, value in arrays.items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)


# -- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"input_size": 0}, ValueError, "input_size must be a positive int, got 0"),
    ({"hidden_size": -1}, ValueError, "hidden_size"),
    ({"hidden_size": 2.0}, TypeError, "hidden_size must be a positive int, got float"),
    ({"num_layers": 0}, ValueError, "num_layers"),
    ({"num_layers": True}, TypeError, "num_layers"),
    ({"nonlinearity": "sigmoid"}, ValueError, "nonlinearity must be one of"),
    ({"bias": 1}, TypeError, "bias must be a bool"),
    ({"batch_first": None}, TypeError, "batch_first must be a bool"),
    ({"bidirectional": "yes"}, TypeError, "bidirectional must be a bool"),
    ({"merge": "mean"}, ValueError, "merge must be one of"),
    ({"dtype": np.float16}, TypeError, "dtype must be float32 or float64, got float16"),
    ({"dtype": "nonsense"}, TypeError, "dtype must be float32 or float64"),
    ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
    ({"seed": "abc"}, TypeError, "seed must be"),
    ({"backend": "cuda"}, ValueError, "backend must be one of"),
])
def test_bad_constructor_args(kwargs, error, match):
    args = {"input_size": INPUT, "hidden_size": HIDDEN} | kwargs
    with pytest.raises(error, match=match):
        RNN(**args)


def good_call() -> dict:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((BATCH, STEPS, INPUT)).astype(np.float32),
            "h0": np.zeros((4, BATCH, HIDDEN), np.float32),
            "lengths": np.full(BATCH, STEPS)}


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"x": np.zeros((BATCH, STEPS, INPUT))}, TypeError, "x must have the model's dtype float32"),
    ({"x": np.zeros((BATCH, STEPS, INPUT), np.int64)}, TypeError, "x must have dtype float32"),
    ({"x": np.zeros((BATCH, STEPS, INPUT, 1), np.float32)}, ValueError,
     r"x must be 3-D.*\(4, 7, 3, 1\)"),
    ({"x": np.zeros((BATCH, STEPS, INPUT + 1), np.float32)}, ValueError,
     r"x must have 3 features.*\(4, 7, 4\)"),
    ({"h0": np.zeros((2, BATCH, HIDDEN), np.float32)}, ValueError,
     r"h0 must have shape \(4, 4, 5\).*got \(2, 4, 5\)"),
    ({"h0": np.zeros((4, BATCH, HIDDEN))}, TypeError, "h0 must have the model's dtype float32"),
    ({"h0": "zeros"}, TypeError, "h0 must have dtype float32 or float64"),
    ({"lengths": np.full(BATCH, 2.0)}, TypeError, "lengths must be an integer array"),
    ({"lengths": np.full(BATCH + 1, 2)}, ValueError, r"lengths must have shape \(4,\)"),
    ({"lengths": np.array([1, 2, STEPS + 1, 0])}, ValueError, r"lengths must lie in \[0, 7\]"),
    ({"lengths": np.array([1, -1, 2, 0])}, ValueError, r"lengths\[1\] = -1"),
    ({"out": np.empty((BATCH, STEPS, HIDDEN), np.float32)}, ValueError,
     r"out must have shape \(4, 7, 10\)"),
    ({"out": np.empty((BATCH, STEPS, 2 * HIDDEN))}, ValueError, "dtype float32"),
    ({"out": np.empty((BATCH, STEPS, 4 * HIDDEN), np.float32)[..., ::2]}, ValueError,
     "C-contiguous"),
    ({"threads": 0}, ValueError, "threads"),
    ({"backend": "gpu"}, ValueError, "backend must be one of"),
])
def test_bad_call_args(change, error, match):
    rnn = RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=0)
    with pytest.raises(error, match=match):
        rnn(**(good_call() | change))


def test_out_overlapping_input_is_refused():
    rnn = RNN(2 * HIDDEN, HIDDEN, bidirectional=True, seed=0)
    x = np.zeros((BATCH, STEPS, 2 * HIDDEN), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        rnn(x, out=x)


def test_unbatched_h0_shape_error():
    rnn = RNN(INPUT, HIDDEN, num_layers=2, seed=0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 5\).*unbatched"):
        rnn(np.zeros((STEPS, INPUT), np.float32), np.zeros((2, 1, HIDDEN), np.float32))


@pytest.mark.parametrize("batch_first", [True, False])
def test_out_is_written_and_returned(backend, batch_first):
    rnn = RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=batch_first,
              seed=0, backend=backend)
    x, h0, lengths = draw_inputs(2, num_states=4, dtype=np.float32, batch_first=batch_first,
                                 h0=True, lengths=True)
    expected_output, expected_h_n = rnn(x, h0, lengths)
    out = np.full(expected_output.shape, np.nan, np.float32)
    output, h_n = rnn(x, h0, lengths, out=out)
    assert output is out
    np.testing.assert_array_equal(out, expected_output)
    np.testing.assert_array_equal(h_n, expected_h_n)
    single = np.full((STEPS, 2 * HIDDEN), np.nan, np.float32)  # unbatched
    sequence = x[0] if batch_first else x[:, 0]
    output, h_n = rnn(sequence, h0[:, 0], out=single)
    assert output is single and h_n.shape == (4, HIDDEN)
    np.testing.assert_array_equal(single, rnn(sequence, h0[:, 0])[0])


def test_inputs_unchanged(backend):
    """Read-only, non-contiguous inputs work and are never modified."""
    rnn = RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, merge="sum", seed=0,
              backend=backend)
    rng = np.random.default_rng(6)
    x = np.asfortranarray(rng.standard_normal((BATCH, STEPS, INPUT)).astype(np.float32))
    h0 = rng.standard_normal((BATCH, 4, HIDDEN)).astype(np.float32).transpose(1, 0, 2)
    lengths = np.array([STEPS, 1, 0, 4], dtype=np.int32)
    for array in (x, h0, lengths):
        array.setflags(write=False)
    copies = [a.copy() for a in (x, h0, lengths)]
    weights = rnn.state_dict()

    output, h_n = rnn(x, h0, lengths)
    expected = rnn(np.ascontiguousarray(x), np.ascontiguousarray(h0), lengths.astype(np.int64))

    for array, before in zip((x, h0, lengths), copies, strict=True):
        np.testing.assert_array_equal(array, before)
    for name, value in rnn.state_dict().items():
        np.testing.assert_array_equal(value, weights[name])
    np.testing.assert_array_equal(output, expected[0])
    np.testing.assert_array_equal(h_n, expected[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("num_layers", "hidden"), [(1, 4), (2, 40), (3, 70)])
def test_plain_calls_take_each_layers_own_call(backend, dtype, num_layers, hidden):
    # A plain call (batch first, one direction, no lengths, out, threads or
    # backend given) runs each layer's own call (fastrnn.Layer, whose plain
    # calls of a shape met before go straight to the compiled kernel): the
    # general path's bits (a backend given takes it), chunk after chunk
    # with the state carried, for any layout of x and h0.
    rnn = RNN(INPUT, hidden, num_layers=num_layers, dtype=dtype, seed=1, backend=backend)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 12, INPUT)).astype(dtype)
    h0 = rng.standard_normal((num_layers, 3, hidden)).astype(dtype)
    for given_x in (x, np.asfortranarray(x), x[:, ::-1][:, ::-1]):
        for given_h0 in (None, h0, np.asfortranarray(h0)):
            expected = rnn(x, None if given_h0 is None else h0, backend=backend)
            output, h_n = rnn(given_x, given_h0)
            np.testing.assert_array_equal(output, expected[0])
            np.testing.assert_array_equal(h_n, expected[1])
    h, parts = h0, []
    for start, stop in ((0, 5), (5, 6), (6, 12)):
        output, h = rnn(x[:, start:stop], h)
        parts.append(output)
    expected = rnn(x, h0, backend=backend)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), expected[0],
                               rtol=0, atol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(h, expected[1], rtol=0,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    # Every layer's plain calls of these shapes were kept for the next ones.
    assert all(layer._direct for layer in rnn._prepared(backend))


def test_threads_and_backends_agree(forward_tolerance):
    rnn = RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x, h0, lengths = draw_inputs(7, num_states=4, dtype=np.float64, batch_first=True, h0=True,
                                 lengths=True)
    output, h_n = rnn(x, h0, lengths, threads=1, backend="numpy")
    for kwargs in ({"threads": 1}, {"threads": 2}, {"backend": "numba"}):
        other_output, other_h_n = rnn.forward(x, h0, lengths, **kwargs)
        check_close(other_output, output, forward_tolerance)
        check_close(other_h_n, h_n, forward_tolerance)


def test_astype(forward_tolerance):
    rnn = RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, seed=0)
    double = rnn.astype(np.float64)
    assert double.dtype == np.float64 and rnn.dtype == np.float32
    x, _, _ = draw_inputs(0, num_states=4, dtype=np.float32, batch_first=True, h0=False,
                          lengths=False)
    check_close(rnn(x)[0], double(x.astype(np.float64))[0], forward_tolerance)


def test_repr():
    assert repr(RNN(3, 5)) == "RNN(3, 5)"
    assert repr(RNN(3, 5, 2, "relu", bidirectional=True, merge="sum", dtype=np.float64)) == (
        "RNN(3, 5, num_layers=2, nonlinearity='relu', bidirectional=True, merge='sum', "
        "dtype='float64')")
    assert repr(RNN(3, 5, merge="sum")) == "RNN(3, 5)"  # merge is moot in one direction
