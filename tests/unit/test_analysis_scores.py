"""Head-pattern scores, rollout and flow on hand-built attention whose answers are known."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

import attnscope as at
from attnscope.analysis.flow import LayeredFlow, max_flow, residual_attention
from attnscope.analysis.patterns import SCORES, is_punctuation, kovaleva_class
from attnscope.testing import networkx_flow_graph

TOKENS = ("[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]")


def make_trace(matrices: np.ndarray, tokens=TOKENS, special=None, architecture="encoder"):
    """A Trace around hand-built attention ``[L, H, T, T]`` (rows need not be model output)."""
    n = len(tokens)
    if special is None:
        special = np.array([t.startswith("[") for t in tokens])
    matrices = np.asarray(matrices, dtype=np.float32)
    return at.Trace(
        model_name="hand-built", model_type="bert", architecture=architecture,
        text=" ".join(tokens), text_b=None, tokens=tokens,
        input_ids=np.arange(n), token_type_ids=np.zeros(n, np.int64),
        special_mask=np.asarray(special, bool),
        word_ids=np.where(special, -1, np.cumsum(~np.asarray(special)) - 1),
        offsets=np.full((n, 2), -1), segment_ids=np.where(special, -1, 0),
        sentence_b_start=None, attentions=matrices,
        hidden_states=np.random.default_rng(0).normal(size=(matrices.shape[0] + 1, n, 8)),
    )


def shifted(n: int, offset: int) -> np.ndarray:
    """Each row puts all its attention on position i + offset (clipped to the ends)."""
    m = np.zeros((n, n))
    for i in range(n):
        m[i, min(max(i + offset, 0), n - 1)] = 1
    return m


def test_perfect_heads_score_one():
    n = len(TOKENS)
    heads = [shifted(n, -1), shifted(n, 1), np.eye(n), np.full((n, n), 1 / n)]
    table = at.head_patterns(make_trace(np.stack(heads)[None]))
    assert table.scores.shape == (1, 4, len(SCORES))
    assert table.score("previous")[0, 0] == pytest.approx(1.0)
    assert table.score("next")[0, 1] == pytest.approx(1.0)
    assert table.score("self")[0, 2] == pytest.approx(1.0)
    assert table.score("broad")[0, 3] == pytest.approx(1.0)  # uniform: entropy 1
    assert table.score("broad")[0, 0] == pytest.approx(0.0)  # one key: entropy 0
    assert table.score("previous")[0, 3] == pytest.approx(1 / n)
    assert list(table.labels[0]) == ["previous", "next", "self", "broad"]
    assert table.score("distance")[0, 0] == pytest.approx(1.0)
    assert table.score("distance")[0, 2] == pytest.approx(0.0)
    assert table.best("previous", 1)[0][:2] == (0, 0)
    assert table.find("next", 0.5) == [(0, 1, pytest.approx(1.0))]
    assert list(table.classes[0, :3]) == ["diagonal"] * 3
    assert math.isnan(table.score("induction")[0, 0])  # encoders have no induction score


def test_special_token_rows_and_targets():
    n = len(TOKENS)
    # Every row looks at [SEP]: separator 1, previous only where [SEP] is the previous token.
    sep = np.zeros((n, n))
    sep[:, -1] = 1
    first = np.zeros((n, n))
    first[:, 0] = 1
    table = at.head_patterns(make_trace(np.stack([sep, first])[None]))
    assert table.score("separator")[0, 0] == pytest.approx(1.0)
    assert table.score("first")[0, 1] == pytest.approx(1.0)
    assert table.labels[0, 0] == "separator" and table.labels[0, 1] == "first"
    assert table.classes[0, 0] == "vertical"
    # Previous-token targets never point at special tokens, so looking at [CLS] scores 0.
    assert table.score("previous")[0, 1] == pytest.approx(0.0)


def test_duplicate_and_punctuation():
    n = len(TOKENS)
    dup = np.zeros((n, n))
    dup[1, 5] = dup[5, 1] = 1  # "the" <-> "the"
    for i in (0, 2, 3, 4, 6, 7, 8):
        dup[i, 7] = 1  # everyone else looks at "."
    table = at.head_patterns(make_trace(dup[None, None]))
    # Only rows with a duplicate ("the" twice) are scored for duplicate.
    assert table.score("duplicate")[0, 0] == pytest.approx(1.0)
    # Punctuation: 5 plain rows of 7 look at "."; "." itself looks at "." (a plain key).
    assert table.score("punctuation")[0, 0] == pytest.approx(5 / 7)
    assert is_punctuation("##.") and is_punctuation("Ġ,") and not is_punctuation("cat")


def test_induction_on_a_causal_model():
    tokens = ("a", "b", "c", "a", "b", "c")
    n = len(tokens)
    head = np.zeros((n, n))
    head[0, 0] = head[1, 0] = head[2, 1] = 1  # nothing earlier to copy: look back
    head[3, 1] = head[4, 2] = head[5, 3] = 1  # the token after the earlier copy
    trace = make_trace(head[None, None], tokens, np.zeros(n, bool), architecture="decoder")
    table = at.head_patterns(trace)
    assert table.score("induction")[0, 0] == pytest.approx(1.0)
    assert table.score("next")[0, 0] == 0.0


def test_kovaleva_rules():
    assert kovaleva_class(0.9, 0.05, 0.0) == "diagonal"
    assert kovaleva_class(0.05, 0.9, 0.0) == "vertical"
    assert kovaleva_class(0.35, 0.4, 0.0) == "vertical+diagonal"
    assert kovaleva_class(0.1, 0.1, 0.8) == "block"
    assert kovaleva_class(0.1, 0.2, 0.3) == "heterogeneous"


def test_table_outputs():
    n = len(TOKENS)
    table = at.head_patterns(make_trace(np.stack([shifted(n, -1)] * 2)[None]))
    text = table.to_text()
    assert "previous" in text and len(text.splitlines()) == 2 + 2
    assert "<table" in table._repr_html_()
    records = table.records()
    assert records[1]["head"] == 1 and records[1]["previous"] == pytest.approx(1.0)
    with pytest.raises(at.AttnscopeError, match="Unknown score"):
        table.score("sideways")


def test_rollout_matches_hand_worked_matrices():
    # Two layers, one head, two tokens.
    a0 = np.array([[1.0, 0.0], [0.5, 0.5]])
    a1 = np.array([[0.0, 1.0], [1.0, 0.0]])
    trace = make_trace(np.stack([a0, a1])[:, None], ("x", "y"), np.zeros(2, bool))
    # R0 = 0.5*a0 + 0.5*I = [[1, 0], [.25, .75]]; R1 = [[.5, .5], [.5, .5]].
    # Rollout = R1 @ R0 = [[.625, .375], [.625, .375]].
    rollout = at.attention_rollout(trace)
    np.testing.assert_allclose(rollout.values, [[0.625, 0.375], [0.625, 0.375]], atol=1e-12)
    np.testing.assert_allclose(rollout.values.sum(1), 1.0)
    assert at.attention_rollout(trace, output=-1).outputs == (1,)


def test_rollout_averages_heads_and_renormalises():
    rng = np.random.default_rng(3)
    att = rng.random((3, 2, 4, 4))
    att /= att.sum(-1, keepdims=True)
    trace = make_trace(att, ("a", "b", "c", "d"), np.zeros(4, bool))
    expected = np.eye(4)
    for layer in att:
        r = 0.5 * layer.mean(0) + 0.5 * np.eye(4)
        expected = (r / r.sum(1, keepdims=True)) @ expected
    np.testing.assert_allclose(at.attention_rollout(trace).values, expected, atol=1e-6)


def networkx_flow(residual: np.ndarray, source: int, sink: int) -> float:
    """The paper's way: the full layered graph in networkx, Edmonds-Karp."""
    layers, n, _ = residual.shape
    graph = networkx_flow_graph(residual)
    return nx.maximum_flow_value(graph, layers * n + source, sink,
                                 flow_func=nx.algorithms.flow.edmonds_karp)


