"""How faithful, small, fast to build and fast to use the interactive views are.

For BERT-base-shaped attention (12 layers x 12 heads) prints, side by side in one run:

* the page: bytes per attention weight, build time and peak Python memory of the model-view
  page, and what the encoding keeps -- the largest loss of any row's attention mass, the
  largest relative error of any weight above 1e-4, and how many of those show as zero;
* in headless Chromium: when the model view is drawn, and for the head view when its first
  drawing is on screen and how long a layer switch, a head toggle, hovering a token and
  leaving it take to the next frame (measured inside the page with performance.now() and
  requestAnimationFrame);
* bertviz 1.4.1 and CircuitsVis 1.43.3 pages built from the same attention, where they are
  importable (``PYTHONPATH=/path/to/peers``); CircuitsVis pages load their script from a CDN,
  so only their size and build time are measured.

Two kinds of attention: "real" is the embedded model (all-MiniLM-L6-v2, 6 layers run through
twice to make 12) on real English prose (this repository's documentation), "random" the
softmax of random normal logits. ``--long`` adds 2048 tokens, causal and full.

    python bench/views.py                  # 32, 128 and 512 tokens
    python bench/views.py 512              # one size
    python bench/views.py --long           # 2048 tokens only
    python bench/views.py 128 512 --long   # both
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import platform
import re
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

import attnscope as at
from attnscope import compat
from attnscope.render import html as page_html
from attnscope.testing import launch_chromium

LAYERS, HEADS = 12, 12
CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
PEER_MAX_TOKENS = 128  # bertviz takes minutes and gigabytes beyond this


def random_attention(tokens: int, *, causal: bool = False, seed: int = 0) -> np.ndarray:
    """Softmax of random logits: float32 [L, H, T, T], rows sum to 1."""
    rng = np.random.default_rng(seed)
    att = rng.standard_normal((LAYERS, HEADS, tokens, tokens), dtype=np.float32)
    upper = np.triu_indices(tokens, 1)
    for layer in range(LAYERS):  # a layer at a time: no temporary of the whole array
        x = att[layer]
        if causal:
            x[:, upper[0], upper[1]] = -np.inf
        x -= x.max(-1, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(-1, keepdims=True)
    return att


def prose() -> str:
    """Real English text, without markup: attnscope's documentation as it stood at 0.1.0, kept
    in bench/data/prose.md so that editing the docs never moves the figures quoted."""
    text = (ROOT / "bench" / "data" / "prose.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    return re.sub(r"[`#|*\[\]()<>_-]+", " ", text)


def real_attention(model, tokens: int) -> tuple[np.ndarray, list[str]]:
    """The embedded model's attention on ``tokens`` tokens of prose, its six layers twice."""
    ids = model.tokenizer(prose())["input_ids"][1: tokens - 1]
    trace = at.capture(model, model.tokenizer.decode(ids))
    if trace.num_tokens != tokens:
        raise RuntimeError(f"wanted {tokens} tokens, got {trace.num_tokens}")
    return np.concatenate([trace.attentions, trace.attentions]), list(trace.tokens)


def faithfulness(att: np.ndarray, spec: dict) -> tuple[float, float, int]:
    """(largest row-mass loss, largest relative error above 1e-4, zeros above 1e-4)."""
    mass, rel, zeros = 0.0, 0.0, 0
    shown = page_html.decode_attention(spec)
    for layer in range(att.shape[0]):
        true, back = att[layer], shown[layer]
        mass = max(mass, float(np.abs(back.sum(-1) - true.sum(-1)).max()))
        big = true > 1e-4
        rel = max(rel, float((np.abs(back[big] - true[big]) / true[big]).max()))
        zeros += int((back[big] == 0).sum())
    return mass, rel, zeros


def build(kind: str, att: np.ndarray, tokens: list[str]) -> tuple[str, float, float]:
    """(page, seconds, peak MiB) for attnscope's view from bertviz-style arguments."""
    per_layer = tuple(att[:, None])  # L x (1, H, T, T), as transformers returns it
    maker = compat.model_view if kind == "model" else compat.head_view
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    page = maker(per_layer, tokens, html_action="return").html
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return page, seconds, peak


def build_peer(tool: str, att: np.ndarray, tokens: list[str]) -> tuple[int, float, float] | None:
    """(page bytes, seconds, peak MiB) of bertviz's model_view or CircuitsVis's
    attention_patterns page, or None where the tool is not importable."""
    try:
        import torch

        if tool == "bertviz":
            from bertviz import model_view
        else:
            import circuitsvis as cv
    except ImportError:
        return None
    tracemalloc.start()
    start = time.perf_counter()
    if tool == "bertviz":
        per_layer = tuple(torch.from_numpy(att[layer][None]) for layer in range(att.shape[0]))
        page = model_view(per_layer, tokens, html_action="return").data
    else:  # CircuitsVis shows one layer's heads per call: one call per layer, as its docs do
        page = "".join(str(cv.attention.attention_patterns(
            tokens=tokens, attention=torch.from_numpy(att[layer])))
            for layer in range(att.shape[0]))
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return len(page.encode("utf-8")), seconds, peak


