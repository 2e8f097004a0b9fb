"""Default threads against threads=1, on a quiet machine and with one busy
process (started here and killed by its PID): the units split's calls of the
README's busy-machine table, and a gated layer's stream of 100-step chunks
(whole calls timed each way: fastrnn._plan.judge_call). Interleaved rounds,
medians; prints a markdown table.

    python -m bench.busy [ROUNDS]
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

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


def _forward(problem: tuple, leak: Any) -> dict:
    return {threads: (lambda threads=threads: fastrnn.forward(*problem, leak=leak,
                                                              threads=threads))
            for threads in (None, 1)}


def _chunks(prepare: Any, gates: int, steps: int = 2000, hidden: int = 256,
            input_size: int = 16) -> dict:
    # A float32 gated layer's stream of 100-step chunks, the state carried.
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(hidden)
    weights = [rng.uniform(-bound, bound, shape).astype(np.float32)
               for shape in ((gates * hidden, input_size), (gates * hidden, hidden),
                             (gates * hidden,), (gates * hidden,))]
    x = rng.standard_normal((1, steps, input_size)).astype(np.float32)
    chunks = [np.ascontiguousarray(x[:, t:t + 100]) for t in range(0, steps, 100)]

    def stream(layer: Any) -> None:
        state = None
        for chunk in chunks:
            _, state = layer(chunk, state)

    layers = {threads: prepare(*weights, threads=threads) for threads in (None, 1)}
    return {threads: (lambda layer=layer: stream(layer)) for threads, layer in layers.items()}


def cases():
    yield "(1, 10000, 1, 1000) float32 dense", _forward(make_problem(1, 10000, 1, 1000,
                                                                      np.float32), None)
    yield "(2, 2000, 1, 512) float32 dense", _forward(make_problem(2, 2000, 1, 512,
                                                                    np.float32), None)
    problem, leak = make_reservoir_problem(ReservoirCase((1, 10000, 1, 1000)), np.float64)
    yield "reservoir (1, 10000, 1, 1000) sparse 0.1, float64, leak", _forward(problem, leak)
    problem, leak = esn_problem()
    yield "examples/esn.py's reservoir (500 units, 10 000 steps)", _forward(problem, leak)
    yield "GRU (1, 2000, 16, 256) float32, 100-step chunks", _chunks(fastrnn.prepare_gru, 3)
    yield "LSTM (1, 2000, 16, 256) float32, 100-step chunks", _chunks(fastrnn.prepare_lstm, 4)


def main(rounds: int = 9) -> None:
    print("| call | quiet: default (ms) | quiet: threads=1 | gain | busy: default "
          "| busy: threads=1 | busy: default / threads=1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, calls in cases():
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
