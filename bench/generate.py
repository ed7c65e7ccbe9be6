"""What recording attention costs while SmolLM2 generates.

    ATTNSCOPE_CACHE=... python bench/generate.py [--new-tokens 128] [--repeats 3]

On a machine shared with other work, ``OMP_NUM_THREADS=1`` keeps torch's threads from
spinning against each other (both variants run alike).

A chat prompt of about 200 tokens, then 128 new tokens, greedy. Side by side in one run,
alternating so that a busy machine slows every variant alike (the median of each is printed):

1. ``model.lm_model.generate(do_sample=False)`` of the same tokens, no attention (plain);
2. ``at.generate`` keeping only the answer's rows (``prompt_attention=False``);
3. ``at.generate`` keeping the whole square too (``prompt_attention=True``).

Then the memory: the numpy arrays each ``at.generate`` run held at its peak (tracemalloc, which
sees every numpy allocation; torch's own buffers are not numpy's), the process's peak resident
memory, and the bytes the full ``[L, H, T, T]`` float32 square of prompt + answer takes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
import tracemalloc

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

import attnscope as at

SYSTEM = "You are a careful assistant who writes long, detailed answers in plain English."
# About 200 tokens of context for the question after it.
CONTEXT = (
    "The river town of Aldmere sits where two valleys meet. Its bridge, built of grey stone in "
    "the year 1790, has nine arches, and every spring the meltwater from the northern hills "
    "rises to the third of them. The town has a market on Tuesdays and Saturdays, a school "
    "with two hundred pupils, a library that once belonged to a wool merchant, and a mill that "
    "still grinds flour for three bakeries. In 1911 a flood carried away the old wooden quay; "
    "the townspeople rebuilt it in brick within a single summer, and a plaque on its wall "
    "lists the names of the forty families who paid for it. Visitors come for the autumn "
    "fair, when the square fills with stalls of apples, cheese and woollen cloth, and for the "
    "walk along the towpath to the ruined abbey two miles downstream."
)
QUESTION = "Describe the town of Aldmere, its history and what a visitor can do there."


def messages() -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": CONTEXT + "\n\n" + QUESTION}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = at.load("smollm2", device="cpu")
    lm = model.lm_model
    prompt_ids = at.tokens.tokenize_chat(model, messages()).input_ids
    inputs = torch.tensor([prompt_ids.tolist()])

    first = at.generate(model, messages(), max_new_tokens=args.new_tokens)  # warm-up
    answer = first.input_ids[first.answer_start:]
    new_tokens = len(answer)
    print(f"  ... warm-up: {new_tokens} tokens, {first.generation['stopped']}", flush=True)

    def plain() -> None:
        with torch.inference_mode():
            out = lm.generate(inputs, max_new_tokens=new_tokens, do_sample=False,
                              pad_token_id=lm.generation_config.eos_token_id)
        assert np.array_equal(out[0, len(prompt_ids):].numpy(), answer), "tokens differ"

    peaks: dict[str, int] = {}

    def recorded(square: bool) -> None:
        tracemalloc.start()
        trace = at.generate(model, messages(), max_new_tokens=new_tokens,
                            prompt_attention=square)
        peaks[f"square={square}"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert np.array_equal(trace.input_ids[trace.answer_start:], answer), "tokens differ"

    runs = {"plain generate": plain,
            "at.generate, answer rows": lambda: recorded(False),
            "at.generate, with square": lambda: recorded(True)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
            print(f"  ... {name}: {times[name][-1]:.2f} s", flush=True)

    n = len(first.tokens)
    layers, heads = model.num_layers, model.num_heads
    base = statistics.median(times["plain generate"])
    threads = torch.get_num_threads()
    print(f"SmolLM2-135M-Instruct on the CPU ({threads} thread{'s' * (threads != 1)}): a "
          f"{first.answer_start}-token chat prompt, {new_tokens} new tokens, greedy, "
          f"median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:26s} {median:6.2f} s   {median / base:4.2f}x plain")
    square = 4 * layers * heads * n * n
    rows = 4 * layers * heads * (new_tokens + 1) * n
    print(f"memory: full [L, H, T, T] square {square / 2**20:.1f} MiB "
          f"({layers} x {heads} x {n} x {n} float32); answer rows {rows / 2**20:.1f} MiB")
    for key, peak in peaks.items():
        print(f"  numpy peak of at.generate ({key}): {peak / 2**20:.1f} MiB")
    print(f"  process peak resident memory: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
