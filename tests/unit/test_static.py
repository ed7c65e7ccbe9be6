"""Static figures: labels, titles, formats, and tokens that look like markup or maths."""

import numpy as np
import pytest

import attnscope as at
from attnscope.readable import token_labels
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


def test_grids_have_one_panel_per_head_and_a_colour_bar(seed_pair_trace):
    trace = seed_pair_trace
    grid = at.heads_grid(trace, 0)
    panels = [ax for ax in grid.axes if ax.images]
    assert len(panels) == 12
    np.testing.assert_array_equal(panels[7].images[0].get_array(), trace.attentions[0, 7])
    colour_bars = [ax for ax in grid.axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bars) == 1 and colour_bars[0].get_ylabel() == "attention weight"
    # Token labels on the outer panels: the left column and the bottom row.
    assert tick_labels(panels[6].yaxis) == list(trace.tokens) and tick_labels(panels[7].yaxis) == []
    assert tick_labels(panels[7].xaxis) == list(trace.tokens) and tick_labels(panels[1].xaxis) == []

    model = at.model_grid(trace)
    ax = model.axes[0]
    mosaic = np.ma.filled(ax.images[0].get_array(), np.nan)  # every head, with white gaps
    t, gap = trace.num_tokens, -(-trace.num_tokens // 8)
    for layer, head in ((0, 0), (3, 7), (5, 11)):
        top, left = layer * (t + gap), head * (t + gap)
        np.testing.assert_array_equal(mosaic[top:top + t, left:left + t],
                                      trace.attentions[layer, head])
    assert np.isnan(mosaic[t:t + gap]).all()
    assert tick_labels(ax.xaxis) == [f"h{h}" for h in range(12)]
    assert tick_labels(ax.yaxis) == [f"L{la}" for la in range(6)]
    assert [a.get_ylabel() for a in model.axes[1:]] == ["attention weight"]


def test_model_grid_of_a_long_text_averages_blocks(embedded):
    trace = at.capture(embedded, "word " * 200)  # 202 tokens: 2 x 2 blocks, 101 cells a side
    mosaic = np.ma.filled(at.model_grid(trace).axes[0].images[0].get_array(), np.nan)
    expected = trace.attentions[0, 0].reshape(101, 2, 101, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(mosaic[:101, :101], expected, rtol=1e-6)


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
    # tokens show as the text they stand for ("Ġis" as "is"): decoder queries, encoder keys
    assert tick_labels(ax.yaxis) == token_labels(trace.decoder_tokens, trace.decoder_special_mask)
    assert tick_labels(ax.xaxis) == token_labels(trace.tokens, trace.special_mask)
    assert "is" in tick_labels(ax.yaxis) and "Ġis" in trace.decoder_tokens
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
