"""The interactive views in a real browser (Debian's Chromium driven by Playwright).

One browser serves the whole session; every page records its console messages, page errors,
dialogs and network requests, and each test asserts none of them went wrong.
"""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

import attnscope as at
from attnscope import compat
from attnscope.readable import token_labels
from attnscope.render import html as page_html
from attnscope.render.views import all_views
from tests.browser.pages import watch

pytestmark = pytest.mark.browser

HOSTILE = ["[CLS]", "<img src=x onerror=alert(1)>", "</script><script>alert(1)</script>",
           "&amp; \"quoted\" 'single'", "[SEP]"]


class Opened:
    """A page opened from a file, with what it logged and requested."""

    def __init__(self, browser, path, *, timeout_ms=10_000):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.log = watch(self.page)
        self.url = path.as_uri()
        start = time.perf_counter()
        self.page.goto(self.url)
        self.page.wait_for_function(
            "[...document.querySelectorAll('.attnscope-root')].every("
            "r => r.dataset.ready || r.dataset.error)", timeout=timeout_ms)
        self.seconds = time.perf_counter() - start

    def js(self, expression, arg=None):
        return self.page.evaluate(expression, arg)

    def pixels(self, selector, index=0):
        """(non-blank pixel count, checksum) of a canvas."""
        return tuple(self.js(
            """([sel, i]) => {
                const c = document.querySelectorAll(sel)[i];
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0, sum = 0;
                for (let k = 0; k < d.length; k += 4) {
                    if (d[k + 3] && (d[k] < 250 || d[k + 1] < 250 || d[k + 2] < 250)) n++;
                    sum = (sum * 31 + d[k] + 3 * d[k + 1] + 7 * d[k + 2] + d[k + 3]) % 1000000007;
                }
                return [n, sum];
            }""", [selector, index]))

    def state(self, kind):
        return self.js(f"document.querySelector('.attnscope-root').attnscope.views.{kind}.state")

    def point_at_cell(self, i, j):
        """Move the pointer over cell (query i, key j) of the model view's opened head, as
        zoomed."""
        self.js("""([i, j]) => {
            const v = document.querySelector('.attnscope-root').attnscope.views.model;
            const c = document.querySelector('.as-detail-canvas');
            const r = c.getBoundingClientRect();
            const g = v.state.geom, z = v.state.zoom;
            c.dispatchEvent(new MouseEvent('mousemove', {bubbles: true,
                clientX: r.left + g.margin + (j - z.j0 + 0.5) * g.cellW,
                clientY: r.top + g.margin + (i - z.i0 + 0.5) * g.cellH}));
        }""", [int(i), int(j)])

    def check_clean(self, allow_blobs=False):
        assert self.log.problems == []
        assert self.log.dialogs == []
        requests = [r for r in self.log.requests if not (allow_blobs and r.startswith("blob:"))]
        assert requests == [self.url], "the page requested something besides itself"
        assert self.js("document.querySelector('.attnscope-root').dataset.error") is None
        self.page.close()


def _lines(trace, layer, heads, *, rows=None, cols=None, causal=False, min_v=0.01):
    """How many lines the head view should draw: weights >= 0.01 as the page draws them
    (decoded from the page's codes)."""
    att = page_html.decode_attention(page_html.encode_attention(trace.attentions))
    att = att[layer][list(heads)]  # (h, T, T)
    keep = att >= min_v
    if causal:
        keep &= np.tril(np.ones(att.shape[1:], dtype=bool))
    if rows is not None:
        keep[:, [i for i in range(att.shape[1]) if i not in rows], :] = False
    if cols is not None:
        keep[:, :, [j for j in range(att.shape[2]) if j not in cols]] = False
    return int(keep.sum())


