"""attnscope long-view: a text captured lazily, or a saved lazy trace, written as the long view;
mistakes as one sentence and exit status 2."""

from __future__ import annotations

import json
import re

import pytest

import attnscope as at
from attnscope.cli import main
from tests.long_trace import long_llama, long_text


def _payload(page: str) -> dict:
    found = re.search(r'<script type="application/json" class="attnscope-data">(.*?)</script>',
                      page, re.S)
    return json.loads(found.group(1))


def test_text_and_saved_trace_give_the_page(tmp_path, capsys, tiny_models):
    out, saved = tmp_path / "long.html", tmp_path / "long.npz"
    assert main(["long-view", "The cat sat on the mat. " * 20, "-o", str(out),
                 "--save-trace", str(saved), "--head", "5", "-l", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {saved}" in printed and f"wrote {out}" in printed
    P = _payload(out.read_text())["long"]
    assert P["initial"]["layer"] == 2 and P["initial"]["head"] == 5
    assert P["tokens"] == at.LazyTrace.load(saved).num_tokens
    # a saved trace of another model, with a small budget
    lazy = at.capture(long_llama(tiny_models["llama"].tokenizer), long_text(), attention="lazy")
    lazy.save(saved)
    assert main(["long-view", "--trace", str(saved), "-o", str(out), "--max-mb", "0.05",
                 "--token", "7"]) == 0
    P = _payload(out.read_text())["long"]
    assert P["initial"]["token"] == 7 and P["budget"] == 50_000 and P["notes"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--trace", "missing.npz"], "Cannot load the lazy trace"),
    (["hello", "--trace", "x.npz"], "Give a text (or --file) or --trace, not both."),
    (["hello", "-o", "page.png"], "the file name must end in .html"),
    (["hello", "--head", "12"], "head 12 is out of range"),
    (["hello", "--max-mb", "-1"], "--max-mb must be more than 0"),
])
def test_mistakes_get_one_sentence(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["long-view", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
