"""What each head does: pattern scores for every layer and head of a Trace.

Every score reads one head's attention ``A`` ``[T, T]`` (query rows, key columns, rows sum to
1) and is averaged over the **scored rows**: the queries that are not special tokens ([CLS],
[SEP], <s>, padding...), since what a [CLS] query looks at says little about the text. Special
tokens stay in every row's denominator, so a head that pours its attention onto [SEP] scores
low on previous-token even if the rest of its attention points backwards.

Most scores are TransformerLens's ``detect_head`` "mul" score against a target pattern ``D``
(1 where the pattern says to look, 0 elsewhere): ``sum(A * D) / sum(A)`` over the scored rows,
that is, the share of their attention that lands where the pattern points. Targets never point
at special tokens, except for the first-token and separator patterns, which are about them.
For previous, next, duplicate and induction, only rows that have at least one target are
scored (the first word has no previous word to look at, a word that occurs once no duplicate),
so a perfect previous-token head scores exactly 1; with no such row the score is NaN.

The scores (all in [0, 1] except ``distance``):

* ``previous``: D[i, i-1] = 1 -- the token just before.
* ``next``: D[i, i+1] = 1 -- the token just after (0 in causal models, which cannot look ahead).
* ``self``: D[i, i] = 1 -- the query token itself.
* ``first``: attention to position 0 ([CLS] in BERT, <s> or the first token in GPT-2).
* ``separator``: attention to the special tokens after position 0 ([SEP], </s>, EOS); NaN
  (not applicable) for a text with no such token, as GPT-2 tokenizes it.
* ``punctuation``: attention to tokens made only of punctuation (".", ",", "##!"...).
* ``duplicate``: D[i, j] = 1 for j != i whose token equals token i (case-insensitive, without
  sub-word markers); in causal models only earlier j can be seen.
* ``induction`` (causal models only, NaN otherwise): D[i, j] = 1 when token j-1 equals token i
  and j-1 < i: the token that followed an earlier copy of the current one.
* ``sink``: mean attention to the first token over every query row that sees more than one key
  (special rows included; a causal model's first query, forced to put all its weight on
  itself, is left out). After Gu et al. (2025), "When Attention Sink Emerges in Language
  Models": a head whose sink score exceeds :data:`SINK_THRESHOLD` (0.3) is a **sink head**.
  Unlike ``first``, it is not a label: it says where a head parks attention it does not use.
* ``broad``: normalised entropy, ``-sum_j A[i,j] log A[i,j] / log(n_i)`` with n_i the keys row
  i can see (T, or i+1 in causal models); 1 for uniform attention, 0 for one key. Rows that see
  a single key are skipped.
* ``distance``: mean attention distance ``sum_j A[i, j] * |i - j|``, in tokens (or words).

Each head also gets a **class** after Kovaleva et al. (2019), "Revealing the Dark Secrets of
BERT": vertical, diagonal, vertical+diagonal, block or heterogeneous (see :func:`kovaleva_class`),
and a **label**: the pattern among the mass scores with the highest value (at least
``LABEL_THRESHOLD``), "broad" for a head spread out over everything, else "mixed".
"""

from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from attnscope.analysis.drawing import draw
from attnscope.errors import AttnscopeError, check_index
from attnscope.trace import Trace, require_trace

if TYPE_CHECKING:
    from pandas import DataFrame

    from attnscope.lazy import LazyTrace
    from attnscope.render.static import AttnFigure

__all__ = [
    "KOVALEVA_CLASSES",
    "LABELS",
    "LABEL_THRESHOLD",
    "MASS_SCORES",
    "SCORES",
    "SINK_THRESHOLD",
    "HeadTable",
    "head_patterns",
    "kovaleva_class",
    "label_heads",
]

#: Score columns, in table order.
SCORES = ("previous", "next", "self", "first", "separator", "punctuation", "duplicate",
          "induction", "sink", "broad", "distance")
#: Scores that are shares of attention mass and compete for a head's label.
MASS_SCORES = ("previous", "next", "self", "first", "separator", "punctuation", "duplicate",
                "induction")
