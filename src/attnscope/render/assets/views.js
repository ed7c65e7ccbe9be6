"use strict";
/*
 * attnscope interactive views: head view, model view, neuron view and a tokens table.
 *
 * This file is inlined, inside a function, into every page attnscope writes; it defines no
 * global name. attnscopeMount(root) reads the JSON data element inside `root`, decodes its
 * typed arrays and draws. Every text from the data (tokens, model names) is inserted with
 * textContent or drawn with canvas fillText: data never becomes markup.
 *
 * Attention arrives as a logarithmic one-byte code of each weight's ratio to its row's
 * maximum (see attnscope.render.html.encode_attention): a "codes" plane of one byte a weight
 * (0 zero, 1 below the floor, 2..255 the ratio, 255 the row's scale), deflated per layer and
 * carried as base85 text, and float32 row scales (what code 255 stands for) and below-floor
 * means [L, H, Tq]. Every weight above 1e-4 decodes to within 1.95%. Queries and keys arrive as float16 [L, H, T, d_head].
 */

// ----- small helpers ------------------------------------------------------------------------

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// A group of controls (tokens, swatches, thumbnails) is one tab stop: the arrow keys move the
// focus, and the tab stop with it, from one member to another.
function moveFocus(event, from, to) {
  event.preventDefault();
  from.tabIndex = -1;
  to.tabIndex = 0;
  to.focus();
}

function button(parent, cls, text, title, onClick) {
  const b = el("button", "as-button " + cls, text);
  b.type = "button";
  if (title) b.title = title;
  b.addEventListener("click", onClick);
  parent.append(b);
  return b;
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

// Three significant digits, as every readout and tooltip shows a weight.
/** A number as readouts and tooltips show it: three significant digits.
 * @param {number} v @returns {string} */
function fmt(v) {
  return v === 0 ? "0" : v.toPrecision(3);
}

// One colour language (the static figures use the same ramps): weights from the page
// background to a deep blue (light theme) or to a pale blue (dark theme); signed values from
// blue (negative) through the background to red (positive).
const RAMP_STOPS = {
  light: [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]],
  dark: [[13, 17, 23], [8, 48, 107], [33, 113, 181], [107, 174, 214], [222, 235, 247]],
};

/** The 256-entry RGB lookup table of a ramp through `stops` ([[r, g, b], ...]).
 * @param {number[][]} stops @returns {Uint8Array} */
function makeRamp(stops) {
  const lut = new Uint8Array(256 * 3);
  for (let v = 0; v < 256; v++) {
    const x = (v / 255) * (stops.length - 1);
    const k = Math.min(stops.length - 2, Math.floor(x));
    const f = x - k;
    for (let c = 0; c < 3; c++) lut[v * 3 + c] = Math.round(stops[k][c] * (1 - f) + stops[k + 1][c] * f);
  }
  return lut;
}

// (replaced by the stops in the page's data, which attnscope.render.static also uses)
const RAMPS = { light: makeRamp(RAMP_STOPS.light), dark: makeRamp(RAMP_STOPS.dark) };

// Diverging colour for a value in [-1, 1]: blue (negative), white (0), red (positive).
function diverging(x) {
  const t = Math.max(-1, Math.min(1, x));
  if (t >= 0) return `rgb(${255},${Math.round(255 - 180 * t)},${Math.round(255 - 200 * t)})`;
  return `rgb(${Math.round(255 + 200 * t)},${Math.round(255 + 130 * t)},255)`;
}

// The contrast control: how a weight maps to a colour or an opacity in [0, 1].
// "linear" up to `max`, "sqrt" (small weights lifted), "log" (1e-4 .. max on a log scale).
const LOG_FLOOR = 1e-4;
/** @param {string} mode @param {number} max @returns {(v: number) => number} */
function makeScale(mode, max) {
  const top = Math.max(1e-6, max);
  if (mode === "sqrt") return (v) => (v <= 0 ? 0 : Math.min(1, Math.sqrt(v / top)));
  if (mode === "log") {
    const lo = Math.log(Math.min(LOG_FLOOR, top / 10)), span = Math.log(top) - lo;
    return (v) => (v <= 0 ? 0 : Math.max(0, Math.min(1, (Math.log(v) - lo) / span)));
  }
  return (v) => Math.min(1, v / top);
}

const SCALE_OPTIONS = [["linear", "linear"], ["sqrt", "square root"], ["log", "logarithmic"]];
const MAX_OPTIONS = [["1", "max 1"], ["0.5", "max 0.5"], ["0.2", "max 0.2"], ["0.1", "max 0.1"],
  ["0.05", "max 0.05"], ["0.01", "max 0.01"]];

// A colour bar for the current scale: a ramp with its end values and a midpoint.
function colorbar(parent) {
  const wrap = el("div", "as-colorbar");
  const canvas = el("canvas", "as-colorbar-canvas");
  const lo = el("span", "as-cb-lo"), mid = el("span", "as-cb-mid"), hi = el("span", "as-cb-hi");
  const labels = el("div", "as-cb-labels");
  labels.append(lo, mid, hi);
  wrap.append(el("span", "as-label", "weight"), canvas, labels);
  parent.append(wrap);
  function update(ramp, mode, max, scale, signed, dark) {
    const ctx = sizeCanvas(canvas, 160, 10);
    for (let x = 0; x < 160; x++) {
      if (signed) {
        const [r, g, b] = divergingRgb((x / 159) * 2 - 1, dark);
        ctx.fillStyle = `rgb(${r},${g},${b})`;
      } else {
        const k = Math.round((x / 159) * 255) * 3;
        ctx.fillStyle = `rgb(${ramp[k]},${ramp[k + 1]},${ramp[k + 2]})`;
      }
      ctx.fillRect(x, 0, 1, 10);
    }
    if (signed) {
      lo.textContent = "\u2212" + fmt(max);
      mid.textContent = "0";
      hi.textContent = "+" + fmt(max);
      return;
    }
    // label the ends and the value that maps to the middle of the ramp
    let m = 0, a = 0, b = max;
    for (let it = 0; it < 40; it++) {
      m = (a + b) / 2;
      if (scale(m) < 0.5) a = m; else b = m;
    }
    lo.textContent = mode === "log" ? "\u2264" + fmt(Math.min(LOG_FLOOR, max / 10)) : "0";
    mid.textContent = fmt(m);
    hi.textContent = (max < 1 ? "\u2265" : "") + fmt(max);
  }
  return { update, node: wrap };
}

// Saves a canvas as a PNG file through a download link (no network request is made).
function downloadCanvas(canvas, name) {
  canvas.toBlob((blob) => {
    if (!blob) return;
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }, "image/png");
}

