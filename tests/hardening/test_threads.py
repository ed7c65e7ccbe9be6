"""Captures from many threads on one loaded model give exactly what sequential captures give,
and leave the model without hooks, whatever happens (errors and Ctrl-C included)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import attnscope as at

TEXTS = [
    "The girl poured water into a tall glass until it overflowed.",
    "leaves fall in autumn",
    "autumn is marked by colorful foliage and cold mornings",
    "The cat sat on the mat.",
    "Attention lets every token look at every other token in the sentence.",
    "A quick brown fox jumps over the lazy dog; then it runs away!",
]


def _hook_count(model: at.LoadedModel) -> int:
    """attnscope's hooks on the model (transformers keeps hooks of its own there)."""
    return sum(
        hook.__module__.startswith("attnscope")
        for m in model.model.modules()
        for hook in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    )


def _same(a: at.Trace, b: at.Trace) -> None:
    assert a.tokens == b.tokens
    np.testing.assert_allclose(a.attentions, b.attentions, atol=1e-5)
    for name in ("queries", "keys", "values"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-5)


@pytest.mark.parametrize("family", ["embedded", "llama", "gpt2"])
def test_qkv_captures_from_threads_equal_sequential(family, embedded, tiny_models):
    model = embedded if family == "embedded" else tiny_models[family]
    hooks_before = _hook_count(model)
    expected = {text: at.capture(model, text, qkv=True) for text in TEXTS}
    # plain and qkv captures mixed, 4 threads, every text several times
    jobs = [(text, i % 3 != 0) for i, text in enumerate(TEXTS * 4)]

    def run(job):
        text, qkv = job
        return text, qkv, at.capture(model, text, qkv=qkv)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, jobs))
    for text, qkv, trace in results:
        if qkv:
            _same(trace, expected[text])
        else:
            assert trace.queries is None
            np.testing.assert_allclose(trace.attentions, expected[text].attentions, atol=1e-5)
    assert _hook_count(model) == hooks_before == 0


def test_batches_from_threads_equal_sequential(embedded):
    expected = at.capture_batch(embedded, TEXTS, qkv=True, batch_size=3)

    def run(_):
        return at.capture_batch(embedded, TEXTS, qkv=True, batch_size=3)

    with ThreadPoolExecutor(max_workers=3) as pool:
        for traces in pool.map(run, range(3)):
            for got, want in zip(traces, expected, strict=True):
                _same(got, want)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_hooks_removed_when_the_pass_is_interrupted(error, embedded):
    """Ctrl-C (or any error) in the middle of a forward pass leaves no hook behind."""
    before = _hook_count(embedded)
    layer = embedded.model.encoder.layer[1]

    def interrupt(module, args, output):
        raise error("stop")

    handle = layer.register_forward_hook(interrupt)
    try:
        with pytest.raises(error):
            at.capture(embedded, "leaves fall in autumn", qkv=True)
    finally:
        handle.remove()
    assert _hook_count(embedded) == before == 0
    # and the model still works, with the right queries
    trace = at.capture(embedded, "leaves fall in autumn", qkv=True)
    assert trace.queries is not None and trace.queries.shape[2] == trace.num_tokens
