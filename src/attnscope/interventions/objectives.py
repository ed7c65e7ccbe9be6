"""What an intervention is measured by: the model's loss on a text, read the same way for the
whole model and for the layers above an ablated one.

* causal LMs (``lm_model`` is ``*ForCausalLM`` / ``*LMHeadModel``): the mean next-token
  cross-entropy, exactly as transformers computes it with ``labels=input_ids``;
* masked LMs (``*ForMaskedLM``): the cross-entropy of the tokens of a fixed, seeded 15% of the
  words, replaced by the mask token (the same words for every run of the same text);
* models with no language-modelling head (the embedded MiniLM): the sentence embedding, pooled
  as sentence-transformers pools all-MiniLM-L6-v2 (the mean of the last hidden states over the
  attention mask); an ablation's effect is 1 - cosine between the embeddings without and with
  the heads.

Shapes: B texts, T tokens (padded on the right), D hidden size, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attnscope.errors import AttnscopeError

__all__ = ["Batch", "Objective", "Sample", "objective_for"]

#: The share of words a masked LM's loss hides, and the seed that picks them.
MASK_SHARE = 0.15
MASK_SEED = 0
#: A batch's logits stay under this many floats (256 MB): batches shrink for big vocabularies.
LOGIT_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One input: ``inputs`` maps model input names to int64 arrays ``[T]``; ``word_ids``
    ``[T]`` (-1 for special tokens) picks the masked words of a masked LM."""

    inputs: dict[str, np.ndarray]
    word_ids: np.ndarray

    @property
    def length(self) -> int:
        return len(self.inputs["input_ids"])


@dataclass
class Batch:
    """Samples padded on the right: ``inputs`` ``[B, T]`` tensors, ``lengths`` per text, and for
    masked LMs the ``labels`` ``[B, T]`` (-100 where a token is not scored)."""

    inputs: dict[str, torch.Tensor]
    lengths: list[int]
    labels: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return len(self.lengths)


