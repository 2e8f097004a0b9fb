"""``fastrnn.RNN``: a stacked, optionally bidirectional Elman RNN model with
PyTorch's ``nn.RNN`` semantics and weight names, built on prepared
:class:`fastrnn.Layer` objects (one per layer and direction, each call one
compiled kernel call writing straight into the output buffers)."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._backends import CHOICES as BACKEND_CHOICES
from ._layer import Layer
from ._validate import (
    FLOAT_DTYPES,
    NONLINEARITIES,
    _check_out,
    _describe,
    as_float_array,
    check_threads,
    validate_lengths,
)

MERGES = ("concat", "sum")
# The configuration entry of a saved model (save/load): a JSON string.
_CONFIG_KEY = "fastrnn_rnn_config"
_FORMAT_VERSION = 1
_KEY_PATTERN = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {_describe(value)}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return bool(value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _float_dtype(value: Any) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {value!r}") from exc
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _backend(value: Any) -> str:
    if not isinstance(value, str) or value not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {value!r}")
    return value


def _to_numpy(key: str, value: Any) -> np.ndarray:
    """A state-dict value as an ndarray (no copy when possible): a PyTorch
    tensor through ``.detach().cpu().numpy()`` (without importing torch),
    anything else through ``np.asarray``; a TypeError naming ``key`` when it
    is not real numbers."""
    try:
        if not isinstance(value, np.ndarray) and hasattr(value, "numpy"):
            if hasattr(value, "detach"):
                value = value.detach()
            if hasattr(value, "cpu"):
                value = value.cpu()
            value = value.numpy()
        array = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"state_dict[{key!r}] could not be converted to a NumPy array "
                        f"({type(value).__name__}): {exc}") from exc
    if array.dtype.kind not in "fiu":
        raise TypeError(f"state_dict[{key!r}] must hold real numbers, got dtype {array.dtype} "
                        f"(shape {array.shape})")
    return array


def _check_mapping(state_dict: Any) -> None:
    """A TypeError unless ``state_dict`` is a mapping; a model passed in its
    place (a torch module, a fastrnn.RNN) is told what to call instead."""
    if isinstance(state_dict, Mapping):
        return
    if isinstance(state_dict, RNN):
        raise TypeError("state_dict must be a mapping of names to arrays, got a fastrnn.RNN "
                        "model: pass its rnn.state_dict()")
    if hasattr(state_dict, "state_dict"):
        name = type(state_dict).__name__
        raise TypeError(
            f"state_dict must be a mapping of names to arrays, got the model itself "
            f"({name}): for a torch.nn.RNN call fastrnn.RNN.from_torch(module), which "
            f"also reads nonlinearity and batch_first from it, or pass "
            f"module.state_dict() (from_state_dict(module.state_dict(), "
            f"nonlinearity=..., batch_first=...))"
        )
    raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                    f"{_describe(state_dict)}")


def _torch_dtype(module: Any) -> np.dtype:
    """The float32/float64 dtype all of a torch module's parameters share, or
    a TypeError saying how to convert the module."""
    names = sorted({str(parameter.dtype) for parameter in module.parameters()})
    if names == ["torch.float32"]:
        return np.dtype(np.float32)
    if names == ["torch.float64"]:
        return np.dtype(np.float64)
    raise TypeError(f"the module's parameters must all be float32 or all float64, got "
                    f"{', '.join(names) or 'none'}; convert it with module.float() or "
                    f"module.double()")


def _param_names(num_layers: int, num_directions: int, bias: bool) -> list[str]:
    """PyTorch's parameter names in PyTorch's order."""
    names = []
    for layer in range(num_layers):
        for direction in range(num_directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            names += [f"weight_ih{suffix}", f"weight_hh{suffix}"]
            if bias:
                names += [f"bias_ih{suffix}", f"bias_hh{suffix}"]
    return names


class RNN:
    """A multi-layer Elman RNN with PyTorch's ``nn.RNN`` semantics, run with
    fastrnn's kernels on NumPy arrays.

    For each layer and direction, at every step t::

        h_t = act(x_t @ weight_ih.T + bias_ih + h_{t-1} @ weight_hh.T + bias_hh)

    Layer 0 reads the input; each later layer reads the previous layer's full
    output. A bidirectional layer also runs a second set of weights over each
    sequence in reverse (from its last valid step back to its first) and
    concatenates the two outputs (forward first), or adds them with
    ``merge="sum"``.

    Unlike ``torch.nn.RNN``, ``batch_first`` defaults to True (as in
    :func:`fastrnn.forward`): pass ``batch_first=False`` for PyTorch's (T, B, I)
    layout. There is no dropout (this is a forward pass for inference).

    Parameters
    ----------
    input_size : int
        Features of the input, I.
    hidden_size : int
        Features of the hidden state, H.
    num_layers : int
        Stacked layers, L (default 1).
    nonlinearity : {"tanh", "relu"}
        The activation ``act``.
    bias : bool
        Whether the layers have ``bias_ih`` and ``bias_hh``.
    batch_first : bool
        Whether x and the output are (B, T, ...) (default) or (T, B, ...).
    bidirectional : bool
        Whether each layer also runs in reverse; D = 2 directions if so, else 1.
    merge : {"concat", "sum"}
        How a bidirectional layer combines its directions: ``"concat"`` (as
        PyTorch: 2H features) or ``"sum"`` (as oneDNN's ``bidirectional_sum``
        and Keras' ``merge_mode="sum"``: H features). It applies to every
        layer, so with ``"sum"`` the layers after the first read H features,
        not 2H. Ignored when not bidirectional.
    dtype : float32 or float64
        The dtype of the weights, of the input the model accepts and of its
        results (default float32).
    seed : int, numpy.random.Generator or None
        Seed of the initial weights, all drawn as PyTorch does from
        U(-1/sqrt(H), 1/sqrt(H)) (same seed, same weights; not PyTorch's
        numbers). None draws fresh entropy.
    backend : {"auto", "numba", "numpy"}
        The default backend of every call.

    Attributes
    ----------
    num_directions : int
        D: 2 when bidirectional, else 1.
    output_size : int
        Features of the output: D * H, or H with ``merge="sum"``.

    Notes
    -----
    Weights use PyTorch's names and shapes: :meth:`from_torch` reads a
    ``torch.nn.RNN`` module (settings and weights), :meth:`state_dict`
    returns the weights, :meth:`load_state_dict` and :meth:`from_state_dict`
    accept ``torch.nn.RNN(...).state_dict()`` (tensors or arrays) without
    importing torch, and :meth:`save` / :meth:`load` keep weights and
    configuration in one ``.npz`` file.

    Examples
    --------
    >>> import numpy as np
    >>> import fastrnn
    >>> rnn = fastrnn.RNN(4, 8, num_layers=2, bidirectional=True, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((3, 5, 4), dtype=np.float32)
    >>> output, h_n = rnn(x, lengths=np.array([5, 2, 0]))  # (B, T, I) in
    >>> output.shape, h_n.shape, output.dtype
    ((3, 5, 16), (4, 3, 8), dtype('float32'))
    >>> bool((output[1, 2:] == 0).all())  # past each sequence's length: zeros
    True
    >>> sorted(rnn.state_dict())[:2]
    ['bias_hh_l0', 'bias_hh_l0_reverse']
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = True,
        bidirectional: bool = False,
        merge: str = "concat",
        dtype: DTypeLike = np.float32,
        seed: int | np.random.Generator | np.random.SeedSequence | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        self._input_size = _positive_int("input_size", input_size)
        self._hidden_size = _positive_int("hidden_size", hidden_size)
        self._num_layers = _positive_int("num_layers", num_layers)
        self._nonlinearity = _choice("nonlinearity", nonlinearity, NONLINEARITIES)
        self._bias = _bool("bias", bias)
        self._batch_first = _bool("batch_first", batch_first)
        self._bidirectional = _bool("bidirectional", bidirectional)
        self._merge = _choice("merge", merge, MERGES)
        self._dtype = _float_dtype(dtype)
        self._backend = _backend(backend)
        self._params: dict[str, np.ndarray] = {}
        # backend -> one prepared fastrnn.Layer per layer and direction, in
        # h0's order; made on first use, dropped when the weights change.
        self._layers: dict[str, list[Layer]] = {}
        if seed is _NO_INIT:
            return  # from_state_dict / load fill the weights in
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"seed must be None, an int, a SeedSequence or a "
                            f"numpy.random.Generator, got {_describe(seed)}: {exc}") from exc
        bound = 1.0 / np.sqrt(self._hidden_size)
        for name, shape in self._shapes().items():
            draw = rng.uniform(-bound, bound, shape)
            self._params[name] = np.ascontiguousarray(draw, dtype=self._dtype)

    # -- configuration (read-only: a new architecture is a new model) ----------

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def hidden_size(self) -> int:
        return self._hidden_size

    @property
    def num_layers(self) -> int:
        return self._num_layers

    @property
    def nonlinearity(self) -> str:
        return self._nonlinearity

    @property
    def bias(self) -> bool:
        return self._bias

    @property
    def batch_first(self) -> bool:
        return self._batch_first

    @property
    def bidirectional(self) -> bool:
        return self._bidirectional

    @property
    def merge(self) -> str:
        return self._merge

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def num_directions(self) -> int:
        return 2 if self._bidirectional else 1

    @property
    def output_size(self) -> int:
        if self._bidirectional and self._merge == "concat":
            return 2 * self._hidden_size
        return self._hidden_size

    def _config(self) -> dict[str, Any]:
        return {
            "input_size": self._input_size,
            "hidden_size": self._hidden_size,
            "num_layers": self._num_layers,
            "nonlinearity": self._nonlinearity,
            "bias": self._bias,
            "batch_first": self._batch_first,
            "bidirectional": self._bidirectional,
            "merge": self._merge,
            "dtype": self._dtype.name,
        }

    def __repr__(self) -> str:
        extras = [f"num_layers={self._num_layers}"] if self._num_layers != 1 else []
        defaults = {"nonlinearity": "tanh", "bias": True, "batch_first": True,
                    "bidirectional": False, "merge": "concat", "dtype": "float32"}
        config = self._config()
        extras += [f"{key}={config[key]!r}" for key, default in defaults.items()
                   if config[key] != default and not (key == "merge" and not self._bidirectional)]
        return f"RNN({', '.join([str(self._input_size), str(self._hidden_size)] + extras)})"

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter's name and shape, in PyTorch's order."""
        hidden = self._hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
        for name in _param_names(self._num_layers, self.num_directions, self._bias):
            layer = int(_KEY_PATTERN.match(name).group(2))  # type: ignore[union-attr]
            if name.startswith("weight_ih"):
                fan_in = self._input_size if layer == 0 else self.output_size
                shapes[name] = (hidden, fan_in)
            elif name.startswith("weight_hh"):
                shapes[name] = (hidden, hidden)
            else:
                shapes[name] = (hidden,)
        return shapes

    # -- the forward pass --------------------------------------------------------

    def forward(
        self,
        x: ArrayLike,
        h0: ArrayLike | None = None,
        lengths: ArrayLike | None = None,
        out: np.ndarray | None = None,
        *,
        threads: int | None = None,
        backend: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the model over a batch of sequences (also ``rnn(x, ...)``).

        Parameters
        ----------
        x : array, shape (B, T, I) if ``batch_first``, (T, B, I) if not, or (T, I)
            The input sequences, of the model's dtype; (T, I) is one unbatched
            sequence (``batch_first`` then does not apply, as in PyTorch).
        h0 : array, shape (L * D, B, H), or (L * D, H) for unbatched x, optional
            Initial hidden state of each layer and direction, layer-major with
            the reverse direction second (PyTorch's order); zeros when None.
        lengths : integer array, shape (B,), optional
            Valid steps of each sequence, 0 <= length <= T, in any order: as
            PyTorch's ``pack_padded_sequence(..., enforce_sorted=False)`` on
            the padded batch. Outputs at t >= length are zero, h_n holds each
            sequence's state after its last valid step, and the reverse
            direction starts at that step. Length 0 (refused by PyTorch) gives
            zero output and h_n = h0. The work done is proportional to
            sum(lengths). None means every sequence has T steps.
        out : ndarray, optional
            C-contiguous, writeable array of the output's exact shape and
            dtype, sharing no memory with x or h0; the output is written into
            it and it is returned.
        threads : int, optional
            The most threads a kernel call uses (default: FASTRNN_NUM_THREADS,
            else the cores this process may use).
        backend : {"auto", "numba", "numpy"}, optional
            Overrides the model's backend for this call.

        Returns
        -------
        output : ndarray, shape (B, T, F), (T, B, F) or (T, F), like x
            The last layer's hidden states, F = ``output_size`` features
            (forward direction first when concatenated).
        h_n : ndarray, shape (L * D, B, H), or (L * D, H) for unbatched x
            The final hidden state of each layer and direction, ordered as h0.

        Raises
        ------
        TypeError
            When x or h0 is not of the model's dtype, or lengths not integers.
        ValueError
            When a shape disagrees with the model or x, a length is out of
            range, ``out`` is unsuitable or an option is unknown.
        """
        dtype = self._dtype
        if (type(x) is np.ndarray and x.dtype is dtype and x.ndim == 3 and self._batch_first
                and not self._bidirectional and lengths is None and out is None
                and threads is None and backend is None
                and (h0 is None or (type(h0) is np.ndarray and h0.dtype is dtype
                                    and h0.shape == (self._num_layers, x.shape[0],
                                                     self._hidden_size)))):
            # A stream's chunk (batch first, one direction, every sequence
            # whole): each layer's own call, whose plain call of a shape met
            # before is a few checks and the compiled call (fastrnn.Layer;
            # the general path below cost a float32 one-layer model, H = 64,
            # 6.5 us more a call). The same results, checked there.
            layers = self._prepared(self._backend)
            h_n = np.empty((self._num_layers, x.shape[0], self._hidden_size), dtype)
            layer_input = x
            for k, prepared in enumerate(layers):
                layer_input, h_n[k] = prepared(layer_input, None if h0 is None else h0[k])
            return layer_input, h_n
        x_arr = as_float_array("x", x)
        if x_arr.dtype != dtype:
            raise TypeError(
                f"x must have the model's dtype {dtype}, got {x_arr.dtype} (shape "
                f"{x_arr.shape}); convert it with x.astype(np.{dtype.name}) or use "
                f"rnn.astype(np.{x_arr.dtype.name})"
            )
        x_shape = x_arr.shape
        unbatched = x_arr.ndim == 2
        if unbatched:
            x_arr = x_arr[np.newaxis]  # (1, T, I): one batch-first sequence
            batch_first = True
        elif x_arr.ndim == 3:
            batch_first = self._batch_first
        else:
            layout = "(batch, time, input)" if self._batch_first else "(time, batch, input)"
            raise ValueError(f"x must be 3-D {layout} or 2-D (time, input) unbatched; "
                             f"got shape {x_shape}")
        n1, n2, features = x_arr.shape
        if features != self._input_size:
            raise ValueError(f"x must have {self._input_size} features (input_size) on its "
                             f"last axis, got shape {x_shape}")
        batch, steps = (n1, n2) if batch_first else (n2, n1)
        hidden = self._hidden_size
        directions = self.num_directions
        states = self._num_layers * directions

        h0_arr = None
        if h0 is not None:
            h0_arr = as_float_array("h0", h0)
            if h0_arr.dtype != dtype:
                raise TypeError(f"h0 must have the model's dtype {dtype}, got {h0_arr.dtype} "
                                f"(shape {h0_arr.shape})")
            expected = (states, hidden) if unbatched else (states, batch, hidden)
            if h0_arr.shape != expected:
                meaning = ("(num_layers * num_directions, hidden_size) for unbatched x"
                           if unbatched else
                           "(num_layers * num_directions, batch, hidden_size)")
                raise ValueError(f"h0 must have shape {expected} {meaning} for x of shape "
                                 f"{x_shape}, got {h0_arr.shape}")
            if unbatched:
                h0_arr = h0_arr[:, np.newaxis]

        lengths_arr = None
        if lengths is not None:
            if unbatched and np.ndim(lengths) == 0:
                lengths = np.reshape(lengths, (1,))
            lengths_arr = validate_lengths(lengths, batch, steps)
        if threads is not None:
            check_threads(threads)
        backend = self._backend if backend is None else _backend(backend)

        output_shape = (n1, n2, self.output_size)
        final = None
        if out is not None:
            _check_out(out, output_shape[1:] if unbatched else output_shape, dtype,
                       {"x": np.asarray(x), "h0": None if h0 is None else np.asarray(h0)})
            final = out.reshape(output_shape) if unbatched else out

        h_n = np.empty((states, batch, hidden), dtype)
        scratch = None
        if directions == 2 and self._merge == "sum":
            scratch = np.empty((n1, n2, hidden), dtype)
        layers = self._prepared(backend)
        layer_input = x_arr
        for layer in range(self._num_layers):
            last = layer == self._num_layers - 1
            buffer = final if last and final is not None else np.empty(output_shape, dtype)
            for direction in range(directions):
                col = 0
                if directions == 1 or (scratch is not None and direction == 0):
                    target = buffer
                elif scratch is not None:  # merge="sum": the reverse direction, added below
                    target = scratch
                else:  # this direction's half of the concatenated features
                    target, col = buffer, hidden * direction
                k = layer * directions + direction
                layers[k].run(layer_input, None if h0_arr is None else h0_arr[k], target,
                              h_n[k], batch_first=batch_first, lengths=lengths_arr,
                              reverse=bool(direction), threads=threads, col=col)
            if scratch is not None:
                np.add(buffer, scratch, out=buffer)
            layer_input = buffer

        output = out if out is not None else (layer_input[0] if unbatched else layer_input)
        return output, (h_n[:, 0] if unbatched else h_n)

    __call__ = forward

    def _prepared(self, backend: str) -> list[Layer]:
        """The model's layers and directions prepared for ``backend`` (once
        per set of weights: packing them again on every call cost more than
        a short call's arithmetic)."""
        layers = self._layers.get(backend)
        if layers is None:
            layers = []
            for layer in range(self._num_layers):
                for direction in range(self.num_directions):
                    suffix = f"_l{layer}_reverse" if direction else f"_l{layer}"
                    layers.append(Layer(
                        self._params["weight_ih" + suffix], self._params["weight_hh" + suffix],
                        self._params.get("bias_ih" + suffix),
                        self._params.get("bias_hh" + suffix),
                        nonlinearity=self._nonlinearity, backend=backend))
            self._layers[backend] = layers  # concurrent first calls: the same layers
        return layers

    # -- weights -------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the weights under PyTorch's names (``weight_ih_l0``,
        ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse``, for
        every layer), in PyTorch's order; ``torch.nn.RNN.load_state_dict``
        accepts it once the values are tensors (``torch.from_numpy``)."""
        return {name: value.copy() for name, value in self._params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace every weight by a copy of ``state_dict``'s, cast to the
        model's dtype.

        Parameters
        ----------
        state_dict : mapping of str to array-like
            Exactly the keys and shapes :meth:`state_dict` returns, e.g. a
            ``torch.nn.RNN(...).state_dict()`` of the same architecture.
            Values may be NumPy arrays, tensors (converted through
            ``.detach().cpu().numpy()``; torch is never imported) or anything
            ``np.asarray`` accepts.

        Raises
        ------
        KeyError
            When a key is missing or unexpected (naming them).
        ValueError
            When a value's shape is wrong (naming the key and both shapes).
        TypeError
            When a value is not an array of real numbers.

        The model is unchanged when anything is wrong.
        """
        _check_mapping(state_dict)
        shapes = self._shapes()
        missing = [name for name in shapes if name not in state_dict]
        unexpected = [key for key in state_dict if key not in shapes]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"state_dict does not match {self!r}: {' and '.join(parts)}; "
                           f"expected exactly {list(shapes)}")
        loaded = {}
        for name, shape in shapes.items():
            array = _to_numpy(name, state_dict[name])
            if array.shape != shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {shape} for {self!r}, "
                                 f"got {array.shape}")
            loaded[name] = np.array(array, dtype=self._dtype, order="C", copy=True)
        self._params = loaded
        self._layers = {}  # prepared again, from the new weights, on the next call

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        *,
        nonlinearity: str,
        batch_first: bool,
        merge: str = "concat",
        dtype: DTypeLike | None = None,
        backend: str = "auto",
    ) -> RNN:
        """A model holding ``state_dict``'s weights, e.g. those of a
        ``torch.nn.RNN`` (for a torch module, :meth:`from_torch` reads every
        setting from the module itself).

        The number of layers, ``input_size``, ``hidden_size``, ``bias`` and
        ``bidirectional`` are read from the keys and shapes (PyTorch's names,
        as :meth:`state_dict` returns them). What a state dict cannot hold is
        passed here, and is required: a guess would give outputs of the right
        shape and the wrong values (PyTorch's default is ``batch_first=False``,
        fastrnn's True). With ``dtype=None`` the model is float64 if any
        weight is float64, else float32. Then every key and shape is checked
        as in :meth:`load_state_dict`.

        Parameters
        ----------
        state_dict : mapping of str to array-like
            PyTorch's parameter names (``weight_ih_l0``, ...) to arrays or
            tensors (converted without importing torch).
        nonlinearity : {"tanh", "relu"}
            The model's activation (``module.nonlinearity`` in PyTorch).
        batch_first : bool
            The layout of x and the output (``module.batch_first`` in PyTorch).
        merge : {"concat", "sum"}
            How a bidirectional layer combines its directions (see :class:`RNN`).
        dtype : float32, float64 or None
            The model's dtype; None infers it from the weights.
        backend : {"auto", "numba", "numpy"}
            The default backend of every call.

        Raises
        ------
        TypeError
            When ``state_dict`` is not a mapping (a model passed in its place
            is told what to call instead), or a value is not real numbers.
        KeyError
            When a key is missing or not one of PyTorch's ``nn.RNN`` names.
        ValueError
            When a shape disagrees with the architecture the keys describe, or
            an option is unknown.

        Examples
        --------
        >>> import numpy as np
        >>> import fastrnn
        >>> weights = fastrnn.RNN(4, 8, num_layers=2, seed=0).state_dict()
        >>> rnn = fastrnn.RNN.from_state_dict(weights, nonlinearity="tanh", batch_first=True)
        >>> rnn
        RNN(4, 8, num_layers=2)
        """
        _check_mapping(state_dict)
        unknown = [key for key in state_dict
                   if not isinstance(key, str) or _KEY_PATTERN.match(key) is None]
        if unknown:
            raise KeyError(f"state_dict has unexpected keys {unknown}: expected PyTorch's "
                           "nn.RNN names such as 'weight_ih_l0', 'bias_hh_l1_reverse'")
        if "weight_ih_l0" not in state_dict:
            raise KeyError(f"state_dict is missing key 'weight_ih_l0' (the first layer's "
                           f"input weights); its keys are {list(state_dict)}")
        arrays = {key: _to_numpy(key, value) for key, value in state_dict.items()}
        first = arrays["weight_ih_l0"]
        if first.ndim != 2 or 0 in first.shape:
            raise ValueError(f"state_dict['weight_ih_l0'] must be 2-D (hidden_size, "
                             f"input_size) with both positive, got shape {first.shape}")
        hidden_size, input_size = first.shape
        num_layers = 1 + max(int(_KEY_PATTERN.match(key).group(2))  # type: ignore[union-attr]
                             for key in arrays)
        bidirectional = any(key.endswith("_reverse") for key in arrays)
        bias = any(key.startswith("bias") for key in arrays)
        if dtype is None:
            dtype = (np.float64 if any(a.dtype == np.float64 for a in arrays.values())
                     else np.float32)
        model = cls(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first,
                    bidirectional, merge, dtype, _NO_INIT, backend=backend)
        model.load_state_dict(arrays)
        return model

    @classmethod
    def from_torch(cls, module: Any, *, backend: str = "auto") -> RNN:
        """The model of a ``torch.nn.RNN`` module: its settings and a copy of
        its weights.

        Everything is read from the module: ``input_size``, ``hidden_size``,
        ``num_layers``, ``nonlinearity``, ``bias``, ``batch_first``,
        ``bidirectional``, and the dtype of its parameters (float32 or
        float64, on any device). ``dropout`` (between layers, in training
        only) does not apply to inference and is ignored. torch is not
        imported here: a torch module means torch is already loaded.

        Parameters
        ----------
        module : torch.nn.RNN
            The PyTorch model (or a subclass of ``nn.RNN``).
        backend : {"auto", "numba", "numpy"}
            The default backend of every call.

        Raises
        ------
        TypeError
            When ``module`` is not a ``torch.nn.RNN`` (for one layer of an
            ``nn.LSTM`` or ``nn.GRU``, the message names the
            ``fastrnn.prepare_lstm``/``prepare_gru`` call), or its parameters are not all
            float32 or all float64.
        ValueError
            When the module has ``proj_size != 0`` (an LSTM-only option).

        Examples
        --------
        >>> import numpy as np, torch
        >>> import fastrnn
        >>> model = torch.nn.RNN(4, 8, num_layers=2, nonlinearity="relu").double()
        >>> rnn = fastrnn.RNN.from_torch(model)
        >>> rnn
        RNN(4, 8, num_layers=2, nonlinearity='relu', batch_first=False, dtype='float64')
        >>> x = np.random.default_rng(0).standard_normal((5, 3, 4))  # (T, B, I) as in torch
        >>> with torch.no_grad():
        ...     expected, _ = model(torch.from_numpy(x))
        >>> bool(np.allclose(rnn(x)[0], expected.numpy(), rtol=1e-12, atol=1e-12))
        True
        """
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.RNN, got {_describe(module)}; for a "
                            f"state dict call fastrnn.RNN.from_state_dict(state_dict, "
                            f"nonlinearity=..., batch_first=...)")
        if not isinstance(module, torch.nn.RNN):
            kind = type(module).__name__
            if isinstance(module, torch.nn.RNNBase):  # nn.LSTM, nn.GRU
                prepare = f"fastrnn.prepare_{kind.lower()}"
                raise TypeError(f"module must be a torch.nn.RNN, got torch.nn.{kind}: "
                                f"fastrnn.RNN is the Elman RNN; for one layer of one "
                                f"direction call {prepare}(*(p.detach().numpy() for p in "
                                f"(module.weight_ih_l0, module.weight_hh_l0, "
                                f"module.bias_ih_l0, module.bias_hh_l0))) (several layers or "
                                f"directions are not supported yet)")
            raise TypeError(f"module must be a torch.nn.RNN, got {kind}; for an nn.RNN inside "
                            f"a larger model pass that submodule (e.g. model.rnn)")
        # torch's own constructor refuses proj_size for nn.RNN; a module
        # changed afterwards would hold weight_hr_l* that fastrnn cannot run.
        proj_size = getattr(module, "proj_size", 0)
        if proj_size:
            raise ValueError(f"module has proj_size={proj_size}: projections (an LSTM option) "
                             f"are not supported; only proj_size=0")
        model = cls(module.input_size, module.hidden_size, module.num_layers,
                    module.nonlinearity, module.bias, module.batch_first,
                    module.bidirectional, "concat", _torch_dtype(module), _NO_INIT,
                    backend=backend)
        # Parameters by attribute rather than module.state_dict(): the
        # effective weights also when a parametrisation (e.g. weight norm)
        # computes them from others.
        model.load_state_dict({name: getattr(module, name) for name in model._shapes()})
        return model

    def astype(self, dtype: DTypeLike) -> RNN:
        """A copy of the model with weights (and so inputs and results) of
        ``dtype``, float32 or float64."""
        model = type(self)(**self._config() | {"dtype": dtype}, seed=_NO_INIT,
                           backend=self._backend)
        model.load_state_dict(self._params)
        return model

    # -- files ---------------------------------------------------------------------

    def save(self, file: str | os.PathLike[str] | IO[bytes]) -> None:
        """Write the weights (under :meth:`state_dict`'s names) and the
        configuration (a JSON string) to one ``.npz`` file, exactly at the
        path given (no suffix is added), or to an open binary file.
        Nothing is pickled: ``np.load(file, allow_pickle=False)`` reads it.
        """
        config = json.dumps({"format": _FORMAT_VERSION, **self._config()})
        arrays: dict[str, Any] = {_CONFIG_KEY: np.array(config), **self._params}
        # No object arrays, hence no pickles (savez's allow_pickle= is NumPy 2 only).
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as handle:
                np.savez(handle, **arrays)
        else:
            np.savez(file, **arrays)

    @classmethod
    def load(cls, file: str | os.PathLike[str] | IO[bytes], *, backend: str = "auto") -> RNN:
        """The model :meth:`save` wrote to ``file`` (read with
        ``allow_pickle=False``).

        The file is not trusted: its configuration is checked (a JSON object
        of exactly :meth:`save`'s keys, each of the right type and range)
        against the names of the arrays actually in the file, before any
        model is built or any weight read; then each weight's shape.

        Raises
        ------
        ValueError
            When ``file`` is not such a file, naming it and what is wrong.
        """
        data = np.load(file, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{file!r} is not a fastrnn.RNN file: it holds one array "
                             f"(shape {np.shape(data)}), not an .npz archive as RNN.save writes")
        with data:
            if _CONFIG_KEY not in data.files:
                raise ValueError(f"{file!r} is not a fastrnn.RNN file (an .npz with a "
                                 f"{_CONFIG_KEY!r} entry, as RNN.save writes)")
            names = [name for name in data.files if name != _CONFIG_KEY]
            config = _file_config(file, data[_CONFIG_KEY], names)
            try:
                weights = {name: data[name] for name in names}
            except ValueError as exc:  # e.g. an object array, refused unpickled
                raise ValueError(f"{file!r}: unreadable fastrnn.RNN weights: {exc}") from exc
        model = cls(**config, seed=_NO_INIT, backend=backend)
        try:
            model.load_state_dict(weights)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{file!r}: weights that do not fit the configuration: "
                             f"{exc.args[0]}") from exc
        return model

    # -- ONNX (the optional [onnx] extra; fastrnn/_onnx.py) ----------------------

    @classmethod
    def from_onnx(cls, model_or_path: Any, *, backend: str = "auto") -> RNN:
        """A model computing what an ONNX graph of ``RNN`` nodes computes.

        The graph holds one ONNX ``RNN`` node per layer, each reading the
        graph input (the first) or the previous node's output ``Y`` through
        the plumbing ``torch.onnx.export(..., dynamo=False)`` writes, as
        :meth:`to_onnx` writes it or as built by hand: directions forward,
        reverse or bidirectional, activations Tanh or Relu, with or without
        ``B``, ``sequence_lens`` and ``initial_h``, ``layout`` 0 or 1, weights
        as initializers or Constant nodes. ONNX's ``W``, ``R`` and
        ``B = [Wb, Rb]`` are PyTorch's ``weight_ih``, ``weight_hh``,
        ``bias_ih`` and ``bias_hh``, one per direction. Needs the onnx
        package: ``pip install "fastrnn[onnx]"``.

        Parameters
        ----------
        model_or_path : onnx.ModelProto, str, os.PathLike or bytes
            The model, the path of a ``.onnx`` file or its bytes.
        backend : {"auto", "numba", "numpy"}
            The model's default backend.

        Returns
        -------
        RNN
            ``num_layers`` is the number of RNN nodes; ``batch_first`` is the
            layout of the graph input X as it reaches the first node (the
            input itself with ``layout=1``, or transposed into ``layout=0``),
            so the model takes the x the graph takes; ``bias`` is True if any
            node has B (zeros for the others); ``merge`` is ``"sum"`` when the
            graph adds the directions (a ReduceSum over Y's directions axis),
            else ``"concat"``; ``dtype`` is W's. The model returns its own
            ``(output, h_n)`` (h0 and h_n in PyTorch's (L * D, B, H) layout,
            whatever layout the graph uses); the graph's outputs may be any
            arrangement of the last node's Y and the nodes' Y_h.

        Raises
        ------
        ValueError
            Naming the node and attribute or input, for what fastrnn.RNN
            cannot compute: an activation other than Tanh or Relu, different
            activations per direction or per node, ``clip``,
            ``activation_alpha``/``activation_beta``, different hidden sizes,
            bidirectional and one-way nodes mixed, W/R/B computed at run time,
            ``initial_h``/``sequence_lens`` that are nonzero constants or
            computed from an RNN output, an X that is not the graph input or
            the previous Y merged (forward first, or summed), a graph output
            computed from anything else, or an op other than RNN and the
            plumbing ``Cast``, ``Concat``, ``Constant``, ``ConstantOfShape``,
            ``Expand``, ``Gather``, ``Identity``, ``ReduceSum`` (over Y's directions),
            ``Reshape``, ``Shape``, ``Slice``, ``Squeeze``, ``Transpose``,
            ``Unsqueeze``.
        ImportError
            When onnx is not installed.

        Notes
        -----
        fastrnn.RNN runs a reverse direction only inside a bidirectional
        layer, so a graph of one-way nodes with a ``direction="reverse"``
        imports as a bidirectional model, ``merge="sum"``, whose missing
        direction in each layer has zero weights (its output ``act(0) = 0``
        adds nothing: exact for finite inputs, at twice the work). Its h0 and
        h_n then have 2 rows per layer, layer-major, forward first.
        ``torch.onnx.export(..., dynamo=True)`` unrolls ``nn.RNN`` into
        matrix products, which this does not read: export with
        ``dynamo=False``. A module that packs its input with
        ``pack_padded_sequence(..., enforce_sorted=True)`` exports its
        lengths as ``sequence_lens`` and imports; ``enforce_sorted=False``
        sorts the batch with a ``TopK``, which does not.
        """
        from ._onnx import from_onnx

        return from_onnx(cls, model_or_path, backend=backend)

    def to_onnx(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        h0: bool = False,
        lengths: bool = False,
    ) -> Any:
        """Export the model as an ONNX graph of one ``RNN`` node per layer.

        Graph inputs: ``X`` in the model's layout ((batch, time, input) if
        ``batch_first``, else (time, batch, input)), and, if asked,
        ``initial_h`` ((L * D, batch, H), PyTorch's h0) and ``sequence_lens``
        (int32, (batch,), every length >= 1). Outputs: ``Y``, the model's
        output in its layout, and ``Y_h``, its h_n ((L * D, batch, H)). The
        nodes use ``layout=0`` (ONNX Runtime refuses ``layout=1``), with
        Transposes around them for a batch-first model; between layers a
        bidirectional layer's Y is transposed and reshaped (``merge="concat"``,
        as torch.onnx.export writes it) or summed over its directions with a
        ReduceSum (``merge="sum"``). Opset 17, IR version 8; batch and time
        are dynamic. Needs the onnx package: ``pip install "fastrnn[onnx]"``.

        ONNX Runtime runs the ONNX RNN operator in float32 only: a float64
        model exports as valid ONNX (read back by :meth:`from_onnx`) that
        ONNX Runtime refuses to load.

        Parameters
        ----------
        path : str, os.PathLike or None
            Where to write the ``.onnx`` file; None writes nothing.
        h0 : bool
            Whether the graph takes an ``initial_h`` input (else zeros).
        lengths : bool
            Whether the graph takes a ``sequence_lens`` input (else every
            sequence has all T steps). ONNX Runtime gives zeros in Y_h for a
            length 0 where fastrnn gives h0.

        Returns
        -------
        onnx.ModelProto
            The model written (checked with ``onnx.checker``).
        """
        from ._onnx import to_onnx

        return to_onnx(self, path, h0=h0, lengths=lengths)


