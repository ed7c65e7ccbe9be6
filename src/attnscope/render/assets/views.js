"use strict";
/*
 * attnscope interactive views: head view, model view, neuron view and a tokens table.
 *
 * This file is inlined, inside a function, into every page attnscope writes; it defines no
 * global name. attnscopeMount(root) reads the JSON data element inside `root`, decodes its
 * typed arrays and draws. Every text from the data (tokens, model names) is inserted with
 * textContent or drawn with canvas fillText: data never becomes markup.
 *
 * Attention arrives as uint8 (weight * 255) [L, H, Tq, Tk], row-major, zlib-deflated;
 * queries and keys as float16 [L, H, T, d_head].
 */

// ----- small helpers ------------------------------------------------------------------------

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function selectField(parent, label, options, value, onChange) {
  const wrap = el("label", "as-field");
  wrap.append(el("span", "as-label", label));
  const sel = document.createElement("select");
  setOptions(sel, options, value);
  sel.addEventListener("change", () => onChange(sel.value));
  wrap.append(sel);
  parent.append(wrap);
  return sel;
}

function setOptions(sel, options, value) {
  sel.textContent = "";
  for (const [v, text] of options) {
    const opt = document.createElement("option");
    opt.value = String(v);
    opt.textContent = text;
    sel.append(opt);
  }
  sel.value = String(value);
}

function pixelRatio(cssPixels) {
  // Very tall canvases (hundreds of tokens) stay at 1x so they fit the browser's limits.
  const dpr = Math.min(2, window.devicePixelRatio || 1);
  return cssPixels * dpr > 30000 ? 1 : dpr;
}

function sizeCanvas(canvas, width, height) {
  const ratio = pixelRatio(Math.max(width, height));
  canvas.width = Math.max(1, Math.round(width * ratio));
  canvas.height = Math.max(1, Math.round(height * ratio));
  canvas.style.width = width + "px";
  canvas.style.height = height + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}

// A white-to-blue ramp for weights in [0, 1] (index 0..255), as [r, g, b] triples.
const RAMP = (function () {
  const stops = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  const lut = new Uint8Array(256 * 3);
  for (let v = 0; v < 256; v++) {
    const x = (v / 255) * (stops.length - 1);
    const k = Math.min(stops.length - 2, Math.floor(x));
    const f = x - k;
    for (let c = 0; c < 3; c++) lut[v * 3 + c] = Math.round(stops[k][c] * (1 - f) + stops[k + 1][c] * f);
  }
  return lut;
})();

// Diverging colour for a value in [-1, 1]: blue (negative), white (0), red (positive).
function diverging(x) {
  const t = Math.max(-1, Math.min(1, x));
  if (t >= 0) return `rgb(${255},${Math.round(255 - 180 * t)},${Math.round(255 - 200 * t)})`;
  return `rgb(${Math.round(255 + 200 * t)},${Math.round(255 + 130 * t)},255)`;
}

// ----- decoding -----------------------------------------------------------------------------

function base64Bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function halfToFloat(half) {
  const out = new Float32Array(half.length);
  for (let i = 0; i < half.length; i++) {
    const h = half[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const man = h & 0x3ff;
    let v;
    if (exp === 0) v = man * 5.960464477539063e-8; // subnormal: man * 2^-24
    else if (exp === 31) v = man ? NaN : Infinity;
    else v = (1 + man / 1024) * Math.pow(2, exp - 15);
    out[i] = sign * v;
  }
  return out;
}

async function inflate(bytes) {
  if (typeof DecompressionStream === "undefined") {
    throw new Error("this browser cannot open the view's compressed data; " +
      "use a recent Chrome, Edge, Firefox or Safari.");
  }
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// An array spec's "b64" is one string, or a list of strings (one per first-axis slice, each
// deflated on its own when "zlib" is set) that join into the array's bytes.
async function decodeArray(spec) {
  const pieces = Array.isArray(spec.b64) ? spec.b64 : [spec.b64];
  spec.b64 = null; // the decoded copy is all we keep
  const parts = await Promise.all(pieces.map((b64) => {
    const raw = base64Bytes(b64);
    return spec.zlib ? inflate(raw) : raw;
  }));
  let bytes = parts[0];
  if (parts.length > 1) {
    bytes = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of parts) {
      bytes.set(part, at);
      at += part.length;
    }
  }
  if (spec.dtype === "u8") return bytes;
  if (spec.dtype === "f16") {
    return halfToFloat(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length >> 1));
  }
  throw new Error("unknown array type " + spec.dtype);
}

