"""One self-contained HTML page about one Trace: tokens, interactive views, what each head
does, rollout and flow, norm-based attention, layer trends and embedding PCA.

Every figure is an inline base64 PNG, the interactive views carry their own script and style
(from :mod:`attnscope.render.views`), every token and text is HTML-escaped, and the page makes
no network request.
"""

from __future__ import annotations

import base64
import html
import io
import os
import warnings
from pathlib import Path

import numpy as np

from attnscope.errors import AttnscopeError
from attnscope.files import write_text
from attnscope.trace import Trace

__all__ = ["Report", "report"]

#: Above this many tokens the report computes flow for the default output token only (T max
#: flows instead of T*T), and above ``ONE_FLOW_TOKENS`` not at all, to stay quick.
FULL_FLOW_TOKENS = 64
ONE_FLOW_TOKENS = 256

_STYLE = """
body.attnscope-report{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
  max-width:1200px;margin:0 auto;padding:16px 24px;color:#222}
.attnscope-report h1{font-size:1.5em}.attnscope-report h2{margin-top:2em;border-bottom:1px solid
  #ddd;padding-bottom:4px}.attnscope-report img{max-width:100%;height:auto;display:block;
  margin:8px 0}.attnscope-report table{border-collapse:collapse;font-size:12px}
.attnscope-report td,.attnscope-report th{border:1px solid #ddd;padding:2px 6px;text-align:right}
.attnscope-report .scroll{max-height:420px;overflow:auto}.attnscope-report .note{color:#666}
.attnscope-report code{background:#f4f4f4;padding:0 3px}
"""


def _png(fig) -> str:
    """A figure as an ``<img>`` with its PNG inline (base64)."""
    from attnscope.render.static import _quiet_glyph_warnings

    buffer = io.BytesIO()
    with _quiet_glyph_warnings():
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _tokens_table(trace: Trace) -> str:
    head = "<tr><th>pos</th><th>token</th><th>special</th><th>segment</th><th>word</th></tr>"
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(tok)}</td>"
        f"<td>{'yes' if trace.special_mask[i] else ''}</td>"
        f"<td>{int(trace.segment_ids[i]) if trace.segment_ids[i] >= 0 else ''}</td>"
        f"<td>{int(trace.word_ids[i]) if trace.word_ids[i] >= 0 else ''}</td></tr>"
        for i, tok in enumerate(trace.tokens)
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


def report(trace: Trace, model=None, *, output: int | None = None,
           views: bool = True) -> Report:
    """Build the report page of ``trace``.

    Args:
        trace: from :func:`attnscope.capture` (tokens or merged words).
        model: the LoadedModel it came from; needed for norm-based attention (without it that
            section says so).
        output: the output token whose rollout and flow relevance is charted (default: the
            first token, [CLS], for encoders; the last token for causal models).
        views: embed the interactive head and model views.

    Returns:
        A :class:`Report`; ``report(trace).save("report.html")`` writes it.
    """
    from attnscope.analysis.figures import attention_graph
    from attnscope.analysis.flow import attention_flow, attention_rollout, default_output
    from attnscope.analysis.layers import layer_trends
    from attnscope.analysis.patterns import head_patterns
    from attnscope.errors import check_index

    if not isinstance(trace, Trace):
        raise AttnscopeError(f"A report needs a Trace from attnscope.capture, not "
                             f"{type(trace).__name__}.")
    trace.check()
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
        from attnscope.render.views import head_view, model_view

        sections.append(head_view(trace).fragment())
        sections.append(model_view(trace).fragment())
    else:
        sections.append("<p class='note'>Interactive views left out.</p>")

    table = head_patterns(trace)
    sections.append(
        "<h2 id='heads'>What each head does</h2>"
        "<p class='note'>Scores are shares of attention (see attnscope.analysis.patterns); "
        "label: the best pattern reaching 0.4; class: Kovaleva et al. (2019).</p>"
        + _png(table.label_map())
        + _png(table.gallery(trace))
        + f'<div class="scroll">{table._repr_html_()}</div>'
    )

    rollout = attention_rollout(trace)
    flow_note = ""
    if trace.num_tokens <= FULL_FLOW_TOKENS:
        flow = attention_flow(trace)
        flow_figs = _png(flow.figure()) + _png(flow.bar(output))
    elif trace.num_tokens <= ONE_FLOW_TOKENS:
        flow = attention_flow(trace, output)
        flow_figs = _png(flow.bar(output))
        flow_note = (f"<p class='note'>{trace.num_tokens} {trace.unit}s: flow computed for "
                     f"output {output} only.</p>")
    else:
        flow_figs = ""
        flow_note = (f"<p class='note'>{trace.num_tokens} {trace.unit}s: flow left out (it "
                     f"takes about a minute here); run attnscope.attention_flow(trace, "
                     f"output={output}) for it.</p>")
    sections.append(
        "<h2 id='rollout'>Attention rollout and flow</h2>"
        "<p class='note'>Abnar &amp; Zuidema (2020): residual-augmented attention "
        "0.5·A + 0.5·I, heads averaged; rollout multiplies through the layers, flow is the "
        f"maximum flow through the layered graph. Output token: {esc(trace.tokens[output])} "
        f"({output}).</p>"
        + _png(rollout.figure()) + _png(rollout.bar(output)) + flow_note + flow_figs
        + _png(attention_graph(trace, -1, None, threshold=0.1))
    )

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
            sections.append(_png(norms.figure(-1)))

    trends = layer_trends(trace)
    sections.append("<h2 id='layers'>Layer trends</h2>" + _png(trends.figure())
                    + trends._repr_html_())

    sections.append("<h2 id='pca'>Hidden states in two dimensions (PCA)</h2>")
    try:
        from attnscope.analysis.embeddings import pca, token_path

        word = int(np.flatnonzero(~np.asarray(trace.special_mask, dtype=bool))[0])
        sections.append(_png(pca(trace, 0).figure()) + _png(pca(trace, -1).figure())
                        + _png(token_path(trace, word).figure(path=True)))
    except AttnscopeError as err:
        sections.append(f"<p class='note'>{esc(str(err))}</p>")

    body = "\n".join(sections)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n"
                f"<body class=\"attnscope-report attnscope-page\">\n{body}\n</body></html>\n")
    return Report(page, title)
