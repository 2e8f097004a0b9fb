"""Default threads against threads=1, on a quiet machine and with one busy
process (started here and killed by its PID): the units split's calls of the
README's busy-machine table. Interleaved rounds, medians; prints a markdown
table.

    python -m bench.busy [ROUNDS]
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

import fastrnn
from fastrnn.benchmark import ReservoirCase, make_problem, make_reservoir_problem

_LOAD = "import time\nend = time.time() + 120\nwhile time.time() < end:\n    pass\n"


def esn_problem():
    """examples/esn.py's reservoir call: 500 units, density 0.1, spectral
    radius 0.9, leak 0.3, one sequence of 10 000 steps, float64."""
    rng = np.random.default_rng(42)
    w = scipy.sparse.random(500, 500, density=0.1, format="csr", rng=rng,
                            data_rvs=rng.standard_normal)
    radius = abs(scipy.sparse.linalg.eigs(w, k=1, which="LM", return_eigenvectors=False,
                                          v0=np.ones(500))[0])
    w = (w * (0.9 / radius)).tocsr()
    u = rng.standard_normal((10000, 1))
    return (u, 0.5 * rng.uniform(-1, 1, (500, 1)), w, 0.1 * rng.uniform(-1, 1, 500)), 0.3


def cases():
    yield ("(1, 10000, 1, 1000) float32 dense", make_problem(1, 10000, 1, 1000, np.float32),
           None)
    yield "(2, 2000, 1, 512) float32 dense", make_problem(2, 2000, 1, 512, np.float32), None
    problem, leak = make_reservoir_problem(ReservoirCase((1, 10000, 1, 1000)), np.float64)
    yield "reservoir (1, 10000, 1, 1000) sparse 0.1, float64, leak", problem, leak
    problem, leak = esn_problem()
    yield "examples/esn.py's reservoir (500 units, 10 000 steps)", problem, leak


def main(rounds: int = 9) -> None:
    print("| call | quiet: default (ms) | quiet: threads=1 | gain | busy: default "
          "| busy: threads=1 | busy: default / threads=1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, problem, leak in cases():
        calls = {threads: (lambda threads=threads, problem=problem, leak=leak:
                           fastrnn.forward(*problem, leak=leak, threads=threads))
                 for threads in (None, 1)}
        for call in calls.values():  # compiled, and each way's first window run
            call()
            call()
        medians = {}
        for mode in ("quiet", "busy"):
            load = None
            if mode == "busy":
                load = subprocess.Popen([sys.executable, "-c", _LOAD])
                time.sleep(0.3)
            try:
                times: dict = {threads: [] for threads in calls}
                for _ in range(rounds):
                    for threads, call in calls.items():
                        start = time.perf_counter()
                        call()
                        times[threads].append(time.perf_counter() - start)
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
            medians[mode] = {threads: np.median(t) * 1e3 for threads, t in times.items()}
        quiet, busy = medians["quiet"], medians["busy"]
        print(f"| {name} | {quiet[None]:.1f} | {quiet[1]:.1f} | {quiet[1] / quiet[None]:.2f}x "
              f"| {busy[None]:.1f} | {busy[1]:.1f} | {busy[None] / busy[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