def test_head_view_draws_and_reacts(browser, seed_pair_trace, tmp_path):
    trace = seed_pair_trace
    page = Opened(browser, at.head_view(trace, layer=-1).save(tmp_path / "head.html"))
    st = page.state("head")
    assert st["drawn"] == _lines(trace, 5, range(12))
    blank = page.pixels(".as-hv-canvas")
    assert blank[0] > 1000, "the canvas is blank"

    page.page.click(".as-swatch[data-head='0']")  # hide head 0
    assert page.state("head")["drawn"] == _lines(trace, 5, range(1, 12))
    assert page.pixels(".as-hv-canvas") != blank

    page.page.dblclick(".as-swatch[data-head='3']")  # head 3 alone
    assert page.state("head")["drawn"] == _lines(trace, 5, [3])

    alone = page.pixels(".as-hv-canvas")
    page.page.select_option(".as-layer select", "0")
    assert page.state("head")["layer"] == 0
    assert page.state("head")["drawn"] == _lines(trace, 0, [3])
    assert page.pixels(".as-hv-canvas") != alone

    # sentence-pair filter: A -> B keeps queries of sentence A and keys of sentence B
    b = trace.sentence_b_start
    page.page.select_option(".as-filter select", "AB")
    assert page.state("head")["drawn"] == _lines(trace, 0, [3], rows=range(b),
                                                 cols=range(b, trace.num_tokens))
    page.page.select_option(".as-filter select", "all")

    # hovering query token 2 keeps only its lines
    page.page.hover(".as-hv-left .as-tok[data-index='2']")
    assert page.state("head")["hover"] == {"side": "q", "index": 2}
    assert page.state("head")["drawn"] == _lines(trace, 0, [3], rows=[2])
    page.page.mouse.move(1300, 10)
    assert page.state("head")["hover"] is None
    page.check_clean()


def test_head_view_causal_and_encoder_decoder(browser, tiny_models, tmp_path):
    gpt2 = at.capture(tiny_models["gpt2"], "the cat sat on the mat")
    page = Opened(browser, at.head_view(gpt2).save(tmp_path / "causal.html"))
    assert page.state("head")["drawn"] == _lines(gpt2, 1, range(4), causal=True)
    assert "Causal" in page.js("document.querySelector('.as-note').textContent")
    page.check_clean()

    t5 = at.capture(tiny_models["t5"], "the house is small", "das Haus ist klein")
    page = Opened(browser, at.head_view(t5).save(tmp_path / "t5.html"))
    options = page.js("[...document.querySelectorAll('.as-controls select')[0].options]"
                      ".map(o => o.value)")
    assert options == ["self", "decoder", "cross"]
    page.page.select_option(".as-controls select >> nth=0", "cross")
    left = page.js("[...document.querySelectorAll('.as-hv-left .as-tok')].map(n => n.textContent)")
    right = page.js("[...document.querySelectorAll('.as-hv-right .as-tok')]"
                    ".map(n => n.textContent)")
    # the page shows each token as the text it stands for (the tiny T5 is byte-level BPE)
    assert left == token_labels(t5.decoder_tokens, t5.decoder_special_mask)
    assert right == token_labels(t5.tokens, t5.special_mask)
    assert "Ġis" in t5.tokens and "is" in right
    assert page.pixels(".as-hv-canvas")[0] > 0
    page.check_clean()


def test_model_view_thumbnails_open_and_isolate(browser, seed_pair_trace, tmp_path):
    trace = seed_pair_trace
    page = Opened(browser, at.model_view(trace).save(tmp_path / "model.html"))
    assert page.js("document.querySelectorAll('.as-thumb').length") == 6 * 12
    before = page.pixels(".as-thumb", 2 * 12 + 3)
    assert before[0] > 0
    page.page.click(".as-thumb[data-layer='2'][data-head='3']")
    assert page.js("document.querySelector('.as-detail').hidden") is False
    assert page.js("document.querySelector('.as-detail-title').textContent").endswith(
        "layer 2, head 3")
    assert page.pixels(".as-detail-canvas")[0] > 1000

    page.page.hover(".as-tokstrip .as-tok[data-index='4']")
    assert page.state("model")["hover"] == 4
    after = page.pixels(".as-thumb", 2 * 12 + 3)
    assert after != before
    # every thumbnail row except token 4's is grey (232)
    rows = page.js("""() => {
        const c = document.querySelectorAll('.as-thumb')[27];
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const grey = [];
        for (let r = 0; r < c.height; r++) grey.push(d[(r * c.width) * 4] === 232 &&
                                                      d[(r * c.width) * 4 + 1] === 232);
        return grey;
    }""")
    assert rows == [r != 4 for r in range(trace.num_tokens)]
    page.page.mouse.move(5, 890)
    assert page.state("model")["hover"] is None
    page.check_clean()


