"""Traces from attention computed anywhere, and figures of raw matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import attnscope as at
from attnscope.scratch import SelfAttention, recompute
from tests.conftest import SEED_SENTENCE

TOKENS = ["[CLS]", "the", "cat", "sat", ",", "the", "cat", "[SEP]"]


def _softmax_attention(layers, heads, tokens, seed=0, causal=False):
    scores = np.random.default_rng(seed).normal(size=(layers, heads, tokens, tokens))
    if causal:
        scores = np.where(np.tril(np.ones((tokens, tokens), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)).astype(np.float32)  # (L, H, T, T)


# ----- building ---------------------------------------------------------------------------------

def test_every_accepted_shape_and_array_kind_gives_l_h_t_t():
    att = _softmax_attention(3, 2, len(TOKENS))
    four = at.Trace.from_attentions(att, TOKENS)
    assert four.attentions.shape == (3, 2, 8, 8) and four.attentions.dtype == np.float32
    np.testing.assert_array_equal(four.attentions, att)
    one_layer = at.Trace.from_attentions(torch.from_numpy(att[1]).to(torch.bfloat16), TOKENS)
    assert one_layer.attentions.shape == (1, 2, 8, 8)
    np.testing.assert_allclose(one_layer.attentions[0], att[1], atol=4e-3)
    one_head = at.Trace.from_attentions(att[0, 1].tolist(), TOKENS)
    assert one_head.attentions.shape == (1, 1, 8, 8)
    bertviz = tuple(torch.from_numpy(att[i])[None] for i in range(3))  # L x [1, H, T, T]
    np.testing.assert_array_equal(at.Trace.from_attentions(bertviz, TOKENS).attentions, att)
    stacked = at.Trace.from_attentions(att[:, None], TOKENS)  # [L, 1, H, T, T]
    np.testing.assert_array_equal(stacked.attentions, att)
    assert four.special_mask.tolist() == [True] + [False] * 6 + [True]
    assert four.model_name == "attention" and not four.is_causal
    assert four.tokens == tuple(TOKENS) and not four.has_hidden_states


def test_causal_is_inferred_from_the_weights_and_checked():
    causal = _softmax_attention(2, 2, 5, causal=True)
    assert at.Trace.from_attentions(causal, list("abcde")).is_causal
    assert not at.Trace.from_attentions(causal, list("abcde"), causal=False).is_causal
    with pytest.raises(at.AttnscopeError, match="causal=True, but some query attends to a later"):
        at.Trace.from_attentions(_softmax_attention(1, 1, 5), list("abcde"), causal=True)


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a[..., :-1, :-1], "covers 7 tokens but 8 tokens were given"),
    (lambda a: a[..., :-1], "square over the tokens"),
    (lambda a: np.where(np.eye(8, dtype=bool), np.nan, a), "NaN or infinite"),
    # found through the row sums: an infinity of either sign, even beside a negative weight
    (lambda a: np.where(np.eye(8, dtype=bool), np.inf, a), "NaN or infinite"),
    (lambda a: np.where(np.eye(8, dtype=bool), -np.inf, a), "NaN or infinite"),
    (lambda a: a - 0.05, "negative values"),
    (lambda a: a * 1.3, "rows that do not sum to 1"),
    (lambda a: np.swapaxes(a, -1, -2), "columns sum to 1 instead: pass the transpose"),
    (lambda a: np.stack([a, a], 1), "batch of 2 inputs"),
    (lambda a: a[0, 0, 0], r"shaped \[L, H, T, T\], \[H, T, T\], \[T, T\]"),
])
def test_mistakes_get_one_sentence(change, message):
    att = _softmax_attention(2, 2, 8)
    with pytest.raises(at.AttnscopeError, match=message):
        at.Trace.from_attentions(change(att), TOKENS)


def test_inputs_that_are_not_arrays_or_tokens_get_one_sentence():
    att = _softmax_attention(1, 1, 3)
    with pytest.raises(at.AttnscopeError, match="tokens must be a list of token strings"):
        at.Trace.from_attentions(att, "a b c")
    with pytest.raises(at.AttnscopeError, match="must be a numeric array"):
        at.Trace.from_attentions({"layer": att}, list("abc"))
    with pytest.raises(at.AttnscopeError, match=r"hidden_states must be \[2, 3, D\]"):
        at.Trace.from_attentions(att, list("abc"), hidden_states=np.zeros((1, 3, 4)))
    with pytest.raises(at.AttnscopeError, match="queries and keys together"):
        at.Trace.from_attentions(att, list("abc"), queries=np.zeros((1, 1, 3, 2)))
    with pytest.raises(at.AttnscopeError, match=r"keys must be \[1, 1, 3, d\]"):
        at.Trace.from_attentions(att, list("abc"), queries=np.zeros((1, 1, 3, 2)),
                                 keys=np.zeros((1, 2, 3, 2)))
    with pytest.raises(at.AttnscopeError, match="sentence_b_start 3 is out of range"):
        at.Trace.from_attentions(att, list("abc"), sentence_b_start=3)


# ----- everything works on it -------------------------------------------------------------------

def test_a_captured_trace_rebuilt_from_its_arrays_gives_the_same_analyses(embedded):
    captured = at.capture(embedded, SEED_SENTENCE)
    rebuilt = at.Trace.from_attentions(
        torch.from_numpy(np.array(captured.attentions)), captured.tokens,
        hidden_states=captured.hidden_states, model_name="all-MiniLM-L6-v2",
    )
    assert not rebuilt.is_causal
    np.testing.assert_array_equal(rebuilt.special_mask, captured.special_mask)
    ours, theirs = at.head_patterns(rebuilt), at.head_patterns(captured)
    for score in at.analysis.SCORES:
        np.testing.assert_allclose(ours.score(score), theirs.score(score), atol=1e-6)
    np.testing.assert_allclose(at.attention_rollout(rebuilt).values,
                               at.attention_rollout(captured).values, atol=1e-6)
    np.testing.assert_allclose(at.pca(rebuilt, -1).points, at.pca(captured, -1).points,
                               atol=1e-4)
    np.testing.assert_allclose(at.layer_trends(rebuilt).values,
                               at.layer_trends(captured).values, atol=1e-6)


def test_figures_views_analyses_and_report_on_attention_alone(tmp_path):
    att = _softmax_attention(2, 3, len(TOKENS), seed=3)
    trace = at.Trace.from_attentions(att, TOKENS, sentence_b_start=4, model_name="my model")
    assert trace.segment_ids.tolist() == [-1, 0, 0, 0, 1, 1, 1, -1]
    for figure in (at.heatmap(trace, 1, 2), at.heads_grid(trace), at.model_grid(trace),
                   at.attention_graph(trace), at.head_patterns(trace).label_map(),
                   at.attention_flow(trace).bar(0), at.layer_trends(trace).figure()):
        assert figure.axes
    assert "my model" in at.heatmap(trace, 1, 2).axes[0].get_title()
    page = at.head_view(trace).html
    assert '"my model"' in page or "my model" in page
    assert "model" in at.model_view(trace).html
    flow = at.attention_flow(trace)
    assert flow.values.shape == (8, 8) and np.isfinite(flow.values).all()
    assert np.all(flow.values > 0)  # every input reaches every output through the residual
    with pytest.raises(at.AttnscopeError, match="holds no hidden states"):
        at.pca(trace)
    with pytest.raises(at.AttnscopeError, match="holds no hidden states"):
        at.token_path(trace, 1)
    with pytest.raises(at.AttnscopeError, match="needs the model"):
        at.attention_norms(trace)
    with pytest.raises(at.AttnscopeError, match="no query and key vectors"):
        at.neuron_view(trace).save(tmp_path / "n.png")
    report = at.report(trace)
    assert "holds no hidden states" in report.html and "What each head does" in report.html
    path = trace.save(tmp_path / "t.npz")
    again = at.Trace.load(path)
    np.testing.assert_array_equal(again.attentions, trace.attentions)
    assert again.tokens == trace.tokens and again.sentence_b_start == 4


def test_queries_and_keys_feed_the_neuron_view_and_recompute():
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(size=(2, 2, 5, 4)).astype(np.float32) for _ in range(3))
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(4)  # (L, H, T, T)
    att = np.exp(scores - scores.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    trace = at.Trace.from_attentions(att, list("abcde"), queries=torch.from_numpy(q), keys=k,
                                     values=v)
    assert at.neuron_view(trace, 1, 1, 2).html
    rebuilt = recompute(trace, layer=1)
    assert rebuilt.max_abs_error < 1e-6
    step = at.explain(trace, layer=1, head=0, query="c")
    np.testing.assert_allclose(step.weights, att[1, 0, 2], atol=1e-6)
    np.testing.assert_allclose(step.dots, k[1, 0] @ q[1, 0, 2], rtol=1e-5)


def test_a_hand_written_self_attention_plotted_as_in_the_tutorials():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8)
    _, weights = SelfAttention(8)(x)  # (1, T, T)
    trace = at.Trace.from_attentions(weights, ["I", "love", "attention", "!"])
    assert trace.attentions.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(trace.attention(0, 0), weights[0].detach().numpy(), atol=1e-7)


# ----- figures of one raw matrix ----------------------------------------------------------------

def _image(figure):
    return figure.axes[0].get_images()[0]


def test_heatmap_of_a_raw_matrix_with_its_tokens():
    att = _softmax_attention(1, 1, 4)[0, 0]
    figure = at.heatmap(att, list("abcd"))
    np.testing.assert_array_equal(_image(figure).get_array(), att)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == list("abcd")
    assert _image(figure).cmap.name == "attnscope-light" and _image(figure).get_clim()[0] == 0
    cross = np.full((2, 3), 1 / 3)
    figure = at.heatmap(torch.tensor(cross), ["x", "y"], ["a", "b", "c"])
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["x", "y"]
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["a", "b", "c"]


def test_heatmap_of_a_signed_matrix_is_diverging_around_zero():
    scores = np.array([[2.0, -1.0], [-3.0, 0.5]])
    image = _image(at.heatmap(scores, ["p", "q"], title="scores"))
    assert image.cmap.name == "RdBu_r" and image.get_clim() == (-3.0, 3.0)


def test_figures_of_things_that_are_not_matrices_get_one_sentence():
    with pytest.raises(at.AttnscopeError, match=r"takes a Trace .* or a 2-D matrix"):
        at.heatmap({"not": "a matrix"})
    with pytest.raises(at.AttnscopeError, match="has 3 rows but 2 query tokens"):
        at.heatmap(np.eye(3), ["a", "b"])
    with pytest.raises(at.AttnscopeError, match="one 2-D matrix"):
        at.heatmap(_softmax_attention(2, 2, 3), list("abc"))
    with pytest.raises(at.AttnscopeError, match="every head of a Trace"):
        at.heads_grid(np.eye(3))
    with pytest.raises(at.AttnscopeError, match="negative values"):
        at.attention_graph(np.array([[1.0, -1.0], [0.5, 0.5]]), ["a", "b"])


def test_attention_graph_of_a_raw_matrix():
    att = np.array([[0.9, 0.05, 0.05], [0.6, 0.2, 0.2], [0.0, 0.5, 0.5]])
    figure = at.attention_graph(att, ["a", "b", "c"], threshold=0.3)
    texts = {t.get_text() for t in figure.axes[0].texts}
    assert {"a", "b", "c"} <= texts
    assert len(figure.axes[0].patches) == 4  # 0.9 self-loop, 0.6, 0.5 and the 0.5 self-loop
    columns = at.attention_graph(np.full((2, 3), 1 / 3), ["x", "y"], ["a", "b", "c"], threshold=0)
    assert len(columns.axes[0].lines) == 6


@pytest.mark.parametrize("name", ["head_patterns", "attention_rollout", "attention_flow",
                                  "layer_trends", "attention_norms", "pca", "merge_subwords",
                                  "head_view", "report", "heads_grid"])
def test_analyses_given_a_bare_array_say_how_to_make_a_trace(name):
    with pytest.raises(at.AttnscopeError) as caught:
        getattr(at, name)(np.eye(3))
    assert "Trace" in str(caught.value) and "\n" not in str(caught.value)
    if name not in ("head_view", "report", "heads_grid"):
        assert "Trace.from_attentions(attentions, tokens)" in str(caught.value)
    with pytest.raises(at.AttnscopeError, match="not dict"):
        getattr(at, name)({"attentions": None})
