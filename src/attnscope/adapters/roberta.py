"""RoBERTa: BERT's attention layout (its position ids start after the padding index, which
only changes the embeddings, not attention)."""

from __future__ import annotations

from attnscope.adapters import register
from attnscope.adapters.bert import BertLikeAdapter


@register
class RobertaAdapter(BertLikeAdapter):
    model_types = ("roberta",)
