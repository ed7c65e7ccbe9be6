"""Attention written by hand, small enough to read and exact enough to trust.

* :mod:`attnscope.scratch.attention`: softmax, scaled dot-product attention (numpy or torch),
  a one-head :class:`SelfAttention` and a :class:`MultiHeadAttention` that can hold a real
  layer's weights (:meth:`MultiHeadAttention.from_model`);
* :mod:`attnscope.scratch.rebuild`: :func:`recompute` rebuilds a real model's layer from the
  hidden states that entered it and compares with the attention the model returned.

    from attnscope.scratch import MultiHeadAttention, recompute, scaled_dot_product_attention
"""

from attnscope.scratch.attention import (
    MultiHeadAttention,
    SelfAttention,
    apply_rotary,
    relative_position_bias,
    relative_position_buckets,
    repeat_kv,
    rotary_cos_sin,
    scaled_dot_product_attention,
    softmax,
)
from attnscope.scratch.rebuild import (
    Recomputation,
    layer_scale,
    layer_window,
    recompute,
    stored_position_bias,
)

__all__ = [
    "MultiHeadAttention",
    "Recomputation",
    "SelfAttention",
    "apply_rotary",
    "layer_scale",
    "layer_window",
    "recompute",
    "relative_position_bias",
    "relative_position_buckets",
    "repeat_kv",
    "rotary_cos_sin",
    "scaled_dot_product_attention",
    "softmax",
    "stored_position_bias",
]
