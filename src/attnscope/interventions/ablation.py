"""Remove heads and measure what changes: :func:`ablate`.

The heads' outputs are zeroed, or replaced by their mean over reference texts, by the gates of
:class:`~attnscope.interventions.gates.HeadGates` on the real output projections; the model runs
as it is otherwise. The effect is read by the model's own loss (see
:mod:`attnscope.interventions.objectives`), by a target token's log-probability at a position,
and for a generation Trace by each generated token's probability.

Shapes: T tokens, H heads of size d, A generated tokens.
"""

from __future__ import annotations

import html
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnscope.errors import AttnscopeError, check_index
from attnscope.interventions.gates import HeadGates, output_projection
from attnscope.interventions.objectives import Objective, Sample

__all__ = ["Ablation", "ablate", "check_heads", "head_means", "samples_from"]

HOWS = ("zero", "mean")


@dataclass(frozen=True)
class Ablation:
    """What removing some heads changed, for one input.

    Attributes:
        model_name: the model. heads: the (layer, head) pairs removed. how: "zero" or "mean".
        measure: what ``before``/``after`` are (the model's loss, or for a model without a
            language-model head "1 - cosine of the mean-pooled sentence embedding").
        before, after: the loss with every head, and with the heads removed (for an embedding
            model: 0 and 1 - cosine between the embeddings with and without the heads).
        effect: ``after - before``.
        target, target_id, position: the target token read at ``position`` (None if none asked).
        target_logprob_before, target_logprob_after: its log-probability with and without the
            heads; ``target_effect`` is after - before.
        answer_tokens: a generation Trace's generated tokens ``[A]``, with
            ``answer_probs_before``/``answer_probs_after`` ``[A]``: each one's probability with
            every head and with the heads removed (None for other inputs).
    """

    model_name: str
    heads: tuple[tuple[int, int], ...]
    how: str
    measure: str
    before: float
    after: float
    target: str | None = None
    target_id: int | None = None
    position: int | None = None
    target_logprob_before: float | None = None
    target_logprob_after: float | None = None
    answer_tokens: tuple[str, ...] | None = None
    answer_probs_before: np.ndarray | None = None
    answer_probs_after: np.ndarray | None = None

    @property
    def effect(self) -> float:
        return self.after - self.before

    @property
    def target_effect(self) -> float | None:
        if self.target_logprob_before is None or self.target_logprob_after is None:
            return None
        return self.target_logprob_after - self.target_logprob_before

    def to_text(self) -> str:
        heads = ", ".join(f"L{layer}H{head}" for layer, head in self.heads)
        lines = [f"{self.model_name}: {heads} removed ({self.how})",
                 f"{self.measure}: {self.before:.4f} -> {self.after:.4f} "
                 f"(effect {self.effect:+.4f})"]
        if self.target is not None:
            lines.append(f"log p({self.target!r} at {self.position}): "
                         f"{self.target_logprob_before:.4f} -> {self.target_logprob_after:.4f} "
                         f"({self.target_effect:+.4f})")
        if self.answer_tokens is not None:
            assert self.answer_probs_before is not None and self.answer_probs_after is not None
            lines.append("generated token  p with heads  p without")
            for tok, p0, p1 in zip(self.answer_tokens, self.answer_probs_before,
                                   self.answer_probs_after, strict=True):
                lines.append(f"{tok!r:15}  {p0:12.4f}  {p1:9.4f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.to_text())}</pre>"


def check_heads(loaded: Any, heads: Any) -> tuple[tuple[int, int], ...]:
    """``heads`` as (layer, head) pairs with negatives resolved; one clear sentence for an
    empty list, a pair that is not one, an index out of range or a head listed twice."""
    if isinstance(heads, tuple) and len(heads) == 2 and all(
            isinstance(x, numbers.Integral) for x in heads):
        heads = [heads]  # one (layer, head) pair
    if heads is None or isinstance(heads, str) or not isinstance(heads, Sequence) or not heads:
        raise AttnscopeError("heads= needs at least one (layer, head) pair, e.g. "
                             "heads=[(0, 3)].")
    resolved: list[tuple[int, int]] = []
    for pair in heads:
        if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
            raise AttnscopeError(f"Each head is a (layer, head) pair, not {pair!r}.")
        layer = check_index(pair[0], loaded.num_layers, "layer")
        head = check_index(pair[1], loaded.num_heads, "head")
        if (layer, head) in resolved:
            raise AttnscopeError(f"Layer {layer} head {head} is listed twice in heads=; list "
                                 "each head once.")
        resolved.append((layer, head))
    return tuple(resolved)


def samples_from(loaded: Any, source: Any) -> list[Sample]:
    """Model inputs for a text, a list of token ids, a Trace, or a list of these."""
    from attnscope.trace import Trace

    if isinstance(source, Trace):
        return [_ids_sample(loaded, np.asarray(source.input_ids), source.special_mask)]
    if isinstance(source, str):
        return [_text_sample(loaded, source)]
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray) or (isinstance(source, Sequence) and source and all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in source)):
        return [_ids_sample(loaded, np.asarray(source), None)]
    if isinstance(source, Sequence) and source and all(isinstance(x, str) for x in source):
        return [_text_sample(loaded, t) for t in source]
    if isinstance(source, Sequence) and source and all(
            isinstance(x, np.ndarray | torch.Tensor | Sequence) for x in source):
        return [sample for item in source for sample in samples_from(loaded, item)]
    raise AttnscopeError("Give a text, a list of texts, a list of token ids or a Trace, not "
                         f"{type(source).__name__}.")


