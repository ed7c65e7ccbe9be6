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
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "build_fragment",
    "build_page",
    "encode_float16",
    "encode_uint8",
    "iframe",
    "script_json",
]

ASSETS = Path(__file__).with_name("assets")
_ASSET_FILES = ("views.js", "views.css")


@functools.cache
def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def encode_uint8(weights: np.ndarray, *, level: int = 6) -> dict[str, Any]:
    """Weights in [0, 1] of any shape as ``{"shape", "dtype": "u8", "zlib": True, "b64"}``.

    Each weight becomes ``round(w * 255)`` (at most 1/510 off), row-major, deflated with zlib
    and base64-encoded. The array is converted in slices of the first axis so a 512-token,
    12 x 12 attention never needs more than one extra float32 layer in memory.
    """
    weights = np.asarray(weights)
    out = np.empty(weights.shape, dtype=np.uint8)
    flat_in = weights.reshape(weights.shape[0], -1) if weights.ndim > 1 else weights[None]
    flat_out = out.reshape(flat_in.shape)  # (first axis, rest) view of `out`
    for i in range(flat_in.shape[0]):
        scaled = np.clip(flat_in[i], 0.0, 1.0) * 255.0
        np.rint(scaled, out=scaled)
        flat_out[i] = scaled
    packed = zlib.compress(out.tobytes(), level)
    return {
        "shape": list(weights.shape),
        "dtype": "u8",
        "zlib": True,
        "b64": base64.b64encode(packed).decode("ascii"),
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
