"""Tokenization: what the model sees, as data and as a readable table.

:func:`tokenize` is the one place attnscope turns text into model inputs; :func:`capture`
uses it too, so the table a person reads is exactly what the model ran on.
"""

from __future__ import annotations

import html
import logging
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError
from attnscope.models import LoadedModel

__all__ = ["CHAT_ROLES", "Tokenization", "TruncationWarning", "check_ids", "check_messages",
           "check_text", "decoder_tokens", "encode", "pad_inputs", "tokenize", "tokenize_chat",
           "tokenize_ids"]

#: The message roles a chat prompt may hold (each token's role in ``Tokenization.roles``, with
#: ``"markup"`` for what the chat template adds around them).
CHAT_ROLES = ("system", "user", "assistant")


class TruncationWarning(UserWarning):
    """The text was longer than the model's limit and its end was dropped."""


@dataclass(frozen=True, eq=False)
class Tokenization:
    """One text (or sentence pair) as the model sees it. All arrays have length T.

    ``model_inputs`` holds exactly what the model is called with (``input_ids``,
    ``attention_mask`` and, for models that use them, ``token_type_ids``), as int64 arrays.
    ``segment_ids`` is 0 for tokens of ``text``, 1 for ``text_b``, -1 for special tokens.
    ``offsets`` ``[T, 2]`` is each token's character span in its own text (-1 where none).
    ``dropped`` counts tokens cut off by truncation. ``roles`` (chat prompts only, from
    :func:`tokenize_chat`) gives each token's part: a message's role, or ``"markup"`` for what
    the chat template added.
    """

    text: str
    text_b: str | None
    tokens: tuple[str, ...]
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    special_mask: np.ndarray
    word_ids: np.ndarray
    offsets: np.ndarray
    segment_ids: np.ndarray
    sentence_b_start: int | None
    model_inputs: dict[str, np.ndarray]
    dropped: int = 0
    tokenizer: Any = field(default=None, repr=False)
    roles: tuple[str, ...] | None = None

    @cached_property
    def decoded(self) -> str:
        """The ids decoded back to text, special tokens left out."""
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(self.input_ids.tolist(), skip_special_tokens=True)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def round_trips(self) -> bool:
        """Whether decoding the ids gives back the text (ignoring case and spacing)."""
        original = " ".join(t for t in (self.text, self.text_b) if t)
        return _squash(self.decoded) == _squash(original)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per token: position, token (raw), readable (the text it stands for, see
        :func:`attnscope.readable.token_labels`), id, type_id, mask, special, start, end."""
        from attnscope.readable import token_labels

        labels = token_labels(self.tokens, self.special_mask)
        return [
            {
                "position": i,
                "token": tok,
                "readable": labels[i],
                "id": int(self.input_ids[i]),
                "type_id": int(self.token_type_ids[i]),
                "mask": int(self.attention_mask[i]),
                "special": bool(self.special_mask[i]),
                "start": int(self.offsets[i, 0]),
                "end": int(self.offsets[i, 1]),
            }
            for i, tok in enumerate(self.tokens)
        ]

    def _columns(self) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        """The table's header and cells; the "reads" column (the text each token stands for)
        only where some token reads differently from its spelling (byte-level BPE,
        SentencePiece), so a WordPiece table stays as it was."""
        rows = self.rows()
        reads = any(r["readable"] != r["token"] for r in rows)
        header = ("pos", "token", *(("reads",) if reads else ()), "id", "type", "mask",
                  "special", "span")
        cells = [
            (r["position"], r["token"], *((r["readable"],) if reads else ()), r["id"],
             r["type_id"], r["mask"], "yes" if r["special"] else "",
             f"{r['start']}:{r['end']}" if r["start"] >= 0 else "")
            for r in rows
        ]
        return header, cells

    def table(self) -> str:
        """The tokens as a plain-text table, followed by the decode round trip."""
        header, cells = self._columns()
        # repr escapes control characters and odd whitespace in tokens
        body = [tuple(repr(c)[1:-1] if isinstance(c, str) else str(c) for c in row)
                for row in cells]
        widths = [max(len(row[c]) for row in [header, *body]) for c in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in [header, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append(f"{len(self.tokens)} tokens; decoded: {self.decoded!r}")
        if self.dropped:
            lines.append(f"{self.dropped} tokens were dropped to fit the model's limit.")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        header, cells = self._columns()
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
                       + "</tr>" for row in cells)
        head = "".join(f"<th>{h}</th>" for h in header)
        return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>decoded: <code>{html.escape(self.decoded)}</code></p>")

    def __str__(self) -> str:
        return self.table()


def _squash(text: str) -> str:
    return "".join(text.lower().split())


def check_text(text: Any, what: str = "text") -> str:
    """Return ``text`` if it is a string with something in it, else raise a clear error."""
    if not isinstance(text, str):
        raise AttnscopeError(f"The {what} must be a string, not {type(text).__name__}.")
    if not text.strip():
        raise AttnscopeError(f"The {what} is empty: give at least one word.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates: bytes read with the wrong encoding
        raise AttnscopeError(
            f"The {what} holds U+{ord(text[err.start]):04X} at position {err.start}, which is "
            "not a character (a lone surrogate, left by reading bytes that are not UTF-8); "
            "check the text's encoding."
        ) from None
    return text


def tokenize(
    model: LoadedModel,
    text: str,
    text_b: str | None = None,
    *,
    truncate: bool = True,
    add_special_tokens: bool = True,
) -> Tokenization:
    """Tokenize ``text`` (and ``text_b`` as the second sentence of a pair) for ``model``.

    Text longer than the model's limit is cut with a :class:`TruncationWarning` saying how
    many tokens were dropped, or, with ``truncate=False``, raises an :class:`AttnscopeError`.
    ``add_special_tokens=False`` leaves out [CLS], [SEP], <s>... (as ``tokenizer(text,
    add_special_tokens=False)`` does), for exercises that feed the model the words alone.
    """
    check_text(text)
    if text_b is not None:
        check_text(text_b, "second text")
    tokenizer = model.tokenizer
    limit = model.max_length
    kwargs: dict[str, Any] = {
        "return_special_tokens_mask": True,
        "return_token_type_ids": True,
        "return_attention_mask": True,
        "add_special_tokens": add_special_tokens,
    }
    fast = bool(getattr(tokenizer, "is_fast", False))
    if fast:
        kwargs["return_offsets_mapping"] = True

    # Count first without truncation (the tokenizer's own "longer than the maximum" log line is
    # filtered out: attnscope says it better below). A filter, not setLevel: setLevel clears
    # every logger's cache, which costs more than tokenizing a short text.
    tok_logger = logging.getLogger("transformers.tokenization_utils_base")
    tok_logger.addFilter(_drop_length_log)
    try:
        encoding = tokenizer(text, text_b, **kwargs)
        full_length = len(encoding["input_ids"])
        dropped = 0
        if limit is not None and full_length > limit:
            if not truncate:
                raise AttnscopeError(
                    f"The text has {full_length} tokens, more than this model's limit of {limit}; "
                    "shorten it, or allow truncation to keep the first tokens."
                )
            dropped = full_length - limit
            warnings.warn(
                f"The text has {full_length} tokens but the model takes at most {limit}: the "
                f"last {dropped} tokens were dropped.",
                TruncationWarning,
                stacklevel=2,
            )
            encoding = tokenizer(text, text_b, truncation=True, max_length=limit, **kwargs)
    finally:
        tok_logger.removeFilter(_drop_length_log)

    return _tokenization(tokenizer, text, text_b, encoding, None, fast, dropped)


def _tokenization(tokenizer: Any, text: str, text_b: str | None, encoding: Any,
                  index: int | None, fast: bool, dropped: int) -> Tokenization:
    """A :class:`Tokenization` from the tokenizer's answer: ``encoding`` for one text
    (``index`` None) or row ``index`` of a batch answer (:func:`tokenize_batch`)."""
    row = (lambda name: encoding[name]) if index is None else (
        lambda name: encoding[name][index])
    has = encoding.keys()
    ids = np.asarray(row("input_ids"), dtype=np.int64)
    n = len(ids)
    special = np.asarray(row("special_tokens_mask") if "special_tokens_mask" in has
                         else [0] * n, dtype=bool)
    # The mask flags only the tokens the tokenizer added; markup typed in the text (a chat
    # template's <|im_start|>, a [SEP]) is the same special token and is flagged too.
    special |= np.isin(ids, special_ids(tokenizer))
    if special.all():
        raise AttnscopeError(
            "The text gives no tokens besides the model's special tokens; give some words."
        )
    type_ids = np.asarray((row("token_type_ids") if "token_type_ids" in has else None)
                          or [0] * n, dtype=np.int64)
    mask = np.asarray((row("attention_mask") if "attention_mask" in has else None) or [1] * n,
                      dtype=np.int64)
    if fast:
        offsets = np.asarray(row("offset_mapping"), dtype=np.int64).reshape(n, 2)
        at = () if index is None else (index,)
        seq = encoding.sequence_ids(*at)
        words = encoding.word_ids(*at)
        segment_ids = np.asarray([-1 if s is None else s for s in seq], dtype=np.int64)
    else:  # slow tokenizers give no spans: every non-special token is its own word
        offsets = np.full((n, 2), -1, dtype=np.int64)
        words = [None if s else i for i, s in enumerate(special)]
        segment_ids = np.where(special, -1, 0).astype(np.int64)
        if text_b is not None and type_ids.any():
            segment_ids[(type_ids == 1) & ~special] = 1
    segment_ids[special] = -1
    offsets[special] = -1
    word_ids = _global_word_ids(words, segment_ids)

    sentence_b_start = None
    if text_b is not None:
        # bertviz's convention: the first token whose type id is 1; models without token
        # types (GPT-2, RoBERTa) use the first token of the second text.
        if type_ids.any():
            sentence_b_start = int(np.argmax(type_ids == 1))
        elif (segment_ids == 1).any():
            sentence_b_start = int(np.argmax(segment_ids == 1))

    names = set(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
    model_inputs = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        model_inputs["token_type_ids"] = type_ids
    tokens = (encoding.tokens(*(() if index is None else (index,))) if fast
              else tokenizer.convert_ids_to_tokens(ids.tolist()))
    return Tokenization(
        text=text,
        text_b=text_b,
        tokens=tuple(tokens),
        input_ids=ids,
        token_type_ids=type_ids,
        attention_mask=mask,
        special_mask=special,
        word_ids=word_ids,
        offsets=offsets,
        segment_ids=segment_ids,
        sentence_b_start=sentence_b_start,
        model_inputs=model_inputs,
        dropped=dropped,
        tokenizer=tokenizer,
    )


def tokenize_batch(model: LoadedModel, texts: list[str]) -> list[Tokenization | AttnscopeError]:
    """:func:`tokenize` of each of ``texts`` (single texts, special tokens added, truncated
    with a :class:`TruncationWarning`), with one call of a fast tokenizer for the texts that
    fit the model's limit; equal to tokenizing them one by one. A text that cannot be used
    gives its :class:`AttnscopeError` in its place."""
    tokenizer = model.tokenizer
    out: list[Tokenization | AttnscopeError | None] = [None] * len(texts)
    usable: list[int] = []
    for i, text in enumerate(texts):
        try:
            check_text(text)
            usable.append(i)
        except AttnscopeError as err:
            out[i] = err
    if usable and getattr(tokenizer, "is_fast", False):
        kwargs: dict[str, Any] = {"return_special_tokens_mask": True,
                                  "return_token_type_ids": True, "return_attention_mask": True,
                                  "add_special_tokens": True, "return_offsets_mapping": True}
        tok_logger = logging.getLogger("transformers.tokenization_utils_base")
        tok_logger.addFilter(_drop_length_log)
        try:
            batch = tokenizer([texts[i] for i in usable], **kwargs)
        finally:
            tok_logger.removeFilter(_drop_length_log)
        limit = model.max_length
        for row, i in enumerate(usable):
            if limit is not None and len(batch["input_ids"][row]) > limit:
                continue  # cut one by one below, with its warning
            try:
                out[i] = _tokenization(tokenizer, texts[i], None, batch, row, True, 0)
            except AttnscopeError as err:
                out[i] = err
    for i, text in enumerate(texts):
        if out[i] is None:
            try:
                out[i] = tokenize(model, text)
            except AttnscopeError as err:
                out[i] = err
    return [t for t in out if t is not None]


def special_ids(tokenizer: Any) -> np.ndarray:
    """The ids of ``tokenizer``'s special tokens ``[S]``, less an unknown-token id that stands
    only for unknown text (BERT's [UNK] replaces ordinary characters; GPT-2's and SmolLM2's
    unknown token is also their <|endoftext|> and stays special)."""
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    unk = getattr(tokenizer, "unk_token_id", None)
    roles = {getattr(tokenizer, f"{name}_token_id", None)
             for name in ("bos", "eos", "pad", "sep", "cls")}
    if unk is not None and unk not in roles:
        ids.discard(unk)
    return np.array(sorted(i for i in ids if i is not None), dtype=np.int64)


def check_ids(ids: Any, vocab_size: int) -> np.ndarray:
    """Token ids given as a list of ints, a 1-D integer numpy array or a 1-D torch tensor,
    as an int64 array ``[T]``; anything else (floats, a 2-D batch, an empty sequence, an id
    outside ``0 .. vocab_size - 1``) raises one clear sentence."""
    if hasattr(ids, "detach") and hasattr(ids, "cpu"):  # a torch tensor, without importing torch
        ids = ids.detach().cpu().numpy()
    try:
        array = np.asarray(ids)
    except ValueError:  # ragged nested lists
        raise AttnscopeError("Token ids must be one flat sequence of integers.") from None
    if array.size == 0:
        raise AttnscopeError("The token ids are empty: give at least one id.")
    if array.dtype == object or array.dtype.kind not in "iu":
        raise AttnscopeError(
            "Token ids must be integers (a list of ints, a numpy int array or a torch "
            f"LongTensor), not {array.dtype if array.dtype != object else 'mixed values'}."
        )
    if array.ndim != 1:
        raise AttnscopeError(
            f"Token ids must be one sequence (1-D), not an array of shape {array.shape}; for "
            "several sequences use capture_batch with one sequence each."
        )
    array = array.astype(np.int64)
    bad = (array < 0) | (array >= vocab_size)
    if bad.any():
        where = int(np.argmax(bad))
        raise AttnscopeError(
            f"Token id {int(array[where])} at position {where} is outside this tokenizer's "
            f"vocabulary (ids 0 to {vocab_size - 1})."
        )
    return array


def tokenize_ids(model: LoadedModel, ids: Any, *, truncate: bool = True) -> Tokenization:
    """Token ids ``[T]`` (list, numpy or torch, see :func:`check_ids`) as a
    :class:`Tokenization`, with no tokenizer run over text: the tokens are
    ``convert_ids_to_tokens``'s, special tokens are those in ``all_special_ids``, the text is
    the ids decoded. Spans and words come from the tokens' own text where the tokenizer spells
    spaces (byte-level BPE, SentencePiece), else spans are -1 and a WordPiece ``##`` piece
    joins the word before it. Ids past the model's limit are cut as :func:`tokenize` cuts."""
    from attnscope.readable import readable_tokens, tokenizer_alphabet

    tokenizer = model.tokenizer
    ids = check_ids(ids, len(tokenizer))
    limit = model.max_length
    dropped = 0
    if limit is not None and len(ids) > limit:
        if not truncate:
            raise AttnscopeError(
                f"The ids are {len(ids)} tokens, more than this model's limit of {limit}; "
                "give fewer, or allow truncation to keep the first ones."
            )
        dropped = len(ids) - limit
        warnings.warn(f"{len(ids)} token ids but the model takes at most {limit}: the last "
                      f"{dropped} were dropped.", TruncationWarning, stacklevel=2)
        ids = ids[:limit]
    n = len(ids)
    tokens = tuple(tokenizer.convert_ids_to_tokens(ids.tolist()))
    special = np.isin(ids, special_ids(tokenizer))
    if special.all():
        raise AttnscopeError(
            "The ids hold only the model's special tokens; give some ordinary tokens."
        )
    offsets = np.full((n, 2), -1, dtype=np.int64)
    word_ids = np.full(n, -1, dtype=np.int64)
    spelled = tokenizer_alphabet(tokens, special) != "plain"
    if spelled:
        pieces = readable_tokens(tokens, special)
        text = "".join(pieces)
    else:
        pieces = list(tokens)
        text = tokenizer.decode(ids.tolist())
    word, position, previous_plain = -1, 0, False
    for i, piece in enumerate(pieces):
        if special[i]:
            position += len(piece) if spelled else 0
            previous_plain = False
            continue
        if spelled:
            offsets[i] = (position, position + len(piece))
            position += len(piece)
            starts_word = not previous_plain or piece[:1].isspace() or not pieces[i - 1].strip()
        else:
            starts_word = not previous_plain or not piece.startswith("##")
        word += starts_word
        word_ids[i] = word
        previous_plain = True
    segment_ids = np.where(special, -1, 0).astype(np.int64)
    type_ids = np.zeros(n, dtype=np.int64)
    mask = np.ones(n, dtype=np.int64)
    names = set(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
    model_inputs = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        model_inputs["token_type_ids"] = type_ids
    return Tokenization(
        text=text, text_b=None, tokens=tokens, input_ids=ids, token_type_ids=type_ids,
        attention_mask=mask, special_mask=special, word_ids=word_ids, offsets=offsets,
        segment_ids=segment_ids, sentence_b_start=None, model_inputs=model_inputs,
        dropped=dropped, tokenizer=tokenizer,
    )


def _drop_length_log(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token indices sequence length")


def _global_word_ids(words: list[int | None], segment_ids: np.ndarray) -> np.ndarray:
    """Number words over both texts in order (the tokenizer restarts at 0 for ``text_b``)."""
    word = np.array([-1 if w is None else w for w in words], dtype=np.int64)
    valid = (word >= 0) & (segment_ids >= 0)
    out = np.full(len(words), -1, dtype=np.int64)
    if valid.any():
        # (segment, word) pairs grow along the sequence, so ranking them keeps reading order.
        keys = segment_ids[valid] * (int(word.max()) + 1) + word[valid]
        out[valid] = np.unique(keys, return_inverse=True)[1]
    return out


# ----- chat prompts ----------------------------------------------------------------------------

def check_messages(messages: Any, system: str | None = None) -> list[dict[str, str]]:
    """Return chat ``messages`` as a list of ``{"role", "content"}`` dicts (with ``system``
    first when given), or raise one :class:`AttnscopeError` sentence saying what is wrong."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise AttnscopeError(
            "messages must be a list of {'role': ..., 'content': ...} dicts, not "
            f"{type(messages).__name__}."
        )
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise AttnscopeError(
                f"Message {i} must be a dict with 'role' and 'content', not {_short(message)}."
            )
        role, content = message["role"], message["content"]
        if role not in CHAT_ROLES:
            raise AttnscopeError(
                f"Message {i} has role {_short(role)}; the roles are 'system', 'user' and "
                "'assistant'."
            )
        if not isinstance(content, str):
            raise AttnscopeError(
                f"The content of message {i} must be a string, not {type(content).__name__}."
            )
        checked.append({"role": role, "content": content})
    if system is not None:
        if not isinstance(system, str):
            raise AttnscopeError(
                f"The system prompt must be a string, not {type(system).__name__}."
            )
        if any(m["role"] == "system" for m in checked):
            raise AttnscopeError(
                "Give the system prompt once: either system= or a message with role 'system'."
            )
        checked.insert(0, {"role": "system", "content": system})
    if not any(m["content"].strip() for m in checked):
        raise AttnscopeError("The messages are empty: give at least one message with some text.")
    for m in checked:
        check_text(m["content"] or " ", f"{m['role']} message")  # lone surrogates
    return checked


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_chat(model: LoadedModel, messages: list[dict[str, str]]) -> str:
    """``messages`` through the tokenizer's own chat template, ending with the assistant's
    turn (``add_generation_prompt=True``), as text."""
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise AttnscopeError(
            f"The tokenizer of {model.name} has no chat template; give the prompt as plain text "
            "(a string) instead of messages."
        )
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
    except TemplateError as err:
        raise AttnscopeError(
            f"The chat template of {model.name} refuses these messages: {err}."
        ) from None
    if not isinstance(text, str):  # some versions return a list for a batch of one
        text = text[0]
    return text


def _content_spans(model: LoadedModel, messages: list[dict[str, str]],
                   rendered: str) -> list[tuple[int, int, str]]:
    """Where each message's content lies in ``rendered``: ``(start, end, role)`` spans.

    The template is rendered once more with a placeholder for each content, which shows the
    markup just before each message (``<|im_start|>user\\n``); the content is then searched for
    right after that markup, so a message whose text also appears in the markup ("user") is
    still found in its own place. Templates that trim the content are allowed for.
    """
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
    placeholders = [{"role": m["role"], "content": mark}
                    for m, mark in zip(messages, marks, strict=True)]
    try:
        skeleton = model.tokenizer.apply_chat_template(placeholders, tokenize=False,
                                                       add_generation_prompt=True)
    except Exception:  # the real rendering worked: search for the contents alone
        skeleton = ""
    pieces = re.split("\ue000\\d+\ue001", skeleton if isinstance(skeleton, str) else "")
    befores = pieces[:-1] if len(pieces) == len(messages) + 1 else [""] * len(messages)
    spans, pos, lost = [], 0, []
    for i, (message, before) in enumerate(zip(messages, befores, strict=True)):
        content = message["content"]
        found = False
        for text in dict.fromkeys((content, content.strip())):
            if not text:
                continue
            for prefix in dict.fromkeys((before, "")):
                at = rendered.find(prefix + text, pos)
                if at >= 0:
                    start = at + len(prefix)
                    spans.append((start, start + len(text), message["role"]))
                    pos, found = start + len(text), True
                    break
            if found:
                break
        if not found and content.strip():
            lost.append(i)
    if lost:
        warnings.warn(
            f"The chat template of {model.name} changed the text of message(s) "
            f"{', '.join(map(str, lost))}; their tokens count as markup.",
            stacklevel=3,
        )
    return spans


def tokenize_chat(model: LoadedModel, messages: Any, *, system: str | None = None) -> Tokenization:
    """Chat ``messages`` (``[{"role": "system" | "user" | "assistant", "content": str}, ...]``)
    as the model sees them: rendered by the tokenizer's own chat template with the assistant's
    turn opened (``add_generation_prompt=True``), then tokenized with character spans and no
    further special tokens (the template writes them).

    ``system`` puts a system message first. In the result, ``text`` is the rendered template,
    ``roles`` gives each token's part (a message's role where the token lies in its content,
    ``"markup"`` for everything the template adds, a default system prompt included) and
    ``special_mask`` flags the template's special tokens (``<|im_start|>``, ``<|im_end|>``...).

    Raises:
        AttnscopeError: empty messages, messages that are not role/content dicts, a role the
            template refuses, a tokenizer without a chat template, or a prompt longer than the
            model's limit.
    """
    messages = check_messages(messages, system)
    rendered = render_chat(model, messages)
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise AttnscopeError(
            f"Chat prompts need a fast tokenizer (one that gives character spans); "
            f"{model.name}'s is a slow one."
        )
    encoding = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoding["input_ids"], dtype=np.int64)
    n = len(ids)
    limit = model.max_length
    if limit is not None and n > limit:
        raise AttnscopeError(
            f"The chat prompt has {n} tokens, more than this model's limit of {limit}; "
            "shorten the messages."
        )
    offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(n, 2)
    special = np.isin(ids, np.asarray(sorted(tokenizer.all_special_ids), dtype=np.int64))
    roles = _token_roles(offsets, _content_spans(model, messages, rendered))
    roles = ["markup" if s else r for r, s in zip(roles, special, strict=True)]
    offsets[special] = -1
    segment_ids = np.where(special, -1, 0).astype(np.int64)
    words = [None if s else w for w, s in zip(encoding.word_ids(), special, strict=True)]
    mask = np.ones(n, dtype=np.int64)
    model_inputs = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in set(getattr(tokenizer, "model_input_names", ())):
        model_inputs["token_type_ids"] = np.zeros(n, dtype=np.int64)
    return Tokenization(
        text=rendered, text_b=None, tokens=tuple(encoding.tokens()), input_ids=ids,
        token_type_ids=np.zeros(n, dtype=np.int64), attention_mask=mask, special_mask=special,
        word_ids=_global_word_ids(words, segment_ids), offsets=offsets, segment_ids=segment_ids,
        sentence_b_start=None, model_inputs=model_inputs, tokenizer=tokenizer,
        roles=tuple(roles),
    )


def _token_roles(offsets: np.ndarray, spans: list[tuple[int, int, str]]) -> list[str]:
    """Each token's role: that of the message content its span overlaps most, else markup.

    ``offsets`` ``[T, 2]`` are the tokens' character spans in the rendered text."""
    roles = []
    for start, end in offsets.tolist():
        best, best_overlap = "markup", 0
        for s, e, role in spans:
            overlap = min(end, e) - max(start, s)
            if overlap > best_overlap:
                best, best_overlap = role, overlap
        roles.append(best)
    return roles


def encode(model: Any, text: Any, text_b: str | None = None, *, truncate: bool = True,
           add_special_tokens: bool = True) -> Tokenization:
    """What a capture runs: a text (and ``text_b``) through :func:`tokenize`, or token ids
    ``[T]`` (a list of ints, a numpy or torch 1-D array) through :func:`tokenize_ids`."""
    if isinstance(text, str):
        return tokenize(model, text, text_b, truncate=truncate,
                        add_special_tokens=add_special_tokens)
    if text_b is not None:
        raise AttnscopeError("A second text goes with a text, not with token ids; give the "
                             "pair's ids as one sequence.")
    return tokenize_ids(model, text, truncate=truncate)


def decoder_tokens(model: LoadedModel, text_b: str | None, truncate: bool) -> Tokenization:
    """The decoder's input for an encoder-decoder model: ``text_b`` tokenized as it is, or the
    decoder start token alone when there is no ``text_b``."""
    if text_b is not None:
        return tokenize(model, text_b, truncate=truncate)
    start = model.model.config.decoder_start_token_id
    if start is None:
        start = model.tokenizer.pad_token_id or 0
    ids = np.array([start], dtype=np.int64)
    ones = np.ones(1, dtype=np.int64)
    return Tokenization(
        text="", text_b=None, tokens=tuple(model.tokenizer.convert_ids_to_tokens([start])),
        input_ids=ids, token_type_ids=np.zeros(1, np.int64), attention_mask=ones,
        special_mask=np.ones(1, bool), word_ids=np.full(1, -1, np.int64),
        offsets=np.full((1, 2), -1, np.int64), segment_ids=np.full(1, -1, np.int64),
        sentence_b_start=None, model_inputs={"input_ids": ids, "attention_mask": ones},
    )


def pad_inputs(rows: list[dict[str, np.ndarray]], model: LoadedModel, device: Any
               ) -> dict[str, Any]:
    """Stack per-text model inputs into ``[B, T_max]`` tensors, padded on the right.

    Right padding keeps every real token at the position it has when run alone (learned and
    rotary position embeddings depend on it), and the attention mask hides the padding from
    every real query, so each text's rows and columns are exactly its single-text attention.
    """
    import torch

    pad_id = model.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    longest = max(len(r["input_ids"]) for r in rows)
    batch = {}
    for name in rows[0]:
        fill = pad_id if name == "input_ids" else 0
        array = np.full((len(rows), longest), fill, dtype=np.int64)
        for i, r in enumerate(rows):
            array[i, : len(r[name])] = r[name]
        batch[name] = torch.from_numpy(array).to(device)
    return batch