def test_neuron_view_scores_follow_queries_and_keys(browser, qk_trace, tmp_path):
    trace = qk_trace
    view = at.neuron_view(trace, layer=3, head=5, query=2)
    page = Opened(browser, view.save(tmp_path / "neuron.html"))
    assert page.pixels(".as-nv-canvas")[0] > 1000
    q = trace.queries[3, 5, 2].astype(np.float16).astype(np.float64)
    k = trace.keys[3, 5].astype(np.float16).astype(np.float64)
    scale = 1 / np.sqrt(q.shape[0])
    np.testing.assert_allclose(page.state("neuron")["scores"], k @ q * scale, atol=2e-2)
    before = page.pixels(".as-nv-canvas")
    page.page.select_option(".as-query select", "7")
    scores = np.array(page.state("neuron")["scores"])
    assert page.state("neuron")["query"] == 7
    # the softmax of the shown scores is the model's attention row (BERT adds no bias here)
    softmax = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(softmax, trace.attentions[3, 5, 7], atol=1e-2)
    assert page.pixels(".as-nv-canvas") != before
    page.page.select_option(".as-layer select", "0")
    assert page.state("neuron")["layer"] == 0
    page.check_clean()


def test_neuron_view_without_queries_says_how(browser, seed_pair_trace, tmp_path):
    page = Opened(browser, at.neuron_view(seed_pair_trace).save(tmp_path / "n.html"))
    text = page.js("document.querySelector('.as-missing').textContent")
    assert "no query and key vectors" in text
    page.check_clean()


def test_hostile_tokens_are_text_and_run_nothing(browser, tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 1, 3, 5, 5))
    att = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    view = compat.head_view(tuple(att), HOSTILE, html_action="return")
    everything = all_views(view.trace)
    for name, v in (("head", view), ("all", everything)):
        page = Opened(browser, v.save(tmp_path / f"{name}.html"))
        shown = page.js("[...document.querySelectorAll('.as-hv-left .as-tok')]"
                        ".map(n => n.textContent)")
        assert shown == HOSTILE
        assert page.js("document.querySelectorAll('img').length") == 0
        assert page.js("document.querySelectorAll('script').length") == 2  # data + ours
        if name == "all":
            page.page.click("button.as-tab[data-kind='tokens']")
            cells = page.js("[...document.querySelectorAll('.as-tokcell')]"
                            ".map(n => n.textContent)")
            assert cells == HOSTILE
            page.page.click("button.as-tab[data-kind='model']")
            page.page.click(".as-thumb >> nth=0")
        page.check_clean()


def test_views_in_one_document_do_not_collide(browser, seed_pair_trace, tmp_path):
    fragments = [at.head_view(seed_pair_trace).fragment(), at.model_view(seed_pair_trace)
                 .fragment(), at.head_view(seed_pair_trace, layer=0).fragment()]
    doc = "<!DOCTYPE html><html><body>" + "<hr>".join(fragments) + "</body></html>"
    path = tmp_path / "notebook.html"
    path.write_text(doc, encoding="utf-8")
    page = Opened(browser, path)
    ids = page.js("[...document.querySelectorAll('.attnscope-root')].map(r => r.id)")
    assert len(set(ids)) == 3
    layers = page.js("[...document.querySelectorAll('.attnscope-root')]"
                     ".map(r => r.attnscope.views.head && r.attnscope.views.head.state.layer)")
    assert layers == [5, None, 0]
    # a click in the first view leaves the third alone
    page.page.click(".as-swatch[data-head='0'] >> nth=0")
    active = page.js("[...document.querySelectorAll('.attnscope-root')].filter(r => r.attnscope"
                     ".views.head).map(r => r.attnscope.views.head.state.active.size)")
    assert active == [11, 12]
    page.check_clean()


def test_notebook_iframe_renders(browser, seed_pair_trace, tmp_path):
    path = tmp_path / "cell.html"
    cell = at.model_view(seed_pair_trace)._repr_html_()
    path.write_text("<html><body>" + cell + "</body></html>", encoding="utf-8")
    page = browser.new_page()
    log = watch(page)
    page.goto(path.as_uri())
    frame = page.frames[1]
    frame.wait_for_selector(".attnscope-root[data-ready]", state="attached", timeout=120_000)
    assert frame.evaluate("document.querySelectorAll('.as-thumb').length") == 72
    assert log.problems == [] and log.dialogs == []
    page.close()