# In-page timing: run an action, then wait for the frame after it (requestAnimationFrame, then
# a task, which runs after that frame is painted). Milliseconds.
TIMED = """async ([what, arg]) => {
  const root = document.querySelector('.attnscope-root');
  const view = root.attnscope.views.head;
  const panel = root.querySelector('.as-head');
  const act = {
    layer: () => { const s = panel.querySelector('.as-layer select'); s.value = String(arg);
                   s.dispatchEvent(new Event('change')); },
    toggle: () => panel.querySelector(`.as-swatch[data-head='${arg}']`).click(),
    hover: () => panel.querySelector(`.as-hv-left .as-tok[data-index='${arg}']`)
                   .dispatchEvent(new MouseEvent('mouseover', {bubbles: true})),
    leave: () => panel.querySelector(`.as-hv-left .as-tok[data-index='${arg}']`)
                   .dispatchEvent(new MouseEvent('mouseout', {bubbles: true})),
  }[what];
  const t0 = performance.now();
  act();
  await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
  return performance.now() - t0;
}"""


def open_page(browser, path: Path, timeout_ms: int = 120_000):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(path.as_uri())
    page.wait_for_function("document.querySelector('.attnscope-root').dataset.ready",
                           timeout=timeout_ms)
    return page


def model_ready(browser, path: Path) -> float:
    """Seconds from navigation start until every thumbnail is drawn."""
    page = open_page(browser, path)
    try:
        return page.evaluate("performance.now()") / 1000
    finally:
        page.close()


def head_timings(browser, path: Path, tokens: int) -> dict[str, float]:
    """The head view's first drawing (seconds after navigation start) and the milliseconds to
    the next frame of a layer switch, a head toggle, a token hover and leaving it."""
    page = open_page(browser, path)
    try:
        out = {"open s": page.evaluate("performance.now()") / 1000}
        # from the moment the page's script starts (its text read and parsed) to the drawing
        marks = page.evaluate("document.querySelector('.attnscope-root').attnscope.marks")
        out["script s"] = (marks["drawn"] - marks["mount"]) / 1000
        # wait for the full drawing to be kept, as a person would before leaving a token
        complete = ("document.querySelector('.attnscope-root').attnscope.views.head"
                    ".state.complete")
        page.wait_for_function(complete, timeout=60_000)
        runs = {"layer": [], "toggle": [], "hover": [], "leave": []}
        for k in range(3):
            runs["layer"].append(page.evaluate(TIMED, ["layer", k % 2]))
            page.wait_for_function(complete, timeout=60_000)
            runs["toggle"].append(page.evaluate(TIMED, ["toggle", k]))
            page.wait_for_function(complete, timeout=60_000)
            token = (k + 1) * tokens // 4
            runs["hover"].append(page.evaluate(TIMED, ["hover", token]))
            runs["leave"].append(page.evaluate(TIMED, ["leave", token]))
        out.update({name: float(np.median(v)) for name, v in runs.items()})
        return out
    finally:
        page.close()


