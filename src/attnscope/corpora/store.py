"""The DuckDB store of corpus statistics: its schema, and one transaction per batch.

The store is also the checkpoint. :meth:`Store.commit` writes a batch's texts ("done"),
statistics, examples and relation counts in **one transaction**, so a process killed at any
moment (SIGKILL included; DuckDB replays its write-ahead log on the next open) has either
counted a batch completely or not at all. Running the same command again skips every text
already in ``texts`` (texts are keyed by a hash of their content) and goes on.

Tables (every one carries ``run_id``; several runs and models share one file):

* ``runs``: run_id, model, model_type, architecture, num_layers, num_heads, source, settings
  (JSON), attnscope_version, created, updated, model_digest (what identifies the model's
  numbers: its weights and tokenizer, see :func:`model_digest`; a resumed run refuses another).
* ``texts``: run_id, text_key, position (line, row or item number in the input), text,
  text_b, n_tokens, truncated (tokens cut at the model's limit), batch.
* ``head_stats``: run_id, layer, head, stat, n, sum, sum_sq -- the sufficient statistics of
  each per-text statistic (see :data:`attnscope.analysis.corpus.STATS`); the view
  ``head_summary`` adds mean and std (ddof 0).
* ``examples``: run_id, layer, head, kind ("weight" or a score name), value, text_key,
  query_pos, key_pos, query_token, key_token (positions -1 and tokens NULL for score kinds);
  the best ``top_k`` per (layer, head, kind).
* ``relations``: run_id, relation, direction ("dependent->head" or "head->dependent"), layer,
  head, n, hits; ``relation_baselines``: run_id, relation, direction, word_offset, hits.
* ``problems``: run_id, position, kind, message.
* ``head_importance``: run_id, layer, head, method, n, sum, sum_sq -- the sufficient statistics
  of each head's per-text importance (:func:`attnscope.head_importance`), written only by runs
  with ``importance`` (method "gradient" or "ablation"), in the same transaction as the batch.
* ``embeddings``: run_id, text_key, token_pos, priority, token, segment (0: ``text``, 1:
  ``text_b``), char_start, char_end (the token's span in its text), head_dim, queries, keys
  (float32 ``[L, H, head_dim]`` each, as bytes): the sampled tokens of runs with
  ``embeddings=N``, the ``N`` of smallest priority over the whole run
  (:func:`attnscope.analysis.corpus.token_priority`), kept in the batch's transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from attnscope.analysis.corpus import STATS, BatchResult
from attnscope.errors import AttnscopeError

__all__ = ["SCHEMA", "Store", "check_run", "check_tables", "connect", "model_digest"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, model VARCHAR, model_type VARCHAR, architecture VARCHAR,
    num_layers INTEGER, num_heads INTEGER, source VARCHAR, settings VARCHAR,
    attnscope_version VARCHAR, created TIMESTAMP, updated TIMESTAMP, model_digest VARCHAR);
CREATE TABLE IF NOT EXISTS texts (
    run_id VARCHAR, text_key VARCHAR, position BIGINT, text VARCHAR, text_b VARCHAR,
    n_tokens INTEGER, truncated INTEGER, batch INTEGER, PRIMARY KEY (run_id, text_key));
CREATE TABLE IF NOT EXISTS head_stats (
    run_id VARCHAR, layer SMALLINT, head SMALLINT, stat VARCHAR, n BIGINT, sum DOUBLE,
    sum_sq DOUBLE, PRIMARY KEY (run_id, layer, head, stat));
CREATE TABLE IF NOT EXISTS examples (
    run_id VARCHAR, layer SMALLINT, head SMALLINT, kind VARCHAR, value DOUBLE,
    text_key VARCHAR, query_pos INTEGER, key_pos INTEGER, query_token VARCHAR,
    key_token VARCHAR, PRIMARY KEY (run_id, layer, head, kind, text_key));
CREATE TABLE IF NOT EXISTS relations (
    run_id VARCHAR, relation VARCHAR, direction VARCHAR, layer SMALLINT, head SMALLINT,
    n BIGINT, hits BIGINT, PRIMARY KEY (run_id, relation, direction, layer, head));
CREATE TABLE IF NOT EXISTS relation_baselines (
    run_id VARCHAR, relation VARCHAR, direction VARCHAR, word_offset INTEGER, hits BIGINT,
    PRIMARY KEY (run_id, relation, direction, word_offset));
CREATE TABLE IF NOT EXISTS problems (
    run_id VARCHAR, position BIGINT, kind VARCHAR, message VARCHAR,
    PRIMARY KEY (run_id, position, kind));
CREATE TABLE IF NOT EXISTS head_importance (
    run_id VARCHAR, layer SMALLINT, head SMALLINT, method VARCHAR, n BIGINT, sum DOUBLE,
    sum_sq DOUBLE, PRIMARY KEY (run_id, layer, head, method));
CREATE TABLE IF NOT EXISTS embeddings (
    run_id VARCHAR, text_key VARCHAR, token_pos INTEGER, priority BIGINT, token VARCHAR,
    segment SMALLINT, char_start INTEGER, char_end INTEGER, head_dim INTEGER, queries BLOB,
    keys BLOB, PRIMARY KEY (run_id, text_key, token_pos));
CREATE OR REPLACE VIEW head_summary AS
    SELECT run_id, layer, head, stat, n, sum / n AS mean,
           sqrt(greatest(sum_sq / n - (sum / n) * (sum / n), 0)) AS std
    FROM head_stats WHERE n > 0;
"""


