"""fastrnn.dask.forward against fastrnn.forward: Dask's local threaded
scheduler for the many chunkings and options, one distributed.LocalCluster
(two worker processes of one thread each, started and closed by this module)
for the real thing.

The per-chunk results are compared with the in-memory forward within the
suite's tolerances, not bitwise: the Numba kernel's rounding of a sample
depends (in the last bit) on its position in the 4-sample register block, so
a sample computed in a chunk of 3 may differ by an ulp from the same sample
in a batch of 10.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastrnn  # noqa: E402
import fastrnn.dask as fdask  # noqa: E402


def _problem(make_problem, seed=0, *, batch=11, steps=7, dtype=np.float64, batch_first=True,
             h0=True, lengths=False, **sizes):
    problem = make_problem(seed, batch=batch, steps=steps, dtype=dtype, batch_first=batch_first,
                           h0=h0, **sizes)
    if lengths:
        rng = np.random.default_rng(seed + 1000)
        problem["lengths"] = rng.integers(0, steps + 1, batch)
        problem["lengths"][0] = steps
        if batch > 1:
            problem["lengths"][1] = 0
    return problem


def _lazy(problem, x_chunks, h0_chunks=None, lengths_chunks=None):
    """problem with x (and h0/lengths when chunks are given) as dask arrays."""
    lazy = dict(problem, x=da.from_array(problem["x"], chunks=x_chunks))
    if h0_chunks is not None:
        lazy["h0"] = da.from_array(problem["h0"], chunks=h0_chunks)
    if lengths_chunks is not None:
        lazy["lengths"] = da.from_array(problem["lengths"], chunks=lengths_chunks)
    return lazy


def _assert_matches(lazy_result, problem, forward_tolerance, scheduler="threads", **options):
    """dask.compute of a fastrnn.dask result equals fastrnn.forward's."""
    expected = fastrnn.forward(**problem, **options)
    actual = dask.compute(*lazy_result, scheduler=scheduler)
    for got, want, name in zip(actual, expected, ("output", "h_n"), strict=True):
        assert isinstance(got, np.ndarray), name
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_allclose(got, want, err_msg=name, **forward_tolerance[want.dtype])
    return actual


