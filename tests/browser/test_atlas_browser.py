"""The head atlas in a real browser: the map shows every head, a click shows that head's
section with its own numbers, hostile tokens stay text, and the page requests nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import attnscope as at
from tests.browser.pages import watch

pytestmark = pytest.mark.browser

TEXTS = [
    "The girl poured water into a tall glass until it overflowed.",
    'A tag like <img src=x onerror="alert(1)"> stays text.',
    "Leaves fall in autumn, and the nights grow cold.",
    "She said that she would come back tomorrow.",
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def importance_run(embedded, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas") / "stats.duckdb"
    return at.corpus(embedded, TEXTS, out=out, batch_size=2, progress=False,
                     importance="gradient")


def _open(browser, path: Path):
    page = browser.new_page()
    log = watch(page)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, log


def test_atlas_map_and_head_sections(browser, importance_run, tmp_path):
    result = importance_run
    path = at.atlas(result, examples=2).save(tmp_path / "atlas.html")
    page, log = _open(browser, path)
    cells = page.evaluate("() => [...document.querySelectorAll('button.at-cell')].map("
                          "c => [Number(c.dataset.layer), Number(c.dataset.head)])")
    assert sorted(map(tuple, cells)) == [(layer, head) for layer in range(6)
                                         for head in range(12)]
    assert page.evaluate("() => [...document.querySelectorAll('section.at-head')]"
                         ".every(s => s.hidden)")
    legend = page.inner_text("p.muted")
    assert "importance (gradient" in legend

    page.click("button.at-cell[data-layer='2'][data-head='5']")
    shown = page.evaluate("() => [...document.querySelectorAll('section.at-head')]"
                          ".filter(s => !s.hidden).map(s => s.id)")
    assert shown == ["head-2-5"]
    assert page.evaluate("() => location.hash") == "#head-2-5"
    section = page.inner_text("#head-2-5")
    assert section.startswith("Layer 2, head 5")
    found = result.importance()
    assert f"{found.values[2, 5]:.3f} \u00b1 {found.spread[2, 5]:.3f}" in section
    rank = int((found.values > found.values[2, 5]).sum()) + 1
    assert f"rank {rank} of 72" in section
    previous = page.inner_text("#head-2-5 .at-scores tr:has(td:text-is('previous')) td.r")
    assert float(previous) == pytest.approx(result.array("previous")[2, 5], abs=5e-4)
    expected = result.examples(2, 5, k=2)
    pairs = page.evaluate("() => [...document.querySelectorAll('#head-2-5 .at-pair')]"
                          ".map(e => e.textContent)")
    assert len(pairs) == len(expected) and pairs
    # a page on its own: the examples' head views need the model, and the page says so
    assert "Their head views need the model" in section
    assert page.evaluate("() => document.querySelectorAll('a.at-view').length") == 0
    bars = page.evaluate("() => document.querySelectorAll('#head-2-5 .at-bars span').length")
    assert bars == 17

    # the most important head is the darkest cell
    layer, head, _ = max(((lay, h, found.values[lay, h]) for lay in range(6) for h in range(12)),
                         key=lambda t: t[2])
    colour = page.evaluate(f"() => getComputedStyle(document.querySelector("
                           f"\"button.at-cell[data-layer='{layer}'][data-head='{head}']\"))"
                           ".backgroundColor")
    assert colour == "rgb(8, 48, 107)"

    # a hostile token stays text: its example shows the tag's characters
    page.goto(path.as_uri() + "#head-0-0")
    assert page.evaluate("() => document.getElementById('head-0-0').hidden") is False
    assert page.evaluate("() => document.querySelectorAll('img').length") == 0
    assert set(log.requests) == {path.as_uri()}  # the page itself, twice: nothing else
    assert not log.problems and not log.dialogs
    page.close()


def test_atlas_without_importance_colours_by_pattern(browser, embedded, tmp_path):
    result = at.corpus(embedded, TEXTS[:2], out=tmp_path / "plain.duckdb", progress=False)
    out = tmp_path / "plain.html"
    done = subprocess.run([sys.executable, "-m", "attnscope", "atlas", str(result.path), "-o",
                           str(out)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    page, log = _open(browser, out)
    assert "strongest head-pattern score" in page.inner_text("p.muted")
    page.click("button.at-cell[data-layer='5'][data-head='11']")
    section = page.inner_text("#head-5-11")
    assert "Importance" not in section
    label = page.inner_text("button.at-cell[data-layer='5'][data-head='11']")
    shares = result.label_shares()[5, 11]
    from attnscope.analysis.patterns import LABELS

    assert LABELS[int(np.nanargmax(shares))][:3] in section.splitlines()[0]
    assert label
    assert set(log.requests) == {out.as_uri()} and not log.problems
    page.close()


def test_atlas_bad_input_is_one_sentence(tmp_path):
    missing = tmp_path / "none.duckdb"
    done = subprocess.run([sys.executable, "-m", "attnscope", "atlas", str(missing)],
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no such file" in done.stderr


def test_atlas_draws_each_heads_queries_and_keys(browser, embedded, tmp_path):
    result = at.corpus(embedded, TEXTS, out=tmp_path / "qk.duckdb", batch_size=2,
                       progress=False, embeddings=2000)  # every plain token of the 4 texts
    sample = result.qk_sample()
    n = len(sample.tokens)
    assert n > 40
    path = at.atlas(result).save(tmp_path / "qk.html")
    page, log = _open(browser, path)
    page.click("button.at-cell[data-layer='3'][data-head='7']")
    circles = "#head-3-7 .at-qk circle"
    assert page.evaluate(f"() => document.querySelectorAll('{circles}').length") == 2 * n
    kinds = page.evaluate(f"() => [...document.querySelectorAll('{circles}')].map("
                          "c => c.dataset.kind)")
    assert kinds.count("0") == n and kinds.count("1") == n
    # only the open head is drawn; the others wait for their click
    assert page.evaluate("() => document.querySelectorAll('.at-qk svg').length") == 1

    # the points sit where the joint embedding puts them (x grows with the first component)
    xs = np.array(page.evaluate(f"() => [...document.querySelectorAll('{circles}')].map("
                                "c => Number(c.getAttribute('cx')))"))
    points = at.joint_embedding(sample.queries[:, 3, 7], sample.keys[:, 3, 7]).points
    assert np.corrcoef(xs, points[:, 0])[0, 1] > 0.999

    # a real mouse over the topmost point names its token in its sentence
    page.hover(f"{circles} >> nth={2 * n - 1}")
    tip = page.locator("#head-3-7 .at-tip")
    assert tip.is_visible()
    last = sample.tokens.iloc[n - 1]
    assert tip.inner_text().startswith("key ")
    assert page.inner_text("#head-3-7 .at-tip mark") == last["text"][
        last["char_start"]:last["char_end"]]

    # a token of the hostile text: its sentence stays text
    hostile = next(i for i, t in enumerate(sample.tokens["text"]) if "onerror" in t)
    page.dispatch_event(f"{circles}[data-kind='0'][data-token='{hostile}']", "mouseover")
    shown = tip.inner_text()
    assert shown.startswith("query ") and '<img src=x onerror="alert(1)">' in shown.replace(
        "\n", "")
    assert page.evaluate("() => document.querySelectorAll('img').length") == 0

    # colour by position: the first token of a text violet, keys and queries alike
    page.select_option("#at-qk-colour", "position")
    fills = page.evaluate(f"() => [...document.querySelectorAll('{circles}')].map("
                          "c => c.getAttribute('fill'))")
    assert len(set(fills)) > 3 and fills[:n] == fills[n:]
    assert set(log.requests) == {path.as_uri()}
    assert not log.problems and not log.dialogs
    page.close()
