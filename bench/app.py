"""The explorer under load: latency, errors and memory of a real ``attnscope serve`` process.

Starts ``attnscope serve`` (the embedded model, default limits) on a free loopback port and
prints, side by side with the targets:

1. a cached request (``POST /api/capture`` of a text already captured): p50 / p95, one client
   (target p95 < 20 ms);
2. an uncached capture + views (a new 20-word text each time) with 4 concurrent clients:
   p50 / p95 (target p95 < 300 ms);
3. load: 20 concurrent clients for a fixed time (60 s by default), a mix of every route
   (cached and new texts, heads, explain, rollout, views of other heads): requests, errors
   other than the documented 503, p50 / p95, and the server's memory before and after
   (target: 0 errors, memory flat);
4. the first draw in Chromium: from the capture's response to the views being drawn (target
   < 1 s).

    python bench/app.py                  # everything, 60 s of load
    python bench/app.py --seconds 10     # a shorter load phase

Every phase stops by itself; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["the", "girl", "poured", "water", "into", "a", "tall", "glass", "until", "it",
         "overflowed", "while", "her", "brother", "watched", "from", "across", "kitchen",
         "and", "laughed", "at", "small", "flood", "that", "spread", "over", "every", "tile",
         "of", "old", "floor", "near", "window", "where", "cat", "slept", "in", "warm", "light"]


def sentence(seed: int, words: int = 20) -> str:
    """A deterministic text of ``words`` words (20 by default), different for each seed."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


class Server:
    """``attnscope serve`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "attnscope", "serve", "--port", str(port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            if re.search(r"http://127\.0\.0\.1:\d+/", line):
                self.url = f"http://127.0.0.1:{port}"
                threading.Thread(target=lambda: [None for _ in self.process.stdout],
                                 daemon=True).start()
                return
        raise RuntimeError("attnscope serve did not start:\n" + "".join(lines))

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        import signal

        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


@dataclass
class LoadResult:
    """What a load run saw: latencies (seconds) of answered requests and status counts."""

    latencies: list[float] = field(default_factory=list)
    capture_ms: list[float] = field(default_factory=list)  # the model's own time, if asked
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + len(self.failures)

    @property
    def errors(self) -> int:
        """Answers that are neither a success nor the documented 503, and failed requests."""
        bad = sum(n for code, n in self.statuses.items() if code != 503 and code >= 400)
        return bad + len(self.failures)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


def mixed_request(rng: random.Random, texts: list[str], fresh: list[int]) -> tuple[str, dict]:
    """One request of the load mix: mostly cached texts over every route, some new texts."""
    text = rng.choice(texts)
    roll = rng.random()
    if roll < 0.10:
        fresh[0] += 1
        return "/api/capture", {"text": sentence(10_000_000 + fresh[0])}
    if roll < 0.40:
        return "/api/capture", {"text": text}
    if roll < 0.55:
        return "/api/capture", {"text": text, "layer": rng.randrange(6), "head": rng.randrange(12)}
    if roll < 0.70:
        return "/api/heads", {"text": text}
    if roll < 0.85:
        return "/api/explain", {"text": text, "layer": rng.randrange(6),
                                "head": rng.randrange(12), "query": rng.randrange(1, 10)}
    return "/api/flow", {"text": text, "kind": "rollout", "output": 0, "figure": False}


async def load(url: str, *, clients: int, seconds: float | None = None,
               requests: int | None = None, make=None, seed: int = 0,
               read_capture_ms: bool = False) -> LoadResult:
    """``clients`` concurrent clients sending ``make(rng)`` requests until ``seconds`` pass or
    ``requests`` are sent, whichever comes first (one of them must be given). With
    ``read_capture_ms``, also collect each answer's ``capture_ms`` (the model run alone)."""
    if seconds is None and requests is None:
        raise ValueError("give seconds or requests")
    result = LoadResult()
    deadline = time.perf_counter() + (seconds if seconds is not None else 1e9)
    budget = [requests if requests is not None else 10**12]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            path, body = make(rng)
            start = time.perf_counter()
            try:
                response = await http.post(path, json=body)
            except httpx.HTTPError as err:
                result.failures.append(f"{path}: {type(err).__name__}")
                continue
            elapsed = time.perf_counter() - start
            result.statuses[response.status_code] = result.statuses.get(
                response.status_code, 0) + 1
            if response.status_code == 503:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")) / 10)
            elif response.status_code < 400:
                result.latencies.append(elapsed)
                if read_capture_ms:
                    result.capture_ms.append(response.json()["capture_ms"])
            else:
                result.failures.append(f"{path} {response.status_code}: {response.text[:200]}")

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return result


