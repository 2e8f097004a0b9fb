"""ONNX in and out for :class:`fastrnn.RNN` (the optional ``[onnx]`` extra).

:func:`to_onnx` writes one ONNX ``RNN`` node per layer, joined by the
plumbing ``torch.onnx.export`` emits, in the time-major layout ONNX Runtime
requires. :func:`from_onnx` reads such a graph back, or one exported by
``torch.onnx.export(..., dynamo=False)`` or built by hand, after checking
that the graph computes what the fastrnn model will.

How the import checks a graph: it runs the graph symbolically, in node order.
Initializers, Constant nodes and plumbing ops whose inputs are all constant
are folded (with ``onnx.reference``). Every other value is followed as a
tensor whose axes are named after the axes they were built from: the graph
input's (time, batch, features), or an RNN output's (time, directions,
batch, hidden). Transpose, Squeeze, Unsqueeze, Reshape and a ReduceSum over
the directions rearrange those names; Shape, Gather, Slice, Unsqueeze and
Concat of shapes give the symbolic shapes a Reshape may use; Concat, Slice,
Gather and Cast of tensors give values whose arrangement is not followed
(fine for a graph output, an ``initial_h`` or a ``sequence_lens``, refused as
an RNN's ``X``). So each RNN node's ``X`` must be, axis by axis, the graph
input (layer 0) or the previous node's ``Y`` with its directions and hidden
units merged direction-major (forward first, as PyTorch concatenates) or
summed over the directions; anything else is a ValueError naming the node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._rnn import RNN

INSTALL_HINT = 'pip install "fastrnn[onnx]"'

# The ops from_onnx follows around the RNN nodes: what torch.onnx.export
# (TorchScript exporter) emits between and around nn.RNN's layers, plus
# ReduceSum over the directions (how to_onnx writes merge="sum").
PLUMBING_OPS = ("Cast", "Concat", "Constant", "ConstantOfShape", "Expand", "Gather", "Identity",
                "ReduceSum", "Reshape", "Shape", "Slice", "Squeeze", "Transpose", "Unsqueeze")
# The opset to_onnx writes: RNN's layout attribute, Squeeze's and ReduceSum's
# axes as inputs need 13-14; ONNX Runtime runs 17 on every version still
# supported.
EXPORT_OPSET = 17
_ACTIVATIONS = {"tanh": "tanh", "relu": "relu"}


def import_onnx() -> Any:
    """The onnx module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"ONNX import and export need the onnx package: {INSTALL_HINT}") from exc
    return onnx


# -- the symbolic values of from_onnx ------------------------------------------------

Axis = tuple[str, ...]  # the atoms an axis is made of, major first; () is an axis of size 1


@dataclass(frozen=True)
class _Tensor:
    """A value computed at run time. ``axes`` names its axes (None: an
    arrangement not followed); ``sources`` are the graph inputs (``"input
    <name>"``), RNN outputs (``"Y <k>"``, ``"Y_h <k>"``) and nonzero
    constants (``"constant"``) it is computed from; ``summed``: the
    directions of an RNN output were added; ``zero``: all zeros."""

    axes: tuple[Axis, ...] | None
    sources: frozenset[str] = field(default_factory=frozenset)
    summed: bool = False
    zero: bool = False


@dataclass(frozen=True)
class _Shape:
    """A shape vector computed from a tensor's shape: each entry an int or
    the atoms of an axis whose size is only known at run time."""

    entries: tuple[Axis | int, ...]
    scalar: bool = False


Value = Any  # np.ndarray | _Tensor | _Shape


def _describe_node(node: Any, index: int) -> str:
    name = repr(node.name) if node.name else f"#{index}"
    return f"node {name} ({node.op_type})"


def _opaque(values: list[Value]) -> _Tensor:
    """A tensor computed from ``values`` whose arrangement is not followed."""
    sources: set[str] = set()
    zero = True
    for value in values:
        if isinstance(value, _Tensor):
            sources |= value.sources
            zero = zero and value.zero
        elif isinstance(value, np.ndarray):
            if np.any(value != 0):
                sources.add("constant")
                zero = False
        # a _Shape is no data
    return _Tensor(None, frozenset(sources), zero=zero)


