"""The Trace: one input's tokens, attention, hidden states and model facts, frozen.

A Trace is built once by :func:`attnscope.capture` and never changed in place (its arrays are
read-only); analyses and renderers read it and return new results. Shapes, for one input of
T tokens through a model with L layers, H heads and hidden size D:

* ``attentions``: float32 ``[L, H, T, T]`` -- query rows, key columns; each row sums to 1.
* ``hidden_states``: float32 ``[L+1, T, D]`` -- the embedding output first.
* ``queries``, ``keys``, ``values``: float32 ``[L, H, T, d_head]`` where an adapter supports
  the model family, else None.

A Trace from :func:`attnscope.generate` holds the prompt and the answer as one token
sequence and also fills ``answer_start`` (the position of the first generated token), ``roles``
(each token's part: ``"system"``, ``"user"``, ``"assistant"``, ``"markup"`` for chat-template
tokens, ``"prompt"`` for a plain-text prompt, ``"answer"`` for generated tokens),
``answer_probs`` ``[A]`` (each generated token's probability when it was chosen),
``answer_top_ids`` and ``answer_top_probs`` ``[A, k]`` (the k most likely tokens at each step)
and ``generation`` (the settings used and why it stopped). Where the prompt's own square was not
recorded, ``query_start`` is the first query row held: ``attentions`` is then
``[L, H, T - query_start, T]`` (each generated token's row over every token), and analyses that
need the whole square say so.

A Trace captured with ``layers=`` or ``heads=`` holds only those: ``layer_ids`` (``[L]``) and
``head_ids`` (``[H]``) name the model's layer and head each index of ``attentions`` stands for
(None: every one, in order), and ``hidden_states[0]`` is the embedding output,
``hidden_states[k + 1]`` the output of layer ``layer_ids[k]``.

Encoder-decoder models (T5, BART) also fill the ``decoder_*`` fields: ``decoder_attentions``
``[L_dec, H, T_dec, T_dec]``, ``cross_attentions`` ``[L_dec, H, T_dec, T]`` (decoder queries
over encoder keys) and ``decoder_hidden_states`` ``[L_dec+1, T_dec, D]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import numbers
import os
import stat
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeGuard

import numpy as np
from numpy.lib import format as npy_format

from attnscope.errors import AttnscopeError, check_flag, check_index, check_number
from attnscope.files import atomic_write, describe_os_error

__all__ = ["PARTS", "ROLES", "SPECIAL_TOKENS", "Trace", "attention_array", "check_attention",
           "float_array", "require_trace"]

_FORMAT_VERSION = 1

#: How far a row of attention weights may sum from 1 and still count as a distribution. Models
#: run in float16 or bfloat16 round each weight, so long rows drift by up to about 1e-3.
ROW_SUM_TOLERANCE = 1e-2

#: Names of the attention parts a Trace may hold. "self" is the attention of an encoder-only or
#: decoder-only model, and the encoder's self-attention of an encoder-decoder model.
PARTS = ("self", "decoder", "cross")

# Fields that hold arrays (saved as arrays); every other field is saved as JSON metadata.
_ARRAY_FIELDS = (
    "input_ids",
    "token_type_ids",
    "special_mask",
    "word_ids",
    "offsets",
    "segment_ids",
    "attentions",
    "hidden_states",
    "queries",
    "keys",
    "values",
    "decoder_input_ids",
    "decoder_special_mask",
    "decoder_word_ids",
    "decoder_offsets",
    "decoder_attentions",
    "decoder_hidden_states",
    "cross_attentions",
    "answer_probs",
    "answer_top_ids",
    "answer_top_probs",
)

#: What a token of a generation Trace is part of (``Trace.roles``).
ROLES = ("system", "user", "assistant", "markup", "prompt", "answer")


def check_attention(attentions: np.ndarray, what: str = "the attention") -> None:
    """Raise :class:`AttnscopeError` unless ``attentions`` ``[..., T_query, T_key]`` holds
    weights: finite, non-negative, each row summing to 1 (within ``ROW_SUM_TOLERANCE``).

    Analyses call this (through :meth:`Trace.check`) before computing anything, so NaN,
    infinities, negative weights or unnormalised rows give one sentence, never a wrong number.
    Arrays are checked one layer at a time to keep memory flat.
    """
    array = np.asarray(attentions)
    what = what[:1].upper() + what[1:]  # it starts the sentence
    if not np.issubdtype(array.dtype, np.floating):
        raise AttnscopeError(f"{what} must hold floating-point weights, not {array.dtype}.")
    if array.ndim < 2 or array.shape[-1] == 0:
        return
    blocks = array.reshape(-1, *array.shape[-2:]) if array.ndim > 2 else array[None]
    for block in blocks:  # (T_query, T_key)
        # a NaN or an infinity makes its row's float64 sum NaN or infinite (finite float32
        # weights never overflow it): one pass instead of a separate isfinite scan
        sums = block.sum(axis=-1, dtype=np.float64)
        if not np.isfinite(sums).all():
            raise AttnscopeError(f"{what} holds NaN or infinite values; analyses need weights.")
        low = float(block.min())
        if low < -1e-6:
            raise AttnscopeError(
                f"{what} holds negative values (down to {low:.3g}); attention weights are "
                "never negative."
            )
        worst = int(np.abs(sums - 1).argmax())
        if abs(sums[worst] - 1) > ROW_SUM_TOLERANCE:
            raise AttnscopeError(
                f"{what} has rows that do not sum to 1 (one sums to {sums[worst]:.4g}); "
                "attention weights are a softmax over the keys."
            )


#: Token strings taken for special tokens in a Trace built from arrays.
SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "[MASK]", "<s>", "</s>", "<pad>",
                            "<|endoftext|>", "<bos>", "<eos>", "<|begin_of_text|>"})


def float_array(value: Any, what: str) -> np.ndarray:
    """``value`` (torch of any dtype and device, numpy, nested lists) as a float32 array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        value = value.numpy()
    elif hasattr(value, "__array__") or hasattr(value, "__array_interface__"):
        value = np.asarray(value)  # JAX, CuPy on the host, pandas ...
    try:
        array = np.asarray(value)
        if array.dtype == object or array.dtype.kind in "USV":
            raise TypeError
        complex_numbers = array.dtype.kind == "c"
        if not complex_numbers:
            return np.ascontiguousarray(array, dtype=np.float32)
    except (TypeError, ValueError):
        raise AttnscopeError(
            f"{_sentence(what)} must be a numeric array (numpy, torch or nested lists of "
            f"numbers), not {type(value).__name__}."
        ) from None
    # casting would drop the imaginary part without a word
    raise AttnscopeError(f"{_sentence(what)} holds complex numbers; attnscope takes real ones.")