async function loadArrays(P) {
  const parts = {};
  for (const spec of P.parts) {
    const [L, H, Tq, Tk] = spec.att.shape;
    const bytes = await decodeArray(spec.att);
    parts[spec.name] = {
      name: spec.name, label: spec.label, causal: spec.causal, layers: spec.layers,
      heads: spec.heads, bytes, L, H, Tq, Tk,
      rows: P.tokens[spec.rows], cols: P.tokens[spec.cols],
      rowSpecial: P.special[spec.rows], colSpecial: P.special[spec.cols],
    };
  }
  let qk = null;
  if (P.qk) {
    qk = { q: await decodeArray(P.qk.q), k: await decodeArray(P.qk.k), shape: P.qk.q.shape,
      scales: P.qk.scales, scaleTexts: P.qk.scale_texts };
  }
  return { parts, qk };
}

// ----- mounting -----------------------------------------------------------------------------

function attnscopeMount(root) {
  if (!root || root.dataset.mounted) return;
  root.dataset.mounted = "1";
  const status = root.querySelector(".as-status");
  const P = JSON.parse(root.querySelector(".attnscope-data").textContent);
  if (P.theme === "dark") root.classList.add("as-dark");
  // Tests and tools reach a view's state through the element, never through a global.
  const api = { views: {}, payload: P };
  root.attnscope = api;
  loadArrays(P).then((A) => {
    if (status) status.remove();
    build(root, P, A, api);
    root.dataset.ready = "1";
  }).catch((err) => {
    if (status) status.textContent = "attnscope: " + err.message;
    root.dataset.error = String(err && err.message);
  });
}

function build(root, P, A, api) {
  const header = el("div", "as-header");
  header.append(el("span", "as-title", P.title));
  if (P.subtitle) header.append(el("span", "as-subtitle", P.subtitle));
  root.append(header);
  const makers = { head: headView, model: modelView, neuron: neuronView, tokens: tokensView };
  const names = { head: "Head view", model: "Model view", neuron: "Neuron view", tokens: "Tokens" };
  const tabs = el("div", "as-tabs");
  if (P.kinds.length > 1) root.append(tabs);
  const panels = {};
  for (const kind of P.kinds) {
    const panel = el("div", "as-panel as-" + kind);
    panel.dataset.kind = kind;
    panels[kind] = panel;
    root.append(panel);
    if (P.kinds.length > 1) {
      const button = el("button", "as-tab", names[kind]);
      button.type = "button";
      button.dataset.kind = kind;
      button.addEventListener("click", () => show(kind));
      tabs.append(button);
    }
  }
  // A view is drawn the first time its tab opens, so a page with four views opens as fast
  // as a page with one.
  function show(kind) {
    for (const k of P.kinds) panels[k].hidden = k !== kind;
    for (const b of tabs.children) b.classList.toggle("as-active", b.dataset.kind === kind);
    if (!api.views[kind]) api.views[kind] = makers[kind](panels[kind], P, A);
  }
  api.show = show;
  show(P.kinds[0]);
}

// ----- head view ----------------------------------------------------------------------------

const HV_WIDTH = 220;
const MIN_LINE = 3; // weights below 3/255 (about 0.01) draw no line unless a token is hovered

