"""Robustness: every named bad input, non-finite values, extreme lengths, long
runs of calls, an unusable Numba cache.

tests/test_validation.py already checks the wrong dtypes, ndims and shapes of
the six float arrays, the options and ``out=``; tests/test_no_numba.py the
processes without Numba. This file covers the rest of the API's inputs
(``lengths``, ``leak``, ``threads``, ``return_sequences``, a sparse ``w_hh``,
odd Python objects), each case named, checking the exception, its message
and that no argument was touched; then NaN and infinities, T = 1 000 000,
100 000 repeated calls against resident memory, and a Numba cache directory
that cannot be written.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastrnn

TESTS_DIR = Path(__file__).resolve().parent
FASTRNN_DIR = Path(fastrnn.__file__).resolve().parent


# --- bad inputs ---------------------------------------------------------------------------------


def _base(make_problem, kind: str = "batched") -> dict:
    """B=2, T=5, I=3, H=4, float64, both biases and h0 (or unbatched T=6)."""
    if kind == "unbatched":
        return make_problem(300, unbatched=True, steps=6, h0=True)
    if kind == "time-major":
        return make_problem(301, batch_first=False, h0=True)
    if kind == "float32":
        return make_problem(302, dtype=np.float32, h0=True)
    return make_problem(303, h0=True)


def _sparse(dense, fmt="csr", dtype=None):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    matrix = scipy_sparse.csr_matrix(dense if dtype is None else dense.astype(dtype))
    return matrix.asformat(fmt)


def _overlapping_out(args):
    # out shares memory with the sparse w_hh's values.
    w_hh = _sparse(args["w_hh"])
    buffer = np.zeros(w_hh.nnz + 40)
    buffer[:w_hh.nnz] = w_hh.data
    w_hh.data = buffer[:w_hh.nnz]
    return dict(args, w_hh=w_hh, out=buffer[w_hh.nnz - 1:w_hh.nnz - 1 + 40].reshape(2, 5, 4))


def _read_only_lengths(args):
    lengths = np.array([9, 1])
    lengths.flags.writeable = False
    return dict(args, lengths=lengths)


# (id, base kind, change to the base arguments, exception, message pattern)
BAD_INPUTS = [
    # lengths
    ("lengths-negative", "batched", dict(lengths=np.array([-1, 3])), ValueError,
     r"^lengths must lie in \[0, 5\] \(the number of time steps\), got lengths\[0\] = -1$"),
    ("lengths-above-T", "batched", dict(lengths=[5, 6]), ValueError,
     r"^lengths must lie in \[0, 5\] .*got lengths\[1\] = 6$"),
    ("lengths-huge-uint64", "batched", dict(lengths=np.array([2, 2**63], np.uint64)), ValueError,
     r"^lengths must lie in \[0, 5\] .*got lengths\[1\] = 9223372036854775808$"),
    ("lengths-read-only-and-bad", "batched", _read_only_lengths, ValueError,
     r"got lengths\[0\] = 9$"),
    ("lengths-too-few", "batched", dict(lengths=np.array([3])), ValueError,
     r"^lengths must have shape \(2,\) \(one length per sequence of the batch\), got \(1,\)$"),
    ("lengths-too-many", "batched", dict(lengths=[1, 2, 3]), ValueError,
     r"^lengths must have shape \(2,\) .*got \(3,\)$"),
    ("lengths-2d", "batched", dict(lengths=np.array([[1], [2]])), ValueError,
     r"^lengths must have shape \(2,\) .*got \(2, 1\)$"),
    ("lengths-scalar-batched", "batched", dict(lengths=3), ValueError,
     r"^lengths must have shape \(2,\) .*got \(\)$"),
    ("lengths-time-major-uses-B", "time-major", dict(lengths=np.array([1, 2, 3, 4, 5])),
     ValueError, r"^lengths must have shape \(2,\) .*got \(5,\)$"),
    ("lengths-unbatched-above-T", "unbatched", dict(lengths=7), ValueError,
     r"^lengths must lie in \[0, 6\] .*got lengths\[0\] = 7$"),
    ("lengths-unbatched-two", "unbatched", dict(lengths=[3, 3]), ValueError,
     r"^lengths must have shape \(1,\) .*got \(2,\)$"),
    ("lengths-float", "batched", dict(lengths=np.array([2.0, 3.0])), TypeError,
     r"^lengths must be an integer array, got dtype float64 \(shape \(2,\)\)$"),
    ("lengths-bool", "batched", dict(lengths=[True, False]), TypeError,
     r"^lengths must be an integer array, got dtype bool"),
    ("lengths-complex", "batched", dict(lengths=np.array([2, 3], np.complex64)), TypeError,
     r"^lengths must be an integer array, got dtype complex64"),
    ("lengths-object", "batched", dict(lengths=np.array([2, 3], dtype=object)), TypeError,
     r"^lengths must be an integer array, got dtype object"),
    ("lengths-str", "batched", dict(lengths=["2", "3"]), TypeError,
     r"^lengths must be an integer array, got dtype <U1"),
    # leak
    ("leak-zero", "batched", dict(leak=0.0), ValueError, r"^leak must lie in \(0, 1\], got 0\.0$"),
    ("leak-negative", "batched", dict(leak=-0.5), ValueError, r"^leak must lie in \(0, 1\], got"),
    ("leak-above-one", "batched", dict(leak=1.5), ValueError, r"^leak must lie in \(0, 1\], got"),
    ("leak-nan", "batched", dict(leak=float("nan")), ValueError,
     r"^leak must lie in \(0, 1\], got nan"),
    ("leak-inf", "batched", dict(leak=np.inf), ValueError, r"^leak must lie in \(0, 1\], got inf"),
    ("leak-one-bad-unit", "batched", dict(leak=np.array([0.5, 0.5, 0.0, 0.5])), ValueError,
     r"^leak must lie in \(0, 1\], got 0\.0$"),
    ("leak-wrong-length", "batched", dict(leak=np.full(3, 0.5)), ValueError,
     r"^leak must be a float or have shape \(4,\) \(hidden_size,\), got \(3,\)$"),
    ("leak-2d", "batched", dict(leak=np.full((1, 4), 0.5)), ValueError,
     r"^leak must be a float or have shape \(4,\) .*got \(1, 4\)$"),
    ("leak-complex", "batched", dict(leak=0.5 + 0j), TypeError,
     r"^leak must be a float or an array of floats, got dtype complex128"),
    ("leak-bool", "batched", dict(leak=True), TypeError,
     r"^leak must be a float or an array of floats, got dtype bool"),
    ("leak-str", "batched", dict(leak="0.5"), TypeError,
     r"^leak must be a float or an array of floats, got dtype <U3"),
    ("leak-none-inside", "batched", dict(leak=[0.5, None, 0.5, 0.5]), TypeError,
     r"^leak must be a float or an array of floats, got dtype object"),
    # threads
    ("threads-zero", "batched", dict(threads=0), ValueError,
     r"^threads must be None or an int >= 1, got 0$"),
    ("threads-negative", "batched", dict(threads=np.int64(-2)), ValueError,
     r"^threads must be None or an int >= 1, got -2$"),
    ("threads-float", "batched", dict(threads=2.0), TypeError,
     r"^threads must be None or an int >= 1, got float$"),
    ("threads-bool", "batched", dict(threads=True), TypeError,
     r"^threads must be None or an int >= 1, got bool$"),
    ("threads-str", "batched", dict(threads="2"), TypeError,
     r"^threads must be None or an int >= 1, got str$"),
    # return_sequences
    ("return_sequences-int", "batched", dict(return_sequences=0), TypeError,
     r"^return_sequences must be a bool, got int$"),
    ("return_sequences-none", "batched", dict(return_sequences=None), TypeError,
     r"^return_sequences must be a bool, got NoneType$"),
    ("return_sequences-false-with-out", "batched",
     dict(return_sequences=False, out=np.zeros((2, 5, 4))), ValueError,
     r"^out must be None when return_sequences=False"),
    # sparse w_hh
    ("sparse-w_hh-wrong-shape", "batched",
     lambda a: dict(a, w_hh=_sparse(np.eye(4, 5))), ValueError,
     r"^w_hh must have shape \(4, 4\) \(hidden_size, hidden_size\) to match w_ih of shape "
     r"\(4, 3\), got \(4, 5\)$"),
    ("sparse-w_hh-int", "batched",
     lambda a: dict(a, w_hh=_sparse(np.eye(4), dtype=np.int64)), TypeError,
     r"^w_hh must have dtype float32 or float64, got sparse int64 \(shape \(4, 4\)\)"),
    ("sparse-w_hh-bool", "batched",
     lambda a: dict(a, w_hh=_sparse(np.eye(4), dtype=bool)), TypeError,
     r"^w_hh must have dtype float32 or float64, got sparse bool"),
    ("sparse-w_hh-complex-csc", "batched",
     lambda a: dict(a, w_hh=_sparse(np.eye(4), "csc", np.complex128)), TypeError,
     r"^w_hh must have dtype float32 or float64, got sparse complex128"),
    ("sparse-w_hh-float32-mixed", "batched",
     lambda a: dict(a, w_hh=_sparse(a["w_hh"], "coo", np.float32)), TypeError,
     r"^all floating arguments must share one dtype .*got x=float64, w_ih=float64, "
     r"w_hh=float32, b_ih=float64"),
    ("out-overlaps-sparse-w_hh", "batched", _overlapping_out, ValueError,
     r"^out must not overlap any input, but it shares memory with w_hh"),
    # odd objects
    ("x-none", "batched", dict(x=None), TypeError,
     r"^x must have dtype float32 or float64, got object \(shape \(\)\)"),
    ("x-string", "batched", dict(x="abc"), TypeError,
     r"^x must have dtype float32 or float64, got <U3"),
    ("x-longdouble", "batched", lambda a: dict(a, x=a["x"].astype(np.longdouble)), TypeError,
     r"^x must have dtype float32 or float64, got float128"),
    ("x-datetime", "batched", dict(x=np.zeros((2, 5, 3), "M8[s]")), TypeError,
     r"^x must have dtype float32 or float64, got datetime64\[s\]"),
    ("x-structured", "batched", dict(x=np.zeros((2, 5, 3), [("a", "f8")])), TypeError,
     r"^x must have dtype float32 or float64, got \[\('a', '<f8'\)\]"),
    ("x-mixed-list", "batched", lambda a: dict(a, x=[[[1.0, "a", 2.0]] * 5] * 2), TypeError,
     r"^x must have dtype float32 or float64, got <U32"),
    ("w_hh-none", "batched", dict(w_hh=None), TypeError,
     r"^w_hh must have dtype float32 or float64, got object \(shape \(\)\)"),
    ("w_ih-dict", "batched", dict(w_ih={"a": 1.0}), TypeError,
     r"^w_ih must have dtype float32 or float64, got object"),
    ("b_ih-ragged", "batched", dict(b_ih=[[0.0, 1.0], [2.0]]), TypeError,
     r"^b_ih must be a float32 or float64 array; could not convert list"),
    ("h0-mixed-float32", "float32", lambda a: dict(a, h0=a["h0"].astype(np.float64)),
     TypeError, r"^all floating arguments must share one dtype .*h0=float64"),
    ("h0-complex", "batched", lambda a: dict(a, h0=a["h0"].astype(np.complex128)), TypeError,
     r"^h0 must have dtype float32 or float64, got complex128"),
    ("x-unbatched-h0-batched", "unbatched", lambda a: dict(a, h0=a["h0"][None]), ValueError,
     r"^h0 must have shape \(4,\) \(hidden_size,\) for unbatched x of shape \(6, 3\), "
     r"got \(1, 4\)$"),
    ("out-time-major-wrong-layout", "time-major", dict(out=np.zeros((2, 5, 4))), ValueError,
     r"^out must have shape \(5, 2, 4\) and dtype float64"),
    ("backend-bytes", "batched", dict(backend=b"numba"), ValueError,
     r"^backend must be one of \('auto', 'numba', 'numpy'\), got b'numba'$"),
    ("backend-auto-capitalised", "batched", dict(backend="Auto"), ValueError,
     r"^backend must be one of .*got 'Auto'$"),
    ("nonlinearity-list", "batched", dict(nonlinearity=["tanh"]), ValueError,
     r"^nonlinearity must be one of \('tanh', 'relu'\), got \['tanh'\]$"),
    ("nonlinearity-identity", "batched", dict(nonlinearity="identity"), ValueError,
     r"^nonlinearity must be one of \('tanh', 'relu'\), got 'identity'$"),
]


def _snapshot(value):
    """What an argument looks like now: array bytes and flags, a sparse
    matrix's arrays, a deep copy of anything else."""
    if isinstance(value, np.ndarray):
        data = (value.tolist() if value.dtype == object else value.tobytes())
        return ("array", value.dtype, value.shape, value.strides, data, value.flags.writeable)
    if type(value).__module__.startswith("scipy.sparse"):
        return ("sparse", value.format, value.shape,
                tuple(_snapshot(getattr(value, name)) for name in
                      ("data", "indices", "indptr", "row", "col") if hasattr(value, name)))
    return ("other", copy.deepcopy(value))


