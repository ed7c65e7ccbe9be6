"""GPT-2: one fused ``Conv1D`` ``h[i].attn.c_attn`` computes [q | k | v] side by side, and
``c_proj`` is the output projection. A ``Conv1D`` stores its weight as ``[in, out]`` (it computes
``x @ W + b``), the transpose of ``nn.Linear``. Attention is causal, the scale is 1/sqrt(d)
(divided by layer+1 when ``scale_attn_by_inverse_layer_idx`` is set), and LayerNorm ``ln_1``
comes *before* attention.
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
)


@register
class GPT2Adapter(Adapter):
    model_types = ("gpt2",)

    def attention(self, model: Any, layer: int, part: str = "self") -> AttentionParams:
        attn = model.base_model.h[layer].attn
        heads, head_dim, width = int(attn.num_heads), int(attn.head_dim), int(attn.embed_dim)
        w = attn.c_attn.weight.T  # [3*D, D]: the Linear convention [out, in]
        b = attn.c_attn.bias      # [3*D]
        w_q, w_k, w_v = w[:width], w[width : 2 * width], w[2 * width :]  # each [D, D]
        b_q, b_k, b_v = b[:width], b[width : 2 * width], b[2 * width :]  # each [D]
        return AttentionParams(
            w_q, b_q, w_k, b_k, w_v, b_v, attn.c_proj.weight.T, attn.c_proj.bias,
            num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            scale=default_scale(attn, head_dim), causal=True,
        )

    def pre_norm(self, model: Any, layer: int, part: str = "self") -> Any:
        return layer_norm(model.base_model.h[layer].ln_1)

    def hook_points(self, model: Any, layer: int) -> HookPoints:
        attn = model.base_model.h[layer].attn
        return HookPoints(qkv=attn.c_attn)
