"""The report page in a real browser: it loads with no request beyond itself, shows every
image, renders its interactive views, and runs no script from the text."""

from __future__ import annotations

import pytest

import attnscope as at

pytestmark = pytest.mark.browser


def test_report_page_in_chromium(chromium_path, embedded, tmp_path):
    from playwright.sync_api import sync_playwright

    trace = at.capture(embedded, 'the <img src=x onerror="alert(1)"> cat sat', qkv=True)
    path = at.report(trace, embedded).save(tmp_path / "report.html")
    requests, errors, dialogs = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.attnscope-root')]"
                ".every(r => !r.querySelector('.as-status') || "
                "!r.querySelector('.as-status').textContent.includes('Loading'))",
                timeout=10_000,
            )
            sizes = page.evaluate(
                "() => [...document.images].map(i => [i.complete, i.naturalWidth])"
            )
            headings = page.evaluate(
                "() => [...document.querySelectorAll('h2')].map(h => h.textContent)"
            )
            roots = page.evaluate(
                "() => [...document.querySelectorAll('.attnscope-root')]"
                ".map(r => r.querySelectorAll('canvas, svg').length)"
            )
            shown_text = page.evaluate("() => document.body.innerText")
            injected = page.evaluate(
                "() => [...document.images].filter(i => i.getAttribute('src') === 'x').length"
            )
        finally:
            browser.close()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert errors == [] and dialogs == []
    assert len(sizes) >= 10 and all(done and width > 100 for done, width in sizes)
    assert {"Tokens", "What each head does", "Attention rollout and flow",
            "Norm-based attention", "Layer trends"} <= set(headings)
    assert len(roots) == 2 and all(n > 0 for n in roots)  # both views drew something
    # The text shows as text, not as markup.
    assert '<img src=x onerror="alert(1)">' in shown_text and injected == 0