@pytest.mark.parametrize(
    ("kind", "change", "exception", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_bad_input(make_problem, kind, change, exception, message, backend):
    base = _base(make_problem, kind)
    arguments = change(base) if callable(change) else dict(base, **change)
    arguments.setdefault("backend", backend)
    before = {name: _snapshot(value) for name, value in arguments.items()}
    with pytest.raises(exception, match=message):
        fastrnn.forward(**arguments)
    after = {name: _snapshot(value) for name, value in arguments.items()}
    for name in before:
        assert after[name] == before[name], f"{name} was changed"


def test_bad_inputs_are_named_uniquely():
    names = [case[0] for case in BAD_INPUTS]
    assert len(names) == len(set(names))


# --- NaN and infinities --------------------------------------------------------------------------

# (id, where, value): one element of one argument set to a non-finite value.
NON_FINITE = [
    ("x-nan", ("x", (1, 3, 0)), np.nan),
    ("x-+inf", ("x", (0, 2, 1)), np.inf),
    ("x--inf", ("x", (1, 0, 2)), -np.inf),
    ("w_ih-inf", ("w_ih", (2, 1)), np.inf),
    ("w_hh-nan", ("w_hh", (0, 3)), np.nan),
    ("w_hh--inf", ("w_hh", (1, 1)), -np.inf),
    ("b_ih-nan", ("b_ih", (3,)), np.nan),
    ("b_hh-+inf", ("b_hh", (0,)), np.inf),
    ("h0-nan", ("h0", (0, 2)), np.nan),
    ("h0-inf", ("h0", (1, 0)), np.inf),
]
SIZES = {
    "small": dict(batch=3, steps=6, input_size=3, hidden_size=4),
    "threaded": dict(batch=10, steps=200, input_size=16, hidden_size=32),
    "blas": dict(batch=3, steps=6, input_size=3, hidden_size=256),
}


def _naive(problem, nonlinearity):
    import naive

    with np.errstate(all="ignore"):  # inf - inf in the reference's sums
        return naive.rnn(**problem, nonlinearity=nonlinearity)


@pytest.mark.parametrize(("where", "value"), [pytest.param(*c[1:], id=c[0]) for c in NON_FINITE])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_non_finite_values_propagate(make_problem, assert_close, where, value, nonlinearity,
                                     size, backend):
    problem = make_problem(310, h0=True, **SIZES[size])
    name, index = where
    problem[name][index] = value
    output, h_n = fastrnn.forward(**problem, nonlinearity=nonlinearity, backend=backend)
    expected_output, expected_h_n = _naive(problem, nonlinearity)
    assert_close(output, expected_output)  # NaN at the same places
    assert_close(h_n, expected_h_n)
    if name in ("x", "h0"):  # one sample's input: the others are untouched
        other = 2 if index[0] != 2 else 0
        assert np.isfinite(output[other]).all() and np.isfinite(h_n[other]).all()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_nan_input(make_problem, backend, dtype):
    problem = make_problem(311, batch=4, steps=7, dtype=dtype)
    problem["x"][:] = np.nan
    output, h_n = fastrnn.forward(**problem, backend=backend)
    assert np.isnan(output).all() and np.isnan(h_n).all()


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_non_finite_after_the_end_of_a_sequence_is_never_read(make_problem, size, backend):
    # Padding past each sequence's length may hold anything: NaN and inf
    # there change nothing (outputs past the end are zero, h_n as without).
    problem = make_problem(312, h0=True, **SIZES[size])
    batch, steps = problem["x"].shape[:2]
    lengths = np.random.default_rng(0).integers(0, steps, batch)
    clean, clean_h_n = fastrnn.forward(**problem, lengths=lengths, backend=backend)
    dirty = problem["x"].copy()
    for b, length in enumerate(lengths):
        dirty[b, length:] = [np.nan, np.inf, -np.inf][b % 3]
    output, h_n = fastrnn.forward(**dict(problem, x=dirty), lengths=lengths, backend=backend)
    np.testing.assert_array_equal(output, clean)
    np.testing.assert_array_equal(h_n, clean_h_n)
    assert np.isfinite(output).all()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_huge_finite_values(make_problem, backend):
    # Pre-activations overflowing to +-inf saturate tanh to +-1, no NaN.
    problem = make_problem(313, batch=2, steps=4)
    problem["x"] = np.where(problem["x"] > 0, 1e308, -1e308)
    output, _ = fastrnn.forward(**problem, backend=backend)
    assert np.isfinite(output).all() and (np.abs(output) <= 1).all()


# --- extreme sizes --------------------------------------------------------------------------------

LONG = 1_000_000


@pytest.fixture(scope="module")
def long_problem():
    rng = np.random.default_rng(320)
    x = rng.standard_normal((1, LONG, 4), dtype=np.float32)
    w_ih = (rng.standard_normal((8, 4)) / 2).astype(np.float32)
    w_hh = (rng.standard_normal((8, 8)) / 4).astype(np.float32)
    b_ih = (rng.standard_normal(8) / 4).astype(np.float32)
    return dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih)


@pytest.mark.slow
def test_a_million_steps(long_problem):
    output, h_n = fastrnn.forward(**long_problem)
    assert output.shape == (1, LONG, 8) and np.isfinite(output).all()
    np.testing.assert_array_equal(h_n, output[:, -1])
    # The same run in two halves, the second starting from the first's h_n.
    half = LONG // 2
    first, middle = fastrnn.forward(**dict(long_problem, x=long_problem["x"][:, :half]))
    second, end = fastrnn.forward(**dict(long_problem, x=long_problem["x"][:, half:]),
                                  h0=middle)
    np.testing.assert_allclose(output[:, :half], first, rtol=0, atol=1e-6)
    np.testing.assert_allclose(output[:, half:], second, rtol=0, atol=1e-6)
    np.testing.assert_allclose(end, h_n, rtol=0, atol=1e-6)
    # Only the final state, and with lengths: a batch of the long sequence
    # and a 10-step one.
    np.testing.assert_array_equal(fastrnn.forward(**long_problem, return_sequences=False), h_n)
    x2 = np.concatenate([long_problem["x"], long_problem["x"]])
    h2 = fastrnn.forward(**dict(long_problem, x=x2), lengths=[LONG, 10], return_sequences=False)
    np.testing.assert_allclose(h2[0], h_n[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(h2[1], output[0, 9], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_million_steps_numpy_backend(long_problem):
    # The NumPy backend (about 5 s here): only h_n, in bounded memory.
    expected = fastrnn.forward(**long_problem, return_sequences=False, backend="numba")
    h_n = fastrnn.forward(**long_problem, return_sequences=False, backend="numpy")
    np.testing.assert_allclose(h_n, expected, rtol=0, atol=1e-5)


# --- resident memory over many calls --------------------------------------------------------------


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pytest.skip("needs /proc/self/statm")


CALLS = 100_000
# 100 000 calls: a leak of 64 bytes per call (one small object) would be
# 6.4 MB; allocator noise after the warm-up is well under 1 MB.
RSS_GROWTH_LIMIT = 4 * 1024 * 1024


def _small_call(make_problem, variant):
    problem = make_problem(330, batch=2, steps=10, input_size=4, hidden_size=8,
                           dtype=np.float32, h0=True)
    if variant == "numba":
        return lambda: fastrnn.forward(**problem, backend="numba")
    if variant == "numba-lengths-leak-out":
        out = np.empty((2, 10, 8), np.float32)
        lengths = np.array([10, 4])
        return lambda: fastrnn.forward(**problem, lengths=lengths, leak=0.5, out=out,
                                       backend="numba")
    if variant == "numba-sparse-unbatched":
        w_hh = _sparse(problem["w_hh"])
        x, h0 = problem["x"][0], problem["h0"][0]
        return lambda: fastrnn.forward(**dict(problem, w_hh=w_hh, x=x, h0=h0), backend="numba")
    if variant == "numpy":
        return lambda: fastrnn.forward(**problem, backend="numpy")
    if variant == "rejected":
        bad = dict(problem, lengths=[1, 99])

        def rejected():
            try:
                fastrnn.forward(**bad)
            except ValueError:
                pass
            else:
                raise AssertionError("accepted")

        return rejected
    raise AssertionError(variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["numba", "numba-lengths-leak-out", "numba-sparse-unbatched",
                                     "numpy", "rejected"])
def test_repeated_calls_keep_memory_flat(make_problem, variant):
    call = _small_call(make_problem, variant)
    calls = CALLS if variant != "numpy" else CALLS // 4  # the NumPy backend is ~5x slower
    for _ in range(calls // 10):  # warm-up: compilation, caches, allocator pools
        call()
    before = _rss_bytes()
    for _ in range(calls):
        call()
    growth = _rss_bytes() - before
    assert growth < RSS_GROWTH_LIMIT, f"resident memory grew {growth / 2**20:.1f} MiB"


# --- an unusable Numba cache ----------------------------------------------------------------------

_CACHE_SCRIPT = textwrap.dedent("""
    import sys, warnings
    import numpy as np
    sys.path.insert(0, {tests_dir!r})
    import naive
    import fastrnn
    assert fastrnn.__file__.startswith({package_root!r}), fastrnn.__file__
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 4))
    w_ih = rng.standard_normal((5, 4)) / 2
    w_hh = rng.standard_normal((5, 5)) / 3
    expected, expected_h_n = naive.rnn(x, w_ih, w_hh)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for backend in ("auto", "numba"):
            output, h_n = fastrnn.forward(x, w_ih, w_hh, backend=backend)
            np.testing.assert_allclose(output, expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(h_n, expected_h_n, rtol=1e-12, atol=1e-12)
    from fastrnn._backends import auto_backend_name
    print(auto_backend_name(), [str(w.message)[:200] for w in caught])
""")


def _unwritable_dir(tmp_path: Path, how: str) -> Path:
    if how == "read-only-dir":
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        try:  # root ignores the mode
            (folder / "probe").write_text("")
        except OSError:
            return folder
        (folder / "probe").unlink()
        pytest.skip("running as root, where a read-only mode does not stop writes "
                    "(the under-a-file case covers it)")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "cache"  # no directory can be made under a regular file


def _run_cache_child(tmp_path, env_extra, package_root):
    env = dict(os.environ, **env_extra)
    env.pop("PYTHONWARNINGS", None)
    script = _CACHE_SCRIPT.format(tests_dir=str(TESTS_DIR), package_root=str(package_root))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("how", ["read-only-dir", "under-a-file"])
def test_unwritable_numba_cache_dir(tmp_path, how):
    # NUMBA_CACHE_DIR unusable: Numba falls back to another cache location
    # (here the package's own __pycache__) or none, and the numbers are right.
    cache_dir = _unwritable_dir(tmp_path, how)
    try:
        out = _run_cache_child(tmp_path, {"NUMBA_CACHE_DIR": str(cache_dir)},
                               FASTRNN_DIR.parent)
    finally:
        if how == "read-only-dir":
            cache_dir.chmod(0o755)
    assert out.startswith("numba ")


@pytest.mark.slow
def test_no_writable_cache_location_at_all(tmp_path):
    # A read-only install: a copy of the package whose __pycache__ is a file
    # (so Numba's in-tree cache fails), and NUMBA_CACHE_DIR and the user-wide
    # cache (XDG_CACHE_HOME, HOME) under a file. Every cache locator fails.
    site = tmp_path / "site"
    package = site / "fastrnn"
    package.mkdir(parents=True)
    for source in FASTRNN_DIR.iterdir():
        if source.suffix in (".py", ".typed"):
            (package / source.name).write_bytes(source.read_bytes())
    (package / "__pycache__").write_text("")
    blocked = _unwritable_dir(tmp_path, "under-a-file")
    env = {"NUMBA_CACHE_DIR": str(blocked), "XDG_CACHE_HOME": str(blocked / "xdg"),
           "HOME": str(blocked / "home"), "PYTHONPATH": str(site),
           "PYTHONDONTWRITEBYTECODE": "1"}
    out = _run_cache_child(tmp_path, env, package)
    assert out.startswith(("numba ", "numpy "))


# --- without Numba: one warning, even from concurrent first calls -----------------------------

_NO_NUMBA_THREADS_SCRIPT = textwrap.dedent("""
    import sys

    class _NoNumba:  # as if Numba were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "numba" or name.startswith("numba."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoNumba())
    import threading, warnings
    import numpy as np
    import fastrnn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    w_ih = rng.standard_normal((5, 4))
    w_hh = rng.standard_normal((5, 5)) / 3
    expected, _ = fastrnn.forward(x, w_ih, w_hh, backend="numpy")
    barrier = threading.Barrier(8)
    results = []

    def first_call():
        barrier.wait()
        results.append(fastrnn.forward(x, w_ih, w_hh)[0])  # backend="auto"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=first_call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 8 and all(np.array_equal(r, expected) for r in results)
    assert "numba" not in sys.modules
    print(len(caught), sorted({w.category.__name__ for w in caught}))
""")


def test_auto_fallback_warns_once_from_concurrent_first_calls(tmp_path):
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run([sys.executable, "-c", _NO_NUMBA_THREADS_SCRIPT],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(None, 1) == ["1", "['RuntimeWarning']\n"], result.stdout
