"""The pictures of the README and the docs gallery, regenerated from the embedded model.

    python docs/gallery.py          # about 20 s; writes docs/images/*.png

Figures come from attnscope's own static renderers; the view screenshots open the saved pages
in Chromium (/usr/bin/chromium, driven by Playwright, as the browser tests do). The PNGs are
committed, so the README and the site show them without running anything.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import attnscope as at

IMAGES = Path(__file__).resolve().parent / "images"
SENTENCE = "The girl poured water into a tall glass until it overflowed."
PAIR = ("leaves fall in autumn", "autumn is marked by colorful foliage")
CHROMIUM = "/usr/bin/chromium"


def figures(model: at.LoadedModel) -> list[Path]:
    """The static figures: one head, one layer's heads, and the map of head patterns."""
    trace = at.capture(model, SENTENCE)
    written = [
        at.heatmap(trace, layer=-1, head=0).save(IMAGES / "heatmap.png", dpi=80),
        at.heads_grid(trace, layer=-1).save(IMAGES / "heads_grid.png", dpi=60),
        at.head_patterns(trace).label_map().save(IMAGES / "head_patterns.png", dpi=70),
    ]
    return written


def screenshots(model: at.LoadedModel) -> list[Path]:
    """The head and model views of a sentence pair, as a reader sees them in a browser."""
    from playwright.sync_api import sync_playwright

    from attnscope.testing import launch_chromium

    trace = at.capture(model, *PAIR)
    written = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        browser = launch_chromium(playwright, CHROMIUM)
        page = browser.new_page(viewport={"width": 900, "height": 470})
        views = {"head_view": at.head_view(trace), "model_view": at.model_view(trace)}
        for name, view in views.items():
            html = view.save(Path(folder) / f"{name}.html")
            page.goto(html.as_uri())
            page.wait_for_timeout(1500)  # the page draws once its planes are inflated
            target = IMAGES / f"{name}.png"
            page.screenshot(path=str(target), full_page=False)
            written.append(target)
        browser.close()
    return written


def main() -> int:
    IMAGES.mkdir(exist_ok=True)
    model = at.load(device="cpu")
    written = figures(model)
    if Path(CHROMIUM).exists():
        written += screenshots(model)
    else:
        print(f"no Chromium at {CHROMIUM}: the view screenshots are left as they are",
              file=sys.stderr)
    for path in written:
        print(f"wrote {path.relative_to(IMAGES.parent.parent)} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
