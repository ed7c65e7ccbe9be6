"""Self-contained HTML pages: payload encoding and page assembly.

Every page attnscope writes carries its own JavaScript and CSS (the real files in
``render/assets``, read and inlined) and its data, so it opens offline, from a file, in a
notebook or in an e-mail attachment, and makes no network request of any kind.

Arrays travel as typed arrays in base64 rather than JSON floats:

* attention weights as a logarithmic 12-bit code of each weight's ratio to its row's maximum
  (:func:`encode_attention`): every weight above 1e-4 is kept to within 0.11% and never shown
  as zero, and each row's total is kept, in two deflated planes (the browser inflates them
  with its built-in ``DecompressionStream``) of 1.6 to 1.9 bytes a weight in all, against
  about 44 for JSON floats written twice;
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
    "decode_attention",
    "encode_attention",
    "encode_float16",
    "iframe",
    "script_json",
    "view_assets",
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

#: Weights are coded by their ratio to the row's largest weight, on a logarithmic scale of
#: 12 bits: code 4095 is the row maximum, each step down divides by exp(LOG_STEP), and code 32
#: is a ratio of about RATIO_FLOOR. Decoded at the centre of its step, a weight is within
#: exp(LOG_STEP / 2) - 1 = 0.11% of its true value (plus float32 rounding of the row maximum).
RATIO_FLOOR = 1e-4
CODE_TOP = 4095
CODE_BOTTOM = 32
LOG_STEP = float(np.log(1.0 / RATIO_FLOOR) / (CODE_TOP - CODE_BOTTOM))
#: The largest relative error of a weight decoded from the full 12-bit code, and from its top
#: 8 bits alone (the fine half not yet decoded, or left out of the page).
FINE_ERROR = float(np.expm1(LOG_STEP / 2))
COARSE_ERROR = float(np.expm1(8 * LOG_STEP))


def _deflate_all(chunks: list[bytes], level: int) -> list[str]:
    """Deflate each chunk (run-length matching only: as small as full matching on these codes
    and about three times faster) on as many threads as there are cores, then base64."""

    def deflate(chunk: bytes) -> bytes:
        packer = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        return packer.compress(chunk) + packer.flush()

    # zlib releases the GIL, so slices compress in parallel.
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        packed = list(pool.map(deflate, chunks))
    return [base64.b64encode(chunk).decode("ascii") for chunk in packed]


def encode_attention(weights: np.ndarray, *, fine: bool = True,
                     level: int | None = None) -> dict[str, Any]:
    """Attention ``[L, H, Tq, Tk]`` (each row's weights >= 0) as a compact, faithful payload.

    Every weight ``w`` of a row whose largest weight is ``m`` is coded by ``w / m`` on a
    logarithmic 12-bit scale (:data:`LOG_STEP` per code):

    * ``w >= RATIO_FLOOR * m`` (so every weight above 1e-4) keeps a code from 32 to 4095 and
      decodes to within :data:`FINE_ERROR` (0.11%) of its value, or :data:`COARSE_ERROR`
      (1.8%) from the top 8 bits alone;
    * the smaller weights of a row (there is no floor on how many) share one value, their mean,
      so no attention mass disappears: each row's total is kept to within 0.11%;
    * exact zeros (masked keys) stay zero.

    The codes travel in two planes, each deflated per layer: ``"coarse"``, one byte a weight
    (0 zero, 1 below the floor, 2..255 the top 8 bits of the code), and ``"fine"``, the low 4
    bits, two weights a byte (left out with ``fine=False``). ``"rowmax"`` and ``"tail"`` hold
    each row's maximum and below-floor mean as float32 ``[L, H, Tq]``.

    The arrays are coded one head at a time, so only a few float32 copies of one head are ever
    held besides the input.
    """
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise ValueError(f"attention must be [L, H, Tq, Tk], got shape {weights.shape}")
    layers, heads, tq, tk = weights.shape
    coarse = np.empty(weights.shape, dtype=np.uint8)
    fine_plane = np.empty((layers, (heads * tq * tk + 1) // 2), dtype=np.uint8) if fine else None
    rowmax = np.zeros((layers, heads, tq), dtype=np.float32)
    tail = np.zeros((layers, heads, tq), dtype=np.float32)
    low = np.empty((heads, tq, tk), dtype=np.uint8) if fine else None
    for layer in range(layers):
        for head in range(heads):
            coarse[layer, head], low_bits = _code_head(
                weights[layer, head], rowmax[layer, head], tail[layer, head])
            if low is not None:
                low[head] = low_bits
        if fine_plane is not None and low is not None:
            flat = low.reshape(-1)
            packed = fine_plane[layer]
            packed[:] = 0
            packed[: (flat.size + 1) // 2] = flat[0::2]
            packed[: flat.size // 2] |= flat[1::2] << 4
    if level is None:
        level = 6 if weights.size <= _FAST_ABOVE_BYTES else 1
    return {
        "shape": [layers, heads, tq, tk],
        "dtype": "log12",
        "zlib": True,
        "step": LOG_STEP,
        "top": CODE_TOP,
        "coarse": _deflate_all([coarse[layer].tobytes() for layer in range(layers)], level),
        "fine": (None if fine_plane is None else
                 _deflate_all([fine_plane[layer].tobytes() for layer in range(layers)], level)),
        "rowmax": base64.b64encode(rowmax.astype("<f4").tobytes()).decode("ascii"),
        "tail": base64.b64encode(tail.astype("<f4").tobytes()).decode("ascii"),
    }


def _code_head(head: np.ndarray, rowmax: np.ndarray,
               tail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Code one head ``[Tq, Tk]``: returns (coarse ``uint8 [Tq, Tk]``, low 4 bits ``uint8
    [Tq, Tk]``) and fills ``rowmax`` and ``tail`` ``[Tq]`` in place."""
    w = np.asarray(head, dtype=np.float32)
    np.maximum(w.max(axis=1), 0.0, out=rowmax)
    positive = w > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = w / np.where(rowmax > 0, rowmax, 1.0)[:, None]  # (Tq, Tk), in (0, 1] where > 0
        steps = np.log(ratio, where=positive, out=np.zeros_like(ratio))
    steps *= -1.0 / LOG_STEP
    np.rint(steps, out=steps)
    kept = positive & (steps <= CODE_TOP - CODE_BOTTOM)
    code = np.where(kept, CODE_TOP - np.minimum(steps, CODE_TOP), 0).astype(np.uint16)
    below = positive & ~kept
    counts = below.sum(axis=1)
    sums = np.where(below, w, 0.0).sum(axis=1, dtype=np.float64)
    tail[:] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    coarse = (code >> 4).astype(np.uint8)
    coarse[below] = 1
    return coarse, (code & 15).astype(np.uint8)


def decode_attention(spec: dict[str, Any], *, fine: bool = True) -> np.ndarray:
    """The weights a page shows, float32 ``[L, H, Tq, Tk]``, decoded from
    :func:`encode_attention`'s payload as the page script decodes them: from both planes (as
    numbers are shown), or with ``fine=False`` from the coarse plane alone (as lines and
    colours are drawn)."""
    layers, heads, tq, tk = spec["shape"]
    rowmax = np.frombuffer(base64.b64decode(spec["rowmax"]), "<f4").reshape(layers, heads, tq)
    tail = np.frombuffer(base64.b64decode(spec["tail"]), "<f4").reshape(layers, heads, tq)
    out = np.empty((layers, heads, tq, tk), dtype=np.float32)
    for layer in range(layers):
        coarse = np.frombuffer(zlib.decompress(base64.b64decode(spec["coarse"][layer])),
                               np.uint8).reshape(heads, tq, tk)
        if fine and spec["fine"] is not None:
            packed = np.frombuffer(zlib.decompress(base64.b64decode(spec["fine"][layer])),
                                   np.uint8)
            low = np.empty(packed.size * 2, dtype=np.uint8)
            low[0::2], low[1::2] = packed & 15, packed >> 4
            code = (coarse.astype(np.float32) * 16 + low[: coarse.size].reshape(coarse.shape))
        else:
            code = coarse.astype(np.float32) * 16 + 7.5
        value = rowmax[layer][..., None] * np.exp(-(spec["top"] - code) * spec["step"])
        value = np.where(coarse == 1, tail[layer][..., None], value)
        out[layer] = np.where(coarse == 0, 0.0, value)
    return out


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
    # (a scan is cheaper than a copy: pages carry tens of megabytes of base64)
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        if raw in text:
            text = text.replace(raw, escaped)
    return text


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


def view_assets() -> tuple[str, str]:
    """The view script and stylesheet, ``(js, css)``, as every page inlines them, for a page
    that mounts views itself (the explorer): the script defines ``attnscopeMount(root)``; wrap
    it in a function with the caller's own code so that no global name leaks."""
    return _asset("views.js"), _asset("views.css")
