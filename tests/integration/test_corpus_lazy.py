"""Corpus mode on the lazy path: a text too long for eager weights is captured lazily and its
statistics streamed over row blocks, equal to what the eager path stores for the same text."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import attnscope as at
from attnscope.analysis.corpus import (
    STATS,
    CorpusItem,
    eager_batch_bytes,
    process_batch,
    route_batch,
    text_key,
)
from attnscope.cli import main
from attnscope.errors import AttnscopeError
from attnscope.lazy import MemoryBudgetError
from attnscope.tokens import TruncationWarning, tokenize
from tests.conftest import CORPUS_CONLLU

# Repeats (duplicate and induction targets), punctuation, a one-word text, and a long one.
TEXTS = [
    "The cat sat. The cat sat on the mat, and the dog sat on the cat.",
    "Why?",
    "Rain fell all night.",
    "It was late, and the old dog slept by the fire while the wind howled outside; the dog "
    "woke, the wind fell, and the fire died.",
]


def _items(texts: list[str]) -> list[CorpusItem]:
    return [CorpusItem(i, t, key=text_key(t)) for i, t in enumerate(texts)]


def _models(tiny_models, embedded) -> dict[str, at.LoadedModel]:
    """BERT-like, GPT-2, Llama with grouped-query heads (4 query heads on 2 key heads), and
    the real MiniLM."""
    return {"bert": tiny_models["bert"], "gpt2": tiny_models["gpt2"],
            "llama": tiny_models["llama"], "embedded": embedded}


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "embedded"])
def test_every_per_text_statistic_equals_the_eager_path(tiny_models, embedded, name):
    model = _models(tiny_models, embedded)[name]
    for item in _items(TEXTS)[::-2] + _items(TEXTS)[:1]:  # long, "Why?", repeats
        # one text a batch: its sums are its own values, its sums of squares their squares
        eager = process_batch(model, [item], embeddings=8, attention="eager")
        lazy = process_batch(model, [item], embeddings=8, attention="lazy", block=5)
        assert (eager.lazy, lazy.lazy) == (0, 1)
        assert lazy.texts == eager.texts
        np.testing.assert_array_equal(lazy.counts, eager.counts)
        for s, stat in enumerate(STATS):
            np.testing.assert_allclose(lazy.sums[s], eager.sums[s], atol=1e-5, rtol=1e-5,
                                       err_msg=f"{name} {stat} {item.text!r}")
            np.testing.assert_allclose(lazy.sums_sq[s], eager.sums_sq[s], atol=1e-5,
                                       rtol=1e-5, err_msg=f"{name} {stat}")
        # the strongest weight of each head: its value, and the weight at the lazy path's
        # (query, key) is that value in the text's own eager Trace
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)  # the tiny models take 64
            trace = at.capture(model, item.text)
        assert len(lazy.examples) == len(eager.examples)
        for got, want in zip(lazy.examples, eager.examples, strict=True):
            assert got[:3] == want[:3] and got[4] == want[4]
            assert got[3] == pytest.approx(want[3], abs=1e-5)
            if got[2] == "weight":
                layer, head, _, value, _, q, k, q_token, k_token = got
                assert trace.attentions[layer, head, q, k] == pytest.approx(value, abs=1e-5)
                assert (trace.tokens[q], trace.tokens[k]) == (q_token, k_token)
        # the sampled tokens' queries and keys (grouped key heads repeated per query head)
        assert [r[:7] for r in lazy.embeddings] == [r[:7] for r in eager.embeddings]
        for got, want in zip(lazy.embeddings, eager.embeddings, strict=True):
            np.testing.assert_allclose(got[7], want[7], atol=1e-5)
            np.testing.assert_allclose(got[8], want[8], atol=1e-5)


def test_the_streamed_profile_and_entropy_match_a_plain_computation(tiny_models):
    """Independent of the eager reduction: the lazy path's raw entropy and positional profile
    against numpy over the eager Trace's weights, written out in full."""
    model = tiny_models["gpt2"]
    text = TEXTS[0]
    batch = process_batch(model, _items([text]), attention="lazy", block=3)
    trace = at.capture(model, text)
    attn = trace.attentions.astype(np.float64)  # (L, H, T, T)
    plain = ~np.asarray(trace.special_mask, dtype=bool)
    n = trace.num_tokens
    entropy = -(attn * np.log(np.clip(attn, 1e-300, None))).sum(-1)[:, :, plain].mean(-1)
    np.testing.assert_allclose(batch.sums[STATS.index("entropy")], entropy, atol=1e-5)
    for offset in (-3, -1, 0, 2):
        rows = [q for q in range(n) if plain[q] and 0 <= q + offset < n]
        want = np.mean([attn[:, :, q, q + offset] for q in rows], axis=0)
        np.testing.assert_allclose(batch.sums[STATS.index(f"offset:{offset:+d}")], want,
                                   atol=1e-5)


