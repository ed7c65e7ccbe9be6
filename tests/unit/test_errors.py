import numpy as np
import pytest

from attnscope.errors import AttnscopeError, check_index


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (5, 5), (-1, 5), (-6, 0), (np.int64(2), 2)]
)
def test_check_index_accepts_negatives(value, expected):
    assert check_index(value, 6, "layer") == expected


@pytest.mark.parametrize("value", [6, -7, 100])
def test_check_index_names_the_valid_range(value):
    message = r"layer .* out of range: valid layers are 0 to 5 \(or -6 to -1\)"
    with pytest.raises(AttnscopeError, match=message):
        check_index(value, 6, "layer")


@pytest.mark.parametrize("value", [1.5, "2", True, None])
def test_check_index_rejects_non_integers(value):
    with pytest.raises(AttnscopeError, match="whole number"):
        check_index(value, 6, "head")
