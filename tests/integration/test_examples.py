"""Every example notebook runs from top to bottom (code cells in order, one namespace)."""

import json
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_notebook_runs(notebook, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert code, f"{notebook.name} has no code"
    namespace: dict = {"__name__": "__main__", "display": lambda *a, **k: None}
    for i, source in enumerate(code):
        try:
            exec(compile(source, f"{notebook.name}[cell {i}]", "exec"), namespace)
        except Exception as err:  # name the cell that broke
            raise AssertionError(f"{notebook.name} cell {i} failed: {err!r}\n{source}") from err
    assert "at" in namespace and "trace" in namespace
