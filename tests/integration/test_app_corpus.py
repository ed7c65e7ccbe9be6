"""The explorer's corpus browser over its JSON API: every route gives CorpusResult's own
numbers for a small store of the embedded model (two runs: a CoNLL-U treebank and 30
sentences); mistakes get a 4xx answer with one sentence; a wrong store is refused before the
explorer starts."""

from __future__ import annotations

import html
import subprocess
import sys
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

import attnscope as at
from attnscope.errors import AttnscopeError

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from attnscope.app import Limits, create_app
from attnscope.corpora import CorpusResult


def _nan(values):
    """JSON numbers (None for no value) as a float64 array (NaN for no value)."""
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


@pytest.fixture(scope="module")
def client(embedded, corpus_store):
    with TestClient(create_app([embedded], Limits(), corpus=corpus_store)) as c:
        yield c


@pytest.fixture(scope="module")
def sentences(corpus_store):
    return CorpusResult(corpus_store, "sentences")


@pytest.fixture(scope="module")
def treebank(corpus_store):
    return CorpusResult(corpus_store, "treebank")


def test_the_store_and_its_runs(client, embedded, corpus_store):
    info = client.get("/api/corpus").json()
    assert info["store"] == corpus_store.name
    assert [r["run_id"] for r in info["runs"]] == ["treebank", "sentences"]
    assert info["default_run"] == "sentences"  # the latest run
    by_run = {r["run_id"]: r for r in info["runs"]}
    assert by_run["sentences"]["texts"] == 30 and by_run["treebank"]["texts"] == 2
    assert by_run["treebank"]["relations"] and not by_run["sentences"]["relations"]
    assert all(r["served"] and r["model"] == embedded.name and (r["layers"], r["heads"]) == (6, 12)
               for r in info["runs"])
    # the page's configuration carries the same, so the Corpus tab shows without a request
    assert client.get("/api/models").json()["corpus"] == info
    # the documentation says which runs, statistics and layers the routes take
    schema = client.get("/openapi.json").json()["paths"]
    params = {p["name"]: p["schema"] for p in schema["/api/corpus/examples"]["get"]["parameters"]}
    assert params["run"]["anyOf"][0]["enum"] == ["treebank", "sentences"]
    assert (params["layer"]["minimum"], params["layer"]["maximum"]) == (-6, 5)
    assert params["kind"]["enum"][0] == "weight"
    stat = schema["/api/corpus/stat"]["get"]["parameters"][0]["schema"]
    assert "offset:-8" in stat["enum"] and "label:mixed" in stat["enum"]
    assert "GET /api/corpus/examples" in client.get("/docs").text


def test_head_table_stat_and_layers_equal_the_corpus_result(client, sentences, treebank):
    heads = client.get("/api/corpus/heads").json()  # the default run
    assert heads["run"] == "sentences" and heads["texts"] == 30
    expected = sentences.scores()
    assert len(heads["heads"]) == len(expected) == 72
    for row, (_, want) in zip(heads["heads"], expected.iterrows(), strict=True):
        assert (row["layer"], row["head"], row["label"]) == (want["layer"], want["head"],
                                                             want["label"])
        assert row["label_share"] == pytest.approx(want["label_share"], abs=1e-12)
        for name in (*at.analysis.SCORES, "entropy"):
            assert (row["scores"][name] is None) if np.isnan(want[name]) else (
                row["scores"][name] == pytest.approx(want[name], abs=1e-12)), name
    # the previous-token head 0.2 of all-MiniLM-L6-v2 shows through
    best = max(heads["heads"], key=lambda r: r["scores"]["previous"])
    assert (best["layer"], best["head"], best["label"]) == (0, 2, "previous")
    other = client.get("/api/corpus/heads", params={"run": "treebank"}).json()
    assert other["run"] == "treebank" and other["texts"] == 2

    for stat in ("previous", "entropy", "offset:-1", "label:broad", "induction"):
        body = client.get("/api/corpus/stat", params={"stat": stat}).json()
        np.testing.assert_allclose(_nan(body["mean"]), sentences.array(stat), atol=1e-12)
        np.testing.assert_allclose(_nan(body["std"]), sentences.array(stat, "std"), atol=1e-12)
        np.testing.assert_array_equal(body["n"], np.nan_to_num(sentences.array(stat, "n")))

    layers = client.get("/api/corpus/layers").json()
    assert [p["stat"] for p in layers["panels"]] == ["first", "separator", "punctuation",
                                                     "self", "entropy", "distance"]
    for panel in layers["panels"]:
        values = sentences.array(panel["stat"])  # (L, H)
        np.testing.assert_allclose(_nan(panel["values"]), values, atol=1e-12)
        np.testing.assert_allclose(panel["layer_mean"], values.mean(axis=1), atol=1e-12)
    assert layers["offsets"] == list(range(-8, 9))
    np.testing.assert_allclose(np.array(layers["profile"], dtype=float), sentences.profile(),
                               atol=1e-12)
    # the charts the page draws carry the same numbers (4 significant digits)
    lines, heatmap = layers["charts"]
    assert lines["kind"] == "lines" and heatmap["kind"] == "heatmap"
    np.testing.assert_allclose(lines["panels"][0]["mean"],
                               sentences.array("first").mean(axis=1), rtol=1e-3)
    assert heatmap["shape"] == [72, 17] and heatmap["rows"][14] == "1.2"


