"""BERT: separate ``query``/``key``/``value`` Linears in ``encoder.layer[i].attention.self``,
the output projection in ``attention.output.dense``, scale 1/sqrt(d), LayerNorm *after*
attention (so the attention input is the layer's input hidden state as it is).

RoBERTa and ELECTRA keep the same layout and subclass :class:`BertLikeAdapter`.
"""

from __future__ import annotations

from typing import Any

from attnscope.adapters import register
from attnscope.adapters.base import Adapter, AttentionParams, HookPoints, default_scale, linear


class BertLikeAdapter(Adapter):
    """Encoders laid out as ``encoder.layer[i].attention.{self, output}``."""

    def _modules(self, model: Any, layer: int) -> tuple[Any, Any]:
        block = model.base_model.encoder.layer[layer].attention
        return block.self, block.output.dense

    def attention(self, model: Any, layer: int, part: str = "self") -> AttentionParams:
        attn, out = self._modules(model, layer)
        heads = int(attn.num_attention_heads)
        head_dim = int(attn.attention_head_size)
        w_q, b_q = linear(attn.query)
        w_k, b_k = linear(attn.key)
        w_v, b_v = linear(attn.value)
        w_o, b_o = linear(out)
        return AttentionParams(
            w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o,
            num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            scale=default_scale(attn, head_dim), causal=bool(getattr(attn, "is_causal", False)),
        )

    def hook_points(self, model: Any, layer: int) -> HookPoints:
        attn, _ = self._modules(model, layer)
        return HookPoints(q=attn.query, k=attn.key, v=attn.value)


@register
class BertAdapter(BertLikeAdapter):
    model_types = ("bert",)
