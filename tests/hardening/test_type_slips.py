"""Values of the wrong type at the public boundary: one sentence each, never a traceback
from deep inside, and never a string such as "no" read as true."""

from __future__ import annotations

import numpy as np
import pytest

import attnscope as at
from attnscope.errors import AttnscopeError
from attnscope.testing import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> at.LoadedModel:
    return at.load(build_tiny_model("bert", tmp_path_factory.mktemp("bert")), device="cpu")


def test_capture_says_what_it_takes(tiny):
    cases = [
        (None, "capture takes a model from attnscope.load, not NoneType; at.load(...) makes one."),
        ("bert-base-uncased", "capture takes a model from attnscope.load, not str; "
                              "at.load('bert-base-uncased') makes one from that name or folder."),
        (tiny.model, "capture takes a model from attnscope.load, not BertModel; "
                     "at.load(model, tokenizer=...) wraps your transformers model in one."),
    ]
    for model, expected in cases:
        with pytest.raises(AttnscopeError) as caught:
            at.capture(model, "leaves fall")
        assert str(caught.value) == expected
    with pytest.raises(AttnscopeError, match=r"^capture takes a model from attnscope\.load"):
        at.capture_batch(None, ["leaves fall"])


@pytest.mark.parametrize(("option", "value"), [
    ("truncate", "no"), ("qkv", "false"), ("add_special_tokens", None), ("merge_words", 1),
])
def test_capture_options_are_true_or_false(tiny, option, value):
    with pytest.raises(AttnscopeError) as caught:
        at.capture(tiny, "leaves fall", **{option: value})
    assert str(caught.value) == f"{option} must be True or False, not {value!r}."
    assert at.capture(tiny, "leaves fall", **{option: False}).num_tokens > 0


def test_flow_budget_and_explain_dims(tiny):
    trace = at.capture(tiny, "leaves fall in autumn", qkv=True)
    for budget, expected in [("x", "budget must be a number above 0 or None, not 'x'."),
                             (float("nan"), "budget must be a number above 0, not nan."),
                             (-1, "budget must be a number above 0, not -1.0."),
                             (True, "budget must be a number above 0 or None, not True.")]:
        with pytest.raises(AttnscopeError) as caught:
            at.attention_flow(trace, budget=budget)
        assert str(caught.value) == expected
    assert np.isfinite(at.attention_flow(trace, budget=None).values).all()
    explanation = at.explain(trace, layer=0, head=0, query=1)
    with pytest.raises(AttnscopeError, match=r"^dims must be at least 0, not -1\.$"):
        explanation.table(dims=-1)
    assert "q⊙k" not in explanation.table(dims=0)
