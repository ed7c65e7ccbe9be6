// attnscope report charts: heatmaps, bars, line panels, scatter plots and attention arcs,
// drawn on canvas from the data the page carries (no library, no network request).
// Every chart shows the value under the pointer. Text goes in with textContent only.
"use strict";

// The views' light-theme weight stops (render/static.py WEIGHT_STOPS), so charts and views read alike.
const BLUES = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
const INK = "#222", GRID = "#ccc", FONT = "11px system-ui, -apple-system, Segoe UI, sans-serif";

function blues(t) {  // t in [0, 1] -> "rgb(...)", white to dark blue
  t = Math.min(1, Math.max(0, t || 0)) * (BLUES.length - 1);
  const i = Math.min(BLUES.length - 2, Math.floor(t)), f = t - i;
  const c = BLUES[i].map((v, k) => Math.round(v + f * (BLUES[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function float16(b64) {  // base64 little-endian float16 -> Float32Array
  const bytes = Uint8Array.from(atob(b64), ch => ch.charCodeAt(0));
  const view = new DataView(bytes.buffer), out = new Float32Array(bytes.length / 2);
  for (let i = 0; i < out.length; i++) {
    const h = view.getUint16(2 * i, true), e = (h >> 10) & 31, m = h & 1023;
    const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : (1 + m / 1024) * 2 ** (e - 15);
    out[i] = h & 0x8000 ? -v : v;
  }
  return out;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3); }

function short(tok) { return tok.length > 16 ? tok.slice(0, 15) + "\u2026" : tok; }

// A canvas of CSS size w x h, sharp on high-density screens; returns [canvas, ctx].
function surface(holder, w, h) {
  const canvas = el("canvas"), ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
  canvas.style.width = w + "px"; canvas.style.height = h + "px";
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio); ctx.font = FONT; ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
  holder.appendChild(canvas);
  return [canvas, ctx];
}

// Pointer position inside a canvas (CSS pixels), and a tooltip that follows it.
function hover(canvas, tip, lookup) {
  canvas.addEventListener("mousemove", ev => {
    const box = canvas.getBoundingClientRect(), text = lookup(ev.clientX - box.left, ev.clientY - box.top);
    tip.textContent = text || "";
    tip.style.visibility = text ? "visible" : "hidden";
    tip.style.left = (ev.clientX - box.left + canvas.offsetLeft + 14) + "px";
    tip.style.top = (ev.clientY - box.top + canvas.offsetTop + 10) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tip.style.visibility = "hidden"; });
}

function textWidth(ctx, labels) { return Math.max(0, ...labels.map(s => ctx.measureText(short(s)).width)); }

function colorbar(ctx, x, y, h, vmin, vmax, label) {
  for (let i = 0; i < h; i++) { ctx.fillStyle = blues(1 - i / (h - 1)); ctx.fillRect(x, y + i, 12, 1); }
  ctx.strokeStyle = GRID; ctx.strokeRect(x + 0.5, y + 0.5, 12, h);
  ctx.fillStyle = INK; ctx.textAlign = "left"; ctx.textBaseline = "middle";
  for (let k = 0; k <= 4; k++) ctx.fillText(fmt(vmax - k * (vmax - vmin) / 4), x + 16, y + k * h / 4);
  if (label) {
    ctx.save(); ctx.translate(x + 58, y + h / 2); ctx.rotate(Math.PI / 2);
    ctx.textAlign = "center"; ctx.fillText(label, 0, 0); ctx.restore();
  }
}

function heatmap(holder, tip, c) {
  const values = float16(c.values), [n, m] = c.shape, compact = !!c.compact;
  const probe = document.createElement("canvas").getContext("2d"); probe.font = FONT;
  const labelled = !compact || Math.max(n, m) <= 24;
  const left = labelled ? textWidth(probe, c.rows) + 24 : 8, bottom = labelled ? textWidth(probe, c.cols) + 24 : 8;
  const room = compact ? 260 : 560, cell = Math.max(2, Math.min(compact ? 14 : 26, Math.floor(room / Math.max(n, m))));
  const w = left + cell * m + (compact ? 12 : 90), h = 8 + cell * n + bottom;
  const [canvas, ctx] = surface(holder, w, h);
  const vmax = c.vmax > c.vmin ? c.vmax : c.vmin + 1e-9;
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
    ctx.fillStyle = blues((values[i * m + j] - c.vmin) / (vmax - c.vmin));
    ctx.fillRect(left + j * cell, 8 + i * cell, cell, cell);
  }
  ctx.strokeStyle = GRID; ctx.strokeRect(left - 0.5, 7.5, cell * m + 1, cell * n + 1);
  if (labelled) {
    const step = Math.max(1, Math.ceil(Math.max(n, m) * 12 / (cell * Math.max(n, m))));
    ctx.fillStyle = INK; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let i = 0; i < n; i += step) ctx.fillText(short(c.rows[i]), left - 4, 8 + (i + 0.5) * cell);
    for (let j = 0; j < m; j += step) {
      ctx.save(); ctx.translate(left + (j + 0.5) * cell, 12 + cell * n); ctx.rotate(-Math.PI / 2);
      ctx.fillText(short(c.cols[j]), 0, 0); ctx.restore();
    }
  }
  if (!compact) colorbar(ctx, left + cell * m + 14, 8, Math.min(cell * n, 240), c.vmin, vmax, c.bar);
  hover(canvas, tip, (x, y) => {
    const j = Math.floor((x - left) / cell), i = Math.floor((y - 8) / cell);
    if (i < 0 || j < 0 || i >= n || j >= m) return null;
    return `${c.ylabel} ${c.rows[i]} (${i}) \u2192 ${c.xlabel} ${c.cols[j]} (${j}): ${fmt(values[i * m + j])}`;
  });
}

function bars(holder, tip, c) {
  const n = c.values.length, probe = document.createElement("canvas").getContext("2d");
  probe.font = FONT;
  const slot = Math.max(4, Math.min(28, Math.floor(900 / n))), left = 48, top = 10;
  const bottom = textWidth(probe, c.labels) + 16, plotH = 160, w = left + slot * n + 16;
  const [canvas, ctx] = surface(holder, w, top + plotH + bottom);
  const vmax = Math.max(...c.values, 1e-9);
  ctx.strokeStyle = GRID; ctx.fillStyle = INK; ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (let k = 0; k <= 4; k++) {
    const y = top + plotH - k * plotH / 4;
    ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + slot * n, y + 0.5); ctx.stroke();
    ctx.fillText(fmt(k * vmax / 4), left - 4, y);
  }
  c.values.forEach((v, j) => {
    ctx.fillStyle = j === c.highlight ? "#c0392b" : "#2171b5";
    const hgt = v / vmax * plotH;
    ctx.fillRect(left + j * slot + 1, top + plotH - hgt, slot - 2, hgt);
  });
  const step = Math.max(1, Math.ceil(12 / slot));
  ctx.fillStyle = INK; ctx.textAlign = "right";
  for (let j = 0; j < n; j += step) {
    ctx.save(); ctx.translate(left + (j + 0.5) * slot, top + plotH + 6); ctx.rotate(-Math.PI / 2);
    ctx.fillText(short(c.labels[j]), 0, 0); ctx.restore();
  }
  hover(canvas, tip, x => {
    const j = Math.floor((x - left) / slot);
    return j >= 0 && j < n ? `${c.labels[j]} (${j}): ${c.ylabel} ${fmt(c.values[j])}` : null;
  });
}

