"""Attention rollout and attention flow (Abnar & Zuidema, 2020): how much each input token
feeds each output token, through every layer.

Both methods start from the same per-layer matrix, the attention with the residual connection
added: ``R_l = 0.5 * mean_heads(A_l) + 0.5 * I``, rows renormalised to sum to 1 (the residual
stream carries about as much of a token as attention brings in).

* **Rollout** multiplies these matrices through the layers: ``R_{L-1} @ ... @ R_1 @ R_0``. Row
  i is how output token i mixes the input tokens.
* **Flow** reads the layers as one graph: a node per (level, token), levels 0 (the input) to L
  (the last layer), and an edge from token i at level l+1 to token j at level l whose capacity
  is ``R_l[i, j]``. The flow from output token i to input token j is the *maximum flow* from
  node (L, i) to node (0, j).

The paper computes flow with one networkx Edmonds-Karp maximum flow per pair, in pure Python.
attnscope computes the same values (to a certified ``tol``, 1e-7 by default) with scipy's
compiled Dinic solver. That solver takes integer capacities only, and rounding capacities to
integers alone is *not* exact, so every value here comes with a proof:

1. round the capacities down to integers (scaled by 2**30) and solve: the flow found is a real
   flow of the true network, so its value is a lower bound;
2. take a cut (the source's edges, the sink's edges, or the cut the integer solver ends on) and
   add up its true capacities: that is an upper bound;
3. if the two differ by more than ``tol``, solve again on the residual network of the flow found
   so far, clipped to the gap and scaled up to it (each round shrinks the gap about a
   million-fold), and add.

Speed comes from three things (see :class:`LayeredFlow`): only the nodes a flow can use are
built, once; pairs are solved eight at a time as disjoint copies in one graph, so scipy's
per-call set-up is paid once per eight; and they are first solved on a sparse copy of the
graph (the largest edges into and out of every node), whose flows are flows of the full graph
too. For real attention the cut around the source or the sink is almost always the minimum one,
and the sparse flow reaches it: the value is then proved without solving the full graph.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from attnscope.analysis.drawing import draw
from attnscope.analysis.patterns import DEFAULT_BLOCK, _block_size
from attnscope.errors import AttnscopeError, check_index, check_number
from attnscope.readable import token_labels
from attnscope.trace import Trace, require_trace

if TYPE_CHECKING:
    from attnscope.lazy import LazyTrace
    from attnscope.render.static import AttnFigure

__all__ = [
    "FlowResult",
    "attention_flow",
    "attention_rollout",
    "flow_seconds",
    "max_flow",
    "residual_attention",
]

_SCALE = float(2**30)  # integer capacities stay below 2**31 (scipy's int32) with room to spare
_MAX_ROUNDS = 6
_INT_MAX = 2**31 - 1
_UNION_SCALE = float(2**31 - 2**26)  # a copy's flow (<= its bound) stays below int32's max


def residual_attention(trace: Trace, part: str = "self") -> np.ndarray:
    """Each layer's head-averaged attention with the residual added, ``[L, T, T]`` float64.

    ``R_l = 0.5 * mean_h(A_l) + 0.5 * I`` with every row renormalised to sum to 1.
    """
    require_trace(trace, "residual_attention")
    attentions, rows, cols = trace.part(part)
    if len(rows) != len(cols):
        raise AttnscopeError("Rollout and flow need self-attention; use part 'self' or 'decoder'.")
    trace.check(part)
    mean = attentions.astype(np.float64).mean(axis=1)  # (L, T, T)
    eye = np.eye(mean.shape[-1])
    residual = 0.5 * mean + 0.5 * eye
    return residual / residual.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class FlowResult:
    """How much each input token feeds each output token (rollout or flow).

    ``values``: float64 ``[len(outputs), T]`` -- row k is output token ``outputs[k]`` (a
    position at the last layer), column j is input token j. ``kind`` is "rollout" or "flow".
    Rollout rows sum to 1; flow values are raw maximum-flow values in [0, 1] (use
    :meth:`relevance` for a row normalised to sum to 1, as the paper plots it).
    """

    kind: str
    values: np.ndarray
    outputs: tuple[int, ...]
    tokens: tuple[str, ...]
    model_name: str
    unit: str = "token"

    def row(self, output: int) -> np.ndarray:
        """Raw values of one output token, ``[T]`` (``output`` is a token position)."""
        output = check_index(output, len(self.tokens), "output token")
        if output not in self.outputs:
            raise AttnscopeError(
                f"Output token {output} was not computed; this result holds "
                f"{_list(self.outputs)}."
            )
        return self.values[self.outputs.index(output)]

    def relevance(self, output: int) -> np.ndarray:
        """Input-token relevance for one output token, ``[T]``, normalised to sum to 1."""
        row = self.row(output)
        total = row.sum()
        return row / total if total > 0 else row

    def to_text(self, output: int | None = None, top: int = 10) -> str:
        """The most relevant input tokens of one output token (default: the first computed)."""
        output = self.outputs[0] if output is None else output
        rel = self.relevance(output)
        order = np.argsort(-rel, kind="stable")[:top]
        labels = token_labels(self.tokens)  # the text each token stands for
        lines = [f"{self.kind} for output {self.unit} {output} {labels[output]!r}:"]
        lines += [f"  {int(j):4d}  {labels[j]!r:<20} {rel[j]:.4f}" for j in order]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        output = self.outputs[0]
        rel = self.relevance(output)
        labels = token_labels(self.tokens)
        cells = "".join(
            f"<tr><td>{j}</td><td>{html.escape(tok)}</td><td>{rel[j]:.4f}</td></tr>"
            for j, tok in enumerate(labels)
        )
        return (f"<p>{self.kind} for output {html.escape(labels[output])!s} ({output})</p>"
                f"<table><tr><th>pos</th><th>input</th><th>relevance</th></tr>{cells}</table>")

    def figure(self) -> AttnFigure:
        """The output x input matrix as a heatmap (an :class:`~attnscope.AttnFigure`)."""
        return draw(self, "matrix")

    def bar(self, output: int | None = None) -> AttnFigure:
        """Bar chart of input-token relevance for one output token."""
        return draw(self, "bar", self.outputs[0] if output is None else output)


def _list(items: tuple[int, ...]) -> str:
    shown = ", ".join(str(i) for i in items[:8])
    return shown + (", ..." if len(items) > 8 else "")


def default_output(trace: Trace) -> int:
    """The output token whose relevance is shown by default: [CLS]-like first token for
    encoders, the last token for causal models."""
    return trace.num_tokens - 1 if trace.is_causal else 0


def _outputs(trace: Any, output: int | Sequence[int] | None) -> tuple[int, ...]:
    """The chosen output positions of ``trace`` (or of a ``[T, T]`` array), checked."""
    count = trace.shape[0] if isinstance(trace, np.ndarray) else trace.num_tokens
    if output is None:
        return tuple(range(count))
    if not isinstance(output, (int, np.integer)) and isinstance(output, (Sequence, np.ndarray)):
        chosen = tuple(check_index(o, count, "output token") for o in output)
        if not chosen:
            raise AttnscopeError("The output tokens select no token; give at least one "
                                 "position.")
        return chosen
    return (check_index(output, count, "output token"),)


def attention_rollout(trace: Trace | LazyTrace,
                      output: int | Sequence[int] | None = None, *,
                      part: str = "self") -> FlowResult:
    """Attention rollout through every layer.

    Returns a :class:`FlowResult` whose ``values`` ``[T_out, T]`` is
    ``R_{L-1} @ ... @ R_0`` (see :func:`residual_attention`), or only its rows ``output``
    (one position or a list of them). ``part``: ``"self"`` (the encoder's or decoder-only
    model's self-attention) or ``"decoder"`` (an encoder-decoder model's decoder).

    On a :class:`~attnscope.LazyTrace` the chosen rows are computed exactly without any
    ``[T, T]`` matrix: ``e_i`` is multiplied through the layers from the last down, each
    layer's weights streamed over blocks of rows (memory O(H·block·T); every token's row,
    ``output=None``, only where ``[T, T]`` fits the memory budget).
    """
    from attnscope.lazy import LazyTrace

    if isinstance(trace, LazyTrace):
        lazy = _lazy_part(trace, part, "attention_rollout")
        return lazy_rollout(lazy, _outputs(lazy, output))
    require_trace(trace, "attention_rollout")
    residual = residual_attention(trace, part)  # (L, T, T)
    joint = residual[0]
    for layer in residual[1:]:
        joint = layer @ joint  # (T, T): output of this layer over the input tokens
    outputs = _outputs(residual[0], output)
    tokens = trace.decoder_tokens if part == "decoder" else trace.tokens
    return FlowResult("rollout", joint[list(outputs)], outputs, tuple(tokens or ()),
                      trace.model_name, trace.unit)


def _lazy_part(lazy: LazyTrace, part: str, what: str) -> LazyTrace:
    """The LazyTrace of ``part`` ("self" or "decoder"), or one sentence."""
    if part == "self":
        return lazy
    if part == "decoder":
        if lazy.decoder is None:
            raise AttnscopeError(
                f"{what} of part 'decoder' needs an encoder-decoder capture with a decoder "
                "text; this LazyTrace has no decoder.")
        return lazy.decoder
    raise AttnscopeError("Rollout and flow need self-attention; use part 'self' or 'decoder'.")


# Seconds per (pair of tokens) x (edge of the layered graph), measured on a 2-core CPU with
# bench/analysis.py and rounded up: the cost estimate that attention_flow checks its budget by.
_FLOW_SECONDS_PER_PAIR_EDGE = 3e-8


def flow_seconds(num_layers: int, num_tokens: int, num_outputs: int) -> float:
    """A rough estimate of :func:`attention_flow`'s running time, in seconds: one maximum
    flow per (output, input) pair, each over about ``L * T * T`` edges."""
    edges = num_layers * num_tokens * num_tokens
    return 0.05 + _FLOW_SECONDS_PER_PAIR_EDGE * num_outputs * num_tokens * edges


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def attention_flow(trace: Trace | LazyTrace, output: int | None = None, *, tol: float = 1e-7,
                   budget: float | None = 60.0) -> FlowResult:
    """Attention flow: the maximum flow from each output token to each input token.

    Args:
        trace: a captured Trace (self-attention of its encoder or decoder).
        output: compute one output token's row only (T maximum flows instead of T*T).
        tol: every value is within ``tol`` of the exact maximum flow (certified by a cut).
        budget: refuse, before starting, work estimated to take longer than this many
            seconds (see :func:`flow_seconds`); None runs whatever it costs.

    Cost: T*T maximum flows over L*T*T edges; about 3 s for 64 tokens through 12 layers on
    two CPU cores (``python bench/analysis.py``). For long texts ask for one ``output``.
    A :class:`~attnscope.LazyTrace` is checked against the budget first, then its
    head-averaged weights ``[L, T, T]`` are streamed together (refused past the memory budget).

    Returns:
        A :class:`FlowResult` with raw maximum-flow ``values`` ``[T_out, T]``.
    """
    from attnscope.lazy import LazyTrace

    if not isinstance(trace, LazyTrace):
        require_trace(trace, "attention_flow")
    budget = check_number(budget, "budget", above=0, none_ok=True)
    tol = check_number(tol, "tol", above=0)
    try:
        import scipy.sparse.csgraph  # noqa: F401  (the max-flow solver)
    except ImportError:
        raise AttnscopeError(
            "Attention flow needs scipy: pip install scipy."
        ) from None
    outputs = _outputs(trace, output)
    layers, tokens = trace.num_layers, trace.num_tokens
    expected = flow_seconds(layers, tokens, len(outputs))
    if budget is not None and expected > budget:
        if output is None:
            one = _duration(flow_seconds(layers, tokens, 1))
            advice = f"ask for one output token (output=0 takes about {one}), or raise budget="
        else:
            advice = "raise budget="
        raise AttnscopeError(
            f"Attention flow for {len(outputs)} x {tokens} token pairs through {layers} layers "
            f"would take about {_duration(expected)}, over the budget of {budget:g} s; "
            f"{advice} (seconds, or None) to run it anyway."
        )
    residual = (lazy_residual(trace) if isinstance(trace, LazyTrace)
                else residual_attention(trace))
    network = LayeredFlow(residual)
    values = network.values(outputs, tol=tol)  # (T_out, T)
    return FlowResult("flow", values, outputs, trace.tokens, trace.model_name,
                      getattr(trace, "unit", "token"))


class LayeredFlow:
    """The layered attention graph of ``residual`` ``[L, T, T]``, ready for many max flows.

    Only the nodes a flow from (L, s) to (0, t) can use are built: the source, every token of
    levels L-1 .. 1, and the sink. The graph is stored once as CSR; each (s, t) pair only
    rewrites the source's row (``R_{L-1}[s, :]``) and the sink's column (``R_0[:, t]``).

    A second, sparse copy keeps only the ``keep`` largest edges out of and into every middle
    node. Any flow
    in it is a flow of the full graph, so when it reaches the full graph's bound (the cut
    around the source or the sink) that value is proved exact; this is the usual case for
    real attention and costs a fraction of the full solve. Otherwise the full graph is solved.
    """

    def __init__(self, residual: np.ndarray, keep: int = 8) -> None:
        self.residual = residual
        layers, n_tok, _ = residual.shape
        self.layers, self.n_tok = layers, n_tok
        if layers == 1:
            return
        self.full = self._graph(None)
        self.sparse = self._graph(keep) if keep < n_tok and layers > 2 else None

    def _graph(self, keep: int | None) -> Any:
        from scipy.sparse import csr_matrix

        residual, layers, n_tok = self.residual, self.layers, self.n_tok
        middle = layers - 1  # levels L-1 .. 1, each n_tok nodes
        n = 2 + middle * n_tok
        self.sink = n - 1
        # Node 1 + k*T + i is token i of level L-1-k; edges of level L-1-k use R_{L-2-k}.
        data = [residual[-1][0]]
        indices = [1 + np.arange(n_tok)]
        lengths = [n_tok]
        for k in range(middle - 1):
            block = residual[layers - 2 - k]  # (T, T)
            mask = np.ones((n_tok, n_tok), dtype=bool)
            if keep is not None:
                # The largest edges out of every node and into every node.
                mask[:] = False
                rows_top = np.argsort(-block, axis=1, kind="stable")[:, :keep]  # (T, keep)
                np.put_along_axis(mask, rows_top, True, axis=1)
                cols_top = np.argsort(-block, axis=0, kind="stable")[:keep]  # (keep, T)
                np.put_along_axis(mask, cols_top, True, axis=0)
            row_ids, col_ids = np.nonzero(mask)  # row-major, so each row's columns are sorted
            data.append(block[row_ids, col_ids])
            indices.append(1 + (k + 1) * n_tok + col_ids)
            lengths += mask.sum(axis=1).tolist()
        data.append(residual[0][:, 0])
        indices.append(np.full(n_tok, self.sink))
        lengths += [1] * n_tok + [0]  # the last middle level's edges go to the sink; sink: none
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return csr_matrix((np.concatenate(data), np.concatenate(indices).astype(np.int32),
                           indptr), shape=(n, n))

    def values(self, sources: Sequence[int], tol: float = 1e-7, batch: int = 8) -> np.ndarray:
        """Max flow from each of ``sources`` (last-level tokens) to every input token,
        ``[len(sources), T]``.

        Pairs are solved ``batch`` at a time as one graph (disjoint copies joined by a super
        source and a super sink), first on the sparse graph, then on the full graph; a pair
        whose value a trivial cut does not prove is solved alone by :meth:`value`.
        """
        sources = [int(s) for s in sources]
        out = np.full((len(sources), self.n_tok), np.nan)
        if self.layers == 1:
            return self.residual[0][sources].astype(np.float64)
        todo = [(row, s, t) for row, s in enumerate(sources) for t in range(self.n_tok)]
        for graph in (self.sparse, self.full):
            if graph is None or not todo:
                continue
            union = _Union(graph, self.n_tok, min(batch, len(todo)))
            left = []
            for start in range(0, len(todo), union.copies):
                chunk = todo[start : start + union.copies]
                found = union.solve(self.residual, [(s, t) for _, s, t in chunk], tol)
                for (row, s, t), value in zip(chunk, found, strict=True):
                    if np.isnan(value):
                        left.append((row, s, t))
                    else:
                        out[row, t] = value
            todo = left
        for row, s, t in todo:
            out[row, t] = self.value(s, t, tol)
        return out

    def value(self, source: int, sink: int, tol: float = 1e-7) -> float:
        """Maximum flow from token ``source`` at the last level to token ``sink`` at level 0."""
        if self.layers == 1:
            return float(self.residual[0][source, sink])
        first, last = self.residual[-1][source], self.residual[0][:, sink]
        # The cuts {source} and {sink} bound the flow before any solving.
        bound = min(float(first.sum()), float(last.sum()))
        for graph in (self.sparse, self.full):
            if graph is None:
                continue
            graph.data[: self.n_tok] = first
            graph.data[-self.n_tok:] = last
            found = _solve(graph, 0, self.sink, tol, bound, cuts_prove=graph is self.full)
            if found is not None:
                return found
        raise AssertionError("the full graph always gives a value")


class _Union:
    """``copies`` disjoint copies of one layered graph in one CSR, for one scipy call.

    Node ``k * n + v`` is node v of copy k; a super source feeds every copy's source and every
    copy's sink drains into a super sink. Copies do not share edges, so the max flow of the
    union splits into each copy's own max flow, read on its sink's edge to the super sink. Each
    copy gets its own integer scale (its bound maps to about 2**31), and a copy's value counts
    only when the trivial cut proves it (NaN otherwise).
    """

    def __init__(self, graph: Any, n_tok: int, copies: int) -> None:
        from scipy.sparse import csr_matrix

        n, nnz = graph.shape[0], graph.nnz
        self.n, self.nnz, self.n_tok, self.copies = n, nnz, n_tok, copies
        self.base = graph.data.copy()
        lengths = np.diff(graph.indptr)
        lengths[-1] = 1  # every copy's sink gets one edge, to the super sink
        per_copy = nnz + 1
        self.super_source, super_sink = copies * n, copies * n + 1
        offsets = (np.arange(copies) * n)[:, None]  # (K, 1)
        indices = np.concatenate(
            [graph.indices[None, :] + offsets, np.full((copies, 1), super_sink)], axis=1
        ).ravel()  # (K * (nnz + 1),)
        indices = np.concatenate([indices, np.arange(copies) * n])
        all_lengths = np.concatenate([np.tile(lengths, copies), [copies, 0]])
        indptr = np.concatenate([[0], np.cumsum(all_lengths)])
        self.data = np.zeros(copies * per_copy + copies, dtype=np.int32)
        self.graph = csr_matrix((self.data, indices.astype(np.int32), indptr.astype(np.int32)),
                                shape=(copies * n + 2, copies * n + 2))
        self.source_edges = np.arange(copies) * per_copy  # first edge of each copy's source
        self.sink_edge = np.arange(copies) * per_copy + nnz  # each copy's sink -> super sink

    def solve(self, residual: np.ndarray, pairs: Sequence[tuple[int, int]],
              tol: float) -> list[float]:
        """Values of ``pairs`` [(source token, sink token), ...] (NaN where not proved)."""
        from scipy.sparse.csgraph import maximum_flow

        k, t_n, nnz = len(pairs), self.n_tok, self.nnz
        caps = np.tile(self.base, (self.copies, 1))  # (K, nnz)
        sources = [s for s, _ in pairs]
        sinks = [t for _, t in pairs]
        caps[:k, :t_n] = residual[-1][sources]  # each copy's source row
        caps[:k, nnz - t_n:] = residual[0][:, sinks].T  # each copy's sink column
        caps[k:] = 0  # unused copies of the last chunk carry nothing
        bound = np.minimum(caps[:, :t_n].sum(1), caps[:, nnz - t_n:].sum(1))  # (K,)
        scale = _UNION_SCALE / np.where(bound > 0, bound, 1.0)
        ints = np.floor(np.minimum(caps, bound[:, None]) * scale[:, None])  # (K, nnz)
        data = self.graph.data
        data[:] = 0
        body = data[: self.copies * (nnz + 1)].reshape(self.copies, nnz + 1)
        body[:, :nnz] = ints
        body[:, nnz] = _INT_MAX
        data[self.copies * (nnz + 1):] = _INT_MAX  # super source -> each copy's source
        result = maximum_flow(self.graph, self.super_source, self.super_source + 1,
                              method="dinic")
        # Flow out of the super source, one edge per copy (reverse edges read as <= 0).
        flow = result.flow
        row = flow.indptr[self.super_source], flow.indptr[self.super_source + 1]
        cols, amounts = flow.indices[row[0]:row[1]], flow.data[row[0]:row[1]]
        per_copy = np.zeros(self.copies)
        forward = amounts > 0
        per_copy[cols[forward] // self.n] = amounts[forward]
        values = per_copy / scale
        proved = bound - values <= tol
        return [float(v) if ok else float("nan")
                for v, ok in zip(values[:k], proved[:k], strict=True)]


def max_flow(graph: Any, source: int, sink: int, *, tol: float = 1e-7) -> float:
    """Maximum flow value from ``source`` to ``sink`` of a graph of real capacities.

    ``graph`` is a scipy sparse (or dense numpy) ``[N, N]`` matrix of non-negative capacities
    (entry [u, v] is the capacity of edge u -> v). The result is within ``tol`` of the exact
    maximum flow: see the module docstring for how it is proved.
    """
    from scipy.sparse import csr_matrix

    graph = csr_matrix(graph, dtype=np.float64)
    graph.sum_duplicates()
    graph.sort_indices()
    if graph.nnz and graph.data.min() < 0:
        raise AttnscopeError("Capacities must be non-negative.")
    n = graph.shape[0]
    for node, what in ((source, "source"), (sink, "sink")):
        check_index(node, n, what, "nodes")
    if source % n == sink % n:
        raise AttnscopeError("The source and the sink of a flow must be different nodes.")
    source, sink = source % n, sink % n
    out_source = float(graph[[source]].sum())
    in_sink = float(graph.tocsc()[:, [sink]].sum())
    found = _solve(graph, source, sink, tol, min(out_source, in_sink), cuts_prove=True)
    assert found is not None
    return found


def _solve(graph: Any, source: int, sink: int, tol: float, bound: float, *,
           cuts_prove: bool) -> float | None:
    """Max flow of ``graph`` (float CSR) by rounds of integer max flows on residual networks.

    ``bound`` is an upper bound on the answer we want. With ``cuts_prove``, ``graph`` is the
    network itself and the cut each round ends on is also an upper bound: the result is always
    within ``tol``. Without it (a sparse part of the network), the result is returned only when
    it comes within ``tol`` of ``bound``, else None.
    """
    total = 0.0
    for _ in range(_MAX_ROUNDS):
        if bound - total <= tol:
            return total
        value, cut, residual = _round(graph, source, sink, bound - total)
        if not cuts_prove and total + cut < bound - tol:
            return None  # this graph cannot carry the bound
        total += value
        if cuts_prove:
            bound = min(bound, total - value + cut)
        if bound - total <= tol:
            return total
        graph = residual()
    return total if cuts_prove else None


def _round(graph: Any, source: int, sink: int,
           limit: float) -> tuple[float, float, Callable[[], Any]]:
    """One integer max flow on ``graph`` (float CSR, max flow known to be <= ``limit``).

    Returns ``(value, cut, residual)``: ``value`` is the value of a real flow in ``graph``,
    ``cut`` the true capacity of the cut the integer solver ended on (so value <= max flow <=
    cut), and ``residual()`` builds the residual network of that flow.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    scale = _SCALE / limit
    # A flow of value <= limit never uses more than limit on an edge: clipping keeps the answer.
    ints = np.floor(np.minimum(graph.data, limit) * scale).astype(np.int32)
    int_graph = csr_matrix((ints, graph.indices, graph.indptr), shape=graph.shape)
    result = maximum_flow(int_graph, source, sink, method="dinic")
    value = result.flow_value / scale
    flow = result.flow  # net flow in integer units, antisymmetric
    # The cut the solver ends on: nodes still reachable from the source in its residual graph.
    remaining = (int_graph - flow).tocsr()
    remaining.data[remaining.data <= 0] = 0
    remaining.eliminate_zeros()
    reached = np.zeros(graph.shape[0], dtype=bool)
    reached[breadth_first_order(remaining, source, directed=True, return_predecessors=False)] = True
    rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    crossing = reached[rows] & ~reached[graph.indices]
    cut = float(graph.data[crossing].sum())

    def residual() -> Any:
        # c - f forward, f backward (antiparallel edges merge, which keeps every value >= 0).
        res = (graph - flow.astype(np.float64) / scale).tocsr()
        res.data = np.maximum(res.data, 0.0)
        res.eliminate_zeros()
        res.sort_indices()
        return res

    return value, cut, residual


