"""Head importance: what exact ablation of every head and Michel et al.'s gradient proxy cost,
and how well the proxy ranks heads against exact ablation.

For the embedded model (6 layers x 12 heads) over ``--texts`` short texts (100 by default), and
for SmolLM2 (30 x 9) over ``--smollm2-texts`` texts, prints side by side:

* one plain pass of the model over the texts (the same batches), timed;
* exact ablation of every head alone, beside H * (L + 1) / 2 passes: the work it needs when an
  ablation in layer l reruns only layers l and above (42 passes for 6 x 12);
* the gradient proxy (one forward and one backward pass) beside one pass;
* the Spearman rank correlation between the proxy and exact ablation over all heads.

    python bench/importance.py
    python bench/importance.py --texts 100 --smollm2-texts 8
    python bench/importance.py --skip-smollm2

Runs on 2 threads (``--threads``), as on the 2-core machines the figures are quoted for; on a
machine busy with other jobs, ``--threads 1`` (two threads that wait on each other ran 4x slower
there).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUBJECTS = ["The girl", "My brother", "The old dog", "A small boat", "The committee", "Our teacher",
            "The children", "The company", "She", "The train"]
VERBS = ["watched", "found", "carried", "painted", "followed", "left", "opened", "described",
         "built", "forgot"]
OBJECTS = ["the red box", "a letter from home", "the quiet harbour", "the long report",
           "an empty glass", "the wooden fence", "the last bus", "a new garden", "the map",
           "the broken clock"]
ENDINGS = ["before the storm.", "after a long day.", "in the morning.", "near the river.",
           "without a word.", "at the station.", "during the winter.", "for the first time.",
           "on Sunday.", "with great care."]


def short_texts(n: int) -> list[str]:
    """``n`` short, grammatical English sentences (7 to 12 words), the same every run."""
    rng = np.random.default_rng(0)
    return [" ".join((SUBJECTS[rng.integers(10)], VERBS[rng.integers(10)],
                      OBJECTS[rng.integers(10)], ENDINGS[rng.integers(10)])) for _ in range(n)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (average ranks for ties)."""
    def ranks(x: np.ndarray) -> np.ndarray:
        x = x.ravel()
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for value in np.unique(x):  # ties share their mean rank
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def plain_passes(model, texts: list[str], batch_size: int, repeats: int = 3) -> float:
    """Seconds of one plain forward pass over ``texts`` in the batches head_importance uses
    (the best of ``repeats``)."""
    import torch

    from attnscope.interventions.ablation import samples_from
    from attnscope.interventions.objectives import Objective

    objective = Objective(model)
    samples = samples_from(model, texts)
    order = sorted(range(len(samples)), key=lambda i: samples[i].length)
    size = objective.batch_size(samples, batch_size)
    batches = [objective.batch([samples[i] for i in order[s : s + size]])
               for s in range(0, len(samples), size)]
    extra = {"use_cache": False} if model.is_causal else {}
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            for batch in batches:
                model.model(**batch.inputs, **extra)
        best = min(best, time.perf_counter() - started)
    return best


def measure(model, texts: list[str], batch_size: int) -> dict[str, float]:
    import attnscope as at

    L, H = model.num_layers, model.num_heads
    work = H * (L + 1) / 2
    one_pass = plain_passes(model, texts, batch_size)
    started = time.perf_counter()
    exact = at.head_importance(model, texts, "ablation", batch_size=batch_size, max_seconds=None)
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    proxy = at.head_importance(model, texts, "gradient", batch_size=batch_size)
    proxy_s = time.perf_counter() - started
    top = exact.top(1)[0]
    return {"heads": L * H, "work": work, "pass": one_pass, "exact": exact_s,
            "exact_ratio": exact_s / (work * one_pass), "proxy": proxy_s,
            "proxy_ratio": proxy_s / one_pass,
            "spearman": spearman(proxy.values, exact.values),
            "top": f"L{top[0]}H{top[1]} ({top[2]:.3g})"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=100, help="texts for the embedded model")
    parser.add_argument("--smollm2-texts", type=int, default=4, help="texts for SmolLM2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()

    import torch

    import attnscope as at

    torch.set_num_threads(args.threads)
    rows = []
    embedded = at.load(device="cpu")
    rows.append(("all-MiniLM-L6-v2", args.texts,
                 measure(embedded, short_texts(args.texts), args.batch_size)))
    if not args.skip_smollm2:
        smollm2 = at.load("smollm2", device="cpu")
        rows.append(("SmolLM2-135M", args.smollm2_texts,
                     measure(smollm2, short_texts(args.smollm2_texts), args.batch_size)))

    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}")
    header = (f"{'model':17} {'texts':>5} {'heads':>5} {'1 pass':>8} {'exact':>8} "
              f"{'work':>6} {'exact/work':>10} {'gradient':>8} {'grad/pass':>9} "
              f"{'Spearman':>8}  most important (exact)")
    print(header)
    print("-" * len(header))
    for name, n, r in rows:
        print(f"{name:17} {n:5d} {r['heads']:5d} {r['pass']:7.2f}s {r['exact']:7.1f}s "
              f"{r['work']:6.1f} {r['exact_ratio']:9.2f}x {r['proxy']:7.2f}s "
              f"{r['proxy_ratio']:8.2f}x {r['spearman']:8.2f}  {r['top']}")
    print("exact/work: exact ablation's time over that many plain passes (target <= 1.3x);"
          " grad/pass: the gradient proxy over one pass (target <= 3x).")


if __name__ == "__main__":
    main()
