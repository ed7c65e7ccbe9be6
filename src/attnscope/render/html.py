"""Self-contained HTML pages: payload encoding and page assembly.

Every page attnscope writes carries its own JavaScript and CSS (the real files in
``render/assets``, read and inlined) and its data, so it opens offline, from a file, in a
notebook or in an e-mail attachment, and makes no network request of any kind.

Arrays travel as typed arrays in base64 rather than JSON floats:

* attention weights as uint8 (``round(weight * 255)``), zlib-compressed; the browser inflates
  them with its built-in ``DecompressionStream``. Attention rows are mostly near-zero, so this
  costs well under one byte per weight, against about 44 for JSON floats written twice.
* query and key vectors as float16 (three significant digits is all a colour strip shows).

Tokens and every other text go into the page as JSON data inside a
``<script type="application/json">`` element, escaped so that no token can close the element
("</script>" becomes "\\u003c/script\\u003e"), and the page script inserts them with
``textContent`` only: a token that looks like HTML shows as text and runs nothing.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import os
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "build_fragment",
    "build_page",
    "build_view_library",
    "encode_float16",
    "encode_uint8",
    "iframe",
    "script_json",
]

ASSETS = Path(__file__).with_name("assets")
_ASSET_FILES = ("views.js", "views.css")


@functools.cache
def _asset(name: str) -> str:
    text = (ASSETS / name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise RuntimeError(f"asset {name} must not contain a closing script or style tag")
    if name.endswith(".js"):
        # Drop indentation and whole-line comments: about a fifth of the file, on every page.
        # (The script has no multi-line strings, so no line's leading spaces carry meaning.)
        lines = (line.strip() for line in text.splitlines())
        text = "\n".join(line for line in lines if line and not line.startswith("//"))
    return text


# Deflate level by raw size: small pages get the tightest packing, big ones the fastest.
_FAST_ABOVE_BYTES = 4 * 2**20


def encode_uint8(weights: np.ndarray, *, level: int | None = None) -> dict[str, Any]:
    """Weights in [0, 1] of any shape as ``{"shape", "dtype": "u8", "zlib": True, "b64"}``.

    Each weight becomes ``round(w * 255)`` (at most 1/510 off), row-major. Each slice of the
    first axis (a layer) is deflated on its own with zlib (``level`` 6 for small arrays, 1 above
    4 MiB, unless given), on as many threads as there are cores, and base64-encoded: ``"b64"``
    is a list with one string per slice. Only one extra float32 slice is ever held in memory.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.size and (float(weights.min()) < 0.0 or float(weights.max()) > 1.0):
        weights = np.clip(weights, 0.0, 1.0)
    out = np.empty(weights.shape, dtype=np.uint8)
    flat_in = weights.reshape(weights.shape[0], -1) if weights.ndim > 1 else weights[None]
    flat_out = out.reshape(flat_in.shape)  # (first axis, rest) view of `out`
    scaled = np.empty(flat_in.shape[1:], dtype=np.float32)
    for i in range(flat_in.shape[0]):
        np.multiply(flat_in[i], 255.0, out=scaled)
        scaled += 0.5  # the cast below truncates; +0.5 makes it round (weights are >= 0)
        flat_out[i] = scaled
    if level is None:
        level = 6 if out.nbytes <= _FAST_ABOVE_BYTES else 1
    # zlib releases the GIL, so slices compress in parallel.
    with ThreadPoolExecutor(max_workers=min(len(flat_out), os.cpu_count() or 1)) as pool:
        packed = list(pool.map(lambda chunk: zlib.compress(chunk, level), flat_out))
    return {
        "shape": list(weights.shape),
        "dtype": "u8",
        "zlib": True,
        "b64": [base64.b64encode(chunk).decode("ascii") for chunk in packed],
    }


