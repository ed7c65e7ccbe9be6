"""layers= and heads= on every capture: only those are recorded, named by the model's own
numbers, and each equals the same slice of a full capture."""

from __future__ import annotations

import numpy as np
import pytest

import attnscope as at
from attnscope.errors import AttnscopeError
from attnscope.trace import InvalidTraceError

TEXT = "The girl poured water into a tall glass until it overflowed."
PROMPT = "The capital of France is"


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_eager_capture_keeps_the_chosen_layers_and_heads(tiny_models, family):
    model = tiny_models[family]
    full = at.capture(model, TEXT, qkv=True)
    part = at.capture(model, TEXT, qkv=True, layers=[-1], heads=[2, 0])
    assert part.layer_ids == (1,) and part.head_ids == (0, 2)
    assert part.layer_numbers == (1,) and part.head_numbers == (0, 2)
    np.testing.assert_array_equal(part.attentions, full.attentions[1:2][:, [0, 2]])
    # the embedding output, then the output of each chosen layer
    np.testing.assert_array_equal(part.hidden_states, full.hidden_states[[0, 2]])
    for name in ("queries", "keys", "values"):
        np.testing.assert_array_equal(getattr(part, name), getattr(full, name)[1:2][:, [0, 2]])
    assert part.extra["attention_scales"] == full.extra["attention_scales"][1:2]
    assert "num_key_value_heads" not in part.extra
    # every head of the chosen layers, and the whole model named in full: no ids kept
    assert at.capture(model, TEXT, layers=[0]).head_ids is None
    assert at.capture(model, TEXT, layers=[0, 1], heads=range(4)).layer_ids is None


def test_tables_and_pages_name_the_real_layer_and_head(tiny_models, tmp_path):
    trace = at.capture(tiny_models["gpt2"], TEXT, layers=[1], heads=[3])
    records = at.head_patterns(trace).records()
    assert [(r["layer"], r["head"]) for r in records] == [(1, 3)]
    assert at.head_patterns(trace).to_text().splitlines()[2].split()[:2] == ["1", "3"]
    (part,) = at.model_view(trace).payload()["parts"]
    assert part["layers"] == [1] and part["heads"] == [3]
    # saved and loaded as they are
    loaded = at.Trace.load(trace.save(tmp_path / "picked.npz"))
    assert loaded.layer_ids == (1,) and loaded.head_ids == (3,)
    np.testing.assert_array_equal(loaded.attentions, trace.attentions)


def test_a_trace_refuses_layer_and_head_ids_that_do_not_fit(tiny_models):
    trace = at.capture(tiny_models["gpt2"], TEXT, layers=[0, 1], heads=[1, 2])
    for changes, words in (({"layer_ids": (0,)}, "names 1 layers but the attention holds 2"),
                           ({"layer_ids": (1, 0)}, "once, in increasing order"),
                           ({"head_ids": (2, 2)}, "once, in increasing order"),
                           ({"head_ids": (-1, 2)}, "list of head numbers"),
                           ({"layer_ids": ("a", 1)}, "list of layer numbers")):
        with pytest.raises(InvalidTraceError, match=words):
            trace.replace(**changes)


