"""``layers=`` and ``heads=``: which of a model's layers and heads a capture records.

Every capture (``capture``, ``capture_batch``, ``attention="lazy"``, ``generate``) takes them:
None records every one; a list (or one int) records those only, held in the model's order, and
the Trace names them in ``layer_ids`` / ``head_ids`` so figures and tables give the real layer
and head. Negative numbers count from the end, as in Python.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError

__all__ = ["choose", "select_extra"]


def choose(value: Any, size: int, what: str, model_name: str) -> tuple[int, ...] | None:
    """The sorted model indices ``value`` names among ``size`` ``what``s ("layer", "head"), or
    None for every one (``value`` None, or naming all of them in order).

    Raises:
        AttnscopeError: an empty list, something that is not a whole number, a number out of
            range, or one named twice; one sentence each.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, numbers.Integral) else value
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
        raise AttnscopeError(f"{what}s= takes a list of {what} numbers (or one number), not "
                             f"{_shown(value)}.")
    items = list(items)
    if not items:
        raise AttnscopeError(f"{what}s=[] records no {what}; leave {what}s= out to record "
                             f"every {what}, or name at least one.")
    chosen: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (numbers.Integral, np.integer)):
            raise AttnscopeError(f"{what}s= takes whole {what} numbers, not {_shown(item)}.")
        if not -size <= int(item) < size:
            raise AttnscopeError(
                f"{what.capitalize()} {int(item)} is out of range: {model_name} has {size} "
                f"{what}s (0 to {size - 1}, or negative from the end)."
            )
        index = int(item) % size
        if index in chosen:
            raise AttnscopeError(f"{what}s= names {what} {index} twice; name each {what} once.")
        chosen.append(index)
    chosen.sort()
    return None if chosen == list(range(size)) else tuple(chosen)


def select_extra(extra: dict[str, Any], layers: tuple[int, ...] | None,
                 heads: tuple[int, ...] | None) -> dict[str, Any]:
    """``trace.extra``'s per-layer facts (attention scales, sliding windows) and per-head ones
    (T5's position-bias table) cut to the chosen layers and heads. With chosen heads the
    key/value heads are held repeated, one a query head, so ``num_key_value_heads`` is left
    out."""
    out = dict(extra)
    if layers is not None:
        for key in ("attention_scales", "sliding_windows"):
            if isinstance(out.get(key), (list, tuple)):
                out[key] = [out[key][i] for i in layers]
    if heads is not None:
        out.pop("num_key_value_heads", None)
        bias = out.get("position_bias")
        if isinstance(bias, dict) and isinstance(bias.get("table"), list):
            out["position_bias"] = {**bias, "table": [[row[h] for h in heads]
                                                      for row in bias["table"]]}
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
