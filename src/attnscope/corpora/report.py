"""The corpus page: one self-contained HTML file from a corpus store.

It shows the run, the head table (label and mean of every score), the layer plots of Clark et
al. (2019, Fig. 1-2: attention to [CLS], [SEP], punctuation and the token itself, entropy and
distance, one dot per head), the positional profile, the syntactic-relation table when the
corpus was CoNLL-U, and the best examples of every head. Each example opens the head view of
its text on that layer and head: the texts are captured again with the run's model and carried
in the page with one copy of the view script (:func:`attnscope.render.html.build_view_library`),
so the page makes no network request.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np

from attnscope.analysis.patterns import SCORES
from attnscope.analysis.report import Report
from attnscope.corpora.result import CorpusResult, check_count
from attnscope.errors import AttnscopeError
from attnscope.readable import token_label
from attnscope.tokens import TruncationWarning

__all__ = ["corpus_report"]

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1180px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table.cr{border-collapse:collapse;font-size:12px}table.cr td,table.cr th{padding:2px 6px;
border-bottom:1px solid #eee;text-align:right}table.cr td.l,table.cr th.l{text-align:left}
.scroll{max-height:520px;overflow:auto}.muted{color:#777}img{max-width:100%}
details{margin:2px 0}summary{cursor:pointer}mark{background:#ffe08a;padding:0 1px}
#cr-viewer{position:sticky;top:0;background:#fff;border:1px solid #ccc;border-radius:4px;
padding:6px;margin:8px 0;min-height:40px}.cr-layout{display:grid;
grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px;align-items:start}
"""

_GLUE = """
(function(){
const viewer = document.getElementById("cr-viewer");
function open(key, layer, head) {
  const root = document.createElement("div");
  root.className = "attnscope-root";
  root.dataset.view = key;
  root.dataset.layer = String(layer);
  root.dataset.heads = JSON.stringify([head]);
  const note = document.createElement("div");
  note.className = "cr-note muted";
  note.textContent = "Layer " + layer + ", head " + head;
  viewer.replaceChildren(note, root);
  root.dispatchEvent(new CustomEvent("attnscope:mount", {bubbles: true}));
}
function fromHash() {
  const m = /^#view-([0-9a-f]+)-([0-9]+)-([0-9]+)$/.exec(location.hash);
  if (m) open(m[1], Number(m[2]), Number(m[3]));
}
window.addEventListener("hashchange", fromHash);
fromHash();
})();
"""