function lines(holder, tip, c) {
  const pw = 280, ph = 150, left = 44, top = 22, gap = 36, cols = 2;
  const rows = Math.ceil(c.panels.length / cols);
  const w = cols * (left + pw + 16), h = rows * (top + ph + gap);
  const [canvas, ctx] = surface(holder, w, h);
  const layers = c.panels[0].mean.length, boxes = [];
  c.panels.forEach((p, k) => {
    const x0 = (k % cols) * (left + pw + 16) + left, y0 = Math.floor(k / cols) * (top + ph + gap) + top;
    const all = [...p.mean, ...p.heads.flat()].filter(Number.isFinite);
    let lo = Math.min(...all), hi = Math.max(...all);
    if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
    const X = l => x0 + (layers > 1 ? l / (layers - 1) : 0.5) * pw, Y = v => y0 + ph - (v - lo) / (hi - lo) * ph;
    boxes.push({x0, y0, X, p});
    ctx.strokeStyle = GRID; ctx.strokeRect(x0 + 0.5, y0 + 0.5, pw, ph);
    ctx.fillStyle = INK; ctx.textAlign = "left"; ctx.textBaseline = "bottom"; ctx.fillText(p.title, x0, y0 - 4);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(fmt(hi), x0 - 4, y0 + 4); ctx.fillText(fmt(lo), x0 - 4, y0 + ph - 4);
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (let l = 0; l < layers; l++) ctx.fillText(String(l), X(l), y0 + ph + 4);
    const path = (vals, colour, width) => {
      ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.beginPath();
      vals.forEach((v, l) => (l ? ctx.lineTo(X(l), Y(v)) : ctx.moveTo(X(l), Y(v)))); ctx.stroke();
    };
    p.heads.forEach(vals => path(vals, "#bbb", 0.8));
    path(p.mean, "#c0392b", 2);
    ctx.fillStyle = "#c0392b";
    p.mean.forEach((v, l) => { ctx.beginPath(); ctx.arc(X(l), Y(v), 3, 0, 2 * Math.PI); ctx.fill(); });
    ctx.lineWidth = 1;
  });
  ctx.fillStyle = INK; ctx.textAlign = "left"; ctx.textBaseline = "bottom";
  ctx.fillText("layer (red: mean of heads; grey: each head)", 4, h - 4);
  hover(canvas, tip, (x, y) => {
    for (const b of boxes) {
      if (x < b.x0 - 6 || x > b.x0 + pw + 6 || y < b.y0 || y > b.y0 + ph) continue;
      const l = Math.round((x - b.x0) / pw * (layers - 1));
      return `${b.p.title}, layer ${l}: mean ${fmt(b.p.mean[l])}, heads ${fmt(Math.min(...b.p.heads.map(v => v[l])))}\u2013${fmt(Math.max(...b.p.heads.map(v => v[l])))}`;
    }
    return null;
  });
}