@pytest.mark.parametrize("seed", range(6))
def test_flow_equals_networkx_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    layers, n = int(rng.integers(1, 5)), int(rng.integers(2, 8))
    att = rng.random((layers, 2, n, n)) ** 3 * (rng.random((layers, 2, n, n)) < 0.7)
    att += 1e-3
    att /= att.sum(-1, keepdims=True)
    trace = make_trace(att, tuple("abcdefgh"[:n]), np.zeros(n, bool))
    flow = at.attention_flow(trace)
    residual = residual_attention(trace)
    expected = np.array([[networkx_flow(residual, s, t) for t in range(n)] for s in range(n)])
    np.testing.assert_allclose(flow.values, expected, atol=1e-6, rtol=0)
    one = at.attention_flow(trace, output=n - 1)
    np.testing.assert_allclose(one.values[0], expected[-1], atol=1e-6, rtol=0)


def test_flow_on_arbitrary_capacities_with_nontrivial_cuts():
    # Capacities that are not row-stochastic, so the cuts around source and sink rarely
    # decide: the refinement rounds and the sparse pass must still agree with networkx.
    rng = np.random.default_rng(11)
    for _ in range(4):
        layers, n = 4, 6
        residual = rng.random((layers, n, n)) ** 4 * (rng.random((layers, n, n)) < 0.6)
        network = LayeredFlow(residual, keep=2)
        values = network.values(range(n))
        expected = np.array([[networkx_flow(residual, s, t) for t in range(n)]
                             for s in range(n)])
        np.testing.assert_allclose(values, expected, atol=1e-6, rtol=0)