def _duckdb():
    try:
        import duckdb
    except ImportError:
        raise AttnscopeError("Corpus mode needs DuckDB: pip install 'attnscope[corpus]'.") from None
    return duckdb


def connect(path: str | os.PathLike[str], *, read_only: bool = False):
    """A DuckDB connection to ``path``, with a one-sentence error when it cannot be opened."""
    duckdb = _duckdb()
    path = Path(path)
    if read_only and not path.exists():
        raise AttnscopeError(f"Cannot read '{path}': no such file.")
    if not path.parent.is_dir():
        raise AttnscopeError(f"Cannot write '{path}': folder '{path.parent}' does not exist.")
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as err:
        text = str(err)
        if "lock" in text.lower():
            raise AttnscopeError(_lock_message(path, text, read_only)) from None
        raise AttnscopeError(f"Cannot open '{path}' as a DuckDB database: "
                             f"{text.splitlines()[0]}") from None
    except duckdb.Error as err:
        raise AttnscopeError(f"Cannot open '{path}' as a DuckDB database: "
                             f"{str(err).splitlines()[0]}") from None


def _lock_message(path: Path, text: str, read_only: bool) -> str:
    """Who holds ``path`` and how, from DuckDB's lock error: a process that reads it (such as
    ``attnscope serve --corpus``) blocks every writer; a process that writes it blocks all."""
    import re

    pid = re.search(r"\(PID (\d+)\)", text)
    holder = "another process"
    if pid is not None:
        holder = f"process {pid.group(1)}"
        try:
            with open(f"/proc/{pid.group(1)}/cmdline", "rb") as fh:
                args = fh.read(4096).split(b"\0")
            shown = " ".join(Path(a.decode("utf-8", "replace")).name if i == 0
                             else a.decode("utf-8", "replace") for i, a in enumerate(args) if a)
            holder += f" ({shown[:200]})"
        except OSError:
            pass  # not Linux, or the process just ended
    if not read_only and "read-only mode" in text:  # the holder only reads the file
        return (f"'{path}' is open for reading in {holder}, and DuckDB lets no process write "
                "a file another one has open: stop that process (an attnscope serve "
                "--corpus?) or write to another file.")
    return (f"'{path}' is being written by {holder} (a corpus run still going?); wait for it "
            "or use another file.")


# Bounds a run's shape must keep: layer and head are SMALLINT columns, and every [L, H] array
# of a run is allocated from these numbers.
_MAX_INDEX = 32_767
_MAX_HEADS_IN_ALL = 2**20
_UNITS = ("line", "row", "item")
#: Tables (and the columns read from them) that make a store.
_COLUMNS = {
    "runs": {"run_id", "model", "num_layers", "num_heads", "source", "settings", "created"},
    "texts": {"run_id", "text_key", "position", "text", "text_b", "n_tokens"},
    "head_stats": {"run_id", "layer", "head", "stat", "n", "sum", "sum_sq"},
    "examples": {"run_id", "layer", "head", "kind", "value", "text_key"},
    "problems": {"run_id", "position", "kind", "message"},
}


