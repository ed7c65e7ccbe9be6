"""The explorer under hostile requests: a body too large is refused before it is read, an
empty body is told as such, the limits are reported as the numbers they are, and ``serve``
on a port already in use says so before any model loads."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

import attnscope as at
from attnscope.app import Limits, create_app
from attnscope.app.api import body_limit
from attnscope.testing import build_tiny_model

SRC = Path(at.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    model = at.load(build_tiny_model("bert", tmp_path_factory.mktemp("bert")), device="cpu")
    return create_app([model], Limits(runs=2, cache=3))


def call(app, headers: list[tuple[bytes, bytes]], chunks) -> tuple[int, dict, int]:
    """Send one POST /api/capture straight to the ASGI app; returns the status, the JSON
    answer and how many body chunks the app asked for."""
    asked = 0
    sent: list[dict] = []

    async def receive():
        nonlocal asked
        asked += 1
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/capture", "raw_path": b"",
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         *headers]}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), asked


def test_a_huge_body_is_refused_before_it_is_read(app):
    limit = body_limit(Limits())
    sentence = (f"The request body is over {limit} bytes, the most this explorer takes; send "
                "shorter texts.")
    megabyte = b" " * 2**20

    def endless():  # 200 MB, if anyone read it all
        for _ in range(200):
            yield megabyte

    status, answer, asked = call(app, [(b"content-length", b"209715200")], endless())
    assert (status, answer, asked) == (413, {"error": sentence}, 0)
    # Chunked, with no length given: read until the limit is passed, then refused.
    status, answer, asked = call(app, [(b"transfer-encoding", b"chunked")],
                                 (megabyte[:8192] for _ in range(25_600)))
    assert (status, answer) == (413, {"error": sentence})
    assert asked == limit // 8192 + 1
    # A body within the limit is read and answered as before.
    small = json.dumps({"text": "leaves fall"}).encode()
    status, answer, _ = call(app, [(b"content-length", str(len(small)).encode())],
                             iter([small]))
    assert status == 200 and answer["tokens"][:2] == ["[CLS]", "leaves"]


def test_an_empty_body_and_the_limits(app):
    with TestClient(app) as client:
        r = client.post("/api/capture", content=b"", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json() == {
            "error": "The request needs a JSON body; see /docs."}
        limits = client.get("/api/models").json()["limits"]
    assert limits["runs"] == 2 and isinstance(limits["runs"], int)
    counts = {k: v for k, v in limits.items() if not k.endswith(("_s", "_mb"))}
    assert counts == {"max_chars": 2000, "max_tokens": 256, "runs": 2, "queue": 32, "cache": 3}
    assert all(type(v) is int for v in counts.values())
    assert '"runs":2,' in json.dumps(limits, separators=(",", ":"))


def test_serve_on_a_port_in_use_is_one_sentence_before_any_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "attnscope", "serve", "--port", str(port),
             "--model", str(tmp_path / "no-such-model")],
            env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True,
            timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"attnscope: error: Cannot serve on 127.0.0.1:{port}: another "
                             "program is listening there; stop it or pick another --port.\n")
