"""capture from token ids, and chat markup typed in a text flagged special."""

import numpy as np
import pytest
import torch

import attnscope as at


def test_ids_as_list_numpy_or_torch_equal_the_text_they_encode(smollm2):
    text = "hi <|im_start|>user\nHello"
    ids = smollm2.tokenizer(text)["input_ids"]
    from_text = at.capture(smollm2, text)
    for given in (ids, np.array(ids), torch.tensor(ids)):
        trace = at.capture(smollm2, given)
        assert trace.input_ids.tolist() == ids
        assert trace.tokens == tuple(smollm2.tokenizer.convert_ids_to_tokens(ids))
        np.testing.assert_allclose(trace.attentions, from_text.attentions, atol=1e-6)
    # the markup is special whichever way it came in; the rest has sensible words and spans
    assert from_text.special_mask.tolist() == trace.special_mask.tolist()
    assert trace.special_mask.tolist() == [t == "<|im_start|>" for t in trace.tokens]
    assert trace.text == text
    for i in np.flatnonzero(~trace.special_mask):
        start, end = trace.offsets[i]
        assert at.readable.readable_tokens(trace.tokens, trace.special_mask)[i] == text[start:end]
    assert trace.word_ids[trace.special_mask].tolist() == [-1]
    assert (np.diff(trace.word_ids[~trace.special_mask]) >= 0).all()


def test_wordpiece_ids_join_pieces_into_words(embedded):
    ids = embedded.tokenizer("the tokenization works")["input_ids"]
    trace = at.capture(embedded, ids)
    assert trace.tokens == ("[CLS]", "the", "token", "##ization", "works", "[SEP]")
    assert trace.special_mask.tolist() == [True, False, False, False, False, True]
    assert trace.word_ids.tolist() == [-1, 0, 1, 1, 2, -1]
    assert (trace.offsets == -1).all()  # WordPiece does not spell spaces: spans unknown


def test_capture_batch_takes_id_sequences(tiny_models):
    model = tiny_models["gpt2"]
    ids = model.tokenizer("one two three")["input_ids"]
    traces = at.capture_batch(model, [ids, "four five", np.array(ids[:2])])
    assert traces[0].input_ids.tolist() == ids and traces[2].input_ids.tolist() == ids[:2]
    np.testing.assert_allclose(traces[0].attentions, at.capture(model, ids).attentions,
                               atol=1e-5)


@pytest.mark.parametrize("bad, words", [
    ([-1, 5], "outside this tokenizer's vocabulary"),
    ([5, 10**9], "position 1 is outside"),
    ([1.5, 2.0], "must be integers"),
    (np.array([True, False]), "must be integers"),
    ([[1, 2], [3, 4]], "one sequence (1-D)"),
    (torch.tensor([[1, 2]]), "one sequence (1-D)"),
    ([], "empty"),
    ([1, [2, 3]], "flat sequence"),
])
def test_bad_ids_get_one_sentence(tiny_models, bad, words):
    with pytest.raises(at.AttnscopeError, match=r"^[^\n]+$") as err:
        at.capture(tiny_models["gpt2"], bad)
    assert words in str(err.value)


def test_ids_with_a_second_text_or_as_a_batch_are_refused(tiny_models):
    model = tiny_models["gpt2"]
    with pytest.raises(at.AttnscopeError, match="not with token ids"):
        at.capture(model, [5, 6], "second")
    with pytest.raises(at.AttnscopeError, match="use capture"):
        at.capture_batch(model, [5, 6, 7])


def test_typed_separator_is_special_but_unknown_text_is_not(embedded):
    tokenization = at.tokenize(embedded, "left [SEP] right \u2603")
    flagged = dict(zip(tokenization.tokens, tokenization.special_mask.tolist(), strict=True))
    assert flagged["[SEP]"] and not flagged["left"]
    assert "[UNK]" in flagged and not flagged["[UNK]"]  # [UNK] stands for ordinary text
