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
(:meth:`MultiHeadAttention.from_model`). :func:`recompute` rebuilds a layer of a real model from
the hidden states that entered it and compares with the attention the model itself returned.

Shapes: B texts, T tokens (T_q queries, T_k keys), D hidden size, H heads of size d.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnscope.adapters import get_adapter
from attnscope.adapters.base import AttentionParams, RelativePositionBias, Rotary
from attnscope.errors import AttnscopeError, check_index
from attnscope.models import LoadedModel
from attnscope.trace import Trace

__all__ = [
    "MultiHeadAttention",
    "Recomputation",
    "SelfAttention",
    "apply_rotary",
    "recompute",
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


def _sdpa_numpy(q, k, v, mask, causal, scale, bias, window=None):
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


def _sdpa_torch(q, k, v, mask, causal, scale, bias, window=None):
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


# ----- position: rotary embeddings and T5's relative buckets ---------------------------------

def rotary_cos_sin(positions: Any, rotary: Rotary) -> tuple[Any, Any]:
    """cos and sin ``[T, d]`` of rotary embeddings for integer ``positions`` ``[T]``.

    Dimension pair j turns by ``position * inv_freq[j]``; the two halves of a head share the
    angles (LLaMA pairs dimension j with j + d/2).
    """
    inv_freq = rotary.inv_freq.float()
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, d)
    return angles.cos() * rotary.scaling, angles.sin() * rotary.scaling


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] over the last axis: a 90 degree turn of each (j, j + d/2) pair."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` ``[B, H, T, d]`` by ``cos``/``sin`` ``[T, d]`` or ``[B, T, d]``.

    After rotation, q_i · k_j depends on the positions only through i - j.
    """
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, d): the same for every head
    return x * cos + _rotate_half(x) * sin


def relative_position_buckets(
    t_q: int, t_k: int, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bucket ``[T_q, T_k]`` for every (query, key) pair, from the distance key - query.

    Small distances get a bucket each; larger ones share logarithmically wider buckets up to
    ``max_distance``. Bidirectional (encoder): half of the buckets are for keys after the query.
    Unidirectional (decoder): only keys at or before the query are told apart.
    """
    distance = torch.arange(t_k)[None, :] - torch.arange(t_q)[:, None]  # (T_q, T_k): key - query
    bucket = torch.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance > 0).long() * num_buckets  # keys after the query
        distance = distance.abs()
    else:
        distance = (-distance).clamp(min=0)  # keys after the query all count as distance 0
    exact = num_buckets // 2
    # Beyond `exact`, the bucket grows with log(distance), reaching num_buckets - 1 at max_distance.
    log_ratio = torch.log(distance.float() / exact) / math.log(max_distance / exact)
    far = exact + (log_ratio * (num_buckets - exact)).long()
    far = far.clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < exact, distance, far)


def relative_position_bias(bias: RelativePositionBias, t_q: int, t_k: int) -> torch.Tensor:
    """The bias ``[H, T_q, T_k]`` that T5 adds to the scores: the table looked up by bucket."""
    buckets = relative_position_buckets(
        t_q, t_k, bias.bidirectional, bias.num_buckets, bias.max_distance
    )  # (T_q, T_k)
    table = torch.as_tensor(bias.table).detach().float()  # (num_buckets, H)
    return table[buckets.to(table.device)].permute(2, 0, 1)  # (T_q, T_k, H) -> (H, T_q, T_k)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: ``[B, H_kv, T, d] -> [B, H_kv*n_rep, T, d]``, so query head h
    uses key/value head ``h // n_rep``."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


# ----- modules ---------------------------------------------------------------------------------

class SelfAttention(nn.Module):
    """One-head self-attention with Q/K/V projections, an optional mask and dropout.

    The module of the classic tutorials: it projects the whole width (no head split) and scales by
    sqrt(input_dim).
    """

    def __init__(self, input_dim: int, dropout: float = 0.1) -> None:
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


# ----- rebuilding a real model's layer ------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Recomputation:
    """One layer's attention rebuilt by hand, beside what the model itself returned.

    Attributes:
        part: "self", "decoder" or "cross". layer: the layer index.
        attentions: float32 ``[H, T_q, T_k]``, from the hand-written code.
        expected: float32 ``[H, T_q, T_k]``, the model's ``output_attentions`` from the Trace.
        queries: ``[H, T_q, d]`` (post-rotary); keys, values: ``[H, T_k, d]`` (repeated to H heads).
        output: ``[T_q, D]``, the attention block's output after the output projection (None when
            rebuilt from a Trace's stored q/k/v without the model's weights).
        query_tokens, key_tokens: the tokens of the rows and of the columns.
    """

    part: str
    layer: int
    attentions: np.ndarray
    expected: np.ndarray
    queries: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    output: np.ndarray | None
    query_tokens: tuple[str, ...]
    key_tokens: tuple[str, ...]

    @property
    def max_abs_error(self) -> float:
        """Largest |hand-written - model| over every head, query and key."""
        return float(np.max(np.abs(self.attentions - self.expected)))

    def __repr__(self) -> str:
        H, T_q, T_k = self.attentions.shape
        return (
            f"Recomputation(part={self.part!r}, layer={self.layer}, {H} heads x {T_q} x {T_k}, "
            f"max_abs_error={self.max_abs_error:.2e})"
        )


