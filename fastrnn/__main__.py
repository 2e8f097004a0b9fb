"""``python -m fastrnn``: the textbook demo; ``python -m fastrnn bench``: the
comparison report against fastrnn's peers (:mod:`fastrnn.benchmark`).

The help texts are plain text written for a terminal (this docstring is not
shown by ``--help``)."""

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
    print("the comparison with its peers: python -m fastrnn bench [--quick]")


DESCRIPTION = """\
Without a command: run the textbook example (one sequence, T=10, I=4, H=8)
through fastrnn, print its hidden states and time both backends.

bench: time fastrnn against its peers (its NumPy backend, PyTorch, JAX, ONNX
Runtime, OpenVINO, ReservoirPy: those installed) on the same inputs, print a
Markdown table and write a JSON file and a plot. `python -m fastrnn bench
--help` lists its options."""

BENCH_DESCRIPTION = """\
Time fastrnn against its peers on the same seeded inputs, after checking every
implementation's output against fastrnn's NumPy backend. Each case (a size and
dtype) is timed in interleaved rounds: every implementation in turn, round after
round, so that background load hits all of them alike; each turn starts once
the threads of the one before have stopped spinning (up to 0.5 s: OpenBLAS's
spin about 0.1 s after a call). The table gives the median over rounds and its
spread; NumPy's matmul rate is measured at the start and the end. A run whose
rates moved, whose rounds disagree or during which other processes used the CPU
is flagged busy: it prints a warning and leaves out the ratio columns. Results
go to a JSON file and a plot (matplotlib).

Three call patterns, each with its own table: forward (one whole forward per
call, the grid of sizes and the reservoirs), step (one time step per call with
the state carried, as a per-step loop pays it: microseconds per step) and chunk
(a stream of 10 000 steps fed 100 steps per call, each call's final state the
next one's initial state: milliseconds per stream, and fastrnn's chunked time
over its one-call time)."""

BENCH_EPILOG = """\
--cpu targets (Numba CPU name: what the peers' libraries are held to):
{targets}
The report re-runs itself in a fresh process with NUMBA_CPU_NAME=NAME,
NUMBA_CPU_FEATURES="" (with the name alone Numba keeps this machine's features),
a temporary NUMBA_CACHE_DIR, and OPENBLAS_CORETYPE, MKL_ENABLE_INSTRUCTIONS,
ONEDNN_MAX_CPU_ISA and XLA_FLAGS=--xla_cpu_max_isa set to the matching
kernels. JAX's dots (YNNPACK's kernels) and ONNX Runtime (MLAS) still use this
machine's full instruction set, and so does OpenVINO unless its oneDNN
honours ONEDNN_MAX_CPU_ISA.
For the pytest-benchmark suite: bench/run_for_cpu.sh NAME [pytest arguments].

examples:
  python -m fastrnn bench --quick
  python -m fastrnn bench --sizes "1,10,4,8;32,100,32,64" --dtype float32
  python -m fastrnn bench --threads 1 --busy 1
  python -m fastrnn bench --cpu haswell --quick
"""


