"""The public API: an explicit, sorted __all__ whose every name exists."""

import attnscope as at


def test_all_is_sorted_and_complete():
    assert list(at.__all__) == sorted(at.__all__)
    assert len(set(at.__all__)) == len(at.__all__)
    for name in at.__all__:
        assert hasattr(at, name), name


def test_import_is_lazy_and_functions_keep_their_names():
    """Importing attnscope loads nothing heavy; ``at.capture`` and ``at.explain`` stay the
    functions even after their modules of the same name are imported."""
    import subprocess
    import sys

    code = (
        "import sys, attnscope as at\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)\n"
        "import attnscope.capture, attnscope.explain\n"
        "assert callable(at.capture) and callable(at.explain), (at.capture, at.explain)\n"
        "assert at.scratch.recompute and at.compat.head_view and at.analysis.head_patterns\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert set(at.__all__) == {*at._EXPORTS, "__version__"}


def test_errors_are_value_errors():
    # existing `except ValueError` code keeps working
    assert issubclass(at.AttnscopeError, ValueError)
