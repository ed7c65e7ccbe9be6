"""Head interventions: ablation through gates on the real output projections, checked against
independent computations (transformers' own loss, zeroed weight columns, attention written by
hand, finite differences), and every mistake a person can make."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attnscope as at
from attnscope.adapters import get_adapter
from attnscope.interventions import HeadGates, ablate, head_importance, output_projection
from attnscope.interventions.objectives import Objective, masked_positions
from attnscope.scratch import MultiHeadAttention, scaled_dot_product_attention

TEXT = "The girl poured water into a tall glass until it overflowed."
TEXTS = [TEXT, "leaves fall in autumn", "The cat sat on the mat, and the dog slept by the door."]


@pytest.fixture(scope="module")
def masked_lm(tiny_dirs) -> at.LoadedModel:
    """The tiny BERT with a masked-LM head (its head weights random, seeded)."""
    import transformers as tf

    torch.manual_seed(1)
    model = tf.BertForMaskedLM.from_pretrained(tiny_dirs["bert"], attn_implementation="eager")
    tokenizer = tf.AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    return at.load(model.eval(), tokenizer=tokenizer, name="tiny-bert-mlm", device="cpu")


def _all_pre_hooks(model: at.LoadedModel) -> int:
    return sum(len(m._forward_pre_hooks) for m in model.model.modules())


def _zeroed_columns(model: at.LoadedModel, heads, means=None) -> at.LoadedModel:
    """A copy of the model whose output projections ignore ``heads``: the weight columns that
    read those heads set to 0 (their mean output moved into the bias for mean ablation). An
    ablation computed with no hooks at all."""
    clone = copy.deepcopy(model.lm_model if model.lm_model is not None else model.model)
    loaded = at.load(clone, tokenizer=model.tokenizer, name=model.name, device="cpu")
    d = model.model.config.hidden_size // model.num_heads
    with torch.no_grad():
        for layer, head in heads:
            module = output_projection(loaded, layer)
            cols = slice(head * d, (head + 1) * d)
            conv = module.weight.shape[0] == model.num_heads * d and type(module).__name__ == (
                "Conv1D")
            w = module.weight.T if conv else module.weight  # (D, H*d)
            if means is not None:
                module.bias += w[:, cols] @ means[layer][head]
            w[:, cols] = 0.0
    return loaded


# ----- the loss is the model's own --------------------------------------------------------------

@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_loss_is_transformers_loss(tiny_models, family):
    model = tiny_models[family]
    result = ablate(model, TEXT, heads=[(0, 1)])
    ids = torch.from_numpy(at.tokenize(model, TEXT).input_ids)[None]
    with torch.no_grad():
        expected = model.lm_model(input_ids=ids, labels=ids).loss
    assert result.before == pytest.approx(float(expected), abs=1e-5)
    assert "cross-entropy" in result.measure


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_zero_ablation_equals_zeroed_weight_columns(tiny_models, family):
    model = tiny_models[family]
    heads = [(0, 1), (1, 3)]
    result = ablate(model, TEXT, heads=heads)
    plain = _zeroed_columns(model, heads)
    ids = torch.from_numpy(at.tokenize(model, TEXT).input_ids)[None]
    with torch.no_grad():
        expected = plain.lm_model(input_ids=ids, labels=ids).loss
    assert result.after == pytest.approx(float(expected), abs=1e-5)
    assert result.effect != 0.0


def test_mean_ablation_equals_mean_in_the_bias(tiny_models):
    model = tiny_models["gpt2"]
    reference = TEXTS[1:]
    result = ablate(model, TEXT, heads=[(1, 2)], how="mean", reference=reference)
    # the head's mean output over every reference token, recorded plainly
    d = model.model.config.hidden_size // model.num_heads
    outputs = []
    with HeadGates(model, record=True) as gates:
        for text in reference:
            ids = torch.from_numpy(at.tokenize(model, text).input_ids)[None]
            with torch.no_grad():
                model.model(input_ids=ids)
            outputs.append(gates.recorded[1][0, :, 2])  # (T, d)
    mean = torch.cat(outputs).mean(0)
    assert mean.shape == (d,)
    plain = _zeroed_columns(model, [(1, 2)], {1: {2: mean}})
    ids = torch.from_numpy(at.tokenize(model, TEXT).input_ids)[None]
    with torch.no_grad():
        expected = plain.lm_model(input_ids=ids, labels=ids).loss
    assert result.after == pytest.approx(float(expected), abs=1e-5)
    assert result.how == "mean"


def test_masked_lm_loss_of_fixed_seeded_words(masked_lm):
    model = masked_lm
    tok = at.tokenize(model, TEXT)
    first = ablate(model, TEXT, heads=[(0, 0)])
    again = ablate(model, TEXT, heads=[(0, 0)])
    assert first.before == again.before  # the same words every time
    positions = masked_positions(tok.word_ids)
    words = np.unique(tok.word_ids[tok.word_ids >= 0])
    assert len(np.unique(tok.word_ids[positions])) == max(1, round(0.15 * len(words)))
    ids = torch.from_numpy(tok.input_ids)[None]
    masked = ids.clone()
    masked[0, positions] = model.tokenizer.mask_token_id
    with torch.no_grad():
        logits = model.lm_model(input_ids=masked, attention_mask=torch.ones_like(ids),
                                token_type_ids=torch.zeros_like(ids)).logits
    expected = F.cross_entropy(logits[0, positions], ids[0, positions])
    assert first.before == pytest.approx(float(expected), abs=1e-5)
    assert "masked" in first.measure


def test_embedding_model_effect_is_one_minus_cosine(embedded):
    heads = [(0, 3), (5, 11)]
    result = ablate(embedded, TEXT, heads=heads)
    plain = _zeroed_columns(embedded, heads)
    tok = at.tokenize(embedded, TEXT)
    inputs = {k: torch.from_numpy(v)[None] for k, v in tok.model_inputs.items()}

    def pooled(m):
        with torch.no_grad():
            hidden = m.model(**inputs).last_hidden_state[0]  # (T, D)
        return hidden.mean(0)  # one text, every token real: the masked mean is the mean

    a, b = pooled(embedded), pooled(plain)
    expected = 1 - float(torch.dot(a, b) / (a.norm() * b.norm()))
    assert result.before == 0.0
    assert result.after == pytest.approx(expected, abs=1e-6)
    assert result.after > 0


def test_target_logprob_at_a_position(tiny_models):
    model = tiny_models["llama"]
    tok = at.tokenize(model, TEXT)
    target = model.tokenizer.convert_ids_to_tokens(int(tok.input_ids[4]))
    result = ablate(model, TEXT, heads=[(1, 0)], target=int(tok.input_ids[4]), position=3)
    ids = torch.from_numpy(tok.input_ids)[None]
    with torch.no_grad():
        logits = model.lm_model(input_ids=ids).logits[0, 3]
    assert result.target == target and result.position == 3
    assert result.target_logprob_before == pytest.approx(
        float(torch.log_softmax(logits.double(), -1)[tok.input_ids[4]]), abs=1e-6)
    assert result.target_effect == pytest.approx(
        result.target_logprob_after - result.target_logprob_before)


def test_generation_trace_probabilities_with_and_without(tiny_models):
    import dataclasses

    model = tiny_models["gpt2"]
    trace = at.capture(model, TEXT)
    start = 5
    ids = torch.from_numpy(np.array(trace.input_ids))[None]
    with torch.no_grad():
        probs = torch.softmax(model.lm_model(input_ids=ids).logits[0].double(), -1)
    chosen = probs[start - 1 : -1].gather(1, ids[0, start:, None])[:, 0].numpy()
    generation = dataclasses.replace(trace, answer_start=start,
                                     answer_probs=chosen.astype(np.float32))
    result = ablate(model, generation, heads=[(0, 0), (1, 1)])
    assert result.answer_tokens == trace.tokens[start:]
    np.testing.assert_allclose(result.answer_probs_before, chosen, atol=1e-6)
    assert result.answer_probs_after.shape == chosen.shape
    assert not np.allclose(result.answer_probs_after, chosen)
    assert "generated token" in str(result)


# ----- hooks, and the hand-written oracle -------------------------------------------------------

def test_hooks_removed_after_success_and_error(tiny_models):
    model = tiny_models["llama"]
    assert _all_pre_hooks(model) == 0
    ablate(model, TEXT, heads=[(0, 1)])
    assert _all_pre_hooks(model) == 0
    bad_gate = {0: torch.ones(model.num_heads + 1)}  # a shape that fails inside the hook
    with pytest.raises(RuntimeError), HeadGates(model, bad_gate):
        assert _all_pre_hooks(model) == 1
        model.model(input_ids=torch.tensor([[1, 5, 9]]))
    assert _all_pre_hooks(model) == 0
    with pytest.raises(at.AttnscopeError):
        ablate(model, TEXT, heads=[(0, 1)], position=999, target=5)
    assert _all_pre_hooks(model) == 0


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "distilbert"])
def test_hook_ablation_equals_hand_written_attention(tiny_models, family):
    """The attention block's output with a head removed by the hook equals the output of
    attnscope's hand-written attention with that head's output zeroed, within 1e-5."""
    model = tiny_models[family]
    layer, head = 1, 2
    adapter = get_adapter(model)
    tok = at.tokenize(model, TEXT)
    inputs = {k: torch.from_numpy(v)[None] for k, v in tok.model_inputs.items()}
    module = output_projection(model, layer)
    seen = {}
    handle = module.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))
    gate = torch.ones(model.num_heads)
    gate[head] = 0.0
    try:
        with torch.no_grad(), HeadGates(model, {layer: gate}):
            hidden = model.model(**inputs, output_hidden_states=True).hidden_states[layer]
    finally:
        handle.remove()
    norm = adapter.pre_norm(model.model, layer)
    x = norm(hidden) if norm is not None else hidden  # (1, T, D)
    mha = MultiHeadAttention.from_params(adapter.attention(model.model, layer))
    with torch.no_grad():
        q, k, v = mha.project(x)  # (1, H, T, d)
        heads, _ = scaled_dot_product_attention(q, k, v, None, mha.causal, scale=mha.scale)
        heads[:, head] = 0.0  # the ablation, by hand
        concat = heads.transpose(1, 2).reshape(1, x.shape[1], -1)  # (1, T, H*d)
        expected = mha.out_proj(concat)
    torch.testing.assert_close(seen["out"], expected, atol=1e-5, rtol=0)


# ----- head importance --------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_exact_importance_equals_ablating_each_head(tiny_models, family):
    model = tiny_models[family]
    result = head_importance(model, TEXTS, batch_size=2)
    assert result.per_text.shape == (len(TEXTS), model.num_layers, model.num_heads)
    for t, text in enumerate(TEXTS):
        for layer, head in [(0, 0), (0, 3), (1, 2)]:
            single = ablate(model, text, heads=[(layer, head)])
            assert result.per_text[t, layer, head] == pytest.approx(single.effect, abs=2e-5)
    np.testing.assert_allclose(result.values, result.per_text.mean(0))
    assert result.top(1)[0][2] == pytest.approx(result.values.max())


def test_exact_importance_masked_lm_and_mean(masked_lm):
    result = head_importance(masked_lm, TEXTS, how="mean", reference=TEXTS, batch_size=3)
    single = ablate(masked_lm, TEXTS[2], heads=[(1, 3)], how="mean", reference=TEXTS)
    assert result.per_text[2, 1, 3] == pytest.approx(single.effect, abs=2e-5)


def test_gradient_proxy_matches_finite_differences(tiny_models):
    model = tiny_models["llama"]
    result = head_importance(model, TEXTS[:2], method="gradient")
    objective = Objective(model)
    from attnscope.interventions.ablation import samples_from

    batch = objective.batch(samples_from(model, TEXTS[:2]))
    eps = 1e-3
    for layer, head in [(0, 1), (1, 3)]:
        losses = []
        for sign in (1, -1):
            gate = torch.ones(model.num_heads, dtype=torch.float64)
            gate[head] += sign * eps
            with torch.no_grad(), HeadGates(model, {layer: gate}):
                losses.append(objective.run(batch).double())
        fd = ((losses[0] - losses[1]) / (2 * eps)).abs().numpy()
        np.testing.assert_allclose(result.per_text[:, layer, head], fd, rtol=2e-2, atol=2e-4)


def test_gradient_proxy_of_embedding_model_is_second_order_estimate(embedded):
    """Over many probes, the proxy's mean is 0.5 * ||P J_h||^2 / ||e||^2, with J_h from finite
    differences of the gate (P: projection off the embedding e)."""
    text = "leaves fall in autumn"
    copies = 300
    result = head_importance(embedded, [text] * copies, method="gradient", batch_size=100)
    objective = Objective(embedded)
    from attnscope.interventions.ablation import samples_from

    batch = objective.batch(samples_from(embedded, text))
    with torch.no_grad():
        e = objective.run(batch)[0].double()
    eps = 1e-3
    layer, head = 0, 3
    moved = []
    for sign in (1, -1):
        gate = torch.ones(embedded.num_heads)
        gate[head] += sign * eps
        with torch.no_grad(), HeadGates(embedded, {layer: gate}):
            moved.append(objective.run(batch)[0].double())
    jac = (moved[0] - moved[1]) / (2 * eps)  # (D,)
    unit = e / e.norm()
    off = jac - torch.dot(jac, unit) * unit
    expected = 0.5 * float(off.norm() ** 2 / e.norm() ** 2)
    assert result.values[layer, head] == pytest.approx(expected, rel=0.25)


def test_importance_figure_and_text(tiny_models):
    result = head_importance(tiny_models["gpt2"], TEXTS[:2], method="gradient")
    fig = result.figure()
    assert "head importance by gradient" in fig.axes[0].get_title()
    assert len(fig.axes[0].texts) == 2 * 4  # one value per cell
    text = str(result)
    assert "layer" in text and "±" in text


# ----- the real LLM -----------------------------------------------------------------------------

def test_smollm2_induction_head_matters(smollm2):
    """On 50 random tokens repeated twice, removing layer 18 head 6 (an induction head) raises
    the loss far more than removing another head of layer 18."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 40000, size=50)
    sequence = np.concatenate([ids, ids])
    induction = ablate(smollm2, sequence, heads=[(18, 6)])
    other = ablate(smollm2, sequence, heads=[(18, 1)])
    assert induction.effect > 0.5
    assert induction.effect > 10 * abs(other.effect)


