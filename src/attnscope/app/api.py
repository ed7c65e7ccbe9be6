"""The explorer's web application: the page, its JSON API and the documentation of that API.

``create_app(models, limits)`` returns a FastAPI application. Routes (all JSON, documented
at ``/docs``, schema at ``/openapi.json``):

* ``GET /api/models`` -- the models this explorer serves and its limits.
* ``POST /api/capture`` -- one text's views: the payload the page's view script draws (the
  head, model and neuron views and the tokens table), attention as compressed typed arrays.
* ``POST /api/heads`` -- every head's pattern scores and label.
* ``POST /api/explain`` -- every step of one head's attention for one query token.
* ``POST /api/flow`` -- attention rollout, or attention flow computed in slices within a time
  budget (ask again to continue; ``done`` / ``total`` say how far it is).
* ``POST /api/compare`` -- two texts or two models side by side, with the difference per head.
* ``POST /api/page`` -- what is shown, as one self-contained HTML page to download.

With a corpus store (``corpus=``, ``attnscope serve --corpus stats.duckdb``), the corpus
browser's routes read it (see :mod:`attnscope.app.corpus`); each takes ``run`` (default: the
latest run of the store):

* ``GET /api/corpus`` -- the store's runs, and whether each run's model is served here.
* ``GET /api/corpus/heads`` -- every head's label and mean scores over the corpus.
* ``GET /api/corpus/stat`` -- one statistic's mean, standard deviation and count per head.
* ``GET /api/corpus/layers`` -- the layer plots' numbers and the positional profile.
* ``GET /api/corpus/relations`` -- the syntactic heads (corpora read from CoNLL-U).
* ``GET /api/corpus/examples`` -- one head's best texts.
* ``GET /api/corpus/search`` -- what each head attends to from one token (runs the model).
* ``GET /api/corpus/atlas`` -- the head atlas page of a run (HTML, as ``attnscope atlas``).

A request names a model only by its name in the allowlist given at start-up, and nothing a
request carries reaches the file system. A person's mistake gets a 4xx answer with one
sentence, ``{"error": "..."}``; when too many runs are waiting, or a run takes longer than the
time limit, the answer is 503 with ``Retry-After``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import attnscope as at
from attnscope.app.generate import is_generative
from attnscope.app.limits import Limits
from attnscope.app.runtime import (
    Busy,
    CaptureEntry,
    Captures,
    Models,
    RunGate,
    TooLarge,
    check_chars,
)
from attnscope.app.schemas import (
    ERRORS,
    ERRORS_OF_HTML,
    CaptureRequest,
    CaptureResponse,
    CompareRequest,
    CompareResponse,
    CorpusExamplesResponse,
    CorpusHeadsResponse,
    CorpusInfo,
    CorpusLayersResponse,
    CorpusRelationsResponse,
    CorpusSearchResponse,
    CorpusStatResponse,
    ExplainRequest,
    ExplainResponse,
    FlowRequest,
    FlowResponse,
    HeadsResponse,
    ModelsResponse,
    PageRequest,
    TextInput,
)
from attnscope.errors import AttnscopeError, check_index
from attnscope.readable import token_label, trace_labels

__all__ = ["create_app"]

_VIEW_KINDS = ["head", "model", "neuron", "tokens"]


# ----- the application -------------------------------------------------------------------------


def create_app(models: Models, limits: Limits | None = None, *, corpus: Any = None,
               long: Any = None) -> FastAPI:
    """The explorer as an ASGI application.

    Args:
        models: the allowlist (loaded at start-up); requests choose among these only.
        limits: text length, time, concurrency, flow budget and cache size (defaults:
            :class:`~attnscope.app.limits.Limits`).
        corpus: a corpus store to browse: its ``.duckdb`` path, a
            :class:`~attnscope.corpora.result.CorpusResult` (its run shown first) or a
            :class:`~attnscope.app.corpus.CorpusBrowser`; opened read-only here, once.
        long: ``{name: LazyTrace}`` to serve as long views with tiles computed on request
            (see :mod:`attnscope.app.long`).
    """
    from attnscope.app.corpus import CorpusBrowser
    from attnscope.app.page import docs_page, explorer_page

    limits = limits or Limits()
    browser = None
    if corpus is not None:
        browser = corpus if isinstance(corpus, CorpusBrowser) else CorpusBrowser(corpus)
    state = _State(models, limits, browser)
    app = FastAPI(
        title="attnscope explorer",
        version=at.__version__,
        summary="Capture, see, explain and compare self-attention, over a local JSON API.",
        description=(
            "Every route takes and returns JSON. Texts are checked against the explorer's "
            f"limits (at most {limits.max_chars} characters and {limits.max_tokens} tokens "
            "each). Mistakes get a 4xx answer with one sentence in `error`; a full queue or "
            "a run over the time limit gets 503 with `Retry-After`. Attention travels in the "
            "encoding the view script reads (compressed typed arrays in base64; see "
            "attnscope.render.html), as in every page attnscope writes."
        ),
        docs_url=None, redoc_url=None,
    )
    app.state.explorer = state
    _state_limits_in_schema(app, models.names, limits, browser)
    app.add_middleware(BodyLimit, limit=body_limit(limits))

    @app.exception_handler(AttnscopeError)
    async def _mistake(request: Request, err: AttnscopeError) -> JSONResponse:
        return _error(422, str(err))

    @app.exception_handler(Busy)
    async def _busy(request: Request, err: Busy) -> JSONResponse:
        return _error(503, str(err), {"Retry-After": str(err.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = list(err.errors())
        unreadable = bool(errors) and errors[0].get("type") == "json_invalid"
        return _error(400 if unreadable else 422, _validation_sentence(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        nothing = f"There is nothing at {request.url.path[:100]!r}; see /docs."
        if request.url.path.startswith("/api/corpus") and state.corpus is None:
            nothing = ("This explorer browses no corpus: start it with attnscope serve "
                       "--corpus stats.duckdb.")
        sentence = {404: nothing,
                    405: f"{request.method} is not allowed here; see /docs."}.get(
            err.status_code, str(err.detail).rstrip(".") + ".")
        return _error(err.status_code, sentence, getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        return _error(500, f"The explorer failed on this request ({type(err).__name__}); "
                           "please report it with the text you used.")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(state.page(explorer_page))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    @app.get("/api/models", response_model=ModelsResponse, summary="Models and limits")
    async def list_models() -> dict[str, Any]:
        """The models this explorer serves (its allowlist, fixed at start-up) and its limits."""
        return state.models_body()

    @app.post("/api/capture", response_model=CaptureResponse, responses=ERRORS,
              summary="Capture a text and get its views")
    async def capture(body: CaptureRequest) -> Response:
        """Run the model (or reuse a cached capture) and return what the head, model and
        neuron views and the tokens table draw, with the chosen layer and head shown first."""
        key = state.key(body)
        derived = ("capture", body.layer, body.head, body.query)
        return await state.cached_json(key, derived, lambda e: state.capture_body(e, body))

    @app.post("/api/heads", response_model=HeadsResponse, responses=ERRORS,
              summary="What each head does")
    async def heads(body: TextInput) -> Response:
        """Every head's pattern scores (previous, next, self, first, separator, punctuation,
        duplicate, induction, broad, distance), label and class."""
        key = state.key(body)
        return await state.cached_json(key, ("heads",), lambda e: state.heads_body(e, body))

    @app.post("/api/explain", response_model=ExplainResponse, responses=ERRORS,
              summary="Explain one head for one query token")
    async def explain(body: ExplainRequest) -> Response:
        """For one query token: q, every key k, q·k, the scale, any bias or mask, the softmax
        over the keys, and the model's own attention row beside it (``at.explain``)."""
        key = state.key(body)
        derived = ("explain", body.layer, body.head, body.query, body.part)
        return await state.cached_json(key, derived, lambda e: state.explain_body(e, body))

    @app.post("/api/flow", response_model=FlowResponse, responses=ERRORS,
              summary="Attention rollout or flow for one output token")
    async def flow(body: FlowRequest) -> Response:
        """Rollout at once; flow one input token at a time until this request's budget is
        spent. Ask again with the same body to continue: values already found are kept, and
        ``done`` / ``total`` say how far it is. Flow stops for good once the server's flow
        budget for that output token is spent (``complete`` stays false, ``note`` says so)."""
        key = state.key(body)
        return _json_response(
            await state.gate.run(lambda: state.flow_body(state.entry(key), body)))

    @app.post("/api/compare", response_model=CompareResponse, responses=ERRORS,
              summary="Compare two texts or two models")
    async def compare(body: CompareRequest) -> Response:
        """Both inputs' head and model views side by side, and, where both have the same
        number of layers, heads and tokens, the difference B - A of every head."""
        key_a, key_b = state.key(body.a), state.key(body.b)
        derived = ("compare", key_b, body.layer, body.head)
        return await state.cached_json(
            key_a, derived, lambda e: state.compare_body(e, key_b, body))

    @app.post("/api/page", response_class=HTMLResponse, responses=ERRORS_OF_HTML,
              summary="Download what is shown as one HTML page")
    async def download(body: PageRequest) -> HTMLResponse:
        """One self-contained HTML page (it opens offline) with the views of the text, its
        head table, and, with ``b``, the second input's views and the difference."""
        page_html = await state.gate.run(state.page_download, body)
        return HTMLResponse(page_html, headers={
            "Content-Disposition": 'attachment; filename="attnscope-explorer.html"'})

    if browser is not None:
        _corpus_routes(app, state, browser)
    from attnscope.app.generate import generate_routes

    generate_routes(app, state)
    if long:
        from attnscope.app.long import long_routes

        long_routes(app, long)

    return app


