"""ONNX in and out: RNN.to_onnx run by ONNX Runtime, RNN.from_onnx of our own
exports, of torch.onnx.export's and of hand-built graphs, and the errors.

Skipped where onnx or onnxruntime is missing (the [onnx] and test extras
install them); the torch.onnx.export tests also need torch.
"""

from __future__ import annotations

import sys
import warnings

import naive
import numpy as np
import pytest

from fastrnn import RNN

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 17


def ort_run(model, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_model(seed: int, dtype=np.float32) -> RNN:
    """A seeded random configuration: 1-3 layers, bidirectional (concat or
    sum) or not, tanh/relu, bias or not, batch_first both ways."""
    rng = np.random.default_rng(seed)
    bidirectional = bool(rng.integers(2))
    return RNN(int(rng.integers(1, 6)), int(rng.integers(1, 8)), int(rng.integers(1, 4)),
               nonlinearity=("tanh", "relu")[rng.integers(2)], bias=bool(rng.integers(2)),
               batch_first=bool(rng.integers(2)), bidirectional=bidirectional,
               merge="sum" if bidirectional and rng.random() < 0.3 else "concat",
               dtype=dtype, seed=seed)


def random_inputs(seed: int, model: RNN, *, h0: bool, lengths: bool):
    rng = np.random.default_rng(seed + 1000)
    batch, steps = int(rng.integers(1, 5)), int(rng.integers(1, 8))
    shape = ((batch, steps, model.input_size) if model.batch_first
             else (steps, batch, model.input_size))
    x = rng.standard_normal(shape).astype(model.dtype)
    states = model.num_layers * model.num_directions
    h0_arr = (rng.uniform(-1, 1, (states, batch, model.hidden_size)).astype(model.dtype)
              if h0 else None)
    # ONNX Runtime's Y_h for a length 0 is zeros, not initial_h: lengths >= 1.
    lengths_arr = rng.integers(1, steps + 1, batch) if lengths else None
    return x, h0_arr, lengths_arr


def same_weights(a: RNN, b: RNN) -> bool:
    state_a, state_b = a.state_dict(), b.state_dict()
    return list(state_a) == list(state_b) and all(
        state_a[key].dtype == state_b[key].dtype and np.array_equal(state_a[key], state_b[key])
        for key in state_a)


# -- export, run by ONNX Runtime; round trip -------------------------------------------


@pytest.mark.parametrize("seed", range(50))
def test_export_agrees_with_onnxruntime(seed, forward_tolerance, tmp_path):
    model = random_model(seed)
    options = np.random.default_rng(seed + 2000).integers(2, size=2).astype(bool)
    h0, lengths = bool(options[0]), bool(options[1])
    path = tmp_path / "model.onnx"
    exported = model.to_onnx(path, h0=h0, lengths=lengths)
    x, h0_arr, lengths_arr = random_inputs(seed, model, h0=h0, lengths=lengths)
    feeds = {"X": x}
    if h0:
        feeds["initial_h"] = h0_arr
    if lengths:
        feeds["sequence_lens"] = lengths_arr.astype(np.int32)
    y, y_h = ort_run(onnx.load(path), feeds)
    output, h_n = model(x, h0_arr, lengths_arr)
    assert y.shape == output.shape and y_h.shape == h_n.shape
    np.testing.assert_allclose(y, output, **forward_tolerance[np.dtype(np.float32)])
    np.testing.assert_allclose(y_h, h_n, **forward_tolerance[np.dtype(np.float32)])

    back = RNN.from_onnx(path)
    assert repr(back) == repr(model)
    assert same_weights(back, model)
    assert same_weights(RNN.from_onnx(exported.SerializeToString()), model)


@pytest.mark.parametrize("seed", range(6))
def test_float64_round_trip(seed):
    """ONNX Runtime has no float64 RNN kernel: the float64 export is checked
    through from_onnx against the model itself (same weights, same config,
    so the very same results)."""
    model = random_model(seed, dtype=np.float64)
    exported = model.to_onnx(h0=True, lengths=True)
    assert exported.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    back = RNN.from_onnx(exported)
    assert back.dtype == np.float64 and repr(back) == repr(model)
    assert same_weights(back, model)
    x, h0_arr, lengths_arr = random_inputs(seed, model, h0=True, lengths=True)
    for actual, expected in zip(back(x, h0_arr, lengths_arr), model(x, h0_arr, lengths_arr),
                                strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_export_without_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exported = RNN(3, 4, seed=0).to_onnx()
    assert isinstance(exported, onnx.ModelProto)
    assert list(tmp_path.iterdir()) == []


def test_export_argument_errors():
    model = RNN(3, 4, seed=0)
    with pytest.raises(TypeError, match="h0 must be a bool, got int"):
        model.to_onnx(h0=1)
    with pytest.raises(TypeError, match="path must be a str, an os.PathLike or None, got int"):
        model.to_onnx(3)


# -- torch.onnx.export of torch.nn.RNN ----------------------------------------------------

TORCH_CASES = [
    # num_layers, bidirectional, nonlinearity, bias, batch_first, h0, dynamic axes
    (1, False, "tanh", True, False, False, False),
    (1, False, "relu", True, True, True, True),
    (2, True, "tanh", True, False, True, False),
    (2, False, "relu", False, True, False, True),
    (3, True, "relu", False, True, True, True),
    (2, True, "tanh", True, True, False, False),
]


@pytest.mark.parametrize(("num_layers", "bidirectional", "nonlinearity", "bias", "batch_first",
                          "h0", "dynamic"), TORCH_CASES)
def test_torch_onnx_export_imports(num_layers, bidirectional, nonlinearity, bias, batch_first, h0,
                                   dynamic, forward_tolerance, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(num_layers)
    module = torch.nn.RNN(3, 5, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
                          batch_first=batch_first, bidirectional=bidirectional)
    rng = np.random.default_rng(num_layers)
    batch, steps = 2, 4
    x = rng.standard_normal((batch, steps, 3) if batch_first else (steps, batch, 3),
                            dtype=np.float32)
    states = num_layers * (2 if bidirectional else 1)
    h0_arr = rng.uniform(-1, 1, (states, batch, 5)).astype(np.float32)
    args = (torch.from_numpy(x), torch.from_numpy(h0_arr)) if h0 else (torch.from_numpy(x),)
    names = ["x", "h0"][:len(args)]
    axes = {0: "batch", 1: "time"} if batch_first else {0: "time", 1: "batch"}
    path = tmp_path / "torch.onnx"
    # dynamo=True unrolls nn.RNN into MatMuls (no ONNX RNN node): the
    # TorchScript exporter, deprecated, warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=False, input_names=names,
                          output_names=["output", "h_n"],
                          dynamic_axes={"x": axes} if dynamic else None)
    model = RNN.from_onnx(path)
    assert (model.num_layers, model.bidirectional, model.nonlinearity, model.bias,
            model.batch_first) == (num_layers, bidirectional, nonlinearity, bias, batch_first)
    if dynamic:  # another batch and length than the export's
        x = rng.standard_normal((3, 6, 3) if batch_first else (6, 3, 3), dtype=np.float32)
        h0_arr = rng.uniform(-1, 1, (states, 3, 5)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x), torch.from_numpy(h0_arr) if h0 else None)
    actual = model(x, h0_arr if h0 else None)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), **forward_tolerance[np.dtype(np.float32)])


