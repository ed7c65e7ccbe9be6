"""How an analysis result draws itself without depending on the module that draws it.

Results (:class:`~attnscope.analysis.patterns.HeadTable`, :class:`~attnscope.analysis.flow.
FlowResult`, ...) are numbers first; their figures live in :mod:`attnscope.analysis.figures`,
which reads results and is never read by them. Each figure function registers itself for a
result type and a kind with :func:`draws`; a result's ``figure()``, ``bar()``, ``label_map()``
... call :func:`draw`. Importing :mod:`attnscope.analysis` (which any ``attnscope.analysis.x``
import does first) registers every figure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from attnscope.errors import AttnscopeError

__all__ = ["draw", "draws"]

_Drawer = TypeVar("_Drawer", bound=Callable[..., Any])

# (result type, kind) -> the function that draws it
_DRAWERS: dict[tuple[type, str], Callable[..., Any]] = {}


def draws(result_type: type, kind: str = "figure") -> Callable[[_Drawer], _Drawer]:
    """Register the decorated function as the ``kind`` figure of ``result_type``."""

    def register(function: _Drawer) -> _Drawer:
        _DRAWERS[(result_type, kind)] = function
        return function

    return register


def draw(result: Any, kind: str = "figure", *args: Any, **kwargs: Any) -> Any:
    """Draw ``result`` as its ``kind`` figure: ``draws``'s function for the nearest type."""
    for cls in type(result).__mro__:
        function = _DRAWERS.get((cls, kind))
        if function is not None:
            return function(result, *args, **kwargs)
    raise AttnscopeError(f"attnscope has no {kind!r} figure for a {type(result).__name__}.")