class _State:
    """The explorer's models, limits, gate and cache, and the work behind each route."""

    def __init__(self, models: Models, limits: Limits, corpus: Any = None) -> None:
        from attnscope.adapters import supported

        self.models = models
        self.corpus = corpus  # a CorpusBrowser, or None
        self.limits = limits
        self.gate = RunGate(limits)
        self.captures = Captures(limits.cache, limits.cache_mb)
        self._qkv_families = set(supported())
        self._page: str | None = None

    def page(self, build) -> str:
        if self._page is None:
            self._page = build(self.models_body())
        return self._page

    def models_body(self) -> dict[str, Any]:
        infos = []
        for name in self.models.names:
            m = self.models.get(name)
            infos.append({"name": name, "model_type": m.model_type,
                          "architecture": m.architecture, "layers": m.num_layers,
                          "heads": m.num_heads, "max_tokens": m.max_length,
                          "generative": is_generative(m)})
        lim = self.limits
        return {"models": infos, "default": self.models.default, "limits": {
            "max_chars": lim.max_chars, "max_tokens": lim.max_tokens, "timeout_s": lim.timeout_s,
            "runs": lim.runs, "queue": lim.queue, "flow_budget_s": lim.flow_budget_s,
            "cache": lim.cache, "cache_mb": lim.cache_mb},
            "corpus": None if self.corpus is None else self.corpus.info(self.models.names)}

    # ----- inputs -------------------------------------------------------------------------------
    def key(self, body: TextInput) -> tuple[str, str, str | None]:
        """Check a request's model and texts (cheap checks only) and return its cache key."""
        name = body.model if body.model is not None else self.models.default
        self.models.get(name)  # an unknown name raises, listing the allowed ones
        check_chars(body.text, "text", self.limits.max_chars)
        if body.text_b is not None:
            check_chars(body.text_b, "second text", self.limits.max_chars)
        return (name, body.text, body.text_b)

    def entry(self, key: tuple[str, str, str | None]) -> CaptureEntry:
        """The cached capture of ``key``, or a new one (runs the model; call in a worker)."""
        name, text, text_b = key
        model = self.models.get(name)

        def run() -> Any:
            with self.models.lock(name):  # one run of a model at a time (tokenizer included)
                _check_tokens(model, text, text_b, self.limits.max_tokens)
                return at.capture(model, text, text_b, truncate=False,
                                  qkv=model.model_type in self._qkv_families,
                                  attention="eager")

        return self.captures.get_or_capture(key, run)

    async def cached_json(self, key: tuple, derived: tuple, make) -> Response:
        """The JSON body ``make(entry)`` for a capture, built once and then served from the
        cache without touching the worker pool."""
        entry = self.captures.peek(key)
        body = None if entry is None else entry.cached_body(derived)
        if body is not None:
            return _bytes_response(body, hit=True)

        def work() -> bytes:
            e = self.entry(key)
            return e.body(derived, lambda: _dumps(make(e)))

        return _bytes_response(await self.gate.run(work), hit=False)

    # ----- bodies -------------------------------------------------------------------------------
    def capture_body(self, entry: CaptureEntry, body: CaptureRequest) -> dict[str, Any]:
        trace = entry.trace
        layer = check_index(body.layer, trace.num_layers, "layer")
        head = None if body.head is None else check_index(body.head, trace.num_heads, "head")
        query = body.query
        if query is not None:
            query = check_index(query, trace.num_tokens, "query token", "query tokens")
        view = at.AttnView(trace, _VIEW_KINDS, layer=layer,
                           heads=None if head is None else [head], head=head or 0, query=query)
        # "tokens" are labels to show (the text each token stands for); "raw_tokens" the
        # tokenizer's own spelling.
        return {"model": trace.model_name, "tokens": trace_labels(trace)[0],
                "raw_tokens": list(trace.tokens), "num_layers": trace.num_layers,
                "num_heads": trace.num_heads, "layer": layer, "head": head,
                "capture_ms": round(entry.seconds * 1000, 2), "view": view.payload()}

    def heads_body(self, entry: CaptureEntry, body: TextInput) -> dict[str, Any]:
        from attnscope.analysis.patterns import SCORES

        table = at.head_patterns(entry.trace)
        rows = []
        for r in table.records():
            rows.append({"layer": r["layer"], "head": r["head"], "label": r["label"],
                         "label_score": _finite(r["label_score"]), "class": r["class"],
                         "scores": {s: _finite(r[s]) for s in SCORES}})
        return {"model": table.model_name, "tokens": trace_labels(entry.trace)[0],
                "score_names": list(SCORES), "heads": rows}

    def explain_body(self, entry: CaptureEntry, body: ExplainRequest) -> dict[str, Any]:
        from attnscope.render.html import encode_float16

        trace = entry.trace
        model = None
        if body.part != "self" or trace.queries is None:
            model = self.models.get(trace.model_name)
        if model is not None:
            with self.models.lock(trace.model_name):
                ex = at.explain(trace, body.layer, body.head, body.query, part=body.part,
                                model=model)
        else:
            ex = at.explain(trace, body.layer, body.head, body.query, part=body.part)
        query_labels, key_labels = trace_labels(trace, body.part)
        return {"model": ex.model_name, "layer": ex.layer, "head": ex.head,
                "query": ex.query_index, "query_token": query_labels[ex.query_index],
                "key_tokens": key_labels, "head_dim": ex.head_dim,
                "q": _floats(ex.q), "keys": encode_float16(ex.keys), "dots": _floats(ex.dots),
                "scale": float(ex.scale), "scores": _floats(ex.scores),
                "bias": None if ex.bias is None else _floats(ex.bias),
                "visible": [bool(v) for v in ex.visible], "weights": _floats(ex.weights),
                "model_weights": _floats(ex.model_weights),
                "max_abs_error": float(ex.max_abs_error)}

    def flow_body(self, entry: CaptureEntry, body: FlowRequest) -> dict[str, Any]:
        from attnscope.analysis.flow import (
            FlowResult,
            LayeredFlow,
            default_output,
            residual_attention,
        )

        start = time.perf_counter()
        trace = entry.trace
        n = trace.num_tokens
        output = default_output(trace) if body.output is None else check_index(
            body.output, n, "output token")
        budget = self.limits.flow_budget_s
        note = None
        if body.kind == "rollout":
            values = at.attention_rollout(trace, output).row(output)
            spent = time.perf_counter() - start
        else:
            # Each output token's flow is kept with the capture: a later request continues
            # where this one stopped. One request at a time works on one capture's graph.
            lock = entry.state("flow-lock", _new_lock)
            with lock:
                network = entry.state("flow-graph",
                                      lambda: LayeredFlow(residual_attention(trace)))
                progress: dict[str, Any] = entry.state(("flow", output), lambda: {
                    "values": np.full(n, np.nan), "spent": 0.0})
                values = progress["values"]
                slice_s = budget if body.budget_s is None else min(body.budget_s, budget)
                loop_start, before = time.perf_counter(), progress["spent"]
                for t in np.flatnonzero(np.isnan(values)):
                    now = time.perf_counter() - loop_start
                    if before + now >= budget or now >= slice_s:
                        break
                    values[t] = network.value(output, int(t))
                progress["spent"] = spent = before + time.perf_counter() - loop_start
                values = values.copy()
            if np.isnan(values).any() and spent >= budget:
                note = (f"Attention flow stopped after the {budget:g} s budget with "
                        f"{int((~np.isnan(values)).sum())} of {n} input tokens; start the "
                        "explorer with a larger --flow-budget for long texts.")
        complete = not np.isnan(values).any()
        labels = trace_labels(trace)[0]
        relevance = figure = None
        if complete:
            result = FlowResult(body.kind, values[None, :], (output,), trace.tokens,
                                trace.model_name, trace.unit)
            relevance = _floats(result.relevance(output))
            if body.figure:
                figure = _png(result.bar(output))
        return {"kind": body.kind, "model": trace.model_name, "output": output,
                "output_token": labels[output], "tokens": labels,
                "values": [None if math.isnan(v) else float(v) for v in values],
                "relevance": relevance, "done": int((~np.isnan(values)).sum()), "total": n,
                "complete": complete, "seconds": round(spent, 4), "budget_s": budget,
                "note": note, "figure": figure}

    def compare_body(self, entry_a: CaptureEntry, key_b: tuple,
                     body: CompareRequest) -> dict[str, Any]:
        from attnscope.render import compare

        entry_b = self.entry(key_b)
        a, b = entry_a.trace, entry_b.trace
        sides = []
        for trace in (a, b):
            view = at.AttnView(trace, ["head", "model"])
            sides.append({"model": trace.model_name, "text": trace.text,
                          "text_b": trace.text_b, "tokens": trace_labels(trace)[0],
                          "view": view.payload()})
        diff: dict[str, Any] = {"comparable": False, "reason": None, "layer": body.layer,
                                "head": body.head, "changes": None, "grid": None,
                                "head_figure": None}
        try:
            delta = compare.attention_difference(a, b)  # (L, H, T, T)
        except AttnscopeError as err:
            diff["reason"] = str(err)
        else:
            changes = compare.head_changes(delta)  # (L, H)
            if body.layer is None or body.head is None:  # the head that changes most
                layer, head = (int(i) for i in np.unravel_index(np.argmax(changes),
                                                                changes.shape))
            else:
                layer = check_index(body.layer, delta.shape[0], "layer")
                head = check_index(body.head, delta.shape[1], "head")
            diff.update(comparable=True, layer=layer, head=head,
                        changes=[_floats(row) for row in changes],
                        grid=_png(compare.difference_grid(a, b)),
                        head_figure=_png(compare.difference_heatmap(a, b, layer, head)))
        return {"a": sides[0], "b": sides[1], "difference": diff}

    def page_download(self, body: PageRequest) -> str:
        from attnscope.render import compare
        from attnscope.render.html import build_page

        esc = html.escape
        a = self.entry(self.key(body.a)).trace
        layer = check_index(body.a.layer, a.num_layers, "layer")
        head = None if body.a.head is None else check_index(body.a.head, a.num_heads, "head")
        view = at.AttnView(a, _VIEW_KINDS, layer=layer,
                           heads=None if head is None else [head], head=head or 0)
        parts = [f"<h1>attnscope explorer: {esc(a.model_name)}</h1>",
                 f"<p><b>text:</b> {esc(a.text)}</p>"]
        if a.text_b is not None:
            parts.append(f"<p><b>second text:</b> {esc(a.text_b)}</p>")
        parts.append(view.fragment())
        if body.b is None:
            parts.append("<h2>What each head does</h2>"
                         + at.head_patterns(a)._repr_html_())
        else:
            b = self.entry(self.key(body.b)).trace
            parts.append(f"<h2>B: {esc(b.model_name)}</h2><p><b>text:</b> {esc(b.text)}</p>")
            parts.append(at.AttnView(b, _VIEW_KINDS, layer=layer).fragment())
            try:
                grid = compare.difference_grid(a, b)
            except AttnscopeError as err:
                parts.append(f"<p>{esc(str(err))}</p>")
            else:
                parts.append(f'<h2>B \u2212 A</h2><img alt="difference" src="{_png(grid)}">')
        return build_page("\n".join(parts), f"attnscope explorer: {a.model_name}")


