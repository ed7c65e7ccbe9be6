"""Readable tokens: byte-level BPE and SentencePiece spellings shown as the text they stand for."""

from __future__ import annotations

import pytest

from attnscope.readable import (
    _byte_alphabet as byte_alphabet,
)
from attnscope.readable import (
    readable_tokens,
    token_labels,
    tokenizer_alphabet,
)


def test_byte_alphabet_is_gpt2s_bytes_to_unicode():
    convert = pytest.importorskip("transformers.convert_slow_tokenizer")
    reference = convert.bytes_to_unicode()  # byte -> character
    assert {char: byte for byte, char in reference.items()} == byte_alphabet()


def test_byte_level_tokens_read_as_their_text():
    tokens = ["<|im_start|>", "user", "Ċ", "The", "Ġquick", "ĠcafÃ©", "ĊĊĠ", "<|im_end|>"]
    special = [True, False, False, False, False, False, False, True]
    assert tokenizer_alphabet(tokens, special) == "byte"
    assert readable_tokens(tokens, special) == [
        "<|im_start|>", "user", "\n", "The", " quick", " café", "\n\n ", "<|im_end|>"]
    assert token_labels(tokens, special) == [
        "<|im_start|>", "user", "↵", "The", "quick", "café", "↵↵␣", "<|im_end|>"]


def test_a_character_split_over_tokens_belongs_to_the_token_that_completes_it():
    # 東 is e6 9d b1 in UTF-8; byte-level BPE may spell it as 'æ' + 'Ŀ±'
    alphabet = {byte: char for char, byte in byte_alphabet().items()}
    first = alphabet[0xE6]
    rest = alphabet[0x9D] + alphabet[0xB1]
    tokens = ["Ġa", "Ġ" + first, rest]
    assert readable_tokens(tokens) == [" a", " ", "東"]
    assert token_labels(tokens) == ["a", "␣", "東"]
    assert "".join(readable_tokens(tokens)) == " a 東"
    assert token_labels(["Ġa", first, rest]) == ["a", "…", "東"]  # only a character's start


def test_sentencepiece_and_plain_tokens():
    tokens = ["▁Hello", "▁world", "<0x0A>", "!"]
    assert tokenizer_alphabet(tokens) == "sentencepiece"
    assert readable_tokens(tokens) == [" Hello", " world", "\n", "!"]
    assert token_labels(tokens) == ["Hello", "world", "↵", "!"]
    wordpiece = ["[CLS]", "the", "##re", "[SEP]"]
    assert tokenizer_alphabet(wordpiece) == "plain"
    assert readable_tokens(wordpiece) == wordpiece == token_labels(wordpiece)
