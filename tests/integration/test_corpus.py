"""Corpus mode on the embedded model: statistics against Traces, syntax against a hand count,
bad input, resuming after SIGKILL, the Ray engine, and the reading API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import attnscope as at
from attnscope.analysis.corpus import OFFSETS, STATS
from attnscope.analysis.patterns import LABELS, SCORES, head_patterns
from tests.conftest import CORPUS_CONLLU
from tests.corpus_runs import kill_after_committed

TEXTS = [
    "The girl poured water into a tall glass until it overflowed.",
    "Rain fell.",
    "It was late, and the old dog slept by the fire while the wind howled outside.",
    "She said that she would come back tomorrow, but she never did.",
    "Leaves fall in autumn; autumn is marked by colorful foliage and cooler nights.",
    "The committee approved the proposal after a long debate about its costs and benefits, "
    "which had divided the members for several weeks.",
    "Why?",
    "A small boat drifted slowly across the quiet harbour at dawn.",
]

ROOT = Path(__file__).resolve().parents[2]


def _hand_statistics(model, texts):
    """Every statistic per text from individual capture() Traces: ``[N, S, L, H]``."""
    values = []
    for text in texts:
        trace = at.capture(model, text)
        table = head_patterns(trace)
        attn = trace.attentions.astype(np.float64)  # (L, H, T, T)
        plain = ~np.asarray(trace.special_mask, dtype=bool)
        n = trace.num_tokens
        row = np.full((len(STATS), trace.num_layers, trace.num_heads), np.nan)
        row[: len(SCORES)] = np.moveaxis(table.scores, -1, 0)
        p = np.clip(attn, 1e-300, None)
        entropy = -(attn * np.log(p)).sum(-1)  # (L, H, T)
        row[len(SCORES)] = entropy[:, :, plain].mean(-1)
        for j, offset in enumerate(OFFSETS):
            rows = [q for q in range(n) if plain[q] and 0 <= q + offset < n]
            if rows:
                row[len(SCORES) + 1 + j] = np.mean(
                    [attn[:, :, q, q + offset] for q in rows], axis=0)
        for j, label in enumerate(LABELS):
            row[len(SCORES) + 1 + len(OFFSETS) + j] = table.labels == label
        values.append(row)
    return np.array(values)


@pytest.fixture(scope="module")
def small_run(embedded, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "stats.duckdb"
    return at.corpus(embedded, TEXTS, out=path, batch_size=3, progress=False)


def test_statistics_equal_a_hand_computation_from_traces(embedded, small_run):
    hand = _hand_statistics(embedded, TEXTS)  # (N, S, L, H)
    for s, stat in enumerate(STATS):
        column = hand[:, s]
        count = (~np.isnan(column)).sum(0)
        np.testing.assert_array_equal(small_run.array(stat, "n"), count, err_msg=stat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN columns (induction)
            np.testing.assert_allclose(small_run.array(stat), np.nanmean(column, axis=0),
                                       atol=1e-6, rtol=1e-6, err_msg=stat)
            np.testing.assert_allclose(small_run.array(stat, "std"), np.nanstd(column, axis=0),
                                       atol=1e-6, rtol=1e-6, err_msg=stat)
    # the layer-0 previous-token head of all-MiniLM-L6-v2 shows through the corpus
    scores = small_run.scores()
    best = scores.loc[scores["previous"].idxmax()]
    assert (best["layer"], best["head"]) == (0, 2) and best["previous"] > 0.85
    assert best["label"] == "previous"
    assert small_run.profile().shape == (6, 12, 17)
    assert small_run.profile()[0, 2, OFFSETS.index(-1)] == pytest.approx(
        small_run.array("offset:-1")[0, 2])
    shares = small_run.label_shares()
    np.testing.assert_allclose(shares.sum(-1), 1.0, atol=1e-12)


def test_examples_are_the_strongest_weights(embedded, small_run):
    examples = small_run.examples(0, 2)
    assert 1 <= len(examples) <= 5
    assert list(examples["value"]) == sorted(examples["value"], reverse=True)
    top = examples.iloc[0]
    trace = at.capture(embedded, top["text"])
    plain = ~np.asarray(trace.special_mask, dtype=bool)
    weights = np.where(plain[:, None] & plain[None, :], trace.attentions[0, 2], -1)
    assert top["value"] == pytest.approx(weights.max(), abs=1e-6)
    assert trace.tokens[top["query_pos"]] == top["query_token"]
    # no other text of the corpus has a stronger weight in this head
    for text in TEXTS:
        t = at.capture(embedded, text)
        p = ~np.asarray(t.special_mask, dtype=bool)
        assert np.where(p[:, None] & p[None, :], t.attentions[0, 2], -1).max() <= top[
            "value"] + 1e-6
    by_score = small_run.examples(-6, -10, kind="previous", k=2)
    assert len(by_score) == 2 and by_score["value"].iloc[0] >= by_score["value"].iloc[1]
    view = small_run.head_view(0, 2, model=embedded)
    assert view.layer == 0 and view.heads == [2] and view.trace.text == top["text"]


def test_token_search_and_sql(embedded, small_run):
    found = small_run.search("it", model=embedded, top=3)
    assert set(found.columns) == {"layer", "head", "key_token", "weight", "occurrences"}
    assert len(found) == 6 * 12 * 3
    # by hand: head 0.2 from every "it" of the corpus, summed by key token
    totals: dict[str, float] = {}
    occurrences = 0
    for text in TEXTS:
        trace = at.capture(embedded, text)
        for q, token in enumerate(trace.tokens):
            if token == "it":
                occurrences += 1
                for k, key in enumerate(trace.tokens):
                    totals[key] = totals.get(key, 0.0) + float(trace.attentions[0, 2, q, k])
    row = found[(found["layer"] == 0) & (found["head"] == 2)].iloc[0]
    best = max(totals, key=totals.get)
    assert row["key_token"] == best and row["occurrences"] == occurrences
    assert row["weight"] == pytest.approx(totals[best] / occurrences, abs=1e-5)
    rel = small_run.sql("SELECT count(*) AS n FROM texts")
    assert rel.fetchall() == [(len(TEXTS),)]
    frame = small_run.sql("SELECT * FROM head_summary WHERE stat = ?", ["previous"]).df()
    assert len(frame) == 72
    assert small_run.sql("SELECT layer, head, mean FROM head_summary").pl().shape == (
        72 * len(STATS) - 72, 3)  # induction has no value in an encoder
    small_run.close()
    with pytest.raises(at.AttnscopeError, match="Unknown statistic"):
        small_run.array("prev")


CONLLU = CORPUS_CONLLU + """\
# sent_id = 3 (malformed: a head past the end)
1\tBirds\tbird\tNOUN\t_\t_\t2\tnsubj\t_\t_
2\tsing\tsing\tVERB\t_\t_\t9\troot\t_\t_