def _sentence(what: str) -> str:
    """``what`` as the start of a sentence."""
    return what[:1].upper() + what[1:]


def attention_array(value: Any, what: str = "attentions", *, square: bool = True) -> np.ndarray:
    """Attention-shaped input as float32 ``[L, H, T_q, T_k]``.

    Takes ``[L, H, T_q, T_k]``, ``[H, T_q, T_k]`` (one layer), ``[T_q, T_k]`` (one head; only
    when ``square``), ``[L, 1, H, T_q, T_k]``, or a per-layer tuple or list of ``[1, H, T_q, T_k]``
    or ``[H, T_q, T_k]`` (bertviz's and transformers' ``outputs.attentions``). With ``square``
    False the last axis is a vector's (queries, keys and values ``[L, H, T, d]``).
    """
    if isinstance(value, (tuple, list)) and value and hasattr(value[0], "shape"):
        # one array or tensor per layer (nested lists of numbers are one array)
        layers = [float_array(v, what) for v in value]
        batched = [a.shape[0] for a in layers if a.ndim == 4 and a.shape[0] != 1]
        if batched:
            raise AttnscopeError(
                f"{_sentence(what)} holds a batch of {batched[0]} inputs; pass one input "
                "(batch size 1)."
            )
        layers = [a[0] if a.ndim == 4 else a for a in layers]  # (H, T_q, T_k) each
        layer_shapes = {a.shape for a in layers}
        if len(layer_shapes) != 1 or len(next(iter(layer_shapes))) != 3:
            raise AttnscopeError(
                f"The layers of {what} must each be [1, H, T, T] of one shape, got "
                f"{sorted(str(list(s)) for s in layer_shapes)}."
            )
        array = np.stack(layers)  # (L, H, T_q, T_k)
    else:
        array = float_array(value, what)
    if array.ndim == 5:
        if array.shape[1] != 1:
            raise AttnscopeError(
                f"{_sentence(what)} holds a batch of {array.shape[1]} inputs; pass one input "
                "(batch size 1)."
            )
        array = array[:, 0]
    elif array.ndim == 3:
        array = array[None]  # one layer
    elif array.ndim == 2 and square:
        array = array[None, None]  # one head
    if array.ndim != 4:
        shapes = "[L, H, T, T], [H, T, T], [T, T]" if square else "[L, H, T, d], [H, T, d]"
        raise AttnscopeError(
            f"{_sentence(what)} must be shaped {shapes} or a per-layer tuple, got shape "
            f"{list(array.shape)}."
        )
    return np.ascontiguousarray(array)


