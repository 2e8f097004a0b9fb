"""Validation shared by every entry point: one place that turns user arguments
into the arrays every backend expects, or raises a clear error.

The accepting path is a few comparisons per argument (a textbook-size forward
costs about 3 us in total, so validation must cost well under that); messages
are built only when something is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT_DTYPES = (FLOAT32, FLOAT64)
NONLINEARITIES = ("tanh", "relu")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def _masked(name: str, value: Any) -> TypeError | None:
    # A masked array's mask would be silently dropped by np.asarray.
    if type(value).__module__.startswith("numpy.ma"):
        hint = " (masked steps at the end of sequences: pass lengths)" if name == "x" else ""
        return TypeError(
            f"{name} must not be a masked array (its mask would be ignored), got "
            f"{type(value).__name__} of shape {value.shape}; pass a plain array, e.g. "
            f"{name}.filled(0){hint}"
        )
    return None


def as_float_array(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as a plain ndarray (no copy when it already is one) or
    raise a TypeError naming ``name`` when it is not float32/float64.

    An ndarray subclass (``np.matrix``, ``np.memmap``, ...) becomes a plain
    ndarray view of its memory: every backend dispatches on plain ndarrays
    (``np.matrix`` would also keep its results 2-D). A masked array is a
    TypeError: its mask would be ignored."""
    if type(value) is np.ndarray:
        dtype = value.dtype
        if dtype is FLOAT32 or dtype is FLOAT64:
            return value
        array = value
    elif is_sparse(value):
        # np.asarray would wrap the matrix in a 0-d object array, and the
        # dtype message below would then suggest a conversion that fails too.
        raise TypeError(
            f"{name} must be a dense array, got a SciPy sparse {type(value).__name__} of "
            f"shape {value.shape}; only w_hh may be sparse: pass {name}.toarray()"
        )
    else:
        masked = _masked(name, value)
        if masked is not None:
            raise masked
        try:
            array = np.asarray(value)
        except Exception as exc:  # e.g. ragged nested lists
            raise TypeError(
                f"{name} must be a float32 or float64 array; could not convert "
                f"{_describe(value)} to an array: {exc}"
            ) from exc
    if array.dtype not in FLOAT_DTYPES or not array.dtype.isnative:
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {array.dtype} "
            f"(shape {array.shape}); convert it, e.g. np.asarray({name}, dtype=np.float32)"
        )
    return array


def _mixed_dtypes(arrays: dict[str, np.ndarray | None]) -> TypeError:
    listing = ", ".join(f"{name}={a.dtype}" for name, a in arrays.items() if a is not None)
    return TypeError(
        "all floating arguments must share one dtype (float32 or float64), "
        f"got {listing}; cast them to one dtype, e.g. .astype(np.float32)"
    )


def _wrong_shape(name: str, array: np.ndarray, expected: tuple[int, ...],
                 meaning: str) -> ValueError:
    return ValueError(f"{name} must have shape {expected} {meaning}, got {array.shape}")


_NDARRAY = np.ndarray


def plain_arrays(x: Any, w_ih: Any, w_hh: Any, b_ih: Any,
                 b_hh: Any) -> tuple[int, int, int, np.dtype] | None:
    """(B, T, H, dtype) when the arrays of a call have the types every
    backend takes: x a 3-D (B, T, I) or unbatched 2-D (T, I) ndarray of
    float32 or float64, w_ih and w_hh 2-D dense ndarrays and the biases 1-D
    ndarrays or None, all of x's dtype (B = -1 for unbatched x); their shapes
    are not compared (see :func:`plain_shapes_agree`). None otherwise: the
    caller then runs :func:`validate_forward`, which accepts or explains every
    other case. A handful of comparisons, for the calls whose whole forward
    takes microseconds."""
    if type(x) is not _NDARRAY or type(w_ih) is not _NDARRAY or type(w_hh) is not _NDARRAY:
        return None
    dtype = x.dtype
    if ((dtype is not FLOAT32 and dtype is not FLOAT64) or w_ih.dtype is not dtype
            or w_hh.dtype is not dtype or w_hh.ndim != 2):
        return None
    if b_ih is not None and (type(b_ih) is not _NDARRAY or b_ih.dtype is not dtype
                             or b_ih.ndim != 1):
        return None
    if b_hh is not None and (type(b_hh) is not _NDARRAY or b_hh.dtype is not dtype
                             or b_hh.ndim != 1):
        return None
    shape = x.shape
    w_shape = w_ih.shape
    if len(w_shape) != 2:
        return None
    if len(shape) == 3:
        return shape[0], shape[1], w_shape[0], dtype
    if len(shape) == 2:
        return -1, shape[0], w_shape[0], dtype
    return None


