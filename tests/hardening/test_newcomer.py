"""What a newcomer from bertviz hits: the switch snippet in docs/bertviz.md runs on today's
transformers, and bertviz's own ``outputs[-1]`` is answered with what to pass instead."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import attnscope as at
from attnscope.compat import head_view
from attnscope.models import default_model_dir

DOC = Path(__file__).resolve().parents[2] / "docs" / "bertviz.md"


def snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_bertviz_switch_snippet_runs_on_todays_transformers():
    code = snippet()
    assert "encode_plus" not in code and "outputs[-1]" not in code.split("#")[0]
    # the hub is out of reach here: the embedded BERT stands in for bert-base-uncased
    code = code.replace('"bert-base-uncased"', repr(str(default_model_dir())))
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    view = namespace["head_view"](namespace["attention"], namespace["tokens"],
                                  namespace["sentence_b_start"])
    assert isinstance(view, at.AttnView)
    trace = view.trace
    assert trace.tokens[:4] == ("[CLS]", "the", "cat", "sat")
    assert trace.sentence_b_start == trace.tokens.index("[SEP]") + 1
    expected = np.stack([a[0].detach().numpy() for a in namespace["outputs"].attentions])
    np.testing.assert_allclose(trace.attentions, expected, rtol=0, atol=1e-6)


def test_outputs_minus_one_is_answered_with_what_to_pass(embedded):
    import torch

    inputs = embedded.tokenizer("The cat sat on the mat", return_tensors="pt")
    with torch.inference_mode():
        outputs = embedded.model(**inputs, output_attentions=True)
    tokens = embedded.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    assert outputs[-1] == ()  # bertviz's notebooks take this
    with pytest.raises(at.AttnscopeError) as caught:
        head_view(outputs[-1], tokens)
    message = str(caught.value)
    assert message.startswith("attention is empty: pass outputs.attentions (one [1, heads, "
                              "tokens, tokens] per layer), not outputs[-1], which is an empty "
                              "cross_attentions under transformers 5;"), message
    assert 'attn_implementation="eager"' in message and "\n" not in message