def test_torch_onnx_export_of_packed_sequences(forward_tolerance, tmp_path):
    """pack_padded_sequence(..., enforce_sorted=True) exports the lengths as
    sequence_lens (enforce_sorted=False sorts the batch with TopK, which
    from_onnx refuses)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Packed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.RNN(3, 5, num_layers=2, bidirectional=True, batch_first=True)

        def forward(self, x, lengths):
            packed = pack_padded_sequence(x, lengths, batch_first=True)
            output, h_n = self.rnn(packed)
            output, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
            return output, h_n

    torch.manual_seed(0)
    module = Packed()
    x = np.random.default_rng(17).standard_normal((3, 6, 3), dtype=np.float32)
    lengths = np.array([6, 4, 1])
    args = (torch.from_numpy(x), torch.from_numpy(lengths))
    path = tmp_path / "packed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=False, input_names=["x", "lengths"])
    model = RNN.from_onnx(path)
    with torch.no_grad():
        expected = module(*args)
    for got, want in zip(model(x, lengths=lengths), expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), **forward_tolerance[np.dtype(np.float32)])


# -- hand-built graphs ---------------------------------------------------------------------


def value_info(name, element, shape):
    """An input's or output's type; an int shape is a rank, every size unknown."""
    if isinstance(shape, int):
        shape = [None] * shape
    return helper.make_tensor_value_info(name, element, shape)


def weights(seed, num_directions, hidden, features, dtype=np.float64):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((num_directions, hidden, features)) / np.sqrt(features)
    r = rng.standard_normal((num_directions, hidden, hidden)) / np.sqrt(hidden)
    b = 0.5 * rng.standard_normal((num_directions, 2 * hidden))
    return w.astype(dtype), r.astype(dtype), b.astype(dtype)


def make_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "hand_built", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


def naive_direction(x_btf, w, r, b, direction, *, h0=None, lengths=None, nonlinearity="tanh"):
    hidden = w.shape[1]
    return naive.rnn(x_btf, w[direction], r[direction], b[direction, :hidden],
                     b[direction, hidden:], h0=h0, lengths=lengths, nonlinearity=nonlinearity,
                     reverse=bool(direction))


def test_layout1_bidirectional_with_lengths_and_initial_h(assert_close):
    """layout=1 reads the graph input as it is: the model is batch-first;
    initial_h is (B, D, H) in the graph, (D, B, H) for fastrnn."""
    batch, steps, features, hidden = 3, 5, 4, 6
    w, r, b = weights(0, 2, hidden, features)
    node = helper.make_node("RNN", ["X", "W", "R", "B", "lens", "h0"], ["Y", "Y_h"],
                            hidden_size=hidden, direction="bidirectional", layout=1,
                            activations=["Relu", "Relu"])
    model = make_model(
        [node],
        [value_info("X", TensorProto.DOUBLE, ["batch", "time", features]),
         value_info("lens", TensorProto.INT32, ["batch"]),
         value_info("h0", TensorProto.DOUBLE, ["batch", 2, hidden])],
        [value_info("Y", TensorProto.DOUBLE, 4), value_info("Y_h", TensorProto.DOUBLE, 3)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"),
         numpy_helper.from_array(b, "B")])
    rnn = RNN.from_onnx(model)
    assert repr(rnn) == "RNN(4, 6, nonlinearity='relu', bidirectional=True, dtype='float64')"
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, steps, features))
    h0 = rng.uniform(-1, 1, (2, batch, hidden))
    lengths = np.array([5, 0, 3])
    output, h_n = rnn(x, h0, lengths)
    for direction in (0, 1):
        expected, expected_h = naive_direction(x, w, r, b, direction, h0=h0[direction],
                                               lengths=lengths, nonlinearity="relu")
        assert_close(output[..., direction * hidden:(direction + 1) * hidden], expected)
        assert_close(h_n[direction], expected_h)


def test_reverse_with_constant_node_weights(assert_close):
    """A one-way reverse node, weights as Constant nodes, layout 0, with
    sequence_lens and initial_h: imported as bidirectional, merge="sum", the
    forward weights zero."""
    batch, steps, features, hidden = 2, 6, 3, 4
    w, r, b = weights(2, 1, hidden, features)
    constants = [helper.make_node("Constant", [], [name], name=f"const_{name}",
                                  value=numpy_helper.from_array(array, name))
                 for name, array in (("W", w), ("R", r), ("B", b))]
    node = helper.make_node("RNN", ["X", "W", "R", "B", "lens", "h0"], ["Y", "Y_h"],
                            hidden_size=hidden, direction="reverse", name="rnn")
    model = make_model(
        [*constants, node],
        [value_info("X", TensorProto.DOUBLE, ["time", "batch", features]),
         value_info("lens", TensorProto.INT32, ["batch"]),
         value_info("h0", TensorProto.DOUBLE, [1, "batch", hidden])],
        [value_info("Y", TensorProto.DOUBLE, 4), value_info("Y_h", TensorProto.DOUBLE, 3)])
    rnn = RNN.from_onnx(model)
    assert (rnn.batch_first, rnn.bidirectional, rnn.merge) == (False, True, "sum")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((steps, batch, features))
    h0 = rng.uniform(-1, 1, (1, batch, hidden))
    lengths = np.array([4, 6])
    # The zero-weight forward direction's h0: zeros.
    output, h_n = rnn(x, np.concatenate([np.zeros_like(h0), h0]), lengths)
    expected, expected_h = naive_direction(x.transpose(1, 0, 2), np.concatenate([w, w]),
                                           np.concatenate([r, r]), np.concatenate([b, b]), 1,
                                           h0=h0[0], lengths=lengths)
    assert_close(output, expected.transpose(1, 0, 2))
    assert_close(h_n[1], expected_h)
    assert not h_n[0].any()


def test_stacked_layout1_nodes_with_reshape(assert_close):
    """Two layout=1 nodes, the first bidirectional without B, its Y
    (B, T, D, H) reshaped to (B, T, D * H) for the second; h_n from Y_h."""
    batch, steps, features, hidden = 2, 4, 3, 5
    w0, r0, _ = weights(4, 2, hidden, features)
    w1, r1, b1 = weights(5, 2, hidden, 2 * hidden)
    nodes = [
        helper.make_node("RNN", ["X", "W0", "R0"], ["Y0", "Y_h0"], hidden_size=hidden,
                         direction="bidirectional", layout=1),
        helper.make_node("Reshape", ["Y0", "shape"], ["X1"]),
        helper.make_node("RNN", ["X1", "W1", "R1", "B1"], ["Y1", "Y_h1"], hidden_size=hidden,
                         direction="bidirectional", layout=1),
        helper.make_node("Concat", ["Y_h0", "Y_h1"], ["Y_h"], axis=1),
    ]
    arrays = {"W0": w0, "R0": r0, "W1": w1, "R1": r1, "B1": b1,
              "shape": np.array([0, 0, -1], np.int64)}
    model = make_model(
        nodes, [value_info("X", TensorProto.DOUBLE, ["batch", "time", features])],
        [value_info("Y1", TensorProto.DOUBLE, 4), value_info("Y_h", TensorProto.DOUBLE, 3)],
        [numpy_helper.from_array(array, name) for name, array in arrays.items()])
    rnn = RNN.from_onnx(model)
    assert (rnn.num_layers, rnn.batch_first, rnn.bias, rnn.merge) == (2, True, True, "concat")
    x = np.random.default_rng(6).standard_normal((batch, steps, features))
    output, h_n = rnn(x)
    zeros = np.zeros((2, 2 * hidden))
    first = [naive_direction(x, w0, r0, zeros, d) for d in (0, 1)]
    middle = np.concatenate([first[0][0], first[1][0]], axis=-1)
    second = [naive_direction(middle, w1, r1, b1, d) for d in (0, 1)]
    assert_close(output, np.concatenate([second[0][0], second[1][0]], axis=-1))
    assert_close(h_n, np.stack([first[0][1], first[1][1], second[0][1], second[1][1]]))


# -- errors -----------------------------------------------------------------------------


def one_node_model(extra_nodes=(), outputs=("Y", "Y_h"), **attributes):
    hidden, features = 3, 2
    num_directions = 2 if attributes.get("direction") == "bidirectional" else 1
    w, r, b = weights(7, num_directions, hidden, features, np.float32)
    node = helper.make_node("RNN", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden,
                            name="rnn", **attributes)
    return make_model(
        [node, *extra_nodes], [value_info("X", TensorProto.FLOAT, ["time", "batch", features])],
        [value_info(name, TensorProto.FLOAT, 3 if name == "Y_h" else 4) for name in outputs],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"),
         numpy_helper.from_array(b, "B")])


@pytest.mark.parametrize(("attributes", "message"), [
    ({"activations": ["Sigmoid"]},
     r"node 'rnn' \(RNN\) has attribute 'activations' = \['Sigmoid'\]: fastrnn.RNN supports "
     r"only 'Tanh' and 'Relu'"),
    ({"direction": "bidirectional", "activations": ["Tanh", "Relu"]},
     r"node 'rnn' \(RNN\) has attribute 'activations' = \['Tanh', 'Relu'\]: fastrnn.RNN uses "
     r"the same activation in every direction"),
    ({"clip": 3.0}, r"node 'rnn' \(RNN\) has attribute 'clip': fastrnn.RNN has no clipping"),
    ({"activations": ["Relu"], "activation_alpha": [0.5]},
     r"node 'rnn' \(RNN\) has attribute 'activation_alpha'"),
])
def test_unsupported_attributes(attributes, message):
    with pytest.raises(ValueError, match=message):
        RNN.from_onnx(one_node_model(**attributes))


def test_unsupported_op():
    extra = [helper.make_node("Add", ["Y", "Y"], ["Z"], name="double")]
    with pytest.raises(ValueError, match=r"node 'double' \(Add\) is not supported: from_onnx "
                                         r"reads ONNX RNN nodes and the plumbing ops Cast, "):
        RNN.from_onnx(one_node_model(extra, outputs=("Z",)))


def test_unrolled_graph_says_to_export_without_dynamo():
    nodes = [helper.make_node("MatMul", ["X", "W"], ["Y"])]
    model = make_model(nodes, [value_info("X", TensorProto.FLOAT, [2, 3])],
                       [value_info("Y", TensorProto.FLOAT, 4)],
                       [numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")])
    with pytest.raises(ValueError, match=r"node #0 \(MatMul\) is not supported.*dynamo=False"):
        RNN.from_onnx(model)


def test_interleaved_directions_refused():
    """(T, D, B, H) reshaped without the Transpose: the next layer would read
    directions and batch mixed up; the import refuses it."""
    hidden, features = 3, 2
    w0, r0, _ = weights(8, 2, hidden, features, np.float32)
    w1, r1, _ = weights(9, 1, hidden, 2 * hidden, np.float32)
    nodes = [
        helper.make_node("RNN", ["X", "W0", "R0"], ["Y0"], hidden_size=hidden,
                         direction="bidirectional", name="first"),
        helper.make_node("Reshape", ["Y0", "shape"], ["X1"], name="flatten"),
        helper.make_node("RNN", ["X1", "W1", "R1"], ["Y1"], hidden_size=hidden, name="second"),
    ]
    arrays = {"W0": w0, "R0": r0, "W1": w1, "R1": r1, "shape": np.array([0, 0, -1], np.int64)}
    model = make_model(nodes, [value_info("X", TensorProto.FLOAT, ["time", "batch", features])],
                       [value_info("Y1", TensorProto.FLOAT, 4)],
                       [numpy_helper.from_array(array, name) for name, array in arrays.items()])
    with pytest.raises(ValueError, match=r"node 'second' \(RNN\): input X must be the previous "
                                         r"RNN node's \(node 'first' \(RNN\)\) output Y"):
        RNN.from_onnx(model)


def test_constant_initial_h_refused():
    hidden, features = 3, 2
    w, r, _ = weights(10, 1, hidden, features, np.float32)
    node = helper.make_node("RNN", ["X", "W", "R", "", "", "h0"], ["Y"], hidden_size=hidden,
                            name="rnn")
    model = make_model([node], [value_info("X", TensorProto.FLOAT, ["time", 2, features])],
                       [value_info("Y", TensorProto.FLOAT, 4)],
                       [numpy_helper.from_array(array, name) for name, array in
                        (("W", w), ("R", r), ("h0", np.ones((1, 2, hidden), np.float32)))])
    with pytest.raises(ValueError, match=r"node 'rnn' \(RNN\): input initial_h is a constant"):
        RNN.from_onnx(model)


def test_bad_argument():
    with pytest.raises(TypeError, match="model_or_path must be an onnx.ModelProto, a path or "
                                        "the bytes of an ONNX file, got int"):
        RNN.from_onnx(3)


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "fastrnn\[onnx\]"'):
        RNN(3, 4, seed=0).to_onnx()
    with pytest.raises(ImportError, match=r'pip install "fastrnn\[onnx\]"'):
        RNN.from_onnx("model.onnx")


def two_layer_model(*, second_activation="Tanh", second_lengths=True, outputs=("Y1",)):
    """Two forward nodes, torch.onnx.export's Squeeze between them."""
    hidden, features = 3, 2
    w0, r0, _ = weights(11, 1, hidden, features, np.float32)
    w1, r1, _ = weights(12, 1, hidden, hidden, np.float32)
    nodes = [
        helper.make_node("RNN", ["X", "W0", "R0", "", "lens"], ["Y0"], hidden_size=hidden,
                         name="first"),
        helper.make_node("Squeeze", ["Y0", "axes"], ["X1"], name="squeeze"),
        helper.make_node("RNN", ["X1", "W1", "R1", "", "lens" if second_lengths else ""],
                         ["Y1"], hidden_size=hidden, activations=[second_activation],
                         name="second"),
    ]
    arrays = {"W0": w0, "R0": r0, "W1": w1, "R1": r1, "axes": np.array([1], np.int64)}
    return make_model(
        nodes, [value_info("X", TensorProto.FLOAT, ["time", "batch", features]),
                value_info("lens", TensorProto.INT32, ["batch"])],
        [value_info(name, TensorProto.FLOAT, 4) for name in outputs],
        [numpy_helper.from_array(array, name) for name, array in arrays.items()])


