"""One self-contained HTML page about one Trace: tokens, interactive views, what each head
does, rollout and flow, norm-based attention, layer trends and embedding PCA.

The charts are drawn in the page itself, on canvas, by a small script (``render/assets/
report.js``) from the numbers the page carries (heatmaps as float16 typed arrays): they show
the value under the pointer, and the page is built in a fraction of the time a dozen
matplotlib PNGs take. The same figures, as PNG, SVG or PDF for papers, come from each result's
``figure()`` / ``bar()`` / ``label_map()`` / ``gallery()``. The interactive views carry their
own script and style (from :mod:`attnscope.render.views`), every token and text is
HTML-escaped or goes in as JSON data, and the page makes no network request.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attnscope.errors import AttnscopeError
from attnscope.files import write_text
from attnscope.readable import trace_labels
from attnscope.trace import Trace

if TYPE_CHECKING:
    from attnscope.analysis.flow import FlowResult
    from attnscope.analysis.patterns import HeadTable
    from attnscope.models import LoadedModel

__all__ = ["Report", "report"]


def _summaries() -> dict[str, str]:
    from attnscope.mixing import METHODS

    return {name: method.summary for name, method in METHODS.items()}


METHOD_SUMMARIES = _summaries()

#: Above this many tokens the report computes flow for the default output token only (T max
#: flows instead of T*T), and above ``ONE_FLOW_TOKENS`` not at all, to stay quick.
FULL_FLOW_TOKENS = 64
ONE_FLOW_TOKENS = 256

_STYLE = """
body.attnscope-report{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
  max-width:1200px;margin:0 auto;padding:16px 24px;color:#222}
.attnscope-report h1{font-size:1.5em}.attnscope-report h2{margin-top:2em;border-bottom:1px solid
  #ddd;padding-bottom:4px}.attnscope-report table{border-collapse:collapse;font-size:12px}
.attnscope-report td,.attnscope-report th{border:1px solid #ddd;padding:2px 6px;text-align:right}
.attnscope-report .scroll{max-height:420px;overflow:auto}.attnscope-report .note{color:#666}
.attnscope-report code{background:#f4f4f4;padding:0 3px}
.attnscope-report figure.as-chart{display:inline-block;vertical-align:top;margin:8px 16px 8px 0}
.attnscope-report figcaption{font-size:13px;font-weight:600;margin-bottom:4px;max-width:900px}
.attnscope-report .as-plot{position:relative}.attnscope-report canvas{display:block}
.attnscope-report .as-tip{position:absolute;visibility:hidden;pointer-events:none;z-index:2;
  background:rgba(255,255,255,.95);border:1px solid #999;border-radius:3px;padding:2px 6px;
  font-size:12px;white-space:nowrap}
.attnscope-report table.as-labels td{text-align:center;font-size:11px;min-width:44px}
.attnscope-report summary{cursor:pointer}.attnscope-report summary h2{display:inline-block}
.attnscope-report nav.as-toc{background:#f6f8fa;border:1px solid #ddd;padding:4px 16px;
  display:inline-block}.attnscope-report nav.as-toc ol{margin:4px 0;padding-left:20px}
.attnscope-report .as-legend span{display:inline-block;padding:1px 6px;margin:2px;font-size:12px}
"""


class _Charts:
    """The charts of one page: each ``add`` returns a placeholder ``<figure>``; ``data()`` is
    the list of chart specifications that report.js draws into them."""

    def __init__(self) -> None:
        self.specs: list[dict[str, Any]] = []

    def add(self, kind: str, **spec: Any) -> str:
        self.specs.append({"kind": kind, **spec})
        return f'<figure class="as-chart" data-chart="{len(self.specs) - 1}"></figure>'

    def heatmap(self, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str],
                title: str, *, xlabel: str = "key", ylabel: str = "query", bar: str = "",
                vmax: float | None = None, compact: bool = False) -> str:
        """``matrix`` ``[len(rows), len(cols)]``, travelling as float16."""
        from attnscope.render.html import encode_float16

        matrix = np.nan_to_num(np.asarray(matrix, dtype=np.float32))
        top = float(matrix.max()) if vmax is None else vmax
        return self.add("heatmap", title=title, rows=list(rows), cols=list(cols),
                        shape=list(matrix.shape), values=encode_float16(matrix)["b64"],
                        vmin=0.0, vmax=max(top, 1e-9), xlabel=xlabel, ylabel=ylabel, bar=bar,
                        compact=compact)

    def bars(self, values: np.ndarray, labels: Sequence[str], title: str, *, highlight: int = -1,
             ylabel: str = "") -> str:
        return self.add("bars", title=title, labels=list(labels), values=_rounded(values),
                        highlight=highlight, ylabel=ylabel)


def _rounded(values: np.ndarray) -> list:
    """Floats as JSON with 4 significant digits (NaN becomes None)."""
    return [None if not math.isfinite(v) else float(f"{v:.4g}")
            for v in np.asarray(values, dtype=np.float64).ravel()]


def _label_table(table: HeadTable) -> str:
    """Layers x heads, each cell coloured by its head's label, its score below; hovering a
    cell lists every score of that head."""
    from attnscope.analysis.figures import _LABEL_COLOURS, _SHORT
    from attnscope.analysis.patterns import SCORES

    esc = html.escape
    head_row = "".join(f"<th>{h}</th>" for h in range(table.num_heads))
    rows = []
    for layer in range(table.num_layers):
        cells = []
        for head in range(table.num_heads):
            label = str(table.labels[layer, head])
            score = table.label_scores[layer, head]
            text = _SHORT.get(label, label) + ("" if math.isnan(score) else f"<br>{score:.2f}")
            scores = ", ".join(f"{name} {table.scores[layer, head, i]:.2f}"
                               for i, name in enumerate(SCORES))
            tip = f"layer {layer}, head {head}: {label}, {table.classes[layer, head]}; {scores}"
            colour = _LABEL_COLOURS.get(label, "#dddddd")
            cells.append(f'<td style="background:{colour}4d" title="{esc(tip)}">{text}</td>')
        rows.append(f"<tr><th>{layer}</th>{''.join(cells)}</tr>")
    used = [n for n in _LABEL_COLOURS if n in set(table.labels.ravel().tolist())]
    legend = "".join(f'<span style="background:{_LABEL_COLOURS[n]}4d">{esc(n)}</span>'
                     for n in used)
    return (f'<table class="as-labels"><tr><th>layer \u2193 head \u2192</th>{head_row}</tr>'
            f"{''.join(rows)}</table><div class='as-legend'>{legend}</div>")


def _tokens_table(trace: Trace) -> str:
    head = "<tr><th>pos</th><th>token</th><th>special</th><th>segment</th><th>word</th></tr>"
    labels = trace_labels(trace)[0]  # the text each token stands for
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(labels[i])}</td>"
        f"<td>{'yes' if trace.special_mask[i] else ''}</td>"
        f"<td>{int(trace.segment_ids[i]) if trace.segment_ids[i] >= 0 else ''}</td>"
        f"<td>{int(trace.word_ids[i]) if trace.word_ids[i] >= 0 else ''}</td></tr>"
        for i in range(trace.num_tokens)
    )
    return f'<div class="scroll"><table>{head}{rows}</table></div>'


class Report:
    """The report page. ``html`` is the page; ``save(path)`` writes it; notebooks show it."""

    def __init__(self, page: str, title: str) -> None:
        self.html = page
        self.title = title

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise AttnscopeError(f"Cannot save a report as '{path.suffix or path.name}': "
                                 "use .html.")
        return write_text(path, self.html, what="the report")

    def _repr_html_(self) -> str:
        from attnscope.render.html import iframe

        return iframe(self.html, 900)

    def __repr__(self) -> str:
        return f"Report({self.title!r}, {len(self.html)} characters)"


def report(trace: Trace, model: LoadedModel | None = None, *, output: int | None = None,
           views: bool = True, measure: str | None = None, target: Any = None) -> Report:
    """Build the report page of ``trace``.

    Args:
        trace: from :func:`attnscope.capture` (tokens or merged words).
        model: the LoadedModel it came from; needed for norm-based attention (without it that
            section says so).
        output: the output token whose rollout and flow relevance is charted (default: the
            first token, [CLS], for encoders; the last token for causal models).
        views: embed the interactive head and model views.
        measure: a context-mixing method ("value_zeroing", "alti", "norms2", "attattr",
            "grad_rollout"; needs ``model``): a section with its rollout to the input and the
            sources of its target, and the model view's selector between raw attention and
            the measure's per-layer scores. ``target`` goes to :func:`attnscope.context_mixing`.

    Returns:
        A :class:`Report`; ``report(trace).save("report.html")`` writes it.
    """
    from attnscope.analysis.flow import attention_flow, attention_rollout, default_output
    from attnscope.analysis.layers import layer_trends
    from attnscope.analysis.patterns import head_patterns
    from attnscope.errors import check_index

    if not isinstance(trace, Trace):
        raise AttnscopeError(f"A report needs a Trace from attnscope.capture, not "
                             f"{type(trace).__name__}.")
    trace.check()
    mixing = None
    if measure is not None:
        from attnscope.analysis.context_mixing import _method, context_mixing

        _method(measure)  # one sentence listing the methods for an unknown name
        if model is None:
            raise AttnscopeError(f"measure={measure!r} needs the model: report(trace, model, "
                                 "measure=...).")
        mixing = context_mixing(trace, model, measure, target, progress=False)
    output = default_output(trace) if output is None else check_index(
        output, trace.num_tokens, "output token")
    esc = html.escape
    title = f"attnscope report: {trace.model_name}"
    sections: list[str] = []
    texts = f"<p><b>text:</b> {esc(trace.text)}</p>"
    if trace.text_b is not None:
        texts += f"<p><b>second text:</b> {esc(trace.text_b)}</p>"
    sections.append(
        f"<h1>{esc(title)}</h1>{texts}<p class='note'>{esc(repr(trace))}</p>"
        f"<h2 id='tokens'>Tokens</h2>{_tokens_table(trace)}"
    )

    # Interactive views: each fragment carries its own script and style.
    sections.append("<h2 id='views'>Interactive views</h2>")
    if views:
        from attnscope.render.views import head_view, model_view, neuron_view

        sections.append(head_view(trace).fragment())
        with_measure = mixing is not None and trace.unit == "token"
        sections.append(model_view(trace, measure=measure if with_measure else None,
                                   model=model, target=target).fragment())
        if trace.queries is not None and trace.keys is not None:
            sections.append(neuron_view(trace).fragment())
    else:
        sections.append("<p class='note'>Interactive views left out.</p>")

    charts = _Charts()
    tokens = tuple(trace_labels(trace)[0])  # shown as the text they stand for
    unit = trace.unit
    table = head_patterns(trace)
    gallery = []
    for pattern in _gallery_patterns(table):
        for layer, head, score in table.best(pattern, 3):
            gallery.append(charts.heatmap(
                trace.attentions[layer, head], tokens, tokens,
                f"{pattern} {score:.2f}: layer {layer}, head {head}", vmax=1.0, compact=True))
    sections.append(
        "<h2 id='heads'>What each head does</h2>"
        "<p class='note'>Scores are shares of attention (see attnscope.analysis.patterns); "
        "label: the best pattern reaching 0.4; class: Kovaleva et al. (2019). Hover a head for "
        "all its scores.</p>"
        + _label_table(table)
        + "<h3>The best heads of each pattern</h3>" + "".join(gallery)
        + f'<div class="scroll">{table._repr_html_()}</div>'
    )

    def relevance_charts(result: FlowResult) -> str:
        rows = [tokens[i] for i in result.outputs]
        matrix = ""
        if len(result.outputs) > 1:
            matrix = charts.heatmap(result.values, rows, tokens, f"attention {result.kind}",
                                    xlabel=f"input {unit}", ylabel=f"output {unit}",
                                    bar=result.kind)
        return matrix + charts.bars(
            result.relevance(output), tokens, highlight=output, ylabel="relevance",
            title=f"{result.kind} relevance of each input for output "
                  f"{tokens[output]!r} ({output})")

    rollout = attention_rollout(trace)
    flow_note, flow_figs = "", ""
    if trace.num_tokens <= FULL_FLOW_TOKENS:
        flow_figs = relevance_charts(attention_flow(trace))
    elif trace.num_tokens <= ONE_FLOW_TOKENS:
        flow_figs = relevance_charts(attention_flow(trace, output))
        flow_note = (f"<p class='note'>{trace.num_tokens} {unit}s: flow computed for "
                     f"output {output} only.</p>")
    else:
        flow_note = (f"<p class='note'>{trace.num_tokens} {unit}s: flow left out (it "
                     f"takes about a minute here); run attnscope.attention_flow(trace, "
                     f"output={output}) for it.</p>")
    last = trace.attentions[-1].mean(axis=0)  # (T, T): the last layer, heads averaged
    q_idx, k_idx = np.nonzero(last > 0.1)
    edges = [[int(i), int(j), round(float(last[i, j]), 4)]
             for i, j in zip(q_idx, k_idx, strict=True)]
    sections.append(
        "<h2 id='rollout'>Attention rollout and flow</h2>"
        "<p class='note'>Abnar &amp; Zuidema (2020): residual-augmented attention "
        "0.5·A + 0.5·I, heads averaged; rollout multiplies through the layers, flow is the "
        f"maximum flow through the layered graph. Output token: {esc(tokens[output])} "
        f"({output}).</p>"
        + relevance_charts(rollout) + flow_note + flow_figs
        + charts.add("arcs", tokens=list(tokens), edges=edges,
                     title=f"last layer ({trace.num_layers - 1}), mean of heads: edges above "
                           "0.1 (hover a token for its own)")
    )

    if mixing is not None:
        from attnscope.mixing import MEASURE_NAMES

        mixed_tokens = tuple(trace_labels(mixing.trace)[0])
        name = MEASURE_NAMES[mixing.method]
        whose = (f"the target, {esc(mixing.target)}" if mixing.target
                 else "the pooled sentence")
        sections.append(
            f"<h2 id='mixing'>Context mixing: {esc(name)}</h2>"
            f"<p class='note'>{esc(METHOD_SUMMARIES[mixing.method])}; rolled out to the input "
            f"through the {trace.num_layers} layers (see attnscope.context_mixing). The model "
            "view above switches between raw attention and this measure's per-layer scores."
            "</p>"
            + charts.heatmap(mixing.rollout[-1], mixed_tokens, mixed_tokens,
                             f"{name}: rollout to the input", xlabel="input token",
                             ylabel="output token", bar=mixing.method)
            + charts.bars(mixing.sources(), mixed_tokens, ylabel="share",
                          highlight=-1 if mixing.target_row is None else mixing.target_row,
                          title=f"{name}: sources of {whose}"))

    sections.append("<h2 id='norms'>Norm-based attention</h2>")
    if model is None:
        sections.append("<p class='note'>Pass the model (report(trace, model)) to add "
                        "norm-based attention (Kobayashi et al., 2020).</p>")
    else:
        from attnscope.analysis.norms import attention_norms

        try:
            norms = attention_norms(trace, model)
        except AttnscopeError as err:
            sections.append(f"<p class='note'>{esc(str(err))}</p>")
        else:
            weight_share, norm_share = norms.special_share()
            layer = trace.num_layers - 1
            sections.append(
                f"<p>Special tokens get {weight_share:.0%} of the attention weight but "
                f"{norm_share:.0%} of the norm (all heads). Layer {layer}, mean of heads:</p>"
                + charts.heatmap(trace.attentions[layer].mean(axis=0), tokens, tokens,
                                 "attention weight α", bar="weight")
                + charts.heatmap(norms.layer_mean(layer), tokens, tokens,
                                 "norm ‖α f(x)‖", bar="norm"))

    from attnscope.analysis.layers import LAYER_STATS

    trends = layer_trends(trace)
    titles = {"entropy": "normalised entropy", "distance": f"mean distance ({unit}s)",
              "special": "attention to special tokens", "punctuation": "attention to punctuation"}
    panels = [{"title": titles[name], "mean": _rounded(trends.values[:, k]),
               "heads": [_rounded(trends.per_head[:, h, k])
                         for h in range(trends.per_head.shape[1])]}
              for k, name in enumerate(LAYER_STATS)]
    sections.append("<h2 id='layers'>Layer trends</h2>"
                    + charts.add("lines", title="attention by layer", panels=panels)
                    + trends._repr_html_())

    sections.append("<h2 id='pca'>Hidden states in two dimensions (PCA)</h2>")
    try:
        from attnscope.analysis.embeddings import pca, token_path

        word = int(np.flatnonzero(~np.asarray(trace.special_mask, dtype=bool))[0])
        for projection, path in ((pca(trace, 0), False), (pca(trace, -1), False),
                                 (token_path(trace, word), True)):
            ev = projection.explained
            sections.append(charts.add(
                "scatter", title=projection.title, labels=list(projection.labels),
                points=[_rounded(p) for p in projection.points], path=path,
                xlabel=f"PC 1 ({ev[0]:.0%} of variance)",
                ylabel=f"PC 2 ({ev[1]:.0%} of variance)"))
    except AttnscopeError as err:
        sections.append(f"<p class='note'>{esc(str(err))}</p>")

    from attnscope.render.html import _asset, script_json

    body = _navigable("\n".join(sections))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body class=\"attnscope-report attnscope-page\">\n{body}\n"
            '<script type="application/json" id="attnscope-report-data">'
            f"{script_json(charts.specs)}</script>\n"
            f"<script>(function(){{\n{_asset('report.js')}\nattnscopeReport(document);\n}})();"
            "</script>\n</body></html>\n")
    return Report(page, title)


def _navigable(body: str) -> str:
    """Each ``<h2 id=...>`` section as a collapsible ``<details>`` (open), and a table of
    contents after the preamble."""
    parts = re.split(r"<h2 id='(\w+)'>(.*?)</h2>", body)  # preamble, (id, title, content)...
    preamble, found = parts[0], parts[1:]
    sections = [found[i:i + 3] for i in range(0, len(found), 3)]
    links = "".join(f"<li><a href='#{key}'>{title}</a></li>" for key, title, _ in sections)
    blocks = "".join(f"<details open id='{key}'><summary><h2>{title}</h2></summary>"
                     f"{content}</details>" for key, title, content in sections)
    return f"{preamble}<nav class='as-toc'><b>Contents</b><ol>{links}</ol></nav>{blocks}"


def _gallery_patterns(table: HeadTable) -> list[str]:
    """The patterns some head shows clearly (best score above 0.3), and "broad"."""
    from attnscope.analysis.patterns import MASS_SCORES

    patterns = [p for p in MASS_SCORES if (b := table.best(p, 1)) and b[0][2] > 0.3]
    return [*patterns, "broad"]
