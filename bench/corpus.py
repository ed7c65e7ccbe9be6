"""Corpus mode against the naive loop, resume after SIGKILL, memory, and the Ray engine.

    python bench/corpus.py                       # 2,000 texts; memory at 2,000 vs 6,000
    python bench/corpus.py --memory-texts 20000  # the memory check at 20,000 texts
    python bench/corpus.py --skip-ray            # leave out the Ray engine
    python bench/corpus.py --memory-only --memory-tiny --memory-texts 20000  # quick memory check
    python bench/corpus.py --own-cost-only       # corpus mode against the bare forward pass
    python bench/corpus.py --own-cost-only --torch-threads 1   # the same, steadier CPU times
    python bench/corpus.py --long 1024 2048      # one long text: the lazy path against eager
    python bench/corpus.py --long 4096 --long-smollm2   # the same on SmolLM2-135M itself

Texts are 10-120 words (uniform), cut from sentences written for this benchmark. Every
figure comes from this one run, on the embedded model (all-MiniLM-L6-v2, 6 x 12 heads):

* naive: ``capture()`` + ``head_patterns()`` per text, the loop a notebook would write;
* local: ``attnscope.corpus`` (length-bucketed batches, inference_mode, reductions in torch,
  one DuckDB transaction per batch), interleaved with the naive loop in rounds so that both
  see the same machine load;
* resume: a real ``attnscope corpus`` process killed with SIGKILL mid-way, then run again;
* memory: peak RSS of a fresh process after N texts, for two N;
* ray: ``engine="ray"`` on a local Ray with 2 workers;
* own cost: corpus mode (no importance) against the bare batched forward pass with attention
  on the same texts, in batches of the same size, on short texts (sentences of 8-40 words)
  and on the 10-120-word texts, interleaved in rounds; wall-clock and CPU time (CPU time is
  steadier on a machine shared with other work).
* long (``--long T ...``): one text of T tokens through ``process_batch`` on the lazy path
  (captured with SDPA, streamed over row blocks) and on the eager path, on a 4-layer random
  Llama with SmolLM2's heads and width (bench/long.py's model; ``--long-layers``): time, the
  lazy path's peak memory, and the largest difference between their statistics.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCES = """\
The river had risen overnight, and by morning the lower fields were under a sheet of brown water.
Nobody in the village could remember a spring as wet as this one.
She folded the letter twice, slipped it into her coat, and walked to the station.
The committee met on Thursday to discuss the budget, but nobody reached a decision.
A small boat drifted slowly across the harbour at dawn.
He said that the bridge would be finished by autumn, although the engineers were less certain.
When the lights went out, the children laughed and the teacher lit a candle on her desk.
Prices at the market rose sharply after the harvest failed in the northern provinces.
The old clock in the hall struck nine, then stopped, and the house fell silent.
Because the road was closed, the bus took a long detour through the hills.
Researchers found that the birds returned to the same nesting sites year after year.
It was late, and the dog slept by the fire while the wind howled outside.
The library keeps its rarest books in a cool room beneath the reading hall.
After the storm, volunteers cleared fallen branches from the paths in the park.
The recipe calls for two cups of flour, a pinch of salt, and three eggs.
Her brother, who had lived abroad for years, finally came home for the winter.
The museum opened a new gallery devoted to maps drawn by early sailors.
If the weather holds, the climbers will reach the summit before noon tomorrow.
The factory closed in the spring, and many families moved to the city to find work.
A stranger asked for directions to the lighthouse, then thanked us and disappeared into the fog.
The teacher explained that the planets move in ellipses rather than perfect circles.
Snow covered the rooftops, and smoke rose straight up from every chimney.
The judge listened carefully, asked two short questions, and adjourned the hearing until Monday.
Most of the orchard was planted by her grandfather more than sixty years ago.
The train was delayed, so we waited in a cafe and watched the rain on the windows.
Engineers tested the new engine for three weeks before they were satisfied with its performance.
The garden was quiet except for the hum of bees among the lavender.
He kept a notebook of every bird he saw, with the date, the place, and the weather.
The council promised to repair the school roof before the next term began.
Across the valley, church bells rang to mark the end of the long war.
The students argued about the meaning of the poem until the bell rang.
She planted tomatoes along the fence, where the afternoon sun was strongest.
The ship's cook baked bread every morning, even in the roughest seas.
According to the report, traffic in the city centre fell by a third last year.
The fisherman mended his nets on the quay and talked about the price of diesel.
Nobody expected the small team from the coast to win the national championship.
The doctor told him to rest for a week and to drink plenty of water.
In the evening, the square filled with musicians, vendors, and families out for a walk.
The map was wrong, and the path it showed ended at the edge of a cliff.
They painted the kitchen yellow, which made the narrow room feel larger and warmer.
The company announced that it would hire two hundred workers at its new plant.
Her first novel, written in a rented room above a bakery, sold only a few hundred copies.
The cat watched the sparrows from the windowsill, its tail twitching.
Farmers in the region have started to grow crops that need less water.
The lecture began with a question: why do some empires last for centuries while others collapse?
We crossed the border at midnight and reached the capital just before sunrise.
The bakery on the corner sells the best rye bread in town, but it closes at noon.
Scientists measured the temperature of the lake at twelve points every hour.
The mayor thanked the firefighters, who had worked through the night to save the old mill.
Rain fell.
Why?
""".splitlines()


def make_texts(count: int, seed: int = 0, length: tuple[int, int] = (10, 120)) -> list[str]:
    """``count`` texts of 10-120 words (or ``length`` words, uniform), sentences drawn at
    random and cut."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        target = int(rng.integers(length[0], length[1] + 1))
        words: list[str] = []
        while len(words) < target:
            words += SENTENCES[int(rng.integers(len(SENTENCES)))].split()
        texts.append(" ".join(words[:target]))
    return texts


