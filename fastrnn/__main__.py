"""``python -m fastrnn``: the textbook demo; ``python -m fastrnn bench``: the
comparison report against fastrnn's NumPy backend, PyTorch and JAX."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from . import forward

# What --threads sets, in a fresh process (they are read when each library
# starts): fastrnn's own threads, OpenBLAS/MKL/OpenMP pools, and XLA's.
_THREAD_VARIABLES = ("FASTRNN_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                     "MKL_NUM_THREADS")


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
    print("the comparison with PyTorch and JAX: python -m fastrnn bench [--quick]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000, help="demo: timed calls per backend")
    commands = parser.add_subparsers(dest="command")
    bench = commands.add_parser("bench", help="time fastrnn against its peers")
    bench.add_argument("--quick", action="store_true",
                       help="four small sizes, float32, short timing (under a minute)")
    bench.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    bench.add_argument("--sizes", help='sizes "B,T,I,H;B,T,I,H" (default: the full grid)')
    bench.add_argument("--threads", type=int,
                       help="threads for every implementation (default: the libraries' own)")
    bench.add_argument("--budget", type=float, default=1.0,
                       help="seconds of timing per implementation and size (default 1)")
    bench.add_argument("--json", default="fastrnn-bench.json", help="results file")
    bench.add_argument("--plot", default="fastrnn-bench.png", help="plot file (matplotlib)")
    args = parser.parse_args(argv)

    if args.command != "bench":
        demo(args.repeat)
        return 0
    if args.threads is not None and os.environ.get("FASTRNN_NUM_THREADS") != str(args.threads):
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        env = dict(os.environ, **{name: str(args.threads) for name in _THREAD_VARIABLES})
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                            + f" --xla_cpu_multi_thread_eigen={args.threads > 1}"
                            + f" intra_op_parallelism_threads={args.threads}").strip()
        argv = sys.argv[1:] if argv is None else argv
        return subprocess.call([sys.executable, "-m", "fastrnn", *argv], env=env)
    from . import benchmark

    if args.sizes:
        try:
            benchmark.parse_sizes(args.sizes)
        except ValueError as exc:
            parser.error(f"--sizes: {exc}")
    return benchmark.main(args)


if __name__ == "__main__":
    sys.exit(main())
