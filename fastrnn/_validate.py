"""Validation shared by every entry point: one place that turns user arguments
into the arrays every backend expects, or raises a clear error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
NONLINEARITIES = ("tanh", "relu")


@dataclass(frozen=True)
class Problem:
    """Validated arguments of one forward pass.

    ``x`` keeps the caller's layout; ``seq_axes`` says how to view the output
    (which has x's layout) as (batch, time, hidden).
    """

    x: np.ndarray  # (B, T, I) or (T, B, I), any memory layout
    w_ih: np.ndarray  # (H, I)
    w_hh: np.ndarray  # (H, H)
    bias: np.ndarray | None  # (H,) b_ih + b_hh, or None when both are None
    h0: np.ndarray  # (B, H), C-contiguous, a private copy or zeros
    relu: bool
    batch_first: bool
    unbatched: bool
    out: np.ndarray | None  # validated, (B, T, H) or (T, B, H) like x
    dtype: np.dtype

    @property
    def batch(self) -> int:
        return self.x.shape[0] if self.batch_first else self.x.shape[1]

    @property
    def steps(self) -> int:
        return self.x.shape[1] if self.batch_first else self.x.shape[0]

    @property
    def hidden(self) -> int:
        return self.w_hh.shape[0]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return self.x.shape[:2] + (self.hidden,)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def as_float_array(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as an ndarray (no copy when it already is one) or raise
    a TypeError naming ``name`` when it is not float32/float64."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except Exception as exc:  # e.g. ragged nested lists
            raise TypeError(
                f"{name} must be a float32 or float64 array; could not convert "
                f"{_describe(value)} to an array: {exc}"
            ) from exc
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {array.dtype} "
            f"(shape {array.shape}); convert it, e.g. {name}.astype(np.float32)"
        )
    return array


def check_one_dtype(arrays: dict[str, np.ndarray | None]) -> np.dtype:
    """All given arrays share one dtype: no silent upcast."""
    present = {name: a.dtype for name, a in arrays.items() if a is not None}
    dtypes = set(present.values())
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}={dt}" for name, dt in present.items())
        raise TypeError(
            "all floating arguments must share one dtype (float32 or float64), "
            f"got {listing}; cast them to one dtype, e.g. .astype(np.float32)"
        )
    return dtypes.pop()


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, ...], meaning: str) -> None:
    if array.shape != expected:
        raise ValueError(
            f"{name} must have shape {expected} {meaning}, got {array.shape}"
        )


def validate_forward(
    x: Any,
    w_ih: Any,
    w_hh: Any,
    b_ih: Any,
    b_hh: Any,
    h0: Any,
    nonlinearity: Any,
    batch_first: Any,
    out: Any,
) -> Problem:
    """Check every argument of :func:`fastrnn.forward` and build a Problem."""
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}"
        )
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be a bool, got {_describe(batch_first)}")
    batch_first = bool(batch_first)

    arrays = {
        "x": as_float_array("x", x),
        "w_ih": as_float_array("w_ih", w_ih),
        "w_hh": as_float_array("w_hh", w_hh),
        "b_ih": None if b_ih is None else as_float_array("b_ih", b_ih),
        "b_hh": None if b_hh is None else as_float_array("b_hh", b_hh),
        "h0": None if h0 is None else as_float_array("h0", h0),
    }
    dtype = check_one_dtype(arrays)
    x, w_ih, w_hh = arrays["x"], arrays["w_ih"], arrays["w_hh"]
    b_ih, b_hh, h0 = arrays["b_ih"], arrays["b_hh"], arrays["h0"]

    if x.ndim not in (2, 3):
        raise ValueError(
            "x must be 3-D (batch, time, input) when batch_first, (time, batch, "
            f"input) otherwise, or 2-D (time, input) unbatched; got shape {x.shape}"
        )
    unbatched = x.ndim == 2
    if unbatched:
        # PyTorch ignores batch_first for unbatched input: (T, I) is one sequence.
        x = x[np.newaxis]
        batch_first = True
    input_size = x.shape[2]

    if w_ih.ndim != 2:
        raise ValueError(
            f"w_ih must be 2-D (hidden_size, input_size), got shape {w_ih.shape}"
        )
    hidden = w_ih.shape[0]
    if hidden < 1:
        raise ValueError(f"hidden_size (w_ih.shape[0]) must be at least 1, got shape {w_ih.shape}")
    _check_shape("w_ih", w_ih, (hidden, input_size),
                 f"(hidden_size, input_size) to match x of shape {arrays['x'].shape}")
    _check_shape("w_hh", w_hh, (hidden, hidden),
                 f"(hidden_size, hidden_size) to match w_ih of shape {w_ih.shape}")
    for name, bias in (("b_ih", b_ih), ("b_hh", b_hh)):
        if bias is not None:
            _check_shape(name, bias, (hidden,), f"(hidden_size,) to match w_ih of shape {w_ih.shape}")

    batch = x.shape[0] if batch_first else x.shape[1]
    if h0 is None:
        h0 = np.zeros((batch, hidden), dtype=dtype)
    else:
        expected = (hidden,) if unbatched else (batch, hidden)
        layout = "(hidden_size,)" if unbatched else "(batch, hidden_size)"
        _check_shape("h0", h0, expected, f"{layout} for x of shape {arrays['x'].shape}")
        h0 = np.array(h0.reshape(batch, hidden), dtype=dtype, order="C", copy=True)

    if b_ih is None:
        bias = None if b_hh is None else b_hh
    else:
        bias = b_ih if b_hh is None else b_ih + b_hh

    output_shape = x.shape[:2] + (hidden,)
    if out is not None:
        _check_out(out, output_shape[1:] if unbatched else output_shape, dtype, arrays)
        out = out.reshape(output_shape)  # a view: out is C-contiguous

    return Problem(
        x=x, w_ih=w_ih, w_hh=w_hh, bias=bias, h0=h0,
        relu=nonlinearity == "relu", batch_first=batch_first, unbatched=unbatched,
        out=out, dtype=dtype,
    )


def _check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype,
               inputs: dict[str, np.ndarray | None]) -> None:
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a NumPy array, got {_describe(out)}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out must have shape {shape} and dtype {dtype} (the output's), "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous (shape {out.shape}, strides {out.strides}); "
                         "pass np.empty(shape, dtype) or np.ascontiguousarray(out)")
    if not out.flags.writeable:
        raise ValueError(f"out must be writeable (shape {out.shape}, read-only array given)")
    for name, array in inputs.items():
        if array is not None and np.shares_memory(out, array):
            raise ValueError(
                f"out must not overlap any input, but it shares memory with {name} "
                f"(shape {array.shape}); pass a separate buffer"
            )
