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