def _png(fig) -> str:
    """A matplotlib figure as an ``<img>`` with its PNG inline (base64)."""
    import base64
    import io

    from attnscope.render.static import _quiet_glyph_warnings

    buffer = io.BytesIO()
    with _quiet_glyph_warnings():
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]], left: AbstractSet[int] = frozenset()) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        text = value if isinstance(value, str) and value.startswith("<") else html.escape(
            _fmt(value))
        return f"<{tag}{' class=l' if i in left else ''}>{text}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f'<table class="cr"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "-" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def _layer_figure(result: CorpusResult):
    """Clark et al. Fig. 1-2 style: per layer, one dot per head, the layer mean as a line."""
    from attnscope.render.static import AttnFigure

    panels = [("first", "attention to [CLS] / first token"), ("separator", "attention to [SEP]"),
              ("punctuation", "attention to punctuation"), ("self", "attention to itself"),
              ("entropy", "entropy (nats)"), ("distance", "mean distance (tokens)")]
    fig = AttnFigure(figsize=(12, 6.4), layout="constrained")
    axes = fig.subplots(2, 3)
    layers = np.arange(result.num_layers)
    # at most about 8 labelled layers a panel, so the labels of a deep model never overlap
    ticks = layers[::max(1, -(-len(layers) // 8))]
    for ax, (stat, title) in zip(axes.ravel(), panels, strict=True):
        values = result.array(stat)  # (L, H)
        ax.set_title(title, fontsize=10)
        defined = np.isfinite(values)
        if not defined.any():  # e.g. attention to [SEP] in a model that has no [SEP]
            ax.text(0.5, 0.5, "not applicable:\nno text of this run gave a value",
                    ha="center", va="center", transform=ax.transAxes, color="#777",
                    fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for layer in layers:
            ax.scatter(np.full(result.num_heads, layer), values[layer], s=12, alpha=0.6,
                       color="#4e79a7")
        # the layer mean over the heads that gave a value (a layer with none is left out)
        counts = defined.sum(axis=1)
        means = np.where(defined, values, 0.0).sum(axis=1) / np.maximum(counts, 1)
        ax.plot(layers[counts > 0], means[counts > 0], color="#e15759", lw=1.5)
        ax.set_xlabel("layer", fontsize=9)
        ax.set_xticks(ticks)
    fig.suptitle(f"{result.model_name}: {result.num_texts} texts", fontsize=11)
    return fig


def _profile_figure(result: CorpusResult):
    from attnscope.render.static import AttnFigure

    profile = result.profile()  # (L, H, 17)
    rows = profile.reshape(-1, profile.shape[-1])
    fig = AttnFigure(figsize=(6, max(3.0, 0.09 * rows.shape[0] + 1)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(rows, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(profile.shape[-1]), [f"{o:+d}" for o in range(-8, 9)], fontsize=7)
    ticks = range(0, rows.shape[0], result.num_heads)
    ax.set_yticks(list(ticks), [f"layer {i // result.num_heads}" for i in ticks], fontsize=7)
    ax.set_xlabel("key position - query position")
    ax.set_title("positional profile: mean weight by offset (rows: heads)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.6)
    return fig


def _highlight(text: str, tokens: list[str], query: int, key: int) -> str:
    """The example's tokens, the query and key token marked."""
    shown = []
    for i, tok in enumerate(tokens):
        word = html.escape(tok)
        shown.append(f"<mark>{word}</mark>" if i in (query, key) else word)
    return " ".join(shown)


def corpus_report(result: CorpusResult, *, model: Any = None, examples: int = 3,
                  views: bool = True) -> Report:
    """Build the corpus page of ``result`` (see the module docstring).

    Args:
        result: a :class:`CorpusResult`.
        model: the model to capture example texts with (default: the run's model).
        examples: examples per head on the page.
        views: carry each example's head view (needs the model); False lists the examples
            without views.
    """
    from attnscope.render import html as page_html

    check_count("examples", examples, 0)
    if result.num_texts == 0:
        raise AttnscopeError(f"Run {result.run_id!r} has no texts yet; nothing to report.")
    esc = html.escape
    scores = result.scores()
    sections = [
        f"<h1>attnscope corpus: {esc(result.model_name)}</h1>",
        f"<p>Run <code>{esc(result.run_id)}</code> over <code>{esc(result.source)}</code>: "
        f"{result.num_texts} texts, {result.num_tokens} tokens, {len(result.problems())} "
        "records skipped, repeated or cut (see the <code>problems</code> table).</p>",
    ]

    header = ["layer", "head", "label", "share", *SCORES, "entropy"]
    rows = [[int(r.layer), int(r.head), r.label, float(r.label_share),
             *[float(getattr(r, s)) for s in (*SCORES, "entropy")]]
            for r in scores.itertuples(index=False)]
    sections.append("<h2 id='heads'>What each head does</h2><p class=muted>Mean over texts of "
                    "each head-pattern score; label: the head's most frequent label, with the "
                    "share of texts that gave it.</p>"
                    f"<div class=scroll>{_table(header, rows, {2})}</div>")
    sections.append("<h2 id='layers'>Layer by layer</h2>" + _png(_layer_figure(result)))
    sections.append("<h2 id='profile'>Positional profile</h2>" + _png(_profile_figure(result)))

    relations = result.relations()
    if len(relations):
        rel_rows = [[r.relation, r.direction, int(r.n), f"{int(r.layer)}.{int(r.head)}",
                     float(r.accuracy), f"{int(r.baseline_offset):+d}",
                     float(r.baseline_accuracy)] for r in relations.itertuples(index=False)]
        sections.append(
            "<h2 id='relations'>Syntactic heads</h2><p class=muted>For each relation, the head "
            "whose most-attended word is most often the other end of the arc (sub-words merged "
            "into the treebank's words), beside the best fixed-offset baseline.</p>"
            + _table(["relation", "direction", "arcs", "best head", "accuracy",
                      "baseline offset", "baseline accuracy"], rel_rows, {0, 1}))

    # Examples: every head's best texts by single strongest weight.
    frames = {(layer, head): result.examples(layer, head, k=examples)
              for layer in range(result.num_layers) for head in range(result.num_heads)}
    payloads: dict[str, Any] = {}
    if views:
        payloads = _view_payloads(result, frames, model)
    labels = {(int(r.layer), int(r.head)): r.label for r in scores.itertuples(index=False)}
    blocks = []
    for (layer, head), frame in frames.items():
        label = labels.get((layer, head), "")
        items = []
        for r in frame.itertuples(index=False):
            tokens = payloads.get(r.text_key, {}).get("tokens", {}).get("self")
            shown = (_highlight(r.text, tokens, r.query_pos, r.key_pos) if tokens
                     else esc(r.text))
            link = (f' <a class="cr-open" href="#view-{r.text_key}-{layer}-{head}">head view</a>'
                    if r.text_key in payloads else "")
            pair = f"{esc(token_label(r.query_token))} \u2192 {esc(token_label(r.key_token))}"
            items.append(f"<li><b>{r.value:.3f}</b> {pair} <span class=muted>("
                         f"{result.source_unit} {int(r.position)})</span>{link}<br>"
                         f"<small>{shown}</small></li>")
        blocks.append(f"<details class='cr-head' data-layer={layer} data-head={head}>"
                      f"<summary>layer {layer}, head {head}: {esc(label)}</summary>"
                      f"<ol>{''.join(items)}</ol></details>")
    viewer = ("<div id='cr-viewer'><span class=muted>Open an example's head view.</span></div>"
              if payloads else "")
    sections.append("<h2 id='examples'>Examples</h2><p class=muted>Per head, the texts with "
                    "the strongest single weight between two words (query \u2192 key).</p>"
                    f"<div class=cr-layout><div>{''.join(blocks)}</div><div>{viewer}</div>"
                    "</div>")
    library = page_html.build_view_library(payloads) if payloads else ""
    glue = f"<script>{_GLUE}</script>" if payloads else ""
    title = f"attnscope corpus: {result.model_name}"
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(sections) + f"\n{library}\n{glue}\n</body></html>\n")
    return Report(page, title)


def _view_payloads(result: CorpusResult, frames, model: Any) -> dict[str, Any]:
    """Head-view payloads of every example text, keyed by text key (captured in batches)."""
    from attnscope.capture import iter_capture
    from attnscope.render.views import AttnView

    texts: dict[str, tuple[str, str | None]] = {}
    for frame in frames.values():
        for r in frame.itertuples(index=False):
            texts.setdefault(r.text_key, (r.text, r.text_b if isinstance(r.text_b, str)
                                          else None))
    if not texts:
        return {}
    loaded = result._model(model)
    keys = list(texts)
    pairs = [texts[k] for k in keys]
    payloads = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # the run already reported it
        traces = iter_capture(loaded, [a for a, _ in pairs], [b for _, b in pairs],
                              batch_size=8, attention="eager")
        for key, trace in zip(keys, traces, strict=True):
            payloads[key] = AttnView(trace, ["head"]).payload()
    return payloads
