"""The figures the docs (docs/heads.md) and docs/heads-llm.md quote about what heads do.

    python bench/heads.py      # a few seconds; prints the docs' sentences with their numbers
    python bench/heads.py --llm  # SmolLM2-135M-Instruct's heads, as docs/heads-llm.md quotes

docs/heads.md's figures come from the embedded model:

1. The previous-token score of layer 0, head 2 and the next-token score of layer 1, head 8 of
   all-MiniLM-L6-v2, on each example text of the docs.
2. How attnscope's previous-token and duplicate-token scores differ from TransformerLens's
   ``detect_head`` "mul" score (computed with TransformerLens's own function, when it is
   installed): the largest difference over every head and example text.
3. Norm-based attention on the example sentence: the share of the attention weight, and of the
   norm, that special tokens get.

docs/heads-llm.md's come from SmolLM2-135M-Instruct (30 layers x 9 heads): on the ids of 50
random tokens repeated twice, its induction heads, previous-token heads and sink heads (counts and
the best of each), and its sink heads on an ordinary paragraph.

The test suite runs the same library calls and checks that docs/heads.md and docs/heads-llm.md
contain these sentences, so the numbers they quote are the numbers the code gives.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys

import numpy as np

import attnscope as at
from attnscope.analysis.patterns import LABEL_THRESHOLD, SINK_THRESHOLD, HeadTable

# The docs' example texts (the second is a sentence pair).
TEXTS: tuple[tuple[str, str | None], ...] = (
    ("The cat sat on the mat.", None),
    ("The girl poured water into a tall glass until it overflowed.", None),
    ("leaves fall in autumn", "autumn is marked by colorful foliage"),
)
PREVIOUS_HEAD = (0, 2)
NEXT_HEAD = (1, 8)


def head_figures(model: at.LoadedModel) -> dict[str, tuple[float, float]]:
    """(lowest, highest) over the example texts of the two heads' scores."""
    previous, following = [], []
    for text, text_b in TEXTS:
        table = at.head_patterns(at.capture(model, text, text_b))
        previous.append(float(table.score("previous")[PREVIOUS_HEAD]))
        following.append(float(table.score("next")[NEXT_HEAD]))
    return {"previous": (min(previous), max(previous)), "next": (min(following), max(following))}


def transformer_lens_differences(model: at.LoadedModel) -> dict[str, float] | None:
    """The largest |attnscope score - TransformerLens score| over every head of every example
    text, for the previous-token and duplicate-token patterns; None without TransformerLens."""
    try:
        import torch
        from transformer_lens import head_detector
    except ImportError:
        return None
    patterns = {"previous": head_detector.get_previous_token_head_detection_pattern,
                "duplicate": head_detector.get_duplicate_token_head_detection_pattern}
    largest = dict.fromkeys(patterns, 0.0)
    for text, text_b in TEXTS:
        trace = at.capture(model, text, text_b)
        table = at.head_patterns(trace)
        ids = torch.tensor(trace.input_ids.tolist())[None]  # (1, T)
        for name, pattern_of in patterns.items():
            detection = pattern_of(ids)  # (T, T)
            ours = table.score(name)  # (L, H)
            for layer in range(trace.num_layers):
                for head in range(trace.num_heads):
                    theirs = head_detector.compute_head_attention_similarity_score(
                        torch.as_tensor(np.array(trace.attentions[layer, head])), detection,
                        exclude_bos=False, exclude_current_token=False, error_measure="mul")
                    if not np.isnan(ours[layer, head]):
                        difference = abs(float(ours[layer, head]) - theirs)
                        largest[name] = max(largest[name], difference)
    return largest


def norm_figures(model: at.LoadedModel) -> tuple[float, float]:
    """(weight share, norm share) of special tokens on the example sentence, all heads."""
    trace = at.capture(model, TEXTS[1][0], qkv=True)
    return at.attention_norms(trace, model).special_share()


