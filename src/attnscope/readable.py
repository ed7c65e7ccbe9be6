"""Tokens as the text they stand for, for people to read.

Tokenizers spell tokens in their own alphabets: byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2)
maps every byte to a printable character, so a space is ``Ġ`` and a newline ``Ċ``;
SentencePiece (Llama 2, T5, Gemma) marks a word's leading space with ``▁`` and spells bytes it
has no piece for as ``<0x0A>``. A Trace keeps the raw tokens (they are what the model saw);
every figure, view, report and table shows them through :func:`readable_tokens` (the text,
for running text) or :func:`token_labels` (short labels with a visible mark where a token is
only white space or holds a line break).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

__all__ = ["readable_tokens", "token_label", "token_labels", "tokenizer_alphabet",
           "trace_labels"]

#: Visible marks for white space that a label would otherwise hide, and for a token that holds
#: only part of a character (a multi-byte character split over tokens shows on its last one).
PARTIAL_MARK = "…"
SPACE_MARK = "␣"
NEWLINE_MARK = "↵"
TAB_MARK = "⇥"

_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@cache
def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's ``bytes_to_unicode``,
    re-derived: printable Latin-1 bytes stand for themselves, the other 68 bytes are moved
    to code points 256 and up, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {chr(b): b for b in printable}
    moved = 0
    for b in range(256):
        if b not in printable:
            alphabet[chr(256 + moved)] = b
            moved += 1
    return alphabet


def tokenizer_alphabet(tokens: Sequence[str],
                       special: Sequence[bool] | np.ndarray | None = None) -> str:
    """How ``tokens`` are spelled: ``"byte"`` (byte-level BPE), ``"sentencepiece"`` or
    ``"plain"`` (WordPiece and everything else, shown as they are).

    Decided from the tokens themselves, so a Trace loaded from a file reads the same way:
    byte-level when some token uses the stand-ins for a space or a line break (``Ġ``, ``Ċ``)
    and every ordinary token is spelled in the byte alphabet; SentencePiece when some token
    starts with ``▁``.
    """
    ordinary = [t for i, t in enumerate(tokens) if not (special is not None and special[i])]
    alphabet = _byte_alphabet()
    if any(("Ġ" in t or "Ċ" in t) for t in ordinary) and all(
        all(c in alphabet for c in t) for t in ordinary
    ):
        return "byte"
    if any(t.startswith("▁") or _SP_BYTE.fullmatch(t) for t in ordinary):
        return "sentencepiece"
    return "plain"


def _byte_level_bytes(token: str) -> bytes:
    alphabet = _byte_alphabet()
    return bytes(alphabet[c] for c in token)


def _sentencepiece_bytes(token: str) -> bytes:
    match = _SP_BYTE.fullmatch(token)
    if match:
        return bytes([int(match.group(1), 16)])
    return token.replace("▁", " ").encode("utf-8")


def _decode(tokens: Sequence[str], special: Sequence[bool] | np.ndarray | None,
            to_bytes: Callable[[str], bytes]) -> list[str]:
    """Each token's text, decoding the bytes of consecutive tokens as one UTF-8 stream: a
    character whose bytes span several tokens belongs to the token that completes it, so the
    texts joined equal the tokenizer's own decoding."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    texts = []
    for i, token in enumerate(tokens):
        if special is not None and special[i]:
            texts.append(decoder.decode(b"", final=True) + token)  # a cut character ends here
            decoder.reset()
        else:
            texts.append(decoder.decode(to_bytes(token)))
    if texts:
        texts[-1] += decoder.decode(b"", final=True)
    return texts


def readable_tokens(tokens: Sequence[str],
                    special: Sequence[bool] | np.ndarray | None = None) -> list[str]:
    """The text each token stands for (``"Ġquick"`` → ``" quick"``, ``"Ċ"`` → ``"\\n"``,
    ``"▁the"`` → ``" the"``, ``"<0x0A>"`` → ``"\\n"``). Special tokens stay as they are.
    Joined, the result reads as the text: use it for running text."""
    kind = tokenizer_alphabet(tokens, special)
    if kind == "plain":
        return list(tokens)
    return _decode(tokens, special, _byte_level_bytes if kind == "byte" else _sentencepiece_bytes)


def _label(token: str, text: str) -> str:
    if text == "":
        return PARTIAL_MARK if token else text
    if not text.strip():  # only white space: show what it is
        return (text.replace(" ", SPACE_MARK).replace("\n", NEWLINE_MARK)
                .replace("\t", TAB_MARK).replace("\r", ""))
    text = text.strip(" ")
    return text.replace("\r\n", NEWLINE_MARK).replace("\n", NEWLINE_MARK).replace("\t", TAB_MARK)


def token_labels(tokens: Sequence[str],
                 special: Sequence[bool] | np.ndarray | None = None) -> list[str]:
    """Short labels for axes and tables: the text each token stands for, without the leading
    space a word carries, and with a visible mark (``␣``, ``↵``, ``⇥``) for a token that is
    only white space or holds a line break (``"Ġquick"`` → ``"quick"``, ``"Ċ"`` → ``"↵"``), and
    ``…`` on a token that holds only the first bytes of a character."""
    return [_label(token, text)
            for token, text in zip(tokens, readable_tokens(tokens, special), strict=True)]


def trace_labels(trace: Any, part: str = "self") -> tuple[list[str], list[str]]:
    """The query and key labels (:func:`token_labels`) of one attention part of a Trace: the
    one way figures, views and reports label a Trace's tokens, while the Trace keeps the raw
    ones. ``part`` is "self", "decoder" or "cross" (decoder queries over encoder keys)."""
    _, query_tokens, key_tokens = trace.part(part)
    encoder = token_labels(trace.tokens, trace.special_mask)
    if query_tokens is trace.tokens:  # self-attention
        return encoder, encoder
    decoder = token_labels(trace.decoder_tokens, trace.decoder_special_mask)
    return decoder, (decoder if key_tokens is trace.decoder_tokens else encoder)


def token_label(token: str) -> str:
    """The label of one token seen without its text (a stored example's query or key): as
    :func:`token_labels` gives it, judged from the token alone."""
    return token_labels([token])[0]