def plain_shapes_agree(x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray,
                       b_ih: np.ndarray | None, b_hh: np.ndarray | None) -> bool:
    """Whether the shapes of :func:`plain_arrays`' arrays agree: w_ih (H, I)
    with H >= 1 and I x's last axis, w_hh (H, H), the biases (H,)."""
    hidden, inputs = w_ih.shape
    return (hidden >= 1 and inputs == x.shape[-1] and w_hh.shape == (hidden, hidden)
            and (b_ih is None or b_ih.shape[0] == hidden)
            and (b_hh is None or b_hh.shape[0] == hidden))


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
    lengths: Any = None,
    leak: Any = None,
    return_sequences: Any = True,
    threads: Any = None,
) -> tuple[Any, ...]:
    """Check every argument of :func:`fastrnn.forward`; return them in the
    backend contract's form, as a plain tuple (a NamedTuple would cost more
    than the rest of a tiny forward's validation):

    ``(x, w_ih, w_hh, b_ih, b_hh, h0, out, relu, batch_first, unbatched,
    output_shape, batch, hidden, lengths, leak)``: x is (B, T, I) if
    batch_first else (T, B, I) in any memory layout; w_hh is an ndarray or a
    canonical SciPy CSR matrix; h0 is (B, H) or None (zeros); out is the
    validated C-contiguous output in x's layout, or None; batch_first is True
    for unbatched input; lengths is an int64 (B,) array or None; leak an (H,)
    array of x's dtype, or None for 1.
    """
    if type(nonlinearity) is not str or nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    batch_first = check_bool("batch_first", batch_first)
    return_sequences = check_bool("return_sequences", return_sequences)
    if not return_sequences and out is not None:
        raise ValueError("out must be None when return_sequences=False: no output sequence "
                         "is computed")
    if threads is not None:
        check_threads(threads)

    x = as_float_array("x", x)
    w_ih = as_float_array("w_ih", w_ih)
    if type(w_hh) is not np.ndarray and is_sparse(w_hh):
        w_hh = as_sparse_csr("w_hh", w_hh)
    else:
        w_hh = as_float_array("w_hh", w_hh)
    dtype = x.dtype
    same = w_ih.dtype == dtype and w_hh.dtype == dtype
    if b_ih is not None:
        b_ih = as_float_array("b_ih", b_ih)
        same = same and b_ih.dtype == dtype
    if b_hh is not None:
        b_hh = as_float_array("b_hh", b_hh)
        same = same and b_hh.dtype == dtype
    if h0 is not None:
        h0 = as_float_array("h0", h0)
        same = same and h0.dtype == dtype
    if not same:
        raise _mixed_dtypes({"x": x, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh,
                             "h0": h0})

    x_shape = x.shape
    x_given, h0_given = x, h0  # for messages: the shapes the caller passed
    x, unbatched = _as_batched(x)
    if unbatched:
        batch_first = True
    n1, n2, input_size = x.shape

    w_ih_shape = w_ih.shape
    if len(w_ih_shape) != 2 or w_ih_shape[1] != input_size or w_ih_shape[0] < 1:
        raise _bad_w_ih(w_ih_shape, input_size, x_shape, w_hh.shape)
    hidden = w_ih_shape[0]
    if w_hh.shape != (hidden, hidden):
        raise _wrong_shape("w_hh", w_hh, (hidden, hidden),
                           f"(hidden_size, hidden_size) to match w_ih of shape {w_ih_shape}")
    if b_ih is not None and b_ih.shape != (hidden,):
        raise _wrong_shape("b_ih", b_ih, (hidden,),
                           f"(hidden_size,) to match w_ih of shape {w_ih_shape}")
    if b_hh is not None and b_hh.shape != (hidden,):
        raise _wrong_shape("b_hh", b_hh, (hidden,),
                           f"(hidden_size,) to match w_ih of shape {w_ih_shape}")

    if leak is not None:
        leak = validate_leak(leak, hidden, dtype)
    weights = {"w_ih": w_ih, "w_hh": w_hh if isinstance(w_hh, np.ndarray) else w_hh.data,
               "b_ih": b_ih, "b_hh": b_hh}
    h0, out, lengths, output_shape, batch = _check_call(
        x, x_given, h0, h0_given, hidden, dtype, batch_first, unbatched, out, lengths, weights)

    return (x, w_ih, w_hh, b_ih, b_hh, h0, out, nonlinearity == "relu", batch_first,
            unbatched, output_shape, batch, hidden, lengths, leak)


