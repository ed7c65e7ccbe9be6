/*
 * attnscope explorer: the page around the views.
 *
 * Inlined after the view script, inside the same function: every view is drawn by
 * attnscopeMount(root) from that script, fed the payload the API returns; this file only asks
 * the API, lays out the results, and keeps the state in the URL. Every text from the server
 * (tokens, labels, messages) is inserted with textContent, never as markup. Names start with
 * "ex" so they never meet the view script's own.
 */

const exConfig = JSON.parse(document.getElementById("explorer-config").textContent);
const exState = {
  model: exConfig.default, text: "", text_b: null, layer: -1, head: null,
  compare: false, text2: "", model2: exConfig.default, tokens: [], architecture: "encoder",
};
const ex$ = (id) => document.getElementById(id);
// Tests and tools reach the explorer's state through the page element, never a global.
const exApi = { state: exState, timings: {} };
document.body.explorer = exApi;

function exEl(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function exFmt(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "\u2013";
  return Number(x).toFixed(digits === undefined ? 4 : digits);
}

// ----- talking to the API ---------------------------------------------------------------------

class ExApiError extends Error {}

async function exPost(path, body, as) {
  let response;
  try {
    response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
  } catch (err) {
    throw new ExApiError("The explorer cannot be reached; is `attnscope serve` still running?");
  }
  if (response.ok) return as === "text" ? response.text() : response.json();
  let sentence = `The explorer answered ${response.status}.`;
  try {
    const data = await response.json();
    if (data && data.error) sentence = data.error;
  } catch (err) { /* not JSON: keep the status sentence */ }
  throw new ExApiError(sentence);
}

function exShowError(err) {
  const box = ex$("error");
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = err instanceof ExApiError ? err.message : "Something went wrong: " + err;
  box.hidden = false;
  ex$("status").textContent = "";
}

function exInput() {
  return { model: exState.model, text: exState.text, text_b: exState.text_b };
}

// ----- mounting views -------------------------------------------------------------------------

// A view root as every attnscope page has one: its data in a JSON element, then mounted by the
// view script. Resolves once drawn (or with the view's own error sentence shown inside it).
function exMount(container, payload) {
  container.textContent = "";
  const root = exEl("div", "attnscope-root");
  const data = document.createElement("script");
  data.type = "application/json";
  data.className = "attnscope-data";
  data.textContent = JSON.stringify(payload);
  root.append(data, exEl("div", "as-status", "Loading attention view\u2026"));
  container.append(root);
  attnscopeMount(root);
  return new Promise((resolve) => {
    const done = () => root.dataset.ready || root.dataset.error;
    if (done()) return resolve(root);
    const watch = new MutationObserver(() => {
      if (done()) {
        watch.disconnect();
        resolve(root);
      }
    });
    watch.observe(root, { attributes: true });
  });
}

function exActiveTab(root) {
  const active = root && root.querySelector(".as-tab.as-active");
  return active ? active.dataset.kind : null;
}

// ----- the URL holds the state ----------------------------------------------------------------

function exWriteUrl() {
  const q = new URLSearchParams();
  q.set("text", exState.text);
  if (exState.text_b) q.set("text_b", exState.text_b);
  if (exState.model !== exConfig.default) q.set("model", exState.model);
  q.set("layer", String(exState.layer));
  if (exState.head !== null) q.set("head", String(exState.head));
  if (exState.compare) {
    q.set("compare", "1");
    if (exState.text2) q.set("text2", exState.text2);
    if (exState.model2 !== exConfig.default) q.set("model2", exState.model2);
  }
  history.replaceState(null, "", "?" + q.toString());
}

function exReadUrl() {
  const q = new URLSearchParams(location.search);
  const names = exConfig.models.map((m) => m.name);
  const int = (v, d) => (v !== null && /^-?\d+$/.test(v) ? Number(v) : d);
  exState.text = q.get("text") || "";
  exState.text_b = q.get("text_b") || null;
  exState.model = names.includes(q.get("model")) ? q.get("model") : exConfig.default;
  exState.layer = int(q.get("layer"), -1);
  exState.head = int(q.get("head"), null);
  exState.compare = q.get("compare") === "1";
  exState.diffChosen = exState.compare && exState.head !== null;
  exState.text2 = q.get("text2") || "";
  exState.model2 = names.includes(q.get("model2")) ? q.get("model2") : exConfig.default;
  ex$("text").value = exState.text;
  ex$("text-b").value = exState.text_b || "";
  ex$("model").value = exState.model;
  ex$("compare").checked = exState.compare;
  ex$("compare-inputs").hidden = !exState.compare;
  ex$("text2").value = exState.text2;
  ex$("model2").value = exState.model2;
}

// ----- running ---------------------------------------------------------------------------------

async function exRun(fromUrl) {
  if (fromUrl !== true) exState.diffChosen = false; // a new run shows the head changing most
  exState.text = ex$("text").value;
  exState.text_b = ex$("text-b").value.trim() ? ex$("text-b").value : null;
  const model = ex$("model").value;
  if (model !== exState.model) {
    exState.layer = -1;
    exState.head = null;
  }
  exState.model = model;
  exState.compare = ex$("compare").checked;
  exState.text2 = ex$("text2").value;
  exState.model2 = ex$("model2").value;
  exShowError(null);
  if (!exState.text.trim()) {
    exShowError(new ExApiError("Type a text first."));
    return;
  }
  ex$("run").disabled = true;
  ex$("status").textContent = "Running\u2026";
  try {
    if (exState.compare) await exRunCompare();
    else await exRunSingle();
    ex$("download").disabled = false;
    exWriteUrl();
  } catch (err) {
    exShowError(err);
  } finally {
    ex$("run").disabled = false;
  }
}

async function exRunSingle() {
  const started = performance.now();
  const data = await exPost("/api/capture", { ...exInput(), layer: exState.layer,
    head: exState.head });
  const received = performance.now();
  exState.tokens = data.tokens;
  exState.layer = data.layer;
  exState.head = data.head;
  exState.architecture = (exConfig.models.find((m) => m.name === data.model) || {}).architecture;
  ex$("compared").hidden = true;
  ex$("single").hidden = false;
  const root = await exMount(ex$("views"), data.view);
  exApi.timings.capture = { request_ms: received - started, draw_ms: performance.now() - received };
  exApi.root = root;
  ex$("status").textContent = `${data.model}: ${data.tokens.length} tokens, ` +
    `${data.num_layers} layers \u00d7 ${data.num_heads} heads`;
  exResetExplain();
  exFillFlowOutputs(data.tokens);
  await exLoadHeads();
}

// Show one head: the head view with that head alone, and the model view opened on it.
async function exSelectHead(layer, head) {
  exState.layer = layer;
  exState.head = head;
  exShowError(null);
  try {
    const tab = exActiveTab(exApi.root);
    const data = await exPost("/api/capture", { ...exInput(), layer, head });
    const root = await exMount(ex$("views"), data.view);
    exApi.root = root;
    if (root.attnscope && root.attnscope.show) {
      root.attnscope.show(tab || "head");
      if (tab === "model" && root.attnscope.views.model && root.attnscope.views.model.open) {
        root.attnscope.views.model.open(layer, head);
      }
    }
    exMarkSelectedHead();
    exWriteUrl();
  } catch (err) {
    exShowError(err);
  }
}

// ----- the head table ---------------------------------------------------------------------------

const exHeads = { rows: [], names: [], sort: { key: null, dir: 1 } };

async function exLoadHeads() {
  const data = await exPost("/api/heads", exInput());
  exHeads.rows = data.heads;
  exHeads.names = data.score_names;
  exDrawHeads();
}

function exHeadValue(row, key) {
  if (key === "layer" || key === "head" || key === "label" || key === "class") return row[key];
  if (key === "label_score") return row.label_score;
  return row.scores[key];
}

function exDrawHeads() {
  const table = ex$("heads-table");
  table.textContent = "";
  const columns = ["layer", "head", "label", "label_score", "class", ...exHeads.names];
  const titles = { label_score: "score" };
  const thead = exEl("thead");
  const tr = exEl("tr");
  for (const key of columns) {
    const th = exEl("th", null, titles[key] || key);
    th.dataset.key = key;
    if (exHeads.sort.key === key) th.classList.add(exHeads.sort.dir > 0 ? "ex-sorted-asc" : "ex-sorted-desc");
    th.addEventListener("click", () => {
      exHeads.sort = { key, dir: exHeads.sort.key === key ? -exHeads.sort.dir : (typeof exHeadValue(exHeads.rows[0], key) === "string" ? 1 : -1) };
      exDrawHeads();
    });
    tr.append(th);
  }
  thead.append(tr);
  const tbody = exEl("tbody");
  let rows = exHeads.rows.slice();
  if (exHeads.sort.key) {
    const { key, dir } = exHeads.sort;
    rows.sort((a, b) => {
      const x = exHeadValue(a, key), y = exHeadValue(b, key);
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
  }
  for (const row of rows) {
    const r = exEl("tr");
    r.dataset.layer = String(row.layer);
    r.dataset.head = String(row.head);
    for (const key of columns) {
      const v = exHeadValue(row, key);
      const text = typeof v === "number" && !Number.isInteger(v) ? exFmt(v, key === "distance" ? 1 : 2) : v;
      const td = exEl("td", key === "label" || key === "class" ? "ex-label" : null, text === null ? "\u2013" : text);
      td.dataset.key = key;
      r.append(td);
    }
    r.addEventListener("click", () => exSelectHead(row.layer, row.head));
    tbody.append(r);
  }
  table.append(thead, tbody);
  exMarkSelectedHead();
}

function exMarkSelectedHead() {
  const layers = exHeads.rows.length ? Math.max(...exHeads.rows.map((r) => r.layer)) + 1 : 0;
  const layer = exState.layer < 0 ? exState.layer + layers : exState.layer;
  for (const r of ex$("heads-table").querySelectorAll("tbody tr")) {
    r.classList.toggle("ex-selected", exState.head !== null &&
      Number(r.dataset.layer) === layer && Number(r.dataset.head) === exState.head);
  }
}

// ----- explain ------------------------------------------------------------------------------------

function exResetExplain() {
  const box = ex$("explain");
  box.textContent = "";
  box.append(exEl("p", "ex-hint", "Open a head in the model view (or click one in the head " +
    "table), then click a cell: its query, key, q\u00b7k, scale and softmax show here."));
}

function exHalfs(spec) {
  const bin = atob(spec.b64);
  const out = new Float32Array(bin.length >> 1);
  for (let i = 0; i < out.length; i++) {
    const h = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    const exp = (h >> 10) & 0x1f, man = h & 0x3ff, sign = h & 0x8000 ? -1 : 1;
    out[i] = sign * (exp === 0 ? man * 5.960464477539063e-8 : exp === 31 ? (man ? NaN : Infinity)
      : (1 + man / 1024) * Math.pow(2, exp - 15));
  }
  return out;
}

async function exExplain(detail) {
  exShowError(null);
  const box = ex$("explain");
  try {
    const ex = await exPost("/api/explain", { ...exInput(), layer: detail.layer,
      head: detail.head, query: detail.query, part: detail.part });
    const j = detail.key;
    box.textContent = "";
    box.dataset.layer = String(ex.layer);
    box.dataset.head = String(ex.head);
    box.dataset.query = String(ex.query);
    box.dataset.key = String(j);
    const where = detail.part === "self" ? "" : `${detail.part} attention, `;
    box.append(exEl("p", null, `${where}Layer ${ex.layer}, head ${ex.head}: query ${ex.query} ` +
      `\u201c${ex.query_token}\u201d \u2192 key ${j} \u201c${ex.key_tokens[j]}\u201d`));
    const d = ex.head_dim;
    const keys = exHalfs(ex.keys);
    const k = Array.from(keys.subarray(j * d, j * d + d));
    const shown = (v) => v.slice(0, 6).map((x) => (x >= 0 ? "+" : "") + x.toFixed(3)).join(" ") + (d > 6 ? " \u2026" : "");
    const lines = [
      `q = [${shown(ex.q)}]   (d_head = ${d})`,
      `k = [${shown(k)}]`,
      `q\u00b7k = ${exFmt(ex.dots[j])}`,
      `scale = ${exFmt(ex.scale, 6)}`,
      `score = q\u00b7k \u00d7 scale = ${exFmt(ex.scores[j])}` + (ex.bias ? ` (+ bias ${exFmt(ex.bias[j])})` : ""),
      ex.visible[j] ? `softmax over the keys = ${exFmt(ex.weights[j])}   (model: ${exFmt(ex.model_weights[j])})`
        : "masked: a causal model's query does not see later keys",
    ];
    box.append(exEl("div", "ex-formula", lines.join("\n")));
    const table = exEl("table", "ex-table ex-explain-table");
    const head = exEl("tr");
    for (const name of ["pos", "key", "q\u00b7k", "\u00d7 scale", "softmax", "model"]) head.append(exEl("th", null, name));
    table.append(head);
    ex.key_tokens.forEach((tok, i) => {
      const r = exEl("tr", i === j ? "ex-selected" : null);
      r.dataset.key = String(i);
      const cells = [[i, null], [tok, "ex-tok"], [exFmt(ex.dots[i]), "dots"], [exFmt(ex.scores[i]), "scores"],
        [ex.visible[i] ? exFmt(ex.weights[i]) : "masked", "weights"], [exFmt(ex.model_weights[i]), "model_weights"]];
      for (const [text, field] of cells) {
        const td = exEl("td", field === "ex-tok" ? "ex-tok" : null, text);
        if (field && field !== "ex-tok") td.dataset.field = field;
        r.append(td);
      }
      table.append(r);
    });
    const scroll = exEl("div", "ex-scroll");
    scroll.append(table);
    box.append(scroll, exEl("p", "ex-hint", `The softmax sums to 1 over the keys; it matches the ` +
      `model's own row to ${ex.max_abs_error.toExponential(1)}.`));
    box.scrollIntoView({ block: "nearest" });
  } catch (err) {
    exShowError(err);
  }
}

// ----- rollout and flow -----------------------------------------------------------------------------

const exFlow = { stop: false, running: false };

function exFillFlowOutputs(tokens) {
  const sel = ex$("flow-output");
  sel.textContent = "";
  tokens.forEach((tok, i) => {
    const opt = exEl("option", null, `${i}: ${tok}`);
    opt.value = String(i);
    sel.append(opt);
  });
  sel.value = String(exState.architecture === "decoder" ? tokens.length - 1 : 0);
  ex$("flow-result").textContent = "";
  ex$("flow-status").textContent = "";
  ex$("flow-progress").hidden = true;
}

async function exRunFlow() {
  if (exFlow.running) return;
  exFlow.running = true;
  exFlow.stop = false;
  exShowError(null);
  const kind = ex$("flow-kind").value;
  const output = Number(ex$("flow-output").value);
  const bar = ex$("flow-progress"), status = ex$("flow-status");
  ex$("flow-run").disabled = true;
  ex$("flow-stop").hidden = kind !== "flow";
  ex$("flow-result").textContent = "";
  bar.hidden = kind !== "flow";
  bar.value = 0;
  try {
    let data;
    for (;;) {
      // Flow comes in slices of a quarter second, so progress shows as it goes.
      data = await exPost("/api/flow", { ...exInput(), kind, output, budget_s: 0.25 });
      bar.max = data.total;
      bar.value = data.done;
      status.textContent = `${kind}: ${data.done} of ${data.total} input tokens, ${data.seconds.toFixed(2)} s`;
      if (data.complete || data.note || exFlow.stop) break;
    }
    exDrawFlow(data);
  } catch (err) {
    exShowError(err);
  } finally {
    exFlow.running = false;
    ex$("flow-run").disabled = false;
    ex$("flow-stop").hidden = true;
  }
}

function exDrawFlow(data) {
  const box = ex$("flow-result");
  box.textContent = "";
  box.dataset.kind = data.kind;
  box.dataset.complete = data.complete ? "1" : "0";
  if (data.note) box.append(exEl("p", "ex-hint", data.note));
  else if (!data.complete) box.append(exEl("p", "ex-hint", "Stopped before every input token was done."));
  if (data.figure) {
    const img = exEl("img", "ex-figure");
    img.alt = `${data.kind} relevance for output ${data.output}`;
    img.src = data.figure;
    box.append(img);
  }
  const values = data.relevance || data.values;
  const order = values.map((v, i) => [v, i]).filter((p) => p[0] !== null).sort((a, b) => b[0] - a[0]).slice(0, 10);
  const table = exEl("table", "ex-table ex-flow-table");
  const head = exEl("tr");
  for (const name of ["pos", "input token", data.relevance ? "relevance" : "flow"]) head.append(exEl("th", null, name));
  table.append(head);
  for (const [v, i] of order) {
    const r = exEl("tr");
    r.dataset.index = String(i);
    r.append(exEl("td", null, i), exEl("td", "ex-tok", data.tokens[i]), exEl("td", null, exFmt(v)));
    table.append(r);
  }
  box.append(table);
}

// ----- compare -----------------------------------------------------------------------------------------

async function exRunCompare(layer, head) {
  const b = { model: exState.model2, text: exState.text2.trim() ? exState.text2 : exState.text,
    text_b: exState.text2.trim() ? null : exState.text_b };
  // The head drawn large: the one clicked, or the one a shared URL names, else (null) the
  // head that changes most.
  if (layer === undefined) {
    layer = exState.diffChosen ? exState.layer : null;
    head = exState.diffChosen ? exState.head : null;
  }
  const data = await exPost("/api/compare", { a: exInput(), b, layer, head });
  ex$("single").hidden = true;
  ex$("compared").hidden = false;
  ex$("side-a-title").textContent = `A: ${data.a.model} \u2014 ${data.a.text}`;
  ex$("side-b-title").textContent = `B: ${data.b.model} \u2014 ${data.b.text}`;
  await Promise.all([exMount(ex$("side-a"), data.a.view), exMount(ex$("side-b"), data.b.view)]);
  exDrawDiff(data.difference);
  ex$("status").textContent = `A: ${data.a.tokens.length} tokens, B: ${data.b.tokens.length} tokens`;
}

function exDrawDiff(diff) {
  const box = ex$("diff");
  box.textContent = "";
  box.dataset.comparable = diff.comparable ? "1" : "0";
  if (!diff.comparable) {
    box.append(exEl("p", "ex-hint", diff.reason));
    return;
  }
  exState.layer = diff.layer;
  exState.head = diff.head;
  const grid = exEl("img", "ex-figure ex-diff-grid");
  grid.alt = "difference of every head";
  grid.src = diff.grid;
  const one = exEl("img", "ex-figure ex-diff-head");
  one.alt = `difference of layer ${diff.layer}, head ${diff.head}`;
  one.src = diff.head_figure;
  const ranked = [];
  diff.changes.forEach((row, l) => row.forEach((v, h) => ranked.push([v, l, h])));
  ranked.sort((a, b) => b[0] - a[0]);
  const table = exEl("table", "ex-table ex-diff-table");
  const head = exEl("tr");
  for (const name of ["layer", "head", "largest |B \u2212 A|"]) head.append(exEl("th", null, name));
  table.append(head);
  for (const [v, l, h] of ranked.slice(0, 12)) {
    const r = exEl("tr", l === diff.layer && h === diff.head ? "ex-selected" : null);
    r.dataset.layer = String(l);
    r.dataset.head = String(h);
    r.append(exEl("td", null, l), exEl("td", null, h), exEl("td", null, exFmt(v, 3)));
    r.addEventListener("click", async () => {
      exShowError(null);
      try {
        exState.diffChosen = true;
        await exRunCompare(l, h);
        exWriteUrl();
      } catch (err) {
        exShowError(err);
      }
    });
    table.append(r);
  }
  box.append(exEl("p", "ex-hint", "Red: B attends more than A; blue: less. Heads that change " +
    "most (click one to draw it large):"), table, one, grid);
}

// ----- download -------------------------------------------------------------------------------------

async function exDownload() {
  exShowError(null);
  try {
    const body = { a: { ...exInput(), layer: exState.layer, head: exState.head } };
    if (exState.compare) {
      body.b = { model: exState.model2, text: exState.text2.trim() ? exState.text2 : exState.text,
        text_b: exState.text2.trim() ? null : exState.text_b };
    }
    const page = await exPost("/api/page", body, "text");
    const url = URL.createObjectURL(new Blob([page], { type: "text/html" }));
    const link = exEl("a");
    link.href = url;
    link.download = "attnscope-explorer.html";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    exShowError(err);
  }
}

// ----- start ---------------------------------------------------------------------------------------------

function exStart() {
  for (const id of ["model", "model2"]) {
    const sel = ex$(id);
    for (const m of exConfig.models) {
      const opt = exEl("option", null, `${m.name} (${m.layers}\u00d7${m.heads}, ${m.architecture})`);
      opt.value = m.name;
      sel.append(opt);
    }
  }
  ex$("text").maxLength = exConfig.limits.max_chars;
  ex$("text-b").maxLength = exConfig.limits.max_chars;
  ex$("text2").maxLength = exConfig.limits.max_chars;
  ex$("run-form").addEventListener("submit", (e) => {
    e.preventDefault();
    exRun(false);
  });
  // Enter runs; Shift+Enter starts a new line.
  for (const id of ["text", "text-b", "text2"]) {
    ex$(id).addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        exRun(false);
      }
    });
  }
  ex$("compare").addEventListener("change", () => {
    ex$("compare-inputs").hidden = !ex$("compare").checked;
  });
  ex$("flow-run").addEventListener("click", exRunFlow);
  ex$("flow-stop").addEventListener("click", () => { exFlow.stop = true; });
  ex$("download").addEventListener("click", exDownload);
  ex$("views").addEventListener("attnscope-cell", (e) => exExplain(e.detail));
  exApi.run = exRun;
  exApi.selectHead = exSelectHead;
  exReadUrl();
  if (exState.text.trim()) exRun(true);
  document.body.dataset.ready = "1";
}

exStart();
