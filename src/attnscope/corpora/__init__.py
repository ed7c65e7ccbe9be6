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

    Returns:
        A :class:`CorpusResult` reading the run. ``result.summary`` says what this call did
        (texts processed, already done, problems).
    """
    from attnscope.corpora.engines import run as run_engine
    from attnscope.corpora.sources import open_source, text_char_limit
    from attnscope.corpora.store import Store
    from attnscope.models import DEFAULT_MODEL_NAME, LoadedModel, load

    if batch_size < 1:
        raise AttnscopeError(f"batch_size must be at least 1, not {batch_size}.")
    if top_k < 1:
        raise AttnscopeError(f"top_k must be at least 1, not {top_k}.")
    if limit is not None and limit < 1:
        raise AttnscopeError(f"limit must be at least 1, not {limit}.")
    out = Path(out)
    if out.is_dir():
        raise AttnscopeError(f"Cannot write '{out}': it is a folder.")
    opened = open_source(source, text_field=text_field, pair_field=pair_field)
    loaded = model if isinstance(model, LoadedModel) else load(model)
    # read at most what a text can use: memory stays bounded whatever the input
    opened.max_chars = text_char_limit(loaded.max_length)
    # Ray workers load the model themselves, by name (None: the embedded default).
    model_spec = None if loaded.name == DEFAULT_MODEL_NAME else loaded.name
    run_id = run or f"{Path(loaded.name).name}@{Path(opened.label).name}"
    settings = {"batch_size": batch_size, "top_k": top_k, "text_field": text_field,
                "pair_field": pair_field, "limit": limit, "unit": opened.unit}
    with Store(out) as store:
        store.ensure_run(run_id, loaded, opened.label, settings)
        summary = run_engine(loaded, opened, store, run_id, batch_size=batch_size, limit=limit,
                             top_k=top_k, engine=engine, ray_address=ray_address,
                             workers=workers, model_spec=model_spec,
                             gpus_per_worker=gpus_per_worker, progress=progress)
    result = CorpusResult(out, run_id)
    result.summary = summary
    return result