# ----- mistakes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(heads=[(9, 0)]), "layer 9 is out of range"),
    (dict(heads=[(0, 4)]), "head 4 is out of range"),
    (dict(heads=[(0, 1), (0, 1)]), "listed twice"),
    (dict(heads=[]), "at least one (layer, head)"),
    (dict(heads=[(0, 1)], how="mean"), "reference"),
    (dict(heads=[(0, 1)], how="max"), 'how must be "zero" or "mean"'),
    (dict(heads=[(0, 1)], target=5, position=500), "past the text"),
    (dict(heads=[(0, 1)], target="overflowed glass"), "tokens for this tokenizer"),
])
def test_bad_input_is_one_sentence(tiny_models, kwargs, message):
    with pytest.raises(at.AttnscopeError, match=None) as err:
        ablate(tiny_models["gpt2"], TEXT, **kwargs)
    assert message in str(err.value)
    assert str(err.value).count(". ") <= 1


def test_target_on_model_without_lm_head_names_what_works(embedded):
    with pytest.raises(at.AttnscopeError, match="1 - cosine"):
        ablate(embedded, TEXT, heads=[(0, 1)], target="glass")


def test_estimate_past_budget_is_refused(tiny_models):
    with pytest.raises(at.AttnscopeError, match="max_seconds=None"):
        head_importance(tiny_models["gpt2"], TEXTS, max_seconds=1e-9)
    assert _all_pre_hooks(tiny_models["gpt2"]) == 0