def _as_batched(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(x, unbatched)``: a 2-D (T, I) x as a (1, T, I) view (PyTorch ignores
    batch_first for unbatched input: one sequence), a 3-D x as it is; a
    ValueError for any other number of dimensions."""
    if x.ndim == 2:
        return x.reshape((1,) + x.shape), True
    if x.ndim != 3:
        raise ValueError(
            "x must be 3-D (batch, time, input) when batch_first, (time, batch, "
            f"input) otherwise, or 2-D (time, input) unbatched; got shape {x.shape}"
        )
    return x, False


def _check_call(x: np.ndarray, x_given: np.ndarray, h0: np.ndarray | None,
                h0_given: np.ndarray | None, hidden: int, dtype: np.dtype, batch_first: bool,
                unbatched: bool, out: Any, lengths: Any,
                weights: dict[str, np.ndarray | None]) -> tuple[Any, ...]:
    """The checks of one call's h0, lengths and out against x (already (B, T,
    I) or (T, B, I); ``x_given`` and ``h0_given`` as the caller passed them,
    for messages; ``weights`` the arrays ``out`` must not overlap). Returns
    ``(h0, out, lengths, output_shape, batch)`` in the backend contract's
    form."""
    n1, n2, _ = x.shape
    x_shape = x_given.shape
    batch = n1 if batch_first else n2
    if h0 is not None:
        if unbatched:
            if h0.shape != (hidden,):
                raise _wrong_shape("h0", h0, (hidden,),
                                   f"(hidden_size,) for unbatched x of shape {x_shape}")
            h0 = h0.reshape(1, hidden)
        elif h0.shape != (batch, hidden):
            raise _wrong_shape("h0", h0, (batch, hidden),
                               f"(batch, hidden_size) for x of shape {x_shape}")

    steps = n2 if batch_first else n1
    if lengths is not None:
        if unbatched and np.ndim(lengths) == 0:
            lengths = np.reshape(lengths, (1,))  # one sequence, one length
        lengths = validate_lengths(lengths, batch, steps)

    output_shape = (n1, n2, hidden)
    if out is not None:
        if type(out) is not np.ndarray and isinstance(out, np.ndarray):
            # A subclass (np.matrix, np.memmap, ...) is written through a
            # plain view of its memory; the caller gets the object given.
            masked = _masked("out", out)
            if masked is not None:
                raise masked
            out = np.asarray(out)
        inputs = {"x": x_given, **weights, "h0": h0_given}
        _check_out(out, output_shape[1:] if unbatched else output_shape, dtype, inputs)
        if unbatched:
            out = out.reshape(output_shape)  # a view: out is C-contiguous
    return h0, out, lengths, output_shape, batch


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool (True, False or a NumPy bool), or a TypeError naming it."""
    if value is True or value is False:
        return value
    if not isinstance(value, np.bool_):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return bool(value)


