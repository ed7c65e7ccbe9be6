"""bertviz-compatible ``head_view`` and ``model_view``: switch a notebook by changing its import.

    # from bertviz import head_view, model_view
    from attnscope.compat import head_view, model_view

    outputs = model(inputs, output_attentions=True)
    head_view(outputs.attentions, tokens, sentence_b_start)   # shows the view inline

The arguments are bertviz's: ``attention`` is a tuple (one entry per layer) of tensors
``[1, H, T, T]``, torch or numpy; encoder-decoder models pass ``encoder_attention``,
``decoder_attention`` and ``cross_attention`` (``[1, H, T_dec, T_enc]`` per layer) with
``encoder_tokens`` and ``decoder_tokens``. The pages are attnscope's: offline, compact, drawn
on canvas.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError, check_index
from attnscope.render.views import AttnView
from attnscope.trace import SPECIAL_TOKENS, Trace, attention_array

__all__ = ["head_view", "model_view"]


def head_view(
    attention: Any = None,
    tokens: Sequence[str] | None = None,
    sentence_b_start: int | None = None,
    prettify_tokens: bool = True,
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    encoder_attention: Any = None,
    decoder_attention: Any = None,
    cross_attention: Any = None,
    encoder_tokens: Sequence[str] | None = None,
    decoder_tokens: Sequence[str] | None = None,
    include_layers: Sequence[int] | None = None,
    html_action: str = "view",
) -> AttnView | None:
    """bertviz's ``head_view``: lines between tokens for one layer, one colour per head.

    ``layer`` and ``heads`` choose what shows first (numbered as in the model, also with
    ``include_layers``). With ``html_action="view"`` the view is displayed in the running
    notebook and None is returned (outside a notebook the view is returned); with
    ``"return"`` it is returned (it has ``.html``, ``.data`` and ``.save``).
    """
    trace, layers, _ = _trace(attention, tokens, sentence_b_start, prettify_tokens,
                              encoder_attention, decoder_attention, cross_attention,
                              encoder_tokens, decoder_tokens, include_layers, None)
    start = 0 if layer is None else _position(layer, layers, "layer")
    heads = _as_list(heads, "heads", "head numbers")
    view = AttnView(trace, ["head"], layer=start, heads=heads, layer_labels=layers)
    return _act(view, html_action)


def model_view(
    attention: Any = None,
    tokens: Sequence[str] | None = None,
    sentence_b_start: int | None = None,
    prettify_tokens: bool = True,
    display_mode: str = "dark",
    encoder_attention: Any = None,
    decoder_attention: Any = None,
    cross_attention: Any = None,
    encoder_tokens: Sequence[str] | None = None,
    decoder_tokens: Sequence[str] | None = None,
    include_layers: Sequence[int] | None = None,
    include_heads: Sequence[int] | None = None,
    html_action: str = "view",
) -> AttnView | None:
    """bertviz's ``model_view``: every layer x head as a thumbnail; click one to open it.

    ``display_mode`` is "dark" (bertviz's default) or "light"; ``include_layers`` and
    ``include_heads`` keep only those layers and heads. ``html_action`` as in
    :func:`head_view`.
    """
    trace, layers, head_labels = _trace(attention, tokens, sentence_b_start, prettify_tokens,
                                        encoder_attention, decoder_attention, cross_attention,
                                        encoder_tokens, decoder_tokens, include_layers,
                                        include_heads)
    view = AttnView(trace, ["model"], theme=display_mode, layer_labels=layers,
                    head_labels=head_labels)
    return _act(view, html_action)


# ----- conversion ------------------------------------------------------------------------------

def _stack(attention: Any, what: str) -> np.ndarray:
    """bertviz's per-layer tuple of ``[1, H, Tq, Tk]`` (torch or numpy) as float32
    ``[L, H, Tq, Tk]`` (any shape :func:`attention_array` takes passes too)."""
    if isinstance(attention, (tuple, list)) and not attention:
        # bertviz's notebooks take outputs[-1], which under transformers 5 is an encoder's
        # empty cross_attentions (and a model on SDPA attention returns no weights at all).
        raise AttnscopeError(
            f"{what} is empty: pass outputs.attentions (one [1, heads, tokens, tokens] per "
            "layer), not outputs[-1], which is an empty cross_attentions under transformers "
            "5; if outputs.attentions is empty too, load the model with "
            "attn_implementation=\"eager\" and call it with output_attentions=True."
        )
    stacked = attention_array(attention, what)
    if stacked.shape[1] == 0:
        raise AttnscopeError(f"{what} holds no heads: each layer must be [1, heads, ...].")
    return stacked


def _as_list(values: Any, what: str, items: str) -> list[Any] | None:
    """``values`` (None, or any iterable but a string) as a list, or one sentence."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise AttnscopeError(f"{what} must be a list of {items}, not {type(values).__name__}.")
    return list(values)


def _pretty(tokens: Sequence[str], prettify: bool, what: str = "tokens") -> list[str]:
    listed = _as_list(tokens, what, "strings (one per token)")
    tokens = [str(t) for t in listed or []]
    if not tokens:
        raise AttnscopeError(f"{what} is empty: the attention needs at least one token.")
    if not prettify:
        return tokens
    # GPT-2/RoBERTa mark a leading space with "Ġ", SentencePiece with "▁".
    marks = {"\u0120": " ", "\u2581": " ", "\u010a": "\\n"}
    return ["".join(marks.get(ch, ch) for ch in t) for t in tokens]


def _trace(attention: Any, tokens: Any, sentence_b_start: int | None, prettify: bool,
           encoder_attention: Any, decoder_attention: Any, cross_attention: Any,
           encoder_tokens: Any, decoder_tokens: Any, include_layers: Sequence[int] | None,
           include_heads: Sequence[int] | None) -> tuple[Trace, list[int], list[int] | None]:
    """A Trace built from bertviz's arguments (through :meth:`Trace.from_attentions`), the layer
    numbers it keeps and the head numbers it keeps (None: all)."""
    if attention is not None:
        if tokens is None:
            raise AttnscopeError(
                "Pass the tokens with the attention: head_view(attention, tokens)."
            )
        att = _stack(attention, "attention")
        toks = _pretty(tokens, prettify)
        dec = None
    else:
        if encoder_attention is None or encoder_tokens is None:
            raise AttnscopeError(
                "Pass attention and tokens, or encoder_attention with encoder_tokens (and for "
                "the decoder, decoder_attention, cross_attention and decoder_tokens)."
            )
        att = _stack(encoder_attention, "encoder_attention")
        toks = _pretty(encoder_tokens, prettify, "encoder_tokens")
        dec = None
        if decoder_attention is not None or cross_attention is not None:
            if decoder_attention is None or cross_attention is None or decoder_tokens is None:
                raise AttnscopeError(
                    "Pass decoder_attention, cross_attention and decoder_tokens together."
                )
            dec = (_stack(decoder_attention, "decoder_attention"),
                   _stack(cross_attention, "cross_attention"),
                   _pretty(decoder_tokens, prettify, "decoder_tokens"))
    n = len(toks)
    if att.shape[2:] != (n, n):
        raise AttnscopeError(
            f"The attention covers {att.shape[2]} tokens but {n} tokens were given."
        )
    if sentence_b_start is not None:  # negative positions count from the end
        sentence_b_start = check_index(sentence_b_start, n, "sentence_b_start", "token positions")
    layers = list(range(att.shape[0]))
    include_layers = _as_list(include_layers, "include_layers", "layer numbers")
    include_heads = _as_list(include_heads, "include_heads", "head numbers")
    if include_layers is not None:
        layers = sorted({check_index(i, att.shape[0], "layer") for i in include_layers})
        att = att[layers]  # (L_kept, H, T, T)
    keep = None
    if include_heads is not None:
        keep = sorted({check_index(h, att.shape[1], "head") for h in include_heads})
        att = att[:, keep]  # (L, H_kept, T, T)
    # the same checks and token facts as any attention from elsewhere
    trace = Trace.from_attentions(att, toks, sentence_b_start=sentence_b_start,
                                  causal=None if dec is None else False)
    if dec is not None:
        dec_att, cross_att, dec_toks = dec
        m = len(dec_toks)
        if dec_att.shape[2:] != (m, m) or cross_att.shape[2:] != (m, n):
            raise AttnscopeError(
                f"decoder_attention must be [1, H, {m}, {m}] and cross_attention [1, H, {m}, {n}] "
                f"per layer for {m} decoder and {n} encoder tokens."
            )
        if dec_att.shape[:2] != cross_att.shape[:2]:
            raise AttnscopeError(
                f"decoder_attention and cross_attention must have the same layers and heads, "
                f"not {dec_att.shape[0]} x {dec_att.shape[1]} and "
                f"{cross_att.shape[0]} x {cross_att.shape[1]}."
            )
        if include_layers is not None:
            for i in layers:
                check_index(i, dec_att.shape[0], "decoder layer")
            dec_att, cross_att = dec_att[layers], cross_att[layers]  # (L_kept, H, ., .)
        if keep is not None:  # the same heads of every part, numbered as in the model
            for h in keep:
                check_index(h, min(dec_att.shape[1], cross_att.shape[1]), "head")
            dec_att, cross_att = dec_att[:, keep], cross_att[:, keep]  # (L, H_kept, ., .)
        trace = trace.replace(
            architecture="encoder-decoder", decoder_tokens=dec_toks,
            decoder_special_mask=np.array([t.strip() in SPECIAL_TOKENS for t in dec_toks]),
            decoder_attentions=dec_att, cross_attentions=cross_att,
        )
    for part in trace.parts:  # NaN, negative or unnormalised weights: one sentence, no view
        trace.check(part)
    return trace, layers, keep


def _position(layer: int, layers: list[int], what: str) -> int:
    """Where model layer number ``layer`` sits among the kept ``layers``."""
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise AttnscopeError(f"{what} must be a whole number, not {layer!r}.")
    if layer in layers:
        return layers.index(layer)
    if layer < 0 and -len(layers) <= layer:
        return layer % len(layers)
    raise AttnscopeError(f"{what} {layer} is not shown: the view holds layers {layers}.")


def _act(view: AttnView, html_action: str) -> AttnView | None:
    if html_action == "return":
        return view
    if html_action != "view":
        raise AttnscopeError(f"html_action must be 'view' or 'return', not {html_action!r}.")
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return view
    if get_ipython() is None:
        return view
    display(view)
    return None
