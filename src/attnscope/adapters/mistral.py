"""Mistral: LLaMA's layout (rotary, grouped-query heads, RMSNorm before attention, causal), plus
a sliding window from ``config.sliding_window``: a query sees only its last that many keys."""

from __future__ import annotations

from attnscope.adapters import register
from attnscope.adapters.llama import LlamaAdapter


@register
class MistralAdapter(LlamaAdapter):
    model_types = ("mistral",)