def _text_sample(loaded: Any, text: str) -> Sample:
    from attnscope.tokens import tokenize

    tok = tokenize(loaded, text)
    return Sample(dict(tok.model_inputs), np.asarray(tok.word_ids))


def _ids_sample(loaded: Any, ids: np.ndarray, special: Any) -> Sample:
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise AttnscopeError("Token ids must be a non-empty list of whole numbers, one text.")
    vocab = int(loaded.model.get_input_embeddings().weight.shape[0])
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise AttnscopeError(f"Token ids must lie from 0 to {vocab - 1} for {loaded.name!r}; "
                             f"got {int(ids.min())} to {int(ids.max())}.")
    if loaded.max_length is not None and len(ids) > loaded.max_length:
        raise AttnscopeError(f"{len(ids)} token ids are more than {loaded.name!r} takes "
                             f"({loaded.max_length}).")
    special = np.zeros(len(ids), bool) if special is None else np.asarray(special, bool)
    word_ids = np.where(special, -1, np.cumsum(~special) - 1).astype(np.int64)
    inputs = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones(len(ids), np.int64)}
    if "token_type_ids" in getattr(loaded.tokenizer, "model_input_names", ()):
        inputs["token_type_ids"] = np.zeros(len(ids), np.int64)
    return Sample(inputs, word_ids)


@torch.no_grad()
def head_means(loaded: Any, reference: Any, layers: Sequence[int],
               batch_size: int = 16) -> dict[int, torch.Tensor]:
    """Each head's mean output over every token of the ``reference`` texts:
    layer -> ``[H, d]``, for mean ablation."""
    if reference is None or (isinstance(reference, Sequence) and len(reference) == 0):
        raise AttnscopeError('how="mean" replaces a head by its mean output over reference '
                             "texts: pass reference=[...] (a few texts like yours).")
    samples = samples_from(loaded, reference)
    objective = Objective(loaded)
    sums: dict[int, torch.Tensor] = {}
    count = 0
    for start in range(0, len(samples), batch_size):
        batch = objective.batch(samples[start : start + batch_size])
        with HeadGates(loaded, record=True) as gates:
            loaded.model(**batch.inputs)
        real = batch.inputs["attention_mask"].bool()  # (B, T)
        count += int(real.sum())
        for layer in layers:
            heads = gates.recorded[layer][real]  # (N, H, d): every real token
            sums[layer] = sums.get(layer, 0) + heads.double().sum(0)
    return {layer: (total / count).float() for layer, total in sums.items()}


def gates_for(loaded: Any, heads: Sequence[tuple[int, int]]) -> dict[int, torch.Tensor]:
    """layer -> gate ``[H]``: 0 for the listed heads, 1 for the others."""
    gates: dict[int, torch.Tensor] = {}
    for layer, head in heads:
        if layer not in gates:
            gates[layer] = torch.ones(loaded.num_heads, device=loaded.device)
        gates[layer][head] = 0.0
    return gates


