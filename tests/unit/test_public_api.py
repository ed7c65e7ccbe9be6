"""The public API: an explicit, sorted __all__ whose every name exists, and submodules reachable
as attributes as users type them."""

import subprocess
import sys

import pytest

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
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
    assert set(at.__all__) == {*at._EXPORTS, "__version__"}


def test_errors_are_value_errors():
    # existing `except ValueError` code keeps working
    assert issubclass(at.AttnscopeError, ValueError)


def test_submodules_are_attributes_without_a_separate_import():
    """In a fresh interpreter: `import attnscope as at; at.scratch.recompute(...)` works, and
    the submodule is only loaded when first used."""
    code = (
        "import sys, attnscope as at\n"
        "assert 'attnscope.scratch' not in sys.modules\n"
        "assert 'attnscope.compat' not in sys.modules\n"
        "from attnscope.scratch.rebuild import recompute\n"
        "assert at.scratch.recompute is recompute\n"
        "assert callable(at.scratch.MultiHeadAttention.from_model)\n"
        "assert callable(at.compat.head_view) and callable(at.compat.model_view)\n"
        "assert at.analysis.head_patterns is at.head_patterns\n"
        "assert 'bert' in at.adapters.supported()\n"
        "assert callable(at.testing.build_tiny_model)\n"
        "assert {'scratch', 'compat', 'analysis'} <= set(dir(at))\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'scrach'"):
        at.scrach  # noqa: B018