def test_relations_examples_and_search_equal_the_corpus_result(client, embedded, sentences,
                                                               treebank):
    assert client.get("/api/corpus/relations").json()["relations"] == []  # plain sentences
    body = client.get("/api/corpus/relations", params={"run": "treebank"}).json()
    expected = treebank.relations()
    assert len(body["relations"]) == len(expected) > 0
    for row, (_, want) in zip(body["relations"], expected.iterrows(), strict=True):
        assert {k: row[k] for k in ("relation", "direction", "n", "layer", "head",
                                    "baseline_offset")} == {
            k: (want[k] if isinstance(want[k], str) else int(want[k]))
            for k in ("relation", "direction", "n", "layer", "head", "baseline_offset")}
        assert row["accuracy"] == pytest.approx(want["accuracy"])
        assert row["baseline_accuracy"] == pytest.approx(want["baseline_accuracy"])
    det = next(r for r in body["relations"] if (r["relation"], r["direction"]) == (
        "det", "dependent->head"))
    assert det["n"] == 4  # The cat, the mat, A boat, the harbour

    examples = client.get("/api/corpus/examples", params={"layer": 0, "head": 2}).json()
    want = sentences.examples(0, 2)
    assert examples["served"] and (examples["layer"], examples["head"]) == (0, 2)
    assert [e["text"] for e in examples["examples"]] == list(want["text"])
    assert [e["value"] for e in examples["examples"]] == pytest.approx(list(want["value"]))
    assert [(e["query_token"], e["key_token"], e["query_pos"], e["key_pos"])
            for e in examples["examples"]] == [
        (r.query_token, r.key_token, r.query_pos, r.key_pos) for r in want.itertuples()]
    # each token's characters in the text, found again with the served model's tokenizer
    for e in examples["examples"]:
        for end in ("query", "key"):
            segment, start, stop = e[f"{end}_span"]
            assert segment == 0
            assert e["text"][start:stop].lower() == e[f"{end}_token"].removeprefix("##")
    top = examples["examples"][0]
    trace = at.capture(embedded, top["text"])
    assert top["value"] == pytest.approx(float(trace.attentions[0, 2, top["query_pos"],
                                                                top["key_pos"]]), abs=1e-6)
    # negative indices count from the end; a score kind lists texts without tokens
    scored = client.get("/api/corpus/examples", params={"layer": -6, "head": -10,
                                                        "kind": "previous", "k": 2}).json()
    assert (scored["layer"], scored["head"]) == (0, 2) and len(scored["examples"]) == 2
    assert scored["examples"][0]["query_token"] is None
    assert scored["examples"][0]["query_span"] is None
    assert [e["text"] for e in scored["examples"]] == list(
        sentences.examples(0, 2, "previous", k=2)["text"])

    found = client.get("/api/corpus/search", params={"token": "it", "top": 3}).json()
    want = sentences.search("it", model=embedded, top=3)
    assert found["occurrences"] == int(want["occurrences"].iloc[0]) == 5
    assert len(found["rows"]) == len(want) == 72 * 3
    for row, (_, w) in zip(found["rows"], want.iterrows(), strict=True):
        assert (row["layer"], row["head"], row["key_token"]) == (w["layer"], w["head"],
                                                                 w["key_token"])
        assert row["weight"] == pytest.approx(w["weight"], abs=1e-9)