def _near(shown, value):
    """A weight shown to 3 significant digits is the Trace's value to 3 significant digits:
    from the page's float16 copy (relative error 2**-11), or, marked "≈", from its coded value
    (within the 1.95% encoding error)."""
    coded = shown.startswith("\u2248")
    error = page_html.WEIGHT_ERROR if coded else 2.0**-11
    unit = 10.0 ** (np.floor(np.log10(value)) - 2)
    return abs(float(shown.removeprefix("\u2248")) - value) <= unit / 2 + error * value + 1e-12


def test_readouts_show_the_models_number_or_mark_a_coded_one(browser, seed_pair_trace,
                                                             tmp_path, monkeypatch):
    trace = seed_pair_trace
    assert at.head_view(trace).exact  # a sentence's page carries float16 copies
    value = float(trace.attentions[1, 0, 3, 6])
    for exact in (True, False):
        view = at.head_view(trace, layer=1, heads=[0], exact=exact)
        assert ("exact" in view.payload()["parts"][0]["att"]) is exact
        page = Opened(browser, view.save(tmp_path / f"exact-{exact}.html"))
        page.page.wait_for_function("document.querySelector('.attnscope-root').dataset.exact")
        page.page.click(".as-hv-left .as-tok[data-index='3']")
        page.page.hover(".as-hv-right .as-tok[data-index='6']")
        shown = page.js("document.querySelectorAll('.as-tip div')[1].textContent").split(": ")[1]
        if exact:  # three significant digits of the model's number
            assert float(shown) == float(f"{float(np.float16(value)):.3g}"), (shown, value)
        else:  # the coded value, marked as approximate
            assert shown.startswith("\u2248") and _near(shown, value), (shown, value)
        page.check_clean()
    monkeypatch.setattr(page_html, "EXACT_LIMIT", 100)
    assert not at.model_view(trace).exact  # long pages stay compact by default
    monkeypatch.setattr(page_html, "DENSE_LIMIT", 100)
    with pytest.raises(at.AttnscopeError, match="strongest weights only"):
        at.model_view(trace, exact=True)


def test_head_view_tooltip_shows_each_heads_weight(browser, seed_pair_trace, tmp_path):
    trace = seed_pair_trace
    page = Opened(browser, at.head_view(trace, layer=1, heads=[0, 4]).save(tmp_path / "h.html"))
    page.page.wait_for_function("document.querySelector('.attnscope-root').dataset.exact")
    page.page.click(".as-hv-left .as-tok[data-index='3']")  # pin query 3
    assert page.state("head")["pinned"] == {"side": "q", "index": 3}
    page.page.hover(".as-hv-right .as-tok[data-index='6']")
    tip = page.js("[...document.querySelectorAll('.as-tip div')].map(d => d.textContent)")
    assert page.js("document.querySelector('.as-tip').hidden") is False
    assert tip[0].startswith(f"{trace.tokens[3]} \u2192 {trace.tokens[6]} (query 3, key 6)")
    for line, head in zip(tip[1:], [0, 4], strict=True):
        name, shown = line.split(": ")
        assert name == f"head {head}"
        assert _near(shown, float(trace.attentions[1, head, 3, 6]))
    assert page.js("document.querySelector('.as-head .as-readout').textContent").count("head") == 2
    page.page.keyboard.press("Escape")
    page.check_clean()


