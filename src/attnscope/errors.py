"""The one exception attnscope raises for a person's mistake.

Every message is one sentence that names what was wrong and what is valid. The CLI prints it
without a traceback and exits with status 2; in Python it is an ordinary ``ValueError``, so
``except ValueError`` keeps working in existing code.
"""

from __future__ import annotations

import numbers

__all__ = ["AttnscopeError", "check_index"]


class AttnscopeError(ValueError):
    """A problem with what the user asked for (bad text, index, model name, path...)."""


def check_index(value: int, size: int, what: str, plural: str | None = None) -> int:
    """Return ``value`` as a non-negative index into ``size`` items, accepting negatives.

    ``check_index(-1, 6, "layer")`` is 5. Out of range raises an :class:`AttnscopeError` whose
    message names the valid range: "layer 7 is out of range: valid layers are 0 to 5
    (or -6 to -1)."
    """
    plural = plural or what + "s"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AttnscopeError(f"{what} must be a whole number, not {value!r}.")
    value = int(value)
    if size <= 0:
        raise AttnscopeError(f"there are no {plural} to choose from.")
    if not -size <= value < size:
        raise AttnscopeError(
            f"{what} {value} is out of range: valid {plural} are 0 to {size - 1} "
            f"(or -{size} to -1)."
        )
    return value % size