def lazy_residual(lazy: LazyTrace, *, block: int = DEFAULT_BLOCK,
                  budget: Any = None) -> np.ndarray:
    """:func:`residual_attention` of a LazyTrace, ``[L, T, T]`` float64, streamed over blocks
    of rows (each layer's heads averaged one ``[H, block, T]`` block at a time); refused
    past the memory budget."""
    import torch

    from attnscope.lazy import _guard_array

    block = _block_size(block)
    L, H, T = lazy.num_layers, lazy.num_heads, lazy.num_tokens
    _guard_array((L, T, T, 2), "The head-averaged weights of every layer", budget)  # float64
    residual = np.zeros((L, T, T), np.float64)
    heads = np.arange(H)
    with torch.inference_mode():
        for layer in range(L):
            for start in range(0, T, block):
                rows = np.arange(start, min(start + block, T))
                c = rows[-1] + 1 if lazy.is_causal else T
                residual[layer, rows, :c] = 0.5 * lazy._weights(
                    layer, heads, rows, np.arange(c)).double().mean(0).numpy()
            residual[layer][np.diag_indices(T)] += 0.5
            residual[layer] /= residual[layer].sum(-1, keepdims=True)
    return residual


def lazy_rollout(lazy: LazyTrace, outputs: Sequence[int] | None = None, *,
                 block: int = DEFAULT_BLOCK, budget: Any = None) -> FlowResult:
    """Attention rollout rows of the chosen output tokens, exact, without any ``[T, T]``.

    Row i of ``R_{L-1} @ ... @ R_0`` (see :func:`attnscope.residual_attention`) is the vector
    ``e_i`` multiplied from the last layer down: ``v ← v @ R_l``. Each product reads ``R_l``
    one block of rows at a time, ``v[:, rows] @ R_l[rows, :]``, so memory is the vectors
    ``[k, T]`` plus one ``[H, block, T]`` block of weights.

    Args:
        outputs: token positions (default: every token, refused past the memory budget).
    """
    import torch

    from attnscope.lazy import _guard_array

    block = _block_size(block)
    L, H, T = lazy.num_layers, lazy.num_heads, lazy.num_tokens
    if outputs is None:
        chosen = list(range(T))
    else:
        chosen = [check_index(o, T, "output token") for o in outputs]
    _guard_array((len(chosen), T, 2), "The rollout rows", budget)  # float64: 2 x 4 bytes
    v = np.zeros((len(chosen), T), np.float64)
    v[np.arange(len(chosen)), chosen] = 1.0
    heads = np.arange(H)
    with torch.inference_mode():
        for layer in reversed(range(L)):
            new = np.zeros_like(v)
            for start in range(0, T, block):
                stop = min(start + block, T)
                rows = np.arange(start, stop)
                c = stop if lazy.is_causal else T
                mean = lazy._weights(layer, heads, rows, np.arange(c)).double().mean(0)
                mean = mean.numpy()  # (r, c)
                # R[i, :] = (0.5·mean[i, :] + 0.5·e_i) / (0.5·Σ_j mean[i, j] + 0.5)
                weight = v[:, start:stop] / (0.5 * mean.sum(-1) + 0.5)  # (k, r)
                new[:, :c] += 0.5 * weight @ mean
                new[:, start:stop] += 0.5 * weight
            v = new
    return FlowResult("rollout", v, tuple(chosen), lazy.tokens, lazy.model_name, "token")