# ----- the corpus browser ------------------------------------------------------------------------


def _corpus_routes(app: FastAPI, state: _State, browser: Any) -> None:
    """The routes that read the corpus store (only on an explorer started with one)."""
    run_q = Query(None, max_length=200, description="a run of the store (default: the latest)")
    served = state.models.names

    async def read(fn, *args: Any, **kwargs: Any) -> Response:
        # DuckDB work runs on a worker thread, so the event loop keeps answering.
        return _json_response(await run_in_threadpool(fn, *args, **kwargs))

    @app.get("/api/corpus", response_model=CorpusInfo, responses=ERRORS,
             summary="The corpus store and its runs")
    async def corpus_info() -> dict[str, Any]:
        """The store this explorer browses (fixed at start-up), its runs with their model,
        texts and tokens, and whether each run's model is served here (so its examples open
        in the views)."""
        return browser.info(served)

    @app.get("/api/corpus/heads", response_model=CorpusHeadsResponse, responses=ERRORS,
             summary="What each head does across the corpus")
    async def corpus_heads(run: str | None = run_q) -> Response:
        """One row per head: its most frequent label with the share of texts that gave it,
        and the mean over texts of every head-pattern score and of entropy."""
        return await read(browser.heads, run)

    @app.get("/api/corpus/stat", response_model=CorpusStatResponse, responses=ERRORS,
             summary="One statistic per head")
    async def corpus_stat(stat: str = Query(max_length=100, description=(
                              "a statistic: a score name, 'entropy', 'offset:-8' ... "
                              "'offset:+8' or 'label:NAME' (see GET /api/corpus)")),
                          run: str | None = run_q) -> Response:
        """Mean, standard deviation (ddof 0) and number of texts of one statistic, ``[L][H]``
        (null where no text gave a value)."""
        return await read(browser.stat, run, stat)

    @app.get("/api/corpus/layers", response_model=CorpusLayersResponse, responses=ERRORS,
             summary="The layer plots and the positional profile")
    async def corpus_layers(run: str | None = run_q) -> Response:
        """Per layer and head: attention to the first token, [SEP], punctuation and itself,
        entropy and mean distance (Clark et al. 2019, Fig. 1-2), and the mean weight by
        relative offset -8..+8; with the charts that draw them."""
        return await read(browser.layers, run)

    @app.get("/api/corpus/relations", response_model=CorpusRelationsResponse,
             responses=ERRORS, summary="Syntactic heads")
    async def corpus_relations(run: str | None = run_q, min_count: int = Query(
            1, ge=1, le=1_000_000_000, description="relations with at least this many arcs")
                               ) -> Response:
        """For every dependency relation and direction, the head whose most-attended word is
        most often the other end of the arc, beside the best fixed-offset baseline (empty
        unless the corpus was CoNLL-U)."""
        return await read(browser.relations, run, min_count)

    @app.get("/api/corpus/examples", response_model=CorpusExamplesResponse,
             responses=ERRORS, summary="The best texts of one head")
    async def corpus_examples(
            layer: int = Query(ge=-1_000_000, le=1_000_000,
                               description="layer (negative counts from the end)"),
            head: int = Query(ge=-1_000_000, le=1_000_000,
                              description="head (negative counts from the end)"),
            kind: str = Query("weight", max_length=100, description=(
                "'weight': the strongest single weight between two words; or a score name: "
                "the texts where the head scored highest")),
            k: int | None = Query(None, ge=1, le=1000, description="at most this many"),
            run: str | None = run_q) -> Response:
        """Best first: the value, the query and key token (for 'weight'), and the text with
        its position in the corpus. ``served`` says whether the run's model is served here,
        so that the text can be captured (POST /api/capture) at this layer and head."""
        def work() -> dict[str, Any]:
            body = browser.examples(run, layer, head, kind, k, served=served)
            if not body["served"]:
                return body
            name = body["model"]
            with state.models.lock(name):  # (a tokenizer is not safe to share either)
                rows = [_with_spans(state.models.get(name), row) for row in body["examples"]]
            return {**body, "examples": rows}

        return await read(work)

    @app.get("/api/corpus/atlas", response_class=HTMLResponse, responses=ERRORS_OF_HTML,
             summary="The head atlas of a run (an HTML page)")
    async def corpus_atlas(run: str | None = run_q) -> HTMLResponse:
        """The page ``attnscope atlas`` writes for the run: a map of every head and a section
        for each (scores, profile, relations, examples, importance, the joint embedding of
        its queries and keys). When this explorer serves the run's model, each example links
        to its head view here."""
        page_html = await run_in_threadpool(browser.atlas, run, served)
        return HTMLResponse(page_html)

    @app.get("/api/corpus/search", response_model=CorpusSearchResponse, responses=ERRORS,
             summary="What each head attends to from one token")
    async def corpus_search(
            token: str = Query(max_length=100, description="a token, e.g. 'it'"),
            top: int = Query(5, ge=1, le=50, description="key tokens kept per head"),
            limit: int = Query(100, ge=1, le=1000, description="texts read at most"),
            run: str | None = run_q) -> Response:
        """Runs the run's model (it must be one this explorer serves) on the texts of the run
        that hold ``token`` as a whole token, and sums each head's attention from every
        occurrence by key token: the ``top`` key tokens per head, strongest first, with the
        mean weight per occurrence."""
        result = browser.result(run)
        name = result.model_name
        if name not in served:
            raise AttnscopeError(f"Token search runs the model of run {result.run_id!r}, "
                                 f"{name}, which this explorer does not serve: start it with "
                                 f"--model {name}.")
        model = state.models.get(name)

        def work() -> dict[str, Any]:
            with state.models.lock(name):
                return browser.search(result.run_id, token, model, top=top, limit=limit)

        return _json_response(await state.gate.run(work))