def check_tables(con: Any, path: Path) -> None:
    """Raise one sentence naming the store when ``con`` lacks a table or column of a store."""
    rows = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                       "WHERE table_schema = 'main'").fetchall()
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    if "runs" not in found:
        raise AttnscopeError(f"'{path}' is a DuckDB file but not an attnscope corpus store "
                             "(it has no runs table).")
    for table, columns in _COLUMNS.items():
        missing = columns - found.get(table, set())
        if missing:
            what = (f"has no {table} table" if table not in found else
                    f"its {table} table has no column {', '.join(sorted(missing))}")
            raise AttnscopeError(f"The corpus store '{path}' is damaged: {what}.")


def check_run(con: Any, path: Path, run_id: str) -> tuple[str, int, int, dict[str, Any], str]:
    """The run's model, num_layers, num_heads, settings and source, checked against each other
    and against the rows the run holds; one sentence naming the store and what is wrong when
    they do not fit (a damaged or hand-edited store), before anything is allocated from them."""
    row = con.execute("SELECT model, num_layers, num_heads, settings, source FROM runs "
                      "WHERE run_id = ?", [run_id]).fetchone()
    damaged = f"The corpus store '{path}' is damaged: run {run_id!r}"
    model, layers, heads, settings_text, source = row
    if not isinstance(model, str) or not model:
        raise AttnscopeError(f"{damaged} names no model.")
    for name, value in (("num_layers", layers), ("num_heads", heads)):
        if not isinstance(value, int) or not 1 <= value <= _MAX_INDEX:
            raise AttnscopeError(f"{damaged} has {name} {value!r}, not a count from 1 to "
                                 f"{_MAX_INDEX}.")
    if layers * heads > _MAX_HEADS_IN_ALL:
        raise AttnscopeError(f"{damaged} has {layers} x {heads} heads, more than any model.")
    try:
        settings = json.loads(settings_text) if settings_text is not None else {}
    except (TypeError, ValueError):
        settings = None
    if not isinstance(settings, dict):
        raise AttnscopeError(f"{damaged} has settings that are not a JSON object.")
    if settings.get("unit", "item") not in _UNITS:
        raise AttnscopeError(f"{damaged} counts its positions in {settings.get('unit')!r}, "
                             f"not one of {', '.join(_UNITS)}.")
    optional = tuple(t for t in ("relations", "head_importance") if _has_table(con, t))
    for table in ("head_stats", "examples", *optional):
        low, high_layer, high_head = con.execute(
            f"SELECT least(min(layer), min(head)), max(layer), max(head) FROM {table} "
            "WHERE run_id = ?", [run_id]).fetchone()
        if high_layer is None:
            continue
        if low < 0 or high_layer >= layers or high_head >= heads:
            raise AttnscopeError(f"{damaged} has {layers} x {heads} heads, but its {table} "
                                 f"rows reach layer {high_layer}, head {high_head}.")
    if _has_texts(con, run_id):
        high_layer, high_head = con.execute(
            "SELECT max(layer), max(head) FROM head_stats WHERE run_id = ?", [run_id]).fetchone()
        if (high_layer, high_head) != (layers - 1, heads - 1):
            covered = "no head" if high_layer is None else f"{high_layer + 1} x {high_head + 1}"
            raise AttnscopeError(f"{damaged} has {layers} x {heads} heads, but its statistics "
                                 f"cover {covered}.")
    return model, layers, heads, settings, str(source)


def _has_table(con: Any, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [table]).fetchone()[0])


def _has_texts(con: Any, run_id: str) -> bool:
    return con.execute("SELECT count(*) FROM (SELECT 1 FROM texts WHERE run_id = ? LIMIT 1)",
                       [run_id]).fetchone()[0] > 0