def recompute(
    source: LoadedModel | Trace | Sequence[Trace],
    text: str | Sequence[str] | int | None = None,
    layer: int = 0,
    *,
    model: LoadedModel | None = None,
    part: str = "self",
    text_b: str | Sequence[str | None] | None = None,
) -> Recomputation | list[Recomputation]:
    """Rebuild one layer's attention with the hand-written code and the model's own weights.

    The layer's input is the hidden state that entered it (``trace.hidden_states[layer]``),
    normalised first where the family normalises before attention (GPT-2, LLaMA, T5).

    Call it as:

    * ``recompute(model, "a text", layer)``: capture, then rebuild;
    * ``recompute(model, ["a text", "a longer text"], layer)``: the texts run as one batch,
      padded on the right, through the hand-written code with a padding mask; one
      :class:`Recomputation` per text;
    * ``recompute(trace, layer=..., model=model)``: from a Trace you already have;
    * ``recompute(trace, layer=...)`` on a Trace captured with ``qkv=True``: from its stored
      queries, keys and values (``output`` is then None).

    Args:
        part: "self" (the encoder of T5/BART), "decoder" or "cross" for encoder-decoder models.
        text_b: the second sentence, or the decoder's text for T5/BART (one per text).

    Returns:
        A :class:`Recomputation` (a list of them for a list of texts or Traces).
    """
    from attnscope.capture import capture_batch

    if isinstance(source, Trace) or (
        isinstance(source, Sequence) and not isinstance(source, str)
        and all(isinstance(t, Trace) for t in source)
    ):
        if isinstance(text, int) and not isinstance(text, bool):
            layer = text  # recompute(trace, 2): the second argument is the layer
        elif text is not None:
            raise AttnscopeError("recompute(trace, ...) takes no text: the Trace holds it.")
        single = isinstance(source, Trace)
        traces = [source] if single else list(source)
        if not traces:
            raise AttnscopeError("recompute needs at least one Trace.")
        if model is None:
            if part != "self" or traces[0].queries is None:
                raise AttnscopeError(
                    "recompute needs the model's weights for this: pass model=attnscope.load(...),"
                    " or capture the trace with qkv=True."
                )
            results = [_from_stored_qkv(t, layer) for t in traces]
        else:
            results = _from_hidden_states(model, traces, layer, part)
        return results[0] if single else results

    if not isinstance(source, LoadedModel):
        raise AttnscopeError(
            "recompute takes a model from attnscope.load() with a text, or a Trace; "
            f"got {type(source).__name__}."
        )
    if text is None or isinstance(text, int):
        raise AttnscopeError("recompute(model, text, layer) needs a text (or a list of texts).")
    single = isinstance(text, str)
    texts = [text] if single else list(text)
    if not texts:
        raise AttnscopeError("recompute needs at least one text.")
    texts_b = None
    if text_b is not None:
        texts_b = [text_b] if isinstance(text_b, str) else list(text_b)
    traces = capture_batch(source, texts, texts_b, batch_size=max(1, len(texts)))
    results = _from_hidden_states(source, traces, layer, part)
    return results[0] if single else results


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


