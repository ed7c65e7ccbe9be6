/*
 * attnscope explorer: the Generate tab and the examples to click.
 *
 * Inlined after app.js, in the same function (names start with "exGen" / "exExample"). The
 * Generate tab posts to /api/generate, shows each token as it streams in, then mounts the
 * generation view from the last line's payload with the view script's attnscopeMount.
 */

const exGenModels = exConfig.models.filter((m) => m.generative);
const exGen = { running: false, tokens: "" };
exApi.generate = exGen;

function exGenError(err) {
  const box = ex$("gen-error");
  box.hidden = !err;
  box.textContent = !err ? "" : err instanceof ExApiError ? err.message : "Something went wrong: " + err;
}

async function exGenRun() {
  if (exGen.running) return;
  exGenError(null);
  const prompt = ex$("gen-prompt").value;
  if (!prompt.trim()) {
    exGenError(new ExApiError("Type a prompt first."));
    return;
  }
  const body = {
    model: ex$("gen-model").value, prompt, chat: ex$("gen-chat").checked,
    system: ex$("gen-system").value.trim() ? ex$("gen-system").value : null,
    max_new_tokens: Number(ex$("gen-max").value) || 48,
    temperature: Number(ex$("gen-temperature").value) || 0,
  };
  exGen.running = true;
  exGen.tokens = "";
  ex$("gen-run").disabled = true;
  ex$("gen-status").textContent = "Generating\u2026";
  ex$("gen-stream").textContent = "";
  ex$("gen-view").textContent = "";
  delete ex$("gen-view").dataset.ready;
  try {
    const response = await fetch("/api/generate", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!response.ok) {
      let sentence = `The explorer answered ${response.status}.`;
      try { sentence = (await response.json()).error || sentence; } catch { /* not JSON */ }
      throw new ExApiError(sentence);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "", last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buffered += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, cut);
        buffered = buffered.slice(cut + 1);
        if (!line) continue;
        const item = JSON.parse(line);
        if (item.token !== undefined) {
          exGen.tokens += item.token;
          ex$("gen-stream").textContent = exGen.tokens;
        } else {
          last = item;
        }
      }
      if (done) break;
    }
    if (!last) throw new ExApiError("The answer ended before the view came.");
    if (last.error) throw new ExApiError(last.error);
    ex$("gen-status").textContent = last.note || `Done (${last.stopped}).`;
    exGen.last = { stopped: last.stopped, note: last.note };
    await exMount(ex$("gen-view"), last.view);
    ex$("gen-view").dataset.ready = "1";
  } catch (err) {
    ex$("gen-status").textContent = "";
    exGenError(err);
  } finally {
    exGen.running = false;
    ex$("gen-run").disabled = false;
  }
}

// Examples: what the explorer shows at once, one click each.
const EX_EXAMPLES = [
  { label: "sentence pair", text: "leaves fall in autumn", text_b: "autumn is marked by colorful foliage" },
  { label: "another pair", text: "The cat sat on the mat.", text_b: "The dog lay on the rug." },
  { label: "a pronoun to resolve", text: "The animal didn't cross the street because it was too tired." },
  { label: "chat with a generative model", chat: "What is the capital of France?" },
];

function exExampleRun(example) {
  if (example.chat !== undefined) {
    exShowTab("generate");
    ex$("gen-prompt").value = example.chat;
    exGenRun();
    return;
  }
  exShowTab("text");
  ex$("text").value = example.text;
  ex$("text-b").value = example.text_b || "";
  ex$("compare").checked = false;
  ex$("compare-inputs").hidden = true;
  exRun(false);
}

function exGenStart() {
  const box = ex$("examples");
  for (const example of EX_EXAMPLES) {
    if (example.chat !== undefined && !exGenModels.length) continue;
    const b = exEl("button", "ex-example", example.label);
    b.type = "button";
    b.title = example.chat || (example.text + (example.text_b ? " / " + example.text_b : ""));
    b.addEventListener("click", () => exExampleRun(example));
    box.append(b);
  }
  const tabs = ex$("tabs");
  const textTab = tabs.querySelector('[data-tab="text"]');
  tabs.querySelector('[data-tab="corpus"]').hidden = !exCorpus.info;
  if (!exGenModels.length) {
    if (!exCorpus.info) exShowTab("text");
    return;
  }
  tabs.hidden = false;
  const genTab = tabs.querySelector('[data-tab="generate"]');
  genTab.hidden = false;
  // (with a corpus, app.js already switches to the text tab on a click on it)
  if (!exCorpus.info) textTab.addEventListener("click", () => exShowTab("text"));
  genTab.addEventListener("click", () => exShowTab("generate"));
  const sel = ex$("gen-model");
  for (const m of exGenModels) {
    const opt = exEl("option", null, `${m.name} (${m.layers}\u00d7${m.heads})`);
    opt.value = m.name;
    sel.append(opt);
  }
  ex$("gen-prompt").maxLength = exConfig.limits.max_chars;
  ex$("gen-max").max = "256";
  ex$("gen-form").addEventListener("submit", (e) => {
    e.preventDefault();
    exGenRun();
  });
  ex$("gen-prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      exGenRun();
    }
  });
  exGen.run = exGenRun;
}

exGenStart();
