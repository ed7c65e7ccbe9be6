"""Every analysis on a LazyTrace, streamed over row blocks, equals the eager one."""

from __future__ import annotations

import numpy as np
import pytest

import attnscope as at
from attnscope.analysis.streaming import lazy_head_patterns, lazy_layer_trends, lazy_rollout
from attnscope.errors import AttnscopeError

# Repeated words (duplicate and induction targets), punctuation, a previous token everywhere.
TEXT = "The cat sat. The cat sat on the mat, and the dog sat on the cat."


@pytest.fixture(scope="module")
def pairs(tiny_models, windowed, embedded) -> dict[str, tuple[at.Trace, at.LazyTrace]]:
    """name -> (eager Trace, LazyTrace) of TEXT: encoders, GPT-2, Llama with grouped heads,
    Mistral and Qwen2 with sliding windows, and the real MiniLM."""
    models = {f: tiny_models[f] for f in ("bert", "gpt2", "llama")} | dict(windowed)
    models["embedded"] = embedded
    return {name: (at.capture(m, TEXT), at.capture(m, TEXT, attention="lazy"))
            for name, m in models.items()}


NAMES = ("bert", "gpt2", "llama", "mistral", "qwen2", "embedded")


@pytest.mark.parametrize("name", NAMES)
def test_head_patterns_of_a_lazy_trace_equal_the_eager_table(pairs, name):
    eager, lazy = pairs[name]
    want = at.head_patterns(eager)
    for block in (5, 4096):  # blocks that split the rows, and one block holding them all
        got = lazy_head_patterns(lazy, block=block)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5, rtol=0)
        for part in ("diagonal", "vertical", "block"):
            np.testing.assert_allclose(got.kovaleva[part], want.kovaleva[part], atol=1e-5,
                                       rtol=0)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.classes, want.classes)
        assert got.tokens == want.tokens and got.part == "self"
    # the public function streams a LazyTrace too
    np.testing.assert_allclose(at.head_patterns(lazy).scores, want.scores, atol=1e-5, rtol=0)
    if eager.is_causal:  # the scores that only causal models have are real numbers here
        assert np.isfinite(want.score("induction")).all()


def test_sentence_pairs_score_their_blocks_by_sentence(embedded, tiny_models):
    """A [SEP]-joined pair: Kovaleva's block share is the attention within each sentence."""
    for model in (embedded, tiny_models["bert"]):
        eager = at.capture(model, "leaves fall in autumn", "autumn is marked by colorful foliage")
        lazy = at.capture(model, "leaves fall in autumn", "autumn is marked by colorful foliage",
                          attention="lazy")
        want = at.head_patterns(eager)
        for block in (3, 512):
            got = lazy_head_patterns(lazy, block=block)
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-5, rtol=0)
            for part in ("diagonal", "vertical", "block"):
                np.testing.assert_allclose(got.kovaleva[part], want.kovaleva[part], atol=1e-5,
                                           rtol=0)
        assert np.isfinite(want.score("separator")).all()


def test_sink_entropy_and_distance_match_a_plain_computation(pairs):
    """The streamed sink, entropy and distance against the published formulas, written
    plainly over the eager weights of the causal Llama."""
    eager, lazy = pairs["llama"]
    table = lazy_head_patterns(lazy, block=3)
    A = eager.attentions.astype(np.float64)
    T = eager.num_tokens
    plain_rows = [i for i in range(T) if not eager.special_mask[i]]
    for layer in range(A.shape[0]):
        for head in range(A.shape[1]):
            P = A[layer, head]
            sink = np.mean([P[i, 0] for i in range(1, T)])  # rows that see two keys or more
            broad = np.mean([-sum(p * np.log(p) for p in P[i, : i + 1] if p > 0) / np.log(i + 1)
                             for i in plain_rows if i >= 1])
            distance = np.mean([sum(P[i, j] * abs(i - j) for j in range(T))
                                for i in plain_rows])
            assert table.score("sink")[layer, head] == pytest.approx(sink, abs=1e-5)
            assert table.score("broad")[layer, head] == pytest.approx(broad, abs=1e-5)
            assert table.score("distance")[layer, head] == pytest.approx(distance, abs=1e-4)


@pytest.mark.parametrize("name", ["bert", "llama", "mistral", "embedded"])
def test_layer_trends_of_a_lazy_trace_equal_the_eager_ones(pairs, name):
    eager, lazy = pairs[name]
    want = at.layer_trends(eager)
    got = at.layer_trends(lazy)
    np.testing.assert_allclose(got.per_head, want.per_head, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lazy_layer_trends(lazy, block=2).values, want.values,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["bert", "gpt2", "qwen2", "embedded"])
