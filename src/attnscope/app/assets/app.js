/*
 * attnscope explorer: the page around the views.
 *
 * Inlined after the view script, inside the same function: every view is drawn by
 * attnscopeMount(root) from that script, fed the payload the API returns; this file only asks
 * the API, lays out the results, and keeps the state in the URL. Every text from the server
 * (tokens, labels, messages) is inserted with textContent, never as markup. Names start with
 * "ex" so they never meet the view script's own.
 */

/** @type {ExplorerConfig} */
const exConfig = JSON.parse(document.getElementById("explorer-config").textContent);
const exState = {
  model: exConfig.default, text: "", text_b: null, layer: -1, head: null,
  compare: false, text2: "", model2: exConfig.default, tokens: [], architecture: "encoder",
};
/** The explorer's own elements, by id (inputs, selects and buttons alike).
 * @type {(id: string) => any} */
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
  return exAsk(path, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) }, as);
}

// GET with query parameters (null ones left out): the corpus browser's routes.
async function exGet(path, params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined) q.set(key, String(value));
  }
  return exAsk(q.toString() ? `${path}?${q}` : path, { method: "GET" });
}

async function exAsk(path, init, as) {
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ExApiError("The explorer cannot be reached; is `attnscope serve` still running?");
  }
  if (response.ok) return as === "text" ? response.text() : response.json();
  let sentence = `The explorer answered ${response.status}.`;
  try {
    const data = await response.json();
    if (data && data.error) sentence = data.error;
  } catch { /* not JSON: keep the status sentence */ }
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