def test_masked_lm_target_needs_position(masked_lm):
    with pytest.raises(at.AttnscopeError, match="position="):
        ablate(masked_lm, TEXT, heads=[(0, 1)], target="glass")
    result = ablate(masked_lm, TEXT, heads=[(0, 1)], target="glass", position=2)
    assert result.target == "glass"


# ----- direct logit attribution and logit lens --------------------------------------------------

@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_direct_logit_attribution_sums_to_the_logit(tiny_models, family):
    from attnscope.interventions import direct_logit_attribution

    model = tiny_models[family]
    target = int(at.tokenize(model, TEXT).input_ids[3])
    result = direct_logit_attribution(model, TEXT, target=target, position=5)
    assert result.heads.shape == (model.num_layers, model.num_heads)
    assert result.heads.sum() + result.rest == pytest.approx(result.logit, abs=1e-4)
    ids = torch.from_numpy(at.tokenize(model, TEXT).input_ids)[None]
    with torch.no_grad():
        logit = model.lm_model(input_ids=ids).logits[0, 5, target]
    assert result.logit == pytest.approx(float(logit), abs=1e-5)


def test_direct_logit_attribution_of_a_layer_is_its_attention_output(tiny_models):
    """Per layer, the heads' contributions plus the output bias's equal the attention block's
    output (recorded plainly on o_proj) read through the frozen norm and the unembedding."""
    from attnscope.interventions import direct_logit_attribution

    model = tiny_models["llama"]
    target, position = 7, 4
    result = direct_logit_attribution(model, TEXT, target=target, position=position)
    ids = torch.from_numpy(at.tokenize(model, TEXT).input_ids)[None]
    seen = {}
    norm = model.lm_model.model.norm
    hooks = [output_projection(model, layer).register_forward_hook(
        lambda m, a, out, layer=layer: seen.__setitem__(layer, out[0, position].double()))
        for layer in range(model.num_layers)]
    hooks.append(norm.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("residual", a[0][0, position].double())))
    try:
        with torch.no_grad():
            model.lm_model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    r = seen["residual"]
    scale = 1 / torch.sqrt(r.pow(2).mean() + norm.variance_epsilon)  # RMSNorm, frozen
    u = model.lm_model.lm_head.weight[target].detach().double()
    w = norm.weight.detach().double()
    for layer in range(model.num_layers):
        bias = output_projection(model, layer).bias  # the tiny LLaMA has attention biases
        attn_out = seen[layer] - bias.detach().double()  # (D,): the heads' part of o_proj's output
        expected = float(u @ (attn_out * scale * w))
        assert result.heads[layer].sum() == pytest.approx(expected, abs=1e-5)


def test_logit_lens_last_row_is_the_models_prediction(tiny_models):
    from attnscope.interventions import logit_lens

    model = tiny_models["gpt2"]
    lens = logit_lens(model, TEXT, k=3)
    T = len(at.tokenize(model, TEXT).input_ids)
    assert lens.top_ids.shape == (model.num_layers + 1, T, 3)
    ids = torch.from_numpy(at.tokenize(model, TEXT).input_ids)[None]
    with torch.no_grad():
        probs = torch.softmax(model.lm_model(input_ids=ids).logits[0], -1)
    top = probs.topk(3, dim=-1)
    np.testing.assert_array_equal(lens.top_ids[-1], top.indices.numpy())
    np.testing.assert_allclose(lens.top_probs[-1], top.values.numpy(), atol=1e-6)
    assert len(lens.at(-1)) == model.num_layers + 1


def test_lens_refuses_models_without_a_causal_head(embedded):
    from attnscope.interventions import direct_logit_attribution, logit_lens

    with pytest.raises(at.AttnscopeError, match="causal LM"):
        logit_lens(embedded, TEXT)
    with pytest.raises(at.AttnscopeError, match="causal LM"):
        direct_logit_attribution(embedded, TEXT, target="glass")
