"""Qwen2: LLaMA's layout with biases on the query/key/value projections (none on the output),
and, when ``use_sliding_window`` is set, a sliding window on the layers from
``max_window_layers`` on (read from each attention module's ``sliding_window``)."""

from __future__ import annotations

from attnscope.adapters import register
from attnscope.adapters.llama import LlamaAdapter


@register
class Qwen2Adapter(LlamaAdapter):
    model_types = ("qwen2",)
