"""Corpus statistics: what every head does over many texts, reduced one batch at a time.

The unit of work is :func:`process_batch`. It runs the model once on a padded batch of texts
(under ``torch.inference_mode``, no hidden states, no Trace), and reduces each layer's attention
``[B, H, T, T]`` at once to small per-text numbers:

* every score of :func:`attnscope.head_patterns` (the same targets, from
  :mod:`attnscope.analysis.patterns`, so a text scores exactly as its Trace does), plus the raw
  attention entropy in nats (Clark et al. 2019, Fig. 4);
* a positional profile: the mean weight at each relative offset -8..+8 (key minus query);
* the head's label on that text (as :func:`head_patterns` labels it);
* for CoNLL-U sentences, whether the word each word attends to most is its syntactic head
  (and the reverse), after merging sub-words into the treebank's words.

**Long texts.** A text whose eager weights would pass the memory budget (B·L·H·T²·4 bytes:
SmolLM2 at 8,192 tokens would hold 72 GB) is captured lazily instead
(:func:`attnscope.lazy.capture_lazy`: queries, keys and row log-sum-exps) and reduced by
:func:`lazy_text_statistics`, streaming its weights over blocks of query rows; the numbers
equal the eager path's to float rounding. :func:`route_batch` decides, from the token counts
alone and before anything is allocated, which texts go which way; shorter texts keep their
padded eager batch.

Each statistic is one value per text and head. A batch returns their **sufficient
statistics** -- count, sum and sum of squares over its texts, ``[S, L, H]`` -- so batches merge
exactly by addition, in any number of processes, and the corpus mean and standard deviation
come out at the end: ``mean = sum / n``, ``std = sqrt(sum_sq / n - mean**2)`` (ddof 0).

The local engine and the Ray engine both call :func:`process_batch`, so their numbers agree by
construction.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnscope.analysis.patterns import (
    LABELS,
    MASS_SCORES,
    SCORES,
    _seen,
    _targets,
    label_heads,
)
from attnscope.errors import AttnscopeError
from attnscope.models import LoadedModel
from attnscope.tokens import Tokenization, TruncationWarning, tokenize

__all__ = [
    "ATTENTION_CHOICES",
    "EMBEDDINGS_LIMIT",
    "LAZY_BLOCK",
    "OFFSETS",
    "STATS",
    "BatchResult",
    "CorpusItem",
    "batch_plan",
    "check_attention",
    "eager_batch_bytes",
    "lazy_text_statistics",
    "process_batch",
    "route_batch",
    "search_batch",
    "text_key",
]

#: Relative offsets (key position minus query position) of the positional profile.
OFFSETS = tuple(range(-8, 9))
#: Per-text statistics, in the order of ``BatchResult.sums``'s first axis: the head-pattern
#: scores, raw entropy (nats), the positional profile, and one 0/1 indicator per label.
STATS = (
    *SCORES,
    "entropy",
    *(f"offset:{o:+d}" for o in OFFSETS),
    *(f"label:{name}" for name in LABELS),
)
#: Scores whose best texts are kept as examples (with the single strongest weights).
EXAMPLE_SCORES = (*SCORES, "entropy")
#: The most tokens a run may sample for the query/key embedding (``embeddings=``): each keeps
#: its query and key in every head, ``2 x L x H x d_head`` float32 numbers.
EMBEDDINGS_LIMIT = 2000
_CHUNK_CELLS = 2**19  # a batch holds at most this many B x T^2 cells (about 150 MB for 6x12 heads)
# Up to this many tokens the eager path sums a text's T² cells in one float32 product (the
# fastest); past it, row by row (as precise at any length, and as fast there).
_ONE_PRODUCT_TOKENS = 256
#: Query rows per block when a text is reduced on the lazy path: a block costs H·block·T·4
#: bytes a copy.
LAZY_BLOCK = 256


@dataclass(frozen=True)
class CorpusItem:
    """One text of the corpus.

    ``position`` is where it stands in the input (the line number for text, JSONL and CSV
    files, the row for Parquet and datasets, the first line of a CoNLL-U sentence, the index
    for a Python iterable), used in messages. For CoNLL-U sentences, ``words`` ``[W, 2]`` are the
    character spans of the treebank's words in ``text`` and ``arcs`` the (dependent, head,
    relation) triples over word indices (0-based; the root's arc is left out).
    """

    position: int
    text: str
    text_b: str | None = None
    words: tuple[tuple[int, int], ...] | None = None
    arcs: tuple[tuple[int, int, str], ...] | None = None
    key: str = ""


def text_key(text: str, text_b: str | None = None,
             arcs: tuple[tuple[int, int, str], ...] | None = None) -> str:
    """The content hash a text is known by in the store (32 hex digits). Equal texts (and
    pairs, and annotations) get equal keys, so a text is counted once however often it
    occurs and whatever run it is resumed in."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(text.encode("utf-8", "surrogatepass"))
    if text_b is not None:
        digest.update(b"\x00" + text_b.encode("utf-8", "surrogatepass"))
    if arcs:
        digest.update(b"\x01" + repr(arcs).encode("utf-8"))
    return digest.hexdigest()


@dataclass
class BatchResult:
    """What one batch adds to the store; plain numbers and lists, cheap to send between
    processes.

    * ``texts``: one dict per text processed: key, position, text, text_b, n_tokens, truncated.
    * ``counts``, ``sums``, ``sums_sq``: ``[S, L, H]`` over the batch's texts for each of
      :data:`STATS` (NaN values, such as "previous" on a one-word text, are not counted).
    * ``examples``: (layer, head, kind, value, key, query_pos, key_pos, query_token,
      key_token) rows: per head, the batch's texts with the strongest single weight between
      two non-special tokens, from a query that sees more than one key (kind "weight"), and
      its best texts by each score in :data:`EXAMPLE_SCORES` (kind = the score; positions
      -1).
    * ``relations``: (relation, direction, layer, head, n, hits) rows; ``baselines``:
      (relation, direction, offset, hits) rows.
    * ``problems``: (position, kind, message) rows for texts that were cut or left out.
    * ``importance``: None, or (method, per_text ``[B, L, H]``): each text's head importance
      (:func:`attnscope.head_importance`), in the order of ``texts``.
    * ``embeddings``: (key, token_pos, priority, token, segment, char_start, char_end, queries,
      keys) rows for the batch's sampled tokens (see :func:`token_priority`); ``queries`` and
      ``keys`` float32 ``[L, H, d_head]`` each: the token's query and key in every head.
    * ``lazy``: how many of ``texts`` took the lazy path (their eager weights would have
      passed the memory budget, or ``attention="lazy"``); nothing in the store depends on it.
    """

    texts: list[dict[str, Any]]
    counts: np.ndarray
    sums: np.ndarray
    sums_sq: np.ndarray
    examples: list[tuple] = field(default_factory=list)
    relations: list[tuple] = field(default_factory=list)
    baselines: list[tuple] = field(default_factory=list)
    problems: list[tuple] = field(default_factory=list)
    importance: tuple[str, np.ndarray] | None = None
    embeddings: list[tuple] = field(default_factory=list)
    lazy: int = 0

    @property
    def num_tokens(self) -> int:
        return int(sum(t["n_tokens"] for t in self.texts))


def batch_plan(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Cut texts into batches of similar length: indices into ``lengths`` (token counts),
    shortest first, at most ``batch_size`` texts and about 2**19 ``B x T^2`` cells each.

    Sorting by length keeps padding small; the cell budget keeps a batch of long texts from
    holding gigabytes of attention. The plan depends only on the lengths, so a resumed run
    cuts the same batches as an uninterrupted one.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    plan: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], 1)  # sorted: the newcomer is the longest so far
        if current and (len(current) >= batch_size
                        or (len(current) + 1) * longest * longest > _CHUNK_CELLS):
            plan.append(current)
            current = []
        current.append(i)
    if current:
        plan.append(current)
    return plan


