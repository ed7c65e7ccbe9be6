"""The attnscope command: sub-commands, figures written, and one-sentence errors."""

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from attnscope.cli import build_parser, main
from tests.conftest import SEED_A, SEED_B, SEED_SENTENCE


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_not_blank(path):
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    # a real figure has many distinct colours, not one flat fill
    assert pixels[..., :3].std() > 0.05
    assert len(np.unique(pixels[..., :3].reshape(-1, 3).round(2), axis=0)) > 20


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "attnscope", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for command in ("demo", "tokens", "heatmap"):
        assert command in result.stdout


def test_every_sub_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"demo", "tokens", "heatmap"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: attnscope {name}" in capsys.readouterr().out


def test_tokens_table(capsys):
    code, out, _ = run(capsys, "tokens", SEED_A, SEED_B)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["pos", "token", "id", "type", "mask", "special", "span"]
    rows = [line.split() for line in lines[2:15]]
    assert [r[1] for r in rows] == ["[CLS]", "leaves", "fall", "in", "autumn", "[SEP]", "autumn",
                                    "is", "marked", "by", "colorful", "foliage", "[SEP]"]
    assert rows[6][3] == "1" and rows[5][3] == "0"  # type ids switch after the first [SEP]
    assert "13 tokens; decoded: 'leaves fall in autumn autumn is marked by colorful foliage'" in out


def test_heatmap_writes_a_png_that_is_not_blank(tmp_path, capsys):
    out_file = tmp_path / "head.png"
    code, out, err = run(capsys, "heatmap", SEED_SENTENCE, "--layer", "-1", "--head", "0",
                         "-o", str(out_file))
    assert code == 0, err
    assert f"wrote {out_file}" in out
    assert_not_blank(out_file)


@pytest.mark.parametrize(("flag", "suffix"), [("--all-heads", ".svg"), ("--all-layers", ".pdf")])
def test_heatmap_grids_in_other_formats(tmp_path, capsys, flag, suffix):
    out_file = tmp_path / f"grid{suffix}"
    code, _, err = run(capsys, "heatmap", SEED_A, flag, "-o", str(out_file))
    assert code == 0, err
    head = out_file.read_bytes()[:200]
    assert (b"<svg" in head or b"<?xml" in head) if suffix == ".svg" else head.startswith(b"%PDF")


def test_heatmap_with_a_local_model_directory(tmp_path, capsys, tiny_dirs):
    out_file = tmp_path / "gpt2.png"
    code, _, err = run(capsys, "heatmap", SEED_A, "--model", str(tiny_dirs["gpt2"]),
                       "--layer", "1", "--head", "3", "-o", str(out_file))
    assert code == 0, err
    assert_not_blank(out_file)


def test_demo_writes_the_seed_sentence_folder(tmp_path, capsys):
    folder = tmp_path / "demo"
    code, _, err = run(capsys, "demo", "-o", str(folder))
    assert code == 0, err
    assert_not_blank(folder / "heatmap.png")
    table = (folder / "tokens.txt").read_text()
    assert "overflowed" in table and "##flow" in table
    import attnscope as at

    trace = at.Trace.load(folder / "trace.npz")
    assert trace.text == SEED_SENTENCE and trace.num_tokens == 16


def test_text_from_a_file(tmp_path, capsys):
    path = tmp_path / "input.txt"
    path.write_text(SEED_A + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "tokens", "--file", str(path))
    assert code == 0
    assert "6 tokens; decoded: 'leaves fall in autumn'" in out


# ----- a person's mistakes: one sentence, exit status 2, no traceback --------------------------

