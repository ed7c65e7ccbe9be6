"""Corpus stores under hostile conditions: a damaged store is one sentence naming it (never a
traceback, a huge allocation or an HTTP 500), the command line reads the latest run and says
so, a model loaded in Python is asked for again, numbers out of range are refused, a store
held open names its holder, and the corpus page of a deep model stays legible."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import attnscope as at
from attnscope.cli import main
from attnscope.errors import AttnscopeError
from attnscope.testing import build_tiny_model

duckdb = pytest.importorskip("duckdb")

ROOT = Path(__file__).resolve().parents[2]
TEXTS_A = ["The cat sat on the mat.", "Dogs bark at night.", "Rain fell all day."]
TEXTS_B = ["It was late when it rained.", "She said it would stop.", "The sun came out."]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return build_tiny_model("bert", tmp_path_factory.mktemp("corpus-stores"))


@pytest.fixture(scope="module")
def two_runs(bert_dir, tmp_path_factory) -> Path:
    """The README's sequence: two `attnscope corpus` calls into the same store."""
    folder = tmp_path_factory.mktemp("two-runs")
    for name, texts in (("a.txt", TEXTS_A), ("b.txt", TEXTS_B)):
        (folder / name).write_text("\n".join(texts) + "\n", encoding="utf-8")
        assert main(["corpus", str(folder / name), "-o", str(folder / "stats.duckdb"),
                     "-m", str(bert_dir), "-q"]) == 0
    return folder / "stats.duckdb"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnscope: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# ----- the latest run -------------------------------------------------------------------------

def test_the_command_line_reads_the_latest_run_and_says_which(two_runs, tmp_path, capsys):
    page = tmp_path / "corpus.html"
    assert main(["corpus-report", str(two_runs), "-o", str(page), "--no-views"]) == 0
    err = capsys.readouterr().err
    assert "holds 2 runs: reading the latest, 'tiny-bert@b.txt'" in err
    assert "--run: 'tiny-bert@a.txt'" in err
    assert "b.txt" in page.read_text(encoding="utf-8")

    assert main(["corpus-search", str(two_runs), "it", "--limit", "5"]) == 0
    captured = capsys.readouterr()
    assert "reading the latest, 'tiny-bert@b.txt'" in captured.err
    assert "key_token" in captured.out

    assert main(["corpus-report", str(two_runs), "-o", str(page), "--no-views",
                 "--run", "tiny-bert@a.txt"]) == 0
    assert "holds 2 runs" not in capsys.readouterr().err
    assert "a.txt" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("argv", [
    ["corpus-search", "{store}", "it", "--limit", "0"],
    ["corpus-search", "{store}", "it", "--top", "-1"],
    ["corpus-report", "{store}", "-o", "{out}", "--examples", "-1"],
])
def test_numbers_out_of_range_are_refused(two_runs, tmp_path, capsys, argv):
    out = tmp_path / "page.html"
    argv = [a.format(store=two_runs, out=out) for a in argv]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "must be a whole number of at least" in line
    assert not out.exists()


# ----- damaged stores -------------------------------------------------------------------------

