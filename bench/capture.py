"""How much does capture() cost over a bare forward pass? Time and peak memory, side by side.

    python bench/capture.py            # embedded model at 16, 128 and 512 tokens

"bare" is what a notebook does by hand: tokenize, then one eager forward pass with
``output_attentions=True`` (the tensors stay on the model's side). "capture" is
``attnscope.capture``: the same pass plus hidden states, token facts, and every array copied to
float32 NumPy on the host in a frozen Trace. Both run interleaved in one process, and the
medians are compared, so machine noise hits both alike. Peak memory is measured in fresh
processes (resident size sampled during one call, above its level just before, the result
still held), against the size of the attention array itself (L * H * T * T * 4 bytes).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LENGTHS = (16, 128, 512)
REPEATS = {16: 60, 128: 30, 512: 10}
PARAGRAPH = " ".join([
    "The girl poured water into a tall glass until it overflowed. Leaves fall in autumn, and",
    "autumn is marked by colorful foliage. Attention lets every token look at every other",
    "token, so researchers draw heatmaps of heads and layers to see what the model reads.",
]).split()


def text_of_length(tokenizer, n_tokens: int) -> str:
    """A natural-looking text that tokenizes to exactly ``n_tokens`` (with [CLS] and [SEP])."""
    words: list[str] = []
    while len(tokenizer(" ".join(words))["input_ids"]) < n_tokens:
        words.append(PARAGRAPH[len(words) % len(PARAGRAPH)])
    while len(tokenizer(" ".join(words))["input_ids"]) > n_tokens:
        words[-1] = "a"  # one-token word; shrink until exact
        if len(tokenizer(" ".join(words))["input_ids"]) > n_tokens:
            words.pop()
    text = " ".join(words)
    assert len(tokenizer(text)["input_ids"]) == n_tokens, n_tokens
    return text


def bare_pass(model, text):
    import torch

    inputs = model.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return model.model(**inputs, output_attentions=True)


def timings(model, text: str, repeats: int) -> tuple[float, float]:
    import attnscope as at

    bare, cap = [], []
    for _ in range(3):  # warm up both paths
        bare_pass(model, text)
        at.capture(model, text)
    for _ in range(repeats):
        t0 = time.perf_counter()
        bare_pass(model, text)
        t1 = time.perf_counter()
        at.capture(model, text)
        t2 = time.perf_counter()
        bare.append(t1 - t0)
        cap.append(t2 - t1)
    return statistics.median(bare), statistics.median(cap)


def peak_growth(mode: str, n_tokens: int) -> int:
    """Run one call in a fresh process; bytes the resident size grew above its level before."""
    # Large blocks always from mmap, so memory freed before the call is really given back and
    # the growth measured is the call's own.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(
        [sys.executable, __file__, "--probe", mode, str(n_tokens)],
        capture_output=True, text=True, check=True, env=env,
    )
    return int(result.stdout.strip().splitlines()[-1])


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def probe(mode: str, n_tokens: int) -> None:
    import gc
    import threading

    import torch

    import attnscope as at

    torch.set_num_threads(1)
    model = at.load(device="cpu")

    def call(text):
        return at.capture(model, text) if mode == "capture" else bare_pass(model, text)

    call(text_of_length(model.tokenizer, 16))  # warm-up: lazy imports, allocator set-up
    text = text_of_length(model.tokenizer, n_tokens)
    gc.collect()
    before = _rss()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    result = call(text)
    peak = max(peak, _rss())  # the result itself is held here
    done.set()
    sampler.join()
    del result
    print(peak - before)


def main() -> None:
    import torch

    import attnscope as at

    model = at.load(device="cpu")
    L, H = model.num_layers, model.num_heads
    print(f"model: {model.name} ({L} layers x {H} heads), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU")
    print()
    print(f"{'tokens':>6}  {'bare pass':>10}  {'capture':>10}  {'ratio':>6}   target <= 1.10x")
    for n in LENGTHS:
        text = text_of_length(model.tokenizer, n)
        bare, cap = timings(model, text, REPEATS[n])
        print(f"{n:>6}  {bare * 1e3:>8.2f}ms  {cap * 1e3:>8.2f}ms  {cap / bare:>5.2f}x")
    print()
    print("peak memory growth during one call, result held (fresh process each, 1 thread):")
    print(f"{'tokens':>6}  {'attention':>10}  {'bare pass':>10}  {'capture':>10}  "
          f"{'capture/attention':>17}")
    for n in LENGTHS:
        attention_bytes = L * H * n * n * 4
        bare = peak_growth("bare", n)
        cap = peak_growth("capture", n)
        print(f"{n:>6}  {attention_bytes / 2**20:>8.1f}MB  {bare / 2**20:>8.1f}MB  "
              f"{cap / 2**20:>8.1f}MB  {cap / attention_bytes:>16.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", nargs=2, metavar=("MODE", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe[0], int(args.probe[1]))
    else:
        main()