BAD_INPUTS = {
    "empty text": (["tokens", ""], "The text is empty"),
    "blank text": (["heatmap", "   \n\t"], "The text is empty"),
    "blank second text": (["tokens", SEED_A, "  "], "The second text is empty"),
    "no text": (["tokens"], "Give a text to look at"),
    "layer out of range": (["heatmap", SEED_A, "--layer", "6"],
                           "layer 6 is out of range: valid layers are 0 to 5 (or -6 to -1)"),
    "head out of range": (["heatmap", SEED_A, "--head", "-13"],
                          "head -13 is out of range: valid heads are 0 to 11 (or -12 to -1)"),
    "unknown model": (["tokens", SEED_A, "--model", "no-such-org/no-such-model"],
                      "Cannot load model 'no-such-org/no-such-model'"),
    "missing model directory": (["tokens", SEED_A, "--model", "./no/such/dir"],
                                "Model directory './no/such/dir' does not exist"),
    "missing output folder": (["heatmap", SEED_A, "-o", "/no/such/folder/x.png"],
                              "folder '/no/such/folder' does not exist"),
    "bad figure format": (["heatmap", SEED_A, "-o", "x.gif"], "must end in .png, .svg, .pdf"),
    "missing input file": (["tokens", "--file", "/no/such/input.txt"],
                           "Cannot read '/no/such/input.txt': no such file"),
    "too long without truncation": (["tokens", "word " * 600, "--no-truncate"],
                                    "602 tokens, more than this model's limit of 512"),
    "demo into a missing parent": (["demo", "-o", "/no/such/parent/demo"],
                                   "folder '/no/such/parent' does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_clear_sentence(case, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, message = BAD_INPUTS[case]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("attnscope: error: ")
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unreadable_input_file(tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    code, _, err = run(capsys, "tokens", "--file", str(path))
    assert code == 2 and "is not UTF-8 text" in err
    code, _, err = run(capsys, "tokens", "--file", str(tmp_path))
    assert code == 2 and "it is a folder" in err


def test_unreachable_hub_says_so_and_names_the_way_out(capsys, monkeypatch):
    # No offline flag: attnscope probes the hub, finds it unreachable, and fails at once.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    code, _, err = run(capsys, "tokens", SEED_A, "--model", "bert-base-uncased")
    assert code == 2
    assert "the Hugging Face hub cannot be reached" in err
    assert "embedded default" in err and "local directory" in err


def test_long_text_is_cut_with_a_warning(capsys):
    code, out, err = run(capsys, "tokens", "word " * 600)
    assert code == 0
    assert "attnscope: warning: The text has 602 tokens but the model takes at most 512: the " \
           "last 90 tokens were dropped." in err
    assert "512 tokens; decoded" in out


def test_tokens_and_heads_as_json_for_scripts(tmp_path, embedded, capsys):
    """`--json` prints one JSON document on stdout (for heads, in a real subprocess, as a script
    runs it), with the same values as the Python API; figures written are noted on stderr."""
    import json

    import attnscope as at

    code, out, _ = run(capsys, "tokens", SEED_A, SEED_B, "--json")
    assert code == 0
    document = json.loads(out)
    assert [row["token"] for row in document["tokens"]][:6] == [
        "[CLS]", "leaves", "fall", "in", "autumn", "[SEP]"]
    assert document["sentence_b_start"] == 6 and document["dropped"] == 0
    assert document["tokens"][2] == {"position": 2, "token": "fall", "readable": "fall",
                                     "id": 2991, "type_id": 0, "mask": 1, "special": False,
                                     "start": 7, "end": 11}
    code, out, _ = run(capsys, "tokens", SEED_A, "--json", "--no-special-tokens")
    assert [row["token"] for row in json.loads(out)["tokens"]] == SEED_A.split()

    label_map = tmp_path / "map.png"
    heads = subprocess.run([sys.executable, "-m", "attnscope", "heads", "The cat sat on the mat.",
                            "--json", "-o", str(label_map)],
                           capture_output=True, text=True, check=True)
    document = json.loads(heads.stdout)
    assert f"wrote {label_map}" in heads.stderr and label_map.stat().st_size > 0
    assert document["num_layers"] == 6 and document["num_heads"] == 12
    assert len(document["heads"]) == 72 and document["scores"] == list(at.analysis.SCORES)
    table = at.head_patterns(at.capture(embedded, "The cat sat on the mat."))
    for record, expected in zip(document["heads"], table.records(), strict=True):
        assert record["label"] == expected["label"] and record["class"] == expected["class"]
        assert record["previous"] == pytest.approx(expected["previous"], abs=1e-6)
        assert record["induction"] is None  # an encoder: induction does not apply


def test_heads_scores_a_text_lazily_past_the_memory_budget(embedded, capsys, monkeypatch):
    """`attnscope heads` takes the lazy path by itself when eager weights would pass the
    budget (one note on stderr) and prints the same scores; --attention eager refuses instead."""
    import json

    import attnscope as at

    text = "The cat sat on the mat because the mat was warm."
    eager = at.head_patterns(at.capture(embedded, text)).records()
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", "10000")
    code, out, err = run(capsys, "heads", text, "--json")
    assert code == 0
    assert err.startswith("attnscope: note: Eager attention would take about")
    assert "capturing lazily instead" in err and len(err.strip().splitlines()) == 1
    lazy = json.loads(out)["heads"]
    for record, expected in zip(lazy, eager, strict=True):
        assert record["label"] == expected["label"]
        assert record["broad"] == pytest.approx(expected["broad"], abs=1e-5)
        assert record["distance"] == pytest.approx(expected["distance"], rel=1e-5)
    code, _, err = run(capsys, "heads", text, "--attention", "eager")
    assert code == 2 and "past the memory budget" in err and "\n" not in err.strip()
    code, _, err = run(capsys, "heads", text, "--attention", "lazy", "--gallery", "g.png")
    assert code == 2 and "--gallery draws whole heatmaps" in err
