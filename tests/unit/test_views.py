"""Views without a browser: payload encoding, safe JSON, saving, errors, compat, the CLI."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import attnscope as at
from attnscope import compat
from attnscope.cli import main
from attnscope.render import html as page_html

ROOT = Path(__file__).resolve().parents[2]


def _softmax_attention(layers, heads, tokens, seed=0):
    logits = np.random.default_rng(seed).normal(size=(layers, heads, tokens, tokens))
    att = np.exp(logits)
    return (att / att.sum(-1, keepdims=True)).astype(np.float32)  # (L, H, T, T)


def _faithful(att, spec):
    """(largest row-mass loss, largest relative error above 1e-4, zeros above 1e-4)."""
    shown = page_html.decode_attention(spec)
    big = att > 1e-4
    rel = np.abs(shown[big] - att[big]) / att[big]
    return np.abs(shown.sum(-1) - att.sum(-1)).max(), rel.max(), int((shown[big] == 0).sum())


def test_encoding_keeps_every_weight_and_row_mass_on_random_attention():
    att = _softmax_attention(2, 3, 300)
    att[0, 0, 5] = 0.0  # a masked row stays empty
    att[0, 1] = np.tril(att[0, 1])  # causal zeros stay zero
    spec = page_html.encode_attention(att)
    assert spec["shape"] == [2, 3, 300, 300] and spec["dtype"] == "log8"
    mass, rel, zeros = _faithful(att, spec)
    assert mass <= 0.005 * att.sum(-1).max() and rel <= 0.02 and zeros == 0
    shown = page_html.decode_attention(spec)
    assert (shown[att == 0] == 0).all()
    assert rel <= page_html.WEIGHT_ERROR + 1e-6
    # the code is no finer than the bound needs: most of its steps are taken
    assert rel > 0.9 * page_html.WEIGHT_ERROR
    # weights below the floor share their row's mean: one value per row
    small = (att > 0) & (att < page_html.FLOOR)
    assert small.any()
    for row in zip(*np.nonzero(small.any(-1)), strict=True):
        assert np.ptp(shown[row][small[row]]) == 0


def test_encoding_keeps_real_attention_on_long_text(embedded):
    # real prose (the project's own documentation), 384 tokens through the embedded model
    text = re.sub(r"[`#|*]", " ", (ROOT / "docs" / "scratch.md").read_text(encoding="utf-8"))
    ids = embedded.tokenizer(text)["input_ids"][1:383]
    trace = at.capture(embedded, embedded.tokenizer.decode(ids))
    att = trace.attentions
    assert att.shape[-1] >= 380
    spec = page_html.encode_attention(att)
    mass, rel, zeros = _faithful(att, spec)
    assert mass <= 0.005 and rel <= 0.02 and zeros == 0
    # the old 8-bit linear code lost a large share of each row: this text is a real test
    assert (1 - (np.rint(att * 255) / 255).sum(-1)).max() > 0.05


@pytest.mark.parametrize("causal", [False, True])
def test_long_inputs_keep_each_rows_strongest_weights_and_its_mass(causal):
    att = _softmax_attention(2, 2, 400, seed=3)
    if causal:
        att = np.tril(att)
        att /= att.sum(-1, keepdims=True)
    spec = page_html.encode_attention(att, causal=causal, dense_limit=0)
    assert spec["dtype"] == "log8-sparse"
    shown = page_html.decode_attention(spec)
    threshold = np.frombuffer(base64.b64decode(spec["threshold"]), "<f4").reshape(2, 2, 400)
    kept = (att >= threshold[..., None]) & (att > 0)
    # kept weights within 1.95%, the rest below the threshold, each row's mass kept
    rel = np.abs(shown[kept] - att[kept]) / att[kept]
    assert rel.max() <= page_html.WEIGHT_ERROR + 1e-6
    assert (att[~kept] < threshold[..., None].repeat(400, -1)[~kept]).all()
    np.testing.assert_allclose(shown.sum(-1), att.sum(-1), rtol=2e-3)
    # about `keep` weights a row, always the largest ones
    counts = kept.sum(-1)
    assert 16 <= np.median(counts[..., 64:]) <= 96
    top = np.argmax(att, axis=-1)
    assert np.take_along_axis(kept, top[..., None], -1).all()
    if causal:
        assert (shown[..., np.triu_indices(400, 1)[0], np.triu_indices(400, 1)[1]] == 0).all()


def test_float16_payload_round_trips():
    values = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32) * 10
    spec = page_html.encode_float16(values)
    back = np.frombuffer(base64.b64decode(spec["b64"]), dtype="<f2").reshape(values.shape)
    np.testing.assert_allclose(back, values, rtol=1e-3, atol=1e-3)


def test_script_json_cannot_close_the_script_element():
    data = {"tokens": ["</script><script>alert(1)</script>", "a & b", "\u2028"]}
    text = page_html.script_json(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == data


def test_page_is_self_contained_and_compact(seed_pair_trace):
    page = at.model_view(seed_pair_trace).html
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link\b", page)
    # (the SVG namespace is a name for exported drawings, never fetched)
    unfetched = page.replace('"http://www.w3.org/2000/svg"', "")
    assert "http://" not in unfetched and "https://" not in unfetched
    assert page.count("<script") == 2  # the data and the page script


def test_bytes_per_weight_at_bert_base_shape():
    att = _softmax_attention(12, 12, 128)
    page = compat.model_view(tuple(att[:, None]), [f"t{i}" for i in range(128)],
                             html_action="return").html
    assert len(page.encode()) / att.size <= 2.0


def test_views_save_html_and_figures(seed_pair_trace, tmp_path):
    head = at.head_view(seed_pair_trace, layer=2, heads=[0, 5])
    assert head.save(tmp_path / "h.html").read_text(encoding="utf-8") == head.html
    png = head.save(tmp_path / "h.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    svg = at.model_view(seed_pair_trace).save(tmp_path / "m.svg").read_text(encoding="utf-8")
    assert "<svg" in svg
    frame = head._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in frame
    assert "<script" not in frame  # the page is escaped inside the attribute


def test_two_views_get_different_roots(seed_pair_trace):
    a, b = at.head_view(seed_pair_trace).fragment(), at.head_view(seed_pair_trace).fragment()
    id_a = re.search(r'id="(attnscope-[0-9a-f]+)"', a).group(1)
    id_b = re.search(r'id="(attnscope-[0-9a-f]+)"', b).group(1)
    assert id_a != id_b


@pytest.mark.parametrize(("call", "message"), [
    (lambda t: at.head_view(t, layer=9), "layer 9 is out of range"),
    (lambda t: at.head_view(t, heads=[12]), "head 12 is out of range"),
    (lambda t: at.head_view(t, part="cross"), "Attention part 'cross' is not in this trace"),
    (lambda t: at.neuron_view(t, query=40), "query token 40 is out of range"),
    (lambda t: at.model_view(t, theme="blue"), "Unknown theme"),
    (lambda t: at.head_view(t).save("x.gif"), "use .html, .png, .svg or .pdf"),
    (lambda t: at.head_view(t).save("/no/such/dir/x.html"), "does not exist"),
    (lambda t: at.neuron_view(t).figure(), "no query and key vectors"),
    (lambda t: at.head_view(np.zeros((1, 1, 2, 2))), "needs a Trace"),
])
def test_mistakes_get_one_sentence(seed_pair_trace, call, message):
    with pytest.raises(at.AttnscopeError, match=re.escape(message)):
        call(seed_pair_trace)


def test_neuron_figure_with_queries_and_keys(seed_pair_trace, tmp_path):
    rng = np.random.default_rng(2)
    shape = (6, 12, seed_pair_trace.num_tokens, 32)
    trace = seed_pair_trace.replace(queries=rng.normal(size=shape).astype(np.float32),
                                    keys=rng.normal(size=shape).astype(np.float32))
    view = at.neuron_view(trace, layer=1, head=2, query=3)
    qk = view.payload()["qk"]
    assert qk["q"]["shape"] == list(shape) and qk["scales"] == [1 / np.sqrt(32)] * 6
    assert view.save(tmp_path / "n.png").stat().st_size > 1000


def test_compat_accepts_bertviz_tuples_of_torch_and_numpy():
    att = _softmax_attention(4, 3, 6)
    tokens = ["[CLS]", "\u0120the", "cat", "sat", "down", "[SEP]"]
    as_torch = tuple(torch.from_numpy(att[layer][None]) for layer in range(4))  # 4 x (1, H, T, T)
    view = compat.head_view(as_torch, tokens, sentence_b_start=3, layer=2, heads=[1],
                            html_action="return")
    assert view.trace.tokens[1] == " the"  # prettified
    np.testing.assert_array_equal(view.trace.attentions, att)
    assert view.layer == 2 and view.heads == [1] and view.trace.sentence_b_start == 3
    model = compat.model_view(tuple(att[:, None]), tokens, include_layers=[1, 3],
                              include_heads=[0, 2], html_action="return")
    payload = model.payload()
    assert payload["parts"][0]["layers"] == [1, 3] and payload["parts"][0]["heads"] == [0, 2]
    assert payload["theme"] == "dark"
    np.testing.assert_array_equal(model.trace.attentions, att[[1, 3]][:, [0, 2]])
    assert compat.head_view(as_torch, tokens) is not None  # no notebook: the view comes back


def test_compat_encoder_decoder_and_mistakes():
    enc, dec = _softmax_attention(2, 2, 5), _softmax_attention(2, 2, 3)
    cross = np.full((2, 1, 2, 3, 5), 0.2, dtype=np.float32)
    view = compat.head_view(encoder_attention=tuple(enc[:, None]),
                            decoder_attention=tuple(dec[:, None]), cross_attention=tuple(cross),
                            encoder_tokens=list("abcde"), decoder_tokens=list("xyz"),
                            html_action="return")
    assert view.trace.parts == ("self", "decoder", "cross")
    assert [p["name"] for p in view.payload()["parts"]] == ["self", "decoder", "cross"]
    with pytest.raises(at.AttnscopeError, match="covers 5 tokens but 4 tokens"):
        compat.head_view(tuple(enc[:, None]), list("abcd"))
    with pytest.raises(at.AttnscopeError, match="batch of 2 inputs"):
        compat.model_view(tuple(np.stack([enc, enc], 1)), list("abcde"))
    with pytest.raises(at.AttnscopeError, match="html_action"):
        compat.head_view(tuple(enc[:, None]), list("abcde"), html_action="show")


def test_cli_view_writes_page_and_figures(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "page.html"
    status = main(["view", "the cat sat", "on the mat", "--model", str(tiny_dirs["bert"]),
                   "-o", str(out), "--png"])
    assert status == 0
    page = out.read_text(encoding="utf-8")
    assert '"kinds":["head","model","neuron","tokens"]' in page
    for name in ("head", "model"):
        assert (tmp_path / f"page-{name}.png").read_bytes().startswith(b"\x89PNG")
    assert main(["view", "x", "-o", str(tmp_path / "page.txt")]) == 2
    assert "must end in .html" in capsys.readouterr().err
    # float16 copies of the weights for readouts: by default on a sentence's page
    assert '"exact":[' in page
    lean = tmp_path / "lean.html"
    assert main(["view", "the cat sat", "--model", str(tiny_dirs["bert"]), "-o", str(lean),
                 "--no-exact"]) == 0
    assert '"exact":[' not in lean.read_text(encoding="utf-8")


def test_base85_text_round_trips_and_needs_no_escaping():
    rng = np.random.default_rng(4)
    for size in [*range(12), 4099]:
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        text = page_html._to_base85(data)
        assert len(text) == size + (size + 3) // 4  # 5 characters for 4 bytes
        assert page_html._from_base85(text) == data
    assert page_html._from_base85(page_html._to_base85(b"\xff" * 7)) == b"\xff" * 7
    assert page_html.script_json(page_html.BASE85) == f'"{page_html.BASE85}"'
