"""The generation view in a real browser: select, step, play, hover, export, offline, inert
hostile tokens, on Traces from transformers' own generate and on synthetic ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

import attnscope as at
from attnscope.readable import readable_tokens
from tests.browser.pages import watch
from tests.gen_trace import generation_trace, synthetic_generation

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>"


class GenPage:
    def __init__(self, browser, view, tmp_path, name="gen.html"):
        path = view.save(tmp_path / name)
        self.page = browser.new_page(viewport={"width": 1300, "height": 900},
                                     accept_downloads=True)
        self.log = watch(self.page)
        self.url = path.as_uri()
        self.page.goto(self.url)
        self.page.wait_for_selector(".attnscope-root[data-gen-step]", timeout=15_000)

    def js(self, expression, arg=None):
        return self.page.evaluate(expression, arg)

    def step(self):
        return self.js("document.querySelector('.attnscope-root').attnscope.views.generation"
                       ".state.step")

    def tip(self):
        return self.page.text_content(".as-tip")

    def check_clean(self):
        assert self.log.problems == []
        assert self.log.dialogs == []
        assert [r for r in self.log.requests if not r.startswith("blob:")] == [self.url]
        self.page.close()


def _ramp_colour(value):
    """The page's colour of ``value`` on its default square-root scale (max 1), computed
    plainly from the ramp's stops: level round(255 sqrt(v)), linear between the stops."""
    from attnscope.render.static import WEIGHT_STOPS

    stops = WEIGHT_STOPS["light"]
    level = math.floor(math.sqrt(value) * 255 + 0.5)
    x = level / 255 * (len(stops) - 1)
    k = min(len(stops) - 2, math.floor(x))
    f = x - k
    rgb = [math.floor(stops[k][c] * (1 - f) + stops[k + 1][c] * f + 0.5) for c in range(3)]
    return f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"


def _shown(text):
    """The number in a readout line such as 'weight from the selected step: 0.0663'."""
    return float(text.rsplit(" ", 1)[-1].lstrip("\u2248"))


def test_select_step_hover_and_shares_on_generated_text(browser, tiny_models, tmp_path):
    model = tiny_models["llama"]
    trace = generation_trace(model, "the cat sat on the mat", 6)
    g = GenPage(browser, at.generation_view(trace, model=model), tmp_path)
    start = trace.answer_start
    # the text reads as the tokens' text, one span a token
    assert g.js("document.querySelectorAll('.as-gtok').length") == trace.num_tokens
    texts = g.js("[...document.querySelectorAll('.as-gtok')].map(s => s.textContent)")
    assert texts == readable_tokens(list(trace.tokens),
                                                list(np.asarray(trace.special_mask)))
    # click the third generated token
    g.page.click(f".as-gtok[data-index='{start + 2}']")
    assert g.step() == 2
    # its context is coloured up to the token before it, nothing after
    coloured = g.js("[...document.querySelectorAll('.as-gtok')].map(s => s.style.backgroundColor"
                    " !== '')")
    assert coloured == [i < start + 2 for i in range(trace.num_tokens)]
    # the share of each role equals the row's sums (all layers and heads averaged)
    row = trace.attentions[:, :, start + 1 - trace.query_start, : start + 2].mean((0, 1))
    shares = dict(g.js("[...document.querySelectorAll('.as-gen-share')].map(l => "
                       "[l.dataset.role, Number(l.lastChild.textContent)])"))
    assert shares["prompt"] == pytest.approx(row[:start].sum(), rel=5e-3)
    assert shares["answer"] == pytest.approx(row[start:].sum(), rel=5e-3)
    # probability beside it
    assert f"{trace.answer_probs[2]:.3g}" in g.page.text_content(".as-gen-prob")
    # hovering a context token shows the exact value and the heads that attend most to it
    g.page.hover(".as-gtok[data-index='1']")
    g.page.wait_for_function("document.querySelector('.as-tip').textContent.includes('layer')")
    lines = g.js("[...document.querySelector('.as-tip').children].map(d => d.textContent)")
    assert _shown(lines[1]) == pytest.approx(float(row[1]), rel=1e-3)
    heads = trace.attentions[:, :, start + 1 - trace.query_start, 1]  # (L, H)
    top_layer, top_head = np.unravel_index(heads.argmax(), heads.shape)
    assert lines[3].strip().startswith(f"layer {top_layer} head {top_head}:")
    assert _shown(lines[3]) == pytest.approx(float(heads.max()), rel=1e-3)
    # one head: layer 1, head 2
    g.page.select_option(".as-gen-mode select", "head")
    g.page.select_option(".as-layer select", "1")
    g.page.select_option(".as-head select", "2")
    g.page.mouse.move(0, 0)
    g.page.hover(".as-gtok[data-index='2']")
    g.page.wait_for_function("document.querySelector('.as-tip').textContent.includes('heads')")
    line = g.js("document.querySelector('.as-tip').children[1].textContent")
    assert _shown(line) == pytest.approx(
        float(trace.attentions[1, 2, start + 1 - trace.query_start, 2]), rel=1e-3)
    g.check_clean()