@dataclass(frozen=True, eq=False, repr=False)
class Trace:
    """Everything attnscope recorded for one input. See the module docstring for shapes.

    Token fields (length T): ``tokens`` (strings as the tokenizer spells them), ``input_ids``,
    ``token_type_ids`` (zeros for models without them), ``special_mask`` (True for [CLS], [SEP],
    <s>, padding...), ``word_ids`` (index of the word each token belongs to, counted over both
    texts; -1 for special tokens), ``offsets`` ``[T, 2]`` (character span of the token in its own
    text; -1 where none), ``segment_ids`` (0 for ``text``, 1 for ``text_b``, -1 for special
    tokens), ``sentence_b_start`` (position of the first token of ``text_b`` for sentence pairs
    fed to one encoder or decoder, as bertviz takes it; None otherwise).

    ``unit`` is ``"token"``, or ``"word"`` after sub-words were merged (attention summed over
    the keys of a word and averaged over its queries). ``truncated`` counts tokens dropped
    because the text was longer than the model's limit.
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
    attentions: np.ndarray
    hidden_states: np.ndarray
    queries: np.ndarray | None = None
    keys: np.ndarray | None = None
    values: np.ndarray | None = None
    decoder_tokens: tuple[str, ...] | None = None
    decoder_input_ids: np.ndarray | None = None
    decoder_special_mask: np.ndarray | None = None
    decoder_word_ids: np.ndarray | None = None
    decoder_offsets: np.ndarray | None = None
    decoder_attentions: np.ndarray | None = None
    decoder_hidden_states: np.ndarray | None = None
    cross_attentions: np.ndarray | None = None
    unit: str = "token"
    truncated: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    answer_start: int | None = None
    roles: tuple[str, ...] | None = None
    answer_probs: np.ndarray | None = None
    answer_top_ids: np.ndarray | None = None
    answer_top_probs: np.ndarray | None = None
    generation: dict[str, Any] | None = None
    query_start: int = 0
    layer_ids: tuple[int, ...] | None = None
    head_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", _token_tuple(self.tokens, "tokens"))
        if self.decoder_tokens is not None:
            object.__setattr__(
                self, "decoder_tokens", _token_tuple(self.decoder_tokens, "decoder_tokens")
            )
        for name in _ARRAY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                array = np.asarray(value)
                if array is value and array.flags.writeable:
                    array = array.view()  # a read-only view; the caller's array stays writable
                array.flags.writeable = False
                object.__setattr__(self, name, array)
        if self.roles is not None and not isinstance(self.roles, str):
            with contextlib.suppress(TypeError):
                object.__setattr__(self, "roles", tuple(self.roles))
        for name in ("layer_ids", "head_ids"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple, np.ndarray)) and all(
                    isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
                object.__setattr__(self, name, tuple(int(v) for v in value))
        for name in ("sentence_b_start", "truncated", "answer_start", "query_start"):
            # numpy integers become plain ints
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        problem = _field_problem(self)
        if problem is not None:
            raise InvalidTraceError(problem)

    # ----- sizes -------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """L, the number of (encoder) layers."""
        return int(self.attentions.shape[0])

    @property
    def num_heads(self) -> int:
        """H, the number of heads per layer."""
        return int(self.attentions.shape[1])

    @property
    def num_tokens(self) -> int:
        """T, the number of (encoder) tokens."""
        return len(self.tokens)

    @property
    def is_causal(self) -> bool:
        return self.architecture == "decoder"

    @property
    def layer_numbers(self) -> tuple[int, ...]:
        """The model's layer behind each index of ``attentions`` (``layer_ids``, or 0..L-1)."""
        return self.layer_ids if self.layer_ids is not None else tuple(range(self.num_layers))

    @property
    def head_numbers(self) -> tuple[int, ...]:
        """The model's head behind each index of ``attentions`` (``head_ids``, or 0..H-1)."""
        return self.head_ids if self.head_ids is not None else tuple(range(self.num_heads))

    @property
    def is_generation(self) -> bool:
        """Whether this Trace holds a prompt and the answer a model generated for it."""
        return self.answer_start is not None

    @property
    def has_square(self) -> bool:
        """Whether ``attentions`` holds every query row (False for a generation Trace that
        recorded only the answer's rows)."""
        return self.query_start == 0

    @property
    def parts(self) -> tuple[str, ...]:
        """The attention parts held: ("self",) or ("self", "decoder", "cross")."""
        return PARTS if self.decoder_attentions is not None else ("self",)

    # ----- access ------------------------------------------------------------------------------
    def part(self, part: str = "self") -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
        """Attention of one part with its query and key tokens.

        Returns ``(attentions [L, H, T_query, T_key], query_tokens, key_tokens)``. ``part`` is
        "self" (also "encoder"), or for encoder-decoder models "decoder" or "cross".
        """
        name = "self" if part == "encoder" else part
        if name not in self.parts:
            raise AttnscopeError(
                f"Attention part {part!r} is not in this trace; it holds {', '.join(self.parts)}."
            )
        if name == "self":
            return self.attentions, self.tokens, self.tokens
        assert self.decoder_tokens is not None
        if name == "decoder":
            assert self.decoder_attentions is not None
            return self.decoder_attentions, self.decoder_tokens, self.decoder_tokens
        assert self.cross_attentions is not None
        return self.cross_attentions, self.decoder_tokens, self.tokens

    def attention(self, layer: int = -1, head: int = 0, part: str = "self") -> np.ndarray:
        """One head's attention matrix ``[T_query, T_key]``; negative indices count from the end."""
        attentions, _, _ = self.part(part)
        layer = check_index(layer, attentions.shape[0], "layer")
        head = check_index(head, attentions.shape[1], "head")
        return attentions[layer, head]

    def check(self, part: str = "self", *, rows_only: bool = False) -> Trace:
        """Check that one part's attention holds weights (finite, non-negative, rows summing to
        1), once per Trace and part; returns the Trace. Analyses call it first, so bad
        attention (from a file, another tool or a model run in low precision that overflowed)
        gives one sentence instead of a wrong number.

        A generation Trace that holds only the answer's rows passes only with ``rows_only``
        (what the generation view and per-row measures take); analyses that need the whole
        square get one sentence saying how to record it.
        """
        if not self.has_square and not rows_only and part in ("self", "encoder"):
            raise AttnscopeError(
                f"This trace holds the attention of the answer's tokens only (rows "
                f"{self.query_start} to {self.num_tokens - 1}); this needs every token's row: "
                "generate with prompt_attention=True, or capture the text with "
                "attnscope.capture(model, trace.input_ids)."
            )
        checked = self.__dict__.setdefault("_checked_parts", set())
        if part not in checked:
            attentions, _, _ = self.part(part)
            label = "the attention" if part in ("self", "encoder") else f"the {part} attention"
            check_attention(attentions, label)
            checked.add(part)
        return self

    # ----- from arrays ------------------------------------------------------------------------
    @classmethod
    def from_attentions(
        cls,
        attentions: Any,
        tokens: Sequence[str],
        *,
        sentence_b_start: int | None = None,
        causal: bool | None = None,
        hidden_states: Any = None,
        queries: Any = None,
        keys: Any = None,
        values: Any = None,
        model_name: str | None = None,
        scale: float | None = None,
    ) -> Trace:
        """A Trace from attention weights computed anywhere: your own module, another library,
        a paper's matrix.

        Args:
            attentions: numpy, torch (any dtype, any device) or anything array-like, shaped
                ``[L, H, T, T]``, ``[H, T, T]`` (one layer) or ``[T, T]`` (one head), or
                bertviz's per-layer tuple of ``[1, H, T, T]``. Rows are queries, columns keys;
                every row must sum to 1.
            tokens: the T tokens, as strings.
            sentence_b_start: position of the first token of a second sentence, if any.
            causal: whether queries only see earlier keys; by default, True exactly when no
                query attends to a later key.
            hidden_states: ``[L+1, T, D]`` (embedding output first), for PCA and token paths.
            queries, keys: ``[L, H, T, d]`` (or per-layer tuples), for the neuron view and
                ``explain``; values ``[L, H, T, d_v]``.
            model_name: shown in titles (default "attention").
            scale: the factor on q·k when ``queries`` and ``keys`` are given (default
                ``1/sqrt(d)``).

        Raises:
            AttnscopeError: a shape that does not fit the tokens, NaN or infinite values,
                negative weights, rows that do not sum to 1, or ``causal=True`` with a query
                attending to a later key; the sentence says which.
        """
        if isinstance(tokens, str) or not isinstance(tokens, Sequence):
            raise AttnscopeError(
                "tokens must be a list of token strings, one per row of the attention, not "
                f"{type(tokens).__name__}."
            )
        tokens = tuple(str(t) for t in tokens)
        if causal is not None:
            causal = check_flag(causal, "causal")
        scale = check_number(scale, "scale", above=0, none_ok=True)
        if model_name is not None and not isinstance(model_name, str):
            raise AttnscopeError(f"model_name must be a string, not {type(model_name).__name__}.")
        att = attention_array(attentions, "attentions")
        n = len(tokens)
        if att.shape[2] != att.shape[3]:
            raise AttnscopeError(
                f"Self-attention is square over the tokens, but the attentions are "
                f"{att.shape[2]} x {att.shape[3]}."
            )
        if att.shape[2] != n:
            raise AttnscopeError(
                f"The attention covers {att.shape[2]} tokens but {n} tokens were given."
            )
        if n == 0 or att.shape[0] * att.shape[1] == 0:
            raise AttnscopeError("The attentions are empty: there is nothing to look at.")
        try:
            check_attention(att, "the attentions")
        except AttnscopeError as err:
            columns = att.sum(axis=-2, dtype=np.float64)  # (L, H, T_k)
            if np.all(np.abs(columns - 1) <= ROW_SUM_TOLERANCE):
                raise AttnscopeError(
                    f"{err} Its columns sum to 1 instead: pass the transpose, queries as rows."
                ) from None
            raise
        later = bool(np.any(np.triu(att, k=1) > 0))  # some query attends to a later key
        if causal is None:
            causal = n > 1 and not later
        elif causal and later:
            raise AttnscopeError(
                "causal=True, but some query attends to a later key; pass causal=False."
            )
        layers, heads = att.shape[:2]
        fields: dict[str, Any] = {}
        if hidden_states is not None:
            states = float_array(hidden_states, "hidden_states")
            if states.ndim != 3 or states.shape[:2] != (layers + 1, n):
                raise AttnscopeError(
                    f"hidden_states must be [{layers + 1}, {n}, D] (the embedding output, then "
                    f"each of the {layers} layers' outputs), got {list(states.shape)}."
                )
            if not _all_finite(states):
                raise AttnscopeError("hidden_states holds NaN or infinite values.")
        else:
            states = np.zeros((layers + 1, n, 0), dtype=np.float32)  # none: D = 0
        if (queries is None) != (keys is None):
            raise AttnscopeError("Pass queries and keys together (values are optional).")
        for name, value in (("queries", queries), ("keys", keys), ("values", values)):
            if value is None:
                continue
            array = attention_array(value, name, square=False)
            if array.shape[:3] != (layers, heads, n):
                raise AttnscopeError(
                    f"{name} must be [{layers}, {heads}, {n}, d] to match the attentions, got "
                    f"{list(array.shape)}."
                )
            if not _all_finite(array):
                raise AttnscopeError(f"{name} holds NaN or infinite values.")
            fields[name] = array
        extra: dict[str, Any] = {"source": "arrays"}
        if scale is not None:
            extra["attention_scale"] = scale
        if sentence_b_start is not None:  # (negative counts from the end, as indices do)
            sentence_b_start = check_index(sentence_b_start, n, "sentence_b_start",
                                           "token positions")
        special = np.array([t.strip() in SPECIAL_TOKENS for t in tokens], dtype=bool)
        segment = np.zeros(n, dtype=np.int64)
        if sentence_b_start is not None:
            segment[sentence_b_start:] = 1
        trace = cls(
            model_name=model_name or "attention", model_type="unknown",
            architecture="decoder" if causal else "encoder", text=" ".join(tokens), text_b=None,
            tokens=tokens, input_ids=np.zeros(n, dtype=np.int64), token_type_ids=segment.copy(),
            special_mask=special, word_ids=np.where(special, -1, np.arange(n)),
            offsets=np.full((n, 2), -1, dtype=np.int64),
            segment_ids=np.where(special, -1, segment), sentence_b_start=sentence_b_start,
            attentions=att, hidden_states=states, extra=extra, **fields,
        )
        trace.__dict__["_checked_parts"] = {"self"}
        return trace

    @property
    def has_hidden_states(self) -> bool:
        """Whether the Trace holds hidden states (one built from attention alone does not)."""
        return self.hidden_states.ndim == 3 and self.hidden_states.shape[-1] > 0

    def replace(self, **changes: Any) -> Trace:
        """A new Trace with some fields changed (this one stays as it is)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        parts = f", parts={list(self.parts)}" if len(self.parts) > 1 else ""
        qkv = ", with q/k/v" if self.queries is not None else ""
        return (
            f"Trace({self.model_name!r}, {text!r}, {self.num_tokens} {self.unit}s, "
            f"{self.num_layers} layers x {self.num_heads} heads{parts}{qkv})"
        )

    # ----- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to one ``.npz`` file (uncompressed, exact); returns the path written.

        The file is written atomically: a failure or Ctrl-C leaves any previous file whole.
        """
        path = _trace_path(path, "save")
        if os.path.isdir(path):  # (os.path never raises, even for a name too long)
            raise AttnscopeError(f"Cannot write the trace '{path}': it is a folder.")
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _ARRAY_FIELDS
        }
        meta["format_version"] = _FORMAT_VERSION
        try:
            meta_json = json.dumps(meta, ensure_ascii=False, default=_json_value)
        except (TypeError, ValueError) as err:
            raise AttnscopeError(
                f"Cannot save the trace '{path}': its metadata cannot be written as JSON ({err})."
            ) from None
        arrays = {n: getattr(self, n) for n in _ARRAY_FIELDS if getattr(self, n) is not None}
        with atomic_write(path, "wb", what="the trace") as fh:
            np.savez(fh, __meta__=np.array(meta_json), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        """Load a Trace written by :meth:`save`.

        A file that is not a whole, consistent trace -- empty, truncated, damaged, of another
        kind, with unknown or missing fields, arrays of the wrong shape or type, or attention
        that is not weights (NaN, negative, rows not summing to 1) -- raises one
        :class:`AttnscopeError` sentence naming the file and what is wrong. Every array's
        shape, type and size is checked from its header against the bytes really stored
        before any data is read, so loading never takes much more memory than the file's size.
        """
        path = _trace_path(path, "load")
        try:
            meta, arrays = _read_trace_file(path)
            fields = _meta_fields(meta)
            missing = [name for name in _REQUIRED_ARRAYS if name not in arrays]
            if missing:
                raise _BadFile(f"it has no {_names(missing)} array")
            try:
                trace = cls(**fields, **arrays)
            except InvalidTraceError as err:
                raise _BadFile(err.problem) from None
            for part in trace.parts:
                try:
                    trace.check(part, rows_only=True)
                except AttnscopeError as err:
                    message = str(err).rstrip(".")
                    raise _BadFile(message[:1].lower() + message[1:]) from None
            for name in _FLOAT_FIELDS:  # queries, hidden states...: NaN is never a value
                array = getattr(trace, name)
                if array is not None and not _all_finite(array):
                    raise _BadFile(f"{name} holds NaN or infinite values")
        except _BadFile as err:
            # ascii() where the path itself cannot be printed (a lone surrogate, a NUL)
            shown = f"'{path}'" if str(path).isprintable() else ascii(str(path))
            raise AttnscopeError(f"Cannot load the trace {shown}: {err.reason}.") from None
        return trace


# ----- checks ----------------------------------------------------------------------------------

class InvalidTraceError(AttnscopeError):
    """Fields that do not make a Trace (wrong shapes, types, or parts that do not fit)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"Invalid Trace: {problem}.")
        self.problem = problem


_ARCHITECTURES = ("encoder", "decoder", "encoder-decoder")
_UNITS = ("token", "word")
_FLOAT_FIELDS = frozenset({
    "attentions", "hidden_states", "queries", "keys", "values",
    "decoder_attentions", "decoder_hidden_states", "cross_attentions",
    "answer_probs", "answer_top_probs",
})
_MASK_FIELDS = frozenset({"special_mask", "decoder_special_mask"})
_DECODER_FIELDS = (*(n for n in _ARRAY_FIELDS if n.startswith("decoder_")), "cross_attentions")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile file can hold megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _names(names: list[str]) -> str:
    return ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1]


def _token_tuple(tokens: Any, name: str) -> tuple[str, ...]:
    """``tokens`` as a tuple of strings, or :class:`InvalidTraceError`."""
    if isinstance(tokens, (str, bytes)):
        raise InvalidTraceError(f"{name} must be a sequence of strings, not one string")
    try:
        tokens = tuple(tokens)
    except TypeError:
        raise InvalidTraceError(
            f"{name} must be a sequence of strings, not {type(tokens).__name__}"
        ) from None
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise InvalidTraceError(
                f"{name} must all be strings, but token {i} is {type(token).__name__}"
            )
    return tokens


def _dtype_problem(name: str, array: np.ndarray) -> str | None:
    kind = array.dtype.kind
    if name in _FLOAT_FIELDS:
        ok, want = kind == "f", "floating-point numbers"
    elif name in _MASK_FIELDS:
        ok, want = kind in "biu", "booleans"
    else:
        ok, want = kind in "iu", "whole numbers"
    return None if ok else f"{name} must hold {want}, not {array.dtype}"


def _shape_problem(name: str, array: np.ndarray | None, want: tuple[int | None, ...],
                   pattern: str) -> str | None:
    """A sentence part when ``array`` is not of shape ``want`` (None: any size there)."""
    if array is None:
        return None
    shape = array.shape
    fits = len(shape) == len(want) and all(
        w is None or s == w for s, w in zip(shape, want, strict=True))
    if fits:
        return None
    sizes = ", ".join("*" if w is None else str(w) for w in want)
    return f"{name} must have shape {pattern} = [{sizes}], not {list(shape)}"


def _field_problem(t: Trace) -> str | None:
    """What makes ``t``'s fields not a Trace, or None. Checks types and shapes only (no
    scan of the values), so building a Trace stays cheap; :meth:`Trace.check` looks at the
    attention's values."""
    for name in ("model_name", "model_type", "architecture", "text"):
        if not isinstance(getattr(t, name), str):
            return f"{name} must be a string, not {type(getattr(t, name)).__name__}"
    if t.text_b is not None and not isinstance(t.text_b, str):
        return f"text_b must be a string or None, not {type(t.text_b).__name__}"
    if t.architecture not in _ARCHITECTURES:
        return (f"architecture must be 'encoder', 'decoder' or 'encoder-decoder', "
                f"not {_short(t.architecture)}")
    if t.unit not in _UNITS:
        return f"unit must be 'token' or 'word', not {_short(t.unit)}"
    if not _is_whole(t.truncated) or t.truncated < 0:
        return f"truncated must be a count of tokens (0 or more), not {_short(t.truncated)}"
    if not isinstance(t.extra, dict):
        return f"extra must be a dict, not {type(t.extra).__name__}"
    n = len(t.tokens)
    if n == 0:
        return "it has no tokens"
    for name in _ARRAY_FIELDS:
        array = getattr(t, name)
        if array is not None:
            problem = _dtype_problem(name, array)
            if problem:
                return problem

    start = t.query_start
    if not _is_whole(start) or not 0 <= start < n:
        return f"query_start must be a token position from 0 to {n - 1}, not {_short(start)}"
    if start == 0:
        problem = _shape_problem("attentions", t.attentions, (None, None, n, n), "[L, H, T, T]")
    else:
        problem = _shape_problem("attentions", t.attentions, (None, None, n - start, n),
                                 "[L, H, T - query_start, T]")
    if problem:
        return problem
    layers, heads = t.attentions.shape[:2]
    if layers == 0 or heads == 0:
        return f"attentions holds {layers} layers of {heads} heads; a Trace needs at least one"
    checks: list[tuple[str, tuple[int | None, ...], str]] = [
        ("input_ids", (n,), "[T]"),
        ("token_type_ids", (n,), "[T]"),
        ("special_mask", (n,), "[T]"),
        ("word_ids", (n,), "[T]"),
        ("offsets", (n, 2), "[T, 2]"),
        ("segment_ids", (n,), "[T]"),
        ("hidden_states", (layers + 1, n, None), "[L+1, T, D]"),
    ]
    # Queries and keys share d_head (their dot products are the scores); values may differ.
    d_head = t.queries.shape[-1] if t.queries is not None and t.queries.ndim == 4 else None
    checks += [
        ("queries", (layers, heads, n, None), "[L, H, T, d_head]"),
        ("keys", (layers, heads, n, d_head), "[L, H, T, d_head]"),
        ("values", (layers, heads, n, None), "[L, H, T, d_v]"),
    ]

    if t.decoder_tokens is None:
        for name in _DECODER_FIELDS:
            if getattr(t, name) is not None:
                return f"{name} is given but decoder_tokens is not"
    else:
        m = len(t.decoder_tokens)
        if m == 0:
            return "decoder_tokens is empty"
        if (t.decoder_attentions is None) != (t.cross_attentions is None):
            return "decoder_attentions and cross_attentions must be given together"
        dec_layers: int | None = None
        if t.decoder_attentions is not None:
            problem = _shape_problem("decoder_attentions", t.decoder_attentions,
                                     (None, None, m, m), "[L_dec, H_dec, T_dec, T_dec]")
            if problem:
                return problem
            dec_layers, dec_heads = t.decoder_attentions.shape[:2]
            if dec_layers == 0 or dec_heads == 0:
                return (f"decoder_attentions holds {dec_layers} layers of {dec_heads} heads; "
                        "it needs at least one")
            checks.append(("cross_attentions", (dec_layers, dec_heads, m, n),
                           "[L_dec, H_dec, T_dec, T]"))
        checks += [
            ("decoder_input_ids", (m,), "[T_dec]"),
            ("decoder_special_mask", (m,), "[T_dec]"),
            ("decoder_word_ids", (m,), "[T_dec]"),
            ("decoder_offsets", (m, 2), "[T_dec, 2]"),
            ("decoder_hidden_states", (None if dec_layers is None else dec_layers + 1, m, None),
             "[L_dec+1, T_dec, D]"),
        ]
    for name, want, pattern in checks:
        problem = _shape_problem(name, getattr(t, name), want, pattern)
        if problem:
            return problem

    problem = (_ids_problem(t.layer_ids, "layer_ids", layers, "layer")
               or _ids_problem(t.head_ids, "head_ids", heads, "head"))
    if problem:
        return problem
    if t.layer_ids is not None and t.decoder_attentions is not None \
            and t.decoder_attentions.shape[0] != layers:
        return (f"layer_ids names {layers} layers but decoder_attentions holds "
                f"{t.decoder_attentions.shape[0]}; a selection of layers applies to both")
    b_start = t.sentence_b_start
    if b_start is not None and (not _is_whole(b_start) or not 0 <= b_start <= n):
        return (f"sentence_b_start must be None or a token position from 0 to {n}, "
                f"not {_short(b_start)}")
    return _generation_problem(t, n) or _extra_problem(t.extra, layers, heads)


