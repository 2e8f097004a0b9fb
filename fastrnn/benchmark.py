"""The comparison report: ``python -m fastrnn bench``.

One registry of implementations (:data:`IMPLEMENTATIONS`) serves this report
and the pytest-benchmark suite in ``bench/``: fastrnn's two backends, and
PyTorch's ``nn.RNN`` and a JAX ``jit(lax.scan)`` when those are installed
(``pip install -e ".[peers]"``). Each implementation's factory takes the NumPy
problem ``(x, w_ih, w_hh, b_ih, b_hh)`` (x is (B, T, I), batch first) and
returns a zero-argument callable that runs one forward pass, NumPy in and out,
and returns the output (B, T, H). One-off set-up (building a module, copying
weights) happens in the factory; everything a user pays per call happens in
the callable.

The report times every implementation on the same seeded problem, checks each
output against fastrnn's NumPy backend first (a wrong answer is never timed),
and prints medians, each peer's time as a multiple of fastrnn's, and
fastrnn's rate as a fraction of NumPy's large square matmul measured in the
same run (the machine's practical limit for the products).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._api import forward as fastrnn_forward

Problem = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Forward = Callable[[], np.ndarray]

SIZES: list[tuple[int, int, int, int]] = [  # (B, T, I, H)
    (1, 10, 4, 8),  # the textbook example
    (1, 100, 16, 32),
    (32, 100, 32, 64),
    (64, 200, 128, 128),
    (128, 100, 256, 512),
    (32, 50, 1024, 1024),
    (1, 100000, 8, 64),  # a long stream: per-step latency
    (1, 10000, 1, 1000),  # a reservoir: one large state
]
QUICK_SIZES = SIZES[:4]
DTYPES = {"float32": np.float32, "float64": np.float64}
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
BASELINE = "fastrnn-numba"
REFERENCE = "fastrnn-numpy"


@dataclass(frozen=True)
class Impl:
    factory: Callable[..., Forward]
    requires: str | None = None  # module that must be importable


def make_problem(batch: int, steps: int, input_size: int, hidden: int, dtype,
                 seed: int = 0) -> Problem:
    """A seeded problem: standard normal x, weights scaled by 1/sqrt(fan-in)
    so pre-activations stay O(1) and tanh is not saturated."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    x = rng.standard_normal((batch, steps, input_size)).astype(dtype)
    w_ih = (rng.standard_normal((hidden, input_size)) / math.sqrt(input_size)).astype(dtype)
    w_hh = (rng.standard_normal((hidden, hidden)) / math.sqrt(hidden)).astype(dtype)
    b_ih = (0.1 * rng.standard_normal(hidden)).astype(dtype)
    b_hh = (0.1 * rng.standard_normal(hidden)).astype(dtype)
    return x, w_ih, w_hh, b_ih, b_hh


def _fastrnn(backend: str) -> Callable[..., Forward]:
    def factory(x, w_ih, w_hh, b_ih, b_hh) -> Forward:
        def run() -> np.ndarray:
            return fastrnn_forward(x, w_ih, w_hh, b_ih, b_hh, backend=backend)[0]

        return run

    return factory


def _torch_factory(x, w_ih, w_hh, b_ih, b_hh) -> Forward:
    import torch

    hidden, input_size = w_ih.shape
    dtype = torch.float32 if x.dtype == np.float32 else torch.float64
    rnn = torch.nn.RNN(input_size, hidden, num_layers=1, nonlinearity="tanh", bias=True,
                       batch_first=True).to(dtype)
    rnn.eval()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(w_ih))  # type: ignore[operator]
        rnn.weight_hh_l0.copy_(torch.from_numpy(w_hh))  # type: ignore[operator]
        rnn.bias_ih_l0.copy_(torch.from_numpy(b_ih))  # type: ignore[operator]
        rnn.bias_hh_l0.copy_(torch.from_numpy(b_hh))  # type: ignore[operator]

    def run() -> np.ndarray:
        with torch.inference_mode():
            output, _ = rnn(torch.from_numpy(x))
        return output.numpy()

    return run


_jax_modules = None


