"""The heads of SmolLM2-135M-Instruct: induction, previous-token and sink heads, and the
figures docs/heads-llm.md quotes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bench.heads import PARAGRAPH, llm_sentences, repeated_random_ids

import attnscope as at

DOC = Path(__file__).resolve().parents[2] / "docs" / "heads-llm.md"


@pytest.fixture(scope="module")
def repeated(smollm2) -> at.Trace:
    return at.capture(smollm2, repeated_random_ids())


@pytest.fixture(scope="module")
def repeated_table(repeated):
    return at.head_patterns(repeated)


def _induction_by_hand(attn: np.ndarray, ids: np.ndarray) -> float:
    """One head's induction score, written out: for each query i whose token occurred earlier
    at j - 1 < i, the attention on those keys j over the attention of those rows."""
    hit = total = 0.0
    for i in range(len(ids)):
        targets = [j for j in range(1, i + 1) if ids[j - 1] == ids[i] and j - 1 < i]
        if targets:
            hit += attn[i, targets].sum()
            total += attn[i].sum()
    return hit / total


def test_smollm2_has_induction_heads(repeated, repeated_table):
    ids = repeated.input_ids
    assert len(ids) == 100 and not repeated.special_mask.any()
    best = repeated_table.best("induction", 1)[0]
    assert best[:2] == (18, 6) and best[2] > 0.85
    # the score is the published "mul" score, computed independently
    assert best[2] == pytest.approx(_induction_by_hand(repeated.attentions[18, 6], ids), abs=1e-5)
    # ...and on the repeated half, layer 18 head 6 looks at the token after the earlier copy
    on_next = np.mean([repeated.attentions[18, 6, 50 + i, i + 1] for i in range(49)])
    assert on_next > 0.85
    found = {(la, h) for la, h, _ in repeated_table.find("induction", 0.4)}
    assert (17, 3) in found and len(found) >= 4


def test_smollm2_has_previous_token_and_sink_heads(repeated, repeated_table):
    previous = repeated_table.find("previous", 0.4)
    assert previous and previous[0][:2] == (16, 0) and previous[0][2] > 0.85
    attn = repeated.attentions[16, 0]
    by_hand = np.mean([attn[i, i - 1] for i in range(1, 100)])
    assert previous[0][2] == pytest.approx(by_hand, abs=1e-5)
    # sink: the mean attention to token 0 over queries 1.., and most upper-layer heads are sinks
    sink = repeated_table.score("sink")
    np.testing.assert_allclose(sink, repeated.attentions[:, :, 1:, 0].mean(-1), atol=1e-6)
    sinks = repeated_table.sink_heads()
    assert all(v > 0.3 for _, _, v in sinks)
    assert len(sinks) == int((sink > 0.3).sum())
    upper = sink[15:]
    assert (upper > 0.3).mean() > 0.5


def test_the_doc_quotes_what_head_patterns_computes(smollm2, repeated_table):
    paragraph = at.head_patterns(at.capture(smollm2, PARAGRAPH))
    doc = " ".join(DOC.read_text(encoding="utf-8").split())
    for sentence in llm_sentences(repeated_table, paragraph):
        assert sentence in doc, sentence
