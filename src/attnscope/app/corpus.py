"""The explorer's corpus browser: what every head does across a corpus store, over the API.

``attnscope serve --corpus stats.duckdb`` opens the store (a DuckDB file written by
``attnscope corpus``) read-only once, at start-up; a request never names a file, only a run of
that store. Every number comes from :class:`attnscope.corpora.result.CorpusResult` (the same
methods a notebook calls); this module only turns its tables into JSON.

DuckDB connections are not safe to share between threads, and the API answers on several: the
browser holds one read-only connection, given to every run's ``CorpusResult``, and a lock
around every use of it. The store cannot change while it is open (a writer would need the file
to itself), so each answer is kept once built. Token search alone runs the model for a while:
it reads through a ``CorpusResult`` of its own, which opens a short read-only connection per
query, so the other routes never wait for a model run.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnscope.analysis.corpus import EXAMPLE_SCORES, OFFSETS, STATS
from attnscope.analysis.patterns import SCORES
from attnscope.errors import AttnscopeError
from attnscope.readable import token_label

__all__ = ["CorpusBrowser", "LAYER_PANELS"]

#: The layer plots (Clark et al. 2019, Fig. 1-2): statistic and title, as the corpus page has them.
LAYER_PANELS = (("first", "attention to [CLS] / first token"), ("separator", "attention to [SEP]"),
                ("punctuation", "attention to punctuation"), ("self", "attention to itself"),
                ("entropy", "entropy (nats)"), ("distance", "mean distance (tokens)"))

_SEARCHES_KEPT = 32  # token searches remembered (each re-runs the model over the texts)


class CorpusBrowser:
    """A corpus store opened for the explorer.

    Args:
        corpus: the ``.duckdb`` file, or a :class:`~attnscope.corpora.result.CorpusResult`
            (its run is then the one shown first).

    Raises :class:`~attnscope.errors.AttnscopeError` with one sentence when the file is
    missing, is not a corpus store, or holds no counted text.
    """

    def __init__(self, corpus: Any) -> None:
        from attnscope.corpora.result import CorpusResult
        from attnscope.corpora.store import _duckdb, connect

        preferred = None
        if isinstance(corpus, CorpusResult):
            path, preferred = corpus.path, corpus.run_id
        elif isinstance(corpus, str | os.PathLike):
            path = Path(corpus)
        else:
            raise AttnscopeError(f"The corpus must be a .duckdb file or a CorpusResult, not "
                                 f"{type(corpus).__name__}.")
        if path.is_dir():
            raise AttnscopeError(f"Cannot read the corpus store '{path}': it is a folder; give "
                                 "the .duckdb file that attnscope corpus wrote.")
        if not path.exists():
            raise AttnscopeError(f"Cannot read the corpus store '{path}': no such file.")
        self.path = path
        self._lock = threading.Lock()
        self._con = connect(path, read_only=True)
        # closed when the browser goes, or at exit at the latest (before the interpreter
        # tears DuckDB's bindings down)
        self._closer = weakref.finalize(self, self._con.close)
        try:
            runs = self._list_runs(_duckdb())
            results = {}
            for row in runs:
                result = CorpusResult(path, row["run_id"])
                result._con = self._con  # every query goes through the one connection
                results[row["run_id"]] = result
        except BaseException:
            self._closer()
            raise
        self.runs = runs
        self._results = results
        self.default_run = preferred if preferred in results else runs[-1]["run_id"]
        self._bodies: dict[tuple, dict[str, Any]] = {}
        self._searches: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._search_lock = threading.Lock()

    def _list_runs(self, duckdb) -> list[dict[str, Any]]:
        """Every run that counted at least one text, oldest first."""
        try:
            tables = {r[0] for r in self._con.execute(
                "SELECT table_name FROM information_schema.tables").fetchall()}
            if not {"runs", "texts", "head_stats"} <= tables:
                raise AttnscopeError(f"'{self.path}' is a DuckDB file but not an attnscope "
                                     "corpus store (make one with attnscope corpus).")
            rows = self._con.execute(
                "SELECT r.run_id, r.model, r.source, r.num_layers, r.num_heads, r.created, "
                "count(t.text_key), coalesce(sum(t.n_tokens), 0), "
                "(SELECT count(*) FROM relations x WHERE x.run_id = r.run_id) "
                "FROM runs r LEFT JOIN texts t USING (run_id) GROUP BY ALL "
                "ORDER BY r.created, r.run_id").fetchall()
        except duckdb.Error as err:
            raise AttnscopeError(f"Cannot read the corpus store '{self.path}': "
                                 f"{str(err).splitlines()[0]}") from None
        runs = [{"run_id": r[0], "model": r[1], "source": r[2], "layers": int(r[3]),
                 "heads": int(r[4]), "created": str(r[5]), "texts": int(r[6]),
                 "tokens": int(r[7]), "relations": bool(r[8])} for r in rows if r[6]]
        if not runs:
            raise AttnscopeError(f"The corpus store '{self.path}' holds no counted text yet: "
                                 "run attnscope corpus on it first.")
        return runs

    def close(self) -> None:
        """Close the store (the explorer cannot answer corpus requests after this)."""
        with self._lock:
            self._closer()

    def schema_hints(self) -> dict[str, dict[str, Any]]:
        """What the corpus routes' query parameters may be, for the OpenAPI schema: the
        store's runs, the statistics and example kinds, the layer and head ranges."""
        layers = max(r["layers"] for r in self.runs)
        heads = max(r["heads"] for r in self.runs)
        return {"run": {"anyOf": [{"type": "string", "enum": [r["run_id"] for r in self.runs]},
                                  {"type": "null"}]},
                "stat": {"type": "string", "enum": list(STATS)},
                "kind": {"type": "string", "enum": ["weight", *EXAMPLE_SCORES],
                         "default": "weight"},
                "layer": {"type": "integer", "minimum": -layers, "maximum": layers - 1},
                "head": {"type": "integer", "minimum": -heads, "maximum": heads - 1}}

    # ----- reading ---------------------------------------------------------------------------
    def result(self, run: str | None):
        """The :class:`CorpusResult` of ``run`` (None: the default run)."""
        run = self.default_run if run is None else run
        if run not in self._results:
            raise AttnscopeError(f"The corpus store has no run {run!r}; its runs are "
                                 f"{', '.join(map(repr, self._results))}.")
        return self._results[run]

    def _kept(self, key: tuple, make) -> dict[str, Any]:
        """``make()``, built once per key under the store's lock (the store never changes
        while it is open)."""
        with self._lock:
            if key not in self._bodies:
                self._bodies[key] = make()
            return self._bodies[key]

    def info(self, served: list[str]) -> dict[str, Any]:
        """The store, its runs (and whether this explorer serves each run's model)."""
        return {"store": self.path.name, "default_run": self.default_run,
                "runs": [{**r, "served": r["model"] in served} for r in self.runs],
                "score_names": list(SCORES), "stats": list(STATS),
                "example_kinds": ["weight", *EXAMPLE_SCORES]}

    def heads(self, run: str | None) -> dict[str, Any]:
        """Every head's label and mean scores over the corpus (``CorpusResult.scores``)."""
        result = self.result(run)

        def make() -> dict[str, Any]:
            rows = []
            for r in result.scores().to_dict("records"):
                label = r["label"] if isinstance(r["label"], str) else None
                rows.append({"layer": int(r["layer"]), "head": int(r["head"]), "label": label,
                             "label_share": _number(r["label_share"]),
                             "scores": {s: _number(r[s]) for s in (*SCORES, "entropy")}})
            return {"run": result.run_id, "model": result.model_name,
                    "texts": result.num_texts, "score_names": [*SCORES, "entropy"],
                    "heads": rows}

        return self._kept(("heads", result.run_id), make)

    def stat(self, run: str | None, stat: str) -> dict[str, Any]:
        """One statistic's mean, std and count per head (``CorpusResult.array``)."""
        result = self.result(run)

        def make() -> dict[str, Any]:
            return {"run": result.run_id, "stat": stat, "mean": _grid(result.array(stat)),
                    "std": _grid(result.array(stat, "std")),
                    "n": np.nan_to_num(result.array(stat, "n")).astype(int).tolist()}

        if stat not in STATS:  # checked before the lock, so a mistake is never kept
            raise AttnscopeError(f"Unknown statistic {stat!r}; see GET /api/corpus for the "
                                 "statistics (e.g. 'previous', 'entropy', 'offset:-1').")
        return self._kept(("stat", result.run_id, stat), make)

    def layers(self, run: str | None) -> dict[str, Any]:
        """The layer plots' numbers (one value per head and layer) and the positional profile,
        with the chart specifications the page draws them from."""
        from attnscope.analysis.report import _Charts, _rounded

        result = self.result(run)

        def make() -> dict[str, Any]:
            panels = []
            for stat, title in LAYER_PANELS:
                values = result.array(stat)  # (L, H)
                panels.append({"stat": stat, "title": title, "values": _grid(values),
                               "layer_mean": [_number(v) for v in _nanmean_rows(values)]})
            profile = result.profile()  # (L, H, 17)
            charts = _Charts()
            charts.add("lines", title=f"{result.model_name}: {result.num_texts} texts, layer "
                       "by layer", panels=[{"title": p["title"],
                                            "mean": _rounded(_nanmean_rows(result.array(
                                                p["stat"]))),
                                            "heads": [_rounded(column) for column in
                                                      result.array(p["stat"]).T]}
                                           for p in panels])
            flat = profile.reshape(-1, profile.shape[-1])  # (L * H, 17)
            charts.heatmap(flat, [f"{la}.{h}" for la in range(result.num_layers)
                                  for h in range(result.num_heads)],
                           [f"{o:+d}" for o in OFFSETS],
                           "positional profile: mean weight by offset (rows: layer.head)",
                           xlabel="offset", ylabel="head", bar="weight")
            return {"run": result.run_id, "model": result.model_name, "panels": panels,
                    "offsets": list(OFFSETS),
                    "profile": [[[_number(v) for v in row] for row in layer]
                                for layer in profile],
                    "charts": charts.specs}

        return self._kept(("layers", result.run_id), make)

    def relations(self, run: str | None, min_count: int = 1) -> dict[str, Any]:
        """Per relation and direction, the best head beside the fixed-offset baseline."""
        result = self.result(run)

        def make() -> dict[str, Any]:
            rows = [{"relation": r["relation"], "direction": r["direction"], "n": int(r["n"]),
                     "layer": int(r["layer"]), "head": int(r["head"]),
                     "accuracy": float(r["accuracy"]),
                     "baseline_offset": int(r["baseline_offset"]),
                     "baseline_accuracy": float(r["baseline_accuracy"])}
                    for r in result.relations(min_count).to_dict("records")]
            return {"run": result.run_id, "relations": rows}

        return self._kept(("relations", result.run_id, min_count), make)

    def examples(self, run: str | None, layer: int, head: int, kind: str = "weight",
                 k: int | None = None, *, served: Sequence[str] = ()) -> dict[str, Any]:
        """The best texts of one head (``CorpusResult.examples``); negative indices count
        from the end."""
        from attnscope.errors import check_index

        result = self.result(run)
        layer = check_index(layer, result.num_layers, "layer")
        head = check_index(head, result.num_heads, "head")
        if kind not in ("weight", *EXAMPLE_SCORES):
            raise AttnscopeError(f"Unknown example kind {kind!r}: choose 'weight' or one of "
                                 f"{', '.join(EXAMPLE_SCORES)}.")

        def make() -> dict[str, Any]:
            rows = []
            for r in result.examples(layer, head, kind, k).to_dict("records"):
                pos = (None, None) if r["query_pos"] < 0 else (int(r["query_pos"]),
                                                               int(r["key_pos"]))
                rows.append({"value": float(r["value"]), "query_pos": pos[0],
                             "key_pos": pos[1], "query_token": _label(r["query_token"]),
                             "key_token": _label(r["key_token"]), "text_key": r["text_key"],
                             "position": int(r["position"]), "text": r["text"],
                             "text_b": _text(r["text_b"]), "query_span": None,
                             "key_span": None})
            return {"run": result.run_id, "model": result.model_name, "layer": layer,
                    "head": head, "kind": kind, "examples": rows}

        body = self._kept(("examples", result.run_id, layer, head, kind, k), make)
        return {**body, "served": result.model_name in served}

    def atlas(self, run: str | None, served: Sequence[str] = ()) -> str:
        """The head atlas page of ``run`` (:func:`attnscope.atlas`), its examples linked to
        the explorer's head views when the run's model is served here."""
        from attnscope.corpora.atlas import atlas

        result = self.result(run)
        links = result.model_name in served

        def make() -> dict[str, Any]:
            return {"html": atlas(result, view_links=links).html}

        return str(self._kept(("atlas", result.run_id, links), make)["html"])

    def search(self, run: str | None, token: str, model: Any, *, top: int = 5,
               limit: int = 100) -> dict[str, Any]:
        """What each head attends to from ``token`` (``CorpusResult.search``): runs ``model``
        (the run's model, from the explorer's allowlist) on up to ``limit`` texts."""
        from attnscope.corpora.result import CorpusResult

        run_id = self.result(run).run_id
        key = (run_id, token.strip().lower(), top, limit)
        with self._search_lock:
            if key in self._searches:
                self._searches.move_to_end(key)
                return self._searches[key]
        # its own connections (one per query, read-only), so the shared one stays free
        frame = CorpusResult(self.path, run_id).search(token, model=model, limit=limit, top=top)
        body = {"run": run_id, "token": token.strip(),
                "occurrences": int(frame["occurrences"].iloc[0]) if len(frame) else 0,
                "rows": [{"layer": int(r["layer"]), "head": int(r["head"]),
                          "key_token": r["key_token"], "weight": float(r["weight"]),
                          "occurrences": int(r["occurrences"])}
                         for r in frame.to_dict("records")]}
        with self._search_lock:
            self._searches[key] = body
            while len(self._searches) > _SEARCHES_KEPT:
                self._searches.popitem(last=False)
        return body


def _number(value: Any) -> float | None:
    """A float for JSON: NaN (no text gave a value) becomes None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _label(token: Any) -> str | None:
    """A stored example token as a label to show (the text it stands for), or None."""
    return token_label(token) if isinstance(token, str) else None


def _grid(values: np.ndarray) -> list[list[float | None]]:
    """A ``[L, H]`` array as rows of JSON numbers."""
    return [[_number(v) for v in row] for row in values]


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean of each row ``[L, H] -> [L]``, leaving out heads with no value (all NaN: NaN)."""
    counts = (~np.isnan(values)).sum(axis=1)
    sums = np.nansum(values, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
