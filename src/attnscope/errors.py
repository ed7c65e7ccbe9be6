"""The one exception attnscope raises for a person's mistake.

Every message is one sentence that names what was wrong and what is valid. The CLI prints it
without a traceback and exits with status 2; in Python it is an ordinary ``ValueError``, so
``except ValueError`` keeps working in existing code.
"""

from __future__ import annotations

import numbers
from typing import Literal, overload

__all__ = ["AttnscopeError", "check_count", "check_flag", "check_index", "check_number"]


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


def check_flag(value: object, what: str) -> bool:
    """Return ``value`` if it is True or False; anything else (``"no"``, ``None``, ``1``) is
    one sentence, since a string such as ``"false"`` would otherwise read as true."""
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy's bool
        return bool(value)
    raise AttnscopeError(f"{what} must be True or False, not {_shown(value)}.")


@overload
def check_number(value: object, what: str, *, minimum: float | None = None,
                 above: float | None = None, none_ok: Literal[False] = False) -> float: ...
@overload
def check_number(value: object, what: str, *, minimum: float | None = None,
                 above: float | None = None, none_ok: bool) -> float | None: ...
def check_number(value: object, what: str, *, minimum: float | None = None,
                 above: float | None = None, none_ok: bool = False) -> float | None:
    """Return ``value`` as a finite float, with ``value >= minimum`` or ``value > above``.

    ``check_number("x", 3.0, "scale")`` and ``float("nan")`` give one sentence naming what is
    valid; so do booleans, strings and complex numbers. None passes only with ``none_ok``.
    """
    if value is None and none_ok:
        return None
    if minimum is not None:
        valid = f"a number of at least {minimum:g}"
    elif above is not None:
        valid = f"a number above {above:g}"
    else:
        valid = "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AttnscopeError(
            f"{what} must be {valid}{' or None' if none_ok else ''}, not {_shown(value)}."
        )
    number = float(value)
    if (number != number or number in (float("inf"), float("-inf"))
            or (minimum is not None and number < minimum)
            or (above is not None and number <= above)):
        raise AttnscopeError(f"{what} must be {valid}, not {number!r}.")
    return number


def check_count(value: object, what: str, *, minimum: int = 0) -> int:
    """Return ``value`` as an int of at least ``minimum`` (``explain --dims -1``: a sentence)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AttnscopeError(
            f"{what} must be a whole number of at least {minimum}, not {_shown(value)}."
        )
    if int(value) < minimum:
        raise AttnscopeError(f"{what} must be at least {minimum}, not {int(value)}.")
    return int(value)


def _shown(value: object) -> str:
    """A short description of a wrong value: its repr when short, else its type."""
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"
