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
    "OFFSETS",
    "STATS",
    "BatchResult",
    "CorpusItem",
    "batch_plan",
    "process_batch",
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
_CHUNK_CELLS = 2**19  # a batch holds at most this many B x T^2 cells (about 150 MB for 6x12 heads)


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
      two non-special tokens (kind "weight"), and its best texts by each score in
      :data:`EXAMPLE_SCORES` (kind = the score; positions -1).
    * ``relations``: (relation, direction, layer, head, n, hits) rows; ``baselines``:
      (relation, direction, offset, hits) rows.
    * ``problems``: (position, kind, message) rows for texts that were cut or left out.
    """

    texts: list[dict[str, Any]]
    counts: np.ndarray
    sums: np.ndarray
    sums_sq: np.ndarray
    examples: list[tuple] = field(default_factory=list)
    relations: list[tuple] = field(default_factory=list)
    baselines: list[tuple] = field(default_factory=list)
    problems: list[tuple] = field(default_factory=list)

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


def _tokenize(model: LoadedModel, item: CorpusItem) -> tuple[Tokenization | None, tuple | None]:
    """The item's tokens, or a problem row when it cannot be used."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # reported as a problem row instead
        try:
            return tokenize(model, item.text, item.text_b, truncate=True), None
        except AttnscopeError as err:
            return None, (item.position, "unusable", str(err))


def _forward(model: LoadedModel, encoded: list[Tokenization]) -> list[Any]:
    """One padded forward pass; the self-attention of every layer, L tensors ``[B, H, T, T]``."""
    import torch

    from attnscope.capture import _pad

    inputs = _pad([e.model_inputs for e in encoded], model, model.device)
    module = model.model
    if model.architecture == "encoder-decoder":  # corpus statistics read the encoder
        module = module.get_encoder()
        inputs.pop("token_type_ids", None)
    with torch.inference_mode():
        out = module(**inputs, output_attentions=True, return_dict=True)
    attentions = list(out.attentions or ())
    if not attentions or any(a is None for a in attentions):
        raise AttnscopeError(
            f"{model.name} returned no attention weights; load it with attnscope.load() or "
            "with attn_implementation='eager'."
        )
    return attentions


def _masks(model: LoadedModel, encoded: list[Tokenization], t_max: int) -> dict[str, np.ndarray]:
    """Per-text masks for a padded batch, from the pattern targets of each text.

    Returns ``pairs`` ``[B, P, T, T]`` and ``rows`` ``[B, P, T]`` for the mul-score patterns
    (``P`` = the patterns of :data:`MASS_SCORES`), and ``plain`` ``[B, T]`` (scored rows: not
    special, not padding), ``broad_rows`` ``[B, T]``, ``log_seen`` ``[B, T]``, ``n`` ``[B]``.
    """
    causal = model.is_causal
    b = len(encoded)
    pairs = np.zeros((b, len(MASS_SCORES), t_max, t_max), dtype=np.float32)
    rows = np.zeros((b, len(MASS_SCORES), t_max), dtype=np.float32)
    plain = np.zeros((b, t_max), dtype=bool)
    broad_rows = np.zeros((b, t_max), dtype=bool)
    log_seen = np.ones((b, t_max), dtype=np.float32)
    for i, enc in enumerate(encoded):
        n = len(enc)
        special = np.asarray(enc.special_mask, dtype=bool)
        for p, (_, target) in enumerate(_ordered_targets(enc.tokens, special, causal)):
            if target is None:  # induction in a non-causal model: NaN, as head_patterns says
                continue
            r, d = target.dense(n)
            rows[i, p, :n] = r
            pairs[i, p, :n, :n] = d
        plain[i, :n] = ~special
        seen = _seen(n, causal)
        broad_rows[i, :n] = ~special & (seen > 1)
        log_seen[i, :n] = np.log(np.maximum(seen, 2))
    return {"pairs": pairs, "rows": rows, "plain": plain, "broad_rows": broad_rows,
            "log_seen": log_seen, "n": np.array([len(e) for e in encoded])}


def _ordered_targets(tokens, special, causal):
    targets = _targets(tuple(tokens), special, causal)
    return [(name, targets.get(name)) for name in MASS_SCORES]


