"""Benchmarks run only on request.

pyproject's testpaths include bench/, so plain ``pytest`` collects these
files; every test that uses the ``benchmark`` fixture is then skipped, with a
reason that says how to run them. ``pytest --benchmark-only`` runs them (and
pytest-benchmark itself skips every test that is not a benchmark).

Under ``--benchmark-only``, two more things happen:

* Numba's on-disk cache goes to a fresh temporary folder for the session
  (unless NUMBA_CACHE_DIR is already set). Numba checks only the source file
  of the function it caches, not the files of the functions it calls, so an
  in-tree cache can hold kernels compiled from older code; a fresh folder
  means the benchmarks time the code that is there. Compilation happens in
  the untimed warm-up calls.
* A SHA-256 of fastrnn's sources, taken at the start and at the end of the
  session, goes into the JSON (``fastrnn_sources``), so a run whose code
  changed while it ran can be told apart (report.py warns about it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

try:
    import pytest_benchmark  # noqa: F401
except ImportError:
    HAVE_BENCHMARK = False
else:
    HAVE_BENCHMARK = True

SKIP_REASON = ("benchmark: run with `pytest --benchmark-only` "
               "(add --benchmark-json=FILE for bench/report.py)")
FASTRNN_DIR = Path(__file__).resolve().parent.parent / "fastrnn"

_state: dict[str, object] = {}


def _benchmark_only(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("benchmark_only"))
    except ValueError:  # pytest-benchmark is not installed
        return False


def sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(FASTRNN_DIR.rglob("*.py")):  # (kernels/ too)
        name = path.relative_to(FASTRNN_DIR).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def pytest_configure(config: pytest.Config) -> None:
    # bench/ is in testpaths, so this conftest is loaded before any test
    # module is imported, hence before Numba reads its configuration.
    if not _benchmark_only(config):
        return
    _state["sources_at_start"] = sources_digest()
    if "NUMBA_CACHE_DIR" not in os.environ and "numba" not in sys.modules:
        cache_dir = tempfile.mkdtemp(prefix="fastrnn-bench-numba-cache-")
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
        _state["cache_dir"] = cache_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    cache_dir = _state.pop("cache_dir", None)
    if cache_dir is not None:
        os.environ.pop("NUMBA_CACHE_DIR", None)
        shutil.rmtree(str(cache_dir), ignore_errors=True)


if HAVE_BENCHMARK:  # pytest rejects a hook of a plugin that is not installed

    def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
        try:  # report.py's column order and baseline come from the registry
            from fastrnn.benchmark import BASELINE, known_names, run_environment
        except ImportError:
            pass
        else:
            # Every registry's names (forward grid, step, chunk patterns).
            output_json["fastrnn_registry"] = {"baseline": BASELINE,
                                               "implementations": known_names()}
            # The CPU fastrnn was compiled for (bench/run_for_cpu.sh) and the peers' kernels.
            output_json["fastrnn_environment"] = run_environment()
        output_json["fastrnn_sources"] = {
            "at_start": _state.get("sources_at_start"),
            "at_end": sources_digest(),
            "numba_cache": "fresh per session" if "cache_dir" in _state
            else os.environ.get("NUMBA_CACHE_DIR", "numba default (in-tree __pycache__)"),
        }


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, ticks of this process and its waited-for
    children), from /proc; None where /proc is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as handle:
            own = handle.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy is all but idle, iowait
    busy = sum(fields) - fields[3] - fields[4] - sum(fields[8:10])  # guest is in user
    mine = sum(int(v) for v in own[11:15])  # utime stime cutime cstime
    return busy, mine


@pytest.fixture(autouse=True)
def _record_contention(request):
    """Start a benchmark once this process's other threads are idle, and put
    into its extra_info the share of the machine's CPU that other processes
    used while it ran (``others_cpu``, 0..1): this machine may be shared, and
    a busy neighbour slows every implementation unevenly."""
    if "benchmark" not in request.fixturenames or not _benchmark_only(request.config):
        yield
        return
    benchmark = request.getfixturevalue("benchmark")
    # Started once the threads the test before left spinning have stopped
    # (OpenBLAS's spin about 0.1 s after a call): see fastrnn.benchmark.quiesce.
    from fastrnn.benchmark import quiesce

    benchmark.extra_info["quiesced_s"] = round(quiesce(), 3)
    start, wall = _cpu_ticks(), time.perf_counter()
    yield
    end, wall = _cpu_ticks(), time.perf_counter() - wall
    if start is None or end is None or wall <= 0:
        return
    others = (end[0] - start[0]) - (end[1] - start[1])
    cpus = os.cpu_count() or 1
    share = max(0.0, others / os.sysconf("SC_CLK_TCK") / (wall * cpus))
    benchmark.extra_info["others_cpu"] = round(share, 3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only bench/'s: pick benchmarks
    # by the fixture they use.
    if _benchmark_only(config):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
