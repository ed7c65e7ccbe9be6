"""Run a model once and record what its attention did, as a :class:`~attnscope.Trace`.

``capture`` runs one text (or sentence pair); ``capture_batch`` runs many, padded on the right
and masked, and cuts every Trace back to its own tokens, so each equals the single-text Trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from attnscope.errors import AttnscopeError, check_flag
from attnscope.lazy import LazyAttentionWarning, MemoryBudgetError
from attnscope.models import LoadedModel
from attnscope.tokens import Tokenization, decoder_tokens, encode
from attnscope.tokens import pad_inputs as _pad
from attnscope.trace import Trace

if TYPE_CHECKING:
    from attnscope.lazy import LazyTrace

__all__ = ["capture", "capture_batch", "iter_capture"]


@overload
def capture(
    model: LoadedModel,
    text: str | Sequence[int] | Any,
    text_b: str | None = None,
    *,
    truncate: bool = True,
    merge_words: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    attention: Literal["eager"],
    budget: int | None = None,
    layers: Any = None,
    heads: Any = None,
) -> Trace: ...
@overload
def capture(
    model: LoadedModel,
    text: str | Sequence[int] | Any,
    text_b: str | None = None,
    *,
    truncate: bool = True,
    merge_words: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    attention: Literal["lazy"],
    budget: int | None = None,
    layers: Any = None,
    heads: Any = None,
) -> LazyTrace: ...
@overload
def capture(
    model: LoadedModel,
    text: str | Sequence[int] | Any,
    text_b: str | None = None,
    *,
    truncate: bool = True,
    merge_words: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    attention: str | None = None,
    budget: int | None = None,
    layers: Any = None,
    heads: Any = None,
) -> Trace | LazyTrace: ...
def capture(
    model: LoadedModel,
    text: str | Sequence[int] | Any,
    text_b: str | None = None,
    *,
    truncate: bool = True,
    merge_words: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    attention: str | None = None,
    budget: int | None = None,
    layers: Any = None,
    heads: Any = None,
) -> Trace | LazyTrace:
    """Run ``model`` on ``text`` and return its Trace.

    Args:
        model: from :func:`attnscope.load`.
        text: the input: a string, or token ids ``[T]`` (a list of ints, a 1-D numpy int
            array or a 1-D torch LongTensor), run as they are, with no special tokens added.
            For encoder-decoder models (T5, BART) it is the encoder's input.
        text_b: the second sentence of a pair (BERT's [SEP]-joined pair, as in bertviz); for
            encoder-decoder models, the decoder's input (a translation or summary).
        truncate: cut text past the model's limit with a warning (True) or raise (False).
        merge_words: merge sub-word tokens into words (see :func:`attnscope.merge_subwords`).
        qkv: also record each (encoder) self-attention layer's queries, keys and values
            ``[L, H, T, d_head]`` (queries and keys post-rotary, key/value heads repeated to H),
            with the scale and any position bias in ``trace.extra``; needs an adapter for the
            model family (see :func:`attnscope.adapters.supported`).
        add_special_tokens: False leaves out [CLS], [SEP], <s>..., as
            ``tokenizer(text, add_special_tokens=False)`` does (the encoder's side only).
        attention: ``"eager"`` (every weight, ``[L, H, T, T]``; refused past the memory
            budget) or ``"lazy"``: a :class:`~attnscope.lazy.LazyTrace` holding queries and
            keys, exact weights on demand, for texts whose eager weights would not fit (see
            docs/long-contexts.md). None (the default): eager, unless its weights would pass
            the memory budget and lazy capture can serve the model and the options (no
            ``qkv`` or ``merge_words``); then lazy, with a one-line
            :class:`~attnscope.lazy.LazyAttentionWarning`.
        budget: bytes an eager capture may take before it is refused (default: half the
            available memory, or ``ATTNSCOPE_MEMORY_BUDGET``).
        layers, heads: record only these layers / heads (lists of model indices, negatives
            from the end; default every one). The Trace holds them in the model's order and
            names them in ``layer_ids`` / ``head_ids``; ``hidden_states`` then holds the
            embedding output and each chosen layer's output. An eager pass still computes
            every layer (the memory guard counts them all); a lazy one keeps only the chosen
            queries and keys.

    Returns:
        A Trace with ``attentions`` ``[L, H, T, T]`` and ``hidden_states`` ``[L+1, T, D]``
        (a LazyTrace for ``attention="lazy"``, or when the default switched to it).
    """
    from attnscope.lazy import capture_lazy

    _check_attention(attention, qkv, merge_words)
    if attention == "lazy":
        return capture_lazy(model, text, text_b, truncate=truncate,
                            add_special_tokens=add_special_tokens, layers=layers, heads=heads)
    try:
        (trace,) = _capture_chunk(model, [(text, text_b)], truncate=truncate, qkv=qkv,
                                  add_special_tokens=add_special_tokens, budget=budget,
                                  layers=layers, heads=heads)
    except MemoryBudgetError as refusal:
        if attention == "eager" or not _can_go_lazy(model, qkv, merge_words):
            raise
        import warnings

        warnings.warn(
            f"Eager attention would take about {_size(refusal.need)}, past the memory budget "
            f"of {_size(refusal.limit)}; capturing lazily instead (exact weights on demand; "
            "attention=\"lazy\" asks for it, attention=\"eager\" refuses).",
            LazyAttentionWarning, stacklevel=2,
        )
        return capture_lazy(model, text, text_b, truncate=truncate,
                            add_special_tokens=add_special_tokens, layers=layers, heads=heads)
    return _maybe_merge(trace, merge_words)


def _check_attention(attention: Any, qkv: Any, merge_words: Any) -> None:
    if attention is not None and attention not in ("eager", "lazy"):
        raise AttnscopeError(f"attention must be 'eager', 'lazy' or None (eager unless it "
                             f"would pass the memory budget), not {attention!r}.")
    if attention == "lazy" and (qkv is not False or merge_words is not False):
        raise AttnscopeError(
            "attention=\"lazy\" keeps the queries and keys in the LazyTrace itself and has no "
            "word-level weights; qkv=True and merge_words=True need attention=\"eager\" (or "
            "lazy.window(...) for a span as an ordinary Trace).")


def _can_go_lazy(model: LoadedModel, qkv: Any, merge_words: Any) -> bool:
    """Whether the default may switch to lazy: nothing asked for needs the eager arrays."""
    from attnscope.lazy import lazy_problem

    return qkv is False and merge_words is False and lazy_problem(model) is None


def _size(n: int) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.3g} MiB"


@overload
def capture_batch(
    model: LoadedModel,
    texts: Sequence[str],
    texts_b: Sequence[str | None] | None = None,
    *,
    batch_size: int = 8,
    truncate: bool = True,
    merge_words: bool = False,
    progress: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    layers: Any = None,
    heads: Any = None,
    attention: Literal["eager"],
    budget: int | None = None,
) -> list[Trace]: ...
@overload
def capture_batch(
    model: LoadedModel,
    texts: Sequence[str],
    texts_b: Sequence[str | None] | None = None,
    *,
    batch_size: int = 8,
    truncate: bool = True,
    merge_words: bool = False,
    progress: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    layers: Any = None,
    heads: Any = None,
    attention: Literal["lazy"],
    budget: int | None = None,
) -> list[LazyTrace]: ...
@overload
def capture_batch(
    model: LoadedModel,
    texts: Sequence[str],
    texts_b: Sequence[str | None] | None = None,
    *,
    batch_size: int = 8,
    truncate: bool = True,
    merge_words: bool = False,
    progress: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    layers: Any = None,
    heads: Any = None,
    attention: None = None,
    budget: int | None = None,
) -> list[Trace | LazyTrace]: ...
def capture_batch(
    model: LoadedModel,
    texts: Sequence[str],
    texts_b: Sequence[str | None] | None = None,
    *,
    batch_size: int = 8,
    truncate: bool = True,
    merge_words: bool = False,
    progress: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    layers: Any = None,
    heads: Any = None,
    attention: Any = None,
    budget: int | None = None,
) -> list[Any]:
    """Capture many texts, ``batch_size`` at a time; returns one Trace per text, in order.

    Each Trace equals ``capture(model, text)`` for its text (to float rounding, 1e-5);
    ``layers``, ``heads``, ``attention`` and ``budget`` as in :func:`capture`: with
    ``attention="lazy"`` each text gives a :class:`~attnscope.lazy.LazyTrace`, from one padded
    pass per batch; the default switches a batch whose eager weights would pass the budget to
    lazy, with one :class:`~attnscope.lazy.LazyAttentionWarning`.
    """
    return list(
        iter_capture(
            model, texts, texts_b, batch_size=batch_size, truncate=truncate,
            merge_words=merge_words, progress=progress, qkv=qkv,
            add_special_tokens=add_special_tokens, layers=layers, heads=heads,
            attention=attention, budget=budget,
        )
    )


@overload
def iter_capture(
    model: LoadedModel,
    texts: Sequence[str],
    texts_b: Sequence[str | None] | None = None,
    *,
    batch_size: int = 8,
    truncate: bool = True,
    merge_words: bool = False,
    progress: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    layers: Any = None,
    heads: Any = None,
    attention: Literal["eager"],
    budget: int | None = None,
) -> Iterator[Trace]: ...
@overload
def iter_capture(
    model: LoadedModel,
    texts: Sequence[str],
    texts_b: Sequence[str | None] | None = None,
    *,
    batch_size: int = 8,
    truncate: bool = True,
    merge_words: bool = False,
    progress: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    layers: Any = None,
    heads: Any = None,
    attention: Literal["lazy"],
    budget: int | None = None,
) -> Iterator[LazyTrace]: ...
@overload
def iter_capture(
    model: LoadedModel,
    texts: Sequence[str],
    texts_b: Sequence[str | None] | None = None,
    *,
    batch_size: int = 8,
    truncate: bool = True,
    merge_words: bool = False,
    progress: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    layers: Any = None,
    heads: Any = None,
    attention: None = None,
    budget: int | None = None,
) -> Iterator[Trace | LazyTrace]: ...
def iter_capture(
    model: LoadedModel,
    texts: Sequence[str],
    texts_b: Sequence[str | None] | None = None,
    *,
    batch_size: int = 8,
    truncate: bool = True,
    merge_words: bool = False,
    progress: bool = False,
    qkv: bool = False,
    add_special_tokens: bool = True,
    layers: Any = None,
    heads: Any = None,
    attention: Any = None,
    budget: int | None = None,
) -> Iterator[Any]:
    """Like :func:`capture_batch`, but yields Traces as batches finish (nothing is lost if you
    stop early)."""
    if isinstance(texts, str):
        raise AttnscopeError("capture_batch takes a list of texts; for one text use capture().")
    merge_words, progress = check_flag(merge_words, "merge_words"), check_flag(progress, "progress")
    if _is_id_sequence(texts):
        raise AttnscopeError("capture_batch takes a list of texts or of id sequences; for one "
                             "sequence of ids use capture().")
    pairs = list(zip(texts, texts_b if texts_b is not None else [None] * len(texts), strict=True))
    if batch_size < 1:
        raise AttnscopeError(f"batch_size must be at least 1, not {batch_size}.")
    chunks: Iterable[int] = range(0, len(pairs), batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=-(-len(pairs) // batch_size), unit="batch")
    _check_attention(attention, qkv, merge_words)
    warned = False
    for start in chunks:
        chunk = pairs[start : start + batch_size]
        if attention == "lazy":
            yield from _lazy_chunk(model, chunk, truncate, add_special_tokens, layers, heads,
                                   budget)
            continue
        try:
            traces = _capture_chunk(model, chunk, truncate=truncate, qkv=qkv,
                                    add_special_tokens=add_special_tokens, budget=budget,
                                    layers=layers, heads=heads)
        except MemoryBudgetError as refusal:
            if attention == "eager" or not _can_go_lazy(model, qkv, merge_words):
                raise
            if not warned:
                import warnings

                warnings.warn(
                    f"Eager attention for a batch would take about {_size(refusal.need)}, past "
                    f"the memory budget of {_size(refusal.limit)}; capturing such batches "
                    "lazily instead (exact weights on demand; attention=\"lazy\" asks for it, "
                    "attention=\"eager\" refuses).", LazyAttentionWarning, stacklevel=2)
                warned = True
            yield from _lazy_chunk(model, chunk, truncate, add_special_tokens, layers, heads,
                                   budget)
            continue
        for trace in traces:
            yield _maybe_merge(trace, merge_words)


def _lazy_chunk(model: LoadedModel, chunk: list[tuple[Any, str | None]], truncate: bool,
                add_special_tokens: bool, layers: Any, heads: Any, budget: Any
                ) -> list[LazyTrace]:
    from attnscope.lazy import capture_lazy_batch

    require_loaded(model, "capture")
    return capture_lazy_batch(model, chunk, truncate=check_flag(truncate, "truncate"),
                              add_special_tokens=check_flag(add_special_tokens,
                                                            "add_special_tokens"),
                              layers=layers, heads=heads, budget=budget)


def _is_id_sequence(texts: Any) -> bool:
    """Whether ``texts`` is one flat sequence of ids rather than a list of inputs."""
    if getattr(texts, "ndim", None) == 1:  # a numpy array or torch tensor of ids
        return True
    return isinstance(texts, Sequence) and len(texts) > 0 and isinstance(
        texts[0], (int, np.integer))


def _maybe_merge(trace: Trace, merge_words: bool) -> Trace:
    if not check_flag(merge_words, "merge_words"):
        return trace
    from attnscope.words import merge_subwords

    return merge_subwords(trace)


def _capture_chunk(
    model: LoadedModel, pairs: list[tuple[Any, str | None]], *, truncate: bool,
    qkv: bool = False, add_special_tokens: bool = True, budget: int | None = None,
    layers: Any = None, heads: Any = None,
) -> list[Trace]:
    import torch

    from attnscope.selection import choose, select_extra

    require_loaded(model, "capture")
    layer_ids = choose(layers, model.num_layers, "layer", model.name)
    head_ids = choose(heads, model.num_heads, "head", model.name)
    truncate, qkv = check_flag(truncate, "truncate"), check_flag(qkv, "qkv")
    add_special_tokens = check_flag(add_special_tokens, "add_special_tokens")
    recorder = None
    if qkv:  # fail on an unsupported family before running the model
        from attnscope.adapters.hooks import QKVRecorder

        recorder = QKVRecorder(model)

    encoder_decoder = model.architecture == "encoder-decoder"
    encoded = [encode(model, a, None if encoder_decoder else b, truncate=truncate,
                       add_special_tokens=add_special_tokens) for a, b in pairs]
    decoder_side: list[Tokenization] | None = None
    if encoder_decoder:
        decoder_side = [decoder_tokens(model, b, truncate) for _, b in pairs]
    from attnscope.lazy import check_eager_memory  # refuse before the model allocates

    check_eager_memory(model, max(len(e) for e in encoded), len(encoded), budget)

    device = model.device
    inputs = _pad([e.model_inputs for e in encoded], model, device)
    if decoder_side is not None:
        dec = _pad([d.model_inputs for d in decoder_side], model, device)
        inputs["decoder_input_ids"] = dec["input_ids"]
        inputs["decoder_attention_mask"] = dec["attention_mask"]

    with torch.inference_mode():
        if recorder is None:
            out = model.model(**inputs, output_attentions=True, output_hidden_states=True,
                              return_dict=True)
        else:
            with recorder:  # the hooks are removed on leaving, error or not
                out = model.model(**inputs, output_attentions=True, output_hidden_states=True,
                                  return_dict=True)

    if encoder_decoder:
        self_att, hidden = out.encoder_attentions, out.encoder_hidden_states
    else:
        self_att, hidden = out.attentions, out.hidden_states
    if not self_att or any(a is None for a in self_att):
        raise AttnscopeError(
            f"{model.name} returned no attention weights; load it with attnscope.load() or "
            "with attn_implementation='eager'."
        )

    # Hold each output as a plain list and drop `out`, so _split_layers can free every layer
    # as soon as it has been copied to the host.
    self_att, hidden = list(self_att), list(hidden)
    dec_att = cross_att = dec_hidden = None
    if encoder_decoder:
        dec_att, cross_att = list(out.decoder_attentions), list(out.cross_attentions)
        dec_hidden = list(out.decoder_hidden_states)
    del out

    if layer_ids is not None:  # drop the other layers before anything is copied
        self_att, hidden = _pick(self_att, layer_ids), _pick(hidden, layer_ids, levels=True)
        if encoder_decoder:
            dec_att, cross_att = _pick(dec_att, layer_ids), _pick(cross_att, layer_ids)
            dec_hidden = _pick(dec_hidden, layer_ids, levels=True)
    lengths = [len(e) for e in encoded]
    attentions = _split_layers(self_att, lengths, lengths, head_ids)
    hidden_states = _split_layers(hidden, lengths, None)
    qkv_parts: dict[str, list[np.ndarray]] = {}
    if recorder is not None:
        with torch.inference_mode():
            per_layer = recorder.per_layer()  # 3 lists of L tensors [B, H, T_max, d]
        head_dim = per_layer[0][0].shape[-1]
        for name, tensors in zip(("queries", "keys", "values"), per_layer, strict=True):
            tensors = tensors if layer_ids is None else _pick(tensors, layer_ids)
            qkv_parts[name] = _split_layers(tensors, lengths, [head_dim] * len(lengths),
                                            head_ids)
        extra = select_extra(recorder.facts(), layer_ids, head_ids)
    dec_parts: dict[str, list[np.ndarray]] = {}
    if decoder_side is not None:
        dec_lengths = [len(d) for d in decoder_side]
        dec_parts["decoder_attentions"] = _split_layers(dec_att, dec_lengths, dec_lengths,
                                                        head_ids)
        dec_parts["cross_attentions"] = _split_layers(cross_att, dec_lengths, lengths, head_ids)
        dec_parts["decoder_hidden_states"] = _split_layers(dec_hidden, dec_lengths, None)

    traces = []
    for i, enc in enumerate(encoded):
        fields: dict[str, Any] = {}
        if recorder is not None:
            fields.update({name: arrays[i] for name, arrays in qkv_parts.items()})
            fields["extra"] = dict(extra)
        if decoder_side is not None:
            d = decoder_side[i]
            fields |= {
                "decoder_tokens": d.tokens,
                "decoder_input_ids": d.input_ids,
                "decoder_special_mask": d.special_mask,
                "decoder_word_ids": d.word_ids,
                "decoder_offsets": d.offsets,
                **{name: arrays[i] for name, arrays in dec_parts.items()},
            }
        traces.append(
            Trace(
                model_name=model.name,
                model_type=model.model_type,
                architecture=model.architecture,
                text=enc.text,
                text_b=pairs[i][1],
                tokens=enc.tokens,
                input_ids=enc.input_ids,
                token_type_ids=enc.token_type_ids,
                special_mask=enc.special_mask,
                word_ids=enc.word_ids,
                offsets=enc.offsets,
                segment_ids=enc.segment_ids,
                sentence_b_start=enc.sentence_b_start,
                attentions=attentions[i],
                hidden_states=hidden_states[i],
                truncated=enc.dropped + (decoder_side[i].dropped if decoder_side else 0),
                layer_ids=layer_ids,
                head_ids=head_ids,
                **fields,
            )
        )
    return traces


def _pick(tensors: list[Any] | None, layer_ids: tuple[int, ...], *,
          levels: bool = False) -> list[Any]:
    """The chosen layers' tensors; for hidden states (``levels``: L+1 of them, the embedding
    output first), the embedding output and each chosen layer's output."""
    assert tensors is not None
    if levels:
        return [tensors[0], *(tensors[i + 1] for i in layer_ids)]
    return [tensors[i] for i in layer_ids]


def _split_layers(
    layers: list[Any] | None, rows: list[int], cols: list[int] | None,
    heads: tuple[int, ...] | None = None,
) -> list[np.ndarray]:
    """Turn per-layer batch tensors into one float32 host array per text.

    ``layers`` holds L tensors ``[B, H, T_max, T_max]`` (attention; ``cols`` given) or
    ``[B, T_max, D]`` (hidden states; ``cols`` None). Text ``b`` keeps its first ``rows[b]``
    query rows and ``cols[b]`` key columns: the padding sits after them, and only ``heads``
    (default all). Queries, keys and values ``[B, H, T_max, d]`` pass ``cols`` = d.

    Layers are copied one at a time and released as they go (the list is emptied), so peak
    memory stays near one copy of the attention instead of two.
    """
    assert layers is not None
    first = layers[0]
    out = []
    head_count = first.shape[1] if heads is None else len(heads)
    for b, n in enumerate(rows):
        shape: tuple[int, ...]
        if cols is None:
            shape = (len(layers), n, first.shape[-1])
        else:
            shape = (len(layers), head_count, n, cols[b])
        out.append(np.empty(shape, dtype=np.float32))
    for layer_index in range(len(layers)):
        tensor = layers[layer_index].detach()
        if heads is not None and cols is not None:
            tensor = tensor[:, list(heads)]
        tensor = tensor.float().cpu()
        layers[layer_index] = None  # free this layer's tensor as soon as it is copied
        for b, n in enumerate(rows):
            if cols is None:
                out[b][layer_index] = tensor[b, :n].numpy()
            else:
                out[b][layer_index] = tensor[b, :, :n, : cols[b]].numpy()
        del tensor
    return out


def require_loaded(model: Any, what: str) -> LoadedModel:
    """``model`` if attnscope loaded it, else one sentence saying what ``what`` takes."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        how = f"at.load({_shown(model)}) makes one from that name or folder"
    elif hasattr(model, "config") and hasattr(model, "forward"):
        how = "at.load(model, tokenizer=...) wraps your transformers model in one"
    else:
        how = "at.load(...) makes one"
    raise AttnscopeError(
        f"{what} takes a model from attnscope.load, not {type(model).__name__}; {how}."
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
