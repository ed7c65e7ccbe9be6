"""The page scripts' pure parts, run under Node against bytes written by attnscope's own Python
encoder: the same payload must decode to the same numbers on both sides. Then eslint and
`tsc --checkJs` over the scripts, where `npm ci` has installed them (CI does).

The fixture is written here, each expected value computed on the Python side (the page
decoder `decode_attention`, numpy's float16, the static figures' colour map, and the pooling
and contrast formulas written plainly below); tests/js/*.test.js read it and compare.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from attnscope.render import html as page_html
from attnscope.render.static import WEIGHT_STOPS, weight_cmap

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")


def _softmax_attention(rng: np.random.Generator, shape: tuple[int, ...], *,
                       causal: bool = False) -> np.ndarray:
    logits = rng.standard_normal(shape).astype(np.float32) * 2.5
    if causal:
        t = shape[-1]
        logits[..., np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]] = -np.inf
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)).astype(np.float32)


def _pooled(matrix: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Each pixel the largest weight of its block; block edges at floor(k * T / n)."""
    tq, tk = matrix.shape
    out = np.zeros((rows, cols), dtype=np.float32)
    for r in range(rows):
        a, b = (r * tq) // rows, ((r + 1) * tq) // rows
        b = max(b, a + 1)
        for c in range(cols):
            lo, hi = (c * tk) // cols, ((c + 1) * tk) // cols
            out[r, c] = matrix[a:b, lo:hi].max() if hi > lo else 0.0
    return out


def write_fixture(path: Path) -> None:
    rng = np.random.default_rng(7)
    dense = _softmax_attention(rng, (2, 3, 9, 9))
    causal = _softmax_attention(rng, (2, 2, 12, 12), causal=True)
    difference = _softmax_attention(rng, (1, 2, 6, 6)) - _softmax_attention(rng, (1, 2, 6, 6))

    dense_spec = page_html.encode_attention(dense)
    exact_spec = page_html.encode_attention(dense, exact=True)
    sparse_spec = page_html.encode_attention(causal, causal=True, dense_limit=0, keep=4)
    signed_spec = page_html.encode_signed(difference)
    signed_shown = np.abs(page_html.decode_attention(signed_spec)) * np.where(difference < 0, -1, 1)

    halves = np.array([0.0, -0.0, 1.0, -2.5, 0.1, 1e-3, 6.1e-5, 3e-7, -65504.0, 1e6, 0.33325],
                      dtype=np.float32)
    raw = [bytes(range(n)) + b"\xff\x00\x80"[: n % 3] for n in range(0, 13)]
    cmap = weight_cmap("light")
    levels = np.arange(256) / 255
    blues = [np.round(np.array(cmap(float(t))[:3]) * 255).tolist() for t in levels]
    values = [0.0, 1e-6, 1e-4, 0.003, 0.05, 0.2, 0.5, 0.999, 1.0, 2.0]
    tops = [1.0, 0.5, 0.1]

    def log_scale(v: float, top: float) -> float:
        lo = np.log(min(1e-4, top / 10))
        return 0.0 if v <= 0 else float(np.clip((np.log(v) - lo) / (np.log(top) - lo), 0, 1))

    fixture = {
        "base85": [{"bytes": base64.b64encode(b).decode(), "text": page_html._to_base85(b)}
                   for b in raw],
        "float16": {"spec": page_html.encode_float16(halves),
                    "expected": halves.clip(-65504, 65504).astype(np.float16)
                    .astype(np.float32).tolist()},
        "dense": {"spec": dense_spec, "decoded": page_html.decode_attention(dense_spec).tolist(),
                  "causal": False},
        "exact": {"spec": exact_spec, "float16": dense.astype(np.float16).astype(np.float32)
                  .tolist(), "causal": False},
        "sparse": {"spec": sparse_spec,
                   "decoded": page_html.decode_attention(sparse_spec).tolist(),
                   "causal": True},
        "signed": {"spec": signed_spec, "decoded": signed_shown.tolist(), "causal": False},
        "pooling": {"layer": 1, "head": 2, "rows": 4, "cols": 5,
                    "expected": _pooled(page_html.decode_attention(dense_spec)[1, 2], 4, 5)
                    .tolist()},
        "ramp": {"stops": WEIGHT_STOPS["light"], "expected": blues},
        "scale": {"values": values, "tops": tops,
                  "linear": [[min(1.0, v / top) for v in values] for top in tops],
                  "sqrt": [[0.0 if v <= 0 else min(1.0, (v / top) ** 0.5) for v in values]
                           for top in tops],
                  "log": [[log_scale(v, top) for v in values] for top in tops]},
        # three significant digits as Python writes them: the page must show the same number
        "digits": [{"value": float(v), "shown": f"{float(v):.3g}"}
                   for v in np.concatenate([dense.ravel()[:40], [1.0, 0.5, 1e-5, 123.456]])],
    }
    path.write_text(json.dumps(fixture), encoding="utf-8")


def test_the_page_scripts_decode_what_the_python_encoder_writes(tmp_path):
    fixture = tmp_path / "fixture.json"
    write_fixture(fixture)
    env = {**os.environ, "ATTNSCOPE_JS_FIXTURE": str(fixture)}
    tests = sorted(str(p) for p in (ROOT / "tests" / "js").glob("*.test.js"))
    assert tests
    done = subprocess.run([NODE, "--test", *tests], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout


def _npx(tool: str) -> Path:
    binary = ROOT / "node_modules" / ".bin" / tool
    if not binary.exists():
        pytest.skip(f"{tool} is not installed: run `npm ci` at the repository root")
    return binary


def test_eslint_finds_nothing_in_the_page_scripts():
    done = subprocess.run([str(_npx("eslint")), "src/attnscope/render/assets",
                           "src/attnscope/app/assets", "tests/js"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_tsc_checks_the_page_scripts_against_the_payload_types():
    done = subprocess.run([str(_npx("tsc")), "--noEmit", "-p", "tsconfig.json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
