"""Every figure the README quotes about head patterns is what the code computes today."""

from pathlib import Path

from bench.heads import TEXTS, readme_sentences

from tests.conftest import SEED_A, SEED_B, SEED_SENTENCE

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_quotes_the_figures_bench_heads_prints(embedded):
    readme = " ".join(README.read_text(encoding="utf-8").split())  # line breaks as spaces
    for sentence in readme_sentences(embedded):
        assert sentence in readme, sentence
    # the example texts are the README's own
    assert (SEED_SENTENCE, None) in TEXTS and (SEED_A, SEED_B) in TEXTS
    for text, text_b in TEXTS:
        assert text in readme and (text_b is None or text_b in readme)