def test_arrows_slider_play_and_export(browser, tmp_path):
    tokens = [f" w{i}" for i in range(30)]
    g = GenPage(browser, at.generation_view(synthetic_generation(tokens, 20)), tmp_path)
    g.page.click(".as-gtok[data-index='20']")
    assert g.step() == 0
    g.page.keyboard.press("ArrowRight")
    g.page.keyboard.press("ArrowRight")
    assert g.step() == 2
    assert g.js("document.activeElement.dataset.index") == "22"
    g.page.keyboard.press("ArrowLeft")
    assert g.step() == 1
    g.page.keyboard.press("End")
    assert g.step() == 9
    g.page.keyboard.press("Home")
    assert g.step() == 0
    g.page.fill(".as-gen-slider", "6")
    assert g.step() == 6
    assert "token 7 of 10" in g.page.text_content(".as-gen-steplabel")
    # play runs to the end of the answer and stops
    g.page.click(".as-play")
    g.page.wait_for_function("document.querySelector('.attnscope-root').attnscope.views"
                             ".generation.state.step === 9 && "
                             "document.querySelector('.as-play').textContent === 'Play'",
                             timeout=15_000)
    with g.page.expect_download() as png:
        g.page.click(".as-export")
    assert png.value.suggested_filename == "generation-step9.png"
    with g.page.expect_download() as svg:
        g.page.click(".as-export-svg")
    with open(svg.value.path(), encoding="utf-8") as file:
        text = file.read()
    assert text.count("<rect") >= 29  # the background and each coloured context token
    assert ">w29<" in text.replace(" w", "w")
    g.check_clean()


def test_hostile_tokens_are_text(browser, tmp_path):
    tokens = ["<s>", "a", HOSTILE, "</script><script>alert(1)</script>", "b", "c", HOSTILE, "d"]
    roles = ["markup", "system", "user", "user", "markup", "assistant", "answer", "answer"]
    trace = synthetic_generation(tokens, 6, roles=roles)
    g = GenPage(browser, at.generation_view(trace), tmp_path)
    assert g.js("document.querySelectorAll('img').length") == 0
    # the page's data and its own script, nothing a token wrote
    assert g.js("document.querySelectorAll('script').length") == 2
    assert g.js("document.querySelectorAll('.as-gtok')[2].textContent") == HOSTILE
    g.page.click(".as-gtok[data-index='7']")
    assert g.page.text_content(".as-gen-chosen") == "d"
    roles_shown = g.js("[...document.querySelectorAll('.as-gen-share')].map(l => l.dataset.role)")
    assert roles_shown == ["system", "user", "assistant", "markup", "answer"]
    g.page.hover(".as-gtok[data-index='2']")
    assert HOSTILE in g.tip()
    g.check_clean()


def test_measure_selector_recolours_with_the_embedded_sources(browser, tiny_models, tmp_path):
    """Choosing a context-mixing measure colours the context by that measure's sources (each
    span's colour is the ramp's at the Python value, on the page's square-root scale), the
    tooltip gives its value and every other measure's side by side, nothing is fetched."""
    from attnscope.analysis.context_mixing import generation_sources

    model = tiny_models["llama"]
    trace = generation_trace(model, "the cat sat on the mat", 5)
    measures = ("alti", "grad_rollout")
    view = at.generation_view(trace, model=model, measures=measures)
    g = GenPage(browser, view, tmp_path)
    want = generation_sources(model, trace, measures)
    start = trace.answer_start
    notes = g.page.text_content(".as-gen-note")
    assert "Measures carried: ALTI, gradient rollout" in notes
    options = g.js("[...document.querySelectorAll('.as-gen-mode option')].map(o => o.value)")
    assert options[-2:] == ["alti", "grad_rollout"]
    g.page.click(f".as-gtok[data-index='{start + 3}']")
    for name in measures:
        g.page.select_option(".as-gen-mode select", name)
        g.page.wait_for_function(
            "document.querySelector('.as-gen-info').textContent.includes('sources of its')")
        row = want[name][3]
        colours = g.js("[...document.querySelectorAll('.as-gtok')].map(s => "
                       "s.style.backgroundColor)")
        # the page carries float16 (the plan for a page this small)
        expected = [_ramp_colour(float(np.float16(v))) for v in row[: start + 3]]
        assert colours[: start + 3] == expected
        assert all(c == "" for c in colours[start + 3:])
        # the shares of each role sum the measure's row
        shares = dict(g.js("[...document.querySelectorAll('.as-gen-share')].map(l => "
                           "[l.dataset.role, Number(l.lastChild.textContent)])"))
        assert shares["prompt"] == pytest.approx(row[:start].sum(), rel=5e-3)
        g.page.mouse.move(0, 0)
        g.page.hover(".as-gtok[data-index='1']")
        g.page.wait_for_function("document.querySelector('.as-tip').textContent"
                                 ".includes('by measure')")
        lines = g.js("[...document.querySelector('.as-tip').children].map(d => d.textContent)")
        assert lines[1].startswith("source share")
        assert _shown(lines[1]) == pytest.approx(float(row[1]), rel=2e-3, abs=1e-4)
        other = next(m for m in measures if m != name)
        label = {"alti": "ALTI", "grad_rollout": "gradient rollout"}[other]
        (line,) = [x for x in lines if x.strip().startswith(label + ":")]
        assert _shown(line) == pytest.approx(float(want[other][3, 1]), rel=2e-3, abs=1e-4)
        attention = trace.attentions[:, :, start + 2 - trace.query_start, 1].mean()
        (line,) = [x for x in lines if x.strip().startswith("all layers (mean):")]
        assert _shown(line) == pytest.approx(float(attention), rel=2e-3)
    # back to raw attention
    g.page.select_option(".as-gen-mode select", "all")
    g.page.wait_for_function(
        "document.querySelector('.as-gen-info').textContent.includes('attention of the step')")
    g.check_clean()