def model_digest(model: Any) -> str:
    """What identifies the numbers a model gives (32 hex digits): a hash of its weights (every
    parameter and buffer: name, dtype, shape and bytes) and of its tokenizer (class, and its
    whole definition for a fast tokenizer; vocabulary and special tokens otherwise). Equal for
    the same weights loaded twice; different once one weight or one token changes."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        for name, tensor in model.model.state_dict().items():
            tensor = tensor.detach()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            try:
                flat = tensor.to("cpu").reshape(-1).contiguous()
                digest.update(flat.view(torch.uint8).numpy().data)
            except (RuntimeError, TypeError, ValueError):  # a tensor with no plain bytes
                digest.update(repr(tensor).encode("utf-8", "surrogatepass"))
    tokenizer = model.tokenizer
    digest.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        # truncation and padding are call settings that tokenizing changes, not the tokenizer
        definition.pop("truncation", None)
        definition.pop("padding", None)
        digest.update(json.dumps(definition, sort_keys=True).encode("utf-8", "surrogatepass"))
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        digest.update(repr(vocab).encode("utf-8", "surrogatepass"))
    specials = getattr(tokenizer, "special_tokens_map", {})
    digest.update(repr(sorted((k, repr(v)) for k, v in specials.items())).encode("utf-8",
                                                                                 "surrogatepass"))
    return digest.hexdigest()


class Store:
    """The corpus store, open for writing. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        duckdb = _duckdb()
        self.path = Path(path)
        self.con = connect(self.path)
        try:
            self.con.execute(SCHEMA)
            # stores written before runs recorded their model's digest gain the column
            self.con.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS model_digest VARCHAR")
            check_tables(self.con, self.path)
        except duckdb.Error as err:
            self.con.close()
            raise AttnscopeError(f"The corpus store '{self.path}' is damaged: "
                                 f"{str(err).splitlines()[0]}") from None
        except BaseException:
            self.con.close()
            raise

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- runs --------------------------------------------------------------------------------
    def ensure_run(self, run_id: str, model: Any, source: str, settings: dict[str, Any]) -> bool:
        """Register the run (or find it); True when it already existed (a resumed run)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            __version__ = version("attnscope")
        except PackageNotFoundError:  # run from a source tree that was never installed
            __version__ = "unknown"

        digest = model_digest(model)
        row = self.con.execute("SELECT model, model_digest FROM runs WHERE run_id = ?",
                               [run_id]).fetchone()
        if row is not None:
            stored_model, layers, heads, _, _ = check_run(self.con, self.path, run_id)
            if (layers, heads) != (model.num_layers, model.num_heads):
                raise AttnscopeError(f"Run {run_id!r} in '{self.path}' was made with "
                                     f"{stored_model}, not {model.name}; give another --run "
                                     "name.")
            if row[1] is None:  # a run from before digests were kept: it keeps this model's
                self.con.execute("UPDATE runs SET model_digest = ? WHERE run_id = ?",
                                 [digest, run_id])
            elif row[1] != digest:
                raise AttnscopeError(
                    f"Run {run_id!r} in '{self.path}' was counted with other weights or another "
                    f"tokenizer than {model.name} has now (model digest {row[1][:12]} then, "
                    f"{digest[:12]} now), so resuming would mix two models: give another --run "
                    "name or another store.")
            return True
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        self.con.execute(
            "INSERT INTO runs (run_id, model, model_type, architecture, num_layers, num_heads, "
            "source, settings, attnscope_version, created, updated, model_digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, model.name, model.model_type, model.architecture, model.num_layers,
             model.num_heads, source, json.dumps(settings, sort_keys=True), __version__,
             now, now, digest],
        )
        return False

    def done(self, run_id: str, keys: list[str]) -> dict[str, int]:
        """Which of ``keys`` are already counted in the run: key -> position it was read at."""
        if not keys:
            return {}
        rows = self.con.execute(
            "SELECT text_key, position FROM texts WHERE run_id = ? AND text_key IN "
            "(SELECT unnest(?))", [run_id, keys]).fetchall()
        return dict(rows)

    def add_problems(self, run_id: str, problems: list[tuple[int, str, str]]) -> None:
        """Record problems (idempotent: a line reported again on a resumed run counts once)."""
        if problems:
            self.con.executemany("INSERT OR IGNORE INTO problems VALUES (?, ?, ?, ?)",
                                 [(run_id, *p) for p in problems])

    # ----- one batch, one transaction ------------------------------------------------------------
    def commit(self, run_id: str, batch: BatchResult, batch_index: int, top_k: int,
               embeddings: int = 0) -> None:
        """Add one batch to the run, all or nothing; keep the run's ``embeddings`` sampled
        tokens of smallest priority."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            self._write_batch(run_id, batch, batch_index, top_k)
            if batch.embeddings:
                self._write_embeddings(run_id, batch.embeddings, embeddings)
            con.execute("UPDATE runs SET updated = ? WHERE run_id = ?",
                        [datetime.now(timezone.utc).replace(tzinfo=None), run_id])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _write_batch(self, run_id: str, batch: BatchResult, batch_index: int,
                     top_k: int) -> None:
        import pyarrow as pa

        con = self.con
        if batch.texts:
            texts = pa.table({
                "run_id": [run_id] * len(batch.texts),
                "text_key": [t["key"] for t in batch.texts],
                "position": [t["position"] for t in batch.texts],
                "text": [t["text"] for t in batch.texts],
                "text_b": pa.array([t["text_b"] for t in batch.texts], pa.string()),
                "n_tokens": [t["n_tokens"] for t in batch.texts],
                "truncated": [t["truncated"] for t in batch.texts],
                "batch": [batch_index] * len(batch.texts),
            })
            _insert(con, texts, "INSERT INTO texts SELECT * FROM batch")

            s, layers, heads = batch.counts.shape
            stat, layer, head = np.meshgrid(np.arange(s), np.arange(layers), np.arange(heads),
                                            indexing="ij")
            stats = pa.table({
                "run_id": [run_id] * batch.counts.size,
                "layer": layer.ravel().astype(np.int16),
                "head": head.ravel().astype(np.int16),
                "stat": np.array(STATS, dtype=object)[stat.ravel()],
                "n": batch.counts.ravel(),
                "sum": batch.sums.ravel(),
                "sum_sq": batch.sums_sq.ravel(),
            })
            _insert(con, stats,
                    "INSERT INTO head_stats SELECT * FROM batch ON CONFLICT DO UPDATE SET "
                    "n = head_stats.n + excluded.n, sum = head_stats.sum + excluded.sum, "
                    "sum_sq = head_stats.sum_sq + excluded.sum_sq")

        # A head's kept examples only get better as batches come in, so a row below the
        # top_k-th value its head and kind already keep can never be kept: it is not written
        # (the table ends the same; ties are kept for the prune below to settle by key).
        candidates = batch.examples
        if candidates:
            floors = dict(((layer, head, kind), value) for layer, head, kind, value in
                          con.execute("SELECT layer, head, kind, min(value) FROM examples "
                                      "WHERE run_id = ? GROUP BY layer, head, kind HAVING "
                                      "count(*) >= ?", [run_id, top_k]).fetchall())
            candidates = [row for row in candidates
                          if row[3] >= floors.get((row[0], row[1], row[2]), -np.inf)]
        if candidates:
            examples = _rows_table(run_id, candidates, [
                ("layer", pa.int16()), ("head", pa.int16()), ("kind", pa.string()),
                ("value", pa.float64()), ("text_key", pa.string()), ("query_pos", pa.int32()),
                ("key_pos", pa.int32()), ("query_token", pa.string()),
                ("key_token", pa.string())])
            _insert(con, examples, "INSERT OR IGNORE INTO examples SELECT * FROM batch")
            # Keep the best top_k per head and kind; ties go to the smaller key, so the result
            # does not depend on the order batches arrived in.
            con.execute(
                "DELETE FROM examples e USING (SELECT layer, head, kind, text_key, row_number() "
                "OVER (PARTITION BY layer, head, kind ORDER BY value DESC, text_key) AS rank "
                "FROM examples WHERE run_id = ?) r WHERE e.run_id = ? AND e.layer = r.layer "
                "AND e.head = r.head AND e.kind = r.kind AND e.text_key = r.text_key "
                "AND r.rank > ?", [run_id, run_id, top_k])

        if batch.relations:
            relations = _rows_table(run_id, batch.relations, [
                ("relation", pa.string()), ("direction", pa.string()), ("layer", pa.int16()),
                ("head", pa.int16()), ("n", pa.int64()), ("hits", pa.int64())])
            _insert(con, relations,
                    "INSERT INTO relations SELECT * FROM batch ON CONFLICT DO UPDATE SET "
                    "n = relations.n + excluded.n, hits = relations.hits + excluded.hits")
            con.executemany(
                "INSERT INTO relation_baselines VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                "SET hits = relation_baselines.hits + excluded.hits",
                [(run_id, *row) for row in batch.baselines])
        if batch.problems:
            con.executemany("INSERT OR IGNORE INTO problems VALUES (?, ?, ?, ?)",
                            [(run_id, *p) for p in batch.problems])
        importance = batch.importance
        if importance is not None and batch.texts:
            method, per_text = importance  # per_text: [B, L, H], one row per text of the batch
            _, layers, heads = per_text.shape
            layer_ids, head_ids = np.meshgrid(np.arange(layers), np.arange(heads),
                                              indexing="ij")
            rows = pa.table({
                "run_id": [run_id] * (layers * heads),
                "layer": layer_ids.ravel().astype(np.int16),
                "head": head_ids.ravel().astype(np.int16),
                "method": [method] * (layers * heads),
                "n": np.full(layers * heads, per_text.shape[0], dtype=np.int64),
                "sum": per_text.sum(axis=0).ravel(),
                "sum_sq": (per_text**2).sum(axis=0).ravel(),
            })
            _insert(con, rows,
                    "INSERT INTO head_importance SELECT * FROM batch ON CONFLICT DO UPDATE SET "
                    "n = head_importance.n + excluded.n, sum = head_importance.sum + "
                    "excluded.sum, sum_sq = head_importance.sum_sq + excluded.sum_sq")


    def _write_embeddings(self, run_id: str, rows: list[tuple], keep: int) -> None:
        """Add a batch's sampled tokens, then keep the run's ``keep`` of smallest priority
        (ties to the smaller key and position): the union of every batch's smallest is the
        run's smallest, whatever order the batches came in."""
        import pyarrow as pa

        table = pa.table({
            "run_id": [run_id] * len(rows),
            "text_key": [r[0] for r in rows],
            "token_pos": pa.array([r[1] for r in rows], pa.int32()),
            "priority": pa.array([r[2] for r in rows], pa.int64()),
            "token": pa.array([r[3] for r in rows], pa.string()),
            "segment": pa.array([r[4] for r in rows], pa.int16()),
            "char_start": pa.array([r[5] for r in rows], pa.int32()),
            "char_end": pa.array([r[6] for r in rows], pa.int32()),
            "head_dim": pa.array([r[7].shape[-1] for r in rows], pa.int32()),
            "queries": pa.array([np.ascontiguousarray(r[7], np.float32).tobytes()
                                 for r in rows], pa.binary()),
            "keys": pa.array([np.ascontiguousarray(r[8], np.float32).tobytes() for r in rows],
                             pa.binary()),
        })
        _insert(self.con, table, "INSERT OR IGNORE INTO embeddings SELECT * FROM batch")
        self.con.execute(
            "DELETE FROM embeddings e USING (SELECT text_key, token_pos, row_number() OVER "
            "(ORDER BY priority, text_key, token_pos) AS rank FROM embeddings WHERE run_id = ?) r "
            "WHERE e.run_id = ? AND e.text_key = r.text_key AND e.token_pos = r.token_pos "
            "AND r.rank > ?", [run_id, run_id, keep])


def _rows_table(run_id: str, rows: list[tuple], columns: list[tuple[str, Any]]) -> Any:
    """A pyarrow table of ``rows`` (tuples in the order of ``columns``, ``(name, type)``),
    led by a ``run_id`` column: a batch's rows in the column order of their DuckDB table."""
    import pyarrow as pa

    values = list(zip(*rows, strict=True))
    return pa.table({"run_id": [run_id] * len(rows),
                     **{name: pa.array(column, kind)
                        for (name, kind), column in zip(columns, values, strict=True)}})


def _insert(con: Any, rows: Any, sql: str) -> None:
    """Run ``sql`` (an ``INSERT ... SELECT * FROM batch``) with the pyarrow table ``rows``
    registered as ``batch``."""
    con.register("batch", rows)
    try:
        con.execute(sql)
    finally:
        con.unregister("batch")
