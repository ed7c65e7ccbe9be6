"""A LazyTrace of a few hundred tokens from a tiny random Llama (rotary positions, grouped-query
heads) built from a config, for the long view's tests."""

from __future__ import annotations

from typing import Any

import attnscope as at

HOSTILE = "<img src=x onerror=alert(1)>"


def long_llama(tokenizer: Any, positions: int = 2048, layers: int = 2, heads: int = 4,
               kv_heads: int = 2) -> at.LoadedModel:
    """A random Llama (by default 2 layers of 4 heads, 2 key/value heads; hidden size 32) that
    reads ``positions`` tokens."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaModel

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = positions
    torch.manual_seed(1)
    model = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32,
                                   num_hidden_layers=layers, num_attention_heads=heads,
                                   num_key_value_heads=kv_heads, intermediate_size=37,
                                   max_position_embeddings=positions))
    with torch.no_grad():  # sharper attention than the initial weights give
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    model.config._attn_implementation = "eager"
    return at.load(model, tokenizer=tokenizer, device="cpu", name="tiny-long-llama")


def long_text(words: int = 120) -> str:
    """About ``2 * words`` tokens of plain text with one hostile token in the middle."""
    base = ("the cat sat on the mat while a dog slept by the door and rain fell " * 20).split()
    half = words // 2
    return " ".join(base[:half]) + f" {HOSTILE} " + " ".join(base[half:words])