def test_a_batch_routes_only_its_long_texts_lazily_and_the_store_is_the_same(
        tiny_models, tmp_path):
    model = tiny_models["llama"]
    items = _items(TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # the longest is cut at 64 tokens
        encoded = [tokenize(model, item.text) for item in items]
    longest = max(len(e) for e in encoded)
    # room for every text but the longest, alone
    budget = eager_batch_bytes(model, longest) - 1
    groups, lazy = route_batch(model, items, encoded, None, budget)
    assert lazy == [3] and sorted(i for g in groups for i in g) == [0, 1, 2]
    # a budget with room for one text at a time splits the batch instead
    one = eager_batch_bytes(model, longest)
    groups, lazy = route_batch(model, items, encoded, None, one)
    assert lazy == [] and groups[-1] == [3] and sorted(i for g in groups for i in g) == [0, 1, 2, 3]
    for group in groups:  # each padded group fits, and keeps the batch's order
        assert group == sorted(group)
        assert eager_batch_bytes(model, max(len(encoded[i]) for i in group), len(group)) <= one

    runs = {}
    for name, kwargs in (("eager", {"attention": "eager"}), ("mixed", {"budget": budget}),
                         ("lazy", {"attention": "lazy"})):
        runs[name] = at.corpus(model, TEXTS, out=tmp_path / f"{name}.duckdb", batch_size=8,
                               progress=False, embeddings=20, **kwargs)
    assert (runs["eager"].summary.lazy, runs["mixed"].summary.lazy,
            runs["lazy"].summary.lazy) == (0, 1, 4)
    want = runs["eager"]
    for name in ("mixed", "lazy"):
        got = runs[name]
        for table, order in (("texts", "text_key"), ("problems", "position")):
            sql = f"SELECT * EXCLUDE (run_id) FROM {table} ORDER BY {order}"
            assert got.sql(sql).fetchall() == want.sql(sql).fetchall()
        sql = "SELECT layer, head, stat, n, sum, sum_sq FROM head_stats ORDER BY ALL"
        a, b = got.sql(sql).df(), want.sql(sql).df()
        assert a[["layer", "head", "stat", "n"]].equals(b[["layer", "head", "stat", "n"]])
        np.testing.assert_allclose(a["sum"], b["sum"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(a["sum_sq"], b["sum_sq"], atol=1e-5, rtol=1e-5)
        sql = "SELECT layer, head, kind, value FROM examples ORDER BY layer, head, kind, value"
        np.testing.assert_allclose(got.sql(sql).df()["value"], want.sql(sql).df()["value"],
                                   atol=1e-5)
        sql = "SELECT text_key, token_pos, queries, keys FROM embeddings ORDER BY ALL"
        for (key_a, pos_a, qa, ka), (key_b, pos_b, qb, kb) in zip(
                got.sql(sql).fetchall(), want.sql(sql).fetchall(), strict=True):
            assert (key_a, pos_a) == (key_b, pos_b)
            np.testing.assert_allclose(np.frombuffer(qa, np.float32),
                                       np.frombuffer(qb, np.float32), atol=1e-5)
            np.testing.assert_allclose(np.frombuffer(ka, np.float32),
                                       np.frombuffer(kb, np.float32), atol=1e-5)


def test_conllu_relations_are_counted_on_the_lazy_path(embedded, tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CORPUS_CONLLU, encoding="utf-8")
    eager = at.corpus(embedded, path, out=tmp_path / "eager.duckdb", progress=False,
                      attention="eager")
    lazy = at.corpus(embedded, path, out=tmp_path / "lazy.duckdb", progress=False,
                     attention="lazy")
    assert lazy.summary.lazy == 2
    for table in ("relations", "relation_baselines"):
        sql = f"SELECT * EXCLUDE (run_id) FROM {table} ORDER BY ALL"
        rows = lazy.sql(sql).fetchall()
        assert rows and rows == eager.sql(sql).fetchall()


def test_the_memory_guard_refuses_before_the_model_runs(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    calls: list[int] = []
    hook = model.model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(MemoryBudgetError, match=r"past the memory budget of .*"
                                                    r"leave out attention=\"eager\""):
            process_batch(model, _items(TEXTS), attention="eager", budget=10_000)
        assert calls == []  # refused from the token counts alone
        # the default sends such texts lazy instead (one pass each, SDPA: no weights held);
        # "Why?" (2 tokens, 2 layers x 4 heads) fits and keeps its eager pass
        result = process_batch(model, _items(TEXTS), budget=10_000)
        assert eager_batch_bytes(model, 2) < 10_000
        assert result.lazy == len(TEXTS) - 1 and len(calls) == len(TEXTS)
    finally:
        hook.remove()
    for kwargs, message in (({"attention": "fast"}, "attention must be 'eager', 'lazy' or"),
                            ({"budget": -1}, "must be a positive whole number of bytes")):
        with pytest.raises(AttnscopeError, match=message):
            at.corpus(model, TEXTS, out=tmp_path / "bad.duckdb", progress=False, **kwargs)


def _text_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def test_the_cli_takes_attention_and_a_memory_budget(embedded, tmp_path, capsys):
    source = _text_file(tmp_path)
    out = tmp_path / "cli.duckdb"
    code = main(["corpus", str(source), "-o", str(out), "-q", "--memory-budget", "1000"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{len(TEXTS)} texts now ({len(TEXTS)} with lazy attention)" in printed
    with pytest.raises(SystemExit):
        main(["corpus", str(source), "-o", str(tmp_path / "x.duckdb"), "--attention", "fast"])
    assert main(["corpus", str(source), "-o", str(tmp_path / "eager.duckdb"), "-q",
                 "--attention", "eager", "--memory-budget", "1000"]) == 2
    assert "past the memory budget" in capsys.readouterr().err


def test_token_search_reads_long_texts_lazily(embedded, tmp_path, monkeypatch):
    run = at.corpus(embedded, TEXTS, out=tmp_path / "s.duckdb", progress=False)
    want = run.search("the", model=embedded, top=3)
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", "1000")  # every text past it: lazy
    got = run.search("the", model=embedded, top=3)
    assert list(got["key_token"]) == list(want["key_token"])
    assert list(got["occurrences"]) == list(want["occurrences"])
    np.testing.assert_allclose(got["weight"], want["weight"], atol=1e-5)


def test_a_long_texts_distance_is_summed_as_precisely_on_both_paths(embedded):
    """Past 256 tokens both paths add a text's rows in float64: the mean distance (the largest
    sums, in tokens) equals a float64 computation from the Trace's weights on either path."""
    text = " ".join(["the river ran past the old mill, and the miller watched it."] * 20)
    trace = at.capture(embedded, text)
    assert trace.num_tokens > 256
    attn = trace.attentions.astype(np.float64)  # (L, H, T, T)
    plain = ~np.asarray(trace.special_mask, dtype=bool)
    idx = np.arange(trace.num_tokens)
    want = (attn * np.abs(idx[:, None] - idx[None, :])).sum(-1)[:, :, plain].mean(-1)
    for attention in ("eager", "lazy"):
        batch = process_batch(embedded, _items([text]), attention=attention)
        np.testing.assert_allclose(batch.sums[STATS.index("distance")], want, rtol=2e-6,
                                   err_msg=attention)
