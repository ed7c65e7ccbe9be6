"""The public API: an explicit, sorted __all__ whose every name exists."""

import attnscope as at


def test_all_is_sorted_and_complete():
    assert list(at.__all__) == sorted(at.__all__)
    assert len(set(at.__all__)) == len(at.__all__)
    for name in at.__all__:
        assert hasattr(at, name), name


def test_errors_are_value_errors():
    # existing `except ValueError` code keeps working
    assert issubclass(at.AttnscopeError, ValueError)