def test_model_view_tooltip_zoom_pan_and_contrast(browser, seed_pair_trace, tmp_path):
    trace = seed_pair_trace
    page = Opened(browser, at.model_view(trace).save(tmp_path / "m.html"))
    page.page.wait_for_function("document.querySelector('.attnscope-root').dataset.exact")
    grid_box = page.page.locator(".as-grid").bounding_box()
    page.page.click(".as-thumb[data-layer='4'][data-head='7']")
    # the opened head lies over the grid: the grid does not move
    assert page.page.locator(".as-grid").bounding_box() == grid_box
    shown = 0
    for i, j in [(2, 5), (0, 0), (7, 12), (11, 3)]:
        page.point_at_cell(i, j)
        tip = page.js("[...document.querySelectorAll('.as-tip div')].map(d => d.textContent)")
        assert tip[0] == f"query {i}: {trace.tokens[i]}" and tip[1] == f"key {j}: {trace.tokens[j]}"
        assert _near(tip[2].removeprefix("weight "), float(trace.attentions[4, 7, i, j]))
        shown += 1
    assert shown == 4

    # zoom in twice, pan, zoom back out: the visible range follows
    full = page.state("model")["zoom"]
    assert full == {"i0": 0, "i1": 13, "j0": 0, "j1": 13}
    page.page.click(".as-zoom-in")
    zoomed = page.state("model")["zoom"]
    assert zoomed["i1"] - zoomed["i0"] < 13 and zoomed["j1"] - zoomed["j0"] < 13
    assert page.js("document.querySelector('.as-range').textContent").startswith(
        f"queries {zoomed['i0']}\u2013{zoomed['i1'] - 1}")
    page.page.focus(".as-detail-canvas")
    page.page.keyboard.press("ArrowDown")
    panned = page.state("model")["zoom"]
    assert panned["i0"] > zoomed["i0"]
    assert panned["i1"] - panned["i0"] == zoomed["i1"] - zoomed["i0"]
    labels = page.state("model")["labels"]
    assert labels["query"] == panned["i1"] - panned["i0"]  # room for every label when zoomed
    page.page.click(".as-zoom-reset")
    assert page.state("model")["zoom"] == full

    # contrast: a logarithmic scale lifts small weights, and the colour bar says so
    before = page.pixels(".as-thumb", 0)
    page.page.select_option(".as-scale select", "log")
    assert page.pixels(".as-thumb", 0) != before
    assert page.js("document.querySelector('.as-cb-lo').textContent").startswith("\u2264")
    page.page.keyboard.press("Escape")
    assert page.js("document.querySelector('.as-detail').hidden") is True
    page.check_clean()


def test_keyboard_reaches_every_control(browser, seed_pair_trace, tmp_path):
    page = Opened(browser, all_views(seed_pair_trace).save(tmp_path / "all.html"))
    reached = []
    for _ in range(40):
        page.page.keyboard.press("Tab")
        reached.append(page.js("""(() => { const a = document.activeElement;
            const label = a.closest('label');
            return (label ? label.className + ' ' : '') + a.className + '|'
                + (a.dataset.head || a.dataset.kind || a.dataset.index || '')
                + '|' + getComputedStyle(a).outlineStyle; })()"""))
    names = " ".join(reached)
    for needed in ("as-tab|model", "as-swatch|0", "as-export", "as-layer", "as-topk"):
        assert needed in names, needed
    assert [e for e in reached if e.startswith("as-tok") and "|0|" in e]  # the first token
    for item in reached:  # focus is visible on every control reached (the body aside)
        if item.startswith("attnscope-page"):
            continue
        assert not item.endswith("|none"), item
    # arrows move between heads and between tokens, Enter pins a token
    page.page.focus(".as-swatch[data-head='0']")
    page.page.keyboard.press("ArrowRight")
    assert page.js("document.activeElement.dataset.head") == "1"
    page.page.keyboard.press("Enter")  # hides head 1
    assert page.js("document.querySelector('.attnscope-root').attnscope.views.head.state"
                   ".active.has(1)") is False
    page.page.focus(".as-hv-left .as-tok[data-index='0']")
    page.page.keyboard.press("ArrowDown")
    page.page.keyboard.press("ArrowDown")
    assert page.js("document.activeElement.dataset.index") == "2"
    page.page.keyboard.press("Enter")
    assert page.state("head")["pinned"] == {"side": "q", "index": 2}

    # the model view: arrows move between thumbnails, Enter opens, Escape closes
    page.page.click("button.as-tab[data-kind='model']")
    page.page.focus(".as-thumb[data-layer='0'][data-head='0']")
    page.page.keyboard.press("ArrowDown")
    page.page.keyboard.press("ArrowRight")
    assert page.js("[document.activeElement.dataset.layer, document.activeElement.dataset.head]"
                   ) == ["1", "1"]
    page.page.keyboard.press("Enter")
    assert page.js("document.querySelector('.as-detail').hidden") is False
    assert page.js("document.querySelector('.as-detail-title').textContent").endswith(
        "layer 1, head 1")
    page.page.keyboard.press("Escape")
    assert page.js("document.querySelector('.as-detail').hidden") is True
    assert page.js("document.activeElement.dataset.layer") == "1"  # focus returns to the grid
    page.check_clean()