def long_inputs(browser, folder: Path, tokens: int = 2048) -> None:
    """Random attention at ``tokens`` tokens, full and causal: the pages keep each row's
    strongest weights (see attnscope.render.html.encode_attention)."""
    print(f"\n{tokens} tokens ({LAYERS} x {HEADS} heads, {LAYERS * HEADS * tokens**2 / 1e6:.0f} "
          "million weights, softmax of random logits)")
    line = (f"{'attention':>9} {'view':>5} {'page MB':>8} {'build s':>7} {'peak MiB':>8} "
            f"{'mass loss':>9} {'kept err':>8} {'opens s':>7} {'hover':>6} {'leave':>6} "
            f"{'layer':>6} {'toggle':>6}")
    print(line)
    print("-" * len(line))
    names = [f"tok{i}" for i in range(tokens)]
    for causal in (False, True):
        att = random_attention(tokens, causal=causal)
        trace = at.Trace.from_attentions(att, names, causal=causal, model_name="random")
        spec = page_html.encode_attention(att, causal=causal)
        threshold = np.frombuffer(base64.b64decode(spec["threshold"]), "<f4").reshape(
            att.shape[:3])
        mass = rel = 0.0
        for layer in range(att.shape[0]):
            back, true = page_html.decode_layer(spec, layer), att[layer]
            mass = max(mass, float(np.abs(back.sum(-1) - true.sum(-1)).max()))
            kept = true >= threshold[layer][..., None]
            kept &= true > 0
            rel = max(rel, float((np.abs(back[kept] - true[kept]) / true[kept]).max()))
            del back, kept
        del spec
        for kind in ("model", "head"):
            maker = at.model_view if kind == "model" else at.head_view
            gc.collect()
            tracemalloc.start()
            start = time.perf_counter()
            page = maker(trace).html
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            path = folder / f"{kind}-{tokens}-{causal}.html"
            path.write_text(page, encoding="utf-8")
            size = len(page.encode("utf-8"))
            del page
            t = {}
            if browser is not None:
                t = (head_timings(browser, path, tokens) if kind == "head"
                     else {"open s": model_ready(browser, path)})
            cells = " ".join(f"{t[k]:>6.0f}" if k in t else f"{'-':>6}"
                             for k in ("hover", "leave", "layer", "toggle"))
            opens = f"{t['open s']:.2f}" if t else "-"
            print(f"{'causal' if causal else 'full':>9} {kind:>5} {size / 1e6:>8.1f} "
                  f"{seconds:>7.2f} {peak:>8.0f} {mass:>9.3%} {rel:>8.3%} {opens:>7} {cells}",
                  flush=True)
        del att, trace
    print("targets at 2048 tokens: build <= 5 s, peak <= 1536 MiB, opens <= 3 s, "
          "hover <= 100 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=None)
    parser.add_argument("--long", action="store_true", help="add 2048 tokens")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [] if args.long else [32, 128, 512]
    print(f"attnscope views benchmark: {LAYERS} layers x {HEADS} heads")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    browser = playwright = None
    if Path(CHROMIUM).exists() and not args.no_browser:
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        browser = launch_chromium(playwright, CHROMIUM)
    model = at.load()
    print("\npages (model view; the head view page is the same size)")
    header = (f"{'tokens':>6} {'data':>7} {'tool':>10} {'page MB':>8} {'B/weight':>8} "
              f"{'build s':>7} {'peak MiB':>8} {'mass loss':>9} {'rel err':>8} "
              f"{'zeros':>5} {'drawn s':>7}")
    print(header)
    print("-" * len(header))
    head_rows = []
    with tempfile.TemporaryDirectory() as folder:
        for tokens in args.sizes:
            for data in ("real", "random"):
                if data == "real":
                    att, names = real_attention(model, tokens)
                else:
                    att = random_attention(tokens)
                    names = ["[CLS]"] + [f"tok{i}" for i in range(tokens - 2)] + ["[SEP]"]
                page, seconds, peak = build("model", att, names)
                spec = page_html.encode_attention(att)
                mass, rel, zeros = faithfulness(att, spec)
                del spec
                path = Path(folder) / f"model-{data}-{tokens}.html"
                path.write_text(page, encoding="utf-8")
                size = len(page.encode("utf-8"))
                del page
                drawn = f"{model_ready(browser, path):.2f}" if browser else "-"
                print(f"{tokens:>6} {data:>7} {'attnscope':>10} {size / 1e6:>8.2f} "
                      f"{size / att.size:>8.3f} {seconds:>7.2f} {peak:>8.0f} {mass:>9.2%} "
                      f"{rel:>8.3%} {zeros:>5} {drawn:>7}", flush=True)
                for tool in ("bertviz", "circuitsvis"):
                    if tokens > PEER_MAX_TOKENS or data != "random":
                        continue
                    result = build_peer(tool, att, names)
                    if result is None:
                        print(f"{tokens:>6} {data:>7} {tool:>10}   not importable")
                        continue
                    nbytes, secs, pk = result
                    print(f"{tokens:>6} {data:>7} {tool:>10} {nbytes / 1e6:>8.2f} "
                          f"{nbytes / att.size:>8.3f} {secs:>7.2f} {pk:>8.0f}", flush=True)
                if browser:
                    hpage, _, _ = build("head", att, names)
                    hpath = Path(folder) / f"head-{data}-{tokens}.html"
                    hpath.write_text(hpage, encoding="utf-8")
                    del hpage
                    head_rows.append((tokens, data, head_timings(browser, hpath, tokens)))
                del att
        if args.long:
            long_inputs(browser, Path(folder))
        if head_rows:
            print("\nhead view in Chromium: seconds from navigation start to the first drawing "
                  "(and of those, after the page's text was read), then ms to the next frame "
                  "(medians of 3)")
            line = (f"{'tokens':>6} {'data':>7} {'first drawing s':>15} {'of which script':>15} "
                    f"{'layer':>7} {'toggle':>7} {'hover':>7} {'leave':>7}")
            print(line)
            print("-" * len(line))
            for tokens, data, t in head_rows:
                print(f"{tokens:>6} {data:>7} {t['open s']:>15.2f} {t['script s']:>15.2f} "
                      f"{t['layer']:>7.0f} "
                      f"{t['toggle']:>7.0f} {t['hover']:>7.0f} {t['leave']:>7.0f}")
    if browser is not None:
        browser.close()
        playwright.stop()
    print("\ntargets: every row's mass within 0.5%, every weight above 1e-4 within 2% and not "
          "zero; head view at 512 tokens: first drawing <= 1 s, layer, toggle, hover and "
          "leave <= 100 ms")


if __name__ == "__main__":
    main()