def naive(model, texts) -> tuple[float, int]:
    import attnscope as at

    tokens = 0
    start = time.perf_counter()
    for text in texts:
        trace = at.capture(model, text)
        at.head_patterns(trace)
        tokens += trace.num_tokens
    return time.perf_counter() - start, tokens


def forward_only(model, texts, batch_size: int) -> float:
    """Seconds for the model's forward pass alone (attention weights out, nothing else) over
    ``texts`` in length-sorted batches: the floor under any engine on this machine."""
    import torch

    ordered = sorted(texts, key=len)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ordered), batch_size):
            inputs = model.tokenizer(ordered[i:i + batch_size], return_tensors="pt",
                                     padding=True, truncation=True)
            model.model(**inputs, output_attentions=True)
    return time.perf_counter() - start


def own_cost(model, texts: list[str], rounds: int, folder: Path, name: str,
             batch_size: int = 32) -> None:
    """Corpus mode against the bare batched forward pass on the same (distinct) texts, in
    ``rounds`` interleaved rounds; prints texts/s over all rounds and their ratio, in
    wall-clock and in CPU time (of this process, every thread)."""
    import attnscope as at

    texts = list(dict.fromkeys(texts))  # corpus mode counts a repeated text once
    forward_only(model, texts[:batch_size], batch_size)  # warm-up
    wall, cpu = [], []
    for r in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        forward_only(model, texts, batch_size)
        c1, w1 = time.process_time(), time.perf_counter()
        at.corpus(model, texts, out=folder / f"own-{name}.duckdb", run=f"{name}{r}",
                  batch_size=batch_size, progress=False)
        c2, w2 = time.process_time(), time.perf_counter()
        wall.append((w1 - w0, w2 - w1))
        cpu.append((c1 - c0, c2 - c1))
    n = len(texts)
    for what, pairs in (("wall", wall), ("CPU", cpu)):
        bare = sum(b for b, _ in pairs)
        mode = sum(c for _, c in pairs)
        print(f"  {name:23s} {what:4s}  bare forward {n * rounds / bare:6.1f} texts/s   "
              f"corpus mode {n * rounds / mode:6.1f} texts/s   corpus / bare {bare / mode:4.0%}")


def local(model, texts, path: Path, run: str) -> tuple[float, int]:
    import attnscope as at

    start = time.perf_counter()
    result = at.corpus(model, texts, out=path, run=run, progress=False)
    return time.perf_counter() - start, result.summary.tokens


def memory_probe(count: int, tiny: bool) -> None:
    """In a fresh process: run ``count`` texts, print peak RSS in MiB (JSON). ``tiny`` uses a
    tiny random BERT (same tokenizer, 2 layers) so that a long run is quick: it measures what
    corpus mode itself holds (store, plan, examples), the model's share being constant."""
    import resource

    import attnscope as at
    from attnscope.testing import build_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        model = at.load(build_tiny_model("bert", folder) if tiny else None, device="cpu")
        start = time.perf_counter()
        at.corpus(model, make_texts(count, seed=7), out=Path(folder) / "m.duckdb",
                  progress=False)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"texts": count, "peak_mib": peak, "seconds": seconds}))


