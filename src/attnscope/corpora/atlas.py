"""The head atlas: one self-contained page per corpus run, a map of every head and a section
for each.

The map is layers (rows) x heads (columns). Each cell is coloured by the head's importance
when the run stored it (``attnscope corpus --importance``), else by its strongest
head-pattern score, and labelled by its most frequent pattern label. Clicking a cell (or
opening ``#head-L-H``) shows that head's section: its scores and label shares, its positional
profile, its syntactic relations (CoNLL-U runs), its best examples (tokens shown as
:func:`attnscope.readable.token_label` writes them), its importance with the spread over
texts, and, for runs that kept a query/key sample (``attnscope corpus --embeddings N``), the
joint embedding of its queries and keys (:func:`attnscope.joint_embedding`, AttentionViz),
drawn when the section opens, coloured by kind or position, each point naming its token in
its sentence on hover. Everything is read from the store alone (no model is loaded); the page
carries its own style and script, and a Content-Security-Policy that forbids any request.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any
from urllib.parse import urlencode

import numpy as np

from attnscope.analysis.corpus import OFFSETS
from attnscope.analysis.patterns import LABELS, MASS_SCORES, SCORES
from attnscope.analysis.report import Report
from attnscope.corpora.result import CorpusResult, check_count
from attnscope.corpora.store import connect
from attnscope.errors import AttnscopeError
from attnscope.readable import token_label

__all__ = ["atlas"]

#: Short labels for the map's cells.
_SHORT = {"previous": "prev", "next": "next", "self": "self", "first": "first",
          "separator": "sep", "punctuation": "punct", "duplicate": "dup", "induction": "ind",
          "broad": "broad", "mixed": "mixed"}

_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src data:")

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1180px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:14px 0 4px}.muted{color:#666}
table.at{border-collapse:collapse;font-size:12px}table.at td,table.at th{padding:2px 6px;
border-bottom:1px solid #eee;text-align:right}table.at .l{text-align:left}
.at-layout{display:grid;grid-template-columns:auto minmax(0,1fr);gap:20px;align-items:start}
.at-map{border-collapse:separate;border-spacing:2px;font-size:11px}
.at-map th{font-weight:normal;color:#666;padding:0 3px}
.at-cell{width:46px;height:24px;border:1px solid #ccc;border-radius:3px;cursor:pointer;
font:11px system-ui,sans-serif;padding:0}
.at-cell[aria-pressed=true]{outline:2px solid #d33;outline-offset:1px}
.at-head{border:1px solid #ddd;border-radius:4px;padding:8px 12px}
.at-bars{display:flex;align-items:flex-end;gap:2px;height:60px}
.at-bars span{display:inline-block;width:14px;background:#4a78b5}
.at-offsets{display:flex;gap:2px;font-size:10px;color:#666}.at-offsets span{width:14px;
text-align:center}mark{background:#ffe08a;padding:0 1px}
.at-qk{position:relative}.at-qk svg{border:1px solid #ddd;background:#fff}
.at-tip{position:absolute;max-width:420px;background:#fffbe6;border:1px solid #ccb;
border-radius:3px;padding:4px 6px;font-size:12px;pointer-events:none}
.at-key-q{color:#2b7bba}.at-key-k{color:#d9603b}
"""

