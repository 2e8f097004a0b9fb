"""The comparison report: ``python -m fastrnn bench``.

One registry of implementations (:data:`IMPLEMENTATIONS`) serves this report
and the pytest-benchmark suite in ``bench/``: fastrnn's two backends, and
PyTorch's ``nn.RNN``, a JAX ``jit(lax.scan)``, ONNX Runtime's ``RNN``
operator, OpenVINO's ``RNNSequence`` and ReservoirPy's ``Reservoir`` when
those are installed (``pip install -e ".[peers]"``; a missing one is skipped
with a note). Each implementation's factory takes the NumPy problem ``(x,
w_ih, w_hh, b_ih, b_hh)`` (x is (B, T, I), batch first) and ``leak=`` (None for
the plain update) and returns a zero-argument callable that runs one forward
pass, NumPy in and out, and returns the output (B, T, H). One-off set-up
(building a module, copying weights) happens in the factory; everything a user
pays per call happens in the callable.

Two kinds of cases: the plain Elman update with dense weights (:data:`SIZES`),
and echo-state reservoirs (:data:`RESERVOIR_CASES`): a leaky update with a
sparse ``w_hh`` (SciPy CSR) scaled to a spectral radius. An implementation
says which it runs (:class:`Impl`): ``reservoir="sparse"`` gets ``w_hh`` as
the CSR matrix, ``"dense"`` gets the same weights as a dense array (the same
states, at the dense cost), None skips the reservoir cases (PyTorch's
``nn.RNN`` has no leak).

The report times every implementation on the same seeded problem, checks each
output against fastrnn's NumPy backend first (a wrong answer is never timed),
and prints medians, each peer's time as a multiple of fastrnn's, and
fastrnn's rate as a fraction of NumPy's large square matmul measured in the
same run (the machine's practical limit for the products).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._api import forward as fastrnn_forward

# (x, w_ih, w_hh, b_ih, b_hh); w_hh is an ndarray or, for a reservoir, SciPy CSR.
Problem = tuple[np.ndarray, np.ndarray, Any, np.ndarray, np.ndarray]
Forward = Callable[[], np.ndarray]

SIZES: list[tuple[int, int, int, int]] = [  # (B, T, I, H)
    (1, 10, 4, 8),  # the textbook example
    (1, 100, 16, 32),
    (32, 100, 32, 64),
    (64, 200, 128, 128),
    (128, 100, 256, 512),
    (32, 50, 1024, 1024),
    (1, 100000, 8, 64),  # a long stream: per-step latency
    (1, 10000, 1, 1000),  # a reservoir: one large state
]
QUICK_SIZES = SIZES[:4]


@dataclass(frozen=True)
class ReservoirCase:
    """An echo-state reservoir: a leaky update, ``w_hh`` sparse with the given
    density, scaled to a spectral radius."""

    size: tuple[int, int, int, int]  # (B, T, I, H)
    density: float = 0.1
    leak: float = 0.3
    spectral_radius: float = 0.9

    @property
    def label(self) -> str:
        return f"leak {self.leak:g}, sparse {self.density:g}"


RESERVOIR_CASES: list[ReservoirCase] = [
    ReservoirCase((1, 10000, 1, 100)),
    ReservoirCase((1, 10000, 1, 1000)),
]
QUICK_RESERVOIR_CASES = RESERVOIR_CASES[:1]
DTYPES = {"float32": np.float32, "float64": np.float64}
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
BASELINE = "fastrnn-numba"
REFERENCE = "fastrnn-numpy"


@dataclass(frozen=True)
class Impl:
    """One implementation of the registry.

    ``factory(x, w_ih, w_hh, b_ih, b_hh, leak=None)`` does the one-off set-up
    and returns the callable that is timed: one forward pass, NumPy in, the
    output (B, T, H) NumPy out. ``note`` is printed under the report's table
    when the implementation takes part (what its timed call includes)."""

    factory: Callable[..., Forward]
    requires: tuple[str, ...] = ()  # modules that must be importable
    plain: bool = True  # runs the plain cases (SIZES)
    reservoir: str | None = None  # reservoir cases: w_hh "sparse" (CSR), "dense", None: skipped
    dtypes: tuple[str, ...] = ("float32", "float64")  # what it computes in
    note: str = ""


def make_problem(batch: int, steps: int, input_size: int, hidden: int, dtype,
                 seed: int = 0) -> Problem:
    """A seeded problem: standard normal x, weights scaled by 1/sqrt(fan-in)
    so pre-activations stay O(1) and tanh is not saturated."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    x = rng.standard_normal((batch, steps, input_size)).astype(dtype)
    w_ih = (rng.standard_normal((hidden, input_size)) / math.sqrt(input_size)).astype(dtype)
    w_hh = (rng.standard_normal((hidden, hidden)) / math.sqrt(hidden)).astype(dtype)
    b_ih = (0.1 * rng.standard_normal(hidden)).astype(dtype)
    b_hh = (0.1 * rng.standard_normal(hidden)).astype(dtype)
    return x, w_ih, w_hh, b_ih, b_hh


def make_reservoir_problem(case: ReservoirCase, dtype, seed: int = 0) -> tuple[Problem, float]:
    """A seeded reservoir problem and its leak: x, w_ih and the biases as in
    :func:`make_problem`; w_hh a SciPy CSR matrix, each entry non-zero with
    probability ``case.density``, standard normal scaled by
    1/sqrt(density * H), so that its spectral radius is close to 1 (the
    circular law), then by ``case.spectral_radius``."""
    import scipy.sparse

    batch, steps, input_size, hidden = case.size
    x, w_ih, _, b_ih, b_hh = make_problem(batch, steps, input_size, hidden, dtype, seed)
    rng = np.random.default_rng(seed + 1)
    mask = rng.random((hidden, hidden)) < case.density
    values = rng.standard_normal((hidden, hidden))
    scale = case.spectral_radius / math.sqrt(case.density * hidden)
    dense = np.where(mask, values * scale, 0.0).astype(dtype)
    return (x, w_ih, scipy.sparse.csr_matrix(dense), b_ih, b_hh), case.leak


def reservoir_inputs(impl: Impl, problem: Problem) -> Problem:
    """``problem`` as ``impl`` takes it: w_hh densified for a "dense" one."""
    x, w_ih, w_hh, b_ih, b_hh = problem
    if impl.reservoir == "dense":
        w_hh = w_hh.toarray()
    return x, w_ih, w_hh, b_ih, b_hh


def _fastrnn(backend: str) -> Callable[..., Forward]:
    def factory(x, w_ih, w_hh, b_ih, b_hh, leak=None) -> Forward:
        def run() -> np.ndarray:
            return fastrnn_forward(x, w_ih, w_hh, b_ih, b_hh, leak=leak, backend=backend)[0]

        return run

    return factory


def _torch_factory(x, w_ih, w_hh, b_ih, b_hh, leak=None) -> Forward:
    import torch

    if leak is not None:
        raise ValueError("torch.nn.RNN has no leak")

    hidden, input_size = w_ih.shape
    dtype = torch.float32 if x.dtype == np.float32 else torch.float64
    rnn = torch.nn.RNN(input_size, hidden, num_layers=1, nonlinearity="tanh", bias=True,
                       batch_first=True).to(dtype)
    rnn.eval()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(w_ih))  # type: ignore[operator]
        rnn.weight_hh_l0.copy_(torch.from_numpy(w_hh))  # type: ignore[operator]
        rnn.bias_ih_l0.copy_(torch.from_numpy(b_ih))  # type: ignore[operator]
        rnn.bias_hh_l0.copy_(torch.from_numpy(b_hh))  # type: ignore[operator]

    def run() -> np.ndarray:
        with torch.inference_mode():
            output, _ = rnn(torch.from_numpy(x))
        return output.numpy()

    return run


_jax_modules = None


def _jax():
    """Import JAX once, turning float64 on before any JAX array is made (JAX
    otherwise silently computes float64 inputs in float32)."""
    global _jax_modules
    if _jax_modules is None:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from jax import lax

        @jax.jit
        def rnn(x, w_ih, w_hh, bias):
            # The input product for every step at once, outside the scan.
            pre = jnp.swapaxes(x @ w_ih.T + bias, 0, 1)
            w_hh_t = w_hh.T

            def step(h, p):
                h = jnp.tanh(p + h @ w_hh_t)
                return h, h

            h0 = jnp.zeros((x.shape[0], w_hh.shape[0]), x.dtype)
            _, hs = lax.scan(step, h0, pre)
            return jnp.swapaxes(hs, 0, 1)

        @jax.jit
        def leaky_rnn(x, w_ih, w_hh, bias, leak):
            # The same, with the leaky update of echo state networks.
            pre = jnp.swapaxes(x @ w_ih.T + bias, 0, 1)
            w_hh_t = w_hh.T

            def step(h, p):
                h = (1 - leak) * h + leak * jnp.tanh(p + h @ w_hh_t)
                return h, h

            h0 = jnp.zeros((x.shape[0], w_hh.shape[0]), x.dtype)
            _, hs = lax.scan(step, h0, pre)
            return jnp.swapaxes(hs, 0, 1)

        _jax_modules = (jnp, rnn, leaky_rnn)
    return _jax_modules


