"""The long view: one page for a text of 8k-32k tokens, from a :class:`~attnscope.LazyTrace`.

``at.long_view(lazy)`` returns a :class:`LongView` whose page shows:

* the running text coloured by one selected token's attention: what it attends to (its row)
  or what attends to it (its column);
* one head's overview heatmap, max-pooled: the ``[T, T]`` weights cut into ``n x n`` blocks,
  each shown by its largest weight, so one strong weight never vanishes into an average;
* per-head strips (sink mass, entropy, mean distance, from :meth:`LazyTrace.head_stats`) to
  pick a layer and head from.

A page never holds ``T x T`` weights of every head. Within a size budget (:data:`PAGE_BUDGET`,
50 MB of attention data before compression) it carries, in this order, what fits:

1. the coarsest pooled level (64 x 64) of every head;
2. the selected head's exact weights (every row, so every column too) in a one-byte
   logarithmic code (each weight from 1e-4 up within 1.9%);
3. the 256 x 256 level of the selected head, then of the other heads, as many as fit;
4. the 1024 x 1024 level, in the same order;
5. the other heads' exact weights.

A head whose exact weights the page leaves out colours the text by its finest pooled level
(each token shows its block's largest weight) and the page says so. Served by the explorer
(``attnscope serve --long trace.npz``), the page asks the explorer for exact rows, columns and
finer tiles instead (see :mod:`attnscope.app.api`).

Pooling streams over row blocks from the queries and keys (:func:`pooled_attention`): memory
``O(H·block·T)``, never the ``T x T`` array. Token ``i`` falls in block ``floor(i·n / T)`` of a
level of ``n`` blocks (``n = T`` when the text is shorter than the level: then it is exact).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError, check_index
from attnscope.files import write_text
from attnscope.readable import readable_tokens, token_labels
from attnscope.render import html as page_html
from attnscope.render.generation_view import (
    LOG8_FLOOR,
    LOG8_STEP,
    _log8_plane,
    single_text_payload,
)

__all__ = ["LEVELS", "MAX_TILE_CELLS", "PAGE_BUDGET", "LongView", "long_page", "long_payload",
           "long_view", "pool_edges", "pooled_attention", "pooled_tile"]

#: The attention data a long page carries at most, in bytes before compression.
PAGE_BUDGET = 50_000_000
#: The pooled levels a page may carry (blocks per side), coarsest first.
LEVELS = (64, 256, 1024)
#: The most weights the explorer computes for one tile (rows x columns of its span).
MAX_TILE_CELLS = 4096 * 4096
#: Query rows a pooling pass computes at once (``[H, BLOCK, T]`` weights).
BLOCK = 256

#: A saved page asks for nothing over the network.
CSP_OFFLINE = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
               "img-src data: blob:; connect-src blob: data:")


def pool_edges(num_tokens: int, size: int) -> np.ndarray:
    """The first token of each of ``min(size, T)`` blocks, ``[n]`` int64: token ``i`` falls in
    block ``floor(i·n / T)``."""
    n = min(size, num_tokens)
    # the first i with floor(i·n/T) >= b is ceil(b·T/n)
    return -((-np.arange(n, dtype=np.int64) * num_tokens) // n)


def _levels(num_tokens: int) -> list[int]:
    """The pooled levels (blocks per side) of a text: those of :data:`LEVELS` below ``T``,
    and ``T`` itself (exact) when the text is no longer than the largest."""
    out = [n for n in LEVELS if n < num_tokens]
    if num_tokens <= LEVELS[-1]:
        out.append(num_tokens)
    return out


class _HeadSums:
    """The sums behind :meth:`LazyTrace.head_stats`, added up block by block in a pass that
    also pools (so a page and its strips cost one pass over every head, not two): the same
    formulas, ``[L, H]`` float64 sums over query rows."""

    NAMES = ("sink", "entropy", "distance", "previous")

    def __init__(self, num_layers: int, num_heads: int) -> None:
        self.sums = {name: np.zeros((num_layers, num_heads), np.float64) for name in self.NAMES}

    def add(self, layer: int, heads: Sequence[int], logp: Any, p: Any, rows: np.ndarray,
            cols: np.ndarray) -> None:
        """Add one block: ``logp`` and ``p`` ``[len(heads), r, c]`` torch tensors for query
        ``rows`` over keys ``cols`` (``cols`` from 0). ``logp`` is used up: its memory holds
        the products, so a block allocates no ``[h, r, c]`` array of its own."""
        import torch

        h = np.asarray(heads)
        dist = torch.from_numpy(np.abs(rows[:, None] - cols[None, :]).astype(np.float32))
        logp.nan_to_num_(neginf=0.0)  # masked keys: P = 0, and 0 · -inf counts as 0
        self.sums["sink"][layer, h] += p[:, :, 0].sum(-1).double().numpy()
        products = logp.mul_(p)  # P · log P
        self.sums["entropy"][layer, h] -= products.sum((-1, -2)).double().numpy()
        torch.mul(p, dist, out=products)  # P · |i - j|
        self.sums["distance"][layer, h] += products.sum((-1, -2)).double().numpy()
        r = rows[(rows >= 1) & (rows <= len(cols))]  # key i-1 exists
        if len(r):
            picked = p[:, r - rows[0], torch.from_numpy(r - 1)]  # (h, len(r))
            self.sums["previous"][layer, h] += picked.sum(-1).double().numpy()

    def stats(self, num_tokens: int) -> dict[str, np.ndarray]:
        """Means over the rows, ``[L, H]`` float32, as :meth:`LazyTrace.head_stats` gives."""
        out = {name: (value / num_tokens).astype(np.float32) for name, value in self.sums.items()}
        out["previous"] = (self.sums["previous"] / max(num_tokens - 1, 1)).astype(np.float32)
        return out


def _pool_pass(lazy: Any, wanted: dict[tuple[int, int], list[int]],
               exact: Sequence[tuple[int, int]], *, coded: bool, block: int = BLOCK,
               sums: _HeadSums | None = None
               ) -> tuple[dict[tuple[int, int, int], np.ndarray], dict[tuple[int, int], bytes]]:
    """One streaming pass over row blocks of the layers ``wanted`` names.

    Returns the max-pooled maps ``{(layer, head, n): [n, n]}`` (float32, or one-byte log codes
    when ``coded``: the code is monotone, so the largest code is the code of the largest
    weight) and, for the heads in ``exact``, every weight in one-byte codes (causal: row ``i``
    holds keys ``0..i``, rows one after another; otherwise ``[T, T]``). With ``sums``, adds
    every head's :meth:`LazyTrace.head_stats` sums from the same weights (every layer and
    head is then passed over).
    """
    import torch

    T = lazy.num_tokens
    pools: dict[tuple[int, int, int], np.ndarray] = {}
    rows_out: dict[tuple[int, int], list[bytes]] = {key: [] for key in exact}
    edges = {n: pool_edges(T, n) for ns in wanted.values() for n in ns}
    # (finer, coarser): every block of the coarser level starts where one of the finer does
    nested = {(f, c): bool(np.isin(edges[c], edges[f]).all()) for f in edges for c in edges}
    for (layer, head), ns in wanted.items():
        for n in ns:
            pools[layer, head, n] = np.zeros((n, n), np.uint8 if coded else np.float32)
    layers = sorted({key[0] for key in wanted} | {key[0] for key in exact})
    if sums is not None:
        layers = list(range(lazy.num_layers))
    all_cols = np.arange(T)
    with torch.inference_mode():
        for layer in layers:
            heads = sorted({h for (ly, h) in wanted if ly == layer}
                           | {h for (ly, h) in exact if ly == layer})
            if sums is not None:
                heads = list(range(lazy.num_heads))
            for start in range(0, T, block):
                rows = np.arange(start, min(start + block, T))
                cols = all_cols[: rows[-1] + 1] if lazy.causal else all_cols
                logp = lazy._log_weights(layer, heads, rows, cols)  # (h, r, c)
                weights = torch.exp(logp)  # exp(-inf) = 0: masked
                if sums is not None:
                    sums.add(layer, heads, logp, weights, rows, cols)
                p = weights.numpy()
                for a, head in enumerate(heads):
                    if (layer, head) in rows_out:
                        codes = np.frombuffer(_log8_plane(p[a]), np.uint8).reshape(p[a].shape)
                        if lazy.causal:
                            rows_out[layer, head].extend(
                                codes[k, : r + 1].tobytes() for k, r in enumerate(rows))
                        else:
                            rows_out[layer, head].append(codes.tobytes())
                    finer: tuple[int, np.ndarray, np.ndarray] | None = None
                    for n in sorted(wanted.get((layer, head), ()), reverse=True):
                        e = edges[n]
                        col_starts = e[e < len(cols)]
                        # the columns pooled: from the finer level's when its blocks nest in
                        # them (one pass over the weights for every level), else from them
                        if finer is not None and nested[finer[0], n]:
                            by_columns = np.maximum.reduceat(
                                finer[2], np.searchsorted(finer[1], col_starts), axis=1)
                        else:
                            by_columns = np.maximum.reduceat(p[a], col_starts, axis=1)
                        finer = (n, col_starts, by_columns)
                        # the row blocks of this slice of rows (a block may span two slices:
                        # np.maximum with what the block already holds joins its halves)
                        first = int(np.searchsorted(e, rows[0], "right")) - 1
                        last = int(np.searchsorted(e, rows[-1], "right")) - 1
                        row_starts = np.maximum(e[first : last + 1] - start, 0)
                        part = np.maximum.reduceat(by_columns, row_starts, axis=0)
                        if coded:
                            part = np.frombuffer(_log8_plane(part), np.uint8).reshape(part.shape)
                        target = pools[layer, head, n][first : last + 1, : len(col_starts)]
                        np.maximum(target, part, out=target)
    return pools, {key: b"".join(chunks) for key, chunks in rows_out.items()}


def pooled_attention(lazy: Any, layer: int, head: int, size: int = 256, *,
                     block: int = BLOCK) -> np.ndarray:
    """One head's weights max-pooled into ``n x n`` blocks, ``n = min(size, T)``: float32
    ``[n, n]``, entry ``[a, b]`` the largest ``P[i, j]`` with ``i`` in row block ``a`` and ``j``
    in column block ``b`` (blocks start at :func:`pool_edges`).

    Streams over ``block`` query rows at a time: ``O(block·T)`` memory, never ``[T, T]``.

    Raises:
        AttnscopeError: a layer or head out of range, or a size or block below 1.
    """
    _check_lazy(lazy)
    layer = check_index(layer, lazy.num_layers, "layer")
    head = check_index(head, lazy.num_heads, "head")
    size = _positive(size, "size")
    block = _positive(block, "block")
    n = min(size, lazy.num_tokens)
    pools, _ = _pool_pass(lazy, {(layer, head): [n]}, [], coded=False, block=block)
    return pools[layer, head, n]


def pooled_tile(lazy: Any, layer: int, head: int, rows: tuple[int, int],
                cols: tuple[int, int], size: int = 256, *, block: int = BLOCK
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weights of one head on query rows ``rows[0]:rows[1]`` and keys
    ``cols[0]:cols[1]``, max-pooled to at most ``size`` blocks a side (exact where the span is
    no longer than ``size``): ``(tile [r, c] float32, first row of each row block [r], first
    column of each column block [c])``, absolute token positions. Streams over ``block`` rows:
    ``O(block·c)`` memory.

    Raises:
        AttnscopeError: a layer, head, row or column out of range, an empty span, or a size
            or block below 1.
    """
    _check_lazy(lazy)
    layer = check_index(layer, lazy.num_layers, "layer")
    head = check_index(head, lazy.num_heads, "head")
    size = _positive(size, "size")
    block = _positive(block, "block")
    T = lazy.num_tokens
    for (start, stop), what in ((rows, "rows"), (cols, "columns")):
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))
                and 0 <= start < stop <= T):
            raise AttnscopeError(f"The {what} {start}:{stop} must be a non-empty span within "
                                 f"the {T} tokens (0 to {T}).")
    import torch

    row_edges = rows[0] + pool_edges(rows[1] - rows[0], size)
    col_edges = pool_edges(cols[1] - cols[0], size)
    # Pooled in log space: P = exp(log P) is monotone, so each block's largest weight is the
    # exp of its largest log-weight, and exp runs on the [r, c] pooled tile only, not on
    # every weight of the span (most of the time of a large tile).
    log_tile = torch.full((len(row_edges), len(col_edges)), float("-inf"))
    span = cols[1] - cols[0]
    with torch.inference_mode():
        for start in range(rows[0], rows[1], block):
            stop = min(start + block, rows[1])
            # causal: keys after the block's last query are hidden from all of it, so only
            # the column blocks that begin before it are computed (a tile on the diagonal
            # costs half); the others stay at -inf, a weight of 0
            seen = min(span, stop - cols[0]) if lazy.causal else span
            if seen <= 0:
                continue
            blocks = int(np.searchsorted(col_edges, seen, "left"))
            width = int(col_edges[blocks]) if blocks < len(col_edges) else span
            logp = lazy._log_weights(layer, [head], np.arange(start, stop),
                                     np.arange(cols[0], cols[0] + width))[0]
            part = _max_pool_columns(logp, col_edges[:blocks])  # (r, column blocks)
            first = int(np.searchsorted(row_edges, start, "right")) - 1
            last = int(np.searchsorted(row_edges, stop - 1, "right")) - 1
            part = _max_pool_rows(part, np.maximum(row_edges[first : last + 1] - start, 0))
            target = log_tile[first : last + 1, :blocks]
            torch.maximum(target, part, out=target)
        tile = torch.exp(log_tile).numpy()  # exp(-inf) = 0: blocks the model masks entirely
    return tile, row_edges, cols[0] + col_edges