def encode_float16(values: np.ndarray) -> dict[str, Any]:
    """Any float array as little-endian float16 in base64: ``{"shape", "dtype": "f16", "b64"}``.

    Values beyond float16's range (+-65504) are clipped rather than turned into infinities.
    """
    values = np.asarray(values, dtype=np.float32)
    half = np.clip(values, -65504.0, 65504.0).astype("<f2")
    return {
        "shape": list(values.shape),
        "dtype": "f16",
        "zlib": False,
        "b64": base64.b64encode(half.tobytes()).decode("ascii"),
    }


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no "<", ">" or "&" appears literally,
    nor the two line separators JavaScript once treated as line ends."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def build_fragment(payload: dict[str, Any]) -> tuple[str, str]:
    """One view (or several, as tabs) as an HTML fragment: ``(root_id, html)``.

    The fragment is a ``<div>`` with a fresh id, its data, the stylesheet (every rule scoped to
    ``.attnscope-root``) and one script, wrapped in a function so that it defines no global
    name: two fragments in one document never see each other.
    """
    root_id = "attnscope-" + uuid.uuid4().hex[:12]
    data = script_json(payload)
    # The script finds its own root by id and reads its data from the JSON element inside it.
    boot = (
        "(function(){\n" + _asset("views.js") + "\n"
        f"attnscopeMount(document.getElementById({json.dumps(root_id)}));\n"
        "})();"
    )
    fragment = (
        f'<div class="attnscope-root" id="{root_id}">'
        f'<script type="application/json" class="attnscope-data">{data}</script>'
        f'<div class="as-status">Loading attention view\u2026</div>'
        f"</div>\n<style>{_asset('views.css')}</style>\n<script>{boot}</script>"
    )
    return root_id, fragment


def build_page(fragment: str, title: str) -> str:
    """A complete HTML document around one fragment."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title></head>\n<body class=\"attnscope-page\">\n"
        f"{fragment}\n</body></html>\n"
    )


def iframe(page: str, height: int) -> str:
    """The page inside an ``<iframe srcdoc>``, as notebooks display it.

    The frame keeps notebook styles out and the page's script in: it is sandboxed to run
    scripts only (no same-origin access to the notebook, no forms, no pop-ups).
    """
    return (
        f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
        f'style="width:100%;height:{int(height)}px;border:1px solid #ddd;border-radius:4px" '
        'loading="eager" title="attnscope attention view"></iframe>'
    )


# Mounts a view from the library when a page dispatches "attnscope:mount" on an empty
# `.attnscope-root` element: the element's data-view names the payload, data-layer and
# data-heads (JSON) choose what the view opens on.
_LIBRARY_MOUNT = """
const library = JSON.parse(document.getElementById(LIBRARY_ID).textContent);
document.addEventListener("attnscope:mount", (event) => {
  const root = event.target;
  const base = library[root.dataset.view];
  if (!base || root.dataset.mounted) return;
  const P = JSON.parse(JSON.stringify(base));
  if (root.dataset.layer !== undefined) P.initial.layer = Number(root.dataset.layer);
  if (root.dataset.heads !== undefined) P.initial.heads = JSON.parse(root.dataset.heads);
  const data = document.createElement("script");
  data.type = "application/json";
  data.className = "attnscope-data";
  data.textContent = JSON.stringify(P);
  const status = document.createElement("div");
  status.className = "as-status";
  status.textContent = "Loading attention view\u2026";
  root.replaceChildren(data, status);
  attnscopeMount(root);
});
"""


def build_view_library(payloads: dict[str, dict[str, Any]]) -> str:
    """Many views' data with one copy of the view script and style, for pages that open a
    view on demand (the corpus report's examples).

    ``payloads`` maps a key to a view's payload (``AttnView.payload()``). The page opens one
    by adding ``<div class="attnscope-root" data-view="KEY" data-layer="2"
    data-heads="[5]">`` and dispatching a bubbling ``attnscope:mount`` event on it; the view
    is the same head/model/neuron view as everywhere else.
    """
    library_id = "attnscope-library-" + uuid.uuid4().hex[:12]
    boot = ("(function(){\n" + _asset("views.js") + "\n"
            + _LIBRARY_MOUNT.replace("LIBRARY_ID", json.dumps(library_id)) + "})();")
    return (f'<script type="application/json" id="{library_id}">{script_json(payloads)}'
            f"</script>\n<style>{_asset('views.css')}</style>\n<script>{boot}</script>")