_SCRIPT = """
(function(){
const cells = document.querySelectorAll("button.at-cell");
function show(id) {
  const section = document.getElementById(id);
  if (!section || !section.classList.contains("at-head")) return;
  document.querySelectorAll("section.at-head").forEach(s => { s.hidden = s !== section; });
  cells.forEach(c => c.setAttribute("aria-pressed", String(c.dataset.target === id)));
  document.getElementById("at-empty").hidden = true;
  drawEmbedding(section);
}
const qkData = document.getElementById("at-qk-data");
const qk = qkData ? JSON.parse(qkData.textContent) : null;
const NS = "http://www.w3.org/2000/svg";
function positionColour(share) {
  const hue = 260 - 220 * share;  // violet (first token) to yellow-green (last)
  return "hsl(" + hue + ",70%,45%)";
}
function colour(kind, token, by) {
  if (by === "position") return positionColour(qk.tokens[token][4]);
  return kind === 0 ? "#2b7bba" : "#d9603b";
}
function paint(box) {
  const by = document.getElementById("at-qk-colour").value;
  box.querySelectorAll("circle").forEach(c => {
    c.setAttribute("fill", colour(Number(c.dataset.kind), Number(c.dataset.token), by));
  });
}
function drawEmbedding(section) {
  const box = section.querySelector(".at-qk");
  if (!box || !qk || box.dataset.drawn) return;
  box.dataset.drawn = "1";
  const raw = atob(qk.heads[section.dataset.layer + "-" + section.dataset.head]);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  const xy = new Uint16Array(bytes.buffer);  // (2N, 2): queries then keys, 0..65535
  const n = qk.tokens.length, size = 320, pad = 8;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", size); svg.setAttribute("height", size);
  svg.setAttribute("viewBox", "0 0 " + size + " " + size);
  for (let p = 0; p < 2 * n; p++) {
    const c = document.createElementNS(NS, "circle");
    c.setAttribute("cx", (pad + xy[2 * p] / 65535 * (size - 2 * pad)).toFixed(1));
    c.setAttribute("cy", (size - pad - xy[2 * p + 1] / 65535 * (size - 2 * pad)).toFixed(1));
    c.setAttribute("r", "2.6"); c.setAttribute("fill-opacity", "0.7");
    c.dataset.kind = p < n ? "0" : "1"; c.dataset.token = String(p % n);
    svg.appendChild(c);
  }
  const tip = document.createElement("div");
  tip.className = "at-tip"; tip.hidden = true;
  svg.addEventListener("mouseover", e => {
    const c = e.target.closest("circle");
    if (!c) return;
    const t = qk.tokens[Number(c.dataset.token)];
    tip.replaceChildren();
    const head = document.createElement("b");
    head.textContent = (c.dataset.kind === "0" ? "query " : "key ") + t[1];
    const where = document.createElement("span");
    where.className = "muted"; where.textContent = " (token " + t[5] + ")";
    const line = document.createElement("div"), mark = document.createElement("mark");
    mark.textContent = t[2];
    line.append(t[0], mark, t[3]);
    tip.append(head, where, line);
    tip.style.left = (Number(c.getAttribute("cx")) + 10) + "px";
    tip.style.top = (Number(c.getAttribute("cy")) + 10) + "px";
    tip.hidden = false;
  });
  svg.addEventListener("mouseout", () => { tip.hidden = true; });
  box.append(svg, tip);
  paint(box);
}
const picker = document.getElementById("at-qk-colour");
if (picker) picker.addEventListener("change", () => {
  document.querySelectorAll(".at-qk[data-drawn]").forEach(paint);
});
cells.forEach(c => c.addEventListener("click", () => {
  history.replaceState(null, "", "#" + c.dataset.target);
  show(c.dataset.target);
}));
window.addEventListener("hashchange", () => show(location.hash.slice(1)));
if (location.hash) show(location.hash.slice(1));
})();
"""


def _colour(share: float) -> tuple[str, str]:
    """Background and text colour for a value scaled to 0..1 (white to deep blue)."""
    if not np.isfinite(share):
        return "#f2f2f2", "#888"
    share = float(min(max(share, 0.0), 1.0))
    low, high = np.array([247, 251, 255]), np.array([8, 48, 107])
    r, g, b = (low + (high - low) * share).round().astype(int)
    return f"#{r:02x}{g:02x}{b:02x}", ("#fff" if share > 0.55 else "#222")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "\u2013"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f"<th class={'l' if i < left else 'r'}>{html.escape(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class={'l' if i < left else 'r'}>{_fmt(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table class=at><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def atlas(store: Any, *, run: str | None = None, examples: int = 3,
          view_links: bool = False) -> Report:
    """The head atlas of a corpus run (see the module docstring).

    Args:
        store: a :class:`CorpusResult`, or the path of a store from :func:`attnscope.corpus`.
        run: the run to read when ``store`` is a path (default: its latest run).
        examples: best examples shown per head (those the store keeps, up to this many).
        view_links: link each example to the head view of its text at that layer and head in
            the explorer that serves the page (``attnscope serve --corpus`` with the run's
            model); False (a page on its own) says that the views need the model.

    Returns:
        A :class:`~attnscope.analysis.report.Report`: ``save("atlas.html")`` writes the page.
    """
    check_count("examples", examples, 0)
    result = store if isinstance(store, CorpusResult) else CorpusResult(store, run, latest=True)
    if result.num_texts == 0:
        raise AttnscopeError(f"Run {result.run_id!r} has no texts yet; nothing to draw.")
    # one connection for every read below: opening one costs more than the reads
    opened_here = result._con is None
    if opened_here:
        result._con = connect(result.path, read_only=True)
    try:
        return _atlas_page(result, examples, view_links)
    finally:
        if opened_here:
            result._con.close()
            result._con = None


