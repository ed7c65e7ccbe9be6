"""Context mixing on the embedded all-MiniLM-L6-v2 (the real model through transformers' own
loading code), the explain-token command, and the faithfulness check."""

from __future__ import annotations

import numpy as np
import pytest

import attnscope as at
from attnscope.analysis import context_mixing as cm
from attnscope.cli import main

TEXT = "The girl poured water into a tall glass."


@pytest.fixture(scope="module")
def trace(embedded):
    return at.capture(embedded, TEXT, qkv=True)


def test_value_zeroing_fast_path_equals_the_loop_on_the_real_model(embedded, trace):
    fast = at.context_mixing(trace, embedded, "value_zeroing", progress=False)
    loop = cm.value_zeroing_loop(embedded, trace, layers=[0, 5])
    for layer in (0, 5):
        np.testing.assert_allclose(fast.raw[layer], loop[layer], rtol=1e-3, atol=1e-6)
    assert fast.scores.shape == (6, trace.num_tokens, trace.num_tokens)
    np.testing.assert_allclose(fast.scores.sum(-1), 1.0, atol=1e-5)


def test_every_method_on_the_real_model(embedded, trace):
    for method in at.mixing.METHODS:
        result = at.context_mixing(trace, embedded, method, target={"cosine": "a woman fills a "
                                                                    "glass with water"},
                                   progress=False)
        sources = result.sources()
        assert sources.shape == (trace.num_tokens,) and np.isfinite(sources).all()
        assert result.target_row is None and result.target.startswith("cosine to")
    # ALTI's decomposition is exact on the real model too
    for layer in range(embedded.num_layers):
        terms, bias, output = cm.decompose(embedded, trace, layer)
        np.testing.assert_allclose((terms.sum(1) + bias).numpy(), output.numpy(), atol=1e-5)


def test_faithfulness_on_the_real_model(embedded, tmp_path):
    result = at.faithfulness(
        [TEXT, "The cat sleeps on the warm windowsill."], embedded, methods=["alti"],
        target={"cosine": "someone pours a drink"}, ks=(1, 3), trials=5, progress=False)
    assert result.removal == "[MASK]" and set(result.drops) == {"alti", "random"}
    assert result.drops["alti"].shape == (2,)
    assert result.figure().save(tmp_path / "f.svg").stat().st_size > 1000


def test_explain_token_writes_a_figure_and_a_page(tmp_path, capsys):
    png = tmp_path / "alti.png"
    assert main(["explain-token", TEXT, "--method", "alti", "--cosine", "a glass of water",
                 "-o", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "alti: sources of cosine to 'a glass of water'" in printed
    assert png.stat().st_size > 5000
    page = tmp_path / "vz.html"
    assert main(["explain-token", TEXT, "--method", "value_zeroing", "-o", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    assert "value_zeroing" in html and "data:image/png;base64," in html and "girl" in html


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain-token", "x", "--method", "lrp", "-o", "{tmp}/a.png"], "invalid choice"),
        (["explain-token", "x", "--target", "cat", "-o", "{tmp}/a.png"],
         "no language-modelling head"),
        (["explain-token", "x", "--cosine", "y", "--dim", "3", "-o", "{tmp}/a.png"],
         "Choose one target"),
        (["explain-token", "x", "-o", "{tmp}/a.gif"], "must end in"),
    ],
)
def test_explain_token_mistakes_are_one_sentence(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if message == "invalid choice":  # argparse's own one-line refusal, listing the choices
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
