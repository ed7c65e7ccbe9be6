"""The corpus page in a real browser: no request beyond itself, and every example link opens
the head view of its own text on its own layer and head."""

from __future__ import annotations

import pytest

import attnscope as at
from attnscope.corpora.report import corpus_report
from tests.browser.pages import watch

pytestmark = pytest.mark.browser

TEXTS = [
    "The girl poured water into a tall glass until it overflowed.",
    'A tag like <b onmouseover="alert(1)">this</b> stays text.',
    "Leaves fall in autumn, and the nights grow cold.",
    "She said that she would come back tomorrow.",
]


def test_corpus_page_in_chromium(browser, embedded, tmp_path):
    result = at.corpus(embedded, TEXTS, out=tmp_path / "s.duckdb", batch_size=2,
                       progress=False)
    path = corpus_report(result, model=embedded, examples=2).save(tmp_path / "corpus.html")
    expected = result.examples(1, 8, k=2)
    page = browser.new_page()
    log = watch(page)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    headings = page.evaluate(
        "() => [...document.querySelectorAll('h2')].map(h => h.textContent)")
    images = page.evaluate(
        "() => [...document.images].map(i => i.complete && i.naturalWidth > 100)")
    rows = page.evaluate("() => document.querySelectorAll('#heads tbody tr, "
                         "table.cr tbody tr').length")
    links = page.evaluate(
        "() => [...document.querySelectorAll('details[data-layer=\"1\"][data-head=\"8\"]"
        " a.cr-open')].map(a => a.getAttribute('href'))")
    opened = []
    for rank in range(len(links)):
        page.evaluate("(i) => { const d = document.querySelector("
                      "'details[data-layer=\"1\"][data-head=\"8\"]'); d.open = true; "
                      "d.querySelectorAll('a.cr-open')[i].click(); }", rank)
        page.wait_for_function("() => { const r = document.querySelector("
                               "'#cr-viewer .attnscope-root'); "
                               "return r && r.dataset.ready === '1'; }",
                               timeout=120_000)
        opened.append(page.evaluate(
            "() => { const r = document.querySelector('#cr-viewer .attnscope-root');"
            " const P = r.attnscope.payload; return {layer: P.initial.layer, "
            "heads: P.initial.heads, tokens: P.tokens.self, "
            "canvases: r.querySelectorAll('canvas').length}; }"))
    injected = page.evaluate("() => document.querySelectorAll('[onmouseover]').length")
    page.close()
    assert [u for u in log.requests if not u.startswith(("file:", "data:"))] == []
    assert log.problems == [] and log.dialogs == []
    assert {"What each head does", "Layer by layer", "Positional profile", "Examples"} <= set(
        headings)
    assert len(images) == 2 and all(images)
    assert rows >= 72
    assert len(links) == len(expected) == 2
    for (_, row), view in zip(expected.iterrows(), opened, strict=True):
        assert view["layer"] == 1 and view["heads"] == [8]
        assert view["tokens"] == list(at.capture(embedded, row["text"]).tokens)
        assert view["canvases"] > 0
    assert injected == 0  # the text with markup in it shows as text