def validate_call(x: Any, h0: Any, input_size: int, hidden: int, dtype: np.dtype,
                  batch_first: Any, out: Any, lengths: Any, return_sequences: Any,
                  weights: dict[str, np.ndarray | None]) -> tuple[Any, ...]:
    """Check the per-call arguments of a prepared layer (:class:`fastrnn.Layer`)
    whose weights were validated once: ``(x, h0, out, batch_first, unbatched,
    output_shape, batch, lengths, return_sequences)`` in the backend contract's
    form, as :func:`validate_forward` returns them."""
    batch_first = check_bool("batch_first", batch_first)
    return_sequences = check_bool("return_sequences", return_sequences)
    if not return_sequences and out is not None:
        raise ValueError("out must be None when return_sequences=False: no output sequence "
                         "is computed")
    x = as_float_array("x", x)
    if h0 is not None:
        h0 = as_float_array("h0", h0)
    if x.dtype != dtype or (h0 is not None and h0.dtype != dtype):
        listing = f"x={x.dtype}" + ("" if h0 is None else f", h0={h0.dtype}")
        raise TypeError(f"x and h0 must have the layer's dtype {dtype}, got {listing}; "
                        f"convert them, e.g. x.astype(np.{dtype.name})")
    x_given, h0_given = x, h0
    x, unbatched = _as_batched(x)
    if unbatched:
        batch_first = True
    if x.shape[2] != input_size:
        raise ValueError(f"x must have {input_size} features (the layer's input_size) on its "
                         f"last axis, got shape {x_given.shape}")
    h0, out, lengths, output_shape, batch = _check_call(
        x, x_given, h0, h0_given, hidden, dtype, batch_first, unbatched, out, lengths, weights)
    return x, h0, out, batch_first, unbatched, output_shape, batch, lengths, return_sequences


