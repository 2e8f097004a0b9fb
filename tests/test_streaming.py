"""Streaming: a sequence fed in chunks, each chunk's h_n passed as the next
h0, gives the outputs and final state of one call, for every option (leak,
sparse w_hh, return_sequences=False, lengths), at random chunk boundaries.

With ``lengths``, chunk k covers steps [a, b) of every sequence and each
sequence's length within it is ``clip(length - a, 0, b - a)``: a sequence
that has ended passes its state through unchanged.

Also measured here: with ``return_sequences=False``, a long stream's peak
memory does not grow with T (a fresh subprocess, peak RSS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import fastrnn

SPARSE_FORMATS = ("csr", "csc", "coo")
OPTIONS = ["plain", "leak", "leak-per-unit", "csr", "csc", "coo", "last-state-only",
           "lengths", "everything"]


def _boundaries(rng: np.random.Generator, steps: int, chunks: int) -> list[int]:
    """0 = c_0 <= c_1 <= ... <= c_n = steps, random, empty chunks included."""
    cuts = np.sort(rng.integers(0, steps + 1, size=chunks - 1))
    return [0, *map(int, cuts), steps]


def _setup(option: str, make_problem, dtype, seed: int, batch_first: bool = True):
    """(problem, keyword options) for ``fastrnn.forward``."""
    batch, steps, hidden = 3, 60, 12
    problem = make_problem(seed, batch=batch, steps=steps, input_size=4, hidden_size=hidden,
                           dtype=dtype, batch_first=batch_first, h0=True)
    rng = np.random.default_rng(seed + 1000)
    options: dict = {}
    if option in ("leak", "everything"):
        options["leak"] = 0.3
    if option == "leak-per-unit":
        options["leak"] = rng.uniform(0.05, 1.0, hidden).astype(dtype)
    if option in SPARSE_FORMATS or option == "everything":
        w_hh = problem["w_hh"] * (rng.random((hidden, hidden)) < 0.3)
        problem["w_hh"] = scipy.sparse.coo_matrix(w_hh).asformat(
            "csc" if option == "everything" else option)
    if option in ("last-state-only", "everything"):
        options["return_sequences"] = False
    if option in ("lengths", "everything"):
        options["lengths"] = np.array([steps, 0, steps // 3])[:batch]
    return problem, options


def _stream(problem: dict, options: dict, bounds: list[int], backend: str):
    """Run ``problem`` chunk by chunk; (output or None, h_n)."""
    batch_first = problem["batch_first"]
    x = problem["x"]
    time_axis = 1 if batch_first else 0
    lengths = options.get("lengths")
    h = problem["h0"]
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        chunk = dict(problem, x=np.take(x, np.arange(a, b), axis=time_axis), h0=h)
        chunk_options = dict(options)
        if lengths is not None:
            chunk_options["lengths"] = np.clip(lengths - a, 0, b - a)
        result = fastrnn.forward(**chunk, **chunk_options, backend=backend)
        if options.get("return_sequences", True):
            piece, h = result
            pieces.append(piece)
        else:
            h = result
        assert h.dtype == x.dtype
    if not options.get("return_sequences", True):
        return None, h
    return np.concatenate(pieces, axis=time_axis), h


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("option", OPTIONS)
def test_chunks_equal_one_call(backend, option, dtype, make_problem, assert_close):
    for seed in range(3):
        problem, options = _setup(option, make_problem, dtype, seed)
        whole = fastrnn.forward(**problem, **options, backend=backend)
        expected_output, expected_h_n = (None, whole) if option in (
            "last-state-only", "everything") else whole
        steps = problem["x"].shape[1]
        rng = np.random.default_rng(seed)
        for chunks in (2, 5, 17):
            bounds = _boundaries(rng, steps, chunks)
            output, h_n = _stream(problem, options, bounds, backend)
            assert_close(h_n, expected_h_n.astype(np.float64))
            if expected_output is None:
                assert output is None
            else:
                assert output.shape == expected_output.shape
                assert_close(output, expected_output.astype(np.float64))


@pytest.mark.parametrize("option", ["plain", "everything"])
def test_chunks_time_first(backend, option, make_problem, assert_close):
    """The same with batch_first=False: chunks are slices of axis 0."""
    problem, options = _setup(option, make_problem, np.float64, 5, batch_first=False)
    whole = fastrnn.forward(**problem, **options, backend=backend)
    expected_h_n = whole if option == "everything" else whole[1]
    bounds = _boundaries(np.random.default_rng(5), problem["x"].shape[0], 6)
    output, h_n = _stream(problem, options, bounds, backend)
    assert_close(h_n, expected_h_n)
    if option == "plain":
        assert_close(output, whole[0])


def test_ended_sequences_pass_their_state_through(backend):
    """A chunk where a sequence has length 0 leaves its h0 untouched and
    writes zeros."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 3))
    w_ih = rng.standard_normal((5, 3))
    w_hh = scipy.sparse.random_array((5, 5), density=0.5, rng=rng)
    h0 = rng.uniform(-1, 1, (2, 5))
    output, h_n = fastrnn.forward(x, w_ih, w_hh, h0=h0, lengths=np.array([0, 7]), leak=0.5,
                                  backend=backend)
    np.testing.assert_array_equal(h_n[0], h0[0])
    np.testing.assert_array_equal(output[0], 0.0)
    assert np.all(np.abs(output[1]) > 0)


# --- memory of a long stream --------------------------------------------------

