"""Fixtures for the browser tests: one Chromium per test module, and a Trace whose queries and
keys come from the model's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnscope.testing import launch_chromium


# Module scope: Playwright's sync API runs an event loop while it is open, so each test module
# closes its own before the next module (or an asyncio test) starts one.
@pytest.fixture(scope="module")
def browser(chromium_path):
    """A headless Chromium (Debian's), driven by Playwright, for one test module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p, chromium_path)
        yield b
        b.close()


@pytest.fixture(scope="session")
def qk_trace(embedded, seed_pair_trace):
    """The seed pair's Trace with ``queries`` and ``keys`` ``[L, H, T, d_head]`` computed here
    from the embedded BERT's projection weights and the Trace's own hidden states (the input of
    layer l is ``hidden_states[l]``), so the views are tested apart from any capture option."""
    trace = seed_pair_trace
    bert = embedded.model
    heads = trace.num_heads
    queries, keys = [], []
    with torch.inference_mode():
        for layer, block in enumerate(bert.encoder.layer):
            hidden = torch.from_numpy(np.array(trace.hidden_states[layer]))  # (T, D)
            t = hidden.shape[0]
            q = block.attention.self.query(hidden).view(t, heads, -1).transpose(0, 1)  # (H, T, d)
            k = block.attention.self.key(hidden).view(t, heads, -1).transpose(0, 1)  # (H, T, d)
            queries.append(q.numpy())
            keys.append(k.numpy())
    queries, keys = np.stack(queries), np.stack(keys)  # (L, H, T, d)
    scores = queries @ keys.transpose(0, 1, 3, 2) / np.sqrt(queries.shape[-1])  # (L, H, T, T)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    # the fixture is only useful if it reproduces the model's attention
    np.testing.assert_allclose(weights, trace.attentions, atol=1e-4)
    return trace.replace(queries=queries, keys=keys)