def _jax_factory(x, w_ih, w_hh, b_ih, b_hh, leak=None) -> Forward:
    jnp, rnn, leaky_rnn = _jax()
    weights = (jnp.asarray(w_ih), jnp.asarray(w_hh), jnp.asarray(b_ih + b_hh))
    if weights[0].dtype != x.dtype:
        raise RuntimeError(f"jax computes in {weights[0].dtype}, not {x.dtype}: x64 is off")
    if leak is not None:
        leak_arr = jnp.asarray(np.asarray(leak, x.dtype))

        def run_leaky() -> np.ndarray:
            return np.asarray(leaky_rnn(jnp.asarray(x), *weights, leak_arr).block_until_ready())

        return run_leaky

    def run() -> np.ndarray:
        return np.asarray(rnn(jnp.asarray(x), *weights).block_until_ready())

    return run


def _reservoirpy_factory(x, w_ih, w_hh, b_ih, b_hh, leak=None) -> Forward:
    """ReservoirPy's ``Reservoir`` (0.4) with our weights. Its update is
    ``s = (1 - lr) * s + lr * tanh(W @ s + Win @ u + bias)`` (no noise), so
    ``W = w_hh`` (used as given, sparse or dense), ``Win = w_ih`` (no bias
    column) and ``bias = b_ih + b_hh``. It runs one sequence at a time, from
    the zero state (``reset()``), and computes in float64."""
    from reservoirpy.nodes import Reservoir

    if x.dtype != np.float64:
        raise ValueError(f"reservoirpy computes in float64, not {x.dtype}")
    batch, steps, _ = x.shape
    hidden = w_ih.shape[0]
    bias = np.zeros(hidden)
    for b in (b_ih, b_hh):
        if b is not None:
            bias = bias + b
    node = Reservoir(hidden, lr=1.0 if leak is None else leak, W=w_hh, Win=w_ih, bias=bias,
                     activation="tanh")
    node.initialize(x[0])

    def run() -> np.ndarray:
        output = np.empty((batch, steps, hidden))
        for b in range(batch):
            node.reset()
            output[b] = node.run(x[b])
        return output

    return run


def _onnx_rnn_model(w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray,
                    b_hh: np.ndarray, with_state: bool = False):
    """An ONNX model of one ``RNN`` node, time-major (``layout=0``): input
    ``X`` (T, B, I), output ``Y`` (T, 1, B, H), tanh, the weights as
    initializers (``W = w_ih``, ``R = w_hh``, ``B = [b_ih, b_hh]``, each with
    a leading direction axis of 1). T and B are left free. ``with_state``:
    also the input ``initial_h`` (1, B, H) and the output ``Y_h`` (1, B, H),
    the final state."""
    from onnx import TensorProto, helper, numpy_helper

    if w_ih.dtype != np.float32:
        raise ValueError(f"ONNX Runtime's RNN kernel is float32 only, not {w_ih.dtype}")
    hidden, input_size = w_ih.shape
    # The optional inputs in the operator's order: X, W, R, B, sequence_lens, initial_h.
    names = ["X", "W", "R", "B"] + (["", "initial_h"] if with_state else [])
    node = helper.make_node("RNN", names, ["Y"] + (["Y_h"] if with_state else []),
                            hidden_size=hidden, activations=["Tanh"], direction="forward",
                            layout=0)
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(w_ih[None]), "W"),
        numpy_helper.from_array(np.ascontiguousarray(w_hh[None]), "R"),
        numpy_helper.from_array(np.concatenate([b_ih, b_hh])[None], "B"),
    ]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", input_size])]
    graph_outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", hidden])]
    if with_state:
        graph_inputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT,
                                                          [1, "B", hidden]))
        graph_outputs.append(helper.make_tensor_value_info("Y_h", TensorProto.FLOAT,
                                                           [1, "B", hidden]))
    graph = helper.make_graph([node], "elman_rnn", graph_inputs, graph_outputs,
                              initializer=initializers)
    # Opset 14 is where RNN gained ``layout``; IR version 8 is read by every
    # ONNX Runtime release that has opset 17.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _onnxruntime_factory(x, w_ih, w_hh, b_ih, b_hh, leak=None) -> Forward:
    """ONNX Runtime's ``RNN`` operator (CPU execution provider, default
    threads). The session is made once; each call pays what a user of a
    batch-first model pays: ``x`` transposed to the time-major layout ORT
    requires (it refuses ``layout=1``), the run, and the output transposed
    back to (B, T, H) (a view, as torch's batch-first output is)."""
    import onnxruntime

    if leak is not None:
        raise ValueError("ONNX's RNN operator has no leak")
    model = _onnx_rnn_model(w_ih, w_hh, b_ih, b_hh)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])

    def run() -> np.ndarray:
        (y,) = session.run(None, {"X": np.ascontiguousarray(x.transpose(1, 0, 2))})
        return y[:, 0].transpose(1, 0, 2)

    return run


def _import_openvino():
    """``import openvino`` without its model-conversion tools: importing
    ``openvino.tools.ovc`` (which ``openvino/__init__`` tries, and skips on
    ImportError) sends a usage event from a forked process, which is network
    traffic in the middle of a timing run and a fork in a process where JAX's
    threads already run (JAX warns that this can deadlock). The report needs
    only the runtime; the entry is removed again so that an explicit import of
    the tools still works."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino.tools.ovc", None)  # type: ignore[arg-type]
        try:
            import openvino  # noqa: F401
        finally:
            if sys.modules.get("openvino.tools.ovc", "") is None:
                del sys.modules["openvino.tools.ovc"]
    return sys.modules["openvino"]


# OpenVINO's CPU plugin may compute a float32 model in a lower precision by
# default (OpenVINO 2026.4 on the AMD Zen 3 VM: steps off by 8e-3, values
# rounded to bfloat16's 8 bits); every peer computes in float32 here.
_OPENVINO_F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _openvino_factory(x, w_ih, w_hh, b_ih, b_hh, leak=None) -> Forward:
    """OpenVINO's ``RNNSequence`` (opset 13), batch-first natively (X (B, T,
    I), Y (B, 1, T, H)), built with the opset API rather than read from an
    ONNX graph (its ONNX front end has been reported to mis-read batch-first
    RNNs), compiled once for the CPU for this problem's shape (static shapes:
    OpenVINO's best case). Each call runs one inference request, NumPy in and
    out. float32 only: the CPU plugin's inference precision can be f32, bf16
    or f16, never f64 (a float64 model returns float64 arrays computed in
    float32)."""
    openvino = _import_openvino()
    import openvino.opset13 as ops

    if leak is not None:
        raise ValueError("OpenVINO's RNNSequence has no leak")
    if x.dtype != np.float32:
        raise ValueError(f"OpenVINO's CPU plugin computes in float32, not {x.dtype}")
    batch, steps, _ = x.shape
    hidden = w_ih.shape[0]
    inputs = ops.parameter(list(x.shape), openvino.Type.f32, name="x")
    sequence = ops.rnn_sequence(
        inputs, ops.constant(np.zeros((batch, 1, hidden), np.float32)),
        ops.constant(np.full(batch, steps, np.int32)), ops.constant(w_ih[None]),
        ops.constant(w_hh[None]), ops.constant((b_ih + b_hh)[None]), hidden, "forward",
        activations=["tanh"])
    output = ops.squeeze(sequence.output(0), ops.constant(np.array([1])))
    model = openvino.Model([output], [inputs], "elman_rnn")
    request = openvino.Core().compile_model(model, "CPU", _OPENVINO_F32).create_infer_request()

    def run() -> np.ndarray:
        return request.infer({0: x})[0]

    return run


IMPLEMENTATIONS: dict[str, Impl] = {
    "fastrnn-numba": Impl(_fastrnn("numba"), requires=("numba",), reservoir="sparse"),
    "fastrnn-numpy": Impl(_fastrnn("numpy"), reservoir="sparse"),
    "torch": Impl(_torch_factory, requires=("torch",)),  # nn.RNN: no leak
    "jax": Impl(_jax_factory, requires=("jax",), reservoir="dense"),
    # ONNX's RNN and OpenVINO's RNNSequence have no leak either.
    "onnxruntime": Impl(
        _onnxruntime_factory, requires=("onnx", "onnxruntime"), dtypes=("float32",),
        note="onnxruntime: one ONNX RNN node in a session made once; each call "
             "transposes x to the time-major layout ONNX Runtime requires (it refuses "
             "layout=1), runs the session and transposes the output back to (B, T, H); "
             "float32 only (ONNX Runtime has no float64 RNN kernel)."),
    "openvino": Impl(
        _openvino_factory, requires=("openvino",), dtypes=("float32",),
        note="openvino: opset RNNSequence (batch-first natively) compiled for the CPU "
             "once per shape with INFERENCE_PRECISION_HINT f32 (its default may be a "
             "lower precision); each call is one inference request; float32 only (the "
             "CPU plugin computes float64 models in float32)."),
    "reservoirpy": Impl(_reservoirpy_factory, requires=("reservoirpy",), plain=False,
                        reservoir="sparse", dtypes=("float64",)),
    # fastrnn given the reservoir's w_hh as a dense array: what sparsity saves.
    "fastrnn-numba-dense": Impl(_fastrnn("numba"), requires=("numba",), plain=False,
                                reservoir="dense"),
}
RESERVOIR_NOTE = (
    "Reservoir rows ({cases}): leaky update, w_hh a CSR matrix of that density "
    "scaled to spectral radius 0.9; the same weights, leak and input for every "
    "implementation, states checked against fastrnn-numpy first (float64 within 1e-10). "
    "fastrnn-numba-dense and jax get that w_hh as a dense array (jax: the leaky "
    "update in its lax.scan); torch's nn.RNN, ONNX's RNN and OpenVINO's RNNSequence have no "
    "leak (-); reservoirpy is float64 only."
)


def available(name: str, registry: dict[str, Any] | None = None) -> bool:
    """Whether every module ``name`` (of ``registry``, default
    :data:`IMPLEMENTATIONS`) needs is installed."""
    impl = (IMPLEMENTATIONS if registry is None else registry)[name]
    return all(importlib.util.find_spec(module) is not None for module in impl.requires)


# --- Call patterns: one time step at a time, a stream in chunks ---------------
#
# The grid above times one big forward per call. A per-step loop (online
# inference, control) and a stream fed in chunks call with the same weights
# again and again; there what a call costs besides its arithmetic decides.
# Their registries follow the same rules as IMPLEMENTATIONS: set-up in the
# factory, what a user pays per call in the callable, every implementation
# checked against fastrnn's NumPy backend before it is timed.

Step = Callable[[], np.ndarray]

STEP_SIZES: list[tuple[int, int, int]] = [  # (B, I, H)
    (batch, 16, hidden) for batch in (1, 32) for hidden in (8, 64, 256, 1024)]
QUICK_STEP_SIZES = [(1, 16, 8), (1, 16, 256)]
STEPS_PER_SAMPLE = 100  # steps per timing sample: a step lasts about a microsecond
CHECK_STEPS = 20  # steps run and compared with fastrnn.forward before timing

CHUNK_SIZES: list[tuple[int, int, int, int]] = [  # (B, T, I, H)
    (1, 10000, 16, 64), (1, 10000, 16, 256), (32, 10000, 16, 64)]
QUICK_CHUNK_SIZES = CHUNK_SIZES[:1]
CHUNK = 100  # time steps per call when streaming
ONE_CALL = "fastrnn-numba-one-call"  # the chunk table's reference: the whole stream at once
PATTERNS = ("forward", "step", "chunk")


@dataclass(frozen=True)
class PatternImpl:
    """One implementation of a call pattern (:data:`STEP_IMPLEMENTATIONS`,
    :data:`CHUNK_IMPLEMENTATIONS`).

    A step ``factory(x, w_ih, w_hh, b_ih, b_hh)`` (x (B, T, I)) returns a
    callable that runs ONE time step per call from the state the previous
    call left (zeros at first), the input cycling through ``x[:, t]``, and
    returns the new state (B, H), NumPy. A chunk ``factory(x, w_ih, w_hh,
    b_ih, b_hh, chunk)`` returns a callable that streams the whole of x
    through the model ``chunk`` steps per call, each call's final state
    carried into the next, and returns the final state (B, H), NumPy."""

    factory: Callable[..., Step]
    requires: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ("float32", "float64")
    note: str = ""


def _step_inputs(x: np.ndarray):
    """What a step callable feeds: ``x[:, t]`` for t = 0, 1, ..., T-1, 0, ...,
    each made contiguous (B, I) once, so that taking the next input costs
    every implementation the same and little."""
    return itertools.cycle([np.ascontiguousarray(x[:, t]) for t in range(x.shape[1])])


def _chunks(x: np.ndarray, chunk: int) -> list[np.ndarray]:
    """x (B, T, I) cut into contiguous (B, chunk, I) pieces (the last one
    shorter), each its own array as a stream's chunks arrive."""
    return [np.ascontiguousarray(x[:, start:start + chunk])
            for start in range(0, x.shape[1], chunk)]


