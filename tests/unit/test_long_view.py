"""The long view's pooling and page plan: pooled maxima equal numpy's max-pooling of the dense
weights, the page carries what its budget allows and says what it left out."""

from __future__ import annotations

import numpy as np
import pytest

import attnscope as at
from attnscope.errors import AttnscopeError
from attnscope.render import html as page_html
from attnscope.render.long_view import pool_edges, pooled_attention, pooled_tile
from tests.long_trace import long_llama, long_text


@pytest.fixture(scope="module")
def lazy(tiny_models):
    model = long_llama(tiny_models["llama"].tokenizer)
    return at.capture(model, long_text(), attention="lazy")


def _plain_max_pool(weights: np.ndarray, n: int) -> np.ndarray:
    """Max-pooling written plainly: block b holds tokens i with floor(i * n / T) == b."""
    T = weights.shape[0]
    blocks = (np.arange(T) * n) // T
    out = np.zeros((n, n), np.float32)
    for i in range(T):
        for j in range(T):
            a, b = blocks[i], blocks[j]
            out[a, b] = max(out[a, b], weights[i, j])
    return out


@pytest.mark.parametrize("size, block", [(64, 512), (64, 37), (100, 7), (5000, 64)])
def test_pooled_max_equals_max_pooling_of_the_dense_weights(lazy, size, block):
    dense = lazy.to_dense()
    T = lazy.num_tokens
    assert T > 200
    pooled = pooled_attention(lazy, 1, 2, size, block=block)
    n = min(size, T)
    assert pooled.shape == (n, n)
    # (equal up to float rounding: a different row block sums q·k in another order)
    np.testing.assert_allclose(pooled, _plain_max_pool(dense[1, 2], n), rtol=1e-5, atol=1e-7)
    # the block starts agree with the rule floor(i * n / T)
    assert list(pool_edges(T, n)) == [int(np.argmax((np.arange(T) * n) // T == b))
                                      for b in range(n)]



def _plain_tile_pool(weights: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """A rectangle's max-pooling written plainly: row i of R in block floor(i * n_rows / R),
    column j of C in block floor(j * n_cols / C)."""
    R, C = weights.shape
    out = np.zeros((n_rows, n_cols), np.float32)
    for i in range(R):
        for j in range(C):
            a, b = (i * n_rows) // R, (j * n_cols) // C
            out[a, b] = max(out[a, b], weights[i, j])
    return out



@pytest.mark.parametrize("levels", [[16, 32, 64], [48, 64, 100]])
def test_levels_pooled_together_equal_each_pooled_alone(lazy, levels):
    from attnscope.render.long_view import _pool_pass

    # 16 | 32 | 64: coarser levels pool the finer's columns; 48, 64, 100 do not nest
    pools, _ = _pool_pass(lazy, {(1, 2): levels, (0, 3): levels[:1]}, [], coded=False,
                          block=37)
    # (up to float rounding: other row blocks may sum q·k in another order)
    for n in levels:
        np.testing.assert_allclose(pools[1, 2, n], pooled_attention(lazy, 1, 2, n), rtol=1e-6)
    np.testing.assert_allclose(pools[0, 3, levels[0]], pooled_attention(lazy, 0, 3, levels[0]),
                               rtol=1e-6)

@pytest.mark.parametrize("rows, cols, size, block", [
    ((128, 256), (0, 128), 16, 256),     # below the diagonal, blocks of one size
    ((64, 192), (64, 192), 32, 48),      # on the diagonal: half the keys hidden
    ((10, 201), (3, 150), 20, 7),        # blocks of two sizes, rows cut across blocks
    ((0, 40), (100, 200), 8, 16),        # above the diagonal: every weight hidden
    ((30, 70), (20, 60), 64, 256),       # shorter than size: exact
])
def test_pooled_tile_equals_max_pooling_of_the_dense_rectangle(lazy, rows, cols, size, block):
    dense = lazy.to_dense()[1, 2, rows[0]:rows[1], cols[0]:cols[1]]
    tile, row_starts, col_starts = pooled_tile(lazy, 1, 2, rows, cols, size, block=block)
    n_rows, n_cols = min(size, dense.shape[0]), min(size, dense.shape[1])
    assert tile.shape == (n_rows, n_cols)
    np.testing.assert_allclose(tile, _plain_tile_pool(dense, n_rows, n_cols),
                               rtol=1e-5, atol=1e-7)
    assert list(row_starts) == [rows[0] + int(np.argmax((np.arange(rows[1] - rows[0]) * n_rows)
                                                        // (rows[1] - rows[0]) == b))
                                for b in range(n_rows)]
    assert col_starts[0] == cols[0] and len(col_starts) == n_cols


def test_pooled_tile_of_an_encoder_sees_every_key(embedded):
    lazy = at.capture(embedded, "The girl poured water into a tall glass until it overflowed.",
                      attention="lazy")
    T = lazy.num_tokens
    dense = lazy.to_dense()[2, 5]
    tile, _, _ = pooled_tile(lazy, 2, 5, (0, T), (0, T), 4, block=3)
    np.testing.assert_allclose(tile, _plain_tile_pool(dense, 4, 4), rtol=1e-5, atol=1e-7)
    assert (tile > 0).all()


def test_page_carries_exact_weights_and_levels_within_its_budget(lazy):
    T, L, H = lazy.num_tokens, lazy.num_layers, lazy.num_heads
    stats = lazy.head_stats()
    P = at.long_view(lazy, layer=1, head=2, stats=stats).payload()["long"]
    assert sorted(P["maps"]) == sorted(f"{ly}:{h}" for ly in range(L) for h in range(H))
    assert sorted(P["maps"]["0:0"], key=int) == ["64", "256", str(T)]
    assert len(P["exact"]) == L * H and P["notes"] == []
    # the exact plane of a head: row i over keys 0..i, one-byte codes
    codes = np.frombuffer(_inflate(P["exact"]["1:2"]), np.uint8)
    assert codes.size == T * (T + 1) // 2
    weights = np.where(codes > 0, np.exp(-(255 - codes.astype(np.float64)) * P["log8"]["step"]),
                       0.0)
    row = lazy.attention(1, 2, rows=T - 1)
    got = weights[T * (T - 1) // 2:]
    big = row >= 1e-3
    np.testing.assert_allclose(got[big], row[big], rtol=0.02)
    assert P["stats"]["sink"][1][2] == pytest.approx(float(stats["sink"][1, 2]))
    # a small budget: the selected head's exact weights first, the rest said on the page
    small = at.long_view(lazy, layer=1, head=2, stats=stats,
                         max_bytes=T * (T + 1) // 2 + L * H * 64 * 64 + 10).payload()["long"]
    assert list(small["exact"]) == ["1:2"]
    assert sorted(small["maps"]["0:1"], key=int) == ["64"]
    assert any("Exact weights are carried for 1 of 8 heads" in n for n in small["notes"])
    assert f"the overview carries 64 x 64 for every head; leaves out 256 x 256, {T} x {T}" in \
        " ".join(small["notes"])



def test_a_page_without_stats_adds_them_up_in_its_one_pass(lazy, monkeypatch):
    from attnscope.lazy import LazyTrace
    from attnscope.render.long_view import BLOCK

    expected = lazy.head_stats()
    blocks = []
    log_weights = LazyTrace._log_weights

    def counted(self, layer, heads, rows, cols):
        blocks.append((layer, tuple(heads), int(rows[0])))
        return log_weights(self, layer, heads, rows, cols)

    monkeypatch.setattr(LazyTrace, "_log_weights", counted)
    monkeypatch.setattr(LazyTrace, "head_stats", lambda self, block=0: pytest.fail("2nd pass"))
    view = at.long_view(lazy, layer=1, head=2)
    P = view.payload()["long"]
    # one pass: each layer's row blocks once, every head at a time
    T, L, H = lazy.num_tokens, lazy.num_layers, lazy.num_heads
    assert sorted(blocks) == [(layer, tuple(range(H)), start) for layer in range(L)
                              for start in range(0, T, BLOCK)]
    assert sorted(view.stats) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(view.stats[name], value, rtol=1e-5, atol=1e-6)
    assert P["stats"]["entropy"][0][3] == pytest.approx(float(expected["entropy"][0, 3]),
                                                        rel=1e-5)

def _inflate(text: str) -> bytes:
    import zlib

    return zlib.decompress(page_html._from_base85(text))


def test_saved_page_forbids_requests_and_keeps_tokens_as_text(lazy, tmp_path):
    view = at.long_view(lazy, head=1)
    path = view.save(tmp_path / "long.html")
    page = path.read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "connect-src blob: data:" in page
    assert "<img src=x" not in page  # the hostile token travels escaped in the JSON


def test_bad_requests_get_one_sentence(lazy, tiny_models, tmp_path):
    trace = at.capture(tiny_models["llama"], "a short text")
    cases = [
        (lambda: at.long_view(trace), "needs a LazyTrace"),
        (lambda: at.long_view(lazy, head=4), "head 4 is out of range"),
        (lambda: at.long_view(lazy, layer=-3), "layer -3 is out of range"),
        (lambda: at.long_view(lazy, token=10**6), "out of range"),
        (lambda: at.long_view(lazy, direction="up"), "Unknown direction"),
        (lambda: at.long_view(lazy, max_bytes=0), "max_bytes must be"),
        (lambda: at.long_view(lazy, stats={"sink": 1}).payload(), "stats must be"),
        (lambda: at.long_view(lazy).save(tmp_path / "x.png"), "use .html"),
        (lambda: pooled_attention(lazy, 0, 9), "head 9 is out of range"),
        (lambda: pooled_attention(lazy, 0, 0, 0), "size must be"),
    ]
    for make, words in cases:
        with pytest.raises(AttnscopeError) as err:
            make()
        assert words in str(err.value)
        assert str(err.value).count(". ") <= 2 and "\n" not in str(err.value)
