"""The generation view's payload: the rows that chose each token, their averages, rollout and
the page budget, checked against plain numpy computations."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import attnscope as at
from attnscope.readable import readable_tokens
from attnscope.render import html as page_html
from attnscope.render.generation_view import LOG8_FLOOR, LOG8_STEP, rollout_rows
from tests.gen_trace import generation_trace, synthetic_generation


def _plane(spec, index=0):
    raw = zlib.decompress(page_html._from_base85(spec["planes"][index]))
    if spec["dtype"] == "f16":
        return np.frombuffer(raw, "<f2").astype(np.float32)
    codes = np.frombuffer(raw, np.uint8).astype(np.float64)
    return np.where(codes == 0, 0.0, np.exp(-(255 - codes) * LOG8_STEP))


def _rows(trace, values_of_row):
    """The expected plane: for each step s, row answer_start + s - 1 over its keys."""
    out = []
    for s in range(trace.num_tokens - trace.answer_start):
        r = trace.answer_start + s - 1
        out.append(values_of_row(r)[: r + 1])
    return np.concatenate(out)


@pytest.fixture(scope="module")
def llama_trace(tiny_models):
    return generation_trace(tiny_models["llama"], "the cat sat on the mat", 7)


def test_planes_hold_the_rows_that_chose_each_token(llama_trace, tiny_models):
    trace = llama_trace
    assert trace.query_start == trace.answer_start - 1
    gen = at.generation_view(trace, model=tiny_models["llama"]).payload()["gen"]
    assert gen["first_step"] == 0 and gen["steps"] == 7
    att = trace.attentions  # (L, H, T - qs, T)
    qs = trace.query_start
    L, H = trace.num_layers, trace.num_heads
    for layer in range(L):
        for head in range(H):
            want = _rows(trace, lambda r, lay=layer, h=head: att[lay, h, r - qs])
            np.testing.assert_allclose(_plane(gen["planes"]["head"], layer * H + head), want,
                                       rtol=1e-3, atol=1e-6)
        want = _rows(trace, lambda r, lay=layer: att[lay, :, r - qs].mean(0))
        np.testing.assert_allclose(_plane(gen["planes"]["layer"], layer), want, rtol=1e-3,
                                   atol=1e-6)
    want = _rows(trace, lambda r: att[:, :, r - qs].mean((0, 1)))
    np.testing.assert_allclose(_plane(gen["planes"]["all"]), want, rtol=1e-3, atol=1e-6)
    # each step's row sums to 1 (it is a softmax over the tokens before the chosen one)
    lengths = trace.answer_start + np.arange(7)
    sums = np.add.reduceat(_plane(gen["planes"]["all"]), np.r_[0, np.cumsum(lengths)[:-1]])
    np.testing.assert_allclose(sums, 1.0, atol=3e-3)
    # probabilities and the top-k as the model's tokenizer spells them
    np.testing.assert_allclose(gen["probs"], trace.answer_probs, rtol=1e-6)
    tok = tiny_models["llama"].tokenizer
    first = readable_tokens(tok.convert_ids_to_tokens(
        [int(i) for i in trace.answer_top_ids[0]]))
    assert [t for t, _ in gen["top"][0]] == first
    assert gen["roles"][: trace.answer_start] == ["prompt"] * trace.answer_start


def _plain_rollout(att):
    """Abnar & Zuidema's rollout, written out: R = prod_l (0.5 mean_h A_l + 0.5 I)."""
    n = att.shape[-1]
    flow = np.eye(n)
    for layer in range(att.shape[0]):
        mixed = 0.5 * att[layer].mean(0) + 0.5 * np.eye(n)
        flow = mixed @ flow
    return flow


def test_rollout_is_exact_on_a_square_trace_and_follows_held_rows_otherwise():
    tokens = [f"t{i}" for i in range(40)]
    square = synthetic_generation(tokens, answer_start=25, layers=3)
    rows = np.arange(24, 39)
    np.testing.assert_allclose(rollout_rows(square, rows), _plain_rollout(square.attentions)[rows],
                               rtol=1e-4, atol=1e-6)
    # answer rows only: the prompt's rows count as the identity
    cut = square.replace(attentions=square.attentions[:, :, 24:], query_start=24)
    partial = square.attentions.copy()
    partial[:, :, :24] = np.eye(40)[None, None, :24]
    np.testing.assert_allclose(rollout_rows(cut, rows), _plain_rollout(partial)[rows],
                               rtol=1e-4, atol=1e-6)


