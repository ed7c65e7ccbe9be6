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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from attnscope.analysis.patterns import (
    MASS_SCORES,
    SCORES,
    _targets,
    head_table,
    is_punctuation,
)
from attnscope.errors import AttnscopeError, check_index

if TYPE_CHECKING:
    from attnscope.analysis.flow import FlowResult
    from attnscope.analysis.layers import LayerTrends
    from attnscope.analysis.patterns import HeadTable
    from attnscope.lazy import LazyTrace

__all__ = ["lazy_head_patterns", "lazy_layer_trends", "lazy_rollout"]

#: query rows per block when the caller gives none: a block costs H · block · T · 4 bytes.
DEFAULT_BLOCK = 256


def _block_size(block: Any) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise AttnscopeError(f"block must be a whole number of 1 or more, not {block!r}.")
    return int(block)


class _Sums:
    """Running ``[L, H]`` float64 sums, by name, created on first use."""

    def __init__(self, layers: int, heads: int) -> None:
        self.shape = (layers, heads)
        self.values: dict[str, np.ndarray] = {}

    def add(self, name: str, layer: int, value: Any) -> None:
        if name not in self.values:
            self.values[name] = np.zeros(self.shape, np.float64)
        self.values[name][layer] += np.asarray(value, dtype=np.float64)

    def get(self, name: str) -> np.ndarray:
        return self.values.get(name, np.zeros(self.shape, np.float64))


