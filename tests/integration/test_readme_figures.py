"""Every figure the README and the docs quote about head patterns is what the code computes
today, wherever the sentence now lives (README.md or a page under docs/)."""

from pathlib import Path

from bench.heads import TEXTS, readme_sentences

from tests.conftest import SEED_A, SEED_B, SEED_SENTENCE

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _flat(page: Path) -> str:
    return " ".join(page.read_text(encoding="utf-8").split())  # line breaks as spaces


def test_the_docs_quote_the_figures_bench_heads_prints(embedded):
    pages = {page.name: _flat(page) for page in PAGES}
    for sentence in readme_sentences(embedded):
        quoted_in = [name for name, text in pages.items() if sentence in text]
        assert quoted_in, f"no page quotes: {sentence}"
    # the example texts are the docs' own: the sentence pair and the sentence of the quickstart
    assert (SEED_SENTENCE, None) in TEXTS and (SEED_A, SEED_B) in TEXTS
    heads_page = pages["heads.md"]
    everything = " ".join(pages.values())
    for text, text_b in TEXTS:
        assert text in everything and (text_b is None or text_b in everything)
    assert "python bench/heads.py" in heads_page


def test_no_page_quotes_an_old_version_of_a_head_figure(embedded):
    # a figure edited by hand in one page and not in another would show as two versions
    for sentence in readme_sentences(embedded):
        prefix = sentence.split("(score")[0].split(" by up to")[0].split(" of the attention")[0]
        for page in PAGES:
            text = _flat(page)
            start = text.find(prefix)
            while start != -1:
                assert text[start:].startswith(sentence), (page.name, text[start:start + 200])
                start = text.find(prefix, start + 1)