// Saves an SVG element as a file. The markup comes from XMLSerializer, so token texts are
// escaped as XML text.
function downloadSvg(svg, name) {
  const text = new XMLSerializer().serializeToString(svg);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A tooltip that follows the pointer inside one root.
function tooltip(root) {
  const tip = el("div", "as-tip");
  tip.hidden = true;
  tip.setAttribute("role", "tooltip");
  root.append(tip);
  return {
    node: tip,
    show(lines, x, y) {
      tip.textContent = "";
      for (const line of lines) tip.append(el("div", null, line));
      tip.hidden = false;
      const box = root.getBoundingClientRect();
      tip.style.left = Math.max(0, x - box.left + 14) + "px";
      tip.style.top = Math.max(0, y - box.top + 14) + "px";
    },
    hide() {
      tip.hidden = true;
    },
  };
}

// ----- decoding -----------------------------------------------------------------------------

/** @param {string} b64 @returns {Uint8Array} */
function base64Bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// Deflated planes travel as base85 text (attnscope.render.html._to_base85): each 4 bytes, a
// big-endian number, as 5 digits; the last n < 4 bytes as n + 1 digits.
const BASE85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%()*+,-./:;=?@[]^_{|";
const BASE85_DIGIT = new Uint8Array(128);
for (let k = 0; k < 85; k++) BASE85_DIGIT[BASE85.charCodeAt(k)] = k;

/** @param {string} text @returns {Uint8Array} */
function base85Bytes(text) {
  const groups = Math.ceil(text.length / 5), pad = groups * 5 - text.length;
  const out = new Uint8Array(groups * 4);
  for (let g = 0; g < groups; g++) {
    let v = 0;
    for (let k = g * 5; k < g * 5 + 5; k++) {
      // a short last group is padded with the top digit, which restores its bytes
      v = v * 85 + (k < text.length ? BASE85_DIGIT[text.charCodeAt(k)] : 84);
    }
    out[g * 4] = v >>> 24;
    out[g * 4 + 1] = (v >>> 16) & 255;
    out[g * 4 + 2] = (v >>> 8) & 255;
    out[g * 4 + 3] = v & 255;
  }
  return out.subarray(0, out.length - pad);
}

/** @param {Uint16Array} half @returns {Float32Array} */
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

async function inflatedFloats(text) {
  const bytes = await inflate(base85Bytes(text));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2);
}

function float32s(b64) {
  const bytes = base64Bytes(b64);
  return new Float32Array(bytes.buffer, 0, bytes.length >> 2);
}

// An array spec's "b64" is one string, or a list of strings (one per first-axis slice, each
// deflated on its own when "zlib" is set) that join into the array's bytes.
/** @param {ArraySpec} spec @returns {Promise<Uint8Array | Float32Array>} */
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

// One attention part ([L, H, Tq, Tk]) with the accessors every view uses:
//   weight(l, h, i, j)   the value (within 1.95%)
//   row(l, h, i, out)    one query's weights (Float32Array Tk), for drawing
//   ensure(l)            decodes layer l's codes (layers are decoded when first needed)
/** @param {PartSpec} spec @param {ViewsPayload} P */
async function loadPart(spec, P) {
  const att = spec.att;
  const [L, H, Tq, Tk] = att.shape;
  const coarse = new Array(L).fill(null);
  const coarseLut = new Float32Array(256); // code -> ratio to the row maximum
  for (let c = 2; c < 256; c++) coarseLut[c] = Math.exp(-(att.top - c) * att.step);
  const part = {
    name: spec.name, label: spec.label, causal: spec.causal, layers: spec.layers,
    heads: spec.heads, L, H, Tq, Tk,
    rows: P.tokens[spec.rows], cols: P.tokens[spec.cols],
    rowSpecial: P.special[spec.rows], colSpecial: P.special[spec.cols],
    coarse, rowmax: await inflatedFloats(att.rowmax), tail: await inflatedFloats(att.tail),
  };
  const coarseB64 = att.codes;
  const sparse = att.dtype === "log8-sparse";
  const countsB64 = att.counts, indexB64 = att.index;
  part.sparse = sparse;
  part.threshold = sparse ? float32s(att.threshold) : null;
  part.starts = new Array(L).fill(null); // sparse: where each row's kept weights begin
  part.keys = new Array(L).fill(null); // sparse: their key indices
  att.codes = att.rowmax = att.tail = att.counts = att.index = att.threshold = null;
  const pending = new Array(L).fill(null);
  const signB64 = att.sign || null;
  part.signed = !!att.signed;
  part.signs = new Array(L).fill(null);
  att.sign = null;
  // float16 copies of every weight (short pages): what readouts and tooltips show
  const exactB64 = att.exact || null;
  part.exact = !!exactB64;
  const exacts = new Array(L).fill(null);
  att.exact = null;
  async function decodeLayer(l) {
    const bytes = await inflate(base85Bytes(coarseB64[l]));
    if (signB64) part.signs[l] = await inflate(base85Bytes(signB64[l]));
    if (exactB64) {
      const half = await inflate(base85Bytes(exactB64[l]));
      exacts[l] = halfToFloat(new Uint16Array(half.buffer, half.byteOffset, half.length >> 1));
      exactB64[l] = null;
    }
    if (sparse) {
      const c = await inflate(base85Bytes(countsB64[l]));
      const counts = new Uint16Array(c.buffer, 0, H * Tq);
      const starts = new Int32Array(H * Tq + 1);
      for (let r = 0; r < H * Tq; r++) starts[r + 1] = starts[r] + counts[r];
      const g = await inflate(base85Bytes(indexB64[l]));
      const keys = new Uint16Array(g.buffer, 0, starts[H * Tq]);
      for (let r = 0; r < H * Tq; r++) { // the gaps between kept keys become key indices
        for (let x = starts[r] + 1; x < starts[r + 1]; x++) keys[x] += keys[x - 1];
      }
      part.starts[l] = starts;
      part.keys[l] = keys;
      countsB64[l] = indexB64[l] = null;
    }
    coarse[l] = bytes;
    coarseB64[l] = null;
    return bytes;
  }
  part.ensure = (l) => {
    if (coarse[l]) return Promise.resolve(coarse[l]);
    if (!pending[l]) pending[l] = decodeLayer(l);
    return pending[l];
  };
  part.ensureAll = () => Promise.all([...Array(L).keys()].map((l) => part.ensure(l)));
  const scaled = (r, c) => part.rowmax[r] * coarseLut[c];
  // Sparse rows: the position of key j among row r's kept weights, or -1.
  const find = (l, r, j) => {
    const keys = part.keys[l];
    let lo = part.starts[l][r], hi = part.starts[l][r + 1] - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (keys[mid] === j) return mid;
      if (keys[mid] < j) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  };
  part.isKept = (l, h, i, j) => !sparse || find(l, h * Tq + i, j) >= 0;
  // signed values (a difference of two traces): bit x of the layer's sign plane is 1 for < 0
  const sign = (l, x) => (part.signs[l] && (part.signs[l][x >> 3] >> (7 - (x & 7))) & 1 ? -1 : 1);
  part.weight = (l, h, i, j) => (exacts[l] ? exacts[l][(h * Tq + i) * Tk + j]
    : sign(l, (h * Tq + i) * Tk + j) * magnitude(l, h, i, j));
  // A weight as readouts show it: three significant digits of the float16 copy, or of the
  // coded value (within 1.95%, so only two digits are sure) marked as approximate.
  part.show = (v) => (part.exact || v === 0 ? fmt(v) : "\u2248" + fmt(v));
  const magnitude = (l, h, i, j) => {
    const r = (l * H + h) * Tq + i;
    if (sparse) {
      const x = find(l, h * Tq + i, j);
      if (x >= 0) return scaled(r, coarse[l][x]);
      return part.causal && j > i ? 0 : part.tail[r];
    }
    const idx = (h * Tq + i) * Tk + j;
    const c = coarse[l][idx];
    if (c === 0) return 0;
    if (c === 1) return part.tail[r];
    return scaled(r, c);
  };
  part.row = (l, h, i, out) => {
    const codes = coarse[l];
    const r = (l * H + h) * Tq + i;
    const m = part.rowmax[r], t = part.tail[r];
    if (sparse) {
      const end = part.causal ? Math.min(Tk, i + 1) : Tk;
      out.fill(t, 0, end);
      out.fill(0, end);
      const keys = part.keys[l], s0 = part.starts[l][h * Tq + i], s1 = part.starts[l][h * Tq + i + 1];
      for (let x = s0; x < s1; x++) out[keys[x]] = m * coarseLut[codes[x]];
      return out;
    }
    const base = (h * Tq + i) * Tk;
    for (let j = 0; j < Tk; j++) {
      const c = codes[base + j];
      out[j] = c > 1 ? m * coarseLut[c] : (c === 1 ? t : 0);
    }
    if (part.signed) for (let j = 0; j < Tk; j++) out[j] *= sign(l, base + j);
    return out;
  };
  // Sparse rows only: calls fn(j, value) for each kept weight of a row.
  part.eachKept = (l, h, i, fn) => {
    const codes = coarse[l], keys = part.keys[l];
    const m = part.rowmax[(l * H + h) * Tq + i];
    for (let x = part.starts[l][h * Tq + i]; x < part.starts[l][h * Tq + i + 1]; x++) {
      fn(keys[x], m * coarseLut[codes[x]]);
    }
  };
  // After the first drawing: every other layer's codes, a layer per task.
  part.loadRest = async () => {
    for (let l = 0; l < L; l++) {
      await part.ensure(l);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  };
  return part;
}

/** @param {ViewsPayload} P */
async function loadArrays(P) {
  const parts = {};
  for (const spec of P.parts) parts[spec.name] = await loadPart(spec, P);
  // what the first view draws: one layer for the head view, every layer otherwise
  const first = parts[P.initial.part] || Object.values(parts)[0];
  if (P.kinds[0] === "head") await first.ensure(P.initial.layer);
  else if (P.kinds[0] === "neuron") await parts.self.ensure(P.initial.layer);
  else if (P.kinds[0] === "model") await Promise.all(Object.values(parts).map((p) => p.ensureAll()));
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
  // (performance.now() at each stage of opening, for the benchmark)
  const marks = { mount: performance.now() };
  const P = JSON.parse(root.querySelector(".attnscope-data").textContent);
  marks.parsed = performance.now();
  if (P.ramp) { // the colour stops the static figures use too
    RAMPS.light = makeRamp(P.ramp[0]);
    RAMPS.dark = makeRamp(P.ramp[1]);
  }
  if (P.theme === "dark") root.classList.add("as-dark");
  // Tests and tools reach a view's state through the element, never through a global.
  const api = { views: {}, payload: P, marks };
  root.attnscope = api;
  loadArrays(P).then((A) => {
    marks.decoded = performance.now();
    if (status) status.remove();
    build(root, P, A, api);
    marks.drawn = performance.now();
    root.dataset.ready = "1";
    return Promise.all(Object.values(A.parts).map((p) => p.loadRest()));
  }).then(() => {
    root.dataset.exact = "1";
    for (const view of Object.values(api.views)) if (view.refresh) view.refresh();
  }).catch((err) => {
    const box = status && status.isConnected ? status : root.appendChild(el("div", "as-status"));
    box.textContent = "attnscope: " + err.message;
    root.dataset.error = String(err && err.message);
  });
}

/** @param {HTMLElement} root @param {ViewsPayload} P @param {any} A @param {any} api */
function build(root, P, A, api) {
  const header = el("div", "as-header");
  header.append(el("span", "as-title", P.title));
  if (P.subtitle) header.append(el("span", "as-subtitle", P.subtitle));
  root.append(header);
  const tip = tooltip(root);
  const makers = { head: headView, model: modelView, neuron: neuronView, tokens: tokensView,
    generation: generationView, long: longView };
  const names = { head: "Head view", model: "Model view", neuron: "Neuron view", tokens: "Tokens",
    generation: "Generation", long: "Long text" };
  const tabs = el("div", "as-tabs");
  tabs.setAttribute("role", "tablist");
  if (P.kinds.length > 1) root.append(tabs);
  const panels = {};
  for (const kind of P.kinds) {
    const panel = el("div", "as-panel as-" + kind);
    panel.dataset.kind = kind;
    panels[kind] = panel;
    root.append(panel);
    if (P.kinds.length > 1) {
      const b = el("button", "as-tab", names[kind]);
      b.type = "button";
      b.setAttribute("role", "tab");
      b.dataset.kind = kind;
      b.addEventListener("click", () => show(kind));
      tabs.append(b);
    }
  }
  // A view is drawn the first time its tab opens, so a page with four views opens as fast
  // as a page with one.
  function show(kind) {
    for (const k of P.kinds) panels[k].hidden = k !== kind;
    for (const b of tabs.children) {
      b.classList.toggle("as-active", b.dataset.kind === kind);
      b.setAttribute("aria-selected", String(b.dataset.kind === kind));
    }
    if (!api.views[kind]) api.views[kind] = makers[kind](panels[kind], P, A, { tip, root });
  }
  api.show = show;
  show(P.kinds[0]);
}

// Controls shared by the head and model views: the contrast (scale and its maximum).
function contrastControls(controls, st, onChange) {
  selectField(controls, "Scale", SCALE_OPTIONS, st.scaleMode, (v) => {
    st.scaleMode = v;
    onChange();
  }).parentElement.classList.add("as-scale");
  selectField(controls, "Contrast", MAX_OPTIONS, String(st.scaleMax), (v) => {
    st.scaleMax = Number(v);
    onChange();
  }).parentElement.classList.add("as-contrast");
}

// ----- head view ----------------------------------------------------------------------------

const HV_WIDTH = 240;
const BAR_W = 36; // per-head bars beside the tokens a hovered token attends to
const MIN_LINE = 0.01; // lines for weights under 0.01 are not drawn unless a token is hovered
const HOVER_LINES = 40; // at most this many lines per head from a hovered token
const BAND = 1024; // the drawing is done in horizontal bands, the visible one first

function headView(panel, P, A, ctxs) {
  const init = P.initial;
  const maxT = Math.max(...P.parts.map((p) => Math.max(p.att.shape[2], p.att.shape[3])));
  const st = { part: init.part, layer: init.layer, active: new Set(), hover: null, pinned: null,
    filter: "all", drawn: 0, topk: maxT <= 16 ? 0 : maxT <= 160 ? 3 : 1, scaleMode: "linear", scaleMax: 1,
    complete: false, timings: {} };
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
      st.hover = st.pinned = null;
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
  selectField(controls, "Lines", [[0, "all \u2265 0.01"], [1, "strongest 1 per token"],
    [3, "strongest 3 per token"], [10, "strongest 10 per token"]], st.topk, (v) => {
    st.topk = Number(v);
    draw();
  }).parentElement.classList.add("as-topk");
  contrastControls(controls, st, () => draw());
  button(controls, "as-export", "Save PNG", "save the drawing as a PNG file", () => exportPng());
  button(controls, "as-export-svg", "Save SVG",
    "save the lines shown (without a hovered token) and the tokens as an SVG file", () => exportSvg());
  const swatches = el("div", "as-heads");
  swatches.setAttribute("role", "group");
  swatches.setAttribute("aria-label", "heads");
  panel.append(swatches);
  const note = el("div", "as-note");
  panel.append(note);
  const readout = el("div", "as-readout", "\u00a0");
  readout.setAttribute("aria-live", "polite");
  panel.append(readout);
  const body = el("div", "as-hv-body");
  const left = el("div", "as-hv-col as-hv-left");
  const canvas = el("canvas", "as-hv-canvas");
  const right = el("div", "as-hv-col as-hv-right");
  body.append(left, canvas, right);
  panel.append(body);
  let ctx = null;
  let rowH = 20;
  let canvasH = 0;
  let base = null; // the full drawing (no token hovered), kept as a bitmap once complete
  let job = 0; // the drawing in progress; a newer drawing cancels older ones

  function tokenColumn(col, tokens, special, side) {
    col.textContent = "";
    col.setAttribute("role", "listbox");
    col.setAttribute("aria-label", side === "q" ? "query tokens" : "key tokens");
    tokens.forEach((tok, i) => {
      const node = el("div", "as-tok" + (special[i] ? " as-special" : ""), tok);
      node.dataset.index = String(i);
      node.dataset.side = side;
      node.tabIndex = i === 0 ? 0 : -1; // one tab stop per column; arrow keys move inside it
      node.setAttribute("role", "option");
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
      const sw = el("button", "as-swatch", String(p.heads[h]));
      sw.type = "button";
      sw.style.background = P.colors[h % P.colors.length];
      sw.dataset.head = String(h);
      sw.tabIndex = h === 0 ? 0 : -1; // one tab stop; arrow keys move between heads
      sw.title = "head " + p.heads[h] + ": click (or Enter) to show or hide, double-click to show alone";
      sw.addEventListener("click", () => {
        st.active.has(h) ? st.active.delete(h) : st.active.add(h);
        draw();
      });
      sw.addEventListener("dblclick", () => {
        st.active = new Set([h]);
        draw();
      });
      sw.addEventListener("keydown", (e) => {
        const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
        if (step) moveFocus(e, sw, swatches.children[(h + step + p.H) % p.H]);
      });
      swatches.append(sw);
    }
    const n = Math.max(p.Tq, p.Tk);
    rowH = n <= 64 ? 20 : n <= 1024 ? 16 : 12;
    tokenColumn(left, p.rows, p.rowSpecial, "q");
    tokenColumn(right, p.cols, p.colSpecial, "k");
    canvasH = n * rowH;
    ctx = sizeCanvas(canvas, HV_WIDTH, canvasH);
    const notes = [];
    if (p.causal) notes.push("Causal attention: each token attends only to itself and earlier tokens.");
    if (p.name === "cross") notes.push("Decoder tokens (left) attend to encoder tokens (right).");
    notes.push("Hover a token to keep only its lines; click it (or Enter) to pin it, then " +
      "hover a token on the other side for the weights. Arrow keys move between tokens.");
    note.textContent = notes.join(" ");
    draw();
  }

  function inSide(i, which) {
    const b = P.sentence_b_start;
    return which === "A" ? i < b : i >= b;
  }

  function currentFilter() {
    const p = part();
    return p.name === "self" && P.sentence_b_start != null && st.filter !== "all" ? st.filter : null;
  }

  // The lines of the full drawing: for each visible head and query token, its strongest keys
  // (or every weight >= 0.01), as flat arrays grouped later by colour and opacity. Each
  // head's lines are kept, so showing or hiding a head collects nothing again.
  let cacheKey = "";
  const cache = new Map();
  function collectLines() {
    const key = [st.part, st.layer, st.topk, st.filter, st.scaleMode, st.scaleMax].join("|");
    if (key !== cacheKey) {
      cache.clear();
      cacheKey = key;
    }
    const heads = [...st.active].sort((a, b) => a - b);
    const lists = heads.map((h) => cache.get(h) || cache.set(h, headLines(h)).get(h));
    const n = lists.reduce((sum, x) => sum + x.n, 0);
    const out = { y0: new Int32Array(n), y1: new Int32Array(n), hd: new Uint8Array(n),
      lv: new Uint8Array(n), n };
    let at = 0;
    for (const x of lists) {
      out.y0.set(x.y0.subarray(0, x.n), at);
      out.y1.set(x.y1.subarray(0, x.n), at);
      out.hd.set(x.hd.subarray(0, x.n), at);
      out.lv.set(x.lv.subarray(0, x.n), at);
      at += x.n;
    }
    return out;
  }

  function headLines(h) {
    const p = part();
    const { Tq, Tk } = p;
    const filter = currentFilter();
    const scale = makeScale(st.scaleMode, st.scaleMax);
    const k = st.topk;
    const rowVals = new Float32Array(Tk);
    const cap = Tq * (k || 8) + 16;
    let y0 = new Int32Array(cap), y1 = new Int32Array(cap), hd = new Uint8Array(cap);
    let lv = new Uint8Array(cap);
    let n = 0;
    const topJ = new Int32Array(Math.max(1, k)), topV = new Float32Array(Math.max(1, k));
    const push = (i, j, v) => {
      if (n === y0.length) {
        const grow = (a) => {
          const b = new a.constructor(a.length * 2);
          b.set(a);
          return b;
        };
        y0 = grow(y0); y1 = grow(y1); hd = grow(hd); lv = grow(lv);
      }
      y0[n] = i; y1[n] = j; hd[n] = h;
      lv[n] = Math.max(1, Math.round(scale(v) * 32));
      n++;
    };
    // candidates of row i: every key (dense), or the kept ones (sparse rows: every weight
    // not kept is below them)
    const candJ = new Int32Array(Tk), candV = new Float32Array(Tk);
    const IDENTITY = new Int32Array(Tk).map((_, j) => j);
    for (let i = 0; i < Tq; i++) {
      if (filter && !inSide(i, filter[0])) continue;
      const jEnd = p.causal ? Math.min(Tk, i + 1) : Tk;
      let nc = 0;
      let cj = candJ, cv = candV;
      if (p.sparse) {
        p.eachKept(st.layer, h, i, (j, v) => {
          candJ[nc] = j;
          candV[nc++] = v;
        });
      } else { // every key of the row, in order: the row itself, no copy
        p.row(st.layer, h, i, rowVals);
        cj = IDENTITY;
        cv = rowVals;
        nc = jEnd;
      }
      if (!k) {
        for (let x = 0; x < nc; x++) {
          const j = cj[x];
          if (cv[x] < MIN_LINE || j >= jEnd || (filter && !inSide(j, filter[1]))) continue;
          push(i, j, cv[x]);
        }
        continue;
      }
      let m = 0;
      for (let x = 0; x < nc; x++) {
        const j = cj[x], v = cv[x];
        if (v <= 0 || j >= jEnd || (m === k && v <= topV[m - 1]) || (filter && !inSide(j, filter[1]))) continue;
        let at = m < k ? m++ : k - 1;
        while (at > 0 && topV[at - 1] < v) {
          topV[at] = topV[at - 1];
          topJ[at] = topJ[at - 1];
          at--;
        }
        topV[at] = v;
        topJ[at] = j;
      }
      for (let t = 0; t < m; t++) push(i, topJ[t], topV[t]);
    }
    return { y0, y1, hd, lv, n };
  }

  // Strokes the lines that cross the band [top, bottom) of the canvas, clipped to it.
  function strokeBand(lines, top, bottom) {
    const half = rowH / 2;
    const paths = new Map();
    for (let t = 0; t < lines.n; t++) {
      const a = lines.y0[t] * rowH + half, b = lines.y1[t] * rowH + half;
      if ((a < top && b < top) || (a >= bottom && b >= bottom)) continue;
      const key = lines.hd[t] * 64 + lines.lv[t];
      let path = paths.get(key);
      if (!path) paths.set(key, (path = new Path2D()));
      path.moveTo(0, a);
      path.lineTo(HV_WIDTH, b);
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, top, HV_WIDTH, bottom - top);
    ctx.clip();
    ctx.clearRect(0, top, HV_WIDTH, bottom - top);
    // Hairlines have a fast path in the rasterizer: many lines get them, a few get 2 px.
    ctx.lineWidth = lines.n <= 1500 ? 2 : 1;
    for (const [key, path] of paths) {
      ctx.strokeStyle = P.colors[(key >> 6) % P.colors.length];
      ctx.globalAlpha = Math.min(1, (key & 63) / 32);
      ctx.stroke(path);
    }
    ctx.restore();
  }

  // The part of the canvas inside the window (or the first screenful if none is).
  function visibleBand() {
    const r = canvas.getBoundingClientRect();
    let top = Math.max(0, -r.top), bottom = Math.min(canvasH, window.innerHeight - r.top);
    if (bottom <= top) {
      top = 0;
      bottom = Math.min(canvasH, BAND);
    }
    return [Math.floor(top), Math.ceil(bottom)];
  }

  // The full drawing: the visible band at once, the rest in later tasks (so a click or a
  // hover is never kept waiting), then kept as a bitmap for when the pointer leaves a token.
  function drawBase() {
    const mine = ++job;
    st.complete = false;
    base = null;
    const lines = collectLines();
    st.drawn = lines.n;
    const [top, bottom] = visibleBand();
    strokeBand(lines, top, bottom);
    const bands = [];
    for (let y = bottom; y < canvasH; y += BAND) bands.push([y, Math.min(canvasH, y + BAND)]);
    for (let y = top; y > 0; y -= BAND) bands.push([Math.max(0, y - BAND), y]);
    const next = () => {
      if (mine !== job) return;
      const band = bands.shift();
      if (band) {
        strokeBand(lines, band[0], band[1]);
        setTimeout(next, 0);
        return;
      }
      base = document.createElement("canvas");
      base.width = canvas.width;
      base.height = canvas.height;
      base.getContext("2d").drawImage(canvas, 0, 0);
      st.complete = true;
    };
    setTimeout(next, 0);
  }

  // Lines of the hovered (or pinned) token only, with per-head bars beside the other side's
  // tokens, the way bertviz shows them.
  function drawHover(tok) {
    job++;
    const p = part();
    const { Tq, Tk } = p;
    const filter = currentFilter();
    const scale = makeScale(st.scaleMode, st.scaleMax);
    const heads = [...st.active].sort((a, b) => a - b);
    const half = rowH / 2;
    ctx.clearRect(0, 0, HV_WIDTH, canvasH);
    ctx.lineWidth = 1.5;
    const vals = new Float32Array(tok.side === "q" ? Tk : Tq);
    const barH = Math.max(1, (rowH - 2) / Math.max(1, heads.length));
    let drawn = 0;
    heads.forEach((h, slot) => {
      if (tok.side === "q") p.row(st.layer, h, tok.index, vals);
      else for (let i = 0; i < Tq; i++) vals[i] = p.weight(st.layer, h, i, tok.index);
      const order = [];
      for (let x = 0; x < vals.length; x++) {
        const [i, j] = tok.side === "q" ? [tok.index, x] : [x, tok.index];
        if (vals[x] <= 0 || (p.causal && j > i)) continue;
        if (filter && (!inSide(i, filter[0]) || !inSide(j, filter[1]))) continue;
        order.push(x);
      }
      order.sort((a, b) => vals[b] - vals[a]);
      ctx.strokeStyle = ctx.fillStyle = P.colors[h % P.colors.length];
      const barX = tok.side === "q" ? HV_WIDTH - BAR_W : 0;
      for (let t = 0; t < order.length; t++) {
        const x = order[t];
        const s = scale(vals[x]);
        ctx.globalAlpha = 1;
        const w = Math.max(1, s * BAR_W);
        ctx.fillRect(tok.side === "q" ? barX : barX, x * rowH + 1 + slot * barH, w, barH);
        if (t >= HOVER_LINES || s < 0.01) continue;
        ctx.globalAlpha = Math.max(0.05, s);
        ctx.beginPath();
        const a = (tok.side === "q" ? tok.index : x) * rowH + half;
        const b = (tok.side === "q" ? x : tok.index) * rowH + half;
        ctx.moveTo(tok.side === "q" ? 0 : BAR_W, a);
        ctx.lineTo(tok.side === "q" ? HV_WIDTH - BAR_W : HV_WIDTH, b);
        ctx.stroke();
        drawn++;
      }
    });
    ctx.globalAlpha = 1;
    st.drawn = drawn;
  }

  function markTokens() {
    const hov = st.hover || st.pinned;
    for (const [col, side] of [[left, "q"], [right, "k"]]) {
      const prev = col.querySelectorAll(".as-hot, .as-pinned");
      for (const node of prev) node.classList.remove("as-hot", "as-pinned");
      if (hov && hov.side === side && col.children[hov.index]) col.children[hov.index].classList.add("as-hot");
      if (st.pinned && st.pinned.side === side && col.children[st.pinned.index]) {
        col.children[st.pinned.index].classList.add("as-pinned");
      }
    }
  }

  // Redraws after any change of state; the pointer leaving a token restores the kept bitmap.
  function draw(reason) {
    const t0 = performance.now();
    if (!part().coarse[st.layer]) { // a layer not decoded yet: decode it, then draw
      part().ensure(st.layer).then(() => draw(reason));
      return;
    }
    for (const sw of swatches.children) {
      const on = st.active.has(Number(sw.dataset.head));
      sw.classList.toggle("as-off", !on);
      sw.setAttribute("aria-pressed", String(on));
    }
    const tok = st.hover || st.pinned;
    if (tok) drawHover(tok);
    else if (reason === "leave" && base) {
      job++;
      ctx.save();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(base, 0, 0);
      ctx.restore();
      st.complete = true;
    } else drawBase();
    markTokens();
    st.timings.draw = performance.now() - t0;
  }

  function tokenOf(node) {
    return { side: node.dataset.side, index: Number(node.dataset.index) };
  }

  // With a token pinned, the other side's token under the pointer gets the weights per head.
  function describe(tok) {
    const p = part();
    const pin = st.pinned;
    if (!pin || pin.side === tok.side) {
      readout.textContent = "\u00a0";
      ctxs.tip.hide();
      return null;
    }
    const [i, j] = pin.side === "q" ? [pin.index, tok.index] : [tok.index, pin.index];
    const lines = [`${p.rows[i]} \u2192 ${p.cols[j]} (query ${i}, key ${j}), layer ${p.layers[st.layer]}`];
    for (const h of [...st.active].sort((a, b) => a - b)) {
      const masked = p.causal && j > i;
      const kept = masked || p.isKept(st.layer, h, i, j) ? "" : " (not kept; the mean of the rest)";
      lines.push(`head ${p.heads[h]}: ${masked ? "masked" : p.show(p.weight(st.layer, h, i, j))}${kept}`);
    }
    readout.textContent = lines.join("; ");
    return lines;
  }

  function enter(node, event) {
    const tok = tokenOf(node);
    if (st.pinned && st.pinned.side !== tok.side) {
      const lines = describe(tok);
      const r = node.getBoundingClientRect();
      if (lines) ctxs.tip.show(lines, event ? event.clientX : r.right, event ? event.clientY : r.top);
      st.hover = null;
      for (const n of (tok.side === "q" ? left : right).querySelectorAll(".as-hot")) n.classList.remove("as-hot");
      node.classList.add("as-hot");
      return;
    }
    st.hover = tok;
    draw("hover");
  }

  function leave() {
    ctxs.tip.hide();
    if (st.hover === null) return;
    st.hover = null;
    draw(st.pinned ? "hover" : "leave");
  }

  function pin(node) {
    const tok = tokenOf(node);
    const same = st.pinned && st.pinned.side === tok.side && st.pinned.index === tok.index;
    st.pinned = same ? null : tok;
    st.hover = null;
    ctxs.tip.hide();
    readout.textContent = st.pinned ? "Pinned " + (tok.side === "q" ? "query " : "key ") +
      tok.index + ": hover a token on the other side for the weights." : "\u00a0";
    draw(st.pinned ? "hover" : "leave");
  }

  for (const col of [left, right]) {
    col.addEventListener("mouseover", (event) => {
      const node = event.target.closest(".as-tok");
      if (node) enter(node, event);
    });
    col.addEventListener("mouseout", (event) => {
      const node = event.target.closest(".as-tok");
      if (!node || (event.relatedTarget && node.contains(event.relatedTarget))) return;
      if (event.relatedTarget && event.relatedTarget.closest && event.relatedTarget.closest(".as-tok")) return;
      leave();
    });
    col.addEventListener("click", (event) => {
      const node = event.target.closest(".as-tok");
      if (node) pin(node);
    });
    col.addEventListener("focusin", (event) => {
      const node = event.target.closest(".as-tok");
      if (node) enter(node, null);
    });
    col.addEventListener("keydown", (event) => {
      const node = event.target.closest(".as-tok");
      if (!node) return;
      const i = Number(node.dataset.index);
      let target = null;
      if (event.key === "ArrowDown") target = col.children[Math.min(col.children.length - 1, i + 1)];
      else if (event.key === "ArrowUp") target = col.children[Math.max(0, i - 1)];
      else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        const other = col === left ? right : left;
        target = other.children[Math.min(other.children.length - 1, i)];
      } else if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        pin(node);
        return;
      } else if (event.key === "Escape") {
        st.pinned = null;
        leave();
        draw("leave");
        return;
      }
      if (target) moveFocus(event, node, target);
    });
  }
  body.addEventListener("mouseleave", leave);

  // The full drawing (the lines the current settings keep) as vector lines with the tokens.
  function exportSvg() {
    const p = part();
    const labelW = 140, w = HV_WIDTH + 2 * labelW;
    const dark = P.theme === "dark";
    const svg = svgEl("svg", { xmlns: "http://www.w3.org/2000/svg", width: w, height: canvasH,
      viewBox: `0 0 ${w} ${canvasH}`, "font-family": "monospace", "font-size": 12 });
    svg.append(svgEl("rect", { width: w, height: canvasH, fill: dark ? "#0d1117" : "#ffffff" }));
    const lines = collectLines();
    const half = rowH / 2;
    for (let t = 0; t < lines.n; t++) {
      svg.append(svgEl("line", { x1: labelW, y1: lines.y0[t] * rowH + half, x2: labelW + HV_WIDTH,
        y2: lines.y1[t] * rowH + half, stroke: P.colors[lines.hd[t] % P.colors.length],
        "stroke-opacity": Math.min(1, lines.lv[t] / 32).toFixed(3), "stroke-width": 1.5 }));
    }
    const ink = dark ? "#e6edf3" : "#1f2328";
    p.rows.forEach((tok, i) => svg.append(svgEl("text", { x: labelW - 4, y: i * rowH + half,
      "text-anchor": "end", "dominant-baseline": "middle", fill: ink }, tok)));
    p.cols.forEach((tok, j) => svg.append(svgEl("text", { x: labelW + HV_WIDTH + 4, y: j * rowH + half,
      "dominant-baseline": "middle", fill: ink }, tok)));
    downloadSvg(svg, `attention-layer${p.layers[st.layer]}.svg`);
    st.exported = lines.n;
    return svg;
  }

  function exportPng() {
    const p = part();
    const labelW = 140;
    const out = document.createElement("canvas");
    const octx = sizeCanvas(out, HV_WIDTH + 2 * labelW, canvasH);
    const dark = P.theme === "dark";
    octx.fillStyle = dark ? "#0d1117" : "#ffffff";
    octx.fillRect(0, 0, HV_WIDTH + 2 * labelW, canvasH);
    octx.drawImage(canvas, labelW, 0, HV_WIDTH, canvasH);
    octx.fillStyle = dark ? "#e6edf3" : "#1f2328";
    octx.font = "12px monospace";
    octx.textBaseline = "middle";
    octx.textAlign = "right";
    p.rows.forEach((t, i) => octx.fillText(t, labelW - 4, i * rowH + rowH / 2, labelW - 8));
    octx.textAlign = "left";
    p.cols.forEach((t, j) => octx.fillText(t, labelW + HV_WIDTH + 4, j * rowH + rowH / 2, labelW - 8));
    downloadCanvas(out, `attention-layer${p.layers[st.layer]}.png`);
    return out;
  }

  rebuild();
  return { state: st, canvas, redraw: draw, exportPng, exportSvg, refresh: () => {} };
}

// ----- model view ---------------------------------------------------------------------------

const THUMB_RES = 96; // a thumbnail has at most 96 x 96 cells; each shows its block's maximum
const DETAIL_SIDE = 560;
const LABEL_ROOM = 11; // pixels a token label needs

// The largest weight of each block of cells [i0, i1) x [j0, j1) of one head, on a grid of
// (rows x cols) blocks: Float32Array(rows * cols). With `onlyRow` set, every other query row
// is -1 (drawn grey).
/** Pools one head [Tq, Tk] into rows x cols pixels, each the largest weight of its block
 * (signed: the value of largest magnitude); NaN for rows left out by `onlyRow`.
 * @returns {Float32Array} */
function headBlocks(p, layer, head, rows, cols, view, onlyRow) {
  const { i0, i1, j0, j1 } = view;
  const out = new Float32Array(rows * cols);
  const colStart = new Int32Array(cols + 1);
  for (let c = 0; c <= cols; c++) colStart[c] = j0 + Math.floor((c * (j1 - j0)) / cols);
  const vals = new Float32Array(p.Tk);
  const colOf = new Int32Array(j1 - j0); // the pixel column of each key
  for (let c = 0; c < cols; c++) colOf.fill(c, colStart[c] - j0, colStart[c + 1] - j0);
  const isolated = onlyRow !== null && onlyRow !== undefined;
  for (let r = 0; r < rows; r++) {
    const block = out.subarray(r * cols, (r + 1) * cols);
    let a = i0 + Math.floor((r * (i1 - i0)) / rows), b = i0 + Math.floor(((r + 1) * (i1 - i0)) / rows);
    if (b === a) b = a + 1;
    if (isolated) {
      if (onlyRow < a || onlyRow >= b) {
        block.fill(NaN);
        continue;
      }
      a = onlyRow;
      b = onlyRow + 1;
    }
    for (let i = a; i < b; i++) {
      if (p.sparse) { // the row's mean of the rest, then its kept weights
        const t = p.tail[(layer * p.H + head) * p.Tq + i];
        const end = p.causal ? i + 1 : p.Tk;
        for (let c = 0; c < cols && colStart[c] < end; c++) if (t > block[c]) block[c] = t;
        p.eachKept(layer, head, i, (j, v) => {
          if (j < j0 || j >= j1) return;
          const c = colOf[j - j0];
          if (v > block[c]) block[c] = v;
        });
        continue;
      }
      p.row(layer, head, i, vals);
      if (p.signed) { // the value of largest magnitude
        for (let c = 0; c < cols; c++) {
          let m = block[c];
          for (let j = colStart[c]; j < colStart[c + 1]; j++) if (Math.abs(vals[j]) > Math.abs(m)) m = vals[j];
          block[c] = m;
        }
        continue;
      }
      for (let c = 0; c < cols; c++) {
        let m = block[c];
        for (let j = colStart[c]; j < colStart[c + 1]; j++) if (vals[j] > m) m = vals[j];
        block[c] = m;
      }
    }
  }
  return out;
}

// Blue (negative) through the background to red (positive), for t in [-1, 1]: the static
// figures' "RdBu_r" ends.
function divergingRgb(t, dark) {
  const bg = dark ? [13, 17, 23] : [255, 255, 255];
  const end = t >= 0 ? [178, 24, 43] : [33, 102, 172];
  const a = Math.min(1, Math.abs(t));
  return [0, 1, 2].map((c) => Math.round(bg[c] * (1 - a) + end[c] * a));
}

// One head as an ImageData of (rows x cols) pixels in the weight ramp.
function headImage(ctx, p, layer, head, rows, cols, view, onlyRow, scale, ramp, grey) {
  const blocks = headBlocks(p, layer, head, rows, cols, view, onlyRow);
  const img = ctx.createImageData(cols, rows);
  const px = img.data;
  const dark = grey < 128;
  for (let x = 0; x < blocks.length; x++) {
    const o = x * 4;
    if (p.signed && !Number.isNaN(blocks[x])) {
      const v = blocks[x];
      const [r, g, b] = divergingRgb(Math.sign(v) * scale(Math.abs(v)), dark);
      px[o] = r;
      px[o + 1] = g;
      px[o + 2] = b;
    } else if (Number.isNaN(blocks[x])) { // a row the hovered token leaves out
      px[o] = px[o + 1] = px[o + 2] = grey;
    } else {
      const k = Math.round(scale(blocks[x]) * 255) * 3;
      px[o] = ramp[k];
      px[o + 1] = ramp[k + 1];
      px[o + 2] = ramp[k + 2];
    }
    px[o + 3] = 255;
  }
  return img;
}

function hexRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

// Every head of one layer in one image, each head in its own colour (as CircuitsVis draws
// them): each head's tint, as strong as its weight, is laid over the background.
function combinedImage(ctx, p, layer, rows, cols, view, scale, colors, dark) {
  const img = ctx.createImageData(cols, rows);
  const px = img.data;
  const bg = dark ? [13, 17, 23] : [255, 255, 255];
  const acc = new Float32Array(rows * cols * 3);
  const total = new Float32Array(rows * cols);
  for (let h = 0; h < p.H; h++) {
    const blocks = headBlocks(p, layer, h, rows, cols, view, null);
    const rgb = hexRgb(colors[h % colors.length]);
    for (let x = 0; x < blocks.length; x++) {
      const s = scale(blocks[x]);
      if (s <= 0) continue;
      total[x] += s;
      acc[x * 3] += s * rgb[0];
      acc[x * 3 + 1] += s * rgb[1];
      acc[x * 3 + 2] += s * rgb[2];
    }
  }
  for (let x = 0; x < total.length; x++) {
    const strength = Math.min(1, total[x]); // how much colour, and which: the heads' mix
    for (let c = 0; c < 3; c++) {
      const hue = total[x] > 0 ? acc[x * 3 + c] / total[x] : bg[c];
      px[x * 4 + c] = Math.round(bg[c] * (1 - strength) + hue * strength);
    }
    px[x * 4 + 3] = 255;
  }
  return img;
}

function modelView(panel, P, A, ctxs) {
  const st = { part: P.initial.part, open: null, hover: null, scaleMode: "linear", scaleMax: 1,
    zoom: null, filter: "all", combined: false, source: null };
  const part = () => A.parts[st.part];
  const dark = P.theme === "dark";
  const ramp = RAMPS[dark ? "dark" : "light"];
  const grey = dark ? 40 : 232;
  const controls = el("div", "as-controls");
  panel.append(controls);
  // With a context-mixing measure (P.parts' "mixing" part: one "head" a layer, its scores),
  // the selector switches between raw attention and the measure.
  const withMeasure = P.parts.some((p) => p.measure);
  const measureOf = () => P.parts.find((p) => p.name === st.part).measure;
  if (P.parts.length > 1) {
    const field = selectField(controls, withMeasure ? "Measure" : "Attention",
      P.parts.map((p) => [p.name, p.label]), st.part, (v) => setPart(v));
    field.parentElement.classList.add("as-part");
  }
  // Shows another part (or the measure); resolves once its thumbnails are drawn.
  function setPart(v) {
    st.part = v;
    st.open = null;
    st.hover = null;
    rebuild();
    return part().ensureAll();
  }
  let filterField = null;
  if (P.sentence_b_start !== null && P.sentence_b_start !== undefined) {
    const opts = [["all", "All"], ["AA", "Sentence A \u2192 A"], ["AB", "Sentence A \u2192 B"],
      ["BA", "Sentence B \u2192 A"], ["BB", "Sentence B \u2192 B"]];
    filterField = selectField(controls, "Pairs", opts, "all", (v) => {
      st.filter = v;
      drawThumbs();
      if (st.open) resetZoom();
    });
    filterField.parentElement.classList.add("as-filter");
  }
  contrastControls(controls, st, () => {
    drawThumbs();
    drawDetail();
    legend();
    colourStrip();
  });
  button(controls, "as-combine", "All heads in one image",
    "add a column with every head of a layer in one image, each head in its colour", () => {
      st.combined = !st.combined;
      rebuild();
    });
  const bar = colorbar(controls);
  const legend = () => bar.update(ramp, st.scaleMode, st.scaleMax,
    makeScale(st.scaleMode, st.scaleMax), part().signed, dark);
  panel.append(el("div", "as-note",
    "Every layer (rows) and head (columns). Click a head (or Enter) to open it; hover a token " +
    "to keep only its row; click a token to colour the text by the attention it pays (in the " +
    "opened head, or averaged over every head). Arrow keys move between heads; Escape closes " +
    "the opened head."));
  const strip = el("div", "as-tokstrip");
  const stage = el("div", "as-stage");
  const grid = el("div", "as-grid");
  grid.setAttribute("role", "grid");
  const detail = el("div", "as-detail");
  detail.hidden = true;
  detail.setAttribute("role", "dialog");
  stage.append(grid, detail);
  panel.append(strip, stage);
  let thumbs = [];
  let combined = [];

  // The cells the sentence-pair filter keeps: queries and keys of sentence A or B.
  function bounds() {
    const p = part();
    const b = P.sentence_b_start;
    const range = (side, n) => (side === "A" ? [0, Math.min(b, n)] : [Math.min(b, n), n]);
    if (st.filter === "all" || p.name !== "self" || b === null || b === undefined) {
      return { i0: 0, i1: p.Tq, j0: 0, j1: p.Tk };
    }
    const [i0, i1] = range(st.filter[0], p.Tq), [j0, j1] = range(st.filter[1], p.Tk);
    return { i0, i1, j0, j1 };
  }

  function rebuild() {
    const p = part();
    strip.textContent = "";
    p.rows.forEach((tok, i) => {
      const node = el("span", "as-tok" + (p.rowSpecial[i] ? " as-special" : ""), tok);
      node.dataset.index = String(i);
      strip.append(node);
    });
    grid.textContent = "";
    filterField && (filterField.parentElement.hidden = p.name !== "self");
    grid.style.gridTemplateColumns = `auto repeat(${p.H + (st.combined ? 1 : 0)}, auto)`;
    grid.append(el("div", "as-corner"));
    for (let h = 0; h < p.H; h++) grid.append(el("div", "as-collabel", measureOf() ? "score" : "H" + p.heads[h]));
    if (st.combined) grid.append(el("div", "as-collabel", "all"));
    combined = [];
    thumbs = [];
    for (let l = 0; l < p.L; l++) {
      grid.append(el("div", "as-rowlabel", "L" + p.layers[l]));
      for (let h = 0; h < p.H; h++) {
        const c = el("canvas", "as-thumb");
        c.width = Math.min(p.Tk, THUMB_RES);
        c.height = Math.min(p.Tq, THUMB_RES);
        c.dataset.layer = String(l);
        c.dataset.head = String(h);
        c.tabIndex = l === 0 && h === 0 ? 0 : -1;
        c.setAttribute("role", "gridcell");
        const what = measureOf() ? `layer ${p.layers[l]}: ${p.label}` : `layer ${p.layers[l]}, head ${p.heads[h]}`;
        c.setAttribute("aria-label", what);
        c.title = what;
        c.addEventListener("click", () => open(l, h));
        grid.append(c);
        thumbs.push(c);
      }
      if (st.combined) {
        const c = el("canvas", "as-thumb as-combined");
        c.dataset.layer = String(l);
        c.title = `layer ${p.layers[l]}: every head, each in its colour`;
        grid.append(c);
        combined.push(c);
      }
    }
    detail.hidden = true;
    drawThumbs();
    legend();
  }

  function drawThumbs() {
    const p = part();
    if (p.coarse.some((c) => !c)) {
      p.ensureAll().then(drawThumbs);
      return;
    }
    const scale = makeScale(st.scaleMode, st.scaleMax);
    const view = bounds();
    const w = Math.max(1, Math.min(view.j1 - view.j0, THUMB_RES));
    const h = Math.max(1, Math.min(view.i1 - view.i0, THUMB_RES));
    for (const c of thumbs) {
      if (c.width !== w) c.width = w;
      if (c.height !== h) c.height = h;
      const ctx = c.getContext("2d");
      ctx.putImageData(headImage(ctx, p, Number(c.dataset.layer), Number(c.dataset.head),
        h, w, view, st.hover, scale, ramp, grey), 0, 0);
      c.classList.toggle("as-open", !!st.open && st.open[0] === Number(c.dataset.layer) && st.open[1] === Number(c.dataset.head));
    }
    for (const c of combined) {
      c.width = w;
      c.height = h;
      const ctx = c.getContext("2d");
      ctx.putImageData(combinedImage(ctx, p, Number(c.dataset.layer), h, w, view, scale,
        P.colors, dark), 0, 0);
    }
    for (const node of strip.querySelectorAll(".as-hot")) node.classList.remove("as-hot");
    if (st.hover !== null && strip.children[st.hover]) strip.children[st.hover].classList.add("as-hot");
  }

  // The running text coloured by the attention one chosen token pays to every other token.
  function colourStrip() {
    const p = part();
    const src = st.source;
    const scale = makeScale(st.scaleMode, st.scaleMax);
    const heads = st.open ? [st.open] : [];
    if (!st.open) for (let l = 0; l < p.L; l++) for (let h = 0; h < p.H; h++) heads.push([l, h]);
    if (src !== null && p.coarse.some((c) => !c)) {
      p.ensureAll().then(colourStrip);
      return;
    }
    st.sourceWeights = [];
    for (const node of strip.children) {
      const j = Number(node.dataset.index);
      node.classList.toggle("as-source", j === src);
      if (src === null || j >= p.Tk) {
        node.style.backgroundColor = "";
        node.style.color = "";
        node.removeAttribute("title");
        continue;
      }
      let v = 0;
      for (const [l, h] of heads) v += p.weight(l, h, src, j);
      v /= heads.length;
      st.sourceWeights.push(v);
      const k = Math.round(scale(v) * 255) * 3;
      node.style.backgroundColor = `rgb(${ramp[k]},${ramp[k + 1]},${ramp[k + 2]})`;
      node.style.color = scale(v) > 0.6 ? (dark ? "#0d1117" : "#ffffff") : "";
      node.title = `${p.rows[src]} \u2192 ${p.cols[j]}: ${p.show(v)}` +
        (st.open ? "" : " (mean over every layer and head)");
    }
  }

  strip.addEventListener("click", (e) => {
    const node = e.target.closest(".as-tok");
    if (!node) return;
    const i = Number(node.dataset.index);
    st.source = st.source === i ? null : i;
    colourStrip();
  });

  grid.addEventListener("keydown", (e) => {
    const c = e.target.closest(".as-thumb");
    if (!c) return;
    const p = part();
    let l = Number(c.dataset.layer), h = Number(c.dataset.head);
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      open(l, h);
      return;
    }
    const moves = { ArrowRight: [0, 1], ArrowLeft: [0, -1], ArrowDown: [1, 0], ArrowUp: [-1, 0] };
    const m = moves[e.key];
    if (!m) return;
    l = Math.max(0, Math.min(p.L - 1, l + m[0]));
    h = Math.max(0, Math.min(p.H - 1, h + m[1]));
    moveFocus(e, c, thumbs[l * p.H + h]);
  });

  // The opened head: a panel over the grid (the grid stays where it is), with zoom and pan.
  const dTitle = el("div", "as-detail-title");
  const dTools = el("div", "as-detail-tools");
  const dHead = el("div", "as-detail-head");
  const dCanvas = el("canvas", "as-detail-canvas");
  dCanvas.tabIndex = 0;
  dCanvas.setAttribute("aria-label", "the opened head; + and - zoom, arrow keys pan");
  const dReadout = el("div", "as-readout", "\u00a0");
  const dRange = el("div", "as-range");
  dHead.append(dTitle, dTools);
  detail.append(dHead, dCanvas, dReadout, dRange);
  button(dTools, "as-zoom-in", "+", "zoom in (+)", () => zoomBy(0.5));
  button(dTools, "as-zoom-out", "\u2212", "zoom out (-)", () => zoomBy(2));
  button(dTools, "as-zoom-reset", "1:1", "show every token", () => resetZoom());
  button(dTools, "as-export", "PNG", "save the opened head as a PNG file", () => exportDetail());
  button(dTools, "as-close", "\u00d7", "close (Escape)", () => close());
  let geom = null;

  function close() {
    if (!st.open) return;
    const [l, h] = st.open;
    st.open = null;
    detail.hidden = true;
    ctxs.tip.hide();
    drawThumbs();
    if (st.source !== null) colourStrip();
    const back = thumbs[l * part().H + h];
    if (back) back.focus();
  }

  function resetZoom() {
    st.zoom = bounds();
    drawDetail();
  }

  // Zoom around the centre (or a given cell) by `factor` (< 1 zooms in), keeping in range.
  function zoomBy(factor, ci, cj) {
    const z = st.zoom, b = bounds();
    const fit = (lo, hi, centre, start, end) => {
      const span = Math.max(Math.min(4, end - start), Math.min(end - start, Math.round((hi - lo) * factor)));
      let a = Math.round(centre - span / 2);
      a = Math.max(start, Math.min(end - span, a));
      return [a, a + span];
    };
    [z.i0, z.i1] = fit(z.i0, z.i1, ci === undefined ? (z.i0 + z.i1) / 2 : ci, b.i0, b.i1);
    [z.j0, z.j1] = fit(z.j0, z.j1, cj === undefined ? (z.j0 + z.j1) / 2 : cj, b.j0, b.j1);
    drawDetail();
  }

  function panBy(di, dj) {
    const z = st.zoom, b = bounds();
    const si = Math.max(b.i0 - z.i0, Math.min(b.i1 - z.i1, di));
    const sj = Math.max(b.j0 - z.j0, Math.min(b.j1 - z.j1, dj));
    z.i0 += si; z.i1 += si; z.j0 += sj; z.j1 += sj;
    drawDetail();
  }

  function open(l, h) {
    st.open = [l, h];
    resetZoom();
    detail.hidden = false;
    drawThumbs();
    if (st.source !== null) colourStrip();
    dCanvas.focus({ preventScroll: true });
  }

  function drawDetail() {
    if (!st.open) return;
    const p = part();
    if (!p.coarse[st.open[0]]) return;
    const [l, h] = st.open;
    const z = st.zoom;
    dTitle.textContent = measureOf() ? `${p.label}: layer ${p.layers[l]}`
      : `${p.label}: layer ${p.layers[l]}, head ${p.heads[h]}`;
    const nq = z.i1 - z.i0, nk = z.j1 - z.j0;
    const cell = Math.max(DETAIL_SIDE / Math.max(nq, nk) >= 1 ? 1 : 0, Math.min(22, DETAIL_SIDE / Math.max(nq, nk)));
    const measure = dCanvas.getContext("2d");
    measure.font = "11px sans-serif";
    let margin = 20;
    for (let i = z.i0; i < z.i1; i++) margin = Math.max(margin, measure.measureText(p.rows[i]).width + 8);
    for (let j = z.j0; j < z.j1; j++) margin = Math.max(margin, measure.measureText(p.cols[j]).width + 8);
    margin = Math.min(140, Math.ceil(margin));
    const w = Math.max(1, Math.round(nk * cell)), hgt = Math.max(1, Math.round(nq * cell));
    const ctx = sizeCanvas(dCanvas, margin + w, margin + hgt);
    geom = st.geom = { margin, cellW: w / nk, cellH: hgt / nq };
    const off = document.createElement("canvas");
    off.width = Math.min(nk, w);
    off.height = Math.min(nq, hgt);
    const octx = off.getContext("2d");
    const scale = makeScale(st.scaleMode, st.scaleMax);
    octx.putImageData(headImage(octx, p, l, h, off.height, off.width, z, st.hover, scale, ramp, grey), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, margin, margin, w, hgt);
    ctx.font = "11px sans-serif";
    ctx.fillStyle = getComputedStyle(detail).color || "#222";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    // labels as room allows: every k-th token so that labels are LABEL_ROOM pixels apart
    const everyQ = Math.max(1, Math.ceil(LABEL_ROOM / geom.cellH));
    const everyK = Math.max(1, Math.ceil(LABEL_ROOM / geom.cellW));
    for (let i = z.i0; i < z.i1; i += everyQ) {
      ctx.fillText(p.rows[i], margin - 4, margin + (i - z.i0 + 0.5) * geom.cellH, margin - 6);
    }
    ctx.save();
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    for (let j = z.j0; j < z.j1; j += everyK) {
      ctx.fillText(p.cols[j], -margin + 4, margin + (j - z.j0 + 0.5) * geom.cellW, margin - 6);
    }
    ctx.restore();
    st.labels = { query: Math.ceil(nq / everyQ), key: Math.ceil(nk / everyK) };
    dRange.textContent = `queries ${z.i0}\u2013${z.i1 - 1}, keys ${z.j0}\u2013${z.j1 - 1}` +
      (nq < p.Tq || nk < p.Tk ? " (wheel or +/\u2212 to zoom, drag or arrow keys to pan)" : "");
  }

  function cellAt(e) {
    if (!geom || !st.open) return null;
    const rect = dCanvas.getBoundingClientRect();
    const z = st.zoom;
    const i = z.i0 + Math.floor((e.clientY - rect.top - geom.margin) / geom.cellH);
    const j = z.j0 + Math.floor((e.clientX - rect.left - geom.margin) / geom.cellW);
    return [i, j];
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
  let drag = null;
  dCanvas.addEventListener("mousedown", (e) => {
    drag = { x: e.clientX, y: e.clientY, moved: false };
  });
  window.addEventListener("mouseup", () => {
    drag = null;
  });
  dCanvas.addEventListener("mousemove", (e) => {
    const p = part();
    if (drag && geom) {
      const dj = Math.round((drag.x - e.clientX) / geom.cellW), di = Math.round((drag.y - e.clientY) / geom.cellH);
      if (di || dj) {
        drag.x = e.clientX;
        drag.y = e.clientY;
        drag.moved = true;
        panBy(di, dj);
      }
      return;
    }
    const cell = cellAt(e);
    if (!cell) return;
    const [i, j] = cell;
    const z = st.zoom;
    if (i < z.i0 || i >= z.i1 || j < z.j0 || j >= z.j1) {
      dReadout.textContent = "\u00a0";
      ctxs.tip.hide();
      return;
    }
    const masked = p.causal && j > i;
    const [l, h] = st.open;
    let v = masked ? "masked" : p.show(p.weight(l, h, i, j));
    if (!masked && !p.isKept(l, h, i, j)) {
      v += ` (not kept: below ${fmt(p.threshold[(l * p.H + h) * p.Tq + i])}; the mean of the rest)`;
    }
    const text = [`query ${i}: ${p.rows[i]}`, `key ${j}: ${p.cols[j]}`,
      measureOf() ? `score ${v} (share of the row)` : `weight ${v}`];
    dReadout.textContent = `${p.rows[i]} \u2192 ${p.cols[j]}: ${v}`;
    ctxs.tip.show(text, e.clientX, e.clientY);
  });
  dCanvas.addEventListener("wheel", (e) => {
    const cell = cellAt(e);
    if (!cell) return;
    e.preventDefault();
    zoomBy(e.deltaY < 0 ? 0.8 : 1.25, cell[0], cell[1]);
  }, { passive: false });
  dCanvas.addEventListener("mouseleave", () => {
    dReadout.textContent = "\u00a0";
    ctxs.tip.hide();
  });
  // A click on a cell tells the page around the view which query and key it was (the
  // explorer opens its explain panel on it); the event bubbles out of the view's root.
  dCanvas.addEventListener("click", (e) => {
    const cell = cellAt(e);
    if (!cell || (drag && drag.moved)) return;
    const p = part();
    const [i, j] = cell;
    if (i < 0 || i >= p.Tq || j < 0 || j >= p.Tk) return;
    panel.dispatchEvent(new CustomEvent("attnscope-cell", { bubbles: true, detail: {
      part: p.name, layer: st.open[0], head: st.open[1], query: i, key: j } }));
  });
  dCanvas.addEventListener("keydown", (e) => {
    const z = st.zoom;
    const stepI = Math.max(1, Math.round((z.i1 - z.i0) / 4)), stepJ = Math.max(1, Math.round((z.j1 - z.j0) / 4));
    const keys = { "+": () => zoomBy(0.5), "=": () => zoomBy(0.5), "-": () => zoomBy(2),
      "0": () => resetZoom(), ArrowUp: () => panBy(-stepI, 0), ArrowDown: () => panBy(stepI, 0),
      ArrowLeft: () => panBy(0, -stepJ), ArrowRight: () => panBy(0, stepJ) };
    if (keys[e.key]) {
      e.preventDefault();
      keys[e.key]();
    }
  });
  detail.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      close();
    }
  });

  function exportDetail() {
    if (!st.open) return null;
    downloadCanvas(dCanvas, `attention-layer${st.open[0]}-head${st.open[1]}.png`);
    return dCanvas;
  }

  rebuild();
  return { state: st, open, close, setHover, zoomBy, panBy, setPart, thumbs: () => thumbs,
    detail: dCanvas, refresh: () => {} };
}