def test_a_file_with_bad_layer_ids_does_not_load(tiny_models, tmp_path):
    import json
    import zipfile

    path = at.capture(tiny_models["gpt2"], TEXT, layers=[1]).save(tmp_path / "t.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta["layer_ids"] = [5, 6]
    bad = tmp_path / "bad.npz"
    np.savez(bad, __meta__=np.array(json.dumps(meta)), **arrays)
    assert zipfile.is_zipfile(bad)
    with pytest.raises(AttnscopeError, match="layer_ids names 2 layers"):
        at.Trace.load(bad)


def test_capture_batch_takes_layers_and_heads(tiny_models):
    model = tiny_models["bert"]
    texts = [TEXT, "A short one."]
    full = at.capture_batch(model, texts)
    part = at.capture_batch(model, texts, layers=[0], heads=[1, 3])
    for f, p in zip(full, part, strict=True):
        assert p.layer_ids == (0,) and p.head_ids == (1, 3)
        np.testing.assert_array_equal(p.attentions, f.attentions[:1][:, [1, 3]])


def test_encoder_decoder_parts_follow_the_same_choice(tiny_models):
    model = tiny_models["t5"]
    full = at.capture(model, TEXT, "Ein Mädchen", qkv=True)
    part = at.capture(model, TEXT, "Ein Mädchen", qkv=True, layers=[1], heads=[0, 3])
    for name in ("attentions", "decoder_attentions", "cross_attentions"):
        np.testing.assert_array_equal(getattr(part, name), getattr(full, name)[1:2][:, [0, 3]])
    np.testing.assert_array_equal(part.decoder_hidden_states, full.decoder_hidden_states[[0, 2]])
    table = np.asarray(full.extra["position_bias"]["table"])
    np.testing.assert_array_equal(np.asarray(part.extra["position_bias"]["table"]),
                                  table[:, [0, 3]])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_lazy_capture_keeps_the_chosen_layers_and_heads(tiny_models, family, tmp_path):
    model = tiny_models[family]
    full = at.capture(model, TEXT)
    lazy = at.capture(model, TEXT, attention="lazy", layers=[1], heads=[1, 3])
    assert (lazy.num_layers, lazy.num_heads) == (1, 2)
    assert lazy.layer_ids == (1,) and lazy.head_ids == (1, 3)
    want = full.attentions[1:2][:, [1, 3]]
    np.testing.assert_allclose(lazy.to_dense(), want, atol=1e-5, rtol=0)
    window = lazy.window(0, 5)
    assert window.layer_ids == (1,) and window.head_ids == (1, 3)
    loaded = at.LazyTrace.load(lazy.save(tmp_path / "lazy.npz"))
    assert loaded.layer_ids == (1,) and loaded.head_ids == (1, 3)
    np.testing.assert_allclose(loaded.to_dense(), want, atol=1e-5, rtol=0)
    assert [(r["layer"], r["head"]) for r in at.head_patterns(lazy).records()] == [(1, 1), (1, 3)]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generate_records_the_chosen_layers_and_heads(tiny_models, family):
    model = tiny_models[family]
    full = at.generate(model, PROMPT, max_new_tokens=3)
    part = at.generate(model, PROMPT, max_new_tokens=3, layers=[0], heads=[1, 2])
    assert part.tokens == full.tokens  # greedy: the same answer
    assert part.layer_ids == (0,) and part.head_ids == (1, 2)
    np.testing.assert_allclose(part.attentions, full.attentions[:1][:, [1, 2]], atol=1e-6)
    np.testing.assert_allclose(part.hidden_states, full.hidden_states[[0, 1]], atol=1e-6)


@pytest.mark.parametrize("attention", ["eager", "lazy"])
def test_bad_choices_get_one_sentence(tiny_models, attention):
    model = tiny_models["gpt2"]
    cases = [({"layers": []}, r"layers=\[\] records no layer"),
             ({"heads": []}, r"heads=\[\] records no head"),
             ({"layers": [2]}, "Layer 2 is out of range: .* has 2 layers"),
             ({"heads": [-5]}, "Head -5 is out of range: .* has 4 heads"),
             ({"layers": [1, -1]}, "names layer 1 twice"),
             ({"heads": ["0"]}, "whole head numbers"),
             ({"layers": "0"}, "takes a list of layer numbers")]
    for kwargs, words in cases:
        with pytest.raises(AttnscopeError, match=words):
            at.capture(model, TEXT, attention=attention, **kwargs)
    with pytest.raises(AttnscopeError, match=r"layers=\[\] records no layer"):
        at.generate(model, PROMPT, max_new_tokens=1, layers=[])


def test_figures_name_the_real_layer_and_head(tiny_models):
    trace = at.capture(tiny_models["bert"], TEXT, layers=[1], heads=[2, 3])
    assert "layer 1, head 3" in at.heatmap(trace, 0, 1).axes[0].get_title()
    grid = at.heads_grid(trace, 0)
    assert [ax.get_title() for ax in grid.axes[:2]] == ["head 2", "head 3"]
    assert "layer 1, all heads" in grid._suptitle.get_text()
    model = at.model_grid(trace).axes[0]
    assert [t.get_text() for t in model.get_yticklabels()] == ["L1"]
    assert [t.get_text() for t in model.get_xticklabels()] == ["h2", "h3"]
    labels = at.head_patterns(trace).label_map().axes[0]
    assert [t.get_text() for t in labels.get_yticklabels()] == ["1"]
