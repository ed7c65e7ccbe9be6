"""Lazy attention: exact tiles from queries, keys and row log-sum-exps, against eager weights."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import attnscope as at
from attnscope.errors import AttnscopeError
from attnscope.lazy import LazyTrace, eager_bytes, memory_budget

TEXT = "The girl poured water into a tall glass until it overflowed, and then she laughed."
FAMILIES = ("bert", "distilbert", "roberta", "electra", "gpt2", "llama")


@pytest.fixture(scope="module")
def pairs(tiny_models, embedded) -> dict[str, tuple[at.Trace, LazyTrace]]:
    """family -> (eager Trace, LazyTrace) of the same text; "embedded" is the real MiniLM."""
    models = {f: tiny_models[f] for f in FAMILIES} | {"embedded": embedded}
    return {name: (at.capture(m, TEXT), at.capture(m, TEXT, attention="lazy"))
            for name, m in models.items()}


@pytest.mark.parametrize("name", [*FAMILIES, "embedded"])
def test_lazy_tiles_equal_eager_weights(pairs, name):
    eager, lazy = pairs[name]
    T = eager.num_tokens
    assert isinstance(lazy, LazyTrace)
    assert (lazy.num_layers, lazy.num_heads, lazy.num_tokens) == eager.attentions.shape[:3]
    assert lazy.tokens == eager.tokens
    np.testing.assert_array_equal(lazy.input_ids, eager.input_ids)
    np.testing.assert_array_equal(lazy.special_mask, eager.special_mask)
    np.testing.assert_allclose(lazy.to_dense(), eager.attentions, atol=1e-5, rtol=0)
    # one tile, one row, one column, the indexer, negative indices
    tile = lazy.attention(1, 2, rows=range(3, 9), cols=slice(2, T))
    np.testing.assert_allclose(tile, eager.attentions[1, 2, 3:9, 2:], atol=1e-5, rtol=0)
    assert tile.dtype == np.float32 and tile.shape == (6, T - 2)
    np.testing.assert_allclose(lazy.attention(0, 1, rows=5), eager.attentions[0, 1, 5],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(lazy.attention(-1, -1, cols=0), eager.attentions[-1, -1, :, 0],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(lazy.attentions[1, :, 4:7], eager.attentions[1, :, 4:7],
                               atol=1e-5, rtol=0)
    assert lazy.attentions[0, 0, 3, 5].shape == ()
    if eager.is_causal:  # masked where the model masks: exactly zero above the diagonal
        dense = lazy.to_dense()
        assert np.all(dense[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_row_log_sum_exps_come_from_the_attention_kernel(tiny_models, family, monkeypatch):
    """The pass itself gives each row's log-sum-exp (SDPA's CPU kernel returns it beside its
    output): no second pass over the scores, and the same numbers a plain computation gives."""
    def no_block_pass(self, block):
        raise AssertionError("the log-sum-exps were computed again after the pass")

    monkeypatch.setattr(LazyTrace, "_compute_lse", no_block_pass)
    model = tiny_models[family]
    lazy = at.capture(model, TEXT, attention="lazy", layers=[0, -1], heads=[0, 2])
    assert lazy.keys.shape[1] == 2  # with chosen heads, each keeps its own key head
    T = lazy.num_tokens
    for layer in range(2):
        scores = np.einsum("htd,hsd->hts", lazy.queries[layer].astype(np.float64),
                           lazy.keys[layer].astype(np.float64)) * float(lazy.scales[layer])
        if lazy.is_causal:
            scores[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = -np.inf
        top = scores.max(-1, keepdims=True)
        plain = (top[..., 0] + np.log(np.exp(scores - top).sum(-1)))  # log Σ_j exp(s_ij)
        np.testing.assert_allclose(lazy.lse[layer], plain, atol=1e-5, rtol=0)
    eager = at.capture(model, TEXT, layers=[0, -1], heads=[0, 2])
    np.testing.assert_allclose(lazy.to_dense(), eager.attentions, atol=1e-5, rtol=0)


def test_grouped_query_heads_stay_unrepeated(pairs, tiny_models):
    _, lazy = pairs["llama"]
    config = tiny_models["llama"].model.config
    assert lazy.num_kv_heads == config.num_key_value_heads < lazy.num_heads
    assert lazy.keys.shape == (lazy.num_layers, lazy.num_kv_heads, lazy.num_tokens,
                               lazy.queries.shape[-1])


def _plain_stats(weights: np.ndarray) -> dict[str, np.ndarray]:
    """The four head statistics from the whole [L, H, T, T] array, written plainly."""
    L, H, T, _ = weights.shape
    out = {k: np.zeros((L, H)) for k in ("sink", "entropy", "distance", "previous")}
    for layer in range(L):
        for head in range(H):
            P = weights[layer, head].astype(np.float64)
            out["sink"][layer, head] = P[:, 0].mean()
            ent = [-sum(p * np.log(p) for p in row if p > 0) for row in P]
            out["entropy"][layer, head] = np.mean(ent)
            out["distance"][layer, head] = np.mean(
                [sum(P[i, j] * abs(i - j) for j in range(T)) for i in range(T)])
            out["previous"][layer, head] = np.mean([P[i, i - 1] for i in range(1, T)])
    return out


@pytest.mark.parametrize("name", ["gpt2", "embedded"])
def test_streamed_head_stats_equal_eager(pairs, name):
    eager, lazy = pairs[name]
    want = _plain_stats(eager.attentions)
    for block in (3, 512):  # blocks that split the rows and one that holds them all
        got = lazy.head_stats(block=block)
        for key, value in want.items():
            assert got[key].shape == (lazy.num_layers, lazy.num_heads)
            np.testing.assert_allclose(got[key], value, atol=2e-5, rtol=1e-5, err_msg=key)


def test_save_load_round_trip(pairs, tmp_path):
    _, lazy = pairs["llama"]
    path = lazy.save(tmp_path / "long")
    assert path.name == "long.npz"
    back = LazyTrace.load(path)
    assert back.tokens == lazy.tokens and back.sliding_windows == lazy.sliding_windows
    np.testing.assert_array_equal(back.lse, lazy.lse)
    np.testing.assert_array_equal(back.to_dense(), lazy.to_dense())
    # the file holds q, k and row statistics, not T² weights
    T = lazy.num_tokens
    assert path.stat().st_size < lazy.queries.nbytes + lazy.keys.nbytes + lazy.lse.nbytes + 8192 \
        + 64 * T


def test_load_refuses_what_is_not_a_lazy_trace(pairs, tmp_path):
    eager, lazy = pairs["gpt2"]
    with pytest.raises(AttnscopeError, match="not a saved lazy trace"):
        LazyTrace.load(eager.save(tmp_path / "eager.npz"))
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(lazy.save(tmp_path / "ok.npz").read_bytes()[:500])
    with pytest.raises(AttnscopeError, match="Cannot load the lazy trace"):
        LazyTrace.load(damaged)
    with pytest.raises(AttnscopeError, match="no such file"):
        LazyTrace.load(tmp_path / "missing.npz")
    # wrong shapes: an lse with one row too few
    data = dict(np.load(tmp_path / "ok.npz"))
    data["lse"] = data["lse"][..., :-1]
    np.savez(tmp_path / "short.npz", **data)
    with pytest.raises(AttnscopeError, match="lse has shape"):
        LazyTrace.load(tmp_path / "short.npz")


def test_causal_window_from_zero_is_an_exact_trace(pairs):
    eager, lazy = pairs["gpt2"]
    window = lazy.window(0, 10)
    assert isinstance(window, at.Trace) and window.tokens == eager.tokens[:10]
    np.testing.assert_allclose(window.attentions, eager.attentions[:, :, :10, :10],
                               atol=1e-5, rtol=0)
    window.check()  # causal rows from 0 keep all their weight
    at.head_patterns(window)  # an existing analysis runs on it
    assert window.extra["lazy_window"]["renormalized"] is False


def test_inner_window_keeps_exact_weights_unless_renormalised(pairs):
    eager, lazy = pairs["embedded"]
    exact = lazy.window(4, 12)
    np.testing.assert_allclose(exact.attentions, eager.attentions[:, :, 4:12, 4:12],
                               atol=1e-5, rtol=0)
    with pytest.raises(AttnscopeError, match="do not sum to 1"):
        exact.check()
    renormed = lazy.window(4, 12, renormalize=True)
    inside = eager.attentions[:, :, 4:12, 4:12].astype(np.float64)
    np.testing.assert_allclose(renormed.attentions, inside / inside.sum(-1, keepdims=True),
                               atol=1e-5, rtol=0)
    renormed.check()


def test_a_family_lazy_cannot_rebuild_gets_one_sentence(tiny_models, monkeypatch):
    monkeypatch.setattr("attnscope.lazy._UNSUPPORTED_FAMILIES", frozenset({"gpt2"}))
    with pytest.raises(AttnscopeError, match=r"cannot yet rebuild .*'gpt2'.*bert.*llama.*"
                                             r"attention=\"eager\""):
        at.capture(tiny_models["gpt2"], TEXT, attention="lazy")


def test_bad_requests_get_one_sentence(pairs, tiny_models):
    _, lazy = pairs["llama"]
    T, H = lazy.num_tokens, lazy.num_heads
    cases = [
        (lambda: lazy.attention(0, H), f"Head {H} is out of range: there are {H} heads"),
        (lambda: lazy.attention(lazy.num_layers, 0), "Layer .* is out of range"),
        (lambda: lazy.attention(0, 0, rows=T), f"Row {T} is out of range"),
        (lambda: lazy.attention(0, 0, cols=slice(0, T + 5)), "reach past"),
        (lambda: lazy.attention(0, 0, rows=[1, T + 3]), "out of range"),
        (lambda: lazy.attentions[0, 0, 0, 0, 0], "4 axes"),
        (lambda: lazy.window(5, 5), "start < stop"),
        (lambda: lazy.to_dense(budget=16), "past the memory budget"),
        (lambda: lazy.head_stats(block=0), "block must be"),
        (lambda: at.capture(tiny_models["gpt2"], TEXT, attention="flash"),
         "attention must be 'eager', 'lazy' or None"),
        (lambda: at.capture(tiny_models["t5"], TEXT, "Ein Satz.", attention="lazy").cross
         .window(0, 2), "cross attention's rows and keys are different texts"),
    ]
    for call, message in cases:
        with pytest.raises(AttnscopeError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    for bad in (0, -3, "lots", 1.5, float("nan"), True):
        with pytest.raises(AttnscopeError, match="positive whole number of bytes"):
            memory_budget(bad)


def test_lazy_pass_runs_fast_attention_and_restores_eager(tiny_models):
    from attnscope.lazy_record import IMPLEMENTATION

    model = tiny_models["llama"]
    seen = []
    handle = model.model.register_forward_pre_hook(
        lambda module, args: seen.append(module.config._attn_implementation))
    try:
        at.capture(model, TEXT, attention="lazy")
    finally:
        handle.remove()
    assert seen == [IMPLEMENTATION]  # SDPA's kernel, recording queries, keys and lse
    assert model.model.config._attn_implementation == "eager"

    def fail(module, args):
        raise RuntimeError("interrupted")

    handle = model.model.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError):
            at.capture(model, TEXT, attention="lazy")
    finally:
        handle.remove()
    assert model.model.config._attn_implementation == "eager"  # never left switched
    assert at.capture(model, TEXT).attentions is not None  # eager still gives weights


def test_guard_refuses_eager_capture_before_allocating(embedded, monkeypatch):
    calls = []
    handle = embedded.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    text = " ".join(["word"] * 400)
    need = eager_bytes(embedded, 402)
    assert need == 6 * 12 * 402 * 402 * 4 + 7 * 402 * 384 * 4
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", str(need // 10))
    tracemalloc.start()
    try:
        with pytest.raises(AttnscopeError, match='attention="lazy"') as info:
            at.capture(embedded, text, attention="eager")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        handle.remove()
    assert calls == []  # the model never ran
    assert peak < need // 20
    assert "MiB" in str(info.value) and "\n" not in str(info.value)
    # the budget= argument wins over the environment; a lazy capture is not refused
    assert at.capture(embedded, text, budget=need * 2).num_tokens == 402
    assert at.capture(embedded, text, attention="lazy").num_tokens == 402
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", "-1")
    with pytest.raises(AttnscopeError, match="ATTNSCOPE_MEMORY_BUDGET must be a positive"):
        at.capture(embedded, "short")


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_sliding_windows_masked_as_the_model_masks(windowed, family):
    model = windowed[family]
    eager = at.capture(model, TEXT)
    lazy = at.capture(model, TEXT, attention="lazy")
    assert lazy.sliding_windows == ((4, 4) if family == "mistral" else (None, 3))
    dense = lazy.to_dense()
    np.testing.assert_allclose(dense, eager.attentions, atol=1e-5, rtol=0)
    window = lazy.sliding_windows[1]
    T = lazy.num_tokens
    assert np.all(dense[1, :, -1, : T - window] == 0)  # hidden early keys
    # tiles wholly below the diagonal, within the window or past it, and across both
    for r0, r1, c0, c1 in [(T - 2, T, T - window + 1, T - 1), (T - 2, T, 0, 3),
                           (T - 4, T, T - 6, T - 3), (2, 6, 0, 7)]:
        np.testing.assert_allclose(lazy.attention(1, 0, rows=slice(r0, r1), cols=slice(c0, c1)),
                                   eager.attentions[1, 0, r0:r1, c0:c1], atol=1e-5, rtol=0)


def test_a_larger_budget_lets_the_whole_array_through(pairs, monkeypatch):
    eager, lazy = pairs["gpt2"]
    need = eager.attentions.nbytes
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", str(need // 2))
    with pytest.raises(AttnscopeError, match="past the memory budget"):
        lazy.to_dense()
    with pytest.raises(AttnscopeError, match="past the memory budget"):
        lazy.attentions[:, :, :, :]
    np.testing.assert_allclose(lazy.to_dense(budget=need), eager.attentions, atol=1e-5, rtol=0)
    assert lazy.window(0, lazy.num_tokens, budget=need).num_tokens == lazy.num_tokens


def test_the_default_switches_to_lazy_past_the_budget_with_one_note(tiny_models, embedded,
                                                                    monkeypatch):
    """attention=None (the default): eager while it fits, lazy with a one-line note past the
    budget; attention="eager" refuses as before; options lazy cannot honour keep the refusal."""
    import warnings

    from attnscope.lazy import LazyAttentionWarning, MemoryBudgetError

    model = tiny_models["gpt2"]
    need = eager_bytes(model, at.capture(model, TEXT).num_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # under the budget: eager, and no note at all
        assert isinstance(at.capture(model, TEXT, budget=need), at.Trace)
    with pytest.warns(LazyAttentionWarning) as notes:
        lazy = at.capture(model, TEXT, budget=need - 1)
    assert isinstance(lazy, LazyTrace) and len(notes) == 1
    note = str(notes[0].message)
    assert "\n" not in note and "past the memory budget" in note and "lazily" in note
    eager = at.capture(model, TEXT)
    np.testing.assert_allclose(lazy.to_dense(), eager.attentions, atol=1e-5, rtol=0)
    # the environment's budget counts the same; layers= and heads= carry over to lazy
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", "1000")
    with pytest.warns(LazyAttentionWarning):
        picked = at.capture(model, TEXT, layers=[1], heads=[0])
    assert picked.layer_ids == (1,) and picked.head_ids == (0,)
    with pytest.raises(MemoryBudgetError, match='attention="lazy"'):
        at.capture(model, TEXT, attention="eager")
    for kwargs in ({"qkv": True}, {"merge_words": True}):  # lazy cannot give these
        with pytest.raises(MemoryBudgetError, match="past the memory budget"):
            at.capture(model, TEXT, **kwargs)
    # an encoder-decoder model goes lazy too, with its decoder and cross attention
    with pytest.warns(LazyAttentionWarning):
        assert at.capture(tiny_models["t5"], TEXT, "Ein Satz.").cross is not None
    with pytest.raises(AttnscopeError, match="attention must be 'eager', 'lazy' or None"):
        at.capture(model, TEXT, attention="auto-ish")


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_parts_equal_eager(tiny_models, family, tmp_path):
    """With a decoder text: the decoder self-attention (causal; T5's one-way bias) and the
    cross attention (decoder queries over encoder keys) equal eager weights, through a file
    too, and the decoder's head patterns stream."""
    model = tiny_models[family]
    target = "Ein Mädchen goss Wasser in ein Glas."
    eager = at.capture(model, TEXT, target)
    lazy = at.capture(model, TEXT, target, attention="lazy")
    assert lazy.decoder.is_causal and not lazy.cross.is_causal
    assert lazy.decoder.tokens == lazy.cross.tokens == eager.decoder_tokens
    assert lazy.cross.num_keys == lazy.num_tokens and lazy.cross.attentions.shape == (
        eager.cross_attentions.shape)
    for got, want in ((lazy, eager.attentions), (lazy.decoder, eager.decoder_attentions),
                      (lazy.cross, eager.cross_attentions)):
        np.testing.assert_allclose(got.to_dense(), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lazy.cross.attention(1, 0, rows=2, cols=slice(1, 9)),
                               eager.cross_attentions[1, 0, 2, 1:9], atol=1e-5, rtol=0)
    np.testing.assert_allclose(at.head_patterns(lazy, part="decoder").scores,
                               at.head_patterns(eager, part="decoder").scores,
                               atol=1e-5, rtol=0, equal_nan=True)
    loaded = LazyTrace.load(lazy.save(tmp_path / "seq2seq.npz"))
    np.testing.assert_allclose(loaded.cross.to_dense(), eager.cross_attentions, atol=1e-5,
                               rtol=0)
    np.testing.assert_allclose(loaded.decoder.to_dense(), eager.decoder_attentions,
                               atol=1e-5, rtol=0)
    picked = at.capture(model, TEXT, target, attention="lazy", layers=[1], heads=[2])
    np.testing.assert_allclose(picked.cross.to_dense(), eager.cross_attentions[1:, 2:3],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(picked.decoder.to_dense(), eager.decoder_attentions[1:, 2:3],
                               atol=1e-5, rtol=0)
    assert picked.decoder.layer_ids == (1,) and picked.cross.head_ids == (2,)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_encoders_equal_eager(tiny_models, family, tmp_path):
    """T5's relative position bias and BART's scaled scores: the encoder self-attention of a
    lazy capture equals eager weights, per tile, in head patterns and through a file."""
    model = tiny_models[family]
    eager = at.capture(model, TEXT)
    lazy = at.capture(model, TEXT, attention="lazy")
    assert not lazy.is_causal and lazy.architecture == "encoder-decoder"
    assert ("position_bias" in lazy.extra) == (family == "t5")
    np.testing.assert_allclose(lazy.to_dense(), eager.attentions, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lazy.attention(1, 2, rows=[0, 7], cols=slice(3, 20)),
                               eager.attentions[1, 2][[0, 7], 3:20], atol=1e-5, rtol=0)
    np.testing.assert_allclose(at.head_patterns(lazy).scores, at.head_patterns(eager).scores,
                               atol=1e-5, rtol=0)
    loaded = LazyTrace.load(lazy.save(tmp_path / "enc.npz"))
    np.testing.assert_allclose(loaded.to_dense(), eager.attentions, atol=1e-5, rtol=0)
    # chosen heads keep their own columns of T5's bucket table
    picked = at.capture(model, TEXT, attention="lazy", heads=[3, 1])
    np.testing.assert_allclose(picked.to_dense(), eager.attentions[:, [1, 3]], atol=1e-5,
                               rtol=0)
    window = lazy.window(0, 6, renormalize=True)
    assert window.num_tokens == 6 and window.decoder_tokens is None


def test_a_lazy_file_with_a_broken_position_bias_does_not_load(tiny_models, tmp_path):
    import json

    path = at.capture(tiny_models["t5"], TEXT, attention="lazy").save(tmp_path / "t5.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta["extra"]["position_bias"]["table"] = meta["extra"]["position_bias"]["table"][:-1]
    bad = tmp_path / "bad.npz"
    np.savez(bad, __meta__=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(AttnscopeError, match=r"Cannot load the lazy trace .*position_bias"):
        LazyTrace.load(bad)


def test_a_lazy_file_with_broken_decoder_parts_does_not_load(tiny_models, tmp_path):
    import json

    path = at.capture(tiny_models["bart"], TEXT, "Ein Satz.", attention="lazy").save(
        tmp_path / "bart.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays.pop("__meta__")))

    def broken(name, meta, arrays):
        bad = tmp_path / f"{name}.npz"
        np.savez(bad, __meta__=np.array(json.dumps(meta)), **arrays)
        with pytest.raises(AttnscopeError, match="Cannot load the lazy trace") as info:
            LazyTrace.load(bad)
        return str(info.value)

    no_lse = {k: v for k, v in arrays.items() if k != "cross.lse"}
    assert "it has no cross.lse" in broken("no-lse", meta, no_lse)
    short_keys = dict(arrays, **{"cross.keys": arrays["cross.keys"][:, :, :-1]})
    assert "its cross attention: keys has shape" in broken("keys", meta, short_keys)
    other = json.loads(json.dumps(meta))
    other["parts"]["cross"]["tokens"] = other["parts"]["cross"]["tokens"][::-1]
    assert "rows are not the decoder's tokens" in broken("rows", other, arrays)
    odd = json.loads(json.dumps(meta))
    odd["parts"]["encoder"] = odd["parts"].pop("cross")
    assert "its parts are not a map" in broken("parts", odd, arrays)


BATCH = ["The girl poured water into a tall glass until it overflowed.",
         "A dog barked.",
         "Ships sail where the river meets the sea, and the gulls follow them home at dusk."]


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "mistral", "qwen2"])
def test_padded_lazy_batches_equal_each_text_alone(tiny_models, windowed, family):
    """One padded pass: every text's tiles and row log-sum-exps equal its eager weights and its
    lazy capture alone (padding masked as the model masks it, with sliding windows too)."""
    model = (tiny_models | windowed)[family]
    lazies = at.capture_batch(model, BATCH, batch_size=3, attention="lazy")
    assert [type(x) for x in lazies] == [LazyTrace] * 3
    for text, lazy in zip(BATCH, lazies, strict=True):
        alone = at.capture(model, text, attention="lazy")
        eager = at.capture(model, text, attention="eager")
        assert lazy.tokens == eager.tokens and lazy.num_tokens == eager.num_tokens
        np.testing.assert_allclose(lazy.lse, alone.lse, atol=1e-5, rtol=0)
        np.testing.assert_allclose(lazy.to_dense(), eager.attentions, atol=1e-5, rtol=0)


def test_lazy_batches_past_the_mask_budget_run_one_text_at_a_time(tiny_models, monkeypatch):
    """A padded pass holds a [B, 1, T, T] mask: past the budget each text runs alone (no mask),
    with the same result; the default switches a batch past the eager budget to lazy, once."""
    from attnscope.lazy import LazyAttentionWarning

    model = tiny_models["llama"]
    together = at.capture_batch(model, BATCH, attention="lazy")
    alone = at.capture_batch(model, BATCH, attention="lazy", budget=64)
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.to_dense(), b.to_dense(), atol=1e-5, rtol=0)
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", "1000")
    with pytest.warns(LazyAttentionWarning) as notes:
        auto = at.capture_batch(model, BATCH, batch_size=2)
    assert len(notes) == 1 and [type(x) for x in auto] == [LazyTrace] * 3
    for a, b in zip(together, auto, strict=True):
        np.testing.assert_allclose(a.lse, b.lse, atol=1e-5, rtol=0)
    for bad in ({"qkv": True}, {"merge_words": True}):
        with pytest.raises(AttnscopeError, match="need attention=\"eager\""):
            at.capture_batch(model, BATCH, attention="lazy", **bad)
        with pytest.raises(AttnscopeError, match="need attention=\"eager\""):
            at.capture(model, BATCH[0], attention="lazy", **bad)