def readme_sentences(model: at.LoadedModel) -> list[str]:
    """The README's sentences, with the numbers as this code computes them today."""
    heads = head_figures(model)
    low, high = heads["previous"]
    previous = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f} to {high:.2f}"
    low, high = heads["next"]
    following = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f} to {high:.2f}"
    sentences = [
        f"layer {PREVIOUS_HEAD[0]} head {PREVIOUS_HEAD[1]} is a previous-token head (score "
        f"{previous}) and layer {NEXT_HEAD[0]} head {NEXT_HEAD[1]} a next-token head (score "
        f"{following})",
    ]
    differences = transformer_lens_differences(model)
    if differences is not None:
        sentences.append(
            f"differ from TransformerLens's `detect_head` by up to "
            f"{differences['previous']:.2f} (previous token) and "
            f"{differences['duplicate']:.2f} (duplicate token)"
        )
    weight, norm = norm_figures(model)
    sentences.append(
        f"special tokens get {weight:.0%} of the attention weight but only {norm:.0%} of the norm"
    )
    return sentences


# SmolLM2's heads (docs/heads-llm.md).
REPEAT_SEED = 0
REPEAT_LENGTH = 50
# Random ids are drawn from this range: ordinary word pieces, no special or byte tokens.
REPEAT_ID_RANGE = (1000, 10000)
PARAGRAPH = (
    "The lighthouse keeper climbed the spiral stairs every evening to light the lamp. Ships "
    "passing the rocky coast relied on its beam to find the harbour, and on stormy nights he "
    "stayed awake until dawn, listening to the waves break against the cliffs below."
)
#: A head is an induction or previous-token head when that score exceeds this.
HEAD_THRESHOLD = LABEL_THRESHOLD


def repeated_random_ids(seed: int = REPEAT_SEED, length: int = REPEAT_LENGTH) -> np.ndarray:
    """The standard induction test: ``length`` random token ids, then the same ids again
    ``[2 * length]``. An induction head, at the second copy, attends to the token that followed
    the current token's earlier copy."""
    first = np.random.default_rng(seed).integers(*REPEAT_ID_RANGE, size=length)
    return np.concatenate([first, first])


def llm_sentences(repeated: HeadTable, paragraph: HeadTable) -> list[str]:
    """docs/heads-llm.md's sentences from the head tables of the repeated ids and of the
    paragraph (both from :func:`attnscope.head_patterns`)."""
    total = repeated.num_layers * repeated.num_heads

    def best(heads: list[tuple[int, int, float]], n: int = 3) -> str:
        return ", ".join(f"layer {la} head {h} ({v:.2f})" for la, h, v in heads[:n])

    induction = repeated.find("induction", HEAD_THRESHOLD)
    previous = repeated.find("previous", HEAD_THRESHOLD)
    return [
        f"{len(induction)} of its {total} heads are induction heads (score above "
        f"{HEAD_THRESHOLD}); the strongest: {best(induction)}",
        f"{len(previous)} are previous-token heads (score above {HEAD_THRESHOLD}); the "
        f"strongest: {best(previous)}",
        f"{len(repeated.sink_heads())} of {total} heads are sink heads on the repeated ids, "
        f"{len(paragraph.sink_heads())} on the paragraph (sink score above {SINK_THRESHOLD})",
    ]


def llm_figures(model: at.LoadedModel) -> list[str]:
    """Capture the repeated ids and the paragraph with ``model`` and return the sentences."""
    repeated = at.head_patterns(at.capture(model, repeated_random_ids()))
    paragraph = at.head_patterns(at.capture(model, PARAGRAPH))
    return llm_sentences(repeated, paragraph)


def main() -> None:
    if "--llm" in sys.argv[1:]:
        for sentence in llm_figures(at.load("smollm2", device="cpu")):
            print(sentence)
        return
    model = at.load(device="cpu")
    for sentence in readme_sentences(model):
        print(sentence)


if __name__ == "__main__":
    main()
