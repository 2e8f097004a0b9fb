"""A process forked after fastrnn has run threads computes as its parent.

``multiprocessing`` forks by default on Linux, and a forked child has only
the thread that forked. The batch split keeps a team of helper threads
(``_numba._batch_team``, and a pool for calls the team cannot take): a
child that reused the parent's pool queued its work for workers that do
not exist there and waited forever. The units split
starts its threads per call, so it must work in a child as it is; a prepared
layer keeps its units split's threads between calls, and a child starts its
own.

Each case runs in a subprocess, so that a hang is a failed test (a timeout),
not a stuck test run: the parent process takes the forced path once, then a
``multiprocessing`` pool of one forked worker runs the same call, which must
return within the timeout and equal the parent's result bit for bit (the
same kernels on the same split).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Forking a process that has threads is what is tested here: Python 3.12+
# warns about it (DeprecationWarning), which is not this test's subject.
_SCRIPT = textwrap.dedent("""
    import multiprocessing
    import sys
    import threading
    import warnings

    import numpy as np

    import fastrnn
    from fastrnn import _numba, _plan, _units

    warnings.simplefilter("ignore", DeprecationWarning)
    path = sys.argv[1]
    # Force the path on two threads, whatever the machine and the size.
    forced = _plan.checked(_plan.BATCH_SPLIT if path == "batch" else _plan.UNITS_SPLIT, 2)
    _numba.choose = lambda **_: forced
    batch, hidden = (4, 8) if path == "batch" else (1, 64)
    units_calls = []

    class CountedSplit(_units.Split):
        def __init__(self, *args):
            units_calls.append(path)
            super().__init__(*args)

    _units.Split = CountedSplit
    rng = np.random.default_rng(7)
    x = rng.standard_normal((batch, 6, 3))
    w_ih = rng.standard_normal((hidden, 3)) / 2
    w_hh = rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)
    h0 = rng.standard_normal((batch, hidden))

    # "kept": a prepared layer, whose units split (and its threads) stays
    # with the layer between calls, forked while its threads wait.
    layer = fastrnn.prepare(w_ih, w_hh, backend="numba") if path == "kept" else None

    def run():
        if layer is not None:
            output, h_n = layer(x, h0)
        else:
            output, h_n = fastrnn.forward(x, w_ih, w_hh, h0=h0, backend="numba")
        # Which path ran: the team has helpers after a batch split, the
        # units split was counted.
        team = _numba._team
        return output, h_n, team is not None and len(team.workers) == 1, len(units_calls)

    parent = run()
    took_path = parent[2] if path == "batch" else parent[3] == 1
    if path == "kept" and not any(t.name == "fastrnn-units" for t in threading.enumerate()):
        sys.exit("the prepared layer's split threads are not waiting in the parent")
    if not took_path:
        sys.exit(f"the parent did not take the {path} split: {parent[2:]}")
    with multiprocessing.get_context("fork").Pool(1) as pool:
        try:
            child = pool.apply_async(run).get(timeout=60)
        except multiprocessing.TimeoutError:
            sys.exit(f"the forked child's {path}-split forward did not return in 60 s")
    if path == "batch" and not child[2]:
        sys.exit("the child did not take the batch split")
    if path == "units" and child[3] != 2:  # the parent's call and its own
        sys.exit(f"the child did not take the units split: {child[3]} calls counted")
    if path == "kept" and child[3] != 1:  # the layer's split, its threads started again
        sys.exit(f"the child did not reuse the layer's split: {child[3]} made")
    for name, a, b in zip(("output", "h_n"), parent[:2], child[:2]):
        if not np.array_equal(a, b):
            sys.exit(f"the child's {name} differs from the parent's: "
                     f"largest difference {np.abs(a - b).max()}")
    print("ok")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
@pytest.mark.parametrize("path", ["batch", "units", "kept"])
def test_forked_child_computes_as_the_parent(path):
    try:
        result = subprocess.run([sys.executable, "-c", _SCRIPT, path], capture_output=True,
                                text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the {path}-split script did not finish in 600 s (hung): {exc}")
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")


_LOCKED = textwrap.dedent("""
    import multiprocessing
    import warnings

    import numpy as np

    import fastrnn
    from fastrnn import _numba

    warnings.simplefilter("ignore", DeprecationWarning)
    # The parent holds the lock a thread holds while it compiles a variant
    # of the forward kernel; a child forked meanwhile must not wait for it.
    caller = _numba.forward_range_call
    caller._lock.acquire()

    def child():
        free = caller._lock.acquire(blocking=False)
        if free:
            caller._lock.release()
        rng = np.random.default_rng(3)
        x = rng.standard_normal((2, 5, 3))
        w_ih = rng.standard_normal((40, 3)) / 2
        w_hh = rng.standard_normal((40, 40)) / 8
        return free, fastrnn.forward(x, w_ih, w_hh, backend="numba")[1]

    with multiprocessing.get_context("fork").Pool(1) as pool:
        free, h_n = pool.apply_async(child).get(timeout=120)
    assert free, "the child inherited the parent's held compile lock"
    assert h_n.shape == (2, 40) and np.isfinite(h_n).all()
    print("ok")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_forked_child_gets_its_own_compile_lock():
    try:
        result = subprocess.run([sys.executable, "-c", _LOCKED], capture_output=True,
                                text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the forked child waited for the parent's compile lock: {exc}")
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")


_CREW = textwrap.dedent("""
    import multiprocessing
    import sys
    import threading
    import warnings

    import numpy as np

    import fastrnn
    from fastrnn import _numba, _plan

    warnings.simplefilter("ignore", DeprecationWarning)
    # A crew on two threads whatever the machine, taken at every step.
    _numba._CORES = 2
    _plan.CrewVerdict.way = lambda self, now: True
    rng = np.random.default_rng(3)
    hidden = 520
    w_ih = rng.standard_normal((hidden, 5)).astype(np.float32) / 2
    w_hh = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    h = rng.standard_normal((3, hidden)).astype(np.float32)
    layer = fastrnn.prepare(w_ih, w_hh, threads=2)

    def run():
        first = layer.step(x, h)
        return first, layer.step(x, first), int(layer._crew[0].ctrl[0])

    parent = run()
    if not any(t.name == "fastrnn-crew" for t in threading.enumerate()):
        sys.exit("the layer's crew is not waiting in the parent")
    with multiprocessing.get_context("fork").Pool(1) as pool:
        try:
            child = pool.apply_async(run).get(timeout=60)
        except multiprocessing.TimeoutError:
            sys.exit("the forked child's crew step did not return in 60 s")
    if child[2] != 2:  # a crew of the child's own, which ran both steps
        sys.exit(f"the child's steps did not run on a crew of its own: {child[2]} posted")
    for a, b in zip(parent[:2], child[:2]):
        if not np.array_equal(a, b):
            sys.exit(f"the child's step differs from the parent's: {np.abs(a - b).max()}")
    print("ok")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_forked_child_steps_on_a_crew_of_its_own():
    # Layer.step's crew (fastrnn._crew): its helpers wait in the parent; a
    # child forked meanwhile has none, and makes its own crew.
    try:
        result = subprocess.run([sys.executable, "-c", _CREW], capture_output=True, text=True,
                                timeout=600)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the crew script did not finish in 600 s (hung): {exc}")
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
