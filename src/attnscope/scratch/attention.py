"""Attention written by hand, small enough to read and exact enough to trust.

Everything a transformer's attention does, in the order it does it:

1. project the input into queries, keys and values: ``q = x W_q^T + b_q`` (and k, v);
2. split the width into heads: ``[B, T, H*d] -> [B, H, T, d]``;
3. (LLaMA) rotate q and k by their position (rotary embeddings); (grouped-query attention) let
   several query heads share one key/value head;
4. score every key for every query: ``scores = q @ k^T * scale`` (``scale = 1/sqrt(d)``, except
   T5, which uses 1 and adds a learned relative position bias instead);
5. hide what a query may not see (padding; later tokens in a causal model);
6. softmax over the **keys** (the last axis), so each query's weights sum to 1;
7. mix the values with those weights, put the heads side by side, project back to D.

:func:`scaled_dot_product_attention` is steps 4-7 for one set of q, k, v (numpy or torch);
:class:`SelfAttention` is the one-head module of the classic tutorials; :class:`MultiHeadAttention`
is the whole thing, and can take its weights from a real model's layer
(:meth:`MultiHeadAttention.from_model`). Step 3's rotary embeddings, T5's position bias and
the key/value head sharing are in :mod:`attnscope.adapters.positions`, beside the families that
use them. Rebuilding a real model's layer from a Trace is :mod:`attnscope.scratch.rebuild`.

Shapes: B texts, T tokens (T_q queries, T_k keys), D hidden size, H heads of size d.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnscope.adapters import get_adapter
from attnscope.adapters.base import AttentionParams, RelativePositionBias, Rotary
from attnscope.adapters.positions import (
    apply_rotary,
    relative_position_bias,
    relative_position_buckets,
    repeat_kv,
    rotary_cos_sin,
)
from attnscope.errors import AttnscopeError, check_index
from attnscope.models import LoadedModel

__all__ = [
    "MultiHeadAttention",
    "SelfAttention",
    "apply_rotary",
    "relative_position_bias",
    "relative_position_buckets",
    "repeat_kv",
    "rotary_cos_sin",
    "scaled_dot_product_attention",
    "softmax",
]


# ----- step by step: softmax and scaled dot-product attention --------------------------------

def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax in numpy, along ``axis`` (default: the last one, the keys).

    Subtracting the maximum first changes nothing mathematically (it cancels in the ratio) but
    keeps ``exp`` from overflowing.
    """
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def scaled_dot_product_attention(
    q: Any,
    k: Any,
    v: Any,
    mask: Any = None,
    causal: bool = False,
    *,
    scale: float | None = None,
    bias: Any = None,
    window: int | None = None,
) -> tuple[Any, Any]:
    """softmax(q @ k^T * scale + bias, over keys) @ v, in numpy or torch (same type as ``q``).

    Args:
        q: queries ``[..., T_q, d]``.
        k: keys ``[..., T_k, d]``.
        v: values ``[..., T_k, d_v]``.
        mask: which keys each query may see, broadcastable to ``[..., T_q, T_k]``: 1/True to
            attend, 0/False to hide (a padding mask ``[B, 1, 1, T_k]``, a causal triangle ...).
        causal: also hide every key after the query's own position (GPT-2, LLaMA, decoders).
        scale: factor on the dot products; default ``1/sqrt(d)``. T5 uses 1.0.
        bias: added to the scaled scores, broadcastable to ``[..., T_q, T_k]`` (T5's relative
            position bias).
        window: with ``causal``, each query sees only its last ``window`` keys (itself
            included): Mistral's sliding window.

    Returns:
        ``(output [..., T_q, d_v], weights [..., T_q, T_k])``; every row of ``weights`` sums to 1
        over the keys.
    """
    if isinstance(q, torch.Tensor):
        return _sdpa_torch(q, k, v, mask, causal, scale, bias, window)
    return _sdpa_numpy(np.asarray(q), np.asarray(k), np.asarray(v), mask, causal, scale, bias,
                       window)


def _sdpa_numpy(q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: float | None,
                bias: Any, window: int | None = None) -> tuple[Any, Any]:
    d = q.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    scores = (q @ np.swapaxes(k, -1, -2)) * scale  # (..., T_q, T_k)
    if bias is not None:
        scores = scores + bias
    visible = _visible(mask, causal, scores.shape[-2], scores.shape[-1], np, window=window)
    if visible is not None:
        # The most negative number, not -inf: exp() makes it exactly 0 after the shift, and a
        # row with nothing visible (a padding query) stays finite instead of NaN.
        scores = np.where(visible, scores, np.finfo(scores.dtype).min)
    weights = softmax(scores, axis=-1)  # over keys: each row sums to 1
    return weights @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


