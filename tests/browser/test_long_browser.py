"""The long view in a real browser: a page of a few hundred tokens of a tiny Llama opens,
selecting a token recolours the text with the LazyTrace's weights (row and column), the strips
switch the overview's head, the page makes no request and hostile tokens stay text."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import attnscope as at
from tests.browser.pages import watch
from tests.long_trace import HOSTILE, long_llama, long_text

pytestmark = pytest.mark.browser

ROOT = "document.querySelector('.attnscope-root')"


@pytest.fixture(scope="module")
def lazy(tiny_models):
    model = long_llama(tiny_models["llama"].tokenizer)
    return at.capture(model, long_text(), attention="lazy")


def _wait(page, expression, timeout=30.0):
    """Poll ``expression`` until true. The pages' Content-Security-Policy forbids the eval
    behind Playwright's wait_for_function once it has to poll; page.evaluate is not subject
    to it."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"the page never reached {expression}"
        page.wait_for_timeout(50)


class LongPage:
    def __init__(self, browser, view, tmp_path, name="long.html"):
        path = view.save(tmp_path / name)
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.log = watch(self.page)
        self.url = path.as_uri()
        self.page.goto(self.url)
        self.page.wait_for_selector(".attnscope-root[data-long-token][data-long-map]",
                                    timeout=15_000)

    def js(self, expression, arg=None):
        return self.page.evaluate(expression, arg)

    def wait(self, expression):
        _wait(self.page, expression)

    def state(self, name):
        return self.js(f"{ROOT}.attnscope.views.long.state.{name}")

    def shades(self):
        """Each token's background colour as the page set it ("" for none)."""
        return self.js("[...document.querySelectorAll('.as-ltok')].map(s => "
                       "s.style.backgroundColor)")

    def check_clean(self):
        assert self.log.problems == []
        assert self.log.dialogs == []
        assert [r for r in self.log.requests if not r.startswith("blob:")] == [self.url]
        self.page.close()


def _levels(values, scale_max=1.0):
    """The colour level the page's square-root scale gives each weight."""
    return np.rint(np.sqrt(np.clip(np.asarray(values, np.float64) / scale_max, 0, 1)) * 255)


def _page_levels(page):
    """Each token's colour level as the page computed it (its data of the last draw)."""
    return np.array(page.js(f"""() => {{
        const st = {ROOT}.attnscope.views.long.state;
        return [...st.values].map(v => Math.round(Math.sqrt(Math.min(1, v)) * 255));
    }}"""))


def test_select_token_recolours_by_its_row_and_column(browser, lazy, tmp_path):
    T = lazy.num_tokens
    p = LongPage(browser, at.long_view(lazy, layer=1, head=2, token=T - 1), tmp_path)
    texts = p.js("[...document.querySelectorAll('.as-ltok')].map(s => s.textContent)")
    assert len(texts) == T
    # the hostile token is text in the page, not an element
    assert HOSTILE.replace(" ", "") in "".join(texts).replace(" ", "")
    assert p.js("document.querySelectorAll('.as-long-text img').length") == 0
    # select a token in the middle: its row colours the text
    token = T // 2
    p.page.click(f".as-ltok[data-index='{token}']")
    p.wait(f"{ROOT}.dataset.longToken === '{token}'")
    row = lazy.attention(1, 2, rows=token)
    values = np.array(p.state("values"))
    big = row >= 1e-3
    np.testing.assert_allclose(values[big], row[big], rtol=0.02)  # the one-byte code
    assert np.all(values[token + 1:] == 0)  # causal: nothing after the token
    # what the spans show is the colour of those weights
    levels = _page_levels(p)
    assert np.abs(levels - _levels(row)).max() <= 2
    assert [b != "" for b in p.shades()] == list(levels > 0)
    # hovering a token reads its weight
    p.page.hover(f".as-ltok[data-index='{token - 1}']")
    tip = p.page.text_content(".as-tip")
    assert float(tip.rsplit(" ", 1)[-1]) == pytest.approx(float(row[token - 1]), rel=0.02)
    # what attends to it: its column
    p.page.select_option(".as-long-dir select", "column")
    p.wait(f"{ROOT}.dataset.longDirection === 'column'")
    column = lazy.attention(1, 2, cols=token)
    values = np.array(p.state("values"))
    big = column >= 1e-3
    np.testing.assert_allclose(values[big], column[big], rtol=0.02)
    assert np.all(values[:token] == 0)
    p.check_clean()