def _stat_arrays(result: CorpusResult) -> dict[str, np.ndarray]:
    """Every statistic's mean over texts, float64 ``[L, H]`` each (NaN where no text gave one),
    from one query."""
    frame = result._query("SELECT layer, head, stat, sum / n AS mean FROM head_stats "
                          "WHERE run_id = ? AND n > 0", [result.run_id])
    shape = (result.num_layers, result.num_heads)
    out: dict[str, np.ndarray] = {}
    for stat, rows in frame.groupby("stat"):
        array = np.full(shape, np.nan)
        array[rows["layer"].to_numpy(), rows["head"].to_numpy()] = rows["mean"].to_numpy(
            dtype=np.float64)
        out[str(stat)] = array
    return out


def _atlas_page(result: CorpusResult, examples: int, view_links: bool = False) -> Report:
    esc = html.escape
    L, H = result.num_layers, result.num_heads
    arrays = _stat_arrays(result)
    empty = np.full((L, H), np.nan)
    stats = {name: arrays.get(name, empty) for name in (*SCORES, "entropy")}
    shares = np.stack([arrays.get(f"label:{name}", empty) for name in LABELS], -1)  # [L, H, K]
    profile = np.stack([arrays.get(f"offset:{o:+d}", empty) for o in OFFSETS], -1)  # [L, H, 17]
    importance = result.importance() if result.has_importance() else None

    # the head's label: its most frequent one (the first in LABELS order on a tie)
    labels = np.full((L, H), "", dtype=object)
    known = ~np.isnan(shares).all(-1)
    top = np.argmax(np.nan_to_num(shares, nan=-1.0), axis=-1)
    labels[known] = np.array(LABELS, dtype=object)[top[known]]
    # the shares of attention mass compete for a label; distance and sink are other units
    score_stack = np.stack([stats[s] for s in MASS_SCORES], axis=-1)  # [L, H, S]
    with np.errstate(all="ignore"):
        strongest = np.where(np.isnan(score_stack).all(-1), np.nan,
                             np.nanmax(np.where(np.isnan(score_stack), -np.inf, score_stack),
                                       axis=-1))
    if importance is not None:
        colour_by = importance.values
        what = (f"importance ({esc(importance.method)}, mean over {importance.texts} texts)")
    else:
        colour_by = strongest
        what = "strongest head-pattern score (the run stored no importance)"
    finite = colour_by[np.isfinite(colour_by)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = (colour_by - low) / (high - low) if high > low else np.zeros_like(colour_by)

    # the map
    rows = ["<tr><th></th>" + "".join(f"<th>{h}</th>" for h in range(H)) + "</tr>"]
    for layer in range(L):
        cells = []
        for head in range(H):
            back, fore = _colour(float(scale[layer, head]))
            label = labels[layer, head]
            value = colour_by[layer, head]
            title = (f"layer {layer}, head {head}: {label or 'no label'}; "
                     f"{'importance' if importance is not None else 'strongest score'} "
                     f"{_fmt(float(value))}")
            cells.append(
                f"<td><button type=button class=at-cell data-layer={layer} data-head={head} "
                f"data-target=head-{layer}-{head} aria-pressed=false title='{esc(title)}' "
                f"style='background:{back};color:{fore}'>{esc(_SHORT.get(label, label[:5]))}"
                "</button></td>")
        rows.append(f"<tr><th>{layer}</th>{''.join(cells)}</tr>")
    legend = (f"<p class=muted>Rows: layers; columns: heads. Colour: {what}, from "
              f"{_fmt(low)} (white) to {_fmt(high)} (blue). Text: the head's most frequent "
              "pattern label. Click a head.</p>")
    the_map = f"<table class=at-map>{''.join(rows)}</table>"

    # evidence for every head, read once
    best = result._query(
        "SELECT e.layer, e.head, e.value, e.query_pos, e.key_pos, e.query_token, e.key_token, "
        "t.position, t.text, t.text_b FROM examples e JOIN texts t USING (run_id, text_key) "
        "WHERE e.run_id = ? AND e.kind = 'weight' ORDER BY e.layer, e.head, e.value DESC, "
        "e.text_key", [result.run_id])
    by_head: dict[tuple[int, int], list[Any]] = {}
    for r in best.itertuples(index=False):
        by_head.setdefault((int(r.layer), int(r.head)), []).append(r)
    relations = result._query(
        "SELECT layer, head, relation, direction, n, hits / n AS accuracy FROM relations "
        "WHERE run_id = ? AND n > 0 ORDER BY layer, head, accuracy DESC, relation",
        [result.run_id])
    rel_by_head: dict[tuple[int, int], list[Any]] = {}
    for r in relations.itertuples(index=False):
        rel_by_head.setdefault((int(r.layer), int(r.head)), []).append(r)

    qk_data, qk_note = _qk_payload(result)
    sections = []
    for layer in range(L):
        for head in range(H):
            sections.append(_head_section(result, layer, head, labels[layer, head], stats,
                                          shares[layer, head], profile[layer, head],
                                          importance, by_head.get((layer, head), [])[:examples],
                                          rel_by_head.get((layer, head), []), qk_note,
                                          view_links))
    picker = ("<p><label>Colour the query/key points by <select id=at-qk-colour>"
              "<option value=kind>query or key</option><option value=position>position in "
              "the text (violet: first token, green: last)</option></select></label></p>"
              if qk_data else "")
    title = f"attnscope head atlas: {result.model_name}"
    body = (f"<h1>{esc(title)}</h1><p>Run <code>{esc(result.run_id)}</code> over "
            f"<code>{esc(result.source)}</code>: {result.num_texts} texts, {L} layers x {H} "
            f"heads.</p>{legend}{picker}<div class=at-layout><div>{the_map}</div><div>"
            "<p id=at-empty class=muted>Click a head on the map to see what it does and "
            f"whether it matters.</p>{''.join(sections)}</div></div>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n"
            f"{qk_data}<script>{_SCRIPT}</script>\n</body></html>\n")
    return Report(page, title)


#: Characters of the sentence shown on each side of a hovered token.
_CONTEXT_CHARS = 80


def _qk_payload(result: CorpusResult) -> tuple[str, str]:
    """The page's query/key data (a JSON script block; empty when the run kept no sample)
    and the note each head section shows above its scatter.

    The JSON holds ``tokens``: per sampled token [sentence before it, its label, the token's
    text, sentence after it, relative position 0..1, token position], and ``heads``: per
    ``"L-H"`` the base64 of uint16 ``[2N, 2]``, the joint embedding's points (queries first)
    scaled to 0..65535 in each axis.
    """
    if not result.has_qk_sample():
        return "", ""
    from attnscope.analysis.embeddings import joint_embedding

    sample = result.qk_sample()
    tokens = []
    for r in sample.tokens.itertuples(index=False):
        text = r.text if r.segment == 0 or r.text_b is None else r.text_b
        start, end = int(r.char_start), int(r.char_end)
        before = text[max(0, start - _CONTEXT_CHARS):start]
        after = text[end:end + _CONTEXT_CHARS]
        before = ("\u2026" if start > _CONTEXT_CHARS else "") + before
        after += "\u2026" if end + _CONTEXT_CHARS < len(text) else ""
        share = int(r.token_pos) / max(int(r.n_tokens) - 1, 1)
        tokens.append([before, token_label(r.token), text[start:end], after, round(share, 4),
                       int(r.token_pos)])
    heads = {}
    for layer in range(result.num_layers):
        for head in range(result.num_heads):
            points = joint_embedding(sample.queries[:, layer, head],
                                     sample.keys[:, layer, head]).points  # (2N, 2)
            low, high = points.min(axis=0), points.max(axis=0)
            span = np.where(high > low, high - low, 1.0)
            scaled = np.round((points - low) / span * 65535).astype("<u2")
            heads[f"{layer}-{head}"] = base64.b64encode(scaled.tobytes()).decode("ascii")
    # "<" written as \u003c: no text in the data can close the script block
    data = json.dumps({"tokens": tokens, "heads": heads}, ensure_ascii=False).replace(
        "<", "\\u003c")
    n = len(tokens)
    note = (f"<p class=muted>The queries (<b class=at-key-q>\u25cf</b>) and keys "
            f"(<b class=at-key-k>\u25cf</b>) of {n} tokens sampled over the corpus, projected "
            "together (keys scaled and shifted so both clouds share a mean and a mean norm, "
            "which changes no attention weight; then PCA). Hover a point for its token in its "
            "sentence.</p>")
    return f"<script type=application/json id=at-qk-data>{data}</script>\n", note


def _head_section(result: CorpusResult, layer: int, head: int, label: str,
                  stats: dict[str, np.ndarray], shares: np.ndarray, profile: np.ndarray,
                  importance: Any, examples: list[Any], relations: list[Any],
                  qk_note: str = "", view_links: bool = False) -> str:
    """One head's section: shares ``[len(LABELS)]``, profile ``[len(OFFSETS)]``."""
    esc = html.escape
    parts = [f"<h2>Layer {layer}, head {head}: {esc(label or 'no label')}</h2>"]
    if importance is not None:
        parts.append(
            f"<p class=at-importance>Importance ({esc(importance.method)}): "
            f"<b>{_fmt(float(importance.values[layer, head]))}</b> \u00b1 "
            f"{_fmt(float(importance.spread[layer, head]))} (spread over "
            f"{importance.texts} texts); rank {_rank(importance.values, layer, head)} of "
            f"{importance.values.size}.</p>")
    score_rows = [[name, float(stats[name][layer, head])] for name in (*SCORES, "entropy")]
    label_rows = [[name, float(share)] for name, share in zip(LABELS, shares, strict=True)
                  if np.isfinite(share) and share > 0]
    parts.append("<h3>Scores</h3><div class=at-scores>" + _table(["score", "mean"], score_rows)
                 + "</div>")
    if label_rows:
        parts.append("<h3>Labels</h3>" + _table(["label", "share of texts"], label_rows))
    if np.isfinite(profile).any():
        top = float(np.nanmax(profile)) or 1.0
        bars = "".join(
            f"<span title='offset {o:+d}: {_fmt(float(v))}' style='height:"
            f"{0 if not np.isfinite(v) else max(1, round(56 * float(v) / top))}px'></span>"
            for o, v in zip(OFFSETS, profile, strict=True))
        ticks = "".join(f"<span>{o:+d}</span>" for o in OFFSETS)
        parts.append("<h3>Positional profile</h3><p class=muted>Mean weight by key offset from "
                     f"the query.</p><div class=at-bars>{bars}</div><div class=at-offsets>"
                     f"{ticks}</div>")
    if relations:
        parts.append("<h3>Syntactic relations</h3>" + _table(
            ["relation", "direction", "arcs", "accuracy"],
            [[r.relation, r.direction, int(r.n), float(r.accuracy)] for r in relations[:8]],
            left=2))
    if examples:
        items = []
        for r in examples:
            pair = f"{esc(token_label(r.query_token))} \u2192 {esc(token_label(r.key_token))}"
            link = ""
            if view_links:
                query = {"text": r.text, "model": result.model_name, "layer": layer,
                         "head": head}
                if isinstance(r.text_b, str):
                    query["text_b"] = r.text_b
                link = (f" <a class=at-view target=_top href='/?{esc(urlencode(query))}'>"
                        "head view</a>")
            items.append(f"<li><b>{r.value:.3f}</b> <span class=at-pair>{pair}</span> "
                         f"<span class=muted>({result.source_unit} {int(r.position)})</span>"
                         f"{link}<br><small>{esc(r.text)}</small></li>")
        views = ("Each opens its text's head view on this layer and head." if view_links else
                 f"Their head views need the model: open the store with <code>attnscope serve "
                 f"--corpus STORE --model {esc(result.model_name)}</code>, or run "
                 "<code>attnscope corpus-report</code>.")
        parts.append("<h3>Best examples</h3><p class=muted>The strongest single weight between "
                     f"two words (query \u2192 key). {views}</p><ol>{''.join(items)}</ol>")
    if qk_note:
        parts.append(f"<h3>Queries and keys</h3>{qk_note}<div class=at-qk></div>")
    return (f"<section class=at-head id=head-{layer}-{head} data-layer={layer} "
            f"data-head={head} hidden>{''.join(parts)}</section>")


def _rank(values: np.ndarray, layer: int, head: int) -> int:
    """1 for the most important head."""
    return int((values > values[layer, head]).sum()) + 1