def _ids_problem(ids: Any, name: str, count: int, what: str) -> str | None:
    """What is wrong with ``layer_ids`` / ``head_ids`` (None, or ``count`` distinct model
    indices in increasing order), or None."""
    if ids is None:
        return None
    if not isinstance(ids, tuple) or not all(_is_whole(i) and i >= 0 for i in ids):
        return f"{name} must be None or a list of {what} numbers (0 or more), not {_short(ids)}"
    if len(ids) != count:
        return f"{name} names {len(ids)} {what}s but the attention holds {count}"
    if any(a >= b for a, b in itertools.pairwise(ids)):
        return f"{name} must name each {what} once, in increasing order, not {_short(ids)}"
    return None


def _generation_problem(t: Trace, n: int) -> str | None:
    """What makes a generation Trace's own fields inconsistent, or None. These arrays are
    small (one row per generated token), so their values are checked here too."""
    answer = t.answer_start
    answer_fields = ("answer_probs", "answer_top_ids", "answer_top_probs")
    if answer is None:
        for name in (*answer_fields, "generation"):
            if getattr(t, name) is not None:
                return f"{name} is given but answer_start is not"
        if t.query_start:
            return "query_start is set but the trace holds no answer (answer_start is None)"
    else:
        if not _is_whole(answer) or not 1 <= answer <= n:
            return f"answer_start must be a token position from 1 to {n}, not {_short(answer)}"
        if t.query_start > answer:
            return (f"query_start ({t.query_start}) is past the answer's start ({answer}); the "
                    "answer's rows are always held")
        if t.generation is not None and not isinstance(t.generation, dict):
            return f"generation must be a dict or None, not {type(t.generation).__name__}"
        steps = n - answer
        k = t.answer_top_ids.shape[-1] if t.answer_top_ids is not None else None
        for name, want, pattern in (("answer_probs", (steps,), "[A]"),
                                    ("answer_top_ids", (steps, None), "[A, k]"),
                                    ("answer_top_probs", (steps, k), "[A, k]")):
            problem = _shape_problem(name, getattr(t, name), want, pattern)
            if problem:
                return problem
        for name in ("answer_probs", "answer_top_probs"):
            values = getattr(t, name)
            if values is not None and not (np.isfinite(values).all()
                                           and (values >= 0).all() and (values <= 1).all()):
                return f"{name} must hold probabilities from 0 to 1"
        ids = t.answer_top_ids
        if ids is not None and ids.size and int(ids.min()) < 0:
            return "answer_top_ids must hold token ids (0 or more)"
    if t.roles is not None:
        roles = t.roles
        if not isinstance(roles, tuple) or len(roles) != n:
            return f"roles must give one role per token ({n})"
        unknown = {r if isinstance(r, str) else type(r).__name__ for r in roles
                   if not isinstance(r, str) or r not in ROLES}
        if unknown:
            return (f"roles must each be one of {', '.join(ROLES)}, not "
                    f"{_short(sorted(map(str, unknown)))}")
    return None


