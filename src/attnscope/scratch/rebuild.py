"""Rebuild a real model's attention layer with the hand-written code, and compare.

:func:`recompute` takes the hidden states that entered a layer (from a Trace, captured for you
when given a text), normalises them where the family normalises before attention, runs them
through :class:`~attnscope.scratch.attention.MultiHeadAttention` holding that layer's own weights,
and returns the weights beside the ones the model itself returned.

Shapes: B texts, T tokens (T_q queries, T_k keys), D hidden size, H heads of size d.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnscope.adapters.base import RelativePositionBias
from attnscope.adapters.positions import relative_position_bias
from attnscope.capture import capture_batch
from attnscope.errors import AttnscopeError, check_index
from attnscope.models import LoadedModel
from attnscope.scratch.attention import (
    MultiHeadAttention,
    _adapter_and_layer,
    scaled_dot_product_attention,
)
from attnscope.trace import Trace

__all__ = ["Recomputation", "layer_scale", "layer_window", "recompute", "stored_position_bias"]


@dataclass(frozen=True, eq=False)
class Recomputation:
    """One layer's attention rebuilt by hand, beside what the model itself returned.

    Attributes:
        part: "self", "decoder" or "cross". layer: the layer index.
        attentions: float32 ``[H, T_q, T_k]``, from the hand-written code.
        expected: float32 ``[H, T_q, T_k]``, the model's ``output_attentions`` from the Trace.
        queries: ``[H, T_q, d]`` (post-rotary); keys, values: ``[H, T_k, d]`` (repeated to H heads).
        output: ``[T_q, D]``, the attention block's output after the output projection (None when
            rebuilt from a Trace's stored q/k/v without the model's weights).
        query_tokens, key_tokens: the tokens of the rows and of the columns.
    """

    part: str
    layer: int
    attentions: np.ndarray
    expected: np.ndarray
    queries: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    output: np.ndarray | None
    query_tokens: tuple[str, ...]
    key_tokens: tuple[str, ...]

    @property
    def max_abs_error(self) -> float:
        """Largest |hand-written - model| over every head, query and key."""
        return float(np.max(np.abs(self.attentions - self.expected)))

    def __repr__(self) -> str:
        H, T_q, T_k = self.attentions.shape
        return (
            f"Recomputation(part={self.part!r}, layer={self.layer}, {H} heads x {T_q} x {T_k}, "
            f"max_abs_error={self.max_abs_error:.2e})"
        )


def recompute(
    source: LoadedModel | Trace | Sequence[Trace],
    text: str | Sequence[str] | int | None = None,
    layer: int = 0,
    *,
    model: LoadedModel | None = None,
    part: str = "self",
    text_b: str | Sequence[str | None] | None = None,
) -> Recomputation | list[Recomputation]:
    """Rebuild one layer's attention with the hand-written code and the model's own weights.

    The layer's input is the hidden state that entered it (``trace.hidden_states[layer]``),
    normalised first where the family normalises before attention (GPT-2, LLaMA, T5).

    Call it as:

    * ``recompute(model, "a text", layer)``: capture, then rebuild;
    * ``recompute(model, ["a text", "a longer text"], layer)``: the texts run as one batch,
      padded on the right, through the hand-written code with a padding mask; one
      :class:`Recomputation` per text;
    * ``recompute(trace, layer=..., model=model)``: from a Trace you already have;
    * ``recompute(trace, layer=...)`` on a Trace captured with ``qkv=True``: from its stored
      queries, keys and values (``output`` is then None).

    Args:
        part: "self" (the encoder of T5/BART), "decoder" or "cross" for encoder-decoder models.
        text_b: the second sentence, or the decoder's text for T5/BART (one per text).

    Returns:
        A :class:`Recomputation` (a list of them for a list of texts or Traces).
    """
    if isinstance(source, Trace) or (
        isinstance(source, Sequence) and not isinstance(source, str)
        and all(isinstance(t, Trace) for t in source)
    ):
        if isinstance(text, int) and not isinstance(text, bool):
            layer = text  # recompute(trace, 2): the second argument is the layer
        elif text is not None:
            raise AttnscopeError("recompute(trace, ...) takes no text: the Trace holds it.")
        single = isinstance(source, Trace)
        traces: list[Trace] = [source] if isinstance(source, Trace) else list(source)
        if not traces:
            raise AttnscopeError("recompute needs at least one Trace.")
        if model is None:
            if part != "self" or traces[0].queries is None:
                raise AttnscopeError(
                    "recompute needs the model's weights for this: pass model=attnscope.load(...),"
                    " or capture the trace with qkv=True."
                )
            results = [_from_stored_qkv(t, layer) for t in traces]
        else:
            results = _from_hidden_states(model, traces, layer, part)
        return results[0] if single else results

    if not isinstance(source, LoadedModel):
        raise AttnscopeError(
            "recompute takes a model from attnscope.load() with a text, or a Trace; "
            f"got {type(source).__name__}."
        )
    if text is None or isinstance(text, int):
        raise AttnscopeError("recompute(model, text, layer) needs a text (or a list of texts).")
    single = isinstance(text, str)
    texts: list[str] = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise AttnscopeError("recompute needs at least one text.")
    texts_b = None
    if text_b is not None:
        texts_b = [text_b] if isinstance(text_b, str) else list(text_b)
    traces = capture_batch(source, texts, texts_b, batch_size=max(1, len(texts)),
                           attention="eager")
    results = _from_hidden_states(source, traces, layer, part)
    return results[0] if single else results


def _pad(arrays: list[np.ndarray], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[T_b, D]`` arrays into ``[B, T_max, D]`` (zeros after each) and a mask
    ``[B, T_max]`` (1 for real tokens), padded on the right as capture pads."""
    longest = max(a.shape[0] for a in arrays)
    batch = np.zeros((len(arrays), longest, arrays[0].shape[-1]), dtype=np.float32)
    mask = np.zeros((len(arrays), longest), dtype=np.int64)
    for b, a in enumerate(arrays):
        batch[b, : a.shape[0]] = a
        mask[b, : a.shape[0]] = 1
    return torch.from_numpy(batch).to(device), torch.from_numpy(mask).to(device)


