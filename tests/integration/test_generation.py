"""Generation with its attention: attnscope's own decoding loop against transformers'
``generate`` (same tokens, same per-step attention), chat prompts and their roles, sampling,
stop strings, Ctrl-C, and every mistake a person can make."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnscope as at
from attnscope import AttnscopeError
from attnscope.generation import role_shares, writing_rows
from attnscope.tokens import tokenize_chat

PROMPT = "The girl poured water into a tall glass"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def hf_generate(model: at.LoadedModel, ids: np.ndarray, new_tokens: int) -> object:
    """transformers' own greedy generate with every step's attention."""
    inputs = torch.tensor([ids.tolist()])
    eos = model.lm_model.generation_config.eos_token_id
    with torch.inference_mode():
        return model.lm_model.generate(
            inputs, max_new_tokens=new_tokens, do_sample=False, output_attentions=True,
            output_hidden_states=True, return_dict_in_generate=True,
            pad_token_id=eos if isinstance(eos, int) else None,
        )


def assert_matches_hf(trace: at.Trace, reference: object) -> None:
    """Same tokens as ``generate``, and every row ``generate`` computed, within 1e-5."""
    start = trace.answer_start
    np.testing.assert_array_equal(trace.input_ids, reference.sequences[0].numpy())
    steps = reference.attentions  # step 0: the prompt [1, H, P, P]; step s: [1, H, 1, P + s]
    assert len(steps) == trace.num_tokens - start
    first = trace.query_start
    prefill = np.stack([a[0].numpy() for a in steps[0]])  # (L, H, P, P)
    np.testing.assert_allclose(trace.attentions[:, :, : start - first, :start],
                               prefill[:, :, first:], atol=1e-5)
    for s in range(1, len(steps)):
        row = np.stack([a[0, :, 0].numpy() for a in steps[s]])  # (L, H, P + s)
        held = trace.attentions[:, :, start + s - 1 - first]
        np.testing.assert_allclose(held[:, :, : start + s], row, atol=1e-5)
        assert not held[:, :, start + s :].any()  # nothing past the query's own position
    prompt_states = np.stack([h[0].numpy() for h in reference.hidden_states[0]])
    np.testing.assert_allclose(trace.hidden_states[:, :start], prompt_states, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("square", [True, False])
def test_greedy_equals_transformers_generate(tiny_models, family, square):
    model = tiny_models[family]
    trace = at.generate(model, PROMPT, max_new_tokens=10, prompt_attention=square)
    start = trace.answer_start
    assert trace.is_generation and trace.roles == ("prompt",) * start + ("answer",) * (
        trace.num_tokens - start)
    assert trace.query_start == (0 if square else start - 1)
    assert trace.attentions.shape == (2, 4, trace.num_tokens - trace.query_start,
                                      trace.num_tokens)
    assert trace.hidden_states.shape == (3, trace.num_tokens, 32)
    assert trace.generation["stopped"] in ("eos", "max_new_tokens")
    assert_matches_hf(trace, hf_generate(model, trace.input_ids[:start], 10))
    trace.check(rows_only=True)
    # probabilities: each chosen token's softmax probability, and the top 5 in order
    assert trace.answer_top_ids.shape == (trace.num_tokens - start, 5)
    np.testing.assert_array_equal(trace.answer_top_ids[:, 0], trace.input_ids[start:])
    np.testing.assert_allclose(trace.answer_probs, trace.answer_top_probs[:, 0], rtol=1e-6)
    assert (np.diff(trace.answer_top_probs, axis=1) <= 0).all()


def test_the_trace_saves_and_loads(tiny_models, tmp_path):
    trace = at.generate(tiny_models["llama"], PROMPT, max_new_tokens=4, prompt_attention=False)
    again = at.Trace.load(trace.save(tmp_path / "gen.npz"))
    assert again.generation == trace.generation and again.roles == trace.roles
    assert again.query_start == trace.query_start
    np.testing.assert_array_equal(again.attentions, trace.attentions)


def test_sampling_is_reproducible_with_a_seed(tiny_models):
    model = tiny_models["llama"]
    settings = dict(max_new_tokens=12, temperature=1.5, top_p=0.95, seed=7)
    first = at.generate(model, PROMPT, **settings)
    second = at.generate(model, PROMPT, **settings)
    np.testing.assert_array_equal(first.input_ids, second.input_ids)
    assert first.generation["settings"]["seed"] == 7
    # a nucleus too small for any second token leaves only the most likely one: greedy
    narrow = at.generate(model, PROMPT, max_new_tokens=12, temperature=2.0, top_p=1e-9, seed=3)
    greedy = at.generate(model, PROMPT, max_new_tokens=12)
    np.testing.assert_array_equal(narrow.input_ids, greedy.input_ids)
    # no seed: one is drawn and recorded, so the answer can be replayed
    drawn = at.generate(model, PROMPT, max_new_tokens=6, temperature=1.0)
    replay = at.generate(model, PROMPT, max_new_tokens=6, temperature=1.0,
                         seed=drawn.generation["settings"]["seed"])
    np.testing.assert_array_equal(drawn.input_ids, replay.input_ids)


def test_a_stop_string_ends_the_answer_at_its_last_token(tiny_models):
    model = tiny_models["gpt2"]
    free = at.generate(model, PROMPT, max_new_tokens=12)
    start, answer = free.answer_start, free.generation["answer"]
    assert free.generation["stopped"] == "max_new_tokens"
    prompt_chars = len(free.text) - len(answer)
    ends = free.offsets[start:, 1] - prompt_chars  # where each answer token's text ends
    stop = answer[max(0, ends[2] - 2):ends[2]]  # ends inside the third answer token
    assert stop
    expected = next(k for k in range(1, len(ends) + 1) if stop in answer[: ends[k - 1]])
    stopped = at.generate(model, PROMPT, max_new_tokens=12, stop=["\u2603", stop])
    assert stopped.generation["stopped"] == "stop_string"
    assert stopped.generation["stop_string"] == stop
    assert stopped.num_tokens - start == expected
    np.testing.assert_array_equal(stopped.input_ids, free.input_ids[: start + expected])


def test_ctrl_c_keeps_what_was_generated(tiny_models):
    model = tiny_models["llama"]
    pieces: list[str] = []

    def interrupt_at_step_3(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            raise KeyboardInterrupt

    full = at.generate(model, PROMPT, max_new_tokens=10)
    assert full.num_tokens - full.answer_start > 3  # the run is longer than the interruption
    cut = at.generate(model, PROMPT, max_new_tokens=10, on_token=interrupt_at_step_3)
    assert cut.generation["stopped"] == "interrupted"
    n = cut.answer_start + 3
    assert cut.num_tokens == n
    np.testing.assert_array_equal(cut.input_ids, full.input_ids[:n])
    np.testing.assert_allclose(cut.attentions, full.attentions[:, :, :n, :n], atol=1e-6)
    np.testing.assert_allclose(cut.hidden_states, full.hidden_states[:, :n], atol=1e-5)
    assert "".join(pieces) == cut.generation["answer"]


def test_ctrl_c_inside_a_step_cuts_the_cache_back(tiny_models, monkeypatch):
    """Ctrl-C after a step has written its keys and values to the cache but before its rows
    were recorded: the cache is cut back, the token's rows are computed again, and they equal
    those of an uninterrupted run."""
    from attnscope import generation

    model = tiny_models["llama"]
    full = at.generate(model, PROMPT, max_new_tokens=8)
    record = generation._Buffers.record
    calls = []

    def interrupt_fourth_record(self, out, first):
        calls.append(first)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return record(self, out, first)

    monkeypatch.setattr(generation._Buffers, "record", interrupt_fourth_record)
    cut = at.generate(model, PROMPT, max_new_tokens=8)
    assert cut.generation["stopped"] == "interrupted"
    n = cut.num_tokens
    assert n == cut.answer_start + 3  # three tokens were chosen before the interrupted step
    np.testing.assert_array_equal(cut.input_ids, full.input_ids[:n])
    np.testing.assert_allclose(cut.attentions, full.attentions[:, :, :n, :n], atol=1e-6)


def test_progress_bar_counts_tokens(tiny_models, capsys):
    trace = at.generate(tiny_models["gpt2"], PROMPT, max_new_tokens=5, progress=True)
    assert trace.num_tokens - trace.answer_start == 5
    assert "5/5" in capsys.readouterr().err


def test_ctrl_c_before_the_first_token_is_not_swallowed(tiny_models, monkeypatch):
    from attnscope import generation

    def interrupted(self, ids):
        raise KeyboardInterrupt

    monkeypatch.setattr(generation._Decoder, "_forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        at.generate(tiny_models["llama"], PROMPT, max_new_tokens=3)


def test_role_shares_are_sums_of_the_writing_rows(tiny_models):
    trace = at.generate(tiny_models["gpt2"], PROMPT, max_new_tokens=6)
    start, n = trace.answer_start, trace.num_tokens
    shares = role_shares(trace)
    assert list(shares) == ["prompt", "answer"]
    roles = np.array(trace.roles)
    att = trace.attentions.astype(np.float64)  # (L, H, T, T), query_start 0
    for layer in range(2):
        for j in range(n - start):
            row = att[layer, :, start + j - 1].mean(axis=0)  # the row that chose token j
            assert shares["prompt"][layer, j] == pytest.approx(row[roles == "prompt"].sum())
            assert shares["answer"][layer, j] == pytest.approx(row[roles == "answer"].sum())
    total = shares["prompt"] + shares["answer"]
    np.testing.assert_allclose(total, 1, atol=1e-5)
    one = role_shares(trace, layer=-1, head=2)
    row = att[1, 2, start - 1]
    assert one["prompt"][0] == pytest.approx(row[:start].sum())
    assert writing_rows(trace).shape == (2, 4, n - start, n)


def test_the_prompt_square_follows_the_budget(tiny_models, monkeypatch):
    from attnscope import generation

    small = at.generate(tiny_models["llama"], PROMPT, max_new_tokens=3)
    assert small.has_square and small.generation["settings"]["prompt_attention"] is True
    monkeypatch.setattr(generation, "SQUARE_BUDGET_BYTES", 1000)
    rows = at.generate(tiny_models["llama"], PROMPT, max_new_tokens=3)
    assert not rows.has_square and rows.query_start == rows.answer_start - 1
    np.testing.assert_array_equal(rows.input_ids, small.input_ids)
    np.testing.assert_allclose(rows.attentions, small.attentions[:, :, rows.query_start:],
                               atol=1e-6)
    with pytest.raises(AttnscopeError, match="needs every token's row"):
        rows.check()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: at.generate(m, PROMPT, max_new_tokens=0), "max_new_tokens must be a whole"),
        (lambda m: at.generate(m, PROMPT, max_new_tokens=500), "goes past the model's context"),
        (lambda m: at.generate(m, PROMPT, temperature=-1), "temperature must be 0"),
        (lambda m: at.generate(m, PROMPT, top_p=0), "top_p must be a number above 0"),
        (lambda m: at.generate(m, PROMPT, top_p=1.5), "top_p must be a number above 0"),
        (lambda m: at.generate(m, 42), "The prompt must be a string or a list of chat"),
        (lambda m: at.generate(m, "   "), "The prompt is empty"),
        (lambda m: at.generate(m, []), "The messages are empty"),
        (lambda m: at.generate(m, ["hi"]), "Message 0 must be a dict with 'role' and 'content'"),
        (lambda m: at.generate(m, [{"role": "tool", "content": "x"}]), "has role 'tool'"),
        (lambda m: at.generate(m, FRANCE), "has no chat template"),
        (lambda m: at.generate(m, PROMPT, stop=[""]), "stop must be a string or a list"),
    ],
)
def test_mistakes_get_one_sentence(tiny_models, call, message):
    with pytest.raises(AttnscopeError, match=message):
        call(tiny_models["gpt2"])


def test_models_that_cannot_generate_are_refused(embedded, tiny_models, tmp_path):
    with pytest.raises(AttnscopeError, match=r"encoder \(bert\) model; .*decoder-only.*Llama"):
        at.generate(embedded, PROMPT)
    with pytest.raises(AttnscopeError, match="encoder-decoder"):
        at.generate(tiny_models["t5"], PROMPT)
    base = at.load(tiny_models["llama"].model, tokenizer=tiny_models["llama"].tokenizer,
                   name="base llama")
    assert base.lm_model is None
    with pytest.raises(AttnscopeError, match="has no language-modelling head"):
        at.generate(base, PROMPT)


def test_a_role_the_template_refuses(tiny_models):
    import copy
    import dataclasses

    tokenizer = copy.deepcopy(tiny_models["llama"].tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System roles are not supported') }}{% endif %}"
        "{{ '<s>' + m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    model = dataclasses.replace(tiny_models["llama"], tokenizer=tokenizer)
    with pytest.raises(AttnscopeError, match="refuses these messages: System roles are not"):
        at.generate(model, "hello", system="Be brief.")
    trace = at.generate(model, "the cat", chat=True, max_new_tokens=2)
    assert trace.generation["prompt_kind"] == "chat"
    user = [t for t, r in zip(trace.tokens, trace.roles, strict=True) if r == "user"]
    assert tokenizer.convert_tokens_to_string(user).strip() == "the cat"  # " the": one token
    assert trace.special_mask[0] and trace.tokens[0] == "<s>"


# ----- the real model --------------------------------------------------------------------------

def test_chat_roles_follow_the_template_text(smollm2):
    messages = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "user"},  # the role's name, also in the markup
                {"role": "assistant", "content": "Yes."},
                {"role": "user", "content": "What is the capital of France?"}]
    encoded = tokenize_chat(smollm2, messages)
    rendered = smollm2.tokenizer.apply_chat_template(messages, tokenize=False,
                                                     add_generation_prompt=True)
    assert encoded.text == rendered
    roles = np.array(encoded.roles)
    by_role = {role: [i for i in range(len(roles)) if roles[i] == role]
               for role in ("system", "user", "assistant")}
    text = lambda idx: "".join(rendered[s:e] for s, e in encoded.offsets[idx])  # noqa: E731
    assert text(by_role["system"]) == "You answer in one word."
    assert text(by_role["assistant"]) == "Yes."
    assert text(by_role["user"]) == "user" + "What is the capital of France?"
    specials = {encoded.tokens[i] for i in np.flatnonzero(encoded.special_mask)}
    assert specials == {"<|im_start|>", "<|im_end|>"}
    assert all(roles[encoded.special_mask] == "markup")
    # the header "<|im_start|>user\n" is markup, the content "user" is the user's
    header = encoded.tokens.index("user")
    assert roles[header] == "markup" and roles[header - 1] == "markup"
    # everything outside the messages' text is markup
    inside = np.zeros(len(rendered), bool)
    for i in np.flatnonzero(roles != "markup"):
        inside[encoded.offsets[i, 0]:encoded.offsets[i, 1]] = True
    assert inside.sum() == sum(len(m["content"]) for m in messages)


def test_smollm2_answers_with_the_attention_generate_computed(smollm2):
    trace = at.generate(smollm2, FRANCE, max_new_tokens=12, system="You are a helpful AI.")
    assert trace.generation["answer"] == "The capital of France is Paris."
    assert trace.generation["stopped"] == "eos" and trace.tokens[-1] == "<|im_end|>"
    assert trace.generation["prompt_kind"] == "chat" and trace.has_square
    assert_matches_hf(trace, hf_generate(smollm2, trace.input_ids[: trace.answer_start], 12))
    shares = role_shares(trace)
    assert set(shares) == {"system", "user", "markup", "answer"}
    np.testing.assert_allclose(sum(shares.values()), 1, atol=1e-4)


def test_smollm2_default_system_prompt_is_markup_and_stop_strings_work(smollm2):
    streamed: list[str] = []
    trace = at.generate(smollm2, FRANCE, max_new_tokens=12, stop="France",
                        on_token=streamed.append, prompt_attention=False)
    assert trace.generation["answer"] == "The capital of France"
    assert trace.generation["stopped"] == "stop_string" and trace.tokens[-1] == "ĠFrance"
    assert "".join(streamed) == "The capital of France"
    roles = np.array(trace.roles)
    assert "system" not in roles  # the template's own default system prompt is markup
    assert trace.query_start == trace.answer_start - 1