function headView(panel, P, A) {
  const init = P.initial;
  const st = { part: init.part, layer: init.layer, active: new Set(), hover: null,
    filter: "all", drawn: 0 };
  const part = () => A.parts[st.part];
  const resetHeads = (heads) => {
    st.active = new Set(heads === null || heads === undefined
      ? [...Array(part().H).keys()] : heads);
  };
  resetHeads(init.heads);

  const controls = el("div", "as-controls");
  panel.append(controls);
  if (P.parts.length > 1) {
    selectField(controls, "Attention", P.parts.map((p) => [p.name, p.label]), st.part, (v) => {
      st.part = v;
      st.layer = Math.min(st.layer, part().L - 1);
      resetHeads(null);
      rebuild();
    });
  }
  const layerField = selectField(controls, "Layer", [], 0, (v) => {
    st.layer = Number(v);
    draw();
  });
  layerField.parentElement.classList.add("as-layer");
  let filterField = null;
  if (P.sentence_b_start !== null && P.sentence_b_start !== undefined) {
    const opts = [["all", "All"], ["AA", "Sentence A \u2192 A"], ["AB", "Sentence A \u2192 B"],
      ["BA", "Sentence B \u2192 A"], ["BB", "Sentence B \u2192 B"]];
    filterField = selectField(controls, "Pairs", opts, "all", (v) => {
      st.filter = v;
      draw();
    });
    filterField.parentElement.classList.add("as-filter");
  }
  const swatches = el("div", "as-heads");
  panel.append(swatches);
  const note = el("div", "as-note");
  panel.append(note);
  const body = el("div", "as-hv-body");
  const left = el("div", "as-hv-col as-hv-left");
  const canvas = el("canvas", "as-hv-canvas");
  const right = el("div", "as-hv-col as-hv-right");
  body.append(left, canvas, right);
  panel.append(body);
  let ctx = null;
  let rowH = 20;

  function tokenColumn(col, tokens, special, side) {
    col.textContent = "";
    tokens.forEach((tok, i) => {
      const node = el("div", "as-tok" + (special[i] ? " as-special" : ""), tok);
      node.dataset.index = String(i);
      node.dataset.side = side;
      node.style.height = node.style.lineHeight = rowH + "px";
      col.append(node);
    });
  }

  function rebuild() {
    const p = part();
    setOptions(layerField, p.layers.map((id, i) => [i, "Layer " + id]), st.layer);
    filterField && (filterField.parentElement.hidden = p.name !== "self");
    swatches.textContent = "";
    for (let h = 0; h < p.H; h++) {
      const sw = el("div", "as-swatch", String(p.heads[h]));
      sw.style.background = P.colors[h % P.colors.length];
      sw.dataset.head = String(h);
      sw.title = "head " + p.heads[h] + ": click to show or hide, double-click to show alone";
      sw.addEventListener("click", () => {
        st.active.has(h) ? st.active.delete(h) : st.active.add(h);
        draw();
      });
      sw.addEventListener("dblclick", () => {
        st.active = new Set([h]);
        draw();
      });
      swatches.append(sw);
    }
    const n = Math.max(p.Tq, p.Tk);
    rowH = n <= 64 ? 20 : 16;
    tokenColumn(left, p.rows, p.rowSpecial, "q");
    tokenColumn(right, p.cols, p.colSpecial, "k");
    ctx = sizeCanvas(canvas, HV_WIDTH, n * rowH);
    const notes = [];
    if (p.causal) notes.push("Causal attention: each token attends only to itself and earlier tokens.");
    if (p.name === "cross") notes.push("Decoder tokens (left) attend to encoder tokens (right).");
    notes.push("Hover a token to keep only its lines.");
    note.textContent = notes.join(" ");
    draw();
  }

  function inSide(i, which) {
    const b = P.sentence_b_start;
    return which === "A" ? i < b : i >= b;
  }

  function draw() {
    const p = part();
    const { H, Tq, Tk, bytes } = p;
    const n = Math.max(Tq, Tk);
    ctx.clearRect(0, 0, HV_WIDTH, n * rowH);
    for (const sw of swatches.children) sw.classList.toggle("as-off", !st.active.has(Number(sw.dataset.head)));
    const filter = p.name === "self" && P.sentence_b_start != null && st.filter !== "all"
      ? st.filter : null;
    const hov = st.hover;
    const rowsFrom = hov && hov.side === "q" ? hov.index : 0;
    const rowsTo = hov && hov.side === "q" ? hov.index + 1 : Tq;
    const minV = hov ? 1 : MIN_LINE;
    let drawn = 0;
    // Opposite-side shading while hovering: the strongest weight over the visible heads.
    const shade = hov ? new Float32Array(hov.side === "q" ? Tk : Tq) : null;
    ctx.lineWidth = 2;
    for (const h of [...st.active].sort((a, b) => a - b)) {
      const base = (st.layer * H + h) * Tq * Tk;
      // One path per opacity level (32 levels), so thousands of lines cost one stroke each.
      const paths = new Array(33).fill(null);
      for (let i = rowsFrom; i < rowsTo; i++) {
        if (filter && !inSide(i, filter[0])) continue;
        const y0 = i * rowH + rowH / 2;
        const row = base + i * Tk;
        for (let j = 0; j < Tk; j++) {
          if (hov && hov.side === "k" && j !== hov.index) continue;
          if (p.causal && j > i) continue;
          if (filter && !inSide(j, filter[1])) continue;
          const v = bytes[row + j];
          if (v < minV) continue;
          const level = Math.max(1, (v + 4) >> 3);
          const path = paths[level] || (paths[level] = new Path2D());
          path.moveTo(0, y0);
          path.lineTo(HV_WIDTH, j * rowH + rowH / 2);
          drawn++;
          if (shade) {
            const s = hov.side === "q" ? j : i;
            if (v / 255 > shade[s]) shade[s] = v / 255;
          }
        }
      }
      ctx.strokeStyle = P.colors[h % P.colors.length];
      for (let level = 1; level <= 32; level++) {
        if (!paths[level]) continue;
        ctx.globalAlpha = level / 32;
        ctx.stroke(paths[level]);
      }
    }
    ctx.globalAlpha = 1;
    st.drawn = drawn;
    for (const node of left.children) node.classList.toggle("as-hot", !!hov && hov.side === "q" && Number(node.dataset.index) === hov.index);
    for (const node of right.children) node.classList.toggle("as-hot", !!hov && hov.side === "k" && Number(node.dataset.index) === hov.index);
    const other = hov ? (hov.side === "q" ? right : left) : null;
    for (const col of [left, right]) {
      for (const node of col.children) {
        node.style.backgroundColor = col === other
          ? `rgba(66, 133, 244, ${shade[Number(node.dataset.index)].toFixed(3)})` : "";
      }
    }
  }

  function onOver(event) {
    const node = event.target.closest(".as-tok");
    if (!node) return;
    st.hover = { side: node.dataset.side, index: Number(node.dataset.index) };
    draw();
  }
  function onOut(event) {
    const node = event.target.closest(".as-tok");
    if (!node || (event.relatedTarget && node.contains(event.relatedTarget))) return;
    st.hover = null;
    draw();
  }
  for (const col of [left, right]) {
    col.addEventListener("mouseover", onOver);
    col.addEventListener("mouseout", onOut);
  }
  rebuild();
  return { state: st, canvas, redraw: draw };
}

