"""Size, build time, memory and time-to-interactive of the interactive views.

For BERT-base-shaped attention (12 layers x 12 heads) at 32, 128 and 512 tokens, prints side by
side: page bytes per attention weight (target <= 1.1), the time to build the model-view page
(target <= 2 s at 512) and its peak Python memory (target < 1 GiB), and the time until the page
is drawn and interactive in headless Chromium (target <= 3 s at 512). Where bertviz is
installed, its model_view page is built from the same attention in the same run.

Attention rows are the softmax of random normal logits, which has the shape (and roughly the
spread) of real attention; the figures depend on shape, not on a model.

    python bench/views.py            # all three sizes
    python bench/views.py 512        # one size
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from attnscope import compat

LAYERS, HEADS = 12, 12
CHROMIUM = "/usr/bin/chromium"


def random_attention(tokens: int, seed: int = 0) -> np.ndarray:
    """Softmax of random logits: float32 [L, H, T, T], rows sum to 1."""
    rng = np.random.default_rng(seed)
    att = rng.standard_normal((LAYERS, HEADS, tokens, tokens), dtype=np.float32)
    att -= att.max(-1, keepdims=True)
    np.exp(att, out=att)
    att /= att.sum(-1, keepdims=True)
    return att


def build_ours(att: np.ndarray, tokens: list[str]) -> tuple[str, float, float]:
    """(page, seconds, peak MiB) for attnscope's model view from bertviz-style arguments."""
    per_layer = tuple(att[:, None])  # L x (1, H, T, T), as transformers returns it
    tracemalloc.start()
    start = time.perf_counter()
    page = compat.model_view(per_layer, tokens, html_action="return").html
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return page, seconds, peak


def build_bertviz(att: np.ndarray, tokens: list[str]) -> tuple[str, float, float] | None:
    try:
        import torch
        from bertviz import model_view
    except ImportError:
        return None
    per_layer = tuple(torch.from_numpy(att[layer][None]) for layer in range(att.shape[0]))
    tracemalloc.start()
    start = time.perf_counter()
    page = model_view(per_layer, tokens, html_action="return").data
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return page, seconds, peak


def time_to_interactive(browser, path: Path) -> float | None:
    """Seconds from navigation start until every thumbnail is drawn (the page's ready flag)."""
    page = browser.new_page()
    try:
        page.goto(path.as_uri())
        page.wait_for_function("document.querySelector('.attnscope-root').dataset.ready",
                               timeout=120_000)
        return page.evaluate("performance.now()") / 1000
    finally:
        page.close()


def main(sizes: list[int]) -> None:
    print(f"attnscope views benchmark: {LAYERS} layers x {HEADS} heads, softmax of random logits")
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python "
          f"{platform.python_version()}")
    browser = playwright = None
    if Path(CHROMIUM).exists():
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
    header = (f"{'tokens':>6} {'weights':>11} {'page MB':>8} {'bytes/weight':>12} "
              f"{'build s':>8} {'peak MiB':>9} {'interactive s':>13}   tool")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:
        for tokens in sizes:
            att = random_attention(tokens)
            names = ["[CLS]"] + [f"tok{i}" for i in range(tokens - 2)] + ["[SEP]"]
            weights = att.size
            rows = [("attnscope", build_ours(att, names)), ("bertviz", build_bertviz(att, names))]
            for tool, result in rows:
                if result is None:
                    print(f"{tokens:>6} {'':>11} {'':>8} {'':>12} {'':>8} {'':>9} {'':>13}   "
                          f"{tool}: not installed")
                    continue
                page, seconds, peak = result
                size = len(page.encode("utf-8"))
                path = Path(folder) / f"{tool}-{tokens}.html"
                path.write_text(page, encoding="utf-8")
                del page
                ready = (time_to_interactive(browser, path)
                         if browser is not None and tool == "attnscope" else None)
                shown = f"{ready:.2f}" if ready is not None else "-"
                print(f"{tokens:>6} {weights:>11,} {size / 1e6:>8.2f} {size / weights:>12.3f} "
                      f"{seconds:>8.2f} {peak:>9.0f} {shown:>13}   {tool}")
    if browser is not None:
        browser.close()
        playwright.stop()
    print("targets: bytes/weight <= 1.1; at 512 tokens build <= 2 s, peak < 1024 MiB, "
          "interactive <= 3 s")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [32, 128, 512])