#: The largest T5 bucket count a trace may hold (models use 32; the table is [buckets, H]).
_MAX_BUCKETS = 1 << 16


def _extra_problem(extra: dict[str, Any], layers: int, heads: int) -> str | None:
    """What is wrong with the facts in ``extra`` that attnscope reads back (the attention
    scale of each layer, key/value heads, rotary, T5's position bias, sliding windows), or
    None. Other keys are kept as they are and never read."""
    def positive(value: Any) -> bool:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value) and float(value) > 0)

    if "attention_scale" in extra and not positive(extra["attention_scale"]):
        return ("extra['attention_scale'] must be a positive number, not "
                f"{_short(extra['attention_scale'])}")
    scales = extra.get("attention_scales")
    if scales is not None and (not isinstance(scales, (list, tuple)) or len(scales) != layers
                               or not all(positive(v) for v in scales)):
        return (f"extra['attention_scales'] must be a list of {layers} positive numbers (one a "
                f"layer), not {_short(scales)}")
    windows = extra.get("sliding_windows")
    if windows is not None and (
            not isinstance(windows, (list, tuple)) or len(windows) != layers
            or not all(w is None or (_is_whole(w) and w > 0) for w in windows)):
        return (f"extra['sliding_windows'] must be a list of {layers} window sizes (a positive "
                f"whole number or None a layer), not {_short(windows)}")
    kv_heads = extra.get("num_key_value_heads")
    if kv_heads is not None and not (_is_whole(kv_heads) and 0 < kv_heads <= heads):
        return (f"extra['num_key_value_heads'] must be a whole number from 1 to {heads}, not "
                f"{_short(kv_heads)}")
    if "rotary" in extra and not isinstance(extra["rotary"], bool):
        return f"extra['rotary'] must be true or false, not {_short(extra['rotary'])}"
    for key in ("source", "qkv_adapter"):
        if key in extra and not isinstance(extra[key], str):
            return f"extra[{key!r}] must be a string, not {_short(extra[key])}"
    bias = extra.get("position_bias")
    if bias is not None:
        return _position_bias_problem(bias, heads)
    return None


