"""fastrnn without Numba: each test runs a fresh Python in which importing numba fails.

Two ways of failing are covered: Numba not installed (a meta-path finder
refuses every ``numba`` module, as ModuleNotFoundError) and Numba installed
but broken (a ``numba`` package first on PYTHONPATH raising ImportError, as
Numba does when it does not support the installed NumPy).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent

NOT_INSTALLED = """
import sys

class _NoNumba:
    # Refuses numba and its submodules, as if it were not installed.
    def find_spec(self, name, path=None, target=None):
        if name == "numba" or name.startswith("numba."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoNumba())
"""

BROKEN = "raise ImportError('Numba needs NumPy 1.0 or less (a broken install, for the test)')\n"

# Every child script starts from these: a small problem and the naive reference.
PRELUDE = """
import sys
import warnings

import numpy as np

sys.path.insert(0, {tests_dir!r})
import naive

rng = np.random.default_rng(7)
x = rng.standard_normal((3, 6, 4))
w_ih = rng.standard_normal((5, 4)) / 2.0
w_hh = rng.standard_normal((5, 5)) / np.sqrt(5.0)
b_ih = rng.standard_normal(5)
b_hh = rng.standard_normal(5)
h0 = rng.uniform(-1.0, 1.0, (3, 5))
args = (x, w_ih, w_hh, b_ih, b_hh, h0)
expected_output, expected_h_n = naive.rnn(*args)
tolerance = {tolerance!r}
"""


@pytest.fixture(params=["not-installed", "broken"])
def run_without_numba(request, tmp_path, forward_tolerance):
    """Run a script in a new interpreter where ``import numba`` fails; fail
    the test, showing the child's output, when the script does."""

    def run(script: str) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)
        blocker = ""
        if request.param == "not-installed":
            blocker = NOT_INSTALLED
        else:
            package = tmp_path / "numba"
            package.mkdir()
            (package / "__init__.py").write_text(BROKEN)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(tmp_path)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            )
        prelude = PRELUDE.format(tests_dir=str(TESTS_DIR),
                                 tolerance=forward_tolerance[np.dtype(np.float64)])
        code = blocker + prelude + textwrap.dedent(script)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=120)
        assert result.returncode == 0, (
            f"child failed ({request.param}):\n--- stdout\n{result.stdout}\n"
            f"--- stderr\n{result.stderr}"
        )
        return result

    return run


def test_numba_really_fails_to_import(run_without_numba):
    run_without_numba("""
        try:
            import numba
        except ImportError:
            pass
        else:
            raise AssertionError("numba imported")
        assert "numba" not in sys.modules
    """)


def test_import_fastrnn(run_without_numba):
    run_without_numba("""
        import fastrnn
        assert callable(fastrnn.forward) and fastrnn.__version__
        assert "numba" not in sys.modules
    """)


def test_numpy_backend(run_without_numba):
    run_without_numba("""
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            import fastrnn
            output, h_n = fastrnn.forward(*args, backend="numpy")
            unbatched_output, unbatched_h_n = fastrnn.forward(
                x[1], w_ih, w_hh, b_ih, b_hh, h0[1], backend="numpy")
        np.testing.assert_allclose(output, expected_output, **tolerance)
        np.testing.assert_allclose(h_n, expected_h_n, **tolerance)
        np.testing.assert_allclose(unbatched_output, expected_output[1], **tolerance)
        np.testing.assert_array_equal(unbatched_h_n, unbatched_output[-1])
        assert "numba" not in sys.modules
    """)


def test_auto_falls_back_with_one_warning(run_without_numba):
    run_without_numba("""
        import fastrnn
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            output, h_n = fastrnn.forward(*args)  # backend="auto"
            again, _ = fastrnn.forward(*args, backend="auto")
        assert len(caught) == 1, [str(w.message) for w in caught]
        warning = caught[0]
        assert warning.category is RuntimeWarning, warning.category
        assert "Numba" in str(warning.message), warning.message
        assert "NumPy backend" in str(warning.message), warning.message
        assert warning.filename == "<string>", warning.filename  # points at the caller
        np.testing.assert_allclose(output, expected_output, **tolerance)
        np.testing.assert_allclose(h_n, expected_h_n, **tolerance)
        np.testing.assert_array_equal(again, output)
        numpy_output, _ = fastrnn.forward(*args, backend="numpy")
        np.testing.assert_array_equal(numpy_output, output)
        from fastrnn._backends import auto_backend_name
        assert auto_backend_name() == "numpy"
        assert "numba" not in sys.modules
    """)


def test_numba_backend_raises(run_without_numba):
    run_without_numba("""
        import fastrnn
        for attempt in range(2):  # refused every time, not only the first
            try:
                fastrnn.forward(*args, backend="numba")
            except ImportError as exc:
                message = str(exc)
                assert "backend='numba' needs Numba" in message, message
                assert "pip install numba" in message and "backend='numpy'" in message, message
                assert isinstance(exc.__cause__, ImportError), exc.__cause__
            else:
                raise AssertionError("backend='numba' did not raise")
        # Still usable afterwards.
        output, _ = fastrnn.forward(*args, backend="numpy")
        np.testing.assert_allclose(output, expected_output, **tolerance)
        assert "numba" not in sys.modules
    """)


def test_numpy_path_never_imports_numba(forward_tolerance, tmp_path):
    # With Numba installed and importable, fastrnn still imports it only when
    # the Numba backend is asked for.
    script = PRELUDE.format(tests_dir=str(TESTS_DIR),
                            tolerance=forward_tolerance[np.dtype(np.float64)])
    script += textwrap.dedent("""
        import importlib.util
        assert importlib.util.find_spec("numba") is not None  # installed
        import fastrnn
        assert "numba" not in sys.modules
        output, _ = fastrnn.forward(*args, backend="numpy")
        np.testing.assert_allclose(output, expected_output, **tolerance)
        try:
            fastrnn.forward(*args, backend="no such backend")
        except ValueError:
            pass
        assert "numba" not in sys.modules, sorted(m for m in sys.modules if "numba" in m)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
