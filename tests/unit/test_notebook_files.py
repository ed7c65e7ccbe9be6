"""The example notebooks are valid nbformat 4.5 files: every cell has an id, nothing warns."""

import warnings
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_notebook_is_valid_with_cell_ids(notebook):
    nbformat = pytest.importorskip("nbformat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing id is a MissingIDFieldWarning
        nb = nbformat.read(notebook, as_version=4)
        nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    ids = [cell.id for cell in nb.cells]
    assert len(set(ids)) == len(ids) and all(ids)
    assert all(cell.outputs == [] for cell in nb.cells if cell.cell_type == "code")  # kept clean
