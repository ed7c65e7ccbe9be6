"""Head analysis on real models: the embedded all-MiniLM-L6-v2 and tiny random families."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

import attnscope as at
from attnscope.analysis.patterns import SCORES
from attnscope.words import word_groups

TEXT = ("The girl poured water into a tall glass until it overflowed, and the boy laughed "
        "while the cat watched the water spill across the kitchen floor.")


@pytest.fixture(scope="module")
def text_trace(embedded):
    return at.capture(embedded, TEXT, qkv=True)


def test_embedded_model_has_previous_and_next_token_heads(text_trace):
    table = at.head_patterns(text_trace)
    assert table.scores.shape == (6, 12, len(SCORES))
    previous = table.find("previous", 0.5)
    following = table.find("next", 0.5)
    assert previous, "no previous-token head above 0.5"
    assert following, "no next-token head above 0.5"
    layer, head, score = previous[0]
    assert table.labels[layer, head] == "previous"
    # The score is the share of attention on the token just before, over the plain rows.
    matrix = text_trace.attentions[layer, head]
    plain = np.flatnonzero(~text_trace.special_mask)
    rows = [i for i in plain if i - 1 in plain]
    assert score == pytest.approx(np.mean([matrix[i, i - 1] for i in rows]), abs=1e-5)


def test_word_merge_carries_through(embedded):
    words = at.capture(embedded, "Autumn foliage overflowed spectacularly.", merge_words=True)
    tokens = at.capture(embedded, "Autumn foliage overflowed spectacularly.")
    assert words.num_tokens < tokens.num_tokens
    w = words.num_tokens
    assert at.head_patterns(words).tokens == words.tokens
    assert at.attention_rollout(words).values.shape == (w, w)
    assert at.attention_flow(words, output=0).values.shape == (1, w)
    assert at.layer_trends(words).values.shape == (6, 4)
    assert at.pca(words, -1).points.shape == (w, 2)
    norms = at.attention_norms(words, embedded)
    assert norms.norms.shape == (6, 12, w, w)
    # A word's norm is the norm of its summed vectors: equal to the token norms merged like
    # attention when the key word is one token (its vectors then point the same way), and never
    # more than them (the triangle inequality) when its tokens' vectors differ.
    token_norms = at.attention_norms(tokens, embedded).norms
    groups = word_groups(tokens.word_ids)
    assert any(len(group) > 1 for group in groups)
    for qi, q_group in enumerate(groups):
        for ki, k_group in enumerate(groups):
            merged = token_norms[:, :, q_group][:, :, :, k_group].sum(-1).mean(-1)
            if len(k_group) == 1:
                np.testing.assert_allclose(norms.norms[:, :, qi, ki], merged, rtol=1e-4,
                                           atol=1e-6)
            else:
                assert np.all(norms.norms[:, :, qi, ki] <= merged * (1 + 1e-5) + 1e-7)


def test_norms_match_bert_output_projection(embedded, text_trace):
    norms = at.attention_norms(text_trace, embedded)
    bert = embedded.model
    layer, head, d = 3, 5, 32
    values = text_trace.values[layer, head]  # (T, d), value bias included
    dense = bert.encoder.layer[layer].attention.output.dense.weight.detach().numpy()  # (D, D)
    f = values @ dense[:, head * d:(head + 1) * d].T  # (T, D), output bias left out
    expected = text_trace.attentions[layer, head] * np.linalg.norm(f, axis=1)[None, :]
    np.testing.assert_allclose(norms.norms[layer, head], expected, rtol=1e-4, atol=1e-6)
    weight_share, norm_share = norms.special_share()
    assert norm_share < weight_share  # attention to [CLS]/[SEP] carries little



def test_norms_of_words_are_the_norm_of_their_summed_vectors(embedded):
    """For merged words, ||mean over the query word's tokens of the sum over the key word's
    tokens of alpha f(x)||, computed here by hand from the token-level values."""
    text = "The girl poured water into a tall glass until it overflowed."
    tokens = at.capture(embedded, text, qkv=True)
    words = at.capture(embedded, text, merge_words=True)
    norms = at.attention_norms(words, embedded).norms  # (L, H, W, W)
    groups = [[0], *[[i] for i in range(1, 11)], [11, 12, 13], [14], [15]]  # over ##flow ##ed
    assert [tokens.tokens[i] for i in groups[11]] == ["over", "##flow", "##ed"]
    assert norms.shape[2:] == (len(groups), len(groups))
    dense = embedded.model.encoder.layer[2].attention.output.dense.weight.detach().numpy()
    for head in (0, 7):
        f = tokens.values[2, head] @ dense[:, head * 32:(head + 1) * 32].T  # (T, D)
        alpha = tokens.attentions[2, head]
        for w, v in ((11, 11), (3, 11), (11, 3), (2, 5)):
            summed = np.mean([sum(alpha[i, j] * f[j] for j in groups[v]) for i in groups[w]],
                             axis=0)  # (D,)
            assert norms[2, head, w, v] == pytest.approx(np.linalg.norm(summed), rel=1e-4)
            token_norms = np.mean([sum(alpha[i, j] * np.linalg.norm(f[j]) for j in groups[v])
                                   for i in groups[w]])
            assert norms[2, head, w, v] <= token_norms * (1 + 1e-5)  # never more than the sum


def test_norms_on_grouped_query_llama(tiny_models):
    model = tiny_models["llama"]
    trace = at.capture(model, "hello there world", qkv=True)
    norms = at.attention_norms(trace, model)
    lm = model.model
    layer = 1
    attn = lm.layers[layer].self_attn
    with torch.no_grad():
        x = lm.layers[layer].input_layernorm(torch.from_numpy(np.array(trace.hidden_states[layer])))
        v = attn.v_proj(x)  # (T, H_kv * d)
    kv_heads, d = model.model.config.num_key_value_heads, attn.head_dim
    v = v.numpy().reshape(len(trace.tokens), kv_heads, d)  # (T, H_kv, d)
    w_o = attn.o_proj.weight.detach().numpy()  # (D, H * d)
    for head in range(trace.num_heads):
        kv = head // (trace.num_heads // kv_heads)  # query heads share their key/value head
        f = v[:, kv] @ w_o[:, head * d:(head + 1) * d].T  # (T, D)
        expected = trace.attentions[layer, head] * np.linalg.norm(f, axis=1)[None, :]
        np.testing.assert_allclose(norms.norms[layer, head], expected, rtol=1e-4, atol=1e-6)


def test_norms_need_the_right_model(tiny_models, text_trace):
    with pytest.raises(at.AttnscopeError, match="needs the model"):
        at.attention_norms(text_trace)
    with pytest.raises(at.AttnscopeError, match="pass the model the trace was captured with"):
        at.attention_norms(text_trace, tiny_models["gpt2"])


def test_every_tiny_family_is_analysed(tiny):
    trace = at.capture(tiny, "hello there world, hello", qkv=True)
    table = at.head_patterns(trace)
    assert table.scores.shape == (tiny.num_layers, tiny.num_heads, len(SCORES))
    broad = table.score("broad")
    assert np.all((broad >= 0) & (broad <= 1 + 1e-6))
    rollout = at.attention_rollout(trace)
    np.testing.assert_allclose(rollout.values.sum(1), 1.0, atol=1e-6)
    flow = at.attention_flow(trace, output=-1)
    assert np.all(flow.values <= 1 + 1e-6) and np.all(flow.values >= 0)
    assert at.attention_norms(trace, tiny).norms.shape == trace.attentions.shape
    if trace.is_causal:
        assert not np.isnan(table.score("induction")).all()
        assert np.all(table.score("next") == 0)  # causal heads cannot look ahead


def test_figures_save(text_trace, embedded, tmp_path):
    table = at.head_patterns(text_trace)
    flow = at.attention_flow(text_trace, output=0)
    figures = {
        "map.png": table.label_map(),
        "gallery.png": table.gallery(text_trace, ["previous", "next"], n=2),
        "rollout.svg": at.attention_rollout(text_trace).figure(),
        "bar.png": flow.bar(),
        "graph.svg": at.attention_graph(text_trace, 0, 2),
        "graph2.png": at.attention_graph(text_trace, -1, layout="columns"),
        "norms.png": at.attention_norms(text_trace, embedded).figure(-1, 0),
        "layers.png": at.layer_trends(text_trace).figure(),
        "pca.png": at.pca(text_trace, 0).figure(),
        "path.png": at.token_path(text_trace, 3).figure(path=True),
    }
    for name, fig in figures.items():
        path = fig.save(tmp_path / name)
        assert path.stat().st_size > 2000, name
    svg = (tmp_path / "graph.svg").read_text()
    assert "girl" in svg  # token labels are drawn as text
    with pytest.raises(at.AttnscopeError, match="Unknown layout"):
        at.attention_graph(text_trace, layout="spring")
    with pytest.raises(at.AttnscopeError, match="Unknown pattern"):
        table.gallery(text_trace, ["sideways"])


def test_token_path_runs_through_every_level(text_trace):
    path = at.token_path(text_trace, 2)
    assert path.points.shape == (7, 2)
    assert list(path.levels) == list(range(7))
    with pytest.raises(at.AttnscopeError, match="out of range"):
        at.pca(text_trace, 9)


def test_report_is_self_contained_and_escaped(embedded, tmp_path):
    trace = at.capture(embedded, "a <b>bold</b> & risky <script>alert(1)</script> text",
                       qkv=True)
    page = at.report(trace, embedded).save(tmp_path / "report.html").read_text()
    for section in ("Tokens", "What each head does", "Attention rollout and flow",
                    "Norm-based attention", "Layer trends", "PCA", "Interactive views"):
        assert section in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    # The charts are drawn in the page from its own data: one placeholder per chart spec.
    specs = json.loads(re.search(
        r'<script type="application/json" id="attnscope-report-data">(.*?)</script>',
        page, re.S).group(1))
    assert page.count('<figure class="as-chart"') == len(specs) >= 10
    kinds = {spec["kind"] for spec in specs}
    assert kinds == {"heatmap", "bars", "arcs", "lines", "scatter"}
    norm = next(s for s in specs if s["kind"] == "heatmap" and s["title"].startswith("norm"))
    weights = np.frombuffer(base64.b64decode(norm["values"]), "<f2").reshape(norm["shape"])
    assert weights.shape == (trace.num_tokens, trace.num_tokens)
    expected = at.attention_norms(trace, embedded).layer_mean(-1)
    np.testing.assert_allclose(weights, expected, rtol=2e-3, atol=1e-4)  # float16
    # head, model and neuron view (the trace has queries and keys)
    assert page.count('class="attnscope-root"') == 3
    # Sections are collapsible and listed in a table of contents.
    sections = re.findall(r"<details open id='(\w+)'><summary><h2>", page)
    assert sections == ["tokens", "views", "heads", "rollout", "norms", "layers", "pca"]
    assert all(f"<a href='#{key}'>" in page for key in sections)


def test_report_without_model_says_how_to_add_norms(tiny_models):
    trace = at.capture(tiny_models["gpt2"], "hello there world, hello")
    page = at.report(trace, views=False).html
    assert "Pass the model" in page and "Interactive views left out" in page
    # A causal model's rollout and flow are charted for its last token by default.
    assert f"Output token: {trace.tokens[-1]} ({trace.num_tokens - 1})" in page
    assert page.count('<figure class="as-chart"') >= 9
    assert "data:image/png" not in page  # drawn in the page, not as pictures


def test_decoder_part_of_an_encoder_decoder_model(tiny_models):
    model = tiny_models["t5"]
    trace = at.capture(model, "hello there world", "hallo welt hallo")
    table = at.head_patterns(trace, part="decoder")
    assert table.scores.shape[:2] == trace.decoder_attentions.shape[:2]
    assert table.tokens == trace.decoder_tokens
    assert np.all(table.score("next") == 0)  # the decoder is causal
    with pytest.raises(at.AttnscopeError, match="self-attention"):
        at.head_patterns(trace, part="cross")


def test_pca_projects_on_the_top_eigenvectors_of_the_covariance(text_trace):
    states = text_trace.hidden_states[-1].astype(np.float64)  # (T, D)
    centred = states - states.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)  # ascending
    projection = at.pca(text_trace, -1)
    top = eigenvectors[:, ::-1][:, :2]  # (D, 2)
    expected = centred @ top
    signs = np.sign((projection.points * expected).sum(axis=0))  # a component's sign is free
    np.testing.assert_allclose(projection.points, expected * signs, atol=1e-6)
    np.testing.assert_allclose(projection.explained, eigenvalues[::-1][:2] / eigenvalues.sum(),
                               rtol=1e-6)
    # the sign convention: each component's largest weight over the hidden dimensions is positive
    components = top * signs  # (D, 2)
    assert (components[np.abs(components).argmax(axis=0), [0, 1]] > 0).all()


def test_missing_extras_say_how_to_install(text_trace, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scipy.sparse.csgraph", None)
    with pytest.raises(at.AttnscopeError, match=r"needs scipy"):
        at.attention_flow(text_trace, output=0)
