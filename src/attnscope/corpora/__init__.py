"""Corpus mode: what every head does across thousands of texts, streamed into DuckDB.

    import attnscope as at
    result = at.corpus(at.load(), "sentences.txt", out="stats.duckdb")
    result.scores()                      # one row per head: label, mean of every score
    result.examples(layer=0, head=2)     # the evidence, best first
    result.head_view(0, 2)               # the head view of the best example
    result.relations()                   # syntactic heads, from CoNLL-U input
    result.sql("SELECT * FROM head_summary WHERE stat = 'previous'").df()

Modules: :mod:`~attnscope.corpora.sources` (inputs), :mod:`~attnscope.corpora.conllu`,
:mod:`~attnscope.corpora.store` (the DuckDB schema), :mod:`~attnscope.corpora.engines` (local
and Ray), :mod:`~attnscope.corpora.result` (reading) and :mod:`~attnscope.corpora.report`
(the page). The statistics themselves are :mod:`attnscope.analysis.corpus`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from attnscope.corpora.result import CorpusResult
from attnscope.errors import AttnscopeError

__all__ = ["CorpusResult", "corpus"]


def corpus(
    model: Any,
    source: Any,
    out: str | os.PathLike[str] = "stats.duckdb",
    *,
    text_field: str | None = None,
    pair_field: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    top_k: int = 5,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int = 2,
    gpus_per_worker: float = 0.0,
    run: str | None = None,
    progress: bool = True,
    importance: str | None = None,
    importance_budget: float | None = 600.0,
    embeddings: int = 0,
    attention: str | None = None,
    budget: int | None = None,
) -> CorpusResult:
    """Run ``model`` over every text of ``source`` and store per-head statistics in ``out``.

    Args:
        model: a :class:`~attnscope.LoadedModel`, or a name or directory for
            :func:`attnscope.load` (None: the embedded default).
        source: a path (``.txt`` one text per line, ``.jsonl``, ``.csv``/``.tsv``,
            ``.parquet``, ``.conllu``, or a folder saved with ``datasets``), a
            ``datasets.Dataset``, or any iterable of texts, (text, text_b) pairs or dicts.
            Each text is read to what the model can use (``max_length * 64 + 1024``
            characters); a longer one is cut and flagged in ``problems``, so memory stays
            bounded whatever the input. A pipe is read once.
        out: the DuckDB file; created if missing. Running again with the same model and
            source resumes: texts already counted are skipped. A run keeps a digest of its
            model's weights and tokenizer, and refuses to resume with another.
        text_field, pair_field: the column holding the text (default "text", or the only
            column) and, for sentence pairs, the second text.
        limit: use at most this many texts (the reading stops at the last one).
        batch_size: texts per forward pass (batches also stay under about 2**19 B x T^2
            attention cells, so long texts go in smaller batches).
        top_k: examples kept per head and kind.
        engine: "local" (this process) or "ray" (an actor pool through Ray Data; on a local
            Ray with ``workers`` CPUs, or on the cluster at ``ray_address``); each Ray worker
            asks for ``gpus_per_worker`` GPUs (0: it runs on its CPU).
        run: the run's name in the store (default: model name @ source name).
        progress: show a progress bar (texts/s, tokens/s, ETA).
        importance: also store every head's importance per text (:func:`attnscope.head_importance`,
            summed per head beside the pattern statistics, resumable like them): "gradient"
            (Michel et al.'s proxy, one backward pass per batch) or "ablation" (exact: about
            ``H * (L + 1) / 2`` passes per batch); None (the default) stores none.
        importance_budget: exact ablation is estimated from the first batch and refused when
            the run would pass this many seconds; None runs it whatever it costs.
        embeddings: also keep the queries and keys, in every head, of this many tokens
            sampled over the run (at most 2000; a token's place in the sample is a hash of its
            text and position, so the sample does not depend on batch order or resumption),
            for the atlas's joint query/key embedding; 0 (the default) keeps none.
        attention: None (the default: eager batches, and lazy attention for each text whose
            eager weights would pass the memory budget: captured alone and streamed over
            blocks of rows, the same statistics to float rounding), "eager" (a text past the
            budget is refused before anything is allocated) or "lazy" (every text), as for
            :func:`attnscope.capture`.
        budget: bytes the eager weights of a batch may take (default: half the available
            memory, or ``ATTNSCOPE_MEMORY_BUDGET``); a batch past it is split, a text past it
            goes lazy.

    Returns:
        A :class:`CorpusResult` reading the run. ``result.summary`` says what this call did
        (texts processed, already done, problems).
    """
    from attnscope.analysis.corpus import EMBEDDINGS_LIMIT, check_attention
    from attnscope.corpora.engines import run as run_engine
    from attnscope.corpora.sources import open_source, text_char_limit
    from attnscope.corpora.store import Store
    from attnscope.lazy import lazy_problem, memory_budget
    from attnscope.models import DEFAULT_MODEL_NAME, LoadedModel, load

    if batch_size < 1:
        raise AttnscopeError(f"batch_size must be at least 1, not {batch_size}.")
    if top_k < 1:
        raise AttnscopeError(f"top_k must be at least 1, not {top_k}.")
    if limit is not None and limit < 1:
        raise AttnscopeError(f"limit must be at least 1, not {limit}.")
    if importance is not None and importance not in ("gradient", "ablation"):
        raise AttnscopeError(f'importance must be "gradient", "ablation" or None, not '
                             f"{importance!r}.")
    if importance_budget is not None and (isinstance(importance_budget, bool) or not isinstance(
            importance_budget, int | float) or not importance_budget > 0):
        raise AttnscopeError(f"importance_budget must be a number of seconds above 0 (or None "
                             f"for no limit), not {importance_budget!r}.")
    if importance is not None and engine == "ray":
        raise AttnscopeError("Head importance runs in the local engine only (it needs a "
                             "backward pass or L x H reruns per batch); leave out --engine ray "
                             "or --importance.")
    if isinstance(embeddings, bool) or not isinstance(embeddings, int) or not (
            0 <= embeddings <= EMBEDDINGS_LIMIT):
        raise AttnscopeError(f"embeddings must be a whole number of tokens from 0 to "
                             f"{EMBEDDINGS_LIMIT}, not {embeddings!r}.")
    check_attention(attention)
    memory_budget(budget)  # one sentence for a budget that is not a number of bytes
    out = Path(out)
    if out.is_dir():
        raise AttnscopeError(f"Cannot write '{out}': it is a folder.")
    opened = open_source(source, text_field=text_field, pair_field=pair_field)
    loaded = model if isinstance(model, LoadedModel) else load(model)
    if attention == "lazy" and lazy_problem(loaded):
        raise AttnscopeError(lazy_problem(loaded))
    # read at most what a text can use: memory stays bounded whatever the input
    opened.max_chars = text_char_limit(loaded.max_length)
    # Ray workers load the model themselves, by name (None: the embedded default).
    model_spec = None if loaded.name == DEFAULT_MODEL_NAME else loaded.name
    run_id = run or f"{Path(loaded.name).name}@{Path(opened.label).name}"
    settings = {"batch_size": batch_size, "top_k": top_k, "text_field": text_field,
                "pair_field": pair_field, "limit": limit, "unit": opened.unit}
    if importance is not None:
        settings["importance"] = importance
    if embeddings:
        settings["embeddings"] = embeddings
    with Store(out) as store:
        if store.ensure_run(run_id, loaded, opened.label, settings):
            _check_same_importance(store, run_id, importance)
            _check_same_embeddings(store, run_id, embeddings)
        summary = run_engine(loaded, opened, store, run_id, batch_size=batch_size, limit=limit,
                             top_k=top_k, engine=engine, ray_address=ray_address,
                             workers=workers, model_spec=model_spec,
                             gpus_per_worker=gpus_per_worker, progress=progress,
                             importance=importance, importance_budget=importance_budget,
                             embeddings=embeddings, attention=attention, budget=budget)
    result = CorpusResult(out, run_id)
    result.summary = summary
    return result


def _check_same_importance(store: Any, run_id: str, importance: str | None) -> None:
    """A resumed run keeps the importance it began with: mixing would count some texts only."""
    import json

    (settings_text,) = store.con.execute("SELECT settings FROM runs WHERE run_id = ?",
                                         [run_id]).fetchone()
    began = json.loads(settings_text or "{}").get("importance")
    if began != importance:
        then = f"--importance {began}" if began else "no --importance"
        now = f"--importance {importance}" if importance else "no --importance"
        raise AttnscopeError(f"Run {run_id!r} in '{store.path}' began with {then}, and resuming "
                             f"it with {now} would count importance over only part of its "
                             "texts: resume it as it began, or give another --run name.")


def _check_same_embeddings(store: Any, run_id: str, embeddings: int) -> None:
    """A resumed run keeps the sample size it began with: its sample covers every text."""
    import json

    (settings_text,) = store.con.execute("SELECT settings FROM runs WHERE run_id = ?",
                                         [run_id]).fetchone()
    began = json.loads(settings_text or "{}").get("embeddings", 0)
    if began != embeddings:
        then = f"--embeddings {began}" if began else "no --embeddings"
        now = f"--embeddings {embeddings}" if embeddings else "no --embeddings"
        raise AttnscopeError(f"Run {run_id!r} in '{store.path}' began with {then}, and resuming "
                             f"it with {now} would sample tokens from only part of its texts: "
                             "resume it as it began, or give another --run name.")