class _Interpreter:
    """Runs a graph symbolically; see the module docstring."""

    def __init__(self, onnx: Any, model: Any) -> None:
        from onnx import numpy_helper

        self.onnx = onnx
        self.graph = model.graph
        self.opset = next((entry.version for entry in model.opset_import
                           if entry.domain in ("", "ai.onnx")), EXPORT_OPSET)
        self.values: dict[str, Value] = {"": None}
        self.sizes: dict[str, int | None] = {}
        for tensor in self.graph.initializer:
            self.values[tensor.name] = numpy_helper.to_array(tensor)
        for info in self.graph.input:
            if info.name in self.values:
                continue  # an initializer also listed as an input (IR < 4)
            tensor_type = info.type.tensor_type
            # Sizes known statically (dim_value) or not; no shape: taken as 3-D.
            sizes: list[int | None] = (
                [int(d.dim_value) if d.HasField("dim_value") else None
                 for d in tensor_type.shape.dim]
                if tensor_type.HasField("shape") else [None] * 3)
            atoms = tuple(f"{info.name}:{axis}" for axis in range(len(sizes)))
            self.sizes.update(zip(atoms, sizes, strict=True))
            self.values[info.name] = _Tensor(tuple((atom,) for atom in atoms),
                                             frozenset({f"input {info.name}"}))
        self.layers: list[dict[str, Any]] = []

    # -- helpers -------------------------------------------------------------------

    def size(self, atoms: Axis) -> int | None:
        total = 1
        for atom in atoms:
            size = self.sizes.get(atom)
            if size is None:
                return None
            total *= size
        return total

    def fold(self, node: Any, inputs: list[Value]) -> list[Value]:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(node, opsets={"": self.opset})
        feeds = {name: value for name, value in zip(node.input, inputs, strict=True) if name}
        return [np.asarray(value) for value in evaluator.run(None, feeds)]

    def axes_argument(self, node: Any, attrs: dict, inputs: list[Value], where: str) -> list[int]:
        if "axes" in attrs:
            return [int(axis) for axis in attrs["axes"]]
        if len(inputs) > 1 and inputs[1] is not None:
            if not isinstance(inputs[1], np.ndarray):
                raise ValueError(f"{where}: its axes must be a constant")
            return [int(axis) for axis in np.reshape(inputs[1], -1)]
        return []

    def reshape(self, axes: tuple[Axis, ...], target: list[Axis | int]) -> tuple[Axis, ...] | None:
        """The axes of ``axes`` reshaped to ``target`` (ints, -1 or atoms; 0
        already replaced by the input axis' atoms), None when not followed."""
        flat = [atom for axis in axes for atom in axis]
        if target.count(-1) > 1:
            return None
        split = target.index(-1) if -1 in target else len(target)

        def consume(entries: list[Axis | int], atoms: list[str]) -> tuple[list[Axis], int] | None:
            out: list[Axis] = []
            position = 0
            for entry in entries:
                if isinstance(entry, tuple):
                    if tuple(atoms[position:position + len(entry)]) != entry:
                        return None
                    out.append(entry)
                    position += len(entry)
                    continue
                taken: list[str] = []
                product = 1
                while product < entry and position < len(atoms):
                    size = self.sizes.get(atoms[position])
                    if size is None:
                        return None
                    taken.append(atoms[position])
                    product *= size
                    position += 1
                if product != entry:
                    return None
                out.append(tuple(taken))
            return out, position

        left = consume(target[:split], flat)
        if left is None:
            return None
        left_axes, start = left
        rest = flat[start:]
        if split == len(target):
            return tuple(left_axes) if not rest else None
        # The entries after -1, matched from the end (each axis' atoms reversed).
        right_entries = [entry[::-1] if isinstance(entry, tuple) else entry
                         for entry in reversed(target[split + 1:])]
        right = consume(right_entries, rest[::-1])
        if right is None:
            return None
        right_axes, used = right
        middle = tuple(rest[:len(rest) - used])
        return tuple(left_axes) + (middle,) + tuple(axis[::-1] for axis in reversed(right_axes))

    # -- the ops -------------------------------------------------------------------

    def run(self) -> None:
        for index, node in enumerate(self.graph.node):
            where = _describe_node(node, index)
            for name in node.input:
                if name not in self.values:
                    raise ValueError(f"{where} reads {name!r}, which no earlier node, "
                                     f"initializer or graph input defines")
            inputs = [self.values[name] for name in node.input]
            if node.domain not in ("", "ai.onnx"):
                raise ValueError(f"{where} of domain {node.domain!r} is not supported: "
                                 f"from_onnx reads ONNX RNN nodes and the plumbing ops "
                                 f"{', '.join(PLUMBING_OPS)}")
            if node.op_type == "RNN":
                outputs = self.rnn(node, where, inputs)
            elif node.op_type not in PLUMBING_OPS:
                hint = ""
                if node.op_type in ("MatMul", "Gemm", "Tanh", "Relu", "Scan", "Loop"):
                    hint = (" (an RNN unrolled into matrix products, as torch.onnx.export "
                            "with dynamo=True writes it? Export with dynamo=False to keep "
                            "ONNX RNN nodes)")
                raise ValueError(f"{where} is not supported: from_onnx reads ONNX RNN nodes "
                                 f"and the plumbing ops {', '.join(PLUMBING_OPS)} around "
                                 f"them{hint}")
            elif inputs and all(isinstance(value, np.ndarray) or value is None
                                for value in inputs) or node.op_type == "Constant":
                outputs = self.fold(node, inputs)
            else:
                outputs = [self.plumbing(node, where, inputs)]
            for name, value in zip(node.output, outputs, strict=False):
                if name:
                    self.values[name] = value

    def plumbing(self, node: Any, where: str, inputs: list[Value]) -> Value:
        onnx = self.onnx
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        data = inputs[0]
        if op == "Identity":
            return data
        if op == "Shape":
            if isinstance(data, _Shape):
                return np.array([] if data.scalar else [len(data.entries)], dtype=np.int64)
            if data.axes is None:
                return _Tensor(None)
            entries: list[Axis | int] = []
            for axis in data.axes:
                size = self.size(axis)
                entries.append(axis if size is None else size)
            start, end = attrs.get("start", 0), attrs.get("end", len(entries))
            return _Shape(tuple(entries[start:end]))
        if op == "ConstantOfShape":
            value = attrs.get("value")
            zero = value is None or not np.any(onnx.numpy_helper.to_array(value))
            return _Tensor(None, frozenset() if zero else frozenset({"constant"}), zero=zero)
        if op == "Concat" and all(isinstance(v, _Shape) and not v.scalar
                                  or isinstance(v, np.ndarray) and v.ndim == 1
                                  for v in inputs):
            entries = []
            for value in inputs:
                entries += (list(value.entries) if isinstance(value, _Shape)
                            else [int(v) for v in value])
            return _Shape(tuple(entries))
        if isinstance(data, _Shape):
            return self.shape_op(node, where, attrs, inputs)
        if op == "Concat":
            return _opaque(inputs)
        if op in ("Cast", "Expand", "Slice", "Gather"):
            # The other inputs of Expand, Slice and Gather are shapes and
            # positions, not data.
            indices = inputs[1] if op == "Gather" and isinstance(inputs[1], _Tensor) else None
            return _opaque([data] if indices is None else [data, indices])
        if not isinstance(data, _Tensor):  # a constant with a computed shape
            return _opaque([data])
        if data.axes is None:
            if op == "ReduceSum":
                raise ValueError(f"{where}: from_onnx follows a ReduceSum only over the "
                                 f"directions axis of an RNN node's Y")
            return data  # rearranged, still not followed: the same sources
        axes = data.axes
        rank = len(axes)
        result: tuple[Axis, ...] | None
        if op == "Transpose":
            perm = attrs.get("perm", list(range(rank))[::-1])
            result = tuple(axes[int(axis)] for axis in perm)
        elif op == "Squeeze":
            squeezed = [axis % rank for axis in self.axes_argument(node, attrs, inputs, where)]
            if not squeezed:
                squeezed = [i for i, axis in enumerate(axes) if self.size(axis) == 1]
                if any(self.size(axis) is None for axis in axes):
                    return _Tensor(None, data.sources, data.summed)
            if any(self.size(axes[i]) != 1 for i in squeezed):
                return _Tensor(None, data.sources, data.summed)
            result = tuple(axis for i, axis in enumerate(axes) if i not in squeezed)
        elif op == "Unsqueeze":
            inserted = self.axes_argument(node, attrs, inputs, where)
            out_rank = rank + len(inserted)
            positions = sorted(axis % out_rank for axis in inserted)
            remaining = list(axes)
            result = tuple(() if i in positions else remaining.pop(0) for i in range(out_rank))
        elif op == "Reshape":
            shape = inputs[1]
            if isinstance(shape, np.ndarray):
                target: list[Axis | int] = [int(v) for v in shape]
            elif isinstance(shape, _Shape):
                target = list(shape.entries)
            else:
                return _Tensor(None, data.sources, data.summed)
            if not attrs.get("allowzero", 0):
                if any(entry == 0 and i >= rank for i, entry in enumerate(target)):
                    return _Tensor(None, data.sources, data.summed)
                target = [axes[i] if isinstance(entry, int) and entry == 0 else entry
                          for i, entry in enumerate(target)]
            result = self.reshape(axes, target)
        elif op == "ReduceSum":
            reduced = [axis % rank for axis in self.axes_argument(node, attrs, inputs, where)]
            if (len(reduced) != 1 or len(axes[reduced[0]]) != 1
                    or not axes[reduced[0]][0].startswith("directions ")):
                raise ValueError(f"{where}: from_onnx follows a ReduceSum only over the "
                                 f"directions axis of an RNN node's Y")
            keep = attrs.get("keepdims", 1)
            result = tuple(() if i == reduced[0] else axis for i, axis in enumerate(axes)
                           if keep or i != reduced[0])
            return _Tensor(result, data.sources, summed=True)
        else:  # not reached: PLUMBING_OPS is covered above
            raise AssertionError(op)
        return _Tensor(result, data.sources, data.summed)

    def shape_op(self, node: Any, where: str, attrs: dict, inputs: list[Value]) -> Value:
        """Gather, Slice, Squeeze, Unsqueeze, Cast, Identity of a shape vector."""
        data = inputs[0]
        op = node.op_type
        constants = [v for v in inputs[1:] if v is not None]
        if not all(isinstance(v, np.ndarray) for v in constants):
            return _Tensor(None)
        entries = list(data.entries)
        if op == "Cast":
            return data
        if op == "Gather" and attrs.get("axis", 0) == 0:
            indices = inputs[1]
            picked = tuple(entries[int(i)] for i in np.reshape(indices, -1))
            return _Shape(picked, scalar=indices.ndim == 0)
        if op == "Slice" and len(inputs) >= 3:
            starts, ends = int(inputs[1][0]), int(inputs[2][0])
            steps = int(inputs[4][0]) if len(inputs) > 4 and inputs[4] is not None else 1
            clipped = [max(min(v, len(entries)), -len(entries)) for v in (starts, ends)]
            return _Shape(tuple(entries[clipped[0]:clipped[1]:steps]))
        if op == "Unsqueeze" and data.scalar:
            return _Shape(data.entries)
        if op == "Squeeze" and not data.scalar and len(entries) == 1:
            return _Shape(data.entries, scalar=True)
        return _Tensor(None)

    # -- the RNN nodes ---------------------------------------------------------------

    def rnn(self, node: Any, where: str, inputs: list[Value]) -> list[Value]:
        onnx = self.onnx
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for name in ("clip", "activation_alpha", "activation_beta"):
            if name in attrs:
                raise ValueError(f"{where} has attribute {name!r}: fastrnn.RNN has no "
                                 f"{'clipping' if name == 'clip' else 'activation parameters'}")
        unknown = set(attrs) - {"activations", "direction", "hidden_size", "layout"}
        if unknown:
            raise ValueError(f"{where} has attribute(s) {sorted(unknown)} that fastrnn.RNN "
                             f"does not know")
        direction = attrs.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else str(direction)
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError(f"{where} has attribute 'direction' = {direction!r}; expected "
                             f"'forward', 'reverse' or 'bidirectional'")
        num_directions = 2 if direction == "bidirectional" else 1
        names = [a.decode() if isinstance(a, bytes) else str(a)
                 for a in attrs.get("activations", [b"Tanh"] * num_directions)]
        if len(names) != num_directions:
            raise ValueError(f"{where} has attribute 'activations' = {names}: expected "
                             f"{num_directions} (one per direction)")
        if len(set(names)) != 1:
            raise ValueError(f"{where} has attribute 'activations' = {names}: fastrnn.RNN "
                             f"uses the same activation in every direction")
        activation = names[0].lower()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{where} has attribute 'activations' = {names}: fastrnn.RNN "
                             f"supports only 'Tanh' and 'Relu'")
        layout = int(attrs.get("layout", 0))
        if layout not in (0, 1):
            raise ValueError(f"{where} has attribute 'layout' = {layout}; expected 0 or 1")

        padded = list(inputs) + [None] * (6 - len(inputs))
        x, w, r, b, lengths, h0 = padded[:6]
        for label, value in (("W", w), ("R", r), ("B", b)):
            if value is not None and not isinstance(value, np.ndarray):
                raise ValueError(f"{where}: input {label} must be a constant (an initializer or "
                                 f"a Constant node), not computed at run time")
        if w is None or r is None:
            raise ValueError(f"{where}: inputs W and R are required")
        if w.dtype not in (np.float32, np.float64):
            raise ValueError(f"{where}: input W has dtype {w.dtype}; fastrnn.RNN runs "
                             f"float32 and float64")
        if w.ndim != 3 or w.shape[0] != num_directions:
            raise ValueError(f"{where}: input W must have shape ({num_directions}, hidden_size, "
                             f"input_size) for direction {direction!r}, got {w.shape}")
        hidden = int(attrs.get("hidden_size", w.shape[1]))
        features = w.shape[2]
        expected = {"W": (num_directions, hidden, features), "R": (num_directions, hidden, hidden),
                    "B": (num_directions, 2 * hidden)}
        for label, value in (("W", w), ("R", r), ("B", b)):
            if value is not None and value.shape != expected[label]:
                raise ValueError(f"{where}: input {label} must have shape {expected[label]} "
                                 f"(hidden_size {hidden}), got {value.shape}")

        k = len(self.layers)
        if k and hidden != self.layers[0]["hidden"]:
            raise ValueError(f"{where} has hidden_size {hidden} where the first RNN node has "
                             f"{self.layers[0]['hidden']}: fastrnn.RNN's layers share one")
        self.check_input(where, k, layout, x, features)
        for label, value in (("sequence_lens", lengths), ("initial_h", h0)):
            # Zeros (torch.onnx.export's ConstantOfShape or Expand of 0) as
            # initial_h are what fastrnn starts from without h0.
            zero = (isinstance(value, _Tensor) and value.zero
                    or isinstance(value, np.ndarray) and not np.any(value))
            if value is None or label == "initial_h" and zero:
                continue
            if not isinstance(value, _Tensor) or zero:
                raise ValueError(f"{where}: input {label} is a constant; fastrnn.RNN takes "
                                 f"{'lengths' if label == 'sequence_lens' else 'h0'} at call "
                                 f"time, so it must come from a graph input")
            bad = [s for s in value.sources if not s.startswith("input ")]
            if bad or not value.sources:
                raise ValueError(f"{where}: input {label} is computed from "
                                 f"{sorted(bad) or 'no graph input'}; "
                                 f"from_onnx takes it only from graph inputs")
        lengths_sources = (None if lengths is None or isinstance(lengths, np.ndarray)
                           else lengths.sources)
        self.layers.append({"node": where, "direction": direction, "activation": activation,
                            "w": w, "r": r, "b": b, "hidden": hidden, "lengths": lengths_sources})

        directions_atom: Axis = (f"directions {k}",) if num_directions == 2 else ()
        self.sizes[f"directions {k}"] = num_directions
        self.sizes[f"hidden {k}"] = hidden
        hidden_atom: Axis = (f"hidden {k}",)
        time_atom: Axis = (self.time,)
        batch_atom: Axis = (self.batch,)
        y_axes: tuple[Axis, ...]
        y_h_axes: tuple[Axis, ...]
        if layout == 0:
            y_axes = (time_atom, directions_atom, batch_atom, hidden_atom)
            y_h_axes = (directions_atom, batch_atom, hidden_atom)
        else:
            y_axes = (batch_atom, time_atom, directions_atom, hidden_atom)
            y_h_axes = (batch_atom, directions_atom, hidden_atom)
        return [_Tensor(y_axes, frozenset({f"Y {k}"})),
                _Tensor(y_h_axes, frozenset({f"Y_h {k}"}))]

    def check_input(self, where: str, k: int, layout: int, x: Value, features: int) -> None:
        """X of the k-th RNN node: the graph input (k = 0) or the previous
        node's Y, arranged as this node's layout reads it."""
        time_axis, batch_axis = (0, 1) if layout == 0 else (1, 0)
        order = "(time, batch, features)" if layout == 0 else "(batch, time, features)"
        if not isinstance(x, _Tensor):
            raise ValueError(f"{where}: input X must be computed at run time, not a constant")
        if k == 0:
            if (len(x.sources) != 1 or not next(iter(x.sources)).startswith("input ")
                    or x.axes is None or len(x.axes) != 3
                    or any(len(axis) != 1 for axis in x.axes)):
                raise ValueError(f"{where}: input X must be a graph input, transposed or not, "
                                 f"in the order {order} of layout {layout}")
            name = next(iter(x.sources))[len("input "):]
            atoms = [axis[0] for axis in x.axes]
            if atoms[2] != f"{name}:2":
                raise ValueError(f"{where}: input X reaches the RNN node with the graph input "
                                 f"{name!r}'s axis {atoms[2].rsplit(':', 1)[1]} as its "
                                 f"features; fastrnn.RNN reads (batch, time, features) or "
                                 f"(time, batch, features)")
            size = self.sizes.get(atoms[2])
            if size is not None and size != features:
                raise ValueError(f"{where}: the graph input {name!r} has {size} features but "
                                 f"input W reads {features}")
            self.sizes[atoms[2]] = features
            self.time, self.batch = atoms[time_axis], atoms[batch_axis]
            self.input_name = name
            self.batch_first = int(self.batch.rsplit(":", 1)[1]) == 0
            self.transitions: list[bool] = []
            return
        previous = self.layers[k - 1]
        wanted_features: Axis
        if previous["direction"] == "bidirectional" and not x.summed:
            wanted_features = (f"directions {k - 1}", f"hidden {k - 1}")
        else:
            wanted_features = (f"hidden {k - 1}",)
        axes = [(self.time,), (self.batch,)]
        if layout == 1:
            axes.reverse()
        wanted = (*axes, wanted_features)
        if x.sources != frozenset({f"Y {k - 1}"}) or x.axes != wanted:
            raise ValueError(f"{where}: input X must be the previous RNN node's "
                             f"({previous['node']}) output Y as {order} with the directions "
                             f"and hidden units merged, forward first (as torch.onnx.export "
                             f"writes it) or summed over the directions")
        if previous["direction"] == "bidirectional":
            self.transitions.append(x.summed)
        if features != self.size(wanted_features):
            raise ValueError(f"{where}: input W reads {features} features, the previous "
                             f"layer gives {self.size(wanted_features)}")