def _ratio(num: np.ndarray, den: np.ndarray | float, defined: bool) -> np.ndarray:
    if not defined:
        return np.full(num.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _stream(lazy: LazyTrace, block: int) -> dict[str, np.ndarray]:
    """One pass over every layer's weights, row block by row block: every head-pattern score,
    Kovaleva's three shares and the layer-trend shares, each ``[L, H]``.

    Each block costs a few passes over its ``[H, r, c]`` weights: the exponential, the row
    sums, the entropy and distance products, and one matrix product for the column sums over
    the scored rows (every column-target score reads those ``[H, c]`` sums). Targets on
    (query, key) pairs are gathered from their index lists.
    """
    import torch

    L, H, T = lazy.num_layers, lazy.num_heads, lazy.num_tokens
    tokens, causal = lazy.tokens, lazy.is_causal
    special = np.asarray(lazy.special_mask, dtype=bool)
    plain = ~special
    segments = np.asarray(lazy.segment_ids)
    punct_cols = np.flatnonzero(np.array([is_punctuation(t) for t in tokens], bool) & plain)
    special_cols = np.flatnonzero(special)
    pair_segments = bool((segments == 0).any() and (segments == 1).any())
    seen = np.arange(1, T + 1) if causal else np.full(T, T)  # keys each query sees
    heads = np.arange(H)
    sums = _Sums(L, H)
    counts = {"sink": 0, "broad": 0, "plain": 0}
    scored: dict[str, int] = {}
    column_mass = np.zeros((L, H, T), np.float64)  # over plain rows, for the vertical share
    with torch.inference_mode():
        for start in range(0, T, block):
            stop = min(start + block, T)
            rows = np.arange(start, stop)
            c = stop if causal else T  # keys past the block's last query are masked: P = 0
            cols = np.arange(c)
            targets = _targets(tokens, special, causal, start, stop)
            plain_local = np.flatnonzero(plain[start:stop])
            sink_local = np.flatnonzero(seen[start:stop] > 1)
            keep_local = plain_local[seen[start:stop][plain_local] > 1]
            counts["sink"] += len(sink_local)
            counts["broad"] += len(keep_local)
            counts["plain"] += len(plain_local)
            for name, target in targets.items():
                scored[name] = scored.get(name, 0) + len(target.rows)
            # the plain rows as weights: one product gives their column sums
            plain_weight = torch.from_numpy(plain[start:stop].astype(np.float32))[None, None]
            q_plain = rows[plain_local]
            gap = np.abs(q_plain[:, None] - cols[None, :])  # (Rp, c)
            diag_q, diag_k = np.nonzero(gap <= 1)
            if pair_segments:
                # own sentence: a product with one column per sentence, then each row's own
                onehot = np.stack([segments[:c] == 0, segments[:c] == 1], -1)  # (c, 2)
                own_onehot = torch.from_numpy(onehot.astype(np.float32))
                own_segment = segments[q_plain]
                own_rows = np.flatnonzero(own_segment >= 0)
            else:
                own_q, own_k = np.nonzero((gap >= 2) & (gap <= 4))
            dist = torch.from_numpy(np.abs(rows[:, None] - cols[None, :]).astype(np.float32))
            log_norm = torch.from_numpy(np.log(seen[rows[keep_local]]).astype(np.float32))
            for layer in range(L):
                logp = lazy._log_weights(layer, heads, rows, cols)  # (H, r, c)
                p = torch.exp(logp)
                row_sums = p.sum(-1, dtype=torch.float64)  # (H, r)
                columns = torch.matmul(plain_weight, p)[:, 0].double()  # (H, c): plain rows
                for name, target in targets.items():
                    if not len(target.rows):
                        continue
                    sums.add(f"{name}.total", layer,
                             row_sums[:, target.rows - start].sum(-1).numpy())
                    if target.cols is not None:  # every such target scores the plain rows
                        kept = target.cols[target.cols < c]
                        hit = columns[:, kept].sum(-1)
                    else:
                        assert target.q is not None and target.k is not None
                        inside = target.k < c
                        hit = p[:, target.q[inside] - start, target.k[inside]].sum(
                            -1, dtype=torch.float64)
                    sums.add(f"{name}.hit", layer, hit.numpy())
                if len(sink_local):
                    sums.add("sink", layer, p[:, sink_local, 0].sum(-1, dtype=torch.float64))
                # per-row entropy and distance over the whole block, then the rows wanted
                # (−Σ P log P from log P itself; 0 · −inf is set to 0 where the model masks)
                entropy = -(p * logp.nan_to_num_(neginf=0.0)).sum(-1)  # (H, r)
                distance = (p * dist).sum(-1, dtype=torch.float64)  # (H, r)
                if len(keep_local):
                    sums.add("broad", layer,
                             (entropy[:, keep_local] / log_norm).sum(-1, dtype=torch.float64))
                if len(plain_local):
                    sums.add("distance", layer, distance[:, plain_local].sum(-1))
                    sums.add("plain.total", layer, row_sums[:, plain_local].sum(-1).numpy())
                    sums.add("diagonal", layer, p[:, plain_local[diag_q], diag_k].sum(
                        -1, dtype=torch.float64))
                    if pair_segments:
                        per_segment = torch.matmul(p[:, plain_local], own_onehot)  # (H, Rp, 2)
                        own = per_segment[:, own_rows, own_segment[own_rows]]
                        sums.add("block", layer, own.sum(-1, dtype=torch.float64))
                    else:
                        sums.add("block", layer, p[:, plain_local[own_q], own_k].sum(
                            -1, dtype=torch.float64))
                    column_mass[layer, :, :c] += columns.numpy()
                    for name, where in (("to_special", special_cols), ("to_punct", punct_cols)):
                        where = where[where < c]
                        sums.add(name, layer, columns[:, where].sum(-1).numpy())
    out: dict[str, np.ndarray] = {}
    for name in MASS_SCORES:
        out[name] = _ratio(sums.get(f"{name}.hit"), sums.get(f"{name}.total"),
                           scored.get(name, 0) > 0)
    out["sink"] = _ratio(sums.get("sink"), counts["sink"], counts["sink"] > 0)
    out["broad"] = _ratio(sums.get("broad"), counts["broad"], counts["broad"] > 0)
    has_plain = counts["plain"] > 0
    out["distance"] = _ratio(sums.get("distance"), counts["plain"], has_plain)
    total = sums.get("plain.total")
    out["diagonal"] = _ratio(sums.get("diagonal"), total, has_plain)
    out["block"] = _ratio(sums.get("block"), total, has_plain)
    k = max(1, math.ceil(T / 10))
    top = np.partition(column_mass, T - k, axis=-1)[..., T - k:].sum(axis=-1)
    out["vertical"] = _ratio(top, total, has_plain)
    out["to_special"] = _ratio(sums.get("to_special"), total, has_plain)
    out["to_punct"] = _ratio(sums.get("to_punct"), total, has_plain)
    return out


def lazy_head_patterns(lazy: LazyTrace, part: str = "self",
                       block: int = DEFAULT_BLOCK) -> HeadTable:
    """:func:`attnscope.head_patterns` of a LazyTrace, streamed over row blocks (memory
    O(H·block·T)); the same table as the eager Trace's, to float rounding."""
    if part == "decoder" and lazy.decoder is not None:
        lazy = lazy.decoder  # the decoder's own tokens, causal
    elif part == "cross":
        raise AttnscopeError("Head patterns score self-attention; use part 'self' or 'decoder'.")
    elif part not in ("self", "encoder"):
        raise AttnscopeError(
            f"This lazy trace holds no {part!r} attention; it holds "
            f"{'self, decoder and cross' if lazy.decoder is not None else 'self-attention'}."
        )
    else:
        part = "self"
    columns = _stream(lazy, _block_size(block))
    parts = {name: columns[name] for name in ("diagonal", "vertical", "block")}
    return head_table(lazy.model_name, lazy.tokens, "token", part,
                      {name: columns[name] for name in SCORES}, parts, lazy.layer_ids,
                      lazy.head_ids)


def lazy_layer_trends(lazy: LazyTrace, block: int = DEFAULT_BLOCK) -> LayerTrends:
    """:func:`attnscope.layer_trends` of a LazyTrace, streamed over row blocks."""
    from attnscope.analysis.layers import LayerTrends

    columns = _stream(lazy, _block_size(block))
    per_head = np.stack([columns["broad"], columns["distance"], columns["to_special"],
                         columns["to_punct"]], axis=-1)  # (L, H, 4)
    return LayerTrends(lazy.model_name, "token", np.nanmean(per_head, axis=1), per_head)


def lazy_rollout(lazy: LazyTrace, outputs: Sequence[int] | None = None, *,
                 block: int = DEFAULT_BLOCK, budget: Any = None) -> FlowResult:
    """Attention rollout rows of the chosen output tokens, exact, without any ``[T, T]``.

    Row i of ``R_{L-1} @ ... @ R_0`` (see :func:`attnscope.residual_attention`) is the vector
    ``e_i`` multiplied from the last layer down: ``v ← v @ R_l``. Each product reads ``R_l``
    one block of rows at a time, ``v[:, rows] @ R_l[rows, :]``, so memory is the vectors
    ``[k, T]`` plus one ``[H, block, T]`` block of weights.

    Args:
        outputs: token positions (default: every token, refused past the memory budget).
    """
    import torch

    from attnscope.analysis.flow import FlowResult
    from attnscope.lazy import _guard_array

    block = _block_size(block)
    L, H, T = lazy.num_layers, lazy.num_heads, lazy.num_tokens
    if outputs is None:
        chosen = list(range(T))
    else:
        chosen = [check_index(o, T, "output token") for o in outputs]
    _guard_array((len(chosen), T, 2), "The rollout rows", budget)  # float64: 2 x 4 bytes
    v = np.zeros((len(chosen), T), np.float64)
    v[np.arange(len(chosen)), chosen] = 1.0
    heads = np.arange(H)
    with torch.inference_mode():
        for layer in reversed(range(L)):
            new = np.zeros_like(v)
            for start in range(0, T, block):
                stop = min(start + block, T)
                rows = np.arange(start, stop)
                c = stop if lazy.is_causal else T
                mean = lazy._weights(layer, heads, rows, np.arange(c)).double().mean(0)
                mean = mean.numpy()  # (r, c)
                # R[i, :] = (0.5·mean[i, :] + 0.5·e_i) / (0.5·Σ_j mean[i, j] + 0.5)
                weight = v[:, start:stop] / (0.5 * mean.sum(-1) + 0.5)  # (k, r)
                new[:, :c] += 0.5 * weight @ mean
                new[:, start:stop] += 0.5 * weight
            v = new
    return FlowResult("rollout", v, tuple(chosen), lazy.tokens, lazy.model_name, "token")