def _fastrnn_step(backend: str) -> Callable[..., Step]:
    def factory(x, w_ih, w_hh, b_ih, b_hh) -> Step:
        from ._layer import prepare

        layer = prepare(w_ih, w_hh, b_ih, b_hh, backend=backend)
        inputs = _step_inputs(x)
        state = np.zeros((x.shape[0], w_ih.shape[0]), x.dtype)
        step = layer.step

        def run() -> np.ndarray:
            return step(next(inputs), state, out=state)  # in place: no allocation

        return run

    return factory


def _numpy_loop_step_factory(x, w_ih, w_hh, b_ih, b_hh) -> Step:
    """The loop a NumPy user writes, carefully: weights transposed and made
    contiguous once, the biases summed once, every product and the tanh
    written into buffers made once."""
    w_ih_t = np.ascontiguousarray(w_ih.T)
    w_hh_t = np.ascontiguousarray(w_hh.T)
    bias = b_ih + b_hh
    inputs = _step_inputs(x)
    state = np.zeros((x.shape[0], w_ih.shape[0]), x.dtype)
    pre = np.empty_like(state)
    recurrent = np.empty_like(state)

    def run() -> np.ndarray:
        np.matmul(next(inputs), w_ih_t, out=pre)
        np.add(pre, bias, out=pre)
        np.matmul(state, w_hh_t, out=recurrent)
        np.add(pre, recurrent, out=pre)
        return np.tanh(pre, out=state)

    return run


def _torch_weights(module, w_ih, w_hh, b_ih, b_hh, suffix: str = "") -> None:
    import torch

    with torch.no_grad():
        for name, value in (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih),
                            ("bias_hh", b_hh)):
            getattr(module, name + suffix).copy_(torch.from_numpy(value))


def _torch_step_factory(x, w_ih, w_hh, b_ih, b_hh) -> Step:
    import torch

    hidden, input_size = w_ih.shape
    dtype = torch.float32 if x.dtype == np.float32 else torch.float64
    cell = torch.nn.RNNCell(input_size, hidden, bias=True, nonlinearity="tanh").to(dtype)
    cell.eval()
    _torch_weights(cell, w_ih, w_hh, b_ih, b_hh)
    inputs = _step_inputs(x)
    state = np.zeros((x.shape[0], hidden), x.dtype)

    def run() -> np.ndarray:
        nonlocal state
        with torch.inference_mode():
            new = cell(torch.from_numpy(next(inputs)), torch.from_numpy(state))
        state = new.numpy()
        return state

    return run


_jax_pattern_functions = None


def _jax_patterns():
    """The jitted step and chunk functions (after :func:`_jax`, which turns
    float64 on)."""
    global _jax_pattern_functions
    if _jax_pattern_functions is None:
        jnp, _, _ = _jax()
        import jax
        from jax import lax

        @jax.jit
        def step(x, h, w_ih, w_hh, bias):
            return jnp.tanh(x @ w_ih.T + bias + h @ w_hh.T)

        @jax.jit
        def chunk(x, h0, w_ih, w_hh, bias):
            # As _jax's rnn, from a given state, returning the final state too.
            pre = jnp.swapaxes(x @ w_ih.T + bias, 0, 1)
            w_hh_t = w_hh.T

            def one(h, p):
                h = jnp.tanh(p + h @ w_hh_t)
                return h, h

            h_n, hs = lax.scan(one, h0, pre)
            return jnp.swapaxes(hs, 0, 1), h_n

        _jax_pattern_functions = (jnp, step, chunk)
    return _jax_pattern_functions


def _jax_weights(jnp, x, w_ih, w_hh, b_ih, b_hh) -> tuple[Any, ...]:
    weights = (jnp.asarray(w_ih), jnp.asarray(w_hh), jnp.asarray(b_ih + b_hh))
    if weights[0].dtype != x.dtype:
        raise RuntimeError(f"jax computes in {weights[0].dtype}, not {x.dtype}: x64 is off")
    return weights


def _jax_step_factory(x, w_ih, w_hh, b_ih, b_hh) -> Step:
    jnp, jax_step, _ = _jax_patterns()
    weights = _jax_weights(jnp, x, w_ih, w_hh, b_ih, b_hh)
    inputs = _step_inputs(x)
    state = np.zeros((x.shape[0], w_ih.shape[0]), x.dtype)

    def run() -> np.ndarray:
        nonlocal state
        new = jax_step(jnp.asarray(next(inputs)), jnp.asarray(state), *weights)
        state = np.asarray(new.block_until_ready())
        return state

    return run


def _onnxruntime_step_factory(x, w_ih, w_hh, b_ih, b_hh) -> Step:
    """ONNX Runtime's ``RNN`` node run on sequences of one step, the state
    passed in as ``initial_h`` and read back from ``Y_h``."""
    import onnxruntime

    model = _onnx_rnn_model(w_ih, w_hh, b_ih, b_hh, with_state=True)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    inputs = _step_inputs(x)
    state = np.zeros((x.shape[0], w_ih.shape[0]), x.dtype)

    def run() -> np.ndarray:
        nonlocal state
        (h_n,) = session.run(["Y_h"], {"X": next(inputs)[None], "initial_h": state[None]})
        state = h_n[0]
        return state

    return run


def _openvino_step_factory(x, w_ih, w_hh, b_ih, b_hh) -> Step:
    """OpenVINO's ``RNNSequence`` compiled for sequences of one step, the
    initial state an input, the final state its output."""
    openvino = _import_openvino()
    import openvino.opset13 as ops

    if x.dtype != np.float32:
        raise ValueError(f"OpenVINO's CPU plugin computes in float32, not {x.dtype}")
    batch, _, input_size = x.shape
    hidden = w_ih.shape[0]
    inputs_node = ops.parameter([batch, 1, input_size], openvino.Type.f32, name="x")
    state_node = ops.parameter([batch, 1, hidden], openvino.Type.f32, name="h")
    sequence = ops.rnn_sequence(
        inputs_node, state_node, ops.constant(np.ones(batch, np.int32)),
        ops.constant(w_ih[None]), ops.constant(w_hh[None]), ops.constant((b_ih + b_hh)[None]),
        hidden, "forward", activations=["tanh"])
    model = openvino.Model([sequence.output(1)], [inputs_node, state_node], "elman_rnn_step")
    request = openvino.Core().compile_model(model, "CPU", _OPENVINO_F32).create_infer_request()
    inputs = _step_inputs(x)
    state = np.zeros((batch, hidden), np.float32)

    def run() -> np.ndarray:
        nonlocal state
        state = request.infer({0: next(inputs)[:, None], 1: state[:, None]})[0][:, 0]
        return state

    return run


