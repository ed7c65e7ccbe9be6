"""Merge sub-word tokens into words ("autumn" stays, "fo ##lia ##ge" becomes "foliage").

For attention from word groups Q (queries) to word groups K (keys), the merged weight is the
*sum* over the tokens of K of the *mean* over the tokens of Q:

    merged[i, j] = mean_{q in Q_i} sum_{k in K_j} A[q, k]

so every merged row still sums to 1 over keys. Hidden states are averaged over a word's tokens.
Special tokens ([CLS], [SEP], <s>...) stay as their own units. Queries, keys and values are
dropped: a merged head has no single query vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attnscope.trace import Trace, require_trace

__all__ = ["merge_subwords", "word_groups"]


def word_groups(word_ids: np.ndarray) -> list[list[int]]:
    """Token positions grouped by word, in order; special tokens (word id -1) stand alone.

    >>> word_groups(np.array([-1, 0, 1, 1, -1]))
    [[0], [1], [2, 3], [4]]
    """
    groups: list[list[int]] = []
    last = None
    for pos, word in enumerate(word_ids.tolist()):
        if word >= 0 and word == last:
            groups[-1].append(pos)
        else:
            groups.append([pos])
        last = word
    return groups


def _mean_matrix(groups: list[list[int]], n: int) -> np.ndarray:
    """``[W, T]``: row w averages the tokens of group w."""
    m = np.zeros((len(groups), n), dtype=np.float32)
    for w, positions in enumerate(groups):
        m[w, positions] = 1.0 / len(positions)
    return m


def _word_strings(trace_tokens: Sequence[str], groups: list[list[int]], offsets: np.ndarray,
                  segments: np.ndarray | None, texts: Sequence[str]) -> tuple[str, ...]:
    words = []
    for positions in groups:
        first, last = positions[0], positions[-1]
        seg = int(segments[first]) if segments is not None else 0
        start, end = int(offsets[first, 0]), int(offsets[last, 1])
        if start >= 0 and 0 <= seg < len(texts) and texts[seg]:
            words.append(texts[seg][start:end].strip() or trace_tokens[first])
        else:
            words.append(trace_tokens[first] if len(positions) == 1 else
                          "".join(trace_tokens[p].removeprefix("##") for p in positions))
    return tuple(words)


def merge_subwords(trace: Trace) -> Trace:
    """A new Trace whose units are words instead of sub-word tokens (``unit == "word"``).

    ``attentions`` ``[L, H, T, T]`` becomes ``[L, H, W, W]`` and ``hidden_states``
    ``[L+1, T, D]`` becomes ``[L+1, W, D]`` for W words. Encoder-decoder traces merge both
    sides; cross attention merges decoder queries and encoder keys.
    """
    require_trace(trace, "merge_subwords")
    if trace.unit == "word":
        return trace
    groups = word_groups(trace.word_ids)
    n = trace.num_tokens
    mean = _mean_matrix(groups, n)  # [W, T]
    total = (mean > 0).astype(np.float32).T  # [T, W]: sums the keys of each word

    def merge_att(att: np.ndarray, q_mean: np.ndarray, k_sum: np.ndarray) -> np.ndarray:
        # (L, H, Tq, Tk) -> (L, H, Wq, Wk)
        return np.einsum("wq,lhqk,kv->lhwv", q_mean, att, k_sum, optimize=True).astype(np.float32)

    def pick(array: np.ndarray, groups: list[list[int]]) -> np.ndarray:
        return np.asarray(array)[[g[0] for g in groups]]

    texts = (trace.text, trace.text_b or "")
    offsets = np.asarray(trace.offsets)
    merged_offsets = np.array(
        [[offsets[g[0], 0], offsets[g[-1], 1]] for g in groups], dtype=np.int64
    ).reshape(len(groups), 2)
    sentence_b_start = None
    if trace.sentence_b_start is not None:
        sentence_b_start = next(
            (w for w, g in enumerate(groups) if trace.sentence_b_start in g), None
        )
    changes = dict(
        tokens=_word_strings(trace.tokens, groups, offsets, trace.segment_ids, texts),
        input_ids=pick(trace.input_ids, groups),
        token_type_ids=pick(trace.token_type_ids, groups),
        special_mask=pick(trace.special_mask, groups),
        word_ids=pick(trace.word_ids, groups),
        offsets=merged_offsets,
        segment_ids=pick(trace.segment_ids, groups),
        sentence_b_start=sentence_b_start,
        attentions=merge_att(trace.attentions, mean, total),
        hidden_states=np.einsum("wt,ltd->lwd", mean, trace.hidden_states).astype(np.float32),
        queries=None,
        keys=None,
        values=None,
        unit="word",
    )
    if trace.decoder_attentions is not None:
        # an encoder-decoder Trace holds every decoder array together
        assert trace.decoder_word_ids is not None and trace.decoder_tokens is not None
        assert trace.decoder_input_ids is not None and trace.decoder_special_mask is not None
        assert trace.cross_attentions is not None and trace.decoder_hidden_states is not None
        dec_groups = word_groups(trace.decoder_word_ids)
        dec_mean = _mean_matrix(dec_groups, len(trace.decoder_tokens))
        dec_total = (dec_mean > 0).astype(np.float32).T
        dec_offsets = np.asarray(trace.decoder_offsets)
        changes.update(
            decoder_tokens=_word_strings(trace.decoder_tokens, dec_groups, dec_offsets, None,
                                         (trace.text_b or "",)),
            decoder_input_ids=pick(trace.decoder_input_ids, dec_groups),
            decoder_special_mask=pick(trace.decoder_special_mask, dec_groups),
            decoder_word_ids=pick(trace.decoder_word_ids, dec_groups),
            decoder_offsets=np.array(
                [[dec_offsets[g[0], 0], dec_offsets[g[-1], 1]] for g in dec_groups],
                dtype=np.int64,
            ).reshape(len(dec_groups), 2),
            decoder_attentions=merge_att(trace.decoder_attentions, dec_mean, dec_total),
            cross_attentions=merge_att(trace.cross_attentions, dec_mean, total),
            decoder_hidden_states=np.einsum(
                "wt,ltd->lwd", dec_mean, trace.decoder_hidden_states
            ).astype(np.float32),
        )
    return trace.replace(**changes)