// ----- neuron view --------------------------------------------------------------------------

const NV_ROW = 16;

function neuronView(panel, P, A) {
  if (!A.qk) {
    panel.append(el("p", "as-missing", P.qk_missing));
    return { state: { missing: true } };
  }
  const p = A.parts.self;
  const [, H, T, d] = A.qk.shape;
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
  st.keys = "all";
  const b = P.sentence_b_start;
  if (b !== null && b !== undefined) {
    selectField(controls, "Keys", [["all", "All"], ["A", "Sentence A"], ["B", "Sentence B"]], "all", (v) => {
      st.keys = v;
      draw();
    }).parentElement.classList.add("as-filter");
  }
  const shownKey = (j) => st.keys === "all" || (st.keys === "A" ? j < b : j >= b);
  // The legend for the strips: one diverging scale, blue below zero and red above.
  const legend = el("div", "as-colorbar as-nv-legend");
  const lc = el("canvas", "as-colorbar-canvas");
  legend.append(el("span", "as-label", "strips"), el("span", null, "\u2212max"), lc, el("span", null, "+max"),
    el("span", "as-note", "(each strip scaled to its largest |value|)"));
  controls.append(legend);
  const lctx = sizeCanvas(lc, 120, 10);
  for (let x = 0; x < 120; x++) {
    lctx.fillStyle = diverging((x / 119) * 2 - 1);
    lctx.fillRect(x, 0, 1, 10);
  }
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
    node.tabIndex = j === st.query ? 0 : -1;
    node.style.height = node.style.lineHeight = NV_ROW + "px";
    labels.append(node);
  });
  const choose = (node) => {
    st.query = Number(node.dataset.index);
    querySel.value = String(st.query);
    draw();
  };
  labels.addEventListener("click", (e) => {
    const node = e.target.closest(".as-tok");
    if (node) choose(node);
  });
  labels.addEventListener("keydown", (e) => {
    const node = e.target.closest(".as-tok");
    if (!node) return;
    const i = Number(node.dataset.index);
    const target = e.key === "ArrowDown" ? labels.children[Math.min(T - 1, i + 1)]
      : e.key === "ArrowUp" ? labels.children[Math.max(0, i - 1)] : null;
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      choose(node);
    } else if (target) {
      moveFocus(e, node, target);
    }
  });
  const qctx = sizeCanvas(qCanvas, width, 40);
  const ctx = sizeCanvas(canvas, width, T * NV_ROW + 4);
  const dark = P.theme === "dark";
  const ink = dark ? "#e6edf3" : "#222";

  function draw() {
    const { layer, head, query } = st;
    if (!p.coarse[layer]) {
      p.ensure(layer).then(draw);
      return;
    }
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
      "Click a token (or Enter) to make it the query.";
    qctx.clearRect(0, 0, width, 40);
    qctx.font = "11px sans-serif";
    qctx.fillStyle = dark ? "#9198a1" : "#555";
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
    const scores = new Float32Array(T);
    const weights = new Float32Array(T);
    for (let j = 0; j < T; j++) {
      const y = j * NV_ROW + 2;
      if (!shownKey(j)) { // the sentence filter leaves this key out
        scores[j] = NaN;
        continue;
      }
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
      ctx.fillStyle = masked ? "#aaa" : ink;
      ctx.textAlign = "right";
      ctx.fillText(masked ? "masked" : score.toFixed(2), xs.score + scoreW, y + NV_ROW / 2 - 1);
      const w = masked ? 0 : p.weight(layer, head, query, j);
      weights[j] = w;
      ctx.fillStyle = dark ? "#30363d" : "#eee";
      ctx.fillRect(xs.bar, y, barW, NV_ROW - 3);
      ctx.fillStyle = "#2171b5";
      ctx.fillRect(xs.bar, y, barW * w, NV_ROW - 3);
      ctx.fillStyle = ink;
      ctx.textAlign = "left";
      ctx.fillText(p.show(w), xs.bar + barW + 4, y + NV_ROW / 2 - 1);
    }
    for (const node of labels.children) {
      node.classList.toggle("as-hot", Number(node.dataset.index) === query);
      node.style.visibility = shownKey(Number(node.dataset.index)) ? "" : "hidden";
    }
    st.scores = Array.from(scores, (x) => (Number.isNaN(x) ? null : x));
    st.weights = Array.from(weights);
  }
  draw();
  return { state: st, canvas, redraw: draw, refresh: draw };
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