# sent_id = 4
1\tThe\tthe\tDET\t_\t_\t4\tdet\t_\t_
2\tunbelievably\tunbelievably\tADV\t_\t_\t3\tadvmod\t_\t_
3\tquiet\tquiet\tADJ\t_\t_\t4\tamod\t_\t_
4\tnight\tnight\tNOUN\t_\t_\t5\tnsubj\t_\t_
5\tended\tend\tVERB\t_\t_\t0\troot\t_\t_
"""


def test_conllu_relations_match_a_hand_count(embedded, tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    result = at.corpus(embedded, path, out=tmp_path / "ud.duckdb", progress=False)
    assert result.num_texts == 3
    problems = result.problems()
    assert list(problems["kind"]) == ["malformed"]
    assert problems["position"].iloc[0] == 20  # the sentence's first line
    assert "line 22 points to head 9" in problems["message"].iloc[0]

    # Hand count: word-level attention from capture(merge_words=True) (these words are the
    # treebank's), each word's most-attended word among the sentence's words.
    sentences = [
        ("The cat sat on the mat.", [(0, 1, "det"), (1, 2, "nsubj"), (3, 5, "case"),
                                     (4, 5, "det"), (5, 2, "obl"), (6, 2, "punct")]),
        ("A small boat drifted across the harbour", [(0, 2, "det"), (1, 2, "amod"),
                                                     (2, 3, "nsubj"), (4, 6, "case"),
                                                     (5, 6, "det"), (6, 3, "obl")]),
        ("The unbelievably quiet night ended", [(0, 3, "det"), (1, 2, "advmod"),
                                                (2, 3, "amod"), (3, 4, "nsubj")]),
    ]
    hits: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[tuple[str, str], int] = {}
    for text, arcs in sentences:
        trace = at.capture(embedded, text, merge_words=True)
        words = np.flatnonzero(~np.asarray(trace.special_mask, dtype=bool))  # word units
        att = trace.attentions[:, :, words][:, :, :, words]  # (L, H, W, W)
        choice = att.argmax(-1)
        for dep, gov, rel in arcs:
            for direction, src, dst in (("dependent->head", dep, gov),
                                        ("head->dependent", gov, dep)):
                hits.setdefault((rel, direction), np.zeros((6, 12), int))
                hits[(rel, direction)] += choice[:, :, src] == dst
                counts[(rel, direction)] = counts.get((rel, direction), 0) + 1
    for (rel, direction), grid in hits.items():
        np.testing.assert_allclose(result.relation_accuracy(rel, direction),
                                   grid / counts[(rel, direction)], err_msg=rel)
    table = result.relations().set_index(["relation", "direction"])
    det = table.loc[("det", "dependent->head")]
    assert det["n"] == 5
    # 3 of the 5 det arcs point one word ahead (the others +2 and +3): best offset +1, 3/5
    assert det["baseline_offset"] == 1 and det["baseline_accuracy"] == pytest.approx(0.6)
    assert table.loc[("obl", "dependent->head"), "n"] == 2  # obl:path counts as obl
    # from the noun back to its determiner: the previous-token head 0.2 finds the 3 that
    # stand right before their noun
    back = result.relation_accuracy("det", "head->dependent")
    assert back[0, 2] == pytest.approx(0.6)


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_bad_input_is_reported_with_line_numbers(tmp_path):
    path = tmp_path / "mixed.jsonl"
    _write_lines(path, [
        b'{"text": "The cat sat on the mat."}',
        b"",
        b'{"text": "Birds sing at dawn."',
        b'{"body": "no text field"}',
        b'{"text": "caf\xe9 au lait"}',
        b'["a list"]',
        b'{"text": 42}',
        b'{"text": "The cat sat on the mat."}',
        b'{"text": "' + b"word " * 700 + b'"}',
        b'{"text": "A quiet end."}',
    ])
    out = tmp_path / "bad.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "attnscope", "corpus", str(path), "-o",
                           str(out), "-q"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for expected in ("line 3 is not valid JSON", "line 4 has no field 'text'",
                     "line 5 is not UTF-8 text", "line 6 is a JSON list",
                     "line 7: field 'text' holds a int", "line 8 repeats line 1",
                     "line 9: the text has 702 tokens, more than the model's limit of 512"):
        assert expected in proc.stderr, expected
    assert "3 texts now" in proc.stdout and "1 empty" in proc.stdout
    result = at.CorpusResult(out)
    problems = result.problems()
    assert list(zip(problems["position"], problems["kind"], strict=True)) == [
        (2, "empty"), (3, "malformed"), (4, "missing-field"), (5, "not-utf8"),
        (6, "malformed"), (7, "malformed"), (8, "duplicate"), (9, "truncated")]
    texts = result.texts()
    assert list(texts["position"]) == [1, 9, 10]
    assert list(texts["truncated"]) == [0, 190, 0]

    # a whole-file mistake is one sentence and status 2
    csv_path = tmp_path / "two.csv"
    csv_path.write_text("a,b\nx,y\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "attnscope", "corpus", str(csv_path), "-o",
                           str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"attnscope: error: '{csv_path}' has no 'text' column: name the text column with "
        "--text-field (one of 'a', 'b')."]


def _table_rows(path: Path) -> dict[str, list]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return {
            "texts": con.execute("SELECT text_key, position, n_tokens, batch FROM texts "
                                 "ORDER BY text_key").fetchall(),
            "head_stats": con.execute("SELECT layer, head, stat, n, sum, sum_sq FROM "
                                      "head_stats ORDER BY layer, head, stat").fetchall(),
            "examples": con.execute("SELECT layer, head, kind, value, text_key, query_pos, "
                                    "key_pos FROM examples ORDER BY ALL").fetchall(),
            "problems": con.execute("SELECT position, kind FROM problems ORDER BY ALL")
            .fetchall(),
        }
    finally:
        con.close()


def test_killed_and_resumed_run_equals_a_clean_run(tmp_path):
    rng = np.random.default_rng(3)
    words = ["the", "a", "river", "stone", "bright", "quiet", "market", "children", "carried",
             "old", "letters", "across", "winter", "town", "slowly", ",", ".", "and", "while",
             "under"]
    lines = [" ".join(rng.choice(words, size=rng.integers(4, 30))) for _ in range(240)]
    lines[40] = ""
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "attnscope", "corpus", str(path), "--batch-size", "4",
               "--run", "r"]

    clean = tmp_path / "clean.duckdb"
    subprocess.run([*command, "-q", "-o", str(clean)], check=True, env=env, timeout=600,
                   capture_output=True)

    killed = tmp_path / "killed.duckdb"
    # three batches committed (the one empty line is counted when it is planned)
    kill_after_committed([*command, "-o", str(killed)], env, counted=13)
    partial = _table_rows(killed)
    assert 12 <= len(partial["texts"]) < 239

    resumed = subprocess.run([*command, "-q", "-o", str(killed)], env=env, timeout=600,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(partial['texts'])} already done" in resumed.stdout
    assert _table_rows(killed) == _table_rows(clean)


def test_ray_engine_equals_the_local_engine(embedded, tmp_path, small_run):
    pytest.importorskip("ray")
    try:
        result = at.corpus(embedded, TEXTS, out=tmp_path / "ray.duckdb", batch_size=3,
                           engine="ray", workers=2, progress=False)
    except at.AttnscopeError as err:
        if "Cannot start or reach Ray" in str(err):  # the machine, not attnscope
            pytest.skip(str(err))
        raise
    assert result.num_texts == len(TEXTS)
    for stat in STATS:
        np.testing.assert_array_equal(result.array(stat, "n"), small_run.array(stat, "n"))
        np.testing.assert_allclose(result.array(stat), small_run.array(stat), atol=1e-6,
                                   rtol=1e-6, err_msg=stat)
    local = small_run.texts().sort_values("text_key")["batch"].tolist()
    assert result.texts().sort_values("text_key")["batch"].tolist() == local


def test_sources_read_every_format(tmp_path):
    import pandas as pd

    from attnscope.analysis.corpus import CorpusItem
    from attnscope.corpora.sources import Problem, open_source

    frame = pd.DataFrame({"sentence": ["One text.", "", "Two texts."],
                          "other": ["Pair one.", "x", "Pair two."]})
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    for name in ("t.parquet", "t.csv"):
        records = list(open_source(tmp_path / name, text_field="sentence",
                                   pair_field="other"))
        assert [type(r) for r in records] == [CorpusItem, Problem, CorpusItem]
        assert (records[0].text, records[0].text_b) == ("One text.", "Pair one.")
    csv_lines = [r.position for r in open_source(tmp_path / "t.csv", text_field="sentence")]
    assert csv_lines == [2, 3, 4]  # CSV positions are file lines (the header is line 1)

    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"text": ["Alpha beta.", "Gamma delta."]})
    dataset.save_to_disk(str(tmp_path / "saved"))
    for source in (dataset, tmp_path / "saved"):
        opened = open_source(source)
        assert opened.total == 2 and [r.text for r in opened] == ["Alpha beta.", "Gamma delta."]
    pairs = list(open_source([("a b", "c d"), 7, {"text": "e f"}]))
    assert pairs[0].text_b == "c d" and pairs[1].message.startswith("item 2 is a int")
    assert pairs[2].text == "e f"
    (tmp_path / "x.json").write_text(json.dumps({"text": "no"}), encoding="utf-8")
    with pytest.raises(at.AttnscopeError, match=r"give a \.txt, \.jsonl"):
        open_source(tmp_path / "x.json")
