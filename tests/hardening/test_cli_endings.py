"""How a command ends: a typo answered before the slow imports, output to a full disk in one
sentence, and Ctrl-C at the last moments (after the file is written, after the command, while
Python shuts down) ending with "attnscope: interrupted" and 130, or with the command's success.

Each Ctrl-C here is sent by the process to itself at a known point (``signal.raise_signal``
runs the handler before it returns), so no test waits on a timer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import attnscope as at
from attnscope.testing import build_tiny_model

SRC = Path(at.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_model("bert", tmp_path_factory.mktemp("bert"))


def run_python(code: str, *args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)


def test_a_layer_typo_is_answered_before_torch_is_imported(tmp_path):
    for args, expected in [
        (["heatmap", "hi", "--layer", "99"], "layer 99 is out of range: valid layers are 0 to 5"),
        (["view", "hi", "--layer", "-7"], "layer -7 is out of range"),
        (["explain", "hi", "--token", "hi", "--head", "12"], "head 12 is out of range"),
    ]:
        result = run_python("""
            import sys
            from attnscope.cli import main
            status = main(sys.argv[1:])
            print(status, [m for m in ("torch", "transformers") if m in sys.modules])
        """, *args, cwd=tmp_path)
        assert result.stdout.split("\n")[0] == "2 []", (args, result.stdout, result.stderr)
        assert result.stderr.startswith("attnscope: error: " + expected), result.stderr
    assert list(tmp_path.iterdir()) == []


def test_explain_refuses_a_negative_dims(tmp_path):
    result = run_python("""
        import sys
        from attnscope.cli import main
        print(main(sys.argv[1:]), "torch" in sys.modules)
    """, "explain", "leaves fall", "--token", "fall", "--dims", "-1", cwd=tmp_path)
    assert result.stdout.strip() == "2 False"
    assert result.stderr == "attnscope: error: --dims must be at least 0, not -1.\n"


def test_output_to_a_full_disk_is_one_sentence(tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "attnscope", "tokens", "leaves fall in autumn"],
            env={**os.environ, "PYTHONPATH": str(SRC)}, cwd=tmp_path, stdout=full,
            stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("attnscope: error: cannot write the output to standard output: "
                             "the disk is full.\n")


# The installed ``attnscope`` script's code, with Ctrl-C sent at one known point.
LATE_CTRL_C = """
    import atexit, os, signal, sys
    point = sys.argv.pop(1)

    def ctrl_c(*_):
        signal.raise_signal(signal.SIGINT)

    if point == "while Python shuts down":
        atexit.register(ctrl_c)  # registered first: runs last, after every library's own
    import attnscope.cli
    import attnscope.files
    if point == "after the file is written":
        real_replace = attnscope.files.os.replace
        def replace_then_ctrl_c(src, dst):
            real_replace(src, dst)
            ctrl_c()
        attnscope.files.os.replace = replace_then_ctrl_c
    if point == "after the command":
        command = attnscope.cli.main
        def command_then_ctrl_c(argv=None):
            status = command(argv)
            ctrl_c()
            return status
        attnscope.cli.main = command_then_ctrl_c
    from attnscope.__main__ import main
    sys.exit(main())
"""


@pytest.mark.parametrize("point", ["after the file is written", "after the command",
                                   "while Python shuts down"])
def test_ctrl_c_in_the_last_moments_ends_in_one_line_or_success(tmp_path, tiny_bert, point):
    page = tmp_path / "attention.png"
    result = run_python(LATE_CTRL_C, point, "heatmap", "leaves fall", "-m", str(tiny_bert),
                        "-o", str(page), cwd=tmp_path)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, (
        result.stderr)
    if result.returncode == 130:
        assert result.stderr.strip().splitlines()[-1] == "attnscope: interrupted", result.stderr
    else:
        assert result.returncode == 0 and result.stdout == f"wrote {page}\n", result
    assert page.read_bytes().startswith(b"\x89PNG")  # the file was written whole before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention.png"]
    expected = {"after the file is written": 130, "after the command": 130,
                "while Python shuts down": 0}
    assert result.returncode == expected[point]
