"""The heads and report commands, and the report in the demo folder."""

from __future__ import annotations

import re

import pytest

from attnscope.cli import main


def test_heads_prints_the_table_and_draws_the_map(tmp_path, capsys):
    out = tmp_path / "map.png"
    gallery = tmp_path / "gallery.svg"
    assert main(["heads", "The cat sat on the mat.", "-o", str(out), "--gallery",
                 str(gallery)]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line[:5].strip().isdigit()]
    assert len(lines) == 6 * 12  # one line per head
    assert "prev" in printed and "class" in printed
    assert out.stat().st_size > 5000 and gallery.stat().st_size > 5000


def test_heads_with_words(capsys):
    assert main(["heads", "Autumn foliage overflowed.", "--words"]) == 0
    assert "6 layers x 12 heads" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["heads", "   "], "empty"),
        (["heads", "x", "-o", "map.gif"], "must end in"),
        (["report", "x", "-o", "report.txt"], "must end in"),
        (["report", "x", "--output-token", "99", "-o", "{tmp}/r.html"], "out of range"),
    ],
)
def test_mistakes_are_one_sentence(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_report_command_writes_a_pair_page(tmp_path, capsys):
    out = tmp_path / "pair.html"
    assert main(["report", "leaves fall in autumn", "autumn is marked by colorful foliage",
                 "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "autumn is marked by colorful foliage" in page
    assert "Norm-based attention" in page and '<figure class="as-chart"' in page
    assert f"wrote {out}" in capsys.readouterr().out


def test_demo_writes_the_report(tmp_path, tiny_dirs, capsys):
    folder = tmp_path / "demo"
    assert main(["demo", "-o", str(folder), "-m", str(tiny_dirs["bert"])]) == 0
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "What each head does" in page
    # Each step says what it did and how long it took, the quick files first.
    out = capsys.readouterr().out
    steps = re.findall(r"^(loaded the model|captured|wrote \S+).* \(\d+\.\d s\)$", out, re.M)
    names = ["tokens.txt", "trace.npz", "view.html", "report.html", "heatmap.png",
             "heads_last_layer.png", "all_heads.png"]
    assert steps[:2] == ["loaded the model", "captured"]
    assert steps[2:] == [f"wrote {folder / name}" for name in names]
    assert all((folder / name).stat().st_size > 0 for name in names)
    assert out.rstrip().endswith(f"open {folder / 'report.html'}")