def check_threads(threads: Any) -> int:
    """``threads`` as an int >= 1, or a TypeError/ValueError naming it."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be None or an int >= 1, got {_describe(threads)}")
    if threads < 1:
        raise ValueError(f"threads must be None or an int >= 1, got {threads}")
    return int(threads)


def is_sparse(value: Any) -> bool:
    """Whether ``value`` is a SciPy sparse matrix or array (without importing
    SciPy when it is not)."""
    return type(value).__module__.startswith("scipy.sparse")


def as_sparse_csr(name: str, value: Any) -> Any:
    """A SciPy sparse matrix/array as canonical CSR (sorted indices, no
    duplicates; a copy only when needed), or a TypeError/ValueError naming
    ``name``.

    SciPy does not check the index arrays of a matrix built from raw arrays
    (``csr_matrix((data, indices, indptr))``) or changed in place, and its
    own conversions read through them: an index outside the matrix reads or
    writes out of bounds (a crash, or a weight silently dropped). So the
    structure of the format given is checked first, in O(nnz) with NumPy,
    before SciPy or a kernel uses it (see :func:`_check_compressed` and
    :func:`_check_coo`).
    """
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have dtype float32 or float64, got sparse {value.dtype} "
            f"(shape {value.shape}); convert it, e.g. {name}.astype(np.float32)"
        )
    if len(value.shape) != 2:
        raise ValueError(f"{name} must be a 2-D sparse matrix or array, got sparse "
                         f"{value.format} of shape {value.shape}")
    if value.format in ("csr", "csc", "bsr"):
        _check_compressed(name, value)
    else:
        if value.format != "coo":
            # DIA, LIL, DOK: SciPy builds the coordinates itself (and
            # raises a ValueError of its own for an index it finds outside).
            try:
                value = value.tocoo()
            except ValueError as exc:
                raise ValueError(f"{name} (sparse {value.format.upper()}, shape {value.shape}) is "
                                 f"malformed: {exc}") from exc
        _check_coo(name, value)
    csr = value.tocsr()
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()  # also sorts the indices
    return csr


def _malformed(name: str, value: Any, problem: str) -> ValueError:
    return ValueError(f"{name} (sparse {value.format.upper()}, shape {value.shape}) is "
                      f"malformed: {problem}")


def _index_array(name: str, value: Any, field: str, array: Any) -> np.ndarray:
    # One of a sparse matrix's index arrays: 1-D integers (SciPy converts
    # them on construction, but not when an attribute is assigned).
    if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in "iu":
        raise _malformed(name, value, f"{field} must be a 1-D integer array, got "
                                      f"{_describe(array)}")
    return array


def _check_index_range(name: str, value: Any, field: str, indices: np.ndarray, size: int,
                       what: str, where: Any) -> None:
    # Every value of ``indices`` in [0, size); ``where(position)`` names the
    # row (or column) of a bad one for the message.
    if indices.size == 0:
        return
    if indices.min() >= 0 and indices.max() < size:
        return
    position = int(np.flatnonzero((indices < 0) | (indices >= size))[0])
    raise _malformed(name, value, f"{what} index {indices[position]} at {field}[{position}]"
                                  f"{where(position)}; {what} indices must lie in [0, {size})")


def _check_compressed(name: str, value: Any) -> None:
    """The index arrays of a CSR, CSC or BSR matrix: ``indptr`` of (rows + 1)
    entries (columns + 1 for CSC, block rows + 1 for BSR) from 0, never
    decreasing, its last entry (the number of stored entries) at most the
    length of ``indices``, which ``data`` shares, and every index of a stored
    entry inside the matrix. A ValueError naming the first problem."""
    rows, columns = value.shape
    fmt = value.format
    indptr = _index_array(name, value, "indptr", value.indptr)
    indices = _index_array(name, value, "indices", value.indices)
    data = value.data
    if fmt == "bsr":
        block_rows, block_columns = data.shape[1:] if data.ndim == 3 else (0, 0)
        if data.ndim != 3 or rows % block_rows or columns % block_columns:
            raise _malformed(name, value, f"data must be (blocks, R, C) blocks that tile the "
                                          f"matrix, got {_describe(data)}")
        major, minor = rows // block_rows, columns // block_columns
        major_name, minor_name = "block row", "block column"
    elif fmt == "csr":
        major, minor, major_name, minor_name = rows, columns, "row", "column"
    else:
        major, minor, major_name, minor_name = columns, rows, "column", "row"
    if fmt != "bsr" and data.ndim != 1:
        raise _malformed(name, value, f"data must be 1-D, got {_describe(data)}")
    if indptr.shape[0] != major + 1:
        raise _malformed(name, value, f"indptr must have {major + 1} entries (one more than "
                                      f"the {major} {major_name}s), got {indptr.shape[0]}")
    if indptr[0] != 0:
        raise _malformed(name, value, f"indptr must start at 0, got indptr[0] = {indptr[0]}")
    decrease = np.flatnonzero(indptr[1:] < indptr[:-1])
    if decrease.size:
        k = int(decrease[0])
        raise _malformed(name, value, f"indptr must never decrease, got indptr[{k}] = "
                                      f"{indptr[k]} > indptr[{k + 1}] = {indptr[k + 1]}")
    if indices.shape[0] != data.shape[0]:
        raise _malformed(name, value, f"indices and data must have one entry per stored "
                                      f"value, got {indices.shape[0]} and {data.shape[0]}")
    stored = int(indptr[-1])  # indptr is now 0 <= ... <= stored
    if stored > indices.shape[0]:
        raise _malformed(name, value, f"indptr[-1] = {stored} (the number of stored "
                                      f"entries) exceeds the {indices.shape[0]} entries of "
                                      "indices and data")
    _check_index_range(
        name, value, "indices", indices[:stored], minor, minor_name,
        lambda position: f" ({major_name} {np.searchsorted(indptr, position, 'right') - 1})")


def _check_coo(name: str, value: Any) -> None:
    """The coordinates of a COO matrix: ``row`` and ``col`` of one entry per
    value of ``data``, each inside the matrix. A ValueError naming the first
    problem."""
    rows, columns = value.shape
    row = _index_array(name, value, "row", value.row)
    col = _index_array(name, value, "col", value.col)
    data = value.data
    if data.ndim != 1 or not row.shape[0] == col.shape[0] == data.shape[0]:
        raise _malformed(name, value, f"row, col and data must have one entry per stored "
                                      f"value, got lengths {row.shape[0]}, {col.shape[0]} "
                                      f"and data {_describe(data)}")
    _check_index_range(name, value, "row", row, rows, "row",
                       lambda position: f" (column {col[position]})")
    _check_index_range(name, value, "col", col, columns, "column",
                       lambda position: f" (row {row[position]})")


def _integers(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be an integer array, got dtype {array.dtype} (shape {array.shape})"
        )
    return array


def validate_lengths(lengths: Any, batch: int, steps: int) -> np.ndarray:
    """``lengths`` as a new int64 (batch,) array with 0 <= length <= steps,
    or a TypeError/ValueError naming it."""
    array = _integers("lengths", lengths)
    if array.shape != (batch,):
        raise ValueError(
            f"lengths must have shape ({batch},) (one length per sequence of the batch), "
            f"got {array.shape}"
        )
    if batch:
        low, high = array.min(), array.max()
        if low < 0 or high > steps:
            bad = int(np.flatnonzero((array < 0) | (array > steps))[0])
            raise ValueError(
                f"lengths must lie in [0, {steps}] (the number of time steps), got "
                f"lengths[{bad}] = {array[bad]}"
            )
    return np.array(array, dtype=np.int64)


def validate_leak(leak: Any, hidden: int, dtype: np.dtype) -> np.ndarray | None:
    """``leak`` as a new (hidden,) array of ``dtype``, or None when every
    leak is 1 (the plain update); a TypeError/ValueError naming it."""
    array = np.asarray(leak)
    if array.dtype.kind not in "fiu":
        raise TypeError(
            f"leak must be a float or an array of floats, got dtype {array.dtype} "
            f"(shape {array.shape})"
        )
    if array.shape not in ((), (hidden,)):
        raise ValueError(
            f"leak must be a float or have shape ({hidden},) (hidden_size,), got {array.shape}"
        )
    inside = (array > 0) & (array <= 1)
    if not inside.all():
        bad = array if array.ndim == 0 else array[np.flatnonzero(~inside)[0]]
        raise ValueError(f"leak must lie in (0, 1], got {bad}")
    # Checked again once cast (no overflow: every value is now at most 1): a
    # leak that underflows to 0 would freeze the state at h0, silently.
    cast = np.array(np.broadcast_to(array, (hidden,)), dtype=dtype)
    if not (cast > 0).all():
        bad = array if array.ndim == 0 else array[np.flatnonzero(cast <= 0)[0]]
        raise ValueError(
            f"leak must lie in (0, 1] in the computation's dtype, but {bad} underflows to 0 "
            f"in {dtype}; the smallest positive {dtype} is "
            f"{float(np.finfo(dtype).smallest_subnormal):.3g}"
        )
    if (cast == 1).all():
        return None
    return cast


def _bad_w_ih(shape: tuple[int, ...], input_size: int, x_shape: tuple[int, ...],
              w_hh_shape: tuple[int, ...]) -> ValueError:
    """The error for a w_ih whose shape does not fit x. The hidden size asked
    for is w_hh's when w_hh is square (w_ih's own first axis is what may be
    wrong, e.g. a transposed w_ih), else w_ih's first axis."""
    if len(shape) != 2:
        return ValueError(f"w_ih must be 2-D (hidden_size, input_size), got shape {shape}")
    square = len(w_hh_shape) == 2 and w_hh_shape[0] == w_hh_shape[1] >= 1
    hidden = w_hh_shape[0] if square else shape[0]
    if hidden < 1:
        return ValueError(f"hidden_size (w_ih.shape[0]) must be at least 1, got shape {shape}")
    expected = (hidden, input_size)
    reason = f"x of shape {x_shape}" + (f" and w_hh of shape {w_hh_shape}" if square else "")
    hint = "; it looks transposed: pass w_ih.T" if shape == expected[::-1] else ""
    return ValueError(
        f"w_ih must have shape {expected} (hidden_size, input_size) to match {reason}, "
        f"got {shape}{hint}"
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
