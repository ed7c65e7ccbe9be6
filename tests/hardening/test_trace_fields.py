"""Every field of a Trace is checked where it comes in: the facts in ``extra`` and every array
of a trace file, and each argument of ``Trace.from_attentions``, ``save`` and ``load``.

A crafted file used to load and then fail inside ``explain``, ``neuron_view`` or
``recompute`` with a ValueError, TypeError or IndexError traceback, or give ``+nan``; now the
load itself says, in one sentence, which field is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import attnscope as at
from attnscope.errors import AttnscopeError


@pytest.fixture(scope="module")
def trace(tiny_models) -> at.Trace:
    """A real T5 trace with queries, keys and values, the scales and the position bias."""
    return at.capture(tiny_models["t5"], "leaves fall", "in autumn", qkv=True)


@pytest.fixture(scope="module")
def members(trace, tmp_path_factory) -> dict[str, np.ndarray]:
    path = trace.save(tmp_path_factory.mktemp("good") / "trace.npz")
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def crafted(path: Path, members: dict, *, extra: dict | None = None, **arrays) -> Path:
    """A trace file like ``members`` with some facts in ``extra`` and some arrays changed."""
    meta = json.loads(str(members["__meta__"]))
    meta["extra"] = {**meta["extra"], **(extra or {})}
    out = {**members, **arrays, "__meta__": np.array(json.dumps(meta))}
    with open(path, "wb") as handle:
        np.savez(handle, **out)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(AttnscopeError) as caught:
        at.Trace.load(path)
    message = str(caught.value)
    assert message.startswith(f"Cannot load the trace '{path}': "), message
    assert "\n" not in message and message.endswith("."), message
    return message


def test_the_real_facts_are_valid_and_used(trace, members, tmp_path):
    extra = trace.extra
    assert extra["attention_scales"] == [1.0, 1.0] and extra["position_bias"]["num_buckets"] == 8
    back = at.Trace.load(crafted(tmp_path / "same.npz", members))
    assert at.explain(back, layer=1, head=0, query=2).weights.shape == (back.num_tokens,)


EXTRA_CASES = [
    ({"attention_scales": "0.125"}, "extra['attention_scales'] must be a list of 2 positive"),
    ({"attention_scales": [[1.0], [1.0]]}, "extra['attention_scales'] must be a list of 2"),
    ({"attention_scales": [1.0]}, "extra['attention_scales'] must be a list of 2"),
    ({"attention_scales": [1.0, float("nan")]}, "extra['attention_scales'] must be a list"),
    ({"attention_scales": [1.0, -1.0]}, "extra['attention_scales'] must be a list"),
    ({"attention_scale": "x"}, "extra['attention_scale'] must be a positive number, not 'x'"),
    ({"attention_scale": float("inf")}, "extra['attention_scale'] must be a positive number"),
    ({"position_bias": "junk"}, "extra['position_bias'] must be T5's relative position bias"),
    ({"position_bias": {"kind": "t5_relative", "num_buckets": 10**9, "max_distance": 128,
                        "bidirectional": True, "table": [[0.0] * 4]}},
     "extra['position_bias'] must have from 2 to 65536 buckets, not 1000000000"),
    ({"position_bias": {"kind": "t5_relative", "num_buckets": 8, "max_distance": 128,
                        "bidirectional": True, "table": [[0.0] * 4]}},
     "its table is not 8 rows of 4 numbers"),
    ({"position_bias": {"kind": "t5_relative", "num_buckets": 2, "max_distance": 128,
                        "bidirectional": True, "table": [[0.0] * 4, [0.0, 0.0, "x", 0.0]]}},
     "its table holds 'x'"),
    ({"position_bias": {"kind": "t5_relative", "num_buckets": 2, "max_distance": 0,
                        "bidirectional": True, "table": [[0.0] * 4] * 2}},
     "must have a positive max_distance, not 0"),
    ({"sliding_windows": [0, None]}, "extra['sliding_windows'] must be a list of 2 window"),
    ({"num_key_value_heads": 99}, "extra['num_key_value_heads'] must be a whole number from 1"),
    ({"rotary": "no"}, "extra['rotary'] must be true or false, not 'no'"),
]


@pytest.mark.parametrize(("extra", "expected"), EXTRA_CASES)
def test_crafted_facts_are_refused_at_load(tmp_path, members, extra, expected):
    message = load_error(crafted(tmp_path / "facts.npz", members, extra=extra))
    assert expected in message, message


@pytest.mark.parametrize("name", ["queries", "keys", "values", "hidden_states",
                                  "decoder_hidden_states"])
def test_nan_in_any_array_is_refused_at_load(tmp_path, members, name):
    array = members[name].copy()
    array.flat[array.size // 2] = np.nan
    message = load_error(crafted(tmp_path / "nan.npz", members, **{name: array}))
    assert message.endswith(f": {name} holds NaN or infinite values."), message


def test_from_attentions_checks_every_argument():
    att = np.full((1, 2, 3, 3), 1 / 3, dtype=np.float32)
    tokens = ["a", "b", "c"]
    states = np.zeros((2, 3, 4), dtype=np.float32)
    states[1, 1, 1] = np.nan
    cases = [
        ({"hidden_states": states}, "hidden_states holds NaN or infinite values."),
        ({"scale": "x"}, "scale must be a number above 0 or None, not 'x'."),
        ({"scale": float("nan")}, "scale must be a number above 0, not nan."),
        ({"scale": -0.5}, "scale must be a number above 0, not -0.5."),
        ({"causal": "yes"}, "causal must be True or False, not 'yes'."),
        ({"model_name": 5}, "model_name must be a string, not int."),
        ({"sentence_b_start": 99}, "sentence_b_start 99 is out of range: valid token "
                                   "positions are 0 to 2 (or -3 to -1)."),
    ]
    for kwargs, expected in cases:
        with pytest.raises(AttnscopeError) as caught:
            at.Trace.from_attentions(att, tokens, **kwargs)
        assert str(caught.value) == expected, kwargs
    # the range the sentence names is the range that works
    assert at.Trace.from_attentions(att, tokens, sentence_b_start=-1).sentence_b_start == 2
    with pytest.raises(AttnscopeError, match="holds complex numbers; attnscope takes real ones"):
        at.Trace.from_attentions(att.astype(np.complex64) + 0.5j, tokens)


def test_save_and_load_take_a_path(tmp_path, trace):
    for call, verb in ((at.Trace.load, "load"), (trace.save, "save")):
        with pytest.raises(AttnscopeError, match=rf"^Trace\.{verb} takes a file path \(a "
                                                 r"string or pathlib\.Path\), not NoneType\.$"):
            call(None)
    folder = tmp_path / "traces"
    folder.mkdir()
    with pytest.raises(AttnscopeError, match="it is a folder"):
        trace.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces"]  # no traces.npz beside it