def _tokenize_items(model: LoadedModel, items: list[CorpusItem]
                    ) -> list[tuple[Tokenization | None, tuple | None]]:
    """:func:`_tokenize` of every item; the single texts in one call of the tokenizer
    (:func:`attnscope.tokens.tokenize_batch`, equal to one by one), pairs one by one."""
    from attnscope.tokens import tokenize_batch

    out: list[tuple[Tokenization | None, tuple | None]] = [(None, None)] * len(items)
    single = [i for i, item in enumerate(items) if item.text_b is None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # reported as a problem row instead
        found = tokenize_batch(model, [items[i].text for i in single]) if single else []
    for i, enc in zip(single, found, strict=True):
        out[i] = ((None, (items[i].position, "unusable", str(enc)))
                  if isinstance(enc, AttnscopeError) else (enc, None))
    for i, item in enumerate(items):
        if item.text_b is not None:
            out[i] = _tokenize(model, item)
    return out


def _tokenize(model: LoadedModel, item: CorpusItem) -> tuple[Tokenization | None, tuple | None]:
    """The item's tokens, or a problem row when it cannot be used."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # reported as a problem row instead
        try:
            return tokenize(model, item.text, item.text_b, truncate=True), None
        except AttnscopeError as err:
            return None, (item.position, "unusable", str(err))


def token_priority(key: str, position: int) -> int:
    """A token's place in the embedding sample: a hash of its text's key and its position,
    from 0 to 2**63 - 1. A run keeps the tokens of smallest priority (ties broken by key and
    position), so the sample is a uniform draw fixed by the texts alone: the same whatever
    the batch order, engine or resumption."""
    digest = hashlib.blake2b(f"{key}:{position}".encode(), digest_size=8, person=b"attnscope-qk")
    return int.from_bytes(digest.digest(), "big") >> 1


def _forward(model: LoadedModel, encoded: list[Tokenization], recorder: Any = None) -> list[Any]:
    """One padded forward pass; the self-attention of every layer, L tensors ``[B, H, T, T]``.
    With a :class:`~attnscope.adapters.hooks.QKVRecorder`, its hooks see the pass."""
    import contextlib

    import torch

    from attnscope.capture import _pad

    inputs = _pad([e.model_inputs for e in encoded], model, model.device)
    module = model.model
    if model.architecture == "encoder-decoder":  # corpus statistics read the encoder
        module = module.get_encoder()
        inputs.pop("token_type_ids", None)
    with torch.inference_mode(), (recorder or contextlib.nullcontext()):
        out = module(**inputs, output_attentions=True, return_dict=True)
    attentions = list(out.attentions or ())
    if not attentions or any(a is None for a in attentions):
        raise AttnscopeError(
            f"{model.name} returned no attention weights; load it with attnscope.load() or "
            "with attn_implementation='eager'."
        )
    return attentions


# Columns of the linear reductions (see _weights): hits and totals of each mul-score pattern,
# distance, sink, then the positional profile.
_P = len(MASS_SCORES)
_DISTANCE = 2 * _P
_SINK = _DISTANCE + 1
_OFFSET0 = _SINK + 1
_LINEAR = _OFFSET0 + len(OFFSETS)


def _weights(model: LoadedModel, encoded: list[Tokenization],
             t_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every per-text statistic that is linear in the attention, as one weight matrix.

    Head-pattern hits and totals, mean distance and the positional profile are all
    ``sum over (q, k) of A[q, k] * W[q, k]`` for a per-text ``W``, so a single batched matrix
    product over every layer and head computes them at once. Returns:

    * ``linear`` ``[B, T*T, _LINEAR]``: per pattern p, column p holds its target pairs
      (``sum(A * D)`` over scored rows) and column P + p its scored rows (``sum(A)`` over
      them); then ``|q - k|`` averaged over plain rows (distance); key 0 averaged over the
      rows that see at least two keys (sink); then, per offset o, the
      key ``q + o`` averaged over the plain rows that have one (the profile);
    * ``entropy`` ``[B, T, 2]``: row weights for normalised entropy (rows that see at least
      two keys, divided by ``log(keys seen)``) and raw entropy (plain rows), as means;
    * ``defined`` ``[B, _LINEAR]`` bool: whether the statistic has any row to average.

    The targets are :mod:`attnscope.analysis.patterns`' own, so a text scores exactly as its
    Trace does with :func:`attnscope.head_patterns`.
    """
    causal = model.is_causal
    b = len(encoded)
    linear = np.zeros((b, t_max, t_max, _LINEAR), dtype=np.float32)
    entropy = np.zeros((b, t_max, 2), dtype=np.float32)
    defined = np.zeros((b, _LINEAR + 2), dtype=bool)
    for i, enc in enumerate(encoded):
        n = len(enc)
        special = np.asarray(enc.special_mask, dtype=bool)
        plain = ~special
        w = linear[i, :n, :n]  # (T, T, S) view of this text's block
        targets = _targets(tuple(enc.tokens), special, causal)
        for p, name in enumerate(MASS_SCORES):
            target = targets.get(name)
            if target is None or target.rows.size == 0:  # induction in an encoder: NaN
                continue
            rows, pairs = target.dense(n)
            w[:, :, p] = pairs
            w[:, :, _P + p] = rows[:, None]
            defined[i, p] = defined[i, _P + p] = True
        q = np.arange(n)
        count = plain.sum()
        if count:
            w[:, :, _DISTANCE] = np.abs(q[None, :] - q[:, None]) * plain[:, None] / count
            defined[i, _DISTANCE] = True
            entropy[i, :n, 1] = plain / count
            defined[i, _LINEAR + 1] = True
        for j, offset in enumerate(OFFSETS):
            rows = q[plain & (q + offset >= 0) & (q + offset < n)]
            if rows.size:
                w[rows, rows + offset, _OFFSET0 + j] = 1.0 / rows.size
                defined[i, _OFFSET0 + j] = True
        seen = _seen(n, causal)
        if (seen > 1).any():
            w[seen > 1, 0, _SINK] = 1.0 / (seen > 1).sum()
            defined[i, _SINK] = True
        broad = plain & (seen > 1)
        if broad.any():
            entropy[i, :n, 0] = broad / np.log(np.maximum(seen, 2)) / broad.sum()
            defined[i, _LINEAR] = True
    return linear.reshape(b, t_max * t_max, _LINEAR), entropy, defined


def process_batch(model: LoadedModel, items: list[CorpusItem], *, top_k: int = 5,
                  embeddings: int = 0, attention: str | None = None, budget: Any = None,
                  block: int = LAZY_BLOCK) -> BatchResult:
    """Run ``model`` on ``items`` and reduce its attention to per-head statistics.

    Texts whose eager weights fit the memory budget run as one padded eager batch (split in
    smaller ones when the whole batch would not fit); a text past it is captured lazily
    (:func:`attnscope.lazy.capture_lazy`, one text at a time) and its weights streamed over
    blocks of ``block`` query rows, in O(L·H·T·d + H·block·T) memory. Both paths give every
    per-text statistic, example, relation count and sampled query/key alike (to float
    rounding), so a store does not depend on which path a text took. The routing is decided
    before anything is allocated (:func:`route_batch`).

    Args:
        model: from :func:`attnscope.load`.
        items: the texts of one batch (see :func:`batch_plan`); CoNLL-U items also add
            relation counts.
        top_k: how many examples per head (and kind) to keep from this batch.
        embeddings: also keep the queries and keys of the batch's ``embeddings`` plain tokens
            of smallest :func:`token_priority` (0: none), for the atlas's joint embedding.
        attention: None (eager, each text past the memory budget lazy), "eager" (refused for
            a text past the budget) or "lazy" (every text), as for :func:`attnscope.capture`.
        budget: the memory budget in bytes (see :func:`attnscope.lazy.memory_budget`).
        block: query rows per block on the lazy path.

    Returns:
        A :class:`BatchResult`, whose sums over ``[S, L, H]`` merge with other batches' by
        addition.

    Raises:
        MemoryBudgetError: ``attention="eager"`` and a text whose weights pass the budget.
    """
    check_attention(attention)
    layers, heads = model.num_layers, model.num_heads
    shape = (len(STATS), layers, heads)
    result = BatchResult(texts=[], counts=np.zeros(shape, np.int64), sums=np.zeros(shape),
                         sums_sq=np.zeros(shape))
    kept: list[CorpusItem] = []
    encoded: list[Tokenization] = []
    for item, (enc, problem) in zip(items, _tokenize_items(model, items), strict=True):
        if problem is not None:
            result.problems.append(problem)
            continue
        assert enc is not None
        kept.append(item)
        encoded.append(enc)
        if enc.dropped:
            result.problems.append((
                item.position, "truncated",
                f"the text has {len(enc) + enc.dropped} tokens, more than the model's limit of "
                f"{model.max_length}: the last {enc.dropped} were left out",
            ))
        result.texts.append({"key": item.key, "position": item.position, "text": item.text,
                             "text_b": item.text_b, "n_tokens": len(enc),
                             "truncated": enc.dropped})
    if not kept:
        return result

    groups, lazy_texts = route_batch(model, kept, encoded, attention, budget)
    chosen = _choose_tokens(kept, encoded, embeddings)
    wanted: dict[int, list[int]] = {}
    for _, _, pos, i, _, _ in chosen:
        wanted.setdefault(i, []).append(pos)
    out = _PerText.empty(len(kept), layers, heads)
    result.lazy = len(lazy_texts)
    for group in groups:
        _reduce_eager(model, group, kept, encoded, wanted, out)
    for i in lazy_texts:
        _reduce_lazy(model, i, kept[i], encoded[i], wanted.get(i, []), out, block)
    values = out.values

    # Labels, exactly as head_patterns gives them, from this text's scores.
    mass = values[:, [SCORES.index(s) for s in MASS_SCORES]]  # (B, M, L, H)
    labels, _ = label_heads(np.moveaxis(mass, 1, -1), values[:, SCORES.index("broad")])
    first_label = len(SCORES) + 1 + len(OFFSETS)
    for j, name in enumerate(LABELS):
        values[:, first_label + j] = (labels == name).astype(np.float64)

    present = ~np.isnan(values)
    result.counts = present.sum(axis=0)
    result.sums = np.where(present, values, 0.0).sum(axis=0)
    result.sums_sq = np.where(present, values * values, 0.0).sum(axis=0)
    result.examples = _examples(kept, encoded, values, out.weight, out.query, out.key, top_k)
    if out.choices:
        _relations(result, kept, out.choices, layers, heads)
    result.embeddings = [(key, pos, priority, encoded[i].tokens[pos],
                          int(encoded[i].segment_ids[pos]), start, end, *out.vectors[(i, pos)])
                         for priority, key, pos, i, start, end in chosen]
    return result


#: What ``attention=`` accepts in corpus mode (as in :func:`attnscope.capture`).
ATTENTION_CHOICES = (None, "eager", "lazy")


def check_attention(attention: Any) -> None:
    """One sentence for an ``attention=`` that is not None, "eager" or "lazy"."""
    if attention not in ATTENTION_CHOICES:
        raise AttnscopeError(f"attention must be 'eager', 'lazy' or None (eager unless a text "
                             f"would pass the memory budget), not {attention!r}.")


def eager_batch_bytes(model: LoadedModel, num_tokens: int, batch: int = 1) -> int:
    """Bytes the eager path of :func:`process_batch` holds for a padded batch of ``batch``
    texts of ``num_tokens`` tokens: what the model returns (:func:`attnscope.lazy.eager_bytes`:
    the weights ``B·L·H·T²·4`` and hidden states) plus the per-text reduction weights
    ``B·T²·S·4`` and two working copies of one layer's ``[B, H, T, T]``."""
    from attnscope.lazy import eager_bytes

    cells = int(batch) * int(num_tokens) ** 2
    return eager_bytes(model, num_tokens, batch) + cells * 4 * (_LINEAR + 2 * model.num_heads)


def _lazy_refusal(model: LoadedModel, item: CorpusItem) -> str | None:
    """Why ``item`` cannot take the lazy path, or None."""
    from attnscope.lazy import lazy_problem

    problem = lazy_problem(model)
    if problem is None and item.text_b is not None and model.architecture == "encoder-decoder":
        problem = ("a sentence pair on an encoder-decoder model runs through its encoder, which "
                   "attention=\"lazy\" reads only for single texts; use attention=\"eager\".")
    return problem


def route_batch(model: LoadedModel, items: list[CorpusItem], encoded: list[Tokenization],
                attention: str | None = None, budget: Any = None
                ) -> tuple[list[list[int]], list[int]]:
    """Which texts of a batch run eager, in padded groups that each fit the memory budget,
    and which run lazily, one at a time: ``(groups, lazy)``, indices into ``items``.

    Decided from the token counts alone, before anything is allocated: with ``attention``
    None a text goes lazy when its own eager reduction (:func:`eager_batch_bytes`) would pass
    ``budget`` (see :func:`attnscope.lazy.memory_budget`); the rest, shortest first, fill
    groups while a group's padded estimate fits. A batch that fits stays one group, in its
    order. Each group keeps the batch's order.

    Raises:
        MemoryBudgetError: a text past the budget with ``attention="eager"``, or one the lazy
            path cannot read.
        AttnscopeError: ``attention="lazy"`` on a text the lazy path cannot read.
    """
    from attnscope.lazy import MemoryBudgetError, _gib, memory_budget

    check_attention(attention)
    limit = memory_budget(budget)
    order = sorted(range(len(items)), key=lambda i: (len(encoded[i]), i))
    eager: list[int] = []
    lazy: list[int] = []
    for i in order:
        n = len(encoded[i])
        need = eager_batch_bytes(model, n)
        if attention == "lazy" or (attention is None and need > limit):
            problem = _lazy_refusal(model, items[i])
            if problem is None:
                lazy.append(i)
                continue
            if attention == "lazy":
                raise AttnscopeError(problem)
        if need > limit:
            raise MemoryBudgetError(
                f"Text {items[i].position} has {n} tokens: eager attention over {model.name}'s "
                f"{model.num_layers} layers x {model.num_heads} heads would take about "
                f"{_gib(need)}, past the memory budget of {_gib(limit)}; "
                + ("leave out attention=\"eager\" (such texts then go lazy: exact weights "
                   "streamed in blocks), or give a larger budget / ATTNSCOPE_MEMORY_BUDGET."
                   if attention == "eager" else
                   f"it cannot go lazy ({problem}), so give a larger budget or a shorter text."),
                need, limit)
        eager.append(i)
    groups: list[list[int]] = []
    current: list[int] = []
    for i in eager:  # shortest first: the newcomer is the longest of its group
        if current and eager_batch_bytes(model, len(encoded[i]), len(current) + 1) > limit:
            groups.append(sorted(current))
            current = []
        current.append(i)
    if current:
        groups.append(sorted(current))
    return groups, sorted(lazy)


@dataclass
class _PerText:
    """Each text's reductions ``[B, ...]``, filled by whichever path ran it.

    ``values`` ``[B, S, L, H]`` (labels filled last); ``weight``, ``query``, ``key``
    ``[B, L, H]``: the strongest weight between plain tokens and where (weight -1: none);
    ``choices``: text -> (the word each word attends to most ``[L, H, W]``, which words kept a
    token ``[W]``) for CoNLL-U texts; ``vectors``: (text, position) -> (query, key), each
    ``[L, H, d]``, for the sampled tokens.
    """

    values: np.ndarray
    weight: np.ndarray
    query: np.ndarray
    key: np.ndarray
    choices: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    vectors: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def empty(cls, b: int, layers: int, heads: int) -> _PerText:
        return cls(values=np.full((b, len(STATS), layers, heads), np.nan),
                   weight=np.full((b, layers, heads), -1.0),
                   query=np.zeros((b, layers, heads), np.int64),
                   key=np.zeros((b, layers, heads), np.int64))


def _reduce_eager(model: LoadedModel, group: list[int], kept: list[CorpusItem],
                  encoded: list[Tokenization], wanted: dict[int, list[int]],
                  out: _PerText) -> None:
    """One padded eager pass over the texts ``group`` (indices into ``kept``), reduced into
    ``out``: every linear statistic of every head from one batched product per layer."""
    import torch

    recorder = None
    if any(i in wanted for i in group):
        from attnscope.adapters.hooks import QKVRecorder

        recorder = QKVRecorder(model)
    enc_group = [encoded[i] for i in group]
    attentions = _forward(model, enc_group, recorder)  # L x (B, H, T, T)
    if recorder is not None:
        _eager_vectors(group, wanted, recorder, out)
    layers, heads = model.num_layers, model.num_heads
    b, t_max = len(group), attentions[0].shape[-1]
    linear_w, entropy_w, defined = _weights(model, enc_group, t_max)
    with torch.inference_mode():
        dev = attentions[0].device
        linear_t = torch.from_numpy(linear_w).to(dev)  # (B, T*T, S)
        linear_rows = linear_t.reshape(b, t_max, t_max, _LINEAR)  # (B, T, T, S), a view
        entropy_t = torch.from_numpy(entropy_w).to(dev)  # (B, T, 2)
        plain = torch.zeros((b, t_max), dtype=torch.bool, device=dev)
        for i, enc in enumerate(enc_group):
            plain[i, : len(enc)] = torch.from_numpy(~np.asarray(enc.special_mask, dtype=bool))
        # A weight is evidence only where the query had a choice: a row that sees a single key
        # (a causal model's first query) puts 1.0 on it whatever the head does.
        chooses = plain.clone()
        for i, enc in enumerate(enc_group):
            chooses[i, : len(enc)] &= torch.from_numpy(_seen(len(enc), model.is_causal) > 1)
        pair_ok = (chooses[:, :, None] & plain[:, None, :]).reshape(b, 1, t_max * t_max)
        parts: dict[str, list] = {"linear": [], "entropy": [], "weight": [], "at": []}
        for layer in range(layers):
            att = attentions[layer].float()  # (B, H, T, T)
            attentions[layer] = att
            flat = att.reshape(b, heads, t_max * t_max)  # (B, H, T*T)
            # One batched product gives every linear statistic of every head: (B, H, S). Past
            # 256 tokens it goes by query row, (B, T, H, S), summed over rows in float64: one
            # float32 sum over all T² cells drifts (3e-4 of the distance at 2,048 tokens).
            if t_max <= _ONE_PRODUCT_TOKENS:
                linear_layer = torch.bmm(flat, linear_t).double()
            else:
                linear_layer = torch.matmul(att.transpose(1, 2), linear_rows).double().sum(1)
            parts["linear"].append(linear_layer)
            row_entropy = -torch.special.xlogy(att, att).sum(-1)  # (B, H, T)
            parts["entropy"].append(torch.bmm(row_entropy, entropy_t))  # (B, H, 2)
            # The strongest single weight between two plain tokens, per text and head, from a
            # query that could choose between keys.
            weight, at = flat.masked_fill(~pair_ok, -1.0).max(-1)  # (B, H)
            parts["weight"].append(weight)
            parts["at"].append(at)
        linear = torch.stack(parts["linear"], 1).double().cpu().numpy()  # (B, L, H, S)
        ent = torch.stack(parts["entropy"], 1).double().cpu().numpy()  # (B, L, H, 2)
        best_weight = torch.stack(parts["weight"], 1).double().cpu().numpy()  # (B, L, H)
        best_at = torch.stack(parts["at"], 1).cpu().numpy()

    nan = np.nan
    values = np.full((b, len(STATS), layers, heads), nan)  # per text
    ok = defined[:, :, None, None]  # (B, S, 1, 1)
    hits, totals = linear[..., :_P], linear[..., _P:2 * _P]
    with np.errstate(invalid="ignore", divide="ignore"):
        mul = np.where(ok[:, :_P].transpose(0, 2, 3, 1), hits / totals, nan)  # (B, L, H, P)
    column = {name: mul[..., p] for p, name in enumerate(MASS_SCORES)}
    column["broad"] = np.where(defined[:, _LINEAR, None, None], ent[..., 0], nan)
    column["entropy"] = np.where(defined[:, _LINEAR + 1, None, None], ent[..., 1], nan)
    column["distance"] = np.where(defined[:, _DISTANCE, None, None], linear[..., _DISTANCE],
                                  nan)
    column["sink"] = np.where(defined[:, _SINK, None, None], linear[..., _SINK], nan)
    for s, name in enumerate(STATS[: len(SCORES) + 1]):
        values[:, s] = column[name]
    for j in range(len(OFFSETS)):
        values[:, len(SCORES) + 1 + j] = np.where(defined[:, _OFFSET0 + j, None, None],
                                                  linear[..., _OFFSET0 + j], nan)
    out.values[group] = values
    out.weight[group] = best_weight
    out.query[group], out.key[group] = np.divmod(best_at, t_max)
    for local, i in enumerate(group):
        item = kept[i]
        if item.arcs and item.words:
            n = len(encoded[i])
            att_np = np.stack([a[local, :, :n, :n].cpu().numpy() for a in attentions])
            mean, total, has = _word_matrices(encoded[i], item.words)
            # (L, H, W, W): query words average their tokens' rows, key words sum their columns
            words = np.einsum("wq,lhqk,kv->lhwv", mean, att_np, total, optimize=True)
            out.choices[i] = (words.argmax(axis=-1), has)


def _eager_vectors(group: list[int], wanted: dict[int, list[int]], recorder: Any,
                   out: _PerText) -> None:
    """The sampled tokens' queries and keys ``[L, H, d]`` from what ``recorder`` saw in the
    group's padded pass (grouped key heads repeated to every query head)."""
    import torch

    picks = [(local, i, pos) for local, i in enumerate(group) for pos in wanted.get(i, ())]
    with torch.inference_mode():
        queries, keys, _ = recorder.per_layer()  # each: L tensors (B, H, T, d)
        rows_at = torch.tensor([p[0] for p in picks])
        cols_at = torch.tensor([p[2] for p in picks])
        # (N, L, H, d): every chosen token's vector in every layer and head
        q_all = torch.stack([q[rows_at, :, cols_at] for q in queries], 1).float().cpu().numpy()
        k_all = torch.stack([k[rows_at, :, cols_at] for k in keys], 1).float().cpu().numpy()
    for n, (_, i, pos) in enumerate(picks):
        out.vectors[(i, pos)] = (q_all[n], k_all[n])


def _reduce_lazy(model: LoadedModel, i: int, item: CorpusItem, enc: Tokenization,
                 positions: list[int], out: _PerText, block: int) -> None:
    """Capture text ``i`` lazily and reduce it into ``out`` (see :func:`lazy_text_statistics`);
    the sampled tokens' queries and keys come from the LazyTrace."""
    from attnscope.lazy import capture_lazy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # reported as a problem row instead
        lazy = capture_lazy(model, item.text, item.text_b, truncate=True, block=block)
    if lazy.tokens != tuple(enc.tokens):  # the same tokenizer call: never expected
        raise AttnscopeError(f"Text {item.position} tokenized differently for lazy capture "
                             f"({lazy.num_tokens} tokens, not {len(enc)}); use "
                             "attention=\"eager\".")
    stats = lazy_text_statistics(lazy, enc, item.words if item.arcs else None, block)
    out.values[i] = stats["values"]
    out.weight[i], out.query[i], out.key[i] = stats["weight"], stats["query"], stats["key"]
    if "choice" in stats:
        out.choices[i] = (stats["choice"], stats["has"])
    if positions:
        group = lazy.num_heads // lazy.num_kv_heads
        key_head = np.arange(lazy.num_heads) // group  # each query head's key head
        for pos in positions:
            out.vectors[(i, pos)] = (np.ascontiguousarray(lazy.queries[:, :, pos]),
                                     np.ascontiguousarray(lazy.keys[:, key_head, pos]))


def lazy_text_statistics(lazy: Any, enc: Tokenization,
                         words: tuple[tuple[int, int], ...] | None = None,
                         block: int = LAZY_BLOCK) -> dict[str, np.ndarray]:
    """Every per-text statistic of :func:`process_batch` from a
    :class:`~attnscope.lazy.LazyTrace`, streamed over blocks of ``block`` query rows.

    Each layer's weights ``[H, block, c]`` (c: the keys the block's rows can see) come from
    ``lazy.attentions`` one block at a time, so memory is O(H·block·T) beside the trace. The
    sums are the eager reduction's (:func:`_weights`) regrouped by rows: hits and totals of
    every pattern, the sink, entropy, distance and positional profile's row sums (divided by
    their row counts at the end), the strongest weight (first in row-major order, as the eager
    max over ``T·T``), and for CoNLL-U ``words`` the word-to-word attention ``[L, H, W, W]``.

    Returns ``values`` ``[S, L, H]`` (labels NaN: the caller fills them), ``weight``,
    ``query``, ``key`` ``[L, H]``, and with ``words`` ``choice`` ``[L, H, W]`` and ``has``
    ``[W]``.
    """
    import torch

    L, H, n = lazy.num_layers, lazy.num_heads, lazy.num_tokens
    causal = bool(lazy.is_causal)
    tokens = tuple(enc.tokens)
    special = np.asarray(enc.special_mask, dtype=bool)
    plain = ~special
    seen = _seen(n, causal)
    chooses = plain & (seen > 1)
    M = len(MASS_SCORES)
    hit, total = np.zeros((M, L, H)), np.zeros((M, L, H))
    scored = np.zeros(M, np.int64)
    sums = {name: np.zeros((L, H)) for name in ("sink", "broad", "entropy", "distance")}
    offset_sum = np.zeros((len(OFFSETS), L, H))
    offset_count = np.zeros(len(OFFSETS), np.int64)
    best = np.full((L, H), -1.0)
    best_q = np.zeros((L, H), np.int64)
    best_k = np.zeros((L, H), np.int64)
    word_att = None
    if words:
        mean, member, has = _word_matrices(enc, words)
        mean_t, member_t = torch.from_numpy(mean).double(), torch.from_numpy(member)
        word_att = torch.zeros((L, H, len(words), len(words)), dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, n, block):
            stop = min(start + block, n)
            rows = np.arange(start, stop)
            c = stop if causal else n  # keys past the block's last query are masked: P = 0
            cols = np.arange(c)
            targets = _targets(tokens, special, causal, start, stop)
            for m, name in enumerate(MASS_SCORES):
                target = targets.get(name)
                scored[m] += 0 if target is None else len(target.rows)
            local_plain = torch.from_numpy(np.flatnonzero(plain[start:stop]))
            local_sink = torch.from_numpy(np.flatnonzero(seen[start:stop] > 1))
            broad_rows = np.flatnonzero(chooses[start:stop])
            local_broad = torch.from_numpy(broad_rows)
            log_seen = torch.from_numpy(np.log(seen[start + broad_rows]).astype(np.float32))
            dist = torch.from_numpy(np.abs(rows[:, None] - cols[None, :]).astype(np.float32))
            tile_bytes = H * len(rows) * c * 4
            hidden = torch.from_numpy(~(chooses[start:stop, None] & plain[None, :c]))  # (r, c)
            diagonals = []  # per offset: the block's plain rows that have key q + o
            for j, offset in enumerate(OFFSETS):
                q = rows[plain[start:stop] & (rows + offset >= 0) & (rows + offset < n)]
                offset_count[j] += q.size
                q = q[q + offset < c]  # a causal model's later keys: weight 0
                diagonals.append((torch.from_numpy(q - start), torch.from_numpy(q + offset)))
            for layer in range(L):
                # (H, r, c): the block this path is built around, so its own size is its budget
                p = torch.from_numpy(lazy.attentions.select(
                    (layer, slice(None), slice(start, stop), slice(0, c)), tile_bytes))
                row_sums = p.sum(-1, dtype=torch.float64)  # (H, r)
                for m, name in enumerate(MASS_SCORES):
                    target = targets.get(name)
                    if target is None or not len(target.rows):
                        continue
                    total[m, layer] += row_sums[:, target.rows - start].sum(-1).numpy()
                    if target.cols is not None:
                        kept_cols = torch.from_numpy(target.cols[target.cols < c])
                        part = p[:, torch.from_numpy(target.rows - start)][:, :, kept_cols]
                        hit[m, layer] += part.sum((-1, -2), dtype=torch.float64).numpy()
                    else:
                        assert target.q is not None and target.k is not None
                        inside = target.k < c
                        q_at = torch.from_numpy(target.q[inside] - start)
                        k_at = torch.from_numpy(target.k[inside])
                        hit[m, layer] += p[:, q_at, k_at].sum(-1, dtype=torch.float64).numpy()
                sums["sink"][layer] += p[:, local_sink, 0].sum(-1, dtype=torch.float64).numpy()
                entropy = -torch.special.xlogy(p, p).sum(-1)  # (H, r)
                sums["broad"][layer] += (entropy[:, local_broad] / log_seen).sum(
                    -1, dtype=torch.float64).numpy()
                sums["entropy"][layer] += entropy[:, local_plain].sum(
                    -1, dtype=torch.float64).numpy()
                sums["distance"][layer] += (p * dist).sum(-1)[:, local_plain].sum(
                    -1, dtype=torch.float64).numpy()
                for j, (q_at, k_at) in enumerate(diagonals):
                    offset_sum[j, layer] += p[:, q_at, k_at].sum(-1, dtype=torch.float64).numpy()
                # the strongest weight: the first maximum in row-major order, as eager's
                weight, at = p.masked_fill(hidden, -1.0).reshape(H, -1).max(-1)  # (H,)
                weight_np, at_np = weight.double().numpy(), at.numpy()
                better = weight_np > best[layer]
                best[layer][better] = weight_np[better]
                best_q[layer][better] = start + at_np[better] // c
                best_k[layer][better] = at_np[better] % c
                if word_att is not None:
                    # (H, r, W) key words summed, then the query words' means: (H, W, W)
                    to_words = torch.matmul(p, member_t[:c]).double()
                    word_att[layer] += torch.einsum("wr,hrv->hwv", mean_t[:, start:stop],
                                                    to_words)
    nan = np.nan
    values = np.full((len(STATS), L, H), nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for m, name in enumerate(MASS_SCORES):
            if scored[m]:
                values[SCORES.index(name)] = hit[m] / total[m]
    counts = {"sink": int((seen > 1).sum()), "broad": int(chooses.sum()),
              "entropy": int(plain.sum()), "distance": int(plain.sum())}
    for name, count in counts.items():
        if count:
            values[STATS.index(name)] = sums[name] / count
    for j in range(len(OFFSETS)):
        if offset_count[j]:
            values[len(SCORES) + 1 + j] = offset_sum[j] / offset_count[j]
    stats = {"values": values, "weight": best, "query": best_q, "key": best_k}
    if word_att is not None:
        stats["choice"] = word_att.numpy().argmax(axis=-1)
        stats["has"] = has
    return stats


def _choose_tokens(kept: list[CorpusItem], encoded: list[Tokenization],
                   count: int) -> list[tuple]:
    """The batch's ``count`` plain tokens of smallest priority (see
    :attr:`BatchResult.embeddings`): (priority, key, position, text index, char start, char
    end) rows, decided from the tokens alone before any pass."""
    if not count:
        return []
    candidates = []
    for i, (item, enc) in enumerate(zip(kept, encoded, strict=True)):
        for pos in range(len(enc)):
            start, end = (int(v) for v in enc.offsets[pos])
            if enc.special_mask[pos] or enc.segment_ids[pos] < 0 or start < 0 or end <= start:
                continue
            candidates.append((token_priority(item.key, pos), item.key, pos, i, start, end))
    return sorted(candidates)[:count]


def _examples(kept: Any, encoded: Any, values: Any, best_weight: Any, best_q: Any, best_k: Any,
              top_k: int) -> list[tuple]:
    """Per head, this batch's ``top_k`` texts by strongest weight and by each score.

    The orders are sorted for every head at once (a stable sort along the texts, so ties keep
    the text order, as one head at a time would); only the kept rows are visited in Python.
    """
    rows: list[tuple] = []
    b, _, layers, heads = values.shape
    keep = min(top_k, b)
    weight_order = np.argsort(-best_weight, axis=0, kind="stable")[:keep]  # (keep, L, H)
    columns = [STATS.index(name) for name in EXAMPLE_SCORES]
    scores = values[:, columns]  # (B, E, L, H)
    score_order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=0,
                             kind="stable")[:keep]  # (keep, E, L, H)
    keys = [item.key for item in kept]
    weights_kept = np.take_along_axis(best_weight, weight_order, axis=0).tolist()
    q_kept = np.take_along_axis(best_q, weight_order, axis=0).tolist()
    k_kept = np.take_along_axis(best_k, weight_order, axis=0).tolist()
    scores_kept = np.take_along_axis(scores, score_order, axis=0).tolist()
    weight_order, score_order = weight_order.tolist(), score_order.tolist()
    for layer in range(layers):
        for head in range(heads):
            for j in range(keep):
                weight = weights_kept[j][layer][head]
                if weight <= 0:
                    continue
                i = weight_order[j][layer][head]
                q, k = int(q_kept[j][layer][head]), int(k_kept[j][layer][head])
                tokens = encoded[i].tokens
                rows.append((layer, head, "weight", float(weight), keys[i], q, k, tokens[q],
                             tokens[k]))
            for e, name in enumerate(EXAMPLE_SCORES):
                for j in range(keep):
                    score = scores_kept[j][e][layer][head]
                    if score != score:  # NaN: the text gives this head no such score
                        continue
                    rows.append((layer, head, name, float(score),
                                 keys[score_order[j][e][layer][head]], -1, -1, None, None))
    return rows


def _word_matrices(enc: Tokenization, spans: tuple[tuple[int, int], ...]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which treebank word each token falls in: ``mean`` ``[W, T]`` averages a word's query
    tokens, ``total`` ``[T, W]`` sums its key tokens (as :func:`attnscope.merge_subwords`
    merges), and ``has`` ``[W]`` says whether the word kept any token (truncation)."""
    n, w_count = len(enc), len(spans)
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    member = np.zeros((w_count, n), dtype=np.float32)
    for t in range(n):
        start, end = enc.offsets[t]
        if enc.special_mask[t] or start < 0 or end <= start:
            continue
        w = int(np.searchsorted(starts, start, side="right")) - 1
        if w >= 0 and start < ends[w]:
            member[w, t] = 1.0
    size = member.sum(axis=1)
    mean = member / np.maximum(size, 1)[:, None]
    return mean, np.ascontiguousarray(member.T), size > 0


def _relations(result: BatchResult, kept: Any, choices: dict[int, tuple[np.ndarray, np.ndarray]],
               layers: int, heads: int) -> None:
    """Count, per relation and direction, the heads whose most-attended word is the other end
    of the arc, and the fixed-offset baseline's hits (Clark et al. 2019, Sec. 4), from each
    CoNLL-U text's word choices (``choices[i]``: ``[L, H, W]`` and which words kept a token)."""
    totals: Counter = Counter()
    hits: dict[tuple[str, str], np.ndarray] = {}
    offsets: Counter = Counter()
    for i, item in enumerate(kept):
        if i not in choices:
            continue
        choice, has = choices[i]  # (L, H, W): the word each word attends to most
        for dep, gov, relation in item.arcs:
            if not (has[dep] and has[gov]):
                continue  # a word cut off by truncation
            for direction, src, dst in (("dependent->head", dep, gov),
                                        ("head->dependent", gov, dep)):
                key = (relation, direction)
                totals[key] += 1
                hits.setdefault(key, np.zeros((layers, heads), np.int64))
                hits[key] += choice[:, :, src] == dst
                offsets[(relation, direction, dst - src)] += 1
    for (relation, direction), count in sorted(totals.items()):
        grid = hits[(relation, direction)]
        for layer in range(layers):
            for head in range(heads):
                result.relations.append((relation, direction, layer, head, count,
                                         int(grid[layer, head])))
    result.baselines = [(r, d, o, c) for (r, d, o), c in sorted(offsets.items())]


def search_batch(model: LoadedModel, texts: list[str], query: str, *,
                 budget: Any = None) -> tuple[list[tuple[int, int, str, float]], int]:
    """Where each head looks from every occurrence of the token ``query`` in ``texts``.

    A token matches when it equals ``query`` ignoring case and sub-word markers. Returns
    ``(rows, occurrences)``: (layer, head, key_token, weight) rows, each head's attention summed
    over every occurrence by key token (key tokens compared the same way), and how many
    occurrences there were. Texts run as in :func:`process_batch`: eager batches within the
    memory ``budget``, a text past it captured lazily (only its matching rows are computed).
    """
    from attnscope.analysis.patterns import _normalise

    wanted = _normalise(query)
    items: list[CorpusItem] = []
    encoded: list[Tokenization] = []
    for text in texts:
        item = CorpusItem(0, text)
        enc, _ = _tokenize(model, item)
        if enc is not None:
            items.append(item)
            encoded.append(enc)
    if not encoded:
        return [], 0
    sums: dict[tuple[int, int, str], float] = {}
    occurrences = 0

    def add(enc: Tokenization, rows_of: Any) -> None:
        """Add one text's rows: ``rows_of(layer, hits)`` gives ``[H, T]`` summed over hits."""
        nonlocal occurrences
        names = [t if enc.special_mask[k] else _normalise(t) or t
                 for k, t in enumerate(enc.tokens)]
        hits = [q for q, name in enumerate(names) if name == wanted and not enc.special_mask[q]]
        if not hits:
            return
        occurrences += len(hits)
        for layer in range(model.num_layers):
            weights = rows_of(layer, hits)  # (H, T)
            for head in range(weights.shape[0]):
                for k in range(len(enc)):
                    key = (layer, head, names[k])
                    sums[key] = sums.get(key, 0.0) + float(weights[head, k])

    groups, lazy_texts = route_batch(model, items, encoded, None, budget)
    for group in groups:
        attentions = _forward(model, [encoded[i] for i in group])  # L x (B, H, T, T)
        for local, i in enumerate(group):
            n = len(encoded[i])
            add(encoded[i], lambda layer, hits, att=attentions, local=local, n=n: att[layer][
                local, :, hits, :n].float().sum(1).cpu().numpy())
        del attentions  # the next group's weights replace these, not add to them
    for i in lazy_texts:
        from attnscope.lazy import capture_lazy

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            lazy = capture_lazy(model, items[i].text, truncate=True)
        # only the matching rows, [H, hits, T]: their own size is their budget
        add(encoded[i], lambda layer, hits, lazy=lazy: lazy.attentions.select(
            (layer, slice(None), hits), lazy.num_heads * len(hits) * lazy.num_keys * 4).sum(
            1, dtype=np.float32))
    return [(*key, weight) for key, weight in sums.items()], occurrences
