"""The explorer's corpus browser: how quickly a real ``attnscope serve --corpus`` answers.

Builds a corpus store of the embedded model (``--texts`` 20-word texts, 300 by default), starts
``attnscope serve --corpus`` on a free loopback port and prints, per corpus route, the first
answer (read from DuckDB through ``CorpusResult``) beside the p50 / p95 of the same request
again (kept by the server; one client), then a mixed load of every corpus route from 8
concurrent clients (examples of random heads, the tables, the layer plots): requests,
errors, p50 / p95.

    python bench/app_corpus.py
    python bench/app_corpus.py --texts 1000 --seconds 20

Every phase stops by itself; the server is stopped and the store removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app import Server, sentence  # bench/app.py: the same server, the same texts

ROUTES = [("/api/corpus/heads", {}), ("/api/corpus/layers", {}),
          ("/api/corpus/stat", {"stat": "previous"}),
          ("/api/corpus/examples", {"layer": 0, "head": 2}),
          ("/api/corpus/examples", {"layer": 3, "head": 7, "kind": "previous"}),
          ("/api/corpus/search", {"token": "it", "limit": 100})]


def timed(http: httpx.Client, route: str, params: dict) -> float:
    start = time.perf_counter()
    answer = http.get(route, params=params)
    answer.raise_for_status()
    return time.perf_counter() - start


def mixed(rng: random.Random) -> tuple[str, dict]:
    """One corpus request of the load mix."""
    roll = rng.random()
    if roll < 0.6:
        return "/api/corpus/examples", {"layer": rng.randrange(6), "head": rng.randrange(12)}
    if roll < 0.8:
        return "/api/corpus/heads", {}
    if roll < 0.9:
        return "/api/corpus/layers", {}
    return "/api/corpus/stat", {"stat": rng.choice(["previous", "first", "entropy"])}


async def get_load(url: str, clients: int, seconds: float) -> tuple[list[float], int]:
    """``clients`` concurrent clients sending ``mixed`` requests for ``seconds``: the
    latencies of the answers (seconds) and the number of errors."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = [0]

    async def client(index: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(index)
        while time.perf_counter() < deadline:
            path, params = mixed(rng)
            start = time.perf_counter()
            try:
                answer = await http.get(path, params=params)
            except httpx.HTTPError:
                errors[0] += 1
                continue
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors[0] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return latencies, errors[0]


def main() -> None:
    import attnscope as at

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=300, help="texts in the store (300)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load phase (default 10)")
    parser.add_argument("--clients", type=int, default=8, help="load clients (default 8)")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; embedded model")
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "stats.duckdb"
        start = time.perf_counter()
        texts = [sentence(i, words=10 + i % 30) for i in range(args.texts)]
        at.corpus(None, texts, out=store, progress=False)
        print(f"store: {args.texts} texts of 10-39 words in {time.perf_counter() - start:.1f} s")
        server = Server("--corpus", str(store))
        try:
            print(f"\n{'route':<58} {'first':>9} {'again p50':>10} {'again p95':>10}")
            with httpx.Client(base_url=server.url, timeout=60) as http:
                for route, params in ROUTES:
                    first = timed(http, route, params)
                    again = [timed(http, route, params) for _ in range(50)]
                    shown = route + ("?" + "&".join(f"{k}={v}" for k, v in params.items())
                                     if params else "")
                    p50, p95 = (np.percentile(again, q) * 1000 for q in (50, 95))
                    print(f"{shown:<58} {first * 1000:>7.1f} ms {p50:>7.1f} ms {p95:>7.1f} ms")
            latencies, errors = asyncio.run(get_load(server.url, args.clients, args.seconds))
            p50, p95 = (np.percentile(latencies, q) * 1000 for q in (50, 95))
            print(f"\nmixed corpus requests, {args.clients} clients for {args.seconds:g} s: "
                  f"{len(latencies) + errors} requests, {errors} errors, p50 {p50:.1f} ms, "
                  f"p95 {p95:.1f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