def _pad(arrays: list[np.ndarray], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[T_b, D]`` arrays into ``[B, T_max, D]`` (zeros after each) and a mask
    ``[B, T_max]`` (1 for real tokens), padded on the right as capture pads."""
    longest = max(a.shape[0] for a in arrays)
    batch = np.zeros((len(arrays), longest, arrays[0].shape[-1]), dtype=np.float32)
    mask = np.zeros((len(arrays), longest), dtype=np.int64)
    for b, a in enumerate(arrays):
        batch[b, : a.shape[0]] = a
        mask[b, : a.shape[0]] = 1
    return torch.from_numpy(batch).to(device), torch.from_numpy(mask).to(device)


@torch.no_grad()
def _from_hidden_states(
    model: LoadedModel, traces: list[Trace], layer: int, part: str
) -> list[Recomputation]:
    """Rebuild ``layer`` of ``part`` for every trace at once, as one right-padded batch."""
    if part == "encoder":
        part = "self"
    adapter, layer = _adapter_and_layer(model, layer, part)
    base = model.model
    device = model.device
    for t in traces:
        if t.model_type != model.model_type or t.num_layers != model.num_layers:
            raise AttnscopeError(
                f"This trace comes from {t.model_name!r}, not from {model.name!r}: pass the model "
                "it was captured with."
            )
        if t.unit != "token":
            raise AttnscopeError("recompute needs a token-level Trace, not one merged into words.")
    # The hidden states entering the layer: the encoder's (or only) stack, or the decoder's.
    inputs = [t.hidden_states[layer] if part == "self" else t.decoder_hidden_states[layer]
              for t in traces]
    x, x_mask = _pad(inputs, device)  # (B, T, D), (B, T): 1 for real tokens, 0 for padding
    context, c_mask = None, x_mask  # self attention: keys and values come from x too
    norm = adapter.pre_norm(base, layer, "decoder" if part == "cross" else part)
    attn_in = norm(x) if norm is not None else x
    if part == "cross":
        # Cross attention reads the decoder layer *after* its self-attention sub-block: run that
        # by hand first (output projection, residual and norms included).
        self_attn = MultiHeadAttention.from_params(adapter.attention(base, layer, "decoder"))
        self_out, _, _ = self_attn.attend(attn_in, None, x_mask)
        hidden = adapter.after_self_attention(base, layer, x, self_out)
        cross_norm = adapter.pre_norm(base, layer, "cross")
        attn_in = cross_norm(hidden) if cross_norm is not None else hidden
        context, c_mask = _pad([t.hidden_states[-1] for t in traces], device)  # encoder output
    mha = MultiHeadAttention.from_params(adapter.attention(base, layer, part))
    output, weights, (q, k, v) = mha.attend(attn_in, context, c_mask)

    results = []
    for b, t in enumerate(traces):
        expected, q_tokens, k_tokens = t.part(part)
        n_q, n_k = len(q_tokens), len(k_tokens)
        results.append(Recomputation(
            part=part, layer=layer,
            attentions=weights[b, :, :n_q, :n_k].float().cpu().numpy(),
            expected=np.asarray(expected[layer]),
            queries=q[b, :, :n_q].float().cpu().numpy(),
            keys=k[b, :, :n_k].float().cpu().numpy(),
            values=v[b, :, :n_k].float().cpu().numpy(),
            output=output[b, :n_q].float().cpu().numpy(),
            query_tokens=q_tokens, key_tokens=k_tokens,
        ))
    return results


def _from_stored_qkv(trace: Trace, layer: int) -> Recomputation:
    """Steps 4-6 only, from the queries and keys a ``qkv=True`` capture stored."""
    assert trace.queries is not None and trace.keys is not None and trace.values is not None
    layer = check_index(layer, trace.num_layers, "layer")
    q = torch.from_numpy(np.array(trace.queries[layer]))  # (H, T, d)
    k = torch.from_numpy(np.array(trace.keys[layer]))  # (H, T, d)
    v = torch.from_numpy(np.array(trace.values[layer]))  # (H, T, d)
    _, weights = scaled_dot_product_attention(
        q, k, v, None, trace.is_causal, scale=layer_scale(trace, layer),
        bias=stored_position_bias(trace), window=layer_window(trace, layer),
    )
    return Recomputation(
        part="self", layer=layer, attentions=weights.numpy(),
        expected=np.asarray(trace.attentions[layer]), queries=q.numpy(), keys=k.numpy(),
        values=v.numpy(), output=None, query_tokens=trace.tokens, key_tokens=trace.tokens,
    )


def layer_scale(trace: Trace, layer: int) -> float:
    """The factor on q·k in ``layer``, from ``trace.extra`` (written by a ``qkv=True`` capture)."""
    scales = trace.extra.get("attention_scales")
    if scales:
        return float(scales[layer])
    if "attention_scale" in trace.extra:
        return float(trace.extra["attention_scale"])
    d = trace.queries.shape[-1] if trace.queries is not None else 1
    return 1.0 / math.sqrt(d)


def layer_window(trace: Trace, layer: int) -> int | None:
    """The sliding window of ``layer``'s attention from ``trace.extra``, or None."""
    windows = trace.extra.get("sliding_windows")
    return windows[layer] if windows else None


def stored_position_bias(trace: Trace) -> torch.Tensor | None:
    """The position bias ``[H, T, T]`` added to the scores of the self attention (T5), or None."""
    info = trace.extra.get("position_bias")
    if not info:
        return None
    bias = RelativePositionBias(
        table=torch.tensor(info["table"], dtype=torch.float32),
        num_buckets=int(info["num_buckets"]), max_distance=int(info["max_distance"]),
        bidirectional=bool(info["bidirectional"]),
    )
    return relative_position_bias(bias, trace.num_tokens, trace.num_tokens)
