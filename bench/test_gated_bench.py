"""GRU and LSTM layers: fastrnn (both backends) against PyTorch, for three call
patterns: one whole forward (``torch.nn.GRU``/``nn.LSTM``), one time step
(``nn.GRUCell``/``nn.LSTMCell``, NumPy in and out each step) and a stream fed
in chunks of CHUNK steps, the state carried (the module called per chunk).
Whole calls also against JAX (``jit`` of a ``lax.scan``, the input product
hoisted), ONNX Runtime (one ONNX ``GRU``/``LSTM`` node) and OpenVINO
(``GRUSequence``/``LSTMSequence``), as the Elman benchmarks time them
(:mod:`fastrnn.benchmark`); ONNX Runtime and OpenVINO float32 only.

Every implementation is checked against fastrnn's NumPy backend before it is
timed (whole calls: the output; steps: the state after CHECK_STEPS steps;
chunks: the final state against one whole call). Timing as in
test_forward_bench.py. Groups: "gru f32 B=32 T=100 I=16 H=64", "lstm step f32
B=1 I=16 H=256", "gru chunks f32 B=1 T=10000 I=16 H=64 chunk=100".
Run: ``pytest --benchmark-only bench/test_gated_bench.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import fastrnn

from .test_forward_bench import DTYPES, time_forward

CELLS = {"gru": (3, fastrnn.prepare_gru), "lstm": (4, fastrnn.prepare_lstm)}
SIZES = [(1, 100, 16, 64), (1, 1000, 16, 256), (32, 100, 16, 64), (32, 50, 256, 256),
         (64, 100, 128, 512), (32, 50, 1024, 1024)]
STEP_SIZES = [(1, 16, 8), (1, 16, 64), (1, 16, 256), (1, 16, 1024), (32, 16, 64),
              (32, 16, 256)]
CHUNK_SIZES = [(1, 10_000, 16, 64), (1, 10_000, 16, 256), (32, 2000, 16, 64)]
CHUNK = 100
CHECK_STEPS = 5
IMPLEMENTATIONS = ("fastrnn-numba", "fastrnn-numpy", "torch")
PEERS = ("jax", "onnxruntime", "openvino")  # whole calls only
TOLERANCE = {"f32": 2e-5, "f64": 1e-10}


def _param(cell, name, dtype, size, pattern):
    return pytest.param(cell, name, dtype, size,
                        id=f"{cell}-{name}-{dtype}-{'x'.join(map(str, size))}-{pattern}")


CASES = [_param(c, n, d, s, "call") for c in CELLS for d in DTYPES for s in SIZES
         for n in IMPLEMENTATIONS + PEERS if d == "f32" or n not in ("onnxruntime", "openvino")]
STEP_CASES = [_param(c, n, d, s, "step") for c in CELLS for d in DTYPES for s in STEP_SIZES
              for n in IMPLEMENTATIONS]
CHUNK_CASES = [_param(c, n, d, s, "chunks") for c in CELLS for d in DTYPES for s in CHUNK_SIZES
               for n in ("fastrnn-numba", "fastrnn-numba-one-call", "torch")]


@functools.lru_cache(maxsize=2)
def weights(cell: str, dtype: str, input_size: int, hidden: int) -> tuple[np.ndarray, ...]:
    """PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H))."""
    gates = CELLS[cell][0]
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(hidden)
    shapes = [(gates * hidden, input_size), (gates * hidden, hidden), (gates * hidden,),
              (gates * hidden,)]
    return tuple(rng.uniform(-bound, bound, s).astype(DTYPES[dtype]) for s in shapes)


def inputs(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(shape).astype(DTYPES[dtype])


def layer(cell: str, backend: str, w: tuple[np.ndarray, ...]):
    return CELLS[cell][1](*w, backend=backend)


def torch_module(torch, cell: str, w: tuple[np.ndarray, ...], step: bool):
    """nn.GRU/nn.LSTM (batch first), or the Cell when ``step``, with weights w."""
    hidden, input_size = w[1].shape[1], w[0].shape[1]
    kind = {"gru": ("GRU", "GRUCell"), "lstm": ("LSTM", "LSTMCell")}[cell][step]
    module = getattr(torch.nn, kind)(input_size, hidden, **({} if step else
                                                            {"batch_first": True}))
    module = module.to(torch.float32 if w[0].dtype == np.float32 else torch.float64)
    suffix = "" if step else "_l0"
    with torch.no_grad():
        for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), w,
                               strict=True):
            getattr(module, name + suffix).copy_(torch.from_numpy(value))
    return module


# Where each peer wants PyTorch's gate blocks (PyTorch: GRU r, z, n; LSTM
# i, f, g, o): ONNX's GRU z, r, h and LSTM i, o, f, c; OpenVINO's GRU z, r, h
# and LSTM f, i, c, o.
GATE_ORDER = {"onnx": {"gru": (1, 0, 2), "lstm": (0, 3, 1, 2)},
              "openvino": {"gru": (1, 0, 2), "lstm": (1, 0, 2, 3)}}


def _gates(value: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """The gate blocks of ``value`` (G H rows first) in ``order``, with a
    leading direction axis of 1."""
    blocks = np.split(value, len(order))
    return np.ascontiguousarray(np.concatenate([blocks[g] for g in order])[None])


def onnxruntime_call(cell: str, w: tuple[np.ndarray, ...], x: np.ndarray):
    """One ONNX ``GRU`` (``linear_before_reset=1``: PyTorch's n gate) or
    ``LSTM`` node, time-major (ONNX Runtime refuses ``layout=1``), in a
    session made once; each call transposes x to (T, B, I) and the output
    back to (B, T, H), as the Elman benchmark's ONNX Runtime peer does."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    w_ih, w_hh, b_ih, b_hh = w
    hidden, input_size = w_hh.shape[1], w_ih.shape[1]
    order = GATE_ORDER["onnx"][cell]
    extra = {"linear_before_reset": 1} if cell == "gru" else {}
    node = helper.make_node(cell.upper(), ["X", "W", "R", "B"], ["Y"], hidden_size=hidden,
                            direction="forward", layout=0, **extra)
    initializers = [numpy_helper.from_array(_gates(w_ih, order), "W"),
                    numpy_helper.from_array(_gates(w_hh, order), "R"),
                    numpy_helper.from_array(np.concatenate([_gates(b_ih, order),
                                                            _gates(b_hh, order)], axis=1), "B")]
    graph = helper.make_graph(
        [node], cell, [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                     ["T", "B", input_size])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", hidden])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])

    def run():
        (y,) = session.run(None, {"X": np.ascontiguousarray(x.transpose(1, 0, 2))})
        return y[:, 0].transpose(1, 0, 2)

    return run


def openvino_call(cell: str, w: tuple[np.ndarray, ...], x: np.ndarray):
    """OpenVINO's ``GRUSequence`` (``linear_before_reset``) or
    ``LSTMSequence``, batch-first, compiled for the CPU for this shape, in
    float32 (see fastrnn.benchmark's OpenVINO peer); a call is one inference
    request, NumPy in and out."""
    from fastrnn.benchmark import _OPENVINO_F32, _import_openvino

    try:  # (not importorskip: the import of its tools forks, see _import_openvino)
        openvino = _import_openvino()
    except ImportError as error:
        pytest.skip(f"openvino: {error}")
    import openvino.opset13 as ops

    w_ih, w_hh, b_ih, b_hh = w
    batch, steps, _ = x.shape
    hidden = w_hh.shape[1]
    order = GATE_ORDER["openvino"][cell]
    inputs = ops.parameter(list(x.shape), openvino.Type.f32, name="x")
    zeros = ops.constant(np.zeros((batch, 1, hidden), np.float32))
    lengths = ops.constant(np.full(batch, steps, np.int32))
    if cell == "gru":
        # Biases z, r (both summed), then the n gate's two (kept apart).
        both = _gates(b_ih, order) + _gates(b_hh, order)
        bias = np.concatenate([both[:, :2 * hidden], _gates(b_ih, order)[:, 2 * hidden:],
                               _gates(b_hh, order)[:, 2 * hidden:]], axis=1)
        sequence = ops.gru_sequence(inputs, zeros, lengths, _gates(w_ih, order),
                                    _gates(w_hh, order), bias, hidden, "forward",
                                    linear_before_reset=True)
    else:
        sequence = ops.lstm_sequence(inputs, zeros, zeros, lengths, _gates(w_ih, order),
                                     _gates(w_hh, order),
                                     _gates(b_ih, order) + _gates(b_hh, order), hidden,
                                     "forward")
    output = ops.squeeze(sequence.output(0), ops.constant(np.array([1])))
    model = openvino.Model([output], [inputs], cell)
    request = openvino.Core().compile_model(model, "CPU", _OPENVINO_F32).create_infer_request()

    def run():
        return request.infer({0: x})[0]

    return run


@functools.lru_cache(maxsize=1)
def _jax_cells():
    """JAX's jitted GRU and LSTM forward passes (x64 on: fastrnn.benchmark._jax):
    the input product for every step at once, then a ``lax.scan`` of the
    recurrent product and the gates."""
    from fastrnn.benchmark import _jax

    jnp = _jax()[0]
    import jax
    from jax import lax

    def sigmoid(v):
        return jax.nn.sigmoid(v)

    def forward(step, state):
        @jax.jit
        def run(x, w_ih, w_hh, b_ih, b_hh):
            pre = jnp.swapaxes(x @ w_ih.T + b_ih, 0, 1)
            _, hs = lax.scan(lambda s, p: step(s, p, w_hh.T, b_hh), state(x, w_hh), pre)
            return jnp.swapaxes(hs, 0, 1)
        return run

    def gru_step(h, p, w_hh_t, b_hh):
        g = h @ w_hh_t + b_hh
        r_p, z_p, n_p = jnp.split(p, 3, axis=1)
        r_g, z_g, n_g = jnp.split(g, 3, axis=1)
        r, z = sigmoid(r_p + r_g), sigmoid(z_p + z_g)
        h = (1 - z) * jnp.tanh(n_p + r * n_g) + z * h
        return h, h

    def lstm_step(hc, p, w_hh_t, b_hh):
        h, c = hc
        i, f, g, o = jnp.split(p + h @ w_hh_t + b_hh, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
        h = sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def zeros(x, w_hh):
        return jnp.zeros((x.shape[0], w_hh.shape[1]), x.dtype)

    return jnp, {"gru": forward(gru_step, zeros),
                 "lstm": forward(lstm_step, lambda x, w_hh: (zeros(x, w_hh), zeros(x, w_hh)))}


def jax_call(cell: str, w: tuple[np.ndarray, ...], x: np.ndarray):
    pytest.importorskip("jax")
    jnp, forwards = _jax_cells()
    weights = tuple(jnp.asarray(a) for a in w)
    if weights[0].dtype != x.dtype:
        raise RuntimeError(f"jax computes in {weights[0].dtype}, not {x.dtype}: x64 is off")

    def run():
        return np.asarray(forwards[cell](jnp.asarray(x), *weights).block_until_ready())

    return run


PEER_CALLS = {"jax": jax_call, "onnxruntime": onnxruntime_call, "openvino": openvino_call}


def _flops(cell: str, batch: int, steps: int, input_size: int, hidden: int) -> int:
    return 2 * batch * steps * CELLS[cell][0] * hidden * (input_size + hidden)


def _skip_missing(name: str):
    if name == "torch":
        torch = pytest.importorskip("torch")
        torch.set_grad_enabled(False)
        return torch
    if name.startswith("fastrnn-numba"):
        pytest.importorskip("numba")
    return None


@pytest.mark.parametrize(("cell", "name", "dtype", "size"), CASES)
def test_gated_call(benchmark, request, cell, name, dtype, size):
    torch = _skip_missing(name)
    batch, steps, input_size, hidden = size
    benchmark.group = f"{cell} {dtype} B={batch} T={steps} I={input_size} H={hidden}"
    w = weights(cell, dtype, input_size, hidden)
    x = inputs(dtype, (batch, steps, input_size))
    if torch is not None:
        module = torch_module(torch, cell, w, step=False)
        x_t = torch.from_numpy(x)

        def run():
            return module(x_t)[0].numpy()
    elif name in PEER_CALLS:
        run = PEER_CALLS[name](cell, w, x)
    else:
        prepared = layer(cell, name.split("-")[1], w)

        def run():
            return prepared(x)[0]

    expected = layer(cell, "numpy", w)(x)[0]
    np.testing.assert_allclose(run(), expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    work = _flops(cell, *size)
    benchmark.extra_info.update(impl=name, cell=cell, dtype=dtype, B=batch, T=steps,
                                I=input_size, H=hidden, flops=work, pattern="call")
    time_forward(benchmark, request, run, work)


@pytest.mark.parametrize(("cell", "name", "dtype", "size"), STEP_CASES)
def test_gated_step(benchmark, request, cell, name, dtype, size):
    torch = _skip_missing(name)
    batch, input_size, hidden = size
    benchmark.group = f"{cell} step {dtype} B={batch} I={input_size} H={hidden}"
    w = weights(cell, dtype, input_size, hidden)
    x = inputs(dtype, (batch, CHECK_STEPS, input_size))
    lstm = cell == "lstm"
    states = [np.zeros((batch, hidden), DTYPES[dtype]) for _ in range(2 if lstm else 1)]
    feed = {"t": 0}  # the step's input: x[:, t % CHECK_STEPS]
    if torch is not None:
        module = torch_module(torch, cell, w, step=True)
        carried = [torch.from_numpy(s) for s in states]

        def run():
            x_t = torch.from_numpy(x[:, feed["t"] % CHECK_STEPS])
            feed["t"] += 1
            new = module(x_t, tuple(carried) if lstm else carried[0])
            carried[:] = list(new) if lstm else [new]
            return [c.numpy() for c in carried]
    else:
        prepared = layer(cell, name.split("-")[1], w)

        def run():
            x_t = x[:, feed["t"] % CHECK_STEPS]
            feed["t"] += 1
            if lstm:
                prepared.step(x_t, (states[0], states[1]), out=(states[0], states[1]))
            else:
                prepared.step(x_t, states[0], out=states[0])
            return states

    for _ in range(CHECK_STEPS):
        got = run()
    expected = layer(cell, "numpy", w)(x, return_sequences=False)
    for value, want in zip(got, expected if lstm else (expected,), strict=True):
        np.testing.assert_allclose(value, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    work = _flops(cell, batch, 1, input_size, hidden)
    benchmark.extra_info.update(impl=name, cell=cell, dtype=dtype, B=batch, I=input_size,
                                H=hidden, flops=work, pattern="step")
    time_forward(benchmark, request, run, work)


@pytest.mark.parametrize(("cell", "name", "dtype", "size"), CHUNK_CASES)
def test_gated_chunks(benchmark, request, cell, name, dtype, size):
    torch = _skip_missing(name)
    batch, steps, input_size, hidden = size
    benchmark.group = (f"{cell} chunks {dtype} B={batch} T={steps} I={input_size} H={hidden} "
                       f"chunk={CHUNK}")
    w = weights(cell, dtype, input_size, hidden)
    x = inputs(dtype, (batch, steps, input_size))
    lstm = cell == "lstm"
    if torch is not None:
        module = torch_module(torch, cell, w, step=False)
        x_t = torch.from_numpy(x)

        def run():
            state = None
            for start in range(0, steps, CHUNK):
                _, state = module(x_t[:, start:start + CHUNK], state)
            return [s[0].numpy() for s in state] if lstm else [state[0].numpy()]
    else:
        prepared = layer(cell, "numba", w)
        one_call = name.endswith("one-call")

        def run():
            if one_call:
                final = prepared(x, return_sequences=False)
                return list(final) if lstm else [final]
            state = None
            for start in range(0, steps, CHUNK):
                _, state = prepared(x[:, start:start + CHUNK], state)
            return list(state) if lstm else [state]

    expected = layer(cell, "numpy", w)(x, return_sequences=False)
    for value, want in zip(run(), expected if lstm else (expected,), strict=True):
        np.testing.assert_allclose(value, want, rtol=1e-4, atol=1e-4)
    work = _flops(cell, *size)
    benchmark.extra_info.update(impl=name, cell=cell, dtype=dtype, B=batch, T=steps,
                                I=input_size, H=hidden, flops=work, pattern="chunks")
    time_forward(benchmark, request, run, work)