def _max_pool_columns(values: Any, starts: np.ndarray) -> Any:
    """``values`` ``[r, c]`` (a torch tensor) max-pooled over the column blocks that start at
    ``starts`` (``[n]``, first 0): ``[r, n]``. Blocks of one size take torch's max-pooling
    (a few times faster than a reduction over a reshape); others (sizes differing by one, as
    :func:`pool_edges` cuts them) take numpy's reduceat."""
    import torch

    width, n = values.shape[1], len(starts)
    if width % n == 0 and np.array_equal(starts, np.arange(n) * (width // n)):
        if width == n:
            return values
        return torch.nn.functional.max_pool1d(values[None], width // n)[0]
    return torch.from_numpy(np.maximum.reduceat(values.numpy(), starts, axis=1))


def _max_pool_rows(values: Any, starts: np.ndarray) -> Any:
    """``values`` ``[r, c]`` max-pooled over the row blocks that start at ``starts``."""
    import torch

    return torch.from_numpy(np.maximum.reduceat(values.numpy(), starts, axis=0))


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AttnscopeError(f"{what} must be a whole number of at least 1, not {value!r}.")
    return int(value)


def _check_lazy(lazy: Any) -> None:
    from attnscope.lazy import LazyTrace

    if not isinstance(lazy, LazyTrace):
        raise AttnscopeError(
            f"The long view needs a LazyTrace (at.capture(model, text, attention=\"lazy\")), "
            f"not {type(lazy).__name__}; for a short Trace use at.head_view or at.model_view.")


# ----- the page --------------------------------------------------------------------------------

def _exact_bytes(num_tokens: int, causal: bool) -> int:
    return num_tokens * (num_tokens + 1) // 2 if causal else num_tokens * num_tokens


def _plan(lazy: Any, first: tuple[int, int], budget: int, served: bool = False
          ) -> tuple[dict[tuple[int, int], list[int]], list[tuple[int, int]], list[str]]:
    """What the page carries within ``budget`` bytes (see the module's order): the pooled
    levels of each head, the heads whose exact weights it carries, and notes on what it left
    out."""
    T, L, H = lazy.num_tokens, lazy.num_layers, lazy.num_heads
    heads = [first] + [(ly, h) for ly in range(L) for h in range(H) if (ly, h) != first]
    levels = _levels(T)
    wanted: dict[tuple[int, int], list[int]] = {key: [] for key in heads}
    exact: list[tuple[int, int]] = []
    left = budget
    exact_size = _exact_bytes(T, lazy.causal)

    def take(size: int) -> bool:
        nonlocal left
        if size <= left:
            left -= size
            return True
        return False

    # the coarsest level of every head, always (a few kB a head)
    for key in heads:
        wanted[key].append(levels[0])
        left -= levels[0] ** 2
    # served by the explorer, rows and columns come from it, exact: the page carries none
    if not served and take(exact_size):
        exact.append(first)
    for n in levels[1:]:  # each finer level, the selected head first, as many as fit
        for key in heads:
            if take(n * n):
                wanted[key].append(n)
    for key in heads[1:]:
        if not served and take(exact_size):
            exact.append(key)
    notes = []
    mb = f"{budget / 1e6:g} MB"
    if len(exact) < len(heads) and not served:
        finest = max(wanted[heads[-1]]) if heads else levels[-1]
        block = math.ceil(T / finest)
        notes.append(
            f"Exact weights are carried for {len(exact)} of {len(heads)} heads (the page's "
            f"{mb} budget); other heads colour the text by blocks of up to {block} tokens "
            "(each token shows its block's largest weight). at.long_view(lazy, max_bytes=...) "
            "keeps more, and the explorer (attnscope serve --long) computes any row exactly.")
    every = [n for n in levels if all(n in ns for ns in wanted.values())]
    some = [n for n in levels if n not in every and any(n in ns for ns in wanted.values())]
    none = [n for n in levels if n not in every and n not in some]
    if some or none:
        said = [f"the overview carries {_sizes(every)} for every head"]
        said += [f"{n} x {n} for {sum(n in ns for ns in wanted.values())} of {len(heads)} "
                 "heads" for n in some]
        if none:
            said.append(f"leaves out {_sizes(none)}")
        notes.append(f"Within the {mb} budget, " + "; ".join(said) + ".")
    finest = max(n for ns in wanted.values() for n in ns)
    if finest < T and not served:
        notes.append(f"The overview's finest level pools blocks of up to {math.ceil(T / finest)} "
                     "tokens; served by the explorer, zooming computes finer tiles.")
    return wanted, exact, notes


def _sizes(levels: list[int]) -> str:
    return ", ".join(f"{n} x {n}" for n in levels) or "no level"


class LongView:
    """The page of a long text's attention (see :func:`long_view` and the module's docs)."""

    def __init__(self, lazy: Any, *, layer: int = -1, head: int = 0, token: int | None = None,
                 direction: str = "row", theme: str = "light", max_bytes: int = PAGE_BUDGET,
                 stats: dict[str, np.ndarray] | None = None, tiles: str | None = None) -> None:
        _check_lazy(lazy)
        if direction not in ("row", "column"):
            raise AttnscopeError(f"Unknown direction {direction!r}: choose 'row' (what the "
                                 "token attends to) or 'column' (what attends to it).")
        if theme not in ("light", "dark"):
            raise AttnscopeError(f"Unknown theme {theme!r}: choose 'light' or 'dark'.")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise AttnscopeError(f"max_bytes must be a positive whole number, not {max_bytes!r}.")
        self.lazy = lazy
        self.layer = check_index(layer, lazy.num_layers, "layer")
        self.head = check_index(head, lazy.num_heads, "head")
        last = lazy.num_tokens - 1
        self.token = check_index(last if token is None else token, lazy.num_tokens, "token")
        self.direction = direction
        self.theme = theme
        self.max_bytes = max_bytes
        if stats is not None:  # said before the pass over every head, not after
            _check_stats(stats, (lazy.num_layers, lazy.num_heads))
        #: ``head_stats()`` of the trace: the caller's, or (``None`` until then) those the
        #: page's pooling pass adds up when it builds the page.
        self.stats = stats
        self.tiles = tiles
        self._page: str | None = None

    def payload(self) -> dict[str, Any]:
        """The data the page script reads (see :func:`long_payload`)."""
        return long_payload(self)

    @property
    def html(self) -> str:
        """The complete, self-contained HTML page."""
        if self._page is None:
            _, fragment = page_html.build_fragment(self.payload())
            self._page = long_page(fragment, f"attnscope long view: {self.lazy.model_name}",
                                   served=self.tiles is not None)
        return self._page

    def save(self, path: str | Any) -> Path:
        """Write the page (``.html``)."""
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise AttnscopeError(f"Cannot save the long view as '{path.suffix or path.name}': "
                                 "use .html.")
        return write_text(path, self.html, what="the page")

    def _repr_html_(self) -> str:
        return page_html.iframe(self.html, 900)

    def __repr__(self) -> str:
        return f"LongView({self.lazy!r})"


def long_view(lazy: Any, *, layer: int = -1, head: int = 0, token: int | None = None,
              direction: str = "row", theme: str = "light", max_bytes: int = PAGE_BUDGET,
              stats: dict[str, np.ndarray] | None = None) -> LongView:
    """A page for a long text: the text coloured by one token's attention, one head's
    max-pooled overview and per-head strips.

    Args:
        lazy: a :class:`~attnscope.LazyTrace` (``at.capture(model, text, attention="lazy")``).
        layer, head: the head shown first (negative counts from the end); the page carries its
            exact weights first.
        token: the token selected first (default: the last).
        direction: "row" (what the token attends to) or "column" (what attends to it).
        theme: "light" or "dark".
        max_bytes: the budget for attention data, before compression (default 50 MB); see
            the module's documentation for what a page keeps within it.
        stats: ``lazy.head_stats()`` when already computed; otherwise the page's one pass
            over every head computes them along with the pooled levels (then ``view.stats``
            holds them once the page is built: no second pass for the caller).
    """
    return LongView(lazy, layer=layer, head=head, token=token, direction=direction,
                    theme=theme, max_bytes=max_bytes, stats=stats)


def long_page(fragment: str, title: str, *, served: bool = False) -> str:
    """A complete document around a long view's fragment, with a Content-Security-Policy: a
    saved page makes no request; a page the explorer serves may ask only its own origin."""
    csp = CSP_OFFLINE.replace("connect-src blob: data:", "connect-src 'self' blob: data:") \
        if served else CSP_OFFLINE
    page = page_html.build_page(fragment, title)
    return page.replace('<meta charset="utf-8">',
                        f'<meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
                        f'content="{csp}">', 1)


def _check_stats(stats: Any, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    names = ("sink", "entropy", "distance")
    if not isinstance(stats, dict) or any(
            name not in stats or np.shape(stats[name]) != shape for name in names):
        raise AttnscopeError(f"stats must be lazy.head_stats() of this trace: sink, entropy "
                             f"and distance, each {list(shape)}.")
    return {name: np.asarray(stats[name], np.float64) for name in names}


def long_payload(view: LongView) -> dict[str, Any]:
    """The data the page script reads for a long view: ``P.long`` with the text, the strips'
    statistics ``[L][H]``, the pooled maps (one-byte log codes, deflated, base85) by head and
    level, and the exact weights of the heads the budget allows."""
    lazy = view.lazy
    T, L, H = lazy.num_tokens, lazy.num_layers, lazy.num_heads
    wanted, exact, notes = _plan(lazy, (view.layer, view.head), view.max_bytes,
                                 served=view.tiles is not None)
    # without the caller's head_stats(), the pooling pass adds them up from the same weights
    sums = _HeadSums(L, H) if view.stats is None else None
    pools, rows = _pool_pass(lazy, wanted, exact, coded=True, sums=sums)
    if sums is not None:
        view.stats = sums.stats(T)
    stats = _check_stats(view.stats, (L, H))
    keys = list(pools)
    level = 1 if view.max_bytes > 4 * 2**20 else 6
    packed = page_html._deflate_all([pools[k].tobytes() for k in keys]
                                    + [rows[k] for k in exact], level)
    maps: dict[str, dict[str, str]] = {}
    for (layer, head, n), text in zip(keys, packed, strict=False):
        maps.setdefault(f"{layer}:{head}", {})[str(n)] = text
    exact_planes = {f"{layer}:{head}": text
                    for (layer, head), text in zip(exact, packed[len(keys):], strict=True)}
    tokens = list(lazy.tokens)
    special = [bool(s) for s in np.asarray(lazy.special_mask, dtype=bool)]
    return {
        "title": lazy.model_name,
        "subtitle": f"{L} layers \u00d7 {H} heads, {T} tokens",
        **single_text_payload("long", view.theme, tokens, special, view.layer, view.head,
                              view.token),
        "long": {
            "text": readable_tokens(tokens, special),
            "labels": token_labels(tokens, special),
            "tokens": T,
            "layers": L,
            "heads": H,
            "causal": bool(lazy.causal),
            "stats": {name: [[_finite(v) for v in row] for row in value.tolist()]
                      for name, value in stats.items()},
            "edges": {str(n): pool_edges(T, n).tolist()
                      for n in sorted({n for ns in wanted.values() for n in ns})},
            "maps": maps,
            "exact": exact_planes,
            "log8": {"step": LOG8_STEP, "floor": LOG8_FLOOR},
            "notes": notes,
            "budget": view.max_bytes,
            "tiles": view.tiles,
            "tile_cells": MAX_TILE_CELLS,
            "id": uuid.uuid4().hex[:8],
            "initial": {"layer": view.layer, "head": view.head, "token": view.token,
                        "direction": view.direction},
        },
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