def _jax():
    """Import JAX once, turning float64 on before any JAX array is made (JAX
    otherwise silently computes float64 inputs in float32)."""
    global _jax_modules
    if _jax_modules is None:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from jax import lax

        @jax.jit
        def rnn(x, w_ih, w_hh, bias):
            # The input product for every step at once, outside the scan.
            pre = jnp.swapaxes(x @ w_ih.T + bias, 0, 1)
            w_hh_t = w_hh.T

            def step(h, p):
                h = jnp.tanh(p + h @ w_hh_t)
                return h, h

            h0 = jnp.zeros((x.shape[0], w_hh.shape[0]), x.dtype)
            _, hs = lax.scan(step, h0, pre)
            return jnp.swapaxes(hs, 0, 1)

        _jax_modules = (jnp, rnn)
    return _jax_modules


def _jax_factory(x, w_ih, w_hh, b_ih, b_hh) -> Forward:
    jnp, rnn = _jax()
    weights = (jnp.asarray(w_ih), jnp.asarray(w_hh), jnp.asarray(b_ih + b_hh))
    if weights[0].dtype != x.dtype:
        raise RuntimeError(f"jax computes in {weights[0].dtype}, not {x.dtype}: x64 is off")

    def run() -> np.ndarray:
        return np.asarray(rnn(jnp.asarray(x), *weights).block_until_ready())

    return run


IMPLEMENTATIONS: dict[str, Impl] = {
    "fastrnn-numba": Impl(_fastrnn("numba"), requires="numba"),
    "fastrnn-numpy": Impl(_fastrnn("numpy")),
    "torch": Impl(_torch_factory, requires="torch"),
    "jax": Impl(_jax_factory, requires="jax"),
}


def available(name: str) -> bool:
    requires = IMPLEMENTATIONS[name].requires
    return requires is None or importlib.util.find_spec(requires) is not None


def flops(size: tuple[int, int, int, int]) -> int:
    batch, steps, input_size, hidden = size
    return 2 * batch * steps * hidden * (input_size + hidden)


def time_call(run: Forward, budget: float) -> tuple[float, float, int]:
    """(median, min, calls) of ``run`` timed for about ``budget`` seconds, at
    least 3 calls; the caller has already warmed it up."""
    times: list[float] = []
    total = 0.0
    while (total < budget or len(times) < 3) and len(times) < 100_000:
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        total += elapsed
    return float(np.median(times)), float(min(times)), len(times)


def matmul_rate(dtype, sizes=(1024, 2048), budget: float = 0.5) -> float:
    """NumPy's best large square matmul rate here, in FLOP/s."""
    best = 0.0
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        out = np.empty((n, n), dtype)
        np.matmul(a, b, out=out)

        def product(a: np.ndarray = a, b: np.ndarray = b, out: np.ndarray = out) -> np.ndarray:
            return np.matmul(a, b, out=out)

        median, _, _ = time_call(product, budget)
        best = max(best, 2 * n**3 / median)
    return best