def test_export_png_from_the_page(browser, seed_pair_trace, tmp_path):
    page = Opened(browser, at.head_view(seed_pair_trace).save(tmp_path / "h.html"))
    with page.page.expect_download() as info:
        page.page.click(".as-head .as-export")
    target = tmp_path / "export.png"
    info.value.save_as(target)
    assert target.read_bytes().startswith(b"\x89PNG")
    assert info.value.suggested_filename == "attention-layer5.png"
    page.check_clean(allow_blobs=True)


def test_512_tokens_open_and_leaving_a_token_restores_the_drawing(browser, tmp_path):
    # BERT-base shape: 12 layers x 12 heads x 512 x 512, softmax of random logits
    rng = np.random.default_rng(1)
    att = rng.standard_normal((12, 12, 512, 512), dtype=np.float32)
    np.exp(att, out=att)
    att /= att.sum(-1, keepdims=True)
    tokens = ["[CLS]"] + [f"w{i}" for i in range(510)] + ["[SEP]"]
    view = compat.model_view(tuple(att[:, None]), tokens, html_action="return")
    page = Opened(browser, all_views(view.trace).save(tmp_path / "big.html"), timeout_ms=30_000)
    complete = "document.querySelector('.attnscope-root').attnscope.views.head.state.complete"
    page.page.wait_for_function(complete, timeout=30_000)
    full = page.pixels(".as-hv-canvas")
    assert full[0] > 10_000
    # hover a token, then leave it: timed inside the page, to the frame after the event
    timed = """async ([what, i]) => {
        const node = document.querySelector(`.as-hv-left .as-tok[data-index='${i}']`);
        const t0 = performance.now();
        node.dispatchEvent(new MouseEvent(what, {bubbles: true}));
        await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
        return performance.now() - t0;
    }"""
    hover_ms = page.js(timed, ["mouseover", 200])
    assert page.state("head")["hover"] == {"side": "q", "index": 200}
    assert page.pixels(".as-hv-canvas") != full
    leave_ms = page.js(timed, ["mouseout", 200])
    assert page.state("head")["hover"] is None
    assert page.pixels(".as-hv-canvas") == full  # the kept drawing, not a redraw
    # generous bounds for a busy test machine (bench/views.py measures the real figures;
    # leaving a token used to take 81 s here)
    assert hover_ms < 2000 and leave_ms < 1000, (hover_ms, leave_ms)
    page.page.click("button.as-tab[data-kind='model']")
    page.page.wait_for_function("document.querySelectorAll('.as-thumb').length === 144")
    assert page.pixels(".as-thumb", 0)[0] > 0
    page.page.click(".as-thumb >> nth=0")
    assert page.pixels(".as-detail-canvas")[0] > 0
    page.check_clean()


def test_long_input_pages_keep_strong_weights_and_say_what_is_not_kept(browser, tmp_path,
                                                                       monkeypatch):
    # the representation of 2048-token inputs, forced here on 300 tokens
    monkeypatch.setattr(page_html, "DENSE_LIMIT", 0)
    rng = np.random.default_rng(4)
    att = np.exp(rng.normal(size=(2, 3, 300, 300)) * 2).astype(np.float32)
    att /= att.sum(-1, keepdims=True)
    tokens = [f"w{i}" for i in range(300)]
    view = compat.head_view(tuple(att[:, None]), tokens, html_action="return")
    everything = all_views(view.trace)
    spec = everything.payload()["parts"][0]["att"]
    assert spec["dtype"] == "log8-sparse"
    threshold = np.frombuffer(base64.b64decode(spec["threshold"]), "<f4").reshape(2, 3, 300)
    page = Opened(browser, everything.save(tmp_path / "long.html"))
    page.page.wait_for_function("document.querySelector('.attnscope-root').dataset.exact")
    assert page.state("head")["drawn"] == 3 * 300  # the strongest line of every token
    page.page.click("button.as-tab[data-kind='model']")
    page.page.wait_for_function("document.querySelectorAll('.as-thumb').length === 6")
    assert page.pixels(".as-thumb", 4)[0] > 0
    page.page.click(".as-thumb[data-layer='1'][data-head='1']")
    for i in (5, 150, 299):
        j_strong = int(att[1, 1, i].argmax())
        j_weak = int(att[1, 1, i].argmin())
        for j, strong in ((j_strong, True), (j_weak, False)):
            page.js("document.querySelector('.attnscope-root').attnscope.views.model.zoomBy(1)")
            page.point_at_cell(i, j)
            weight = page.js("document.querySelectorAll('.as-tip div')[2].textContent")
            assert weight.startswith("weight ")
            if strong:
                assert _near(weight.split()[1], float(att[1, 1, i, j]))
            else:
                limit = f"{threshold[1, 1, i]:.3g}"
                assert "not kept: below" in weight and float(weight.split("below ")[1]
                                                              .split(";")[0]) == float(limit)
    page.check_clean()


