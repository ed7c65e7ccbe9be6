"""Layer trends: how attention changes from the first layer to the last.

For every layer, averaged over its heads and over the scored query rows (non-special tokens,
as in :mod:`attnscope.analysis.patterns`):

* ``entropy``: normalised entropy (1 = uniform over the keys a query can see, 0 = one key);
* ``distance``: mean attention distance in positions;
* ``special``: share of attention on special tokens ([CLS], [SEP], <s>...);
* ``punctuation``: share of attention on punctuation tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from attnscope.analysis.drawing import draw
from attnscope.analysis.patterns import (
    DEFAULT_BLOCK,
    _block_size,
    _distance_score,
    _entropy_score,
    _seen,
    _stream,
    is_punctuation,
)
from attnscope.errors import AttnscopeError
from attnscope.trace import Trace, require_trace

if TYPE_CHECKING:
    from attnscope.lazy import LazyTrace
    from attnscope.render.static import AttnFigure

__all__ = ["LAYER_STATS", "LayerTrends", "layer_trends"]

LAYER_STATS = ("entropy", "distance", "special", "punctuation")


@dataclass(frozen=True)
class LayerTrends:
    """Per-layer statistics: ``values`` float64 ``[L, len(LAYER_STATS)]``; ``per_head``
    ``[L, H, len(LAYER_STATS)]`` before averaging over heads."""

    model_name: str
    unit: str
    values: np.ndarray
    per_head: np.ndarray

    def stat(self, name: str) -> np.ndarray:
        """One statistic for every layer, ``[L]``."""
        if name not in LAYER_STATS:
            raise AttnscopeError(
                f"Unknown layer statistic {name!r}; they are {', '.join(LAYER_STATS)}."
            )
        return self.values[:, LAYER_STATS.index(name)]

    def to_text(self) -> str:
        lines = ["layer  entropy  distance  special  punctuation"]
        for layer, (e, d, s, p) in enumerate(self.values):
            lines.append(f"{layer:5d}  {e:7.3f}  {d:8.2f}  {s:7.3f}  {p:11.3f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("layer", *LAYER_STATS))
        rows = "".join(
            "<tr>" + f"<td>{layer}</td>" + "".join(f"<td>{v:.3f}</td>" for v in row) + "</tr>"
            for layer, row in enumerate(self.values)
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    def figure(self) -> AttnFigure:
        """The four statistics against the layer, in one figure."""
        return draw(self, "figure")


def layer_trends(trace: Trace | LazyTrace) -> LayerTrends:
    """Per-layer entropy, distance and attention to special and punctuation tokens.

    Reads ``trace.attentions`` ``[L, H, T, T]`` (a LazyTrace's weights are streamed over
    blocks of rows instead); returns a :class:`LayerTrends`.
    """
    from attnscope.lazy import LazyTrace

    if isinstance(trace, LazyTrace):  # streamed over row blocks: O(H·block·T) memory
        return lazy_layer_trends(trace)
    require_trace(trace, "layer_trends")
    attn = trace.check().attentions
    special = np.asarray(trace.special_mask, dtype=bool)
    rows = np.flatnonzero(~special)
    entropy = _entropy_score(attn, rows, _seen(trace.num_tokens, trace.is_causal))  # (L, H)
    distance = _distance_score(attn, rows)  # (L, H)
    kept = attn[:, :, rows].astype(np.float64)  # (L, H, R, T)
    total = kept.sum(axis=(2, 3))  # (L, H)
    punct = np.array([is_punctuation(t) for t in trace.tokens], dtype=bool) & ~special
    to_special = kept[..., special].sum(axis=(2, 3)) / total
    to_punct = kept[..., punct].sum(axis=(2, 3)) / total
    per_head = np.stack([entropy, distance, to_special, to_punct], axis=-1)  # (L, H, 4)
    return LayerTrends(trace.model_name, trace.unit, np.nanmean(per_head, axis=1), per_head)


def lazy_layer_trends(lazy: LazyTrace, block: int = DEFAULT_BLOCK) -> LayerTrends:
    """:func:`attnscope.layer_trends` of a LazyTrace, streamed over row blocks."""
    columns = _stream(lazy, _block_size(block))
    per_head = np.stack([columns["broad"], columns["distance"], columns["to_special"],
                         columns["to_punct"]], axis=-1)  # (L, H, 4)
    return LayerTrends(lazy.model_name, "token", np.nanmean(per_head, axis=1), per_head)