# What RNN.save writes in its configuration besides "format", and the check
# of each value (JSON gives int, bool and str).
_CONFIG_CHECKS: dict[str, Any] = {
    "input_size": lambda value: type(value) is int and value >= 1,
    "hidden_size": lambda value: type(value) is int and value >= 1,
    "num_layers": lambda value: type(value) is int and value >= 1,
    "nonlinearity": lambda value: value in NONLINEARITIES,
    "bias": lambda value: type(value) is bool,
    "batch_first": lambda value: type(value) is bool,
    "bidirectional": lambda value: type(value) is bool,
    "merge": lambda value: value in MERGES,
    "dtype": lambda value: value in ("float32", "float64"),
}
_CONFIG_EXPECTED = {
    "input_size": "an int >= 1", "hidden_size": "an int >= 1", "num_layers": "an int >= 1",
    "nonlinearity": f"one of {NONLINEARITIES}", "bias": "true or false",
    "batch_first": "true or false", "bidirectional": "true or false",
    "merge": f"one of {MERGES}", "dtype": "'float32' or 'float64'",
}


def _listing(items: list[Any], most: int = 10) -> str:
    # A list for a message, cut short: a crafted file may name millions.
    if len(items) <= most:
        return str(items)
    return f"{items[:most]} and {len(items) - most} more"


