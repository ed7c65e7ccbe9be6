"""Two Traces side by side: how attention changes between two texts or two models.

``attention_difference(a, b)`` is ``b.attentions - a.attentions`` ``[L, H, T, T]``: it needs
the same number of layers, heads and tokens in both (two texts that differ by a word that is
one token in each, "... because it was too tired" / "... too wide"; or two models that share
a tokenizer). The figures draw it on a diverging scale: red where ``b`` attends more, blue
where it attends less.
"""

from __future__ import annotations

import numpy as np

from attnscope.errors import AttnscopeError, check_index
from attnscope.readable import trace_labels
from attnscope.render.static import AttnFigure, _set_token_ticks
from attnscope.trace import Trace

__all__ = ["attention_difference", "difference_grid", "difference_heatmap", "head_changes"]


def attention_difference(a: Trace, b: Trace, part: str = "self") -> np.ndarray:
    """``b``'s attention minus ``a``'s, float32 ``[L, H, T_q, T_k]``, values in [-1, 1].

    Raises:
        AttnscopeError: the two traces differ in layers, heads or tokens; the message says how.
    """
    att_a, rows_a, cols_a = a.part(part)
    att_b, rows_b, cols_b = b.part(part)
    if att_a.shape[:2] != att_b.shape[:2]:
        raise AttnscopeError(
            f"The two models differ in shape ({att_a.shape[0]} layers x {att_a.shape[1]} heads "
            f"against {att_b.shape[0]} x {att_b.shape[1]}), so their attention cannot be "
            "subtracted head by head."
        )
    if (len(rows_a), len(cols_a)) != (len(rows_b), len(cols_b)):
        raise AttnscopeError(
            f"The two inputs have {len(rows_a)} and {len(rows_b)} tokens; a difference needs "
            "the same number (change words that are one token each, or use one tokenizer)."
        )
    return np.asarray(att_b, dtype=np.float32) - np.asarray(att_a, dtype=np.float32)


def head_changes(difference: np.ndarray) -> np.ndarray:
    """The largest absolute change of each head, ``[L, H]``, from a ``[L, H, T, T]`` difference."""
    return np.abs(difference).max(axis=(2, 3))


def difference_grid(a: Trace, b: Trace, *, part: str = "self") -> AttnFigure:
    """Every layer (rows) x head (columns) of ``b - a`` as one mosaic on a diverging scale."""
    diff = attention_difference(a, b, part)  # (L, H, Tq, Tk)
    layers, heads, tq, tk = diff.shape
    gap = max(1, min(tq, tk) // 8)
    # One image: heads side by side with a NaN gap, drawn by a single imshow (fast at 144 heads).
    mosaic = np.full((layers * (tq + gap) - gap, heads * (tk + gap) - gap), np.nan,
                     dtype=np.float32)
    for layer in range(layers):
        for head in range(heads):
            y, x = layer * (tq + gap), head * (tk + gap)
            mosaic[y:y + tq, x:x + tk] = diff[layer, head]
    limit = max(float(np.abs(diff).max()), 1e-6)
    cell = 0.75
    fig = AttnFigure(figsize=(heads * cell + 1.6, layers * cell + 1.0), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(mosaic, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_xticks([h * (tk + gap) + tk / 2 - 0.5 for h in range(heads)],
                  labels=[f"h{h}" for h in range(heads)], fontsize=7)
    ax.set_yticks([la * (tq + gap) + tq / 2 - 0.5 for la in range(layers)],
                  labels=[f"L{la}" for la in range(layers)], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(image, ax=ax, label="B \u2212 A", shrink=0.8)
    ax.set_title(f"attention of B minus A, every layer x head\nA: {_name(a)}   B: {_name(b)}",
                 fontsize=9)
    return fig


def difference_heatmap(a: Trace, b: Trace, layer: int = -1, head: int = 0, *,
                       part: str = "self") -> AttnFigure:
    """One head's ``b - a`` ``[T_q, T_k]`` with both inputs' tokens on the axes ("a / b" where
    they differ)."""
    diff = attention_difference(a, b, part)
    layer = check_index(layer, diff.shape[0], "layer")
    head = check_index(head, diff.shape[1], "head")
    rows_a, cols_a = trace_labels(a, part)
    rows_b, cols_b = trace_labels(b, part)
    rows = [x if x == y else f"{x} / {y}" for x, y in zip(rows_a, rows_b, strict=True)]
    cols = [x if x == y else f"{x} / {y}" for x, y in zip(cols_a, cols_b, strict=True)]
    matrix = diff[layer, head]
    limit = max(float(np.abs(matrix).max()), 1e-6)
    side = min(14.0, max(4.5, 2.5 + 0.24 * max(len(rows), len(cols))))
    fig = AttnFigure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                      interpolation="nearest")
    _set_token_ticks(ax, rows, cols, 9 if max(len(rows), len(cols)) <= 40 else 6)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(f"layer {layer}, head {head}: B \u2212 A", fontsize=10)
    fig.colorbar(image, ax=ax, label="B \u2212 A", shrink=0.8)
    return fig


def _name(trace: Trace) -> str:
    text = trace.text if len(trace.text) <= 40 else trace.text[:39] + "\u2026"
    return f"{trace.model_name.rsplit('/', 1)[-1]}: {text!r}"