def _position_bias_problem(bias: Any, heads: int) -> str | None:
    """What is wrong with a stored T5 position bias (see RelativePositionBias.to_json)."""
    want = (f"extra['position_bias'] must be T5's relative position bias (kind, num_buckets, "
            f"max_distance, bidirectional and a [num_buckets, {heads}] table)")
    if not isinstance(bias, dict) or bias.get("kind") != "t5_relative":
        return f"{want}, not {_short(bias)}"
    buckets, distance = bias.get("num_buckets"), bias.get("max_distance")
    if not (_is_whole(buckets) and 2 <= buckets <= _MAX_BUCKETS):
        return (f"extra['position_bias'] must have from 2 to {_MAX_BUCKETS} buckets, not "
                f"{_short(buckets)}")
    if not (_is_whole(distance) and distance > 0):
        return f"extra['position_bias'] must have a positive max_distance, not {_short(distance)}"
    if not isinstance(bias.get("bidirectional"), bool):
        return f"{want}; its bidirectional is {_short(bias.get('bidirectional'))}"
    table = bias.get("table")
    if not (isinstance(table, list) and len(table) == buckets
            and all(isinstance(row, list) and len(row) == heads for row in table)):
        return f"{want}; its table is not {buckets} rows of {heads} numbers"
    for row in table:
        for value in row:
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value)):
                return f"{want}; its table holds {_short(value)}"
    return None


