"""capture() on real (embedded) and tiny random models of every family."""

import warnings

import numpy as np
import pytest

import attnscope as at
from tests.conftest import SEED_A, SEED_B, SEED_SENTENCE

SEED_PAIR_TOKENS = [
    "[CLS]", "leaves", "fall", "in", "autumn", "[SEP]",
    "autumn", "is", "marked", "by", "colorful", "foliage", "[SEP]",
]


def test_seed_pair_tokens_match_the_bertviz_notebook(seed_pair_trace):
    trace = seed_pair_trace
    assert list(trace.tokens) == SEED_PAIR_TOKENS
    assert trace.sentence_b_start == 6
    assert trace.special_mask.tolist() == [t.startswith("[") for t in SEED_PAIR_TOKENS]
    assert trace.token_type_ids.tolist() == [0] * 6 + [1] * 7
    # segment 0 / 1 for the two texts, -1 for special tokens
    assert trace.segment_ids.tolist() == [-1, 0, 0, 0, 0, -1, 1, 1, 1, 1, 1, 1, -1]
    # character spans point back into each token's own text
    assert SEED_B[slice(*trace.offsets[11])] == "foliage"
    assert SEED_A[slice(*trace.offsets[2])] == "fall"


def test_embedded_model_shapes_and_row_sums(seed_pair_trace, embedded):
    trace = seed_pair_trace
    assert embedded.num_layers == 6 and embedded.num_heads == 12
    assert trace.attentions.shape == (6, 12, 13, 13)
    assert trace.attentions.dtype == np.float32
    assert trace.hidden_states.shape == (7, 13, 384)
    np.testing.assert_allclose(trace.attentions.sum(-1), 1.0, atol=1e-5)
    assert trace.model_type == "bert" and trace.architecture == "encoder"


def test_trace_matches_a_plain_transformers_forward_pass(embedded):
    import torch

    trace = at.capture(embedded, SEED_SENTENCE)
    inputs = embedded.tokenizer(SEED_SENTENCE, return_tensors="pt")
    with torch.no_grad():
        out = embedded.model(**inputs, output_attentions=True, output_hidden_states=True)
    expected = torch.stack(out.attentions)[:, 0].numpy()
    np.testing.assert_allclose(trace.attentions, expected, atol=1e-6)
    np.testing.assert_allclose(trace.hidden_states, torch.stack(out.hidden_states)[:, 0].numpy(),
                               atol=1e-5)


def test_trace_is_frozen(seed_pair_trace):
    with pytest.raises(ValueError):
        seed_pair_trace.attentions[0, 0, 0, 0] = 1.0
    with pytest.raises(AttributeError):
        seed_pair_trace.tokens = ("x",)


def test_every_family_captures_valid_attention(tiny):
    trace = at.capture(tiny, SEED_A, SEED_B)
    L, H = tiny.num_layers, tiny.num_heads
    T = trace.num_tokens
    assert trace.attentions.shape == (L, H, T, T)
    assert trace.hidden_states.shape[:2] == (L + 1, T)
    np.testing.assert_allclose(trace.attentions.sum(-1), 1.0, atol=1e-5)
    assert np.isfinite(trace.attentions).all() and np.isfinite(trace.hidden_states).all()
    if tiny.is_causal:
        assert np.triu(trace.attentions, k=1).max() == 0.0
    else:
        assert np.triu(trace.attentions, k=1).max() > 0.0
    if tiny.architecture == "encoder-decoder":
        assert trace.parts == ("self", "decoder", "cross")
        Td = len(trace.decoder_tokens)
        assert trace.decoder_attentions.shape == (tiny.num_decoder_layers, H, Td, Td)
        assert trace.cross_attentions.shape == (tiny.num_decoder_layers, H, Td, T)
        # the decoder is causal, cross attention is not
        assert np.triu(trace.decoder_attentions, k=1).max() == 0.0
        np.testing.assert_allclose(trace.cross_attentions.sum(-1), 1.0, atol=1e-5)
        # the second text went to the decoder, whole
        decoded = tiny.tokenizer.decode(trace.decoder_input_ids, skip_special_tokens=True)
        assert decoded.replace(" ", "") == SEED_B.replace(" ", "")
    else:
        assert trace.sentence_b_start is not None
        assert trace.tokens[trace.sentence_b_start].lstrip("Ġ").startswith("aut")


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra", "gpt2", "llama"])
def test_architecture_is_known(tiny_models, family):
    expected = "decoder" if family in ("gpt2", "llama") else "encoder"
    assert tiny_models[family].architecture == expected


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_architecture(tiny_models, family):
    assert tiny_models[family].architecture == "encoder-decoder"


def test_batch_equals_single(tiny):
    texts = ["hello world", SEED_SENTENCE, "leaves fall in autumn, and winter comes"]
    batch = at.capture_batch(tiny, texts, batch_size=3)
    assert len(batch) == 3
    for text, got in zip(texts, batch, strict=True):
        single = at.capture(tiny, text)
        assert got.tokens == single.tokens
        assert got.attentions.shape == single.attentions.shape
        np.testing.assert_allclose(got.attentions, single.attentions, atol=1e-5)
        np.testing.assert_allclose(got.hidden_states, single.hidden_states, atol=1e-5)
        np.testing.assert_allclose(got.attentions.sum(-1), 1.0, atol=1e-5)
        if single.decoder_attentions is not None:
            np.testing.assert_allclose(got.cross_attentions, single.cross_attentions, atol=1e-5)