def test_strips_switch_the_heatmap(browser, lazy, tmp_path):
    T = lazy.num_tokens
    p = LongPage(browser, at.long_view(lazy, layer=0, head=0), tmp_path)
    assert p.js(f"{ROOT}.dataset.longMap") == f"0:0@{T}"
    stats = lazy.head_stats()
    # every head has a cell in each strip, with its statistic in its title
    assert p.js("document.querySelectorAll('.as-lcell').length") == 3 * 2 * 4
    title = p.js("document.querySelector(\".as-lcell[data-stat='sink'][data-layer='1']"
                 "[data-head='3']\").title")
    assert float(title.rsplit(" ", 1)[-1]) == pytest.approx(float(stats["sink"][1, 3]), rel=2e-3)
    p.page.click(".as-lcell[data-stat='entropy'][data-layer='1'][data-head='3']")
    p.wait(f"{ROOT}.dataset.longMap === '1:3@{T}'")
    assert p.state("layer") == 1 and p.state("head") == 3
    assert p.js("document.querySelector('.as-head select').value") == "3"
    # the heatmap is that head's weights (the level is T x T here: exact up to the code)
    grid = np.array(p.js(f"[...{ROOT}.attnscope.views.long.state.map.grid]")).reshape(T, T)
    dense = lazy.attentions[1, 3]
    big = dense >= 1e-3
    np.testing.assert_allclose(grid[big], dense[big], rtol=0.02)
    # zooming in, offline, crops the carried level around the selected token (the last)
    p.page.click(".as-zoom-in")
    p.wait(f"{ROOT}.dataset.longMap === '1:3@{T // 2}'")
    zoom = p.state("zoom")
    assert (zoom["r0"], zoom["r1"]) == (T - T // 2, T)
    grid = np.array(p.js(f"[...{ROOT}.attnscope.views.long.state.map.grid]"))
    crop = dense[T - T // 2:, T - T // 2:]
    big = crop >= 1e-3
    np.testing.assert_allclose(grid.reshape(crop.shape)[big], crop[big], rtol=0.02)
    p.check_clean()


def test_small_budget_says_what_it_left_out_and_colours_by_blocks(browser, lazy, tmp_path):
    T = lazy.num_tokens
    view = at.long_view(lazy, layer=1, head=2, max_bytes=T * (T + 1) // 2 + 8 * 64 * 64 + 10)
    p = LongPage(browser, view, tmp_path)
    notes = p.js("[...document.querySelectorAll('.as-long-note')].map(n => n.textContent)")
    assert any("Exact weights are carried for 1 of 8 heads" in n for n in notes)
    # another head colours the text by its 64 x 64 blocks: each token shows its block's max
    p.js(f"{ROOT}.attnscope.views.long.pick(0, 1)")
    p.wait(f"{ROOT}.dataset.longHead === '0:1' && document.querySelector("
           "'.as-long-source').textContent.includes('blocks of')")
    values = np.array(p.state("values"))
    token = p.state("token")
    pooled = at.pooled_attention(lazy, 0, 1, 64)
    edges = (np.arange(T) * 64) // T
    expected = pooled[edges[token], edges]
    big = expected >= 1e-3
    np.testing.assert_allclose(values[big], expected[big], rtol=0.02)
    p.check_clean()


@pytest.fixture(scope="module")
def long_server(lazy, tmp_path_factory):
    from tests.explorer_server import ExplorerServer

    path = lazy.save(tmp_path_factory.mktemp("long") / "story.npz")
    server = ExplorerServer("--long", str(path))
    yield server
    server.stop()


def test_served_page_asks_the_explorer_for_rows_and_zoomed_tiles(browser, lazy, long_server):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    log = watch(page)
    url = long_server.url + "long/story"
    page.goto(url)
    page.wait_for_selector(".attnscope-root[data-long-token][data-long-map]", timeout=30_000)
    js = page.evaluate
    T = lazy.num_tokens
    # the row comes from the explorer, exact (float32, no code)
    page.click(".as-ltok[data-index='120']")
    _wait(page, f"{ROOT}.dataset.longToken === '120' && "
                f"{ROOT}.textContent.includes('computed by the explorer')")
    values = np.array(js(f"[...{ROOT}.attnscope.views.long.state.values]"))
    np.testing.assert_allclose(values, lazy.attention(-1, 0, rows=120), rtol=1e-6, atol=1e-9)
    # zooming in draws a finer tile the explorer computed for the span around the token
    page.click(".as-zoom-in")
    _wait(page, f"{ROOT}.attnscope.views.long.state.map.label.includes('explorer')")
    zoom = js(f"{ROOT}.attnscope.views.long.state.zoom")
    span = T // 2
    assert zoom["r1"] - zoom["r0"] == span and zoom["r0"] <= 120 < zoom["r1"]
    grid = np.array(js(f"[...{ROOT}.attnscope.views.long.state.map.grid]"))
    exact = lazy.attentions[-1, 0, zoom["r0"]:zoom["r1"], zoom["c0"]:zoom["c1"]]
    assert grid.size == exact.size  # the span is short enough to be exact
    np.testing.assert_allclose(grid.reshape(exact.shape), exact, rtol=1e-6, atol=1e-9)
    # it asked only the explorer
    assert {r.split("?")[0] for r in log.requests if not r.startswith("blob:")} == {
        url, long_server.url + "api/long/story/line", long_server.url + "api/long/story/tile"}
    assert log.problems == [] and log.dialogs == []
    page.close()


def test_heatmap_hover_reads_a_block_and_keys_move_the_selection(browser, lazy, tmp_path):
    T = lazy.num_tokens
    view = at.long_view(lazy, layer=0, head=3, token=10,
                        max_bytes=T * (T + 1) // 2 + 8 * 64 * 64 + 10)  # the 64 level only
    p = LongPage(browser, view, tmp_path)
    assert p.js(f"{ROOT}.dataset.longMap") == "0:3@64"
    box = p.page.locator(".as-long-map").bounding_box()
    # the block in row 40, column 20 of the 64 x 64 map
    p.page.mouse.move(box["x"] + (20.5 / 64) * box["width"], box["y"] + (40.5 / 64) * box["height"])
    lines = p.js("[...document.querySelector('.as-tip').children].map(d => d.textContent)")
    edges = list(np.flatnonzero(np.diff((np.arange(T) * 64) // T, prepend=-1)))
    rows = f"{edges[40]}\u2013{edges[41] - 1}"
    cols = f"{edges[20]}\u2013{edges[21] - 1}"
    assert lines[0] == f"queries {rows}, keys {cols}"
    pooled = at.pooled_attention(lazy, 0, 3, 64)
    assert float(lines[1].rsplit(" ", 1)[-1]) == pytest.approx(float(pooled[40, 20]), rel=0.02)
    # arrow keys move the selected token
    p.page.focus(".as-long-text")
    p.page.keyboard.press("ArrowRight")
    p.wait(f"{ROOT}.dataset.longToken === '11'")
    p.page.keyboard.press("Home")
    p.wait(f"{ROOT}.dataset.longToken === '0'")
    p.check_clean()


def test_an_encoder_colours_rows_and_columns_over_every_token(browser, embedded, tmp_path):
    lazy = at.capture(embedded, "The girl poured water into a tall glass until it overflowed, "
                                "and then she laughed at the mess she had made.",
                      attention="lazy")
    T = lazy.num_tokens
    p = LongPage(browser, at.long_view(lazy, layer=2, head=5, token=4), tmp_path)
    values = np.array(p.state("values"))
    np.testing.assert_allclose(values, lazy.attention(2, 5, rows=4), rtol=0.02, atol=1e-4)
    assert np.count_nonzero(values) == T  # no mask: every key gets weight
    p.page.select_option(".as-long-dir select", "column")
    p.wait(f"{ROOT}.dataset.longDirection === 'column'")
    values = np.array(p.state("values"))
    np.testing.assert_allclose(values, lazy.attention(2, 5, cols=4), rtol=0.02, atol=1e-4)
    p.check_clean()


def test_a_page_of_8192_tokens(browser, tiny_models, tmp_path):
    # one layer of two heads keeps the T² work of capture, statistics and pooling small
    model = long_llama(tiny_models["llama"].tokenizer, positions=8192, layers=1, heads=2,
                       kv_heads=1)
    words = ("the cat sat on the mat while a dog slept by the door and rain fell " * 700).split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", at.TruncationWarning)  # cut to 8,192 on purpose
        lazy = at.capture(model, " ".join(words), attention="lazy")
    T = lazy.num_tokens
    assert T == 8192  # cut to the model's length
    p = LongPage(browser, at.long_view(lazy, layer=0, head=1), tmp_path)
    assert p.js("document.querySelectorAll('.as-ltok').length") == T
    # the selected head's exact weights, and every head's 1024 x 1024 overview, fit 50 MB
    assert p.js(f"{ROOT}.dataset.longMap") == "0:1@1024"
    notes = " ".join(p.js("[...document.querySelectorAll('.as-long-note')]"
                          ".map(n => n.textContent)"))
    assert "Exact weights are carried for 1 of 2 heads" in notes
    assert "finest level pools blocks of up to 8 tokens" in notes
    # the tokens in view are coloured by the time the selection resolves; the rest follow
    # in idle slices (data-long-shaded marks the end)
    first = p.js(f"""async () => {{
        await {ROOT}.attnscope.views.long.select(5000);
        const box = document.querySelector('.as-long-text').getBoundingClientRect();
        const seen = [...document.querySelectorAll('.as-ltok')].filter((s) => {{
            const r = s.getBoundingClientRect();
            return r.bottom > box.top && r.top < box.bottom;
        }});
        return {{shaded: {ROOT}.dataset.longShaded || null,
                 seen: seen.map((s) => [Number(s.dataset.index), s.style.backgroundColor])}};
    }}""")
    assert first["shaded"] is None  # 8,192 tokens: not all at once
    assert p.js(f"{ROOT}.dataset.longToken") == "5000"
    values = np.array(p.state("values"))
    row = lazy.attention(0, 1, rows=5000)
    big = row >= 1e-3
    np.testing.assert_allclose(values[big], row[big], rtol=0.02)
    assert np.all(values[5001:] == 0)
    page_levels = _page_levels(p)  # weights under the code's 1e-4 floor show none
    assert np.abs(page_levels - _levels(row))[row >= 1e-4].max() <= 2
    assert len(first["seen"]) > 50
    assert [shade != "" for _, shade in first["seen"]] == [
        page_levels[i] > 0 for i, _ in first["seen"]]
    p.wait(f"{ROOT}.dataset.longShaded === '1'")
    assert [b != "" for b in p.shades()] == list(page_levels > 0)
    # hovering a token reads its weight
    p.page.hover(f".as-ltok[data-index='{first['seen'][3][0]}']")
    tip = p.page.text_content(".as-tip")
    assert float(tip.rsplit(" ", 1)[-1]) == pytest.approx(float(row[first["seen"][3][0]]),
                                                          rel=0.02, abs=1e-4)
    # another token: scrolled to the end of the text, what comes into view shows its column
    p.js(f"{ROOT}.attnscope.views.long.setDirection('column')")
    seen = p.js(f"""async () => {{
        await {ROOT}.attnscope.views.long.select(8000);
        const text = document.querySelector('.as-long-text');
        text.scrollTop = text.scrollHeight;
        for (let k = 0; k < 3; k++) await new Promise(r => requestAnimationFrame(r));
        const box = text.getBoundingClientRect();
        return [...document.querySelectorAll('.as-ltok')].filter((s) => {{
            const r = s.getBoundingClientRect();
            return r.bottom > box.top && r.top < box.bottom;
        }}).map((s) => [Number(s.dataset.index), s.style.backgroundColor]);
    }}""")
    column = lazy.attention(0, 1, cols=8000)
    page_levels = _page_levels(p)
    assert np.abs(page_levels - _levels(column))[column >= 1e-4].max() <= 2
    assert min(i for i, _ in seen) > T // 2 and max(i for i, _ in seen) == T - 1
    assert [shade != "" for _, shade in seen] == [page_levels[i] > 0 for i, _ in seen]
    p.check_clean()
