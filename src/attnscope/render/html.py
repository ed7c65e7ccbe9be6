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
    "build_view_library",
    "decode_attention",
    "decode_layer",
    "encode_attention",
    "encode_float16",
    "encode_signed",
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


#: Above this many weights a page keeps each row's strongest weights only (see
#: :func:`encode_attention`): 12 x 12 heads at 512 tokens (37.7 million) are kept whole.
DENSE_LIMIT = 64 * 2**20
#: About how many weights of each row a page keeps above DENSE_LIMIT.
KEEP_PER_ROW = 32


def encode_attention(weights: np.ndarray, *, fine: bool = True, level: int | None = None,
                     causal: bool = False, dense_limit: int | None = None,
                     keep: int = KEEP_PER_ROW) -> dict[str, Any]:
    """Attention ``[L, H, Tq, Tk]`` (each row's weights >= 0) as a compact, faithful payload.

    Up to ``dense_limit`` weights every weight is kept (:func:`_encode_dense`, below). Above
    it (12 x 12 heads at 2048 tokens is 604 million weights) each row keeps the weights at or
    above a threshold: the ``keep // 8``-th largest of every 8th weight of the row, so about
    its ``keep`` largest, never fewer than ``keep // 8``, and not more than ``8 * keep``
    (rows past that get their exact ``keep``-th largest as threshold; only ties go beyond).
    Kept weights are coded as in the dense case (within 0.11%); the row's other weights, each
    below the threshold, share their mean, so each row's mass is kept. ``"threshold"``
    ``[L, H, Tq]`` float32 travels with the page, so a value shown for a weight not kept can
    say it lies below it. ``causal`` says that keys after the query are masked (they stay
    zero rather than share the mean).
    """
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise ValueError(f"attention must be [L, H, Tq, Tk], got shape {weights.shape}")
    if weights.size <= (DENSE_LIMIT if dense_limit is None else dense_limit):
        return _encode_dense(weights, fine=fine, level=level)
    return _encode_sparse(weights, keep=keep, fine=fine, causal=causal)


def encode_signed(values: np.ndarray) -> dict[str, Any]:
    """Signed values ``[L, H, Tq, Tk]`` (a difference of two attentions) for a diverging scale:
    the magnitudes coded as :func:`encode_attention` codes weights (dense: each within 0.11%,
    those under 1e-4 of their row's largest share their mean), and a ``"sign"`` plane, one bit
    a value (1 negative), packed and deflated per layer."""
    values = np.asarray(values, dtype=np.float32)
    spec = _encode_dense(np.abs(values), fine=True, level=None)
    signs = [np.packbits(values[layer].reshape(-1) < 0).tobytes()
             for layer in range(values.shape[0])]
    spec["sign"] = _deflate_all(signs, 6)
    spec["signed"] = True
    return spec