def _sdpa_torch(q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: float | None,
                bias: Any, window: int | None = None) -> tuple[Any, Any]:
    d = q.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    if bias is not None:
        scores = scores + bias
    visible = _visible(mask, causal, scores.shape[-2], scores.shape[-1], torch, scores.device,
                       window)
    if visible is not None:
        scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1)  # over keys: each row sums to 1
    return torch.matmul(weights, v), weights  # (..., T_q, d_v), (..., T_q, T_k)


def _visible(
    mask: Any, causal: bool, t_q: int, t_k: int, xp: Any, device: Any = None,
    window: int | None = None,
) -> Any:
    """Boolean ``[..., T_q, T_k]`` (broadcastable): True where a query may see a key."""
    visible = None
    if mask is not None:
        visible = mask.bool().to(device) if xp is torch else np.asarray(mask).astype(bool)
    if causal:
        arange = torch.arange if xp is torch else np.arange
        where = {"device": device} if xp is torch else {}
        i = arange(t_q, **where)[:, None]  # (T_q, 1): query positions
        j = arange(t_k, **where)[None, :]  # (1, T_k): key positions
        offset = t_k - t_q  # more keys than queries: the queries are the last ones
        tri = j <= i + offset  # (T_q, T_k): a query sees itself and earlier keys ...
        if window is not None:
            tri = tri & (j > i + offset - window)  # ... and only its last `window` of them
        visible = tri if visible is None else visible & tri
    return visible


# ----- modules ---------------------------------------------------------------------------------

