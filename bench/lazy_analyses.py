"""Analyses on a LazyTrace against the eager ones, and the statistics pass before and after.

A random Llama with SmolLM2-135M's heads and width (9 query heads, 3 key/value heads, head
size 64, width 576) and 4 layers, built from a config, reads a text of each length. For each
length it prints, side by side:
  - every head's streamed statistics (sink, entropy, distance, previous): the pass as it was
    (keys repeated per query head, log of each weight) and as it is (one product per key head,
    log P read from the scores);
  - ``head_patterns``, ``layer_trends`` and one rollout row on the LazyTrace (streamed over
    row blocks) against the same analyses on the eager Trace, where eager fits;
and checks that the streamed numbers equal the eager ones.

    ATTNSCOPE_CACHE=/tmp/at-cache-test PYTHONPATH=src python bench/lazy_analyses.py \\
        --lengths 1024 2048
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def previous_head_stats(lazy, block: int = 512) -> dict[str, np.ndarray]:
    """The statistics pass as attnscope computed it before: every key head repeated for each
    of its query heads (a copy of [H, T, d] per block) and log P taken of the weights."""
    import torch

    L, H, T = lazy.num_layers, lazy.num_heads, lazy.num_tokens
    group = H // lazy.num_kv_heads
    heads = np.arange(H)
    sums = {k: np.zeros((L, H)) for k in ("sink", "entropy", "distance")}
    with torch.inference_mode():
        for layer in range(L):
            for start in range(0, T, block):
                rows = np.arange(start, min(start + block, T))
                cols = np.arange(rows[-1] + 1)
                q = torch.from_numpy(lazy.queries[layer][heads][:, rows])
                k = torch.from_numpy(lazy.keys[layer][heads // group][:, cols])
                scores = torch.matmul(q, k.transpose(-1, -2)) * float(lazy.scales[layer])
                scores.masked_fill_(torch.from_numpy(rows[:, None] < cols[None, :])[None],
                                    float("-inf"))
                lse = torch.from_numpy(lazy.lse[layer][:, rows])
                p = torch.exp(scores - lse[..., None])
                logp = torch.where(p > 0, torch.log(p.clamp_min(1e-45)), 0.0)
                dist = torch.from_numpy(np.abs(rows[:, None] - cols[None, :]).astype(np.float32))
                sums["sink"][layer] += p[:, :, 0].sum(-1).double().numpy()
                sums["entropy"][layer] -= (p * logp).sum((-1, -2)).double().numpy()
                sums["distance"][layer] += (p * dist).sum((-1, -2)).double().numpy()
    return {k: v / T for k, v in sums.items()}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    import torch
    from transformers import LlamaConfig, LlamaModel

    import attnscope as at

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = at.load("smollm2", device="cpu").tokenizer
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=args.layers, num_attention_heads=9,
                         num_key_value_heads=3, max_position_embeddings=65536)
    config._attn_implementation = "eager"
    model = at.load(LlamaModel(config).eval(), tokenizer=tokenizer, name="random-llama")
    print(f"random Llama, {args.layers} layers x 9 heads (3 key/value heads), width 576; "
          f"CPU, torch threads {torch.get_num_threads()}\n")
    rng = np.random.default_rng(0)
    for T in args.lengths:
        ids = rng.integers(100, len(tokenizer) - 100, T).tolist()
        lazy, t_capture = timed(lambda ids=ids: at.capture(model, ids, attention="lazy"))
        before, t_before = timed(lambda lazy=lazy: previous_head_stats(lazy))
        now, t_now = timed(lambda lazy=lazy: lazy.head_stats())
        for name in before:
            np.testing.assert_allclose(now[name], before[name], atol=1e-4, rtol=1e-5)
        print(f"{T} tokens (lazy capture {t_capture:.2f} s)")
        print(f"  statistics pass, before      {t_before:8.2f} s")
        print(f"  statistics pass, now         {t_now:8.2f} s   ({t_before / t_now:.2f}x faster)")
        table, t_lazy_table = timed(lambda lazy=lazy: at.head_patterns(lazy))
        trends, t_lazy_trends = timed(lambda lazy=lazy: at.layer_trends(lazy))
        roll, t_lazy_roll = timed(lambda lazy=lazy, T=T: at.attention_rollout(lazy, T - 1))
        eager, t_eager_capture = timed(lambda ids=ids: at.capture(model, ids,
                                                                   attention="eager"))
        want, t_eager_table = timed(lambda eager=eager: at.head_patterns(eager))
        want_trends, t_eager_trends = timed(lambda eager=eager: at.layer_trends(eager))
        want_roll, t_eager_roll = timed(lambda eager=eager, T=T: at.attention_rollout(eager,
                                                                                      T - 1))
        # (distances of hundreds of tokens: the eager sum rounds in float32, so relative 1e-5)
        np.testing.assert_allclose(table.scores, want.scores, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(trends.per_head, want_trends.per_head, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(roll.values, want_roll.values, atol=1e-5, rtol=0)
        for what, lazy_s, eager_s in (("head_patterns", t_lazy_table, t_eager_table),
                                      ("layer_trends", t_lazy_trends, t_eager_trends),
                                      ("rollout of one row", t_lazy_roll, t_eager_roll)):
            print(f"  {what:<20} lazy {lazy_s:7.2f} s   eager {eager_s:7.2f} s   "
                  f"({lazy_s / eager_s:.2f}x; eager capture {t_eager_capture:.2f} s and "
                  f"{eager.attentions.nbytes / 2**30:.2f} GiB of weights first)")
        print("  streamed results equal the eager ones (1e-5, relative for distances)\n")
        del eager, want


if __name__ == "__main__":
    main()