def _safe_mean(values, mask):
    """Mean of ``values`` ``[B, H, T]`` over ``mask`` ``[B, T]`` rows -> ``[B, H]`` (NaN where
    no row counts)."""
    import torch

    m = mask.to(values.dtype)[:, None, :]  # (B, 1, T)
    count = m.sum(-1)  # (B, 1)
    total = (values * m).sum(-1)  # (B, H)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, torch.nan))


def process_batch(model: LoadedModel, items: list[CorpusItem], *, top_k: int = 5) -> BatchResult:
    """Run ``model`` once on ``items`` and reduce its attention to per-head statistics.

    Args:
        model: from :func:`attnscope.load`.
        items: the texts of one batch (see :func:`batch_plan`); CoNLL-U items also add
            relation counts.
        top_k: how many examples per head (and kind) to keep from this batch.

    Returns:
        A :class:`BatchResult`, whose sums over ``[S, L, H]`` merge with other batches' by
        addition.
    """
    import torch

    layers, heads = model.num_layers, model.num_heads
    shape = (len(STATS), layers, heads)
    result = BatchResult(texts=[], counts=np.zeros(shape, np.int64), sums=np.zeros(shape),
                         sums_sq=np.zeros(shape))
    kept: list[CorpusItem] = []
    encoded: list[Tokenization] = []
    for item in items:
        enc, problem = _tokenize(model, item)
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

    attentions = _forward(model, encoded)  # L x (B, H, T, T)
    b, t_max = len(kept), attentions[0].shape[-1]
    masks = _masks(model, encoded, t_max)
    dev = attentions[0].device
    pairs = torch.from_numpy(masks["pairs"]).to(dev)  # (B, P, T, T)
    rows = torch.from_numpy(masks["rows"]).to(dev)  # (B, P, T)
    plain = torch.from_numpy(masks["plain"]).to(dev)  # (B, T)
    broad_rows = torch.from_numpy(masks["broad_rows"]).to(dev)
    log_seen = torch.from_numpy(masks["log_seen"]).to(dev)
    n = torch.from_numpy(masks["n"]).to(dev)
    idx = torch.arange(t_max, device=dev)
    dist = (idx[None, :] - idx[:, None]).abs().float()  # (T, T)
    pair_ok = (plain[:, :, None] & plain[:, None, :])  # (B, T, T) both tokens plain

    values = np.full((b, len(STATS), layers, heads), np.nan)  # per text
    best_weight = np.zeros((b, layers, heads), dtype=np.float64)
    best_at = np.zeros((b, layers, heads), dtype=np.int64)
    with torch.inference_mode():
        for layer in range(layers):
            att = attentions[layer].float()  # (B, H, T, T)
            attentions[layer] = att
            row_sums = att.sum(-1)  # (B, H, T)
            hit = torch.einsum("bhqk,bpqk->bhp", att, pairs)
            total = torch.einsum("bhq,bpq->bhp", row_sums, rows)
            mul = torch.where(total > 0, hit / total.clamp(min=1e-30),
                              torch.full_like(hit, torch.nan))  # (B, H, P)
            entropy = -torch.special.xlogy(att, att).sum(-1)  # (B, H, T)
            broad = _safe_mean(entropy / log_seen[:, None, :], broad_rows)  # (B, H)
            raw_entropy = _safe_mean(entropy, plain)
            distance = _safe_mean(torch.einsum("bhqk,qk->bhq", att, dist), plain)
            column = {name: mul[:, :, p] for p, name in enumerate(MASS_SCORES)}
            column |= {"broad": broad, "distance": distance, "entropy": raw_entropy}
            for s, name in enumerate(STATS[: len(SCORES) + 1]):
                values[:, s, layer] = column[name].double().cpu().numpy()
            for o_index, offset in enumerate(OFFSETS):
                diag = torch.diagonal(att, offset=offset, dim1=-2, dim2=-1)  # (B, H, T-|o|)
                q = torch.arange(diag.shape[-1], device=dev) + max(0, -offset)  # query rows
                valid = plain[:, q] & ((q + offset)[None, :] < n[:, None])  # (B, T-|o|)
                values[:, len(SCORES) + 1 + o_index, layer] = (
                    _safe_mean(diag, valid).double().cpu().numpy())
            masked = att.masked_fill(~pair_ok[:, None], -1.0).flatten(-2)  # (B, H, T*T)
            weight, at = masked.max(-1)
            best_weight[:, layer] = weight.double().cpu().numpy()
            best_at[:, layer] = at.cpu().numpy()

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
    result.examples = _examples(kept, encoded, values, best_weight, best_at, t_max, top_k)
    if any(item.arcs for item in kept):
        _relations(result, kept, encoded, attentions, layers, heads)
    return result


