"""GRU and LSTM whole calls, fastrnn against every peer installed (PyTorch,
JAX, ONNX Runtime, OpenVINO: bench/test_gated_bench.py's), float32, in one
process: each implementation checked against the NumPy backend, then
ROUNDS interleaved rounds (the order rotated each round, the machine
quiesced before each turn), each round's median of calls; prints the
median over rounds and every round's.

    python -m bench.gated_peers [CELLS [SIZES...]]
    python -m bench.gated_peers lstm 32,100,16,64 64,100,128,512
"""

from __future__ import annotations

import sys
import time

import numpy as np

from fastrnn.benchmark import quiesce

from . import test_gated_bench as gated

ROUNDS = 7
SIZES = [(1, 100, 16, 64), (1, 1000, 16, 256), (32, 100, 16, 64), (32, 50, 256, 256),
         (64, 100, 128, 512), (32, 50, 1024, 1024)]


def _median_call(run, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _runs(cell: str, size: tuple[int, int, int, int]) -> dict:
    batch, steps, input_size, hidden = size
    w = gated.weights(cell, "f32", input_size, hidden)
    x = gated.inputs("f32", (batch, steps, input_size))
    prepared = gated.layer(cell, "numba", w)
    runs = {"fastrnn": lambda: prepared(x)[0]}
    try:
        import torch

        torch.set_grad_enabled(False)
        module = gated.torch_module(torch, cell, w, step=False)
        x_t = torch.from_numpy(x)
        runs["torch"] = lambda: module(x_t)[0].numpy()
    except ImportError:
        pass
    for name, make in gated.PEER_CALLS.items():
        try:
            runs[name] = make(cell, w, x)
        except (ImportError, gated.pytest.skip.Exception):
            pass
    expected = gated.layer(cell, "numpy", w)(x)[0]
    for run in runs.values():
        run()
        np.testing.assert_allclose(run(), expected, rtol=2e-5, atol=2e-5)
    return runs


def main(cells: list[str], sizes: list[tuple[int, int, int, int]]) -> None:
    for cell in cells:
        for size in sizes:
            runs = _runs(cell, size)
            once = min(_median_call(runs["fastrnn"], 3), _median_call(runs.get("torch",
                                                                              runs["fastrnn"]), 3))
            calls = int(min(200, max(5, 0.05 / once)))
            rounds: dict[str, list[float]] = {name: [] for name in runs}
            names = list(runs)
            for turn in range(ROUNDS):
                for name in names[turn % len(names):] + names[:turn % len(names)]:
                    quiesce()
                    rounds[name].append(_median_call(runs[name], calls))
            medians = {name: float(np.median(times)) for name, times in rounds.items()}
            best = min((t, name) for name, t in medians.items() if name != "fastrnn")
            print(f"{cell} {size}: " + ", ".join(f"{name} {t * 1e3:.3f}"
                                                 for name, t in medians.items())
                  + f" ms; best peer {best[1]}, {best[0] / medians['fastrnn']:.2f}x fastrnn's time",
                  flush=True)
            print("  rounds, ms: " + "; ".join(
                f"{name} " + " ".join(f"{t * 1e3:.3g}" for t in times)
                for name, times in rounds.items()), flush=True)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(arguments[0].split(",") if arguments else ["gru", "lstm"],
         [tuple(map(int, s.split(","))) for s in arguments[1:]] or SIZES)  # type: ignore[misc]
