"""A malformed sparse w_hh is a ValueError, never an out-of-bounds read.

SciPy does not check the index arrays of a matrix built from raw arrays
(``csr_matrix((data, indices, indptr), shape)``) or changed in place, and
its own conversions read through them. Before this check, a column index of
10**9 killed the process (SIGSEGV, both backends), one of H or -3 silently
dropped or moved a weight, and a decreasing indptr corrupted the heap
(``double free``, NumPy backend). ``_validate.as_sparse_csr`` now checks the
structure of the format given, before SciPy converts it.

The cases run in this process (each must raise a ValueError that says what
is wrong), and once more in a subprocess on both backends, which proves that
none of them can crash the interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as scipy_sparse

import fastrnn

HIDDEN = 4  # make_problem's default hidden size
INT32_MAX = int(np.iinfo(np.int32).max)
BAD_INDICES = [HIDDEN, -3, 10**9, -(10**9), INT32_MAX]


def _csr(kind: str = "csr_matrix"):
    # Rows 0: columns 0, 1; row 1: column 2; rows 2, 3: empty. int32 index
    # arrays, as SciPy makes them for small matrices.
    data = np.array([0.5, -0.3, 0.8])
    indices = np.array([0, 1, 2], dtype=np.int32)
    indptr = np.array([0, 2, 3, 3, 3], dtype=np.int32)
    return getattr(scipy_sparse, kind)((data, indices, indptr), shape=(HIDDEN, HIDDEN))


def _coo(kind: str = "coo_matrix"):
    rows = np.array([0, 0, 1], dtype=np.int32)
    cols = np.array([0, 1, 2], dtype=np.int32)
    return getattr(scipy_sparse, kind)((np.array([0.5, -0.3, 0.8]), (rows, cols)),
                                       shape=(HIDDEN, HIDDEN))


def _forward(problem: dict, w_hh, backend: str):
    return fastrnn.forward(**dict(problem, w_hh=w_hh), backend=backend)


@pytest.mark.parametrize("kind", ["csr_matrix", "csr_array", "csc_matrix", "csc_array"])
@pytest.mark.parametrize("bad", BAD_INDICES)
def test_compressed_index_outside(backend, make_problem, kind, bad):
    w_hh = _csr(kind)  # built from raw arrays: SciPy checks none of them
    w_hh.indices[1] = bad
    minor, major = ("column", "row") if kind.startswith("csr") else ("row", "column")
    match = (rf"w_hh \(sparse {kind[:3].upper()}, shape \(4, 4\)\) is malformed: {minor} "
             rf"index {bad} at indices\[1\] \({major} 0\); {minor} indices must lie in "
             r"\[0, 4\)")
    with pytest.raises(ValueError, match=match):
        _forward(make_problem(0), w_hh, backend)


@pytest.mark.parametrize("kind", ["coo_matrix", "coo_array"])
@pytest.mark.parametrize("axis", ["row", "col"])
@pytest.mark.parametrize("bad", BAD_INDICES)
def test_coo_index_outside(backend, make_problem, kind, axis, bad):
    w_hh = _coo(kind)
    getattr(w_hh, axis)[2] = bad  # SciPy checks on construction, not afterwards
    if axis == "row":
        match = rf"row index {bad} at row\[2\] \(column 2\); row indices must lie in \[0, 4\)"
    else:
        match = rf"column index {bad} at col\[2\] \(row 1\); column indices must lie in \[0, 4\)"
    with pytest.raises(ValueError, match=r"w_hh \(sparse COO, shape \(4, 4\)\) is malformed: "
                                         + match):
        _forward(make_problem(0), w_hh, backend)


def _set(attribute: str, value):
    def change(matrix):
        setattr(matrix, attribute, value(getattr(matrix, attribute)))
        return matrix
    return change


def _assign(attribute: str, position: int, value: int):
    def change(matrix):
        getattr(matrix, attribute)[position] = value
        return matrix
    return change


@pytest.mark.parametrize(("change", "match"), [
    (_assign("indptr", -1, 7),
     r"indptr\[-1\] = 7 \(the number of stored entries\) exceeds the 3 entries of indices"),
    (_assign("indptr", -1, 10**9), r"indptr\[-1\] = 1000000000 .* exceeds the 3 entries"),
    (_assign("indptr", 2, 1), r"indptr must never decrease, got indptr\[1\] = 2 > "
                              r"indptr\[2\] = 1"),
    (_assign("indptr", 1, -1), r"indptr must never decrease, got indptr\[0\] = 0 > "
                               r"indptr\[1\] = -1"),
    (_assign("indptr", 0, 1), r"indptr must start at 0, got indptr\[0\] = 1"),
    (_set("indptr", lambda a: a[:-1]),
     r"indptr must have 5 entries \(one more than the 4 rows\), got 4"),
    (_set("indptr", lambda a: np.append(a, 3)), r"indptr must have 5 entries .* got 6"),
    (_set("indices", lambda a: a[:-1]),
     r"indices and data must have one entry per stored value, got 2 and 3"),
    (_set("data", lambda a: np.append(a, 1.0)),
     r"indices and data must have one entry per stored value, got 3 and 4"),
    (_set("indices", lambda a: a.astype(np.float64)),
     r"indices must be a 1-D integer array, got array of shape \(3,\) and dtype float64"),
    (_set("indptr", lambda a: a.reshape(1, -1)),
     r"indptr must be a 1-D integer array, got array of shape \(1, 5\)"),
], ids=["last-past-indices", "last-huge", "decreasing", "negative", "not-from-zero",
        "indptr-short", "indptr-long", "indices-short", "data-long", "float-indices",
        "2-D-indptr"])
@pytest.mark.parametrize("kind", ["csr_matrix", "csr_array"])
def test_compressed_structure(backend, make_problem, change, match, kind):
    w_hh = change(_csr(kind))
    with pytest.raises(ValueError, match=r"w_hh \(sparse CSR, shape \(4, 4\)\) is malformed: "
                                         + match):
        _forward(make_problem(0), w_hh, backend)


@pytest.mark.parametrize("kind", ["coo_matrix", "coo_array"])
def test_coo_lengths_disagree(backend, make_problem, kind):
    w_hh = _coo(kind)
    w_hh.row = w_hh.row[:-1]
    with pytest.raises(ValueError, match=r"row, col and data must have one entry per stored "
                                         r"value, got lengths 2, 3 and data"):
        _forward(make_problem(0), w_hh, backend)


def test_bsr_block_index_outside(backend, make_problem):
    w_hh = scipy_sparse.bsr_matrix(np.eye(HIDDEN), blocksize=(2, 2))
    w_hh.indices[1] = 5
    with pytest.raises(ValueError, match=r"w_hh \(sparse BSR, shape \(4, 4\)\) is malformed: "
                                         r"block column index 5 at indices\[1\] \(block row "
                                         r"1\); block column indices must lie in \[0, 2\)"):
        _forward(make_problem(0), w_hh, backend)


def test_lil_index_outside(backend, make_problem):
    # LIL, DOK and DIA are converted by SciPy, which checks what it builds.
    w_hh = scipy_sparse.lil_matrix((HIDDEN, HIDDEN))
    w_hh.rows[0], w_hh.data[0] = [7], [1.0]
    with pytest.raises(ValueError, match=r"w_hh \(sparse LIL, shape \(4, 4\)\) is malformed: "
                                         r".*index 7"):
        _forward(make_problem(0), w_hh, backend)


def test_valid_structure_unchanged_and_accepted(backend, make_problem, assert_close):
    # Duplicates and unsorted indices are valid, summed as SciPy does; the
    # check leaves the caller's arrays as they were.
    w_hh = scipy_sparse.csr_array((np.array([0.5, -0.3, 0.8, 0.2]),
                                   np.array([1, 0, 2, 2], dtype=np.int32),
                                   np.array([0, 2, 4, 4, 4], dtype=np.int32)),
                                  shape=(HIDDEN, HIDDEN))
    before = [a.copy() for a in (w_hh.data, w_hh.indices, w_hh.indptr)]
    dense = np.zeros((HIDDEN, HIDDEN))
    dense[0, 1], dense[0, 0], dense[1, 2] = 0.5, -0.3, 1.0
    problem = make_problem(0)
    for got, expected in zip(_forward(problem, w_hh, backend),
                             _forward(problem, dense, backend), strict=True):
        assert_close(got, expected)
    for array, copy in zip((w_hh.data, w_hh.indices, w_hh.indptr), before, strict=True):
        np.testing.assert_array_equal(array, copy)


# Every malformed case above, and stored entries past indptr[-1] (valid: never
# read), on both backends, in a process of its own: exit code 0 proves that
# nothing crashed.
_NO_CRASH_SCRIPT = textwrap.dedent("""
    import numpy as np
    import scipy.sparse as sp

    import fastrnn

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 2))
    w_ih = rng.standard_normal((4, 2))

    def csr(kind):
        return getattr(sp, kind)((np.array([0.5, -0.3, 0.8]), np.array([0, 1, 2], np.int32),
                                  np.array([0, 2, 3, 3, 3], np.int32)), shape=(4, 4))

    def coo(kind):
        return getattr(sp, kind)((np.array([0.5, -0.3, 0.8]),
                                  (np.array([0, 0, 1], np.int32), np.array([0, 1, 2], np.int32))),
                                 shape=(4, 4))

    cases = []
    for bad in (4, -3, 10**9, -10**9, int(np.iinfo(np.int32).max)):
        for kind in ("csr_matrix", "csr_array", "csc_matrix", "csc_array"):
            matrix = csr(kind)
            matrix.indices[1] = bad
            cases.append(matrix)
        for kind in ("coo_matrix", "coo_array"):
            for axis in ("row", "col"):
                matrix = coo(kind)
                getattr(matrix, axis)[2] = bad
                cases.append(matrix)
    for position, value in ((-1, 7), (-1, 10**9), (2, 1), (1, -1), (0, 1)):
        matrix = csr("csr_matrix")
        matrix.indptr[position] = value
        cases.append(matrix)
    rejected = 0
    for backend in ("numba", "numpy"):
        for matrix in cases:
            try:
                fastrnn.forward(x, w_ih, matrix, backend=backend)
            except ValueError as exc:
                assert "is malformed" in str(exc), exc
                rejected += 1
        # Capacity past indptr[-1] holds garbage that must never be read.
        matrix = csr("csr_matrix")
        matrix.indices = np.append(matrix.indices, np.int32(10**9))
        matrix.data = np.append(matrix.data, 1e300)
        dense = np.zeros((4, 4))
        dense[0, 0], dense[0, 1], dense[1, 2] = 0.5, -0.3, 0.8
        got = fastrnn.forward(x, w_ih, matrix, backend=backend)[1]
        expected = fastrnn.forward(x, w_ih, dense, backend=backend)[1]
        assert np.allclose(got, expected, rtol=1e-12, atol=1e-12), (got, expected)
    print(rejected, 2 * len(cases))
""")


def test_malformed_never_crashes():
    result = subprocess.run([sys.executable, "-c", _NO_CRASH_SCRIPT], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, (
        f"exit code {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n"
        f"{result.stderr}")
    rejected, cases = result.stdout.split()
    assert rejected == cases, result.stdout
