"""Self-contained HTML pages: payload encoding and page assembly.

Every page attnscope writes carries its own JavaScript and CSS (the real files in
``render/assets``, read and inlined) and its data, so it opens offline, from a file, in a
notebook or in an e-mail attachment, and makes no network request of any kind.

Arrays travel as typed arrays in base64 rather than JSON floats:

* attention weights as a logarithmic 8-bit code of each weight's ratio to its row's maximum
  (:func:`encode_attention`): every weight above 1e-4 is kept to within 1.95% and never shown
  as zero, and each row's total is kept, in one deflated plane a layer (the browser inflates
  it with its built-in ``DecompressionStream``) of 0.9 to 1.15 bytes a weight, against about
  44 for JSON floats written twice;
* query and key vectors as float16 (three significant digits is all a colour strip shows);
* on pages of up to :data:`EXACT_LIMIT` weights, every weight as float16 too, for the readouts
  and tooltips (three significant digits of the model's number; longer pages show the coded
  value, marked "≈").

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
#: one byte: code 255 is the row's scale (its maximum, or up to a step above: see
#: :func:`_code_head`), each step down divides by exp(LOG_STEP), code 2 is
#: a ratio of exp(-253 * LOG_STEP) (5.7e-5), 1 marks a weight below the floor and 0 a zero.
#: Rounded to the nearest step, a weight is within WEIGHT_ERROR = exp(LOG_STEP / 2) - 1 of its
#: true value (plus float32 rounding): 1.95%, just inside the 2% bound on what a page shows,
#: with as few distinct codes (and so as few bits) as that bound allows.
WEIGHT_ERROR = 0.0195
LOG_STEP = float(2 * np.log1p(WEIGHT_ERROR))
CODE_TOP = 255
CODE_BOTTOM = 2
#: Attention weights below this share their row's mean (:func:`encode_attention`): for
#: attention (rows sum to 1, so a row's maximum is at most 1) it lies within the code's range.
FLOOR = 1e-4


#: The 85 characters that carry deflated planes: none that JSON or a page's script element
#: would escape (no quote, backslash, "<", ">" or "&").
BASE85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%()*+,-./:;=?@[]^_{|"
_BASE85_BYTES = np.frombuffer(BASE85.encode("ascii"), dtype=np.uint8)
_BASE85_DIGITS = np.zeros(128, dtype=np.int64)
_BASE85_DIGITS[_BASE85_BYTES] = np.arange(85)


def _to_base85(data: bytes) -> str:
    """Bytes as text, each 4 bytes (a big-endian number) as 5 digits in :data:`BASE85`, and
    the last ``n < 4`` bytes as ``n + 1`` digits: 1.25 characters a byte (base64: 1.33)."""
    pad = -len(data) % 4
    words = np.frombuffer(data + bytes(pad), dtype=">u4").astype(np.int64)
    digits = np.empty((words.size, 5), dtype=np.uint8)
    for place in range(4, -1, -1):
        words, digits[:, place] = np.divmod(words, 85)
    return _BASE85_BYTES[digits].tobytes()[: digits.size - pad].decode("ascii")


def _from_base85(text: str) -> bytes:
    """The inverse of :func:`_to_base85`: a short last group is padded with the top digit."""
    pad = -len(text) % 5
    digits = _BASE85_DIGITS[np.frombuffer((text + BASE85[-1] * pad).encode("ascii"),
                                          dtype=np.uint8)].reshape(-1, 5)
    words = np.zeros(len(digits), dtype=np.int64)
    for place in range(5):
        words = words * 85 + digits[:, place]
    return words.astype(">u4").tobytes()[: 4 * len(digits) - pad]


def _deflate_all(chunks: list[bytes], level: int) -> list[str]:
    """Deflate each chunk (run-length matching only: as small as full matching on these codes
    and about three times faster) on as many threads as there are cores, then base85."""

    def deflate(chunk: bytes) -> bytes:
        packer = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        return packer.compress(chunk) + packer.flush()

    # zlib releases the GIL, so slices compress in parallel.
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        packed = list(pool.map(deflate, chunks))
    return [_to_base85(chunk) for chunk in packed]


#: Above this many weights a page keeps each row's strongest weights only (see
#: :func:`encode_attention`): 12 x 12 heads at 512 tokens (37.7 million) are kept whole.
DENSE_LIMIT = 64 * 2**20
#: About how many weights of each row a page keeps above DENSE_LIMIT.
KEEP_PER_ROW = 32


#: Up to this many weights a view also carries every weight as float16 (``exact=None``), so
#: readouts and tooltips show three significant digits of the model's own number: 12 x 12
#: heads up to 85 tokens, for about 2.2 more bytes a weight.
EXACT_LIMIT = 2**20


def _exact_planes(values: np.ndarray) -> list[str]:
    """``[L, H, Tq, Tk]`` as float16 (relative error below 0.05%: three significant digits),
    one deflated plane a layer in base85. float16 attention has few repeats, so full matching
    rather than run-length."""
    out = []
    for layer in range(values.shape[0]):
        half = np.asarray(values[layer], dtype=np.float32).astype("<f2").tobytes()
        out.append(_to_base85(zlib.compress(half, 6)))
    return out


def encode_attention(weights: np.ndarray, *, level: int | None = None, causal: bool = False,
                     dense_limit: int | None = None, keep: int = KEEP_PER_ROW,
                     exact: bool = False) -> dict[str, Any]:
    """Attention ``[L, H, Tq, Tk]`` (each row's weights >= 0) as a compact, faithful payload.

    Up to ``dense_limit`` weights every weight is kept (:func:`_encode_dense`, below). Above
    it (12 x 12 heads at 2048 tokens is 604 million weights) each row keeps the weights at or
    above a threshold: the ``keep // 8``-th largest of every 8th weight of the row, so about
    its ``keep`` largest, never fewer than ``keep // 8``, and not more than ``8 * keep``
    (rows past that get their exact ``keep``-th largest as threshold; only ties go beyond).
    Kept weights are coded as in the dense case (within 1.95%); the row's other weights, each
    below the threshold, share one value: what the kept weights, as shown, leave of the row's
    total, so each row's mass is kept. ``"threshold"``
    ``[L, H, Tq]`` float32 travels with the page, so a value shown for a weight not kept can
    say it lies below it. ``causal`` says that keys after the query are masked (they stay
    zero rather than share the mean).

    ``exact`` adds ``"exact"``: every weight as float16 (:func:`_exact_planes`), which the
    page's readouts and tooltips show instead of the coded value (dense pages only).
    """
    weights = np.asarray(weights)
    if weights.ndim != 4:
        raise ValueError(f"attention must be [L, H, Tq, Tk], got shape {weights.shape}")
    if weights.size <= (DENSE_LIMIT if dense_limit is None else dense_limit):
        spec = _encode_dense(weights, floor=FLOOR, level=level)
        if exact:
            spec["exact"] = _exact_planes(weights)
        return spec
    if exact:
        raise ValueError("exact values need a dense page (at most DENSE_LIMIT weights)")
    return _encode_sparse(weights, keep=keep, causal=causal)


def encode_signed(values: np.ndarray, *, exact: bool = False) -> dict[str, Any]:
    """Signed values ``[L, H, Tq, Tk]`` (a difference of two attentions) for a diverging scale:
    the magnitudes coded as :func:`encode_attention` codes weights (dense: each within 1.95%;
    with no absolute floor, as differences may be small, only those under 5.7e-5 of their
    row's largest share their mean), and a ``"sign"`` plane, one bit
    a value (1 negative), packed and deflated per layer."""
    values = np.asarray(values, dtype=np.float32)
    spec = _encode_dense(np.abs(values), floor=0.0, level=None)
    signs = [np.packbits(values[layer].reshape(-1) < 0).tobytes()
             for layer in range(values.shape[0])]
    spec["sign"] = _deflate_all(signs, 6)
    spec["signed"] = True
    if exact:  # signed float16: the readout's value, sign included
        spec["exact"] = _exact_planes(values)
    return spec


def _encode_dense(weights: np.ndarray, *, floor: float = FLOOR,
                  level: int | None = None) -> dict[str, Any]:
    """Every weight of ``[L, H, Tq, Tk]``, coded by its ratio to its row's maximum.

    Every weight ``w`` of a row whose largest weight is ``m`` is coded by ``w / m`` on a
    logarithmic one-byte scale (:data:`LOG_STEP` per code):

    * ``w >= floor`` (and ``w / m`` within the code's range) keeps a code from 2 to 255 and
      decodes to within :data:`WEIGHT_ERROR` (1.95%) of its value;
    * the smaller weights of a row (there is no floor on how many) share one value, their mean,
      so no attention mass disappears: each row's total is kept to within 1.95%, and in
      practice far better, as rounding errors cancel;
    * exact zeros (masked keys) stay zero.

    The codes travel as ``"codes"``, one byte a weight (0 zero, 1 below the floor), deflated
    per layer: a weight has no more distinct codes than the error bound needs, which is what
    keeps the deflated plane small. ``"rowmax"`` and ``"tail"`` hold each row's scale and
    below-floor mean as float32 ``[L, H, Tq]``, deflated.

    The arrays are coded one head at a time, so only a few float32 copies of one head are ever
    held besides the input.
    """
    layers, heads, tq, tk = weights.shape
    codes = np.empty(weights.shape, dtype=np.uint8)
    rowmax = np.zeros((layers, heads, tq), dtype=np.float32)
    tail = np.zeros((layers, heads, tq), dtype=np.float32)
    for layer in range(layers):
        for head in range(heads):
            codes[layer, head] = _code_head(weights[layer, head], floor,
                                            rowmax[layer, head], tail[layer, head])
    if level is None:
        level = 6 if weights.size <= _FAST_ABOVE_BYTES else 1
    return {
        "shape": [layers, heads, tq, tk],
        "dtype": "log8",
        "zlib": True,
        "step": LOG_STEP,
        "top": CODE_TOP,
        "codes": _deflate_all([codes[layer].tobytes() for layer in range(layers)], level),
        **_row_floats(rowmax, tail, level),
    }


#: Grid offsets (fractions of a step) tried for a row whose rounding errors add up (below).
_PHASES = np.arange(16, dtype=np.float32) / 16
#: A row is re-gridded when its kept weights' total moves by more than this share of it.
_MASS_SLACK = 1e-3


def _row_floats(scale: np.ndarray, tail: np.ndarray, level: int) -> dict[str, str]:
    """Each row's scale and below-floor mean, float32 ``[L, H, Tq]``, deflated (attention's
    scales take 16 values, and many rows have no weight below the floor) and in base85."""
    # (full matching: a run-length match cannot see a repeated four-byte float)
    return {name: _to_base85(zlib.compress(values.astype("<f4").tobytes(), level))
            for name, values in (("rowmax", scale), ("tail", tail))}


def _code_head(head: np.ndarray, floor: float, scale: np.ndarray,
               tail: np.ndarray) -> np.ndarray:
    """Code one head ``[Tq, Tk]``: returns its codes ``uint8 [Tq, Tk]`` and fills ``scale``
    (what code 255 stands for: 1 or, for values above 1 or with no floor, the row's maximum,
    times the grid offset below) and ``tail`` ``[Tq]`` in place.

    Rounding to the nearest step keeps each weight within :data:`WEIGHT_ERROR` wherever the
    grid of steps starts, but on real attention a row's few large weights can all round the
    same way and move its total by up to 1%. So a row whose kept total moves by more than
    0.1% is coded on the grid shifted by the fraction of a step (one of 16) that moves it
    least: the scale becomes ``reference * exp(phase * LOG_STEP)`` and each weight is still
    within the bound (the maximum included), while row totals stay within about 0.12%.
    """
    w = np.asarray(head, dtype=np.float32)
    rowmax = np.maximum(w.max(axis=1), 0.0)
    # Attention (a floor, rows at most 1) is coded on one grid for every row, steps below 1:
    # a key's weights then take the same codes from row to row, which deflates about 4%
    # smaller than codes counted from each row's own maximum (and needs no row maxima).
    reference = np.where(rowmax > 0, rowmax, 1.0)
    if floor > 0:
        reference = np.maximum(reference, 1.0)
    positive = w > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = w / reference[:, None]  # (Tq, Tk), in (0, 1] where > 0
        steps = np.log(ratio, where=positive, out=np.zeros_like(ratio))
    steps *= -1.0 / LOG_STEP  # (Tq, Tk), >= 0: steps below the reference, not rounded
    # one step of room below the lowest code for the shifted grids
    kept = positive & (steps <= CODE_TOP - CODE_BOTTOM - 1) & (w >= floor)
    steps[~kept] = 0.0
    rounded = np.rint(steps)
    kept_mass = np.where(kept, w, 0.0).sum(axis=1, dtype=np.float64)  # (Tq,)
    shown = (np.exp(-LOG_STEP * rounded, dtype=np.float64) * kept).sum(axis=1) * reference
    phase = np.zeros(len(w), dtype=np.float32)
    drifting = np.flatnonzero(np.abs(shown - kept_mass) > _MASS_SLACK * kept_mass)
    chunk = max(1, 2**22 // (len(_PHASES) * max(1, w.shape[1])))
    for start in range(0, drifting.size, chunk):
        rows = drifting[start: start + chunk]
        shifted = steps[rows, None, :] + _PHASES[None, :, None]  # (rows, phases, Tk)
        grid = np.exp(LOG_STEP * (_PHASES[None, :, None] - np.rint(shifted)))
        sums = (grid * kept[rows, None, :]).sum(axis=2, dtype=np.float64) * reference[rows, None]
        phase[rows] = _PHASES[np.abs(sums - kept_mass[rows, None]).argmin(axis=1)]
    if drifting.size:
        steps += phase[:, None]
        np.rint(steps, out=steps)
    else:
        steps = rounded
    scale[:] = reference * np.exp(phase * LOG_STEP)
    code = np.where(kept, CODE_TOP - steps, 0).astype(np.uint8)
    below = positive & ~kept
    counts = below.sum(axis=1)
    sums = np.where(below, w, 0.0).sum(axis=1, dtype=np.float64)
    tail[:] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    code[below] = 1
    return code


def _sparse_codes(values: np.ndarray, rows: np.ndarray,
                  rowmax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-byte codes ``uint8 [N]`` of kept weights ``values`` ``[N]`` (> 0, in rows ``rows``
    of maxima ``rowmax`` ``[R]``), and each row's grid offset ``[R]`` (see :func:`_code_head`),
    chosen so that the row's kept weights, as shown, add up to nearly what they truly do."""
    steps = np.log(values / rowmax[rows]) * (-1.0 / LOG_STEP)  # (N,), >= 0
    true = np.bincount(rows, weights=values, minlength=rowmax.size)
    best = np.full(rowmax.size, np.inf)
    phase = np.zeros(rowmax.size, dtype=np.float32)
    for offset in _PHASES:
        grid = np.exp(LOG_STEP * (offset - np.rint(steps + offset)))
        miss = np.abs(np.bincount(rows, weights=grid, minlength=rowmax.size) * rowmax - true)
        closer = miss < best
        phase[closer], best[closer] = offset, miss[closer]
    steps = np.rint(steps + phase[rows])
    return (CODE_TOP - np.minimum(steps, CODE_TOP - CODE_BOTTOM)).astype(np.uint8), phase


def _encode_sparse(weights: np.ndarray, *, keep: int, causal: bool) -> dict[str, Any]:
    """Each row's weights at or above its threshold, as rows of (key index, code).

    Per layer: ``"counts"`` uint16 ``[H, Tq]`` (weights kept per row), ``"index"`` uint16
    (each kept key's distance from the previous one in its row, the first from 0), and
    their one-byte codes (as in :func:`_encode_dense`); all deflated.
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
        threshold[layer] = tau
        scale = np.where(rowmax[layer] > 0, rowmax[layer], 1.0).ravel()
        code, phase = _sparse_codes(values, rows, scale)
        scale *= np.exp(phase * LOG_STEP)
        rowmax[layer] = scale.reshape(heads, tq)
        # the weights not kept carry what the kept ones, as shown, leave of the row's total
        # (their own mass and the kept weights' rounding), so each row's mass is kept
        shown = scale[rows] * np.exp(-LOG_STEP * (CODE_TOP - code.astype(np.float32)))
        rest_mass = w.sum(axis=-1).ravel() - np.bincount(rows, weights=shown,
                                                         minlength=heads * tq)
        rest = (positive - counts).ravel()
        tail[layer] = np.where(rest > 0, np.maximum(rest_mass, 0.0) / np.maximum(rest, 1),
                               0.0).reshape(heads, tq)
        gaps = keys.copy()
        gaps[1:] -= keys[:-1]
        firsts = starts[present]
        gaps[firsts] = keys[firsts]
        return {"counts": counts.astype("<u2").tobytes(), "index": gaps.astype("<u2").tobytes(),
                "codes": code.tobytes()}

    # NumPy releases the GIL in these loops: layers are coded in parallel
    with ThreadPoolExecutor(max_workers=max(1, min(layers, os.cpu_count() or 1))) as pool:
        done = list(pool.map(one_layer, range(layers)))
    planes = {name: [d[name] for d in done] for name in ("counts", "index", "codes")}
    encoded = {name: _deflate_all(chunks, 1) for name, chunks in planes.items()}
    return {
        "shape": [layers, heads, tq, tk],
        "dtype": "log8-sparse",
        "zlib": True,
        "step": LOG_STEP,
        "top": CODE_TOP,
        "keep": keep,
        "causal": causal,
        **encoded,
        **_row_floats(rowmax, tail, 1),
        "threshold": base64.b64encode(threshold.astype("<f4").tobytes()).decode("ascii"),
    }


def decode_attention(spec: dict[str, Any]) -> np.ndarray:
    """The weights a page shows, float32 ``[L, H, Tq, Tk]``, decoded from
    :func:`encode_attention`'s payload as the page script decodes them."""
    layers = spec["shape"][0]
    return np.stack([decode_layer(spec, layer) for layer in range(layers)])


def decode_layer(spec: dict[str, Any], layer: int) -> np.ndarray:
    """One layer of :func:`decode_attention`: float32 ``[H, Tq, Tk]``."""
    layers, heads, tq, tk = spec["shape"]

    def plane(name: str, dtype: str) -> np.ndarray:
        return np.frombuffer(zlib.decompress(_from_base85(spec[name][layer])), dtype)

    def floats(name: str) -> np.ndarray:
        return np.frombuffer(zlib.decompress(_from_base85(spec[name])), "<f4").reshape(
            layers, heads, tq)[layer]

    rowmax, tail = floats("rowmax"), floats("tail")
    codes = plane("codes", "u1")
    factor = np.exp(-(spec["top"] - codes.astype(np.float32)) * spec["step"]).astype(np.float32)
    if spec["dtype"] == "log8":
        codes = codes.reshape(heads, tq, tk)
        value = rowmax[..., None] * factor.reshape(heads, tq, tk)
        value = np.where(codes == 1, tail[..., None], value)
        return np.where(codes == 0, 0.0, value).astype(np.float32)
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