// ----- model view ---------------------------------------------------------------------------

const THUMB_RES = 96; // a thumbnail has at most 96 x 96 cells; each shows its block's maximum
const DETAIL_SIDE = 560;

// Draw one head into an ImageData of (Rq x Rk) cells, each the max weight of its token block.
// With `onlyRow` set, every row except that query token's is grey.
function headImage(ctx, p, layer, head, maxRes, onlyRow) {
  const { H, Tq, Tk, bytes } = p;
  const Rq = Math.min(Tq, maxRes), Rk = Math.min(Tk, maxRes);
  const img = ctx.createImageData(Rk, Rq);
  const px = img.data;
  const base = (layer * H + head) * Tq * Tk;
  const colStart = new Int32Array(Rk + 1);
  for (let c = 0; c <= Rk; c++) colStart[c] = Math.floor((c * Tk) / Rk);
  for (let r = 0; r < Rq; r++) {
    let i0 = Math.floor((r * Tq) / Rq), i1 = Math.floor(((r + 1) * Tq) / Rq);
    const isolated = onlyRow !== null && onlyRow !== undefined;
    if (isolated) {
      if (onlyRow < i0 || onlyRow >= i1) {
        for (let c = 0; c < Rk; c++) {
          const o = (r * Rk + c) * 4;
          px[o] = px[o + 1] = px[o + 2] = 232;
          px[o + 3] = 255;
        }
        continue;
      }
      i0 = onlyRow;
      i1 = onlyRow + 1;
    }
    for (let c = 0; c < Rk; c++) {
      let m = 0;
      for (let i = i0; i < i1; i++) {
        const row = base + i * Tk;
        for (let j = colStart[c]; j < colStart[c + 1]; j++) if (bytes[row + j] > m) m = bytes[row + j];
      }
      const o = (r * Rk + c) * 4;
      px[o] = RAMP[m * 3];
      px[o + 1] = RAMP[m * 3 + 1];
      px[o + 2] = RAMP[m * 3 + 2];
      px[o + 3] = 255;
    }
  }
  return img;
}

