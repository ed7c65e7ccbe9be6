"""from_transformer_lens on real TransformerLens caches, checked against the cache's own tensors
and against attnscope's capture of the same Hugging Face model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import attnscope as at
from attnscope.scratch import recompute

transformer_lens = pytest.importorskip(
    "transformer_lens", reason="TransformerLens is an optional extra (attnscope[transformer-lens])"
)

TOKENS = torch.tensor([[1, 7, 3, 9, 4, 7, 3, 12]])  # token ids; 7 3 repeats (induction)


def _tiny_tl_model():
    """A tiny random TransformerLens model built from a config, without the hub: a
    HookedTransformer on TransformerLens 3, the native TransformerBridge on 4."""
    settings = {"n_layers": 2, "d_model": 32, "d_head": 8, "n_heads": 4, "n_ctx": 16,
                "d_vocab": 20, "d_mlp": 64, "act_fn": "gelu", "normalization_type": "LN"}
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:  # TransformerLens 4 replaced HookedTransformer with TransformerBridge
        from transformer_lens import TransformerBridge, TransformerBridgeConfig

        torch.manual_seed(0)
        return TransformerBridge.boot_native(TransformerBridgeConfig(**settings))
    return HookedTransformer(HookedTransformerConfig(**settings, seed=0))


@pytest.fixture(scope="module")
def tl_run():
    model = _tiny_tl_model()
    model.eval()
    with torch.no_grad():
        _, cache = model.run_with_cache(TOKENS)
    return model, cache


def test_patterns_vectors_and_residual_stream_are_the_caches_own(tl_run):
    model, cache = tl_run
    tokens = [f"t{i}" for i in TOKENS[0].tolist()]
    trace = at.from_transformer_lens(cache, tokens)
    layers = model.cfg.n_layers
    assert trace.attentions.shape == (layers, 4, 8, 8) and trace.is_causal
    for layer in range(layers):
        np.testing.assert_array_equal(trace.attentions[layer],
                                      cache[f"blocks.{layer}.attn.hook_pattern"][0].numpy())
        q = cache[f"blocks.{layer}.attn.hook_q"][0].numpy()  # (T, H, d)
        np.testing.assert_array_equal(trace.queries[layer], q.transpose(1, 0, 2))
        np.testing.assert_array_equal(trace.keys[layer],
                                      cache[f"blocks.{layer}.attn.hook_k"][0].numpy()
                                      .transpose(1, 0, 2))
        np.testing.assert_array_equal(trace.values[layer],
                                      cache[f"blocks.{layer}.attn.hook_v"][0].numpy()
                                      .transpose(1, 0, 2))
        np.testing.assert_array_equal(trace.hidden_states[layer],
                                      cache[f"blocks.{layer}.hook_resid_pre"][0].numpy())
    np.testing.assert_array_equal(trace.hidden_states[-1],
                                  cache[f"blocks.{layers - 1}.hook_resid_post"][0].numpy())
    assert trace.extra["source"] == "transformer_lens"
    assert trace.extra["attention_scale"] == pytest.approx(1 / math.sqrt(8))
    # the stored queries and keys give the cache's patterns through attnscope's own softmax
    for layer in range(layers):
        assert recompute(trace, layer=layer).max_abs_error < 1e-6


def test_everything_works_on_a_transformer_lens_trace(tl_run):
    _, cache = tl_run
    trace = at.from_transformer_lens(cache, [f"t{i}" for i in TOKENS[0].tolist()],
                                     model_name="tiny TL")
    table = at.head_patterns(trace)
    assert table.score("induction").shape == (2, 4)
    assert at.pca(trace, -1).points.shape == (8, 2)
    assert at.neuron_view(trace, 1, 0, 5).html
    assert "tiny TL" in at.head_view(trace).html
    np.testing.assert_allclose(at.attention_rollout(trace).values.sum(-1), 1.0, atol=1e-5)


def test_mistakes_get_one_sentence(tl_run):
    model, cache = tl_run
    with pytest.raises(at.AttnscopeError, match="cover 8 positions but 3 tokens"):
        at.from_transformer_lens(cache, ["a", "b", "c"])
    with pytest.raises(at.AttnscopeError, match="Pass what the model ran on"):
        at.from_transformer_lens(cache, model)
    with pytest.raises(at.AttnscopeError, match="no attention patterns"):
        at.from_transformer_lens({"blocks.0.hook_resid_pre": torch.zeros(1, 2, 3)}, ["a", "b"])
    with pytest.raises(at.AttnscopeError, match=r"takes the cache from model\.run_with_cache"):
        at.from_transformer_lens(torch.zeros(3), ["a"])
    batched = {k: torch.cat([v, v]) for k, v in cache.items()}
    with pytest.raises(at.AttnscopeError, match="batch of 2 inputs; choose one with index"):
        at.from_transformer_lens(batched, [f"t{i}" for i in range(8)])
    second = at.from_transformer_lens(batched, [f"t{i}" for i in range(8)], index=1)
    np.testing.assert_array_equal(second.attentions[0],
                                  cache["blocks.0.attn.hook_pattern"][0].numpy())


def test_a_hugging_face_model_through_transformer_lens_matches_capture(tiny_dirs, tiny_models):
    """The same tiny GPT-2 run by TransformerLens and captured by attnscope: same attention."""
    bridge_class = getattr(transformer_lens, "TransformerBridge", None)
    if bridge_class is None:
        pytest.skip("TransformerLens 3 loads Hugging Face models by hub name only")
    import transformers

    model = tiny_models["gpt2"]
    lm = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_dirs["gpt2"], attn_implementation="eager")
    bridge = bridge_class.boot_transformers(str(tiny_dirs["gpt2"]), hf_model=lm,
                                            tokenizer=model.tokenizer)
    text = "The cat sat on the mat."
    with torch.no_grad():
        _, cache = bridge.run_with_cache(text, prepend_bos=False)
    trace = at.from_transformer_lens(cache, bridge, text)
    captured = at.capture(model, text)
    assert len(trace.tokens) == captured.num_tokens
    assert "".join(trace.tokens) == text
    np.testing.assert_allclose(trace.attentions, captured.attentions, atol=1e-5)
    np.testing.assert_allclose(trace.hidden_states[0], captured.hidden_states[0], atol=1e-5)