class _Progress:
    """tqdm when installed, otherwise a one-line counter on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, unit="case", file=sys.stderr, leave=False)

    def step(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(label)
            self.bar.update()
        else:
            print(f"\r[{self.done}/{self.total}] {label:<50}", end="", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr)


def run_report(sizes: list[tuple[int, int, int, int]], dtypes: list[str], names: list[str],
               budget: float, matmul_sizes: tuple[int, ...]) -> dict:
    """Time every (dtype, size, implementation); return the results as a dict."""
    results = []
    rates = {}
    progress = _Progress(len(dtypes) * (len(sizes) * len(names) + 1))
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        progress.step(f"{dtype_name} matmul rate")
        rates[dtype_name] = matmul_rate(dtype, matmul_sizes)
        for size in sizes:
            batch, steps, input_size, hidden = size
            problem = make_problem(batch, steps, input_size, hidden, dtype)
            expected = IMPLEMENTATIONS[REFERENCE].factory(*problem)()
            for name in names:
                progress.step(f"{dtype_name} {size} {name}")
                run = IMPLEMENTATIONS[name].factory(*problem)
                output = run()  # warm-up: compilation and tracing are not timed
                np.testing.assert_allclose(output, expected, rtol=TOLERANCE[dtype_name],
                                           atol=TOLERANCE[dtype_name],
                                           err_msg=f"{name} disagrees with {REFERENCE}")
                del output
                median, fastest, calls = time_call(run, budget)
                results.append({"dtype": dtype_name, "size": list(size), "impl": name,
                                "median_s": median, "min_s": fastest, "calls": calls,
                                "flops": flops(size)})
    progress.close()
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "matmul_flops_per_s": rates,
        "results": results,
    }


def format_table(report: dict) -> str:
    """A Markdown table: medians (us), each peer as a multiple of fastrnn's
    time, and fastrnn's rate against the machine's matmul rate."""
    names = list(dict.fromkeys(r["impl"] for r in report["results"]))
    peers = [n for n in names if n != BASELINE]
    head = ["dtype", "B, T, I, H"] + [f"{n} (us)" for n in names]
    head += [f"{p} / fastrnn" for p in peers] + ["fastrnn GFLOP/s", "of matmul rate"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    cells: dict[tuple[str, tuple], dict[str, float]] = {}
    for r in report["results"]:
        cells.setdefault((r["dtype"], tuple(r["size"])), {})[r["impl"]] = r["median_s"]
    for (dtype, size), by_impl in cells.items():
        base = by_impl.get(BASELINE)
        row = [dtype, ", ".join(map(str, size))]
        row += [f"{by_impl[n] * 1e6:,.1f}" if n in by_impl else "-" for n in names]
        row += [f"{by_impl[p] / base:.2f}x" if base and p in by_impl else "-" for p in peers]
        if base:
            rate = flops(size) / base
            row += [f"{rate / 1e9:.1f}", f"{rate / report['matmul_flops_per_s'][dtype]:.0%}"]
        else:
            row += ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    rates = ", ".join(f"{d} {r / 1e9:.0f} GFLOP/s" for d, r in
                      report["matmul_flops_per_s"].items())
    lines.append("")
    lines.append(f"NumPy square matmul rate in this run: {rates}. Peer / fastrnn > 1 means "
                 "fastrnn is faster.")
    return "\n".join(lines)


def plot(report: dict, path: str) -> bool:
    """Time against problem size (FLOPs), log-log, one line per implementation
    and one panel per dtype. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    dtypes = list(dict.fromkeys(r["dtype"] for r in report["results"]))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.5), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        rows = [r for r in report["results"] if r["dtype"] == dtype]
        for name in dict.fromkeys(r["impl"] for r in rows):
            points = sorted((r["flops"], r["median_s"]) for r in rows if r["impl"] == name)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("FLOPs per forward, 2·B·T·H·(I+H)")
        ax.set_ylabel("median time per forward (s)")
        ax.set_title(f"RNN forward, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def parse_sizes(text: str) -> list[tuple[int, int, int, int]]:
    """"1,10,4,8;32,100,32,64" -> [(1, 10, 4, 8), (32, 100, 32, 64)]."""
    sizes = []
    for part in text.split(";"):
        try:
            values = tuple(int(v) for v in part.replace("x", ",").split(","))
        except ValueError:
            values = ()
        if len(values) != 4 or min(values) < 1:
            raise ValueError(f"a size is four positive integers B,T,I,H; got {part!r}")
        sizes.append(values)
    return sizes


def main(args) -> int:
    """Run the report for parsed command-line ``args`` (see fastrnn.__main__)."""
    sizes = parse_sizes(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    if args.quick and args.dtype == "both":
        dtypes = ["float32"]
    names = [n for n in IMPLEMENTATIONS if available(n)]
    missing = [n for n in IMPLEMENTATIONS if n not in names]
    budget = 0.2 if args.quick else args.budget
    print(f"fastrnn comparison: {len(sizes)} sizes, {', '.join(dtypes)}; "
          f"implementations: {', '.join(names)}"
          + (f" (not installed: {', '.join(missing)}; pip install -e '.[peers]')"
             if missing else ""), flush=True)
    report = run_report(sizes, dtypes, names, budget,
                        matmul_sizes=(1024,) if args.quick else (1024, 2048))
    report["threads"] = os.environ.get("FASTRNN_NUM_THREADS", "default")
    table = format_table(report)
    print(table)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    print(f"\nresults: {args.json}")
    if plot(report, args.plot):
        print(f"plot: {args.plot}")
    else:
        print("plot: skipped (matplotlib is not installed)")
    return 0
