"""Peak memory and time of one long stream with ``return_sequences=False``.

    python bench/memory_long_stream.py                  # (1, 1_000_000, 8, 1000) float32
    python bench/memory_long_stream.py --steps 200000 --backend numpy --json

Only the final state is computed, so memory should stay O(B*H) plus a fixed
chunk of steps, whatever T: here the full output would be 4 GB. The script
builds the inputs, runs a short call first (compiling or loading the kernels,
starting threads), resets the process's peak RSS (Linux ``clear_refs``), then
times the long call and reports how far the peak RSS rose above the RSS just
before it. Where the peak cannot be reset, the growth reported is an upper
bound: the peak of the whole process (``getrusage``) minus the RSS before.
tests/test_streaming.py runs this script at a smaller T.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

import fastrnn


def _status_kb(field: str) -> int | None:
    """A field of /proc/self/status in kB, or None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    except OSError:
        return False
    return True


def measure(batch: int, steps: int, input_size: int, hidden: int, backend: str) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, input_size), dtype=np.float32)
    w_ih = (rng.standard_normal((hidden, input_size)) / np.sqrt(input_size)).astype(np.float32)
    w_hh = (rng.standard_normal((hidden, hidden)) * (0.9 / np.sqrt(hidden))).astype(np.float32)
    bias = (0.1 * rng.standard_normal(hidden)).astype(np.float32)

    def run(inputs: np.ndarray) -> np.ndarray:
        return fastrnn.forward(inputs, w_ih, w_hh, bias, bias, leak=0.5,
                               return_sequences=False, backend=backend)

    run(x[:, :1000])  # compile or load the kernels, start the threads
    exact = _reset_peak()
    rss_before = _status_kb("VmRSS")
    start = time.perf_counter()
    h_n = run(x)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM") if exact else None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    if peak is None or rss_before is None:
        exact = False
        peak = maxrss
    growth = peak - (rss_before or 0)
    if h_n.shape != (batch, hidden) or not np.isfinite(h_n).all():
        raise AssertionError(f"bad final state: shape {h_n.shape}")
    return {
        "size": [batch, steps, input_size, hidden], "dtype": "float32", "backend": backend,
        "seconds": seconds, "us_per_step": seconds / steps * 1e6,
        "rss_before_mb": (rss_before or 0) / 1024, "peak_rss_mb": peak / 1024,
        "growth_mb": growth / 1024, "process_peak_rss_mb": maxrss / 1024,
        "exact": exact, "x_mb": x.nbytes / 2**20,
        "output_would_be_mb": batch * steps * hidden * 4 / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--input-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1000)
    parser.add_argument("--backend", default="auto", choices=("auto", "numba", "numpy"))
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    figures = measure(args.batch, args.steps, args.input_size, args.hidden, args.backend)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"fastrnn.forward, return_sequences=False, {tuple(figures['size'])} float32, "
          f"backend {args.backend}, leak 0.5")
    print(f"  time            {figures['seconds']:.1f} s ({figures['us_per_step']:.1f} us/step)")
    print(f"  RSS before      {figures['rss_before_mb']:.0f} MB (x alone {figures['x_mb']:.0f} MB)")
    print(f"  peak RSS        {figures['peak_rss_mb']:.0f} MB"
          + ("" if figures["exact"] else " (whole process: peak not resettable here)"))
    print(f"  growth          {figures['growth_mb']:.1f} MB "
          f"(the full output would be {figures['output_would_be_mb']:,.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