def _load_model(onnx: Any, model_or_path: Any) -> Any:
    if isinstance(model_or_path, (str, os.PathLike)):
        return onnx.load(os.fspath(model_or_path))
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model_or_path))
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    raise TypeError(f"model_or_path must be an onnx.ModelProto, a path or the bytes of an "
                    f"ONNX file, got {type(model_or_path).__name__}")


def from_onnx(cls: type[RNN], model_or_path: Any, *, backend: str = "auto") -> RNN:
    """The model of :meth:`fastrnn.RNN.from_onnx` (documented there)."""
    onnx = import_onnx()
    model = _load_model(onnx, model_or_path)
    interpreter = _Interpreter(onnx, model)
    interpreter.run()
    layers = interpreter.layers
    if not layers:
        raise ValueError("the graph has no ONNX RNN node (torch.onnx.export with dynamo=True "
                         "unrolls nn.RNN into matrix products: export with dynamo=False)")
    last = len(layers) - 1
    allowed = {f"Y {last}"} | {f"Y_h {k}" for k in range(len(layers))}
    final_summed = []
    for output in interpreter.graph.output:
        value = interpreter.values.get(output.name)
        if not isinstance(value, _Tensor):
            raise ValueError(f"graph output {output.name!r} is not computed from the RNN "
                             f"nodes' outputs")
        sources = value.sources
        if not sources or not sources <= allowed:
            raise ValueError(f"graph output {output.name!r} is computed from "
                             f"{sorted(sources) or 'constants'}; fastrnn.RNN returns only the "
                             f"last RNN node's Y and the Y_h of every node")
        if f"Y {last}" in sources:
            final_summed.append(value.summed)

    activations = {layer["activation"] for layer in layers}
    if len(activations) != 1:
        first = layers[0]
        other = next(layer for layer in layers if layer["activation"] != first["activation"])
        raise ValueError(f"{other['node']} has attribute 'activations' {other['activation']!r} "
                         f"where {first['node']} has {first['activation']!r}: fastrnn.RNN "
                         f"uses one nonlinearity in every layer")
    lengths = {layer["lengths"] for layer in layers}
    if len(lengths) != 1:
        other = next(layer for layer in layers if layer["lengths"] != layers[0]["lengths"])
        raise ValueError(f"{other['node']}: input 'sequence_lens' differs from the first RNN "
                         f"node's ({layers[0]['node']}): fastrnn.RNN applies one set of "
                         f"lengths to every layer")
    bidirectional_layers = [layer["direction"] == "bidirectional" for layer in layers]
    if any(bidirectional_layers) and not all(bidirectional_layers):
        other = next(layer for layer in layers if layer["direction"] != "bidirectional")
        raise ValueError(f"{other['node']} has attribute 'direction' {other['direction']!r} "
                         f"where other RNN nodes are bidirectional: fastrnn.RNN's layers are "
                         f"all bidirectional or none")
    one_way_reverse = any(layer["direction"] == "reverse" for layer in layers)
    if all(bidirectional_layers):
        summed = set(interpreter.transitions) or ({all(final_summed)} if final_summed
                                                  else {False})
        if len(summed) != 1:
            raise ValueError("the RNN nodes' outputs are concatenated between some layers and "
                             "summed between others: fastrnn.RNN merges every layer alike")
        merge = "sum" if summed.pop() else "concat"
    else:
        merge = "sum" if one_way_reverse else "concat"

    hidden = layers[0]["hidden"]
    bias = any(layer["b"] is not None for layer in layers)
    dtype = layers[0]["w"].dtype
    state: dict[str, np.ndarray] = {}
    for k, layer in enumerate(layers):
        w, r, b = layer["w"], layer["r"], layer["b"]
        if b is None:
            b = np.zeros((w.shape[0], 2 * hidden), dtype)
        slots = {"forward": [0], "reverse": [1], "bidirectional": [0, 1]}[layer["direction"]]
        if one_way_reverse:
            # A stack of one-way layers, some reverse: run as bidirectional
            # layers summed, the missing direction's weights zero (its output,
            # act(0) = 0, adds nothing). Exact for finite inputs.
            for direction in (0, 1):
                suffix = f"_l{k}" + ("_reverse" if direction else "")
                state["weight_ih" + suffix] = np.zeros((hidden, w.shape[2]), dtype)
                state["weight_hh" + suffix] = np.zeros((hidden, hidden), dtype)
                state["bias_ih" + suffix] = np.zeros(hidden, dtype)
                state["bias_hh" + suffix] = np.zeros(hidden, dtype)
        for index, direction in enumerate(slots):
            suffix = f"_l{k}" + ("_reverse" if direction else "")
            state["weight_ih" + suffix] = w[index]
            state["weight_hh" + suffix] = r[index]
            state["bias_ih" + suffix] = b[index, :hidden]
            state["bias_hh" + suffix] = b[index, hidden:]
    if not bias:
        state = {key: value for key, value in state.items() if not key.startswith("bias")}
    return cls.from_state_dict(state, nonlinearity=layers[0]["activation"],
                               batch_first=interpreter.batch_first, merge=merge, dtype=dtype,
                               backend=backend)