// A sortable table: click a column to sort by it (again: the other way), a row to pick it.
// `model`: columns [{key, title, cls, digits}], rows, value(row, key), sort {key, dir},
// and optionally pick(row), rowData(row) (the row's data- attributes) and after().
function exSortableTable(table, model) {
  table.textContent = "";
  const thead = exEl("thead");
  const tr = exEl("tr");
  for (const col of model.columns) {
    const th = exEl("th", null, col.title || col.key);
    th.dataset.key = col.key;
    if (model.sort.key === col.key) th.classList.add(model.sort.dir > 0 ? "ex-sorted-asc" : "ex-sorted-desc");
    th.addEventListener("click", () => {
      const first = model.rows.length ? model.value(model.rows[0], col.key) : 0;
      model.sort = { key: col.key, dir: model.sort.key === col.key ? -model.sort.dir : (typeof first === "string" ? 1 : -1) };
      exSortableTable(table, model);
    });
    tr.append(th);
  }
  thead.append(tr);
  const tbody = exEl("tbody");
  const rows = model.rows.slice();
  if (model.sort.key) {
    const { key, dir } = model.sort;
    rows.sort((a, b) => {
      const x = model.value(a, key), y = model.value(b, key);
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
  }
  for (const row of rows) {
    const r = exEl("tr");
    if (model.rowData) Object.assign(r.dataset, model.rowData(row));
    for (const col of model.columns) {
      const v = model.value(row, col.key);
      const text = typeof v === "number" && !Number.isInteger(v) ? exFmt(v, col.digits === undefined ? 2 : col.digits) : v;
      const td = exEl("td", col.cls || null, text === null || text === undefined ? "\u2013" : text);
      td.dataset.key = col.key;
      r.append(td);
    }
    if (model.pick) r.addEventListener("click", () => model.pick(row));
    tbody.append(r);
  }
  table.append(thead, tbody);
  if (model.after) model.after();
}

function exDrawHeads() {
  const keys = ["layer", "head", "label", "label_score", "class", ...exHeads.names];
  exHeads.columns = keys.map((key) => ({ key, title: key === "label_score" ? "score" : key,
    cls: key === "label" || key === "class" ? "ex-label" : null, digits: key === "distance" ? 1 : 2 }));
  exHeads.value = exHeadValue;
  exHeads.rowData = (row) => ({ layer: String(row.layer), head: String(row.head) });
  exHeads.pick = (row) => exSelectHead(row.layer, row.head);
  exHeads.after = exMarkSelectedHead;
  exSortableTable(ex$("heads-table"), exHeads);
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

// ----- the corpus browser ----------------------------------------------------------------------
// Shown when the explorer was started with --corpus: the store's per-head table, layer plots
// (drawn by the report's chart script), syntactic heads, token search, and each head's best
// texts, which open in the views above at that layer and head. Its state lives in the URL's
// fragment: #corpus&run=..&layer=..&head=..&kind=..

const exCorpus = {
  info: exConfig.corpus, run: null, layer: null, head: null, kind: "weight", loaded: null,
  view: "stats",
  heads: { rows: [], sort: { key: null, dir: 1 } },
  relations: { rows: [], sort: { key: null, dir: 1 } },
  search: { rows: [], sort: { key: null, dir: 1 } },
  examples: [],
};

function exCorpusRun() {
  return exCorpus.info.runs.find((r) => r.run_id === exCorpus.run);
}

function exCorpusError(err) {
  const box = ex$("corpus-error");
  box.hidden = !err;
  box.textContent = !err ? "" : err instanceof ExApiError ? err.message : "Something went wrong: " + err;
}

function exShowTab(tab) {
  document.body.dataset.tab = tab;
  ex$("corpus").hidden = tab !== "corpus";
  const tabs = /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(".ex-tab"));
  for (const button of tabs) {
    button.classList.toggle("ex-active", button.dataset.tab === tab);
  }
}

function exCorpusWriteUrl() {
  const q = new URLSearchParams();
  if (exCorpus.run !== exCorpus.info.default_run) q.set("run", exCorpus.run);
  if (exCorpus.head !== null) {
    q.set("layer", String(exCorpus.layer));
    q.set("head", String(exCorpus.head));
  }
  if (exCorpus.kind !== "weight") q.set("kind", exCorpus.kind);
  if (exCorpus.view === "atlas") q.set("view", "atlas");
  const rest = q.toString();
  history.replaceState(null, "", location.pathname + "#corpus" + (rest ? "&" + rest : ""));
}

function exCorpusReadUrl() {
  const q = new URLSearchParams(location.hash.slice("#corpus".length).replace(/^&/, ""));
  const int = (v) => (v !== null && /^-?\d+$/.test(v) ? Number(v) : null);
  const runs = exCorpus.info.runs.map((r) => r.run_id);
  exCorpus.run = runs.includes(q.get("run")) ? q.get("run") : exCorpus.info.default_run;
  exCorpus.layer = int(q.get("layer"));
  exCorpus.head = exCorpus.layer === null ? null : int(q.get("head"));
  exCorpus.kind = exCorpus.info.example_kinds.includes(q.get("kind")) ? q.get("kind") : "weight";
  exCorpus.view = q.get("view") === "atlas" ? "atlas" : "stats";
}

// The corpus tab's two views: the statistics (tables, charts, search) and the head atlas, the
// page attnscope atlas writes, served by /api/corpus/atlas and loaded when first shown.
function exCorpusShowView(view) {
  exCorpus.view = view;
  ex$("corpus-stats").hidden = view !== "stats";
  ex$("corpus-atlas-card").hidden = view !== "atlas";
  const buttons = /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(".ex-subtab"));
  for (const button of buttons) {
    button.classList.toggle("ex-active", button.dataset.view === view);
    button.setAttribute("aria-selected", String(button.dataset.view === view));
  }
  if (view === "atlas") {
    const src = "/api/corpus/atlas?" + new URLSearchParams({ run: exCorpus.run }).toString();
    const frame = /** @type {HTMLIFrameElement} */ (ex$("corpus-atlas"));
    if (frame.getAttribute("src") !== src) frame.setAttribute("src", src);
    ex$("corpus-atlas-link").setAttribute("href", src);
  }
}

// Show the corpus tab: load the run's tables and charts once, then the chosen head's texts.
async function exOpenCorpus() {
  exShowTab("corpus");
  exCorpusError(null);
  ex$("corpus-run").value = exCorpus.run;
  ex$("corpus-kind").value = exCorpus.kind;
  const run = exCorpusRun();
  ex$("corpus-about").textContent = `${run.model}: ${run.texts} texts, ${run.tokens} tokens ` +
    `from ${run.source}`;
  exCorpusShowView(exCorpus.view || "stats");
  try {
    if (exCorpus.loaded !== exCorpus.run) {
      const params = { run: exCorpus.run };
      const [heads, layers, relations] = await Promise.all([
        exGet("/api/corpus/heads", params), exGet("/api/corpus/layers", params),
        run.relations ? exGet("/api/corpus/relations", params) : Promise.resolve({ relations: [] })]);
      exCorpus.heads.rows = heads.heads;
      exCorpus.heads.names = heads.score_names;
      exDrawCorpusHeads();
      exDrawCorpusCharts(layers.charts);
      exCorpus.relations.rows = relations.relations;
      ex$("corpus-relations-card").hidden = !relations.relations.length;
      exDrawCorpusRelations();
      exCorpus.search.rows = [];
      ex$("corpus-search").textContent = "";
      ex$("corpus-search-status").textContent = "";
      exCorpus.loaded = exCorpus.run;
    }
    if (exCorpus.head !== null) await exCorpusSelect(exCorpus.layer, exCorpus.head);
    else exCorpusWriteUrl();
  } catch (err) {
    exCorpusError(err);
  }
}

function exDrawCorpusHeads() {
  const h = exCorpus.heads;
  const keys = ["layer", "head", "label", "label_share", ...h.names];
  h.columns = keys.map((key) => ({ key, title: key === "label_share" ? "share" : key,
    cls: key === "label" ? "ex-label" : null, digits: key === "distance" ? 1 : 3 }));
  h.value = (row, key) => (key in row ? row[key] : row.scores[key]);
  h.rowData = (row) => ({ layer: String(row.layer), head: String(row.head) });
  h.pick = (row) => exCorpusSelect(row.layer, row.head);
  h.after = exCorpusMark;
  exSortableTable(ex$("corpus-table"), h);
}

function exCorpusMark() {
  for (const r of ex$("corpus-table").querySelectorAll("tbody tr")) {
    const selected = exCorpus.head !== null &&
      Number(r.dataset.layer) === exCorpus.layer && Number(r.dataset.head) === exCorpus.head;
    r.classList.toggle("ex-selected", selected);
    // a head chosen from the URL or a chart may lie below the table's scrolled rows
    const box = r.closest(".ex-scroll");
    if (selected && box && box.scrollHeight > box.clientHeight) {
      const offset = r.getBoundingClientRect().top - box.getBoundingClientRect().top;
      if (offset < 0 || offset > box.clientHeight - r.offsetHeight) {
        box.scrollTop = Math.max(0, box.scrollTop + offset - box.clientHeight / 2);
      }
    }
  }
}

function exDrawCorpusCharts(specs) {
  const box = ex$("corpus-charts");
  box.textContent = "";
  specs.forEach((_, i) => {
    const figure = exEl("figure", "as-chart");
    figure.dataset.chart = String(i);
    box.append(figure);
  });
  exCharts(box, specs);
}

function exDrawCorpusRelations() {
  const m = exCorpus.relations;
  m.columns = [{ key: "relation", cls: "ex-label" }, { key: "direction", cls: "ex-label" },
    { key: "n", title: "arcs" }, { key: "best", title: "best head" }, { key: "accuracy", digits: 3 },
    { key: "baseline_offset", title: "baseline offset" },
    { key: "baseline_accuracy", title: "baseline accuracy", digits: 3 }];
  m.value = (row, key) => (key === "best" ? `${row.layer}.${row.head}` : key === "baseline_offset"
    ? (row.baseline_offset > 0 ? "+" : "") + row.baseline_offset : row[key]);
  m.rowData = (row) => ({ layer: String(row.layer), head: String(row.head) });
  m.pick = (row) => exCorpusSelect(row.layer, row.head);
  exSortableTable(ex$("corpus-relations"), m);
}

// Pick a head: mark it, and list its best texts, each with an "open" button.
async function exCorpusSelect(layer, head) {
  exCorpus.layer = layer;
  exCorpus.head = head;
  exCorpusMark();
  exCorpusWriteUrl();
  exCorpusError(null);
  const box = ex$("corpus-examples");
  try {
    const kind = exCorpus.kind;
    const data = await exGet("/api/corpus/examples", { run: exCorpus.run, layer, head, kind, k: 10 });
    // another head (or kind) was picked while this one loaded
    if (exCorpus.layer !== layer || exCorpus.head !== head || exCorpus.kind !== kind) return;
    exCorpus.examples = data.examples;
    const row = exCorpus.heads.rows.find((r) => r.layer === data.layer && r.head === data.head);
    ex$("corpus-examples-title").textContent = `Examples: layer ${data.layer}, head ${data.head}` +
      (row && row.label ? ` (${row.label})` : "");
    box.textContent = "";
    box.dataset.layer = String(data.layer);
    box.dataset.head = String(data.head);
    box.dataset.kind = data.kind;
    if (!data.served) {
      box.append(exEl("p", "ex-hint ex-not-served", `The corpus's model ${data.model} is not ` +
        `served by this explorer: start it with --model ${data.model} to open these texts in the views.`));
    }
    if (!data.examples.length) box.append(exEl("p", "ex-hint", "This head has no examples in the store."));
    const list = exEl("ol", "ex-examples");
    data.examples.forEach((ex, i) => {
      const item = exEl("li", "ex-example");
      item.dataset.rank = String(i);
      item.append(exEl("b", null, exFmt(ex.value, 3)), " ");
      if (ex.query_token !== null) {
        const tokens = exEl("span", "ex-example-text");
        tokens.append(exEl("mark", "ex-query", ex.query_token), " \u2192 ", exEl("mark", "ex-key", ex.key_token));
        item.append(tokens, " ");
      }
      item.append(exEl("span", "ex-hint", `(text ${ex.position})`));
      const open = exEl("button", "ex-open", "open");
      open.type = "button";
      open.disabled = !data.served;
      open.title = data.served ? "capture this text and show it at this layer and head" : "";
      open.addEventListener("click", () => exCorpusOpen(ex, data.layer, data.head));
      item.append(open, exMarked(ex, 0, ex.text));
      if (ex.text_b) item.append(exMarked(ex, 1, ex.text_b));
      list.append(item);
    });
    box.append(list);
  } catch (err) {
    exCorpusError(err);
  }
}

// One text of an example, with its query and key token marked where the API says they are.
function exMarked(ex, segment, text) {
  const box = exEl("div", "ex-example-text");
  const marks = [];
  for (const [role, span] of [["query", ex.query_span], ["key", ex.key_span]]) {
    if (!span || span[0] !== segment) continue;
    const same = marks.find((m) => m.start === span[1] && m.end === span[2]);
    if (same) same.roles.push(role);
    else marks.push({ start: span[1], end: span[2], roles: [role] });
  }
  marks.sort((a, b) => a.start - b.start);
  let at = 0;
  for (const m of marks) {
    if (m.start < at) continue; // overlapping spans: the first one is marked
    box.append(text.slice(at, m.start));
    const mark = exEl("mark", m.roles.map((r) => "ex-" + r).join(" "), text.slice(m.start, m.end));
    mark.title = m.roles.join(" and ");
    box.append(mark);
    at = m.end;
  }
  box.append(text.slice(at));
  return box;
}

// Open an example in the views: capture its text with the run's model at that layer and head.
async function exCorpusOpen(ex, layer, head) {
  const run = exCorpusRun();
  ex$("text").value = ex.text;
  ex$("text-b").value = ex.text_b || "";
  ex$("model").value = run.model;
  ex$("compare").checked = false;
  ex$("compare-inputs").hidden = true;
  exState.model = run.model;
  exState.layer = layer;
  exState.head = head;
  exShowTab("text");
  await exRun(true);
}

async function exCorpusSearch() {
  const token = ex$("corpus-token").value.trim();
  const status = ex$("corpus-search-status");
  exCorpusError(null);
  if (!token) {
    exCorpusError(new ExApiError("Type a token to search for, e.g. \u201cit\u201d."));
    return;
  }
  ex$("corpus-search-run").disabled = true;
  status.textContent = "Searching\u2026";
  try {
    const data = await exGet("/api/corpus/search", { run: exCorpus.run, token, top: 3 });
    const m = exCorpus.search;
    m.rows = data.rows;
    m.sort = { key: "weight", dir: -1 };
    m.columns = [{ key: "layer" }, { key: "head" }, { key: "key_token", title: "key token", cls: "ex-label" },
      { key: "weight", digits: 3 }];
    m.value = (row, key) => row[key];
    m.rowData = (row) => ({ layer: String(row.layer), head: String(row.head) });
    m.pick = (row) => exCorpusSelect(row.layer, row.head);
    exSortableTable(ex$("corpus-search"), m);
    status.textContent = `\u201c${data.token}\u201d: ${data.occurrences} occurrences; the 3 key ` +
      "tokens each head attends to most from it (mean weight per occurrence)";
  } catch (err) {
    status.textContent = "";
    exCorpusError(err);
  } finally {
    ex$("corpus-search-run").disabled = false;
  }
}

function exStartCorpus() {
  if (!exCorpus.info) return;
  ex$("tabs").hidden = false;
  const select = ex$("corpus-run");
  for (const run of exCorpus.info.runs) {
    const opt = exEl("option", null, `${run.run_id} (${run.model}, ${run.texts} texts)`);
    opt.value = run.run_id;
    select.append(opt);
  }
  ex$("corpus-run-field").hidden = exCorpus.info.runs.length < 2;
  exCorpus.run = exCorpus.info.default_run;
  select.addEventListener("change", () => {
    exCorpus.run = select.value;
    exCorpus.layer = exCorpus.head = null;
    const box = ex$("corpus-examples");
    box.textContent = "";
    delete box.dataset.layer;
    delete box.dataset.head;
    box.append(exEl("p", "ex-hint", "Click a head in the table to list its best texts."));
    ex$("corpus-examples-title").textContent = "Examples";
    exOpenCorpus();
  });
  const tabs = /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(".ex-tab"));
  for (const button of tabs) {
    button.addEventListener("click", () => {
      if (button.dataset.tab === "corpus") {
        exOpenCorpus();
        return;
      }
      exShowTab("text");
      if (exState.text.trim()) exWriteUrl();
      else history.replaceState(null, "", location.pathname);
    });
  }
  const views = /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(".ex-subtab"));
  for (const button of views) {
    button.addEventListener("click", () => {
      exCorpusShowView(button.dataset.view || "stats");
      exCorpusWriteUrl();
    });
  }
  const kinds = ex$("corpus-kind");
  for (const kind of exCorpus.info.example_kinds) {
    const opt = exEl("option", null, kind === "weight" ? "strongest weight between two words" :
      `${kind} score of the text`);
    opt.value = kind;
    kinds.append(opt);
  }
  kinds.addEventListener("change", () => {
    exCorpus.kind = kinds.value;
    if (exCorpus.head !== null) exCorpusSelect(exCorpus.layer, exCorpus.head);
    else exCorpusWriteUrl();
  });
  ex$("corpus-search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    exCorpusSearch();
  });
  exApi.corpus = exCorpus;
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
  exStartCorpus();
  exReadUrl();
  if (exCorpus.info && location.hash.startsWith("#corpus")) {
    exCorpusReadUrl();
    exOpenCorpus();
  } else {
    exShowTab("text");
    if (exState.text.trim()) exRun(true);
  }
  document.body.dataset.ready = "1";
}

exStart();
