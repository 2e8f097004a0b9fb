"""Memory: the Numba backend allocates nothing that grows with T.

With ``out=`` given, repeated calls must not allocate in proportion to the
sequence length: the kernels' workspaces are O(B*H + H*(I+H)). tracemalloc
sees NumPy's allocations; Numba's own (NRT) allocations are counted through
its allocation statistics in a subprocess, where NUMBA_NRT_STATS can be set
before Numba starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastrnn

pytest.importorskip("numba")


def _problem(steps: int, batch: int = 2, input_size: int = 8, hidden: int = 64):
    rng = np.random.default_rng(steps)
    x = rng.standard_normal((batch, steps, input_size)).astype(np.float32)
    w_ih = (rng.standard_normal((hidden, input_size)) / 3).astype(np.float32)
    w_hh = (rng.standard_normal((hidden, hidden)) / 8).astype(np.float32)
    return x, w_ih, w_hh


# Both step counts of a pair take the same kernel path (one thread for B = 1,
# the batch split across threads for B = 2), so only T differs.
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("batch", [1, 2])
def test_out_calls_allocate_nothing_that_grows_with_steps(backend, batch):
    peaks = {}
    for steps in (5_000, 50_000):
        x, w_ih, w_hh = _problem(steps, batch=batch)
        out = np.empty((x.shape[0], steps, w_hh.shape[0]), np.float32)
        fastrnn.forward(x, w_ih, w_hh, out=out, backend=backend)  # compile, warm up
        tracemalloc.start()
        for _ in range(5):
            fastrnn.forward(x, w_ih, w_hh, out=out, backend=backend)
        peaks[steps] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # At T = 50000 the output is 25.6 MB (B = 2) and x 3.2 MB: anything that
    # grew with T (a copy of x, a temporary output, a per-step buffer) would
    # be megabytes. What is traced (the NumPy backend's fixed chunk of hoisted
    # input products, 256 kB in float32, and its temporaries; thread hand-off
    # objects) stays under 1 MB at either length.
    assert max(peaks.values()) < 1024 * 1024, peaks


_NRT_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import fastrnn
    from fastrnn import _numba
    from numba.core.runtime import rtsys
    # One window a call: a long call allocates a workspace per window (about
    # 20 ms of work each, see tests/test_windows.py), so per unit of time, and
    # the kernels themselves nothing per step, which is what is counted here.
    _numba.WINDOWS_MIN_FMAS = 10**18
    counts = {}
    for batch in (1, 2):
        for steps in (5000, 20000):
            rng = np.random.default_rng(0)
            x = rng.standard_normal((batch, steps, 8)).astype(np.float32)
            w_ih = rng.standard_normal((64, 8)).astype(np.float32) / 3
            w_hh = rng.standard_normal((64, 64)).astype(np.float32) / 8
            out = np.empty((batch, steps, 64), np.float32)
            fastrnn.forward(x, w_ih, w_hh, out=out, backend="numba")
            # The first call's frees, some by its helper a moment after it
            # returned (see below), all done: none may land in the count.
            before = rtsys.get_allocation_stats()
            settled = time.monotonic()
            while time.monotonic() - settled < 0.05:
                time.sleep(0.001)
                now = rtsys.get_allocation_stats()
                if now.free != before.free or now.alloc != before.alloc:
                    before, settled = now, time.monotonic()
            fastrnn.forward(x, w_ih, w_hh, out=out, backend="numba")
            # The batch split's helper (fastrnn._team) says its share is
            # done from compiled code, and drops its references to the
            # call's arrays when it is back in Python, just after: until
            # then their MemInfos are not freed. Wait for that (a leak would
            # still show after 5 s).
            deadline = time.monotonic() + 5
            after = rtsys.get_allocation_stats()
            while (after.alloc - before.alloc != after.free - before.free
                   and time.monotonic() < deadline):
                time.sleep(0.001)
                after = rtsys.get_allocation_stats()
            counts[f"{batch},{steps}"] = [after.alloc - before.alloc, after.free - before.free]
    json.dump(counts, sys.stdout)
""")


def test_numba_allocations_do_not_depend_on_steps():
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    result = subprocess.run([sys.executable, "-c", _NRT_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300, check=True)
    counts = json.loads(result.stdout)
    for batch in (1, 2):
        short, long = counts[f"{batch},5000"], counts[f"{batch},20000"]
        assert short == long, counts  # the same allocations for 4x the steps
        assert long[0] == long[1], counts  # and all of them freed
        # A few workspaces per thread and call, and a MemInfo for each array
        # passed from Python to a kernel (Numba's reference counting wraps
        # them: 13 in all for one sequence, 9 of them in the driver's call
        # of 5 arrays and 4 workspaces), none per step.
        assert long[0] <= 16 * batch, counts
