"""Corpus mode tokenizes a batch's single texts in one call of the tokenizer: every field of
every Tokenization equals tokenizing the text alone, for every tiny family and the embedded
model, odd texts, unusable texts and texts past the model's limit included."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import attnscope as at
from attnscope.tokens import TruncationWarning, tokenize, tokenize_batch

TEXTS = ["The cat sat.", "", "   ", "[SEP] [CLS]", "a " * 600,
         "Émile  café\tnaïve — “quotes” 😀", "<|endoftext|> hi", "x", "It's 3.14, ok?!",
         "\ud800 lone"]


def _same(want, got, where):
    for f in dataclasses.fields(want):
        a, b = getattr(want, f.name), getattr(got, f.name)
        if f.name == "tokenizer":
            assert a is b
        elif isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), (where, f.name)
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), (where, f.name)
            assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
        else:
            assert a == b, (where, f.name)


@pytest.mark.parametrize("family", [None, "bert", "gpt2", "llama", "t5", "roberta"])
def test_batched_tokenization_equals_one_by_one(embedded, tiny_models, family):
    model = embedded if family is None else tiny_models[family]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        found = tokenize_batch(model, TEXTS)
        assert len(found) == len(TEXTS)
        for text, got in zip(TEXTS, found, strict=True):
            try:
                want = tokenize(model, text)
            except at.AttnscopeError as err:
                assert isinstance(got, at.AttnscopeError) and str(got) == str(err), text
                continue
            assert not isinstance(got, at.AttnscopeError), (text, got)
            _same(want, got, (family, text))
    # the long text was cut to the model's limit, as alone
    long = found[TEXTS.index("a " * 600)]
    assert long.dropped > 0 and len(long) == model.max_length