def _with_spans(model: Any, row: dict[str, Any]) -> dict[str, Any]:
    """An example with the characters of its query and key token (``[segment, start, end]``),
    found by tokenizing its text again with the run's model; None where a token has none."""
    import warnings

    from attnscope.tokens import TruncationWarning, tokenize

    if row["query_pos"] is None:
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # the run already counted it
        tokens = tokenize(model, row["text"], row["text_b"])
    spans = {}
    for end in ("query", "key"):
        pos = row[f"{end}_pos"]
        # the row holds the token's label (see corpus.py), as token_label gives it
        ok = pos < len(tokens.tokens) and token_label(tokens.tokens[pos]) == row[f"{end}_token"]
        start, stop = (int(v) for v in tokens.offsets[pos]) if ok else (-1, -1)
        spans[f"{end}_span"] = ([int(tokens.segment_ids[pos]), start, stop]
                                if ok and start >= 0 else None)
    return {**row, **spans}


# ----- helpers ---------------------------------------------------------------------------------


def _state_limits_in_schema(app: FastAPI, names: list[str], limits: Limits,
                            browser: Any = None) -> None:
    """Write this explorer's allowlist and text limits into its OpenAPI schema, so the
    documentation (and a client generated from it) knows them: ``model`` is one of the
    served names, each text at most ``max_chars`` characters; with a corpus store, ``run``
    is one of its runs, and ``stat``, ``kind``, ``layer`` and ``head`` say what they take."""
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain_openapi()
            for component in schema.get("components", {}).get("schemas", {}).values():
                props = component.get("properties", {})
                if "model" in props and "text" in props:
                    props["model"]["anyOf"] = [{"type": "string", "enum": list(names)},
                                               {"type": "null"}]
                    props["text"].update(minLength=1, maxLength=limits.max_chars)
                    for option in props.get("text_b", {}).get("anyOf", []):
                        if option.get("type") == "string":
                            option.update(minLength=1, maxLength=limits.max_chars)
            hints = {} if browser is None else browser.schema_hints()
            for path, operations in schema.get("paths", {}).items():
                if not path.startswith("/api/corpus"):
                    continue
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter["name"] in hints:
                            parameter["schema"] = {**parameter["schema"],
                                                   **hints[parameter["name"]]}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override



