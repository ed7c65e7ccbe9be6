"""Every step of attention for one query token, as numbers you can read.

    trace = attnscope.capture(model, "The girl poured water into a tall glass.", qkv=True)
    print(attnscope.explain(trace, layer=0, head=0, query="girl"))

For the chosen query token i and every key token j, an :class:`Explanation` holds the query
vector q_i, each key k_j, their elementwise product q_i ⊙ k_j, its sum q_i · k_j, the scale, any
bias (T5) and mask (causal models), and the softmax over the keys -- beside the row the model
itself returned, which it equals to float rounding.
"""

from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass

import numpy as np

from attnscope.adapters import get_adapter
from attnscope.errors import AttnscopeError, check_count, check_index
from attnscope.models import LoadedModel
from attnscope.readable import token_label, token_labels
from attnscope.trace import Trace

__all__ = ["Explanation", "explain", "find_token"]

# Sub-word markers that tokenizers put on tokens: WordPiece "##", byte-level BPE "Ġ",
# SentencePiece "▁".
_MARKERS = ("##", "Ġ", "▁")


@dataclass(frozen=True, eq=False)
class Explanation:
    """One query's attention, step by step. T_k keys, d = head size.

    Attributes:
        q: the query vector ``[d]`` (after rotary embeddings, for LLaMA).
        keys: every key vector ``[T_k, d]`` (grouped key/value heads already shared out).
        products: ``q * k_j`` elementwise ``[T_k, d]``; each row sums to ``dots[j]``.
        dots: ``q · k_j`` ``[T_k]``.
        scale: the factor on the dot products (1/sqrt(d), or 1.0 for T5).
        scores: ``dots * scale`` ``[T_k]``.
        bias: the position bias added to the scores ``[T_k]`` (T5), or None.
        visible: ``[T_k]`` booleans, False for keys the mask hides (later tokens when causal).
        logits: what the softmax sees ``[T_k]``: scores + bias, hidden keys at -inf.
        weights: softmax over the keys ``[T_k]``; sums to 1.
        model_weights: the model's own attention row ``[T_k]`` from the Trace.
    """

    model_name: str
    part: str
    layer: int
    head: int
    query_index: int
    query_token: str
    key_tokens: tuple[str, ...]
    q: np.ndarray
    keys: np.ndarray
    products: np.ndarray
    dots: np.ndarray
    scale: float
    scores: np.ndarray
    bias: np.ndarray | None
    visible: np.ndarray
    logits: np.ndarray
    weights: np.ndarray
    model_weights: np.ndarray

    @property
    def max_abs_error(self) -> float:
        """Largest |explained softmax - model's attention| over the row."""
        return float(np.max(np.abs(self.weights - self.model_weights)))

    @property
    def head_dim(self) -> int:
        return int(self.q.shape[0])

    def _scale_text(self) -> str:
        root = 1.0 / math.sqrt(self.head_dim)
        if math.isclose(self.scale, root, rel_tol=1e-6):
            return f"1/sqrt({self.head_dim}) = {self.scale:.5f}"
        if self.scale == 1.0:
            return "1 (this model does not scale q·k)"
        return f"{self.scale:.6g}"

    def _title(self) -> str:
        where = {"self": "self attention", "decoder": "decoder self attention",
                 "cross": "cross attention (decoder query, encoder keys)"}[self.part]
        return (f"layer {self.layer}, head {self.head}, query {self.query_index} "
                f"{token_label(self.query_token)!r} -- {where} of {self.model_name}")

    def table(self, dims: int = 4) -> str:
        """The steps as a plain-text table; ``dims``: how many of q ⊙ k's values to show."""
        dims = min(check_count(dims, "dims"), self.head_dim)
        labels = token_labels(self.key_tokens)  # the text each token stands for
        width = max([5, *(len(t) for t in labels)])
        width = min(width, 16)
        lines = [self._title()]
        shown = " ".join(f"{x:+.3f}" for x in self.q[:8])
        more = " ..." if self.head_dim > 8 else ""
        lines.append(f"q = [{shown}{more}]  (d_head = {self.head_dim})")
        formula = "score_j = (q · k_j) × scale"
        if self.bias is not None:
            formula += " + bias_j"
        lines.append(f"{formula};  weight_j = softmax of the scores over the keys j")
        lines.append(f"scale = {self._scale_text()}")
        if not self.visible.all():
            lines.append(f"mask: {int((~self.visible).sum())} later keys are hidden (causal)")
        lines.append("")
        prod_head = f"q⊙k (first {dims} of {self.head_dim})" if dims else ""
        prod_width = max(len(prod_head), dims * 8 + 4) if dims else 0
        header = f"{'pos':>4}  {'key':<{width}}  "
        if dims:
            header += f"{prod_head:<{prod_width}}  "
        header += f"{'q·k':>9}  {'×scale':>9}  "
        if self.bias is not None:
            header += f"{'+bias':>8}  "
        header += f"{'softmax':>8}  {'model':>8}"
        lines.append(header)
        lines.append("-" * len(header))
        for j, token in enumerate(labels):
            name = token if len(token) <= width else token[: width - 1] + "…"
            row = f"{j:>4}  {name:<{width}}  "
            if dims:
                values = " ".join(f"{x:+.3f}" for x in self.products[j, :dims])
                ellipsis = " …" if dims < self.head_dim else ""
                row += f"{'[' + values + ellipsis + ']':<{prod_width}}  "
            row += f"{self.dots[j]:>9.4f}  {self.scores[j]:>9.4f}  "
            if self.bias is not None:
                row += f"{self.bias[j]:>8.4f}  "
            if self.visible[j]:
                row += f"{self.weights[j]:>8.4f}  {self.model_weights[j]:>8.4f}"
            else:
                row += f"{'masked':>8}  {self.model_weights[j]:>8.4f}"
            lines.append(row)
        lines.append("")
        top = int(np.argmax(self.weights))
        lines.append(
            f"softmax sums to {self.weights.sum():.6f} over the keys; the most attended key is "
            f"{top} {labels[top]!r} ({self.weights[top]:.4f}); "
            f"max |softmax - model| = {self.max_abs_error:.1e}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"Explanation(layer={self.layer}, head={self.head}, "
                f"query={self.query_index} {self.query_token!r}, {len(self.key_tokens)} keys)")

    def _repr_html_(self) -> str:
        esc = html.escape
        bias_head = "<th>+bias</th>" if self.bias is not None else ""
        rows = []
        for j, token in enumerate(token_labels(self.key_tokens)):
            products = " ".join(f"{x:+.3f}" for x in self.products[j, :4])
            bias = f"<td>{self.bias[j]:.4f}</td>" if self.bias is not None else ""
            if self.visible[j]:
                weight = (f"<td><span style='display:inline-block;height:0.8em;"
                          f"width:{100 * float(self.weights[j]):.1f}px;background:#4c72b0'>"
                          f"</span> {self.weights[j]:.4f}</td>")
            else:
                weight = "<td>masked</td>"
            rows.append(
                f"<tr><td>{j}</td><td><code>{esc(token)}</code></td>"
                f"<td><code>[{products} …]</code></td><td>{self.dots[j]:.4f}</td>"
                f"<td>{self.scores[j]:.4f}</td>{bias}{weight}"
                f"<td>{self.model_weights[j]:.4f}</td></tr>"
            )
        q_text = " ".join(f"{x:+.3f}" for x in self.q[:8])
        return (
            "<div class='attnscope-explain'>"
            f"<p><b>{esc(self._title())}</b></p>"
            f"<p>q = <code>[{q_text} …]</code> (d_head = {self.head_dim}); "
            f"scale = {esc(self._scale_text())}</p>"
            "<table><thead><tr><th>pos</th><th>key</th><th>q⊙k</th><th>q·k</th>"
            f"<th>×scale</th>{bias_head}<th>softmax</th><th>model</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            f"<p>max |softmax - model| = {self.max_abs_error:.1e}</p></div>"
        )


def _plain(token: str) -> str:
    for marker in _MARKERS:
        token = token.replace(marker, "")
    return token.strip().lower()


def find_token(query: int | str, tokens: tuple[str, ...] | list[str]) -> int:
    """The position of ``query`` in ``tokens``: a position (negatives count from the end) or a
    token string (exact, else ignoring case and sub-word markers such as ``##`` and ``Ġ``).

    Raises:
        AttnscopeError: the token is missing or appears more than once; the message lists the
            tokens with their positions.
    """
    if isinstance(query, numbers.Integral) and not isinstance(query, bool):
        return check_index(int(query), len(tokens), "query position", "query positions")
    if not isinstance(query, str):
        raise AttnscopeError(f"query must be a token position or a token string, not {query!r}.")
    matches = [i for i, t in enumerate(tokens) if t == query]
    if not matches:
        matches = [i for i, t in enumerate(tokens) if _plain(t) == _plain(query)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(f"{i} {t}" for i, t in enumerate(tokens[:80]))
    if len(tokens) > 80:
        listing += f", ... ({len(tokens)} tokens)"
    if not matches:
        raise AttnscopeError(
            f"There is no token {query!r} in this text; pass a position or one of its tokens: "
            f"{listing}."
        )
    where = ", ".join(str(i) for i in matches)
    raise AttnscopeError(
        f"The token {query!r} appears {len(matches)} times (positions {where}); pass its "
        f"position instead: {listing}."
    )


def explain(
    trace: Trace,
    layer: int = 0,
    head: int = 0,
    query: int | str = 0,
    *,
    part: str = "self",
    model: LoadedModel | None = None,
) -> Explanation:
    """Every step of one head's attention for one query token.

    Args:
        trace: a Trace captured with ``qkv=True`` (or any Trace, with ``model``).
        layer, head: which head (negative indices count from the end).
        query: the query token's position, or the token itself (``"girl"``).
        part: "self", or for encoder-decoder models "decoder" or "cross" (these need ``model``).
        model: the model the trace came from; needed when the trace holds no queries and keys.

    Returns:
        An :class:`Explanation`; ``print()`` it for a table, or show it in a notebook.
    """
    from attnscope.scratch import (
        Recomputation,
        layer_scale,
        layer_window,
        recompute,
        relative_position_bias,
        scaled_dot_product_attention,
        stored_position_bias,
    )

    if not isinstance(trace, Trace):
        raise AttnscopeError(
            f"explain takes a Trace from attnscope.capture(model, text, qkv=True), "
            f"not {type(trace).__name__}."
        )
    if trace.unit != "token":
        raise AttnscopeError("explain works on tokens; capture the trace without merge_words.")
    attentions, query_tokens, key_tokens = trace.part(part)
    part = "self" if part == "encoder" else part
    layer = check_index(layer, attentions.shape[0], "layer")
    head = check_index(head, attentions.shape[1], "head")
    qi = find_token(query, query_tokens)

    if part == "self" and trace.queries is not None and trace.keys is not None:
        q = np.array(trace.queries[layer, head, qi])  # (d,)
        keys = np.array(trace.keys[layer, head])  # (T_k, d)
        scale = layer_scale(trace, layer)
        window = layer_window(trace, layer)
        full_bias = stored_position_bias(trace)  # (H, T, T) or None
    elif model is not None:
        adapter = get_adapter(trace.model_type, "queries, keys and explanations")
        r = recompute(trace, layer=layer, model=model, part=part)
        assert isinstance(r, Recomputation)  # one Trace in, one recomputation out
        q, keys = r.queries[head, qi], r.keys[head]  # (d,), (T_k, d)
        params = adapter.attention(model.model, layer, part)
        scale = float(params.scale)
        window = params.sliding_window
        full_bias = None
        if params.position_bias is not None:
            full_bias = relative_position_bias(
                params.position_bias, len(query_tokens), len(key_tokens))
    else:
        raise AttnscopeError(
            "This trace holds no queries and keys: capture it with "
            "attnscope.capture(model, text, qkv=True), or pass model= to explain."
        )

    causal = trace.is_causal if part == "self" else part == "decoder"
    n_keys = len(key_tokens)
    positions = np.arange(n_keys)
    visible = positions <= qi if causal else np.ones(n_keys, dtype=bool)
    if causal and window is not None:
        visible &= positions > qi - window  # a sliding window: only the last `window` keys
    products = (q[None, :] * keys).astype(np.float32)  # (T_k, d): q ⊙ k_j
    dots = keys @ q  # (T_k,): q · k_j
    scores = (dots * np.float32(scale)).astype(np.float32)
    bias = None
    logits = scores.copy()
    if full_bias is not None:
        bias = full_bias[head, qi].cpu().numpy().astype(np.float32)  # (T_k,)
        logits = logits + bias
    logits = np.where(visible, logits, -np.inf).astype(np.float32)
    # The same softmax as the hand-written attention, over the keys of this one row.
    _, weights = scaled_dot_product_attention(
        q[None, :], keys, keys, visible[None, :], False, scale=scale,
        bias=None if bias is None else bias[None, :],
    )
    return Explanation(
        model_name=trace.model_name, part=part, layer=layer, head=head, query_index=qi,
        query_token=query_tokens[qi], key_tokens=tuple(key_tokens), q=q, keys=keys,
        products=products, dots=dots.astype(np.float32), scale=float(scale), scores=scores,
        bias=bias, visible=visible, logits=logits, weights=weights[0].astype(np.float32),
        model_weights=np.array(attentions[layer, head, qi]),
    )
