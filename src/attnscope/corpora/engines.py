"""Run a corpus through a model: plan batches, process them locally or on Ray, commit each.

The driver reads the source in windows of ``16 x batch_size`` texts, leaves out texts already
counted (a resumed run) and repeats (counted once), cuts each window into batches of similar
length (:func:`~attnscope.analysis.corpus.batch_plan`) and hands the batches to an engine:

* ``local``: :func:`~attnscope.analysis.corpus.process_batch` in this process, one batch at a
  time;
* ``ray``: the same function in a pool of Ray actors that each hold the model, through Ray
  Data (``map_batches`` with an actor class), on a local Ray started for the run or on a
  cluster (``ray_address``).

Either way the driver commits every batch's result in one transaction as it arrives, so a
kill loses at most the batches in flight. The plan depends only on the input and on what the
store already holds from earlier windows, so a resumed run cuts the very same batches as an
uninterrupted one, and its tables come out equal.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from attnscope.analysis.corpus import CorpusItem, batch_plan, process_batch
from attnscope.corpora.sources import Problem, Source
from attnscope.corpora.store import Store
from attnscope.errors import AttnscopeError
from attnscope.models import LoadedModel

__all__ = ["RunSummary", "run"]

#: Batches per planning window: enough texts to sort by length, few enough to stay small.
WINDOW_BATCHES = 16
#: Batches handed to Ray Data at a time (its actor pool holds the model for that long).
RAY_CHUNK_BATCHES = 256


@dataclass
class RunSummary:
    """What one call did: texts processed now, texts found already done (resumed), problems
    by kind, tokens, seconds, the batches committed, and how many texts took the lazy path
    (too long for eager weights within the memory budget)."""

    run_id: str
    processed: int = 0
    already_done: int = 0
    tokens: int = 0
    batches: int = 0
    seconds: float = 0.0
    lazy: int = 0
    problems: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    @property
    def texts_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass
class _Planned:
    index: int
    items: list[CorpusItem]


def _lengths(model: LoadedModel, items: list[CorpusItem]) -> list[int]:
    """Token counts (with special tokens, capped at the model's limit), for planning only."""
    from attnscope.tokens import _drop_length_log

    tokenizer = model.tokenizer
    log = logging.getLogger("transformers.tokenization_utils_base")
    log.addFilter(_drop_length_log)
    try:
        single = [i for i, item in enumerate(items) if item.text_b is None]
        lengths = [0] * len(items)
        if single:
            ids = tokenizer([items[i].text for i in single])["input_ids"]
            for i, row in zip(single, ids, strict=True):
                lengths[i] = len(row)
        for i, item in enumerate(items):
            if item.text_b is not None:
                lengths[i] = len(tokenizer(item.text, item.text_b)["input_ids"])
    finally:
        log.removeFilter(_drop_length_log)
    limit = model.max_length or max(lengths, default=1)
    return [min(n, limit) for n in lengths]


def _windows(source: Source, size: int, limit: int | None) -> Iterator[list[CorpusItem | Problem]]:
    """The source's records in windows of ``size``; the reading stops at the ``limit``-th
    text, so a limit bounds what is read even from an endless input."""
    window: list[CorpusItem | Problem] = []
    texts = 0
    for record in source:
        window.append(record)
        if isinstance(record, CorpusItem):
            texts += 1
            if limit is not None and texts >= limit:
                break
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def _plan(source: Source, store: Store, run_id: str, model: LoadedModel, batch_size: int,
          limit: int | None, summary: RunSummary, progress) -> Iterator[_Planned]:
    """Batches still to do, in plan order; records problems and skips as it goes."""
    index = 0
    unit = source.unit
    for window in _windows(source, WINDOW_BATCHES * batch_size, limit):
        problems = [r for r in window if isinstance(r, Problem)]
        items = [r for r in window if isinstance(r, CorpusItem)]
        window_start = window[0].position
        stored = store.done(run_id, [item.key for item in items])
        fresh: list[CorpusItem] = []
        first_seen: dict[str, int] = {}
        for item in items:
            earlier = stored.get(item.key)
            if earlier is not None and earlier < window_start:  # counted in an earlier window
                problems.append(Problem(item.position, "duplicate", f"{unit} {item.position} "
                                        f"repeats {unit} {earlier}; it is counted once"))
            elif item.key in first_seen:
                problems.append(Problem(item.position, "duplicate", f"{unit} {item.position} "
                                        f"repeats {unit} {first_seen[item.key]}; it is "
                                        "counted once"))
            else:
                first_seen[item.key] = item.position
                fresh.append(item)
        store.add_problems(run_id, [(p.position, p.kind, p.message) for p in problems])
        for p in problems:
            summary.problems[p.kind] += 1
            if p.kind != "empty":
                summary.messages.append(p.message)
        if progress is not None:  # a text cut while read is still counted, as a text
            progress.update(sum(1 for p in problems if p.kind not in ("truncated", "unread")))
        plan = batch_plan(_lengths(model, fresh), batch_size) if fresh else []
        for batch in plan:
            todo = [fresh[i] for i in batch if fresh[i].key not in stored]
            summary.already_done += len(batch) - len(todo)
            if progress is not None and len(todo) < len(batch):
                progress.update(len(batch) - len(todo))
            if todo:
                yield _Planned(index, todo)
            index += 1


def run(model: LoadedModel, source: Source, store: Store, run_id: str, *, batch_size: int = 32,
        limit: int | None = None, top_k: int = 5, engine: str = "local",
        ray_address: str | None = None, workers: int = 2, model_spec: Any = None,
        gpus_per_worker: float = 0.0, progress: bool = True, importance: str | None = None,
        importance_budget: float | None = 600.0, embeddings: int = 0,
        attention: str | None = None, budget: Any = None) -> RunSummary:
    """Process ``source`` into ``store`` under ``run_id`` (see the module docstring).

    ``attention`` and ``budget`` choose, per text, eager or lazy attention
    (:func:`~attnscope.analysis.corpus.route_batch`): None sends a text lazy when its eager
    weights would pass the memory budget.

    With ``importance`` ("gradient" or "ablation") each batch also gets every text's head
    importance (:func:`attnscope.head_importance`, its probes seeded by the batch's index), in
    the batch's transaction. Exact ablation is estimated from the first batch and refused when
    the whole run would pass ``importance_budget`` seconds (None: no limit). With
    ``embeddings`` N > 0 the store keeps the queries and keys of the run's N sampled tokens.
    """
    if engine not in ("local", "ray"):
        raise AttnscopeError(f"Unknown engine {engine!r}: choose 'local' or 'ray'.")
    if importance is not None and engine != "local":
        raise AttnscopeError("Head importance runs in the local engine only (it needs a "
                             "backward pass or L x H reruns per batch); leave out --engine ray "
                             "or --importance.")
    summary = RunSummary(run_id)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = source.count(limit)  # None for a pipe: counting it would consume it
        if limit is not None:
            total = min(total, limit) if total is not None else limit
        bar = tqdm(total=total, unit="text", desc="corpus", dynamic_ncols=True)
    started = time.perf_counter()

    def committed(planned_index: int, result) -> None:
        # process_batch knows positions, not what they count: say "line 12: ..." here
        result.problems = [(position, kind, f"{source.unit} {position}: {message}")
                           for position, kind, message in result.problems]
        store.commit(run_id, result, planned_index, top_k, embeddings)
        summary.processed += len(result.texts)
        summary.tokens += result.num_tokens
        summary.batches += 1
        summary.lazy += getattr(result, "lazy", 0)
        for _, kind, message in result.problems:
            summary.problems[kind] += 1
            summary.messages.append(message)
        if bar is not None:
            bar.update(len(result.texts) + sum(1 for p in result.problems
                                               if p[1] != "truncated"))
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(f"{summary.tokens / max(elapsed, 1e-9):,.0f} tokens/s",
                                refresh=False)

    planned = _plan(source, store, run_id, model, batch_size, limit, summary, bar)
    estimated = importance != "ablation" or importance_budget is None
    try:
        if engine == "local":
            for batch in planned:
                clock = time.perf_counter()
                result = process_batch(model, batch.items, top_k=top_k,
                                       embeddings=embeddings, attention=attention,
                                       budget=budget)
                if importance is not None and result.texts:
                    if not estimated and importance_budget is not None:
                        _check_ablation_budget(model, source, limit, batch_size,
                                               time.perf_counter() - clock, importance_budget)
                        estimated = True
                    result.importance = (importance, _importance(model, result, importance,
                                                                 batch.index))
                committed(batch.index, result)
        else:
            for index, result in _ray_results(planned, model_spec, workers, ray_address, top_k,
                                              gpus_per_worker, embeddings, attention, budget):
                committed(index, result)
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


# ----- head importance ---------------------------------------------------------------------------

def _importance(model: LoadedModel, result: Any, method: str, batch_index: int) -> Any:
    """Each text's head importance ``[B, L, H]`` for a processed batch, in its text order."""
    from attnscope.interventions.importance import head_importance

    if any(t["text_b"] is not None for t in result.texts):
        raise AttnscopeError("Head importance reads single texts, not text pairs; leave out "
                             "--pair-field or --importance.")
    texts = [t["text"] for t in result.texts]
    found = head_importance(model, texts, method, batch_size=max(len(texts), 1),
                            max_seconds=None, seed=batch_index)
    return found.per_text


def _check_ablation_budget(model: LoadedModel, source: Source, limit: int | None,
                           batch_size: int, first_batch_seconds: float,
                           budget: float) -> None:
    """Refuse exact ablation when the first batch's pass says the run would pass ``budget``:
    each batch costs about ``H * (L + 1) / 2`` passes' work (see head_importance)."""
    import math

    total = source.count(limit)
    if total is None:  # a pipe: the count is unknown, so is the cost
        total = limit if limit is not None else batch_size
    batches = max(1, math.ceil(total / batch_size))
    work = model.num_heads * (model.num_layers + 1) / 2
    estimate = first_batch_seconds * work * batches
    if estimate > budget:
        raise AttnscopeError(
            f"Exact ablation importance over about {total} texts would take about "
            f"{estimate:.0f} s ({work:.0f} passes' work per batch, {batches} batches), past the "
            f"budget of {budget:g} s; pass --importance-budget 0 (importance_budget=None) to run "
            "it anyway, or use --importance gradient.")


# ----- Ray ----------------------------------------------------------------------------------------

class _RayBatchWorker:
    """A Ray Data actor: loads the model once, then runs :func:`process_batch` per row."""

    def __init__(self, model_spec: Any, top_k: int, threads: int, embeddings: int = 0,
                 attention: str | None = None, budget: Any = None) -> None:
        import os

        import torch

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        torch.set_num_threads(threads)
        from attnscope.models import load

        self.model = load(model_spec)
        self.top_k = top_k
        self.embeddings = embeddings
        self.attention, self.budget = attention, budget

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = []
        for index, payload in zip(rows["index"], rows["payload"], strict=True):
            items = pickle.loads(payload)
            result = process_batch(self.model, items, top_k=self.top_k,
                                   embeddings=self.embeddings, attention=self.attention,
                                   budget=self.budget)
            results.append(pickle.dumps((int(index), result)))
        return {"result": np.array(results, dtype=object)}


def _ray_results(planned: Iterator[_Planned], model_spec: Any, workers: int,
                 ray_address: str | None, top_k: int,
                 gpus: float = 0.0, embeddings: int = 0, attention: str | None = None,
                 budget: Any = None) -> Iterator[tuple[int, Any]]:
    import os

    # A busy machine can take longer than Ray's default 30 s to start its node.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    try:
        import ray
    except ImportError:
        raise AttnscopeError("The Ray engine needs Ray: pip install 'attnscope[ray]'.") from None
    if workers < 1:
        raise AttnscopeError(f"workers must be at least 1, not {workers}.")
    started_here = False
    if not ray.is_initialized():
        try:
            if ray_address:
                ray.init(address=ray_address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
        except Exception as err:  # Ray raises bare Exceptions for a node that does not start
            raise AttnscopeError(f"Cannot start or reach Ray at {ray_address or 'this machine'}: "
                                 f"{str(err).splitlines()[0]}") from None
        started_here = True
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        chunk: list[_Planned] = []
        for batch in planned:
            chunk.append(batch)
            if len(chunk) >= RAY_CHUNK_BATCHES:
                yield from _ray_chunk(ray, chunk, model_spec, workers, top_k, gpus, embeddings,
                                      attention, budget)
                chunk = []
        if chunk:
            yield from _ray_chunk(ray, chunk, model_spec, workers, top_k, gpus, embeddings,
                                      attention, budget)
    finally:
        if started_here:
            ray.shutdown()


def _ray_chunk(ray, chunk: list[_Planned], model_spec: Any, workers: int, top_k: int,
               gpus: float, embeddings: int = 0, attention: str | None = None,
               budget: Any = None) -> Iterator[tuple[int, Any]]:
    rows = [{"index": b.index, "payload": pickle.dumps(b.items)} for b in chunk]
    # one block per batch, so the actors share the work batch by batch
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _RayBatchWorker,
        fn_constructor_kwargs={"model_spec": model_spec, "top_k": top_k, "threads": 1,
                               "embeddings": embeddings, "attention": attention,
                               "budget": budget},
        # Ray hides GPUs from actors that ask for none: a worker sees one only when asked
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
        num_cpus=1, batch_format="numpy", **({"num_gpus": gpus} if gpus else {}),
    )
    for row in dataset.iter_rows():
        yield pickle.loads(row["result"])