KOVALEVA_CLASSES = ("vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous")
#: A head whose sink score exceeds this is a sink head (Gu et al. 2025's threshold).
SINK_THRESHOLD = 0.3
#: A head is labelled by its best mass score when that score reaches this share of attention.
LABEL_THRESHOLD = 0.4
#: A head with no such score is labelled "broad" when its normalised entropy reaches this.
_BROAD_THRESHOLD = 0.8
_SUBWORD_MARKS = ("##", "Ġ", "▁", "Ċ", "</w>")


@lru_cache(maxsize=2**16)
def _normalise(token: str) -> str:
    """A token as text, for comparing: sub-word markers removed, lower case (remembered per
    token: corpus mode asks for the same vocabulary again and again)."""
    for mark in _SUBWORD_MARKS:
        token = token.replace(mark, "")
    return token.strip().lower()


@lru_cache(maxsize=2**16)
def is_punctuation(token: str) -> bool:
    """True for a token made only of punctuation characters ("." "," "##!" "Ġ...")."""
    text = _normalise(token)
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)


@dataclass(frozen=True)
class _Target:
    """Where one pattern points, as index lists (cheap to gather from ``[L, H, T, T]``).

    ``rows`` ``[R]``: the scored query rows. Either ``q``, ``k`` ``[P]``: the target (query,
    key) pairs, or ``cols`` ``[C]``: target key columns shared by every scored row.
    """

    rows: np.ndarray
    q: np.ndarray | None = None
    k: np.ndarray | None = None
    cols: np.ndarray | None = None

    def dense(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The same target as masks for T = ``n`` tokens: scored rows ``[T]`` and target
        (query, key) pairs ``[T, T]`` (only on scored rows). Corpus statistics score padded
        batches with these; they mean exactly what the index lists mean."""
        rows = np.zeros(n, dtype=bool)
        rows[self.rows] = True
        pairs = np.zeros((n, n), dtype=bool)
        if self.cols is not None:
            pairs[np.ix_(self.rows, self.cols)] = True
        else:
            pairs[self.q, self.k] = True
        return rows, pairs


def _pairs(mask: np.ndarray, start: int = 0) -> _Target:
    """A target from a boolean ``[R, T]`` pattern of query rows ``start:start+R``; only rows
    with a target are scored."""
    q, k = np.nonzero(mask)
    q = q + start
    return _Target(rows=np.unique(q), q=q, k=k)


def _targets(tokens: tuple[str, ...], special: np.ndarray, causal: bool,
             start: int = 0, stop: int | None = None) -> dict[str, _Target]:
    """Every pattern's targets for one token sequence (see the module docstring), for the
    query rows ``start:stop`` (all by default): streaming analyses build them one block of
    rows at a time, in ``[R, T]`` memory instead of ``[T, T]``."""
    n = len(tokens)
    stop = n if stop is None else stop
    special = np.asarray(special, dtype=bool)
    plain = ~special
    plain_rows = np.flatnonzero(plain[start:stop]) + start
    idx = np.arange(n)
    rel = idx[None, :] - idx[start:stop, None]  # [R, T]: key position minus query position
    both_plain = plain[start:stop, None] & plain[None, :]  # targets never point at specials...
    separators = np.flatnonzero(special[1:]).astype(np.int64) + 1
    visible = rel <= 0 if causal else np.ones(rel.shape, dtype=bool)
    text = [_normalise(t) for t in tokens]
    ids = {word: i for i, word in enumerate(dict.fromkeys(text))}
    word_id = np.array([ids[word] for word in text])  # [T]: equal text, equal id
    nonempty = np.array([w != "" for w in text])[start:stop]
    same = (word_id[start:stop, None] == word_id[None, :]) & nonempty[:, None]  # [R, T]
    targets = {
        "previous": _pairs((rel == -1) & both_plain, start),
        "next": _pairs((rel == 1) & both_plain, start),
        "self": _pairs((rel == 0) & both_plain, start),
        "duplicate": _pairs(same & (rel != 0) & both_plain & visible, start),
        # ...except these, which are about the special tokens (or punctuation) themselves.
        "first": _Target(rows=plain_rows, cols=np.array([0])),
        # no separator token (GPT-2): no row is scored, so the score is NaN, not applicable
        "separator": _Target(rows=plain_rows if separators.size else separators,
                             cols=separators),
        "punctuation": _Target(rows=plain_rows, cols=np.flatnonzero(
            np.array([is_punctuation(t) for t in tokens], dtype=bool) & plain)),
    }
    if causal:
        # Key j is an induction target of query i when token j-1 equals token i, j-1 < i.
        induction = np.zeros(rel.shape, dtype=bool)
        induction[:, 1:] = same[:, :-1] & (rel[:, :-1] < 0)
        targets["induction"] = _pairs(induction & both_plain & visible, start)
    return targets


def _mul_score(attn: np.ndarray, row_sums: np.ndarray, target: _Target) -> np.ndarray:
    """``sum(A * D) / sum(A)`` over the target's scored rows, per head.

    ``attn`` ``[L, H, T, T]``, ``row_sums`` ``[L, H, T]`` (``attn.sum(-1)``) -> ``[L, H]``
    (NaN when no row is scored).
    """
    if target.rows.size == 0:
        return np.full(attn.shape[:2], np.nan)
    total = row_sums[:, :, target.rows].sum(axis=-1)  # (L, H)
    if target.cols is not None:
        # (L, H, T, C) -> the scored rows -> (L, H)
        hit = attn[:, :, :, target.cols][:, :, target.rows].sum(axis=(2, 3))
    else:
        hit = attn[:, :, target.q, target.k].sum(axis=-1)  # (L, H, P) -> (L, H)
    return hit / total


def _seen(n: int, causal: bool) -> np.ndarray:
    """Keys each query can see ``[T]``: T, or i+1 in causal models."""
    return np.arange(1, n + 1) if causal else np.full(n, n)


def _sink_score(attn: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Mean attention to key 0 of the rows that see at least two keys -> ``[L, H]``."""
    rows = np.flatnonzero(seen > 1)
    if rows.size == 0:
        return np.full(attn.shape[:2], np.nan)
    return attn[:, :, rows, 0].mean(axis=-1).astype(np.float64)  # (L, H, R) -> (L, H)


def _entropy_score(attn: np.ndarray, rows: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Mean normalised entropy of ``rows`` ``[R]`` that see at least two keys -> ``[L, H]``."""
    keep = rows[seen[rows] > 1]
    if keep.size == 0:
        return np.full(attn.shape[:2], np.nan)
    # Every row is computed (cheaper than copying out the kept ones), then the kept ones read.
    # One layer at a time in two reused buffers: fresh full-size temporaries would cost more
    # in page faults than the arithmetic. Clipping at 1e-30 makes 0 log 0 count as (almost)
    # 0 and keeps the products normal floats (denormal arithmetic is many times slower).
    layers, heads, n, _ = attn.shape
    p = np.empty((heads, n, n), dtype=np.float32)  # (H, T, T)
    log_p = np.empty_like(p)
    entropy = np.empty((layers, heads, n), dtype=np.float32)  # (L, H, T)
    for layer in range(layers):
        np.maximum(attn[layer], np.float32(1e-30), out=p)
        np.log(p, out=log_p)
        entropy[layer] = -np.einsum("hqk,hqk->hq", p, log_p)
    normalised = entropy[:, :, keep] / np.log(seen[keep]).astype(np.float32)  # (L, H, R)
    return normalised.mean(axis=-1).astype(np.float64)


def _distance_score(attn: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean attention distance (in positions) of ``rows`` ``[R]`` -> ``[L, H]``."""
    if rows.size == 0:
        return np.full(attn.shape[:2], np.nan)
    n = attn.shape[-1]
    idx = np.arange(n)
    dist = np.abs(idx[None, :] - idx[:, None]).astype(np.float32)  # (T, T)
    per_row = np.einsum("lhqk,qk->lhq", attn, dist)  # (L, H, T)
    return per_row[:, :, rows].mean(axis=-1).astype(np.float64)


def _kovaleva_parts(attn: np.ndarray, row_sums: np.ndarray, rows: np.ndarray,
                    segments: np.ndarray) -> dict[str, np.ndarray]:
    """The three shares :func:`kovaleva_class` reads, each ``[L, H]``, over ``rows`` ``[R]``.

    * ``diagonal``: attention within one position of the query (|i - j| <= 1).
    * ``vertical``: attention on the few keys every row looks at: the k = ceil(T / 10) key
      columns that receive the most attention from the scored rows.
    * ``block``: attention within the query's own sentence for sentence pairs, else within a
      local window of 2 to 4 positions away (a block wider than the diagonal).
    """
    n = attn.shape[-1]
    if rows.size == 0:
        nan = np.full(attn.shape[:2], np.nan)
        return {"diagonal": nan, "vertical": nan, "block": nan}
    total = row_sums[:, :, rows].sum(axis=-1)  # (L, H)
    idx = np.arange(n)
    gap = np.abs(idx[None, :] - idx[:, None])  # (T, T)
    scored = np.zeros(n, dtype=bool)
    scored[rows] = True

    def share(mask: np.ndarray) -> np.ndarray:
        q, k = np.nonzero(mask & scored[:, None])
        return attn[:, :, q, k].sum(axis=-1) / total

    # Column sums over the scored rows: all rows minus the few unscored ones (no big copy).
    unscored = np.flatnonzero(~scored)
    column_mass = attn.sum(axis=2) - attn[:, :, unscored].sum(axis=2)  # (L, H, T)
    k = max(1, math.ceil(n / 10))
    top = np.partition(column_mass, n - k, axis=-1)[..., n - k:].sum(axis=-1)  # (L, H)
    seg = np.asarray(segments)
    if (seg == 0).any() and (seg == 1).any():
        own = (seg[:, None] == seg[None, :]) & (seg[None, :] >= 0)
    else:
        own = (gap >= 2) & (gap <= 4)
    return {"diagonal": share(gap <= 1), "vertical": top / total, "block": share(own)}


def label_heads(mass: np.ndarray, broad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each head's label and the score behind it, from its mass scores and entropy.

    ``mass`` ``[..., M]`` holds the scores of :data:`MASS_SCORES` in that order (NaN where
    undefined) and ``broad`` ``[...]`` the normalised entropy. A head is labelled by its best
    mass score when that reaches :data:`LABEL_THRESHOLD`, else "broad" when its entropy reaches
    0.8, else "mixed" (label score NaN). Returns two ``[...]`` arrays: labels (str) and scores.
    """
    filled = np.where(np.isnan(mass), -np.inf, mass)
    best = filled.argmax(axis=-1)  # (...)
    best_value = np.take_along_axis(filled, best[..., None], axis=-1)[..., 0]
    names = np.array(MASS_SCORES, dtype=object)[best]
    labels = np.where(best_value >= LABEL_THRESHOLD, names,
                      np.where(broad >= _BROAD_THRESHOLD, "broad", "mixed"))
    label_scores = np.where(best_value >= LABEL_THRESHOLD, best_value,
                            np.where(broad >= _BROAD_THRESHOLD, broad, np.nan))
    return labels.astype(str), label_scores.astype(np.float64)


#: Every label a head can get, in table order.
LABELS = (*MASS_SCORES, "broad", "mixed")


def kovaleva_class(diagonal: float, vertical: float, block: float) -> str:
    """Kovaleva et al.'s class of a head from its three shares (see ``_kovaleva_parts``).

    vertical+diagonal when both shares reach 0.25 and together 0.6; else diagonal when the
    diagonal share reaches 0.5; vertical when the vertical share does; block when the block
    share reaches 0.6; heterogeneous otherwise. (Kovaleva et al. classified heatmaps with a
    small CNN trained on hand labels; these rules are attnscope's stand-in that needs none.)
    """
    if any(math.isnan(x) for x in (diagonal, vertical, block)):
        return "heterogeneous"
    if diagonal >= 0.25 and vertical >= 0.25 and diagonal + vertical >= 0.6:
        return "vertical+diagonal"
    if diagonal >= 0.5:
        return "diagonal"
    if vertical >= 0.5:
        return "vertical"
    if block >= 0.6:
        return "block"
    return "heterogeneous"


@dataclass(frozen=True)
class HeadTable:
    """Pattern scores of every head. ``scores`` is float64 ``[L, H, len(SCORES)]`` in the order
    of :data:`SCORES`; ``labels`` and ``classes`` are ``[L, H]`` string arrays; ``label_scores``
    ``[L, H]`` is the score behind each label (NaN for "mixed")."""

    model_name: str
    tokens: tuple[str, ...]
    unit: str
    part: str
    scores: np.ndarray
    labels: np.ndarray
    label_scores: np.ndarray
    classes: np.ndarray
    kovaleva: dict[str, np.ndarray]
    #: the model's layer and head behind each index, for a trace captured with ``layers=`` /
    #: ``heads=`` (None: 0..L-1, 0..H-1); records and the text table name these.
    layer_ids: tuple[int, ...] | None = None
    head_ids: tuple[int, ...] | None = None

    @property
    def num_layers(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.scores.shape[1])

    def score(self, name: str) -> np.ndarray:
        """One score for every head, ``[L, H]``."""
        if name not in SCORES:
            raise AttnscopeError(f"Unknown score {name!r}; the scores are {', '.join(SCORES)}.")
        return self.scores[:, :, SCORES.index(name)]

    def records(self) -> list[dict]:
        """One dict per head: layer, head (the model's numbers), label, label_score, class
        and every score."""
        out = []
        layer_ids = self.layer_ids or range(self.num_layers)
        head_ids = self.head_ids or range(self.num_heads)
        for layer in range(self.num_layers):
            for head in range(self.num_heads):
                row = {"layer": layer_ids[layer], "head": head_ids[head],
                       "label": str(self.labels[layer, head]),
                       "label_score": float(self.label_scores[layer, head]),
                       "class": str(self.classes[layer, head])}
                row.update({name: float(self.scores[layer, head, i])
                            for i, name in enumerate(SCORES)})
                out.append(row)
        return out

    def best(self, name: str, n: int = 3) -> list[tuple[int, int, float]]:
        """The ``n`` heads with the highest ``name`` score: [(layer, head, score), ...], as
        indices into the trace's attention (see ``layer_ids`` for the model's numbers)."""
        values = self.score(name)
        flat = np.where(np.isnan(values), -np.inf, values).ravel()
        order = np.argsort(-flat, kind="stable")[:n]
        return [(int(i // self.num_heads), int(i % self.num_heads), float(flat[i]))
                for i in order if np.isfinite(flat[i])]

    def find(self, name: str, threshold: float) -> list[tuple[int, int, float]]:
        """Every head whose ``name`` score exceeds ``threshold``, best first."""
        return [b for b in self.best(name, self.num_layers * self.num_heads) if b[2] > threshold]

    def sink_heads(self) -> list[tuple[int, int, float]]:
        """Every head whose sink score exceeds :data:`SINK_THRESHOLD`, best first."""
        return self.find("sink", SINK_THRESHOLD)

    def to_pandas(self) -> DataFrame:
        """The table as a pandas DataFrame (needs pandas, which attnscope does not require)."""
        try:
            import pandas as pd
        except ImportError:
            raise AttnscopeError(
                "to_pandas needs pandas: pip install pandas (or use records())."
            ) from None
        return pd.DataFrame.from_records(self.records())

    def to_text(self) -> str:
        """A plain-text table, one line per head."""
        short = {"previous": "prev", "punctuation": "punct", "separator": "sep",
                 "duplicate": "dup", "induction": "induct", "distance": "dist"}
        header = ["layer", "head", "label", "score", "class"] + [short.get(s, s) for s in SCORES]
        body = []
        for r in self.records():
            cells = [str(r["layer"]), str(r["head"]), r["label"], _fmt(r["label_score"]),
                     r["class"]] + [_fmt(r[s], 1 if s == "distance" else 2) for s in SCORES]
            body.append(cells)
        widths = [max(len(row[c]) for row in [header, *body]) for c in range(len(header))]
        lines = ["  ".join(c.rjust(w) if i not in (2, 4) else c.ljust(w)
                           for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                 for row in [header, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>"
                       for h in ("layer", "head", "label", "score", "class", *SCORES))
        rows = []
        for r in self.records():
            cells = [r["layer"], r["head"], r["label"], _fmt(r["label_score"]), r["class"]]
            cells += [_fmt(r[s], 1 if s == "distance" else 2) for s in SCORES]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                        + "</tr>")
        return (f'<table class="attnscope-heads"><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table>")

    def label_map(self) -> AttnFigure:
        """Layers x heads map of labels (an :class:`~attnscope.AttnFigure`)."""
        return draw(self, "label_map")

    def gallery(self, trace: Trace, patterns: Sequence[str] | None = None,
                n: int = 3) -> AttnFigure:
        """For each pattern, the ``n`` best heads' heatmaps (an :class:`~attnscope.AttnFigure`).

        ``patterns`` defaults to every mass score that some head has above 0.3 (and ``broad``).
        """
        return draw(self, "gallery", trace, patterns, n)


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def head_patterns(trace: Trace | LazyTrace, part: str = "self") -> HeadTable:
    """Score every head of ``trace`` on every pattern (see the module docstring).

    Args:
        trace: a Trace (token- or word-level, from ``capture(..., merge_words=True)`` or
            :func:`attnscope.merge_subwords`), or a :class:`~attnscope.LazyTrace`, whose
            weights are streamed over blocks of rows (the same table, in O(H·block·T) memory).
        part: "self" (encoder or decoder-only self-attention) or "decoder" (the decoder of an
            encoder-decoder model); cross attention has no diagonal to score.

    Returns:
        A :class:`HeadTable` with ``scores`` ``[L, H, len(SCORES)]``, labels and classes.
    """
    from attnscope.lazy import LazyTrace

    if isinstance(trace, LazyTrace):  # streamed over row blocks: O(H·block·T) memory
        return lazy_head_patterns(trace, part)
    require_trace(trace, "head_patterns")
    if part == "cross":
        raise AttnscopeError("Head patterns score self-attention; use part 'self' or 'decoder'.")
    attn, tokens, _ = trace.check(part).part(part)
    if part == "decoder":
        assert trace.decoder_special_mask is not None  # part() checked the decoder is there
        special = trace.decoder_special_mask
        segments = np.zeros(len(tokens), dtype=np.int64)
        causal = True
    else:
        special, segments, causal = trace.special_mask, trace.segment_ids, trace.is_causal
    targets = _targets(tokens, special, causal)
    row_sums = attn.sum(axis=-1)  # (L, H, T): 1 up to rounding
    rows = np.flatnonzero(~np.asarray(special, dtype=bool))
    columns = {name: _mul_score(attn, row_sums, target) for name, target in targets.items()}
    if "induction" not in columns:
        columns["induction"] = np.full(attn.shape[:2], np.nan)
    columns["sink"] = _sink_score(attn, _seen(len(tokens), causal))
    columns["broad"] = _entropy_score(attn, rows, _seen(len(tokens), causal))
    columns["distance"] = _distance_score(attn, rows)
    parts = _kovaleva_parts(attn, row_sums, rows, segments)
    return head_table(trace.model_name, tokens, trace.unit, part, columns, parts,
                      trace.layer_ids, trace.head_ids)


def head_table(model_name: str, tokens: Sequence[str], unit: str, part: str,
               columns: dict[str, np.ndarray], parts: dict[str, np.ndarray],
               layer_ids: tuple[int, ...] | None = None,
               head_ids: tuple[int, ...] | None = None) -> HeadTable:
    """A :class:`HeadTable` from every score ``columns[name]`` ``[L, H]`` and Kovaleva's three
    shares ``parts`` ``[L, H]``: labels and classes follow from them."""
    scores = np.stack([columns[name] for name in SCORES], axis=-1).astype(np.float64)
    mass = np.stack([columns[name] for name in MASS_SCORES], axis=-1)  # (L, H, M)
    labels, label_scores = label_heads(mass, columns["broad"])
    layers, heads = scores.shape[:2]
    classes = np.array([[kovaleva_class(float(parts["diagonal"][la, h]),
                                        float(parts["vertical"][la, h]),
                                        float(parts["block"][la, h]))
                         for h in range(heads)] for la in range(layers)], dtype=object)
    return HeadTable(
        model_name=model_name, tokens=tuple(tokens), unit=unit, part=part,
        scores=scores, labels=labels, label_scores=label_scores,
        classes=classes.astype(str), kovaleva=parts, layer_ids=layer_ids, head_ids=head_ids,
    )


def head_index(table: HeadTable, layer: int, head: int) -> tuple[int, int]:
    """Check a (layer, head) pair against ``table``; negatives count from the end."""
    return (check_index(layer, table.num_layers, "layer"),
            check_index(head, table.num_heads, "head"))


# --- streamed over a LazyTrace: one [H, block, T] block of weights at a time -------------

#: query rows per block when the caller gives none: a block costs H · block · T · 4 bytes.
DEFAULT_BLOCK = 256


def _block_size(block: Any) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise AttnscopeError(f"block must be a whole number of 1 or more, not {block!r}.")
    return int(block)


class _Sums:
    """Running ``[L, H]`` float64 sums, by name, created on first use."""

    def __init__(self, layers: int, heads: int) -> None:
        self.shape = (layers, heads)
        self.values: dict[str, np.ndarray] = {}

    def add(self, name: str, layer: int, value: Any) -> None:
        if name not in self.values:
            self.values[name] = np.zeros(self.shape, np.float64)
        self.values[name][layer] += np.asarray(value, dtype=np.float64)

    def get(self, name: str) -> np.ndarray:
        return self.values.get(name, np.zeros(self.shape, np.float64))


def _ratio(num: np.ndarray, den: np.ndarray | float, defined: bool) -> np.ndarray:
    if not defined:
        return np.full(num.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _stream(lazy: LazyTrace, block: int) -> dict[str, np.ndarray]:
    """One pass over every layer's weights, row block by row block: every head-pattern score,
    Kovaleva's three shares and the layer-trend shares, each ``[L, H]``.

    Each block costs a few passes over its ``[H, r, c]`` weights: the exponential, the row
    sums, the entropy and distance products, and one matrix product for the column sums over
    the scored rows (every column-target score reads those ``[H, c]`` sums). Targets on
    (query, key) pairs are gathered from their index lists.
    """
    import torch

    L, H, T = lazy.num_layers, lazy.num_heads, lazy.num_tokens
    tokens, causal = lazy.tokens, lazy.is_causal
    special = np.asarray(lazy.special_mask, dtype=bool)
    plain = ~special
    segments = np.asarray(lazy.segment_ids)
    punct_cols = np.flatnonzero(np.array([is_punctuation(t) for t in tokens], bool) & plain)
    special_cols = np.flatnonzero(special)
    pair_segments = bool((segments == 0).any() and (segments == 1).any())
    seen = np.arange(1, T + 1) if causal else np.full(T, T)  # keys each query sees
    heads = np.arange(H)
    sums = _Sums(L, H)
    counts = {"sink": 0, "broad": 0, "plain": 0}
    scored: dict[str, int] = {}
    column_mass = np.zeros((L, H, T), np.float64)  # over plain rows, for the vertical share
    with torch.inference_mode():
        for start in range(0, T, block):
            stop = min(start + block, T)
            rows = np.arange(start, stop)
            c = stop if causal else T  # keys past the block's last query are masked: P = 0
            cols = np.arange(c)
            targets = _targets(tokens, special, causal, start, stop)
            plain_local = np.flatnonzero(plain[start:stop])
            sink_local = np.flatnonzero(seen[start:stop] > 1)
            keep_local = plain_local[seen[start:stop][plain_local] > 1]
            counts["sink"] += len(sink_local)
            counts["broad"] += len(keep_local)
            counts["plain"] += len(plain_local)
            for name, target in targets.items():
                scored[name] = scored.get(name, 0) + len(target.rows)
            # the plain rows as weights: one product gives their column sums
            plain_weight = torch.from_numpy(plain[start:stop].astype(np.float32))[None, None]
            q_plain = rows[plain_local]
            gap = np.abs(q_plain[:, None] - cols[None, :])  # (Rp, c)
            diag_q, diag_k = np.nonzero(gap <= 1)
            if pair_segments:
                # own sentence: a product with one column per sentence, then each row's own
                onehot = np.stack([segments[:c] == 0, segments[:c] == 1], -1)  # (c, 2)
                own_onehot = torch.from_numpy(onehot.astype(np.float32))
                own_segment = segments[q_plain]
                own_rows = np.flatnonzero(own_segment >= 0)
            else:
                own_q, own_k = np.nonzero((gap >= 2) & (gap <= 4))
            dist = torch.from_numpy(np.abs(rows[:, None] - cols[None, :]).astype(np.float32))
            log_norm = torch.from_numpy(np.log(seen[rows[keep_local]]).astype(np.float32))
            for layer in range(L):
                logp = lazy._log_weights(layer, heads, rows, cols)  # (H, r, c)
                p = torch.exp(logp)
                row_sums = p.sum(-1, dtype=torch.float64)  # (H, r)
                columns = torch.matmul(plain_weight, p)[:, 0].double()  # (H, c): plain rows
                for name, target in targets.items():
                    if not len(target.rows):
                        continue
                    sums.add(f"{name}.total", layer,
                             row_sums[:, target.rows - start].sum(-1).numpy())
                    if target.cols is not None:  # every such target scores the plain rows
                        kept = target.cols[target.cols < c]
                        hit = columns[:, kept].sum(-1)
                    else:
                        assert target.q is not None and target.k is not None
                        inside = target.k < c
                        hit = p[:, target.q[inside] - start, target.k[inside]].sum(
                            -1, dtype=torch.float64)
                    sums.add(f"{name}.hit", layer, hit.numpy())
                if len(sink_local):
                    sums.add("sink", layer, p[:, sink_local, 0].sum(-1, dtype=torch.float64))
                # per-row entropy and distance over the whole block, then the rows wanted
                # (−Σ P log P from log P itself; 0 · −inf is set to 0 where the model masks)
                entropy = -(p * logp.nan_to_num_(neginf=0.0)).sum(-1)  # (H, r)
                distance = (p * dist).sum(-1, dtype=torch.float64)  # (H, r)
                if len(keep_local):
                    sums.add("broad", layer,
                             (entropy[:, keep_local] / log_norm).sum(-1, dtype=torch.float64))
                if len(plain_local):
                    sums.add("distance", layer, distance[:, plain_local].sum(-1))
                    sums.add("plain.total", layer, row_sums[:, plain_local].sum(-1).numpy())
                    sums.add("diagonal", layer, p[:, plain_local[diag_q], diag_k].sum(
                        -1, dtype=torch.float64))
                    if pair_segments:
                        per_segment = torch.matmul(p[:, plain_local], own_onehot)  # (H, Rp, 2)
                        own = per_segment[:, own_rows, own_segment[own_rows]]
                        sums.add("block", layer, own.sum(-1, dtype=torch.float64))
                    else:
                        sums.add("block", layer, p[:, plain_local[own_q], own_k].sum(
                            -1, dtype=torch.float64))
                    column_mass[layer, :, :c] += columns.numpy()
                    for name, where in (("to_special", special_cols), ("to_punct", punct_cols)):
                        where = where[where < c]
                        sums.add(name, layer, columns[:, where].sum(-1).numpy())
    out: dict[str, np.ndarray] = {}
    for name in MASS_SCORES:
        out[name] = _ratio(sums.get(f"{name}.hit"), sums.get(f"{name}.total"),
                           scored.get(name, 0) > 0)
    out["sink"] = _ratio(sums.get("sink"), counts["sink"], counts["sink"] > 0)
    out["broad"] = _ratio(sums.get("broad"), counts["broad"], counts["broad"] > 0)
    has_plain = counts["plain"] > 0
    out["distance"] = _ratio(sums.get("distance"), counts["plain"], has_plain)
    total = sums.get("plain.total")
    out["diagonal"] = _ratio(sums.get("diagonal"), total, has_plain)
    out["block"] = _ratio(sums.get("block"), total, has_plain)
    k = max(1, math.ceil(T / 10))
    top = np.partition(column_mass, T - k, axis=-1)[..., T - k:].sum(axis=-1)
    out["vertical"] = _ratio(top, total, has_plain)
    out["to_special"] = _ratio(sums.get("to_special"), total, has_plain)
    out["to_punct"] = _ratio(sums.get("to_punct"), total, has_plain)
    return out


def lazy_head_patterns(lazy: LazyTrace, part: str = "self",
                       block: int = DEFAULT_BLOCK) -> HeadTable:
    """:func:`attnscope.head_patterns` of a LazyTrace, streamed over row blocks (memory
    O(H·block·T)); the same table as the eager Trace's, to float rounding."""
    if part == "decoder" and lazy.decoder is not None:
        lazy = lazy.decoder  # the decoder's own tokens, causal
    elif part == "cross":
        raise AttnscopeError("Head patterns score self-attention; use part 'self' or 'decoder'.")
    elif part not in ("self", "encoder"):
        raise AttnscopeError(
            f"This lazy trace holds no {part!r} attention; it holds "
            f"{'self, decoder and cross' if lazy.decoder is not None else 'self-attention'}."
        )
    else:
        part = "self"
    columns = _stream(lazy, _block_size(block))
    parts = {name: columns[name] for name in ("diagonal", "vertical", "block")}
    return head_table(lazy.model_name, lazy.tokens, "token", part,
                      {name: columns[name] for name in SCORES}, parts, lazy.layer_ids,
                      lazy.head_ids)
