"""The explorer end to end: a real ``attnscope serve`` process, driven in Chromium.

Type a text and run it, see the views drawn, sort the head table and click a head, open the
explain panel on a cell and check its numbers against ``at.explain``, compute attention flow,
compare two texts, reload a shared URL, download the page. Every page records its console
errors and requests: none may fail, and none may leave the explorer's own address.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

import attnscope as at
from tests.browser.pages import watch

pytestmark = pytest.mark.browser

TEXT = "The animal didn't cross the street because it was too tired."
TEXT_B = "The animal didn't cross the street because it was too wide."


class Explorer:
    """One tab on the explorer, with what it logged and requested."""

    def __init__(self, browser, url: str, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.log = watch(self.page)
        self.page.goto(url)
        self.page.wait_for_function("document.body.dataset.ready === '1'")

    def js(self, expression, arg=None):
        return self.page.evaluate(expression, arg)

    def wait_views(self, selector="#views") -> None:
        self.page.wait_for_function(
            "sel => { const r = document.querySelector(sel + ' .attnscope-root');"
            " return r && (r.dataset.ready || r.dataset.error); }", arg=selector)
        assert self.js(f"document.querySelector('{selector} .attnscope-root').dataset.error"
                       ) is None

    def view_state(self, kind):
        return self.js(f"document.querySelector('#views .attnscope-root')"
                       f".attnscope.views.{kind}.state")

    def canvas_ink(self, selector) -> int:
        """How many pixels of a canvas are not blank."""
        return self.js("""sel => {
            const c = document.querySelector(sel);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let k = 0; k < d.length; k += 4)
                if (d[k + 3] && (d[k] < 250 || d[k + 1] < 250 || d[k + 2] < 250)) n++;
            return n; }""", selector)

    def check_clean(self) -> None:
        assert self.log.problems == [] and self.log.dialogs == []
        outside = [u for u in self.log.requests if not u.startswith((self.base, "data:", "blob:"))]
        assert outside == [], "the explorer requested something outside itself"
        self.context.close()


@pytest.fixture(scope="module")
def qkv_trace(embedded):
    return at.capture(embedded, TEXT, qkv=True)


def test_type_run_explain_flow_and_share(browser, explorer_server, qkv_trace):
    trace = qkv_trace
    ex = Explorer(browser, explorer_server.url, explorer_server.url)
    page = ex.page
    # the model picker offers exactly the served model
    assert ex.js("[...document.querySelectorAll('#model option')].map(o => o.value)") == [
        at.DEFAULT_MODEL_NAME]

    page.fill("#text", TEXT)
    page.press("#text", "Enter")  # Enter runs
    ex.wait_views()
    page.wait_for_selector("#heads-table tbody tr")
    # the head view is drawn: the model's tokens down both sides, lines on the canvas
    shown = ex.js("[...document.querySelectorAll('#views .as-hv-left .as-tok')]"
                  ".map(n => n.textContent)")
    assert shown == list(trace.tokens)
    assert ex.view_state("head")["drawn"] > 100
    assert ex.canvas_ink("#views .as-hv-canvas") > 1000
    assert "head=" not in page.url and parse_qs(urlparse(page.url).query)["text"] == [TEXT]

    # the head table: 72 heads; sorting by "previous" puts the previous-token head first
    table = at.head_patterns(trace)
    assert ex.js("document.querySelectorAll('#heads-table tbody tr').length") == 72
    page.click("#heads-table th[data-key='previous']")
    best = table.best("previous", 1)[0]
    first = ex.js("(() => { const r = document.querySelector('#heads-table tbody tr');"
                  " return [Number(r.dataset.layer), Number(r.dataset.head),"
                  " r.querySelector('[data-key=label]').textContent]; })()")
    assert first == [best[0], best[1], str(table.labels[best[0], best[1]])]

    # clicking that head shows it alone, and the URL says which
    page.click("#heads-table tbody tr:first-child")
    page.wait_for_function(f"location.search.includes('head={best[1]}')")
    ex.wait_views()
    state = ex.view_state("head")
    assert state["layer"] == best[0]
    assert ex.js("[...document.querySelectorAll('#views .as-swatch:not(.as-off)')]"
                 ".map(s => Number(s.dataset.head))") == [best[1]]

    # explain: open the head in the model view and click the cell (query 10 "it", key 2)
    query, key = 10, 2
    assert trace.tokens[query] == "it"
    page.click("#views .as-tab[data-kind='model']")
    page.click(f"#views .as-thumb[data-layer='{best[0]}'][data-head='{best[1]}']")
    box = page.locator("#views .as-detail-canvas").bounding_box()
    n = trace.num_tokens
    geom = ex.view_state("model").get("geom")  # where the view says its cells are, if it does
    if geom:
        margin, cell_w, cell_h = geom["margin"], geom["cellW"], geom["cellH"]
    else:  # square cells of up to 22 px in 560 px, after a margin for the labels
        cell_w = cell_h = max(1, min(22, 560 // n))
        margin = box["width"] - n * cell_w
    page.mouse.click(box["x"] + margin + (key + 0.5) * cell_w,
                     box["y"] + margin + (query + 0.5) * cell_h)
    page.wait_for_selector("#explain[data-query] tr.ex-selected")
    assert ex.js("[...'layer head query key'.split(' ')].map("
                 "k => Number(document.querySelector('#explain').dataset[k]))") == [
        best[0], best[1], query, key]
    expected = at.explain(trace, best[0], best[1], query)
    for field in ("dots", "scores", "weights", "model_weights"):
        shown = ex.js(f"[...document.querySelectorAll('#explain td[data-field={field}]')]"
                      ".map(td => Number(td.textContent))")
        np.testing.assert_allclose(shown, getattr(expected, field), atol=1.1e-4, rtol=0,
                                   err_msg=field)
    formula = page.text_content("#explain .ex-formula")
    assert f"scale = {expected.scale:.6f}" in formula
    assert f"q·k = {expected.dots[key]:.4f}" in formula
    assert f"softmax over the keys = {expected.weights[key]:.4f}" in formula

    # attention flow for [CLS], with progress, equal to the library's
    page.select_option("#flow-kind", "flow")
    page.click("#flow-run")
    page.wait_for_selector("#flow-result[data-complete='1'] .ex-flow-table tr[data-index]")
    relevance = at.attention_flow(trace, 0).relevance(0)
    rows = ex.js("[...document.querySelectorAll('#flow-result tr[data-index]')].map("
                 "r => [Number(r.dataset.index), Number(r.lastChild.textContent)])")
    assert rows[0][0] == int(np.argmax(relevance))
    for index, value in rows:
        assert math.isclose(value, relevance[index], abs_tol=1e-4)
    assert ex.js("document.querySelector('#flow-progress').value") == n
    assert ex.js("document.querySelector('#flow-result img').naturalWidth") > 100

    # the first draw came quickly after the response (the target is 1 s; a busy machine)
    assert ex.js("document.body.explorer.timings.capture.draw_ms") < 3000

    # the shared URL opens the same text with the same head shown
    shared = page.url
    ex.check_clean()
    again = Explorer(browser, shared, explorer_server.url)
    again.wait_views()
    assert again.js("document.querySelector('#text').value") == TEXT
    assert again.view_state("head")["layer"] == best[0]
    assert again.js("[...document.querySelectorAll('#views .as-swatch:not(.as-off)')]"
                    ".map(s => Number(s.dataset.head))") == [best[1]]
    again.check_clean()


def test_compare_two_texts_and_download(browser, explorer_server, embedded, tmp_path):
    ex = Explorer(browser, explorer_server.url, explorer_server.url)
    page = ex.page
    page.fill("#text", TEXT)
    page.check("#compare")
    page.fill("#text2", TEXT_B)
    page.press("#text2", "Enter")
    page.wait_for_selector("#diff[data-comparable='1'] .ex-diff-table tr[data-layer]")
    ex.wait_views("#side-a")
    ex.wait_views("#side-b")
    # the heads that change most, largest first, as the two traces say
    a, b = at.capture(embedded, TEXT), at.capture(embedded, TEXT_B)
    change = np.abs(b.attentions - a.attentions).max(axis=(2, 3))  # (L, H)
    top = ex.js("(() => { const r = document.querySelector('.ex-diff-table tr[data-layer]');"
                " return [Number(r.dataset.layer), Number(r.dataset.head),"
                " Number(r.lastChild.textContent)]; })()")
    layer, head = np.unravel_index(np.argmax(change), change.shape)
    assert top[:2] == [int(layer), int(head)]
    # the head that changes most is drawn large
    assert ex.js("document.querySelector('.ex-diff-head').alt") == (
        f"difference of layer {layer}, head {head}")
    assert math.isclose(top[2], change[layer, head], abs_tol=1e-3)
    for img in (".ex-diff-grid", ".ex-diff-head"):
        assert ex.js(f"document.querySelector('{img}').naturalWidth") > 100
    tokens_b = ex.js("[...document.querySelectorAll('#side-b .as-hv-left .as-tok')]"
                     ".map(n => n.textContent)")
    assert tokens_b == list(b.tokens)
    assert "compare=1" in page.url

    # "download this page": one self-contained HTML file that opens offline
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "explorer.html"
    info.value.save_as(saved)
    html = saved.read_text(encoding="utf-8")
    assert html.count('class="attnscope-root"') == 2 and "<script src" not in html
    ex.check_clean()
    offline = browser.new_page()
    offline_log = watch(offline)
    offline.goto(saved.as_uri())
    offline.wait_for_function("[...document.querySelectorAll('.attnscope-root')]"
                              ".every(r => r.dataset.ready)")
    assert offline_log.requests == [saved.as_uri()] and offline_log.problems == []
    offline.close()


def test_a_mistake_shows_one_sentence(browser, explorer_server):
    ex = Explorer(browser, explorer_server.url, explorer_server.url)
    page = ex.page
    page.fill("#text", " ".join(["word"] * 300))  # 302 tokens: over the 256-token limit
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error") == (
        "The text has 302 tokens; this explorer takes at most 256 (start it with a larger "
        "--max-tokens for longer texts).")
    # the only console line is Chromium's note of the 422 answer
    assert all("422" in line for line in ex.log.problems) and ex.log.problems
    ex.log.problems.clear()
    page.fill("#text", "Short again.")
    page.press("#text", "Enter")
    ex.wait_views()
    assert page.is_hidden("#error")
    ex.check_clean()
