"""Every sub-command against a table of a person's mistakes: exit status 2, exactly one line on
stderr starting with "attnscope: error:", no traceback, and no file written."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnscope.cli import main

TEXT = "The girl poured water into a tall glass."


def _mistakes(tmp: Path) -> dict[str, list[str]]:
    """Arguments that are a mistake for every sub-command that takes text and a model."""
    binary = tmp / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00caf\xe9")
    blank = tmp / "blank.txt"
    blank.write_text("  \n\n ")
    return {
        "empty text": [""],
        "blank text": ["   \t "],
        "lone surrogate": ["caf\udce9"],
        "unknown model": [TEXT, "-m", "no-such-org/no-such-model-xyz"],
        "missing model folder": [TEXT, "-m", str(tmp / "missing-model")],
        "folder without config": [TEXT, "-m", str(tmp)],
        "missing file": ["--file", str(tmp / "missing.txt")],
        "file is a folder": ["--file", str(tmp)],
        "file not UTF-8": ["--file", str(binary)],
        "blank file": ["--file", str(blank)],
        "text twice": [TEXT, TEXT, "--file", str(blank)],
    }


COMMANDS = {
    "tokens": [],
    "heatmap": ["-o", "{tmp}/out.png"],
    "view": ["-o", "{tmp}/out.html"],
    "explain": ["--token", "girl"],
    "heads": [],
    "report": ["-o", "{tmp}/out.html"],
}

# Mistakes about where to write, and about layers and heads, for the commands that take them.
OUTPUTS = {
    "missing folder": "{tmp}/missing/out",
    "a folder": "{tmp}/folder",
    "under /proc": "/proc/attnscope-out",
    "name too long": "{tmp}/" + "x" * 300,
}
INDICES = {
    "heatmap": [["--layer", "6"], ["--layer", "-7"], ["--head", "12"], ["--part", "cross"]],
    "view": [["--layer", "99"]],
    "explain": [["--layer", "6"], ["--head", "-13"], ["--position", "999"]],
    "heads": [["--part", "decoder"]],
}


def _check(capsys, argv: list[str], tmp: Path) -> str:
    before = sorted(p.name for p in tmp.iterdir())
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("attnscope: error: "), (argv, err)
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp.iterdir()) == before, "no file may be written"
    return lines[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_text_model_and_files(command, capsys, tmp_path):
    extra = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    for name, args in _mistakes(tmp_path).items():
        message = _check(capsys, [command, *args, *extra], tmp_path)
        assert len(message) < 400, name


@pytest.mark.parametrize("command", ["heatmap", "view", "report"])
def test_bad_outputs(command, capsys, tmp_path):
    suffix = ".png" if command == "heatmap" else ".html"
    (tmp_path / f"folder{suffix}").mkdir()
    for name, output in OUTPUTS.items():
        message = _check(capsys, [command, TEXT, "-o", output.format(tmp=tmp_path) + suffix],
                         tmp_path)
        assert "Cannot write" in message, name
    _check(capsys, [command, TEXT, "-o", str(tmp_path / "out.docx")], tmp_path)


@pytest.mark.parametrize("command", sorted(INDICES))
def test_bad_layers_and_heads_fail_before_the_model_loads(command, capsys, tmp_path,
                                                          monkeypatch):
    import attnscope.models

    def no_load(*args, **kwargs):  # the config alone must catch these
        raise AssertionError("the model was loaded for a mistake its config shows")

    extra = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    for args in INDICES[command]:
        if "--position" in args:
            continue  # positions need the tokens, so the model loads first
        monkeypatch.setattr(attnscope.models, "load", no_load)
        message = _check(capsys, [command, TEXT, *args, *extra], tmp_path)
        assert "valid" in message or "needs an encoder-decoder" in message
    monkeypatch.undo()
    if command == "explain":
        _check(capsys, [command, TEXT, "--position", "999"], tmp_path)


@pytest.mark.parametrize("argv", [
    ["heatmap", TEXT, "--layer", "last"],
    ["explain", TEXT, "--token", "girl", "--position", "2"],
    ["no-such-command"],
    ["view", TEXT, "--no-such-option"],
])
def test_usage_mistakes_are_one_line_too(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnscope"), err
    assert "--help" in lines[0]


def test_demo_mistakes(capsys, tmp_path, monkeypatch):
    import attnscope.models

    def no_model_read(*args, **kwargs):
        raise AssertionError("a model was read before the text was checked")

    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr(attnscope.models, "_from_pretrained", no_model_read)
    _check(capsys, ["demo", "   "], tmp_path)  # refused before any model is read
    monkeypatch.undo()
    _check(capsys, ["demo", "-o", str(tmp_path / "a-file")], tmp_path)
    _check(capsys, ["demo", "-o", str(tmp_path / "missing" / "demo")], tmp_path)
    _check(capsys, ["demo", "-o", "/proc/attnscope-demo"], tmp_path)


def test_undecodable_argv_bytes(tmp_path):
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates."""
    result = subprocess.run([sys.executable, "-m", "attnscope", "tokens", b"caf\xe9"],
                            capture_output=True, timeout=600, cwd=tmp_path)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "not a character" in err and "Traceback" not in err


def test_ctrl_c_at_any_moment_is_one_line(tmp_path):
    """SIGINT at random moments, from the first import to the last file written."""
    rng = random.Random(8)
    # What the installed ``attnscope`` script runs, with a line on stderr once its entry point
    # has taken over Ctrl-C (before that, Python's own default handler answers, in any
    # program): the delays count from there, torch's and transformers' imports included.
    code = """
import signal, sys
from attnscope.__main__ import main
install = signal.signal
def install_then_announce(signum, handler):
    previous = install(signum, handler)
    if signum == signal.SIGINT and handler is not signal.SIG_IGN:
        signal.signal = install
        sys.stderr.write("started\\n")
        sys.stderr.flush()
    return previous
signal.signal = install_then_announce
sys.exit(main())
"""
    for delay in [0.02, 0.05, *sorted(rng.uniform(0.1, 6.0) for _ in range(5))]:
        process = subprocess.Popen(
            [sys.executable, "-c", code, "report", TEXT, "-o", str(tmp_path / "r.html")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        assert process.stderr.readline() == "started\n"
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=600)
        assert "Traceback" not in err, (delay, err)
        if process.returncode == 130:
            assert err.strip().splitlines()[-1] == "attnscope: interrupted", (delay, err)
        else:  # finished before the signal arrived; once done, Ctrl-C is ignored
            assert process.returncode == 0, (delay, process.returncode, err)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert not leftovers
        page = tmp_path / "r.html"
        if page.exists():
            assert page.read_text(encoding="utf-8").rstrip().endswith("</html>")


def test_flow_refuses_work_over_its_budget_at_once(embedded, monkeypatch):
    import scipy.sparse.csgraph

    import attnscope as at

    def no_flow_computed(*args, **kwargs):
        raise AssertionError("a maximum flow was computed before the budget was checked")

    trace = at.capture(embedded, " ".join(["the girl poured water into a tall glass"] * 30))
    monkeypatch.setattr(scipy.sparse.csgraph, "maximum_flow", no_flow_computed)
    with pytest.raises(at.AttnscopeError, match=r"output=0 takes about .* raise budget="):
        at.attention_flow(trace)
    monkeypatch.undo()
    with pytest.raises(at.AttnscopeError, match=r"over the budget of 0\.001 s"):
        at.attention_flow(trace, output=0, budget=0.001)
    short = at.capture(embedded, "leaves fall in autumn")
    assert at.attention_flow(short, budget=None).values.shape == (6, 6)
