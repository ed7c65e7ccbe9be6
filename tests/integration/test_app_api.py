"""The explorer's JSON API gives what the library gives: the same view payload, head table,
explanation, rollout and flow, and differences; its pages are self-contained; its command
line says what is wrong in one sentence."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

import attnscope as at
from tests.explorer_server import run_async

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from attnscope.app import Limits, create_app
from attnscope.render import compare

TEXT = "The animal didn't cross the street because it was too tired."
TEXT_B = "The animal didn't cross the street because it was too wide."
HOSTILE = "<img src=x onerror=alert(1)> </script><script>alert(2)</script>"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from attnscope.testing import build_tiny_model

    return at.load(build_tiny_model("bert", tmp_path_factory.mktemp("api-model")), device="cpu")


@pytest.fixture(scope="module")
def app(embedded, tiny_bert):
    return create_app([embedded, tiny_bert], Limits())


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def _weights(spec) -> np.ndarray:
    """Attention ``[L, H, T, T]`` from a view payload, decoded as the page decodes it."""
    from attnscope.render import html

    if hasattr(html, "decode_attention"):
        return html.decode_attention(spec)
    raw = b"".join(zlib.decompress(base64.b64decode(piece)) for piece in spec["b64"])
    return np.frombuffer(raw, dtype=np.uint8).reshape(spec["shape"]) / 255


def test_capture_gives_the_views_payload(client, embedded):
    first = client.post("/api/capture", json={"text": TEXT, "layer": -1, "head": 3})
    assert first.status_code == 200 and first.headers["x-attnscope-cache"] == "miss"
    again = client.post("/api/capture", json={"text": TEXT, "layer": -1, "head": 3})
    assert again.headers["x-attnscope-cache"] == "hit" and again.content == first.content
    body = first.json()
    trace = at.capture(embedded, TEXT, qkv=True)
    assert body["tokens"] == list(trace.tokens)
    assert (body["layer"], body["head"], body["num_layers"], body["num_heads"]) == (5, 3, 6, 12)
    # exactly the payload the library's own view pages carry
    view = at.AttnView(trace, ["head", "model", "neuron", "tokens"], layer=5, heads=[3], head=3)
    expected = json.loads(json.dumps(view.payload()))
    assert body["view"] == expected
    weights = _weights(body["view"]["parts"][0]["att"])  # (L, H, T, T)
    # as the page encodes them: each weight within its bound (below 1e-4, its row's mean)
    from attnscope.render import html

    assert (np.abs(weights - trace.attentions)
            <= html.WEIGHT_ERROR * trace.attentions + html.FLOOR).all()


def test_models_are_the_allowlist(client, embedded, tiny_bert):
    body = client.get("/api/models").json()
    assert [m["name"] for m in body["models"]] == [embedded.name, tiny_bert.name]
    assert body["default"] == embedded.name and body["limits"]["max_tokens"] == 256
    r = client.post("/api/capture", json={"text": "hello", "model": tiny_bert.name})
    assert r.status_code == 200 and r.json()["num_layers"] == tiny_bert.num_layers
    schema = client.get("/openapi.json").json()
    model_field = schema["components"]["schemas"]["TextInput"]["properties"]["model"]
    assert model_field["anyOf"][0]["enum"] == [embedded.name, tiny_bert.name]


def test_heads_explain_rollout_and_flow_equal_the_library(client, embedded):
    trace = at.capture(embedded, TEXT, qkv=True)
    heads = client.post("/api/heads", json={"text": TEXT}).json()
    table = at.head_patterns(trace)
    assert len(heads["heads"]) == 72
    for row, record in zip(heads["heads"], table.records(), strict=True):
        assert (row["layer"], row["head"], row["label"], row["class"]) == (
            record["layer"], record["head"], record["label"], record["class"])
        for name in at.analysis.SCORES:
            expected = record[name]
            assert (row["scores"][name] is None) if np.isnan(expected) else (
                row["scores"][name] == pytest.approx(expected, abs=1e-12))

    ex = client.post("/api/explain", json={"text": TEXT, "layer": 2, "head": 5,
                                           "query": 10}).json()
    expected = at.explain(trace, 2, 5, 10)
    assert ex["query_token"] == "it" and ex["scale"] == pytest.approx(expected.scale)
    for name in ("q", "dots", "scores", "weights", "model_weights"):
        np.testing.assert_allclose(ex[name], getattr(expected, name), rtol=0, atol=1e-6)
    keys = np.frombuffer(base64.b64decode(ex["keys"]["b64"]), dtype="<f2").reshape(
        ex["keys"]["shape"])
    np.testing.assert_allclose(keys, expected.keys, rtol=1e-3, atol=1e-3)

    rollout = client.post("/api/flow", json={"text": TEXT, "kind": "rollout"}).json()
    np.testing.assert_allclose(rollout["values"], at.attention_rollout(trace, 0).row(0))
    assert rollout["complete"] and rollout["figure"].startswith("data:image/png;base64,iVBOR")

    flow = client.post("/api/flow", json={"text": TEXT, "kind": "flow", "output": 3,
                                          "budget_s": 0.001, "figure": False}).json()
    assert flow["total"] == trace.num_tokens and flow["done"] < flow["total"]
    for _ in range(200):  # continue where the last request stopped, as the page does
        if flow["complete"]:
            break
        flow = client.post("/api/flow", json={"text": TEXT, "kind": "flow", "output": 3,
                                              "budget_s": 0.05, "figure": False}).json()
    assert flow["complete"] and flow["figure"] is None
    exact = at.attention_flow(trace, 3)
    np.testing.assert_allclose(flow["values"], exact.row(3), atol=1e-7)
    np.testing.assert_allclose(flow["relevance"], exact.relevance(3), atol=1e-7)


def test_compare_two_texts_and_two_models(client, embedded, tiny_bert):
    r = client.post("/api/compare", json={"a": {"text": TEXT}, "b": {"text": TEXT_B},
                                          "layer": 4, "head": 7})
    body = r.json()
    a, b = at.capture(embedded, TEXT), at.capture(embedded, TEXT_B)
    changes = compare.head_changes(compare.attention_difference(a, b))  # (L, H)
    diff = body["difference"]
    assert diff["comparable"] and (diff["layer"], diff["head"]) == (4, 7)
    np.testing.assert_allclose(diff["changes"], changes, atol=1e-6)
    assert diff["grid"].startswith("data:image/png") and diff["head_figure"].startswith("data:")
    assert body["b"]["tokens"] == list(b.tokens)
    assert body["a"]["view"]["kinds"] == ["head", "model"]
    # with no head named, the one drawn large is the head that changes most
    most = client.post("/api/compare", json={"a": {"text": TEXT}, "b": {"text": TEXT_B}})
    assert [most.json()["difference"][k] for k in ("layer", "head")] == [
        int(i) for i in np.unravel_index(np.argmax(changes), changes.shape)]

    # two models with different shapes: side by side, and one sentence instead of a difference
    r = client.post("/api/compare", json={"a": {"text": TEXT},
                                          "b": {"text": TEXT, "model": tiny_bert.name}})
    diff = r.json()["difference"]
    assert r.status_code == 200 and not diff["comparable"] and diff["grid"] is None
    assert diff["reason"] == ("The two models differ in shape (6 layers x 12 heads against "
                              f"{tiny_bert.num_layers} x {tiny_bert.num_heads}), so their "
                              "attention cannot be subtracted head by head.")


def test_difference_figures(embedded):
    a, b = at.capture(embedded, TEXT), at.capture(embedded, TEXT_B)
    delta = compare.attention_difference(a, b)
    np.testing.assert_array_equal(delta, b.attentions - a.attentions)
    grid = compare.difference_grid(a, b)
    image = grid.axes[0].images[0].get_array()
    assert image.shape == (6 * 16 + 5 * 2, 12 * 16 + 11 * 2)  # 16 tokens, gaps of 2
    np.testing.assert_array_equal(image[:16, :16], delta[0, 0])
    one = compare.difference_heatmap(a, b, -1, 0)
    labels = [t.get_text() for t in one.axes[0].get_xticklabels()]
    assert "tired / wide" in labels
    with pytest.raises(at.AttnscopeError, match="have 16 and 4 tokens"):
        compare.attention_difference(a, at.capture(embedded, "a b"))


def test_download_is_a_self_contained_page(client):
    r = client.post("/api/page", json={"a": {"text": HOSTILE, "layer": 1, "head": 2}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "attachment" in r.headers["content-disposition"]
    page = r.text
    assert page.count('class="attnscope-root"') == 1 and 'class="attnscope-heads"' in page
    assert "<img src=x" not in page and "<script>alert(2)" not in page
    assert "src=\"http" not in page and "href=\"http" not in page
    r = client.post("/api/page", json={"a": {"text": TEXT}, "b": {"text": TEXT_B}})
    assert r.text.count('class="attnscope-root"') == 2 and 'alt="difference"' in r.text


def test_pages_load_nothing_from_elsewhere(client):
    page = client.get("/").text
    assert "attnscopeMount(root)" in page and "exStart()" in page
    assert "src=\"http" not in page and "<script src" not in page and "<link rel=\"style" \
        not in page
    docs = client.get("/docs").text
    for route in ("/api/capture", "/api/heads", "/api/explain", "/api/flow", "/api/compare",
                  "/api/page", "/api/models"):
        assert route in docs
    assert "<script" not in docs and "cdn" not in docs.lower()


def test_concurrent_requests_never_mix(app, embedded, tiny_bert):
    """Many texts at once over two models: each answer holds its own text's tokens."""
    import httpx

    texts = [f"sentence number {i} about {w}" for i, w in
             enumerate(["cats", "rivers", "glass", "autumn", "trains", "music", "bread", "snow"])]
    models = [embedded, tiny_bert]

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://explorer",
                                     timeout=600) as c:
            requests = [c.post("/api/capture", json={"text": t, "model": models[i % 2].name})
                        for i, t in enumerate(texts)]
            return await asyncio.gather(*requests)

    answers = run_async(scenario())
    for i, (text, answer) in enumerate(zip(texts, answers, strict=True)):
        tokenizer = models[i % 2].tokenizer
        expected = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
        assert answer.status_code == 200
        assert answer.json()["model"] == models[i % 2].name
        assert answer.json()["tokens"] == expected


def test_serve_command_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "attnscope", "serve", *args],
                              capture_output=True, text=True, timeout=600)

    help_text = run("--help").stdout
    for option in ("--model", "--host", "--port", "--max-chars", "--max-tokens", "--timeout",
                   "--runs", "--queue", "--flow-budget", "--cache", "--corpus"):
        assert option in help_text
    bad = run("--port", "70000")
    assert bad.returncode == 2 and bad.stderr == (
        "attnscope: error: Port 70000 is out of range: use 1 to 65535 (or 0 for any free "
        "port).\n")
    bad = run("--queue", "-1")
    assert bad.returncode == 2 and "queue must be 0 or more" in bad.stderr
    bad = run("--corpus", str(tmp_path / "stats.duckdb"))
    assert bad.returncode == 2 and bad.stderr == (
        f"attnscope: error: Cannot read the corpus store '{tmp_path / 'stats.duckdb'}': no "
        "such file.\n")
    # without the app extra, one sentence says how to install it
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "from attnscope.cli import main; sys.exit(main(['serve']))")
    missing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600)
    assert missing.returncode == 2 and missing.stderr == (
        "attnscope: error: The explorer needs FastAPI and uvicorn (fastapi is missing): "
        "pip install 'attnscope[app]'.\n")