// ----- generation view ----------------------------------------------------------------------
// The prompt and the answer as running text (attnscope.render.generation_view). P.gen holds,
// for every generated token from first_step on, the row of the step that chose it (query
// t - 1 over keys 0 .. t - 1) in planes: "all" (every layer and head averaged), "rollout",
// "layer" (one plane a layer, heads averaged) and "head" (one plane a layer x head), each the
// rows one after another, float16 ("f16") or a one-byte log code ("log8"). P.gen.measures lists
// the context-mixing measures carried beside them ([key, name]), each a plane of the same rows
// (each generated token's sources, as shares), coded as "all" is.

let GEN_HALF = null; // float16 bits -> value, built on first use
function genHalfTable() {
  if (!GEN_HALF) {
    const bits = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) bits[i] = i;
    GEN_HALF = halfToFloat(bits);
  }
  return GEN_HALF;
}

// A plane's typed array: Uint16Array (float16 bits) or Uint8Array (log codes).
async function genDecodePlane(text, dtype) {
  const bytes = await inflate(base85Bytes(text));
  return dtype === "f16" ? new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length >> 1) : bytes;
}

// Where each text token goes when the view is drawn as a picture (PNG and SVG export):
// tokens flow left to right and wrap at `width`; "\n" starts a new line.
function genLayout(ctx, texts, width, lineH) {
  const boxes = [];
  let x = 0, y = 0;
  for (const text of texts) {
    const parts = text.split("\n");
    let box = null;
    for (let p = 0; p < parts.length; p++) {
      if (p > 0) { x = 0; y += lineH; }
      const w = ctx.measureText(parts[p]).width;
      if (x + w > width && x > 0) { x = 0; y += lineH; }
      if (!box) box = { x, y, w, text: parts[p] };
      else if (parts[p]) box = { x, y, w, text: parts[p] };
      x += w;
    }
    boxes.push(box);
  }
  return { boxes, height: y + lineH };
}

