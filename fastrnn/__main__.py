"""``python -m fastrnn``: run the textbook example and time both backends."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import forward


def _median_time(call, repeat: int) -> float:
    call()  # warm-up: compilation is not timed
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def demo(repeat: int = 2000) -> None:
    """The textbook's loop (T=10, I=4, H=8, one sequence), through fastrnn."""
    rng = np.random.default_rng(0)
    timesteps, input_size, hidden_size = 10, 4, 8
    inputs = rng.random((timesteps, input_size))
    w_x = rng.random((hidden_size, input_size))
    w_h = rng.random((hidden_size, hidden_size))
    b = rng.random(hidden_size)

    states, h_n = forward(inputs, w_x, w_h, b)
    print(f"textbook RNN: T={timesteps}, input_size={input_size}, hidden_size={hidden_size}")
    print("hidden states (T, H):")
    print(np.array2string(states, precision=6, max_line_width=100))
    for backend in ("numba", "numpy"):
        seconds = _median_time(lambda name=backend: forward(inputs, w_x, w_h, b, backend=name),
                               repeat)
        print(f"  backend={backend:6s} median {seconds * 1e6:8.2f} us per forward")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000, help="timed calls per backend")
    args = parser.parse_args(argv)
    demo(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
