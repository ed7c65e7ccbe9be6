"""A Trace from a TransformerLens run: patterns, queries, keys, values and the residual stream.

    logits, cache = model.run_with_cache("The cat sat on the mat.")
    trace = attnscope.from_transformer_lens(cache, model, "The cat sat on the mat.")
    attnscope.head_view(trace)

Works with TransformerLens 3 (``HookedTransformer``) and 4 (``TransformerBridge``): both name
their hooks ``blocks.{layer}.attn.hook_pattern`` and so on. Installed with
``pip install "attnscope[transformer-lens]"``; this module imports nothing from TransformerLens
itself, it reads the cache's tensors by hook name.

TransformerLens keeps per-head vectors as ``[batch, position, head, d_head]``; attnscope keeps
``[layer, head, position, d_head]``. Queries and keys are taken after rotary embeddings where the
model has them (``hook_rot_q``/``hook_rot_k``), and grouped key/value heads are repeated to one
per query head, as a ``qkv=True`` capture stores them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError, check_index
from attnscope.trace import Trace, float_array

__all__ = ["from_transformer_lens"]


def from_transformer_lens(
    cache: Any,
    model_or_tokens: Any,
    input: Any = None,
    *,
    index: int | None = None,
    model_name: str | None = None,
) -> Trace:
    """Turn a TransformerLens ``ActivationCache`` (or its dict of hook name -> tensor) into a
    Trace.

    Call it as ``from_transformer_lens(cache, model, input)`` with the model and the text or
    tokens it ran on (the tokens are read with ``model.to_str_tokens(input)``), or as
    ``from_transformer_lens(cache, tokens)`` with the token strings.

    Args:
        cache: from ``model.run_with_cache(...)``; it must hold
            ``blocks.{l}.attn.hook_pattern`` for every layer.
        model_or_tokens: the ``HookedTransformer`` / ``TransformerBridge``, or a list of the T
            token strings.
        input: with a model, the text or token ids it ran on.
        index: which input of a batched run (needed when the batch holds more than one).
        model_name: shown in titles (default: the model's ``cfg.model_name``).

    Returns:
        A Trace with ``attentions`` ``[L, H, T, T]`` (the cache's patterns), ``hidden_states``
        ``[L+1, T, D]`` (``hook_resid_pre`` of each layer, then the last ``hook_resid_post``)
        and ``queries``, ``keys``, ``values`` ``[L, H, T, d_head]`` when the cache holds them.
    """
    if not isinstance(cache, Mapping) and not (
        hasattr(cache, "keys") and hasattr(cache, "__getitem__")
    ):
        raise AttnscopeError(
            "from_transformer_lens takes the cache from model.run_with_cache(...), not "
            f"{type(cache).__name__}."
        )
    names = set(cache.keys())
    layers = 0
    while f"blocks.{layers}.attn.hook_pattern" in names:
        layers += 1
    if layers == 0:
        raise AttnscopeError(
            "The cache holds no attention patterns (blocks.0.attn.hook_pattern); run "
            "run_with_cache without a names_filter that leaves them out."
        )

    def layer_stack(hook: str) -> np.ndarray | None:
        """``blocks.{l}.{hook}`` for every layer, stacked: ``[L, B, ...]``, or None."""
        keys = [f"blocks.{layer}.{hook}" for layer in range(layers)]
        if not all(k in names for k in keys):
            return None
        return np.stack([float_array(cache[k], k) for k in keys])

    patterns = layer_stack("attn.hook_pattern")  # (L, B, H, T, T)
    assert patterns is not None
    if patterns.ndim != 5:
        raise AttnscopeError(
            f"blocks.0.attn.hook_pattern must be [batch, heads, query, key], got "
            f"{list(patterns.shape[1:])}."
        )
    batch = patterns.shape[1]
    if index is None:
        if batch != 1:
            raise AttnscopeError(
                f"The cache holds a batch of {batch} inputs; choose one with index=0 to "
                f"{batch - 1}."
            )
        index = 0
    index = check_index(index, batch, "index", "inputs in the batch")
    attentions = patterns[:, index]  # (L, H, T, T)
    heads, n = attentions.shape[1], attentions.shape[2]

    model = model_or_tokens
    cfg = getattr(model, "cfg", None) or getattr(getattr(cache, "model", None), "cfg", None)
    if hasattr(model, "to_str_tokens"):
        if input is None:
            raise AttnscopeError(
                "Pass what the model ran on: from_transformer_lens(cache, model, text), or pass "
                "the token strings instead of the model."
            )
        tokens = _str_tokens(model, input, index, n)
    elif isinstance(model_or_tokens, Sequence) and not isinstance(model_or_tokens, str):
        tokens = [str(t) for t in model_or_tokens]
    else:
        raise AttnscopeError(
            "The second argument must be the TransformerLens model (with the input it ran on) "
            f"or the list of token strings, not {type(model_or_tokens).__name__}."
        )

    states = None
    resid_pre = layer_stack("hook_resid_pre")  # (L, B, T, D)
    last = f"blocks.{layers - 1}.hook_resid_post"
    if resid_pre is not None and last in names:
        final = float_array(cache[last], last)[None]  # (1, B, T, D)
        states = np.concatenate([resid_pre, final])[:, index]  # (L+1, T, D)

    vectors: dict[str, Any] = {}
    for name, hooks in (("queries", ("attn.hook_rot_q", "attn.hook_q")),
                        ("keys", ("attn.hook_rot_k", "attn.hook_k")),
                        ("values", ("attn.hook_v",))):
        for hook in hooks:
            stacked = layer_stack(hook)  # (L, B, T, H_or_H_kv, d)
            if stacked is not None and stacked.ndim == 5:
                per_head = np.swapaxes(stacked[:, index], 1, 2)  # (L, H_kv, T, d)
                if per_head.shape[1] != heads and heads % per_head.shape[1] == 0:
                    # grouped-query attention: query head h uses key/value head h // n_rep
                    per_head = np.repeat(per_head, heads // per_head.shape[1], axis=1)
                vectors[name] = per_head  # (L, H, T, d)
                break
    if "queries" not in vectors or "keys" not in vectors:
        vectors.pop("queries", None)
        vectors.pop("keys", None)

    causal = None
    if cfg is not None and getattr(cfg, "attention_dir", None) in ("causal", "bidirectional"):
        causal = cfg.attention_dir == "causal"
    name = model_name or str(getattr(cfg, "model_name", None) or "TransformerLens model")
    scale = _scale(cfg, vectors["queries"].shape[-1]) if "queries" in vectors else None
    if len(tokens) != n:
        raise AttnscopeError(
            f"The cache's patterns cover {n} positions but {len(tokens)} tokens were given "
            "(did the model prepend a BOS token the list leaves out?)."
        )
    trace = Trace.from_attentions(
        attentions, tokens, causal=causal, hidden_states=states, model_name=name, scale=scale,
        **vectors,
    )
    return trace.replace(extra={**trace.extra, "source": "transformer_lens"})


def _str_tokens(model: Any, input: Any, index: int, n: int) -> list[str]:
    """The token strings of ``input`` as the model split it (one input of a batch): with the
    BOS token the model prepends by default, or without it when the run had ``n`` positions
    without it (``run_with_cache(..., prepend_bos=False)``)."""
    found: list[str] = []
    for options in ({}, {"prepend_bos": False}, {"prepend_bos": True}):
        try:
            tokens = model.to_str_tokens(input, **options)
        except Exception as err:  # a model without a tokenizer, an input it cannot read ...
            raise AttnscopeError(
                f"The model could not list the tokens of the input ({err}); pass the token "
                "strings instead: from_transformer_lens(cache, tokens)."
            ) from None
        if tokens and isinstance(tokens[0], (list, tuple)):  # a batch: one list per input
            tokens = tokens[index]
        found = [str(t) for t in tokens]
        if len(found) == n:
            break
    return found


def _scale(cfg: Any, head_dim: int) -> float:
    """The factor on q·k: TransformerLens divides the scores by ``cfg.attn_scale``."""
    if cfg is not None and getattr(cfg, "use_attn_scale", True) is False:
        return 1.0
    divisor = getattr(cfg, "attn_scale", None) if cfg is not None else None
    if isinstance(divisor, (int, float)) and divisor > 0:
        return 1.0 / float(divisor)
    return 1.0 / math.sqrt(head_dim)