@pytest.mark.parametrize(("route", "params", "status", "sentence"), [
    ("/api/corpus/examples", {"layer": 6, "head": 0}, 422, "layer 6 is out of range"),
    ("/api/corpus/examples", {"layer": 0, "head": -13}, 422, "head -13 is out of range"),
    ("/api/corpus/examples", {"layer": 0, "head": 1, "kind": "pretty"}, 422,
     "Unknown example kind 'pretty'"),
    ("/api/corpus/examples", {"layer": "first", "head": 1}, 422, "The field 'query.layer'"),
    ("/api/corpus/examples", {"head": 1}, 422, "The request needs the field 'query.layer'"),
    ("/api/corpus/stat", {"stat": "prettiness"}, 422, "Unknown statistic 'prettiness'"),
    ("/api/corpus/heads", {"run": "nope"}, 422, "The corpus store has no run 'nope'"),
    ("/api/corpus/atlas", {"run": "nope"}, 422, "The corpus store has no run 'nope'"),
    ("/api/corpus/search", {"token": "zebra"}, 422, "No text of this run has the token"),
    ("/api/corpus/search", {"token": "  "}, 422, "Give a token to search for"),
    ("/api/corpus/nothing", {}, 404, "There is nothing at '/api/corpus/nothing'"),
])
def test_mistakes_get_one_sentence(client, route, params, status, sentence):
    answer = client.get(route, params=params)
    assert answer.status_code == status
    body = answer.json()
    assert set(body) == {"error"} and body["error"].startswith(sentence)
    assert body["error"].endswith(".") and "\n" not in body["error"]


def test_without_a_corpus_the_routes_say_how_to_get_one(tiny_models):
    with TestClient(create_app([tiny_models["bert"]])) as c:
        assert c.get("/api/models").json()["corpus"] is None
        for route in ("/api/corpus", "/api/corpus/heads", "/api/corpus/examples"):
            answer = c.get(route)
            assert answer.status_code == 404 and answer.json() == {"error": (
                "This explorer browses no corpus: start it with attnscope serve --corpus "
                "stats.duckdb.")}
        assert not any(p.startswith("/api/corpus") for p in c.get("/openapi.json").json()[
            "paths"])


def test_a_run_of_a_model_not_served(tiny_models, corpus_store, embedded):
    tiny = tiny_models["bert"]
    with TestClient(create_app([tiny], corpus=CorpusResult(corpus_store, "treebank"))) as c:
        info = c.get("/api/corpus").json()
        assert info["default_run"] == "treebank"  # the CorpusResult's run comes first
        assert not any(r["served"] for r in info["runs"])
        examples = c.get("/api/corpus/examples", params={"layer": 1, "head": 3}).json()
        assert examples["served"] is False and examples["examples"]
        assert examples["examples"][0]["query_span"] is None  # no tokenizer to find it
        # the atlas is there, and says its examples' views need the model
        page = c.get("/api/corpus/atlas").text
        assert "a.at-view" not in page and "class=at-view" not in page
        assert f"--corpus STORE --model {embedded.name}" in page
        answer = c.get("/api/corpus/search", params={"token": "the"})
        assert answer.status_code == 422 and answer.json()["error"] == (
            f"Token search runs the model of run 'treebank', {embedded.name}, which this "
            f"explorer does not serve: start it with --model {embedded.name}.")