# -- export ----------------------------------------------------------------------------


def to_onnx(rnn: RNN, path: str | os.PathLike[str] | None, *, h0: bool,
            lengths: bool) -> Any:
    """The export of :meth:`fastrnn.RNN.to_onnx` (documented there)."""
    onnx = import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    for name, value in (("h0", h0), ("lengths", lengths)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, an os.PathLike or None, got "
                        f"{type(path).__name__}")
    element = TensorProto.FLOAT if rnn.dtype == np.float32 else TensorProto.DOUBLE
    hidden, directions, layers = rnn.hidden_size, rnn.num_directions, rnn.num_layers
    params = rnn.state_dict()
    nodes = []
    initializers = []

    def constant(name: str, values: list[int]) -> str:
        initializers.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    x_dims: list[str | int] = (["batch", "time", rnn.input_size] if rnn.batch_first
                               else ["time", "batch", rnn.input_size])
    inputs = [helper.make_tensor_value_info("X", element, x_dims)]
    if h0:
        inputs.append(helper.make_tensor_value_info(
            "initial_h", element, [layers * directions, "batch", hidden]))
    if lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32,
                                                    ["batch"]))
    layer_input = "X"
    if rnn.batch_first:  # ONNX Runtime runs layout=0 only: (time, batch, features)
        nodes.append(helper.make_node("Transpose", ["X"], ["X_time_major"], perm=[1, 0, 2],
                                      name="X_to_time_major"))
        layer_input = "X_time_major"
    activation = rnn.nonlinearity.capitalize()
    direction = "bidirectional" if directions == 2 else "forward"
    y_h_names = []
    for layer in range(layers):
        suffixes = [f"_l{layer}", f"_l{layer}_reverse"][:directions]
        weights = {
            "W": np.stack([params["weight_ih" + s] for s in suffixes]),
            "R": np.stack([params["weight_hh" + s] for s in suffixes]),
        }
        if rnn.bias:
            weights["B"] = np.stack([np.concatenate([params["bias_ih" + s], params["bias_hh" + s]])
                                     for s in suffixes])
        for label, array in weights.items():
            initializers.append(numpy_helper.from_array(array, f"{label}_l{layer}"))
        initial_h = ""
        if h0:
            initial_h = f"initial_h_l{layer}"
            nodes.append(helper.make_node(
                "Slice", ["initial_h", constant(f"h_start_l{layer}", [layer * directions]),
                          constant(f"h_end_l{layer}", [(layer + 1) * directions]),
                          constant(f"h_axes_l{layer}", [0])],
                [initial_h], name=f"Slice_initial_h_l{layer}"))
        rnn_inputs = [layer_input, f"W_l{layer}", f"R_l{layer}",
                      f"B_l{layer}" if rnn.bias else "",
                      "sequence_lens" if lengths else "", initial_h]
        while rnn_inputs[-1] == "":
            rnn_inputs.pop()
        y, y_h = f"Y_l{layer}", f"Y_h_l{layer}"
        nodes.append(helper.make_node("RNN", rnn_inputs, [y, y_h], name=f"RNN_l{layer}",
                                      hidden_size=hidden, direction=direction,
                                      activations=[activation] * directions))
        y_h_names.append(y_h)
        # Y is (time, directions, batch, hidden): the next layer reads
        # (time, batch, features), the directions merged as rnn merges them.
        merged = f"Y_merged_l{layer}"
        if directions == 1:
            nodes.append(helper.make_node("Squeeze", [y, constant(f"axes_l{layer}", [1])],
                                          [merged], name=f"Squeeze_l{layer}"))
        elif rnn.merge == "sum":
            nodes.append(helper.make_node("ReduceSum", [y, constant(f"axes_l{layer}", [1])],
                                          [merged], keepdims=0, name=f"ReduceSum_l{layer}"))
        else:
            nodes.append(helper.make_node("Transpose", [y], [f"Y_tbdh_l{layer}"],
                                          perm=[0, 2, 1, 3], name=f"Transpose_l{layer}"))
            nodes.append(helper.make_node(
                "Reshape", [f"Y_tbdh_l{layer}", constant(f"shape_l{layer}", [0, 0, -1])],
                [merged], name=f"Reshape_l{layer}"))
        layer_input = merged
    if rnn.batch_first:
        nodes.append(helper.make_node("Transpose", [layer_input], ["Y"], perm=[1, 0, 2],
                                      name="Y_to_batch_major"))
    else:
        nodes.append(helper.make_node("Identity", [layer_input], ["Y"], name="Y"))
    nodes.append(helper.make_node("Concat", y_h_names, ["Y_h"], axis=0, name="Y_h"))
    y_dims: list[str | int] = (["batch", "time", rnn.output_size] if rnn.batch_first
                               else ["time", "batch", rnn.output_size])
    outputs = [helper.make_tensor_value_info("Y", element, y_dims),
               helper.make_tensor_value_info("Y_h", element,
                                             [layers * directions, "batch", hidden])]
    graph = helper.make_graph(nodes, "fastrnn_RNN", inputs, outputs, initializers,
                              doc_string=repr(rnn))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)],
                              producer_name="fastrnn")
    # IR version 8 (ONNX 1.10+): what opset 17 needs, readable by older runtimes too.
    model.ir_version = 8
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
