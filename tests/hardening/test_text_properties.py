"""Any Unicode a person can type, paste or pipe in: attnscope answers with a result or one
AttnscopeError sentence, never another exception."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attnscope as at

# Every code point, surrogates included (argv bytes that are not UTF-8 arrive as surrogates).
ANY_TEXT = st.text(st.characters(codec=None, min_codepoint=0), max_size=40)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _capture_or_sentence(model, text, text_b=None):
    try:
        trace = at.capture(model, text, text_b)
    except at.AttnscopeError as err:
        message = str(err)
        assert message and "\n" not in message and message.endswith((".", ")"))
        return None
    assert trace.num_tokens == len(trace.tokens) >= 1
    rows = trace.attentions.sum(axis=-1)
    np.testing.assert_allclose(rows, 1.0, atol=1e-4)
    return trace


@SETTINGS
@given(text=ANY_TEXT, text_b=st.one_of(st.none(), ANY_TEXT))
def test_any_text_through_the_embedded_model(embedded, text, text_b):
    trace = _capture_or_sentence(embedded, text, text_b)
    if trace is not None:
        table = at.head_patterns(trace)
        assert table.scores.shape[:2] == (6, 12)
        assert trace.text == text


@SETTINGS
@given(text=ANY_TEXT)
def test_any_text_through_byte_level_and_sentencepiece_models(tiny_models, text):
    for family in ("gpt2", "t5"):
        _capture_or_sentence(tiny_models[family], text)


def test_lone_surrogate_is_one_sentence(embedded):
    try:
        at.capture(embedded, "caf\udce9 au lait")
    except at.AttnscopeError as err:
        assert "U+DCE9 at position 3" in str(err)
    else:
        raise AssertionError("a lone surrogate must be refused")
