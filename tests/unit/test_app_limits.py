"""The explorer's limits: oversized texts, unknown models, a full queue, a run over time, the
capture cache, and bad requests that get one sentence (never a 500 or a traceback)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

import attnscope as at
from attnscope.app.limits import Limits
from attnscope.app.runtime import Busy, Captures, Models, RunGate
from tests.explorer_server import run_async

pytest.importorskip("fastapi")

from attnscope.app import create_app, is_loopback


def test_limits_reject_nonsense():
    with pytest.raises(at.AttnscopeError, match="runs must be at least 1"):
        Limits(runs=0)
    with pytest.raises(at.AttnscopeError, match="timeout_s must be more than 0"):
        Limits(timeout_s=0)
    with pytest.raises(at.AttnscopeError, match="queue must be 0 or more"):
        Limits(queue=-1)


async def until(condition, what: str) -> None:
    """Wait for ``condition()`` to hold (a hang guard of minutes, never a timing bet)."""
    for _ in range(60_000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def test_gate_full_queue_and_timeout():
    async def scenario():
        gate = RunGate(Limits(runs=1, queue=1, timeout_s=5))
        release = threading.Event()
        first = asyncio.ensure_future(gate.run(release.wait))
        second = asyncio.ensure_future(gate.run(lambda: 42))  # waits in the queue
        await until(lambda: gate.admitted == 2, "both runs admitted")
        with pytest.raises(Busy, match="1 model runs are going and 1 are waiting") as busy:
            await gate.run(lambda: 0)
        assert busy.value.retry_after == 1
        release.set()
        assert await first is True and await second == 42
        assert gate.admitted == 0

        slow = RunGate(Limits(runs=1, queue=0, timeout_s=0.1))
        stuck = threading.Event()  # set only after the timeout: the run cannot end before
        with pytest.raises(Busy, match=r"longer than the 0\.1 s limit"):
            await slow.run(stuck.wait)
        # the timed-out run still holds its place until its thread is done
        with pytest.raises(Busy, match="busy"):
            await slow.run(lambda: 0)
        stuck.set()
        await until(lambda: slow.admitted == 0, "the timed-out run ends")
        assert await slow.run(lambda: 7) == 7
        gate.close()
        slow.close()

    run_async(scenario())


def test_captures_are_an_lru_and_run_once_per_key():
    cache = Captures(size=2)
    calls = []

    def make(name):
        def run():
            calls.append(name)
            time.sleep(0.05)
            return name
        return run

    threads = [threading.Thread(target=cache.get_or_capture, args=(("m", "a", None), make("a")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a"]  # four requests at once, one capture
    cache.get_or_capture(("m", "b", None), make("b"))
    cache.peek(("m", "a", None))  # a is now the most recently used
    cache.get_or_capture(("m", "c", None), make("c"))
    assert cache.peek(("m", "b", None)) is None and cache.peek(("m", "a", None)).trace == "a"
    assert len(cache) == 2


def test_models_allowlist(embedded):
    models = Models([embedded])
    assert models.get(None) is embedded
    with pytest.raises(at.AttnscopeError, match="Unknown model '/etc/passwd': this explorer "
                                                "serves 'sentence-transformers/all-MiniLM"):
        models.get("/etc/passwd")


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


@pytest.fixture(scope="module")
def client(embedded):
    from fastapi.testclient import TestClient

    app = create_app([embedded], Limits(max_chars=200, max_tokens=32))
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize(("body", "status", "sentence"), [
    ({"text": "x" * 201}, 422, "The text has 201 characters; this explorer takes at most 200 "
                               "(start it with a larger --max-chars for longer texts)."),
    ({"text": "a " * 40}, 422, "The text has 42 tokens; this explorer takes at most 32 "
                               "(start it with a larger --max-tokens for longer texts)."),
    ({"text": "hi", "text_b": "y" * 300}, 422, "The second text has 300 characters; this "
                                               "explorer takes at most 200 (start it with a "
                                               "larger --max-chars for longer texts)."),
    ({"text": "hi", "model": "gpt2"}, 422, "Unknown model 'gpt2': this explorer serves "
                                           "'sentence-transformers/all-MiniLM-L6-v2'."),
    ({"text": "hi", "model": "/tmp"}, 422, "Unknown model '/tmp': this explorer serves "
                                           "'sentence-transformers/all-MiniLM-L6-v2'."),
    ({"text": "   "}, 422, "The text is empty: give at least one word."),
    ({"text": "hi", "layer": 6}, 422, "layer 6 is out of range: valid layers are 0 to 5 "
                                      "(or -6 to -1)."),
    ({"text": "hi", "colour": 1}, 422, "The request has a field 'colour' this route does not "
                                       "take."),
    ({}, 422, "The request needs the field 'text'."),
])
def test_bad_requests_get_one_sentence(client, body, status, sentence):
    response = client.post("/api/capture", json=body)
    assert response.status_code == status
    assert response.json() == {"error": sentence}


def test_unreadable_requests(client):
    r = client.post("/api/capture", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"error": "The request body is not valid JSON."})
    r = client.post("/api/capture", content=b'{"text": "\\ud800"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "lone surrogate" in r.json()["error"]
    r = client.get("/api/nothing")
    assert (r.status_code, r.json()) == (404, {"error": "There is nothing at '/api/nothing'; "
                                                        "see /docs."})
    assert client.get("/api/capture").status_code == 405


def test_full_queue_and_timeout_answer_503(embedded):
    """With every run slot taken, a request gets 503 and Retry-After at once; a run over the
    time limit gets 503 too."""
    async def scenario():
        app = create_app([embedded], Limits(runs=1, queue=0, timeout_s=20))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://explorer") as c:
            release = threading.Event()
            gate = app.state.explorer.gate
            held = asyncio.ensure_future(gate.run(release.wait))  # the one run slot
            await until(lambda: gate.admitted == 1, "the slot taken")
            # answered at once: a request that waited would wait for release, never set yet
            r = await c.post("/api/capture", json={"text": "a queue that is full"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "busy" in r.json()["error"]
            release.set()
            await held
            r = await c.post("/api/capture", json={"text": "a queue that is full"})
            assert r.status_code == 200

        slow = create_app([embedded], Limits(timeout_s=0.001))
        transport = httpx.ASGITransport(app=slow)
        async with httpx.AsyncClient(transport=transport, base_url="http://explorer") as c:
            r = await c.post("/api/capture", json={"text": "a text never captured before"})
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
            assert r.json() == {"error": "The model run took longer than the 0.001 s limit; "
                                         "try a shorter text, or start the explorer with a "
                                         "larger --timeout."}

    run_async(scenario())


def test_flow_stops_at_its_budget(embedded):
    from fastapi.testclient import TestClient

    text = " ".join(f"word{i}" for i in range(60))
    app = create_app([embedded], Limits(flow_budget_s=0.02, max_tokens=512))
    with TestClient(app) as c:
        r = c.post("/api/flow", json={"text": text, "kind": "flow", "output": 0})
        body = r.json()
        assert r.status_code == 200 and not body["complete"]
        assert 0 < body["done"] < body["total"] and body["relevance"] is None
        assert body["note"].startswith("Attention flow stopped after the 0.02 s budget")
        again = c.post("/api/flow", json={"text": text, "kind": "flow", "output": 0}).json()
        assert again["done"] == body["done"]  # the budget is spent; it does not go on


def test_captures_stay_within_their_memory(embedded):
    cache = Captures(size=100, max_mb=1.0)
    for i in range(6):
        entry = cache.get_or_capture(("m", str(i), None),
                                     lambda i=i: at.capture(embedded, f"text number {i}"))
        entry.body(("view",), lambda: b"x" * 300_000)
    assert cache.nbytes <= 2**20 and 1 <= len(cache) < 6
    assert cache.peek(("m", "5", None)) is not None  # the newest stays
    entry = cache.peek(("m", "5", None))
    for k in range(20):
        entry.body(k, lambda: b"y")
    assert len(entry.bodies) == entry.BODIES