MEMORY_SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "memory_long_stream.py"


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["numba", "numpy"])
def test_long_stream_memory_does_not_grow_with_steps(backend_name):
    """(1, 100 000, 8, 1000) float32, last state only, measured in a fresh
    process by bench/memory_long_stream.py: the full output would be 381 MiB;
    the call's peak RSS rises by far less than 200 MB (measured: 0.2 MB; at
    T = 1 000 000, where the output would be 3.8 GB, also 0.2 MB)."""
    if backend_name == "numba":
        pytest.importorskip("numba")
    if not MEMORY_SCRIPT.exists():
        pytest.skip("bench/memory_long_stream.py is not here (an installed copy?)")
    result = subprocess.run(
        [sys.executable, str(MEMORY_SCRIPT), "--steps", "100000", "--backend", backend_name,
         "--json"],
        capture_output=True, text=True, timeout=900, env=dict(os.environ), check=False)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["output_would_be_mb"] > 350
    assert figures["growth_mb"] < 200, figures


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(("steps", "kernel"), [(40, "direct_stack"), (400, "direct_range")])
def test_plain_chunk_calls_run_the_compiled_call_directly(monkeypatch, make_problem, dtype,
                                                          sparse, steps, kernel):
    # A prepared layer's plain call whose plan is one thread without
    # windows (a stream's short chunks) calls the compiled kernel straight
    # away (fastrnn._numba.DirectCall), its scratch on the stack (40 steps)
    # or, too large for it, from the heap (400): forward's bits, with h0 or
    # without, for any layout of x; a shape planned otherwise keeps the
    # full path.
    pytest.importorskip("numba")
    from fastrnn import _numba

    problem = make_problem(9, batch=3, steps=steps, input_size=5, hidden_size=70, dtype=dtype,
                           h0=True)
    w_hh = problem["w_hh"]
    if sparse:
        w_hh = scipy.sparse.random(70, 70, density=0.2, format="csr", random_state=2,
                                   dtype=dtype)
    layer = fastrnn.prepare(problem["w_ih"], w_hh, problem["b_ih"], problem["b_hh"],
                            leak=0.4, threads=1)
    x, h0 = problem["x"], problem["h0"]
    for given_x in (x, np.asfortranarray(x), x[:, ::-1][:, ::-1]):
        for given_h0 in (None, h0):
            expected = fastrnn.forward(x, problem["w_ih"], w_hh, problem["b_ih"],
                                       problem["b_hh"], h0=given_h0, leak=0.4, threads=1)
            output, h_n = layer(given_x, given_h0)
            np.testing.assert_array_equal(output, expected[0])
            np.testing.assert_array_equal(h_n, expected[1])
    assert isinstance(layer._direct[x.shape][-1], _numba.DirectCall)
    assert layer._direct[x.shape][0].__name__ == kernel
    # Planned otherwise (here the units split, forced): the full path.
    from fastrnn import _plan

    monkeypatch.setattr(_numba, "choose", lambda **_: _plan.checked(_plan.UNITS_SPLIT, 2))
    split = fastrnn.prepare(problem["w_ih"], w_hh, problem["b_ih"], problem["b_hh"],
                            leak=0.4, threads=2)
    output, h_n = split(x, h0)
    assert split._direct[x.shape][-1] is None
    expected = fastrnn.forward(x, problem["w_ih"], w_hh, problem["b_ih"], problem["b_hh"],
                               h0=h0, leak=0.4, threads=1)
    np.testing.assert_array_equal(output, expected[0])
    np.testing.assert_array_equal(h_n, expected[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_small_chunk_calls_run_the_small_kernel_directly(make_problem, dtype, nonlinearity):
    # One small sequence (the small path: B = 1, H <= 32, dense, no leak)
    # runs straight from the layer's weights packed once
    # (fastrnn._numba.direct_small): forward's bits, with h0 or without,
    # chunk after chunk with the state carried, for any layout of x; an
    # input row too long for the kernel's stack scratch takes the full path.
    pytest.importorskip("numba")
    from fastrnn import _numba, _plan

    for input_size, direct in ((5, True), (40_000, False)):
        problem = make_problem(10, batch=1, steps=12, input_size=input_size, hidden_size=20,
                               dtype=dtype, h0=True)
        weights = [problem[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
        layer = fastrnn.prepare(*weights, nonlinearity=nonlinearity, threads=1)
        x, h0 = problem["x"], problem["h0"]
        assert _numba.call_plan(1, 12, input_size, 20, None, False, 1,
                                x.dtype.itemsize)[0].path == _plan.SMALL
        for given_x in (x, np.asfortranarray(x), x[:, ::-1][:, ::-1]):
            for given_h0 in (None, h0):
                expected = fastrnn.forward(x, *weights, h0=given_h0, nonlinearity=nonlinearity)
                output, h_n = layer(given_x, given_h0)
                np.testing.assert_array_equal(output, expected[0])
                np.testing.assert_array_equal(h_n, expected[1])
        h, parts = h0, []
        for start, stop in ((0, 5), (5, 9), (9, 12)):
            output, h = layer(x[:, start:stop], h)
            parts.append(output)
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), expected[0])
        np.testing.assert_array_equal(h, expected[1])
        # The direct kernel ran, or declined and the full path ran.
        assert (layer._small is not None) and layer._direct[x.shape][0] is not None
        kernel, packed, _, relu, _ = layer._small
        ran = kernel(np.ascontiguousarray(x), packed, h0, np.empty_like(expected[0]),
                     np.empty_like(h0), relu)
        assert ran is direct
