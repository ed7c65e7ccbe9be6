"""Context mixing on tiny models: each method against a plain re-derivation written here.

Value Zeroing against the hand-written attention with a value vector zeroed (and the published
scoring: 1 - cos, rows normalised, rolled out without a residual); ALTI's terms summing to the
block's output and its scores re-derived from the weights; attention x gradient converging as
its Riemann steps grow, to F(A) - F(0); gradient rollout against the attention tensors' own
gradients; and every bad input as one sentence.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attnscope as at
from attnscope.analysis import context_mixing as cm
from attnscope.scratch import MultiHeadAttention

TEXT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def tied_llama(tiny_dirs, tmp_path_factory):
    """The tiny Llama (4 query heads, 2 key/value heads, rotary) with its output embedding tied
    to the input one, so that its language-modelling head is the checkpoint's own."""
    path = tmp_path_factory.mktemp("tied") / "tiny-llama"
    shutil.copytree(tiny_dirs["llama"], path)
    config = json.loads((path / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (path / "config.json").write_text(json.dumps(config))
    return at.load(path, device="cpu")


def _trace(model, text=TEXT):
    return at.capture(model, text, qkv=True)


# ----- Value Zeroing ------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
def test_value_zeroing_fast_path_equals_the_plain_loop(tiny_models, family):
    model = tiny_models[family]
    trace = _trace(model)
    fast = at.context_mixing(trace, model, "value_zeroing", progress=False)
    loop = cm.value_zeroing_loop(model, trace)
    assert fast.raw.shape == (model.num_layers, trace.num_tokens, trace.num_tokens)
    np.testing.assert_allclose(fast.raw, loop, rtol=1e-2, atol=5e-7)
    assert loop.max() > 5e-5  # zeroing a value vector changes something
    if model.is_causal:  # a later token's value never reaches an earlier output
        assert np.abs(np.triu(fast.raw, k=1)).max() < 1e-6


def _bert_rest_of_layer(block, hidden, attn_out):
    """BERT after its attention, plainly: LayerNorm(residual), GELU feed-forward, LayerNorm."""
    norm1 = block.attention.output.LayerNorm
    mid = F.layer_norm(attn_out + hidden, hidden.shape[-1:], norm1.weight, norm1.bias, norm1.eps)
    inner = F.gelu(mid @ block.intermediate.dense.weight.T + block.intermediate.dense.bias)
    out = inner @ block.output.dense.weight.T + block.output.dense.bias
    norm2 = block.output.LayerNorm
    return F.layer_norm(out + mid, hidden.shape[-1:], norm2.weight, norm2.bias, norm2.eps)


@torch.no_grad()
def test_value_zeroing_equals_hand_written_attention_with_zeroed_values(tiny_models):
    """The published method (Mohebbi et al. 2023, scoring/value_zeroing.py re-derived): for each
    layer and token j, run the layer with v_j = 0 in every head; score 1 - cos against the
    untouched layer output; normalise rows; roll out as plain products."""
    model = tiny_models["bert"]
    trace = _trace(model)
    T, L = trace.num_tokens, model.num_layers
    expected = np.zeros((L, T, T))
    for layer in range(L):
        block = model.model.encoder.layer[layer]
        mha = MultiHeadAttention.from_model(model, layer)
        x = torch.from_numpy(trace.hidden_states[layer])[None]  # (1, T, D)
        q, k, v = mha.project(x)  # (1, H, T, d)
        original = _bert_rest_of_layer(block, x, mha(x)[0])[0]
        for j in range(T):
            zeroed_v = v.clone()
            zeroed_v[:, :, j] = 0.0
            weights = torch.softmax(q @ k.transpose(-1, -2) * mha.scale, dim=-1)
            heads = (weights @ zeroed_v).transpose(1, 2).reshape(1, T, -1)
            changed = _bert_rest_of_layer(block, x, mha.out_proj(heads))[0]
            a, b = changed.double().numpy(), original.double().numpy()
            a, b = a / np.linalg.norm(a, axis=-1, keepdims=True), b / np.linalg.norm(
                b, axis=-1, keepdims=True)
            expected[layer, :, j] = 1 - (a * b).sum(-1)  # 1 - cos, in float64
    result = at.context_mixing(trace, model, "value_zeroing", progress=False)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-2, atol=5e-7)
    normalised = expected / expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(result.scores, normalised, rtol=1e-3, atol=1e-6)
    rolled = normalised[0]
    for layer in range(1, L):
        rolled = normalised[layer] @ rolled
    np.testing.assert_allclose(result.rollout[-1], rolled, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(result.scores.sum(-1), 1.0, atol=1e-5)


# ----- ALTI and norms -----------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
def test_alti_terms_sum_to_the_attention_block_output(tiny_models, family):
    model = tiny_models[family]
    trace = _trace(model)
    for layer in range(model.num_layers):
        terms, bias, output = cm.decompose(model, trace, layer)
        assert terms.shape == (trace.num_tokens, trace.num_tokens, trace.hidden_states.shape[-1])
        np.testing.assert_allclose((terms.sum(1) + bias).numpy(), output.numpy(), atol=1e-5)
        if model.is_causal:  # nothing flows from later tokens
            later = torch.triu(torch.ones(trace.num_tokens, trace.num_tokens), 1).bool()
            assert terms[later].abs().max() == 0


@torch.no_grad()
def test_alti_output_is_the_real_attention_block(tiny_models):
    """The decomposed output is what the real BERT attention module returns."""
    model = tiny_models["bert"]
    trace = _trace(model)
    x = torch.from_numpy(trace.hidden_states[1])[None]
    real = model.model.encoder.layer[1].attention(x)[0][0]
    _, _, output = cm.decompose(model, trace, 1)
    np.testing.assert_allclose(output.numpy(), real.numpy(), atol=1e-5)


def test_alti_matches_the_published_formula_on_tiny_bert(tiny_models):
    """Ferrando et al. 2022 (transformer-contributions, contributions.py) re-derived in float64
    from the weights: per-head transformed vectors, residual on the diagonal, the layer norm
    split linearly, c_ij = max(0, ||y_i||_1 - ||y_i - T_i(x_j)||_1), rows normalised, rolled
    out without an added identity; norms2 is ||T_i(x_j)||_2 of the same terms."""
    model = tiny_models["bert"]
    trace = _trace(model)
    T, L = trace.num_tokens, model.num_layers
    alti = np.zeros((L, T, T))
    norms = np.zeros((L, T, T))
    for layer in range(L):
        block = model.model.encoder.layer[layer]
        attn, out = block.attention.self, block.attention.output
        H, d = attn.num_attention_heads, attn.attention_head_size
        x = trace.hidden_states[layer].astype(np.float64)  # (T, D)
        A = trace.attentions[layer].astype(np.float64)  # (H, T, T)
        w_v, b_v = (attn.value.weight.detach().double().numpy(),
                    attn.value.bias.detach().double().numpy())
        w_o, b_o = out.dense.weight.detach().double().numpy(), out.dense.bias.detach().numpy()
        z = np.zeros((T, T, x.shape[1]))
        for h in range(H):
            rows = slice(h * d, (h + 1) * d)
            v = x @ w_v[rows].T + b_v[rows]  # (T, d)
            fx = v @ w_o[:, rows].T  # (T, D)
            z += A[h][:, :, None] * fx[None]
        z[np.arange(T), np.arange(T)] += x
        u = z.sum(1) + b_o
        ln = out.LayerNorm
        gamma, beta = ln.weight.detach().double().numpy(), ln.bias.detach().double().numpy()
        sigma = np.sqrt(u.var(-1) + ln.eps)  # (T,)
        y = (u - u.mean(-1, keepdims=True)) / sigma[:, None] * gamma + beta
        terms = (z - z.mean(-1, keepdims=True)) / sigma[:, None, None] * gamma
        c = np.maximum(0, np.abs(y).sum(-1)[:, None] - np.abs(y[:, None] - terms).sum(-1))
        alti[layer] = c / c.sum(-1, keepdims=True)
        n = np.linalg.norm(terms, axis=-1)
        norms[layer] = n / n.sum(-1, keepdims=True)
    result = at.context_mixing(trace, model, "alti", progress=False)
    np.testing.assert_allclose(result.scores, alti, atol=1e-5)
    np.testing.assert_allclose(result.rollout[-1], alti[1] @ alti[0], atol=1e-5)
    np.testing.assert_allclose(at.context_mixing(trace, model, "norms2", progress=False).scores,
                               norms, atol=1e-5)


# ----- gradient methods ---------------------------------------------------------------------

def _target_value(model, trace, target, scale_layer=None, alpha=1.0):
    """F with every head of one layer scaled by alpha (a pre-hook on the output projection)."""
    resolved = cm._resolve_target(model, trace, target)
    handle = None
    if scale_layer is not None:
        handle = cm._output_projection(model, scale_layer).register_forward_pre_hook(
            lambda module, args: (args[0] * alpha,))
    try:
        with torch.no_grad():
            hidden = model.model(**cm._model_inputs(model, trace)).last_hidden_state
            return float(resolved.fn(hidden)[0])
    finally:
        if handle is not None:
            handle.remove()


@pytest.mark.parametrize("family", ["gpt2", "tied_llama"])
def test_attattr_riemann_sum_converges_to_the_change_of_the_target(tiny_models, tied_llama,
                                                                   family):
    """Integrated gradients along α·A: the attributions of a layer add up to F(A) - F(0) in the
    limit, and the error shrinks as the steps grow."""
    model = tied_llama if family == "tied_llama" else tiny_models[family]
    trace = _trace(model)
    layer = 1
    change = _target_value(model, trace, None) - _target_value(model, trace, None, layer, 0.0)
    errors = []
    for steps in (2, 8, 64):
        result = at.context_mixing(trace, model, "attattr", steps=steps, progress=False)
        assert result.heads is not None and result.heads.shape[:2] == (2, 4)
        errors.append(abs(float(result.heads[layer].sum()) - change))
    # a right Riemann sum: the error falls about as 1/steps
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < errors[0] / 8
    assert result.target.startswith("log p(")


def test_gradient_rollout_equals_a_direct_matrix_computation(tiny_models):
    """Chefer et al. 2021: the gradient of the target on the attention tensors the model returns
    (autograd on output_attentions), E_h[(∇A ⊙ A)^+], R <- R + Ā R from the identity."""
    model = tiny_models["gpt2"]
    trace = _trace(model)
    resolved = cm._resolve_target(model, trace, None)
    output = model.model(**cm._model_inputs(model, trace), output_attentions=True)
    for attention in output.attentions:
        attention.retain_grad()
    resolved.fn(output.last_hidden_state).sum().backward()
    model.model.zero_grad(set_to_none=True)
    R = torch.eye(trace.num_tokens, dtype=torch.float64)
    for attention in output.attentions:
        mixed = (attention.grad[0] * attention[0]).clamp(min=0).mean(0).double()
        R = R + mixed @ R
    result = at.context_mixing(trace, model, "grad_rollout", progress=False)
    np.testing.assert_allclose(result.rollout[-1], R.detach().numpy(), atol=1e-5)
    assert result.target_row == trace.num_tokens - 1
    np.testing.assert_allclose(result.sources(), R[-1].detach().numpy(), atol=1e-5)


def test_token_and_pooled_targets(tiny_models, tied_llama):
    gpt2 = tiny_models["gpt2"]
    trace = _trace(gpt2)
    token = gpt2.tokenizer.convert_ids_to_tokens(int(trace.input_ids[1]))
    named = cm._resolve_target(gpt2, trace, token)
    assert named.row == trace.num_tokens - 1 and named.log_prob
    bert = tiny_models["bert"]
    pooled = at.context_mixing(TEXT, bert, "grad_rollout", target={"cosine": "a dog ran"},
                               progress=False)
    assert pooled.target == "cosine to 'a dog ran'" and pooled.target_row is None
    np.testing.assert_allclose(pooled.sources(), pooled.rollout[-1].mean(0), atol=1e-6)
    assert "dimension 3" in at.context_mixing(TEXT, bert, "alti", target={"dim": 3},
                                              progress=False).target
    llama = at.context_mixing(TEXT, tied_llama, "grad_rollout", progress=False)
    assert llama.scores.shape == (2, llama.trace.num_tokens, llama.trace.num_tokens)


# ----- results, faithfulness, figures -------------------------------------------------------

def test_faithfulness_compares_methods_with_random_removal(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    result = at.faithfulness([TEXT, "a dog ran to the park and sat"], model,
                             methods=["alti", "value_zeroing"], ks=(1, 2), trials=4,
                             progress=False)
    assert set(result.drops) == {"alti", "value_zeroing", "random"}
    assert all(d.shape == (2,) and np.isfinite(d).all() for d in result.drops.values())
    assert result.texts == 2 and result.removal == "<|endoftext|>"
    assert "k=1" in result.table() and "random" in result.table()
    assert result.figure().save(tmp_path / "faith.png").stat().st_size > 1000


def test_figure_shows_rollout_and_sources(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    result = at.context_mixing(TEXT, model, "alti", progress=False)
    figure = result.figure()
    assert len(figure.axes) == 3  # heatmap, its colour bar, the sources bar
    assert "alti" in figure.axes[0].get_title()
    assert figure.save(tmp_path / "cm.png").stat().st_size > 1000
    assert result.figure(layer=0).axes[0].get_title().endswith("layer 0")


# ----- bad input ----------------------------------------------------------------------------

def test_unknown_method_lists_the_valid_ones(tiny_models):
    with pytest.raises(at.AttnscopeError, match="valid methods: value_zeroing, alti, norms2, "
                                                "attattr, grad_rollout"):
        at.context_mixing(TEXT, tiny_models["bert"], "lrp")


def test_targets_that_are_not_one_token(tiny_models):
    model = tiny_models["gpt2"]
    with pytest.raises(at.AttnscopeError, match=r"splits into \d+ tokens"):
        at.context_mixing(TEXT, model, "grad_rollout", target="unbelievably")
    with pytest.raises(at.AttnscopeError, match="not understood"):
        at.context_mixing(TEXT, model, "grad_rollout", target=3.5)
    with pytest.raises(at.AttnscopeError, match="no language-modelling head"):
        at.context_mixing(TEXT, tiny_models["bert"], "alti", target="cat")


def test_not_in_vocabulary(tiny_models):
    model = tiny_models["bert"]
    masked = cm._single_token
    with pytest.raises(at.AttnscopeError, match="not in the model's vocabulary"):
        masked(model.tokenizer, "\u2603")


def test_families_it_cannot_handle_are_named(tiny_models):
    with pytest.raises(at.AttnscopeError, match="cannot yet handle 't5' models; it handles"):
        at.context_mixing(TEXT, tiny_models["t5"], "alti")


def test_non_finite_gradients_name_the_layer(tiny_models, monkeypatch):
    model = tiny_models["gpt2"]
    real = cm._resolve_target

    def broken(*args, **kwargs):
        target = real(*args, **kwargs)
        return cm._Target(target.label, lambda h: target.fn(h) * float("nan"), target.row, True)

    monkeypatch.setattr(cm, "_resolve_target", broken)
    with pytest.raises(at.AttnscopeError, match="not finite at layer 0"):
        at.context_mixing(TEXT, model, "grad_rollout", progress=False)


def test_the_loaders_lm_model_is_used_when_there_is_one(tiny_models):
    """The one place that finds the head: LoadedModel.lm_model, the head the checkpoint was
    saved with (None: no head, and none is ever built)."""
    gpt2 = cm._lm_model(tiny_models["gpt2"])
    assert gpt2 is tiny_models["gpt2"].lm_model
    assert gpt2.base_model is tiny_models["gpt2"].model  # shares the loaded weights
    assert cm._lm_model(tiny_models["llama"]) is tiny_models["llama"].lm_model
    assert cm._lm_model(tiny_models["bert"]) is None  # saved as a base model


def test_masked_token_target_reads_the_mask_position(tiny_models):
    """A masked LM's target is the prediction at [MASK]: with the head the loader will give
    (``lm_model``, here a BertForMaskedLM built on the tiny BERT's own modules)."""
    import dataclasses

    import transformers as tf

    bert = tiny_models["bert"]

    torch.manual_seed(0)
    mlm = tf.BertForMaskedLM(bert.model.config).eval()
    mlm.bert = bert.model
    model = dataclasses.replace(bert, lm_model=mlm)
    text = "the cat [MASK] on the mat"
    result = at.context_mixing(text, model, "grad_rollout", target="sat", progress=False)
    mask = result.tokens.index("[MASK]")
    assert result.target_row == mask and result.target == "log p('sat') at [MASK] (position 3)"
    np.testing.assert_allclose(result.sources(), result.rollout[-1][mask])
    # the target is the head's log-probability at the mask, computed plainly
    trace = result.trace
    with torch.no_grad():
        logits = mlm(input_ids=torch.tensor(trace.input_ids)[None]).logits[0, mask]
    expected = torch.log_softmax(logits, -1)[bert.tokenizer.convert_tokens_to_ids("sat")]
    resolved = cm._resolve_target(model, trace, "sat")
    with torch.no_grad():
        hidden = bert.model(input_ids=torch.tensor(trace.input_ids)[None]).last_hidden_state
    assert float(resolved.fn(hidden)[0]) == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(at.AttnscopeError, match=r"needs a \[MASK\] token"):
        at.context_mixing("the cat sat", model, "grad_rollout", progress=False)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_generation_sources_are_each_steps_own_rollout_row(tiny_models, family, monkeypatch):
    """Each generated token's sources equal context_mixing run on the prefix that predicted
    it, with that token as the target (greedy generation: the default target is the token
    chosen), its last rollout row as shares; the batched steps are checked step by step."""
    from attnscope.analysis.context_mixing import generation_sources
    from tests.gen_trace import generation_trace

    model = tiny_models[family]
    trace = generation_trace(model, "the cat sat on the mat", 4)
    measures = ("alti", "value_zeroing", "norms2", "grad_rollout", "attattr")
    got = generation_sources(model, trace, measures, steps=3)
    start = trace.answer_start
    for name in measures:
        assert got[name].shape == (4, trace.num_tokens)
        for step in range(4):
            row = start + step - 1
            prefix = at.capture(model, np.asarray(trace.input_ids[: row + 1]), qkv=True)
            plain = at.context_mixing(prefix, model, name, steps=3, progress=False)
            assert plain.target_row == row
            want = plain.sources().astype(np.float64)
            want /= want.sum()
            np.testing.assert_allclose(got[name][step, : row + 1], want, rtol=2e-4, atol=1e-6)
            assert np.all(got[name][step, row + 1:] == 0)
            assert got[name][step].sum() == pytest.approx(1.0, abs=1e-5)
    # one generated token a batch (as long sequences run) gives the same rows
    monkeypatch.setattr(cm, "_STEP_BATCH_BYTES", 1)
    alone = generation_sources(model, trace, ("grad_rollout", "attattr"), steps=3)
    for name in ("grad_rollout", "attattr"):
        np.testing.assert_allclose(alone[name], got[name], rtol=5e-4, atol=1e-6)


def test_generation_sources_bad_input(tiny_models):
    from attnscope.analysis.context_mixing import generation_sources
    from tests.gen_trace import generation_trace

    model = tiny_models["llama"]
    trace = generation_trace(model, "the cat sat", 2)
    with pytest.raises(at.AttnscopeError, match="valid methods: value_zeroing"):
        generation_sources(model, trace, ["lrp"])
    with pytest.raises(at.AttnscopeError, match="answer_start is None"):
        generation_sources(model, at.capture(model, "the cat sat"), ["alti"])


@pytest.fixture(scope="module")
def tiny_classifier(tiny_models):
    """A tiny BertForSequenceClassification built from a config (3 labelled classes), with the
    tiny BERT's tokenizer, loaded as an object."""
    import transformers as tf

    tokenizer = tiny_models["bert"].tokenizer
    config = tf.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=37, num_labels=3,
                           id2label={0: "negative", 1: "neutral", 2: "positive"},
                           label2id={"negative": 0, "neutral": 1, "positive": 2})
    torch.manual_seed(0)
    model = tf.BertForSequenceClassification(config).eval()
    return at.load(model, tokenizer=tokenizer, name="tiny-bert-classifier", device="cpu")


def test_class_logit_targets(tiny_classifier):
    """A class target is the classification model's own logit (checked against its forward
    pass), chosen by index or label name; gradient rollout of it equals the direct matrix
    computation on the attention tensors the classifier returns."""
    model = tiny_classifier
    trace = at.capture(model, "the film was long but good", qkv=True)
    inputs = cm._model_inputs(model, trace)
    output = model.model(**inputs, output_attentions=True)
    logits = output.logits[0]
    hidden = cm._base(model)(**inputs).last_hidden_state
    for target, index in (({"class": 2}, 2), ({"class": "neutral"}, 1), ("negative", 0),
                          (None, int(logits.argmax()))):
        resolved = cm._resolve_target(model, trace, target)
        value = float(resolved.fn(hidden)[0].detach())
        assert value == pytest.approx(float(logits[index].detach()), abs=1e-5)
        assert resolved.label.startswith(f"logit of class {index} (")
        assert resolved.row == 0
    for attention in output.attentions:
        attention.retain_grad()
    output.logits[0, 2].backward()
    model.model.zero_grad(set_to_none=True)
    R = torch.eye(trace.num_tokens, dtype=torch.float64)
    for attention in output.attentions:
        R = R + (attention.grad[0] * attention[0]).clamp(min=0).mean(0).double() @ R
    result = at.context_mixing(trace, model, "grad_rollout", target={"class": "positive"},
                               progress=False)
    np.testing.assert_allclose(result.rollout[-1], R.detach().numpy(), atol=1e-5)
    assert result.target == "logit of class 2 (positive)"
    np.testing.assert_allclose(result.sources(), R[0].detach().numpy(), atol=1e-5)


def test_bad_class_targets(tiny_classifier, tiny_models):
    model = tiny_classifier
    with pytest.raises(at.AttnscopeError, match=r"There is no class 3: 'tiny-bert-classifier' "
                       r"has 3 classes \(0 negative, 1 neutral, 2 positive\)\."):
        at.context_mixing("a text", model, "grad_rollout", target={"class": 3})
    with pytest.raises(at.AttnscopeError, match="'happy' is not a label of 'tiny-bert-classifier'; "
                       "its classes are 0 negative"):
        at.context_mixing("a text", model, "alti", target={"class": "happy"})
    with pytest.raises(at.AttnscopeError, match="not a sequence-classification model"):
        at.context_mixing("a text", tiny_models["gpt2"], "alti", target={"class": 0})