def test_wrong_stores_are_refused_in_one_sentence(tiny_models, tmp_path):
    import duckdb

    from attnscope.corpora.store import Store

    model = tiny_models["bert"]
    missing = tmp_path / "missing.duckdb"
    with pytest.raises(AttnscopeError, match=r"^Cannot read the corpus store '.*missing\.duckdb'"
                                             r": no such file\.$"):
        create_app([model], corpus=missing)
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database\n", encoding="utf-8")
    with pytest.raises(AttnscopeError, match=r"^Cannot open '.*notes\.duckdb' as a DuckDB "):
        create_app([model], corpus=text)
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE t (x INTEGER)").close()
    with pytest.raises(AttnscopeError, match=r"is a DuckDB file but not an attnscope corpus "
                                             r"store \(make one with attnscope corpus\)\.$"):
        create_app([model], corpus=other)
    empty = tmp_path / "empty.duckdb"
    Store(empty).close()
    with pytest.raises(AttnscopeError, match=r"holds no counted text yet: run attnscope corpus "
                                             r"on it first\.$"):
        create_app([model], corpus=empty)
    with pytest.raises(AttnscopeError, match=r"^Cannot read the corpus store .*: it is a folder"):
        create_app([model], corpus=tmp_path)
    with pytest.raises(AttnscopeError, match=r"^The corpus must be a \.duckdb file or a "
                                             r"CorpusResult, not int\.$"):
        create_app([model], corpus=3)

    # the command line says the same in one line, exit status 2, before loading any model
    answer = subprocess.run([sys.executable, "-m", "attnscope", "serve", "--corpus", str(other)],
                            capture_output=True, text=True, timeout=600)
    assert answer.returncode == 2 and answer.stdout == ""
    assert answer.stderr == (f"attnscope: error: '{other}' is a DuckDB file but not an "
                             "attnscope corpus store (make one with attnscope corpus).\n")


def test_concurrent_requests_share_the_store_safely(embedded, corpus_store, sentences):
    """Many requests at once, on worker threads, through the one DuckDB connection (and a
    token search with its own), while the model runs: each answer is the one a lone request
    gets."""
    import asyncio

    import httpx

    from tests.explorer_server import run_async

    app = create_app([embedded], corpus=corpus_store)
    urls = [f"/api/corpus/examples?layer={i % 6}&head={i % 12}&run={run}"
            for i in range(24) for run in ("sentences", "treebank")]
    urls += [f"/api/corpus/stat?stat={s}"
             for s in ("previous", "first", "entropy", "offset%3A%2B1")]  # (offset:+1)
    urls.insert(3, "/api/corpus/search?token=it&top=3")  # runs the model meanwhile

    async def ask_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.get(u) for u in urls))

    answers = run_async(ask_all())
    assert [(u, a.text) for u, a in zip(urls, answers, strict=True) if a.status_code != 200] == []
    for url, answer in zip(urls, answers, strict=True):
        body = answer.json()
        if "occurrences" in body:
            assert body["occurrences"] == 5 and len(body["rows"]) == 72 * 3
        elif "examples" in body:
            run = CorpusResult(corpus_store, body["run"])
            assert [e["text"] for e in body["examples"]] == list(
                run.examples(body["layer"], body["head"])["text"]), url
        else:
            np.testing.assert_allclose(_nan(body["mean"]), sentences.array(body["stat"]))


def test_the_atlas_is_the_pages_atlas_with_head_view_links(client, sentences, treebank):
    answer = client.get("/api/corpus/atlas")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert page == at.atlas(sentences, view_links=True).html
    assert page.count("class=at-cell") == 72
    hrefs = [h.split("'")[0] for h in page.split("class=at-view target=_top href='")[1:]]
    examples = sentences.examples(3, 4, k=3)
    mine = [parse_qs(urlparse(html.unescape(h)).query) for h in hrefs
            if "layer=3&amp;head=4" in h]
    assert [q["text"][0] for q in mine] == list(examples["text"])
    assert all(q["model"] == [sentences.model_name] for q in mine)
    other = client.get("/api/corpus/atlas", params={"run": "treebank"}).text
    assert other == at.atlas(treebank, view_links=True).html and other != page
