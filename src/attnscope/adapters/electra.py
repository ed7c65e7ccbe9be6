"""ELECTRA: BERT's attention layout. Its embeddings may be smaller than the hidden size; the
model projects them up before layer 0, and ``hidden_states[0]`` is already projected."""

from __future__ import annotations

from attnscope.adapters import register
from attnscope.adapters.bert import BertLikeAdapter


@register
class ElectraAdapter(BertLikeAdapter):
    model_types = ("electra",)