function generationView(panel, P, A, ctxs) {
  const G = P.gen;
  const T = G.text.length, H = G.heads, L = G.layers;
  const init = G.initial;
  const st = { mode: init.mode, layer: init.layer, head: init.head, step: init.step,
    scaleMode: "sqrt", scaleMax: 1, hover: null, playing: null, lastDraw: 0, timings: {} };
  // the start of each step's row in a plane (row s has answer_start + s weights)
  const offsets = new Float64Array(G.steps + 1);
  for (let s = G.first_step, at = 0; s < G.steps; s++) {
    offsets[s] = at;
    at += G.answer_start + s;
  }
  const planes = {}; // "mode:index" -> typed array
  const log8 = new Float32Array(256);
  for (let c = 1; c < 256; c++) log8[c] = Math.exp(-(255 - c) * G.log8.step);

  async function plane(mode, index) {
    const key = mode + ":" + index;
    if (!planes[key]) planes[key] = genDecodePlane(G.planes[mode].planes[index], G.planes[mode].dtype);
    return planes[key];
  }
  function planeIndex(mode) {
    return mode === "layer" ? st.layer : mode === "head" ? st.layer * H + st.head : 0;
  }
  function valueOf(mode, arr, at) {
    return G.planes[mode].dtype === "f16" ? genHalfTable()[arr[at]] : log8[arr[at]];
  }
  function exactText(mode, v) {
    if (G.planes[mode].dtype === "log8") return v === 0 ? "< 1e-4" : "\u2248" + fmt(v);
    return fmt(v);
  }

  // ---- controls
  const controls = el("div", "as-controls");
  panel.append(controls);
  const modeNames = { all: "all layers (mean)", layer: "one layer (heads mean)", head: "one head",
    rollout: "rollout" };
  const measures = (G.measures || []).filter(([key]) => G.planes[key]);
  for (const [key, name] of measures) modeNames[key] = name;
  const isMeasure = (mode) => measures.some(([key]) => key === mode);
  const modeField = selectField(controls, "Colour by",
    ["all", "layer", "head", "rollout", ...measures.map(([key]) => key)].filter((m) => G.planes[m])
      .map((m) => [m, modeNames[m]]),
    st.mode, (v) => { setMode(v); });
  modeField.parentElement.classList.add("as-gen-mode");
  const layerField = selectField(controls, "Layer", [...Array(L).keys()].map((l) => [l, String(l)]),
    st.layer, (v) => { st.layer = Number(v); refresh(); });
  layerField.parentElement.classList.add("as-layer");
  const headField = selectField(controls, "Head", [...Array(H).keys()].map((h) => [h, String(h)]),
    st.head, (v) => { st.head = Number(v); refresh(); });
  headField.parentElement.classList.add("as-head");
  contrastControls(controls, st, () => { bar.update(RAMPS[P.theme], st.scaleMode, st.scaleMax,
    makeScale(st.scaleMode, st.scaleMax), false, P.theme === "dark"); draw(); });
  const bar = colorbar(controls);
  button(controls, "as-export", "Save PNG", "save the coloured text as a PNG file", () => exportPng());
  button(controls, "as-export-svg", "Save SVG", "save the coloured text as an SVG file", () => exportSvg());

  const player = el("div", "as-controls as-gen-player");
  panel.append(player);
  button(player, "as-prev", "\u2190", "previous generated token (Left arrow)", () => select(st.step - 1));
  const playButton = button(player, "as-play", "Play", "step through the answer token by token",
    () => (st.playing ? stop() : play()));
  button(player, "as-next", "\u2192", "next generated token (Right arrow)", () => select(st.step + 1));
  const slider = document.createElement("input");
  slider.type = "range";
  slider.className = "as-gen-slider";
  slider.min = "0";
  slider.max = String(G.steps - 1);
  slider.value = String(st.step);
  slider.setAttribute("aria-label", "generated token");
  slider.addEventListener("input", () => select(Number(slider.value)));
  player.append(slider);
  const stepLabel = el("span", "as-label as-gen-steplabel");
  player.append(stepLabel);

  for (const note of G.notes) panel.append(el("div", "as-note as-gen-note", note));
  const body = el("div", "as-gen-body");
  const textBox = el("div", "as-gen-text");
  textBox.setAttribute("role", "group");
  textBox.setAttribute("aria-label", "prompt and answer; arrow keys choose the generated token");
  const side = el("div", "as-gen-side");
  body.append(textBox, side);
  panel.append(body);
  const info = el("div", "as-gen-info");
  info.setAttribute("aria-live", "polite");
  const topBox = el("div", "as-gen-top");
  const roleBox = el("div", "as-gen-roles");
  side.append(info, topBox, roleBox);

  // ---- the text: one span a token
  const spans = new Array(T);
  const shade = new Int16Array(T).fill(-1); // the colour level each span shows (-1 none)
  for (let i = 0; i < T; i++) {
    const span = el("span", "as-gtok as-role-" + G.roles[i], G.text[i]);
    if (P.special.self[i]) span.classList.add("as-special");
    span.dataset.index = String(i);
    if (i >= G.answer_start) {
      span.classList.add("as-answer");
      span.tabIndex = -1;
    }
    spans[i] = span;
  }
  textBox.append(...spans);
  const colours = [], inks = [];
  function setColours() {
    const ramp = RAMPS[P.theme];
    for (let k = 0; k < 256; k++) {
      colours[k] = `rgb(${ramp[k * 3]},${ramp[k * 3 + 1]},${ramp[k * 3 + 2]})`;
      const lum = 0.299 * ramp[k * 3] + 0.587 * ramp[k * 3 + 1] + 0.114 * ramp[k * 3 + 2];
      inks[k] = lum < 128 ? (P.theme === "dark" ? "" : "#ffffff") : (P.theme === "dark" ? "#0d1117" : "");
    }
  }
  setColours();

  // Colours the text by another mode or measure; resolves once it is drawn.
  function setMode(mode) {
    st.mode = mode;
    syncFields();
    return refresh();
  }

  function syncFields() {
    modeField.value = st.mode;
    layerField.disabled = !(st.mode === "layer" || st.mode === "head");
    headField.disabled = st.mode !== "head";
  }
  syncFields();
  bar.update(RAMPS[P.theme], st.scaleMode, st.scaleMax, makeScale(st.scaleMode, st.scaleMax), false,
    P.theme === "dark");

  let current = null; // the decoded plane of the current mode, or null while it decodes
  let job = 0;
  // Decodes the current mode's plane (once), then draws.
  function refresh() {
    const mine = ++job;
    const index = planeIndex(st.mode);
    return plane(st.mode, index).then((arr) => {
      if (mine !== job) return;
      current = arr;
      draw();
    });
  }

  // The selected step's row in the current mode: Float32Array over keys 0 .. t - 1, or null
  // when the trace does not hold it.
  function row(step) {
    if (step < G.first_step || !current) return null;
    const n = G.answer_start + step, at = offsets[step];
    const out = new Float32Array(n);
    if (G.planes[st.mode].dtype === "f16") {
      const half = genHalfTable();
      for (let j = 0; j < n; j++) out[j] = half[current[at + j]];
    } else {
      for (let j = 0; j < n; j++) out[j] = log8[current[at + j]];
    }
    return out;
  }

  function draw() {
    const t0 = performance.now();
    const step = st.step, t = G.answer_start + step;
    const values = row(step);
    const scale = makeScale(st.scaleMode, st.scaleMax);
    for (let i = 0; i < T; i++) {
      const k = values && i < values.length ? Math.round(scale(values[i]) * 255) : -1;
      if (k === shade[i]) continue;
      shade[i] = k;
      spans[i].style.backgroundColor = k < 0 ? "" : colours[k];
      spans[i].style.color = k < 0 ? "" : inks[k];
    }
    const old = textBox.querySelector(".as-gsel");
    if (old) { old.classList.remove("as-gsel"); old.tabIndex = -1; old.removeAttribute("aria-current"); }
    spans[t].classList.add("as-gsel");
    spans[t].tabIndex = 0;
    spans[t].setAttribute("aria-current", "true");
    slider.value = String(step);
    stepLabel.textContent = `token ${step + 1} of ${G.steps}`;
    describeStep(step, values);
    st.lastDraw = performance.now() - t0;
    st.drawn = step;
    if (!st.timings.firstDraw) st.timings.firstDraw = performance.now();
    ctxs.root.dataset.genStep = String(step);
  }

  function describeStep(step, values) {
    const t = G.answer_start + step;
    info.textContent = "";
    info.append(el("div", "as-gen-chosen", G.labels[t]));
    const p = G.probs ? G.probs[step] : null;
    info.append(el("div", "as-gen-prob", p === null ? "" : "probability " + fmt(p)));
    const what = st.mode === "head" ? `layer ${st.layer}, head ${st.head}`
      : st.mode === "layer" ? `layer ${st.layer}, heads averaged` : modeNames[st.mode];
    info.append(el("div", "as-label", isMeasure(st.mode)
      ? `sources of its prediction (row ${t - 1}): ${what} rollout, shares`
      : `attention of the step that chose it (query ${t - 1}): ${what}`));
    if (!values) info.append(el("div", "as-note", "This step's row is not in the trace."));
    topBox.textContent = "";
    if (G.top) {
      topBox.append(el("div", "as-label", "top alternatives"));
      for (const [text, prob] of G.top[step]) {
        const line = el("div", "as-gen-alt");
        const b = el("span", "as-gen-bar");
        b.style.width = Math.round(100 * (prob || 0)) + "px";
        line.append(el("span", "as-gen-alt-text", text), b, el("span", "as-gen-alt-p", prob === null ? "" : fmt(prob)));
        topBox.append(line);
      }
    }
    roleBox.textContent = "";
    if (!values) return;
    const shares = {};
    for (let j = 0; j < values.length; j++) shares[G.roles[j]] = (shares[G.roles[j]] || 0) + values[j];
    roleBox.append(el("div", "as-label", isMeasure(st.mode) ? "share of its sources" : "share of its attention"));
    for (const role of ["system", "user", "assistant", "markup", "prompt", "answer"]) {
      if (shares[role] === undefined) continue;
      const line = el("div", "as-gen-share");
      line.dataset.role = role;
      const b = el("span", "as-gen-bar");
      b.style.width = Math.round(100 * Math.min(1, shares[role])) + "px";
      line.append(el("span", "as-gen-alt-text", role), b, el("span", "as-gen-alt-p", fmt(shares[role])));
      roleBox.append(line);
    }
  }

  function select(step) {
    const s = Math.max(0, Math.min(G.steps - 1, step));
    st.step = s;
    draw();
    return st.lastDraw;
  }

  function play() {
    if (st.step >= G.steps - 1) select(0);
    playButton.textContent = "Pause";
    st.playing = setInterval(() => {
      if (st.step >= G.steps - 1) { stop(); return; }
      select(st.step + 1);
    }, 300);
  }
  function stop() {
    if (st.playing) clearInterval(st.playing);
    st.playing = null;
    playButton.textContent = "Play";
  }

  // ---- pointer and keyboard
  textBox.addEventListener("click", (e) => {
    const span = e.target.closest ? e.target.closest(".as-gtok") : null;
    if (!span) return;
    const i = Number(span.dataset.index);
    if (i >= G.answer_start) { select(i - G.answer_start); span.focus(); }
  });
  textBox.addEventListener("keydown", (e) => {
    let next = null;
    if (e.key === "ArrowRight" || e.key === "ArrowDown") next = st.step + 1;
    else if (e.key === "ArrowLeft" || e.key === "ArrowUp") next = st.step - 1;
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = G.steps - 1;
    else if (e.key === " " || e.key === "Enter") {
      e.preventDefault();
      if (st.playing) stop(); else play();
      return;
    }
    if (next === null) return;
    e.preventDefault();
    select(next);
    spans[G.answer_start + st.step].focus();
  });
  textBox.addEventListener("mouseover", (e) => {
    const span = e.target.closest ? e.target.closest(".as-gtok") : null;
    if (!span) return;
    hover(Number(span.dataset.index), e.clientX, e.clientY);
  });
  textBox.addEventListener("mouseleave", () => { st.hover = null; ctxs.tip.hide(); });

  let headsReady = null; // every head plane, decoded when a token is first hovered
  let headsLoading = null;
  function headsAt(step, j) {
    const at = offsets[step] + j, out = [];
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) out.push([l, h, valueOf("head", headsReady[l * H + h], at)]);
    }
    out.sort((a, b) => b[2] - a[2]);
    return out.slice(0, 5);
  }
  function hover(i, x, y) {
    st.hover = i;
    const t = G.answer_start + st.step;
    const lines = [`${G.labels[i]}  (token ${i}, ${G.roles[i]})`];
    const values = row(st.step);
    if (values && i < t) {
      lines.push(isMeasure(st.mode) ? `source share (${modeNames[st.mode]}): ${exactText(st.mode, values[i])}`
        : `weight from the selected step: ${exactText(st.mode, values[i])}`);
      if (measures.length && measuresReady) {
        // every measure side by side, raw attention (all layers) first
        lines.push("by measure:");
        for (const key of ["all", ...measures.map(([k]) => k)]) {
          if (key === st.mode) continue;
          const v = valueOf(key, measuresReady[key], offsets[st.step] + i);
          lines.push(`  ${modeNames[key]}: ${exactText(key, v)}`);
        }
      }
      if (G.planes.head && headsReady) {
        lines.push("heads attending most to it:");
        for (const [l, h, v] of headsAt(st.step, i)) lines.push(`  layer ${l} head ${h}: ${exactText("head", v)}`);
      } else if (G.planes.head) {
        lines.push("(reading the heads\u2026)");
        loadHeads().then(() => { if (st.hover === i) hover(i, x, y); });
      }
    } else if (i === t) {
      lines.push("the selected generated token");
    } else if (i > t) {
      lines.push("written after the selected token");
    }
    ctxs.tip.show(lines, x, y);
    st.tipLines = lines;
  }
  let measuresReady = null; // key -> decoded plane of "all" and every measure
  const measuresLoading = measures.length
    ? Promise.all(["all", ...measures.map(([k]) => k)].map((k) => plane(k, 0).then((a) => [k, a])))
      .then((pairs) => { measuresReady = Object.fromEntries(pairs); })
    : Promise.resolve();
  function loadHeads() {
    if (!headsReady && G.planes.head && !headsLoading) {
      headsLoading = Promise.all([...Array(L * H).keys()].map((k) => plane("head", k)))
        .then((arrs) => { headsReady = arrs; });
    }
    return headsLoading || Promise.resolve();
  }

  // ---- export: the text as it is coloured now
  function pictureLayout(ctx) {
    ctx.font = "14px monospace";
    return genLayout(ctx, G.text, 880, 22);
  }
  function exportPng() {
    const out = document.createElement("canvas");
    const probe = out.getContext("2d");
    const lay = pictureLayout(probe);
    const octx = sizeCanvas(out, 920, lay.height + 20);
    octx.fillStyle = P.theme === "dark" ? "#0d1117" : "#ffffff";
    octx.fillRect(0, 0, 920, lay.height + 20);
    octx.font = "14px monospace";
    octx.textBaseline = "middle";
    lay.boxes.forEach((box, i) => {
      if (shade[i] >= 0) {
        octx.fillStyle = colours[shade[i]];
        octx.fillRect(20 + box.x, 10 + box.y, box.w, 20);
      }
      octx.fillStyle = (shade[i] >= 0 && inks[shade[i]]) || (P.theme === "dark" ? "#e6edf3" : "#1f2328");
      octx.fillText(box.text, 20 + box.x, 10 + box.y + 10);
      if (i === G.answer_start + st.step) {
        octx.strokeStyle = "#f28e2b";
        octx.strokeRect(20 + box.x, 10 + box.y, box.w, 20);
      }
    });
    downloadCanvas(out, `generation-step${st.step}.png`);
    return out;
  }
  function exportSvg() {
    const probe = document.createElement("canvas").getContext("2d");
    const lay = pictureLayout(probe);
    const h = lay.height + 20;
    const svg = svgEl("svg", { xmlns: "http://www.w3.org/2000/svg", width: 920, height: h,
      viewBox: `0 0 920 ${h}`, "font-family": "monospace", "font-size": 14 });
    svg.append(svgEl("rect", { width: 920, height: h, fill: P.theme === "dark" ? "#0d1117" : "#ffffff" }));
    lay.boxes.forEach((box, i) => {
      if (shade[i] >= 0) {
        svg.append(svgEl("rect", { x: 20 + box.x, y: 10 + box.y, width: box.w.toFixed(1), height: 20,
          fill: colours[shade[i]] }));
      }
      svg.append(svgEl("text", { x: 20 + box.x, y: 10 + box.y + 15, "xml:space": "preserve",
        fill: (shade[i] >= 0 && inks[shade[i]]) || (P.theme === "dark" ? "#e6edf3" : "#1f2328") }, box.text));
    });
    downloadSvg(svg, `generation-step${st.step}.svg`);
    return svg;
  }

  const ready = Promise.all([refresh(), measuresLoading]);
  return { state: st, select, redraw: draw, exportPng, exportSvg, ready, loadHeads, setMode,
    refresh: () => {} };
}