def _fastrnn_chunks(backend: str) -> Callable[..., Step]:
    def factory(x, w_ih, w_hh, b_ih, b_hh, chunk) -> Step:
        from ._layer import prepare

        layer = prepare(w_ih, w_hh, b_ih, b_hh, backend=backend)
        pieces = _chunks(x, chunk)

        def run() -> np.ndarray:
            state: Any = None  # the first chunk starts from zeros
            for piece in pieces:
                _, state = layer(piece, state)
            return state

        return run

    return factory


def _fastrnn_one_call_factory(x, w_ih, w_hh, b_ih, b_hh, chunk) -> Step:
    from ._layer import prepare

    layer = prepare(w_ih, w_hh, b_ih, b_hh)

    def run() -> np.ndarray:
        return layer(x)[1]

    return run


def _torch_chunks_factory(x, w_ih, w_hh, b_ih, b_hh, chunk) -> Step:
    import torch

    hidden, input_size = w_ih.shape
    dtype = torch.float32 if x.dtype == np.float32 else torch.float64
    rnn = torch.nn.RNN(input_size, hidden, num_layers=1, nonlinearity="tanh", bias=True,
                       batch_first=True).to(dtype)
    rnn.eval()
    _torch_weights(rnn, w_ih, w_hh, b_ih, b_hh, suffix="_l0")
    pieces = _chunks(x, chunk)

    def run() -> np.ndarray:
        state: Any = None  # the first chunk starts from zeros
        with torch.inference_mode():
            for piece in pieces:
                output, state = rnn(torch.from_numpy(piece), state)
                output.numpy()  # each chunk's output, as NumPy, is what the stream is for
        return state[0].numpy()

    return run


def _jax_chunks_factory(x, w_ih, w_hh, b_ih, b_hh, chunk) -> Step:
    jnp, _, jax_chunk = _jax_patterns()
    weights = _jax_weights(jnp, x, w_ih, w_hh, b_ih, b_hh)
    pieces = _chunks(x, chunk)
    h0 = jnp.zeros((x.shape[0], w_ih.shape[0]), x.dtype)

    def run() -> np.ndarray:
        state = h0
        for piece in pieces:
            output, state = jax_chunk(jnp.asarray(piece), state, *weights)
            np.asarray(output)  # each chunk's output to NumPy (waits for it)
        return np.asarray(state)

    return run


STEP_IMPLEMENTATIONS: dict[str, PatternImpl] = {
    "fastrnn-numba": PatternImpl(_fastrnn_step("numba"), requires=("numba",)),
    "fastrnn-numpy": PatternImpl(_fastrnn_step("numpy")),
    "numpy-loop": PatternImpl(
        _numpy_loop_step_factory,
        note="numpy-loop: the per-step loop a careful NumPy user writes, tanh(x_t @ w_ih.T + "
             "b + h @ w_hh.T) with the weights transposed once and np.matmul/np.tanh "
             "writing into buffers made once."),
    "torch": PatternImpl(_torch_step_factory, requires=("torch",)),
    "jax": PatternImpl(_jax_step_factory, requires=("jax",)),
    "onnxruntime": PatternImpl(_onnxruntime_step_factory, requires=("onnx", "onnxruntime"),
                               dtypes=("float32",)),
    "openvino": PatternImpl(_openvino_step_factory, requires=("openvino",),
                            dtypes=("float32",)),
}
STEP_NOTE = (
    "Step rows: the time of one time step with the state carried, as a per-step loop pays "
    f"it (median of samples of {STEPS_PER_SAMPLE} consecutive steps, divided by "
    f"{STEPS_PER_SAMPLE}); each implementation's state after {CHECK_STEPS} steps was first "
    "checked against fastrnn.forward over those steps. fastrnn: layer.step(x_t, h, out=h) on "
    "a layer prepared once; torch: nn.RNNCell, each step under torch.inference_mode(), "
    "torch.from_numpy in and .numpy() out; jax: a jax.jit step, the input and state "
    "converted to device arrays and the result back to NumPy each step; onnxruntime and "
    "openvino: their RNN on a one-step sequence, the state passed in and read back."
)
CHUNK_IMPLEMENTATIONS: dict[str, PatternImpl] = {
    "fastrnn-numba": PatternImpl(_fastrnn_chunks("numba"), requires=("numba",)),
    ONE_CALL: PatternImpl(_fastrnn_one_call_factory, requires=("numba",)),
    "fastrnn-numpy": PatternImpl(_fastrnn_chunks("numpy")),
    "torch": PatternImpl(_torch_chunks_factory, requires=("torch",)),
    "jax": PatternImpl(_jax_chunks_factory, requires=("jax",)),
}
CHUNK_NOTE = (
    "Chunk rows: the time (ms) to stream the whole sequence through the model in chunks of "
    f"{CHUNK} steps, each chunk its own (B, {CHUNK}, I) array and each call's final state "
    f"the next call's initial one; {ONE_CALL} runs the whole sequence in one call of the "
    "same prepared layer. fastrnn: layer(chunk, h) on a layer prepared once; torch: nn.RNN "
    "per chunk under one torch.inference_mode(), its h carried; jax: a jax.jit lax.scan per "
    "chunk, its state carried as a device array, each chunk's output converted to NumPy. "
    "Final states checked against fastrnn.forward over the whole sequence first."
)
REGISTRIES: dict[str, dict[str, Any]] = {
    "forward": IMPLEMENTATIONS, "step": STEP_IMPLEMENTATIONS, "chunk": CHUNK_IMPLEMENTATIONS}


def known_names() -> list[str]:
    """Every implementation name of every registry, the forward grid's first."""
    return list(dict.fromkeys(name for registry in REGISTRIES.values() for name in registry))


def step_reference(problem: Problem, steps: int) -> np.ndarray:
    """The state (B, H) after the first ``steps`` steps of ``problem``:
    :func:`fastrnn.forward` on the NumPy backend."""
    x, w_ih, w_hh, b_ih, b_hh = problem
    return fastrnn_forward(x[:, :steps], w_ih, w_hh, b_ih, b_hh, backend="numpy")[1]


def checked_step(name: str, problem: Problem, steps: int = CHECK_STEPS) -> tuple[Step, float]:
    """``name``'s step callable for ``problem``, run ``steps`` steps (its
    warm-up) and its state then checked against :func:`step_reference`
    (AssertionError when they disagree). Returns the callable, its state
    carried on, and the largest absolute difference."""
    x = problem[0]
    if x.shape[1] < steps:
        raise ValueError(f"steps must be at most x's {x.shape[1]} time steps, got {steps}")
    run = STEP_IMPLEMENTATIONS[name].factory(*problem)
    for _ in range(steps):
        state = run()
    expected = step_reference(problem, steps)
    tol = TOLERANCE[x.dtype.name]
    np.testing.assert_allclose(state, expected, rtol=tol, atol=tol,
                               err_msg=f"{name}'s steps disagree with fastrnn.forward")
    return run, float(np.max(np.abs(state - expected), initial=0.0))


def checked_chunks(name: str, problem: Problem, chunk: int = CHUNK,
                   expected: np.ndarray | None = None) -> tuple[Step, float]:
    """``name``'s chunk callable for ``problem``, run once (its warm-up) and
    its final state checked against :func:`fastrnn.forward` over the whole
    sequence (``expected``, computed when None). Returns the callable and the
    largest absolute difference."""
    if expected is None:
        expected = step_reference(problem, problem[0].shape[1])
    run = CHUNK_IMPLEMENTATIONS[name].factory(*problem, chunk)
    state = run()
    tol = TOLERANCE[problem[0].dtype.name]
    np.testing.assert_allclose(state, expected, rtol=tol, atol=tol,
                               err_msg=f"{name}'s chunks disagree with fastrnn.forward")
    return run, float(np.max(np.abs(state - expected), initial=0.0))


def step_sample(run: Step, steps: int = STEPS_PER_SAMPLE) -> Forward:
    """A timing sample: ``steps`` consecutive calls of a step callable, so
    that the timer's own cost does not weigh on microsecond steps."""

    def sample() -> np.ndarray:
        for _ in range(steps):
            state = run()
        return state

    return sample


def flops(size: tuple[int, int, int, int], recurrent_nnz: int | None = None) -> int:
    """2·B·T·H·(I+H); with ``recurrent_nnz``, the work of a sparse w_hh:
    2·B·T·(H·I + nnz)."""
    batch, steps, input_size, hidden = size
    if recurrent_nnz is None:
        recurrent_nnz = hidden * hidden
    return 2 * batch * steps * (hidden * input_size + recurrent_nnz)


def time_call(run: Forward, budget: float, min_calls: int = 3) -> tuple[float, float, int]:
    """(median, min, calls) of ``run`` timed for about ``budget`` seconds, at
    least ``min_calls`` calls; the caller has already warmed it up."""
    times: list[float] = []
    total = 0.0
    while (total < budget or len(times) < min_calls) and len(times) < 100_000:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        total += elapsed
    return float(np.median(times)), float(min(times)), len(times)


def matmul_rate(dtype, sizes=(1024, 2048), budget: float = 0.5) -> float:
    """NumPy's best large square matmul rate here, in FLOP/s."""
    best = 0.0
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        out = np.empty((n, n), dtype)
        np.matmul(a, b, out=out)

        def product(a: np.ndarray = a, b: np.ndarray = b, out: np.ndarray = out) -> np.ndarray:
            return np.matmul(a, b, out=out)

        median, _, _ = time_call(product, budget)
        best = max(best, 2 * n**3 / median)
    return best


