"""Attention that is not a set of weights (NaN, infinities, negative values, rows that do not
sum to 1) reaching an analysis gives one sentence, never a number computed from it."""

from __future__ import annotations

import numpy as np
import pytest

import attnscope as at


def _spoil(trace: at.Trace, how: str) -> at.Trace:
    att = np.array(trace.attentions)  # (L, H, T, T)
    if how == "nan":
        att[2, 3, 1, 1] = np.nan
    elif how == "inf":
        att[0, 0, 0, 0] = np.inf
    elif how == "negative":
        att[1, 1, 2] = att[1, 1, 2] * 2 - att[1, 1, 2].max()  # row still sums to about 1
        att[1, 1, 2] += (1 - att[1, 1, 2].sum()) / att.shape[-1]
    elif how == "unnormalised":
        att[-1, -1] *= 1.5
    return trace.replace(attentions=att)


ANALYSES = {
    "patterns": lambda t, m: at.head_patterns(t),
    "rollout": lambda t, m: at.attention_rollout(t),
    "flow": lambda t, m: at.attention_flow(t, output=0),
    "norms": lambda t, m: at.attention_norms(t, m),
    "trends": lambda t, m: at.layer_trends(t),
    "graph": lambda t, m: at.attention_graph(t, 2),
    "report": lambda t, m: at.report(t, m),
}


@pytest.fixture(scope="module")
def clean(embedded):
    return at.capture(embedded, "The girl poured water into a tall glass.", qkv=True)


@pytest.mark.parametrize("how", ["nan", "inf", "negative", "unnormalised"])
def test_every_analysis_refuses_bad_attention(embedded, clean, how):
    bad = _spoil(clean, how)
    words = {"nan": "NaN or infinite", "inf": "NaN or infinite", "negative": "negative",
             "unnormalised": "do not sum to 1"}[how]
    for name, analysis in ANALYSES.items():
        with pytest.raises(at.AttnscopeError, match=words):
            analysis(bad, embedded)
        assert name  # each analysis raised


def test_clean_attention_passes_and_is_checked_once(embedded, clean):
    assert at.head_patterns(clean).scores.shape == (6, 12, len(at.analysis.SCORES))
    assert clean.check() is clean
    assert "self" in clean.__dict__["_checked_parts"]


def test_half_precision_rounding_is_not_a_mistake(clean):
    rounded = clean.replace(attentions=clean.attentions.astype(np.float16).astype(np.float32))
    at.attention_rollout(rounded)  # rows off by ~1e-3 still count as weights
