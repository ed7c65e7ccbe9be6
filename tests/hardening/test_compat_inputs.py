"""bertviz-style calls with anything in them: a view, or one AttnscopeError sentence.

``attnscope.compat.head_view`` and ``model_view`` take what notebooks pass bertviz: tuples of
per-layer tensors and token lists. Hypothesis feeds them attention of any shape, dtype and
values (NaN, negative, unnormalised, empty, integers, objects, ragged lists, torch tensors) and
odd tokens; the only exception that may escape is AttnscopeError, and every view that comes
back renders a whole page.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from attnscope.compat import head_view, model_view
from attnscope.errors import AttnscopeError

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex64,
          np.object_, np.str_]
ODD_VALUES = [None, "1", 1.5, True, -1, 99, [0], (), {"a": 1}, b"\x00"]
# Any code point, lone surrogates included.
TEXT = st.text(st.characters(exclude_categories=()), max_size=6)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@st.composite
def layer_arrays(draw, shape: tuple[int, ...], hostile: bool):
    """One layer's attention of ``shape``: real weights, or (hostile) any values of any
    dtype."""
    kind = draw(st.sampled_from(["weights", "spoiled", "any", "dtype"])) if hostile else "weights"
    if kind in ("weights", "spoiled"):
        logits = draw(hnp.arrays(np.float32, shape, elements=st.floats(-5, 5, width=32)))
        array = _softmax(logits) if shape and shape[-1] else logits
        if kind == "spoiled" and array.size:  # NaN, inf, negative or unnormalised
            array = array.copy()
            array.flat[draw(st.integers(0, array.size - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -0.5, 3.0]))
        return array
    if kind == "any":
        return draw(hnp.arrays(np.float64, shape, elements=st.floats(allow_nan=True,
                                                                      allow_infinity=True)))
    dtype = draw(st.sampled_from(DTYPES))
    if dtype is np.object_:
        array = np.empty(shape, dtype=object)
        if array.size:
            array.flat[0] = draw(st.sampled_from(ODD_VALUES))
        return array
    if dtype is np.str_:
        return np.full(shape, draw(st.sampled_from(["0.5", "x", ""])))
    return np.zeros(shape, dtype=dtype)


@st.composite
def bertviz_inputs(draw):
    """Keyword arguments for head_view/model_view: half of them valid (real weights, tokens
    of the right length), half hostile in one or more ways."""
    hostile = draw(st.booleans())
    low = 0 if hostile else 1
    layers, heads, n = draw(st.integers(low, 3)), draw(st.integers(low, 3)), draw(
        st.integers(low, 5))
    tokens: object = draw(st.lists(TEXT, min_size=n, max_size=n))
    if hostile and draw(st.booleans()):  # tokens of the wrong length or kind
        tokens = draw(st.sampled_from([tokens[:-1], [*tokens, "[SEP]"], "a string", 7, None,
                                       [1, None, b"x"], (t for t in ["a", "b"])]))
    shape: tuple[int, ...] = (1, heads, n, n)
    if hostile and draw(st.booleans()):  # another shape altogether
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=5)))
    attention: object = tuple(draw(layer_arrays(shape, hostile)) for _ in range(layers))
    container = draw(st.sampled_from(["tuple", "list", "stacked", "torch", "nested"]
                                     + (["odd"] if hostile else [])))
    if container == "list":
        attention = list(attention)
    elif container == "stacked" and layers:
        attention = np.stack(attention)  # [L, 1, H, T, T]
    elif container == "torch" and layers:
        attention = tuple(torch.from_numpy(a) if a.dtype.kind in "fiub" else a
                          for a in attention)
    elif container == "nested":
        attention = [a.tolist() for a in attention]
        if hostile and attention:
            attention[0] = [[[0.5]]]  # ragged
    elif container == "odd":
        attention = draw(st.sampled_from(ODD_VALUES))
    args: dict = {"attention": attention, "tokens": tokens}
    if draw(st.booleans()):
        args["sentence_b_start"] = draw(st.sampled_from(
            [None, 0, n - 1, -1, *([n, *ODD_VALUES] if hostile else [])]))
    if draw(st.booleans()):
        args["include_layers"] = draw(st.sampled_from(
            [[0], [-1], None, *([[5], [], 3, ["0"]] if hostile else [])]))
    if draw(st.booleans()):
        args["prettify_tokens"] = draw(st.booleans())
    if draw(st.integers(0, 2)) == 0:  # an encoder-decoder call instead
        m = draw(st.integers(low, 3))
        dec_layers = draw(st.sampled_from([layers, 1])) if hostile else layers
        args |= {
            "encoder_attention": args.pop("attention"), "encoder_tokens": args.pop("tokens"),
            "decoder_attention": tuple(draw(layer_arrays((1, heads, m, m), hostile))
                                       for _ in range(dec_layers)),
            "cross_attention": tuple(
                draw(layer_arrays((1, heads, m, n), hostile))
                for _ in range(draw(st.sampled_from([dec_layers, 1])) if hostile else layers)),
            "decoder_tokens": draw(st.lists(TEXT, min_size=m, max_size=m)),
        }
    return args


@st.composite
def view_options(draw):
    which = draw(st.sampled_from(["head", "model"]))
    options: dict = {}
    if which == "head":
        if draw(st.booleans()):
            options["layer"] = draw(st.sampled_from([0, -1, 0, -1, 2, 7, *ODD_VALUES]))
        if draw(st.booleans()):
            options["heads"] = draw(st.sampled_from([[0], [-1, 0], [0], [9], [], None, 1]))
    else:
        if draw(st.booleans()):
            options["include_heads"] = draw(st.sampled_from([[0], [-1], [0], [9], [], None, 2]))
        if draw(st.booleans()):
            options["display_mode"] = draw(st.sampled_from(["dark", "light", "neon", None]))
    return which, options


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(args=bertviz_inputs(), view=view_options())
def test_any_bertviz_call_gives_a_view_or_one_sentence(args, view):
    which, options = view
    call = head_view if which == "head" else model_view
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's casting warnings are not the point here
        try:
            shown = call(**args, **options, html_action="return")
        except AttnscopeError as err:
            assert "\n" not in str(err) and str(err).strip(), str(err)
            return
        page = shown.html
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    trace = shown.trace
    for part in trace.parts:  # what the view shows is attention weights
        trace.check(part)


@pytest.mark.parametrize(("args", "expected"), [
    ({"attention": (np.full((1, 2, 3, 3), np.nan),), "tokens": ["a", "b", "c"]},
     "holds NaN or infinite values"),
    ({"attention": (np.full((1, 2, 3, 3), 0.5),), "tokens": ["a", "b", "c"]},
     "rows that do not sum to 1"),
    ({"attention": (np.zeros((1, 1, 0, 0)),), "tokens": []}, "tokens is empty"),
    ({"attention": (np.eye(2)[None, None],), "tokens": 5}, "tokens must be a list of strings"),
    ({"attention": (np.eye(2)[None, None],), "tokens": ["a", "b"], "include_layers": 0},
     "include_layers must be a list of layer numbers"),
    ({"encoder_attention": (np.eye(2)[None, None],) * 3, "encoder_tokens": ["a", "b"],
      "decoder_attention": (np.eye(1)[None, None],), "decoder_tokens": ["<s>"],
      "cross_attention": (np.full((1, 1, 1, 2), 0.5),), "include_layers": [2]},
     "decoder layer 2 is out of range"),
])
def test_bad_bertviz_inputs_say_what_is_wrong(args, expected):
    with pytest.raises(AttnscopeError, match=expected):
        head_view(**args, html_action="return")


def test_a_negative_sentence_b_start_counts_from_the_end():
    eye = np.eye(4, dtype=np.float32)[None, None]
    view = head_view((eye,), ["[CLS]", "a", "[SEP]", "b"], sentence_b_start=-1,
                     html_action="return")
    assert view.trace.sentence_b_start == 3
    assert list(view.trace.segment_ids) == [-1, 0, -1, 1]


def test_kept_heads_are_labelled_with_their_numbers_in_the_model():
    att = np.full((1, 4, 2, 2), 0.5, dtype=np.float32)
    view = model_view((att, att), ["a", "b"], include_heads=[-1, 1], html_action="return")
    assert view.trace.num_heads == 2
    assert view.payload()["parts"][0]["heads"] == [1, 3]
    cross = np.full((1, 4, 1, 2), 0.5, dtype=np.float32)
    view = model_view(encoder_attention=(att,), encoder_tokens=["a", "b"],
                      decoder_attention=(np.ones((1, 4, 1, 1), np.float32),),
                      cross_attention=(cross,), decoder_tokens=["<s>"], include_heads=[3],
                      html_action="return")
    assert [part["heads"] for part in view.payload()["parts"]] == [[3], [3], [3]]
    assert view.trace.cross_attentions.shape == (1, 1, 1, 2)