def _examples(kept, encoded, values, best_weight, best_at, t_max, top_k) -> list[tuple]:
    """Per head, this batch's ``top_k`` texts by strongest weight and by each score."""
    rows: list[tuple] = []
    b, _, layers, heads = values.shape
    keep = min(top_k, b)
    for layer in range(layers):
        for head in range(heads):
            weights = best_weight[:, layer, head]
            for i in np.argsort(-weights, kind="stable")[:keep]:
                if weights[i] <= 0:
                    continue
                q, k = divmod(int(best_at[i, layer, head]), t_max)
                tokens = encoded[i].tokens
                rows.append((layer, head, "weight", float(weights[i]), kept[i].key, q, k,
                             tokens[q], tokens[k]))
            for name in EXAMPLE_SCORES:
                scores = values[:, STATS.index(name), layer, head]
                order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
                for i in order[:keep]:
                    if np.isnan(scores[i]):
                        continue
                    rows.append((layer, head, name, float(scores[i]), kept[i].key, -1, -1,
                                 None, None))
    return rows


def _word_matrices(enc: Tokenization, spans: tuple[tuple[int, int], ...]):
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
    return mean, member.T, size > 0


def _relations(result: BatchResult, kept, encoded, attentions, layers, heads) -> None:
    """Count, per relation and direction, the heads whose most-attended word is the other end
    of the arc, and the fixed-offset baseline's hits (Clark et al. 2019, Sec. 4)."""
    totals: Counter = Counter()
    hits: dict[tuple[str, str], np.ndarray] = {}
    offsets: Counter = Counter()
    for i, (item, enc) in enumerate(zip(kept, encoded, strict=True)):
        if not item.arcs or not item.words:
            continue
        n = len(enc)
        att = np.stack([attentions[layer][i, :, :n, :n].cpu().numpy()
                        for layer in range(layers)])  # (L, H, T, T)
        mean, total, has = _word_matrices(enc, item.words)
        # (L, H, W, W): query words average their tokens' rows, key words sum their columns
        words = np.einsum("wq,lhqk,kv->lhwv", mean, att, total, optimize=True)
        choice = words.argmax(axis=-1)  # (L, H, W): the word each word attends to most
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


def search_batch(model: LoadedModel, texts: list[str],
                 query: str) -> tuple[list[tuple[int, int, str, float]], int]:
    """Where each head looks from every occurrence of the token ``query`` in ``texts``.

    A token matches when it equals ``query`` ignoring case and sub-word markers. Returns
    ``(rows, occurrences)``: (layer, head, key_token, weight) rows, each head's attention summed
    over every occurrence by key token (key tokens compared the same way), and how many
    occurrences there were.
    """
    from attnscope.analysis.patterns import _normalise

    wanted = _normalise(query)
    encoded = [enc for enc, _ in (_tokenize(model, CorpusItem(0, t)) for t in texts)
               if enc is not None]
    if not encoded:
        return [], 0
    attentions = _forward(model, encoded)  # L x (B, H, T, T)
    sums: dict[tuple[int, int, str], float] = {}
    occurrences = 0
    for i, enc in enumerate(encoded):
        names = [t if enc.special_mask[k] else _normalise(t) or t
                 for k, t in enumerate(enc.tokens)]
        hits = [q for q, name in enumerate(names) if name == wanted and not enc.special_mask[q]]
        if not hits:
            continue
        occurrences += len(hits)
        n = len(enc)
        for layer, tensor in enumerate(attentions):
            weights = tensor[i, :, hits, :n].float().sum(1).cpu().numpy()  # (H, T)
            for head in range(weights.shape[0]):
                for k in range(n):
                    key = (layer, head, names[k])
                    sums[key] = sums.get(key, 0.0) + float(weights[head, k])
    return [(*key, weight) for key, weight in sums.items()], occurrences