def _new_lock():
    import threading

    return threading.Lock()


def _check_tokens(model: Any, text: str, text_b: str | None, limit: int) -> None:
    tok = model.tokenizer
    if model.architecture == "encoder-decoder":
        count = max(len(tok(t)["input_ids"]) for t in (text, text_b) if t is not None)
    else:
        count = len(tok(text, text_b)["input_ids"])
    if count > limit:
        raise TooLarge(f"The text has {count} tokens; this explorer takes at most {limit} "
                       "(start it with a larger --max-tokens for longer texts).")


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _png(fig) -> str:
    """A figure as a PNG data URL."""
    from attnscope.render.static import _quiet_glyph_warnings

    buffer = io.BytesIO()
    with _quiet_glyph_warnings():
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def body_limit(limits: Limits) -> int:
    """The most bytes a request body may hold: room for the longest texts a request can carry
    (two pairs, each character as a 12-byte JSON escape of a surrogate pair) and the rest."""
    return 16_384 + 4 * 12 * limits.max_chars


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413 before it is
    read, by its Content-Length, or, sent in chunks without one, as soon as the bytes received
    pass the limit; the app never holds more than the limit and one chunk."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    def sentence(self) -> str:
        return (f"The request body is over {self.limit} bytes, the most this explorer takes; "
                "send shorter texts.")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit()
                                     or int(declared) > self.limit):
            response = _error(413, self.sentence())
            if declared.strip().isdigit():
                # What the client still sends is left unread; the server closes after this.
                response.headers["Connection"] = "close"
            else:
                response = _error(400, "The request's Content-Length is not a number.")
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise StarletteHTTPException(413, self.sentence())
            return message

        await self.app(scope, counted, send)


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def _bytes_response(content: bytes, *, hit: bool) -> Response:
    return Response(content, media_type="application/json",
                    headers={"X-Attnscope-Cache": "hit" if hit else "miss"})


def _json_response(body: dict[str, Any]) -> Response:
    return Response(_dumps(body), media_type="application/json")


def _error(status: int, sentence: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status, headers=headers)


def _validation_sentence(errors: Any) -> str:
    """One sentence for the first thing pydantic found wrong with a request."""
    errors = list(errors)
    if not errors:
        return "The request is not valid."
    first = errors[0]
    kind = first.get("type", "")
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    if kind == "json_invalid":
        return "The request body is not valid JSON."
    if kind == "missing" and not where:
        return "The request needs a JSON body; see /docs."
    if kind == "missing":
        return f"The request needs the field {where!r}."
    if kind == "extra_forbidden":
        return f"The request has a field {where!r} this route does not take."
    message = str(first.get("msg", "is not valid")).rstrip(".")
    more = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if not where:
        return f"The request body is not valid: {message}{more}."
    return f"The field {where!r} is not valid: {message}{more}."