def test_rollout_of_chosen_rows_equals_the_eager_rollout(pairs, name):
    eager, lazy = pairs[name]
    T = eager.num_tokens
    want = at.attention_rollout(eager).values  # [T, T]
    # the same product written plainly: R_l = (0.5 mean_h A_l + 0.5 I) / row sums
    joint = np.eye(T)
    for layer in eager.attentions.astype(np.float64):
        R = 0.5 * layer.mean(0) + 0.5 * np.eye(T)
        joint = (R / R.sum(-1, keepdims=True)) @ joint
    np.testing.assert_allclose(want, joint, atol=1e-12)
    chosen = [0, 5, T - 1]
    got = at.attention_rollout(lazy, chosen)
    assert got.outputs == (0, 5, T - 1) and got.kind == "rollout"
    np.testing.assert_allclose(got.values, want[chosen], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.values.sum(-1), 1.0, atol=1e-6)
    one = lazy_rollout(lazy, [-1], block=4)
    np.testing.assert_allclose(one.row(T - 1), want[T - 1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(at.attention_rollout(lazy, 3).values, want[[3]], atol=1e-5,
                               rtol=0)
    np.testing.assert_allclose(at.attention_rollout(lazy).values, want, atol=1e-5, rtol=0)
    # the eager function takes a list of rows too
    np.testing.assert_allclose(at.attention_rollout(eager, chosen).values, want[chosen])


def test_bad_requests_on_lazy_analyses_get_one_sentence(pairs):
    _, lazy = pairs["gpt2"]
    T = lazy.num_tokens
    with pytest.raises(AttnscopeError, match="holds no 'decoder' attention; it holds "
                                             "self-attention"):
        at.head_patterns(lazy, part="decoder")
    with pytest.raises(AttnscopeError, match="score self-attention"):
        at.head_patterns(lazy, part="cross")
    with pytest.raises(AttnscopeError, match="block must be a whole number"):
        lazy_head_patterns(lazy, block=0)
    with pytest.raises(AttnscopeError, match="out of range"):
        at.attention_rollout(lazy, T)
    with pytest.raises(AttnscopeError, match="select no token"):
        at.attention_rollout(lazy, [])
    with pytest.raises(AttnscopeError, match="memory budget"):
        lazy_rollout(lazy, None, budget=64)


def test_streaming_reads_one_block_of_rows_at_a_time(pairs, monkeypatch):
    """The O(H·block·T) promise: every weight computation covers at most ``block`` query rows,
    and nothing asks for the whole array."""
    _, lazy = pairs["llama"]
    seen_rows = []
    original = at.LazyTrace._log_weights

    def watched(self, layer, heads, rows, cols):
        seen_rows.append(len(rows))
        return original(self, layer, heads, rows, cols)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole array was asked for")

    monkeypatch.setattr(at.LazyTrace, "_log_weights", watched)
    monkeypatch.setattr(at.LazyTrace, "to_dense", refuse)
    lazy_head_patterns(lazy, block=4)
    lazy_layer_trends(lazy, block=4)
    lazy_rollout(lazy, [2], block=4)
    assert seen_rows and max(seen_rows) == 4


def test_analyses_that_need_whole_weights_say_how_to_get_them(pairs):
    _, lazy = pairs["gpt2"]
    with pytest.raises(AttnscopeError, match=r"lazy.window\(start, stop\)") as info:
        at.attention_norms(lazy)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_attention_flow_of_a_lazy_trace_equals_the_eager_flow(pairs, name, monkeypatch):
    """Flow streams the head-averaged weights of a LazyTrace together (within the budgets)."""
    from attnscope.analysis.flow import lazy_residual, residual_attention

    eager, lazy = pairs[name]
    np.testing.assert_allclose(lazy_residual(lazy, block=4), residual_attention(eager),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(at.attention_flow(lazy, 2).values,
                               at.attention_flow(eager, 2).values, atol=1e-5, rtol=0)
    with pytest.raises(AttnscopeError, match="over the budget of 1e-06 s"):
        at.attention_flow(lazy, budget=1e-6)  # the time estimate refuses before streaming
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", "1000")
    with pytest.raises(AttnscopeError, match="past the memory budget"):
        at.attention_flow(lazy, 2)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_rollout_of_a_lazy_decoder_equals_the_eager_decoder_rollout(tiny_models, family):
    model = tiny_models[family]
    source, target = "The cat sat on the mat.", "Die Katze sass auf der Matte."
    eager = at.capture(model, source, target, attention="eager")
    lazy = at.capture(model, source, target, attention="lazy")
    T = len(eager.decoder_tokens)
    joint = np.eye(T)  # R_l = (0.5 mean_h A_l + 0.5 I) / row sums, written plainly
    for layer in eager.decoder_attentions.astype(np.float64):
        R = 0.5 * layer.mean(0) + 0.5 * np.eye(T)
        joint = (R / R.sum(-1, keepdims=True)) @ joint
    want = at.attention_rollout(eager, part="decoder")
    np.testing.assert_allclose(want.values, joint, atol=1e-12)
    assert want.tokens == eager.decoder_tokens
    got = at.attention_rollout(lazy, [0, T - 1], part="decoder")
    np.testing.assert_allclose(got.values, joint[[0, T - 1]], atol=1e-5, rtol=0)
    assert got.tokens == eager.decoder_tokens
    np.testing.assert_allclose(at.attention_rollout(lazy, [1]).values,
                               at.attention_rollout(eager, [1]).values, atol=1e-5, rtol=0)
    for part, message in (("cross", "need self-attention"), ("decoder", "has no decoder")):
        alone = lazy if part == "cross" else at.capture(model, source, attention="lazy")
        with pytest.raises(AttnscopeError, match=message):
            at.attention_rollout(alone, part=part)


def test_the_real_smollm2_streams_to_the_eager_numbers(smollm2):
    """SmolLM2-135M (30 layers, 9 heads sharing 3 key heads): the streamed head table, layer
    trends and rollout rows equal the eager ones (distances, in tokens, to relative 1e-5)."""
    text = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps again."
    eager = at.capture(smollm2, text, attention="eager")
    lazy = at.capture(smollm2, text, attention="lazy")
    want, got = at.head_patterns(eager), at.head_patterns(lazy)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(at.layer_trends(lazy).per_head,
                               at.layer_trends(eager).per_head, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(at.attention_rollout(lazy, [-1, 5]).values,
                               at.attention_rollout(eager, [-1, 5]).values, atol=1e-5)
