"""Reading a corpus store: :class:`CorpusResult`.

Every table method returns a pandas DataFrame (``.to_numpy()`` for NumPy,
``polars.from_pandas(...)`` for polars); :meth:`CorpusResult.array` gives one statistic as a
NumPy ``[L, H]`` array; :meth:`CorpusResult.sql` runs any SQL on the DuckDB file and returns a
DuckDB relation (``.df()``, ``.pl()``, ``.fetchnumpy()``, ``.arrow()``).

The store is opened read-only and only while a method runs, so a result object can live in a
notebook or a web app while other processes read the same file.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attnscope.analysis.corpus import EXAMPLE_SCORES, OFFSETS, STATS
from attnscope.analysis.patterns import LABELS, SCORES
from attnscope.corpora.store import check_run, check_tables, connect
from attnscope.errors import AttnscopeError, check_index

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pandas import DataFrame

    from attnscope.corpora.engines import RunSummary
    from attnscope.models import LoadedModel
    from attnscope.render.views import AttnView

__all__ = ["CorpusResult"]


@dataclass(frozen=True)
class CorpusImportance:
    """A run's head importance: ``method`` ("gradient" or "ablation"), ``values`` (the mean
    over texts) and ``spread`` (std over texts, ddof 0), float64 ``[L, H]``; ``texts`` counted."""

    method: str
    values: np.ndarray
    spread: np.ndarray
    texts: int


@dataclass(frozen=True)
class QKSample:
    """A run's sampled tokens (``attnscope corpus --embeddings N``), in priority order.

    ``tokens``: a DataFrame with one row per token: text_key, token_pos, token, segment (0:
    ``text``, 1: ``text_b``), char_start, char_end (its span in that text), text, text_b,
    position (in the input), n_tokens. ``queries`` and ``keys``: float32 ``[N, L, H, d_head]``,
    the token's query and key in every head (keys post-rotary, key/value heads repeated).
    """

    tokens: DataFrame
    queries: np.ndarray
    keys: np.ndarray


class CorpusResult:
    """The statistics of one run in a corpus store (a DuckDB file).

    Args:
        path: the ``.duckdb`` file written by :func:`attnscope.corpus` or ``attnscope corpus``.
        run: the run to read (see :meth:`runs`); may be left out when the file holds one run.
        latest: with ``run`` left out, read the latest run of a file that holds several
            (as ``serve`` and the command line do) instead of asking which.

    Attributes: ``path``, ``run_id``, ``model_name``, ``num_layers``, ``num_heads``,
    ``settings`` (dict), ``source``, ``run_names`` (every run in the file, oldest first),
    ``summary`` (set by :func:`attnscope.corpus`).

    The store is checked when it is opened: a damaged one (a missing table, settings that are
    not JSON, a head count its rows contradict) is one sentence naming it and what is wrong.
    """

    def __init__(self, path: str | os.PathLike[str], run: str | None = None, *,
                 latest: bool = False) -> None:
        self.path = Path(path)
        self._con: Any = None  # a DuckDB connection, opened on first use
        with self._connection() as con:
            runs = con.execute("SELECT run_id FROM runs ORDER BY created, run_id").fetchall()
            if not runs:
                raise AttnscopeError(f"'{self.path}' holds no corpus run yet.")
            names = [r[0] for r in runs]
            if run is None:
                if len(names) > 1 and not latest:
                    raise AttnscopeError(f"'{self.path}' holds {len(names)} runs: pick one with "
                                         f"run= (--run): {', '.join(map(repr, names))}.")
                run = names[-1]
            if run not in names:
                raise AttnscopeError(f"'{self.path}' has no run {run!r}; its runs are "
                                     f"{', '.join(map(repr, names))}.")
            # checked before anything is sized from it: a damaged store is one sentence
            model, layers, heads, settings, source = check_run(con, self.path, run)
        self.run_id: str = run
        self.run_names: list[str] = names
        self.model_name: str = model
        self.num_layers: int = layers
        self.num_heads: int = heads
        self.settings: dict[str, Any] = settings
        self.source: str = source
        #: What ``texts.position`` counts: "line", "row" or "item".
        self.source_unit: str = self.settings.get("unit", "item")
        #: What the call that returned this result did (a RunSummary), else None.
        self.summary: RunSummary | None = None

    # ----- connection -------------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[Any]:
        if self._con is not None:
            yield self._con
            return
        try:
            from attnscope.corpora.store import _duckdb

            con = connect(self.path, read_only=True)
        except AttnscopeError:
            raise
        try:
            check_tables(con, self.path)
            yield con
        except _duckdb().Error as err:
            raise AttnscopeError(f"Cannot read '{self.path}': {str(err).splitlines()[0]}") from None
        finally:
            con.close()

    def _query(self, sql: str, params: list[Any] | None = None) -> DataFrame:
        with self._connection() as con:
            return con.execute(sql, params or []).df()

    def sql(self, query: str, params: list[Any] | None = None) -> Any:
        """Run SQL on the store; returns a DuckDB relation (``.df()``, ``.pl()``,
        ``.fetchnumpy()``). The connection stays open (read-only) until :meth:`close`."""
        if self._con is None:
            self._con = connect(self.path, read_only=True)
        return self._con.sql(query, params=params or None)

    def close(self) -> None:
        """Close the connection :meth:`sql` opened (other methods open and close their own)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> CorpusResult:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"CorpusResult({str(self.path)!r}, run={self.run_id!r}, model={self.model_name!r}, "
                f"{self.num_texts} texts)")

    # ----- overview ---------------------------------------------------------------------------
    def runs(self) -> DataFrame:
        """Every run in the file: run_id, model, source, settings, texts, created, updated."""
        return self._query(
            "SELECT r.run_id, r.model, r.source, r.settings, count(t.text_key) AS texts, "
            "coalesce(sum(t.n_tokens), 0) AS tokens, r.created, r.updated FROM runs r "
            "LEFT JOIN texts t USING (run_id) GROUP BY ALL ORDER BY r.created")

    @property
    def num_texts(self) -> int:
        """Texts counted in this run."""
        return int(self._query("SELECT count(*) AS n FROM texts WHERE run_id = ?",
                               [self.run_id])["n"].iloc[0])

    @property
    def num_tokens(self) -> int:
        return int(self._query("SELECT coalesce(sum(n_tokens), 0) AS n FROM texts "
                               "WHERE run_id = ?", [self.run_id])["n"].iloc[0])

    def texts(self, limit: int | None = None) -> DataFrame:
        """The texts counted: text_key, position, text, text_b, n_tokens, truncated, batch."""
        sql = ("SELECT text_key, position, text, text_b, n_tokens, truncated, batch FROM texts "
               "WHERE run_id = ? ORDER BY position")
        return self._query(sql + (f" LIMIT {int(limit)}" if limit else ""), [self.run_id])

    def problems(self) -> DataFrame:
        """Records that were skipped, repeated or cut: position, kind, message."""
        return self._query("SELECT position, kind, message FROM problems WHERE run_id = ? "
                           "ORDER BY position, kind", [self.run_id])

    # ----- per-head statistics --------
    def head_stats(self, stat: str | None = None) -> DataFrame:
        """Long table: layer, head, stat, n, mean, std (ddof 0) for every statistic (or one).

        Statistics: the :func:`~attnscope.head_patterns` scores, "entropy" (nats), the
        positional profile "offset:-8" ... "offset:+8", and "label:NAME" (mean = the share of
        texts on which the head got that label).
        """
        if stat is not None:
            _check_stat(stat)
        where = " AND stat = ?" if stat else ""
        return self._query(
            "SELECT layer, head, stat, n, mean, std FROM head_summary WHERE run_id = ?" + where
            + " ORDER BY layer, head, stat", [self.run_id] + ([stat] if stat else []))

    def array(self, stat: str, what: str = "mean") -> np.ndarray:
        """One statistic as a float64 ``[L, H]`` array: ``what`` is "mean", "std" or "n"
        (NaN where no text gave a value)."""
        _check_stat(stat)
        if what not in ("mean", "std", "n"):
            raise AttnscopeError(f"Unknown summary {what!r}: choose 'mean', 'std' or 'n'.")
        out = np.full((self.num_layers, self.num_heads), np.nan)
        frame = self._query(
            "SELECT layer, head, n, CASE WHEN n > 0 THEN sum / n END AS mean, CASE WHEN n > 0 "
            "THEN sqrt(greatest(sum_sq / n - (sum / n) ^ 2, 0)) END AS std FROM head_stats "
            "WHERE run_id = ? AND stat = ?", [self.run_id, stat])
        if len(frame):
            values = frame[what].to_numpy(dtype=np.float64, na_value=np.nan)
            out[frame["layer"].to_numpy(), frame["head"].to_numpy()] = values
        return out

    def scores(self) -> DataFrame:
        """Wide table, one row per head: layer, head, label (the most frequent), label_share,
        then the mean of every head-pattern score and of entropy."""
        frame = self.head_stats()
        wide = frame[frame["stat"].isin((*SCORES, "entropy"))].pivot_table(
            index=["layer", "head"], columns="stat", values="mean", dropna=False)
        labels = self.labels()
        top = labels.sort_values(["layer", "head", "share"], ascending=[True, True, False])
        top = top.groupby(["layer", "head"]).head(1).set_index(["layer", "head"])
        wide.insert(0, "label", top["label"])
        wide.insert(1, "label_share", top["share"])
        # a score no text defined (induction in an encoder) stays as a column of NaN
        wide = wide.reindex(columns=["label", "label_share", *SCORES, "entropy"])
        wide.columns.name = None
        return wide.reset_index()

    def labels(self) -> DataFrame:
        """Label distribution: layer, head, label, share (of texts), texts."""
        frame = self._query(
            "SELECT layer, head, substr(stat, 7) AS label, mean AS share, "
            "CAST(round(sum) AS BIGINT) AS texts FROM head_summary JOIN head_stats "
            "USING (run_id, layer, head, stat) WHERE run_id = ? AND stat LIKE 'label:%' "
            "ORDER BY layer, head, label", [self.run_id])
        return frame[["layer", "head", "label", "share", "texts"]]

    def label_shares(self) -> np.ndarray:
        """The label distribution as float64 ``[L, H, len(LABELS)]`` (labels in the order of
        :data:`attnscope.analysis.patterns.LABELS`)."""
        return np.stack([self.array(f"label:{name}") for name in LABELS], axis=-1)

    def profile(self) -> np.ndarray:
        """Positional profile: mean weight by relative offset -8..+8, float64 ``[L, H, 17]``."""
        return np.stack([self.array(f"offset:{o:+d}") for o in OFFSETS], axis=-1)

    # ----- importance -------------------------------------------------------------------------
    def has_importance(self) -> bool:
        """Whether the run stored head importance (a run with ``importance=``)."""
        with self._connection() as con:
            if not con.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_name = 'head_importance'").fetchone()[0]:
                return False
            return con.execute("SELECT count(*) FROM head_importance WHERE run_id = ?",
                               [self.run_id]).fetchone()[0] > 0

    def importance(self) -> CorpusImportance:
        """Every head's importance over the run's texts: mean and spread (std over texts,
        ddof 0), float64 ``[L, H]`` each; one sentence when the run stored none."""
        if not self.has_importance():
            raise AttnscopeError(f"Run {self.run_id!r} in '{self.path}' has no head importance: "
                                 "run attnscope corpus again with --importance (into a new "
                                 "store or --run).")
        frame = self._query("SELECT layer, head, method, n, sum, sum_sq FROM head_importance "
                            "WHERE run_id = ?", [self.run_id])
        shape = (self.num_layers, self.num_heads)
        values, spread, counts = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape)
        layer, head = frame["layer"].to_numpy(), frame["head"].to_numpy()
        n = frame["n"].to_numpy(dtype=np.float64)
        mean = frame["sum"].to_numpy() / n
        values[layer, head] = mean
        spread[layer, head] = np.sqrt(np.maximum(frame["sum_sq"].to_numpy() / n - mean**2, 0))
        counts[layer, head] = n
        return CorpusImportance(str(frame["method"].iloc[0]), values, spread,
                                int(counts.max()))

    # ----- the query/key sample ----------------------------------------------------------------
    def has_qk_sample(self) -> bool:
        """Whether the run kept sampled queries and keys (a run with ``embeddings=``)."""
        with self._connection() as con:
            if not con.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_name = 'embeddings'").fetchone()[0]:
                return False
            return con.execute("SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE run_id = ? "
                               "LIMIT 1)", [self.run_id]).fetchone()[0] > 0

    def qk_sample(self) -> QKSample:
        """The run's sampled tokens with their queries and keys in every head (see
        :class:`QKSample`); one sentence when the run kept none or the rows are damaged."""
        from attnscope.analysis.corpus import EMBEDDINGS_LIMIT

        if not self.has_qk_sample():
            raise AttnscopeError(f"Run {self.run_id!r} in '{self.path}' kept no queries and "
                                 "keys: run attnscope corpus again with --embeddings N (into a "
                                 "new store or --run).")
        frame = self._query(
            "SELECT e.text_key, e.token_pos, e.token, e.segment, e.char_start, e.char_end, "
            "e.head_dim, e.queries, e.keys, t.text, t.text_b, t.position, t.n_tokens "
            "FROM embeddings e JOIN texts t USING (run_id, text_key) WHERE e.run_id = ? "
            f"ORDER BY e.priority, e.text_key, e.token_pos LIMIT {EMBEDDINGS_LIMIT}",
            [self.run_id])
        dims = set(frame["head_dim"].tolist())
        layers, heads = self.num_layers, self.num_heads
        width = next(iter(dims)) if len(dims) == 1 else 0
        size = layers * heads * width * 4
        if not (isinstance(width, int | np.integer) and 1 <= width <= 65_536) or any(
                len(blob) != size for column in ("queries", "keys") for blob in frame[column]):
            raise AttnscopeError(f"The corpus store '{self.path}' is damaged: run "
                                 f"{self.run_id!r} has embeddings rows that are not float32 "
                                 f"[{layers}, {heads}, d_head] queries and keys.")
        shape = (len(frame), layers, heads, int(width))
        queries = np.frombuffer(b"".join(frame["queries"]), np.float32).reshape(shape)
        keys = np.frombuffer(b"".join(frame["keys"]), np.float32).reshape(shape)
        tokens = frame.drop(columns=["head_dim", "queries", "keys"])
        return QKSample(tokens, queries, keys)

    # ----- syntax -----------------------------------------------------------------------------
    def relations(self, min_count: int = 1) -> DataFrame:
        """Per relation and direction, the best head beside the fixed-offset baseline.

        Columns: relation, direction, n (arcs), layer, head, accuracy (share of arcs where the
        word the head attends to most is the other end of the arc), baseline_offset,
        baseline_accuracy. Empty when the corpus had no CoNLL-U sentences.
        """
        return self._query(
            "WITH ranked AS (SELECT relation, direction, n, layer, head, hits / n AS accuracy, "
            "row_number() OVER (PARTITION BY relation, direction ORDER BY hits DESC, layer, "
            "head) AS r FROM relations WHERE run_id = ? AND n >= ?), "
            "base AS (SELECT relation, direction, word_offset, hits, row_number() OVER "
            "(PARTITION BY relation, direction ORDER BY hits DESC, abs(word_offset), "
            "word_offset) AS r FROM relation_baselines WHERE run_id = ?) "
            "SELECT k.relation, k.direction, k.n, k.layer, k.head, k.accuracy, "
            "b.word_offset AS baseline_offset, b.hits / k.n AS baseline_accuracy "
            "FROM ranked k JOIN base b USING (relation, direction) WHERE k.r = 1 AND b.r = 1 "
            "ORDER BY k.n DESC, k.relation, k.direction", [self.run_id, min_count, self.run_id])

    def relation_accuracy(self, relation: str, direction: str = "dependent->head") -> np.ndarray:
        """Accuracy of every head on one relation, float64 ``[L, H]``."""
        frame = self._query("SELECT layer, head, hits / n AS accuracy FROM relations WHERE "
                            "run_id = ? AND relation = ? AND direction = ?",
                            [self.run_id, relation, direction])
        if not len(frame):
            raise AttnscopeError(f"No {relation!r} arcs ({direction}) in this run.")
        out = np.full((self.num_layers, self.num_heads), np.nan)
        out[frame["layer"].to_numpy(), frame["head"].to_numpy()] = frame["accuracy"].to_numpy()
        return out

    # ----- examples ---------------------------------------------------------------------------
    def examples(self, layer: int, head: int, kind: str = "weight",
                 k: int | None = None) -> DataFrame:
        """The evidence for one head: its best texts, best first.

        ``kind`` "weight": the texts with the strongest single weight between two non-special
        tokens (columns value, query_pos, key_pos, query_token, key_token); or a score name
        (e.g. "previous"): the texts where the head scored highest. Every row has text_key,
        position and text. Negative layer and head count from the end.
        """
        layer = check_index(layer, self.num_layers, "layer")
        head = check_index(head, self.num_heads, "head")
        if kind not in ("weight", *EXAMPLE_SCORES):
            raise AttnscopeError(f"Unknown example kind {kind!r}: choose 'weight' or one of "
                                 f"{', '.join(EXAMPLE_SCORES)}.")
        frame = self._query(
            "SELECT e.value, e.query_pos, e.key_pos, e.query_token, e.key_token, e.text_key, "
            "t.position, t.text, t.text_b FROM examples e JOIN texts t USING (run_id, text_key) "
            "WHERE e.run_id = ? AND e.layer = ? AND e.head = ? AND e.kind = ? "
            "ORDER BY e.value DESC, e.text_key", [self.run_id, layer, head, kind])
        return frame.head(k) if k is not None else frame

    def head_view(self, layer: int, head: int, rank: int = 0, kind: str = "weight", *,
                  model: Any = None) -> AttnView:
        """The head view of the ``rank``-th example of (layer, head), opened on that layer and
        head: the text is captured again with the run's model (or ``model``: a
        :class:`~attnscope.LoadedModel`, name or directory). Returns an
        :class:`~attnscope.AttnView`."""
        from attnscope.capture import capture
        from attnscope.render.views import head_view

        frame = self.examples(layer, head, kind)
        if rank < 0 or rank >= len(frame):
            raise AttnscopeError(f"Head {layer}.{head} has {len(frame)} examples of kind "
                                 f"{kind!r}; rank {rank} is out of range.")
        row = frame.iloc[rank]
        text_b = row["text_b"] if isinstance(row["text_b"], str) else None
        trace = capture(self._model(model), row["text"], text_b, attention="eager")
        return head_view(trace, layer=layer, heads=[check_index(head, self.num_heads, "head")])

    def _model(self, model: Any = None) -> LoadedModel:
        from attnscope.models import DEFAULT_MODEL_NAME, LoadedModel, load

        if isinstance(model, LoadedModel):
            return model
        if model is not None:
            loaded = load(model)
        else:
            try:
                loaded = load(None if self.model_name == DEFAULT_MODEL_NAME else self.model_name)
            except AttnscopeError as err:  # e.g. a model that was loaded in Python, not by name
                raise AttnscopeError(
                    f"Run {self.run_id!r} was counted with a model that cannot be loaded again "
                    f"from its name {self.model_name!r}: pass the model yourself (model= in "
                    "Python, e.g. model=at.load(model, tokenizer=tokenizer); --model NAME_OR_DIR "
                    f"on the command line); loading it said: {err}") from None
        if (loaded.num_layers, loaded.num_heads) != (self.num_layers, self.num_heads):
            raise AttnscopeError(f"{loaded.name} has {loaded.num_layers} x {loaded.num_heads} "
                                 f"heads, but this run has {self.num_layers} x {self.num_heads}.")
        return loaded

    # ----- token search -----------------------------------------------------------------------
    def search(self, token: str, *, model: Any = None, limit: int = 200, top: int = 5,
               batch_size: int = 16) -> DataFrame:
        """What each head attends to from the token ``token`` (e.g. "it"), across the corpus.

        Reads up to ``limit`` texts of the run that contain ``token`` (as a whole token,
        ignoring case), runs the model on them again, and sums each head's attention from
        every occurrence by key token. Returns layer, head, key_token, weight (mean per
        occurrence), occurrences: the ``top`` key tokens per head, strongest first.
        """
        import pandas as pd

        from attnscope.analysis.corpus import batch_plan, search_batch

        for name, value in (("limit", limit), ("top", top), ("batch_size", batch_size)):
            check_count(name, value, 1)
        needle = token.strip()
        if not needle:
            raise AttnscopeError("Give a token to search for, e.g. 'it'.")
        candidates = self._query(
            "SELECT text FROM texts WHERE run_id = ? AND contains(lower(text), lower(?)) "
            "ORDER BY position", [self.run_id, needle])["text"].tolist()
        loaded = self._model(model)
        rows: dict[tuple[int, int, str], float] = {}
        occurrences = 0
        texts: list[str] = []
        from attnscope.analysis.patterns import _normalise
        from attnscope.tokens import tokenize

        wanted = _normalise(needle)
        for text in candidates:
            tokens = tokenize(loaded, text).tokens
            if any(_normalise(t) == wanted for t in tokens):
                texts.append(text)
                if len(texts) >= limit:
                    break
        lengths = [len(t) for t in texts]
        for batch in batch_plan(lengths, batch_size):
            found, count = search_batch(loaded, [texts[i] for i in batch], needle)
            occurrences += count
            for layer, head, key, weight in found:
                rows[(layer, head, key)] = rows.get((layer, head, key), 0.0) + weight
        if not occurrences:
            raise AttnscopeError(f"No text of this run has the token {token!r}.")
        frame = pd.DataFrame([(la, h, key, w / occurrences, occurrences)
                              for (la, h, key), w in rows.items()],
                             columns=["layer", "head", "key_token", "weight", "occurrences"])
        frame = frame.sort_values(["layer", "head", "weight"], ascending=[True, True, False])
        return frame.groupby(["layer", "head"]).head(top).reset_index(drop=True)


def check_count(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is a whole number of at least ``minimum``, else one sentence."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise AttnscopeError(f"{name} must be a whole number of at least {minimum}, not "
                             f"{value!r}.")
    return int(value)


def _check_stat(stat: str) -> None:
    if stat not in STATS:
        raise AttnscopeError(f"Unknown statistic {stat!r}; the statistics are "
                             f"{', '.join(STATS)}.")
