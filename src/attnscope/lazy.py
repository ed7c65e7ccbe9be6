"""Attention at any length: exact weights on demand from the model's own queries and keys.

Eager attention hands back every layer's and head's T x T weights: L·H·T² floats (SmolLM2-135M
at 8,192 tokens: 30·9·8192²·4 B = 72 GB). ``capture(model, text, attention="lazy")`` instead
runs the model with its fast attention (SDPA), records each layer's queries and keys as the
model uses them (post-rotary; grouped key/value heads kept unrepeated) and each query row's
log-sum-exp of scaled scores, computed in row blocks. Any tile is then exact:

    P[i, j] = exp(s · q_i · k_j + b_ij − lse_i)   (0 where the model masks: causal, sliding
                                                   window; b: T5's relative position bias)

so memory is O(L·H·T·d) for what is held and O(T·block) for any computation on it.

    lazy = at.capture(model, text, attention="lazy")        # a LazyTrace
    lazy.attention(layer=3, head=0, rows=range(100, 110))   # [10, T] float32, exact
    lazy.attentions[3, 0, 100:110, :512]                    # the same, numpy-style
    lazy.head_stats()                                       # sink, entropy, distance... [L, H]
    lazy.window(0, 512)                                     # an ordinary Trace of one span

Shapes: L layers, H query heads, H_kv key/value heads (query head h uses key head
h // (H // H_kv)), T tokens, d the size of one head.

The memory guard that eager capture calls (:func:`check_eager_memory`) lives here too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError
from attnscope.files import atomic_write

__all__ = [
    "LazyAttentionWarning",
    "LazyTrace",
    "MemoryBudgetError",
    "capture_lazy",
    "capture_lazy_batch",
    "check_eager_memory",
    "eager_bytes",
    "lazy_problem",
    "memory_budget",
]

#: rows of scores computed at once: a block costs block · T · 4 bytes per head.
DEFAULT_BLOCK = 512

_FORMAT = "attnscope-lazy-trace"
_FORMAT_VERSION = 1

# Switching a model's attention implementation changes it for every thread that uses it: the
# switch, the pass and the switch back happen under one lock.
_SWITCH_LOCK = threading.Lock()


# ----- memory ----------------------------------------------------------------------------------

def memory_budget(budget: Any = None) -> int:
    """The most bytes one attention array may take: ``budget`` when given, else the
    ``ATTNSCOPE_MEMORY_BUDGET`` environment variable (bytes), else half the available memory.

    Raises:
        AttnscopeError: the budget is not a positive whole number of bytes.
    """
    source = "budget"
    if budget is None and os.environ.get("ATTNSCOPE_MEMORY_BUDGET", "").strip():
        budget, source = os.environ["ATTNSCOPE_MEMORY_BUDGET"].strip(), "ATTNSCOPE_MEMORY_BUDGET"
    if budget is None:
        return _available_memory() // 2
    value: float | None
    try:
        value = float(budget) if not isinstance(budget, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value) or value <= 0 or value != int(value):
        raise AttnscopeError(
            f"The memory {source} must be a positive whole number of bytes, not {budget!r}."
        )
    return int(value)


def _available_memory() -> int:
    """Bytes of memory available now (psutil, else /proc/meminfo; 4 GiB when neither says)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def eager_bytes(model: Any, num_tokens: int, batch: int = 1) -> int:
    """Bytes an eager capture of ``batch`` texts of ``num_tokens`` tokens returns: the weights
    ``B·L·H·T²·4`` plus the hidden states ``B·(L+1)·T·D·4`` (float32)."""
    layers, heads = int(model.num_layers), int(model.num_heads)
    config = getattr(getattr(model, "model", None), "config", None)
    width = int(getattr(config, "hidden_size", 0) or getattr(config, "d_model", 0) or 0)
    T = int(num_tokens)
    return batch * (layers * heads * T * T * 4 + (layers + 1) * T * width * 4)


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.3g} MiB"


class MemoryBudgetError(AttnscopeError):
    """An eager capture refused before it ran: its weights would pass the memory budget.
    ``need`` and ``limit`` are the bytes estimated and allowed."""

    def __init__(self, message: str, need: int, limit: int) -> None:
        super().__init__(message)
        self.need, self.limit = need, limit


class LazyAttentionWarning(UserWarning):
    """``capture`` switched to ``attention="lazy"`` because eager weights would pass the
    memory budget (the one-line note; ``attention="lazy"`` asks for it and gives none)."""


def check_eager_memory(model: Any, num_tokens: int, batch: int = 1, budget: Any = None) -> None:
    """Refuse, before anything is allocated, an eager capture whose weights would pass the
    memory budget (see :func:`memory_budget`).

    Raises:
        MemoryBudgetError: one sentence naming the estimate, the budget and
            ``attention="lazy"``.
    """
    limit = memory_budget(budget)
    need = eager_bytes(model, num_tokens, batch)
    if need > limit:
        raise MemoryBudgetError(
            f"Eager attention for {batch * int(num_tokens)} tokens of {model.name} would take "
            f"about {_gib(need)} ({model.num_layers} layers x {model.num_heads} heads x "
            f"{num_tokens}² x 4 bytes, plus hidden states), past the memory budget of "
            f"{_gib(limit)}; capture it with attention=\"lazy\" (exact weights on demand), a "
            "shorter text, or a larger budget= / ATTNSCOPE_MEMORY_BUDGET.", need, limit
        )


def _guard_array(shape: tuple[int, ...], what: str, budget: Any) -> None:
    need = int(np.prod(shape, dtype=np.int64)) * 4
    limit = memory_budget(budget)
    if need > limit:
        raise AttnscopeError(
            f"{what} {list(shape)} would take {_gib(need)}, past the memory budget of "
            f"{_gib(limit)}; ask for fewer layers, heads, rows or columns."
        )


# ----- capture ---------------------------------------------------------------------------------

