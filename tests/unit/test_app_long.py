"""The explorer's long texts: exact rows, columns and tiles computed on request from a held
LazyTrace, bounded in size, with one sentence for each mistake."""

from __future__ import annotations

import base64

import numpy as np
import pytest

import attnscope as at
from attnscope.app import create_app
from attnscope.app.long import MAX_TILE_CELLS
from tests.long_trace import long_llama, long_text


@pytest.fixture(scope="module")
def lazy(tiny_models):
    model = long_llama(tiny_models["llama"].tokenizer)
    return at.capture(model, long_text(), attention="lazy")


@pytest.fixture(scope="module")
def client(embedded, lazy):
    from fastapi.testclient import TestClient

    with TestClient(create_app([embedded], long={"story": lazy})) as c:
        yield c


def _floats(text):
    return np.frombuffer(base64.b64decode(text), "<f4")


def test_rows_and_columns_equal_the_lazy_trace(client, lazy):
    T = lazy.num_tokens
    answer = client.get("/api/long/story/line", params={"layer": 1, "head": 2, "index": 100})
    assert answer.status_code == 200
    np.testing.assert_array_equal(_floats(answer.json()["values"]),
                                  lazy.attention(1, 2, rows=100))
    answer = client.get("/api/long/story/line",
                        params={"layer": -1, "head": 3, "index": 5, "axis": "column"})
    np.testing.assert_array_equal(_floats(answer.json()["values"]), lazy.attention(1, 3, cols=5))
    assert answer.json()["length"] == T
    listed = client.get("/api/long").json()["texts"]
    assert listed == [{"name": "story", "model": lazy.model_name, "tokens": T, "layers": 2,
                       "heads": 4}]


def test_tiles_are_exact_or_max_pooled(client, lazy):
    # a span no longer than size: the exact weights
    params = {"layer": 0, "head": 1, "row_start": 40, "row_stop": 90, "col_start": 10,
              "col_stop": 70, "size": 64}
    body = client.get("/api/long/story/tile", params=params).json()
    assert (body["rows"], body["cols"]) == (50, 60)
    tile = _floats(body["values"]).reshape(50, 60)
    np.testing.assert_allclose(tile, lazy.attentions[0, 1, 40:90, 10:70], rtol=1e-6, atol=1e-8)
    # a longer span: each block's largest weight, blocks starting at row_edges / col_edges
    params.update(row_start=0, row_stop=lazy.num_tokens, col_start=0,
                  col_stop=lazy.num_tokens, size=16)
    body = client.get("/api/long/story/tile", params=params).json()
    tile = _floats(body["values"]).reshape(16, 16)
    dense = lazy.attentions[0, 1]
    r, c = np.array(body["row_edges"]), np.array(body["col_edges"])
    expected = np.maximum.reduceat(np.maximum.reduceat(dense, r, axis=0), c, axis=1)
    np.testing.assert_allclose(tile, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(tile, at.pooled_attention(lazy, 0, 1, 16), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("path", "params", "status", "words"), [
    ("line", {"layer": 0, "head": 4, "index": 0}, 422, "Head 4 is out of range"),
    ("line", {"layer": 2, "head": 0, "index": 0}, 422, "Layer 2 is out of range"),
    ("line", {"layer": 0, "head": 0, "index": 10**6}, 422, "out of range"),
    ("line", {"layer": 0, "head": 0, "index": 0, "axis": "diagonal"}, 422, "axis"),
    ("tile", {"layer": 0, "head": 0, "row_start": 5, "row_stop": 5, "col_start": 0,
              "col_stop": 9}, 422, "must be a non-empty span"),
    ("tile", {"layer": 0, "head": 0, "row_start": 0, "row_stop": 10**6, "col_start": 0,
              "col_stop": 9}, 422, "must be a non-empty span"),
    ("tile", {"layer": 0, "head": 0, "row_start": 0, "row_stop": 10**5, "col_start": 0,
              "col_stop": 10**5}, 413, "past the explorer's"),
    ("tile", {"layer": 0, "head": 0, "row_start": 0, "row_stop": 9, "col_start": 0,
              "col_stop": 9, "size": 5000}, 422, "size"),
])
def test_bad_requests_get_one_sentence(client, path, params, status, words):
    answer = client.get(f"/api/long/story/{path}", params=params)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert words in error and error.endswith(".") and "\n" not in error


def test_unknown_text_and_served_page(client, lazy):
    answer = client.get("/api/long/nope/line", params={"layer": 0, "head": 0, "index": 0})
    assert answer.status_code == 404
    assert answer.json()["error"] == "There is no long text named 'nope' (held: story)."
    page = client.get("/long/story")
    assert page.status_code == 200
    assert "connect-src 'self' blob: data:" in page.text
    assert '"tiles":"/api/long/story"' in page.text
    assert MAX_TILE_CELLS == 4096 * 4096


def test_held_traces_are_checked(embedded):
    from attnscope.errors import AttnscopeError

    with pytest.raises(AttnscopeError, match="must be a LazyTrace, not str"):
        create_app([embedded], long={"story": "story.npz"})
    with pytest.raises(AttnscopeError, match="name must be letters"):
        create_app([embedded], long={"../x": None})


def test_saved_traces_are_read_by_their_file_names(lazy, tmp_path):
    from attnscope.app.long import read_long_traces
    from attnscope.errors import AttnscopeError

    (tmp_path / "b").mkdir()
    one = lazy.save(tmp_path / "my story.npz")
    held = read_long_traces([one])
    assert list(held) == ["my-story"] and held["my-story"].num_tokens == lazy.num_tokens
    with pytest.raises(AttnscopeError, match="Two long traces are named 'my-story'"):
        read_long_traces([one, lazy.save(tmp_path / "b" / "my story.npz")])
    with pytest.raises(AttnscopeError, match="Cannot load the lazy trace"):
        read_long_traces([tmp_path / "missing.npz"])
