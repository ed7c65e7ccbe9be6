"""SmolLM2's byte-level tokens (Ġ for a space, Ċ for a newline) read as text in every figure,
view, report and table, while the Trace keeps the raw tokens."""

from __future__ import annotations

import dataclasses
import re

import matplotlib.text
import pytest

import attnscope as at
from attnscope.readable import token_labels

TEXT = "Hello  world,\n\tcafé <|im_start|>user\nHi there <script>alert(1)</script>"
MARKERS = re.compile("[ĠĊĉ]|Ã©")  # byte-level spellings of space, newline, tab and é


@pytest.fixture(scope="module")
def trace(smollm2) -> at.Trace:
    return at.capture(smollm2, TEXT)


def _texts(figure) -> list[str]:
    return [t.get_text() for t in figure.findobj(matplotlib.text.Text) if t.get_text()]


def test_the_trace_keeps_raw_tokens(trace):
    assert "Ġworld" in trace.tokens and "Ċ" in trace.tokens and "Ã©" in trace.tokens
    assert trace.special_mask[trace.tokens.index("<|im_start|>")]


def test_no_byte_markers_in_any_figure(trace):
    figures = {
        "heatmap": at.heatmap(trace, 0, 0),
        "heads_grid": at.heads_grid(trace, 0),
        "attention_graph": at.attention_graph(trace, 0, 0),
        "rollout": at.attention_rollout(trace).figure(),
        "rollout bar": at.attention_rollout(trace).bar(),
        "pca": at.pca(trace).figure(),
        "matrix": at.heatmap(trace.attentions[0, 0], list(trace.tokens)),
    }
    for name, figure in figures.items():
        texts = _texts(figure)
        assert not [t for t in texts if MARKERS.search(t)], name
    ticks = [t.get_text() for t in figures["heatmap"].axes[0].get_xticklabels()]
    assert ticks == token_labels(trace.tokens, trace.special_mask)
    # "café" is c + af + é (é's two bytes are one token), each tick the text it stands for
    assert {"world", "↵", "é", "<|im_start|>", "</"} <= set(ticks)


def test_view_payloads_carry_labels(trace):
    payload = at.head_view(trace).payload()
    shown = payload["tokens"]["self"]
    assert shown == token_labels(trace.tokens, trace.special_mask)
    assert not [t for t in shown if MARKERS.search(t)]
    assert "world" in shown and "</" in shown  # hostile pieces stay text (escaped by the page)


def test_report_text_has_no_byte_markers(trace):
    # the captured trace cut to its first two layers: the whole page in a few seconds
    small = dataclasses.replace(trace, attentions=trace.attentions[:2],
                                hidden_states=trace.hidden_states[:3])
    page = at.report(small).html
    assert not MARKERS.search(page)
    assert "<td>é</td>" in page and "<td>↵</td>" in page
    assert "<script>alert(1)" not in page  # the text's markup stays text


def test_tokenization_table_has_a_readable_column(smollm2):
    tokenization = at.tokenize(smollm2, TEXT)
    rows = tokenization.rows()
    assert [r["token"] for r in rows] == list(tokenization.tokens)  # raw
    assert [r["readable"] for r in rows] == token_labels(tokenization.tokens,
                                                         tokenization.special_mask)
    table = tokenization.table()
    assert table.splitlines()[0].split()[:3] == ["pos", "token", "reads"]
    line = next(x for x in table.splitlines() if "Ġworld" in x)
    assert line.split()[1:3] == ["Ġworld", "world"]
    assert "<td>world</td>" in tokenization._repr_html_()
    assert "<th>reads</th>" in tokenization._repr_html_()
