"""Print a Markdown table from a pytest-benchmark JSON file.

    pytest --benchmark-only --benchmark-json=bench.json
    python bench/report.py bench.json

One row per forward group (dtype and size; the step and chunk groups of
test_step_bench.py and test_chunk_bench.py too, per time step and per whole
stream), one column per implementation
with the median time per call in microseconds (``--stat min`` for the
minimum), and each peer's ratio to fastrnn-numba ("torch 2.3x slower"). A
cell is marked † when other processes used more than 10% of the machine's CPU
while that benchmark ran (extra_info "others_cpu", recorded by conftest.py):
its time is then likely inflated; ‡ marks a benchmark stopped early (extra_info
"truncated") because its calls ran far slower than estimated. Groups without implementations (the
cold-start benchmarks) follow in a second table, one row per case.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

# Used when the JSON lacks "fastrnn_registry" (written by bench/conftest.py).
DEFAULT_BASELINE = "fastrnn-numba"
DTYPE_ORDER = {"f32": 0, "f64": 1}
CONTENDED = 0.10  # others_cpu above this marks a cell with †


def fmt_us(seconds: float) -> str:
    us = seconds * 1e6
    if us >= 100:
        return f"{us:,.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def ratio_text(peer: float, base: float) -> str:
    """How the peer's median compares to the baseline's, e.g. "2.3x slower"."""
    if base <= 0 or peer <= 0:
        return "n/a"
    ratio = peer / base
    if ratio >= 1:
        return f"{ratio:.2g}x slower" if ratio < 10 else f"{ratio:.0f}x slower"
    inverse = base / peer
    return f"{inverse:.2g}x faster" if inverse < 10 else f"{inverse:.0f}x faster"


def impl_of(bench: dict) -> str | None:
    return (bench.get("params") or {}).get("name") or (bench.get("extra_info") or {}).get("impl")


def forward_table(benches: list[dict], stat: str = "median",
                  baseline: str = DEFAULT_BASELINE, order: list[str] | None = None) -> list[str]:
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in benches:
        groups[bench["group"]][impl_of(bench)] = bench
    # Columns in the registry's order, then any others in the order they ran.
    seen = list(dict.fromkeys(impl_of(b) for b in benches))
    impls = [i for i in (order or []) if i in seen] + [i for i in seen if i not in (order or [])]

    def sort_key(item):
        info = next(iter(item[1].values())).get("extra_info", {})
        flops = info.get("flops", 0)
        return (DTYPE_ORDER.get(info.get("dtype"), 9), flops, item[0])

    head = ["group"] + [f"{i} (µs)" for i in impls] + ["fastest, GFLOP/s", f"vs {baseline}"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" + "---:|" * len(impls) + "---|---|"]
    for group, by_impl in sorted(groups.items(), key=sort_key):
        base = by_impl.get(baseline)
        base_median = base["stats"][stat] if base else None
        cells, ratios = [], []
        for impl in impls:
            bench = by_impl.get(impl)
            if bench is None:
                cells.append("—")
                continue
            median = bench["stats"][stat]
            contended = (bench.get("extra_info") or {}).get("others_cpu", 0) > CONTENDED
            truncated = "truncated" in (bench.get("extra_info") or {})
            cells.append(fmt_us(median) + (" †" if contended else "") + (" ‡" if truncated else ""))
            if impl != baseline and base_median:
                ratios.append(f"{impl} {ratio_text(median, base_median)}")
        best = min(by_impl, key=lambda i: by_impl[i]["stats"][stat])
        info = by_impl[best].get("extra_info", {})
        gflops = info["flops"] / by_impl[best]["stats"][stat] / 1e9 if "flops" in info else None
        fastest = best if gflops is None else f"{best}, {gflops:.3g}"
        lines.append("| " + " | ".join([group] + cells + [fastest, "; ".join(ratios) or "—"])
                     + " |")
    return lines



def _info_item(key: str, value) -> str:
    # Seconds (keys ending in _s) in ms; rates (_per_s) as they are.
    if key.endswith("_per_s"):
        return f"{key} {value:,.0f}"
    if key.endswith("_s"):
        return f"{key} {value * 1e3:.1f} ms"
    return f"{key} {value}"

def other_table(benches: list[dict]) -> list[str]:
    lines = ["| group | test | case | median (ms) | min (ms) | rounds | child-measured |",
             "|---|---|---|---:|---:|---:|---|"]
    for bench in sorted(benches, key=lambda b: (b["group"] or "", b["stats"]["median"])):
        info = dict(bench.get("extra_info") or {})
        case = info.pop("case", "")
        inner = ", ".join(_info_item(k, v) for k, v in info.items())
        stats = bench["stats"]
        lines.append(
            f"| {bench['group']} | {bench['name']} | {case} | {stats['median'] * 1e3:.1f} "
            f"| {stats['min'] * 1e3:.1f} | {stats['rounds']} | {inner} |"
        )
    return lines


def report(data: dict, stat: str = "median") -> str:
    benches = data.get("benchmarks", [])
    forward = [b for b in benches if impl_of(b)]
    others = [b for b in benches if not impl_of(b)]
    out = []
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "")
    if cpu or machine.get("python_version"):
        out.append(f"Machine: {cpu}, Python {machine.get('python_version', '?')}; "
                   f"{data.get('datetime', '')}")
    environment = {k: v for k, v in (data.get("fastrnn_environment") or {}).items()
                   if v is not None}
    if environment.get("NUMBA_CPU_NAME"):
        out.append("fastrnn compiled for another CPU: "
                   + ", ".join(f"{k}={v!r}" for k, v in environment.items()))
    sources = data.get("fastrnn_sources")
    if sources:
        out.append(f"fastrnn sources {sources.get('at_start')}, Numba cache: "
                   f"{sources.get('numba_cache')}")
        if sources.get("at_start") != sources.get("at_end"):
            out.append(f"**Warning: fastrnn's sources changed during the run "
                       f"({sources.get('at_start')} -> {sources.get('at_end')}); "
                       "the numbers may mix two versions.**")
    if out:
        out.append("")
    if forward:
        out.append(f"{stat.capitalize()} time per call, µs (lower is better; \"step\" groups: "
                   "per time step, \"chunk\" groups: per whole stream); "
                   f"† = other processes used >{CONTENDED:.0%} of the CPU during it; "
                   "‡ = stopped early, calls ran far slower than estimated:")
        out.append("")
        registry = data.get("fastrnn_registry") or {}
        out += forward_table(forward, stat, registry.get("baseline", DEFAULT_BASELINE),
                             registry.get("implementations"))
    if others:
        if out:
            out.append("")
        out += other_table(others)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file", help="output of pytest --benchmark-json=FILE")
    parser.add_argument("--stat", choices=("median", "min", "mean"), default="median",
                        help="which statistic of the rounds to show (default: median)")
    args = parser.parse_args(argv)
    with open(args.json_file, encoding="utf-8") as handle:
        data = json.load(handle)
    print(report(data, args.stat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
