"""Every ```python block of README.md runs as written.

Each block runs on its own, in a fresh namespace and a temporary working
directory (a block that saves "rnn.npz" leaves nothing in the checkout). A
block that imports an optional package (torch, scipy, dask, ...) is skipped
where that package is missing; the block fails the test when it raises,
including through its own asserts. Tracebacks show README.md's line numbers.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# At least the Use, Models, Reservoir computing and Dask examples: a change
# of fence syntax must not leave this test with nothing to run.
MIN_BLOCKS = 4
_FENCE = re.compile(r"^```(\w*)\s*$")


class Block(NamedTuple):
    line: int  # README.md line of the block's first code line
    heading: str  # the section it is in
    source: str


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of ``text``, in order; a ValueError for an
    unclosed fence (which would silently swallow the rest of the file)."""
    blocks = []
    heading = ""
    language = None  # inside a fence: its language ("" for none)
    start, lines = 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = _FENCE.match(line)
        if language is None:
            if fence:
                language, start, lines = fence.group(1), number + 1, []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.strip() == "```":
            if language == "python":
                blocks.append(Block(start, heading, "\n".join(lines) + "\n"))
            language = None
        else:
            lines.append(line)
    if language is not None:
        raise ValueError(f"README.md: the ```{language} fence opened at line {start - 1} "
                         "is never closed")
    return blocks


def imported_modules(source: str) -> list[str]:
    """The absolute imports of ``source``, in order, by full dotted name."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def optional_modules(source: str) -> list[str]:
    """The imports a block needs from outside the standard library and
    fastrnn itself: where one is missing the block is skipped. (fastrnn's own
    modules are never skipped: fastrnn.dask failing must fail the test.)"""
    return [name for name in imported_modules(source)
            if name.split(".")[0] not in sys.stdlib_module_names | {"fastrnn"}]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= MIN_BLOCKS, [block.heading for block in BLOCKS]
    headings = {block.heading for block in BLOCKS}
    for section in ("Use", "Models: `fastrnn.RNN`", "Reservoir computing", "Threads and Dask"):
        assert section in headings, f"no python block under {section!r}: {headings}"


def test_python_blocks_extraction():
    text = "# A\n```python\nx = 1\n```\n```bash\nls\n```\n## B\n```\n# c\n```\n```python\ny\n```\n"
    assert python_blocks(text) == [Block(3, "A", "x = 1\n"), Block(13, "B", "y\n")]
    with pytest.raises(ValueError, match="fence opened at line 1 is never closed"):
        python_blocks("```python\nx = 1\n")
    assert optional_modules("import numpy as np, os.path\nfrom torch.nn import RNN\n"
                            "import fastrnn.dask\nfrom . import x\n") == ["numpy", "torch.nn"]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.heading}" for b in BLOCKS])
def test_readme_block_runs(block, tmp_path, monkeypatch):
    for name in optional_modules(block.source):
        pytest.importorskip(name)
    monkeypatch.chdir(tmp_path)
    # Padded so that a traceback's line numbers are README.md's.
    code = compile("\n" * (block.line - 1) + block.source, str(README), "exec")
    exec(code, {"__name__": "__readme__"})
