"""How small the views' one-byte attention codes can get, packed in different ways.

Views code every weight on a logarithmic one-byte scale that keeps it within 1.95% (see
``attnscope.render.html``). This prints, for real attention (the embedded model on this
repository's prose, as ``bench/views.py`` uses, each layer counted once), bytes per weight of
those codes:

* deflate as the page packs them (run-length matching), deflate with full matching, LZMA;
* deflate after coding each row as its difference from the row above (PNG's "up" filter);
* the entropy of the codes with no context (the floor for any coder that takes codes one at
  a time), and given the code above, to the left or of the previous head (the floor for a
  coder that models that one neighbour; an estimate from the page's own counts, so a little
  optimistic).

    python bench/code_sizes.py             # 128 and 512 tokens
    python bench/code_sizes.py 512
"""

from __future__ import annotations

import argparse
import lzma
import os
import sys
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attnscope as at
from attnscope.render import html as page_html
from views import real_attention


def page_codes(attention: np.ndarray) -> np.ndarray:
    """The page's codes ``uint8 [L, H, T, T]`` for attention ``[L, H, T, T]``."""
    layers, heads, tokens, _ = attention.shape
    codes = np.empty(attention.shape, dtype=np.uint8)
    scale = np.zeros((layers, heads, tokens), dtype=np.float32)
    tail = np.zeros_like(scale)
    for layer in range(layers):
        for head in range(heads):
            codes[layer, head] = page_html._code_head(attention[layer, head], page_html.FLOOR,
                                                      scale[layer, head], tail[layer, head])
    return codes


def deflated(codes: np.ndarray, strategy: int, level: int) -> int:
    """Bytes of the codes deflated one layer at a time, as pages hold them."""
    total = 0
    for layer in codes:
        packer = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
        total += len(packer.compress(layer.tobytes()) + packer.flush())
    return total


def entropy_bits(codes: np.ndarray, given: np.ndarray | None = None) -> float:
    """Entropy in bits per code, with no context or given the codes ``given`` beside them."""
    if given is None:
        counts = np.bincount(codes.ravel(), minlength=256).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log2(p)).sum())
    joint = np.bincount(given.ravel().astype(np.int64) * 256 + codes.ravel(),
                        minlength=256 * 256).reshape(256, 256).astype(np.float64)
    joint /= joint.sum()
    context = joint.sum(axis=1, keepdims=True)
    seen = joint > 0
    return float(-(joint[seen] * np.log2((joint / np.where(context > 0, context, 1))[seen]))
                 .sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[128, 512])
    args = parser.parse_args()
    model = at.load(device="cpu")
    print(f"{'tokens':>6} {'page':>6} {'full':>6} {'lzma':>6} {'up':>6}   "
          f"{'H0':>6} {'H|above':>8} {'H|left':>7} {'H|head':>7}   (bytes a weight)")
    for tokens in args.sizes:
        attention, _ = real_attention(model, tokens)
        codes = page_codes(attention[: len(attention) // 2])  # the second half repeats it
        n = codes.size
        up = codes.copy()
        up[:, :, 1:] -= codes[:, :, :-1]  # uint8: differences wrap around, as PNG's do
        row = [deflated(codes, zlib.Z_RLE, 6) / n,
               deflated(codes, zlib.Z_DEFAULT_STRATEGY, 9) / n,
               sum(len(lzma.compress(layer.tobytes(), preset=9)) for layer in codes) / n,
               deflated(up, zlib.Z_RLE, 6) / n]
        bits = [entropy_bits(codes),
                entropy_bits(codes[:, :, 1:], codes[:, :, :-1]),
                entropy_bits(codes[..., 1:], codes[..., :-1]),
                entropy_bits(codes[:, 1:], codes[:, :-1])]
        print(f"{tokens:>6} " + " ".join(f"{v:>6.3f}" for v in row) + "   "
              + f"{bits[0] / 8:>6.3f} {bits[1] / 8:>8.3f} {bits[2] / 8:>7.3f} {bits[3] / 8:>7.3f}")
    print("target in the views benchmark: at most 0.5 bytes a weight, with every weight above "
          "1e-4 within 2%")


if __name__ == "__main__":
    main()