def test_two_layer_graph_imports(assert_close):
    rnn = RNN.from_onnx(two_layer_model())
    assert repr(rnn) == "RNN(2, 3, num_layers=2, bias=False, batch_first=False)"
    rng = np.random.default_rng(13)
    x = rng.standard_normal((5, 3, 2)).astype(np.float32)
    lengths = np.array([5, 1, 3])
    output, h_n = rnn(x, lengths=lengths)
    w0, r0, _ = weights(11, 1, 3, 2, np.float32)  # two_layer_model's weights
    w1, r1, _ = weights(12, 1, 3, 3, np.float32)
    middle, first_h = naive.rnn(x, w0[0], r0[0], batch_first=False, lengths=lengths)
    expected, second_h = naive.rnn(middle, w1[0], r1[0], batch_first=False, lengths=lengths)
    assert_close(output, expected)
    assert_close(h_n, np.stack([first_h, second_h]))


@pytest.mark.parametrize(("options", "message"), [
    ({"second_activation": "Relu"},
     r"node 'second' \(RNN\) has attribute 'activations' 'relu' where node 'first' \(RNN\) "
     r"has 'tanh'"),
    ({"second_lengths": False},
     r"node 'second' \(RNN\): input 'sequence_lens' differs from the first RNN node's"),
    ({"outputs": ("Y0", "Y1")},
     r"graph output 'Y0' is computed from \['Y 0'\]; fastrnn.RNN returns only the last RNN "
     r"node's Y and the Y_h of every node"),
])
def test_two_layer_graph_errors(options, message):
    with pytest.raises(ValueError, match=message):
        RNN.from_onnx(two_layer_model(**options))