def test_sentence_filter_combined_heads_and_coloured_text(browser, qk_trace, tmp_path):
    trace = qk_trace
    b, n = trace.sentence_b_start, trace.num_tokens
    page = Opened(browser, all_views(trace).save(tmp_path / "all.html"))
    page.page.click("button.as-tab[data-kind='model']")
    page.page.wait_for_function("document.querySelectorAll('.as-thumb').length === 72")
    page.page.wait_for_function("document.querySelector('.attnscope-root').dataset.exact")
    # sentence A -> B: thumbnails show queries of A against keys of B, and so does the
    # opened head
    page.page.select_option(".as-model .as-filter select", "AB")
    size = page.js("[document.querySelector('.as-thumb').width, "
                   "document.querySelector('.as-thumb').height]")
    assert size == [n - b, b]
    page.page.click(".as-thumb[data-layer='2'][data-head='1']")
    assert page.state("model")["zoom"] == {"i0": 0, "i1": b, "j0": b, "j1": n}

    # every head of a layer in one image, each head in its own colour
    page.page.keyboard.press("Escape")
    page.page.click(".as-combine")
    assert page.js("document.querySelectorAll('.as-combined').length") == 6
    hues = page.js("""() => {
        const c = document.querySelectorAll('.as-combined')[0];
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let k = 0; k < d.length; k += 4) seen.add(d[k] + ',' + d[k + 1] + ',' + d[k + 2]);
        return seen.size;
    }""")
    assert hues > 5

    # the running text coloured by the attention token 3 pays, averaged over every head,
    # then in the opened head alone
    page.page.select_option(".as-model .as-filter select", "all")
    page.page.click(".as-tokstrip .as-tok[data-index='3']")
    mean = trace.attentions[:, :, 3, :].mean(axis=(0, 1))
    np.testing.assert_allclose(page.state("model")["sourceWeights"], mean,
                               rtol=page_html.WEIGHT_ERROR, atol=1e-6)
    title = page.js("document.querySelectorAll('.as-tokstrip .as-tok')[0].title")
    assert title.startswith(f"{trace.tokens[3]} \u2192 {trace.tokens[0]}: ")
    page.page.click(".as-thumb[data-layer='4'][data-head='2']")
    np.testing.assert_allclose(page.state("model")["sourceWeights"], trace.attentions[4, 2, 3],
                               rtol=page_html.WEIGHT_ERROR, atol=1e-6)
    colours = page.js("[...document.querySelectorAll('.as-tokstrip .as-tok')]"
                      ".map(t => t.style.backgroundColor)")
    assert len(set(colours)) > 3

    # the neuron view keeps the keys of one sentence
    page.page.click("button.as-tab[data-kind='neuron']")
    page.page.select_option(".as-neuron .as-filter select", "B")
    scores = page.state("neuron")["scores"]
    assert all(s is None for s in scores[:b]) and all(s is not None for s in scores[b:])
    page.check_clean()


