"""Every rejection of fastrnn.forward: the exception, its message, and that no
argument was touched."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import fastrnn

ARRAY_ARGS = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0")
BAD_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.float16, np.complex64,
              np.complex128, object]


def _snapshot(arguments: dict) -> dict:
    return {name: (value.copy(), value.flags.writeable)
            for name, value in arguments.items() if isinstance(value, np.ndarray)}


def _assert_unchanged(arguments: dict, snapshot: dict) -> None:
    for name, (copy, writeable) in snapshot.items():
        array = arguments[name]
        assert array.dtype == copy.dtype and array.shape == copy.shape, name
        if array.dtype == object:
            # copy() of an object array holds the same element objects
            pairs = zip(array.ravel(), copy.ravel(), strict=True)
            assert all(element is original for element, original in pairs), name
        else:
            assert array.tobytes() == copy.tobytes(), f"{name} was modified"
        assert array.flags.writeable == writeable, name


def assert_rejected(exception: type[Exception], match: str, **arguments) -> None:
    """forward(**arguments) raises ``exception`` matching ``match`` (a regular
    expression) and leaves every array argument, ``out`` included, as it was."""
    snapshot = _snapshot(arguments)
    with pytest.raises(exception, match=match):
        fastrnn.forward(**arguments)
    _assert_unchanged(arguments, snapshot)


@pytest.fixture
def problem(make_problem) -> dict:
    # B=2, T=5, I=3, H=4, batch-first, both biases and h0.
    return make_problem(100, h0=True)


# --- dtypes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARRAY_ARGS)
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_non_float_dtype(problem, name, dtype):
    value = problem[name]
    arguments = dict(problem, **{name: value.astype(dtype)})
    assert_rejected(
        TypeError,
        rf"^{name} must have dtype float32 or float64, got {np.dtype(dtype)} "
        rf"\(shape {re.escape(str(value.shape))}\)",
        **arguments,
    )


@pytest.mark.parametrize("name", ARRAY_ARGS)
def test_non_native_byte_order(problem, name):
    swapped = problem[name].astype(problem[name].dtype.newbyteorder())
    assert_rejected(TypeError, rf"^{name} must have dtype float32 or float64, got >f8",
                    **dict(problem, **{name: swapped}))


@pytest.mark.parametrize("name", ARRAY_ARGS)
def test_python_int_lists_rejected(problem, name):
    # Lists of Python ints become int64 arrays: not accepted.
    ints = np.zeros(problem[name].shape, dtype=np.int64).tolist()
    assert_rejected(TypeError, rf"^{name} must have dtype float32 or float64, got int64",
                    **dict(problem, **{name: ints}))


def test_ragged_list_rejected(problem):
    ragged = [[0.0, 1.0, 2.0], [0.0, 1.0]]
    assert_rejected(TypeError, r"^w_ih must be a float32 or float64 array; could not convert list",
                    **dict(problem, w_ih=ragged))


@pytest.mark.parametrize("name", ARRAY_ARGS)
def test_mixed_dtypes(make_problem, name):
    # Everything float32 but one argument in float64, and the reverse.
    for dtype, other in ((np.float32, np.float64), (np.float64, np.float32)):
        arguments = make_problem(101, dtype=dtype, h0=True)
        arguments[name] = arguments[name].astype(other)
        listing = ", ".join(
            f"{n}={np.dtype(other if n == name else dtype)}" for n in ARRAY_ARGS
        )
        assert_rejected(
            TypeError,
            rf"^all floating arguments must share one dtype \(float32 or float64\), "
            rf"got {listing};",
            **arguments,
        )


def test_mixed_dtypes_lists_only_the_arguments_given(make_problem):
    arguments = make_problem(102, dtype=np.float32, b_ih=False, b_hh=False)
    arguments["w_hh"] = arguments["w_hh"].astype(np.float64)
    assert_rejected(TypeError, r"got x=float32, w_ih=float32, w_hh=float64;", **arguments)


def test_python_float_list_is_float64(make_problem):
    # A list of Python floats is float64, so it cannot join float32 weights...
    arguments = make_problem(103, dtype=np.float32)
    arguments["x"] = arguments["x"].astype(np.float64).tolist()
    assert_rejected(TypeError, r"x=float64, w_ih=float32", **arguments)


# --- shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (4,), (1, 2, 5, 3), (2, 1, 1, 5, 3)])
def test_x_ndim(problem, shape):
    x = np.zeros(shape)
    assert_rejected(
        ValueError,
        r"^x must be 3-D \(batch, time, input\) when batch_first, \(time, batch, input\) "
        rf"otherwise, or 2-D \(time, input\) unbatched; got shape {re.escape(str(shape))}",
        **dict(problem, x=x),
    )


@pytest.mark.parametrize("shape", [(), (4,), (4, 3, 1)])
def test_w_ih_ndim(problem, shape):
    assert_rejected(
        ValueError,
        rf"^w_ih must be 2-D \(hidden_size, input_size\), got shape {re.escape(str(shape))}",
        **dict(problem, w_ih=np.zeros(shape)),
    )


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("input_size", [1, 2, 4])
def test_w_ih_wrong_input_size(problem, batch_first, input_size):
    x = problem["x"] if batch_first else np.ascontiguousarray(problem["x"].transpose(1, 0, 2))
    w_ih = np.zeros((4, input_size))
    assert_rejected(
        ValueError,
        re.escape(f"w_ih must have shape (4, 3) (hidden_size, input_size) to match x of shape "
                  f"{x.shape} and w_hh of shape (4, 4), got (4, {input_size})"),
        **dict(problem, x=x, w_ih=w_ih, batch_first=batch_first, h0=None),
    )


def test_w_ih_wrong_input_size_unbatched(make_problem):
    arguments = make_problem(104, unbatched=True, steps=6)
    assert_rejected(
        ValueError,
        re.escape("w_ih must have shape (4, 3) (hidden_size, input_size) to match x of shape "
                  "(6, 3) and w_hh of shape (4, 4), got (4, 2)"),
        **dict(arguments, w_ih=np.zeros((4, 2))),
    )


def test_w_ih_transposed_asks_for_w_hh_hidden_size(make_problem):
    """A transposed w_ih (I, H): the hidden size asked for is w_hh's (5),
    not w_ih's first axis (3), and the message says it looks transposed."""
    arguments = make_problem(105, input_size=3, hidden_size=5)
    assert_rejected(
        ValueError,
        re.escape("w_ih must have shape (5, 3) (hidden_size, input_size) to match x of shape "
                  "(2, 5, 3) and w_hh of shape (5, 5), got (3, 5); it looks transposed: "
                  "pass w_ih.T"),
        **dict(arguments, w_ih=arguments["w_ih"].T),
    )