class Objective:
    """How one model turns a batch into a per-text readout (see the module docstring)."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        lm = loaded.lm_model
        if lm is None:
            self.kind = "embedding"
        elif loaded.is_causal:
            self.kind = "causal"
        else:
            self.kind = "masked"
        self.head = _lm_head(lm) if lm is not None else None
        self.final_norm = _final_norm(loaded.model)

    @property
    def description(self) -> str:
        return {
            "causal": "mean next-token cross-entropy (nats)",
            "masked": "masked-token cross-entropy of 15% of the words (nats)",
            "embedding": "1 - cosine of the mean-pooled sentence embedding",
        }[self.kind]

    @property
    def has_lm_head(self) -> bool:
        return self.kind != "embedding"

    # ----- inputs --------------------------------------------------------------------------------
    def batch(self, samples: Sequence[Sample]) -> Batch:
        """Pad ``samples`` on the right into one batch (and hide the masked LM's words)."""
        device = self.loaded.device
        longest = max(s.length for s in samples)
        pad_id = getattr(self.loaded.tokenizer, "pad_token_id", None) or 0
        inputs: dict[str, torch.Tensor] = {}
        for name in samples[0].inputs:
            fill = pad_id if name == "input_ids" else 0
            rows = np.full((len(samples), longest), fill, dtype=np.int64)
            for b, s in enumerate(samples):
                rows[b, : s.length] = s.inputs[name]
            inputs[name] = torch.from_numpy(rows).to(device)
        labels = None
        if self.kind == "masked":
            labels = torch.full_like(inputs["input_ids"], -100)
            mask_id = self.loaded.tokenizer.mask_token_id
            if mask_id is None:
                raise AttnscopeError(f"{self.loaded.name!r} has a masked-LM head but its "
                                     "tokenizer has no mask token.")
            for b, s in enumerate(samples):
                positions = torch.from_numpy(masked_positions(s.word_ids)).to(device)
                labels[b, positions] = inputs["input_ids"][b, positions]
                inputs["input_ids"][b, positions] = mask_id
        return Batch(inputs, [s.length for s in samples], labels)

    # ----- readouts ------------------------------------------------------------------------------
    def run(self, batch: Batch) -> torch.Tensor:
        """The whole real model on ``batch``: per-text loss ``[B]`` (LMs) or pooled embedding
        ``[B, D]``. Gates installed with :class:`~attnscope.interventions.gates.HeadGates`
        act on it."""
        if self.kind == "embedding":
            hidden = self.loaded.model(**batch.inputs).last_hidden_state  # (B, T, D)
            return self.pool(hidden, batch)
        logits = self.loaded.lm_model(**batch.inputs).logits  # (B, T, V)
        return self.loss(logits, batch)

    def from_last_layer(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The same readout as :meth:`run`, from the last layer's output ``[B, T, D]`` (what the
        layers above an ablated one end with): final norm, then the head."""
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        if self.kind == "embedding":
            return self.pool(hidden, batch)
        if self.head is None:
            raise AttnscopeError(f"attnscope cannot read the head of {self.loaded.name!r} "
                                 "from its last layer.")
        return self.loss(self.head(hidden), batch)

    def pool(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean of ``hidden`` ``[B, T, D]`` over the attention mask -> ``[B, D]``."""
        mask = batch.inputs["attention_mask"][..., None].to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-text cross-entropy ``[B]`` from ``logits`` ``[B, T, V]``."""
        logits = logits.float()
        if self.kind == "causal":
            ids = batch.inputs["input_ids"]
            labels = ids[:, 1:].clone()  # (B, T-1): each position predicts the next token
            seen = torch.arange(ids.shape[1] - 1, device=ids.device)[None, :]
            lengths = torch.tensor(batch.lengths, device=ids.device)[:, None]
            labels[seen >= lengths - 1] = -100  # padding is never a target
            logits = logits[:, :-1]
        else:
            assert batch.labels is not None
            labels = batch.labels
        per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                    reduction="none")  # (B, T')
        counted = (labels != -100).sum(1).clamp(min=1)
        return per_token.sum(1) / counted

    def effect(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Per-text effect ``[B]``: loss after - before, or 1 - cosine of the embeddings."""
        if self.kind == "embedding":
            return 1.0 - F.cosine_similarity(after.double(), before.double(), dim=-1)
        return (after - before).double()

    def batch_size(self, samples: Sequence[Sample], wanted: int) -> int:
        """``wanted``, made smaller where one batch's logits would pass :data:`LOGIT_BUDGET`."""
        if self.kind == "embedding" or self.head is None:
            return wanted
        vocab = int(self.loaded.lm_model.get_output_embeddings().weight.shape[0])
        longest = max(s.length for s in samples)
        return max(1, min(wanted, LOGIT_BUDGET // max(1, longest * vocab)))


def masked_positions(word_ids: np.ndarray) -> np.ndarray:
    """The token positions of a fixed, seeded :data:`MASK_SHARE` of the words (at least one):
    every sub-word of a chosen word, as whole-word masking hides them."""
    words = np.unique(word_ids[word_ids >= 0])
    if len(words) == 0:
        raise AttnscopeError("The text has no words to mask for the masked-LM loss.")
    count = max(1, round(MASK_SHARE * len(words)))
    chosen = np.random.default_rng(MASK_SEED).choice(words, size=count, replace=False)
    return np.flatnonzero(np.isin(word_ids, chosen))


def _lm_head(lm: Any) -> Any:
    """The part of ``lm`` that turns the final hidden states into logits, or None."""
    if hasattr(lm, "lm_head"):  # LLaMA, GPT-2, RoBERTa
        return lm.lm_head
    if hasattr(lm, "cls"):  # BERT
        return lm.cls
    if hasattr(lm, "vocab_projector"):  # DistilBERT
        return lambda h: lm.vocab_projector(lm.vocab_layer_norm(lm.activation(
            lm.vocab_transform(h))))
    return None


def _final_norm(base: Any) -> Any:
    """The norm a decoder applies after its last layer (LLaMA's ``norm``, GPT-2's ``ln_f``), or
    None (BERT-like encoders end with the last layer)."""
    for name in ("norm", "ln_f", "final_layer_norm"):
        module = getattr(base, name, None)
        if module is not None:
            return module
    return None


def objective_for(loaded: Any) -> Objective:
    return Objective(loaded)
