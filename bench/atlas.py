"""The head atlas of a 30-layer x 9-head store: how long it takes to build and to open.

    python bench/atlas.py              # 40 texts
    python bench/atlas.py --texts 200

The store is real: a GPT-2 with 30 layers of 9 heads (hidden size 36, random weights, the
tokenizer of attnscope's tiny test models) run by ``attnscope.corpus`` with
``importance="gradient"``. The page is opened in headless Chromium (/usr/bin/chromium, through
Playwright): "open" is navigation until the load event, then the first click on a head until
its section shows. Target (issue 20): the page opens in <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import make_texts  # bench/corpus.py: the same texts


def model_30x9(folder: Path):
    import torch
    import transformers as tf

    import attnscope as at
    from attnscope.testing import build_tiny_model

    tokenizer = tf.AutoTokenizer.from_pretrained(build_tiny_model("gpt2", folder))
    config = tf.GPT2Config(n_embd=36, n_layer=30, n_head=9, n_inner=72, n_positions=512,
                           vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(config)
    tokenizer.model_max_length = 512
    return at.load(model, tokenizer=tokenizer, name="gpt2-30x9")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=40)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    import attnscope as at
    from attnscope.testing import launch_chromium

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        model = model_30x9(folder)
        start = time.perf_counter()
        result = at.corpus(model, make_texts(args.texts), out=folder / "stats.duckdb",
                           progress=False, importance="gradient")
        corpus_s = time.perf_counter() - start
        start = time.perf_counter()
        path = at.atlas(result).save(folder / "atlas.html")
        build_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        with sync_playwright() as p:
            browser = launch_chromium(p, "/usr/bin/chromium")
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            start = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            page.click("button.at-cell[data-layer='29'][data-head='8']")
            page.wait_for_selector("#head-29-8", state="visible")
            click_s = time.perf_counter() - start
            cells = page.evaluate("() => document.querySelectorAll('button.at-cell').length")
            browser.close()
    print(f"30 x 9 heads, {args.texts} texts, {os.cpu_count()} CPUs; page "
          f"{size_mb:.2f} MB, {cells} cells, "
          f"{len(set(requests)) - 1} requests beyond the file")
    print(f"  corpus with importance  {corpus_s:7.2f} s")
    print(f"  atlas build             {build_s:7.2f} s")
    print(f"  page load in Chromium   {load_s:7.2f} s")
    print(f"  first click to section  {click_s:7.2f} s")
    print(f"  open (load + click)     {load_s + click_s:7.2f} s (target <= 2 s)")


if __name__ == "__main__":
    main()
