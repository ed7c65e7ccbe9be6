"""Corpus mode's query/key sample (``embeddings=N``) and the joint embedding the atlas draws:
the stored vectors are the model's own queries and keys, the sample is the N tokens of smallest
hash over the whole run whatever the batches, and the projection is AttentionViz's, checked
against a plain NumPy computation."""

from __future__ import annotations

import hashlib
import json

import duckdb
import numpy as np
import pytest

import attnscope as at
from attnscope.errors import AttnscopeError

TEXTS = [
    "The girl poured water into a tall glass until it overflowed.",
    "Leaves fall in autumn, and the nights grow cold.",
    "She said that she would come back tomorrow.",
    "A dog barked.",
    "Rivers carry sand from the mountains to the sea over many years.",
    "Why not?",
]


def _plain_priority(key: str, position: int) -> int:
    digest = hashlib.blake2b(f"{key}:{position}".encode(), digest_size=8,
                             person=b"attnscope-qk").digest()
    return int.from_bytes(digest, "big") >> 1


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_stored_queries_and_keys_are_the_models_own(tiny_models, tmp_path, family):
    model = tiny_models[family]
    result = at.corpus(model, TEXTS, out=tmp_path / "qk.duckdb", batch_size=2, progress=False,
                       embeddings=12)
    sample = result.qk_sample()
    assert sample.queries.shape == (12, model.num_layers, model.num_heads,
                                    sample.queries.shape[-1])
    assert sample.keys.shape == sample.queries.shape
    # the 12 plain tokens of smallest hash over every text of the run, in that order
    candidates = []
    for text in TEXTS:
        enc = at.tokenize(model, text)
        text_key = result.sql("SELECT text_key FROM texts WHERE text = ?",
                              [text]).fetchall()[0][0]
        for pos in range(len(enc)):
            if not enc.special_mask[pos]:
                candidates.append((_plain_priority(text_key, pos), text_key, pos, text))
    expected = sorted(candidates)[:12]
    assert list(zip(sample.tokens["text_key"], sample.tokens["token_pos"], strict=True)) == [
        (k, p) for _, k, p, _ in expected]
    # each vector equals what capture records for that token, alone
    for n, (_, _, pos, text) in enumerate(expected):
        trace = at.capture(model, text, qkv=True)
        np.testing.assert_allclose(sample.queries[n], trace.queries[:, :, pos], atol=2e-5)
        np.testing.assert_allclose(sample.keys[n], trace.keys[:, :, pos], atol=2e-5)
        row = sample.tokens.iloc[n]
        assert row["token"] == trace.tokens[pos]
        assert text[row["char_start"]:row["char_end"]] in text
    result.close()


def test_sample_does_not_depend_on_batches_order_or_resumption(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    one = at.corpus(model, TEXTS, out=tmp_path / "one.duckdb", batch_size=4, progress=False,
                    embeddings=9).qk_sample()
    other_path = tmp_path / "other.duckdb"
    at.corpus(model, TEXTS[::-1][:3], out=other_path, batch_size=1, progress=False,
              embeddings=9, run="r")
    other = at.corpus(model, TEXTS[::-1], out=other_path, batch_size=3, progress=False,
                      embeddings=9, run="r").qk_sample()
    assert other.tokens[["text_key", "token_pos"]].equals(one.tokens[["text_key", "token_pos"]])
    np.testing.assert_allclose(other.queries, one.queries, atol=2e-5)
    np.testing.assert_allclose(other.keys, one.keys, atol=2e-5)


def _plain_joint_embedding(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """AttentionViz's normalisation and a PCA, written out step by step."""
    q = q.astype(np.float64)
    k = k.astype(np.float64)
    mean_q_norm = np.mean([np.sqrt(np.sum(v * v)) for v in q])
    mean_k_norm = np.mean([np.sqrt(np.sum(v * v)) for v in k])
    c = np.sqrt(mean_k_norm / mean_q_norm)
    q = q * c
    k = k / c
    k = k - k.mean(axis=0) + q.mean(axis=0)
    both = np.vstack([q, k])
    both = both - both.mean(axis=0)
    _, _, vt = np.linalg.svd(both, full_matrices=False)
    return both @ vt[:2].T


def test_joint_embedding_is_attentionviz_projection(tiny_models, tmp_path):
    model = tiny_models["llama"]
    result = at.corpus(model, TEXTS, out=tmp_path / "qk.duckdb", batch_size=3, progress=False,
                       embeddings=20)
    sample = result.qk_sample()
    for layer, head in ((0, 0), (1, 3)):
        q, k = sample.queries[:, layer, head], sample.keys[:, layer, head]
        found = at.joint_embedding(q, k)
        expected = _plain_joint_embedding(q, k)
        assert found.points.shape == (40, 2)
        for axis in range(2):  # a principal axis has no sign of its own
            sign = np.sign(found.points[:, axis] @ expected[:, axis])
            np.testing.assert_allclose(found.points[:, axis], sign * expected[:, axis],
                                       atol=1e-6)
        # the normalisation changes no attention score up to a per-query constant
        scaled_q = q * found.scale
        moved_k = k / found.scale + found.shift
        before = q @ k.T
        after = scaled_q @ moved_k.T
        diff = after - before
        np.testing.assert_allclose(diff - diff[:, :1], 0, atol=1e-4)
        # both clouds share a mean and a mean norm before the PCA
        np.testing.assert_allclose(scaled_q.mean(0), moved_k.mean(0), atol=1e-5)
        assert np.linalg.norm(scaled_q, axis=1).mean() == pytest.approx(
            np.linalg.norm(k / found.scale, axis=1).mean(), rel=1e-5)


def test_embedding_options_and_damage_are_one_sentence(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    for bad in (-1, 2001, True, 2.5, "5"):
        with pytest.raises(AttnscopeError, match="embeddings must be a whole number") as err:
            at.corpus(model, TEXTS, out=tmp_path / "bad.duckdb", progress=False,
                      embeddings=bad)
        assert "\n" not in str(err.value)
    path = tmp_path / "run.duckdb"
    at.corpus(model, TEXTS[:2], out=path, progress=False, embeddings=5, run="r")
    with pytest.raises(AttnscopeError, match="began with --embeddings 5"):
        at.corpus(model, TEXTS, out=path, progress=False, embeddings=6, run="r")
    with pytest.raises(AttnscopeError, match="began with --embeddings 5, and resuming it with "
                                             "no --embeddings"):
        at.corpus(model, TEXTS, out=path, progress=False, run="r")
    plain = at.corpus(model, TEXTS[:2], out=tmp_path / "plain.duckdb", progress=False)
    assert not plain.has_qk_sample()
    with pytest.raises(AttnscopeError, match="kept no queries and keys"):
        plain.qk_sample()
    with duckdb.connect(str(path)) as con:
        settings = json.loads(con.execute("SELECT settings FROM runs").fetchone()[0])
        assert settings["embeddings"] == 5
        con.execute("UPDATE embeddings SET queries = 'abc'::BLOB WHERE token_pos = "
                    "(SELECT min(token_pos) FROM embeddings)")
    with pytest.raises(AttnscopeError, match="damaged: run 'r' has embeddings rows"):
        at.CorpusResult(path).qk_sample()
    with pytest.raises(AttnscopeError, match="same width"):
        at.joint_embedding(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(AttnscopeError, match="finite"):
        at.joint_embedding(np.full((3, 4), np.nan), np.zeros((3, 4)))
