"""The report page in a real browser: it loads with no request beyond itself, shows every
image, renders its interactive views, and runs no script from the text."""

from __future__ import annotations

import pytest

import attnscope as at
from tests.browser.pages import watch

pytestmark = pytest.mark.browser


def test_report_page_in_chromium(browser, embedded, tmp_path):
    trace = at.capture(embedded, 'the <img src=x onerror="alert(1)"> cat sat', qkv=True)
    path = at.report(trace, embedded).save(tmp_path / "report.html")
    page = browser.new_page()
    log = watch(page)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.attnscope-root')]"
        ".every(r => !r.querySelector('.as-status') || "
        "!r.querySelector('.as-status').textContent.includes('Loading'))",
        timeout=120_000,
    )
    # Every chart drew on its canvas: count the non-white pixels of each.
    drawn = page.evaluate(
        """() => [...document.querySelectorAll('figure.as-chart')].map(f => {
            const c = f.querySelector('canvas');
            if (!f.dataset.drawn || !c) return 0;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let k = 0; k < d.length; k += 4)
                if (d[k] < 240 || d[k + 1] < 240 || d[k + 2] < 240) n++;
            return n;
        })"""
    )
    # Hovering a bar shows its token and value.
    bar_chart = page.locator("figure.as-chart").filter(has_text="rollout relevance")
    canvas = bar_chart.locator("canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    canvas.hover(position={"x": 48 + 2, "y": box["height"] / 3})
    tip = bar_chart.locator(".as-tip").text_content()
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
    page.close()
    assert [u for u in log.requests if not u.startswith(("file:", "data:"))] == []
    assert log.problems == [] and log.dialogs == []
    assert len(drawn) >= 10 and all(n > 500 for n in drawn), drawn
    relevance = at.attention_rollout(trace).relevance(0)
    assert tip == f"{trace.tokens[0]} (0): relevance {relevance[0]:.3f}"
    assert {"Tokens", "What each head does", "Attention rollout and flow",
            "Norm-based attention", "Layer trends"} <= set(headings)
    # head, model and neuron view (the trace has queries and keys), each drew something
    assert len(roots) == 3 and all(n > 0 for n in roots)
    # The text shows as text, not as markup.
    assert '<img src=x onerror="alert(1)">' in shown_text and injected == 0


def test_report_measure_section_and_model_view_selector(browser, tiny_models, tmp_path):
    """report(measure=...) adds a section with the measure's rollout and the sources of its
    target (the bar under the pointer gives the Python number), and the model view's measure
    selector; nothing is fetched."""
    model = tiny_models["gpt2"]
    trace = at.capture(model, "the cat sat on the mat", qkv=True)
    path = at.report(trace, model, measure="alti").save(tmp_path / "report.html")
    page = browser.new_page()
    log = watch(page)
    page.goto(path.as_uri())
    page.wait_for_function("() => [...document.querySelectorAll('.attnscope-root')]"
                           ".every(r => r.dataset.ready)", timeout=60_000)
    headings = page.evaluate("() => [...document.querySelectorAll('h2')].map(h => h.textContent)")
    assert "Context mixing: ALTI" in headings
    options = page.evaluate("() => [...document.querySelectorAll('.as-part option')]"
                            ".map(o => o.textContent)")
    assert options == ["Raw attention", "ALTI (per layer)"]
    chart = page.locator("figure.as-chart").filter(has_text="ALTI: sources of")
    canvas = chart.locator("canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    canvas.hover(position={"x": 48 + 2, "y": box["height"] / 3})
    tip = chart.locator(".as-tip").text_content()
    sources = at.context_mixing(trace, model, "alti", progress=False).sources()
    label = at.readable.trace_labels(trace)[0][0]
    assert tip == f"{label} (0): share {sources[0]:.3f}"
    page.close()
    assert [u for u in log.requests if not u.startswith(("file:", "data:"))] == []
    assert log.problems == [] and log.dialogs == []


def test_report_measure_needs_the_model(tiny_models):
    trace = at.capture(tiny_models["gpt2"], "the cat sat")
    with pytest.raises(at.AttnscopeError, match="needs the model"):
        at.report(trace, measure="alti")
    with pytest.raises(at.AttnscopeError, match="valid methods: value_zeroing"):
        at.report(trace, tiny_models["gpt2"], measure="lrp")
