"""Corpus mode with head importance against corpus mode without it, on the embedded model.

    python bench/corpus_importance.py              # 96 texts, 2 rounds, ablation on 8
    python bench/corpus_importance.py --texts 600 --ablation-texts 32

Texts are those of bench/corpus.py (10-120 words). Each round runs ``attnscope.corpus`` into a
fresh store three ways, interleaved so that all see the same machine load: without importance,
with ``importance="gradient"`` (Michel et al.'s proxy: one forward and one backward pass per
batch on top of the statistics pass), and, on the first ``--ablation-texts`` texts,
``importance="ablation"`` (exact: about H * (L + 1) / 2 = 42 passes' work per batch).
Target (issue 20): gradient <= 3x.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import make_texts  # bench/corpus.py: the same texts


def timed(model, texts, path: Path, importance: str | None) -> float:
    import attnscope as at

    start = time.perf_counter()
    at.corpus(model, texts, out=path, run="bench", progress=False, importance=importance,
              importance_budget=None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ablation-texts", type=int, default=8)
    args = parser.parse_args()

    import torch

    import attnscope as at

    model = at.load()
    texts = make_texts(args.texts)
    few = texts[: max(1, args.ablation_texts)]
    timed(model, texts[:8], Path(tempfile.mkdtemp()) / "warm.duckdb", "gradient")  # warm-up
    seconds = {"plain": 0.0, "gradient": 0.0, "plain (few)": 0.0, "ablation (few)": 0.0}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            here = Path(folder) / str(round_)
            here.mkdir()
            seconds["plain"] += timed(model, texts, here / "plain.duckdb", None)
            seconds["gradient"] += timed(model, texts, here / "gradient.duckdb", "gradient")
            seconds["plain (few)"] += timed(model, few, here / "plain10.duckdb", None)
            seconds["ablation (few)"] += timed(model, few, here / "ablation.duckdb",
                                                 "ablation")
    print(f"embedded model ({model.num_layers} x {model.num_heads} heads), {args.texts} texts "
          f"of 10-120 words, {args.rounds} rounds, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs")
    for name, total in seconds.items():
        count = len(few) if "few" in name else len(texts)
        print(f"  {name:<18} {total / args.rounds:8.2f} s/round  "
              f"{count * args.rounds / total:8.1f} texts/s")
    print(f"gradient importance / plain corpus: {seconds['gradient'] / seconds['plain']:.2f}x "
          "(target <= 3x)")
    print(f"ablation importance / plain corpus: "
          f"{seconds['ablation (few)'] / seconds['plain (few)']:.1f}x")


if __name__ == "__main__":
    main()