def resume_check(texts: list[str], folder: Path) -> dict:
    """Kill a real run with SIGKILL after some batches, run it again; report what was redone."""
    import duckdb

    corpus_file = folder / "resume.txt"
    corpus_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = folder / "resume.duckdb"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    command = [sys.executable, "-m", "attnscope", "corpus", str(corpus_file), "-o", str(out),
               "-q", "--run", "resume"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wal = Path(str(out) + ".wal")
    while proc.poll() is None and not (wal.exists() and wal.stat().st_size > 400_000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = duckdb.connect(str(out), read_only=True)
    committed, batches = con.execute("SELECT count(*), count(DISTINCT batch) FROM texts").fetchone()
    con.close()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    con = duckdb.connect(str(out), read_only=True)
    final = con.execute("SELECT count(*) FROM texts").fetchone()[0]
    con.close()
    return {"committed_before_kill": committed, "batches_before_kill": batches,
            "final": final, "rerun_says": rerun.stdout.splitlines()[0]}


def long_texts(lengths: list[int], layers: int, smollm2: bool = False) -> None:
    """Per-text corpus reduction of one long text: the lazy path against the eager one (on
    SmolLM2-135M itself with ``smollm2``, else a random Llama with its heads)."""
    import resource

    from attnscope.analysis.corpus import (
        STATS,
        CorpusItem,
        eager_batch_bytes,
        process_batch,
        text_key,
    )
    from attnscope.lazy import memory_budget
    from long import long_text, random_llama  # bench/long.py, beside this script

    if smollm2:
        import attnscope as at

        model = at.load("smollm2", device="cpu")
    else:
        model = random_llama(layers, max(lengths) + 16)
    budget = memory_budget()
    print(f"one text per batch, {model.name} ({model.num_layers} layers x {model.num_heads} "
          f"heads, 3 key/value heads); memory budget {budget / 2**30:.1f} GiB")
    print(f"{'tokens':>7} {'eager needs':>12} {'eager s':>8} {'lazy s':>8} {'lazy/eager':>10} "
          f"{'lazy peak':>10} {'max rel. diff':>14}")
    process_batch(model, [CorpusItem(0, "warm up", key="w")], attention="lazy")
    # every lazy run first, shortest first: the process's peak then grows with each one, and
    # no eager run has raised it yet
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    runs = []
    for T in sorted(lengths):
        text = long_text(model, T)
        item = CorpusItem(0, text, key=text_key(text))
        start = time.perf_counter()
        lazy = process_batch(model, [item], attention="lazy")
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
        runs.append((item, lazy, seconds, peak))
    for item, lazy, lazy_s, peak in runs:
        need = eager_batch_bytes(model, lazy.texts[0]["n_tokens"])
        eager_s, diff = float("nan"), float("nan")
        if need <= budget:
            start = time.perf_counter()
            eager = process_batch(model, [item], attention="eager", budget=budget)
            eager_s = time.perf_counter() - start
            diff = max(float(np.nanmax(np.abs(lazy.sums[s] - eager.sums[s])
                                       / np.maximum(np.abs(eager.sums[s]), 1.0)))
                       for s in range(len(STATS)))
        if eager_s == eager_s:
            eager_cols = f"{eager_s:8.2f} {lazy_s:8.2f} {lazy_s / eager_s:9.2f}x"
        else:  # past the budget: eager is not run
            eager_cols = f"{'-':>8} {lazy_s:8.2f} {'-':>10}"
        print(f"{lazy.texts[0]['n_tokens']:7d} {need / 2**30:8.2f} GiB {eager_cols} "
              f"{peak / 2**30:6.2f} GiB " + (f"{diff:14.2e}" if diff == diff else f"{'-':>14}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds of naive and local")
    parser.add_argument("--naive-share", type=float, default=0.15,
                        help="share of each round's texts the naive loop runs (it is slow)")
    parser.add_argument("--memory-texts", type=int, default=6000,
                        help="the larger memory run (the README quotes 20,000)")
    parser.add_argument("--ray-texts", type=int, default=500)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument("--ray-only", action="store_true", help="only the Ray engine")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-tiny", action="store_true",
                        help="memory runs on a tiny random BERT (quick; see memory_probe)")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--own-cost-only", action="store_true",
                        help="only corpus mode against the bare forward pass")
    parser.add_argument("--own-cost-texts", type=int, default=480)
    parser.add_argument("--own-cost-rounds", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 gives steadier CPU times)")
    parser.add_argument("--long", type=int, nargs="+", default=None, metavar="T",
                        help="only one text of T tokens, lazy against eager (see above)")
    parser.add_argument("--long-layers", type=int, default=4)
    parser.add_argument("--long-smollm2", action="store_true",
                        help="--long on SmolLM2-135M itself (30 layers) instead")
    parser.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.long:
        if args.torch_threads:
            import torch

            torch.set_num_threads(args.torch_threads)
        long_texts(args.long, args.long_layers, args.long_smollm2)
        return
    if args.memory_probe:
        memory_probe(args.memory_probe, args.memory_tiny)
        return
    if args.memory_only:
        memory(args)
        return

    import torch

    import attnscope as at

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model = at.load(device="cpu")
    texts = make_texts(args.texts)
    print(f"attnscope corpus benchmark: {len(texts)} texts of 10-120 words, "
          f"{model.name}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.ray_only:
            print(f"\ncorpus mode's own cost (no importance; {args.own_cost_rounds} interleaved "
                  "rounds; batches of 32 for both):")
            own_cost(model, make_texts(args.own_cost_texts, seed=3, length=(8, 40)),
                     args.own_cost_rounds, folder, "sentences of 8-40 words")
            own_cost(model, texts[: args.own_cost_texts // 2], args.own_cost_rounds, folder,
                     "texts of 10-120 words")
        if args.own_cost_only:
            return
        naive(model, texts[:8])  # warm-up
        totals = {"naive": [0.0, 0, 0], "local": [0.0, 0, 0]}
        per_round = len(texts) // args.rounds
        for r in range(0 if args.ray_only else args.rounds):
            chunk = texts[r * per_round:(r + 1) * per_round]
            share = chunk[: max(1, int(len(chunk) * args.naive_share))]
            seconds, tokens = naive(model, share)
            totals["naive"] = [totals["naive"][0] + seconds, totals["naive"][1] + tokens,
                               totals["naive"][2] + len(share)]
            seconds, tokens = local(model, chunk, folder / "local.duckdb", f"round{r}")
            totals["local"] = [totals["local"][0] + seconds, totals["local"][1] + tokens,
                               totals["local"][2] + len(chunk)]
        if not args.ray_only:
            print("\nthroughput (interleaved rounds, same process):")
            rate = {}
            for name, (seconds, tokens, count) in totals.items():
                rate[name] = count / seconds
                print(f"  {name:6s} {count:5d} texts {seconds:7.1f} s  {count / seconds:7.1f} "
                      f"texts/s  {tokens / seconds:8.0f} tokens/s")
            print(f"  local / naive: {rate['local'] / rate['naive']:.2f}x (target >= 3x)")
            # What batching alone can win here: the bare forward pass, one text at a time
            # (what the naive loop runs) against batches of 32, on the same texts.
            sample = texts[: max(64, int(len(texts) * args.naive_share / 2))]
            alone = forward_only(model, sample, 1)
            batched = forward_only(model, sample, 32)
            print(f"  the model's forward pass alone on {len(sample)} of these texts: "
                  f"{len(sample) / alone:.1f} texts/s one at a time, {len(sample) / batched:.1f} "
                  f"in batches of 32 ({alone / batched:.2f}x); the naive loop spends "
                  f"{alone / len(sample) * rate['naive']:.0%} of its time in it")

        if not (args.skip_resume or args.ray_only):
            print("\nresume after SIGKILL:")
            resume = resume_check(texts[:600], folder)
            print(f"  killed after {resume['batches_before_kill']} committed batches "
                  f"({resume['committed_before_kill']} texts); rerun: {resume['rerun_says']}")
            print(f"  final texts: {resume['final']} of 600 (nothing counted twice; only the "
                  "batch in flight at the kill was redone)")

        if not args.skip_ray:
            ray_texts = texts[: args.ray_texts]
            start = time.perf_counter()
            result = at.corpus(model, ray_texts, out=folder / "ray.duckdb", engine="ray",
                               workers=2, progress=False)
            seconds = time.perf_counter() - start
            s = result.summary
            print(f"\nray, 2 workers, {len(ray_texts)} texts: {seconds:.1f} s in all (starting "
                  f"Ray and loading the model in each worker included) -> "
                  f"{s.texts_per_second:.1f} texts/s, {s.tokens_per_second:.0f} tokens/s")

    if not (args.skip_memory or args.ray_only):
        memory(args)


def memory(args) -> None:
    which = "a tiny random BERT" if args.memory_tiny else "the embedded model"
    print(f"\nmemory (fresh process each, peak RSS, {which}):")
    peaks = []
    for count in (args.texts, args.memory_texts):
        command = [sys.executable, __file__, "--memory-probe", str(count)]
        out = subprocess.run(command + (["--memory-tiny"] if args.memory_tiny else []),
                             capture_output=True, text=True, check=True)
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        peaks.append(probe["peak_mib"])
        print(f"  {count:6d} texts: {probe['peak_mib']:7.0f} MiB ({probe['seconds']:.0f} s)")
    print(f"  growth: {100 * (peaks[1] / peaks[0] - 1):+.1f}% (target within 10%)")


if __name__ == "__main__":
    main()