def test_w_ih_wrong_shape_without_square_w_hh(problem):
    """w_hh not square either: w_ih's own first axis is the hidden size asked
    for (w_hh's error would come next)."""
    assert_rejected(
        ValueError,
        re.escape("w_ih must have shape (4, 3) (hidden_size, input_size) to match x of shape "
                  "(2, 5, 3), got (4, 2)"),
        **dict(problem, w_ih=np.zeros((4, 2)), w_hh=np.zeros((4, 5))),
    )


@pytest.mark.parametrize("name", ["w_ih", "h0"])
def test_sparse_dense_argument(problem, name):
    """Only w_hh may be sparse. ReservoirPy's default Win is a CSR array:
    the message says to densify it, and that suggestion works."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    sparse = scipy_sparse.csr_array(problem[name])
    assert_rejected(
        TypeError,
        re.escape(f"{name} must be a dense array, got a SciPy sparse csr_array of shape "
                  f"{problem[name].shape}; only w_hh may be sparse: pass {name}.toarray()"),
        **dict(problem, **{name: sparse}),
    )
    output, h_n = fastrnn.forward(**dict(problem, **{name: sparse.toarray()}))
    expected_output, expected_h_n = fastrnn.forward(**problem)
    np.testing.assert_array_equal(output, expected_output)
    np.testing.assert_array_equal(h_n, expected_h_n)


def test_zero_hidden_size(problem):
    assert_rejected(
        ValueError,
        re.escape("hidden_size (w_ih.shape[0]) must be at least 1, got shape (0, 3)"),
        **dict(problem, w_ih=np.zeros((0, 3)), w_hh=np.zeros((0, 0)), b_ih=None, b_hh=None,
               h0=None),
    )


@pytest.mark.parametrize("shape", [(4,), (4, 3), (3, 4), (3, 3), (5, 5), (4, 4, 1), (1, 4, 4)])
def test_w_hh_wrong_shape(problem, shape):
    assert_rejected(
        ValueError,
        re.escape(f"w_hh must have shape (4, 4) (hidden_size, hidden_size) to match w_ih of "
                  f"shape (4, 3), got {shape}"),
        **dict(problem, w_hh=np.zeros(shape)),
    )


@pytest.mark.parametrize("name", ["b_ih", "b_hh"])
@pytest.mark.parametrize("shape", [(), (3,), (5,), (1, 4), (4, 1), (2, 4)])
def test_bias_wrong_shape(problem, name, shape):
    assert_rejected(
        ValueError,
        re.escape(f"{name} must have shape (4,) (hidden_size,) to match w_ih of shape (4, 3), "
                  f"got {shape}"),
        **dict(problem, **{name: np.zeros(shape)}),
    )


@pytest.mark.parametrize("shape", [(), (4,), (1, 4), (3, 4), (2, 3), (2, 5), (1, 2, 4), (5, 4)])
def test_h0_wrong_shape(problem, shape):
    assert_rejected(
        ValueError,
        re.escape(f"h0 must have shape (2, 4) (batch, hidden_size) for x of shape (2, 5, 3), "
                  f"got {shape}"),
        **dict(problem, h0=np.zeros(shape)),
    )


def test_h0_wrong_shape_time_major(problem):
    # Time-major x (T=5, B=2, I=3): h0 is (B, H) = (2, 4); (T, H) is wrong.
    x = np.ascontiguousarray(problem["x"].transpose(1, 0, 2))
    assert_rejected(
        ValueError,
        re.escape("h0 must have shape (2, 4) (batch, hidden_size) for x of shape (5, 2, 3), "
                  "got (5, 4)"),
        **dict(problem, x=x, batch_first=False, h0=np.zeros((5, 4))),
    )


@pytest.mark.parametrize("shape", [(), (3,), (5,), (1, 4), (4, 1)])
def test_h0_wrong_shape_unbatched(make_problem, shape):
    arguments = make_problem(105, unbatched=True, steps=6)
    assert_rejected(
        ValueError,
        re.escape(f"h0 must have shape (4,) (hidden_size,) for unbatched x of shape (6, 3), "
                  f"got {shape}"),
        **dict(arguments, h0=np.zeros(shape)),
    )


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity", ["sigmoid", "Tanh", "RELU", "", None, 1, b"tanh",
                                          ("tanh",)])
def test_unknown_nonlinearity(problem, nonlinearity):
    assert_rejected(
        ValueError,
        re.escape(f"nonlinearity must be one of ('tanh', 'relu'), got {nonlinearity!r}"),
        **dict(problem, nonlinearity=nonlinearity),
    )


@pytest.mark.parametrize(
    ("batch_first", "described"),
    [(1, "int"), (0, "int"), ("True", "str"), (None, "NoneType"), (1.0, "float"),
     (np.array(True), "array of shape () and dtype bool")],
)
def test_batch_first_not_bool(problem, batch_first, described):
    assert_rejected(TypeError, re.escape(f"batch_first must be a bool, got {described}"),
                    **dict(problem, batch_first=batch_first))


def test_batch_first_numpy_bool_accepted(problem, backend):
    expected, _ = fastrnn.forward(**problem, backend=backend)
    output, _ = fastrnn.forward(**dict(problem, batch_first=np.True_), backend=backend)
    np.testing.assert_array_equal(output, expected)


@pytest.mark.parametrize("backend_name", ["torch", "Numba", "NUMPY", "", None, 0, "numba "])
def test_unknown_backend(problem, backend_name):
    assert_rejected(
        ValueError,
        re.escape(f"backend must be one of ('auto', 'numba', 'numpy'), got {backend_name!r}"),
        **dict(problem, backend=backend_name),
    )


def test_unknown_backend_unhashable(problem):
    assert_rejected(ValueError, r"backend must be one of", **dict(problem, backend=["numba"]))


@pytest.mark.parametrize("batch", [1, 2], ids=["small-sequence", "plain"])
@pytest.mark.parametrize("backend_name", [["numba"], {"numba": 1}, ("numba",), b"numba"])
def test_unknown_backend_in_the_plain_call(make_problem, batch, backend_name):
    # The plain call (no h0 or option) looks the backend up in a dict before
    # anything else: an unhashable one was a TypeError from that lookup.
    arguments = make_problem(101, batch=batch)
    assert_rejected(
        ValueError,
        re.escape(f"backend must be one of ('auto', 'numba', 'numpy'), got {backend_name!r}"),
        **dict(arguments, backend=backend_name),
    )


def test_options_are_keyword_only(problem):
    positional = [problem[name] for name in ARRAY_ARGS]
    with pytest.raises(TypeError, match="positional argument"):
        fastrnn.forward(*positional, "tanh")


# --- out= ---------------------------------------------------------------------------------


@pytest.mark.parametrize("out", [[[0.0] * 4] * 5, (1.0,), 0.0, "out"],
                         ids=["list", "tuple", "float", "str"])
def test_out_not_an_array(problem, out):
    assert_rejected(ValueError, rf"^out must be a NumPy array, got {type(out).__name__}$",
                    **dict(problem, out=out))


@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 3), (2, 5, 5), (5, 2, 4), (1, 2, 5, 4),
                                   (10, 4), (40,)])
def test_out_wrong_shape(problem, shape):
    assert_rejected(
        ValueError,
        re.escape(f"out must have shape (2, 5, 4) and dtype float64 (the output's), got shape "
                  f"{shape} and dtype float64"),
        **dict(problem, out=np.zeros(shape)),
    )


def test_out_wrong_shape_time_major(problem):
    x = np.ascontiguousarray(problem["x"].transpose(1, 0, 2))  # (5, 2, 3)
    assert_rejected(
        ValueError,
        re.escape("out must have shape (5, 2, 4) and dtype float64 (the output's), got shape "
                  "(2, 5, 4) and dtype float64"),
        **dict(problem, x=x, batch_first=False, out=np.zeros((2, 5, 4))),
    )


@pytest.mark.parametrize("shape", [(1, 6, 4), (6, 4, 1), (6,)])
def test_out_wrong_shape_unbatched(make_problem, shape):
    arguments = make_problem(106, unbatched=True, steps=6)
    assert_rejected(
        ValueError,
        re.escape(f"out must have shape (6, 4) and dtype float64 (the output's), got shape "
                  f"{shape} and dtype float64"),
        **dict(arguments, out=np.zeros(shape)),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.complex128, object])
def test_out_wrong_dtype(problem, dtype):
    assert_rejected(
        ValueError,
        re.escape(f"out must have shape (2, 5, 4) and dtype float64 (the output's), got shape "
                  f"(2, 5, 4) and dtype {np.dtype(dtype)}"),
        **dict(problem, out=np.zeros((2, 5, 4), dtype=dtype)),
    )


def test_out_wrong_dtype_float32(make_problem):
    arguments = make_problem(107, dtype=np.float32)
    assert_rejected(ValueError, r"dtype float32 \(the output's\), got shape \(2, 5, 4\) and "
                                r"dtype float64",
                    **dict(arguments, out=np.zeros((2, 5, 4))))


@pytest.mark.parametrize(
    "make_out",
    [
        lambda: np.zeros((2, 5, 4), order="F"),
        lambda: np.zeros((2, 5, 8))[:, :, ::2],
        lambda: np.zeros((4, 5, 4))[::2],
        lambda: np.zeros((2, 5, 4))[::-1],
        lambda: np.zeros((4, 5, 2)).transpose(2, 1, 0)[:, :, :4],
    ],
    ids=["fortran", "strided-last", "strided-first", "reversed", "transposed"],
)
def test_out_not_c_contiguous(problem, make_out):
    out = make_out()
    assert out.shape == (2, 5, 4) and not out.flags.c_contiguous
    assert_rejected(ValueError, r"^out must be C-contiguous \(shape \(2, 5, 4\), strides ",
                    **dict(problem, out=out))


def test_out_read_only(problem):
    out = np.zeros((2, 5, 4))
    out.flags.writeable = False
    assert_rejected(ValueError, re.escape("out must be writeable (shape (2, 5, 4), read-only "
                                          "array given)"), **dict(problem, out=out))


@pytest.mark.parametrize("name", ARRAY_ARGS)
def test_out_overlaps_an_input(problem, name):
    # The input and out are views of one larger buffer, out starting in the
    # input's last element.
    value = problem[name]
    buffer = np.zeros(value.size + 2 * 5 * 4 - 1)
    buffer[:value.size] = value.ravel()
    arguments = dict(problem, **{name: buffer[:value.size].reshape(value.shape)},
                     out=buffer[value.size - 1:].reshape(2, 5, 4))
    assert_rejected(
        ValueError,
        re.escape(f"out must not overlap any input, but it shares memory with {name} "
                  f"(shape {value.shape}); pass a separate buffer"),
        **arguments,
    )


def test_out_is_x(make_problem):
    # In-place over x (I == H) is refused too.
    arguments = make_problem(108, input_size=4, hidden_size=4)
    assert_rejected(ValueError, r"out must not overlap any input, but it shares memory with x",
                    **dict(arguments, out=arguments["x"]))


def test_out_in_the_gaps_of_a_strided_input(make_problem):
    # x's rows are 3 elements of every 43; out fits in one gap. They span the
    # same memory but share no element, which is what counts: accepted. (A
    # validation question: the NumPy backend spares a Numba compilation.)
    arguments = make_problem(109, h0=True)
    buffer = np.zeros((2, 5, 43))
    x = buffer[:, :, :3]
    x[...] = arguments["x"]
    out = buffer[0, 0, 3:].reshape(2, 5, 4)
    assert np.may_share_memory(x, out) and not np.shares_memory(x, out)
    expected, _ = fastrnn.forward(**arguments, backend="numpy")
    output, _ = fastrnn.forward(**dict(arguments, x=x, out=out), backend="numpy")
    assert output is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(x, arguments["x"])


def test_out_overlaps_unbatched_h0(make_problem):
    arguments = make_problem(110, unbatched=True, steps=3, h0=True)  # out (3, 4), h0 (4,)
    buffer = np.zeros(12)
    buffer[8:] = arguments["h0"]
    arguments = dict(arguments, h0=buffer[8:], out=buffer.reshape(3, 4))
    assert_rejected(ValueError, r"out must not overlap any input, but it shares memory with h0",
                    **arguments)


def test_out_adjacent_to_input_accepted(backend, make_problem):
    # Views of one buffer that do not overlap are fine.
    arguments = make_problem(111, h0=True)
    buffer = np.zeros(arguments["x"].size + 2 * 5 * 4)
    x = buffer[:arguments["x"].size].reshape(arguments["x"].shape)
    x[...] = arguments["x"]
    out = buffer[arguments["x"].size:].reshape(2, 5, 4)
    expected, _ = fastrnn.forward(**arguments, backend=backend)
    output, _ = fastrnn.forward(**dict(arguments, x=x, out=out), backend=backend)
    assert output is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(x, arguments["x"])


# --- accepted conversions -------------------------------------------------------------------


def test_python_float_lists_accepted(backend, check_forward, make_problem):
    # Lists of Python floats are float64 arrays.
    arguments = make_problem(112, h0=True)
    as_lists = {name: (value.tolist() if isinstance(value, np.ndarray) else value)
                for name, value in arguments.items()}
    output, h_n = check_forward(as_lists, backend)
    assert output.dtype == np.float64 and h_n.dtype == np.float64
    expected, expected_h_n = fastrnn.forward(**arguments, backend=backend)
    np.testing.assert_array_equal(output, expected)
    np.testing.assert_array_equal(h_n, expected_h_n)


def test_python_float_list_x_with_float64_weights(backend, check_forward, make_problem):
    arguments = make_problem(113)
    check_forward(dict(arguments, x=arguments["x"].tolist()), backend)


def test_numpy_float_scalars_in_lists(backend, check_forward, make_problem):
    arguments = make_problem(114, dtype=np.float32, unbatched=True, steps=3)
    x = [[np.float32(v) for v in row] for row in arguments["x"]]
    output, _ = check_forward(dict(arguments, x=x), backend)
    assert output.dtype == np.float32


# --- ndarray subclasses ---------------------------------------------------------------------


def _matrix(array: np.ndarray) -> np.matrix:
    # np.matrix warns on construction (PendingDeprecationWarning); only its
    # construction is silenced, not what fastrnn does with it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(array)


class _Tagged(np.ndarray):
    """Any ndarray subclass: a plain view is taken, as for np.matrix."""


@pytest.mark.parametrize("name", ARRAY_ARGS)
def test_ndarray_subclass_arguments(backend, make_problem, name):
    # Each argument as a subclass gives the plain arrays' results, as plain
    # arrays. (Any subclass, np.matrix included, was taken for a sparse
    # matrix by the Numba backend: AttributeError: ... no attribute 'nnz'.)
    arguments = make_problem(115, h0=True)
    expected = fastrnn.forward(**arguments, backend=backend)
    tagged = arguments[name].view(_Tagged)
    got = fastrnn.forward(**dict(arguments, **{name: tagged}), backend=backend)
    for result, reference in zip(got, expected, strict=True):
        assert type(result) is np.ndarray
        np.testing.assert_array_equal(result, reference)
    assert type(tagged) is _Tagged  # the caller's object is left as it was


@pytest.mark.parametrize("name", ["x", "w_ih", "w_hh", "h0"])
def test_np_matrix_arguments(backend, make_problem, name):
    # Every 2-D argument may be an np.matrix: x as one unbatched (T, I)
    # sequence; h0 (B, H) with batched x.
    unbatched = name == "x"
    arguments = make_problem(116, unbatched=unbatched, h0=not unbatched)
    expected = fastrnn.forward(**arguments, backend=backend)
    got = fastrnn.forward(**dict(arguments, **{name: _matrix(arguments[name])}),
                          backend=backend)
    for result, reference in zip(got, expected, strict=True):
        assert type(result) is np.ndarray and result.shape == reference.shape
        np.testing.assert_array_equal(result, reference)


@pytest.mark.parametrize("name", ["b_ih", "b_hh"])
def test_np_matrix_bias_is_2d(problem, name):
    # An np.matrix is never 1-D: a (1, H) bias is a shape error, as a (1, H)
    # array is.
    assert_rejected(ValueError, rf"{name} must have shape \(4,\) \(hidden_size,\) .*got "
                                r"\(1, 4\)", **dict(problem, **{name: _matrix(problem[name])}))


@pytest.mark.parametrize("kind", ["matrix", "subclass"])
def test_ndarray_subclass_out(backend, make_problem, kind):
    # out may be a subclass: the output is written into its memory and the
    # object given is returned (an np.matrix for an unbatched (T, H) output).
    arguments = make_problem(117, unbatched=True, steps=3)  # output (3, 4)
    expected, expected_h_n = fastrnn.forward(**arguments, backend=backend)
    out = _matrix(np.zeros((3, 4))) if kind == "matrix" else np.zeros((3, 4)).view(_Tagged)
    output, h_n = fastrnn.forward(**arguments, out=out, backend=backend)
    assert output is out
    np.testing.assert_array_equal(np.asarray(out), expected)
    np.testing.assert_array_equal(h_n, expected_h_n)


@pytest.mark.parametrize("name", [*ARRAY_ARGS, "out"])
def test_masked_arrays_rejected(problem, name):
    # np.asarray would drop the mask: the masked values would be used.
    value = np.zeros((2, 5, 4)) if name == "out" else problem[name]
    masked = np.ma.masked_array(value, mask=np.zeros(value.shape, dtype=bool))
    shape = re.escape(str(value.shape))
    assert_rejected(TypeError, rf"{name} must not be a masked array \(its mask would be "
                               rf"ignored\), got MaskedArray of shape {shape}",
                    **dict(problem, **{name: masked}))
