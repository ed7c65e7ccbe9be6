"""``attnscope generate``: streamed tokens, the page or trace written, Ctrl-C keeping what was
generated, and one sentence for each mistake."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest

import attnscope as at
from attnscope.cli import main
from attnscope.readable import readable_tokens
from tests.gen_trace import generation_trace

HAS_GENERATE = (importlib.util.find_spec("attnscope.generation") is not None
                and hasattr(importlib.import_module("attnscope.generation"), "generate"))
needs_generate = pytest.mark.skipif(not HAS_GENERATE, reason="attnscope.generate is not here")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def scripted_generate(monkeypatch, tiny_models):
    """attnscope.generation.generate replaced by transformers' own greedy generation of the
    tiny Llama, streaming each token's text; ``calls["interrupt_after"]`` makes it stop there
    as Ctrl-C does (the trace of the tokens so far, ``stopped == "interrupted"``)."""
    calls: dict = {"interrupt_after": None}

    def generate(model, prompt, *, max_new_tokens=64, on_token=None, **settings):
        calls.update(settings, prompt=prompt, max_new_tokens=max_new_tokens)
        cut = calls["interrupt_after"]
        trace = generation_trace(tiny_models["llama"], "the cat sat", cut or max_new_tokens)
        texts = readable_tokens(list(trace.tokens))
        for text in texts[trace.answer_start:]:
            on_token(text)
        stopped = "interrupted" if cut else "max_new_tokens"
        return trace.replace(generation={**trace.generation, "stopped": stopped})

    fake = types.ModuleType("attnscope.generation")
    fake.generate = generate
    monkeypatch.setitem(sys.modules, "attnscope.generation", fake)
    monkeypatch.setattr(at, "load", lambda *a, **k: tiny_models["llama"])
    return calls


def test_tokens_stream_and_the_page_is_written(scripted_generate, tmp_path, capsys):
    out = tmp_path / "gen.html"
    code, stdout, err = run(capsys, "generate", "Where is Paris?", "--system", "Be brief.",
                            "--max-new-tokens", "5", "--seed", "3", "-o", str(out))
    assert code == 0, err
    assert scripted_generate["prompt"] == "Where is Paris?"
    assert scripted_generate["system"] == "Be brief." and scripted_generate["chat"] is True
    assert scripted_generate["seed"] == 3 and scripted_generate["max_new_tokens"] == 5
    assert f"wrote {out} (5 tokens generated)" in stdout
    page = out.read_text(encoding="utf-8")
    assert "attnscope generation view" in page and '"steps":5' in page


def test_ctrl_c_keeps_what_was_generated(scripted_generate, tmp_path, capsys):
    scripted_generate["interrupt_after"] = 3
    out = tmp_path / "gen.npz"
    code, _, err = run(capsys, "generate", "Where is Paris?", "--max-new-tokens", "50",
                       "-o", str(out))
    assert code == 130
    assert f"interrupted: wrote the 3 tokens generated so far to {out}" in err
    trace = at.Trace.load(out)
    assert trace.num_tokens - trace.answer_start == 3


@pytest.mark.parametrize(("argv", "sentence"), [
    (["", "-o", "g.html"], "The prompt is empty"),
    (["hi", "--max-new-tokens", "0", "-o", "g.html"], "--max-new-tokens must be 1 or more"),
    (["hi", "--temperature", "-1", "-o", "g.html"], "--temperature must be 0"),
    (["hi", "--system", " ", "-o", "g.html"], "--system is empty"),
    (["hi", "-o", "g.png"], "must end in .html, .htm, .npz"),
])
def test_mistakes_get_one_sentence(argv, sentence, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "generate", *argv)
    assert code == 2
    assert sentence in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def _cli(*argv, env_cache):
    return subprocess.run([sys.executable, "-m", "attnscope", "generate", *argv],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**__import__("os").environ, "ATTNSCOPE_CACHE": env_cache})


@needs_generate
def test_end_to_end_on_the_tiny_llama(tiny_dirs, tiny_models, tmp_path):
    import os

    page = tmp_path / "gen.html"
    result = _cli("the cat sat", "-m", str(tiny_dirs["llama"]), "--max-new-tokens", "6",
                  "-o", str(page), env_cache=os.environ["ATTNSCOPE_CACHE"])
    assert result.returncode == 0, result.stderr
    trace_file = tmp_path / "gen.npz"
    again = _cli("the cat sat", "-m", str(tiny_dirs["llama"]), "--max-new-tokens", "6",
                 "-o", str(trace_file), env_cache=os.environ["ATTNSCOPE_CACHE"])
    assert again.returncode == 0, again.stderr
    trace = at.Trace.load(trace_file)
    # greedy: the tokens transformers' own generate gives, streamed as they came
    expected = generation_trace(tiny_models["llama"], "the cat sat", 6)
    np.testing.assert_array_equal(trace.input_ids, expected.input_ids)
    streamed = result.stdout.split("wrote")[0]
    answer = "".join(readable_tokens(list(trace.tokens))[trace.answer_start:])
    assert streamed.strip("\n") == answer
    assert '"steps":6' in page.read_text(encoding="utf-8")


@needs_generate
def test_end_to_end_on_smollm2_chat(smollm2, tmp_path):
    import os

    page = tmp_path / "paris.html"
    result = _cli("What is the capital of France?", "--chat", "--max-new-tokens", "12",
                  "-o", str(page), env_cache=os.environ["ATTNSCOPE_CACHE"])
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    text = page.read_text(encoding="utf-8")
    assert '"user"' in text and '"markup"' in text and "Paris" in text
