"""Tokens and model names are text in every figure: "$x$" or an unbalanced "$\\frac" is
drawn as typed, never parsed as a formula (which would change it, or fail to draw)."""

from __future__ import annotations

import io

import pytest
from matplotlib.text import Text

import attnscope as at

NAME = "a$\\frac$b my$model$_{x}"


@pytest.fixture(scope="module")
def dollar_trace(embedded):
    trace = at.capture(embedded, "It costs $5 or $x^2$ and \\frac{a}{b} $\\alpha$ now")
    return trace.replace(model_name=NAME)


@pytest.mark.parametrize("draw", [
    lambda t: at.heatmap(t),
    lambda t: at.heads_grid(t),
    lambda t: at.model_grid(t),
    lambda t: at.head_patterns(t).gallery(t),
    lambda t: at.attention_graph(t),
    lambda t: at.attention_rollout(t).bar(0),
])
def test_every_text_is_plain(dollar_trace, draw):
    fig = draw(dollar_trace)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # an unbalanced "$\\frac$" would raise here
    assert buffer.getvalue().startswith(b"\x89PNG")
    texts = [t for t in fig.findobj(Text) if t.get_text()]
    assert texts and not any(t.get_parse_math() for t in texts)
    assert any(NAME in t.get_text() for t in texts)