def capture_lazy(
    model: Any,
    text: str | Sequence[int] | Any,
    text_b: str | None = None,
    *,
    truncate: bool = True,
    add_special_tokens: bool = True,
    block: int = DEFAULT_BLOCK,
    layers: Any = None,
    heads: Any = None,
) -> LazyTrace:
    """Run ``model`` on ``text`` with its fast attention and return a :class:`LazyTrace`.

    ``at.capture(model, text, attention="lazy")`` calls this. Memory: the queries
    ``[L, H, T, d]``, keys ``[L, H_kv, T, d]`` and row log-sum-exps ``[L, H, T]`` (float32).
    On a CPU the pass's own attention kernel gives the log-sum-exps; elsewhere they take one
    more pass over the scores, one block ``[H / H_kv, block, T]`` at a time. ``layers`` /
    ``heads`` keep only those (see :func:`attnscope.capture`); with chosen heads each keeps
    its own copy of its key head (H_kv = H). For an encoder-decoder model (T5, BART) ``text``
    is the encoder's input; with ``text_b`` (the decoder's) the result also holds
    ``.decoder`` and ``.cross``, without it the encoder runs alone.

    Raises:
        AttnscopeError: the family's attention cannot be rebuilt from queries and keys.
    """
    (lazy,) = capture_lazy_batch(model, [(text, text_b)], truncate=truncate,
                                 add_special_tokens=add_special_tokens, block=block,
                                 layers=layers, heads=heads)
    return lazy


def capture_lazy_batch(
    model: Any,
    pairs: Sequence[tuple[Any, str | None]],
    *,
    truncate: bool = True,
    add_special_tokens: bool = True,
    block: int = DEFAULT_BLOCK,
    layers: Any = None,
    heads: Any = None,
    budget: Any = None,
) -> list[LazyTrace]:
    """:func:`capture_lazy` for several ``(text, text_b)`` pairs, in one padded pass.

    ``at.capture_batch(model, texts, attention="lazy")`` calls this. Texts are padded on the
    right (every real token keeps its position) and the padding is masked, so each LazyTrace
    equals the one its text gives alone. The pass holds the model's ``[B, 1, T, T]`` mask and
    the kernel's additive copy of it (``B·T²·5`` bytes): past the memory budget the texts run
    one at a time, with no mask. Encoder-decoder models run one text at a time.
    """
    from attnscope.adapters.hooks import QKVRecorder
    from attnscope.selection import choose
    from attnscope.tokens import encode

    block = _positive_int(block, "block")
    layer_ids = choose(layers, model.num_layers, "layer", model.name)
    head_ids = choose(heads, model.num_heads, "head", model.name)
    problem = lazy_problem(model)
    if problem:
        raise AttnscopeError(problem)
    if model.architecture == "encoder-decoder":
        return [_capture_seq2seq(model, text, text_b, truncate, add_special_tokens, block,
                                 layer_ids, head_ids) for text, text_b in pairs]
    encoded = [encode(model, text, text_b, truncate=truncate,
                      add_special_tokens=add_special_tokens) for text, text_b in pairs]
    facts = QKVRecorder(model).facts()
    picked = list(range(model.num_layers)) if layer_ids is None else list(layer_ids)
    longest = max(len(e) for e in encoded)
    if len(encoded) > 1 and len(encoded) * longest * longest * 5 > memory_budget(budget):
        return [lazy for e, (_, text_b) in zip(encoded, pairs, strict=True)
                for lazy in _lazy_traces(model, [e], [text_b], facts, picked, layer_ids,
                                         head_ids, block)]
    return _lazy_traces(model, encoded, [b for _, b in pairs], facts, picked, layer_ids,
                        head_ids, block)


def _lazy_traces(model: Any, encoded: list[Any], texts_b: list[str | None],
                 facts: dict[str, Any], picked: list[int], layer_ids: tuple[int, ...] | None,
                 head_ids: tuple[int, ...] | None, block: int) -> list[LazyTrace]:
    """One pass over ``encoded`` (padded when there are several) and its LazyTraces."""
    import torch

    from attnscope.tokens import pad_inputs

    if len(encoded) == 1:  # no padding, so no mask: decoders run SDPA's causal kernel
        inputs = {name: torch.from_numpy(np.asarray(value, dtype=np.int64)[None])
                  .to(model.device) for name, value in encoded[0].model_inputs.items()}
    else:
        inputs = pad_inputs([e.model_inputs for e in encoded], model, model.device)
    parts = _recorded_pass(model, inputs, picked, head_ids, [len(e) for e in encoded])
    traces = []
    for enc, text_b, (q, k, lse) in zip(encoded, texts_b, parts, strict=True):
        lazy = _lazy_trace(model, enc, text_b, facts, picked, layer_ids, head_ids, q, k, lse)
        if lse is None:
            lazy._compute_lse(block)
        traces.append(lazy)
    return traces


def _lazy_trace(model: Any, encoded: Any, text_b: str | None, facts: dict[str, Any],
                picked: list[int], layer_ids: tuple[int, ...] | None,
                head_ids: tuple[int, ...] | None, q: np.ndarray, k: np.ndarray,
                lse: np.ndarray | None) -> LazyTrace:
    """A LazyTrace of one text from its tokenization and what its pass recorded (lse zero
    when the caller computes it afterwards)."""
    from attnscope.selection import select_extra

    windows = facts.get("sliding_windows") or [None] * model.num_layers
    windows = [windows[i] for i in picked]
    return LazyTrace(
        model_name=model.name, model_type=model.model_type, architecture=model.architecture,
        text=encoded.text, text_b=text_b, tokens=tuple(encoded.tokens),
        input_ids=np.asarray(encoded.input_ids), token_type_ids=np.asarray(encoded.token_type_ids),
        special_mask=np.asarray(encoded.special_mask), word_ids=np.asarray(encoded.word_ids),
        offsets=np.asarray(encoded.offsets), segment_ids=np.asarray(encoded.segment_ids),
        sentence_b_start=encoded.sentence_b_start, truncated=int(encoded.dropped),
        queries=q, keys=k, lse=np.zeros(q.shape[:3], np.float32) if lse is None else lse,
        scales=np.asarray([facts["attention_scales"][i] for i in picked], np.float32),
        causal=model.architecture == "decoder",
        sliding_windows=tuple(None if w is None else int(w) for w in windows),
        extra=select_extra({"qkv_adapter": facts.get("qkv_adapter"),
                            **({"position_bias": facts["position_bias"]}
                               if facts.get("position_bias") else {})}, None, head_ids),
        layer_ids=layer_ids, head_ids=head_ids,
    )


