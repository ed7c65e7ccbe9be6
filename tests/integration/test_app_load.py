"""A short, bounded load test of a real ``attnscope serve`` process on loopback.

20 concurrent clients send the mix of bench/app.py (every route, cached and new texts) for a
few seconds and stop by themselves: no answer may be an error other than the documented 503,
and the server's memory must stay flat once its cache is warm. (``python bench/app.py`` runs
the 60-second version and prints the latency figures.)
"""

from __future__ import annotations

import pytest
from bench.app import load, mixed_request, sentence

from tests.explorer_server import ExplorerServer, run_async

pytest.importorskip("psutil")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def small_cache_server():
    """A server whose capture cache (48 MiB) fills within the warm-up, so that what follows
    measures leaks rather than the cache filling."""
    server = ExplorerServer("--cache-mb", "48")
    yield server
    server.stop()


def test_twenty_clients_get_no_errors_and_memory_stays_flat(small_cache_server):
    import psutil

    server = psutil.Process(small_cache_server.pid)
    url = small_cache_server.url.rstrip("/")
    texts = [sentence(i) for i in range(12)]
    # a count of requests, not a span of time: a busy machine sends them more slowly, but
    # sends them all
    warm = run_async(load(url, clients=20, requests=60, seed=1,
                            make=lambda rng: mixed_request(rng, texts, [0])))
    assert warm.errors == 0, warm.failures[:3]
    before = server.memory_info().rss
    fresh = [0]
    result = run_async(load(url, clients=20, requests=160, seed=2,
                              make=lambda rng: mixed_request(rng, texts, fresh)))
    after = server.memory_info().rss
    print(f"\n{result.requests} requests, statuses {result.statuses}, "
          f"p50 {result.percentile_ms(50):.1f} ms, p95 {result.percentile_ms(95):.1f} ms, "
          f"memory {before / 2**20:.0f} -> {after / 2**20:.0f} MiB")
    assert result.requests == 160 and fresh[0] > 0
    assert result.errors == 0, result.failures[:3]
    assert set(result.statuses) <= {200, 503}
    assert after - before < 64 * 2**20


def test_only_requests_addressed_to_this_machine(small_cache_server):
    """A page elsewhere cannot use the explorer: a request for another host name is refused,
    and a cross-site form post (not JSON) runs nothing."""
    import httpx

    url = small_cache_server.url
    assert httpx.get(url + "api/models").status_code == 200
    assert httpx.get(url + "api/models", headers={"host": "attacker.example"}).status_code == 400
    form = httpx.post(url + "api/capture", content=b'{"text": "hello"}',
                      headers={"content-type": "text/plain"})
    assert form.status_code == 422


def test_ctrl_c_stops_the_server_quietly(small_cache_server):
    """(Runs after the load test.) Ctrl-C ends ``attnscope serve`` at once, as it ends every
    command: status 130 and one line, no traceback."""
    small_cache_server.stop()
    assert small_cache_server.process.returncode == 130
    printed = "".join(small_cache_server.output)
    assert printed.startswith("attnscope explorer: http://127.0.0.1:")
    assert printed.endswith("attnscope: interrupted\n") and "Traceback" not in printed
