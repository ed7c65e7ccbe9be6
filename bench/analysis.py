"""How fast and how exact are attnscope's attention flow and head patterns?

    python bench/analysis.py            # about a minute; the networkx baseline is most of it

1. Attention flow, every last-layer token to every input token through 12 layers, against the
   paper's way (Abnar & Zuidema's code: the full layered graph in networkx, one Edmonds-Karp
   maximum flow per (output, input) pair), at 16 tokens: the largest difference (target
   <= 1e-6) and the speed-up (target >= 100x). The 12 layers are real attention: the embedded
   all-MiniLM-L6-v2's six layers, run through twice.
2. attnscope alone at 32 and 64 tokens (target: 64 tokens in under 10 s), and flow for one
   output token (T maximum flows) at 64 tokens.
3. Head patterns for one Trace of the embedded model at 128 tokens, against the capture time
   of that Trace (target: at most 20% of it). Runs interleave; medians are compared.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import networkx as nx
import numpy as np

import attnscope as at
from attnscope.analysis.flow import residual_attention
from attnscope.testing import networkx_flow_graph

SENTENCES = ("The girl poured water into a tall glass until it overflowed. Leaves fall in "
             "autumn, and autumn is marked by colorful foliage.")
WORDS = SENTENCES.split()


def text_of_length(tokenizer, n_tokens: int) -> str:
    """A text that tokenizes to exactly ``n_tokens`` (special tokens included)."""
    words: list[str] = []
    while len(tokenizer(" ".join(words))["input_ids"]) < n_tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    while len(tokenizer(" ".join(words))["input_ids"]) > n_tokens:
        words[-1] = words[-1][:-1] or words.pop()
    return " ".join(words)


def twelve_layers(model, n_tokens: int) -> at.Trace:
    """A Trace of ``n_tokens`` whose attention is the model's six layers twice ([12, H, T, T])."""
    trace = at.capture(model, text_of_length(model.tokenizer, n_tokens))
    assert trace.num_tokens == n_tokens
    attentions = np.concatenate([trace.attentions, trace.attentions])  # (12, H, T, T)
    return trace.replace(attentions=attentions)


def networkx_flow(trace: at.Trace) -> np.ndarray:
    """The paper's computation: one networkx Edmonds-Karp max flow per (output, input) pair."""
    residual = residual_attention(trace)  # (L, T, T)
    layers, n, _ = residual.shape
    graph = networkx_flow_graph(residual)
    out = np.zeros((n, n))
    for s in range(n):
        for t in range(n):
            out[s, t] = nx.maximum_flow_value(graph, layers * n + s, t,
                                              flow_func=nx.algorithms.flow.edmonds_karp)
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    model = at.load(device="cpu")
    print(f"attention flow, all outputs x all inputs, 12 layers ({model.name} x 2)")
    trace16 = twelve_layers(model, 16)
    ours, t_ours = timed(lambda: at.attention_flow(trace16).values)
    paper, t_paper = timed(lambda: networkx_flow(trace16))
    diff = float(np.abs(ours - paper).max())
    print(f"  16 tokens: networkx Edmonds-Karp {t_paper:7.2f} s   attnscope {t_ours:6.3f} s   "
          f"{t_paper / t_ours:6.0f}x faster   max |difference| {diff:.1e}")
    for n in (32, 64):
        trace = twelve_layers(model, n)
        _, t_all = timed(lambda trace=trace: at.attention_flow(trace))
        print(f"  {n} tokens: attnscope {t_all:6.2f} s  ({n * n} maximum flows)")
    _, t_one = timed(lambda: at.attention_flow(trace, output=0))
    print(f"  64 tokens, one output token ({trace.num_tokens} maximum flows): {t_one:.3f} s")

    print("\nhead patterns against capture, embedded model, 128 tokens (medians of 15)")
    text = text_of_length(model.tokenizer, 128)
    captures, patterns = [], []
    at.head_patterns(at.capture(model, text))  # warm up
    for _ in range(15):
        trace, t_cap = timed(lambda: at.capture(model, text))
        _, t_pat = timed(lambda trace=trace: at.head_patterns(trace))
        captures.append(t_cap)
        patterns.append(t_pat)
    cap, pat = statistics.median(captures), statistics.median(patterns)
    print(f"  capture {cap * 1000:7.1f} ms   head_patterns {pat * 1000:6.1f} ms   "
          f"= {pat / cap:.0%} of capture")


if __name__ == "__main__":
    main()