def _encode_dense(weights: np.ndarray, *, fine: bool = True,
                  level: int | None = None) -> dict[str, Any]:
    """Every weight of ``[L, H, Tq, Tk]``, coded by its ratio to its row's maximum.

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


def _codes(ratio: np.ndarray) -> np.ndarray:
    """12-bit codes (``uint16``, 0 for zero) of ratios to the row maximum in [0, 1]."""
    with np.errstate(divide="ignore"):
        steps = np.log(ratio, where=ratio > 0, out=np.full_like(ratio, -np.inf))
    steps *= -1.0 / LOG_STEP
    np.rint(steps, out=steps)
    return np.where(ratio > 0, CODE_TOP - np.minimum(steps, CODE_TOP - CODE_BOTTOM),
                    0).astype(np.uint16)


def _encode_sparse(weights: np.ndarray, *, keep: int, fine: bool,
                   causal: bool) -> dict[str, Any]:
    """Each row's weights at or above its threshold, as rows of (key index, code).

    Per layer: ``"counts"`` uint16 ``[H, Tq]`` (weights kept per row), ``"index"`` uint16
    (each kept key's distance from the previous one in its row, the first from 0), and the
    coarse and fine planes of their codes; all deflated.
    """
    layers, heads, tq, tk = weights.shape
    stride = 8 if tk >= 8 * keep else 1
    kth = min(max(1, keep // stride), -(-tk // stride))
    rowmax = np.zeros((layers, heads, tq), dtype=np.float32)
    tail = np.zeros((layers, heads, tq), dtype=np.float32)
    threshold = np.zeros((layers, heads, tq), dtype=np.float32)
    # positive weights per row: every key, or up to the query for causal attention
    positive = (np.minimum(np.arange(1, tq + 1), tk) if causal else np.full(tq, tk))[None, :]

    def one_layer(layer: int) -> dict[str, bytes]:
        w = np.asarray(weights[layer], dtype=np.float32)  # (H, Tq, Tk), a view when float32
        sample = np.ascontiguousarray(w[..., ::stride])  # (H, Tq, ceil(Tk / stride))
        tau = np.partition(sample, -kth, axis=-1)[..., -kth]  # (H, Tq)
        del sample
        np.maximum(tau, np.finfo(np.float32).tiny, out=tau)  # zeros are never kept
        kept = w >= tau[..., None]  # (H, Tq, Tk)
        flat = np.flatnonzero(kept)  # row-major: by head, query, then key
        del kept
        rows, keys = np.divmod(flat, tk)
        counts = np.bincount(rows, minlength=heads * tq).reshape(heads, tq)
        # rows with many equal weights (a uniform row) get their exact keep-th largest
        crowded = np.flatnonzero(counts.ravel() > 8 * keep)
        if crowded.size:
            for row in crowded:
                h, i = divmod(int(row), tq)
                tau[h, i] = max(np.partition(w[h, i], -keep)[-keep], np.finfo(np.float32).tiny)
            again = np.isin(rows, crowded)
            drop = again & (w.reshape(-1)[flat] < tau.ravel()[rows])
            flat, rows, keys = flat[~drop], rows[~drop], keys[~drop]
            counts = np.bincount(rows, minlength=heads * tq).reshape(heads, tq)
        values = w.reshape(-1)[flat]
        # the row maximum is always kept (it is at least the threshold)
        starts = np.concatenate([[0], np.cumsum(counts.ravel())[:-1]])
        present = counts.ravel() > 0
        peak = np.zeros(heads * tq, dtype=np.float32)
        if values.size:
            peak[present] = np.maximum.reduceat(values, starts[present])
        rowmax[layer] = peak.reshape(heads, tq)
        rest_mass = w.sum(axis=-1).ravel() - np.bincount(rows, weights=values,
                                                         minlength=heads * tq)
        rest = (positive - counts).ravel()
        tail[layer] = np.where(rest > 0, np.maximum(rest_mass, 0.0) / np.maximum(rest, 1),
                               0.0).reshape(heads, tq)
        threshold[layer] = tau
        scale = np.where(rowmax[layer] > 0, rowmax[layer], 1.0).ravel()
        code = _codes(values / scale[rows])
        gaps = keys.copy()
        gaps[1:] -= keys[:-1]
        firsts = starts[present]
        gaps[firsts] = keys[firsts]
        low = (code & 15).astype(np.uint8)
        if low.size % 2:
            low = np.append(low, np.uint8(0))
        return {"counts": counts.astype("<u2").tobytes(), "index": gaps.astype("<u2").tobytes(),
                "coarse": (code >> 4).astype(np.uint8).tobytes(),
                "fine": (low[0::2] | (low[1::2] << 4)).tobytes()}

    # NumPy releases the GIL in these loops: layers are coded in parallel
    with ThreadPoolExecutor(max_workers=max(1, min(layers, os.cpu_count() or 1))) as pool:
        done = list(pool.map(one_layer, range(layers)))
    planes = {name: [d[name] for d in done] for name in ("counts", "index", "coarse", "fine")}
    encoded = {name: _deflate_all(chunks, 1) for name, chunks in planes.items()
               if fine or name != "fine"}
    return {
        "shape": [layers, heads, tq, tk],
        "dtype": "log12-sparse",
        "zlib": True,
        "step": LOG_STEP,
        "top": CODE_TOP,
        "keep": keep,
        "causal": causal,
        **encoded,
        "fine": encoded.get("fine"),
        "rowmax": base64.b64encode(rowmax.astype("<f4").tobytes()).decode("ascii"),
        "tail": base64.b64encode(tail.astype("<f4").tobytes()).decode("ascii"),
        "threshold": base64.b64encode(threshold.astype("<f4").tobytes()).decode("ascii"),
    }


def decode_attention(spec: dict[str, Any], *, fine: bool = True) -> np.ndarray:
    """The weights a page shows, float32 ``[L, H, Tq, Tk]``, decoded from
    :func:`encode_attention`'s payload as the page script decodes them: from both planes (as
    numbers are shown), or with ``fine=False`` from the coarse plane alone (as lines and
    colours are drawn)."""
    layers = spec["shape"][0]
    return np.stack([decode_layer(spec, layer, fine=fine) for layer in range(layers)])


def decode_layer(spec: dict[str, Any], layer: int, *, fine: bool = True) -> np.ndarray:
    """One layer of :func:`decode_attention`: float32 ``[H, Tq, Tk]``."""
    layers, heads, tq, tk = spec["shape"]

    def plane(name: str, dtype: str) -> np.ndarray:
        return np.frombuffer(zlib.decompress(base64.b64decode(spec[name][layer])), dtype)

    def floats(name: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(spec[name]), "<f4").reshape(
            layers, heads, tq)[layer]

    rowmax, tail = floats("rowmax"), floats("tail")
    coarse = plane("coarse", "u1")
    if fine and spec["fine"] is not None:
        packed = plane("fine", "u1")
        low = np.empty(packed.size * 2, dtype=np.uint8)
        low[0::2], low[1::2] = packed & 15, packed >> 4
        code = coarse.astype(np.float32) * 16 + low[: coarse.size]
    else:
        code = coarse.astype(np.float32) * 16 + 7.5
    factor = np.exp(-(spec["top"] - code) * spec["step"])
    if spec["dtype"] == "log12":
        coarse = coarse.reshape(heads, tq, tk)
        value = rowmax[..., None] * factor.reshape(heads, tq, tk)
        value = np.where(coarse == 1, tail[..., None], value)
        return np.where(coarse == 0, 0.0, value).astype(np.float32)
    # sparse: every position of a row holds the row's tail mean (up to the diagonal for a
    # causal row, whose later keys are zero), then the kept weights
    counts = plane("counts", "<u2").astype(np.int64).ravel()
    rows = np.repeat(np.arange(heads * tq), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gaps = plane("index", "<u2").astype(np.int64)
    # undo the gaps: a running sum that restarts at each row
    keys = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[starts] - gaps[starts], counts)
    out = np.repeat(tail.reshape(-1, 1), tk, axis=1)  # (H * Tq, Tk)
    if spec.get("causal"):
        out.reshape(heads, tq, tk)[:, np.triu_indices(tq, 1, tk)[0],
                                   np.triu_indices(tq, 1, tk)[1]] = 0.0
    out[rows, keys] = rowmax.ravel()[rows] * factor
    return out.reshape(heads, tq, tk)


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
