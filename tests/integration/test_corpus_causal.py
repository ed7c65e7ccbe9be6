"""Corpus mode on a causal model: forced weights are never evidence; the sink score."""

from __future__ import annotations

import numpy as np
import pytest

import attnscope as at
from attnscope.analysis.patterns import head_patterns

# "a a a a a": every query after the first is the byte-level token "Ġa"
TEXTS = ["one two three four", "five six", "seven eight nine ten eleven twelve", "thirteen",
         "a a a a a"]


@pytest.fixture(scope="module")
def gpt2_run(tiny_models, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus-gpt2") / "stats.duckdb"
    return at.corpus(tiny_models["gpt2"], TEXTS, out=path, batch_size=2, progress=False)


def _strongest_chosen_weight(trace, layer, head) -> tuple[float, int, int]:
    """The strongest weight between two plain tokens from a query that sees two keys or more,
    written out by hand: (weight, query, key)."""
    best = (-1.0, -1, -1)
    plain = ~np.asarray(trace.special_mask, dtype=bool)
    for q in range(1, trace.num_tokens):  # causal: query q sees keys 0..q
        for k in range(q + 1):
            if plain[q] and plain[k] and trace.attentions[layer, head, q, k] > best[0]:
                best = (float(trace.attentions[layer, head, q, k]), q, k)
    return best


def test_weight_examples_skip_the_first_query(tiny_models, gpt2_run):
    model = tiny_models["gpt2"]
    traces = {text: at.capture(model, text) for text in TEXTS}
    for layer in range(model.num_layers):
        for head in range(model.num_heads):
            examples = gpt2_run.examples(layer, head)
            assert len(examples) >= 1
            # query 0 -> key 0 weighs 1.0 in every head: it never counts as an example
            assert (examples["query_pos"] > 0).all()
            top = examples.iloc[0]
            weight, q, k = max(_strongest_chosen_weight(t, layer, head)
                               for t in traces.values() if t.num_tokens > 1)
            assert top["value"] == pytest.approx(weight, abs=1e-6)
            assert (top["query_pos"], top["key_pos"]) == (q, k)


def test_corpus_sink_is_the_mean_of_head_patterns_sink(tiny_models, gpt2_run):
    model = tiny_models["gpt2"]
    per_text = []
    for text in TEXTS:
        trace = at.capture(model, text)
        if trace.num_tokens < 2:
            continue  # no row sees two keys: no sink score
        # by hand: attention to key 0 averaged over queries 1..T-1
        sink = trace.attentions[:, :, 1:, 0].mean(-1)
        np.testing.assert_allclose(head_patterns(trace).score("sink"), sink, atol=1e-6)
        per_text.append(sink)
    np.testing.assert_allclose(gpt2_run.array("sink"), np.mean(per_text, axis=0), atol=1e-6)
    np.testing.assert_array_equal(gpt2_run.array("sink", "n"), len(per_text))


def test_corpus_page_shows_example_tokens_as_text(tiny_models, gpt2_run):
    from attnscope.corpora.report import corpus_report
    from attnscope.readable import token_label

    model = tiny_models["gpt2"]
    examples = [gpt2_run.examples(layer, head) for layer in range(model.num_layers)
                for head in range(model.num_heads)]
    raw = {t for frame in examples for t in (*frame["query_token"], *frame["key_token"])}
    assert any(t.startswith("Ġ") for t in raw)  # the store keeps the raw tokens
    page = corpus_report(gpt2_run, views=False).html
    assert "Ġ" not in page
    for frame in examples:
        for r in frame.head(3).itertuples():  # the page shows 3 examples a head
            assert f"{token_label(r.query_token)} \u2192 {token_label(r.key_token)}" in page
