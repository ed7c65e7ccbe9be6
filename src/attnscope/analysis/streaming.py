"""The Trace analyses on a :class:`~attnscope.lazy.LazyTrace`, streamed over blocks of query
rows: head patterns, layer trends and attention rollout, equal to the eager ones.

A LazyTrace never holds its ``[L, H, T, T]`` weights; these functions compute one layer's
``[H, block, T]`` weights at a time from its queries and keys, add what each score needs to
running sums, and let the block go. Memory is O(H·block·T) whatever the length; every weight
is computed once per analysis. ``at.head_patterns``, ``at.layer_trends`` and
``at.attention_rollout`` call these when given a LazyTrace, so users call the same functions.

The sums are the eager formulas regrouped by rows (see :mod:`attnscope.analysis.patterns`):
a score that is ``Σ_rows hit / Σ_rows total`` adds each block's hits and totals; a mean over
rows adds each block's row values and divides by the count at the end. The one quantity that
needs every row before it can be read, the "vertical" share (the k most attended key columns),
keeps the column sums ``[L, H, T]`` and picks the top k at the end.

Each streamed function lives beside its eager version (patterns, layers, flow), which calls it
when given a LazyTrace; this module gathers them in one place.
"""

from attnscope.analysis.flow import lazy_rollout
from attnscope.analysis.layers import lazy_layer_trends
from attnscope.analysis.patterns import DEFAULT_BLOCK, lazy_head_patterns

__all__ = ["DEFAULT_BLOCK", "lazy_head_patterns", "lazy_layer_trends", "lazy_rollout"]
