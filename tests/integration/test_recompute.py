"""The proof: attention rebuilt by hand from a layer's input and the model's own weights equals
the model's output_attentions, for every family, layer and head; q/k/v captured with hooks
reproduce the model's scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnscope as at
from attnscope import adapters
from attnscope.scratch import MultiHeadAttention, recompute
from attnscope.testing import TINY_FAMILIES

TOL = 1e-5
TEXTS = ["The girl poured water into a tall glass until it overflowed.", "leaves fall"]
DECODER_TEXTS = ["autumn is marked by colorful foliage", "the cat sat"]


def test_every_tiny_family_has_an_adapter():
    assert set(TINY_FAMILIES) <= set(adapters.supported())
    assert list(adapters.supported()) == sorted(adapters.supported())


def test_every_layer_and_head_of_the_embedded_model(embedded):
    for layer in range(embedded.num_layers):
        r = recompute(embedded, TEXTS[0], layer)
        assert r.attentions.shape == (12, 16, 16)
        assert r.max_abs_error <= TOL, (layer, r.max_abs_error)
        np.testing.assert_allclose(r.attentions.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_part_layer_and_head_of_each_family_in_a_padded_batch(tiny_models, family):
    model = tiny_models[family]
    parts = ("self", "decoder", "cross") if model.architecture == "encoder-decoder" else ("self",)
    text_b = DECODER_TEXTS if len(parts) > 1 else None
    traces = at.capture_batch(model, TEXTS, text_b)  # the model's own attention
    lengths = [t.num_tokens for t in traces]
    assert lengths[0] != lengths[1]
    for part in parts:
        n_layers = model.num_decoder_layers if part != "self" else model.num_layers
        for layer in range(n_layers):
            # both texts through the hand-written code as one right-padded, masked batch
            results = recompute(traces, layer=layer, model=model, part=part)
            for r, t in zip(results, traces, strict=True):
                expected = t.part(part)[0][layer]
                assert r.attentions.shape == expected.shape
                assert r.max_abs_error <= TOL, (family, part, layer, r.max_abs_error)
                np.testing.assert_allclose(r.attentions.sum(-1), 1.0, atol=1e-5)
                if model.is_causal or part == "decoder":
                    assert np.all(np.triu(r.attentions, 1) == 0)


def test_recompute_from_texts_runs_one_batch(tiny_models):
    model = tiny_models["llama"]
    results = recompute(model, TEXTS, 1)
    assert [r.attentions.shape[-1] for r in results] == [
        at.capture(model, t).num_tokens for t in TEXTS]
    assert all(r.max_abs_error <= TOL for r in results)
    assert results[0].output.shape == (results[0].attentions.shape[1], 32)


def test_the_pre_norm_matters(tiny_models):
    """A negative control: feeding GPT-2's attention the raw hidden state (skipping ln_1) does not
    reproduce the model, so the match above is not a tautology."""
    model = tiny_models["gpt2"]
    trace = at.capture(model, TEXTS[0])
    mha = MultiHeadAttention.from_model(model, 1)
    x = torch.from_numpy(np.array(trace.hidden_states[1]))[None]  # (1, T, D), not normalised
    _, weights = mha(x)
    assert np.abs(weights[0].detach().numpy() - trace.attentions[1]).max() > 1e-3


def test_block_output_matches_the_model(tiny_models, embedded):
    """The whole MultiHeadAttention (output projection included) equals the real module's
    output, for BERT (post-norm) and LLaMA (pre-norm, rotary, grouped-query)."""
    trace = at.capture(embedded, TEXTS[0])
    r = recompute(trace, layer=2, model=embedded)
    x = torch.from_numpy(np.array(trace.hidden_states[2]))[None]
    with torch.no_grad():
        real = embedded.model.encoder.layer[2].attention.self(x)[0]
        real = embedded.model.encoder.layer[2].attention.output.dense(real)
    np.testing.assert_allclose(r.output, real[0].numpy(), atol=1e-5)


def test_capture_qkv_shapes_and_scores(tiny):
    trace = at.capture(tiny, TEXTS[0], qkv=True)
    L, H, T = trace.num_layers, trace.num_heads, trace.num_tokens
    for name in ("queries", "keys", "values"):
        array = getattr(trace, name)
        assert array.shape == (L, H, T, 8) and array.dtype == np.float32
    assert isinstance(trace.extra["attention_scale"], float)
    scale = 1.0 if tiny.model_type == "t5" else 8 ** -0.5
    assert trace.extra["attention_scale"] == pytest.approx(scale)
    assert (trace.extra["position_bias"] is not None) == (tiny.model_type == "t5")
    assert trace.extra["rotary"] == (tiny.model_type == "llama")
    for layer in range(L):
        r = recompute(trace, layer=layer)  # from the stored q/k/v alone
        assert r.max_abs_error <= TOL
    # and from the weights: the stored q/k/v are exactly what the hand-written code projects
    full = recompute(trace, layer=1, model=tiny)
    np.testing.assert_allclose(full.queries, trace.queries[1], atol=1e-5)
    np.testing.assert_allclose(full.keys, trace.keys[1], atol=1e-5)
    np.testing.assert_allclose(full.values, trace.values[1], atol=1e-5)


def test_grouped_query_keys_are_repeated(tiny_models):
    trace = at.capture(tiny_models["llama"], TEXTS[1], qkv=True)
    assert trace.extra["num_key_value_heads"] == 2
    np.testing.assert_array_equal(trace.keys[:, 0], trace.keys[:, 1])
    np.testing.assert_array_equal(trace.values[:, 2], trace.values[:, 3])
    assert not np.allclose(trace.queries[:, 0], trace.queries[:, 1])


def test_batch_qkv_equals_single_capture(tiny_models):
    model = tiny_models["gpt2"]
    batch = at.capture_batch(model, TEXTS, qkv=True)
    for text, trace in zip(TEXTS, batch, strict=True):
        alone = at.capture(model, text, qkv=True)
        assert trace.queries.shape == alone.queries.shape
        np.testing.assert_allclose(trace.queries, alone.queries, atol=1e-5)
        np.testing.assert_allclose(trace.keys, alone.keys, atol=1e-5)


def test_default_capture_records_no_qkv_and_leaves_no_hooks(embedded):
    trace = at.capture(embedded, TEXTS[1])
    assert trace.queries is None and trace.keys is None and trace.values is None
    assert "attention_scale" not in trace.extra
    before = _hooks(embedded.model)
    at.capture(embedded, TEXTS[1], qkv=True)
    assert _hooks(embedded.model) == before  # transformers' own hooks stay, ours are gone


def _hooks(model) -> dict[str, tuple[int, ...]]:
    """Every forward (pre-)hook id per module name."""
    return {name: (*m._forward_hooks, *m._forward_pre_hooks)
            for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks}


def test_hooks_are_removed_when_the_forward_pass_fails(tiny_models, monkeypatch):
    model = tiny_models["bert"]

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    before = _hooks(model.model)
    monkeypatch.setattr(model.model.encoder, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        at.capture(model, TEXTS[1], qkv=True)
    monkeypatch.undo()
    assert _hooks(model.model) == before


def test_qkv_trace_saves_and_loads(tmp_path, tiny_models):
    trace = at.capture(tiny_models["t5"], TEXTS[1], "the cat", qkv=True)
    back = at.Trace.load(trace.save(tmp_path / "t5.npz"))
    np.testing.assert_array_equal(back.queries, trace.queries)
    assert back.extra["position_bias"]["table"] == trace.extra["position_bias"]["table"]
    assert recompute(back, layer=1).max_abs_error <= TOL


@pytest.fixture(scope="module")
def albert(embedded):
    """A family with no adapter: a tiny random ALBERT with the embedded WordPiece vocabulary."""
    from transformers import AlbertConfig, AlbertModel

    config = AlbertConfig(vocab_size=len(embedded.tokenizer), embedding_size=16, hidden_size=32,
                          num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                          max_position_embeddings=64)
    return at.load(AlbertModel(config, ), tokenizer=embedded.tokenizer, device="cpu")


def test_a_family_without_adapter_still_captures_and_says_what_is_supported(albert):
    trace = at.capture(albert, TEXTS[1])
    assert trace.attentions.shape[:2] == (1, 4) and trace.hidden_states.shape[0] == 2
    with pytest.raises(at.AttnscopeError) as err:
        at.capture(albert, TEXTS[1], qkv=True)
    message = str(err.value)
    assert "'albert'" in message and "bert, distilbert" in message and "\n" not in message
    with pytest.raises(at.AttnscopeError, match="supported families"):
        recompute(albert, TEXTS[1], 0)
    with pytest.raises(at.AttnscopeError, match="model's weights"):
        recompute(trace, layer=0)


def test_bad_requests_get_one_sentence(tiny_models, embedded):
    with pytest.raises(at.AttnscopeError, match="valid layers are 0 to 5"):
        recompute(embedded, "a text", 9)
    with pytest.raises(at.AttnscopeError, match="valid parts: self"):
        recompute(embedded, "a text", 0, part="cross")
    with pytest.raises(at.AttnscopeError, match="needs a text"):
        recompute(embedded)
    trace = at.capture(tiny_models["bert"], "a text")
    with pytest.raises(at.AttnscopeError, match="not from"):
        recompute(trace, layer=0, model=embedded)


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_sliding_window_families(windowed, family):
    model = windowed[family]
    traces = at.capture_batch(model, TEXTS, qkv=True)
    windows = traces[0].extra["sliding_windows"]
    assert windows == ([4, 4] if family == "mistral" else [None, 3])
    for layer in range(2):
        for r in recompute(traces, layer=layer, model=model):
            assert r.max_abs_error <= TOL
        for t in traces:
            assert recompute(t, layer=layer).max_abs_error <= TOL  # from stored q/k/v
            e = at.explain(t, layer, 1, t.num_tokens - 1)
            assert e.max_abs_error <= TOL
            if windows[layer] is not None:  # the window hides the early keys of a late query
                assert e.visible.sum() == windows[layer]
                assert t.attentions[layer, 1, -1, 0] == 0.0


def test_sentence_pair_with_segment_embeddings(embedded, seed_pair_trace):
    r = recompute(embedded, "leaves fall in autumn", 5,
                  text_b="autumn is marked by colorful foliage")
    assert r.attentions.shape[-1] == seed_pair_trace.num_tokens
    assert r.max_abs_error <= TOL
    np.testing.assert_allclose(r.attentions, seed_pair_trace.attentions[5], atol=TOL)
