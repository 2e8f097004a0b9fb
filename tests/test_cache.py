"""Numba's on-disk cache is keyed to the source of every kernel module
(fastrnn/kernels/jit.py): editing a helper module recompiles the kernels that use
it, where Numba alone checks only the kernel's own file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba")

import fastrnn  # noqa: E402
from fastrnn.kernels import jit as _cache  # noqa: E402

_RUN = textwrap.dedent("""
    import numpy as np
    import fastrnn
    from fastrnn import _numba
    from fastrnn.kernels import jit as _cache
    x = np.ones((1, 5, 2), np.float32)
    w_ih = np.ones((4, 2), np.float32)
    w_hh = np.eye(4, dtype=np.float32)
    fastrnn.forward(x, w_ih, w_hh)  # the plain call: the compiled forward_small
    stats = _numba.forward_small.stats
    locator = type(_numba.forward_small._cache._impl.locator)
    print(locator in _cache.LOCATORS, sum(stats.cache_hits.values()),
          sum(stats.cache_misses.values()))
""")


def test_the_stamp_covers_every_file(tmp_path):
    names = ("a.py", "b.py")
    for name in names:
        (tmp_path / name).write_text("x = 1\n")
    before = _cache.sources_stamp(str(tmp_path), names)
    assert _cache.sources_stamp(str(tmp_path), names) == before
    (tmp_path / "b.py").write_text("x = 2\n")
    assert _cache.sources_stamp(str(tmp_path), names) != before
    # Every module with compiled code is in the stamp: the kernels
    # subpackage holds all of it.
    package = Path(fastrnn.__file__).parent
    compiled = {path.relative_to(package).as_posix() for path in package.rglob("*.py")
                if "njit" in path.read_text() or "intrinsic" in path.read_text()}
    stamped = {f"kernels/{name}" for name in _cache.KERNEL_MODULES}
    assert compiled and compiled <= stamped, compiled - stamped


def test_editing_a_helper_module_recompiles_the_kernels(tmp_path):
    # A copy of the package and a cache of its own: compile, load from the
    # cache, then edit kernels/activations.py (inlined into the kernels of
    # kernels/small.py) and find the kernel compiled again.
    shutil.copytree(Path(fastrnn.__file__).parent, tmp_path / "fastrnn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> list[str]:
        done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, check=True)
        return done.stdout.split()

    assert run() == ["True", "0", "1"]  # compiled
    assert run() == ["True", "1", "0"]  # loaded
    with open(tmp_path / "fastrnn" / "kernels" / "activations.py", "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    assert run() == ["True", "0", "1"]  # compiled again


@pytest.mark.parametrize("hidden", [40, 300])  # one thread; the units split on threads
def test_any_layout_of_the_inputs_compiles_nothing_new(make_problem, hidden):
    # The kernels called from Python take arrays of any layout, read-only or
    # not (fastrnn.kernels.jit.FewVariants): after a call with C-ordered inputs,
    # Fortran-ordered, strided, read-only and transposed ones, and an `out`
    # that is a view into a larger buffer, give the same bits and compile
    # no new variant.
    from fastrnn import _numba, _plan
    from fastrnn.kernels import cells, driver

    batch = 3 if hidden == 40 else 1
    problem = make_problem(hidden, batch=batch, steps=5, input_size=6, hidden_size=hidden,
                           h0=True, dtype=np.float32)
    threads = 1 if hidden == 40 else 2
    path = _plan.BLOCKED if hidden == 40 else _plan.UNITS_SPLIT
    plan = _plan.checked(path, threads)
    expected = np.empty((batch, 5, hidden), np.float32)
    h_n = np.empty((batch, hidden), np.float32)
    _numba.forward(problem["x"], problem["w_ih"], problem["w_hh"], problem.get("b_ih"), None,
                   problem["h0"], expected, h_n, False, True, None, None, False, threads,
                   plan=plan)
    kernels = [driver.forward_range, driver.drive_part, cells.pack_layer]
    before = [set(kernel.overloads) for kernel in kernels]

    def read_only(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    wide = np.zeros((batch, 5, 2 * hidden), np.float32)
    variants = [
        dict(x=np.asfortranarray(problem["x"])),
        dict(x=np.repeat(problem["x"], 2, axis=1)[:, ::2]),  # strided
        dict(x=read_only(problem["x"]), h0=read_only(problem["h0"])),
        dict(w_ih=np.asfortranarray(problem["w_ih"]), w_hh=problem["w_hh"].T.copy().T,
             h0=np.asfortranarray(problem["h0"])),
        dict(out=wide[:, :, hidden:]),
    ]
    for change in variants:
        args = {**problem, **change}
        out = args.pop("out", np.empty((batch, 5, hidden), np.float32))
        _numba.forward(args["x"], args["w_ih"], args["w_hh"], args.get("b_ih"), None, args["h0"],
                       out, h_n, False, True, None, None, False, threads, plan=plan)
        np.testing.assert_array_equal(out, expected)
    assert [set(kernel.overloads) for kernel in kernels] == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_any_layout_in_the_plain_call_compiles_nothing_new(make_problem, dtype):
    # fastrnn.forward's plain call of one small sequence calls Numba's
    # dispatcher of kernels.small.forward_small itself: after a call with
    # C-ordered arrays, Fortran-ordered, strided, read-only and transposed
    # ones give the same bits and compile no new variant. A bias left out
    # where it was given is a new type: its variant is compiled, once.
    from fastrnn import _numba

    problem = make_problem(7, batch=1, steps=10, input_size=4, hidden_size=8, dtype=dtype)
    expected = fastrnn.forward(**problem)
    kernel = _numba.forward_small
    before = set(kernel.overloads)

    def read_only(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    variants = [
        dict(x=np.asfortranarray(problem["x"])),
        dict(x=np.repeat(problem["x"], 2, axis=1)[:, ::2]),  # strided
        dict(x=read_only(problem["x"]), w_ih=read_only(problem["w_ih"])),
        dict(w_ih=np.asfortranarray(problem["w_ih"]), w_hh=problem["w_hh"].T.copy().T,
             b_ih=np.repeat(problem["b_ih"], 2)[::2], b_hh=read_only(problem["b_hh"])),
    ]
    for change in variants:
        output, h_n = fastrnn.forward(**{**problem, **change})
        np.testing.assert_array_equal(output, expected[0])
        np.testing.assert_array_equal(h_n, expected[1])
    assert set(kernel.overloads) == before
    # Without b_hh: its variant (unless an earlier test compiled it), then
    # the NumPy backend's reference up to rounding, and no further variant
    # for other layouts.
    unbiased = {**problem, "b_hh": None}
    reference = fastrnn.forward(**unbiased, backend="numpy")
    fastrnn.forward(**unbiased)
    after = set(kernel.overloads)
    assert len(after - before) <= 1
    for change in ({}, dict(x=np.asfortranarray(problem["x"]))):
        output, h_n = fastrnn.forward(**{**unbiased, **change})
        np.testing.assert_allclose(output, reference[0], rtol=1e-5, atol=1e-5)
    assert set(kernel.overloads) == after