function scatter(holder, tip, c) {
  const w = 560, h = 420, pad = 44, pts = c.points;
  const [canvas, ctx] = surface(holder, w, h);
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const span = (a) => { const lo = Math.min(...a), hi = Math.max(...a), d = (hi - lo) || 1; return [lo - 0.08 * d, hi + 0.08 * d]; };
  const [x0, x1] = span(xs), [y0, y1] = span(ys);
  const X = v => pad + (v - x0) / (x1 - x0) * (w - 2 * pad), Y = v => h - pad - (v - y0) / (y1 - y0) * (h - 2 * pad);
  ctx.strokeStyle = GRID; ctx.strokeRect(pad + 0.5, pad + 0.5, w - 2 * pad, h - 2 * pad);
  if (c.path) {
    ctx.strokeStyle = "#999"; ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1])))); ctx.stroke();
  }
  pts.forEach((p, i) => {
    ctx.fillStyle = c.path ? blues(0.25 + 0.75 * i / Math.max(1, pts.length - 1)) : "#2171b5";
    ctx.beginPath(); ctx.arc(X(p[0]), Y(p[1]), 4, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = INK; ctx.textAlign = "left"; ctx.textBaseline = "bottom";
    ctx.fillText(short(c.labels[i]), X(p[0]) + 5, Y(p[1]) - 2);
  });
  ctx.textAlign = "center"; ctx.textBaseline = "bottom"; ctx.fillText(c.xlabel, w / 2, h - 8);
  ctx.save(); ctx.translate(14, h / 2); ctx.rotate(-Math.PI / 2); ctx.fillText(c.ylabel, 0, 0); ctx.restore();
  hover(canvas, tip, (x, y) => {
    let best = -1, dist = 100;
    pts.forEach((p, i) => { const d = (X(p[0]) - x) ** 2 + (Y(p[1]) - y) ** 2; if (d < dist) { dist = d; best = i; } });
    return best < 0 ? null : `${c.labels[best]}: (${fmt(pts[best][0])}, ${fmt(pts[best][1])})`;
  });
}