def test_forward_then_reverse_agrees_with_onnxruntime(forward_tolerance):
    """A forward node then a reverse one (ONNX Runtime runs layout 0): the
    import, bidirectional with zero weights in each missing direction and
    merge="sum", gives ONNX Runtime's Y; h_n holds each node's Y_h."""
    hidden, features = 4, 3
    w0, r0, b0 = weights(14, 1, hidden, features, np.float32)
    w1, r1, b1 = weights(15, 1, hidden, hidden, np.float32)
    nodes = [
        helper.make_node("RNN", ["X", "W0", "R0", "B0", "lens"], ["Y0", "Y_h0"],
                         hidden_size=hidden, activations=["Relu"]),
        helper.make_node("Squeeze", ["Y0", "axes"], ["X1"]),
        helper.make_node("RNN", ["X1", "W1", "R1", "B1", "lens"], ["Y1", "Y_h1"],
                         hidden_size=hidden, direction="reverse", activations=["Relu"]),
        helper.make_node("Squeeze", ["Y1", "axes"], ["Y"]),
        helper.make_node("Concat", ["Y_h0", "Y_h1"], ["Y_h"], axis=0),
    ]
    arrays = {"W0": w0, "R0": r0, "B0": b0, "W1": w1, "R1": r1, "B1": b1,
              "axes": np.array([1], np.int64)}
    model = make_model(
        nodes, [value_info("X", TensorProto.FLOAT, ["time", "batch", features]),
                value_info("lens", TensorProto.INT32, ["batch"])],
        [value_info("Y", TensorProto.FLOAT, 3), value_info("Y_h", TensorProto.FLOAT, 3)],
        [numpy_helper.from_array(array, name) for name, array in arrays.items()])
    rnn = RNN.from_onnx(model)
    assert (rnn.num_layers, rnn.bidirectional, rnn.merge) == (2, True, "sum")
    rng = np.random.default_rng(16)
    x = rng.standard_normal((6, 3, features)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    y, y_h = ort_run(model, {"X": x, "lens": lengths.astype(np.int32)})
    output, h_n = rnn(x, lengths=lengths)
    tolerance = forward_tolerance[np.dtype(np.float32)]
    np.testing.assert_allclose(output, y, **tolerance)
    # h_n rows: layer 0 forward, layer 0 reverse (zero weights), layer 1 ...
    np.testing.assert_allclose(h_n[[0, 3]], y_h, **tolerance)
    assert not h_n[[1, 2]].any()


def test_initial_h_through_gather_and_unsqueeze(assert_close):
    """initial_h computed from a graph input by ops whose arrangement is not
    followed (Gather, then Unsqueeze with its constant axes) is accepted."""
    hidden, features = 3, 2
    w, r, b = weights(18, 1, hidden, features)
    nodes = [helper.make_node("Gather", ["h0", "first"], ["h0_first"], axis=0),
             helper.make_node("Unsqueeze", ["h0_first", "axes"], ["initial_h"]),
             helper.make_node("RNN", ["X", "W", "R", "B", "", "initial_h"], ["Y"],
                              hidden_size=hidden)]
    # axes -3: the result's first axis, written so that the constant is nonzero
    arrays = {"W": w, "R": r, "B": b, "first": np.array(0, np.int64),
              "axes": np.array([-3], np.int64)}
    model = make_model(
        nodes, [value_info("X", TensorProto.DOUBLE, ["time", "batch", features]),
                value_info("h0", TensorProto.DOUBLE, [1, "batch", hidden])],
        [value_info("Y", TensorProto.DOUBLE, 4)],
        [numpy_helper.from_array(array, name) for name, array in arrays.items()])
    rnn = RNN.from_onnx(model)
    rng = np.random.default_rng(19)
    x = rng.standard_normal((4, 2, features))
    h0 = rng.uniform(-1, 1, (1, 2, hidden))
    output, h_n = rnn(x, h0)
    expected, expected_h = naive_direction(x.transpose(1, 0, 2), w, r, b, 0, h0=h0[0])
    assert_close(output, expected.transpose(1, 0, 2))
    assert_close(h_n[0], expected_h)
