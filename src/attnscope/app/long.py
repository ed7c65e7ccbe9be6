"""The explorer's long texts: pages and tiles computed on request from held LazyTraces.

``attnscope serve --long long.npz`` (or ``create_app(models, long={"name": lazy})``) holds
each :class:`~attnscope.LazyTrace` (queries, keys and row log-sum-exps: ``O(L·H·T·d)``) and
serves:

* ``GET /long/{name}`` -- the long view's page (:func:`attnscope.long_view`), which asks the
  routes below for exact rows, columns and zoomed tiles;
* ``GET /api/long`` -- the held texts, their tokens, layers and heads;
* ``GET /api/long/{name}/line`` -- one token's exact row (what it attends to) or column (what
  attends to it) of one head, ``[T]`` float32;
* ``GET /api/long/{name}/tile`` -- one head's weights on a span of rows and columns,
  max-pooled to at most ``size`` blocks a side (exact when the span is no longer), at most
  :data:`MAX_TILE_CELLS` weights computed a request (413 past it).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from attnscope.errors import AttnscopeError
from attnscope.render.long_view import MAX_TILE_CELLS

__all__ = ["MAX_TILE_CELLS", "MAX_TILE_SIZE", "long_routes", "read_long_traces"]

#: The most blocks a side a tile answer holds.
MAX_TILE_SIZE = 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def read_long_traces(paths: Any) -> dict[str, Any]:
    """``{name: LazyTrace}`` from saved lazy traces (``.npz``), each named by its file's stem;
    one sentence for a file that is not one, or two files of one name."""
    from pathlib import Path

    from attnscope.lazy import LazyTrace

    held: dict[str, Any] = {}
    for path in paths or []:
        path = Path(path)
        name = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem)[:100] or "long"
        if name in held:
            raise AttnscopeError(f"Two long traces are named {name!r}: rename one file.")
        held[name] = LazyTrace.load(path)
    return held


def _check_held(long: Mapping[str, Any]) -> dict[str, Any]:
    from attnscope.lazy import LazyTrace

    out = {}
    for name, lazy in long.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise AttnscopeError(f"A long trace's name must be letters, digits, '.', '_' or "
                                 f"'-' (up to 100), not {name!r}.")
        if not isinstance(lazy, LazyTrace):
            raise AttnscopeError(f"long[{name!r}] must be a LazyTrace, not "
                                 f"{type(lazy).__name__}.")
        out[name] = lazy
    return out


class _Unknown(Exception):
    """A name no held long text has (404)."""


def _f32(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, "<f4").tobytes()).decode("ascii")


def long_routes(app: FastAPI, long: Mapping[str, Any]) -> None:
    """Add the long-text routes (see the module's docs) for the held ``long`` traces."""
    from attnscope.render import html as page_html
    from attnscope.render.long_view import LongView, long_page, pooled_tile

    held = _check_held(long)

    async def unknown(request: Any, err: Exception) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=404)

    app.add_exception_handler(_Unknown, unknown)
    pages: dict[str, str] = {}
    page_lock = threading.Lock()

    def lazy_of(name: str) -> Any:
        if name not in held:
            known = ", ".join(sorted(held)) or "none"
            raise _Unknown(f"There is no long text named {name[:100]!r} (held: {known}).")
        return held[name]

    def build_page(name: str) -> str:
        with page_lock:  # built once, on first visit (a pass over every head)
            if name not in pages:
                view = LongView(held[name], tiles=f"/api/long/{name}")
                _, fragment = page_html.build_fragment(view.payload())
                pages[name] = long_page(fragment, f"attnscope long view: {name}", served=True)
        return pages[name]

    @app.get("/long/{name}", response_class=HTMLResponse, include_in_schema=False)
    async def long_page_route(name: str) -> HTMLResponse:
        lazy_of(name)
        return HTMLResponse(await run_in_threadpool(build_page, name))

    @app.get("/api/long", summary="The long texts this explorer holds")
    async def long_list() -> dict[str, Any]:
        """Each held LazyTrace: its name (``/long/{name}`` is its page), model, tokens, layers
        and heads."""
        return {"texts": [{"name": name, "model": lazy.model_name, "tokens": lazy.num_tokens,
                           "layers": lazy.num_layers, "heads": lazy.num_heads}
                          for name, lazy in held.items()],
                "max_tile_cells": MAX_TILE_CELLS, "max_tile_size": MAX_TILE_SIZE}

    @app.get("/api/long/{name}/line", summary="One token's exact row or column of one head")
    async def long_line(name: str, layer: int = Query(description="layer (negative from the end)"),
                        head: int = Query(description="head (negative from the end)"),
                        index: int = Query(description="the token"),
                        axis: str = Query("row", pattern="^(row|column)$", description=(
                            "row: what the token attends to; column: what attends to it"))
                        ) -> JSONResponse:
        """``values``: base64 of ``[T]`` little-endian float32, the exact weights."""
        lazy = lazy_of(name)

        def work() -> dict[str, Any]:
            if axis == "row":
                values = lazy.attention(layer, head, rows=index)
            else:
                values = lazy.attention(layer, head, cols=index)
            return {"length": int(values.shape[0]), "values": _f32(values)}

        return JSONResponse(await run_in_threadpool(work))

    @app.get("/api/long/{name}/tile", summary="One head's weights on a span, max-pooled")
    async def long_tile(name: str, layer: int = Query(description="layer"),
                        head: int = Query(description="head"),
                        row_start: int = Query(ge=0), row_stop: int = Query(ge=1),
                        col_start: int = Query(ge=0), col_stop: int = Query(ge=1),
                        size: int = Query(256, ge=1, le=MAX_TILE_SIZE, description=(
                            "the most blocks a side; a span no longer is exact"))
                        ) -> JSONResponse:
        """``values``: base64 of ``[rows, cols]`` little-endian float32, each block's largest
        weight; ``row_edges`` / ``col_edges``: each block's first token."""
        lazy = lazy_of(name)
        cells = max(0, row_stop - row_start) * max(0, col_stop - col_start)
        if cells > MAX_TILE_CELLS:
            return JSONResponse({"error": (
                f"This tile spans {cells:,} weights, past the explorer's {MAX_TILE_CELLS:,}: "
                "ask for a smaller span of rows or columns.")}, status_code=413)

        def work() -> dict[str, Any]:
            tile, row_edges, col_edges = pooled_tile(lazy, layer, head, (row_start, row_stop),
                                                     (col_start, col_stop), size)
            return {"rows": int(tile.shape[0]), "cols": int(tile.shape[1]),
                    "row_edges": row_edges.tolist(), "col_edges": col_edges.tolist(),
                    "values": _f32(tile)}

        return JSONResponse(await run_in_threadpool(work))