def _capture_seq2seq(model: Any, text: Any, text_b: str | None, truncate: bool,
                     add_special_tokens: bool, block: int, layer_ids: tuple[int, ...] | None,
                     head_ids: tuple[int, ...] | None) -> LazyTrace:
    """An encoder-decoder model's LazyTrace: the encoder's, with ``.decoder`` and ``.cross``
    when there is a decoder text."""
    import torch

    from attnscope.adapters.hooks import QKVRecorder
    from attnscope.tokens import decoder_tokens, encode

    encoder_only = text_b is None
    encoded = encode(model, text, None, truncate=truncate, add_special_tokens=add_special_tokens)
    inputs = {name: torch.from_numpy(np.asarray(value, dtype=np.int64)[None]).to(model.device)
              for name, value in encoded.model_inputs.items()}
    decoder_side = None
    if not encoder_only:
        decoder_side = decoder_tokens(model, text_b, truncate)
        for name, value in decoder_side.model_inputs.items():
            inputs[f"decoder_{name}"] = torch.from_numpy(
                np.asarray(value, dtype=np.int64)[None]).to(model.device)
    recorder = QKVRecorder(model)
    facts = recorder.facts()
    picked = list(range(model.num_layers)) if layer_ids is None else list(layer_ids)
    q, k, seq2seq_recorder = _seq2seq_pass(model, inputs, recorder, encoder_only, picked,
                                           head_ids, layer_ids is not None)
    lazy = _lazy_trace(model, encoded, text_b, facts, picked, layer_ids, head_ids, q, k, None)
    lazy._compute_lse(block)
    if seq2seq_recorder is not None:
        assert decoder_side is not None
        for part in ("decoder", "cross"):
            setattr(lazy, part, seq2seq_recorder.part(part, lazy, decoder_side, picked,
                                                     head_ids, block))
    return lazy