// ----- long view ----------------------------------------------------------------------------
// A text of thousands of tokens from a LazyTrace (attnscope.render.long_view). P.long holds
// the running text, per-head statistics ([L][H]), max-pooled maps by head ("layer:head") and
// level (n: an n x n map of one-byte log codes, token i in block edges[n]-bin), and exact
// one-byte weights of some heads (causal: row i over keys 0..i, rows one after another;
// otherwise [T, T]). Served by the explorer (P.long.tiles set), rows, columns and zoomed
// tiles come from its /line and /tile routes (attnscope.app.long), exact.

function longView(panel, P, A, ctxs) {
  const G = P.long;
  const T = G.tokens, L = G.layers, H = G.heads;
  const init = G.initial;
  const st = { layer: init.layer, head: init.head, token: init.token, direction: init.direction,
    scaleMode: "sqrt", scaleMax: 1, zoom: { r0: 0, r1: T, c0: 0, c1: T }, source: "",
    values: null, lastDraw: 0, drawn: -1 };
  const log8 = new Float32Array(256);
  for (let c = 1; c < 256; c++) log8[c] = Math.exp(-(255 - c) * G.log8.step);
  const decoded = {}; // "map:l:h:n" or "exact:l:h" -> Promise<Uint8Array>
  const bins = {}; // n -> Int32Array [T], each token's block
  function decode(key, text) {
    if (!decoded[key]) decoded[key] = inflate(base85Bytes(text));
    return decoded[key];
  }
  function binsOf(n) {
    if (!bins[n]) {
      const edges = G.edges[n], out = new Int32Array(T);
      for (let b = 0; b < edges.length; b++) {
        const stop = b + 1 < edges.length ? edges[b + 1] : T;
        for (let i = edges[b]; i < stop; i++) out[i] = b;
      }
      bins[n] = out;
    }
    return bins[n];
  }
  const headKey = () => st.layer + ":" + st.head;
  function levelsOf(key) {
    return Object.keys(G.maps[key] || {}).map(Number).sort((a, b) => a - b);
  }

  // ---- controls
  const controls = el("div", "as-controls");
  panel.append(controls);
  const layerField = selectField(controls, "Layer", [...Array(L).keys()].map((l) => [l, String(l)]),
    st.layer, (v) => pick(Number(v), st.head));
  layerField.parentElement.classList.add("as-layer");
  const headField = selectField(controls, "Head", [...Array(H).keys()].map((h) => [h, String(h)]),
    st.head, (v) => pick(st.layer, Number(v)));
  headField.parentElement.classList.add("as-head");
  const dirField = selectField(controls, "Show", [["row", "what it attends to"],
    ["column", "what attends to it"]], st.direction, (v) => setDirection(v));
  dirField.parentElement.classList.add("as-long-dir");
  contrastControls(controls, st, () => { updateBar(); paintText(); drawMap(); });
  const bar = colorbar(controls);
  function updateBar() {
    bar.update(RAMPS[P.theme], st.scaleMode, st.scaleMax, makeScale(st.scaleMode, st.scaleMax),
      false, P.theme === "dark");
  }
  updateBar();
  for (const note of G.notes) panel.append(el("div", "as-note as-long-note", note));

  // ---- per-head strips: one grid a statistic, a cell a head; click one to show it
  const strips = el("div", "as-long-strips");
  panel.append(strips);
  const statNames = { sink: "sink mass", entropy: "entropy (nats)", distance: "mean distance" };
  const cells = [];
  for (const stat of Object.keys(statNames)) {
    const values = G.stats[stat].flat().filter((v) => v !== null);
    const lo = Math.min(...values), hi = Math.max(...values);
    const box = el("div", "as-long-strip");
    box.append(el("div", "as-label", statNames[stat]));
    const grid = el("div", "as-long-grid");
    grid.style.gridTemplateColumns = `repeat(${H}, 12px)`;
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < H; h++) {
        const v = G.stats[stat][l][h];
        const cell = el("div", "as-lcell");
        cell.dataset.layer = String(l);
        cell.dataset.head = String(h);
        cell.dataset.stat = stat;
        const k = v === null || hi <= lo ? 0 : Math.round(((v - lo) / (hi - lo)) * 255) * 3;
        const ramp = RAMPS[P.theme];
        cell.style.backgroundColor = `rgb(${ramp[k]},${ramp[k + 1]},${ramp[k + 2]})`;
        cell.title = `layer ${l}, head ${h}: ${statNames[stat]} ${v === null ? "n/a" : fmt(v)}`;
        grid.append(cell);
        cells.push(cell);
      }
    }
    box.append(grid);
    strips.append(box);
  }
  strips.addEventListener("click", (e) => {
    const cell = e.target.closest ? e.target.closest(".as-lcell") : null;
    if (cell) pick(Number(cell.dataset.layer), Number(cell.dataset.head));
  });

  // ---- the overview heatmap and the text, side by side
  const body = el("div", "as-long-body");
  panel.append(body);
  const textBox = el("div", "as-long-text");
  textBox.setAttribute("role", "group");
  textBox.setAttribute("aria-label", "the text; click a token to colour it by its attention");
  const side = el("div", "as-long-side");
  body.append(textBox, side);
  const mapTools = el("div", "as-controls as-long-maptools");
  side.append(mapTools);
  button(mapTools, "as-zoom-in", "Zoom in", "zoom the overview in around the selected token",
    () => zoomBy(0.5));
  button(mapTools, "as-zoom-out", "Zoom out", "zoom the overview out", () => zoomBy(2));
  const levelLabel = el("span", "as-label as-long-level");
  mapTools.append(levelLabel);
  const MAP_PX = 384;
  const canvas = el("canvas", "as-long-map");
  side.append(canvas);
  const mapCtx = sizeCanvas(canvas, MAP_PX, MAP_PX);
  const info = el("div", "as-long-info");
  info.setAttribute("aria-live", "polite");
  side.append(info);

  const spans = new Array(T);
  for (let i = 0; i < T; i++) {
    const span = el("span", "as-ltok", G.text[i]);
    if (P.special.self[i]) span.classList.add("as-special");
    span.dataset.index = String(i);
    spans[i] = span;
  }
  // The text in runs of CHUNK_TOKENS tokens, each its own paint layer (.as-lchunk), so the
  // browser repaints only the runs whose colours changed, not the whole text.
  const CHUNK_TOKENS = 256;
  for (let a = 0; a < T; a += CHUNK_TOKENS) {
    const chunk = el("span", "as-lchunk");
    chunk.append(...spans.slice(a, a + CHUNK_TOKENS));
    textBox.append(chunk);
  }
  const colours = [], inks = [];
  {
    const ramp = RAMPS[P.theme];
    for (let k = 0; k < 256; k++) {
      colours[k] = `rgb(${ramp[k * 3]},${ramp[k * 3 + 1]},${ramp[k * 3 + 2]})`;
      const lum = 0.299 * ramp[k * 3] + 0.587 * ramp[k * 3 + 1] + 0.114 * ramp[k * 3 + 2];
      inks[k] = lum < 128 ? (P.theme === "dark" ? "" : "#ffffff") : (P.theme === "dark" ? "#0d1117" : "");
    }
  }
  const shade = new Int16Array(T).fill(-1);

  // ---- where values come from
  async function fetchJson(path, params) {
    const query = new URLSearchParams(params).toString();
    const answer = await fetch(`${G.tiles}/${path}?${query}`, { headers: { accept: "application/json" } });
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.error || answer.statusText);
    return data;
  }
  function floats(b64) {
    const bytes = base64Bytes(b64);
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2);
  }
  // The selected token's row or column of the current head: [T] weights, and where they came
  // from ("exact", "explorer" or "blocks of k tokens").
  async function lineValues(layer, head, token, direction) {
    const key = layer + ":" + head;
    const out = new Float32Array(T);
    if (G.exact[key]) {
      const ex = await decode("exact:" + key, G.exact[key]);
      if (G.causal) {
        if (direction === "row") {
          const at = (token * (token + 1)) / 2;
          for (let j = 0; j <= token; j++) out[j] = log8[ex[at + j]];
        } else {
          for (let i = token; i < T; i++) out[i] = log8[ex[(i * (i + 1)) / 2 + token]];
        }
      } else if (direction === "row") {
        for (let j = 0; j < T; j++) out[j] = log8[ex[token * T + j]];
      } else {
        for (let i = 0; i < T; i++) out[i] = log8[ex[i * T + token]];
      }
      return { values: out, source: "exact (one-byte code, within 1.9%)" };
    }
    if (G.tiles) {
      const data = await fetchJson("line", { layer, head, index: token, axis: direction });
      return { values: floats(data.values), source: "exact, computed by the explorer" };
    }
    const levels = levelsOf(key), n = levels[levels.length - 1];
    const map = await decode(`map:${key}:${n}`, G.maps[key][n]);
    const bin = binsOf(n), b = bin[token];
    for (let j = 0; j < T; j++) {
      out[j] = log8[direction === "row" ? map[b * n + bin[j]] : map[bin[j] * n + b]];
    }
    return { values: out, source: `largest weight of blocks of ${Math.ceil(T / n)} tokens` };
  }

  // Colouring the text: `want` holds each token's colour level for the current values and
  // scale, `shade` what its span shows. A text of up to EAGER_TOKENS tokens is coloured at
  // once; a longer one colours the tokens in view (and a quarter screen either side) in the same
  // task, the rest in idle slices spreading out from them, so a selection costs the browser
  // a restyle and repaint of a few hundred spans, not thousands. Scrolling colours what comes
  // into view at once. data-long-shaded on the root is "1" once every span shows `want`.
  const EAGER_TOKENS = 2048;
  const want = new Int16Array(T).fill(-1);
  let fillJob = 0;
  function shadeRange(a, b) {
    for (let i = a; i < b; i++) {
      const k = want[i];
      if (k === shade[i]) continue;
      shade[i] = k;
      const style = spans[i].style;
      style.backgroundColor = k <= 0 ? "" : colours[k];
      style.color = k <= 0 ? "" : inks[k];
    }
  }
  // The first and last token (plus one) of what is in view, a quarter screen either side; reads
  // layout, so it runs before any write of a paint.
  function inView() {
    const box = textBox.getBoundingClientRect();
    const screen = window.innerHeight || 800;
    const margin = screen / 4;
    const top = Math.max(box.top, 0) - margin, bottom = Math.min(box.bottom, screen) + margin;
    if (box.bottom < top || box.top > bottom) return [0, 0];
    const firstBelow = (y, edge) => { // the first token whose `edge` is past y
      let lo = 0, hi = T;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (spans[mid].getBoundingClientRect()[edge] < y) lo = mid + 1; else hi = mid;
      }
      return lo;
    };
    return [firstBelow(top, "bottom"), Math.min(T, firstBelow(bottom, "top") + 1)];
  }
  function paintText() {
    const t0 = performance.now();
    const values = st.values;
    const scale = makeScale(st.scaleMode, st.scaleMax);
    for (let i = 0; i < T; i++) want[i] = values ? Math.round(scale(values[i]) * 255) : -1;
    const mine = ++fillJob;
    if (T <= EAGER_TOKENS) {
      shadeRange(0, T);
      ctxs.root.dataset.longShaded = "1";
    } else {
      const [a, b] = inView();
      shadeRange(a, b);
      delete ctxs.root.dataset.longShaded;
      fillRest(mine, a, b);
    }
    st.lastDraw = performance.now() - t0;
  }
  const idle = window.requestIdleCallback ? (fn) => window.requestIdleCallback(fn, { timeout: 200 })
    : (fn) => setTimeout(fn, 0);
  function fillRest(mine, a, b) {
    const CHUNK = 256;
    const step = () => {
      if (mine !== fillJob) return;
      // one chunk a slice: each slice's repaint stays short, so a click is not kept waiting
      if (b < T) { shadeRange(b, Math.min(T, b + CHUNK)); b = Math.min(T, b + CHUNK); }
      if (a > 0) { shadeRange(Math.max(0, a - CHUNK), a); a = Math.max(0, a - CHUNK); }
      if (a > 0 || b < T) idle(step);
      else ctxs.root.dataset.longShaded = "1";
    };
    idle(step);
  }
  let scrollQueued = false;
  function shadeInView() {
    if (scrollQueued || ctxs.root.dataset.longShaded) return;
    scrollQueued = true;
    requestAnimationFrame(() => {
      scrollQueued = false;
      const [a, b] = inView();
      shadeRange(a, b);
    });
  }
  textBox.addEventListener("scroll", shadeInView, { passive: true });
  window.addEventListener("scroll", shadeInView, { passive: true });

  function describe() {
    info.textContent = "";
    info.append(el("div", "as-long-chosen", G.labels[st.token]));
    info.append(el("div", null, `token ${st.token} of ${T}; layer ${st.layer}, head ${st.head}`));
    info.append(el("div", "as-long-source", (st.direction === "row" ? "what it attends to: " :
      "what attends to it: ") + st.source));
  }

  let job = 0, marked = -1;
  // Recolours the text by the selected token's row or column; resolves when it is drawn.
  async function recolour() {
    const mine = ++job;
    const { values, source } = await lineValues(st.layer, st.head, st.token, st.direction);
    if (mine !== job) return;
    st.values = values;
    st.source = source;
    paintText();
    if (marked >= 0) spans[marked].classList.remove("as-lsel");
    marked = st.token;
    spans[marked].classList.add("as-lsel");
    describe();
    st.drawn = st.token;
    ctxs.root.dataset.longToken = String(st.token);
    ctxs.root.dataset.longHead = headKey();
    ctxs.root.dataset.longDirection = st.direction;
  }

  // ---- the heatmap: the finest carried level of the head, or an explorer tile when zoomed
  let mapJob = 0;
  async function drawMap() {
    const mine = ++mapJob;
    const key = headKey(), z = st.zoom;
    const whole = z.r0 === 0 && z.c0 === 0 && z.r1 === T && z.c1 === T;
    let grid, rowsN, colsN, label, rowStarts, colStarts;
    // the explorer computes a tile only where the carried levels hold fewer blocks than the
    // picture has room for, and within its size limit
    const carried = levelsOf(key), finest = binsOf(carried[carried.length - 1]);
    const blocks = Math.min(finest[z.r1 - 1] - finest[z.r0], finest[z.c1 - 1] - finest[z.c0]) + 1;
    if (G.tiles && !whole && blocks < 256 && (z.r1 - z.r0) * (z.c1 - z.c0) <= G.tile_cells) {
      const size = Math.min(256, z.r1 - z.r0, z.c1 - z.c0);
      const data = await fetchJson("tile", { layer: st.layer, head: st.head, row_start: z.r0,
        row_stop: z.r1, col_start: z.c0, col_stop: z.c1, size });
      grid = floats(data.values);
      rowsN = data.rows;
      colsN = data.cols;
      rowStarts = data.row_edges;
      colStarts = data.col_edges;
      label = `tokens ${z.r0}\u2013${z.r1 - 1} \u00d7 ${z.c0}\u2013${z.c1 - 1}, computed by the explorer`;
    } else {
      const levels = levelsOf(key), n = levels[levels.length - 1];
      const map = await decode(`map:${key}:${n}`, G.maps[key][n]);
      const bin = binsOf(n);
      const b0 = bin[z.r0], b1 = bin[z.r1 - 1] + 1, c0 = bin[z.c0], c1 = bin[z.c1 - 1] + 1;
      rowsN = b1 - b0;
      colsN = c1 - c0;
      rowStarts = G.edges[n].slice(b0, b1);
      colStarts = G.edges[n].slice(c0, c1);
      grid = new Float32Array(rowsN * colsN);
      for (let a = 0; a < rowsN; a++) {
        for (let b = 0; b < colsN; b++) grid[a * colsN + b] = log8[map[(b0 + a) * n + c0 + b]];
      }
      label = `level ${n} \u00d7 ${n} (carried: ${levels.join(", ")})` +
        (whole ? "" : `, tokens ${z.r0}\u2013${z.r1 - 1}`);
    }
    if (mine !== mapJob) return;
    const image = new ImageData(colsN, rowsN);
    const scale = makeScale(st.scaleMode, st.scaleMax), ramp = RAMPS[P.theme];
    for (let k = 0; k < grid.length; k++) {
      const c = Math.round(scale(grid[k]) * 255) * 3;
      image.data[k * 4] = ramp[c];
      image.data[k * 4 + 1] = ramp[c + 1];
      image.data[k * 4 + 2] = ramp[c + 2];
      image.data[k * 4 + 3] = 255;
    }
    const off = document.createElement("canvas");
    off.width = colsN;
    off.height = rowsN;
    off.getContext("2d").putImageData(image, 0, 0);
    mapImage = off;
    drawMarks();
    levelLabel.textContent = label;
    st.map = { rows: rowsN, cols: colsN, grid, head: key, label, rowStarts, colStarts,
      rowStop: z.r1, colStop: z.c1 };
    ctxs.root.dataset.longMap = key + "@" + rowsN;
  }
  // The map as drawn last, and the selected token's row over it (a new selection redraws
  // only this: the map itself changes with the head, the zoom and the contrast).
  let mapImage = null;
  function drawMarks() {
    if (!mapImage) return;
    const z = st.zoom;
    mapCtx.imageSmoothingEnabled = false;
    mapCtx.clearRect(0, 0, MAP_PX, MAP_PX);
    mapCtx.drawImage(mapImage, 0, 0, MAP_PX, MAP_PX);
    if (st.token >= z.r0 && st.token < z.r1) {
      const y = ((st.token - z.r0 + 0.5) / (z.r1 - z.r0)) * MAP_PX;
      mapCtx.strokeStyle = "#f28e2b";
      mapCtx.lineWidth = 1;
      mapCtx.beginPath();
      mapCtx.moveTo(0, y);
      mapCtx.lineTo(MAP_PX, y);
      mapCtx.stroke();
    }
  }
  // hovering a block reads its tokens and its largest weight
  canvas.addEventListener("mousemove", (e) => {
    const m = st.map;
    if (!m) return;
    const box = canvas.getBoundingClientRect();
    const a = Math.min(m.rows - 1, Math.floor(((e.clientY - box.top) / box.height) * m.rows));
    const b = Math.min(m.cols - 1, Math.floor(((e.clientX - box.left) / box.width) * m.cols));
    if (a < 0 || b < 0) return;
    const span = (starts, k, stop) => {
      const last = (k + 1 < starts.length ? starts[k + 1] : stop) - 1;
      return last > starts[k] ? `${starts[k]}–${last}` : String(starts[k]);
    };
    ctxs.tip.show([`queries ${span(m.rowStarts, a, m.rowStop)}, keys ${span(m.colStarts, b, m.colStop)}`,
      `largest weight: ${fmt(m.grid[a * m.cols + b])}`], e.clientX, e.clientY);
  });
  canvas.addEventListener("mouseleave", () => ctxs.tip.hide());
  canvas.addEventListener("click", (e) => {
    const box = canvas.getBoundingClientRect(), z = st.zoom;
    const i = z.r0 + Math.floor(((e.clientY - box.top) / box.height) * (z.r1 - z.r0));
    select(Math.max(0, Math.min(T - 1, i)));
  });

  // A request the explorer refused (or a lost connection) is said on the page in its words.
  function said(promise) {
    return promise.catch((err) => {
      ctxs.root.dataset.error = String(err && err.message);
      info.textContent = "attnscope: " + (err && err.message);
    });
  }

  function zoomBy(factor) {
    const z = st.zoom;
    const span = Math.min(T, Math.max(16, Math.round((z.r1 - z.r0) * factor)));
    const start = Math.max(0, Math.min(T - span, st.token - (span >> 1)));
    st.zoom = { r0: start, r1: start + span, c0: start, c1: start + span };
    return said(drawMap());
  }

  function select(token) {
    st.token = Math.max(0, Math.min(T - 1, token));
    drawMarks();
    return said(recolour());
  }
  function pick(layer, head) {
    st.layer = layer;
    st.head = head;
    layerField.value = String(layer);
    headField.value = String(head);
    for (const cell of cells) {
      cell.classList.toggle("as-lsel", Number(cell.dataset.layer) === layer &&
        Number(cell.dataset.head) === head);
    }
    return said(Promise.all([recolour(), drawMap()]));
  }
  function setDirection(direction) {
    st.direction = direction;
    dirField.value = direction;
    return said(recolour());
  }

  textBox.addEventListener("click", (e) => {
    const span = e.target.closest ? e.target.closest(".as-ltok") : null;
    if (span) select(Number(span.dataset.index));
  });
  textBox.addEventListener("mousemove", (e) => {
    const span = e.target.closest ? e.target.closest(".as-ltok") : null;
    if (!span || !st.values) { ctxs.tip.hide(); return; }
    const i = Number(span.dataset.index);
    ctxs.tip.show([G.labels[i], `weight ${st.direction === "row" ? "from" : "to"} the selected token: ${fmt(st.values[i])}`],
      e.clientX, e.clientY);
  });
  textBox.addEventListener("mouseleave", () => ctxs.tip.hide());
  textBox.tabIndex = 0;
  textBox.addEventListener("keydown", (e) => {
    const step = { ArrowLeft: -1, ArrowRight: 1, Home: -T, End: T }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    select(st.token + step);
  });

  const ready = pick(st.layer, st.head);
  return { state: st, select, pick, setDirection, zoomBy, ready, refresh: () => {} };
}

// Node (the unit tests in tests/js) reads the pure parts; in a page `module` does not exist.
if (typeof module !== "undefined") {
  module.exports = { fmt, makeRamp, makeScale, diverging, divergingRgb, base64Bytes, base85Bytes,
    halfToFloat, decodeArray, loadPart, headBlocks, RAMP_STOPS, LOG_FLOOR };
}