def _all_finite(array: np.ndarray) -> bool:
    """Whether ``array`` holds no NaN or infinity; scans one slice of the first axis at a
    time, so memory stays flat however large it is."""
    array = np.asarray(array)
    if array.ndim < 2:
        return bool(np.isfinite(array).all())
    return all(np.isfinite(block).all() for block in array)


def _trace_path(path: Any, verb: str) -> Path:
    """``path`` as a Path, or one sentence when it is not a path at all (None, a number)."""
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    raise AttnscopeError(
        f"Trace.{verb} takes a file path (a string or pathlib.Path), not "
        f"{type(path).__name__}."
    )


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays (in ``extra``) as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# ----- reading trace files ---------------------------------------------------------------------

class _BadFile(Exception):
    """Why a file is not a trace, as the end of a sentence ("it is empty")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Array fields without a default: every trace file holds them.
_REQUIRED_ARRAYS = tuple(
    f.name for f in dataclasses.fields(Trace)
    if f.name in _ARRAY_FIELDS and f.default is dataclasses.MISSING
)
#: Metadata fields (JSON) and the types each may hold.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "model_name": (str,),
    "model_type": (str,),
    "architecture": (str,),
    "text": (str,),
    "text_b": (str, type(None)),
    "tokens": (list,),
    "sentence_b_start": (int, type(None)),
    "decoder_tokens": (list, type(None)),
    "unit": (str,),
    "truncated": (int,),
    "extra": (dict,),
    "answer_start": (int, type(None)),
    "roles": (list, type(None)),
    "generation": (dict, type(None)),
    "query_start": (int,),
    "layer_ids": (list, type(None)),
    "head_ids": (list, type(None)),
}
_REQUIRED_META = tuple(
    f.name for f in dataclasses.fields(Trace)
    if f.name in _META_TYPES
    and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def _read_trace_file(path: Path) -> tuple[Any, dict[str, Any]]:
    """The parsed JSON metadata and the arrays of a trace file, or :class:`_BadFile`.

    The archive must hold uncompressed ``.npy`` members named after Trace fields. Each
    member's header (shape, dtype) is read first and its size checked against the bytes
    stored, and the stored bytes of all members together against the file's size, so nothing
    larger than the file is ever allocated. Reading every member to its end checks its CRC.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 -- closed by the with below
    except (UnicodeEncodeError, ValueError):  # a lone surrogate or a NUL in the path
        raise _BadFile("the path holds characters that cannot be a file name") from None
    except FileNotFoundError:
        raise _BadFile("the file does not exist") from None
    except IsADirectoryError:
        raise _BadFile("it is a folder") from None
    except NotADirectoryError:
        raise _BadFile("a part of the path is a file, not a folder") from None
    except OSError as err:
        raise _BadFile(describe_os_error(err)) from None
    with handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise _BadFile("it is a folder")
        if not stat.S_ISREG(info.st_mode):
            raise _BadFile("it is not a regular file")
        if info.st_size == 0:
            raise _BadFile("the file is empty")
        try:
            start = handle.read(8)
            handle.seek(0)
            if start.startswith(b"\x93NUMPY"):
                raise _BadFile("it holds one numpy array (.npy), not a trace (.npz)")
            if not start.startswith(b"PK"):
                raise _BadFile("it is not a trace file (not an .npz archive)")
            with zipfile.ZipFile(handle) as archive:
                return _read_members(archive, info.st_size)
        except (_BadFile, MemoryError):
            raise
        except Exception as err:
            # A damaged archive fails in many ways inside zipfile, numpy's header parser and
            # json (BadZipFile, EOFError, struct.error, tokenize.TokenError...): all of them
            # mean the same thing to the person loading it.
            reason = _short(str(err) or type(err).__name__, 80)
            raise _BadFile(f"the file is damaged or truncated ({reason})") from None