def ablate(
    model: Any,
    text_or_ids: Any,
    heads: Sequence[tuple[int, int]],
    how: str = "zero",
    reference: Sequence[str] | None = None,
    target: str | int | None = None,
    position: int | None = None,
) -> Ablation:
    """Run ``model`` with ``heads`` removed and return what changed.

    Args:
        model: from :func:`attnscope.load` (an encoder or a decoder-only model).
        text_or_ids: a text, the token ids of one text ``[T]`` (fed as they are), or a Trace
            (a generation Trace also gets each generated token's probability with and without
            the heads).
        heads: (layer, head) pairs; negatives count from the end.
        how: "zero" sets the heads' outputs to 0; "mean" replaces each by its mean output over
            the tokens of ``reference``.
        reference: texts for ``how="mean"``.
        target: a token (one token of the model's vocabulary, as a string or an id) whose
            log-probability is read at ``position``, with and without the heads.
        position: where the target is read: in a causal LM, the prediction made at that
            position (default: the last one, the next token); in a masked LM, the token at
            that position is masked first (required there).

    Returns:
        An :class:`Ablation`.
    """
    if how not in HOWS:
        raise AttnscopeError(f'how must be "zero" or "mean", not {how!r}.')
    pairs = check_heads(model, heads)
    objective = Objective(model)
    if target is not None and not objective.has_lm_head:
        raise AttnscopeError(
            f"target= needs a language-model head and {model.name!r} has none: for this model "
            "ablate measures the change of its pooled sentence embedding (1 - cosine); drop "
            "target=."
        )
    (sample,) = _one(samples_from(model, text_or_ids))
    layers = sorted({layer for layer, _ in pairs})
    for layer in layers:
        output_projection(model, layer)  # an unsupported model says so before any work
    replacements = head_means(model, reference, layers) if how == "mean" else None
    gates = gates_for(model, pairs)

    target_id, position_index = None, None
    if target is not None:
        target_id = _target_id(model, target)
        position_index = _position(model, sample, position, objective)
    batch = objective.batch([sample])
    if target_id is not None and objective.kind == "masked":
        mask_id = model.tokenizer.mask_token_id
        batch.inputs["input_ids"][0, position_index] = mask_id

    with torch.no_grad():
        before, logits_before = _readout(model, objective, batch)
        with HeadGates(model, gates, replacements):
            after, logits_after = _readout(model, objective, batch)
    if objective.kind == "embedding":
        before_value, after_value = 0.0, float(objective.effect(before, after)[0])
    else:
        before_value, after_value = float(before[0]), float(after[0])

    result: dict[str, Any] = {}
    if target_id is not None:
        assert logits_before is not None and logits_after is not None
        lp0 = torch.log_softmax(logits_before[0, position_index].double(), -1)[target_id]
        lp1 = torch.log_softmax(logits_after[0, position_index].double(), -1)[target_id]
        result.update(target=model.tokenizer.convert_ids_to_tokens(target_id),
                      target_id=target_id, position=position_index,
                      target_logprob_before=float(lp0), target_logprob_after=float(lp1))
    from attnscope.trace import Trace

    if isinstance(text_or_ids, Trace) and text_or_ids.is_generation:
        if objective.kind != "causal":
            raise AttnscopeError("Generated tokens' probabilities need a causal LM.")
        start = text_or_ids.answer_start
        assert start is not None  # is_generation
        ids = batch.inputs["input_ids"][0, start:]  # (A,)
        result.update(
            answer_tokens=tuple(text_or_ids.tokens[start:]),
            answer_probs_before=_step_probs(logits_before, start, ids),
            answer_probs_after=_step_probs(logits_after, start, ids),
        )
    return Ablation(model.name, pairs, how, objective.description if objective.has_lm_head
                    else "1 - cosine of the mean-pooled sentence embedding",
                    before_value, after_value, **result)


def _one(samples: list[Sample]) -> list[Sample]:
    if len(samples) != 1:
        raise AttnscopeError("ablate takes one text (or one list of ids); for many texts use "
                             "attnscope.head_importance.")
    return samples


def _readout(model: Any, objective: Objective, batch: Any) -> tuple[torch.Tensor, Any]:
    """(per-text readout, logits ``[B, T, V]`` or None) of one run of the whole model."""
    if objective.kind == "embedding":
        return objective.run(batch), None
    logits = model.lm_model(**batch.inputs).logits
    if objective.kind == "causal" and batch.lengths[0] < 2:
        raise AttnscopeError("The text has one token: the next-token loss needs at least two.")
    return objective.loss(logits, batch), logits


def _step_probs(logits: torch.Tensor, start: int, ids: torch.Tensor) -> np.ndarray:
    """p(token t | tokens before t) for t from ``start`` on: ``[A]``."""
    probs = torch.softmax(logits[0, start - 1 : -1].double(), -1)  # (A, V): row t-1 predicts t
    return probs.gather(1, ids[:, None])[:, 0].float().cpu().numpy()


def _target_id(model: Any, target: str | int) -> int:
    vocab = int(model.model.get_input_embeddings().weight.shape[0])
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        if not 0 <= int(target) < vocab:
            raise AttnscopeError(f"target id {target} is not in the vocabulary (0 to "
                                 f"{vocab - 1}).")
        return int(target)
    if not isinstance(target, str) or not target:
        raise AttnscopeError(f"target must be a token string or id, not {target!r}.")
    ids = model.tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = model.tokenizer.convert_ids_to_tokens(ids)
        raise AttnscopeError(
            f"The target {target!r} is {len(ids)} tokens for this tokenizer ({pieces}); give "
            "one token (often with its leading space, e.g. ' Paris') or its id."
        )
    return int(ids[0])


def _position(model: Any, sample: Sample, position: int | None, objective: Objective) -> int:
    n = sample.length
    if position is None:
        if objective.kind == "masked":
            raise AttnscopeError("A masked LM reads the target where a token is masked: pass "
                                 "position= (the token to mask).")
        return n - 1
    if isinstance(position, bool) or not isinstance(position, numbers.Integral):
        raise AttnscopeError(f"position must be a whole number, not {position!r}.")
    if not -n <= position < n:
        raise AttnscopeError(f"position {position} is past the text, which has {n} tokens "
                             f"(valid: 0 to {n - 1}, or -{n} to -1).")
    return int(position) % n