@torch.no_grad()
def _from_hidden_states(
    model: LoadedModel, traces: list[Trace], layer: int, part: str
) -> list[Recomputation]:
    """Rebuild ``layer`` of ``part`` for every trace at once, as one right-padded batch."""
    if part == "encoder":
        part = "self"
    adapter, layer = _adapter_and_layer(model, layer, part)
    base = model.model
    device = model.device
    for t in traces:
        if t.model_type != model.model_type or t.num_layers != model.num_layers:
            raise AttnscopeError(
                f"This trace comes from {t.model_name!r}, not from {model.name!r}: pass the model "
                "it was captured with."
            )
        if t.unit != "token":
            raise AttnscopeError("recompute needs a token-level Trace, not one merged into words.")
    # The hidden states entering the layer: the encoder's (or only) stack, or the decoder's.
    inputs = []
    for t in traces:
        states = t.hidden_states if part == "self" else t.decoder_hidden_states
        if states is None:
            raise AttnscopeError(f"This trace has no {part} hidden states to rebuild from.")
        inputs.append(states[layer])
    x, x_mask = _pad(inputs, device)  # (B, T, D), (B, T): 1 for real tokens, 0 for padding
    context, c_mask = None, x_mask  # self attention: keys and values come from x too
    norm = adapter.pre_norm(base, layer, "decoder" if part == "cross" else part)
    attn_in = norm(x) if norm is not None else x
    if part == "cross":
        # Cross attention reads the decoder layer *after* its self-attention sub-block: run that
        # by hand first (output projection, residual and norms included).
        self_attn = MultiHeadAttention.from_params(adapter.attention(base, layer, "decoder"))
        self_out, _, _ = self_attn.attend(attn_in, None, x_mask)
        hidden = adapter.after_self_attention(base, layer, x, self_out)
        cross_norm = adapter.pre_norm(base, layer, "cross")
        attn_in = cross_norm(hidden) if cross_norm is not None else hidden
        context, c_mask = _pad([t.hidden_states[-1] for t in traces], device)  # encoder output
    mha = MultiHeadAttention.from_params(adapter.attention(base, layer, part))
    output, weights, (q, k, v) = mha.attend(attn_in, context, c_mask)

    results = []
    for b, t in enumerate(traces):
        expected, q_tokens, k_tokens = t.part(part)
        n_q, n_k = len(q_tokens), len(k_tokens)
        results.append(Recomputation(
            part=part, layer=layer,
            attentions=weights[b, :, :n_q, :n_k].float().cpu().numpy(),
            expected=np.asarray(expected[layer]),
            queries=q[b, :, :n_q].float().cpu().numpy(),
            keys=k[b, :, :n_k].float().cpu().numpy(),
            values=v[b, :, :n_k].float().cpu().numpy(),
            output=output[b, :n_q].float().cpu().numpy(),
            query_tokens=q_tokens, key_tokens=k_tokens,
        ))
    return results


def _from_stored_qkv(trace: Trace, layer: int) -> Recomputation:
    """Steps 4-6 only, from the queries and keys a ``qkv=True`` capture stored."""
    assert trace.queries is not None and trace.keys is not None and trace.values is not None
    layer = check_index(layer, trace.num_layers, "layer")
    q = torch.from_numpy(np.array(trace.queries[layer]))  # (H, T, d)
    k = torch.from_numpy(np.array(trace.keys[layer]))  # (H, T, d)
    v = torch.from_numpy(np.array(trace.values[layer]))  # (H, T, d)
    _, weights = scaled_dot_product_attention(
        q, k, v, None, trace.is_causal, scale=layer_scale(trace, layer),
        bias=stored_position_bias(trace), window=layer_window(trace, layer),
    )
    return Recomputation(
        part="self", layer=layer, attentions=weights.numpy(),
        expected=np.asarray(trace.attentions[layer]), queries=q.numpy(), keys=k.numpy(),
        values=v.numpy(), output=None, query_tokens=trace.tokens, key_tokens=trace.tokens,
    )


def layer_scale(trace: Trace, layer: int) -> float:
    """The factor on q·k in ``layer``, from ``trace.extra`` (written by a ``qkv=True`` capture)."""
    scales = trace.extra.get("attention_scales")
    if scales:
        return float(scales[layer])
    if "attention_scale" in trace.extra:
        return float(trace.extra["attention_scale"])
    d = trace.queries.shape[-1] if trace.queries is not None else 1
    return 1.0 / math.sqrt(d)


def layer_window(trace: Trace, layer: int) -> int | None:
    """The sliding window of ``layer``'s attention from ``trace.extra``, or None."""
    windows = trace.extra.get("sliding_windows")
    return windows[layer] if windows else None


def stored_position_bias(trace: Trace) -> torch.Tensor | None:
    """The position bias ``[H, T, T]`` added to the scores of the self attention (T5), or None."""
    info = trace.extra.get("position_bias")
    if not info:
        return None
    bias = RelativePositionBias(
        table=torch.tensor(info["table"], dtype=torch.float32),
        num_buckets=int(info["num_buckets"]), max_distance=int(info["max_distance"]),
        bidirectional=bool(info["bidirectional"]),
    )
    return relative_position_bias(bias, trace.num_tokens, trace.num_tokens)
