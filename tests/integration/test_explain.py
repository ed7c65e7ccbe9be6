"""explain(): every step for one query, equal to the model's own row; its table, HTML and CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

import attnscope as at
from attnscope.cli import main
from attnscope.testing import TINY_FAMILIES

SENTENCE = "The girl poured water into a tall glass until it overflowed."


@pytest.fixture(scope="module")
def seed_trace(embedded) -> at.Trace:
    return at.capture(embedded, SENTENCE, qkv=True)


def test_every_step_adds_up_on_the_embedded_model(seed_trace):
    e = at.explain(seed_trace, layer=0, head=0, query="girl")
    assert e.query_index == 2 and e.query_token == "girl"
    assert e.q.shape == (32,) and e.keys.shape == (16, 32) and e.products.shape == (16, 32)
    np.testing.assert_allclose(e.products.sum(-1), e.dots, atol=1e-4)
    np.testing.assert_allclose(e.dots, e.keys @ e.q, atol=1e-5)
    assert e.scale == pytest.approx(1 / math.sqrt(32))
    np.testing.assert_allclose(e.scores, e.dots * e.scale, atol=1e-6)
    assert e.bias is None and e.visible.all()
    softmax = np.exp(e.logits - e.logits.max())
    np.testing.assert_allclose(e.weights, softmax / softmax.sum(), atol=1e-6)
    # the explained softmax row is the Trace's row
    np.testing.assert_allclose(e.weights, seed_trace.attentions[0, 0, 2], atol=1e-5)
    assert e.max_abs_error <= 1e-5


def test_every_head_and_query_of_the_last_layer_matches(seed_trace):
    for head in range(seed_trace.num_heads):
        for query in (0, 5, -1):
            e = at.explain(seed_trace, -1, head, query)
            assert e.max_abs_error <= 1e-5


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_explain_matches_the_model_for_every_family(tiny_models, family):
    model = tiny_models[family]
    text_b = "the cat sat" if model.architecture == "encoder-decoder" else None
    trace = at.capture(model, SENTENCE, text_b, qkv=True)
    for layer in range(trace.num_layers):
        for head in range(trace.num_heads):
            e = at.explain(trace, layer, head, trace.num_tokens // 2)
            assert e.max_abs_error <= 1e-5
            np.testing.assert_allclose(e.weights.sum(), 1.0, atol=1e-6)
    e = at.explain(trace, 1, 1, 3)
    if model.is_causal:  # later keys are masked and get nothing
        assert not e.visible[4:].any() and np.all(e.weights[4:] == 0)
        assert "masked" in e.table()
    if family == "t5":  # no scaling; a relative position bias instead
        assert e.scale == 1.0 and e.bias is not None
        np.testing.assert_allclose(e.logits, e.scores + e.bias, atol=1e-6)
        assert "+bias" in e.table() and "does not scale" in e.table()


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_decoder_and_cross_parts_with_the_model(tiny_models, family):
    model = tiny_models[family]
    trace = at.capture(model, SENTENCE, "the cat sat on the mat", qkv=True)
    for part in ("decoder", "cross"):
        attentions, _, k_tokens = trace.part(part)
        e = at.explain(trace, 1, 3, 2, part=part, model=model)
        assert len(e.weights) == len(k_tokens)
        np.testing.assert_allclose(e.weights, attentions[1, 3, 2], atol=1e-5)
        assert e.visible.all() == (part == "cross")
    with pytest.raises(at.AttnscopeError, match="model="):
        at.explain(trace, 0, 0, 0, part="cross")


def test_table_and_html(seed_trace):
    e = at.explain(seed_trace, 0, 0, "girl")
    text = str(e)
    assert "layer 0, head 0, query 2 'girl'" in text
    assert "1/sqrt(32)" in text and "softmax" in text and "q·k" in text
    lines = [line for line in text.splitlines() if line[:4].strip().isdigit()]
    assert len(lines) == seed_trace.num_tokens
    assert "##flow" in lines[12] and f"{e.weights[12]:.4f}" in lines[12]
    page = e._repr_html_()
    assert page.count("<tr>") == seed_trace.num_tokens + 1
    assert "[CLS]" in page


def test_html_escapes_tokens(tiny_models):
    model = tiny_models["gpt2"]
    trace = at.capture(model, "Numbers like 3.14 and <tags> appear too.", qkv=True)
    e = at.explain(trace, 0, 0, 0)
    page = e._repr_html_()
    assert "&lt;" in page and "<tags" not in page and "Ġ<" not in page


def test_query_by_token_ambiguous_missing_and_bad(seed_trace, embedded):
    assert at.explain(seed_trace, 0, 0, "GIRL").query_index == 2  # case-insensitive fallback
    assert at.explain(seed_trace, 0, 0, "flow").query_index == 12  # without the ## marker
    two = at.capture(embedded, "the cat saw the dog", qkv=True)
    with pytest.raises(at.AttnscopeError, match=r"appears 2 times \(positions 1, 4\)") as err:
        at.explain(two, 0, 0, "the")
    assert "0 [CLS], 1 the, 2 cat" in str(err.value)
    with pytest.raises(at.AttnscopeError, match=r"no token 'boy'.*1 the, 2 girl"):
        at.explain(seed_trace, 0, 0, "boy")
    with pytest.raises(at.AttnscopeError, match="valid query positions are 0 to 15"):
        at.explain(seed_trace, 0, 0, 16)
    with pytest.raises(at.AttnscopeError, match="valid heads are 0 to 11"):
        at.explain(seed_trace, 0, 12, 0)


def test_a_trace_without_qkv_asks_for_it(embedded):
    trace = at.capture(embedded, SENTENCE)
    with pytest.raises(at.AttnscopeError, match="qkv=True"):
        at.explain(trace, 0, 0, "girl")
    # with the model, the hand-written projections stand in for the stored q/k
    e = at.explain(trace, 0, 0, "girl", model=embedded)
    assert e.max_abs_error <= 1e-5


def test_cli_explain_prints_the_table(capsys, embedded):
    code = main(["explain", SENTENCE, "--layer", "0", "--head", "0", "--token", "girl"])
    out = capsys.readouterr().out
    assert code == 0
    assert "query 2 'girl'" in out and "1/sqrt(32)" in out and "max |softmax - model|" in out


def test_cli_explain_errors_are_one_sentence(capsys, tiny_dirs):
    assert main(["explain", "the cat saw the dog", "--token", "the"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnscope: error: The token 'the' appears 2 times")
    assert "Traceback" not in err and err.count("\n") == 1
    assert main(["explain", "the cat", "--layer", "7", "--position", "1"]) == 2
    assert "valid layers are 0 to 5" in capsys.readouterr().err
    assert main(["explain", "the cat"]) == 2
    assert "--token WORD or --position N" in capsys.readouterr().err
    code = main(["explain", "the cat", "le chat", "--position", "1", "-m", str(tiny_dirs["t5"]),
                 "--part", "cross"])
    assert code == 0
    assert "cross attention" in capsys.readouterr().out
