"""LLaMA: ``layers[i].self_attn`` holds ``q_proj``/``k_proj``/``v_proj``/``o_proj``. Queries and
keys are rotated by rotary position embeddings (RoPE) before the dot product; fewer key/value
heads than query heads (grouped-query attention: each key/value head serves H // H_kv query
heads); causal; RMSNorm ``input_layernorm`` comes *before* attention.

Mistral and Qwen2 share this layout (``mistral.py``, ``qwen2.py``) and may add a sliding window:
a query then sees only its last ``sliding_window`` keys.
"""

from __future__ import annotations

from typing import Any

from attnscope.adapters import register
from attnscope.adapters.base import (
    Adapter,
    AttentionParams,
    HookPoints,
    Rotary,
    default_scale,
    linear,
    rms_norm,
)


@register
class LlamaAdapter(Adapter):
    model_types = ("llama",)

    def attention(self, model: Any, layer: int, part: str = "self") -> AttentionParams:
        base = model.base_model
        attn = base.layers[layer].self_attn
        config = base.config
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(attn.head_dim)
        rope = base.rotary_emb
        # Qwen2 sets the window per layer on the module; Mistral in the config; LLaMA has none.
        if hasattr(attn, "sliding_window"):
            window = attn.sliding_window
        else:
            window = getattr(config, "sliding_window", None)
        w_q, b_q = linear(attn.q_proj)
        w_k, b_k = linear(attn.k_proj)
        w_v, b_v = linear(attn.v_proj)
        w_o, b_o = linear(attn.o_proj)
        return AttentionParams(
            w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o,
            num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
            scale=default_scale(attn, head_dim), causal=True,
            rotary=Rotary(rope.inv_freq, float(getattr(rope, "attention_scaling", 1.0))),
            sliding_window=int(window) if window is not None else None,
        )

    def pre_norm(self, model: Any, layer: int, part: str = "self") -> Any:
        return rms_norm(model.base_model.layers[layer].input_layernorm)

    def hook_points(self, model: Any, layer: int) -> HookPoints:
        attn = model.base_model.layers[layer].self_attn
        return HookPoints(q=attn.q_proj, k=attn.k_proj, v=attn.v_proj, rotary=attn)