# --- Telling a quiet run from a busy one --------------------------------------

ROUNDS = 5  # interleaved rounds per case (--rounds)
# A run is flagged busy (its ratios withheld) when any of these is exceeded:
RATE_CHANGE_LIMIT = 0.15  # the matmul rate at the end differs this much from the start
SPREAD_LIMIT = 0.20  # a figure whose round medians span this fraction of its median...
SPREAD_SHARE_LIMIT = 0.10  # ...in more than this share of the figures
OTHERS_CPU_LIMIT = 0.10  # other processes used this share of the machine's CPU


def spread(values: list[float]) -> float:
    """(max - min) / median of ``values`` (the medians of one figure's
    rounds): 0 for a figure that every round measured alike."""
    median = float(np.median(values))
    return (max(values) - min(values)) / median if median > 0 else 0.0


def noise_reasons(rates_start: dict[str, float], rates_end: dict[str, float],
                  spreads: list[float], others_cpu: float | None) -> list[str]:
    """Why a run's figures cannot be trusted, one sentence per reason; an
    empty list for a quiet run.

    ``rates_start``/``rates_end``: NumPy's matmul rate per dtype measured
    before and after the run (a change means the machine's load changed
    while it ran); ``spreads``: :func:`spread` of every figure over its
    rounds; ``others_cpu``: the share of the machine's CPU that other
    processes used during the run (None where unknown)."""
    reasons = []
    for dtype, start in rates_start.items():
        end = rates_end.get(dtype)
        if end is not None and start > 0 and abs(end - start) / start > RATE_CHANGE_LIMIT:
            reasons.append(f"the {dtype} matmul rate went from {start / 1e9:.0f} to "
                           f"{end / 1e9:.0f} GFLOP/s during the run (more than "
                           f"{RATE_CHANGE_LIMIT:.0%} apart)")
    if spreads:
        wide = sum(value > SPREAD_LIMIT for value in spreads)
        if wide > SPREAD_SHARE_LIMIT * len(spreads):
            reasons.append(f"{wide} of {len(spreads)} figures varied by more than "
                           f"{SPREAD_LIMIT:.0%} between rounds")
    if others_cpu is not None and others_cpu > OTHERS_CPU_LIMIT:
        reasons.append(f"other processes used {others_cpu:.0%} of the machine's CPU "
                       f"(more than {OTHERS_CPU_LIMIT:.0%})")
    return reasons


def _proc_ticks(path: str) -> int | None:
    """utime + stime + cutime + cstime of /proc/PID/stat, None if unreadable."""
    try:
        with open(path, encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(v) for v in fields[11:15])