def _recorded_pass(model: Any, inputs: dict[str, Any], picked: list[int],
                   head_ids: tuple[int, ...] | None, lengths: list[int]
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """One pass of an encoder or decoder-only model over a batch of ``len(lengths)`` texts,
    padded on the right, through the ``"attnscope_lse"`` attention
    (:mod:`attnscope.lazy_record`). Per text: the chosen layers' queries ``[L, H, T, d]``,
    keys ``[L, H_kv, T, d]`` (one per chosen head when heads are chosen) and row log-sum-exps
    ``[L, H, T]``, float32, cut to its ``T`` real tokens and copied to the host layer by layer
    as the pass runs; lse is None where the kernel could not give it (it is then computed in
    row blocks)."""
    import torch

    from attnscope.lazy_record import IMPLEMENTATION, recording, register

    register()  # the implementation must be known before the model switches to it
    host = _HostCopy(picked, head_ids, lengths)
    with torch.inference_mode(), _fast_attention(model.model, IMPLEMENTATION), \
            recording(host.keep) as record:
        model.model(**inputs, output_attentions=False, output_hidden_states=False,
                    return_dict=True)
    if len(record.queries) != model.num_layers or not host.queries:
        raise AttnscopeError(
            f"{model.name} ran its attention {len(record.queries)} times for "
            f"{model.num_layers} layers, so lazy capture cannot tell its layers apart; use "
            "attention=\"eager\"."
        )
    return [(q, k, lse if host.has_lse else None)
            for q, k, lse in zip(host.queries, host.keys, host.lse, strict=True)]


class _HostCopy:
    """Copies each chosen layer's queries, keys and lse into preallocated host arrays, one set
    per text of the batch, as the pass hands them over, so the pass never holds more than one
    layer's on the device."""

    def __init__(self, picked: list[int], head_ids: tuple[int, ...] | None,
                 lengths: list[int]) -> None:
        self.slot = {layer: i for i, layer in enumerate(picked)}
        self.head_ids = None if head_ids is None else list(head_ids)
        self.lengths = lengths
        self.queries: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.lse: list[np.ndarray] = []
        self.has_lse = True

    def keep(self, layer: int, query: Any, key: Any, lse: Any) -> tuple[None, None, None]:
        """``query`` ``[B, H, T_max, d]``, ``key`` ``[B, H_kv, T_max, d]``, ``lse``
        ``[B, H, T_max]`` or None."""
        slot = self.slot.get(layer)
        if slot is None:
            return None, None, None
        q, k = query, key
        if self.head_ids is not None:  # each chosen query head keeps its own key head
            group = q.shape[1] // k.shape[1]
            k = k[:, [h // group for h in self.head_ids]]
            q = q[:, self.head_ids]
            lse = None if lse is None else lse[:, self.head_ids]
        if not self.queries:
            count = len(self.slot)
            for n in self.lengths:
                self.queries.append(np.empty((count, q.shape[1], n, q.shape[3]), np.float32))
                self.keys.append(np.empty((count, k.shape[1], n, k.shape[3]), np.float32))
                self.lse.append(np.zeros((count, q.shape[1], n), np.float32))
        for b, n in enumerate(self.lengths):
            self.queries[b][slot] = q[b, :, :n].float().cpu().numpy()
            self.keys[b][slot] = k[b, :, :n].float().cpu().numpy()
            if lse is None:
                self.has_lse = False
            else:
                self.lse[b][slot] = lse[b, :, :n].float().cpu().numpy()
        return None, None, None


def _seq2seq_pass(model: Any, inputs: dict[str, Any], recorder: Any, encoder_only: bool,
                  picked: list[int], head_ids: tuple[int, ...] | None, chosen: bool
                  ) -> tuple[np.ndarray, np.ndarray, Any]:
    """An encoder-decoder model's pass, with SDPA and hooks on the projections: the encoder's
    chosen queries and keys (see :func:`_recorded_pass`), and the
    :class:`~attnscope.lazy_seq2seq.Seq2SeqRecorder` that holds the decoder's and the cross
    attention's (None without a decoder text)."""
    import torch

    from attnscope.lazy_seq2seq import Seq2SeqRecorder

    seq2seq_recorder = None if encoder_only else Seq2SeqRecorder(model)
    if seq2seq_recorder is not None and chosen and max(picked) >= seq2seq_recorder.num_layers:
        raise AttnscopeError(
            f"Layer {max(picked)} is past {model.name}'s {seq2seq_recorder.num_layers} "
            "decoder layers; choose layers both stacks have, or leave out the decoder text."
        )
    with torch.inference_mode():
        decoder_hooks = seq2seq_recorder or contextlib.nullcontext()
        with _fast_attention(model.model), recorder, decoder_hooks:
            # without a decoder text, an encoder-decoder model runs its encoder alone; with
            # one, no cache, so every decoder key goes through the hooked projection
            runner = model.model.get_encoder() if encoder_only else model.model
            cache = {"use_cache": False} if seq2seq_recorder is not None else {}
            runner(**inputs, output_attentions=False, output_hidden_states=False,
                   return_dict=True, **cache)
        queries, keys, _ = recorder.per_layer(repeat_kv_heads=False)
    kv_heads = None
    if head_ids is not None:  # each chosen query head keeps its key head
        group = queries[0].shape[1] // keys[0].shape[1]
        kv_heads = [h // group for h in head_ids]
    q = _to_host([queries[i] for i in picked], head_ids)
    k = _to_host([keys[i] for i in picked], kv_heads)
    return q, k, seq2seq_recorder


def lazy_problem(model: Any) -> str | None:
    """The sentence saying why ``attention="lazy"`` cannot serve ``model``, or None when it
    can (the adapters rebuild its attention from queries and keys)."""
    from attnscope.adapters import get_adapter, supported

    families = [f for f in supported() if f not in _UNSUPPORTED_FAMILIES]
    if model.model_type in _UNSUPPORTED_FAMILIES:
        adapter_ok = False
    else:
        try:
            get_adapter(model)
            adapter_ok = True
        except AttnscopeError:
            adapter_ok = False
    if adapter_ok:
        return None
    return (f"attention=\"lazy\" cannot yet rebuild the attention of {model.model_type!r} "
            f"models; it works for {', '.join(families)}; use attention=\"eager\" for this one.")


def _to_host(layers: list[Any], heads: list[int] | tuple[int, ...] | None = None
             ) -> np.ndarray:
    """L tensors ``[1, H, T, d]`` -> one float32 array ``[L, H, T, d]`` (only ``heads``, in
    that order, when given), copied one layer at a time and each tensor released as soon as it
    is copied (the list is emptied), so the peak stays near one copy."""
    first = layers[0]
    count = first.shape[1] if heads is None else len(heads)
    out = np.empty((len(layers), count, *first.shape[2:]), np.float32)
    for i in range(len(layers)):
        tensor = layers[i][0] if heads is None else layers[i][0][list(heads)]
        out[i] = tensor.float().cpu().numpy()
        layers[i] = None
    return out


# Families the adapters know whose attention lazy capture does not yet rebuild (none today:
# T5's relative position bias is added to each tile from its bucket table).
_UNSUPPORTED_FAMILIES: frozenset[str] = frozenset()


class _fast_attention:
    """Switch ``model`` to a fast attention implementation (SDPA, or lazy capture's recording
    one) for the ``with`` block, under a lock, and back to what it used, error or not."""

    def __init__(self, model: Any, implementation: str = "sdpa") -> None:
        self.model = model
        self.implementation = implementation
        self.previous: str | None = None

    def __enter__(self) -> _fast_attention:
        _SWITCH_LOCK.acquire()
        try:
            self.previous = getattr(self.model.config, "_attn_implementation", None) or "eager"
            if self.previous != self.implementation:
                self.model.set_attn_implementation(self.implementation)
        except BaseException as err:
            _SWITCH_LOCK.release()
            if isinstance(err, (AttributeError, ValueError, ImportError)):
                raise AttnscopeError(
                    f"attention=\"lazy\" runs the model with SDPA attention, which this model "
                    f"cannot switch to ({err}); use attention=\"eager\"."
                ) from None
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.previous is not None and self.previous != self.implementation:
                self.model.set_attn_implementation(self.previous)
        finally:
            _SWITCH_LOCK.release()


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AttnscopeError(f"{what} must be a whole number of 1 or more, not {value!r}.")
    return int(value)


# ----- the trace -------------------------------------------------------------------------------

_ARRAYS = ("input_ids", "token_type_ids", "special_mask", "word_ids", "offsets", "segment_ids",
           "queries", "keys", "lse", "scales")


@dataclass
class LazyTrace:
    """One text's attention, held as queries, keys and row log-sum-exps; weights on demand.

    Attributes:
        tokens, input_ids, token_type_ids, special_mask, word_ids, offsets, segment_ids,
            sentence_b_start, truncated: as in :class:`~attnscope.Trace` (``[T]``, offsets
            ``[T, 2]``).
        queries: ``[L, H, T, d]`` float32, post-rotary, as the model's attention used them.
        keys: ``[L, H_kv, T, d]`` float32, post-rotary; query head h uses key head
            ``h // (H // H_kv)``.
        lse: ``[L, H, T]`` float32, each row's log of the sum of exp(scaled, masked scores).
        scales: ``[L]`` the factor on q·k of each layer.
        causal: a query sees only keys at or before it. sliding_windows: per layer, None or
            the number of last keys (itself included) a query sees.
        layer_ids, head_ids: the model's layer and head behind each index, when the capture
            chose some (``layers=`` / ``heads=``); None: every one, in order.
        decoder, cross: for an encoder-decoder model captured with a decoder text, its decoder
            self-attention (a causal LazyTrace over the decoder tokens) and cross attention (a
            LazyTrace whose rows are the decoder tokens and whose keys ``[L, H, T_enc, d]``
            are the encoder's, ``num_keys`` = T_enc); else None.
    """

    model_name: str
    model_type: str
    architecture: str
    text: str
    text_b: str | None
    tokens: tuple[str, ...]
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    special_mask: np.ndarray
    word_ids: np.ndarray
    offsets: np.ndarray
    segment_ids: np.ndarray
    sentence_b_start: int | None
    truncated: int
    queries: np.ndarray
    keys: np.ndarray
    lse: np.ndarray
    scales: np.ndarray
    causal: bool
    sliding_windows: tuple[int | None, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    layer_ids: tuple[int, ...] | None = None
    head_ids: tuple[int, ...] | None = None
    decoder: LazyTrace | None = None
    cross: LazyTrace | None = None

    # ----- sizes -------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return int(self.queries.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.queries.shape[1])

    @property
    def num_kv_heads(self) -> int:
        return int(self.keys.shape[1])

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def num_keys(self) -> int:
        """The key columns: T, or the encoder's tokens for cross attention."""
        return int(self.keys.shape[2])

    @property
    def layer_numbers(self) -> tuple[int, ...]:
        """The model's layer behind each layer index (``layer_ids``, or 0..L-1)."""
        return self.layer_ids if self.layer_ids is not None else tuple(range(self.num_layers))

    @property
    def head_numbers(self) -> tuple[int, ...]:
        """The model's head behind each head index (``head_ids``, or 0..H-1)."""
        return self.head_ids if self.head_ids is not None else tuple(range(self.num_heads))

    @property
    def is_causal(self) -> bool:
        return bool(self.causal)

    @property
    def attentions(self) -> _AttentionIndexer:
        """Numpy-style exact tiles: ``lazy.attentions[layer, head, rows, cols]`` (ints and
        slices; an int drops its axis, as numpy does)."""
        return _AttentionIndexer(self)

    def __repr__(self) -> str:
        return (f"LazyTrace({self.model_name!r}, {self.num_tokens} tokens, {self.num_layers} "
                f"layers x {self.num_heads} heads, {self.num_kv_heads} key/value heads)")

    # ----- scores ------------------------------------------------------------------------------
    def _scores(self, layer: int, heads: Any, rows: np.ndarray, cols: np.ndarray) -> Any:
        """Masked, scaled scores ``[len(heads), len(rows), len(cols)]`` as a torch tensor
        (-inf where the model masks)."""
        import torch

        group = self.num_heads // self.num_kv_heads
        heads = np.asarray(heads)
        row_index, col_index = _as_index(rows), _as_index(cols)
        if group > 1 and len(heads) == self.num_heads and (heads == np.arange(len(heads))).all():
            # Every head: each key head serves its group of query heads in one product, so the
            # keys are never repeated (``[H_kv, group·r, d] @ [H_kv, d, c]``).
            q = torch.from_numpy(self.queries[layer][:, row_index])  # (H, r, d)
            q = q.reshape(self.num_kv_heads, group * q.shape[1], q.shape[2])
            k = torch.from_numpy(self.keys[layer][:, col_index])  # (H_kv, c, d)
            scores = torch.matmul(q, k.transpose(-1, -2)).reshape(len(heads), len(rows), -1)
        else:
            q = torch.from_numpy(self.queries[layer][heads][:, row_index])  # (h, r, d)
            k = torch.from_numpy(self.keys[layer][heads // group][:, col_index])  # (h, c, d)
            scores = torch.matmul(q, k.transpose(-1, -2))
        scores.mul_(float(self.scales[layer]))
        bias = self._position_bias(heads, rows, cols)
        if bias is not None:
            scores.add_(bias)
        if self.causal:
            for part in self._maskable(layer, rows, cols):
                mask = self._mask(layer, rows, cols[part])
                if mask is not None:
                    scores[..., part].masked_fill_(torch.from_numpy(mask)[None], float("-inf"))
        return scores

    def _position_bias(self, heads: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> Any:
        """T5's relative position bias ``[len(heads), r, c]`` (a torch tensor; the same in
        every layer), looked up from ``extra["position_bias"]``'s bucket table; None for
        families without one."""
        import torch

        spec = self.extra.get("position_bias")
        if not spec:
            return None
        from attnscope.adapters.positions import distance_buckets

        table = self.__dict__.get("_bias_table")
        if table is None:  # [num_buckets, H], read once from the JSON-able description
            table = torch.tensor(spec["table"], dtype=torch.float32)
            self.__dict__["_bias_table"] = table
        distance = torch.from_numpy(cols[None, :] - rows[:, None]).long()  # key - query
        buckets = distance_buckets(distance, bool(spec["bidirectional"]),
                                   int(spec["num_buckets"]), int(spec["max_distance"]))
        return table[:, torch.from_numpy(np.asarray(heads))][buckets].permute(2, 0, 1)

    def _maskable(self, layer: int, rows: np.ndarray, cols: np.ndarray) -> list[slice]:
        """The spans of ``cols`` where the model may hide a key from some row of ``rows``.

        Every column, unless the keys come in increasing order; then only the keys after the
        earliest row (causal) and, with a sliding window, those before the latest row's
        window: a row block of a long text masks an ``[r, r]`` corner, not ``[r, T]``."""
        n = len(cols)
        if n == 0 or not (np.diff(cols) > 0).all():
            return [slice(0, n)]
        after = int(np.searchsorted(cols, rows.min(), side="right"))  # cols[after:] > a row
        window = self.sliding_windows[layer] if self.sliding_windows else None
        if window is None:
            return [slice(after, n)]
        before = int(np.searchsorted(cols, rows.max() - window + 1))  # may be out of a window
        if before >= after:
            return [slice(0, n)]
        return [slice(0, before), slice(after, n)]

    def _mask(self, layer: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        """``[r, c]`` True where query ``rows[i]`` may not see key ``cols[j]``, or None where
        every query sees every key."""
        if not self.causal:
            return None
        window = self.sliding_windows[layer] if self.sliding_windows else None
        if len(rows) and len(cols) and rows.min() >= cols.max() and (
                window is None or rows.max() - cols.min() < window):
            return None  # every key at or before every query, within the window: none hidden
        diff = rows[:, None] - cols[None, :]  # how far back the key is
        hidden = diff < 0
        if window is not None:
            hidden |= diff >= window
        return hidden

    def _compute_lse(self, block: int) -> None:
        import torch

        T = self.num_tokens
        lse = np.empty(self.queries.shape[:3], np.float32)
        heads = np.arange(self.num_heads)
        all_cols = np.arange(self.num_keys)
        with torch.inference_mode():
            for layer in range(self.num_layers):
                for start in range(0, T, block):
                    rows = np.arange(start, min(start + block, T))
                    cols = all_cols[: rows[-1] + 1] if self.causal else all_cols
                    scores = self._scores(layer, heads, rows, cols)
                    lse[layer, :, start : start + len(rows)] = torch.logsumexp(scores, -1).numpy()
        self.lse = lse

    def _log_weights(self, layer: int, heads: Any, rows: np.ndarray, cols: np.ndarray) -> Any:
        """``log P`` ``[len(heads), len(rows), len(cols)]`` as a torch tensor: the scores less
        each row's log-sum-exp (-inf where the model masks). Entropies read it directly, with
        no log of the weights."""
        import torch

        scores = self._scores(layer, heads, rows, cols)
        lse = torch.from_numpy(self.lse[layer][np.asarray(heads)][:, rows])  # (h, r)
        return scores.sub_(lse[..., None])

    def _weights(self, layer: int, heads: Any, rows: np.ndarray, cols: np.ndarray) -> Any:
        import torch

        return torch.exp(self._log_weights(layer, heads, rows, cols))  # exp(-inf) = 0: masked

    # ----- tiles -------------------------------------------------------------------------------
    def attention(self, layer: int = -1, head: int = 0, rows: Any = None, cols: Any = None,
                  *, budget: Any = None) -> np.ndarray:
        """Exact weights of one head, float32: ``[len(rows), len(cols)]``; an int for ``rows``
        or ``cols`` drops that axis. ``rows``/``cols``: None (all), an int, a slice or range
        with step, or a list of positions.

        Raises:
            AttnscopeError: a layer, head, row or column out of range, or a tile past the
                memory budget.
        """
        import torch

        layer = _index(layer, self.num_layers, "layer")
        head = _index(head, self.num_heads, "head")
        row_index, row_scalar = _positions(rows, self.num_tokens, "row")
        col_index, col_scalar = _positions(cols, self.num_keys, "column")
        _guard_array((len(row_index), len(col_index)), "This tile", budget)
        with torch.inference_mode():
            tile = self._weights(layer, [head], row_index, col_index)[0].numpy()
        if row_scalar:
            tile = tile[0]
        if col_scalar:
            tile = tile[..., 0]
        return tile

    def head_stats(self, block: int = DEFAULT_BLOCK) -> dict[str, np.ndarray]:
        """Per head statistics, streamed over row blocks (O(H·block·T) memory), each ``[L, H]``:

        - ``sink``: mean over query rows of the weight on the first token;
        - ``entropy``: mean over rows of −Σ_j P_ij log P_ij (nats);
        - ``distance``: mean over rows of Σ_j P_ij |i − j| (tokens);
        - ``previous``: mean over rows i ≥ 1 of P_i,i−1 (0 for a single token).
        """
        import torch

        block = _positive_int(block, "block")
        L, H, T = self.num_layers, self.num_heads, self.num_tokens
        sums = {name: np.zeros((L, H), np.float64)
                for name in ("sink", "entropy", "distance", "previous")}
        heads = np.arange(H)
        all_cols = np.arange(self.num_keys)
        with torch.inference_mode():
            for layer in range(L):
                for start in range(0, T, block):
                    rows = np.arange(start, min(start + block, T))
                    cols = all_cols[: rows[-1] + 1] if self.causal else all_cols
                    logp = self._log_weights(layer, heads, rows, cols)  # (H, r, c)
                    p = torch.exp(logp)  # masked keys: exp(-inf) = 0
                    # Masked keys have log P = -inf and P = 0; their product must count 0, not
                    # NaN. Without a window, a causal row block masks only its diagonal part.
                    window = self.sliding_windows[layer] if self.sliding_windows else None
                    masked = logp[..., start:] if self.causal and window is None else logp
                    masked.nan_to_num_(neginf=0.0)
                    s = sums
                    s["sink"][layer] += p[:, :, 0].sum(-1).double().numpy()
                    s["entropy"][layer] -= _row_dots(p, logp).sum(-1).double().numpy()
                    s["distance"][layer] += _distances(p, rows, len(cols)).double().numpy()
                    r = rows[(rows >= 1) & (rows <= len(cols))]  # key i-1 exists
                    if len(r):
                        picked = p[:, r - start, torch.from_numpy(r - 1)]  # (H, len(r))
                        s["previous"][layer] += picked.sum(-1).double().numpy()
        out = {name: (value / T).astype(np.float32) for name, value in sums.items()}
        out["previous"] = (sums["previous"] / max(T - 1, 1)).astype(np.float32)
        return out

    def to_dense(self, *, budget: Any = None) -> np.ndarray:
        """The whole ``[L, H, T, T]`` float32 array, after checking it fits the memory budget."""
        L, H, T = self.num_layers, self.num_heads, self.num_tokens
        _guard_array((L, H, T, self.num_keys), "The whole attention", budget)
        return self.attentions.select(slice(None), budget)

    def window(self, start: int, stop: int, *, renormalize: bool = False,
               budget: Any = None) -> Any:
        """An ordinary :class:`~attnscope.Trace` of tokens ``start:stop`` (rows and columns),
        so every view and analysis works on it.

        Its weights are the exact weights P[i, j] for i, j in the span: a row keeps only the
        weight it puts inside the span, so it sums to 1 only when the query sees nothing
        outside (a causal model's window from 0; the whole text). Analyses refuse rows that do
        not sum to 1; ``renormalize=True`` divides each row by its weight inside the span,
        which is the softmax restricted to the span's keys (as if keys outside were masked).
        ``trace.extra["lazy_window"]`` records the span, each row's inside weight and the
        choice. The window holds no hidden states.
        """
        T = self.num_tokens
        if self.num_keys != T:
            raise AttnscopeError("A window is a span of self-attention; cross attention's rows "
                                 "and keys are different texts (use attention() or "
                                 "attentions[...] for its tiles).")
        for value, what in ((start, "start"), (stop, "stop")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise AttnscopeError(f"The window's {what} must be a token position, not "
                                     f"{value!r}.")
        if not 0 <= start < stop <= T:
            raise AttnscopeError(
                f"A window needs 0 <= start < stop <= {T} (the number of tokens), not "
                f"start={start}, stop={stop}."
            )
        from attnscope.trace import Trace

        L, H, n = self.num_layers, self.num_heads, stop - start
        _guard_array((L, H, n, n), "The window's attention", budget)
        span = slice(start, stop)
        weights = self.attentions.select((slice(None), slice(None), span, span), budget)
        inside = weights.sum(-1, dtype=np.float64)  # (L, H, n)
        if renormalize:
            weights = (weights / np.maximum(inside, 1e-30)[..., None]).astype(np.float32)
        b_start = self.sentence_b_start
        if b_start is not None:
            b_start = b_start - start if start < b_start < stop else None
        offsets = np.asarray(self.offsets)[span]
        valid = offsets[(offsets >= 0).all(-1)]
        text = self.text[int(valid[:, 0].min()) : int(valid[:, 1].max())] if len(valid) else ""
        extra = dict(self.extra)
        extra["lazy_window"] = {"start": int(start), "stop": int(stop),
                                "renormalized": bool(renormalize),
                                "min_inside_weight": float(inside.min())}
        return Trace(
            model_name=self.model_name, model_type=self.model_type,
            architecture=self.architecture, text=text, text_b=None,
            tokens=self.tokens[span], input_ids=self.input_ids[span],
            token_type_ids=self.token_type_ids[span], special_mask=self.special_mask[span],
            word_ids=self.word_ids[span], offsets=offsets, segment_ids=self.segment_ids[span],
            sentence_b_start=b_start, attentions=weights,
            hidden_states=np.zeros((L + 1, n, 0), np.float32), extra=extra,
            layer_ids=self.layer_ids, head_ids=self.head_ids,
        )

    # ----- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save queries, keys and row statistics (not T² weights) to one ``.npz`` file,
        atomically; returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta: dict[str, Any] = {"format": _FORMAT, "format_version": _FORMAT_VERSION,
                                **self._meta()}
        arrays: dict[str, Any] = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        parts = {}
        for part in _PARTS:  # an encoder-decoder model's decoder and cross attention
            lazy = getattr(self, part)
            if lazy is not None:
                parts[part] = lazy._meta()
                arrays |= {f"{part}.{name}": np.asarray(getattr(lazy, name))
                           for name in _ARRAYS}
        if parts:
            meta["parts"] = parts
        with atomic_write(path, "wb", what="the lazy trace") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta, ensure_ascii=False)), **arrays)
        return path

    def _meta(self) -> dict[str, Any]:
        """The JSON-able fields, for :meth:`save`."""
        return {
            "model_name": self.model_name, "model_type": self.model_type,
            "architecture": self.architecture, "text": self.text, "text_b": self.text_b,
            "tokens": list(self.tokens), "sentence_b_start": self.sentence_b_start,
            "truncated": self.truncated, "causal": bool(self.causal),
            "sliding_windows": list(self.sliding_windows), "extra": self.extra,
            "layer_ids": None if self.layer_ids is None else list(self.layer_ids),
            "head_ids": None if self.head_ids is None else list(self.head_ids),
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LazyTrace:
        """Load a LazyTrace written by :meth:`save`; a file that is not one whole and
        consistent raises one :class:`AttnscopeError` sentence naming the file and the fault."""
        path = Path(path)
        try:
            return _read(cls, path)
        except _Bad as err:
            raise AttnscopeError(f"Cannot load the lazy trace '{path}': {err}.") from None


class _Bad(Exception):
    pass


def _read(cls: type[LazyTrace], path: Path) -> LazyTrace:
    import zipfile

    if not path.is_file():
        raise _Bad("there is no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            meta = json.loads(str(data["__meta__"])) if "__meta__" in names else None
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise _Bad("it is not a saved lazy trace (load ordinary traces with "
                           "Trace.load)")
            parts = meta.get("parts", {})
            if not isinstance(parts, dict) or not set(parts) <= set(_PARTS) \
                    or not all(isinstance(v, dict) for v in parts.values()):
                raise _Bad(f"its parts are not a map from {' / '.join(_PARTS)} to fields")
            wanted = {*_ARRAYS, *(f"{part}.{name}" for part in parts for name in _ARRAYS)}
            missing = sorted(wanted - names)
            if missing:
                raise _Bad(f"it has no {', '.join(missing)}")
            unknown = sorted(names - {"__meta__", *wanted})
            if unknown:
                raise _Bad(f"it holds unknown arrays {', '.join(unknown)}")
            arrays = {name: data[name] for name in wanted}
    except _Bad:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise _Bad(f"it is not a saved lazy trace ({type(err).__name__})") from None
    if meta.get("format_version") != _FORMAT_VERSION:
        raise _Bad(f"its format version {meta.get('format_version')!r} is not "
                   f"{_FORMAT_VERSION}")
    lazy = _build(cls, meta, {name: arrays[name] for name in _ARRAYS}, None)
    for part, fields in parts.items():
        prefix = f"{part}."
        try:
            sub = _build(cls, fields, {name: arrays[prefix + name] for name in _ARRAYS},
                         lazy.num_tokens if part == "cross" else None)
        except _Bad as err:
            raise _Bad(f"its {part} attention: {err}") from None
        if sub.num_layers != lazy.num_layers or sub.num_heads != lazy.num_heads:
            raise _Bad(f"its {part} attention holds {sub.num_layers} layers x "
                       f"{sub.num_heads} heads, not {lazy.num_layers} x {lazy.num_heads}")
        if part == "cross" and lazy.decoder is not None and sub.tokens != lazy.decoder.tokens:
            raise _Bad("its cross attention's rows are not the decoder's tokens")
        setattr(lazy, part, sub)
    return lazy


def _build(cls: type[LazyTrace], meta: dict[str, Any], arrays: dict[str, Any],
           key_count: int | None) -> LazyTrace:
    """One LazyTrace from its fields and arrays, checked; ``key_count`` is the number of key
    columns when they are not the trace's own tokens (cross attention)."""
    tokens = meta.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise _Bad("its tokens are not a non-empty list of strings")
    T = len(tokens)
    K = T if key_count is None else key_count
    q, k, lse, scales = (arrays[n] for n in ("queries", "keys", "lse", "scales"))
    for name, array in (("queries", q), ("keys", k), ("lse", lse), ("scales", scales)):
        if array.dtype != np.float32:
            raise _Bad(f"{name} is {array.dtype}, not float32")
    if q.ndim != 4 or q.shape[2] != T or 0 in q.shape:
        raise _Bad(f"queries has shape {q.shape}, not [L, H, {T}, d]")
    L, H, _, d = q.shape
    if k.ndim != 4 or k.shape[0] != L or k.shape[2:] != (K, d) or k.shape[1] < 1 \
            or H % k.shape[1]:
        raise _Bad(f"keys has shape {k.shape}, not [{L}, H_kv, {K}, {d}] with H_kv dividing {H}")
    if lse.shape != (L, H, T):
        raise _Bad(f"lse has shape {lse.shape}, not [{L}, {H}, {T}]")
    if scales.shape != (L,):
        raise _Bad(f"scales has shape {scales.shape}, not [{L}]")
    for name, array in (("queries", q), ("keys", k), ("lse", lse), ("scales", scales)):
        if not np.isfinite(array).all():
            raise _Bad(f"{name} holds NaN or infinite values")
    for name in ("input_ids", "token_type_ids", "special_mask", "word_ids", "segment_ids"):
        if arrays[name].shape != (T,):
            raise _Bad(f"{name} has shape {arrays[name].shape}, not [{T}]")
    if arrays["offsets"].shape != (T, 2):
        raise _Bad(f"offsets has shape {arrays['offsets'].shape}, not [{T}, 2]")
    windows = meta.get("sliding_windows")
    if not isinstance(windows, list) or len(windows) != L:
        raise _Bad(f"sliding_windows is not a list of {L} entries")
    from attnscope.trace import _ids_problem, _position_bias_problem

    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise _Bad("its extra is not an object")
    if extra.get("position_bias") is not None:
        problem = _position_bias_problem(extra["position_bias"], H)
        if problem:
            raise _Bad(problem)

    ids: dict[str, Any] = {}
    for name, count, what in (("layer_ids", L, "layer"), ("head_ids", H, "head")):
        value = meta.get(name)
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                           for v in value):
            value = tuple(value)
        problem = _ids_problem(value, name, count, what)
        if problem:
            raise _Bad(problem)
        ids[name] = value
    try:
        return cls(
            model_name=str(meta["model_name"]), model_type=str(meta["model_type"]),
            architecture=str(meta["architecture"]), text=str(meta["text"]),
            text_b=meta.get("text_b"), tokens=tuple(tokens),
            sentence_b_start=meta.get("sentence_b_start"), truncated=int(meta["truncated"]),
            causal=bool(meta["causal"]), sliding_windows=tuple(windows),
            extra=dict(meta.get("extra") or {}), **ids, **arrays,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise _Bad(f"its metadata is incomplete ({err})") from None


#: The attention parts an encoder-decoder LazyTrace may hold besides its encoder's.
_PARTS = ("decoder", "cross")


# ----- indexing --------------------------------------------------------------------------------

def _row_dots(a: Any, b: Any) -> Any:
    """``Σ_c a[h, r, c] · b[h, r, c]`` as ``[h, r]``: one batched matrix product, with no
    ``[h, r, c]`` temporary."""
    import torch

    h, r, c = a.shape
    return torch.bmm(a.reshape(h * r, 1, c), b.reshape(h * r, c, 1)).reshape(h, r)


def _distances(p: Any, rows: np.ndarray, num_cols: int) -> Any:
    """``Σ_i Σ_j P[h, i, j] · |i − j|`` per head, ``[h]`` float32, for a block of consecutive
    ``rows`` over keys ``0..num_cols-1``, without a ``[r, c]`` distance matrix.

    Keys left of the block (j < start ≤ i) contribute ``(i − start)·ΣP + Σ P·(start − j)``,
    keys right of it (j ≥ stop > i) ``(stop − i)·ΣP + Σ P·(j − stop)``: products with vectors,
    every term non-negative, so nothing cancels; only the block's own ``[r, r]`` keys take
    the elementwise ``|i − j|``."""
    import torch

    start, stop = int(rows[0]), int(rows[-1]) + 1
    into_block = torch.from_numpy((rows - start).astype(np.float32))  # i - start, (r,)
    from_block = torch.from_numpy((stop - rows).astype(np.float32))  # stop - i, (r,)
    total = torch.zeros(p.shape[0], dtype=torch.float32)
    before = min(start, num_cols)  # keys left of the block (cross attention may have fewer)
    if before > 0:
        left = p[:, :, :before]
        back = torch.arange(start, start - before, -1, dtype=torch.float32)  # start - j
        total += (left.sum(-1) * into_block + left @ back).sum(-1)
    inner = min(stop, num_cols)
    if inner > start:
        cols = np.arange(start, inner)
        near = torch.from_numpy(np.abs(rows[:, None] - cols[None, :]).astype(np.float32))
        total += (p[:, :, start:inner] * near).sum((-1, -2))
    if num_cols > stop:
        right = p[:, :, stop:]
        ahead = torch.arange(0, num_cols - stop, dtype=torch.float32)  # j - stop
        total += (right.sum(-1) * from_block + right @ ahead).sum(-1)
    return total


def _index(value: Any, size: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise AttnscopeError(f"The {what} must be a whole number, not {value!r}.")
    if not -size <= value < size:
        raise AttnscopeError(
            f"{what.capitalize()} {value} is out of range: there are {size} {what}s "
            f"(0 to {size - 1}, or negative from the end)."
        )
    return int(value) % size


def _as_index(positions: np.ndarray) -> slice | np.ndarray:
    """A slice for consecutive positions (numpy then takes a view, not a copy), else them."""
    if len(positions) and positions[-1] - positions[0] + 1 == len(positions) \
            and (len(positions) == 1 or bool((np.diff(positions) == 1).all())):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _positions(value: Any, size: int, what: str) -> tuple[np.ndarray, bool]:
    """(positions, whether the caller gave a single int) for rows or columns."""
    if value is None:
        return np.arange(size), False
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return np.array([_index(value, size, what)]), True
    if isinstance(value, slice):
        for bound in (value.start, value.stop):
            if bound is not None and not -size <= bound <= size:
                raise AttnscopeError(
                    f"The {what}s {value.start}:{value.stop} reach past the {size} {what}s.")
        value = range(*value.indices(size))
    try:
        positions = np.asarray(list(value) if isinstance(value, range) else value)
    except TypeError:
        positions = np.asarray([])
    if positions.ndim != 1 or (positions.size and not np.issubdtype(positions.dtype, np.integer)):
        raise AttnscopeError(f"The {what}s must be an int, a slice, a range or a list of "
                             f"positions, not {value!r}.")
    if positions.size == 0:
        raise AttnscopeError(f"The {what}s select no token.")
    if positions.min() < -size or positions.max() >= size:
        worst = int(positions.max() if positions.max() >= size else positions.min())
        raise AttnscopeError(
            f"The {what}s reach {worst}, out of range: there are {size} {what}s "
            f"(0 to {size - 1})."
        )
    return positions % size, False


class _AttentionIndexer:
    """``lazy.attentions[l, h, rows, cols]``: exact tiles with numpy's int/slice rules."""

    def __init__(self, lazy: LazyTrace) -> None:
        self.lazy = lazy

    @property
    def shape(self) -> tuple[int, int, int, int]:
        t = self.lazy
        return (t.num_layers, t.num_heads, t.num_tokens, t.num_keys)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.select(key, budget=None)

    def select(self, key: Any, budget: Any) -> np.ndarray:
        """``self[key]``, refused past ``budget`` bytes (see :func:`memory_budget`)."""
        import torch

        t = self.lazy
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 4:
            raise AttnscopeError(f"attentions has 4 axes (layer, head, row, column), not "
                                 f"{len(key)}.")
        key = key + (slice(None),) * (4 - len(key))
        layers, layer_scalar = _positions(key[0], t.num_layers, "layer")
        heads, head_scalar = _positions(key[1], t.num_heads, "head")
        rows, row_scalar = _positions(key[2], t.num_tokens, "row")
        cols, col_scalar = _positions(key[3], t.num_keys, "column")
        _guard_array((len(layers), len(heads), len(rows), len(cols)), "This selection", budget)
        out = np.empty((len(layers), len(heads), len(rows), len(cols)), np.float32)
        with torch.inference_mode():
            for a, layer in enumerate(layers):
                for r0 in range(0, len(rows), DEFAULT_BLOCK):
                    part = rows[r0 : r0 + DEFAULT_BLOCK]
                    out[a, :, r0 : r0 + len(part)] = t._weights(int(layer), heads, part,
                                                                cols).numpy()
        index = tuple(0 if scalar else slice(None)
                      for scalar in (layer_scalar, head_scalar, row_scalar, col_scalar))
        return out[index]