# --- the local threaded scheduler -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch_chunks", [11, 4, 1, (5, 1, 5), (0, 11)],
                         ids=["one", "by4", "by1", "uneven", "empty-first"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-major"])
def test_chunkings(make_problem, forward_tolerance, dtype, batch_chunks, batch_first):
    problem = _problem(make_problem, 1, dtype=dtype, batch_first=batch_first)
    chunks = (batch_chunks, -1, -1) if batch_first else (-1, batch_chunks, -1)
    lazy = _lazy(problem, chunks)
    output, h_n = fdask.forward(**lazy)
    batch_axis = 0 if batch_first else 1
    assert output.chunks[batch_axis] == lazy["x"].chunks[batch_axis]
    assert h_n.chunks[0] == lazy["x"].chunks[batch_axis]
    assert output.dtype == dtype and h_n.dtype == dtype
    _assert_matches((output, h_n), problem, forward_tolerance)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_options(make_problem, forward_tolerance, nonlinearity, backend):
    problem = _problem(make_problem, 2, b_ih=False)
    lazy = _lazy(problem, (3, -1, -1))
    result = fdask.forward(**lazy, nonlinearity=nonlinearity, backend=backend)
    _assert_matches(result, problem, forward_tolerance, nonlinearity=nonlinearity,
                    backend=backend)


@pytest.mark.parametrize(
    ("h0_kind", "lengths_kind"),
    [("none", "none"), ("numpy", "none"), ("dask", "none"), ("none", "numpy"),
     ("numpy", "numpy"), ("dask", "dask"), ("numpy", "dask"), ("dask", "numpy")],
)
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-major"])
def test_h0_and_lengths(make_problem, forward_tolerance, h0_kind, lengths_kind, batch_first):
    problem = _problem(make_problem, 3, batch=9, steps=6, batch_first=batch_first,
                       h0=h0_kind != "none", lengths=lengths_kind != "none")
    chunks = (4, -1, -1) if batch_first else (-1, 4, -1)
    lazy = _lazy(problem, chunks, h0_chunks=(4, -1) if h0_kind == "dask" else None,
                 lengths_chunks=4 if lengths_kind == "dask" else None)
    _assert_matches(fdask.forward(**lazy), problem, forward_tolerance)


def test_lengths_zero_and_full(make_problem, forward_tolerance):
    # Whole chunks of empty and of full sequences.
    problem = _problem(make_problem, 4, batch=8, steps=5, h0=True)
    problem["lengths"] = np.array([0, 0, 0, 0, 5, 5, 5, 5])
    output, h_n = _assert_matches(fdask.forward(**_lazy(problem, (4, -1, -1))), problem,
                                  forward_tolerance)
    np.testing.assert_array_equal(output[:4], 0)
    np.testing.assert_array_equal(h_n[:4], problem["h0"][:4])


def test_leak(make_problem, forward_tolerance):
    problem = dict(_problem(make_problem, 5), leak=0.3)
    _assert_matches(fdask.forward(**_lazy(problem, (4, -1, -1))), problem, forward_tolerance)


def test_sparse_w_hh(make_problem, forward_tolerance):
    sparse = pytest.importorskip("scipy.sparse")
    problem = _problem(make_problem, 6, hidden_size=6)
    w_hh = problem["w_hh"].copy()
    w_hh[np.abs(w_hh) < 0.4] = 0
    problem["w_hh"] = sparse.csr_matrix(w_hh)
    _assert_matches(fdask.forward(**_lazy(problem, (4, -1, -1))), problem, forward_tolerance)


def test_return_sequences_false(make_problem, forward_tolerance):
    problem = _problem(make_problem, 7, lengths=True)
    h_n = fdask.forward(**_lazy(problem, (4, -1, -1)), return_sequences=False)
    assert h_n.shape == (11, 4) and h_n.chunks == ((4, 4, 3), (4,))
    expected = fastrnn.forward(**problem, return_sequences=False)
    np.testing.assert_allclose(h_n.compute(scheduler="threads"), expected,
                               **forward_tolerance[expected.dtype])


def test_empty_sizes(make_problem):
    # T = 0: output (B, 0, H) and h_n == h0; B = 0: empty results.
    problem = _problem(make_problem, 8, steps=0)
    output, h_n = dask.compute(*fdask.forward(**_lazy(problem, (4, -1, -1))))
    assert output.shape == (11, 0, 4)
    np.testing.assert_array_equal(h_n, problem["h0"])
    problem = _problem(make_problem, 8, batch=0, h0=False)
    output, h_n = dask.compute(*fdask.forward(**_lazy(problem, (4, -1, -1))))
    assert output.shape == (0, 7, 4) and h_n.shape == (0, 4)


@pytest.mark.parametrize(
    "x_chunks", [(4, 3, -1), (4, -1, 2), (4, 2, 1)], ids=["time", "features", "both"]
)
def test_rechunk_warning(make_problem, forward_tolerance, x_chunks):
    problem = _problem(make_problem, 9)
    lazy = _lazy(problem, x_chunks)
    with pytest.warns(fdask.RechunkWarning, match=r"rechunking them to one chunk each") as caught:
        output, h_n = fdask.forward(**lazy)
    assert len(caught) == 1
    assert caught[0].filename == __file__  # points at the caller
    assert output.chunks == ((4, 4, 3), (7,), (4,))  # the batch chunks are kept
    _assert_matches((output, h_n), problem, forward_tolerance)


@pytest.mark.parametrize("name", ["h0", "lengths"])
def test_rechunk_warning_for_misaligned_h0_or_lengths(make_problem, forward_tolerance, name):
    problem = _problem(make_problem, 10, lengths=True)
    lazy = _lazy(problem, (4, -1, -1), h0_chunks=(3, -1) if name == "h0" else None,
                 lengths_chunks=5 if name == "lengths" else None)
    with pytest.warns(fdask.RechunkWarning, match=rf"{name} has chunks .* rechunking it to "
                                                  r"x's batch chunks \(4, 4, 3\)"):
        result = fdask.forward(**lazy)
    _assert_matches(result, problem, forward_tolerance)


def test_no_warning_when_aligned(make_problem, recwarn):
    problem = _problem(make_problem, 11, lengths=True)
    fdask.forward(**_lazy(problem, (4, -1, -1), h0_chunks=(4, -1), lengths_chunks=4))
    assert not recwarn.list


def test_each_chunk_runs_once_for_both_results(make_problem, monkeypatch):
    calls = []
    real = fdask.run_layer

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(fdask, "run_layer", counting)
    problem = _problem(make_problem, 12)
    output, h_n = fdask.forward(**_lazy(problem, (4, -1, -1)))
    assert not calls  # lazy
    dask.compute(output, h_n, scheduler="threads")
    assert sorted(calls) == [(3, 7, 3), (4, 7, 3), (4, 7, 3)]


def test_weights_enter_the_graph_once(make_problem):
    # One key holds the weights; the 11 forward tasks refer to it and carry
    # no copy (a copy would make each pickled task larger than w_hh).
    problem = _problem(make_problem, 13, hidden_size=64)
    output, h_n = fdask.forward(**_lazy(problem, (1, -1, -1)))
    graph = {**dict(output.__dask_graph__()), **dict(h_n.__dask_graph__())}
    weight_keys = [key for key in graph if "fastrnn-weights" in str(key)]
    forward_keys = [key for key in graph if "fastrnn-forward" in str(key)]
    assert len(weight_keys) == 1 and len(forward_keys) == 11
    w_hh_bytes = problem["w_hh"].nbytes
    assert len(pickle.dumps(graph[weight_keys[0]])) > w_hh_bytes
    for key in forward_keys:
        assert len(pickle.dumps(graph[key])) < w_hh_bytes / 4, key
    # Same inputs, same graph: the names are deterministic.
    again, _ = fdask.forward(**_lazy(problem, (1, -1, -1)))
    assert again.name == output.name


def test_threads_per_task(make_problem, monkeypatch):
    seen = []
    real = fdask.run_layer

    def recording(*args, **kwargs):
        seen.append((kwargs["threads"], threading.current_thread() is threading.main_thread()))
        return real(*args, **kwargs)

    monkeypatch.setattr(fdask, "run_layer", recording)
    lazy = _lazy(_problem(make_problem, 14), (4, -1, -1))
    dask.compute(*fdask.forward(**lazy), scheduler="synchronous")
    assert seen == [(None, True)] * 3  # the main thread: fastrnn.forward's default
    seen.clear()
    dask.compute(*fdask.forward(**lazy), scheduler="threads")
    assert {threads for threads, _ in seen} == {1} and len(seen) == 3  # pool threads: one each
    seen.clear()
    dask.compute(*fdask.forward(**lazy, threads=2), scheduler="threads")
    assert [threads for threads, _ in seen] == [2] * 3


def test_task_threads_rule():
    assert fdask.task_threads(3) == 3
    assert fdask.task_threads(None) is None  # main thread, not on a worker
    found = []
    thread = threading.Thread(target=lambda: found.append(fdask.task_threads(None)))
    thread.start()
    thread.join()
    assert found == [1]


# --- errors at graph-build time --------------------------------------------------------------


@pytest.fixture
def lazy_problem(make_problem):
    problem = _problem(make_problem, 15, lengths=True)
    return problem, _lazy(problem, (4, -1, -1))


def test_x_must_be_dask(lazy_problem):
    problem, _ = lazy_problem
    with pytest.raises(TypeError, match=r"^x must be a dask array, got ndarray; for in-memory "
                                        r"data call fastrnn.forward"):
        fdask.forward(**problem)


@pytest.mark.parametrize("shape", [(5, 3), (2, 2, 5, 3), (4,)])
def test_x_must_be_3d(lazy_problem, shape):
    _, lazy = lazy_problem
    x = da.zeros(shape)
    with pytest.raises(ValueError, match=r"^x must be a 3-D dask array: .* got shape "
                                         + re.escape(str(shape))):
        fdask.forward(**dict(lazy, x=x))


def test_x_unknown_chunk_sizes(lazy_problem):
    _, lazy = lazy_problem
    x = lazy["x"][lazy["x"][:, 0, 0] > -100]  # a boolean mask: unknown batch size
    with pytest.raises(ValueError, match=r"x must have known chunk sizes.*compute_chunk_sizes"):
        fdask.forward(**dict(lazy, h0=None, lengths=None, x=x))


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex64, bool, object])
def test_x_dtype(lazy_problem, dtype):
    _, lazy = lazy_problem
    x = lazy["x"].astype(dtype)
    with pytest.raises(TypeError, match=rf"^x must have dtype float32 or float64, got "
                                        rf"{np.dtype(dtype)} \(shape \(11, 7, 3\)\)"):
        fdask.forward(**dict(lazy, x=x))