def cpu_ticks(exclude: tuple[int, ...] = ()) -> tuple[int, int] | None:
    """(busy clock ticks of the whole machine, ticks of this process, its
    waited-for children and the processes ``exclude``), from /proc; None
    where /proc is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    own = _proc_ticks("/proc/self/stat")
    if own is None:
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice: busy is
    # all but idle and iowait (guest time is already counted in user).
    busy = sum(fields) - fields[3] - fields[4] - sum(fields[8:10])
    return busy, own + sum(_proc_ticks(f"/proc/{pid}/stat") or 0 for pid in exclude)


def others_cpu_share(start: tuple[int, int] | None, end: tuple[int, int] | None,
                     seconds: float) -> float | None:
    """The share (0..1) of the machine's CPU used between two :func:`cpu_ticks`
    by processes other than ours."""
    if start is None or end is None or seconds <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others / os.sysconf("SC_CLK_TCK") / (seconds * (os.cpu_count() or 1)))


# --- Busy-machine mode: a bounded background load -----------------------------

# One busy-looping interpreter; it stops itself after its time limit even if
# the report that started it is killed before it can stop it.
_LOAD_SCRIPT = ("import time\n"
                "end = time.monotonic() + {seconds!r}\n"
                "while time.monotonic() < end:\n"
                "    pass\n")


def start_load(processes: int, seconds: float) -> list[subprocess.Popen]:
    """Start ``processes`` busy-looping Python processes, each of which exits
    by itself after ``seconds``. Stop them with :func:`stop_load`."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive integer, got {processes!r}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    started: list[subprocess.Popen] = []
    try:
        for _ in range(processes):
            started.append(subprocess.Popen(
                [sys.executable, "-c", _LOAD_SCRIPT.format(seconds=float(seconds))],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
    except BaseException:
        stop_load(started)
        raise
    return started


def stop_load(processes: list[subprocess.Popen]) -> None:
    """Kill each load process by its PID and reap it."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()


@contextlib.contextmanager
def background_load(processes: int, seconds: float):
    """``with background_load(1, 600) as load:``: the load runs for the body
    and is killed on the way out, whether the body ends, raises or is
    interrupted (Ctrl-C)."""
    started = start_load(processes, seconds)
    try:
        yield started
    finally:
        stop_load(started)


# --- Compiling for another CPU: --cpu ----------------------------------------


@dataclass(frozen=True)
class CpuTarget:
    """What the peers' libraries are held to when fastrnn compiles for a
    Numba CPU name: OpenBLAS's kernel set (``OPENBLAS_CORETYPE``: NumPy,
    SciPy, JAX's NumPy side), MKL's instruction set (``MKL_ENABLE_INSTRUCTIONS``:
    PyTorch's x86 wheels) and oneDNN's (``ONEDNN_MAX_CPU_ISA``: PyTorch,
    OpenVINO), and XLA's (``XLA_FLAGS=--xla_cpu_max_isa``: JAX's own
    compiled code; JAX 0.10.2's dots run YNNPACK's kernels, which choose
    this machine's instruction set whatever it says: ``perf`` showed
    ``ynn::dot_fp32_5x64x1_1x16x1_avx512`` with ``--xla_cpu_max_isa=AVX2``),
    each the closest to the Numba target's instruction set."""

    openblas: str
    mkl: str
    onednn: str
    xla: str
    isa: str  # for the help text and the report's header


CPU_TARGETS: dict[str, CpuTarget] = {
    "haswell": CpuTarget("Haswell", "AVX2", "AVX2", "AVX2", "AVX2 + FMA"),
    "x86-64-v3": CpuTarget("Haswell", "AVX2", "AVX2", "AVX2", "AVX2 + FMA"),
    "skylake-avx512": CpuTarget("SkylakeX", "AVX512", "AVX512_CORE", "AVX512", "AVX-512"),
    "x86-64-v4": CpuTarget("SkylakeX", "AVX512", "AVX512_CORE", "AVX512", "AVX-512"),
    "nehalem": CpuTarget("Nehalem", "SSE4_2", "SSE41", "SSE4_2", "SSE4.2, no AVX, no FMA"),
    "x86-64-v2": CpuTarget("Nehalem", "SSE4_2", "SSE41", "SSE4_2", "SSE4.2, no AVX, no FMA"),
}


def cpu_environment(name: str, cache_dir: str) -> dict[str, str]:
    """The environment variables that make a fresh process compile fastrnn for
    the CPU ``name`` (:data:`CPU_TARGETS`) and hold the peers' BLAS to the
    matching kernels. ``NUMBA_CPU_FEATURES`` is set empty: with
    ``NUMBA_CPU_NAME`` alone Numba keeps this machine's features (AVX-512
    here); ``cache_dir`` must be a fresh folder (kernels cached for this
    CPU would otherwise be loaded). ``XLA_FLAGS`` keeps the flags this
    process was given, with ``--xla_cpu_max_isa`` after them."""
    target = CPU_TARGETS.get(name)
    if target is None:
        raise ValueError(f"cpu must be one of {', '.join(CPU_TARGETS)}; got {name!r}")
    xla = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_max_isa={target.xla}".strip()
    return {"NUMBA_CPU_NAME": name, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": cache_dir,
            "OPENBLAS_CORETYPE": target.openblas, "MKL_ENABLE_INSTRUCTIONS": target.mkl,
            "ONEDNN_MAX_CPU_ISA": target.onednn, "XLA_FLAGS": xla}


def in_cpu_target(name: str) -> bool:
    """Whether this process already runs with :func:`cpu_environment` of ``name``."""
    return (os.environ.get("NUMBA_CPU_NAME") == name
            and os.environ.get("NUMBA_CPU_FEATURES") == ""
            and os.environ.get("OPENBLAS_CORETYPE") == CPU_TARGETS[name].openblas)


def run_for_cpu(name: str, command: list[str], extra_env: dict[str, str] | None = None) -> int:
    """Run ``command`` with :func:`cpu_environment` of ``name`` and a fresh
    temporary Numba cache (removed afterwards); return its exit status."""
    cache_dir = tempfile.mkdtemp(prefix=f"fastrnn-numba-{name}-")
    try:
        env = dict(os.environ, **(extra_env or {}), **cpu_environment(name, cache_dir))
        return subprocess.call(command, env=env)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


# --- The report ---------------------------------------------------------------


class _Progress:
    """tqdm when installed, otherwise a one-line counter on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, unit="step", file=sys.stderr, leave=False)

    def step(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(label)
            self.bar.update()
        else:
            print(f"\r[{self.done}/{self.total}] {label:<50}", end="", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr)


# Before each implementation's turn the bench waits until the threads of
# this process other than the timing one have used at most QUIET_CPU_SHARE
# of a core for QUIET_SECONDS (at most QUIESCE_MAX_SECONDS): the thread
# pools of the one before keep spinning after its last call and take the
# second core from the next one. Measured on the 2-vCPU Zen 4 VM, float32
# B = 1, H = 1024, a layer's steps on its crew (two threads) right after
# 0.2 s of another implementation's steps: 500-600 us a step for the first
# 10 ms after OpenVINO, and for more than 25 ms after ONNX Runtime or the
# NumPy loop (OpenBLAS's threads spin about 0.1 s), against 29-37 us after
# torch or JAX, or alone.
QUIET_SECONDS = 0.02
QUIET_CPU_SHARE = 0.05
QUIESCE_MAX_SECONDS = 0.5


def _other_threads_cpu_ns() -> int | None:
    """CPU time (ns) of this process's threads other than the calling one,
    from /proc/self/task/*/schedstat; None where it is missing."""
    me = str(threading.get_native_id())
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    total = 0
    for task in tasks:
        if task == me:
            continue
        try:
            with open(f"/proc/self/task/{task}/schedstat", encoding="ascii") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # (a thread that ended meanwhile)
    return total


def quiesce(quiet: float = QUIET_SECONDS, most: float = QUIESCE_MAX_SECONDS) -> float:
    """Wait until this process's other threads have been (nearly) idle for
    ``quiet`` seconds, or ``most`` seconds have passed; returns the seconds
    waited. Without /proc, waits ``most``."""
    start = time.perf_counter()
    before = _other_threads_cpu_ns()
    if before is None:
        time.sleep(most)
        return most
    while True:
        time.sleep(quiet)
        now = _other_threads_cpu_ns() or 0
        if now - before <= QUIET_CPU_SHARE * quiet * 1e9:
            return time.perf_counter() - start
        if time.perf_counter() - start >= most:
            return time.perf_counter() - start
        before = now


def interleaved_rounds(runs: dict[str, Forward], budget: float, rounds: int,
                       settle: Callable[[], Any] | None = quiesce,
                       ) -> dict[str, tuple[list[float], float, int]]:
    """Time every callable of ``runs`` (already warmed up) in ``rounds``
    rounds: in each, every implementation in turn for ``budget / rounds``
    seconds (at least one call), the order rotated from round to round, so
    that a burst of background load slows all of them alike instead of one,
    each turn after ``settle()`` (:func:`quiesce`: the previous one's
    threads stopped). Returns, per name, (the median of each round, the
    fastest call, calls)."""
    names = list(runs)
    if not names:  # e.g. --only left no implementation for this case's dtype
        return {}
    share = budget / rounds
    medians: dict[str, list[float]] = {name: [] for name in names}
    fastest = dict.fromkeys(names, math.inf)
    calls = dict.fromkeys(names, 0)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            if settle is not None:
                settle()
            median, low, count = time_call(runs[name], share, min_calls=1)
            medians[name].append(median)
            fastest[name] = min(fastest[name], low)
            calls[name] += count
    return {name: (medians[name], fastest[name], calls[name]) for name in names}


def _timed_case(results: list[dict], progress: _Progress, dtype_name: str,
                case: dict, problem: Problem, names: list[str], budget: float,
                rounds: int, leak: float | None = None) -> None:
    """Check every implementation of ``names`` on one problem, then time them
    in interleaved rounds, appending a result per implementation."""
    expected = IMPLEMENTATIONS[REFERENCE].factory(*problem, leak=leak)()
    runs: dict[str, Forward] = {}
    max_abs_diff: dict[str, float] = {}
    for name in names:
        impl = IMPLEMENTATIONS[name]
        progress.step(f"{dtype_name} {case['size']} {case['kind']} {name}")
        inputs = problem if leak is None else reservoir_inputs(impl, problem)
        run = impl.factory(*inputs, leak=leak)
        output = run()  # warm-up: compilation and tracing are not timed
        np.testing.assert_allclose(output, expected, rtol=TOLERANCE[dtype_name],
                                   atol=TOLERANCE[dtype_name],
                                   err_msg=f"{name} disagrees with {REFERENCE}")
        max_abs_diff[name] = float(np.max(np.abs(output - expected), initial=0.0))
        runs[name] = run
        del output
    progress.step(f"{dtype_name} {case['size']} {case['kind']}: {rounds} rounds")
    for name, (medians, fastest, calls) in interleaved_rounds(runs, budget, rounds).items():
        results.append({"dtype": dtype_name, **case, "impl": name,
                        "median_s": float(np.median(medians)), "min_s": fastest,
                        "low_s": min(medians), "high_s": max(medians),
                        "spread": spread(medians), "round_medians_s": medians,
                        "calls": calls, "max_abs_diff": max_abs_diff[name]})


def _time_and_record(results: list[dict], progress: _Progress, dtype_name: str, case: dict,
                     runs: dict[str, Forward], max_abs_diff: dict[str, float], budget: float,
                     rounds: int, per_call: int = 1) -> None:
    """Time ``runs`` (checked and warmed up) in interleaved rounds and append
    a result per implementation; each timed call does ``per_call`` units of
    the case (steps of a step sample) and the times are given per unit."""
    progress.step(f"{dtype_name} {case['size']} {case['kind']}: {rounds} rounds")
    for name, (medians, fastest, calls) in interleaved_rounds(runs, budget, rounds).items():
        medians = [m / per_call for m in medians]
        results.append({"dtype": dtype_name, **case, "impl": name,
                        "median_s": float(np.median(medians)), "min_s": fastest / per_call,
                        "low_s": min(medians), "high_s": max(medians),
                        "spread": spread(medians), "round_medians_s": medians,
                        "calls": calls * per_call, "max_abs_diff": max_abs_diff[name]})


def _timed_step_case(results: list[dict], progress: _Progress, dtype_name: str,
                     size: tuple[int, int, int], names: list[str], budget: float,
                     rounds: int) -> None:
    """One step case: every implementation checked (:func:`checked_step`),
    then timed per step in samples of :data:`STEPS_PER_SAMPLE` steps."""
    batch, input_size, hidden = size
    problem = make_problem(batch, STEPS_PER_SAMPLE, input_size, hidden, DTYPES[dtype_name])
    case = {"kind": "step", "size": list(size), "steps_per_sample": STEPS_PER_SAMPLE}
    runs: dict[str, Forward] = {}
    max_abs_diff: dict[str, float] = {}
    for name in names:
        progress.step(f"{dtype_name} {list(size)} step {name}")
        run, max_abs_diff[name] = checked_step(name, problem)
        runs[name] = step_sample(run)
    _time_and_record(results, progress, dtype_name, case, runs, max_abs_diff, budget, rounds,
                     per_call=STEPS_PER_SAMPLE)


def _timed_chunk_case(results: list[dict], progress: _Progress, dtype_name: str,
                      size: tuple[int, int, int, int], names: list[str], budget: float,
                      rounds: int) -> None:
    """One chunk case: every implementation checked (:func:`checked_chunks`),
    then timed per whole stream."""
    problem = make_problem(*size, DTYPES[dtype_name])
    case = {"kind": "chunk", "size": list(size), "chunk": CHUNK, "flops": flops(size)}
    expected = step_reference(problem, size[1])
    runs: dict[str, Forward] = {}
    max_abs_diff: dict[str, float] = {}
    for name in names:
        progress.step(f"{dtype_name} {list(size)} chunk {name}")
        runs[name], max_abs_diff[name] = checked_chunks(name, problem, CHUNK, expected)
    _time_and_record(results, progress, dtype_name, case, runs, max_abs_diff, budget, rounds)


def run_report(sizes: list[tuple[int, int, int, int]], dtypes: list[str], names: list[str],
               budget: float, matmul_sizes: tuple[int, ...],
               reservoir_cases: list[ReservoirCase] | None = None, rounds: int = ROUNDS,
               load_pids: tuple[int, ...] = (),
               step_sizes: list[tuple[int, int, int]] | None = None,
               chunk_sizes: list[tuple[int, int, int, int]] | None = None,
               step_names: list[str] | None = None,
               chunk_names: list[str] | None = None) -> dict:
    """Time every (dtype, case, implementation); return the results as a dict.

    Each implementation runs the cases it supports (:class:`Impl`): the plain
    ``sizes``, then the ``reservoir_cases``; then the call patterns: the
    ``step_sizes`` (B, I, H) with ``step_names`` of :data:`STEP_IMPLEMENTATIONS`
    and the ``chunk_sizes`` (B, T, I, H) with ``chunk_names`` of
    :data:`CHUNK_IMPLEMENTATIONS` (default: every one installed). NumPy's matmul rate is measured
    for every dtype before and after, and the CPU that other processes used
    meanwhile (``load_pids``, the busy mode's own load, not counted): with
    the figures' spread over rounds, :func:`noise_reasons` decides whether
    the run was quiet."""
    reservoir_cases = reservoir_cases or []
    step_sizes = step_sizes or []
    chunk_sizes = chunk_sizes or []
    if step_names is None:
        step_names = [n for n in STEP_IMPLEMENTATIONS if available(n, STEP_IMPLEMENTATIONS)]
    if chunk_names is None:
        chunk_names = [n for n in CHUNK_IMPLEMENTATIONS if available(n, CHUNK_IMPLEMENTATIONS)]
    results: list[dict] = []

    def pattern_names(registry: dict[str, PatternImpl], chosen: list[str],
                      dtype_name: str) -> list[str]:
        return [n for n in chosen if dtype_name in registry[n].dtypes]

    def supports(name: str, dtype_name: str, reservoir: bool) -> bool:
        impl = IMPLEMENTATIONS[name]
        return dtype_name in impl.dtypes and (impl.reservoir is not None if reservoir
                                              else impl.plain)

    total = 2 * len(dtypes) + sum(
        (1 + sum(supports(n, d, False) for n in names)) * len(sizes)
        + (1 + sum(supports(n, d, True) for n in names)) * len(reservoir_cases)
        + (1 + len(pattern_names(STEP_IMPLEMENTATIONS, step_names, d))) * len(step_sizes)
        + (1 + len(pattern_names(CHUNK_IMPLEMENTATIONS, chunk_names, d))) * len(chunk_sizes)
        for d in dtypes)
    progress = _Progress(total)
    ticks_start, wall_start = cpu_ticks(load_pids), time.perf_counter()
    rates_start = {}
    for dtype_name in dtypes:
        progress.step(f"{dtype_name} matmul rate")
        rates_start[dtype_name] = matmul_rate(DTYPES[dtype_name], matmul_sizes)
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        plain = [n for n in names if supports(n, dtype_name, False)]
        for size in sizes:
            problem = make_problem(*size, dtype)
            case = {"kind": "dense", "size": list(size), "flops": flops(size)}
            _timed_case(results, progress, dtype_name, case, problem, plain, budget, rounds)
        reservoir = [n for n in names if supports(n, dtype_name, True)]
        for rcase in reservoir_cases:
            problem, leak = make_reservoir_problem(rcase, dtype)
            case = {"kind": "reservoir", "size": list(rcase.size), "label": rcase.label,
                    "density": rcase.density, "leak": leak,
                    "flops": flops(rcase.size, problem[2].nnz)}
            _timed_case(results, progress, dtype_name, case, problem, reservoir, budget,
                        rounds, leak)
        stepping = pattern_names(STEP_IMPLEMENTATIONS, step_names, dtype_name)
        for step_size in step_sizes:
            _timed_step_case(results, progress, dtype_name, step_size, stepping, budget, rounds)
        chunking = pattern_names(CHUNK_IMPLEMENTATIONS, chunk_names, dtype_name)
        for chunk_size in chunk_sizes:
            _timed_chunk_case(results, progress, dtype_name, chunk_size, chunking, budget,
                              rounds)
    rates_end = {}
    for dtype_name in dtypes:
        progress.step(f"{dtype_name} matmul rate, again")
        rates_end[dtype_name] = matmul_rate(DTYPES[dtype_name], matmul_sizes)
    others = others_cpu_share(ticks_start, cpu_ticks(load_pids),
                              time.perf_counter() - wall_start)
    progress.close()
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "matmul_flops_per_s": rates_start,
        "matmul_flops_per_s_end": rates_end,
        "rounds": rounds,
        "others_cpu": others,
        "noise": noise_reasons(rates_start, rates_end, [r["spread"] for r in results], others),
        "results": results,
    }


def _case_key(result: dict) -> tuple[str, tuple, str]:
    return result["dtype"], tuple(result["size"]), result.get("label", "")


def _case_label(size, label: str = "", sep: str = " ") -> str:
    return ", ".join(map(str, size)) + (f"{sep}({label})" if label else "")


FORWARD_KINDS = ("dense", "reservoir")  # the grid's kinds; "step" and "chunk" have their tables


def format_pattern_table(results: list[dict], kind: str, noise: list[str]) -> list[str]:
    """The Markdown lines of the ``kind`` ("step" or "chunk") results: per
    implementation the median (us per step; ms per whole stream) and its
    spread; for a quiet run only, each peer as a multiple of fastrnn's time
    and, for chunks, fastrnn's chunked time over its one-call time. Then the
    notes. No lines when there are no such results."""
    rows = [r for r in results if r.get("kind") == kind]
    if not rows:
        return []
    names = list(dict.fromkeys(r["impl"] for r in rows))
    peers = [n for n in names if n not in (BASELINE, ONE_CALL)]
    registry = STEP_IMPLEMENTATIONS if kind == "step" else CHUNK_IMPLEMENTATIONS
    unit, scale = ("us/step", 1e6) if kind == "step" else ("ms", 1e3)
    sizes = "B, I, H" if kind == "step" else "B, T, I, H"
    head = ["dtype", sizes] + [f"{n} ({unit})" for n in names]
    if not noise:
        head += [f"{p} / fastrnn" for p in peers]
        if kind == "chunk":
            head.append("fastrnn chunked / one call")
    title = ("Step: one time step, the state carried (per step)" if kind == "step" else
             f"Chunk: a stream fed {CHUNK} steps per call (per whole stream)")
    lines = ["", f"**{title}**", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    cells: dict[tuple[str, tuple, str], dict[str, dict]] = {}
    for r in rows:
        cells.setdefault(_case_key(r), {})[r["impl"]] = r
    for (dtype, size, _), by_impl in cells.items():
        base = by_impl.get(BASELINE)
        row = [dtype, _case_label(size)]
        for name in names:
            result = by_impl.get(name)
            row.append("-" if result is None else
                       f"{result['median_s'] * scale:,.2f} "
                       f"±{result.get('spread', 0.0) / 2:.0%}")
        if not noise:
            row += [f"{by_impl[p]['median_s'] / base['median_s']:.2f}x"
                    if base and p in by_impl else "-" for p in peers]
            if kind == "chunk":
                one_call = by_impl.get(ONE_CALL)
                row.append(f"{base['median_s'] / one_call['median_s']:.2f}x"
                           if base and one_call else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", STEP_NOTE if kind == "step" else CHUNK_NOTE]
    lines += [registry[n].note for n in names if n in registry and registry[n].note]
    return lines


def format_table(report: dict) -> str:
    """Markdown tables. The forward grid: per implementation the median time
    (us) of the interleaved rounds and its spread; then, for a quiet run
    only, each peer as a multiple of fastrnn's time and fastrnn's rate
    against the machine's matmul rate (for a sparse reservoir, the rate of
    the work done: 2·B·T·(H·I + nnz)). Then the step and chunk patterns
    (:func:`format_pattern_table`). A run flagged busy (``report["noise"]``)
    gets a warning and no ratio columns."""
    every_result = report["results"]
    results = [r for r in every_result if r.get("kind", "dense") in FORWARD_KINDS]
    noise = report.get("noise") or []
    names = list(dict.fromkeys(r["impl"] for r in results))
    peers = [n for n in names if n != BASELINE]
    rates = report["matmul_flops_per_s"]
    lines = []
    if noise:
        lines += ["**WARNING: the machine was busy during this run; its timings are "
                  "unreliable and the ratio columns are left out.** Why: "
                  + "; ".join(noise) + ". Re-run on a quiet machine.", ""]
    head = ["dtype", "B, T, I, H"] + [f"{n} (us)" for n in names]
    if not noise:
        head += [f"{p} / fastrnn" for p in peers] + ["fastrnn GFLOP/s", "of matmul rate"]
    else:
        head += ["fastrnn GFLOP/s"]
    if results:
        lines += ["| " + " | ".join(head) + " |",
                  "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    cells: dict[tuple[str, tuple, str], dict[str, dict]] = {}
    for r in results:
        cells.setdefault(_case_key(r), {})[r["impl"]] = r
    for key, by_impl in cells.items():
        dtype, size, label = key
        base = by_impl.get(BASELINE)
        row = [dtype, _case_label(size, label)]
        for name in names:
            r = by_impl.get(name)
            row.append("-" if r is None else
                       f"{r['median_s'] * 1e6:,.1f} ±{r.get('spread', 0.0) / 2:.0%}")
        if not noise:
            row += [f"{by_impl[p]['median_s'] / base['median_s']:.2f}x"
                    if base and p in by_impl else "-" for p in peers]
        if base:
            rate = base["flops"] / base["median_s"]
            row.append(f"{rate / 1e9:.1f}")
            if not noise:
                row.append(f"{rate / rates[dtype]:.0%}")
        else:
            row += ["-"] if noise else ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    ends = report.get("matmul_flops_per_s_end") or {}
    rate_text = ", ".join(
        f"{d} {r / 1e9:.0f}" + (f" then {ends[d] / 1e9:.0f}" if d in ends else "")
        for d, r in rates.items())
    if results:
        lines.append("")
    rounds = report.get("rounds", 1)
    lines.append(f"Median of {rounds} interleaved rounds (every implementation of a case "
                 "timed in turn, round after round); ± is half the range of the round "
                 "medians, relative to their median.")
    lines.append(f"NumPy square matmul rate at the start and the end of this run (GFLOP/s): "
                 f"{rate_text}."
                 + ("" if report.get("others_cpu") is None else
                    f" Other processes used {report['others_cpu']:.0%} of the machine's CPU "
                    "meanwhile.")
                 + ("" if noise else " Peer / fastrnn > 1 means fastrnn is faster."))
    busy = report.get("busy_mode")
    if busy:
        lines.append(f"Busy-machine mode: {busy['processes']} busy-looping background "
                     "process(es) ran throughout (their CPU is not counted as other "
                     "processes').")
    environment = report.get("environment") or {}
    if environment.get("NUMBA_CPU_NAME"):
        lines.append(f"fastrnn compiled for {environment['NUMBA_CPU_NAME']} (no host "
                     f"features); OPENBLAS_CORETYPE={environment.get('OPENBLAS_CORETYPE')}.")
    for name in names:
        if IMPLEMENTATIONS.get(name) is not None and IMPLEMENTATIONS[name].note:
            lines.append(IMPLEMENTATIONS[name].note)
    labels = list(dict.fromkeys(r["label"] for r in results if r.get("kind") == "reservoir"))
    if labels:
        lines.append(RESERVOIR_NOTE.format(cases="; ".join(labels)))
    for kind in ("step", "chunk"):
        lines += format_pattern_table(every_result, kind, noise)
    return "\n".join(lines)


def plot(report: dict, path: str) -> bool:
    """Two rows of panels, one column per dtype, every case on a categorical
    x axis labelled by its size (reservoirs included): above, each peer's
    time over fastrnn's (log scale, 1.0 marked: above it fastrnn is faster);
    below, every implementation's median time, with the range of its round
    medians. The y scales are shared along each row. The forward grid only
    (the step and chunk patterns are in their tables). False when matplotlib
    is missing or the report has no forward case."""
    results = [r for r in report["results"] if r.get("kind", "dense") in FORWARD_KINDS]
    if not results:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    noise = report.get("noise") or []
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    names = list(dict.fromkeys(r["impl"] for r in results))
    peers = [n for n in names if n != BASELINE]
    colors = {name: f"C{index % 10}" for index, name in enumerate(names)}
    markers = dict(zip(names, "o^sDvP*Xh<>", strict=False))
    cases_per_dtype = max(len({_case_key(r) for r in results if r["dtype"] == d})
                          for d in dtypes)
    width = max(7.0, 0.75 * cases_per_dtype + 2.0)
    fig, axes = plt.subplots(2, len(dtypes), figsize=(width * len(dtypes), 9), squeeze=False,
                             sharey="row")
    for column, dtype in enumerate(dtypes):
        rows = [r for r in results if r["dtype"] == dtype]
        keys = list(dict.fromkeys(_case_key(r) for r in rows))
        position = {key: index for index, key in enumerate(keys)}
        by_case: dict[tuple, dict[str, dict]] = {}
        for r in rows:
            by_case.setdefault(_case_key(r), {})[r["impl"]] = r
        speed_ax, time_ax = axes[0][column], axes[1][column]
        step = 0.7 / max(1, len(names))
        for index, name in enumerate(names):
            offset = (index - (len(names) - 1) / 2) * step
            mine = [r for r in rows if r["impl"] == name]
            if mine:
                xs = [position[_case_key(r)] + offset for r in mine]
                medians = np.array([r["median_s"] for r in mine])
                low = medians - np.array([r.get("low_s", r["median_s"]) for r in mine])
                high = np.array([r.get("high_s", r["median_s"]) for r in mine]) - medians
                time_ax.errorbar(xs, medians, yerr=[low, high], fmt=markers[name],
                                 color=colors[name], label=name, capsize=2, linestyle="none")
            if name in peers:
                pairs = [(position[key], by[name]["median_s"] / by[BASELINE]["median_s"])
                         for key, by in by_case.items() if name in by and BASELINE in by]
                if pairs:
                    speed_ax.plot([x + offset for x, _ in pairs], [v for _, v in pairs],
                                  markers[name], color=colors[name], label=name,
                                  linestyle="none")
        speed_ax.axhline(1.0, color="black", linewidth=1)
        labels = [_case_label(size, "reservoir" if label else "", sep="\n")
                  for _, size, label in keys]
        for ax in (speed_ax, time_ax):
            ax.set_yscale("log")
            ax.set_xticks(range(len(keys)))
            ax.set_xticklabels(labels, rotation=30, ha="right", rotation_mode="anchor",
                               fontsize=8)
            ax.set_xlim(-0.6, len(keys) - 0.4)
            ax.grid(True, which="major", axis="y", alpha=0.3)
            for boundary in range(1, len(keys)):  # cases are separate problems
                ax.axvline(boundary - 0.5, color="grey", linewidth=0.5, alpha=0.4)
        speed_ax.set_title(f"{dtype}: speed-up, peer time / fastrnn-numba time\n"
                           "(above 1: fastrnn is faster)"
                           + ("\nBUSY MACHINE: UNRELIABLE" if noise else ""),
                           fontsize=10, color="red" if noise else "black")
        time_ax.set_title(f"{dtype}: median time per forward\n(bars: range over rounds)",
                          fontsize=10)
        time_ax.set_xlabel("B, T, I, H")
        if column == 0:
            speed_ax.set_ylabel("peer / fastrnn-numba")
            time_ax.set_ylabel("seconds per forward")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    order = [name for name in names if name in handles]
    fig.legend([handles[name] for name in order], order, loc="lower center",
               ncol=min(len(handles), 4), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def parse_sizes(text: str) -> list[tuple[int, int, int, int]]:
    """"1,10,4,8;32,100,32,64" -> [(1, 10, 4, 8), (32, 100, 32, 64)]."""
    sizes = []
    for part in text.split(";"):
        try:
            values = tuple(int(v) for v in part.replace("x", ",").split(","))
        except ValueError:
            values = ()
        if len(values) != 4 or min(values) < 1:
            raise ValueError(f"a size is four positive integers B,T,I,H; got {part!r}")
        sizes.append(values)
    return sizes


def run_environment() -> dict[str, str | None]:
    """The variables that decide what the run measures: the CPU fastrnn is
    compiled for, the peers' BLAS kernels, the thread counts."""
    return {name: os.environ.get(name) for name in (
        "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "OPENBLAS_CORETYPE", "MKL_ENABLE_INSTRUCTIONS",
        "ONEDNN_MAX_CPU_ISA", "XLA_FLAGS", "FASTRNN_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def main(args) -> int:
    """Run the report for parsed command-line ``args`` (see fastrnn.__main__)."""
    sizes = parse_sizes(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    if args.quick and args.dtype == "both":
        dtypes = ["float32"]
    patterns = (args.patterns.split(",") if args.patterns else
                ["forward"] if args.sizes else list(PATTERNS))
    selected: dict[str, list[str]] = {}
    missing: list[str] = []
    for pattern in PATTERNS:
        registry = REGISTRIES[pattern]
        chosen = ([n for n in registry if not args.only or n in args.only.split(",")]
                  if pattern in patterns else [])
        selected[pattern] = [n for n in chosen if available(n, registry)]
        missing += [n for n in chosen if n not in selected[pattern] and n not in missing]
    names = selected["forward"]
    every_name = list(dict.fromkeys(n for chosen in selected.values() for n in chosen))
    budget = 0.2 if args.quick else args.budget
    rounds = 3 if args.quick and args.rounds is None else (args.rounds or ROUNDS)
    if "forward" not in patterns:
        sizes = []
    step_sizes = ((QUICK_STEP_SIZES if args.quick else STEP_SIZES)
                  if "step" in patterns else [])
    chunk_sizes = ((QUICK_CHUNK_SIZES if args.quick else CHUNK_SIZES)
                   if "chunk" in patterns else [])
    print(f"fastrnn comparison: {len(sizes)} size{'' if len(sizes) == 1 else 's'}"
          + ("" if args.sizes or not sizes else " and reservoirs")
          + f", {len(step_sizes)} step and {len(chunk_sizes)} chunk case(s)"
          + f", {', '.join(dtypes)}; implementations: {', '.join(every_name)}"
          + (f" (not installed, skipped: {', '.join(missing)}; pip install -e '.[peers]')"
             if missing else ""), flush=True)
    environment = run_environment()
    if environment["NUMBA_CPU_NAME"]:
        print(f"fastrnn compiled for {environment['NUMBA_CPU_NAME']} (NUMBA_CPU_FEATURES="
              f"{environment['NUMBA_CPU_FEATURES']!r}); peers on OPENBLAS_CORETYPE="
              f"{environment['OPENBLAS_CORETYPE']}, MKL_ENABLE_INSTRUCTIONS="
              f"{environment['MKL_ENABLE_INSTRUCTIONS']}, ONEDNN_MAX_CPU_ISA="
              f"{environment['ONEDNN_MAX_CPU_ISA']}, XLA_FLAGS={environment['XLA_FLAGS']!r} "
              "(JAX's dots, YNNPACK's, still use this machine's instruction set)", flush=True)
    reservoir_cases: list[ReservoirCase]
    if args.sizes or "forward" not in patterns:
        reservoir_cases = []
    elif importlib.util.find_spec("scipy") is None:
        # The reservoirs' w_hh is a SciPy sparse matrix.
        print("reservoir cases skipped: SciPy is not installed (pip install scipy)")
        reservoir_cases = []
    else:
        reservoir_cases = QUICK_RESERVOIR_CASES if args.quick else RESERVOIR_CASES
    busy = None
    with contextlib.ExitStack() as stack:
        load_pids: tuple[int, ...] = ()
        if args.busy:
            load = stack.enter_context(background_load(args.busy, args.busy_limit))
            load_pids = tuple(process.pid for process in load)
            busy = {"processes": args.busy, "limit_s": args.busy_limit, "pids": list(load_pids)}
            print(f"busy-machine mode: {args.busy} busy-looping process(es) in the "
                  f"background (PIDs {', '.join(map(str, load_pids))}), stopped when the "
                  f"report ends or after {args.busy_limit:g} s", flush=True)
        report = run_report(sizes, dtypes, names, budget,
                            matmul_sizes=(1024,) if args.quick else (1024, 2048),
                            reservoir_cases=reservoir_cases, rounds=rounds,
                            load_pids=load_pids, step_sizes=step_sizes,
                            chunk_sizes=chunk_sizes, step_names=selected["step"],
                            chunk_names=selected["chunk"])
    report["threads"] = os.environ.get("FASTRNN_NUM_THREADS", "default")
    report["environment"] = environment
    report["busy_mode"] = busy
    table = format_table(report)
    print(table)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    print(f"\nresults: {args.json}")
    if plot(report, args.plot):
        print(f"plot: {args.plot}")
    else:
        print("plot: skipped (no forward case)" if not sizes and not reservoir_cases else
              "plot: skipped (matplotlib is not installed)")
    return 0
