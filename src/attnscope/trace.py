"""The Trace: one input's tokens, attention, hidden states and model facts, frozen.

A Trace is built once by :func:`attnscope.capture` and never changed in place (its arrays are
read-only); analyses and renderers read it and return new results. Shapes, for one input of
T tokens through a model with L layers, H heads and hidden size D:

* ``attentions``: float32 ``[L, H, T, T]`` -- query rows, key columns; each row sums to 1.
* ``hidden_states``: float32 ``[L+1, T, D]`` -- the embedding output first.
* ``queries``, ``keys``, ``values``: float32 ``[L, H, T, d_head]`` where an adapter supports
  the model family, else None.

Encoder-decoder models (T5, BART) also fill the ``decoder_*`` fields: ``decoder_attentions``
``[L_dec, H, T_dec, T_dec]``, ``cross_attentions`` ``[L_dec, H, T_dec, T]`` (decoder queries
over encoder keys) and ``decoder_hidden_states`` ``[L_dec+1, T_dec, D]``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError, check_index
from attnscope.files import atomic_write

__all__ = ["PARTS", "Trace", "check_attention"]

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
)


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
        if not np.isfinite(block).all():
            raise AttnscopeError(f"{what} holds NaN or infinite values; analyses need weights.")
        low = float(block.min())
        if low < -1e-6:
            raise AttnscopeError(
                f"{what} holds negative values (down to {low:.3g}); attention weights are "
                "never negative."
            )
        sums = block.sum(axis=-1, dtype=np.float64)
        worst = int(np.abs(sums - 1).argmax())
        if abs(sums[worst] - 1) > ROW_SUM_TOLERANCE:
            raise AttnscopeError(
                f"{what} has rows that do not sum to 1 (one sums to {sums[worst]:.4g}); "
                "attention weights are a softmax over the keys."
            )


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if self.decoder_tokens is not None:
            object.__setattr__(self, "decoder_tokens", tuple(self.decoder_tokens))
        for name in _ARRAY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                array = np.asarray(value)
                if array is value and array.flags.writeable:
                    array = array.view()  # a read-only view; the caller's array stays writable
                array.flags.writeable = False
                object.__setattr__(self, name, array)
        n = len(self.tokens)
        if self.attentions.ndim != 4 or self.attentions.shape[2:] != (n, n):
            raise ValueError(
                f"attentions must be [L, H, {n}, {n}] for {n} tokens, got {self.attentions.shape}"
            )

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

    def check(self, part: str = "self") -> Trace:
        """Check that one part's attention holds weights (finite, non-negative, rows summing to
        1), once per Trace and part; returns the Trace. Analyses call it first, so bad
        attention (from a file, another tool or a model run in low precision that overflowed)
        gives one sentence instead of a wrong number."""
        checked = self.__dict__.setdefault("_checked_parts", set())
        if part not in checked:
            attentions, _, _ = self.part(part)
            label = "the attention" if part in ("self", "encoder") else f"the {part} attention"
            check_attention(attentions, label)
            checked.add(part)
        return self

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
        """Save to one ``.npz`` file (uncompressed, exact); returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _ARRAY_FIELDS
        }
        meta["format_version"] = _FORMAT_VERSION
        arrays = {n: getattr(self, n) for n in _ARRAY_FIELDS if getattr(self, n) is not None}
        with atomic_write(path, "wb", what="the trace") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta, ensure_ascii=False)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trace:
        """Load a Trace written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise AttnscopeError(f"Cannot load a trace: file '{path}' does not exist.")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["__meta__"]))
                arrays = {name: data[name] for name in data.files if name != "__meta__"}
        except (OSError, ValueError, KeyError) as err:
            raise AttnscopeError(f"'{path}' is not an attnscope trace file ({err}).") from None
        version = meta.pop("format_version", None)
        if version != _FORMAT_VERSION:
            raise AttnscopeError(
                f"'{path}' is a trace of format {version}; this attnscope reads format "
                f"{_FORMAT_VERSION}."
            )
        return cls(**meta, **arrays)
