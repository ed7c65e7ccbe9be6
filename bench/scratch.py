"""What does recording queries, keys and values cost, and how exact is attention by hand?

    python bench/scratch.py            # embedded model at 128 and 512 tokens + every family

1. Time: ``attnscope.capture(model, text)`` against ``capture(..., qkv=True)`` (forward hooks on
   every layer's projections, q/k/v copied to float32 NumPy), on the embedded model at 128 and
   512 tokens. Both run interleaved in one process, so machine noise hits both alike; the
   medians and the best runs are compared. Target: at most 1.25x.
2. Exactness: for the embedded model and a tiny random model of every supported family, each
   layer, head and attention part is rebuilt by the hand-written code (attnscope.scratch) from
   the hidden states that entered it, for two texts of different lengths run as one padded
   batch, and compared with the model's own ``output_attentions``. Target: max abs error
   <= 1e-5.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LENGTHS = (128, 512)
REPEATS = {128: 30, 512: 10}
SENTENCES = ("The girl poured water into a tall glass until it overflowed. Leaves fall in "
             "autumn, and autumn is marked by colorful foliage.")
WORDS = SENTENCES.split()
TEXTS = ["The girl poured water into a tall glass until it overflowed.", "leaves fall in autumn"]
DECODER_TEXTS = ["autumn is marked by colorful foliage", "the cat sat"]


def text_of_length(tokenizer, n_tokens: int) -> str:
    """A text that tokenizes to exactly ``n_tokens`` (special tokens included)."""
    words: list[str] = []
    while len(tokenizer(" ".join(words))["input_ids"]) < n_tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    while len(tokenizer(" ".join(words))["input_ids"]) > n_tokens:
        words[-1] = "a"
        if len(tokenizer(" ".join(words))["input_ids"]) > n_tokens:
            words.pop()
    return " ".join(words)


def timings(model, text: str, repeats: int) -> tuple[list[float], list[float]]:
    import attnscope as at

    plain, with_qkv = [], []
    for _ in range(3):  # warm up both paths
        at.capture(model, text)
        at.capture(model, text, qkv=True)
    for _ in range(repeats):
        t0 = time.perf_counter()
        at.capture(model, text)
        t1 = time.perf_counter()
        at.capture(model, text, qkv=True)
        t2 = time.perf_counter()
        plain.append(t1 - t0)
        with_qkv.append(t2 - t1)
    return plain, with_qkv


def errors(model) -> list[tuple[str, int, float, float]]:
    """(part, layers, max |hand - model| over every layer/head/text, max explain error)."""
    import numpy as np

    import attnscope as at
    from attnscope.scratch import recompute

    encoder_decoder = model.architecture == "encoder-decoder"
    traces = at.capture_batch(model, TEXTS, DECODER_TEXTS if encoder_decoder else None, qkv=True)
    rows = []
    for part in ("self", "decoder", "cross") if encoder_decoder else ("self",):
        n_layers = model.num_decoder_layers if part != "self" else model.num_layers
        worst = 0.0
        for layer in range(n_layers):
            for r in recompute(traces, layer=layer, model=model, part=part):
                worst = max(worst, r.max_abs_error)
        worst_explain = 0.0
        for t in traces:
            attentions, query_tokens, _ = t.part(part)
            for layer in range(n_layers):
                for head in range(attentions.shape[1]):
                    e = at.explain(t, layer, head, len(query_tokens) - 1, part=part,
                                   model=model)
                    worst_explain = max(worst_explain, e.max_abs_error)
        rows.append((part, n_layers, worst, float(np.float32(worst_explain))))
    return rows


def windowed_models(tokenizer) -> list[tuple[str, object]]:
    """Tiny random Mistral (sliding window 4) and Qwen2 (window 3 on layer 1), built here."""
    import torch
    from transformers import MistralConfig, MistralModel, Qwen2Config, Qwen2Model

    import attnscope as at

    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=37,
                  max_position_embeddings=64)
    torch.manual_seed(0)
    built = [
        ("tiny mistral (window 4)", MistralModel(MistralConfig(sliding_window=4, **common))),
        ("tiny qwen2 (window 3)", Qwen2Model(Qwen2Config(
            use_sliding_window=True, sliding_window=3, max_window_layers=1, **common))),
    ]
    out = []
    for label, model in built:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.05)
        model.config._attn_implementation = "eager"
        out.append((label, at.load(model, tokenizer=tokenizer, device="cpu")))
    return out


def main() -> None:
    import torch

    import attnscope as at
    from attnscope import adapters
    from attnscope.testing import TINY_FAMILIES, build_tiny_model

    model = at.load(device="cpu")
    print(f"model: {model.name} ({model.num_layers} layers x {model.num_heads} heads), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print()
    print(f"{'':>6}  {'median of runs':^30}  {'best run':^30}")
    print(f"{'tokens':>6}  {'capture':>10}  {'qkv=True':>10}  {'ratio':>6}  "
          f"{'capture':>10}  {'qkv=True':>10}  {'ratio':>6}   target <= 1.25x")
    for n in LENGTHS:
        text = text_of_length(model.tokenizer, n)
        plain, with_qkv = timings(model, text, REPEATS[n])
        cells = []
        for pick in (statistics.median, min):
            a, b = pick(plain), pick(with_qkv)
            cells.append(f"{a * 1e3:>8.2f}ms  {b * 1e3:>8.2f}ms  {b / a:>5.2f}x")
        print(f"{n:>6}  " + "  ".join(cells))
    print()
    print("attention rebuilt by hand vs the model's output_attentions: max abs error over every")
    print("layer and head, two texts of different lengths in one padded batch (target <= 1e-5)")
    print(f"{'family':<28}  {'part':<8}  {'layers':>6}  {'recompute':>10}  {'explain':>10}")
    with tempfile.TemporaryDirectory() as root:
        models = [("all-MiniLM-L6-v2 (bert)", model)]
        for family in TINY_FAMILIES:
            models.append((f"tiny {family}", at.load(build_tiny_model(family, root), "cpu")))
        models += windowed_models(models[TINY_FAMILIES.index("llama") + 1][1].tokenizer)
        for label, m in models:
            for part, n_layers, worst, worst_explain in errors(m):
                print(f"{label:<28}  {part:<8}  {n_layers:>6}  {worst:>10.1e}  "
                      f"{worst_explain:>10.1e}")
    print()
    print(f"families with an adapter: {', '.join(adapters.supported())}")


if __name__ == "__main__":
    main()