def _file_config(file: Any, entry: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The configuration of a file :meth:`RNN.save` wrote, checked: its JSON
    entry an object of exactly the keys save writes, each value of the right
    type and range, and num_layers, bidirectional and bias those of the
    weight arrays the file holds (``names``). A ValueError naming ``file``
    and the first problem; nothing is built before it passes."""
    def bad(problem: str) -> ValueError:
        return ValueError(f"{file!r}: bad fastrnn.RNN configuration: {problem}")

    if entry.ndim != 0 or entry.dtype.kind != "U":
        raise bad(f"{_CONFIG_KEY!r} must be one JSON string, got an array of shape "
                  f"{entry.shape} and dtype {entry.dtype}")
    try:
        config = json.loads(str(entry[()]))
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested JSON
        raise ValueError(f"{file!r}: unreadable fastrnn.RNN configuration: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(config, dict):
        raise bad(f"it must be a JSON object, got a JSON {type(config).__name__}")
    if "format" not in config:
        raise bad("it has no 'format' entry")
    version = config.pop("format")
    if type(version) is not int or version != _FORMAT_VERSION:
        raise ValueError(f"{file!r} has fastrnn.RNN file format {version!r:.100}; this version "
                         f"reads format {_FORMAT_VERSION}")
    missing = [key for key in _CONFIG_CHECKS if key not in config]
    unknown = [key for key in config if key not in _CONFIG_CHECKS]
    if missing or unknown:
        parts = ([f"missing keys {missing}"] if missing else []) + (
            [f"unknown keys {_listing(unknown)}"] if unknown else [])
        raise bad(f"{' and '.join(parts)}; expected exactly {list(_CONFIG_CHECKS)}")
    for key, check in _CONFIG_CHECKS.items():
        value = config[key]
        if not check(value):
            raise bad(f"{key} must be {_CONFIG_EXPECTED[key]}, got {value!r:.100}")

    # The weights the file holds, by their names alone (nothing read yet):
    # a count checked before any list of expected names is built, so that a
    # huge num_layers costs nothing.
    matches = [_KEY_PATTERN.match(name) for name in names]
    strays = [name for name, match in zip(names, matches, strict=True) if match is None]
    if strays:
        raise bad(f"the file holds arrays that are not nn.RNN weights: {_listing(strays)}")
    layers = sorted({int(match.group(2)) for match in matches if match is not None})
    if layers != list(range(config["num_layers"])):
        raise bad(f"num_layers is {config['num_layers']}, but the file holds the weights of "
                  f"layers {_listing(layers)}")
    for key, present in (("bidirectional", any(name.endswith("_reverse") for name in names)),
                         ("bias", any(name.startswith("bias") for name in names))):
        if config[key] != present:
            raise bad(f"{key} is {str(config[key]).lower()}, but the file holds "
                      f"{'' if present else 'no '}{key} weights")
    expected = _param_names(config["num_layers"], 2 if config["bidirectional"] else 1,
                            config["bias"])
    stored = set(names)
    missing = [name for name in expected if name not in stored]
    if missing:
        raise bad(f"the file lacks the weights {_listing(missing)}")
    return config


class _NoInit:
    """Sentinel seed: construct without drawing weights (they are loaded next)."""

    def __repr__(self) -> str:
        return "<no init>"


_NO_INIT: Any = _NoInit()