def _read_members(archive: zipfile.ZipFile, file_size: int) -> tuple[Any, dict[str, np.ndarray]]:
    members = archive.infolist()
    known = {"__meta__", *_ARRAY_FIELDS}
    seen: set[str] = set()
    stored = 0
    for member in members:
        name = member.filename.removesuffix(".npy")
        if name not in known or not member.filename.endswith(".npy"):
            raise _BadFile(f"it holds {_short(member.filename)}, which is not a trace field")
        if name in seen:
            raise _BadFile(f"it holds {member.filename!r} twice")
        seen.add(name)
        if member.flag_bits & 0x1:
            raise _BadFile(f"{member.filename!r} is encrypted")
        if member.compress_type != zipfile.ZIP_STORED:
            raise _BadFile(
                f"{member.filename!r} is compressed; attnscope reads the uncompressed traces "
                "that Trace.save writes"
            )
        if member.file_size != member.compress_size:
            raise _BadFile(f"the sizes recorded for {member.filename!r} disagree")
        stored += member.compress_size
    if stored > file_size:
        raise _BadFile(
            f"its members claim {stored} bytes but the file holds {file_size}; it is damaged"
        )
    if "__meta__" not in seen:
        raise _BadFile("it has no metadata (__meta__); it was not written by Trace.save")

    meta: Any = None
    arrays: dict[str, np.ndarray] = {}
    for member in members:
        name = member.filename.removesuffix(".npy")
        with archive.open(member) as stream:
            array = _read_npy(stream, member, name)
        if name == "__meta__":
            meta = json.loads(array)
        else:
            arrays[name] = array
    return meta, arrays


def _read_npy(stream: IO[bytes], member: zipfile.ZipInfo, name: str) -> Any:
    """One ``.npy`` member: an array, or for ``__meta__`` its string. Checks the header's
    shape and dtype, and that it needs exactly the bytes stored, before reading the data."""
    what = repr(member.filename)
    version = npy_format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
    else:
        raise _BadFile(f"{what} is a .npy of version {version}, which traces never use")
    if any(size < 0 for size in shape):
        raise _BadFile(f"{what} declares the impossible shape {_short(list(shape))}")
    wanted_kinds = "U" if name == "__meta__" else "biuf"
    if (dtype.kind not in wanted_kinds or dtype.hasobject or dtype.fields is not None
            or dtype.subdtype is not None or (name == "__meta__" and shape != ())):
        raise _BadFile(f"{what} holds {dtype} values of shape {_short(list(shape))}, "
                       "which no trace field has")
    needed = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    available = member.file_size - stream.tell()
    if needed != available:
        raise _BadFile(
            f"{what} declares {needed} bytes of data but holds {max(available, 0)}; "
            "the file is damaged or truncated"
        )
    data = stream.read(needed)  # reading to the end also checks the CRC
    if len(data) != needed or stream.read(1):
        raise _BadFile(f"{what} is truncated")
    if name == "__meta__":
        little = dtype.byteorder == "<" or (dtype.byteorder in "=|" and sys.byteorder == "little")
        text = data.decode("utf-32-le" if little else "utf-32-be", errors="surrogatepass")
        return text.rstrip("\0")
    array = np.frombuffer(data, dtype=dtype)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    if dtype.kind == "b":
        array = array.view(np.uint8) != 0  # any byte but 0 is True
    return array.reshape(shape, order="F" if fortran_order else "C")


def _meta_fields(meta: Any) -> dict[str, Any]:
    """The Trace fields held in a file's JSON metadata, checked for names and JSON types."""
    if not isinstance(meta, dict):
        raise _BadFile(f"its metadata is a JSON {type(meta).__name__}, not an object")
    meta = dict(meta)
    version = meta.pop("format_version", None)
    if version != _FORMAT_VERSION:
        raise _BadFile(
            f"it is a trace of format {_short(version)}; this attnscope reads format "
            f"{_FORMAT_VERSION}"
        )
    unknown = sorted(set(meta) - set(_META_TYPES))
    if unknown:
        raise _BadFile(f"its metadata has unknown fields {_short(unknown)}")
    missing = [name for name in _REQUIRED_META if name not in meta]
    if missing:
        raise _BadFile(f"its metadata lacks {_names(missing)}")
    for name, value in meta.items():
        types = _META_TYPES[name]
        if not isinstance(value, types) or isinstance(value, bool):
            wanted = " or ".join("null" if t is type(None) else _JSON_NAMES[t] for t in types)
            raise _BadFile(f"its metadata field {name} must be {wanted}, not {_short(value)}")
    return meta


_JSON_NAMES = {str: "a string", int: "a whole number", list: "a list", dict: "an object"}


def require_trace(value: Any, what: str) -> Trace:
    """``value`` if it is a Trace, else one sentence saying what ``what`` takes instead."""
    if isinstance(value, Trace):
        return value
    if isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "detach"):
        raise AttnscopeError(
            f"{what} takes a Trace, not a bare array; make one with "
            "attnscope.Trace.from_attentions(attentions, tokens)."
        )
    if type(value).__name__ == "LazyTrace":
        raise AttnscopeError(
            f"{what} needs the attention held whole, which a LazyTrace does not; run it on a "
            "span with lazy.window(start, stop), or capture with attention=\"eager\" "
            "(head_patterns, layer_trends, attention_rollout and attention_flow take a LazyTrace "
            "as it is)."
        )
    raise AttnscopeError(
        f"{what} takes a Trace from attnscope.capture or Trace.from_attentions, not "
        f"{type(value).__name__}."
    )