function arcs(holder, tip, c) {
  const n = c.tokens.length, slot = Math.max(18, Math.min(46, Math.floor(1000 / n)));
  const reach = Math.max(1, ...c.edges.map(e => Math.abs(e[1] - e[0])));
  const half = Math.min(160, reach * slot / 2 + 14), w = slot * n + 20, h = 2 * half + 90, mid = half + 45;
  const [canvas, ctx] = surface(holder, w, h);
  const X = i => 10 + (i + 0.5) * slot;
  const draw = focus => {
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
    for (const [i, j, v] of c.edges) {
      if (focus >= 0 && i !== focus && j !== focus) continue;
      ctx.strokeStyle = j >= i ? `rgba(33,113,181,${0.25 + 0.75 * v})` : `rgba(192,57,43,${0.25 + 0.75 * v})`;
      ctx.lineWidth = 0.5 + 4.5 * v; ctx.beginPath();
      if (i === j) ctx.arc(X(i), mid - 22, 6, 0, 2 * Math.PI);
      else ctx.ellipse((X(i) + X(j)) / 2, mid + (j > i ? -18 : 18), Math.abs(X(j) - X(i)) / 2,
        Math.abs(j - i) * (half - 14) / reach, 0, j > i ? Math.PI : 0, j > i ? 2 * Math.PI : Math.PI);
      ctx.stroke();
    }
    ctx.lineWidth = 1; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    c.tokens.forEach((t, i) => {
      ctx.save(); ctx.translate(X(i), mid); ctx.rotate(-Math.PI / 2);
      ctx.fillStyle = i === focus ? "#fde9a9" : "#fff"; const tw = ctx.measureText(short(t)).width + 6;
      ctx.fillRect(-tw / 2, -7, tw, 14); ctx.strokeStyle = "#888"; ctx.strokeRect(-tw / 2, -7, tw, 14);
      ctx.fillStyle = INK; ctx.fillText(short(t), 0, 0); ctx.restore();
    });
    ctx.textAlign = "left"; ctx.fillStyle = "#2171b5"; ctx.fillText("above: attends to a later token", 4, 10);
    ctx.fillStyle = "#c0392b"; ctx.fillText("below: attends to an earlier token", 4, h - 10);
  };
  draw(-1);
  hover(canvas, tip, x => {
    const i = Math.floor((x - 10) / slot);
    if (i < 0 || i >= n) { draw(-1); return null; }
    draw(i);
    const out = c.edges.filter(e => e[0] === i).sort((a, b) => b[2] - a[2]).slice(0, 4);
    return `${c.tokens[i]} (${i}) attends to ` + (out.length ? out.map(e => `${c.tokens[e[1]]} ${fmt(e[2])}`).join(", ") : "nothing above the threshold");
  });
  canvas.addEventListener("mouseleave", () => draw(-1));
}

const KINDS = {heatmap, bars, lines, scatter, arcs};

// Draw every <figure class="as-chart" data-chart="i"> inside `container` (a document or an
// element) from the chart specifications `data` (the explorer calls this with API answers).
/** @param {ParentNode} container @param {ReportPayload} data */
function attnscopeCharts(container, data) {
  const figures = /** @type {NodeListOf<HTMLElement>} */ (container.querySelectorAll("figure.as-chart"));
  for (const figure of figures) {
    const chart = data[Number(figure.dataset.chart)], holder = el("div", "as-plot"), tip = el("div", "as-tip");
    if (chart.title) figure.appendChild(el("figcaption", "", chart.title));
    figure.appendChild(holder); holder.appendChild(tip);
    try { KINDS[chart.kind](holder, tip, chart); figure.dataset.drawn = "1"; }
    catch (err) { figure.appendChild(el("p", "note", "This chart could not be drawn: " + err.message)); }
  }
}

function attnscopeReport(doc) {
  attnscopeCharts(doc, JSON.parse(doc.getElementById("attnscope-report-data").textContent));
}

// Node (the unit tests in tests/js) reads the pure parts; in a page `module` does not exist.
if (typeof module !== "undefined") module.exports = { blues, float16, BLUES };
