"""Static figures: labels, titles, formats, and tokens that look like markup or maths."""

import numpy as np
import pytest

import attnscope as at
from tests.conftest import SEED_A, SEED_B


def tick_labels(axis):
    return [label.get_text() for label in axis.get_ticklabels()]


def test_heatmap_labels_title_and_colour_bar(seed_pair_trace):
    fig = at.heatmap(seed_pair_trace, layer=-1, head=3)
    ax = fig.axes[0]
    assert tick_labels(ax.xaxis) == list(seed_pair_trace.tokens)
    assert tick_labels(ax.yaxis) == list(seed_pair_trace.tokens)
    assert "layer 5, head 3" in ax.get_title()
    assert "all-MiniLM-L6-v2" in ax.get_title()
    assert len(fig.axes) == 2  # the colour bar
    # the image is exactly that head's matrix
    np.testing.assert_array_equal(ax.images[0].get_array(), seed_pair_trace.attentions[5, 3])


def test_negative_and_positive_indices_draw_the_same_head(seed_pair_trace):
    a = at.heatmap(seed_pair_trace, layer=-1, head=-1).axes[0].images[0].get_array()
    b = at.heatmap(seed_pair_trace, layer=5, head=11).axes[0].images[0].get_array()
    np.testing.assert_array_equal(a, b)


def test_grids_have_one_panel_per_head(seed_pair_trace):
    assert len([ax for ax in at.heads_grid(seed_pair_trace, 0).axes if ax.images]) == 12
    assert len([ax for ax in at.model_grid(seed_pair_trace).axes if ax.images]) == 6 * 12


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_save_in_each_format(tmp_path, seed_pair_trace, suffix):
    fig = at.heatmap(seed_pair_trace)
    path = fig.save(tmp_path / f"head{suffix}")
    assert path.stat().st_size > 5000
    fig.savefig(tmp_path / f"plain{suffix}")  # matplotlib's own savefig works too
    assert (tmp_path / f"plain{suffix}").stat().st_size > 5000


def test_bad_save_targets(tmp_path, seed_pair_trace):
    fig = at.heatmap(seed_pair_trace)
    with pytest.raises(at.AttnscopeError, match=r"use \.png, \.svg or \.pdf"):
        fig.save(tmp_path / "head.gif")
    with pytest.raises(at.AttnscopeError, match="does not exist"):
        fig.save(tmp_path / "missing" / "head.png")


def test_tokens_with_dollar_signs_and_markup_are_plain_text(tmp_path, embedded):
    trace = at.capture(embedded, "costs $5 or $x$ <b>bold</b>")
    fig = at.heatmap(trace)
    fig.save(tmp_path / "dollars.png")  # mathtext would fail on an unbalanced "$"
    labels = tick_labels(fig.axes[0].xaxis)
    assert "$" in labels and "<" in labels


def test_encoder_decoder_parts(tiny_models):
    trace = at.capture(tiny_models["t5"], SEED_A, SEED_B)
    fig = at.heatmap(trace, part="cross")
    ax = fig.axes[0]
    assert tick_labels(ax.yaxis) == list(trace.decoder_tokens)
    assert tick_labels(ax.xaxis) == list(trace.tokens)
    assert "cross layer 1" in ax.get_title()
    with pytest.raises(at.AttnscopeError, match="holds self, decoder, cross"):
        at.heatmap(trace, part="sideways")
    bert = at.capture(tiny_models["bert"], SEED_A)
    with pytest.raises(at.AttnscopeError, match="not in this trace; it holds self"):
        at.heatmap(bert, part="cross")


def test_long_inputs_thin_their_labels(embedded):
    trace = at.capture(embedded, "word " * 200)
    fig = at.heatmap(trace)
    assert len(tick_labels(fig.axes[0].xaxis)) <= 80
