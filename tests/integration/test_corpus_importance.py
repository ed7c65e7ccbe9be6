"""Corpus mode with head importance: equal to head_importance on the same texts, resumed after
SIGKILL without counting twice, and one sentence for every bad option."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import attnscope as at
from attnscope.errors import AttnscopeError
from tests.corpus_runs import kill_after_committed

# Texts of distinct lengths: head_importance orders a batch by length, so the embedded model's
# random probes (one per text) go to the same texts in corpus mode and in a direct call.
TEXTS = [
    "Rain fell.",
    "The girl poured water into a tall glass until it overflowed.",
    "It was late, and the old dog slept by the fire while the wind howled outside.",
    "She said that she would come back tomorrow.",
    "A small boat drifted slowly across the quiet harbour at dawn, then turned toward the "
    "old stone pier.",
    "Leaves fall in autumn.",
]

ROOT = Path(__file__).resolve().parents[2]


def _lengths_are_distinct(model) -> bool:
    return len({len(model.tokenizer(t)["input_ids"]) for t in TEXTS}) == len(TEXTS)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["gradient", "ablation"])
def test_tiny_model_importance_equals_head_importance(tiny_models, tmp_path, family, method):
    model = tiny_models[family]
    result = at.corpus(model, TEXTS, out=tmp_path / "stats.duckdb", batch_size=2,
                       progress=False, importance=method)
    found = result.importance()
    direct = at.head_importance(model, TEXTS, method)
    assert found.method == method and found.texts == len(TEXTS)
    assert found.values.shape == (model.num_layers, model.num_heads)
    # ablation effects are differences of float32 losses, batched differently: a few ulps
    atol = 1e-6 if method == "ablation" else 1e-9
    np.testing.assert_allclose(found.values, direct.values, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(found.spread, direct.spread, rtol=1e-4, atol=atol)
    assert result.settings["importance"] == method


def test_embedded_model_gradient_importance_equals_head_importance(embedded, tmp_path):
    assert _lengths_are_distinct(embedded)
    # one batch (index 0), so its probes are those of head_importance's seed 0
    result = at.corpus(embedded, TEXTS, out=tmp_path / "stats.duckdb", batch_size=len(TEXTS),
                       progress=False, importance="gradient")
    assert result.sql("SELECT DISTINCT batch FROM texts").fetchall() == [(0,)]
    found = result.importance()
    direct = at.head_importance(embedded, TEXTS, "gradient", seed=0)
    np.testing.assert_allclose(found.values, direct.values, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(found.spread, direct.spread, rtol=1e-4, atol=1e-12)
    # the pattern statistics are stored beside it, unchanged
    plain = at.corpus(embedded, TEXTS, out=tmp_path / "plain.duckdb", batch_size=len(TEXTS),
                      progress=False)
    np.testing.assert_array_equal(plain.array("previous"), result.array("previous"))
    assert not plain.has_importance()


def _importance_rows(path: Path) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT layer, head, method, n, sum, sum_sq FROM head_importance "
                           "ORDER BY layer, head").fetchall()
    finally:
        con.close()


def test_killed_and_resumed_run_counts_importance_once(tmp_path):
    rng = np.random.default_rng(5)
    words = ["the", "a", "river", "stone", "bright", "quiet", "market", "children", "carried",
             "old", "letters", "across", "winter", "town", "slowly", ",", ".", "and"]
    lines = [" ".join(rng.choice(words, size=rng.integers(4, 20))) for _ in range(80)]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "attnscope", "corpus", str(path), "--batch-size", "4",
               "--run", "r", "--importance"]
    clean = tmp_path / "clean.duckdb"
    subprocess.run([*command, "-q", "-o", str(clean)], check=True, env=env, timeout=600,
                   capture_output=True)

    killed = tmp_path / "killed.duckdb"
    kill_after_committed([*command, "-o", str(killed)], env, counted=12)  # three batches
    partial = _importance_rows(killed)
    assert partial and 12 <= partial[0][3] < 80

    resumed = subprocess.run([*command, "-q", "-o", str(killed)], env=env, timeout=600,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    after, whole = _importance_rows(killed), _importance_rows(clean)
    assert [r[:4] for r in after] == [r[:4] for r in whole]  # every head counts 80 texts once
    assert {r[3] for r in after} == {80}
    np.testing.assert_allclose([r[4:] for r in after], [r[4:] for r in whole], rtol=1e-9)


def test_bad_importance_options_are_one_sentence(embedded, tiny_models, tmp_path):
    cases = [
        (dict(importance="exact"), 'importance must be "gradient", "ablation" or None'),
        (dict(importance="gradient", importance_budget=-1), "importance_budget must be"),
        (dict(importance="gradient", engine="ray"), "local engine only"),
        (dict(importance="ablation", importance_budget=1e-6), "past the budget"),
    ]
    for number, (options, words) in enumerate(cases):
        out = tmp_path / f"refused{number}.duckdb"
        with pytest.raises(AttnscopeError, match=re.escape(words)) as err:
            at.corpus(embedded, TEXTS, out=out, progress=False, **options)
        assert "\n" not in str(err.value)
        assert _texts_counted(out) == 0  # refused before any batch was committed
    with pytest.raises(AttnscopeError, match="text pairs"):
        at.corpus(embedded, [("A cat sat.", "It slept.")], out=tmp_path / "pairs.duckdb",
                  progress=False, importance="gradient")

    # a run resumed with another importance setting would count part of its texts only
    model = tiny_models["gpt2"]
    plain = tmp_path / "plain.duckdb"
    at.corpus(model, TEXTS[:2], out=plain, run="r", progress=False)
    with pytest.raises(AttnscopeError, match="began with no --importance"):
        at.corpus(model, TEXTS, out=plain, run="r", progress=False, importance="gradient")
    with pytest.raises(AttnscopeError, match="has no head importance"):
        at.CorpusResult(plain).importance()


def _texts_counted(path: Path) -> int:
    import duckdb

    if not path.exists():
        return 0
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM texts").fetchone()[0]
    finally:
        con.close()


def test_cli_refuses_ablation_past_its_budget(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "attnscope", "corpus", str(path), "-q", "-o",
                           str(tmp_path / "s.duckdb"), "--importance", "ablation",
                           "--importance-budget", "0.000001"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "past the budget" in lines[0] and "Traceback" not in done.stderr


def test_a_damaged_importance_table_is_one_sentence(tiny_models, tmp_path):
    import duckdb

    out = tmp_path / "stats.duckdb"
    at.corpus(tiny_models["gpt2"], TEXTS[:2], out=out, progress=False, importance="gradient")
    con = duckdb.connect(str(out))
    con.execute("UPDATE head_importance SET layer = 99 WHERE layer = 1 AND head = 0")
    con.close()
    with pytest.raises(AttnscopeError, match="head_importance rows reach layer 99"):
        at.CorpusResult(out)