def first_draw_ms(url: str, texts: list[str]) -> list[float]:
    """Milliseconds from each capture's response to its views being drawn, in Chromium."""
    from playwright.sync_api import sync_playwright

    from attnscope.testing import launch_chromium

    out = []
    with sync_playwright() as p:
        browser = launch_chromium(p, "/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url + "/")
        page.wait_for_function("document.body.dataset.ready === '1'")
        for text in texts:
            page.evaluate("document.body.explorer.timings.capture = null")
            page.fill("#text", text)
            page.press("#text", "Enter")
            # set once the views of this text are drawn (see app.js)
            page.wait_for_function("document.body.explorer.timings.capture !== null")
            out.append(page.evaluate("document.body.explorer.timings.capture.draw_ms"))
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load phase (default 60)")
    parser.add_argument("--clients", type=int, default=20, help="load clients (default 20)")
    parser.add_argument("--cache-mb", type=float, default=512,
                        help="the server's capture cache limit (default 512, as serve's)")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}; embedded model all-MiniLM-L6-v2; 20-word texts; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    server = Server("--cache-mb", str(args.cache_mb))
    try:
        url = server.url
        warm = [sentence(i) for i in range(80)]  # more than the cache holds (64)
        warming = iter(warm)
        asyncio.run(load(url, clients=2, requests=len(warm),
                         make=lambda rng: ("/api/capture", {"text": next(warming)})))

        cached_text = warm[-1]
        cached = asyncio.run(load(url, clients=1, requests=300,
                                  make=lambda rng: ("/api/capture", {"text": cached_text})))
        counter = iter(range(1_000_000, 2_000_000))
        uncached = asyncio.run(load(url, clients=4, requests=120, read_capture_ms=True,
                                    make=lambda rng: ("/api/capture",
                                                      {"text": sentence(next(counter))})))

        texts = warm[-40:]
        asyncio.run(load(url, clients=args.clients, seconds=10,
                         make=lambda rng: mixed_request(rng, texts, [0]), seed=1))
        samples = [server.rss_mib()]  # the server's memory every tenth of the load phase
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(args.seconds / 10):
                samples.append(server.rss_mib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        fresh = [0]
        start = time.perf_counter()
        loaded = asyncio.run(load(url, clients=args.clients, seconds=args.seconds,
                                  make=lambda rng: mixed_request(rng, texts, fresh), seed=2))
        took = time.perf_counter() - start
        stop.set()
        sampler.join()
        samples.append(server.rss_mib())

        draws = first_draw_ms(url, [sentence(3_000_000 + i) for i in range(5)])
    finally:
        server.stop()

    print()
    print(f"{'measure':<52} {'p50':>9} {'p95':>9}   target")
    print(f"{'cached capture request, 1 client (300)':<52} "
          f"{cached.percentile_ms(50):>7.1f}ms {cached.percentile_ms(95):>7.1f}ms   p95 < 20 ms")
    print(f"{'uncached capture + views, 4 clients (120)':<52} "
          f"{uncached.percentile_ms(50):>7.1f}ms {uncached.percentile_ms(95):>7.1f}ms   "
          "p95 < 300 ms")
    model_ms = np.asarray(uncached.capture_ms)
    print(f"{'  of which the model run alone (capture)':<52} "
          f"{np.percentile(model_ms, 50):>7.1f}ms {np.percentile(model_ms, 95):>7.1f}ms")
    print(f"{f'mixed load, {args.clients} clients, {took:.0f} s':<52} "
          f"{loaded.percentile_ms(50):>7.1f}ms {loaded.percentile_ms(95):>7.1f}ms")
    print(f"{'first draw in Chromium after the response (5 texts)':<52} "
          f"{np.percentile(draws, 50):>7.1f}ms {np.percentile(draws, 95):>7.1f}ms   < 1 s")
    print()
    print(f"load: {loaded.requests} requests ({loaded.requests / took:.0f}/s), "
          f"statuses {dict(sorted(loaded.statuses.items()))}, errors other than 503: "
          f"{loaded.errors} (target 0)")
    half = samples[len(samples) // 2]
    print(f"server memory during the load (MiB): {' '.join(f'{m:.0f}' for m in samples)}; "
          f"second half {samples[-1] - half:+.0f} MiB (target: flat; the capture cache "
          f"holds at most {args.cache_mb:g} MiB)")
    print(f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine slows "
          "every figure)")
    for failure in loaded.failures[:5]:
        print("  failure:", failure)


if __name__ == "__main__":
    main()