def _parser():
    from .benchmark import CPU_TARGETS, ROUNDS

    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2000, metavar="N",
                        help="the example: timed calls per backend (default 2000)")
    commands = parser.add_subparsers(dest="command", metavar="{bench}")
    targets = "\n".join(f"  {name:15s} {target.isa:24s} OpenBLAS {target.openblas}, MKL "
                        f"{target.mkl}, oneDNN {target.onednn}, XLA {target.xla}"
                        for name, target in CPU_TARGETS.items())
    bench = commands.add_parser(
        "bench", help="time fastrnn against its peers (see bench --help)",
        description=BENCH_DESCRIPTION, epilog=BENCH_EPILOG.format(targets=targets),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--quick", action="store_true",
                       help="four small sizes, one reservoir, two step sizes and one "
                            "chunk size, float32, 0.2 s of timing per implementation and "
                            "case in 3 rounds (about two minutes)")
    bench.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                       help="which dtypes to run (default: both; float32 with --quick)")
    bench.add_argument("--sizes", metavar='"B,T,I,H;..."',
                       help="run these sizes (batch, steps, inputs, hidden) instead of the "
                            "grid, without the reservoir cases")
    bench.add_argument("--patterns", metavar="forward,step,chunk",
                       help="which call patterns to time: forward (the size grid and the "
                            "reservoirs, one forward per call), step (one time step per "
                            "call, the state carried), chunk (a stream fed 100 steps per "
                            "call); default: all three, forward alone with --sizes")
    bench.add_argument("--budget", type=float, default=1.0, metavar="SECONDS",
                       help="seconds of timing per implementation and case, split over the "
                            "rounds (default 1; at least one call a round)")
    bench.add_argument("--rounds", type=int, metavar="N",
                       help=f"interleaved rounds per case (default {ROUNDS}; 3 with --quick)")
    bench.add_argument("--only", metavar="NAME,NAME",
                       help="time only these implementations (fastrnn-numpy, the reference, "
                            "always checks them); default: every one installed")
    bench.add_argument("--threads", type=int, metavar="N",
                       help="threads for every implementation: re-runs the report in a "
                            "process with FASTRNN_NUM_THREADS, OPENBLAS/OMP/MKL_NUM_THREADS "
                            "and XLA's flags set to N (default: each library's own)")
    bench.add_argument("--cpu", metavar="NAME",
                       help="compile fastrnn for another CPU and hold the peers' BLAS to the "
                            "matching kernels (NAME: see below); re-runs the report in a "
                            "fresh process")
    bench.add_argument("--busy", type=int, default=0, metavar="N",
                       help="busy-machine mode: run N busy-looping processes in the background "
                            "while the report runs (the issue's case: --busy 1 on 2 cores); "
                            "they are killed when the report ends, fails or is interrupted")
    bench.add_argument("--busy-limit", type=float, default=1800.0, metavar="SECONDS",
                       help="with --busy: each load process stops itself after this long "
                            "even if the report is killed (default 1800)")
    bench.add_argument("--json", default="fastrnn-bench.json", metavar="FILE",
                       help="where to write the results (default fastrnn-bench.json)")
    bench.add_argument("--plot", default="fastrnn-bench.png", metavar="FILE",
                       help="where to write the plot (default fastrnn-bench.png)")
    return parser


def _thread_environment(threads: int) -> dict[str, str]:
    env = {name: str(threads) for name in _THREAD_VARIABLES}
    env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                        + f" --xla_cpu_multi_thread_eigen={threads > 1}"
                        + f" intra_op_parallelism_threads={threads}").strip()
    return env


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    if args.command != "bench":
        demo(args.repeat)
        return 0
    from . import benchmark

    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.busy < 0:
        parser.error("--busy must be 0 (off) or a number of processes")
    if not args.busy_limit > 0:
        parser.error("--busy-limit must be positive")
    if args.cpu is not None and args.cpu not in benchmark.CPU_TARGETS:
        parser.error(f"--cpu: unknown target {args.cpu!r}; known: "
                     f"{', '.join(benchmark.CPU_TARGETS)}")
    known = benchmark.known_names()
    for name in (args.only or "").split(","):
        if name and name not in known:
            parser.error(f"--only: unknown implementation {name!r}; known: {', '.join(known)}")
    for pattern in ([] if args.patterns is None else args.patterns.split(",")):
        if pattern not in benchmark.PATTERNS:
            parser.error(f"--patterns: unknown pattern {pattern!r}; known: "
                         f"{', '.join(benchmark.PATTERNS)}")
    if args.sizes:
        try:
            benchmark.parse_sizes(args.sizes)
        except ValueError as exc:
            parser.error(f"--sizes: {exc}")

    # Thread counts and the CPU target are read when each library starts:
    # set them for a fresh process running the same command (which finds
    # them set and runs the report itself).
    env: dict[str, str] = {}
    if args.threads is not None and os.environ.get("FASTRNN_NUM_THREADS") != str(args.threads):
        env = _thread_environment(args.threads)
    command = [sys.executable, "-m", "fastrnn", *(sys.argv[1:] if argv is None else argv)]
    if args.cpu is not None and not benchmark.in_cpu_target(args.cpu):
        return benchmark.run_for_cpu(args.cpu, command, extra_env=env)
    if env:
        return subprocess.call(command, env=dict(os.environ, **env))
    return benchmark.main(args)


if __name__ == "__main__":
    sys.exit(main())
