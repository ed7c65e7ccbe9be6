"""BART: ``encoder.layers[i].self_attn`` and ``decoder.layers[i].{self_attn, encoder_attn}``
hold ``q_proj``/``k_proj``/``v_proj``/``out_proj`` (with biases); scale 1/sqrt(d); LayerNorm
*after* each attention sub-layer. The decoder's self attention is causal; cross attention takes
decoder queries and the encoder's output as keys and values.
"""

from __future__ import annotations

from typing import Any

from attnscope.adapters import register
from attnscope.adapters.base import (
    Adapter,
    AttentionParams,
    HookPoints,
    default_scale,
    layer_norm,
    linear,
)


@register
class BartAdapter(Adapter):
    model_types = ("bart",)
    parts = ("self", "decoder", "cross")

    @staticmethod
    def _module(model: Any, layer: int, part: str) -> Any:
        base = model.base_model
        if part == "self":
            return base.encoder.layers[layer].self_attn
        block = base.decoder.layers[layer]
        return block.encoder_attn if part == "cross" else block.self_attn

    def attention(self, model: Any, layer: int, part: str = "self") -> AttentionParams:
        attn = self._module(model, layer, part)
        heads, head_dim = int(attn.num_heads), int(attn.head_dim)
        w_q, b_q = linear(attn.q_proj)
        w_k, b_k = linear(attn.k_proj)
        w_v, b_v = linear(attn.v_proj)
        w_o, b_o = linear(attn.out_proj)
        return AttentionParams(
            w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o,
            num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            scale=default_scale(attn, head_dim), causal=part == "decoder",
        )

    def after_self_attention(self, model: Any, layer: int, hidden: Any, attn_out: Any) -> Any:
        block = model.base_model.decoder.layers[layer]
        return layer_norm(block.self_attn_layer_norm)(hidden + attn_out)  # residual, then norm

    def hook_points(self, model: Any, layer: int) -> HookPoints:
        attn = model.base_model.encoder.layers[layer].self_attn
        return HookPoints(q=attn.q_proj, k=attn.k_proj, v=attn.v_proj)
