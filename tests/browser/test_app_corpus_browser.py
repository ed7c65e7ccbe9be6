"""The explorer's corpus browser end to end: a real ``attnscope serve --corpus`` process, driven
in Chromium. Open the Corpus tab: the head table shows the store's numbers and sorts, the layer
plots draw, another run shows its syntactic heads; click a head: its best texts are listed; a
reload of the URL comes back to the same head; open a text: the head view draws it at that
layer and head. No console error, no request leaving the explorer."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

import attnscope as at
from attnscope.corpora import CorpusResult
from tests.browser.test_app_browser import Explorer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def corpus_server(corpus_store):
    pytest.importorskip("fastapi")
    from tests.explorer_server import ExplorerServer

    server = ExplorerServer("--corpus", str(corpus_store))
    yield server
    server.stop()


def _cells(ex, selector, key):
    return ex.js(f"[...document.querySelectorAll('{selector} tbody tr')].map(r => "
                 f"r.querySelector('[data-key=\"{key}\"]').textContent)")


def test_browse_the_corpus_and_open_an_example(browser, corpus_server, corpus_store, embedded):
    result = CorpusResult(corpus_store, "sentences")
    scores = result.scores()
    url = corpus_server.url
    ex = Explorer(browser, url, url)
    page = ex.page
    assert "corpus: stats.duckdb" in "".join(corpus_server.output)
    # the Corpus tab is there (the explorer has a store); the text form hides behind it
    page.click(".ex-tab[data-tab='corpus']")
    page.wait_for_selector("#corpus-table tbody tr")
    assert ex.js("document.querySelector('#run-form').offsetParent") is None
    assert ex.js("document.querySelectorAll('#corpus-table tbody tr').length") == 72
    assert page.text_content("#corpus-about").startswith(f"{embedded.name}: 30 texts")
    # the table shows the store's numbers: every head's mean "previous" score, 3 decimals
    shown = [float(v) for v in _cells(ex, "#corpus-table", "previous")]
    np.testing.assert_allclose(shown, scores["previous"], atol=5e-4 + 1e-12)
    assert _cells(ex, "#corpus-table", "label") == list(scores["label"])
    # sorting by "previous" puts the previous-token head 0.2 first
    page.click("#corpus-table th[data-key='previous']")
    first = ex.js("(() => { const r = document.querySelector('#corpus-table tbody tr');"
                  " return [Number(r.dataset.layer), Number(r.dataset.head)]; })()")
    assert first == [0, 2]
    # the layer plots and the positional profile are drawn by the report's chart script
    page.wait_for_selector("#corpus-charts figure.as-chart[data-drawn='1']")
    assert ex.js("document.querySelectorAll('#corpus-charts figure[data-drawn=\"1\"]').length") == 2
    assert ex.canvas_ink("#corpus-charts figure[data-chart='0'] canvas") > 2000
    assert ex.js("document.querySelector('#corpus-relations-card').hidden") is True

    # click the head: its best texts, best first, as the store has them
    page.click("#corpus-table tbody tr:first-child")
    page.wait_for_selector("#corpus-examples[data-head='2'] li.ex-example")
    expected = result.examples(0, 2, k=10)
    texts = ex.js("[...document.querySelectorAll('#corpus-examples li div.ex-example-text')]"
                  ".map(n => n.textContent)")
    assert texts == list(expected["text"])
    # the query and key token are marked in each text
    marked = ex.js("[...document.querySelectorAll('#corpus-examples li div.ex-example-text')]"
                   ".map(n => [...n.querySelectorAll('mark')].map(m => [m.className, "
                   "m.textContent.toLowerCase()]))")
    for marks, row in zip(marked, expected.itertuples(), strict=True):
        assert sorted(marks) == sorted([["ex-query", row.query_token.removeprefix("##")],
                                        ["ex-key", row.key_token.removeprefix("##")]])
    assert page.text_content("#corpus-examples li:first-child b") == f"{expected['value'][0]:.3f}"
    assert page.url.endswith("#corpus&layer=0&head=2")
    shared = page.url
    # the texts where the head scored highest on "previous", then back to the weights
    page.select_option("#corpus-kind", "previous")
    page.wait_for_selector("#corpus-examples[data-kind='previous'] li.ex-example")
    assert ex.js("[...document.querySelectorAll('#corpus-examples li div.ex-example-text')]"
                 ".map(n => n.textContent)") == list(result.examples(0, 2, "previous",
                                                                     k=10)["text"])
    assert page.url.endswith("#corpus&layer=0&head=2&kind=previous")
    page.select_option("#corpus-kind", "weight")
    page.wait_for_selector("#corpus-examples[data-kind='weight'] li.ex-example")

    # token search: what each head attends to from "it", strongest first
    page.fill("#corpus-token", "it")
    page.press("#corpus-token", "Enter")
    page.wait_for_selector("#corpus-search tbody tr")
    found = result.search("it", model=embedded, top=3).sort_values("weight", ascending=False)
    assert ex.js("document.querySelectorAll('#corpus-search tbody tr').length") == len(found)
    first = ex.js("(() => { const r = document.querySelector('#corpus-search tbody tr');"
                  " return [Number(r.dataset.layer), Number(r.dataset.head),"
                  " r.querySelector('[data-key=key_token]').textContent,"
                  " Number(r.querySelector('[data-key=weight]').textContent)]; })()")
    best = found.iloc[0]
    assert first[:3] == [best["layer"], best["head"], best["key_token"]]
    assert first[3] == pytest.approx(best["weight"], abs=5e-4)
    assert "5 occurrences" in page.text_content("#corpus-search-status")

    # open the best text: the head view draws it at layer 0 with head 2 alone
    page.click("#corpus-examples li:first-child button.ex-open")
    ex.wait_views()
    trace = at.capture(embedded, expected["text"][0])
    assert ex.js("[...document.querySelectorAll('#views .as-hv-left .as-tok')]"
                 ".map(n => n.textContent)") == list(trace.tokens)
    assert ex.view_state("head")["layer"] == 0
    assert ex.js("[...document.querySelectorAll('#views .as-swatch:not(.as-off)')]"
                 ".map(s => Number(s.dataset.head))") == [2]
    assert ex.js("document.querySelector('#corpus').hidden") is True
    assert ex.js("document.querySelector('#text').value") == expected["text"][0]
    query = parse_qs(urlparse(page.url).query)
    assert (query["layer"], query["head"]) == (["0"], ["2"])
    ex.check_clean()

    # the URL brings the same head back
    again = Explorer(browser, shared, url)
    again.page.wait_for_selector("#corpus-examples[data-head='2'] li.ex-example")
    assert again.js("[...document.querySelectorAll('#corpus-table tr.ex-selected')].map("
                    "r => [Number(r.dataset.layer), Number(r.dataset.head)])") == [[0, 2]]
    assert again.js("document.querySelector('#corpus').hidden") is False
    # a head far down the table is scrolled into its box
    last = Explorer(browser, url + "#corpus&layer=5&head=11", url)
    last.page.wait_for_selector("#corpus-examples[data-head='11'] li.ex-example")
    assert last.js("""(() => {
        const r = document.querySelector('#corpus-table tr.ex-selected');
        const a = r.getBoundingClientRect(), b = r.closest('.ex-scroll').getBoundingClientRect();
        const inside = a.top >= b.top && a.bottom <= b.bottom;
        return [Number(r.dataset.layer), Number(r.dataset.head), inside];
    })()""") == [5, 11, True]
    last.check_clean()

    # another run: the treebank's syntactic heads
    again.page.select_option("#corpus-run", "treebank")
    again.page.wait_for_selector("#corpus-relations tbody tr")
    relations = CorpusResult(corpus_store, "treebank").relations()
    assert _cells(again, "#corpus-relations", "relation") == list(relations["relation"])
    assert again.page.url.endswith("#corpus&run=treebank")
    again.check_clean()


def test_a_corpus_of_a_model_not_served_says_which_to_serve(browser, corpus_store, tiny_dirs,
                                                             embedded):
    from tests.explorer_server import ExplorerServer

    server = ExplorerServer("--corpus", str(corpus_store), "--model", str(tiny_dirs["bert"]))
    try:
        ex = Explorer(browser, server.url + "#corpus&layer=1&head=3", server.url)
        ex.page.wait_for_selector("#corpus-examples[data-head='3'] li.ex-example")
        assert ex.page.text_content("#corpus-examples .ex-not-served") == (
            f"The corpus's model {embedded.name} is not served by this explorer: start it "
            f"with --model {embedded.name} to open these texts in the views.")
        assert ex.js("[...document.querySelectorAll('#corpus-examples button.ex-open')]"
                     ".every(b => b.disabled)") is True
        ex.check_clean()
    finally:
        server.stop()


def test_the_head_atlas_tab_shows_the_atlas_and_opens_head_views(browser, corpus_server,
                                                                 corpus_store, embedded):
    url = corpus_server.url
    ex = Explorer(browser, url + "#corpus", url)
    page = ex.page
    page.wait_for_selector("#corpus-table tbody tr")
    assert ex.js("document.querySelector('#corpus-atlas-card').hidden") is True
    page.click(".ex-subtab[data-view='atlas']")
    assert page.url.endswith("#corpus&view=atlas")
    assert ex.js("document.querySelector('#corpus-stats').hidden") is True
    frame = page.frame_locator("#corpus-atlas")
    frame.locator("button.at-cell").first.wait_for()
    # the same page attnscope atlas writes for the run, in the tab
    assert frame.locator("button.at-cell").count() == 72
    result = CorpusResult(corpus_store, "sentences")
    assert "30 texts, 6 layers x 12 heads" in frame.locator("body > p").first.inner_text()
    frame.locator("button.at-cell[data-layer='0'][data-head='2']").click()
    section = frame.locator("#head-0-2")
    assert section.is_visible()
    assert section.inner_text().startswith("Layer 0, head 2")
    # the explorer serves the run's model: each example links to its head view
    expected = result.examples(0, 2, k=3)
    links = section.locator("a.at-view")
    assert links.count() == len(expected) and "Each opens its text's head view" in \
        section.inner_text()
    href = links.first.get_attribute("href")
    query = parse_qs(urlparse(href).query)
    assert query["text"] == [expected["text"][0]]
    assert (query["layer"], query["head"]) == (["0"], ["2"])
    links.first.click()
    page.wait_for_url("**/?text=*")
    ex.wait_views()
    trace = at.capture(embedded, expected["text"][0])
    assert ex.js("[...document.querySelectorAll('#views .as-hv-left .as-tok')]"
                 ".map(n => n.textContent)") == list(trace.tokens)
    assert ex.view_state("head")["layer"] == 0
    assert ex.js("[...document.querySelectorAll('#views .as-swatch:not(.as-off)')]"
                 ".map(s => Number(s.dataset.head))") == [2]
    ex.check_clean()

    # the URL brings the atlas back; another run shows its own atlas
    again = Explorer(browser, url + "#corpus&view=atlas&run=treebank", url)
    again.page.frame_locator("#corpus-atlas").locator("button.at-cell").first.wait_for()
    assert "treebank" in again.page.frame_locator("#corpus-atlas").locator(
        "body > p").first.inner_text()
    assert again.js("document.querySelector('#corpus-atlas').getAttribute('src')") == \
        "/api/corpus/atlas?run=treebank"
    again.check_clean()