def test_budget_codes_then_drops_single_heads_and_says_so():
    tokens = [f"w{i}" for i in range(60)]
    trace = synthetic_generation(tokens, answer_start=30, layers=2, heads=3)
    weights = sum(range(30, 60))
    full = at.generation_view(trace).payload()["gen"]
    assert full["planes"]["head"]["dtype"] == "f16" and not full["notes"]
    # room for float16 means and one-byte heads
    coded = at.generation_view(trace, max_bytes=2 * 2 * weights + 2 * 2 * weights
                               + 6 * weights).payload()["gen"]
    assert coded["planes"]["head"]["dtype"] == "log8"
    assert "1.9%" in coded["notes"][0]
    shown = _plane(coded["planes"]["head"], 4)  # layer 1, head 1
    want = _rows(trace, lambda r: trace.attentions[1, 1, r])
    big = want >= LOG8_FLOOR
    assert np.all(np.abs(shown[big] - want[big]) <= 0.019 * want[big] + 1e-7)
    assert np.all(shown[~big] == 0)
    dropped = at.generation_view(trace, max_bytes=2 * 2 * weights + 2 * 2 * weights).payload()
    gen = dropped["gen"]
    assert "head" not in gen["planes"] and "layer" in gen["planes"]
    assert "Single heads are left out" in gen["notes"][0]
    least = at.generation_view(trace, max_bytes=10).payload()["gen"]
    assert set(least["planes"]) == {"all", "rollout"}
    assert "Per-layer averages are left out" in least["notes"][1]
    assert "max_bytes" in least["notes"][0]


def test_a_step_whose_row_is_not_held_is_skipped():
    trace = synthetic_generation([f"w{i}" for i in range(12)], answer_start=8)
    cut = trace.replace(attentions=trace.attentions[:, :, 8:], query_start=8)
    gen = at.generation_view(cut).payload()["gen"]
    assert gen["first_step"] == 1
    # rows 8, 9, 10 (steps 1, 2, 3) over 9, 10, 11 keys
    assert _plane(gen["planes"]["all"]).size == 9 + 10 + 11


def test_bad_input_gets_one_sentence(seed_pair_trace, tmp_path):
    trace = synthetic_generation([f"w{i}" for i in range(12)], answer_start=8)
    with pytest.raises(at.AttnscopeError, match="holds no generated answer"):
        at.generation_view(seed_pair_trace)
    with pytest.raises(at.AttnscopeError, match="Unknown mode"):
        at.generation_view(trace, mode="rolout")
    with pytest.raises(at.AttnscopeError, match="step 9 is out of range"):
        at.generation_view(trace, step=9)
    with pytest.raises(at.AttnscopeError, match="max_bytes"):
        at.generation_view(trace, max_bytes=0)
    with pytest.raises(at.AttnscopeError, match=r"saves as \.html"):
        at.generation_view(trace).save(tmp_path / "g.png")
    view = at.generation_view(trace, mode="head", layer=-1, head=-1)
    assert isinstance(view, at.AttnView)
    saved = view.save(tmp_path / "g.html").read_text()
    assert "attnscope generation view" in saved and "<script src" not in saved
    assert view.payload()["gen"]["initial"] == {"mode": "head", "layer": 1, "head": 2, "step": 0}


def test_page_is_the_payload_as_json_with_its_planes_spliced_in():
    """The page writes the planes' text after the JSON: it must read back as the payload."""
    import json
    import re

    tokens = [" a", "</script>", " \"q\"", "&amp;", " \u2028"] + [f" w{i}" for i in range(30)]
    trace = synthetic_generation(tokens, answer_start=10, layers=2, heads=3)
    view = at.generation_view(trace)
    page = view.html
    data = re.search(r'<script type="application/json" class="attnscope-data">(.*?)</script>',
                     page, re.S)[1]
    assert json.loads(data) == json.loads(json.dumps(view.payload()))
    assert "planes-" not in data  # no placeholder left


def test_measure_planes_carry_each_steps_sources(llama_trace, tiny_models):
    from attnscope.analysis.context_mixing import generation_sources

    model = tiny_models["llama"]
    view = at.generation_view(llama_trace, model=model, measures=["value_zeroing", "norms2"],
                              mode="norms2")
    gen = view.payload()["gen"]
    assert gen["measures"] == [["value_zeroing", "Value Zeroing"], ["norms2", "norms2"]]
    assert gen["initial"]["mode"] == "norms2"
    assert any(n.startswith("Measures carried: Value Zeroing, norms2") for n in gen["notes"])
    want = generation_sources(model, llama_trace, ["value_zeroing", "norms2"])
    for name in ("value_zeroing", "norms2"):
        np.testing.assert_allclose(_plane(gen["planes"][name]),
                                   _rows(llama_trace, lambda r, n=name: want[n][
                                       r - llama_trace.answer_start + 1]),
                                   rtol=1e-3, atol=1e-6)


def test_measures_bad_input(llama_trace, tiny_models):
    with pytest.raises(at.AttnscopeError, match="valid methods: value_zeroing"):
        at.generation_view(llama_trace, model=tiny_models["llama"], measures=["lrp"])
    with pytest.raises(at.AttnscopeError, match="measures= needs model="):
        at.generation_view(llama_trace, measures=["alti"])
    with pytest.raises(at.AttnscopeError, match="Unknown mode 'alti'"):
        at.generation_view(llama_trace, model=tiny_models["llama"], mode="alti")
