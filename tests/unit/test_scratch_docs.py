"""The teaching note's numpy examples run, and the numbers it prints are the ones it shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "scratch.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_numpy_examples_run_and_print_what_the_page_shows():
    blocks = [b for b in _blocks() if "import attnscope as at" not in b]
    assert len(blocks) >= 2
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(DOC), "exec"), {})
        shown = [line.split("#", 1)[1].strip() for line in block.splitlines()
                 if re.match(r"^#\s*[\[ ]", line.strip())]
        shown += [line.split("#", 1)[1].split("--")[0].strip() for line in block.splitlines()
                  if line.startswith("print(") and "#" in line]
        printed = " ".join(out.getvalue().split())
        for expected in shown:
            assert " ".join(expected.split()) in printed, expected
    assert "0.567 0.892 1.541" in " ".join(DOC.read_text(encoding="utf-8").split())