DAMAGE = {
    "settings not JSON": ("UPDATE runs SET settings = '{not json'", "settings that are not"),
    "a million layers": ("UPDATE runs SET num_layers = 1000000", "num_layers 1000000"),
    "no heads": ("UPDATE runs SET num_heads = 0", "num_heads 0"),
    "more layers than its rows": ("UPDATE runs SET num_layers = 7", "statistics cover 2 x 4"),
    "rows past its heads": ("UPDATE head_stats SET head = 9 WHERE head = 3",
                            "rows reach layer 1, head 9"),
    "a lost table": ("DROP TABLE examples", "has no examples table"),
    "a settings list": ("UPDATE runs SET settings = '[1, 2]'", "settings that are not"),
    "an unknown unit": ("UPDATE runs SET settings = '{\"unit\": \"page\"}'", "'page'"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_store_is_one_sentence_everywhere(bert_dir, tmp_path, capsys, damage):
    from attnscope.app.corpus import CorpusBrowser
    from attnscope.corpora import CorpusResult

    store = tmp_path / "damaged.duckdb"
    at.corpus(str(bert_dir), TEXTS_A, out=store, run="r", progress=False)
    sql, expected = DAMAGE[damage]
    con = duckdb.connect(str(store))
    con.execute(sql)
    con.close()

    with pytest.raises(AttnscopeError) as caught:
        CorpusResult(store)
    message = str(caught.value)
    assert str(store) in message and expected in message, message

    with pytest.raises(AttnscopeError, match="damaged"):  # serve --corpus opens it this way
        CorpusBrowser(store)

    page = tmp_path / "page.html"
    assert main(["corpus-report", str(store), "-o", str(page), "--no-views"]) == 2
    assert expected in _one_error_line(capsys)
    assert main(["corpus-search", str(store), "it"]) == 2
    assert expected in _one_error_line(capsys)
    assert not page.exists()


def test_resuming_into_a_damaged_run_is_refused(bert_dir, tmp_path):
    store = tmp_path / "s.duckdb"
    at.corpus(str(bert_dir), TEXTS_A[:1], out=store, run="r", progress=False)
    con = duckdb.connect(str(store))
    con.execute("UPDATE runs SET settings = 'oops'")
    con.close()
    with pytest.raises(AttnscopeError, match="is damaged: run 'r' has settings"):
        at.corpus(str(bert_dir), TEXTS_A, out=store, run="r", progress=False)


def test_a_store_missing_a_table_is_refused_before_a_run(bert_dir, tmp_path):
    store = tmp_path / "s.duckdb"
    con = duckdb.connect(str(store))
    con.execute("CREATE TABLE runs (run_id VARCHAR, model VARCHAR)")
    con.close()
    with pytest.raises(AttnscopeError, match="is damaged: its runs table has no column"):
        at.corpus(str(bert_dir), TEXTS_A, out=store, progress=False)


# ----- a store another process holds ------------------------------------------------------------

def test_a_store_held_open_by_a_reader_names_the_reader(two_runs, bert_dir, tmp_path):
    """`attnscope serve --corpus` holds its store open read-only; a run into it used to be
    told "(a run still going?)"."""
    store = tmp_path / "held.duckdb"
    shutil.copy(two_runs, store)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from attnscope.app.corpus import CorpusBrowser; "
         "browser = CorpusBrowser(sys.argv[1]); print('ready', flush=True); sys.stdin.read()",
         str(store)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(AttnscopeError) as caught:
            at.corpus(str(bert_dir), TEXTS_A, out=store, progress=False)
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    message = str(caught.value)
    assert f"open for reading in process {child.pid}" in message
    assert "serve" in message and "a run still going" not in message


# ----- a model loaded in Python -------------------------------------------------------------------

def test_a_model_loaded_in_python_is_asked_for_again(bert_dir, tmp_path, capsys):
    import transformers as tf

    tokenizer = tf.AutoTokenizer.from_pretrained(bert_dir)
    config = tf.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=37,
                           max_position_embeddings=64)
    loaded = at.load(tf.BertModel(config), tokenizer=tokenizer, device="cpu")
    store = tmp_path / "python.duckdb"
    result = at.corpus(loaded, TEXTS_A, out=store, progress=False)

    with pytest.raises(AttnscopeError, match=r"pass the model yourself \(model= in Python"):
        result.head_view(0, 0)
    assert result.head_view(0, 0, model=loaded) is not None

    page = tmp_path / "page.html"
    assert main(["corpus-report", str(store), "-o", str(page)]) == 2
    assert "--model NAME_OR_DIR on the command line" in _one_error_line(capsys)
    assert main(["corpus-report", str(store), "-o", str(page), "--no-views"]) == 0


# ----- the corpus page of a deep decoder ----------------------------------------------------------

@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    """A 30-layer GPT-2 (random, 2 heads) over three texts: a deep model with no [SEP]."""
    import transformers as tf

    folder = build_tiny_model("gpt2", tmp_path_factory.mktemp("deep"))
    config = tf.AutoConfig.from_pretrained(folder)
    config.n_layer, config.n_head = 30, 2
    tf.GPT2Model(config).save_pretrained(folder)
    model = at.load(folder, device="cpu")
    assert model.num_layers == 30
    return at.corpus(model, TEXTS_A, out=tmp_path_factory.mktemp("deep-store") / "d.duckdb",
                     progress=False)


def test_the_layer_panels_of_a_deep_model_keep_their_labels_apart(deep_run):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from attnscope.corpora.report import _layer_figure

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Mean of empty slice" included
        figure = _layer_figure(deep_run)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
    renderer = canvas.get_renderer()
    for ax in figure.axes:
        boxes = [label.get_window_extent(renderer) for label in ax.get_xticklabels()
                 if label.get_text()]
        boxes.sort(key=lambda box: box.x0)
        for left, right in itertools.pairwise(boxes):
            assert left.x1 < right.x0, (ax.get_title(), left, right)


def test_a_panel_with_no_value_says_not_applicable(deep_run):
    from attnscope.corpora.report import _layer_figure

    assert np.isnan(deep_run.array("separator")).all()  # GPT-2 has no [SEP]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = _layer_figure(deep_run)
    panels = {ax.get_title(): ax for ax in figure.axes}
    separator = panels["attention to [SEP]"]
    assert any("not applicable" in text.get_text() for text in separator.texts)
    assert not separator.collections and not separator.lines  # no empty plot beneath
    first = panels["attention to [CLS] / first token"]
    assert not any("not applicable" in t.get_text() for t in first.texts) and first.collections


def test_a_store_records_the_digest_of_its_model(bert_dir, tmp_path):
    from attnscope.corpora.store import model_digest

    model = at.load(bert_dir, device="cpu")
    store = tmp_path / "d.duckdb"
    at.corpus(model, TEXTS_A, out=store, run="r", progress=False)
    con = duckdb.connect(str(store), read_only=True)
    stored = con.execute("SELECT model_digest FROM runs").fetchone()[0]
    con.close()
    assert stored == model_digest(model) == model_digest(at.load(bert_dir, device="cpu"))
    assert len(stored) == 32 and json.dumps(stored)


def test_a_store_from_before_digests_adopts_the_model_that_resumes_it(bert_dir, tmp_path):
    from attnscope.corpora import CorpusResult
    from attnscope.corpora.store import model_digest

    store = tmp_path / "old.duckdb"
    at.corpus(str(bert_dir), TEXTS_A[:2], out=store, run="r", progress=False)
    con = duckdb.connect(str(store))
    con.execute("ALTER TABLE runs DROP COLUMN model_digest")  # as stores were written before
    con.close()
    assert CorpusResult(store).num_texts == 2  # read as it is

    resumed = at.corpus(str(bert_dir), TEXTS_A, out=store, run="r", progress=False)
    assert resumed.summary.already_done == 2 and resumed.num_texts == 3
    con = duckdb.connect(str(store), read_only=True)
    stored = con.execute("SELECT model_digest FROM runs").fetchone()[0]
    con.close()
    assert stored == model_digest(at.load(bert_dir, device="cpu"))