def test_difference_of_two_traces_on_a_diverging_scale(browser, embedded, tmp_path):
    a = at.capture(embedded, "the cat sat on the mat")
    b = at.capture(embedded, "the dog lay on the rug")
    assert a.num_tokens == b.num_tokens
    diff = a.attentions - b.attentions  # (L, H, T, T), signed
    view = at.model_view(a, minus=b)
    page = Opened(browser, view.save(tmp_path / "diff.html"))
    page.page.wait_for_function("document.querySelector('.attnscope-root').dataset.exact")
    assert page.js("document.querySelector('.as-cb-lo').textContent").startswith("\u2212")
    layer, head = np.unravel_index(np.abs(diff).max(axis=(2, 3)).argmax(), diff.shape[:2])
    page.page.click(f".as-thumb[data-layer='{layer}'][data-head='{head}']")
    flat = np.argsort(np.abs(diff[layer, head]).ravel())[::-1][:4]  # the largest differences
    for i, j in zip(*np.unravel_index(flat, diff.shape[2:]), strict=True):
        page.point_at_cell(i, j)
        shown = page.js("document.querySelectorAll('.as-tip div')[2].textContent").split()[1]
        value = float(diff[layer, head, i, j])
        assert np.sign(float(shown)) == np.sign(value)
        assert _near(shown.lstrip("-"), abs(value))
    # red where the first text attends more, blue where the second does
    colours = page.js("""() => {
        const c = document.querySelector('.as-detail-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let red = 0, blue = 0;
        for (let k = 0; k < d.length; k += 4) {
            if (d[k] > d[k + 2] + 8) red++;
            if (d[k + 2] > d[k] + 8) blue++;
        }
        return [red, blue];
    }""")
    assert colours[0] > 0 and colours[1] > 0
    with pytest.raises(at.AttnscopeError, match="same layers, heads and length"):
        at.model_view(a, minus=at.capture(embedded, "a much longer sentence than the first one"))
    page.check_clean()


def test_export_svg_has_the_lines_and_tokens_as_text(browser, tmp_path):
    att = np.full((1, 1, 2, 3, 3), 0.0, dtype=np.float32)
    att[..., 0, 0] = att[..., 1, 1] = att[..., 2, 2] = 0.7
    att[..., 0, 1] = att[..., 1, 2] = att[..., 2, 0] = 0.3
    view = compat.head_view(tuple(att), HOSTILE[:3], html_action="return")
    page = Opened(browser, view.save(tmp_path / "h.html"))
    with page.page.expect_download() as info:
        page.page.click(".as-export-svg")
    target = tmp_path / "export.svg"
    info.value.save_as(target)
    text = target.read_text(encoding="utf-8")
    assert text.startswith("<svg") and text.count("<line") == 2 * 6  # 2 heads x 6 weights
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "<img" not in text
    page.check_clean(allow_blobs=True)


def test_model_view_measure_selector_shows_per_layer_scores(browser, tiny_models, tmp_path):
    """The model view's selector switches from raw attention to a context-mixing measure's
    per-layer scores (one thumbnail a layer); the opened layer's tooltips give the Python
    numbers, as shares of each row; nothing is fetched."""
    model = tiny_models["gpt2"]
    trace = at.capture(model, "the cat sat on the mat")
    view = at.model_view(trace, measure="alti", model=model)
    page = Opened(browser, view.save(tmp_path / "mix.html"))
    names = page.js("[...document.querySelectorAll('.as-part option')].map(o => o.textContent)")
    assert names == ["Raw attention", "ALTI (per layer)"]
    assert page.js("document.querySelectorAll('.as-thumb').length") == 2 * 4
    page.page.select_option(".as-part select", "mixing")
    page.page.wait_for_function("document.querySelectorAll('.as-thumb').length === 2")
    assert page.js("document.querySelector('.as-thumb').title") == "layer 0: ALTI (per layer)"
    scores = at.context_mixing(trace, model, "alti", progress=False).scores
    page.page.click(".as-thumb[data-layer='1']")
    assert page.js("document.querySelector('.as-detail-title').textContent") == \
        "ALTI (per layer): layer 1"
    for i, j in [(3, 1), (5, 5), (4, 0)]:
        page.point_at_cell(i, j)
        tip = page.js("[...document.querySelectorAll('.as-tip div')].map(d => d.textContent)")
        value = tip[2].removeprefix("score ").removesuffix(" (share of the row)")
        assert _near(value, float(scores[1, i, j]))
    # back to raw attention: a head's weights again
    page.page.keyboard.press("Escape")
    page.page.select_option(".as-part select", "self")
    page.page.wait_for_function("document.querySelectorAll('.as-thumb').length === 8")
    page.check_clean()


def test_model_view_measure_bad_input(tiny_models):
    trace = at.capture(tiny_models["gpt2"], "the cat sat")
    with pytest.raises(at.AttnscopeError, match="valid methods: value_zeroing"):
        at.model_view(trace, measure="lrp", model=tiny_models["gpt2"])
    with pytest.raises(at.AttnscopeError, match="measure= needs model="):
        at.model_view(trace, measure="alti")