def test_max_flow_on_a_general_graph():
    rng = np.random.default_rng(5)
    caps = rng.random((25, 25)) * (rng.random((25, 25)) < 0.25)
    np.fill_diagonal(caps, 0)
    graph = nx.DiGraph()
    for i, j in zip(*np.nonzero(caps), strict=True):
        graph.add_edge(int(i), int(j), capacity=float(caps[i, j]))
    graph.add_nodes_from([0, 24])
    assert max_flow(caps, 0, 24) == pytest.approx(nx.maximum_flow_value(graph, 0, 24), abs=1e-7)
    with pytest.raises(at.AttnscopeError, match="different nodes"):
        max_flow(caps, 3, 3)


def test_flow_result_relevance_and_errors():
    n = len(TOKENS)
    att = np.stack([np.full((n, n), 1 / n)] * 2)[:, None]
    flow = at.attention_flow(make_trace(att), output=0)
    rel = flow.relevance(0)
    assert rel.sum() == pytest.approx(1.0)
    with pytest.raises(at.AttnscopeError, match="was not computed"):
        flow.row(3)
    with pytest.raises(at.AttnscopeError, match="out of range"):
        at.attention_flow(make_trace(att), output=50)
    assert "relevance" not in flow.to_text() and "'[CLS]'" in flow.to_text()


def test_layer_trends_on_hand_built_attention():
    n = len(TOKENS)
    sep = np.zeros((n, n))
    sep[:, -1] = 1
    uniform = np.full((n, n), 1 / n)
    trends = at.layer_trends(make_trace(np.stack([sep, uniform])[:, None]))
    assert trends.stat("special")[0] == pytest.approx(1.0)
    assert trends.stat("entropy")[1] == pytest.approx(1.0)
    assert trends.stat("entropy")[0] == pytest.approx(0.0)
    assert trends.stat("punctuation")[1] == pytest.approx(1 / n)
    assert "entropy" in trends.to_text()


def test_separator_is_not_applicable_without_separator_tokens():
    """GPT-2 puts no [SEP]/EOS after the text: the separator score is NaN (shown as "-"), not
    the attention to the last token."""
    n = 5
    att = np.zeros((1, 1, n, n), dtype=np.float32)
    att[0, 0, :, n - 1] = 1.0  # every query on the last token
    trace = at.Trace.from_attentions(att, ["a", "b", "c", "d", "e"], causal=False)
    table = at.head_patterns(trace)
    assert np.isnan(table.score("separator")[0, 0])
    assert table.labels[0, 0] != "separator"
    with_sep = at.Trace.from_attentions(att, ["[CLS]", "b", "c", "d", "[SEP]"], causal=False)
    assert at.head_patterns(with_sep).score("separator")[0, 0] == pytest.approx(1.0)
