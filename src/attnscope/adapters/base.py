"""What every architecture adapter provides, and the small pieces they share.

An adapter knows, for one model family, where a layer's attention lives and how it computes:
the query/key/value/output projections, the head split, the scale, grouped key/value heads,
rotary position embeddings, an additive position bias, and where the layer normalises its input.
It hands these over as an :class:`AttentionParams` (plain tensors read from the real modules),
which :mod:`attnscope.scratch` turns back into attention with hand-written code.

Shapes: D is the hidden size, H the number of query heads, H_kv the number of key/value heads
(H for most models, fewer for grouped-query attention), d the size of one head, T tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Adapter",
    "AttentionParams",
    "HookPoints",
    "RelativePositionBias",
    "Rotary",
    "layer_norm",
    "rms_norm",
]

PART_NAMES = ("self", "decoder", "cross")


@dataclass(frozen=True)
class Rotary:
    """Rotary position embedding (RoPE), as LLaMA applies it to queries and keys.

    ``inv_freq`` ``[d/2]``: the rotation speed of each pair of dimensions; ``scaling``: a factor
    on cos and sin (1.0 for plain RoPE).
    """

    inv_freq: Any
    scaling: float = 1.0


@dataclass(frozen=True)
class RelativePositionBias:
    """T5's learned bias added to the attention scores, one value per (distance bucket, head).

    ``table`` ``[num_buckets, H]``; ``bidirectional`` is True in the encoder (keys before and
    after the query get their own buckets) and False in the decoder.
    """

    table: Any
    num_buckets: int
    max_distance: int
    bidirectional: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description (the table as nested lists), for ``trace.extra``."""
        return {
            "kind": "t5_relative",
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
            "table": self.table.detach().float().cpu().tolist(),
        }


@dataclass(frozen=True)
class AttentionParams:
    """One attention layer of a real model, as tensors the hand-written code can use.

    Attributes:
        w_q, b_q: query projection ``[H*d, D]`` and bias ``[H*d]`` (or None).
        w_k, b_k: key projection ``[H_kv*d, D_kv]`` and bias (D_kv is the encoder's size for
            cross attention).
        w_v, b_v: value projection ``[H_kv*d, D_kv]`` and bias.
        w_o, b_o: output projection ``[D, H*d]`` and bias ``[D]`` (or None).
        num_heads: H. num_kv_heads: H_kv (H // H_kv query heads share one key/value head).
        head_dim: d. scale: the factor on q·k (1/sqrt(d) for most models, 1.0 for T5).
        causal: whether a query may only see keys at or before its own position.
        rotary: RoPE applied to q and k before the dot product, or None.
        position_bias: T5's relative position bias added to the scores, or None.
        sliding_window: a causal query sees only its last ``sliding_window`` keys (itself
            included), as Mistral and some Qwen2 layers do; None for no window.
    """

    w_q: Any
    b_q: Any
    w_k: Any
    b_k: Any
    w_v: Any
    b_v: Any
    w_o: Any
    b_o: Any
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scale: float
    causal: bool = False
    rotary: Rotary | None = None
    position_bias: RelativePositionBias | None = None
    sliding_window: int | None = None


@dataclass
class HookPoints:
    """The real modules whose outputs are the projections, for capturing q/k/v with hooks.

    Either ``q``, ``k`` and ``v`` (three ``nn.Linear``), or ``qkv`` alone (GPT-2's fused
    ``Conv1D``, whose output is ``[q | k | v]`` side by side). ``rotary`` is the attention module
    whose ``position_embeddings`` keyword (cos, sin) is read by a pre-hook, for RoPE models.
    """

    q: Any = None
    k: Any = None
    v: Any = None
    qkv: Any = None
    rotary: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def layer_norm(module: Any) -> Callable[[Any], Any]:
    """LayerNorm with the weights of ``module``: (x - mean) / sqrt(var + eps) * w + b."""
    import torch.nn.functional as F

    weight, bias, eps = module.weight, module.bias, module.eps
    return lambda x: F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def rms_norm(module: Any) -> Callable[[Any], Any]:
    """RMSNorm (T5, LLaMA) with the weights of ``module``: x / sqrt(mean(x²) + eps) * w."""
    import torch

    weight = module.weight
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-6)

    def norm(x: Any) -> Any:
        variance = x.float().pow(2).mean(-1, keepdim=True)  # (..., 1)
        return weight * (x * torch.rsqrt(variance + eps))

    return norm


class Adapter:
    """Base class: one subclass per model family, registered by ``config.model_type``.

    Subclasses set ``model_types`` and implement :meth:`attention` and :meth:`hook_points`;
    pre-norm families override :meth:`pre_norm`; encoder-decoder families implement the
    decoder and cross parts as well as :meth:`after_self_attention`.
    """

    #: ``config.model_type`` values this adapter serves.
    model_types: tuple[str, ...] = ()
    #: the parts it can rebuild: ("self",) or ("self", "decoder", "cross").
    parts: tuple[str, ...] = ("self",)

    # ----- to implement ------------------------------------------------------------------------
    def attention(self, model: Any, layer: int, part: str = "self") -> AttentionParams:
        """The parameters of one layer's attention (``model`` is the base transformers model)."""
        raise NotImplementedError

    def hook_points(self, model: Any, layer: int) -> HookPoints:
        """The projection modules of one (encoder or decoder-only) self-attention layer."""
        raise NotImplementedError

    def pre_norm(self, model: Any, layer: int, part: str = "self") -> Callable[[Any], Any] | None:
        """The normalisation applied to the layer's input before attention, or None (post-norm
        models such as BERT normalise after attention)."""
        return None

    def after_self_attention(self, model: Any, layer: int, hidden: Any, attn_out: Any) -> Any:
        """Decoder layer: the hidden state after the self-attention sub-block (residual and any
        post-norm), which feeds cross attention. Only encoder-decoder adapters need it."""
        raise NotImplementedError

    # ----- shared ------------------------------------------------------------------------------
    def facts(self, model: Any, num_layers: int) -> dict[str, Any]:
        """Small JSON-able facts about the self attention, stored in ``trace.extra``."""
        params = [self.attention(model, i, "self") for i in range(num_layers)]
        scales = [float(p.scale) for p in params]
        first = params[0]
        bias = first.position_bias
        return {
            "qkv_adapter": self.name,
            "attention_scale": scales[0],
            "attention_scales": scales,
            "num_key_value_heads": first.num_kv_heads,
            "rotary": first.rotary is not None,
            "position_bias": bias.to_json() if bias is not None else None,
            "sliding_windows": [p.sliding_window for p in params],
        }

    @property
    def name(self) -> str:
        return self.model_types[0]


def default_scale(module: Any, head_dim: int) -> float:
    """The module's own ``scaling`` attribute when it has one, else 1/sqrt(d)."""
    scale = getattr(module, "scaling", None)
    return float(scale) if scale is not None else 1.0 / math.sqrt(head_dim)


def linear(module: Any) -> tuple[Any, Any]:
    """(weight ``[out, in]``, bias ``[out]`` or None) of an ``nn.Linear``."""
    return module.weight, module.bias
