"""DistilBERT: ``transformer.layer[i].attention`` holds ``q_lin``/``k_lin``/``v_lin`` and the
output projection ``out_lin``; scale 1/sqrt(d); LayerNorm after attention (``sa_layer_norm``)."""

from __future__ import annotations

from typing import Any

from attnscope.adapters import register
from attnscope.adapters.base import Adapter, AttentionParams, HookPoints, default_scale, linear


@register
class DistilBertAdapter(Adapter):
    model_types = ("distilbert",)

    def _module(self, model: Any, layer: int) -> Any:
        return model.base_model.transformer.layer[layer].attention

    def attention(self, model: Any, layer: int, part: str = "self") -> AttentionParams:
        attn = self._module(model, layer)
        heads = int(attn.n_heads)
        head_dim = int(attn.dim) // heads
        w_q, b_q = linear(attn.q_lin)
        w_k, b_k = linear(attn.k_lin)
        w_v, b_v = linear(attn.v_lin)
        w_o, b_o = linear(attn.out_lin)
        return AttentionParams(
            w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o,
            num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            scale=default_scale(attn, head_dim),
        )

    def hook_points(self, model: Any, layer: int) -> HookPoints:
        attn = self._module(model, layer)
        return HookPoints(q=attn.q_lin, k=attn.k_lin, v=attn.v_lin)