def test_mixed_dtypes(lazy_problem):
    _, lazy = lazy_problem
    with pytest.raises(TypeError, match=r"all floating arguments must share one dtype.*"
                                        r"x=float32, w_ih=float64"):
        fdask.forward(**dict(lazy, x=lazy["x"].astype(np.float32)))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("w_ih", np.zeros((4, 2)), r"w_ih must have shape \(4, 3\) \(hidden_size, input_size\) "
                                   r"to match x of shape \(11, 7, 3\) and w_hh of shape "
                                   r"\(4, 4\), got \(4, 2\)"),
        ("w_hh", np.zeros((4, 5)), r"w_hh must have shape \(4, 4\)"),
        ("b_hh", np.zeros(5), r"b_hh must have shape \(4,\)"),
        ("h0", np.zeros((10, 4)), r"h0 must have shape \(11, 4\) \(batch, hidden_size\)"),
        ("h0", da.zeros((11, 5)), r"h0 must have shape \(11, 4\) \(batch, hidden_size\) for x "
                                  r"of shape \(11, 7, 3\), got \(11, 5\)"),
        ("lengths", np.zeros(10, int), r"lengths must have shape \(11,\)"),
        ("lengths", da.zeros(12, dtype=int), r"lengths must have shape \(11,\)"),
        ("lengths", np.full(11, 8), r"lengths must lie in \[0, 7\].*got lengths\[0\] = 8"),
        ("leak", 1.5, r"leak must lie in \(0, 1\]"),
        ("nonlinearity", "sigmoid", r"nonlinearity must be one of \('tanh', 'relu'\)"),
        ("backend", "torch", r"backend must be one of \('auto', 'numba', 'numpy'\), got 'torch'"),
        ("threads", 0, r"threads must be None or an int >= 1, got 0"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 14 else "",
)
def test_value_errors(lazy_problem, name, value, message):
    _, lazy = lazy_problem
    with pytest.raises(ValueError, match=message):
        fdask.forward(**dict(lazy, **{name: value}))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("w_ih", np.zeros((4, 3), np.int32), r"w_ih must have dtype float32 or float64"),
        ("h0", da.zeros((11, 4), dtype=np.float32), r"must share one dtype.*h0=float32"),
        ("lengths", da.zeros(11, dtype=float), r"lengths must be an integer array, got dtype "
                                               r"float64"),
        ("lengths", np.zeros(11, bool), r"lengths must be an integer array, got dtype bool"),
        ("w_hh", da.zeros((4, 4)), r"w_hh must be a NumPy array .* got a dask array"),
        ("batch_first", 1, r"batch_first must be a bool, got int"),
        ("threads", 1.0, r"threads must be None or an int >= 1, got float"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 14 else "",
)
def test_type_errors(lazy_problem, name, value, message):
    _, lazy = lazy_problem
    with pytest.raises(TypeError, match=message):
        fdask.forward(**dict(lazy, **{name: value}))


