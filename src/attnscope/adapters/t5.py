"""T5: ``block[i].layer[0].SelfAttention`` holds ``q``/``k``/``v``/``o`` (no biases). T5 does
*not* scale q·k (scale 1.0); instead it adds a learned relative position bias, one value per
(distance bucket, head), computed from the table in block 0 and shared by every layer. RMSNorm
``layer[0].layer_norm`` comes *before* attention. The decoder's self attention is causal and its
buckets tell earlier from later keys; cross attention (``layer[1].EncDecAttention``, decoder
queries over the encoder's output) has no position bias.
"""

from __future__ import annotations

from typing import Any

from attnscope.adapters import register
from attnscope.adapters.base import (
    Adapter,
    AttentionParams,
    HookPoints,
    RelativePositionBias,
    rms_norm,
)


@register
class T5Adapter(Adapter):
    model_types = ("t5",)
    parts = ("self", "decoder", "cross")

    @staticmethod
    def _stack(model: Any, part: str) -> Any:
        base = model.base_model
        return base.encoder if part == "self" else base.decoder

    def attention(self, model: Any, layer: int, part: str = "self") -> AttentionParams:
        stack = self._stack(model, part)
        sub = 1 if part == "cross" else 0
        attn = stack.block[layer].layer[sub].EncDecAttention if part == "cross" else (
            stack.block[layer].layer[sub].SelfAttention)
        heads, head_dim = int(attn.n_heads), int(attn.key_value_proj_dim)
        bias = None
        if part != "cross":
            # Only block 0 owns the bucket table; every later layer reuses its bias.
            owner = stack.block[0].layer[0].SelfAttention
            bias = RelativePositionBias(
                table=owner.relative_attention_bias.weight,  # [num_buckets, H]
                num_buckets=int(owner.relative_attention_num_buckets),
                max_distance=int(owner.relative_attention_max_distance),
                bidirectional=part == "self",
            )
        return AttentionParams(
            attn.q.weight, None, attn.k.weight, None, attn.v.weight, None, attn.o.weight, None,
            num_heads=heads, num_kv_heads=heads, head_dim=head_dim,
            scale=1.0, causal=part == "decoder", position_bias=bias,
        )

    def pre_norm(self, model: Any, layer: int, part: str = "self") -> Any:
        sub = 1 if part == "cross" else 0
        return rms_norm(self._stack(model, part).block[layer].layer[sub].layer_norm)

    def after_self_attention(self, model: Any, layer: int, hidden: Any, attn_out: Any) -> Any:
        return hidden + attn_out  # the residual; T5 normalises before the next sub-layer

    def hook_points(self, model: Any, layer: int) -> HookPoints:
        attn = model.base_model.encoder.block[layer].layer[0].SelfAttention
        return HookPoints(q=attn.q, k=attn.k, v=attn.v)