function modelView(panel, P, A) {
  const st = { part: P.initial.part, open: null, hover: null };
  const part = () => A.parts[st.part];
  const controls = el("div", "as-controls");
  panel.append(controls);
  if (P.parts.length > 1) {
    selectField(controls, "Attention", P.parts.map((p) => [p.name, p.label]), st.part, (v) => {
      st.part = v;
      st.open = null;
      st.hover = null;
      rebuild();
    });
  }
  panel.append(el("div", "as-note",
    "Every layer (rows) and head (columns). Click a head to open it; hover a token to keep only its row."));
  const strip = el("div", "as-tokstrip");
  const grid = el("div", "as-grid");
  const detail = el("div", "as-detail");
  detail.hidden = true;
  panel.append(strip, detail, grid);
  let thumbs = [];

  function rebuild() {
    const p = part();
    strip.textContent = "";
    p.rows.forEach((tok, i) => {
      const node = el("span", "as-tok" + (p.rowSpecial[i] ? " as-special" : ""), tok);
      node.dataset.index = String(i);
      strip.append(node);
    });
    grid.textContent = "";
    grid.style.gridTemplateColumns = `auto repeat(${p.H}, auto)`;
    grid.append(el("div", "as-corner"));
    for (let h = 0; h < p.H; h++) grid.append(el("div", "as-collabel", "H" + p.heads[h]));
    thumbs = [];
    for (let l = 0; l < p.L; l++) {
      grid.append(el("div", "as-rowlabel", "L" + p.layers[l]));
      for (let h = 0; h < p.H; h++) {
        const c = el("canvas", "as-thumb");
        c.width = Math.min(p.Tk, THUMB_RES);
        c.height = Math.min(p.Tq, THUMB_RES);
        c.dataset.layer = String(l);
        c.dataset.head = String(h);
        c.title = `layer ${p.layers[l]}, head ${p.heads[h]}`;
        c.addEventListener("click", () => open(l, h));
        grid.append(c);
        thumbs.push(c);
      }
    }
    detail.hidden = true;
    drawThumbs();
  }

  function drawThumbs() {
    const p = part();
    for (const c of thumbs) {
      const ctx = c.getContext("2d");
      ctx.putImageData(headImage(ctx, p, Number(c.dataset.layer), Number(c.dataset.head), THUMB_RES, st.hover), 0, 0);
      c.classList.toggle("as-open", !!st.open && st.open[0] === Number(c.dataset.layer) && st.open[1] === Number(c.dataset.head));
    }
    for (const node of strip.children) node.classList.toggle("as-hot", Number(node.dataset.index) === st.hover);
  }

  // The large view: cells of `cell` pixels with token labels in a margin.
  const dTitle = el("div", "as-detail-title");
  const dClose = el("button", "as-close", "\u00d7");
  dClose.type = "button";
  dClose.title = "close";
  dClose.addEventListener("click", () => {
    st.open = null;
    detail.hidden = true;
    drawThumbs();
  });
  const dCanvas = el("canvas", "as-detail-canvas");
  const dReadout = el("div", "as-readout", "\u00a0");
  const dHead = el("div", "as-detail-head");
  dHead.append(dTitle, dClose);
  detail.append(dHead, dCanvas, dReadout);
  let geom = null;

  function open(l, h) {
    st.open = [l, h];
    detail.hidden = false;
    drawDetail();
    drawThumbs();
  }

  function drawDetail() {
    if (!st.open) return;
    const p = part();
    const [l, h] = st.open;
    dTitle.textContent = `${p.label}: layer ${p.layers[l]}, head ${p.heads[h]}`;
    const n = Math.max(p.Tq, p.Tk);
    const cell = Math.max(1, Math.min(22, Math.floor(DETAIL_SIDE / n)));
    const every = Math.max(1, Math.ceil(11 / cell)); // label every k-th token when cells are small
    const measure = dCanvas.getContext("2d");
    measure.font = "11px sans-serif";
    let margin = 20;
    for (const t of [...p.rows, ...p.cols]) margin = Math.max(margin, measure.measureText(t).width + 8);
    margin = Math.min(140, Math.ceil(margin));
    const width = margin + p.Tk * cell, height = margin + p.Tq * cell;
    const ctx = sizeCanvas(dCanvas, width, height);
    geom = { margin, cell };
    const off = document.createElement("canvas");
    off.width = p.Tk;
    off.height = p.Tq;
    const octx = off.getContext("2d");
    octx.putImageData(headImage(octx, p, l, h, Infinity, st.hover), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, margin, margin, p.Tk * cell, p.Tq * cell);
    ctx.font = "11px sans-serif";
    ctx.fillStyle = getComputedStyle(detail).color || "#222";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let i = 0; i < p.Tq; i += every) ctx.fillText(p.rows[i], margin - 4, margin + i * cell + cell / 2, margin - 6);
    ctx.save();
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    for (let j = 0; j < p.Tk; j += every) ctx.fillText(p.cols[j], -margin + 4, margin + j * cell + cell / 2, margin - 6);
    ctx.restore();
  }

  function setHover(i) {
    if (st.hover === i) return;
    st.hover = i;
    drawThumbs();
    drawDetail();
  }

  strip.addEventListener("mouseover", (e) => {
    const node = e.target.closest(".as-tok");
    if (node) setHover(Number(node.dataset.index));
  });
  strip.addEventListener("mouseleave", () => setHover(null));
  dCanvas.addEventListener("mousemove", (e) => {
    if (!geom || !st.open) return;
    const p = part();
    const rect = dCanvas.getBoundingClientRect();
    const i = Math.floor((e.clientY - rect.top - geom.margin) / geom.cell);
    const j = Math.floor((e.clientX - rect.left - geom.margin) / geom.cell);
    if (i < 0 || i >= p.Tq) {
      dReadout.textContent = "\u00a0";
      setHover(null);
      return;
    }
    if (j >= 0 && j < p.Tk) {
      const v = p.bytes[((st.open[0] * p.H + st.open[1]) * p.Tq + i) * p.Tk + j] / 255;
      dReadout.textContent = `${p.rows[i]} \u2192 ${p.cols[j]}: ${v.toFixed(3)}`;
    }
    setHover(i);
  });
  dCanvas.addEventListener("mouseleave", () => {
    dReadout.textContent = "\u00a0";
    setHover(null);
  });
  rebuild();
  return { state: st, open, setHover, thumbs: () => thumbs, detail: dCanvas };
}

