"""The public API's type hints, as a type checker sees them in user code:
mypy run on a snippet that asserts the inferred types (and on one that must
fail, so that a checker that checks nothing cannot pass)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USE = textwrap.dedent("""
    import numpy as np
    from typing_extensions import assert_type

    import fastrnn

    x = np.zeros((2, 3, 4), np.float32)
    w_ih = np.zeros((5, 4), np.float32)
    w_hh = np.zeros((5, 5), np.float32)
    assert_type(fastrnn.forward(x, w_ih, w_hh), tuple[np.ndarray, np.ndarray])
    output, h_n = fastrnn.forward(x, w_ih, w_hh, nonlinearity="relu", return_sequences=True)
    assert_type(output, np.ndarray)
    assert_type(fastrnn.forward(x, w_ih, w_hh, return_sequences=False), np.ndarray)
    flag = bool(x.any())
    assert_type(fastrnn.forward(x, w_ih, w_hh, return_sequences=flag),
                tuple[np.ndarray, np.ndarray] | np.ndarray)
    print(fastrnn.forward(x, w_ih, w_hh, return_sequences=False).shape)
""")


def run_mypy(tmp_path: Path, source: str) -> tuple[str, int]:
    api = pytest.importorskip("mypy.api")
    pytest.importorskip("typing_extensions")
    path = tmp_path / "use.py"
    path.write_text(source)
    stdout, stderr, status = api.run([
        str(path), "--python-version", "3.10", "--ignore-missing-imports",
        "--cache-dir", str(tmp_path / "cache"), "--no-error-summary",
        "--config-file", str(ROOT / "pyproject.toml"),
    ])
    return stdout + stderr, status


@pytest.mark.slow
def test_forward_result_type_follows_return_sequences(tmp_path, monkeypatch):
    monkeypatch.setenv("MYPYPATH", str(ROOT))  # this checkout's fastrnn
    report, status = run_mypy(tmp_path, USE)
    assert status == 0, report
    wrong = USE + "\nassert_type(fastrnn.forward(x, w_ih, w_hh, return_sequences=False), " \
                  "tuple[np.ndarray, np.ndarray])\n"
    report, status = run_mypy(tmp_path, wrong)
    assert status == 1 and "assert-type" in report, report
