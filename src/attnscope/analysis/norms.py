"""Norm-based attention (Kobayashi et al., 2020, "Attention is Not Only a Weight").

A head's output for query i is ``sum_j alpha_ij f(x_j)``, where ``f(x_j)`` is token j's value
vector (value bias included) passed through that head's slice of the output projection (its
bias left out, as it does not depend on j). The weight ``alpha_ij`` alone ignores how long
``f(x_j)`` is; the norm ``||alpha_ij f(x_j)||`` measures what token j really adds. Attention to
[CLS], [SEP] and punctuation is often large in weight but small in norm: their value vectors are
short.

Per head h: ``f_h(x_j) = v_j^h @ W_o[:, h*d:(h+1)*d].T`` (``[D]``), so the norm is
``alpha_ij * ||f_h(x_j)||``. Values come from :func:`attnscope.capture` with ``qkv=True``
(grouped-query models have their key/value heads repeated to every query head); the output
projection from the family's adapter (:mod:`attnscope.adapters`).

For a Trace merged into words, the norm of key word v for query word w is the norm of the
**summed vectors**, ``||mean_{i in w} sum_{j in v} alpha_ij f(x_j)||``: what the word as a whole
adds to the output, averaged over the query word's tokens as merged attention averages its rows.
Summing the tokens' norms instead would count vectors that point in opposite directions as
adding up, when they cancel; the norm of the sum is never larger than the sum of the norms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from attnscope.analysis.drawing import draw
from attnscope.errors import AttnscopeError, check_index
from attnscope.trace import Trace, require_trace

if TYPE_CHECKING:
    from attnscope.models import LoadedModel
    from attnscope.render.static import AttnFigure

__all__ = ["NormAttention", "attention_norms"]


@dataclass(frozen=True)
class NormAttention:
    """Norm-based attention of every head.

    ``norms`` float32 ``[L, H, T, T]``: ``||alpha_ij f(x_j)||``; ``value_norms`` float32
    ``[L, H, T]``: ``||f(x_j)||`` (token level; merged traces keep the token-level ones).
    ``trace`` is the Trace the norms belong to (same tokens and unit).
    """

    trace: Trace
    norms: np.ndarray
    value_norms: np.ndarray

    def head(self, layer: int = -1, head: int = 0) -> np.ndarray:
        """One head's norm matrix ``[T, T]``."""
        layer = check_index(layer, self.norms.shape[0], "layer")
        head = check_index(head, self.norms.shape[1], "head")
        return self.norms[layer, head]

    def layer_mean(self, layer: int = -1) -> np.ndarray:
        """Mean over a layer's heads ``[T, T]``."""
        layer = check_index(layer, self.norms.shape[0], "layer")
        return self.norms[layer].mean(axis=0)

    def special_share(self) -> tuple[float, float]:
        """(share of attention weight, share of norm) that goes to special tokens, over all
        heads and non-special queries: the gap shows how little [CLS]/[SEP] attention carries."""
        special = np.asarray(self.trace.special_mask, dtype=bool)
        rows = ~special
        weight = self.trace.attentions[:, :, rows].astype(np.float64)  # (L, H, R, T)
        norm = self.norms[:, :, rows].astype(np.float64)
        return (float(weight[..., special].sum() / weight.sum()),
                float(norm[..., special].sum() / norm.sum()))

    def figure(self, layer: int = -1, head: int | None = None) -> AttnFigure:
        """Raw attention beside norm-based attention (one head, or the layer's mean)."""
        return draw(self, "figure", layer, head)


def attention_norms(trace: Trace, model: LoadedModel | None = None) -> NormAttention:
    """Norm-based attention for every layer and head of ``trace``.

    Args:
        trace: a Trace; one captured with ``qkv=True`` already has the value vectors.
        model: the LoadedModel the trace came from; it gives the output projection (and, when
            the trace has no values or is merged into words, the values by capturing again).

    Returns:
        A :class:`NormAttention` with ``norms`` ``[L, H, T, T]``.
    """
    require_trace(trace, "attention_norms")
    if model is None:
        raise AttnscopeError(
            "Norm-based attention needs the model for its output projection: "
            "attention_norms(trace, model)."
        )
    if model.model_type != trace.model_type:
        raise AttnscopeError(
            f"This trace comes from a {trace.model_type!r} model but the model given is "
            f"{model.model_type!r}; pass the model the trace was captured with."
        )
    trace.check()
    from attnscope.adapters import get_adapter

    adapter = get_adapter(model, "norm-based attention")
    token_trace = trace
    if trace.values is None or trace.unit == "word":
        from attnscope.capture import capture

        token_trace = capture(model, trace.text, trace.text_b, qkv=True, attention="eager")
    values = token_trace.values  # (L, H, T, d)
    assert values is not None
    layers, heads, _, head_dim = values.shape
    value_norms = np.empty(values.shape[:3], dtype=np.float32)  # (L, H, T)
    words = None
    if trace.unit == "word":
        from attnscope.words import _mean_matrix, word_groups

        groups = word_groups(token_trace.word_ids)
        if len(groups) != trace.num_tokens:
            raise AttnscopeError("The trace's words do not match its text; capture it again.")
        mean = _mean_matrix(groups, token_trace.num_tokens)  # (W, T): averages a word's queries
        member = (mean > 0).astype(np.float32).T  # (T, W): 1 where token t is in word w
        words = np.empty((layers, heads, len(groups), len(groups)), dtype=np.float32)
    for layer in range(layers):
        w_o = adapter.attention(model.model, layer, "self").w_o  # (D, H*d)
        w_o = w_o.detach().float().cpu().numpy().reshape(-1, heads, head_dim)  # (D, H, d)
        # f_h(x_j) = v_j^h @ W_o^h.T: (H, T, d) x (D, H, d) -> (H, T, D)
        projected = np.einsum("htd,ehd->hte", values[layer].astype(np.float32), w_o)
        value_norms[layer] = np.linalg.norm(projected, axis=-1)
        if words is not None:
            for head in range(heads):
                rows = mean @ token_trace.attentions[layer, head]  # (W, T): a word's mean row
                # sum over each key word's tokens of the weighted vectors: (W, W, D)
                summed = np.einsum("wt,tv,te->wve", rows, member, projected[head], optimize=True)
                words[layer, head] = np.linalg.norm(summed, axis=-1)
    norms = words if words is not None else token_trace.attentions * value_norms[:, :, None, :]
    return NormAttention(trace, norms.astype(np.float32), value_norms)