// ----- neuron view --------------------------------------------------------------------------

const NV_ROW = 16;

function neuronView(panel, P, A) {
  if (!A.qk) {
    panel.append(el("p", "as-missing", P.qk_missing));
    return { state: { missing: true } };
  }
  const p = A.parts.self;
  const [L, H, T, d] = A.qk.shape;
  const init = P.initial;
  const st = { layer: init.layer, head: init.head, query: init.query };
  const controls = el("div", "as-controls");
  panel.append(controls);
  selectField(controls, "Layer", p.layers.map((id, i) => [i, "Layer " + id]), st.layer, (v) => {
    st.layer = Number(v);
    draw();
  }).parentElement.classList.add("as-layer");
  selectField(controls, "Head", p.heads.map((id, i) => [i, "Head " + id]), st.head, (v) => {
    st.head = Number(v);
    draw();
  }).parentElement.classList.add("as-head");
  const querySel = selectField(controls, "Query", p.rows.map((t, i) => [i, i + ": " + t]), st.query, (v) => {
    st.query = Number(v);
    draw();
  });
  querySel.parentElement.classList.add("as-query");
  const note = el("div", "as-note");
  panel.append(note);
  const cw = Math.max(2, Math.min(8, Math.floor(256 / d))); // pixels per vector component
  const stripW = d * cw, gap = 14, scoreW = 64, barW = 120;
  const xs = { k: 0, prod: stripW + gap, score: 2 * (stripW + gap), bar: 2 * (stripW + gap) + scoreW + gap };
  const width = xs.bar + barW + 50;
  const headRow = el("div", "as-nv-row as-nv-head");
  const qLabel = el("div", "as-nv-label");
  const qCanvas = el("canvas", "as-nv-qcanvas");
  headRow.append(qLabel, qCanvas);
  const body = el("div", "as-nv-body");
  const labels = el("div", "as-nv-labels");
  const canvas = el("canvas", "as-nv-canvas");
  body.append(labels, canvas);
  panel.append(headRow, body);
  p.cols.forEach((tok, j) => {
    const node = el("div", "as-tok" + (p.colSpecial[j] ? " as-special" : ""), tok);
    node.dataset.index = String(j);
    node.style.height = node.style.lineHeight = NV_ROW + "px";
    labels.append(node);
  });
  labels.addEventListener("click", (e) => {
    const node = e.target.closest(".as-tok");
    if (!node) return;
    st.query = Number(node.dataset.index);
    querySel.value = String(st.query);
    draw();
  });
  const qctx = sizeCanvas(qCanvas, width, 40);
  const ctx = sizeCanvas(canvas, width, T * NV_ROW + 4);

  function draw() {
    const { layer, head, query } = st;
    const off = ((layer * H + head) * T) * d; // start of [T, d] for this head
    const q = A.qk.q.subarray(off + query * d, off + query * d + d);
    const keys = A.qk.k.subarray(off, off + T * d);
    let qMax = 1e-12, kMax = 1e-12, pMax = 1e-12;
    for (let c = 0; c < d; c++) qMax = Math.max(qMax, Math.abs(q[c]));
    for (let x = 0; x < T * d; x++) {
      kMax = Math.max(kMax, Math.abs(keys[x]));
      pMax = Math.max(pMax, Math.abs(keys[x] * q[x % d]));
    }
    qLabel.textContent = "query " + query + ": " + p.rows[query];
    note.textContent = "For the chosen query token: each key's vector k, the element-wise " +
      "product q\u2299k, the score q\u00b7k \u00d7 scale (" + A.qk.scaleTexts[layer] + ") and the " +
      "model's attention weight (the softmax of the scores, with any mask or position bias). " +
      "Click a token to make it the query.";
    qctx.clearRect(0, 0, width, 40);
    qctx.font = "11px sans-serif";
    qctx.fillStyle = "#555";
    qctx.textBaseline = "top";
    qctx.fillText("query q (above), key k (rows)", xs.k, 0);
    qctx.fillText("q (above), q\u2299k (rows)", xs.prod, 0);
    qctx.fillText("q\u00b7k \u00d7 scale", xs.score, 0);
    qctx.fillText("attention", xs.bar, 0);
    for (let c = 0; c < d; c++) {
      qctx.fillStyle = diverging(q[c] / qMax);
      qctx.fillRect(xs.k + c * cw, 16, cw, 20);
      qctx.fillRect(xs.prod + c * cw, 16, cw, 20);
    }
    ctx.clearRect(0, 0, width, T * NV_ROW + 4);
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "middle";
    const att = p.bytes;
    const scores = new Float32Array(T);
    const attBase = ((layer * p.H + head) * p.Tq + query) * p.Tk;
    for (let j = 0; j < T; j++) {
      const y = j * NV_ROW + 2;
      const masked = p.causal && j > query;
      let score = 0;
      for (let c = 0; c < d; c++) {
        const kv = keys[j * d + c];
        score += q[c] * kv;
        ctx.fillStyle = diverging(kv / kMax);
        ctx.fillRect(xs.k + c * cw, y, cw, NV_ROW - 3);
        ctx.fillStyle = diverging((q[c] * kv) / pMax);
        ctx.fillRect(xs.prod + c * cw, y, cw, NV_ROW - 3);
      }
      score *= A.qk.scales[layer];
      scores[j] = score;
      ctx.fillStyle = masked ? "#aaa" : "#222";
      ctx.textAlign = "right";
      ctx.fillText(masked ? "masked" : score.toFixed(2), xs.score + scoreW, y + NV_ROW / 2 - 1);
      const w = masked ? 0 : att[attBase + j] / 255;
      ctx.fillStyle = "#eee";
      ctx.fillRect(xs.bar, y, barW, NV_ROW - 3);
      ctx.fillStyle = "#2171b5";
      ctx.fillRect(xs.bar, y, barW * w, NV_ROW - 3);
      ctx.fillStyle = "#222";
      ctx.textAlign = "left";
      ctx.fillText(w.toFixed(3), xs.bar + barW + 4, y + NV_ROW / 2 - 1);
    }
    for (const node of labels.children) node.classList.toggle("as-hot", Number(node.dataset.index) === query);
    st.scores = Array.from(scores);
  }
  draw();
  return { state: st, canvas, redraw: draw };
}

// ----- tokens table -------------------------------------------------------------------------

function tokensView(panel, P) {
  const table = el("table", "as-table");
  const head = el("tr");
  for (const name of ["position", "token", "sentence", "special"]) head.append(el("th", null, name));
  table.append(head);
  const rows = P.token_table;
  for (const [pos, tok, sentence, special] of rows) {
    const tr = el("tr");
    tr.append(el("td", null, pos), el("td", "as-tokcell", tok), el("td", null, sentence),
      el("td", null, special ? "yes" : ""));
    table.append(tr);
  }
  panel.append(table);
  return { state: { rows: rows.length } };
}