class SelfAttention(nn.Module):
    """One-head self-attention with Q/K/V projections, an optional mask and dropout.

    The module of the classic tutorials: it projects the whole width (no head split) and scales by
    sqrt(input_dim).

    ``dropout`` defaults to 0: a new module is in training mode, and with dropout the weights it
    returns are zeroed at random and scaled up, so their rows no longer sum to 1 and a plot of
    them misleads. Pass ``dropout=0.1`` to train with it; ``.eval()`` turns it off.
    """

    def __init__(self, input_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.query = nn.Linear(input_dim, input_dim)
        self.key = nn.Linear(input_dim, input_dim)
        self.value = nn.Linear(input_dim, input_dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(input_dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, T, D]``, ``mask`` ``[B, T, T]`` (0 hides) -> (output ``[B, T, D]``,
        weights ``[B, T, T]``, rows sum to 1 over keys before dropout)."""
        q, k, v = self.query(x), self.key(x), self.value(x)  # each (B, T, D)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale  # (B, T, T)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
        weights = F.softmax(scores, dim=-1)  # over keys
        weights = self.dropout(weights)
        return torch.matmul(weights, v), weights  # (B, T, D), (B, T, T)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project, split into heads, attend, concatenate, project back.

    Args:
        d_model: D, the width of the queries' input (and of the output).
        num_heads: H query heads.
        num_kv_heads: key/value heads (default H; fewer for grouped-query attention).
        head_dim: d (default D // H).
        d_kv: width of the keys' and values' input (cross attention; default D).
        bias: whether the projections have biases.
        scale: factor on q·k (default 1/sqrt(d)).
        causal: hide keys after each query.
        dropout: on the attention weights, in training mode only.
        rotary: rotary embeddings for q and k (LLaMA), or None.
        position_bias: T5's relative position bias, or None.
        sliding_window: with ``causal``, each query sees only its last ``sliding_window`` keys.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        d_kv: int | None = None,
        bias: bool = True,
        scale: float | None = None,
        causal: bool = False,
        dropout: float = 0.0,
        rotary: Rotary | None = None,
        position_bias: RelativePositionBias | None = None,
        sliding_window: int | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = head_dim or d_model // num_heads
        self.scale = scale if scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.causal = causal
        self.rotary = rotary
        self.position_bias = position_bias
        self.sliding_window = sliding_window
        d_kv = d_kv or d_model
        self.q_proj = nn.Linear(d_model, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_kv, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_kv, self.num_kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * self.head_dim, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    # -- building from a real model --
    @classmethod
    def from_params(cls, params: AttentionParams) -> MultiHeadAttention:
        """A module holding a copy of a real layer's weights (see :mod:`attnscope.adapters`)."""
        out_dim, in_dim = params.w_q.shape
        has_bias = params.b_q is not None
        module = cls(
            int(params.w_o.shape[0]), params.num_heads, num_kv_heads=params.num_kv_heads,
            head_dim=params.head_dim, d_kv=int(params.w_k.shape[1]), bias=has_bias,
            scale=params.scale, causal=params.causal, rotary=params.rotary,
            position_bias=params.position_bias, sliding_window=params.sliding_window,
        )
        assert in_dim == module.q_proj.in_features and out_dim == module.q_proj.out_features
        with torch.no_grad():
            weights = (("q_proj", params.w_q, params.b_q), ("k_proj", params.w_k, params.b_k),
                       ("v_proj", params.w_v, params.b_v), ("out_proj", params.w_o, params.b_o))
            for name, w, b in weights:
                layer = getattr(module, name)
                layer.weight.copy_(w)
                if layer.bias is not None:
                    if b is None:
                        layer.bias.zero_()  # e.g. LLaMA's o_proj without bias beside biased q/k/v
                    else:
                        layer.bias.copy_(b)
        return module.to(params.w_q.device).eval()

    @classmethod
    def from_model(cls, model: LoadedModel, layer: int, part: str = "self") -> MultiHeadAttention:
        """The attention of ``model``'s ``layer`` (``part``: "self", or for encoder-decoder
        models "decoder" or "cross"), as a :class:`MultiHeadAttention` with its weights."""
        adapter, layer = _adapter_and_layer(model, layer, part)
        return cls.from_params(adapter.attention(model.model, layer, part))

    # -- the computation --
    def project(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values per head, ready for the dot product.

        ``x`` ``[B, T_q, D]`` gives the queries; ``context`` ``[B, T_k, D_kv]`` the keys and values
        (default ``x``: self-attention). Returns q ``[B, H, T_q, d]`` and k, v ``[B, H, T_k, d]``:
        rotated when the model uses rotary embeddings, key/value heads repeated to H.
        """
        context = x if context is None else context
        B, T_q, _ = x.shape
        T_k = context.shape[1]
        d = self.head_dim
        q = self.q_proj(x).view(B, T_q, self.num_heads, d).transpose(1, 2)  # (B, H, T_q, d)
        H_kv = self.num_kv_heads
        k = self.k_proj(context).view(B, T_k, H_kv, d).transpose(1, 2)  # (B, H_kv, T_k, d)
        v = self.v_proj(context).view(B, T_k, H_kv, d).transpose(1, 2)  # (B, H_kv, T_k, d)
        if self.rotary is not None:
            cos, sin = rotary_cos_sin(torch.arange(T_q, device=x.device), self.rotary)  # (T, d)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        n_rep = self.num_heads // self.num_kv_heads
        return q, repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # k, v: (B, H, T_k, d)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``x`` ``[B, T_q, D]`` over ``context`` ``[B, T_k, D_kv]`` (default ``x``).

        ``mask`` ``[B, T_k]``: 1 for real keys, 0 for padding. Returns (output ``[B, T_q, D]``,
        weights ``[B, H, T_q, T_k]``).
        """
        output, weights, _ = self.attend(x, context, mask)
        return output, weights

    def attend(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like :meth:`forward`, and also returns (q, k, v) per head (see :meth:`project`)."""
        q, k, v = self.project(x, context)
        B, H, T_q, d = q.shape
        T_k = k.shape[2]
        bias = None
        if self.position_bias is not None:
            bias = relative_position_bias(self.position_bias, T_q, T_k)  # (H, T_q, T_k)
            bias = bias.to(q.device)
        key_mask = None if mask is None else mask.bool()[:, None, None, :]  # (B, 1, 1, T_k)
        heads, weights = scaled_dot_product_attention(
            q, k, v, key_mask, self.causal, scale=self.scale, bias=bias,
            window=self.sliding_window,
        )  # (B, H, T_q, d), (B, H, T_q, T_k)
        weights_used = self.dropout(weights)
        if weights_used is not weights:
            heads = torch.matmul(weights_used, v)
        concat = heads.transpose(1, 2).reshape(B, T_q, H * d)  # (B, T_q, H*d): heads side by side
        return self.out_proj(concat), weights, (q, k, v)



def _adapter_and_layer(model: LoadedModel, layer: int, part: str) -> tuple[Any, int]:
    adapter = get_adapter(model, "attention by hand")
    if part == "encoder":
        part = "self"
    if part not in adapter.parts:
        raise AttnscopeError(
            f"Attention part {part!r} does not exist in {model.model_type} models; "
            f"valid parts: {', '.join(adapter.parts)}."
        )
    size = model.num_decoder_layers if part in ("decoder", "cross") else model.num_layers
    return adapter, check_index(layer, size, "layer")
