"""The explorer answers with tokens as the text they stand for (a byte-level GPT-2 here)."""

from __future__ import annotations

from fastapi.testclient import TestClient

import attnscope as at
from attnscope.app import Limits, create_app
from attnscope.readable import token_labels

TEXT = "the cat sat\non the mat"


def test_explorer_answers_carry_labels_and_the_raw_tokens(tiny_models):
    model = tiny_models["gpt2"]
    client = TestClient(create_app([model], Limits()))
    trace = at.capture(model, TEXT)
    labels = token_labels(trace.tokens, trace.special_mask)
    assert labels != list(trace.tokens) and any("Ġ" in t for t in trace.tokens)

    body = client.post("/api/capture", json={"text": TEXT}).json()
    assert body["tokens"] == labels and body["raw_tokens"] == list(trace.tokens)
    assert body["view"]["tokens"]["self"] == labels
    heads = client.post("/api/heads", json={"text": TEXT}).json()
    assert heads["tokens"] == labels
    flow = client.post("/api/flow", json={"text": TEXT, "kind": "rollout"}).json()
    assert flow["tokens"] == labels and flow["output_token"] == labels[flow["output"]]
    ex = client.post("/api/explain", json={"text": TEXT, "layer": 0, "head": 0,
                                           "query": 3}).json()
    assert ex["key_tokens"] == labels and ex["query_token"] == labels[3]
    assert "↵" in labels
