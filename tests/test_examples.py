"""The scripts in examples/: their helpers, and one end-to-end run each."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """examples/<name>.py as a module (its main() does not run on import)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def esn():
    pytest.importorskip("scipy.sparse")
    return load_example("esn")


@pytest.mark.parametrize(("ours", "theirs", "expected"), [
    (1.0, 3.1, "3.1x faster"),
    (2.5, 1.0, "2.5x slower"),  # printed "0.4x faster" before
    (0.1, 0.1, "1.0x faster"),
    (0.2, 0.1, "2.0x slower"),
])
def test_esn_speed_ratio_reads_both_ways(esn, ours, theirs, expected):
    assert esn.speed_ratio(ours, theirs) == expected


@pytest.mark.slow
def test_esn_runs(esn, capsys):
    esn.main()
    printed = capsys.readouterr().out
    nrmse = float(re.search(r"test NRMSE over \d+ steps: (\S+)", printed).group(1))
    assert nrmse < 1e-3  # one-step Mackey-Glass: the README states 3.4e-4
    assert re.search(r"fastrnn is \d+\.\dx (faster|slower) than the loop; states agree "
                     r"within \S+", printed), printed