def test_batch_of_pairs_equals_single_on_the_embedded_model(embedded):
    batch = at.capture_batch(embedded, [SEED_A, SEED_SENTENCE], [SEED_B, None], batch_size=2)
    single = at.capture(embedded, SEED_A, SEED_B)
    assert batch[0].sentence_b_start == 6 and batch[1].sentence_b_start is None
    np.testing.assert_allclose(batch[0].attentions, single.attentions, atol=1e-5)


def test_save_and_load_round_trip_exactly(tmp_path, tiny_models):
    for family in ("bert", "t5"):
        trace = at.capture(tiny_models[family], SEED_A, SEED_B)
        path = trace.save(tmp_path / f"{family}.npz")
        back = at.Trace.load(path)
        for name in ("tokens", "decoder_tokens", "text", "text_b", "sentence_b_start",
                     "model_name", "architecture", "unit", "truncated"):
            assert getattr(back, name) == getattr(trace, name), name
        for name in ("attentions", "hidden_states", "input_ids", "offsets", "word_ids",
                     "special_mask", "cross_attentions", "decoder_attentions"):
            a, b = getattr(trace, name), getattr(back, name)
            if a is None:
                assert b is None
            else:
                assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_merge_subwords_into_words(embedded):
    trace = at.capture(embedded, SEED_SENTENCE, merge_words=True)
    assert trace.unit == "word"
    # "over ##flow ##ed" becomes the word as written in the text
    assert "overflowed" in trace.tokens
    assert trace.tokens[0] == "[CLS]" and trace.tokens[-1] == "[SEP]"
    tokens = at.capture(embedded, SEED_SENTENCE)
    assert trace.num_tokens == tokens.num_tokens - 2
    np.testing.assert_allclose(trace.attentions.sum(-1), 1.0, atol=1e-5)
    # keys are summed, queries averaged: check one cell by hand
    i = tokens.tokens.index("over")
    w = trace.tokens.index("overflowed")
    a = tokens.attentions[2, 3]
    expected = a[i : i + 3, i : i + 3].sum(axis=1).mean()
    assert trace.attentions[2, 3, w, w] == pytest.approx(expected, abs=1e-6)
    assert trace.hidden_states.shape == (7, trace.num_tokens, 384)


def test_model_loaded_with_sdpa_is_switched_to_eager(tiny_dirs):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_dirs["bert"], attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    loaded = at.load(model, tokenizer=tokenizer, device="cpu")
    trace = at.capture(loaded, SEED_A)
    assert trace.attentions.shape[0] == 2
    np.testing.assert_allclose(trace.attentions.sum(-1), 1.0, atol=1e-5)


def test_long_text_is_truncated_with_a_warning_that_counts(tiny_models):
    model = tiny_models["bert"]  # limit 64 tokens
    text = " ".join(["autumn"] * 100)  # 102 tokens with [CLS] and [SEP]
    with pytest.warns(at.TruncationWarning, match="102 tokens .* last 38 tokens were dropped"):
        trace = at.capture(model, text)
    assert trace.num_tokens == 64 and trace.truncated == 38
    assert trace.tokens[-1] == "[SEP]"
    with pytest.raises(at.AttnscopeError, match="102 tokens, more than this model's limit of 64"):
        at.capture(model, text, truncate=False)


def test_text_at_the_limit_is_not_truncated(tiny_models):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = at.capture(tiny_models["bert"], " ".join(["autumn"] * 62))
    assert trace.num_tokens == 64 and trace.truncated == 0


def test_odd_unicode_and_html_like_text_is_captured_as_text(embedded):
    text = "naïve café 東京 🙂 <script>alert(1)</script> \u200b end"
    trace = at.capture(embedded, text)
    assert "<" in trace.tokens and "script" in trace.tokens
    np.testing.assert_allclose(trace.attentions.sum(-1), 1.0, atol=1e-5)


def test_without_special_tokens_as_the_tokenizer_and_model_give_it(embedded):
    """Exercises that tokenize with add_special_tokens=False (no [CLS]/[SEP]) get the same
    tokens and the model's own attention for them."""
    import torch

    text = "The cat sat on the mat."
    trace = at.capture(embedded, text, add_special_tokens=False)
    encoded = embedded.tokenizer(text, add_special_tokens=False, return_tensors="pt")
    assert trace.input_ids.tolist() == encoded["input_ids"][0].tolist()
    assert trace.tokens == ("the", "cat", "sat", "on", "the", "mat", ".")
    assert not trace.special_mask.any() and trace.word_ids.tolist() == [0, 1, 2, 3, 4, 5, 6]
    with torch.inference_mode():
        out = embedded.model(**encoded, output_attentions=True)
    expected = torch.stack(out.attentions)[:, 0].numpy()  # (L, H, T, T)
    np.testing.assert_allclose(trace.attentions, expected, atol=1e-6)
    (batched,) = at.capture_batch(embedded, [text], add_special_tokens=False)
    np.testing.assert_allclose(batched.attentions, trace.attentions, atol=1e-5)