def test_dask_lengths_checked_at_compute(lazy_problem):
    problem, lazy = lazy_problem
    bad = problem["lengths"].copy()
    bad[9] = 8  # in the third chunk: the message names the whole array's index
    output, h_n = fdask.forward(**dict(lazy, lengths=da.from_array(bad, chunks=4)))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 7\] .* got lengths\[9\] = 8"):
        dask.compute(output, h_n, scheduler="synchronous")


def test_arguments_unchanged(lazy_problem):
    problem, lazy = lazy_problem
    copies = {name: np.copy(value) for name, value in problem.items()
              if isinstance(value, np.ndarray)}
    dask.compute(*fdask.forward(**dict(lazy, h0=problem["h0"])), scheduler="threads")
    for name, copy in copies.items():
        np.testing.assert_array_equal(problem[name], copy, err_msg=name)


def test_import_error_without_dask(tmp_path):
    script = textwrap.dedent("""
        import sys

        class _NoDask:
            def find_spec(self, name, path=None, target=None):
                if name == "dask" or name.startswith("dask."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, _NoDask())
        import numpy as np
        import fastrnn.dask  # importing the module needs no Dask
        try:
            fastrnn.dask.forward(np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)))
        except ImportError as exc:
            assert 'pip install "fastrnn[dask]"' in str(exc), exc
        else:
            raise AssertionError("no ImportError")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr


# --- a distributed.LocalCluster ----------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    """Two worker processes with one thread each, as on a 2-core laptop.

    Starting the workers sets OMP_NUM_THREADS, MKL_NUM_THREADS and
    OPENBLAS_NUM_THREADS to 1 in this process's environment (distributed's
    nanny "pre-spawn-environ") and leaves them there: the environment is
    restored afterwards, so that later subprocess tests see the real one.
    """
    environment = dict(os.environ)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        os.environ.clear()
        os.environ.update(environment)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-major"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_cluster_matches_in_memory(client, make_problem, forward_tolerance, batch_first, dtype):
    problem = _problem(make_problem, 20, batch=23, steps=30, input_size=5, hidden_size=16,
                       dtype=dtype, batch_first=batch_first, lengths=True)
    chunks = (6, -1, -1) if batch_first else (-1, 6, -1)
    lazy = _lazy(problem, chunks, h0_chunks=(6, -1), lengths_chunks=6)
    expected = fastrnn.forward(**problem)
    actual = client.compute(list(fdask.forward(**lazy)), sync=True)
    for got, want in zip(actual, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **forward_tolerance[want.dtype])


def test_cluster_numpy_h0_and_lengths(client, make_problem, forward_tolerance):
    problem = _problem(make_problem, 21, batch=10, steps=12, lengths=True)
    result = fdask.forward(**_lazy(problem, (3, -1, -1)), leak=0.5)
    expected = fastrnn.forward(**problem, leak=0.5)
    for got, want in zip(client.compute(list(result), sync=True), expected, strict=True):
        np.testing.assert_allclose(got, want, **forward_tolerance[want.dtype])


def test_cluster_workers_do_not_oversubscribe(client, make_problem, forward_tolerance):
    # Chunks big enough for the Numba kernel's threaded path (B >= 2 and more
    # than PARALLEL_MIN_FMAS multiply-adds): on a worker each task still uses
    # one thread, so no worker ever starts fastrnn's thread pool.
    problem = _problem(make_problem, 22, batch=32, steps=1600, input_size=32, hidden_size=64,
                       dtype=np.float32, h0=False)
    lazy = _lazy(problem, (16, -1, -1))
    result = client.compute(list(fdask.forward(**lazy)), sync=True)
    expected = fastrnn.forward(**problem)
    np.testing.assert_allclose(result[1], expected[1], **forward_tolerance[np.dtype(np.float32)])

    def fastrnn_threads():
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("fastrnn"))

    assert client.run(fastrnn_threads) == {address: [] for address in client.run(os.getpid)}

    def task_view():
        worker = distributed.get_worker()
        return worker.state.nthreads, fdask.task_threads(None), os.environ.get(
            "OPENBLAS_NUM_THREADS")

    views = client.gather([client.submit(task_view, pure=False, workers=[address])
                           for address in client.scheduler_info()["workers"]])
    assert views == [(1, 1, "1"), (1, 1, "1")]


def test_cluster_errors_travel_back(client, lazy_problem):
    problem, lazy = lazy_problem
    bad = problem["lengths"].copy()
    bad[5] = -1
    result = fdask.forward(**dict(lazy, lengths=da.from_array(bad, chunks=4)))
    with pytest.raises(ValueError, match=r"got lengths\[5\] = -1"):
        client.compute(list(result), sync=True)
