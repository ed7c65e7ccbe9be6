"""Interactive attention views -- head, model and neuron view -- as self-contained pages.

Each function takes a :class:`~attnscope.Trace` and returns an :class:`AttnView`: it displays
inline in Jupyter, VS Code and Colab, gives its page as ``.html``, saves with
``.save("page.html")``, and exports a static figure with ``.save("view.png")`` (or ``.svg``,
``.pdf``) for papers::

    trace = at.capture(model, "leaves fall in autumn", "autumn is marked by colorful foliage")
    at.head_view(trace)                  # lines between tokens, one colour per head
    at.model_view(trace)                 # every layer x head as a thumbnail
    at.neuron_view(trace)                # q, k, q*k, scores and weights for one query token

The page holds its own script, style and data (see :mod:`attnscope.render.html`); it works
offline and makes no network request.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError, check_index
from attnscope.files import write_text
from attnscope.readable import trace_labels
from attnscope.render import html as page_html
from attnscope.render.static import WEIGHT_STOPS, AttnFigure, _label, model_grid
from attnscope.trace import Trace

__all__ = [
    "HEAD_COLORS",
    "AttnView",
    "all_views",
    "head_lines",
    "head_view",
    "model_view",
    "neuron_figure",
    "neuron_view",
]

#: One colour per head (repeating after 12), shared by the pages and the static figures.
HEAD_COLORS = (
    "#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1", "#9c755f",
    "#edc948", "#76b7b2", "#ff9da7", "#17becf", "#7f7f7f", "#bcbd22",
)
_KINDS = ("head", "model", "neuron", "tokens")
_PART_LABELS = {"self": "Encoder", "decoder": "Decoder", "cross": "Cross (decoder \u2192 encoder)"}
_THEMES = ("light", "dark")
_STATIC = {".png", ".svg", ".pdf"}


class AttnView:
    """An interactive view of one Trace (or several views as tabs of one page).

    ``html`` is the full page; ``_repr_html_`` shows it in a notebook inside a sandboxed
    ``<iframe srcdoc>``; ``save(path)`` writes ``.html``, or a static figure for ``.png``,
    ``.svg`` and ``.pdf``; ``figure()`` returns that static figure.
    """

    def __init__(self, trace: Trace, kinds: Sequence[str], *, layer: int = -1,
                 heads: Sequence[int] | None = None, part: str = "self", head: int = 0,
                 query: int | None = None, theme: str = "light",
                 layer_labels: Sequence[int] | None = None,
                 head_labels: Sequence[int] | None = None, minus: Trace | None = None,
                 exact: bool | None = None) -> None:
        if not isinstance(trace, Trace):
            raise AttnscopeError(
                f"A view needs a Trace from attnscope.capture, not {type(trace).__name__}."
            )
        for kind in kinds:
            if kind not in _KINDS:
                raise AttnscopeError(f"Unknown view {kind!r}: choose from {', '.join(_KINDS)}.")
        if theme not in _THEMES:
            raise AttnscopeError(f"Unknown theme {theme!r}: choose 'light' or 'dark'.")
        attentions, _, _ = trace.part(part)  # raises for a part the trace lacks
        self.trace = trace
        self.kinds = tuple(kinds)
        self.part = "self" if part == "encoder" else part
        self.layer = check_index(layer, attentions.shape[0], "layer")
        self.heads = None if heads is None else sorted(
            {check_index(h, attentions.shape[1], "head") for h in heads})
        self.head = check_index(head, trace.num_heads, "head")
        if query is None:
            plain = np.flatnonzero(~np.asarray(trace.special_mask, dtype=bool))
            query = int(plain[0]) if plain.size else 0
        self.query = check_index(query, trace.num_tokens, "query token", "tokens")
        self.theme = theme
        self.minus = _check_minus(trace, minus, self.part) if minus is not None else None
        self.exact = _check_exact(trace, exact, self.kinds)
        self._layer_labels = list(layer_labels) if layer_labels is not None else None
        self._head_labels = list(head_labels) if head_labels is not None else None
        self._page: str | None = None
        self._root_id: str | None = None
        #: (method, label, per-layer scores ``[L, T, T]``): a context-mixing measure the model
        #: view carries beside raw attention (see :func:`model_view`), or None
        self.mixing: tuple[str, str, np.ndarray] | None = None

    # ----- the page ----------------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        """The data the page script reads (JSON-able; arrays as base64 typed arrays)."""
        return _payload(self)

    @property
    def html(self) -> str:
        """The complete, self-contained HTML page."""
        if self._page is None:
            self._root_id, fragment = page_html.build_fragment(self.payload())
            self._page = page_html.build_page(fragment, _title(self))
        return self._page

    @property
    def data(self) -> str:
        """The page, as IPython's ``HTML(...).data`` (what bertviz's ``html_action='return'``
        gave)."""
        return self.html

    def fragment(self) -> str:
        """A ``<div>`` with its own style and script, for embedding in another page. Each call
        makes a fresh root id, so several fragments can share one document."""
        return page_html.build_fragment(self.payload())[1]

    def _repr_html_(self) -> str:
        return page_html.iframe(self.html, _frame_height(self))

    def __repr__(self) -> str:
        return f"AttnView({'+'.join(self.kinds)}, {self.trace!r})"

    # ----- files -------------------------------------------------------------------------------
    def figure(self) -> AttnFigure:
        """The static equivalent of the first view: head lines, the model grid, or the neuron
        figure (the tokens table has no figure)."""
        kind = self.kinds[0]
        if self.minus is not None:
            raise AttnscopeError("A difference of two traces saves as .html only.")
        if kind == "head":
            return head_lines(self.trace, self.layer, self.heads, part=self.part)
        if kind == "model":
            return model_grid(self.trace, part=self.part)
        if kind == "neuron":
            return neuron_figure(self.trace, self.layer, self.head, self.query)
        raise AttnscopeError("The tokens table has no figure; save it as .html.")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``.html`` (the interactive page) or ``.png``/``.svg``/``.pdf`` (a figure)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in _STATIC | {".html", ".htm"}:
            raise AttnscopeError(
                f"Cannot save a view as '{path.suffix or path.name}': "
                "use .html, .png, .svg or .pdf."
            )
        if suffix in _STATIC:
            if len(self.kinds) > 1:
                raise AttnscopeError(
                    "A page with several views saves as .html; save each view's figure "
                    "separately (at.head_view(trace).save('head.png'))."
                )
            return self.figure().save(path)
        return write_text(path, self.html, what="the page")


# ----- public constructors ---------------------------------------------------------------------

def head_view(trace: Trace, layer: int = -1, heads: Sequence[int] | None = None, *,
              part: str = "self", theme: str = "light", exact: bool | None = None) -> AttnView:
    """Lines from each query token (left) to each key token (right), one colour per head.

    Args:
        trace: from :func:`attnscope.capture`; attention ``[L, H, T, T]``.
        layer: the layer shown first (negative counts from the end); the page can change it.
        heads: heads shown first (default: all); click a head's colour to toggle it,
            double-click to show it alone.
        part: "self", or for encoder-decoder traces "decoder" or "cross" (the page offers all).
        theme: "light" or "dark".
        exact: carry every weight as float16, so that readouts and tooltips show three
            significant digits of the model's own number. None (default): when the attention
            has at most 2**20 weights (12 x 12 heads up to 85 tokens); otherwise the page
            shows its coded values, each within 1.95% and marked "≈".
    """
    return AttnView(trace, ["head"], layer=layer, heads=heads, part=part, theme=theme,
                    exact=exact)


def model_view(trace: Trace, *, part: str = "self", theme: str = "light",
               minus: Trace | None = None, exact: bool | None = None,
               measure: str | None = None, model: Any = None, target: Any = None,
               steps: int = 20) -> AttnView:
    """Every layer x head as a thumbnail (``[L, H]`` grid); click one to open it large.

    With ``minus`` (a Trace of the same model and tokens, e.g. another input of the same
    length), the view shows the signed difference ``trace - minus`` on a diverging scale: red
    where ``trace`` attends more, blue where ``minus`` does. ``exact``: as in
    :func:`head_view`.

    With ``measure`` (a context-mixing method: "value_zeroing", "alti", "norms2", "attattr",
    "grad_rollout") and ``model`` (the LoadedModel of the trace), the page also carries that
    measure's per-layer scores ``[L, T, T]`` (:func:`attnscope.context_mixing`'s ``scores``,
    each row as shares of 1) and its selector switches between raw attention and the measure,
    one thumbnail a layer. ``target`` and ``steps`` go to the gradient methods.
    """
    view = AttnView(trace, ["model"], part=part, theme=theme, minus=minus, exact=exact)
    if measure is not None:
        view.mixing = _mixing_scores(trace, measure, model, target, steps, minus)
    return view


def _mixing_scores(trace: Trace, measure: Any, model: Any, target: Any, steps: int,
                   minus: Trace | None) -> tuple[str, str, np.ndarray]:
    """(method, label, per-layer scores ``[L, T, T]`` as row shares) for :func:`model_view`."""
    from attnscope.analysis.context_mixing import _method, context_mixing
    from attnscope.mixing import MEASURE_NAMES, METHODS

    _method(measure)  # one sentence listing the methods for an unknown name
    if minus is not None:
        raise AttnscopeError("A difference of two traces carries no measure: pass minus= or "
                             "measure=, not both.")
    if not hasattr(model, "lm_model"):
        raise AttnscopeError(
            "measure= needs model=, the LoadedModel the trace was captured with: the measure "
            "runs it again.")
    result = context_mixing(trace, model, measure, target, steps=steps, progress=False)
    scores = np.asarray(result.scores, dtype=np.float64)
    if scores.shape[1] != trace.num_tokens:
        raise AttnscopeError(
            f"{measure} scored {scores.shape[1]} tokens, and this trace has "
            f"{trace.num_tokens} (merged into words?): pass a token-level trace.")
    sums = scores.sum(-1, keepdims=True)
    shares = np.divide(scores, sums, out=np.zeros_like(scores), where=sums > 0)
    label = f"{MEASURE_NAMES[measure]} (per layer)"
    if METHODS[measure].needs_target:  # the other methods' scores do not depend on it
        label += f", target {result.target}"
    return measure, label, shares.astype(np.float32)


def _page_parts(trace: Trace, kinds: Sequence[str]) -> list[str]:
    """The attention parts a page carries: every part for the head and model views."""
    return list(trace.parts) if ("head" in kinds or "model" in kinds) else ["self"]


def _check_exact(trace: Trace, exact: bool | None, kinds: Sequence[str]) -> bool:
    """Whether the page carries float16 copies of the weights (see head_view's ``exact``)."""
    weights = sum(int(np.prod(trace.part(name)[0].shape)) for name in _page_parts(trace, kinds))
    if exact is None:
        return weights <= min(page_html.EXACT_LIMIT, page_html.DENSE_LIMIT)
    if exact and weights > page_html.DENSE_LIMIT:
        raise AttnscopeError(
            f"exact=True needs at most {page_html.DENSE_LIMIT:,} weights on the page, and this "
            f"one has {weights:,}: the page keeps each row's strongest weights only. Leave "
            "exact unset; trace.attentions holds every value."
        )
    return bool(exact)


def _check_minus(trace: Trace, minus: Trace, part: str) -> Trace:
    if not isinstance(minus, Trace):
        raise AttnscopeError(f"minus must be a Trace, not {type(minus).__name__}.")
    mine, theirs = trace.part(part)[0], minus.part(part)[0]
    if mine.shape != theirs.shape:
        raise AttnscopeError(
            f"Cannot subtract attention of shape {tuple(theirs.shape)} from "
            f"{tuple(mine.shape)}: the two traces need the same layers, heads and length."
        )
    return minus


def neuron_view(trace: Trace, layer: int = -1, head: int = 0, query: int | None = None, *,
                theme: str = "light", exact: bool | None = None) -> AttnView:
    """How one head's weights arise for one query token, from the Trace's queries and keys.

    Shows the query vector ``q`` ``[d_head]``, each key vector ``k_j`` and the product
    ``q * k_j`` as colour strips, the score ``q . k_j * scale`` and the model's attention
    weight (``trace.attentions``). Needs ``trace.queries`` and ``trace.keys``
    ``[L, H, T, d_head]``; without them the page says how to capture them. ``query`` defaults
    to the first token that is not special.
    """
    return AttnView(trace, ["neuron"], layer=layer, head=head, query=query, theme=theme,
                    exact=exact)


def all_views(trace: Trace, *, layer: int = -1, theme: str = "light",
              exact: bool | None = None) -> AttnView:
    """One page with the head, model and neuron views and the tokens table, as tabs
    (``exact``: as in :func:`head_view`)."""
    return AttnView(trace, list(_KINDS), layer=layer, theme=theme, exact=exact)


# ----- payload ---------------------------------------------------------------------------------

def _payload(view: AttnView) -> dict[str, Any]:
    trace = view.trace
    kinds = view.kinds
    part_names = _page_parts(trace, kinds)
    if view.minus is not None:
        part_names = [view.part]
    parts = []
    for name in part_names:
        attentions, _, _ = trace.part(name)
        if view.minus is not None:  # (L, H, Tq, Tk), signed
            attentions = np.asarray(attentions, np.float32) - view.minus.part(name)[0]
        layers, heads = attentions.shape[:2]
        causal = bool(name == "decoder" or (name == "self" and trace.is_causal))
        parts.append({
            "name": name,
            "label": _PART_LABELS[name] if len(trace.parts) > 1 else "Attention",
            "rows": "decoder" if name in ("decoder", "cross") else "self",
            "cols": "decoder" if name == "decoder" else "self",
            # decoder self-attention is always causal; a decoder-only model's too
            "causal": causal,
            # the model's own layer and head numbers (a capture with layers= / heads= holds
            # some of them only)
            "layers": view._layer_labels or list(trace.layer_ids or range(layers)),
            "heads": view._head_labels or list(trace.head_ids or range(heads)),
            "att": (page_html.encode_signed(attentions, exact=view.exact)
                    if view.minus is not None
                    else page_html.encode_attention(attentions, causal=causal,
                                                    exact=view.exact)),
        })
    if view.mixing is not None:  # one "head" a layer: the measure's scores
        method, label, scores = view.mixing
        causal = bool(trace.is_causal)
        parts[0]["label"] = ("Raw attention" if len(parts) == 1 else parts[0]["label"])
        parts.append({
            "name": "mixing", "label": label, "measure": method, "rows": "self",
            "cols": "self", "causal": causal,
            "layers": view._layer_labels or list(range(scores.shape[0])), "heads": [0],
            "att": page_html.encode_attention(scores[:, None], causal=causal,
                                              exact=view.exact),
        })
    # The page shows labels, the text each token stands for; the Trace keeps the raw tokens.
    tokens = {"self": trace_labels(trace)[0]}
    special = {"self": [int(s) for s in np.asarray(trace.special_mask, dtype=bool)]}
    if trace.decoder_tokens is not None:
        tokens["decoder"] = trace_labels(trace, "decoder")[0]
        mask = trace.decoder_special_mask
        special["decoder"] = ([int(s) for s in np.asarray(mask, dtype=bool)] if mask is not None
                              else [0] * len(trace.decoder_tokens))
    payload: dict[str, Any] = {
        "title": trace.model_name + (
            "" if view.minus is None else f": \u201c{_short(trace.text)}\u201d minus "
            f"\u201c{_short(view.minus.text)}\u201d"),
        "subtitle": _subtitle(trace),
        "kinds": list(kinds),
        "theme": view.theme,
        "colors": list(HEAD_COLORS),
        "ramp": [list(map(list, WEIGHT_STOPS[theme])) for theme in ("light", "dark")],
        "sentence_b_start": trace.sentence_b_start,
        "tokens": tokens,
        "special": special,
        "parts": parts,
        "initial": {"part": view.part, "layer": view.layer, "heads": view.heads,
                    "head": view.head, "query": view.query},
        "qk": None,
        "qk_missing": _qk_missing_sentence(),
        "token_table": _token_table(trace) if "tokens" in kinds else [],
    }
    if "neuron" in kinds and trace.queries is not None and trace.keys is not None:
        queries, keys, scales = _queries_keys(trace)
        d = queries.shape[-1]
        payload["qk"] = {
            "q": page_html.encode_float16(queries),
            "k": page_html.encode_float16(keys),
            "scales": scales,
            "scale_texts": [_scale_text(s, d) for s in scales],
        }
    return payload


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _queries_keys(trace: Trace) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Queries and keys ``[L, H, T, d_head]`` (grouped key heads repeated to match the query
    heads) and, per layer, the factor the scores q.k are multiplied by (``trace.extra``'s
    "attention_scales" or "attention_scale", else 1/sqrt(d_head))."""
    queries = np.asarray(trace.queries, dtype=np.float32)
    keys = np.asarray(trace.keys, dtype=np.float32)
    n_q, n_k = queries.shape[1], keys.shape[1]
    if n_k != n_q:
        if n_q % n_k:
            raise AttnscopeError(
                f"This trace has {n_q} query heads but {n_k} key heads, which do not divide."
            )
        # (L, H, T, d_head): each key head serves a group of query heads
        keys = np.repeat(keys, n_q // n_k, axis=1)
    layers, d = queries.shape[0], queries.shape[-1]
    scales = trace.extra.get("attention_scales")
    if not scales or len(scales) != layers:
        scales = [trace.extra.get("attention_scale", 1.0 / math.sqrt(d))] * layers
    return queries, keys, [float(s) for s in scales]


def _scale_text(scale: float, d: int) -> str:
    if math.isclose(scale, 1.0 / math.sqrt(d), rel_tol=1e-4):
        return f"scale = 1/\u221a{d} = {scale:.4g}"
    return f"scale = {scale:.4g}"


def _qk_missing_sentence() -> str:
    from attnscope.capture import capture

    if "qkv" in inspect.signature(capture).parameters:
        return ("This trace has no query and key vectors: capture it with "
                "attnscope.capture(model, text, qkv=True) to see them here.")
    return ("This trace has no query and key vectors, so the neuron view has nothing to show; "
            "a trace that holds trace.queries and trace.keys shows them here.")


def _token_table(trace: Trace) -> list[list[Any]]:
    names = {0: "A", 1: "B"} if trace.text_b is not None and trace.decoder_tokens is None else {
        0: "", 1: ""}
    rows = []
    for i, tok in enumerate(trace.tokens):
        seg = int(trace.segment_ids[i]) if i < len(trace.segment_ids) else -1
        rows.append([i, tok, names.get(seg, ""), bool(trace.special_mask[i])])
    if trace.decoder_tokens is not None:
        mask = trace.decoder_special_mask
        for i, tok in enumerate(trace.decoder_tokens):
            rows.append([i, tok, "decoder", bool(mask[i]) if mask is not None else False])
    return rows


def _subtitle(trace: Trace) -> str:
    shape = (f"{trace.num_layers} layers \u00d7 {trace.num_heads} heads, "
             f"{trace.num_tokens} {trace.unit}s")
    kind = {"decoder": "causal", "encoder-decoder": "encoder-decoder"}.get(trace.architecture, "")
    return f"{shape}{', ' + kind if kind else ''}"


def _title(view: AttnView) -> str:
    names = {"head": "head view", "model": "model view", "neuron": "neuron view",
             "tokens": "tokens"}
    return f"attnscope {', '.join(names[k] for k in view.kinds)}: {view.trace.model_name}"


def _frame_height(view: AttnView) -> int:
    kind = view.kinds[0]
    attentions, rows, cols = view.trace.part(view.part)
    n = max(len(rows), len(cols))
    if len(view.kinds) > 1:
        return 900
    if kind == "head":
        return int(min(900, 170 + n * (20 if n <= 64 else 16)))
    if kind == "model":
        return int(min(900, 260 + attentions.shape[0] * 70))
    return int(min(900, 230 + n * 16))


# ----- static figures --------------------------------------------------------------------------

def head_lines(trace: Trace, layer: int = -1, heads: Sequence[int] | None = None, *,
               part: str = "self", min_weight: float = 0.01) -> AttnFigure:
    """The head view as a static figure: query tokens left, key tokens right, a line per pair
    whose opacity is the weight (one colour per head; lines under ``min_weight`` left out)."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba

    attentions, rows, cols = trace.part(part)
    layer = check_index(layer, attentions.shape[0], "layer")
    chosen = (range(attentions.shape[1]) if heads is None
              else sorted({check_index(h, attentions.shape[1], "head") for h in heads}))
    n = max(len(rows), len(cols))
    height = min(40.0, max(3.0, 0.24 * n + 1.2))
    fig = AttnFigure(figsize=(6.0, height), layout="constrained")
    ax = fig.add_subplot()
    y_rows = np.arange(len(rows))
    y_cols = np.arange(len(cols))
    for h in chosen:
        weights = attentions[layer, h]  # (T_query, T_key)
        qi, kj = np.nonzero(weights >= min_weight)
        if qi.size == 0:
            continue
        segments = np.stack([np.stack([np.zeros(qi.size), y_rows[qi]], axis=1),
                             np.stack([np.ones(qi.size), y_cols[kj]], axis=1)], axis=1)  # (N, 2, 2)
        colours = np.tile(to_rgba(HEAD_COLORS[h % len(HEAD_COLORS)]), (qi.size, 1))  # (N, 4)
        colours[:, 3] = np.clip(weights[qi, kj], 0.0, 1.0)
        ax.add_collection(LineCollection(list(segments), colors=colours, linewidths=1.5))
    fontsize = 9 if n <= 40 else 6
    step = max(1, math.ceil(n / 120))
    for i in range(0, len(rows), step):
        ax.text(-0.03, i, _label(rows[i]), ha="right", va="center", fontsize=fontsize,
                parse_math=False)
    for j in range(0, len(cols), step):
        ax.text(1.03, j, _label(cols[j]), ha="left", va="center", fontsize=fontsize,
                parse_math=False)
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_axis_off()
    shown = "all heads" if heads is None else "heads " + ", ".join(str(h) for h in chosen)
    part_name = "" if len(trace.parts) == 1 else f"{part} "
    ax.set_title(f"{trace.model_name}\n{part_name}layer {layer}, {shown}", fontsize=10)
    return fig


def neuron_figure(trace: Trace, layer: int = -1, head: int = 0,
                  query: int | None = None) -> AttnFigure:
    """The neuron view as a static figure for one query token: ``q`` ``[d_head]``, the keys
    ``[T, d_head]``, ``q * k`` ``[T, d_head]``, the scores ``q . k * scale`` ``[T]`` and the
    model's attention weights ``[T]``."""
    if trace.queries is None or trace.keys is None:
        raise AttnscopeError(_qk_missing_sentence())
    layer = check_index(layer, trace.num_layers, "layer")
    head = check_index(head, trace.num_heads, "head")
    if query is None:
        plain = np.flatnonzero(~np.asarray(trace.special_mask, dtype=bool))
        query = int(plain[0]) if plain.size else 0
    query = check_index(query, trace.num_tokens, "query token", "tokens")
    queries, keys, scales = _queries_keys(trace)
    scale = scales[layer]
    q = queries[layer, head, query]  # (d_head,)
    k = keys[layer, head]  # (T, d_head)
    product = k * q[None, :]  # (T, d_head)
    scores = product.sum(axis=1) * scale  # (T,)
    weights = trace.attentions[layer, head, query]  # (T,)
    if trace.is_causal:
        scores = np.where(np.arange(len(scores)) > query, np.nan, scores)
    n = trace.num_tokens
    fig = AttnFigure(figsize=(12.0, min(40.0, max(3.5, 0.22 * n + 1.8))), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[1, max(2, n)], width_ratios=[3, 3, 1.3, 1.3])
    labels = [_label(t) for t in trace.tokens]
    fontsize = 8 if n <= 40 else 5
    step = max(1, math.ceil(n / 120))

    def strip(ax: Any, values: np.ndarray, limit: float, title: str) -> None:
        ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])

    q_limit = float(np.abs(q).max()) or 1.0
    for col in (0, 1):
        ax = fig.add_subplot(grid[0, col])
        strip(ax, q[None, :], q_limit, f"query q: {labels[query]}" if col == 0 else "q")
        ax.set_yticks([])
    ax_k = fig.add_subplot(grid[1, 0])
    strip(ax_k, k, float(np.abs(k).max()) or 1.0, "keys k")
    ax_k.set_yticks(range(0, n, step), labels=labels[::step], fontsize=fontsize, parse_math=False)
    ax_p = fig.add_subplot(grid[1, 1], sharey=ax_k)
    strip(ax_p, product, float(np.abs(product).max()) or 1.0, "q \u2299 k")
    ax_p.tick_params(labelleft=False)
    ax_s = fig.add_subplot(grid[1, 2], sharey=ax_k)
    ax_s.barh(np.arange(n), np.nan_to_num(scores), color="#888")
    ax_s.set_title("q\u00b7k \u00d7 scale", fontsize=9)
    ax_s.tick_params(labelleft=False, labelsize=7)
    ax_w = fig.add_subplot(grid[1, 3], sharey=ax_k)
    ax_w.barh(np.arange(n), weights, color="#2171b5")
    ax_w.set_xlim(0, 1)
    ax_w.set_title("attention", fontsize=9)
    ax_w.tick_params(labelleft=False, labelsize=7)
    ax_k.set_ylim(n - 0.5, -0.5)
    fig.suptitle(f"{trace.model_name}: layer {layer}, head {head}, query {query} "
                 f"({_scale_text(scale, q.shape[0])})", fontsize=10)
    return fig
