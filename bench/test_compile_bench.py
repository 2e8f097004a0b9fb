"""Cold-start cost: a fresh Python process that imports fastrnn and runs one
textbook-size forward (B=1, T=10, I=4, H=8, float32) with backend="numba".

* cold: an empty on-disk Numba cache (NUMBA_CACHE_DIR is a new temporary
  folder each round), so every kernel is compiled;
* warm: the same cache folder, filled by an untimed first process, so the
  kernels load from disk;
* warm, without SciPy: the same in a child where importing SciPy fails, as
  where it is not installed (fastrnn does not need it; where it is installed,
  Numba imports scipy.linalg when it loads the first kernel);
* import: ``import fastrnn`` alone (which does not import Numba);
* python: an interpreter that imports nothing, the floor under all three.

Each round is timed around the whole subprocess (interpreter start-up
included). The child also times its own ``import fastrnn`` and first forward
with perf_counter and prints them; the medians go into extra_info as
``import_s`` and ``first_forward_s``. All four are in group "cold start".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

GROUP = "cold start"

CHILD_FORWARD = """
import json, time
t0 = time.perf_counter()
import fastrnn
t1 = time.perf_counter()
import numpy as np
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 10, 4), dtype=np.float32)
w_ih = rng.standard_normal((8, 4), dtype=np.float32)
w_hh = rng.standard_normal((8, 8), dtype=np.float32) / np.float32(8 ** 0.5)
b = rng.standard_normal(8, dtype=np.float32)
t2 = time.perf_counter()
out, h_n = fastrnn.forward(x, w_ih, w_hh, b, b, backend="numba")
t3 = time.perf_counter()
assert out.shape == (1, 10, 8) and bool(np.isfinite(out).all())
print(json.dumps({"import_s": t1 - t0, "first_forward_s": t3 - t2}))
"""

# The child of CHILD_FORWARD in an interpreter where "import scipy" fails,
# as where SciPy is not installed.
CHILD_NO_SCIPY = """
import importlib.abc, sys

class NoSciPy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError(f"{name} is blocked in this child")
        return None

sys.meta_path.insert(0, NoSciPy())
""" + CHILD_FORWARD

CHILD_IMPORT = """
import json, sys, time
t0 = time.perf_counter()
import fastrnn
t1 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "numba_imported": "numba" in sys.modules}))
"""

CHILD_EMPTY = "pass"


def child_env(cache_dir: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def run_child(code: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise AssertionError(f"child failed ({done.returncode}):\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def record(benchmark, case: str, reports: list[dict]) -> None:
    benchmark.extra_info["case"] = case
    for key in ("import_s", "first_forward_s"):
        values = [r[key] for r in reports if key in r]
        if values:
            benchmark.extra_info[key] = float(np.median(values))
    for key in ("numba_imported",):
        if reports and key in reports[0]:
            benchmark.extra_info[key] = reports[0][key]


@pytest.fixture
def tmp_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("numba-cache")


def test_cold_cache(benchmark, tmp_path_factory):
    """Import + first forward with an empty Numba cache: full compilation."""
    benchmark.group = GROUP
    reports: list[dict] = []

    def setup():
        cache_dir = tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp(), prefix="cold-cache-")
        return (child_env(cache_dir),), {}

    def target(env):
        reports.append(run_child(CHILD_FORWARD, env))

    benchmark.pedantic(target, setup=setup, rounds=3, iterations=1, warmup_rounds=0)
    record(benchmark, "cold cache: import + first forward, compiling", reports)


def test_warm_cache(benchmark, tmp_cache):
    """Import + first forward with the kernels already in the on-disk cache."""
    benchmark.group = GROUP
    env = child_env(str(tmp_cache))
    run_child(CHILD_FORWARD, env)  # fills the cache, untimed
    assert any(tmp_cache.rglob("*.nbi")), "the first process wrote no Numba cache index"
    reports: list[dict] = []

    def target():
        reports.append(run_child(CHILD_FORWARD, env))

    benchmark.pedantic(target, rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, "warm cache: import + first forward, loading cached kernels",
           reports[1:])


def test_warm_cache_without_scipy(benchmark, tmp_cache):
    """As test_warm_cache, where SciPy cannot be imported."""
    benchmark.group = GROUP
    env = child_env(str(tmp_cache))
    run_child(CHILD_FORWARD, env)  # fills the cache, untimed
    reports: list[dict] = []

    def target():
        reports.append(run_child(CHILD_NO_SCIPY, env))

    benchmark.pedantic(target, rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, "warm cache, SciPy not installed: import + first forward", reports[1:])


def test_import_only(benchmark, tmp_cache):
    """``import fastrnn`` alone in a fresh process."""
    benchmark.group = GROUP
    env = child_env(str(tmp_cache))
    reports: list[dict] = []

    def target():
        reports.append(run_child(CHILD_IMPORT, env))

    benchmark.pedantic(target, rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, "import fastrnn only", reports[1:])


def test_python_startup(benchmark):
    """An interpreter that imports nothing: the floor under the cases above."""
    benchmark.group = GROUP
    env = child_env(None)

    def target():
        run_child(CHILD_EMPTY, env)

    benchmark.pedantic(target, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["case"] = "python -c pass"
