"""Figures of the analyses (matplotlib, made without pyplot; each returns an AttnFigure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.patches import Arc, Patch

from attnscope.analysis.drawing import draws
from attnscope.analysis.embeddings import Projection
from attnscope.analysis.flow import FlowResult
from attnscope.analysis.layers import LAYER_STATS, LayerTrends
from attnscope.analysis.norms import NormAttention
from attnscope.analysis.patterns import MASS_SCORES, SCORES, HeadTable
from attnscope.errors import AttnscopeError, check_index
from attnscope.readable import token_labels, trace_labels
from attnscope.render.static import (
    AttnFigure,
    _label,
    _set_token_ticks,
    heatmap,
    matrix_and_tokens,
    weight_cmap,
)
from attnscope.trace import Trace

__all__ = [
    "attention_graph",
    "flow_matrix_figure",
    "gallery_figure",
    "label_map_figure",
    "layer_trends_figure",
    "norms_figure",
    "projection_figure",
    "relevance_bar_figure",
]


def _fontsize(n: int) -> float:
    return 9 if n <= 40 else 6


@draws(FlowResult, "matrix")
def flow_matrix_figure(result: FlowResult) -> AttnFigure:
    """Rollout or flow as an output x input heatmap (raw values; flow rows are not normalised)."""
    cols = token_labels(result.tokens)
    rows = [cols[i] for i in result.outputs]
    side = min(16.0, max(5.0, 2.5 + 0.26 * len(cols)))
    height = min(16.0, max(2.5, 1.5 + 0.26 * len(rows)))
    fig = AttnFigure(figsize=(side + 1.2, height), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(result.values, cmap=weight_cmap(), aspect="auto", interpolation="nearest",
                      vmin=0.0)
    _set_token_ticks(ax, rows, cols, _fontsize(len(cols)))
    ax.set_xlabel(f"input {result.unit}")
    ax.set_ylabel(f"output {result.unit} (last layer)")
    ax.set_title(f"{result.model_name}\nattention {result.kind}", fontsize=10)
    fig.colorbar(image, ax=ax, label=result.kind, shrink=0.8)
    return fig


@draws(FlowResult, "bar")
def relevance_bar_figure(result: FlowResult, output: int) -> AttnFigure:
    """Bar chart of the input relevance (normalised to sum to 1) of one output token."""
    output = check_index(output, len(result.tokens), "output token")
    rel = result.relevance(output)
    n = len(rel)
    fig = AttnFigure(figsize=(min(16.0, max(5.0, 1.5 + 0.32 * n)), 3.6), layout="constrained")
    ax = fig.add_subplot()
    colours = ["#d62728" if j == output else "#1f77b4" for j in range(n)]
    ax.bar(np.arange(n), rel, color=colours)
    step = max(1, math.ceil(n / 80))  # thin the labels of long texts
    labels = token_labels(result.tokens)
    ax.set_xticks(range(0, n, step), labels=[_label(labels[j]) for j in range(0, n, step)],
                  rotation=90, fontsize=_fontsize(n), parse_math=False)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("relevance")
    ax.set_title(f"{result.model_name}: {result.kind} relevance of each input for output "
                 f"{_label(labels[output])!r} ({output})", fontsize=10)
    return fig


_LABEL_COLOURS = {
    "previous": "#1f77b4", "next": "#ff7f0e", "self": "#2ca02c", "first": "#d62728",
    "separator": "#9467bd", "punctuation": "#8c564b", "duplicate": "#e377c2",
    "induction": "#bcbd22", "broad": "#17becf", "mixed": "#dddddd",
}
_SHORT = {"previous": "prev", "separator": "sep", "punctuation": "punct", "duplicate": "dup",
          "induction": "ind", "broad": "broad", "mixed": "·", "first": "first", "next": "next",
          "self": "self"}


@draws(HeadTable, "label_map")
def label_map_figure(table: HeadTable) -> AttnFigure:
    """Layers (rows) x heads (columns), each cell coloured by its label with the score."""
    layers, heads = table.num_layers, table.num_heads
    fig = AttnFigure(figsize=(max(5.0, 0.75 * heads + 2.8), max(2.5, 0.55 * layers + 1.4)),
                     layout="constrained")
    ax = fig.add_subplot()
    names = list(_LABEL_COLOURS)
    rgb = np.zeros((layers, heads, 3))
    from matplotlib.colors import to_rgb

    for layer in range(layers):
        for head in range(heads):
            label = str(table.labels[layer, head])
            rgb[layer, head] = to_rgb(_LABEL_COLOURS.get(label, "#dddddd"))
            score = table.label_scores[layer, head]
            text = _SHORT.get(label, label)
            if not math.isnan(score):
                text += f"\n{score:.2f}"
            ax.text(head, layer, text, ha="center", va="center", fontsize=6.5)
    ax.imshow(rgb, aspect="auto", interpolation="nearest")
    head_ids = table.head_ids or range(heads)  # the model's own numbers
    layer_ids = table.layer_ids or range(layers)
    ax.set_xticks(range(heads), labels=[str(h) for h in head_ids], fontsize=8)
    ax.set_yticks(range(layers), labels=[str(la) for la in layer_ids], fontsize=8)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    used = [n for n in names if n in set(table.labels.ravel().tolist())]
    ax.legend(handles=[Patch(color=_LABEL_COLOURS[n], label=n) for n in used],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(f"{table.model_name}: what each head does", fontsize=10)
    return fig


@draws(HeadTable, "gallery")
def gallery_figure(table: HeadTable, trace: Trace, patterns: Sequence[str] | None = None,
                   n: int = 3) -> AttnFigure:
    """For each pattern, its ``n`` best heads as heatmaps (one row per pattern)."""
    if patterns is None:
        patterns = [p for p in MASS_SCORES if (b := table.best(p, 1)) and b[0][2] > 0.3]
        patterns.append("broad")
    patterns = list(patterns)
    for p in patterns:
        if p not in SCORES or p == "distance":
            raise AttnscopeError(
                f"Unknown pattern {p!r}; choose from {', '.join(s for s in SCORES[:-1])}."
            )
    n = max(1, int(n))
    cell = 3.8 if trace.num_tokens <= 24 else 5.0
    fig = AttnFigure(figsize=(n * cell + 0.5, len(patterns) * cell + 0.4), layout="constrained")
    axes = fig.subplots(len(patterns), n, squeeze=False)
    for r, pattern in enumerate(patterns):
        best = table.best(pattern, n)
        for c in range(n):
            ax = axes[r, c]
            if c >= len(best):
                ax.set_axis_off()
                continue
            layer, head, score = best[c]
            heatmap(trace, layer, head, part=table.part, ax=ax)
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.set_title(f"{pattern} {score:.2f}: layer {layer}, head {head}", fontsize=9)
    fig.suptitle(f"{trace.model_name}: the best heads of each pattern")
    return fig


@draws(NormAttention, "figure")
def norms_figure(norm_attention: NormAttention, layer: int = -1,
                 head: int | None = None) -> AttnFigure:
    """Raw attention (left) beside norm-based attention ||alpha f(x)|| (right)."""
    trace = norm_attention.trace
    layer = check_index(layer, trace.num_layers, "layer")
    if head is None:
        weights = trace.attentions[layer].mean(axis=0)
        norms = norm_attention.layer_mean(layer)
        which = f"layer {layer}, mean of heads"
    else:
        head = check_index(head, trace.num_heads, "head")
        weights, norms = trace.attentions[layer, head], norm_attention.head(layer, head)
        which = f"layer {layer}, head {head}"
    n = trace.num_tokens
    side = min(9.0, max(4.0, 2.0 + 0.22 * n))
    fig = AttnFigure(figsize=(2 * side + 1.5, side), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, matrix, title, cmap in ((axes[0], weights, "attention weight α", weight_cmap()),
                                    (axes[1], norms, "norm ‖α f(x)‖", weight_cmap())):
        image = ax.imshow(matrix, cmap=cmap, vmin=0, interpolation="nearest", aspect="auto")
        _set_token_ticks(ax, *trace_labels(trace), _fontsize(n))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key")
        fig.colorbar(image, ax=ax, shrink=0.8)
    axes[0].set_ylabel("query")
    weight_share, norm_share = norm_attention.special_share()
    fig.suptitle(f"{trace.model_name}: {which}\nspecial tokens get {weight_share:.0%} of the "
                 f"weight but {norm_share:.0%} of the norm (all heads)", fontsize=10)
    return fig


@draws(LayerTrends, "figure")
def layer_trends_figure(trends: LayerTrends) -> AttnFigure:
    """Four panels: entropy, distance, attention to special tokens, to punctuation, by layer."""
    titles = {"entropy": "normalised entropy", "distance": f"mean distance ({trends.unit}s)",
              "special": "attention to special tokens", "punctuation": "attention to punctuation"}
    fig = AttnFigure(figsize=(10, 6.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    layers = np.arange(trends.values.shape[0])
    for ax, name in zip(axes, LAYER_STATS, strict=True):
        idx = LAYER_STATS.index(name)
        per_head = trends.per_head[:, :, idx]  # (L, H)
        for h in range(per_head.shape[1]):
            ax.plot(layers, per_head[:, h], color="#bbbbbb", linewidth=0.7)
        ax.plot(layers, trends.values[:, idx], color="#d62728", marker="o", linewidth=2,
                label="mean of heads")
        ax.set_title(titles[name], fontsize=10)
        ax.set_xlabel("layer")
        ax.set_xticks(layers)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{trends.model_name}: attention by layer (grey: each head)")
    return fig


@draws(Projection, "figure")
def projection_figure(projection: Projection, *, path: bool = False) -> AttnFigure:
    """Scatter of PCA points labelled with their tokens (``path``: joined in order)."""
    fig = AttnFigure(figsize=(7.5, 6.0), layout="constrained")
    ax = fig.add_subplot()
    pts = projection.points
    if path:
        ax.plot(pts[:, 0], pts[:, 1], color="#999999", linewidth=1, zorder=1)
        ax.scatter(pts[:, 0], pts[:, 1], c=projection.levels, cmap="Blues",
                   edgecolors="#08306b", zorder=2)
    else:
        ax.scatter(pts[:, 0], pts[:, 1], color="#1f77b4", zorder=2)
    for (x, y), label in zip(pts, projection.labels, strict=True):
        ax.text(x, y, " " + _label(label), fontsize=8, va="bottom", parse_math=False)
    ev = projection.explained
    ax.set_xlabel(f"PC 1 ({ev[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({ev[1]:.0%} of variance)")
    ax.set_title(f"{projection.model_name}\n{projection.title}", fontsize=10)
    return fig


def attention_graph(trace: Trace | Any, layer: int | Sequence[str] | None = -1,
                    head: int | Sequence[str] | None = None, *, threshold: float = 0.1,
                    layout: str = "arcs", part: str = "self", title: str | None = None
                    ) -> AttnFigure:
    """Attention as a graph a person can read: tokens as nodes in sentence order, one edge per
    (query, key) pair whose weight exceeds ``threshold``, edge width and darkness by weight.

    Also takes one 2-D matrix ``[T_query, T_key]`` of weights with its tokens:
    ``attention_graph(matrix, tokens)`` or ``attention_graph(matrix, query_tokens, key_tokens)``.

    Args:
        trace: a Trace, or a matrix of non-negative weights.
        layer, head: which head; ``head=None`` averages the layer's heads. For a matrix: its
            query tokens and key tokens.
        threshold: hide edges whose weight is at most this (0.1, as the notebook's graph).
        layout: "arcs" (tokens on one line; arcs above point right, arcs below point left) or
            "columns" (queries on the left, keys on the right, both in sentence order).
        part: "self", or "decoder"/"cross" for encoder-decoder traces.
    """
    if isinstance(trace, Trace):
        attentions, _, _ = trace.check(part).part(part)
        rows, cols = (tuple(labels) for labels in trace_labels(trace, part))
        layer = check_index(layer, attentions.shape[0], "layer")  # type: ignore[arg-type]
        if head is None:
            matrix = attentions[layer].mean(axis=0)
            which = f"layer {layer}, mean of heads"
        else:
            head = check_index(head, attentions.shape[1], "head")  # type: ignore[arg-type]
            matrix = attentions[layer, head]
            which = f"layer {layer}, head {head}"
        name = trace.model_name
    else:
        matrix, rows, cols = matrix_and_tokens(trace, layer, head, "attention_graph")
        if float(matrix.min()) < 0:
            raise AttnscopeError(
                "attention_graph draws non-negative weights as edges; this matrix has negative "
                "values: draw it with heatmap(matrix, tokens)."
            )
        if float(matrix.max()) > 1:
            matrix = matrix / float(matrix.max())  # edge widths and the threshold are on [0, 1]
        name, which = "attention", "one matrix"
    if layout not in ("arcs", "columns"):
        raise AttnscopeError(f"Unknown layout {layout!r}: use 'arcs' or 'columns'.")
    if layout == "arcs" and rows != cols:
        layout = "columns"  # cross attention has two token sequences
    if not 0 <= threshold < 1:
        raise AttnscopeError(f"threshold must be in [0, 1), not {threshold}.")
    q_idx, k_idx = np.nonzero(matrix > threshold)
    weights = matrix[q_idx, k_idx]
    if title is None:
        title = f"{name}: {which}, edges above {threshold:g}"
    if layout == "columns":
        n = max(len(rows), len(cols))
        fig = AttnFigure(figsize=(6.0, max(3.0, 0.32 * n + 1.2)), layout="constrained")
        ax = fig.add_subplot()
        for i, q in enumerate(rows):
            ax.text(-0.02, -i, _label(q), ha="right", va="center", fontsize=9, parse_math=False)
        for j, k in enumerate(cols):
            ax.text(1.02, -j, _label(k), ha="left", va="center", fontsize=9, parse_math=False)
        for i, j, w in zip(q_idx.tolist(), k_idx.tolist(), weights.tolist(), strict=True):
            ax.plot([0, 1], [-i, -j], color="#1f4e9c", alpha=float(0.25 + 0.75 * w),
                    linewidth=float(0.5 + 4.5 * w), solid_capstyle="round")
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(-n + 0.5, 0.8)
        ax.text(0, 0.6, "query", ha="center", fontsize=9, weight="bold")
        ax.text(1, 0.6, "key", ha="center", fontsize=9, weight="bold")
    else:
        n = len(rows)
        fig = AttnFigure(figsize=(min(18.0, max(6.0, 0.6 * n + 1.0)), 5.0), layout="constrained")
        ax = fig.add_subplot()
        top = 0.0
        for i, j, w in zip(q_idx.tolist(), k_idx.tolist(), weights.tolist(), strict=True):
            colour = "#1f4e9c"
            if i == j:  # attention to itself: a small loop above the token
                ax.add_patch(Arc((i, 0.25), 0.35, 0.5, theta1=0, theta2=360, color=colour,
                                 linewidth=float(0.5 + 4.5 * w), alpha=float(0.25 + 0.75 * w)))
                continue
            width, height = abs(j - i), abs(j - i) * 0.5
            above = j > i  # query -> later key above the line, -> earlier key below
            ax.add_patch(Arc(((i + j) / 2, 0), width, height * 2,
                             theta1=0 if above else 180, theta2=180 if above else 360,
                             color=colour if above else "#b5471b",
                             linewidth=float(0.5 + 4.5 * w), alpha=float(0.25 + 0.75 * w)))
            top = max(top, height)
        for i, tok in enumerate(rows):
            ax.text(i, 0, _label(tok), ha="center", va="center", fontsize=9, rotation=90,
                    parse_math=False, bbox={"boxstyle": "round", "fc": "white", "ec": "#888"})
        ax.set_xlim(-1, n)
        ax.set_ylim(-max(top, 1) - 0.3, max(top, 1) + 0.3)
        ax.text(-0.8, max(top, 1), "attends to a later token ↷", fontsize=8, color="#1f4e9c")
        ax.text(-0.8, -max(top, 1), "attends to an earlier token ↶", fontsize=8, color="#b5471b")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return fig
