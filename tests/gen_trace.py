"""Generation Traces built in the tests from transformers' own ``generate``, so the generation
view is tested on real model output apart from :func:`attnscope.generate`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import attnscope as at


def generation_trace(loaded: at.LoadedModel, prompt: str | list[int], max_new_tokens: int = 6,
                     *, rows_only: bool = True, top_k: int = 5, name: str | None = None,
                     tokens: list[str] | None = None) -> at.Trace:
    """Greedy generation through ``loaded.lm_model.generate`` with its scores, and the
    attention of the whole sequence from one forward pass (equal, up to float rounding, to
    the rows the key/value cache computed step by step).

    ``rows_only`` keeps rows from ``answer_start - 1`` on (``query_start``): the rows that
    chose each answer token. ``tokens`` replaces the token strings (hostile-token tests).
    """
    tok = loaded.tokenizer
    ids = tok(prompt, return_tensors="pt").input_ids if isinstance(prompt, str) else \
        torch.tensor([prompt])
    lm = loaded.lm_model
    with torch.inference_mode():
        out = lm.generate(ids, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                          do_sample=False, output_scores=True, return_dict_in_generate=True,
                          pad_token_id=tok.pad_token_id or 0)
        sequence = out.sequences[0]  # (T,)
        full = lm(sequence[None], output_attentions=True)
    attentions = torch.stack([a[0] for a in full.attentions]).float().numpy()  # (L, H, T, T)
    start = ids.shape[1]
    probs = torch.softmax(torch.stack(out.scores)[:, 0].float(), dim=-1)  # (A, V)
    chosen = sequence[start:]
    answer_probs = probs[torch.arange(len(chosen)), chosen].numpy()
    top = probs.topk(top_k, dim=-1)
    spelled = tokens or tok.convert_ids_to_tokens(sequence.tolist())
    trace = at.Trace.from_attentions(attentions, spelled, causal=True,
                                     model_name=name or loaded.name)
    fields: dict[str, Any] = dict(
        input_ids=sequence.numpy(), answer_start=start,
        roles=["prompt"] * start + ["answer"] * (len(sequence) - start),
        answer_probs=answer_probs, answer_top_ids=top.indices.numpy(),
        answer_top_probs=top.values.numpy(),
        generation={"max_new_tokens": max_new_tokens, "temperature": 0.0,
                    "stop_reason": "max_new_tokens"})
    if rows_only:
        fields.update(attentions=attentions[:, :, start - 1:], query_start=start - 1)
    return trace.replace(**fields)


def synthetic_generation(tokens: list[str], answer_start: int, layers: int = 2, heads: int = 3,
                         seed: int = 0, roles: list[str] | None = None) -> at.Trace:
    """A generation Trace of random causal attention ``[L, H, T, T]`` (rows sum to 1), for
    pages that need many tokens or chosen token strings without running a model."""
    rng = np.random.default_rng(seed)
    n = len(tokens)
    logits = rng.normal(size=(layers, heads, n, n)).astype(np.float32) * 2
    logits[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    steps = n - answer_start
    top = rng.dirichlet(np.ones(5), size=steps).astype(np.float32)
    top = -np.sort(-top, axis=1)
    trace = at.Trace.from_attentions(weights, tokens, causal=True, model_name="synthetic")
    return trace.replace(
        answer_start=answer_start,
        roles=roles or ["prompt"] * answer_start + ["answer"] * steps,
        answer_probs=top[:, 0].copy(), answer_top_ids=np.tile(np.arange(5), (steps, 1)),
        answer_top_probs=top, generation={"temperature": 0.0})
